//! Actor lifecycle, after Ray's `ray.kill(actor, no_restart)`,
//! `__ray_terminate__` and `max_task_retries`:
//! - `kill(true)`: the running call finishes and keeps its result, calls
//!   not started fail with `ActorDead` (cause `Killed`), the state is
//!   dropped, later calls fail;
//! - `kill(false)` with restarts left: same for calls made before, then
//!   calls made after run on fresh state (one restart counted); without
//!   restarts left it is final;
//! - `terminate()`: calls queued before run, later ones fail (`Terminated`),
//!   the state is dropped after the last queued call, never restarted;
//! - `max_task_retries`: a re-runnable call that panics runs again on the
//!   restarted state, in order, up to n times; one-shot calls never do;
//! - `ActorDead` carries the actor's name, id and a cause to match on.

use manta::{ActorDeathCause, Error, ObjectRef, Runtime};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

const LONG: Duration = Duration::from_secs(10);

fn rt() -> Runtime {
    Runtime::builder().num_cpus(2).build().expect("runtime")
}

/// State whose drop is reported on a channel.
struct Tracked {
    n: u32,
    dropped: mpsc::Sender<u32>,
}

impl Drop for Tracked {
    fn drop(&mut self) {
        let _ = self.dropped.send(self.n);
    }
}

/// A call that reports it started, then waits for the gate.
fn blocking_call<S: Send + 'static>(a: &manta::ActorHandle<S>) -> (ObjectRef<u32>, mpsc::Sender<()>) {
    let (started_tx, started) = mpsc::channel();
    let (gate, gate_rx) = mpsc::channel::<()>();
    let r = a.call(move |_| {
        started_tx.send(()).unwrap();
        let _ = gate_rx.recv();
        7u32
    });
    started.recv_timeout(LONG).expect("the blocking call started");
    (r, gate)
}

fn cause_of<T: std::fmt::Debug>(r: Result<T, Error>) -> ActorDeathCause {
    match r {
        Err(Error::ActorDead { actor, .. }) => actor.cause().clone(),
        other => panic!("expected ActorDead, got {other:?}"),
    }
}

#[test]
fn kill_no_restart_lets_the_running_call_finish_and_fails_the_rest() {
    let rt = rt();
    let (dropped_tx, dropped) = mpsc::channel();
    let a = rt.actor_builder().name("victim").spawn(Tracked { n: 1, dropped: dropped_tx });
    let (running, gate) = blocking_call(&a);
    let queued: Vec<_> = (0..3).map(|_| a.call(|s: &mut Tracked| s.n)).collect();
    a.kill(true);
    let after = a.call(|s: &mut Tracked| s.n);
    gate.send(()).unwrap();
    assert_eq!(*running.get().unwrap(), 7, "the running call finishes and keeps its result");
    for q in &queued {
        match q.get() {
            Err(Error::ActorDead { actor, reason }) => {
                assert_eq!(&*actor, "victim");
                assert_eq!(actor.id(), Some(a.id()));
                assert_eq!(actor.cause(), &ActorDeathCause::Killed);
                assert!(reason.contains("killed"), "{reason}");
            }
            other => panic!("expected ActorDead(Killed), got {other:?}"),
        }
    }
    assert_eq!(cause_of(after.get()), ActorDeathCause::Killed);
    assert_eq!(dropped.recv_timeout(LONG).unwrap(), 1, "the state is dropped");
    assert_eq!(a.restarts(), 0);
}

#[test]
fn kill_on_an_idle_actor_drops_its_state_at_once() {
    let rt = rt();
    let (dropped_tx, dropped) = mpsc::channel();
    let a = rt.actor(Tracked { n: 5, dropped: dropped_tx });
    assert_eq!(*a.call(|s| s.n).get().unwrap(), 5);
    a.kill(true);
    assert_eq!(dropped.recv_timeout(LONG).unwrap(), 5, "dropped without waiting for another call");
    assert_eq!(cause_of(a.call(|s| s.n).get()), ActorDeathCause::Killed);
    a.kill(false); // killing a dead actor does nothing
    assert_eq!(cause_of(a.call(|s| s.n).get()), ActorDeathCause::Killed);
}

