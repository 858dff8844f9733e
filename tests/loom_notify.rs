#![cfg(loom)]
//! Loom models of the wake-up primitives (`src/notify.rs`).
//!
//! Properties checked, over every interleaving loom explores (a lost
//! wake-up shows up as a loom deadlock: every thread blocked):
//! - **Parker is sticky**: an `unpark` that happens before `park` is not
//!   lost; `park` returns at once and consumes it.
//! - **WaitGroup reaches its target**: with target 2 and three arrivals on
//!   three threads, the waiter (looping "park, re-check `satisfied`") wakes.
//! - **Fail-fast**: a single failed arrival wakes a waiter whose target is
//!   not reached, and the waiter then sees `any_failed`.
//!
//! Run: `RUSTFLAGS="--cfg loom" LOOM_MAX_PREEMPTIONS=2 cargo test --release -p manta --test loom_notify`

use loom::thread;
use manta::protocols::{Parker, WaitGroup, Waiter};

#[test]
fn parker_unpark_before_park_is_not_lost() {
    loom::model(|| {
        let parker = Parker::new();
        let p = parker.clone();
        let unparker = thread::spawn(move || p.unpark());
        assert!(parker.park_until(None));
        unparker.join().unwrap();
    });
}

#[test]
fn wait_group_target_two_of_three_arrivals_wakes() {
    loom::model(|| {
        let parker = Parker::new();
        let wg = WaitGroup::new(2, 0, parker.clone());
        let arrivals: Vec<_> = (0..3)
            .map(|_| {
                let w = Waiter::Group(wg.clone());
                thread::spawn(move || w.notify(true))
            })
            .collect();
        // `wait`: park until satisfied, re-checking after every wake-up.
        while !wg.satisfied() {
            assert!(parker.park_until(None));
        }
        assert!(!wg.any_failed());
        for a in arrivals {
            a.join().unwrap();
        }
        assert_eq!(wg.done(), 3);
    });
}

#[test]
fn wait_group_fails_fast() {
    loom::model(|| {
        let parker = Parker::new();
        let wg = WaitGroup::new(2, 0, parker.clone());
        let w = Waiter::Group(wg.clone());
        let failing = thread::spawn(move || w.notify(false));
        // `get_all`: wake on target or on the first failure.
        while !(wg.satisfied() || wg.any_failed()) {
            assert!(parker.park_until(None));
        }
        assert!(wg.any_failed(), "woke without reaching the target or seeing the failure");
        assert!(!wg.satisfied());
        failing.join().unwrap();
    });
}

/// A parker reused across rounds (every thread's parker is): the
/// unparker's notifications, racing with the parker entering and leaving
/// its wait, are never lost, and the fast path (no one parked: no signal)
/// never skips a real waiter.
#[test]
fn parker_reused_across_rounds_loses_no_wakeup() {
    use loom::sync::atomic::{AtomicUsize, Ordering};
    use loom::sync::Arc;
    loom::model(|| {
        let parker = Parker::new();
        let progress = Arc::new(AtomicUsize::new(0));
        let (p, pr) = (parker.clone(), progress.clone());
        let unparker = thread::spawn(move || {
            for round in 1..=2 {
                pr.store(round, Ordering::Release);
                p.unpark();
            }
        });
        for round in 1..=2 {
            while progress.load(Ordering::Acquire) < round {
                assert!(parker.park_until(None));
            }
        }
        unparker.join().unwrap();
    });
}
