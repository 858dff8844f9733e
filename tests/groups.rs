//! Task control for applications: groups cancelled in one call, recursive
//! cancel, "stopped" vs "result known", callbacks off the cancelling
//! thread, cancel-on-drop, as_completed, map with a concurrency cap,
//! priorities, readable default names, typed task errors.

use manta::{as_completed, Error, ObjectRef, Priority, Runtime};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Barrier};
use std::time::Duration;

const LONG: Duration = Duration::from_secs(30);

fn rt(cpus: usize) -> Runtime {
    Runtime::builder().num_cpus(cpus).build().expect("runtime")
}

/// Occupies every CPU of the runtime until the returned sender is dropped.
fn hold_cpus(rt: &Runtime, n: usize) -> (mpsc::Sender<()>, Vec<ObjectRef<()>>) {
    hold(n, |f| rt.spawn(f))
}

/// [`hold_cpus`] with `n` tasks submitted by `spawn` (in a group, say),
/// returning once all of them run.
fn hold(n: usize, spawn: impl Fn(Box<dyn FnOnce() + Send>) -> ObjectRef<()>) -> (mpsc::Sender<()>, Vec<ObjectRef<()>>) {
    let (release, rx) = mpsc::channel::<()>();
    let rx = Arc::new(std::sync::Mutex::new(rx));
    let started = Arc::new(Barrier::new(n + 1));
    let holders = (0..n)
        .map(|_| {
            let (rx, started) = (rx.clone(), started.clone());
            spawn(Box::new(move || {
                started.wait();
                let _ = rx.lock().unwrap().recv();
            }))
        })
        .collect();
    started.wait();
    (release, holders)
}

/// Lets the tasks of [`hold_cpus`] finish and checks they ran.
fn release_all(release: mpsc::Sender<()>, holders: Vec<ObjectRef<()>>) {
    drop(release);
    for h in holders {
        h.get().unwrap();
    }
}

/// Tells, when dropped, which thread dropped it.
struct DropSignal(mpsc::Sender<String>);
impl Drop for DropSignal {
    fn drop(&mut self) {
        let _ = self.0.send(std::thread::current().name().unwrap_or("?").to_string());
    }
}

#[test]
fn cancelling_a_group_stops_every_queued_task_off_the_calling_thread() {
    let rt = rt(2);
    let (release, holders) = hold_cpus(&rt, 2);
    let g = rt.group();
    let cancel_returned = Arc::new(AtomicBool::new(false));
    let started_after = Arc::new(AtomicUsize::new(0));
    let (dropped_tx, dropped) = mpsc::channel();
    let (cb_tx, callbacks) = mpsc::channel::<String>();
    let refs: Vec<ObjectRef<usize>> = (0..2_000)
        .map(|i| {
            let (after, seen) = (cancel_returned.clone(), started_after.clone());
            let guard = DropSignal(dropped_tx.clone());
            let r = g.spawn(move || {
                let _keep = &guard;
                if after.load(Ordering::SeqCst) {
                    seen.fetch_add(1, Ordering::SeqCst);
                }
                i
            });
            let tx = cb_tx.clone();
            r.on_ready(move |_| {
                let _ = tx.send(std::thread::current().name().unwrap_or("?").to_string());
            });
            r
        })
        .collect();
    drop((dropped_tx, cb_tx));
    assert_eq!(g.progress().queued, 2_000);
    assert!(g.cancel());
    cancel_returned.store(true, Ordering::SeqCst);
    assert!(!g.cancel(), "cancelled once");
    assert!(g.is_cancelled());
    release_all(release, holders);
    for r in &refs {
        assert!(r.get_timeout(LONG).unwrap_err().is_cancelled());
    }
    assert_eq!(started_after.load(Ordering::SeqCst), 0, "a task of the group started after cancel returned");
    let me = std::thread::current().name().map(str::to_string);
    for _ in 0..2_000 {
        let by = dropped.recv_timeout(LONG).expect("every closure is dropped");
        assert_ne!(Some(by), me, "a closure was dropped on the cancelling thread");
        let cb = callbacks.recv_timeout(LONG).expect("every callback runs");
        assert_ne!(Some(cb), me, "a callback ran on the cancelling thread");
    }
    assert!(g.wait_stopped(Some(LONG)));
    assert!(g.join(Some(LONG)), "every result counted");
    let p = g.progress();
    assert_eq!((p.total, p.cancelled, p.running, p.queued), (2_000, 2_000, 0, 0), "{p:?}");
}

