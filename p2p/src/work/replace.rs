//! Placing work again: a submission refused as busy (or undeliverable),
//! the work a dead peer held, a result lost with its executor, and the
//! actors this node created on a dead peer.
//!
//! A task goes to another peer (never one that refused it), or runs here
//! after `max_hops` tries if this node has its resources, or, if every
//! node that could run it refused it as busy, waits in the `backlog` until
//! room may have come; it fails `Infeasible` only if no live node has its
//! resources. One pinned to a node (`.on(peer)`) is asked again after a
//! short pause while that node lives.
//! Actor calls in flight to a dead peer fail with `ActorDead`; actors with
//! restarts left start again elsewhere under the same id, or, if no live
//! node has their resources, wait for one to join (holding the calls made
//! meanwhile) until their restart timeout.
//!
//! Runs on the work layer's event thread (a peer's death) or on whatever
//! thread delivered an ack; never on the swarm's task.
//!
//! Invariants: a task is placed again only while its promise is waiting
//! and holds its retry (taken out while it is placed, so two concurrent
//! re-placements cannot both send it); refs come out of `results` and are
//! handed on or dropped outside its lock.

use super::exec::{completion_of, run_opts};
use super::owned::{HeldCall, Restart};
use super::registry::OnDone;
use super::results::Retry;
use super::Work;
use crate::cluster::placement::{self, Need, Place};
use crate::wire::mail::Mail;
use libp2p::PeerId;
use manta::{AnyRef, Error, ObjectId};
use std::time::Duration;

impl Work {
    /// A submission was refused as busy by `busy` (or its node is gone):
    /// place it again (another peer, or here), or fail it after `max_hops`.
    pub(super) fn replace(&self, id: ObjectId, busy: Option<PeerId>) {
        let Some((retry, keep)) = self.results.take_retry(id, busy) else { return };
        if let Some(peer) = busy {
            self.sent.done(peer);
        }
        if let Some(peer) = retry.pinned {
            return self.ask_again(peer, id, retry, keep);
        }
        let place = if retry.hops > self.cfg.max_hops && self.fits_here(&retry.need) {
            Place::Local
        } else {
            let excluded = retry.excluded.clone();
            self.place(&retry.need, &keep, &excluded)
        };
        match place {
            // Every peer that could run it said busy: it waits (`backlog`).
            Place::Peer(peer) if retry.excluded.contains(&peer) => {
                tracing::debug!(task = %id, "every node that can run it is busy: in the backlog");
                self.backlog.push((id, Retry { excluded: Vec::new(), ..retry }, keep));
            }
            place => self.send_placed(id, place, retry, keep),
        }
    }

    /// Sends task `id` where `place` says, or fails it if infeasible.
    fn send_placed(&self, id: ObjectId, place: Place, retry: Retry, keep: Vec<AnyRef>) {
        match place {
            Place::Peer(peer) => self.submit_to(peer, id, retry, keep),
            Place::Local => self.run_here(id, retry, keep),
            Place::Infeasible { resource, requested, most } => {
                let task = retry.opts.name.clone().unwrap_or_else(|| retry.func.clone());
                let e = Error::Infeasible { task: task.into(), resource: resource.into(), requested, total: most };
                self.fail(id, e)
            }
        }
    }

    /// Places up to `n` tasks of the backlog again (all, for
    /// `usize::MAX`), oldest first; one whose promise is gone or settled
    /// (cancelled, say) is dropped. One whose capable peers are all still
    /// busy is sent to the least loaded of them, and comes back to the
    /// backlog if it refuses.
    pub(super) fn retry_backlog(&self, n: usize) {
        let tasks =
            if n == usize::MAX { self.backlog.take_all() } else { (0..n).map_while(|_| self.backlog.pop()).collect() };
        for (id, retry, keep) in tasks {
            if !self.results.is_waiting(id) {
                continue;
            }
            let place = self.place(&retry.need, &keep, &[]);
            self.send_placed(id, place, retry, keep);
        }
    }

    /// True if this node has enough of every resource `need` names.
    fn fits_here(&self, need: &Need) -> bool {
        placement::short(need, &self.totals()).is_none()
    }

    /// Sends a task pinned to `peer` there again after a pause (only that
    /// node may run it), or fails it if the node is gone.
    fn ask_again(&self, peer: PeerId, id: ObjectId, retry: Retry, keep: Vec<AnyRef>) {
        if !self.is_live_peer(peer) {
            let reason = format!("node {peer} (which the task was pinned to) is gone");
            return self.fail(id, Error::PeerUnreachable { id, reason: reason.into() });
        }
        let w = self.this.clone();
        let pause = Duration::from_millis((1u64 << retry.hops.min(7)).min(100));
        self.tokio.spawn(async move {
            tokio::time::sleep(pause).await;
            if let Some(w) = w.upgrade() {
                w.submit_to(peer, id, Retry { excluded: Vec::new(), ..retry }, keep);
            }
        });
    }

    /// Runs a task placed elsewhere here after all; its completion fills
    /// the promise like a `Done` from ourselves.
    fn run_here(&self, id: ObjectId, retry: Retry, keep: Vec<AnyRef>) {
        if !self.results.runs_here(id, self.me, keep) {
            return;
        }
        let Some(run) = self.registry.function_named(&retry.func) else {
            let reason = format!("not registered on node {}", self.me);
            return self.fail(id, Error::UnknownFunction { name: retry.func.as_str().into(), reason: reason.into() });
        };
        let w = self.this.clone();
        let on_done: OnDone = Box::new(move |res| {
            if let Some(w) = w.upgrade() {
                let me = w.me;
                w.on_done(me, id, completion_of(res));
            }
        });
        match run(&self.rt, &retry.args, &run_opts(&retry.opts), ObjectId::fresh(), Some(on_done)) {
            Ok(out) => self.results.set_local(id, out),
            Err(e) => self.fail(id, Error::InvalidArgument(e.to_string().into())),
        }
    }

