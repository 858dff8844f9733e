//! Layer 5, the node: the [`Node`] handle users hold, its builder
//! (`builder`), its errors (`error`), the runtime backend (`backend`)
//! that glues the manta runtime to the layers below, and the cluster's
//! timeline (`timeline`).
//!
//! A node owns a tokio runtime on its own threads and one event-loop task
//! that owns the libp2p `Swarm` (see `cluster::event_loop`). The handle is
//! cheap to clone and talks to the loop by commands with one-shot replies,
//! so a synchronous program needs no async code; `*_async` methods exist
//! for async callers. When the last handle is dropped (or
//! [`Node::shutdown`] is called) the node detaches from the manta runtime,
//! stops its loop and joins its thread; fetches in flight then fail with
//! `PeerUnreachable`.
//!
//! May use: every layer below. Nothing below imports it: the work layer
//! finds a runtime's node through the backend's `as_any` (its `Arc<Work>`)
//! and the type-erased owner the node records in it.
//!
//! Invariants: the backend is attached only once the node is fully wired
//! and detached before the loop is told to stop; `stop` runs once.

mod backend;
mod builder;
mod error;
mod timeline;

pub use builder::NodeBuilder;
pub use error::{NodeError, StartError, WaitedFor};
pub use timeline::{ClusterTrace, MissingNode, TracedNode};

use crate::cluster::{DhtLookup, LoopHandle, Member, MembershipEvent, NetStats};
use crate::transport::bulk::LaneStats;
use crate::transport::lanes::FastLaneStats;
use crate::work::{
    lookup, ActorBuilder, ActorClass, ActorHandle, Args, Data, IntoArgs, LookupError, RemoteFn, TaskBuilder, Work,
};
use backend::NodeBackend;
use libp2p::{Multiaddr, PeerId};
use manta::{ObjectRef, Runtime};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::any::Any;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

struct Inner {
    peer_id: PeerId,
    rt: Runtime,
    backend: Arc<NodeBackend>,
    cluster: LoopHandle,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl Inner {
    fn stop(&self) {
        let Some(thread) = crate::sync::lock_unpoisoned(&self.thread).take() else { return };
        self.rt.backend().detach();
        if let Some(lanes) = &self.backend.lanes {
            lanes.shutdown();
        }
        self.cluster.shutdown();
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
        NodeBuilder::new(rt)
    }

    /// The node attached to the runtime running the calling code (inside
    /// a task or actor call on a node's runtime), or to the runtime entered
    /// with `Runtime::enter`. This is how a task submits more cluster tasks.
    pub fn current() -> Option<Node> {
        let inner = Work::context()?.owner()?.downcast::<Inner>().ok()?;
        Some(Node { inner })
    }

    fn work(&self) -> &Arc<Work> {
        &self.inner.backend.work
    }

    /// Submits a registered function as a task with default options; see
    /// [`Node::task`].
    pub fn spawn<A: Args, R: Data>(&self, f: &RemoteFn<A, R>, args: impl IntoArgs<A>) -> ObjectRef<R> {
        self.task(f).spawn(args)
    }

    /// A cluster task of a registered function, to configure and spawn
    /// (the cluster form of `Runtime::task`): it runs here unless its
    /// resources exist only elsewhere, this node's queue is saturated, or a
    /// peer holds much more of its argument bytes (see the `placement`
    /// rules in the crate docs).
    pub fn task<'n, A: Args, R: Data>(&'n self, f: &'n RemoteFn<A, R>) -> TaskBuilder<'n, A, R> {
        TaskBuilder::new(self.work(), f)
    }

    /// Creates a cluster actor of a registered type with default options
    /// (the cluster form of `Runtime::actor`); see [`Node::actor_builder`].
    pub fn actor<A: Data, S: Send + 'static>(&self, class: &ActorClass<A, S>, args: A) -> ActorHandle<S> {
        self.actor_builder(class).spawn(args)
    }

