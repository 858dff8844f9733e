//! The `Node` handle and its builder.
//!
//! A node owns a tokio runtime on its own threads and one event-loop task
//! that owns the libp2p `Swarm` (see `event_loop`). The handle is cheap to
//! clone and talks to the loop by commands with one-shot replies, so a
//! synchronous program needs no async code; `*_async` methods exist for
//! async callers. When the last handle is dropped (or [`Node::shutdown`] is
//! called) the node detaches from the manta runtime, stops its loop and
//! joins its threads; fetches in flight then fail with `PeerUnreachable`.

use crate::args::{Args, Data, IntoArgs};
use crate::config::NodeConfig;
use crate::event_loop::{Command, EventLoop};
use crate::membership::{Member, MembershipEvent};
use crate::registry::{ActorClass, Registry, RemoteFn};
use crate::work::{Work, WorkConfig};
use libp2p::{identity, Multiaddr, PeerId};
use manta::backend::{Fetch, RemoteBackend};
use manta::{ObjectId, ObjectRef, Runtime};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::any::Any;
use std::sync::{Arc, Mutex, OnceLock, RwLock, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};

/// What can go wrong starting or using a node.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum NodeError {
    /// The node could not be built (transport, behaviours, tokio).
    #[error("cannot start the node: {0}")]
    Start(String),
    /// A listen address could not be bound.
    #[error("cannot listen on {addr}: {reason}")]
    Listen {
        /// The address.
        addr: String,
        /// Why.
        reason: String,
    },
    /// A dial failed (unreachable, refused, or a handshake failed, e.g. a
    /// different cluster secret).
    #[error("dial failed: {0}")]
    Dial(String),
    /// The node has shut down.
    #[error("the node has shut down")]
    Shutdown,
    /// A wait gave up.
    #[error("timed out: {0}")]
    Timeout(String),
    /// Bytes that should hold a ref did not.
    #[error("cannot decode: {0}")]
    Decode(String),
}

/// Configures and starts a [`Node`].
#[must_use]
pub struct NodeBuilder {
    rt: Runtime,
    cfg: NodeConfig,
    key: Option<identity::Keypair>,
    registry: Registry,
    work: WorkConfig,
}

impl NodeBuilder {
    /// Adds a listen address (default, if none is added: every interface,
    /// one OS-chosen TCP port, `/ip4/0.0.0.0/tcp/0`).
    pub fn listen(mut self, addr: Multiaddr) -> Self {
        self.cfg.listen.push(addr);
        self
    }

    /// Adds a bootstrap address (`/ip4/.../tcp/PORT[/p2p/PEER]`) to join by.
    pub fn bootstrap(mut self, addr: Multiaddr) -> Self {
        self.cfg.bootstrap.push(addr);
        self
    }

    /// Turns LAN discovery by mDNS on or off (default off: a library
    /// announces itself on a network only when asked). mDNS skips loopback
    /// interfaces, so nodes listening only on 127.0.0.1 are not found by it.
    pub fn mdns(mut self, on: bool) -> Self {
        self.cfg.mdns = on;
        self
    }

    /// Heartbeat period (default 1 s).
    pub fn heartbeat(mut self, period: Duration) -> Self {
        self.cfg.heartbeat = period.max(Duration::from_millis(10));
        self
    }

    /// How long a peer may be silent before it is marked dead (default 5 s).
    pub fn failure_timeout(mut self, timeout: Duration) -> Self {
        self.cfg.failure_timeout = timeout;
        self
    }

    /// How long an unused connection stays open (default 60 s).
    pub fn idle_connection_timeout(mut self, timeout: Duration) -> Self {
        self.cfg.idle_timeout = timeout;
        self
    }

