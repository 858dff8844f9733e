//! Attacks on remote work by an outsider (the raw libp2p client of
//! `hostile_client/`, speaking manta's mail protocol byte by byte) against
//! nodes running in this process: issue 15's "who may do what". Each test
//! failed before the fix and shows the attack now fails with the node up.
//!
//! | attack (before) | now |
//! | --- | --- |
//! | `NewActor` with someone else's actor id reset it; a `DropActor` killed it | refused (`ActorDead` in the ack), ignored; the creator's actor keeps its state ([`only_the_creator_may_create_or_drop_an_actor`]) |
//! | unbounded actors created per peer | [`MAX_ACTORS_PER_PEER`], then a typed refusal ([`actors_per_peer_are_capped`]) |
//! | a task whose result id is a replica here: the node served the forged value | the held value is still what is served ([`a_task_cannot_replace_an_object_held_here`]) |
//! | batches of `Borrow` for made-up ids: +1 GB kept until the peer "died" | not retained: no entry, RSS bounded ([`borrows_of_made_up_ids_are_not_kept`]) |
//! | `retries: u32::MAX` on a panicking task: it ran (nearly) forever | capped at [`MAX_WIRE_RETRIES`] ([`retries_from_the_wire_are_capped`]) |
//! | a peer that never sent a heartbeat kept its borrows forever | they go once its connection stays closed for the failure timeout ([`a_silent_peers_borrows_go_when_it_disconnects`]) |
//! | one peer submitted work up to the node's whole accepted bound | every other peer's tasks were refused `Busy` until it finished | a peer holds at most half the bound; the others' tasks are still accepted ([`one_peer_cannot_take_every_accepted_slot`]) |
//! | one peer's accepted tasks queued ahead of another peer's task | it ran after all of them | a peer's tasks beyond one per worker thread run at `Low` priority, after other peers' tasks ([`a_flooders_surplus_waits_behind_another_peers_task`]) |
//!
//! Invariants: tests run one at a time (a lock: one measures this
//! process); only 127.0.0.1 is used; every client call is bounded by
//! `hostile_client::CALL`.

#[allow(dead_code)]
mod hostile_client;

use hostile_client::{exchange, rss_mib, Client};
use libp2p::Stream;
use manta::{ObjectId, ObjectRef, Runtime};
use manta_p2p::fuzzing::mail::{
    decode_ack, encode_batch, Ack, Batch, Mail, Opts, Refusal, Root, MAX_ACK_BYTES, MAX_IDS,
};
use manta_p2p::fuzzing::plain::encode_args;
use manta_p2p::fuzzing::wire::{decode_response, encode_request, Request, Response, MAX_RESPONSE_BYTES};
use manta_p2p::{
    ActorClass, ActorHandle, Arg, Method, Node, Registry, RemoteFn, MAX_ACTORS_PER_PEER, MAX_WIRE_RETRIES,
};
use std::sync::Mutex;
use std::time::Duration;

const MAIL: &str = "/manta/mail/2";
const OBJECT: &str = "/manta/object/1";
const WAIT: Duration = Duration::from_secs(30);

struct Counter {
    value: i64,
}
static COUNTER: ActorClass<(), Counter> = ActorClass::new("Counter", |()| Counter { value: 0 });
static ADD: Method<Counter, (i64,), i64> = Method::new("Counter.add", |c, (n,)| {
    c.value += n;
    c.value
});
static MAKE: RemoteFn<(usize,), Vec<u8>> = RemoteFn::new("make", |(n,)| vec![7; n]);
/// Runs of `fail` so far.
static FAILS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
static FAIL: RemoteFn<(u8,), u8> = RemoteFn::new("fail", |(_,)| {
    FAILS.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    panic!("fails every time (a test)")
});

