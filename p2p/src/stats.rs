//! Traffic counters of one node, for `Runtime::metrics` (the backend's
//! `metrics` hook): objects transferred in and out and their bytes, remote
//! tasks and actor calls sent and received. Every layer that moves such
//! work holds the node's one [`Traffic`] and adds to it.
//!
//! [`Rejections`] counts what the node refused from peers (and rate-limits
//! the WARN lines about it: one per peer).
//!
//! [`Traffic::hold_reply`] also keeps a gauge (and its high-water mark) of
//! the bytes of object replies built and not yet written or dropped: what
//! peers make the object server hold; the budget bounds it (see
//! `transport::rpc`).
//!
//! Invariants: counts only grow (but the gauge, which goes back down when
//! each [`HeldReply`] is dropped); each update is one relaxed atomic add (no
//! lock, no ordering with anything else: readers see a snapshot that may be
//! a few updates behind, which is all a metric needs).

use libp2p::PeerId;
use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// A node's traffic counters (see the module docs).
#[derive(Debug, Default)]
pub(crate) struct Traffic {
    transfers_in: AtomicU64,
    transfer_in_bytes: AtomicU64,
    transfers_out: AtomicU64,
    transfer_out_bytes: AtomicU64,
    tasks_sent: AtomicU64,
    tasks_received: AtomicU64,
    calls_sent: AtomicU64,
    calls_received: AtomicU64,
    /// Bytes of object replies built and not yet written or dropped.
    replies_held: AtomicU64,
    /// The most `replies_held` has been.
    replies_held_peak: AtomicU64,
}

/// Bytes of a reply counted in [`Traffic`]'s gauge until dropped.
#[derive(Debug)]
pub(crate) struct HeldReply {
    traffic: std::sync::Arc<Traffic>,
    bytes: u64,
}

impl Drop for HeldReply {
    fn drop(&mut self) {
        self.traffic.replies_held.fetch_sub(self.bytes, Ordering::Relaxed);
    }
}

/// What [`Traffic`] has counted so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct TrafficStats {
    pub(crate) transfers_in: u64,
    pub(crate) transfer_in_bytes: u64,
    pub(crate) transfers_out: u64,
    pub(crate) transfer_out_bytes: u64,
    pub(crate) tasks_sent: u64,
    pub(crate) tasks_received: u64,
    pub(crate) calls_sent: u64,
    pub(crate) calls_received: u64,
}

fn add(c: &AtomicU64, n: u64) {
    c.fetch_add(n, Ordering::Relaxed);
}

impl Traffic {
    /// An object of `bytes` encoded bytes was fetched from a peer.
    pub(crate) fn transfer_in(&self, bytes: u64) {
        add(&self.transfers_in, 1);
        add(&self.transfer_in_bytes, bytes);
    }

    /// A peer started reading an object here (its first bytes were served).
    pub(crate) fn transfer_out(&self) {
        add(&self.transfers_out, 1);
    }

    /// `bytes` bytes of objects were served to a peer.
    pub(crate) fn sent_bytes(&self, bytes: u64) {
        add(&self.transfer_out_bytes, bytes);
    }

    /// A task was sent to a peer to run.
    pub(crate) fn task_sent(&self) {
        add(&self.tasks_sent, 1);
    }

    /// A task from a peer was accepted to run here.
    pub(crate) fn task_received(&self) {
        add(&self.tasks_received, 1);
    }

    /// An actor call was sent to the peer hosting the actor.
    pub(crate) fn call_sent(&self) {
        add(&self.calls_sent, 1);
    }

    /// An actor call from a peer was accepted for an actor hosted here.
    pub(crate) fn call_received(&self) {
        add(&self.calls_received, 1);
    }

    /// Counts `bytes` of a reply built for a peer as held until the guard
    /// is dropped (once written, or dropped unwritten).
    pub(crate) fn hold_reply(self: &std::sync::Arc<Self>, bytes: usize) -> HeldReply {
        let bytes = bytes as u64;
        let now = self.replies_held.fetch_add(bytes, Ordering::Relaxed) + bytes;
        self.replies_held_peak.fetch_max(now, Ordering::Relaxed);
        HeldReply { traffic: self.clone(), bytes }
    }