/// The closures (and inputs) of a cancelled group's queued tasks are
/// dropped once the group has stopped, on the service thread, not while
/// its running tasks wind down (their frees would then wait on the
/// allocator behind the reaper's); their results are known at once.
#[test]
fn a_cancelled_groups_queued_closures_are_dropped_once_it_has_stopped() {
    let rt = rt(2);
    let g = rt.group();
    // Two tasks of the group hold both CPUs and ignore the cancel.
    let (release, running) = hold(2, |f| g.spawn(f));
    let (dropped_tx, dropped) = mpsc::channel();
    let queued: Vec<ObjectRef<usize>> = (0..50)
        .map(|i| {
            let guard = DropSignal(dropped_tx.clone());
            g.spawn(move || {
                let _keep = &guard;
                i
            })
        })
        .collect();
    drop(dropped_tx);
    assert_eq!(g.progress().queued, 50);
    assert!(g.cancel());
    for r in &queued {
        assert!(r.get_timeout(LONG).unwrap_err().is_cancelled(), "known at once");
    }
    assert_eq!(g.running(), 2);
    assert!(dropped.try_recv().is_err(), "a queued closure was dropped while the group's tasks still ran");
    drop(release);
    for r in &running {
        // They ran on past the cancel: what they returned is the cancellation.
        assert!(r.get_timeout(LONG).unwrap_err().is_cancelled());
    }
    assert!(g.wait_stopped(Some(LONG)));
    for _ in 0..50 {
        let by = dropped.recv_timeout(LONG).expect("every queued closure is dropped once the group stopped");
        assert_eq!(by, "manta-service");
    }
}

#[test]
fn running_tasks_see_the_cancel_and_stopped_comes_after_they_return() {
    let rt = rt(2);
    let g = rt.group();
    let started = Arc::new(Barrier::new(3));
    let refs: Vec<ObjectRef<u32>> = (0..2)
        .map(|_| {
            let started = started.clone();
            g.spawn(move || {
                started.wait();
                let mut polls = 0;
                while !manta::is_cancelled() {
                    polls += 1;
                    std::thread::yield_now();
                }
                polls.min(1)
            })
        })
        .collect();
    started.wait();
    assert_eq!(g.running(), 2);
    assert!(!g.is_stopped());
    g.cancel();
    assert!(g.wait_stopped(Some(LONG)), "the running tasks returned");
    assert_eq!(g.running(), 0);
    // They returned values once cancelled: their readers see the
    // cancellation (Ray's `TaskCancelledError`), as for `ObjectRef::cancel`.
    for r in refs {
        assert!(r.get().unwrap_err().is_cancelled());
    }
    assert!(g.join(Some(LONG)), "every result counted");
    let p = g.progress();
    assert_eq!((p.done, p.cancelled), (0, 2), "{p:?}");
}

#[test]
fn join_waits_for_every_result() {
    let rt = rt(2);
    let g = rt.group_builder().name("sums").build();
    let refs: Vec<_> = (0..50u64).map(|i| g.spawn(move || i * 2)).collect();
    assert!(g.join(Some(LONG)));
    assert!(refs.iter().all(|r| r.is_ready()));
    let p = g.progress();
    assert_eq!((p.total, p.done, p.finished()), (50, 50, 50));
    assert!(format!("{g:?}").contains("sums"));
}

