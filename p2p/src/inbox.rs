//! The receiving side of node-to-node mail (the sending side, and the
//! protocol as a whole, are in `outbox`): accepting peers' mail streams,
//! reading and decoding batches (caps and validation in `mail`), handing
//! the acks that ride on them to this node's sender for that peer,
//! applying the rest in order (`Handler`), and answering.
//!
//! A fence, a refusal, an invalid batch or a batch without a seq is
//! answered at once on its own stream; any other ack is held for our next
//! batch to that peer to carry, and written on the stream after
//! [`ACK_DELAY`] if none did. An oversized batch is answered as invalid and
//! closes the stream.
//!
//! Invariant: a batch whose seq is among the last [`SEEN`] applied from
//! its peer is not applied again; it is answered with its first ack
//! (refusals included), or, while its first copy is still being applied,
//! left for that copy's answer.

use crate::codec::{push_frame, read_frame, Frame};
use crate::mail::{self, Ack, Batch, Mail, MAX_ACK_BYTES, MAX_BATCH_BYTES};
use crate::outbox::{is_fence, protocol, Handler, Shared, ACK_DELAY, MAIL_PROTOCOL, WINDOW};
use crate::work::lock;
use futures::io::WriteHalf;
use futures::{AsyncReadExt, AsyncWriteExt, StreamExt};
use libp2p::{PeerId, Stream};
use libp2p_stream::Control;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, Weak};
use tokio::sync::mpsc;
use tokio::time::Instant;

/// Batches applied from one peer: `(seq, ack)`, oldest first.
type Applied = VecDeque<(u64, Option<Ack>)>;

/// Batches remembered per peer for duplicate detection: many more than can
/// be in flight ([`WINDOW`]), so a resent batch is always recognised.
const SEEN: usize = 8 * WINDOW;

/// What to do with a batch that carries a seq.
pub(crate) enum Fresh {
    /// Apply it (its seq is now reserved).
    Apply,
    /// Applied before: answer with this ack again.
    Again(Ack),
    /// Being applied by another stream's reader: it will answer.
    Busy,
}

/// The batches applied from each peer, by seq, with their acks.
#[derive(Default)]
pub(crate) struct Seen(Mutex<HashMap<PeerId, Applied>>);

impl Seen {
    /// Checks a batch's seq against those applied from `peer`, reserving it
    /// if it is new.
    pub(crate) fn fresh(&self, peer: PeerId, seq: u64) -> Fresh {
        let mut seen = lock(&self.0);
        let log = seen.entry(peer).or_default();
        match log.iter().find(|(s, _)| *s == seq) {
            Some((_, Some(ack))) => Fresh::Again(ack.clone()),
            Some((_, None)) => Fresh::Busy,
            None => {
                if log.len() >= SEEN {
                    log.pop_front();
                }
                log.push_back((seq, None));
                Fresh::Apply
            }
        }
    }

    /// Records the ack of an applied batch (see [`Seen::fresh`]).
    pub(crate) fn applied(&self, peer: PeerId, ack: &Ack) {
        if let Some(log) = lock(&self.0).get_mut(&peer) {
            if let Some(slot) = log.iter_mut().find(|(s, _)| *s == ack.seq) {
                slot.1 = Some(ack.clone());
            }
        }
    }

    /// Forgets `peer` (it died).
    pub(crate) fn forget(&self, peer: PeerId) {
        lock(&self.0).remove(&peer);
    }
}

/// Accepts mail streams and applies what arrives until the node stops.
pub(crate) async fn serve(mut control: Control, handler: Weak<dyn Handler>, shared: Arc<Shared>) {
    let mut incoming = match control.accept(protocol()) {
        Ok(i) => i,
        Err(e) => {
            tracing::error!(error = %e, "cannot accept {MAIL_PROTOCOL} streams");
            return;
        }
    };
    while let Some((peer, stream)) = incoming.next().await {
        tokio::spawn(serve_stream(peer, stream, handler.clone(), shared.clone()));
    }
}

/// What a stream's reader hands its ack writer.
enum Out {
    /// Send this ack (and any held) now.
    Now(Ack),
    /// An ack was held: send it (if no batch took it) within [`ACK_DELAY`].
    Held,
    /// Close the stream.
    Close,
}

