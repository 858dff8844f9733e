//! Remote tasks on three in-process nodes (127.0.0.1, joined by bootstrap):
//! resource placement, spreading when saturated, locality, recursive
//! tasks with nested gets across nodes, errors, unknown functions,
//! back-pressure (busy is not infeasible: a CPU-less node's flood onto
//! one small worker waits and runs), a task placed again when its node
//! dies, a large
//! result lost with its node rebuilt from lineage, and mail acks with and
//! without traffic going back.

use manta::{Error, ObjectRef, Runtime};
use manta_p2p::{Node, Registry, RemoteFn};
use std::time::Duration;

mod common;

const WAIT: Duration = Duration::from_secs(30);

/// The node a task ran on.
fn here() -> String {
    Node::current().expect("tasks run on a node's runtime").peer_id().to_string()
}

static WHO: RemoteFn<(), String> = RemoteFn::new("who", |()| here());
static NAP: RemoteFn<(u64,), String> = RemoteFn::new("nap", |(ms,)| {
    std::thread::sleep(Duration::from_millis(ms)); // work, not synchronisation
    here()
});
static MAKE: RemoteFn<(usize,), Vec<u8>> = RemoteFn::new("make", |(n,)| (0..n).map(|i| (i % 251) as u8).collect());
static ADD: RemoteFn<(Vec<u8>, Vec<u8>), (String, usize)> = RemoteFn::new("add", |(a, b)| (here(), a.len() + b.len()));
static FIB: RemoteFn<(u64,), u64> = RemoteFn::new("fib", |(n,)| {
    if n < 2 {
        return n;
    }
    let node = Node::current().expect("on a node");
    let a = node.spawn(&FIB, (n - 1,));
    let b = node.spawn(&FIB, (n - 2,));
    *a.get().expect("fib(n-1)") + *b.get().expect("fib(n-2)")
});
static BOOM: RemoteFn<(u32,), u32> = RemoteFn::new("boom", |(x,)| if x > 0 { panic!("boom {x}") } else { x });
static DOUBLE: RemoteFn<(u32,), u32> = RemoteFn::new("double", |(x,)| 2 * x);
static ONLY_ON_A: RemoteFn<(), u8> = RemoteFn::new("only_on_a", |()| 1);
static SUM2: RemoteFn<(u32, u32), u32> = RemoteFn::new("sum2", |(a, b)| a + b);

fn registry() -> Registry {
    Registry::new()
        .function(&WHO)
        .function(&NAP)
        .function(&MAKE)
        .function(&ADD)
        .function(&FIB)
        .function(&BOOM)
        .function(&DOUBLE)
        .function(&SUM2)
}

fn node(bootstrap: Option<&Node>, gpu: bool, registry: Registry, max_accepted: usize) -> Node {
    let mut rt = Runtime::builder().num_cpus(1);
    if gpu {
        rt = rt.resource("GPU", 1.0);
    }
    let mut b = Node::builder(rt.build().unwrap())
        .listen("/ip4/127.0.0.1/tcp/0".parse().unwrap())
        .heartbeat(Duration::from_millis(100))
        .failure_timeout(Duration::from_secs(5))
        .queue_threshold(1)
        .max_accepted_tasks(max_accepted)
        .registry(registry);
    if let Some(n) = bootstrap {
        b = b.bootstrap(n.listen_addrs()[0].clone());
    }
    b.start().unwrap()
}

/// A, B and C; only C has a GPU.
fn three() -> (Node, Node, Node) {
    let a = node(None, false, registry(), 1 << 14);
    let b = node(Some(&a), false, registry(), 1 << 14);
    let c = node(Some(&a), true, registry(), 1 << 14);
    for n in [&a, &b, &c] {
        n.wait_for_peers(2, WAIT).unwrap();
    }
    (a, b, c)
}

#[test]
fn gpu_tasks_run_where_the_gpu_is_and_impossible_ones_fail_at_once() {
    let (a, b, c) = three();
    for n in [&a, &b, &c] {
        let ran = n.task(&WHO).resource("GPU", 1.0).spawn(());
        assert_eq!(*ran.get().unwrap(), c.peer_id().to_string());
    }
    let never = a.task(&WHO).resource("TPU", 1.0).spawn(());
    match never.get() {
        Err(Error::Infeasible { resource, .. }) => assert_eq!(&*resource, "TPU"),
        other => panic!("expected Infeasible naming TPU, got {other:?}"),
    }
    let too_many = a.task(&WHO).resource("GPU", 2.0).spawn(());
    assert!(matches!(too_many.get(), Err(Error::Infeasible { .. })));
}

