//! Actors and resources in a cluster (issue 14, cluster part), on
//! in-process nodes over 127.0.0.1: an actor no live node can host is
//! `Infeasible`, like a task; an actor with restarts whose node died while
//! no other node has its resource waits (Ray's pending actor) and restarts
//! when such a node joins, and gives up after its restart timeout with an
//! error that says why.

use manta::{Error, Runtime};
use manta_p2p::{ActorClass, ActorHandle, Method, Node, Registry};
use std::time::Duration;

mod common;

const WAIT: Duration = Duration::from_secs(30);

struct Counter {
    value: i64,
}

static COUNTER: ActorClass<(), Counter> = ActorClass::new("Counter", |()| Counter { value: 0 });
static INCREMENT: Method<Counter, (), i64> = Method::new("Counter.increment", |c, ()| {
    c.value += 1;
    c.value
});
static WHERE: Method<Counter, (), String> =
    Method::new("Counter.where", |_, ()| Node::current().expect("on a node").peer_id().to_string());

fn registry() -> Registry {
    Registry::new().actor(&COUNTER).method(&INCREMENT).method(&WHERE)
}

/// A one-CPU node, with one GPU if `gpu`; fast failure detection.
fn node(bootstrap: Option<&Node>, gpu: bool) -> Node {
    let mut rt = Runtime::builder().num_cpus(1);
    if gpu {
        rt = rt.resource("GPU", 1.0);
    }
    let mut b = Node::builder(rt.build().unwrap())
        .listen("/ip4/127.0.0.1/tcp/0".parse().unwrap())
        .heartbeat(Duration::from_millis(100))
        .failure_timeout(Duration::from_millis(800))
        .registry(registry());
    if let Some(n) = bootstrap {
        b = b.bootstrap(n.listen_addrs()[0].clone());
    }
    b.start().unwrap()
}

#[test]
fn an_actor_no_live_node_can_host_is_infeasible_naming_the_resource() {
    let a = node(None, false);
    let b = node(Some(&a), true);
    a.wait_for_peers(1, WAIT).unwrap();
    b.wait_for_peers(1, WAIT).unwrap();
    let tpu: ActorHandle<Counter> = a.actor_builder(&COUNTER).resource("TPU", 1.0).spawn(());
    match tpu.call(&INCREMENT, ()).get_timeout(WAIT) {
        Err(Error::Infeasible { resource, requested, .. }) => {
            assert_eq!(&*resource, "TPU");
            assert_eq!(requested, 1.0);
        }
        other => panic!("expected Infeasible naming TPU, got {other:?}"),
    }
    let two: ActorHandle<Counter> = a.actor_builder(&COUNTER).resource("GPU", 2.0).spawn(());
    match two.call(&INCREMENT, ()).get_timeout(WAIT) {
        Err(Error::Infeasible { resource, total, .. }) => assert_eq!((&*resource, total), ("GPU", 1.0)),
        other => panic!("expected Infeasible naming GPU, got {other:?}"),
    }
    // Pinned here, where there is no GPU: the same error.
    let here: ActorHandle<Counter> = a.actor_builder(&COUNTER).resource("GPU", 1.0).on(a.peer_id()).spawn(());
    match here.call(&INCREMENT, ()).get_timeout(WAIT) {
        Err(Error::Infeasible { resource, .. }) => assert_eq!(&*resource, "GPU"),
        other => panic!("expected Infeasible naming GPU, got {other:?}"),
    }
    // One that fits runs on B.
    let gpu: ActorHandle<Counter> = a.actor_builder(&COUNTER).resource("GPU", 1.0).spawn(());
    assert_eq!(*gpu.call(&WHERE, ()).get_timeout(WAIT).unwrap(), b.peer_id().to_string());
}

#[test]
fn an_actor_waits_for_a_node_with_its_resource_and_restarts_there() {
    let a = node(None, false);
    let b = node(Some(&a), true);
    a.wait_for_peers(1, WAIT).unwrap();
    b.wait_for_peers(1, WAIT).unwrap();
    let actor: ActorHandle<Counter> = a.actor_builder(&COUNTER).resource("GPU", 1.0).max_restarts(1).spawn(());
    assert_eq!(*actor.call(&INCREMENT, ()).get_timeout(WAIT).unwrap(), 1);
    assert_eq!(actor.host(), b.peer_id());
    common::stop_and_see_die(&b, &a, WAIT);
    // No live node has a GPU now: calls wait for one (in order).
    let waiting: Vec<_> = (0..3).map(|_| actor.call(&INCREMENT, ())).collect();
    let there = actor.call(&WHERE, ());
    assert!(!waiting[0].is_ready());
    // A node with a GPU joins: the actor restarts there, fresh.
    let c = node(Some(&a), true);
    let got: Vec<i64> = waiting.iter().map(|r| *r.get_timeout(WAIT).unwrap()).collect();
    assert_eq!(got, vec![1, 2, 3], "the calls made meanwhile ran on the fresh actor, in order");
    assert_eq!(*there.get_timeout(WAIT).unwrap(), c.peer_id().to_string());
    assert_eq!(actor.host(), c.peer_id());
    assert_eq!(*actor.call(&INCREMENT, ()).get_timeout(WAIT).unwrap(), 4);
}

#[test]
fn a_pending_restart_gives_up_after_its_timeout_and_says_why() {
    let a = node(None, false);
    let b = node(Some(&a), true);
    a.wait_for_peers(1, WAIT).unwrap();
    b.wait_for_peers(1, WAIT).unwrap();
    let actor: ActorHandle<Counter> = a
        .actor_builder(&COUNTER)
        .resource("GPU", 1.0)
        .max_restarts(3)
        .restart_timeout(Duration::from_millis(300))
        .spawn(());
    assert_eq!(*actor.call(&INCREMENT, ()).get_timeout(WAIT).unwrap(), 1);
    common::stop_and_see_die(&b, &a, WAIT);
    let waiting = actor.call(&INCREMENT, ());
    for r in [waiting, actor.call(&INCREMENT, ())] {
        match r.get_timeout(WAIT) {
            Err(Error::ActorDead { reason, .. }) => {
                assert!(reason.contains("GPU") && reason.contains("restart"), "{reason}")
            }
            other => panic!("expected ActorDead saying why, got {other:?}"),
        }
    }
}
