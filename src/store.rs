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

use crate::error::Error;
use crate::heap_size::{charged_size, Decode};
use crate::id::ObjectId;
use crate::lineage::{Log, Rebuild};
use crate::slot::{Meta, Moved, Slot, Value};
use crate::spill::{SpillDir, SpillError};
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

/// What the store sees of an object: its id and its slot (the object cell
/// implements it; the store never needs more).
pub(crate) trait Resident: Send + Sync {
    /// The object's id.
    fn id(&self) -> ObjectId;
    /// The object's slot.
    fn slot(&self) -> &Slot<SpillHandle>;
    /// The object as `Any` (a rebuild finds its cell again, to name its
    /// job as the producer).
    fn as_any(&self) -> &dyn Any;
}

struct Inner {
    bytes: usize,
    objects: usize,
    lru: lru::LruCache<ObjectId, (Weak<dyn Resident>, usize)>,
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
    lineage: Mutex<Log>,
    recycle_cap: usize,
    /// The runtime's timeline (spills, restores and rebuilds go on it).
    recorder: std::sync::OnceLock<Arc<crate::timeline::Recorder>>,
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
            lineage: Mutex::new(Log::default()),
            recycle_cap: cfg.recycle_capacity.unwrap_or_else(|| default_recycle_capacity(cfg.capacity)),
            recorder: std::sync::OnceLock::new(),
        })
    }

    /// Puts the store's moves on the runtime's timeline (set once, at build).
    pub(crate) fn set_recorder(&self, recorder: Arc<crate::timeline::Recorder>) {
        let _ = self.recorder.set(recorder);
    }

    /// The timeline, if it is recording now.
    fn recording(&self) -> Option<&Arc<crate::timeline::Recorder>> {
        self.recorder.get().filter(|r| r.is_on())
    }

    /// Records a store operation that started at `start` (if recording).
    fn record(&self, op: crate::timeline::StoreOp, id: ObjectId, bytes: usize, start: Option<u64>) {
        if let (Some(r), Some(start)) = (self.recording(), start) {
            let end = r.now();
            r.record(|thread| crate::timeline::Event::Store { op, id, bytes, thread, start, end });
        }
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

    /// True if no `T` is ever charged: no drop glue (so no heap) and
    /// smaller than the charged minimum. Storing one needs nothing of the
    /// store (the first case of [`Store::admit`]), so a task returning one
    /// does not hold the store (one shared count less per task).
    pub(crate) fn never_charged<T>(&self) -> bool {
        !std::mem::needs_drop::<T>() && std::mem::size_of::<T>() < self.small
    }

    /// Sizes a value and reserves its bytes (waiting up to the put timeout
    /// if `wait`). Gives the value back if it cannot be stored.
    pub(crate) fn admit<T: Any + Send + Sync>(&self, value: T, wait: bool) -> Result<(Value, Meta), (T, usize)> {
        if self.never_charged::<T>() {
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
    /// True if `size` more bytes fit in memory now without evicting or
    /// spilling anything (one lock; no reservation is made).
    pub(crate) fn fits_now(&self, size: usize) -> bool {
        self.lock().bytes.saturating_add(size) <= self.cap
    }

    pub(crate) fn reserve(&self, size: usize, wait: bool) -> bool {
        if size > self.cap {
            return false;
        }
        // `None`: a put timeout past what an `Instant` holds (wait forever).
        let deadline = Instant::now().checked_add(if wait { self.put_timeout } else { Duration::ZERO });
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
                    let Some((id, (obj, bytes))) = g.lru.pop_lru() else { break };
                    found += bytes;
                    victims.push((id, obj, bytes));
                }
                victims
            };
            drop(unpooled);
            let mut moved = false;
            for (id, weak, bytes) in victims {
                // An object that cannot be upgraded is being freed: its drop
                // returns its bytes and signals `freed`.
                let Some(obj) = weak.upgrade() else { continue };
                match self.move_out(&*obj) {
                    Some(n) => {
                        self.release(n);
                        moved = true;
                    }
                    // Being read, or its spill failed: still a candidate.
                    // (If it is out or coming back, its return re-tracks it.)
                    None if obj.slot().in_memory() => {
                        self.lock().lru.push(id, (weak, bytes));
                    }
                    None => {}
                }
            }
            if moved {
                continue;
            }
            let now = Instant::now();
            if deadline.is_some_and(|d| now >= d) {
                return false;
            }
            let g = self.lock();
            if g.bytes + size <= self.cap {
                continue;
            }
            let left = deadline.map_or(RETRY, |d| d - now);
            let _ = self.freed.wait_timeout(g, left.min(RETRY));
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

    /// Keeps a charged object that just became ready: its lineage record
    /// (so it can be rebuilt) and, if it can be moved out (spilled, or
    /// dropped and rebuilt), its place in the LRU order. Returns whether
    /// a lineage record was kept (the object must then call
    /// [`Store::freed`] with `lineage` set).
    pub(crate) fn keep(
        &self,
        obj: &Arc<impl Resident + 'static>,
        charged: usize,
        spillable: bool,
        lineage: Option<Arc<dyn Rebuild>>,
    ) -> bool {
        let has_lineage = lineage.is_some();
        if let Some(record) = lineage {
            let victims = self.lineage_lock().add(obj.id(), record, self.lineage_cap);
            drop(victims); // outside the lock: may free the records' inputs
        }
        if has_lineage || (spillable && self.spill.is_some()) {
            let weak: Weak<dyn Resident> = Arc::downgrade(obj) as Weak<dyn Resident>;
            self.lock().lru.push(obj.id(), (weak, charged));
        }
        has_lineage
    }

    /// A charged object is freed: forget it (LRU, lineage if it had a
    /// record) and return its bytes (`value`: its buffer, for replicas'
    /// recycling; see [`Store::release_freed`]).
    pub(crate) fn freed(&self, id: ObjectId, lineage: bool, charged: usize, value: Option<Value>) {
        if lineage {
            let record = self.lineage_lock().remove(id);
            drop(record); // outside the lock
        }
        self.lock().lru.pop(&id);
        if charged > 0 {
            self.release_freed(charged, value);
        }
    }

    fn lineage_lock(&self) -> MutexGuard<'_, Log> {
        self.lineage.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// What the lineage log knows of `id`, for a reader about to rebuild
    /// it: a record handed out counts as one rebuild of the object (see
    /// `lineage`: past its task's `max_reconstructions` the record fails
    /// the rebuild instead).
    pub(crate) fn lineage_of(&self, id: ObjectId) -> crate::lineage::Lookup {
        self.lineage_lock().claim(id)
    }

    /// True if `id` could be rebuilt from lineage now.
    pub(crate) fn can_rebuild(&self, id: ObjectId) -> bool {
        self.lineage_lock().has(id)
    }

    /// Marks a tracked object as just used.
    pub(crate) fn touch(&self, id: ObjectId) {
        self.lock().lru.promote(&id);
    }

    /// Moves one object out of memory; returns the bytes freed.
    fn move_out(&self, obj: &dyn Resident) -> Option<usize> {
        let spill = self.spill.as_ref();
        let id = obj.id();
        let has_lineage = self.lineage_lock().has(id);
        obj.slot().evict_with(|v, meta| {
            if let (Some(dir), Some((encode, decode))) = (spill, v.codec()) {
                let _span = tracing::debug_span!("manta.spill", object = %id, bytes = meta.charged).entered();
                let start = self.recording().map(|r| r.now());
                match dir.write(id, v.type_name, encode, v) {
                    Ok(path) => {
                        self.record(crate::timeline::StoreOp::Spill, id, meta.charged, start);
                        self.stats.spills.fetch_add(1, Ordering::Relaxed);
                        self.stats.spilled_bytes.fetch_add(meta.charged, Ordering::Relaxed);
                        self.stats.spilled_objects.fetch_add(1, Ordering::Relaxed);
                        tracing::debug!(object = %id, bytes = meta.charged, "spilled to disk");
                        let file = SpillFile { path, type_name: v.type_name, decode, meta, stats: self.stats.clone() };
                        return Some(Moved::Spilled(Arc::new(file)));
                    }
                    Err(e) => {
                        self.stats.spill_failures.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(object = %id, error = %e, "spill failed");
                    }
                }
            }
            if has_lineage {
                self.stats.evictions.fetch_add(1, Ordering::Relaxed);
                return Some(Moved::Evicted);
            }
            None
        })
    }

    /// Reads a spilled object back for a reader that claimed its rebuild
    /// (`Slot::begin_rebuild`). The value goes back into memory if it fits
    /// without waiting; otherwise this reader gets it and the object stays
    /// spilled. `Err` (file unreadable): the caller tries lineage next.
    pub(crate) fn restore(&self, obj: &Arc<impl Resident + 'static>, file: SpillHandle) -> Result<Value, SpillError> {
        let _span = tracing::debug_span!("manta.restore", object = %obj.id(), bytes = file.meta.charged).entered();
        let start = self.recording().map(|r| r.now());
        let (value, meta) = match crate::spill::read_file(&file.path, file.type_name, file.decode) {
            Ok(v) => (v, file.meta),
            Err(e) => {
                tracing::warn!(object = %obj.id(), error = %e, "spill file unreadable; trying lineage");
                return Err(e);
            }
        };
        self.stats.restores.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(object = %obj.id(), bytes = meta.charged, "restored from disk");
        self.record(crate::timeline::StoreOp::Restore, obj.id(), meta.charged, start);
        if meta.charged == 0 || self.reserve(meta.charged, false) {
            let (wake, stored) = obj.slot().finish_rebuild_deferred(Ok((value.clone(), meta)));
            if meta.charged > 0 {
                if stored {
                    self.track(obj, meta.charged);
                } else {
                    self.release(meta.charged); // freed meanwhile
                }
            }
            wake.send();
        } else {
            // No room: this reader gets the value; the object stays out.
            obj.slot().finish_rebuild(Err(Ok(Moved::Spilled(file))));
        }
        Ok(value)
    }

    /// A rebuild of `obj` to hand to its lineage record (see [`RebuildJob`]).
    pub(crate) fn rebuild_job(self: &Arc<Self>, obj: Arc<dyn Resident>) -> RebuildJob {
        tracing::debug!(object = %obj.id(), "rebuilding a lost object from its lineage");
        let start = self.recording().map(|r| r.now());
        RebuildJob { store: self.clone(), obj: Some(obj), start }
    }

    fn track(&self, obj: &Arc<impl Resident + 'static>, bytes: usize) {
        let weak: Weak<dyn Resident> = Arc::downgrade(obj) as Weak<dyn Resident>;
        self.lock().lru.push(obj.id(), (weak, bytes));
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
            lineage_bytes: self.lineage.lock().map_or(0, |l| l.bytes()),
            lineage_evictions: self.lineage.lock().map_or(0, |l| l.evictions),
            bytes_recycled: g.pooled,
        }
    }
}

