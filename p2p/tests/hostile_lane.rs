//! Attacks on the message lane (`transport::lanes`) by an outsider: a raw
//! libp2p client (`hostile_client/`) that asks for lane tickets on
//! `/manta/lane/1` like a node would, then speaks the lane byte by byte
//! over TCP on 127.0.0.1. Every peer is a possible attacker: whatever it
//! sends, the node refuses it cleanly (the lane or the connection is
//! closed, a counter moves), never crashes, never buffers more than a
//! frame, and keeps serving an honest peer (over its own lane).
//!
//! | attack | outcome |
//! | --- | --- |
//! | more tickets than the caps | `Busy` beyond one per peer ([`tickets_beyond_the_caps_are_busy`]) |
//! | garbage, a 4 GiB length, a wrong tag, a reflected or replayed frame, a stray `Got`, an over-long `Get` | the lane is closed; the node serves on ([`bad_frames_close_the_lane`]) |
//! | a frame that stalls mid-way | closed at the frame deadline ([`bad_frames_close_the_lane`]) |
//! | a replayed hello, a wrong version, a hello without the secret, no ticket | closed without a byte, counted ([`bad_hellos_are_refused_without_a_byte`]) |
//! | a mail batch that does not decode, one sent twice, an ack that does not decode | `Ack{invalid}` (nothing applied), its first ack again, the lane closed ([`mail_on_a_lane_is_checked_and_deduplicated_like_libp2p_mail`]) |
//!
//! Plus: an honest `Get` from the raw client, sealed as the protocol says,
//! is answered with the object's bytes (the wire format is what
//! PROTOCOL.md describes).
//!
//! Invariants: tests run one at a time (a lock: they count this process's
//! threads); only 127.0.0.1; every wait is bounded (reads have timeouts,
//! polls a deadline).

#[allow(dead_code)] // a lane helper only
mod common;
#[allow(dead_code)]
mod hostile_client;

use hostile_client::{exchange, threads, Client};
use manta::{ObjectRef, Runtime};
use manta_p2p::fuzzing::lane::{
    decode_answer, encode_ask, encode_msg, lane_keys, LaneAnswer, LaneAsk, LaneMsg, Opener, Sealer, HEADER_BYTES,
    MAX_ANSWER_BYTES, MAX_LANE_IDS, TAG_BYTES,
};
use manta_p2p::fuzzing::mail::{decode_ack, encode_batch, Batch, Mail};
use manta_p2p::fuzzing::seal::{Hello, HelloKey, HELLO_BYTES, LANE_VERSION, MESSAGE_LANE_VERSION};
use manta_p2p::{FastLaneStats, Node};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Mutex;
use std::time::Duration;

const LANE: &str = "/manta/lane/1";

/// The nodes' request timeout: the lane's frame deadline.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);

/// Longest any wait of a test.
const WAIT: Duration = Duration::from_secs(30);

fn serial() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|p| p.into_inner())
}

fn tokio() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("tokio")
}

fn node(boot: Option<&Node>, secret: Option<[u8; 32]>) -> Node {
    let rt = Runtime::builder().num_cpus(1).build().expect("runtime");
    let mut b = Node::builder(rt)
        .listen("/ip4/127.0.0.1/tcp/0".parse().expect("addr"))
        .heartbeat(Duration::from_millis(100))
        .request_timeout(REQUEST_TIMEOUT);
    if let Some(s) = secret {
        b = b.secret(s);
    }
    if let Some(n) = boot {
        b = b.bootstrap(n.listen_addrs()[0].clone());
    }
    b.start().expect("node starts")
}

/// A ticket the raw client asks `a` for: the answer.
fn ask(tokio: &tokio::runtime::Runtime, client: &Client, a: &Node) -> LaneAnswer {
    tokio.block_on(async {
        let mut s = client.open(a.peer_id(), LANE).await.expect("a lane stream");
        let reply = exchange(&mut s, &encode_ask(&LaneAsk::Open), MAX_ANSWER_BYTES).await.expect("an answer");
        decode_answer(&reply).expect("decodes")
    })
}

