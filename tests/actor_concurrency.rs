//! Read-only actor calls (`call_ref`) and `max_concurrency`: consecutive
//! read-only calls run at once up to the limit, and never overlap a
//! mutating call or cross it in order.

use manta::{Error, Runtime};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

const LONG: Duration = Duration::from_secs(20);

fn rt() -> Runtime {
    Runtime::builder().num_cpus(2).build().expect("runtime")
}

/// Holds the actor in a first call until the returned sender fires, so the
/// calls made meanwhile are all in its mailbox when it goes on (batches are
/// then deterministic).
fn gate<S: Send + 'static>(actor: &manta::ActorHandle<S>) -> mpsc::Sender<()> {
    let (tx, rx) = mpsc::channel::<()>();
    actor.call(move |_| rx.recv_timeout(LONG).is_ok());
    tx
}

/// Two read-only calls meet each other: each waits (bounded) for a message
/// the other sends while running. Without concurrency the first would time
/// out alone.
#[test]
fn read_only_calls_run_at_once_up_to_the_limit() {
    let rt = rt();
    let actor = rt.actor_builder().max_concurrency(2).spawn(0u32);
    let open = gate(&actor);
    let (a_tx, a_rx) = mpsc::channel::<()>();
    let (b_tx, b_rx) = mpsc::channel::<()>();
    let (a_rx, b_rx) = (Mutex::new(a_rx), Mutex::new(b_rx));
    let a = actor.call_ref(move |_| {
        a_tx.send(()).unwrap();
        b_rx.lock().unwrap().recv_timeout(LONG).is_ok()
    });
    let b = actor.call_ref(move |_| {
        b_tx.send(()).unwrap();
        a_rx.lock().unwrap().recv_timeout(LONG).is_ok()
    });
    open.send(()).unwrap();
    assert!(*a.get().unwrap(), "the first read-only call never met the second");
    assert!(*b.get().unwrap());
}

/// Read-only calls see every earlier mutation and none of the later ones,
/// and at most `max_concurrency` run at once.
#[test]
fn read_only_calls_keep_their_place_between_mutations() {
    let rt = rt();
    let actor = rt.actor_builder().max_concurrency(3).spawn(0u64);
    let in_flight = Arc::new(AtomicUsize::new(0));
    let peak = Arc::new(AtomicUsize::new(0));
    let mut reads = Vec::new();
    for round in 1..=20u64 {
        actor.call(move |s| *s = round);
        for _ in 0..5 {
            let (in_flight, peak) = (in_flight.clone(), peak.clone());
            reads.push((
                round,
                actor.call_ref(move |s| {
                    let now = in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                    peak.fetch_max(now, Ordering::SeqCst);
                    let seen = *s;
                    std::thread::yield_now();
                    in_flight.fetch_sub(1, Ordering::SeqCst);
                    seen
                }),
            ));
        }
    }
    for (round, r) in reads {
        assert_eq!(*r.get().unwrap(), round);
    }
    assert!(peak.load(Ordering::SeqCst) <= 3, "more read-only calls ran at once than allowed");
}

/// With the default limit of 1, read-only calls never overlap.
#[test]
fn default_limit_runs_one_call_at_a_time() {
    let rt = rt();
    let actor = rt.actor(Vec::<u32>::new());
    let in_flight = Arc::new(AtomicUsize::new(0));
    let refs: Vec<_> = (0..50)
        .map(|_| {
            let in_flight = in_flight.clone();
            actor.call_ref(move |v| {
                let overlap = in_flight.fetch_add(1, Ordering::SeqCst);
                std::thread::yield_now();
                in_flight.fetch_sub(1, Ordering::SeqCst);
                overlap + v.len()
            })
        })
        .collect();
    assert!(rt.get_all(&refs).unwrap().iter().all(|n| **n == 0));
}

/// A panicking read-only call fails itself and restarts the actor like a
/// mutating one; the calls batched with it (running at the same time) still
/// complete on the old state, and the calls after the batch see the new one.
#[test]
fn a_panicking_read_only_call_restarts_the_actor() {
    let rt = rt();
    let actor = rt.actor_builder().max_restarts(1).max_concurrency(3).spawn_factory(|| 7u32);
    let open = gate(&actor);
    actor.call(|s| *s = 100);
    let ok = actor.call_ref(|s| *s);
    let bad = actor.call_ref(|_| -> u32 { panic!("reader failed") });
    let also_ok = actor.call_ref(|s| *s + 1);
    let after = actor.call_ref(|s| *s);
    open.send(()).unwrap();
    assert_eq!(*ok.get().unwrap(), 100);
    assert!(matches!(bad.get(), Err(Error::TaskPanicked { ref message, .. }) if &**message == "reader failed"));
    assert_eq!(*also_ok.get().unwrap(), 101);
    assert_eq!(*after.get().unwrap(), 7, "later calls run on the fresh state");
}

/// `call_ref_with` waits for its argument refs like `call_with`.
#[test]
fn read_only_calls_take_refs() {
    let rt = rt();
    let actor = rt.actor_builder().max_concurrency(2).spawn(10u64);
    let x = rt.spawn(|| 5u64);
    let r = actor.call_ref_with((x,), |s, (x,)| *s + *x);
    assert_eq!(*r.get().unwrap(), 15);
}
