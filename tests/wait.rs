//! `wait` and `get_all`: `ready` keeps input order and holds at most
//! `num_returns`; a failed task counts as ready; a zero timeout is a poll;
//! duplicates, `num_returns == 0` and `num_returns > len` are
//! `InvalidArgument` for a non-empty list, while an empty list returns
//! `([], [])` whatever `num_returns` (as Ray); a cancelled task counts as
//! ready and the two lists partition the input; a timeout is not an error; waiting over `AnyRef`s of mixed types; `get_all`
//! returns input order with duplicates and fails fast; `wait` inside a task
//! on a one-CPU runtime does not deadlock.

use manta::{AnyRef, Error, ObjectRef, Runtime};
use std::sync::mpsc;
use std::time::Duration;

const LONG: Duration = Duration::from_secs(10);

fn rt(cpus: usize) -> Runtime {
    Runtime::builder().num_cpus(cpus).build().expect("runtime")
}

/// A ref that stays pending until the returned sender sends (or is dropped).
fn gated<T: Send + Sync + 'static>(rt: &Runtime, value: T) -> (mpsc::Sender<()>, ObjectRef<T>) {
    let (tx, rx) = mpsc::channel::<()>();
    let r = rt.spawn(move || {
        let _ = rx.recv();
        value
    });
    (tx, r)
}

/// Ids of `refs[i]` for each `i` in `pick`.
fn ids(refs: &[ObjectRef<u32>], pick: &[usize]) -> Vec<manta::ObjectId> {
    pick.iter().map(|&i| refs[i].id()).collect()
}

fn ids_of(refs: &[ObjectRef<u32>]) -> Vec<manta::ObjectId> {
    refs.iter().map(ObjectRef::id).collect()
}

#[test]
fn ready_keeps_input_order_and_holds_at_most_num_returns() {
    let rt = rt(2);
    let (g0, p0) = gated(&rt, 0u32);
    let (g2, p2) = gated(&rt, 2u32);
    let refs = vec![p0, rt.put(1u32).unwrap(), p2, rt.put(3u32).unwrap(), rt.put(4u32).unwrap()];

    let (ready, pending) = rt.wait(&refs, 2, None).unwrap();
    assert_eq!(ids_of(&ready), ids(&refs, &[1, 3]));
    assert_eq!(ids_of(&pending), ids(&refs, &[0, 2, 4]), "ready but over num_returns stays in pending");

    let (ready, pending) = rt.wait(&refs, 3, Some(LONG)).unwrap();
    assert_eq!(ids_of(&ready), ids(&refs, &[1, 3, 4]));
    assert_eq!(ids_of(&pending), ids(&refs, &[0, 2]));

    // Completing a later ref first: ready still follows input order.
    g2.send(()).unwrap();
    let (ready, pending) = rt.wait(&refs, 4, None).unwrap();
    assert_eq!(ids_of(&ready), ids(&refs, &[1, 2, 3, 4]));
    assert_eq!(ids_of(&pending), ids(&refs, &[0]));

    g0.send(()).unwrap();
    let (ready, pending) = rt.wait(&refs, 5, None).unwrap();
    assert_eq!(ids_of(&ready), ids_of(&refs));
    assert!(pending.is_empty());
}

#[test]
fn a_failed_task_counts_as_ready() {
    let rt = rt(2);
    let (_g, p) = gated(&rt, 0u32);
    let failed = rt.spawn(|| -> u32 { panic!("failed but ready") });
    let refs = vec![p, failed];
    let (ready, pending) = rt.wait(&refs, 1, Some(LONG)).unwrap();
    assert_eq!(ids_of(&ready), [refs[1].id()]);
    assert_eq!(ids_of(&pending), [refs[0].id()]);
    assert!(ready[0].get().unwrap_err().is_panic());
}

#[test]
fn zero_timeout_is_a_poll() {
    let rt = rt(2);
    let (g, p) = gated(&rt, 7u32);
    let done = rt.put(8u32).unwrap();
    let refs = vec![p.clone(), done];
    let (ready, pending) = rt.wait(&refs, 2, Some(Duration::ZERO)).unwrap();
    assert_eq!(ids_of(&ready), [refs[1].id()], "the ready one is returned");
    assert_eq!(ids_of(&pending), [refs[0].id()]);
    let (ready, pending) = rt.wait(&refs[..1], 1, Some(Duration::ZERO)).unwrap();
    assert!(ready.is_empty());
    assert_eq!(pending.len(), 1);
    // A short timeout returns what is ready so far, without an error.
    let (ready, _) = rt.wait(&refs[..1], 1, Some(Duration::from_millis(10))).unwrap();
    assert!(ready.is_empty());
    g.send(()).unwrap();
    let (ready, pending) = rt.wait(&refs, 2, Some(LONG)).unwrap();
    assert_eq!(ready.len(), 2);
    assert!(pending.is_empty());
}

