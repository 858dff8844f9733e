//! Actors hosted here for other nodes (the executor side of remote actors).
//!
//! An entry moves `Expected` (calls arrived before the creation: they come
//! from different nodes, so on different streams, and wait here, bounded
//! in number and time) → `Live` or `Failed` (creation) → `Gone` (its
//! creator dropped it; a bounded number of these is remembered, so late
//! calls fail at once). A `Live` or `Failed` actor whose creator's node
//! dies is removed.
//!
//! Who may do what: the peer whose `NewActor` created an entry is its
//! owner. A creation never replaces an entry that exists (live, failed or
//! dropped): it is refused ([`Refused::Exists`]), so nobody can reset or
//! take over another node's actor; restarts come from the owner to a node
//! that does not host the actor (see `replace`). Only the owner's
//! `DropActor` ends an actor; anyone else's is ignored. Each peer owns at
//! most [`MAX_ACTORS_PER_PEER`] actors here; beyond, a creation is refused
//! ([`Refused::TooMany`]) and remembered (bounded, like dropped actors) so
//! the calls for it fail at once with that cause. Calls are open to every
//! member.
//!
//! Invariants: an actor handle (and so the actor) is dropped outside the
//! lock; parked calls are handed back exactly once (to run, or to fail);
//! at most [`MAX_PARKED`] calls wait per actor, and from one peer at most
//! [`MAX_PARKED_PER_PEER`] calls and [`MAX_PARKED_BYTES_PER_PEER`] bytes
//! over all actors (`parked[p]` counts the calls and bytes of `p`'s calls
//! in `Expected` entries: charged when parked, given back when the entry
//! leaves the map); at most [`MAX_GONE`] dropped or
//! refused actors are remembered; `owned[p]` is the number of `Live` and
//! `Failed` entries owned by `p` (never above [`MAX_ACTORS_PER_PEER`] for
//! a peer other than this node). Lock order: `gone`, then `actors`.

use crate::sync::lock_unpoisoned;
use libp2p::PeerId;
use manta::{AnyRef, Error, ObjectId};
use std::any::Any;
use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

/// Dropped actors remembered (so late calls fail at once).
const MAX_GONE: usize = 4096;
/// Calls that may wait for one actor's creation.
const MAX_PARKED: usize = 4096;
/// Actors one peer may own here (live or failed).
pub const MAX_ACTORS_PER_PEER: usize = 4096;
/// Calls one peer may have waiting for actors' creation, over all actors.
pub const MAX_PARKED_PER_PEER: usize = 4096;
/// Bytes of arguments (and method names) one peer may have waiting for
/// actors' creation, over all actors.
pub const MAX_PARKED_BYTES_PER_PEER: usize = 64 << 20;

/// An actor handle of any state type (`manta::ActorHandle<S>`).
pub(super) type AnyActor = Box<dyn Any + Send + Sync>;

/// A call that arrived before its actor's creation.
pub(super) struct ParkedCall {
    pub(super) from: PeerId,
    pub(super) method: String,
    pub(super) args: Vec<u8>,
    pub(super) id: ObjectId,
}

/// An actor hosted here.
enum Hosted {
    Live {
        owner: PeerId,
        handle: AnyActor,
    },
    /// Its creation failed: every call fails with this.
    Failed {
        owner: PeerId,
        error: Error,
    },
    /// Not created yet: calls wait here.
    Expected(Vec<ParkedCall>),
    /// Dropped by its creator.
    Gone,
    /// Its creation was refused (its creator owns too many here): every
    /// call fails with this.
    Refused(Error),
}

impl Hosted {
    /// The owner of a live or failed actor.
    fn owner(&self) -> Option<PeerId> {
        match self {
            Hosted::Live { owner, .. } | Hosted::Failed { owner, .. } => Some(*owner),
            _ => None,
        }
    }
}

/// Why a creation was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(super) enum Refused {
    /// The id is taken (a live, failed or dropped actor): creations never
    /// replace one.
    #[error("actor {actor} exists on this node already; a creation never replaces one")]
    Exists {
        /// The actor.
        actor: ObjectId,
    },
    /// Its creator owns [`MAX_ACTORS_PER_PEER`] actors here already.
    #[error("node {creator} owns {MAX_ACTORS_PER_PEER} actors on this node already (the most a peer may)")]
    TooMany {
        /// The peer that asked.
        creator: PeerId,
    },
}

