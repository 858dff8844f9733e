//! Object requests over long-lived streams.
//!
//! libp2p's request-response opens a new yamux substream and negotiates its
//! protocol for every request (0.3-0.5 ms here); a chunked transfer and a
//! small remote `get` pay that on every round trip. Instead, each node keeps
//! a pool of open streams per peer on [`OBJECT_PROTOCOL`] (through
//! `libp2p-stream`) and runs one request after another on each: a request
//! frame out, a response frame back, with manta's framing and caps
//! (`codec`: a 4-byte length prefix, then the versioned CBOR envelope).
//! Several requests to one peer run at once on separate streams.
//!
//! Server side: every accepted stream gets a task that answers requests in
//! order until the stream ends. A malformed, wrong-version or out-of-range
//! request gets an `Invalid` reply and the stream goes on; an oversized one
//! (whose body is never read, so the stream cannot be resynchronised) or a
//! truncated one gets an `Invalid` reply and the stream is closed. The
//! server runs under `guard`'s bounds: at most
//! `MAX_OBJECT_STREAMS_PER_PEER` streams per peer (more are reset), a
//! request must arrive within the frame deadline once begun and the next
//! within the idle timeout, a reply must be written within the frame
//! deadline, and a chunk reply (or a batch of small objects) over one step
//! is built only once the bytes asked for are charged to the peer's budget
//! (else, by the deadline, `Busy`, and nothing is built): what a peer that
//! never reads its replies makes the node hold is within its budget (20
//! MiB, 96 MiB for all peers; the node's `p2p_reply_bytes_held` gauge and
//! its peak show it). What was charged beyond the reply built is given
//! back at once; the rest when the reply is written (or dropped).
//!
//! Invariants: a stream goes back to the pool only after a complete
//! request/response exchange (so it is never mid-frame); a call that fails
//! on a pooled stream (the peer may have closed it while idle) is retried
//! once on a fresh stream; at most `MAX_CALLS_PER_PEER` calls to one peer
//! are in flight (later ones wait their turn, none is dropped); every call
//! is bounded by the request timeout once it has its turn.

use super::bulk::Lane;
use super::guard::{self, Guarded, Limits, StreamCap, MAX_OBJECT_STREAMS_PER_PEER};
use super::lane::LaneService;
use super::vouch::Vouchers;
use super::{timeline, ObjectHooks, Streams};
use crate::probe::{self, Stage};
use crate::stats::{HeldReply, Traffic};
use crate::sync::lock_unpoisoned;
use crate::wire::codec::{self, object_protocol, Incoming, ObjectCodec, OBJECT_PROTOCOL};
use crate::wire::{self, chunk, Request, Response, WireError};
use futures::{AsyncWriteExt, StreamExt};
use libp2p::request_response::Codec;
use libp2p::PeerId;
use libp2p::Stream;
use libp2p_stream::OpenStreamError;
use manta::backend::{Served, Transfer};
use manta::{ObjectId, Runtime, TransferDirection, TransferLane};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Semaphore;
use tracing::Instrument;

/// Largest window served inline on the async thread (bigger ones, and
/// objects not in memory, are served with `block_in_place`).
const INLINE_SERVE_BYTES: usize = 256 << 10;

/// Largest object served in a batch of small ones (`answer_small`).
const SMALL_OBJECT_BYTES: usize = 64 << 10;

/// Most object bytes in one reply to a batch of small objects.
const SMALL_REPLY_BYTES: usize = 1 << 20;

/// How long a request for a pending object waits for it on the server
/// before the answer is `Busy` (and the requester asks again).
const PENDING_WAIT: Duration = Duration::from_secs(1);

/// Bytes `buf[start..]`: a chunk's data, left where it was read.
pub(crate) struct ChunkBytes {
    pub(crate) buf: Vec<u8>,
    pub(crate) start: usize,
}

impl ChunkBytes {
    /// The chunk's data.
    pub(crate) fn bytes(&self) -> &[u8] {
        self.buf.get(self.start..).unwrap_or_default()
    }
}

/// A reply as the client sees it: chunk data is not copied out of its frame.
pub(crate) enum Reply {
    /// A chunk of an object of `total` bytes, from `offset`.
    Chunk { total: u64, offset: u64, data: ChunkBytes },
    /// Any other response.
    Other(Response),
}

