//! One message lane: a TCP connection to a peer beside libp2p, carrying
//! sealed frames (`wire::lane`) both ways, set up by `lanes`.
//!
//! Threads. Each lane has one blocking reader thread (started by `lanes`
//! when the connection is made) that opens each frame, decodes it and acts
//! on it at once: a `Get` is answered inline from the store
//! ([`LaneService::get`], which never waits) with a `Got` written by the
//! reader itself; a `Got` completes the call waiting under its tag, on the
//! reader thread (the caller's reply closure decodes and completes its
//! fetch there); a `Mail` batch is applied in order ([`LaneMail`], as the
//! libp2p inbox does: dedupe by seq, then the work layer, which never
//! blocks) and its ack written by the reader at once or, held for a batch
//! of ours to carry, after `ACK_DELAY` by a timer of the node's (on a
//! blocking thread); an `Ack`
//! goes to this node's outbox for the peer. Writers are whoever has
//! something to send (a caller's thread for a `Get`, the outbox's sender
//! task for `Mail`, the reader for `Got` and `Ack`), one at a time under
//! the writer lock; each write call is bounded by the write timeout
//! (`SO_SNDTIMEO`).
//!
//! Invariants:
//! - a write that fails or times out *poisons* the lane (a partial frame
//!   cannot be resumed): the socket is shut down both ways, so the reader
//!   ends, and nothing more is written on it;
//! - every call (a `Get` sent) has exactly one owner: its reply closure
//!   sits in the lane's tag table from before its frame is written until
//!   the reader takes it out and runs it once, with the items of the `Got`
//!   under its tag, or with `None` when the lane ends (any error, the peer's
//!   close, a call unanswered past the request timeout, the node's
//!   shutdown): the caller then falls back to libp2p. Once the lane has
//!   ended, no closure is accepted (`call` hands it back);
//! - at most [`MAX_CALLS`] calls are in flight per lane (beyond: `call`
//!   hands the closure back, the caller uses libp2p);
//! - the reader's memory is one buffer of two frames' worth (2 ×
//!   ([`MAX_FRAME_BYTES`] + header + tag)) whatever a peer sends: a length
//!   over the cap is refused before anything is read for it; a frame must arrive whole within the
//!   frame deadline once its first byte has; a lane with nothing in flight
//!   and nothing read for the idle timeout is closed;
//! - anything a peer sends that is not a well-formed, authentic, expected
//!   frame (a bad length, a bad tag, a message that does not decode, a
//!   `Got` for no call or with the wrong item count, a `Get` on a lane this
//!   side dialled, an ack that does not decode) ends the lane: no error
//!   reply, no panic. A mail batch that does not decode is answered
//!   `Ack{invalid}` like on libp2p, and the lane goes on;
//! - mail that arrives on a lane is applied in the order it arrives, at
//!   most once per seq (`mail_link::Seen`, shared with the libp2p inbox).

use super::mail_link::ACK_DELAY;
use crate::sync::lock_unpoisoned;
use crate::wire::lane::{self, LaneMsg, Opener, Sealer, HEADER_BYTES, MAX_FRAME_BYTES, TAG_BYTES};
use libp2p::PeerId;
use serde_bytes::{ByteArray, ByteBuf};
use std::collections::HashMap;
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Most calls in flight on one lane.
pub(crate) const MAX_CALLS: usize = 64;

/// What answers a peer's `Get` (the node's object server).
pub(crate) trait LaneService: Send + Sync + 'static {
    /// The whole encoding of each of `ids` held here, done, small and in
    /// memory, in order, within one frame in all; `None` for the others.
    /// Never waits.
    fn get(&self, peer: PeerId, ids: &[ByteArray<16>]) -> Vec<Option<ByteBuf>>;
}

/// What a lane's reader does with mail (the node's mail link,
/// `lane_mail`).
pub(crate) trait LaneMail: Send + Sync + 'static {
    /// Applies a batch from `peer` (its encoded envelope).
    fn on_batch(&self, peer: PeerId, bytes: &[u8]) -> MailStep;
    /// The acks held for `peer` (encoded), taken.
    fn held_acks(&self, peer: PeerId) -> Vec<Vec<u8>>;
    /// An ack from `peer` (encoded) for our outbox; `Err` if it does not
    /// decode.
    fn on_ack(&self, peer: PeerId, bytes: &[u8]) -> Result<(), String>;
}

