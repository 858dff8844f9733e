//! Attacks by a *holder*: the raw libp2p client of `hostile_client/`
//! serving manta's object protocol itself (named as an object's owner in a
//! forged ref, or registered as a DHT provider of an object), and by a DHT
//! member answering lookups, against a node that reads (issue 15).
//!
//! | attack (before) | now |
//! | --- | --- |
//! | a holder answering `Busy` at once, forever: `pull` asked again in a tight loop and `get` never returned | quick `Busy` answers are asked again after a doubling pause, at most 8 times; then the holder is given up and `get` fails with a typed error ([`a_holder_answering_busy_forever_is_given_up`]) |
//! | a provider serving forged bytes for an id whose owner is unreachable: accepted if they decoded | refused unless it gives the owner's voucher for exactly those bytes (a voucher signed by another key, for another id, of another length, for other bytes, huge or junk): `get` fails with `Unverified` naming it; with no voucher at all its bytes are not even asked for (it is taken as not holding the object) ([`a_holder_without_the_owners_voucher_for_its_bytes_is_refused`]) |
//! | the same, with an honest replica also holding it after the owner died | the forger (asked first) is refused even with the owner's genuine voucher, and the replica's bytes are read ([`a_forging_provider_is_refused_and_an_honest_replica_is_read_after_the_owner_died`]) |
//! | a copy's holder with the owner's genuine voucher answering every fetch with a slow `Busy` (as a running task's owner would): asked again for ever | a `Busy` from a holder that is not the owner (nor our task's executor) always counts as quick: given up after a few ([`a_copy_holder_answering_slow_busy_is_given_up`]) |
//! | a member answering a named-actor lookup with a record naming another host | the record is not signed by that host: dropped and counted; the lookup ends with the typed "no actor" timeout ([`a_forged_named_actor_record_is_refused`]) |
//!
//! Invariants: only 127.0.0.1 is used; every client call is bounded by
//! `hostile_client::CALL`; the raw server's task ends with the test; the
//! one loop that polls (for the replica's voucher) waits for a state it
//! checks, bounded by `WAIT`.

#[allow(dead_code)]
mod common;
#[allow(dead_code)]
mod hostile_client;

use futures::{AsyncReadExt, AsyncWriteExt, StreamExt};
use hostile_client::{framed, Client};
use libp2p::identity::Keypair;
use libp2p::{kad, StreamProtocol};
use manta::{Error, ObjectId, ObjectRef, Runtime};
use manta_p2p::fuzzing::hint;
use manta_p2p::fuzzing::plain::{actor_record_key, encode_actor_record, ActorRecord};
use manta_p2p::fuzzing::signed::{digest_of, encode_voucher, sign_record, sign_voucher, verify_voucher, Digest};
use manta_p2p::fuzzing::wire::{
    decode_request, decode_response, encode_request, encode_response, Request, Response, MAX_REQUEST_BYTES,
};
use manta_p2p::{ActorClass, Node, NodeError, PeerId, Registry, WaitedFor};
use serde_bytes::ByteBuf;
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Longest wait for peers, a get, a death.
const WAIT: Duration = Duration::from_secs(30);

const OBJECT: &str = "/manta/object/1";

/// A ref's serde form (`manta::backend::wire_ref`): the id and the owner
/// hint, as a node's `encode_ref` writes it.
#[derive(serde::Serialize)]
struct WireRef {
    id: ObjectId,
    #[serde(with = "serde_bytes")]
    owner: Vec<u8>,
}

/// How a raw holder answers a request.
type Answer = Arc<dyn Fn(&Request) -> Response + Send + Sync>;

/// Serves the object protocol on `c`: every request is answered by
/// `answer`; `asked` counts the requests. Runs until the test ends.
fn serve(c: &Client, asked: Arc<AtomicUsize>, answer: impl Fn(&Request) -> Response + Send + Sync + 'static) {
    let answer: Answer = Arc::new(answer);
    let mut incoming = c.control.clone().accept(StreamProtocol::new(OBJECT)).expect("accept the object protocol");
    tokio::spawn(async move {
        while let Some((_, mut s)) = incoming.next().await {
            let (asked, answer) = (asked.clone(), answer.clone());
            tokio::spawn(async move {
                loop {
                    let mut prefix = [0u8; 4];
                    if s.read_exact(&mut prefix).await.is_err() {
                        return;
                    }
                    let len = u32::from_be_bytes(prefix) as usize;
                    if len > MAX_REQUEST_BYTES {
                        return;
                    }
                    let mut body = vec![0u8; len];
                    if s.read_exact(&mut body).await.is_err() {
                        return;
                    }
                    let Ok(req) = decode_request(&body) else { return };
                    asked.fetch_add(1, Ordering::SeqCst);
                    let reply = framed(&encode_response(&answer(&req)));
                    if s.write_all(&reply).await.is_err() || s.flush().await.is_err() {
                        return;
                    }
                }
            });
        }
    });
}

