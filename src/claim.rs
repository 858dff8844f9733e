//! A value taken out at most once, by whoever claims it first, without a
//! lock: a job's function (`job::Body`), which a runner, a blocked reader
//! running it targeted, or a cancel may each try to take.
//!
//! # Protocol
//! [`TakeOnce`] holds the value and a `taken` flag that only ever goes from
//! false to true. [`TakeOnce::take`] swaps `taken` to true (AcqRel); the
//! one caller that read false moves the value out, every other caller gets
//! `None` and never touches it. `drop` (exclusive access) drops the value
//! only if nobody took it. So the value is reached by exactly one thread,
//! once: it needs `T: Send`, not `T: Sync`, as for `Mutex<T>`. One atomic
//! swap per take, where a mutex costs a lock and an unlock (this is on the
//! path of every task).
//!
//! Invariants: the value is moved out at most once; it is dropped exactly
//! once in all (by its taker, or by `drop` if never taken); `is_taken` is a
//! hint that never goes back to false. `tests/loom_claim.rs` checks racing
//! takers (exactly one wins, the winner sees the value the maker wrote, no
//! data race on the cell) and that an untaken value is dropped once.

#![allow(unsafe_code)]

use crate::sync::{AtomicBool, Ordering, UnsafeCell};
use std::mem::ManuallyDrop;

/// A value taken out at most once (module docs).
pub struct TakeOnce<T> {
    taken: AtomicBool,
    value: UnsafeCell<ManuallyDrop<T>>,
}

// SAFETY: the value is only reached by the single caller whose swap of
// `taken` read false (it moves the value out) or by `drop` (exclusive
// access, and only if no caller took it): never by two threads, never
// shared, so sending the value between threads (`T: Send`) is all that
// sharing a `TakeOnce` needs.
unsafe impl<T: Send> Sync for TakeOnce<T> {}

impl<T> TakeOnce<T> {
    /// Holds `value` until someone takes it.
    pub fn new(value: T) -> TakeOnce<T> {
        TakeOnce { taken: AtomicBool::new(false), value: UnsafeCell::new(ManuallyDrop::new(value)) }
    }

    /// The value, for the first caller only; `None` for every later one.
    pub fn take(&self) -> Option<T> {
        if self.taken.swap(true, Ordering::AcqRel) {
            return None;
        }
        // SAFETY: this caller's swap read false, and `taken` never goes back
        // to false, so no other caller gets here; `drop` sees `taken` set and
        // leaves the value alone. The value was written before `self` was
        // shared with this thread, so it is initialised and not yet taken.
        Some(self.value.with_mut(|v| unsafe { ManuallyDrop::take(&mut *v) }))
    }

    /// The seeded bug for the loom model: a load, then a store, in place of
    /// the swap (two takers can both read false and both move the value out).
    #[cfg(loom)]
    pub fn take_racy(&self) -> Option<T> {
        if self.taken.load(Ordering::Acquire) {
            return None;
        }
        self.taken.store(true, Ordering::Release);
        // SAFETY: none: this is the bug the model must catch (two callers
        // may get here; loom reports their concurrent access to the cell).
        Some(self.value.with_mut(|v| unsafe { ManuallyDrop::take(&mut *v) }))
    }

    /// True once someone took the value (a hint: a `false` may be stale).
    pub fn is_taken(&self) -> bool {
        self.taken.load(Ordering::Acquire)
    }
}

impl<T> Drop for TakeOnce<T> {
    fn drop(&mut self) {
        if !self.taken.load(Ordering::Acquire) {
            // SAFETY: `&mut self` excludes every other access, and nobody
            // took the value (`taken` is false), so it is still there and is
            // dropped exactly once, here.
            self.value.with_mut(|v| unsafe { ManuallyDrop::drop(&mut *v) });
        }
    }
}

impl<T> std::fmt::Debug for TakeOnce<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TakeOnce").field("taken", &self.is_taken()).finish()
    }
}
