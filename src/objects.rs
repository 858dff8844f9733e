//! The objects API for debugging and control: freeing objects now
//! ([`Runtime::free`], Ray's `internal_api.free`), asking whether the
//! runtime still holds one ([`Runtime::contains`]), and reference counts
//! ([`ObjectRef::ref_counts`](crate::ObjectRef::ref_counts)) for finding
//! leaks.
//!
//! # Counting
//! A ref is an `Arc` of its object's cell, so the cell's strong count is
//! the number of refs plus the references the runtime holds itself. Those
//! are, once the object is done, only refs inside task and actor-call
//! arguments (and lineage records, which keep a task's arguments): every
//! other internal holder (the producing task or call, the tasks, calls and
//! callbacks registered to wait for it, a fetch) lets go when the object
//! completes. So:
//! - `task_uses` is counted: wrapping a task's arguments in
//!   [`CountedArgs`] adds one per argument ref (as
//!   [`TaskArgs::for_each_dep`] lists them); its drop takes them back just
//!   before the arguments go. The counter is an `AtomicU32` in the object's
//!   slot, in padding that was there anyway (2^32 argument refs to one
//!   object would take 32 GiB).
//! - `handles` = strong count - `task_uses`: exact for a done object when
//!   nothing races; while the object is pending (or being rebuilt or
//!   fetched) it also includes the references held by its producer and by
//!   whatever waits for it. Counting handles directly would cost an atomic
//!   operation on every ref clone and drop (a third of `wait`'s speed).
//! - `borrowers`: remote borrowers, reported by the cluster layer through
//!   [`Backend::add_borrowers`](crate::backend::Backend::add_borrowers)
//!   and kept in the object's cluster link (only objects that left the
//!   runtime have one; always 0 in-process).
//!
//! The numbers are read one after the other: a snapshot taken while other
//! threads clone, drop or submit is approximate (each number was true at
//! some instant, not all at the same one).
//!
//! # Freeing
//! [`Runtime::free`] moves each object's slot to `Failed(ObjectFreed)`
//! whatever its state (`Slot::free`, one transition under the slot's lock),
//! returns the bytes it charged in memory to the store, removes its spill
//! file (once no reader still holds the file's handle) and drops its
//! lineage record. The object's refs stay valid: they now read
//! [`Error::ObjectFreed`]. A rebuild or restore in flight when the object
//! is freed finds the slot no longer `Rebuilding` and gives its bytes back
//! instead of storing the value (see `store`).

use crate::args::TaskArgs;
use crate::cell::ObjectCell;
use crate::error::Error;
use crate::refs::{AnyRef, Waitable};
use crate::runtime::Runtime;
use crate::slot::Holding;
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// Who holds an object, for debugging leaks ([`ObjectRef::ref_counts`](crate::ObjectRef::ref_counts)).
///
/// Exact for an object that is done, when nothing else is cloning,
/// dropping or submitting refs to it at the same time. While it is pending
/// (or being rebuilt or fetched), `handles` also counts the references its
/// producer and the tasks, calls and callbacks waiting for it hold. Under
/// concurrent changes each number was true at some instant of the call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct RefCounts {
    /// Live [`ObjectRef`](crate::ObjectRef) / [`AnyRef`] values the
    /// application holds, this one included: every clone, every ref in a
    /// `Vec` or a struct, the refs `wait` returned, pending `.await`s. Refs
    /// inside task and actor-call arguments are not counted here but in
    /// `task_uses`. In a cluster node, refs the node keeps for remote
    /// borrowers (pins) count here too. See the type's docs for pending
    /// objects.
    pub handles: usize,
    /// Refs held as an argument by tasks and actor calls: queued, waiting
    /// for other inputs, running, or kept by a lineage record to be re-run
    /// if their output must be rebuilt. One per argument position (a task
    /// taking the same ref twice counts two).
    pub task_uses: usize,
    /// Remote borrowers: other nodes holding a ref, each counted once
    /// while its borrow is registered here (`manta-p2p` reports them);
    /// always 0 in-process.
    pub borrowers: usize,
}

/// Who holds `cell`'s object (see [`RefCounts`]).
pub(crate) fn ref_counts(cell: &Arc<ObjectCell>) -> RefCounts {
    let task_uses = cell.slot.task_uses.load(Ordering::Relaxed) as usize;
    let handles = Arc::strong_count(cell);
    let borrowers = crate::backend::link_of(cell).map_or(0, |l| l.borrowers.load(Ordering::Relaxed));
    RefCounts { handles: handles.saturating_sub(task_uses), task_uses, borrowers }
}