#[test]
fn a_holder_answering_busy_forever_is_given_up() {
    let rt = Runtime::builder().num_cpus(1).build().expect("runtime");
    let n = Node::builder(rt)
        .listen("/ip4/127.0.0.1/tcp/0".parse().expect("addr"))
        .heartbeat(Duration::from_millis(100))
        .start()
        .expect("node starts");
    let tokio = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("tokio");
    let asked = Arc::new(AtomicUsize::new(0));
    let liar = tokio.block_on(async {
        let c = Client::start(hostile_client::swarm(None));
        serve(&c, asked.clone(), |_| Response::Busy);
        c.dial(&n.listen_addrs()[0]).await.expect("the holder connects");
        c
    });
    // A ref that names the raw client as the owner of an object nobody
    // else holds.
    let mut bytes = Vec::new();
    let forged = WireRef { id: ObjectId::from_bytes([0x5a; 16]), owner: hint::encode(&liar.peer, &[]) };
    ciborium::into_writer(&forged, &mut bytes).expect("encode");
    let r = n.decode_ref::<Vec<u8>>(&bytes).expect("the ref decodes");

    let t = Instant::now();
    let got = r.get_timeout(Duration::from_secs(60));
    let took = t.elapsed();
    let asked = asked.load(Ordering::SeqCst);
    eprintln!("busy holder: {asked} requests in {took:?}: {got:?}");
    match got {
        Err(Error::PeerUnreachable { reason, .. }) => assert!(reason.contains("busy"), "{reason}"),
        // (`Timeout` here would mean the holder was never given up.)
        other => panic!("expected PeerUnreachable naming busy, got {other:?}"),
    }
    // One batched small-object request, then two tries of the holder (an
    // unreachable one gets one more), each at most 1 + 8 requests; before,
    // a request loop until the get's timeout.
    assert!(asked <= 1 + 2 * 9, "{asked} requests");
    drop(liar);
    n.shutdown();
}

// ---- content from holders other than the owner (vouchers) ----

/// The CBOR encoding of `s`, as a node serves a `String` object.
fn cbor(s: &str) -> Vec<u8> {
    let mut out = Vec::new();
    ciborium::into_writer(&s.to_string(), &mut out).expect("encode");
    out
}

/// A value of `len` characters that differs from any other `seed`'s.
fn text(len: usize, seed: char) -> String {
    std::iter::repeat_n(seed, len).collect()
}

/// A node on 127.0.0.1 with a fast heartbeat (so deaths are seen soon).
fn node_with(boot: Option<&Node>, f: impl FnOnce(manta_p2p::NodeBuilder) -> manta_p2p::NodeBuilder) -> Node {
    let rt = Runtime::builder().num_cpus(1).build().expect("runtime");
    let mut b = Node::builder(rt)
        .listen("/ip4/127.0.0.1/tcp/0".parse().expect("addr"))
        .heartbeat(Duration::from_millis(100))
        .failure_timeout(Duration::from_millis(1500))
        .registry(Registry::new().actor(&THING));
    if let Some(n) = boot {
        b = b.bootstrap(n.listen_addrs()[0].clone());
    }
    f(b).start().expect("node starts")
}

fn metric(n: &Node, name: &str) -> f64 {
    let m = n.runtime().metrics();
    m.cluster.iter().find(|(k, _)| k == name).map(|(_, v)| *v).unwrap_or_else(|| panic!("no metric {name}"))
}

/// A raw client in Kademlia server mode, listening on 127.0.0.1 (so its
/// provider records carry an address and nodes route DHT queries to it).
fn raw_server(key: Keypair) -> Client {
    let mut swarm = hostile_client::swarm_with(key, kad::Mode::Server);
    swarm.listen_on("/ip4/127.0.0.1/tcp/0".parse().expect("addr")).expect("listens");
    Client::start(swarm)
}