#[test]
fn cancelling_a_task_cancels_what_it_submitted_recursively_and_it_is_never_retried() {
    let rt = rt(2);
    let (child_tx, child_refs) = mpsc::channel::<ObjectRef<u32>>();
    let runs = Arc::new(AtomicUsize::new(0));
    let (go_tx, go) = mpsc::channel::<()>();
    let go = Arc::new(std::sync::Mutex::new(go));
    let r = runs.clone();
    let parent = rt.task().rerunnable().retries(5).spawn(move || -> u32 {
        r.fetch_add(1, Ordering::SeqCst);
        let rt = Runtime::current().unwrap();
        // A child that waits for the parent's cancel, and grandchildren.
        let (started_tx, started) = mpsc::channel::<()>();
        let child = rt.spawn(move || {
            started_tx.send(()).unwrap();
            let rt = Runtime::current().unwrap();
            let grandchild = rt.spawn(|| {
                while !manta::is_cancelled() {
                    std::thread::yield_now();
                }
                7u32
            });
            while !manta::is_cancelled() {
                std::thread::yield_now();
            }
            // The grandchild either saw the cancel running, or never started.
            match grandchild.get() {
                Ok(v) => *v,
                Err(e) if e.is_cancelled() => 7,
                Err(e) => panic!("{e}"),
            }
        });
        started.recv().unwrap(); // the child runs (the other CPU)
        child_tx.send(child).unwrap();
        let _ = go.lock().unwrap().recv();
        assert!(manta::is_cancelled(), "the parent sees its own cancel");
        panic!("the parent panics after being cancelled (must not be retried)");
    });
    let child = child_refs.recv_timeout(LONG).unwrap();
    assert!(parent.cancel());
    go_tx.send(()).unwrap();
    assert!(parent.get().unwrap_err().is_cancelled());
    // The child saw the cancel (its loop ended; what it returned then is
    // the cancellation); the grandchild too.
    assert!(child.get_timeout(LONG).unwrap_err().is_cancelled());
    assert_eq!(runs.load(Ordering::SeqCst), 1, "a cancelled task is never retried");
}

#[test]
fn a_queued_child_of_a_cancelled_task_never_starts() {
    let rt = rt(1);
    let (child_tx, child_refs) = mpsc::channel::<ObjectRef<u32>>();
    let ran = Arc::new(AtomicBool::new(false));
    let r = ran.clone();
    let parent = rt.spawn(move || {
        let rt = Runtime::current().unwrap();
        // Queued behind the parent on the only CPU.
        child_tx
            .send(rt.spawn(move || {
                r.store(true, Ordering::SeqCst);
                1
            }))
            .unwrap();
        while !manta::is_cancelled() {
            std::thread::yield_now();
        }
    });
    let child = child_refs.recv_timeout(LONG).unwrap();
    parent.cancel();
    assert!(child.get_timeout(LONG).unwrap_err().is_cancelled());
    assert!(!ran.load(Ordering::SeqCst));
}

#[test]
fn a_group_with_cancel_on_drop_is_cancelled_when_dropped() {
    let rt = rt(1);
    let (release, holders) = hold_cpus(&rt, 1);
    let g = rt.group_builder().cancel_on_drop().build();
    let clone = g.clone();
    let queued = g.spawn(|| 5);
    drop(g);
    assert!(!clone.is_cancelled(), "a clone still holds it");
    drop(clone);
    release_all(release, holders);
    assert!(queued.get_timeout(LONG).unwrap_err().is_cancelled());
    // Without the option, dropping the group leaves its tasks alone.
    let plain = rt.group();
    let r = plain.spawn(|| 6);
    drop(plain);
    assert_eq!(*r.get().unwrap(), 6);
}

#[test]
fn as_completed_yields_in_completion_order_and_as_a_stream() {
    let rt = rt(2);
    let (gate_tx, gate) = mpsc::channel::<()>();
    let slow = rt.spawn(move || {
        let _ = gate.recv();
        1u32
    });
    let fast = rt.spawn(|| 2u32);
    let done = rt.put(3u32).unwrap();
    let mut it = as_completed(vec![slow.clone(), fast.clone(), done.clone()]);
    assert_eq!(it.remaining(), 3);
    let first = it.next().unwrap();
    let second = it.next().unwrap();
    let mut got = vec![*first.get().unwrap(), *second.get().unwrap()];
    got.sort();
    assert_eq!(got, [2, 3], "the two finished ones come first");
    gate_tx.send(()).unwrap();
    assert_eq!(*it.next().unwrap().get().unwrap(), 1);
    assert!(it.next().is_none());

    // The same as a stream, on any executor.
    let refs: Vec<_> = (0..20u32).map(|i| rt.spawn(move || i)).collect();
    let stream = rt.as_completed(refs);
    let mut seen: Vec<u32> = futures_executor::block_on(async move {
        let mut out = Vec::new();
        let mut stream = stream;
        while let Some(r) =
            std::future::poll_fn(|cx| futures_core::Stream::poll_next(std::pin::Pin::new(&mut stream), cx)).await
        {
            out.push(*r.await.unwrap());
        }
        out
    });
    seen.sort();
    assert_eq!(seen, (0..20).collect::<Vec<_>>());
}