    /// Timeout of one request, e.g. one chunk of a transfer (default 10 s).
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.cfg.request_timeout = timeout;
        self
    }

    /// Chunk size of object transfers (default and maximum
    /// `wire::CHUNK_BYTES`, 4 MiB).
    pub fn chunk_bytes(mut self, bytes: usize) -> Self {
        self.cfg.chunk_bytes = bytes.clamp(1, crate::wire::CHUNK_BYTES);
        self
    }

    /// Turns the bulk lane on or off (default on). With it, objects bigger
    /// than one chunk are streamed from a holder over their own TCP
    /// connection, sealed with AES-256-GCM under a one-use key obtained
    /// over libp2p, on a port next to the first listen address's IP;
    /// without it (or with a peer that has none) they come in chunks over
    /// the libp2p connection.
    pub fn bulk_lane(mut self, on: bool) -> Self {
        self.cfg.bulk = on;
        self
    }

    /// Makes the cluster private: only nodes holding the same 32-byte key
    /// can connect (libp2p's pre-shared-key private network, under Noise).
    /// A node without it cannot connect, gossip, read objects or run code.
    pub fn secret(mut self, key: [u8; 32]) -> Self {
        self.cfg.secret = Some(key);
        self
    }

    /// Joins as an observer: hears the cluster's heartbeats (so
    /// `cluster_status` works) but publishes none, so it never appears in
    /// other nodes' member tables (the `manta status` command uses this).
    pub fn observer(mut self, on: bool) -> Self {
        self.cfg.observer = on;
        self
    }

    /// The functions and actor types this node can run for others (every
    /// node of a cluster should register the same table: tasks go only to
    /// nodes whose table hash matches).
    pub fn registry(mut self, registry: Registry) -> Self {
        self.registry = registry;
        self
    }

    /// Local queue length (tasks waiting for a CPU) from which new tasks
    /// spill to less loaded peers (default 4).
    pub fn queue_threshold(mut self, n: usize) -> Self {
        self.work.threshold = n;
        self
    }

    /// Most tasks and actor calls from peers this node holds at once
    /// (queued or running, default 16384); beyond it peers are told it is
    /// busy: they place their tasks elsewhere, or keep them, and send
    /// their actor calls again shortly, in order.
    pub fn max_accepted_tasks(mut self, n: usize) -> Self {
        self.work.max_accepted = n.max(1);
        self
    }

    /// Uses this identity instead of a fresh Ed25519 one.
    pub fn keypair(mut self, key: identity::Keypair) -> Self {
        self.key = Some(key);
        self
    }

    /// Starts the node: binds its listen addresses (returns once they are
    /// bound), dials the bootstrap addresses and attaches to the runtime.
    pub fn start(self) -> Result<Node, NodeError> {
        let key = self.key.unwrap_or_else(identity::Keypair::generate_ed25519);
        let peer_id = key.public().to_peer_id();
        let mut cfg = self.cfg;
        cfg.fn_hash = self.registry.hash();
        if cfg.listen.is_empty() {
            cfg.listen.push("/ip4/0.0.0.0/tcp/0".parse().map_err(|e| NodeError::Start(format!("{e}")))?);
        }
        let (tx, rx) = mpsc::unbounded_channel();
        let work = Arc::new(Work::new(peer_id, self.rt.clone(), self.registry, self.work, tx.clone()));
        let handler: Arc<dyn crate::outbox::Handler> = Arc::new(work.clone());
        let backend = Arc::new(Backend {
            tx: tx.clone(),
            addrs: RwLock::new(Vec::new()),
            announce: Mutex::new(Announce::default()),
            fetcher: OnceLock::new(),
            work,
            handler,
            node: OnceLock::new(),
            lane: OnceLock::new(),
        });
        // Everything tokio lives on the node's own thread, so `start` works
        // the same from synchronous code and from inside another runtime.
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (loop_backend, rt, serve_rt) = (backend.clone(), self.rt.clone(), self.rt.clone());
        let (request_timeout, chunk, window) = (cfg.request_timeout, cfg.chunk_bytes, cfg.window);
        let lane_ip = if cfg.bulk { cfg.listen.first().and_then(crate::bulk::ip_of) } else { None };
        let peer_ips = crate::bulk::PeerIps::default();
        let loop_ips = peer_ips.clone();
        let thread = std::thread::Builder::new()
            .name("manta-p2p-loop".into())
            .spawn(move || {
                let tokio_rt = match tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(1)
                    .thread_name("manta-p2p")
                    .enable_all()
                    .build()
                {
                    Ok(t) => t,
                    Err(e) => {
                        let _ = ready_tx.send(Err(NodeError::Start(format!("tokio: {e}"))));
                        return;
                    }
                };
                let bound = {
                    let _guard = tokio_rt.enter();
                    match EventLoop::new(key, cfg, rt, rx) {
                        Ok(mut el) => {
                            el.set_peer_ips(loop_ips);
                            tokio_rt.block_on(el.bind())
                        }
                        Err(e) => Err(e),
                    }
                };
                let mut event_loop = match bound {
                    Ok((el, addrs)) => {
                        loop_backend.set_addrs(&peer_id, &addrs);
                        let _ = ready_tx.send(Ok(addrs));
                        el
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                let control = event_loop.control();
                if let Some(ip) = lane_ip {
                    match tokio_rt.block_on(crate::bulk::Lane::bind(ip, request_timeout)) {
                        Ok((lane, listener)) => {
                            let _ = loop_backend.lane.set(lane.clone());
                            tokio_rt.spawn(crate::bulk::serve(lane, listener, serve_rt.clone()));
                        }
                        // Peers then fetch from this node in chunks.
                        Err(e) => tracing::warn!(%ip, error = %e, "bulk lane not started"),
                    }
                }
                let ctx = Arc::new(crate::fetch::Ctx {
                    pool: crate::rpc::Pool::new(control.clone(), request_timeout),
                    me: peer_id,
                    loop_tx: loop_backend.tx.clone(),
                    chunk,
                    window,
                    known: Mutex::new(std::collections::HashSet::new()),
                    bulk: lane_ip.is_some(),
                    peer_ips,
                    bulk_received: 0.into(),
                    work: Arc::downgrade(&loop_backend.work),
                });
                let _ = loop_backend.fetcher.set((tokio_rt.handle().clone(), ctx));
                let handler = Arc::downgrade(&loop_backend.handler);
                let boxes = crate::outbox::Outboxes::new(
                    control.clone(),
                    tokio_rt.handle().clone(),
                    request_timeout,
                    handler.clone(),
                );
                let shared = boxes.shared();
                let _ = loop_backend.work.boxes.set(boxes);
                let _ = loop_backend.work.handle.set(tokio_rt.handle().clone());
                tokio_rt.spawn(crate::outbox::serve(control.clone(), handler, shared));
                tokio_rt.spawn(crate::rpc::serve(control, serve_rt, loop_backend.clone()));
                event_loop.set_hint_sink(loop_backend);
                tokio_rt.block_on(event_loop.run());
                tokio_rt.shutdown_timeout(Duration::from_secs(1));
            })
            .map_err(|e| NodeError::Start(format!("thread: {e}")))?;
        match ready_rx.recv() {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                let _ = thread.join();
                return Err(e);
            }
            Err(_) => {
                let _ = thread.join();
                return Err(NodeError::Start("the node thread exited during start".into()));
            }
        }
        self.rt.backend().attach(backend.clone());
        let inner =
            Arc::new(Inner { tx, peer_id, rt: self.rt, backend: backend.clone(), thread: Mutex::new(Some(thread)) });
        let _ = backend.node.set(Arc::downgrade(&inner));
        Ok(Node { inner })
    }
}

