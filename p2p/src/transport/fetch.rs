//! Client side of a remote `get`: one async task per fetched object.
//!
//! The first try of each holder goes through the holder's batch queue
//! (`batch`): small objects demanded together come in one exchange, and
//! anything the batch did not bring is pulled alone as below.
//! The task tries holders in order: the ref's owner hint first, then the
//! providers Kademlia returns for the object's id. From one holder it pulls
//! the object's CBOR encoding: the first `BULK_FROM` bytes (a chunk, if the
//! lane is off) by `Request::Fetch` over the stream pool (`rpc`). An object
//! that fits is decoded right away. For a bigger one the holder is asked
//! for a bulk-lane ticket (`bulk`) and the rest streams over its own TCP
//! connection, decoded on a blocking thread as it arrives. Without a lane
//! (either side, or the lane is unreachable) the rest comes in chunks, with
//! up to `window` requests in flight, decoded on a blocking thread through
//! a channel of `window` chunks. Either way it goes straight into the
//! replica: memory beyond the replica stays under `2 * window * chunk`
//! bytes (one record on the lane) whatever the object's size. If the holder
//! fails (an error reply, a timeout, a lost connection, bytes that do not
//! decode or authenticate) the next holder is tried from the start (a
//! replica's encoding need not be byte-identical to the owner's); one that
//! could not be reached, or whose stream broke, first gets one more try
//! (in chunks if it was its lane that broke).
//! With no holder left the object fails with `PeerUnreachable` if some
//! holder could not be reached, else `ObjectLost`.
//!
//! Content: bytes from the owner the ref's hint names are trusted (Noise
//! authenticates its peer id), as are those from the executor this node
//! chose for its own task's result (`first`). Any other holder (a replica,
//! a DHT provider) is first asked for the owner's voucher (`vouch`): one
//! that is missing, not for this id, or not signed by the owner's key gets
//! the holder refused before any byte is read; otherwise its bytes are
//! checked against the voucher's length and BLAKE3 hash (in chunks, not over
//! the lane: hashed as they are decoded) and the object is stored only if
//! they match. A refused holder is a `debug!` line and a count
//! (`p2p_holders_rejected_total`), and the next one is tried; if every
//! holder that had it was refused so, the object fails with `Unverified`.
//!
//! Owner death: a peer declared dead (by the member table) is not asked
//! (not even the owner the hint names, nor a provider whose record
//! outlived it), and a request in flight to a holder that is declared dead
//! meanwhile (a partition: no reply would come before the request timeout)
//! is given up at once. So a ref whose owner died is still read
//! from any live node that holds the object in full (a replica, announced
//! in the DHT); if there is none, it fails with `OwnerDied` naming the
//! owner as soon as the DHT has answered, never waiting for the owner.
//! A holder skipped so that is back by then (a healed partition: the
//! member table revived it while the DHT answered) is asked after all,
//! once, before the fetch fails.
//!
//! The message lane (`fetch_lane`): with a lane up to the first holder, a
//! fetch is first sent there from the caller's thread, and comes here only
//! if that does not bring it. Pulling the bytes from one holder (chunks,
//! bulk lane, the content check) is `fetch_pull`.
//!
//! Invariant: the `Fetch` is owned by exactly one place at a time (the
//! lane's tag table, this task, or the decoder thread of the current
//! attempt, which hands it back on failure) and is completed exactly once; if the task is dropped (node
//! shutdown) the `Fetch`'s drop fails the object instead of leaving it
//! pending.

