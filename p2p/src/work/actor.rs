//! Cluster actors: a registered actor type created on a node chosen by
//! resources (or named by the caller), called from any node, with the
//! same shape as local actors (`manta::ActorBuilder`, `manta::ActorHandle`).
//!
//! [`ActorHandle`] is the handle. Calls go straight to the hosting node on
//! this node's one ordered stream to it, so calls from one node run in the
//! order made; each returns an `ObjectRef` like a local call. The handle
//! is serde ([`Data`]): pass it in task arguments or results, or encode it
//! with `Node::encode`. An actor lives until its creator's handle (and
//! every clone of it) is dropped, or its creator's node dies. If its host
//! dies, the creator restarts it on another node from its constructor
//! when it has restarts left (`max_restarts`). A named actor
//! (`.name("x")`) is also published in the DHT by its host, so any node
//! finds it with `Node::get_actor`.
//!
//! An actor that no live node can host (or pinned with `.on(peer)` to a
//! node without its resources) is `Infeasible`, naming the resource, like
//! a task. One with restarts whose host died while no live node has its
//! resources waits for such a node to join (Ray's pending actor), holding
//! the calls made through its creator's handles, at most its
//! [`ActorBuilder::restart_timeout`]; then they fail with `ActorDead`
//! saying why.
//!
//! Invariants: [`ActorBuilder::spawn`] always returns a handle; an actor
//! that cannot be placed or created is recorded here as failed under its
//! id, so every call on the handle (from any node) fails with the typed
//! error (`Infeasible` naming the resource when that is the cause); calls
//! held while an actor waits go to it before any later call. A
//! handle always knows its node's runtime, so even after the node is gone
//! a call returns a ref (which fails when read).

use super::args::{Args, Data, IntoArgs};
use super::owned::{ActorHost, HeldCall, Owned, DEFAULT_RESTART_TIMEOUT};
use super::registry::{ActorClass, Method};
use super::Work;
use crate::cluster::placement::{Need, Place};
use crate::wire::hint;
use crate::wire::mail::{Mail, Opts};
use crate::wire::plain::{self, ActorRecord};
use libp2p::PeerId;
use manta::{Error, ObjectId, ObjectRef, Runtime};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::marker::PhantomData;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

// An actor as it travels, and as its DHT record holds it, is a
// `wire::plain::ActorRecord`: the cluster layer decodes DHT records to check
// their host before storing them.
fn record_key(name: &str) -> Vec<u8> {
    plain::actor_record_key(name)
}

/// Why an actor record (a handle as it travels, or a named actor's DHT
/// record) could not be turned into a handle.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ActorRecordError {
    /// The record's bytes do not decode (or exceed its size or depth caps).
    #[error("the actor record does not decode: {0}")]
    Decode(#[source] crate::wire::WireError),
    /// The actor is of another registered type than asked for.
    #[error("actor `{name}` is a `{found}`, not a `{expected}`")]
    WrongClass {
        /// The name it was looked up by.
        name: String,
        /// Its type.
        found: String,
        /// The type asked for.
        expected: &'static str,
    },
    /// The record's host hint does not decode.
    #[error("the actor's host hint does not decode")]
    BadHint,
}

/// Why a named actor was not found.
#[derive(Debug)]
pub(crate) enum LookupError {
    /// The node has shut down.
    Shutdown,
    /// Not found within the timeout.
    Timeout,
    /// Found, but unusable.
    Record(ActorRecordError),
}

impl Work {
    /// Holds a call of `method` on actor `actor` (of type `class`) while
    /// it waits for a node to restart on; its result's promise, or `None`
    /// if it no longer waits. `keep` (the argument refs) is kept until the
    /// call is done.
    fn hold_call<R: Data>(
        &self,
        actor: ObjectId,
        class: &str,
        method: &str,
        args: &[u8],
        keep: &[manta::AnyRef],
    ) -> Option<ObjectRef<R>> {
        let mut promise = None;
        let held = self.owned.hold(actor, || {
            let r = self.rt.backend().remote_promise::<R>(self.hint());
            self.results.insert_call(r.id(), self.me, class.to_string(), keep.to_vec());
            let call = HeldCall { id: r.id(), method: method.to_string(), args: args.to_vec() };
            promise = Some(r);
            call
        });
        if held {
            promise
        } else {
            None
        }
    }