    /// Bytes of replies held now, and the most held at once so far.
    pub(crate) fn replies_held(&self) -> (u64, u64) {
        (self.replies_held.load(Ordering::Relaxed), self.replies_held_peak.load(Ordering::Relaxed))
    }

    /// The counts so far.
    pub(crate) fn stats(&self) -> TrafficStats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        TrafficStats {
            transfers_in: get(&self.transfers_in),
            transfer_in_bytes: get(&self.transfer_in_bytes),
            transfers_out: get(&self.transfers_out),
            transfer_out_bytes: get(&self.transfer_out_bytes),
            tasks_sent: get(&self.tasks_sent),
            tasks_received: get(&self.tasks_received),
            calls_sent: get(&self.calls_sent),
            calls_received: get(&self.calls_received),
        }
    }
}

/// What a node refused from peers, counted instead of logged one WARN line
/// each (a peer could flood the log): holders whose bytes could not be
/// verified, forged named-actor records, invalid requests and batches.
#[derive(Debug, Default)]
pub(crate) struct Rejections {
    /// Holders refused by a fetch: no valid voucher, or bytes that do not
    /// match it.
    pub(crate) holders: AtomicU64,
    /// Named-actor records dropped: not signed by the host they name.
    pub(crate) records: AtomicU64,
    /// Invalid object requests and mail batches (each peer's first is also
    /// a WARN line; the rest only `debug!`).
    pub(crate) invalid: AtomicU64,
    /// Peers whose invalid input was already logged at WARN.
    warned: Mutex<HashSet<PeerId>>,
}

/// Peers remembered by [`Rejections::warn_first`] (forgotten all at once
/// beyond: at worst one more WARN line per peer).
const MAX_WARNED_PEERS: usize = 4096;

impl Rejections {
    /// Counts one invalid request or batch from `peer`; true if it is the
    /// first from that peer (log it at WARN; the rest at `debug!`).
    pub(crate) fn warn_first(&self, peer: PeerId) -> bool {
        add(&self.invalid, 1);
        let mut warned = crate::sync::lock_unpoisoned(&self.warned);
        if warned.len() >= MAX_WARNED_PEERS && !warned.contains(&peer) {
            warned.clear();
        }
        warned.insert(peer)
    }

    /// Counts `n` in `c`.
    pub(crate) fn count(c: &AtomicU64, n: u64) {
        add(c, n);
    }

    /// (holders, records, invalid) so far.
    pub(crate) fn stats(&self) -> (u64, u64, u64) {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        (get(&self.holders), get(&self.records), get(&self.invalid))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_add_up() {
        let t = Traffic::default();
        t.transfer_in(10);
        t.transfer_in(5);
        t.transfer_out();
        t.sent_bytes(7);
        t.task_sent();
        t.task_received();
        t.task_received();
        t.call_sent();
        t.call_received();
        let s = t.stats();
        assert_eq!((s.transfers_in, s.transfer_in_bytes), (2, 15));
        assert_eq!((s.transfers_out, s.transfer_out_bytes), (1, 7));
        assert_eq!((s.tasks_sent, s.tasks_received, s.calls_sent, s.calls_received), (1, 2, 1, 1));
    }

    #[test]
    fn held_replies_are_a_gauge_with_a_peak() {
        let t = std::sync::Arc::new(Traffic::default());
        let a = t.hold_reply(10);
        let b = t.hold_reply(5);
        drop(a);
        let c = t.hold_reply(3);
        assert_eq!(t.replies_held(), (8, 15));
        drop((b, c));
        assert_eq!(t.replies_held(), (0, 15));
    }

    #[test]
    fn only_a_peers_first_invalid_input_is_a_warning() {
        let r = Rejections::default();
        let (a, b) = (PeerId::random(), PeerId::random());
        assert!(r.warn_first(a));
        assert!(!r.warn_first(a));
        assert!(!r.warn_first(a));
        assert!(r.warn_first(b));
        assert_eq!(r.stats(), (0, 0, 4));
    }
}
