#![cfg(loom)]
//! Loom models of the object slot protocol (`src/slot.rs`).
//!
//! Properties checked, over every interleaving loom explores:
//! - **No lost wake-up**: a `get`-style reader (fast-path `read`, then
//!   `register(Waiter::Parker)`, then `park` and `read`) that races with
//!   `complete` always gets the value. `register` returning `Err` means the
//!   slot is already done; `Ok` means the completer will unpark it. A lost
//!   wake-up shows up as a loom deadlock.
//! - **Complete vs cancel**: cancellation is `complete(Err(Cancelled))`
//!   racing with `complete(Ok)`; exactly one returns `true`, and every waiter
//!   (a parked reader and a callback) sees the winner's outcome.
//! - **`is_failed` without the lock**: the lock-free flag agrees with the
//!   state: a reader that sees it set reads the error, one that read the
//!   outcome under the lock sees the flag match it, and after the race it
//!   is set exactly when the cancel won.
//! - **Every waiter notified exactly once**: waiters registered concurrently
//!   with completion are each notified once (by the completer, or by the
//!   registering thread itself when `register` refuses the late waiter), and
//!   the slot keeps no registration afterwards.
//! - **Inline waiter**: the first registration is kept inline, a second
//!   spills both into a list; a waiter that deregisters while the slot
//!   completes leaves the other to be notified exactly once.
//!
//! Run: `RUSTFLAGS="--cfg loom" LOOM_MAX_PREEMPTIONS=2 cargo test --release -p manta --test loom_slot`

use loom::sync::atomic::{AtomicUsize, Ordering};
use loom::sync::Arc;
use loom::thread;
use manta::protocols::{Parker, Slot, Value, Waiter};
use manta::Error;

fn cancelled() -> Error {
    Error::Cancelled { task: "t".into() }
}

/// `ObjectCell::get` without the spinning: read, else register a parker and
/// park until done, then read. Returns `Ok(value)` or `Err(is_cancelled)`.
fn get_style(slot: &Slot) -> Result<u32, bool> {
    let outcome = match slot.read() {
        Some(o) => o,
        None => {
            let parker = Parker::new();
            match slot.register(Waiter::Parker(parker.clone())) {
                // Refused: the slot completed between `read` and `register`.
                Err(_) => {}
                // Registered: the completer will unpark us exactly once.
                Ok(_) => {
                    let woke = parker.park_until(None);
                    assert!(woke);
                }
            }
            assert!(slot.is_done(), "woken (or refused) before the slot was done");
            slot.read().expect("done slot must have an outcome")
        }
    };
    match outcome {
        Ok(v) => Ok(*v.downcast::<u32>().expect("stored a u32")),
        Err(e) => Err(e.is_cancelled()),
    }
}

#[test]
fn complete_vs_register_and_park() {
    loom::model(|| {
        let slot: Arc<Slot> = Arc::new(Slot::pending());
        let s = slot.clone();
        let completer = thread::spawn(move || {
            assert!(s.complete(Ok(Value::new(7u32))));
        });
        assert_eq!(get_style(&slot), Ok(7));
        completer.join().unwrap();
        assert_eq!(slot.waiter_count(), 0);
    });
}

