//! The calls and seeds of the fuzz targets for manta-p2p's framing and its
//! plain (un-enveloped) CBOR decoders: `p2p_frame`, `p2p_hint`,
//! `p2p_chunk`, `p2p_actor_record`, `p2p_args`, `p2p_timeline`,
//! `p2p_voucher`, `p2p_signed_record` (see `fuzz_corpus.rs`, which
//! runs them with the others; each call is the same as its target's in
//! `fuzz/fuzz_targets/`). Naming as in `fuzz_corpus.rs`: `valid-*` must be
//! accepted, `bad-*` refused.

use super::{prefixed, Named, Target};

pub mod lane;
use libp2p::identity::Keypair;
use manta_p2p::fuzzing::chunk::{chunk_prefix, split_chunk};
use manta_p2p::fuzzing::codec::read_frames;
use manta_p2p::fuzzing::hint::{self, MAX_HINT_ADDRS};
use manta_p2p::fuzzing::plain::{
    actor_record_key, decode_actor_record, decode_args, encode_actor_record, encode_args, ActorRecord, Value,
    MAX_ARGS_DEPTH,
};
use manta_p2p::fuzzing::signed::{
    decode_signed_record, decode_voucher, digest_of, encode_signed_record, encode_voucher, sign_record, sign_voucher,
    signer, verify_record, verify_voucher, SignedRecord, Voucher, MAX_KEY_BYTES, MAX_SIG_BYTES, MAX_VOUCHER_BYTES,
};
use manta_p2p::fuzzing::timeline::{decode_page, encode_page, Kind, Page, WireEvent, MAX_INPUTS, MAX_TEXT_BYTES};
use manta_p2p::fuzzing::wire::{decode_response, encode_response, Response, WireError, MAX_DEPTH};
use manta_p2p::{Multiaddr, PeerId};

/// `fuzz/fuzz_targets/p2p_frame.rs`'s body cap.
const FRAME_MAX: usize = 1 << 20;

fn malformed(what: &str) -> WireError {
    WireError::Malformed(what.to_string())
}

/// The new targets: name and call.
pub const TARGETS: [(&str, Target); 8] = [
    // Ok if the input is whole frames; the bodies never outgrow the input.
    (
        "p2p_frame",
        Target::Wire(|b| {
            let (bodies, end) = read_frames(b, FRAME_MAX);
            let total: usize = bodies.iter().map(|x| x.len() + 4).sum();
            assert!(total <= b.len(), "bodies longer than the input");
            assert!(bodies.iter().all(|x| x.len() <= FRAME_MAX), "a body over the cap");
            end.map_or(Ok(()), Err)
        }),
    ),
    (
        "p2p_hint",
        Target::Wire(|b| {
            let (peer, addrs) = hint::decode(b).ok_or_else(|| malformed("no hint"))?;
            assert!(addrs.len() <= MAX_HINT_ADDRS, "too many addresses");
            assert_eq!(hint::decode(&hint::encode(&peer, &addrs)), Some((peer, addrs)), "hint round trip");
            Ok(())
        }),
    ),
    (
        "p2p_chunk",
        Target::Wire(|b| {
            let (total, offset, start) = split_chunk(b).ok_or_else(|| malformed("not a canonical chunk"))?;
            assert_eq!(&chunk_prefix(total, offset, b.len() - start)[..], &b[..start], "canonical prefix");
            match decode_response(b) {
                Ok(Response::Chunk { total: t, offset: o, data }) => {
                    assert_eq!((t, o, &data[..]), (total, offset, &b[start..]), "same as the decoder")
                }
                other => panic!("split, but the decoder says {other:?}"),
            }
            Ok(())
        }),
    ),
    (
        "p2p_actor_record",
        Target::Wire(|b| {
            let rec = decode_actor_record(b)?;
            assert_eq!(decode_actor_record(&encode_actor_record(&rec)).as_ref(), Ok(&rec), "record round trip");
            Ok(())
        }),
    ),
    // Both decodings on every input: `Ok` if either accepts it.
    (
        "p2p_args",
        Target::Wire(|b| {
            let value = decode_args::<Value>(b).map(|v| {
                assert!(decode_args::<Value>(&encode_args(&v)).is_ok(), "value round trip");
            });
            let tuple = decode_args::<(u64, String, Vec<u8>)>(b).map(|t| {
                assert_eq!(decode_args(&encode_args(&t)).as_ref(), Ok(&t), "tuple round trip");
            });
            value.or(tuple)
        }),
    ),
    (
        "p2p_timeline",
        Target::Wire(|b| {
            let page = decode_page(b)?;
            assert_eq!(decode_page(&encode_page(&page)).as_ref(), Ok(&page), "page round trip");
            Ok(())
        }),
    ),
    (
        "p2p_voucher",
        Target::Wire(|b| {
            let v = decode_voucher(b)?;
            assert_eq!(decode_voucher(&encode_voucher(&v)).as_ref(), Ok(&v), "voucher round trip");
            if let Some(owner) = signer(&v.key) {
                let _ = verify_voucher(b, &v.id, &owner);
                let other = v.id.map(|x| x ^ 1);
                assert!(verify_voucher(b, &other, &owner).is_err(), "a voucher for another id");
            }
            Ok(())
        }),
    ),
    (
        "p2p_signed_record",
        Target::Wire(|b| {
            let (signed, rec) = decode_signed_record(b)?;
            let again = decode_signed_record(&encode_signed_record(&signed));
            assert_eq!(again.as_ref(), Ok(&(signed, rec)), "signed record round trip");
            let _ = verify_record(&actor_record_key("counter"), b);
            Ok(())
        }),
    ),
];

