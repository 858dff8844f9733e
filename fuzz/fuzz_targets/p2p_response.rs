//! manta-p2p wire decoder for a `Response` (`decode_response`): any bytes must give a
//! value or a `WireError`, never a panic, and a decoded value must
//! re-encode to bytes that decode to the same value.
//! The same call runs over `fuzz/corpus/p2p_response/` in
//! `p2p/tests/fuzz_corpus.rs`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use manta_p2p::fuzzing::wire::{decode_response, encode_response};

fuzz_target!(|data: &[u8]| {
    if let Ok(value) = decode_response(data) {
        let again = decode_response(&encode_response(&value));
        assert_eq!(again.as_ref(), Ok(&value), "response round trip");
    }
});
