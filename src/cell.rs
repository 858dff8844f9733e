//! The object cell: one object's id, its slot (the state machine in
//! `slot`), the control block of the task that produces it, and its links
//! to the store (when its bytes are charged) and to a cluster backend (when
//! it is exported or imported). Refs (`refs`) point at cells.
//!
//! Reading a cell ([`ObjectCell::read_value`]) brings a moved-out value
//! back first: from its spill file, or by rebuilding it from lineage.
//! Waiting for a cell ([`ObjectCell::wait_done`]) follows one pattern: spin
//! briefly, register a waiter on the slot, then block with
//! [`block_until`](crate::scheduler::block_until), re-checking the slot
//! after every wake-up.

use crate::error::Error;
use crate::id::ObjectId;
use crate::notify::{Parker, Waiter};
use crate::scheduler::{block_until, spin_until, Job};
use crate::slot::{Meta, Outcome, Read, Slot, Value, Wake};
use crate::store::{Rebuild, SpillHandle, Store};
use std::any::Any;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

/// What ties a cell to a cluster backend's export table (implemented by
/// the `backend` module, the only maker of links; the cell calls it
/// without knowing the backend).
pub(crate) trait Link: Send + Sync + 'static {
    /// The link as `Any`, so the backend module finds its own type again.
    fn as_any(&self) -> &dyn Any;
    /// True for a cell made by deserializing a ref to a remote object.
    fn is_remote(&self) -> bool;
    /// Starts fetching a remote cell's value (once; no-op for local ones).
    fn demand(&self, cell: &Arc<ObjectCell>);
    /// Called from the cell's drop: unregister it, tell the backend.
    fn dropped(&self, id: ObjectId, cell: *const ObjectCell);
}

/// Control block of one task: its name, cancellation flag, and its job
/// once queued (so a worker blocked on the task's result can run it).
#[derive(Debug)]
pub(crate) struct TaskCtl {
    pub name: std::borrow::Cow<'static, str>,
    pub cancelled: AtomicBool,
    pub job: OnceLock<std::sync::Weak<Job>>,
}

impl TaskCtl {
    pub fn new(name: std::borrow::Cow<'static, str>) -> Arc<TaskCtl> {
        Arc::new(TaskCtl { name, cancelled: AtomicBool::new(false), job: OnceLock::new() })
    }

    /// The task's job if it is queued and not started.
    pub fn queued_job(&self) -> Option<Arc<Job>> {
        self.job.get()?.upgrade()
    }

    pub fn name_text(&self) -> crate::error::Text {
        self.name.as_ref().into()
    }
}

/// One object: its id, its slot, the task that produces it, and what the
/// store needs (set once, when a charged value is stored).
/// (Public only so the argument traits can name it; not part of the API.)
#[doc(hidden)]
pub struct ObjectCell {
    pub(crate) id: ObjectId,
    pub(crate) slot: Slot<SpillHandle>,
    pub(crate) producer: Option<Arc<TaskCtl>>,
    /// Set once, before completion, for objects whose bytes are charged to
    /// the store (boxed: most objects are small and never charged).
    charged: OnceLock<Box<Charged>>,
    /// Set once the object is exported to, or imported from, a cluster.
    pub(crate) link: OnceLock<Box<dyn Link>>,
}

/// What a charged object keeps: its store, and how to rebuild its value
/// (for re-runnable tasks; dropped with the object, or earlier when the
/// store's lineage cap evicts it).
struct Charged {
    store: Arc<Store>,
    lineage: std::sync::Mutex<Option<Arc<dyn Rebuild>>>,
    /// Bytes the lineage record counts against the lineage cap; whoever
    /// swaps it to zero (the cap's evictor or the object's drop) returns them.
    lineage_bytes: std::sync::atomic::AtomicUsize,
    had_lineage: bool,
}

impl Charged {
    fn new(store: &Arc<Store>, lineage: Option<Arc<dyn Rebuild>>) -> Box<Charged> {
        let bytes = lineage.as_ref().map_or(0, |l| l.record_bytes());
        Box::new(Charged {
            store: store.clone(),
            had_lineage: lineage.is_some(),
            lineage: std::sync::Mutex::new(lineage),
            lineage_bytes: std::sync::atomic::AtomicUsize::new(bytes),
        })
    }
}

impl std::fmt::Debug for ObjectCell {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ObjectCell").field("id", &self.id).field("slot", &self.slot).finish()
    }
}