/// A key that is the same in every run (so the seeds are too: Ed25519
/// signatures are deterministic).
fn fixed_key(seed: u8) -> Keypair {
    Keypair::ed25519_from_bytes([seed; 32]).expect("a valid Ed25519 secret")
}

/// A timeline event on the wire, for the `p2p_timeline` seeds.
fn wire_event(kind: Kind, name: &str, inputs: usize) -> WireEvent {
    WireEvent {
        kind,
        id: serde_bytes::ByteArray::new([9; 16]),
        name: name.into(),
        actor: String::new(),
        thread: 3,
        times: [10, 20, 30],
        outcome: 0,
        cpus: 1.0,
        attempts: 1,
        bytes: 4096,
        inputs: vec![serde_bytes::ByteArray::new([8; 16]); inputs],
    }
}

/// A peer id that is the same in every run (an identity multihash of 32
/// bytes: the form Ed25519 peer ids take).
fn fixed_peer() -> PeerId {
    let bytes = [&[0x00, 0x24, 0x08, 0x01, 0x12, 0x20][..], &[0x5a; 32]].concat();
    PeerId::from_bytes(&bytes).expect("a valid peer id")
}

fn addr(s: &str) -> Multiaddr {
    s.parse().expect("a valid multiaddr")
}

/// `n` nested one-element arrays around `0`.
fn nested(n: usize) -> Vec<u8> {
    [vec![0x81; n], vec![0x00]].concat()
}

