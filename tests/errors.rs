//! Errors: a panic becomes `Error::TaskPanicked` with its message; tasks
//! that depend on a failed one never run and return `DependencyFailed`
//! whose `root_cause()` is the panic and whose `task_chain()` names the
//! tasks; a 10,000-task failed chain needs no deep stack; retries on panic
//! (opt-in, only for re-runnable tasks); reading a ref as the wrong type is
//! `WrongType`; `get_timeout` gives `Timeout`; user panics never abort the
//! process (checked in a child process).

mod common;
use common::isolated;

use manta::{Error, Runtime};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

const LONG: Duration = Duration::from_secs(10);

fn rt(cpus: usize) -> Runtime {
    Runtime::builder().num_cpus(cpus).build().expect("runtime")
}

fn names(e: &Error) -> Vec<String> {
    e.task_chain().iter().map(|s| s.to_string()).collect()
}

#[test]
fn a_panicking_task_gives_task_panicked_with_the_message() {
    let rt = rt(2);
    let r = rt.task().name("boom-task").spawn(|| -> i32 { panic!("kaboom {}", 7) });
    match r.get() {
        Err(Error::TaskPanicked { task, message }) => {
            assert_eq!(&*task, "boom-task");
            assert_eq!(&*message, "kaboom 7");
        }
        other => panic!("expected TaskPanicked, got {other:?}"),
    }
    let e = r.get().unwrap_err();
    assert!(e.is_panic() && !e.is_cancelled());
    assert_eq!(e.root_cause(), &e);
    assert!(e.to_string().contains("kaboom 7"), "{e}");

    // A non-string payload is still a typed error.
    let r = rt.spawn(|| -> i32 { std::panic::panic_any(42u64) });
    assert!(r.get().unwrap_err().is_panic());
}

#[test]
fn dependants_of_a_failed_task_do_not_run() {
    let rt = rt(2);
    let runs = Arc::new(AtomicUsize::new(0));
    let (go, rx) = mpsc::channel::<()>();
    let a = rt.task().name("a").spawn(move || -> i32 {
        let _ = rx.recv();
        panic!("root failure")
    });
    let (r1, r2, r3) = (runs.clone(), runs.clone(), runs.clone());
    // Submitted while `a` is still pending...
    let b = rt.task().name("b").spawn_with((a.clone(),), move |(x,)| {
        r1.fetch_add(1, Ordering::SeqCst);
        *x + 1
    });
    let c = rt.task().name("c").spawn_with((b.clone(), 5i32), move |(x, y)| {
        r2.fetch_add(1, Ordering::SeqCst);
        *x + y
    });
    go.send(()).unwrap();
    let ec = c.get().unwrap_err();
    // ...and one submitted after `a` has failed.
    let d = rt.task().name("d").spawn_with((c.clone(), a.clone()), move |(x, _)| {
        r3.fetch_add(1, Ordering::SeqCst);
        *x
    });
    let ed = d.get().unwrap_err();
    assert_eq!(runs.load(Ordering::SeqCst), 0, "no dependant ran");

    let root = Error::TaskPanicked { task: "a".into(), message: "root failure".into() };
    assert_eq!(a.get().unwrap_err(), root);
    assert!(matches!(b.get().unwrap_err(), Error::DependencyFailed { ref task, .. } if &**task == "b"));
    assert!(matches!(ec, Error::DependencyFailed { ref task, .. } if &**task == "c"));
    assert_eq!(ec.root_cause(), &root);
    assert_eq!(ed.root_cause(), &root);
    assert!(ec.is_panic());
    assert_eq!(names(&ec), ["c", "b", "a"]);
    assert_eq!(names(&ed), ["d", "c", "b", "a"]);
    assert!(ec.to_string().contains("root failure"), "{ec}");
}

#[test]
fn a_failed_chain_of_ten_thousand_tasks_needs_no_deep_stack() {
    isolated("a_failed_chain_of_ten_thousand_tasks_needs_no_deep_stack", failed_chain);
}

