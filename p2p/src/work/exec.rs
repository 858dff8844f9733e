//! Remote work, executor side: applying the mail peers send (tasks to run,
//! actors to host and call, borrow counts) to this node's runtime.
//!
//! - `Submit`: refused `Busy` when this node already holds
//!   `max_accepted` tasks from peers, refused with `UnknownFunction` when
//!   the name is not registered here; otherwise run as a local task whose
//!   output has the submitter's id, exported, and pinned for the submitter
//!   until it releases it. Its `Done` goes back when it finishes.
//! - `NewActor` / `Call` / `DropActor`: actors hosted here, one mailbox
//!   each; calls from one peer arrive in the order sent (one stream per
//!   peer, applied in order), so they run in that order. Calls count with
//!   tasks against `max_accepted` until done; over it a call is refused
//!   `Busy`, and so is every later call of the batch to the same actor,
//!   so the caller resends them, in order, before anything newer.
//! - `Borrow` / `Release`: signed per-(peer, object) counts; while a count
//!   is positive the object is pinned. Counts may go negative when a
//!   release overtakes its borrow; they meet at zero either way.
//!
//! A task whose output id is already in this runtime (a reader here
//! borrowed its ref before the task was placed again here) runs under a
//! fresh id, pinned and served under the submitter's (`serve_as`).
//!
//! Invariants: a result made here for a peer is pinned for it from
//! acceptance until it releases it, so a resent submission or call (same
//! id, same peer) is recognised and not run twice; every piece of accepted
//! work gives its `accepted` slot back exactly once, when its `Done` goes.

use super::hosted::{Parked, ParkedCall};
use super::registry::{Finished, OnDone, RunOpts};
use super::Work;
use crate::cluster::placement::{self, Need};
use crate::wire::mail::{self, Ack, Completion, Mail, Refusal, RemoteError, Root};
use libp2p::PeerId;
use manta::{AnyRef, Error, ObjectId};
use std::time::Duration;

/// How long calls wait for their actor's creation.
const PARK_TIMEOUT: Duration = Duration::from_secs(10);

/// The completion message of a finished result.
pub(super) fn completion_of(res: Finished) -> Completion {
    match res {
        Ok(Ok(bytes)) => Completion::Inline(bytes),
        Ok(Err(size)) => Completion::Stays(size),
        Err(e) => Completion::Failed((&e).into()),
    }
}

/// Task options as the registry takes them.
pub(super) fn run_opts(o: &mail::Opts) -> RunOpts {
    RunOpts { cpus: o.cpus, resources: o.resources.clone(), retries: o.retries, name: o.name.clone() }
}

fn refused(root: Root) -> Refusal {
    Refusal::Refused(RemoteError { chain: Vec::new(), root })
}

fn actor_dead(actor: ObjectId, reason: impl Into<manta::Text>) -> Error {
    Error::ActorDead { actor: actor.to_string().into(), reason: reason.into() }
}

impl Work {
    /// Applies a batch from `from`, in order.
    pub(super) fn apply(&self, from: PeerId, mail: Vec<Mail>) -> Ack {
        let mut ack = Ack::default();
        // Actors a call of this batch found this node full for: their
        // later calls are refused too, so the caller resends them in order.
        let mut full: Vec<[u8; 16]> = Vec::new();
        for (i, m) in mail.into_iter().enumerate() {
            match m {
                Mail::Submit { id, func, args, opts } => {
                    if let Err(r) = self.accept_task(from, ObjectId::from_bytes(id), &func, &args, &opts) {
                        ack.refused.push((i as u32, r));
                    }
                }
                Mail::Done { id, outcome } => self.on_done(from, ObjectId::from_bytes(id), outcome),
                Mail::Borrow(ids) => {
                    ids.iter().for_each(|id| self.pin_delta(from, ObjectId::from_bytes(**id), 1, None))
                }
                Mail::Release(ids) => {
                    ids.iter().for_each(|id| self.pin_delta(from, ObjectId::from_bytes(**id), -1, None))
                }
                Mail::NewActor { actor, class, args, opts } => {
                    self.host_actor(from, ObjectId::from_bytes(actor), &class, &args, &opts)
                }
                Mail::Call { actor, method, args, id } => {
                    let known = self.duplicate(from, ObjectId::from_bytes(id));
                    if !known && (full.contains(&actor) || self.accepted.is_full()) {
                        full.push(actor);
                        ack.refused.push((i as u32, Refusal::Busy));
                        continue;
                    }
                    self.call_hosted(from, ObjectId::from_bytes(actor), &method, &args, ObjectId::from_bytes(id));
                }
                Mail::DropActor(actor) => self.drop_hosted(ObjectId::from_bytes(actor)),
                // The outbox takes these out before a batch is applied.
                Mail::Seq(_) | Mail::Acked(_) => {}
            }
        }
        ack
    }

