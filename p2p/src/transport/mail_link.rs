//! What both ends of a mail link share: the protocol name and its limits,
//! the fence rule, why a batch can be undeliverable, and the per-peer state
//! the sending side (`outbox`) and the receiving side (`inbox`) of one node
//! hand each other: acks held back to ride on our next batch, acks that
//! arrived riding on a peer's batch, and the batches already applied.
//!
//! Invariant: a batch whose seq is among the last [`SEEN`] applied from
//! its peer is not applied again ([`Seen::fresh`]); it is answered with its
//! first ack (refusals included), or, while its first copy is still being
//! applied, left for that copy's answer. That record outlives a death
//! verdict: a peer that was only cut off (a partition) and comes back may
//! write its batches in flight again, and they must not be applied twice.
//! It is bounded instead: at most [`SEEN`] batches for each of the
//! [`SEEN_PEERS`] peers heard from most recently (a sender's seqs start from
//! its clock, so a log evicted for a long-silent peer is never needed by a
//! new outbox of that peer).

use crate::sync::lock_unpoisoned;
use crate::wire::mail::{Ack, Mail};
use crate::wire::WireError;
use libp2p::{PeerId, StreamProtocol};
use libp2p_stream::OpenStreamError;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;

/// The stream protocol of node-to-node work.
#[cfg_attr(not(feature = "fuzzing"), allow(unreachable_pub))]
pub const MAIL_PROTOCOL: &str = "/manta/mail/2";

/// Streams tried for one batch before it is undeliverable.
pub(super) const SEND_ATTEMPTS: u32 = 4;

/// Most batches in flight from one node to another.
pub(super) const WINDOW: usize = 8;

/// Longest a receiver holds an ack back for a batch of its own to carry.
pub(super) const ACK_DELAY: Duration = Duration::from_millis(1);

/// Batches remembered per peer for duplicate detection: many more than can
/// be in flight ([`WINDOW`]), so a resent batch is always recognised.
pub(super) const SEEN: usize = 8 * WINDOW;

/// Peers whose applied batches are remembered ([`Seen`]); beyond it the
/// peer heard from least recently is forgotten. Each costs at most
/// [`SEEN`] seqs and acks (acks of a healthy link are a few bytes).
pub(super) const SEEN_PEERS: usize = 1024;

/// [`MAIL_PROTOCOL`] as a stream protocol.
pub(super) fn protocol() -> StreamProtocol {
    StreamProtocol::new(MAIL_PROTOCOL)
}

/// True for a batch nothing may follow until it is acked: it holds an
/// actor call or creation, whose order a busy refusal must not break.
pub(super) fn is_fence(batch: &[Mail]) -> bool {
    batch.iter().any(|m| matches!(m, Mail::Call { .. } | Mail::NewActor { .. }))
}

