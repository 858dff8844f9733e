//! The p2p fuzz targets' seed corpora (`fuzz/corpus/p2p_*/`), run as normal
//! tests: every file goes through the same call as its target in
//! `fuzz/fuzz_targets/p2p_*.rs` (decode; if that succeeds, re-encode and
//! check the bytes decode to the same value), so `cargo test` exercises them
//! without the fuzzer.
//!
//! File names say what is expected:
//! - `valid-*` must decode to `Ok`;
//! - `bad-*` must be an error (a `WireError`; for `p2p_bulk` an `io::Error`);
//! - anything else (e.g. a minimised crash `crash-*`, or an input the fuzzer
//!   found) must only not panic.
//!
//! Files starting with `.` are skipped.
//!
//! `p2p_mail` runs both `decode_batch` and `decode_ack` on every input, so
//! there `valid-*` means one of them accepts it (`valid-batch-*` the batch
//! decoder, `valid-ack-*` the ack decoder: see
//! [`mail_seeds_decode_as_their_kind`]) and `bad-*` that both refuse it.
//!
//! `p2p_bulk` likewise parses a `Hello` from the first `HELLO_BYTES` bytes
//! (its MAC under the hello key of a cluster whose secret is [`BULK_KEY`])
//! and opens the whole input as a sealed record stream under [`BULK_KEY`]:
//! `valid-hello` is a hello, the other `valid-*` are streams, and `bad-*`
//! is neither (a stream never starts with the hello's magic: as a header it
//! is a record over the size cap).
//!
//! The framing and plain-CBOR targets (`p2p_frame`, `p2p_hint`,
//! `p2p_chunk`, `p2p_actor_record`, `p2p_args`, `p2p_timeline`,
//! `p2p_voucher`, `p2p_signed_record`) and their seeds are in
//! `fuzz_seeds/`; the message lane's (`p2p_lane`) in `fuzz_seeds/lane.rs`.
//!
//! The `valid-*` and `bad-*` seeds are made by [`seeds`]; to rewrite them:
//! ```text
//! MANTA_REGEN_FUZZ_CORPUS=1 cargo test -p manta-p2p --test fuzz_corpus regenerate
//! ```

use manta_p2p::fuzzing::mail::{
    decode_ack, decode_batch, encode_ack, encode_batch, Ack, Batch, Completion, Mail, Opts, Refusal, RemoteError, Root,
    WireId, MAX_CHAIN, MAX_NAME_BYTES,
};
use manta_p2p::fuzzing::seal::{self, Hello, HelloError, HelloKey, Secret, HELLO_BYTES, LAST, RECORD_BYTES, TAG_BYTES};
use manta_p2p::fuzzing::wire::*;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

mod fuzz_seeds;

/// The call a fuzz target makes, by the error its decoder gives.
#[derive(Clone, Copy)]
enum Target {
    Wire(fn(&[u8]) -> Result<(), WireError>),
    Io(fn(&[u8]) -> std::io::Result<()>),
}

impl Target {
    /// Runs the call; its error as text.
    fn run(self, bytes: &[u8]) -> Result<(), String> {
        match self {
            Target::Wire(call) => call(bytes).map_err(|e| format!("{e:?}")),
            Target::Io(call) => call(bytes).map_err(|e| format!("{e:?}")),
        }
    }
}

/// `fuzz/fuzz_targets/p2p_bulk.rs`'s key: its seeds are sealed with it.
const BULK_KEY: Secret = [0x42; 32];

/// `fuzz/fuzz_targets/p2p_bulk.rs`'s hello key: a cluster whose secret is
/// [`BULK_KEY`].
fn bulk_hello_key() -> HelloKey {
    HelloKey::new(Some(&BULK_KEY))
}

/// `fuzz/fuzz_targets/p2p_bulk.rs`'s plaintext limit.
const BULK_LIMIT: u64 = 4 << 20;

