#![cfg(loom)]
//! Loom model of a group's counts (`src/group_counts.rs`) with the real
//! start-decision protocol (`src/decide.rs`): a worker decides whether to
//! start a task of the group and runs its body, while a canceller sets the
//! group's flag, waits in `quiesce` and then asks whether the group is
//! stopped (as `Group::cancel` followed by `wait_stopped` or the burial of
//! its closures does).
//!
//! Property, over every interleaving loom explores: once the canceller
//! has seen the group stopped, no body of the group starts. A seeded bug
//! (the task counted running after its start decision instead of inside
//! it) must be caught.
//!
//! Run: `RUSTFLAGS="--cfg loom" cargo test --release -p manta --test loom_group`

use loom::sync::atomic::{AtomicBool, Ordering};
use loom::sync::Arc;
use loom::thread;
use manta::protocols::{Counts, Decider, Deciders, Ended};

struct Group {
    counts: Counts,
    cancelled: AtomicBool,
    /// Set by the canceller once it saw the group stopped.
    seen_stopped: AtomicBool,
}

/// A worker runs the group's one task (`exec::start_and_run`): the start
/// decision, with the task counted running inside it (or, with
/// `racy_count`, after it: the seeded bug), then the body, then the
/// counts.
fn run_task(me: &Decider, g: &Group, racy_count: bool) {
    let start = me.deciding(|| {
        let start = !g.cancelled.load(Ordering::SeqCst);
        if start && !racy_count {
            g.counts.started();
        }
        start
    });
    if !start {
        g.counts.ended(Ended::Cancelled);
        return;
    }
    if racy_count {
        g.counts.started();
    }
    // The body starts: the group must not have been seen stopped.
    assert!(!g.seen_stopped.load(Ordering::Acquire), "a body started after the group was seen stopped");
    g.counts.stopped_running();
    g.counts.ended(Ended::Done);
}

/// The canceller: the flag, `quiesce`, then one look at the counts.
fn cancel_and_look(deciders: &Deciders, g: &Group) {
    g.cancelled.store(true, Ordering::Release);
    deciders.quiesce();
    if g.counts.is_stopped(|| g.cancelled.load(Ordering::Acquire)) {
        g.seen_stopped.store(true, Ordering::Release);
    }
}

fn model(racy_count: bool) {
    loom::model(move || {
        let deciders = Arc::new(Deciders::new(1));
        let g = Arc::new(Group {
            counts: Counts::default(),
            cancelled: AtomicBool::new(false),
            seen_stopped: AtomicBool::new(false),
        });
        g.counts.submitted();
        let me = deciders.fixed(0).expect("thread 0 has a flag");
        let w = g.clone();
        let worker = thread::spawn(move || run_task(&me, &w, racy_count));
        cancel_and_look(&deciders, &g);
        worker.join().unwrap();
        let (submitted, running, done, failed, cancelled) = g.counts.get();
        assert_eq!((submitted, running, failed), (1, 0, 0));
        assert_eq!(done + cancelled, 1, "the task ended once");
        assert!(g.counts.is_finished());
    });
}

#[test]
fn a_group_seen_stopped_after_a_cancel_starts_no_body() {
    model(false);
}

/// The seeded bug: counted running only after the start decision, a task
/// that decided to start before the cancellation can still look idle to
/// the canceller once `quiesce` returned.
#[test]
#[should_panic(expected = "a body started after the group was seen stopped")]
fn seeded_bug_counting_after_the_decision_is_caught() {
    model(true);
}
