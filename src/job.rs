//! A job: one unit of work the scheduler queues and runs (a task whose
//! inputs are ready, an actor mailbox drain, a lineage rebuild).
//!
//! A job is one allocation: its header (resources, priority, flags), a
//! task's control block (`cancel::TaskCtl`) and its [`Body`], the closure
//! that owns the task's spec. Whoever takes the body out first runs it
//! (a runner, a blocked reader running it targeted, a cancel completing
//! it as cancelled: one atomic swap, `claim::TakeOnce`, no lock); everyone
//! after finds it gone, and a queue entry whose body is gone is skipped and
//! counted once ([`Job::emptied`]).

use crate::claim::TakeOnce;
use crate::dispatch::{Queued, Tally};
use crate::resources::Request;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};

/// What a job is told when it is taken off the queue.
#[derive(Debug)]
pub(crate) enum Go {
    /// Run now.
    Run,
    /// The runtime shut down: complete your outputs with `RuntimeShutdown`.
    Shutdown,
    /// An input failed: complete your outputs with this cause.
    InputFailed(crate::error::Error),
    /// The task was cancelled before it ran.
    Cancelled,
}

/// A job's function taken out of its job (a cancel runs it elsewhere); it
/// is given its job and says how the tasks it ran ended (for the counts).
pub(crate) type JobFn = Box<dyn FnOnce(Go, &Arc<Job>) -> Tally + Send>;

/// A job's function, stored inside the job itself (one allocation for the
/// job's header, the task's control block and its closure, which owns the
/// task's spec). Whoever takes it out first runs it; everyone after finds
/// it gone.
pub(crate) trait Body: Send + Sync {
    /// Takes the function out, calls `claimed` (the caller takes the
    /// job's resources there), then runs it with `go` (given `job`, the job
    /// this body belongs to). `None` if it was already taken (nothing is
    /// called).
    fn take_and_run(&self, job: &Arc<Job>, claimed: &mut dyn FnMut(), go: Go) -> Option<Tally>;
    /// Takes the function out without running it.
    fn take_boxed(&self) -> Option<JobFn>;
    /// True once the function was taken out (a lock-free hint: `false`
    /// may be stale, `true` is final).
    fn is_taken(&self) -> bool;
}

impl<F: FnOnce(Go, &Arc<Job>) -> Tally + Send + 'static> Body for TakeOnce<F> {
    fn take_and_run(&self, job: &Arc<Job>, claimed: &mut dyn FnMut(), go: Go) -> Option<Tally> {
        let f = self.take()?;
        claimed();
        Some(f(go, job))
    }

    fn take_boxed(&self) -> Option<JobFn> {
        Some(Box::new(self.take()?))
    }

    fn is_taken(&self) -> bool {
        TakeOnce::is_taken(self)
    }
}

/// A runnable unit of work with the resources it needs. Shared: the queue
/// holds it, and a blocked reader may find it through the output's cell
/// (which holds it weakly) and run it directly ("targeted" jobs). Whoever
/// takes the function out of `body` runs it; the other finds it empty.
/// `Job` (the default parameter) is the type-erased form every queue
/// holds; a concrete body is unsized into it.
///
/// A task's job is also its control block (`ctl`: name, cancellation,
/// parent, group): one allocation per task for both, and the closure with
/// its spec. Tasks it submits and the task-local "current task" hold it
/// strongly; its output cells weakly, and only until it has run (so a
/// finished task's job goes when it is done, not when its outputs are
/// freed; see `cell`).
pub(crate) struct Job<B: ?Sized + Body = dyn Body> {
    pub req: Request,
    /// Higher runs first among jobs that fit (see `task::Priority`).
    pub priority: u8,
    /// Its runner may linger after it when nothing is queued (false for a
    /// task whose caller waits on another machine).
    pub(crate) linger: bool,
    /// A task (counted), not an actor drain or a rebuild.
    pub(crate) task: bool,
    /// Its function was taken out by a cancel (so its empty entry counts
    /// as a cancelled task when a runner reaches it).
    taken_by_cancel: std::sync::atomic::AtomicBool,
    /// Its task still waits for inputs (not queued yet): a blocked reader
    /// must not run it ([`Job::queued`]), its arguments are not ready.
    waiting: std::sync::atomic::AtomicBool,
    /// The task's control block (an unnamed, empty one for other jobs).
    pub ctl: crate::cancel::TaskCtl,
    pub(crate) body: B,
}

