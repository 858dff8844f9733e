//! manta-p2p mail decoders for a `Batch` (`decode_batch`) and an `Ack`
//! (`decode_ack`), both run on every input: any bytes must give a value or a
//! `WireError` from each, never a panic, and a decoded value must re-encode
//! to bytes that decode to the same value.
//! The same call runs over `fuzz/corpus/p2p_mail/` in
//! `p2p/tests/fuzz_corpus.rs`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use manta_p2p::fuzzing::mail::{decode_ack, decode_batch, encode_ack, encode_batch};

fuzz_target!(|data: &[u8]| {
    if let Ok(value) = decode_batch(data) {
        let again = decode_batch(&encode_batch(&value));
        assert_eq!(again.as_ref(), Ok(&value), "batch round trip");
    }
    if let Ok(value) = decode_ack(data) {
        let again = decode_ack(&encode_ack(&value));
        assert_eq!(again.as_ref(), Ok(&value), "ack round trip");
    }
});
