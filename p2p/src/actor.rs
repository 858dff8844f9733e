//! Cluster actors: a registered actor type created on a node chosen by
//! resources (or named by the caller), called from any node.
//!
//! [`RemoteActor`] is the handle. Calls go straight to the hosting node on
//! this node's one ordered stream to it, so calls from one node run in the
//! order made; each returns an `ObjectRef` like a local call. The handle
//! is serde (`Data`): pass it in task arguments or results, or encode it
//! with [`Node::encode`]. An actor lives until its creator's handle (and
//! every clone of it) is dropped, or its creator's node dies. If its host
//! dies, the creator restarts it on another node from its constructor
//! when it has restarts left (`max_restarts`). A named
//! actor (`.name("x")`) is also published in the DHT by its host, so any
//! node finds it with [`Node::get_actor`].

use crate::args::{Args, Data, IntoArgs};
use crate::event_loop::Command;
use crate::mail::{Mail, Opts};
use crate::placement::{Need, Place};
use crate::registry::{ActorClass, Method};
use crate::work::{lock, Pending, St, Work};
use crate::{Node, NodeError};
use libp2p::PeerId;
use manta::{Error, ObjectId, ObjectRef};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::marker::PhantomData;
use std::sync::{Arc, RwLock, Weak};
use std::time::{Duration, Instant};

/// An actor as it travels (and as its DHT record holds it).
#[derive(Serialize, Deserialize)]
struct ActorRecord {
    #[serde(with = "serde_bytes")]
    actor: [u8; 16],
    class: String,
    /// The host's owner hint (peer id and addresses).
    #[serde(with = "serde_bytes")]
    host: Vec<u8>,
}

fn record_key(name: &str) -> Vec<u8> {
    format!("/manta/actor/{name}").into_bytes()
}

/// Publishes a named actor hosted here in the DHT.
pub(crate) fn publish_name(work: &Work, name: &str, actor: ObjectId, class: &str) {
    let rec = ActorRecord { actor: actor.to_bytes(), class: class.to_string(), host: work.hint().to_vec() };
    let mut value = Vec::new();
    if ciborium::into_writer(&rec, &mut value).is_ok() {
        let _ = work.loop_tx.send(Command::PutRecord(record_key(name), value));
    }
}

/// Where an actor is: its host and the host's owner hint.
struct Host {
    peer: PeerId,
    hint: Vec<u8>,
}

pub(crate) struct Inner {
    id: ObjectId,
    class: String,
    /// Changes when the creator restarts the actor on another node.
    host: RwLock<Host>,
    work: Weak<Work>,
    /// The creator's handle: dropping its last clone ends the actor.
    creator: bool,
}

impl Inner {
    fn host(&self) -> PeerId {
        self.host.read().unwrap_or_else(|p| p.into_inner()).peer
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        if !self.creator {
            return;
        }
        let Some(w) = self.work.upgrade() else { return };
        lock(&w.owned).remove(&self.id);
        let host = self.host();
        if host == w.me {
            w.drop_actor(self.id);
        } else {
            w.send(host, Mail::DropActor(self.id.to_bytes()));
        }
    }
}

/// What the creator keeps to restart an actor whose host dies.
pub(crate) struct Owned {
    class: String,
    args: Vec<u8>,
    opts: Opts,
    /// Restarts left (each host death uses one).
    restarts: u32,
    handle: Weak<Inner>,
}

/// Restarts, from their constructors, the actors this node created that
/// were hosted on `dead` and have restarts left: each is placed again (not
/// on `dead`) under the same id, and the creator's handles call the new
/// host from now on. Calls in flight to `dead` have failed already. Other
/// nodes' handles still name the old host (a named actor is published
/// again by its new host, so `get_actor` finds it).
pub(crate) fn restart_lost(work: &Arc<Work>, dead: PeerId) {
    // Handles are dropped after the lock: dropping the last one locks it.
    let mut held: Vec<Arc<Inner>> = Vec::new();
    let mut restart = Vec::new();
    {
        let mut owned = lock(&work.owned);
        for (id, o) in owned.iter_mut() {
            let Some(inner) = o.handle.upgrade() else { continue };
            if inner.host() == dead && o.restarts > 0 {
                o.restarts -= 1;
                let opts = Opts { retries: o.restarts, ..o.opts.clone() };
                restart.push((*id, inner.clone(), o.class.clone(), o.args.clone(), opts));
            }
            held.push(inner);
        }
    }
    drop(held);
    for (id, inner, class, args, opts) in restart {
        let need = Need { cpus: opts.cpus, resources: opts.resources.clone() };
        let host = match work.place(&need, &[], &[dead]) {
            Place::Local => work.me,
            Place::Peer(p) => p,
            Place::Infeasible { resource, .. } => {
                tracing::warn!(actor = %id, %class, %resource, "actor lost with its node and cannot be placed again");
                continue;
            }
        };
        tracing::info!(actor = %id, %class, from = %dead, to = %host, "restarting an actor lost with its node");
        let hint = if host == work.me { work.hint().to_vec() } else { host_hint(work, host) };
        *inner.host.write().unwrap_or_else(|p| p.into_inner()) = Host { peer: host, hint };
        if host == work.me {
            work.host_actor(work.me, id, &class, &args, &opts);
        } else {
            work.send(host, Mail::NewActor { actor: id.to_bytes(), class, args, opts });
        }
    }
}