/// The fuzz targets: name (= `fuzz/fuzz_targets/<name>.rs` and
/// `fuzz/corpus/<name>/`) and the call the target makes.
const TARGETS: [(&str, Target); 5] = [
    (
        "p2p_request",
        Target::Wire(|b| {
            let req = decode_request(b)?;
            assert_eq!(decode_request(&encode_request(&req)).as_ref(), Ok(&req), "request round trip");
            Ok(())
        }),
    ),
    (
        "p2p_response",
        Target::Wire(|b| {
            let res = decode_response(b)?;
            assert_eq!(decode_response(&encode_response(&res)).as_ref(), Ok(&res), "response round trip");
            Ok(())
        }),
    ),
    (
        "p2p_heartbeat",
        Target::Wire(|b| {
            let beat = decode_beat(b)?;
            assert_eq!(decode_beat(&encode_beat(&beat)).as_ref(), Ok(&beat), "beat round trip");
            Ok(())
        }),
    ),
    // Both decoders on every input: `Ok` if either accepts it.
    (
        "p2p_mail",
        Target::Wire(|b| {
            let batch = decode_batch(b).map(|batch| {
                assert_eq!(decode_batch(&encode_batch(&batch)).as_ref(), Ok(&batch), "batch round trip");
            });
            let ack = decode_ack(b).map(|ack| {
                assert_eq!(decode_ack(&encode_ack(&ack)).as_ref(), Ok(&ack), "ack round trip");
            });
            batch.or(ack)
        }),
    ),
    // The hello parser and the stream opener on every input: `Ok` if either
    // accepts it.
    (
        "p2p_bulk",
        Target::Io(|b| {
            let hello = match b.first_chunk::<HELLO_BYTES>() {
                Some(first) => Hello::from_bytes(first, &bulk_hello_key()).map(|hello| {
                    assert_eq!(&hello.to_bytes(&bulk_hello_key()), first, "hello round trip");
                }),
                None => Err(HelloError::NotAHello), // shorter than a hello
            };
            let stream = seal::open_all(b, &BULK_KEY, BULK_LIMIT).map(|plain| {
                let again = seal::open_all(&seal::seal_all(&plain, &BULK_KEY), &BULK_KEY, BULK_LIMIT);
                assert_eq!(again.ok().as_ref(), Some(&plain), "seal round trip");
            });
            stream.or_else(|e| hello.map_err(|_| e))
        }),
    ),
];

/// Every target: those above, then framing and the plain decoders
/// (`fuzz_seeds`).
fn all_targets() -> impl Iterator<Item = (&'static str, Target)> {
    TARGETS.into_iter().chain(fuzz_seeds::TARGETS).chain(fuzz_seeds::lane::TARGETS)
}

fn corpus_dir(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join("fuzz").join("corpus").join(target)
}

/// What a file's name says about its decoding.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Expect {
    Ok,
    Err,
    NoPanic,
}

fn expectation(name: &str) -> Expect {
    if name.starts_with("valid-") {
        Expect::Ok
    } else if name.starts_with("bad-") {
        Expect::Err
    } else {
        Expect::NoPanic
    }
}

/// Runs `target` on `bytes`; `Err(why)` if the result contradicts `expect`
/// or the target panicked.
fn check(target: Target, bytes: &[u8], expect: Expect) -> Result<(), String> {
    match catch_unwind(AssertUnwindSafe(|| target.run(bytes))) {
        Err(panic) => {
            let msg = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            Err(format!("target panicked: {msg}"))
        }
        Ok(Ok(())) if expect == Expect::Err => Err("decoded Ok, expected an error".into()),
        Ok(Err(e)) if expect == Expect::Ok => Err(format!("expected Ok, got {e}")),
        Ok(_) => Ok(()),
    }
}

#[test]
fn corpora_decode_without_panicking() {
    let mut failures = Vec::new();
    for (target, decode) in all_targets() {
        let dir = corpus_dir(target);
        let entries = std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        let (mut files, mut valid, mut bad) = (0, 0, 0);
        for entry in entries {
            let path = entry.expect("corpus entry").path();
            let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            if name.starts_with('.') || !path.is_file() {
                continue;
            }
            let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            let expect = expectation(&name);
            files += 1;
            valid += usize::from(expect == Expect::Ok);
            bad += usize::from(expect == Expect::Err);
            if let Err(why) = check(decode, &bytes, expect) {
                failures.push(format!("{target}/{name}: {why}"));
            }
        }
        assert!(valid > 0 && bad > 0, "{}: {valid} valid-* and {bad} bad-* among {files} files", dir.display());
    }
    assert!(failures.is_empty(), "{} corpus file(s) failed:\n{}", failures.len(), failures.join("\n"));
}

/// The `p2p_mail` seeds named `valid-batch-*` / `valid-ack-*` decode as
/// that message (not merely as one of the two).
#[test]
fn mail_seeds_decode_as_their_kind() {
    let dir = corpus_dir("p2p_mail");
    let (mut batches, mut acks) = (0, 0);
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.expect("corpus entry").path();
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let bytes = || std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        if name.starts_with("valid-batch-") {
            batches += 1;
            assert!(decode_batch(&bytes()).is_ok(), "{name}: not a batch");
        } else if name.starts_with("valid-ack-") {
            acks += 1;
            assert!(decode_ack(&bytes()).is_ok(), "{name}: not an ack");
        }
    }
    assert!(batches > 0 && acks > 0, "{}: {batches} valid-batch-* and {acks} valid-ack-*", dir.display());
}

