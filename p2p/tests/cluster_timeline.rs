//! The cluster's timeline: three in-process nodes on 127.0.0.1 (with a
//! cluster secret) record theirs; a DAG of remote tasks moves a large
//! object between them; `Node::cluster_timeline` on one of them, and on an
//! observer, merges every node's into one Chrome trace, checked against
//! the format's rules (as the core's `tests/timeline.rs` does), with every
//! task once on the node that ran it, transfers as spans on both nodes,
//! one process per node, and causality across clocks after the offsets.

use manta::Runtime;
use manta_p2p::{Node, Registry, RemoteFn};
use serde_json::Value;
use std::collections::HashMap;
use std::time::Duration;

#[path = "../../tests/support/trace_schema.rs"]
mod trace_schema;
use trace_schema::{check_schema, events};

const WAIT: Duration = Duration::from_secs(30);
const KEY: [u8; 32] = [0x37; 32];
/// Bigger than one chunk's first reply, so it comes over the bulk lane.
const BIG: usize = 6 << 20;

static MAKE: RemoteFn<(usize,), Vec<u8>> = RemoteFn::new("make", |(n,)| (0..n).map(|i| (i % 251) as u8).collect());
static DOUBLE: RemoteFn<(u32,), u32> = RemoteFn::new("double", |(x,)| 2 * x);
static MEASURE: RemoteFn<(Vec<u8>, u32), usize> = RemoteFn::new("measure", |(v, x)| v.len() + x as usize);

fn registry() -> Registry {
    Registry::new().function(&MAKE).function(&DOUBLE).function(&MEASURE)
}

fn node(bootstrap: Option<&Node>, observer: bool) -> Node {
    let rt = Runtime::builder().num_cpus(1).build().unwrap();
    let mut b = Node::builder(rt)
        .listen("/ip4/127.0.0.1/tcp/0".parse().unwrap())
        .heartbeat(Duration::from_millis(100))
        .secret(KEY)
        .observer(observer)
        .timeline(!observer)
        .registry(registry());
    if let Some(n) = bootstrap {
        b = b.bootstrap(n.listen_addrs()[0].clone());
    }
    b.start().unwrap()
}

/// The `X` slices of category `cat`.
fn slices<'a>(evs: &'a [Value], cat: &str) -> Vec<&'a Value> {
    evs.iter().filter(|e| e["ph"] == "X" && e["cat"] == cat).collect()
}

