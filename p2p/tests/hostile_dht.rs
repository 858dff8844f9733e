//! Attacks on a node's DHT store and on its chunk server's byte budget, by
//! raw libp2p clients on 127.0.0.1 (`hostile_client/`), against nodes in
//! this process: each shows the per-peer bound holds and honest work still
//! goes through.
//!
//! | attack (before) | now |
//! | --- | --- |
//! | one member stores 4,096 self-signed names: the store is full, new honest named actors resolve nowhere, not even on their host | `MAX_RECORDS_PER_HOST` names per host, fair-share eviction when full, our own always stored ([`name_squatting_is_capped_per_host_and_honest_names_resolve`]) |
//! | 12,000 `ADD_PROVIDER`s with 16 addresses of 940 bytes: +409 MiB, kept 48 h | `MAX_PROVIDER_RECORDS_PER_PEER` records per provider, 4 addresses of at most 128 bytes each, forgotten once the provider is gone for a failure timeout ([`provider_floods_are_capped_per_peer_and_forgotten`]) |
//! | 32 streams x `Fetch { len: 4 MiB }`, never read: ~130 MiB held per peer | chunks built only once charged: at most the 20 MiB budget ([`unread_chunk_replies_stay_within_the_budget`]) |
//!
//! Invariants: only 127.0.0.1 is used; every loop is bounded in count and
//! every wait has a deadline (conditions are polled, never slept on).

#[allow(dead_code)]
mod hostile_client;

use futures::{AsyncReadExt, AsyncWriteExt};
use hostile_client::{field_bytes as field, varint, Client, CALL};
use libp2p::identity::Keypair;
use libp2p::{kad, Multiaddr, PeerId, Stream};
use manta::{ObjectRef, Runtime};
use manta_p2p::fuzzing::hint;
use manta_p2p::fuzzing::limits::{
    BUDGET_PER_PEER, MAX_PROVIDER_ADDRS, MAX_PROVIDER_ADDR_BYTES, MAX_PROVIDER_RECORDS_PER_PEER, MAX_RECORDS_PER_HOST,
};
use manta_p2p::fuzzing::plain::{actor_record_key, encode_actor_record, ActorRecord};
use manta_p2p::fuzzing::signed::sign_record;
use manta_p2p::fuzzing::wire::{decode_response, encode_request, Request, Response};
use manta_p2p::{ActorClass, Node, Registry};
use std::time::{Duration, Instant};

const OBJECT: &str = "/manta/object/1";
/// The nodes' request timeout (the frame deadline of their servers).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);
/// The nodes' failure timeout.
const FAILURE_TIMEOUT: Duration = Duration::from_secs(1);
/// Named-actor records the whole store holds (`MAX_RECORDS`).
const MAX_RECORDS: usize = 4096;

struct Thing;
static THING: ActorClass<(), Thing> = ActorClass::new("Thing", |()| Thing);

fn tokio() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("tokio")
}

/// A node on 127.0.0.1 with the test's timeouts (bootstrapping from `boot`).
fn node(boot: Option<&Node>) -> Node {
    let rt = Runtime::builder().num_cpus(1).build().expect("runtime");
    let mut b = Node::builder(rt)
        .listen("/ip4/127.0.0.1/tcp/0".parse().expect("addr"))
        .heartbeat(Duration::from_millis(100))
        .failure_timeout(FAILURE_TIMEOUT)
        .request_timeout(REQUEST_TIMEOUT)
        .registry(Registry::new().actor(&THING));
    if let Some(n) = boot {
        b = b.bootstrap(n.listen_addrs()[0].clone());
    }
    b.start().expect("node starts")
}

fn metric(n: &Node, name: &str) -> f64 {
    let m = n.runtime().metrics();
    m.cluster.iter().find(|(k, _)| k == name).map(|(_, v)| *v).unwrap_or_else(|| panic!("no metric {name}"))
}

/// A named-actor record for `name` hosted by `host` and signed by it, as
/// a host publishes it.
fn named(host: &Keypair, name: &str) -> kad::Record {
    let key = actor_record_key(name);
    let rec =
        ActorRecord { actor: [3; 16], class: "Thing".into(), host: hint::encode(&host.public().to_peer_id(), &[]) };
    let value = sign_record(host, &key, encode_actor_record(&rec)).expect("signs");
    kad::Record::new(kad::RecordKey::new(&key), value)
}