#[test]
fn kill_with_restart_runs_calls_made_after_it_on_fresh_state() {
    let rt = rt();
    let built = Arc::new(AtomicU32::new(0));
    let b = built.clone();
    let a = rt.actor_builder().max_restarts(1).spawn_factory(move || {
        b.fetch_add(1, Ordering::SeqCst);
        0u32
    });
    let inc = |n: &mut u32| {
        *n += 1;
        *n
    };
    assert_eq!(*a.call(inc).get().unwrap(), 1);
    let (running, gate) = blocking_call(&a);
    let before = a.call(inc);
    a.kill(false);
    let after = a.call(inc);
    let after2 = a.call(inc);
    gate.send(()).unwrap();
    assert_eq!(*running.get().unwrap(), 7);
    assert_eq!(cause_of(before.get()), ActorDeathCause::Killed, "made before the kill: not run");
    assert_eq!((*after.get().unwrap(), *after2.get().unwrap()), (1, 2), "fresh state");
    assert_eq!(a.restarts(), 1, "the kill counted one restart");
    assert_eq!(built.load(Ordering::SeqCst), 2);
    // No restarts left: the next kill is final even with no_restart false.
    a.kill(false);
    assert_eq!(cause_of(a.call(inc).get()), ActorDeathCause::Killed);
    assert_eq!(built.load(Ordering::SeqCst), 2);
}

#[test]
fn kill_with_no_restart_is_final_even_with_restarts_left() {
    let rt = rt();
    let a = rt.actor_builder().max_restarts(5).spawn_factory(|| 0u32);
    assert_eq!(*a.call(|n| *n).get().unwrap(), 0);
    a.kill(true);
    assert_eq!(cause_of(a.call(|n| *n).get()), ActorDeathCause::Killed);
    assert_eq!(a.restarts(), 0);
}

#[test]
fn terminate_runs_the_queued_calls_then_drops_the_state() {
    let rt = rt();
    let log = Arc::new(Mutex::new(Vec::<String>::new()));
    struct Logged(Arc<Mutex<Vec<String>>>);
    impl Drop for Logged {
        fn drop(&mut self) {
            self.0.lock().unwrap().push("drop".into());
        }
    }
    let l = log.clone();
    let a = rt.actor_builder().max_restarts(3).spawn_factory(move || Logged(l.clone()));
    let (running, gate) = blocking_call(&a);
    let (input_tx, input_rx) = mpsc::channel::<()>();
    let input = rt.spawn(move || {
        let _ = input_rx.recv();
        2u32
    });
    let queued: Vec<_> = (0..2)
        .map(|i| {
            a.call(move |s: &mut Logged| {
                s.0.lock().unwrap().push(format!("call {i}"));
                i
            })
        })
        .collect();
    // Made before terminate through this handle, waiting for its input.
    let waiting = a.call_with((input,), |s: &mut Logged, (v,)| {
        s.0.lock().unwrap().push("waiting".into());
        *v
    });
    a.terminate();
    let after = a.call(|_| 9u32);
    gate.send(()).unwrap();
    input_tx.send(()).unwrap();
    assert_eq!(*running.get().unwrap(), 7);
    assert_eq!(*queued[0].get().unwrap(), 0);
    assert_eq!(*queued[1].get().unwrap(), 1);
    assert_eq!(*waiting.get().unwrap(), 2, "a call made before terminate runs, after its input");
    assert_eq!(cause_of(after.get()), ActorDeathCause::Terminated);
    assert_eq!(cause_of(a.call(|_| 1u32).get()), ActorDeathCause::Terminated);
    assert_eq!(*log.lock().unwrap(), ["call 0", "call 1", "waiting", "drop"], "state dropped after the last call");
    a.kill(false); // a terminated actor is never restarted
    assert_eq!(cause_of(a.call(|_| 1u32).get()), ActorDeathCause::Terminated);
    assert_eq!(a.restarts(), 0);
}

