#![cfg(loom)]
//! Loom models of reference counting across threads.
//!
//! - **Shim `Arc` drops exactly once**: a value shared through the `sync`
//!   shim's `Arc` (under `--cfg loom` that is `loom::sync::Arc`, the type
//!   `crate::sync::Arc` resolves to), cloned and dropped concurrently on
//!   several threads, is dropped exactly once, only after every clone is
//!   gone, and never while a thread still reads it.
//! - **A slot's value is freed exactly once, wherever the last reference
//!   goes**: a slot shared via the shim `Arc` is completed on one thread,
//!   read on another (the reader's `Arc` to the value outlives the slot
//!   reference it read through), and an `on_ready`-style callback that
//!   captures the slot itself is registered concurrently with completion;
//!   the value is dropped exactly once, on
//!   whichever thread drops the last reference, and no reference cycle
//!   (slot → waiter → slot) survives completion. Loom also reports any
//!   leaked loom `Arc` at the end of each execution.
//!
//! Run: `RUSTFLAGS="--cfg loom" LOOM_MAX_PREEMPTIONS=2 cargo test --release -p manta --test loom_refcount`

use loom::sync::atomic::{AtomicUsize, Ordering};
use loom::sync::Arc;
use loom::thread;
use manta::protocols::{Slot, Value, Waiter};

/// Counts its drops.
struct Tracked {
    drops: Arc<AtomicUsize>,
}

impl Tracked {
    fn alive(&self) -> bool {
        self.drops.load(Ordering::Acquire) == 0
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        self.drops.fetch_add(1, Ordering::AcqRel);
    }
}

#[test]
fn shim_arc_clone_and_drop_drops_once() {
    loom::model(|| {
        let drops = Arc::new(AtomicUsize::new(0));
        let shared = Arc::new(Tracked { drops: drops.clone() });

        let handles: Vec<_> = (0..2)
            .map(|_| {
                let mine = shared.clone();
                thread::spawn(move || {
                    let again = mine.clone();
                    drop(mine);
                    assert!(again.alive(), "dropped while a clone is held");
                    drop(again);
                })
            })
            .collect();
        assert!(shared.alive());
        drop(shared);
        for h in handles {
            h.join().unwrap();
        }
        assert_eq!(drops.load(Ordering::Acquire), 1, "value dropped {} times", drops.load(Ordering::Acquire));
    });
}

#[test]
fn slot_value_last_reference_on_another_thread() {
    loom::model(|| {
        let drops = Arc::new(AtomicUsize::new(0));
        let slot: Arc<Slot> = Arc::new(Slot::pending());

        let s = slot.clone();
        let d = drops.clone();
        let producer = thread::spawn(move || {
            assert!(s.complete(Ok(Value::new(Tracked { drops: d }))));
        });

        // The reader: waits (spinning via yield), takes a reference to the
        // value, and drops its slot reference before the value's.
        let s = slot.clone();
        let reader = thread::spawn(move || {
            let v = loop {
                if let Some(o) = s.read() {
                    break o.unwrap().downcast::<Tracked>().unwrap();
                }
                thread::yield_now();
            };
            drop(s);
            assert!(v.alive(), "value freed while a reader holds it");
            drop(v);
        });

        // `on_ready`, racing with completion: the callback captures the slot
        // (as `ObjectRef::on_ready` captures its cell), so a registration the
        // slot kept after completing would be a slot -> waiter -> slot cycle.
        let cb_slot = slot.clone();
        let cb = Waiter::Callback(Box::new(move |ok| {
            assert!(ok);
            let v = cb_slot.read().expect("done").unwrap().downcast::<Tracked>().unwrap();
            assert!(v.alive());
        }));
        if let Err(w) = slot.register(cb) {
            w.notify(true);
        }

        drop(slot);
        producer.join().unwrap();
        reader.join().unwrap();
        assert_eq!(drops.load(Ordering::Acquire), 1, "value dropped {} times", drops.load(Ordering::Acquire));
    });
}
