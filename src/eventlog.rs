//! An append-only log with one writer and lock-free appends: each thread's
//! timeline events (`timeline`), written on the path of every task while
//! recording and read rarely (a snapshot, a clear) from any thread.
//!
//! # Why not a mutex
//! A mutex around each thread's log costs a locked instruction to lock and
//! another to unlock on every append, and each drains the store buffer:
//! the unlock waits for the event just written (a cache line or two that
//! usually miss) to reach the cache. Measured in `microbench timeline`,
//! that was about half the cost of recording. Here an append is a plain
//! write of the value and a release store of the count: no locked
//! instruction, so the stores drain while the worker goes on.
//!
//! # Protocol
//! The log is a list of chunks that never move; each chunk has fixed slots
//! and a published count `len`. The one [`Writer`] writes slot `n` of its
//! current chunk (never a published slot), then stores `len = n + 1`
//! (Release). A reader ([`EventLog::snapshot`]) holds the list's lock, loads
//! each chunk's `len` (Acquire) and reads only slots below it. A full chunk
//! is replaced by a new one, appended to the list under the same lock (once
//! per [`CHUNK`] values).
//!
//! [`EventLog::clear`] takes the list's lock, bumps `epoch` and empties the
//! list: a chunk nobody else holds has its values dropped and is kept as a
//! spare; the writer's current chunk stays with the writer, which sees the
//! new epoch at its next append and starts a fresh chunk. A value whose
//! append raced with the clear may be kept or dropped; one appended after
//! the writer's thread learned of the clear (any happens-before from the
//! clearing thread) is kept.
//!
//! Invariants: at most one `Writer` per log at a time ([`EventLog::writer`]
//! refuses a second); a slot is written once, before its chunk's `len`
//! covers it, and read only after; a chunk's values are dropped exactly
//! once (by whoever holds its last reference, or by a clear that holds the
//! only one). `tests/loom_eventlog.rs` checks appends against snapshots
//! and clears, and a seeded bug (publishing before writing).

#![allow(unsafe_code)]

use crate::sync::{lock, Arc, AtomicBool, AtomicUsize, Mutex, Ordering, UnsafeCell};
use std::mem::MaybeUninit;

/// Values per chunk (timeline events: about 26 KiB, under glibc's mmap
/// threshold, so a chunk comes from the heap, not from fresh pages; kept
/// chunks are reused after a clear, since a page fault costs more than the
/// rest of an event).
#[cfg(not(loom))]
pub const CHUNK: usize = 256;
/// Values per chunk (small under loom, so that models reach a full chunk).
#[cfg(loom)]
pub const CHUNK: usize = 2;

/// Fixed slots and the count of those written.
struct Chunk<T> {
    slots: Box<[UnsafeCell<MaybeUninit<T>>]>,
    /// Slots written (a prefix); only the writer stores it.
    len: AtomicUsize,
}

// SAFETY: slots below `len` are only read (by readers holding the list's
// lock, or by whoever has exclusive access); the slot at `len` is written
// only by the one writer, and nobody reads it until `len` covers it. So
// values move between threads (`T: Send`) and are read from several
// threads (`T: Sync`, for the clone in a snapshot).
unsafe impl<T: Send + Sync> Sync for Chunk<T> {}
// SAFETY: as above; a chunk owns its values.
unsafe impl<T: Send> Send for Chunk<T> {}

impl<T> Chunk<T> {
    fn new() -> Chunk<T> {
        Chunk { slots: (0..CHUNK).map(|_| UnsafeCell::new(MaybeUninit::uninit())).collect(), len: AtomicUsize::new(0) }
    }

    /// Drops the written values (exclusive access: no writer, no reader).
    fn reset(&mut self) {
        let n = self.len.load(Ordering::Acquire);
        for slot in &self.slots[..n] {
            // SAFETY: slots below `len` were written, and with `&mut self`
            // nobody else reaches them; `len` goes to 0 next, so none is
            // dropped twice.
            slot.with_mut(|p| unsafe { (*p).assume_init_drop() });
        }
        self.len.store(0, Ordering::Release);
    }
}

