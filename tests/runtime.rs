//! The runtime's lifetime: building and dropping many runtimes; dropping the
//! last owner joins the worker threads (counted in /proc/self/task by thread
//! name); tasks still queued at shutdown complete with `RuntimeShutdown`
//! while running ones finish; refs stay readable after the runtime is gone;
//! `manta::init()` is one process-wide runtime; `Runtime::current()` is
//! `None` outside workers and a non-owning handle inside; builder checks.

use manta::{BuildError, Error, Runtime};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

const LONG: Duration = Duration::from_secs(10);

/// Threads of this process whose name starts with `prefix` (names are cut
/// to 15 bytes by the kernel: keep prefixes short and unique per test).
fn threads_named(prefix: &str) -> usize {
    std::fs::read_dir("/proc/self/task")
        .expect("/proc/self/task")
        .filter_map(|e| std::fs::read_to_string(e.ok()?.path().join("comm")).ok())
        .filter(|name| name.trim_end().starts_with(prefix))
        .count()
}

/// The number of threads named `prefix`, polled (generous bound) until it
/// is `n`: a listing of /proc/self/task can miss entries while other tests
/// start and end threads, and a joined thread can stay listed for a moment
/// (the kernel wakes the joiner before it removes the task).
fn threads_named_eventually(prefix: &str, n: usize) -> usize {
    let t = Instant::now();
    loop {
        let now = threads_named(prefix);
        if now == n || t.elapsed() > LONG {
            return now;
        }
        std::thread::yield_now();
    }
}

