//! Nested `get` never deadlocks, whatever the shape of the task graph.
//!
//! A task blocked in `get` used to run any queued task on its own stack;
//! when that task waited (directly or through others) on the task buried
//! beneath it, neither could finish. Now a blocked task runs only the jobs
//! that produce what it waits for, and hands its place to another thread
//! otherwise (see `src/scheduler.rs`). These shapes hung before.

use manta::{Error, ObjectRef, Runtime, Val};
use std::sync::mpsc;
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(30);

/// A task that reads the ref inside its body (the scheduler does not know
/// it depends on it).
fn wait_for(rt: &Runtime, r: ObjectRef<u32>) -> ObjectRef<u32> {
    rt.task().spawn_with((Val(vec![r]),), |(l,)| *l[0].get().unwrap())
}

/// Runs `f` on a thread and fails the test if it does not return in time
/// (so a regression is a failure, not a hung test run).
fn within<T: Send + 'static>(what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(LIMIT).unwrap_or_else(|_| panic!("{what} did not finish within {LIMIT:?}: deadlock"))
}

#[test]
fn a_chain_of_nested_gets_behind_a_slow_head_finishes() {
    within("the issue's chain", || {
        for _ in 0..10 {
            let rt = Runtime::builder().num_cpus(2).build().unwrap();
            let (open, gate_rx) = mpsc::channel::<()>();
            let gate = rt.spawn(move || {
                let _ = gate_rx.recv();
                7u32
            });
            let tail = wait_for(&rt, wait_for(&rt, wait_for(&rt, wait_for(&rt, gate))));
            // Let the waiters pile up on the workers before the head ends.
            assert!(matches!(tail.get_timeout(Duration::from_millis(20)), Err(Error::Timeout(_))));
            open.send(()).unwrap();
            assert_eq!(*tail.get().unwrap(), 7);
            drop(rt);
        }
    });
}

#[test]
fn the_same_chain_with_its_head_cancelled_fails_and_the_runtime_drops() {
    within("the cancelled chain", || {
        let rt = Runtime::builder().num_cpus(2).build().unwrap();
        let (open, gate_rx) = mpsc::channel::<()>();
        let gate = rt.spawn(move || {
            let _ = gate_rx.recv_timeout(Duration::from_secs(5));
            7u32
        });
        let chain = |r: ObjectRef<u32>| {
            rt.task().spawn_with((Val(vec![r]),), |(l,)| match l[0].get() {
                Ok(v) => *v,
                Err(e) => panic!("input failed: {e}"),
            })
        };
        let tail = chain(chain(chain(chain(gate.clone()))));
        // Queue the waiters first, then cancel the head while it runs.
        assert!(matches!(tail.get_timeout(Duration::from_millis(20)), Err(Error::Timeout(_))));
        gate.cancel();
        drop(open);
        let err = tail.get().unwrap_err();
        assert!(err.to_string().contains("cancelled"), "{err}");
        drop(rt);
    });
}

/// A small deterministic generator (xorshift), so each seed is a fixed graph.
fn rng(seed: u64) -> impl FnMut(usize) -> usize {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    move |n| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        (x % n as u64) as usize
    }
}

#[test]
fn random_graphs_of_gets_inside_bodies_finish() {
    // Task i reads up to three earlier tasks inside its body; the first
    // ones wait at a gate opened once everything is queued. A blocked
    // worker that ran queued work blindly would bury a reader under a
    // later task that reads it.
    for cpus in [1, 2, 4] {
        within("random graphs", move || {
            for seed in 0..12u64 {
                let rt = Runtime::builder().num_cpus(cpus).build().unwrap();
                let mut next = rng(seed + 1);
                let (open, gate) = gate();
                let mut refs: Vec<ObjectRef<u64>> = Vec::new();
                let mut want: Vec<u64> = Vec::new();
                for i in 0..60usize {
                    if i < 3 {
                        let g = gate.clone();
                        refs.push(rt.spawn(move || {
                            g.wait();
                            i as u64 + 1
                        }));
                        want.push(i as u64 + 1);
                        continue;
                    }
                    let picks: Vec<usize> = (0..1 + next(3)).map(|_| next(i)).collect();
                    let value = 1 + picks.iter().map(|&j| want[j]).sum::<u64>() % 1_000_003;
                    let inputs: Vec<ObjectRef<u64>> = picks.iter().map(|&j| refs[j].clone()).collect();
                    refs.push(rt.task().spawn_with((Val(inputs),), |(l,)| {
                        1 + l.iter().map(|r| *r.get().unwrap()).sum::<u64>() % 1_000_003
                    }));
                    want.push(value);
                }
                open();
                let got: Vec<u64> = rt.get_all(&refs).unwrap().iter().map(|v| **v).collect();
                assert_eq!(got, want, "cpus {cpus}, seed {seed}");
            }
        });
    }
}

/// A gate that tasks wait at until it is opened (a condvar, not a sleep).
#[derive(Clone)]
struct Gate(std::sync::Arc<(std::sync::Mutex<bool>, std::sync::Condvar)>);

impl Gate {
    fn wait(&self) {
        let (m, cv) = &*self.0;
        let mut open = m.lock().unwrap();
        while !*open {
            open = cv.wait(open).unwrap();
        }
    }
}

fn gate() -> (impl FnOnce(), Gate) {
    let g = Gate(std::sync::Arc::new((std::sync::Mutex::new(false), std::sync::Condvar::new())));
    let opener = g.clone();
    let open = move || {
        *opener.0 .0.lock().unwrap() = true;
        opener.0 .1.notify_all();
    };
    (open, g)
}

