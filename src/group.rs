//! Task groups: a job of many tasks, cancelled with one call.
//!
//! The docs are on [`Group`] (this module is private).

use crate::cancel::GroupState;
use crate::refs::ObjectRef;
use crate::runtime::Runtime;
use crate::task::TaskBuilder;
use std::any::Any;
use std::borrow::Cow;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A group of tasks that can be cancelled, waited for and counted
/// together. Cheap to clone: clones share the group.
///
/// `let g = rt.group();` then `g.spawn(..)` / `g.task().name(..).spawn(..)`
/// for each item. [`Group::cancel`] is O(1) on the calling thread for any
/// number of tasks and bytes: once it returns, no queued task of the group
/// starts; running ones see [`is_cancelled`](crate::is_cancelled) turn
/// true (so do tasks they submitted, recursively); the queued ones are
/// taken out of the queue and their results completed as
/// [`Error::Cancelled`](crate::Error::Cancelled) by a runner or the manta
/// service thread, never on the caller's (so `on_ready` callbacks of
/// cancelled tasks do not run there either). Their closures and arguments
/// are dropped on the service thread once the group
/// [has stopped](Group::is_stopped): freed while the group's running tasks
/// wind down, they would have those tasks wait for the allocator (a 700 MB
/// free held a running task's return back by 60 – 90 ms), and a std pool
/// or rayon frees its queued jobs only once a worker is free too.
///
/// Two events, both observable: a task's *result is known* (its ref is
/// ready), and *the group has stopped* ([`Group::is_stopped`],
/// [`Group::wait_stopped`]): no task of it runs and none can start any
/// more. After a cancel, a task that was running keeps running until it
/// returns (it polls `is_cancelled()`), and what it returns is recorded as
/// `Cancelled`; `wait_stopped` tells when the last one did. [`Group::progress`] counts tasks by state.
///
/// This is in the spirit of tokio's `JoinSet` and `CancellationToken` and
/// of Ray's `cancel(recursive=True)`; rayon's `scope` is the borrowing
/// counterpart, which manta tasks cannot be (their results are objects that
/// outlive any stack frame, and closures run on other threads after the
/// call returns): inside a task, use `rayon::scope`/`par_iter` to borrow.
/// A group made inside a task is that task's child: cancelling the task
/// cancels the group.
#[derive(Clone)]
pub struct Group {
    /// The group's state and its runtime's scheduler, held here as well as
    /// in the handle: what `cancel` needs, one pointer away from the
    /// caller (a cancel's lines are cold; each hop is a cache miss).
    state: Arc<GroupState>,
    sched: Arc<crate::scheduler::Scheduler>,
    inner: Arc<Handle>,
}

/// The last handle's drop cancels the group if asked to.
struct Handle {
    state: Arc<GroupState>,
    sched: Arc<crate::scheduler::Scheduler>,
    rt: Runtime,
    cancel_on_drop: bool,
}

impl Drop for Handle {
    fn drop(&mut self) {
        if self.cancel_on_drop {
            self.state.cancel(&self.sched);
        }
    }
}

impl std::fmt::Debug for Group {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Group").field("name", &self.state.name).field("progress", &self.progress()).finish()
    }
}

/// How many tasks of a group are in each state ([`Group::progress`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Progress {
    /// Tasks spawned in the group so far.
    pub total: usize,
    /// Waiting for their inputs, resources or a thread.
    pub queued: usize,
    /// Running now.
    pub running: usize,
    /// Finished with a value.
    pub done: usize,
    /// Finished with an error (a panic, an error they returned, a failed
    /// input, ...), not counting cancellations.
    pub failed: usize,
    /// Cancelled (before or while running).
    pub cancelled: usize,
}

impl Progress {
    /// Tasks whose result is known (`done + failed + cancelled`).
    pub fn finished(&self) -> usize {
        self.done + self.failed + self.cancelled
    }
}

impl Runtime {
    /// A new task group (see [`Group`]).
    pub fn group(&self) -> Group {
        Group::new(self, None, false)
    }

    /// A new task group with a name (shown in its `Debug`) and options;
    /// see [`GroupBuilder`].
    pub fn group_builder(&self) -> GroupBuilder<'_> {
        GroupBuilder { rt: self, name: None, cancel_on_drop: false }
    }
}

/// Configures a [`Group`]: `rt.group_builder().name("thumbnails").cancel_on_drop().build()`.
#[derive(Debug)]
#[must_use = "a GroupBuilder does nothing until built"]
pub struct GroupBuilder<'rt> {
    rt: &'rt Runtime,
    name: Option<Cow<'static, str>>,
    cancel_on_drop: bool,
}

impl GroupBuilder<'_> {
    /// Names the group.
    pub fn name(mut self, name: impl Into<Cow<'static, str>>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Cancels the group when its last handle is dropped (default: the
    /// tasks run on, as tasks whose refs were dropped do). A task that
    /// captures a clone of the group keeps it alive, so let tasks use
    /// [`is_cancelled`](crate::is_cancelled) rather than hold the group.
    pub fn cancel_on_drop(mut self) -> Self {
        self.cancel_on_drop = true;
        self
    }

    /// Makes the group.
    pub fn build(self) -> Group {
        Group::new(self.rt, self.name, self.cancel_on_drop)
    }
}

