//! Tasks: `spawn`, `spawn_with` (refs of different types, plain values,
//! `Val`, up to 12 arguments, `Vec<ObjectRef<T>>`), multiple returns
//! (`spawn_multi`), fractional CPUs, tasks that submit tasks through
//! `Runtime::current()`, one-shot closures that move their captures, a
//! 10,000-level dependency chain and 100,000 trivial tasks.

mod common;
use common::Gauge;

use manta::{Error, ObjectRef, Runtime, Val};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

/// Generous bound for "finishes fast" and for channel rendezvous.
const LONG: Duration = Duration::from_secs(10);

fn rt(cpus: usize) -> Runtime {
    Runtime::builder().num_cpus(cpus).build().expect("runtime")
}

#[test]
fn spawn_returns_the_closure_value() {
    let rt = rt(2);
    let a = rt.spawn(|| 6 * 7);
    let b = rt.task().spawn(|| String::from("re-runnable"));
    assert_eq!(*a.get().unwrap(), 42);
    assert_eq!(b.get().unwrap().as_str(), "re-runnable");
    // A finished ref reads the same value again.
    assert_eq!(*rt.get(&a).unwrap(), 42);
}

#[test]
fn spawn_with_refs_of_different_types() {
    let rt = rt(2);
    let n = rt.put(3i32).unwrap();
    let s = rt.put(String::from("ab")).unwrap();
    let v = rt.spawn(|| {
        std::thread::sleep(Duration::from_millis(5)); // still pending when the consumer is submitted
        vec![1.5f64, 2.5]
    });
    let r = rt.spawn_with((n, s, v), |(n, s, v)| format!("{}{}{}", *n, s, v.iter().sum::<f64>()));
    assert_eq!(r.get().unwrap().as_str(), "3ab4");
}

#[derive(Clone, Debug, PartialEq)]
struct Point {
    x: i64,
    y: i64,
}

#[test]
fn spawn_with_ten_mixed_arguments() {
    let rt = rt(2);
    let a = rt.put(1i64).unwrap();
    let b = rt.spawn(|| 2u8);
    let c = rt.put(String::from("three")).unwrap();
    let d = rt.spawn(|| vec![4u32, 4]);
    let args = (a, 10i32, b, "lit", c, Val(Point { x: 5, y: 6 }), true, d, 'z', String::from("owned"));
    let r = rt.spawn_with(args, |(a, ten, b, lit, c, p, flag, d, ch, owned)| {
        format!("{} {} {} {} {} {:?} {} {:?} {} {}", *a, ten, *b, lit, c, p, flag, *d, ch, owned)
    });
    assert_eq!(r.get().unwrap().as_str(), "1 10 2 lit three Point { x: 5, y: 6 } true [4, 4] z owned");
}

#[test]
fn twelve_arguments_with_a_rerunnable_task() {
    let rt = rt(2);
    let refs: Vec<ObjectRef<u64>> = (0..6u64).map(|i| rt.spawn(move || i)).collect();
    let [r0, r1, r2, r3, r4, r5]: [ObjectRef<u64>; 6] = refs.try_into().unwrap();
    let args = (r0, 10u64, r1, 20u64, r2, Val(30u64), r3, 40u64, r4, Val(vec![50u64]), r5, 60u64);
    let r = rt.task().name("twelve").spawn_with(args, |(a, b, c, d, e, f, g, h, i, j, k, l)| {
        *a + b + *c + d + *e + f + *g + h + *i + j.iter().sum::<u64>() + *k + l
    });
    assert_eq!(*r.get().unwrap(), (0..6).sum::<u64>() + 10 + 20 + 30 + 40 + 50 + 60);
}

#[test]
fn vec_of_refs_argument() {
    let rt = rt(2);
    let mut refs: Vec<ObjectRef<u32>> = (1..=50u32).map(|i| rt.spawn(move || i)).collect();
    refs.extend((51..=100u32).map(|i| rt.put(i).unwrap()));
    let total = rt.spawn_with((refs, 1000u32), |(vs, base)| base + vs.iter().map(|v| **v).sum::<u32>());
    assert_eq!(*total.get().unwrap(), 1000 + 5050);
    let empty: Vec<ObjectRef<u32>> = Vec::new();
    let n = rt.spawn_with((empty,), |(vs,)| vs.len());
    assert_eq!(*n.get().unwrap(), 0);
}

#[test]
fn multiple_returns_become_separate_refs() {
    let rt = rt(2);
    let x = rt.put(7i32).unwrap();
    let (a, b, c) = rt.task().spawn_multi((x,), |(x,)| (*x * 10, format!("x={x}"), vec![*x; 3]));
    assert_eq!(*a.get().unwrap(), 70);
    assert_eq!(b.get().unwrap().as_str(), "x=7");
    assert_eq!(*c.get().unwrap(), vec![7, 7, 7]);
    assert_ne!(a.id(), b.untyped().id());
    // Each output can feed another task on its own.
    let d = rt.spawn_with((a, c), |(a, c)| *a + c.iter().sum::<i32>());
    assert_eq!(*d.get().unwrap(), 91);

    // Two and four outputs.
    let (p, q) = rt.task().spawn_multi((), |()| (1u8, 2u16));
    assert_eq!((*p.get().unwrap(), *q.get().unwrap()), (1, 2));
    let (w, x, y, z) = rt.task().spawn_multi((), |()| ('w', "x", 3i64, Val(4)));
    assert_eq!(*w.get().unwrap(), 'w');
    assert_eq!(*x.get().unwrap(), "x");
    assert_eq!(*y.get().unwrap(), 3);
    assert_eq!(z.get().unwrap().0, 4);
}

