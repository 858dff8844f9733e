//! Resources: a task starts only when its CPUs and custom resources are free
//! (concurrency measured with a max-in-flight counter, never with timing);
//! fractional custom resources; infeasible requests (too much, or a resource
//! the runtime does not have) fail at once with `Error::Infeasible` naming the
//! resource; a task blocked in `get` gives its CPUs back (recursive fib via
//! tasks on one and two CPUs) but keeps its other resources.

mod common;
use common::{isolated, Gauge};

use manta::{Error, Runtime};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Condvar, Mutex};
use std::time::Duration;

const LONG: Duration = Duration::from_secs(10);

/// Groups of `size` tasks wait for each other: the k-th task to start waits
/// until `size * ceil(k / size)` have started (bounded by `LONG`). With a
/// concurrency limit of exactly `size` every group fills up; a smaller limit
/// times out (recorded in `timed_out`), a larger one shows in the gauge.
struct Batches {
    size: usize,
    started: Mutex<usize>,
    cv: Condvar,
    timed_out: AtomicBool,
}

impl Batches {
    fn new(size: usize) -> Arc<Batches> {
        Arc::new(Batches { size, started: Mutex::new(0), cv: Condvar::new(), timed_out: AtomicBool::new(false) })
    }

    fn arrive_and_wait(&self) {
        let mut n = self.started.lock().unwrap();
        *n += 1;
        let target = n.div_ceil(self.size) * self.size;
        self.cv.notify_all();
        let (_g, res) = self.cv.wait_timeout_while(n, LONG, |n| *n < target).unwrap();
        if res.timed_out() {
            self.timed_out.store(true, Ordering::SeqCst);
        }
    }
}

/// Runs `count` tasks built by `spawn` and returns the max in flight; every
/// task joins a batch of `batch` so that the limit is actually reached.
fn max_in_flight(
    rt: &Runtime,
    count: usize,
    batch: usize,
    spawn: impl Fn(&Runtime, Box<dyn Fn() + Send + Sync>) -> manta::ObjectRef<()>,
) -> usize {
    let gauge = Arc::new(Gauge::default());
    let batches = Batches::new(batch);
    let refs: Vec<_> = (0..count)
        .map(|_| {
            let (g, b) = (gauge.clone(), batches.clone());
            spawn(
                rt,
                Box::new(move || {
                    g.enter();
                    b.arrive_and_wait();
                    g.exit();
                }),
            )
        })
        .collect();
    rt.get_all(&refs).unwrap();
    assert!(!batches.timed_out.load(Ordering::SeqCst), "fewer than {batch} tasks ran at once");
    gauge.max()
}

#[test]
fn eight_one_cpu_tasks_on_four_cpus_run_four_at_a_time() {
    let rt = Runtime::builder().num_cpus(4).build().unwrap();
    let max = max_in_flight(&rt, 8, 4, |rt, f| rt.task().cpus(1.0).spawn(f));
    assert_eq!(max, 4);
}

#[test]
fn two_cpu_tasks_on_four_cpus_run_two_at_a_time() {
    // Four worker threads, but only two 2-CPU tasks fit.
    let rt = Runtime::builder().num_cpus(4).build().unwrap();
    let max = max_in_flight(&rt, 6, 2, |rt, f| rt.task().cpus(2.0).spawn(f));
    assert_eq!(max, 2);
}

#[test]
fn one_gpu_means_gpu_tasks_run_one_at_a_time() {
    let rt = Runtime::builder().num_cpus(4).resource("GPU", 1.0).build().unwrap();
    let max = max_in_flight(&rt, 6, 1, |rt, f| {
        rt.task().resource("GPU", 1.0).spawn(move || {
            f();
            std::thread::sleep(Duration::from_millis(2)); // room for an overlap, were it allowed
        })
    });
    assert_eq!(max, 1);
}

#[test]
fn half_a_gpu_lets_two_run_at_once() {
    let rt = Runtime::builder().num_cpus(4).resource("GPU", 1.0).build().unwrap();
    let max = max_in_flight(&rt, 6, 2, |rt, f| rt.task().resource("GPU", 0.5).spawn(f));
    assert_eq!(max, 2);
    // Fractional amounts add up exactly: the whole GPU is free again. Read
    // after a later GPU task has run, so every earlier release has happened.
    let after = rt.task().resource("GPU", 1.0).spawn(|| ());
    after.get().unwrap();
    let gpu = rt.resources().into_iter().find(|(n, ..)| &**n == "GPU").unwrap();
    assert_eq!(gpu.1, 1.0);
}

#[test]
fn cpu_tasks_are_not_held_back_by_tasks_waiting_for_a_gpu() {
    let rt = Runtime::builder().num_cpus(2).resource("GPU", 1.0).build().unwrap();
    let (release, rx) = mpsc::channel::<()>();
    let holder = rt.task().resource("GPU", 1.0).spawn(move || rx.recv().is_ok());
    let waiting = rt.task().resource("GPU", 1.0).spawn(|| 2);
    let cpu_only = rt.spawn(|| 3);
    assert_eq!(*cpu_only.get_timeout(LONG).unwrap(), 3);
    assert!(!waiting.is_ready(), "the GPU is still held");
    release.send(()).unwrap();
    assert!(*holder.get().unwrap());
    assert_eq!(*waiting.get().unwrap(), 2);
}

