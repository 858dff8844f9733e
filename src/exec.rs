//! Running tasks: submission, dependency tracking, the start decision
//! (cancellation), execution with retries, emitting results, lineage.
//!
//! Submitting a task creates its output cell(s) and returns refs at once
//! (`task` builds them). Inputs that are still pending are counted by a
//! [`Countdown`]: the task becomes a scheduler job when the last one is
//! ready, or fails at once (without running) when one fails. When a runner
//! takes the job, the task decides whether it may start: not if it, its
//! group or any ancestor task was cancelled (see `cancel`: once a cancel
//! returns, no task it covers starts). A running task's panic is caught
//! and stored as its result; an error its body returns (`spawn_try`) is
//! stored typed. With retries, a re-runnable task runs again after a panic
//! (or an error its retry predicate accepts), never once cancelled.
//!
//! Failure propagation is trampolined: an input's failure completes its
//! dependants from a thread-local work list instead of recursing, so a
//! failed chain of any length never overflows the stack.

use crate::args::{MultiReturn, TaskArgs};
use crate::cancel::{deciding, GroupState, TaskCtl};
use crate::cell::{ObjectCell, Ran};
use crate::countdown::Countdown;
use crate::error::{panic_message, Error, TaskFailure};
use crate::group_counts::Ended;
use crate::job::{Go, Job};
use crate::lineage::Rebuild;
use crate::notify::Waiter;
use crate::resources::Request;
use crate::scheduler::{Scheduler, Tally};
use crate::slot::{Meta, Value, Wake};
use crate::store::{RebuildJob, Store};
use std::any::Any;
use std::borrow::Borrow;
use std::cell::RefCell;
use std::marker::PhantomData;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Mutex, Weak};

/// Which errors a re-runnable task is run again after (besides panics).
pub(crate) type RetryIf = Arc<dyn Fn(&Error) -> bool + Send + Sync>;

/// How a task runs: its resources, retries and where it belongs.
pub(crate) struct Plan {
    pub req: Request,
    pub retries: u32,
    pub retry_if: Option<RetryIf>,
    pub priority: u8,
    /// Its runner may linger after it (see `TaskBuilder::caller_afar`).
    pub linger: bool,
    /// Whether (and how) its output's lineage is kept.
    pub lineage: crate::lineage::Policy,
}

/// What a task runs: its arguments and body, shared between the queued job
/// and (for re-runnable tasks) its output's lineage. (Its control block is
/// its job's, `job::Job::ctl`.)
pub(crate) struct Spec<A, B, R> {
    /// Counted as task uses of their refs while the spec lives.
    pub args: crate::objects::CountedArgs<A>,
    pub body: B,
    pub _r: PhantomData<fn() -> R>,
}

impl<A: TaskArgs, B, R> Spec<A, B, R> {
    pub fn new(args: A, body: B) -> Self {
        Spec { args: crate::objects::CountedArgs::new(args), body, _r: PhantomData }
    }
}

/// A task body: calls the user's closure once per run. (Not `Sync`: a
/// one-shot body lives in its job and runs on one thread; re-runnable ones,
/// shared with their lineage, are `Sync` by their closure's bound.)
pub(crate) trait TaskFn<I, R>: Send + 'static {
    /// Runs the closure (panics propagate to the caller's `catch_unwind`).
    /// `Err` is the body's own error (`spawn_try`) or a second run of a
    /// one-shot body.
    fn call(&self, input: I, task: &TaskCtl) -> Result<R, Error>;
}

/// A re-runnable body (`Fn`).
pub(crate) struct ManyFn<F>(pub F);
impl<I, R, F: Fn(I) -> R + Send + Sync + 'static> TaskFn<I, R> for ManyFn<F> {
    fn call(&self, input: I, _: &TaskCtl) -> Result<R, Error> {
        Ok((self.0)(input))
    }
}