#[test]
fn cpu_tasks_spread_when_the_submitting_node_is_saturated() {
    let (a, b, c) = three();
    let refs: Vec<ObjectRef<String>> = (0..12).map(|_| a.spawn(&NAP, (30,))).collect();
    let ran: Vec<String> = refs.iter().map(|r| (*r.get().unwrap()).clone()).collect();
    let on = |n: &Node| ran.iter().filter(|p| **p == n.peer_id().to_string()).count();
    assert_eq!(on(&a) + on(&b) + on(&c), 12);
    assert!(on(&a) >= 1, "the first tasks run where submitted: {ran:?}");
    assert!(on(&b) + on(&c) >= 4, "a saturated node spills: {ran:?}");
}

#[test]
fn add_runs_where_its_larger_argument_lives() {
    let (a, b, _c) = three();
    let small = a.runtime().put(vec![1u8; 10]).unwrap();
    let big = a.task(&MAKE).on(b.peer_id()).spawn((4 << 20,));
    assert!(a.wait_done_remotely(&big, WAIT), "the big result is made on B");
    let sum = a.spawn(&ADD, (&small, &big));
    let (ran, len) = (*sum.get().unwrap()).clone();
    assert_eq!(len, 10 + (4 << 20));
    assert_eq!(ran, b.peer_id().to_string(), "add ran where the 4 MiB argument lives");
    // The big value never had to come to A for that; reading it now does.
    assert_eq!(big.get().unwrap().len(), 4 << 20);
}

#[test]
fn recursive_fib_with_nested_gets_across_nodes() {
    let (a, b, c) = three();
    assert_eq!(*a.spawn(&FIB, (13,)).get().unwrap(), 233);
    // Started on B, and with the root pinned to C: same answer.
    assert_eq!(*b.spawn(&FIB, (10,)).get().unwrap(), 55);
    assert_eq!(*a.task(&FIB).on(c.peer_id()).spawn((11,)).get().unwrap(), 89);
}

#[test]
fn errors_flow_through_the_graph_across_nodes() {
    let (a, b, c) = three();
    let bad = a.task(&BOOM).on(b.peer_id()).name("exploder").spawn((7,));
    match bad.get() {
        Err(Error::TaskPanicked { task, message }) => {
            assert_eq!(&*task, "exploder");
            assert!(message.contains("boom 7"), "{message}");
        }
        other => panic!("expected the remote panic, got {other:?}"),
    }
    // A task taking the failed ref fails without running, wherever it runs.
    let next = a.task(&DOUBLE).on(b.peer_id()).spawn((&bad,));
    let e = next.get().unwrap_err();
    assert!(matches!(e, Error::DependencyFailed { .. }), "{e:?}");
    assert!(matches!(e.root_cause(), Error::TaskPanicked { .. }));
    // Read on a third node (from the owner, or from the executor) and as
    // the input of a task run there, the failure keeps its type: the
    // error, not a lost object.
    let here_failed = a.task(&BOOM).on(a.peer_id()).name("local_exploder").spawn((8,));
    assert!(here_failed.get().is_err());
    for failed in [&bad, &here_failed] {
        let at_c: ObjectRef<u32> = c.decode(&a.encode(failed).unwrap()).unwrap();
        let e = at_c.get_timeout(WAIT).unwrap_err();
        assert!(matches!(e, Error::TaskPanicked { .. }), "read on C: {e:?}");
        let on_c = a.task(&DOUBLE).on(c.peer_id()).spawn((failed,));
        let e = on_c.get_timeout(WAIT).unwrap_err();
        assert!(matches!(e.root_cause(), Error::TaskPanicked { .. }), "a dependant on C: {e:?}");
    }
    // And a good value passed by ref crosses nodes both ways.
    let four = a.task(&DOUBLE).on(b.peer_id()).spawn((2,));
    let eight = b.spawn(&DOUBLE, (b.decode::<ObjectRef<u32>>(&a.encode(&four).unwrap()).unwrap(),));
    assert_eq!(*eight.get().unwrap(), 8);
}

