//! Results of work running elsewhere: the promises this node made for the
//! tasks and actor calls it sent to peers.
//!
//! A task placed on peer `E` gets a *promise*: a remote cell whose id `X`
//! this node chose and whose owner hint is this node (the submitter owns
//! the result, as in Ray). `E` runs the task with output id `X`, keeps the
//! output pinned for us and sends `Done(X)`: the value inline if it is at
//! most 100 KB, else only its size (it stays on `E`). The promise is
//! filled when a reader demands it (`get`, `wait`, a task taking it): from
//! the inline bytes at once, or by fetching from `E`.
//!
//! States of an entry: `Waiting` (maybe with a reader's parked fetch) until
//! its completion, then `Done`; a result that stayed on a lost executor
//! goes back to `Waiting` when it is rebuilt.
//!
//! Invariants:
//! - an entry lives from submission until the promise is dropped; its
//!   argument refs are kept until `Done`, and after it for a result that
//!   stays on `E` (its lineage, to run it again if `E` is lost before the
//!   value is read);
//! - a parked `Fetch` is handed out exactly once, and completed by the
//!   caller outside the lock (completing wakes readers, which may call
//!   back into the node);
//! - refs are never dropped under the lock: every method that takes refs
//!   out of an entry drops them after releasing it (the last drop of a
//!   promise calls back into [`Results::remove`]);
//! - waiters of [`Results::wait_settled`] are woken whenever an entry
//!   leaves `Waiting`.

use crate::cluster::placement::Need;
use crate::sync::lock_unpoisoned;
use crate::wire::mail::{Completion, Opts};
use libp2p::PeerId;
use manta::backend::Fetch;
use manta::{AnyRef, Error, ObjectId};
use std::collections::HashMap;
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

/// Largest encoded argument tuple a result that stays on its executor
/// keeps as lineage (bigger ones cannot be rebuilt if that node is lost).
pub(super) const MAX_LINEAGE_ARGS: usize = 1 << 20;

/// How to submit a task again (after `Busy`, or its node's death).
pub(super) struct Retry {
    pub(super) func: String,
    pub(super) args: Vec<u8>,
    pub(super) opts: Opts,
    pub(super) need: Need,
    pub(super) hops: u32,
    pub(super) excluded: Vec<PeerId>,
    /// Set by `.on(peer)`: only that node may run it.
    pub(super) pinned: Option<PeerId>,
}

/// Where a result stands.
enum ResultState {
    /// Not done; a reader's fetch may be parked here.
    Waiting(Option<Fetch>),
    /// Done on the executor.
    Done(Completion),
}

/// One result of work sent elsewhere.
struct Pending {
    peer: PeerId,
    state: ResultState,
    /// Tasks: how to place it again. Actor calls: `None`.
    retry: Option<Retry>,
    /// Actor calls: the actor's name (for errors).
    actor: Option<String>,
    /// The argument refs, kept alive until `Done`.
    keep: Vec<AnyRef>,
    /// Set when the task ran here after all (fallback): its output.
    local: Option<AnyRef>,
    /// Set when its executor was declared dead after the result stayed
    /// there: a reader rebuilds it without asking that node (which, if it
    /// comes back from a partition, has let it go).
    executor_died: bool,
}

/// What a completion did to its entry.
pub(super) enum Settled {
    /// No such entry (its promise was dropped, or this is a duplicate).
    Unknown,
    /// From another executor than the entry's, or already done: ignored.
    Stale,
    /// Done now; a reader's fetch, if one was parked, to fill.
    Now(Option<Fetch>),
}

/// What to do with a reader's fetch of a result.
pub(super) enum Demand {
    /// Not one of ours: fetch it as usual.
    NotOurs(Fetch),
    /// Not done yet: parked until the completion comes.
    Parked,
    /// It stayed on an executor declared dead since: rebuild it.
    Lost(Fetch),
    /// Done on `from` (or here, with `local` its output).
    Done { fetch: Fetch, completion: Completion, from: PeerId, local: Option<AnyRef> },
}

/// The promises of this node's work running elsewhere.
#[derive(Default)]
pub(super) struct Results {
    map: Mutex<HashMap<ObjectId, Pending>>,
    /// Notified when a result settles (done or failed).
    settled: Condvar,
}

impl Results {
    /// True if `id` is the result of work this node sent elsewhere.
    pub(super) fn contains(&self, id: ObjectId) -> bool {
        lock_unpoisoned(&self.map).contains_key(&id)
    }

    /// True if `id` is one of our results and not done yet (a task of the
    /// backlog whose promise was dropped or settled meanwhile is not sent).
    pub(super) fn is_waiting(&self, id: ObjectId) -> bool {
        lock_unpoisoned(&self.map).get(&id).is_some_and(|p| matches!(p.state, ResultState::Waiting(_)))
    }