#[test]
fn name_squatting_is_capped_per_host_and_honest_names_resolve() {
    let a = node(None);
    let b = node(Some(&a));
    b.wait_for_peers(1, Duration::from_secs(30)).expect("b joins");
    let hosts = MAX_RECORDS / MAX_RECORDS_PER_HOST;
    tokio().block_on(async {
        let asker = Client::start(hostile_client::swarm(None));
        asker.dial(&a.listen_addrs()[0]).await.expect("connects");
        // `hosts` squatters, each claiming its whole share of names on A
        // (one at a time: connections per IP are capped), fill A's store;
        // the first also tries names beyond its share.
        for h in 0..hosts {
            let key = Keypair::generate_ed25519();
            let squatter = Client::start(hostile_client::swarm_with(key.clone(), kad::Mode::Client));
            squatter.dial(&a.listen_addrs()[0]).await.expect("connects");
            let extra = if h == 0 { 8 } else { 0 };
            let names: Vec<usize> = (0..MAX_RECORDS_PER_HOST + extra).collect();
            // 16 at a time, answered in any order: each answer comes once
            // A has handled that record.
            for batch in names.chunks(16) {
                let puts =
                    batch.iter().map(|i| squatter.put_record_to(named(&key, &format!("squat-{h}-{i}")), a.peer_id()));
                let answered = futures::future::join_all(puts).await;
                assert!(answered.iter().all(|ok| *ok), "A answers every put");
            }
        }
        // The first squatter's names: its share kept, the rest refused.
        let first = |i: usize| actor_record_key(&format!("squat-0-{i}"));
        let mut kept = 0;
        for i in 0..MAX_RECORDS_PER_HOST + 8 {
            kept += usize::from(asker.get_record(&first(i)).await.is_some());
        }
        assert_eq!(kept, MAX_RECORDS_PER_HOST, "a host keeps its share of names, no more");
    });
    // A's store is full of others' names: a new honest host's name gets
    // in (fair share) and A's own always does.
    let _after = b.actor_builder(&THING).name("after").spawn(());
    let _mine = a.actor_builder(&THING).name("mine").spawn(());
    let wait = Duration::from_secs(10);
    a.get_actor(&THING, "after", wait).expect("A resolves B's new actor");
    b.get_actor(&THING, "after", wait).expect("B resolves its own actor");
    b.get_actor(&THING, "mine", wait).expect("B resolves A's new actor");
    a.get_actor(&THING, "mine", wait).expect("A resolves its own actor");
}

/// A Kademlia message (`type`, `key`, one peer in field `peers` if
/// given), varint-length-prefixed.
fn kad_message(kind: u8, key: &[u8], peer: Option<(u64, PeerId, &[Multiaddr])>) -> Vec<u8> {
    let mut msg = vec![0x08, kind];
    field(0x12, key, &mut msg);
    if let Some((tag, id, addrs)) = peer {
        let mut p = Vec::new();
        field(0x0a, &id.to_bytes(), &mut p);
        for a in addrs {
            field(0x12, &a.to_vec(), &mut p);
        }
        field(tag, &p, &mut msg);
    }
    let mut out = Vec::new();
    varint(msg.len() as u64, &mut out);
    out.extend_from_slice(&msg);
    out
}

/// `ADD_PROVIDER` of `key` naming `provider` at `addrs`.
fn add_provider(key: &[u8], provider: PeerId, addrs: &[Multiaddr]) -> Vec<u8> {
    kad_message(2, key, Some((0x4a, provider, addrs)))
}

/// Reads a protobuf varint from `bytes` at `*at`.
fn read_varint(bytes: &[u8], at: &mut usize) -> u64 {
    let mut n = 0u64;
    for shift in (0..64).step_by(7) {
        let b = bytes[*at];
        *at += 1;
        n |= u64::from(b & 0x7f) << shift;
        if b < 0x80 {
            break;
        }
    }
    n
}

