//! How much work is in flight between this node and its peers.
//!
//! - [`SentCounts`]: tasks this node sent to each peer and that are not
//!   done (placement avoids peers at the bound, and counts these as load,
//!   since gossip lags);
//! - [`Accepted`]: tasks and actor calls this node accepted from peers and
//!   that are not done (back-pressure: beyond the bound, or beyond a
//!   peer's share of half of it, peers are told it is busy).
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

/// Tasks and actor calls accepted from peers and not done, with its bound,
/// in all and per peer: one peer may hold at most half the slots
/// ([`Accepted::per_peer`]), so a peer that floods this node with work
/// leaves the other half to everyone else (it is told `Busy` beyond its
/// share, as every peer is beyond the whole bound).
pub(super) struct Accepted {
    n: AtomicUsize,
    max: usize,
    by_peer: Mutex<HashMap<PeerId, usize>>,
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

    /// Takes a slot for a task from `peer` if one is free, in all and
    /// within `peer`'s share.
    pub(super) fn try_take(&self, peer: PeerId) -> bool {
        let mut by_peer = lock_unpoisoned(&self.by_peer);
        let mine = by_peer.entry(peer).or_default();
        if *mine >= self.per_peer() {
            return false;
        }
        if self.n.fetch_add(1, Ordering::AcqRel) >= self.max {
            self.n.fetch_sub(1, Ordering::AcqRel);
            if *mine == 0 {
                by_peer.remove(&peer);
            }
            return false;
        }
        *mine += 1;
        true
    }

    /// Takes a slot for `peer` whatever the bound (an actor call already
    /// admitted).
    pub(super) fn take(&self, peer: PeerId) {
        *lock_unpoisoned(&self.by_peer).entry(peer).or_default() += 1;
        self.n.fetch_add(1, Ordering::AcqRel);
    }

    /// Gives `peer`'s slot back.
    pub(super) fn release(&self, peer: PeerId) {
        let mut by_peer = lock_unpoisoned(&self.by_peer);
        if let Some(mine) = by_peer.get_mut(&peer) {
            *mine = mine.saturating_sub(1);
            if *mine == 0 {
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
        assert!(a.try_take(flood) && a.try_take(flood));
        assert!(!a.try_take(flood), "beyond its share");
        assert!(a.try_take(honest) && a.try_take(honest));
        assert!(!a.try_take(PeerId::random()), "beyond the whole bound");
        a.release(flood);
        assert!(a.try_take(flood), "a slot given back is free again");
        for p in [flood, flood, honest, honest] {
            a.release(p);
        }
        assert_eq!(a.count(), 0);
        assert!(lock_unpoisoned(&a.by_peer).is_empty(), "no entry is kept for a peer with nothing accepted");
    }
}
