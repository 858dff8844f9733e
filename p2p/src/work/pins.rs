//! Borrow pins: the objects this node keeps alive for other nodes.
//!
//! - Borrows: signed per-(peer, object) counts from `Borrow` / `Release`
//!   mail (and one count per result made here for a peer); while a count
//!   is positive the object is pinned. Counts may go negative when a
//!   release overtakes its borrow; they meet at zero either way.
//! - Sent pins: refs this node encoded out of band (`Node::encode`), kept
//!   alive until a peer registers a borrow of them or [`SENT_PIN_TTL`]
//!   passes.
//!
//! - Aliases: results made here under another id than their submitter's
//!   (`exec`), served under the submitter's id while they live.
//!
//! Invariant: a pin is dropped outside the locks (dropping the last ref to
//! an object runs the runtime's free path, which calls back into the node).

use crate::sync::lock_unpoisoned;
use libp2p::PeerId;
use manta::{AnyRef, ObjectId};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Longest a ref encoded out of band stays pinned waiting for a borrower.
pub(super) const SENT_PIN_TTL: Duration = Duration::from_secs(300);

/// A count of refs a peer holds to one of our objects, and the pin that
/// keeps the object alive while the count is positive.
#[derive(Default)]
struct BorrowPin {
    count: i64,
    held: Option<AnyRef>,
}

/// Every pin this node holds for its peers.
#[derive(Default)]
pub(super) struct Pins {
    borrows: Mutex<HashMap<(PeerId, ObjectId), BorrowPin>>,
    sent: Mutex<HashMap<ObjectId, (Instant, AnyRef)>>,
}

impl Pins {
    /// Applies a borrow (`delta` +1) or release (-1) of `id` by `from`;
    /// `known` is the object if the caller has it, else `lookup` finds it
    /// (to pin it) when the count turns positive.
    pub(super) fn delta(
        &self,
        from: PeerId,
        id: ObjectId,
        delta: i64,
        known: Option<AnyRef>,
        lookup: impl FnOnce(ObjectId) -> Option<AnyRef>,
    ) {
        // A borrow takes over from the pin of a ref sent out of band
        // (dropped after this borrow's pin is in place, below).
        let sent = if delta > 0 { lock_unpoisoned(&self.sent).remove(&id) } else { None };
        let gone = {
            let mut borrows = lock_unpoisoned(&self.borrows);
            let e = borrows.entry((from, id)).or_default();
            e.count += delta;
            if e.count > 0 && e.held.is_none() {
                e.held = known.or_else(|| lookup(id));
            }
            if e.count <= 0 {
                let held = e.held.take();
                if e.count == 0 {
                    borrows.remove(&(from, id));
                }
                held
            } else {
                None
            }
        };
        drop(gone);
        drop(sent);
    }

    /// True if `id` is pinned for `from` (a result made here for it).
    pub(super) fn holds(&self, from: PeerId, id: ObjectId) -> bool {
        lock_unpoisoned(&self.borrows).get(&(from, id)).is_some_and(|p| p.held.is_some())
    }

    /// Objects pinned for peers.
    pub(super) fn count(&self) -> usize {
        lock_unpoisoned(&self.borrows).values().filter(|p| p.held.is_some()).count()
    }

    /// `peer` died: its pins go.
    pub(super) fn forget(&self, peer: PeerId) {
        let gone: Vec<BorrowPin> = {
            let mut all = lock_unpoisoned(&self.borrows);
            let keys: Vec<_> = all.keys().filter(|(p, _)| *p == peer).copied().collect();
            keys.iter().filter_map(|k| all.remove(k)).collect()
        };
        drop(gone);
    }

    /// Keeps refs encoded out of band alive until a peer borrows them, and
    /// drops expired ones.
    pub(super) fn pin_sent(&self, refs: Vec<AnyRef>) {
        let until = Instant::now() + SENT_PIN_TTL;
        let replaced: Vec<_> = {
            let mut sent = lock_unpoisoned(&self.sent);
            refs.into_iter().filter_map(|r| sent.insert(r.id(), (until, r))).collect()
        };
        drop(replaced);
        self.sweep_sent();
    }

    /// Drops out-of-band pins whose time is up.
    pub(super) fn sweep_sent(&self) {
        let now = Instant::now();
        let expired: Vec<_> = {
            let mut sent = lock_unpoisoned(&self.sent);
            let ids: Vec<ObjectId> = sent.iter().filter(|(_, (t, _))| *t <= now).map(|(id, _)| *id).collect();
            ids.iter().filter_map(|id| sent.remove(id)).collect()
        };
        drop(expired);
    }
}

/// Results made here under another id than their submitter's (see
/// `exec`): submitter's id → local output id. An entry goes once its
/// output is gone; at most [`MAX_ALIASES`] are kept (the dead are swept
/// when it is full).
#[derive(Default)]
pub(super) struct Aliases(Mutex<HashMap<ObjectId, ObjectId>>);

/// Most aliases kept.
const MAX_ALIASES: usize = 4096;

impl Aliases {
    /// Serves `out` as `id`.
    pub(super) fn insert(&self, id: ObjectId, out: ObjectId) {
        let mut map = lock_unpoisoned(&self.0);
        if map.len() >= MAX_ALIASES {
            map.clear(); // (only readers that race their output's end lose it)
        }
        map.insert(id, out);
    }

    /// The id `id` is served as (itself unless aliased to a live output,
    /// as `alive` says).
    pub(super) fn get(&self, id: ObjectId, alive: impl Fn(ObjectId) -> bool) -> ObjectId {
        let out = lock_unpoisoned(&self.0).get(&id).copied();
        match out {
            Some(out) if alive(out) => out,
            Some(_) => {
                lock_unpoisoned(&self.0).remove(&id);
                id
            }
            None => id,
        }
    }
}