    /// Waits until result `id` is done wherever it runs; true if it is (or
    /// is not one of ours) within `timeout`.
    pub(super) fn wait_settled(&self, id: ObjectId, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut map = lock_unpoisoned(&self.map);
        loop {
            match map.get(&id) {
                Some(Pending { state: ResultState::Waiting(_), .. }) => {}
                _ => return true,
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            map = self.settled.wait_timeout(map, left).unwrap_or_else(|p| p.into_inner()).0;
        }
    }

    /// Bytes of `refs` held here, and held by each peer (results that
    /// stayed on their executors), for placement.
    pub(super) fn arg_bytes(&self, refs: &[AnyRef]) -> (u64, HashMap<PeerId, u64>) {
        let mut local = 0u64;
        let mut peers: HashMap<PeerId, u64> = HashMap::new();
        let map = lock_unpoisoned(&self.map);
        for r in refs {
            if let Some(b) = r.stored_bytes() {
                local += b as u64;
            } else if let Some(p) = map.get(&r.id()) {
                match &p.state {
                    ResultState::Done(Completion::Stays(n)) => *peers.entry(p.peer).or_default() += n,
                    ResultState::Done(Completion::Inline(b)) => local += b.len() as u64,
                    _ => {}
                }
            }
        }
        (local, peers)
    }

    /// Records a promise that is already failed with `e` (made by `me`).
    pub(super) fn insert_failed(&self, id: ObjectId, me: PeerId, e: &Error) {
        let state = ResultState::Done(Completion::Failed(e.into()));
        let p =
            Pending { peer: me, state, retry: None, actor: None, keep: Vec::new(), local: None, executor_died: false };
        lock_unpoisoned(&self.map).insert(id, p);
    }

    /// Records an actor call sent to `host`, keeping `keep` until it is done.
    pub(super) fn insert_call(&self, id: ObjectId, host: PeerId, actor: String, keep: Vec<AnyRef>) {
        let state = ResultState::Waiting(None);
        let p = Pending { peer: host, state, retry: None, actor: Some(actor), keep, local: None, executor_died: false };
        lock_unpoisoned(&self.map).insert(id, p);
    }

    /// Records task `id` as submitted to `peer` (a new entry, or one placed
    /// again: a reader's parked fetch stays parked).
    pub(super) fn submitted(&self, id: ObjectId, peer: PeerId, retry: Retry, keep: Vec<AnyRef>) {
        let old = {
            let mut map = lock_unpoisoned(&self.map);
            match map.get_mut(&id) {
                Some(p) => {
                    p.peer = peer;
                    p.retry = Some(retry);
                    Some(std::mem::replace(&mut p.keep, keep))
                }
                None => {
                    let state = ResultState::Waiting(None);
                    let p = Pending {
                        peer,
                        state,
                        retry: Some(retry),
                        actor: None,
                        keep,
                        local: None,
                        executor_died: false,
                    };
                    map.insert(id, p);
                    None
                }
            }
        };
        drop(old); // after the lock
    }

    /// `Done(id)` arrived from `from`: keeps the completion for the first
    /// reader, or hands back a parked fetch to fill with it.
    pub(super) fn done(&self, from: PeerId, id: ObjectId, completion: &Completion) -> Settled {
        let keep;
        let parked = {
            let mut map = lock_unpoisoned(&self.map);
            let Some(p) = map.get_mut(&id) else { return Settled::Unknown };
            if p.peer != from || !matches!(p.state, ResultState::Waiting(_)) {
                return Settled::Stale;
            }
            // A result that stays on its executor keeps its lineage (how to
            // run the task again, and its arguments alive) while the promise
            // lives, to rebuild it if that node is lost.
            let lineage = matches!(completion, Completion::Stays(_))
                && p.retry.as_ref().is_some_and(|r| r.args.len() <= MAX_LINEAGE_ARGS);
            keep = if lineage { Vec::new() } else { std::mem::take(&mut p.keep) };
            p.executor_died = false;
            if !lineage {
                p.retry = None;
            }
            match std::mem::replace(&mut p.state, ResultState::Done(completion.clone())) {
                ResultState::Waiting(f) => f,
                ResultState::Done(_) => None,
            }
        };
        drop(keep); // after the lock
        self.settled.notify_all();
        Settled::Now(parked)
    }

    /// Completes result `id` with `completion` (a failure, no retry left)
    /// unless it is done: the peer it was counted on, and a parked fetch.
    pub(super) fn fail(&self, id: ObjectId, completion: &Completion) -> Option<(PeerId, Option<Fetch>)> {
        let keep;
        let out = {
            let mut map = lock_unpoisoned(&self.map);
            let p = map.get_mut(&id)?;
            // (A done entry gives up its lineage, and keeps its completion.)
            keep = std::mem::take(&mut p.keep);
            p.retry = None;
            match &mut p.state {
                ResultState::Waiting(f) => {
                    let parked = f.take();
                    p.state = ResultState::Done(completion.clone());
                    Some((p.peer, parked))
                }
                ResultState::Done(_) => None,
            }
        };
        drop(keep); // after the lock
        if out.is_some() {
            self.settled.notify_all();
        }
        out
    }

    /// A reader's fetch of `fetch.id()` (see [`Demand`]).
    pub(super) fn demand(&self, fetch: Fetch) -> Demand {
        let mut map = lock_unpoisoned(&self.map);
        let Some(p) = map.get_mut(&fetch.id()) else { return Demand::NotOurs(fetch) };
        match &mut p.state {
            ResultState::Waiting(slot) => {
                *slot = Some(fetch);
                Demand::Parked
            }
            ResultState::Done(Completion::Stays(_)) if p.executor_died && p.local.is_none() => Demand::Lost(fetch),
            ResultState::Done(c) => Demand::Done { fetch, completion: c.clone(), from: p.peer, local: p.local.clone() },
        }
    }

    /// A fetch of one of our results found no holder: if it stayed on its
    /// executor and kept its lineage, the entry waits again (with the fetch
    /// parked, the executor excluded from now on) and the lost executor is
    /// returned, to run the task again; otherwise the fetch comes back.
    pub(super) fn lost(&self, fetch: Fetch) -> Result<PeerId, Fetch> {
        let mut map = lock_unpoisoned(&self.map);
        let Some(p) = map.get_mut(&fetch.id()) else { return Err(fetch) };
        let rebuildable = matches!(p.state, ResultState::Done(Completion::Stays(_))) && p.local.is_none();
        let Some(retry) = p.retry.as_mut().filter(|_| rebuildable) else { return Err(fetch) };
        retry.excluded.push(p.peer);
        p.state = ResultState::Waiting(Some(fetch));
        p.executor_died = false;
        Ok(p.peer)
    }

    /// Forgets result `id` (its promise was dropped): the peer it was on.
    pub(super) fn remove(&self, id: ObjectId) -> Option<PeerId> {
        let p = lock_unpoisoned(&self.map).remove(&id)?;
        Some(p.peer) // `p`'s refs (and parked fetch) are dropped here, after the lock
    }

    /// Takes task `id`'s retry to place it again (it is still waiting),
    /// with its argument refs; `busy`, the peer that refused it, is
    /// excluded from now on.
    pub(super) fn take_retry(&self, id: ObjectId, busy: Option<PeerId>) -> Option<(Retry, Vec<AnyRef>)> {
        let mut map = lock_unpoisoned(&self.map);
        let p = map.get_mut(&id)?;
        let mut r = p.retry.take()?;
        if !matches!(p.state, ResultState::Waiting(_)) {
            return None; // (a done one gives up its lineage)
        }
        r.hops += 1;
        r.excluded.extend(busy);
        Some((r, std::mem::take(&mut p.keep)))
    }

    /// Task `id` runs here (`me`) after all; false if its promise is gone.
    pub(super) fn runs_here(&self, id: ObjectId, me: PeerId, keep: Vec<AnyRef>) -> bool {
        let old = {
            let mut map = lock_unpoisoned(&self.map);
            let Some(p) = map.get_mut(&id) else { return false };
            p.peer = me;
            std::mem::replace(&mut p.keep, keep)
        };
        drop(old); // after the lock
        true
    }

    /// Records the local output of a task that ran here after all.
    pub(super) fn set_local(&self, id: ObjectId, out: AnyRef) {
        if let Some(p) = lock_unpoisoned(&self.map).get_mut(&id) {
            p.local = Some(out);
        }
    }

    /// Records that call `id`, held while its actor waited, went to `host`.
    pub(super) fn moved(&self, id: ObjectId, host: PeerId) {
        if let Some(p) = lock_unpoisoned(&self.map).get_mut(&id) {
            p.peer = host;
        }
    }

    /// Marks result `id` as made by `me` (so nothing counts it as sent).
    pub(super) fn unsent(&self, id: ObjectId, me: PeerId) {
        if let Some(p) = lock_unpoisoned(&self.map).get_mut(&id) {
            p.peer = me;
        }
    }

    /// `peer` was declared dead: the results that stayed on it are marked
    /// lost (see [`Demand::Lost`]).
    pub(super) fn executor_died(&self, peer: PeerId) {
        for p in lock_unpoisoned(&self.map).values_mut() {
            if p.peer == peer && matches!(p.state, ResultState::Done(Completion::Stays(_))) {
                p.executor_died = true;
            }
        }
    }

    /// The results still waiting on `peer`, with the actor's name for
    /// actor calls.
    pub(super) fn waiting_on(&self, peer: PeerId) -> Vec<(ObjectId, Option<String>)> {
        lock_unpoisoned(&self.map)
            .iter()
            .filter(|(_, p)| p.peer == peer && matches!(p.state, ResultState::Waiting(_)))
            .map(|(id, p)| (*id, p.actor.clone()))
            .collect()
    }
}
