//! `rt.metrics()`: task counts that add up, actor calls, the store's
//! figures, and the same in Prometheus' text format.

use manta::{Metrics, Runtime};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The counts a moment after the last result was read: a worker reports
/// how a task ended when it asks for its next job, just after the result
/// is stored. Waits (bounded) until nothing runs and every submitted task
/// is accounted for.
fn settled(rt: &Runtime) -> Metrics {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let m = rt.metrics();
        let ended = m.tasks_done + m.tasks_failed + m.tasks_cancelled;
        if m.tasks_running == 0 && ended >= m.tasks_submitted {
            return m;
        }
        assert!(Instant::now() < deadline, "counts never settled: {m:?}");
        std::thread::yield_now();
    }
}

#[test]
fn task_counts_add_up_by_outcome() {
    let rt = Runtime::builder().num_cpus(1).build().unwrap();
    let m0 = rt.metrics();
    assert_eq!((m0.tasks_submitted, m0.tasks_running, m0.tasks_done), (0, 0, 0));
    let ok: Vec<_> = (0..10).map(|i| rt.spawn(move || i)).collect();
    let bad = rt.spawn(|| -> u32 { panic!("boom") });
    rt.get_all(&ok).unwrap();
    assert!(bad.get().is_err());
    // A task running now, and one queued behind it on the only CPU.
    let (release, hold) = mpsc::channel::<()>();
    let (started_tx, started) = mpsc::channel::<()>();
    let running = rt.spawn(move || {
        started_tx.send(()).unwrap();
        let _ = hold.recv();
    });
    started.recv().unwrap();
    let queued = rt.spawn(|| 1);
    let m = rt.metrics();
    assert_eq!(m.tasks_running, 1, "{m:?}");
    assert!(m.tasks_queued >= 1, "{m:?}");
    assert!(queued.cancel());
    drop(release);
    running.get().unwrap();
    let _ = rt.spawn(|| 2).get(); // the runner passes the cancelled entry
    let m = settled(&rt);
    assert_eq!(m.tasks_done, 10 + 1 + 1, "{m:?}");
    assert_eq!(m.tasks_failed, 1, "{m:?}");
    assert_eq!(m.tasks_cancelled, 1, "{m:?}");
    assert_eq!(m.tasks_running, 0, "{m:?}");
    assert_eq!(m.tasks_submitted, m.tasks_done + m.tasks_failed + m.tasks_cancelled, "{m:?}");
    // A dependant of a failed task fails without running, and is counted.
    let dep = rt.spawn_with((bad,), |(x,)| *x);
    assert!(dep.get().is_err());
    assert_eq!(settled(&rt).tasks_failed, 2);
}

#[test]
fn a_task_run_by_its_blocked_caller_is_not_left_counted_as_running() {
    // One CPU: the outer task's `get` runs the inner task itself (it is
    // queued behind the outer one), leaving an empty queue entry that a
    // runner passes later; that entry must not stay counted as running.
    let rt = Runtime::builder().num_cpus(1).build().unwrap();
    let inner_rt = rt.clone();
    let outer = rt.spawn(move || {
        let inner = inner_rt.spawn(|| 21u32);
        *inner.get().unwrap() * 2
    });
    assert_eq!(*outer.get().unwrap(), 42);
    let _ = rt.spawn(|| 0u32).get(); // a runner passes the emptied entry
    let m = settled(&rt);
    assert_eq!((m.tasks_running, m.tasks_done, m.tasks_submitted), (0, 3, 3), "{m:?}");
}

#[test]
fn actor_calls_and_the_store_are_counted() {
    let dir = std::env::temp_dir().join(format!("manta-metrics-{}", std::process::id()));
    let rt = Runtime::builder().num_cpus(2).store_capacity(3 << 20).spill_dir(&dir).build().unwrap();
    let a = rt.actor(0u32);
    let calls: Vec<_> = (0..5).map(|_| a.call(|n| *n += 1)).collect();
    rt.get_all(&calls).unwrap();
    let big: Vec<_> = (0..6u8).map(|i| rt.put(vec![i; 1 << 20]).unwrap()).collect();
    let m = rt.metrics();
    assert_eq!(m.actor_calls, 5);
    assert!(m.store.spills > 0 && m.store.bytes_in_memory <= 3 << 20, "{:?}", m.store);
    assert_eq!(m.threads, 2);
    assert!(m.cluster.is_empty());
    drop(big);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn prometheus_text_is_well_formed() {
    let rt = Runtime::builder().num_cpus(1).build().unwrap();
    rt.spawn(|| 1).get_timeout(Duration::from_secs(30)).unwrap();
    let text = settled(&rt).to_prometheus();
    let mut names = std::collections::HashSet::new();
    let mut typed = std::collections::HashSet::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut it = rest.split(' ');
            let (name, kind) = (it.next().unwrap(), it.next().unwrap());
            assert!(kind == "counter" || kind == "gauge", "{line}");
            assert_eq!(name.ends_with("_total"), kind == "counter", "{line}");
            typed.insert(name.to_string());
            continue;
        }
        if line.starts_with("# HELP ") {
            continue;
        }
        let (name, value) = line.split_once(' ').expect("name value");
        assert!(name.starts_with("manta_") && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'), "{line}");
        value.parse::<f64>().expect("a number");
        assert!(typed.contains(name), "no TYPE before {name}");
        assert!(names.insert(name.to_string()), "duplicate {name}");
    }
    assert!(names.contains("manta_tasks_done_total"));
    assert!(text.contains("manta_tasks_done_total 1\n"), "{text}");
}