fn assert_infeasible(r: &manta::ObjectRef<i32>, want_resource: &str, want_requested: f64, want_total: f64) {
    assert!(r.is_ready(), "an infeasible task fails at once");
    match r.get() {
        Err(e @ Error::Infeasible { .. }) => {
            let Error::Infeasible { ref resource, requested, total, .. } = e else { unreachable!() };
            assert_eq!(&**resource, want_resource);
            assert_eq!(requested, want_requested);
            assert_eq!(total, want_total);
            assert!(e.to_string().contains(want_resource), "message names the resource: {e}");
        }
        other => panic!("expected Infeasible({want_resource}), got {other:?}"),
    }
}

#[test]
fn infeasible_requests_fail_at_once_naming_the_resource() {
    let rt = Runtime::builder().num_cpus(4).resource("GPU", 1.0).build().unwrap();
    assert_infeasible(&rt.task().name("many-cpus").cpus(5.0).spawn(|| 1), "CPU", 5.0, 4.0);
    assert_infeasible(&rt.task().resource("GPU", 2.0).spawn(|| 1), "GPU", 2.0, 1.0);
    assert_infeasible(&rt.task().resource("TPU", 1.0).spawn(|| 1), "TPU", 1.0, 0.0);
    // Even with pending inputs it does not wait for them.
    let (release, rx) = mpsc::channel::<()>();
    let pending = rt.spawn(move || rx.recv().is_ok());
    let r = rt.task().resource("TPU", 0.5).spawn_with((pending.clone(),), |_| 1);
    assert_infeasible(&r, "TPU", 0.5, 0.0);
    let e = r.get().unwrap_err();
    assert_eq!(e.task_chain().len(), 1);
    release.send(()).unwrap();
    assert!(*pending.get().unwrap());
    // The runtime is unaffected.
    assert_eq!(*rt.spawn(|| 5).get().unwrap(), 5);
}

#[test]
fn infeasible_actor_calls_fail() {
    let rt = Runtime::builder().num_cpus(2).build().unwrap();
    let a = rt.actor_builder().resource("GPU", 1.0).spawn(0u32);
    let r = a.call(|n| *n);
    let e = r.get_timeout(LONG).unwrap_err();
    assert!(e.to_string().contains("GPU"), "{e}");
}

fn fib(n: u64) -> u64 {
    if n < 2 {
        return n;
    }
    let rt = Runtime::current().expect("fib runs inside a task");
    let a = rt.spawn(move || fib(n - 1));
    let b = rt.spawn(move || fib(n - 2));
    *a.get().unwrap() + *b.get().unwrap()
}

#[test]
fn nested_get_releases_cpu_fib_on_one_cpu() {
    isolated("nested_get_releases_cpu_fib_on_one_cpu", || {
        let rt = Runtime::builder().num_cpus(1).build().unwrap();
        let r = rt.spawn(|| fib(20));
        assert_eq!(*r.get_timeout(LONG).unwrap(), 6765);
    });
}

#[test]
fn nested_get_releases_cpu_fib_on_two_cpus() {
    isolated("nested_get_releases_cpu_fib_on_two_cpus", || {
        let rt = Runtime::builder().num_cpus(2).build().unwrap();
        let r = rt.spawn(|| fib(20));
        assert_eq!(*r.get_timeout(LONG).unwrap(), 6765);
    });
}

#[test]
fn a_task_blocked_in_get_gives_back_cpus_but_keeps_its_gpu() {
    let rt = Runtime::builder().num_cpus(2).resource("GPU", 1.0).build().unwrap();
    let (release, rx) = mpsc::channel::<()>();
    let (started_tx, started_rx) = mpsc::channel::<()>();
    // The GPU task waits (in `get`) for a CPU child blocked on a channel.
    let holder = rt.task().resource("GPU", 1.0).spawn(move || {
        let rt = Runtime::current().unwrap();
        let child = rt.spawn(move || {
            started_tx.send(()).unwrap();
            rx.recv().is_ok()
        });
        *child.get().unwrap()
    });
    started_rx.recv_timeout(LONG).expect("child started");
    // CPUs: 2 total, the child holds 1, the holder gave its 1 back.
    let other_gpu = rt.task().resource("GPU", 1.0).spawn(|| "gpu");
    let cpu_only = rt.spawn(|| "cpu");
    assert_eq!(*cpu_only.get_timeout(LONG).unwrap(), "cpu", "the blocked task's CPU was given back");
    assert!(!other_gpu.is_ready(), "the blocked task kept its GPU");
    release.send(()).unwrap();
    assert!(*holder.get().unwrap());
    assert_eq!(*other_gpu.get().unwrap(), "gpu");
}

#[test]
fn bad_amounts_are_invalid_arguments_and_zero_amounts_ask_for_nothing() {
    let rt = Runtime::builder().num_cpus(2).build().unwrap();
    for bad in [-1.0, f64::NAN, f64::INFINITY] {
        let r = rt.task().cpus(bad).spawn(|| 1);
        assert!(matches!(r.get(), Err(Error::InvalidArgument(_))), "cpus({bad})");
        let r = rt.task().resource("GPU", bad).spawn(|| 1);
        assert!(matches!(r.get(), Err(Error::InvalidArgument(_))), "GPU {bad}");
    }
    // As in Ray, a zero amount of a resource the runtime lacks is no demand.
    assert_eq!(*rt.task().resource("GPU", 0.0).spawn(|| 7).get_timeout(LONG).unwrap(), 7);
    assert!(Runtime::builder().resource("", 1.0).build().is_err(), "a resource needs a name");
}