/// What the manta runtime calls: forwards to the event loop.
pub(crate) struct Backend {
    tx: mpsc::UnboundedSender<Command>,
    addrs: RwLock<Vec<Multiaddr>>,
    /// Exported objects not announced in the DHT yet, and announced ones.
    announce: Mutex<Announce>,
    /// Where fetch tasks run (set once the node's tokio runtime is up).
    fetcher: OnceLock<(tokio::runtime::Handle, Arc<crate::fetch::Ctx>)>,
    /// Remote tasks and actors.
    pub(crate) work: Arc<Work>,
    /// `work` as the outboxes' mail handler (they hold it weakly).
    handler: Arc<dyn crate::outbox::Handler>,
    /// The node handle (weak: the runtime holds the backend).
    node: OnceLock<Weak<Inner>>,
    /// The bulk lane, if it is on and bound.
    pub(crate) lane: OnceLock<Arc<crate::bulk::Lane>>,
}

/// Which exported objects are announced as provided in the DHT.
#[derive(Default)]
struct Announce {
    /// Exported, not needed by anyone yet.
    waiting: std::collections::HashSet<ObjectId>,
    /// To announce at the loop's next announce tick.
    queued: Vec<ObjectId>,
    /// Announced (or queued): withdrawn when freed.
    done: std::collections::HashSet<ObjectId>,
}

