//! Three nodes in one process on 127.0.0.1, joined by bootstrap (mDNS off):
//! membership, objects crossing nodes by serialized ref, and the DHT
//! finding a replica when the owner is gone.

use manta::{Error, ObjectRef, Runtime};
use manta_p2p::{MembershipEvent, Node};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(30);

fn node(bootstrap: Option<&Node>) -> Node {
    node_with(bootstrap, Duration::from_millis(1500))
}

fn node_with(bootstrap: Option<&Node>, failure_timeout: Duration) -> Node {
    let rt = Runtime::builder().num_cpus(1).build().unwrap();
    let mut b = Node::builder(rt)
        .listen("/ip4/127.0.0.1/tcp/0".parse().unwrap())
        .heartbeat(Duration::from_millis(100))
        .failure_timeout(failure_timeout);
    if let Some(n) = bootstrap {
        b = b.bootstrap(n.listen_addrs()[0].clone());
    }
    b.start().unwrap()
}

fn three() -> (Node, Node, Node) {
    let a = node(None);
    let b = node(Some(&a));
    let c = node(Some(&a));
    for n in [&a, &b, &c] {
        n.wait_for_peers(2, WAIT).unwrap();
    }
    (a, b, c)
}

#[test]
fn membership_converges_and_reports_each_node() {
    let (a, b, c) = three();
    for n in [&a, &b, &c] {
        let status = n.cluster_status().unwrap();
        assert_eq!(status.len(), 3);
        assert!(status[0].is_self && status[0].peer == n.peer_id());
        let mut peers: Vec<_> = status.iter().map(|m| m.peer).collect();
        peers.sort();
        let mut want = vec![a.peer_id(), b.peer_id(), c.peer_id()];
        want.sort();
        assert_eq!(peers, want);
        for m in &status {
            assert!(m.alive);
            assert!(!m.addrs.is_empty());
            let cpu = m.resources.iter().find(|r| r.name == "CPU").expect("CPU is reported");
            assert_eq!(cpu.total, 1.0);
        }
    }
}

#[test]
fn at_rest_members_stay_live_on_alive_beats_and_an_observer_still_learns_their_state() {
    let (a, b, c) = three();
    let events = a.subscribe().unwrap();
    // Twenty periods at rest: nearly every beat is an alive beat (state
    // only every tenth). Nobody dies or comes back meanwhile.
    assert_eq!(events.recv_timeout(Duration::from_secs(2)), Err(crossbeam_channel::RecvTimeoutError::Timeout));
    // An observer joining a cluster at rest learns every member's state:
    // the node it joins by asks every member for a full heartbeat (and
    // each sends one every tenth beat anyway, so this checks the outcome,
    // not which of the two delivered it; `beats.rs` tests the asking).
    let rt = Runtime::builder().num_cpus(1).build().unwrap();
    let observer = Node::builder(rt)
        .listen("/ip4/127.0.0.1/tcp/0".parse().unwrap())
        .heartbeat(Duration::from_millis(100))
        .observer(true)
        .bootstrap(a.listen_addrs()[0].clone())
        .start()
        .unwrap();
    let seen = observer.wait_for_peers(3, WAIT).unwrap();
    for n in [&a, &b, &c] {
        let m = seen.iter().find(|m| m.peer == n.peer_id()).expect("every member is listed");
        assert!(m.alive && !m.addrs.is_empty());
        assert_eq!(m.resources.iter().find(|r| r.name == "CPU").map(|r| r.total), Some(1.0));
    }
}

#[test]
fn a_node_that_shuts_down_is_dead_at_once_for_its_peers() {
    // A failure timeout far past the test's wait: only the leave message
    // can make A see B die in time.
    let a = node_with(None, Duration::from_secs(600));
    let b = node_with(Some(&a), Duration::from_secs(600));
    a.wait_for_peers(1, WAIT).unwrap();
    b.wait_for_peers(1, WAIT).unwrap();
    let events = a.subscribe().unwrap();
    b.shutdown();
    let died = events.recv_timeout(WAIT).expect("A hears B leave");
    assert_eq!(died, MembershipEvent::Died(b.peer_id()));
    let status = a.cluster_status().unwrap();
    assert!(status.iter().any(|m| m.peer == b.peer_id() && !m.alive));
}

