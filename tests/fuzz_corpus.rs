//! The fuzz targets' seed corpora (`fuzz/corpus/<target>/`), run as normal
//! tests: every file goes through the same decoder call as its target in
//! `fuzz/fuzz_targets/`, so `cargo test` exercises them without the fuzzer.
//!
//! File names say what is expected:
//! - `valid-*` must decode to `Ok`;
//! - `bad-*` must be a `SpillError`;
//! - anything else (e.g. a minimised crash `crash-*`, or an input the fuzzer
//!   found) must only not panic.
//!
//! Files starting with `.` are skipped (and ignored by git).
//!
//! The `valid-*` and `bad-*` seeds are made by [`seeds`]; to rewrite them:
//! ```text
//! MANTA_REGEN_FUZZ_CORPUS=1 cargo test --test fuzz_corpus regenerate
//! ```
//! (map encodings follow `HashMap` iteration order, so multi-entry map seeds
//! change bytes on every regeneration; they stay valid).

use manta::SpillError;
use std::collections::HashMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

type Decoder = fn(&[u8]) -> Result<(), SpillError>;

/// The fuzz targets: name (= `fuzz/fuzz_targets/<name>.rs` and
/// `fuzz/corpus/<name>/`) and the call the target makes.
const TARGETS: [(&str, Decoder); 3] = [
    ("spill_decode_bytes", |b| manta::fuzzing::decode_spill::<Vec<u8>>(b).expect("registered")),
    ("spill_decode_strings", |b| manta::fuzzing::decode_spill::<Vec<String>>(b).expect("registered")),
    ("spill_decode_map", |b| manta::fuzzing::decode_spill::<HashMap<String, u64>>(b).expect("registered")),
];

fn corpus_dir(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz").join("corpus").join(target)
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

/// Decodes `bytes`; `Err(why)` if the result contradicts `expect` or the
/// decoder panicked.
fn check(decode: Decoder, bytes: &[u8], expect: Expect) -> Result<(), String> {
    match catch_unwind(AssertUnwindSafe(|| decode(bytes))) {
        Err(panic) => {
            let msg = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            Err(format!("decoder panicked: {msg}"))
        }
        Ok(Ok(())) if expect == Expect::Err => Err("decoded Ok, expected a SpillError".into()),
        Ok(Err(e)) if expect == Expect::Ok => Err(format!("expected Ok, got {e:?}")),
        Ok(_) => Ok(()),
    }
}

#[test]
fn corpora_decode_without_panicking() {
    let mut failures = Vec::new();
    for (target, decode) in TARGETS {
        let dir = corpus_dir(target);
        let entries = std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        let (mut files, mut valid) = (0, 0);
        for entry in entries {
            let path = entry.expect("corpus entry").path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            if name.starts_with('.') || !path.is_file() {
                continue;
            }
            let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            let expect = expectation(&name);
            files += 1;
            valid += usize::from(expect == Expect::Ok);
            if let Err(why) = check(decode, &bytes, expect) {
                failures.push(format!("{target}/{name}: {why}"));
            }
        }
        assert!(valid > 0, "{}: no valid-* seed among {files} files", dir.display());
    }
    assert!(failures.is_empty(), "{} corpus file(s) failed:\n{}", failures.len(), failures.join("\n"));
}

/// Checks the seed generator's own expectations in memory; with
/// `MANTA_REGEN_FUZZ_CORPUS` set, also (re)writes the seeds to the corpora.
#[test]
fn regenerate_seed_corpus() {
    let write = std::env::var_os("MANTA_REGEN_FUZZ_CORPUS").is_some();
    let mut failures = Vec::new();
    for (target, decode) in TARGETS {
        let dir = corpus_dir(target);
        if write {
            std::fs::create_dir_all(&dir).unwrap();
        }
        let mut names = std::collections::HashSet::new();
        for (name, bytes) in seeds(target) {
            assert!(names.insert(name.clone()), "{target}: seed {name} made twice");
            assert!(bytes.len() <= 512, "{target}/{name}: {} bytes, keep seeds small", bytes.len());
            if let Err(why) = check(decode, &bytes, expectation(&name)) {
                failures.push(format!("{target}/{name}: {why}"));
            }
            if write {
                std::fs::write(dir.join(&name), &bytes).unwrap();
            }
        }
    }
    assert!(failures.is_empty(), "{} seed(s) failed:\n{}", failures.len(), failures.join("\n"));
}

// ---- the seed generator ----

fn enc<T: std::any::Any + Send + Sync>(v: T) -> Vec<u8> {
    manta::fuzzing::encode_spill(v).expect("registered spillable type")
}

/// A spill file's parts: `(header incl. type name, CBOR payload)`.
fn split(file: &[u8]) -> (&[u8], &[u8]) {
    let n = u16::from_le_bytes([file[10], file[11]]) as usize;
    (&file[..12 + n], &file[12 + n..file.len() - 12])
}

/// A file with `header` and `payload` and a consistent trailer (correct
/// length and CRC), so that only the payload decides the outcome.
fn with_payload(header: &[u8], payload: &[u8]) -> Vec<u8> {
    let mut out = header.to_vec();
    out.extend_from_slice(payload);
    out.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    out.extend_from_slice(&crc32(payload).to_le_bytes());
    out
}

/// CRC-32 (IEEE, as `crc32fast`), bitwise: seeds are tiny.
fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 { (crc >> 1) ^ 0xEDB8_8320 } else { crc >> 1 };
        }
    }
    !crc
}

