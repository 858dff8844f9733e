#![cfg(loom)]
//! Loom model of the actor mailbox's single-drainer protocol
//! (`src/mailbox.rs`).
//!
//! A caller whose `push` returns `true` holds the drain token and becomes the
//! drainer: it pops until `pop` returns `None` (which gives the token up in
//! the same critical section). Two models: two pushers with two calls each
//! (whoever takes the token drains), and two pushers calling while a drain
//! that the main thread started is running (their pushes race with the end
//! of that drain).
//! Properties checked, over every interleaving loom explores:
//! - **Every message processed exactly once** (none stranded in the queue
//!   with no drainer, none twice).
//! - **Per-pusher FIFO**: each pusher's messages are processed in push order.
//! - **Never two drainers at once**: processing a message sets an
//!   `AtomicBool` "draining" flag that must have been clear, and appends to a
//!   plain `UnsafeCell` log that only the drainer touches, so two concurrent
//!   drainers are caught either by the flag or as a loom data race.
//!
//! Run: `RUSTFLAGS="--cfg loom" LOOM_MAX_PREEMPTIONS=2 cargo test --release -p manta --test loom_mailbox`

use loom::cell::UnsafeCell;
use loom::sync::atomic::{AtomicBool, Ordering};
use loom::sync::Arc;
use loom::thread;
use manta::protocols::Mailbox;

/// (pusher, sequence number)
type Msg = (usize, usize);

struct Actor {
    mailbox: Mailbox<Msg>,
    draining: AtomicBool,
    /// The actor's state: only ever touched by the current drainer.
    log: UnsafeCell<Vec<Msg>>,
}

// SAFETY: `log` is only accessed by the holder of the mailbox's drain token;
// loom reports a race if two drainers ever access it concurrently.
unsafe impl Sync for Actor {}

impl Actor {
    fn process(&self, m: Msg) {
        assert!(!self.draining.swap(true, Ordering::Relaxed), "two drainers at once");
        self.log.with_mut(|p| unsafe { (*p).push(m) });
        self.draining.store(false, Ordering::Relaxed);
    }

    /// The drain loop a scheduled drain runs: pop until the token is given up.
    fn drain(&self) {
        while let Some(m) = self.mailbox.pop() {
            self.process(m);
        }
    }

    /// An actor call: push, and drain if this push took the token.
    fn call(&self, m: Msg) {
        if self.mailbox.push(m) {
            self.drain();
        }
    }
}

/// Checks the end state once every call has returned (so any drain has
/// finished): nothing left queued, every message processed once and in each
/// pusher's order, and the drain token free again.
fn check(actor: &Actor, per_pusher: &[(usize, usize)]) {
    assert!(actor.mailbox.is_empty(), "a message was stranded with no drainer");
    let log = actor.log.with(|p| unsafe { (*p).clone() });
    let total: usize = per_pusher.iter().map(|&(_, n)| n).sum();
    assert_eq!(log.len(), total, "messages processed: {log:?}");
    for &(p, n) in per_pusher {
        let mine: Vec<usize> = log.iter().filter(|m| m.0 == p).map(|m| m.1).collect();
        assert_eq!(mine, (0..n).collect::<Vec<_>>(), "pusher {p}'s messages out of order or duplicated: {log:?}");
    }
    assert!(actor.mailbox.push((9, 9)), "drain token not released after the queue emptied");
}

fn new_actor() -> Arc<Actor> {
    Arc::new(Actor { mailbox: Mailbox::new(), draining: AtomicBool::new(false), log: UnsafeCell::new(Vec::new()) })
}

/// Two pushers, two calls each; whoever takes the token drains.
#[test]
fn two_pushers_single_drainer() {
    loom::model(|| {
        let actor = new_actor();
        let pushers: Vec<_> = (0..2)
            .map(|p| {
                let actor = actor.clone();
                thread::spawn(move || {
                    actor.call((p, 0));
                    actor.call((p, 1));
                })
            })
            .collect();
        for h in pushers {
            h.join().unwrap();
        }
        check(&actor, &[(0, 2), (1, 2)]);
    });
}

/// A drain already running (the main thread's call took the token) while
/// two pushers call concurrently: the pushers' calls race with the end of
/// that drain.
#[test]
fn two_pushers_racing_a_running_drain() {
    loom::model(|| {
        let actor = new_actor();
        assert!(actor.mailbox.push((2, 0)));
        let pushers: Vec<_> = (0..2)
            .map(|p| {
                let actor = actor.clone();
                thread::spawn(move || actor.call((p, 0)))
            })
            .collect();
        actor.drain();
        for h in pushers {
            h.join().unwrap();
        }
        check(&actor, &[(0, 1), (1, 1), (2, 1)]);
    });
}
