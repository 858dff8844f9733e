//! manta-p2p stream framing (`read_frames`: the frame reader every server
//! and client loop uses, reading 4-byte length prefixes and bodies in
//! steps of at most `STEP_BYTES`): any bytes must give frames and how the
//! input ended, never a panic; no body exceeds the cap, and the bodies
//! never hold more bytes than the input had (memory follows the bytes that
//! arrived, not the prefixes).
//! The same call runs over `fuzz/corpus/p2p_frame/` in
//! `p2p/tests/fuzz_corpus.rs`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use manta_p2p::fuzzing::codec::read_frames;

/// The body cap the target reads with.
const MAX: usize = 1 << 20;

fuzz_target!(|data: &[u8]| {
    let (bodies, _end) = read_frames(data, MAX);
    let total: usize = bodies.iter().map(|b| b.len() + 4).sum();
    assert!(total <= data.len(), "bodies longer than the input");
    assert!(bodies.iter().all(|b| b.len() <= MAX), "a body over the cap");
});
