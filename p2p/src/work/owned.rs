//! Actors this node created on other nodes (the creator side of remote
//! actors): where each is hosted now, and what it takes to restart one
//! whose host died.
//!
//! Every handle to an actor shares one [`ActorHost`]: the creator moves it
//! to the new host on a restart, and its handles call there from then on.
//! [`OwnedActors`] keeps, for each actor created with restarts, its
//! constructor call and the restarts left, and a weak link to its host.
//!
//! Invariants: an actor is restarted at most once per host death and only
//! while it has restarts left (each restart uses one); an entry goes when
//! its creator's handles are all dropped (the weak link then fails too);
//! nothing here is dropped under the lock that could call back into it.

use crate::sync::{lock_unpoisoned, read_unpoisoned, write_unpoisoned};
use crate::wire::mail::Opts;
use libp2p::PeerId;
use manta::ObjectId;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock, Weak};

/// Where an actor is: its host and the host's owner hint.
#[derive(Debug)]
struct Host {
    peer: PeerId,
    hint: Vec<u8>,
}

/// The host of one actor, shared by its handles.
#[derive(Debug)]
pub(super) struct ActorHost(RwLock<Host>);

impl ActorHost {
    /// An actor hosted by `peer`, whose owner hint is `hint`.
    pub(super) fn new(peer: PeerId, hint: Vec<u8>) -> ActorHost {
        ActorHost(RwLock::new(Host { peer, hint }))
    }

    /// The node that hosts the actor.
    pub(super) fn peer(&self) -> PeerId {
        read_unpoisoned(&self.0).peer
    }

    /// The host's owner hint (how other nodes reach it).
    pub(super) fn hint(&self) -> Vec<u8> {
        read_unpoisoned(&self.0).hint.clone()
    }

    /// The actor moved to `peer` (restarted there).
    fn moved(&self, peer: PeerId, hint: Vec<u8>) {
        *write_unpoisoned(&self.0) = Host { peer, hint };
    }
}

/// What the creator keeps to restart an actor whose host dies.
pub(super) struct Owned {
    pub(super) class: String,
    pub(super) args: Vec<u8>,
    pub(super) opts: Opts,
    /// Restarts left (each host death uses one).
    pub(super) restarts: u32,
    pub(super) host: Weak<ActorHost>,
}

/// An actor to start again after its host died.
pub(super) struct Restart {
    pub(super) id: ObjectId,
    pub(super) class: String,
    pub(super) args: Vec<u8>,
    /// Its options, `retries` being the restarts left.
    pub(super) opts: Opts,
    host: Arc<ActorHost>,
}

impl Restart {
    /// Points every handle of the actor at its new host.
    pub(super) fn moved_to(&self, peer: PeerId, hint: Vec<u8>) {
        self.host.moved(peer, hint);
    }
}

/// The restartable actors this node created elsewhere.
#[derive(Default)]
pub(super) struct OwnedActors(Mutex<HashMap<ObjectId, Owned>>);

impl OwnedActors {
    /// Records actor `id` as restartable.
    pub(super) fn insert(&self, id: ObjectId, owned: Owned) {
        lock_unpoisoned(&self.0).insert(id, owned);
    }

    /// Forgets actor `id` (its creator's handles are gone).
    pub(super) fn remove(&self, id: ObjectId) {
        let gone = lock_unpoisoned(&self.0).remove(&id);
        drop(gone);
    }

    /// The actors hosted on `dead` that have restarts left, each with one
    /// restart used.
    pub(super) fn lost_on(&self, dead: PeerId) -> Vec<Restart> {
        let mut out = Vec::new();
        for (id, o) in lock_unpoisoned(&self.0).iter_mut() {
            let Some(host) = o.host.upgrade() else { continue };
            if host.peer() == dead && o.restarts > 0 {
                o.restarts -= 1;
                let opts = Opts { retries: o.restarts, ..o.opts.clone() };
                out.push(Restart { id: *id, class: o.class.clone(), args: o.args.clone(), opts, host });
            }
        }
        out
    }
}