/// A one-shot body (`FnOnce`), taken out by its one run (a `Cell`: the
/// body is owned by its job, which only one thread runs).
pub(crate) struct OnceFn<F>(pub std::cell::Cell<Option<F>>);
impl<I, R, F: FnOnce(I) -> R + Send + 'static> TaskFn<I, R> for OnceFn<F> {
    fn call(&self, input: I, _: &TaskCtl) -> Result<R, Error> {
        match self.0.take() {
            Some(f) => Ok(f(input)),
            None => Err(Error::invalid("a one-shot task cannot run twice")),
        }
    }
}

/// A re-runnable body returning its own errors.
pub(crate) struct ManyTry<F, E>(pub F, pub PhantomData<fn() -> E>);
impl<I, R, E, F> TaskFn<I, R> for ManyTry<F, E>
where
    F: Fn(I) -> Result<R, E> + Send + Sync + 'static,
    E: std::error::Error + Send + Sync + 'static,
{
    fn call(&self, input: I, task: &TaskCtl) -> Result<R, Error> {
        (self.0)(input).map_err(|e| failed(task, e))
    }
}

/// A one-shot body returning its own errors.
pub(crate) struct OnceTry<F, E>(pub std::cell::Cell<Option<F>>, pub PhantomData<fn() -> E>);
impl<I, R, E, F> TaskFn<I, R> for OnceTry<F, E>
where
    F: FnOnce(I) -> Result<R, E> + Send + 'static,
    E: std::error::Error + Send + Sync + 'static,
{
    fn call(&self, input: I, task: &TaskCtl) -> Result<R, Error> {
        match self.0.take() {
            Some(f) => f(input).map_err(|e| failed(task, e)),
            None => Err(Error::invalid("a one-shot task cannot run twice")),
        }
    }
}

fn take_once<F>(m: &Mutex<Option<F>>) -> Option<F> {
    match m.lock() {
        Ok(mut g) => g.take(),
        Err(p) => p.into_inner().take(),
    }
}

/// The error a body returned, as the task's error (a `manta::Error` from a
/// nested `get` passed up with `?` is kept as the task's failure too).
fn failed<E: std::error::Error + Send + Sync + 'static>(task: &TaskCtl, e: E) -> Error {
    Error::TaskFailed { task: task.name_text(), error: TaskFailure::new(e) }
}

/// Where a task's result goes. Both methods consume the emitter: they
/// complete the output(s), drop their references, and only then wake the
/// waiters, so a woken `get` finds the runtime holding nothing of the task.
pub(crate) trait Emit<R>: Send + 'static {
    /// `ran`: the job that ran (how long the outputs link to it). False if
    /// the (first) output was already done, so the value was not stored:
    /// a cancel completed it as cancelled while the task ran.
    fn ok(self, r: R, lineage: Option<Arc<dyn Rebuild>>, ran: Ran) -> bool;
    fn err(self, e: Error, ran: Ran);
    /// The (first) output's id (for the timeline).
    fn id(&self) -> crate::id::ObjectId;
    /// True if the (first) output is already done (a cancel completed it
    /// while the task ran; for the timeline).
    fn is_done(&self) -> bool;
}

fn send_all(wakes: impl IntoIterator<Item = Option<Wake>>) {
    wakes.into_iter().flatten().for_each(Wake::send);
}

/// One output.
pub(crate) struct Single {
    pub cell: Arc<ObjectCell>,
    /// `None` if the output's type is never charged
    /// ([`Store::never_charged`]): its value is stored without the store.
    pub store: Option<Arc<Store>>,
}