/// The length-delimited fields numbered `want` of protobuf `bytes`.
fn fields(bytes: &[u8], want: u64) -> Vec<&[u8]> {
    let (mut at, mut out) = (0, Vec::new());
    while at < bytes.len() {
        let tag = read_varint(bytes, &mut at);
        match tag & 7 {
            0 => {
                read_varint(bytes, &mut at);
            }
            2 => {
                let len = read_varint(bytes, &mut at) as usize;
                if tag >> 3 == want {
                    out.push(&bytes[at..at + len]);
                }
                at += len;
            }
            other => panic!("wire type {other} in a Kademlia message"),
        }
    }
    out
}

/// Asks for the providers of `key` on raw Kademlia stream `s`: each
/// provider's id and addresses.
async fn get_providers(s: &mut Stream, key: &[u8]) -> Vec<(PeerId, Vec<Vec<u8>>)> {
    let io = async {
        s.write_all(&kad_message(3, key, None)).await?;
        s.flush().await?;
        let mut len = Vec::new();
        loop {
            let mut b = [0u8; 1];
            s.read_exact(&mut b).await?;
            len.push(b[0]);
            if b[0] < 0x80 {
                break;
            }
        }
        let mut msg = vec![0u8; read_varint(&len, &mut 0) as usize];
        s.read_exact(&mut msg).await?;
        Ok::<_, std::io::Error>(msg)
    };
    let msg = tokio::time::timeout(CALL, io).await.expect("an answer in time").expect("an answer");
    fields(&msg, 9)
        .into_iter()
        .map(|p| {
            let id = PeerId::from_bytes(fields(p, 1)[0]).expect("a peer id");
            (id, fields(p, 2).into_iter().map(<[u8]>::to_vec).collect())
        })
        .collect()
}