    /// A peer that is not a live member has had no connection for a
    /// failure timeout (it may never have sent a heartbeat): its pins and
    /// the actors it created here go.
    pub(super) fn peer_gone(&self, peer: PeerId) {
        tracing::debug!(%peer, "a peer's connections stayed closed: its pins and actors here go");
        self.pins.forget(peer);
        self.hosted.forget_owner(peer);
    }

    /// A peer died: its pins and the actors it created here go; work sent
    /// to it is placed again (tasks) or fails (actor calls); actors this
    /// node created there are restarted elsewhere if they have restarts
    /// left.
    pub(super) fn peer_died(&self, peer: PeerId) {
        // Requests in flight to it give up now (not at their timeout).
        self.deaths.send_modify(|n| *n += 1);
        self.pins.forget(peer);
        self.hosted.forget_owner(peer);
        self.boxes.forget(peer);
        self.send_unfenced();
        let lost = self.results.waiting_on(peer);
        self.results.executor_died(peer);
        self.sent.forget(peer);
        for (id, actor) in lost {
            match actor {
                Some(actor) => {
                    let reason = format!("its node {peer} died");
                    self.fail(id, Error::ActorDead { actor: actor.into(), reason: reason.into() });
                }
                None => self.replace(id, Some(peer)),
            }
        }
        self.restart_lost(peer);
    }

    /// Restarts, from their constructors, the actors this node created that
    /// were hosted on `dead` and have restarts left: each is placed again
    /// (not on `dead`) under the same id, and the creator's handles call
    /// the new host from now on. Calls in flight to `dead` have failed
    /// already. Other nodes' handles still name the old host (a named actor
    /// is published again by its new host, so `get_actor` finds it). One
    /// that no live node can host now waits for one to join (see `owned`).
    fn restart_lost(&self, dead: PeerId) {
        for r in self.owned.lost_on(dead) {
            match self.place(&r.need(), &[], &[dead]) {
                Place::Local => self.restart_on(self.me, &r, Vec::new()),
                Place::Peer(p) => self.restart_on(p, &r, Vec::new()),
                Place::Infeasible { resource, .. } => {
                    tracing::info!(actor = %r.id, class = %r.class, %resource, "actor lost with its node waits for a node with its resources");
                    self.owned.wait(r, dead);
                }
            }
        }
    }

    /// Restarts actor `r` on `host` and sends it the calls `held` for it
    /// meanwhile, in order.
    fn restart_on(&self, host: PeerId, r: &Restart, held: Vec<HeldCall>) {
        tracing::info!(actor = %r.id, class = %r.class, to = %host, "restarting an actor lost with its node");
        let hint = if host == self.me { self.hint().to_vec() } else { self.view.hint_of(host) };
        r.moved_to(host, hint);
        if host == self.me {
            if let Err(e) = self.host_actor(self.me, r.id, &r.class, &r.args, &r.opts) {
                tracing::debug!(actor = %r.id, refusal = ?e, "restart not created here");
            }
        } else {
            let m = Mail::NewActor {
                actor: r.id.to_bytes(),
                class: r.class.clone(),
                args: r.args.clone(),
                opts: r.opts.clone(),
            };
            self.send(host, m);
        }
        for c in held {
            if host == self.me {
                self.call_here(r.id, c);
            } else {
                self.results.moved(c.id, host);
                let m = Mail::Call { actor: r.id.to_bytes(), method: c.method, args: c.args, id: c.id.to_bytes() };
                self.send(host, m);
            }
        }
        // Only now may later calls go straight to the new host.
        r.live();
    }

    /// Runs a call held for an actor restarted here; its result fills the
    /// call's promise like a `Done` from ourselves.
    fn call_here(&self, actor: ObjectId, c: HeldCall) {
        let w = self.this.clone();
        let id = c.id;
        let on_done: OnDone = Box::new(move |res| {
            if let Some(w) = w.upgrade() {
                let me = w.me;
                w.on_done(me, id, completion_of(res));
            }
        });
        match self.try_call(actor, &c.method, &c.args, ObjectId::fresh(), Some(on_done)) {
            Ok(out) => self.results.set_local(id, out),
            Err(e) => self.fail(id, e),
        }
    }

    /// Restarts the waiting actors that a live node can host now, and
    /// fails those whose restart timeout has passed (on every tick and
    /// whenever a node joins).
    pub(super) fn retry_waiting(&self) {
        for (id, need, dead) in self.owned.waiting() {
            let host = match self.place(&need, &[], &[dead]) {
                Place::Local => self.me,
                Place::Peer(p) => p,
                Place::Infeasible { .. } => continue,
            };
            self.owned.resume(id, |w| self.restart_on(host, &w.restart, w.calls));
        }
        let expired = self.owned.expire(|w| {
            let r = &w.restart;
            let needs: Vec<String> = r.opts.resources.iter().map(|(n, a)| format!("{a} of resource `{n}`")).collect();
            let needs = if needs.is_empty() { format!("{} CPU", r.opts.cpus) } else { needs.join(", ") };
            let reason = format!(
                "its node {} died and no live node had {needs} to restart it on within its restart timeout ({:?})",
                w.dead,
                r.restart_timeout()
            );
            Error::ActorDead { actor: r.class.as_str().into(), reason: reason.into() }
        });
        for (e, calls) in expired {
            for c in calls {
                self.fail(c.id, e.clone());
            }
        }
    }
}
