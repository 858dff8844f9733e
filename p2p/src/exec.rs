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
//! Invariant: a pin is dropped outside the pins lock (dropping the last
//! ref to an object runs the runtime's free path, which calls back into
//! the node).

use crate::mail::{self, Ack, Mail, Outcome, Refusal, RemoteError, Root};
use crate::registry::{OnDone, RunOpts};
use crate::work::{lock, Hosted, ParkedCall, Pin, Work};
use libp2p::PeerId;
use manta::{AnyRef, Error, ObjectId};
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// The completion message of a finished result.
pub(crate) fn outcome_of(res: Result<Result<Vec<u8>, u64>, Error>) -> Outcome {
    match res {
        Ok(Ok(bytes)) => Outcome::Inline(bytes),
        Ok(Err(size)) => Outcome::Stays(size),
        Err(e) => Outcome::Failed((&e).into()),
    }
}

/// Task options as the registry takes them.
pub(crate) fn run_opts(o: &mail::Opts) -> RunOpts {
    RunOpts { cpus: o.cpus, resources: o.resources.clone(), retries: o.retries, name: o.name.clone() }
}

/// Dropped actors remembered (so late calls fail at once).
const MAX_GONE: usize = 4096;
/// Calls that may wait for one actor's creation.
const MAX_PARKED: usize = 4096;
/// How long calls wait for their actor's creation.
const PARK_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

fn refused(root: Root) -> Refusal {
    Refusal::Refused(RemoteError { chain: Vec::new(), root })
}

