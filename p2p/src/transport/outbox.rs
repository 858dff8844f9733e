//! Ordered, batched delivery of [`Mail`] between nodes.
//!
//! Each node keeps one outbox per peer it sends to, drained by one sender
//! task that writes on one long-lived stream on `MAIL_PROTOCOL`:
//! everything queued since the last send goes out as one [`Batch`] (up to
//! [`MAX_BATCH_MAIL`] messages). So messages from one node to another are
//! applied in the order they were sent (actor calls per caller, borrow
//! before release), and a burst of submissions costs one frame per batch,
//! not per task.
//!
//! Acks. Every batch a node sends starts with its [`Mail::Seq`], and is
//! answered by one [`Ack`] naming that seq. Up to [`WINDOW`] batches may
//! be in flight, except that nothing follows a batch holding an actor call
//! or creation (a *fence*) until its ack is back, so a call refused as busy
//! (and put back at the front of the queue) is never overtaken by a later
//! call. A receiver answers a fence, a refusal or an invalid batch at once,
//! on the stream the batch came on. Any other ack is held: it rides
//! ([`Mail::Acked`]) on the receiver's next batch to that peer, or goes back
//! on the batch's stream after `ACK_DELAY`. So a request and its reply
//! carry each other's acks: two sends per remote round trip instead of
//! four. A batch without a seq (a client that is not a node) is answered
//! at once, with seq 0, which the sender matches to its oldest batch.
//!
//! The receiving side (reading, applying, answering, and recognising a
//! batch sent again) is `inbox`.
//!
//! The message lane (`lanes`, `lane_mail`): when the node has a lane up to
//! the peer, batches go there instead of on a libp2p stream, with the same
//! seqs, window, fences and acks (the acks come back through the lane's
//! reader). An outbox moves from a stream to the lane only for a lone
//! batch (nothing in flight, for order, and nothing queued behind it, so a
//! burst stays on its stream), and batches on the lane are cut at
//! [`LANE_BATCH_BYTES`] (and at most [`LANE_INFLIGHT_BYTES`] in flight
//! there); a message too big for that, or a burst (more queued than a
//! lane batch), waits until nothing is in flight and then goes on a
//! stream (a burst in big batches, as before the lane). When the lane fails (it ends, a
//! write fails, or an ack is late) it is poisoned and every batch in
//! flight is written again, in order, on a libp2p stream, exactly as when
//! a stream fails; the lane is asked for again later.
//!
//! Mail to different peers is not ordered; [`Outboxes::mark`] takes a
//! [`Marks`] of everything queued so far, which has *passed* once all of
//! it is acked or given up (the work layer sends a `Release` or a `Done`
//! only then, so it cannot overtake an earlier `Borrow` to another node).
//!
//! Invariants: a batch is handed back to the handler exactly once, either
//! with its ack or as undeliverable (after [`SEND_ATTEMPTS`] stream
//! failures in a row without an ack). When a stream fails, or the oldest
//! batch has no ack within the timeout, every batch in flight is written
//! again, in order, on a new stream. A receiver remembers the last
//! batches it applied from each peer (by seq, with their acks) and answers
//! one sent again with its first ack instead of applying it twice; senders
//! ignore acks of seqs no longer in flight; seqs start from the clock, so
//! an outbox made again for a peer does not reuse them. (Receivers also
//! still ignore duplicate submissions by result id.) An outbox is dropped
//! when its peer is forgotten, and its sender task then ends.

use super::lane;
use super::lane_mail::{LaneInbox, LANE_BATCH_BYTES, LANE_INFLIGHT_BYTES};
use super::lanes::Lanes;
use super::mail_link::{is_fence, protocol, AckEvent, LinkState, MailError, SEND_ATTEMPTS, WINDOW};
use super::{MailHandler, Streams};
use crate::probe::{self, Stage};
use crate::sync::lock_unpoisoned;
use crate::wire::codec::{read_frame, write_frame, Frame};
use crate::wire::lane::MAX_FRAME_BYTES;
use crate::wire::mail::{self, Ack, Batch, Mail, MAX_ACK_BYTES, MAX_BATCH_BYTES, MAX_BATCH_MAIL};
use futures::io::{ReadHalf, WriteHalf};
use futures::{AsyncReadExt, AsyncWriteExt};
use libp2p::{PeerId, Stream};
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;
use tokio::sync::{mpsc, Notify};
use tokio::time::Instant;

