//! Remote work, submitter side: the node's shared state, task placement and
//! submission, the results of work running elsewhere, and what happens
//! when a peer dies. (The executor side is `exec`; both share [`Work`].)
//!
//! A task placed on peer `E` gets a *promise*: a remote cell whose id `X`
//! this node chose and whose owner hint is this node (the submitter owns
//! the result, as in Ray). `E` runs the task with output id `X`, keeps the
//! output pinned for us and sends `Done(X)`: the value inline if it is at
//! most 100 KB, else only its size (it stays on `E`). The promise is
//! filled when a reader demands it (`get`, `wait`, a task taking it): from
//! the inline bytes at once, or by fetching from `E`. Other nodes that
//! deserialize a ref to `X` ask this node (the owner), which fetches it
//! first if needed.
//!
//! Invariants:
//! - an entry of `results` lives from submission until the promise is
//!   dropped (then `E` is told to release its pin); its argument refs are
//!   kept until `Done`, so objects the task reads stay alive meanwhile, and
//!   after it for a result that stays on `E` (its lineage): if `E` is lost
//!   before the value is read, a reader's failed fetch places the task
//!   again under the same id (`rebuild`), as Ray reconstructs objects;
//! - a parked `Fetch` is completed exactly once, always outside the lock
//!   (completing wakes readers, which may call back into `Work`);
//! - refs and actor handles are never dropped under a lock of `Work`: the
//!   last drop of a promise calls back into `Work::promise_dropped`;
//! - every submission in flight is counted in `sent[E]` until its `Done`,
//!   refusal or its peer's death, and placement avoids peers at the bound.

use crate::mail::{self, Mail, Opts, Outcome};
use crate::membership::Member;
use crate::outbox::{Handler, Outboxes};
use crate::placement::{self, Local, Need, Place};
use crate::registry::Registry;
use libp2p::PeerId;
use manta::backend::Fetch;
use manta::{AnyRef, Error, ObjectId, Runtime};
use std::collections::HashMap;
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::Duration;

/// Largest encoded argument tuple a result that stays on its executor
/// keeps as lineage (bigger ones cannot be rebuilt if that node is lost).
pub(crate) const MAX_LINEAGE_ARGS: usize = 1 << 20;

/// Longest a ref encoded out of band stays pinned waiting for a borrower.
pub(crate) const OOB_PIN_TTL: Duration = Duration::from_secs(300);

/// How long actor calls refused as busy wait before they are sent again.
pub(crate) const CALL_RETRY_PAUSE: Duration = Duration::from_millis(5);

/// Spillback and back-pressure settings.
#[derive(Debug, Clone)]
pub(crate) struct WorkConfig {
    /// Local queue length from which tasks spill to less loaded peers.
    pub threshold: usize,
    /// Most tasks from peers this node holds (queued or running).
    pub max_accepted: usize,
    /// Most times a task is placed again after a peer refused it as busy.
    pub max_hops: u32,
}

impl Default for WorkConfig {
    fn default() -> Self {
        WorkConfig { threshold: 4, max_accepted: 16 << 10, max_hops: 3 }
    }
}

/// Where a result stands.
pub(crate) enum St {
    /// Not done; a reader's fetch may be parked here.
    Waiting(Option<Fetch>),
    /// Done on the executor.
    Done(Outcome),
}

/// How to submit a task again (after `Busy`, or its node's death).
pub(crate) struct Retry {
    pub func: String,
    pub args: Vec<u8>,
    pub opts: Opts,
    pub need: Need,
    pub hops: u32,
    pub excluded: Vec<PeerId>,
    /// Set by `.on(peer)`: only that node may run it.
    pub pinned: Option<PeerId>,
}

/// One result of work sent elsewhere.
pub(crate) struct Pending {
    pub peer: PeerId,
    pub st: St,
    /// Tasks: how to place it again. Actor calls: `None`.
    pub retry: Option<Retry>,
    /// Actor calls: the actor's name (for errors).
    pub actor: Option<String>,
    /// The argument refs, kept alive until `Done`.
    pub keep: Vec<AnyRef>,
    /// Set when the task ran here after all (fallback): its output.
    pub local: Option<AnyRef>,
}