/// The table of hosted actors, how many each peer owns, and how many calls
/// (and bytes) each peer has waiting in `Expected` entries.
#[derive(Default)]
struct Table {
    map: HashMap<ObjectId, Hosted>,
    owned: HashMap<PeerId, usize>,
    parked: HashMap<PeerId, (usize, usize)>,
}

impl ParkedCall {
    /// The bytes it holds (charged to its sender while it waits).
    fn bytes(&self) -> usize {
        self.args.len() + self.method.len()
    }
}

impl Table {
    /// Removes `actor`'s entry, keeping `owned` right.
    fn remove(&mut self, actor: &ObjectId) -> Option<Hosted> {
        let before = self.map.remove(actor);
        self.disowned(before.as_ref());
        before
    }

    /// Sets `actor`'s entry, keeping `owned` right; the entry before.
    fn insert(&mut self, actor: ObjectId, h: Hosted) -> Option<Hosted> {
        if let Some(o) = h.owner() {
            *self.owned.entry(o).or_default() += 1;
        }
        let before = self.map.insert(actor, h);
        self.disowned(before.as_ref());
        before
    }

    /// Keeps `owned` and `parked` right for an entry that left the map.
    fn disowned(&mut self, before: Option<&Hosted>) {
        if let Some(Hosted::Expected(calls)) = before {
            for c in calls {
                self.unpark(c);
            }
        }
        if let Some(o) = before.and_then(Hosted::owner) {
            if let Some(n) = self.owned.get_mut(&o) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    self.owned.remove(&o);
                }
            }
        }
    }

    /// Charges a waiting call to its sender; false (nothing charged) if
    /// the sender's share of waiting calls or bytes is used up.
    fn charge_parked(&mut self, c: &ParkedCall) -> bool {
        let (calls, bytes) = self.parked.get(&c.from).copied().unwrap_or((0, 0));
        if calls >= MAX_PARKED_PER_PEER || bytes.saturating_add(c.bytes()) > MAX_PARKED_BYTES_PER_PEER {
            return false;
        }
        self.parked.insert(c.from, (calls + 1, bytes + c.bytes()));
        true
    }

    /// Gives back what a waiting call charged its sender.
    fn unpark(&mut self, c: &ParkedCall) {
        if let Some((calls, bytes)) = self.parked.get_mut(&c.from) {
            *calls = calls.saturating_sub(1);
            *bytes = bytes.saturating_sub(c.bytes());
            if *calls == 0 {
                self.parked.remove(&c.from);
            }
        }
    }

    /// Whether `from` may create `actor` now (`me` is this node: no cap).
    fn may_create(&self, actor: ObjectId, from: PeerId, me: PeerId) -> Result<(), Refused> {
        match self.map.get(&actor) {
            None | Some(Hosted::Expected(_)) | Some(Hosted::Refused(_)) => {}
            Some(_) => return Err(Refused::Exists { actor }),
        }
        if from != me && self.owned.get(&from).copied().unwrap_or(0) >= MAX_ACTORS_PER_PEER {
            return Err(Refused::TooMany { creator: from });
        }
        Ok(())
    }
}

/// What became of a call for an actor not created yet.
pub(super) enum Parked {
    /// It waits; `first` if it is the first for this actor (so the caller
    /// starts the creation timeout).
    Waiting { first: bool },
    /// Too many wait already: it fails.
    Full(ParkedCall),
    /// The actor exists now: call it.
    Exists,
}

/// The actors hosted here.
#[derive(Default)]
pub(super) struct HostedActors {
    actors: Mutex<Table>,
    /// The most recently dropped (or refused) actors (their `Gone` and
    /// `Refused` entries).
    gone: Mutex<VecDeque<ObjectId>>,
}

impl HostedActors {
    /// Whether `from` may create `actor` (checked before the actor is
    /// made, and again when it is recorded); `me` is this node.
    pub(super) fn may_create(&self, actor: ObjectId, from: PeerId, me: PeerId) -> Result<(), Refused> {
        lock_unpoisoned(&self.actors).may_create(actor, from, me)
    }