fn failed_chain() {
    let rt = rt(2);
    let runs = Arc::new(AtomicUsize::new(0));
    let (go, rx) = mpsc::channel::<()>();
    let first = rt.task().name("first").spawn(move || -> u64 {
        let _ = rx.recv();
        panic!("first fails")
    });
    let mut r = first;
    for _ in 0..10_000 {
        let runs = runs.clone();
        r = rt.task().name("link").spawn_with((r,), move |(x,)| {
            runs.fetch_add(1, Ordering::SeqCst);
            *x + 1
        });
    }
    go.send(()).unwrap();
    let e = match r.get_timeout(LONG) {
        Err(Error::Timeout(_)) => {
            // Do not wait for the workers in `drop`: fail now.
            std::mem::forget(rt);
            panic!("the failure did not reach the end of a 10,000-task chain within {LONG:?}");
        }
        other => other.unwrap_err(),
    };
    assert_eq!(runs.load(Ordering::SeqCst), 0);
    assert!(matches!(e.root_cause(), Error::TaskPanicked { task, .. } if &**task == "first"), "{:?}", e.root_cause());
    let chain = e.task_chain();
    assert_eq!(chain.len(), 10_001);
    assert_eq!(&*chain[0], "link");
    assert_eq!(&*chain[10_000], "first");
    drop((e, r)); // dropping deep errors must not overflow either
}

#[test]
fn a_chain_built_on_a_failed_task_fails_at_once() {
    isolated("a_chain_built_on_a_failed_task_fails_at_once", chain_on_failed);
}

fn chain_on_failed() {
    let rt = rt(2);
    let failed = rt.task().name("root").spawn(|| -> u64 { panic!("root fails") });
    assert!(failed.get().is_err());
    let start = std::time::Instant::now();
    let mut r = failed;
    for i in 0..10_000 {
        r = rt.spawn_with((r,), |(x,)| *x + 1);
        assert!(r.is_ready(), "link {i} failed at submission");
        assert!(start.elapsed() < LONG, "submitting 10,000 links on a failed task took over {LONG:?} (at link {i})");
    }
    let e = r.get().unwrap_err();
    assert!(e.is_panic());
    assert_eq!(e.task_chain().len(), 10_001);
}

#[test]
fn a_deep_dependency_error_can_be_cloned_printed_and_dropped() {
    isolated("a_deep_dependency_error_can_be_cloned_printed_and_dropped", || {
        let mut e = Error::TaskPanicked { task: "root".into(), message: "deep".into() };
        for _ in 0..10_000 {
            e = Error::DependencyFailed { task: "link".into(), cause: manta::Cause::new(e) };
        }
        let copy = e.clone();
        assert_eq!(copy.task_chain().len(), 10_001);
        assert!(copy.is_panic());
        let text = e.to_string();
        assert!(text.contains("deep"));
        drop((e, copy));
    });
}

#[test]
fn retries_rerun_a_panicking_task() {
    let rt = rt(2);
    let flaky = |runs: Arc<AtomicUsize>| {
        move || {
            let n = runs.fetch_add(1, Ordering::SeqCst);
            if n < 2 {
                panic!("flaky run {n}");
            }
            n * 100
        }
    };
    let runs = Arc::new(AtomicUsize::new(0));
    let ok = rt.task().rerunnable().retries(2).spawn(flaky(runs.clone()));
    assert_eq!(*ok.get().unwrap(), 200);
    assert_eq!(runs.load(Ordering::SeqCst), 3);

    let runs = Arc::new(AtomicUsize::new(0));
    let failed = rt.task().rerunnable().name("flaky").retries(1).spawn(flaky(runs.clone()));
    match failed.get() {
        Err(Error::TaskPanicked { task, message }) => {
            assert_eq!(&*task, "flaky");
            assert_eq!(&*message, "flaky run 1", "the last attempt's panic is reported");
        }
        other => panic!("expected TaskPanicked, got {other:?}"),
    }
    assert_eq!(runs.load(Ordering::SeqCst), 2);

    // No retries by default.
    let runs = Arc::new(AtomicUsize::new(0));
    assert!(rt.task().spawn(flaky(runs.clone())).get().is_err());
    assert_eq!(runs.load(Ordering::SeqCst), 1);
}

/// Retries need a re-runnable task; asking a one-shot task for them does
/// not compile (see the `compile_fail` example on `TaskBuilder`), and a
/// re-runnable one retries.
#[test]
fn retries_are_for_rerunnable_tasks() {
    let rt = rt(2);
    let arg = rt.put(1).unwrap();
    let r = rt.task().rerunnable().retries(3).spawn_with((arg,), |(x,)| *x);
    assert_eq!(*r.get().unwrap(), 1);
}

