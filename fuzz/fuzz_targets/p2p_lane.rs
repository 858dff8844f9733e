//! manta-p2p message lane (`wire::lane`): every input goes through the
//! lane message decoder (a frame's plaintext), the frame opener (the whole
//! input as a dialler's sealed frames under a fixed ticket key), and the
//! negotiation's ask and answer decoders: any bytes must give a value or an
//! error from each, never a panic, and whatever decodes must re-encode to
//! something that decodes to the same value.
//! The same call runs over `fuzz/corpus/p2p_lane/` in
//! `p2p/tests/fuzz_corpus.rs` (`fuzz_seeds/lane.rs`).
#![no_main]

use libfuzzer_sys::fuzz_target;
use manta_p2p::fuzzing::lane::{
    decode_answer, decode_ask, decode_msg, encode_answer, encode_ask, encode_msg, open_frames, seal_frames,
};

/// The ticket key the seeds in `fuzz/corpus/p2p_lane/` are sealed under
/// (`p2p/tests/fuzz_seeds/lane.rs`), so they get past authentication.
const KEY: [u8; 32] = [0x24; 32];

fuzz_target!(|data: &[u8]| {
    if let Ok(m) = decode_msg(data) {
        assert_eq!(decode_msg(&encode_msg(&m)).as_ref(), Ok(&m), "message round trip");
    }
    if let Ok(ms) = open_frames(data, &KEY) {
        assert_eq!(open_frames(&seal_frames(&ms, &KEY), &KEY).as_ref(), Ok(&ms), "frames round trip");
    }
    if let Ok(a) = decode_ask(data) {
        assert_eq!(decode_ask(&encode_ask(&a)), Ok(a), "ask round trip");
    }
    if let Ok(a) = decode_answer(data) {
        assert_eq!(decode_answer(&encode_answer(&a)).as_ref(), Ok(&a), "answer round trip");
    }
});