#[test]
fn a_ref_sent_out_of_band_outlives_its_sender_until_the_receiver_borrows_it() {
    let a = node(None);
    let b = node(Some(&a));
    b.wait_for_peers(1, WAIT).unwrap();
    let r = a.runtime().put(vec![5u8; 1000]).unwrap();
    let id = r.id();
    let wire = a.encode_ref(&r).unwrap();
    drop(r); // A keeps no ref: the bytes alone keep it alive now
    assert!(a.runtime().backend().holds_object(id));
    let there: ObjectRef<Vec<u8>> = b.decode_ref(&wire).unwrap();
    assert_eq!(*there.get().unwrap(), vec![5u8; 1000]);
    // B's borrow took over; when B drops its ref the object goes.
    drop(there);
    assert!(b.flush_mail(WAIT));
    // Freed once its only borrower let go: at once if nothing else holds
    // it, else as soon as A's thread that served it to B drops its handle
    // (which may come a moment after B has the bytes).
    let deadline = std::time::Instant::now() + WAIT;
    while a.runtime().backend().holds_object(id) {
        assert!(std::time::Instant::now() < deadline, "never freed after its only borrower let go");
        std::thread::yield_now();
    }
}

#[test]
fn an_object_put_on_a_is_got_on_c_by_its_serialized_ref() {
    let (a, _b, c) = three();
    let data: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 % 256) as u8).collect();
    let r = a.runtime().put(data.clone()).unwrap();
    let wire = a.encode_ref(&r).unwrap();
    let there: ObjectRef<Vec<u8>> = c.decode_ref(&wire).unwrap();
    assert_eq!(there.id(), r.id());
    assert_eq!(*there.get().unwrap(), data);
    assert!(c.runtime().backend().holds_object(r.id()), "c keeps a replica");
    // Structured values and task results cross too.
    let t = a.runtime().spawn(|| (0..500u64).map(|i| (i.to_string(), i)).collect::<Vec<(String, u64)>>());
    let t_c: ObjectRef<Vec<(String, u64)>> = c.decode_ref(&a.encode_ref(&t).unwrap()).unwrap();
    assert_eq!(t_c.get().unwrap()[499], ("499".to_string(), 499));
}

#[test]
fn the_dht_finds_a_replica_when_the_owner_is_gone() {
    let (a, b, c) = three();
    let events = c.subscribe().unwrap();
    let r = a.runtime().put(vec![9u64; 10_000]).unwrap();
    let id = r.id();
    let wire = a.encode_ref(&r).unwrap();
    // b takes a replica (and announces it)...
    let on_b: ObjectRef<Vec<u64>> = b.decode_ref(&wire).unwrap();
    assert_eq!(on_b.get().unwrap().len(), 10_000);
    // (its announcement is batched: make sure it is out)...
    b.flush_announcements().unwrap();
    // ...then the owner leaves.
    let a_peer = a.peer_id();
    drop(r);
    a.shutdown();
    drop(a);
    // c has never seen the object; the hint points at a dead node.
    let on_c: ObjectRef<Vec<u64>> = c.decode_ref(&wire).unwrap();
    assert_eq!(*on_c.get().unwrap(), vec![9u64; 10_000]);
    assert_eq!(on_c.id(), id);
    // And membership marks the owner dead.
    loop {
        match events.recv_timeout(WAIT) {
            Ok(MembershipEvent::Died(p)) if p == a_peer => break,
            Ok(_) => {}
            Err(e) => panic!("a was never marked dead: {e}"),
        }
    }
    let status = c.cluster_status().unwrap();
    assert!(!status.iter().find(|m| m.peer == a_peer).unwrap().alive);
}

#[test]
fn an_object_nobody_holds_fails_with_a_clear_error() {
    let (a, _b, c) = three();
    let r = a.runtime().put(vec![1u64; 1000]).unwrap();
    let wire = a.encode_ref(&r).unwrap();
    a.shutdown(); // its only holder is gone, and nobody made a replica
    let lost: ObjectRef<Vec<u64>> = c.decode_ref(&wire).unwrap();
    // OwnerDied once c has heard a's goodbye, before that whichever way
    // the request to a failed.
    match lost.get() {
        Err(Error::ObjectLost { .. }) | Err(Error::PeerUnreachable { .. }) | Err(Error::OwnerDied { .. }) => {}
        other => panic!("expected ObjectLost/PeerUnreachable/OwnerDied, got {other:?}"),
    }
}

#[test]
fn a_failed_object_reports_its_error_remotely() {
    let (a, _b, c) = three();
    let t = a.runtime().spawn(|| -> Vec<u8> { panic!("boom") });
    let _ = t.get();
    let remote: ObjectRef<Vec<u8>> = c.decode_ref(&a.encode_ref(&t).unwrap()).unwrap();
    let e = remote.get().unwrap_err().to_string();
    assert!(e.contains("boom"), "{e}");
}

