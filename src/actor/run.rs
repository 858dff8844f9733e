//! Running an actor's calls: the mailbox drain, the actor's life (unborn,
//! live, dead), restarts, retries, and how kills and terminates reach the
//! drainer.
//!
//! # Invariants
//! - Only a drainer (the holder of the mailbox's token) locks `held`, so
//!   the state is touched by one thread at a time and never waited for.
//! - `Control` is changed only under its mutex, and every change bumps
//!   `version` (the generation, AcqRel) before the mutex is let go; the
//!   drainer reloads its copy (`Held::ctl`) whenever `version` differs
//!   from the one it saw, before it decides anything about the call it
//!   just took. Generations only grow, so `killed_before` and
//!   `closed_from` are cuts in the order calls were made.
//! - A kill decides at once whether the actor restarts (taking one restart
//!   from `restarts` by compare-and-swap, as a panic's restart does), so
//!   two kills, or a kill and a panic, never use the same restart.
//! - A dead life never comes back: applying a kill to a dead actor leaves
//!   it dead with its first cause.
//! - An error is stored in an output only if someone besides the drainer
//!   still holds a ref to it: an error nobody can read is dropped, not
//!   reported as an error nobody read. The drainer lets go of an output
//!   before it wakes the output's waiters.

use super::{ActorInner, Admitted, Call, CallRec, Invoke, RefCall};
use crate::cell::ObjectCell;
use crate::error::{panic_message, ActorDeathCause, DeadActor, Error, Text};
use crate::job::{Go, Job};
use crate::panics::catching;
use crate::slot::Meta;
use crate::store::Store;
use crate::sync::lock;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;

/// A running call's timeline facts (see `ActorInner::start_timing`).
struct Timing {
    id: crate::id::ObjectId,
    name: super::Method,
    submitted: u64,
    start: u64,
    inputs: Box<[crate::id::ObjectId]>,
}

/// Calls a drainer runs before giving its thread back to other work.
const DRAIN_BATCH: usize = 256;

/// The actor's life, as the drainer sees it.
pub(super) enum Life<S> {
    /// Not built yet (a factory actor before its first call, or after a
    /// restart).
    Unborn,
    Live(S),
    Dead(ActorDeathCause, Text),
}

/// What kills and terminates asked for (see the module docs of `actor`).
#[derive(Debug, Clone, Copy)]
pub(super) struct Ctl {
    /// Kills so far.
    kills: u64,
    /// Calls of a generation below this were made before the last kill.
    killed_before: u64,
    /// A kill decided the actor dies (sticky).
    dying: bool,
    /// Calls of a generation at or above this were made after a terminate.
    closed_from: u64,
}

/// A value on its own cache line(s), away from fields other threads write.
#[repr(align(128))]
struct Padded<T>(T);

/// Kill and terminate requests, made from any thread.
pub(super) struct Control {
    /// The generation: read by every call made and by the drainer for every
    /// call run, so kept off the lines other fields share.
    version: Padded<AtomicU64>,
    st: std::sync::Mutex<Ctl>,
    /// Set by the drainer once the life is dead (a kill then does nothing).
    dead: AtomicBool,
}

