//! Cancellation: a queued task is dropped without running and its `get`
//! returns `Cancelled`; dependants fail with `is_cancelled()`; a running task
//! sees `manta::is_cancelled()` turn true; a cancelled task is never
//! retried; cancelling a finished object changes nothing; cancellation racing
//! with completion always ends in one consistent outcome, never a hang.

use manta::{Error, Runtime};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

const LONG: Duration = Duration::from_secs(10);

fn rt(cpus: usize) -> Runtime {
    Runtime::builder().num_cpus(cpus).build().expect("runtime")
}

/// Captured by a task's closure: reports on a channel when the closure is
/// dropped (after running, or without running).
/// Tells, when dropped, the name of the thread that dropped it.
struct DropSignal(mpsc::Sender<String>);
impl Drop for DropSignal {
    fn drop(&mut self) {
        let _ = self.0.send(std::thread::current().name().unwrap_or("?").to_string());
    }
}

/// The cancelled closure (and its captures) is dropped soon, and not on
/// the cancelling thread (a UI thread must not free a job's data).
fn dropped_off_thread(dropped: &mpsc::Receiver<String>) {
    let by = dropped.recv_timeout(LONG).expect("the cancelled closure is dropped");
    assert_ne!(Some(by.as_str()), std::thread::current().name(), "dropped on the cancelling thread");
}

/// Occupies the only CPU of a 1-CPU runtime until the sender sends.
fn hold_the_cpu(rt: &Runtime) -> (mpsc::Sender<()>, manta::ObjectRef<bool>) {
    let (release, rx) = mpsc::channel::<()>();
    let (started_tx, started) = mpsc::channel::<()>();
    let blocker = rt.spawn(move || {
        started_tx.send(()).unwrap();
        rx.recv().is_ok()
    });
    started.recv_timeout(LONG).expect("blocker started");
    (release, blocker)
}

#[test]
fn cancelling_a_queued_task_drops_it() {
    let rt = rt(1);
    let (release, blocker) = hold_the_cpu(&rt);
    let runs = Arc::new(AtomicUsize::new(0));
    let (dropped_tx, dropped) = mpsc::channel();
    let (r, guard) = (runs.clone(), DropSignal(dropped_tx));
    let queued = rt.task().name("queued").spawn(move || {
        let _keep = &guard;
        r.fetch_add(1, Ordering::SeqCst);
        1
    });
    let dependant = rt.spawn_with((queued.clone(),), |(x,)| *x + 1);
    assert!(!queued.is_ready());
    assert!(queued.cancel(), "the task was still queued");
    dropped_off_thread(&dropped);
    assert!(!queued.cancel(), "a second cancel changes nothing");
    match queued.get() {
        Err(Error::Cancelled { task }) => assert_eq!(&*task, "queued"),
        other => panic!("expected Cancelled, got {other:?}"),
    }
    let e = dependant.get_timeout(LONG).unwrap_err();
    assert!(e.is_cancelled(), "{e:?}");
    assert!(matches!(e, Error::DependencyFailed { .. }));
    // A dependant submitted after the cancellation fails the same way.
    let late = rt.spawn_with((queued.clone(),), |(x,)| *x);
    assert!(late.get_timeout(LONG).unwrap_err().is_cancelled());

    release.send(()).unwrap();
    assert!(*blocker.get().unwrap());
    // Runs after the cancelled entry in the same FIFO class on the only CPU.
    assert_eq!(*rt.spawn(|| 9).get().unwrap(), 9);
    assert_eq!(runs.load(Ordering::SeqCst), 0, "the cancelled task never ran");
    assert!(matches!(queued.get(), Err(Error::Cancelled { .. })), "still cancelled");
}

#[test]
fn cancelling_a_task_waiting_for_inputs() {
    let rt = rt(2);
    let (release, rx) = mpsc::channel::<()>();
    let input = rt.spawn(move || rx.recv().is_ok());
    let runs = Arc::new(AtomicUsize::new(0));
    let (dropped_tx, dropped) = mpsc::channel();
    let (r, guard) = (runs.clone(), DropSignal(dropped_tx));
    let waiting = rt.spawn_with((input.clone(),), move |(x,)| {
        let _keep = &guard;
        r.fetch_add(1, Ordering::SeqCst);
        *x
    });
    assert!(waiting.cancel());
    dropped_off_thread(&dropped);
    assert!(waiting.get().unwrap_err().is_cancelled());
    release.send(()).unwrap();
    assert!(*input.get().unwrap(), "the input itself is not cancelled");
    assert_eq!(runs.load(Ordering::SeqCst), 0);
    assert!(waiting.get().unwrap_err().is_cancelled());
}

