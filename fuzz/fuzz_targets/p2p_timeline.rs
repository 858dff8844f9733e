//! manta-p2p timeline pages (`decode_page`: the content of a
//! `Response::Timeline`, capped in size and depth, no trailing bytes, then
//! validated: events, threads, texts and inputs capped, finite CPUs): any
//! bytes must give a page or a `WireError`, never a panic, and a decoded
//! page must re-encode to bytes that decode to the same page. The same call
//! runs over `fuzz/corpus/p2p_timeline/` in `p2p/tests/fuzz_corpus.rs`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use manta_p2p::fuzzing::timeline::{decode_page, encode_page};

fuzz_target!(|data: &[u8]| {
    if let Ok(page) = decode_page(data) {
        let again = decode_page(&encode_page(&page));
        assert_eq!(again.as_ref(), Ok(&page), "page round trip");
    }
});
