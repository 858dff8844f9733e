//! The object cell: one object's id, its slot (the state machine in
//! `slot`), a weak link to the job that completes it (its task's until
//! that job has run, then a lineage rebuild's while one runs: a reader
//! blocked on it may run it, `cancel` stops it), and its links to the store
//! (when its bytes are charged) and to a cluster backend (when it is
//! exported or imported). Refs (`refs`) point at cells.
//!
//! Invariant: the producer link never keeps a job's contents once the
//! job has run (its closure, spec and control block are dropped then).
//! A small job's bare allocation, at most [`KEEP_JOB_BYTES`], stays until
//! its last output cell goes ([`Ran`]): it is then freed by the thread
//! that drops the refs, mostly the one that allocated it. A block freed
//! on another thread than its allocator's costs glibc malloc its arena
//! lock, contended with the spawning thread's allocations, and that alone
//! halved `tasks_async_per_s`.
//!
//! Reading a cell ([`ObjectCell::read_value`]) brings a moved-out value
//! back first: from its spill file, or by rebuilding it from lineage.
//! Waiting for a cell ([`ObjectCell::wait_done`]) follows one pattern: spin
//! briefly, register a waiter on the slot, then block with
//! [`block_until`](crate::scheduler::block_until), re-checking the slot
//! after every wake-up.

use crate::error::Error;
use crate::id::ObjectId;
use crate::job::Job;
use crate::lineage::{Lookup, Rebuild};
use crate::notify::{Parker, Waiter};
use crate::scheduler::{block_until, spin_until};
use crate::slot::Moved;
use crate::slot::{Meta, Outcome, Read, Slot, Value, Wake};
use crate::store::{Resident, SpillHandle, Store};
use std::any::Any;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock, Weak};
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

/// One object: its id, its slot, the task that produces it, and what the
/// store needs (set once, when a charged value is stored).
/// (Public only so the argument traits can name it; not part of the API.)
#[doc(hidden)]
pub struct ObjectCell {
    /// Its id, drawn on first use ([`ObjectCell::id`]): most task outputs
    /// are read and dropped without anyone asking for it, and drawing one
    /// costs about 60 instructions (see `id`), 2% of a trivial task. Set
    /// once (module `lazy`: a known id costs no atomic operation, a drawn
    /// one a compare-exchange, where `OnceLock` costs two).
    id: crate::lazy::Lazy<ObjectId>,
    pub(crate) slot: Slot<SpillHandle>,
    /// The job that completes it next, weakly: its task's until that job
    /// ends, then a rebuild's while one runs (a reader waiting for it may
    /// run it; `cancel` stops it). Once the job has run it never upgrades
    /// again (nothing holds the job strongly but tasks it submitted, and
    /// its function is gone, so it is never queued), and it is forgotten
    /// (a dangling `Weak`) unless the job is small ([`Ran`]). `None`: not
    /// made by a task.
    producer: std::sync::Mutex<Option<Weak<Job>>>,
    /// What only some objects have (a charge, a cluster link), made on
    /// first need. Boxed: one pointer in every cell, the rest only in
    /// charged or linked ones (most objects are small and local).
    extras: OnceLock<Box<Extras>>,
}

/// The parts of a cell that only some objects have, each set once.
#[derive(Default)]
struct Extras {
    /// Set before completion for objects whose bytes are charged to the store.
    charge: OnceLock<Charge>,
    /// Set once the object is exported to, or imported from, a cluster.
    link: OnceLock<Box<dyn Link>>,
}

/// What a charged object keeps of its store: the store (to return its
/// bytes when freed) and whether the store holds a lineage record for it.
struct Charge {
    store: Arc<Store>,
    lineage: AtomicBool,
    /// The name of the task that made it (for errors once it is lost).
    made_by: Option<crate::cancel::TaskName>,
}

impl Charge {
    fn new(store: &Arc<Store>, made_by: Option<crate::cancel::TaskName>) -> Charge {
        Charge { store: store.clone(), lineage: AtomicBool::new(false), made_by }
    }
}