#[test]
fn max_task_retries_reruns_the_panicking_call_on_fresh_state_in_order() {
    let rt = rt();
    let built = Arc::new(AtomicU32::new(0));
    let b = built.clone();
    let a = rt.actor_builder().max_restarts(5).max_task_retries(2).spawn_factory(move || {
        b.fetch_add(1, Ordering::SeqCst);
        0u32
    });
    let runs = Arc::new(AtomicU32::new(0));
    let r = runs.clone();
    let first = a.call(|n| {
        *n += 100;
        *n
    });
    let flaky = a.call_rerunnable(move |n| {
        // The state is fresh on every run: the panics broke the last one.
        assert!(*n == 0 || *n == 100, "state {n}");
        if r.fetch_add(1, Ordering::SeqCst) < 2 {
            *n = 555;
            panic!("transient");
        }
        *n += 10;
        *n
    });
    let next = a.call(|n| *n);
    assert_eq!(*first.get().unwrap(), 100);
    assert_eq!(*flaky.get().unwrap(), 10, "third run, on a restarted state");
    assert_eq!(*next.get().unwrap(), 10, "later calls run after the retries, on their state");
    assert_eq!(runs.load(Ordering::SeqCst), 3);
    assert_eq!(a.restarts(), 2);
    assert_eq!(built.load(Ordering::SeqCst), 3);
}

#[test]
fn retries_end_with_the_last_panic_and_one_shot_calls_are_never_rerun() {
    let rt = rt();
    let a = rt.actor_builder().max_restarts(10).max_task_retries(2).spawn_factory(|| 0u32);
    let runs = Arc::new(AtomicU32::new(0));
    let r = runs.clone();
    let always = a.call_rerunnable(move |_| -> u32 {
        let k = r.fetch_add(1, Ordering::SeqCst);
        panic!("run {k}")
    });
    match always.get() {
        Err(Error::TaskPanicked { message, .. }) => assert_eq!(&*message, "run 2", "the last run's panic"),
        other => panic!("expected TaskPanicked, got {other:?}"),
    }
    assert_eq!(runs.load(Ordering::SeqCst), 3, "1 run + 2 retries");
    let once = Arc::new(AtomicU32::new(0));
    let o = once.clone();
    let one_shot = a.call(move |_| -> u32 {
        o.fetch_add(1, Ordering::SeqCst);
        panic!("once")
    });
    assert!(one_shot.get().unwrap_err().is_panic());
    assert_eq!(once.load(Ordering::SeqCst), 1, "FnOnce calls are not retried");
    assert_eq!(a.restarts(), 4, "every panic restarted the actor");
    assert_eq!(*a.call(|n| *n + 1).get().unwrap(), 1, "still alive");
}

#[test]
fn retries_stop_when_restarts_run_out() {
    let rt = rt();
    let a = rt.actor_builder().name("fragile").max_restarts(1).max_task_retries(5).spawn_factory(|| 0u32);
    let runs = Arc::new(AtomicU32::new(0));
    let r = runs.clone();
    let always = a.call_rerunnable(move |_| -> u32 {
        r.fetch_add(1, Ordering::SeqCst);
        panic!("always")
    });
    assert!(always.get().unwrap_err().is_panic());
    assert_eq!(runs.load(Ordering::SeqCst), 2, "one restart, so one retry");
    match cause_of(a.call(|n| *n).get()) {
        ActorDeathCause::Panicked { message, restarts, .. } => {
            assert_eq!(&*message, "always");
            assert_eq!(restarts, 1);
        }
        other => panic!("expected Panicked, got {other:?}"),
    }
}