impl<R: Any + Send + Sync> Emit<R> for Single {
    fn ok(self, r: R, lineage: Option<Arc<dyn Rebuild>>, ran: Ran) -> bool {
        let Single { cell, store } = self;
        let wake = match &store {
            // `admit`'s first case, which needs nothing of the store.
            None => cell.slot.complete_deferred(Ok(Value::new(r)), Meta::default()),
            Some(store) => match store.admit(r, true) {
                Ok((v, meta)) => cell.complete_stored(store, v, meta, lineage),
                Err((_, needed)) => {
                    let e = Error::StoreFull { needed, capacity: store.capacity() };
                    cell.slot.complete_deferred(Err(e), Meta::default())
                }
            },
        };
        cell.job_ended(ran);
        drop((cell, store));
        let stored = wake.is_some();
        if let Some(wake) = wake {
            wake.send();
        }
        stored
    }
    fn err(self, e: Error, ran: Ran) {
        let wake = self.cell.slot.complete_deferred(Err(e), Meta::default());
        self.cell.job_ended(ran);
        drop(self);
        if let Some(wake) = wake {
            wake.send();
        }
    }
    fn id(&self) -> crate::id::ObjectId {
        self.cell.id()
    }
    fn is_done(&self) -> bool {
        self.cell.slot.is_done()
    }
}

/// One output per element of a tuple (`spawn_multi`).
pub(crate) struct Multi {
    pub cells: Vec<Arc<ObjectCell>>,
    pub store: Arc<Store>,
}

impl<R: MultiReturn> Emit<R> for Multi {
    fn ok(self, r: R, _: Option<Arc<dyn Rebuild>>, ran: Ran) -> bool {
        let values = r.admit(&self.store);
        let wakes: Vec<_> = (self.cells.iter().zip(values))
            .map(|(c, v)| match v {
                Ok((v, meta)) => c.complete_stored(&self.store, v, meta, None),
                Err(e) => c.slot.complete_deferred(Err(e), Meta::default()),
            })
            .collect();
        self.cells.iter().for_each(|c| c.job_ended(ran));
        drop(self);
        let stored = wakes.first().is_none_or(Option::is_some);
        send_all(wakes);
        stored
    }
    fn err(self, e: Error, ran: Ran) {
        let wakes: Vec<_> =
            self.cells.iter().map(|c| c.slot.complete_deferred(Err(e.clone()), Meta::default())).collect();
        self.cells.iter().for_each(|c| c.job_ended(ran));
        drop(self);
        send_all(wakes);
    }
    fn id(&self) -> crate::id::ObjectId {
        self.cells.first().map_or_else(crate::id::ObjectId::fresh, |c| c.id())
    }
    fn is_done(&self) -> bool {
        self.cells.first().is_some_and(|c| c.slot.is_done())
    }
}

/// Work postponed by [`trampoline`].
type Deferred = Box<dyn FnOnce()>;

thread_local! {
    static CURRENT_TASK: RefCell<Option<Arc<Job>>> = const { RefCell::new(None) };
    static DEFERRED: RefCell<Option<Vec<Deferred>>> = const { RefCell::new(None) };
}

/// The task running on this thread, if any (the parent of tasks it submits).
pub(crate) fn current_task() -> Option<Arc<Job>> {
    CURRENT_TASK.with(|c| c.borrow().clone())
}

/// True inside a task that was cancelled (itself, its group, or a task
/// that submitted it, recursively); long-running tasks poll it and return
/// early. False outside tasks. Cheap: one atomic load until some
/// cancellation has happened in the process.
pub fn is_cancelled() -> bool {
    CURRENT_TASK.with(|c| c.borrow().as_ref().is_some_and(|t| t.ctl.chain_cancelled()))
}

/// `Err(Error::Cancelled)` inside a task that was cancelled (see
/// [`is_cancelled`]), `Ok(())` otherwise: `manta::check_cancelled()?` in a
/// `spawn_try` body whose error type converts from `manta::Error` stops it
/// early. (Any error a body returns once its task is cancelled is recorded
/// as the cancellation, so a group counts it as cancelled, not failed.)
pub fn check_cancelled() -> Result<(), Error> {
    CURRENT_TASK.with(|c| match c.borrow().as_ref() {
        Some(t) if t.ctl.chain_cancelled() => Err(Error::Cancelled { task: t.ctl.name_text() }),
        _ => Ok(()),
    })
}

