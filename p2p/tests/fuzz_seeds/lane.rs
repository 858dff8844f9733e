//! The call and seeds of the `p2p_lane` fuzz target (the message lane's
//! wire format, `wire::lane`), run with the others by `fuzz_corpus.rs`;
//! the call is the same as `fuzz/fuzz_targets/p2p_lane.rs`'s.
//!
//! Every input goes through four decoders: a lane message (a frame's
//! plaintext), a whole sequence of sealed frames under [`LANE_KEY`] as a
//! dialler seals them, the negotiation's ask and its answer. `valid-*`
//! means one of them accepts it, `bad-*` that all refuse it.

use crate::{Named, Target};
use manta_p2p::fuzzing::lane::{
    decode_answer, decode_ask, decode_msg, encode_answer, encode_ask, encode_msg, lane_keys, open_frames, seal_frames,
    LaneAnswer, LaneAsk, LaneMsg, HEADER_BYTES, MAX_FRAME_BYTES, MAX_LANE_IDS, TAG_BYTES,
};
use manta_p2p::fuzzing::mail::{encode_ack, encode_batch, Ack, Batch, Mail};

/// `fuzz/fuzz_targets/p2p_lane.rs`'s ticket key: the frame seeds are sealed
/// under it.
pub const LANE_KEY: [u8; 32] = [0x24; 32];

/// The target: name and call.
pub const TARGETS: [(&str, Target); 1] = [(
    "p2p_lane",
    Target::Wire(|b| {
        let msg = decode_msg(b).map(|m| {
            assert_eq!(decode_msg(&encode_msg(&m)).as_ref(), Ok(&m), "message round trip");
        });
        let frames = open_frames(b, &LANE_KEY).map(|ms| {
            assert_eq!(open_frames(&seal_frames(&ms, &LANE_KEY), &LANE_KEY).as_ref(), Ok(&ms), "frames round trip");
        });
        let ask = decode_ask(b).map(|a| assert_eq!(decode_ask(&encode_ask(&a)), Ok(a), "ask round trip"));
        let answer = decode_answer(b).map(|a| {
            assert_eq!(decode_answer(&encode_answer(&a)).as_ref(), Ok(&a), "answer round trip");
        });
        msg.or(frames).or(ask).or(answer)
    }),
)];

fn ids(n: usize) -> Vec<serde_bytes::ByteArray<16>> {
    (0..n).map(|i| serde_bytes::ByteArray::new([i as u8; 16])).collect()
}

/// The seeds (names without their `valid-` / `bad-` prefix).
pub fn seeds() -> (Named, Named) {
    let get = LaneMsg::Get { tag: 7, ids: ids(2) };
    let got = LaneMsg::Got { tag: 7, items: vec![Some(serde_bytes::ByteBuf::from(vec![0x43, 1, 2, 3])), None] };
    let mail = LaneMsg::Mail(serde_bytes::ByteBuf::from(encode_batch(&Batch(vec![
        Mail::Seq(42),
        Mail::Release(vec![serde_bytes::ByteArray::new([3; 16])]),
    ]))));
    let ack = LaneMsg::Ack(serde_bytes::ByteBuf::from(encode_ack(&Ack { seq: 42, ..Ack::default() })));
    let frames = seal_frames(&[get.clone(), got.clone()], &LANE_KEY);
    let first = HEADER_BYTES + encode_msg(&get).len() + TAG_BYTES;
    let flip = |at: usize| {
        let mut b = frames.clone();
        b[at] ^= 1;
        b
    };
    // The listener's frames (the other direction's key): never accepted as
    // the dialler's.
    let reflected = {
        let (mut sealer, _) = lane_keys(&LANE_KEY, false);
        let mut out = Vec::new();
        sealer.seal(&encode_msg(&get), &mut out).expect("seals");
        out
    };
    let too_many = encode_msg(&LaneMsg::Get { tag: 1, ids: ids(MAX_LANE_IDS + 1) });
    let ticket = LaneAnswer::Ticket { port: 4001, token: [1; 32], key: [2; 32] };
    (
        vec![
            ("msg-get", encode_msg(&get)),
            ("msg-got", encode_msg(&got)),
            ("msg-get-max-ids", encode_msg(&LaneMsg::Get { tag: u32::MAX, ids: ids(MAX_LANE_IDS) })),
            ("frames-get-got", frames.clone()),
            ("msg-mail", encode_msg(&mail)),
            ("msg-ack", encode_msg(&ack)),
            ("frames-mail-ack", seal_frames(&[mail.clone(), ack.clone()], &LANE_KEY)),
            ("frames-none", vec![]),
            ("ask-open", encode_ask(&LaneAsk::Open)),
            ("answer-ticket", encode_answer(&ticket)),
            ("answer-busy", encode_answer(&LaneAnswer::Busy)),
            ("answer-off", encode_answer(&LaneAnswer::Off)),
        ],
        vec![
            ("garbage", b"\xde\xad\xbe\xef not a frame".to_vec()),
            ("msg-get-too-many-ids", too_many),
            ("frame-flipped-length", flip(3)),
            ("frame-flipped-ciphertext", flip(HEADER_BYTES + 2)),
            ("frame-flipped-tag", flip(first - 1)),
            ("frame-truncated", frames[..frames.len() - 1].to_vec()),
            ("frame-replayed", [&frames[..first], &frames[..first]].concat()),
            ("frames-swapped", [&frames[first..], &frames[..first]].concat()),
            ("frame-reflected", reflected),
            ("frame-length-over-cap", [&((MAX_FRAME_BYTES + 1) as u32).to_be_bytes()[..], &[0; 40]].concat()),
            ("frame-length-4g", vec![0xff, 0xff, 0xff, 0xff, 1, 2, 3]),
            ("answer-port-zero", encode_answer(&LaneAnswer::Ticket { port: 0, token: [1; 32], key: [2; 32] })),
        ],
    )
}