impl Control {
    pub(super) fn new(dead: bool) -> Control {
        let ctl = Ctl { kills: 0, killed_before: 0, dying: false, closed_from: u64::MAX };
        Control { version: Padded(AtomicU64::new(0)), st: std::sync::Mutex::new(ctl), dead: AtomicBool::new(dead) }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Ctl> {
        self.st.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records a kill (see `ActorHandle::kill`).
    pub(super) fn kill<S>(&self, inner: &ActorInner<S>, no_restart: bool) {
        if self.dead.load(Ordering::Acquire) {
            return;
        }
        let mut st = self.lock();
        let restart = !no_restart
            && !st.dying
            && st.closed_from == u64::MAX
            && inner.factory.is_some()
            && take_restart(&inner.restarts, inner.max_restarts).is_some();
        st.dying |= !restart;
        st.kills += 1;
        st.killed_before = self.version.0.fetch_add(1, Ordering::AcqRel) + 1;
        drop(st);
        tracing::debug!(actor = %inner.name, restart, "actor killed");
    }

    /// Records a terminate; returns its generation (its marker's).
    pub(super) fn close(&self) -> u64 {
        let mut st = self.lock();
        let gen = self.version.0.fetch_add(1, Ordering::AcqRel) + 1;
        st.closed_from = st.closed_from.min(gen);
        gen
    }

    /// The generation a call made now belongs to.
    pub(super) fn generation(&self) -> u64 {
        self.version.0.load(Ordering::Acquire)
    }
}

/// Takes one restart if any is left; returns the restarts used with it.
fn take_restart(restarts: &AtomicU32, max: u32) -> Option<u32> {
    restarts.fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| (used < max).then_some(used + 1)).ok()
}

/// What only the drainer touches: the state, and its copy of the control.
pub(super) struct Held<S> {
    life: Life<S>,
    /// `Control::version` last applied.
    seen: u64,
    /// Kills applied.
    kills: u64,
    ctl: Ctl,
}

impl<S> Held<S> {
    pub(super) fn new(life: Life<S>) -> Held<S> {
        Held { life, seen: 0, kills: 0, ctl: Ctl { kills: 0, killed_before: 0, dying: false, closed_from: u64::MAX } }
    }
}

/// The state's last drop (its actor's last handle and queued calls are
/// gone) runs the app's `Drop` on whichever thread let go last: a panic
/// there is caught and logged, as one on a restart or a kill is.
impl<S> Drop for Held<S> {
    fn drop(&mut self) {
        drop_state(std::mem::replace(&mut self.life, Life::Unborn), None);
    }
}

/// Drops an actor's state, catching and logging a panic in its `Drop`.
fn drop_state<S>(life: Life<S>, actor: Option<&Text>) {
    if let Err(payload) = catching(|| catch_unwind(AssertUnwindSafe(|| drop(life)))) {
        let message = panic_message(payload.as_ref());
        let actor = actor.map(|a| a.to_string()).unwrap_or_default();
        tracing::warn!(%actor, %message, "an actor's state panicked while being dropped");
    }
}

/// A call's output cell (`None` for markers).
type Out = Option<Arc<ObjectCell>>;

/// Completes `out` with `outcome`, then lets go of it, then wakes its
/// waiters. An error whose output nobody else holds is dropped instead (no
/// one can read it, so it is not an error nobody read).
fn complete(store: &Arc<Store>, out: Out, outcome: Admitted) {
    let readable = out.as_ref().is_some_and(|o| outcome.is_ok() || Arc::strong_count(o) > 1);
    let Some(out) = out.filter(|_| readable) else { return };
    let wake = match outcome {
        // Uncharged values need nothing from the store.
        Ok((v, meta)) if meta.charged == 0 => out.slot.complete_deferred(Ok(v), meta),
        Ok((v, meta)) => out.complete_stored(store, v, meta, None),
        Err(e) => out.slot.complete_deferred(Err(e), Meta::default()),
    };
    drop(out);
    if let Some(w) = wake {
        w.send();
    }
}

/// Fails a call that will not run: drops it (its closure and arguments)
/// first, then completes its output if anyone else still holds it.
fn fail_call<S>(mut call: Call<S>, e: Error) {
    let out = call.out.take();
    drop(call);
    let Some(out) = out.filter(|o| Arc::strong_count(o) > 1) else { return };
    let wake = out.slot.complete_deferred(Err(e), Meta::default());
    drop(out);
    if let Some(w) = wake {
        w.send();
    }
}

/// Runs read-only calls at once on `state` (see `RunBatch`): each result
/// is stored as soon as its call returns (so a result waiting for room can
/// spill one finished before it); returns each call's output and panic
/// message if it panicked.
pub(super) fn run_batch<S: Sync>(
    state: &S,
    store: &Arc<Store>,
    calls: Vec<(Out, RefCall<S>)>,
) -> Vec<Option<(Out, Text)>> {
    let run = |(out, call): (Out, RefCall<S>)| match catching(|| catch_unwind(AssertUnwindSafe(|| call(state, store))))
    {
        Ok(outcome) => {
            complete(store, out, outcome);
            None
        }
        Err(p) => Some((out, panic_message(&*p))),
    };
    let mut panics: Vec<Option<(Out, Text)>> = (0..calls.len()).map(|_| None).collect();
    if calls.len() == 1 || rayon::current_thread_index().is_none() {
        // One call, or not on a pool thread (a rescue thread): run in place.
        for (call, slot) in calls.into_iter().zip(panics.iter_mut()) {
            *slot = run(call);
        }
    } else {
        let run = &run;
        rayon::scope(|sc| {
            for (call, slot) in calls.into_iter().zip(panics.iter_mut()) {
                sc.spawn(move |_| *slot = run(call));
            }
        });
    }
    panics
}

impl<S: Send + 'static> ActorInner<S> {
    /// Puts a ready call in the mailbox, scheduling a drain if none is on.
    pub(super) fn deliver(self: &Arc<Self>, call: Call<S>) {
        if self.mailbox.push(call) {
            self.schedule_drain();
        }
    }

