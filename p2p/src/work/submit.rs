//! Remote work, submitter side: placing and sending tasks and actor calls,
//! taking their completions and refusals, and filling a reader's fetch of
//! a result (from the inline bytes, from its executor, or by running the
//! task again if its executor was lost).
//!
//! Invariants: a `Fetch` taken out of `results` is completed (or handed to
//! the fetcher) after the lock is released; a submission is counted in
//! `sent` when it is sent and uncounted exactly once, by its `Done`, its
//! refusal or its peer's death (`fail_unsent` and `Results::unsent` keep a
//! refused one from being uncounted twice).

use super::args::Data;
use super::results::{Demand, Retry, Settled};
use super::Work;
use crate::cluster::placement::{self, Local, Need, Place};
use crate::probe::{self, Stage};
use crate::transport::fetch::decode_in;
use crate::transport::MailError;
use crate::wire::mail::{Ack, Completion, Mail, Refusal};
use libp2p::PeerId;
use manta::backend::{Fetch, Served};
use manta::{AnyRef, Error, ObjectId, ObjectRef, Runtime};

/// How long actor calls refused as busy wait before they are sent again.
const CALL_RETRY_PAUSE: std::time::Duration = std::time::Duration::from_millis(5);

/// Fills a fetch from a completion; gives it back (with the peer to read
/// from) if the value must be fetched. Refs inside the value bind to `rt`.
fn deliver(rt: &Runtime, fetch: Fetch, completion: &Completion, from: PeerId) -> Option<(Fetch, PeerId)> {
    match completion {
        Completion::Inline(bytes) => {
            let id = fetch.id();
            let r = decode_in(rt, &fetch, &mut &bytes[..]).map_err(|m| Error::ObjectLost {
                id,
                reason: format!("the result from {from} does not decode: {m}").into(),
            });
            fetch.complete(r);
            None
        }
        Completion::Stays(_) => Some((fetch, from)),
        Completion::Failed(e) => {
            fetch.complete(Err(e.clone().into()));
            None
        }
    }
}

impl Work {
    /// Decides where a task runs (see `placement`).
    pub(super) fn place(&self, need: &Need, refs: &[AnyRef], excluded: &[PeerId]) -> Place {
        let (arg_bytes, bytes) = self.results.arg_bytes(refs);
        let sent = self.sent.snapshot();
        let full: Vec<PeerId> = sent
            .iter()
            // A peer accepts at most its share from one node (if it has our
            // bound): more would only come back `Busy`.
            .filter(|(_, n)| **n >= self.accepted.per_peer())
            .map(|(p, _)| *p)
            .chain(excluded.iter().copied())
            .collect();
        let local = Local {
            totals: self.totals(),
            queued: self.rt.queued_tasks(),
            threshold: self.cfg.threshold,
            arg_bytes,
            fn_hash: self.registry.hash(),
        };
        placement::choose(need, &local, &self.view.members(), &sent, &bytes, &full)
    }

    /// `(name, total)` of every resource of this node (`"CPU"` included).
    pub(super) fn totals(&self) -> Vec<(String, f64)> {
        self.rt.resources().into_iter().map(|(n, t, _)| (n.to_string(), t)).collect()
    }

    /// A promise that is already failed with `e`.
    pub(super) fn failed_promise<R: Data>(&self, e: Error) -> ObjectRef<R> {
        let r = self.rt.backend().remote_promise::<R>(self.hint());
        self.results.insert_failed(r.id(), self.me, &e);
        r
    }

    /// Sends a new task to `peer`; its result's promise.
    pub(super) fn submit_new<R: Data>(&self, peer: PeerId, retry: Retry, keep: Vec<AnyRef>) -> ObjectRef<R> {
        let r = self.rt.backend().remote_promise::<R>(self.hint());
        self.submit_to(peer, r.id(), retry, keep);
        r
    }

    /// Records a submission of task `id` to `peer` and sends it.
    pub(super) fn submit_to(&self, peer: PeerId, id: ObjectId, retry: Retry, keep: Vec<AnyRef>) {
        let m = Mail::Submit {
            id: id.to_bytes(),
            func: retry.func.clone(),
            args: retry.args.clone(),
            opts: retry.opts.clone(),
        };
        tracing::trace!(%peer, object = %id, func = %retry.func, hops = retry.hops, "task sent");
        self.sent.add(peer);
        self.traffic.task_sent();
        self.rt.backend().record_submit(id, || peer.to_string().into());
        self.results.submitted(id, peer, retry, keep);
        self.send(peer, m);
        probe::mark(Stage::TaskQueued);
    }