/// Fresh streams tried per call (see `Pool::call`).
const OPEN_ATTEMPTS: u32 = 5;

/// Why a request got no response.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CallError {
    /// No stream could be opened (no connection, or no such protocol).
    #[error("{0}")]
    Open(#[source] OpenStreamError),
    /// Opening a stream took longer than the request timeout.
    #[error("no stream within {0:?}")]
    OpenTimeout(Duration),
    /// The stream broke (reset, closed, or a reply that does not decode).
    #[error("stream failed: {0}")]
    Stream(#[source] std::io::Error),
    /// No response within the request timeout: the peer is stuck or gone.
    #[error("no response within {0:?}")]
    Timeout(Duration),
}

/// Idle streams kept per peer.
const MAX_IDLE: usize = 16;

/// Calls in flight per peer, each on a stream of its own; later calls
/// wait for a turn (so a burst reuses pooled streams instead of opening
/// hundreds at once, which the peer's stream acceptor would drop).
const MAX_CALLS_PER_PEER: usize = MAX_IDLE;

/// Peers whose call permits are kept before idle ones are dropped.
const MAX_PERMIT_PEERS: usize = 1024;

/// The client side: a pool of open streams per peer.
pub(crate) struct Pool {
    streams: Arc<dyn Streams>,
    idle: Mutex<HashMap<PeerId, Vec<Stream>>>,
    /// Each peer's turns ([`MAX_CALLS_PER_PEER`] at once).
    turns: Mutex<HashMap<PeerId, Arc<Semaphore>>>,
    timeout: Duration,
}

impl Pool {
    /// A pool opening its streams through `streams`; every call is bounded
    /// by `timeout`.
    pub(crate) fn new(streams: Arc<dyn Streams>, timeout: Duration) -> Pool {
        Pool { streams, idle: Mutex::new(HashMap::new()), turns: Mutex::new(HashMap::new()), timeout }
    }

    /// The timeout of one call.
    pub(crate) fn timeout(&self) -> Duration {
        self.timeout
    }

    /// `peer`'s turns.
    fn turns(&self, peer: PeerId) -> Arc<Semaphore> {
        let mut turns = lock_unpoisoned(&self.turns);
        if turns.len() >= MAX_PERMIT_PEERS {
            turns.retain(|_, t| t.available_permits() < MAX_CALLS_PER_PEER);
        }
        turns.entry(peer).or_insert_with(|| Arc::new(Semaphore::new(MAX_CALLS_PER_PEER))).clone()
    }

    fn take(&self, peer: PeerId) -> Option<Stream> {
        lock_unpoisoned(&self.idle).get_mut(&peer)?.pop()
    }

    fn give_back(&self, peer: PeerId, s: Stream) {
        let mut idle = lock_unpoisoned(&self.idle);
        let v = idle.entry(peer).or_default();
        if v.len() < MAX_IDLE {
            v.push(s);
        }
    }

    /// Sends one request and waits for its response. The error says why
    /// (unreachable, timed out, stream failed). Waits for a turn first
    /// when [`MAX_CALLS_PER_PEER`] calls to `peer` are in flight (each of
    /// those is bounded by the timeout, so the wait is too).
    pub(crate) async fn call(&self, peer: PeerId, req: &Request) -> Result<Reply, CallError> {
        let _turn = self.turns(peer).acquire_owned().await.ok(); // (never closed)
        if let Some(s) = self.take(peer) {
            if let Ok(resp) = self.exchange(peer, s, req).await {
                return Ok(resp);
            }
            // The pooled stream was stale: try once more on a fresh one.
        }
        // libp2p-stream hands inbound streams to the accepting task through
        // a one-slot channel and drops (resets) a new stream that finds it
        // full: under load a fresh stream can fail at once. That is its
        // back-pressure, so try again, a few times, after a short pause.
        let mut last = CallError::Timeout(self.timeout);
        for attempt in 0..OPEN_ATTEMPTS {
            if attempt > 0 {
                tokio::time::sleep(Duration::from_millis(1 << attempt)).await;
            }
            let open = self.streams.open(peer, object_protocol());
            let s = match tokio::time::timeout(self.timeout, open).await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => return Err(CallError::Open(e)), // no connection, or no such protocol
                Err(_) => return Err(CallError::OpenTimeout(self.timeout)),
            };
            match self.exchange(peer, s, req).await {
                Ok(resp) => return Ok(resp),
                Err(e @ CallError::Timeout(_)) => return Err(e),
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    async fn exchange(&self, peer: PeerId, mut s: Stream, req: &Request) -> Result<Reply, CallError> {
        let proto = object_protocol();
        let io = async {
            let mut codec = ObjectCodec;
            codec.write_request(&proto, &mut s, Incoming::Valid(req.clone())).await?;
            s.flush().await?;
            probe::mark(Stage::GetSent);
            let body = codec::read_response_frame(&mut s).await?;
            probe::mark(Stage::GetReplyRead);
            Ok::<_, std::io::Error>(match chunk::split_chunk(&body) {
                Some((total, offset, start)) => Reply::Chunk { total, offset, data: ChunkBytes { buf: body, start } },
                None => match wire::decode_response(&body).map_err(codec::invalid_data)? {
                    Response::Chunk { total, offset, data } => {
                        Reply::Chunk { total, offset, data: ChunkBytes { buf: data, start: 0 } }
                    }
                    other => Reply::Other(other),
                },
            })
        };
        match tokio::time::timeout(self.timeout, io).await {
            Ok(Ok(resp)) => {
                self.give_back(peer, s);
                Ok(resp)
            }
            Ok(Err(e)) => Err(CallError::Stream(e)),
            Err(_) => Err(CallError::Timeout(self.timeout)),
        }
    }
}

/// What the object server needs: the node's runtime (whose objects it
/// serves), its bulk lane (for tickets), and the hooks to the layers above.
#[derive(Clone)]
pub(crate) struct ObjectServer {
    /// The runtime whose objects are served.
    pub(crate) rt: Runtime,
    /// The node's bulk lane, if it is on and bound.
    pub(crate) lane: Option<Arc<Lane>>,
    /// What a peer's read tells the layers above.
    pub(crate) hooks: Arc<dyn ObjectHooks>,
    /// The node's traffic counters (transfers out are counted here).
    pub(crate) traffic: Arc<crate::stats::Traffic>,
    /// The node's vouchers (`Request::Vouch`), and what it refused.
    pub(crate) vouchers: Arc<Vouchers>,
}

/// Accepts object streams and answers them until the stream control is
/// dropped (the node stops).
pub(crate) async fn serve(streams: Arc<dyn Streams>, server: ObjectServer) {
    let mut incoming = match streams.accept(object_protocol()) {
        Ok(i) => i,
        Err(e) => {
            tracing::error!(error = %e, "cannot accept {OBJECT_PROTOCOL} streams");
            return;
        }
    };
    let limits = streams.limits().clone();
    let cap = StreamCap::new(MAX_OBJECT_STREAMS_PER_PEER);
    while let Some((peer, stream)) = incoming.next().await {
        match cap.admit(peer) {
            Some(admitted) => {
                tokio::spawn(serve_stream(peer, stream, server.clone(), limits.clone(), admitted));
            }
            None => tracing::debug!(%peer, "too many object streams from one peer: one reset"),
        }
    }
}

/// Answers the requests of one stream, in order, until it ends (or breaks
/// a bound); `_admitted` holds its place under the per-peer cap.
async fn serve_stream(peer: PeerId, mut s: Stream, server: ObjectServer, limits: Limits, _admitted: guard::Admitted) {
    let mut codec = ObjectCodec;
    loop {
        let req = match guard::read_guarded(&mut s, wire::MAX_REQUEST_BYTES, peer, &limits).await {
            // Requests fit in one step: nothing is charged for them.
            Ok(Guarded::Frame(frame, _)) => codec::request_of(frame),
            Ok(Guarded::Idle) => {
                tracing::debug!(%peer, "object stream idle: closed");
                let _ = tokio::time::timeout(limits.frame, s.close()).await;
                return;
            }
            Ok(bound @ (Guarded::Late | Guarded::NoBudget)) => {
                tracing::debug!(%peer, ?bound, "object request not read in time: stream closed");
                return;
            }
            Err(e) => {
                tracing::debug!(%peer, error = %e, "object stream failed");
                return;
            }
        };
        probe::mark(Stage::GetServerRead);
        let mut hold = Hold::new(peer, &limits, &server.traffic);
        let backend = server.rt.backend();
        // Objects served by this reply, for the timeline while it records.
        let start = backend.timeline_on().then(|| backend.timeline_now());
        let mut sent: Vec<(ObjectId, u64, TransferLane)> = Vec::new();
        // Chunk and small-object replies are charged before they are built
        // (`answer_fetch`, `reserve`): what a peer that never reads makes
        // this node hold stays within its budget.
        let (resp, close) = match req {
            Incoming::Valid(Request::Fetch { id, offset, len }) => {
                let object = ObjectId::from_bytes(id);
                let span = tracing::trace_span!("manta_p2p.serve_chunk", %peer, %object, offset, len);
                let answer = server.answer_fetch(object, offset, len, &mut hold);
                let resp = answer.instrument(span.clone()).await;
                span.in_scope(|| {
                    tracing::trace!(reply = reply_kind(&resp), bytes = reply_bytes(&resp), "chunk request answered")
                });
                if let (Some(_), Response::Chunk { data, .. }) = (start, &resp) {
                    sent.push((ObjectId::from_bytes(id), data.len() as u64, TransferLane::Chunks));
                }
                (resp, false)
            }
            Incoming::Valid(Request::Bulk { id, offset }) => {
                let object = ObjectId::from_bytes(id);
                let resp = server.answer_bulk(peer, object, offset);
                tracing::trace!(%peer, %object, offset, reply = reply_kind(&resp), "bulk lane ticket asked");
                (resp, false)
            }
            Incoming::Valid(Request::FetchSmall { ids }) => {
                let most = ids.len().saturating_mul(SMALL_OBJECT_BYTES).min(SMALL_REPLY_BYTES);
                let resp = if hold.reserve(most).await {
                    Response::Objects { items: server.answer_small(peer, &ids, most) }
                } else {
                    Response::Busy
                };
                hold.built(&resp);
                if let (Some(_), Response::Objects { items }) = (start, &resp) {
                    let served = ids.iter().zip(items).filter_map(|(id, b)| Some((**id, b.as_ref()?.len() as u64)));
                    sent.extend(served.map(|(id, n)| (ObjectId::from_bytes(id), n, TransferLane::Small)));
                }
                (resp, false)
            }
            Incoming::Valid(Request::Timeline { upto, skip }) => {
                let resp = if server.hooks.may_read_timeline(peer) {
                    tokio::task::block_in_place(|| timeline::answer(&server.rt, upto, skip))
                } else {
                    tracing::debug!(%peer, "timeline asked by a peer that is not a member: refused");
                    Response::Invalid { reason: "the timeline is only for members of this cluster".into() }
                };
                (charged(resp, &mut hold).await, false)
            }
            Incoming::Valid(Request::Vouch { ids }) => {
                // A digest encodes the whole object: off the async thread.
                let vouchers = server.vouchers.clone();
                let answer = tokio::task::spawn_blocking(move || vouchers.answer(&ids)).await;
                let resp = answer.unwrap_or_else(|_| Response::failed("vouching failed"));
                (charged(resp, &mut hold).await, false)
            }
            Incoming::Invalid(WireError::Truncated) => {
                // The peer closed its side (between requests, or in the
                // middle of one): nobody is left to answer.
                tracing::debug!(%peer, "object stream ended");
                return;
            }
            Incoming::Invalid(e) => {
                // One WARN per peer; the rest are counted (a log flood otherwise).
                if limits.rejections.warn_first(peer) {
                    tracing::warn!(%peer, error = %e, "invalid object request (later ones from this peer: debug)");
                } else {
                    tracing::debug!(%peer, error = %e, "invalid object request");
                }
                let close = matches!(e, WireError::TooLarge { .. });
                (Response::Invalid { reason: e.to_string() }, close)
            }
        };
        probe::mark(Stage::GetServerAnswered);
        if hold.counted.is_none() {
            hold.built(&resp);
        }
        count_out(&server.traffic, &resp);
        let written = tokio::time::timeout(limits.frame, write_response(&mut s, &mut codec, resp)).await;
        probe::mark(Stage::GetServerWrote);
        drop(hold);
        if let (Some(start), true) = (start, matches!(written, Ok(Ok(())))) {
            let peer: Arc<str> = Arc::from(peer.to_string());
            for (id, bytes, lane) in sent {
                let (peer, direction) = (peer.clone(), TransferDirection::Out);
                backend.record_transfer(Transfer { id, bytes, peer, direction, lane, start });
            }
        }
        if !matches!(written, Ok(Ok(()))) || close {
            let _ = tokio::time::timeout(limits.frame, s.close()).await;
            return;
        }
    }
}

/// Counts the objects and bytes `resp` serves: an object's first chunk
/// starts a transfer out, a batch of small objects is one per object.
fn count_out(traffic: &crate::stats::Traffic, resp: &Response) {
    match resp {
        Response::Chunk { offset, data, .. } => {
            if *offset == 0 {
                traffic.transfer_out();
            }
            traffic.sent_bytes(data.len() as u64);
        }
        Response::Objects { items } => {
            for b in items.iter().flatten() {
                traffic.transfer_out();
                traffic.sent_bytes(b.len() as u64);
            }
        }
        _ => {}
    }
}

/// A reply's kind, for trace lines.
fn reply_kind(resp: &Response) -> &'static str {
    match resp {
        Response::Chunk { .. } => "chunk",
        Response::Ticket { .. } => "ticket",
        Response::NotFound => "not found",
        Response::Busy => "busy",
        Response::Failed { .. } => "failed",
        Response::Invalid { .. } => "invalid",
        _ => "other",
    }
}

/// The bytes of data a reply holds (its object bytes, page or vouchers).
fn reply_bytes(resp: &Response) -> usize {
    match resp {
        Response::Chunk { data, .. } => data.len(),
        Response::Objects { items } => items.iter().flatten().map(|b| b.len()).sum(),
        Response::Timeline { page } => page.len(),
        Response::Vouchers { items } => items.iter().flatten().map(|b| b.len()).sum(),
        _ => 0,
    }
}

/// What a reply being built holds until it is written (or dropped): its
/// bytes charged to the peer's budget, and counted in the node's gauge of
/// reply bytes held from the moment they are built.
struct Hold<'a> {
    peer: PeerId,
    limits: &'a Limits,
    traffic: &'a Arc<Traffic>,
    charge: Option<guard::Charge>,
    counted: Option<HeldReply>,
}

impl<'a> Hold<'a> {
    fn new(peer: PeerId, limits: &'a Limits, traffic: &'a Arc<Traffic>) -> Hold<'a> {
        Hold { peer, limits, traffic, charge: None, counted: None }
    }

    /// Charges `bytes` of a reply about to be built to the peer's budget
    /// (in place of what was charged before), waiting at most the frame
    /// deadline; false if they did not fit by then (answer `Busy`, build
    /// nothing). A reply of one step or less is not charged.
    async fn reserve(&mut self, bytes: usize) -> bool {
        self.charge = None;
        if bytes <= codec::STEP_BYTES {
            return true;
        }
        let deadline = tokio::time::Instant::now() + self.limits.frame;
        self.charge = self.limits.budget.charge(self.peer, bytes, deadline).await;
        self.charge.is_some()
    }

    /// `resp` was built: its bytes are counted as held (in place of what
    /// was counted before), and what was charged beyond them is given back.
    fn built(&mut self, resp: &Response) {
        let bytes = reply_bytes(resp);
        self.counted = (bytes > 0).then(|| self.traffic.hold_reply(bytes));
        match &mut self.charge {
            Some(c) if bytes > 0 => c.shrink(bytes),
            _ => self.charge = None,
        }
    }
}