    /// A cluster actor of a registered type, to configure and spawn (the
    /// cluster form of `Runtime::actor_builder`).
    pub fn actor_builder<'n, A: Data, S: Send + 'static>(
        &'n self,
        class: &'n ActorClass<A, S>,
    ) -> ActorBuilder<'n, A, S> {
        ActorBuilder::new(self.work(), class)
    }

    /// Finds the actor named `name` (created with `.name(name)` on any
    /// node) in the DHT, retrying until `timeout`.
    pub fn get_actor<A, S: 'static>(
        &self,
        class: &ActorClass<A, S>,
        name: &str,
        timeout: Duration,
    ) -> Result<ActorHandle<S>, NodeError> {
        lookup(self.work(), class, name, timeout).map_err(|e| match e {
            LookupError::Shutdown => NodeError::Shutdown,
            LookupError::Timeout => {
                NodeError::Timeout { waited_for: WaitedFor::Actor(name.to_string()), after: timeout }
            }
            LookupError::Record(e) => NodeError::ActorRecord(e),
        })
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
        written.map_err(NodeError::Encode)?;
        // The bytes may travel by any channel: keep what they refer to
        // alive until the receiver's borrow reaches the owner.
        self.work().pin_sent(refs);
        Ok(out)
    }

    /// Deserializes what [`Node::encode`] made on any node, binding refs
    /// and actor handles to this node.
    pub fn decode<T: DeserializeOwned>(&self, bytes: &[u8]) -> Result<T, NodeError> {
        let _entered = self.inner.rt.enter();
        ciborium::from_reader(bytes).map_err(NodeError::Decode)
    }

    /// Waits until `r` is done wherever it is made, without fetching its
    /// value here (Ray's `wait(fetch_local=False)`), if it is the result of
    /// a task or call this node sent elsewhere; any other ref is waited for
    /// as `get` would. True if it is done (or failed) within `timeout`.
    pub fn wait_done_remotely<T: Any + Send + Sync>(&self, r: &ObjectRef<T>, timeout: Duration) -> bool {
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
        self.work().flush_mail(timeout)
    }

    /// Tasks and actor calls from peers this node holds now (queued or
    /// running; bounded by [`NodeBuilder::max_accepted_tasks`]).
    pub fn accepted_work(&self) -> usize {
        self.work().accepted_work()
    }

    /// Objects this node keeps alive for other nodes (borrowed refs and
    /// results of their tasks).
    pub fn pinned_objects(&self) -> usize {
        self.work().pinned_objects()
    }

    /// What this node's bulk lane has done: its port, objects streamed to
    /// peers, objects received from theirs (see [`NodeBuilder::bulk_lane`]).
    pub fn lane_stats(&self) -> LaneStats {
        let mut stats = self.inner.backend.lane.as_ref().map(|l| l.stats()).unwrap_or_default();
        stats.received = self.work().fetcher().bulk_received();
        stats
    }

    /// What this node's message lanes have done (see
    /// [`NodeBuilder::fast_lane`]); all zero when it has none. `gets` counts
    /// objects received over them.
    pub fn fast_lane_stats(&self) -> FastLaneStats {
        let mut stats = self.inner.backend.lanes.as_ref().map(|l| l.stats()).unwrap_or_default();
        stats.gets = self.work().fetcher().lane_gets();
        stats
    }

    /// Fault injection for tests: ends every message lane of this node now,
    /// as a failure would (calls and mail in flight on them fall back to
    /// libp2p; lanes are asked for again after a pause). Not part of the API.
    #[doc(hidden)]
    pub fn break_fast_lanes(&self) {
        if let Some(lanes) = &self.inner.backend.lanes {
            lanes.break_all();
        }
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
        self.inner.backend.view.listen_addrs().into_iter().map(|a| a.with(p2p.clone())).collect()
    }

    /// The runtime this node serves.
    pub fn runtime(&self) -> &Runtime {
        &self.inner.rt
    }

    /// The member table: this node first, then every peer heard from (dead
    /// ones included, marked `alive: false`).
    pub async fn cluster_status_async(&self) -> Result<Vec<Member>, NodeError> {
        self.inner.cluster.status().await.map_err(|_| NodeError::Shutdown)
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
        futures::executor::block_on(self.inner.cluster.subscribe(tx)).map_err(|_| NodeError::Shutdown)?;
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
                    return Err(NodeError::Timeout { waited_for: WaitedFor::Peers(n), after: timeout });
                }
                Err(crossbeam_channel::RecvTimeoutError::Disconnected) => return Err(NodeError::Shutdown),
            }
        }
    }

    /// Dials an address (e.g. another node's listen address) and waits for
    /// the outcome: the peer's id once the connection is up (handshakes
    /// done), or why it failed.
    pub async fn dial_async(&self, addr: Multiaddr) -> Result<PeerId, NodeError> {
        let dialled = self.inner.cluster.dial(addr.clone()).await.map_err(|_| NodeError::Shutdown)?;
        dialled.map_err(|source| NodeError::Dial { addr, source: Box::new(source) })
    }

    /// Blocking form of [`Node::dial_async`].
    pub fn dial(&self, addr: Multiaddr) -> Result<PeerId, NodeError> {
        futures::executor::block_on(self.dial_async(addr))
    }

    /// Serializes a ref (CBOR) for another node: its id and this node's
    /// address (the typed form of [`Node::encode`], with the same pin).
    /// It cannot fail for a ref of this node's runtime (its runtime is
    /// entered, and a ref writes two byte strings into a `Vec`); the
    /// `Result` carries ciborium's error rather than hiding one.
    pub fn encode_ref<T: Serialize + Any + Send + Sync>(&self, r: &ObjectRef<T>) -> Result<Vec<u8>, NodeError> {
        self.encode(r)
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
    /// this node's provider store (where other nodes' lookups find them),
    /// and asks the owners of the copies fetched here for their vouchers
    /// now, returning once they answered (so these copies can be served to
    /// readers that need one even if their owners die right after).
    /// Otherwise a copy is announced, and its voucher asked for, once it
    /// has been held for 100 ms (in batches: between 100 and 200 ms after
    /// it was made; copies dropped sooner cost neither).
    pub fn flush_announcements(&self) -> Result<(), NodeError> {
        futures::executor::block_on(self.inner.cluster.flush_announcements()).map_err(|_| NodeError::Shutdown)?;
        let (tx, rx) = tokio::sync::oneshot::channel();
        let vouchers = self.inner.backend.vouchers.clone();
        self.inner.backend.tokio.spawn(async move {
            vouchers.flush().await;
            let _ = tx.send(());
        });
        futures::executor::block_on(rx).map_err(|_| NodeError::Shutdown)
    }

    /// Bytes this node has moved on its libp2p connections (heartbeats,
    /// gossip, DHT, mail, objects in chunks; not the bulk lane) since it
    /// started.
    pub fn net_stats(&self) -> NetStats {
        self.inner.backend.view.net_stats()
    }

    /// Looks up the DHT providers of object `id` as a fetch would, and
    /// says how many peers answered before the first provider was known
    /// and how long that took (a diagnostic: the scale benchmark's
    /// `dht_hops` and `dht_lookup_ms`). Ends within the request timeout.
    pub fn dht_lookup(&self, id: manta::ObjectId) -> Result<DhtLookup, NodeError> {
        futures::executor::block_on(self.inner.cluster.dht_lookup(id)).map_err(|_| NodeError::Shutdown)
    }

    /// Stops the node now (also done when the last handle is dropped).
    pub fn shutdown(&self) {
        self.inner.stop();
    }
}
