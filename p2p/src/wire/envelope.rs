//! The versioned, size-capped envelope of every manta-p2p message, and the
//! messages of object transfer and membership: the object-transfer
//! [`Request`] / [`Response`] pair and the gossiped [`Heartbeat`].
//!
//! Every message is CBOR (`ciborium`) inside an envelope map
//! `{"v": VERSION, "body": <message>}`, `v` first. Enums use serde's
//! externally tagged form (`{"Fetch": {...}}`, `"NotFound"`); byte fields are
//! CBOR byte strings (`serde_bytes`). Unknown fields inside a message body are
//! ignored (room for additive extensions); unknown envelope fields are not.
//!
//! Invariants of the `decode_*` functions, which take bytes from the network:
//! - the size cap (`MAX_*_BYTES`) is checked before any parsing;
//! - the version is checked before the body is interpreted: `v != VERSION`
//!   gives [`WireError::WrongVersion`] whatever follows;
//! - memory use is bounded by the input: byte and text strings are read
//!   incrementally (a header claiming 4 GiB in a short input is
//!   [`WireError::Truncated`]), and the only arrays ([`Heartbeat::addrs`],
//!   [`Heartbeat::resources`], [`Heartbeat::down`]) are capped while parsing;
//! - nesting is capped at [`MAX_DEPTH`]; no input panics;
//! - the whole input must be one message: trailing bytes are
//!   [`WireError::Malformed`];
//! - a decoded message passes its `validate` method (field ranges below).
//!
//! The `encode_*` functions are infallible and do not validate: encoding a
//! message that fails `validate` (or exceeds its cap) gives bytes that the
//! decoder rejects, so senders should call `validate` on anything built from
//! untrusted parts.

use serde::de::{self, DeserializeOwned, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::marker::PhantomData;

/// The wire version carried in every envelope; a peer speaking another
/// version gets [`WireError::WrongVersion`].
pub const VERSION: u16 = 1;

/// Default chunk size for object transfer: the most data a
/// [`Response::Chunk`] should carry.
pub const CHUNK_BYTES: usize = 4 << 20;

/// Cap on an encoded [`Request`] (envelope included).
pub const MAX_REQUEST_BYTES: usize = 64 << 10;

/// Cap on an encoded [`Response`] (envelope included): a full chunk plus room
/// for the framing fields.
pub const MAX_RESPONSE_BYTES: usize = CHUNK_BYTES + (64 << 10);

/// Cap on an encoded [`Heartbeat`] (envelope included), below gossipsub's
/// 64 KiB message limit.
pub const MAX_HEARTBEAT_BYTES: usize = 60 << 10;

/// Largest `len` a [`Request::Fetch`] may ask for. Servers send at most
/// `min(len, CHUNK_BYTES)` bytes per chunk regardless.
pub const MAX_FETCH_LEN: u32 = (CHUNK_BYTES * 4) as u32;

/// Most ids one [`Request::FetchSmall`] may name (and most items its
/// [`Response::Objects`] may hold).
pub const MAX_BATCH_IDS: usize = 1024;

/// Most addresses a [`Heartbeat`] may list.
pub const MAX_ADDRS: usize = 64;

/// Most peers a [`Heartbeat`] may report down ([`Heartbeat::down`]).
pub const MAX_DOWN: usize = 16;

/// Most resources a [`Heartbeat`] may list.
pub const MAX_RESOURCES: usize = 64;

/// Longest [`Resource::name`], in bytes.
pub const MAX_RESOURCE_NAME_BYTES: usize = 64;

/// Slack allowed when checking `free <= total` of a [`Resource`].
pub const RESOURCE_EPSILON: f64 = 1e-6;

/// Deepest CBOR nesting the decoder follows (messages need 6 levels).
pub const MAX_DEPTH: usize = 16;

/// Why bytes could not be decoded (or a frame could not be read).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// The input is longer than the message kind's cap.
    #[error("message of {len} bytes exceeds the {max}-byte cap")]
    TooLarge {
        /// Length of the input (or the length a frame prefix announced).
        len: usize,
        /// The cap that applied.
        max: usize,
    },
    /// The input ended in the middle of a message.
    #[error("message truncated")]
    Truncated,
    /// The input is not a valid message: bad CBOR, wrong shape, trailing
    /// bytes or a field out of range.
    #[error("malformed message: {0}")]
    Malformed(String),
    /// The envelope carries a version other than this build's (`VERSION`).
    #[error("wire version {got} is not supported (expected {VERSION})")]
    WrongVersion {
        /// The version the sender used.
        got: u16,
    },
    /// An I/O error other than a premature end of input.
    #[error("i/o error: {0}")]
    Io(String),
}

