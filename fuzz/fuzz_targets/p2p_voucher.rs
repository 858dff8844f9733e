//! manta-p2p vouchers (`decode_voucher`: an owner's signed statement of an
//! object's content, from a holder that is not the owner; capped in size
//! and depth, no trailing bytes, key and signature within their caps): any
//! bytes must give a voucher or a `WireError`, never a panic; a decoded
//! voucher must re-encode to the same voucher, and checking its signature
//! (against its own key's peer, and against another id) must not panic.
//! The same call runs over `fuzz/corpus/p2p_voucher/` in
//! `p2p/tests/fuzz_corpus.rs`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use manta_p2p::fuzzing::signed::{decode_voucher, encode_voucher, signer, verify_voucher};

fuzz_target!(|data: &[u8]| {
    if let Ok(v) = decode_voucher(data) {
        assert_eq!(decode_voucher(&encode_voucher(&v)).as_ref(), Ok(&v), "voucher round trip");
        if let Some(owner) = signer(&v.key) {
            let _ = verify_voucher(data, &v.id, &owner);
            let other = v.id.map(|b| b ^ 1);
            assert!(verify_voucher(data, &other, &owner).is_err(), "a voucher for another id");
        }
    }
});
