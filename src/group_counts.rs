//! A group's task counts and what they say: whether the group is
//! *stopped* (no task of it runs, and none can start any more) or
//! *finished* (every task submitted so far has a result). The counts are
//! kept by the tasks themselves (`exec`), read by anyone (`Group::counts`,
//! `wait_stopped`, `join`, the burial of a cancelled group's closures).
//!
//! # Protocol
//! A task of the group is counted `submitted` when it is made, `running`
//! from inside its start decision (module `decide`: the worker's deciding
//! flag is raised, so a canceller's `quiesce` waits for the increment)
//! until its body returns, and `done`, `failed` or `cancelled` once its
//! result is stored. A reader that loads `running == 0` after a
//! canceller's `quiesce` returned therefore knows that no body of the
//! group runs and none will start: a task that decided to start before
//! the cancellation counted itself running before its flag came down
//! (Release, paired with `quiesce`'s Acquire), and one that decides after
//! it sees the cancellation. A body that ended is ordered before the
//! decrement that a reader's `running == 0` reads (AcqRel / Acquire).
//!
//! Invariants: `running` is at most `submitted`; `done + failed +
//! cancelled` never exceeds `submitted`, and equals it once every task
//! submitted so far has its result. `tests/loom_group.rs` checks, with
//! the real `decide` protocol, that a group seen stopped after a cancel
//! never has a body start later, and catches a seeded bug (counting a
//! task running after its start decision instead of inside it).

use crate::sync::{AtomicUsize, Ordering};

/// How a task of the group ended.
#[derive(Debug, Clone, Copy)]
pub enum Ended {
    /// With a value.
    Done,
    /// With an error (not a cancellation).
    Failed,
    /// Cancelled (before or while running).
    Cancelled,
}

/// A group's task counts (module docs). On cache lines of their own:
/// workers write them on every task, apart from the group's flag, which
/// a canceller writes.
#[repr(align(128))]
#[derive(Debug, Default)]
pub struct Counts {
    submitted: AtomicUsize,
    running: AtomicUsize,
    done: AtomicUsize,
    failed: AtomicUsize,
    cancelled: AtomicUsize,
}

impl Counts {
    /// A task of the group was made.
    pub fn submitted(&self) {
        self.submitted.fetch_add(1, Ordering::AcqRel);
    }

    /// A task's body is about to start: called inside its start decision
    /// (module docs).
    pub fn started(&self) {
        self.running.fetch_add(1, Ordering::AcqRel);
    }

    /// A task's body returned. True if no body of the group runs now
    /// (a watcher may find the group stopped).
    pub fn stopped_running(&self) -> bool {
        self.running.fetch_sub(1, Ordering::AcqRel) == 1
    }

    /// A task's result is stored. True if every task submitted so far has
    /// its result now (a watcher may find the group finished).
    pub fn ended(&self, how: Ended) -> bool {
        let counter = match how {
            Ended::Done => &self.done,
            Ended::Failed => &self.failed,
            Ended::Cancelled => &self.cancelled,
        };
        counter.fetch_add(1, Ordering::AcqRel);
        self.is_finished()
    }

    fn finished(&self) -> usize {
        self.done.load(Ordering::Acquire) + self.failed.load(Ordering::Acquire) + self.cancelled.load(Ordering::Acquire)
    }

    /// `(submitted, running, done, failed, cancelled)`.
    pub fn get(&self) -> (usize, usize, usize, usize, usize) {
        (
            self.submitted.load(Ordering::Acquire),
            self.running.load(Ordering::Acquire),
            self.done.load(Ordering::Acquire),
            self.failed.load(Ordering::Acquire),
            self.cancelled.load(Ordering::Acquire),
        )
    }

    /// No body of the group runs and none can start any more, given
    /// whether the group is `cancelled` (read after the count of running
    /// bodies, as the module docs require of a reader after a cancel).
    pub fn is_stopped(&self, cancelled: impl FnOnce() -> bool) -> bool {
        self.running.load(Ordering::Acquire) == 0 && (cancelled() || self.is_finished())
    }

    /// Every task submitted so far has its result.
    pub fn is_finished(&self) -> bool {
        self.finished() >= self.submitted.load(Ordering::Acquire)
    }
}