#[test]
fn as_completed_yields_the_done_ones_first_in_input_order() {
    let rt = rt(2);
    let (gate_tx, gate) = mpsc::channel::<()>();
    let gate = Arc::new(std::sync::Mutex::new(gate));
    let gated = |v: u32| {
        let gate = gate.clone();
        rt.spawn(move || {
            let _ = gate.lock().unwrap().recv();
            v
        })
    };
    let refs = vec![rt.put(0u32).unwrap(), gated(1), rt.put(2).unwrap(), gated(3), rt.put(4).unwrap()];
    let mut it = as_completed(refs).indexed();
    let first: Vec<usize> = (0..3).map(|_| it.next().unwrap().0).collect();
    assert_eq!(first, [0, 2, 4], "what was done at the call, in input order");
    gate_tx.send(()).unwrap();
    gate_tx.send(()).unwrap();
    let mut rest: Vec<(usize, u32)> = it.map(|(i, r)| (i, *r.get().unwrap())).collect();
    rest.sort();
    assert_eq!(rest, [(1, 1), (3, 3)]);
}

#[test]
fn map_keeps_order_and_its_concurrency_cap() {
    let rt = rt(4);
    let in_flight = Arc::new(AtomicUsize::new(0));
    let most = Arc::new(AtomicUsize::new(0));
    let (f, m) = (in_flight.clone(), most.clone());
    let out: Vec<u64> = rt
        .map(0..200u64, 3, move |x| {
            let now = f.fetch_add(1, Ordering::SeqCst) + 1;
            m.fetch_max(now, Ordering::SeqCst);
            std::thread::yield_now();
            f.fetch_sub(1, Ordering::SeqCst);
            x * x
        })
        .map(|r| *r.unwrap())
        .collect();
    assert_eq!(out, (0..200u64).map(|x| x * x).collect::<Vec<_>>());
    assert!(most.load(Ordering::SeqCst) <= 3, "{} in flight", most.load(Ordering::SeqCst));

    let mut unordered: Vec<(usize, u64)> =
        rt.map_unordered(0..50u64, 8, |x| x + 1).map(|(i, r)| (i, *r.unwrap())).collect();
    unordered.sort();
    assert_eq!(unordered, (0..50).map(|i| (i, i as u64 + 1)).collect::<Vec<_>>());
}

/// A map of 1,000 items, two at a time, each waiting at a gate (so the
/// map cannot run ahead of the test), after its first result was read:
/// the map, the gate (dropping it lets every waiting item go on) and the
/// count of items that ran.
fn gated_map(rt: &Runtime) -> (manta::Map<u32>, mpsc::Sender<()>, Arc<AtomicUsize>) {
    let ran = Arc::new(AtomicUsize::new(0));
    let (open, gate) = mpsc::channel::<()>();
    let gate = Arc::new(std::sync::Mutex::new(gate));
    let r = ran.clone();
    let mut m = rt.map(0..1_000u32, 2, move |x| {
        let _ = gate.lock().unwrap().recv();
        r.fetch_add(1, Ordering::SeqCst);
        x
    });
    open.send(()).unwrap();
    assert_eq!(*m.next().unwrap().unwrap(), 0);
    (m, open, ran)
}

#[test]
fn cancelling_a_map_stops_submitting() {
    let rt = rt(1);
    let (m, open, ran) = gated_map(&rt);
    m.group().cancel();
    drop(open); // every waiting item goes on now
    let rest: Vec<_> = m.collect();
    // At most the items in flight at the cancel ran; the rest never started.
    assert!(ran.load(Ordering::SeqCst) <= 3, "{} items ran", ran.load(Ordering::SeqCst));
    assert!(rest.len() <= 2, "{} more results", rest.len());
    assert!(rest.iter().all(|r| r.as_ref().is_ok_and(|v| **v > 0) || r.as_ref().is_err_and(|e| e.is_cancelled())));
}

