//! The message lane ("fast lane", `transport::lanes`) between honest nodes
//! on 127.0.0.1: small gets and task/actor mail go over it once it is up
//! (with the right values, actor calls in order), what it does not serve
//! small comes over libp2p, a node without it, on either side, still does
//! everything over libp2p, and when lanes fail with gets and mail in
//! flight, everything completes over libp2p, in order, once.
//!
//! Invariants: only 127.0.0.1; every wait is bounded; the lane comes up in
//! the background after a first get, so the tests poll its stats (a
//! bounded poll, never a sleep standing in for an event).

#[allow(dead_code)] // a lane helper only
mod common;

use manta::{ObjectRef, Runtime};
use manta_p2p::{ActorClass, FastLaneStats, Method, Node, NodeBuilder, Registry, RemoteFn};
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(30);

static ECHO: RemoteFn<(u64,), u64> = RemoteFn::new("lane.echo", |(x,)| x);
static BIG: RemoteFn<(Vec<u8>,), usize> = RemoteFn::new("lane.big", |(v,)| v.len());

/// Records every value it is given, in order.
struct Log(Vec<u64>);
static LOG: ActorClass<(), Log> = ActorClass::new("lane.Log", |()| Log(Vec::new()));
static PUSH: Method<Log, (u64,), usize> = Method::new("lane.Log.push", |l, (x,)| {
    l.0.push(x);
    l.0.len()
});
static ALL: Method<Log, (), Vec<u64>> = Method::new("lane.Log.all", |l, ()| l.0.clone());

fn registry() -> Registry {
    Registry::new().function(&ECHO).function(&BIG).actor(&LOG).method(&PUSH).method(&ALL)
}

fn node(boot: Option<&Node>, f: impl FnOnce(NodeBuilder) -> NodeBuilder) -> Node {
    let rt = Runtime::builder().num_cpus(1).build().expect("runtime");
    let mut b = Node::builder(rt)
        .listen("/ip4/127.0.0.1/tcp/0".parse().expect("addr"))
        .heartbeat(Duration::from_millis(100))
        .registry(registry());
    if let Some(n) = boot {
        b = b.bootstrap(n.listen_addrs()[0].clone());
    }
    f(b).start().expect("node starts")
}

/// A pair: `a` holds, `b` reads; both joined.
fn pair(fa: impl FnOnce(NodeBuilder) -> NodeBuilder, fb: impl FnOnce(NodeBuilder) -> NodeBuilder) -> (Node, Node) {
    let a = node(None, fa);
    let b = node(Some(&a), fb);
    a.wait_for_peers(1, WAIT).expect("a sees b");
    b.wait_for_peers(1, WAIT).expect("b sees a");
    (a, b)
}

/// A value put on `a`, read on `b`.
fn get_on(a: &Node, b: &Node, value: Vec<u8>) -> Vec<u8> {
    let r = a.runtime().put(value).expect("put");
    let there: ObjectRef<Vec<u8>> = b.decode_ref(&a.encode_ref(&r).expect("encode")).expect("decode");
    there.get_timeout(WAIT).expect("the get completes").to_vec()
}

/// Polls `n`'s lane stats until `done` holds (bounded).
fn lane_until(n: &Node, done: impl Fn(&FastLaneStats) -> bool) -> FastLaneStats {
    common::lane_until(n, WAIT, done)
}

fn bytes(len: usize, seed: u8) -> Vec<u8> {
    (0..len).map(|i| (i as u8).wrapping_mul(7).wrapping_add(seed)).collect()
}

#[test]
fn small_gets_go_over_the_lane_once_it_is_up() {
    let (a, b) = pair(|x| x, |x| x);
    // The first get asks for the lane (and itself goes over libp2p).
    assert_eq!(get_on(&a, &b, bytes(64, 1)), bytes(64, 1));
    let up = lane_until(&b, |s| s.dialled >= 1);
    assert_eq!(up.dialled, 1, "b dialled a lane to a: {up:?}");
    assert_eq!(lane_until(&a, |s| s.accepted >= 1).accepted, 1);
    let before = b.fast_lane_stats().gets;
    for k in 0..50u8 {
        let v = bytes(64 + k as usize, k);
        assert_eq!(get_on(&a, &b, v.clone()), v);
    }
    let after = b.fast_lane_stats();
    assert_eq!(after.gets - before, 50, "every small get came over the lane: {after:?}");
    // Too big for a lane frame: not served small, so it comes over libp2p,
    // whole and right; the lane stays up.
    let big = bytes(200 << 10, 9);
    assert_eq!(get_on(&a, &b, big.clone()), big);
    let s = b.fast_lane_stats();
    assert_eq!((s.gets, s.ended, s.up), (after.gets, 0, 1), "{s:?}");
    // A's side of the lane only answers; it dialled nothing.
    let sa = a.fast_lane_stats();
    assert_eq!((sa.dialled, sa.gets, sa.refused, sa.busy), (0, 0, 0, 0), "{sa:?}");
}