/// Checks the seed generator's own expectations in memory; with
/// `MANTA_REGEN_FUZZ_CORPUS` set, also (re)writes the seeds to the corpora.
#[test]
fn regenerate_seed_corpus() {
    let write = std::env::var_os("MANTA_REGEN_FUZZ_CORPUS").is_some();
    let mut failures = Vec::new();
    for (target, decode) in all_targets() {
        let dir = corpus_dir(target);
        if write {
            std::fs::create_dir_all(&dir).expect("create corpus dir");
        }
        let mut names = std::collections::HashSet::new();
        for (name, bytes) in seeds(target) {
            assert!(names.insert(name.clone()), "{target}: seed {name} made twice");
            assert!(bytes.len() <= 4096, "{target}/{name}: {} bytes, keep seeds small", bytes.len());
            if let Err(why) = check(decode, &bytes, expectation(&name)) {
                failures.push(format!("{target}/{name}: {why}"));
            }
            if write {
                std::fs::write(dir.join(&name), &bytes).expect("write seed");
            }
        }
    }
    assert!(failures.is_empty(), "{} seed(s) failed:\n{}", failures.len(), failures.join("\n"));
}

// ---- the seed generator ----

/// Replaces the first occurrence of `from` in `bytes` with `to`.
fn patch(bytes: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
    let at = bytes.windows(from.len()).position(|w| w == from).expect("pattern present");
    [&bytes[..at], to, &bytes[at + from.len()..]].concat()
}

/// `bytes` with the envelope's version (the 4th byte, a small integer) set to `v`.
fn with_version(bytes: &[u8], v: u8) -> Vec<u8> {
    assert_eq!(&bytes[..4], &[0xa2, 0x61, b'v', 0x01], "envelope start");
    [&bytes[..3], &[v], &bytes[4..]].concat()
}

/// Seeds every target gets, made from one valid encoding `base`.
fn damaged(base: &[u8]) -> Named {
    vec![
        ("empty", vec![]),
        ("truncated-envelope", base[..3].to_vec()),
        ("truncated-half", base[..base.len() / 2].to_vec()),
        ("truncated-last-byte", base[..base.len() - 1].to_vec()),
        ("trailing-zero", [base, &[0x00]].concat()),
        ("twice", [base, base].concat()),
        ("version-0", with_version(base, 0)),
        ("version-2", with_version(base, 2)),
        ("version-2-no-body", vec![0xa1, 0x61, b'v', 0x02]),
        ("version-huge", [&[0xa2, 0x61, b'v', 0x1a, 0, 1, 0, 0][..], &base[4..]].concat()),
        ("body-before-v", [&[0xa2][..], &base[4..], &base[1..4]].concat()),
        ("envelope-array", [&[0x82, 0x01][..], &base[9..]].concat()),
        ("garbage", b"\xde\xad\xbe\xef not cbor".to_vec()),
        // 200 nested arrays where the body should be.
        ("body-nested-arrays", [&base[..9], &[0x81; 200], &[0x00]].concat()),
    ]
}

fn resource(name: &str, total: f64, free: f64) -> Resource {
    Resource { name: name.into(), total, free }
}

fn heartbeat() -> Heartbeat {
    Heartbeat {
        peer: vec![0x00, 0x24, 0x08, 0x01, 0x12, 0x20, 0xaa, 0xbb],
        addrs: vec![vec![4, 127, 0, 0, 1, 6, 0x1f, 0x90], vec![4, 10, 0, 0, 7, 6, 0x1f, 0x91]],
        seq: 42,
        resources: vec![resource("cpu", 8.0, 2.5), resource("mem", 17179869184.0, 1e9)],
        queue_len: 3,
        store_bytes: 1 << 30,
        store_capacity: 4 << 30,
        fn_hash: 0xdead_beef_cafe_f00d,
        leaving: false,
        down: vec![],
        tasks_running: 2,
        tasks_done: 1_000,
        tasks_failed: 1,
        store_objects: 17,
        // As an older node sends it (the seeds of that version stay).
        alive_beats: false,
        want_full: false,
    }
}

fn wire_id(first: u8) -> WireId {
    std::array::from_fn(|i| first.wrapping_add(i as u8))
}

