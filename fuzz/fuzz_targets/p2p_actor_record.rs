//! manta-p2p named-actor records (`decode_actor_record`: a DHT record's
//! value, capped in size and depth, no trailing bytes, a bounded class
//! name): any bytes must give a record or a `WireError`, never a panic, and
//! a decoded record must re-encode to bytes that decode to the same record.
//! The same call runs over `fuzz/corpus/p2p_actor_record/` in
//! `p2p/tests/fuzz_corpus.rs`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use manta_p2p::fuzzing::plain::{decode_actor_record, encode_actor_record};

fuzz_target!(|data: &[u8]| {
    if let Ok(rec) = decode_actor_record(data) {
        let again = decode_actor_record(&encode_actor_record(&rec));
        assert_eq!(again.as_ref(), Ok(&rec), "record round trip");
    }
});
