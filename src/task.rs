//! Task builders: `rt.task()`, its options, and the `spawn*` methods.
//!
//! One closure rule: every `spawn*` method takes a one-shot closure
//! (`FnOnce`, which may move its captures) — on `Runtime`, on a builder, on
//! a [`Group`](crate::Group). A task that may run more than once (retries
//! after a panic or a chosen error, and rebuilding its output from lineage
//! when the store dropped it) is asked for by type: [`TaskBuilder::rerunnable`]
//! gives a builder whose `spawn*` methods take `Fn` closures and which has
//! [`retries`](TaskBuilder::retries) and [`retry_if`](TaskBuilder::retry_if).
//! Nothing switches silently: a one-shot task simply has no retry options.
//!
//! Names: a task is named by [`TaskBuilder::name`], else by where it was
//! submitted (`src/app.rs:42`, through `#[track_caller]`), which is what
//! errors show.
//!
//! Bodies may return plain values (`spawn`, `spawn_with`) or their own
//! errors (`spawn_try`, `spawn_try_with`: `Result<T, E>`; the reader gets
//! [`Error::TaskFailed`](crate::Error::TaskFailed), downcastable to `E`).
//! A task submitted from inside another task is its child: cancelling the
//! parent cancels it (Ray's recursive cancel, see `cancel`).

use crate::args::{MultiReturn, TaskArgs};
use crate::cancel::{GroupState, TaskCtl, TaskName};
use crate::cell::ObjectCell;
use crate::error::{Error, Text};
use crate::exec::{
    no_lineage, reject, submit, Emit, ManyFn, ManyTry, Multi, OnceFn, OnceTry, Plan, RetryIf, Single, Spec, TaskLineage,
};
use crate::job::Job;
use crate::refs::ObjectRef;
use crate::runtime::Runtime;
use crate::scheduler::Scheduler;
use std::any::Any;
use std::borrow::Cow;
use std::marker::PhantomData;
use std::sync::{Arc, Weak};

pub use crate::exec::{check_cancelled, is_cancelled};

/// Scheduling priority: among tasks whose resources are free, a higher
/// priority starts first; within one, the oldest. Default `Normal`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub enum Priority {
    /// After every `Normal` and `High` task that can run.
    Low,
    /// The default.
    #[default]
    Normal,
    /// Before every `Normal` and `Low` task that can run (e.g. what a UI
    /// shows right now).
    High,
}

/// The builder kind of one-shot tasks (`FnOnce` closures): the default.
#[derive(Debug, Clone, Copy)]
pub enum OneShot {}

/// The builder kind of re-runnable tasks (`Fn` closures): retries and
/// lineage ([`TaskBuilder::rerunnable`]).
#[derive(Debug, Clone, Copy)]
pub enum Rerunnable {}

/// Options of one task. Defaults: 1 CPU, no custom resources, no retries,
/// normal priority, named after where it is submitted.
#[derive(Clone)]
pub struct TaskOptions {
    pub(crate) name: Option<Cow<'static, str>>,
    pub(crate) cpus: f64,
    pub(crate) resources: Vec<(Text, f64)>,
    pub(crate) retries: u32,
    pub(crate) retry_if: Option<RetryIf>,
    pub(crate) priority: Priority,
    pub(crate) object_id: Option<crate::id::ObjectId>,
    /// False for a task whose caller waits elsewhere (see
    /// [`TaskBuilder::caller_afar`]).
    pub(crate) linger: bool,
    pub(crate) lineage: crate::lineage::Policy,
    pub(crate) group: Option<Arc<GroupState>>,
}

impl std::fmt::Debug for TaskOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TaskOptions")
            .field("name", &self.name)
            .field("cpus", &self.cpus)
            .field("resources", &self.resources)
            .field("retries", &self.retries)
            .field("priority", &self.priority)
            .finish()
    }
}

impl Default for TaskOptions {
    fn default() -> Self {
        TaskOptions {
            name: None,
            cpus: 1.0,
            resources: Vec::new(),
            retries: 0,
            retry_if: None,
            priority: Priority::Normal,
            object_id: None,
            linger: true,
            group: None,
            lineage: Default::default(),
        }
    }
}

