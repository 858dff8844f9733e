//! Tasks: submission, dependency tracking, execution, retries and errors.
//!
//! Submitting a task creates its output cell(s) and returns refs at once.
//! Inputs that are still pending are counted by a [`Countdown`]: the task
//! becomes a scheduler job when the last one is ready, or fails at once
//! (without running) when one fails. A running task's panic is caught and
//! stored as its result; with `retries(n)` a re-runnable task is run again up
//! to `n` times first. Cancellation wins over completion or loses to it
//! atomically in the output slot (see `slot`).
//!
//! Failure propagation is trampolined: an input's failure completes its
//! dependants from a thread-local work list instead of recursing, so a
//! failed chain of any length never overflows the stack.

use crate::args::{MultiReturn, TaskArgs};
use crate::cell::{ObjectCell, TaskCtl};
use crate::countdown::Countdown;
use crate::error::{panic_message, Error};
use crate::lineage::Rebuild;
use crate::notify::Waiter;
use crate::refs::ObjectRef;
use crate::resources::Request;
use crate::runtime::Runtime;
use crate::scheduler::Scheduler;
use crate::scheduler::{Go, Job};
use crate::slot::{Meta, Wake};
use crate::store::{RebuildJob, Store};
use std::any::Any;
use std::borrow::Cow;
use std::cell::RefCell;
use std::marker::PhantomData;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

/// Options of one task. Defaults: 1 CPU, no custom resources, no retries,
/// named after the closure's type.
#[derive(Debug, Clone)]
pub struct TaskOptions {
    pub(crate) name: Option<Cow<'static, str>>,
    pub(crate) cpus: f64,
    pub(crate) resources: Vec<(crate::error::Text, f64)>,
    pub(crate) retries: u32,
    pub(crate) object_id: Option<crate::id::ObjectId>,
    pub(crate) lineage: crate::lineage::Policy,
}

impl Default for TaskOptions {
    fn default() -> Self {
        TaskOptions {
            name: None,
            cpus: 1.0,
            resources: Vec::new(),
            retries: 0,
            object_id: None,
            lineage: Default::default(),
        }
    }
}

/// Builds a task with options: `rt.task().cpus(0.5).retries(2).spawn(f)`.
///
/// `spawn`/`spawn_with` take re-runnable closures (`Fn`): they can be retried
/// after a panic and rebuilt from lineage. `spawn_once`/`spawn_once_with`
/// take one-shot closures (`FnOnce`) that may move their captures; those
/// cannot be retried.
#[must_use = "a TaskBuilder does nothing until spawned"]
pub struct TaskBuilder<'rt> {
    rt: &'rt Runtime,
    opts: TaskOptions,
}

impl<'rt> TaskBuilder<'rt> {
    pub(crate) fn new(rt: &'rt Runtime) -> Self {
        TaskBuilder { rt, opts: TaskOptions::default() }
    }

    /// Names the task (used in errors). Default: the closure's type name.
    pub fn name(mut self, name: impl Into<Cow<'static, str>>) -> Self {
        self.opts.name = Some(name.into());
        self
    }

    /// CPUs the task holds while it runs (fractional allowed). Default 1.
    pub fn cpus(mut self, cpus: f64) -> Self {
        self.opts.cpus = cpus;
        self
    }

    /// An amount of a custom resource the task holds while it runs.
    pub fn resource(mut self, name: &str, amount: f64) -> Self {
        self.opts.resources.push((name.into(), amount));
        self
    }

    /// How many times to run the task again after a panic. Default 0.
    /// A cancelled task is never retried.
    pub fn retries(mut self, n: u32) -> Self {
        self.opts.retries = n;
        self
    }

    /// Whether the store keeps this task's lineage (default true, for
    /// re-runnable tasks): with `false` its output is never dropped from
    /// memory to be rebuilt by running the task again; when memory is
    /// short it is spilled (spillable type and a spill directory) or stays
    /// in memory (pinned), like a `put`. For tasks with side effects that
    /// must not run twice, or whose inputs should not be kept alive by the
    /// record.
    pub fn lineage(mut self, keep: bool) -> Self {
        self.opts.lineage.keep = keep;
        self
    }