#[test]
fn complete_vs_cancel_exactly_one_wins() {
    loom::model(|| {
        let slot: Arc<Slot> = Arc::new(Slot::pending());

        // Waiter 1: a callback registered up front (a dependant, `on_ready`).
        // Records 1 for an error, 2 for a value; counts its calls.
        let seen = Arc::new(AtomicUsize::new(0));
        let calls = Arc::new(AtomicUsize::new(0));
        {
            let (seen, calls) = (seen.clone(), calls.clone());
            let cb = move |ok: bool| {
                calls.fetch_add(1, Ordering::Relaxed);
                seen.store(if ok { 2 } else { 1 }, Ordering::Relaxed);
            };
            slot.register(Waiter::Callback(Box::new(cb))).expect("slot is pending");
        }

        let s = slot.clone();
        let producer = thread::spawn(move || s.complete(Ok(Value::new(1u32))));
        let s = slot.clone();
        let canceller = thread::spawn(move || s.complete(Err(cancelled())));

        // Waiter 2: a `get`-style reader racing with both, after a look at
        // the lock-free flag (set only once the error is the state, for good).
        let early_failed = slot.is_failed();
        let got = get_style(&slot);
        if early_failed {
            assert_eq!(got, Err(true), "is_failed before the error was stored");
        }
        assert_eq!(slot.is_failed(), got.is_err(), "is_failed disagrees with the outcome read");

        let produced = producer.join().unwrap();
        let cancelled_won = canceller.join().unwrap();
        assert!(produced ^ cancelled_won, "exactly one completion must win");

        let expected = if produced { Ok(1) } else { Err(true) };
        assert_eq!(got, expected, "the reader saw the loser's outcome");
        assert_eq!(calls.load(Ordering::Relaxed), 1, "callback not notified exactly once");
        assert_eq!(seen.load(Ordering::Relaxed), if produced { 2 } else { 1 });
        assert_eq!(slot.read().map(|o| o.is_ok()), Some(produced));
        assert_eq!(slot.is_failed(), !produced);
    });
}

#[test]
fn many_waiters_notified_exactly_once() {
    loom::model(|| {
        let slot: Arc<Slot> = Arc::new(Slot::pending());
        let counts: Arc<[AtomicUsize; 2]> = Arc::new([AtomicUsize::new(0), AtomicUsize::new(0)]);

        let registrars: Vec<_> = (0..2)
            .map(|i| {
                let (slot, counts) = (slot.clone(), counts.clone());
                thread::spawn(move || {
                    let c = counts.clone();
                    let w = Waiter::Callback(Box::new(move |ok| {
                        assert!(ok);
                        c[i].fetch_add(1, Ordering::Relaxed);
                    }));
                    // `on_ready`: a refused (late) waiter is notified here.
                    if let Err(w) = slot.register(w) {
                        w.notify(true);
                    }
                })
            })
            .collect();

        assert!(slot.complete(Ok(Value::new(3u32))));
        for r in registrars {
            r.join().unwrap();
        }
        for c in counts.iter() {
            assert_eq!(c.load(Ordering::Relaxed), 1, "a waiter was notified {} times", c.load(Ordering::Relaxed));
        }
        assert_eq!(slot.waiter_count(), 0, "a registration outlived completion");
    });
}

/// A timed-out reader deregisters while the slot completes, beside a
/// second waiter that stays: the slot keeps one registration inline and
/// spills to a list at the second, so removing one must leave the other
/// (inline or in the list) to be notified exactly once, and the one that
/// left at most once.
#[test]
fn deregister_racing_complete_leaves_the_other_waiter() {
    loom::model(|| {
        let slot: Arc<Slot> = Arc::new(Slot::pending());
        let stays = Arc::new(AtomicUsize::new(0));
        let leaves = Arc::new(AtomicUsize::new(0));
        let (l, st) = (leaves.clone(), stays.clone());
        let leaving = slot.register(Waiter::Callback(Box::new(move |_| {
            l.fetch_add(1, Ordering::Relaxed);
        })));
        let s = slot.clone();
        let staying = thread::spawn(move || {
            let w = Waiter::Callback(Box::new(move |_| {
                st.fetch_add(1, Ordering::Relaxed);
            }));
            if let Err(w) = s.register(w) {
                w.notify(true);
            }
        });
        let s = slot.clone();
        let completer = thread::spawn(move || assert!(s.complete(Ok(Value::new(5u32)))));
        if let Ok(token) = leaving {
            slot.deregister(token);
        }
        staying.join().unwrap();
        completer.join().unwrap();
        assert_eq!(stays.load(Ordering::Relaxed), 1, "the waiter that stayed was not notified exactly once");
        assert!(leaves.load(Ordering::Relaxed) <= 1, "the waiter that left was notified twice");
        assert_eq!(slot.waiter_count(), 0, "a registration outlived completion");
    });
}
