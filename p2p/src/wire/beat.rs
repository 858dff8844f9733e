//! What a member publishes on the heartbeat topic each period: a full
//! [`Heartbeat`], or an *alive beat* that only says "still here" and
//! carries nothing but the sequence number.
//!
//! Wire form (inside the usual envelope, `{"v": 1, "body": ...}`): a full
//! heartbeat's body is a map (section 2.4 of p2p/PROTOCOL.md); an alive
//! beat's body is a bare unsigned integer, its `seq`. A decoder older than
//! alive beats expects a map there and drops the message as malformed, so
//! it never mistakes an alive beat for a heartbeat with every field empty
//! (and senders send alive beats only while every live member says it
//! reads them, [`Heartbeat::alive_beats`]).
//!
//! Invariants: [`decode_beat`] has the envelope's guarantees (cap
//! [`MAX_HEARTBEAT_BYTES`] checked first, version, no trailing bytes,
//! bounded memory and nesting, no panic) and validates a full heartbeat as
//! [`super::decode_heartbeat`] does; any other body type (negative or
//! float number, text, array...) is [`WireError::Malformed`]. An alive
//! beat names no peer: it speaks only for the gossip message's signer.

use super::envelope::{decode, encode, Heartbeat, WireError, MAX_HEARTBEAT_BYTES};
use serde::de::{self, MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;

/// One message on the heartbeat topic.
#[derive(Debug, Clone, PartialEq)]
pub enum Beat {
    /// The sender's whole state.
    Full(Heartbeat),
    /// The sender is alive; its state is that of its last full heartbeat.
    /// The value is its sequence number (the same counter as
    /// [`Heartbeat::seq`]).
    Alive(u64),
}

impl Serialize for Beat {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Beat::Full(hb) => hb.serialize(s),
            Beat::Alive(seq) => s.serialize_u64(*seq),
        }
    }
}

impl<'de> Deserialize<'de> for Beat {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(BeatVisitor)
    }
}

struct BeatVisitor;

impl<'de> Visitor<'de> for BeatVisitor {
    type Value = Beat;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a heartbeat map or an alive beat's sequence number")
    }

    fn visit_u64<E: de::Error>(self, seq: u64) -> Result<Beat, E> {
        Ok(Beat::Alive(seq))
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Beat, A::Error> {
        Heartbeat::deserialize(de::value::MapAccessDeserializer::new(map)).map(Beat::Full)
    }
}

/// Encodes a beat (envelope included). Does not validate.
pub fn encode_beat(beat: &Beat) -> Vec<u8> {
    encode(beat)
}

/// Decodes a beat: cap [`MAX_HEARTBEAT_BYTES`], version, shape, no
/// trailing bytes, and [`Heartbeat::validate`] for a full one.
pub fn decode_beat(bytes: &[u8]) -> Result<Beat, WireError> {
    let beat: Beat = decode(bytes, MAX_HEARTBEAT_BYTES)?;
    if let Beat::Full(hb) = &beat {
        hb.validate()?;
    }
    Ok(beat)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{decode_heartbeat, encode_heartbeat};

    #[test]
    fn an_alive_beat_is_the_envelope_and_a_number() {
        let bytes = encode_beat(&Beat::Alive(0x0102_0304_0506_0708));
        assert_eq!(
            bytes,
            [&[0xa2, 0x61, b'v', 0x01, 0x64, b'b', b'o', b'd', b'y', 0x1b][..], &[1, 2, 3, 4, 5, 6, 7, 8]].concat()
        );
        assert_eq!(decode_beat(&bytes), Ok(Beat::Alive(0x0102_0304_0506_0708)));
        // What a decoder older than alive beats does with one: refuses it
        // (it is not read as an empty heartbeat).
        assert!(matches!(decode_heartbeat(&bytes), Err(WireError::Malformed(_))));
        // The example in p2p/PROTOCOL.md, section 2.4.1.
        let doc = [
            0xa2, 0x61, 0x76, 0x01, 0x64, 0x62, 0x6f, 0x64, 0x79, 0x1b, 0x00, 0x05, 0xec, 0x2d, 0x1f, 0x3a, 0x0b, 0x07,
        ];
        assert_eq!(encode_beat(&Beat::Alive(0x0005_ec2d_1f3a_0b07)), doc);
    }

    #[test]
    fn a_full_beat_is_a_heartbeat_both_ways() {
        let hb = Heartbeat { seq: 7, fn_hash: 9, alive_beats: true, want_full: true, ..Default::default() };
        let bytes = encode_beat(&Beat::Full(hb.clone()));
        assert_eq!(bytes, encode_heartbeat(&hb));
        assert_eq!(decode_beat(&bytes), Ok(Beat::Full(hb.clone())));
        assert_eq!(decode_heartbeat(&bytes), Ok(hb));
    }

    #[test]
    fn other_bodies_are_malformed() {
        let envelope = |body: &[u8]| [&[0xa2, 0x61, b'v', 0x01, 0x64, b'b', b'o', b'd', b'y'][..], body].concat();
        for body in [&[0x20][..], &[0xf9, 0x3c, 0x00], &[0x61, b'x'], &[0x81, 0x01], &[0xf6], &[0x41, 0x01], &[0xf5]] {
            assert!(matches!(decode_beat(&envelope(body)), Err(WireError::Malformed(_))), "{body:x?}");
        }
        assert!(matches!(decode_beat(&envelope(&[0x1b, 1, 2])), Err(WireError::Truncated)));
        // Trailing bytes after the number.
        let mut bytes = encode_beat(&Beat::Alive(5));
        bytes.push(0);
        assert!(matches!(decode_beat(&bytes), Err(WireError::Malformed(_))));
        // The cap applies before anything is read.
        let long = vec![0u8; MAX_HEARTBEAT_BYTES + 1];
        assert!(matches!(decode_beat(&long), Err(WireError::TooLarge { .. })));
        // A heartbeat that fails validation stays refused.
        let bad = Heartbeat { down: vec![vec![1]; crate::wire::MAX_DOWN + 1], ..Default::default() };
        assert!(matches!(decode_beat(&encode_heartbeat(&bad)), Err(WireError::Malformed(_))));
    }
}
