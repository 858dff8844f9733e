//! The actor mailbox: calls run one at a time, in the order they were pushed.
//!
//! # Protocol
//! The mailbox is a queue plus a `scheduled` bit, both under one lock.
//! Whoever holds the bit is the (only) drainer.
//!
//! - [`Mailbox::push`] appends and, if `scheduled` was false, sets it and
//!   returns true: the pusher must then schedule a drain.
//! - A drainer calls [`Mailbox::pop`] repeatedly. `pop` on an empty queue
//!   clears `scheduled` *in the same critical section* and returns `None`;
//!   the drainer must then stop. A drainer may also stop early while keeping
//!   the bit (to yield its thread) but must then schedule another drain.
//!
//! Because "queue is empty" and "clear the bit" happen atomically, a push that
//! races with the end of a drain either lands before the final `pop` (and is
//! drained) or sees `scheduled == false` (and schedules a new drain): no call
//! is ever lost, and two drainers never run at once.

use crate::sync::{lock, Mutex};
use std::collections::VecDeque;

/// A FIFO of calls with a single-drainer token.
#[derive(Debug)]
pub struct Mailbox<M> {
    inner: Mutex<Inner<M>>,
}

#[derive(Debug)]
struct Inner<M> {
    queue: VecDeque<M>,
    scheduled: bool,
}

impl<M> Default for Mailbox<M> {
    fn default() -> Self {
        Mailbox { inner: Mutex::new(Inner { queue: VecDeque::new(), scheduled: false }) }
    }
}

impl<M> Mailbox<M> {
    /// An empty mailbox with no drainer.
    pub fn new() -> Mailbox<M> {
        Mailbox::default()
    }

    /// Appends a call. Returns true if the caller must schedule a drain.
    pub fn push(&self, m: M) -> bool {
        let mut g = lock(&self.inner);
        g.queue.push_back(m);
        !std::mem::replace(&mut g.scheduled, true)
    }

    /// Takes the next call; `None` means empty, and the drainer's token is
    /// given up.
    pub fn pop(&self) -> Option<M> {
        let mut g = lock(&self.inner);
        let m = g.queue.pop_front();
        if m.is_none() {
            g.scheduled = false;
        }
        m
    }

    /// Puts a call the drainer took back at the front (it keeps the token
    /// and must go on draining or schedule another drain).
    pub fn unpop(&self, m: M) {
        lock(&self.inner).queue.push_front(m);
    }

    /// Number of queued calls.
    pub fn len(&self) -> usize {
        lock(&self.inner).queue.len()
    }

    /// True if no call is queued.
    #[cfg_attr(not(loom), allow(dead_code))]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
