//! The object store's memory: a byte cap, LRU eviction, spilling, restoring.
//!
//! # What is counted
//! Every object of at least `small_object_bytes` (default 256) is charged
//! its real size (see `heap_size`) against the cap when it is stored.
//! Smaller objects are not charged and never moved out, like Ray's inline
//! objects: bookkeeping them would cost more than they hold.
//!
//! # Reserving memory
//! [`Store::reserve`] adds an object's bytes only if the total stays within
//! the cap. Otherwise it moves least-recently-used objects out until it fits:
//! spilled to disk (CBOR) when the type is spillable and a spill directory is
//! set, else dropped when the object can be rebuilt from lineage. Objects
//! that are neither are *pinned*: charged, never moved. An object being read
//! (a live `Arc` from `get`) is skipped (see `Slot::evict_with`). When
//! nothing can be moved, `reserve` waits (bounded) for drops to free memory.
//! Victims are chosen under the store lock but moved out (file I/O) after
//! it is released, so spilling never blocks other objects' puts and gets.
//!
//! Recency is kept exactly with the `lru` crate: a `get` of a charged object
//! promotes it (one short critical section; charged objects are at least
//! `small_object_bytes`, so this is small next to what they hold, and
//! uncharged objects never touch the store).
//!
//! # Accounting invariant
//! `bytes` = sum of the charged sizes of objects whose slot is `Ready`.
//! Charged bytes leave the count exactly once: when the value is moved out
//! (`evict_with` returns them) or when the object is freed in `Ready` state
//! (`Slot::take_final` returns them); both read the state under the slot's
//! lock (or with `&mut`), so they cannot both see `Ready`.
//!
//! # Recycling byte buffers
//! A freed replica (an object fetched from a peer) that is a `Vec<u8>` of
//! at least [`RECYCLE_MIN`] bytes of capacity, held by no reader, keeps its
//! buffer in a small pool, and the next replica is decoded into a pooled
//! buffer that fits instead of fresh memory (as Ray's plasma store keeps
//! its arena mapped). Objects made locally are never pooled. The point:
//! a fresh buffer costs a page fault per 4 KiB, which on a VM is as slow as
//! the transfer itself. Invariants: `bytes + pooled <= cap` ([`Store::reserve`]
//! drops pooled buffers, oldest first, before it evicts or waits, so the
//! pool never takes room from objects) and `pooled <= recycle_cap`. A
//! pooled buffer is never shared: it left its object through
//! `Arc::try_unwrap`.

use crate::cell::ObjectCell;
use crate::error::Error;
use crate::heap_size::{charged_size, Decode};
use crate::id::ObjectId;
use crate::slot::{Meta, Moved, Value};
use crate::spill::SpillDir;
use std::any::Any;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

/// Store settings (see `RuntimeBuilder`).
#[derive(Debug, Clone)]
pub(crate) struct StoreConfig {
    pub capacity: usize,
    pub spill_dir: Option<PathBuf>,
    pub put_timeout: Duration,
    pub small_object: usize,
    pub lineage_capacity: usize,
    pub recycle_capacity: Option<usize>,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            capacity: default_capacity(),
            spill_dir: None,
            put_timeout: Duration::from_secs(1),
            small_object: 256,
            lineage_capacity: 1 << 30,
            recycle_capacity: None,
        }
    }
}

/// 30% of the machine's memory (as Ray's default), or 1 GiB if unknown.
pub(crate) fn default_capacity() -> usize {
    let total = std::fs::read_to_string("/proc/meminfo").ok().and_then(|s| {
        let line = s.lines().find(|l| l.starts_with("MemTotal:"))?;
        let kb: usize = line.split_whitespace().nth(1)?.parse().ok()?;
        kb.checked_mul(1024)
    });
    total.map_or(1 << 30, |t| t / 10 * 3)
}

/// The smallest buffer capacity worth recycling (smaller ones are cheap to
/// allocate fresh).
pub(crate) const RECYCLE_MIN: usize = 1 << 20;

/// The default cap on pooled bytes: a quarter of the store, at most 1 GiB.
fn default_recycle_capacity(store_capacity: usize) -> usize {
    (store_capacity / 4).min(1 << 30)
}

/// A spilled object's file; removed from disk when the last handle goes.
#[derive(Debug)]
pub(crate) struct SpillFile {
    pub path: PathBuf,
    pub type_name: &'static str,
    pub decode: Decode,
    pub meta: Meta,
    stats: Arc<Counters>,
}