impl Resident for ObjectCell {
    fn id(&self) -> ObjectId {
        ObjectCell::id(self)
    }
    fn slot(&self) -> &Slot<SpillHandle> {
        &self.slot
    }
    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// The largest job (header, control block and closure, as laid out in
/// its allocation) whose allocation its outputs keep after it has run.
/// Its contents are dropped when it ends; what stays is bare memory, at
/// most this much per output object until its refs are dropped (bounded
/// like `bytes_per_queued_task`, whose goal is 512).
pub(crate) const KEEP_JOB_BYTES: usize = 512;

/// How big the job that just completed a cell is ([`ObjectCell::job_ended`]
/// keeps a link to a small one, so that its allocation is freed with the
/// cell, on the thread that drops the refs, not on the runner).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Ran(usize);

impl Ran {
    /// The job `job`, which has run.
    pub(crate) fn of(job: &Job) -> Ran {
        Ran(std::mem::size_of_val(job))
    }

    /// No job ran (a task rejected at submission): forget the link.
    pub(crate) const NONE: Ran = Ran(usize::MAX);
}

/// A producer link to a job that has run (never upgrades).
fn ended_job() -> Weak<Job> {
    Weak::<Job<crate::claim::TakeOnce<crate::job::NoJob>>>::new()
}

impl std::fmt::Debug for ObjectCell {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ObjectCell").field("id", &self.id()).field("slot", &self.slot).finish()
    }
}

impl Drop for ObjectCell {
    fn drop(&mut self) {
        if let Some(link) = self.link() {
            link.dropped(self.id(), self);
        }
        let (charged, spill, value) = self.slot.take_final();
        drop(spill); // removes the spill file, if any
        if let Some(c) = self.charge() {
            // Only replicas' buffers are recycled (for the next replica).
            let replica = self.link().is_some_and(|l| l.is_remote());
            c.store.freed(self.id(), c.lineage.load(Ordering::Acquire), charged, value.filter(|_| replica));
        }
    }
}

impl ObjectCell {
    /// A cell whose id is drawn when first asked for.
    fn new(slot: Slot<SpillHandle>, producer: Option<Weak<Job>>) -> ObjectCell {
        let producer = std::sync::Mutex::new(producer);
        ObjectCell { id: crate::lazy::Lazy::unset(), slot, producer, extras: OnceLock::new() }
    }

    /// The cell's extras, made now if it has none yet.
    fn extras(&self) -> &Extras {
        self.extras.get_or_init(Box::default)
    }

    /// Its charge, if its bytes are charged to a store.
    fn charge(&self) -> Option<&Charge> {
        self.extras.get()?.charge.get()
    }

    /// Its cluster link, if it was exported or imported.
    pub(crate) fn link(&self) -> Option<&dyn Link> {
        Some(&**self.extras.get()?.link.get()?)
    }

    /// Its cluster link, made by `make` if it has none yet (the first
    /// caller's is kept).
    pub(crate) fn link_or_init(&self, make: impl FnOnce() -> Box<dyn Link>) -> &dyn Link {
        &**self.extras().link.get_or_init(make)
    }

    fn with_id(id: ObjectId, slot: Slot<SpillHandle>, producer: Option<Weak<Job>>) -> ObjectCell {
        let producer = std::sync::Mutex::new(producer);
        ObjectCell { id: crate::lazy::Lazy::new(id), slot, producer, extras: OnceLock::new() }
    }

    /// The object's id (drawn now if nobody asked before; the same for
    /// every caller, whichever thread asks first).
    pub(crate) fn id(&self) -> ObjectId {
        self.id.get_or(ObjectId::fresh)
    }

    /// The producing task's job, while it lives (queued, running, or kept
    /// by tasks it submitted or by lineage).
    pub(crate) fn producer(&self) -> Option<Arc<Job>> {
        self.lock_producer().as_ref()?.upgrade()
    }