#[test]
fn higher_priority_tasks_start_first() {
    let rt = rt(1);
    let (release, holders) = hold_cpus(&rt, 1);
    let order = Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut refs = Vec::new();
    for (name, p) in [("low", Priority::Low), ("normal", Priority::Normal), ("high", Priority::High)] {
        for _ in 0..3 {
            let order = order.clone();
            refs.push(rt.task().priority(p).spawn(move || order.lock().unwrap().push(name)));
        }
    }
    release_all(release, holders);
    rt.get_all(&refs).unwrap();
    let order = order.lock().unwrap().clone();
    assert_eq!(order, ["high", "high", "high", "normal", "normal", "normal", "low", "low", "low"]);
}

#[test]
fn default_names_are_the_call_site() {
    let rt = rt(1);
    let line = line!() + 1;
    let r = rt.spawn(|| -> u32 { panic!("boom") });
    let e = r.get().unwrap_err();
    let text = e.to_string();
    assert!(text.contains(&format!("tests/groups.rs:{line}")), "{text}");
    let named = rt.task().name("resize").spawn(|| -> u32 { panic!("boom") }).get().unwrap_err();
    assert!(named.to_string().contains("`resize`"), "{named}");
    // A group's tasks too (they skip the builder, as `rt.spawn` does).
    let group = rt.group();
    let line = line!() + 1;
    let e = group.spawn(|| -> u32 { panic!("boom") }).get().unwrap_err();
    assert!(e.to_string().contains(&format!("tests/groups.rs:{line}")), "{e}");
    assert_eq!(group.progress().total, 1);
}

#[derive(Debug, thiserror::Error, PartialEq)]
#[error("image {0} is corrupt")]
struct Corrupt(u32);

#[test]
fn a_task_can_fail_with_its_own_typed_error() {
    let rt = rt(2);
    let r = rt.task().name("decode").spawn_try(|| -> Result<u32, Corrupt> { Err(Corrupt(7)) });
    let e = r.get().unwrap_err();
    assert_eq!(e.downcast_ref::<Corrupt>(), Some(&Corrupt(7)));
    assert!(matches!(e, Error::TaskFailed { ref task, .. } if &**task == "decode"), "{e:?}");
    assert!(std::error::Error::source(&e).is_some_and(|s| s.to_string() == "image 7 is corrupt"));
    // It flows through the graph like any error.
    let next = rt.spawn_with((r.clone(),), |(x,)| *x + 1);
    assert_eq!(next.get().unwrap_err().downcast_ref::<Corrupt>(), Some(&Corrupt(7)));
    // `?` on a nested get inside a task.
    let bad = r.clone();
    let nested = rt.task().spawn_try(move || -> Result<u32, Error> { Ok(*bad.get()? + 1) });
    let e = nested.get().unwrap_err();
    assert!(e.downcast_ref::<Error>().is_some_and(|inner| inner.downcast_ref::<Corrupt>().is_some()), "{e:?}");
}

#[test]
fn only_chosen_errors_are_retried() {
    let rt = rt(2);
    let tries = Arc::new(AtomicUsize::new(0));
    let t = tries.clone();
    let flaky = rt.task().rerunnable().retries(3).retry_if(|e| e.downcast_ref::<std::io::Error>().is_some()).spawn_try(
        move || -> Result<u32, std::io::Error> {
            if t.fetch_add(1, Ordering::SeqCst) < 2 {
                Err(std::io::Error::other("busy"))
            } else {
                Ok(9)
            }
        },
    );
    assert_eq!(*flaky.get().unwrap(), 9);
    assert_eq!(tries.load(Ordering::SeqCst), 3);
    let tries = Arc::new(AtomicUsize::new(0));
    let t = tries.clone();
    let fatal = rt.task().rerunnable().retries(3).retry_if(|e| e.downcast_ref::<std::io::Error>().is_some()).spawn_try(
        move || -> Result<u32, Corrupt> {
            t.fetch_add(1, Ordering::SeqCst);
            Err(Corrupt(1))
        },
    );
    assert!(fatal.get().is_err());
    assert_eq!(tries.load(Ordering::SeqCst), 1, "an error the predicate rejects is not retried");
}