#[test]
fn a_running_task_sees_the_flag() {
    let rt = rt(2);
    assert!(!manta::is_cancelled(), "false outside tasks");
    let (started_tx, started) = mpsc::channel::<()>();
    let (saw_tx, saw) = mpsc::channel::<bool>();
    let r = rt.task().name("looper").spawn(move || {
        assert!(!manta::is_cancelled());
        started_tx.send(()).unwrap();
        let t = Instant::now();
        while !manta::is_cancelled() {
            if t.elapsed() > LONG {
                saw_tx.send(false).unwrap();
                return 0;
            }
            std::thread::yield_now();
        }
        saw_tx.send(true).unwrap();
        42
    });
    started.recv_timeout(LONG).expect("task started");
    assert!(r.cancel());
    match r.get() {
        Err(Error::Cancelled { task }) => assert_eq!(&*task, "looper"),
        other => panic!("expected Cancelled, got {other:?}"),
    }
    assert!(saw.recv_timeout(LONG).unwrap(), "the task saw is_cancelled() turn true");
    // Its return value, produced after the cancel, is discarded.
    assert!(matches!(r.get(), Err(Error::Cancelled { .. })));
    // Other tasks do not see the flag.
    assert!(!*rt.spawn(manta::is_cancelled).get().unwrap());
}

#[test]
fn a_cancelled_task_is_never_retried() {
    let rt = rt(2);
    let runs = Arc::new(AtomicUsize::new(0));
    let (started_tx, started) = mpsc::channel::<()>();
    let started_tx = std::sync::Mutex::new(started_tx);
    let r2 = runs.clone();
    let r = rt.task().rerunnable().retries(5).spawn(move || -> u32 {
        r2.fetch_add(1, Ordering::SeqCst);
        let _ = started_tx.lock().unwrap().send(());
        let t = Instant::now();
        while !manta::is_cancelled() && t.elapsed() < LONG {
            std::thread::yield_now();
        }
        panic!("gave up after cancellation")
    });
    started.recv_timeout(LONG).expect("task started");
    assert!(r.cancel());
    assert!(matches!(r.get(), Err(Error::Cancelled { .. })));
    // Dropping the runtime joins its workers: the task has returned by then.
    drop(rt);
    assert_eq!(runs.load(Ordering::SeqCst), 1);
}

#[test]
fn cancel_after_completion_changes_nothing() {
    let rt = rt(2);
    let r = rt.spawn(|| String::from("done"));
    assert_eq!(r.get().unwrap().as_str(), "done");
    assert!(!r.cancel());
    assert_eq!(r.get().unwrap().as_str(), "done");
    let dep = rt.spawn_with((r.clone(),), |(s,)| s.len());
    assert_eq!(*dep.get().unwrap(), 4);
    let failed = rt.spawn(|| -> u8 { panic!("already failed") });
    assert!(failed.get().is_err());
    assert!(!failed.cancel());
    assert!(failed.get().unwrap_err().is_panic());
    let put = rt.put(5).unwrap();
    assert!(!put.cancel(), "a put object has no task to cancel");
    assert_eq!(*put.get().unwrap(), 5);
}

#[test]
fn cancel_racing_with_completion_is_consistent() {
    let rt = rt(2);
    let (mut values, mut cancels) = (0, 0);
    for i in 0..1_000u32 {
        let r = rt.spawn(move || i);
        let dep = rt.spawn_with((r.clone(),), |(x,)| *x + 1);
        if i % 3 == 0 {
            std::thread::yield_now();
        }
        let cancelled = r.cancel();
        match r.get_timeout(LONG) {
            Ok(v) => {
                assert_eq!(*v, i);
                assert!(!cancelled, "cancel said true but the value was kept");
                assert_eq!(*dep.get_timeout(LONG).unwrap(), i + 1);
                values += 1;
            }
            Err(Error::Cancelled { .. }) => {
                assert!(cancelled, "cancelled though cancel said false");
                assert!(dep.get_timeout(LONG).unwrap_err().is_cancelled());
                cancels += 1;
            }
            Err(e) => panic!("iteration {i}: unexpected {e:?}"),
        }
    }
    assert_eq!(values + cancels, 1_000);
}