/// Builds a task with options: `rt.task().name("resize").cpus(0.5).spawn(f)`.
/// One closure rule: every `spawn*` takes a one-shot `FnOnce`, here as on
/// [`Runtime`](crate::Runtime) and [`Group`](crate::Group); a task that may
/// run more than once (retried, or rebuilt from lineage) is asked for by
/// type with [`TaskBuilder::rerunnable`], whose `spawn*` take `Fn`.
///
/// Retries need a re-runnable task, by type:
/// ```compile_fail
/// let rt = manta::Runtime::builder().num_cpus(1).build().unwrap();
/// let r = rt.task().retries(2).spawn(|| 1); // no `retries` on a one-shot task
/// ```
/// ```
/// let rt = manta::Runtime::builder().num_cpus(1).build().unwrap();
/// let r = rt.task().rerunnable().retries(2).spawn(|| 1);
/// assert_eq!(*r.get().unwrap(), 1);
/// ```
#[must_use = "a TaskBuilder does nothing until spawned"]
pub struct TaskBuilder<'rt, K = OneShot> {
    rt: &'rt Runtime,
    opts: TaskOptions,
    _kind: PhantomData<K>,
}

impl<K> std::fmt::Debug for TaskBuilder<'_, K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TaskBuilder").field("opts", &self.opts).finish()
    }
}

impl<'rt> TaskBuilder<'rt, OneShot> {
    pub(crate) fn new(rt: &'rt Runtime) -> Self {
        TaskBuilder { rt, opts: TaskOptions::default(), _kind: PhantomData }
    }

    pub(crate) fn in_group(mut self, group: &Arc<GroupState>) -> Self {
        self.opts.group = Some(group.clone());
        self
    }

    /// A re-runnable task: `spawn*` then take `Fn` closures, and the task
    /// may run again after a panic ([`TaskBuilder::retries`]) or be rebuilt
    /// from lineage when the store dropped its output under memory pressure.
    pub fn rerunnable(self) -> TaskBuilder<'rt, Rerunnable> {
        TaskBuilder { rt: self.rt, opts: self.opts, _kind: PhantomData }
    }
}

impl<'rt, K> TaskBuilder<'rt, K> {
    /// Names the task (used in errors). Default: where it was submitted.
    pub fn name(mut self, name: impl Into<Cow<'static, str>>) -> Self {
        self.opts.name = Some(name.into());
        self
    }

    /// CPUs the task holds while it runs (fractional allowed). Default 1.
    /// More than the runtime has fails the task with `Error::Infeasible`; a
    /// negative or non-finite amount with `Error::InvalidArgument`.
    pub fn cpus(mut self, cpus: f64) -> Self {
        self.opts.cpus = cpus;
        self
    }

    /// An amount of a custom resource the task holds while it runs (zero
    /// asks for none; more than the runtime has: `Error::Infeasible`; a
    /// negative or non-finite amount: `Error::InvalidArgument`).
    pub fn resource(mut self, name: &str, amount: f64) -> Self {
        self.opts.resources.push((name.into(), amount));
        self
    }

    /// The task's priority (see [`Priority`]). Default `Normal`.
    pub fn priority(mut self, priority: Priority) -> Self {
        self.opts.priority = priority;
        self
    }

    /// The task's caller waits on another machine (a peer submitted it
    /// over the network): when it finishes and nothing else is queued, its
    /// runner gives its thread back at once instead of spinning briefly
    /// for the caller's next task, which is a network round trip away (the
    /// spin would only take a core from the threads that carry the result
    /// back). Default: off (the runner lingers, so a local caller's next
    /// task starts without a wake-up).
    pub fn caller_afar(mut self) -> Self {
        self.opts.linger = false;
        self
    }

    /// Gives the task's (first) output this id instead of a fresh one (see
    /// `backend::Backend::task_with_id`).
    pub(crate) fn with_object_id(mut self, id: crate::id::ObjectId) -> Self {
        self.opts.object_id = Some(id);
        self
    }

    /// The name of a task being spawned: given, else the caller's.
    #[track_caller]
    fn task_name(&self) -> TaskName {
        match &self.opts.name {
            Some(n) => TaskName::Given(n.clone()),
            None => TaskName::Caller(std::panic::Location::caller()),
        }
    }

    /// How a one-output task makes its output cell (given its job) and its
    /// ref.
    fn single<R>(&self) -> impl FnOnce(Option<Weak<Job>>) -> (Single, ObjectRef<R>) {
        single(self.rt, self.opts.object_id)
    }

