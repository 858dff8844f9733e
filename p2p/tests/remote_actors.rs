//! Remote actors and cluster-wide reference counting on three in-process
//! nodes: the seed's Counter created on one node and driven from another,
//! named actors found through the DHT, resource placement of actors,
//! every node's store back at its baseline after a distributed job, actors
//! restarted elsewhere when their node dies, and actor calls bounded by a
//! host's back-pressure.

use manta::{Error, ObjectRef, Runtime};
use manta_p2p::{ActorClass, ActorHandle, Method, Node, Registry, RemoteFn};
use std::time::Duration;

mod common;

const WAIT: Duration = Duration::from_secs(30);

/// The seed's `Counter`: `value` starts at 0, `increment` returns it + 1.
struct Counter {
    value: i64,
}

static COUNTER: ActorClass<(), Counter> = ActorClass::new("Counter", |()| Counter { value: 0 });
static INCREMENT: Method<Counter, (), i64> = Method::new("Counter.increment", |c, ()| {
    c.value += 1;
    c.value
});
static ADD_TO: Method<Counter, (i64,), i64> = Method::new("Counter.add", |c, (n,)| {
    c.value += n;
    c.value
});
static WHERE: Method<Counter, (), String> =
    Method::new("Counter.where", |_, ()| Node::current().expect("on a node").peer_id().to_string());

static FRAGILE: ActorClass<(i64,), Counter> = ActorClass::new("Fragile", |(start,)| {
    assert!(start >= 0, "a counter cannot start below zero");
    Counter { value: start }
});
/// Registered on no node.
static GHOST: ActorClass<(), Counter> = ActorClass::new("Ghost", |()| Counter { value: 0 });
/// Registered on no node.
static NOWHERE: Method<Counter, (), i64> = Method::new("Counter.nowhere", |c, ()| c.value);
/// Panics (the actor, started from a value-less class with no restarts,
/// dies with it).
static EXPLODE: Method<Counter, (), i64> = Method::new("Counter.explode", |_, ()| panic!("exploded"));

static MAKE: RemoteFn<(usize,), Vec<u8>> = RemoteFn::new("make", |(n,)| vec![7; n]);
static LEN2: RemoteFn<(Vec<u8>, Vec<u8>), usize> = RemoteFn::new("len2", |(a, b)| a.len() + b.len());

/// Blocks while `GATE` is closed; records the most peer work its node held
/// when a call started.
static GATED: Method<Counter, (), i64> = Method::new("Counter.gated", |c, ()| {
    let held = Node::current().expect("on a node").accepted_work();
    MOST_HELD.fetch_max(held, std::sync::atomic::Ordering::SeqCst);
    let (open, cv) = &GATE;
    let mut g = open.lock().unwrap();
    while !*g {
        g = cv.wait(g).unwrap();
    }
    c.value += 1;
    c.value
});
static GATE: (std::sync::Mutex<bool>, std::sync::Condvar) = (std::sync::Mutex::new(false), std::sync::Condvar::new());
static MOST_HELD: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

fn registry() -> Registry {
    Registry::new()
        .actor(&COUNTER)
        .method(&GATED)
        .actor(&FRAGILE)
        .method(&INCREMENT)
        .method(&EXPLODE)
        .method(&ADD_TO)
        .method(&WHERE)
        .function(&MAKE)
        .function(&LEN2)
}

fn builder(bootstrap: Option<&Node>, gpu: bool) -> manta_p2p::NodeBuilder {
    let mut rt = Runtime::builder().num_cpus(1);
    if gpu {
        rt = rt.resource("GPU", 1.0);
    }
    let mut b = Node::builder(rt.build().unwrap())
        .listen("/ip4/127.0.0.1/tcp/0".parse().unwrap())
        .heartbeat(Duration::from_millis(100))
        .registry(registry());
    if let Some(n) = bootstrap {
        b = b.bootstrap(n.listen_addrs()[0].clone());
    }
    b
}

fn node(bootstrap: Option<&Node>, gpu: bool) -> Node {
    builder(bootstrap, gpu).start().unwrap()
}

fn three() -> (Node, Node, Node) {
    let a = node(None, false);
    let b = node(Some(&a), false);
    let c = node(Some(&a), true);
    for n in [&a, &b, &c] {
        n.wait_for_peers(2, WAIT).unwrap();
    }
    (a, b, c)
}

