//! Ordered, batched delivery of [`Mail`] between nodes.
//!
//! Each node keeps one outbox per peer it sends to, drained by one sender
//! task that writes on one long-lived stream on [`MAIL_PROTOCOL`]:
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
//! on the batch's stream after [`ACK_DELAY`]. So a request and its reply
//! carry each other's acks: two sends per remote round trip instead of
//! four. A batch without a seq (a client that is not a node) is answered
//! at once, with seq 0, which the sender matches to its oldest batch.
//!
//! The receiving side (reading, applying, answering, and recognising a
//! batch sent again) is `inbox`.
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

use crate::codec::{read_frame, write_frame, Frame};
pub(crate) use crate::inbox::serve;
use crate::inbox::Seen;
use crate::mail::{self, Ack, Batch, Mail, MAX_ACK_BYTES, MAX_BATCH_BYTES};
use crate::work::lock;
use futures::io::{ReadHalf, WriteHalf};
use futures::{AsyncReadExt, AsyncWriteExt};
use libp2p::{PeerId, Stream, StreamProtocol};
use libp2p_stream::Control;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;
use tokio::sync::{mpsc, Notify};
use tokio::time::Instant;

/// The stream protocol of node-to-node work.
pub const MAIL_PROTOCOL: &str = "/manta/mail/2";

pub use crate::mail::MAX_BATCH_MAIL;

/// Streams tried for one batch before it is undeliverable.
pub const SEND_ATTEMPTS: u32 = 4;

/// Most batches in flight from one node to another.
pub const WINDOW: usize = 8;

/// Longest a receiver holds an ack back for a batch of its own to carry.
pub const ACK_DELAY: Duration = Duration::from_millis(1);

/// Soft cap on the encoded bytes of the messages of one batch.
const BATCH_SOFT_BYTES: usize = MAX_BATCH_BYTES / 2;

/// Most queued messages in one batch: its seq and riding acks take two of
/// the [`MAX_BATCH_MAIL`] a batch may hold.
const MAIL_PER_BATCH: usize = MAX_BATCH_MAIL - 2;

/// What the node does with mail (implemented by `work::Work`).
pub(crate) trait Handler: Send + Sync + 'static {
    /// Applies a batch from `from`, in order; the returned ack lists the
    /// submissions it refused.
    fn on_mail(&self, from: PeerId, mail: Vec<Mail>) -> Ack;
    /// A batch sent to `to` was acknowledged.
    fn on_ack(&self, to: PeerId, sent: Vec<Mail>, ack: Ack);
    /// A batch could not be delivered to `to`.
    fn on_undeliverable(&self, to: PeerId, sent: Vec<Mail>, why: String);
}

/// What reaches a sender about its batches.
enum AckEvent {
    Ack(Ack),
    /// The reply direction of stream number `.0` failed.
    Broken(u64, String),
    /// The outbox was closed (its peer is gone).
    Closed,
}

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
}

/// State shared by the senders and the receivers of one node.
#[derive(Default)]
pub(crate) struct Shared {
    map: Mutex<HashMap<PeerId, Arc<Outbox>>>,
    /// Acks of each peer's batches, held to ride on our next batch to it.
    held: Mutex<HashMap<PeerId, Arc<Mutex<Vec<Ack>>>>>,
    /// Batches applied from each peer (see `inbox`).
    pub(crate) seen: Seen,
}

impl Shared {
    /// The acks held for `peer` (pushed by its streams' readers).
    pub(crate) fn held(&self, peer: PeerId) -> Arc<Mutex<Vec<Ack>>> {
        lock(&self.held).entry(peer).or_default().clone()
    }

    /// Takes up to `max` of the acks held for `peer`, oldest first.
    pub(crate) fn take_held(&self, peer: PeerId, max: usize) -> Vec<Ack> {
        let Some(h) = lock(&self.held).get(&peer).cloned() else { return Vec::new() };
        let mut h = lock(&h);
        let n = h.len().min(max);
        h.drain(..n).collect()
    }

