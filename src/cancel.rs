//! Task control blocks and the cancellation tree.
//!
//! Every task has a [`TaskCtl`], inside its job: its name, its
//! cancellation flag, its *parent* (the task that submitted it, if it
//! was submitted from inside one) and its *group* (if spawned in a
//! [`Group`](crate::Group)). Groups ([`GroupState`]) have a flag too, and a
//! parent task if made inside one. A task is cancelled when its own flag,
//! its group's, or any ancestor's is set ([`TaskCtl::chain_cancelled`]):
//! cancelling a task cancels what it submitted, recursively (Ray's
//! `cancel(recursive=True)`, the default), and cancelling a group cancels
//! its tasks and theirs, in O(1) on the caller.
//!
//! # Start is decided against cancellation
//! A task about to run checks its chain inside [`deciding`]: the worker
//! raises its own *deciding* flag, checks, and lowers it right before the
//! task's body starts. A canceller sets the scope's flag (SeqCst) and then
//! waits until no worker of the runtime is deciding (`Scheduler::quiesce`,
//! O(threads)). Every worker either saw the cancellation or had already
//! decided to run, and its body started before the canceller returned: once
//! `cancel` returns, no task of the scope starts. The protocol (fences,
//! flags, spare threads) is `decide`, model-checked by `tests/loom_decide.rs`.
//!
//! Fast path: [`CANCELS`] becomes 1 when the process makes its first
//! cancellation; while it is zero no chain is walked. It is written once
//! (a canceller loads it first), so the line the workers read stays
//! shared instead of bouncing on every cancel.
//!
//! # Group counts
//! A group counts its tasks: submitted, running (bodies executing now) and
//! finished by outcome (done, failed, cancelled). *Stopped* means no task
//! of the group runs and none can start any more (all finished, or the
//! group is cancelled); waiters for it are woken when `running` drops to
//! zero or the last task finishes, and by a cancel (module `watchers`,
//! model-checked by `tests/loom_watchers.rs`). The counts and what they
//! say are module `group_counts` (model-checked with `decide` by
//! `tests/loom_group.rs`).

use crate::group_counts::{Counts, Ended};
use crate::job::Job;
use crate::scheduler::Scheduler;
use crate::watchers::Watchers;
use std::borrow::Cow;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

/// 1 once any cancellation was made in this process (a fast path: zero
/// means no chain can be cancelled).
pub(crate) static CANCELS: AtomicUsize = AtomicUsize::new(0);

/// A task's name: given, or where it was submitted (`file:line`).
#[derive(Debug, Clone)]
pub(crate) enum TaskName {
    /// Given with `.name(..)` (or a registered function's name).
    Given(Cow<'static, str>),
    /// The call site of the `spawn` that submitted it.
    Caller(&'static std::panic::Location<'static>),
}

impl TaskName {
    /// The name for the timeline (no formatting, no allocation unless the
    /// name was given as an owned string).
    pub fn label(&self) -> crate::timeline::Label {
        match self {
            TaskName::Given(Cow::Borrowed(s)) => crate::timeline::Label::Static(s),
            TaskName::Given(Cow::Owned(s)) => crate::timeline::Label::Owned(s.as_str().into()),
            TaskName::Caller(l) => crate::timeline::Label::Caller(l),
        }
    }
}

impl std::fmt::Display for TaskName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TaskName::Given(n) => f.write_str(n),
            TaskName::Caller(l) => write!(f, "{}:{}", l.file(), l.line()),
        }
    }
}

/// Control block of one task (module docs). It lives in the task's job
/// (`job::Job::ctl`: one allocation for both), so a task is named by
/// its `Arc<Job>`.
pub(crate) struct TaskCtl {
    pub name: TaskName,
    pub cancelled: AtomicBool,
    parent: Option<Arc<Job>>,
    pub group: Option<Arc<GroupState>>,
}

impl std::fmt::Debug for TaskCtl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TaskCtl")
            .field("name", &self.name)
            .field("cancelled", &self.cancelled)
            .field("parent", &self.parent.as_ref().map(|p| &p.ctl.name))
            .field("group", &self.group)
            .finish()
    }
}

impl TaskCtl {
    pub fn new(name: TaskName, parent: Option<Arc<Job>>, group: Option<Arc<GroupState>>) -> TaskCtl {
        TaskCtl { name, cancelled: AtomicBool::new(false), parent, group }
    }

    pub fn name_text(&self) -> crate::error::Text {
        self.name.to_string().into()
    }

    /// Sets this task's own flag (the caller has decided the outcome).
    /// True if a reader is parked on some object (then the tasks this one
    /// submitted, cancelled with it, must be reaped at once: see `parked`).
    pub fn set_cancelled(&self) -> bool {
        self.cancelled.store(true, Ordering::SeqCst);
        note_cancel();
        crate::parked::global().cancelled()
    }

    /// True if this task, its group, or any ancestor (task or group) is
    /// cancelled.
    pub fn chain_cancelled(&self) -> bool {
        if CANCELS.load(Ordering::SeqCst) == 0 {
            return false;
        }
        let mut next = Some(self);
        while let Some(t) = next {
            if t.cancelled.load(Ordering::SeqCst) || t.group.as_ref().is_some_and(|g| g.chain_cancelled()) {
                return true;
            }
            next = t.parent.as_deref().map(|j| &j.ctl);
        }
        false
    }
}

/// True once any cancellation was made in this process (see [`CANCELS`]).
pub(crate) fn any_cancelled() -> bool {
    CANCELS.load(Ordering::Acquire) != 0
}

/// Records that a cancellation was made (the fast path's flag): a load
/// first, so that once set the line stays shared between the workers that
/// read it and cancellers do not write it again.
#[inline(always)]
fn note_cancel() {
    if CANCELS.load(Ordering::SeqCst) == 0 {
        // Release: both callers issue a SeqCst fence next.
        CANCELS.store(1, Ordering::Release);
    }
}