/// Held closed while a test needs tasks to stay accepted; `gated` runs
/// block on it.
static GATE: (Mutex<bool>, std::sync::Condvar) = (Mutex::new(false), std::sync::Condvar::new());
static GATED: RemoteFn<(u8,), u8> = RemoteFn::new("gated", |(x,)| {
    let mut open = GATE.0.lock().unwrap_or_else(|p| p.into_inner());
    while !*open {
        open = GATE.1.wait(open).unwrap_or_else(|p| p.into_inner());
    }
    x
});

fn set_gate(open: bool) {
    *GATE.0.lock().unwrap_or_else(|p| p.into_inner()) = open;
    GATE.1.notify_all();
}

/// Opens the gate when dropped: a failed assertion must not leave a worker
/// blocked (the node's shutdown would wait for it forever).
struct OpenOnDrop;

impl Drop for OpenOnDrop {
    fn drop(&mut self) {
        set_gate(true);
    }
}

/// One test at a time: one measures this process.
fn serial() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|p| p.into_inner())
}

fn tokio() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("tokio")
}

/// A node on 127.0.0.1 (bootstrapping from `boot`).
fn node(boot: Option<&Node>) -> Node {
    node_with(boot, |b| b)
}

fn node_with(boot: Option<&Node>, f: impl FnOnce(manta_p2p::NodeBuilder) -> manta_p2p::NodeBuilder) -> Node {
    let rt = Runtime::builder().num_cpus(1).build().expect("runtime");
    let mut b = Node::builder(rt)
        .listen("/ip4/127.0.0.1/tcp/0".parse().expect("addr"))
        .heartbeat(Duration::from_millis(100))
        .registry(Registry::new().actor(&COUNTER).method(&ADD).function(&MAKE).function(&FAIL));
    if let Some(n) = boot {
        b = b.bootstrap(n.listen_addrs()[0].clone());
    }
    f(b).start().expect("node starts")
}

/// A raw client connected to `n` and a mail stream to it.
async fn mail_client(n: &Node) -> (Client, Stream) {
    let c = Client::start(hostile_client::swarm(None));
    c.dial(&n.listen_addrs()[0]).await.expect("the outsider connects");
    let s = c.open(n.peer_id(), MAIL).await.expect("a mail stream");
    (c, s)
}

/// Sends `mail` as one batch on `s`; the node's ack.
async fn send(s: &mut Stream, mail: Vec<Mail>) -> Ack {
    let reply = exchange(s, &encode_batch(&Batch(mail)), MAX_ACK_BYTES).await.expect("the batch is acked");
    decode_ack(&reply).expect("the ack decodes")
}

fn new_actor(actor: ObjectId) -> Mail {
    Mail::NewActor { actor: actor.to_bytes(), class: "Counter".into(), args: encode_args(&()), opts: Opts::default() }
}

/// The reason of an `ActorDead` refusal at `index` of `ack`.
fn refused_dead(ack: &Ack, index: u32) -> Option<String> {
    ack.refused.iter().find(|(i, _)| *i == index).and_then(|(_, r)| match r {
        Refusal::Refused(e) => match &e.root {
            Root::ActorDead { reason, .. } => Some(reason.clone()),
            _ => None,
        },
        Refusal::Busy => None,
    })
}

#[test]
fn only_the_creator_may_create_or_drop_an_actor() {
    let _serial = serial();
    let a = node(None);
    let b = node(Some(&a));
    b.wait_for_peers(1, WAIT).expect("b joins");
    // B's actor, hosted on A.
    let h: ActorHandle<Counter> = b.actor_builder(&COUNTER).on(a.peer_id()).spawn(());
    assert_eq!(*h.call(&ADD, (5,)).get().expect("call"), 5);

    let tokio = tokio();
    let ack = tokio.block_on(async {
        let (_c, mut s) = mail_client(&a).await;
        // Re-create it (a reset, before), then drop it (killed it, before).
        send(&mut s, vec![new_actor(h.id()), Mail::DropActor(h.id().to_bytes())]).await
    });
    let why = refused_dead(&ack, 0).expect("the creation is refused as ActorDead");
    assert!(why.contains("exists"), "{why}");
    // The creator's actor is alive and kept its state.
    assert_eq!(*h.call(&ADD, (1,)).get().expect("the creator's call still works"), 6);
}