#[test]
fn invalid_arguments() {
    let rt = rt(2);
    let a = rt.put(1u32).unwrap();
    let b = rt.put(2u32).unwrap();
    type Split = (Vec<ObjectRef<u32>>, Vec<ObjectRef<u32>>);
    let invalid = |r: Result<Split, Error>| {
        assert!(matches!(r, Err(Error::InvalidArgument(_))), "{r:?}");
    };
    invalid(rt.wait(&[a.clone(), b.clone(), a.clone()], 1, None));
    invalid(rt.wait(&[a.clone(), b.clone()], 3, None));
    invalid(rt.wait(&[a.clone(), b.clone()], 0, None));
    // Duplicates through different typed views of one object.
    let any = a.untyped();
    let mixed = rt.wait(&[any.clone(), b.untyped(), a.untyped()], 1, None);
    assert!(matches!(mixed, Err(Error::InvalidArgument(_))));
}

#[test]
fn an_empty_list_returns_two_empty_lists_whatever_num_returns() {
    // Ray: `ray.wait([])` returns `([], [])` before looking at num_returns.
    let rt = rt(1);
    for n in [0, 1, 7] {
        for timeout in [None, Some(Duration::ZERO), Some(LONG)] {
            let (ready, pending) = rt.wait::<ObjectRef<u32>>(&[], n, timeout).unwrap();
            assert!(ready.is_empty() && pending.is_empty(), "num_returns {n}, timeout {timeout:?}");
            let (ready, pending) = rt.wait::<AnyRef>(&[], n, timeout).unwrap();
            assert!(ready.is_empty() && pending.is_empty());
        }
    }
}

#[test]
fn a_cancelled_ref_counts_as_ready_and_the_lists_partition_the_input() {
    let rt = rt(1);
    let (g, running) = gated(&rt, 0u32); // holds the only CPU
    let queued = rt.spawn(|| 1u32);
    assert!(queued.cancel(), "still queued behind the gated task");
    let put = rt.put(2u32).unwrap();
    let refs = vec![running.clone(), queued.clone(), put.clone()];
    let (ready, pending) = rt.wait(&refs, 3, Some(Duration::ZERO)).unwrap();
    assert_eq!(ids_of(&ready), ids(&refs, &[1, 2]), "cancelled and put are ready, in input order");
    assert_eq!(ids_of(&pending), ids(&refs, &[0]));
    // num_returns caps ready; the rest of the done refs stay in pending,
    // and every ref is in exactly one list.
    let (ready, pending) = rt.wait(&refs, 1, Some(Duration::ZERO)).unwrap();
    assert_eq!(ids_of(&ready), ids(&refs, &[1]));
    assert_eq!(ids_of(&pending), ids(&refs, &[0, 2]));
    // A timeout with fewer than num_returns ready is not an error.
    let (ready, pending) = rt.wait(&refs, 3, Some(Duration::from_millis(1))).unwrap();
    assert_eq!((ready.len(), pending.len()), (2, 1));
    assert!(queued.get().unwrap_err().is_cancelled());
    g.send(()).unwrap();
    let (ready, pending) = rt.wait(&refs, 3, None).unwrap();
    assert_eq!(ids_of(&ready), ids_of(&refs));
    assert!(pending.is_empty());
}

#[test]
fn wait_over_mixed_types() {
    let rt = rt(2);
    let (g, p) = gated(&rt, vec![1u8, 2, 3]);
    let refs: Vec<AnyRef> = vec![
        rt.put(1i32).unwrap().untyped(),
        p.untyped(),
        rt.put(String::from("s")).unwrap().untyped(),
        rt.spawn(|| 2.5f64).untyped(),
    ];
    let (ready, pending) = rt.wait(&refs, 3, Some(LONG)).unwrap();
    let got: Vec<_> = ready.iter().map(AnyRef::id).collect();
    assert_eq!(got, [refs[0].id(), refs[2].id(), refs[3].id()]);
    assert_eq!(pending.iter().map(AnyRef::id).collect::<Vec<_>>(), [refs[1].id()]);
    assert_eq!(*ready[0].typed::<i32>().get().unwrap(), 1);
    assert_eq!(ready[1].typed::<String>().get().unwrap().as_str(), "s");
    assert_eq!(*ready[2].typed::<f64>().get().unwrap(), 2.5);
    g.send(()).unwrap();
    assert_eq!(*pending[0].typed::<Vec<u8>>().get().unwrap(), [1, 2, 3]);
}