/// Why a batch could not be delivered (after [`SEND_ATTEMPTS`] stream
/// failures in a row, or at once when the peer refused it or is gone).
#[derive(Debug, Clone, thiserror::Error)]
pub(crate) enum MailError {
    /// No stream could be opened to the peer.
    #[error("cannot open a mail stream: {0}")]
    Open(#[source] Arc<OpenStreamError>),
    /// Opening a stream took longer than the request timeout.
    #[error("no mail stream within {0:?}")]
    OpenTimeout(Duration),
    /// Writing or reading the stream failed.
    #[error("mail stream failed: {0}")]
    Stream(#[source] Arc<std::io::Error>),
    /// Writing a batch took longer than the request timeout.
    #[error("batch not written within {0:?}")]
    WriteTimeout(Duration),
    /// The oldest batch in flight had no ack within the request timeout.
    #[error("no ack within {0:?}")]
    NoAck(Duration),
    /// The peer sent an ack over the cap.
    #[error("an ack of {0} bytes")]
    AckTooLarge(usize),
    /// The peer sent an ack that does not decode.
    #[error("an ack that does not decode: {0}")]
    BadAck(#[source] WireError),
    /// The peer closed the stream.
    #[error("the stream closed")]
    Closed,
    /// The peer refused the whole batch as malformed.
    #[error("the peer refused the batch as invalid: {0}")]
    Invalid(String),
    /// The peer was forgotten (it died) with the batch still queued.
    #[error("the peer is gone")]
    PeerGone,
}

/// What reaches a sender about its batches.
pub(super) enum AckEvent {
    /// An ack from the peer.
    Ack(Ack),
    /// The reply direction of stream number `.0` failed.
    Broken(u64, MailError),
    /// The outbox was closed (its peer is gone).
    Closed,
}

/// What to do with a batch that carries a seq.
pub(super) enum Fresh {
    /// Apply it (its seq is now reserved).
    Apply,
    /// Applied before: answer with this ack again.
    Again(Ack),
    /// Being applied by another stream's reader: it will answer.
    Busy,
}

/// Batches applied from one peer: `(seq, ack)`, oldest first, and when
/// the peer was last heard from (a tick of [`Seen`]'s clock).
#[derive(Default)]
struct Applied {
    log: VecDeque<(u64, Option<Ack>)>,
    last: u64,
}

/// The batches applied from each peer, by seq, with their acks: kept
/// across death verdicts, bounded by [`SEEN`] per peer and [`SEEN_PEERS`]
/// peers (see the module docs).
#[derive(Default)]
pub(super) struct Seen(Mutex<SeenMap>);

#[derive(Default)]
struct SeenMap {
    peers: HashMap<PeerId, Applied>,
    /// Ticks on every batch; orders peers by when they were last heard.
    clock: u64,
}

impl Seen {
    /// Checks a batch's seq against those applied from `peer`, reserving it
    /// if it is new.
    pub(super) fn fresh(&self, peer: PeerId, seq: u64) -> Fresh {
        let mut seen = lock_unpoisoned(&self.0);
        seen.clock += 1;
        let now = seen.clock;
        if !seen.peers.contains_key(&peer) && seen.peers.len() >= SEEN_PEERS {
            // Forget the peer heard from least recently (O(peers), only
            // when a new peer arrives with the table full).
            let oldest = seen.peers.iter().min_by_key(|(_, a)| a.last).map(|(p, _)| *p);
            if let Some(p) = oldest {
                seen.peers.remove(&p);
            }
        }
        let applied = seen.peers.entry(peer).or_default();
        applied.last = now;
        let log = &mut applied.log;
        match log.iter().find(|(s, _)| *s == seq) {
            Some((_, Some(ack))) => Fresh::Again(ack.clone()),
            Some((_, None)) => Fresh::Busy,
            None => {
                if log.len() >= SEEN {
                    log.pop_front();
                }
                log.push_back((seq, None));
                Fresh::Apply
            }
        }
    }

    /// Records the ack of an applied batch (see [`Seen::fresh`]).
    pub(super) fn applied(&self, peer: PeerId, ack: &Ack) {
        if let Some(a) = lock_unpoisoned(&self.0).peers.get_mut(&peer) {
            if let Some(slot) = a.log.iter_mut().find(|(s, _)| *s == ack.seq) {
                slot.1 = Some(ack.clone());
            }
        }
    }

    /// Peers whose batches are remembered.
    #[cfg(test)]
    fn peers(&self) -> usize {
        lock_unpoisoned(&self.0).peers.len()
    }
}

/// What an outbox does with an ack of one of its batches the moment a
/// reader has it, before its sender task hears of it (the direct path's
/// room, `outbox_direct`).
pub(super) trait AckTap: Send + Sync {
    /// `ack` came in for a batch of this outbox.
    fn tap(&self, ack: &Ack);
}

/// Where acks of our batches to one peer go.
struct Route {
    /// The outbox's sender task.
    tx: mpsc::UnboundedSender<AckEvent>,
    /// The outbox itself, for [`AckTap::tap`].
    tap: std::sync::Weak<dyn AckTap>,
}

/// The per-peer state a node's senders and receivers share.
#[derive(Default)]
pub(super) struct LinkState {
    /// Where acks of our batches to each peer go: its outbox.
    routes: Mutex<HashMap<PeerId, Route>>,
    /// Acks of each peer's batches, held to ride on our next batch to it.
    held: Mutex<HashMap<PeerId, Arc<Mutex<Vec<Ack>>>>>,
    /// Batches applied from each peer.
    pub(super) seen: Seen,
}

impl LinkState {
    /// Routes acks from `peer` to its outbox (`tap`, then its sender task
    /// through `acks`) from now on.
    pub(super) fn route(&self, peer: PeerId, acks: mpsc::UnboundedSender<AckEvent>, tap: std::sync::Weak<dyn AckTap>) {
        lock_unpoisoned(&self.routes).insert(peer, Route { tx: acks, tap });
    }

    /// The acks held for `peer` (pushed by its streams' readers).
    pub(super) fn held(&self, peer: PeerId) -> Arc<Mutex<Vec<Ack>>> {
        lock_unpoisoned(&self.held).entry(peer).or_default().clone()
    }

    /// Takes up to `max` of the acks held for `peer`, oldest first.
    pub(super) fn take_held(&self, peer: PeerId, max: usize) -> Vec<Ack> {
        let Some(h) = lock_unpoisoned(&self.held).get(&peer).cloned() else { return Vec::new() };
        let mut h = lock_unpoisoned(&h);
        let n = h.len().min(max);
        h.drain(..n).collect()
    }

    /// Hands acks that came from `peer` to our outbox for it: its tap at
    /// once, then its sender task.
    pub(super) fn acked(&self, peer: PeerId, acks: Vec<Ack>) {
        self.tap(peer, &acks);
        self.forward(peer, acks);
    }

    /// Shows acks that came from `peer` to our outbox's tap only (the
    /// sender task hears of them through [`LinkState::forward`] later).
    pub(super) fn tap(&self, peer: PeerId, acks: &[Ack]) {
        if acks.is_empty() {
            return;
        }
        let tap = lock_unpoisoned(&self.routes).get(&peer).and_then(|r| r.tap.upgrade());
        if let Some(tap) = tap {
            acks.iter().for_each(|a| tap.tap(a));
        }
    }

    /// Hands acks that came from `peer` to our sender task for it.
    pub(super) fn forward(&self, peer: PeerId, acks: Vec<Ack>) {
        if let Some(route) = lock_unpoisoned(&self.routes).get(&peer) {
            for a in acks {
                let _ = route.tx.send(AckEvent::Ack(a));
            }
        }
    }

    /// Forgets `peer`'s held acks and ack route (it was declared dead);
    /// its sender is told. The batches applied from it are kept ([`Seen`]):
    /// a peer that was only cut off may send them again when it returns.
    pub(super) fn forget(&self, peer: PeerId) {
        lock_unpoisoned(&self.held).remove(&peer);
        if let Some(route) = lock_unpoisoned(&self.routes).remove(&peer) {
            let _ = route.tx.send(AckEvent::Closed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::mail::Refusal;

    fn ack(seq: u64, busy: bool) -> Ack {
        let refused = if busy { vec![(0, Refusal::Busy)] } else { vec![] };
        Ack { seq, refused, invalid: None }
    }

    #[test]
    fn a_batch_sent_again_is_answered_with_its_first_ack_not_applied_twice() {
        let link = LinkState::default();
        let (p, q) = (PeerId::random(), PeerId::random());
        assert!(matches!(link.seen.fresh(p, 5), Fresh::Apply));
        // Sent again while the first copy is still being applied.
        assert!(matches!(link.seen.fresh(p, 5), Fresh::Busy));
        link.seen.applied(p, &ack(5, true));
        // Sent again later: the same answer, refusals included.
        assert!(matches!(link.seen.fresh(p, 5), Fresh::Again(a) if a == ack(5, true)));
        // Seqs are per peer.
        assert!(matches!(link.seen.fresh(q, 5), Fresh::Apply));
        // Only the last SEEN are remembered.
        for s in 6..6 + SEEN as u64 {
            assert!(matches!(link.seen.fresh(p, s), Fresh::Apply));
            link.seen.applied(p, &ack(s, false));
        }
        assert!(matches!(link.seen.fresh(p, 5), Fresh::Apply), "forgotten after SEEN newer batches");
    }

    #[test]
    fn a_batch_resent_after_a_death_verdict_is_still_not_applied_twice() {
        // A partition: the receiver declares the sender dead (forget), the
        // link heals, and the sender writes its batch in flight again.
        let link = LinkState::default();
        let p = PeerId::random();
        assert!(matches!(link.seen.fresh(p, 42), Fresh::Apply));
        link.seen.applied(p, &ack(42, false));
        link.forget(p);
        assert!(matches!(link.seen.fresh(p, 42), Fresh::Again(a) if a == ack(42, false)));
        // A new batch of the same peer still applies.
        assert!(matches!(link.seen.fresh(p, 43), Fresh::Apply));
    }

    #[test]
    fn the_record_is_bounded_by_peers_and_forgets_the_least_recent() {
        let link = LinkState::default();
        let first = PeerId::random();
        let busy = PeerId::random();
        assert!(matches!(link.seen.fresh(first, 1), Fresh::Apply));
        assert!(matches!(link.seen.fresh(busy, 1), Fresh::Apply));
        for _ in 0..SEEN_PEERS {
            // `busy` keeps talking; `first` went quiet.
            assert!(matches!(link.seen.fresh(busy, 1), Fresh::Busy));
            assert!(matches!(link.seen.fresh(PeerId::random(), 1), Fresh::Apply));
        }
        assert_eq!(link.seen.peers(), SEEN_PEERS);
        assert!(matches!(link.seen.fresh(busy, 1), Fresh::Busy), "the active peer is remembered");
        assert!(matches!(link.seen.fresh(first, 1), Fresh::Apply), "the quiet one was forgotten");
    }

    #[test]
    fn held_acks_are_taken_oldest_first_and_at_most_max() {
        let link = LinkState::default();
        let p = PeerId::random();
        assert!(link.take_held(p, 10).is_empty());
        let held = link.held(p);
        lock_unpoisoned(&held).extend((1..=5).map(|s| ack(s, false)));
        let first: Vec<u64> = link.take_held(p, 3).iter().map(|a| a.seq).collect();
        assert_eq!(first, [1, 2, 3]);
        let rest: Vec<u64> = link.take_held(p, 10).iter().map(|a| a.seq).collect();
        assert_eq!(rest, [4, 5]);
    }
}