/// Soft cap on the encoded bytes of the messages of one batch.
const BATCH_SOFT_BYTES: usize = MAX_BATCH_BYTES / 2;

/// Most queued messages in one batch: its seq and riding acks take two of
/// the [`MAX_BATCH_MAIL`] a batch may hold.
const MAIL_PER_BATCH: usize = MAX_BATCH_MAIL - 2;

/// One peer's queue and its sender task's side of it.
struct Outbox {
    q: Mutex<VecDeque<Mail>>,
    notify: Notify,
    closed: std::sync::atomic::AtomicBool,
    /// Messages queued, and messages acknowledged (or given up), ever.
    counts: Mutex<(u64, u64)>,
    settled: std::sync::Condvar,
    /// No batch goes out before this (after the peer said it is busy).
    hold: Mutex<Option<Instant>>,
    /// Acks of this outbox's batches, to its sender task.
    acks: mpsc::UnboundedSender<AckEvent>,
    /// The next batch's seq (taken by the sender task and by direct sends).
    next_seq: std::sync::atomic::AtomicU64,
    /// The direct path onto the lane (`outbox_direct`); locked after `q`.
    direct: Mutex<direct::Direct>,
}

/// Every outbox of a node: the sending side of its mail links.
pub(crate) struct Outboxes {
    streams: Arc<dyn Streams>,
    handle: tokio::runtime::Handle,
    timeout: Duration,
    handler: Weak<dyn MailHandler>,
    map: Mutex<HashMap<PeerId, Arc<Outbox>>>,
    link: Arc<LinkState>,
    /// The node's message lanes, if on.
    lanes: Option<Arc<Lanes>>,
}

impl Outboxes {
    /// Outboxes that open streams through `streams`, run their sender tasks
    /// on `handle`, bound every network wait by `timeout`, and hand acks
    /// and undeliverable batches (and, once [`Outboxes::accept`] is called,
    /// received mail) to `handler`.
    pub(crate) fn new(
        streams: Arc<dyn Streams>,
        handle: tokio::runtime::Handle,
        timeout: Duration,
        handler: Weak<dyn MailHandler>,
        lanes: Option<Arc<Lanes>>,
    ) -> Self {
        Outboxes { streams, handle, timeout, handler, map: Mutex::default(), link: Arc::default(), lanes }
    }

    /// Starts the receiving side of the node's mail links (see `inbox`),
    /// on libp2p streams and on message lanes.
    pub(crate) fn accept(&self) {
        let serve = super::inbox::serve(self.streams.clone(), self.handler.clone(), self.link.clone());
        self.handle.spawn(serve);
        if let Some(lanes) = &self.lanes {
            lanes.set_mail(Arc::new(LaneInbox { handler: self.handler.clone(), link: self.link.clone() }));
        }
    }

    /// Queues `m` for `peer` (starting its sender task on first use).
    pub(crate) fn send(&self, peer: PeerId, m: Mail) {
        self.send_all(peer, std::iter::once(m))
    }

    /// Queues several messages for `peer`, in order.
    pub(crate) fn send_all(&self, peer: PeerId, ms: impl IntoIterator<Item = Mail>) {
        let ob = {
            let mut map = lock_unpoisoned(&self.map);
            map.entry(peer).or_insert_with(|| self.open_outbox(peer)).clone()
        };
        {
            let mut q = lock_unpoisoned(&ob.q);
            // With the lane open to direct sends and nothing queued, this
            // thread writes the batch itself (no hop to the sender task).
            let Some(ms) = direct::try_send(&ob, &q, ms, peer, &self.link) else { return };
            let before = q.len();
            q.extend(ms);
            lock_unpoisoned(&ob.counts).0 += (q.len() - before) as u64;
        }
        ob.notify.notify_one();
    }