    /// Caps how many times the task's output may be rebuilt from lineage
    /// (Ray's `max_reconstructions`; default: no cap). After `n` rebuilds
    /// the store no longer drops the output to rebuild it (it spills or
    /// pins it instead), and a loss that still happens (its spill file is
    /// unreadable) fails reads with [`Error::MaxReconstructionsExceeded`].
    /// `0` keeps the record but allows no rebuild.
    pub fn max_reconstructions(mut self, n: u32) -> Self {
        self.opts.lineage.max_reconstructions = Some(n);
        self
    }

    /// Gives the task's (first) output this id instead of a fresh one (see
    /// `backend::Backend::task_with_id`).
    pub(crate) fn with_object_id(mut self, id: crate::id::ObjectId) -> Self {
        self.opts.object_id = Some(id);
        self
    }

    /// Submits a re-runnable task with no arguments.
    pub fn spawn<R, F>(self, f: F) -> ObjectRef<R>
    where
        R: Any + Send + Sync,
        F: Fn() -> R + Send + Sync + 'static,
    {
        self.named_after(&f).spawn_with((), move |()| f())
    }

    fn named_after<F>(mut self, f: &F) -> Self {
        if self.opts.name.is_none() {
            self.opts.name = Some(Cow::Borrowed(type_name_of(f)));
        }
        self
    }

    /// Submits a re-runnable task that runs when all `args` are ready.
    pub fn spawn_with<A, R, F>(self, args: A, f: F) -> ObjectRef<R>
    where
        A: TaskArgs,
        R: Any + Send + Sync,
        F: Fn(A::Output) -> R + Send + Sync + 'static,
    {
        let (cell, ctl) = output(&self.opts, type_name_of(&f));
        let spec = Spec::new(args, ManyFn(f), ctl);
        let out = Single { cell: cell.clone(), store: self.rt.store().clone() };
        submit(self.rt, &self.opts, spec, out, Some(TaskLineage::<A, ManyFn<F>, R>::record));
        ObjectRef::from_cell(cell)
    }

    /// Submits a one-shot task with no arguments.
    pub fn spawn_once<R, F>(self, f: F) -> ObjectRef<R>
    where
        R: Any + Send + Sync,
        F: FnOnce() -> R + Send + 'static,
    {
        self.named_after(&f).spawn_once_with((), move |()| f())
    }

    /// Submits a one-shot task that runs when all `args` are ready.
    pub fn spawn_once_with<A, R, F>(self, args: A, f: F) -> ObjectRef<R>
    where
        A: TaskArgs,
        R: Any + Send + Sync,
        F: FnOnce(A::Output) -> R + Send + 'static,
    {
        let (cell, ctl) = output(&self.opts, type_name_of(&f));
        let spec = Spec::new(args, OnceFn(Mutex::new(Some(f))), ctl);
        let out = Single { cell: cell.clone(), store: self.rt.store().clone() };
        submit(self.rt, &self.opts, spec, out, None);
        ObjectRef::from_cell(cell)
    }

    /// Submits a re-runnable task returning a tuple; each element becomes its
    /// own object: `let (a, b) = rt.task().spawn_multi((), |()| (1, "x"));`
    pub fn spawn_multi<A, R, F>(self, args: A, f: F) -> R::Refs
    where
        A: TaskArgs,
        R: MultiReturn,
        F: Fn(A::Output) -> R + Send + Sync + 'static,
    {
        let (first, ctl) = output(&self.opts, type_name_of(&f));
        let mut cells = vec![first];
        cells.extend((1..R::N).map(|_| ObjectCell::pending(Some(ctl.clone()))));
        let refs = R::refs(&cells);
        let spec = Spec::new(args, ManyFn(f), ctl);
        submit(self.rt, &self.opts, spec, Multi { cells, store: self.rt.store().clone() }, None);
        refs
    }
}

fn type_name_of<F>(_: &F) -> &'static str {
    std::any::type_name::<F>()
}