    /// Hands acks that came from `peer` to our sender for it.
    pub(crate) fn acked(&self, peer: PeerId, acks: Vec<Ack>) {
        if let Some(ob) = lock(&self.map).get(&peer) {
            for a in acks {
                let _ = ob.acks.send(AckEvent::Ack(a));
            }
        }
    }
}

/// Every outbox of a node.
pub(crate) struct Outboxes {
    control: Control,
    handle: tokio::runtime::Handle,
    timeout: Duration,
    handler: Weak<dyn Handler>,
    shared: Arc<Shared>,
}

pub(crate) fn protocol() -> StreamProtocol {
    StreamProtocol::new(MAIL_PROTOCOL)
}

impl Outboxes {
    pub fn new(
        control: Control,
        handle: tokio::runtime::Handle,
        timeout: Duration,
        handler: Weak<dyn Handler>,
    ) -> Self {
        Outboxes { control, handle, timeout, handler, shared: Arc::default() }
    }

    /// What the receiving side ([`serve`]) shares with the senders.
    pub fn shared(&self) -> Arc<Shared> {
        self.shared.clone()
    }

    /// Queues `m` for `peer` (starting its sender task on first use).
    pub fn send(&self, peer: PeerId, m: Mail) {
        self.send_all(peer, std::iter::once(m))
    }

    /// Queues several messages for `peer`, in order.
    pub fn send_all(&self, peer: PeerId, ms: impl IntoIterator<Item = Mail>) {
        let ob = {
            let mut map = lock(&self.shared.map);
            map.entry(peer)
                .or_insert_with(|| {
                    let (tx, rx) = mpsc::unbounded_channel();
                    let ob = Arc::new(Outbox {
                        q: Mutex::new(VecDeque::new()),
                        notify: Notify::new(),
                        closed: false.into(),
                        counts: Mutex::new((0, 0)),
                        settled: std::sync::Condvar::new(),
                        hold: Mutex::new(None),
                        acks: tx,
                    });
                    let link = Link {
                        peer,
                        control: self.control.clone(),
                        handler: self.handler.clone(),
                        timeout: self.timeout,
                        shared: Arc::downgrade(&self.shared),
                    };
                    self.handle.spawn(sender(link, ob.clone(), rx));
                    ob
                })
                .clone()
        };
        {
            let mut q = lock(&ob.q);
            let before = q.len();
            q.extend(ms);
            lock(&ob.counts).0 += (q.len() - before) as u64;
        }
        ob.notify.notify_one();
    }

    /// Puts `ms` back at the front of `peer`'s queue, in order, to go out
    /// again after `pause` and before anything queued since (the peer
    /// refused them as busy; resending keeps their order).
    pub fn retry_front(&self, peer: PeerId, ms: Vec<Mail>, pause: Duration) {
        let Some(ob) = lock(&self.shared.map).get(&peer).cloned() else { return };
        {
            let mut q = lock(&ob.q);
            lock(&ob.counts).0 += ms.len() as u64;
            for m in ms.into_iter().rev() {
                q.push_front(m);
            }
        }
        *lock(&ob.hold) = Some(Instant::now() + pause);
        ob.notify.notify_one();
    }

