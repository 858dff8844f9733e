//! Cluster tasks: submitting a registered function on a clustered runtime,
//! with the same builder as a local task (`manta::TaskBuilder`).
//!
//! `node.spawn(&F, args)` (or `node.task(&F).cpus(..).spawn(args)`) returns
//! an `ObjectRef` at once, exactly like a local task: the task runs here
//! unless placement (`placement`) sends it to a peer, and either way its
//! errors flow through the graph. Arguments may be values or refs; refs
//! are read where the task runs (only there). Every ref in the arguments,
//! top-level or nested inside a value (a `Vec<ObjectRef<T>>`), is kept
//! alive by the submitter until the task is done (Ray's rule), so the
//! caller may drop its own handles right after `spawn`. Small objects
//! held here that are nested in argument values are named in the
//! submission, and the executor fetches them at once (in one batch per
//! holder) rather than one round trip per `get` as the task reads them.
//!
//! Invariant: `spawn` never blocks on the network and never fails: a task
//! that cannot be placed gives a ref whose `get` returns the typed error.

use super::args::{Args, Data, IntoArgs};
use super::registry::RemoteFn;
use super::results::Retry;
use super::Work;
use crate::cluster::placement::{Need, Place};
use crate::wire::mail::{Opts, MAX_ARGS_BYTES, MAX_PREFETCH};
use libp2p::PeerId;
use manta::{AnyRef, Error, ObjectId, ObjectRef};
use std::sync::Arc;

/// A cluster task being configured: `node.task(&F).cpus(2.0).spawn(args)`.
/// The options mirror `manta::TaskBuilder`'s, plus [`TaskBuilder::on`].
#[must_use = "a TaskBuilder does nothing until spawned"]
pub struct TaskBuilder<'n, A, R> {
    work: &'n Arc<Work>,
    f: &'n RemoteFn<A, R>,
    opts: Opts,
    pinned: Option<PeerId>,
}

impl<A, R> std::fmt::Debug for TaskBuilder<'_, A, R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TaskBuilder").field("function", &self.f.name()).field("on", &self.pinned).finish()
    }
}

impl<'n, A: Args, R: Data> TaskBuilder<'n, A, R> {
    pub(crate) fn new(work: &'n Arc<Work>, f: &'n RemoteFn<A, R>) -> Self {
        TaskBuilder { work, f, opts: Opts { cpus: 1.0, ..Opts::default() }, pinned: None }
    }

    /// Names the task (errors name it). Default: the registered name.
    pub fn name(mut self, name: &str) -> Self {
        self.opts.name = Some(name.to_string());
        self
    }

    /// CPUs the task holds while it runs (default 1).
    pub fn cpus(mut self, cpus: f64) -> Self {
        self.opts.cpus = cpus;
        self
    }

    /// An amount of a custom resource the task holds while it runs; only
    /// nodes that have it can run the task.
    pub fn resource(mut self, name: &str, amount: f64) -> Self {
        self.opts.resources.push((name.to_string(), amount));
        self
    }

    /// Runs after a panic, up to `n` more times (default 0). A task whose
    /// node dies is placed again whatever this says.
    pub fn retries(mut self, n: u32) -> Self {
        self.opts.retries = n;
        self
    }

    /// Runs the task on this node only (node affinity), bypassing
    /// placement. A busy node is asked again after a pause; a dead or
    /// unknown one fails the task with `PeerUnreachable`.
    pub fn on(mut self, peer: PeerId) -> Self {
        self.pinned = Some(peer);
        self
    }

    /// Submits the task; returns its result's ref at once. Every ref in
    /// `args`, nested ones too (a `Vec<ObjectRef<T>>`), is kept alive by
    /// this node until the task is done, so the caller may drop its own
    /// handles at once. A node with no CPUs of its own
    /// (`num_cpus(0)`) sends CPU tasks to its peers.
    pub fn spawn(self, args: impl IntoArgs<A>) -> ObjectRef<R> {
        spawn(self.work, self.f, args.into_args(), self.opts, self.pinned)
    }
}