    fn schedule_drain(self: &Arc<Self>) {
        let me = self.clone();
        let run = move |go: Go| {
            match go {
                Go::Run => me.drain(),
                Go::Shutdown | Go::InputFailed(_) | Go::Cancelled => me.fail_all(Error::RuntimeShutdown),
            }
            crate::scheduler::Tally::default() // calls are counted when made
        };
        self.sched.submit(Job::new(self.req.clone(), run));
    }

    fn fail_all(&self, e: Error) {
        while let Some(call) = self.mailbox.pop() {
            fail_call(call, e.clone());
        }
    }

    fn dead(&self, cause: ActorDeathCause, reason: Text) -> Error {
        Error::ActorDead { actor: DeadActor::new(self.name.clone(), Some(self.id), cause), reason }
    }

    fn set_life(&self, held: &mut Held<S>, life: Life<S>) {
        // The old state goes before a new one is built. Its `Drop` is the
        // app's code: a panic there is caught and logged, so the drainer
        // (and the worker's place) is not lost.
        drop_state(std::mem::replace(&mut held.life, Life::Unborn), Some(&self.name));
        if matches!(life, Life::Dead(..)) {
            self.control.dead.store(true, Ordering::Release);
        }
        held.life = life;
    }

    /// Applies kills and terminates made since the drainer last looked.
    fn refresh(&self, held: &mut Held<S>) {
        let v = self.control.version.0.load(Ordering::Acquire);
        if v == held.seen {
            return;
        }
        let ctl = *self.control.lock();
        held.seen = v;
        if ctl.kills != held.kills && !matches!(held.life, Life::Dead(..)) {
            let life = if ctl.dying {
                Life::Dead(ActorDeathCause::Killed, "it was killed (ActorHandle::kill)".into())
            } else {
                Life::Unborn // rebuilt at the next call
            };
            self.set_life(held, life);
        }
        held.kills = ctl.kills;
        held.ctl = ctl;
    }

    fn drain(self: Arc<Self>) {
        let mut held = lock(&self.held);
        let mut ran = 0;
        while ran < DRAIN_BATCH {
            let Some(call) = self.mailbox.pop() else { return };
            self.refresh(&mut held);
            ran += 1 + self.handle(&mut held, call);
        }
        drop(held);
        // Batch used up with the token still held: yield the thread, go on later.
        self.schedule_drain();
    }

    /// Why a call must not run, if so (besides the actor being dead).
    fn refused(&self, held: &Held<S>, call: &Call<S>) -> Option<Error> {
        if let Some(cause) = &call.failed {
            return Some(Error::dependency(call.name.text(), cause.clone()));
        }
        let replayed = matches!(call.invoke, Invoke::Rerun(_))
            && self.max_task_retries > 0
            && !held.ctl.dying
            && !matches!(held.life, Life::Dead(..));
        if call.gen < held.ctl.killed_before && !replayed {
            let reason = "it was killed (ActorHandle::kill) before this call started";
            return Some(self.dead(ActorDeathCause::Killed, reason.into()));
        }
        if call.gen >= held.ctl.closed_from {
            let reason = "it was terminated (ActorHandle::terminate) before this call was made";
            return Some(self.dead(ActorDeathCause::Terminated, reason.into()));
        }
        None
    }