/// What to do after a batch.
pub(crate) enum MailStep {
    /// Write these acks (encoded) now.
    Now(Vec<Vec<u8>>),
    /// An ack is held: what is still held is written after `ACK_DELAY`.
    Held,
    /// Nothing to answer.
    Skip,
    /// The node is going: end the lane.
    Stop,
}

/// What a call's caller does with its answer: the `Got`'s items, or `None`
/// if the lane ended first (run once, on the lane's reader thread or on
/// the thread that ends the lane).
pub(crate) type Reply = Box<dyn FnOnce(Option<Vec<Option<ByteBuf>>>) + Send>;

/// The bounds a lane runs under.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Timing {
    /// Longest a frame may take once its first byte has come; longest a
    /// call may wait for its answer; bound of each write call.
    pub(crate) frame: Duration,
    /// A lane with nothing in flight that read nothing this long is closed.
    pub(crate) idle: Duration,
}

impl Timing {
    /// How often the reader wakes to check deadlines while nothing comes.
    fn tick(&self) -> Duration {
        (self.frame.min(self.idle) / 4).max(Duration::from_millis(10))
    }
}

/// What a node's lanes carried (shared by its lanes).
#[derive(Debug, Default)]
pub(crate) struct Counters {
    /// Mail batches written on lanes.
    pub(crate) mail_sent: AtomicU64,
    /// Mail batches read from lanes.
    pub(crate) mail_received: AtomicU64,
}

/// A call waiting for its `Got`.
struct Pending {
    reply: Reply,
    items: usize,
    deadline: Instant,
}

/// The tag table.
#[derive(Default)]
struct Calls {
    next: u32,
    pending: HashMap<u32, Pending>,
    /// Set once the lane has ended: no call is accepted after.
    closed: bool,
}

/// The sending side: the socket and this direction's key.
struct Writer {
    stream: TcpStream,
    sealer: Sealer,
    buf: Vec<u8>,
}

/// Why a lane did not take a message.
#[derive(Debug, thiserror::Error)]
pub(crate) enum LaneDown {
    /// The lane has ended (or just did, on this write).
    #[error("the lane is closed")]
    Closed,
}

/// One lane, shared by its reader thread and its writers.
pub(crate) struct Conn {
    peer: PeerId,
    /// True on the side that dialled it.
    dialled: bool,
    writer: Mutex<Writer>,
    /// A handle on the socket, to shut it down from any thread.
    socket: TcpStream,
    poisoned: AtomicBool,
    /// Woken when the lane is poisoned (see [`Conn::ended`]).
    down: tokio::sync::Notify,
    /// A timer will write the held acks ([`Conn::flush_acks_later`]).
    ack_timer: AtomicBool,
    calls: Mutex<Calls>,
    timing: Timing,
    counters: Arc<Counters>,
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conn").field("peer", &self.peer).field("dialled", &self.dialled).finish()
    }
}

impl Conn {
    /// A lane on `stream` (hello already exchanged) under the keys of
    /// `root`; returns it and what its reader thread needs. Write calls are
    /// bounded by `timing.frame`.
    pub(crate) fn new(
        peer: PeerId,
        stream: TcpStream,
        root: &[u8; 32],
        dialled: bool,
        timing: Timing,
        counters: Arc<Counters>,
    ) -> std::io::Result<(Arc<Conn>, ReadSide)> {
        stream.set_nodelay(true)?;
        stream.set_write_timeout(Some(timing.frame))?;
        let (sealer, opener) = lane::lane_keys(root, dialled);
        let writer = Writer { stream: stream.try_clone()?, sealer, buf: Vec::with_capacity(256) };
        let socket = stream.try_clone()?;
        let conn = Arc::new(Conn {
            peer,
            dialled,
            writer: Mutex::new(writer),
            socket,
            poisoned: AtomicBool::new(false),
            down: tokio::sync::Notify::new(),
            ack_timer: AtomicBool::new(false),
            calls: Mutex::default(),
            timing,
            counters,
        });
        Ok((conn, ReadSide { stream, opener }))
    }

    /// The peer at the other end.
    pub(crate) fn peer(&self) -> PeerId {
        self.peer
    }

    /// True on the side that dialled the lane.
    pub(crate) fn dialled(&self) -> bool {
        self.dialled
    }

    /// True once the lane is poisoned or ended.
    pub(crate) fn is_down(&self) -> bool {
        self.poisoned.load(Ordering::Acquire)
    }