impl Work {
    /// Applies a batch from `from`, in order.
    pub fn apply(self: &Arc<Self>, from: PeerId, mail: Vec<Mail>) -> Ack {
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
                    if !known
                        && (full.contains(&actor) || self.accepted.load(Ordering::Acquire) >= self.cfg.max_accepted)
                    {
                        full.push(actor);
                        ack.refused.push((i as u32, Refusal::Busy));
                        continue;
                    }
                    self.call_hosted(from, ObjectId::from_bytes(actor), &method, &args, ObjectId::from_bytes(id));
                }
                Mail::DropActor(actor) => self.drop_actor(ObjectId::from_bytes(actor)),
                // The outbox takes these out before a batch is applied.
                Mail::Seq(_) | Mail::Acked(_) => {}
            }
        }
        ack
    }

    /// Sends `Done` to `to` (or applies it, for our own work).
    fn send_done(&self, to: PeerId, id: ObjectId, outcome: Outcome) {
        if to == self.me {
            self.on_done(to, id, outcome);
        } else {
            self.send(to, Mail::Done { id: id.to_bytes(), outcome });
        }
    }

    /// Sends the result's `Done` to `to` when it finishes; the work (a task
    /// or call from a peer) leaves the accepted count then.
    fn on_done_to(self: &Arc<Self>, to: PeerId, id: ObjectId) -> OnDone {
        let w = Arc::downgrade(self);
        Box::new(move |res| {
            let Some(w) = w.upgrade() else { return };
            w.accepted.fetch_sub(1, Ordering::AcqRel);
            w.send_done(to, id, outcome_of(res));
        })
    }

    /// True if `from` already sent `id` (a resent submission or call: its
    /// output is pinned for `from` from acceptance until released).
    fn duplicate(&self, from: PeerId, id: ObjectId) -> bool {
        lock(&self.pins).get(&(from, id)).is_some_and(|p| p.held.is_some())
    }

    /// Pins a result made here for `from` (one count, as a borrow).
    fn pin_result(&self, from: PeerId, out: AnyRef) {
        self.pin_delta(from, out.id(), 1, Some(out));
    }

    fn accept_task(
        self: &Arc<Self>,
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
        let Some((_, run)) = self.registry.functions.get(func) else {
            let reason = format!("not registered on node {}", self.me);
            return Err(refused(Root::UnknownFunction { name: func.into(), reason }));
        };
        if self.accepted.fetch_add(1, Ordering::AcqRel) >= self.cfg.max_accepted {
            self.accepted.fetch_sub(1, Ordering::AcqRel);
            return Err(Refusal::Busy);
        }
        match run(&self.rt, args, &run_opts(opts), id, Some(self.on_done_to(from, id))) {
            Ok(out) => {
                self.pin_result(from, out);
                Ok(())
            }
            Err(reason) => {
                self.accepted.fetch_sub(1, Ordering::AcqRel);
                Err(refused(Root::Other(reason)))
            }
        }
    }

    /// Creates an actor hosted here (a failure is kept, and reported to
    /// every call).
    pub fn host_actor(self: &Arc<Self>, from: PeerId, actor: ObjectId, class: &str, args: &[u8], opts: &mail::Opts) {
        let hosted = match self.registry.classes.get_key_value(class) {
            None => Hosted::Failed(format!("actor type `{class}` is not registered on node {}", self.me)),
            Some((_, (_, make))) => {
                let label = opts.name.clone().unwrap_or_else(|| format!("{class}@{actor}"));
                match make(&self.rt, args, &run_opts(opts), &label) {
                    Ok(handle) => Hosted::Live { owner: from, handle },
                    Err(e) => Hosted::Failed(format!("actor `{label}` could not be created: {e}")),
                }
            }
        };
        let named = matches!(hosted, Hosted::Live { .. }).then(|| opts.name.clone()).flatten();
        let before = lock(&self.actors).insert(actor, hosted);
        if let Some(name) = named {
            crate::actor::publish_name(self, &name, actor, class);
        }
        if let Some(Hosted::Expected(calls)) = before {
            for c in calls {
                self.call_hosted(c.from, actor, &c.method, &c.args, c.id);
            }
        }
    }

    /// Ends an actor hosted here (its creator dropped its handle).
    pub fn drop_actor(&self, actor: ObjectId) {
        let before = lock(&self.actors).insert(actor, Hosted::Gone);
        let mut gone = lock(&self.gone);
        gone.push_back(actor);
        if gone.len() > MAX_GONE {
            if let Some(old) = gone.pop_front() {
                let mut actors = lock(&self.actors);
                if matches!(actors.get(&old), Some(Hosted::Gone)) {
                    actors.remove(&old);
                }
            }
        }
        drop(gone);
        if let Some(Hosted::Expected(calls)) = before {
            for c in calls {
                let reason: manta::Text = "it was dropped before it was created".into();
                let e = Error::ActorDead { actor: actor.to_string().into(), reason };
                self.send_done(c.from, c.id, Outcome::Failed((&e).into()));
            }
        }
        // (A live actor's handle was dropped just now, outside the lock.)
    }

    /// Parks a call for an actor not created yet; gives it back if it
    /// cannot wait (too many waiting, or the actor exists now).
    fn park(self: &Arc<Self>, actor: ObjectId, call: ParkedCall) -> Option<ParkedCall> {
        let mut actors = lock(&self.actors);
        let first = !actors.contains_key(&actor);
        let entry = actors.entry(actor).or_insert_with(|| Hosted::Expected(Vec::new()));
        let Hosted::Expected(calls) = entry else { return Some(call) };
        if calls.len() >= MAX_PARKED {
            return Some(call);
        }
        calls.push(call);
        drop(actors);
        if first {
            let w = Arc::downgrade(self);
            if let Some(h) = self.handle.get() {
                h.spawn(async move {
                    tokio::time::sleep(PARK_TIMEOUT).await;
                    let Some(w) = w.upgrade() else { return };
                    let expired = {
                        let mut actors = lock(&w.actors);
                        match actors.get(&actor) {
                            Some(Hosted::Expected(_)) => actors.remove(&actor),
                            _ => None,
                        }
                    };
                    if let Some(Hosted::Expected(calls)) = expired {
                        for c in calls {
                            let reason =
                                format!("no actor {actor} was created on node {} within {PARK_TIMEOUT:?}", w.me);
                            let e = Error::ActorDead { actor: actor.to_string().into(), reason: reason.into() };
                            w.send_done(c.from, c.id, Outcome::Failed((&e).into()));
                        }
                    }
                });
            }
        }
        None
    }

    /// Runs a call from peer `from` on an actor hosted here; a failure is
    /// reported to the caller by `Done`.
    fn call_hosted(self: &Arc<Self>, from: PeerId, actor: ObjectId, method: &str, args: &[u8], id: ObjectId) {
        if self.duplicate(from, id) {
            return;
        }
        let expected = matches!(lock(&self.actors).get(&actor), None | Some(Hosted::Expected(_)));
        if expected {
            let call = ParkedCall { from, method: method.to_string(), args: args.to_vec(), id };
            match self.park(actor, call) {
                None => return,
                Some(c) if matches!(lock(&self.actors).get(&actor), Some(Hosted::Expected(_))) => {
                    let e = Error::ActorDead {
                        actor: actor.to_string().into(),
                        reason: "too many calls wait for its creation".into(),
                    };
                    return self.send_done(c.from, c.id, Outcome::Failed((&e).into()));
                }
                Some(_) => {} // created meanwhile: call it now
            }
        }
        // Counted like a task from a peer until it is done.
        self.accepted.fetch_add(1, Ordering::AcqRel);
        match self.try_call(actor, method, args, id, Some(self.on_done_to(from, id))) {
            Ok(out) => self.pin_result(from, out),
            Err(e) => {
                self.accepted.fetch_sub(1, Ordering::AcqRel);
                self.send_done(from, id, Outcome::Failed((&e).into()))
            }
        }
    }

    /// Runs a call on an actor hosted here; its output, or why it could
    /// not be made.
    pub fn try_call(
        &self,
        actor: ObjectId,
        method: &str,
        args: &[u8],
        id: ObjectId,
        on_done: Option<OnDone>,
    ) -> Result<AnyRef, Error> {
        let Some((_, call)) = self.registry.methods.get(method) else {
            let reason = format!("not registered on node {}", self.me);
            return Err(Error::UnknownFunction { name: method.into(), reason: reason.into() });
        };
        let actors = lock(&self.actors);
        let dead = |reason: String| Error::ActorDead { actor: actor.to_string().into(), reason: reason.into() };
        match actors.get(&actor) {
            None | Some(Hosted::Expected(_)) => Err(dead(format!("no actor {actor} on node {}", self.me))),
            Some(Hosted::Gone) => Err(dead(format!("it was dropped by its creator (node {})", self.me))),
            Some(Hosted::Failed(reason)) => Err(dead(reason.clone())),
            Some(Hosted::Live { handle, .. }) => {
                call(handle.as_ref(), &self.rt, args, id, on_done).map_err(|r| Error::InvalidArgument(r.into()))
            }
        }
    }

    /// Applies a borrow (+1) or release (-1) of `id` by `from`; `known` is
    /// the object if the caller has it (else it is looked up to pin it).
    /// Counts from this node itself are not kept (the caller holds its ref).
    fn pin_delta(&self, from: PeerId, id: ObjectId, delta: i64, known: Option<AnyRef>) {
        if from == self.me {
            return;
        }
        // A borrow takes over from the pin of a ref sent out of band
        // (dropped after this borrow's pin is in place, below).
        let sent = if delta > 0 { lock(&self.oob).remove(&id) } else { None };
        let gone = {
            let mut pins = lock(&self.pins);
            let e: &mut Pin = pins.entry((from, id)).or_default();
            e.count += delta;
            if e.count > 0 && e.held.is_none() {
                e.held = known.or_else(|| self.rt.backend().pin_object(id));
            }
            if e.count <= 0 {
                let held = e.held.take();
                if e.count == 0 {
                    pins.remove(&(from, id));
                }
                held
            } else {
                None
            }
        };
        drop(gone);
        drop(sent);
    }

    /// Objects pinned here for peers (for tests and `manta status`).
    pub fn pinned(&self) -> usize {
        lock(&self.pins).values().filter(|p| p.held.is_some()).count()
    }
}