    /// Runs (or fails) one call; returns how many more calls it took from
    /// the mailbox (a batch of read-only calls).
    fn handle(&self, held: &mut Held<S>, call: Call<S>) -> usize {
        match call.invoke {
            Invoke::Wake => return 0,
            Invoke::Terminate => {
                if !matches!(held.life, Life::Dead(..)) {
                    let reason = "it was terminated (ActorHandle::terminate)".into();
                    self.set_life(held, Life::Dead(ActorDeathCause::Terminated, reason));
                }
                return 0;
            }
            _ => {}
        }
        if let Some(e) = self.refused(held, &call) {
            fail_call(call, e);
            return 0;
        }
        if matches!(held.life, Life::Unborn) {
            let life = self.construct();
            self.set_life(held, life);
        }
        if let Life::Dead(cause, reason) = &held.life {
            let e = self.dead(cause.clone(), reason.clone());
            fail_call(call, e);
            return 0;
        }
        let Call { out, name, invoke, rec, .. } = call;
        let _span = tracing::trace_span!("manta.actor_call", actor = %self.name, method = %name).entered();
        let timing = self.start_timing(&out, name, rec);
        match invoke {
            Invoke::Mut(f) => {
                let Life::Live(state) = &mut held.life else { return 0 };
                match catching(|| catch_unwind(AssertUnwindSafe(|| f(state, &self.store)))) {
                    Ok(outcome) => {
                        self.end_timing(timing, outcome.is_ok());
                        complete(&self.store, out, outcome)
                    }
                    Err(p) => {
                        self.end_timing(timing, false);
                        let message = panic_message(p.as_ref());
                        self.fail_panicked(out, name, message.clone());
                        self.restart_after(held, name, &message);
                    }
                }
                0
            }
            Invoke::Rerun(f) => {
                let ok = self.run_rerunnable(held, out, name, f);
                self.end_timing(timing, ok);
                0
            }
            Invoke::Ref(f, run) => self.run_read_only(held, (out, name, f, timing), run),
            Invoke::Terminate | Invoke::Wake => 0,
        }
    }

    /// A call's timeline event so far, if the timeline is recording.
    fn start_timing(&self, out: &Out, name: super::Method, rec: Option<Box<CallRec>>) -> Option<Timing> {
        let recorder = &self.sched.recorder;
        let out = out.as_ref()?;
        if !recorder.is_on() {
            return None;
        }
        let id = out.id();
        let start = recorder.now();
        let (submitted, inputs) = match rec {
            Some(r) => (r.submitted, r.inputs),
            None => (start, Box::default()),
        };
        Some(Timing { id, name, submitted, start, inputs })
    }

    /// Records a call that ran (from `start_timing`) as ending now.
    fn end_timing(&self, timing: Option<Timing>, ok: bool) {
        let Some(Timing { id, name, submitted, start, inputs }) = timing else { return };
        let recorder = &self.sched.recorder;
        let end = recorder.now();
        let outcome = if ok { crate::timeline::Outcome::Done } else { crate::timeline::Outcome::Failed };
        let actor = self.name.clone();
        recorder.record(|thread| crate::timeline::Event::Call {
            actor,
            method: name.label(),
            id,
            submitted,
            thread,
            start,
            end,
            outcome,
            inputs,
        });
    }

    /// Fails a call that panicked with its panic.
    fn fail_panicked(&self, out: Out, name: super::Method, message: Text) {
        let task: Text = format!("{}::{}", self.name, name).into();
        complete(&self.store, out, Err(Error::TaskPanicked { task, message }));
    }

    /// After a call panicked (`message` in `method`): the state it may
    /// have broken goes, and the actor is rebuilt or dies.
    fn restart_after(&self, held: &mut Held<S>, method: super::Method, message: &Text) {
        if !matches!(held.life, Life::Live(_)) {
            return;
        }
        self.set_life(held, Life::Unborn);
        let life = self.after_panic(method, message);
        self.set_life(held, life);
    }

