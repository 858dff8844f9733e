#![cfg(loom)]
//! Loom model of `wait`/`get_all`'s registration protocol (`src/wait.rs`).
//!
//! The waiter registers one `WaitGroup` on every slot; a slot that is
//! already done refuses the registration and the waiter counts it itself
//! (`arrive`). Every slot therefore counts exactly once, whether it
//! completes before, during or after the registration loop, and the group
//! reaches its target: the waiter, which parks until its condition holds
//! and re-checks after every wake-up, always returns (a lost wake-up is a
//! loom deadlock).
//!
//! This model caught the original bug: the waiter counted done slots in a
//! first scan and skipped slots found done in the loop, so a slot that
//! completed between the two was counted nowhere and the waiter slept
//! forever.
//!
//! Run: `RUSTFLAGS="--cfg loom" LOOM_MAX_PREEMPTIONS=2 cargo test --release -p manta --test loom_wait`

use loom::sync::Arc;
use loom::thread;
use manta::protocols::{Parker, Slot, Value, WaitGroup, Waiter};

#[test]
fn every_slot_counts_once_whenever_it_completes() {
    loom::model(|| {
        let slots: Arc<[Slot; 2]> = Arc::new([Slot::pending(), Slot::pending()]);
        let s = slots.clone();
        let completer = thread::spawn(move || {
            for slot in s.iter() {
                slot.complete(Ok(Value::new(1u8)));
            }
        });

        let parker = Parker::new();
        let group = WaitGroup::new(2, 0, parker.clone());
        for slot in slots.iter() {
            if slot.register(Waiter::Group(group.clone())).is_err() {
                group.arrive(!slot.is_failed());
            }
        }
        // Wait for both, as `wait(num_returns = 2)` does.
        while !slots.iter().all(|s| s.is_done()) {
            parker.park_until(None);
        }
        completer.join().unwrap();
        // Once the completer is done notifying, each slot counted once.
        assert_eq!(group.done(), 2);
    });
}