    /// Publishes a named actor hosted here in the DHT.
    pub(super) fn publish_name(&self, name: &str, actor: ObjectId, class: &str) {
        let rec = ActorRecord { actor: actor.to_bytes(), class: class.to_string(), host: self.hint().to_vec() };
        self.cluster.put_record(record_key(name), plain::encode_actor_record(&rec));
    }
}

/// What every handle to one actor shares.
#[derive(Debug)]
struct HandleInner {
    id: ObjectId,
    class: String,
    /// Changes when the creator restarts the actor on another node.
    host: Arc<ActorHost>,
    work: Weak<Work>,
    /// The node's runtime (a call after the node is gone still needs one).
    rt: Runtime,
    /// The creator's handle: dropping its last clone ends the actor.
    creator: bool,
}

impl Drop for HandleInner {
    fn drop(&mut self) {
        if !self.creator {
            return;
        }
        let Some(w) = self.work.upgrade() else { return };
        w.disown(self.id);
        let host = self.host.peer();
        if host == w.me() {
            w.drop_hosted(w.me(), self.id);
        } else {
            w.send(host, Mail::DropActor(self.id.to_bytes()));
        }
    }
}

/// A handle to a cluster actor of state type `S` hosted on some node (the
/// cluster form of `manta::ActorHandle`). Cheap to clone; serde.
pub struct ActorHandle<S> {
    inner: Arc<HandleInner>,
    _s: PhantomData<fn() -> S>,
}

impl<S> Clone for ActorHandle<S> {
    fn clone(&self) -> Self {
        ActorHandle { inner: self.inner.clone(), _s: PhantomData }
    }
}

impl<S> std::fmt::Debug for ActorHandle<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ActorHandle")
            .field("id", &self.inner.id)
            .field("class", &self.inner.class)
            .field("host", &self.inner.host.peer())
            .finish()
    }
}

impl<S: 'static> ActorHandle<S> {
    /// The actor's id.
    pub fn id(&self) -> ObjectId {
        self.inner.id
    }

    /// The node that hosts it (for the creator's handles, the node it was
    /// restarted on if its first host died; this node for an actor that
    /// could not be created).
    pub fn host(&self) -> PeerId {
        self.inner.host.peer()
    }

    /// Calls a registered method; returns its result's ref at once. Calls
    /// made from one node run in the order made.
    pub fn call<A: Args, R: Data>(&self, m: &Method<S, A, R>, args: impl IntoArgs<A>) -> ObjectRef<R> {
        let Some(work) = self.inner.work.upgrade() else {
            // The node is gone: a promise nobody will fill, whose first
            // read fails with `PeerUnreachable` (no node attached).
            return self.inner.rt.backend().remote_promise::<R>(Arc::from(&[][..]));
        };
        let wire = args.into_args();
        let mut bytes = Vec::new();
        // Every ref in the arguments (nested ones too) is kept alive until
        // the call is done.
        let (encoded, keep) = manta::backend::collect_serialized(|| {
            let _entered = work.runtime().enter();
            ciborium::into_writer(&wire, &mut bytes)
        });
        if let Err(e) = encoded {
            return work.failed_promise(Error::InvalidArgument(format!("cannot encode arguments: {e}").into()));
        }
        if self.inner.host.waiting() {
            // Its host died and no live node can host it yet: the call is
            // held, in order, until it restarts (or gives up).
            if let Some(r) = work.hold_call(self.inner.id, &self.inner.class, m.name(), &bytes, &keep) {
                return r;
            }
        }
        if let Some(e) = self.inner.host.failed() {
            return work.failed_promise(e);
        }
        let host = self.inner.host.peer();
        if host == work.me() {
            return match work.try_call(self.inner.id, m.name(), &bytes, ObjectId::fresh(), None) {
                Ok(out) => out.typed(),
                Err(e) => work.failed_promise(e),
            };
        }
        if work.is_dead_peer(host) {
            let reason = format!("its node {host} died");
            let e = Error::ActorDead { actor: self.inner.class.as_str().into(), reason: reason.into() };
            return work.failed_promise(e);
        }
        work.call_remote(host, self.inner.id, &self.inner.class, m.name(), bytes, keep)
    }
}

impl<S> Serialize for ActorHandle<S> {
    fn serialize<Z: Serializer>(&self, s: Z) -> Result<Z::Ok, Z::Error> {
        let rec = ActorRecord {
            actor: self.inner.id.to_bytes(),
            class: self.inner.class.clone(),
            host: self.inner.host.hint(),
        };
        rec.serialize(s)
    }
}

