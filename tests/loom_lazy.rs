#![cfg(loom)]
//! Loom models of the set-once value (`src/lazy.rs`) that holds an
//! object's id, drawn by whichever thread asks first. Properties checked,
//! over every interleaving loom explores:
//! - **Agreement**: racing callers all get the same value, one of theirs,
//!   and read it only after it was written (loom checks the cell).
//! - **Given**: a value given at construction is what every caller gets.
//! - **Seeded bug**: publishing SET before writing the value
//!   (`Lazy::get_or_racy`) lets a reader read it unwritten; the model
//!   must catch it.
//!
//! Run: `RUSTFLAGS="--cfg loom" LOOM_MAX_PREEMPTIONS=2 cargo test --release -p manta --test loom_lazy`

use loom::sync::Arc;
use loom::thread;
use manta::protocols::Lazy;

#[test]
fn racing_callers_agree_on_one_of_their_values() {
    loom::model(|| {
        let cell = Arc::new(Lazy::unset());
        let other = cell.clone();
        let h = thread::spawn(move || other.get_or(|| 1u64));
        let mine = cell.get_or(|| 2);
        assert_eq!(h.join().unwrap(), mine, "both callers get the same value");
        assert!((1..=2).contains(&mine));
        assert_eq!(cell.get(), Some(mine));
    });
}

#[test]
fn a_value_given_at_construction_is_kept() {
    loom::model(|| {
        let cell = Arc::new(Lazy::new(9u64));
        let other = cell.clone();
        let h = thread::spawn(move || other.get_or(|| 1));
        assert_eq!(cell.get_or(|| 2), 9);
        assert_eq!(h.join().unwrap(), 9);
    });
}

#[test]
#[should_panic]
fn the_model_catches_publishing_before_writing() {
    loom::model(|| {
        let cell = Arc::new(Lazy::unset());
        let other = cell.clone();
        let h = thread::spawn(move || other.get_or_racy(|| 1u64));
        let mine = cell.get_or_racy(|| 2u64);
        let theirs = h.join().unwrap();
        assert_eq!(mine, theirs, "both callers must see the value");
    });
}