use super::batch::Batcher;
use super::bulk::{self, LaneError, Pass, PeerIps};
use super::busy::BusyBackoff;
use super::chunks::{ChunkReader, Interrupted};
use super::lane;
use super::lanes::Lanes;
use super::rpc::{CallError, ChunkBytes, Pool, Reply};
use super::vouch::{VoucherError, Vouchers};
use super::{Directory, Rebuilder, Streams};
use crate::probe::{self, Stage};
use crate::sync::lock_unpoisoned;
use crate::wire::seal::{HelloKey, Secret};
use crate::wire::signed::{digest_of, Digest, Hasher};
use crate::wire::{hint, Request, Response};
use fetch_pull::pull;
use futures::stream::FuturesOrdered;
use futures::StreamExt;
use libp2p::PeerId;
use manta::backend::{DecodeError, Decoded, Fetch, Transfer};
use manta::{Error, ObjectId, Runtime, TransferDirection, TransferLane};
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;
use tokio::sync::mpsc;
use tracing::Instrument;

/// Bound of `Fetcher::known` (cleared when full: it is only a cache).
const MAX_KNOWN: usize = 4096;

/// Objects whose encoding is longer than this come over the bulk lane
/// (when both sides have one); shorter ones in one reply.
const BULK_FROM: usize = 256 << 10;

/// How a fetcher is set up (from the node's settings).
pub(crate) struct FetcherConfig {
    /// This node (never asked for an object).
    pub(crate) me: PeerId,
    /// Where fetch tasks run.
    pub(crate) handle: tokio::runtime::Handle,
    /// Bound of every request.
    pub(crate) request_timeout: Duration,
    /// Bytes asked for per chunk request.
    pub(crate) chunk: usize,
    /// Chunk requests in flight per transfer.
    pub(crate) window: usize,
    /// Whether to ask holders for their bulk lane.
    pub(crate) bulk: bool,
    /// The cluster's bulk-lane hello key (hellos are MACed with it).
    pub(crate) hello: HelloKey,
    /// The node's traffic counters (transfers in are counted here).
    pub(crate) traffic: Arc<crate::stats::Traffic>,
    /// The node's vouchers (checked for holders other than the owner).
    pub(crate) vouchers: Arc<Vouchers>,
    /// The node's message lanes, if on.
    pub(crate) lanes: Option<Arc<Lanes>>,
}

/// Runs fetches: one async task per fetched object, sharing a stream pool.
pub(crate) struct Fetcher {
    handle: tokio::runtime::Handle,
    pool: Arc<Pool>,
    /// First requests, batched per holder.
    batcher: Arc<Batcher>,
    me: PeerId,
    directory: Arc<dyn Directory>,
    chunk: usize,
    window: usize,
    /// Owners whose hint addresses the swarm already has.
    known: Mutex<HashSet<PeerId>>,
    /// Whether to ask holders for their bulk lane.
    bulk: bool,
    /// The cluster's bulk-lane hello key.
    hello: HelloKey,
    /// Where connected peers are (their lanes listen there).
    peer_ips: PeerIps,
    /// The last resort of a fetch that found no holder.
    rebuilder: Weak<dyn Rebuilder>,
    /// Objects received over peers' bulk lanes.
    bulk_received: AtomicU64,
    /// The node's traffic counters.
    traffic: Arc<crate::stats::Traffic>,
    /// The node's vouchers.
    vouchers: Arc<Vouchers>,
    /// The runtime fetched objects belong to: entered while decoding, so
    /// refs inside a fetched value bind to it.
    rt: Runtime,
    /// The node's message lanes, if on (small gets go there first).
    lanes: Option<Arc<Lanes>>,
    /// Objects received over message lanes.
    lane_gets: AtomicU64,
}