impl<'de, S> Deserialize<'de> for ActorHandle<S> {
    /// Binds the handle to the node of the context runtime (as refs do).
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error as _;
        let rec = ActorRecord::deserialize(d)?;
        let work = Work::context()
            .ok_or_else(|| D::Error::custom("an ActorHandle can only be deserialized on a node's runtime"))?;
        from_record(&work, rec).map_err(D::Error::custom)
    }
}

fn from_record<S>(work: &Arc<Work>, rec: ActorRecord) -> Result<ActorHandle<S>, ActorRecordError> {
    let (host, addrs) = hint::decode(&rec.host).ok_or(ActorRecordError::BadHint)?;
    if host != work.me() {
        work.learn(host, addrs);
    }
    let inner = HandleInner {
        id: ObjectId::from_bytes(rec.actor),
        class: rec.class,
        host: Arc::new(ActorHost::new(host, rec.host)),
        work: Arc::downgrade(work),
        rt: work.runtime().clone(),
        creator: false,
    };
    Ok(ActorHandle { inner: Arc::new(inner), _s: PhantomData })
}

/// A cluster actor being configured: `node.actor_builder(&C).name("x").spawn(args)`
/// (the cluster form of `manta::ActorBuilder`).
#[must_use = "an ActorBuilder does nothing until spawned"]
pub struct ActorBuilder<'n, A, S> {
    work: &'n Arc<Work>,
    class: &'n ActorClass<A, S>,
    opts: Opts,
    on: Option<PeerId>,
    restart_timeout: Duration,
}

impl<A, S> std::fmt::Debug for ActorBuilder<'_, A, S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ActorBuilder").field("class", &self.class.name()).field("on", &self.on).finish()
    }
}