#[test]
fn a_function_a_node_lacks_is_an_error_naming_it() {
    let a = node(None, false, registry().function(&ONLY_ON_A), 1 << 14);
    let b = node(Some(&a), false, registry(), 1 << 14);
    a.wait_for_peers(1, WAIT).unwrap();
    b.wait_for_peers(1, WAIT).unwrap();
    let status = a.cluster_status().unwrap();
    assert_ne!(status[0].fn_hash, status[1].fn_hash, "the tables differ, and the hashes say so");
    let r = a.task(&ONLY_ON_A).on(b.peer_id()).spawn(());
    match r.get() {
        Err(Error::UnknownFunction { name, reason }) => {
            assert_eq!(&*name, "only_on_a");
            assert!(reason.contains(&b.peer_id().to_string()), "{reason}");
        }
        other => panic!("expected UnknownFunction, got {other:?}"),
    }
    // Unpinned, it is never sent to B (different table): it runs on A.
    assert_eq!(*a.spawn(&ONLY_ON_A, ()).get().unwrap(), 1);
}

#[test]
fn a_busy_node_pushes_back_and_every_task_still_runs() {
    let a = node(None, false, registry(), 1 << 14);
    let b = node(Some(&a), false, registry(), 2);
    a.wait_for_peers(1, WAIT).unwrap();
    b.wait_for_peers(1, WAIT).unwrap();
    let refs: Vec<_> = (0..10u32).map(|i| a.task(&DOUBLE).on(b.peer_id()).spawn((i,))).collect();
    let got: Vec<u32> = refs.iter().map(|r| *r.get().unwrap()).collect();
    assert_eq!(got, (0..10).map(|i| 2 * i).collect::<Vec<_>>());
}

#[test]
fn tasks_refused_busy_by_the_only_node_that_can_run_them_wait_and_run() {
    // A has no CPU: every task must go to B, which holds two at a time.
    // Those it refuses as busy (and those A holds back, B's share being
    // full) wait and go to B again: none fails as if no node could run it.
    let a = {
        let rt = Runtime::builder().num_cpus(0).build().unwrap();
        Node::builder(rt)
            .listen("/ip4/127.0.0.1/tcp/0".parse().unwrap())
            .heartbeat(Duration::from_millis(100))
            .failure_timeout(Duration::from_secs(5))
            .max_accepted_tasks(2)
            .registry(registry())
            .start()
            .unwrap()
    };
    let b = node(Some(&a), false, registry(), 2);
    a.wait_for_peers(1, WAIT).unwrap();
    b.wait_for_peers(1, WAIT).unwrap();
    let refs: Vec<_> = (0..20u32).map(|i| a.spawn(&NAP, (u64::from(i % 3),))).collect();
    for r in &refs {
        assert_eq!(*r.get().unwrap(), b.peer_id().to_string());
    }
}

#[test]
fn a_reduction_tree_that_moves_its_refs_into_tasks_finishes() {
    // Regression: the last ref to a promise, dropped when its dependant's
    // `Done` arrived, deadlocked the node (it was dropped under a lock).
    let (a, _b, _c) = three();
    let mut level: Vec<ObjectRef<u32>> = (0..16u32).map(|i| a.spawn(&DOUBLE, (i,))).collect();
    while level.len() > 1 {
        let mut next = Vec::new();
        let mut it = level.into_iter();
        while let (Some(x), Some(y)) = (it.next(), it.next()) {
            next.push(a.spawn(&SUM2, (x, y)));
        }
        level = next;
    }
    assert_eq!(*level[0].get().unwrap(), 240);
}

static SLOW_ON_X: RemoteFn<(u64,), String> = RemoteFn::new("slow_on_x", |(ms,)| {
    std::thread::sleep(Duration::from_millis(ms)); // work, not synchronisation
    here()
});

static BIG_ON_X: RemoteFn<(u64,), Vec<u8>> = RemoteFn::new("big_on_x", |(seed,)| {
    BIG_RUNS.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    (0..1_000_000u64).map(|i| ((i * seed) % 251) as u8).collect()
});
static BIG_RUNS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

fn x_registry() -> Registry {
    registry().function(&SLOW_ON_X).function(&BIG_ON_X)
}

