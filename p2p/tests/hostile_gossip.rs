//! Attacks on the heartbeat topic by an outsider (a raw libp2p client on
//! 127.0.0.1 that writes gossipsub RPCs by hand on a `/meshsub/1.1.0`
//! stream) against a node of this process with an honest peer, each run at
//! a small scale, checking the bound that now holds:
//!
//! | attack (before) | now |
//! | --- | --- |
//! | heartbeats signed by 800 fresh keys, ~55 KB each: 800 members, +180 MiB, all forwarded, failure timeout 200 s | at most `MAX_MEMBERS`, live ones kept, addresses cut, newcomers beyond the cap not forwarded ([`forged_members_are_capped_and_not_relayed_beyond_the_cap`]) |
//! | 10,000 SUBSCRIBEs from one peer: a new full heartbeat each, 30x amplification | only a first subscription counts, at most one extra beat per period ([`a_subscribe_flood_makes_no_heartbeat_flood`]) |
//! | 2,000 non-CBOR messages: 4,000 WARN lines, each forwarded | one WARN line per relay, not forwarded, the relay graylisted ([`malformed_beats_are_one_warning_and_not_relayed`]) |
//!
//! Invariants: tests run one at a time (a lock: one counts log lines of
//! this process); every loop is bounded in count, every wait has a
//! deadline (no sleep stands for a state); only 127.0.0.1 is used.

use futures::{AsyncWriteExt, StreamExt};
use libp2p::identity::Keypair;
use libp2p::swarm::{NetworkBehaviour, SwarmEvent};
use libp2p::{gossipsub, Multiaddr, PeerId, StreamProtocol, Swarm};
use manta::Runtime;
use manta_p2p::fuzzing::wire::{encode_beat, Beat, Heartbeat, Resource};
use manta_p2p::{Member, Node, HEARTBEAT_TOPIC, MAX_MEMBERS, MAX_MEMBER_ADDRS, MAX_MEMBER_ADDR_BYTES};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// Longest any wait of these tests takes.
const DEADLINE: Duration = Duration::from_secs(20);
/// The nodes' heartbeat period.
const PERIOD: Duration = Duration::from_millis(500);

fn serial() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|p| p.into_inner())
}

fn tokio() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("tokio")
}

/// Two honest nodes on 127.0.0.1 (the second bootstraps from the first),
/// connected and members of each other.
fn pair() -> (Node, Node) {
    let node = |boot: Option<&Node>| {
        let rt = Runtime::builder().num_cpus(1).build().expect("runtime");
        let mut b = Node::builder(rt)
            .listen("/ip4/127.0.0.1/tcp/0".parse().expect("addr"))
            .heartbeat(PERIOD)
            .failure_timeout(Duration::from_secs(10));
        if let Some(n) = boot {
            b = b.bootstrap(n.listen_addrs()[0].clone());
        }
        b.start().expect("node starts")
    };
    let a = node(None);
    let b = node(Some(&a));
    a.wait_for_peers(1, DEADLINE).expect("a sees b");
    b.wait_for_peers(1, DEADLINE).expect("b sees a");
    (a, b)
}

