//! The object slot: the state machine behind every `ObjectRef`.
//!
//! # States
//! ```text
//!            complete(Ok)             (store, later issue: evict / spill / restore)
//! Pending ─────────────────▶ Ready(value)
//!    │      complete(Err)
//!    ├────────────────────▶ Failed(error)     (panics, failed inputs, shutdown)
//!    │      cancel
//!    └────────────────────▶ Failed(Cancelled)
//! ```
//! `Pending` is left exactly once: [`Slot::complete`] and cancellation are the
//! same transition, so whichever comes first wins and the loser gets `false`.
//! Every waiter registered while pending is notified exactly once, after the
//! transition, outside the lock. A registration that arrives after the
//! transition is refused ([`Slot::register`] returns the waiter back) so the
//! caller handles the completed case itself: no wake-up is ever lost.
//!
//! # Memory ordering
//! The state lives under the slot's mutex. `done` is a lock-free hint for the
//! fast path: it is stored with `Release` after the state is written (still
//! inside the critical section), and a reader that sees `done == true` with
//! `Acquire` then takes the lock to read the state, which is final.

use crate::error::Error;
use crate::notify::Waiter;
use crate::sync::{lock, AtomicBool, Mutex, Ordering};
use std::any::Any;

/// A stored value: shared, immutable, typed at run time.
#[derive(Clone)]
pub struct Value {
    /// The value itself; readers get clones of this `Arc` (zero copy).
    pub data: std::sync::Arc<dyn Any + Send + Sync>,
    /// `std::any::type_name` of the stored type, for `WrongType` errors.
    pub type_name: &'static str,
}

impl Value {
    /// Wraps a value.
    pub fn new<T: Any + Send + Sync>(v: T) -> Value {
        Value { data: std::sync::Arc::new(v), type_name: std::any::type_name::<T>() }
    }

    /// Wraps an already shared value.
    pub fn from_arc<T: Any + Send + Sync>(v: std::sync::Arc<T>) -> Value {
        Value { data: v, type_name: std::any::type_name::<T>() }
    }

    /// The value as `Arc<T>`, or `WrongType`.
    pub fn downcast<T: Any + Send + Sync>(self) -> Result<std::sync::Arc<T>, Error> {
        let found = self.type_name;
        self.data.downcast::<T>().map_err(|_| Error::WrongType { expected: std::any::type_name::<T>(), found })
    }
}

impl std::fmt::Debug for Value {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Value<{}>", self.type_name)
    }
}

/// The outcome a completed slot holds.
pub type Outcome = Result<Value, Error>;

#[derive(Debug)]
enum State {
    Pending,
    Done(Outcome),
}

#[derive(Debug)]
struct Inner {
    state: State,
    waiters: Vec<(u64, Waiter)>,
    next_token: u64,
}

/// One object's state and its waiters.
#[derive(Debug)]
pub struct Slot {
    done: AtomicBool,
    error_read: AtomicBool,
    inner: Mutex<Inner>,
}

impl Slot {
    /// A slot waiting for its value.
    pub fn pending() -> Slot {
        Slot::with_state(State::Pending, false)
    }

    /// A slot that already holds an outcome.
    pub fn done(outcome: Outcome) -> Slot {
        Slot::with_state(State::Done(outcome), true)
    }

    fn with_state(state: State, done: bool) -> Slot {
        Slot {
            done: AtomicBool::new(done),
            error_read: AtomicBool::new(false),
            inner: Mutex::new(Inner { state, waiters: Vec::new(), next_token: 0 }),
        }
    }

    /// True once the slot left `Pending` (lock-free).
    pub fn is_done(&self) -> bool {
        self.done.load(Ordering::Acquire)
    }

    /// Moves `Pending` to `Done(outcome)` and notifies every waiter.
    /// Returns false (and drops `outcome`) if the slot was already done.
    pub fn complete(&self, outcome: Outcome) -> bool {
        let ok = outcome.is_ok();
        let waiters = {
            let mut g = lock(&self.inner);
            if !matches!(g.state, State::Pending) {
                return false;
            }
            g.state = State::Done(outcome);
            self.done.store(true, Ordering::Release);
            std::mem::take(&mut g.waiters)
        };
        for (_, w) in waiters {
            w.notify(ok);
        }
        true
    }

    /// Registers a waiter while pending and returns its token, or gives the
    /// waiter back if the slot is already done.
    pub fn register(&self, w: Waiter) -> Result<u64, Waiter> {
        let mut g = lock(&self.inner);
        match g.state {
            State::Pending => {
                let t = g.next_token;
                g.next_token += 1;
                g.waiters.push((t, w));
                Ok(t)
            }
            State::Done(_) => Err(w),
        }
    }

    /// Replaces the waiter registered under `token` (used by futures whose
    /// waker changed). Returns false if it is no longer registered.
    pub fn replace(&self, token: u64, w: Waiter) -> bool {
        let mut g = lock(&self.inner);
        match g.waiters.iter_mut().find(|(t, _)| *t == token) {
            Some(slot) => {
                slot.1 = w;
                true
            }
            None => false,
        }
    }

    /// Removes a registration (a timed-out `wait`, a dropped future).
    pub fn deregister(&self, token: u64) {
        let mut g = lock(&self.inner);
        g.waiters.retain(|(t, _)| *t != token);
    }

    /// The outcome, if done. Reading an error marks it as seen.
    pub fn read(&self) -> Option<Outcome> {
        if !self.is_done() {
            return None;
        }
        let g = lock(&self.inner);
        match &g.state {
            State::Pending => None,
            State::Done(Ok(v)) => Some(Ok(v.clone())),
            State::Done(Err(e)) => {
                self.error_read.store(true, Ordering::Relaxed);
                Some(Err(e.clone()))
            }
        }
    }

    /// True if done with an error (lock-free hint followed by a read).
    pub fn is_failed(&self) -> bool {
        self.is_done() && matches!(lock(&self.inner).state, State::Done(Err(_)))
    }

    /// Number of registered waiters (for tests and stats).
    #[cfg_attr(not(loom), allow(dead_code))]
    pub fn waiter_count(&self) -> usize {
        lock(&self.inner).waiters.len()
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        if self.error_read.load(Ordering::Relaxed) {
            return;
        }
        let inner = match self.inner.get_mut() {
            Ok(i) => i,
            Err(p) => p.into_inner(),
        };
        if let State::Done(Err(e)) = &inner.state {
            // Errors nobody read are logged once, when the object goes away.
            // Cancellations, shutdowns and failures inherited from an input
            // are not root failures and stay quiet.
            if matches!(e, Error::TaskPanicked { .. } | Error::ActorDead { .. } | Error::Infeasible { .. }) {
                tracing::warn!(error = %e, "an object's error was never read");
            }
        }
    }
}
