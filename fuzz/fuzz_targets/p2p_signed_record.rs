//! manta-p2p signed named-actor records (`decode_signed_record`: a DHT
//! record's value, an actor record with its host's key and signature;
//! capped in size and depth, no trailing bytes): any bytes must give a
//! record or a `WireError`, never a panic; a decoded one must re-encode to
//! the same record, and verifying it under a key (`verify_record`) must not
//! panic. The same call runs over `fuzz/corpus/p2p_signed_record/` in
//! `p2p/tests/fuzz_corpus.rs`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use manta_p2p::fuzzing::plain::actor_record_key;
use manta_p2p::fuzzing::signed::{decode_signed_record, encode_signed_record, verify_record};

fuzz_target!(|data: &[u8]| {
    if let Ok((signed, rec)) = decode_signed_record(data) {
        let again = decode_signed_record(&encode_signed_record(&signed));
        assert_eq!(again.as_ref(), Ok(&(signed, rec)), "signed record round trip");
        let _ = verify_record(&actor_record_key("counter"), data);
    }
});