impl Drop for ObjectCell {
    fn drop(&mut self) {
        if let Some(link) = self.link.get() {
            link.dropped(self.id, self);
        }
        let (charged, spill, value) = self.slot.take_final();
        drop(spill); // removes the spill file, if any
        if let Some(store) = self.store() {
            store.lineage_freed(self.take_lineage_bytes());
            store.untrack(self.id);
            if charged > 0 {
                // Only replicas' buffers are recycled (for the next replica).
                let replica = self.link.get().is_some_and(|l| l.is_remote());
                store.release_freed(charged, value.filter(|_| replica));
            }
        }
    }
}

impl ObjectCell {
    fn new(slot: Slot<SpillHandle>, producer: Option<Arc<TaskCtl>>) -> ObjectCell {
        ObjectCell::with_id(ObjectId::fresh(), slot, producer)
    }

    fn with_id(id: ObjectId, slot: Slot<SpillHandle>, producer: Option<Arc<TaskCtl>>) -> ObjectCell {
        ObjectCell { id, slot, producer, charged: OnceLock::new(), link: OnceLock::new() }
    }

    /// A pending cell for a remote object (see `remote`).
    pub(crate) fn remote(id: ObjectId, link: Box<dyn Link>) -> Arc<ObjectCell> {
        let cell = ObjectCell::with_id(id, Slot::pending(), None);
        let _ = cell.link.set(link);
        Arc::new(cell)
    }

    /// Starts fetching a remote object's value (once; no-op for local ones).
    pub(crate) fn demand(self: &Arc<Self>) {
        if let Some(link) = self.link.get() {
            link.demand(self);
        }
    }

    /// The store that charged this object, if it is charged.
    pub(crate) fn store(&self) -> Option<&Arc<Store>> {
        self.charged.get().map(|c| &c.store)
    }