/// Counts, in its destructor, a worker thread's exit: thread-local
/// destructors run before the thread ends, so before a join returns.
struct ExitCounter(Arc<AtomicUsize>);
impl Drop for ExitCounter {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

thread_local! {
    static EXIT: std::cell::RefCell<Option<ExitCounter>> = const { std::cell::RefCell::new(None) };
}

/// Makes `n` tasks meet (each waits, bounded, until all `n` have started),
/// so `n` distinct workers are known to be running and named; each gets an
/// `ExitCounter` on `exits`. Returns whether they met.
fn occupy_all_workers(rt: &Runtime, n: usize, exits: &Arc<AtomicUsize>) -> bool {
    let meet = Arc::new((Mutex::new(0usize), Condvar::new()));
    let refs: Vec<_> = (0..n)
        .map(|_| {
            let (meet, exits) = (meet.clone(), exits.clone());
            rt.spawn(move || {
                EXIT.with(|e| *e.borrow_mut() = Some(ExitCounter(exits)));
                let (count, cv) = &*meet;
                let mut c = count.lock().unwrap();
                *c += 1;
                cv.notify_all();
                !cv.wait_timeout_while(c, LONG, |c| *c < n).unwrap().1.timed_out()
            })
        })
        .collect();
    rt.get_all(&refs).unwrap().iter().all(|met| **met)
}

#[test]
fn build_and_drop_a_hundred_runtimes() {
    let start = Instant::now();
    for i in 0..100u32 {
        let rt = Runtime::builder().num_cpus(2).thread_name("rt100").build().unwrap();
        assert_eq!(*rt.spawn(move || i * 2).get().unwrap(), i * 2);
    }
    assert_eq!(threads_named_eventually("rt100-", 0), 0, "every runtime's threads are gone");
    assert!(start.elapsed() < LONG, "took {:?}", start.elapsed());
}

#[test]
fn dropping_the_last_owner_joins_the_threads() {
    let rt = Runtime::builder().num_cpus(4).thread_name("rtjoin").build().unwrap();
    let refs: Vec<_> = (0..100).map(|i| rt.spawn(move || i)).collect();
    assert_eq!(rt.get_all(&refs).unwrap().len(), 100);
    let exits = Arc::new(AtomicUsize::new(0));
    assert!(occupy_all_workers(&rt, 4, &exits), "four tasks ran at once");
    assert_eq!(threads_named_eventually("rtjoin-", 4), 4);
    assert_eq!(rt.num_threads(), 4);
    let clone = rt.clone();
    drop(rt);
    assert_eq!(threads_named_eventually("rtjoin-", 4), 4, "a clone still owns the runtime");
    assert_eq!(exits.load(Ordering::SeqCst), 0);
    assert_eq!(*clone.spawn(|| 5).get().unwrap(), 5);
    drop(clone);
    assert_eq!(exits.load(Ordering::SeqCst), 4, "drop returned after every worker ended (joined)");
    assert_eq!(threads_named_eventually("rtjoin-", 0), 0, "no worker thread is left");
    // Refs outlive the runtime.
    assert_eq!(*refs[99].get().unwrap(), 99);
}

#[test]
fn tasks_queued_at_shutdown_complete_with_runtime_shutdown() {
    let rt = Runtime::builder().num_cpus(1).thread_name("rtshut").build().unwrap();
    let finished = rt.spawn(|| String::from("finished before"));
    assert_eq!(finished.get().unwrap().as_str(), "finished before");
    let (release, rx) = mpsc::channel::<()>();
    let (started_tx, started) = mpsc::channel::<()>();
    let (inner_tx, inner) = mpsc::channel::<Option<Result<i32, Error>>>();
    let running = rt.spawn(move || {
        started_tx.send(()).unwrap();
        let _ = rx.recv();
        // Submitting through a non-owning handle after shutdown.
        let late = Runtime::current().map(|rt| rt.spawn(|| 1).get_timeout(LONG).map(|v| *v));
        inner_tx.send(late).unwrap();
        7
    });
    started.recv_timeout(LONG).expect("the running task started");
    let queued: Vec<_> = (0..10).map(|i| rt.spawn(move || i)).collect();
    let waiting = rt.spawn_with((running.clone(),), |(x,)| *x + 1);
    let actor = rt.actor(0u32);
    let call = actor.call(|n| *n);

    let (dropped_tx, dropped) = mpsc::channel();
    let dropper = std::thread::spawn(move || {
        drop(rt);
        dropped_tx.send(()).unwrap();
    });
    for q in &queued {
        assert_eq!(q.get_timeout(LONG).unwrap_err(), Error::RuntimeShutdown);
    }
    assert_eq!(call.get_timeout(LONG).unwrap_err(), Error::RuntimeShutdown);
    assert!(dropped.try_recv().is_err(), "drop waits for the running task");
    release.send(()).unwrap();
    dropped.recv_timeout(LONG).expect("drop returned once the running task finished");
    dropper.join().unwrap();
    assert_eq!(threads_named_eventually("rtshut-", 0), 0);

    assert_eq!(*running.get().unwrap(), 7, "a running task finishes");
    assert_eq!(waiting.get_timeout(LONG).unwrap_err(), Error::RuntimeShutdown);
    match inner.recv_timeout(LONG).unwrap() {
        None => {}
        Some(r) => assert_eq!(r.unwrap_err(), Error::RuntimeShutdown),
    }
    assert_eq!(finished.get().unwrap().as_str(), "finished before", "finished objects stay readable");
    assert_eq!(actor.call(|n| *n).get_timeout(LONG).unwrap_err(), Error::RuntimeShutdown);
}

#[test]
fn the_last_owner_dropped_inside_its_own_task_does_not_deadlock() {
    let rt = Runtime::builder().num_cpus(2).build().unwrap();
    let owner = rt.clone();
    let (go, rx) = mpsc::channel::<()>();
    let r = rt.spawn(move || {
        let _ = rx.recv();
        drop(owner); // the last owning handle, dropped on a worker
        "dropped inside"
    });
    drop(rt);
    go.send(()).unwrap();
    assert_eq!(*r.get_timeout(LONG).unwrap(), "dropped inside");
}

#[test]
fn init_returns_one_process_wide_runtime() {
    let a = manta::init();
    let b = manta::init();
    assert!(std::ptr::eq(a, b));
    assert!(std::ptr::eq(a, manta::try_init().unwrap()));
    let from_threads: Vec<usize> = (0..4)
        .map(|_| std::thread::spawn(|| manta::init() as *const Runtime as usize))
        .map(|h| h.join().unwrap())
        .collect();
    assert!(from_threads.iter().all(|&p| p == a as *const Runtime as usize));
    assert_eq!(*a.spawn(|| 3).get().unwrap(), 3);
    assert!(a.num_threads() >= 1);
}

#[test]
fn current_is_none_outside_and_some_inside() {
    assert!(Runtime::current().is_none());
    let rt = Runtime::builder().num_cpus(3).build().unwrap();
    let inside = rt.spawn(|| Runtime::current().map(|rt| rt.num_threads()));
    assert_eq!(*inside.get().unwrap(), Some(3));
    let actor = rt.actor(());
    assert_eq!(*actor.call(|_| Runtime::current().map(|rt| rt.num_threads())).get().unwrap(), Some(3));
    // A plain thread started from a task is not a worker.
    let from_thread = rt.spawn(|| std::thread::spawn(|| Runtime::current().is_none()).join().unwrap());
    assert!(*from_thread.get().unwrap());
    // Callbacks run on the caller's thread when the object is done: no runtime there.
    let (tx, rx) = mpsc::channel();
    rt.put(1).unwrap().on_ready(move |_| tx.send(Runtime::current().is_none()).unwrap());
    assert!(rx.try_recv().unwrap());
    assert!(Runtime::current().is_none());
}

#[test]
fn builder_validates_its_configuration() {
    assert!(matches!(Runtime::builder().resource("CPU", 2.0).build(), Err(BuildError::CpuAsResource)));
    let bad = Runtime::builder().resource("GPU", -1.0).build();
    assert!(matches!(bad, Err(BuildError::InvalidResource { ref name, .. }) if &**name == "GPU"));
    assert!(matches!(Runtime::builder().resource("GPU", f64::NAN).build(), Err(BuildError::InvalidResource { .. })));
    let spill = Runtime::builder().spill_dir("/proc/no/such/dir").build();
    assert!(matches!(spill, Err(BuildError::SpillDir { .. })), "{spill:?}");
    let rt = Runtime::builder().num_cpus(2).resource("GPU", 1.5).resource("disk", 0.25).resource("GPU", 2.0).build();
    let rt = rt.unwrap();
    let res: Vec<(String, f64, f64)> = rt.resources().into_iter().map(|(n, t, f)| (n.to_string(), t, f)).collect();
    assert_eq!(
        res,
        [("CPU".to_string(), 2.0, 2.0), ("disk".to_string(), 0.25, 0.25), ("GPU".to_string(), 2.0, 2.0)],
        "CPU first; a repeated resource keeps its last amount"
    );
    assert_eq!(rt.num_threads(), 2);
    assert_eq!(rt.queued_tasks(), 0);
    let default = Runtime::new().unwrap();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    assert_eq!(default.num_threads(), cores);
}

/// Ray allows `num_cpus=0` (a driver that only submits): such a runtime
/// holds objects, hosts zero-CPU actors and runs zero-CPU tasks; a task
/// that needs a CPU fails at once, naming the resource.
#[test]
fn zero_cpu_runtime_holds_objects_runs_zero_cpu_work_and_refuses_cpu_tasks() {
    let rt = Runtime::builder().num_cpus(0).build().unwrap();
    assert_eq!(rt.num_threads(), 1, "one thread for zero-CPU work");
    let x = rt.put(41u32).unwrap();
    assert_eq!(*x.get().unwrap(), 41);
    match rt.spawn(|| 1).get() {
        Err(manta::Error::Infeasible { resource, requested, total, .. }) => {
            assert_eq!((&*resource, requested, total), ("CPU", 1.0, 0.0));
        }
        other => panic!("expected Infeasible, got {other:?}"),
    }
    let y = rt.task().cpus(0.0).spawn_with((x.clone(),), |(x,)| *x + 1);
    assert_eq!(*y.get().unwrap(), 42);
    let counter = rt.actor(0u32);
    let calls: Vec<_> = (0..3)
        .map(|_| {
            counter.call(|n| {
                *n += 1;
                *n
            })
        })
        .collect();
    assert_eq!(rt.get_all(&calls).unwrap().iter().map(|v| **v).collect::<Vec<_>>(), [1, 2, 3]);
    // A zero-CPU task may block on another zero-CPU task (nested get).
    let rt2 = rt.clone();
    let outer = rt.task().cpus(0.0).spawn(move || *rt2.task().cpus(0.0).spawn(|| 5).get().unwrap() * 2);
    assert_eq!(*outer.get().unwrap(), 10);
}

#[test]
fn the_longest_timeouts_wait_forever_without_overflowing() {
    let rt = Runtime::builder().num_cpus(1).put_timeout(Duration::MAX).build().unwrap();
    let big = rt.put(vec![0u8; 4096]).unwrap();
    assert_eq!(big.get().unwrap().len(), 4096);
    let r = rt.spawn(|| 5u32);
    assert_eq!(*rt.get_all_timeout(std::slice::from_ref(&r), Duration::MAX).unwrap()[0], 5);
    assert_eq!(*r.get_timeout(Duration::MAX).unwrap(), 5);
}