#[test]
fn fast_lane_off_reads_over_libp2p_and_asks_for_no_lane() {
    let (a, b) = pair(|x| x, |x| x.fast_lane(false));
    for k in 0..20u8 {
        assert_eq!(get_on(&a, &b, bytes(64, k)), bytes(64, k));
    }
    assert_eq!(b.fast_lane_stats(), FastLaneStats::default());
    assert_eq!(a.fast_lane_stats().accepted, 0);
}

#[test]
fn a_peer_without_the_lane_is_read_over_libp2p() {
    // `a` does not speak `/manta/lane/1` at all (the protocol is not
    // registered): `b`'s setup fails, and every get still completes.
    let (a, b) = pair(|x| x.fast_lane(false), |x| x);
    assert_eq!(get_on(&a, &b, bytes(64, 1)), bytes(64, 1));
    let s = lane_until(&b, |s| s.failed_setups >= 1);
    assert_eq!((s.failed_setups, s.dialled, s.up), (1, 0, 0), "{s:?}");
    for k in 0..20u8 {
        assert_eq!(get_on(&a, &b, bytes(100, k)), bytes(100, k));
    }
    let s = b.fast_lane_stats();
    assert_eq!((s.failed_setups, s.gets), (1, 0), "not asked again so soon: {s:?}");
    // Without the bulk lane there is no listener, so no message lane either.
    let (c, d) = pair(|x| x.bulk_lane(false), |x| x);
    assert_eq!(get_on(&c, &d, bytes(64, 2)), bytes(64, 2));
    let s = lane_until(&d, |s| s.failed_setups >= 1);
    assert_eq!((s.failed_setups, s.dialled), (1, 0), "{s:?}");
    assert_eq!(get_on(&c, &d, bytes(64, 3)), bytes(64, 3));
}

#[test]
fn a_node_that_stops_ends_its_lanes_and_its_peer_falls_back() {
    let (a, b) = pair(|x| x, |x| x);
    let c = node(Some(&a), |x| x);
    c.wait_for_peers(2, WAIT).expect("c joins");
    assert_eq!(get_on(&a, &b, bytes(64, 1)), bytes(64, 1));
    assert_eq!(lane_until(&b, |s| s.dialled >= 1).dialled, 1);
    // c holds an object b reads: b dials c's lane too.
    assert_eq!(get_on(&c, &b, bytes(64, 2)), bytes(64, 2));
    assert_eq!(lane_until(&b, |s| s.dialled >= 2).dialled, 2);
    assert_eq!(get_on(&c, &b, bytes(64, 3)), bytes(64, 3));
    c.shutdown();
    // b's lane to c ends (its reader sees the close); the one to a stays.
    let s = lane_until(&b, |s| s.ended >= 1);
    assert_eq!((s.ended, s.up), (1, 1), "{s:?}");
    assert_eq!(get_on(&a, &b, bytes(64, 4)), bytes(64, 4));
}

/// Runs `n` echo tasks from `a` on `b`, one at a time, checking each.
fn echo_tasks(a: &Node, b: &Node, n: u64) {
    for i in 0..n {
        let r = a.task(&ECHO).on(b.peer_id()).spawn((i,));
        assert_eq!(*r.get_timeout(WAIT).expect("the task completes"), i);
    }
}

