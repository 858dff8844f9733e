//! Owner death, on in-process nodes (127.0.0.1, bootstrap, short failure
//! timeouts; an owner "dies" by shutting down, which its peers take as a
//! death at once):
//! - an object whose owner died stays readable for a ref another node
//!   already holds, if a live node holds a full copy (a replica);
//! - otherwise reading it fails at once with `Error::OwnerDied` naming the
//!   owner — also when the object was still being made (a task result the
//!   owner was waiting for), never a hang;
//! - a result that stayed on an executor declared dead before anyone read
//!   it is rebuilt by its (live) owner.

use manta::{Error, ObjectRef, Runtime};
use manta_p2p::{Node, Registry, RemoteFn};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

mod common;

const WAIT: Duration = Duration::from_secs(30);

/// A gate tasks wait at until the test opens it (bounded).
static GATE: (Mutex<bool>, Condvar) = (Mutex::new(false), Condvar::new());

fn open_gate() {
    *GATE.0.lock().unwrap_or_else(|p| p.into_inner()) = true;
    GATE.1.notify_all();
}

static GATED: RemoteFn<(u32,), Vec<u8>> = RemoteFn::new("gated", |(n,)| {
    let mut open = GATE.0.lock().unwrap_or_else(|p| p.into_inner());
    let deadline = Instant::now() + WAIT;
    while !*open && Instant::now() < deadline {
        open = GATE.1.wait_timeout(open, Duration::from_millis(100)).unwrap_or_else(|p| p.into_inner()).0;
    }
    vec![7u8; n as usize]
});
static BIG: RemoteFn<(u32,), Vec<u8>> = RemoteFn::new("big", |(n,)| (0..n).map(|i| (i % 251) as u8).collect());

fn registry() -> Registry {
    Registry::new().function(&GATED).function(&BIG)
}

fn node(boot: Option<&Node>, cpus: usize) -> Node {
    let rt = Runtime::builder().num_cpus(cpus).build().unwrap();
    let mut b = Node::builder(rt)
        .listen("/ip4/127.0.0.1/tcp/0".parse().unwrap())
        .heartbeat(Duration::from_millis(100))
        .failure_timeout(Duration::from_millis(1000))
        .registry(registry());
    if let Some(n) = boot {
        b = b.bootstrap(n.listen_addrs()[0].clone());
    }
    b.start().unwrap()
}

/// `n` nodes joined by bootstrap, each with `cpus[i]` CPUs.
fn cluster(cpus: &[usize]) -> Vec<Node> {
    let first = node(None, cpus[0]);
    let mut all = vec![first.clone()];
    for &c in &cpus[1..] {
        all.push(node(Some(&first), c));
    }
    for n in &all {
        n.wait_for_peers(cpus.len() - 1, WAIT).unwrap();
    }
    all
}

fn owner_died(e: &Error, owner: &Node) -> bool {
    matches!(e, Error::OwnerDied { owner: o, .. } if **o == *owner.peer_id().to_string())
}

#[test]
fn a_replica_on_a_live_node_keeps_an_object_readable_after_its_owner_died() {
    let n = cluster(&[1, 1, 1]);
    let (owner, replica_holder, reader) = (&n[0], &n[1], &n[2]);
    let value: Vec<u8> = (0..3_000_000u32).map(|i| (i % 253) as u8).collect();
    let r = owner.runtime().put(value.clone()).unwrap();
    let wire = owner.encode_ref(&r).unwrap();
    // One node reads it (a replica, announced in the DHT); another only
    // holds the ref.
    let at_holder: ObjectRef<Vec<u8>> = replica_holder.decode_ref(&wire).unwrap();
    assert_eq!(at_holder.get_timeout(WAIT).unwrap().len(), value.len());
    replica_holder.flush_announcements().unwrap();
    let at_reader: ObjectRef<Vec<u8>> = reader.decode_ref(&wire).unwrap();
    reader.flush_mail(WAIT);
    common::stop_and_see_die(owner, reader, WAIT);
    let t = Instant::now();
    let got = at_reader.get_timeout(WAIT).unwrap_or_else(|e| panic!("read after the owner died: {e}"));
    assert_eq!(*got, value);
    eprintln!("read from the replica after the owner died in {:?}", t.elapsed());
}

#[test]
fn an_object_only_its_dead_owner_held_fails_at_once_naming_the_owner() {
    let n = cluster(&[1, 1]);
    let (owner, reader) = (&n[0], &n[1]);
    let r = owner.runtime().put(vec![1u8; 500_000]).unwrap();
    let at_reader: ObjectRef<Vec<u8>> = reader.decode_ref(&owner.encode_ref(&r).unwrap()).unwrap();
    reader.flush_mail(WAIT);
    common::stop_and_see_die(owner, reader, WAIT);
    let t = Instant::now();
    let e = at_reader.get_timeout(WAIT).expect_err("nobody holds it");
    assert!(owner_died(&e, owner), "{e:?}");
    assert!(e.to_string().contains(&owner.peer_id().to_string()), "names the owner: {e}");
    eprintln!("OwnerDied after {:?}", t.elapsed());
}

#[test]
fn a_result_still_being_made_when_its_owner_dies_fails_instead_of_hanging() {
    // The owner has no CPU: the task runs on the worker, held at the gate.
    let n = cluster(&[0, 1, 1]);
    let (owner, reader) = (&n[0], &n[2]);
    let r = owner.spawn(&GATED, (200_000,));
    let at_reader: ObjectRef<Vec<u8>> = reader.decode_ref(&owner.encode_ref(&r).unwrap()).unwrap();
    reader.flush_mail(WAIT);
    // The reader is already waiting (the owner answers `Busy`) when the
    // owner goes.
    let waiting = std::thread::spawn(move || at_reader.get_timeout(WAIT));
    common::stop_and_see_die(owner, reader, WAIT);
    let got = waiting.join().expect("reader thread");
    open_gate();
    let e = got.expect_err("its owner died before it was made");
    assert!(owner_died(&e, owner), "{e:?}");
}

#[test]
fn a_result_on_an_executor_declared_dead_is_rebuilt_by_its_owner() {
    // The owner has no CPU: the task runs on one of the workers, and its
    // result (over the inline size) stays there.
    let n = cluster(&[0, 1, 1]);
    let owner = &n[0];
    let r = owner.spawn(&BIG, (2_000_000,));
    assert!(owner.wait_done_remotely(&r, WAIT));
    let executor = if n[1].pinned_objects() > 0 { &n[1] } else { &n[2] };
    common::stop_and_see_die(executor, owner, WAIT);
    let t = Instant::now();
    let got = r.get_timeout(WAIT).unwrap_or_else(|e| panic!("rebuild: {e}"));
    assert_eq!(got.len(), 2_000_000);
    assert!(got.iter().enumerate().all(|(i, b)| *b == (i % 251) as u8));
    eprintln!("rebuilt after its executor was declared dead in {:?}", t.elapsed());
}
