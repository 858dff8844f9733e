//! manta-p2p owner hints (`hint::decode`: the owner's peer id and
//! addresses a serialized ref carries, capped in size, depth and address
//! count): any bytes must give a hint or none, never a panic, and a decoded
//! hint must re-encode to bytes that decode to the same hint.
//! The same call runs over `fuzz/corpus/p2p_hint/` in
//! `p2p/tests/fuzz_corpus.rs`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use manta_p2p::fuzzing::hint::{decode, encode, MAX_HINT_ADDRS};

fuzz_target!(|data: &[u8]| {
    if let Some((peer, addrs)) = decode(data) {
        assert!(addrs.len() <= MAX_HINT_ADDRS, "too many addresses");
        assert_eq!(decode(&encode(&peer, &addrs)), Some((peer, addrs)), "hint round trip");
    }
});
