//! Actors: calls on one actor run one at a time in submission order; calls
//! on different actors run in parallel; `call_with` waits for argument refs,
//! holding back later calls from the same handle but not from a clone;
//! restarts from a factory (`max_restarts`), death (`ActorDead`); many
//! actors; the state is dropped once the last handle is gone and every
//! queued call has run.

mod common;
use common::Gauge;

use manta::{Error, Runtime};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

const LONG: Duration = Duration::from_secs(10);

fn rt(cpus: usize) -> Runtime {
    Runtime::builder().num_cpus(cpus).build().expect("runtime")
}

#[test]
fn calls_on_one_actor_run_in_order_one_at_a_time() {
    let rt = rt(4);
    let gauge = Arc::new(Gauge::default());
    let actor = rt.actor(Vec::<usize>::new());
    let refs: Vec<_> = (0..1_000)
        .map(|i| {
            let g = gauge.clone();
            actor.call(move |log: &mut Vec<usize>| {
                g.enter();
                if i % 100 == 0 {
                    std::thread::sleep(Duration::from_millis(1)); // room for an overlap, were it allowed
                }
                log.push(i);
                g.exit();
                log.len()
            })
        })
        .collect();
    let lens: Vec<usize> = rt.get_all(&refs).unwrap().iter().map(|v| **v).collect();
    assert_eq!(lens, (1..=1_000).collect::<Vec<_>>());
    let log = actor.call(|log: &mut Vec<usize>| log.clone()).get().unwrap();
    assert_eq!(*log, (0..1_000).collect::<Vec<_>>());
    assert_eq!(gauge.max(), 1);
}

#[test]
fn calls_on_different_actors_run_in_parallel() {
    let rt = rt(2);
    // Each actor's method signals the other and waits for the other's signal:
    // this completes only if both methods run at the same time.
    let (to_b, from_a) = mpsc::channel::<()>();
    let (to_a, from_b) = mpsc::channel::<()>();
    let a = rt.actor((to_b, from_b));
    let b = rt.actor((to_a, from_a));
    let ra = a.call(|(tx, rx): &mut (mpsc::Sender<()>, mpsc::Receiver<()>)| {
        tx.send(()).unwrap();
        rx.recv_timeout(LONG).is_ok()
    });
    let rb = b.call(|(tx, rx): &mut (mpsc::Sender<()>, mpsc::Receiver<()>)| {
        tx.send(()).unwrap();
        rx.recv_timeout(LONG).is_ok()
    });
    assert!(*ra.get().unwrap(), "actor a never met actor b");
    assert!(*rb.get().unwrap(), "actor b never met actor a");
}

#[test]
fn call_with_waits_for_pending_argument_refs() {
    let rt = rt(2);
    let (release, rx) = mpsc::channel::<i64>();
    let pending = rt.spawn(move || rx.recv().unwrap_or(0));
    let ready = rt.put(String::from("sum")).unwrap();
    let actor = rt.actor(100i64);
    let r = actor.call_with((pending.clone(), ready, 5i64), |total: &mut i64, (p, label, k)| {
        *total += *p + k;
        format!("{label}={total}")
    });
    assert!(!r.is_ready());
    release.send(20).unwrap();
    assert_eq!(r.get().unwrap().as_str(), "sum=125");
    // A failed argument fails the call without running it; the actor lives on.
    let bad = rt.spawn(|| -> i64 { panic!("bad input") });
    let failed = actor.call_with((bad,), |total: &mut i64, (b,)| {
        *total = -1;
        *b
    });
    assert!(failed.get().unwrap_err().is_panic());
    assert_eq!(*actor.call(|t| *t).get().unwrap(), 125);
}

