//! The receiving side of node-to-node mail (the sending side, and the
//! protocol as a whole, are in `outbox`): accepting peers' mail streams,
//! reading and decoding batches (caps and validation in `mail`), handing
//! the acks that ride on them to this node's sender for that peer,
//! applying the rest in order (`MailHandler`), and answering.
//!
//! A fence, a refusal, an invalid batch or a batch without a seq is
//! answered at once on its own stream; any other ack is held for our next
//! batch to that peer to carry, and written on the stream after
//! [`ACK_DELAY`] if none did. An oversized batch is answered as invalid and
//! closes the stream.
//!
//! Bounds (`guard`): at most `MAX_MAIL_STREAMS_PER_PEER` mail streams per
//! peer (more are reset); a batch must arrive within the frame deadline
//! once its prefix has, and only once its length is charged to the peer's
//! byte budget; a stream with no batch within the idle timeout, or whose
//! batch misses its deadline, is reset (the sender opens a new one when it
//! next has mail, and sends again what was in flight); acks must be
//! written within the frame deadline.
//!
//! Invariant: a batch is applied at most once (see `mail_link::Seen`),
//! and the handler sees batches from one stream in the order they came.

use super::guard::{self, Guarded, Limits, StreamCap, MAX_MAIL_STREAMS_PER_PEER};
use super::mail_link::{is_fence, protocol, Fresh, LinkState, ACK_DELAY, MAIL_PROTOCOL, WINDOW};
use super::{MailHandler, Streams};
use crate::probe::Stage;
use crate::sync::lock_unpoisoned;
use crate::wire::codec::{push_frame, Frame};
use crate::wire::mail::{self, Ack, Batch, Mail, MAX_ACK_BYTES, MAX_BATCH_BYTES};
use futures::io::WriteHalf;
use futures::{AsyncReadExt, AsyncWriteExt, StreamExt};
use libp2p::{PeerId, Stream};
use std::sync::{Arc, Mutex, Weak};
use tokio::sync::mpsc;
use tokio::time::Instant;

/// Accepts mail streams and applies what arrives until the node stops.
pub(super) async fn serve(streams: Arc<dyn Streams>, handler: Weak<dyn MailHandler>, link: Arc<LinkState>) {
    let mut incoming = match streams.accept(protocol()) {
        Ok(i) => i,
        Err(e) => {
            tracing::error!(error = %e, "cannot accept {MAIL_PROTOCOL} streams");
            return;
        }
    };
    let limits = streams.limits().clone();
    let cap = StreamCap::new(MAX_MAIL_STREAMS_PER_PEER);
    while let Some((peer, stream)) = incoming.next().await {
        match cap.admit(peer) {
            Some(admitted) => {
                tokio::spawn(serve_stream(peer, stream, handler.clone(), link.clone(), limits.clone(), admitted));
            }
            None => tracing::debug!(%peer, "too many mail streams from one peer: one reset"),
        }
    }
}

/// What a stream's reader hands its ack writer.
pub(super) enum Out {
    /// Send this ack (and any held) now.
    Now(Ack),
    /// An ack was held: send it (if no batch took it) within [`ACK_DELAY`].
    Held,
    /// Close the stream.
    Close,
}

/// Reads, applies and answers one mail stream until it ends (or breaks a
/// bound); `_admitted` holds its place under the per-peer cap.
async fn serve_stream(
    peer: PeerId,
    s: Stream,
    handler: Weak<dyn MailHandler>,
    link: Arc<LinkState>,
    limits: Limits,
    _admitted: guard::Admitted,
) {
    let (mut r, w) = s.split();
    let held = link.held(peer);
    let (tx, rx) = mpsc::channel(WINDOW * 2);
    let writer = tokio::spawn(write_acks(w, rx, held.clone(), limits.frame));
    loop {
        let frame = match guard::read_guarded(&mut r, MAX_BATCH_BYTES, peer, &limits).await {
            Ok(Guarded::Frame(frame, charge)) => Ok((frame, charge)),
            Ok(bound) => Err(bound),
            Err(e) => {
                tracing::debug!(%peer, error = %e, "mail stream failed");
                break;
            }
        };
        let (frame, _charge) = match frame {
            Ok(f) => f,
            Err(bound) => {
                // Dropped, not closed: a reset, so a sender blocked on a
                // full window learns at once that nobody reads any more.
                tracing::debug!(%peer, ?bound, "mail stream reset (idle, or a batch not read in time)");
                break;
            }
        };
        let out = match frame {
            Frame::Body(body) => match mail::decode_batch(&body) {
                Ok(Batch(m)) => match on_batch(peer, m, &handler, &link, &held) {
                    Step::Answer(out) => out,
                    Step::Skip => continue,
                    Step::Stop => break,
                },
                Err(e) => {
                    // One WARN per peer; the rest are counted (a log flood otherwise).
                    if limits.rejections.warn_first(peer) {
                        tracing::warn!(%peer, error = %e, "invalid mail batch (later ones from this peer: debug)");
                    } else {
                        tracing::debug!(%peer, error = %e, "invalid mail batch");
                    }
                    Out::Now(Ack { invalid: Some(e.to_string()), ..Ack::default() })
                }
            },
            Frame::TooLarge(len) => {
                if limits.rejections.warn_first(peer) {
                    tracing::warn!(%peer, len, "oversized mail batch (later ones from this peer: debug)");
                } else {
                    tracing::debug!(%peer, len, "oversized mail batch");
                }
                let reason = format!("batch of {len} bytes exceeds {MAX_BATCH_BYTES}");
                let _ = tx.send(Out::Now(Ack { invalid: Some(reason), ..Ack::default() })).await;
                Out::Close
            }
            Frame::Truncated => break,
        };
        let close = matches!(out, Out::Close);
        if tx.send(out).await.is_err() || close {
            break; // the writer failed (the stream is broken), or closes it
        }
    }
    drop(tx);
    let _ = writer.await;
}