fn opts() -> Opts {
    Opts {
        cpus: 1.5,
        resources: vec![("gpu".into(), 1.0), ("mem".into(), 2e9)],
        retries: 3,
        name: Some("train".into()),
        prefetch: Vec::new(),
    }
}

/// Every [`Mail`] variant once, every [`Completion`] once.
fn every_mail() -> Batch {
    let failed = RemoteError {
        chain: vec!["top".into(), "mid".into()],
        root: Root::Panicked { task: "leaf".into(), message: "boom".into() },
    };
    Batch(vec![
        Mail::Submit { id: [1; 16], func: "add".into(), args: vec![0x82, 0x01, 0x02], opts: opts() },
        Mail::Done { id: wire_id(0x10), outcome: Completion::Inline(vec![0x18, 0x2a]) },
        Mail::Done { id: wire_id(0x20), outcome: Completion::Stays(1 << 20) },
        Mail::Done { id: wire_id(0x30), outcome: Completion::Failed(failed) },
        Mail::Borrow(vec![serde_bytes::ByteArray::new(wire_id(0x40)), serde_bytes::ByteArray::new(wire_id(0x50))]),
        Mail::Release(vec![serde_bytes::ByteArray::new(wire_id(0x60))]),
        Mail::NewActor { actor: wire_id(0x70), class: "Counter".into(), args: vec![0x81, 0x00], opts: Opts::default() },
        Mail::Call { actor: wire_id(0x70), method: "incr".into(), args: vec![0x80], id: wire_id(0x80) },
        Mail::DropActor(wire_id(0x70)),
    ])
}

/// Every [`Root`] variant once.
fn every_root() -> Vec<Root> {
    vec![
        Root::Panicked { task: "t".into(), message: "index out of bounds".into() },
        Root::Cancelled { task: "t".into() },
        Root::Infeasible { task: "t".into(), resource: "gpu".into(), requested: 4.0, total: 2.0 },
        Root::ActorDead { actor: "Counter".into(), reason: "node left".into() },
        Root::ObjectLost { id: wire_id(0x90), reason: "owner died".into() },
        Root::StoreFull { needed: 1 << 30, capacity: 1 << 29 },
        Root::PeerUnreachable { id: wire_id(0xa0), reason: "timeout".into() },
        Root::UnknownFunction { name: "nope".into(), reason: "not registered".into() },
        Root::OwnerDied { id: wire_id(0xb0), owner: "12D3KooW".into() },
        Root::Other("something else".into()),
    ]
}

fn ack() -> Ack {
    let unknown = RemoteError {
        chain: vec!["caller".into()],
        root: Root::UnknownFunction { name: "nope".into(), reason: "not registered".into() },
    };
    Ack { seq: 0, refused: vec![(0, Refusal::Busy), (3, Refusal::Refused(unknown))], invalid: None }
}

