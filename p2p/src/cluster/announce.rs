//! Which of this node's objects are announced as provided in the DHT.
//!
//! A replica we stored is queued for an announcement (once). An owner's
//! own objects get no record, read or not: refs carry the owner's address,
//! so every reader reaches it while it lives, and its record is no use
//! once it died (a dead peer is never asked); the DHT matters only for the
//! copies elsewhere, which their holders announce. (Owners used to announce
//! an object when a peer first read it: a Kademlia provide per fresh
//! object a peer read, about a tenth of the CPU of a run of small gets, for
//! a record no reader needed.) The event loop
//! takes the queue every `ANNOUNCE_EVERY` (or on a flush), so objects freed
//! before then (most replicas of small objects) cost no DHT traffic at all.
//!
//! Invariants: an object is announced at most once while it is held; one
//! freed after its announcement is withdrawn (once); one freed while still
//! queued is skipped when the queue is taken.

use crate::sync::lock_unpoisoned;
use manta::ObjectId;
use std::collections::HashSet;
use std::sync::Mutex;

/// The announcement queue and the set of announced objects.
#[derive(Debug, Default)]
pub(crate) struct Announcements {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// Waiting for the loop's next round.
    queued: Vec<ObjectId>,
    /// Announced (or queued): withdrawn when freed.
    done: HashSet<ObjectId>,
}

impl Announcements {
    /// Queues `id` for an announcement, unless it was queued before.
    pub(crate) fn announce(&self, id: ObjectId) {
        let mut s = lock_unpoisoned(&self.state);
        if s.done.insert(id) {
            s.queued.push(id);
        }
    }

    /// `id` was freed here: true if its record must be withdrawn.
    pub(crate) fn freed(&self, id: ObjectId) -> bool {
        lock_unpoisoned(&self.state).done.remove(&id)
    }

    /// The queued announcements of objects not freed since.
    pub(crate) fn take_queued(&self) -> Vec<ObjectId> {
        let mut s = lock_unpoisoned(&self.state);
        let queued = std::mem::take(&mut s.queued);
        queued.into_iter().filter(|id| s.done.contains(id)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn announced_once_withdrawn_once_and_freed_ones_skipped() {
        let a = Announcements::default();
        let (x, y) = (ObjectId::fresh(), ObjectId::fresh());
        a.announce(x);
        a.announce(x);
        a.announce(y);
        assert!(a.freed(y), "queued, so withdrawn (a no-op if never sent)");
        assert_eq!(a.take_queued(), vec![x]);
        assert!(a.take_queued().is_empty());
        assert!(a.freed(x));
        assert!(!a.freed(x), "withdrawn once");
    }
}