#[test]
fn actors_per_peer_are_capped() {
    let _serial = serial();
    let a = node(None);
    let tokio = tokio();
    let (ok, last) = tokio.block_on(async {
        let (_c, mut s) = mail_client(&a).await;
        let mut ok = 0;
        let mut made = 0;
        while made < MAX_ACTORS_PER_PEER {
            let n = (MAX_ACTORS_PER_PEER - made).min(1024);
            let ack = send(&mut s, (0..n).map(|_| new_actor(ObjectId::fresh())).collect()).await;
            ok += n - ack.refused.len();
            made += n;
        }
        let last = send(&mut s, vec![new_actor(ObjectId::fresh())]).await;
        (ok, last)
    });
    assert_eq!(ok, MAX_ACTORS_PER_PEER, "every creation up to the cap is taken");
    let why = refused_dead(&last, 0).expect("one more is refused, typed");
    assert!(why.contains(&format!("owns {MAX_ACTORS_PER_PEER} actors")), "{why}");
    // Another peer is not affected.
    let b = node(Some(&a));
    b.wait_for_peers(1, WAIT).expect("b joins");
    let h: ActorHandle<Counter> = b.actor_builder(&COUNTER).on(a.peer_id()).spawn(());
    assert_eq!(*h.call(&ADD, (2,)).get().expect("an honest peer's actor"), 2);
}

#[test]
fn a_task_cannot_replace_an_object_held_here() {
    let _serial = serial();
    let a = node(None);
    let b = node(Some(&a));
    b.wait_for_peers(1, WAIT).expect("b joins");
    // B's object, read on A: A holds it (an import, served as a replica).
    let genuine = vec![1u8, 2, 3, 4];
    let v = b.runtime().put(genuine.clone()).expect("put");
    let there: ObjectRef<Vec<u8>> = a.decode_ref(&b.encode_ref(&v).expect("encode")).expect("decode");
    assert_eq!(*there.get().expect("A reads it"), genuine);

    let tokio = tokio();
    let served = tokio.block_on(async {
        let (c, mut s) = mail_client(&a).await;
        // A task whose result id is that object's.
        let submit = Mail::Submit {
            id: v.id().to_bytes(),
            func: "make".into(),
            args: encode_args(&(Arg::Val(16usize),)),
            opts: Opts::default(),
        };
        let ack = send(&mut s, vec![submit]).await;
        assert!(ack.refused.is_empty(), "{ack:?}");
        // What A now serves under that id, read until the task is done
        // (a `Busy` while it runs; bounded).
        let mut o = c.open(a.peer_id(), OBJECT).await.expect("object stream");
        for _ in 0..200 {
            let req = encode_request(&Request::Fetch { id: v.id().to_bytes(), offset: 0, len: 1 << 16 });
            let reply = exchange(&mut o, &req, MAX_RESPONSE_BYTES).await.expect("a reply");
            match decode_response(&reply).expect("decodes") {
                Response::Chunk { data, .. } => return data,
                Response::Busy => {}
                other => panic!("{other:?}"),
            }
        }
        panic!("never served");
    });
    // The node encodes a `Vec<u8>` as a CBOR byte string: 0x44 and the 4
    // bytes (the forged output would be 16 bytes of 7).
    assert_eq!(served, [0x44, 1, 2, 3, 4], "A serves the genuine value, not the task's output");
    assert_eq!(*there.get().expect("still"), genuine);
}