    fn lock_producer(&self) -> std::sync::MutexGuard<'_, Option<Weak<Job>>> {
        self.producer.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Names the job that completes the object next (a lineage rebuild
    /// while it runs), or forgets it (`None`: it has run).
    pub(crate) fn set_producer(&self, job: Option<&Arc<Job>>) {
        let new = job.map_or_else(ended_job, Arc::downgrade);
        let old = self.lock_producer().replace(new);
        drop(old); // outside the lock: may free the job's memory
    }

    /// The producing job has run: forget it, unless it is small enough to
    /// keep its allocation until this cell goes (see [`Ran`]).
    pub(crate) fn job_ended(&self, ran: Ran) {
        if ran.0 <= KEEP_JOB_BYTES {
            return;
        }
        let old = self.lock_producer().as_mut().map(|w| std::mem::replace(w, ended_job()));
        drop(old); // outside the lock: may free the job's memory
    }

    /// A queued job that makes this object: its task's, or a rebuild's.
    pub(crate) fn queued_producer(&self) -> Option<Arc<Job>> {
        self.producer()?.queued()
    }

    /// A pending cell for a remote object (see `remote`).
    pub(crate) fn remote(id: ObjectId, link: Box<dyn Link>) -> Arc<ObjectCell> {
        let cell = ObjectCell::with_id(id, Slot::pending(), None);
        let _ = cell.extras().link.set(link);
        Arc::new(cell)
    }

    /// Starts fetching a remote object's value (once; no-op for local ones).
    pub(crate) fn demand(self: &Arc<Self>) {
        if let Some(link) = self.link() {
            link.demand(self);
        }
    }

    pub(crate) fn pending(producer: Option<Weak<Job>>) -> Arc<ObjectCell> {
        Arc::new(ObjectCell::new(Slot::pending(), producer))
    }

    /// A pending cell with a given id (`None`: a fresh one).
    pub(crate) fn pending_as(id: Option<ObjectId>, producer: Option<Weak<Job>>) -> Arc<ObjectCell> {
        Arc::new(match id {
            Some(id) => ObjectCell::with_id(id, Slot::pending(), producer),
            None => ObjectCell::new(Slot::pending(), producer),
        })
    }

    /// The store this object's bytes are charged to, and whether it holds
    /// a lineage record for it (`None` if never charged).
    pub(crate) fn charged_to(&self) -> Option<(&Arc<Store>, bool)> {
        self.charge().map(|c| (&c.store, c.lineage.load(Ordering::Acquire)))
    }

    /// Stores a charged value (from `Store::admit`) in a new cell.
    pub(crate) fn stored(store: &Arc<Store>, value: Value, meta: Meta) -> Arc<ObjectCell> {
        // Only charged objects can move out, so only they need the codec
        // lookup (a hash of the type id: kept off the path of small puts).
        let spillable = meta.charged > 0 && value.codec().is_some();
        let cell = Arc::new(ObjectCell::new(Slot::done(Ok(value), meta), None));
        if meta.charged > 0 {
            let _ = cell.extras().charge.set(Charge::new(store, None));
            store.keep(&cell, meta.charged, spillable, None);
        }
        cell
    }

    /// Completes a pending cell with a stored value (charged by the caller)
    /// and hands it to the store with its lineage; releases the charge if
    /// the cell was already done (cancelled). Returns the wake-ups to send
    /// (see `Slot::complete_deferred`), `None` if it was already done.
    pub(crate) fn complete_stored(
        self: &Arc<Self>,
        store: &Arc<Store>,
        value: Value,
        meta: Meta,
        lineage: Option<Arc<dyn Rebuild>>,
    ) -> Option<Wake> {
        let spillable = meta.charged > 0 && value.codec().is_some();
        if meta.charged > 0 {
            let made_by = self.producer().map(|job| job.ctl.name.clone());
            let _ = self.extras().charge.set(Charge::new(store, made_by));
        }
        let Some(wake) = self.slot.complete_deferred(Ok(value), meta) else {
            if meta.charged > 0 {
                store.release(meta.charged);
            }
            return None;
        };
        if meta.charged > 0 {
            let kept = store.keep(self, meta.charged, spillable, lineage);
            if let Some(c) = self.charge() {
                c.lineage.store(kept, Ordering::Release);
            }
        }
        Some(wake)
    }

    /// The value or error if done, bringing a moved-out value back (from
    /// its spill file, or by running its task again on the scheduler and
    /// waiting for it) first. `None` if pending.
    pub(crate) fn read_value(self: &Arc<Self>) -> Option<Outcome> {
        loop {
            match self.slot.read_state() {
                Read::Pending => {
                    self.demand();
                    return None;
                }
                Read::Value(v) => {
                    if let Some(c) = self.charge() {
                        c.store.touch(self.id());
                    }
                    return Some(Ok(v));
                }
                Read::Failed(e) => return Some(Err(e)),
                Read::Out(_) => {
                    let Some(moved) = self.slot.begin_rebuild() else { continue };
                    if let Some(outcome) = self.bring_back(moved) {
                        return Some(outcome);
                    }
                    // A rebuild was submitted: wait for it below.
                }
                Read::Rebuilding => {
                    // Wait for *this* rebuild to end: one registration per
                    // round, with its own flag (the state may become
                    // `Rebuilding` again, by another reader, before we look).
                    // The rebuild is the producer's job: run it if queued.
                    let parker = thread_parker();
                    let ended = Arc::new(AtomicBool::new(false));
                    let (flag, p) = (ended.clone(), parker.clone());
                    let waiter = Waiter::Callback(Box::new(move |_| {
                        flag.store(true, Ordering::Release);
                        p.unpark();
                    }));
                    if self.slot.register(waiter).is_ok() {
                        let mut target = || self.queued_producer();
                        block_until(&parker, None, &mut target, &mut || ended.load(Ordering::Acquire));
                    }
                }
            }
        }
    }

    /// Brings a moved-out value back, for a reader that claimed the rebuild:
    /// from its spill file, else by resubmitting its task (then `None`: the
    /// caller waits), else fails the object with why it cannot.
    fn bring_back(self: &Arc<Self>, moved: Moved<SpillHandle>) -> Option<Outcome> {
        let fail = |e: Error| {
            self.slot.finish_rebuild(Err(Err(e.clone())));
            Some(Err(e))
        };
        let Some(charge) = self.charge() else {
            return fail(Error::ObjectLost { id: self.id(), reason: "moved out without a store".into() });
        };
        let store = &charge.store;
        let spill_error = match moved {
            Moved::Spilled(file) => match store.restore(self, file) {
                Ok(v) => return Some(Ok(v)),
                Err(e) => Some(e.to_string()),
            },
            Moved::Evicted => None,
        };
        match store.lineage_of(self.id()) {
            Lookup::Record(record) => {
                let me: Arc<dyn Resident> = self.clone();
                record.resubmit(store.rebuild_job(me));
                None
            }
            Lookup::Evicted(task) => fail(Error::LineageEvicted { id: self.id(), task }),
            Lookup::None => {
                let made_by = match &charge.made_by {
                    Some(name) => format!("made by one-shot task `{name}`, which cannot be re-run"),
                    None if self.lock_producer().is_some() => "made by a one-shot task, which cannot be re-run".into(),
                    None => "stored by put, so it has no lineage".into(),
                };
                let reason = match spill_error {
                    Some(e) => format!("its spill file is unreadable ({e}); it was {made_by}"),
                    None => format!("it was moved out of memory; it was {made_by}"),
                };
                fail(Error::ObjectLost { id: self.id(), reason: reason.into() })
            }
        }
    }

    /// A reader about to block on an object whose task was cancelled (its
    /// group or an ancestor) but is still queued, because no runner has
    /// asked for work since (all busy): takes the task's function out and
    /// completes it as cancelled on the service thread (never here: this
    /// may be the thread that cancelled, and the closure's drop and the
    /// readers' callbacks must not run on it), so the reader does not wait
    /// for a runner. Its queue entry stays, empty, counted as cancelled
    /// when a runner reaches it. Free until the process cancels anything.
    pub(crate) fn finish_if_cancelled(&self) {
        if !crate::cancel::any_cancelled() {
            return;
        }
        let Some(job) = self.queued_producer() else { return };
        if !job.ctl.chain_cancelled() {
            return;
        }
        if let Some(run) = job.take_fn() {
            crate::scheduler::service(Box::new(move || {
                run(crate::job::Go::Cancelled, &job);
            }));
        }
    }

    /// Blocks until done or `deadline`; returns whether it is done.
    pub(crate) fn wait_done(&self, deadline: Option<Instant>) -> bool {
        // Spinning only pays when someone else is about to finish the object;
        // if its job is still queued, go straight to running it ourselves.
        let queued = crate::scheduler::Scheduler::on_worker() && self.queued_producer().is_some();
        // Nor for a remote object: it comes over the network, a round trip
        // away at best, and a spin that yields the CPU only competes with
        // the threads bringing it (on a small machine the reader then
        // wakes a whole time slice late); parking costs one futex wake.
        let remote = self.link().is_some_and(|l| l.is_remote());
        if !queued && !remote && spin_until(&mut || self.slot.is_done()) {
            return true;
        }
        // Counted as a parked reader (not on a worker: see `parked`).
        let _parked = self.queued_producer().and_then(|_| crate::parked::ParkedReader::enter());
        self.finish_if_cancelled();
        let parker = thread_parker();
        match self.slot.register(Waiter::Parker(parker.clone())) {
            Err(_) => true,
            Ok(token) => {
                let mut target = || self.queued_producer();
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
    /// outcome (the object was still pending). O(1) on the caller: a
    /// queued task's closure is taken out (so it can never start) but
    /// dropped, with its arguments, on the service thread, which also
    /// wakes the object's readers (so `on_ready` callbacks never run on
    /// the cancelling thread). A running task sees `is_cancelled()`; tasks
    /// it submitted are cancelled with it (see `cancel`).
    pub(crate) fn cancel(&self) -> bool {
        // A producer that is gone has run (its output is done).
        let Some(task) = self.producer() else { return false };
        let ctl = &task.ctl;
        let Some(wake) = self.slot.complete_deferred(Err(Error::Cancelled { task: ctl.name_text() }), Meta::default())
        else {
            // Already done: nothing to stop (and a rebuild of this object
            // from lineage must not see a cancellation it never had).
            return false;
        };
        // Only now tell a running task: had the flag come first, a task
        // polling `is_cancelled` could see it and complete the slot before
        // this cancel did (which then reported failure).
        let readers = ctl.set_cancelled();
        // Not started yet: take its closure (and the refs it holds) out of
        // its queue entry, which stays behind, empty, and is skipped.
        let job_fn = task.take_fn();
        let started = job_fn.is_none();
        if !started {
            // Its queue entry, now empty, leaves the queue (and is counted
            // as cancelled) at the next reap, not when a runner reaches it.
            crate::scheduler::Scheduler::note_reap_everywhere();
        }
        crate::scheduler::service(Box::new(move || {
            if let Some(run) = job_fn {
                run(crate::job::Go::Cancelled, &task);
            }
            wake.send();
            // A running task may have submitted tasks, now cancelled with
            // it and perhaps queued behind busy runners: a parked reader of
            // theirs must not wait for a runner.
            if started && readers {
                crate::scheduler::Scheduler::reap_everywhere();
            }
        }));
        true
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dispatch::Tally;
    use crate::resources::Request;

    /// A job whose closure owns `N` bytes inline.
    fn job_of<const N: usize>() -> Arc<Job> {
        let bytes = [1u8; N];
        Job::new(Request::default(), move |_| Tally {
            done: bytes.iter().map(|&b| u32::from(b)).sum(),
            ..Tally::default()
        })
    }

    /// After its job has run and gone, a cell links to a small job's
    /// allocation (freed with the cell) and forgets a big one's (freed
    /// with the job); neither link upgrades.
    #[test]
    fn outputs_keep_only_a_small_jobs_allocation() {
        for (job, kept) in [(job_of::<8>(), true), (job_of::<{ KEEP_JOB_BYTES }>(), false)] {
            let cell = ObjectCell::pending(Some(Arc::downgrade(&job)));
            cell.job_ended(Ran::of(&job));
            let at = Arc::as_ptr(&job).cast::<()>();
            drop(job);
            let link = cell.lock_producer().clone().expect("made by a job");
            assert!(link.upgrade().is_none());
            assert_eq!(link.as_ptr().cast::<()>() == at, kept, "kept the allocation of a job is {kept}");
            assert!(cell.producer().is_none());
        }
    }

    #[test]
    fn a_task_rejected_at_submission_forgets_its_link() {
        let job = job_of::<8>();
        let cell = ObjectCell::pending(Some(Arc::downgrade(&job)));
        cell.job_ended(Ran::NONE);
        let link = cell.lock_producer().clone().expect("a link");
        assert!(link.as_ptr().cast::<()>() != Arc::as_ptr(&job).cast::<()>());
    }
}