    /// How a task with the outputs of `R` makes its cells and their refs.
    fn multi<R: MultiReturn>(&self) -> impl FnOnce(Option<Weak<Job>>) -> (Multi, R::Refs) {
        let (store, id) = (self.rt.store().clone(), self.opts.object_id.or_else(|| recorded_id(self.rt)));
        move |producer| {
            let mut cells = vec![ObjectCell::pending_as(id, producer.clone())];
            cells.extend((1..R::N).map(|_| ObjectCell::pending(producer.clone())));
            let refs = R::refs(&cells);
            (Multi { cells, store }, refs)
        }
    }

    /// Validates the options: the task's plan, control block and
    /// scheduler, with `outputs` handed back; or, if it cannot run (e.g.
    /// infeasible), its outputs made and completed with the error.
    #[allow(clippy::type_complexity)]
    fn prepare<R, E, O, M>(self, name: TaskName, outputs: M) -> Result<(Plan, TaskCtl, &'rt Arc<Scheduler>, M), O>
    where
        E: Emit<R>,
        M: FnOnce(Option<Weak<Job>>) -> (E, O),
    {
        let sched = self.rt.scheduler();
        let group = self.opts.group;
        let req = match sched.totals().request(&name, self.opts.cpus, &self.opts.resources) {
            Ok(r) => r,
            Err(e) => {
                let (out, made) = outputs(None);
                reject(sched, (group.as_ref(), &name), out, e);
                return Err(made);
            }
        };
        let plan = Plan {
            req,
            retries: self.opts.retries,
            retry_if: self.opts.retry_if,
            priority: self.opts.priority as u8,
            linger: self.opts.linger,
            lineage: self.opts.lineage,
        };
        Ok((plan, TaskCtl::new(name, crate::exec::current_task(), group), sched, outputs))
    }

    /// Submits (or rejects) a task without lineage: its spec moves into
    /// the job's own allocation. Returns what `outputs` made (its refs).
    fn go<A, R, B, E, O>(
        self,
        name: TaskName,
        spec: Spec<A, B, R>,
        outputs: impl FnOnce(Option<Weak<Job>>) -> (E, O),
    ) -> O
    where
        A: TaskArgs,
        R: Send + 'static,
        B: crate::exec::TaskFn<A::Output, R>,
        E: Emit<R>,
    {
        match self.prepare(name, outputs) {
            Ok((plan, ctl, sched, outputs)) => submit(sched, plan, ctl, spec, outputs, no_lineage),
            Err(made) => made,
        }
    }

    /// Submits (or rejects) a re-runnable task whose output keeps lineage
    /// (unless its options say not to): its spec is shared with the record.
    fn go_shared<A, R, B, E, O>(
        self,
        name: TaskName,
        spec: Spec<A, B, R>,
        outputs: impl FnOnce(Option<Weak<Job>>) -> (E, O),
        make: crate::exec::MakeLineage<A, B, R>,
    ) -> O
    where
        A: TaskArgs,
        R: Send + 'static,
        B: crate::exec::TaskFn<A::Output, R> + Sync,
        E: Emit<R>,
    {
        let (plan, ctl, sched, outputs) = match self.prepare(name, outputs) {
            Ok(p) => p,
            Err(made) => return made,
        };
        let spec = Arc::new(spec);
        match crate::exec::lineage_of(&spec, &plan, make, sched) {
            Some(lineage) => submit(sched, plan, ctl, spec, outputs, lineage),
            None => submit(sched, plan, ctl, spec, outputs, no_lineage),
        }
    }
}

/// With the timeline on, a fresh id for a task's (first) output, drawn
/// now on the submitting thread: the worker's record names the output,
/// and an id set at construction is read without the lazy claim (a
/// compare-exchange on the worker's turn, which recording lengthens).
/// `None` with it off: the id is drawn only if someone asks.
fn recorded_id(rt: &Runtime) -> Option<crate::id::ObjectId> {
    rt.scheduler().recorder.is_on().then(crate::id::ObjectId::fresh)
}

/// How a one-output task of `rt` makes its output cell (given its job)
/// and its ref; `id`: the output's id (`None`: a fresh one).
fn single<R>(
    rt: &Runtime,
    id: Option<crate::id::ObjectId>,
) -> impl FnOnce(Option<Weak<Job>>) -> (Single, ObjectRef<R>) {
    // A type that is never charged needs no store to be stored.
    let store = (!rt.store().never_charged::<R>()).then(|| rt.store().clone());
    let id = id.or_else(|| recorded_id(rt));
    move |producer| {
        let cell = ObjectCell::pending_as(id, producer);
        (Single { cell: cell.clone(), store }, ObjectRef::from_cell(cell))
    }
}

/// `Runtime::spawn` and `Group::spawn` (`group`): `rt.task().spawn(f)`
/// without the builder (its options are all defaults, so they are not
/// built, checked and moved for every task: a tenth of a trivial task's
/// cost). Falls back to the builder when the default request is infeasible
/// (a runtime without a whole CPU), so the error is the builder's.
#[track_caller]
pub(crate) fn spawn_default<R, F>(rt: &Runtime, group: Option<&Arc<GroupState>>, f: F) -> ObjectRef<R>
where
    R: Any + Send + Sync,
    F: FnOnce() -> R + Send + 'static,
{
    let sched = rt.scheduler();
    let name = TaskName::Caller(std::panic::Location::caller());
    let Ok(req) = sched.totals().request(&name, 1.0, &[]) else {
        return match group {
            Some(g) => TaskBuilder::new(rt).in_group(g).spawn(f),
            None => TaskBuilder::new(rt).spawn(f),
        };
    };
    let plan = Plan {
        req,
        retries: 0,
        retry_if: None,
        priority: Priority::Normal as u8,
        linger: true,
        lineage: Default::default(),
    };
    let ctl = TaskCtl::new(name, crate::exec::current_task(), group.cloned());
    let spec = Spec::new((), OnceFn(std::cell::Cell::new(Some(move |()| f()))));
    submit(sched, plan, ctl, spec, single(rt, None), no_lineage)
}

impl<'rt> TaskBuilder<'rt, OneShot> {
    /// Submits a task with no arguments; returns its result's ref at once.
    #[track_caller]
    pub fn spawn<R, F>(self, f: F) -> ObjectRef<R>
    where
        R: Any + Send + Sync,
        F: FnOnce() -> R + Send + 'static,
    {
        self.spawn_with((), move |()| f())
    }

