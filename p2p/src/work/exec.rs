//! Remote work, executor side: applying the mail peers send (tasks to run,
//! actors to host and call, borrow counts) to this node's runtime.
//!
//! - `Submit`: refused `Busy` when this node already holds
//!   `max_accepted` tasks from peers (or the submitter its share: half of
//!   them, or 256 MiB of arguments), refused with `UnknownFunction` when
//!   the name is not registered here; otherwise run as a local task whose
//!   output has the submitter's id, exported, and pinned for the submitter
//!   until it releases it; a submitter's tasks beyond one per worker thread
//!   run at `Low` priority (a flood waits behind other peers' tasks). Its
//!   `Done` goes back when it finishes. A submitter this node has declared
//!   dead is refused `Busy` too (it placed the task elsewhere), until its
//!   heartbeat revives it here: a healed partition revives each side at
//!   its own time, and the task would read its arguments from an owner
//!   this node still takes for dead (they would fail with `OwnerDied`).
//! - `NewActor` / `Call` / `DropActor`: actors hosted here, one mailbox
//!   each; calls from one peer arrive in the order sent (one stream per
//!   peer, applied in order), so they run in that order. Calls count with
//!   tasks against `max_accepted` until done; over it a call is refused
//!   `Busy`, and so is every later call of the batch to the same actor,
//!   so the caller resends them, in order, before anything newer.
//! - `retries` from the wire is capped at [`MAX_WIRE_RETRIES`].
//! - `Borrow` / `Release`: per-(peer, object) counts of objects that
//!   exist here, capped per peer; while a count is positive the object is
//!   pinned (see `pins`).
//! - Actors: see `hosted` (only their creator creates, restarts or drops
//!   them; a creation never replaces an id; actors per peer are capped).
//!
//! Result ids: a submitter (or caller) chooses its result's id, so that
//! its ref and the object match without a round trip (the remote-task
//! fast path). The id is scoped to the submitter: the result is pinned
//! under `(submitter, id)`, and it takes the id in this runtime only if
//! the id is free here. If an entry exists, the output is made under a
//! fresh id instead, so no task or call output ever replaces an entry
//! (an object this node owns, a replica or an import):
//! - the entry holds no value yet (a reader here borrowed the ref before
//!   the task was placed again here): the output is served as `id`
//!   (`serve_as`) to the submitter only, while that entry still holds no
//!   value;
//! - the entry holds a value: it stays what is served as `id`; the output
//!   is only the submitter's (its completion, inline or read by the
//!   submitter's id, which keeps serving the held value).
//!
//! So a peer that submits a task whose id is an object held here cannot
//! make this node serve (or announce) anything else under that id.
//!
//! Invariants: a result made here for a peer is pinned for it from
//! acceptance until it releases it, so a resent submission or call (same
//! id, same peer) is recognised and not run twice; every piece of accepted
//! work gives its `accepted` slot back exactly once, when its `Done` goes.

use super::hosted::{Parked, ParkedCall, Refused};
use super::registry::{Finished, OnDone, RunOpts};
use super::Work;
use crate::cluster::placement::{self, Need};
use crate::probe::{self, Stage};
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

/// Most retries (of a task) or restarts (of an actor) a peer's options
/// may ask for: beyond, they are capped to this.
pub const MAX_WIRE_RETRIES: u32 = 16;