/// Asks for a ticket and connects with its hello (version 3, MACed under
/// `hello`): the socket and the dialler's keys.
fn redeem(tokio: &tokio::runtime::Runtime, client: &Client, a: &Node, hello: &HelloKey) -> (TcpStream, Sealer, Opener) {
    let LaneAnswer::Ticket { port, token, key } = ask(tokio, client, a) else { panic!("no ticket") };
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(WAIT)).expect("timeout");
    s.write_all(&Hello { token }.to_bytes_version(hello, MESSAGE_LANE_VERSION)).expect("hello");
    let (sealer, opener) = lane_keys(&key, true);
    (s, sealer, opener)
}

/// Makes an attack's bytes (with the lane's sealer, for authentic ones).
type Attack = Box<dyn Fn(&mut Sealer) -> Vec<u8>>;

fn frame(sealer: &mut Sealer, msg: &LaneMsg) -> Vec<u8> {
    let mut out = Vec::new();
    sealer.seal(&encode_msg(msg), &mut out).expect("seals");
    out
}

/// Reads one frame from the node: its message.
fn read_msg(s: &mut TcpStream, opener: &mut Opener) -> LaneMsg {
    let mut header = [0u8; HEADER_BYTES];
    s.read_exact(&mut header).expect("a frame");
    let len = Opener::body_len(header).expect("within the cap");
    let mut body = vec![0u8; len + TAG_BYTES];
    s.read_exact(&mut body).expect("the frame's body");
    let plain = opener.open(header, &mut body).expect("authentic");
    manta_p2p::fuzzing::lane::decode_msg(plain).expect("decodes")
}

/// True if the node closes `s` (without sending anything) within `within`.
fn closed_within(s: &mut TcpStream, within: Duration) -> bool {
    s.set_read_timeout(Some(within)).expect("timeout");
    let mut buf = [0u8; 64];
    matches!(s.read(&mut buf), Ok(0))
        || matches!(s.read(&mut buf), Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset)
}

/// Polls `n`'s lane stats until `done` holds (bounded).
fn lane_until(n: &Node, done: impl Fn(&FastLaneStats) -> bool) -> FastLaneStats {
    common::lane_until(n, WAIT, done)
}

/// An honest get of a small object on `b` from `a` (over b's lane once up).
fn honest_get(a: &Node, b: &Node, k: u8) {
    let r = a.runtime().put(vec![k; 64]).expect("put");
    let there: ObjectRef<Vec<u8>> = b.decode_ref(&a.encode_ref(&r).expect("encode")).expect("decode");
    assert_eq!(*there.get_timeout(WAIT).expect("the honest get completes"), vec![k; 64]);
}

fn start(tokio: &tokio::runtime::Runtime, a: &Node) -> Client {
    tokio.block_on(async {
        let c = Client::start(hostile_client::swarm(None));
        c.dial(&a.listen_addrs()[0]).await.expect("the outsider connects");
        c
    })
}

#[test]
fn tickets_beyond_the_caps_are_busy() {
    let _serial = serial();
    let a = node(None, None);
    let tokio = tokio();
    let client = start(&tokio, &a);
    let first = ask(&tokio, &client, &a);
    assert!(matches!(first, LaneAnswer::Ticket { port, .. } if port == a.lane_stats().port.expect("a port")));
    // One inbound lane (or outstanding ticket) per peer: the rest are Busy.
    for _ in 0..100 {
        assert_eq!(ask(&tokio, &client, &a), LaneAnswer::Busy);
    }
    assert_eq!(a.fast_lane_stats().busy, 100);
}

