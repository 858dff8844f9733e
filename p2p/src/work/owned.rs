//! Actors this node created on other nodes (the creator side of remote
//! actors): where each is hosted now, and what it takes to restart one
//! whose host died.
//!
//! Every handle to an actor shares one [`ActorHost`]: the creator moves it
//! to the new host on a restart, and its handles call there from then on.
//! [`OwnedActors`] keeps, for each actor created with restarts, its
//! constructor call and the restarts left, and a weak link to its host.
//!
//! An actor whose host died while no live node has the resources it needs
//! *waits* (Ray's pending actor): its handles hold the calls made
//! meanwhile ([`OwnedActors::hold`]), in order, until a node that has the
//! resources joins and the actor restarts there (the calls then go to it,
//! before any later call), or until its restart timeout passes (the calls,
//! and every later one, then fail with why).
//!
//! Invariants: an actor is restarted at most once per host death and only
//! while it has restarts left (each restart uses one); an entry goes when
//! its creator's handles are all dropped (the weak link then fails too);
//! a held call is handed back exactly once (to send, or to fail); nothing
//! here is dropped under the lock that could call back into it. Lock
//! order: `waiting`, then the host's lock (and the locks of what the
//! closures given to [`OwnedActors::hold`] and [`OwnedActors::resume`]
//! take: results and outboxes, never this module's other lock).

use crate::cluster::placement::Need;
use crate::sync::{lock_unpoisoned, read_unpoisoned, write_unpoisoned};
use crate::wire::mail::Opts;
use libp2p::PeerId;
use manta::{Error, ObjectId};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::{Duration, Instant};

/// Default of `ActorBuilder::restart_timeout`: how long an actor whose
/// host died waits for a node with its resources.
pub const DEFAULT_RESTART_TIMEOUT: Duration = Duration::from_secs(180);

/// Whether an actor can be called now.
#[derive(Debug, Clone)]
enum HostState {
    /// Its host runs it.
    Live,
    /// Waiting for a node to restart on: calls are held.
    Waiting,
    /// It can no longer run: every call fails with this.
    Failed(Error),
}

/// Where an actor is: its host and the host's owner hint.
#[derive(Debug)]
struct Host {
    peer: PeerId,
    hint: Vec<u8>,
    state: HostState,
}

/// The host of one actor, shared by its handles.
#[derive(Debug)]
pub(super) struct ActorHost(RwLock<Host>);

impl ActorHost {
    /// An actor hosted by `peer`, whose owner hint is `hint`.
    pub(super) fn new(peer: PeerId, hint: Vec<u8>) -> ActorHost {
        ActorHost(RwLock::new(Host { peer, hint, state: HostState::Live }))
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
        let mut h = write_unpoisoned(&self.0);
        h.peer = peer;
        h.hint = hint;
    }

    /// True while the actor waits for a node to restart on.
    pub(super) fn waiting(&self) -> bool {
        matches!(read_unpoisoned(&self.0).state, HostState::Waiting)
    }

    /// Why the actor can no longer run, if it cannot.
    pub(super) fn failed(&self) -> Option<Error> {
        match &read_unpoisoned(&self.0).state {
            HostState::Failed(e) => Some(e.clone()),
            _ => None,
        }
    }

    fn set(&self, state: HostState) {
        write_unpoisoned(&self.0).state = state;
    }
}

/// A call made through the creator's handles while its actor waits.
pub(super) struct HeldCall {
    /// Its result's id (a promise recorded in `results`).
    pub(super) id: ObjectId,
    pub(super) method: String,
    pub(super) args: Vec<u8>,
}

/// An actor waiting for a node with its resources.
pub(super) struct Waiting {
    pub(super) restart: Restart,
    /// The host it was lost with (never chosen again).
    pub(super) dead: PeerId,
    /// When it gives up.
    until: Instant,
    /// The calls held meanwhile, in the order made.
    pub(super) calls: Vec<HeldCall>,
}

/// What the creator keeps to restart an actor whose host dies.
pub(super) struct Owned {
    pub(super) class: String,
    pub(super) args: Vec<u8>,
    pub(super) opts: Opts,
    /// Restarts left (each host death uses one).
    pub(super) restarts: u32,
    pub(super) host: Weak<ActorHost>,
    /// How long it waits for a node with its resources after its host died.
    pub(super) restart_timeout: Duration,
}

/// An actor to start again after its host died.
pub(super) struct Restart {
    pub(super) id: ObjectId,
    pub(super) class: String,
    pub(super) args: Vec<u8>,
    /// Its options, `retries` being the restarts left.
    pub(super) opts: Opts,
    host: Arc<ActorHost>,
    restart_timeout: Duration,
}