/// What a stream's reader does after a batch.
pub(super) enum Step {
    /// Hand this to the ack writer.
    Answer(Out),
    /// Nothing to answer (acks alone, or a copy being applied elsewhere).
    Skip,
    /// The node is gone: stop reading.
    Stop,
}

/// Takes the acks riding on a batch from `peer`, then applies the rest
/// (unless it was applied before) and says how to answer.
pub(super) fn on_batch(
    peer: PeerId,
    batch: Vec<Mail>,
    handler: &Weak<dyn MailHandler>,
    link: &LinkState,
    held: &Mutex<Vec<Ack>>,
) -> Step {
    super::outbox::probe_mail(&batch, Stage::TaskRead, Stage::DoneRead);
    let (mut seq, mut rest, mut rode) = (None, Vec::with_capacity(batch.len()), Vec::new());
    for m in batch {
        match m {
            Mail::Seq(n) => seq = Some(n),
            Mail::Acked(acks) => rode.extend(acks),
            other => rest.push(other),
        }
    }
    if seq.is_none() && rest.is_empty() && !rode.is_empty() {
        link.acked(peer, rode);
        return Step::Skip; // acks alone need no answer
    }
    // The riding acks go to our sender once the rest is applied: waking it
    // first would put a thread hand-off before the batch (a reply, often)
    // reaches its reader. Our outbox sees them now, though: the reply's
    // reader may send the next request at once, and the direct path has
    // room again only once the last request's batch is acked.
    link.tap(peer, &rode);
    let _rode = Rode { link, peer, acks: rode };
    if let Some(n) = seq {
        match link.seen.fresh(peer, n) {
            Fresh::Apply => {}
            Fresh::Again(ack) => return Step::Answer(Out::Now(ack)),
            Fresh::Busy => return Step::Skip,
        }
    }
    let Some(h) = handler.upgrade() else { return Step::Stop };
    let fence = is_fence(&rest);
    let mut ack = h.on_mail(peer, rest);
    ack.seq = seq.unwrap_or(0);
    if seq.is_some() {
        link.seen.applied(peer, &ack);
    }
    if seq.is_none() || fence || !ack.refused.is_empty() || ack.invalid.is_some() {
        Step::Answer(Out::Now(ack))
    } else {
        lock_unpoisoned(held).push(ack);
        Step::Answer(Out::Held)
    }
}

/// Acks that rode on a batch, handed to our sender when dropped (after
/// the batch is applied, whichever way `on_batch` returns).
struct Rode<'a> {
    link: &'a LinkState,
    peer: PeerId,
    acks: Vec<Ack>,
}

impl Drop for Rode<'_> {
    fn drop(&mut self) {
        if !self.acks.is_empty() {
            self.link.forward(self.peer, std::mem::take(&mut self.acks));
        }
    }
}

/// Writes a stream's acks: at once when asked, and the held ones no batch
/// of ours took within [`ACK_DELAY`]; each write within `deadline`.
async fn write_acks(
    mut w: WriteHalf<Stream>,
    mut rx: mpsc::Receiver<Out>,
    held: Arc<Mutex<Vec<Ack>>>,
    deadline: std::time::Duration,
) {
    let mut due: Option<Instant> = None;
    loop {
        // `None`: the held acks are due.
        let next = tokio::select! {
            biased;
            m = rx.recv() => match m {
                Some(out) => Some(out),
                None => return, // the reader ended
            },
            _ = tokio::time::sleep_until(due.unwrap_or_else(Instant::now)), if due.is_some() => None,
        };
        let (now, close) = match next {
            Some(Out::Held) => {
                due.get_or_insert_with(|| Instant::now() + ACK_DELAY);
                continue;
            }
            Some(Out::Now(ack)) => (Some(ack), false),
            Some(Out::Close) => (None, true),
            None => (None, false),
        };
        // Whatever is still held goes too (no batch of ours took it).
        due = None;
        let mut acks = std::mem::take(&mut *lock_unpoisoned(&held));
        acks.extend(now);
        let mut bytes = Vec::new();
        let mut unsendable = false;
        for a in &acks {
            let enc = mail::encode_ack(a);
            if enc.len() > MAX_ACK_BYTES {
                // Cannot be sent: the sender sees the stream close instead.
                unsendable = true;
                break;
            }
            push_frame(&mut bytes, &enc);
        }
        let failed = !bytes.is_empty() && {
            let written = async {
                w.write_all(&bytes).await?;
                w.flush().await
            };
            !matches!(tokio::time::timeout(deadline, written).await, Ok(Ok(())))
        };
        if failed || close || unsendable {
            let _ = tokio::time::timeout(deadline, w.close()).await;
            return;
        }
    }
}
