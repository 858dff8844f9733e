#![cfg(loom)]
//! Loom models of the watchers protocol (`src/watchers.rs`) as a task
//! group uses it (`GroupState::on_stopped`, which `Group::on_stopped`,
//! `wait_stopped` and the burial of a cancelled group's queued closures
//! rely on). The group here is its two fields that matter: the running
//! count and the cancelled flag; "stopped" is `running == 0 && cancelled`.
//! Its two wakers are as in `GroupState`: the last running task
//! (`fetch_sub` reaching zero, then a wake) and the canceller (a Release
//! store, a SeqCst fence, then a wake only if anyone ever watched).
//! Properties checked, over every interleaving loom explores:
//! - **Exactly once**: a callback registered with `when` while the group
//!   runs, racing both wakers, runs exactly once by the end.
//! - **Only when stopped**: when it runs, the group is stopped.
//! - **Seeded bug**: without the second look after registering
//!   (`when_racy`), a change between the first look and the
//!   registration wakes nobody and the callback never runs; the model must
//!   catch it.
//!
//! Run: `RUSTFLAGS="--cfg loom" LOOM_MAX_PREEMPTIONS=2 cargo test --release -p manta --test loom_watchers`

use loom::sync::atomic::{fence, AtomicBool, AtomicUsize, Ordering};
use loom::sync::Arc;
use loom::thread;
use manta::protocols::{when, when_racy, Watchers};

/// The parts of a group the protocol reads.
#[derive(Default)]
struct Group {
    running: AtomicUsize,
    cancelled: AtomicBool,
    watchers: Watchers,
    /// Times the callback ran, and whether the group was stopped each time.
    ran: AtomicUsize,
    ran_stopped: AtomicBool,
}

fn stopped(g: &Arc<Group>) -> bool {
    g.running.load(Ordering::Acquire) == 0 && g.cancelled.load(Ordering::SeqCst)
}

fn watchers(g: &Arc<Group>) -> &Watchers {
    &g.watchers
}

/// Runs the callback where it is handed over (the service thread, in
/// manta).
fn run_here(f: Box<dyn FnOnce() + Send>) {
    f();
}

/// One running task and a canceller race a watcher; `register` is the
/// watcher's registration (`when` or the seeded bug).
fn race(register: fn(&Arc<Group>, Box<dyn FnOnce() + Send>)) {
    let g = Arc::new(Group::default());
    g.running.store(1, Ordering::Relaxed);
    let task = {
        let g = g.clone();
        thread::spawn(move || {
            // `GroupState::stopped_running`.
            if g.running.fetch_sub(1, Ordering::AcqRel) == 1 {
                g.watchers.wake();
            }
        })
    };
    let canceller = {
        let g = g.clone();
        thread::spawn(move || {
            // `GroupState::cancel`: the flag, the fence `Scheduler::cancelled`
            // issues, then a wake only if anyone ever watched.
            g.cancelled.store(true, Ordering::Release);
            fence(Ordering::SeqCst);
            if g.watchers.watched() {
                g.watchers.wake();
            }
        })
    };
    let me = g.clone();
    register(
        &g,
        Box::new(move || {
            me.ran.fetch_add(1, Ordering::SeqCst);
            me.ran_stopped.store(stopped(&me), Ordering::SeqCst);
        }),
    );
    task.join().unwrap();
    canceller.join().unwrap();
    assert_eq!(g.ran.load(Ordering::SeqCst), 1, "the callback runs exactly once");
    assert!(g.ran_stopped.load(Ordering::SeqCst), "it ran only once the group had stopped");
}

#[test]
fn a_watcher_runs_exactly_once_once_the_group_has_stopped() {
    loom::model(|| race(|g, f| when(g, watchers, stopped, run_here, f)));
}

#[test]
#[should_panic]
fn seeded_bug_no_second_look_after_registering_loses_the_wake() {
    loom::model(|| race(|g, f| when_racy(g, watchers, stopped, run_here, f)));
}