    /// A new outbox for `peer`, with its sender task started.
    fn open_outbox(&self, peer: PeerId) -> Arc<Outbox> {
        let (tx, rx) = mpsc::unbounded_channel();
        let ob = Arc::new(Outbox {
            q: Mutex::new(VecDeque::new()),
            notify: Notify::new(),
            closed: false.into(),
            counts: Mutex::new((0, 0)),
            settled: std::sync::Condvar::new(),
            hold: Mutex::new(None),
            acks: tx,
            // Seqs start from the clock, so an outbox made again for the
            // same peer (after it was forgotten) never reuses one the peer
            // still remembers.
            next_seq: crate::wire::clock_seq().max(1).into(),
            direct: Mutex::default(),
        });
        let tap: Arc<dyn super::mail_link::AckTap> = ob.clone();
        self.link.route(peer, ob.acks.clone(), Arc::downgrade(&tap));
        let link = Link {
            peer,
            streams: self.streams.clone(),
            handler: self.handler.clone(),
            timeout: self.timeout,
            state: Arc::downgrade(&self.link),
            lanes: self.lanes.clone(),
        };
        self.handle.spawn(sender(link, ob.clone(), rx));
        ob
    }

    /// Puts `ms` back at the front of `peer`'s queue, in order, to go out
    /// again after `pause` and before anything queued since (the peer
    /// refused them as busy; resending keeps their order).
    pub(crate) fn retry_front(&self, peer: PeerId, ms: Vec<Mail>, pause: Duration) {
        let Some(ob) = lock_unpoisoned(&self.map).get(&peer).cloned() else { return };
        {
            let mut q = lock_unpoisoned(&ob.q);
            lock_unpoisoned(&ob.counts).0 += ms.len() as u64;
            for m in ms.into_iter().rev() {
                q.push_front(m);
            }
        }
        *lock_unpoisoned(&ob.hold) = Some(Instant::now() + pause);
        ob.notify.notify_one();
    }

    /// Blocks until everything queued so far has been acknowledged (so
    /// applied by its receiver) or given up, or `timeout` passes. True if
    /// it all settled.
    pub(crate) fn flush(&self, timeout: Duration) -> bool {
        let deadline = std::time::Instant::now() + timeout;
        let boxes: Vec<Arc<Outbox>> = lock_unpoisoned(&self.map).values().cloned().collect();
        for ob in boxes {
            let mut c = lock_unpoisoned(&ob.counts);
            let target = c.0;
            while c.1 < target {
                let left = deadline.saturating_duration_since(std::time::Instant::now());
                if left.is_zero() {
                    return false;
                }
                c = ob.settled.wait_timeout(c, left).unwrap_or_else(|p| p.into_inner()).0;
            }
        }
        true
    }

    /// A mark of everything queued so far for peers other than `except`
    /// (see [`Marks::passed`]).
    pub(crate) fn mark(&self, except: PeerId) -> Marks {
        let map = lock_unpoisoned(&self.map);
        let marks = map
            .iter()
            .filter(|(p, _)| **p != except)
            .filter_map(|(_, ob)| {
                let (queued, settled) = *lock_unpoisoned(&ob.counts);
                (settled < queued).then(|| (Arc::downgrade(ob), queued))
            })
            .collect();
        Marks(marks)
    }

    /// Drops `peer`'s outbox (it died): queued mail is handed back as
    /// undeliverable.
    pub(crate) fn forget(&self, peer: PeerId) {
        self.link.forget(peer);
        let Some(ob) = lock_unpoisoned(&self.map).remove(&peer) else { return };
        direct::close(&ob);
        ob.closed.store(true, std::sync::atomic::Ordering::Release);
        ob.notify.notify_one();
        let _ = ob.acks.send(AckEvent::Closed);
    }
}

