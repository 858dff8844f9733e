//! manta-p2p chunk replies read without copying (`split_chunk`: parses a
//! reply's skeleton, depth-capped, and finds where its data starts): any
//! bytes must give a split or none, never a panic; a split must be exactly
//! a canonical chunk reply (its prefix rebuilt from the split's fields,
//! followed by the data) that the normal decoder reads the same way.
//! The same call runs over `fuzz/corpus/p2p_chunk/` in
//! `p2p/tests/fuzz_corpus.rs`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use manta_p2p::fuzzing::chunk::{chunk_prefix, split_chunk};
use manta_p2p::fuzzing::wire::{decode_response, Response};

fuzz_target!(|data: &[u8]| {
    if let Some((total, offset, start)) = split_chunk(data) {
        let data_len = data.len() - start;
        assert_eq!(&chunk_prefix(total, offset, data_len)[..], &data[..start], "canonical prefix");
        match decode_response(data) {
            Ok(Response::Chunk { total: t, offset: o, data: d }) => {
                assert_eq!((t, o, &d[..]), (total, offset, &data[start..]), "same as the decoder");
            }
            other => panic!("split, but the decoder says {other:?}"),
        }
    }
});