/// A request on the object-transfer protocol (`/manta/object/1`).
///
/// Non-exhaustive: task submission will be added as another variant.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Request {
    /// "Send me up to `len` bytes of the CBOR encoding of object `id`,
    /// starting at byte `offset`." `len` must be in `1..=MAX_FETCH_LEN`.
    Fetch {
        /// The object's id (a CBOR byte string of exactly 16 bytes).
        #[serde(with = "serde_bytes")]
        id: [u8; 16],
        /// First byte wanted.
        offset: u64,
        /// Most bytes wanted.
        len: u32,
    },
    /// "Send me object `id`'s CBOR encoding from byte `offset` on over your
    /// bulk lane" (see [`Response::Ticket`]). A peer without a lane, or
    /// one that does not hold the object, says so and the requester goes
    /// on with [`Request::Fetch`].
    Bulk {
        /// The object's id (a CBOR byte string of exactly 16 bytes).
        #[serde(with = "serde_bytes")]
        id: [u8; 16],
        /// First byte wanted.
        offset: u64,
    },
    /// "Send me the whole CBOR encoding of each of these objects that you
    /// hold, done and small, in one reply" (see [`Response::Objects`]):
    /// many small objects from one holder in one exchange. At most
    /// [`MAX_BATCH_IDS`] ids, each a 16-byte CBOR byte string.
    FetchSmall {
        /// The objects' ids.
        #[serde(deserialize_with = "de_ids")]
        ids: Vec<serde_bytes::ByteArray<16>>,
    },
    /// "Send me a page of your timeline" (see [`Response::Timeline`]): the
    /// events that ended at or before `upto` on the peer's timeline clock
    /// (0: now), most recent first, skipping the first `skip`. Answered only
    /// to cluster members (and, in a cluster with a secret, to any peer
    /// that connected with it).
    Timeline {
        /// The peer's timeline clock reading the pages are cut at (that of
        /// the first page's reply), or 0 for the first page.
        upto: u64,
        /// Events already received (most recent first).
        skip: u32,
    },
    /// "Send me a voucher for each of these objects" (see
    /// [`Response::Vouchers`]): asked of an object's owner by a node that
    /// holds a copy it will serve (a replica), and of a holder that is not
    /// the owner by a reader, before it reads the object from it. At most
    /// [`MAX_BATCH_IDS`] ids, each a 16-byte CBOR byte string.
    Vouch {
        /// The objects' ids.
        #[serde(deserialize_with = "de_ids")]
        ids: Vec<serde_bytes::ByteArray<16>>,
    },
}

/// Most bytes of the typed error a [`Response::Failed`] may carry.
pub(crate) const MAX_FAILED_ERROR_BYTES: usize = 16 * 1024;

impl Response {
    /// A failure to serve, with no typed error.
    pub fn failed(message: impl Into<String>) -> Response {
        Response::Failed { message: message.into(), error: None }
    }

    /// A failure to serve an object whose value is the error `e` (its
    /// task failed): the message, and the error typed, if it encodes
    /// within 16 KiB.
    pub fn failed_with(e: &manta::Error) -> Response {
        let remote = super::mail::RemoteError::from(e);
        let mut bytes = Vec::new();
        let typed = ciborium::into_writer(&remote, &mut bytes).is_ok() && bytes.len() <= MAX_FAILED_ERROR_BYTES;
        Response::Failed { message: e.to_string(), error: typed.then(|| serde_bytes::ByteBuf::from(bytes)) }
    }

