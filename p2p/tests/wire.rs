//! The wire format (`manta_p2p::fuzzing::wire`) and the object codec
//! (`manta_p2p::fuzzing::codec`): round trips, version and size checks, truncation,
//! hostile length headers (with a per-thread allocation meter), semantic
//! validation, random input, and framing over in-memory streams.

use ciborium::Value;
use futures::executor::block_on;
use futures::io::Cursor;
use libp2p::request_response::Codec;
use manta_p2p::fuzzing::codec::{object_protocol, Incoming, ObjectCodec, RawCodec, OBJECT_PROTOCOL};
use manta_p2p::fuzzing::wire::*;
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::io;

// ---- allocation meter: largest single allocation on this thread ----

struct Meter;

thread_local! {
    static LARGEST: Cell<usize> = const { Cell::new(0) };
}

fn note(size: usize) {
    // try_with: the slot may be gone while a thread shuts down.
    let _ = LARGEST.try_with(|l| l.set(l.get().max(size)));
}

unsafe impl GlobalAlloc for Meter {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note(new_size);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Meter = Meter;

/// Runs `f` and returns its result and the largest single allocation it made.
fn largest_alloc<R>(f: impl FnOnce() -> R) -> (R, usize) {
    LARGEST.with(|l| l.set(0));
    let r = f();
    (r, LARGEST.with(Cell::get))
}

// ---- samples ----

fn fetch(id: u8, offset: u64, len: u32) -> Request {
    Request::Fetch { id: [id; 16], offset, len }
}

fn requests() -> Vec<Request> {
    vec![
        fetch(0, 0, 1),
        fetch(7, 12345, 4096),
        fetch(0xff, u64::MAX, MAX_FETCH_LEN),
        Request::Fetch { id: std::array::from_fn(|i| i as u8), offset: 1 << 40, len: CHUNK_BYTES as u32 },
    ]
}

fn responses() -> Vec<Response> {
    vec![
        Response::Chunk { total: 0, offset: 0, data: vec![] },
        Response::Chunk { total: 10, offset: 3, data: vec![1, 2, 3, 4, 5] },
        Response::Chunk { total: u64::MAX, offset: u64::MAX - 2, data: vec![9, 9] },
        Response::NotFound,
        Response::failed("disk on fire"),
        Response::failed(String::new()),
        Response::Invalid { reason: "message truncated — ünïcode".into() },
        Response::Busy,
    ]
}

fn resource(name: &str, total: f64, free: f64) -> Resource {
    Resource { name: name.into(), total, free }
}

fn heartbeat() -> Heartbeat {
    Heartbeat {
        peer: vec![0x00, 0x24, 0x08, 0x01, 0x12, 0x20, 0xaa, 0xbb],
        addrs: vec![vec![4, 127, 0, 0, 1, 6, 0x1f, 0x90], vec![]],
        seq: 42,
        resources: vec![resource("cpu", 8.0, 2.5), resource("gpu", 0.0, 0.0), resource("mem", 1e12, 1e12)],
        queue_len: 3,
        store_bytes: 1 << 30,
        store_capacity: 4 << 30,
        fn_hash: 0xdead_beef_cafe_f00d,
        leaving: false,
        down: vec![],
        tasks_running: 2,
        tasks_done: u64::MAX,
        tasks_failed: 1,
        store_objects: 17,
        alive_beats: true,
        want_full: true,
    }
}

fn heartbeats() -> Vec<Heartbeat> {
    let empty = Heartbeat::default();
    let full = Heartbeat {
        addrs: (0..MAX_ADDRS).map(|i| vec![i as u8; 40]).collect(),
        resources: (0..MAX_RESOURCES).map(|i| resource(&format!("{i:0>64}"), i as f64, i as f64 / 2.0)).collect(),
        seq: u64::MAX,
        ..heartbeat()
    };
    let edge = Heartbeat {
        resources: vec![resource("é".repeat(32).as_str(), 1.0, 1.0 + 1e-7), resource("z", 0.1, -0.0)],
        ..heartbeat()
    };
    let leaving = Heartbeat { leaving: true, ..heartbeat() };
    let down = Heartbeat { down: (0..MAX_DOWN).map(|i| vec![i as u8; 38]).collect(), ..heartbeat() };
    vec![heartbeat(), empty, full, edge, leaving, down]
}

/// A decoder with the value dropped.
type Decode = fn(&[u8]) -> Result<(), WireError>;
const REQ: Decode = |b| decode_request(b).map(drop);
const RES: Decode = |b| decode_response(b).map(drop);
const HB: Decode = |b| decode_heartbeat(b).map(drop);

/// Whether bytes decode back to a given sample.
type DecodesBack = Box<dyn Fn(&[u8]) -> Result<bool, WireError>>;

/// Every sample of every kind, encoded, with its decoder (value dropped)
/// and a check that its input decodes back to the sample.
fn all_encodings() -> Vec<(String, Vec<u8>, Decode, DecodesBack)> {
    let mut out: Vec<(String, Vec<u8>, Decode, DecodesBack)> = Vec::new();
    for r in requests() {
        let bytes = encode_request(&r);
        out.push((format!("{r:?}"), bytes, REQ, Box::new(move |b| decode_request(b).map(|d| d == r))));
    }
    for r in responses() {
        let bytes = encode_response(&r);
        out.push((format!("{r:?}"), bytes, RES, Box::new(move |b| decode_response(b).map(|d| d == r))));
    }
    for h in heartbeats() {
        let bytes = encode_heartbeat(&h);
        out.push((
            format!("heartbeat seq {}", h.seq),
            bytes,
            HB,
            Box::new(move |b| decode_heartbeat(b).map(|d| d == h)),
        ));
    }
    out
}

fn cbor(v: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    ciborium::into_writer(v, &mut out).expect("encode Value");
    out
}

fn text(s: &str) -> Value {
    Value::Text(s.into())
}

/// `{"v": v, "body": body}`.
fn envelope(v: u64, body: Value) -> Value {
    Value::Map(vec![(text("v"), Value::Integer(v.into())), (text("body"), body)])
}

fn fetch_value(id: Value, offset: u64, len: u64) -> Value {
    Value::Map(vec![(
        text("Fetch"),
        Value::Map(vec![
            (text("id"), id),
            (text("offset"), Value::Integer(offset.into())),
            (text("len"), Value::Integer(len.into())),
        ]),
    )])
}

fn is_malformed<T: std::fmt::Debug>(r: Result<T, WireError>) -> bool {
    matches!(r, Err(WireError::Malformed(_)))
}

// ---- round trips and layout ----

#[test]
fn every_message_round_trips() {
    for (what, bytes, _, decodes_back) in all_encodings() {
        assert_eq!(decodes_back(&bytes), Ok(true), "{what}");
    }
    let big = Response::Chunk { total: CHUNK_BYTES as u64, offset: 0, data: vec![0x5a; CHUNK_BYTES] };
    let bytes = encode_response(&big);
    assert!(bytes.len() <= MAX_RESPONSE_BYTES);
    assert_eq!(decode_response(&bytes), Ok(big));
}

#[test]
fn layout_is_pinned() {
    // {"v": 1, "body": {"Fetch": {"id": h'00..0f', "offset": 5, "len": 7}}}
    let req = Request::Fetch { id: std::array::from_fn(|i| i as u8), offset: 5, len: 7 };
    let mut want = vec![0xa2, 0x61, b'v', 0x01, 0x64, b'b', b'o', b'd', b'y', 0xa1, 0x65];
    want.extend_from_slice(b"Fetch");
    want.extend_from_slice(&[0xa3, 0x62, b'i', b'd', 0x50]);
    want.extend(0..16u8);
    want.extend_from_slice(&[0x66, b'o', b'f', b'f', b's', b'e', b't', 0x05, 0x63, b'l', b'e', b'n', 0x07]);
    assert_eq!(encode_request(&req), want);
    // Unit variants are plain strings.
    assert_eq!(&encode_response(&Response::Busy)[9..], &[0x64, b'B', b'u', b's', b'y']);
    // Heartbeat addresses are byte strings.
    let hb = encode_heartbeat(&heartbeat());
    assert!(hb.windows(9).any(|w| w == [0x48, 4, 127, 0, 0, 1, 6, 0x1f, 0x90]));
}

#[test]
fn indefinite_length_maps_are_accepted() {
    // {_ "v": 1, "body": {"Fetch": {_ "id": h'00'x16, "offset": 0, "len": 1}}}
    let mut b = vec![0xbf, 0x61, b'v', 0x01, 0x64, b'b', b'o', b'd', b'y', 0xa1, 0x65];
    b.extend_from_slice(b"Fetch");
    b.extend_from_slice(&[0xbf, 0x62, b'i', b'd', 0x50]);
    b.extend([0; 16]);
    b.extend_from_slice(&[0x66, b'o', b'f', b'f', b's', b'e', b't', 0x00, 0x63, b'l', b'e', b'n', 0x01, 0xff, 0xff]);
    assert_eq!(decode_request(&b), Ok(fetch(0, 0, 1)));
    // The id as an indefinite-length byte string (two chunks of 8): rejected,
    // the id must be one contiguous byte string.
    let chunked = patch(&b, &[0x50], &[&[0x5f, 0x48][..], &[0; 8], &[0x48]].concat());
    let chunked = patch(&chunked, &[0, 0x66], &[0, 0xff, 0x66]);
    assert!(is_malformed(decode_request(&chunked)));
}

// ---- version ----

#[test]
fn wrong_version_is_reported_before_the_body() {
    for v in [0u16, 2, 0xffff] {
        for body in [fetch_value(Value::Bytes(vec![0; 16]), 0, 1), Value::Null, text("anything")] {
            let bytes = cbor(&envelope(v.into(), body));
            assert_eq!(decode_request(&bytes), Err(WireError::WrongVersion { got: v }));
            assert_eq!(decode_response(&bytes), Err(WireError::WrongVersion { got: v }));
            assert_eq!(decode_heartbeat(&bytes), Err(WireError::WrongVersion { got: v }));
        }
        // Even a body that is cut off.
        let mut bytes = encode_request(&fetch(1, 2, 3));
        bytes[3] = v as u8;
        if v > 23 {
            bytes.splice(3..4, [0x19, (v >> 8) as u8, v as u8]);
        }
        assert_eq!(decode_request(&bytes[..bytes.len() - 5]), Err(WireError::WrongVersion { got: v }));
    }
    // A version that is not a u16 is malformed.
    assert!(is_malformed(decode_request(&cbor(&envelope(70000, Value::Null)))));
}

#[test]
fn envelope_shape_is_strict() {
    let body = fetch_value(Value::Bytes(vec![0; 16]), 0, 1);
    let v1 = (text("v"), Value::Integer(1.into()));
    let b = (text("body"), body.clone());
    let cases = [
        Value::Map(vec![b.clone(), v1.clone()]),
        Value::Map(vec![v1.clone()]),
        Value::Map(vec![b.clone()]),
        Value::Map(vec![]),
        Value::Map(vec![v1.clone(), v1.clone(), b.clone()]),
        Value::Map(vec![v1.clone(), b.clone(), (text("extra"), Value::Null)]),
        Value::Map(vec![v1.clone(), (text("bodY"), body.clone())]),
        Value::Array(vec![Value::Integer(1.into()), body]),
        Value::Null,
    ];
    for case in cases {
        let r = decode_request(&cbor(&case));
        assert!(is_malformed(r.clone()), "{case:?}: {r:?}");
    }
}

// ---- size caps ----

#[test]
fn oversized_input_is_rejected_before_parsing() {
    for (max, decode) in [(MAX_REQUEST_BYTES, REQ), (MAX_RESPONSE_BYTES, RES), (MAX_HEARTBEAT_BYTES, HB)] {
        // A valid-looking start followed by junk: the cap wins.
        let mut bytes = encode_request(&fetch(1, 1, 1));
        bytes.resize(max + 1, 0);
        assert_eq!(decode(&bytes), Err(WireError::TooLarge { len: max + 1, max }));
    }
    // A heartbeat that is valid field by field but too big to gossip.
    let hb = Heartbeat { addrs: vec![vec![1; 1000]; MAX_ADDRS], ..heartbeat() };
    assert_eq!(hb.validate(), Ok(()));
    let bytes = encode_heartbeat(&hb);
    assert!(matches!(decode_heartbeat(&bytes), Err(WireError::TooLarge { max: MAX_HEARTBEAT_BYTES, .. })));
}

#[test]
fn truncation_at_every_offset_is_truncated() {
    for (what, bytes, decode, _) in all_encodings() {
        for cut in 0..bytes.len() {
            assert_eq!(decode(&bytes[..cut]), Err(WireError::Truncated), "{what} cut at {cut}");
        }
    }
}

#[test]
fn trailing_bytes_are_malformed() {
    for (what, bytes, _, decodes_back) in all_encodings() {
        for extra in [&[0x00][..], &[0xff], &bytes] {
            let r = decodes_back(&[&bytes[..], extra].concat());
            assert!(matches!(r, Err(WireError::Malformed(_))), "{what} + {} bytes: {r:?}", extra.len());
        }
    }
}

/// Replaces the first occurrence of `from` in `bytes` with `to`.
fn patch(bytes: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
    let at = bytes.windows(from.len()).position(|w| w == from).expect("pattern present");
    [&bytes[..at], to, &bytes[at + from.len()..]].concat()
}

#[test]
fn huge_length_headers_do_not_allocate() {
    let chunk = encode_response(&Response::Chunk { total: 10, offset: 0, data: vec![1, 2, 3] });
    let hb = encode_heartbeat(&heartbeat());
    let fetch = encode_request(&fetch(3, 0, 1));
    let failed = encode_response(&Response::failed("abc"));
    let big32 = [0xff, 0xff, 0xff, 0xff];
    let big64 = [0xff; 8];
    let cases: Vec<(&str, Vec<u8>, Decode)> = vec![
        // Chunk data claiming 4 GiB and 2^64 - 1 bytes.
        ("data 4G", patch(&chunk, &[0x43, 1, 2, 3], &[&[0x5a][..], &big32, &[1, 2, 3]].concat()), RES),
        ("data 2^64", patch(&chunk, &[0x43, 1, 2, 3], &[&[0x5b][..], &big64, &[1, 2, 3]].concat()), RES),
        // A Failed message claiming 4 GiB of text.
        ("text 4G", patch(&failed, &[0x63, b'a', b'b', b'c'], &[&[0x7a][..], &big32, b"abc"].concat()), RES),
        // Fetch id claiming 4 GiB.
        ("id 4G", patch(&fetch, &[0x50], &[&[0x5a][..], &big32].concat()), REQ),
        // Heartbeat addrs claiming 2^64 - 1 entries, and one address 4 GiB long.
        ("addrs 2^64", patch(&hb, &[0x82, 0x48], &[&[0x9b][..], &big64, &[0x48]].concat()), HB),
        ("addr 4G", patch(&hb, &[0x82, 0x48], &[&[0x82, 0x5a][..], &big32].concat()), HB),
        // Resources claiming 4G entries, and a name 4 GiB long.
        ("resources 4G", patch(&hb, &[0x83, 0xa3], &[&[0x9a][..], &big32, &[0xa3]].concat()), HB),
        ("name 4G", patch(&hb, &[0x63, b'c', b'p', b'u'], &[&[0x7a][..], &big32, b"cpu"].concat()), HB),
        // Unknown field with a 2^64 - 1 byte value in the body.
        ("ignored 2^64", patch(&hb, &[0x61, b's'], &[&[0x63][..], b"xyz", &[0x5b], &big64].concat()), HB),
    ];
    for (what, bytes, decode) in cases {
        assert!(bytes.len() < 400, "{what}"); // small inputs (the test heartbeat, all fields set, is over 300)
        let (r, largest) = largest_alloc(|| decode(&bytes));
        assert!(matches!(r, Err(WireError::Truncated | WireError::Malformed(_))), "{what}: {r:?}");
        assert!(largest <= 16 << 10, "{what}: allocated {largest} bytes at once for a {}-byte input", bytes.len());
    }
}

#[test]
fn deep_nesting_is_malformed() {
    // An unknown field holding 10_000 nested arrays.
    let hb = encode_heartbeat(&heartbeat());
    let nested = [vec![0x81; 10_000], vec![0x00]].concat();
    let bytes = patch(&hb, &[0x61, b's'], &[&[0x63][..], b"xyz", &nested].concat());
    assert!(is_malformed(decode_heartbeat(&bytes)));
}

// ---- semantic validation ----

#[test]
fn fetch_fields_are_validated() {
    for len in [0, MAX_FETCH_LEN + 1, u32::MAX] {
        assert!(is_malformed(decode_request(&encode_request(&fetch(1, 0, len)))), "len {len}");
        assert!(fetch(1, 0, len).validate().is_err());
    }
    for (id, ok) in [(vec![0; 16], true), (vec![0; 15], false), (vec![0; 17], false), (vec![], false)] {
        let bytes = cbor(&envelope(1, fetch_value(Value::Bytes(id.clone()), 0, 1)));
        assert_eq!(decode_request(&bytes).is_ok(), ok, "id of {} bytes", id.len());
    }
    // A len beyond u32 and a negative offset.
    assert!(is_malformed(decode_request(&cbor(&envelope(1, fetch_value(Value::Bytes(vec![0; 16]), 0, 1 << 32))))));
    let neg = fetch_value(Value::Bytes(vec![0; 16]), 0, 1);
    let bytes = patch(&cbor(&envelope(1, neg)), &[b't', 0x00], &[b't', 0x20]);
    assert!(is_malformed(decode_request(&bytes)));
    // An unknown variant.
    let bytes = cbor(&envelope(1, Value::Map(vec![(text("Submit"), Value::Map(vec![]))])));
    assert!(is_malformed(decode_request(&bytes)));
}

#[test]
fn chunk_must_lie_within_total() {
    for (total, offset, len, ok) in
        [(10, 0, 10, true), (10, 10, 0, true), (10, 8, 3, false), (0, 1, 0, false), (u64::MAX, u64::MAX, 1, false)]
    {
        let res = Response::Chunk { total, offset, data: vec![7; len] };
        assert_eq!(decode_response(&encode_response(&res)).is_ok(), ok, "{total} {offset} {len}");
        assert_eq!(res.validate().is_ok(), ok);
    }
}

#[test]
fn heartbeat_fields_are_validated() {
    let bad = |hb: Heartbeat| {
        assert!(hb.validate().is_err());
        let r = decode_heartbeat(&encode_heartbeat(&hb));
        assert!(is_malformed(r.clone()), "{r:?}");
    };
    bad(Heartbeat { addrs: vec![vec![1]; MAX_ADDRS + 1], ..heartbeat() });
    bad(Heartbeat { resources: vec![resource("r", 1.0, 1.0); MAX_RESOURCES + 1], ..heartbeat() });
    bad(Heartbeat { down: vec![vec![1]; MAX_DOWN + 1], ..heartbeat() });
    bad(Heartbeat { resources: vec![resource(&"n".repeat(MAX_RESOURCE_NAME_BYTES + 1), 1.0, 1.0)], ..heartbeat() });
    bad(Heartbeat { resources: vec![resource(&"é".repeat(33), 1.0, 1.0)], ..heartbeat() });
    for (total, free) in [
        (f64::NAN, 0.0),
        (1.0, f64::NAN),
        (f64::INFINITY, 1.0),
        (1.0, f64::NEG_INFINITY),
        (-1.0, 0.0),
        (1.0, -0.5),
        (1.0, 1.0 + 1e-5),
        (0.0, 1e-5),
    ] {
        bad(Heartbeat { resources: vec![resource("cpu", 8.0, 1.0), resource("x", total, free)], ..heartbeat() });
    }
    // Validation applies to resources past the first.
    assert_eq!(Heartbeat { resources: vec![resource("x", 1.0, 1.0 + 1e-7)], ..heartbeat() }.validate(), Ok(()));
}

// ---- random input ----

struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Decodes `bytes` as each kind; whatever decodes must re-encode to bytes
/// that decode to the same value.
fn decode_all(bytes: &[u8]) -> usize {
    let mut ok = 0;
    if let Ok(r) = decode_request(bytes) {
        assert_eq!(decode_request(&encode_request(&r)), Ok(r));
        ok += 1;
    }
    if let Ok(r) = decode_response(bytes) {
        assert_eq!(decode_response(&encode_response(&r)), Ok(r));
        ok += 1;
    }
    if let Ok(h) = decode_heartbeat(bytes) {
        assert_eq!(decode_heartbeat(&encode_heartbeat(&h)), Ok(h));
        ok += 1;
    }
    ok
}

#[test]
fn random_garbage_never_panics() {
    let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
    for _ in 0..4000 {
        let len = rng.below(200);
        let bytes: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
        decode_all(&bytes);
        // Garbage behind a valid envelope start, to get past the first check.
        decode_all(&[&[0xa2, 0x61, b'v', 0x01, 0x64, b'b', b'o', b'd', b'y'][..], &bytes].concat());
    }
}

#[test]
fn mutated_messages_never_panic() {
    let mut rng = XorShift(0x2545_f491_4f6c_dd1d);
    let samples: Vec<Vec<u8>> = all_encodings().into_iter().map(|(_, b, _, _)| b).filter(|b| b.len() < 4096).collect();
    let mut decoded = 0;
    for _ in 0..4000 {
        let mut bytes = samples[rng.below(samples.len())].clone();
        for _ in 0..1 + rng.below(4) {
            let at = rng.below(bytes.len());
            match rng.below(4) {
                0 => bytes[at] ^= 1 << rng.below(8),
                1 => bytes[at] = rng.next() as u8,
                2 => bytes.truncate(at),
                _ => bytes.insert(at, rng.next() as u8),
            }
            if bytes.is_empty() {
                break;
            }
        }
        decoded += decode_all(&bytes);
    }
    assert!(decoded > 100, "only {decoded} mutants decoded; the mutator is too destructive");
}

// ---- codec ----

fn written<F>(write: F) -> Vec<u8>
where
    F: FnOnce(&mut Cursor<Vec<u8>>) -> io::Result<()>,
{
    let mut out = Cursor::new(Vec::new());
    write(&mut out).expect("write");
    out.into_inner()
}

fn frame(body: &[u8]) -> Vec<u8> {
    [&(body.len() as u32).to_be_bytes()[..], body].concat()
}

fn read_req(bytes: &[u8]) -> (io::Result<Incoming>, u64) {
    let mut io = Cursor::new(bytes.to_vec());
    let r = block_on(ObjectCodec.read_request(&object_protocol(), &mut io));
    (r, io.position())
}

fn read_res(bytes: &[u8]) -> (io::Result<Response>, u64) {
    let mut io = Cursor::new(bytes.to_vec());
    let r = block_on(ObjectCodec.read_response(&object_protocol(), &mut io));
    (r, io.position())
}

#[test]
fn codec_request_round_trip() {
    assert_eq!(object_protocol().as_ref(), OBJECT_PROTOCOL);
    for req in requests() {
        let bytes = written(|io| block_on(ObjectCodec.write_request(&object_protocol(), io, req.clone().into())));
        assert_eq!(bytes, frame(&encode_request(&req)));
        let (r, pos) = read_req(&bytes);
        assert_eq!(r.expect("read"), Incoming::Valid(req));
        assert_eq!(pos, bytes.len() as u64);
    }
    // Bytes after the frame are left unread.
    let bytes = frame(&encode_request(&fetch(1, 2, 3)));
    let (r, pos) = read_req(&[&bytes[..], b"junk"].concat());
    assert_eq!(r.expect("read"), Incoming::Valid(fetch(1, 2, 3)));
    assert_eq!(pos, bytes.len() as u64);
}

#[test]
fn codec_bad_requests_are_invalid_not_errors() {
    let max = MAX_REQUEST_BYTES;
    // Oversized prefix: reported without reading (or allocating) the body.
    for len in [max + 1, u32::MAX as usize] {
        let mut bytes = (len as u32).to_be_bytes().to_vec();
        bytes.extend(vec![0xa2; 1024]);
        let ((r, pos), largest) = largest_alloc(|| read_req(&bytes));
        assert_eq!(r.expect("read"), Incoming::Invalid(WireError::TooLarge { len, max }));
        assert_eq!(pos, 4);
        assert!(largest < 4096, "allocated {largest} bytes");
    }
    let good = frame(&encode_request(&fetch(1, 2, 3)));
    // Truncated anywhere, including an empty stream and a partial prefix.
    for cut in 0..good.len() {
        let (r, _) = read_req(&good[..cut]);
        assert_eq!(r.expect("read"), Incoming::Invalid(WireError::Truncated), "cut at {cut}");
    }
    // A prefix shorter than the body: the rest is trailing garbage, unread.
    let mut short = good.clone();
    short[3] -= 1;
    assert!(matches!(read_req(&short).0, Ok(Incoming::Invalid(WireError::Truncated))));
    // Garbage, a zero-length frame, a wrong version, a bad field.
    assert!(matches!(read_req(&frame(b"garbage")).0, Ok(Incoming::Invalid(WireError::Malformed(_)))));
    assert!(matches!(read_req(&frame(&[])).0, Ok(Incoming::Invalid(WireError::Truncated))));
    let v2 = cbor(&envelope(2, Value::Null));
    assert_eq!(read_req(&frame(&v2)).0.expect("read"), Incoming::Invalid(WireError::WrongVersion { got: 2 }));
    let len0 = encode_request(&fetch(1, 2, 0));
    assert!(matches!(read_req(&frame(&len0)).0, Ok(Incoming::Invalid(WireError::Malformed(_)))));
}

#[test]
fn codec_refuses_to_write_invalid_or_oversized() {
    let mut io = Cursor::new(Vec::new());
    let r = block_on(ObjectCodec.write_request(&object_protocol(), &mut io, Incoming::Invalid(WireError::Truncated)));
    assert_eq!(r.expect_err("refused").kind(), io::ErrorKind::InvalidInput);
    let huge = Response::failed("x".repeat(MAX_RESPONSE_BYTES));
    let r = block_on(ObjectCodec.write_response(&object_protocol(), &mut io, huge));
    assert_eq!(r.expect_err("refused").kind(), io::ErrorKind::InvalidInput);
    assert!(io.into_inner().is_empty(), "nothing written");
}

#[test]
fn codec_response_round_trip_and_errors() {
    let mut all = responses();
    all.push(Response::Chunk { total: CHUNK_BYTES as u64, offset: 0, data: vec![1; CHUNK_BYTES] });
    for res in all {
        let bytes = written(|io| block_on(ObjectCodec.write_response(&object_protocol(), io, res.clone())));
        assert_eq!(bytes, frame(&encode_response(&res)));
        let (r, pos) = read_res(&bytes);
        assert_eq!(r.expect("read"), res);
        assert_eq!(pos, bytes.len() as u64);
    }
    // Oversized: an error, without reading the body.
    let bytes = [&((MAX_RESPONSE_BYTES + 1) as u32).to_be_bytes()[..], &[0; 64]].concat();
    let ((r, pos), largest) = largest_alloc(|| read_res(&bytes));
    assert_eq!(r.expect_err("too large").kind(), io::ErrorKind::InvalidData);
    assert_eq!(pos, 4);
    assert!(largest < 4096);
    // Truncated, malformed, wrong version.
    let good = frame(&encode_response(&Response::Busy));
    for cut in 0..good.len() {
        assert_eq!(read_res(&good[..cut]).0.expect_err("truncated").kind(), io::ErrorKind::UnexpectedEof);
    }
    for body in [b"garbage".to_vec(), cbor(&envelope(9, Value::Null)), vec![]] {
        let err = read_res(&frame(&body)).0.expect_err("bad");
        assert_eq!(err.kind(), io::ErrorKind::InvalidData, "{err}");
    }
}

#[test]
fn raw_codec_sends_bytes_as_given() {
    let p = object_protocol();
    let bytes = written(|io| block_on(RawCodec.write_request(&p, io, b"\xff\xff\xff\xffhello".to_vec())));
    assert_eq!(bytes, b"\xff\xff\xff\xffhello");
    // The server side of the normal codec sees it as oversized.
    assert!(matches!(read_req(&bytes).0, Ok(Incoming::Invalid(WireError::TooLarge { .. }))));
    // Responses come back framed-and-capped but undecoded.
    let res = frame(&encode_response(&Response::NotFound));
    let mut io = Cursor::new(res.clone());
    assert_eq!(block_on(RawCodec.read_response(&p, &mut io)).expect("read"), encode_response(&Response::NotFound));
    let mut io = Cursor::new(b"\xff\xff\xff\xff".to_vec());
    assert_eq!(block_on(RawCodec.read_response(&p, &mut io)).expect_err("cap").kind(), io::ErrorKind::InvalidData);
    // Its server side reads to end of stream, capped.
    let mut io = Cursor::new(vec![7; 10]);
    assert_eq!(block_on(RawCodec.read_request(&p, &mut io)).expect("read"), vec![7; 10]);
    let mut io = Cursor::new(vec![7; MAX_REQUEST_BYTES + 5]);
    assert!(block_on(RawCodec.read_request(&p, &mut io)).is_err());
    let out = written(|io| block_on(RawCodec.write_response(&p, io, vec![1, 2])));
    assert_eq!(out, vec![1, 2]);
}

// ---- PROTOCOL.md quotes the crate's protocol names ----

/// The protocol names, topic and lane constants that `p2p/PROTOCOL.md`
/// quotes are this build's: the document fails this test when a constant
/// changes without it.
#[test]
fn protocol_doc_quotes_the_crates_names() {
    let doc = include_str!("../PROTOCOL.md");
    let quoted = |s: &str| doc.contains(&format!("`{s}`"));
    for name in [
        OBJECT_PROTOCOL,
        manta_p2p::fuzzing::mail::MAIL_PROTOCOL,
        manta_p2p::KAD_PROTOCOL,
        manta_p2p::HEARTBEAT_TOPIC,
        manta_p2p::SECRET_ENV,
    ] {
        assert!(quoted(name), "PROTOCOL.md does not quote `{name}`");
    }
    use manta_p2p::fuzzing::lane::{LANE_PROTOCOL, MAX_FRAME_BYTES};
    use manta_p2p::fuzzing::seal::{HELLO_BYTES, LANE_VERSION, MAGIC, MESSAGE_LANE_VERSION, RECORD_BYTES, TAG_BYTES};
    assert!(quoted(LANE_PROTOCOL), "PROTOCOL.md does not quote `{LANE_PROTOCOL}`");
    assert!(doc.contains(&format!("message lane version byte `{MESSAGE_LANE_VERSION}`")), "message lane version");
    assert!(doc.contains(&format!("<= {MAX_FRAME_BYTES} = 64 KiB")), "lane frame cap");
    assert!(quoted(std::str::from_utf8(MAGIC).unwrap()), "lane magic");
    assert!(doc.contains(&format!("lane version byte `{LANE_VERSION}`")), "lane version");
    assert!(doc.contains(&format!("{HELLO_BYTES} bytes")), "hello length");
    assert_eq!((RECORD_BYTES, TAG_BYTES), (1 << 20, 16), "record cap and tag size as PROTOCOL.md states them");
    assert!(doc.contains(&format!("`\"v\": {VERSION}`")), "envelope version");
    // The example bytes of PROTOCOL.md section 5.3.
    let fetch = encode_request(&Request::Fetch { id: [0xAB; 16], offset: 0, len: 4 << 20 });
    let mut want = hex("A2 61 76 01 64 62 6F 64 79 A1 65 46 65 74 63 68 A3 62 69 64 50");
    want.extend([0xAB; 16]);
    want.extend(hex("66 6F 66 66 73 65 74 00 63 6C 65 6E 1A 00 40 00 00"));
    assert_eq!((fetch.len(), fetch), (0x36, want), "the Fetch example");
    let not_found = hex("A2 61 76 01 64 62 6F 64 79 68 4E 6F 74 46 6F 75 6E 64");
    assert_eq!(encode_response(&Response::NotFound), not_found, "the NotFound example");
}

fn hex(s: &str) -> Vec<u8> {
    s.split_whitespace().map(|b| u8::from_str_radix(b, 16).unwrap()).collect()
}
