//! Borrow pins: the objects this node keeps alive for other nodes.
//!
//! - Borrows: per-(peer, object) counts from `Borrow` / `Release` mail
//!   (and one count per result made here for a peer); while a count is
//!   positive the object is pinned. Only objects that exist here (in the
//!   export table: exported, replicas, remote refs) are counted: a borrow
//!   of any other id is dropped without allocating, a release with no
//!   count is ignored, and a count that reaches zero goes (no negative
//!   counts are kept). A peer has at most [`MAX_BORROWS_PER_PEER`]
//!   entries; a borrow beyond is refused (not allocated).
//! - Sent pins: refs this node encoded out of band (`Node::encode`), kept
//!   alive until a peer registers a borrow of them or [`SENT_PIN_TTL`]
//!   passes.
//!
//! - Each peer's borrow of an object starting and ending is reported
//!   (`Pins::with_borrowers`), for `RefCounts::borrowers`.
//! - Aliases: results made here under another id than their submitter's
//!   (`exec`), served under the submitter's id while they live.
//!
//! Invariants: every borrow entry has a positive count and holds its
//! object; `per_peer[p]` is the number of `p`'s entries, at most
//! [`MAX_BORROWS_PER_PEER`]. A pin is dropped outside the locks (dropping the last ref to
//! an object runs the runtime's free path, which calls back into the node).

use crate::sync::lock_unpoisoned;
use libp2p::PeerId;
use manta::{AnyRef, ObjectId};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Longest a ref encoded out of band stays pinned waiting for a borrower.
pub(super) const SENT_PIN_TTL: Duration = Duration::from_secs(300);

/// Most borrow entries (objects counted) kept for one peer.
pub const MAX_BORROWS_PER_PEER: usize = 65_536;

/// A count of refs a peer holds to one of our objects, and the pin that
/// keeps the object alive while the count is positive.
#[derive(Default)]
struct BorrowPin {
    count: i64,
    held: Option<AnyRef>,
}

/// The borrow counts, and how many entries each peer has.
#[derive(Default)]
struct Borrows {
    map: HashMap<(PeerId, ObjectId), BorrowPin>,
    per_peer: HashMap<PeerId, usize>,
}

impl Borrows {
    fn remove(&mut self, k: &(PeerId, ObjectId)) -> Option<BorrowPin> {
        let e = self.map.remove(k)?;
        if let Some(n) = self.per_peer.get_mut(&k.0) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.per_peer.remove(&k.0);
            }
        }
        Some(e)
    }
}

/// Told when a peer starts (+1) or stops (-1) borrowing an object (what
/// `RefCounts::borrowers` reports: `Backend::add_borrowers`).
pub(super) type OnBorrowers = Box<dyn Fn(&AnyRef, isize) + Send + Sync>;

/// Every pin this node holds for its peers.
#[derive(Default)]
pub(super) struct Pins {
    borrows: Mutex<Borrows>,
    sent: Mutex<HashMap<ObjectId, (Instant, AnyRef)>>,
    on_borrowers: Option<OnBorrowers>,
}

impl Pins {
    /// Pins that report each peer's borrow starting and ending to `f`.
    pub(super) fn with_borrowers(f: OnBorrowers) -> Pins {
        Pins { on_borrowers: Some(f), ..Pins::default() }
    }

    /// Reports a borrower more (+1) or fewer (-1) for `held`.
    fn borrowers(&self, held: Option<&AnyRef>, delta: isize) {
        if let (Some(f), Some(r)) = (&self.on_borrowers, held) {
            f(r, delta);
        }
    }

    /// Applies a borrow (`delta` +1) or release (-1) of `id` by `from`;
    /// `known` is the object if the caller has it, else `lookup` finds it
    /// (to pin it) when a count starts. False if it was not counted: a
    /// borrow of an object not here, or beyond the peer's cap, or a
    /// release with no count.
    pub(super) fn delta(
        &self,
        from: PeerId,
        id: ObjectId,
        delta: i64,
        known: Option<AnyRef>,
        lookup: impl FnOnce(ObjectId) -> Option<AnyRef>,
    ) -> bool {
        let k = (from, id);
        let (counted, gone) = {
            let mut b = lock_unpoisoned(&self.borrows);
            let full = b.per_peer.get(&from).copied().unwrap_or(0) >= MAX_BORROWS_PER_PEER;
            match b.map.get_mut(&k) {
                Some(e) => {
                    e.count += delta;
                    if e.count > 0 {
                        (true, None)
                    } else {
                        let gone = b.remove(&k).and_then(|e| e.held);
                        self.borrowers(gone.as_ref(), -1);
                        (true, gone)
                    }
                }
                None if delta <= 0 => (false, None),
                None if full => (false, None),
                None => match known.or_else(|| lookup(id)) {
                    None => (false, None),
                    Some(held) => {
                        self.borrowers(Some(&held), 1);
                        b.map.insert(k, BorrowPin { count: delta, held: Some(held) });
                        *b.per_peer.entry(from).or_default() += 1;
                        (true, None)
                    }
                },
            }
        };
        // A borrow takes over from the pin of a ref sent out of band
        // (dropped after this borrow's pin is in place).
        let sent = if counted && delta > 0 { lock_unpoisoned(&self.sent).remove(&id) } else { None };
        drop(gone);
        drop(sent);
        counted
    }

