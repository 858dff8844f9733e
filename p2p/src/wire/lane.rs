//! The wire format of the message lane (`transport::lane`): a direct TCP
//! connection beside libp2p for small, latency-bound messages (small
//! object gets, mail batches and their acks), set up with a ticket asked
//! for on the libp2p stream protocol [`LANE_PROTOCOL`].
//!
//! Messages: small object gets (`Get` / `Got`, as `Request::FetchSmall`
//! with a tag) and node-to-node mail (`Mail` / `Ack`, a batch or an ack
//! exactly as on `/manta/mail/2`, inside a byte string).
//!
//! Negotiation (on the Noise-secured libp2p connection): the asker writes
//! one frame holding [`LaneAsk`], the other side answers one frame holding
//! [`LaneAnswer`]: a ticket (a port on its bulk-lane listener, a fresh
//! 32-byte token and key), `Busy` or `Off`. Both are versioned envelopes
//! (`envelope`), capped at [`MAX_ASK_BYTES`] / [`MAX_ANSWER_BYTES`].
//!
//! On the TCP connection, after the bulk lane's hello with version byte
//! [`MESSAGE_LANE_VERSION`](crate::wire::seal::MESSAGE_LANE_VERSION):
//! frames both ways, each `[u32 BE length][ciphertext][16-byte tag]`, the
//! length that of the plaintext (at most [`MAX_FRAME_BYTES`]), sealed with
//! AES-256-GCM under a per-direction key derived from the ticket's key with
//! HKDF-SHA256 ([`lane_keys`]: info `"manta lane v3 a->b"` for the dialler's
//! frames, `"manta lane v3 b->a"` for the listener's), nonce the 96-bit
//! big-endian count of frames sent before in that direction, the 4 length
//! bytes as associated data. A frame cannot be altered, dropped, replayed,
//! reordered or moved to the other direction without failing
//! authentication. A key seals at most [`MAX_FRAMES_PER_KEY`] frames. The
//! plaintext is a versioned envelope holding one [`LaneMsg`].
//!
//! Invariants of the decoders ([`decode_msg`], [`Opener`], [`open_frames`]),
//! which take bytes from the network: a frame's length is checked against
//! the cap before any byte of it is read or buffered; the envelope's caps
//! as everywhere (`envelope`: cap before parsing, version before body,
//! nesting bounded, trailing bytes refused); id and item lists are capped
//! while parsed; nothing panics; no plaintext is returned that failed
//! authentication.

use crate::wire::{self, CappedSeq, WireError};
use ring::aead::{Aad, LessSafeKey, Nonce, Tag, UnboundKey, AES_256_GCM};
use ring::hkdf;
use serde::{Deserialize, Deserializer, Serialize};

/// The libp2p stream protocol a lane ticket is asked for on.
pub const LANE_PROTOCOL: &str = "/manta/lane/1";

/// Most plaintext bytes in one frame (envelope included).
pub const MAX_FRAME_BYTES: usize = 64 << 10;

/// Bytes of a frame's authentication tag.
pub const TAG_BYTES: usize = 16;

/// Bytes of a frame's length prefix.
pub const HEADER_BYTES: usize = 4;

/// Most frames one direction's key may seal (then the lane is dropped and
/// a new one is asked for).
pub const MAX_FRAMES_PER_KEY: u64 = 1 << 32;

/// Most ids in one [`LaneMsg::Get`] (and items in its [`LaneMsg::Got`]).
pub const MAX_LANE_IDS: usize = 64;

/// Cap on an encoded [`LaneAsk`].
pub const MAX_ASK_BYTES: usize = 64;

/// Cap on an encoded [`LaneAnswer`].
pub const MAX_ANSWER_BYTES: usize = 256;

/// HKDF `info` of the dialler's (a's) frames.
const INFO_A_TO_B: &[u8] = b"manta lane v3 a->b";

/// HKDF `info` of the listener's (b's) frames.
const INFO_B_TO_A: &[u8] = b"manta lane v3 b->a";

/// HKDF salt (fixed: the ticket's key is already uniformly random).
const SALT: &[u8] = b"manta lane v3";

/// What the asker sends on [`LANE_PROTOCOL`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum LaneAsk {
    /// "Give me a ticket for a message lane to you."
    Open,
}

