//! How much work is in flight between this node and its peers.
//!
//! - [`SentCounts`]: tasks this node sent to each peer and that are not
//!   done (placement avoids peers at the bound, and counts these as load,
//!   since gossip lags);
//! - [`Accepted`]: tasks and actor calls this node accepted from peers and
//!   that are not done (back-pressure: beyond the bound, or beyond a
//!   peer's share of half of it or of [`MAX_ACCEPTED_BYTES_PER_PEER`]
//!   bytes of arguments, peers are told it is busy).
//!
//! Invariants: a submission is counted in `SentCounts` from when it is
//! sent until its `Done`, its refusal or its peer's death, exactly once;
//! `Accepted` never exceeds its bound for tasks (a taken slot that is not
//! used is given back at once), and each accepted piece of work gives its
//! slot back exactly once, when it is done.

use crate::sync::lock_unpoisoned;
use libp2p::PeerId;
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

/// Tasks sent to each peer and not done.
#[derive(Default)]
pub(super) struct SentCounts(Mutex<HashMap<PeerId, usize>>);

impl SentCounts {
    /// One more task sent to `peer`.
    pub(super) fn add(&self, peer: PeerId) {
        *lock_unpoisoned(&self.0).entry(peer).or_default() += 1;
    }

    /// One task sent to `peer` is done (or refused).
    pub(super) fn done(&self, peer: PeerId) {
        if let Some(n) = lock_unpoisoned(&self.0).get_mut(&peer) {
            *n = n.saturating_sub(1);
        }
    }

    /// `peer` died: nothing counts as sent to it any more.
    pub(super) fn forget(&self, peer: PeerId) {
        lock_unpoisoned(&self.0).remove(&peer);
    }

    /// A copy of the counts.
    pub(super) fn snapshot(&self) -> HashMap<PeerId, usize> {
        lock_unpoisoned(&self.0).clone()
    }
}

/// The most bytes of arguments one peer's accepted work may hold at once
/// (the wire form of the arguments of its accepted tasks and calls that
/// are not done). A piece of work is always accepted when the peer has
/// nothing accepted, whatever its size (each is capped on the wire by
/// `mail::MAX_ARGS_BYTES`).
pub const MAX_ACCEPTED_BYTES_PER_PEER: usize = 256 << 20;

/// Tasks and actor calls accepted from peers and not done, with its bound,
/// in all and per peer: one peer may hold at most half the slots
/// ([`Accepted::per_peer`]) and [`MAX_ACCEPTED_BYTES_PER_PEER`] bytes of
/// arguments, so a peer that floods this node with work leaves the other
/// half to everyone else (it is told `Busy` beyond its share, as every
/// peer is beyond the whole bound).
pub(super) struct Accepted {
    n: AtomicUsize,
    max: usize,
    /// Per peer: (slots, argument bytes) held now; no entry at (0, 0).
    by_peer: Mutex<HashMap<PeerId, (usize, usize)>>,
}

impl Accepted {
    /// None accepted yet; at most `max` at once.
    pub(super) fn new(max: usize) -> Accepted {
        Accepted { n: AtomicUsize::new(0), max, by_peer: Mutex::default() }
    }

    /// The most one peer may hold at once: half the bound (at least one).
    pub(super) fn per_peer(&self) -> usize {
        (self.max / 2).max(1)
    }

    /// True if `peer` may have `bytes` more bytes of arguments accepted.
    fn bytes_fit(held: (usize, usize), bytes: usize) -> bool {
        held.0 == 0 || held.1.saturating_add(bytes) <= MAX_ACCEPTED_BYTES_PER_PEER
    }