/// What the forging holder answers for one object id.
#[derive(Clone)]
struct Forged {
    /// The encoding it serves.
    bytes: Vec<u8>,
    /// Its answer to a voucher request.
    voucher: Option<Vec<u8>>,
}

/// A holder answering for the objects of `table`: the bytes it has for a
/// fetch (whole, in one reply, or in a batch) and its voucher; `NotFound`
/// for others. `vouch_asked` counts voucher requests.
fn forger(table: HashMap<[u8; 16], Forged>, vouch_asked: Arc<AtomicUsize>) -> impl Fn(&Request) -> Response {
    move |req| match req {
        Request::Vouch { ids } => {
            vouch_asked.fetch_add(1, Ordering::SeqCst);
            Response::Vouchers {
                items: ids.iter().map(|id| table.get(&**id)?.voucher.clone().map(ByteBuf::from)).collect(),
            }
        }
        Request::FetchSmall { ids } => Response::Objects {
            items: ids.iter().map(|id| table.get(&**id).map(|f| ByteBuf::from(f.bytes.clone()))).collect(),
        },
        Request::Fetch { id, offset: 0, .. } => match table.get(id) {
            Some(f) => Response::Chunk { total: f.bytes.len() as u64, offset: 0, data: f.bytes.clone() },
            None => Response::NotFound,
        },
        _ => Response::NotFound,
    }
}

/// A ref to `id` of type `String` whose owner hint names `owner` at a
/// 127.0.0.1 port nothing listens on (the owner is unreachable).
fn unreachable_owner_ref(n: &Node, id: [u8; 16], owner: PeerId) -> ObjectRef<String> {
    let port = std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port();
    let addr: libp2p::Multiaddr = format!("/ip4/127.0.0.1/tcp/{port}").parse().expect("addr");
    let mut bytes = Vec::new();
    let wire = WireRef { id: ObjectId::from_bytes(id), owner: hint::encode(&owner, &[addr]) };
    ciborium::into_writer(&wire, &mut bytes).expect("encode");
    n.decode_ref::<String>(&bytes).expect("the ref decodes")
}