impl Group {
    fn new(rt: &Runtime, name: Option<Cow<'static, str>>, cancel_on_drop: bool) -> Group {
        let state = GroupState::new(name, crate::exec::current_task());
        let sched = rt.scheduler().clone();
        let inner = Arc::new(Handle { state: state.clone(), sched: sched.clone(), rt: rt.clone(), cancel_on_drop });
        Group { state, sched, inner }
    }

    /// Submits a task in the group (like [`Runtime::spawn`]).
    #[track_caller]
    pub fn spawn<R, F>(&self, f: F) -> ObjectRef<R>
    where
        R: Any + Send + Sync,
        F: FnOnce() -> R + Send + 'static,
    {
        crate::task::spawn_default(&self.inner.rt, Some(&self.state), f)
    }

    /// Submits a task with arguments in the group (like [`Runtime::spawn_with`]).
    #[track_caller]
    pub fn spawn_with<A, R, F>(&self, args: A, f: F) -> ObjectRef<R>
    where
        A: crate::TaskArgs,
        R: Any + Send + Sync,
        F: FnOnce(A::Output) -> R + Send + 'static,
    {
        self.task().spawn_with(args, f)
    }

    /// A task with options, in the group.
    pub fn task(&self) -> TaskBuilder<'_> {
        self.inner.rt.task().in_group(&self.state)
    }

    /// Cancels every task of the group: no queued task starts once this
    /// returns, and their results are completed as
    /// [`Error::Cancelled`](crate::Error::Cancelled) off this thread;
    /// running tasks see [`is_cancelled`](crate::is_cancelled) turn true,
    /// and whatever they return is recorded as `Cancelled` too. Returns
    /// false if it was already cancelled. O(1) on the caller (plus a wait of a few
    /// nanoseconds per worker thread for any that is deciding, right now,
    /// whether to start a task).
    #[inline]
    pub fn cancel(&self) -> bool {
        self.state.cancel(&self.sched)
    }

    /// True once the group (or the task it was made in) is cancelled.
    pub fn is_cancelled(&self) -> bool {
        self.state.chain_cancelled()
    }

    /// How many tasks are in each state. A task is counted as finished
    /// once its result is stored: a ref may be ready a moment before the
    /// count includes it, never after.
    pub fn progress(&self) -> Progress {
        let (total, running, done, failed, cancelled) = self.state.counts();
        let queued = total.saturating_sub(running + done + failed + cancelled);
        Progress { total, queued, running, done, failed, cancelled }
    }

    /// Tasks of the group running now.
    pub fn running(&self) -> usize {
        self.progress().running
    }

    /// True when no task of the group runs and none can start any more
    /// (every task finished, or the group is cancelled and the running
    /// ones returned). Distinct from "every result is known": after a
    /// cancel, queued tasks' results become known on the service thread.
    pub fn is_stopped(&self) -> bool {
        self.state.is_stopped()
    }

    /// Blocks until the group [is stopped](Group::is_stopped) or `timeout`
    /// passes (`None`: no limit); true if stopped. Inside a task this
    /// blocks like `get` (the worker lends its CPUs and place).
    pub fn wait_stopped(&self, timeout: Option<Duration>) -> bool {
        self.wait(timeout, GroupState::is_stopped)
    }

    /// Runs `f` once the group [is stopped](Group::is_stopped) (at once if it
    /// is), on the manta service thread: never on the thread that cancels,
    /// never on a worker. For a GUI: have `f` post a message to the UI's
    /// event loop.
    pub fn on_stopped(&self, f: impl FnOnce() + Send + 'static) {
        self.state.on_stopped(Box::new(f));
    }

    /// Blocks until every task spawned so far has finished (its result is
    /// known) or `timeout` passes; true if they all have.
    pub fn join(&self, timeout: Option<Duration>) -> bool {
        self.wait(timeout, GroupState::is_finished)
    }

    fn wait(&self, timeout: Option<Duration>, cond: fn(&GroupState) -> bool) -> bool {
        let state = &self.state;
        let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
        let parker = crate::cell::thread_parker();
        let mut reaped = false;
        loop {
            // One registration per round: the group wakes every watcher on
            // each change that may matter, and we look again.
            let woken = Arc::new(AtomicBool::new(false));
            let (flag, p) = (woken.clone(), parker.clone());
            state.watch(Box::new(move || {
                flag.store(true, Ordering::Release);
                p.unpark();
            }));
            if cond(state) {
                return true;
            }
            if !reaped && state.chain_cancelled() {
                // Its queued tasks end now, not when a busy runner frees.
                reaped = true;
                self.sched.reap(true);
            }
            let mut ready = || woken.load(Ordering::Acquire) || cond(state);
            if !crate::scheduler::block_until(&parker, deadline, &mut || None, &mut ready) {
                return cond(state);
            }
        }
    }
}
