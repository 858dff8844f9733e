//! Layer 4, remote work: tasks and actors that run on other nodes, and
//! the objects this node keeps alive for them.
//!
//! API (what users call): `task` ([`TaskBuilder`]), `actor`
//! ([`ActorBuilder`], [`ActorHandle`]), `registry` (what a node can run for
//! others), `args` (values or refs as arguments).
//!
//! State, each in its own file behind narrow methods:
//! - `results`: promises of work running elsewhere (waiting, done, rebuilt);
//! - `pins`: objects pinned for peers (borrow counts, refs sent out of band,
//!   results made here under another id than their submitter's);
//! - `hosted`: actors hosted here for other nodes;
//! - `owned`: actors this node created elsewhere (hosts, restarts, and
//!   those waiting for a node with their resources, holding their calls);
//! - `load`: tasks sent to each peer and work accepted from peers;
//! - `backlog`: tasks whose every capable peer is busy, waiting for room.
//!
//! Behaviour, as methods of [`Work`], the coordinator that owns those and
//! does the I/O they decide on (mail, fetches, tasks) outside their locks:
//! - `submit`: the submitter side (placement, submission, completions,
//!   refusals, filling a reader's fetch);
//! - `exec`: the executor side (applying the mail peers send);
//! - `replace`: placing work again (after `Busy` or a peer's death) and
//!   restarting actors lost with their host;
//! - `events`: the thread that applies membership changes from the event
//!   loop (off the swarm's task), then tells subscribers;
//! - `fenced`: releases and completions, which let their receiver free
//!   something, wait until the mail this node sent earlier to other peers
//!   (its borrows) has been applied.
//!
//! Cluster semantics kept here (Ray's): every ref inside a task's or
//! call's arguments, nested ones too, is pinned by the submitter until the
//! work is done; a ref inside a result is pinned by the executor until the
//! submitter releases the result, which it does only once its borrows of
//! the refs it read out of it have been applied; a lost object is reached
//! through its owner whatever the path to it (a direct argument, a
//! borrowed ref, a ref nested in a value), and the owner runs its task
//! again or waits for the task placed again (answering readers `Busy`
//! meanwhile, never "not found"); an actor with restarts whose host died
//! while no live node has its resources waits for one (bounded).
//!
//! May use: `cluster` (placement, the view, the loop handle), `transport`
//! (it implements `MailHandler` and `Rebuilder` and hands them down at
//! construction), `wire`, `config`, `sync`. Nothing below calls into it
//! except through those traits and the event channel.
//!
//! Invariants (kept by every file here): no ref, actor handle or `Fetch`
//! is dropped or completed under a lock of this layer (each can call back
//! into the node); no lock is held while user code runs or while waiting
//! on the network; every submission in flight is counted until its `Done`,
//! its refusal or its peer's death.

mod actor;
mod args;
mod backlog;
mod events;
mod exec;
mod fenced;
mod hosted;
mod load;
mod owned;
mod pins;
mod registry;
mod replace;
mod results;
mod submit;
mod task;

pub use actor::ActorRecordError;
pub(crate) use actor::{lookup, LookupError};
pub use actor::{ActorBuilder, ActorHandle};
pub use args::{Arg, Args, Data, IntoArg, IntoArgs};
pub use exec::MAX_WIRE_RETRIES;
pub use hosted::{MAX_ACTORS_PER_PEER, MAX_PARKED_BYTES_PER_PEER, MAX_PARKED_PER_PEER};
pub use load::MAX_ACCEPTED_BYTES_PER_PEER;
pub use owned::DEFAULT_RESTART_TIMEOUT;
pub use pins::MAX_BORROWS_PER_PEER;
pub use registry::{ActorClass, Method, Registry, RemoteFn, INLINE_RESULT_BYTES};
pub use task::TaskBuilder;

use crate::cluster::{ClusterParts, ClusterView, LoopHandle};
use crate::config::WorkConfig;
use crate::transport::fetch::{Fetcher, FetcherConfig};
use crate::transport::outbox::Outboxes;
use crate::transport::{MailError, MailHandler, Rebuilder};
use crate::wire::hint;
use crate::wire::mail::{Ack, Mail};
use backlog::Backlog;
use fenced::Fenced;
use hosted::HostedActors;
use libp2p::PeerId;
use load::{Accepted, SentCounts};
use manta::backend::Fetch;
use manta::{AnyRef, Error, ObjectId, Runtime};
use owned::OwnedActors;
use pins::{Aliases, Pins};
use results::Results;
use std::any::Any;
use std::sync::{Arc, OnceLock, Weak};
use std::time::Duration;

/// What remote work is built from.
pub(crate) struct WorkSetup {
    /// The runtime it runs on.
    pub(crate) rt: Runtime,
    /// What this node can run for others.
    pub(crate) registry: Registry,
    /// Spillback and back-pressure.
    pub(crate) cfg: WorkConfig,
    /// The node's tokio runtime (timers, fetches, mail senders).
    pub(crate) tokio: tokio::runtime::Handle,
    /// How fetches are made.
    pub(crate) fetch: FetcherConfig,
}

