//! How much work is in flight between this node and its peers.
//!
//! - [`SentCounts`]: tasks this node sent to each peer and that are not
//!   done (placement avoids peers at the bound, and counts these as load,
//!   since gossip lags);
//! - [`Accepted`]: tasks and actor calls this node accepted from peers and
//!   that are not done (back-pressure: beyond the bound peers are told it
//!   is busy).
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

/// Tasks and actor calls accepted from peers and not done, with its bound.
pub(super) struct Accepted {
    n: AtomicUsize,
    max: usize,
}

impl Accepted {
    /// None accepted yet; at most `max` at once.
    pub(super) fn new(max: usize) -> Accepted {
        Accepted { n: AtomicUsize::new(0), max }
    }

    /// Takes a slot for a task if one is free.
    pub(super) fn try_take(&self) -> bool {
        if self.n.fetch_add(1, Ordering::AcqRel) >= self.max {
            self.n.fetch_sub(1, Ordering::AcqRel);
            return false;
        }
        true
    }

    /// Takes a slot whatever the bound (an actor call already admitted).
    pub(super) fn take(&self) {
        self.n.fetch_add(1, Ordering::AcqRel);
    }

    /// Gives a slot back.
    pub(super) fn release(&self) {
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

    /// The bound.
    pub(super) fn max(&self) -> usize {
        self.max
    }
}