    /// Ends the lane: nothing more is written, the reader ends (and hands
    /// every call in flight back to its caller).
    pub(crate) fn poison(&self) {
        if !self.poisoned.swap(true, Ordering::AcqRel) {
            let _ = self.socket.shutdown(Shutdown::Both);
            self.down.notify_waiters();
        }
    }

    /// Resolves once the lane is poisoned or ended.
    pub(crate) async fn ended(&self) {
        let notified = self.down.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        if self.is_down() {
            return;
        }
        notified.await;
    }

    /// Writes a mail batch (its encoded envelope) on the lane.
    pub(crate) fn send_mail(&self, bytes: &[u8]) -> Result<(), LaneDown> {
        self.send(&LaneMsg::Mail(ByteBuf::from(bytes.to_vec())))?;
        self.counters.mail_sent.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Writes the acks `mail` holds for the peer after `ACK_DELAY`, on a
    /// blocking thread of `handle` (a peer that stops reading can hold a
    /// write up to the write timeout: never on the async threads); at most
    /// one such timer per lane at a time.
    pub(crate) fn flush_acks_later(self: &Arc<Self>, mail: &Arc<dyn LaneMail>, handle: &tokio::runtime::Handle) {
        if self.ack_timer.swap(true, Ordering::AcqRel) {
            return;
        }
        let (conn, mail, h) = (self.clone(), mail.clone(), handle.clone());
        handle.spawn(async move {
            tokio::time::sleep(ACK_DELAY).await;
            // (Detached: the write is bounded by the write timeout.)
            drop(h.spawn_blocking(move || {
                conn.ack_timer.store(false, Ordering::Release);
                let acks = mail.held_acks(conn.peer);
                if !acks.is_empty() {
                    let _ = conn.send_acks(acks);
                }
            }));
        });
    }

    /// Writes encoded acks on the lane, one frame each.
    fn send_acks(&self, acks: Vec<Vec<u8>>) -> Result<(), LaneDown> {
        acks.into_iter().try_for_each(|a| self.send(&LaneMsg::Ack(ByteBuf::from(a))))
    }

    /// Seals and writes one message; a failed write poisons the lane.
    pub(crate) fn send(&self, msg: &LaneMsg) -> Result<(), LaneDown> {
        let plain = lane::encode_msg(msg);
        let mut w = lock_unpoisoned(&self.writer);
        if self.is_down() {
            return Err(LaneDown::Closed);
        }
        let Writer { stream, sealer, buf } = &mut *w;
        buf.clear();
        // Our own messages fit a frame (a `Get` of at most MAX_LANE_IDS
        // ids, a `Got` within the service's budget); a key used up ends
        // the lane like a failed write.
        let written = sealer.seal(&plain, buf).map_err(|_| ()).and_then(|()| stream.write_all(buf).map_err(|_| ()));
        if written.is_err() {
            drop(w);
            self.poison();
            return Err(LaneDown::Closed);
        }
        Ok(())
    }

    /// Sends a `Get` for `ids` (at most `MAX_LANE_IDS`) and gives `reply`
    /// to the tag table, where it waits for its `Got`; hands `reply` back
    /// if the lane has ended or has [`MAX_CALLS`] in flight.
    pub(crate) fn call(&self, ids: Vec<ByteArray<16>>, reply: Reply) -> Result<(), Reply> {
        let tag = {
            let mut calls = lock_unpoisoned(&self.calls);
            if calls.closed || calls.pending.len() >= MAX_CALLS || self.is_down() {
                return Err(reply);
            }
            let tag = calls.next;
            calls.next = calls.next.wrapping_add(1);
            let deadline = Instant::now() + self.timing.frame;
            calls.pending.insert(tag, Pending { reply, items: ids.len(), deadline });
            tag
        };
        // On failure the lane is poisoned and its reader hands the reply
        // back (it owns it now).
        let _ = self.send(&LaneMsg::Get { tag, ids });
        Ok(())
    }

    /// Closes the tag table and hands every call in flight back (`None`).
    fn end_calls(&self) {
        let pending: Vec<Pending> = {
            let mut calls = lock_unpoisoned(&self.calls);
            calls.closed = true;
            calls.pending.drain().map(|(_, p)| p).collect()
        };
        for p in pending {
            (p.reply)(None);
        }
    }

    /// The reply waiting under `tag` for `items` items, taken out.
    fn take_call(&self, tag: u32, items: usize) -> Result<Reply, String> {
        let p = lock_unpoisoned(&self.calls).pending.remove(&tag).ok_or_else(|| format!("a Got for tag {tag}"))?;
        if p.items != items {
            (p.reply)(None);
            return Err(format!("a Got of {items} items for a Get of {}", p.items));
        }
        Ok(p.reply)
    }

    /// True if some call waited past its deadline; whether any is waiting.
    fn overdue(&self, now: Instant) -> (bool, bool) {
        let calls = lock_unpoisoned(&self.calls);
        (calls.pending.values().any(|p| p.deadline <= now), !calls.pending.is_empty())
    }
}

/// What a lane's reader serves: peers' gets (on lanes peers dialled) and
/// mail (on every lane).
#[derive(Clone, Copy, Default)]
pub(crate) struct Serve<'a> {
    /// Answers `Get`s; without it a `Get` ends the lane.
    pub(crate) get: Option<&'a dyn LaneService>,
    /// Applies `Mail` and takes `Ack`s; without it either ends the lane.
    pub(crate) mail: Option<&'a dyn LaneMail>,
    /// Arms the timer that writes the acks still held after `ACK_DELAY`
    /// ([`Conn::flush_acks_later`]).
    pub(crate) arm_acks: Option<&'a dyn Fn()>,
}