/// A holder that is not the owner serves bytes for ids whose owner cannot
/// be reached; every way of forging them is refused with `Unverified`, and
/// a voucher that is the owner's for exactly the bytes served is accepted
/// (the check is not a wall).
#[test]
fn a_holder_without_the_owners_voucher_for_its_bytes_is_refused() {
    let n = node_with(None, |b| b);
    let tokio = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("tokio");
    // The owner's key (no node runs it: the owner is unreachable) and the
    // forger's.
    let (owner, forger_key) = (Keypair::generate_ed25519(), Keypair::generate_ed25519());
    let owner_peer = owner.public().to_peer_id();
    let genuine = cbor(&text(3000, 'g'));
    let forged = cbor(&text(3000, 'f'));
    assert_eq!(genuine.len(), forged.len());
    let sign = |key: &Keypair, id: [u8; 16], bytes: &[u8]| {
        encode_voucher(&sign_voucher(key, id, &digest_of(bytes)).expect("signs"))
    };
    let wrong_len = |id: [u8; 16]| {
        let d = Digest { len: forged.len() as u64 + 1, ..digest_of(&forged) };
        encode_voucher(&sign_voucher(&owner, id, &d).expect("signs"))
    };
    // (name, id, what the forger answers)
    let cases: Vec<(&str, [u8; 16], Forged)> = vec![
        (
            "signed by the forger",
            [0x62; 16],
            Forged { bytes: forged.clone(), voucher: Some(sign(&forger_key, [0x62; 16], &forged)) },
        ),
        (
            "the owner's, for another id",
            [0x63; 16],
            Forged { bytes: forged.clone(), voucher: Some(sign(&owner, [0x99; 16], &forged)) },
        ),
        (
            "the owner's, with forged bytes",
            [0x64; 16],
            Forged { bytes: forged.clone(), voucher: Some(sign(&owner, [0x64; 16], &genuine)) },
        ),
        (
            "the owner's, of another length",
            [0x65; 16],
            Forged { bytes: forged.clone(), voucher: Some(wrong_len([0x65; 16])) },
        ),
        ("a huge voucher", [0x66; 16], Forged { bytes: forged.clone(), voucher: Some(vec![0xab; 60_000]) }),
        ("junk for a voucher", [0x67; 16], Forged { bytes: forged.clone(), voucher: Some(vec![0x81; 40]) }),
    ];
    let control = ([0x6f; 16], Forged { bytes: genuine.clone(), voucher: Some(sign(&owner, [0x6f; 16], &genuine)) });
    // No voucher at all: as an honest holder without the object answers.
    let none = ([0x61; 16], Forged { bytes: forged.clone(), voucher: None });
    let table: HashMap<[u8; 16], Forged> =
        cases.iter().map(|(_, id, f)| (*id, f.clone())).chain([control.clone(), none.clone()]).collect();
    let (vouch_asked, fetches) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let liar = tokio.block_on(async {
        let c = raw_server(forger_key.clone());
        let answer = forger(table, vouch_asked.clone());
        let counted = fetches.clone();
        serve(&c, Arc::new(AtomicUsize::new(0)), move |req| {
            if !matches!(req, Request::Vouch { .. }) {
                counted.fetch_add(1, Ordering::SeqCst);
            }
            answer(req)
        });
        c.dial(&n.listen_addrs()[0]).await.expect("the forger connects");
        for id in cases.iter().map(|c| c.1).chain([control.0, none.0]) {
            assert!(c.provide(&id).await, "the forger registers as a provider");
        }
        c
    });
    for (i, (name, id, _)) in cases.iter().enumerate() {
        let r = unreachable_owner_ref(&n, *id, owner_peer);
        match r.get_timeout(Duration::from_secs(60)) {
            Err(Error::Unverified { reason, .. }) => {
                eprintln!("{name}: {reason}");
                assert!(reason.contains(&liar.peer.to_string()), "{name}: names the holder: {reason}");
            }
            other => panic!("{name}: expected Unverified, got {other:?}"),
        }
        assert!(metric(&n, "p2p_holders_rejected_total") >= (i + 1) as f64, "{name}: counted");
    }
    assert!(vouch_asked.load(Ordering::SeqCst) >= cases.len(), "every case asked for a voucher");
    // A holder with no voucher is taken as not holding the object (what
    // an honest one with a stale DHT record says): not read, and the get
    // fails as for an object nobody reachable holds.
    let fetched = fetches.load(Ordering::SeqCst);
    match unreachable_owner_ref(&n, none.0, owner_peer).get_timeout(Duration::from_secs(60)) {
        Err(Error::PeerUnreachable { reason, .. }) => {
            assert!(reason.contains(&format!("{}: does not hold it", liar.peer)), "{reason}")
        }
        other => panic!("no voucher: expected PeerUnreachable (the owner), got {other:?}"),
    }
    assert_eq!(fetches.load(Ordering::SeqCst), fetched, "no voucher: no byte was asked for");
    // The owner's voucher for exactly these bytes: accepted.
    let r = unreachable_owner_ref(&n, control.0, owner_peer);
    assert_eq!(*r.get_timeout(Duration::from_secs(60)).expect("vouched for by the owner"), text(3000, 'g'));
    drop(liar);
    n.shutdown();
}

/// A copy's holder (not the owner: its bytes need the owner's voucher)
/// that has the owner's genuine voucher but answers every fetch with a
/// slow `Busy` (as an owner whose task still runs would) is given up after
/// a few answers, not asked again for ever: only the owner or the
/// executor can have the object's task running.
#[test]
fn a_copy_holder_answering_slow_busy_is_given_up() {
    let n = node_with(None, |b| b);
    let tokio = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("tokio");
    let owner = Keypair::generate_ed25519();
    let owner_peer = owner.public().to_peer_id();
    let genuine = cbor(&text(3000, 's'));
    let id = [0x71; 16];
    let voucher = encode_voucher(&sign_voucher(&owner, id, &digest_of(&genuine)).expect("signs"));
    let table = HashMap::from([(id, Forged { bytes: genuine, voucher: Some(voucher) })]);
    let (vouch_asked, asked) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let liar = tokio.block_on(async {
        let c = raw_server(Keypair::generate_ed25519());
        let answer = forger(table, vouch_asked.clone());
        serve(&c, asked.clone(), move |req| match req {
            Request::Vouch { .. } => answer(req),
            _ => {
                // Slower than `QUICK_BUSY`: what an owner says after
                // waiting for a running task (this stalls only the
                // attacker's own stream).
                std::thread::sleep(Duration::from_millis(550));
                Response::Busy
            }
        });
        c.dial(&n.listen_addrs()[0]).await.expect("the holder connects");
        assert!(c.provide(&id).await, "it registers as a provider");
        c
    });
    let t = Instant::now();
    let got = unreachable_owner_ref(&n, id, owner_peer).get_timeout(Duration::from_secs(120));
    let (took, asked) = (t.elapsed(), asked.load(Ordering::SeqCst));
    eprintln!("slow busy copy holder: {asked} requests in {took:?}: {got:?}");
    match got {
        Err(Error::PeerUnreachable { reason, .. }) => assert!(reason.contains("busy"), "{reason}"),
        other => panic!("expected PeerUnreachable naming busy (not Timeout), got {other:?}"),
    }
    // One batched small-object request, then two tries of the holder, each
    // a voucher request and at most 1 + 8 fetches; before, fetches until
    // the get's timeout.
    assert!(asked <= 1 + 2 * (1 + 9), "{asked} requests");
    drop(liar);
    n.shutdown();
}