impl Backend {
    /// Queues an exported object for a DHT announcement (once): when a peer
    /// first reads it from us, and for every replica we store. An
    /// owner's object that nobody fetched needs no record (refs carry the
    /// owner's address; the DHT matters once copies exist elsewhere).
    /// Announcements go out in batches every `ANNOUNCE_EVERY`, so objects
    /// freed before then (most replicas of small objects) cost no DHT
    /// traffic at all; [`Node::flush_announcements`] sends them at once.
    pub(crate) fn announce(&self, id: ObjectId) {
        let mut a = self.announce.lock().unwrap_or_else(|p| p.into_inner());
        a.waiting.remove(&id);
        if a.done.insert(id) {
            a.queued.push(id);
        }
    }

    /// The queued announcements of objects still held (for the loop).
    pub(crate) fn take_queued(&self) -> Vec<ObjectId> {
        let mut a = self.announce.lock().unwrap_or_else(|p| p.into_inner());
        let queued = std::mem::take(&mut a.queued);
        queued.into_iter().filter(|id| a.done.contains(id)).collect()
    }

    /// Records the listen addresses (non-loopback first, so other hosts
    /// try a reachable one first) and rebuilds the owner hint from them.
    pub(crate) fn set_addrs(&self, peer: &PeerId, addrs: &[Multiaddr]) {
        let mut sorted = addrs.to_vec();
        sorted.sort_by_key(is_loopback);
        *self.work.hint.write().unwrap_or_else(|p| p.into_inner()) = crate::hint::encode(peer, &sorted).into();
        *self.addrs.write().unwrap_or_else(|p| p.into_inner()) = sorted;
    }
}

fn is_loopback(a: &Multiaddr) -> bool {
    crate::bulk::ip_of(a).is_some_and(|ip| ip.is_loopback())
}

impl RemoteBackend for Backend {
    fn as_any(&self) -> &dyn Any {
        self
    }
    fn owner_hint(&self) -> Arc<[u8]> {
        self.work.hint()
    }
    fn exported(&self, id: ObjectId, replica: bool) {
        // The value of one of our task results arrived: we own it and refs
        // to it name us, so it is announced only once a peer reads it.
        if replica && !self.work.is_result(id) {
            self.announce(id);
        } else {
            self.announce.lock().unwrap_or_else(|p| p.into_inner()).waiting.insert(id);
        }
    }
    fn freed(&self, id: ObjectId) {
        let mut a = self.announce.lock().unwrap_or_else(|p| p.into_inner());
        a.waiting.remove(&id);
        if a.done.remove(&id) {
            // If it was still queued, `take_queued` skips it; withdrawing a
            // record never made is a no-op.
            let _ = self.tx.send(Command::Unprovide(id));
        }
    }
    fn fetch(&self, fetch: Fetch) {
        // A result of our remote work is filled from its completion.
        if let Some((fetch, first)) = self.work.intercept(fetch) {
            self.start_fetch(fetch, first);
        }
    }
    fn borrowed(&self, id: ObjectId, owner_hint: &[u8]) {
        if let Some((peer, _)) = crate::hint::decode(owner_hint) {
            if peer != self.work.me {
                self.work.send(peer, crate::mail::Mail::Borrow(vec![serde_bytes::ByteArray::new(id.to_bytes())]));
            }
        }
    }
    fn released(&self, id: ObjectId, owner_hint: &[u8]) {
        if self.work.promise_dropped(id) {
            return;
        }
        if let Some((peer, _)) = crate::hint::decode(owner_hint) {
            if peer != self.work.me {
                self.work.send(peer, crate::mail::Mail::Release(vec![serde_bytes::ByteArray::new(id.to_bytes())]));
            }
        }
    }
}