impl Drop for SpillFile {
    fn drop(&mut self) {
        self.stats.spilled_bytes.fetch_sub(self.meta.charged, Ordering::Relaxed);
        self.stats.spilled_objects.fetch_sub(1, Ordering::Relaxed);
        if let Err(e) = std::fs::remove_file(&self.path) {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(file = %self.path.display(), error = %e, "could not remove spill file");
            }
        }
    }
}

/// The handle a moved-out slot keeps.
pub(crate) type SpillHandle = Arc<SpillFile>;

#[derive(Debug, Default)]
pub(crate) struct Counters {
    evictions: AtomicU64,
    spills: AtomicU64,
    spill_failures: AtomicU64,
    restores: AtomicU64,
    pub reconstructions: AtomicU64,
    lineage_evictions: AtomicU64,
    spilled_bytes: AtomicUsize,
    spilled_objects: AtomicUsize,
}

/// A snapshot of the store's counters ([`Runtime::store_stats`](crate::Runtime::store_stats)).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StoreStats {
    /// The cap on bytes in memory.
    pub capacity: usize,
    /// Bytes of charged objects in memory.
    pub bytes_in_memory: usize,
    /// Charged objects in memory.
    pub objects_in_memory: usize,
    /// Bytes of objects in spill files.
    pub bytes_spilled: usize,
    /// Objects in spill files.
    pub objects_spilled: usize,
    /// Objects dropped from memory to be rebuilt from lineage.
    pub evictions: u64,
    /// Objects written to spill files.
    pub spills: u64,
    /// Spill attempts that failed (the object stayed in memory or was
    /// dropped for lineage instead).
    pub spill_failures: u64,
    /// Objects read back from spill files.
    pub restores: u64,
    /// Objects rebuilt by re-running their task.
    pub reconstructions: u64,
    /// Bytes of lineage records kept for rebuilding.
    pub lineage_bytes: usize,
    /// Bytes of freed `Vec<u8>` buffers kept for reuse by fetched replicas
    /// (not counted in `bytes_in_memory`; see `RuntimeBuilder::recycle_capacity`).
    pub bytes_recycled: usize,
    /// Lineage records dropped by the lineage cap.
    pub lineage_evictions: u64,
}

struct Inner {
    bytes: usize,
    objects: usize,
    lru: lru::LruCache<ObjectId, (Weak<ObjectCell>, usize)>,
    /// Recycled buffers (see "Recycling byte buffers"), oldest first.
    pool: Vec<Vec<u8>>,
    /// Sum of the pool's capacities.
    pooled: usize,
}

/// One runtime's object store. (Public only so `MultiReturn` can name it;
/// not part of the API.)
#[doc(hidden)]
pub struct Store {
    cap: usize,
    small: usize,
    put_timeout: Duration,
    spill: Option<SpillDir>,
    inner: Mutex<Inner>,
    freed: Condvar,
    stats: Arc<Counters>,
    lineage_cap: usize,
    lineage: Mutex<LineageLog>,
    recycle_cap: usize,
}

/// Lineage records in the order they were kept (oldest first), and the
/// bytes of the live ones. Entries of freed objects stay until they reach
/// the front or the log is compacted.
#[derive(Default)]
struct LineageLog {
    order: std::collections::VecDeque<Weak<ObjectCell>>,
    bytes: usize,
    live: usize,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("cap", &self.cap).field("spill", &self.spill).finish()
    }
}

/// How long a reservation waits between retries when every candidate is
/// being read (readers release values without telling the store).
const RETRY: Duration = Duration::from_millis(2);