/// An object whose owner died is read from an honest replica even though a
/// forging provider is asked first (providers are tried in peer-id order,
/// and the forger's is made the smaller): the forger serves the owner's
/// genuine voucher (taken from the replica) with forged bytes, and is
/// refused.
#[test]
fn a_forging_provider_is_refused_and_an_honest_replica_is_read_after_the_owner_died() {
    // Keys such that the forger sorts before the honest replica holder.
    let honest_key = Keypair::generate_ed25519();
    let honest = honest_key.public().to_peer_id();
    let forger_key = std::iter::repeat_with(Keypair::generate_ed25519)
        .find(|k| k.public().to_peer_id() < honest)
        .expect("a smaller peer id");
    let owner = node_with(None, |b| b);
    let holder = node_with(Some(&owner), |b| b.keypair(honest_key));
    let reader = node_with(Some(&owner), |b| b);
    for n in [&owner, &holder, &reader] {
        n.wait_for_peers(2, WAIT).expect("joins");
    }
    let value = text(5000, 'v');
    let r = owner.runtime().put(value.clone()).expect("put");
    let id = r.id().to_bytes();
    let wire = owner.encode_ref(&r).expect("encode");
    // The honest holder reads it (a replica, announced in the DHT) and
    // gets the owner's voucher in the background.
    let at_holder: ObjectRef<String> = holder.decode_ref(&wire).expect("decode");
    assert_eq!(*at_holder.get_timeout(WAIT).expect("replica"), value);
    holder.flush_announcements().expect("announced");
    let at_reader: ObjectRef<String> = reader.decode_ref(&wire).expect("decode");
    assert!(reader.flush_mail(WAIT), "the reader's borrow reached the owner");
    let tokio = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("tokio");
    let vouch_asked = Arc::new(AtomicUsize::new(0));
    let owner_peer = owner.peer_id();
    let liar = tokio.block_on(async {
        let c = raw_server(forger_key);
        c.dial(&holder.listen_addrs()[0]).await.expect("connects to the holder");
        c.dial(&reader.listen_addrs()[0]).await.expect("connects to the reader");
        // The owner's genuine voucher, as the holder serves it (once the
        // holder has it: until then it has none of the owner's).
        let deadline = Instant::now() + WAIT;
        let voucher = loop {
            let mut s = c.open(holder.peer_id(), OBJECT).await.expect("an object stream");
            let ask = encode_request(&Request::Vouch { ids: vec![serde_bytes::ByteArray::new(id)] });
            let reply = hostile_client::exchange(&mut s, &ask, 1 << 20).await.expect("a reply");
            if let Ok(Response::Vouchers { items }) = decode_response(&reply) {
                if let Some(Some(v)) = items.into_iter().next() {
                    if verify_voucher(&v, &id, &owner_peer).is_ok() {
                        break v.into_vec();
                    }
                }
            }
            assert!(Instant::now() < deadline, "the holder never got the owner's voucher");
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let forged = cbor(&text(5000, 'x'));
        assert_eq!(forged.len(), cbor(&value).len());
        let table = HashMap::from([(id, Forged { bytes: forged, voucher: Some(voucher) })]);
        serve(&c, Arc::new(AtomicUsize::new(0)), forger(table, vouch_asked.clone()));
        assert!(c.provide(&id).await, "the forger registers as a provider");
        c
    });
    common::stop_and_see_die(&owner, &reader, WAIT);
    let got = at_reader.get_timeout(WAIT).unwrap_or_else(|e| panic!("read after the owner died: {e}"));
    assert_eq!(*got, value, "the honest replica's bytes");
    assert!(vouch_asked.load(Ordering::SeqCst) >= 1, "the forger (first in order) was asked");
    assert!(metric(&reader, "p2p_holders_rejected_total") >= 1.0, "and refused");
    drop(liar);
}

// ---- named-actor records ----

struct Thing;
static THING: ActorClass<(), Thing> = ActorClass::new("Thing", |()| Thing);

/// A member answering a named-actor lookup with a record it forged (naming
/// another host, signed by itself) is not believed: the lookup finds no
/// actor (the typed timeout), and the record is counted.
#[test]
fn a_forged_named_actor_record_is_refused() {
    let host = node_with(None, |b| b);
    let reader = node_with(Some(&host), |b| b);
    reader.wait_for_peers(1, WAIT).expect("joins");
    let tokio = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("tokio");
    let key = Keypair::generate_ed25519();
    let liar = tokio.block_on(async {
        let c = raw_server(key.clone());
        let dht_key = actor_record_key("ghost");
        // It names the honest host (so a reader would call it there), but
        // only the host can sign that.
        let rec = ActorRecord {
            actor: [5; 16],
            class: "Thing".into(),
            host: hint::encode(&host.peer_id(), &host.listen_addrs()),
        };
        let forged = sign_record(&key, &dht_key, encode_actor_record(&rec)).expect("signs");
        assert!(c.store(kad::Record::new(kad::RecordKey::new(&dht_key), forged)).await);
        // The old, unsigned form too.
        let plain = actor_record_key("plain");
        assert!(c.store(kad::Record::new(kad::RecordKey::new(&plain), encode_actor_record(&rec))).await);
        c.dial(&reader.listen_addrs()[0]).await.expect("connects");
        c
    });
    for name in ["ghost", "plain"] {
        let before = metric(&reader, "p2p_actor_records_rejected_total");
        match reader.get_actor(&THING, name, Duration::from_secs(5)) {
            Err(NodeError::Timeout { waited_for: WaitedFor::Actor(n), .. }) => assert_eq!(n, name),
            Err(e) => panic!("{name}: expected the typed timeout, got {e}"),
            Ok(_) => panic!("{name}: a forged record was believed"),
        }
        assert!(
            metric(&reader, "p2p_actor_records_rejected_total") > before,
            "{name}: the forged record was seen and counted"
        );
    }
    // A genuine record still resolves.
    let _a = host.actor_builder(&THING).name("real").spawn(());
    assert!(reader.get_actor(&THING, "real", WAIT).is_ok(), "a record signed by its host");
    drop(liar);
}

/// A node that read a copy from its owner gets the owner's voucher in the
/// background (no flush) and serves it; before that it has only its own
/// signature to give, which does not verify as the owner's.
#[test]
fn a_copy_gets_its_owners_voucher_in_the_background() {
    let owner = node_with(None, |b| b);
    let holder = node_with(Some(&owner), |b| b);
    holder.wait_for_peers(1, WAIT).expect("joins");
    let r = owner.runtime().put(text(100, 'b')).expect("put");
    let id = r.id().to_bytes();
    let at_holder: ObjectRef<String> = holder.decode_ref(&owner.encode_ref(&r).expect("encode")).expect("decode");
    assert_eq!(*at_holder.get_timeout(WAIT).expect("a copy"), text(100, 'b'));
    let tokio = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("tokio");
    let owner_peer = owner.peer_id();
    tokio.block_on(async {
        let c = Client::start(hostile_client::swarm(None));
        c.dial(&holder.listen_addrs()[0]).await.expect("connects");
        let deadline = Instant::now() + WAIT;
        loop {
            let mut s = c.open(holder.peer_id(), OBJECT).await.expect("an object stream");
            let ask = encode_request(&Request::Vouch { ids: vec![serde_bytes::ByteArray::new(id)] });
            let reply = hostile_client::exchange(&mut s, &ask, 1 << 20).await.expect("a reply");
            let Ok(Response::Vouchers { items }) = decode_response(&reply) else { panic!("not a voucher list") };
            let v = items.into_iter().next().flatten().expect("the holder holds it: some voucher");
            if let Ok(d) = verify_voucher(&v, &id, &owner_peer) {
                assert_eq!(d, digest_of(&cbor(&text(100, 'b'))), "the owner vouches for the bytes it serves");
                break;
            }
            assert!(Instant::now() < deadline, "the holder never got the owner's voucher");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
}
