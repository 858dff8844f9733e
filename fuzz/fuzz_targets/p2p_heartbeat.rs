//! manta-p2p wire decoder for what the heartbeat topic carries
//! (`decode_beat`: a full `Heartbeat` or an alive beat): any bytes must
//! give a value or a `WireError`, never a panic, and a decoded value must
//! re-encode to bytes that decode to the same value.
//! The same call runs over `fuzz/corpus/p2p_heartbeat/` in
//! `p2p/tests/fuzz_corpus.rs`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use manta_p2p::fuzzing::wire::{decode_beat, encode_beat};

fuzz_target!(|data: &[u8]| {
    if let Ok(value) = decode_beat(data) {
        let again = decode_beat(&encode_beat(&value));
        assert_eq!(again.as_ref(), Ok(&value), "beat round trip");
    }
});
