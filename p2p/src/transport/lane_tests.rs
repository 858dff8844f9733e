//! Unit tests of one lane over a loopback socket pair: calls answered,
//! handed back exactly once when the lane ends, refused when full or
//! closed, and a peer's bad frames ending the lane.

use super::*;
use std::net::TcpListener;
use std::sync::atomic::AtomicUsize;
use std::sync::mpsc;

const ROOT: [u8; 32] = [3; 32];
const TIMING: Timing = Timing { frame: Duration::from_secs(5), idle: Duration::from_secs(60) };

/// Serves every id with its first byte repeated, except ids starting with 0.
struct Echo;

impl LaneService for Echo {
    fn get(&self, _peer: PeerId, ids: &[ByteArray<16>]) -> Vec<Option<ByteBuf>> {
        ids.iter().map(|id| (id[0] != 0).then(|| ByteBuf::from(vec![id[0]; 3]))).collect()
    }
}

fn pair() -> (TcpStream, TcpStream) {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let a = TcpStream::connect(l.local_addr().expect("addr")).expect("connect");
    let (b, _) = l.accept().expect("accept");
    (a, b)
}

/// A dialled lane on one end, its reader on a thread (no service); the
/// other end's raw socket.
fn dialled_lane() -> (Arc<Conn>, std::thread::JoinHandle<Ended>, TcpStream) {
    let (a, b) = pair();
    let (conn, side) = Conn::new(PeerId::random(), a, &ROOT, true, TIMING, Arc::default()).expect("lane");
    let c = conn.clone();
    let reader = std::thread::spawn(move || read_loop(&c, side, Serve::default(), &|| true));
    (conn, reader, b)
}

/// A reply that sends what it got on a channel.
fn reply_to(tx: &mpsc::Sender<Option<Vec<Option<ByteBuf>>>>) -> Reply {
    let tx = tx.clone();
    Box::new(move |got| {
        let _ = tx.send(got);
    })
}

#[test]
fn calls_are_answered_by_the_other_sides_service() {
    let (a, b) = pair();
    let (client, cside) = Conn::new(PeerId::random(), a, &ROOT, true, TIMING, Arc::default()).expect("lane");
    let (server, sside) = Conn::new(PeerId::random(), b, &ROOT, false, TIMING, Arc::default()).expect("lane");
    let c = client.clone();
    let creader = std::thread::spawn(move || read_loop(&c, cside, Serve::default(), &|| true));
    let s = server.clone();
    let sreader = std::thread::spawn(move || {
        read_loop(&s, sside, Serve { get: Some(&Echo), mail: None, arm_acks: None }, &|| true)
    });
    let (tx, rx) = mpsc::channel();
    for k in 0..10u8 {
        let ids = vec![ByteArray::new([k; 16]), ByteArray::new([0; 16])];
        assert!(client.call(ids, reply_to(&tx)).is_ok());
    }
    // One lane answers in order.
    for k in 0..10u8 {
        let items = rx.recv_timeout(Duration::from_secs(10)).expect("answered").expect("not ended");
        let expected = vec![(k != 0).then(|| ByteBuf::from(vec![k; 3])), None];
        assert_eq!(items, expected, "call {k}");
    }
    client.poison();
    assert!(matches!(creader.join().expect("reader"), Ended::Closed));
    assert!(matches!(sreader.join().expect("reader"), Ended::Closed));
    // Nothing is accepted after the end: the reply comes back.
    assert!(client.call(vec![ByteArray::new([1; 16])], reply_to(&tx)).is_err());
}

#[test]
fn a_lane_that_ends_hands_every_call_back_exactly_once() {
    let (conn, reader, peer) = dialled_lane();
    let runs = Arc::new(AtomicUsize::new(0));
    let (tx, rx) = mpsc::channel();
    for _ in 0..MAX_CALLS {
        let (runs, tx) = (runs.clone(), tx.clone());
        let reply: Reply = Box::new(move |got| {
            runs.fetch_add(1, Ordering::SeqCst);
            let _ = tx.send(got.is_none());
        });
        assert!(conn.call(vec![ByteArray::new([1; 16])], reply).is_ok());
    }
    // Full: the next one is handed back at once.
    let handed_back = conn.call(vec![ByteArray::new([1; 16])], Box::new(|_| panic!("must not run")));
    assert!(handed_back.is_err());
    // The peer goes away without answering.
    drop(peer);
    assert!(matches!(reader.join().expect("reader"), Ended::Closed | Ended::Io(_)));
    for _ in 0..MAX_CALLS {
        assert!(rx.recv_timeout(Duration::from_secs(10)).expect("handed back"), "as ended, not answered");
    }
    assert_eq!(runs.load(Ordering::SeqCst), MAX_CALLS);
    assert!(conn.is_down());
}