/// How far each outbox had been filled at one moment: a message sent
/// once the marks have passed cannot overtake, at their receivers, any
/// message queued before them (mail to different peers travels on
/// different streams, so it is not ordered otherwise).
pub(crate) struct Marks(Vec<(Weak<Outbox>, u64)>);

impl Marks {
    /// True once every message queued before the marks were taken has
    /// been acknowledged (applied by its receiver) or given up; an outbox
    /// dropped since (its peer died) counts as passed.
    pub(crate) fn passed(&self) -> bool {
        self.0.iter().all(|(ob, queued)| {
            ob.upgrade().is_none_or(|ob| {
                ob.closed.load(std::sync::atomic::Ordering::Acquire) || lock_unpoisoned(&ob.counts).1 >= *queued
            })
        })
    }
}

/// What a sender needs besides its outbox.
struct Link {
    peer: PeerId,
    streams: Arc<dyn Streams>,
    handler: Weak<dyn MailHandler>,
    timeout: Duration,
    state: Weak<LinkState>,
    lanes: Option<Arc<Lanes>>,
}

impl Link {
    /// The lane this node dialled to the peer, if it is up (asked for in
    /// the background if not).
    fn lane(&self) -> Option<Arc<lane::Conn>> {
        self.lanes.as_ref()?.get(self.peer)
    }
}

async fn open(streams: &dyn Streams, peer: PeerId, timeout: Duration) -> Result<Stream, MailError> {
    let mut last = MailError::OpenTimeout(timeout);
    for attempt in 0..SEND_ATTEMPTS {
        if attempt > 0 {
            tokio::time::sleep(Duration::from_millis(2 << attempt)).await;
        }
        match tokio::time::timeout(timeout, streams.open(peer, protocol())).await {
            Ok(Ok(s)) => return Ok(s),
            Ok(Err(e)) => last = MailError::Open(Arc::new(e)),
            Err(_) => last = MailError::OpenTimeout(timeout),
        }
    }
    Err(last)
}

/// Takes the next batch off the queue (waiting for one), of about
/// `soft_bytes` at most; `None` once closed. Cancel-safe: a hold is
/// cleared only once it has passed, and nothing is taken off the queue
/// before the last await.
async fn next_batch(ob: &Outbox, soft_bytes: usize) -> Option<Vec<Mail>> {
    let hold = *lock_unpoisoned(&ob.hold);
    if let Some(until) = hold {
        tokio::time::sleep_until(until).await;
        let mut h = lock_unpoisoned(&ob.hold);
        if *h == Some(until) {
            *h = None;
        }
    }
    loop {
        {
            let mut q = lock_unpoisoned(&ob.q);
            if !q.is_empty() {
                // The sender sends now: no direct send until it reopens
                // the path (its batch must not be overtaken).
                lock_unpoisoned(&ob.direct).close();
                let mut batch = Vec::new();
                let mut bytes = 0;
                while let Some(m) = q.front() {
                    let size = mail_size(m);
                    if !batch.is_empty() && (batch.len() >= MAIL_PER_BATCH || bytes + size > soft_bytes) {
                        break;
                    }
                    bytes += size;
                    batch.extend(q.pop_front());
                }
                return Some(batch);
            }
        }
        if ob.closed.load(std::sync::atomic::Ordering::Acquire) {
            return None;
        }
        ob.notify.notified().await;
    }
}

/// The size of the message at the front of the queue (0 if none).
fn front_bytes(ob: &Outbox) -> usize {
    lock_unpoisoned(&ob.q).front().map_or(0, mail_size)
}

/// True if more than `limit` bytes of messages are queued (a burst).
fn queued_over(ob: &Outbox, limit: usize) -> bool {
    let q = lock_unpoisoned(&ob.q);
    let mut bytes = 0;
    q.iter().any(|m| {
        bytes += mail_size(m);
        bytes > limit
    })
}