/// A large reply that was built before it could be charged (a timeline
/// page, vouchers: both small or for members only; counted as held from
/// then) is written only once its bytes are charged to the peer's budget
/// (held until written); by the frame deadline it is dropped instead, and
/// the answer is `Busy`.
async fn charged(resp: Response, hold: &mut Hold<'_>) -> Response {
    hold.built(&resp);
    if hold.reserve(reply_bytes(&resp)).await {
        resp
    } else {
        hold.counted = None;
        Response::Busy
    }
}

impl ObjectServer {
    /// Answers a chunk request: the chunk, or `NotFound`, or `Busy` if the
    /// object's task is still running after a bounded wait, or if the
    /// peer's budget has no room for the chunk by the frame deadline. A
    /// window over one step is copied only once its bytes are charged
    /// (`hold`, until the reply is written), so the chunks a peer makes
    /// this node build stay within its budget.
    async fn answer_fetch(&self, id: ObjectId, offset: u64, len: u32, hold: &mut Hold<'_>) -> Response {
        let held = self.hooks.serve_as(id, hold.peer);
        // Encoding a window (or restoring a spilled object) blocks.
        let mut resp = self.serve_charged(held, offset, len, hold).await;
        let ours = matches!(resp, Some(Response::NotFound)) && self.hooks.prefetch(id);
        if ours {
            // One of our task results, not here yet: fetch it from its
            // executor (or fill it), then serve it.
            resp = None;
        }
        if resp.is_none() {
            // Its task is still running: wait (bounded) for it, then
            // answer, or say `Busy` so the requester asks again.
            let _ = tokio::time::timeout(PENDING_WAIT, self.rt.backend().object_done(held)).await;
            resp = self.serve_charged(held, offset, len, hold).await;
            if ours && matches!(resp, Some(Response::NotFound)) {
                // Still on its way here (run again after its node died,
                // or still being fetched): not lost, so `Busy`.
                resp = None;
            }
        }
        resp.unwrap_or(Response::Busy)
    }