    /// Sends a call of `method` on actor `actor` (of type `class`) to its
    /// host; its result's promise. A `manta_p2p.call` span (trace).
    pub(super) fn call_remote<R: Data>(
        &self,
        host: PeerId,
        actor: ObjectId,
        class: &str,
        method: &str,
        args: Vec<u8>,
        keep: Vec<AnyRef>,
    ) -> ObjectRef<R> {
        let r = self.rt.backend().remote_promise::<R>(self.hint());
        let span =
            tracing::trace_span!("manta_p2p.call", actor = %class, actor_id = %actor, %method, %host, object = %r.id());
        let _entered = span.enter();
        tracing::trace!(args = args.len(), "actor call sent");
        self.results.insert_call(r.id(), host, class.to_string(), keep);
        let call = Mail::Call { actor: actor.to_bytes(), method: method.to_string(), args, id: r.id().to_bytes() };
        self.traffic.call_sent();
        self.send(host, call);
        r
    }

    /// `Done(id)` arrived from `from` (or was made here): fills a parked
    /// fetch, or keeps the completion for the first reader.
    pub(super) fn on_done(&self, from: PeerId, id: ObjectId, completion: Completion) {
        tracing::trace!(%from, %id, "done");
        let parked = match self.results.done(from, id, &completion) {
            Settled::Stale => return,
            Settled::Unknown => None,
            Settled::Now(parked) => parked,
        };
        if from != self.me {
            self.sent.done(from);
            // It has room for one more: a task of the backlog may go.
            self.retry_backlog(1);
        }
        if let Some((f, peer)) = parked.and_then(|f| deliver(&self.rt, f, &completion, from)) {
            self.fetch_from(f, peer);
        }
        probe::mark(Stage::DoneApplied);
    }

    /// Completes a result with an error (no retry left).
    pub(super) fn fail(&self, id: ObjectId, e: Error) {
        let completion = Completion::Failed((&e).into());
        let Some((peer, parked)) = self.results.fail(id, &completion) else { return };
        if peer != self.me {
            self.sent.done(peer);
        }
        if let Some(f) = parked {
            deliver(&self.rt, f, &completion, peer);
        }
    }

    /// [`Work::fail`] for a submission no longer counted as sent.
    fn fail_unsent(&self, id: ObjectId, e: Error) {
        self.results.unsent(id, self.me); // so `fail` does not uncount it again
        self.fail(id, e);
    }

    /// A reader demands `fetch.id()`: one of our results is filled from (or
    /// parked in) its entry; anything else is fetched from its holders.
    pub(crate) fn demand(&self, fetch: Fetch) {
        let (fetch, from, local, completion) = match self.results.demand(fetch) {
            Demand::Parked => return,
            Demand::NotOurs(fetch) => return self.fetcher.start(fetch, None),
            Demand::Lost(fetch) => {
                let id = fetch.id();
                let why = Error::ObjectLost { id, reason: "its executor was declared dead".into() };
                if let Some(fetch) = self.rebuild_lost(fetch, &why) {
                    fetch.complete(Err(why));
                }
                return;
            }
            Demand::Done { fetch, completion, from, local } => (fetch, from, local, completion),
        };
        if let (Completion::Stays(_), Some(local)) = (&completion, local) {
            return self.read_local(fetch, &local);
        }
        if let Some((fetch, peer)) = deliver(&self.rt, fetch, &completion, from) {
            self.fetch_from(fetch, peer);
        }
    }

    /// Fills a fetch of a result that ran here after all from our copy.
    fn read_local(&self, fetch: Fetch, local: &AnyRef) {
        let id = fetch.id();
        let r = match self.rt.backend().serve_object(local.id(), 0, usize::MAX) {
            Served::Chunk { data, .. } => decode_in(&self.rt, &fetch, &mut &data[..])
                .map_err(|m| Error::ObjectLost { id, reason: m.to_string().into() }),
            Served::Failed(e) => Err(e),
            _ => Err(Error::ObjectLost { id, reason: "the local copy is gone".into() }),
        };
        fetch.complete(r);
    }