#[test]
fn a_dag_across_three_nodes_is_one_trace() {
    let a = node(None, false);
    let b = node(Some(&a), false);
    let c = node(Some(&a), false);
    for n in [&a, &b, &c] {
        n.wait_for_peers(2, WAIT).unwrap();
    }
    // make on B, double on C, measure on C (reads make's 6 MiB from B).
    let big = a.task(&MAKE).on(b.peer_id()).spawn((BIG,));
    let two = a.task(&DOUBLE).on(c.peer_id()).spawn((1,));
    let m = a.task(&MEASURE).on(c.peer_id()).spawn((&big, &two));
    assert_eq!(*m.get().unwrap(), BIG + 2);
    // And A reads the big object itself (another transfer, B to A).
    assert_eq!(big.get().unwrap().len(), BIG);

    let trace = a.cluster_timeline(WAIT).unwrap();
    assert!(trace.missing.is_empty(), "{:?}", trace.missing);
    assert_eq!(trace.nodes.len(), 3);
    let pid_of: HashMap<String, u64> = trace.nodes.iter().map(|n| (n.peer.to_string(), u64::from(n.pid))).collect();
    let pid = |n: &Node| pid_of[&n.peer_id().to_string()];
    assert_eq!(pid(&a), 1, "the collector is the first process");

    let evs = events(&trace.json);
    check_schema(&evs);
    // One process per node, named by its metadata event.
    let names: HashMap<u64, &str> = evs
        .iter()
        .filter(|e| e["ph"] == "M" && e["name"] == "process_name")
        .map(|e| (e["pid"].as_u64().unwrap(), e["args"]["name"].as_str().unwrap()))
        .collect();
    assert_eq!(names.len(), 3, "{names:?}");
    for n in [&a, &b, &c] {
        let name = names[&pid(n)];
        let id = n.peer_id().to_string();
        assert!(name.starts_with(&id[id.len() - 8..]), "{name} names {id}");
        assert!(name.contains("127.0.0.1"), "{name} has the listen address");
    }
    // Every task of the DAG once, on the node that ran it.
    let tasks = slices(&evs, "task");
    for (name, on) in [("make", &b), ("double", &c), ("measure", &c)] {
        let found: Vec<_> = tasks.iter().filter(|e| e["name"] == name).collect();
        assert_eq!(found.len(), 1, "{name} appears once: {found:?}");
        assert_eq!(found[0]["pid"].as_u64(), Some(pid(on)), "{name} on its node");
    }
    // The big object's transfers (B made it; A, its owner, and C read it,
    // each from B or from a node that already has it): every receive is a
    // span on the reader and has the holder's sends as spans on the
    // holder, and no receive ends before its first send began (after the
    // offsets, which are within half a loopback round trip: far below the
    // bound).
    let make_id = tasks.iter().find(|e| e["name"] == "make").unwrap()["args"]["id"].as_str().unwrap().to_string();
    let moves: Vec<_> = slices(&evs, "transfer").into_iter().filter(|e| e["args"]["id"] == make_id.as_str()).collect();
    let pid_by_id = |id: &str| pid_of.get(id).copied();
    let receives: Vec<_> = moves.iter().filter(|e| e["name"] == "receive").collect();
    for n in [&a, &c] {
        assert!(receives.iter().any(|r| r["pid"].as_u64() == Some(pid(n))), "a receive on each reader: {moves:?}");
    }
    for r in &receives {
        assert!(r["args"]["bytes"].as_u64().is_some_and(|x| x as usize >= BIG), "{r}");
        let holder = pid_by_id(r["args"]["peer"].as_str().unwrap()).expect("the holder is in the trace");
        let reader = trace.nodes.iter().find(|n| u64::from(n.pid) == r["pid"].as_u64().unwrap()).unwrap();
        let sends: Vec<_> = moves
            .iter()
            .filter(|s| s["name"] == "send" && s["pid"].as_u64() == Some(holder))
            .filter(|s| s["args"]["peer"].as_str() == Some(reader.peer.to_string().as_str()))
            .collect();
        assert!(!sends.is_empty(), "the holder's sends to the reader are in the trace: {moves:?}");
        let recv_end = r["ts"].as_f64().unwrap() + r["dur"].as_f64().unwrap();
        let first_send = sends.iter().map(|s| s["ts"].as_f64().unwrap()).fold(f64::MAX, f64::min);
        // 50 ms, in µs.
        assert!(recv_end >= first_send - 50_000.0, "receive ends at {recv_end} µs, send began at {first_send}");
    }
    // A's submission of make is a slice on A, with an arrow to make's run
    // on B.
    let submits = slices(&evs, "submit");
    assert!(
        submits.iter().any(|e| e["pid"].as_u64() == Some(pid(&a)) && e["args"]["id"] == make_id.as_str()),
        "A's submission of make: {submits:?}"
    );
    let flow_ends: HashMap<u64, &Value> =
        evs.iter().filter(|e| e["ph"] == "f").map(|e| (e["id"].as_u64().unwrap(), e)).collect();
    let make = tasks.iter().find(|e| e["name"] == "make").unwrap();
    let from_a = evs.iter().filter(|e| e["ph"] == "s" && e["pid"].as_u64() == Some(pid(&a))).any(|s| {
        let f = flow_ends[&s["id"].as_u64().unwrap()];
        f["pid"].as_u64() == Some(pid(&b)) && f["ts"] == make["ts"] && f["tid"] == make["tid"]
    });
    assert!(from_a, "an arrow from A's submission to make's run on B");
    // measure's inputs came from other processes: arrows cross them.
    let cross = evs.iter().filter(|e| e["ph"] == "f" && e["pid"].as_u64() == Some(pid(&c))).count();
    assert!(cross >= 2, "arrows from make and double into C");

    // An observer (holding the secret) collects every member, not itself.
    let o = node(Some(&a), true);
    o.wait_for_peers(3, WAIT).unwrap();
    let seen = o.cluster_timeline(WAIT).unwrap();
    assert!(seen.missing.is_empty(), "{:?}", seen.missing);
    let mut peers: Vec<String> = seen.nodes.iter().map(|n| n.peer.to_string()).collect();
    peers.sort();
    let mut want: Vec<String> = [&a, &b, &c].iter().map(|n| n.peer_id().to_string()).collect();
    want.sort();
    assert_eq!(peers, want);
    check_schema(&events(&seen.json));
}

#[test]
fn a_member_that_is_gone_is_missing_not_an_error() {
    let a = node(None, false);
    let b = node(Some(&a), false);
    a.wait_for_peers(1, WAIT).unwrap();
    b.wait_for_peers(1, WAIT).unwrap();
    assert_eq!(*a.task(&DOUBLE).on(b.peer_id()).spawn((4,)).get().unwrap(), 8);
    b.shutdown();
    // Whether A has declared B dead yet or not, B is missing.
    let trace = a.cluster_timeline(Duration::from_secs(2)).unwrap();
    assert_eq!(trace.nodes.len(), 1);
    assert_eq!(trace.missing.len(), 1, "{:?}", trace.missing);
    assert_eq!(trace.missing[0].peer, b.peer_id());
    check_schema(&events(&trace.json));
}