    /// Submits a task that runs when all `args` are ready; the closure
    /// receives the resolved tuple (`ObjectRef<T>` becomes `Arc<T>`).
    #[track_caller]
    pub fn spawn_with<A, R, F>(self, args: A, f: F) -> ObjectRef<R>
    where
        A: TaskArgs,
        R: Any + Send + Sync,
        F: FnOnce(A::Output) -> R + Send + 'static,
    {
        let (name, outputs) = (self.task_name(), self.single());
        self.go(name, Spec::new(args, OnceFn(std::cell::Cell::new(Some(f)))), outputs)
    }

    /// Submits a task whose body returns its own errors: an `Err(e)` is the
    /// task's [`Error::TaskFailed`], from which readers get `e` back with
    /// [`Error::downcast_ref`]. `?` on a nested `get` works (`E = manta::Error`).
    #[track_caller]
    pub fn spawn_try<R, E, F>(self, f: F) -> ObjectRef<R>
    where
        R: Any + Send + Sync,
        E: std::error::Error + Send + Sync + 'static,
        F: FnOnce() -> Result<R, E> + Send + 'static,
    {
        self.spawn_try_with((), move |()| f())
    }

    /// [`TaskBuilder::spawn_try`] with arguments.
    #[track_caller]
    pub fn spawn_try_with<A, R, E, F>(self, args: A, f: F) -> ObjectRef<R>
    where
        A: TaskArgs,
        R: Any + Send + Sync,
        E: std::error::Error + Send + Sync + 'static,
        F: FnOnce(A::Output) -> Result<R, E> + Send + 'static,
    {
        let (name, outputs) = (self.task_name(), self.single());
        self.go(name, Spec::new(args, OnceTry(std::cell::Cell::new(Some(f)), PhantomData)), outputs)
    }