/// A node's remote work: the state owners above and the network below.
pub(crate) struct Work {
    me: PeerId,
    rt: Runtime,
    registry: Registry,
    cfg: WorkConfig,
    /// This work itself, for callbacks that must not keep it alive.
    this: Weak<Work>,
    tokio: tokio::runtime::Handle,
    view: Arc<ClusterView>,
    cluster: LoopHandle,
    boxes: Outboxes,
    fetcher: Arc<Fetcher>,
    results: Results,
    pins: Pins,
    hosted: HostedActors,
    owned: OwnedActors,
    sent: SentCounts,
    accepted: Accepted,
    /// Tasks whose every capable peer refused them as busy.
    backlog: Backlog,
    /// The node's traffic counters (remote tasks and calls are counted here).
    traffic: Arc<crate::stats::Traffic>,
    /// Releases and completions waiting for earlier mail to other peers.
    fenced: Fenced,
    /// Results made here under another id than their submitter's.
    aliases: Aliases,
    /// Counts death verdicts (fetches in flight to a dead peer give up).
    deaths: tokio::sync::watch::Sender<u64>,
    /// The node handle that owns this work, type-erased (this layer does
    /// not know the node's type): how `Node::current` finds its node.
    owner: OnceLock<Weak<dyn Any + Send + Sync>>,
}

impl Work {
    /// Builds the remote work of a node on the cluster layer's `parts`,
    /// starts receiving mail, and starts the thread that applies the
    /// loop's events.
    pub(crate) fn start(setup: WorkSetup, parts: &ClusterParts) -> std::io::Result<Arc<Work>> {
        let timeout = setup.fetch.request_timeout;
        let lanes = setup.fetch.lanes.clone();
        let work = Arc::new_cyclic(|this: &Weak<Work>| {
            let handler: Weak<dyn MailHandler> = this.clone();
            let rebuilder: Weak<dyn Rebuilder> = this.clone();
            let directory = Arc::new(parts.handle.clone());
            let traffic = setup.fetch.traffic.clone();
            let fetcher = Fetcher::new(
                setup.fetch,
                setup.rt.clone(),
                parts.streams.clone(),
                directory,
                parts.peer_ips.clone(),
                rebuilder,
            );
            Work {
                me: parts.view.me(),
                accepted: Accepted::new(setup.cfg.max_accepted),
                traffic,
                owner: OnceLock::new(),
                rt: setup.rt,
                registry: setup.registry,
                cfg: setup.cfg,
                this: this.clone(),
                boxes: Outboxes::new(parts.streams.clone(), setup.tokio.clone(), timeout, handler, lanes),
                tokio: setup.tokio,
                view: parts.view.clone(),
                cluster: parts.handle.clone(),
                fetcher: Arc::new(fetcher),
                results: Results::default(),
                pins: {
                    let w = this.clone();
                    Pins::with_borrowers(Box::new(move |r, d| {
                        if let Some(w) = w.upgrade() {
                            w.rt.backend().add_borrowers(r, d);
                        }
                    }))
                },
                hosted: HostedActors::default(),
                owned: OwnedActors::default(),
                sent: SentCounts::default(),
                backlog: Backlog::default(),
                fenced: Fenced::default(),
                aliases: Aliases::default(),
                deaths: tokio::sync::watch::Sender::new(0),
            }
        });
        // Only now can the mail handler be reached: receive mail.
        work.boxes.accept();
        events::spawn(parts.events.clone(), Arc::downgrade(&work))?;
        Ok(work)
    }

    /// The remote work of the node attached to the context runtime (the
    /// one entered on this thread, or whose task runs this code): the node
    /// attaches a backend whose `as_any` is its `Arc<Work>`.
    pub(crate) fn context() -> Option<Arc<Work>> {
        let backend = manta::backend::context()?.backend().attached()?;
        backend.as_any().downcast_ref::<Arc<Work>>().cloned()
    }

    /// Records the node handle that owns this work (once).
    pub(crate) fn set_owner(&self, owner: Weak<dyn Any + Send + Sync>) {
        let _ = self.owner.set(owner);
    }

    /// The node handle that owns this work, if it is still there.
    pub(crate) fn owner(&self) -> Option<Arc<dyn Any + Send + Sync>> {
        self.owner.get()?.upgrade()
    }

    /// This node's peer id.
    pub(crate) fn me(&self) -> PeerId {
        self.me
    }

    /// The runtime the work runs on.
    pub(crate) fn runtime(&self) -> &Runtime {
        &self.rt
    }

    /// This node's owner hint.
    pub(crate) fn hint(&self) -> Arc<[u8]> {
        self.view.hint()
    }

    /// The node's fetcher.
    pub(crate) fn fetcher(&self) -> &Arc<Fetcher> {
        &self.fetcher
    }

    /// Records actor `id`, created by this node elsewhere, as restartable.
    fn own(&self, id: ObjectId, owned: owned::Owned) {
        self.owned.insert(id, owned);
    }