#[test]
fn provider_floods_are_capped_per_peer_and_forgotten() {
    let a = node(None);
    let b = node(Some(&a));
    b.wait_for_peers(1, Duration::from_secs(30)).expect("b joins");
    let key = |i: usize| {
        let mut k = [0xeeu8; 16];
        k[..8].copy_from_slice(&(i as u64).to_le_bytes());
        k
    };
    let short: Multiaddr = "/ip4/127.0.0.1/tcp/9".parse().expect("addr");
    let long: Multiaddr = format!("/dns4/{}/tcp/9", "p".repeat(940)).parse().expect("addr");
    let sent = MAX_PROVIDER_RECORDS_PER_PEER + 16;
    tokio().block_on(async {
        let flooder = Client::start(hostile_client::swarm(None));
        let asker = Client::start(hostile_client::swarm(None));
        for c in [&flooder, &asker] {
            c.dial(&a.listen_addrs()[0]).await.expect("connects");
        }
        let mut s = flooder.open(a.peer_id(), hostile_client::KAD).await.expect("a raw kad stream");
        // The first records with 15 addresses of ~950 bytes (a 15 KB
        // message), the rest with one short address: pipelined on one
        // stream, handled in order.
        let mut big = vec![long.clone(); 15];
        big.push(short.clone());
        for i in 0..sent {
            let addrs = if i < 4 { &big[..] } else { std::slice::from_ref(&short) };
            s.write_all(&add_provider(&key(i), flooder.peer, addrs)).await.expect("sent");
        }
        // Answered after every record before it was handled.
        assert!(get_providers(&mut s, &key(0)).await.is_empty(), "its own records are not shown to it");
        let mut ask = asker.open(a.peer_id(), hostile_client::KAD).await.expect("a raw kad stream");
        let first = get_providers(&mut ask, &key(0)).await;
        assert_eq!(first.len(), 1, "{first:?}");
        let (id, addrs) = &first[0];
        assert_eq!(*id, flooder.peer);
        assert!(addrs.len() <= MAX_PROVIDER_ADDRS, "{} addresses", addrs.len());
        // (Kademlia appends `/p2p/<id>` to each address it answers with.)
        let p2p = Multiaddr::empty().with_p2p(flooder.peer).expect("a p2p suffix").to_vec();
        assert!(addrs.iter().all(|a| a.len() <= MAX_PROVIDER_ADDR_BYTES + p2p.len()), "long addresses dropped");
        assert_eq!(addrs, &vec![[short.to_vec(), p2p].concat()], "the short one kept, alone");
        let last_kept = get_providers(&mut ask, &key(MAX_PROVIDER_RECORDS_PER_PEER - 1)).await;
        assert_eq!(last_kept.iter().map(|p| p.0).collect::<Vec<_>>(), [flooder.peer], "its share is kept");
        for i in MAX_PROVIDER_RECORDS_PER_PEER..sent {
            assert!(get_providers(&mut ask, &key(i)).await.is_empty(), "record {i} beyond its share");
        }
        // The node's own records still go in: B holds an object, A reads
        // it and announces its replica.
        let r = b.runtime().put(vec![5u8; 64]).expect("put");
        let there: ObjectRef<Vec<u8>> = a.decode_ref(&b.encode_ref(&r).expect("encodes")).expect("decodes");
        assert_eq!(*there.get_timeout(Duration::from_secs(30)).expect("read on A"), vec![5u8; 64]);
        a.flush_announcements().expect("A flushes");
        let own = get_providers(&mut ask, &r.id().to_bytes()).await;
        assert!(own.iter().any(|p| p.0 == a.peer_id()), "A's own record: {own:?}");
        // The flooder leaves: its records go once it has been away (and
        // not a member) for a failure timeout, B's (live) stay.
        drop(s);
        drop(flooder);
        let deadline = Instant::now() + FAILURE_TIMEOUT * 10;
        while !get_providers(&mut ask, &key(0)).await.is_empty() {
            assert!(Instant::now() < deadline, "the flooder's records are kept after it left");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(get_providers(&mut ask, &key(MAX_PROVIDER_RECORDS_PER_PEER - 1)).await.is_empty());
        assert!(get_providers(&mut ask, &r.id().to_bytes()).await.iter().any(|p| p.0 == a.peer_id()));
        drop(there);
    });
}

#[test]
fn unread_chunk_replies_stay_within_the_budget() {
    let a = node(None);
    let b = node(Some(&a));
    b.wait_for_peers(1, Duration::from_secs(30)).expect("b joins");
    let chunk: u32 = 4 << 20;
    let value: Vec<u8> = (0..(16usize << 20)).map(|i| (i as u8).wrapping_mul(31)).collect();
    let r = a.runtime().put(value.clone()).expect("put");
    let wire = a.encode_ref(&r).expect("encodes"); // exported: served to peers
    let id = r.id().to_bytes();
    let streams = 32u64;
    let busy = tokio().block_on(async {
        let attacker = Client::start(hostile_client::swarm(None));
        attacker.dial(&a.listen_addrs()[0]).await.expect("connects");
        let mut open = Vec::new();
        for i in 0..streams {
            let mut s = attacker.open(a.peer_id(), OBJECT).await.expect("a stream");
            let req = encode_request(&Request::Fetch { id, offset: (i % 4) * u64::from(chunk), len: chunk });
            s.write_all(&hostile_client::framed(&req)).await.expect("sent");
            s.flush().await.expect("flushed");
            open.push(s);
        }
        // Every request has been handled once each stream has shown the
        // first bytes of its answer (a chunk's header, or `Busy`) or was
        // closed; a chunk's body is never read.
        let firsts = open.iter_mut().map(|s| async move {
            let mut prefix = [0u8; 4];
            let head = tokio::time::timeout(CALL, s.read_exact(&mut prefix)).await.expect("an answer in time");
            let Ok(()) = head else { return false };
            let len = u32::from_be_bytes(prefix) as usize;
            if len > 1024 {
                return false; // a chunk
            }
            let mut body = vec![0u8; len];
            s.read_exact(&mut body).await.is_ok() && matches!(decode_response(&body), Ok(Response::Busy))
        });
        let answers = futures::future::join_all(firsts).await;
        answers.into_iter().filter(|b| *b).count()
    });
    let peak = metric(&a, "p2p_reply_bytes_held_peak");
    assert!(peak >= f64::from(chunk), "some chunks were served: {peak}");
    assert!(peak <= BUDGET_PER_PEER as f64, "reply bytes held at once: {peak}, the budget {BUDGET_PER_PEER}");
    assert!(busy > 0, "requests beyond the budget get Busy");
    // An honest reader is served in full afterwards.
    let there: ObjectRef<Vec<u8>> = b.decode_ref(&wire).expect("decodes");
    assert!(*there.get_timeout(Duration::from_secs(30)).expect("read on B") == value);
}
