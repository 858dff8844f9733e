//! Wake-ups: how a blocked thread, an async task, a `wait` call or a
//! dependent task learns that an object completed.
//!
//! # Protocol
//! A [`Parker`] is a one-bit semaphore: `unpark` sets the bit and signals
//! (only if a thread is parked: see its docs), `park` waits for the bit and
//! clears it. Because the bit is sticky, an `unpark` that happens before
//! the `park` is never lost; the waiting side always re-checks its own
//! condition after `park` returns, so spurious or stale unparks are
//! harmless.
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
///
/// The state is an atomic (`EMPTY`, `PARKED`, `NOTIFIED`), as in std's
/// thread parker: `unpark` swaps in `NOTIFIED` and only takes the mutex
/// and signals the condvar when the old state was `PARKED` (a thread is,
/// or is about to be, waiting), so the common case — a completion that
/// nobody is blocked on yet — costs one atomic swap and no system call.
/// `park` consumes a `NOTIFIED` at once; otherwise it moves `EMPTY` to
/// `PARKED` under the mutex and waits until an `unpark` moves it to
/// `NOTIFIED`. The mutex orders "about to wait" with "signal", so a
/// notification between the state change and the wait is not lost.
#[derive(Debug)]
pub struct Parker {
    state: AtomicUsize,
    lock: Mutex<()>,
    cv: Condvar,
}

const EMPTY: usize = 0;
const PARKED: usize = 1;
const NOTIFIED: usize = 2;

impl Default for Parker {
    fn default() -> Self {
        Parker { state: AtomicUsize::new(EMPTY), lock: Mutex::new(()), cv: Condvar::new() }
    }
}

impl Parker {
    /// A new parker, not notified.
    pub fn new() -> Arc<Parker> {
        Arc::new(Parker::default())
    }

    /// Sets the flag and wakes the parked thread, if any.
    pub fn unpark(&self) {
        if self.state.swap(NOTIFIED, Ordering::AcqRel) == PARKED {
            // Taking the lock waits for the parker to be inside `wait`.
            drop(lock(&self.lock));
            self.cv.notify_one();
        }
    }

    /// Waits until notified (or until `deadline`), then clears the flag.
    /// Returns false if the deadline passed without a notification.
    /// (Under loom the deadline is ignored: models do not use time.)
    pub fn park_until(&self, deadline: Option<Instant>) -> bool {
        if self.state.compare_exchange(NOTIFIED, EMPTY, Ordering::AcqRel, Ordering::Acquire).is_ok() {
            return true;
        }
        let mut g = lock(&self.lock);
        match self.state.compare_exchange(EMPTY, PARKED, Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) => {}
            Err(_) => {
                // Notified between the first check and the lock. Consumed
                // with a read-modify-write, not a store: it reads the latest
                // notification (an unpark may have come after the one the
                // failed exchange saw) and so acquires what it published; a
                // plain store could erase that unpark unseen (a lost wake-up
                // found by tests/loom_notify.rs).
                self.state.swap(EMPTY, Ordering::AcqRel);
                return true;
            }
        }
        loop {
            match deadline {
                #[cfg(not(loom))]
                Some(d) => {
                    let now = Instant::now();
                    if now >= d {
                        // Leave PARKED unless an unpark got in meanwhile.
                        return match self.state.compare_exchange(PARKED, EMPTY, Ordering::AcqRel, Ordering::Acquire) {
                            Ok(_) => false,
                            Err(_) => {
                                self.state.swap(EMPTY, Ordering::AcqRel); // as above
                                true
                            }
                        };
                    }
                    g = match self.cv.wait_timeout(g, d - now) {
                        Ok((g, _)) => g,
                        Err(p) => p.into_inner().0,
                    };
                }
                _ => {
                    let _ = deadline;
                    g = match self.cv.wait(g) {
                        Ok(g) => g,
                        Err(p) => p.into_inner(),
                    };
                }
            }
            if self.state.compare_exchange(NOTIFIED, EMPTY, Ordering::AcqRel, Ordering::Acquire).is_ok() {
                return true;
            }
        }
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
    pub fn done(&self) -> usize {
        self.done.load(Ordering::Acquire)
    }

    /// True once any failed completion arrived.
    pub fn any_failed(&self) -> bool {
        self.failed.load(Ordering::Acquire)
    }

    /// True when the target is reached.
    #[cfg_attr(not(loom), allow(dead_code))]
    pub fn satisfied(&self) -> bool {
        self.done() >= self.target
    }
}

/// A receiver of completions shared by many registrations, each with its
/// own index (`as_completed`: one `Arc` for every ref, no allocation per
/// registration).
pub trait Indexed: Send + Sync {
    /// Registration `index` completed (`ok`: with a value).
    fn completed(&self, index: u32, ok: bool);
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
    /// One of many registrations sharing a receiver (`as_completed`). The
    /// index is a `u32` so that a `Waiter` is three words (a slot keeps one
    /// inline).
    Indexed(std::sync::Arc<dyn Indexed>, u32),
}

impl Waiter {
    /// Delivers the notification. `ok` is true for a value, false for an error.
    pub fn notify(self, ok: bool) {
        match self {
            Waiter::Parker(p) => p.unpark(),
            Waiter::Waker(w) => w.wake(),
            Waiter::Group(g) => g.arrive(ok),
            Waiter::Callback(f) => f(ok),
            Waiter::Indexed(r, i) => r.completed(i, ok),
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
            Waiter::Indexed(..) => "Waiter::Indexed",
        })
    }
}