fn output(opts: &TaskOptions, default_name: &'static str) -> (Arc<ObjectCell>, Arc<TaskCtl>) {
    let name = opts.name.clone().unwrap_or(Cow::Borrowed(default_name));
    let ctl = TaskCtl::new(name);
    (ObjectCell::pending_as(opts.object_id, Some(ctl.clone())), ctl)
}

/// What a task runs: its arguments and body, shared between the queued job
/// and (for re-runnable tasks) its output's lineage.
pub(crate) struct Spec<A, F, R> {
    /// Counted as task uses of their refs while the spec lives.
    args: crate::objects::CountedArgs<A>,
    body: F,
    ctl: Arc<TaskCtl>,
    _r: PhantomData<fn() -> R>,
}

impl<A: TaskArgs, F, R> Spec<A, F, R> {
    fn new(args: A, body: F, ctl: Arc<TaskCtl>) -> Arc<Self> {
        Arc::new(Spec { args: crate::objects::CountedArgs::new(args), body, ctl, _r: PhantomData })
    }
}

/// A re-runnable task's lineage: how the store rebuilds its output by
/// submitting it again to the scheduler, with the resources, retries and
/// cancellation of its first run (and `Runtime::current()` set, as on any
/// worker).
struct TaskLineage<A, B, R> {
    spec: Arc<Spec<A, B, R>>,
    req: Request,
    sched: std::sync::Weak<Scheduler>,
    retries: u32,
}

/// Makes a task's lineage record (a function pointer, so `submit` needs no
/// extra bounds for tasks that have none).
type MakeLineage<A, B, R> = fn(Arc<Spec<A, B, R>>, Request, std::sync::Weak<Scheduler>, u32) -> Arc<dyn Rebuild>;

impl<A, B, R> TaskLineage<A, B, R>
where
    A: TaskArgs,
    R: Any + Send + Sync,
    B: TaskFn<A::Output, R>,
{
    fn record(
        spec: Arc<Spec<A, B, R>>,
        req: Request,
        sched: std::sync::Weak<Scheduler>,
        retries: u32,
    ) -> Arc<dyn Rebuild> {
        Arc::new(TaskLineage { spec, req, sched, retries })
    }
}

impl<A, B, R> Rebuild for TaskLineage<A, B, R>
where
    A: TaskArgs,
    R: Any + Send + Sync,
    B: TaskFn<A::Output, R>,
{
    /// The record inline (arguments and captures) plus its allocations'
    /// bookkeeping; heap owned by captured values is not seen.
    fn record_bytes(&self) -> usize {
        std::mem::size_of::<Spec<A, B, R>>() + std::mem::size_of::<Self>() + 64
    }

    fn task_name(&self) -> crate::error::Text {
        self.spec.ctl.name_text()
    }

    fn resubmit(self: Arc<Self>, job: RebuildJob) {
        let Some(sched) = self.sched.upgrade() else { return job.finish(Err(Error::RuntimeShutdown)) };
        let me = self.clone();
        let run = move |go: Go| {
            let task = || me.spec.ctl.name_text();
            let outcome = match go {
                Go::Run => run_task(&me.spec, me.retries).map(|r| job.measure(r)),
                Go::Shutdown => Err(Error::RuntimeShutdown),
                Go::Cancelled => Err(Error::Cancelled { task: task() }),
                Go::InputFailed(cause) => Err(Error::dependency(task(), cause)),
            };
            job.finish(outcome);
        };
        let j = Job::new(self.req.clone(), Box::new(run));
        self.spec.ctl.set_job(&j);
        sched.submit(j);
    }
}

/// Where a task's result goes. Both methods consume the emitter: they
/// complete the output(s), drop their references, and only then wake the
/// waiters, so a woken `get` finds the runtime holding nothing of the task.
trait Emit<R>: Send + 'static {
    fn ok(self, r: R, lineage: Option<Arc<dyn Rebuild>>);
    fn err(self, e: Error);
}

fn send_all(wakes: impl IntoIterator<Item = Option<Wake>>) {
    wakes.into_iter().flatten().for_each(Wake::send);
}