impl Restart {
    /// Points every handle of the actor at its new host (calls are still
    /// held while it waits: see [`Restart::live`]).
    pub(super) fn moved_to(&self, peer: PeerId, hint: Vec<u8>) {
        self.host.moved(peer, hint);
    }

    /// Calls go straight to its host from now on.
    pub(super) fn live(&self) {
        self.host.set(HostState::Live);
    }

    /// How long it waits for a node with its resources.
    pub(super) fn restart_timeout(&self) -> Duration {
        self.restart_timeout
    }

    /// What the actor needs of a node.
    pub(super) fn need(&self) -> Need {
        Need { cpus: self.opts.cpus, resources: self.opts.resources.clone() }
    }
}

/// The restartable actors this node created elsewhere.
#[derive(Default)]
pub(super) struct OwnedActors {
    map: Mutex<HashMap<ObjectId, Owned>>,
    /// Those waiting for a node to restart on.
    waiting: Mutex<HashMap<ObjectId, Waiting>>,
}

impl OwnedActors {
    /// Records actor `id` as restartable.
    pub(super) fn insert(&self, id: ObjectId, owned: Owned) {
        lock_unpoisoned(&self.map).insert(id, owned);
    }

    /// Forgets actor `id` (its creator's handles are gone); the calls it
    /// held, if it was waiting, to fail.
    pub(super) fn remove(&self, id: ObjectId) -> Vec<HeldCall> {
        let gone = lock_unpoisoned(&self.map).remove(&id);
        drop(gone);
        let waiting = lock_unpoisoned(&self.waiting).remove(&id);
        waiting.map(|w| w.calls).unwrap_or_default()
    }

    /// Actor `r.id`, lost with `dead`, waits for a node with its resources
    /// (at most its restart timeout); its handles hold calls from now on.
    pub(super) fn wait(&self, r: Restart, dead: PeerId) {
        let until = Instant::now() + r.restart_timeout;
        let mut waiting = lock_unpoisoned(&self.waiting);
        r.host.set(HostState::Waiting);
        waiting.insert(r.id, Waiting { restart: r, dead, until, calls: Vec::new() });
    }

    /// Holds a call to actor `id` if it is waiting (`make` builds it, under
    /// the lock, so the call keeps its place before any later one); false
    /// if it is not waiting (any more).
    pub(super) fn hold(&self, id: ObjectId, make: impl FnOnce() -> HeldCall) -> bool {
        let mut waiting = lock_unpoisoned(&self.waiting);
        let Some(w) = waiting.get_mut(&id) else { return false };
        w.calls.push(make());
        true
    }

    /// The waiting actors: what each needs, and the host it was lost with.
    pub(super) fn waiting(&self) -> Vec<(ObjectId, Need, PeerId)> {
        lock_unpoisoned(&self.waiting).values().map(|w| (w.restart.id, w.restart.need(), w.dead)).collect()
    }

    /// Ends actor `id`'s wait: `restart` runs under the lock (so no call
    /// can be held meanwhile, nor go out before the held ones) with the
    /// entry, which it sends on its way; false if it no longer waits.
    pub(super) fn resume(&self, id: ObjectId, restart: impl FnOnce(Waiting)) -> bool {
        let mut waiting = lock_unpoisoned(&self.waiting);
        let Some(w) = waiting.remove(&id) else { return false };
        restart(w);
        true
    }

    /// The waiting actors whose time is up, each failed with `why(entry)`
    /// from now on: their held calls, with that error, to fail.
    pub(super) fn expire(&self, why: impl Fn(&Waiting) -> Error) -> Vec<(Error, Vec<HeldCall>)> {
        let now = Instant::now();
        let mut waiting = lock_unpoisoned(&self.waiting);
        let ids: Vec<ObjectId> = waiting.iter().filter(|(_, w)| w.until <= now).map(|(id, _)| *id).collect();
        ids.iter()
            .filter_map(|id| waiting.remove(id))
            .map(|w| {
                let e = why(&w);
                w.restart.host.set(HostState::Failed(e.clone()));
                (e, w.calls)
            })
            .collect()
    }

    /// The actors hosted on `dead` that have restarts left, each with one
    /// restart used.
    pub(super) fn lost_on(&self, dead: PeerId) -> Vec<Restart> {
        let mut out = Vec::new();
        for (id, o) in lock_unpoisoned(&self.map).iter_mut() {
            let Some(host) = o.host.upgrade() else { continue };
            if host.peer() == dead && o.restarts > 0 {
                o.restarts -= 1;
                let opts = Opts { retries: o.restarts, ..o.opts.clone() };
                let (class, args, restart_timeout) = (o.class.clone(), o.args.clone(), o.restart_timeout);
                out.push(Restart { id: *id, class, args, opts, host, restart_timeout });
            }
        }
        out
    }
}
