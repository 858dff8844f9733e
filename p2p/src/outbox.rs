//! Ordered, batched delivery of [`Mail`] between nodes.
//!
//! Each node keeps one outbox per peer it sends to, drained by one sender
//! task over one long-lived stream on [`MAIL_PROTOCOL`]: everything queued
//! since the last send goes out as one [`Batch`] (up to [`MAX_BATCH_MAIL`]
//! messages), and the next batch waits for this one's [`Ack`]. So messages
//! from one node to another are applied in the order they were sent (actor
//! calls per caller, borrow before release), and a burst of submissions
//! costs one round trip per batch, not per task.
//!
//! The receiver reads a frame, decodes it (caps and validation in `mail`),
//! hands the messages to the `Handler` in order and writes the ack. A
//! malformed batch is answered with `Ack::invalid` and nothing in it is
//! applied; an oversized one also closes the stream.
//!
//! Invariants: a batch is handed back to the handler exactly once, either
//! with its ack or as undeliverable (after [`SEND_ATTEMPTS`] streams
//! failed); a retried batch may be applied twice if only its ack was lost,
//! so receivers ignore duplicate submissions (by result id) and
//! completions of unknown ids. An outbox is dropped when its peer is
//! forgotten, and its sender task then ends.

use crate::codec::{read_frame, write_frame, Frame};
use crate::mail::{self, Ack, Batch, Mail, MAX_ACK_BYTES, MAX_BATCH_BYTES};
use futures::{AsyncWriteExt, StreamExt};
use libp2p::{PeerId, Stream, StreamProtocol};
use libp2p_stream::Control;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;
use tokio::sync::Notify;

/// The stream protocol of node-to-node work.
pub const MAIL_PROTOCOL: &str = "/manta/mail/1";

pub use crate::mail::MAX_BATCH_MAIL;

/// Streams tried for one batch before it is undeliverable.
pub const SEND_ATTEMPTS: u32 = 4;

/// Soft cap on the encoded bytes of the messages of one batch.
const BATCH_SOFT_BYTES: usize = MAX_BATCH_BYTES / 2;

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

struct Outbox {
    q: Mutex<VecDeque<Mail>>,
    notify: Notify,
    closed: std::sync::atomic::AtomicBool,
    /// Messages queued, and messages acknowledged (or given up), ever.
    counts: Mutex<(u64, u64)>,
    settled: std::sync::Condvar,
    /// No batch goes out before this (after the peer said it is busy).
    hold: Mutex<Option<tokio::time::Instant>>,
}

/// Every outbox of a node.
pub(crate) struct Outboxes {
    control: Control,
    handle: tokio::runtime::Handle,
    timeout: Duration,
    handler: Weak<dyn Handler>,
    map: Mutex<HashMap<PeerId, Arc<Outbox>>>,
}

fn protocol() -> StreamProtocol {
    StreamProtocol::new(MAIL_PROTOCOL)
}

impl Outboxes {
    pub fn new(
        control: Control,
        handle: tokio::runtime::Handle,
        timeout: Duration,
        handler: Weak<dyn Handler>,
    ) -> Self {
        Outboxes { control, handle, timeout, handler, map: Mutex::new(HashMap::new()) }
    }

    /// Queues `m` for `peer` (starting its sender task on first use).
    pub fn send(&self, peer: PeerId, m: Mail) {
        self.send_all(peer, std::iter::once(m))
    }

    /// Queues several messages for `peer`, in order.
    pub fn send_all(&self, peer: PeerId, ms: impl IntoIterator<Item = Mail>) {
        let ob = {
            let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
            map.entry(peer)
                .or_insert_with(|| {
                    let ob = Arc::new(Outbox {
                        q: Mutex::new(VecDeque::new()),
                        notify: Notify::new(),
                        closed: false.into(),
                        counts: Mutex::new((0, 0)),
                        settled: std::sync::Condvar::new(),
                        hold: Mutex::new(None),
                    });
                    let (control, handler, timeout) = (self.control.clone(), self.handler.clone(), self.timeout);
                    self.handle.spawn(sender(peer, ob.clone(), control, handler, timeout));
                    ob
                })
                .clone()
        };
        {
            let mut q = ob.q.lock().unwrap_or_else(|p| p.into_inner());
            let before = q.len();
            q.extend(ms);
            ob.counts.lock().unwrap_or_else(|p| p.into_inner()).0 += (q.len() - before) as u64;
        }
        ob.notify.notify_one();
    }

    /// Puts `ms` back at the front of `peer`'s queue, in order, to go out
    /// again after `pause` and before anything queued since (the peer
    /// refused them as busy; resending keeps their order).
    pub fn retry_front(&self, peer: PeerId, ms: Vec<Mail>, pause: Duration) {
        let Some(ob) = self.map.lock().unwrap_or_else(|p| p.into_inner()).get(&peer).cloned() else { return };
        {
            let mut q = ob.q.lock().unwrap_or_else(|p| p.into_inner());
            ob.counts.lock().unwrap_or_else(|p| p.into_inner()).0 += ms.len() as u64;
            for m in ms.into_iter().rev() {
                q.push_front(m);
            }
        }
        *ob.hold.lock().unwrap_or_else(|p| p.into_inner()) = Some(tokio::time::Instant::now() + pause);
        ob.notify.notify_one();
    }

