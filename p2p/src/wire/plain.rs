//! Plain CBOR values from peers, outside the versioned envelope: a remote
//! task's or actor call's arguments, a ref's owner hint, a named actor's
//! DHT record. They come from other processes, so they are decoded with the
//! same discipline as the envelope (`envelope::decode`): a size cap checked
//! before any parsing, nesting capped while parsing, no trailing bytes.
//!
//! - [`decode_capped`]: the shared decoder, for any `DeserializeOwned` type;
//! - [`decode_args`]: arguments (cap `mail::MAX_ARGS_BYTES`, depth
//!   [`MAX_ARGS_DEPTH`]: user types may nest deeper than manta's own);
//! - [`ActorRecord`] with [`encode_actor_record`] / [`decode_actor_record`]:
//!   a named actor's record (cap [`MAX_ACTOR_RECORD_BYTES`], depth
//!   `MAX_DEPTH`), and [`actor_record_key`] / [`actor_name`] for its DHT key.
//!
//! Invariants: as `envelope`'s decoders (no input panics; memory bounded by
//! the input; depth capped before the stack is); errors are [`WireError`]s.

use super::envelope::{WireError, MAX_DEPTH};
use super::mail::{MAX_ARGS_BYTES, MAX_NAME_BYTES};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// Deepest nesting an argument value may have (user data: trees, nested
/// collections; far below what would exhaust a thread's stack).
pub const MAX_ARGS_DEPTH: usize = 64;

/// Cap on an encoded [`ActorRecord`]: its id, class name and owner hint.
pub const MAX_ACTOR_RECORD_BYTES: usize = 16 + MAX_NAME_BYTES + manta::backend::MAX_HINT_BYTES + 64;

/// The prefix of a named actor's DHT key.
pub const ACTOR_KEY_PREFIX: &str = "/manta/actor/";

/// Decodes one `T` from all of `bytes`: at most `max` bytes, nested at most
/// `depth` deep, nothing after it.
pub fn decode_capped<T: DeserializeOwned>(bytes: &[u8], max: usize, depth: usize) -> Result<T, WireError> {
    if bytes.len() > max {
        return Err(WireError::TooLarge { len: bytes.len(), max });
    }
    let mut rest = bytes;
    let value = ciborium::de::from_reader_with_recursion_limit::<T, _>(&mut rest, depth)
        .map_err(|e| super::envelope::cbor_error(e, depth))?;
    if !rest.is_empty() {
        return Err(WireError::Malformed(format!("{} trailing byte(s) after the value", rest.len())));
    }
    Ok(value)
}

/// Decodes a task's or call's arguments.
pub fn decode_args<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, WireError> {
    decode_capped(bytes, MAX_ARGS_BYTES, MAX_ARGS_DEPTH)
}

/// Encodes a value as arguments are encoded (for tests and fuzz targets).
#[cfg(any(test, feature = "fuzzing"))]
pub fn encode_args<T: Serialize>(value: &T) -> Vec<u8> {
    let mut out = Vec::new();
    // Writing into a Vec cannot fail.
    let _ = ciborium::into_writer(value, &mut out);
    out
}

/// An actor as it travels (a handle's serde form) and as a named actor's
/// DHT record holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActorRecord {
    /// The actor's id.
    #[serde(with = "serde_bytes")]
    pub actor: [u8; 16],
    /// Its registered type.
    pub class: String,
    /// Its host's owner hint (peer id and addresses; `hint`).
    #[serde(with = "serde_bytes")]
    pub host: Vec<u8>,
}

/// Encodes a record.
pub fn encode_actor_record(rec: &ActorRecord) -> Vec<u8> {
    let mut out = Vec::new();
    // Writing into a Vec cannot fail.
    let _ = ciborium::into_writer(rec, &mut out);
    out
}

/// Decodes a record: cap, depth, no trailing bytes, a class name of at most
/// `MAX_NAME_BYTES`. (The host hint is checked by whoever uses it.)
pub fn decode_actor_record(bytes: &[u8]) -> Result<ActorRecord, WireError> {
    let rec: ActorRecord = decode_capped(bytes, MAX_ACTOR_RECORD_BYTES, MAX_DEPTH)?;
    if rec.class.len() > MAX_NAME_BYTES {
        return Err(WireError::Malformed(format!("a class name of {} bytes", rec.class.len())));
    }
    Ok(rec)
}

/// The DHT key of the actor named `name`.
pub fn actor_record_key(name: &str) -> Vec<u8> {
    format!("{ACTOR_KEY_PREFIX}{name}").into_bytes()
}

/// The actor name a DHT key is for, if it is a named-actor key.
pub fn actor_name(key: &[u8]) -> Option<&str> {
    std::str::from_utf8(key.strip_prefix(ACTOR_KEY_PREFIX.as_bytes())?).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_bad_ones_are_refused() {
        let rec = ActorRecord { actor: [7; 16], class: "Counter".into(), host: vec![1, 2, 3] };
        let bytes = encode_actor_record(&rec);
        assert_eq!(decode_actor_record(&bytes), Ok(rec.clone()));
        assert!(matches!(decode_actor_record(&[bytes.clone(), vec![0]].concat()), Err(WireError::Malformed(_))));
        for cut in 0..bytes.len() {
            assert!(decode_actor_record(&bytes[..cut]).is_err());
        }
        let long = ActorRecord { class: "x".repeat(MAX_NAME_BYTES + 1), ..rec };
        assert!(decode_actor_record(&encode_actor_record(&long)).is_err());
        assert!(matches!(
            decode_actor_record(&vec![0x40; MAX_ACTOR_RECORD_BYTES + 1]),
            Err(WireError::TooLarge { .. })
        ));
        assert_eq!(actor_name(&actor_record_key("a/b")), Some("a/b"));
        assert_eq!(actor_name(b"/manta/other"), None);
    }

    #[test]
    fn nesting_is_capped_before_the_stack_is() {
        let deep = [vec![0x81; 100_000], vec![0x00]].concat();
        let e = decode_args::<ciborium::Value>(&deep).unwrap_err();
        assert!(e.to_string().contains("nested deeper than 64"), "{e}");
        let ok = [vec![0x81; MAX_ARGS_DEPTH - 1], vec![0x00]].concat();
        assert!(decode_args::<ciborium::Value>(&ok).is_ok());
    }
}