/// The answer on [`LANE_PROTOCOL`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum LaneAnswer {
    /// Connect over TCP to `port` at the IP this libp2p connection's peer
    /// has, send a hello with `token` (version 3), then speak frames under
    /// keys derived from `key`. Good for one connection, soon.
    Ticket {
        /// The listener's port (the bulk lane's, not 0).
        port: u16,
        /// What the hello carries.
        #[serde(with = "serde_bytes")]
        token: [u8; 32],
        /// The root of the lane's two keys.
        #[serde(with = "serde_bytes")]
        key: [u8; 32],
    },
    /// Lane caps reached (per peer or in all): stay on libp2p for now.
    Busy,
    /// The node has no message lane (turned off, or no listener).
    Off,
}

/// One message on a lane.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum LaneMsg {
    /// "Send me the whole encoding of each of these objects you hold,
    /// done, small and in memory" (as `Request::FetchSmall`); answered by
    /// a [`LaneMsg::Got`] with the same `tag`.
    Get {
        /// The asker's tag, echoed in the answer.
        tag: u32,
        /// At most [`MAX_LANE_IDS`] 16-byte ids.
        #[serde(deserialize_with = "de_ids")]
        ids: Vec<serde_bytes::ByteArray<16>>,
    },
    /// The answer to the [`LaneMsg::Get`] tagged `tag`: one item per id, in
    /// order, the encoding or nothing (not served this way: the asker
    /// fetches it over libp2p).
    Got {
        /// The `Get`'s tag.
        tag: u32,
        /// At most [`MAX_LANE_IDS`] items.
        #[serde(deserialize_with = "de_items")]
        items: Vec<Option<serde_bytes::ByteBuf>>,
    },
    /// A mail batch, exactly as on `/manta/mail/2`: the batch's own
    /// versioned envelope as a byte string (read with `decode_batch`, its
    /// caps and checks), answered by [`LaneMsg::Ack`]s on the same lane.
    Mail(serde_bytes::ByteBuf),
    /// An ack of a batch, exactly as on `/manta/mail/2` (its envelope as a
    /// byte string, read with `decode_ack`).
    Ack(serde_bytes::ByteBuf),
}

fn de_ids<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<serde_bytes::ByteArray<16>>, D::Error> {
    d.deserialize_seq(CappedSeq::<serde_bytes::ByteArray<16>>::new(MAX_LANE_IDS, "ids"))
}

fn de_items<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Option<serde_bytes::ByteBuf>>, D::Error> {
    d.deserialize_seq(CappedSeq::<Option<serde_bytes::ByteBuf>>::new(MAX_LANE_IDS, "items"))
}

impl LaneMsg {
    /// Checks list lengths (the decoder enforces this).
    pub fn validate(&self) -> Result<(), WireError> {
        let n = match self {
            LaneMsg::Get { ids, .. } => ids.len(),
            LaneMsg::Got { items, .. } => items.len(),
            LaneMsg::Mail(_) | LaneMsg::Ack(_) => 0,
        };
        if n > MAX_LANE_IDS {
            return Err(WireError::Malformed(format!("{n} ids or items exceed {MAX_LANE_IDS}")));
        }
        Ok(())
    }
}

/// Encodes a lane message (envelope included). Does not validate.
pub fn encode_msg(m: &LaneMsg) -> Vec<u8> {
    wire::encode(m)
}

/// Decodes a lane message (a frame's plaintext): cap, envelope, version,
/// trailing bytes, list caps.
pub fn decode_msg(bytes: &[u8]) -> Result<LaneMsg, WireError> {
    let m: LaneMsg = wire::decode(bytes, MAX_FRAME_BYTES)?;
    m.validate()?;
    Ok(m)
}

/// Encodes the asker's request.
pub fn encode_ask(a: &LaneAsk) -> Vec<u8> {
    wire::encode(a)
}

/// Decodes the asker's request.
pub fn decode_ask(bytes: &[u8]) -> Result<LaneAsk, WireError> {
    wire::decode(bytes, MAX_ASK_BYTES)
}

/// Encodes an answer.
pub fn encode_answer(a: &LaneAnswer) -> Vec<u8> {
    wire::encode(a)
}

/// Decodes an answer (a ticket's port must not be 0).
pub fn decode_answer(bytes: &[u8]) -> Result<LaneAnswer, WireError> {
    let a: LaneAnswer = wire::decode(bytes, MAX_ANSWER_BYTES)?;
    if matches!(a, LaneAnswer::Ticket { port: 0, .. }) {
        return Err(WireError::Malformed("a lane ticket for port 0".into()));
    }
    Ok(a)
}