#[test]
fn borrows_of_made_up_ids_are_not_kept() {
    let _serial = serial();
    let a = node(None);
    let tokio = tokio();
    const BATCHES: usize = 200; // 819,200 ids: ~100 MiB of entries before the fix
    let (base, after) = tokio.block_on(async {
        let (_c, mut s) = mail_client(&a).await;
        let ids = |_| serde_bytes::ByteArray::new(ObjectId::fresh().to_bytes());
        // Warm the stream and allocator with one batch first.
        send(&mut s, vec![Mail::Borrow((0..MAX_IDS).map(ids).collect())]).await;
        let base = rss_mib();
        for _ in 0..BATCHES {
            let ack = send(&mut s, vec![Mail::Borrow((0..MAX_IDS).map(ids).collect())]).await;
            assert!(ack.invalid.is_none());
        }
        (base, rss_mib())
    });
    eprintln!("{} made-up borrows: RSS {base:.1} -> {after:.1} MiB", BATCHES * MAX_IDS);
    assert_eq!(a.pinned_objects(), 0, "no made-up id is retained");
    assert!(after - base < 32.0, "RSS grew {:.1} MiB", after - base);
    // A real object borrowed by the outsider is counted (and only once).
    let real = a.runtime().put(vec![9u8; 10]).expect("put");
    a.runtime().backend().export_object(&real);
    tokio.block_on(async {
        let (_c, mut s) = mail_client(&a).await;
        let id = serde_bytes::ByteArray::new(real.id().to_bytes());
        send(&mut s, vec![Mail::Borrow(vec![id]), Mail::Release(vec![id, id])]).await;
        send(&mut s, vec![Mail::Borrow(vec![id])]).await;
    });
    assert_eq!(a.pinned_objects(), 1, "a real borrow is counted; extra releases kept no negative count");
}

#[test]
fn a_silent_peers_borrows_go_when_it_disconnects() {
    let _serial = serial();
    let a = node_with(None, |b| b.failure_timeout(Duration::from_millis(500)));
    let real = a.runtime().put(vec![9u8; 10]).expect("put");
    a.runtime().backend().export_object(&real);
    let tokio = tokio();
    tokio.block_on(async {
        let (c, mut s) = mail_client(&a).await;
        let id = serde_bytes::ByteArray::new(real.id().to_bytes());
        send(&mut s, vec![Mail::Borrow(vec![id]), new_actor(ObjectId::fresh())]).await;
        drop(s);
        drop(c); // its connection closes; it never sent a heartbeat
    });
    assert_eq!(a.pinned_objects(), 1, "counted while it is connected");
    // Bounded poll: gone a failure timeout (+ a tick) after the close.
    let mut polls = 0;
    while a.pinned_objects() != 0 && polls < 1000 {
        std::thread::sleep(Duration::from_millis(10));
        polls += 1;
    }
    assert_eq!(a.pinned_objects(), 0, "its borrow went with its connection");
}

#[test]
fn retries_from_the_wire_are_capped() {
    let _serial = serial();
    let a = node(None);
    let tokio = tokio();
    tokio.block_on(async {
        let (_c, mut s) = mail_client(&a).await;
        let opts = Opts { retries: u32::MAX, ..Opts::default() };
        let submit = Mail::Submit {
            id: ObjectId::fresh().to_bytes(),
            func: "fail".into(),
            args: encode_args(&(Arg::Val(0u8),)),
            opts,
        };
        let ack = send(&mut s, vec![submit]).await;
        assert!(ack.refused.is_empty(), "{ack:?}");
    });
    // Bounded poll: the task is done (its slot given back) after its
    // capped retries.
    let mut polls = 0;
    while (FAILS.load(std::sync::atomic::Ordering::SeqCst) == 0 || a.accepted_work() != 0) && polls < 2000 {
        std::thread::sleep(Duration::from_millis(10));
        polls += 1;
    }
    assert_eq!(a.accepted_work(), 0, "the task ended");
    assert_eq!(FAILS.load(std::sync::atomic::Ordering::SeqCst), MAX_WIRE_RETRIES + 1, "one run and the capped retries");
}