    /// Submits a task returning a tuple; each element becomes its own
    /// object: `let (a, b) = rt.task().spawn_multi((), |()| (1, "x"));`
    #[track_caller]
    pub fn spawn_multi<A, R, F>(self, args: A, f: F) -> R::Refs
    where
        A: TaskArgs,
        R: MultiReturn,
        F: FnOnce(A::Output) -> R + Send + 'static,
    {
        let (name, outputs) = (self.task_name(), self.multi::<R>());
        self.go(name, Spec::new(args, OnceFn(std::cell::Cell::new(Some(f)))), outputs)
    }
}

impl<'rt> TaskBuilder<'rt, Rerunnable> {
    /// Whether the store keeps this task's lineage (default true): with
    /// `false` its output is never dropped from memory to be rebuilt by
    /// running the task again; when memory is short it is spilled
    /// (spillable type and a spill directory) or stays in memory (pinned),
    /// like a `put`. For tasks with side effects that must not run twice,
    /// or whose inputs should not be kept alive by the record.
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

    /// How many times to run the task again after a panic (or an error
    /// [`TaskBuilder::retry_if`] accepts). Default 0. A cancelled task is
    /// never retried.
    pub fn retries(mut self, n: u32) -> Self {
        self.opts.retries = n;
        self
    }

    /// Which errors a body returns (`spawn_try`) are worth running it again
    /// for, within [`TaskBuilder::retries`] (Ray's `retry_exceptions`). By
    /// default only panics are retried; the predicate sees returned errors
    /// only (a panic is always retried while retries are left). E.g.
    /// `.retry_if(|e| e.downcast_ref::<std::io::Error>().is_some())`.
    pub fn retry_if(mut self, pred: impl Fn(&Error) -> bool + Send + Sync + 'static) -> Self {
        self.opts.retry_if = Some(Arc::new(pred));
        self
    }

    /// Submits a re-runnable task with no arguments.
    #[track_caller]
    pub fn spawn<R, F>(self, f: F) -> ObjectRef<R>
    where
        R: Any + Send + Sync,
        F: Fn() -> R + Send + Sync + 'static,
    {
        self.spawn_with((), move |()| f())
    }

    /// Submits a re-runnable task that runs when all `args` are ready.
    #[track_caller]
    pub fn spawn_with<A, R, F>(self, args: A, f: F) -> ObjectRef<R>
    where
        A: TaskArgs,
        R: Any + Send + Sync,
        F: Fn(A::Output) -> R + Send + Sync + 'static,
    {
        let (name, outputs) = (self.task_name(), self.single());
        self.go_shared(name, Spec::new(args, ManyFn(f)), outputs, TaskLineage::<A, ManyFn<F>, R>::record)
    }

    /// A re-runnable [`spawn_try`](TaskBuilder::spawn_try).
    #[track_caller]
    pub fn spawn_try<R, E, F>(self, f: F) -> ObjectRef<R>
    where
        R: Any + Send + Sync,
        E: std::error::Error + Send + Sync + 'static,
        F: Fn() -> Result<R, E> + Send + Sync + 'static,
    {
        self.spawn_try_with((), move |()| f())
    }

    /// A re-runnable [`spawn_try_with`](TaskBuilder::spawn_try_with).
    #[track_caller]
    pub fn spawn_try_with<A, R, E, F>(self, args: A, f: F) -> ObjectRef<R>
    where
        A: TaskArgs,
        R: Any + Send + Sync,
        E: std::error::Error + Send + Sync + 'static,
        F: Fn(A::Output) -> Result<R, E> + Send + Sync + 'static,
    {
        let (name, outputs) = (self.task_name(), self.single());
        let lineage = TaskLineage::<A, ManyTry<F, E>, R>::record as crate::exec::MakeLineage<A, ManyTry<F, E>, R>;
        self.go_shared(name, Spec::new(args, ManyTry(f, PhantomData)), outputs, lineage)
    }

    /// A re-runnable [`spawn_multi`](TaskBuilder::spawn_multi) (retried
    /// after a panic; multiple outputs are not rebuilt from lineage).
    #[track_caller]
    pub fn spawn_multi<A, R, F>(self, args: A, f: F) -> R::Refs
    where
        A: TaskArgs,
        R: MultiReturn,
        F: Fn(A::Output) -> R + Send + Sync + 'static,
    {
        let (name, outputs) = (self.task_name(), self.multi::<R>());
        self.go(name, Spec::new(args, ManyFn(f)), outputs)
    }
}