    /// One window of `held` (as `serve_fetch`), built only once the peer's
    /// budget holds its bytes if it may be over one step: the budget is
    /// charged for the window asked (at most a chunk) before the copy, and
    /// `Busy` answers if it has no room by the frame deadline. An object
    /// not done when looked at (pending, missing, failed: no copy is made
    /// then) is asked for one step at most, so if it is done meanwhile no
    /// more than a step is built uncharged; it is then charged and served.
    async fn serve_charged(&self, held: ObjectId, offset: u64, len: u32, hold: &mut Hold<'_>) -> Option<Response> {
        let want = (len as usize).min(wire::CHUNK_BYTES);
        if want > codec::STEP_BYTES {
            if !self.rt.backend().holds_object(held) {
                match serve_fetch(&self.rt, held, offset, codec::STEP_BYTES as u32) {
                    Some(Response::Chunk { .. }) => {} // done meanwhile
                    other => return other,
                }
            }
            if !hold.reserve(want).await {
                return Some(Response::Busy);
            }
        }
        let resp = serve_fetch(&self.rt, held, offset, len)?;
        hold.built(&resp);
        Some(resp)
    }

    /// Answers a batch of small-object requests (see `batch`): the whole
    /// encoding of each object held here, done, in memory and at most
    /// [`SMALL_OBJECT_BYTES`], within `budget` bytes in all; nothing for
    /// the others (the requester fetches those alone). Never waits: a
    /// pending object is left to the single fetch, which does.
    fn answer_small(
        &self,
        peer: PeerId,
        ids: &[serde_bytes::ByteArray<16>],
        budget: usize,
    ) -> Vec<Option<serde_bytes::ByteBuf>> {
        let backend = self.rt.backend();
        let mut budget = budget;
        ids.iter()
            .map(|id| {
                let id = ObjectId::from_bytes(**id);
                let held = self.hooks.serve_as(id, peer);
                if budget == 0 || !backend.object_in_memory(held) {
                    return None;
                }
                let small = backend.pin_object(held)?.stored_bytes().is_some_and(|b| b <= SMALL_OBJECT_BYTES);
                if !small {
                    return None;
                }
                match backend.serve_object(held, 0, SMALL_OBJECT_BYTES.min(budget)) {
                    Served::Chunk { total, data } if total == data.len() as u64 => {
                        budget -= data.len();
                        Some(serde_bytes::ByteBuf::from(data))
                    }
                    _ => None,
                }
            })
            .collect()
    }