/// Runs `f` now, or after the enclosing deferred work if called from inside
/// it (turns recursive failure propagation into a loop).
fn trampoline(f: Box<dyn FnOnce()>) {
    let nested = DEFERRED.with(|d| {
        let mut d = d.borrow_mut();
        match d.as_mut() {
            Some(list) => {
                list.push(f);
                None
            }
            None => {
                *d = Some(Vec::new());
                Some(f)
            }
        }
    });
    let Some(first) = nested else { return };
    first();
    while let Some(next) = DEFERRED.with(|d| d.borrow_mut().as_mut().and_then(Vec::pop)) {
        next();
    }
    DEFERRED.with(|d| *d.borrow_mut() = None);
}

/// Makes a task's lineage record (a function pointer, so `submit` needs no
/// extra bounds for tasks that have none): given its spec, plan, scheduler
/// and its own job (for its control block).
pub(crate) type MakeLineage<A, B, R> = fn(Arc<Spec<A, B, R>>, &Plan, Weak<Scheduler>, Arc<Job>) -> Arc<dyn Rebuild>;

/// Makes a task's lineage record when its value is stored (given its job).
pub(crate) trait Lineage: FnOnce(&Arc<Job>) -> Option<Arc<dyn Rebuild>> + Send + 'static {}
impl<L: FnOnce(&Arc<Job>) -> Option<Arc<dyn Rebuild>> + Send + 'static> Lineage for L {}

/// No lineage (one-shot tasks, multiple outputs, lineage turned off).
pub(crate) fn no_lineage(_: &Arc<Job>) -> Option<Arc<dyn Rebuild>> {
    None
}

/// A task's end for the runtime's counts.
fn tally_of(ended: Result<(), bool>) -> Tally {
    match ended {
        Ok(()) => Tally { done: 1, ..Tally::default() },
        Err(true) => Tally { cancelled: 1, ..Tally::default() },
        Err(false) => Tally { failed: 1, ..Tally::default() },
    }
}

/// Counts a group task's end by its outcome (`Err(cancelled?)`).
fn count_end(group: Option<&Arc<GroupState>>, outcome: Result<(), bool>) {
    if let Some(g) = group {
        g.ended(match outcome {
            Ok(()) => Ended::Done,
            Err(true) => Ended::Cancelled,
            Err(false) => Ended::Failed,
        });
    }
}

/// Submits a task: makes its job (which is its control block `ctl` too),
/// its outputs (`outputs`, given the job to name as their producer; also
/// returns what the caller hands back, its refs), waits for its inputs,
/// then queues it. `spec` is the spec itself for a task without lineage
/// (it then lives inside the job's own allocation) or an `Arc` shared
/// with the lineage record `lineage` makes once its value is stored.
pub(crate) fn submit<A, R, B, E, P, O>(
    sched: &Arc<Scheduler>,
    plan: Plan,
    ctl: TaskCtl,
    spec: P,
    outputs: impl FnOnce(Option<Weak<Job>>) -> (E, O),
    lineage: impl Lineage,
) -> O
where
    A: TaskArgs,
    R: Send + 'static,
    B: TaskFn<A::Output, R>,
    E: Emit<R>,
    P: Borrow<Spec<A, B, R>> + Send + 'static,
{
    if let Some(g) = &ctl.group {
        g.submitted();
    }
    let (pending, failed) = inputs_of(&*spec.borrow().args);
    let mut made = None;
    let (retries, retry_if) = (plan.retries, plan.retry_if);
    let job = Job::task(plan.req, plan.priority, plan.linger, ctl, |me| {
        let (out, o) = outputs(Some(me));
        made = Some(o);
        // Recorded only if the timeline is on now (one relaxed load otherwise).
        // Inline, not boxed: a recording task pays no allocation for it
        // (see `microbench timeline` for what recording costs).
        let rec = sched
            .recorder
            .is_on()
            .then(|| Recording { submitted: crate::timeline::Stamp::raw_now(), stamp: sched.recorder.stamp() });
        job_fn(spec, retries, retry_if, out, lineage, rec)
    });
    let Some(made) = made else { unreachable!("Job::task calls make") };
    if let Some(cause) = failed {
        sched.count(job.finish(Go::InputFailed(cause)));
    } else if pending.is_empty() {
        sched.submit(job);
    } else {
        wait_for_inputs(sched, job, pending);
    }
    made
}