/// A handle to an actor of state type `S` hosted on some node.
pub struct RemoteActor<S> {
    inner: Arc<Inner>,
    _s: PhantomData<fn() -> S>,
}

impl<S> Clone for RemoteActor<S> {
    fn clone(&self) -> Self {
        RemoteActor { inner: self.inner.clone(), _s: PhantomData }
    }
}

impl<S> std::fmt::Debug for RemoteActor<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteActor")
            .field("id", &self.inner.id)
            .field("class", &self.inner.class)
            .field("host", &self.inner.host())
            .finish()
    }
}

impl<S: 'static> RemoteActor<S> {
    /// The actor's id.
    pub fn id(&self) -> ObjectId {
        self.inner.id
    }

    /// The node that hosts it (for the creator's handles, the node it was
    /// restarted on if its first host died).
    pub fn host(&self) -> PeerId {
        self.inner.host()
    }

    /// Calls a registered method; returns its result's ref at once. Calls
    /// made from one node run in the order made.
    pub fn call<A: Args, R: Data>(&self, m: &Method<S, A, R>, args: impl IntoArgs<A>) -> ObjectRef<R> {
        let Some(work) = self.inner.work.upgrade() else { return failed_local() };
        let wire = args.into_args();
        let keep = A::refs(&wire);
        let mut bytes = Vec::new();
        let encoded = {
            let _entered = work.rt.enter();
            ciborium::into_writer(&wire, &mut bytes)
        };
        if let Err(e) = encoded {
            return crate::task::failed(&work, Error::InvalidArgument(format!("cannot encode arguments: {e}").into()));
        }
        let host = self.inner.host();
        if host == work.me {
            return match work.try_call(self.inner.id, m.name(), &bytes, ObjectId::fresh(), None) {
                Ok(out) => out.typed(),
                Err(e) => crate::task::failed(&work, e),
            };
        }
        if work.is_dead_peer(host) {
            let reason = format!("its node {host} died");
            return crate::task::failed(
                &work,
                Error::ActorDead { actor: self.inner.class.as_str().into(), reason: reason.into() },
            );
        }
        let r = work.rt.backend().remote_promise::<R>(work.hint());
        let p = Pending {
            peer: host,
            st: St::Waiting(None),
            retry: None,
            actor: Some(self.inner.class.clone()),
            keep,
            local: None,
        };
        lock(&work.results).insert(r.id(), p);
        let call = Mail::Call {
            actor: self.inner.id.to_bytes(),
            method: m.name().to_string(),
            args: bytes,
            id: r.id().to_bytes(),
        };
        work.send(host, call);
        r
    }
}

/// A ref for a call made after the node shut down: a promise nobody will
/// fill, whose first read fails with `PeerUnreachable` (no node attached).
fn failed_local<R: Data>() -> ObjectRef<R> {
    let rt = manta::backend::context().unwrap_or_else(|| manta::init().clone());
    rt.backend().remote_promise::<R>(Arc::from(&[][..]))
}

impl<S> Serialize for RemoteActor<S> {
    fn serialize<Z: Serializer>(&self, s: Z) -> Result<Z::Ok, Z::Error> {
        let host = self.inner.host.read().unwrap_or_else(|p| p.into_inner()).hint.clone();
        ActorRecord { actor: self.inner.id.to_bytes(), class: self.inner.class.clone(), host }.serialize(s)
    }
}

impl<'de, S> Deserialize<'de> for RemoteActor<S> {
    /// Binds the handle to the node of the context runtime (as refs do).
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error as _;
        let rec = ActorRecord::deserialize(d)?;
        let work = Node::context_work()
            .ok_or_else(|| D::Error::custom("a RemoteActor can only be deserialized on a node's runtime"))?;
        from_record(&work, rec).map_err(D::Error::custom)
    }
}

fn from_record<S>(work: &Arc<Work>, rec: ActorRecord) -> Result<RemoteActor<S>, String> {
    let (host, addrs) = crate::hint::decode(&rec.host).ok_or("the actor's host hint does not decode")?;
    if host != work.me {
        let (tx, _rx) = tokio::sync::oneshot::channel();
        let _ = work.loop_tx.send(Command::Learn(host, addrs, tx));
    }
    let inner = Inner {
        id: ObjectId::from_bytes(rec.actor),
        class: rec.class,
        host: RwLock::new(Host { peer: host, hint: rec.host }),
        work: Arc::downgrade(work),
        creator: false,
    };
    Ok(RemoteActor { inner: Arc::new(inner), _s: PhantomData })
}

