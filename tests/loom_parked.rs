#![cfg(loom)]
//! Loom models of the parked-readers protocol (`src/parked.rs`): a reader
//! about to park on an object whose task may be queued, against a
//! canceller that sets the task's flag and then bumps the epoch.
//!
//! Property, over every interleaving loom explores: the reader sees the
//! cancellation (the flag, or the epoch moved past the one it last looked
//! at), or the canceller sees the reader parked (and has the service
//! thread reap); never neither, which would leave the reader waiting for a
//! busy runner. A reader that left is not counted.
//!
//! Run: `RUSTFLAGS="--cfg loom" cargo test --release -p manta --test loom_parked`

use loom::sync::atomic::{AtomicBool, Ordering};
use loom::sync::Arc;
use loom::thread;
use manta::protocols::Parked;

#[test]
fn a_parked_reader_or_the_canceller_sees_the_other() {
    loom::model(|| {
        let parked = Arc::new(Parked::default());
        let flag = Arc::new(AtomicBool::new(false));
        let (p, f) = (parked.clone(), flag.clone());
        let reader = thread::spawn(move || {
            let epoch = p.enter();
            // What `finish_if_cancelled` reads: the task's flag.
            let saw_flag = f.load(Ordering::SeqCst);
            (epoch, saw_flag)
        });
        // Release, as a group's cancel stores it (the fence orders it).
        flag.store(true, Ordering::Release);
        let readers = parked.cancelled();
        let (epoch, saw_flag) = reader.join().unwrap();
        assert!(saw_flag || readers, "neither saw the other");
        // A reader that saw the new epoch saw the flag set before it.
        if epoch > 0 {
            assert!(saw_flag);
        }
    });
}

#[test]
fn a_reader_that_left_is_not_counted() {
    loom::model(|| {
        let parked = Arc::new(Parked::default());
        let p = parked.clone();
        let reader = thread::spawn(move || {
            p.enter();
            p.leave();
        });
        reader.join().unwrap();
        assert!(!parked.cancelled());
        assert_eq!(parked.epoch(), 1);
    });
}