/// A message's bytes, roughly (for batch sizing).
fn mail_size(m: &Mail) -> usize {
    64 + match m {
        Mail::Submit { args, .. } | Mail::NewActor { args, .. } | Mail::Call { args, .. } => args.len(),
        Mail::Done { outcome: mail::Completion::Inline(b), .. } => b.len(),
        Mail::Borrow(ids) | Mail::Release(ids) => 20 * ids.len(),
        _ => 0,
    }
}

/// Marks `submit` if `mail` holds a submission, `done` if a `Done`
/// (`probe`; nothing without its feature).
pub(super) fn probe_mail(mail: &[Mail], submit: Stage, done: Stage) {
    if !probe::ENABLED {
        return;
    }
    if mail.iter().any(|m| matches!(m, Mail::Submit { .. })) {
        probe::mark(submit);
    }
    if mail.iter().any(|m| matches!(m, Mail::Done { .. })) {
        probe::mark(done);
    }
}

/// A batch written and not yet acked.
struct InFlight {
    seq: u64,
    /// Written by the direct path (`outbox_direct`), not the sender task.
    direct: bool,
    mail: Vec<Mail>,
    /// Its encoding (with the acks that rode on it), to write again.
    bytes: Vec<u8>,
    fence: bool,
    sent: Instant,
}

/// Where a sender writes its batches: a libp2p mail stream (its write
/// half, and the task that reads acks from its other direction), or the
/// message lane this node dialled to the peer (acks come through the
/// lane's reader; a task reports the lane's end as a broken connection).
enum Conn {
    /// (`None` once retired.)
    Stream {
        w: Option<WriteHalf<Stream>>,
        reader: Option<tokio::task::JoinHandle<()>>,
    },
    Lane {
        lane: Arc<lane::Conn>,
        watcher: tokio::task::JoinHandle<()>,
    },
}

impl Conn {
    fn is_lane(&self) -> bool {
        matches!(self, Conn::Lane { .. })
    }

    /// Leaves a stream for the lane, with nothing in flight on it: its
    /// write side is closed, and its ack reader runs on until the peer
    /// closes its side. (The peer's ack writer for that stream takes the
    /// acks held for us when its timer fires, whichever way their batches
    /// came, so what it writes must still be read.)
    fn retire(mut self, timeout: Duration) {
        if let Conn::Stream { w, reader } = &mut self {
            drop(reader.take()); // detached, not aborted
            if let Some(mut w) = w.take() {
                tokio::spawn(async move {
                    let _ = tokio::time::timeout(timeout, w.close()).await;
                });
            }
        }
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        match self {
            Conn::Stream { reader, .. } => {
                if let Some(r) = reader {
                    r.abort();
                }
            }
            Conn::Lane { watcher, .. } => watcher.abort(),
        }
    }
}

/// A connection for connection number `gen`: the lane if `lane` and one
/// is up, else a new stream.
async fn connect(link: &Link, gen: u64, acks: &mpsc::UnboundedSender<AckEvent>, lane: bool) -> Result<Conn, MailError> {
    if let Some(lane) = lane.then(|| link.lane()).flatten() {
        let (l, tx) = (lane.clone(), acks.clone());
        let watcher = tokio::spawn(async move {
            l.ended().await;
            let _ = tx.send(AckEvent::Broken(gen, MailError::Closed));
        });
        return Ok(Conn::Lane { lane, watcher });
    }
    let (r, w) = open(link.streams.as_ref(), link.peer, link.timeout).await?.split();
    let reader = tokio::spawn(read_acks(r, acks.clone(), gen));
    Ok(Conn::Stream { w: Some(w), reader: Some(reader) })
}