fn flip(file: &[u8], at: usize, mask: u8) -> Vec<u8> {
    let mut out = file.to_vec();
    out[at] ^= mask;
    out
}

/// Valid encodings per target and the damaged files made from them.
fn seeds(target: &str) -> Vec<(String, Vec<u8>)> {
    let s = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<String>>();
    let (valid, base, foreign, huge, odd): (Vec<(&str, Vec<u8>)>, _, _, _, _) = match target {
        "spill_decode_bytes" => (
            vec![
                ("empty", enc(Vec::<u8>::new())),
                ("small", enc((1u8..=8).collect::<Vec<u8>>())),
                ("len-24", enc(vec![0xa5u8; 24])),
                ("len-200", enc((0..200u32).map(|i| (i * 37) as u8).collect::<Vec<u8>>())),
            ],
            enc((1u8..=8).collect::<Vec<u8>>()),
            enc(s(&["a", "b"])),
            // A byte string claiming 2^64 - 1 bytes.
            vec![0x5b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x00],
            // An indefinite-length byte string in two chunks ("ab" "c").
            vec![
                ("valid-indefinite", vec![0x5f, 0x42, b'a', b'b', 0x41, b'c', 0xff]),
                // serde_bytes also takes an array of small integers.
                ("valid-array-of-ints", vec![0x82, 0x01, 0x02]),
            ],
        ),
        "spill_decode_strings" => (
            vec![
                ("empty", enc(Vec::<String>::new())),
                ("two", enc(s(&["a", "b"]))),
                ("unicode", enc(s(&["", "héllo", "世界", "🦀 crab"]))),
                ("many", enc((0..20).map(|i| format!("item-{i}")).collect::<Vec<String>>())),
            ],
            enc(s(&["alpha", "beta", "gamma"])),
            enc(HashMap::from([("k".to_string(), 1u64)])),
            // An array claiming 2^64 - 1 elements, then one string claiming
            // 2^64 - 1 bytes.
            vec![
                0x9b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
                0xff,
            ],
            vec![
                // Indefinite array of one indefinite string ("ab" "c").
                ("valid-indefinite", vec![0x9f, 0x7f, 0x62, b'a', b'b', 0x61, b'c', 0xff, 0xff]),
                // A string with invalid UTF-8.
                ("bad-invalid-utf8", vec![0x81, 0x62, 0xc3, 0x28]),
                // 300 nested arrays.
                ("bad-deep-nesting", [vec![0x81; 300], vec![0x60]].concat()),
            ],
        ),
        "spill_decode_map" => (
            vec![
                ("empty", enc(HashMap::<String, u64>::new())),
                ("one", enc(HashMap::from([("a".to_string(), 1u64)]))),
                ("max", enc(HashMap::from([("max".to_string(), u64::MAX)]))),
                ("several", enc((0..8u64).map(|i| (format!("key{i}"), i * 1000)).collect::<HashMap<String, u64>>())),
            ],
            enc(HashMap::from([("x".to_string(), 42u64)])),
            enc(vec![7u8; 4]),
            // A map claiming 2^64 - 1 entries, then a key claiming 2^64 - 1 bytes.
            vec![
                0xbb, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
                0xff,
            ],
            vec![
                // Indefinite map {"a": 1, "b": 2}.
                ("valid-indefinite", vec![0xbf, 0x61, b'a', 0x01, 0x61, b'b', 0x02, 0xff]),
                // A negative value.
                ("bad-negative-value", vec![0xa1, 0x61, b'a', 0x20]),
                // A value above u64 (bignum 2^64).
                ("bad-bignum-value", vec![0xa1, 0x61, b'a', 0xc2, 0x49, 1, 0, 0, 0, 0, 0, 0, 0, 0]),
                // Duplicate keys (serde's HashMap keeps the last one).
                ("dup-keys", vec![0xa2, 0x61, b'a', 0x01, 0x61, b'a', 0x02]),
            ],
        ),
        other => panic!("unknown target {other}"),
    };

    let mut out: Vec<(String, Vec<u8>)> = valid.into_iter().map(|(n, b)| (format!("valid-{n}"), b)).collect();
    let (header, payload) = split(&base);
    let (h, p, len) = (header.len(), payload.len(), base.len());
    let mut bad = |name: &str, bytes: Vec<u8>| out.push((format!("bad-{name}"), bytes));

    bad("empty", Vec::new());
    bad("truncated-magic", base[..5].to_vec());
    bad("truncated-name", base[..h - 3].to_vec());
    bad("truncated-payload", base[..h + p / 2].to_vec());
    bad("truncated-trailer", base[..len - 1].to_vec());
    bad("no-trailer", base[..len - 12].to_vec());
    bad("flip-magic", flip(&base, 0, 0x20));
    bad("flip-name", flip(&base, 14, 0x01));
    bad("flip-payload-first", flip(&base, h, 0x04));
    bad("flip-payload-last", flip(&base, h + p - 1, 0x01));
    bad("flip-trailer-len", flip(&base, len - 12, 0x01));
    bad("flip-trailer-crc", flip(&base, len - 1, 0x80));
    bad("wrong-magic", [b"MANTASPX".as_slice(), &base[8..]].concat());
    bad("wrong-version-0", [&base[..8], &[0, 0], &base[10..]].concat());
    bad("wrong-version-2", [&base[..8], &[2, 0], &base[10..]].concat());
    bad("wrong-type-name", foreign);
    bad("name-len-too-long", [&base[..10], &[0xff, 0xff], &base[12..]].concat());
    bad("name-len-1024", [&base[..10], &1024u16.to_le_bytes(), &base[12..]].concat());
    let mut trailer_huge = base.clone();
    trailer_huge[len - 12..len - 4].copy_from_slice(&u64::MAX.to_le_bytes());
    bad("trailer-len-huge", trailer_huge);
    bad("cbor-len-huge", with_payload(header, &huge));
    bad("trailing-bytes", with_payload(header, &[payload, &[0x00]].concat()));
    bad("payload-empty", with_payload(header, &[]));
    for (name, payload) in odd {
        out.push((name.to_string(), with_payload(header, &payload)));
    }
    out
}