/// A re-runnable task's lineage maker, if its plan keeps lineage.
pub(crate) fn lineage_of<A, B, R>(
    spec: &Arc<Spec<A, B, R>>,
    plan: &Plan,
    make: MakeLineage<A, B, R>,
    sched: &Arc<Scheduler>,
) -> Option<impl Lineage>
where
    A: TaskArgs,
    R: Send + 'static,
    B: TaskFn<A::Output, R> + Sync,
{
    if !plan.lineage.keep {
        return None;
    }
    let (spec, sched) = (spec.clone(), Arc::downgrade(sched));
    let plan = Plan {
        req: plan.req.clone(),
        retries: plan.retries,
        retry_if: plan.retry_if.clone(),
        priority: plan.priority,
        linger: plan.linger,
        lineage: plan.lineage,
    };
    Some(move |job: &Arc<Job>| plan.lineage.apply(make(spec, &plan, sched, job.clone())))
}

/// A task's inputs that are not done yet (their fetch started, for remote
/// ones), and the error of the first that failed, if any.
fn inputs_of<A: TaskArgs>(args: &A) -> (Vec<Arc<ObjectCell>>, Option<Error>) {
    let mut pending: Vec<Arc<ObjectCell>> = Vec::new();
    let mut failed: Option<Error> = None;
    args.for_each_dep(&mut |r| {
        let c = &r.cell;
        if !c.slot.is_done() {
            c.demand(); // a remote input starts its fetch now
            pending.push(c.clone());
        } else if failed.is_none() {
            if let Some(Err(e)) = c.slot.read() {
                failed = Some(e);
            }
        }
    });
    (pending, failed)
}

/// What the task's job runs, told how to go (run, or end as cancelled,
/// failed input, shut down): the outcome, recorded, stored, counted.
fn job_fn<A, R, B, E, P>(
    spec: P,
    retries: u32,
    retry_if: Option<RetryIf>,
    out: E,
    lineage: impl Lineage,
    rec: Option<Recording>,
) -> impl FnOnce(Go, &Arc<Job>) -> Tally + Send + 'static
where
    A: TaskArgs,
    R: Send + 'static,
    B: TaskFn<A::Output, R>,
    E: Emit<R>,
    P: Borrow<Spec<A, B, R>> + Send + 'static,
{
    move |go: Go, job: &Arc<Job>| {
        let s = spec.borrow();
        let ctl = &job.ctl;
        let task = || ctl.name_text();
        let reaped = matches!(go, Go::Cancelled);
        let start = rec.as_ref().map(|_| {
            ATTEMPTS.with(|a| a.set(0));
            crate::timeline::Stamp::raw_now()
        });
        let outcome = match go {
            Go::Shutdown => Err(Error::RuntimeShutdown),
            Go::InputFailed(cause) => Err(Error::dependency(task(), cause)),
            Go::Cancelled => Err(Error::Cancelled { task: task() }),
            Go::Run => start_and_run(s, job, retries, retry_if.as_ref()),
        };
        // Recorded before anyone is woken: a reader finds the task on the
        // timeline once it has its result, and a consumer never starts
        // before its input ended. A value whose output a cancel already
        // completed (while the task ran) is recorded as the cancellation
        // its readers see.
        if let (Some(rec), Some(start)) = (rec, start) {
            let ended = match &outcome {
                Ok(_) if out.is_done() => Err(true),
                Ok(_) => Ok(()),
                Err(e) => Err(e.is_cancelled()),
            };
            rec.record(s, ctl, (out.id(), job.req.cpu as f64 / crate::resources::UNIT), start, ended);
        }
        // The job has ended: the closure and its inputs go before anyone
        // is woken (lineage keeps its own reference when the output may
        // need rebuilding). Those of a queued task of a cancelled group
        // go once the group has stopped (`GroupState::bury`).
        match ctl.group.as_ref().filter(|g| reaped && g.chain_cancelled()) {
            Some(g) => g.bury(Box::new(spec)),
            None => drop(spec),
        }
        // Counted once the result is stored, so a group that says every
        // task finished has every result known. A value that was not
        // stored (a cancel completed the output while the task ran) counts
        // as the cancellation its readers see.
        let ran = Ran::of(job);
        let ended = match outcome {
            Ok(v) => match out.ok(v, lineage(job), ran) {
                true => Ok(()),
                false => Err(true),
            },
            Err(e) => {
                let cancelled = e.is_cancelled();
                out.err(e, ran);
                Err(cancelled)
            }
        };
        count_end(ctl.group.as_ref(), ended);
        tally_of(ended)
    }
}

