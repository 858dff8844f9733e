//! Owner hints: how a serialized `ObjectRef` says where its object lives.
//!
//! A hint is the CBOR of the owner's peer id and listen addresses. It comes
//! from other processes, so decoding is defensive: a hint that does not
//! parse (or has too many addresses) is treated as no hint, and the object
//! is looked up in the DHT instead.

use libp2p::{Multiaddr, PeerId};
use serde::{Deserialize, Serialize};

/// Most addresses a hint carries (more are dropped when encoding and
/// refused when decoding).
pub(crate) const MAX_HINT_ADDRS: usize = 16;

#[derive(Serialize, Deserialize)]
struct HintWire {
    #[serde(with = "serde_bytes")]
    peer: Vec<u8>,
    addrs: Vec<serde_bytes::ByteBuf>,
}

/// Encodes a hint.
pub(crate) fn encode(peer: &PeerId, addrs: &[Multiaddr]) -> Vec<u8> {
    let w = HintWire {
        peer: peer.to_bytes(),
        addrs: addrs.iter().take(MAX_HINT_ADDRS).map(|a| serde_bytes::ByteBuf::from(a.to_vec())).collect(),
    };
    let mut out = Vec::new();
    // Writing to a Vec cannot fail.
    let _ = ciborium::into_writer(&w, &mut out);
    out
}

/// Decodes a hint; `None` if empty or malformed.
pub(crate) fn decode(bytes: &[u8]) -> Option<(PeerId, Vec<Multiaddr>)> {
    if bytes.is_empty() || bytes.len() > manta::backend::MAX_HINT_BYTES {
        return None;
    }
    let w: HintWire = ciborium::from_reader(bytes).ok()?;
    if w.addrs.len() > MAX_HINT_ADDRS {
        return None;
    }
    let peer = PeerId::from_bytes(&w.peer).ok()?;
    let addrs = w.addrs.into_iter().filter_map(|a| Multiaddr::try_from(a.into_vec()).ok()).collect();
    Some((peer, addrs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_garbage() {
        let peer = PeerId::random();
        let addr: Multiaddr = "/ip4/127.0.0.1/tcp/4001".parse().unwrap();
        let h = encode(&peer, std::slice::from_ref(&addr));
        assert_eq!(decode(&h), Some((peer, vec![addr])));
        assert_eq!(decode(b""), None);
        assert_eq!(decode(b"\xff\xff\x00"), None);
        for cut in 0..h.len() {
            assert_eq!(decode(&h[..cut]), None);
        }
    }
}
