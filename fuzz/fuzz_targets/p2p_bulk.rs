//! manta-p2p bulk lane: a client's [`Hello`] (`Hello::from_bytes` on the
//! first `HELLO_BYTES` bytes, when there are that many) and the sealed
//! record stream (`seal::open_all` on the whole input, under a fixed key),
//! both run on every input: any bytes must give a value or an error from
//! each, never a panic; a parsed hello must re-encode to the same bytes, and
//! an opened plaintext must seal again to a stream that opens to it.
//! The same call runs over `fuzz/corpus/p2p_bulk/` in
//! `p2p/tests/fuzz_corpus.rs`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use manta_p2p::fuzzing::seal::{self, Hello, Secret, HELLO_BYTES};

/// The fuzzing key: the seeds in `fuzz/corpus/p2p_bulk/` are sealed with the
/// same key in `p2p/tests/fuzz_corpus.rs`, so they get past authentication.
const KEY: Secret = [0x42; 32];

/// Most plaintext bytes `open_all` accepts.
const LIMIT: u64 = 4 << 20;

fuzz_target!(|data: &[u8]| {
    if let Some(first) = data.first_chunk::<HELLO_BYTES>() {
        if let Ok(hello) = Hello::from_bytes(first) {
            assert_eq!(&hello.to_bytes(), first, "hello round trip");
        }
    }
    if let Ok(plain) = seal::open_all(data, &KEY, LIMIT) {
        let again = seal::open_all(&seal::seal_all(&plain, &KEY), &KEY, LIMIT);
        assert_eq!(again.ok().as_ref(), Some(&plain), "seal round trip");
    }
});
