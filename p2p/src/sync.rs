//! Lock helpers shared by every stateful layer.
//!
//! A panic while a lock is held poisons it; manta-p2p's critical sections
//! never leave their state half-updated across a panic point (they move
//! values in and out of maps), so a poisoned lock is taken over as it is
//! rather than turning one panic into a cascade of them.
//!
//! Layer: base (with `config`), just above `wire`; imports nothing from
//! this crate.

use std::sync::{Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};

/// Locks `m`, taking it over if a panic poisoned it.
pub(crate) fn lock_unpoisoned<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Read-locks `l`, taking it over if a panic poisoned it.
pub(crate) fn read_unpoisoned<T>(l: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(|p| p.into_inner())
}

/// Write-locks `l`, taking it over if a panic poisoned it.
pub(crate) fn write_unpoisoned<T>(l: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(|p| p.into_inner())
}
