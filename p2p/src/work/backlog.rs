//! The backlog: tasks waiting for room, work this node cannot run itself
//! whose every capable peer refused it as busy (or took this node for
//! dead, see `exec`). Busy is not infeasible: such a task waits here, in
//! the order it came, and is placed again when room may have come
//! (`replace`):
//! one task when a peer finishes one of this node's tasks, one per
//! heartbeat tick (room made by other nodes' work is not seen here), and
//! all of them when a node joins or comes back.
//!
//! Invariants: a task in the backlog holds its retry (taken out of
//! `results`, so no other re-placement can send it meanwhile: a peer's
//! death, say); each is handed out once; its refs are dropped outside the
//! lock.

use super::results::Retry;
use crate::sync::lock_unpoisoned;
use manta::{AnyRef, ObjectId};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

/// One task in the backlog: its id, how to send it, the refs it keeps
/// alive.
pub(super) type Waiting = (ObjectId, Retry, Vec<AnyRef>);

/// The backlog (FIFO).
#[derive(Default)]
pub(super) struct Backlog {
    queue: Mutex<VecDeque<Waiting>>,
    /// True while the queue may hold a task (read without the lock on
    /// every completion).
    some: AtomicBool,
}

impl Backlog {
    /// Adds `task` at the back.
    pub(super) fn push(&self, task: Waiting) {
        let mut q = lock_unpoisoned(&self.queue);
        q.push_back(task);
        self.some.store(true, Ordering::Release);
    }

    /// The oldest task, if any.
    pub(super) fn pop(&self) -> Option<Waiting> {
        if !self.some.load(Ordering::Acquire) {
            return None;
        }
        let mut q = lock_unpoisoned(&self.queue);
        let t = q.pop_front();
        if q.is_empty() {
            self.some.store(false, Ordering::Release);
        }
        t
    }

    /// Every task, oldest first.
    pub(super) fn take_all(&self) -> Vec<Waiting> {
        if !self.some.load(Ordering::Acquire) {
            return Vec::new();
        }
        let mut q = lock_unpoisoned(&self.queue);
        self.some.store(false, Ordering::Release);
        q.drain(..).collect()
    }
}