async fn read_acks(mut r: ReadHalf<Stream>, tx: mpsc::UnboundedSender<AckEvent>, gen: u64) {
    loop {
        let ack = match read_frame(&mut r, MAX_ACK_BYTES).await {
            Ok(Frame::Body(b)) => mail::decode_ack(&b).map_err(MailError::BadAck),
            Ok(Frame::TooLarge(n)) => Err(MailError::AckTooLarge(n)),
            Ok(Frame::Truncated) => Err(MailError::Closed),
            Err(e) => Err(MailError::Stream(Arc::new(e))),
        };
        let event = match ack {
            Ok(a) => AckEvent::Ack(a),
            Err(e) => AckEvent::Broken(gen, e),
        };
        let end = matches!(event, AckEvent::Broken(..));
        if tx.send(event).is_err() || end {
            return;
        }
    }
}

/// Writes one batch. On a lane the write blocks this thread for at most
/// the lane's write timeout (batches there are small: see
/// [`LANE_BATCH_BYTES`]); a failed one poisons the lane.
async fn write_batch(c: &mut Conn, bytes: &[u8], timeout: Duration) -> Result<(), MailError> {
    let w = match c {
        Conn::Lane { lane, .. } => return lane.send_mail(bytes).map_err(|_| MailError::Closed),
        Conn::Stream { w: Some(w), .. } => w,
        Conn::Stream { w: None, .. } => return Err(MailError::Closed),
    };
    let io = async {
        write_frame(w, bytes, MAX_BATCH_BYTES).await?;
        w.flush().await
    };
    match tokio::time::timeout(timeout, io).await {
        Ok(r) => r.map_err(|e| MailError::Stream(Arc::new(e))),
        Err(_) => Err(MailError::WriteTimeout(timeout)),
    }
}

/// Counts `n` messages as settled (acked or given up).
fn settle(ob: &Outbox, n: usize) {
    lock_unpoisoned(&ob.counts).1 += n as u64;
    ob.settled.notify_all();
}

fn give_up(link: &Link, ob: &Outbox, mail: Vec<Mail>, why: MailError) {
    settle(ob, mail.len());
    if let Some(h) = link.handler.upgrade() {
        h.on_undeliverable(link.peer, mail, why);
    }
}

/// A sender's state.
struct Sending {
    conn: Option<Conn>,
    /// Number of the current stream (acks of older ones are stale).
    gen: u64,
    flight: VecDeque<InFlight>,
    /// Stream failures since the last ack.
    failures: u32,
}

impl Sending {
    /// After a stream failed: a new stream, with everything in flight
    /// written again in order; after [`SEND_ATTEMPTS`] failures in a row (no
    /// ack in between), or when no stream opens, all of it is undeliverable.
    async fn recover(&mut self, link: &Link, ob: &Outbox, acks: &mpsc::UnboundedSender<AckEvent>, mut why: MailError) {
        if let Some(Conn::Lane { lane, .. }) = &self.conn {
            // Late or failed on the lane: not used again (a new one is
            // asked for later); its batches go again on a stream.
            lane.poison();
        }
        loop {
            self.conn = None;
            self.failures += 1;
            if self.failures >= SEND_ATTEMPTS || self.flight.is_empty() {
                for f in self.flight.drain(..) {
                    give_up(link, ob, f.mail, why.clone());
                }
                self.failures = 0;
                return;
            }
            tokio::time::sleep(Duration::from_millis(5 << self.failures)).await;
            self.gen += 1;
            let mut c = match connect(link, self.gen, acks, false).await {
                Ok(c) => c,
                Err(e) => {
                    // Not even a stream: the peer is unreachable.
                    self.failures = SEND_ATTEMPTS;
                    why = e;
                    continue;
                }
            };
            let mut failed = None;
            for f in self.flight.iter_mut() {
                if let Err(e) = write_batch(&mut c, &f.bytes, link.timeout).await {
                    failed = Some(e);
                    break;
                }
                f.sent = Instant::now();
            }
            match failed {
                None => {
                    self.conn = Some(c);
                    return;
                }
                Some(e) => why = e,
            }
        }
    }