/// A count of refs a peer holds to one of our objects, and the pin that
/// keeps the object alive while the count is positive.
#[derive(Default)]
pub(crate) struct Pin {
    pub count: i64,
    pub held: Option<AnyRef>,
}

/// A call that arrived before its actor's creation (they come from
/// different nodes, so on different streams).
pub(crate) struct ParkedCall {
    pub from: PeerId,
    pub method: String,
    pub args: Vec<u8>,
    pub id: ObjectId,
}

/// An actor hosted here.
pub(crate) enum Hosted {
    Live {
        owner: PeerId,
        handle: Box<dyn std::any::Any + Send + Sync>,
    },
    Failed(String),
    /// Not created yet: calls wait here (bounded in number and time).
    Expected(Vec<ParkedCall>),
    /// Dropped by its creator (a bounded number of these is remembered,
    /// so late calls fail at once).
    Gone,
}

/// The node's remote-work state, shared by the handle, the backend, the
/// outboxes and the event loop.
pub(crate) struct Work {
    pub me: PeerId,
    pub rt: Runtime,
    pub registry: Registry,
    pub cfg: WorkConfig,
    pub hint: RwLock<Arc<[u8]>>,
    pub members: RwLock<Vec<Member>>,
    pub boxes: OnceLock<Outboxes>,
    pub handle: OnceLock<tokio::runtime::Handle>,
    /// Sends commands to the event loop (DHT records of named actors).
    pub loop_tx: tokio::sync::mpsc::UnboundedSender<crate::event_loop::Command>,
    pub results: Mutex<HashMap<ObjectId, Pending>>,
    /// Notified when a result settles (done or failed).
    pub settled: std::sync::Condvar,
    pub pins: Mutex<HashMap<(PeerId, ObjectId), Pin>>,
    pub actors: Mutex<HashMap<ObjectId, Hosted>>,
    /// The most recently dropped actors (their `Hosted::Gone` entries).
    pub gone: Mutex<std::collections::VecDeque<ObjectId>>,
    /// Tasks accepted from peers and not done (back-pressure).
    pub accepted: AtomicUsize,
    /// Tasks sent per peer and not done (placement).
    pub sent: Mutex<HashMap<PeerId, usize>>,
    /// Actors this node created elsewhere that may be restarted.
    pub owned: Mutex<HashMap<ObjectId, crate::actor::Owned>>,
    /// Refs this node encoded out of band (`Node::encode`), kept alive
    /// until a peer registers a borrow of them or [`OOB_PIN_TTL`] passes.
    pub oob: Mutex<HashMap<ObjectId, (std::time::Instant, AnyRef)>>,
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Fills a fetch from an outcome; gives it back (with the peer to read
/// from) if the value must be fetched.
fn deliver(fetch: Fetch, outcome: &Outcome, from: PeerId) -> Option<(Fetch, PeerId)> {
    match outcome {
        Outcome::Inline(bytes) => {
            let id = fetch.id();
            let r = fetch.decode(&mut &bytes[..]).map_err(|m| Error::ObjectLost {
                id,
                reason: format!("the result from {from} does not decode: {m}").into(),
            });
            fetch.complete(r);
            None
        }
        Outcome::Stays(_) => Some((fetch, from)),
        Outcome::Failed(e) => {
            fetch.complete(Err(e.clone().into()));
            None
        }
    }
}

impl Work {
    pub fn new(
        me: PeerId,
        rt: Runtime,
        registry: Registry,
        cfg: WorkConfig,
        loop_tx: tokio::sync::mpsc::UnboundedSender<crate::event_loop::Command>,
    ) -> Work {
        Work {
            me,
            rt,
            registry,
            cfg,
            hint: RwLock::new(Arc::from(&[][..])),
            members: RwLock::new(Vec::new()),
            boxes: OnceLock::new(),
            handle: OnceLock::new(),
            loop_tx,
            results: Mutex::new(HashMap::new()),
            settled: std::sync::Condvar::new(),
            pins: Mutex::new(HashMap::new()),
            actors: Mutex::new(HashMap::new()),
            gone: Mutex::new(std::collections::VecDeque::new()),
            accepted: AtomicUsize::new(0),
            sent: Mutex::new(HashMap::new()),
            owned: Mutex::new(HashMap::new()),
            oob: Mutex::new(HashMap::new()),
        }
    }

    /// Keeps refs this node encoded out of band alive until a peer
    /// borrows them (see `oob`), and drops expired ones.
    pub fn pin_sent(&self, refs: Vec<AnyRef>) {
        let until = std::time::Instant::now() + OOB_PIN_TTL;
        let replaced: Vec<_> = {
            let mut oob = lock(&self.oob);
            refs.into_iter().filter_map(|r| oob.insert(r.id(), (until, r))).collect()
        };
        drop(replaced); // after the lock: a last ref's drop calls back into the node
        self.sweep_sent();
    }

    /// Drops out-of-band pins whose time is up.
    pub fn sweep_sent(&self) {
        let now = std::time::Instant::now();
        let expired: Vec<_> = {
            let mut oob = lock(&self.oob);
            let ids: Vec<ObjectId> = oob.iter().filter(|(_, (t, _))| *t <= now).map(|(id, _)| *id).collect();
            ids.iter().filter_map(|id| oob.remove(id)).collect()
        };
        drop(expired);
    }

    /// This node's owner hint.
    pub fn hint(&self) -> Arc<[u8]> {
        self.hint.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Queues mail for `peer` (dropped if the node is not up).
    pub fn send(&self, peer: PeerId, m: Mail) {
        if let Some(b) = self.boxes.get() {
            b.send(peer, m);
        }
    }

    fn members(&self) -> Vec<Member> {
        self.members.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// True if `peer` is a live member.
    pub fn is_live_peer(&self, peer: PeerId) -> bool {
        self.peer_alive(peer) == Some(true)
    }

    /// True if `peer` is in the member table and marked dead.
    pub fn is_dead_peer(&self, peer: PeerId) -> bool {
        self.peer_alive(peer) == Some(false)
    }

    /// Whether `peer` is alive, if it is in the member table.
    fn peer_alive(&self, peer: PeerId) -> Option<bool> {
        self.members.read().unwrap_or_else(|p| p.into_inner()).iter().find(|m| m.peer == peer).map(|m| m.alive)
    }

    /// True if `id` is the result of work this node sent elsewhere.
    pub fn is_result(&self, id: ObjectId) -> bool {
        lock(&self.results).contains_key(&id)
    }

    /// Waits until result `id` is done wherever it runs, without fetching
    /// it; true if it is (or is not one of our results).
    pub fn wait_settled(&self, id: ObjectId, timeout: Duration) -> bool {
        let deadline = std::time::Instant::now() + timeout;
        let mut results = lock(&self.results);
        loop {
            match results.get(&id) {
                Some(Pending { st: St::Waiting(_), .. }) => {}
                _ => return true,
            }
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                return false;
            }
            results = self.settled.wait_timeout(results, left).unwrap_or_else(|p| p.into_inner()).0;
        }
    }

    /// Decides where a task runs (see `placement`).
    pub fn place(&self, need: &Need, refs: &[AnyRef], excluded: &[PeerId]) -> Place {
        let mut local_bytes = 0u64;
        let mut bytes: HashMap<PeerId, u64> = HashMap::new();
        {
            let results = lock(&self.results);
            for r in refs {
                if let Some(b) = r.stored_bytes() {
                    local_bytes += b as u64;
                } else if let Some(p) = results.get(&r.id()) {
                    match &p.st {
                        St::Done(Outcome::Stays(n)) => *bytes.entry(p.peer).or_default() += n,
                        St::Done(Outcome::Inline(b)) => local_bytes += b.len() as u64,
                        _ => {}
                    }
                }
            }
        }
        let sent = lock(&self.sent).clone();
        let full: Vec<PeerId> = sent
            .iter()
            .filter(|(_, n)| **n >= self.cfg.max_accepted)
            .map(|(p, _)| *p)
            .chain(excluded.iter().copied())
            .collect();
        let local = Local {
            totals: self.rt.resources().into_iter().map(|(n, t, _)| (n.to_string(), t)).collect(),
            queued: self.rt.queued_tasks(),
            threshold: self.cfg.threshold,
            arg_bytes: local_bytes,
            fn_hash: self.registry.hash(),
        };
        placement::choose(need, &local, &self.members(), &sent, &bytes, &full)
    }

    /// Records a submission to `peer` and sends it.
    pub fn submit_to(&self, peer: PeerId, id: ObjectId, retry: Retry, keep: Vec<AnyRef>) {
        let m = Mail::Submit {
            id: id.to_bytes(),
            func: retry.func.clone(),
            args: retry.args.clone(),
            opts: retry.opts.clone(),
        };
        *lock(&self.sent).entry(peer).or_default() += 1;
        let old = {
            let mut results = lock(&self.results);
            match results.get_mut(&id) {
                // Placed again: a reader's parked fetch stays parked.
                Some(p) => {
                    p.peer = peer;
                    p.retry = Some(retry);
                    Some(std::mem::replace(&mut p.keep, keep))
                }
                None => {
                    let p = Pending { peer, st: St::Waiting(None), retry: Some(retry), actor: None, keep, local: None };
                    results.insert(id, p);
                    None
                }
            }
        };
        drop(old); // after the lock (see `on_done`)
        self.send(peer, m);
    }

    fn unsent(&self, peer: PeerId) {
        if let Some(n) = lock(&self.sent).get_mut(&peer) {
            *n = n.saturating_sub(1);
        }
    }

    /// `Done(id)` arrived from `from` (or was made here): fills a parked
    /// fetch, or keeps the outcome for the first reader.
    pub fn on_done(&self, from: PeerId, id: ObjectId, outcome: Outcome) {
        tracing::trace!(%from, %id, "done");
        let keep;
        let parked = {
            let mut results = lock(&self.results);
            let Some(p) = results.get_mut(&id) else {
                // Its promise was dropped meanwhile (or this is a duplicate).
                drop(results);
                if from != self.me {
                    self.unsent(from);
                }
                return;
            };
            if p.peer != from || !matches!(p.st, St::Waiting(_)) {
                return;
            }
            // A result that stays on its executor keeps its lineage (how to
            // run the task again, and its arguments alive) while the promise
            // lives, to rebuild it if that node is lost (`rebuild`).
            let lineage = matches!(outcome, Outcome::Stays(_))
                && p.retry.as_ref().is_some_and(|r| r.args.len() <= MAX_LINEAGE_ARGS);
            // Dropped after the lock: the last ref to an argument may be a
            // promise whose drop comes back here (`promise_dropped`).
            keep = if lineage { Vec::new() } else { std::mem::take(&mut p.keep) };
            if !lineage {
                p.retry = None;
            }
            match std::mem::replace(&mut p.st, St::Done(outcome.clone())) {
                St::Waiting(f) => f,
                St::Done(_) => None,
            }
        };
        drop(keep);
        self.settled.notify_all();
        if from != self.me {
            self.unsent(from);
        }
        if let Some(f) = parked {
            if let Some((f, peer)) = deliver(f, &outcome, from) {
                self.fetch_from(f, peer);
            }
        }
    }

    /// Completes a result with an error (no retry left).
    pub fn fail(&self, id: ObjectId, e: Error) {
        let outcome = Outcome::Failed((&e).into());
        let keep;
        let (peer, parked) = {
            let mut results = lock(&self.results);
            let Some(p) = results.get_mut(&id) else { return };
            keep = std::mem::take(&mut p.keep); // dropped after the lock (see `on_done`)
            p.retry = None;
            match std::mem::replace(&mut p.st, St::Done(outcome.clone())) {
                St::Waiting(f) => (p.peer, f),
                St::Done(prev) => {
                    p.st = St::Done(prev);
                    drop(results);
                    return;
                }
            }
        };
        drop(keep);
        self.settled.notify_all();
        if peer != self.me {
            self.unsent(peer);
        }
        if let Some(f) = parked {
            deliver(f, &outcome, peer);
        }
    }

    /// A fetch for `fetch.id()`: if it is one of our results, it is filled
    /// from (or parked in) its entry and `None` is returned; otherwise it is
    /// handed back with the peer to try first, if any.
    pub fn intercept(&self, fetch: Fetch) -> Option<(Fetch, Option<PeerId>)> {
        let id = fetch.id();
        let (outcome, from, local) = {
            let mut results = lock(&self.results);
            let Some(p) = results.get_mut(&id) else { return Some((fetch, None)) };
            match &mut p.st {
                St::Waiting(slot) => {
                    *slot = Some(fetch);
                    return None;
                }
                St::Done(o) => (o.clone(), p.peer, p.local.clone()),
            }
        };
        if let (Outcome::Stays(_), Some(local)) = (&outcome, local) {
            // It ran here after all: read our own copy.
            let r = match self.rt.backend().serve_object(local.id(), 0, usize::MAX) {
                manta::backend::Served::Chunk { data, .. } => {
                    fetch.decode(&mut &data[..]).map_err(|m| Error::ObjectLost { id, reason: m.to_string().into() })
                }
                manta::backend::Served::Failed(e) => Err(e),
                _ => Err(Error::ObjectLost { id, reason: "the local copy is gone".into() }),
            };
            fetch.complete(r);
            return None;
        }
        deliver(fetch, &outcome, from).map(|(f, p)| (f, Some(p)))
    }

    /// A fetch of `fetch.id()` found no holder (`why`). If it is one of our
    /// task results that stayed on its executor and kept its lineage, the
    /// task is placed again under the same id (not on that executor), the
    /// fetch waits for the new `Done`, and `None` is returned (Ray's object
    /// reconstruction). Otherwise the fetch is handed back to fail.
    pub fn rebuild(self: &Arc<Self>, fetch: Fetch, why: &Error) -> Option<Fetch> {
        let id = fetch.id();
        let lost = {
            let mut results = lock(&self.results);
            let Some(p) = results.get_mut(&id) else { return Some(fetch) };
            let rebuildable = matches!(p.st, St::Done(Outcome::Stays(_))) && p.local.is_none();
            let Some(retry) = p.retry.as_mut().filter(|_| rebuildable) else { return Some(fetch) };
            retry.excluded.push(p.peer);
            p.st = St::Waiting(Some(fetch));
            p.peer
        };
        tracing::info!(object = %id, executor = %lost, %why, "result lost: running its task again");
        if self.is_live_peer(lost) {
            // It may still hold a copy we cannot reach: let it go.
            self.send(lost, Mail::Release(vec![serde_bytes::ByteArray::new(id.to_bytes())]));
        }
        self.replace(id, None);
        None
    }

    /// Starts a fetch from `peer` on the node's runtime.
    pub fn fetch_from(&self, fetch: Fetch, peer: PeerId) {
        if let Some(b) = self.rt.backend().attached() {
            if let Some(b) = b.as_any().downcast_ref::<crate::node::Backend>() {
                b.start_fetch(fetch, Some(peer));
            }
        }
    }

    /// True if `id` is one of our results not held here yet (a peer asks
    /// for it: it is fetched first, then served).
    pub fn prefetch_result(&self, id: ObjectId) -> bool {
        if !lock(&self.results).contains_key(&id) {
            return false;
        }
        if let Some(r) = self.rt.backend().pin_object(id) {
            r.prefetch();
        }
        true
    }

    /// Our promise `id` was dropped: forget it and let the executor unpin.
    pub fn promise_dropped(&self, id: ObjectId) -> bool {
        let Some(p) = lock(&self.results).remove(&id) else { return false };
        if p.peer != self.me {
            // (If it is not done, it counts as sent until its `Done` comes.)
            self.send(p.peer, Mail::Release(vec![serde_bytes::ByteArray::new(id.to_bytes())]));
        }
        true
    }

    /// A submission was refused as busy: place it again (another peer, or
    /// here), or fail it after `max_hops`.
    pub fn replace(self: &Arc<Self>, id: ObjectId, busy: Option<PeerId>) {
        let (retry, keep) = {
            let mut results = lock(&self.results);
            let Some(p) = results.get_mut(&id) else { return };
            let Some(mut r) = p.retry.take() else { return };
            if !matches!(p.st, St::Waiting(_)) {
                return;
            }
            r.hops += 1;
            r.excluded.extend(busy);
            (r, std::mem::take(&mut p.keep))
        };
        if let Some(peer) = busy {
            self.unsent(peer);
        }
        if let Some(peer) = retry.pinned {
            // Only that node may run it: ask it again after a pause.
            if !self.is_live_peer(peer) {
                let e = Error::PeerUnreachable {
                    id,
                    reason: format!("node {peer} (which the task was pinned to) is gone").into(),
                };
                return self.fail(id, e);
            }
            let w = Arc::downgrade(self);
            let pause = Duration::from_millis((1u64 << retry.hops.min(7)).min(100));
            if let Some(h) = self.handle.get() {
                h.spawn(async move {
                    tokio::time::sleep(pause).await;
                    if let Some(w) = w.upgrade() {
                        w.submit_to(peer, id, Retry { excluded: Vec::new(), ..retry }, keep);
                    }
                });
            }
            return;
        }
        let place = if retry.hops > self.cfg.max_hops {
            Place::Local
        } else {
            let excluded = retry.excluded.clone();
            self.place(&retry.need, &keep, &excluded)
        };
        match place {
            Place::Peer(peer) => self.submit_to(peer, id, retry, keep),
            Place::Local => self.run_here(id, retry, keep),
            Place::Infeasible { resource, requested, most } => {
                let task = retry.opts.name.clone().unwrap_or_else(|| retry.func.clone());
                self.fail(
                    id,
                    Error::Infeasible { task: task.into(), resource: resource.into(), requested, total: most },
                )
            }
        }
    }

    /// Runs a task placed elsewhere here after all; its outcome fills the
    /// promise like a `Done` from ourselves.
    fn run_here(self: &Arc<Self>, id: ObjectId, retry: Retry, keep: Vec<AnyRef>) {
        let old = {
            let mut results = lock(&self.results);
            let Some(p) = results.get_mut(&id) else { return };
            p.peer = self.me;
            std::mem::replace(&mut p.keep, keep)
        };
        drop(old); // after the lock (see `on_done`)
        let Some((_, run)) = self.registry.functions.get(retry.func.as_str()) else {
            let reason = format!("not registered on node {}", self.me);
            return self.fail(id, Error::UnknownFunction { name: retry.func.as_str().into(), reason: reason.into() });
        };
        let w = Arc::downgrade(self);
        let on_done: crate::registry::OnDone = Box::new(move |res| {
            if let Some(w) = w.upgrade() {
                let me = w.me;
                w.on_done(me, id, crate::exec::outcome_of(res));
            }
        });
        let opts = crate::exec::run_opts(&retry.opts);
        match run(&self.rt, &retry.args, &opts, ObjectId::fresh(), Some(on_done)) {
            Ok(out) => {
                if let Some(p) = lock(&self.results).get_mut(&id) {
                    p.local = Some(out);
                }
            }
            Err(reason) => {
                self.fail(id, Error::InvalidArgument(reason.into()));
            }
        }
    }

    /// A peer died: its pins and actors go; work sent to it is placed
    /// again (tasks) or fails (actor calls); actors we created there are
    /// restarted elsewhere if they have restarts left.
    pub fn peer_died(self: &Arc<Self>, peer: PeerId) {
        // What goes is dropped after the locks: dropping a ref or an actor
        // may call back into the node.
        let pins: Vec<Pin> = {
            let mut all = lock(&self.pins);
            let keys: Vec<_> = all.keys().filter(|(p, _)| *p == peer).copied().collect();
            keys.iter().filter_map(|k| all.remove(k)).collect()
        };
        drop(pins);
        let actors: Vec<Hosted> = {
            let mut all = lock(&self.actors);
            let keys: Vec<_> = all
                .iter()
                .filter(|(_, h)| matches!(h, Hosted::Live { owner, .. } if *owner == peer))
                .map(|(k, _)| *k)
                .collect();
            keys.iter().filter_map(|k| all.remove(k)).collect()
        };
        drop(actors);
        if let Some(b) = self.boxes.get() {
            b.forget(peer);
        }
        let lost: Vec<(ObjectId, Option<String>)> = lock(&self.results)
            .iter()
            .filter(|(_, p)| p.peer == peer && matches!(p.st, St::Waiting(_)))
            .map(|(id, p)| (*id, p.actor.clone()))
            .collect();
        lock(&self.sent).remove(&peer);
        for (id, actor) in lost {
            match actor {
                Some(actor) => {
                    let reason = format!("its node {peer} died");
                    self.fail(id, Error::ActorDead { actor: actor.into(), reason: reason.into() });
                }
                None => self.replace(id, Some(peer)),
            }
        }
        crate::actor::restart_lost(self, peer);
    }
}

impl Handler for Arc<Work> {
    fn on_mail(&self, from: PeerId, mail: Vec<Mail>) -> mail::Ack {
        self.apply(from, mail)
    }

    fn on_ack(&self, to: PeerId, sent: Vec<Mail>, ack: mail::Ack) {
        if let Some(why) = &ack.invalid {
            tracing::error!(peer = %to, %why, "a peer refused our mail batch as invalid");
            return self.on_undeliverable(to, sent, why.clone());
        }
        let mut busy_calls = Vec::new();
        for (i, refusal) in ack.refused {
            if let (Some(m @ Mail::Call { .. }), mail::Refusal::Busy) = (sent.get(i as usize), &refusal) {
                busy_calls.push(m.clone());
                continue;
            }
            let Some(Mail::Submit { id, func, .. }) = sent.get(i as usize) else { continue };
            let id = ObjectId::from_bytes(*id);
            match refusal {
                mail::Refusal::Busy => self.replace(id, Some(to)),
                mail::Refusal::Refused(e) => {
                    tracing::debug!(peer = %to, %func, "submission refused");
                    self.unsent(to);
                    // `fail` would not count it again: it is no longer sent.
                    let mut e: Error = e.into();
                    if let Error::UnknownFunction { name, reason } = &e {
                        e = Error::UnknownFunction {
                            name: name.clone(),
                            reason: format!("{reason} (node {to})").into(),
                        };
                    }
                    self.fail_unsent(id, e);
                }
            }
        }
        if !busy_calls.is_empty() {
            // The actor's node is full: the calls go again, in order, soon.
            if let Some(b) = self.boxes.get() {
                b.retry_front(to, busy_calls, CALL_RETRY_PAUSE);
            }
        }
    }

    fn on_undeliverable(&self, to: PeerId, sent: Vec<Mail>, why: String) {
        tracing::debug!(peer = %to, %why, n = sent.len(), "mail undeliverable");
        for m in sent {
            match m {
                Mail::Submit { id, .. } => self.replace(ObjectId::from_bytes(id), Some(to)),
                Mail::Call { id, .. } => {
                    let id = ObjectId::from_bytes(id);
                    let e = Error::PeerUnreachable { id, reason: format!("actor host {to}: {why}").into() };
                    self.fail(id, e);
                }
                _ => {}
            }
        }
    }
}

impl Work {
    /// [`Work::fail`] for a submission no longer counted in `sent`.
    fn fail_unsent(&self, id: ObjectId, e: Error) {
        if let Some(p) = lock(&self.results).get_mut(&id) {
            p.peer = self.me; // so `fail` does not uncount it again
        }
        self.fail(id, e);
    }
}