    /// Blocks until everything queued so far has been acknowledged (so
    /// applied by its receiver) or given up, or `timeout` passes. True if
    /// it all settled.
    pub fn flush(&self, timeout: Duration) -> bool {
        let deadline = std::time::Instant::now() + timeout;
        let boxes: Vec<Arc<Outbox>> = lock(&self.shared.map).values().cloned().collect();
        for ob in boxes {
            let mut c = lock(&ob.counts);
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

    /// Drops `peer`'s outbox (it died): queued mail is handed back as
    /// undeliverable.
    pub fn forget(&self, peer: PeerId) {
        lock(&self.shared.held).remove(&peer);
        self.shared.seen.forget(peer);
        let Some(ob) = lock(&self.shared.map).remove(&peer) else { return };
        ob.closed.store(true, std::sync::atomic::Ordering::Release);
        ob.notify.notify_one();
        let _ = ob.acks.send(AckEvent::Closed);
    }
}

/// What a sender needs besides its outbox.
struct Link {
    peer: PeerId,
    control: Control,
    handler: Weak<dyn Handler>,
    timeout: Duration,
    shared: Weak<Shared>,
}

async fn open(control: &Control, peer: PeerId, timeout: Duration) -> Result<Stream, String> {
    let mut last = String::new();
    for attempt in 0..SEND_ATTEMPTS {
        if attempt > 0 {
            tokio::time::sleep(Duration::from_millis(2 << attempt)).await;
        }
        let mut c = control.clone();
        match tokio::time::timeout(timeout, c.open_stream(peer, protocol())).await {
            Ok(Ok(s)) => return Ok(s),
            Ok(Err(e)) => last = e.to_string(),
            Err(_) => last = format!("no stream within {timeout:?}"),
        }
    }
    Err(last)
}

/// True for a batch nothing may follow until it is acked: it holds an
/// actor call or creation, whose order a busy refusal must not break.
pub(crate) fn is_fence(batch: &[Mail]) -> bool {
    batch.iter().any(|m| matches!(m, Mail::Call { .. } | Mail::NewActor { .. }))
}

/// Takes the next batch off the queue (waiting for one); `None` once closed.
/// Cancel-safe: a hold is cleared only once it has passed, and nothing is
/// taken off the queue before the last await.
async fn next_batch(ob: &Outbox) -> Option<Vec<Mail>> {
    let hold = *lock(&ob.hold);
    if let Some(until) = hold {
        tokio::time::sleep_until(until).await;
        let mut h = lock(&ob.hold);
        if *h == Some(until) {
            *h = None;
        }
    }
    loop {
        {
            let mut q = lock(&ob.q);
            if !q.is_empty() {
                let mut batch = Vec::new();
                let mut bytes = 0;
                while let Some(m) = q.front() {
                    let size = mail_size(m);
                    if !batch.is_empty() && (batch.len() >= MAIL_PER_BATCH || bytes + size > BATCH_SOFT_BYTES) {
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

/// A message's bytes, roughly (for batch sizing).
fn mail_size(m: &Mail) -> usize {
    64 + match m {
        Mail::Submit { args, .. } | Mail::NewActor { args, .. } | Mail::Call { args, .. } => args.len(),
        Mail::Done { outcome: mail::Outcome::Inline(b), .. } => b.len(),
        Mail::Borrow(ids) | Mail::Release(ids) => 20 * ids.len(),
        _ => 0,
    }
}

/// A batch written and not yet acked.
struct InFlight {
    seq: u64,
    mail: Vec<Mail>,
    /// Its encoding (with the acks that rode on it), to write again.
    bytes: Vec<u8>,
    fence: bool,
    sent: Instant,
}

/// An open mail stream: its write half, and the task that reads acks from
/// its other direction.
struct Conn {
    w: WriteHalf<Stream>,
    reader: tokio::task::JoinHandle<()>,
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

async fn connect(link: &Link, gen: u64, acks: &mpsc::UnboundedSender<AckEvent>) -> Result<Conn, String> {
    let (r, w) = open(&link.control, link.peer, link.timeout).await?.split();
    let reader = tokio::spawn(read_acks(r, acks.clone(), gen));
    Ok(Conn { w, reader })
}

async fn read_acks(mut r: ReadHalf<Stream>, tx: mpsc::UnboundedSender<AckEvent>, gen: u64) {
    loop {
        let ack = match read_frame(&mut r, MAX_ACK_BYTES).await {
            Ok(Frame::Body(b)) => mail::decode_ack(&b).map_err(|e| e.to_string()),
            Ok(Frame::TooLarge(n)) => Err(format!("ack of {n} bytes")),
            Ok(Frame::Truncated) => Err("stream closed".into()),
            Err(e) => Err(e.to_string()),
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

async fn write_batch(c: &mut Conn, bytes: &[u8], timeout: Duration) -> Result<(), String> {
    let io = async {
        write_frame(&mut c.w, bytes, MAX_BATCH_BYTES).await?;
        c.w.flush().await
    };
    match tokio::time::timeout(timeout, io).await {
        Ok(r) => r.map_err(|e| e.to_string()),
        Err(_) => Err(format!("batch not written within {timeout:?}")),
    }
}

/// Counts `n` messages as settled (acked or given up).
fn settle(ob: &Outbox, n: usize) {
    lock(&ob.counts).1 += n as u64;
    ob.settled.notify_all();
}

fn give_up(link: &Link, ob: &Outbox, mail: Vec<Mail>, why: String) {
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
    next_seq: u64,
    /// Stream failures since the last ack.
    failures: u32,
}

impl Sending {
    /// After a stream failed: a new stream, with everything in flight
    /// written again in order; after [`SEND_ATTEMPTS`] failures in a row (no
    /// ack in between), or when no stream opens, all of it is undeliverable.
    async fn recover(&mut self, link: &Link, ob: &Outbox, acks: &mpsc::UnboundedSender<AckEvent>, mut why: String) {
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
            let mut c = match connect(link, self.gen, acks).await {
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
        let seq = self.next_seq;
        self.next_seq += 1;
        let riders = link.shared.upgrade().map(|s| s.take_held(link.peer, MAX_BATCH_MAIL)).unwrap_or_default();
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
        let fence = is_fence(&mail);
        if self.conn.is_none() {
            self.gen += 1;
            match connect(link, self.gen, acks).await {
                Ok(c) => self.conn = Some(c),
                Err(e) => return give_up(link, ob, mail, e),
            }
        }
        let written = match self.conn.as_mut() {
            Some(c) => write_batch(c, &bytes, link.timeout).await,
            None => Err("no stream".into()),
        };
        self.flight.push_back(InFlight { seq, mail, bytes, fence, sent: Instant::now() });
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
    // Seqs start from the clock, so an outbox made again for the same peer
    // (after it was forgotten) never reuses one the peer still remembers.
    let start = crate::membership::clock_seq().max(1);
    let mut st = Sending { conn: None, gen: 0, flight: VecDeque::new(), next_seq: start, failures: 0 };
    loop {
        if link.handler.strong_count() == 0 {
            return;
        }
        if ob.closed.load(std::sync::atomic::Ordering::Acquire) {
            for f in st.flight.drain(..) {
                give_up(&link, &ob, f.mail, "the peer is gone".into());
            }
            while let Some(batch) = next_batch(&ob).await {
                give_up(&link, &ob, batch, "the peer is gone".into());
            }
            return;
        }
        let can_send = st.flight.len() < WINDOW && !st.flight.back().is_some_and(|f| f.fence);
        let deadline = st.flight.front().map(|f| f.sent + link.timeout);
        let event = tokio::select! {
            biased;
            a = acks.recv() => Event::Ack(a),
            b = next_batch(&ob), if can_send => Event::Batch(b),
            _ = tokio::time::sleep_until(deadline.unwrap_or_else(Instant::now)), if deadline.is_some() => Event::Timeout,
        };
        match event {
            Event::Batch(None) | Event::Ack(Some(AckEvent::Closed)) => {}
            Event::Ack(None) => return,
            Event::Batch(Some(mail)) => st.send(&link, &ob, &acks_tx, mail).await,
            Event::Ack(Some(AckEvent::Ack(ack))) => st.on_ack(&link, &ob, ack),
            Event::Ack(Some(AckEvent::Broken(gen, why))) => {
                if gen == st.gen && st.conn.is_some() {
                    st.recover(&link, &ob, &acks_tx, why).await;
                }
            }
            Event::Timeout => {
                let why = format!("no ack within {:?}", link.timeout);
                st.recover(&link, &ob, &acks_tx, why).await;
            }
        }
    }
}
