//! Spill-file decoder, payload type `HashMap<String, u64>` (a CBOR map):
//! any bytes must give a value or a `SpillError`, never a panic.
//! The same call runs over `fuzz/corpus/spill_decode_map/` in
//! `tests/fuzz_corpus.rs`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::collections::HashMap;

fuzz_target!(|data: &[u8]| {
    let _ = manta::fuzzing::decode_spill::<HashMap<String, u64>>(data)
        .expect("HashMap<String, u64> is a registered spillable type");
});