/// The seeds of `target`, if it is one of these.
pub fn seeds(target: &str) -> Option<Vec<(String, Vec<u8>)>> {
    let (valid, bad): (Named, Named) = match target {
        "p2p_frame" => {
            let frame = |body: &[u8]| [&(body.len() as u32).to_be_bytes()[..], body].concat();
            (
                vec![
                    ("nothing", vec![]),
                    ("one-empty", frame(b"")),
                    ("one", frame(b"hello")),
                    ("three", [frame(b"a"), frame(&[7; 300]), frame(b"")].concat()),
                    ("two-kib", frame(&[1; 2048])),
                ],
                vec![
                    ("short-prefix", vec![0, 0, 1]),
                    ("truncated-body", frame(b"hello")[..7].to_vec()),
                    ("second-truncated", [frame(b"ok"), vec![0, 0, 0, 9, 1]].concat()),
                    // Prefixes that announce far more than follows: the
                    // reader must not allocate what they claim.
                    ("prefix-1mib-then-little", [&(1u32 << 20).to_be_bytes()[..], &[3; 100]].concat()),
                    ("prefix-over-cap", [&((1u32 << 20) + 1).to_be_bytes()[..], &[3; 100]].concat()),
                    ("prefix-4g", vec![0xff, 0xff, 0xff, 0xff, 1, 2, 3]),
                ],
            )
        }
        "p2p_hint" => {
            let peer = fixed_peer();
            let base = hint::encode(&peer, &[addr("/ip4/127.0.0.1/tcp/4001")]);
            let many: Vec<Multiaddr> =
                (0..MAX_HINT_ADDRS as u16).map(|i| addr(&format!("/ip4/10.0.0.1/tcp/{i}"))).collect();
            // 17 addresses, past the cap (the encoder drops extras: patch
            // the array header and append one more address).
            let full = hint::encode(&peer, &many);
            let at = full.windows(2).position(|w| w == [0x90, 0x48]).expect("the addresses array");
            let one_more = [&[0x48][..], &addr("/ip4/10.0.0.2/tcp/1").to_vec()].concat();
            let over = [&full[..at], &[0x91], &full[at + 1..], &one_more].concat();
            (
                vec![
                    ("one-addr", base.clone()),
                    ("no-addrs", hint::encode(&peer, &[])),
                    ("max-addrs", full.clone()),
                    ("ip6-and-dns", hint::encode(&peer, &[addr("/ip6/::1/tcp/1"), addr("/dns4/example.com/tcp/2")])),
                ],
                vec![
                    ("empty", vec![]),
                    ("garbage", b"\xde\xad\xbe\xef".to_vec()),
                    ("truncated", base[..base.len() - 1].to_vec()),
                    ("trailing-byte", [&base[..], &[0]].concat()),
                    ("addrs-17", over),
                    ("addrs-4g-header", [&full[..at], &[0x9a, 0xff, 0xff, 0xff, 0xff], &full[at + 1..]].concat()),
                    // Multihash code 0x33: neither identity nor SHA-256.
                    ("peer-not-a-peer-id", {
                        let h = hint::encode(&peer, &[]);
                        let at = h.windows(3).position(|w| w == [0x00, 0x24, 0x08]).expect("the peer id");
                        [&h[..at], &[0x33], &h[at + 1..]].concat()
                    }),
                    ("nested-deep", [&base[..base.len() - 1], &nested(200)[..]].concat()),
                ],
            )
        }
        "p2p_chunk" => {
            let chunk =
                |total, offset, data: &[u8]| encode_response(&Response::Chunk { total, offset, data: data.to_vec() });
            let base = chunk(100, 10, &[1, 2, 3]);
            (
                vec![
                    ("small", base.clone()),
                    ("empty", chunk(0, 0, &[])),
                    ("24-bytes", chunk(24, 0, &[9; 24])),
                    ("300-bytes", chunk(1 << 40, 12_345, &[8; 300])),
                ],
                vec![
                    ("not-a-chunk", encode_response(&Response::NotFound)),
                    ("past-total", chunk(2, 1, &[0; 5])),
                    ("truncated", base[..base.len() - 1].to_vec()),
                    ("garbage", b"\xff\x00".to_vec()),
                    ("non-canonical-length", {
                        // The data's length in a 2-byte header where 1 byte fits.
                        let at = base.len() - 4;
                        [&base[..at], &[0x59, 0x00, 0x03], &base[at + 1..]].concat()
                    }),
                    ("nested-deep", [&base[..9], &nested(MAX_DEPTH * 4)[..]].concat()),
                ],
            )
        }
        "p2p_actor_record" => {
            let rec = |class: &str, host: Vec<u8>| ActorRecord { actor: [7; 16], class: class.into(), host };
            let hint = hint::encode(&fixed_peer(), &[addr("/ip4/127.0.0.1/tcp/4001")]);
            let base = encode_actor_record(&rec("Counter", hint.clone()));
            (
                vec![
                    ("counter", base.clone()),
                    ("empty-host", encode_actor_record(&rec("X", vec![]))),
                    ("long-class", encode_actor_record(&rec(&"c".repeat(256), hint))),
                ],
                vec![
                    ("empty", vec![]),
                    ("truncated", base[..base.len() - 1].to_vec()),
                    ("trailing-byte", [&base[..], &[0]].concat()),
                    ("class-257", encode_actor_record(&rec(&"c".repeat(257), vec![]))),
                    ("host-4g-header", {
                        let at = base.windows(5).position(|w| w == b"dhost").expect("host key") + 5;
                        [&base[..at], &[0x5a, 0xff, 0xff, 0xff, 0xff]].concat()
                    }),
                    ("nested-deep", {
                        let at = base.windows(6).position(|w| w == b"eclass").expect("class key") + 6;
                        [&base[..at], &nested(200)[..]].concat()
                    }),
                    ("key-as-value", actor_record_key("counter")),
                ],
            )
        }
        "p2p_args" => (
            vec![
                ("tuple", encode_args(&(42u64, "hello".to_string(), vec![1u8, 2, 3]))),
                ("map", encode_args(&std::collections::BTreeMap::from([("k", vec![1u32, 2]), ("l", vec![])]))),
                ("nested-at-cap", nested(MAX_ARGS_DEPTH - 1)),
                ("float-and-null", encode_args(&(1.5f64, (), Some(3i8)))),
            ],
            vec![
                ("empty", vec![]),
                ("nested-over-cap", nested(MAX_ARGS_DEPTH + 1)),
                ("nested-100k", nested(100_000)[..4096].to_vec()),
                ("trailing-byte", [encode_args(&(1u64, "a", vec![0u8])), vec![0]].concat()),
                ("bytes-4g-header", vec![0x5a, 0xff, 0xff, 0xff, 0xff, 1]),
                ("array-4g-header", vec![0x9a, 0xff, 0xff, 0xff, 0xff, 1]),
                ("break-alone", vec![0xff]),
            ],
        ),
        "p2p_timeline" => {
            let page = |events: Vec<WireEvent>| Page { clock: 99, total: 5, threads: vec![(3, "w".into())], events };
            let task = wire_event(Kind::Task, "square", 2);
            let base = encode_page(&page(vec![task.clone()]));
            (
                vec![
                    ("empty", encode_page(&page(vec![]))),
                    ("task", base.clone()),
                    (
                        "kinds",
                        encode_page(&page(vec![
                            task.clone(),
                            WireEvent { actor: "Counter".into(), ..wire_event(Kind::Call, "add", 0) },
                            wire_event(Kind::Store(0), "", 0),
                            wire_event(Kind::Transfer { out: true, lane: 2 }, "12D3KooW", 0),
                            wire_event(Kind::Submit, "12D3KooW", 0),
                        ])),
                    ),
                    ("inputs-at-cap", encode_page(&page(vec![wire_event(Kind::Task, "t", MAX_INPUTS)]))),
                ],
                vec![
                    ("empty", vec![]),
                    ("truncated", base[..base.len() - 1].to_vec()),
                    ("trailing-byte", [&base[..], &[0]].concat()),
                    ("inputs-over-cap", encode_page(&page(vec![wire_event(Kind::Task, "t", MAX_INPUTS + 1)]))),
                    (
                        "name-over-cap",
                        encode_page(&page(vec![wire_event(Kind::Task, &"n".repeat(MAX_TEXT_BYTES + 1), 0)])),
                    ),
                    ("cpus-negative", encode_page(&page(vec![WireEvent { cpus: -1.0, ..task.clone() }]))),
                    ("events-4g-header", {
                        let at = base.windows(7).position(|w| w == b"fevents").expect("events key") + 7;
                        [&base[..at], &[0x9a, 0xff, 0xff, 0xff, 0xff]].concat()
                    }),
                    ("nested-deep", [&base[..base.len() - 1], &nested(200)[..]].concat()),
                ],
            )
        }
        "p2p_voucher" => {
            let key = fixed_key(7);
            let d = digest_of(b"the object's encoding");
            let signed = sign_voucher(&key, [3; 16], &d).expect("signs");
            let base = encode_voucher(&signed);
            let with = |f: &dyn Fn(&mut Voucher)| {
                let mut v = signed.clone();
                f(&mut v);
                encode_voucher(&v)
            };
            (
                vec![
                    ("signed", base.clone()),
                    ("empty-object", encode_voucher(&sign_voucher(&key, [0; 16], &digest_of(b"")).expect("signs"))),
                    // Decodes; refused only when checked (another signer).
                    ("signed-by-another", encode_voucher(&sign_voucher(&fixed_key(8), [3; 16], &d).expect("signs"))),
                    ("junk-key-and-sig", with(&|v| (v.key, v.sig) = (vec![1, 2, 3], vec![]))),
                    ("longest-key", with(&|v| v.key = vec![8; MAX_KEY_BYTES])),
                ],
                vec![
                    ("empty", vec![]),
                    ("truncated", base[..base.len() - 1].to_vec()),
                    ("trailing-byte", [&base[..], &[0]].concat()),
                    ("key-over-cap", with(&|v| v.key = vec![8; MAX_KEY_BYTES + 1])),
                    ("sig-over-cap", with(&|v| v.sig = vec![8; MAX_SIG_BYTES + 1])),
                    ("over-cap", vec![0x40; MAX_VOUCHER_BYTES + 1]),
                    ("id-15-bytes", {
                        let at = base.windows(3).position(|w| w == [b'i', b'd', 0x50]).expect("id") + 2;
                        [&base[..at], &[0x4f], &base[at + 2..]].concat()
                    }),
                    ("digest-4g-header", {
                        let at = base.windows(7).position(|w| w == b"fdigest").expect("digest key") + 7;
                        [&base[..at], &[0x5a, 0xff, 0xff, 0xff, 0xff]].concat()
                    }),
                    ("nested-deep", {
                        let at = base.windows(4).position(|w| w == b"clen").expect("len key") + 4;
                        [&base[..at], &nested(200)[..]].concat()
                    }),
                ],
            )
        }
        "p2p_signed_record" => {
            let key = fixed_key(7);
            let name = actor_record_key("counter");
            let host = |k: &Keypair| hint::encode(&k.public().to_peer_id(), &[addr("/ip4/127.0.0.1/tcp/4001")]);
            let rec =
                |host: Vec<u8>| encode_actor_record(&ActorRecord { actor: [7; 16], class: "Counter".into(), host });
            let base = sign_record(&key, &name, rec(host(&key))).expect("signs");
            let (signed, _) = decode_signed_record(&base).expect("decodes");
            let with = |f: &dyn Fn(&mut SignedRecord)| {
                let mut s = signed.clone();
                f(&mut s);
                encode_signed_record(&s)
            };
            (
                vec![
                    ("counter", base.clone()),
                    // Decode; refused only when verified.
                    (
                        "signed-for-another-name",
                        sign_record(&key, &actor_record_key("x"), rec(host(&key))).expect("signs"),
                    ),
                    ("naming-another-host", sign_record(&key, &name, rec(host(&fixed_key(9)))).expect("signs")),
                    ("junk-key-and-sig", with(&|s| (s.key, s.sig) = (vec![1], vec![2]))),
                ],
                vec![
                    ("empty", vec![]),
                    ("truncated", base[..base.len() - 1].to_vec()),
                    ("trailing-byte", [&base[..], &[0]].concat()),
                    ("unsigned-record", rec(host(&key))),
                    ("inner-not-a-record", with(&|s| s.record = vec![0xff])),
                    (
                        "inner-class-257",
                        with(&|s| {
                            s.record = encode_actor_record(&ActorRecord {
                                actor: [7; 16],
                                class: "c".repeat(257),
                                host: vec![],
                            })
                        }),
                    ),
                    ("key-over-cap", with(&|s| s.key = vec![8; MAX_KEY_BYTES + 1])),
                    // (Over the cap as a whole: more than a seed may be; the
                    // unit tests of `wire::signed` cover it.)
                    ("record-4g-header", {
                        let at = base.windows(7).position(|w| w == b"frecord").expect("record key") + 7;
                        [&base[..at], &[0x5a, 0xff, 0xff, 0xff, 0xff]].concat()
                    }),
                    ("nested-deep", {
                        let at = base.windows(4).position(|w| w == b"csig").expect("sig key") + 4;
                        [&base[..at], &nested(200)[..]].concat()
                    }),
                ],
            )
        }
        "p2p_lane" => lane::seeds(),
        _ => return None,
    };
    Some(prefixed(valid, bad))
}