/// One direction's AES-256-GCM key, from the ticket's key.
fn derive(root: &[u8; 32], info: &'static [u8]) -> LessSafeKey {
    let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, SALT).extract(root);
    let infos = [info];
    // 32 bytes of output from HKDF-SHA256 are always available.
    let okm = prk.expand(&infos, &AES_256_GCM).unwrap_or_else(|_| unreachable!("HKDF output of one key"));
    LessSafeKey::new(UnboundKey::from(okm))
}

/// The two keys of a lane from its ticket's key: `(seal, open)` as the
/// dialler (`dialler`) or the listener sees them.
pub fn lane_keys(root: &[u8; 32], dialler: bool) -> (Sealer, Opener) {
    let (mine, theirs) = if dialler { (INFO_A_TO_B, INFO_B_TO_A) } else { (INFO_B_TO_A, INFO_A_TO_B) };
    (Sealer { key: derive(root, mine), seq: 0 }, Opener { key: derive(root, theirs), seq: 0 })
}

fn nonce(seq: u64) -> Nonce {
    let mut n = [0u8; 12];
    n[4..].copy_from_slice(&seq.to_be_bytes());
    Nonce::assume_unique_for_key(n)
}

/// Seals one direction's frames (counter nonces from 0).
#[allow(missing_debug_implementations)] // holds a key
pub struct Sealer {
    key: LessSafeKey,
    seq: u64,
}

impl Sealer {
    /// Appends `plain` to `out` as one sealed frame. Fails (appending
    /// nothing) for a plaintext over [`MAX_FRAME_BYTES`] or once the key has
    /// sealed [`MAX_FRAMES_PER_KEY`] frames.
    pub fn seal(&mut self, plain: &[u8], out: &mut Vec<u8>) -> Result<(), WireError> {
        if plain.len() > MAX_FRAME_BYTES {
            return Err(WireError::TooLarge { len: plain.len(), max: MAX_FRAME_BYTES });
        }
        if self.seq >= MAX_FRAMES_PER_KEY {
            return Err(WireError::Malformed("the lane's key is used up".into()));
        }
        let header = (plain.len() as u32).to_be_bytes();
        out.extend_from_slice(&header);
        let at = out.len();
        out.extend_from_slice(plain);
        let tag = self
            .key
            .seal_in_place_separate_tag(nonce(self.seq), Aad::from(header), &mut out[at..])
            .map_err(|_| WireError::Malformed("frame too large to seal".into()))?;
        out.extend_from_slice(tag.as_ref());
        self.seq += 1;
        Ok(())
    }
}

/// Opens one direction's frames, in order.
#[allow(missing_debug_implementations)] // holds a key
pub struct Opener {
    key: LessSafeKey,
    seq: u64,
}

impl Opener {
    /// The plaintext length a frame header announces, checked against the
    /// cap: read this many bytes plus [`TAG_BYTES`] next.
    pub fn body_len(header: [u8; HEADER_BYTES]) -> Result<usize, WireError> {
        let len = u32::from_be_bytes(header) as usize;
        if len > MAX_FRAME_BYTES {
            return Err(WireError::TooLarge { len, max: MAX_FRAME_BYTES });
        }
        Ok(len)
    }

    /// Opens the frame with `header` whose ciphertext and tag are `body`
    /// (exactly `body_len(header) + TAG_BYTES` bytes) in place; its
    /// plaintext.
    pub fn open<'a>(&mut self, header: [u8; HEADER_BYTES], body: &'a mut [u8]) -> Result<&'a [u8], WireError> {
        let len = Self::body_len(header)?;
        if body.len() != len + TAG_BYTES {
            return Err(WireError::Truncated);
        }
        if self.seq >= MAX_FRAMES_PER_KEY {
            return Err(WireError::Malformed("the lane's key is used up".into()));
        }
        let (text, tag) = body.split_at_mut(len);
        let tag: [u8; TAG_BYTES] = (&*tag).try_into().map_err(|_| WireError::Truncated)?;
        self.key
            .open_in_place_separate_tag(nonce(self.seq), Aad::from(header), Tag::from(tag), text, 0..)
            .map_err(|_| WireError::Malformed(format!("lane frame {} failed authentication", self.seq)))?;
        self.seq += 1;
        Ok(text)
    }
}