#[test]
fn bad_frames_close_the_lane() {
    let _serial = serial();
    let a = node(None, None);
    let b = node(Some(&a), None);
    b.wait_for_peers(1, WAIT).expect("b joins");
    let held = a.runtime().put(vec![7u8; 64]).expect("put");
    let _ = a.encode_ref(&held).expect("exported");
    let tokio = tokio();
    let client = start(&tokio, &a);
    let hello = HelloKey::new(None);
    let base_threads = threads();

    // First, the protocol as written works from outside: a Get is answered.
    let (mut s, mut sealer, mut opener) = redeem(&tokio, &client, &a, &hello);
    let ids = vec![serde_bytes::ByteArray::new(held.id().to_bytes()), serde_bytes::ByteArray::new([0; 16])];
    s.write_all(&frame(&mut sealer, &LaneMsg::Get { tag: 41, ids })).expect("get");
    match read_msg(&mut s, &mut opener) {
        LaneMsg::Got { tag: 41, items } => {
            assert_eq!(items.len(), 2);
            assert!(items[0].as_ref().is_some_and(|b| b.len() > 64), "the object's encoding");
            assert_eq!(items[1], None, "an id it does not hold");
        }
        other => panic!("unexpected {other:?}"),
    }
    drop(s);
    let mut ended = lane_until(&a, |st| st.ended >= 1).ended;
    assert_eq!(ended, 1);

    // Then each attack on a fresh lane: the node closes it.
    let attacks: Vec<(&str, Attack)> = vec![
        ("garbage", Box::new(|_| b"\x00\x00\x00\x10 sixteen bytes!! and a bad tag....".to_vec())),
        ("a 4 GiB length", Box::new(|_| vec![0xff, 0xff, 0xff, 0xff, 1, 2, 3])),
        (
            "a wrong tag",
            Box::new(|s| {
                let mut f = frame(s, &LaneMsg::Get { tag: 1, ids: vec![] });
                let last = f.len() - 1;
                f[last] ^= 1;
                f
            }),
        ),
        (
            "a reflected frame",
            Box::new(|_| {
                let (mut theirs, _) = lane_keys(&[0; 32], false);
                frame(&mut theirs, &LaneMsg::Get { tag: 1, ids: vec![] })
            }),
        ),
        (
            "a replayed frame",
            Box::new(|s| {
                let f = frame(s, &LaneMsg::Get { tag: 1, ids: vec![] });
                [&f[..], &f[..]].concat()
            }),
        ),
        ("a stray Got", Box::new(|s| frame(s, &LaneMsg::Got { tag: 5, items: vec![None] }))),
        (
            "an over-long Get",
            Box::new(|s| {
                let ids = (0..=MAX_LANE_IDS).map(|i| serde_bytes::ByteArray::new([i as u8; 16])).collect();
                frame(s, &LaneMsg::Get { tag: 1, ids })
            }),
        ),
        ("a stalled frame", Box::new(|_| vec![0, 0, 1, 0, 9, 9])),
    ];
    for (what, attack) in &attacks {
        let (mut s, mut sealer, mut opener) = redeem(&tokio, &client, &a, &hello);
        let bytes = attack(&mut sealer);
        s.write_all(&bytes).expect("sent");
        // A replayed frame: the first copy is a valid Get, answered.
        if *what == "a replayed frame" {
            assert!(matches!(read_msg(&mut s, &mut opener), LaneMsg::Got { tag: 1, .. }));
        }
        let within = if *what == "a stalled frame" { 3 * REQUEST_TIMEOUT } else { REQUEST_TIMEOUT };
        assert!(closed_within(&mut s, within), "{what}: the node closes the lane");
        let now = lane_until(&a, |st| st.ended > ended).ended;
        assert_eq!(now, ended + 1, "{what}: the lane ended");
        ended = now;
        // The node serves on: b reads from it (over its own lane once up).
        honest_get(&a, &b, ended as u8);
    }
    assert!(threads() <= base_threads + 8, "threads {base_threads} -> {}", threads());
    let st = a.fast_lane_stats();
    assert_eq!(st.ended as usize, attacks.len() + 1, "{st:?}");
    assert!(b.fast_lane_stats().gets >= 1, "b's own lane kept working: {:?}", b.fast_lane_stats());
}