    /// A fetch of `fetch.id()` found no holder (`why`). If it is one of our
    /// task results that stayed on its executor and kept its lineage, the
    /// task is placed again under the same id (not on that executor), the
    /// fetch waits for the new `Done`, and `None` is returned (Ray's object
    /// reconstruction). Otherwise the fetch is handed back to fail.
    pub(super) fn rebuild_lost(&self, fetch: Fetch, why: &Error) -> Option<Fetch> {
        let id = fetch.id();
        let lost = match self.results.lost(fetch) {
            Ok(peer) => peer,
            Err(fetch) => return Some(fetch),
        };
        tracing::info!(object = %id, executor = %lost, %why, "result lost: running its task again");
        if self.is_live_peer(lost) {
            // It may still hold a copy we cannot reach: let it go.
            self.send(lost, Mail::Release(vec![serde_bytes::ByteArray::new(id.to_bytes())]));
        }
        self.replace(id, None);
        None
    }

    /// Starts a fetch from `peer`.
    fn fetch_from(&self, fetch: Fetch, peer: PeerId) {
        self.fetcher.start(fetch, Some(peer));
    }

    /// True if `id` is one of our results not held here yet (a peer asks
    /// for it: it is fetched first, then served).
    pub(crate) fn prefetch_result(&self, id: ObjectId) -> bool {
        if !self.results.contains(id) {
            return false;
        }
        if let Some(r) = self.rt.backend().pin_object(id) {
            r.prefetch();
        }
        true
    }

    /// Our promise `id` was dropped: forget it and let the executor unpin.
    pub(super) fn promise_dropped(&self, id: ObjectId) -> bool {
        let Some(peer) = self.results.remove(id) else { return false };
        if peer != self.me {
            // (If it is not done, it counts as sent until its `Done` comes.)
            // Fenced: refs read out of the result were borrowed from their
            // owners first, before the executor may let them go.
            self.send_fenced(peer, Mail::Release(vec![serde_bytes::ByteArray::new(id.to_bytes())]));
        }
        true
    }

    /// A batch sent to `to` was acknowledged: refused submissions are
    /// placed again or failed, calls refused as busy go again, in order.
    pub(super) fn acked(&self, to: PeerId, sent: Vec<Mail>, ack: Ack) {
        self.send_unfenced();
        if let Some(why) = ack.invalid {
            tracing::error!(peer = %to, %why, "a peer refused our mail batch as invalid");
            return self.undeliverable(to, sent, &MailError::Invalid(why));
        }
        let mut busy_calls = Vec::new();
        for (i, refusal) in ack.refused {
            if let (Some(m @ Mail::Call { .. }), Refusal::Busy) = (sent.get(i as usize), &refusal) {
                busy_calls.push(m.clone());
                continue;
            }
            let Some(Mail::Submit { id, func, .. }) = sent.get(i as usize) else { continue };
            let id = ObjectId::from_bytes(*id);
            match refusal {
                Refusal::Busy => self.replace(id, Some(to)),
                Refusal::Refused(e) => {
                    tracing::debug!(peer = %to, %func, "submission refused");
                    self.sent.done(to);
                    // `fail` would not count it again: it is no longer sent.
                    let mut e: Error = e.into();
                    if let Error::UnknownFunction { name, reason } = &e {
                        e = Error::UnknownFunction {
                            name: name.clone(),
                            reason: format!("{reason} (node {to})").into(),
                        };
                    }
                    self.fail_unsent(id, e);
                }
            }
        }
        if !busy_calls.is_empty() {
            // The actor's node is full: the calls go again, in order, soon.
            self.boxes.retry_front(to, busy_calls, CALL_RETRY_PAUSE);
        }
    }

    /// A batch could not be delivered to `to`: its submissions are placed
    /// again, its calls fail with `ActorDead`, as calls in flight to a
    /// host that dies do (the README's fault table; Ray's `RayActorError`):
    /// a host that cannot be reached over the lane or libp2p has, for its
    /// callers, lost the actor (a creator with restarts left rebuilds it
    /// elsewhere once the host is declared dead).
    pub(super) fn undeliverable(&self, to: PeerId, sent: Vec<Mail>, why: &MailError) {
        self.send_unfenced();
        tracing::debug!(peer = %to, %why, n = sent.len(), "mail undeliverable");
        for m in sent {
            match m {
                Mail::Submit { id, .. } => self.replace(ObjectId::from_bytes(id), Some(to)),
                Mail::Call { id, actor, .. } => {
                    let id = ObjectId::from_bytes(id);
                    let actor = ObjectId::from_bytes(actor).to_string();
                    let reason = format!("its host {to} could not be reached: {why}");
                    self.fail(id, Error::ActorDead { actor: actor.into(), reason: reason.into() });
                }
                _ => {}
            }
        }
    }
}
