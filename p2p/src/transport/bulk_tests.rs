//! Tests of the bulk lane's server side (`bulk`): tickets, hellos,
//! address checks, sender slots.

use super::*;

/// A lane serving one exported 3 MB `Vec<u8>` to `peer`, connected
/// from 127.0.0.1; with its encoding.
struct Fixture {
    tokio: tokio::runtime::Runtime,
    lane: Arc<Lane>,
    links: Arc<PeerLinks>,
    peer: PeerId,
    id: ObjectId,
    encoding: Vec<u8>,
    _rt: Runtime,
    _obj: manta::ObjectRef<Vec<u8>>,
}

const LOCAL: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

fn fixture(ttl: Duration, secret: Option<Secret>) -> Fixture {
    let tokio = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().expect("tokio");
    let rt = Runtime::builder().num_cpus(1).build().expect("runtime");
    let value: Vec<u8> = (0..3_000_000u32).map(|i| (i % 253) as u8).collect();
    let mut encoding = Vec::new();
    ciborium::into_writer(&serde_bytes::Bytes::new(&value), &mut encoding).expect("encode");
    let obj = rt.put(value).expect("put");
    rt.backend().export_object(&obj);
    let links = Arc::new(PeerLinks::default());
    let peer = PeerId::random();
    links.add(peer, ConnectionId::new_unchecked(1), LOCAL, LOCAL);
    let setup = LaneSetup {
        rt: rt.clone(),
        handle: tokio.handle().clone(),
        secret,
        links: links.clone(),
        write_timeout: Duration::from_secs(5),
        ttl,
    };
    let lane = Lane::start(setup, &[LOCAL]);
    Fixture { tokio, lane, links, peer, id: obj.id(), encoding, _rt: rt, _obj: obj }
}

fn ticket(f: &Fixture, peer: PeerId, skip: u64) -> (Secret, Secret) {
    match f.lane.issue(peer, f.id, skip) {
        Response::Ticket { port, token, key } => {
            assert_eq!(Some(port), f.lane.stats().port);
            (token, key)
        }
        other => panic!("no ticket: {other:?}"),
    }
}

fn hello(f: &Fixture, token: Secret) -> [u8; HELLO_BYTES] {
    Hello { token }.to_bytes(f.lane.hello_key())
}

/// Connects, sends `hello`, returns everything the lane sends back.
fn exchange(f: &Fixture, hello: &[u8]) -> Vec<u8> {
    let port = f.lane.stats().port.expect("bound");
    let mut s = std::net::TcpStream::connect((LOCAL, port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    // The lane may close before reading it all (a refused connection).
    let _ = s.write_all(hello);
    let mut got = Vec::new();
    if let Err(e) = s.read_to_end(&mut got) {
        // Closing with our extra bytes unread resets the connection.
        assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset, "{e}");
    }
    got
}

#[test]
fn a_ticket_streams_the_encoding_from_its_offset_once() {
    let f = fixture(TICKET_TTL, Some([5; 32]));
    for skip in [0, 1000] {
        let (token, key) = ticket(&f, f.peer, skip);
        let sealed = exchange(&f, &hello(&f, token));
        let rest = (f.encoding.len() as u64) - skip;
        let mut r = OpenReader::new(&sealed[..], &key, rest);
        let mut plain = Vec::new();
        r.read_to_end(&mut plain).expect("opens");
        assert!(r.finished());
        assert_eq!(plain, f.encoding[skip as usize..]);
        // The same ticket again: nothing.
        assert!(exchange(&f, &hello(&f, token)).is_empty());
    }
    assert_eq!(f.lane.stats().served, 2);
    drop(f.tokio);
}

#[test]
fn unknown_tokens_bad_hellos_and_expired_tickets_get_nothing() {
    let f = fixture(Duration::ZERO, None);
    let (token, _) = ticket(&f, f.peer, 0); // expired as soon as issued
                                            // No ticket expects 127.0.0.1 any more: refused at accept.
    assert!(exchange(&f, &hello(&f, token)).is_empty());
    assert_eq!(f.lane.stats().refused, 1);
    let g = fixture(TICKET_TTL, Some([5; 32]));
    let (token, _) = ticket(&g, g.peer, 0);
    assert!(exchange(&g, &hello(&g, [1; 32])).is_empty(), "unknown token");
    // A hello MACed under another cluster's key (or none).
    assert!(exchange(&g, &Hello { token }.to_bytes(&HelloKey::new(None))).is_empty(), "wrong MAC");
    assert!(
        exchange(&g, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n-----------------------------------------------").is_empty()
    );
    assert_eq!(g.lane.stats().served, 0);
    assert!(g.lane.stats().refused >= 2, "{:?}", g.lane.stats());
}

#[test]
fn a_ticket_is_only_good_at_its_address() {
    let f = fixture(TICKET_TTL, None);
    let elsewhere = PeerId::random();
    f.links.add(elsewhere, ConnectionId::new_unchecked(2), LOCAL, "10.9.8.7".parse().expect("ip"));
    let (token, _) = ticket(&f, elsewhere, 0);
    // 127.0.0.1 is not where `elsewhere` connects from: refused at
    // accept, as no ticket expects it.
    assert!(exchange(&f, &hello(&f, token)).is_empty());
    let (mine, _) = ticket(&f, f.peer, 0);
    assert!(!exchange(&f, &hello(&f, mine)).is_empty());
    // Redeemed from a remote IP it was not issued for: burnt.
    let (token, _) = ticket(&f, elsewhere, 0);
    assert!(matches!(f.lane.redeem(&token, LOCAL, LOCAL), Err(LaneError::WrongAddress { .. })));
    assert!(matches!(f.lane.redeem(&token, LOCAL, LOCAL), Err(LaneError::UnknownTicket)));
}

#[test]
fn sender_slots_are_bounded_per_peer_and_in_all() {
    let f = fixture(TICKET_TTL, None);
    for _ in 0..MAX_SENDERS_PER_PEER {
        ticket(&f, f.peer, 0);
    }
    assert_eq!(f.lane.issue(f.peer, f.id, 0), Response::Busy);
    let others: Vec<PeerId> = (0..MAX_SENDERS).map(|_| PeerId::random()).collect();
    for (i, p) in others.iter().enumerate() {
        f.links.add(*p, ConnectionId::new_unchecked(10 + i), LOCAL, LOCAL);
    }
    let issued = others.iter().filter(|p| matches!(f.lane.issue(**p, f.id, 0), Response::Ticket { .. })).count();
    assert_eq!(issued, MAX_SENDERS - MAX_SENDERS_PER_PEER);
    // A peer with no known connection gets no ticket either.
    assert_eq!(f.lane.issue(PeerId::random(), f.id, 0), Response::Busy);
    assert_eq!(f.lane.stats().busy, 1 + 2 + 1);
}

#[test]
fn an_object_that_is_not_here_ends_the_stream_short() {
    let f = fixture(TICKET_TTL, None);
    let missing = ObjectId::from_bytes([9; 16]);
    let Response::Ticket { token, key, .. } = f.lane.issue(f.peer, missing, 0) else { panic!("no ticket") };
    let sealed = exchange(&f, &hello(&f, token));
    let err = seal::open_all(&sealed, &key, u64::MAX).expect_err("cut short");
    assert!(err.to_string().contains("ended before its last record"), "{err}");
}