struct Single {
    cell: Arc<ObjectCell>,
    store: Arc<Store>,
}

impl<R: Any + Send + Sync> Emit<R> for Single {
    fn ok(self, r: R, lineage: Option<Arc<dyn Rebuild>>) {
        let Single { cell, store } = self;
        let wake = match store.admit(r, true) {
            Ok((v, meta)) => cell.complete_stored(&store, v, meta, lineage),
            Err((_, needed)) => {
                let e = Error::StoreFull { needed, capacity: store.capacity() };
                cell.slot.complete_deferred(Err(e), Meta::default())
            }
        };
        drop((cell, store));
        send_all([wake]);
    }
    fn err(self, e: Error) {
        let wake = self.cell.slot.complete_deferred(Err(e), Meta::default());
        drop(self);
        send_all([wake]);
    }
}

struct Multi {
    cells: Vec<Arc<ObjectCell>>,
    store: Arc<Store>,
}

impl<R: MultiReturn> Emit<R> for Multi {
    fn ok(self, r: R, _: Option<Arc<dyn Rebuild>>) {
        let values = r.admit(&self.store);
        let wakes: Vec<_> = (self.cells.iter().zip(values))
            .map(|(c, v)| match v {
                Ok((v, meta)) => c.complete_stored(&self.store, v, meta, None),
                Err(e) => c.slot.complete_deferred(Err(e), Meta::default()),
            })
            .collect();
        drop(self);
        send_all(wakes);
    }
    fn err(self, e: Error) {
        let wakes: Vec<_> =
            self.cells.iter().map(|c| c.slot.complete_deferred(Err(e.clone()), Meta::default())).collect();
        drop(self);
        send_all(wakes);
    }
}

/// Work postponed by [`trampoline`].
type Deferred = Box<dyn FnOnce()>;

thread_local! {
    static CURRENT_TASK: RefCell<Option<Arc<TaskCtl>>> = const { RefCell::new(None) };
    static DEFERRED: RefCell<Option<Vec<Deferred>>> = const { RefCell::new(None) };
}