/// Two tasks that hold both workers until `release` is dropped.
fn hold_both_workers(rt: &Runtime) -> (mpsc::Sender<()>, Vec<manta::ObjectRef<()>>) {
    let (release, hold) = mpsc::channel::<()>();
    let hold = std::sync::Arc::new(std::sync::Mutex::new(hold));
    let (started_tx, started) = mpsc::channel::<()>();
    let blockers = (0..2)
        .map(|_| {
            let (hold, started_tx) = (hold.clone(), started_tx.clone());
            rt.spawn(move || {
                started_tx.send(()).unwrap();
                // Each waits for the sender to go (one holds the lock, the
                // other waits for it).
                let _ = hold.lock().unwrap().recv();
            })
        })
        .collect();
    started.recv().unwrap();
    started.recv().unwrap();
    (release, blockers)
}

#[test]
fn tasks_cancelled_in_the_queue_are_counted_at_once_while_every_worker_is_busy() {
    let rt = Runtime::builder().num_cpus(2).build().unwrap();
    let (release, blockers) = hold_both_workers(&rt);
    let singles: Vec<_> = (0..3).map(|i| rt.spawn(move || i)).collect();
    let group = rt.group();
    let members: Vec<_> = (0..5).map(|i| group.spawn(move || i)).collect();
    let m = rt.metrics();
    assert_eq!((m.tasks_queued, m.tasks_running), (8, 2), "{m:?}");
    for r in &singles {
        assert!(r.cancel());
    }
    assert!(group.cancel());
    let m = rt.metrics();
    assert_eq!(m.tasks_cancelled, 8, "{m:?}");
    assert_eq!((m.tasks_queued, m.tasks_running), (0, 2), "{m:?}");
    for r in singles.iter().chain(&members) {
        assert!(r.get().unwrap_err().is_cancelled());
    }
    drop(release);
    rt.get_all(&blockers).unwrap();
    let m = settled(&rt);
    assert_eq!((m.tasks_done, m.tasks_cancelled, m.tasks_queued), (2, 8, 0), "{m:?}");
    assert_eq!(m.tasks_submitted, 10, "{m:?}");
}

#[test]
fn a_running_task_whose_result_a_cancel_completed_counts_as_cancelled() {
    let rt = Runtime::builder().num_cpus(1).build().unwrap();
    rt.record_timeline(true);
    let (started_tx, started) = mpsc::channel::<()>();
    let r = rt.task().name("stops").spawn(move || {
        started_tx.send(()).unwrap();
        while !manta::is_cancelled() {
            std::hint::spin_loop();
        }
        7u32 // returned anyway: the cancel already completed the result
    });
    started.recv().unwrap();
    assert!(r.cancel());
    assert!(r.get().unwrap_err().is_cancelled());
    let m = settled(&rt);
    assert_eq!((m.tasks_done, m.tasks_cancelled), (0, 1), "{m:?}");
    let t = rt.timeline();
    let outcome = t.events.iter().find_map(|e| match e {
        manta::TimelineEvent::Task { name, outcome, .. } if name.to_string() == "stops" => Some(*outcome),
        _ => None,
    });
    assert_eq!(outcome, Some(manta::TimelineOutcome::Cancelled), "{:?}", t.events);
}

#[test]
fn an_infeasible_task_counts_as_failed_and_is_on_the_timeline() {
    let rt = Runtime::builder().num_cpus(1).build().unwrap();
    rt.record_timeline(true);
    let r = rt.task().name("gpu").resource("GPU", 1.0).spawn(|| 1u32);
    assert!(r.get().is_err());
    let m = rt.metrics();
    assert_eq!((m.tasks_submitted, m.tasks_failed), (0, 1), "{m:?}");
    let t = rt.timeline();
    let outcome = t.events.iter().find_map(|e| match e {
        manta::TimelineEvent::Task { name, outcome, attempts, .. } if name.to_string() == "gpu" => {
            Some((*outcome, *attempts))
        }
        _ => None,
    });
    assert_eq!(outcome, Some((manta::TimelineOutcome::Failed, 0)), "{:?}", t.events);
}
