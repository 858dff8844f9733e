//! Framing on a stream: every manta-p2p message on a long-lived stream
//! (object requests and replies on [`OBJECT_PROTOCOL`], mail batches and
//! acks on the mail protocol) is one frame, a 4-byte big-endian length then
//! that many bytes of versioned CBOR (`envelope`, `mail`).
//!
//! [`ObjectCodec`] reads and writes the object protocol's frames; it
//! implements libp2p's `request_response::Codec` so that the same code
//! serves the node's streams (`transport::rpc`) and request-response
//! clients (tests, tools). `RawCodec` speaks the same protocol with raw
//! bytes, for tests that send arbitrary input to a node.
//!
//! Invariants:
//! - a frame's length is checked against its cap ([`MAX_REQUEST_BYTES`],
//!   [`MAX_RESPONSE_BYTES`], or the cap the caller passes) before its body
//!   is read or allocated; a body buffer is never larger than the cap;
//! - a bad inbound request is not a stream error: [`ObjectCodec::read_request`]
//!   returns [`Incoming::Invalid`] for an oversized, truncated, malformed or
//!   foreign-version request so the node can still answer
//!   [`Response::Invalid`]; only real I/O errors are `Err`;
//! - a bad response is an `io::Error` of kind `InvalidData`;
//! - writers refuse (`InvalidInput`) to send a message over its cap, so a
//!   peer never receives a frame it must reject for size;
//! - bytes after the frame are not read.

use crate::wire::{self, Request, Response, WireError, MAX_REQUEST_BYTES, MAX_RESPONSE_BYTES};
use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use libp2p::request_response::Codec;
use libp2p::StreamProtocol;
use std::io;

/// Protocol name of object transfer.
pub const OBJECT_PROTOCOL: &str = "/manta/object/1";

/// [`OBJECT_PROTOCOL`] as a [`StreamProtocol`], for
/// `request_response::Behaviour::new`.
pub fn object_protocol() -> StreamProtocol {
    StreamProtocol::new(OBJECT_PROTOCOL)
}

/// The codec's request type, used on both sides of a stream.
///
/// Clients send `Incoming::Valid(request)` (or `request.into()`); writing
/// `Incoming::Invalid` is an `io::Error` of kind `InvalidInput`. Servers
/// receive `Valid` for a well-formed request and `Invalid` with the reason
/// otherwise, and should answer the latter with
/// [`Response::Invalid`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Incoming {
    /// A well-formed request.
    Valid(Request),
    /// A request that could not be read: [`WireError::TooLarge`] (its body
    /// was not read), [`WireError::Truncated`] (the stream ended early), or a
    /// decoding error from [`wire::decode_request`].
    Invalid(WireError),
}

impl From<Request> for Incoming {
    fn from(req: Request) -> Self {
        Incoming::Valid(req)
    }
}

/// The object-transfer codec: [`Incoming`] requests, [`Response`] replies,
/// length-prefixed CBOR frames.
#[derive(Debug, Clone, Copy, Default)]
pub struct ObjectCodec;

/// A frame as read: its body, or why there is none.
pub(crate) enum Frame {
    Body(Vec<u8>),
    TooLarge(usize),
    Truncated,
}

/// Reads one frame of at most `max` body bytes. A length over `max` is
/// reported without reading further; an early end of stream is `Truncated`.
pub(crate) async fn read_frame<T: AsyncRead + Unpin>(io: &mut T, max: usize) -> io::Result<Frame> {
    let mut prefix = [0u8; 4];
    match io.read_exact(&mut prefix).await {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(Frame::Truncated),
        Err(e) => return Err(e),
    }
    let len = u32::from_be_bytes(prefix) as usize;
    if len > max {
        return Ok(Frame::TooLarge(len));
    }
    // (futures' `read_to_end` would zero the buffer piecewise as it grows:
    // one zeroed allocation of the exact size is cheaper.)
    let mut body = vec![0u8; len];
    match io.read_exact(&mut body).await {
        Ok(()) => Ok(Frame::Body(body)),
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(Frame::Truncated),
        Err(e) => Err(e),
    }
}

/// Reads a response frame: any failure is an `io::Error`.
pub(crate) async fn read_response_frame<T: AsyncRead + Unpin>(io: &mut T) -> io::Result<Vec<u8>> {
    match read_frame(io, MAX_RESPONSE_BYTES).await? {
        Frame::Body(body) => Ok(body),
        Frame::TooLarge(len) => Err(invalid_data(WireError::TooLarge { len, max: MAX_RESPONSE_BYTES })),
        Frame::Truncated => Err(io::Error::new(io::ErrorKind::UnexpectedEof, WireError::Truncated)),
    }
}