    /// True if `id` is pinned for `from` (a result made here for it).
    pub(super) fn holds(&self, from: PeerId, id: ObjectId) -> bool {
        lock_unpoisoned(&self.borrows).map.get(&(from, id)).is_some_and(|p| p.held.is_some())
    }

    /// Objects pinned for peers (borrow entries).
    pub(super) fn count(&self) -> usize {
        lock_unpoisoned(&self.borrows).map.len()
    }

    /// `peer` died (or its connections stayed closed): its pins go.
    pub(super) fn forget(&self, peer: PeerId) {
        let gone: Vec<BorrowPin> = {
            let mut b = lock_unpoisoned(&self.borrows);
            if b.per_peer.remove(&peer).is_none() {
                return;
            }
            let keys: Vec<_> = b.map.keys().filter(|(p, _)| *p == peer).copied().collect();
            keys.iter().filter_map(|k| b.map.remove(k)).collect()
        };
        for pin in &gone {
            self.borrowers(pin.held.as_ref(), -1);
        }
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
/// `exec`): submitter's id → (local output id, submitter). An alias is
/// followed only for its submitter's requests: nobody else can make this
/// node serve its output under an id it does not hold. An entry goes once
/// its output is gone; at most [`MAX_ALIASES`] are kept (the dead are
/// swept when it is full).
#[derive(Default)]
pub(super) struct Aliases(Mutex<HashMap<ObjectId, (ObjectId, PeerId)>>);

/// Most aliases kept.
const MAX_ALIASES: usize = 4096;

impl Aliases {
    /// Serves `out` as `id` to `submitter`.
    pub(super) fn insert(&self, id: ObjectId, out: ObjectId, submitter: PeerId) {
        let mut map = lock_unpoisoned(&self.0);
        if map.len() >= MAX_ALIASES {
            map.clear(); // (only readers that race their output's end lose it)
        }
        map.insert(id, (out, submitter));
    }

    /// The id `id` is served as to `peer` (itself unless aliased, for
    /// `peer`, to a live output, as `alive` says).
    pub(super) fn get(&self, id: ObjectId, peer: PeerId, alive: impl Fn(ObjectId) -> bool) -> ObjectId {
        let out = lock_unpoisoned(&self.0).get(&id).copied();
        match out {
            Some((_, submitter)) if submitter != peer => id,
            Some((out, _)) if alive(out) => out,
            Some(_) => {
                lock_unpoisoned(&self.0).remove(&id);
                id
            }
            None => id,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_objects_here_are_counted_capped_per_peer_never_negative() {
        let rt = manta::Runtime::builder().num_cpus(1).build().expect("runtime");
        let obj = rt.put(1u8).expect("put").untyped();
        let pins = Pins::default();
        let (p, q) = (PeerId::random(), PeerId::random());
        // Made up: not allocated.
        assert!(!pins.delta(p, ObjectId::fresh(), 1, None, |_| None));
        // A release with no count: no negative count kept.
        let id = ObjectId::fresh();
        assert!(!pins.delta(p, id, -1, None, |_| Some(obj.clone())));
        assert!(pins.delta(p, id, 1, None, |_| Some(obj.clone())));
        assert!(pins.delta(p, id, -1, None, |_| None));
        assert_eq!(pins.count(), 0);
        // Capped per peer; another peer is not affected.
        for _ in 0..MAX_BORROWS_PER_PEER {
            assert!(pins.delta(p, ObjectId::fresh(), 1, None, |_| Some(obj.clone())));
        }
        assert!(!pins.delta(p, ObjectId::fresh(), 1, None, |_| Some(obj.clone())));
        assert!(pins.delta(q, ObjectId::fresh(), 1, None, |_| Some(obj.clone())));
        assert_eq!(pins.count(), MAX_BORROWS_PER_PEER + 1);
        pins.forget(p);
        assert_eq!(pins.count(), 1);
        assert!(pins.delta(p, ObjectId::fresh(), 1, None, |_| Some(obj.clone())));
    }

    #[test]
    fn an_alias_is_followed_only_for_its_submitter() {
        let a = Aliases::default();
        let (id, out) = (ObjectId::fresh(), ObjectId::fresh());
        let (submitter, other) = (PeerId::random(), PeerId::random());
        a.insert(id, out, submitter);
        assert_eq!(a.get(id, submitter, |_| true), out);
        assert_eq!(a.get(id, other, |_| true), id, "anyone else is served what the node holds as `id`");
        assert_eq!(a.get(id, submitter, |_| false), id, "a dead output is not followed");
        assert_eq!(a.get(id, submitter, |_| true), id, "and its alias is gone");
    }
}