#[test]
fn a_pending_argument_holds_back_the_same_handle_only() {
    let rt = rt(2);
    let (release, rx) = mpsc::channel::<()>();
    let pending = rt.spawn(move || rx.recv().is_ok());
    let h = rt.actor(Vec::<&'static str>::new());
    let a = h.call_with((pending,), |log: &mut Vec<&'static str>, _| {
        log.push("A");
        log.len()
    });
    let b = h.call(|log: &mut Vec<&'static str>| {
        log.push("B");
        log.len()
    });
    let h2 = h.clone();
    let c = h2.call(|log: &mut Vec<&'static str>| {
        log.push("C");
        log.len()
    });
    assert_eq!(*c.get_timeout(LONG).unwrap(), 1, "another handle's call goes ahead");
    assert!(!a.is_ready());
    assert!(!b.is_ready(), "B waits behind A (same handle)");
    release.send(()).unwrap();
    assert_eq!(*b.get().unwrap(), 3);
    assert_eq!(*a.get().unwrap(), 2);
    assert_eq!(*h2.call(|log: &mut Vec<&'static str>| log.clone()).get().unwrap(), ["C", "A", "B"]);
}

#[test]
fn restart_from_factory_then_die() {
    let rt = rt(2);
    let built = Arc::new(AtomicUsize::new(0));
    let b = built.clone();
    let actor = rt.actor_builder().name("counter").max_restarts(1).spawn_factory(move || {
        b.fetch_add(1, Ordering::SeqCst);
        0u32
    });
    assert_eq!(actor.name(), "counter");
    let inc = |n: &mut u32| {
        *n += 1;
        *n
    };
    let boom = |_: &mut u32| -> u32 { panic!("method boom") };
    let r1 = actor.call(inc);
    let r2 = actor.call(inc);
    let p1 = actor.call(boom);
    let r3 = actor.call(inc);
    let r4 = actor.call(inc);
    let p2 = actor.call(boom);
    let r5 = actor.call(inc);
    assert_eq!((*r1.get().unwrap(), *r2.get().unwrap()), (1, 2));
    match p1.get() {
        Err(Error::TaskPanicked { message, .. }) => assert_eq!(&*message, "method boom"),
        other => panic!("expected TaskPanicked, got {other:?}"),
    }
    assert_eq!((*r3.get().unwrap(), *r4.get().unwrap()), (1, 2), "fresh state after the restart");
    assert!(matches!(p2.get(), Err(Error::TaskPanicked { .. })));
    match r5.get() {
        Err(Error::ActorDead { actor, reason }) => {
            assert_eq!(&*actor, "counter");
            assert!(reason.contains("method boom"), "{reason}");
        }
        other => panic!("expected ActorDead, got {other:?}"),
    }
    assert!(matches!(actor.call(inc).get(), Err(Error::ActorDead { .. })));
    assert_eq!(built.load(Ordering::SeqCst), 2, "built once, restarted once");
}

#[test]
fn an_actor_from_state_dies_on_first_panic() {
    let rt = rt(2);
    let actor = rt.actor(String::from("state"));
    let ok = actor.call(|s: &mut String| s.len());
    let boom = actor.call(|_: &mut String| -> usize { panic!("no restarts") });
    let after = actor.call(|s: &mut String| s.len());
    assert_eq!(*ok.get().unwrap(), 5);
    assert!(matches!(boom.get(), Err(Error::TaskPanicked { .. })));
    assert!(matches!(after.get(), Err(Error::ActorDead { .. })), "{:?}", after.get());
    // max_restarts on an actor started from a value cannot be honoured:
    // the actor is dead at once and says why.
    let a2 = rt.actor_builder().max_restarts(5).spawn(0u8);
    match a2.call(|n| *n).get() {
        Err(Error::ActorDead { reason, .. }) => assert!(reason.contains("spawn_factory"), "{reason}"),
        other => panic!("expected ActorDead, got {other:?}"),
    }
}

#[test]
fn a_thousand_actors_with_ten_calls_each() {
    let rt = rt(2);
    let actors: Vec<_> = (0..1_000u64).map(|i| rt.actor(i * 1_000)).collect();
    let refs: Vec<_> = actors
        .iter()
        .flat_map(|a| {
            (0..10u64).map(move |_| {
                a.call(|n: &mut u64| {
                    *n += 1;
                    *n
                })
            })
        })
        .collect();
    let vals = rt.get_all_timeout(&refs, LONG).unwrap();
    assert_eq!(vals.len(), 10_000);
    for (k, v) in vals.iter().enumerate() {
        let (actor, call) = (k as u64 / 10, k as u64 % 10);
        assert_eq!(**v, actor * 1_000 + call + 1);
    }
}

/// Actor state that reports its drop on a channel.
struct Tracked {
    calls: usize,
    dropped: mpsc::Sender<usize>,
}

impl Drop for Tracked {
    fn drop(&mut self) {
        let _ = self.dropped.send(self.calls);
    }
}

#[test]
fn state_is_dropped_after_the_last_handle_and_the_last_call() {
    let rt = rt(2);
    let (dropped_tx, dropped) = mpsc::channel();
    let h = rt.actor(Tracked { calls: 0, dropped: dropped_tx });
    let h2 = h.clone();
    let refs: Vec<_> = (0..10)
        .map(|_| {
            h.call(|s: &mut Tracked| {
                s.calls += 1;
                s.calls
            })
        })
        .collect();
    assert_eq!(*refs[9].get().unwrap(), 10);
    drop(h);
    assert!(dropped.try_recv().is_err(), "a handle is still alive");
    assert_eq!(*h2.call(|s: &mut Tracked| s.calls).get().unwrap(), 10);
    drop(h2);
    assert_eq!(dropped.recv_timeout(LONG).expect("state dropped"), 10);
}

#[test]
fn queued_calls_run_before_the_state_is_dropped() {
    let rt = rt(2);
    let (dropped_tx, dropped) = mpsc::channel();
    let (release, rx) = mpsc::channel::<()>();
    let h = rt.actor(Tracked { calls: 0, dropped: dropped_tx });
    let first = h.call(move |s: &mut Tracked| {
        let _ = rx.recv(); // blocks the actor: the next calls queue up
        s.calls += 1;
        s.calls
    });
    let rest: Vec<_> = (0..10)
        .map(|_| {
            h.call(|s: &mut Tracked| {
                s.calls += 1;
                s.calls
            })
        })
        .collect();
    drop(h);
    assert!(dropped.try_recv().is_err(), "calls are still queued");
    release.send(()).unwrap();
    assert_eq!(dropped.recv_timeout(LONG).expect("state dropped"), 11, "every queued call ran first");
    assert_eq!(*first.get().unwrap(), 1);
    let vals: Vec<usize> = rt.get_all(&rest).unwrap().iter().map(|v| **v).collect();
    assert_eq!(vals, (2..=11).collect::<Vec<_>>());
}

#[test]
fn a_method_waiting_on_another_actor_and_a_task_on_one_cpu() {
    let rt = rt(1);
    let inner = rt.actor(10u32);
    let outer = rt.actor(inner);
    let r = outer.call(|inner: &mut manta::ActorHandle<u32>| {
        let rt = Runtime::current().expect("inside an actor call");
        let from_actor = inner.call(|n| {
            *n += 1;
            *n
        });
        let from_task = rt.spawn(|| 100u32);
        *from_actor.get().unwrap() + *from_task.get().unwrap()
    });
    assert_eq!(*r.get_timeout(LONG).unwrap(), 111);
}

/// A call's name in errors is its function's path, or, for a closure (whose
/// type name says nothing), where it was called.
#[test]
fn a_calls_name_is_its_function_or_where_a_closure_was_called() {
    #[derive(Default)]
    struct Counter;
    impl Counter {
        fn explode(&mut self) -> u32 {
            panic!("by method")
        }
    }
    let rt = Runtime::builder().num_cpus(1).build().unwrap();
    let a = rt.actor(Counter);
    let line = line!() + 1;
    assert!(a.call(|_: &mut Counter| -> u32 { panic!("by closure") }).get().is_err());
    match a.call(|_| 1u32).get() {
        Err(Error::ActorDead { reason, .. }) => {
            assert!(reason.contains(&format!("{}:{line}", file!())), "the call site: {reason}");
        }
        other => panic!("expected ActorDead, got {other:?}"),
    }
    let b = rt.actor(Counter);
    assert!(b.call(Counter::explode).get().is_err());
    match b.call(|_| 1u32).get() {
        Err(Error::ActorDead { reason, .. }) => assert!(reason.contains("Counter::explode"), "{reason}"),
        other => panic!("expected ActorDead, got {other:?}"),
    }
}