#[test]
fn task_mail_goes_over_the_lane_both_ways() {
    let (a, b) = pair(|x| x, |x| x);
    echo_tasks(&a, &b, 5);
    // Each side dials its own lane for its mail (submissions one way,
    // completions the other).
    assert!(lane_until(&a, |s| s.dialled >= 1).dialled >= 1);
    assert!(lane_until(&b, |s| s.dialled >= 1).dialled >= 1);
    let (sa, sb) = (a.fast_lane_stats(), b.fast_lane_stats());
    echo_tasks(&a, &b, 100);
    let (ea, eb) = (a.fast_lane_stats(), b.fast_lane_stats());
    // (Every submission and nearly every completion: a completion may
    // share a batch, or go while the outbox is still on its stream.)
    assert!(ea.mail_sent - sa.mail_sent >= 100, "submissions on the lane: {sa:?} -> {ea:?}");
    assert!(eb.mail_received - sb.mail_received >= 100, "{sb:?} -> {eb:?}");
    assert!(eb.mail_sent - sb.mail_sent >= 90, "completions on the lane: {sb:?} -> {eb:?}");
    // A submission too big for a lane frame goes over libp2p, in turn.
    let big = a.task(&BIG).on(b.peer_id()).spawn((vec![1u8; 200 << 10],));
    let after = a.task(&ECHO).on(b.peer_id()).spawn((7,));
    assert_eq!(*big.get_timeout(WAIT).expect("big task"), 200 << 10);
    assert_eq!(*after.get_timeout(WAIT).expect("next task"), 7);
    echo_tasks(&a, &b, 5);
    assert_eq!(a.fast_lane_stats().ended, 0);
}

#[test]
fn actor_calls_stay_in_order_on_the_lane_and_across_its_failure() {
    let (a, b) = pair(|x| x, |x| x);
    let log = a.actor_builder(&LOG).on(b.peer_id()).spawn(());
    let mut next = 0u64;
    // Calls one at a time (checked) until they go over a's lane.
    let one_by_one_until_on_lane = |next: &mut u64| {
        let (before, deadline) = (a.fast_lane_stats().mail_sent, Instant::now() + WAIT);
        while a.fast_lane_stats().mail_sent == before && Instant::now() < deadline {
            let n = *log.call(&PUSH, (*next,)).get_timeout(WAIT).expect("call completes");
            *next += 1;
            assert_eq!(n as u64, *next);
        }
        assert!(a.fast_lane_stats().mail_sent > before, "calls went over the lane: {:?}", a.fast_lane_stats());
    };
    one_by_one_until_on_lane(&mut next);
    // 300 calls made at once; the lanes break under them twice, with calls
    // in flight: they all complete, each applied once, in the order made.
    let first = next;
    let mut refs = Vec::new();
    for i in 0..300usize {
        refs.push(log.call(&PUSH, (next,)));
        next += 1;
        if i == 100 || i == 200 {
            let _ = refs[i - 50].get_timeout(WAIT).expect("call completes");
            a.break_fast_lanes();
            b.break_fast_lanes();
        }
    }
    for (i, r) in refs.iter().enumerate() {
        assert_eq!(*r.get_timeout(WAIT).expect("call completes") as u64, first + i as u64 + 1);
    }
    let all = log.call(&ALL, ()).get_timeout(WAIT).expect("log");
    assert_eq!(*all, (0..next).collect::<Vec<u64>>());
    assert!(a.fast_lane_stats().ended >= 1, "{:?}", a.fast_lane_stats());
    // The lane is asked for again (after a pause) and carries calls again.
    one_by_one_until_on_lane(&mut next);
    assert!(a.fast_lane_stats().dialled >= 2, "{:?}", a.fast_lane_stats());
    let all = log.call(&ALL, ()).get_timeout(WAIT).expect("log");
    assert_eq!(*all, (0..next).collect::<Vec<u64>>());
}

#[test]
fn gets_in_flight_when_the_lane_breaks_complete_over_libp2p() {
    let (a, b) = pair(|x| x, |x| x);
    assert_eq!(get_on(&a, &b, bytes(64, 1)), bytes(64, 1));
    assert_eq!(lane_until(&b, |s| s.dialled >= 1).dialled, 1);
    let refs: Vec<(Vec<u8>, ObjectRef<Vec<u8>>)> = (0..200u8)
        .map(|k| {
            let v = bytes(64 + k as usize, k);
            let r = a.runtime().put(v.clone()).expect("put");
            (v, b.decode_ref(&a.encode_ref(&r).expect("encode")).expect("decode"))
        })
        .collect();
    // Gets from several threads while b's lanes break under them.
    std::thread::scope(|s| {
        for chunk in refs.chunks(50) {
            s.spawn(move || {
                for (v, r) in chunk {
                    assert_eq!(&*r.get_timeout(WAIT).expect("get completes"), v);
                }
            });
        }
        b.break_fast_lanes();
    });
    assert!(b.fast_lane_stats().ended >= 1);
}
