#![cfg(loom)]
//! Loom models of `Slot::free` (`Runtime::free`) racing the slot's other
//! transitions, driven as `objects::free_cell`, `Store::restore` /
//! `RebuildJob::finish`, the producers' `complete_stored` and
//! `Store::move_out` drive them.
//!
//! Properties checked, over every interleaving loom explores (a lost
//! wake-up shows up as a loom deadlock):
//! - **Free vs a rebuild in flight**: a reader claimed the rebuild of a
//!   moved-out value, charges its bytes and ends the rebuild; the free
//!   returns the bytes if it found the value back in memory, the reader
//!   returns them if `finish_rebuild_deferred` says the value was not
//!   stored (the slot was freed meanwhile): exactly once either way. The
//!   slot ends `Failed(ObjectFreed)`, and a reader waiting for the rebuild
//!   (the per-round waiter of `read_value`) always wakes.
//! - **Free vs completion**: the producer charges its result and completes;
//!   the free wins or loses the pending slot. Bytes are returned exactly
//!   once, the slot ends `Failed(ObjectFreed)`, and a waiter registered
//!   while pending is woken exactly once.
//! - **Free vs eviction**: the value's bytes leave memory exactly once.
//!
//! Run: `RUSTFLAGS="--cfg loom" LOOM_MAX_PREEMPTIONS=2 cargo test --release -p manta --test loom_free`

use loom::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use loom::sync::Arc;
use loom::thread;
use manta::protocols::{Meta, Moved, Parker, Read, Slot, Value, Waiter};
use manta::{Error, ObjectId};

const N: usize = 8;

fn value() -> Value {
    Value::new(7u32)
}

fn charged() -> Meta {
    Meta { charged: N }
}

fn freed_error() -> Error {
    Error::ObjectFreed { id: ObjectId::fresh() }
}

fn assert_freed(slot: &Slot) {
    match slot.read_state() {
        Read::Failed(Error::ObjectFreed { .. }) => {}
        other => panic!("expected Failed(ObjectFreed), got {other:?}"),
    }
}

/// `objects::free_cell`: free, give back what was charged in memory, wake.
fn free(slot: &Slot, bytes: &AtomicUsize) {
    let freed = slot.free(freed_error());
    bytes.fetch_sub(freed.charged, Ordering::SeqCst);
    if let Some(w) = freed.wake {
        w.send();
    }
}

/// `read_value`'s per-round wait for a rebuild to end.
fn wait_round(slot: &Slot, parker: &Arc<Parker>) {
    let ended = Arc::new(AtomicBool::new(false));
    let (flag, p) = (ended.clone(), parker.clone());
    let waiter = Waiter::Callback(Box::new(move |_| {
        flag.store(true, Ordering::Release);
        p.unpark();
    }));
    if slot.register(waiter).is_ok() {
        while !ended.load(Ordering::Acquire) {
            assert!(parker.park_until(None));
        }
    }
}

#[test]
fn free_racing_a_rebuild_returns_the_bytes_once() {
    loom::model(|| {
        let slot = Arc::new(Slot::done(Ok(value()), charged()));
        assert_eq!(slot.evict_with(|_, _| Some(Moved::Evicted)), Some(N));
        let bytes = Arc::new(AtomicUsize::new(0)); // the value is out of memory
        let rebuilder = {
            let (slot, bytes) = (slot.clone(), bytes.clone());
            thread::spawn(move || {
                if slot.begin_rebuild().is_some() {
                    bytes.fetch_add(N, Ordering::SeqCst); // reserved for the value
                    let (wake, stored) = slot.finish_rebuild_deferred(Ok((value(), charged())));
                    if !stored {
                        bytes.fetch_sub(N, Ordering::SeqCst); // freed meanwhile
                    }
                    wake.send();
                }
            })
        };
        let waiter = {
            let slot = slot.clone();
            thread::spawn(move || {
                let parker = Parker::new();
                loop {
                    match slot.read_state() {
                        Read::Rebuilding => wait_round(&slot, &parker),
                        Read::Out(_) => thread::yield_now(),
                        Read::Pending => unreachable!("a done slot never goes back to pending"),
                        Read::Value(_) | Read::Failed(_) => break,
                    }
                }
            })
        };
        free(&slot, &bytes);
        rebuilder.join().unwrap();
        waiter.join().unwrap();
        assert_eq!(bytes.load(Ordering::SeqCst), 0, "charged bytes returned exactly once");
        assert_freed(&slot);
    });
}

#[test]
fn free_racing_completion_returns_the_bytes_once_and_wakes_once() {
    loom::model(|| {
        let slot: Arc<Slot> = Arc::new(Slot::pending());
        let bytes = Arc::new(AtomicUsize::new(0));
        let woken = Arc::new(AtomicUsize::new(0));
        let parker = Parker::new();
        let (w, p) = (woken.clone(), parker.clone());
        let registered = slot
            .register(Waiter::Callback(Box::new(move |_| {
                w.fetch_add(1, Ordering::SeqCst);
                p.unpark();
            })))
            .is_ok();
        assert!(registered, "pending slots take waiters");
        let producer = {
            let (slot, bytes) = (slot.clone(), bytes.clone());
            thread::spawn(move || {
                bytes.fetch_add(N, Ordering::SeqCst); // admitted
                match slot.complete_deferred(Ok(value()), charged()) {
                    Some(wake) => wake.send(),
                    None => {
                        bytes.fetch_sub(N, Ordering::SeqCst); // already done: released
                    }
                }
            })
        };
        free(&slot, &bytes);
        producer.join().unwrap();
        while woken.load(Ordering::SeqCst) == 0 {
            assert!(parker.park_until(None));
        }
        assert_eq!(woken.load(Ordering::SeqCst), 1, "woken exactly once");
        assert_eq!(bytes.load(Ordering::SeqCst), 0, "charged bytes returned exactly once");
        assert_freed(&slot);
    });
}

#[test]
fn free_racing_eviction_moves_the_bytes_out_once() {
    loom::model(|| {
        let slot = Arc::new(Slot::done(Ok(value()), charged()));
        let bytes = Arc::new(AtomicUsize::new(N)); // in memory
        let evictor = {
            let (slot, bytes) = (slot.clone(), bytes.clone());
            thread::spawn(move || {
                if let Some(n) = slot.evict_with(|_, _| Some(Moved::Evicted)) {
                    bytes.fetch_sub(n, Ordering::SeqCst);
                }
            })
        };
        free(&slot, &bytes);
        evictor.join().unwrap();
        assert_eq!(bytes.load(Ordering::SeqCst), 0);
        assert_freed(&slot);
    });
}
