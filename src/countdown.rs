//! The dependency countdown that releases a task when its last input is ready.
//!
//! # Protocol
//! A task with `n` inputs that were pending at submission starts with
//! `remaining = n + 1`: one arrival per input plus one held by the submitter,
//! which arrives only after it has registered on every input (so the task
//! cannot be released while registration is still going on).
//!
//! - [`Countdown::arrive`]: `fetch_sub(1, AcqRel)`; the caller that takes the
//!   count from 1 to 0 tries to fire.
//! - [`Countdown::fail`]: an input failed; the task must not wait for the
//!   others, so the caller tries to fire at once.
//!
//! Firing is `!fired.swap(true, AcqRel)`: whichever of the last arrival and
//! the failures comes first releases the task, and exactly one caller ever
//! gets `true`. The AcqRel on the count makes every input's completion
//! happen-before the release, so the released task sees all input values.

use crate::sync::{AtomicBool, AtomicUsize, Ordering};

/// Releases a task exactly once: when all inputs arrived or one failed.
#[derive(Debug)]
pub struct Countdown {
    remaining: AtomicUsize,
    fired: AtomicBool,
}

impl Countdown {
    /// A countdown expecting `arrivals` calls to [`Countdown::arrive`].
    pub fn new(arrivals: usize) -> Countdown {
        Countdown { remaining: AtomicUsize::new(arrivals), fired: AtomicBool::new(false) }
    }

    /// One input arrived. Returns true for the one caller that must release.
    pub fn arrive(&self) -> bool {
        if self.remaining.fetch_sub(1, Ordering::AcqRel) == 1 {
            !self.fired.swap(true, Ordering::AcqRel)
        } else {
            false
        }
    }

    /// One input failed. Returns true for the one caller that must release
    /// (with the failure); false if the task was already released.
    pub fn fail(&self) -> bool {
        !self.fired.swap(true, Ordering::AcqRel)
    }
}