/// A node with one worker thread that accepts at most `max_accepted`
/// tasks from peers, with `gated`, `make` and `logged` registered.
fn gated_node(max_accepted: usize) -> Node {
    let rt = Runtime::builder().num_cpus(1).build().expect("runtime");
    Node::builder(rt)
        .listen("/ip4/127.0.0.1/tcp/0".parse().expect("addr"))
        .max_accepted_tasks(max_accepted)
        .registry(Registry::new().function(&GATED).function(&MAKE).function(&LOGGED))
        .start()
        .expect("node starts")
}

/// A task of registered function `func` on argument `n`, under a fresh id.
fn submit(n: u8, func: &str) -> Mail {
    Mail::Submit {
        id: ObjectId::fresh().to_bytes(),
        func: func.into(),
        args: encode_args(&(Arg::Val(n),)),
        opts: Opts::default(),
    }
}

#[test]
fn one_peer_cannot_take_every_accepted_slot() {
    let _serial = serial();
    set_gate(false);
    let a = gated_node(4);
    let _open = OpenOnDrop;
    let tokio = tokio();
    tokio.block_on(async {
        // The flooder asks for every slot with tasks that do not end.
        let (_flood, mut s) = mail_client(&a).await;
        let ack = send(&mut s, (0..4).map(|n| submit(n, "gated")).collect()).await;
        let busy: Vec<u32> = ack.refused.iter().filter(|(_, r)| matches!(r, Refusal::Busy)).map(|(i, _)| *i).collect();
        assert_eq!(busy, [2, 3], "two accepted, the rest of its flood refused: {ack:?}");
        // Another peer's task is still accepted (and runs once the gate opens).
        let (_other, mut t) = mail_client(&a).await;
        let ack = send(&mut t, vec![submit(9, "gated")]).await;
        assert!(ack.refused.is_empty(), "the other peer is not starved: {ack:?}");
    });
    set_gate(true);
    a.shutdown();
}

/// The order `logged` tasks ran in, and a wake-up for each.
static LOG: (Mutex<Vec<u8>>, std::sync::Condvar) = (Mutex::new(Vec::new()), std::sync::Condvar::new());
static LOGGED: RemoteFn<(u8,), u8> = RemoteFn::new("logged", |(x,)| {
    LOG.0.lock().unwrap_or_else(|p| p.into_inner()).push(x);
    LOG.1.notify_all();
    x
});

/// Waits (bounded) until `n` logged tasks ran; the order they ran in.
fn logged(n: usize) -> Vec<u8> {
    let mut log = LOG.0.lock().unwrap_or_else(|p| p.into_inner());
    let deadline = std::time::Instant::now() + WAIT;
    while log.len() < n {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            break;
        }
        log = LOG.1.wait_timeout(log, left).unwrap_or_else(|p| p.into_inner()).0;
    }
    log.clone()
}

#[test]
fn a_flooders_surplus_waits_behind_another_peers_task() {
    let _serial = serial();
    set_gate(false);
    LOG.0.lock().unwrap_or_else(|p| p.into_inner()).clear();
    let a = gated_node(64);
    let _open = OpenOnDrop;
    tokio().block_on(async {
        // The flooder: a task that holds the only worker, then five more.
        let (_flood, mut s) = mail_client(&a).await;
        let mut flood = vec![submit(0, "gated")];
        flood.extend((1..=5).map(|n| submit(n, "logged")));
        let ack = send(&mut s, flood).await;
        assert!(ack.refused.is_empty(), "{ack:?}");
        // Another peer's one task, accepted after all of them.
        let (_other, mut t) = mail_client(&a).await;
        let ack = send(&mut t, vec![submit(100, "logged")]).await;
        assert!(ack.refused.is_empty(), "{ack:?}");
    });
    set_gate(true);
    // The flooder's tasks beyond its share (one per worker thread) run
    // after the other peer's task; before, in arrival order (100 last).
    assert_eq!(logged(6), [100, 1, 2, 3, 4, 5]);
    a.shutdown();
}
