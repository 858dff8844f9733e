//! Many small objects from one holder in one exchange.
//!
//! A reader that demands many remote refs at once (`get_all`, `wait`, a
//! task taking several refs) starts one fetch per object; fetched one by
//! one, 1,000 refs of 8 bytes cost 1,000 round trips. Instead, the first
//! request of every fetch to a holder goes through its [`Batcher`] queue:
//! a driver task per holder sends everything queued as one
//! [`Request::FetchSmall`] (up to [`MAX_BATCH_IDS`] ids), and while that
//! exchange is in flight new demands queue up for the next one. So a
//! burst of demands costs a couple of round trips, and a lone demand one,
//! as before, with no timer. The demand that finds no driver runs the
//! first exchange itself, in its own task (a lone small `get` pays no
//! task hop), then hands the queue to a driver task if more demands came
//! meanwhile. The holder answers with the whole encoding
//! of each object it holds, done and small, and nothing for the others;
//! those (large, pending, lost or failed objects) are fetched alone by the
//! caller, as if there were no batching.
//!
//! Invariants: at most one driver per holder (the demand that created the
//! queue, until it hands over, then the driver task it spawns), and at
//! most one exchange in flight per holder; every queued demand is answered exactly once (a
//! dropped driver answers "fetch it alone" by dropping its senders); a
//! holder's queue is capped at [`MAX_QUEUED`] (past it a demand is
//! fetched alone); the queue goes when it is empty.

use super::rpc::{Pool, Reply};
use crate::sync::lock_unpoisoned;
use crate::wire::envelope::MAX_BATCH_IDS;
use crate::wire::{Request, Response};
use libp2p::PeerId;
use manta::ObjectId;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use tokio::sync::oneshot;

/// Most demands queued for one holder.
const MAX_QUEUED: usize = 16 * MAX_BATCH_IDS;

/// A demand waiting for the next batch: the whole encoding, or `None`
/// (fetch it alone).
type Waiter = (ObjectId, oneshot::Sender<Option<Vec<u8>>>);

/// The per-holder queues of small-object demands.
pub(crate) struct Batcher {
    pool: Arc<Pool>,
    queues: Mutex<HashMap<PeerId, VecDeque<Waiter>>>,
}

impl Batcher {
    /// A batcher sending its requests through `pool`.
    pub(crate) fn new(pool: Arc<Pool>) -> Batcher {
        Batcher { pool, queues: Mutex::new(HashMap::new()) }
    }

    /// Object `id`'s whole encoding from `peer`, if it comes in a batch;
    /// `None` if the caller must fetch it alone.
    pub(crate) async fn small(self: &Arc<Self>, peer: PeerId, id: ObjectId) -> Option<Vec<u8>> {
        let (tx, rx) = oneshot::channel();
        let start = {
            let mut queues = lock_unpoisoned(&self.queues);
            match queues.get_mut(&peer) {
                // A driver is running: it takes this one with the next batch.
                Some(q) if q.len() >= MAX_QUEUED => return None,
                Some(q) => {
                    q.push_back((id, tx));
                    false
                }
                None => {
                    queues.insert(peer, VecDeque::from([(id, tx)]));
                    true
                }
            }
        };
        if !start {
            return rx.await.ok().flatten();
        }
        // No driver: this demand's task is the driver for the first
        // exchange (no task to spawn and wake, no hop back through the
        // oneshot), then hands what queued meanwhile to a driver task.
        let handover = Handover { b: self.clone(), peer };
        exchange(self, peer).await;
        drop(handover);
        rx.await.ok().flatten()
    }
}

/// Hands a holder's queue to a driver task when dropped: after the first
/// exchange ran inline, or if the future running it was dropped (its
/// fetch gave up), so the demands queued meanwhile are still answered.
struct Handover {
    b: Arc<Batcher>,
    peer: PeerId,
}

impl Drop for Handover {
    fn drop(&mut self) {
        hand_over(&self.b, self.peer);
    }
}

/// Spawns a driver for `peer`'s queue if it has demands left; otherwise
/// (or with no runtime to spawn on) removes the queue, whose remaining
/// senders then answer "fetch it alone".
fn hand_over(b: &Arc<Batcher>, peer: PeerId) {
    let mut queues = lock_unpoisoned(&b.queues);
    let waiting = queues.get(&peer).is_some_and(|q| !q.is_empty());
    match tokio::runtime::Handle::try_current() {
        Ok(handle) if waiting => {
            drop(queues);
            handle.spawn(drive(b.clone(), peer));
        }
        _ => {
            queues.remove(&peer);
        }
    }
}

/// Sends `peer`'s queue in batches until it is empty, then removes it.
async fn drive(b: Arc<Batcher>, peer: PeerId) {
    while exchange(&b, peer).await {}
}

/// Sends (up to [`MAX_BATCH_IDS`] of) `peer`'s queue as one batch and
/// answers its demands; false (and the queue removed) if it was empty.
async fn exchange(b: &Arc<Batcher>, peer: PeerId) -> bool {
    let batch: Vec<Waiter> = {
        let mut queues = lock_unpoisoned(&b.queues);
        let Some(q) = queues.get_mut(&peer) else { return false };
        if q.is_empty() {
            queues.remove(&peer);
            return false;
        }
        let n = q.len().min(MAX_BATCH_IDS);
        q.drain(..n).collect()
    };
    let ids = batch.iter().map(|(id, _)| serde_bytes::ByteArray::new(id.to_bytes())).collect();
    let items = match b.pool.call(peer, &Request::FetchSmall { ids }).await {
        Ok(Reply::Other(Response::Objects { items })) if items.len() == batch.len() => items,
        // An old peer, an error, a broken stream: each is fetched alone
        // (which reports the real reason if it fails again).
        _ => vec![None; batch.len()],
    };
    for ((_, tx), item) in batch.into_iter().zip(items) {
        let _ = tx.send(item.map(serde_bytes::ByteBuf::into_vec));
    }
    true
}