impl Backend {
    /// Runs a fetch, asking `first` before the owner hint and the DHT. If
    /// the node is not up, or its runtime has shut down, the fetch is
    /// dropped, which fails the object with `PeerUnreachable`.
    pub(crate) fn start_fetch(&self, fetch: Fetch, first: Option<PeerId>) {
        if let Some((handle, ctx)) = self.fetcher.get() {
            handle.spawn(crate::fetch::run(fetch, ctx.clone(), first));
        }
    }
}

struct Inner {
    tx: mpsc::UnboundedSender<Command>,
    peer_id: PeerId,
    rt: Runtime,
    backend: Arc<Backend>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl Inner {
    fn stop(&self) {
        let Some(thread) = self.thread.lock().unwrap_or_else(|p| p.into_inner()).take() else { return };
        self.rt.backend().detach();
        let _ = self.tx.send(Command::Shutdown);
        if thread.thread().id() != std::thread::current().id() {
            let _ = thread.join();
        }
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A manta runtime's membership in a cluster. Cheap to clone.
#[derive(Clone)]
pub struct Node {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node").field("peer_id", &self.inner.peer_id).field("addrs", &self.listen_addrs()).finish()
    }
}

impl Node {
    /// A builder for a node attached to `rt`.
    pub fn builder(rt: Runtime) -> NodeBuilder {
        NodeBuilder {
            rt,
            cfg: NodeConfig::default(),
            key: None,
            registry: Registry::new(),
            work: WorkConfig::default(),
        }
    }

    /// The node attached to the runtime running the calling code (inside
    /// a task or actor call on a node's runtime), or to the runtime entered
    /// with `Runtime::enter`. This is how a task submits more cluster tasks.
    pub fn current() -> Option<Node> {
        let rt = manta::backend::context()?;
        let b = rt.backend().attached()?;
        let inner = b.as_any().downcast_ref::<Backend>()?.node.get()?.upgrade()?;
        Some(Node { inner })
    }

    /// The remote-work state of the context runtime's node.
    pub(crate) fn context_work() -> Option<Arc<Work>> {
        let b = manta::backend::context()?.backend().attached()?;
        Some(b.as_any().downcast_ref::<Backend>()?.work.clone())
    }

    pub(crate) fn work(&self) -> &Arc<Work> {
        &self.inner.backend.work
    }

    /// Submits a registered function as a task with default options; see
    /// [`Node::task`].
    pub fn spawn<A: Args, R: Data>(&self, f: &RemoteFn<A, R>, args: impl IntoArgs<A>) -> ObjectRef<R> {
        self.task(f).spawn(args)
    }

    /// A cluster task of a registered function, to configure and spawn:
    /// it runs here unless its resources exist only elsewhere, this node's
    /// queue is saturated, or a peer holds much more of its argument bytes
    /// (see the `placement` rules in the crate docs).
    pub fn task<'n, A: Args, R: Data>(&'n self, f: &'n RemoteFn<A, R>) -> crate::task::RemoteTask<'n, A, R> {
        crate::task::RemoteTask::new(self, f)
    }

    /// A cluster actor of a registered type, to configure and spawn.
    pub fn actor<'n, A: Data, S: Send + 'static>(
        &'n self,
        class: &'n ActorClass<A, S>,
    ) -> crate::actor::RemoteActorBuilder<'n, A, S> {
        crate::actor::RemoteActorBuilder::new(self, class)
    }

    /// Finds the actor named `name` (created with `.name(name)` on any
    /// node) in the DHT, retrying until `timeout`.
    pub fn get_actor<A, S: 'static>(
        &self,
        class: &ActorClass<A, S>,
        name: &str,
        timeout: Duration,
    ) -> Result<crate::actor::RemoteActor<S>, NodeError> {
        crate::actor::lookup(self, class, name, timeout)
    }