/// What a lane's reader thread reads from.
pub(crate) struct ReadSide {
    stream: TcpStream,
    opener: Opener,
}

/// Why a reader ended (for the debug log; the lane ends either way).
#[derive(Debug, thiserror::Error)]
pub(crate) enum Ended {
    /// The peer closed the connection (or this side shut it down).
    #[error("closed")]
    Closed,
    /// Nothing in flight and nothing read for the idle timeout.
    #[error("idle")]
    Idle,
    /// A call got no answer within the request timeout.
    #[error("a call went unanswered")]
    Unanswered,
    /// A frame did not arrive whole in time.
    #[error("a frame took longer than {0:?}")]
    Late(Duration),
    /// Reading failed.
    #[error("read: {0}")]
    Io(std::io::Error),
    /// The peer sent something that is not an expected frame.
    #[error("refused: {0}")]
    Refused(String),
    /// Answering failed (the lane was poisoned by the write).
    #[error("a reply could not be written")]
    Write,
    /// `keep_going` said stop (the node is shutting down).
    #[error("the node stopped")]
    Stopped,
}

fn timed_out(e: &std::io::Error) -> bool {
    matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut)
}

/// A reader's input: bytes read ahead of the frame being parsed (up to
/// two frames' worth), and the socket's read timeout as last set (set
/// again only when it changes: one `read` per frame, not four syscalls).
struct Input {
    stream: TcpStream,
    buf: Vec<u8>,
    start: usize,
    end: usize,
    timeout: Option<Duration>,
}

impl Input {
    fn available(&self) -> usize {
        self.end - self.start
    }

    fn set_timeout(&mut self, t: Duration) -> Result<(), Ended> {
        let t = t.max(Duration::from_micros(50));
        if self.timeout != Some(t) {
            self.stream.set_read_timeout(Some(t)).map_err(Ended::Io)?;
            self.timeout = Some(t);
        }
        Ok(())
    }

    /// One `read` into the free space (after moving what is buffered to
    /// the front if the free space is short of `room`); `Ok(0)`: closed.
    fn fill(&mut self, room: usize) -> std::io::Result<usize> {
        if self.buf.len() - self.end < room {
            self.buf.copy_within(self.start..self.end, 0);
            (self.start, self.end) = (0, self.end - self.start);
        }
        let n = self.stream.read(&mut self.buf[self.end..])?;
        self.end += n;
        Ok(n)
    }

    /// Waits until `n` bytes (at most one frame) are buffered, by `deadline`.
    fn need(&mut self, n: usize, deadline: Instant, frame: Duration) -> Result<(), Ended> {
        while self.available() < n {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(Ended::Late(frame));
            }
            self.set_timeout(left)?;
            match self.fill(n - self.available()) {
                Ok(0) => return Err(Ended::Closed),
                Ok(_) => {}
                Err(e) if timed_out(&e) => return Err(Ended::Late(frame)),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(Ended::Io(e)),
            }
        }
        Ok(())
    }
}