    /// How to rebuild this object's value, if it can be.
    pub(crate) fn lineage(&self) -> Option<Arc<dyn Rebuild>> {
        let c = self.charged.get()?;
        c.lineage.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// True if the object had lineage and the lineage cap evicted it.
    pub(crate) fn lineage_evicted(&self) -> bool {
        self.charged.get().is_some_and(|c| c.had_lineage) && self.lineage().is_none()
    }

    /// Takes the lineage record's bytes (once): for the lineage cap.
    pub(crate) fn take_lineage_bytes(&self) -> usize {
        self.charged.get().map_or(0, |c| c.lineage_bytes.swap(0, std::sync::atomic::Ordering::AcqRel))
    }

    /// Drops the lineage record (after `take_lineage_bytes`).
    pub(crate) fn drop_lineage(&self) {
        if let Some(c) = self.charged.get() {
            let old = c.lineage.lock().unwrap_or_else(|p| p.into_inner()).take();
            drop(old); // outside the lock: may free inputs
        }
    }

    pub(crate) fn pending(producer: Option<Arc<TaskCtl>>) -> Arc<ObjectCell> {
        Arc::new(ObjectCell::new(Slot::pending(), producer))
    }

    /// A pending cell with a given id (`None`: a fresh one).
    pub(crate) fn pending_as(id: Option<ObjectId>, producer: Option<Arc<TaskCtl>>) -> Arc<ObjectCell> {
        Arc::new(ObjectCell::with_id(id.unwrap_or_else(ObjectId::fresh), Slot::pending(), producer))
    }

    /// Stores a charged value (from `Store::admit`) in a new cell.
    pub(crate) fn stored(store: &Arc<Store>, value: Value, meta: Meta) -> Arc<ObjectCell> {
        let spillable = meta.charged > 0 && store.has_spill_dir() && value.codec().is_some();
        let cell = Arc::new(ObjectCell::new(Slot::done(Ok(value), meta), None));
        if meta.charged > 0 {
            let _ = cell.charged.set(Charged::new(store, None));
            if spillable {
                store.track(&cell, meta.charged);
            }
        }
        cell
    }

    /// Completes a pending cell with a stored value; releases the charge if
    /// the cell was already done (cancelled). Returns the wake-ups to send
    /// (see `Slot::complete_deferred`), `None` if it was already done.
    pub(crate) fn complete_stored(
        self: &Arc<Self>,
        store: &Arc<Store>,
        value: Value,
        meta: Meta,
        lineage: Option<Arc<dyn Rebuild>>,
    ) -> Option<Wake> {
        let evictable = lineage.is_some() || (store.has_spill_dir() && value.codec().is_some());
        let has_lineage = lineage.is_some();
        if meta.charged > 0 {
            let _ = self.charged.set(Charged::new(store, lineage));
        }
        let Some(wake) = self.slot.complete_deferred(Ok(value), meta) else {
            if meta.charged > 0 {
                store.release(meta.charged);
            }
            return None;
        };
        if meta.charged > 0 && has_lineage {
            store.add_lineage(self);
        }
        if meta.charged > 0 && evictable {
            store.track(self, meta.charged);
        }
        Some(wake)
    }

    /// The value or error if done, bringing a moved-out value back (from
    /// its spill file or by re-running its task) first. `None` if pending.
    pub(crate) fn read_value(self: &Arc<Self>) -> Option<Outcome> {
        loop {
            match self.slot.read_state() {
                Read::Pending => {
                    self.demand();
                    return None;
                }
                Read::Value(v) => {
                    if let Some(store) = self.store() {
                        store.touch(self.id);
                    }
                    return Some(Ok(v));
                }
                Read::Failed(e) => return Some(Err(e)),
                Read::Out(_) => {
                    let Some(moved) = self.slot.begin_rebuild() else { continue };
                    let Some(store) = self.store() else {
                        let e = Error::ObjectLost { id: self.id, reason: "moved out without a store".into() };
                        self.slot.finish_rebuild(Err(Err(e.clone())));
                        return Some(Err(e));
                    };
                    return Some(store.bring_back(self, moved));
                }
                Read::Rebuilding => {
                    // Wait for *this* rebuild to end: one registration per
                    // round, with its own flag (the state may become
                    // `Rebuilding` again, by another reader, before we look).
                    let parker = thread_parker();
                    let ended = Arc::new(AtomicBool::new(false));
                    let (flag, p) = (ended.clone(), parker.clone());
                    let waiter = Waiter::Callback(Box::new(move |_| {
                        flag.store(true, Ordering::Release);
                        p.unpark();
                    }));
                    if self.slot.register(waiter).is_ok() {
                        block_until(&parker, None, &mut || None, &mut || ended.load(Ordering::Acquire));
                    }
                }
            }
        }
    }

    /// Blocks until done or `deadline`; returns whether it is done.
    pub(crate) fn wait_done(&self, deadline: Option<Instant>) -> bool {
        // Spinning only pays when someone else is about to finish the object;
        // if its job is still queued, go straight to running it ourselves.
        let queued = self.producer.as_ref().is_some_and(|p| p.queued_job().is_some())
            && crate::scheduler::Scheduler::on_worker();
        if !queued && spin_until(&mut || self.slot.is_done()) {
            return true;
        }
        let parker = thread_parker();
        match self.slot.register(Waiter::Parker(parker.clone())) {
            Err(_) => true,
            Ok(token) => {
                let mut target = || self.producer.as_ref().and_then(|p| p.queued_job());
                let done = block_until(&parker, deadline, &mut target, &mut || self.slot.is_done());
                if !done {
                    self.slot.deregister(token);
                }
                done
            }
        }
    }

    /// Reads the value as `T`, blocking until done or `deadline`.
    pub(crate) fn get<T: Any + Send + Sync>(
        self: &Arc<Self>,
        deadline: Option<Instant>,
        timeout: Duration,
    ) -> Result<Arc<T>, Error> {
        if let Some(o) = self.read_value() {
            return o.and_then(Value::downcast::<T>);
        }
        if !self.wait_done(deadline) {
            return Err(Error::Timeout(timeout));
        }
        match self.read_value() {
            Some(o) => o.and_then(Value::downcast::<T>),
            None => Err(Error::Timeout(timeout)),
        }
    }

    /// Cancels the producing task. Returns true if this call decided the
    /// outcome (the object was still pending).
    pub(crate) fn cancel(&self) -> bool {
        let Some(ctl) = &self.producer else { return false };
        let won = self.slot.complete(Err(Error::Cancelled { task: ctl.name_text() }));
        // Only now tell a running task: had the flag come first, a task
        // polling `is_cancelled` could see it and complete the slot before
        // this cancel did (which then reported failure).
        ctl.cancelled.store(true, Ordering::Release);
        if won {
            // Not started yet: drop its closure (and the refs it holds) now;
            // its queue entry stays behind, empty, and is skipped.
            if let Some(job) = ctl.queued_job() {
                job.finish(crate::scheduler::Go::Cancelled);
            }
        }
        won
    }
}

thread_local! {
    static PARKER: crate::sync::Arc<Parker> = Parker::new();
}

/// This thread's reusable parker. Reuse is safe because every wait loop
/// re-checks its condition after waking: a stale unpark costs one extra turn.
pub(crate) fn thread_parker() -> crate::sync::Arc<Parker> {
    PARKER.with(|p| p.clone())
}