/// Polls `f` every 20 ms until it returns `Some`, at most [`DEADLINE`].
fn until<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(start.elapsed() < DEADLINE, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn status_of(n: &Node, peer: PeerId) -> Option<Member> {
    n.cluster_status().expect("status").into_iter().find(|m| m.peer == peer)
}

/// The node's counter `name` (`Runtime::metrics`, cluster part).
fn metric(n: &Node, name: &str) -> f64 {
    let m = n.runtime().metrics();
    m.cluster.iter().find(|(k, _)| k == name).map(|(_, v)| *v).unwrap_or_else(|| panic!("no metric {name}"))
}

/// WARN (and ERROR) events about gossip so far in this process (the
/// module that checks gossip messages).
fn gossip_warns() -> usize {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::Layer;
    static COUNT: AtomicUsize = AtomicUsize::new(0);
    static INIT: OnceLock<()> = OnceLock::new();
    struct Count;
    impl<S: tracing::Subscriber> Layer<S> for Count {
        fn on_event(&self, e: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
            if e.metadata().target().starts_with("manta_p2p::cluster::event_loop::gossip") {
                COUNT.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
    INIT.get_or_init(|| {
        let filter = tracing_subscriber::filter::LevelFilter::WARN;
        let _ = tracing::subscriber::set_global_default(tracing_subscriber::registry().with(Count.with_filter(filter)));
    });
    COUNT.load(Ordering::Relaxed)
}

// --- the raw client ---------------------------------------------------------

#[derive(NetworkBehaviour)]
struct GossipRaw {
    stream: libp2p_stream::Behaviour,
    gossip: gossipsub::Behaviour,
}

/// A client with gossipsub (subscribed to the heartbeat topic if
/// `subscribe`) and raw streams.
fn gossip_swarm(subscribe: bool) -> Swarm<GossipRaw> {
    let idle = |c: libp2p::swarm::Config| c.with_idle_connection_timeout(Duration::from_secs(120));
    libp2p::SwarmBuilder::with_new_identity()
        .with_tokio()
        .with_tcp(libp2p::tcp::Config::default(), libp2p::noise::Config::new, libp2p::yamux::Config::default)
        .expect("transport")
        .with_behaviour(|key| {
            let cfg = gossipsub::ConfigBuilder::default().build().expect("gossipsub config");
            let mut gossip =
                gossipsub::Behaviour::new(gossipsub::MessageAuthenticity::Signed(key.clone()), cfg).expect("gossipsub");
            if subscribe {
                gossip.subscribe(&gossipsub::IdentTopic::new(HEARTBEAT_TOPIC)).expect("subscribe");
            }
            GossipRaw { stream: libp2p_stream::Behaviour::new(), gossip }
        })
        .expect("behaviour")
        .with_swarm_config(idle)
        .build()
}

/// Runs `swarm` (connected to `addr`) on its own task, passing on the
/// gossip messages it receives; returns its stream control.
async fn run_client(
    mut swarm: Swarm<GossipRaw>,
    addr: &Multiaddr,
) -> (libp2p_stream::Control, tokio::sync::mpsc::UnboundedReceiver<gossipsub::Message>, tokio::task::JoinHandle<()>) {
    let control = swarm.behaviour().stream.new_control();
    swarm.dial(addr.clone()).expect("dial");
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let task = tokio::spawn(async move {
        loop {
            if let SwarmEvent::Behaviour(GossipRawEvent::Gossip(gossipsub::Event::Message { message, .. })) =
                swarm.select_next_some().await
            {
                let _ = tx.send(message);
            }
        }
    });
    (control, rx, task)
}

/// Opens a raw gossipsub stream to `peer` (retrying until the connection
/// is up, within [`DEADLINE`]).
async fn meshsub(control: &mut libp2p_stream::Control, peer: PeerId) -> libp2p::Stream {
    let start = Instant::now();
    loop {
        match control.open_stream(peer, StreamProtocol::new("/meshsub/1.1.0")).await {
            Ok(s) => return s,
            Err(e) => assert!(start.elapsed() < DEADLINE, "no meshsub stream: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn varint(mut n: u64, out: &mut Vec<u8>) {
    while n >= 0x80 {
        out.push((n as u8) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

fn field(tag: u64, bytes: &[u8], out: &mut Vec<u8>) {
    varint((tag << 3) | 2, out);
    varint(bytes.len() as u64, out);
    out.extend_from_slice(bytes);
}

/// One gossipsub RPC frame publishing `data` on the heartbeat topic,
/// signed by `key` (strict signing), built by hand.
fn publish_frame(key: &Keypair, seqno: u64, data: &[u8]) -> Vec<u8> {
    let mut m = Vec::new();
    field(1, &key.public().to_peer_id().to_bytes(), &mut m);
    field(2, data, &mut m);
    field(3, &seqno.to_be_bytes(), &mut m);
    field(4, HEARTBEAT_TOPIC.as_bytes(), &mut m);
    let mut to_sign = b"libp2p-pubsub:".to_vec();
    to_sign.extend_from_slice(&m);
    field(5, &key.sign(&to_sign).expect("sign"), &mut m);
    let mut rpc = Vec::new();
    field(2, &m, &mut rpc);
    let mut out = Vec::new();
    varint(rpc.len() as u64, &mut out);
    out.extend_from_slice(&rpc);
    out
}

/// One gossipsub RPC frame that only subscribes to the heartbeat topic.
fn subscribe_frame() -> Vec<u8> {
    let mut sub = vec![0x08, 0x01]; // subscribe = true
    field(2, HEARTBEAT_TOPIC.as_bytes(), &mut sub);
    let mut rpc = Vec::new();
    field(1, &sub, &mut rpc);
    let mut out = Vec::new();
    varint(rpc.len() as u64, &mut out);
    out.extend_from_slice(&rpc);
    out
}

fn full(hb: Heartbeat) -> Vec<u8> {
    encode_beat(&Beat::Full(hb))
}

// --- the attacks ----------------------------------------------------------------

/// Heartbeats signed by more fresh keys than the member table holds, the
/// first ones oversize (64 addresses, half of them 200-byte host names; 64
/// resources): the table stops at `MAX_MEMBERS` with the honest peer still
/// live in it, each member keeps at most `MAX_MEMBER_ADDRS` short
/// addresses, and the newcomers refused are not relayed to the honest peer.
#[test]
fn forged_members_are_capped_and_not_relayed_beyond_the_cap() {
    let _serial = serial();
    let (a, b) = pair();
    let keys: Vec<Keypair> = (0..MAX_MEMBERS + 64).map(|_| Keypair::generate_ed25519()).collect();
    let short: Vec<Vec<u8>> =
        (0..32).map(|i| format!("/ip4/10.0.0.1/tcp/{}", 1000 + i).parse::<Multiaddr>().unwrap().to_vec()).collect();
    let long: Vec<Vec<u8>> = (0..32)
        .map(|i| format!("/dns4/{}/tcp/{}", "x".repeat(200), 1000 + i).parse::<Multiaddr>().unwrap().to_vec())
        .collect();
    let oversize = Heartbeat {
        seq: 1,
        addrs: long.iter().chain(&short).cloned().collect(),
        resources: (0..64).map(|i| Resource { name: format!("{i:0>60}"), total: 1e6, free: 1e6 }).collect(),
        ..Default::default()
    };
    tokio().block_on(async {
        let (mut control, _rx, task) = run_client(gossip_swarm(false), &a.listen_addrs()[0]).await;
        let mut s = meshsub(&mut control, a.peer_id()).await;
        for (i, key) in keys.iter().enumerate() {
            let hb = if i < 8 { oversize.clone() } else { Heartbeat { seq: 1, ..Default::default() } };
            s.write_all(&publish_frame(key, 1, &full(hb))).await.expect("write");
        }
        // Then a newer heartbeat of the first member: once it shows, every
        // frame before it was handled (one stream, handled in order).
        s.write_all(&publish_frame(&keys[0], 2, &full(Heartbeat { seq: 2, queue_len: 777, ..oversize.clone() })))
            .await
            .expect("write");
        s.flush().await.expect("flush");
        let first = keys[0].public().to_peer_id();
        until("the last forged heartbeat", || status_of(&a, first).filter(|m| m.queue_len == 777));
        task.abort();
    });
    let table = a.cluster_status().expect("status");
    let others: Vec<&Member> = table.iter().filter(|m| !m.is_self).collect();
    eprintln!("{} forged heartbeats: a's table holds {} peers", keys.len(), others.len());
    assert_eq!(others.len(), MAX_MEMBERS, "capped");
    assert!(table.iter().any(|m| m.peer == b.peer_id() && m.alive), "the honest peer is still a live member");
    let first = table.iter().find(|m| m.peer == keys[0].public().to_peer_id()).expect("the first forged member");
    assert_eq!(first.addrs.len(), MAX_MEMBER_ADDRS, "addresses cut to the cap");
    assert!(first.addrs.iter().all(|a| a.to_vec().len() <= MAX_MEMBER_ADDR_BYTES), "long addresses dropped");
    assert!(first.resources.len() <= 64);
    // The newcomers a refused were not relayed: b never hears of them.
    let refused: Vec<PeerId> =
        keys.iter().map(|k| k.public().to_peer_id()).filter(|p| !others.iter().any(|m| m.peer == *p)).collect();
    assert_eq!(refused.len(), keys.len() + 1 - MAX_MEMBERS, "all refused beyond the cap (b holds one place)");
    let b_table = until("b hearing the forged members a relayed", || {
        let t = b.cluster_status().expect("status");
        (t.len() > MAX_MEMBERS / 2).then_some(t)
    });
    assert!(b_table.len() <= MAX_MEMBERS + 1, "b's table is capped too");
    assert!(!b_table.iter().any(|m| refused.contains(&m.peer)), "a relayed a heartbeat it refused");
    // The honest pair still sees each other.
    assert!(status_of(&b, a.peer_id()).is_some_and(|m| m.alive));
}

/// The gossipsub sequence number of the next message from `peer` among
/// `beats`, within [`DEADLINE`].
async fn next_from(beats: &mut tokio::sync::mpsc::UnboundedReceiver<gossipsub::Message>, peer: PeerId) -> u64 {
    let start = Instant::now();
    loop {
        let left = DEADLINE.saturating_sub(start.elapsed());
        let m = tokio::time::timeout(left, beats.recv()).await.expect("a beat within the deadline").expect("client");
        if m.source == Some(peer) {
            return m.sequence_number.expect("a sequence number");
        }
    }
}

/// 2,000 SUBSCRIBEs on one stream: only the first counts, so the victim
/// publishes about one beat per period as at rest, not one per SUBSCRIBE
/// (counted from the gossipsub sequence numbers of its messages, which
/// grow by one per message it publishes).
/// Publishes a first heartbeat of a fresh member on `s`, a marker: once a
/// node holds that member, it has handled everything written before it.
async fn publish_marker(s: &mut libp2p::Stream) -> PeerId {
    let marker = Keypair::generate_ed25519();
    s.write_all(&publish_frame(&marker, 1, &full(Heartbeat { seq: 1, ..Default::default() }))).await.expect("write");
    s.flush().await.expect("flush");
    marker.public().to_peer_id()
}

#[test]
fn a_subscribe_flood_makes_no_heartbeat_flood() {
    let _serial = serial();
    let (a, _b) = pair();
    const SUBSCRIBES: usize = 2000;
    let (published, elapsed) = tokio().block_on(async {
        // A listener in a's mesh, to read a's sequence numbers.
        let (_c, mut beats, listener) = run_client(gossip_swarm(true), &a.listen_addrs()[0]).await;
        let s0 = next_from(&mut beats, a.peer_id()).await;
        let t0 = Instant::now();
        let (mut control, _rx, flooder) = run_client(gossip_swarm(false), &a.listen_addrs()[0]).await;
        let mut s = meshsub(&mut control, a.peer_id()).await;
        let frame = subscribe_frame();
        let burst: Vec<u8> = frame.iter().copied().cycle().take(frame.len() * SUBSCRIBES).collect();
        s.write_all(&burst).await.expect("write");
        // A marker after the flood: once a holds it, every SUBSCRIBE was handled.
        let marker = publish_marker(&mut s).await;
        until("the marker", || status_of(&a, marker));
        // Every beat a published so far is numbered below the next one.
        let s1 = next_from(&mut beats, a.peer_id()).await;
        flooder.abort();
        listener.abort();
        (s1 - s0, t0.elapsed())
    });
    // At rest a beats once per period; the flood may add one beat per
    // period; the two subscriptions (listener, flooder) and the marker's
    // join at most one full beat each. Before: one beat per SUBSCRIBE.
    let periods = (elapsed.as_secs_f64() / PERIOD.as_secs_f64()).ceil() as u64;
    let bound = 2 * periods + 4;
    eprintln!("{SUBSCRIBES} SUBSCRIBEs over {elapsed:?}: a published {published} beats (bound {bound})");
    assert!(published <= bound, "{published} beats for {SUBSCRIBES} SUBSCRIBEs");
    assert!(published < SUBSCRIBES as u64 / 10);
}

/// 200 messages that are not beats, each its own RPC: one WARN line for
/// the relay (the rest `debug!`), none relayed to the honest peer (which
/// counts and logs none), and the relay graylisted by gossipsub's scoring
/// after a few (a counts fewer than it was sent).
#[test]
fn malformed_beats_are_one_warning_and_not_relayed() {
    let _serial = serial();
    gossip_warns(); // installs the counting subscriber before the nodes start
    let (a, b) = pair();
    let before = gossip_warns();
    const SENT: usize = 200;
    tokio().block_on(async {
        let (mut control, _rx, task) = run_client(gossip_swarm(false), &a.listen_addrs()[0]).await;
        let mut s = meshsub(&mut control, a.peer_id()).await;
        for i in 0..SENT {
            let key = Keypair::generate_ed25519();
            s.write_all(&publish_frame(&key, 1, format!("not cbor {i}").as_bytes())).await.expect("write");
        }
        s.flush().await.expect("flush");
        until("a to refuse them", || (metric(&a, "p2p_invalid_requests_total") >= 1.0).then_some(()));
        // A marker from another peer, relayed by a to b: a has forwarded
        // what it accepted before it.
        let (mut control, _rx2, task2) = run_client(gossip_swarm(false), &a.listen_addrs()[0]).await;
        let mut s = meshsub(&mut control, a.peer_id()).await;
        let marker = publish_marker(&mut s).await;
        until("the marker at b", || status_of(&b, marker));
        task.abort();
        task2.abort();
    });
    let warned = gossip_warns() - before;
    let refused = metric(&a, "p2p_invalid_requests_total");
    eprintln!("{SENT} malformed beats: {warned} WARN line(s), {refused} refused at a (the rest graylisted)");
    assert_eq!(warned, 1, "one WARN line for the relay");
    assert!(refused < SENT as f64, "the relay was graylisted: {refused} of {SENT} handled");
    assert_eq!(metric(&b, "p2p_invalid_requests_total"), 0.0, "nothing malformed reached b");
}
