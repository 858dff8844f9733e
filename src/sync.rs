//! The `sync` shim: the synchronisation primitives every concurrency protocol
//! in the core is written against.
//!
//! Normally these are `std`'s types. Built with `RUSTFLAGS="--cfg loom"` they
//! are [loom](https://docs.rs/loom)'s, so the protocol modules (`slot`,
//! `notify`, `countdown`, `mailbox`, `export`, `dispatch` (with its `inbox`), `decide`, `parked`, `claim`,
//! `eventlog`, `lazy`, `watchers`, `group_counts`) can be model-checked by the
//! tests in `tests/loom_*.rs`, which drive them with `loom::thread` directly
//! (rayon cannot run inside a loom model).
//!
//! Invariant: a protocol module imports its `Mutex`, `Condvar`, atomics,
//! `UnsafeCell` and `Arc` from here and nowhere else. Code that is not a protocol (the rayon
//! pool, thread-locals, the stored values themselves) uses `std` directly.

#[cfg(not(loom))]
pub(crate) use std::hint::spin_loop;
#[cfg(not(loom))]
pub(crate) use std::sync::atomic::{fence, AtomicBool, AtomicU32, AtomicUsize, Ordering};
#[cfg(not(loom))]
pub(crate) use std::sync::{Arc, Condvar, Mutex, MutexGuard};

/// A cell whose contents a protocol reaches through a raw pointer
/// (`with_mut`), as loom's `UnsafeCell` (which checks those accesses for
/// races); under std, `std::cell::UnsafeCell` with the same method.
#[cfg(not(loom))]
#[derive(Debug)]
pub(crate) struct UnsafeCell<T>(std::cell::UnsafeCell<T>);

#[cfg(not(loom))]
impl<T> UnsafeCell<T> {
    /// A cell holding `value`.
    pub(crate) fn new(value: T) -> UnsafeCell<T> {
        UnsafeCell(std::cell::UnsafeCell::new(value))
    }

    /// Calls `f` with a pointer to the contents (the caller's `unsafe`
    /// block states why the access is exclusive).
    pub(crate) fn with_mut<R>(&self, f: impl FnOnce(*mut T) -> R) -> R {
        f(self.0.get())
    }

    /// Calls `f` with a read-only pointer to the contents (the caller's
    /// `unsafe` block states why no write races with the read).
    pub(crate) fn with<R>(&self, f: impl FnOnce(*const T) -> R) -> R {
        f(self.0.get())
    }
}

#[cfg(loom)]
pub(crate) use loom::cell::UnsafeCell;
#[cfg(loom)]
pub(crate) use loom::hint::spin_loop;
#[cfg(loom)]
pub(crate) use loom::sync::atomic::{fence, AtomicBool, AtomicU32, AtomicUsize, Ordering};
#[cfg(loom)]
pub(crate) use loom::sync::{Arc, Condvar, Mutex, MutexGuard};

/// Locks a mutex, ignoring poisoning.
///
/// No lock in the core is ever held while user code runs (user panics are
/// caught outside every critical section), so a poisoned lock can only come
/// from a bug in manta itself; the data it guards is still consistent because
/// every critical section is written to leave it so before any call that can
/// panic.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(poisoned) => poisoned.into_inner(),
    }
}