/// Queues `job` once every pending input is done (or fails it as soon as
/// one fails).
fn wait_for_inputs(sched: &Arc<Scheduler>, job: Arc<Job>, pending: Vec<Arc<ObjectCell>>) {
    // A reader blocked on its output must not run it before its inputs are
    // ready (it would find them pending): it waits, lending its CPU.
    job.set_waiting(true);
    let waiting = Arc::new(Waiting { countdown: Countdown::new(pending.len() + 1), job: Mutex::new(Some(job)) });
    for cell in pending {
        let w = waiting.clone();
        let sched = sched.clone();
        let c = cell.clone();
        let cb = move |ok: bool| w.input_done(ok, &c, &sched);
        if let Err(waiter) = cell.slot.register(Waiter::Callback(Box::new(cb))) {
            waiter.notify(!cell.slot.is_failed());
        }
    }
    if waiting.countdown.arrive() {
        waiting.release(sched);
    }
}

/// Completes a task that cannot be submitted (e.g. infeasible) with `e`,
/// counting it in its group and in the runtime's counts (as a failed
/// input's task is: ended, never queued), and recording it on the
/// timeline (an instant at submission: it never ran).
pub(crate) fn reject<R, E: Emit<R>>(
    sched: &Scheduler,
    (group, name): (Option<&Arc<GroupState>>, &crate::cancel::TaskName),
    out: E,
    e: Error,
) {
    if let Some(g) = group {
        g.submitted();
    }
    let ended = Err(e.is_cancelled());
    if sched.recorder.is_on() {
        let now = crate::timeline::Stamp::raw_now();
        sched.recorder.stamp().record_task(crate::timeline::TaskRecord {
            id: out.id(),
            name: name.label(),
            raw: [now; 3],
            cpus: 0.0,
            attempts: 0,
            outcome: crate::timeline::Outcome::Failed,
            inputs: Box::new([]),
        });
    }
    out.err(e, Ran::NONE);
    count_end(group, ended);
    sched.count(tally_of(ended));
}

/// What a task records on the timeline (present only if it was on when
/// the task was submitted): one record, when its job ends. Kept inline in
/// the job (16 bytes; the output's id and the CPUs are read when the
/// record is made), so recording costs no allocation per task.
struct Recording {
    /// The recorder, by key (a counted reference would be taken on the
    /// submitting thread and dropped on the worker: a shared line bounced
    /// for every task).
    stamp: crate::timeline::Stamp,
    /// The clock's raw reading at submission (scaled when the timeline is
    /// read).
    submitted: u64,
}

impl Recording {
    /// Records the task, which ended as `ended` (`Err(cancelled?)`).
    fn record<A: TaskArgs, B, R>(
        self,
        spec: &Spec<A, B, R>,
        ctl: &TaskCtl,
        (id, cpus): (crate::id::ObjectId, f64),
        start: u64,
        ended: Result<(), bool>,
    ) {
        let mut inputs = Vec::new();
        spec.args.for_each_dep(&mut |r| inputs.push(r.cell.id()));
        let outcome = match ended {
            Ok(()) => crate::timeline::Outcome::Done,
            Err(true) => crate::timeline::Outcome::Cancelled,
            Err(false) => crate::timeline::Outcome::Failed,
        };
        let end = crate::timeline::Stamp::raw_now();
        self.stamp.record_task(crate::timeline::TaskRecord {
            id,
            name: ctl.name.label(),
            raw: [self.submitted, start, end],
            cpus,
            attempts: ATTEMPTS.with(|a| a.get()),
            outcome,
            inputs: inputs.into(),
        });
    }
}