    /// Serializes any serde value (refs, actor handles, or data holding
    /// them) as CBOR for another node of the cluster. The bytes may travel
    /// by any channel: every ref in them is kept alive here until a node
    /// that decodes it registers its borrow with the object's owner (this
    /// node), or for at most 5 minutes (a ref owned elsewhere: 5 minutes).
    pub fn encode<T: Serialize>(&self, value: &T) -> Result<Vec<u8>, NodeError> {
        let mut out = Vec::new();
        let (written, refs) = manta::backend::collect_serialized(|| {
            let _entered = self.inner.rt.enter();
            ciborium::into_writer(value, &mut out)
        });
        written.map_err(|e| NodeError::Decode(e.to_string()))?;
        // The bytes may travel by any channel: keep what they refer to
        // alive until the receiver's borrow reaches the owner.
        self.work().pin_sent(refs);
        Ok(out)
    }

    /// Deserializes what [`Node::encode`] made on any node, binding refs
    /// and actor handles to this node.
    pub fn decode<T: DeserializeOwned>(&self, bytes: &[u8]) -> Result<T, NodeError> {
        let _entered = self.inner.rt.enter();
        ciborium::from_reader(bytes).map_err(|e| NodeError::Decode(e.to_string()))
    }

    /// Waits until `r` is done wherever it is made, without fetching its
    /// value here (Ray's `wait(fetch_local=False)`), if it is the result of
    /// a task or call this node sent elsewhere; any other ref is waited for
    /// as `get` would. True if it is done (or failed) within `timeout`.
    pub fn wait_done_remotely<T: std::any::Any + Send + Sync>(&self, r: &ObjectRef<T>, timeout: Duration) -> bool {
        if self.work().is_result(r.id()) {
            return self.work().wait_settled(r.id(), timeout);
        }
        let _ = r.get_timeout(timeout);
        r.is_ready()
    }

    /// Blocks until every message this node has queued for peers (task
    /// submissions, completions, borrow and release counts) has been
    /// applied by its receiver, or `timeout` passes. True if all were.
    pub fn flush_mail(&self, timeout: Duration) -> bool {
        self.work().boxes.get().is_none_or(|b| b.flush(timeout))
    }