    /// Writes a new batch of `mail`, with the acks held for the peer riding
    /// on it.
    async fn send(&mut self, link: &Link, ob: &Outbox, acks: &mpsc::UnboundedSender<AckEvent>, mail: Vec<Mail>) {
        probe_mail(&mail, Stage::TaskTaken, Stage::DoneTaken);
        let seq = ob.next_seq.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        // Direct sends before this batch (closed now) are in flight first.
        self.absorb(ob);
        let riders = link.state.upgrade().map(|s| s.take_held(link.peer, MAX_BATCH_MAIL)).unwrap_or_default();
        let (bytes, mail) = encode_seq_batch(seq, riders, mail);
        let fence = is_fence(&mail);
        let fits = bytes.len() <= MAX_FRAME_BYTES - 1024;
        // A lone batch (nothing queued behind it) moves onto the lane; in
        // a burst the outbox stays where it is.
        let lone = fits && self.flight.is_empty() && lock_unpoisoned(&ob.q).is_empty();
        match self.conn.as_ref().map(Conn::is_lane) {
            // Onto the lane once it is up, with nothing in flight on the
            // stream (so nothing there can be applied after this).
            Some(false) if lone && link.lane().is_some() => {
                if let Some(c) = self.conn.take() {
                    c.retire(link.timeout);
                }
            }
            // Off it for a batch too big for a frame (a single message
            // waits until nothing is in flight: `sender`).
            Some(true) if !fits => {
                self.conn = None;
                if !self.flight.is_empty() {
                    // (Riding acks made it too big with batches in flight
                    // on the lane: those go again first, in order, on a
                    // stream, as after a failure.)
                    self.recover(link, ob, acks, MailError::Closed).await;
                }
            }
            _ => {}
        }
        if self.conn.is_none() {
            self.gen += 1;
            match connect(link, self.gen, acks, lone).await {
                Ok(c) => self.conn = Some(c),
                Err(e) => return give_up(link, ob, mail, e),
            }
        }
        let written = match self.conn.as_mut() {
            Some(c) => write_batch(c, &bytes, link.timeout).await,
            None => Err(MailError::Closed),
        };
        probe_mail(&mail, Stage::TaskWritten, Stage::DoneWritten);
        self.flight.push_back(InFlight { seq, mail, bytes, fence, direct: false, sent: Instant::now() });
        if let Err(e) = written {
            self.recover(link, ob, acks, e).await;
        }
    }

    /// Matches an ack to its batch (seq 0: the oldest) and hands both to
    /// the handler; acks of batches no longer in flight are ignored.
    fn on_ack(&mut self, link: &Link, ob: &Outbox, ack: Ack) {
        let at = match ack.seq {
            0 => (!self.flight.is_empty()).then_some(0),
            seq => self.flight.iter().position(|f| f.seq == seq),
        };
        let Some(f) = at.and_then(|i| self.flight.remove(i)) else { return };
        if f.direct {
            direct::settled(ob, f.seq);
        }
        self.failures = 0;
        settle(ob, f.mail.len());
        if let Some(h) = link.handler.upgrade() {
            h.on_ack(link.peer, f.mail, ack);
        }
    }
}

enum Event {
    Batch(Option<Vec<Mail>>),
    Ack(Option<AckEvent>),
    Timeout,
}