/// Why one holder could not give the object.
#[derive(Debug, thiserror::Error)]
enum HolderError {
    #[error("{0}")]
    Call(#[from] CallError),
    #[error("does not hold it")]
    NotFound,
    #[error("holds it but failed to serve it: {0}")]
    Failed(String),
    /// The holder's copy is an error (the object's task failed).
    #[error("holds it as an error: {0}")]
    Holds(manta::Error),
    #[error("refused our request: {0}")]
    Refused(String),
    #[error("answered busy")]
    Busy,
    #[error("declared dead")]
    Dead,
    #[error("an unexpected reply")]
    Unexpected,
    #[error("sent a chunk that does not fit the object")]
    Misfit,
    #[error("its bytes did not decode: {0}")]
    Decode(#[from] DecodeError),
    #[error("bulk lane: {0}")]
    Lane(#[from] LaneError),
    #[error("content not verified: {0}")]
    Unverified(#[from] VoucherError),
    #[error("content not verified: its bytes ({} bytes, BLAKE3 {}..) do not match the owner's voucher ({} bytes, {}..)", .got.len, hex::encode(&.got.hash[..6]), .expected.len, hex::encode(&.expected.hash[..6]))]
    Mismatch { expected: Digest, got: Digest },
}

impl HolderError {
    /// True if the holder was refused because its content did not verify.
    fn unverified(&self) -> bool {
        matches!(self, HolderError::Unverified(_) | HolderError::Mismatch { .. })
    }
}

/// Checks `bytes` against the content a voucher vouches for, if any.
fn check_bytes(check: Option<Digest>, bytes: &[u8]) -> Result<(), HolderError> {
    match check {
        Some(expected) if bytes.len() as u64 != expected.len || digest_of(bytes) != expected => {
            Err(HolderError::Mismatch { expected, got: digest_of(bytes) })
        }
        _ => Ok(()),
    }
}

/// Why one holder could not give the object, and what to do about it.
struct Failure {
    error: HolderError,
    /// Could not be reached (or its stream broke): worth one more try.
    unreachable: bool,
    /// The holder's bulk lane broke (its next try comes in chunks).
    lane: bool,
}

impl Failure {
    fn refused(error: HolderError) -> Failure {
        Failure { error, unreachable: false, lane: false }
    }
    fn unreachable(error: HolderError) -> Failure {
        Failure { error, unreachable: true, lane: false }
    }
}

impl Fetcher {
    /// A fetcher opening streams through `streams`, asking `directory` for
    /// addresses and providers, reading lane addresses from `peer_ips`,
    /// and handing fetches that found no holder to `rebuilder`.
    pub(crate) fn new(
        cfg: FetcherConfig,
        rt: Runtime,
        streams: Arc<dyn Streams>,
        directory: Arc<dyn Directory>,
        peer_ips: PeerIps,
        rebuilder: Weak<dyn Rebuilder>,
    ) -> Fetcher {
        let pool = Arc::new(Pool::new(streams, cfg.request_timeout));
        Fetcher {
            handle: cfg.handle,
            batcher: Arc::new(Batcher::new(pool.clone())),
            pool,
            me: cfg.me,
            directory,
            chunk: cfg.chunk,
            window: cfg.window,
            known: Mutex::new(HashSet::new()),
            bulk: cfg.bulk,
            hello: cfg.hello,
            peer_ips,
            rebuilder,
            bulk_received: AtomicU64::new(0),
            traffic: cfg.traffic,
            vouchers: cfg.vouchers,
            rt,
            lanes: cfg.lanes,
            lane_gets: AtomicU64::new(0),
        }
    }

    /// Starts a fetch, asking `first` before the owner hint and the DHT. If
    /// the node's tokio runtime has shut down, the fetch is dropped, which
    /// fails the object with `PeerUnreachable`.
    /// The whole get is one `manta_p2p.fetch` span (trace), held until the
    /// fetch ends (on the lane's reply or in `run`).
    pub(crate) fn start(self: &Arc<Self>, fetch: Fetch, first: Option<PeerId>) {
        probe::mark(Stage::GetStart);
        let span = tracing::trace_span!("manta_p2p.fetch", object = %fetch.id(), first = ?first);
        let Err(fetch) = self.try_lane(fetch, first, &span) else { return };
        self.handle.spawn(run(fetch, self.clone(), first, None).instrument(span));
    }

    /// Objects received over message lanes.
    pub(crate) fn lane_gets(&self) -> u64 {
        self.lane_gets.load(Ordering::Relaxed)
    }

    /// True if `peer` was declared dead (never asked for an object).
    fn is_dead(&self, peer: PeerId) -> bool {
        self.rebuilder.upgrade().is_some_and(|r| r.is_dead(peer))
    }

    /// Resolves once `peer` is declared dead (never, if it is not).
    async fn died(&self, peer: PeerId) {
        let deaths = self.rebuilder.upgrade().and_then(|r| r.deaths());
        let Some(mut deaths) = deaths else { return std::future::pending().await };
        loop {
            if self.is_dead(peer) {
                return;
            }
            if deaths.changed().await.is_err() {
                return std::future::pending().await; // the node is going
            }
        }
    }

    /// A request to `peer`, given up as soon as `peer` is declared dead.
    async fn call(&self, peer: PeerId, req: &Request) -> Result<Reply, HolderError> {
        tokio::select! {
            r = self.pool.call(peer, req) => r.map_err(HolderError::Call),
            () = self.died(peer) => Err(HolderError::Dead),
        }
    }

    /// Objects received over peers' bulk lanes.
    pub(crate) fn bulk_received(&self) -> u64 {
        self.bulk_received.load(Ordering::Relaxed)
    }

    /// The holders to try first: `first`, then the owner the hint names
    /// (whose addresses the swarm is given first).
    async fn first_holders(&self, fetch: &Fetch, first: Option<PeerId>) -> VecDeque<PeerId> {
        let mut candidates: VecDeque<PeerId> = first.into_iter().filter(|p| *p != self.me).collect();
        let Some((peer, addrs)) = hint::decode(fetch.owner_hint()) else { return candidates };
        if peer == self.me {
            return candidates;
        }
        // The swarm must know the owner's addresses before we dial it
        // (once per owner: later refs of the same owner skip the trip).
        let known = lock_unpoisoned(&self.known).contains(&peer);
        if !known && self.directory.learn(peer, addrs).await.is_ok() {
            let mut known = lock_unpoisoned(&self.known);
            if known.len() >= MAX_KNOWN {
                known.clear();
            }
            known.insert(peer);
        }
        candidates.push_back(peer);
        candidates
    }
}

/// Runs one fetch to its end.
/// `first`, if given, is asked before the owner hint (a task's executor,
/// which holds its result); `batched`, if given, was just asked for it in
/// a batch (on the lane): its first try skips the batch request.
async fn run(fetch: Fetch, ctx: Arc<Fetcher>, first: Option<PeerId>, batched: Option<PeerId>) {
    probe::mark(Stage::GetTask);
    let id = fetch.id();
    // The owner the ref names (maybe this node): bytes from it, or from the
    // executor this node chose for its own task (`first`), are trusted
    // (Noise authenticates the peer); any other holder's are checked
    // against the owner's voucher.
    let hinted = hint::decode(fetch.owner_hint()).map(|(p, _)| p);
    let owner = hinted.filter(|p| *p != ctx.me);
    let mut candidates = ctx.first_holders(&fetch, first).await;
    let mut tried: HashMap<PeerId, u32> = HashMap::new();
    let mut lane_broken: HashSet<PeerId> = HashSet::new();
    let mut asked_dht = false;
    // Holders not asked because this node had declared them dead; one
    // that is back (its partition healed) by the end gets its try then.
    let mut skipped_dead: Vec<PeerId> = Vec::new();
    let (mut unreachable, mut refused, mut unverified) = (Vec::new(), Vec::new(), Vec::new());
    let mut fetch = fetch;
    loop {
        let Some(peer) = candidates.pop_front() else {
            if asked_dht {
                let back: Vec<PeerId> = skipped_dead.extract_if(.., |p| !ctx.is_dead(*p)).collect();
                if back.is_empty() {
                    break;
                }
                for p in back {
                    // One try (as a second attempt: never skipped again).
                    tracing::debug!(object = %id, peer = %p, "declared dead, now back: asked after all");
                    tried.insert(p, 1);
                    candidates.push_back(p);
                }
                continue;
            }
            asked_dht = true;
            let Ok(mut found) = ctx.directory.providers(id).await else { break };
            // In a fixed order (the DHT's is a set's): by peer id.
            found.sort_unstable();
            found.dedup();
            candidates.extend(found.into_iter().filter(|p| *p != ctx.me && !tried.contains_key(p)));
            continue;
        };
        let attempt = tried.get(&peer).copied().unwrap_or(0);
        if attempt >= 2 {
            continue;
        }
        if ctx.is_dead(peer) {
            tracing::debug!(object = %id, %peer, "not asked: declared dead");
            if tried.insert(peer, 2).is_none() {
                skipped_dead.push(peer);
            }
            continue;
        }
        tried.insert(peer, attempt + 1);
        // The owner's voucher, from a holder that must give one.
        let trusted = Some(peer) == hinted || Some(peer) == first;
        let checked = if trusted { Ok(None) } else { voucher_of(&ctx, peer, id, hinted).await.map(Some) };
        // After its lane broke, a holder's next try comes in chunks.
        // A first try may come in a batch of small objects (`batch`).
        let lane = !lane_broken.contains(&peer);
        if owner == Some(peer) {
            // A copy from the owner asks the owner for its voucher (to
            // serve with it), in the background, queued as it is stored
            // (before `get` returns: `NodeBackend::exported`).
            ctx.vouchers.fetching_from_owner(id, peer);
        }
        let pulled = match checked {
            Ok(check) => {
                let digest = check.as_ref().map(|c| c.0);
                let batch = attempt == 0 && batched != Some(peer);
                pull(fetch, peer, &ctx, lane, batch, digest).await.map(|()| check)
            }
            Err(failure) => Err((fetch, failure)),
        };
        ctx.vouchers.fetched(id);
        match pulled {
            Ok(check) => {
                // Stored; `exported` queued its announcement. A copy from a
                // holder keeps the voucher it was checked against.
                if let Some((_, voucher)) = check {
                    ctx.vouchers.keep(id, voucher);
                }
                tracing::trace!(%peer, attempt, "fetched");
                return;
            }
            Err((f, failure)) => {
                fetch = f;
                if let (true, HolderError::Holds(e)) = (trusted, &failure.error) {
                    // The owner, or the executor this node chose, says the
                    // object is this error (its task failed): that is its
                    // value, typed, as it is on the node that made it.
                    tracing::trace!(object = %id, %peer, "an error, from a trusted holder");
                    fetch.complete(Err(e.clone()));
                    return;
                }
                if failure.lane {
                    lane_broken.insert(peer);
                }
                let msg = format!("{peer}: {}", failure.error);
                tracing::debug!(object = %id, "{msg}");
                if failure.error.unverified() {
                    // Refused for good (not asked again); counted.
                    tried.insert(peer, 2);
                    ctx.vouchers.refused_holder();
                    unverified.push(msg);
                } else if failure.unreachable {
                    if attempt == 0 {
                        // A lost connection may be transient: one more try
                        // (on a fresh connection) before the next holder.
                        candidates.push_front(peer);
                    }
                    unreachable.push(msg);
                } else {
                    refused.push(msg);
                }
            }
        }
    }
    let err = match owner.filter(|o| ctx.is_dead(*o)) {
        // Some holder had it but its content did not verify: say so (the
        // owner's fate is in the reason, with the other holders').
        _ if !unverified.is_empty() => {
            let dead = owner.filter(|o| ctx.is_dead(*o)).map(|o| format!("its owner {o} died; "));
            let all: Vec<String> = unverified.into_iter().chain(unreachable).chain(refused).collect();
            Error::Unverified { id, reason: format!("{}{}", dead.unwrap_or_default(), all.join("; ")).into() }
        }
        Some(o) => {
            tracing::warn!(object = %id, owner = %o, "object lost with its owner: no live node holds a copy");
            Error::OwnerDied { id, owner: o.to_string().into() }
        }
        None => final_error(id, unreachable, refused, &skipped_dead),
    };
    // One of this node's task results, lost with its executor: rebuilt.
    let fetch = match ctx.rebuilder.upgrade() {
        Some(r) => match r.rebuild(fetch, &err) {
            Some(f) => f,
            None => return,
        },
        None => fetch,
    };
    fetch.complete(Err(err));
}

/// Asks `peer`, a holder that is not the owner, for the owner's voucher
/// for `id` and checks it against `owner`: the content it vouches for and
/// the voucher. A holder that has none (`null`, `NotFound`: an honest
/// holder has none only if it does not hold the object, say a stale DHT
/// record) is treated as not holding it; one whose voucher does not check
/// is refused as unverified.
async fn voucher_of(
    ctx: &Fetcher,
    peer: PeerId,
    id: ObjectId,
    owner: Option<PeerId>,
) -> Result<(Digest, Arc<[u8]>), Failure> {
    let ask = Request::Vouch { ids: vec![serde_bytes::ByteArray::new(id.to_bytes())] };
    let bytes = match ctx.call(peer, &ask).await {
        Ok(Reply::Other(Response::Vouchers { items })) => items.into_iter().next().flatten(),
        Ok(Reply::Other(Response::NotFound)) => None,
        Ok(Reply::Other(Response::Busy)) => return Err(Failure::unreachable(HolderError::Busy)),
        Ok(_) => return Err(Failure::refused(VoucherError::Reply("not a voucher list").into())),
        Err(e) => return Err(Failure::unreachable(e)),
    };
    let Some(bytes) = bytes else { return Err(Failure::refused(HolderError::NotFound)) };
    ctx.vouchers.check(bytes.into_vec(), id, owner).map_err(|e| Failure::refused(e.into()))
}

/// Decodes a fetched object with `rt` entered, so refs inside the value
/// bind to it (deserializing a ref needs an explicit runtime).
pub(crate) fn decode_in(rt: &Runtime, fetch: &Fetch, r: &mut dyn std::io::Read) -> Result<Decoded, DecodeError> {
    let _entered = rt.enter();
    fetch.decode(r)
}

/// Largest encoding whose decoded replica is stored inline on the async
/// thread (when the store has room for it with a wide margin).
const INLINE_COMPLETE_BYTES: usize = 64 << 10;

/// Completes `fetch` with a replica decoded from `encoded` bytes. Storing
/// it may block (making room in a full store spills other objects), so
/// that runs with `block_in_place`, which hands the tokio worker's core to
/// another thread (a thread wake-up, and one more thread competing for the
/// CPU, on every get); a small replica that clearly fits (four times its
/// encoding and 64 KiB to spare) is stored inline instead: no wait.
fn complete(fetch: Fetch, decoded: Decoded, encoded: usize) {
    // (`fits_now` takes the store's lock once; `store_stats` would read
    // every counter and the lineage lock twice, on every small get.)
    let fits = encoded <= INLINE_COMPLETE_BYTES && fetch.fits_now(4 * encoded + (64 << 10));
    if fits {
        fetch.complete(Ok(decoded));
    } else {
        tokio::task::block_in_place(|| fetch.complete(Ok(decoded)));
    }
}

fn final_error(id: ObjectId, unreachable: Vec<String>, refused: Vec<String>, dead: &[PeerId]) -> Error {
    if !unreachable.is_empty() {
        let all: Vec<String> = unreachable.into_iter().chain(refused).collect();
        Error::PeerUnreachable { id, reason: all.join("; ").into() }
    } else if refused.is_empty() && dead.is_empty() {
        Error::ObjectLost { id, reason: "no node holds it (its owner is unknown and the DHT has no provider)".into() }
    } else if refused.is_empty() {
        let dead: Vec<String> = dead.iter().map(|p| p.to_string()).collect();
        let reason = format!("no live node holds it (declared dead here: {}; no other provider)", dead.join(", "));
        Error::ObjectLost { id, reason: reason.into() }
    } else {
        Error::ObjectLost { id, reason: format!("no holder could serve it: {}", refused.join("; ")).into() }
    }
}

#[path = "fetch_lane.rs"]
mod fetch_lane;
#[path = "fetch_pull.rs"]
mod fetch_pull;