    /// Takes a slot for a task from `peer` with `bytes` of arguments if one
    /// is free, in all and within `peer`'s share of slots and bytes: how
    /// many `peer` holds now, this one included.
    pub(super) fn try_take(&self, peer: PeerId, bytes: usize) -> Option<usize> {
        let mut by_peer = lock_unpoisoned(&self.by_peer);
        let held = by_peer.get(&peer).copied().unwrap_or((0, 0));
        if held.0 >= self.per_peer() || !Self::bytes_fit(held, bytes) {
            return None;
        }
        if self.n.fetch_add(1, Ordering::AcqRel) >= self.max {
            self.n.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        by_peer.insert(peer, (held.0 + 1, held.1 + bytes));
        Some(held.0 + 1)
    }

    /// True if an actor call from `peer` with `bytes` of arguments would
    /// be admitted now (a slot free in all, and `peer`'s bytes within its
    /// share); calls are then taken with [`Accepted::take`].
    pub(super) fn has_room(&self, peer: PeerId, bytes: usize) -> bool {
        !self.is_full() && Self::bytes_fit(lock_unpoisoned(&self.by_peer).get(&peer).copied().unwrap_or((0, 0)), bytes)
    }

    /// Takes a slot for `peer` whatever the bound (an actor call already
    /// admitted).
    pub(super) fn take(&self, peer: PeerId, bytes: usize) {
        let mut by_peer = lock_unpoisoned(&self.by_peer);
        let held = by_peer.entry(peer).or_default();
        *held = (held.0 + 1, held.1 + bytes);
        drop(by_peer);
        self.n.fetch_add(1, Ordering::AcqRel);
    }

    /// Gives `peer`'s slot (taken with `bytes`) back.
    pub(super) fn release(&self, peer: PeerId, bytes: usize) {
        let mut by_peer = lock_unpoisoned(&self.by_peer);
        if let Some(held) = by_peer.get_mut(&peer) {
            *held = (held.0.saturating_sub(1), held.1.saturating_sub(bytes));
            if held.0 == 0 {
                by_peer.remove(&peer);
            }
        }
        drop(by_peer);
        self.n.fetch_sub(1, Ordering::AcqRel);
    }

    /// True if no slot is free.
    pub(super) fn is_full(&self) -> bool {
        self.n.load(Ordering::Acquire) >= self.max
    }

    /// Slots taken now.
    pub(super) fn count(&self) -> usize {
        self.n.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_peer_takes_at_most_half_and_leaves_the_rest_to_others() {
        let a = Accepted::new(4);
        let (flood, honest) = (PeerId::random(), PeerId::random());
        assert!(a.try_take(flood, 0).is_some() && a.try_take(flood, 0) == Some(2));
        assert!(a.try_take(flood, 0).is_none(), "beyond its share");
        assert!(a.try_take(honest, 0).is_some() && a.try_take(honest, 0).is_some());
        assert!(a.try_take(PeerId::random(), 0).is_none(), "beyond the whole bound");
        a.release(flood, 0);
        assert!(a.try_take(flood, 0).is_some(), "a slot given back is free again");
        for p in [flood, flood, honest, honest] {
            a.release(p, 0);
        }
        assert_eq!(a.count(), 0);
        assert!(lock_unpoisoned(&a.by_peer).is_empty(), "no entry is kept for a peer with nothing accepted");
    }
}

#[cfg(test)]
mod bytes_tests {
    use super::*;

    #[test]
    fn one_peer_holds_at_most_its_share_of_argument_bytes() {
        let a = Accepted::new(1000);
        let (flood, honest) = (PeerId::random(), PeerId::random());
        let big = 8 << 20;
        let fits = MAX_ACCEPTED_BYTES_PER_PEER / big;
        for _ in 0..fits {
            assert!(a.try_take(flood, big).is_some());
        }
        assert!(a.try_take(flood, big).is_none(), "beyond its bytes");
        assert!(!a.has_room(flood, big), "calls too");
        assert!(a.try_take(flood, 0).is_some(), "work without arguments still fits");
        assert!(a.try_take(honest, big).is_some() && a.has_room(honest, big), "others are not held back");
        a.release(flood, big);
        assert!(a.try_take(flood, big).is_some(), "bytes given back are free again");
        // One piece of work always fits a peer holding nothing.
        assert!(a.try_take(PeerId::random(), usize::MAX).is_some());
    }
}