/// Runs `decide` (which checks a task's cancellation and, if it may run,
/// marks it started) with this worker's deciding flag raised (module docs).
pub(crate) fn deciding<R>(decide: impl FnOnce() -> R) -> R {
    crate::scheduler::with_deciding(decide)
}

/// The shared state of a [`Group`](crate::Group). Its counters, which
/// workers write on every task, have cache lines of their own, apart from
/// the flag and fields a canceller reads (so a cancel finds that line
/// shared, not held by a worker).
pub(crate) struct GroupState {
    pub name: Option<Cow<'static, str>>,
    cancelled: AtomicBool,
    parent: Option<Arc<Job>>,
    counters: Counts,
    /// Watchers of changes that may make the group stopped or finished
    /// (each called once, then re-registers if it still waits; the
    /// protocol is `watchers`, model-checked).
    watchers: Watchers,
}

impl std::fmt::Debug for GroupState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupState").field("name", &self.name).field("counts", &self.counts()).finish()
    }
}

impl GroupState {
    pub fn new(name: Option<Cow<'static, str>>, parent: Option<Arc<Job>>) -> Arc<GroupState> {
        Arc::new(GroupState {
            name,
            cancelled: AtomicBool::new(false),
            parent,
            counters: Counts::default(),
            watchers: Watchers::default(),
        })
    }

    /// True if the group or the task it was made in is cancelled.
    pub fn chain_cancelled(&self) -> bool {
        self.cancelled.load(Ordering::SeqCst) || self.parent.as_ref().is_some_and(|p| p.ctl.chain_cancelled())
    }

    /// Cancels the group (its tasks run on `sched`): sets its flag, waits
    /// until no worker is deciding whether to start a task (so none of the
    /// group starts after this returns), and leaves a note for the next
    /// runner to take the queued ones out and complete them as cancelled,
    /// off the calling thread. True if this call cancelled it. No lock and
    /// a few cache lines, plus one wake-up when jobs are queued: of a runner
    /// if a place is idle, else of the service thread, which reaps at once
    /// so that readers see the tasks cancelled while every runner is busy
    /// (`Scheduler::reap`). Inlined into `Group::cancel`, itself inlined
    /// into its caller: a cancel is rare, so its code and lines are cold,
    /// and each separate function or pointer hop is a cache miss on the
    /// UI thread (see `Scheduler::cancelled`).
    #[inline(always)]
    pub fn cancel(&self, sched: &Arc<Scheduler>) -> bool {
        // Every other line this call touches, fetched at once (see
        // `Scheduler::warm_cancel`).
        sched.warm_cancel();
        // A load and a store, not a swap: a locked swap would hold every
        // later access until its (cold) line arrives; the store lets the
        // cancel's other lines be fetched meanwhile. Two racing cancels may
        // both return true.
        if self.cancelled.load(Ordering::Acquire) {
            return false;
        }
        // Release, not SeqCst (an x86 SeqCst store is a locked swap too):
        // the SeqCst fence in `Scheduler::cancelled` orders it before the
        // reads of the protocols it takes part in.
        self.cancelled.store(true, Ordering::Release);
        note_cancel();
        sched.cancelled();
        // A watcher registers (SeqCst) before it looks at the flag, so
        // either it sees the cancellation or this sees `watched` and wakes
        // it (the waiters' lock orders a push that comes after the take).
        if self.watchers.watched() {
            self.watchers.wake();
        }
        true
    }

    pub fn submitted(&self) {
        self.counters.submitted();
    }

    /// Called inside the task's start decision (module `group_counts`).
    pub fn started(&self) {
        self.counters.started();
    }

    pub fn stopped_running(&self) {
        if self.counters.stopped_running() {
            self.watchers.wake();
        }
    }

    pub fn ended(&self, how: Ended) {
        if self.counters.ended(how) {
            self.watchers.wake();
        }
    }

    /// `(submitted, running, done, failed, cancelled)`.
    pub fn counts(&self) -> (usize, usize, usize, usize, usize) {
        self.counters.get()
    }

    /// No task runs and none can start any more (module docs).
    pub fn is_stopped(&self) -> bool {
        self.counters.is_stopped(|| self.chain_cancelled())
    }

    /// Every task submitted so far has finished (its result is known).
    pub fn is_finished(&self) -> bool {
        self.counters.is_finished()
    }

    /// Runs `f` once the group [is stopped](GroupState::is_stopped) (at once
    /// if it is), on the manta service thread: never on the thread that
    /// cancels, never on a worker.
    pub fn on_stopped(self: &Arc<Self>, f: Box<dyn FnOnce() + Send>) {
        crate::watchers::when(self, |g| &g.watchers, |g| g.is_stopped(), crate::scheduler::service, f);
    }

    /// Drops `item` (the closure and inputs of a queued task of this group,
    /// which is cancelled) once the group has stopped, on the service
    /// thread. Freeing them while the group's running tasks wind down would
    /// have those tasks wait for the allocator: a reaper freeing 700 MB of
    /// cancelled inputs held back the return of a running task, which frees
    /// its own, by 60 – 90 ms (`microbench cancel` after the process's
    /// malloc had moved such buffers from mmap to its heap). A std pool or
    /// rayon frees queued jobs only once a worker is free too.
    pub fn bury(self: &Arc<Self>, item: Box<dyn Send>) {
        self.on_stopped(Box::new(move || drop(item)));
    }

    /// Calls `f` once, on the next change that may make the group stopped
    /// or finished.
    pub fn watch(&self, f: Box<dyn FnOnce() + Send>) {
        self.watchers.watch(f);
    }
}