/// Writes `bytes` to a dialled lane's peer end and returns how the lane's
/// reader ended.
fn ended_by(bytes: &[u8]) -> Ended {
    let (conn, reader, mut peer) = dialled_lane();
    let (tx, rx) = mpsc::channel();
    assert!(conn.call(vec![ByteArray::new([1; 16])], reply_to(&tx)).is_ok());
    let _ = peer.write_all(bytes);
    let ended = reader.join().expect("reader");
    assert_eq!(rx.recv_timeout(Duration::from_secs(10)).expect("handed back"), None);
    ended
}

/// `msg` sealed as the listener's first frame under [`ROOT`].
fn listener_frame(msg: &LaneMsg) -> Vec<u8> {
    let (mut sealer, _) = lane::lane_keys(&ROOT, false);
    let mut out = Vec::new();
    sealer.seal(&lane::encode_msg(msg), &mut out).expect("seals");
    out
}

#[test]
fn a_peers_bad_frames_end_the_lane() {
    let huge = [0xff, 0xff, 0xff, 0xff];
    assert!(matches!(ended_by(&huge), Ended::Refused(why) if why.contains("exceeds")));
    let garbage = [0, 0, 0, 8, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24];
    assert!(matches!(ended_by(&garbage), Ended::Refused(why) if why.contains("authentication")));
    // Authentic, but an answer to a call never made, or of the wrong size.
    let stray = listener_frame(&LaneMsg::Got { tag: 99, items: vec![None] });
    assert!(matches!(ended_by(&stray), Ended::Refused(why) if why.contains("tag 99")));
    let short = listener_frame(&LaneMsg::Got { tag: 0, items: vec![] });
    assert!(matches!(ended_by(&short), Ended::Refused(why) if why.contains("0 items")));
    // A Get on a lane that serves none (the dialled side).
    let get = listener_frame(&LaneMsg::Get { tag: 1, ids: vec![] });
    assert!(matches!(ended_by(&get), Ended::Refused(_)));
    // The dialler's own frame reflected back does not authenticate.
    let (mut mine, _) = lane::lane_keys(&ROOT, true);
    let mut reflected = Vec::new();
    mine.seal(&lane::encode_msg(&LaneMsg::Got { tag: 0, items: vec![None] }), &mut reflected).expect("seals");
    assert!(matches!(ended_by(&reflected), Ended::Refused(_)));
}

#[test]
fn a_frame_that_stalls_ends_the_lane_at_the_frame_deadline() {
    let (a, mut b) = pair();
    let timing = Timing { frame: Duration::from_millis(200), idle: Duration::from_secs(60) };
    let (conn, side) = Conn::new(PeerId::random(), a, &ROOT, true, timing, Arc::default()).expect("lane");
    let c = conn.clone();
    let reader = std::thread::spawn(move || read_loop(&c, side, Serve::default(), &|| true));
    b.write_all(&[0, 0, 1]).expect("part of a header");
    assert!(matches!(reader.join().expect("reader"), Ended::Late(_)));
    drop(b);
}

#[test]
fn an_unanswered_call_ends_the_lane_and_comes_back() {
    let (a, _b) = pair();
    let timing = Timing { frame: Duration::from_millis(100), idle: Duration::from_secs(60) };
    let (conn, side) = Conn::new(PeerId::random(), a, &ROOT, true, timing, Arc::default()).expect("lane");
    let c = conn.clone();
    let reader = std::thread::spawn(move || read_loop(&c, side, Serve::default(), &|| true));
    let (tx, rx) = mpsc::channel();
    assert!(conn.call(vec![ByteArray::new([1; 16])], reply_to(&tx)).is_ok());
    assert!(matches!(reader.join().expect("reader"), Ended::Unanswered));
    assert_eq!(rx.recv_timeout(Duration::from_secs(10)).expect("handed back"), None);
}

#[test]
fn a_stopped_node_ends_its_lanes() {
    let (a, _b) = pair();
    let timing = Timing { frame: Duration::from_millis(40), idle: Duration::from_secs(60) };
    let (conn, side) = Conn::new(PeerId::random(), a, &ROOT, true, timing, Arc::default()).expect("lane");
    let stop = Arc::new(AtomicBool::new(false));
    let s = stop.clone();
    let c = conn.clone();
    let reader = std::thread::spawn(move || read_loop(&c, side, Serve::default(), &|| !s.load(Ordering::SeqCst)));
    stop.store(true, Ordering::SeqCst);
    assert!(matches!(reader.join().expect("reader"), Ended::Stopped));
    assert!(conn.is_down());
}