#[test]
fn the_seed_counter_created_remotely_counts_from_another_node() {
    let (a, b, c) = three();
    // B creates it on C; A drives it through a handle it received.
    let on_c: ActorHandle<Counter> = b.actor_builder(&COUNTER).on(c.peer_id()).spawn(());
    assert_eq!(on_c.host(), c.peer_id());
    let from_a: ActorHandle<Counter> = a.decode(&b.encode(&on_c).unwrap()).unwrap();
    let id1 = from_a.call(&INCREMENT, ());
    let id2 = from_a.call(&INCREMENT, ());
    assert_eq!((*id1.get().unwrap(), *id2.get().unwrap()), (1, 2));
    let refs: Vec<ObjectRef<i64>> = (0..4).map(|_| from_a.call(&INCREMENT, ())).collect();
    let values: Vec<i64> = a.runtime().get_all(&refs).unwrap().iter().map(|v| **v).collect();
    assert_eq!(values, [3, 4, 5, 6]);
    // Arguments may be refs made anywhere; calls still run in order.
    let ten = a.runtime().put(10i64).unwrap();
    assert_eq!(*from_a.call(&ADD_TO, (&ten,)).get().unwrap(), 16);
    assert_eq!(*from_a.call(&WHERE, ()).get().unwrap(), c.peer_id().to_string());
}

#[test]
fn actors_are_placed_by_resources_and_named_ones_are_found_anywhere() {
    let (a, b, c) = three();
    let gpu = a.actor_builder(&COUNTER).resource("GPU", 1.0).name("gpu-counter").spawn(());
    assert_eq!(gpu.host(), c.peer_id());
    assert_eq!(*gpu.call(&INCREMENT, ()).get().unwrap(), 1);
    let found = b.get_actor(&COUNTER, "gpu-counter", WAIT).unwrap();
    assert_eq!(found.id(), gpu.id());
    assert_eq!(*found.call(&INCREMENT, ()).get().unwrap(), 2);
    // No node has a TPU: the handle comes back anyway (as a local one
    // does), and every call on it fails, naming the resource.
    let nowhere = a.actor_builder(&COUNTER).resource("TPU", 1.0).spawn(());
    for _ in 0..2 {
        match nowhere.call(&INCREMENT, ()).get() {
            Err(Error::Infeasible { resource, .. }) => assert_eq!(&*resource, "TPU"),
            other => panic!("expected Infeasible naming TPU, got {other:?}"),
        }
    }
    // Also from another node that was handed it.
    let elsewhere: ActorHandle<Counter> = b.decode(&a.encode(&nowhere).unwrap()).unwrap();
    assert!(matches!(elsewhere.call(&INCREMENT, ()).get(), Err(Error::Infeasible { .. })));
    let local = a.actor_builder(&COUNTER).spawn(());
    assert_eq!(local.host(), a.peer_id(), "with room here, an actor stays here");
    assert_eq!(*local.call(&INCREMENT, ()).get().unwrap(), 1);
}

#[test]
fn an_actor_ends_with_its_creators_handle() {
    let (a, b, c) = three();
    let made = b.actor_builder(&COUNTER).on(c.peer_id()).spawn(());
    let other: ActorHandle<Counter> = a.decode(&b.encode(&made).unwrap()).unwrap();
    assert_eq!(*other.call(&INCREMENT, ()).get().unwrap(), 1);
    drop(made);
    assert!(b.flush_mail(WAIT));
    assert!(matches!(other.call(&INCREMENT, ()).get(), Err(Error::ActorDead { .. })));
}

#[test]
fn after_a_distributed_job_every_store_is_back_at_its_baseline() {
    let (a, b, c) = three();
    let nodes = [&a, &b, &c];
    let baseline: Vec<usize> = nodes.iter().map(|n| n.runtime().store_stats().bytes_in_memory).collect();
    {
        let small = a.runtime().put(vec![1u8; 2 << 20]).unwrap();
        let big = a.task(&MAKE).on(b.peer_id()).spawn((3 << 20,));
        let sum = a.task(&LEN2).on(c.peer_id()).spawn((&small, &big));
        assert_eq!(*sum.get().unwrap(), 5 << 20);
        // B's result read on A too (a replica here) and by a task on B.
        assert_eq!(big.get().unwrap().len(), 3 << 20);
        let again = a.task(&LEN2).on(b.peer_id()).spawn((&big, &big));
        assert_eq!(*again.get().unwrap(), 6 << 20);
        let counter = a.actor_builder(&COUNTER).on(c.peer_id()).spawn(());
        assert_eq!(*counter.call(&ADD_TO, (5,)).get().unwrap(), 5);
        let used: usize = nodes.iter().map(|n| n.runtime().store_stats().bytes_in_memory).sum();
        assert!(used >= baseline.iter().sum::<usize>() + (5 << 20), "the job used memory on the nodes");
    }
    // Every ref is gone on A: the releases reach B and C, which drop
    // their pins; anything they release in turn is flushed next.
    for _ in 0..2 {
        for n in nodes {
            assert!(n.flush_mail(WAIT));
        }
    }
    for (n, base) in nodes.iter().zip(&baseline) {
        assert_eq!(n.runtime().store_stats().bytes_in_memory, *base, "store of {} back to baseline", n.peer_id());
        assert_eq!(n.pinned_objects(), 0, "nothing pinned on {}", n.peer_id());
    }
}

