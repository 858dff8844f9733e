//! Which of this node's objects are announced as provided in the DHT.
//!
//! A replica we stored is queued for an announcement (once), and
//! announced once it has been held for a whole announcement period. An owner's
//! own objects get no record, read or not: refs carry the owner's address,
//! so every reader reaches it while it lives, and its record is no use
//! once it died (a dead peer is never asked); the DHT matters only for the
//! copies elsewhere, which their holders announce. (Owners used to announce
//! an object when a peer first read it: a Kademlia provide per fresh
//! object a peer read, about a tenth of the CPU of a run of small gets, for
//! a record no reader needed.) The event loop
//! takes what is due every `ANNOUNCE_EVERY` (everything on a flush). The
//! queue has two generations: a copy queued since the last tick is *fresh*
//! and becomes *due* at that tick, so it goes out at the tick after, one to
//! two periods after it was made, if it is still held. Copies freed before
//! then (most replicas of small objects: read once, then dropped) cost no
//! DHT traffic at all, whatever their phase against the timer. (With one
//! generation, a copy made just before a tick was announced a moment old:
//! in a run of small gets, a burst of provide queries each period, on both
//! nodes' event loops, that delayed the gets it overlapped.)
//!
//! Invariants: an object is announced at most once while it is held; one
//! freed after its announcement is withdrawn (once); one freed while still
//! queued is skipped when its turn comes; a copy queued is due at the
//! latest at the second tick after it.

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
    /// Queued since the last tick: due at the next one.
    fresh: Vec<ObjectId>,
    /// Queued before the last tick: announced at the next one.
    due: Vec<ObjectId>,
    /// Announced (or queued): withdrawn when freed.
    done: HashSet<ObjectId>,
}

impl Announcements {
    /// Queues `id` for an announcement, unless it was queued before.
    pub(crate) fn announce(&self, id: ObjectId) {
        let mut s = lock_unpoisoned(&self.state);
        if s.done.insert(id) {
            s.fresh.push(id);
        }
    }

    /// `id` was freed here: true if its record must be withdrawn.
    pub(crate) fn freed(&self, id: ObjectId) -> bool {
        lock_unpoisoned(&self.state).done.remove(&id)
    }

    /// A tick: the due announcements of objects not freed since; the
    /// fresh ones become due.
    pub(crate) fn take_due(&self) -> Vec<ObjectId> {
        let mut s = lock_unpoisoned(&self.state);
        let fresh = std::mem::take(&mut s.fresh);
        let due = std::mem::replace(&mut s.due, fresh);
        due.into_iter().filter(|id| s.done.contains(id)).collect()
    }

    /// A flush: every queued announcement of an object not freed since.
    pub(crate) fn take_all(&self) -> Vec<ObjectId> {
        let mut s = lock_unpoisoned(&self.state);
        let mut all = std::mem::take(&mut s.due);
        all.append(&mut s.fresh);
        all.into_iter().filter(|id| s.done.contains(id)).collect()
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
        assert_eq!(a.take_all(), vec![x]);
        assert!(a.take_all().is_empty());
        assert!(a.take_due().is_empty());
        assert!(a.freed(x));
        assert!(!a.freed(x), "withdrawn once");
    }

    #[test]
    fn a_copy_is_due_at_the_second_tick_and_skipped_if_freed_before() {
        let a = Announcements::default();
        let (x, y, z) = (ObjectId::fresh(), ObjectId::fresh(), ObjectId::fresh());
        a.announce(x);
        a.announce(y);
        assert!(a.take_due().is_empty(), "fresh at the first tick");
        a.announce(z);
        assert!(a.freed(y), "freed while queued");
        assert_eq!(a.take_due(), vec![x], "x due at the second tick; y freed");
        assert_eq!(a.take_due(), vec![z], "z, queued after the first tick, at the third");
        assert!(a.take_due().is_empty());
    }
}