async fn serve_stream(peer: PeerId, s: Stream, handler: Weak<dyn Handler>, shared: Arc<Shared>) {
    let (mut r, w) = s.split();
    let held = shared.held(peer);
    let (tx, rx) = mpsc::channel(WINDOW * 2);
    let writer = tokio::spawn(write_acks(w, rx, held.clone()));
    loop {
        let out = match read_frame(&mut r, MAX_BATCH_BYTES).await {
            Ok(Frame::Body(body)) => match mail::decode_batch(&body) {
                Ok(Batch(m)) => {
                    let (mut seq, mut rest, mut rode) = (None, Vec::with_capacity(m.len()), false);
                    for x in m {
                        match x {
                            Mail::Seq(n) => seq = Some(n),
                            Mail::Acked(acks) => {
                                rode = true;
                                shared.acked(peer, acks);
                            }
                            other => rest.push(other),
                        }
                    }
                    if seq.is_none() && rest.is_empty() && rode {
                        continue; // acks alone need no answer
                    }
                    if let Some(n) = seq {
                        match shared.seen.fresh(peer, n) {
                            Fresh::Apply => {}
                            Fresh::Again(ack) => {
                                if tx.send(Out::Now(ack)).await.is_err() {
                                    break;
                                }
                                continue;
                            }
                            Fresh::Busy => continue,
                        }
                    }
                    let Some(h) = handler.upgrade() else { break };
                    let fence = is_fence(&rest);
                    let mut ack = h.on_mail(peer, rest);
                    ack.seq = seq.unwrap_or(0);
                    if seq.is_some() {
                        shared.seen.applied(peer, &ack);
                    }
                    if seq.is_none() || fence || !ack.refused.is_empty() || ack.invalid.is_some() {
                        Out::Now(ack)
                    } else {
                        lock(&held).push(ack);
                        Out::Held
                    }
                }
                Err(e) => {
                    tracing::warn!(%peer, error = %e, "invalid mail batch");
                    Out::Now(Ack { invalid: Some(e.to_string()), ..Ack::default() })
                }
            },
            Ok(Frame::TooLarge(len)) => {
                tracing::warn!(%peer, len, "oversized mail batch");
                let reason = format!("batch of {len} bytes exceeds {MAX_BATCH_BYTES}");
                let _ = tx.send(Out::Now(Ack { invalid: Some(reason), ..Ack::default() })).await;
                Out::Close
            }
            Ok(Frame::Truncated) | Err(_) => break,
        };
        let close = matches!(out, Out::Close);
        if tx.send(out).await.is_err() || close {
            break; // the writer failed (the stream is broken), or closes it
        }
    }
    drop(tx);
    let _ = writer.await;
}

/// Writes a stream's acks: at once when asked, and the held ones no batch
/// of ours took within [`ACK_DELAY`].
async fn write_acks(mut w: WriteHalf<Stream>, mut rx: mpsc::Receiver<Out>, held: Arc<Mutex<Vec<Ack>>>) {
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
        let mut acks = std::mem::take(&mut *lock(&held));
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
            written.await.is_err()
        };
        if failed || close || unsendable {
            let _ = w.close().await;
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ack(seq: u64, busy: bool) -> Ack {
        let refused = if busy { vec![(0, mail::Refusal::Busy)] } else { vec![] };
        Ack { seq, refused, invalid: None }
    }

    #[test]
    fn a_batch_sent_again_is_answered_with_its_first_ack_not_applied_twice() {
        let shared = Shared::default();
        let (p, q) = (PeerId::random(), PeerId::random());
        assert!(matches!(shared.seen.fresh(p, 5), Fresh::Apply));
        // Sent again while the first copy is still being applied.
        assert!(matches!(shared.seen.fresh(p, 5), Fresh::Busy));
        shared.seen.applied(p, &ack(5, true));
        // Sent again later: the same answer, refusals included.
        assert!(matches!(shared.seen.fresh(p, 5), Fresh::Again(a) if a == ack(5, true)));
        // Seqs are per peer.
        assert!(matches!(shared.seen.fresh(q, 5), Fresh::Apply));
        // Only the last SEEN are remembered.
        for s in 6..6 + SEEN as u64 {
            assert!(matches!(shared.seen.fresh(p, s), Fresh::Apply));
            shared.seen.applied(p, &ack(s, false));
        }
        assert!(matches!(shared.seen.fresh(p, 5), Fresh::Apply), "forgotten after SEEN newer batches");
    }

    #[test]
    fn held_acks_are_taken_oldest_first_and_at_most_max() {
        let shared = Shared::default();
        let p = PeerId::random();
        assert!(shared.take_held(p, 10).is_empty());
        let held = shared.held(p);
        lock(&held).extend((1..=5).map(|s| ack(s, false)));
        let first: Vec<u64> = shared.take_held(p, 3).iter().map(|a| a.seq).collect();
        assert_eq!(first, [1, 2, 3]);
        let rest: Vec<u64> = shared.take_held(p, 10).iter().map(|a| a.seq).collect();
        assert_eq!(rest, [4, 5]);
    }
}
