//! Start decisions against cancellation: the protocol behind "once a
//! cancel returns, no task it covers starts" (see `cancel`), checked by
//! `tests/loom_decide.rs`.
//!
//! Every thread that runs jobs has a *deciding* flag, alone on its cache
//! line ([`Flag`]). A worker about to start a task raises its flag, issues
//! a SeqCst fence, checks the task's cancellation and, if it may run,
//! marks it started, then lowers the flag (Release) right before the body
//! starts ([`Decider::deciding`]). A canceller sets its scope's flag,
//! issues a SeqCst fence, and waits until no flag is raised
//! ([`Deciders::quiesce`]). By the two fences (Dekker's pattern) either
//! the worker's check sees the cancellation, or the canceller's load sees
//! the worker's flag raised and waits until it is lowered (and so, by
//! Release/Acquire, sees the task marked started): once `quiesce` returns,
//! no task of the cancelled scope starts.
//!
//! # Who has a flag
//! - The rayon threads of a runtime: a fixed table, one flag per thread
//!   index ([`Deciders::fixed`]), read by `quiesce` without a lock (its
//!   loads are independent, so their cache misses overlap).
//! - Spare threads, which come and go: a list behind a lock and a count
//!   ([`Deciders::join_spare`], [`Deciders::leave_spare`]). A spare is
//!   listed first, then counted; `quiesce` takes the lock only if the
//!   count (loaded after its fence) is not zero. A canceller that reads
//!   zero read it before the spare's count increment, so (the fences
//!   again) the spare's first check, after its own fence, sees the
//!   cancellation; one that reads non-zero finds the spare in the list.
//!
//! Invariant: a thread decides only with its own flag, and only after it
//! joined (rayon threads: before their first job; spares: at start).

use crate::sync::{fence, lock, AtomicBool, AtomicUsize, Mutex, Ordering};

/// A deciding flag alone on its cache line (128 bytes: adjacent-line
/// prefetch pairs lines), so a canceller's load of one worker's flag never
/// contends with another worker's writes.
#[repr(align(128))]
#[derive(Debug)]
pub struct Flag(AtomicBool);

impl Default for Flag {
    fn default() -> Self {
        Flag(AtomicBool::new(false))
    }
}

/// A table of flags shared with the threads that own them (the loom Arc
/// has no slice form; the table is not synchronised through it either way).
#[cfg(not(loom))]
type Table = std::sync::Arc<[Flag]>;
#[cfg(loom)]
type Table = crate::sync::Arc<Vec<Flag>>;

fn table(n: usize) -> Table {
    let flags: Vec<Flag> = (0..n).map(|_| Flag::default()).collect();
    #[cfg(not(loom))]
    return flags.into();
    #[cfg(loom)]
    return crate::sync::Arc::new(flags);
}

/// One thread's flag: its index in a table (its runtime's table for a
/// rayon thread, a table of its own for a spare).
#[derive(Clone, Debug)]
pub struct Decider(Table, usize);

impl Decider {
    fn flag(&self) -> Option<&Flag> {
        self.0.get(self.1)
    }

    /// Runs `decide` (which checks a task's cancellation and, if it may
    /// run, marks it started) with this flag raised (module docs).
    pub fn deciding<R>(&self, decide: impl FnOnce() -> R) -> R {
        let Some(flag) = self.flag() else { return decide() };
        flag.0.store(true, Ordering::Relaxed);
        fence(Ordering::SeqCst);
        let r = decide();
        flag.0.store(false, Ordering::Release);
        r
    }

    fn same(&self, other: &Decider) -> bool {
        #[cfg(not(loom))]
        let same = std::sync::Arc::ptr_eq(&self.0, &other.0);
        #[cfg(loom)]
        let same = crate::sync::Arc::ptr_eq(&self.0, &other.0);
        same && self.1 == other.1
    }
}

/// The flags of one runtime's threads (module docs). What `quiesce`
/// reads (the table and the spares' count) shares one cache line.
#[derive(Debug)]
#[repr(C, align(64))]
pub struct Deciders {
    fixed: Table,
    spare_count: AtomicUsize,
    spares: Mutex<Vec<Decider>>,
}

impl Deciders {
    /// Flags for `threads` rayon threads, and no spare yet.
    pub fn new(threads: usize) -> Deciders {
        Deciders { fixed: table(threads), spares: Mutex::new(Vec::new()), spare_count: AtomicUsize::new(0) }
    }

    /// The flag of rayon thread `index` (`None` past the table).
    pub fn fixed(&self, index: usize) -> Option<Decider> {
        (index < self.fixed.len()).then(|| Decider(self.fixed.clone(), index))
    }

    /// A new flag for a thread outside the table (a spare): listed, then
    /// counted (module docs).
    pub fn join_spare(&self) -> Decider {
        let me = Decider(table(1), 0);
        lock(&self.spares).push(me.clone());
        self.spare_count.fetch_add(1, Ordering::SeqCst);
        me
    }

    /// A spare leaves (it decides nothing any more).
    pub fn leave_spare(&self, me: &Decider) {
        let mut list = lock(&self.spares);
        let before = list.len();
        list.retain(|d| !d.same(me));
        if list.len() < before {
            self.spare_count.fetch_sub(1, Ordering::SeqCst);
        }
    }

    /// Waits until no thread is deciding (module docs); the caller has set
    /// its scope's cancellation flag. O(threads): one load per rayon
    /// thread's line, all issued before any wait, and the spares' list only
    /// while spares exist.
    /// (The runtime's cancel runs its pieces, `warm`, the fence and
    /// `quiesce_fenced`, with other protocols' writes before the shared
    /// fence: `Scheduler::cancelled`; the loom model runs this.)
    #[cfg_attr(not(loom), allow(dead_code))]
    #[inline(always)]
    pub fn quiesce(&self) {
        fence(Ordering::SeqCst);
        self.quiesce_fenced();
    }

    /// Brings the flags' lines into this core's cache before a canceller's
    /// fence, so that `quiesce_fenced`'s loads after it mostly hit (the
    /// values read here are not used: a prefetch, not part of the
    /// protocol).
    #[inline(always)]
    pub fn warm(&self) {
        #[cfg(not(loom))]
        {
            for d in self.fixed.iter() {
                std::hint::black_box(d.0.load(Ordering::Relaxed));
            }
            std::hint::black_box(self.spare_count.load(Ordering::Relaxed));
        }
    }

    /// [`Deciders::quiesce`] without its fence, for a canceller that issued
    /// one after setting its flags (see `Scheduler::cancelled`).
    #[inline(always)]
    pub fn quiesce_fenced(&self) {
        if self.fixed.iter().fold(false, |any, d| any | d.0.load(Ordering::Acquire)) {
            Self::wait_lowered(&self.fixed);
        }
        if self.spare_count.load(Ordering::SeqCst) > 0 {
            self.wait_spares();
        }
    }

    /// Waits until every flag of `flags` is lowered (out of line: a cancel
    /// rarely meets a deciding thread, and its code should stay small).
    #[cold]
    #[inline(never)]
    fn wait_lowered(flags: &[Flag]) {
        for d in flags {
            while d.0.load(Ordering::Acquire) {
                crate::sync::spin_loop();
            }
        }
    }

    /// [`Deciders::wait_lowered`] for the spares' flags.
    #[cold]
    #[inline(never)]
    fn wait_spares(&self) {
        for d in lock(&self.spares).iter() {
            if let Some(flag) = d.flag() {
                Self::wait_lowered(std::slice::from_ref(flag));
            }
        }
    }
}
