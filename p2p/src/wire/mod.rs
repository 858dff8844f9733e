//! Layer 0, wire formats: every byte layout manta-p2p puts on the network,
//! as pure encode/decode functions with no I/O and no state.
//!
//! - `envelope`: the versioned, size-capped CBOR envelope, the object
//!   transfer [`Request`]/[`Response`] pair and the gossiped [`Heartbeat`];
//! - `beat`: what goes on the heartbeat topic, a full heartbeat or an
//!   alive beat ([`Beat`]);
//! - `mail`: node-to-node work ([`mail::Mail`] in [`mail::Batch`]es,
//!   answered by [`mail::Ack`]s);
//! - `codec`: length-prefixed framing on a stream, and the object codec;
//! - `chunk`: chunk replies written and read without copying their data;
//! - `seal`: the bulk lane's hello and AES-256-GCM sealed record stream;
//! - `lane`: the message lane's negotiation, sealed frames and messages;
//! - `hint`: the owner hint a serialized ref carries;
//! - `timeline`: a page of a node's timeline, as a peer collecting the
//!   cluster's trace receives it;
//! - `plain`: capped decoding of plain CBOR values from peers (task
//!   arguments, named-actor records);
//! - `signed`: what a node signs with its identity key (an owner's voucher
//!   for an object's content, a named actor's record signed by its host).
//!
//! May use: nothing else in this crate (only `manta`'s plain types, serde,
//! ciborium, libp2p's `PeerId`/`Multiaddr`/identity keys, ring). Everything above uses it.
//!
//! Invariants (the decoders take bytes from the network): a cap is checked
//! before any parsing; sequences are capped while they are parsed; nesting
//! is bounded; trailing bytes are rejected; no input panics. Encoders are
//! infallible and do not validate (callers validate what they build from
//! untrusted parts). Items are `pub` only where the `fuzzing` feature
//! re-exports them (`manta_p2p::fuzzing`) or the crate's API names them;
//! without that feature the rest is crate-private.
#![cfg_attr(not(feature = "fuzzing"), allow(unreachable_pub))]

pub(crate) mod beat;
pub(crate) mod chunk;
pub(crate) mod codec;
pub(crate) mod envelope;
pub(crate) mod hint;
pub(crate) mod lane;
pub(crate) mod mail;
pub(crate) mod plain;
pub(crate) mod seal;
pub(crate) mod signed;
pub(crate) mod timeline;

pub(crate) use beat::{decode_beat, encode_beat, Beat};
pub(crate) use envelope::*;

/// Whether a counter is zero (serde's `skip_serializing_if` for fields
/// left out at their default).
fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// Microseconds since the Unix epoch (0 if the clock is before it): where
/// the sequence numbers this node puts on the wire (heartbeat `seq`, mail
/// batch `Seq`) start, so those of a restarted node or outbox are newer
/// than any it used before.
pub(crate) fn clock_seq() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_micros() as u64)
}
