//! Spill-file decoder, payload type `Vec<u8>` (a CBOR byte string): any
//! bytes must give a value or a `SpillError`, never a panic.
//! The same call runs over `fuzz/corpus/spill_decode_bytes/` in
//! `tests/fuzz_corpus.rs`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = manta::fuzzing::decode_spill::<Vec<u8>>(data).expect("Vec<u8> is a registered spillable type");
});