    /// Answers `peer`'s bulk-lane ticket request.
    fn answer_bulk(&self, peer: PeerId, id: ObjectId, offset: u64) -> Response {
        match &self.lane {
            None => Response::Invalid { reason: "this node has no bulk lane".into() },
            Some(lane) => {
                let held = self.hooks.serve_as(id, peer);
                if self.rt.backend().holds_object(held) {
                    lane.issue(peer, held, offset)
                } else {
                    Response::NotFound
                }
            }
        }
    }
}

/// Object bytes in one lane `Got` at most: a frame, less room for the
/// envelope and the items' headers.
const LANE_REPLY_BYTES: usize = crate::wire::lane::MAX_FRAME_BYTES - 2048;

impl LaneService for ObjectServer {
    /// [`ObjectServer::answer_small`] within one lane frame, counted and
    /// recorded (while the timeline records) like a `FetchSmall`.
    fn get(&self, peer: PeerId, ids: &[serde_bytes::ByteArray<16>]) -> Vec<Option<serde_bytes::ByteBuf>> {
        let backend = self.rt.backend();
        let start = backend.timeline_on().then(|| backend.timeline_now());
        let items = self.answer_small(peer, ids, LANE_REPLY_BYTES);
        for b in items.iter().flatten() {
            self.traffic.transfer_out();
            self.traffic.sent_bytes(b.len() as u64);
        }
        if let Some(start) = start {
            let peer: Arc<str> = Arc::from(peer.to_string());
            for (id, b) in ids.iter().zip(&items) {
                let Some(b) = b else { continue };
                let (id, bytes, peer) = (ObjectId::from_bytes(**id), b.len() as u64, peer.clone());
                let (direction, lane) = (TransferDirection::Out, TransferLane::Small);
                backend.record_transfer(Transfer { id, bytes, peer, direction, lane, start });
            }
        }
        items
    }
}