    /// Records actor `actor`, created (or failed to be) for `owner`; the
    /// calls that waited for it, to run now. Refused (and `made` dropped,
    /// after the lock) if the id is taken meanwhile or `owner` owns too
    /// many; `me` is this node.
    pub(super) fn created(
        &self,
        actor: ObjectId,
        owner: PeerId,
        me: PeerId,
        made: Result<AnyActor, Error>,
    ) -> Result<Vec<ParkedCall>, Refused> {
        let hosted = match made {
            Ok(handle) => Hosted::Live { owner, handle },
            Err(error) => Hosted::Failed { owner, error },
        };
        let before = {
            let mut t = lock_unpoisoned(&self.actors);
            if let Err(r) = t.may_create(actor, owner, me) {
                drop(t);
                drop(hosted);
                return Err(r);
            }
            t.insert(actor, hosted)
        };
        match before {
            Some(Hosted::Expected(calls)) => Ok(calls),
            _ => Ok(Vec::new()),
        }
    }

    /// Remembers that `actor`'s creation was refused with `e` (calls for
    /// it fail with `e`), unless an entry exists: the calls that waited
    /// for it, to fail.
    pub(super) fn refused(&self, actor: ObjectId, e: Error) -> Vec<ParkedCall> {
        let before = {
            let mut t = lock_unpoisoned(&self.actors);
            match t.map.get(&actor) {
                None | Some(Hosted::Expected(_)) => t.insert(actor, Hosted::Refused(e)),
                _ => return Vec::new(),
            }
        };
        self.remember_gone(actor);
        match before {
            Some(Hosted::Expected(calls)) => calls,
            _ => Vec::new(),
        }
    }

    /// Ends actor `actor` if `from` owns it (its creator dropped it);
    /// a drop from anyone else, or of an actor not created, is ignored
    /// (false).
    pub(super) fn dropped(&self, actor: ObjectId, from: PeerId) -> bool {
        let before = {
            let mut t = lock_unpoisoned(&self.actors);
            if t.map.get(&actor).and_then(Hosted::owner) != Some(from) {
                return false;
            }
            t.insert(actor, Hosted::Gone)
        };
        self.remember_gone(actor);
        drop(before); // (a live actor's handle is dropped here, after the locks)
        true
    }

    /// Records `actor` among the remembered `Gone`/`Refused` entries,
    /// forgetting the oldest beyond [`MAX_GONE`].
    fn remember_gone(&self, actor: ObjectId) {
        let mut gone = lock_unpoisoned(&self.gone);
        gone.push_back(actor);
        if gone.len() > MAX_GONE {
            if let Some(old) = gone.pop_front() {
                let mut t = lock_unpoisoned(&self.actors);
                if matches!(t.map.get(&old), Some(Hosted::Gone | Hosted::Refused(_))) {
                    t.remove(&old);
                }
            }
        }
    }

    /// True if `actor` is not created (yet): calls for it must wait.
    pub(super) fn awaits_creation(&self, actor: ObjectId) -> bool {
        matches!(lock_unpoisoned(&self.actors).map.get(&actor), None | Some(Hosted::Expected(_)))
    }

    /// Parks a call for an actor not created yet.
    pub(super) fn park(&self, actor: ObjectId, call: ParkedCall) -> Parked {
        let mut t = lock_unpoisoned(&self.actors);
        let first = match t.map.get(&actor) {
            None => true,
            Some(Hosted::Expected(calls)) if calls.len() >= MAX_PARKED => return Parked::Full(call),
            Some(Hosted::Expected(_)) => false,
            Some(_) => return Parked::Exists,
        };
        if !t.charge_parked(&call) {
            return Parked::Full(call);
        }
        if let Hosted::Expected(calls) = t.map.entry(actor).or_insert_with(|| Hosted::Expected(Vec::new())) {
            calls.push(call);
        }
        Parked::Waiting { first }
    }