#[test]
fn a_long_chain_of_gets_inside_bodies_finishes_on_one_cpu() {
    within("a chain of 2,000 nested gets", || {
        let rt = Runtime::builder().num_cpus(1).build().unwrap();
        let mut r = rt.spawn(|| 0u32);
        for _ in 0..2_000 {
            let prev = r;
            r = rt.spawn(move || *prev.get().unwrap() + 1);
        }
        assert_eq!(*r.get().unwrap(), 2_000);
    });
}

#[test]
fn recursive_trees_still_run_on_one_thread() {
    fn fib(n: u64) -> u64 {
        if n < 2 {
            return n;
        }
        let rt = Runtime::current().expect("inside a task");
        let (a, b) = (rt.spawn(move || fib(n - 1)), rt.spawn(move || fib(n - 2)));
        *a.get().unwrap() + *b.get().unwrap()
    }
    within("fib(18) on one CPU", || {
        let rt = Runtime::builder().num_cpus(1).max_spare_threads(0).build().unwrap();
        // With no spare threads allowed, only targeted jobs can make progress:
        // the tree must finish on the runtime's one thread.
        assert_eq!(*rt.spawn(|| fib(18)).get().unwrap(), 2584);
    });
}

/// A ref whose producer still waits for its own inputs, read inside a task
/// (a blocked reader used to run that producer before its inputs were
/// ready, failing it with "task input is not ready").
#[test]
fn a_task_reads_a_ref_whose_producer_still_waits_for_its_inputs() {
    for cpus in [1, 2] {
        let rt = Runtime::builder().num_cpus(cpus).build().unwrap();
        let r = rt.spawn(|| {
            let rt = Runtime::current().unwrap();
            let (_tx, rx) = mpsc::channel::<()>();
            // Not done when `c` is submitted (the wait only widens the
            // window; the assertion holds whatever the timing).
            let b = rt.spawn(move || {
                let _ = rx.recv_timeout(Duration::from_millis(20));
                1u32
            });
            let c = rt.spawn_with((b,), |(b,)| *b + 1);
            let viaw = rt.spawn_with((c.clone(),), |(c,)| *c * 10);
            (*c.get().unwrap(), *rt.get_all(&[viaw]).unwrap()[0])
        });
        assert_eq!(*r.get_timeout(LIMIT).unwrap(), (2, 20), "cpus {cpus}");
    }
}

/// A blocked reader lends its CPUs to the job it runs inline, never a
/// custom resource that another task holds.
#[test]
fn a_task_run_inline_waits_for_its_custom_resources() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    let rt = Runtime::builder().num_cpus(2).resource("GPU", 1.0).build().unwrap();
    let (in_use, peak) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let gpu = |in_use: Arc<AtomicUsize>, peak: Arc<AtomicUsize>, gate: Option<mpsc::Receiver<()>>| {
        move || {
            let n = in_use.fetch_add(1, Ordering::SeqCst) + 1;
            peak.fetch_max(n, Ordering::SeqCst);
            if let Some(g) = gate {
                let _ = g.recv_timeout(LIMIT);
            }
            in_use.fetch_sub(1, Ordering::SeqCst);
        }
    };
    let (release, gate) = mpsc::channel::<()>();
    let t1 = rt.task().resource("GPU", 1.0).spawn(gpu(in_use.clone(), peak.clone(), Some(gate)));
    while in_use.load(Ordering::SeqCst) == 0 {
        std::thread::yield_now();
    }
    let (iu, pk) = (in_use.clone(), peak.clone());
    let a = rt.spawn(move || {
        let rt = Runtime::current().unwrap();
        rt.task().resource("GPU", 1.0).spawn(gpu(iu, pk, None)).get().is_ok()
    });
    // The inner GPU task waits in the queue (or, wrongly, runs at once).
    let deadline = std::time::Instant::now() + LIMIT;
    while rt.metrics().tasks_queued == 0 && peak.load(Ordering::SeqCst) < 2 {
        assert!(std::time::Instant::now() < deadline, "the inner task neither queued nor ran");
        std::thread::yield_now();
    }
    drop(release);
    assert!(*a.get_timeout(LIMIT).unwrap());
    t1.get_timeout(LIMIT).unwrap();
    assert_eq!(peak.load(Ordering::SeqCst), 1, "two tasks held the only GPU at once");
}

/// A timed get inside a task gives up on time, even when it could run the
/// producer inline (it does not: it could not leave it at the deadline).
#[test]
fn a_timed_get_inside_a_task_gives_up_on_time() {
    let rt = Runtime::builder().num_cpus(1).build().unwrap();
    let r = rt.spawn(|| {
        let rt = Runtime::current().unwrap();
        let (tx, rx) = mpsc::channel::<()>();
        let slow = rt.spawn(move || rx.recv_timeout(LIMIT).is_ok());
        let got = slow.get_timeout(Duration::from_millis(20));
        drop(tx);
        let timed_out = matches!(got, Err(Error::Timeout(_)));
        let waited = rt.wait(std::slice::from_ref(&slow), 1, Some(Duration::from_millis(20))).unwrap();
        (timed_out, waited.0.len() + waited.1.len())
    });
    let (timed_out, n) = *r.get_timeout(LIMIT).unwrap();
    assert!(timed_out, "get_timeout inside a task ran the producer inline past its deadline");
    assert_eq!(n, 1);
}