fn spawn<A: Args, R: Data>(
    work: &Work,
    f: &RemoteFn<A, R>,
    wire: A::Wire,
    opts: Opts,
    pinned: Option<PeerId>,
) -> ObjectRef<R> {
    // Placement and sending (the placement line says where and why).
    let task = opts.name.as_deref().unwrap_or(f.name());
    let _span = tracing::trace_span!("manta_p2p.submit", task, func = f.name()).entered();
    let refs = A::refs(&wire);
    let need = Need { cpus: opts.cpus, resources: opts.resources.clone() };
    let place = match pinned {
        Some(p) if p == work.me() => Place::Local,
        Some(p) if !work.is_live_peer(p) => {
            let reason = format!("node {p} is not a live member running this program");
            return work.failed_promise(Error::PeerUnreachable { id: manta::ObjectId::fresh(), reason: reason.into() });
        }
        Some(p) => {
            tracing::debug!(task, to = %p, why = "pinned (.on)", "placed on a peer");
            Place::Peer(p)
        }
        None => work.place(&need, &refs, &[]),
    };
    let task = task.to_string();
    let peer = match place {
        Place::Peer(p) => p,
        Place::Infeasible { resource, requested, most } => {
            let e = Error::Infeasible { task: task.into(), resource: resource.into(), requested, total: most };
            return work.failed_promise(e);
        }
        Place::Local => return spawn_here(work, f, wire, &opts, task),
    };
    let mut args = Vec::new();
    // Every ref serialized into the arguments, nested ones too (a
    // `Vec<ObjectRef<T>>`): the submitter keeps them alive until the task
    // is done, so the caller may drop its own handles at once.
    let (encoded, keep) = manta::backend::collect_serialized(|| {
        let _entered = work.runtime().enter();
        ciborium::into_writer(&wire, &mut args)
    });
    if encoded.is_err() || args.len() > MAX_ARGS_BYTES {
        // Cannot travel (or too big to): run it here instead.
        drop(keep);
        return spawn_here(work, f, wire, &opts, task);
    }
    let mut opts = opts;
    opts.prefetch = prefetch_list(&refs, &keep);
    drop(refs);
    let retry = Retry { func: f.name().to_string(), args, opts, need, hops: 0, excluded: Vec::new(), pinned };
    work.submit_new(peer, retry, keep)
}

/// Largest object (bytes in this store) the executor is asked to fetch
/// before the task reads it.
const PREFETCH_BYTES: usize = 64 << 10;

/// The refs nested inside argument values (not the top-level ref
/// arguments, which the executor's scheduler waits for, and so fetches,
/// anyway) whose objects are done here and small: the executor fetches
/// them at once, in one batch per holder (`Opts::prefetch`).
fn prefetch_list(top: &[AnyRef], all: &[AnyRef]) -> Vec<serde_bytes::ByteArray<16>> {
    let top: std::collections::HashSet<ObjectId> = top.iter().map(|r| r.id()).collect();
    all.iter()
        .filter(|r| !top.contains(&r.id()) && r.stored_bytes().is_some_and(|b| b <= PREFETCH_BYTES))
        .map(|r| serde_bytes::ByteArray::new(r.id().to_bytes()))
        .take(MAX_PREFETCH)
        .collect()
}

fn spawn_here<A: Args, R: Data>(
    work: &Work,
    f: &RemoteFn<A, R>,
    wire: A::Wire,
    opts: &Opts,
    task: String,
) -> ObjectRef<R> {
    let func = f.func();
    let mut b = work.runtime().task().rerunnable().name(task).cpus(opts.cpus).retries(opts.retries);
    for (name, amount) in &opts.resources {
        b = b.resource(name, *amount);
    }
    b.spawn_with(wire, func)
}