impl<T> Drop for Chunk<T> {
    fn drop(&mut self) {
        // A loom model that caught a race unwinds through here; touching
        // the slots again would panic inside the unwind and abort the
        // test binary (the values leak instead, in that model only).
        #[cfg(loom)]
        if std::thread::panicking() {
            return;
        }
        self.reset();
    }
}

/// What the writer and the readers share.
struct Shared<T> {
    /// Every chunk holding values, in order (the writer's current one
    /// last), and spare empty chunks.
    chunks: Mutex<Chunks<T>>,
    /// Bumped by each clear (read by the writer at every append).
    epoch: AtomicUsize,
    /// True while a [`Writer`] exists.
    has_writer: AtomicBool,
}

struct Chunks<T> {
    live: Vec<Arc<Chunk<T>>>,
    spare: Vec<Chunk<T>>,
}

/// A log's reading end: snapshots and clears, from any thread (module
/// docs). Cloning it gives another handle to the same log.
pub struct EventLog<T> {
    shared: Arc<Shared<T>>,
}

impl<T> Clone for EventLog<T> {
    fn clone(&self) -> Self {
        EventLog { shared: self.shared.clone() }
    }
}

impl<T> std::fmt::Debug for EventLog<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("EventLog")
    }
}

impl<T> EventLog<T> {
    /// An empty log with no writer yet.
    fn new() -> EventLog<T> {
        let chunks = Mutex::new(Chunks { live: Vec::new(), spare: Vec::new() });
        EventLog { shared: Arc::new(Shared { chunks, epoch: AtomicUsize::new(0), has_writer: AtomicBool::new(false) }) }
    }

    /// A new log and its writer.
    pub fn with_writer() -> (EventLog<T>, Writer<T>) {
        let log = EventLog::new();
        log.shared.has_writer.store(true, Ordering::Release);
        let writer = log.attach();
        (log, writer)
    }

    /// The log's one writer, or `None` while another exists.
    pub fn writer(&self) -> Option<Writer<T>> {
        if self.shared.has_writer.swap(true, Ordering::AcqRel) {
            return None;
        }
        Some(self.attach())
    }

    /// A writer with a fresh chunk (the caller has claimed `has_writer`).
    fn attach(&self) -> Writer<T> {
        let (cur, epoch) = Writer::start_chunk(&self.shared, &mut lock(&self.shared.chunks));
        Writer { shared: self.shared.clone(), cur, n: 0, epoch }
    }

    /// A copy of every value appended so far (since the last clear), in
    /// order.
    pub fn snapshot(&self) -> Vec<T>
    where
        T: Clone,
    {
        let chunks = lock(&self.shared.chunks);
        let mut out = Vec::new();
        for chunk in &chunks.live {
            let n = chunk.len.load(Ordering::Acquire);
            for slot in &chunk.slots[..n] {
                // SAFETY: `len` (Acquire, pairing with the writer's Release)
                // covers this slot, so it was written and the writer never
                // touches it again; the chunk is alive (we hold an `Arc`)
                // and only a holder of the list's lock (us) or of the
                // chunk's last reference drops its values.
                out.push(slot.with(|p| unsafe { (*p).assume_init_ref().clone() }));
            }
        }
        out
    }

    /// Forgets every value appended so far; their chunks are kept for the
    /// next ones.
    pub fn clear(&self) {
        let mut chunks = lock(&self.shared.chunks);
        self.shared.epoch.fetch_add(1, Ordering::AcqRel);
        let live = std::mem::take(&mut chunks.live);
        for chunk in live {
            // The writer's current chunk is still shared: the writer drops
            // or recycles it when it sees the new epoch.
            if let Ok(mut chunk) = Arc::try_unwrap(chunk) {
                chunk.reset();
                chunks.spare.push(chunk);
            }
        }
    }
}

/// A log's one writing end (module docs). Appends take no lock, except
/// once per [`CHUNK`] values and after a clear.
///
/// Not `Sync`: it is one thread's; it may move to another thread.
pub struct Writer<T> {
    shared: Arc<Shared<T>>,
    /// The chunk being filled.
    cur: Arc<Chunk<T>>,
    /// Slots of `cur` written.
    n: usize,
    /// The clear epoch `cur` belongs to.
    epoch: usize,
}

impl<T> std::fmt::Debug for Writer<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Writer").field("n", &self.n).finish()
    }
}