/// A without the resource "X", then B and C with one each (fast failure
/// detection), all joined.
fn a_and_two_with_x() -> (Node, Node, Node) {
    let start = |boot: Option<&Node>| {
        let rt = Runtime::builder().num_cpus(1).resource("X", 1.0).build().unwrap();
        let mut b = Node::builder(rt)
            .listen("/ip4/127.0.0.1/tcp/0".parse().unwrap())
            .heartbeat(Duration::from_millis(100))
            .failure_timeout(Duration::from_millis(800))
            .registry(x_registry());
        if let Some(n) = boot {
            b = b.bootstrap(n.listen_addrs()[0].clone());
        }
        b.start().unwrap()
    };
    let a = node(None, false, x_registry(), 1 << 14);
    let b = start(Some(&a));
    let c = start(Some(&a));
    for n in [&a, &b, &c] {
        n.wait_for_peers(2, WAIT).unwrap();
    }
    (a, b, c)
}

#[test]
fn a_large_result_lost_with_its_node_is_rebuilt_from_lineage() {
    let (a, b, c) = a_and_two_with_x();
    // A has no X: the task runs on B or C; its 1 MB result stays there.
    let r = a.task(&BIG_ON_X).resource("X", 1.0).spawn((7,));
    assert!(a.wait_done_remotely(&r, WAIT), "the task never finished");
    let runs = BIG_RUNS.load(std::sync::atomic::Ordering::SeqCst);
    let (executor, survivor) = if b.pinned_objects() > 0 { (&b, &c) } else { (&c, &b) };
    assert_eq!(executor.pinned_objects(), 1, "the executor keeps the result for A");
    executor.shutdown();
    // Reading it now finds no holder (A need not know the node is dead):
    // A runs the task again, not on the node it lost it with.
    let expected: Vec<u8> = (0..1_000_000u64).map(|i| ((i * 7) % 251) as u8).collect();
    assert_eq!(*r.get_timeout(WAIT).unwrap(), expected);
    assert_eq!(BIG_RUNS.load(std::sync::atomic::Ordering::SeqCst), runs + 1, "run once more");
    assert_eq!(survivor.pinned_objects(), 1, "the survivor made it this time");
}

#[test]
fn a_task_whose_node_dies_runs_again_elsewhere() {
    // A has no X: the task goes to B or C, whichever is less loaded.
    let (a, b, c) = a_and_two_with_x();
    let r = a.task(&SLOW_ON_X).resource("X", 1.0).spawn((1500,));
    // Wait until one of them runs it (its X is taken), then stop that node.
    let running = |n: &Node| n.runtime().resources().iter().any(|(name, _, free)| &**name == "X" && *free < 1.0);
    let deadline = std::time::Instant::now() + WAIT;
    let first = loop {
        if let Some(n) = [&b, &c].into_iter().find(|n| running(n)) {
            break n;
        }
        assert!(std::time::Instant::now() < deadline, "the task never started");
        std::thread::yield_now();
    };
    let survivor = if first.peer_id() == b.peer_id() { &c } else { &b };
    // A hears nothing more from it, declares it dead and places the task again.
    common::stop_and_see_die(first, &a, WAIT);
    assert_eq!(*r.get_timeout(WAIT).unwrap(), survivor.peer_id().to_string());
}

/// Acks ride on the batches going the other way, or leave on their own
/// within a millisecond when none does: tasks one at a time, a burst of
/// more batches than the window holds, and the one-way mail after them
/// (releases) all settle.
#[test]
fn mail_is_acked_with_and_without_traffic_back() {
    let a = node(None, false, registry(), 1 << 14);
    let b = node(Some(&a), false, registry(), 1 << 14);
    a.wait_for_peers(1, WAIT).unwrap();
    b.wait_for_peers(1, WAIT).unwrap();
    for i in 0..200u32 {
        assert_eq!(*a.task(&DOUBLE).on(b.peer_id()).spawn((i,)).get_timeout(WAIT).unwrap(), 2 * i);
    }
    let refs: Vec<_> = (0..10000u32).map(|i| a.task(&DOUBLE).on(b.peer_id()).spawn((i,))).collect();
    for (i, r) in refs.iter().enumerate() {
        assert_eq!(*r.get_timeout(WAIT).unwrap(), 2 * i as u32);
    }
    drop(refs);
    assert!(a.flush_mail(WAIT), "everything a sent was acked");
    assert!(b.flush_mail(WAIT), "everything b sent was acked");
}
