//! Attacks by an outsider (a raw libp2p client on 127.0.0.1 speaking
//! manta's protocols byte by byte, see `hostile_client/`) against a node
//! running in this process, one test per attack found against the code
//! before issue 15 part A; each shows the attack now fails, the node stays
//! up, and its memory stays bounded (this process's RSS growth under a
//! stated figure; nodes run in-process, so it is theirs plus the client's).
//!
//! | attack (before) | now |
//! | --- | --- |
//! | default node on 0.0.0.0, no secret | loopback by default; open needs a secret ([`defaults_are_loopback_and_open_needs_a_secret`]) |
//! | no secret: anyone joins | with one, a client without it cannot connect, and a lane hello without it is refused ([`a_secret_keeps_a_raw_client_out`]) |
//! | 40 mail streams x 16 MiB frames, then stall: 659 MiB; 200 prefix-only streams open forever | 4 streams per peer, a byte budget, frame deadlines: < 64 MiB, all closed in seconds, an honest get completes meanwhile ([`mail_floods_are_bounded_and_honest_gets_complete`]) |
//! | 540 lane tickets redeemed without reading: 512 threads, +527 MiB, honest 3 MB fetch 10 s | 2 per peer, 8 in all, a stream deadline: `Busy` beyond, honest fetch on the lane in < 3 s ([`ticket_floods_get_busy_and_honest_fetches_stay_fast`]) |
//! | 64 idle lane connections fill every hello slot, a WARN each | refused at accept unless a ticket expects the IP, a counter, no WARN ([`idle_lane_connections_are_refused_quietly`]) |
//! | any provider / named-actor record stored | filtered ([`dht_records_are_filtered`]) |
//!
//! Plus: an observer leaves no routing entry and identify names manta
//! ([`observers_leave_no_routing_entry`]); connections per IP are capped
//! ([`connections_per_ip_are_capped`]); an owner puts no provider record
//! in the DHT for what a peer reads, only the replica's holder does
//! ([`an_owner_does_not_announce_what_a_peer_reads_the_replica_holder_does`]).
//!
//! Invariants: tests run one at a time (a lock: they measure this
//! process); every loop that sends is bounded in count and time; only
//! 127.0.0.1 is used; nothing waits by sleeping for a state, except the
//! bounded polls of `hostile_client`.

mod hostile_client;

use futures::AsyncWriteExt;
use hostile_client::{closed_within, exchange, peak_while, rss_mib, threads, Client, CALL};
use libp2p::identity::Keypair;
use libp2p::kad;
use manta::{ObjectRef, Runtime};
use manta_p2p::fuzzing::hint;
use manta_p2p::fuzzing::plain::{actor_record_key, encode_actor_record, ActorRecord};
use manta_p2p::fuzzing::seal::{Hello, HelloKey};
use manta_p2p::fuzzing::signed::sign_record;
use manta_p2p::fuzzing::wire::{decode_response, encode_request, Request, Response, MAX_RESPONSE_BYTES};
use manta_p2p::{ActorClass, Multiaddr, Node, NodeError, Registry, StartError};
use std::io::Read;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

const MAIL: &str = "/manta/mail/2";
const OBJECT: &str = "/manta/object/1";

/// The nodes' request timeout: the frame deadline of their server loops
/// and the write timeout of their lane.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);

struct Thing;
static THING: ActorClass<(), Thing> = ActorClass::new("Thing", |()| Thing);

/// One test at a time: they measure this process.
fn serial() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|p| p.into_inner())
}

