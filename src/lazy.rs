//! A small `Copy` value set at most once, made when first asked for or
//! given at construction: an object's id (`cell`), drawn only if someone
//! needs it (most task results are never named by id).
//!
//! # Why not `OnceLock`
//! `OnceLock::get_or_init` runs the general `Once` state machine (a
//! compare-exchange to claim, a swap to publish, a wake check) and
//! `OnceLock::set` does the same even on a cell nobody else can see yet;
//! with the timeline on, every task's id is drawn, and that machinery cost
//! twice the draw itself. Here a value known at construction costs no
//! atomic read-modify-write at all, and a lazy one a single
//! compare-exchange; the value is made before the claim, so the window in
//! which a racing reader must wait is two plain stores.
//!
//! # Protocol
//! `state` goes `UNSET → WRITING → SET` and never back. [`Lazy::get_or`]
//! loads `state` (Acquire): `SET` means the value is readable. Otherwise
//! it makes a value, then claims the cell by `UNSET → WRITING`
//! (compare-exchange); the winner writes the value and stores `SET`
//! (Release) and returns it; a loser (or a caller that saw `WRITING`)
//! waits for `SET`, then reads the winner's value (its own is discarded).
//!
//! Invariants: the value is written once, by the one claimer, before
//! `SET` is published, and read only after `SET` is seen; every caller
//! gets the same value. `tests/loom_lazy.rs` checks racing callers and a
//! seeded bug (publishing before writing).

#![allow(unsafe_code)]

use crate::sync::{spin_loop, AtomicU32, Ordering, UnsafeCell};
use std::mem::MaybeUninit;

const UNSET: u32 = 0;
const WRITING: u32 = 1;
const SET: u32 = 2;

/// Spins before a waiting caller yields its time slice (under loom,
/// `spin_loop` itself yields to the model's scheduler).
#[cfg(not(loom))]
const SPINS: u32 = 64;
#[cfg(loom)]
const SPINS: u32 = u32::MAX;

/// A `Copy` value set at most once (module docs).
pub struct Lazy<T> {
    /// UNSET, WRITING or SET (32 bits: with a 16-byte value, the cell is
    /// as small as a `OnceLock` of it).
    state: AtomicU32,
    /// Written once, while `state` is WRITING.
    value: UnsafeCell<MaybeUninit<T>>,
}

// SAFETY: the value is written only by the one caller whose claim moved
// `state` from UNSET (before it publishes SET) and read only after SET is
// seen (Acquire, pairing with the Release store of SET): never written and
// read at once. It moves between threads and is copied out on several.
unsafe impl<T: Send + Sync> Sync for Lazy<T> {}

impl<T: Copy> Lazy<T> {
    /// A cell with no value yet.
    pub fn unset() -> Lazy<T> {
        Lazy { state: AtomicU32::new(UNSET), value: UnsafeCell::new(MaybeUninit::uninit()) }
    }

    /// A cell holding `value` from the start (no atomic operation).
    pub fn new(value: T) -> Lazy<T> {
        Lazy { state: AtomicU32::new(SET), value: UnsafeCell::new(MaybeUninit::new(value)) }
    }

    /// The value, made by `make` if nobody set it yet (the same for every
    /// caller, whichever thread asks first).
    #[inline]
    pub fn get_or(&self, make: impl FnOnce() -> T) -> T {
        if let Some(v) = self.get() {
            return v;
        }
        self.set_or_wait(make())
    }

    /// The value, if set.
    #[inline]
    pub fn get(&self) -> Option<T> {
        if self.state.load(Ordering::Acquire) != SET {
            return None;
        }
        // SAFETY: SET (Acquire) was stored after the one write of the value
        // (Release), so it is initialised, and it is never written again.
        Some(self.value.with(|p| unsafe { (*p).assume_init() }))
    }

    /// Claims the cell for `mine` and publishes it, or waits for the value
    /// another caller is publishing.
    #[cold]
    fn set_or_wait(&self, mine: T) -> T {
        if self.state.compare_exchange(UNSET, WRITING, Ordering::Acquire, Ordering::Acquire).is_ok() {
            // SAFETY: our claim moved `state` from UNSET, which happens
            // once, so we are the only writer; readers wait for SET.
            self.value.with_mut(|p| unsafe { (*p).write(mine) });
            self.state.store(SET, Ordering::Release);
            return mine;
        }
        let mut spins = 0u32;
        loop {
            if let Some(v) = self.get() {
                return v;
            }
            // The claimer is between two stores; if it was preempted there,
            // give it the CPU rather than spin through its time slice.
            spins += 1;
            if spins < SPINS {
                spin_loop();
            } else {
                yield_now();
            }
        }
    }

    /// The seeded bug for the loom model: SET published before the value
    /// is written (a reader may read an unwritten value).
    #[cfg(loom)]
    pub fn get_or_racy(&self, make: impl FnOnce() -> T) -> Option<T> {
        if let Some(v) = self.get() {
            return Some(v);
        }
        let mine = make();
        if self.state.compare_exchange(UNSET, SET, Ordering::AcqRel, Ordering::Acquire).is_ok() {
            // SAFETY: none; this is the bug the model must catch.
            self.value.with_mut(|p| unsafe { (*p).write(mine) });
            return Some(mine);
        }
        self.get()
    }
}

fn yield_now() {
    std::thread::yield_now();
}

impl<T: Copy + std::fmt::Debug> std::fmt::Debug for Lazy<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Lazy").field(&self.get()).finish()
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn a_value_is_made_once_and_kept() {
        let l = Lazy::unset();
        assert_eq!(l.get(), None);
        assert_eq!(l.get_or(|| 7), 7);
        assert_eq!(l.get_or(|| 8), 7, "the first value stays");
        assert_eq!(Lazy::new(3).get_or(|| 9), 3);
    }

    #[test]
    fn racing_threads_agree() {
        let l = std::sync::Arc::new(Lazy::unset());
        let got: Vec<u64> = (0..4)
            .map(|i| {
                let l = l.clone();
                std::thread::spawn(move || l.get_or(|| i))
            })
            .collect::<Vec<_>>()
            .into_iter()
            .map(|h| h.join().expect("thread"))
            .collect();
        assert!(got.iter().all(|v| *v == got[0]));
    }
}
