#![cfg(loom)]
//! Loom models of the start-decision protocol (`src/decide.rs`): a worker
//! deciding whether to start a task races with a canceller that sets the
//! task's cancellation flag and then waits in `quiesce`.
//!
//! Property, over every interleaving loom explores: if the worker decided
//! to start the task, the canceller, once `quiesce` returned, sees it
//! started (so no task starts after a cancel returns); a worker that
//! decides after the cancellation sees it. Checked for a rayon thread (the
//! fixed table) and for a spare that joins while the cancel runs.
//!
//! Run: `RUSTFLAGS="--cfg loom" cargo test --release -p manta --test loom_decide`

use loom::sync::atomic::{AtomicBool, Ordering};
use loom::sync::Arc;
use loom::thread;
use manta::protocols::{Decider, Deciders};

/// The worker's decision: start unless cancelled (`exec::start_and_run`).
fn decide(me: &Decider, cancelled: &AtomicBool, started: &AtomicBool) {
    me.deciding(|| {
        if !cancelled.load(Ordering::SeqCst) {
            started.store(true, Ordering::Relaxed);
        }
    });
}

/// The canceller (`GroupState::cancel`): the flag (a Release store: the
/// SeqCst fence in `quiesce` orders it), then `quiesce`; returns whether it
/// saw the task started once `quiesce` returned.
fn cancel(deciders: &Deciders, cancelled: &AtomicBool, started: &AtomicBool) -> bool {
    if !cancelled.load(Ordering::Acquire) {
        cancelled.store(true, Ordering::Release);
    }
    deciders.quiesce();
    started.load(Ordering::Relaxed)
}

#[test]
fn no_task_starts_after_quiesce_returns() {
    loom::model(|| {
        let deciders = Arc::new(Deciders::new(1));
        let (cancelled, started) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicBool::new(false)));
        let me = deciders.fixed(0).expect("thread 0 has a flag");
        let (c, s) = (cancelled.clone(), started.clone());
        let worker = thread::spawn(move || decide(&me, &c, &s));
        let seen = cancel(&deciders, &cancelled, &started);
        worker.join().unwrap();
        if started.load(Ordering::Relaxed) {
            assert!(seen, "the task started after the cancel returned");
        }
    });
}

#[test]
fn a_spare_that_joins_during_a_cancel_is_waited_for_or_sees_it() {
    loom::model(|| {
        let deciders = Arc::new(Deciders::new(0));
        let (cancelled, started) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicBool::new(false)));
        let (d, c, s) = (deciders.clone(), cancelled.clone(), started.clone());
        let spare = thread::spawn(move || {
            let me = d.join_spare();
            decide(&me, &c, &s);
            d.leave_spare(&me);
        });
        let seen = cancel(&deciders, &cancelled, &started);
        spare.join().unwrap();
        if started.load(Ordering::Relaxed) {
            assert!(seen, "a spare's task started after the cancel returned");
        }
    });
}