thread_local! {
    /// Runs of the current task body on this thread (for the timeline).
    static ATTEMPTS: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
}

/// The start decision, then the run (module docs).
fn start_and_run<A, R, B>(
    spec: &Spec<A, B, R>,
    task: &Arc<Job>,
    retries: u32,
    retry_if: Option<&RetryIf>,
) -> Result<R, Error>
where
    A: TaskArgs,
    B: TaskFn<A::Output, R>,
{
    let ctl = &task.ctl;
    let may_start = deciding(|| {
        if ctl.chain_cancelled() {
            return false;
        }
        if let Some(g) = &ctl.group {
            g.started();
        }
        true
    });
    if !may_start {
        return Err(Error::Cancelled { task: ctl.name_text() });
    }
    let r = run_task(spec, task, retries, retry_if, true);
    if let Some(g) = &ctl.group {
        g.stopped_running();
    }
    r
}

/// Runs a task's body (with retries); the caller emits the outcome.
/// `cancellable`: stop (as cancelled) when the task's chain is cancelled
/// (false for a rebuild of an output that already exists).
fn run_task<A, R, B>(
    spec: &Spec<A, B, R>,
    task: &Arc<Job>,
    retries: u32,
    retry_if: Option<&RetryIf>,
    cancellable: bool,
) -> Result<R, Error>
where
    A: TaskArgs,
    B: TaskFn<A::Output, R>,
{
    let ctl = &task.ctl;
    let cancelled = || cancellable && ctl.chain_cancelled();
    let mut attempt = 0;
    loop {
        let input = match spec.args.resolve() {
            Ok(i) => i,
            Err(cause) => return Err(Error::dependency(ctl.name_text(), cause)),
        };
        // A `trace` span per attempt (one relaxed load when disabled).
        let _span = tracing::trace_span!("manta.task", task = %ctl.name, attempt).entered();
        let prev = CURRENT_TASK.with(|c| c.replace(Some(task.clone())));
        let r = crate::panics::catching(|| catch_unwind(AssertUnwindSafe(|| spec.body.call(input, ctl))));
        // After the body: a task it ran inline set its own count meanwhile.
        ATTEMPTS.with(|a| a.set(attempt + 1));
        CURRENT_TASK.with(|c| *c.borrow_mut() = prev);
        let e = match r {
            // Whatever a task returns once it was cancelled (itself, its
            // group, a parent) is the task stopping early: its readers see
            // it cancelled, as Ray's do, and it counts as cancelled.
            Ok(_) if cancelled() => return Err(Error::Cancelled { task: ctl.name_text() }),
            Ok(Ok(v)) => return Ok(v),
            Ok(Err(e)) => {
                let again = retry_if.is_some_and(|p| matches!(e, Error::TaskFailed { .. }) && p(&e));
                if !again {
                    return Err(e);
                }
                e
            }
            Err(payload) => {
                let message = panic_message(payload.as_ref());
                tracing::debug!(task = %ctl.name, %message, "task panicked");
                Error::TaskPanicked { task: ctl.name_text(), message }
            }
        };
        if attempt >= retries || cancelled() {
            return Err(if cancelled() { Error::Cancelled { task: ctl.name_text() } } else { e });
        }
        attempt += 1;
        tracing::debug!(task = %ctl.name, attempt, error = %e, "retrying task");
    }
}

/// A task waiting for its inputs.
struct Waiting {
    countdown: Countdown,
    job: Mutex<Option<Arc<Job>>>,
}

impl Waiting {
    fn take(&self) -> Option<Arc<Job>> {
        take_once(&self.job)
    }