/// Runs a lane's reader until the lane ends (see the module docs), then
/// poisons it and hands every call in flight back. `keep_going` is asked at
/// every wake-up (false: the node is going). Runs on the lane's own thread.
pub(crate) fn read_loop(conn: &Conn, side: ReadSide, serve: Serve<'_>, keep_going: &dyn Fn() -> bool) -> Ended {
    let ended = read_frames(conn, side, serve, keep_going);
    conn.poison();
    conn.end_calls();
    ended
}

fn read_frames(
    conn: &Conn,
    ReadSide { stream, mut opener }: ReadSide,
    serve: Serve<'_>,
    keep_going: &dyn Fn() -> bool,
) -> Ended {
    let timing = conn.timing;
    let frame_max = HEADER_BYTES + MAX_FRAME_BYTES + TAG_BYTES;
    let mut input = Input { stream, buf: vec![0u8; 2 * frame_max], start: 0, end: 0, timeout: None };
    let mut last_read = Instant::now();
    loop {
        if input.available() == 0 {
            // Wait for a frame's first byte, waking every tick for the
            // deadlines.
            (input.start, input.end) = (0, 0);
            if let Err(e) = input.set_timeout(timing.tick()) {
                return e;
            }
            match input.fill(frame_max) {
                Ok(0) => return Ended::Closed,
                Ok(_) => {}
                Err(e) if timed_out(&e) || e.kind() == ErrorKind::Interrupted => {
                    let now = Instant::now();
                    if conn.is_down() {
                        return Ended::Closed;
                    }
                    if !keep_going() {
                        return Ended::Stopped;
                    }
                    let (overdue, waiting) = conn.overdue(now);
                    if overdue {
                        return Ended::Unanswered;
                    }
                    if !waiting && now.duration_since(last_read) >= timing.idle {
                        return Ended::Idle;
                    }
                    continue;
                }
                Err(e) => return Ended::Io(e),
            }
        }
        // A frame has begun: it must be whole by the frame deadline.
        let deadline = Instant::now() + timing.frame;
        if let Err(e) = input.need(HEADER_BYTES, deadline, timing.frame) {
            return e;
        }
        let mut header = [0u8; HEADER_BYTES];
        header.copy_from_slice(&input.buf[input.start..input.start + HEADER_BYTES]);
        let len = match Opener::body_len(header) {
            Ok(len) => len,
            Err(e) => return Ended::Refused(e.to_string()),
        };
        let whole = HEADER_BYTES + len + TAG_BYTES;
        if let Err(e) = input.need(whole, deadline, timing.frame) {
            return e;
        }
        last_read = Instant::now();
        let at = input.start;
        input.start += whole;
        let body = &mut input.buf[at + HEADER_BYTES..at + whole];
        let msg = match opener.open(header, body).and_then(lane::decode_msg) {
            Ok(m) => m,
            Err(e) => return Ended::Refused(e.to_string()),
        };
        match msg {
            LaneMsg::Get { tag, ids } => {
                let Some(service) = serve.get else { return Ended::Refused("a Get on a lane that serves none".into()) };
                let items = service.get(conn.peer, &ids);
                if conn.send(&LaneMsg::Got { tag, items }).is_err() {
                    return Ended::Write;
                }
            }
            LaneMsg::Got { tag, items } => match conn.take_call(tag, items.len()) {
                Ok(reply) => reply(Some(items)),
                Err(why) => return Ended::Refused(why),
            },
            LaneMsg::Mail(batch) => {
                let Some(mail) = serve.mail else { return Ended::Refused("mail on a lane that takes none".into()) };
                conn.counters.mail_received.fetch_add(1, Ordering::Relaxed);
                match mail.on_batch(conn.peer, &batch) {
                    MailStep::Now(acks) => {
                        if conn.send_acks(acks).is_err() {
                            return Ended::Write;
                        }
                    }
                    // Written after `ACK_DELAY` by the node's timer (a 1 ms
                    // `SO_RCVTIMEO` on this thread waits 8 ms here, which
                    // stalled bursts), unless a batch of ours takes it.
                    MailStep::Held => {
                        if let Some(arm) = serve.arm_acks {
                            arm();
                        }
                    }
                    MailStep::Skip => {}
                    MailStep::Stop => return Ended::Stopped,
                }
            }
            LaneMsg::Ack(ack) => {
                let Some(mail) = serve.mail else { return Ended::Refused("an ack on a lane that takes none".into()) };
                if let Err(why) = mail.on_ack(conn.peer, &ack) {
                    return Ended::Refused(why);
                }
            }
        }
    }
}

#[cfg(test)]
#[path = "lane_tests.rs"]
mod tests;