    /// Sends `Done` to `to` (or applies it, for our own work).
    fn send_done(&self, to: PeerId, id: ObjectId, completion: Completion) {
        if to == self.me {
            self.on_done(to, id, completion);
        } else {
            // Fenced: the borrows made while decoding its arguments reach
            // their owners before the submitter lets the arguments go.
            self.send_fenced(to, Mail::Done { id: id.to_bytes(), outcome: completion });
        }
    }

    /// Sends the result's `Done` to `to` when it finishes; the work (a task
    /// or call from a peer) leaves the accepted count then.
    fn on_done_to(&self, to: PeerId, id: ObjectId) -> OnDone {
        let w = self.this.clone();
        Box::new(move |res| {
            let Some(w) = w.upgrade() else { return };
            w.accepted.release();
            w.send_done(to, id, completion_of(res));
        })
    }

    /// True if `from` already sent `id` (a resent submission or call: its
    /// output is pinned for `from` from acceptance until released).
    fn duplicate(&self, from: PeerId, id: ObjectId) -> bool {
        self.pins.holds(from, id)
    }

    /// Pins a result made here for `from` (one count, as a borrow).
    fn pin_result(&self, from: PeerId, out: AnyRef) {
        self.pin_delta(from, out.id(), 1, Some(out));
    }

    /// The id under which object `id` is served here: itself, or the
    /// output of a task that ran here under a fresh id because `id` was
    /// taken (see `accept_task`).
    pub(crate) fn serve_as(&self, id: ObjectId) -> ObjectId {
        self.aliases.get(id, |out| self.rt.backend().pin_object(out).is_some())
    }

    fn accept_task(
        &self,
        from: PeerId,
        id: ObjectId,
        func: &str,
        args: &[u8],
        opts: &mail::Opts,
    ) -> Result<(), Refusal> {
        tracing::trace!(%from, %id, func, "task from a peer");
        if self.duplicate(from, id) {
            return Ok(());
        }
        let Some(run) = self.registry.function_named(func) else {
            let reason = format!("not registered on node {}", self.me);
            return Err(refused(Root::UnknownFunction { name: func.into(), reason }));
        };
        if !self.accepted.try_take() {
            return Err(Refusal::Busy);
        }
        self.traffic.task_received();
        // The id may be here already: a ref to this very result borrowed
        // by a task here (a task placed again after its node died, landing
        // where a reader waits for it). It then runs under a fresh id and
        // is served as `id` (`serve_as`).
        let out_id = if self.rt.backend().pin_object(id).is_some() { ObjectId::fresh() } else { id };
        match run(&self.rt, args, &run_opts(opts), out_id, Some(self.on_done_to(from, id))) {
            Ok(out) => {
                if out_id != id {
                    self.aliases.insert(id, out_id);
                }
                self.pin_delta(from, id, 1, Some(out));
                // Small objects nested in the arguments: fetch them now,
                // together (they are in this runtime since the decoding).
                for id in &opts.prefetch {
                    if let Some(r) = self.rt.backend().pin_object(ObjectId::from_bytes(**id)) {
                        r.prefetch();
                    }
                }
                Ok(())
            }
            Err(e) => {
                self.accepted.release();
                Err(refused(Root::Other(e.to_string())))
            }
        }
    }

    /// Creates an actor hosted here for `from` (a failure is kept, and
    /// reported to every call).
    pub(super) fn host_actor(&self, from: PeerId, actor: ObjectId, class: &str, args: &[u8], opts: &mail::Opts) {
        let label = opts.name.clone().unwrap_or_else(|| format!("{class}@{actor}"));
        let need = Need { cpus: opts.cpus, resources: opts.resources.clone() };
        let totals: Vec<(String, f64)> =
            self.rt.resources().into_iter().map(|(n, total, _)| (n.to_string(), total)).collect();
        let short = placement::short(&need, &totals);
        let made = match self.registry.class_named(class) {
            // This node cannot host it (pinned here, or its creator's view
            // was stale): `Infeasible`, like a task, not a dead actor.
            _ if short.is_some() => {
                let (resource, requested) = short.unwrap_or_default();
                let total = totals.iter().filter(|(n, _)| *n == resource).map(|(_, t)| *t).sum();
                Err(Error::Infeasible { task: label.as_str().into(), resource: resource.into(), requested, total })
            }
            None => Err(actor_dead(actor, format!("actor type `{class}` is not registered on node {}", self.me))),
            Some(make) => make(&self.rt, args, &run_opts(opts), &label)
                .map_err(|e| actor_dead(actor, format!("actor `{label}` could not be created: {e}"))),
        };
        let named = made.is_ok().then(|| opts.name.clone()).flatten();
        let waiting = self.hosted.created(actor, from, made);
        if let Some(name) = named {
            self.publish_name(&name, actor, class);
        }
        for c in waiting {
            self.call_hosted(c.from, actor, &c.method, &c.args, c.id);
        }
    }