/// Named inputs (names without the `valid-` / `bad-` prefix).
type Named = Vec<(&'static str, Vec<u8>)>;

/// Valid encodings per target and the damaged inputs made from them.
fn seeds(target: &str) -> Vec<(String, Vec<u8>)> {
    if let Some(seeds) = fuzz_seeds::seeds(target) {
        return seeds;
    }
    let big32 = [0x1a, 0xff, 0xff, 0xff, 0xff];
    let big64 = [0x1b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff];
    // A major type's "4-byte length follows" header byte plus `big32`'s length.
    let huge = |major: u8| [&[major | 0x1a][..], &big32[1..]].concat();
    let (valid, base, odd): (Named, Vec<u8>, Named) = match target {
        "p2p_request" => {
            let fetch = |id: [u8; 16], offset, len| encode_request(&Request::Fetch { id, offset, len });
            let base = fetch(std::array::from_fn(|i| i as u8), 5, 4096);
            let id = std::array::from_fn(|i| i as u8);
            let ids = (0..3u8).map(|k| serde_bytes::ByteArray::new([k; 16])).collect();
            let fetch_small = encode_request(&Request::FetchSmall { ids });
            (
                vec![
                    ("fetch-min", fetch([0; 16], 0, 1)),
                    ("fetch-typical", base.clone()),
                    ("fetch-max", fetch([0xff; 16], u64::MAX, MAX_FETCH_LEN)),
                    ("bulk", encode_request(&Request::Bulk { id, offset: 1 << 40 })),
                    ("fetch-small", fetch_small.clone()),
                    ("timeline-first", encode_request(&Request::Timeline { upto: 0, skip: 0 })),
                    ("timeline-next", encode_request(&Request::Timeline { upto: u64::MAX, skip: u32::MAX })),
                    ("vouch", encode_request(&Request::Vouch { ids: vec![serde_bytes::ByteArray::new([4; 16])] })),
                    // Indefinite-length envelope and field maps.
                    ("indefinite-maps", {
                        let b = patch(&base, &[0xa2, 0x61, b'v'], &[0xbf, 0x61, b'v']);
                        let b = patch(&b, &[0xa3, 0x62], &[0xbf, 0x62]);
                        [&b[..], &[0xff, 0xff]].concat()
                    }),
                    // serde_bytes also takes the id as an array of 16 small integers.
                    ("id-as-array", patch(&base, &[0x50, 0, 1], &[0x90, 0, 1])),
                    // An unknown field in the body is skipped.
                    (
                        "unknown-field",
                        patch(&base, &[0xa3, 0x62], &[&[0xa4, 0x63][..], b"new", &[0xf6, 0x62]].concat()),
                    ),
                ],
                base.clone(),
                vec![
                    ("len-zero", fetch(id, 0, 0)),
                    ("len-too-big", fetch(id, 0, MAX_FETCH_LEN + 1)),
                    ("id-15-bytes", patch(&base, &[0x50, 0, 1], &[0x4f, 1])),
                    ("id-4g-header", patch(&base, &[0x50], &huge(0x40))),
                    ("offset-negative", patch(&base, &[b't', 0x05], &[b't', 0x24])),
                    ("unknown-variant", patch(&base, b"eFetch", b"eFetcx")),
                    ("body-null", patch(&base, &base[9..], &[0xf6])),
                    ("ids-4g-header", patch(&fetch_small, &[0x83, 0x50], &[&huge(0x80)[..], &[0x50]].concat())),
                ],
            )
        }
        "p2p_response" => {
            let chunk =
                |total, offset, data: &[u8]| encode_response(&Response::Chunk { total, offset, data: data.to_vec() });
            let base = chunk(100, 10, &[1, 2, 3]);
            let failed = encode_response(&Response::failed("abc"));
            let ticket = |port| encode_response(&Response::Ticket { port, token: [0x11; 32], key: [0x22; 32] });
            let items = vec![Some(serde_bytes::ByteBuf::from(vec![0x18, 42])), None];
            let objects = encode_response(&Response::Objects { items });
            (
                vec![
                    ("chunk-empty", chunk(0, 0, &[])),
                    ("chunk-small", base.clone()),
                    ("chunk-end", chunk(u64::MAX, u64::MAX - 200, &[0x5a; 200])),
                    ("not-found", encode_response(&Response::NotFound)),
                    ("failed", failed.clone()),
                    ("invalid", encode_response(&Response::Invalid { reason: "message truncated".into() })),
                    ("busy", encode_response(&Response::Busy)),
                    ("ticket", ticket(40123)),
                    ("objects", objects.clone()),
                    ("timeline", encode_response(&Response::Timeline { page: vec![0xa0] })),
                    (
                        "vouchers",
                        encode_response(&Response::Vouchers {
                            items: vec![None, Some(serde_bytes::ByteBuf::from(vec![0xa0]))],
                        }),
                    ),
                ],
                base.clone(),
                vec![
                    ("chunk-past-total", chunk(10, 8, &[1, 2, 3])),
                    ("chunk-offset-overflow", chunk(u64::MAX, u64::MAX, &[1])),
                    ("data-4g-header", patch(&base, &[0x43, 1, 2, 3], &[&huge(0x40)[..], &[1, 2, 3]].concat())),
                    (
                        "data-2e64-header",
                        patch(&base, &[0x43, 1, 2, 3], &[&[0x5b][..], &big64[1..], &[1, 2, 3]].concat()),
                    ),
                    ("text-4g-header", patch(&failed, &[0x63, b'a'], &[&huge(0x60)[..], b"a"].concat())),
                    ("unit-variant-unknown", patch(&encode_response(&Response::Busy), b"Busy", b"Bosy")),
                    ("data-as-text", patch(&base, &[0x43, 1, 2, 3], &[0x63, b'a', b'b', b'c'])),
                    ("ticket-port-0", ticket(0)),
                    ("items-4g-header", patch(&objects, &[0x82, 0x42], &[&huge(0x80)[..], &[0x42]].concat())),
                ],
            )
        }
        "p2p_heartbeat" => {
            let hb = heartbeat();
            let base = encode_heartbeat(&hb);
            let with = |f: &dyn Fn(&mut Heartbeat)| {
                let mut h = heartbeat();
                f(&mut h);
                encode_heartbeat(&h)
            };
            (
                vec![
                    ("typical", base.clone()),
                    ("empty", encode_heartbeat(&Heartbeat::default())),
                    ("leaving", with(&|h| h.leaving = true)),
                    ("reads-alive-beats", with(&|h| h.alive_beats = true)),
                    (
                        "want-full",
                        with(&|h| {
                            h.alive_beats = true;
                            h.want_full = true;
                        }),
                    ),
                    ("alive", encode_beat(&Beat::Alive(42))),
                    ("alive-max", encode_beat(&Beat::Alive(u64::MAX))),
                    ("down", with(&|h| h.down = vec![vec![0x00, 0x24, 0x08, 0x01]; MAX_DOWN])),
                    ("free-within-epsilon", with(&|h| h.resources = vec![resource("gpu", 1.0, 1.0 + 1e-7)])),
                    ("name-64-bytes", with(&|h| h.resources = vec![resource(&"é".repeat(32), 2.0, 1.0)])),
                    (
                        "max-lists",
                        with(&|h| {
                            h.addrs = vec![vec![1, 2]; MAX_ADDRS];
                            h.resources = (0..MAX_RESOURCES).map(|i| resource(&format!("r{i}"), 1.0, 0.5)).collect();
                        }),
                    ),
                ],
                base.clone(),
                vec![
                    ("total-nan", with(&|h| h.resources[1].total = f64::NAN)),
                    ("free-infinite", with(&|h| h.resources[0].free = f64::INFINITY)),
                    ("total-negative", with(&|h| h.resources[0].total = -1.0)),
                    ("free-over-total", with(&|h| h.resources[0].free = 8.001)),
                    ("name-65-bytes", with(&|h| h.resources[0].name = "n".repeat(65))),
                    ("addrs-65", with(&|h| h.addrs = vec![vec![1]; MAX_ADDRS + 1])),
                    ("resources-65", with(&|h| h.resources = vec![resource("r", 1.0, 1.0); MAX_RESOURCES + 1])),
                    ("down-17", with(&|h| h.down = vec![vec![1]; MAX_DOWN + 1])),
                    ("addrs-2e64-header", patch(&base, &[0x82, 0x48], &[&[0x9b][..], &big64[1..], &[0x48]].concat())),
                    ("addr-4g-header", patch(&base, &[0x82, 0x48], &[&[0x82][..], &huge(0x40)].concat())),
                    ("resources-4g-header", patch(&base, &[0x82, 0xa3], &[&huge(0x80)[..], &[0xa3]].concat())),
                    ("name-4g-header", patch(&base, &[0x63, b'c', b'p', b'u'], &[&huge(0x60)[..], b"cpu"].concat())),
                    ("missing-seq", patch(&base, &[0x61, b's'], &[0x61, b'z'])),
                    ("peer-as-text", patch(&base, &[0x48, 0x00, 0x24], &[0x68, 0x00, 0x24])),
                    ("alive-negative", patch(&encode_beat(&Beat::Alive(42)), &[0x18, 42], &[0x38, 42])),
                    ("alive-float", patch(&encode_beat(&Beat::Alive(42)), &[0x18, 42], &[0xf9, 0x51, 0x40])),
                    ("alive-text", patch(&encode_beat(&Beat::Alive(42)), &[0x18, 42], &[0x61, b'*'])),
                    ("alive-in-array", patch(&encode_beat(&Beat::Alive(42)), &[0x18, 42], &[0x81, 0x18, 42])),
                    ("alive-trailing", [&encode_beat(&Beat::Alive(42))[..], &[0x00]].concat()),
                ],
            )
        }
        "p2p_mail" => {
            let base = encode_batch(&every_mail());
            let with = |f: &dyn Fn(&mut Vec<Mail>)| {
                let mut b = every_mail();
                f(&mut b.0);
                encode_batch(&b)
            };
            let submit_opts = |f: &dyn Fn(&mut Opts)| {
                with(&|m| {
                    if let Mail::Submit { opts, .. } = &mut m[0] {
                        f(opts)
                    }
                })
            };
            let name = |n| "n".repeat(n);
            let at_limits = Batch(vec![
                Mail::Submit {
                    id: [0xff; 16],
                    func: name(MAX_NAME_BYTES),
                    args: vec![],
                    opts: Opts {
                        cpus: 0.0,
                        resources: (0..MAX_RESOURCES)
                            .map(|i| (if i == 0 { name(MAX_NAME_BYTES) } else { format!("r{i}") }, 0.0))
                            .collect(),
                        retries: u32::MAX,
                        name: Some(name(MAX_NAME_BYTES)),
                        prefetch: Vec::new(),
                    },
                },
                Mail::Done {
                    id: [0; 16],
                    outcome: Completion::Failed(RemoteError {
                        chain: (0..MAX_CHAIN).map(|i| format!("t{i}")).collect(),
                        root: Root::Cancelled { task: "t".into() },
                    }),
                },
                Mail::Done { id: [0; 16], outcome: Completion::Stays(u64::MAX) },
            ]);
            let every_root = Batch(
                every_root()
                    .into_iter()
                    .enumerate()
                    .map(|(i, root)| Mail::Done {
                        id: wire_id(i as u8),
                        outcome: Completion::Failed(RemoteError { chain: vec![format!("c{i}"); i], root }),
                    })
                    .collect(),
            );
            let ack_base = encode_ack(&ack());
            (
                vec![
                    ("batch-empty", encode_batch(&Batch(vec![]))),
                    ("batch-every-mail", base.clone()),
                    ("batch-every-root", encode_batch(&every_root)),
                    ("batch-at-limits", encode_batch(&at_limits)),
                    // An unknown field in a message is skipped.
                    (
                        "batch-unknown-field",
                        patch(
                            &base,
                            &[0xa4, 0x62, b'i', b'd'],
                            &[&[0xa5, 0x63][..], b"new", &[0xf6, 0x62, b'i', b'd']].concat(),
                        ),
                    ),
                    // serde_bytes also takes an id as an array of 16 small integers.
                    ("batch-id-as-array", patch(&base, &[0x50, 1, 1], &[0x90, 1, 1])),
                    ("ack-empty", encode_ack(&Ack::default())),
                    ("ack-refused", ack_base.clone()),
                    (
                        "ack-invalid",
                        encode_ack(&Ack { seq: 0, refused: vec![], invalid: Some("message truncated".into()) }),
                    ),
                    ("ack-seq", encode_ack(&Ack { seq: 42, ..ack() })),
                    // A batch as nodes send it: its seq, acks riding on it, mail.
                    (
                        "batch-seq-acked",
                        encode_batch(&Batch(vec![
                            Mail::Seq(7),
                            Mail::Acked(vec![Ack { seq: 3, ..Ack::default() }, Ack { seq: 4, ..ack() }]),
                            Mail::Done { id: wire_id(0x10), outcome: Completion::Stays(1) },
                        ])),
                    ),
                ],
                base.clone(),
                vec![
                    (
                        "batch-func-257-bytes",
                        with(&|m| {
                            m[0] = Mail::Submit {
                                id: [1; 16],
                                func: name(MAX_NAME_BYTES + 1),
                                args: vec![],
                                opts: Opts::default(),
                            }
                        }),
                    ),
                    (
                        "batch-method-257-bytes",
                        with(&|m| {
                            if let Mail::Call { method, .. } = &mut m[7] {
                                *method = name(MAX_NAME_BYTES + 1)
                            }
                        }),
                    ),
                    ("batch-cpus-negative", submit_opts(&|o| o.cpus = -1.0)),
                    ("batch-resource-infinite", submit_opts(&|o| o.resources[1].1 = f64::INFINITY)),
                    ("batch-resources-65", submit_opts(&|o| o.resources = vec![("r".into(), 1.0); MAX_RESOURCES + 1])),
                    (
                        "batch-chain-65",
                        with(&|m| {
                            if let Mail::Done { outcome: Completion::Failed(e), .. } = &mut m[3] {
                                e.chain = vec!["t".into(); MAX_CHAIN + 1]
                            }
                        }),
                    ),
                    (
                        "batch-args-4g-header",
                        patch(&base, &[0x43, 0x82, 0x01, 0x02], &[&huge(0x40)[..], &[0x82]].concat()),
                    ),
                    ("batch-unknown-variant", patch(&base, b"fSubmit", b"fSubmix")),
                    ("batch-two-seqs", with(&|m| m.extend([Mail::Seq(1), Mail::Seq(2)]))),
                    (
                        "batch-acked-bad-error",
                        with(&|m| {
                            let bad =
                                RemoteError { chain: vec!["t".into(); MAX_CHAIN + 1], root: Root::Other("x".into()) };
                            m.push(Mail::Acked(vec![Ack {
                                seq: 1,
                                refused: vec![(0, Refusal::Refused(bad))],
                                invalid: None,
                            }]))
                        }),
                    ),
                    ("batch-id-15-bytes", patch(&base, &[0x50, 1, 1], &[0x4f, 1])),
                    ("ack-trailing-zero", [&ack_base[..], &[0x00]].concat()),
                    ("ack-version-2", with_version(&ack_base, 2)),
                    ("ack-truncated-last-byte", ack_base[..ack_base.len() - 1].to_vec()),
                    ("ack-unknown-refusal", patch(&ack_base, b"dBusy", b"dBosy")),
                    ("ack-index-negative", patch(&ack_base, &[0x82, 0x00, 0x64], &[0x82, 0x20, 0x64])),
                ],
            )
        }
        "p2p_bulk" => {
            let (valid, bad) = bulk_seeds();
            return prefixed(valid, bad);
        }
        other => panic!("unknown target {other}"),
    };
    prefixed(valid, damaged(&base).into_iter().chain(odd).collect())
}

/// The seeds named: `valid-` before each of `valid`, `bad-` before each of `bad`.
fn prefixed(valid: Named, bad: Named) -> Vec<(String, Vec<u8>)> {
    let valid = valid.into_iter().map(|(n, b)| (format!("valid-{n}"), b));
    valid.chain(bad.into_iter().map(|(n, b)| (format!("bad-{n}"), b))).collect()
}

/// The `p2p_bulk` seeds (valid, bad): hellos, and record streams sealed
/// under [`BULK_KEY`] in short records, whole or damaged every way the
/// reader must refuse. (Bytes after the `LAST` record are not refused:
/// `open_all` stops reading there.)
fn bulk_seeds() -> (Named, Named) {
    let seal = |records: &[&[u8]]| seal::seal_records(records, &BULK_KEY);
    let one = seal(&[b"one short record"]);
    let records: [&[u8]; 3] = [b"first", b"the second record", b"3"];
    let three = seal(&records);
    // Where each of `three`'s records starts, then its end.
    let at: Vec<usize> = std::iter::once(0)
        .chain(records.iter().scan(0, |end, r| {
            *end += 4 + r.len() + TAG_BYTES;
            Some(*end)
        }))
        .collect();
    assert_eq!(at[3], three.len());
    let record = |i: usize| &three[at[i]..at[i + 1]];
    let flip = |bytes: &[u8], at: usize, bits: u8| {
        let mut b = bytes.to_vec();
        b[at] ^= bits;
        b
    };
    let hello = Hello { token: std::array::from_fn(|i| i as u8) }.to_bytes(&bulk_hello_key());
    (
        vec![
            ("empty", seal(&[])),
            ("one-record", one.clone()),
            ("three-records", three.clone()),
            ("hello", hello.to_vec()),
        ],
        vec![
            ("no-bytes", vec![]),
            ("truncated-header", three[..at[1] + 2].to_vec()),
            ("truncated-record", three[..at[1] + 10].to_vec()),
            ("truncated-tag", one[..one.len() - 1].to_vec()),
            ("no-last-record", three[..at[2]].to_vec()),
            ("flipped-ciphertext-bit", flip(&one, 4 + 3, 0x10)),
            ("flipped-tag-bit", flip(&one, one.len() - 1, 0x01)),
            // The header is associated data: its length and `LAST` bit are authenticated.
            ("flipped-length-bit", flip(&three, 3, 0x01)),
            ("last-bit-cleared", flip(&three, at[2], 0x80)),
            ("last-bit-set-early", flip(&three, 0, 0x80)),
            ("swapped-records", [record(1), record(0), record(2)].concat()),
            ("dropped-record", [record(0), record(2)].concat()),
            ("replayed-record", [record(0), record(0), record(1), record(2)].concat()),
            ("oversized-length", [&((RECORD_BYTES as u32 + 1) | LAST).to_be_bytes()[..], &[0; 32]].concat()),
            ("oversized-length-max", [&[0x7f, 0xff, 0xff, 0xff][..], &[0; 32]].concat()),
            ("empty-non-last-record", seal(&[b"", b"after an empty record"])),
            ("other-key", seal::seal_records(&[b"sealed under another key"], &[0x24; 32])),
            ("hello-version-1", flip(&hello, 8, 0x03)),
            ("hello-wrong-magic", flip(&hello, 0, 0x20)),
            ("hello-flipped-token-bit", flip(&hello, 20, 0x04)),
            ("hello-flipped-mac-bit", flip(&hello, HELLO_BYTES - 1, 0x01)),
            ("hello-no-secret", Hello { token: [7; 32] }.to_bytes(&HelloKey::new(None)).to_vec()),
        ],
    )
}