    /// Tasks and actor calls from peers this node holds now (queued or
    /// running; bounded by [`NodeBuilder::max_accepted_tasks`]).
    pub fn accepted_work(&self) -> usize {
        self.work().accepted.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Objects this node keeps alive for other nodes (borrowed refs and
    /// results of their tasks).
    pub fn pinned_objects(&self) -> usize {
        self.work().pinned()
    }

    /// What this node's bulk lane has done: its port, objects streamed to
    /// peers, objects received from theirs (see [`NodeBuilder::bulk_lane`]).
    pub fn lane_stats(&self) -> crate::LaneStats {
        let b = &self.inner.backend;
        let lane = b.lane.get();
        let received =
            b.fetcher.get().map_or(0, |(_, ctx)| ctx.bulk_received.load(std::sync::atomic::Ordering::Relaxed));
        crate::LaneStats { port: lane.map(|l| l.port()), served: lane.map_or(0, |l| l.served()), received }
    }

    /// This node's peer id.
    pub fn peer_id(&self) -> PeerId {
        self.inner.peer_id
    }

    /// The addresses the node listens on, non-loopback ones first, each
    /// ending in `/p2p/<peer id>` (ready to give other nodes as bootstrap
    /// addresses). Listening on `0.0.0.0` gives one per interface.
    pub fn listen_addrs(&self) -> Vec<Multiaddr> {
        let p2p = libp2p::multiaddr::Protocol::P2p(self.inner.peer_id);
        let addrs = self.inner.backend.addrs.read().unwrap_or_else(|p| p.into_inner());
        addrs.iter().map(|a| a.clone().with(p2p.clone())).collect()
    }

    /// The runtime this node serves.
    pub fn runtime(&self) -> &Runtime {
        &self.inner.rt
    }

    async fn ask<T>(&self, make: impl FnOnce(oneshot::Sender<T>) -> Command) -> Result<T, NodeError> {
        let (tx, rx) = oneshot::channel();
        self.inner.tx.send(make(tx)).map_err(|_| NodeError::Shutdown)?;
        rx.await.map_err(|_| NodeError::Shutdown)
    }

    /// The member table: this node first, then every peer heard from (dead
    /// ones included, marked `alive: false`).
    pub async fn cluster_status_async(&self) -> Result<Vec<Member>, NodeError> {
        self.ask(Command::Status).await
    }

    /// Blocking form of [`Node::cluster_status_async`].
    pub fn cluster_status(&self) -> Result<Vec<Member>, NodeError> {
        futures::executor::block_on(self.cluster_status_async())
    }

    /// Membership changes from now on (joined, died, revived): the
    /// subscription is in place when this returns, so no change that comes
    /// after the call is missed. A change is sent once the node has acted
    /// on it: when `Died(p)` arrives, work sent to `p` has been placed again
    /// and actors this node created there restarted.
    pub fn subscribe(&self) -> Result<crossbeam_channel::Receiver<MembershipEvent>, NodeError> {
        let (tx, rx) = crossbeam_channel::unbounded();
        let (done, registered) = oneshot::channel();
        self.inner.tx.send(Command::Subscribe(tx, done)).map_err(|_| NodeError::Shutdown)?;
        futures::executor::block_on(registered).map_err(|_| NodeError::Shutdown)?;
        Ok(rx)
    }

    /// Blocks until at least `n` live peers (besides this node) are members,
    /// or `timeout` passes. Event-driven: wakes on membership changes.
    pub fn wait_for_peers(&self, n: usize, timeout: Duration) -> Result<Vec<Member>, NodeError> {
        let deadline = Instant::now() + timeout;
        let events = self.subscribe()?;
        loop {
            let status = self.cluster_status()?;
            if status.iter().filter(|m| m.alive && !m.is_self).count() >= n {
                return Ok(status);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match events.recv_timeout(left) {
                Ok(_) => {}
                Err(crossbeam_channel::RecvTimeoutError::Timeout) => {
                    return Err(NodeError::Timeout(format!("{n} live peers not seen within {timeout:?}")));
                }
                Err(crossbeam_channel::RecvTimeoutError::Disconnected) => return Err(NodeError::Shutdown),
            }
        }
    }

    /// Dials an address (e.g. another node's listen address) and waits for
    /// the outcome: the peer's id once the connection is up (handshakes
    /// done), or why it failed.
    pub async fn dial_async(&self, addr: Multiaddr) -> Result<PeerId, NodeError> {
        self.ask(|tx| Command::Dial(addr, tx)).await?.map_err(NodeError::Dial)
    }

    /// Blocking form of [`Node::dial_async`].
    pub fn dial(&self, addr: Multiaddr) -> Result<PeerId, NodeError> {
        futures::executor::block_on(self.dial_async(addr))
    }

    /// Serializes a ref (CBOR) for another node: its id and this node's
    /// address; the object is announced in the DHT.
    /// (The typed, infallible form of [`Node::encode`].)
    pub fn encode_ref<T: Serialize + Any + Send + Sync>(&self, r: &ObjectRef<T>) -> Vec<u8> {
        // Serializing a ref into a Vec does not fail.
        self.encode(r).unwrap_or_default()
    }

    /// Deserializes a ref made by [`Node::encode_ref`] on any node, bound to
    /// this node's runtime: `get` fetches the value from the owner or, if
    /// the owner is gone, from a replica found in the DHT.
    pub fn decode_ref<T: Serialize + DeserializeOwned + Any + Send + Sync>(
        &self,
        bytes: &[u8],
    ) -> Result<ObjectRef<T>, NodeError> {
        self.decode(bytes)
    }

    /// Sends the queued DHT announcements now and returns once they are in
    /// this node's provider store (where other nodes' lookups find them).
    /// Announcements otherwise go out every 100 ms, in batches.
    pub fn flush_announcements(&self) -> Result<(), NodeError> {
        futures::executor::block_on(self.ask(Command::Flush))
    }

    /// Stops the node now (also done when the last handle is dropped).
    pub fn shutdown(&self) {
        self.inner.stop();
    }
}