    /// The typed error a [`Response::Failed`] carries, if any, decoded and
    /// checked (`None`: absent, or malformed).
    pub fn failed_error(error: Option<&serde_bytes::ByteBuf>) -> Option<manta::Error> {
        let bytes = error?;
        let remote: super::mail::RemoteError =
            super::plain::decode_capped(bytes, MAX_FAILED_ERROR_BYTES, MAX_DEPTH).ok()?;
        remote.validate().ok()?;
        Some(remote.into())
    }
}

/// A reply on the object-transfer protocol.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    /// Bytes `offset..offset + data.len()` of an object encoding that is
    /// `total` bytes long; `offset + data.len() <= total` always holds.
    Chunk {
        /// Length of the object's whole encoding.
        total: u64,
        /// Position of `data` in the encoding.
        offset: u64,
        /// The bytes (a CBOR byte string).
        #[serde(with = "serde_bytes")]
        data: Vec<u8>,
    },
    /// The peer does not hold the object.
    NotFound,
    /// The peer holds the object but could not serve it.
    Failed {
        /// What went wrong, for logs.
        message: String,
        /// The object's own error, when it is one (its task failed): a
        /// [`RemoteError`](super::mail::RemoteError) in plain CBOR, at most
        /// 16 KiB. A reader takes it as the object's
        /// value only from the owner the ref names or the executor it
        /// chose; left out by older nodes and for other failures.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<serde_bytes::ByteBuf>,
    },
    /// The request was malformed, oversized or of another wire version.
    Invalid {
        /// Why it was rejected (usually a [`WireError`]'s text).
        reason: String,
    },
    /// The peer is overloaded; retry later or elsewhere.
    Busy,
    /// The answer to [`Request::FetchSmall`]: one item per id, in order,
    /// the object's whole encoding, or nothing where the holder would not
    /// serve it this way (not held, not done, too big, or over the reply's
    /// budget); the requester fetches those one by one.
    Objects {
        /// At most [`MAX_BATCH_IDS`] items.
        #[serde(deserialize_with = "de_items")]
        items: Vec<Option<serde_bytes::ByteBuf>>,
    },
    /// The answer to [`Request::Bulk`]: connect over TCP to `port` at the
    /// address this connection's peer has, send `token`, and read the
    /// encoding sealed under `key` (AES-256-GCM, see `seal`). Both secrets
    /// are fresh per ticket; the ticket is good for one connection, soon.
    Ticket {
        /// The peer's bulk-lane TCP port (not 0).
        port: u16,
        /// What to send to redeem the ticket.
        #[serde(with = "serde_bytes")]
        token: [u8; 32],
        /// The stream's one-use key.
        #[serde(with = "serde_bytes")]
        key: [u8; 32],
    },
    /// The answer to [`Request::Timeline`]: one page, a plain CBOR value
    /// decoded with its own caps (`wire::timeline::decode_page`).
    Timeline {
        /// The encoded page (a CBOR byte string).
        #[serde(with = "serde_bytes")]
        page: Vec<u8>,
    },
    /// The answer to [`Request::Vouch`]: one item per id, in order, an
    /// encoded voucher (`wire::signed::Voucher`, decoded with its own caps)
    /// or nothing where the peer has none to give (it does not hold the
    /// object, or holds a copy the owner has not vouched for).
    Vouchers {
        /// At most [`MAX_BATCH_IDS`] items.
        #[serde(deserialize_with = "de_items")]
        items: Vec<Option<serde_bytes::ByteBuf>>,
    },
}

/// One resource kind in a heartbeat (e.g. `"cpu"`), in the units the
/// scheduler uses.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Resource {
    /// Resource name, at most `MAX_RESOURCE_NAME_BYTES` (64) bytes.
    #[serde(rename = "n", alias = "name")]
    pub name: String,
    /// Capacity: finite and `>= 0`.
    #[serde(rename = "t", alias = "total")]
    pub total: f64,
    /// Currently free: finite, `>= 0` and `<= total + RESOURCE_EPSILON`.
    #[serde(rename = "f", alias = "free")]
    pub free: f64,
}