/// The function type of a job that never exists (for a dangling `Weak<Job>`).
pub(crate) type NoJob = fn(Go, &Arc<Job>) -> Tally;

/// The body of a job whose function is `F`.
type BodyOf<F> = TakeOnce<F>;

impl Job {
    pub fn new<F: FnOnce(Go) -> Tally + Send + 'static>(req: Request, run: F) -> Arc<Job> {
        Job::other(req, NORMAL, run)
    }

    /// A task's job with a priority, whose control block is `ctl` (its
    /// group, if any, is what the job belongs to for [`Scheduler::reap`]); `make` builds
    /// its function given the job's weak self (for its output cells; given
    /// by value, so a single output takes it without another count).
    pub fn task<F: FnOnce(Go, &Arc<Job>) -> Tally + Send + 'static>(
        req: Request,
        priority: u8,
        linger: bool,
        ctl: crate::cancel::TaskCtl,
        make: impl FnOnce(Weak<Job>) -> F,
    ) -> Arc<Job> {
        let job: Arc<Job<BodyOf<F>>> = Arc::new_cyclic(|me: &Weak<Job<BodyOf<F>>>| {
            let me: Weak<Job> = me.clone();
            let mut job = Job::header(req, priority, true, ctl, TakeOnce::new(make(me)));
            job.linger = linger;
            job
        });
        job
    }

    /// A job that is not a task (not counted), with a priority.
    pub fn other<F: FnOnce(Go) -> Tally + Send + 'static>(req: Request, priority: u8, run: F) -> Arc<Job> {
        let run = move |go: Go, _: &Arc<Job>| run(go);
        let ctl = crate::cancel::TaskCtl::new(crate::cancel::TaskName::Given("".into()), None, None);
        Arc::new(Job::header(req, priority, false, ctl, TakeOnce::new(run)))
    }

    fn header<B: Body>(req: Request, priority: u8, task: bool, ctl: crate::cancel::TaskCtl, body: B) -> Job<B> {
        let no = || std::sync::atomic::AtomicBool::new(false);
        Job { req, priority, linger: true, task, taken_by_cancel: no(), waiting: no(), ctl, body }
    }

    /// Takes the job's function out, so nobody else runs it (cancelling
    /// a queued task on its caller's thread without running anything).
    pub fn take_fn(&self) -> Option<JobFn> {
        let f = self.body.take_boxed();
        if f.is_some() {
            self.taken_by_cancel.store(true, Ordering::Release);
        }
        f
    }

    /// Runs the job now with `go` (used outside the scheduler: shutdown,
    /// failed inputs, cancellation). Does nothing if it already ran.
    pub fn finish(self: &Arc<Self>, go: Go) -> Tally {
        self.body.take_and_run(self, &mut || {}, go).unwrap_or_default()
    }

    /// How a queue entry whose function was already taken out counts when
    /// a runner reaches it: as a cancelled task if a cancel took it, else
    /// (a targeted run took it) as skipped, so that popping it, which
    /// counted it as started, does not leave it counted as running.
    pub(crate) fn emptied(&self) -> Tally {
        if !self.task {
            return Tally::default();
        }
        if self.taken_by_cancel.load(Ordering::Acquire) {
            Tally { cancelled: 1, ..Tally::default() }
        } else {
            Tally { skipped: 1, ..Tally::default() }
        }
    }

    /// The job if it may still be run by whoever asks: its function not
    /// taken yet, and its inputs ready, or its task cancelled (it then
    /// ends as cancelled without reading them). A runner skips one that
    /// has started: taking its function finds it empty.
    pub fn queued(self: &Arc<Self>) -> Option<Arc<Job>> {
        let ready = !self.waiting.load(Ordering::Acquire) || (self.task && self.ctl.chain_cancelled());
        (ready && !self.body.is_taken()).then(|| self.clone())
    }

    /// Marks the job as waiting for its inputs (before anything can see it
    /// waiting), or as ready (before it is queued).
    pub(crate) fn set_waiting(&self, waiting: bool) {
        self.waiting.store(waiting, Ordering::Release);
    }
}

/// The priority of jobs that do not set one (`task::Priority::Normal`).
const NORMAL: u8 = 1;

impl Queued for Arc<Job> {
    fn req(&self) -> &Request {
        &self.req
    }
    fn is_task(&self) -> bool {
        self.task
    }
    fn priority(&self) -> u8 {
        self.priority
    }
    fn cancelled(&self) -> bool {
        self.task && (self.taken_by_cancel.load(Ordering::Acquire) || self.ctl.chain_cancelled())
    }
}