#[test]
fn reading_a_ref_as_the_wrong_type_is_wrong_type() {
    let rt = rt(2);
    let any = rt.put(5i32).unwrap().untyped();
    match any.typed::<String>().get() {
        Err(Error::WrongType { expected, found }) => {
            assert!(expected.contains("String"), "{expected}");
            assert_eq!(found, "i32");
        }
        other => panic!("expected WrongType, got {other:?}"),
    }
    // The right type still reads.
    assert_eq!(*any.typed::<i32>().get().unwrap(), 5);
    // A task's output, read with get, try_get and get_all.
    let t = rt.spawn(|| vec![1u8]).untyped().typed::<Vec<u16>>();
    assert!(matches!(t.get(), Err(Error::WrongType { .. })));
    assert!(matches!(t.try_get(), Some(Err(Error::WrongType { .. }))));
    assert!(matches!(rt.get_all(std::slice::from_ref(&t)), Err(Error::WrongType { .. })));
    // A task given a wrongly typed ref does not run and fails with it.
    let runs = Arc::new(AtomicUsize::new(0));
    let r = runs.clone();
    let dep = rt.spawn_with((any.typed::<f64>(),), move |(x,)| {
        r.fetch_add(1, Ordering::SeqCst);
        *x
    });
    let e = dep.get().unwrap_err();
    assert!(matches!(e.root_cause(), Error::WrongType { .. }), "{e:?}");
    assert_eq!(runs.load(Ordering::SeqCst), 0);
}

#[test]
fn get_timeout_on_a_blocked_task() {
    let rt = rt(2);
    let (release, rx) = mpsc::channel::<u32>();
    let r = rt.spawn(move || rx.recv().unwrap_or(0));
    let t = Duration::from_millis(20);
    assert_eq!(r.get_timeout(t).unwrap_err(), Error::Timeout(t));
    assert_eq!(rt.get_timeout(&r, Duration::ZERO).unwrap_err(), Error::Timeout(Duration::ZERO));
    assert!(matches!(rt.get_all_timeout(std::slice::from_ref(&r), t), Err(Error::Timeout(_))));
    release.send(9).unwrap();
    assert_eq!(*r.get_timeout(LONG).unwrap(), 9, "a timeout does not spoil the ref");
}

#[test]
fn many_panics_leave_the_runtime_working() {
    let rt = rt(2);
    let refs: Vec<_> = (0..200).map(|i| rt.spawn(move || -> i32 { panic!("panic {i}") })).collect();
    for (i, r) in refs.iter().enumerate() {
        match r.get() {
            Err(Error::TaskPanicked { message, .. }) => assert_eq!(&*message, format!("panic {i}")),
            other => panic!("expected TaskPanicked, got {other:?}"),
        }
    }
    let ok: Vec<_> = (0..100).map(|i| rt.spawn(move || i)).collect();
    assert_eq!(rt.get_all(&ok).unwrap().iter().map(|v| **v).sum::<i32>(), 4950);
    // A panicking actor method does not hurt the runtime either.
    let a = rt.actor(0);
    assert!(a.call(|_: &mut i32| -> i32 { panic!("actor panic") }).get().unwrap_err().is_panic());
    assert_eq!(*rt.spawn(|| 1).get().unwrap(), 1);
}

#[test]
fn panics_in_tasks_and_actors_never_abort_the_process() {
    isolated("panics_in_tasks_and_actors_never_abort_the_process", || {
        let rt = rt(1);
        assert!(rt.spawn(|| -> () { panic!("task") }).get().is_err());
        assert!(rt.task().rerunnable().retries(3).spawn(|| -> () { panic!("retried") }).get().is_err());
        let a = rt.actor(0);
        assert!(a.call(|_: &mut i32| -> () { panic!("method") }).get().is_err());
        let f = rt.actor_builder().spawn_factory(|| -> i32 { panic!("factory") });
        assert!(matches!(f.call(|s| *s).get(), Err(Error::ActorDead { .. })));
        assert_eq!(*rt.spawn(|| 7).get_timeout(LONG).unwrap(), 7);
    });
}

#[test]
fn a_panicking_on_ready_callback_does_not_abort_the_process() {
    isolated("a_panicking_on_ready_callback_does_not_abort_the_process", || {
        let rt = rt(1);
        // The callback runs on the worker that completes the object.
        let (release, rx) = mpsc::channel::<()>();
        let pending = rt.spawn(move || rx.recv().is_ok());
        pending.on_ready(|_| panic!("callback panics"));
        release.send(()).unwrap();
        assert!(*pending.get_timeout(LONG).unwrap());
        // The runtime still works afterwards.
        assert_eq!(*rt.spawn(|| 7).get_timeout(LONG).unwrap(), 7);
    });
}