/// A node's periodic state announcement on gossip (`Default` is the empty
/// one: no peer id, no addresses, zero counters).
///
/// Encoded compactly, since every node forwards every heartbeat (its bytes
/// are most of a cluster's traffic at rest, p2p/SCALING.md): one- or
/// two-letter field names, and fields at their default (zero, false,
/// empty) left out. The long names of earlier versions are still read.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Heartbeat {
    /// The sender's `PeerId`, as bytes; empty (and not sent) in the
    /// heartbeats this version publishes: gossipsub's signed `from` field
    /// names the sender already. When present it must equal that field.
    #[serde(rename = "p", alias = "peer", default, skip_serializing_if = "Vec::is_empty", with = "serde_bytes")]
    pub peer: Vec<u8>,
    /// The sender's listen addresses (`Multiaddr` bytes), at most
    /// [`MAX_ADDRS`].
    #[serde(
        rename = "a",
        alias = "addrs",
        default,
        skip_serializing_if = "Vec::is_empty",
        serialize_with = "ser_byte_strings",
        deserialize_with = "de_addrs"
    )]
    pub addrs: Vec<Vec<u8>>,
    /// Sequence number, increasing per sender.
    #[serde(rename = "s", alias = "seq")]
    pub seq: u64,
    /// Resources, at most [`MAX_RESOURCES`].
    #[serde(
        rename = "r",
        alias = "resources",
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "de_resources"
    )]
    pub resources: Vec<Resource>,
    /// Tasks queued on the sender.
    #[serde(rename = "q", alias = "queue_len", default, skip_serializing_if = "super::is_zero")]
    pub queue_len: u64,
    /// Bytes held in the sender's object store.
    #[serde(rename = "b", alias = "store_bytes", default, skip_serializing_if = "super::is_zero")]
    pub store_bytes: u64,
    /// Capacity of the sender's object store, in bytes.
    #[serde(rename = "c", alias = "store_capacity", default, skip_serializing_if = "super::is_zero")]
    pub store_capacity: u64,
    /// Hash of the sender's registered-function table (peers with different
    /// tables cannot run each other's tasks).
    #[serde(rename = "f", alias = "fn_hash", default, skip_serializing_if = "super::is_zero")]
    pub fn_hash: u64,
    /// Set in the last heartbeat of a node that is shutting down: peers
    /// mark it dead at once instead of after the failure timeout. (Absent
    /// in older heartbeats: `false`.)
    #[serde(rename = "l", alias = "leaving", default, skip_serializing_if = "is_false")]
    pub leaving: bool,
    /// Peers the sender cannot hear (suspected: missed heartbeats) or has
    /// declared dead recently, as `PeerId` bytes, at most [`MAX_DOWN`]:
    /// how an observer sees a partition between other nodes, or a death
    /// that happened before it joined. (Absent in older heartbeats: none.)
    #[serde(
        rename = "d",
        alias = "down",
        default,
        skip_serializing_if = "Vec::is_empty",
        serialize_with = "ser_byte_strings",
        deserialize_with = "de_down"
    )]
    pub down: Vec<Vec<u8>>,
    /// Tasks running on the sender now. (Absent in older heartbeats: 0;
    /// this and the next three are the metrics summary `manta status`
    /// shows.)
    #[serde(rename = "tr", alias = "tasks_running", default, skip_serializing_if = "super::is_zero")]
    pub tasks_running: u64,
    /// Tasks the sender finished with a value since it started.
    #[serde(rename = "td", alias = "tasks_done", default, skip_serializing_if = "super::is_zero")]
    pub tasks_done: u64,
    /// Tasks the sender finished with an error since it started.
    #[serde(rename = "tf", alias = "tasks_failed", default, skip_serializing_if = "super::is_zero")]
    pub tasks_failed: u64,
    /// Objects in the sender's store memory.
    #[serde(rename = "o", alias = "store_objects", default, skip_serializing_if = "super::is_zero")]
    pub store_objects: u64,
    /// The sender understands alive beats ([`super::beat::Beat::Alive`]):
    /// peers may send it those between full heartbeats. (Absent in older
    /// heartbeats: `false`, and nobody sends alive beats while such a
    /// member is live.)
    #[serde(rename = "ab", default, skip_serializing_if = "is_false")]
    pub alive_beats: bool,
    /// The sender asks every member for a full heartbeat at its next beat
    /// (it heard alive beats from a peer whose state it does not hold, or
    /// a peer new to it subscribed). Not part of the sender's state.
    #[serde(rename = "w", default, skip_serializing_if = "is_false")]
    pub want_full: bool,
}

