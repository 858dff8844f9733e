//! Vouchers: an object's owner signs what its content is, so bytes read
//! from any other holder can be checked (`wire::signed`).
//!
//! - Owner side ([`Vouchers::answer`], on `Request::Vouch`): a node signs
//!   `(id, length, BLAKE3 hash)` of the encoding it serves for an object it
//!   holds, with its identity key. The digest is computed on demand, once
//!   per object (the encoding is written through a hasher on a blocking
//!   thread, never on the path that serves the bytes), and the signed
//!   voucher is kept in a bounded table.
//! - Replica side ([`Vouchers::stored`]): a node that fetched a copy from
//!   its owner asks the owner for its voucher in the background, once the
//!   copy has been held for [`ASK_AFTER`], in one batch per owner for the
//!   copies that are that old (a small `get` pays one queue push; copies
//!   dropped by then are not asked for, whenever they were made: a copy
//!   made just before another's request went out waits for the next), and
//!   keeps it to serve with the bytes (`Node::flush_announcements` asks at
//!   once, [`Vouchers::flush`]). A copy fetched from another holder keeps the
//!   voucher it was checked against ([`Vouchers::keep`]).
//! - Reader side ([`Vouchers::check`], from `fetch`): before reading an
//!   object from a holder that is not its owner, a reader asks that holder
//!   for the owner's voucher and checks it (signed by the peer the ref's
//!   hint names, for this id); the fetch then checks the bytes against it.
//!
//! A node answers with the voucher it keeps for the id, or else signs one
//! itself for an object it holds: a voucher only counts when its signer is
//! the ref's owner, so one signed by a mere holder is refused by readers.
//!
//! Invariants: the table holds at most [`MAX_KEPT`] vouchers, the queue
//! at most [`MAX_QUEUED`] ids (beyond, ids are not asked for: those copies
//! are served to nobody who needs a voucher), and `from_owner` one entry
//! per fetch in flight; nothing here runs on the owner-to-reader path of
//! an object's bytes (a reader's fetch from the owner adds two map
//! operations and, when the copy is stored, one queue push); a voucher
//! from a holder that is not the owner is kept only after its signature
//! verified; one from the owner itself (over its authenticated
//! connection) only if it is for that id under the owner's key (its
//! signature is left to the readers: checking costs more than signing).

use super::rpc::{Pool, Reply};
use crate::stats::Rejections;
use crate::sync::lock_unpoisoned;
use crate::wire::signed::{self, Digest, Hasher};
use crate::wire::{Request, Response, MAX_BATCH_IDS};
use libp2p::identity::Keypair;
use libp2p::PeerId;
use manta::{ObjectId, Runtime};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Vouchers kept (this node's own and owners' for copies held here).
pub(crate) const MAX_KEPT: usize = 16_384;

/// Ids waiting to be asked of their owners, in all.
pub(crate) const MAX_QUEUED: usize = 65_536;

/// How long a copy fetched from its owner is held before its voucher is
/// asked for (with the others from that owner that are as old): as long as
/// before its DHT announcement (a period of 100 ms, `cluster::announce`),
/// so a copy dropped sooner costs its owner no signature.
pub(crate) const ASK_AFTER: Duration = Duration::from_millis(100);

/// A node's vouchers (see the module docs).
pub(crate) struct Vouchers {
    key: Keypair,
    rt: Runtime,
    pool: Arc<Pool>,
    handle: tokio::runtime::Handle,
    /// Encoded vouchers by object.
    kept: Mutex<HashMap<ObjectId, Arc<[u8]>>>,
    /// Copies waiting to ask their owner ([`AskQueue`]).
    queue: Mutex<AskQueue>,
    /// Fetches in flight from an object's owner: once the copy is stored
    /// ([`Vouchers::stored`]), it is queued to ask that owner.
    from_owner: Mutex<HashMap<ObjectId, PeerId>>,
    /// What the node refused.
    pub(crate) rejections: Arc<Rejections>,
}

impl std::fmt::Debug for Vouchers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vouchers").field("kept", &lock_unpoisoned(&self.kept).len()).finish()
    }
}