/// True inside a task whose cancellation was requested; long-running tasks
/// poll it and return early. False outside tasks.
pub fn is_cancelled() -> bool {
    CURRENT_TASK.with(|c| c.borrow().as_ref().is_some_and(|t| t.cancelled.load(Ordering::Acquire)))
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

fn submit<A, R, F, E>(
    rt: &Runtime,
    opts: &TaskOptions,
    spec: Arc<Spec<A, F, R>>,
    out: E,
    lineage: Option<MakeLineage<A, F, R>>,
) where
    A: TaskArgs,
    R: Send + 'static,
    F: TaskFn<A::Output, R>,
    E: Emit<R>,
{
    let sched = rt.scheduler();
    let ctl = spec.ctl.clone();
    let req = match sched.totals().request(&spec.ctl.name, opts.cpus, &opts.resources) {
        Ok(r) => r,
        Err(e) => return out.err(e),
    };
    if opts.retries > 0 && !spec.body.rerunnable() {
        return out.err(Error::invalid("retries need a re-runnable task: use spawn/spawn_with (Fn), not spawn_once"));
    }
    // Inputs: collect the pending ones; fail at once on a failed one.
    let mut pending: Vec<Arc<ObjectCell>> = Vec::new();
    let mut failed: Option<Error> = None;
    spec.args.for_each_dep(&mut |r| {
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
    let retries = opts.retries;
    let lineage = lineage
        .filter(|_| opts.lineage.keep)
        .and_then(|make| opts.lineage.apply(make(spec.clone(), req.clone(), Arc::downgrade(sched), retries)));
    let run = move |go: Go| {
        let outcome = match go {
            Go::Shutdown => Err(Error::RuntimeShutdown),
            Go::InputFailed(cause) => Err(Error::dependency(spec.ctl.name_text(), cause)),
            Go::Cancelled => Err(Error::Cancelled { task: spec.ctl.name_text() }),
            Go::Run => run_task(&spec, retries),
        };
        // The closure and its inputs go before anyone is woken (lineage keeps
        // its own reference when the output may need rebuilding).
        drop(spec);
        match outcome {
            Ok(v) => out.ok(v, lineage),
            Err(e) => out.err(e),
        }
    };
    let job = Job::new(req, Box::new(run));
    ctl.set_job(&job);
    if let Some(cause) = failed {
        return job.finish(Go::InputFailed(cause));
    }
    if pending.is_empty() {
        return sched.submit(job);
    }
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

/// Runs a task's body (with retries); the caller emits the outcome.
fn run_task<A, R, F>(spec: &Spec<A, F, R>, retries: u32) -> Result<R, Error>
where
    A: TaskArgs,
    F: TaskFn<A::Output, R>,
{
    let ctl = &spec.ctl;
    let mut attempt = 0;
    loop {
        if ctl.cancelled.load(Ordering::Acquire) {
            return Err(Error::Cancelled { task: ctl.name_text() });
        }
        let input = match spec.args.resolve() {
            Ok(i) => i,
            Err(cause) => return Err(Error::dependency(ctl.name_text(), cause)),
        };
        let prev = CURRENT_TASK.with(|c| c.replace(Some(ctl.clone())));
        let r = catch_unwind(AssertUnwindSafe(|| spec.body.call(input)));
        CURRENT_TASK.with(|c| *c.borrow_mut() = prev);
        match r {
            Ok(result) => return result,
            Err(payload) => {
                if attempt < retries && !ctl.cancelled.load(Ordering::Acquire) {
                    attempt += 1;
                    tracing::debug!(task = %ctl.name, attempt, "task panicked; retrying");
                    continue;
                }
                let message = panic_message(payload.as_ref());
                return Err(Error::TaskPanicked { task: ctl.name_text(), message });
            }
        }
    }
}

/// A task waiting for its inputs.
struct Waiting {
    countdown: Countdown,
    job: Mutex<Option<Arc<Job>>>,
}

impl Waiting {
    fn take(&self) -> Option<Arc<Job>> {
        match self.job.lock() {
            Ok(mut g) => g.take(),
            Err(p) => p.into_inner().take(),
        }
    }

    fn release(&self, sched: &Arc<crate::scheduler::Scheduler>) {
        if let Some(job) = self.take() {
            sched.submit(job);
        }
    }

    fn input_done(self: Arc<Self>, ok: bool, cell: &Arc<ObjectCell>, sched: &Arc<crate::scheduler::Scheduler>) {
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
                trampoline(Box::new(move || job.finish(Go::InputFailed(cause))));
            }
        }
    }
}

/// A task body: calls the user's closure once per run.
pub(crate) trait TaskFn<I, R>: Send + Sync + 'static {
    /// Runs the closure (panics propagate to the caller's `catch_unwind`).
    fn call(&self, input: I) -> Result<R, Error>;
    /// Whether the body can run more than once.
    fn rerunnable(&self) -> bool;
}

/// A re-runnable body (`Fn`).
pub(crate) struct ManyFn<F>(pub F);
impl<I, R, F: Fn(I) -> R + Send + Sync + 'static> TaskFn<I, R> for ManyFn<F> {
    fn call(&self, input: I) -> Result<R, Error> {
        Ok((self.0)(input))
    }
    fn rerunnable(&self) -> bool {
        true
    }
}

/// A one-shot body (`FnOnce`); the mutex is only ever taken once, by the
/// one run, so it is never contended.
pub(crate) struct OnceFn<F>(pub Mutex<Option<F>>);
impl<I, R, F: FnOnce(I) -> R + Send + 'static> TaskFn<I, R> for OnceFn<F> {
    fn call(&self, input: I) -> Result<R, Error> {
        let f = match self.0.lock() {
            Ok(mut g) => g.take(),
            Err(p) => p.into_inner().take(),
        };
        match f {
            Some(f) => Ok(f(input)),
            None => Err(Error::invalid("a one-shot task cannot run twice")),
        }
    }
    fn rerunnable(&self) -> bool {
        false
    }
}