#[test]
fn on_ready_via_hands_the_callback_to_the_apps_executor() {
    let rt = rt(1);
    let (exec_tx, exec_rx) = mpsc::channel::<Box<dyn FnOnce() + Send>>();
    let (out_tx, out_rx) = mpsc::channel::<u32>();
    let r = rt.spawn(|| 41u32);
    let exec_tx = std::sync::Mutex::new(exec_tx);
    r.on_ready_via(
        move |job| {
            let _ = exec_tx.lock().unwrap().send(job);
        },
        move |v| {
            let _ = out_tx.send(*v.unwrap() + 1);
        },
    );
    // The "UI thread" (this one) runs the callback from its own queue.
    let job = exec_rx.recv_timeout(LONG).unwrap();
    assert!(out_rx.try_recv().is_err(), "not run before the app ran it");
    job();
    assert_eq!(out_rx.recv().unwrap(), 42);
}

#[test]
fn an_error_returned_after_the_cancel_counts_as_cancelled() {
    let rt = rt(2);
    let g = rt.group();
    let started = Arc::new(Barrier::new(2));
    let s = started.clone();
    let r = g.task().spawn_try(move || -> Result<u32, Error> {
        s.wait();
        loop {
            manta::check_cancelled()?;
            std::thread::yield_now();
        }
    });
    started.wait();
    g.cancel();
    assert!(r.get().unwrap_err().is_cancelled());
    assert!(g.wait_stopped(Some(LONG)));
    assert!(g.join(Some(LONG)), "every result counted");
    let p = g.progress();
    assert_eq!((p.cancelled, p.failed), (1, 0), "{p:?}");
    assert!(manta::check_cancelled().is_ok(), "Ok outside tasks");
}

#[test]
fn on_stopped_runs_once_the_group_stops_on_the_service_thread() {
    let rt = rt(2);
    let g = rt.group();
    let (tx, stopped) = mpsc::channel::<String>();
    let (release, gate) = mpsc::channel::<()>();
    let gate = Arc::new(std::sync::Mutex::new(gate));
    let refs: Vec<_> = (0..4)
        .map(|_| {
            let gate = gate.clone();
            g.spawn(move || {
                let _ = gate.lock().unwrap().recv();
            })
        })
        .collect();
    g.on_stopped(move || {
        let _ = tx.send(std::thread::current().name().unwrap_or("?").to_string());
    });
    assert!(stopped.try_recv().is_err(), "not stopped yet");
    drop(release);
    rt.get_all(&refs).unwrap();
    let by = stopped.recv_timeout(LONG).expect("on_stopped ran");
    assert_eq!(by, "manta-service");
    // On a group that is already stopped it runs at once (still there).
    let (tx, again) = mpsc::channel::<()>();
    g.on_stopped(move || {
        let _ = tx.send(());
    });
    again.recv_timeout(LONG).expect("ran for a stopped group");
}

#[test]
fn as_completed_can_say_which_input_completed() {
    let rt = rt(2);
    let refs: Vec<_> = (0..10u32).map(|i| rt.spawn(move || i * 10)).collect();
    let mut seen: Vec<(usize, u32)> = as_completed(refs).indexed().map(|(i, r)| (i, *r.get().unwrap())).collect();
    seen.sort();
    assert_eq!(seen, (0..10).map(|i| (i, i as u32 * 10)).collect::<Vec<_>>());
}