/// A lineage rebuild in flight: the object whose value was dropped (its
/// slot is `Rebuilding`) and the store to put the value back in. Its
/// lineage record submits the task again and ends it with
/// [`RebuildJob::finish`]; if it is dropped unfinished (the runtime shut
/// down) the object fails, so no reader waits forever.
pub(crate) struct RebuildJob {
    store: Arc<Store>,
    obj: Option<Arc<dyn Resident>>,
    /// When it was asked for, if the timeline is recording.
    start: Option<u64>,
}

impl RebuildJob {
    /// The object being rebuilt (`None` once finished).
    pub(crate) fn id(&self) -> Option<ObjectId> {
        self.obj.as_ref().map(|o| o.id())
    }

    /// The object being rebuilt (`None` once finished).
    pub(crate) fn object(&self) -> Option<Arc<dyn Resident>> {
        self.obj.clone()
    }

    /// Sizes a task's result (as `admit` would, without reserving).
    pub(crate) fn measure<T: Any + Send + Sync>(&self, value: T) -> (Value, Meta) {
        self.store.measure(value)
    }

    /// Puts the rebuilt value back (waiting up to the put timeout for room;
    /// with none, charged over the cap until the next reservation moves it
    /// out, so readers always get it) and wakes the readers; or fails the
    /// object with the task's error.
    pub(crate) fn finish(mut self, outcome: Result<(Value, Meta), Error>) {
        let Some(obj) = self.obj.take() else { return };
        let store = &self.store;
        let wake = match outcome {
            Ok((value, meta)) => {
                if meta.charged > 0 && !store.reserve(meta.charged, true) {
                    let mut g = store.lock();
                    g.bytes += meta.charged;
                    g.objects += 1;
                }
                store.stats.reconstructions.fetch_add(1, Ordering::Relaxed);
                store.record(crate::timeline::StoreOp::Rebuild, obj.id(), meta.charged, self.start);
                let (wake, stored) = obj.slot().finish_rebuild_deferred(Ok((value, meta)));
                if meta.charged > 0 && stored {
                    let weak = Arc::downgrade(&obj);
                    store.lock().lru.push(obj.id(), (weak, meta.charged));
                } else if meta.charged > 0 {
                    store.release(meta.charged); // freed meanwhile
                }
                wake
            }
            Err(e) => obj.slot().finish_rebuild_deferred(Err(Err(e))).0,
        };
        // Let go of the object before waking its readers: once a reader
        // returns, the rebuild holds nothing of it.
        drop(obj);
        wake.send();
    }
}

impl Drop for RebuildJob {
    fn drop(&mut self) {
        if let Some(obj) = self.obj.take() {
            let e =
                Error::ObjectLost { id: obj.id(), reason: "its rebuild was abandoned (the runtime shut down)".into() };
            obj.slot().finish_rebuild(Err(Err(e)));
        }
    }
}