/// A cluster actor being configured: `node.actor(&C).name("x").spawn(args)`.
#[must_use = "a RemoteActorBuilder does nothing until spawned"]
pub struct RemoteActorBuilder<'n, A, S> {
    node: &'n Node,
    class: &'n ActorClass<A, S>,
    opts: Opts,
    on: Option<PeerId>,
}

impl<'n, A: Data, S: Send + 'static> RemoteActorBuilder<'n, A, S> {
    pub(crate) fn new(node: &'n Node, class: &'n ActorClass<A, S>) -> Self {
        RemoteActorBuilder { node, class, opts: Opts { cpus: 1.0, ..Opts::default() }, on: None }
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

    /// Restarts (from the constructor, with the same arguments, so with
    /// fresh state) after a panicking call, or on another node after its
    /// host dies (default 0). Calls in flight when it died fail with
    /// `ActorDead`; later calls through the creator's handles go to the
    /// new host. Each restart uses one.
    pub fn max_restarts(mut self, n: u32) -> Self {
        self.opts.retries = n;
        self
    }

    /// Names the actor and publishes it in the DHT ([`Node::get_actor`]).
    pub fn name(mut self, name: &str) -> Self {
        self.opts.name = Some(name.to_string());
        self
    }

    /// Hosts the actor on this node.
    pub fn on(mut self, peer: PeerId) -> Self {
        self.on = Some(peer);
        self
    }

    /// Creates the actor; returns its handle at once (calls queue behind
    /// the creation). Fails if no live node has the resources it needs.
    pub fn spawn(self, args: A) -> Result<RemoteActor<S>, Error> {
        let work = self.node.work();
        let need = Need { cpus: self.opts.cpus, resources: self.opts.resources.clone() };
        let place = match self.on {
            Some(p) if p == work.me => Place::Local,
            Some(p) => Place::Peer(p),
            None => work.place(&need, &[], &[]),
        };
        let label = self.opts.name.clone().unwrap_or_else(|| self.class.name().to_string());
        let host = match place {
            Place::Local => work.me,
            Place::Peer(p) => p,
            Place::Infeasible { resource, requested, most } => {
                return Err(Error::Infeasible {
                    task: label.into(),
                    resource: resource.into(),
                    requested,
                    total: most,
                });
            }
        };
        let mut args_bytes = Vec::new();
        ciborium::into_writer(&args, &mut args_bytes)
            .map_err(|e| Error::InvalidArgument(format!("cannot encode constructor arguments: {e}").into()))?;
        let id = ObjectId::fresh();
        let class = self.class.name();
        let hint = if host == work.me { work.hint().to_vec() } else { host_hint(work, host) };
        let inner = Arc::new(Inner {
            id,
            class: class.to_string(),
            host: RwLock::new(Host { peer: host, hint }),
            work: Arc::downgrade(work),
            creator: true,
        });
        if self.opts.retries > 0 && host != work.me {
            let owned = Owned {
                class: class.to_string(),
                args: args_bytes.clone(),
                opts: self.opts.clone(),
                restarts: self.opts.retries,
                handle: Arc::downgrade(&inner),
            };
            lock(&work.owned).insert(id, owned);
        }
        if host == work.me {
            work.host_actor(work.me, id, class, &args_bytes, &self.opts);
        } else {
            let m =
                Mail::NewActor { actor: id.to_bytes(), class: class.to_string(), args: args_bytes, opts: self.opts };
            work.send(host, m);
        }
        Ok(RemoteActor { inner, _s: PhantomData })
    }
}

/// A peer's owner hint built from the member table.
fn host_hint(work: &Work, peer: PeerId) -> Vec<u8> {
    let members = work.members.read().unwrap_or_else(|p| p.into_inner());
    let addrs = members.iter().find(|m| m.peer == peer).map(|m| m.addrs.clone()).unwrap_or_default();
    crate::hint::encode(&peer, &addrs)
}

/// Looks a named actor up in the DHT, retrying until `timeout`.
pub(crate) fn lookup<A, S>(
    node: &Node,
    class: &ActorClass<A, S>,
    name: &str,
    timeout: Duration,
) -> Result<RemoteActor<S>, NodeError> {
    let work = node.work();
    let deadline = Instant::now() + timeout;
    let mut pause = Duration::from_millis(5);
    loop {
        let (tx, rx) = tokio::sync::oneshot::channel();
        work.loop_tx.send(Command::GetRecord(record_key(name), tx)).map_err(|_| NodeError::Shutdown)?;
        if let Some(bytes) = futures::executor::block_on(rx).map_err(|_| NodeError::Shutdown)? {
            let rec: ActorRecord = ciborium::from_reader(&bytes[..]).map_err(|e| NodeError::Decode(e.to_string()))?;
            if rec.class != class.name() {
                return Err(NodeError::Decode(format!(
                    "actor `{name}` is a `{}`, not a `{}`",
                    rec.class,
                    class.name()
                )));
            }
            return from_record(work, rec).map_err(NodeError::Decode);
        }
        if Instant::now() + pause > deadline {
            return Err(NodeError::Timeout(format!("no actor named `{name}` found within {timeout:?}")));
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(200));
    }
}