/// A task's (or actor call's) arguments, whose refs count as `task_uses`
/// for as long as they live: counted when wrapped, given back in `Drop`
/// (before the arguments themselves go). Dereferences to the arguments.
///
/// No allocation and one pointer more than the arguments: it is captured
/// by every call's boxed closure, and a closure that grew by a `Vec` (24
/// bytes) made queuing 100k actor calls ~1.7x slower.
pub(crate) struct CountedArgs<A> {
    args: A,
    /// Gives the counts back (made where `A: TaskArgs` is known, so `Drop`
    /// needs no bound).
    release: fn(&A),
}

impl<A: TaskArgs> CountedArgs<A> {
    /// Counts every ref `args` depends on.
    pub(crate) fn new(args: A) -> CountedArgs<A> {
        args.for_each_dep(&mut |r| {
            r.cell.slot.task_uses.fetch_add(1, Ordering::Relaxed);
        });
        CountedArgs { args, release: release::<A> }
    }
}

fn release<A: TaskArgs>(args: &A) {
    args.for_each_dep(&mut |r| {
        r.cell.slot.task_uses.fetch_sub(1, Ordering::Relaxed);
    });
}

impl<A> std::ops::Deref for CountedArgs<A> {
    type Target = A;
    fn deref(&self) -> &A {
        &self.args
    }
}

impl<A> Drop for CountedArgs<A> {
    fn drop(&mut self) {
        (self.release)(&self.args)
    }
}

/// Frees one object now (see the module docs).
pub(crate) fn free_cell(cell: &Arc<ObjectCell>) {
    let freed = cell.slot.free(Error::ObjectFreed { id: cell.id() });
    if let Some((store, lineage)) = cell.charged_to() {
        store.freed(cell.id(), lineage, freed.charged, None);
    }
    drop(freed.spill); // removes the spill file (once no reader holds it)
    drop(freed.value);
    if let Some(w) = freed.wake {
        w.send();
    }
}

impl Runtime {
    /// Frees objects now, as Ray's `ray._private.internal_api.free`: each
    /// object's value leaves memory (its bytes go back to the store), its
    /// spill file is removed and its lineage record dropped, so it is never
    /// rebuilt. The refs stay valid handles: reading one afterwards gives
    /// [`Error::ObjectFreed`] (so does a task or actor call that takes it,
    /// as a failed input), and [`Runtime::contains`] is false.
    ///
    /// A reader already holding the value (an `Arc<T>` from `get`) keeps
    /// it until it lets go; only the store's copy is dropped. Freeing a
    /// pending object fails it with `ObjectFreed` at once: its task still
    /// runs (cancel it with [`ObjectRef::cancel`](crate::ObjectRef::cancel)
    /// to stop it) and its result is dropped. Freeing twice is harmless.
    /// In a cluster, peers that fetch the object afterwards get the error
    /// too; replicas on other nodes are theirs to free.
    pub fn free<R: Waitable>(&self, refs: &[R]) {
        for r in refs {
            free_cell(&r.as_any_ref().cell);
        }
    }

    /// True while this runtime can give `r`'s value or error to a reader
    /// without loss: in memory, in a spill file, dropped from memory but
    /// rebuildable from lineage, being brought back, or failed (its error
    /// is what it holds). False while it is still pending (there is
    /// nothing yet), once it was freed ([`Runtime::free`]) and once it is
    /// known to be lost ([`Error::ObjectLost`], [`Error::LineageEvicted`],
    /// [`Error::MaxReconstructionsExceeded`]). Never blocks and never
    /// reads the value (an error stays unread).
    pub fn contains<R: Waitable>(&self, r: &R) -> bool {
        contains_cell(&r.as_any_ref().cell)
    }
}

pub(crate) fn contains_cell(cell: &ObjectCell) -> bool {
    match cell.slot.holding() {
        Holding::Pending | Holding::Gone => false,
        Holding::Value | Holding::Error | Holding::Spilled | Holding::Rebuilding => true,
        Holding::Evicted => cell.charged_to().is_some_and(|(store, _)| store.can_rebuild(cell.id())),
    }
}

impl AnyRef {
    /// Who holds this object (see [`RefCounts`]).
    pub fn ref_counts(&self) -> RefCounts {
        ref_counts(&self.cell)
    }
}