#[test]
fn get_all_returns_input_order_with_duplicates() {
    let rt = rt(2);
    let a = rt.spawn(|| 1u32);
    let b = rt.put(2u32).unwrap();
    let (g, c) = gated(&rt, 3u32);
    g.send(()).unwrap();
    let vals: Vec<u32> =
        rt.get_all(&[c.clone(), a.clone(), b.clone(), a.clone(), c]).unwrap().iter().map(|v| **v).collect();
    assert_eq!(vals, [3, 1, 2, 1, 3]);
    assert!(rt.get_all::<u32>(&[]).unwrap().is_empty());
}

#[test]
fn get_all_fails_fast() {
    let rt = rt(2);
    let (g, never) = gated(&rt, 0u32);
    let failing = rt.task().name("late-failure").spawn(|| -> u32 {
        std::thread::sleep(Duration::from_millis(20)); // usually fails once get_all is blocked
        panic!("fails while another is pending")
    });
    let refs = vec![never.clone(), rt.put(1).unwrap(), failing];
    match rt.get_all_timeout(&refs, LONG) {
        Err(Error::TaskPanicked { task, .. }) => assert_eq!(&*task, "late-failure"),
        other => panic!("expected the failure at once, got {other:?}"),
    }
    assert!(!never.is_ready(), "returned while the first ref is still pending");
    g.send(()).unwrap();
    assert_eq!(*never.get().unwrap(), 0);
}

#[test]
fn wait_inside_a_task_does_not_deadlock_on_one_cpu() {
    let rt = rt(1);
    let r = rt.spawn(|| {
        let rt = Runtime::current().unwrap();
        let kids: Vec<_> = (0..8u32).map(|i| rt.spawn(move || i)).collect();
        let (ready, pending) = rt.wait(&kids, 8, None).unwrap();
        assert!(pending.is_empty());
        let (first, _) = rt.wait(&kids, 1, Some(LONG)).unwrap();
        ready.iter().map(|r| *r.get().unwrap()).sum::<u32>() + first.len() as u32
    });
    assert_eq!(*r.get_timeout(LONG).unwrap(), 28 + 1);
}

/// Spins for `us` microseconds (a task body made long on purpose).
fn busy(us: u64) {
    let t = std::time::Instant::now();
    while t.elapsed() < Duration::from_micros(us) {
        std::hint::spin_loop();
    }
}

#[test]
fn completions_racing_with_get_all_and_wait_never_lose_a_wake_up() {
    // Refs complete while get_all/wait scans and registers on them. An
    // untimed call that misses one completion never returns, so the calls
    // run on a helper thread watched with a generous bound per round. The
    // race is timing-dependent, so three shapes give it chances: big rounds
    // (completions streaming during a long scan), many small rounds, and
    // small rounds on freshly built runtimes (workers still starting).
    const BIG: usize = 6;
    const SMALL: usize = 3_000;
    const FRESH: usize = 300;
    let rt = rt(2);
    let (progress, rounds) = mpsc::channel::<usize>();
    let shared = rt.clone();
    std::thread::spawn(move || {
        for round in 0..BIG + SMALL + FRESH {
            let fresh;
            let rt = if round >= BIG + SMALL {
                fresh = Runtime::builder().num_cpus(2).build().unwrap();
                &fresh
            } else {
                &shared
            };
            let (n, spin) = if round < BIG { (20_000, 5) } else { (16, 0) };
            let refs: Vec<_> = (0..n as u32)
                .map(|i| {
                    rt.spawn(move || {
                        busy(spin);
                        i
                    })
                })
                .collect();
            if round < BIG || round % 2 == 0 {
                let (ready, pending) = rt.wait(&refs, n, None).unwrap();
                assert_eq!((ready.len(), pending.len()), (n, 0));
            } else {
                assert_eq!(rt.get_all(&refs).unwrap().len(), n);
            }
            if progress.send(round).is_err() {
                return;
            }
        }
    });
    for round in 0..BIG + SMALL + FRESH {
        match rounds.recv_timeout(LONG) {
            Ok(r) => assert_eq!(r, round),
            Err(_) => panic!("round {round}: get_all/wait never returned although every task finished (lost wake-up)"),
        }
    }
}
