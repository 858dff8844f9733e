//! Wake-ups: how a blocked thread, an async task, a `wait` call or a
//! dependent task learns that an object completed.
//!
//! # Protocol
//! A [`Parker`] is a one-bit semaphore: `unpark` sets the bit and signals,
//! `park` waits for the bit and clears it. Because the bit is sticky, an
//! `unpark` that happens before the `park` is never lost; the waiting side
//! always re-checks its own condition after `park` returns, so spurious or
//! stale unparks are harmless.
//!
//! A [`Waiter`] is what a slot keeps for each registration; the slot calls
//! [`Waiter::notify`] exactly once, after its state is final and *outside*
//! its lock (so a waiter may take other locks or run user callbacks).
//!
//! A [`WaitGroup`] counts completions for `wait`/`get_all`: each notify
//! increments `done` (AcqRel) and unparks the waiter when `done` reaches the
//! target or a failure arrives (fail-fast for `get_all`).

use crate::sync::{lock, Arc, AtomicBool, AtomicUsize, Condvar, Mutex, Ordering};
use std::time::Instant;

/// A sticky wake-up flag for one waiting thread.
#[derive(Debug, Default)]
pub struct Parker {
    notified: Mutex<bool>,
    cv: Condvar,
}

impl Parker {
    /// A new parker, not notified.
    pub fn new() -> Arc<Parker> {
        Arc::new(Parker::default())
    }

    /// Sets the flag and wakes the parked thread, if any.
    pub fn unpark(&self) {
        let mut n = lock(&self.notified);
        *n = true;
        drop(n);
        self.cv.notify_one();
    }

    /// Waits until notified (or until `deadline`), then clears the flag.
    /// Returns false if the deadline passed without a notification.
    /// (Under loom the deadline is ignored: models do not use time.)
    pub fn park_until(&self, deadline: Option<Instant>) -> bool {
        let mut n = lock(&self.notified);
        while !*n {
            match deadline {
                #[cfg(not(loom))]
                Some(d) => {
                    let now = Instant::now();
                    if now >= d {
                        return false;
                    }
                    n = match self.cv.wait_timeout(n, d - now) {
                        Ok((g, _)) => g,
                        Err(p) => p.into_inner().0,
                    };
                }
                _ => {
                    let _ = deadline;
                    n = match self.cv.wait(n) {
                        Ok(g) => g,
                        Err(p) => p.into_inner(),
                    };
                }
            }
        }
        *n = false;
        true
    }
}

/// Counts completions of a set of objects for `wait` and `get_all`.
#[derive(Debug)]
pub struct WaitGroup {
    done: AtomicUsize,
    failed: AtomicBool,
    target: usize,
    parker: Arc<Parker>,
}

impl WaitGroup {
    /// A group that wakes `parker` once `target` completions have arrived
    /// (`already` of them are counted up front) or any failure arrives.
    pub fn new(target: usize, already: usize, parker: Arc<Parker>) -> Arc<WaitGroup> {
        Arc::new(WaitGroup { done: AtomicUsize::new(already), failed: AtomicBool::new(false), target, parker })
    }

    /// Records one completion.
    pub fn arrive(&self, ok: bool) {
        if !ok {
            self.failed.store(true, Ordering::Release);
        }
        let now = self.done.fetch_add(1, Ordering::AcqRel) + 1;
        if now >= self.target || !ok {
            self.parker.unpark();
        }
    }

    /// Completions so far.
    #[cfg_attr(not(loom), allow(dead_code))]
    pub fn done(&self) -> usize {
        self.done.load(Ordering::Acquire)
    }

    /// True once any failed completion arrived.
    #[cfg_attr(not(loom), allow(dead_code))]
    pub fn any_failed(&self) -> bool {
        self.failed.load(Ordering::Acquire)
    }

    /// True when the target is reached.
    #[cfg_attr(not(loom), allow(dead_code))]
    pub fn satisfied(&self) -> bool {
        self.done() >= self.target
    }
}

/// One registration on a slot: who to tell when it completes.
pub enum Waiter {
    /// A blocked thread.
    Parker(Arc<Parker>),
    /// An async task.
    Waker(std::task::Waker),
    /// A `wait`/`get_all` call.
    Group(Arc<WaitGroup>),
    /// Anything else (dependency countdowns, user callbacks). The argument
    /// is true if the object completed with a value.
    Callback(Box<dyn FnOnce(bool) + Send>),
}

impl Waiter {
    /// Delivers the notification. `ok` is true for a value, false for an error.
    pub fn notify(self, ok: bool) {
        match self {
            Waiter::Parker(p) => p.unpark(),
            Waiter::Waker(w) => w.wake(),
            Waiter::Group(g) => g.arrive(ok),
            Waiter::Callback(f) => f(ok),
        }
    }
}

impl std::fmt::Debug for Waiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Waiter::Parker(_) => "Waiter::Parker",
            Waiter::Waker(_) => "Waiter::Waker",
            Waiter::Group(_) => "Waiter::Group",
            Waiter::Callback(_) => "Waiter::Callback",
        })
    }
}
