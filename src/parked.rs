//! Readers parked on objects whose tasks may still be queued, against
//! cancellers (the protocol behind "a cancelled task's readers see it
//! cancelled at once, even while every runner is busy").
//!
//! With every runner busy, a queued task that a cancel reached is taken
//! out of the queue only when a runner next asks for work. So:
//! - a reader about to park ([`Parked::enter`]) counts itself, then looks
//!   at the cancellations (the epoch it returns, and the tasks' flags) and
//!   finishes cancelled queued producers itself (`ObjectCell::finish_if_cancelled`);
//! - a canceller sets its flags, then [`Parked::cancelled`] bumps the
//!   epoch and tells whether a reader is parked; if so it has the service
//!   thread reap at once (`Scheduler::reap`).
//!
//! Invariant (Dekker's pattern: SeqCst fences between each side's write
//! and its read, as loom models SeqCst accesses only as acquire/release):
//! for a reader that
//! entered and a cancellation, either the reader's look sees the new epoch
//! (and every flag the canceller set before it), or the canceller sees the
//! reader counted. Model-checked in `tests/loom_parked.rs`.

use crate::sync::{fence, AtomicUsize, Ordering};

/// The count of parked readers and the cancellation epoch.
#[derive(Debug, Default)]
pub struct Parked {
    readers: AtomicUsize,
    epoch: AtomicUsize,
}

impl Parked {
    /// A reader is about to park: counts it and returns the epoch it must
    /// compare with the last one it looked at. Pair with [`Parked::leave`].
    pub fn enter(&self) -> usize {
        self.readers.fetch_add(1, Ordering::SeqCst);
        fence(Ordering::SeqCst); // before the caller's looks (Dekker)
        self.epoch.load(Ordering::SeqCst)
    }

    /// The reader stopped waiting.
    pub fn leave(&self) {
        self.readers.fetch_sub(1, Ordering::SeqCst);
    }

    /// A canceller set its flags: bumps the epoch; true if a reader is
    /// parked (then the cancelled tasks must be reaped at once).
    #[inline(always)]
    pub fn cancelled(&self) -> bool {
        self.bump();
        fence(Ordering::SeqCst); // after the caller's flags (Dekker)
        self.any_reader()
    }

    /// [`Parked::cancelled`]'s write (for a canceller that shares one
    /// fence between several protocols: see `Scheduler::cancelled`).
    #[inline(always)]
    pub fn bump(&self) {
        self.epoch.fetch_add(1, Ordering::SeqCst);
    }

    /// [`Parked::cancelled`]'s read, after the fence: a reader is parked.
    #[inline(always)]
    pub fn any_reader(&self) -> bool {
        self.readers.load(Ordering::SeqCst) > 0
    }

    /// Brings this line into the caller's cache ahead of a canceller's
    /// [`Parked::bump`] (a locked add that waits for it, after the
    /// canceller's earlier stores: see `Scheduler::warm_cancel`). Not
    /// part of the protocol: the value is not used.
    #[inline(always)]
    pub fn warm(&self) {
        #[cfg(not(loom))]
        std::hint::black_box(self.epoch.load(Ordering::Relaxed));
    }

    /// The cancellations made so far.
    pub fn epoch(&self) -> usize {
        self.epoch.load(Ordering::SeqCst)
    }
}

/// The process's [`Parked`] (readers and cancellers of every runtime: a
/// false positive only costs one message to the service thread).
/// The process's [`Parked`], on a line of its own.
#[cfg(not(loom))]
static PARKED: Padded = Padded(Parked { readers: AtomicUsize::new(0), epoch: AtomicUsize::new(0) });

#[cfg(not(loom))]
#[repr(align(128))]
struct Padded(Parked);

#[cfg(not(loom))]
#[inline(always)]
pub(crate) fn global() -> &'static Parked {
    &PARKED.0
}

#[cfg(loom)]
pub(crate) fn global() -> &'static Parked {
    loom::lazy_static! {
        static ref PARKED: Parked = Parked::default();
    }
    &PARKED
}

/// Held by a reader (not a worker: a worker that blocks hands its runner
/// place over, so a runner is free to reap) while it parks on objects
/// whose tasks may be queued.
pub(crate) struct ParkedReader(());

impl ParkedReader {
    /// Enters the global [`Parked`] unless the calling thread is a worker;
    /// returns the guard and the epoch.
    pub fn enter() -> Option<(ParkedReader, usize)> {
        if crate::scheduler::Scheduler::on_worker() {
            return None;
        }
        let epoch = global().enter();
        Some((ParkedReader(()), epoch))
    }
}

impl Drop for ParkedReader {
    fn drop(&mut self) {
        global().leave();
    }
}
