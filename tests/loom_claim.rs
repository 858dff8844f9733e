#![cfg(loom)]
//! Loom models of the take-once claim (`src/claim.rs`), through which a
//! runner, a blocked reader running a job targeted and a cancel race to
//! take a job's function. Properties checked, over every interleaving loom
//! explores:
//! - **One taker**: of racing `take` calls exactly one gets the value.
//! - **Publication**: the taker sees what the maker wrote into the value
//!   (the value's own plain `UnsafeCell` write, checked by loom for races).
//! - **Dropped once**: a value nobody took is dropped exactly once, with
//!   the `TakeOnce`; a taken one only by its taker (loom's `Arc` leak check
//!   and a drop counter).
//! - **Seeded bug**: a check-then-set in place of the swap
//!   (`TakeOnce::take_racy`) lets two takers in; the model must catch it.
//!
//! Run: `RUSTFLAGS="--cfg loom" LOOM_MAX_PREEMPTIONS=2 cargo test --release -p manta --test loom_claim`

use loom::cell::UnsafeCell;
use loom::sync::atomic::{AtomicUsize, Ordering};
use loom::sync::Arc;
use loom::thread;
use manta::protocols::TakeOnce;

/// A job's function stand-in: a plain cell written by its maker, and a
/// counter of its drops.
struct Payload {
    written: UnsafeCell<u32>,
    drops: Arc<AtomicUsize>,
}

// SAFETY: `written` is written once by the maker before the payload is
// shared and read only by the one taker; loom checks that this is race-free.
unsafe impl Sync for Payload {}

impl Drop for Payload {
    fn drop(&mut self) {
        self.drops.fetch_add(1, Ordering::Relaxed);
    }
}

fn payload(drops: &Arc<AtomicUsize>) -> Payload {
    let p = Payload { written: UnsafeCell::new(0), drops: drops.clone() };
    p.written.with_mut(|v| unsafe { *v = 7 });
    p
}

#[test]
fn racing_takers_exactly_one_wins_and_sees_the_value() {
    loom::model(|| {
        let drops = Arc::new(AtomicUsize::new(0));
        let once = Arc::new(TakeOnce::new(payload(&drops)));
        let wins = Arc::new(AtomicUsize::new(0));
        let handles: Vec<_> = (0..2)
            .map(|_| {
                let (once, wins) = (once.clone(), wins.clone());
                thread::spawn(move || {
                    if let Some(p) = once.take() {
                        assert_eq!(p.written.with(|v| unsafe { *v }), 7, "the taker must see the maker's write");
                        wins.fetch_add(1, Ordering::Relaxed);
                        assert!(once.is_taken());
                    }
                })
            })
            .collect();
        // The owner's own try, as a cancel on a third thread would.
        let mine = once.take();
        if mine.is_some() {
            wins.fetch_add(1, Ordering::Relaxed);
        }
        drop(mine);
        for h in handles {
            h.join().unwrap();
        }
        assert_eq!(wins.load(Ordering::Relaxed), 1, "exactly one taker");
        drop(once);
        assert_eq!(drops.load(Ordering::Relaxed), 1, "the value is dropped exactly once");
    });
}

#[test]
fn an_untaken_value_is_dropped_once_with_its_holder() {
    loom::model(|| {
        let drops = Arc::new(AtomicUsize::new(0));
        let once = Arc::new(TakeOnce::new(payload(&drops)));
        let other = once.clone();
        // The last holder drops it, on whichever thread that is.
        let h = thread::spawn(move || drop(other));
        drop(once);
        h.join().unwrap();
        assert_eq!(drops.load(Ordering::Relaxed), 1);
    });
}

#[test]
fn a_taker_racing_the_last_drop_of_another_holder() {
    loom::model(|| {
        let drops = Arc::new(AtomicUsize::new(0));
        let once = Arc::new(TakeOnce::new(payload(&drops)));
        let other = once.clone();
        let h = thread::spawn(move || {
            let got = other.take().is_some();
            drop(other);
            got
        });
        let got = h.join().unwrap();
        assert!(got, "nobody else took it");
        assert_eq!(drops.load(Ordering::Relaxed), 1, "dropped by the taker only");
        drop(once);
        assert_eq!(drops.load(Ordering::Relaxed), 1, "not again by the holder");
    });
}

#[test]
#[should_panic]
fn the_model_catches_a_check_then_set_claim() {
    loom::model(|| {
        let once = Arc::new(TakeOnce::new(5u32));
        let other = once.clone();
        let h = thread::spawn(move || other.take_racy().is_some());
        let mine = once.take_racy().is_some();
        let theirs = h.join().unwrap();
        assert!(!(mine && theirs), "two takers");
    });
}