    /// Forgets actor `id` (its creator's handles are gone); calls held
    /// while it waited for a node fail.
    fn disown(&self, id: ObjectId) {
        for c in self.owned.remove(id) {
            let e = Error::ActorDead { actor: id.to_string().into(), reason: "its creator dropped it".into() };
            self.fail(c.id, e);
        }
    }

    /// Gives the swarm `peer`'s addresses (nothing waits for it).
    fn learn(&self, peer: PeerId, addrs: Vec<libp2p::Multiaddr>) {
        drop(crate::transport::Directory::learn(&self.cluster, peer, addrs));
    }

    /// A peer's owner hint built from the member table.
    fn hint_of(&self, peer: PeerId) -> Vec<u8> {
        self.view.hint_of(peer)
    }

    /// A record from the DHT (the first found), or `None`; fails if the
    /// node has stopped.
    fn dht_record(&self, key: Vec<u8>) -> tokio::sync::oneshot::Receiver<Option<Vec<u8>>> {
        self.cluster.get_record(key)
    }

    /// Queues mail for `peer`.
    fn send(&self, peer: PeerId, m: Mail) {
        self.boxes.send(peer, m);
    }

    /// True if `peer` is a live member.
    fn is_live_peer(&self, peer: PeerId) -> bool {
        self.view.is_alive(peer) == Some(true)
    }

    /// True if `peer` is in the member table and marked dead.
    fn is_dead_peer(&self, peer: PeerId) -> bool {
        self.view.is_alive(peer) == Some(false)
    }

    /// Blocks until every message queued for peers has been applied by its
    /// receiver (or given up), or `timeout` passes; true if all were.
    pub(crate) fn flush_mail(&self, timeout: Duration) -> bool {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if !self.boxes.flush(left) {
                return false;
            }
            // Fenced mail goes out as the acks it waits for come in.
            self.send_unfenced();
            if self.fenced.is_empty() {
                return self.boxes.flush(deadline.saturating_duration_since(std::time::Instant::now()));
            }
            if left.is_zero() {
                return false;
            }
            std::thread::yield_now();
        }
    }

    /// Tasks and actor calls from peers held now.
    pub(crate) fn accepted_work(&self) -> usize {
        self.accepted.count()
    }

    /// Objects pinned here for peers.
    pub(crate) fn pinned_objects(&self) -> usize {
        self.pins.count()
    }

    /// Keeps refs encoded out of band alive until a peer borrows them.
    pub(crate) fn pin_sent(&self, refs: Vec<AnyRef>) {
        self.pins.pin_sent(refs);
    }

    /// Drops out-of-band pins whose time is up.
    fn sweep_sent(&self) {
        self.pins.sweep_sent();
        self.send_unfenced();
    }

    /// True if `id` is the result of work this node sent elsewhere.
    pub(crate) fn is_result(&self, id: ObjectId) -> bool {
        self.results.contains(id)
    }

    /// Waits until result `id` is done wherever it runs, without fetching
    /// it; true if it is (or is not one of ours) within `timeout`.
    pub(crate) fn wait_settled(&self, id: ObjectId, timeout: Duration) -> bool {
        self.results.wait_settled(id, timeout)
    }

    /// A ref to remote object `id` was deserialized here: tell its owner.
    pub(crate) fn borrowed(&self, id: ObjectId, owner_hint: &[u8]) {
        if let Some((peer, _)) = hint::decode(owner_hint) {
            if peer != self.me {
                self.send(peer, Mail::Borrow(vec![serde_bytes::ByteArray::new(id.to_bytes())]));
            }
        }
    }

    /// The last ref to remote object `id` here was dropped: forget it if it
    /// is one of our promises, else tell its owner.
    pub(crate) fn released(&self, id: ObjectId, owner_hint: &[u8]) {
        if self.promise_dropped(id) {
            return;
        }
        if let Some((peer, _)) = hint::decode(owner_hint) {
            if peer != self.me {
                // After the borrows this node made (of refs inside it) are in.
                self.send_fenced(peer, Mail::Release(vec![serde_bytes::ByteArray::new(id.to_bytes())]));
            }
        }
    }
}

impl MailHandler for Work {
    fn on_mail(&self, from: PeerId, mail: Vec<Mail>) -> Ack {
        self.apply(from, mail)
    }

    fn on_ack(&self, to: PeerId, sent: Vec<Mail>, ack: Ack) {
        self.acked(to, sent, ack)
    }

    fn on_undeliverable(&self, to: PeerId, sent: Vec<Mail>, why: MailError) {
        self.undeliverable(to, sent, &why)
    }
}

impl Rebuilder for Work {
    fn rebuild(&self, fetch: Fetch, why: &Error) -> Option<Fetch> {
        self.rebuild_lost(fetch, why)
    }

    fn is_dead(&self, peer: PeerId) -> bool {
        self.is_dead_peer(peer)
    }

    fn deaths(&self) -> Option<tokio::sync::watch::Receiver<u64>> {
        Some(self.deaths.subscribe())
    }
}