    /// Blocks until everything queued so far has been acknowledged (so
    /// applied by its receiver) or given up, or `timeout` passes. True if
    /// it all settled.
    pub fn flush(&self, timeout: Duration) -> bool {
        let deadline = std::time::Instant::now() + timeout;
        let boxes: Vec<Arc<Outbox>> = self.map.lock().unwrap_or_else(|p| p.into_inner()).values().cloned().collect();
        for ob in boxes {
            let mut c = ob.counts.lock().unwrap_or_else(|p| p.into_inner());
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
        let Some(ob) = self.map.lock().unwrap_or_else(|p| p.into_inner()).remove(&peer) else { return };
        ob.closed.store(true, std::sync::atomic::Ordering::Release);
        ob.notify.notify_one();
    }
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

async fn exchange(s: &mut Stream, bytes: &[u8], timeout: Duration) -> Result<Ack, String> {
    let io = async {
        write_frame(s, bytes, MAX_BATCH_BYTES).await?;
        s.flush().await?;
        match read_frame(s, MAX_ACK_BYTES).await? {
            Frame::Body(b) => mail::decode_ack(&b).map_err(crate::codec::invalid_data),
            Frame::TooLarge(n) => Err(std::io::Error::other(format!("ack of {n} bytes"))),
            Frame::Truncated => Err(std::io::Error::other("stream closed")),
        }
    };
    match tokio::time::timeout(timeout, io).await {
        Ok(r) => r.map_err(|e| e.to_string()),
        Err(_) => Err(format!("no ack within {timeout:?}")),
    }
}

/// Takes the next batch off the queue (waiting for one); `None` once closed.
async fn next_batch(ob: &Outbox) -> Option<Vec<Mail>> {
    let hold = ob.hold.lock().unwrap_or_else(|p| p.into_inner()).take();
    if let Some(until) = hold {
        tokio::time::sleep_until(until).await;
    }
    loop {
        {
            let mut q = ob.q.lock().unwrap_or_else(|p| p.into_inner());
            if !q.is_empty() {
                let mut batch = Vec::new();
                let mut bytes = 0;
                while let Some(m) = q.front() {
                    let size = mail_size(m);
                    if !batch.is_empty() && (batch.len() >= MAX_BATCH_MAIL || bytes + size > BATCH_SOFT_BYTES) {
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

async fn sender(peer: PeerId, ob: Arc<Outbox>, control: Control, handler: Weak<dyn Handler>, timeout: Duration) {
    let mut stream: Option<Stream> = None;
    while let Some(batch) = next_batch(&ob).await {
        let Some(h) = handler.upgrade() else { return };
        if ob.closed.load(std::sync::atomic::Ordering::Acquire) {
            ob.counts.lock().unwrap_or_else(|p| p.into_inner()).1 += batch.len() as u64;
            ob.settled.notify_all();
            h.on_undeliverable(peer, batch, "the peer is gone".into());
            continue;
        }
        let batch = Batch(batch);
        let bytes = mail::encode_batch(&batch);
        let mut outcome = Err(String::new());
        for attempt in 0..SEND_ATTEMPTS {
            if attempt > 0 {
                tokio::time::sleep(Duration::from_millis(5 << attempt)).await;
            }
            let s = match stream.take() {
                Some(s) => s,
                None => match open(&control, peer, timeout).await {
                    Ok(s) => s,
                    Err(e) => {
                        outcome = Err(e);
                        break;
                    }
                },
            };
            let mut s = s;
            match exchange(&mut s, &bytes, timeout).await {
                Ok(ack) => {
                    stream = Some(s);
                    outcome = Ok(ack);
                    break;
                }
                Err(e) => outcome = Err(e),
            }
        }
        let sent = batch.0;
        {
            let mut c = ob.counts.lock().unwrap_or_else(|p| p.into_inner());
            c.1 += sent.len() as u64;
            ob.settled.notify_all();
        }
        match outcome {
            Ok(ack) => h.on_ack(peer, sent, ack),
            Err(why) => h.on_undeliverable(peer, sent, why),
        }
    }
}

/// Accepts mail streams and applies what arrives until the node stops.
pub(crate) async fn serve(mut control: Control, handler: Weak<dyn Handler>) {
    let mut incoming = match control.accept(protocol()) {
        Ok(i) => i,
        Err(e) => {
            tracing::error!(error = %e, "cannot accept {MAIL_PROTOCOL} streams");
            return;
        }
    };
    while let Some((peer, stream)) = incoming.next().await {
        tokio::spawn(serve_stream(peer, stream, handler.clone()));
    }
}

async fn serve_stream(peer: PeerId, mut s: Stream, handler: Weak<dyn Handler>) {
    loop {
        let (ack, close) = match read_frame(&mut s, MAX_BATCH_BYTES).await {
            Ok(Frame::Body(body)) => match mail::decode_batch(&body) {
                Ok(Batch(m)) => {
                    let Some(h) = handler.upgrade() else { return };
                    (h.on_mail(peer, m), false)
                }
                Err(e) => {
                    tracing::warn!(%peer, error = %e, "invalid mail batch");
                    (Ack { invalid: Some(e.to_string()), ..Ack::default() }, false)
                }
            },
            Ok(Frame::TooLarge(len)) => {
                tracing::warn!(%peer, len, "oversized mail batch");
                let reason = format!("batch of {len} bytes exceeds {MAX_BATCH_BYTES}");
                (Ack { invalid: Some(reason), ..Ack::default() }, true)
            }
            Ok(Frame::Truncated) | Err(_) => return,
        };
        let written = async {
            write_frame(&mut s, &mail::encode_ack(&ack), MAX_ACK_BYTES).await?;
            s.flush().await
        };
        if written.await.is_err() || close {
            let _ = s.close().await;
            return;
        }
    }
}