fn is_false(b: &bool) -> bool {
    !*b
}

impl Request {
    /// Checks the field ranges the decoder enforces.
    pub fn validate(&self) -> Result<(), WireError> {
        match self {
            Request::Fetch { len, .. } if *len == 0 || *len > MAX_FETCH_LEN => {
                Err(malformed(format!("Fetch len {len} is outside 1..={MAX_FETCH_LEN}")))
            }
            Request::FetchSmall { ids } if ids.len() > MAX_BATCH_IDS => {
                Err(malformed(format!("FetchSmall of {} ids exceeds {MAX_BATCH_IDS}", ids.len())))
            }
            Request::Vouch { ids } if ids.len() > MAX_BATCH_IDS => {
                Err(malformed(format!("Vouch of {} ids exceeds {MAX_BATCH_IDS}", ids.len())))
            }
            Request::Fetch { .. }
            | Request::Bulk { .. }
            | Request::FetchSmall { .. }
            | Request::Timeline { .. }
            | Request::Vouch { .. } => Ok(()),
        }
    }
}

impl Response {
    /// Checks the field ranges the decoder enforces: a chunk's data is at
    /// most [`MAX_RESPONSE_BYTES`] and lies within `0..total`; a ticket's
    /// port is not 0.
    pub fn validate(&self) -> Result<(), WireError> {
        if let Response::Ticket { port: 0, .. } = self {
            return Err(malformed("Ticket port 0"));
        }
        if let Response::Objects { items } | Response::Vouchers { items } = self {
            if items.len() > MAX_BATCH_IDS {
                return Err(malformed(format!("a batch of {} items exceeds {MAX_BATCH_IDS}", items.len())));
            }
        }
        let Response::Chunk { total, offset, data } = self else { return Ok(()) };
        if data.len() > MAX_RESPONSE_BYTES {
            return Err(malformed(format!("Chunk of {} bytes exceeds {MAX_RESPONSE_BYTES}", data.len())));
        }
        match offset.checked_add(data.len() as u64) {
            Some(end) if end <= *total => Ok(()),
            _ => Err(malformed(format!("Chunk {offset}+{} ends past total {total}", data.len()))),
        }
    }
}

impl Resource {
    /// Checks name length and amounts (finite, `>= 0`, `free <= total + ε`).
    pub fn validate(&self) -> Result<(), WireError> {
        if self.name.len() > MAX_RESOURCE_NAME_BYTES {
            return Err(malformed(format!(
                "resource name of {} bytes exceeds {MAX_RESOURCE_NAME_BYTES}",
                self.name.len()
            )));
        }
        for (what, x) in [("total", self.total), ("free", self.free)] {
            if !x.is_finite() || x < 0.0 {
                return Err(malformed(format!("resource {:?}: {what} = {x} is not a finite amount >= 0", self.name)));
            }
        }
        if self.free > self.total + RESOURCE_EPSILON {
            return Err(malformed(format!("resource {:?}: free {} > total {}", self.name, self.free, self.total)));
        }
        Ok(())
    }
}

impl Heartbeat {
    /// Checks the list lengths and every [`Resource`].
    pub fn validate(&self) -> Result<(), WireError> {
        if self.addrs.len() > MAX_ADDRS {
            return Err(malformed(format!("{} addrs exceed {MAX_ADDRS}", self.addrs.len())));
        }
        if self.resources.len() > MAX_RESOURCES {
            return Err(malformed(format!("{} resources exceed {MAX_RESOURCES}", self.resources.len())));
        }
        if self.down.len() > MAX_DOWN {
            return Err(malformed(format!("{} down peers exceed {MAX_DOWN}", self.down.len())));
        }
        self.resources.iter().try_for_each(Resource::validate)
    }
}