impl<'n, A: Data, S: Send + 'static> ActorBuilder<'n, A, S> {
    pub(crate) fn new(work: &'n Arc<Work>, class: &'n ActorClass<A, S>) -> Self {
        let opts = Opts { cpus: 1.0, ..Opts::default() };
        ActorBuilder { work, class, opts, on: None, restart_timeout: DEFAULT_RESTART_TIMEOUT }
    }

    /// Names the actor and publishes it in the DHT (`Node::get_actor`).
    /// Default: unnamed (errors name it by its type and id).
    pub fn name(mut self, name: &str) -> Self {
        self.opts.name = Some(name.to_string());
        self
    }

    /// Restarts (from the constructor, with the same arguments, so with
    /// fresh state) after a panicking call, or on another node after its
    /// host dies (default 0). Calls in flight when it died fail with
    /// `ActorDead`; later calls through the creator's handles go to the
    /// new host. Each restart uses one. If no live node has the resources
    /// it needs when its host dies, it waits for one to join (Ray's
    /// pending actor), at most [`ActorBuilder::restart_timeout`].
    pub fn max_restarts(mut self, n: u32) -> Self {
        self.opts.retries = n;
        self
    }

    /// How long an actor with restarts left whose host died waits for a
    /// live node that has the resources it needs (default
    /// [`DEFAULT_RESTART_TIMEOUT`], 3 minutes). Meanwhile calls through
    /// the creator's handles are held, in order, and go to the actor once
    /// it restarts; when the time is up they, and every later call, fail
    /// with `ActorDead` saying which resource no node had. (Handles on
    /// other nodes keep calling the dead host, and fail with `ActorDead`.)
    pub fn restart_timeout(mut self, timeout: Duration) -> Self {
        self.restart_timeout = timeout;
        self
    }

    /// CPUs the actor holds while it runs a call (default 1).
    pub fn cpus(mut self, cpus: f64) -> Self {
        self.opts.cpus = cpus;
        self
    }

    /// A custom resource the actor needs; only nodes that have it host it.
    pub fn resource(mut self, name: &str, amount: f64) -> Self {
        self.opts.resources.push((name.to_string(), amount));
        self
    }

    /// Hosts the actor on this node (default: placement decides).
    pub fn on(mut self, peer: PeerId) -> Self {
        self.on = Some(peer);
        self
    }

    /// Creates the actor; returns its handle at once (calls queue behind
    /// the creation), like `manta::ActorBuilder::spawn`. If no live node
    /// has the resources it needs, or the node it is pinned to lacks them
    /// (or its arguments cannot be encoded), every call on the handle
    /// fails with that error (`Infeasible` naming the resource).
    pub fn spawn(self, args: A) -> ActorHandle<S> {
        let work = self.work;
        let id = ObjectId::fresh();
        let class = self.class.name();
        let label = self.opts.name.clone().unwrap_or_else(|| class.to_string());
        let placed = self.host().map_err(|(resource, requested, most)| Error::Infeasible {
            task: label.into(),
            resource: resource.into(),
            requested,
            total: most,
        });
        let mut args_bytes = Vec::new();
        let created = placed.and_then(|host| match ciborium::into_writer(&args, &mut args_bytes) {
            Ok(()) => Ok(host),
            Err(e) => Err(Error::InvalidArgument(format!("cannot encode constructor arguments: {e}").into())),
        });
        let host = match created {
            Ok(host) => host,
            Err(e) => {
                work.host_failed(id, e);
                return handle(work, id, class, work.me(), true);
            }
        };
        let h = handle(work, id, class, host, true);
        if self.opts.retries > 0 && host != work.me() {
            let owned = Owned {
                class: class.to_string(),
                args: args_bytes.clone(),
                opts: self.opts.clone(),
                restarts: self.opts.retries,
                host: Arc::downgrade(&h.inner.host),
                restart_timeout: self.restart_timeout,
            };
            work.own(id, owned);
        }
        if host == work.me() {
            if let Err(r) = work.host_actor(work.me(), id, class, &args_bytes, &self.opts) {
                tracing::debug!(%id, refusal = ?r, "actor not created here");
            }
        } else {
            let m =
                Mail::NewActor { actor: id.to_bytes(), class: class.to_string(), args: args_bytes, opts: self.opts };
            work.send(host, m);
        }
        h
    }

    /// Where the actor goes: its host, or the resource no live node has
    /// enough of (with the amount asked and the most any node has).
    fn host(&self) -> Result<PeerId, (String, f64, f64)> {
        let work = self.work;
        let need = Need { cpus: self.opts.cpus, resources: self.opts.resources.clone() };
        let class = self.class.name();
        let _span = tracing::trace_span!("manta_p2p.actor_place", actor = class).entered();
        let place = match self.on {
            Some(p) if p == work.me() => Place::Local,
            Some(p) => {
                tracing::debug!(actor = class, to = %p, why = "pinned (.on)", "placed on a peer");
                Place::Peer(p)
            }
            None => work.place(&need, &[], &[]),
        };
        match place {
            Place::Local => Ok(work.me()),
            Place::Peer(p) => Ok(p),
            Place::Infeasible { resource, requested, most } => Err((resource, requested, most)),
        }
    }
}

/// A handle to actor `id` of type `class` hosted on `host`.
fn handle<S>(work: &Arc<Work>, id: ObjectId, class: &str, host: PeerId, creator: bool) -> ActorHandle<S> {
    let hint = if host == work.me() { work.hint().to_vec() } else { work.hint_of(host) };
    let inner = HandleInner {
        id,
        class: class.to_string(),
        host: Arc::new(ActorHost::new(host, hint)),
        work: Arc::downgrade(work),
        rt: work.runtime().clone(),
        creator,
    };
    ActorHandle { inner: Arc::new(inner), _s: PhantomData }
}

/// Looks a named actor up in the DHT, retrying until `timeout`.
pub(crate) fn lookup<A, S>(
    work: &Arc<Work>,
    class: &ActorClass<A, S>,
    name: &str,
    timeout: Duration,
) -> Result<ActorHandle<S>, LookupError> {
    let deadline = Instant::now() + timeout;
    let mut pause = Duration::from_millis(5);
    loop {
        let found = futures::executor::block_on(work.dht_record(record_key(name)));
        if let Some(bytes) = found.map_err(|_| LookupError::Shutdown)? {
            let rec =
                plain::decode_actor_record(&bytes).map_err(|e| LookupError::Record(ActorRecordError::Decode(e)))?;
            if rec.class != class.name() {
                let e =
                    ActorRecordError::WrongClass { name: name.to_string(), found: rec.class, expected: class.name() };
                return Err(LookupError::Record(e));
            }
            return from_record(work, rec).map_err(LookupError::Record);
        }
        if Instant::now() + pause > deadline {
            return Err(LookupError::Timeout);
        }
        // The record may not have reached the DHT yet: poll it, backing off.
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(200));
    }
}