/// Writes `body` as one frame, refusing bodies over `max`.
pub(crate) async fn write_frame<T: AsyncWrite + Unpin>(io: &mut T, body: &[u8], max: usize) -> io::Result<()> {
    if body.len() > max {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, WireError::TooLarge { len: body.len(), max }));
    }
    // body.len() <= max, and both caps fit in a u32.
    let len = u32::try_from(body.len()).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    if body.len() <= JOIN_BELOW {
        // One write, so one muxer frame (and one socket write) per message.
        let mut joined = Vec::with_capacity(4 + body.len());
        push_frame(&mut joined, body);
        return io.write_all(&joined).await;
    }
    io.write_all(&len.to_be_bytes()).await?;
    io.write_all(body).await
}

/// Appends `body` as one frame (length prefix, then the bytes) to `out`;
/// the caller has checked it against its cap (so it fits a `u32`).
pub(crate) fn push_frame(out: &mut Vec<u8>, body: &[u8]) {
    out.extend_from_slice(&(body.len() as u32).to_be_bytes());
    out.extend_from_slice(body);
}

/// Bodies up to this size are written together with their length prefix:
/// each write on a muxed stream is its own yamux frame, Noise message and
/// socket send, so two writes per message cost a second send and wake-up
/// on the critical path (halving them took a remote task round trip from
/// about 300 µs to under 200 µs here). Larger bodies skip the copy.
pub(crate) const JOIN_BELOW: usize = 64 << 10;

pub(crate) fn invalid_data(e: WireError) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

impl Codec for ObjectCodec {
    type Protocol = StreamProtocol;
    type Request = Incoming;
    type Response = Response;

    /// Reads a request; malformed input is `Ok(Incoming::Invalid(..))`, only
    /// I/O failures are `Err`.
    async fn read_request<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Incoming>
    where
        T: AsyncRead + Unpin + Send,
    {
        Ok(match read_frame(io, MAX_REQUEST_BYTES).await? {
            Frame::TooLarge(len) => Incoming::Invalid(WireError::TooLarge { len, max: MAX_REQUEST_BYTES }),
            Frame::Truncated => Incoming::Invalid(WireError::Truncated),
            Frame::Body(body) => match wire::decode_request(&body) {
                Ok(req) => Incoming::Valid(req),
                Err(e) => Incoming::Invalid(e),
            },
        })
    }

    /// Reads a response; oversized, truncated or undecodable input is an
    /// `io::Error` (`InvalidData`, or `UnexpectedEof` if truncated).
    async fn read_response<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Response>
    where
        T: AsyncRead + Unpin + Send,
    {
        let body = read_response_frame(io).await?;
        wire::decode_response(&body).map_err(invalid_data)
    }

    /// Writes `Incoming::Valid`; `Incoming::Invalid` is an `InvalidInput`
    /// error.
    async fn write_request<T>(&mut self, _: &StreamProtocol, io: &mut T, req: Incoming) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        let Incoming::Valid(req) = req else {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "cannot send Incoming::Invalid"));
        };
        write_frame(io, &wire::encode_request(&req), MAX_REQUEST_BYTES).await
    }

    /// Writes a response; one over [`MAX_RESPONSE_BYTES`] is an
    /// `InvalidInput` error.
    async fn write_response<T>(&mut self, _: &StreamProtocol, io: &mut T, res: Response) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        write_frame(io, &wire::encode_response(&res), MAX_RESPONSE_BYTES).await
    }
}

/// Test codec on [`OBJECT_PROTOCOL`] with raw bytes: requests are written
/// exactly as given (no length prefix is added, so the caller supplies any
/// framing, valid or not); responses are read with the normal framing and
/// cap and returned undecoded. Its server side reads a request as all bytes
/// up to end of stream (at most `MAX_REQUEST_BYTES + 4`) and writes
/// responses as given.
#[cfg(any(test, feature = "fuzzing"))]
#[derive(Debug, Clone, Copy, Default)]
pub struct RawCodec;

#[cfg(any(test, feature = "fuzzing"))]
impl Codec for RawCodec {
    type Protocol = StreamProtocol;
    type Request = Vec<u8>;
    type Response = Vec<u8>;

    async fn read_request<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Vec<u8>>
    where
        T: AsyncRead + Unpin + Send,
    {
        let max = MAX_REQUEST_BYTES + 4;
        let mut out = Vec::new();
        io.take(max as u64 + 1).read_to_end(&mut out).await?;
        if out.len() > max {
            return Err(invalid_data(WireError::TooLarge { len: out.len(), max }));
        }
        Ok(out)
    }

    async fn read_response<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Vec<u8>>
    where
        T: AsyncRead + Unpin + Send,
    {
        read_response_frame(io).await
    }

    async fn write_request<T>(&mut self, _: &StreamProtocol, io: &mut T, req: Vec<u8>) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        io.write_all(&req).await
    }

    async fn write_response<T>(&mut self, _: &StreamProtocol, io: &mut T, res: Vec<u8>) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        io.write_all(&res).await
    }
}