/// Encodes a request (envelope included). Does not validate.
pub fn encode_request(req: &Request) -> Vec<u8> {
    encode(req)
}

/// Decodes a request: cap [`MAX_REQUEST_BYTES`], version, shape, no trailing
/// bytes, [`Request::validate`].
pub fn decode_request(bytes: &[u8]) -> Result<Request, WireError> {
    let req: Request = decode(bytes, MAX_REQUEST_BYTES)?;
    req.validate()?;
    Ok(req)
}

/// Encodes a response (envelope included). Does not validate.
pub fn encode_response(res: &Response) -> Vec<u8> {
    encode(res)
}

/// Decodes a response: cap [`MAX_RESPONSE_BYTES`], version, shape, no
/// trailing bytes, [`Response::validate`].
pub fn decode_response(bytes: &[u8]) -> Result<Response, WireError> {
    let res: Response = decode(bytes, MAX_RESPONSE_BYTES)?;
    res.validate()?;
    Ok(res)
}

/// Encodes a heartbeat (envelope included). Does not validate. (Nodes
/// publish through `beat`; this is for the fuzz targets and tests.)
#[cfg(any(test, feature = "fuzzing"))]
pub fn encode_heartbeat(hb: &Heartbeat) -> Vec<u8> {
    encode(hb)
}

/// Decodes a heartbeat: cap [`MAX_HEARTBEAT_BYTES`], version, shape, no
/// trailing bytes, [`Heartbeat::validate`]. (Nodes read through `beat`;
/// this is for the fuzz targets and tests.)
#[cfg(any(test, feature = "fuzzing"))]
pub fn decode_heartbeat(bytes: &[u8]) -> Result<Heartbeat, WireError> {
    let hb: Heartbeat = decode(bytes, MAX_HEARTBEAT_BYTES)?;
    hb.validate()?;
    Ok(hb)
}

// ---- envelope ----

fn malformed(msg: impl Into<String>) -> WireError {
    WireError::Malformed(msg.into())
}

/// The envelope as written; its field order (`v` first) is part of the
/// format.
#[derive(Serialize)]
struct Envelope<'a, T> {
    v: u16,
    body: &'a T,
}

pub(crate) fn encode<T: Serialize>(body: &T) -> Vec<u8> {
    let mut out = Vec::new();
    // Writing into a Vec cannot fail, and none of the message types has a
    // Serialize impl that reports errors.
    ciborium::into_writer(&Envelope { v: VERSION, body }, &mut out).expect("CBOR encoding into a Vec is infallible");
    out
}

/// The envelope as read: the body, or just the foreign version (the body is
/// then left unread).
enum Opened<T> {
    Body(T),
    WrongVersion(u16),
}

#[derive(Deserialize)]
#[serde(field_identifier, rename_all = "lowercase")]
enum Field {
    V,
    Body,
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Opened<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_map(EnvelopeVisitor(PhantomData))
    }
}

struct EnvelopeVisitor<T>(PhantomData<T>);

impl<'de, T: Deserialize<'de>> Visitor<'de> for EnvelopeVisitor<T> {
    type Value = Opened<T>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an envelope map {\"v\": version, \"body\": message}")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        match map.next_key::<Field>()? {
            Some(Field::V) => {}
            Some(Field::Body) => return Err(de::Error::custom("envelope: `v` must come before `body`")),
            None => return Err(de::Error::missing_field("v")),
        }
        let v: u16 = map.next_value()?;
        if v != VERSION {
            return Ok(Opened::WrongVersion(v));
        }
        match map.next_key::<Field>()? {
            Some(Field::Body) => {}
            Some(Field::V) => return Err(de::Error::duplicate_field("v")),
            None => return Err(de::Error::missing_field("body")),
        }
        let body = map.next_value()?;
        if map.next_key::<Field>()?.is_some() {
            return Err(de::Error::custom("envelope: field after `body`"));
        }
        Ok(Opened::Body(body))
    }
}