#[test]
fn bad_hellos_are_refused_without_a_byte() {
    let _serial = serial();
    let secret = [0x5a; 32];
    let a = node(None, Some(secret));
    let tokio = tokio();
    let client = tokio.block_on(async {
        let c = Client::start(hostile_client::swarm(Some(secret)));
        c.dial(&a.listen_addrs()[0]).await.expect("a member connects");
        c
    });
    let good = HelloKey::new(Some(&secret));
    let refused = |n| lane_until(&a, |s| s.refused >= n).refused;
    // A used ticket's hello, replayed.
    let LaneAnswer::Ticket { port, token, key: _ } = ask(&tokio, &client, &a) else { panic!("no ticket") };
    let hello = Hello { token }.to_bytes_version(&good, MESSAGE_LANE_VERSION);
    let mut first = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    first.write_all(&hello).expect("hello");
    assert_eq!(lane_until(&a, |s| s.accepted >= 1).accepted, 1);
    drop(first);
    assert_eq!(lane_until(&a, |s| s.ended >= 1).ended, 1);
    // (A pending ticket of its own lets the IP past the listener's gate.)
    let LaneAnswer::Ticket { token: second, key, .. } = ask(&tokio, &client, &a) else { panic!("no ticket") };
    let mut replayed = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    replayed.write_all(&hello).expect("hello");
    assert!(closed_within(&mut replayed, WAIT), "a replayed hello is refused");
    assert_eq!(refused(1), 1);
    // A hello of another version, or MACed without the secret: refused
    // before the token is looked at (the bulk lane counts it).
    let bulk_refused = a.lane_stats().refused;
    for bad in [
        Hello { token: [1; 32] }.to_bytes_version(&good, 4),
        Hello { token: [1; 32] }.to_bytes_version(&HelloKey::new(None), MESSAGE_LANE_VERSION),
        [0u8; HELLO_BYTES],
    ] {
        let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        s.write_all(&bad).expect("hello");
        assert!(closed_within(&mut s, WAIT), "a bad hello is refused");
    }
    assert!(a.lane_stats().refused >= bulk_refused + 3, "{:?}", a.lane_stats());
    // A message-lane ticket is not a bulk ticket: redeemed as version 2 it
    // is refused (the bulk lane has no such ticket).
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.write_all(&Hello { token: second }.to_bytes_version(&good, LANE_VERSION)).expect("hello");
    assert!(closed_within(&mut s, WAIT), "not a bulk ticket");
    assert_eq!(a.fast_lane_stats().accepted, 1);
    // None of the above burnt it: redeemed properly, it is a lane.
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.write_all(&Hello { token: second }.to_bytes_version(&good, MESSAGE_LANE_VERSION)).expect("hello");
    let (mut sealer, mut opener) = lane_keys(&key, true);
    s.write_all(&frame(&mut sealer, &LaneMsg::Get { tag: 3, ids: vec![] })).expect("get");
    assert_eq!(read_msg(&mut s, &mut opener), LaneMsg::Got { tag: 3, items: vec![] });
    assert_eq!(a.fast_lane_stats().accepted, 2);
}

#[test]
fn mail_on_a_lane_is_checked_and_deduplicated_like_libp2p_mail() {
    let _serial = serial();
    let a = node(None, None);
    let tokio = tokio();
    let client = start(&tokio, &a);
    let hello = HelloKey::new(None);
    let (mut s, mut sealer, mut opener) = redeem(&tokio, &client, &a, &hello);
    let ack_of = |s: &mut TcpStream, opener: &mut Opener| match read_msg(s, opener) {
        LaneMsg::Ack(bytes) => decode_ack(&bytes).expect("an ack"),
        other => panic!("unexpected {other:?}"),
    };
    // A batch that does not decode: answered invalid, nothing applied, the
    // lane stays.
    let junk = LaneMsg::Mail(serde_bytes::ByteBuf::from(b"\xa2\x61v\x01\x64body\xff".to_vec()));
    s.write_all(&frame(&mut sealer, &junk)).expect("mail");
    let ack = ack_of(&mut s, &mut opener);
    assert!(ack.invalid.is_some(), "{ack:?}");
    // A batch with a seq (a release of nothing it holds: harmless), then
    // the same again: both answered with the same ack.
    let batch = encode_batch(&Batch(vec![Mail::Seq(77), Mail::Release(vec![serde_bytes::ByteArray::new([9; 16])])]));
    for _ in 0..2 {
        s.write_all(&frame(&mut sealer, &LaneMsg::Mail(serde_bytes::ByteBuf::from(batch.clone())))).expect("mail");
        let ack = ack_of(&mut s, &mut opener);
        assert_eq!((ack.seq, ack.invalid.as_ref()), (77, None), "{ack:?}");
    }
    assert_eq!(a.fast_lane_stats().mail_received, 3);
    // An ack that does not decode ends the lane.
    s.write_all(&frame(&mut sealer, &LaneMsg::Ack(serde_bytes::ByteBuf::from(vec![0xff, 0x00])))).expect("ack");
    assert!(closed_within(&mut s, WAIT), "a bad ack closes the lane");
    assert_eq!(lane_until(&a, |st| st.ended >= 1).ended, 1);
}