#[test]
fn multiple_returns_all_fail_when_the_task_panics() {
    let rt = rt(2);
    let (a, b) = rt.task().name("multi-boom").spawn_multi((), |()| -> (i32, String) { panic!("multi boom") });
    for e in [a.get().unwrap_err(), b.get().unwrap_err()] {
        assert!(
            matches!(&e, Error::TaskPanicked { task, message } if &**task == "multi-boom" && &**message == "multi boom"),
            "{e:?}"
        );
    }
}

#[test]
fn fractional_cpus() {
    let rt = rt(1);
    let half = rt.task().cpus(0.5).spawn(|| 1);
    let quarter = rt.task().cpus(0.25).spawn(|| 2);
    let zero = rt.task().cpus(0.0).spawn(|| 3);
    let sum = rt.task().cpus(0.3).spawn_with((half, quarter, zero), |(a, b, c)| *a + *b + *c);
    assert_eq!(*sum.get().unwrap(), 6);
    // 1.5 CPUs on a 1-CPU runtime can never run.
    let too_big = rt.task().cpus(1.5).spawn(|| 0);
    assert!(matches!(too_big.get(), Err(Error::Infeasible { ref resource, .. }) if &**resource == "CPU"));

    // 2.5 CPUs on a 4-CPU runtime: two can never run at once (2.5 + 2.5 > 4),
    // although four worker threads are free.
    let rt = Runtime::builder().num_cpus(4).build().unwrap();
    let gauge = Arc::new(Gauge::default());
    let refs: Vec<_> = (0..6)
        .map(|_| {
            let g = gauge.clone();
            rt.task().cpus(2.5).spawn(move || {
                g.enter();
                std::thread::sleep(Duration::from_millis(2));
                g.exit();
            })
        })
        .collect();
    rt.get_all(&refs).unwrap();
    assert_eq!(gauge.max(), 1);
}

#[test]
fn tasks_submit_tasks_through_current() {
    for cpus in [1, 2] {
        let rt = Runtime::builder().num_cpus(cpus).thread_name("nested").build().unwrap();
        let r = rt.spawn(|| {
            let rt = Runtime::current().expect("inside a task");
            let kids: Vec<_> = (1..=10)
                .map(|i| {
                    rt.spawn(move || {
                        let name = std::thread::current().name().map(str::to_owned).unwrap_or_default();
                        (i * i, name)
                    })
                })
                .collect();
            let vals = rt.get_all(&kids).unwrap();
            assert!(vals.iter().all(|v| v.1.starts_with("nested")), "children run on the same runtime");
            vals.iter().map(|v| v.0).sum::<i32>()
        });
        assert_eq!(*r.get().unwrap(), 385, "cpus = {cpus}");
    }
}

#[test]
fn a_task_can_return_a_ref_made_by_a_nested_task() {
    let rt = rt(2);
    let outer: ObjectRef<ObjectRef<String>> = rt.spawn(|| {
        let rt = Runtime::current().unwrap();
        let inner = rt.spawn(|| "grandchild".to_string());
        rt.spawn_with((inner,), |(s,)| format!("{s}!"))
    });
    let inner = outer.get().unwrap();
    assert_eq!(inner.get().unwrap().as_str(), "grandchild!");
}

#[test]
fn one_shot_closures_move_their_captures() {
    let rt = rt(2);
    // Non-Clone, non-Sync captures: a Vec of Strings and a channel receiver.
    let data = vec![String::from("a"), String::from("b")];
    let (tx, rx) = mpsc::channel::<String>();
    let (back_tx, back_rx) = mpsc::channel::<Vec<String>>();
    tx.send("hello".into()).unwrap();
    let r = rt.spawn(move || {
        let got = rx.recv().unwrap();
        let n = data.len();
        back_tx.send(data).unwrap();
        format!("{got} {n}")
    });
    assert_eq!(r.get().unwrap().as_str(), "hello 2");
    assert_eq!(back_rx.recv_timeout(LONG).unwrap(), ["a", "b"]);

    let owned = Box::new(41);
    let arg = rt.put(1).unwrap();
    let r2 = rt.spawn_with((arg,), move |(a,)| *owned + *a);
    assert_eq!(*r2.get().unwrap(), 42);
}

#[test]
fn deep_chain_of_ten_thousand_pending_tasks_finishes_fast() {
    let rt = rt(2);
    let start = Instant::now();
    let (go, rx) = mpsc::channel::<u64>();
    let first = rt.spawn(move || rx.recv().unwrap_or(0));
    let mut r = first;
    for _ in 0..10_000 {
        r = rt.spawn_with((r,), |(x,)| *x + 1);
    }
    assert!(!r.is_ready(), "the whole chain waits for its first task");
    go.send(5).unwrap();
    assert_eq!(*r.get().unwrap(), 10_005);
    assert!(start.elapsed() < LONG, "chain took {:?}", start.elapsed());
}

#[test]
fn deep_chain_built_while_running() {
    let rt = rt(2);
    let start = Instant::now();
    let mut r = rt.put(0u64).unwrap();
    for _ in 0..10_000 {
        r = rt.spawn_with((r,), |(x,)| *x + 1);
    }
    assert_eq!(*r.get().unwrap(), 10_000);
    assert!(start.elapsed() < LONG, "chain took {:?}", start.elapsed());
}

#[test]
fn hundred_thousand_trivial_tasks() {
    let rt = rt(2);
    let start = Instant::now();
    let refs: Vec<_> = (0..100_000u64).map(|i| rt.spawn(move || i * 2)).collect();
    let vals = rt.get_all(&refs).unwrap();
    assert_eq!(vals.len(), 100_000);
    assert!(vals.iter().enumerate().all(|(i, v)| **v == i as u64 * 2));
    assert!(start.elapsed() < LONG, "took {:?}", start.elapsed());
}