/// Opens and decodes a whole sequence of frames held in memory, sealed by
/// a dialler under `root` (the fuzz target's entry point): the messages,
/// or the first error (a partial frame at the end is `Truncated`).
#[cfg(any(test, feature = "fuzzing"))]
pub fn open_frames(mut bytes: &[u8], root: &[u8; 32]) -> Result<Vec<LaneMsg>, WireError> {
    let (_, mut opener) = lane_keys(root, false);
    let mut out = Vec::new();
    while !bytes.is_empty() {
        let header: [u8; HEADER_BYTES] = bytes.first_chunk().copied().ok_or(WireError::Truncated)?;
        let len = Opener::body_len(header)?;
        let body = bytes.get(HEADER_BYTES..HEADER_BYTES + len + TAG_BYTES).ok_or(WireError::Truncated)?;
        let mut body = body.to_vec();
        out.push(decode_msg(opener.open(header, &mut body)?)?);
        bytes = &bytes[HEADER_BYTES + len + TAG_BYTES..];
    }
    Ok(out)
}

/// Seals `msgs` as a dialler's frames under `root` (for tests and seeds).
#[cfg(any(test, feature = "fuzzing"))]
pub fn seal_frames(msgs: &[LaneMsg], root: &[u8; 32]) -> Vec<u8> {
    let (mut sealer, _) = lane_keys(root, true);
    let mut out = Vec::new();
    for m in msgs {
        // Callers pass messages that fit a frame.
        let _ = sealer.seal(&encode_msg(m), &mut out);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROOT: [u8; 32] = [5; 32];

    fn get(tag: u32, n: usize) -> LaneMsg {
        LaneMsg::Get { tag, ids: (0..n).map(|i| serde_bytes::ByteArray::new([i as u8; 16])).collect() }
    }

    #[test]
    fn messages_and_negotiation_round_trip() {
        let got = LaneMsg::Got { tag: 7, items: vec![None, Some(serde_bytes::ByteBuf::from(vec![1, 2, 3]))] };
        for m in [get(1, 0), get(u32::MAX, MAX_LANE_IDS), got] {
            assert_eq!(decode_msg(&encode_msg(&m)), Ok(m));
        }
        assert!(matches!(decode_msg(&encode_msg(&get(1, MAX_LANE_IDS + 1))), Err(WireError::Malformed(_))));
        assert_eq!(decode_ask(&encode_ask(&LaneAsk::Open)), Ok(LaneAsk::Open));
        let t = LaneAnswer::Ticket { port: 9, token: [1; 32], key: [2; 32] };
        for a in [t, LaneAnswer::Busy, LaneAnswer::Off] {
            assert_eq!(decode_answer(&encode_answer(&a)), Ok(a));
        }
        let zero = LaneAnswer::Ticket { port: 0, token: [1; 32], key: [2; 32] };
        assert!(decode_answer(&encode_answer(&zero)).is_err());
        assert!(matches!(decode_msg(&vec![0u8; MAX_FRAME_BYTES + 1]), Err(WireError::TooLarge { .. })));
    }

    #[test]
    fn frames_open_in_order_under_the_other_sides_key_only() {
        let msgs = vec![get(1, 2), get(2, 0), get(3, 1)];
        let sealed = seal_frames(&msgs, &ROOT);
        assert_eq!(open_frames(&sealed, &ROOT), Ok(msgs.clone()));
        // Another root, a flipped bit anywhere, a cut: refused.
        assert!(open_frames(&sealed, &[6; 32]).is_err());
        for at in [0, 3, 4, 10, sealed.len() - 1] {
            let mut bad = sealed.clone();
            bad[at] ^= 1;
            assert!(open_frames(&bad, &ROOT).is_err(), "flip at {at}");
        }
        assert_eq!(open_frames(&sealed[..sealed.len() - 1], &ROOT), Err(WireError::Truncated));
        // A frame replayed, or the frames swapped: the nonces no longer match.
        let first = HEADER_BYTES + encode_msg(&msgs[0]).len() + TAG_BYTES;
        let replayed = [&sealed[..first], &sealed[..first]].concat();
        assert!(open_frames(&replayed, &ROOT).is_err());
        // The listener's own frames do not open as the dialler's (no reflection).
        let (mut b_sealer, _) = lane_keys(&ROOT, false);
        let mut reflected = Vec::new();
        b_sealer.seal(&encode_msg(&msgs[0]), &mut reflected).expect("seals");
        assert!(open_frames(&reflected, &ROOT).is_err());
        // An oversized length is refused before anything else is read.
        let huge = ((MAX_FRAME_BYTES + 1) as u32).to_be_bytes();
        assert!(matches!(open_frames(&huge, &ROOT), Err(WireError::TooLarge { .. })));
        let mut out = Vec::new();
        let (mut s, _) = lane_keys(&ROOT, true);
        assert!(s.seal(&vec![0; MAX_FRAME_BYTES + 1], &mut out).is_err());
        assert!(out.is_empty());
    }
}