/// Why a holder's voucher was refused.
#[derive(Debug, thiserror::Error)]
pub(crate) enum VoucherError {
    /// The ref names no owner to check a voucher against.
    #[error("the ref names no owner to vouch for it")]
    NoOwner,
    /// The holder's reply was not a voucher list.
    #[error("answered the voucher request with {0}")]
    Reply(&'static str),
    /// It did not verify.
    #[error("its voucher was refused: {0}")]
    Invalid(#[from] signed::SignedError),
}

impl Vouchers {
    /// Vouchers signed with `key`, for objects of `rt`, asking owners over
    /// `pool` from tasks on `handle`.
    pub(crate) fn new(
        key: Keypair,
        rt: Runtime,
        pool: Arc<Pool>,
        handle: tokio::runtime::Handle,
        rejections: Arc<Rejections>,
    ) -> Vouchers {
        let (kept, queue, from_owner) = (Mutex::default(), Mutex::default(), Mutex::default());
        Vouchers { key, rt, pool, handle, kept, queue, from_owner, rejections }
    }

    /// The answer to `Request::Vouch`: for each id, the voucher kept for
    /// it, or one signed here for an object held here. Blocks (a digest
    /// encodes the whole object): call it on a blocking thread.
    pub(crate) fn answer(&self, ids: &[serde_bytes::ByteArray<16>]) -> Response {
        let items = ids
            .iter()
            .map(|id| self.voucher_for(ObjectId::from_bytes(**id)).map(|v| serde_bytes::ByteBuf::from(v.to_vec())))
            .collect();
        Response::Vouchers { items }
    }

    /// The voucher this node gives for `id`, if it holds it.
    fn voucher_for(&self, id: ObjectId) -> Option<Arc<[u8]>> {
        let backend = self.rt.backend();
        if !backend.holds_object(id) {
            return None;
        }
        if let Some(v) = lock_unpoisoned(&self.kept).get(&id) {
            return Some(v.clone());
        }
        let d = digest(&self.rt, id)?;
        let v: Arc<[u8]> = signed::encode_voucher(&signed::sign_voucher(&self.key, id.to_bytes(), &d)?).into();
        self.store(id, v.clone());
        Some(v)
    }

    fn store(&self, id: ObjectId, v: Arc<[u8]>) {
        let mut kept = lock_unpoisoned(&self.kept);
        if kept.len() >= MAX_KEPT && !kept.contains_key(&id) {
            // Those of objects no longer held go first; if that is not
            // enough, all (each is made again, or asked again, on demand).
            let backend = self.rt.backend();
            kept.retain(|id, _| backend.holds_object(*id));
            if kept.len() >= MAX_KEPT {
                kept.clear();
            }
        }
        kept.insert(id, v);
    }

    /// Object `id` is no longer held here: its voucher goes.
    pub(crate) fn freed(&self, id: ObjectId) {
        lock_unpoisoned(&self.kept).remove(&id);
    }

    /// Keeps `voucher` (verified) for the copy of `id` this node now holds
    /// (read from a holder that is not the owner).
    pub(crate) fn keep(&self, id: ObjectId, voucher: Arc<[u8]>) {
        self.store(id, voucher);
    }

    /// A fetch of `id` from its owner `owner` starts: if it stores the
    /// copy, the copy asks `owner` for its voucher ([`Vouchers::stored`]).
    /// One entry per fetch in flight; [`Vouchers::fetched`] ends it.
    pub(crate) fn fetching_from_owner(&self, id: ObjectId, owner: PeerId) {
        lock_unpoisoned(&self.from_owner).insert(id, owner);
    }

    /// The fetch of `id` started by [`Vouchers::fetching_from_owner`] ended.
    pub(crate) fn fetched(&self, id: ObjectId) {
        lock_unpoisoned(&self.from_owner).remove(&id);
    }

    /// A copy of `id` was stored here (called as it is, before its readers
    /// wake): one fetched from its owner asks the owner for its voucher,
    /// so that by the time `get` returns it is queued (and
    /// `Node::flush_announcements` asks at once).
    pub(crate) fn stored(self: &Arc<Self>, id: ObjectId) {
        let owner = lock_unpoisoned(&self.from_owner).remove(&id);
        if let Some(owner) = owner {
            self.want(id, owner);
        }
    }

    /// A copy of `id` was fetched from its owner `owner`: ask it for its
    /// voucher soon, with the others from that owner (see [`ASK_AFTER`]).
    fn want(self: &Arc<Self>, id: ObjectId, owner: PeerId) {
        let Some(first) = lock_unpoisoned(&self.queue).push(owner, id, Instant::now()) else {
            tracing::debug!(object = %id, "voucher queue full: this copy will be served without one");
            return;
        };
        if first {
            let me = self.clone();
            self.handle.spawn(async move { me.asker(owner).await });
        }
    }

    /// Asks `owner` for the vouchers of its queued copies as they come
    /// due, until none is queued: one request per round, rounds at least
    /// [`ASK_AFTER`] apart (so a copy is asked for between one and two
    /// `ASK_AFTER`s after it was made, and a steady stream of copies costs
    /// its owner one request per period, not one per copy). After a flush
    /// emptied the owner's queue, an asker still asleep may run beside a
    /// new one until it wakes to nothing: each id is still taken, and
    /// asked for, once.
    async fn asker(&self, owner: PeerId) {
        let mut next = lock_unpoisoned(&self.queue).next_due(owner);
        while let Some(at) = next {
            tokio::time::sleep_until(at.into()).await;
            let round = Instant::now();
            let due;
            (due, next) = lock_unpoisoned(&self.queue).take(owner, Some(round));
            self.ask(owner, due).await;
            next = next.map(|n| n.max(round + ASK_AFTER));
        }
    }

    /// Asks every owner now for the vouchers of the copies queued for it,
    /// and returns once all have answered (or failed).
    pub(crate) async fn flush(&self) {
        let owners = lock_unpoisoned(&self.queue).owners();
        futures::future::join_all(owners.into_iter().map(|o| {
            let (ids, _) = lock_unpoisoned(&self.queue).take(o, None);
            self.ask(o, ids)
        }))
        .await;
    }

    /// Asks `owner` for the vouchers of `ids` (those still held), and keeps
    /// those that verify.
    async fn ask(&self, owner: PeerId, ids: Vec<ObjectId>) {
        if ids.is_empty() {
            return;
        }
        let backend = self.rt.backend();
        let held: Vec<ObjectId> = ids.into_iter().filter(|id| backend.holds_object(*id)).collect();
        for batch in held.chunks(MAX_BATCH_IDS) {
            let ids = batch.iter().map(|id| serde_bytes::ByteArray::new(id.to_bytes())).collect();
            let items = match self.pool.call(owner, &Request::Vouch { ids }).await {
                Ok(Reply::Other(Response::Vouchers { items })) => items,
                other => {
                    let why = other.err().map_or_else(|| "an unexpected reply".to_string(), |e| e.to_string());
                    tracing::debug!(%owner, why, "the owner gave no vouchers for our copies");
                    return;
                }
            };
            for (id, item) in batch.iter().zip(items) {
                let Some(bytes) = item else { continue };
                // From the owner itself (Noise authenticates it): its
                // signature is not checked here (a reader checks it, and
                // a check costs more than the signing did); that it is a
                // voucher for this id under the owner's key is.
                let ours = signed::decode_voucher(&bytes)
                    .is_ok_and(|v| v.id == id.to_bytes() && signed::signer(&v.key) == Some(owner));
                if ours {
                    self.store(*id, bytes.into_vec().into());
                } else {
                    tracing::debug!(%owner, object = %id, "the owner's answer is not its voucher for this id");
                }
            }
        }
    }

    /// Checks `bytes`, a holder's voucher for `id`, against `owner` (the
    /// ref's hint): the content it vouches for, and the voucher to keep.
    pub(crate) fn check(
        &self,
        bytes: Vec<u8>,
        id: ObjectId,
        owner: Option<PeerId>,
    ) -> Result<(Digest, Arc<[u8]>), VoucherError> {
        let owner = owner.ok_or(VoucherError::NoOwner)?;
        let d = signed::verify_voucher(&bytes, &id.to_bytes(), &owner)?;
        Ok((d, bytes.into()))
    }

    /// Counts a holder refused for its voucher or its bytes.
    pub(crate) fn refused_holder(&self) {
        Rejections::count(&self.rejections.holders, 1);
    }
}

/// The digest of the encoding this node serves for `id` (`None` if it is
/// not held, or failed).
fn digest(rt: &Runtime, id: ObjectId) -> Option<Digest> {
    let mut h = Hasher::default();
    let total = rt.backend().write_object(id, 0, &mut h).ok()?;
    (total == h.count()).then(|| h.finish())
}

/// The copies waiting to ask their owners for vouchers: per owner, oldest
/// first, with when each was queued. An owner is a key while it has copies
/// queued (and then one `asker` task asks it as they come due); at most
/// [`MAX_QUEUED`] copies in all.
#[derive(Debug, Default)]
struct AskQueue {
    by_owner: HashMap<PeerId, Vec<(ObjectId, Instant)>>,
    len: usize,
}

impl AskQueue {
    /// Queues `id` for `owner` at `now`: `Some(true)` if it is the owner's
    /// first (start an asker), `None` if the queue is full.
    fn push(&mut self, owner: PeerId, id: ObjectId, now: Instant) -> Option<bool> {
        if self.len >= MAX_QUEUED {
            return None;
        }
        let ids = self.by_owner.entry(owner).or_default();
        ids.push((id, now));
        self.len += 1;
        Some(ids.len() == 1)
    }

    /// When `owner`'s oldest queued copy is due.
    fn next_due(&self, owner: PeerId) -> Option<Instant> {
        self.by_owner.get(&owner).and_then(|q| q.first()).map(|(_, at)| *at + ASK_AFTER)
    }

    /// Takes `owner`'s copies due at `now` (all of them if `None`): their
    /// ids, and when the next of the rest is due (`None`: no more, and
    /// `owner` is no longer a key, so the next copy queued for it starts a
    /// new asker).
    fn take(&mut self, owner: PeerId, now: Option<Instant>) -> (Vec<ObjectId>, Option<Instant>) {
        let Some(q) = self.by_owner.get_mut(&owner) else { return (Vec::new(), None) };
        let n = match now {
            None => q.len(),
            Some(now) => q.partition_point(|(_, at)| *at + ASK_AFTER <= now),
        };
        let due: Vec<ObjectId> = q.drain(..n).map(|(id, _)| id).collect();
        self.len -= due.len();
        let next = self.next_due(owner);
        if next.is_none() {
            self.by_owner.remove(&owner);
        }
        (due, next)
    }

    /// The owners with copies queued.
    fn owners(&self) -> Vec<PeerId> {
        self.by_owner.keys().copied().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_copy_is_asked_for_once_held_long_enough_and_the_owner_leaves_when_empty() {
        let mut q = AskQueue::default();
        let (a, b) = (PeerId::random(), PeerId::random());
        let t0 = Instant::now();
        let (x, y, z) = (ObjectId::fresh(), ObjectId::fresh(), ObjectId::fresh());
        assert_eq!(q.push(a, x, t0), Some(true), "a's first copy starts an asker");
        assert_eq!(q.push(a, y, t0 + ASK_AFTER / 2), Some(false));
        assert_eq!(q.push(b, z, t0), Some(true), "owners are independent");
        assert_eq!(q.next_due(a), Some(t0 + ASK_AFTER));

        // Nothing is due before its copy is ASK_AFTER old.
        assert_eq!(q.take(a, Some(t0 + ASK_AFTER / 2)), (vec![], Some(t0 + ASK_AFTER)));
        // At t0 + ASK_AFTER, x is due and y (queued later) waits.
        assert_eq!(q.take(a, Some(t0 + ASK_AFTER)), (vec![x], Some(t0 + ASK_AFTER * 3 / 2)));
        assert_eq!(q.take(a, Some(t0 + ASK_AFTER * 2)), (vec![y], None));
        assert!(!q.owners().contains(&a), "an owner with nothing queued is no key");
        assert_eq!(q.push(a, x, t0 + ASK_AFTER * 2), Some(true), "its next copy starts a new asker");

        // A flush takes everything, due or not.
        assert_eq!(q.take(b, None), (vec![z], None));
        assert_eq!(q.take(a, None), (vec![x], None));
        assert!(q.owners().is_empty());
        assert_eq!(q.len, 0);
    }

    #[test]
    fn the_queue_is_bounded_in_all() {
        let mut q = AskQueue::default();
        let t0 = Instant::now();
        let owner = PeerId::random();
        for _ in 0..MAX_QUEUED {
            assert!(q.push(owner, ObjectId::fresh(), t0).is_some());
        }
        assert_eq!(q.push(PeerId::random(), ObjectId::fresh(), t0), None, "full, whichever owner");
        let (taken, next) = q.take(owner, None);
        assert_eq!((taken.len(), next), (MAX_QUEUED, None));
        assert!(q.push(owner, ObjectId::fresh(), t0).is_some(), "room again");
    }
}