/// Task options as the registry takes them (`retries` capped at
/// [`MAX_WIRE_RETRIES`]).
pub(super) fn run_opts(o: &mail::Opts) -> RunOpts {
    let retries = o.retries.min(MAX_WIRE_RETRIES);
    RunOpts {
        priority: manta::Priority::Normal,
        cpus: o.cpus,
        resources: o.resources.clone(),
        retries,
        name: o.name.clone(),
    }
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
        // Whether this node takes the sender for dead: looked up once per
        // batch (its tasks are refused busy, see the module docs).
        let dead = mail.iter().any(|m| matches!(m, Mail::Submit { .. })) && self.is_dead_peer(from);
        for (i, m) in mail.into_iter().enumerate() {
            match m {
                Mail::Submit { id, func, args, opts } => {
                    let task = (ObjectId::from_bytes(id), func.as_str(), args.as_slice(), &opts);
                    if let Err(r) = self.accept_task(from, dead, task) {
                        ack.refused.push((i as u32, r));
                    }
                    probe::mark(Stage::TaskAccepted);
                }
                Mail::Done { id, outcome } => self.on_done(from, ObjectId::from_bytes(id), outcome),
                Mail::Borrow(ids) => {
                    ids.iter().for_each(|id| self.pin_delta(from, ObjectId::from_bytes(**id), 1, None))
                }
                Mail::Release(ids) => {
                    ids.iter().for_each(|id| self.pin_delta(from, ObjectId::from_bytes(**id), -1, None))
                }
                Mail::NewActor { actor, class, args, opts } => {
                    if let Err(r) = self.host_actor(from, ObjectId::from_bytes(actor), &class, &args, &opts) {
                        ack.refused.push((i as u32, r));
                    }
                }
                Mail::Call { actor, method, args, id } => {
                    let known = self.duplicate(from, ObjectId::from_bytes(id));
                    if !known && (full.contains(&actor) || !self.accepted.has_room(from, args.len())) {
                        full.push(actor);
                        ack.refused.push((i as u32, Refusal::Busy));
                        continue;
                    }
                    self.call_hosted(from, ObjectId::from_bytes(actor), &method, &args, ObjectId::from_bytes(id));
                }
                Mail::DropActor(actor) => self.drop_hosted(from, ObjectId::from_bytes(actor)),
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
    /// or call from a peer) leaves the accepted count then. `span` (the
    /// work's `manta_p2p.run_task` or `manta_p2p.run_call`) lives until
    /// then, and says `what` ran (with how long, if it is on).
    fn on_done_to(
        &self,
        to: PeerId,
        id: ObjectId,
        bytes: usize,
        (span, what): (tracing::Span, &'static str),
    ) -> OnDone {
        let w = self.this.clone();
        let started = (!span.is_disabled()).then(std::time::Instant::now);
        Box::new(move |res| {
            probe::mark(Stage::TaskRan);
            if let Some(started) = started {
                let ms = started.elapsed().as_secs_f64() * 1e3;
                span.in_scope(|| tracing::trace!(ok = res.is_ok(), ms, "{what}"));
            }
            let Some(w) = w.upgrade() else { return };
            w.accepted.release(to, bytes);
            w.send_done(to, id, completion_of(res));
            probe::mark(Stage::DoneQueued);
        })
    }

    /// True if `from` already sent `id` (a resent submission or call: its
    /// output is pinned for `from` from acceptance until released).
    fn duplicate(&self, from: PeerId, id: ObjectId) -> bool {
        self.pins.holds(from, id)
    }

    /// Pins a result made here for `from` under its id `id` (one count,
    /// as a borrow).
    fn pin_result(&self, from: PeerId, id: ObjectId, out: AnyRef) {
        self.pin_delta(from, id, 1, Some(out));
    }

    /// The id under which object `id` is served here: itself, or the
    /// output of a task that ran here under a fresh id because `id` was
    /// taken by an entry holding no value yet (see the module header).
    pub(crate) fn serve_as(&self, id: ObjectId, peer: PeerId) -> ObjectId {
        let backend = self.rt.backend();
        let out = self.aliases.get(id, peer, |out| backend.pin_object(out).is_some());
        // (Only for an aliased id, rare: a second lookup.)
        if out != id && backend.pin_object(id).is_some_and(|r| r.is_ready()) {
            return id;
        }
        out
    }

    /// The id the result a peer asked for under `id` is made under here:
    /// `id` if it is free in this runtime, else a fresh one (and whether
    /// it may be served as `id`: only if `id`'s entry holds no value).
    fn result_id(&self, id: ObjectId) -> (ObjectId, bool) {
        match self.rt.backend().pin_object(id) {
            None => (id, false),
            Some(r) => (ObjectId::fresh(), !r.is_ready()),
        }
    }

    /// Accepts task `(id, func, args, opts)` from `from` (`dead`: this node
    /// takes `from` for dead), or says why not.
    fn accept_task(
        &self,
        from: PeerId,
        dead: bool,
        (id, func, args, opts): (ObjectId, &str, &[u8], &mail::Opts),
    ) -> Result<(), Refusal> {
        let span = tracing::trace_span!("manta_p2p.run_task", %from, object = %id, func);
        let _entered = span.enter();
        tracing::trace!("task from a peer");
        if self.duplicate(from, id) {
            return Ok(());
        }
        if dead {
            tracing::debug!(%from, %id, func, "task from a peer declared dead here: refused busy");
            return Err(Refusal::Busy);
        }
        let Some(run) = self.registry.function_named(func) else {
            let reason = format!("not registered on node {}", self.me);
            return Err(refused(Root::UnknownFunction { name: func.into(), reason }));
        };
        let Some(held) = self.accepted.try_take(from, args.len()) else {
            return Err(Refusal::Busy);
        };
        // Fair share: a peer's tasks beyond one per worker thread here wait behind
        // everyone else's (`Low`), so one peer's flood does not queue
        // ahead of another peer's few tasks.
        let mut opts_here = run_opts(opts);
        if held > self.rt.num_threads().max(1) {
            opts_here.priority = manta::Priority::Low;
        }
        self.traffic.task_received();
        // The id may be here already (see the module header): the task
        // then runs under a fresh id, never replacing the entry.
        let (out_id, alias) = self.result_id(id);
        let on_done = self.on_done_to(from, id, args.len(), (span.clone(), "ran remote task"));
        match run(&self.rt, args, &opts_here, out_id, Some(on_done)) {
            Ok(out) => {
                if alias {
                    self.aliases.insert(id, out_id, from);
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
                self.accepted.release(from, args.len());
                Err(refused(Root::Other(e.to_string())))
            }
        }
    }

    /// Creates an actor hosted here for `from`, its owner (a failure is
    /// kept, and reported to every call). Refused, with a debug line, if
    /// the id is taken (never replaced) or `from` owns
    /// `MAX_ACTORS_PER_PEER` actors here; a refusal over the cap is
    /// remembered so the calls for it fail with that cause.
    pub(super) fn host_actor(
        &self,
        from: PeerId,
        actor: ObjectId,
        class: &str,
        args: &[u8],
        opts: &mail::Opts,
    ) -> Result<(), Refusal> {
        if let Err(r) = self.hosted.may_create(actor, from, self.me) {
            return Err(self.creation_refused(from, actor, r));
        }
        let label = opts.name.clone().unwrap_or_else(|| format!("{class}@{actor}"));
        let need = Need { cpus: opts.cpus, resources: opts.resources.clone() };
        let totals = self.totals();
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
        let waiting = match self.hosted.created(actor, from, self.me, made) {
            Ok(waiting) => waiting,
            Err(r) => return Err(self.creation_refused(from, actor, r)),
        };
        if let Some(name) = named {
            self.publish_name(&name, actor, class);
        }
        for c in waiting {
            self.call_hosted(c.from, actor, &c.method, &c.args, c.id);
        }
        Ok(())
    }

    /// Logs a refused creation (remembering one over the cap, failing the
    /// calls that waited for it); the refusal for the creator's ack.
    fn creation_refused(&self, from: PeerId, actor: ObjectId, r: Refused) -> Refusal {
        tracing::debug!(%from, %actor, reason = %r, "actor creation refused");
        let e = actor_dead(actor, format!("its creation was refused by node {}: {r}", self.me));
        if let Refused::TooMany { .. } = r {
            for c in self.hosted.refused(actor, e.clone()) {
                self.send_done(c.from, c.id, Completion::Failed((&e).into()));
            }
        }
        refused(Root::ActorDead { actor: actor.to_string(), reason: e.to_string() })
    }

    /// Records an actor hosted here that could not be created (`e` is what
    /// every call gets).
    pub(super) fn host_failed(&self, actor: ObjectId, e: Error) {
        match self.hosted.created(actor, self.me, self.me, Err(e)) {
            Ok(waiting) => {
                for c in waiting {
                    self.call_hosted(c.from, actor, &c.method, &c.args, c.id);
                }
            }
            Err(r) => tracing::debug!(%actor, reason = %r, "a failed actor was not recorded"),
        }
    }

    /// Ends an actor hosted here if `from` created it (its creator dropped
    /// its handle); anyone else's drop is ignored, with a debug line.
    pub(super) fn drop_hosted(&self, from: PeerId, actor: ObjectId) {
        if !self.hosted.dropped(actor, from) {
            tracing::debug!(%from, %actor, "a drop of an actor this peer did not create here was ignored");
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
    /// A `manta_p2p.run_call` span (trace) until the call is done.
    fn call_hosted(&self, from: PeerId, actor: ObjectId, method: &str, args: &[u8], id: ObjectId) {
        let span = tracing::trace_span!("manta_p2p.run_call", %from, %actor, method, object = %id);
        let _entered = span.enter();
        if self.duplicate(from, id) {
            return;
        }
        if self.hosted.awaits_creation(actor) {
            let call = ParkedCall { from, method: method.to_string(), args: args.to_vec(), id };
            match self.park(actor, call) {
                Parked::Waiting { .. } => return,
                Parked::Full(c) => {
                    let e =
                        actor_dead(actor, "too many calls wait for its creation (for this actor, or from this peer)");
                    return self.send_done(c.from, c.id, Completion::Failed((&e).into()));
                }
                Parked::Exists => {} // created meanwhile: call it now
            }
        }
        // Counted like a task from a peer until it is done.
        self.accepted.take(from, args.len());
        self.traffic.call_received();
        // As for a task: never under an id taken here.
        let (out_id, alias) = self.result_id(id);
        let on_done = self.on_done_to(from, id, args.len(), (span.clone(), "ran remote call"));
        match self.try_call(actor, method, args, out_id, Some(on_done)) {
            Ok(out) => {
                if alias {
                    self.aliases.insert(id, out_id, from);
                }
                self.pin_result(from, id, out)
            }
            Err(e) => {
                self.accepted.release(from, args.len());
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
        if !self.pins.delta(from, id, delta, known, |id| self.rt.backend().pin_object(id)) {
            tracing::trace!(%from, %id, delta, "borrow count not kept (no such object here, cap, or no count)");
        }
    }
}