#[test]
fn a_failed_constructor_or_an_unknown_method_is_an_error_not_a_hang() {
    let (a, b, _c) = three();
    let broken: ActorHandle<Counter> = a.actor_builder(&FRAGILE).on(b.peer_id()).spawn((-1,));
    match broken.call(&INCREMENT, ()).get() {
        Err(Error::ActorDead { reason, .. }) => assert!(reason.contains("below zero"), "{reason}"),
        other => panic!("expected ActorDead from the constructor's panic, got {other:?}"),
    }
    let fine: ActorHandle<Counter> = a.actor_builder(&FRAGILE).on(b.peer_id()).spawn((41,));
    match fine.call(&NOWHERE, ()).get() {
        Err(Error::UnknownFunction { name, .. }) => assert_eq!(&*name, "Counter.nowhere"),
        other => panic!("expected UnknownFunction, got {other:?}"),
    }
    assert_eq!(*fine.call(&INCREMENT, ()).get().unwrap(), 42, "the actor still works");
    // A method's panic names the method by its registered name.
    let e = fine.call(&EXPLODE, ()).get().unwrap_err();
    assert!(matches!(e, Error::TaskPanicked { ref task, .. } if task.contains("Counter.explode")), "{e:?}");
    let ghost: ActorHandle<Counter> = a.actor_builder(&GHOST).on(b.peer_id()).spawn(());
    match ghost.call(&INCREMENT, ()).get() {
        Err(Error::ActorDead { reason, .. }) => assert!(reason.contains("`Ghost` is not registered"), "{reason}"),
        other => panic!("expected ActorDead naming the type, got {other:?}"),
    }
}

#[test]
fn an_actor_whose_node_dies_restarts_elsewhere_from_its_constructor() {
    // A declares a silent peer dead after 800 ms; B and C have a GPU.
    let a = builder(None, false).failure_timeout(Duration::from_millis(800)).start().unwrap();
    let b = node(Some(&a), true);
    let c = node(Some(&a), true);
    for n in [&a, &b, &c] {
        n.wait_for_peers(2, WAIT).unwrap();
    }
    let on_b =
        |restarts| a.actor_builder(&COUNTER).resource("GPU", 1.0).max_restarts(restarts).on(b.peer_id()).spawn(());
    let (restartable, plain) = (on_b(1), on_b(0));
    assert_eq!(*restartable.call(&INCREMENT, ()).get_timeout(WAIT).unwrap(), 1);
    assert_eq!(*restartable.call(&INCREMENT, ()).get_timeout(WAIT).unwrap(), 2);
    assert_eq!(*plain.call(&INCREMENT, ()).get_timeout(WAIT).unwrap(), 1);
    common::stop_and_see_die(&b, &a, WAIT);
    // Restarted on the other node with a GPU, with fresh state.
    assert_eq!(restartable.host(), c.peer_id());
    assert_eq!(*restartable.call(&INCREMENT, ()).get_timeout(WAIT).unwrap(), 1);
    assert_eq!(*restartable.call(&WHERE, ()).get_timeout(WAIT).unwrap(), c.peer_id().to_string());
    // Without restarts it is dead, and says so at once.
    match plain.call(&INCREMENT, ()).get_timeout(WAIT).map(|v| *v) {
        Err(Error::ActorDead { reason, .. }) => assert!(reason.contains("died"), "{reason}"),
        other => panic!("expected ActorDead, got {other:?}"),
    }
    // Its restart is used up: C dying too ends it.
    common::stop_and_see_die(&c, &a, WAIT);
    assert!(matches!(restartable.call(&INCREMENT, ()).get_timeout(WAIT), Err(Error::ActorDead { .. })));
}

#[test]
fn actor_calls_from_peers_are_bounded_and_resent_in_order_when_busy() {
    let a = node(None, false);
    let b = builder(Some(&a), true).max_accepted_tasks(4).start().unwrap();
    a.wait_for_peers(1, WAIT).unwrap();
    b.wait_for_peers(1, WAIT).unwrap();
    let counter = a.actor_builder(&COUNTER).on(b.peer_id()).spawn(());
    // 20 calls while the first blocks: B holds at most 4 and refuses the
    // rest as busy; A sends those again until they fit.
    let calls: Vec<ObjectRef<i64>> = (0..20).map(|_| counter.call(&GATED, ())).collect();
    let deadline = std::time::Instant::now() + WAIT;
    while b.accepted_work() < 4 {
        assert!(std::time::Instant::now() < deadline, "B never filled up");
        std::thread::yield_now();
    }
    assert_eq!(b.accepted_work(), 4);
    *GATE.0.lock().unwrap() = true;
    GATE.1.notify_all();
    let got: Vec<i64> = calls.iter().map(|r| *r.get_timeout(WAIT).unwrap()).collect();
    assert_eq!(got, (1..=20).collect::<Vec<_>>(), "every call ran once, in order");
    assert!(MOST_HELD.load(std::sync::atomic::Ordering::SeqCst) <= 4, "B held more than its bound");
}
