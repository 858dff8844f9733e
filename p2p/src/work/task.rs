//! Cluster tasks: submitting a registered function on a clustered runtime,
//! with the same builder as a local task (`manta::TaskBuilder`).
//!
//! `node.spawn(&F, args)` (or `node.task(&F).cpus(..).spawn(args)`) returns
//! an `ObjectRef` at once, exactly like a local task: the task runs here
//! unless placement (`placement`) sends it to a peer, and either way its
//! errors flow through the graph. Arguments may be values or refs; refs
//! are read where the task runs (only there), and the submitter keeps them
//! alive until the task is done.
//!
//! Invariant: `spawn` never blocks on the network and never fails: a task
//! that cannot be placed gives a ref whose `get` returns the typed error.

use super::args::{Args, Data, IntoArgs};
use super::registry::RemoteFn;
use super::results::Retry;
use super::Work;
use crate::cluster::placement::{Need, Place};
use crate::wire::mail::{Opts, MAX_ARGS_BYTES};
use libp2p::PeerId;
use manta::{Error, ObjectRef};
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

    /// Submits the task; returns its result's ref at once.
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
    let refs = A::refs(&wire);
    let need = Need { cpus: opts.cpus, resources: opts.resources.clone() };
    let place = match pinned {
        Some(p) if p == work.me() => Place::Local,
        Some(p) if !work.is_live_peer(p) => {
            let reason = format!("node {p} is not a live member running this program");
            return work.failed_promise(Error::PeerUnreachable { id: manta::ObjectId::fresh(), reason: reason.into() });
        }
        Some(p) => Place::Peer(p),
        None => work.place(&need, &refs, &[]),
    };
    let task = opts.name.clone().unwrap_or_else(|| f.name().to_string());
    let peer = match place {
        Place::Peer(p) => p,
        Place::Infeasible { resource, requested, most } => {
            let e = Error::Infeasible { task: task.into(), resource: resource.into(), requested, total: most };
            return work.failed_promise(e);
        }
        Place::Local => return spawn_here(work, f, wire, &opts, task),
    };
    let mut args = Vec::new();
    let encoded = {
        let _entered = work.runtime().enter();
        ciborium::into_writer(&wire, &mut args)
    };
    if encoded.is_err() || args.len() > MAX_ARGS_BYTES {
        // Cannot travel (or too big to): run it here instead.
        return spawn_here(work, f, wire, &opts, task);
    }
    let retry = Retry { func: f.name().to_string(), args, opts, need, hops: 0, excluded: Vec::new(), pinned };
    work.submit_new(peer, retry, refs)
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
