//! Spill-file decoder, payload type `Vec<String>` (a CBOR array of text
//! strings): any bytes must give a value or a `SpillError`, never a panic.
//! The same call runs over `fuzz/corpus/spill_decode_strings/` in
//! `tests/fuzz_corpus.rs`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = manta::fuzzing::decode_spill::<Vec<String>>(data).expect("Vec<String> is a registered spillable type");
});