impl Store {
    pub(crate) fn new(cfg: &StoreConfig) -> std::io::Result<Store> {
        let spill = cfg.spill_dir.as_deref().map(SpillDir::create).transpose()?;
        Ok(Store {
            cap: cfg.capacity,
            small: cfg.small_object,
            put_timeout: cfg.put_timeout,
            spill,
            inner: Mutex::new(Inner {
                bytes: 0,
                objects: 0,
                lru: lru::LruCache::unbounded(),
                pool: Vec::new(),
                pooled: 0,
            }),
            freed: Condvar::new(),
            stats: Arc::new(Counters::default()),
            lineage_cap: cfg.lineage_capacity,
            lineage: Mutex::new(LineageLog::default()),
            recycle_cap: cfg.recycle_capacity.unwrap_or_else(|| default_recycle_capacity(cfg.capacity)),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn capacity(&self) -> usize {
        self.cap
    }

    pub(crate) fn spill_dir(&self) -> Option<&std::path::Path> {
        self.spill.as_ref().map(SpillDir::path)
    }

    /// Sizes a value and reserves its bytes (waiting up to the put timeout
    /// if `wait`). Gives the value back if it cannot be stored.
    pub(crate) fn admit<T: Any + Send + Sync>(&self, value: T, wait: bool) -> Result<(Value, Meta), (T, usize)> {
        if !std::mem::needs_drop::<T>() && std::mem::size_of::<T>() < self.small {
            // No drop glue means no heap: a small plain value is never charged
            // (and so never spilled), whatever the registry says.
            return Ok((Value::new(value), Meta::default()));
        }
        let (size, _) = charged_size(&value);
        if size < self.small {
            return Ok((Value::new(value), Meta { charged: 0 }));
        }
        if !self.reserve(size, wait) {
            return Err((value, size));
        }
        Ok((Value::new(value), Meta { charged: size }))
    }

    /// Adds `size` bytes to memory if they fit under the cap, moving LRU
    /// objects out as needed. See the module docs.
    pub(crate) fn reserve(&self, size: usize, wait: bool) -> bool {
        if size > self.cap {
            return false;
        }
        let deadline = Instant::now() + if wait { self.put_timeout } else { Duration::ZERO };
        loop {
            let mut unpooled = Vec::new();
            let victims = {
                let mut g = self.lock();
                // Pooled buffers go first (dropped after the lock).
                while g.bytes + g.pooled + size > self.cap && !g.pool.is_empty() {
                    let buf = g.pool.remove(0);
                    g.pooled -= buf.capacity();
                    unpooled.push(buf);
                }
                if g.bytes + size <= self.cap {
                    g.bytes += size;
                    g.objects += 1;
                    return true;
                }
                let need = g.bytes + size - self.cap;
                let mut found = 0;
                let mut victims = Vec::new();
                while found < need {
                    let Some((id, (cell, bytes))) = g.lru.pop_lru() else { break };
                    found += bytes;
                    victims.push((id, cell, bytes));
                }
                victims
            };
            drop(unpooled);
            let mut moved = false;
            for (id, weak, bytes) in victims {
                // A cell that cannot be upgraded is being freed: its drop
                // returns its bytes and signals `freed`.
                let Some(cell) = weak.upgrade() else { continue };
                match self.move_out(&cell) {
                    Some(n) => {
                        self.release(n);
                        moved = true;
                    }
                    // Being read, or its spill failed: still a candidate.
                    // (If it is out or coming back, `bring_back` re-tracks it.)
                    None if cell.slot.in_memory() => {
                        self.lock().lru.push(id, (weak, bytes));
                    }
                    None => {}
                }
            }
            if moved {
                continue;
            }
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            let g = self.lock();
            if g.bytes + size <= self.cap {
                continue;
            }
            let _ = self.freed.wait_timeout(g, (deadline - now).min(RETRY));
        }
    }

    /// Returns one object's bytes (it left memory or was freed).
    pub(crate) fn release(&self, bytes: usize) {
        self.release_freed(bytes, None);
    }

    /// Returns a freed object's bytes, like [`Store::release`], and keeps
    /// `value`'s buffer for reuse if it is a large `Vec<u8>` nobody else
    /// holds and the pool has room (see "Recycling byte buffers"). The
    /// caller passes a value only for replicas.
    pub(crate) fn release_freed(&self, bytes: usize, value: Option<Value>) {
        let buf = value.and_then(|v| std::sync::Arc::downcast::<Vec<u8>>(v.data).ok());
        let mut buf = buf.and_then(|b| std::sync::Arc::try_unwrap(b).ok()).filter(|b| b.capacity() >= RECYCLE_MIN);
        let mut g = self.lock();
        g.bytes -= bytes.min(g.bytes);
        g.objects = g.objects.saturating_sub(1);
        if let Some(b) = buf.take_if(|b| {
            let n = b.capacity();
            g.pooled + n <= self.recycle_cap && g.bytes + g.pooled + n <= self.cap
        }) {
            g.pooled += b.capacity();
            g.pool.push(b);
        }
        drop(g);
        drop(buf); // not kept: freed outside the lock
        self.freed.notify_all();
    }

    /// A pooled buffer for a `len`-byte value: the smallest whose capacity
    /// is at least `len` and wastes at most a quarter of it. Its contents
    /// are an old object's bytes (initialized, to be overwritten).
    pub(crate) fn recycled(&self, len: usize) -> Option<Vec<u8>> {
        if len < RECYCLE_MIN {
            return None;
        }
        let mut g = self.lock();
        let fits = |b: &Vec<u8>| b.capacity() >= len && b.capacity() - len <= len / 4;
        let (i, _) = g.pool.iter().enumerate().filter(|(_, b)| fits(b)).min_by_key(|(_, b)| b.capacity())?;
        let buf = g.pool.remove(i);
        g.pooled -= buf.capacity();
        Some(buf)
    }

    /// Makes a stored object a candidate for moving out.
    pub(crate) fn track(&self, cell: &Arc<ObjectCell>, bytes: usize) {
        self.lock().lru.push(cell.id, (Arc::downgrade(cell), bytes));
    }

    /// Keeps an object's lineage record, evicting the oldest records while
    /// the total is over the lineage cap. An evicted record's object can no
    /// longer be rebuilt (it stays in memory or on disk while it can, and
    /// fails with `LineageEvicted` if it was already dropped).
    pub(crate) fn add_lineage(&self, cell: &Arc<ObjectCell>) {
        let mut victims = Vec::new();
        {
            let mut log = self.lineage.lock().unwrap_or_else(|p| p.into_inner());
            log.order.push_back(Arc::downgrade(cell));
            log.live += 1;
            log.bytes += cell.lineage().map_or(0, |l| l.record_bytes());
            if log.order.len() > 2 * log.live + 64 {
                log.order.retain(|w| w.strong_count() > 0);
            }
            while log.bytes > self.lineage_cap {
                let Some(w) = log.order.pop_front() else { break };
                if let Some(c) = w.upgrade() {
                    let bytes = c.take_lineage_bytes();
                    if bytes > 0 {
                        log.bytes -= bytes.min(log.bytes);
                        log.live = log.live.saturating_sub(1);
                        victims.push(c);
                    }
                }
            }
        }
        // Outside the lock: dropping a record may free its inputs, whose
        // own drops come back here.
        for c in victims {
            self.stats.lineage_evictions.fetch_add(1, Ordering::Relaxed);
            c.drop_lineage();
        }
    }

    /// A freed object returns its lineage record's bytes.
    pub(crate) fn lineage_freed(&self, bytes: usize) {
        if bytes > 0 {
            let mut log = self.lineage.lock().unwrap_or_else(|p| p.into_inner());
            log.bytes -= bytes.min(log.bytes);
            log.live = log.live.saturating_sub(1);
        }
    }

    /// Marks a tracked object as just used.
    pub(crate) fn touch(&self, id: ObjectId) {
        self.lock().lru.promote(&id);
    }

    /// Forgets a freed object.
    pub(crate) fn untrack(&self, id: ObjectId) {
        self.lock().lru.pop(&id);
    }

    /// Moves one object out of memory; returns the bytes freed.
    fn move_out(&self, cell: &ObjectCell) -> Option<usize> {
        let spill = self.spill.as_ref();
        let has_lineage = cell.lineage().is_some();
        let freed = cell.slot.evict_with(|v, meta| {
            if let (Some(dir), Some((encode, decode))) = (spill, v.codec()) {
                match dir.write(cell.id, v.type_name, encode, v) {
                    Ok(path) => {
                        self.stats.spills.fetch_add(1, Ordering::Relaxed);
                        self.stats.spilled_bytes.fetch_add(meta.charged, Ordering::Relaxed);
                        self.stats.spilled_objects.fetch_add(1, Ordering::Relaxed);
                        let file = SpillFile { path, type_name: v.type_name, decode, meta, stats: self.stats.clone() };
                        return Some(Moved::Spilled(Arc::new(file)));
                    }
                    Err(e) => {
                        self.stats.spill_failures.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(object = %cell.id, error = %e, "spill failed");
                    }
                }
            }
            if has_lineage {
                self.stats.evictions.fetch_add(1, Ordering::Relaxed);
                return Some(Moved::Evicted);
            }
            None
        });
        freed
    }

    /// Brings a moved-out value back for a reader: from its spill file, or
    /// by re-running its task. The value goes back into memory if it fits
    /// (without waiting); otherwise this reader gets it and the object stays
    /// out.
    pub(crate) fn bring_back(&self, cell: &Arc<ObjectCell>, moved: Moved<SpillHandle>) -> Result<Value, Error> {
        let restored = match &moved {
            Moved::Spilled(file) => match crate::spill::read_file(&file.path, file.type_name, file.decode) {
                Ok(v) => {
                    self.stats.restores.fetch_add(1, Ordering::Relaxed);
                    Ok((v, file.meta))
                }
                Err(e) => {
                    tracing::warn!(object = %cell.id, error = %e, "spill file unreadable; trying lineage");
                    self.rebuild(cell, Some(e.to_string()))
                }
            },
            Moved::Evicted => self.rebuild(cell, None),
        };
        let (value, meta) = match restored {
            Ok(x) => x,
            Err(e) => {
                cell.slot.finish_rebuild(Err(Err(e.clone())));
                return Err(e);
            }
        };
        if meta.charged == 0 || self.reserve(meta.charged, false) {
            cell.slot.finish_rebuild(Ok((value.clone(), meta)));
            if meta.charged > 0 {
                self.track(cell, meta.charged);
            }
        } else {
            // No room: this reader gets the value; the object stays out.
            match moved {
                Moved::Spilled(f) if f.path.exists() => cell.slot.finish_rebuild(Err(Ok(Moved::Spilled(f)))),
                _ => cell.slot.finish_rebuild(Err(Ok(Moved::Evicted))),
            }
        }
        Ok(value)
    }

    fn rebuild(&self, cell: &ObjectCell, spill_error: Option<String>) -> Result<(Value, Meta), Error> {
        if cell.lineage_evicted() {
            let task = cell.producer.as_ref().map_or_else(|| "?".into(), |t| t.name_text());
            return Err(Error::LineageEvicted { id: cell.id, task });
        }
        let Some(lineage) = cell.lineage() else {
            let made_by = match &cell.producer {
                Some(t) => format!("made by one-shot task `{}`, which cannot be re-run", t.name),
                None => "stored by put, so it has no lineage".into(),
            };
            let reason = match spill_error {
                Some(e) => format!("its spill file is unreadable ({e}); it was {made_by}"),
                None => format!("it was moved out of memory; it was {made_by}"),
            };
            return Err(Error::ObjectLost { id: cell.id, reason: reason.into() });
        };
        let out = lineage.rebuild(self)?;
        self.stats.reconstructions.fetch_add(1, Ordering::Relaxed);
        Ok(out)
    }

    /// Sizes a rebuilt value without reserving it.
    pub(crate) fn measure<T: Any + Send + Sync>(&self, value: T) -> (Value, Meta) {
        let (size, _) = charged_size(&value);
        let charged = if size < self.small { 0 } else { size };
        (Value::new(value), Meta { charged })
    }

    /// Sizes a decoded value of type `T` (held as a [`Value`]) without
    /// reserving it.
    pub(crate) fn measure_value<T: Any + Send + Sync>(&self, value: Value) -> (Value, Meta) {
        let heap = crate::heap_size::lookup(std::any::TypeId::of::<T>()).map_or(0, |i| (i.heap_size)(&*value.data));
        let size = std::mem::size_of::<T>() + heap;
        let charged = if size < self.small { 0 } else { size };
        (value, Meta { charged })
    }

    pub(crate) fn stats(&self) -> StoreStats {
        let g = self.lock();
        let s = &self.stats;
        StoreStats {
            capacity: self.cap,
            bytes_in_memory: g.bytes,
            objects_in_memory: g.objects,
            bytes_spilled: s.spilled_bytes.load(Ordering::Relaxed),
            objects_spilled: s.spilled_objects.load(Ordering::Relaxed),
            evictions: s.evictions.load(Ordering::Relaxed),
            spills: s.spills.load(Ordering::Relaxed),
            spill_failures: s.spill_failures.load(Ordering::Relaxed),
            restores: s.restores.load(Ordering::Relaxed),
            reconstructions: s.reconstructions.load(Ordering::Relaxed),
            lineage_bytes: self.lineage.lock().map_or(0, |l| l.bytes),
            lineage_evictions: s.lineage_evictions.load(Ordering::Relaxed),
            bytes_recycled: g.pooled,
        }
    }

    pub(crate) fn has_spill_dir(&self) -> bool {
        self.spill.is_some()
    }
}

/// Re-runs the task that made an object (its lineage).
pub(crate) trait Rebuild: Send + Sync {
    /// Runs the task again and sizes its result (without reserving it).
    fn rebuild(&self, store: &Store) -> Result<(Value, Meta), Error>;
    /// What the record counts against the lineage cap.
    fn record_bytes(&self) -> usize;
}