#[test]
fn a_remote_get_waits_for_a_task_still_running_on_its_owner() {
    let (a, _b, c) = three();
    let (gate_tx, gate_rx) = crossbeam_channel::bounded::<()>(1);
    let t = a.runtime().spawn(move || {
        let _ = gate_rx.recv();
        vec![3u16; 50_000]
    });
    let on_c: ObjectRef<Vec<u16>> = c.decode_ref(&a.encode_ref(&t).unwrap()).unwrap();
    // The fetch starts and finds the task still running on a...
    assert!(matches!(on_c.get_timeout(Duration::from_millis(300)), Err(Error::Timeout(_))));
    gate_tx.send(()).unwrap();
    // ...and the get completes once it finishes.
    assert_eq!(*on_c.get().unwrap(), vec![3u16; 50_000]);
}

/// Two nodes with 64 KiB chunks; `lanes` says which have a bulk lane.
fn small_chunk_pair(lanes: [bool; 2]) -> (Node, Node) {
    let start = |bootstrap: Option<&Node>, lane: bool| {
        let rt = Runtime::builder().num_cpus(1).build().unwrap();
        let mut b = Node::builder(rt)
            .listen("/ip4/127.0.0.1/tcp/0".parse().unwrap())
            .chunk_bytes(64 << 10)
            .bulk_lane(lane)
            .heartbeat(Duration::from_millis(100));
        if let Some(n) = bootstrap {
            b = b.bootstrap(n.listen_addrs()[0].clone());
        }
        b.start().unwrap()
    };
    let a = start(None, lanes[0]);
    let b = start(Some(&a), lanes[1]);
    b.wait_for_peers(1, WAIT).unwrap();
    (a, b)
}

/// A 5 MB byte string and 100,000 structured entries from `a` to `b`.
fn send_large_objects(a: &Node, b: &Node) {
    let bytes: Vec<u8> = (0..5_000_000u32).map(|i| (i % 253) as u8).collect();
    let r = a.runtime().put(bytes.clone()).unwrap();
    let on_b: ObjectRef<Vec<u8>> = b.decode_ref(&a.encode_ref(&r).unwrap()).unwrap();
    assert_eq!(*on_b.get().unwrap(), bytes, "reassembled in order");
    let words: Vec<(String, u64)> = (0..100_000u64).map(|i| (format!("w{i}"), i)).collect();
    let r = a.runtime().put(words.clone()).unwrap();
    let on_b: ObjectRef<Vec<(String, u64)>> = b.decode_ref(&a.encode_ref(&r).unwrap()).unwrap();
    assert_eq!(*on_b.get().unwrap(), words);
}

#[test]
fn objects_larger_than_a_chunk_stream_across_in_order() {
    // No lanes: 79 chunks of 64 KiB for the bytes, in order.
    let (a, b) = small_chunk_pair([false, false]);
    send_large_objects(&a, &b);
    assert_eq!(a.lane_stats().port, None);
    assert_eq!((a.lane_stats().served, b.lane_stats().received), (0, 0));
}

#[test]
fn large_objects_come_over_the_bulk_lane() {
    let (a, b) = small_chunk_pair([true, true]);
    send_large_objects(&a, &b);
    assert!(a.lane_stats().port.is_some());
    // Both normally come over A's lane; under heavy load a transient
    // failure may send one through the chunk fallback instead.
    let received = b.lane_stats().received;
    assert!((1..=2).contains(&received), "b received {received} over a's lane");
    // A counts a stream once its last record is written, which may be
    // just after B has decoded it.
    let deadline = std::time::Instant::now() + WAIT;
    while a.lane_stats().served < received {
        assert!(std::time::Instant::now() < deadline, "a served {:?}", a.lane_stats());
        std::thread::yield_now();
    }
    // A stream A wrote to the end but B gave up on (under load, just before
    // its last record) is served but not received: B then took chunks.
    let served = a.lane_stats().served;
    assert!((received..=2).contains(&served), "a served {served}, b received {received}");
}

#[test]
fn a_holder_without_a_lane_still_serves_in_chunks() {
    let (a, b) = small_chunk_pair([false, true]);
    send_large_objects(&a, &b);
    assert_eq!(b.lane_stats().received, 0);
    // And a requester without one never asks for it.
    let (a, b) = small_chunk_pair([true, false]);
    send_large_objects(&a, &b);
    assert_eq!(a.lane_stats().served, 0);
}
