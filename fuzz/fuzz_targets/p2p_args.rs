//! manta-p2p task and call arguments (`decode_args`: plain CBOR capped in
//! size and nesting depth, no trailing bytes), decoded as any CBOR value
//! (a recursive type: the depth cap must hold before the stack gives out)
//! and as a typed tuple: any bytes must give a value or a `WireError` from
//! each, never a panic (nor a stack overflow); a decoded tuple must
//! re-encode to bytes that decode to the same tuple, and a decoded value
//! must re-encode to bytes that decode again.
//! The same call runs over `fuzz/corpus/p2p_args/` in
//! `p2p/tests/fuzz_corpus.rs`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use manta_p2p::fuzzing::plain::{decode_args, encode_args, Value};

fuzz_target!(|data: &[u8]| {
    if let Ok(v) = decode_args::<Value>(data) {
        assert!(decode_args::<Value>(&encode_args(&v)).is_ok(), "value round trip");
    }
    if let Ok(t) = decode_args::<(u64, String, Vec<u8>)>(data) {
        assert_eq!(decode_args(&encode_args(&t)).as_ref(), Ok(&t), "tuple round trip");
    }
});