/// Cap, envelope, version and trailing-bytes checks shared by the decoders.
pub(crate) fn decode<T: DeserializeOwned>(bytes: &[u8], max: usize) -> Result<T, WireError> {
    if bytes.len() > max {
        return Err(WireError::TooLarge { len: bytes.len(), max });
    }
    let mut rest = bytes;
    let opened = ciborium::de::from_reader_with_recursion_limit::<Opened<T>, _>(&mut rest, MAX_DEPTH)
        .map_err(|e| cbor_error(e, MAX_DEPTH))?;
    match opened {
        Opened::WrongVersion(got) => Err(WireError::WrongVersion { got }),
        Opened::Body(_) if !rest.is_empty() => {
            Err(malformed(format!("{} trailing byte(s) after the message", rest.len())))
        }
        Opened::Body(body) => Ok(body),
    }
}

/// A ciborium error as a [`WireError`] (`depth`: the nesting cap that applied).
pub(crate) fn cbor_error(e: ciborium::de::Error<std::io::Error>, depth: usize) -> WireError {
    use ciborium::de::Error;
    match e {
        Error::Io(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => WireError::Truncated,
        Error::Io(e) => WireError::Io(e.to_string()),
        Error::Syntax(at) => malformed(format!("invalid CBOR at byte {at}")),
        Error::Semantic(Some(at), msg) => malformed(format!("{msg} (at byte {at})")),
        Error::Semantic(None, msg) => malformed(msg),
        Error::RecursionLimitExceeded => malformed(format!("nested deeper than {depth}")),
    }
}

// ---- capped arrays ----

fn ser_byte_strings<S: Serializer>(items: &[Vec<u8>], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(items.iter().map(|b| serde_bytes::Bytes::new(b)))
}

fn de_addrs<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Vec<u8>>, D::Error> {
    let bufs = d.deserialize_seq(CappedSeq::<serde_bytes::ByteBuf>::new(MAX_ADDRS, "addrs"))?;
    Ok(bufs.into_iter().map(serde_bytes::ByteBuf::into_vec).collect())
}

fn de_down<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Vec<u8>>, D::Error> {
    let bufs = d.deserialize_seq(CappedSeq::<serde_bytes::ByteBuf>::new(MAX_DOWN, "down peers"))?;
    Ok(bufs.into_iter().map(serde_bytes::ByteBuf::into_vec).collect())
}

fn de_ids<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<serde_bytes::ByteArray<16>>, D::Error> {
    d.deserialize_seq(CappedSeq::<serde_bytes::ByteArray<16>>::new(MAX_BATCH_IDS, "ids"))
}

fn de_items<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Option<serde_bytes::ByteBuf>>, D::Error> {
    d.deserialize_seq(CappedSeq::<Option<serde_bytes::ByteBuf>>::new(MAX_BATCH_IDS, "items"))
}

fn de_resources<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Resource>, D::Error> {
    d.deserialize_seq(CappedSeq::<Resource>::new(MAX_RESOURCES, "resources"))
}

/// Reads an array of at most `max` elements, failing as soon as one more
/// appears and never reserving room for more than `max`, whatever length
/// the CBOR header claims.
pub(crate) struct CappedSeq<T> {
    max: usize,
    what: &'static str,
    item: PhantomData<T>,
}

impl<T> CappedSeq<T> {
    pub(crate) fn new(max: usize, what: &'static str) -> Self {
        CappedSeq { max, what, item: PhantomData }
    }
}

impl<'de, T: Deserialize<'de>> Visitor<'de> for CappedSeq<T> {
    type Value = Vec<T>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "an array of at most {} {}", self.max, self.what)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(self.max));
        while let Some(item) = seq.next_element()? {
            if out.len() == self.max {
                return Err(de::Error::custom(format!("more than {} {}", self.max, self.what)));
            }
            out.push(item);
        }
        Ok(out)
    }
}