/// A cancelled group's queued task is read while every worker is busy
/// with a task that does not poll for cancellation (so no runner asks for
/// work and picks up the cancel's note): `get` still returns `Cancelled`
/// at once, the closure is dropped off the reading (and cancelling)
/// thread, the counts balance once the workers are free, and a task
/// submitted after all that still runs.
#[test]
fn get_on_a_cancelled_queued_task_while_every_worker_is_busy_returns_cancelled() {
    let rt = rt(1);
    let (release, holders) = hold_cpus(&rt, 1);
    let g = rt.group();
    let (dropped_tx, dropped) = mpsc::channel();
    let guard = DropSignal(dropped_tx);
    let queued = g.spawn(move || {
        let _keep = &guard;
        1u32
    });
    assert!(g.cancel());
    // The holder still runs: only the reader can resolve the task now (a
    // failure here would be a timeout while the holder blocks the worker).
    let e = queued.get_timeout(LONG).unwrap_err();
    assert!(e.is_cancelled(), "{e:?}");
    assert!(!holders[0].is_ready(), "resolved while the worker was still busy");
    let by = dropped.recv_timeout(LONG).expect("the closure is dropped");
    assert_ne!(Some(by), std::thread::current().name().map(str::to_string), "dropped on the reading thread");
    release_all(release, holders);
    assert!(g.join(Some(LONG)));
    let p = g.progress();
    assert_eq!((p.total, p.cancelled, p.running, p.queued), (1, 1, 0, 0), "{p:?}");
    assert_eq!(*rt.spawn(|| 7u8).get().unwrap(), 7);
    let c = rt.metrics();
    assert_eq!(c.tasks_cancelled, 1, "{c:?}");
}

/// Cancelled tasks that cannot fit (they need both CPUs while a task
/// outside the group holds one) are completed without any reader: the
/// cancel finds a runner place idle and starts a runner to reap them, so
/// `join` returns while the other task still runs.
#[test]
fn cancelled_tasks_that_do_not_fit_are_reaped_by_a_runner_the_cancel_starts() {
    let rt = rt(2);
    let (release, holders) = hold_cpus(&rt, 1);
    let g = rt.group();
    let refs: Vec<ObjectRef<u8>> = (0..10).map(|i| g.task().cpus(2.0).spawn(move || i)).collect();
    assert_eq!(g.progress().queued, 10);
    assert!(g.cancel());
    assert!(g.join(Some(LONG)), "the queued tasks were not completed");
    assert!(!holders[0].is_ready(), "completed only once the holder finished");
    let p = g.progress();
    assert_eq!((p.total, p.cancelled, p.queued), (10, 10, 0), "{p:?}");
    for r in &refs {
        assert!(r.get_timeout(LONG).unwrap_err().is_cancelled());
    }
    release_all(release, holders);
}

/// As Ray's `wait` after `ray.cancel`: a cancelled task still queued behind
/// a busy worker counts as ready for `wait`, `as_completed` and `get_all`
/// (they return `Cancelled` at once, not when the worker frees), for a
/// group's cancel and a single ref's.
#[test]
fn wait_as_completed_and_get_all_see_a_cancelled_queued_task_while_every_worker_is_busy() {
    let rt = rt(1);
    let (release, holders) = hold_cpus(&rt, 1);
    let g = rt.group();
    let by_group = g.spawn(|| 1u32);
    let single = rt.spawn(|| 2u32);
    assert!(g.cancel());
    assert!(single.cancel());
    for r in [&by_group, &single] {
        let (ready, rest) = rt.wait(std::slice::from_ref(r), 1, Some(LONG)).unwrap();
        assert_eq!((ready.len(), rest.len()), (1, 0), "wait sees it ready");
        let done: Vec<_> = as_completed(vec![r.clone()]).collect();
        assert_eq!(done.len(), 1);
        assert!(done[0].get().unwrap_err().is_cancelled());
        assert!(rt.get_all(std::slice::from_ref(r)).unwrap_err().is_cancelled());
    }
    assert!(!holders[0].is_ready(), "resolved while the worker was still busy");
    release_all(release, holders);
}