async fn sender(link: Link, ob: Arc<Outbox>, mut acks: mpsc::UnboundedReceiver<AckEvent>) {
    let acks_tx = ob.acks.clone();
    let mut st = Sending { conn: None, gen: 0, flight: VecDeque::new(), failures: 0 };
    loop {
        if link.handler.strong_count() == 0 {
            return;
        }
        if ob.closed.load(std::sync::atomic::Ordering::Acquire) {
            direct::close(&ob);
            st.absorb(&ob);
            for f in st.flight.drain(..) {
                give_up(&link, &ob, f.mail, MailError::PeerGone);
            }
            while let Some(batch) = next_batch(&ob, BATCH_SOFT_BYTES).await {
                give_up(&link, &ob, batch, MailError::PeerGone);
            }
            return;
        }
        st.absorb(&ob);
        st.reopen(&ob);
        let on_lane = st.conn.as_ref().is_some_and(Conn::is_lane);
        // On the lane, a message too big for it waits until nothing is in
        // flight (then it goes on a stream, without overtaking anything).
        // A burst (more queued than a lane batch) goes on a stream, in big
        // batches: on the lane it waits until nothing is in flight there,
        // then is taken whole and does not fit a frame.
        let too_big = on_lane
            && !st.flight.is_empty()
            && (front_bytes(&ob) > LANE_BATCH_BYTES || queued_over(&ob, LANE_BATCH_BYTES));
        // On the lane, also at most LANE_INFLIGHT_BYTES in flight.
        let lane_full =
            on_lane && st.flight.iter().map(|f| f.bytes.len()).sum::<usize>() + LANE_BATCH_BYTES > LANE_INFLIGHT_BYTES;
        let can_send = st.flight.len() < WINDOW && !st.flight.back().is_some_and(|f| f.fence) && !too_big && !lane_full;
        let soft_bytes = if on_lane && !st.flight.is_empty() { LANE_BATCH_BYTES } else { BATCH_SOFT_BYTES };
        // While direct sends are open, batches may be in flight that this
        // task has not seen yet (their acks wake it): it looks at least
        // once per timeout, so a lost one is sent again within two.
        let watch = lock_unpoisoned(&ob.direct).is_open().then(|| Instant::now() + link.timeout);
        let deadline = match (st.flight.front().map(|f| f.sent + link.timeout), watch) {
            (Some(d), Some(w)) => Some(d.min(w)),
            (d, w) => d.or(w),
        };
        let event = tokio::select! {
            biased;
            a = acks.recv() => Event::Ack(a),
            b = next_batch(&ob, soft_bytes), if can_send => Event::Batch(b),
            _ = tokio::time::sleep_until(deadline.unwrap_or_else(Instant::now)), if deadline.is_some() => Event::Timeout,
        };
        // Batches sent directly meanwhile are in flight before anything
        // else happens (an ack may be theirs).
        st.absorb(&ob);
        match event {
            Event::Batch(None) | Event::Ack(Some(AckEvent::Closed)) => {}
            Event::Ack(None) => return,
            Event::Batch(Some(mail)) => st.send(&link, &ob, &acks_tx, mail).await,
            Event::Ack(Some(AckEvent::Ack(ack))) => st.on_ack(&link, &ob, ack),
            Event::Ack(Some(AckEvent::Broken(gen, why))) => {
                if gen == st.gen && st.conn.is_some() {
                    direct::close(&ob);
                    st.absorb(&ob);
                    st.recover(&link, &ob, &acks_tx, why).await;
                }
            }
            Event::Timeout if st.flight.front().is_none_or(|f| f.sent + link.timeout > Instant::now()) => {
                // (Only the look at direct sends: nothing is late.)
            }
            Event::Timeout => {
                direct::close(&ob);
                st.absorb(&ob);
                st.recover(&link, &ob, &acks_tx, MailError::NoAck(link.timeout)).await;
            }
        }
    }
}

#[path = "outbox_direct.rs"]
mod direct;

/// Encodes batch `seq` of `mail` with `riders` (held acks riding on it):
/// the bytes to write, and `mail` handed back (kept in flight until its
/// ack, for a resend).
pub(super) fn encode_seq_batch(seq: u64, riders: Vec<Ack>, mail: Vec<Mail>) -> (Vec<u8>, Vec<Mail>) {
    let mut wire = Vec::with_capacity(mail.len() + 2);
    wire.push(Mail::Seq(seq));
    if !riders.is_empty() {
        wire.push(Mail::Acked(riders));
    }
    let head = wire.len();
    wire.extend(mail);
    let batch = Batch(wire);
    let bytes = mail::encode_batch(&batch);
    let mut wire = batch.0;
    let mail = wire.split_off(head);
    (bytes, mail)
}