#[test]
fn a_kill_that_restarts_replays_rerunnable_calls_made_before_it() {
    let rt = rt();
    let a = rt.actor_builder().max_restarts(2).max_task_retries(1).spawn_factory(|| 0u32);
    assert_eq!(
        *a.call(|n| {
            *n = 50;
            *n
        })
        .get()
        .unwrap(),
        50
    );
    let (running, gate) = blocking_call(&a);
    let rerunnable = a.call_rerunnable(|n| {
        *n += 1;
        *n
    });
    let one_shot = a.call(|n| *n);
    a.kill(false);
    gate.send(()).unwrap();
    assert_eq!(*running.get().unwrap(), 7);
    assert_eq!(*rerunnable.get().unwrap(), 1, "replayed on the restarted (fresh) state");
    assert_eq!(cause_of(one_shot.get()), ActorDeathCause::Killed);
}

#[test]
fn actor_dead_names_the_actor_and_its_cause() {
    let rt = rt();
    let a = rt.actor_builder().name("from-value").spawn(0u32);
    assert!(a.call(|_| -> u32 { panic!("boom") }).get().unwrap_err().is_panic());
    match a.call(|n| *n).get() {
        Err(e @ Error::ActorDead { .. }) => {
            let actor = e.dead_actor().expect("an actor error");
            assert_eq!((actor.name(), actor.id()), ("from-value", Some(a.id())));
            match actor.cause() {
                ActorDeathCause::Panicked { message, restarts, .. } => {
                    assert_eq!((&**message, *restarts), ("boom", 0));
                }
                other => panic!("expected Panicked, got {other:?}"),
            }
            assert!(e.to_string().contains("from-value"), "{e}");
        }
        other => panic!("expected ActorDead, got {other:?}"),
    }
    let ctor = rt.actor_builder().spawn_factory(|| -> u32 { panic!("no state") });
    assert_eq!(cause_of(ctor.call(|n| *n).get()), ActorDeathCause::ConstructorPanicked { message: "no state".into() });
    let gpu = rt.actor_builder().resource("GPU", 1.0).spawn(0u32);
    match cause_of(gpu.call(|n| *n).get()) {
        ActorDeathCause::Infeasible { resource, requested, total } => {
            assert_eq!((&*resource, requested, total), ("GPU", 1.0, 0.0));
        }
        other => panic!("expected Infeasible, got {other:?}"),
    }
    let no_factory = rt.actor_builder().max_restarts(1).spawn(0u32);
    assert_eq!(cause_of(no_factory.call(|n| *n).get()), ActorDeathCause::NoFactory);
    assert_ne!(a.id(), gpu.id());
    assert_eq!(a.id(), a.clone().id(), "one id for every handle");
    // An error made from a name only, as the cluster layer makes them.
    let e = Error::actor_dead("remote", "its node died");
    let actor = e.dead_actor().expect("an actor error");
    assert_eq!((actor.name(), actor.id(), actor.cause()), ("remote", None, &ActorDeathCause::Other));
}

/// An actor state whose `Drop` panics (on kill, or on a restart) costs the
/// runtime no worker: later tasks and calls still run, on one CPU too.
#[test]
fn a_state_that_panics_when_dropped_does_not_take_a_worker_with_it() {
    struct Explodes;
    impl Drop for Explodes {
        fn drop(&mut self) {
            panic!("state drop panicked");
        }
    }
    let rt = Runtime::builder().num_cpus(1).build().unwrap();
    let a = rt.actor(Explodes);
    a.call(|_| 1).get().unwrap();
    a.kill(true);
    assert_eq!(*rt.spawn(|| 1).get_timeout(Duration::from_secs(30)).unwrap(), 1);
    let b = rt.actor_builder().max_restarts(1).spawn_factory(|| Explodes);
    assert!(b.call(|_| -> u32 { panic!("method") }).get().is_err());
    assert_eq!(*b.call(|_| 2).get_timeout(Duration::from_secs(30)).unwrap(), 2);
    assert_eq!(*rt.spawn(|| 3).get_timeout(Duration::from_secs(30)).unwrap(), 3);
}