    fn release(&self, sched: &Arc<Scheduler>) {
        if let Some(job) = self.take() {
            job.set_waiting(false);
            sched.submit(job);
        }
    }

    fn input_done(self: Arc<Self>, ok: bool, cell: &Arc<ObjectCell>, sched: &Arc<Scheduler>) {
        if ok {
            if self.countdown.arrive() {
                self.release(sched);
            }
        } else if self.countdown.fail() {
            let cause = match cell.slot.read() {
                Some(Err(e)) => e,
                _ => Error::invalid("input failed"),
            };
            if let Some(job) = self.take() {
                let sched = sched.clone();
                trampoline(Box::new(move || sched.count(job.finish(Go::InputFailed(cause)))));
            }
        }
    }
}

/// A re-runnable task's lineage: how the store rebuilds its output by
/// submitting it again to the scheduler, with the resources and retries of
/// its first run (and `Runtime::current()` set, as on any worker). A
/// rebuild of an output that exists is not stopped by a later cancel of
/// its group or parent.
pub(crate) struct TaskLineage<A, B, R> {
    spec: Arc<Spec<A, B, R>>,
    /// The task's first job (its control block: name, parent, group).
    task: Arc<Job>,
    req: Request,
    priority: u8,
    sched: Weak<Scheduler>,
    retries: u32,
    retry_if: Option<RetryIf>,
}

impl<A, B, R> TaskLineage<A, B, R>
where
    A: TaskArgs,
    R: Any + Send + Sync,
    B: TaskFn<A::Output, R> + Sync,
{
    pub(crate) fn record(
        spec: Arc<Spec<A, B, R>>,
        plan: &Plan,
        sched: Weak<Scheduler>,
        task: Arc<Job>,
    ) -> Arc<dyn Rebuild> {
        Arc::new(TaskLineage {
            spec,
            task,
            req: plan.req.clone(),
            priority: plan.priority,
            sched,
            retries: plan.retries,
            retry_if: plan.retry_if.clone(),
        })
    }
}

impl<A, B, R> Rebuild for TaskLineage<A, B, R>
where
    A: TaskArgs,
    R: Any + Send + Sync,
    B: TaskFn<A::Output, R> + Sync,
{
    /// The record inline (arguments and captures) plus its allocations'
    /// bookkeeping; heap owned by captured values is not seen.
    fn record_bytes(&self) -> usize {
        std::mem::size_of::<Spec<A, B, R>>() + std::mem::size_of::<Self>() + 64
    }

    fn task_name(&self) -> crate::error::Text {
        self.task.ctl.name_text()
    }

    fn resubmit(self: Arc<Self>, job: RebuildJob) {
        let Some(sched) = self.sched.upgrade() else { return job.finish(Err(Error::RuntimeShutdown)) };
        let me = self.clone();
        // The object's cell names the rebuild's job while it runs (a reader
        // waiting for it may run it).
        let obj = job.object();
        let run = move |go: Go| {
            let task = || me.task.ctl.name_text();
            let outcome = match go {
                Go::Run => {
                    run_task(&me.spec, &me.task, me.retries, me.retry_if.as_ref(), false).map(|r| job.measure(r))
                }
                Go::Shutdown => Err(Error::RuntimeShutdown),
                Go::Cancelled => Err(Error::Cancelled { task: task() }),
                Go::InputFailed(cause) => Err(Error::dependency(task(), cause)),
            };
            if let Some(obj) = job.object() {
                set_producer(&obj, None);
            }
            job.finish(outcome);
            Tally::default() // a rebuild, not a task run
        };
        let j = Job::other(self.req.clone(), self.priority, run);
        if let Some(obj) = obj {
            set_producer(&obj, Some(&j));
        }
        sched.submit(j);
    }
}

/// Names `job` as the producer of a rebuilt object (see `ObjectCell`).
fn set_producer(obj: &Arc<dyn crate::store::Resident>, job: Option<&Arc<Job>>) {
    if let Some(cell) = obj.as_any().downcast_ref::<ObjectCell>() {
        cell.set_producer(job);
    }
}