/// A reader already parked in `wait` when the group is cancelled (every
/// worker busy) is woken with the task cancelled at once, whichever of the
/// two comes first.
#[test]
fn a_reader_parked_before_the_cancel_sees_the_queued_task_cancelled_while_every_worker_is_busy() {
    let rt = rt(1);
    let (release, holders) = hold_cpus(&rt, 1);
    let g = rt.group();
    let queued = g.spawn(|| 1u32);
    let (r2, rt2) = (queued.clone(), rt.clone());
    let reader = std::thread::spawn(move || rt2.wait(std::slice::from_ref(&r2), 1, Some(LONG)).map(|(r, _)| r.len()));
    let r3 = queued.clone();
    let getter = std::thread::spawn(move || r3.get_timeout(LONG).map(|_| ()));
    // Not synchronisation (the outcome must be the same in either order):
    // a pause that makes the order this test is about, the readers parked
    // before the cancel, the likely one.
    std::thread::sleep(Duration::from_millis(50));
    assert!(g.cancel());
    assert_eq!(reader.join().unwrap().unwrap(), 1, "wait saw it ready");
    assert!(getter.join().unwrap().unwrap_err().is_cancelled());
    assert!(g.join(Some(LONG)), "join sees every result known");
    assert!(!holders[0].is_ready(), "resolved while the worker was still busy");
    release_all(release, holders);
}

/// Cancelling a running task cancels what it submitted (Ray's
/// `recursive=True`); a reader parked on such a child, still queued
/// because every worker is busy (one holds a CPU, the parent the other,
/// blocked without polling), sees it cancelled at once.
#[test]
fn a_parked_reader_of_a_cancelled_tasks_queued_child_sees_it_cancelled_while_every_worker_is_busy() {
    let rt = rt(2);
    let (release, holders) = hold_cpus(&rt, 1);
    let (child_tx, child_rx) = mpsc::channel::<ObjectRef<u32>>();
    let (go_tx, go_rx) = mpsc::channel::<()>();
    let inner = rt.clone();
    let parent = rt.spawn(move || {
        child_tx.send(inner.spawn(|| 7u32)).unwrap();
        let _ = go_rx.recv(); // busy, not polling `is_cancelled`
    });
    let child = child_rx.recv_timeout(LONG).expect("the parent runs");
    let (c2, rt2) = (child.clone(), rt.clone());
    let reader = std::thread::spawn(move || rt2.wait(std::slice::from_ref(&c2), 1, Some(LONG)).map(|(r, _)| r.len()));
    // Not synchronisation (the outcome must be the same in either order):
    // a pause that makes the order this test is about, the reader parked
    // before the cancel, the likely one.
    std::thread::sleep(Duration::from_millis(50));
    assert!(parent.cancel());
    assert_eq!(reader.join().unwrap().unwrap(), 1, "wait saw the child ready");
    assert!(child.get().unwrap_err().is_cancelled());
    assert!(!holders[0].is_ready(), "resolved while the worker was still busy");
    drop(go_tx);
    release_all(release, holders);
}

/// A running task of a cancelled group that returns a value anyway is
/// cancelled for its readers and its counts, as `ObjectRef::cancel` and
/// Ray's `TaskCancelledError` say.
#[test]
fn a_running_task_that_returns_after_its_group_was_cancelled_is_cancelled() {
    let rt = Runtime::builder().num_cpus(1).build().unwrap();
    let g = rt.group();
    let (started_tx, started) = mpsc::channel::<()>();
    let r = g.spawn(move || {
        started_tx.send(()).unwrap();
        while !manta::is_cancelled() {
            std::hint::spin_loop();
        }
        0u32
    });
    started.recv().unwrap();
    assert!(g.cancel());
    assert!(matches!(r.get(), Err(Error::Cancelled { .. })));
    assert!(g.wait_stopped(Some(Duration::from_secs(30))));
    let p = g.progress();
    assert_eq!((p.done, p.cancelled), (0, 1), "{p:?}");
}

/// Dropping a map before its last result cancels the items not run yet,
/// as dropping tokio's `JoinSet` aborts its tasks.
#[test]
fn dropping_a_map_early_stops_it() {
    let rt = rt(1);
    let (m, open, ran) = gated_map(&rt);
    let group = m.group().clone();
    drop(m);
    assert!(group.is_cancelled(), "dropping the map cancelled its group");
    drop(open);
    assert!(group.wait_stopped(Some(LONG)));
    assert!(ran.load(Ordering::SeqCst) <= 3, "{} items ran", ran.load(Ordering::SeqCst));
    // A map read to the end is not cancelled by its drop.
    let m = rt.map(0..4u32, 2, |x| x);
    let group = m.group().clone();
    assert_eq!(m.map(|r| *r.unwrap()).sum::<u32>(), 6);
    assert!(!group.is_cancelled());
}
