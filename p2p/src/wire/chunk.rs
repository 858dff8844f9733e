//! Chunk replies without copying their data.
//!
//! A `Response::Chunk`'s data is the last item of its encoding (the
//! envelope's `body` comes last, and `data` is the chunk's last field), so
//! the encoding is a short prefix followed by the raw bytes. The server
//! writes [`chunk_prefix`] and then the data slice, instead of building the
//! whole encoding in a second buffer; the client finds where the data starts
//! with [`split_chunk`] and hands the frame on without copying it out.
//!
//! Invariant: `chunk_prefix(t, o, d.len()) ++ d` is byte for byte
//! `wire::encode_response(&Response::Chunk { total: t, offset: o, data: d })`
//! (tested), and `split_chunk` accepts only such canonical encodings that
//! pass the same checks as `wire::decode_response` (`offset + len <= total`);
//! anything else returns `None` and is decoded the normal way.

use crate::wire::{encode_response, Response, MAX_RESPONSE_BYTES, VERSION};
use serde::de::IgnoredAny;
use serde::Deserialize;

/// CBOR header of a byte string of `len` bytes (canonical, shortest form).
fn bytes_header(len: usize) -> Vec<u8> {
    let n = len as u64;
    match n {
        0..=23 => vec![0x40 | n as u8],
        24..=0xff => vec![0x58, n as u8],
        0x100..=0xffff => {
            let mut v = vec![0x59];
            v.extend_from_slice(&(n as u16).to_be_bytes());
            v
        }
        0x1_0000..=0xffff_ffff => {
            let mut v = vec![0x5a];
            v.extend_from_slice(&(n as u32).to_be_bytes());
            v
        }
        _ => {
            let mut v = vec![0x5b];
            v.extend_from_slice(&n.to_be_bytes());
            v
        }
    }
}

/// Everything of a chunk reply's encoding before its data bytes.
pub(crate) fn chunk_prefix(total: u64, offset: u64, data_len: usize) -> Vec<u8> {
    let mut p = encode_response(&Response::Chunk { total, offset, data: Vec::new() });
    // An empty byte string (0x40) ends the encoding: swap in the real header.
    if p.last() == Some(&0x40) {
        p.pop();
    }
    p.extend(bytes_header(data_len));
    p
}

#[derive(Deserialize)]
struct Skeleton {
    v: u16,
    body: SkeletonBody,
}

#[derive(Deserialize)]
enum SkeletonBody {
    Chunk {
        total: u64,
        offset: u64,
        #[allow(dead_code)]
        data: IgnoredAny,
    },
}

/// If `body` is a canonical chunk reply: its total, offset, and the index
/// where its data starts (the data runs to the end of `body`).
pub(crate) fn split_chunk(body: &[u8]) -> Option<(u64, u64, usize)> {
    if body.len() > MAX_RESPONSE_BYTES {
        return None;
    }
    let s: Skeleton = ciborium::from_reader(body).ok()?;
    if s.v != VERSION {
        return None;
    }
    let SkeletonBody::Chunk { total, offset, .. } = s.body;
    let base = chunk_prefix(total, offset, 0).len() - 1; // the prefix without its data header
    for header in [1usize, 2, 3, 5, 9] {
        let Some(len) = body.len().checked_sub(base + header) else { continue };
        let prefix = chunk_prefix(total, offset, len);
        if prefix.len() == base + header && body.starts_with(&prefix) {
            let fits = offset.checked_add(len as u64).is_some_and(|end| end <= total);
            return fits.then_some((total, offset, prefix.len()));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_plus_data_is_the_encoding_and_splits_back() {
        for len in [0usize, 1, 23, 24, 255, 256, 65_535, 65_536, 300_000] {
            for (total, offset) in [(len as u64, 0u64), (1 << 40, 12_345), (u64::MAX, 7)] {
                let data: Vec<u8> = (0..len).map(|i| i as u8).collect();
                let whole = encode_response(&Response::Chunk { total, offset, data: data.clone() });
                let mut parts = chunk_prefix(total, offset, len);
                parts.extend_from_slice(&data);
                assert_eq!(parts, whole, "len {len}");
                let (t, o, start) = split_chunk(&whole).expect("splits");
                assert_eq!((t, o, &whole[start..]), (total, offset, &data[..]));
            }
        }
    }

    #[test]
    fn anything_else_is_left_to_the_normal_decoder() {
        assert_eq!(split_chunk(&encode_response(&Response::NotFound)), None);
        assert_eq!(split_chunk(b"\xff\x00"), None);
        // offset + len > total
        let bad = encode_response(&Response::Chunk { total: 2, offset: 1, data: vec![0; 5] });
        assert_eq!(split_chunk(&bad), None);
        let good = encode_response(&Response::Chunk { total: 10, offset: 0, data: vec![1; 10] });
        for cut in 0..good.len() {
            assert!(split_chunk(&good[..cut]).is_none_or(|(_, _, s)| s <= cut));
        }
    }
}