    /// Runs a re-runnable call, again on the restarted state after each
    /// panic while task retries and restarts last.
    /// Returns whether it ended with a value.
    fn run_rerunnable(&self, held: &mut Held<S>, out: Out, name: super::Method, mut f: super::RerunCall<S>) -> bool {
        let mut retries = 0;
        loop {
            let Life::Live(state) = &mut held.life else {
                complete(&self.store, out, Err(Error::invalid("the actor is not live")));
                return false;
            };
            let message = match catching(|| catch_unwind(AssertUnwindSafe(|| f(state, &self.store)))) {
                Ok(outcome) => {
                    drop(f); // its arguments go before anyone is woken
                    let ok = outcome.is_ok();
                    complete(&self.store, out, outcome);
                    return ok;
                }
                Err(p) => panic_message(p.as_ref()),
            };
            self.restart_after(held, name, &message);
            if retries < self.max_task_retries && matches!(held.life, Life::Live(_)) {
                retries += 1;
                tracing::debug!(actor = %self.name, method = %name, retry = retries, "re-running the call on the restarted actor");
                continue;
            }
            drop(f);
            self.fail_panicked(out, name, message);
            return false;
        }
    }

    /// Runs a read-only call together with the read-only calls right
    /// behind it (up to `max_concurrency`); returns how many it added.
    fn run_read_only(
        &self,
        held: &mut Held<S>,
        first: (Out, super::Method, RefCall<S>, Option<Timing>),
        run: super::RunBatch<S>,
    ) -> usize {
        let mut batch = vec![first];
        while batch.len() < self.max_concurrency {
            match self.mailbox.pop() {
                Some(c) if matches!(c.invoke, Invoke::Ref(..)) && self.refused(held, &c).is_none() => {
                    let Call { out, name, invoke: Invoke::Ref(f, _), rec, .. } = c else { break };
                    let timing = self.start_timing(&out, name, rec);
                    batch.push((out, name, f, timing));
                }
                Some(other) => {
                    self.mailbox.unpop(other);
                    break;
                }
                None => break,
            }
        }
        let added = batch.len() - 1;
        let Life::Live(state) = &held.life else { return added };
        let mut names = Vec::with_capacity(batch.len());
        let mut timings = Vec::with_capacity(batch.len());
        let calls: Vec<_> = batch
            .into_iter()
            .map(|(o, n, f, t)| {
                names.push(n);
                timings.push(t);
                (o, f)
            })
            .collect();
        let panics = run(state, &self.store, calls);
        // The calls of a batch run at once: each is recorded as spanning
        // the batch, on the drainer's thread.
        for (timing, panic) in timings.into_iter().zip(&panics) {
            self.end_timing(timing, panic.is_none());
        }
        // The calls ran on one state: the first panic restarts it (once).
        let mut first_panic = None;
        for (name, panic) in names.into_iter().zip(panics) {
            if let Some((out, message)) = panic {
                first_panic.get_or_insert((name, message.clone()));
                self.fail_panicked(out, name, message);
            }
        }
        if let Some((name, message)) = first_panic {
            self.restart_after(held, name, &message);
        }
        added
    }

    fn construct(&self) -> Life<S> {
        let Some(factory) = &self.factory else {
            return Life::Dead(ActorDeathCause::NoFactory, "the actor has no state and no factory".into());
        };
        match catching(|| catch_unwind(AssertUnwindSafe(factory))) {
            Ok(s) => Life::Live(s),
            Err(p) => {
                let message = panic_message(p.as_ref());
                let reason = format!("its constructor panicked: {message}").into();
                Life::Dead(ActorDeathCause::ConstructorPanicked { message }, reason)
            }
        }
    }

    fn after_panic(&self, method: super::Method, message: &Text) -> Life<S> {
        if self.factory.is_some() {
            if let Some(restart) = take_restart(&self.restarts, self.max_restarts) {
                tracing::warn!(actor = %self.name, %method, %message, restart, "actor panicked; restarting");
                return self.construct();
            }
        }
        let used = self.restarts.load(Ordering::Acquire);
        let reason = if self.max_restarts > 0 {
            format!("method `{method}` panicked ({message}) after {used} restarts")
        } else {
            format!("method `{method}` panicked ({message}) and the actor has no restarts")
        };
        let cause = ActorDeathCause::Panicked { method: method.text(), message: message.clone(), restarts: used };
        Life::Dead(cause, reason.into())
    }
}
