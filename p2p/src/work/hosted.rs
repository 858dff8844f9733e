//! Actors hosted here for other nodes (the executor side of remote actors).
//!
//! An entry moves `Expected` (calls arrived before the creation: they come
//! from different nodes, so on different streams, and wait here, bounded
//! in number and time) → `Live` or `Failed` (creation) → `Gone` (its
//! creator dropped it; a bounded number of these is remembered, so late
//! calls fail at once). A `Live` actor whose creator's node dies is
//! removed.
//!
//! Invariants: an actor handle (and so the actor) is dropped outside the
//! lock; parked calls are handed back exactly once (to run, or to fail);
//! at most [`MAX_PARKED`] calls wait per actor and [`MAX_GONE`] dropped
//! actors are remembered. Lock order: `gone`, then `actors`.

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
    Failed(Error),
    /// Not created yet: calls wait here.
    Expected(Vec<ParkedCall>),
    /// Dropped by its creator.
    Gone,
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
    actors: Mutex<HashMap<ObjectId, Hosted>>,
    /// The most recently dropped actors (their `Gone` entries).
    gone: Mutex<VecDeque<ObjectId>>,
}

impl HostedActors {
    /// Records actor `actor`, created (or failed to be) for `owner`; the
    /// calls that waited for it, to run now.
    pub(super) fn created(&self, actor: ObjectId, owner: PeerId, made: Result<AnyActor, Error>) -> Vec<ParkedCall> {
        let hosted = match made {
            Ok(handle) => Hosted::Live { owner, handle },
            Err(e) => Hosted::Failed(e),
        };
        let before = lock_unpoisoned(&self.actors).insert(actor, hosted);
        match before {
            Some(Hosted::Expected(calls)) => calls,
            _ => Vec::new(), // (a replaced actor is dropped here, after the lock)
        }
    }

    /// Ends actor `actor` (its creator dropped it): the calls that waited
    /// for it, to fail.
    pub(super) fn dropped(&self, actor: ObjectId) -> Vec<ParkedCall> {
        let before = lock_unpoisoned(&self.actors).insert(actor, Hosted::Gone);
        let mut gone = lock_unpoisoned(&self.gone);
        gone.push_back(actor);
        if gone.len() > MAX_GONE {
            if let Some(old) = gone.pop_front() {
                let mut actors = lock_unpoisoned(&self.actors);
                if matches!(actors.get(&old), Some(Hosted::Gone)) {
                    actors.remove(&old);
                }
            }
        }
        drop(gone);
        match before {
            Some(Hosted::Expected(calls)) => calls,
            _ => Vec::new(), // (a live actor's handle is dropped here, after the locks)
        }
    }

    /// True if `actor` is not created (yet): calls for it must wait.
    pub(super) fn awaits_creation(&self, actor: ObjectId) -> bool {
        matches!(lock_unpoisoned(&self.actors).get(&actor), None | Some(Hosted::Expected(_)))
    }

    /// Parks a call for an actor not created yet.
    pub(super) fn park(&self, actor: ObjectId, call: ParkedCall) -> Parked {
        let mut actors = lock_unpoisoned(&self.actors);
        let first = !actors.contains_key(&actor);
        let entry = actors.entry(actor).or_insert_with(|| Hosted::Expected(Vec::new()));
        let Hosted::Expected(calls) = entry else { return Parked::Exists };
        if calls.len() >= MAX_PARKED {
            return Parked::Full(call);
        }
        calls.push(call);
        Parked::Waiting { first }
    }

    /// The calls still waiting for `actor`'s creation, which timed out.
    pub(super) fn expire(&self, actor: ObjectId) -> Vec<ParkedCall> {
        let expired = {
            let mut actors = lock_unpoisoned(&self.actors);
            match actors.get(&actor) {
                Some(Hosted::Expected(_)) => actors.remove(&actor),
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
        let actors = lock_unpoisoned(&self.actors);
        let dead = |reason: String| Error::ActorDead { actor: actor.to_string().into(), reason: reason.into() };
        match actors.get(&actor) {
            None | Some(Hosted::Expected(_)) => Err(dead(format!("no actor {actor} on node {me}"))),
            Some(Hosted::Gone) => Err(dead(format!("it was dropped by its creator (node {me})"))),
            Some(Hosted::Failed(e)) => Err(e.clone()),
            Some(Hosted::Live { handle, .. }) => call(handle.as_ref()),
        }
    }

    /// `owner` died: the actors it created here go.
    pub(super) fn forget_owner(&self, owner: PeerId) {
        let gone: Vec<Hosted> = {
            let mut all = lock_unpoisoned(&self.actors);
            let keys: Vec<_> = all
                .iter()
                .filter(|(_, h)| matches!(h, Hosted::Live { owner: o, .. } if *o == owner))
                .map(|(k, _)| *k)
                .collect();
            keys.iter().filter_map(|k| all.remove(k)).collect()
        };
        drop(gone);
    }
}