/// Writes one response; chunk data is written as it is (no second copy).
async fn write_response(s: &mut Stream, codec: &mut ObjectCodec, resp: Response) -> std::io::Result<()> {
    match resp {
        Response::Chunk { total, offset, data } => {
            let prefix = chunk::chunk_prefix(total, offset, data.len());
            let len = prefix.len() + data.len();
            if len > wire::MAX_RESPONSE_BYTES {
                return Err(std::io::Error::new(std::io::ErrorKind::InvalidInput, "chunk over the cap"));
            }
            let head = [&(len as u32).to_be_bytes()[..], &prefix[..]].concat();
            if data.len() <= codec::JOIN_BELOW {
                // Small: one write, so one muxer frame and one send.
                s.write_all(&[head, data].concat()).await?;
            } else {
                s.write_all(&head).await?;
                s.write_all(&data).await?;
            }
        }
        other => codec.write_response(&object_protocol(), s, other).await?,
    }
    s.flush().await
}

/// Answers one chunk request; `None` while the object is pending. Small
/// in-memory windows are answered inline; a spilled object (disk) or a big
/// window may block for a while, so those run with `block_in_place`.
fn serve_fetch(rt: &Runtime, id: ObjectId, offset: u64, len: u32) -> Option<Response> {
    if rt.backend().object_in_memory(id) && len as usize <= INLINE_SERVE_BYTES {
        fetch(rt, id, offset, len)
    } else {
        tokio::task::block_in_place(|| fetch(rt, id, offset, len))
    }
}

/// Answers one chunk request (at most one chunk, whatever was asked: a
/// bigger reply would exceed the response cap).
fn fetch(rt: &Runtime, id: ObjectId, offset: u64, len: u32) -> Option<Response> {
    Some(match rt.backend().serve_object(id, offset, (len as usize).min(wire::CHUNK_BYTES)) {
        Served::Chunk { total, .. } if offset > total => {
            Response::Invalid { reason: format!("offset {offset} is past the end ({total} bytes)") }
        }
        Served::Chunk { total, data } => Response::Chunk { total, offset, data },
        Served::NotFound => Response::NotFound,
        // This holder's own trouble (an encoding that failed, a copy it
        // lost): untyped, so the reader asks the next holder. Anything
        // else is the object's value, an error its task ended with: typed.
        Served::Failed(
            e @ (manta::Error::ObjectLost { .. }
            | manta::Error::PeerUnreachable { .. }
            | manta::Error::Unverified { .. }),
        ) => Response::failed(e.to_string()),
        Served::Failed(e) => Response::failed_with(&e),
        Served::Pending => return None,
    })
}