    /// Records an actor hosted here that could not be created (`e` is what
    /// every call gets).
    pub(super) fn host_failed(&self, actor: ObjectId, e: Error) {
        for c in self.hosted.created(actor, self.me, Err(e)) {
            self.call_hosted(c.from, actor, &c.method, &c.args, c.id);
        }
    }

    /// Ends an actor hosted here (its creator dropped its handle).
    pub(super) fn drop_hosted(&self, actor: ObjectId) {
        for c in self.hosted.dropped(actor) {
            let e = actor_dead(actor, "it was dropped before it was created");
            self.send_done(c.from, c.id, Completion::Failed((&e).into()));
        }
    }

    /// Parks a call for an actor not created yet (starting the creation
    /// timeout with the first one).
    fn park(&self, actor: ObjectId, call: ParkedCall) -> Parked {
        let parked = self.hosted.park(actor, call);
        if let Parked::Waiting { first: true } = parked {
            let w = self.this.clone();
            self.tokio.spawn(async move {
                tokio::time::sleep(PARK_TIMEOUT).await;
                if let Some(w) = w.upgrade() {
                    w.creation_timed_out(actor);
                }
            });
        }
        parked
    }

    /// Fails the calls still waiting for `actor`'s creation.
    fn creation_timed_out(&self, actor: ObjectId) {
        for c in self.hosted.expire(actor) {
            let reason = format!("no actor {actor} was created on node {} within {PARK_TIMEOUT:?}", self.me);
            self.send_done(c.from, c.id, Completion::Failed((&actor_dead(actor, reason)).into()));
        }
    }

    /// Runs a call from peer `from` on an actor hosted here; a failure is
    /// reported to the caller by `Done`.
    fn call_hosted(&self, from: PeerId, actor: ObjectId, method: &str, args: &[u8], id: ObjectId) {
        if self.duplicate(from, id) {
            return;
        }
        if self.hosted.awaits_creation(actor) {
            let call = ParkedCall { from, method: method.to_string(), args: args.to_vec(), id };
            match self.park(actor, call) {
                Parked::Waiting { .. } => return,
                Parked::Full(c) => {
                    let e = actor_dead(actor, "too many calls wait for its creation");
                    return self.send_done(c.from, c.id, Completion::Failed((&e).into()));
                }
                Parked::Exists => {} // created meanwhile: call it now
            }
        }
        // Counted like a task from a peer until it is done.
        self.accepted.take();
        self.traffic.call_received();
        match self.try_call(actor, method, args, id, Some(self.on_done_to(from, id))) {
            Ok(out) => self.pin_result(from, out),
            Err(e) => {
                self.accepted.release();
                self.send_done(from, id, Completion::Failed((&e).into()))
            }
        }
    }

    /// Runs a call on an actor hosted here; its output, or why it could
    /// not be made.
    pub(super) fn try_call(
        &self,
        actor: ObjectId,
        method: &str,
        args: &[u8],
        id: ObjectId,
        on_done: Option<OnDone>,
    ) -> Result<AnyRef, Error> {
        let Some(call) = self.registry.method_named(method) else {
            let reason = format!("not registered on node {}", self.me);
            return Err(Error::UnknownFunction { name: method.into(), reason: reason.into() });
        };
        self.hosted.call(actor, self.me, |handle| {
            call(handle, &self.rt, args, id, on_done).map_err(|e| Error::InvalidArgument(e.to_string().into()))
        })
    }

    /// Applies a borrow (+1) or release (-1) of `id` by `from`; `known` is
    /// the object if the caller has it (else it is looked up to pin it).
    /// Counts from this node itself are not kept (the caller holds its ref).
    fn pin_delta(&self, from: PeerId, id: ObjectId, delta: i64, known: Option<AnyRef>) {
        if from == self.me {
            return;
        }
        self.pins.delta(from, id, delta, known, |id| self.rt.backend().pin_object(id));
    }
}