/// WARN (and ERROR) events from manta-p2p's transport (the object, mail
/// and lane servers) so far in this process. (Not the cluster's: nodes of
/// this process, with their 100 ms heartbeats, may warn about a peer that
/// went quiet at any time, which made the count flaky.)
fn warns() -> usize {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::Layer;
    static COUNT: AtomicUsize = AtomicUsize::new(0);
    static INIT: OnceLock<()> = OnceLock::new();
    struct Count;
    impl<S: tracing::Subscriber> Layer<S> for Count {
        fn on_event(&self, e: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
            if e.metadata().target().starts_with("manta_p2p::transport") {
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

fn tokio() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("tokio")
}

fn local() -> Multiaddr {
    "/ip4/127.0.0.1/tcp/0".parse().expect("addr")
}

/// A node on 127.0.0.1 with the test's timeouts (bootstrapping from `boot`).
fn node(boot: Option<&Node>, f: impl FnOnce(manta_p2p::NodeBuilder) -> manta_p2p::NodeBuilder) -> Node {
    let rt = Runtime::builder().num_cpus(1).build().expect("runtime");
    let mut b = Node::builder(rt)
        .listen(local())
        .heartbeat(Duration::from_millis(100))
        .request_timeout(REQUEST_TIMEOUT)
        .registry(Registry::new().actor(&THING));
    if let Some(n) = boot {
        b = b.bootstrap(n.listen_addrs()[0].clone());
    }
    f(b).start().expect("node starts")
}

/// `len` bytes that are not all equal (so nothing compresses or shares pages).
fn bytes(len: usize, seed: u8) -> Vec<u8> {
    (0..len).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect()
}

/// True if the other side closed (or reset) `c` without sending a byte,
/// within its read timeout.
fn closed_by_peer(c: &mut std::net::TcpStream) -> bool {
    let mut buf = [0u8; 64];
    match c.read(&mut buf) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => !matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut),
    }
}

/// True once `n`'s lane has received `count` objects (its counter moves
/// just after the object is complete: a bounded poll).
fn lane_received(n: &Node, count: u64) -> bool {
    for _ in 0..200 {
        if n.lane_stats().received >= count {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    false
}

/// Gets `r` on `b` (encoded by `a`): the length and how long it took.
fn remote_get(a: &Node, b: &Node, r: &ObjectRef<Vec<u8>>) -> (usize, Duration) {
    let started = Instant::now();
    let there: ObjectRef<Vec<u8>> = b.decode_ref(&a.encode_ref(r).expect("encode")).expect("decode");
    let len = there.get().expect("the honest get completes").len();
    (len, started.elapsed())
}

#[test]
fn defaults_are_loopback_and_open_needs_a_secret() {
    let _serial = serial();
    let rt = || Runtime::builder().num_cpus(1).build().expect("runtime");
    let n = Node::builder(rt()).start().expect("a default node starts");
    let addrs = n.listen_addrs();
    assert!(!addrs.is_empty());
    for a in &addrs {
        assert!(a.to_string().starts_with("/ip4/127.0.0.1/tcp/"), "default listen address {a}");
    }
    assert!(n.lane_stats().port.is_some(), "its lane listens at 127.0.0.1 too");
    // Open without a secret: refused before anything is bound.
    let open: Multiaddr = "/ip4/0.0.0.0/tcp/0".parse().expect("addr");
    match Node::builder(rt()).listen(open.clone()).start() {
        Err(NodeError::Start { source: StartError::OpenWithoutSecret { addr } }) => {
            assert_eq!(addr, open);
            let text = StartError::OpenWithoutSecret { addr }.to_string();
            assert!(text.contains("secret") && text.contains("insecure_open_network"), "{text}");
        }
        other => panic!("expected OpenWithoutSecret, got {other:?}"),
    }
    // mDNS too (and nothing multicasts: the check comes first).
    match Node::builder(rt()).mdns(true).start() {
        Err(NodeError::Start { source: StartError::MdnsWithoutSecret }) => {}
        other => panic!("expected MdnsWithoutSecret, got {other:?}"),
    }
    n.shutdown();
}

#[test]
fn a_secret_keeps_a_raw_client_out() {
    let _serial = serial();
    let key = [0x61; 32];
    let a = node(None, |b| b.secret(key));
    let addr = a.listen_addrs()[0].clone();
    let obj = a.runtime().put(bytes(2_000_000, 7)).expect("put");
    let _ = a.encode_ref(&obj).expect("exported");
    let before = rss_mib();
    tokio().block_on(async {
        let stranger = Client::start(hostile_client::swarm(None));
        assert!(stranger.dial(&addr).await.is_err(), "no pre-shared key: no connection");
        let wrong = Client::start(hostile_client::swarm(Some([0x62; 32])));
        assert!(wrong.dial(&addr).await.is_err(), "another key: no connection");
        let member = Client::start(hostile_client::swarm(Some(key)));
        assert_eq!(member.dial(&addr).await, Ok(a.peer_id()), "the right key connects");
        // The lane's hello is bound to the secret too: a ticket's token
        // alone, MACed without the secret, is refused.
        let mut s = member.open(a.peer_id(), OBJECT).await.expect("object stream");
        let req = encode_request(&Request::Bulk { id: obj.id().to_bytes(), offset: 0 });
        // `Busy` (the lane's senders all taken, seen once on a loaded
        // machine) means ask again; a bounded number of times.
        let mut reply = exchange(&mut s, &req, MAX_RESPONSE_BYTES).await.expect("a reply");
        for _ in 0..20 {
            if decode_response(&reply) != Ok(Response::Busy) {
                break;
            }
            reply = exchange(&mut s, &req, MAX_RESPONSE_BYTES).await.expect("a reply");
        }
        let Ok(Response::Ticket { port, token, .. }) = decode_response(&reply) else { panic!("no ticket: {reply:?}") };
        let lane = |hello: HelloKey| async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let mut got = Vec::new();
            let io = async {
                let mut t = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
                t.write_all(&Hello { token }.to_bytes(&hello)).await?;
                t.read_to_end(&mut got).await
            };
            let _ = tokio::time::timeout(CALL, io).await;
            got.len()
        };
        assert_eq!(lane(HelloKey::new(None)).await, 0, "a hello without the secret gets nothing");
        assert!(lane(HelloKey::new(Some(&key))).await > 2_000_000, "with it, the sealed object");
    });
    eprintln!("secret: RSS {:.1} -> {:.1} MiB; lane {:?}", before, rss_mib(), a.lane_stats());
    assert_eq!(a.lane_stats().refused, 1);
    assert_eq!(a.cluster_status().expect("up").len(), 1);
}

#[test]
fn mail_floods_are_bounded_and_honest_gets_complete() {
    let _serial = serial();
    let a = node(None, |b| b);
    let b = node(Some(&a), |b| b);
    b.wait_for_peers(1, Duration::from_secs(30)).expect("b joins");
    let small = a.runtime().put(bytes(1000, 1)).expect("put");
    remote_get(&a, &b, &small); // warm: B's streams to A are open
    const FRAME: usize = 16 << 20; // the mail batch cap
    let payload: Arc<Vec<u8>> = Arc::new(bytes(FRAME, 2)); // before the baseline
    let tokio = tokio();
    let client = tokio.block_on(async {
        let c = Client::start(hostile_client::swarm(None));
        c.dial(&a.listen_addrs()[0]).await.expect("the outsider connects");
        c
    });
    let base = rss_mib();

    // 40 streams, each a 16 MiB prefix and 16 MiB - 1 bytes, then a stall;
    // an honest get from B meanwhile.
    let honest = {
        let (a, b, small) = (a.clone(), b.clone(), small.clone());
        std::thread::spawn(move || remote_get(&a, &b, &small))
    };
    let flood = async {
        let streams = futures::future::join_all((0..40).map(|_| client.open(a.peer_id(), MAIL))).await;
        let runs = streams.into_iter().flatten().map(|mut s| {
            let payload = payload.clone();
            async move {
                let started = Instant::now();
                let wrote = async {
                    s.write_all(&(FRAME as u32).to_be_bytes()).await?;
                    s.write_all(&payload[..FRAME - 1]).await?;
                    s.flush().await
                };
                // A reset stream fails its write; a stalled one must be closed.
                let _ = tokio::time::timeout(Duration::from_secs(20), wrote).await;
                let closed = closed_within(&mut s, Duration::from_secs(20)).await;
                (closed, started.elapsed())
            }
        });
        futures::future::join_all(runs).await
    };
    let (ends, peak, _) = tokio.block_on(peak_while(flood));
    let (len, took) = honest.join().expect("honest get");
    eprintln!(
        "mail flood: {} streams opened; RSS {base:.1} -> peak {peak:.1} MiB (+{:.1}); last closed after {:?}; \
         honest get of {len} bytes in {took:?}",
        ends.len(),
        peak - base,
        ends.iter().map(|e| e.1).max()
    );
    assert!(ends.iter().all(|e| e.0), "every stream is closed by the node");
    assert!(peak - base < 64.0, "RSS grew {:.1} MiB (before the fix: 659 MiB)", peak - base);
    assert!(took < Duration::from_secs(10), "honest get took {took:?}");

    // 200 streams that send only a prefix: all closed within the frame
    // deadline (or refused at once), none open indefinitely.
    let started = Instant::now();
    let prefix_only = async {
        let opened = futures::future::join_all((0..200).map(|_| client.open(a.peer_id(), MAIL))).await;
        let runs = opened.into_iter().flatten().map(|mut s| async move {
            let _ = s.write_all(&(FRAME as u32).to_be_bytes()).await;
            let _ = s.flush().await;
            closed_within(&mut s, Duration::from_secs(20)).await
        });
        futures::future::join_all(runs).await
    };
    let (closed, peak, _) = tokio.block_on(peak_while(prefix_only));
    eprintln!(
        "prefix-only: {} of 200 opened, all closed after {:?}; peak RSS +{:.1} MiB",
        closed.len(),
        started.elapsed(),
        peak - base
    );
    assert!(closed.iter().all(|c| *c), "a prefix-only stream stayed open");
    assert!(started.elapsed() < Duration::from_secs(20));
    assert!(peak - base < 64.0);
    let (len, took) = remote_get(&a, &b, &small);
    assert_eq!(len, 1000);
    assert!(took < Duration::from_secs(10), "after the flood: {took:?}");
    drop(client);
}

#[test]
fn ticket_floods_get_busy_and_honest_fetches_stay_fast() {
    let _serial = serial();
    let a = node(None, |b| b);
    let b = node(Some(&a), |b| b);
    b.wait_for_peers(1, Duration::from_secs(30)).expect("b joins");
    // The hostile asks for a 64 MB object (more than the kernel buffers of
    // an unread socket); B fetches a 3 MB one.
    let big = a.runtime().put(bytes(64 << 20, 3)).expect("put");
    let _ = a.encode_ref(&big).expect("exported");
    let honest = a.runtime().put(bytes(3_000_000, 4)).expect("put");
    let tokio = tokio();
    let client = tokio.block_on(async {
        let c = Client::start(hostile_client::swarm(None));
        c.dial(&a.listen_addrs()[0]).await.expect("the outsider connects");
        c
    });
    let (base, base_threads) = (rss_mib(), threads());
    let port_hello = HelloKey::new(None); // A has no secret
    let flood = async {
        let mut s = client.open(a.peer_id(), OBJECT).await.expect("object stream");
        let req = encode_request(&Request::Bulk { id: big.id().to_bytes(), offset: 0 });
        let (mut tickets, mut busy, mut held) = (0, 0, Vec::new());
        for _ in 0..540 {
            let reply = exchange(&mut s, &req, MAX_RESPONSE_BYTES).await.expect("a reply");
            match decode_response(&reply).expect("decodes") {
                Response::Ticket { port, token, .. } => {
                    tickets += 1;
                    // Redeem it, then never read.
                    let redeem = async {
                        let mut t = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
                        tokio::io::AsyncWriteExt::write_all(&mut t, &Hello { token }.to_bytes(&port_hello)).await?;
                        Ok::<_, std::io::Error>(t)
                    };
                    held.push(tokio::time::timeout(CALL, redeem).await.expect("in time").expect("redeemed"));
                }
                Response::Busy => busy += 1,
                other => panic!("unexpected {other:?}"),
            }
        }
        // The honest fetch while the redeemed streams stall.
        let (a2, b2, honest2) = (a.clone(), b.clone(), honest.clone());
        let fetched = tokio::task::spawn_blocking(move || remote_get(&a2, &b2, &honest2)).await.expect("joins");
        (tickets, busy, fetched, held)
    };
    let ((tickets, busy, (len, took), held), peak, peak_threads) = tokio.block_on(peak_while(flood));
    eprintln!(
        "ticket flood: {tickets} tickets, {busy} busy; RSS {base:.1} -> {peak:.1} MiB (+{:.1}); threads \
         {base_threads} -> {peak_threads}; honest 3 MB fetch in {took:?} (A's lane: {:?}, B's: {:?})",
        peak - base,
        a.lane_stats(),
        b.lane_stats()
    );
    assert_eq!(len, 3_000_000);
    assert!(tickets <= 16 && busy >= 500, "{tickets} tickets, {busy} busy");
    assert!(peak_threads - base_threads <= 24, "threads {base_threads} -> {peak_threads} (before: +512)");
    assert!(peak - base < 48.0, "RSS grew {:.1} MiB (before the fix: 527 MiB)", peak - base);
    assert!(took < Duration::from_secs(3), "honest fetch took {took:?} (before the fix: 10 s)");
    assert!(lane_received(&b, 1), "the honest fetch used the lane: {:?}", b.lane_stats());
    assert!(a.lane_stats().busy >= 500);
    drop(held);
}

#[test]
fn idle_lane_connections_are_refused_quietly() {
    let _serial = serial();
    warns(); // installs the counting subscriber before the nodes start
    let a = node(None, |b| b);
    let b = node(Some(&a), |b| b);
    b.wait_for_peers(1, Duration::from_secs(30)).expect("b joins");
    let honest = a.runtime().put(bytes(3_000_000, 5)).expect("put");
    let big = a.runtime().put(bytes(8 << 20, 6)).expect("put");
    let _ = a.encode_ref(&big).expect("exported");
    let port = a.lane_stats().port.expect("a lane");
    let warns_before = warns();
    let base = rss_mib();
    let connect_all = || -> Vec<std::net::TcpStream> {
        (0..64)
            .map(|_| {
                let c = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
                c.set_read_timeout(Some(Duration::from_millis(500))).expect("timeout");
                c
            })
            .collect()
    };
    // 64 idle connections with no ticket for this IP: each closed at once.
    let started = Instant::now();
    let mut conns = connect_all();
    assert!(conns.iter_mut().all(closed_by_peer), "each closed without a byte");
    let closed_in = started.elapsed();
    assert!(a.lane_stats().refused >= 64, "{:?}", a.lane_stats());
    // With a ticket of its own outstanding (asked for over libp2p), the
    // outsider may hold one connection waiting for its hello, not 64.
    let tokio = tokio();
    let (_client, _stream) = tokio.block_on(async {
        let c = Client::start(hostile_client::swarm(None));
        c.dial(&a.listen_addrs()[0]).await.expect("connects");
        let mut s = c.open(a.peer_id(), OBJECT).await.expect("object stream");
        let req = encode_request(&Request::Bulk { id: big.id().to_bytes(), offset: 0 });
        let reply = exchange(&mut s, &req, MAX_RESPONSE_BYTES).await.expect("a reply");
        assert!(matches!(decode_response(&reply), Ok(Response::Ticket { .. })), "a ticket");
        (c, s)
    });
    let mut conns = connect_all();
    let open: Vec<usize> = (0..conns.len()).filter(|&i| !closed_by_peer(&mut conns[i])).collect();
    assert_eq!(open.len(), 1, "one connection may wait for its hello (min(tickets, 4) per IP)");
    // The honest fetch still takes the lane (its ticket lets one more wait).
    let (len, took) = remote_get(&a, &b, &honest);
    assert_eq!(len, 3_000_000);
    assert!(lane_received(&b, 1), "the honest fetch used the lane: {:?}", b.lane_stats());
    // The waiting one is closed when its hello is late (5 s).
    let waiting = &mut conns[open[0]];
    waiting.set_read_timeout(Some(Duration::from_secs(8))).expect("timeout");
    assert!(closed_by_peer(waiting), "closed after the hello timeout");
    let (refused, warned) = (a.lane_stats().refused, warns() - warns_before);
    eprintln!(
        "idle lane connections: 64 closed in {closed_in:?}, then 63 of 64 with a ticket out; {refused} refused, \
         {warned} WARN lines; honest fetch in {took:?}; RSS +{:.1} MiB",
        rss_mib() - base
    );
    // 64, then 63, then the one whose hello was late.
    assert!(refused >= 128, "{:?}", a.lane_stats());
    assert_eq!(warned, 0, "a refused connection is a debug line, not a WARN");
    assert!(rss_mib() - base < 32.0);
}

#[test]
fn dht_records_are_filtered() {
    let _serial = serial();
    let a = node(None, |b| b);
    let b = node(Some(&a), |b| b);
    b.wait_for_peers(1, Duration::from_secs(30)).expect("b joins");
    let tokio = tokio();
    tokio.block_on(async {
        // The outsider listens, so its provider records carry an address
        // (Kademlia does not hand out providers it has no address for).
        let (evil_key, asker_key) = (Keypair::generate_ed25519(), Keypair::generate_ed25519());
        let mut evil = hostile_client::swarm_with(evil_key.clone(), kad::Mode::Client);
        evil.listen_on("/ip4/127.0.0.1/tcp/0".parse().expect("addr")).expect("listens");
        let evil = Client::start(evil);
        let asker = Client::start(hostile_client::swarm_with(asker_key.clone(), kad::Mode::Client));
        for c in [&evil, &asker] {
            c.dial(&a.listen_addrs()[0]).await.expect("connects");
        }
        let record = |key: Vec<u8>, value: Vec<u8>| kad::Record::new(kad::RecordKey::new(&key), value);
        // A named actor's record as a host publishes it: signed, for its key.
        let actor = |key: &[u8], host: Vec<u8>, signer: &Keypair| {
            let rec = encode_actor_record(&ActorRecord { actor: [1; 16], class: "Thing".into(), host });
            sign_record(signer, key, rec).expect("signs")
        };
        // A named actor claiming B as its host, from the outsider (signed
        // by it): refused.
        let stolen = actor_record_key("stolen");
        let claims_b = actor(&stolen, hint::encode(&b.peer_id(), &b.listen_addrs()), &evil_key);
        evil.put_record_to(record(stolen.clone(), claims_b), a.peer_id()).await;
        assert_eq!(asker.get_record(&stolen).await, None, "a record naming another host");
        // Naming its sender but not signed (the old format), or signed for
        // another name: refused.
        let unsigned = actor_record_key("unsigned");
        let plain = encode_actor_record(&ActorRecord {
            actor: [1; 16],
            class: "Thing".into(),
            host: hint::encode(&evil.peer, &[]),
        });
        evil.put_record_to(record(unsigned.clone(), plain), a.peer_id()).await;
        assert_eq!(asker.get_record(&unsigned).await, None, "an unsigned record");
        let replayed = actor(&actor_record_key("elsewhere"), hint::encode(&evil.peer, &[]), &evil_key);
        evil.put_record_to(record(unsigned.clone(), replayed), a.peer_id()).await;
        assert_eq!(asker.get_record(&unsigned).await, None, "a record signed for another name");
        // Any other key, and a value that is not an actor record: refused.
        evil.put_record_to(record(b"/other/key".to_vec(), b"x".to_vec()), a.peer_id()).await;
        assert_eq!(asker.get_record(b"/other/key").await, None, "not a named-actor key");
        let junk = actor_record_key("junk");
        evil.put_record_to(record(junk.clone(), vec![0x81; 200]), a.peer_id()).await;
        assert_eq!(asker.get_record(&junk).await, None, "not an actor record");
        // One naming its sender as host is kept (the filter is not a wall).
        let mine = actor_record_key("mine");
        let own = actor(&mine, hint::encode(&evil.peer, &[]), &evil_key);
        evil.put_record_to(record(mine.clone(), own.clone()), a.peer_id()).await;
        assert_eq!(asker.get_record(&mine).await, Some(own), "a record naming its sender");
        // A name held by a live host is not taken over by another sender
        // naming itself (first writer wins while it lives).
        let taken = actor_record_key("taken");
        let first = actor(&taken, hint::encode(&asker.peer, &[]), &asker_key);
        asker.put_record_to(record(taken.clone(), first.clone()), a.peer_id()).await;
        assert_eq!(asker.get_record(&taken).await, Some(first.clone()), "the first claim");
        let takeover = actor(&taken, hint::encode(&evil.peer, &[]), &evil_key);
        evil.put_record_to(record(taken.clone(), takeover), a.peer_id()).await;
        assert_eq!(asker.get_record(&taken).await, Some(first), "a live host's name taken over");

        // Provider records: only for object ids (16 bytes), only from the
        // provider itself. (A provide ends once its messages are sent: a
        // later one seen stored means the earlier ones were handled.)
        assert!(evil.provide(b"/not/an/object/id").await);
        let id = [9u8; 16];
        assert!(evil.provide(&id).await);
        let forged_for = [8u8; 16];
        let mut s = evil.open(a.peer_id(), hostile_client::KAD).await.expect("a raw kad stream");
        let forged = hostile_client::forged_add_provider(&forged_for, b.peer_id(), &b.listen_addrs()[0]);
        s.write_all(&forged).await.expect("sent");
        s.flush().await.expect("flushed");
        let _ = s.close().await;
        let later = [7u8; 16];
        assert!(evil.provide(&later).await);
        let mut seen = false;
        for _ in 0..100 {
            if asker.providers(&later).await.contains(&evil.peer) {
                seen = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(seen, "the last provider record never arrived");
        assert_eq!(asker.providers(&id).await, [evil.peer].into(), "its own provider record");
        assert!(asker.providers(b"/not/an/object/id").await.is_empty(), "not an object id");
        assert!(asker.providers(&forged_for).await.is_empty(), "a provider record naming another peer");
    });
    // The node's own view: the stolen name does not resolve.
    let e = a.get_actor(&THING, "stolen", Duration::from_millis(500)).map(|_| ()).expect_err("not found");
    assert!(matches!(e, NodeError::Timeout { .. }), "{e}");
    assert_eq!(a.cluster_status().expect("up").len(), 2);
}

#[test]
fn an_owner_does_not_announce_what_a_peer_reads_the_replica_holder_does() {
    let _serial = serial();
    let a = node(None, |b| b);
    let b = node(Some(&a), |b| b);
    b.wait_for_peers(1, Duration::from_secs(30)).expect("b joins");
    // b reads an object a owns: a serves it, b keeps (and announces) a replica.
    let r = a.runtime().put(bytes(64, 5)).expect("put");
    let there: ObjectRef<Vec<u8>> = b.decode_ref(&a.encode_ref(&r).expect("encodes")).expect("decodes");
    assert_eq!(*there.get_timeout(Duration::from_secs(30)).expect("read on b"), bytes(64, 5));
    a.flush_announcements().expect("a flushes");
    b.flush_announcements().expect("b flushes");
    let providers = tokio().block_on(async {
        let asker = Client::start(hostile_client::swarm(None));
        for n in [&a, &b] {
            asker.dial(&n.listen_addrs()[0]).await.expect("connects");
        }
        asker.providers(&r.id().to_bytes()).await
    });
    // Refs name the owner, so its own record would serve nobody.
    assert_eq!(providers, [b.peer_id()].into(), "the replica's holder only, not the owner");
    drop(there);
}

#[test]
fn observers_leave_no_routing_entry() {
    let _serial = serial();
    let a = node(None, |b| b);
    let b = node(Some(&a), |b| b);
    b.wait_for_peers(1, Duration::from_secs(30)).expect("b joins");
    let observer = node(Some(&a), |b| b.observer(true));
    observer.wait_for_peers(2, Duration::from_secs(30)).expect("the observer hears both");
    let watched = observer.peer_id();
    observer.shutdown();
    tokio().block_on(async {
        let c = Client::start(hostile_client::swarm(None));
        c.dial(&a.listen_addrs()[0]).await.expect("connects");
        let closest = c.closest(watched).await;
        eprintln!("A's closest peers to the observer: {closest:?}");
        assert!(closest.contains(&b.peer_id()), "A answers with its routing table (B is in it)");
        assert!(!closest.contains(&watched), "the observer left a routing entry on A");
        assert_eq!(c.agent(a.peer_id()).await.as_deref(), Some("manta/0.1.0"));
    });
    assert!(a.cluster_status().expect("up").iter().all(|m| m.peer != watched), "nor a member entry");
}

#[test]
fn connections_per_ip_are_capped() {
    let _serial = serial();
    let a = node(None, |b| b.max_connections_per_ip(8));
    let port = a.listen_addrs()[0]
        .iter()
        .find_map(|p| match p {
            libp2p::multiaddr::Protocol::Tcp(port) => Some(port),
            _ => None,
        })
        .expect("a TCP port");
    let base = rss_mib();
    // Eight handshakes that never finish are held; the ninth and later are
    // dropped at once.
    let held: Vec<std::net::TcpStream> =
        (0..8).map(|_| std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect")).collect();
    let mut dropped = 0;
    for _ in 0..12 {
        let mut c = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
        c.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
        // Over the cap: closed without a byte of the handshake.
        if closed_by_peer(&mut c) {
            dropped += 1;
        }
    }
    eprintln!("connections per IP: 8 held, {dropped} of 12 more dropped; RSS +{:.1} MiB", rss_mib() - base);
    assert_eq!(dropped, 12);
    drop(held);
    // Once they are gone, a node from the same IP connects again.
    let b = node(Some(&a), |b| b);
    b.wait_for_peers(1, Duration::from_secs(30)).expect("b joins after the flood");
}

/// The node's counter `name` (`Runtime::metrics`, cluster part).
fn metric(n: &Node, name: &str) -> f64 {
    let m = n.runtime().metrics();
    m.cluster.iter().find(|(k, _)| k == name).map(|(_, v)| *v).unwrap_or_else(|| panic!("no metric {name}"))
}

/// Invalid object requests and mail batches from one peer are one WARN
/// line, then `debug!` lines and a counter (before: a WARN line each, a
/// log flood any member could cause).
#[test]
fn invalid_input_is_one_warning_per_peer_then_counted() {
    let _serial = serial();
    warns(); // installs the counting subscriber before the node starts
    let a = node(None, |b| b);
    let (requests, batches) = (50, 10);
    let before = warns();
    tokio().block_on(async {
        let evil = Client::start(hostile_client::swarm(None));
        evil.dial(&a.listen_addrs()[0]).await.expect("connects");
        let mut s = evil.open(a.peer_id(), OBJECT).await.expect("an object stream");
        for _ in 0..requests {
            let reply = exchange(&mut s, b"\xff\x00garbage", MAX_RESPONSE_BYTES).await.expect("a reply");
            assert!(matches!(decode_response(&reply), Ok(Response::Invalid { .. })), "answered Invalid");
        }
        let mut m = evil.open(a.peer_id(), MAIL).await.expect("a mail stream");
        for _ in 0..batches {
            let reply = exchange(&mut m, b"\xff\x00garbage", 1 << 20).await.expect("an ack");
            let ack = manta_p2p::fuzzing::mail::decode_ack(&reply).expect("an ack");
            assert!(ack.invalid.is_some(), "an invalid ack");
        }
    });
    let warned = warns() - before;
    eprintln!("{requests} invalid requests and {batches} invalid batches: {warned} WARN line(s)");
    assert_eq!(warned, 1, "one WARN line for the peer");
    assert_eq!(metric(&a, "p2p_invalid_requests_total"), (requests + batches) as f64, "all counted");
}
