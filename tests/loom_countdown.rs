#![cfg(loom)]
//! Loom models of the dependency countdown (`src/countdown.rs`).
//!
//! A task with `n` pending inputs starts with `remaining = n + 1`: one
//! `arrive` per input (each on the thread that completed that input) plus
//! one by the submitter after it registered on every input. Properties
//! checked, over every interleaving loom explores:
//! - **Released exactly once**: of all `arrive` calls exactly one returns
//!   `true`, whatever order the inputs and the submitter arrive in.
//! - **Failure vs last arrival**: a `fail` racing with the last `arrive`
//!   gives exactly one release in total (never zero, never two).
//! - **Happens-before**: the released task sees every input's write made
//!   before that input arrived. Inputs write plain (non-atomic) `UnsafeCell`s;
//!   a missing Acquire/Release edge is reported by loom as a causality
//!   violation (data race).
//!
//! Run: `RUSTFLAGS="--cfg loom" LOOM_MAX_PREEMPTIONS=2 cargo test --release -p manta --test loom_countdown`

use loom::cell::UnsafeCell;
use loom::sync::atomic::{AtomicUsize, Ordering};
use loom::sync::Arc;
use loom::thread;
use manta::protocols::Countdown;

/// Two inputs' values, written by the input threads before they arrive and
/// read by whoever releases the task.
struct Inputs {
    values: [UnsafeCell<u32>; 2],
}

// SAFETY: each cell is written by exactly one input thread before it arrives
// and read only by the releaser; loom checks that this is race-free.
unsafe impl Sync for Inputs {}

#[test]
fn inputs_and_submitter_release_exactly_once() {
    loom::model(|| {
        let cd = Arc::new(Countdown::new(3)); // 2 inputs + the submitter
        let inputs = Arc::new(Inputs { values: [UnsafeCell::new(0), UnsafeCell::new(0)] });
        let releases = Arc::new(AtomicUsize::new(0));

        // What the released task does: read every input (must not race).
        let release = |inputs: &Inputs, releases: &AtomicUsize| {
            let a = inputs.values[0].with(|p| unsafe { *p });
            let b = inputs.values[1].with(|p| unsafe { *p });
            assert_eq!((a, b), (10, 11), "released task did not see an input's write");
            releases.fetch_add(1, Ordering::Relaxed);
        };

        let handles: Vec<_> = (0..2)
            .map(|i| {
                let (cd, inputs, releases) = (cd.clone(), inputs.clone(), releases.clone());
                thread::spawn(move || {
                    inputs.values[i].with_mut(|p| unsafe { *p = 10 + i as u32 });
                    if cd.arrive() {
                        release(&inputs, &releases);
                    }
                })
            })
            .collect();

        // The submitter arrives after "registering" (here: after spawning).
        if cd.arrive() {
            release(&inputs, &releases);
        }
        for h in handles {
            h.join().unwrap();
        }
        assert_eq!(releases.load(Ordering::Relaxed), 1, "task released {} times", releases.load(Ordering::Relaxed));
    });
}

#[test]
fn failure_racing_with_last_arrival_releases_once() {
    loom::model(|| {
        let cd = Arc::new(Countdown::new(2)); // 1 input + the submitter
        let releases = Arc::new(AtomicUsize::new(0));

        let (c, r) = (cd.clone(), releases.clone());
        let ok_input = thread::spawn(move || {
            if c.arrive() {
                r.fetch_add(1, Ordering::Relaxed);
            }
        });
        let (c, r) = (cd.clone(), releases.clone());
        let failed_input = thread::spawn(move || {
            if c.fail() {
                r.fetch_add(1, Ordering::Relaxed);
            }
        });

        if cd.arrive() {
            releases.fetch_add(1, Ordering::Relaxed);
        }
        ok_input.join().unwrap();
        failed_input.join().unwrap();
        assert_eq!(releases.load(Ordering::Relaxed), 1, "task released {} times", releases.load(Ordering::Relaxed));
    });
}