impl<T> Writer<T> {
    /// Appends `value`.
    #[inline]
    pub fn push(&mut self, value: T) {
        let epoch = self.shared.epoch.load(Ordering::Acquire);
        if self.n == CHUNK || epoch != self.epoch {
            self.next_chunk();
        }
        let n = self.n;
        // SAFETY: slot `n` is not yet covered by `len` (we alone store
        // `len`, and it equals `n`), so no reader reaches it, and no other
        // writer exists (`EventLog::writer`).
        self.cur.slots[n].with_mut(|p| unsafe { (*p).write(value) });
        self.cur.len.store(n + 1, Ordering::Release);
        self.n = n + 1;
    }

    /// Starts a new chunk (the current one is full, or a clear took it),
    /// listed under the list's lock.
    #[cold]
    fn next_chunk(&mut self) {
        let mut chunks = lock(&self.shared.chunks);
        let (chunk, epoch) = Writer::start_chunk(&self.shared, &mut chunks);
        let old = std::mem::replace(&mut self.cur, chunk);
        self.epoch = epoch;
        self.n = 0;
        // Unlisted by a clear and held by no reader: recycle it.
        if let Ok(mut old) = Arc::try_unwrap(old) {
            old.reset();
            chunks.spare.push(old);
        }
    }

    /// A chunk to fill (a spare if there is one), listed last, and the
    /// clear epoch it belongs to (read under the list's lock: a clear bumps
    /// it under the same lock, so the listing and the epoch agree).
    fn start_chunk(shared: &Shared<T>, chunks: &mut Chunks<T>) -> (Arc<Chunk<T>>, usize) {
        let chunk = Arc::new(chunks.spare.pop().unwrap_or_else(Chunk::new));
        chunks.live.push(chunk.clone());
        (chunk, shared.epoch.load(Ordering::Acquire))
    }

    /// The seeded bug for the loom model: `len` published before the value
    /// is written (a reader may read an unwritten slot).
    #[cfg(loom)]
    pub fn push_racy(&mut self, value: T) {
        let epoch = self.shared.epoch.load(Ordering::Acquire);
        if self.n == CHUNK || epoch != self.epoch {
            self.next_chunk();
        }
        let n = self.n;
        self.cur.len.store(n + 1, Ordering::Release);
        // SAFETY: none; this is the bug the model must catch.
        self.cur.slots[n].with_mut(|p| unsafe { (*p).write(value) });
        self.n = n + 1;
    }
}

impl<T> Drop for Writer<T> {
    fn drop(&mut self) {
        self.shared.has_writer.store(false, Ordering::Release);
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    /// Values come back in order across chunks; a clear empties the log,
    /// and the chunks it kept are used again.
    #[test]
    fn appends_come_back_in_order_and_a_clear_recycles_chunks() {
        let (log, mut w) = EventLog::with_writer();
        assert!(log.writer().is_none(), "one writer at a time");
        let n = CHUNK * 2 + 3;
        (0..n).for_each(|i| w.push(i));
        assert_eq!(log.snapshot(), (0..n).collect::<Vec<_>>());
        log.clear();
        assert!(log.snapshot().is_empty());
        assert_eq!(lock(&log.shared.chunks).spare.len(), 2, "the full chunks are kept");
        (0..n).for_each(|i| w.push(i + 100));
        assert_eq!(log.snapshot(), (100..n + 100).collect::<Vec<_>>());
        assert!(lock(&log.shared.chunks).spare.len() <= 1, "the kept chunks were used again");
        drop(w);
        assert!(log.writer().is_some(), "a writer again once the first is gone");
    }

    /// Values are dropped exactly once: by a clear, or with the log.
    #[test]
    fn values_are_dropped_once() {
        let counted = std::sync::Arc::new(());
        let (log, mut w) = EventLog::with_writer();
        (0..CHUNK + 1).for_each(|_| w.push(counted.clone()));
        assert_eq!(std::sync::Arc::strong_count(&counted), CHUNK + 2);
        log.clear();
        w.push(counted.clone()); // the writer leaves its cleared chunk
        assert_eq!(std::sync::Arc::strong_count(&counted), 2);
        drop((w, log));
        assert_eq!(std::sync::Arc::strong_count(&counted), 1);
    }
}