    /// The calls still waiting for `actor`'s creation, which timed out.
    pub(super) fn expire(&self, actor: ObjectId) -> Vec<ParkedCall> {
        let expired = {
            let mut t = lock_unpoisoned(&self.actors);
            match t.map.get(&actor) {
                Some(Hosted::Expected(_)) => t.remove(&actor),
                _ => None,
            }
        };
        match expired {
            Some(Hosted::Expected(calls)) => calls,
            _ => Vec::new(),
        }
    }

    /// Runs `call` on a live actor's handle (under the lock: it only
    /// queues the call); why not if the actor is not live. `me` names this
    /// node in errors.
    pub(super) fn call(
        &self,
        actor: ObjectId,
        me: PeerId,
        call: impl FnOnce(&(dyn Any + Send + Sync)) -> Result<AnyRef, Error>,
    ) -> Result<AnyRef, Error> {
        let t = lock_unpoisoned(&self.actors);
        let dead = |reason: String| Error::ActorDead { actor: actor.to_string().into(), reason: reason.into() };
        match t.map.get(&actor) {
            None | Some(Hosted::Expected(_)) => Err(dead(format!("no actor {actor} on node {me}"))),
            Some(Hosted::Gone) => Err(dead(format!("it was dropped by its creator (node {me})"))),
            Some(Hosted::Failed { error, .. }) | Some(Hosted::Refused(error)) => Err(error.clone()),
            Some(Hosted::Live { handle, .. }) => call(handle.as_ref()),
        }
    }

    /// `owner` died: the actors it created here go.
    pub(super) fn forget_owner(&self, owner: PeerId) {
        let gone: Vec<Hosted> = {
            let mut t = lock_unpoisoned(&self.actors);
            let keys: Vec<_> = t.map.iter().filter(|(_, h)| h.owner() == Some(owner)).map(|(k, _)| *k).collect();
            keys.iter().filter_map(|k| t.remove(k)).collect()
        };
        drop(gone);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(from: PeerId, bytes: usize) -> ParkedCall {
        ParkedCall { from, method: String::new(), args: vec![0; bytes], id: ObjectId::from_bytes([1; 16]) }
    }

    fn actor(i: u32) -> ObjectId {
        let mut b = [7u8; 16];
        b[..4].copy_from_slice(&i.to_be_bytes());
        ObjectId::from_bytes(b)
    }

    #[test]
    fn one_peer_parks_at_most_its_share_over_all_actors() {
        let h = HostedActors::default();
        let (flooder, honest) = (PeerId::random(), PeerId::random());
        // One call per made-up actor: the per-actor cap never bites.
        for i in 0..MAX_PARKED_PER_PEER as u32 {
            assert!(matches!(h.park(actor(i), call(flooder, 0)), Parked::Waiting { first: true }));
        }
        assert!(matches!(h.park(actor(u32::MAX), call(flooder, 0)), Parked::Full(_)));
        assert!(!lock_unpoisoned(&h.actors).map.contains_key(&actor(u32::MAX)), "a refused call leaves no entry");
        assert!(matches!(h.park(actor(0), call(honest, 10)), Parked::Waiting { first: false }), "others still park");
        // Expiry gives the share back.
        assert_eq!(h.expire(actor(1)).len(), 1);
        assert!(matches!(h.park(actor(u32::MAX), call(flooder, 0)), Parked::Waiting { .. }));
    }

    #[test]
    fn parked_bytes_per_peer_are_capped_and_given_back_on_creation() {
        let h = HostedActors::default();
        let (flooder, me) = (PeerId::random(), PeerId::random());
        let big = MAX_PARKED_BYTES_PER_PEER / 4;
        for i in 0..4 {
            assert!(matches!(h.park(actor(i), call(flooder, big)), Parked::Waiting { .. }));
        }
        assert!(matches!(h.park(actor(9), call(flooder, 1)), Parked::Full(_)));
        // The actor is created: its waiting calls are handed back, and so
        // is their charge.
        let handed = h.created(actor(0), me, me, Ok(Box::new(()))).unwrap_or_default();
        assert_eq!(handed.len(), 1);
        assert!(matches!(h.park(actor(9), call(flooder, big)), Parked::Waiting { .. }));
        assert_eq!(lock_unpoisoned(&h.actors).parked.get(&flooder), Some(&(4, 4 * big)));
    }
}
