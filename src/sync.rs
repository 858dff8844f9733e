//! The `sync` shim: the synchronisation primitives every concurrency protocol
//! in the core is written against.
//!
//! Normally these are `std`'s types. Built with `RUSTFLAGS="--cfg loom"` they
//! are [loom](https://docs.rs/loom)'s, so the protocol modules (`slot`,
//! `notify`, `countdown`, `mailbox`, `export`, `dispatch`, `decide`, `parked`) can be model-checked by the
//! tests in `tests/loom_*.rs`, which drive them with `loom::thread` directly
//! (rayon cannot run inside a loom model).
//!
//! Invariant: a protocol module imports its `Mutex`, `Condvar`, atomics and
//! `Arc` from here and nowhere else. Code that is not a protocol (the rayon
//! pool, thread-locals, the stored values themselves) uses `std` directly.

#[cfg(not(loom))]
pub(crate) use std::hint::spin_loop;
#[cfg(not(loom))]
pub(crate) use std::sync::atomic::{fence, AtomicBool, AtomicUsize, Ordering};
#[cfg(not(loom))]
pub(crate) use std::sync::{Arc, Condvar, Mutex, MutexGuard};

#[cfg(loom)]
pub(crate) use loom::hint::spin_loop;
#[cfg(loom)]
pub(crate) use loom::sync::atomic::{fence, AtomicBool, AtomicUsize, Ordering};
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
