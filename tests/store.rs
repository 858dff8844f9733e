//! Object store: sizes charged against the cap, a workload ten times the cap
//! (with a spill directory and without), pinned objects and `StoreFull`,
//! objects being read are never moved out, LRU order, and concurrent
//! readers and writers under eviction.
//!
//! Spill files, corruption and cleanup are in `store_spill.rs`; lineage
//! rebuilds in `store_lineage.rs`.

mod common;
use common::*;

use manta::{Error, HeapSize, ObjectRef, Runtime, StoreFull};
use std::collections::HashMap;
use std::mem::size_of;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

/// A small deterministic PRNG (xorshift64*), so "random" orders repeat.
struct Rng(u64);
impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            v.swap(i, self.below(i + 1));
        }
    }
}

/// Sets a flag when dropped (stops a sampler thread even if the test panics).
struct StopOnDrop<'a>(&'a AtomicBool);
impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Release);
    }
}

/// Waits (bounded, yielding) for a condition that another thread makes true
/// shortly after the event the test waited for (e.g. a worker dropping a
/// finished task's closure). Not a timing assertion: the bound only turns a
/// hang into a failure.
fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !cond() {
        assert!(std::time::Instant::now() < deadline, "never happened: {what}");
        std::thread::yield_now();
    }
}

/// Runs `f(0..n)` on `n` threads and joins them; fails instead of hanging
/// if they are not all done after a bound far above their running time (a
/// deadlock detector, not a timing assertion). A thread's panic is re-raised.
fn run_threads(n: usize, f: impl Fn(usize) + Send + Sync + 'static) {
    struct Done(mpsc::Sender<usize>, usize);
    impl Drop for Done {
        fn drop(&mut self) {
            let _ = self.0.send(self.1);
        }
    }
    let f = Arc::new(f);
    let (tx, rx) = mpsc::channel();
    let handles: Vec<_> = (0..n)
        .map(|t| {
            let (f, done) = (f.clone(), Done(tx.clone(), t));
            std::thread::spawn(move || {
                let _done = done;
                f(t)
            })
        })
        .collect();
    drop(tx);
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    for finished in 0..n {
        if rx.recv_timeout(deadline.saturating_duration_since(std::time::Instant::now())).is_err() {
            panic!("deadlock: {} of {n} threads still blocked after 60 s", n - finished);
        }
    }
    for h in handles {
        if let Err(p) = h.join() {
            std::panic::resume_unwind(p);
        }
    }
}

fn count_files(dir: &Path) -> usize {
    std::fs::read_dir(dir).map_or(0, |d| d.filter(|e| e.is_ok()).count())
}

// ---------------------------------------------------------------- sizes

/// hashbrown's table for `capacity` (as `HashMap::capacity` reports it):
/// a power-of-two number of buckets with 7/8 usable, one entry and one
/// control byte per bucket plus a trailing group of 16 control bytes.
fn hash_table_bytes(capacity: usize, entry: usize) -> usize {
    if capacity == 0 {
        return 0;
    }
    let buckets =
        if capacity < 8 { (capacity + 1).next_power_of_two() } else { (capacity * 8 / 7).next_power_of_two() };
    buckets * entry + buckets + 16
}

fn strings_heap(v: &[String], capacity: usize) -> usize {
    capacity * size_of::<String>() + v.iter().map(String::capacity).sum::<usize>()
}

fn map_heap(m: &HashMap<String, u64>) -> usize {
    hash_table_bytes(m.capacity(), size_of::<(String, u64)>()) + m.keys().map(String::capacity).sum::<usize>()
}

fn assert_within(what: &str, charged: usize, real: usize, percent: usize) {
    let diff = charged.abs_diff(real);
    assert!(
        diff * 100 <= real * percent,
        "{what}: charged {charged} bytes, real use {real} bytes ({:+.1}%, allowed {percent}%)",
        (charged as f64 - real as f64) * 100.0 / real as f64
    );
}

/// Puts `value` on a fresh runtime and returns the bytes the store charged.
fn charged_by_put<T: std::any::Any + Send + Sync>(value: T, small: Option<usize>) -> usize {
    let mut b = Runtime::builder().num_cpus(1).store_capacity(1 << 30);
    if let Some(s) = small {
        b = b.small_object_bytes(s);
    }
    let rt = b.build().expect("runtime");
    assert_eq!(rt.store_stats().bytes_in_memory, 0);
    let r = rt.put(value).expect("put");
    let stats = rt.store_stats();
    drop(r);
    assert_eq!(rt.store_stats().bytes_in_memory, 0, "freeing the object returns its bytes");
    stats.bytes_in_memory
}

#[test]
fn a_100_mb_vec_u8_is_charged_100_mb() {
    let v = vec![0u8; 100 * MB]; // zeroed pages: nothing touched until read
    let real = size_of::<Vec<u8>>() + v.capacity();
    let rt = Runtime::builder().num_cpus(1).store_capacity(256 * MB).build().expect("runtime");
    let r = rt.put(v).expect("put");
    let stats = rt.store_stats();
    assert_within("Vec<u8> of 100 MB", stats.bytes_in_memory, real, 1);
    assert_eq!(stats.objects_in_memory, 1);
    let back = r.get().expect("get");
    assert_eq!(back.len(), 100 * MB);
    assert!(back.iter().step_by(4096).all(|&b| b == 0));
}

#[test]
fn vec_of_strings_is_charged_within_10_percent() {
    let mut v: Vec<String> = Vec::new();
    for i in 0..20_000 {
        v.push("x".repeat(i % 97)); // strings from 0 to 96 bytes
    }
    v.push(String::with_capacity(10_000)); // spare capacity is real memory too
    let real = size_of::<Vec<String>>() + strings_heap(&v, v.capacity());
    assert_within("Vec<String>", charged_by_put(v, None), real, 10);
}

#[test]
fn hash_map_of_strings_is_charged_within_10_percent() {
    // An ordinary word count: 10,000 short keys.
    let mut m: HashMap<String, u64> = HashMap::new();
    for i in 0..10_000u64 {
        m.insert(format!("word{i}"), i);
    }
    let real = size_of::<HashMap<String, u64>>() + map_heap(&m);
    assert_within("HashMap<String, u64> (10,000 entries)", charged_by_put(m, None), real, 10);
}

struct Part {
    name: String,
    samples: Vec<u32>,
}

struct Doc {
    _id: u64,
    title: String,
    words: Vec<String>,
    counts: HashMap<String, u64>,
    blob: Vec<u8>,
    parts: Vec<Part>,
}

impl HeapSize for Part {
    fn heap_size(&self) -> usize {
        self.name.heap_size() + self.samples.heap_size()
    }
}

impl HeapSize for Doc {
    fn heap_size(&self) -> usize {
        self.title.heap_size()
            + self.words.heap_size()
            + self.counts.heap_size()
            + self.blob.heap_size()
            + self.parts.heap_size()
    }
}

#[test]
fn registered_nested_struct_is_charged_within_10_percent() {
    manta::register::<Doc>();
    let words: Vec<String> = (0..3_000).map(|i| format!("w{}", i * 7919)).collect();
    let counts: HashMap<String, u64> = words.iter().take(700).map(|w| (w.clone(), w.len() as u64)).collect();
    let parts: Vec<Part> = (0..64)
        .map(|i| Part { name: format!("part-{i}"), samples: (0..200 + i).map(|x| x as u32).collect() })
        .collect();
    let doc = Doc { _id: 1, title: "a title".repeat(20), words, counts, blob: vec![1u8; 100_000], parts };
    let real = size_of::<Doc>()
        + doc.title.capacity()
        + strings_heap(&doc.words, doc.words.capacity())
        + map_heap(&doc.counts)
        + doc.blob.capacity()
        + doc.parts.capacity() * size_of::<Part>()
        + doc.parts.iter().map(|p| p.name.capacity() + p.samples.capacity() * size_of::<u32>()).sum::<usize>();
    assert_within("registered Doc", charged_by_put(doc, None), real, 10);
}

/// A type that was never registered: the store cannot see its heap, so it
/// is charged `size_of::<T>()` only (documented in `heap_size.rs`). With the
/// default `small_object_bytes` (256) that is below the threshold and the
/// object is not charged at all.
#[test]
fn unregistered_type_counts_its_inline_size_only() {
    struct Opaque {
        _payload: Vec<u8>,
    }
    let charged = charged_by_put(Opaque { _payload: vec![0u8; MB] }, Some(1));
    assert_eq!(charged, size_of::<Opaque>(), "heap of an unregistered type is invisible to the store");
    let charged = charged_by_put(Opaque { _payload: vec![0u8; MB] }, None);
    assert_eq!(charged, 0, "size_of::<Opaque>() is below the default small-object threshold");
}

// ---------------------------------------------------------------- a workload 10x the cap

/// 80 live objects of 256 KB under a 2 MB cap, some put, the rest made by
/// re-runnable tasks; every value is read back several times in random
/// order while a second thread samples the memory in use.
fn workload(spill: bool) {
    // (Small objects keep debug builds fast: sizing a Vec<u8> walks it.)
    const N: usize = 80;
    const OBJ: usize = 256 << 10;
    let cap = 2 * MB;
    let fits = cap / charged(OBJ); // objects that fit in memory at once
    let base = spill.then(|| TempBase::new("workload"));
    let mut b = Runtime::builder().num_cpus(2).store_capacity(cap);
    if let Some(base) = &base {
        b = b.spill_dir(&base.0);
    }
    let rt = b.build().expect("runtime");
    // Without a spill directory put objects are pinned (never dropped, only
    // spilled), so only 4 of them fit beside room for task objects.
    let is_put = |i: usize| if spill { i.is_multiple_of(2) } else { i.is_multiple_of(20) };
    let n_put = (0..N).filter(|&i| is_put(i)).count();
    let n_task = N - n_put;
    let runs = Arc::new(AtomicUsize::new(0));
    let stop = AtomicBool::new(false);
    let mut rng = Rng::new(if spill { 1 } else { 2 });

    let result = std::thread::scope(|s| {
        let sampler = s.spawn(|| {
            let (mut max, mut n) = (0usize, 0u64);
            loop {
                max = max.max(rt.store_stats().bytes_in_memory);
                n += 1;
                if stop.load(Ordering::Acquire) {
                    return (max, n);
                }
                std::thread::yield_now();
            }
        });
        let _stop = StopOnDrop(&stop);
        let mut refs: Vec<ObjectRef<Vec<u8>>> = Vec::with_capacity(N);
        for i in 0..N {
            let r = if is_put(i) {
                rt.put(make(i, OBJ)).unwrap_or_else(|e| panic!("put {i}: {e}"))
            } else {
                let runs = runs.clone();
                rt.task().rerunnable().spawn(move || {
                    runs.fetch_add(1, Ordering::Relaxed);
                    make(i, OBJ)
                })
            };
            refs.push(r);
            if i % 10 == 9 {
                let j = rng.below(i + 1);
                check(j, OBJ, &refs[j].get().unwrap_or_else(|e| panic!("get {j} during the workload: {e}")));
            }
        }
        for pass in 0..3 {
            let mut order: Vec<usize> = (0..N).collect();
            rng.shuffle(&mut order);
            for i in order {
                let v = refs[i].get().unwrap_or_else(|e| panic!("pass {pass}: get {i}: {e}"));
                check(i, OBJ, &v);
            }
            if pass == 0 {
                let st = rt.store_stats();
                if spill {
                    assert!(st.restores as usize >= N - fits, "after one pass over {N} objects: {st:?}");
                } else {
                    assert!(st.reconstructions as usize >= n_task - fits, "after one pass: {st:?}");
                }
            }
        }
        drop(_stop);
        let sampled = sampler.join().expect("sampler");
        (sampled, rt.store_stats(), refs)
    });
    let ((max_seen, samples), st, refs) = result;
    assert!(samples > 0);
    assert!(
        max_seen <= cap + charged(OBJ),
        "bytes in memory reached {max_seen}, cap {cap} + one object {}",
        charged(OBJ)
    );
    assert!(st.bytes_in_memory <= cap, "{st:?}");
    let runs = runs.load(Ordering::Relaxed);
    if spill {
        assert!(st.spills as usize >= N - fits, "{st:?}");
        assert!(st.restores > 0, "{st:?}");
        assert_eq!(st.spill_failures, 0, "{st:?}");
        assert_eq!(st.evictions, 0, "with a spill directory every Vec<u8> is spilled, not dropped: {st:?}");
        assert_eq!(st.reconstructions, 0, "{st:?}");
        assert_eq!(runs, n_task, "spilled task objects are read back, never recomputed");
        assert_eq!(st.objects_spilled + st.objects_in_memory, N, "{st:?}");
    } else {
        assert_eq!((st.spills, st.objects_spilled, st.bytes_spilled, st.restores), (0, 0, 0, 0), "{st:?}");
        assert!(st.evictions as usize >= n_task - fits, "{st:?}");
        assert!(st.reconstructions > 0, "{st:?}");
        assert_eq!(runs, n_task + st.reconstructions as usize, "one run per task plus one per rebuild: {st:?}");
    }
    drop(refs);
    let st = rt.store_stats();
    assert_eq!((st.bytes_in_memory, st.objects_in_memory, st.bytes_spilled, st.objects_spilled), (0, 0, 0, 0));
}

#[test]
fn workload_ten_times_the_cap_with_spill_dir() {
    workload(true);
}

#[test]
fn workload_ten_times_the_cap_without_spill_dir() {
    workload(false);
}

// ---------------------------------------------------------------- pinned objects and StoreFull

/// Without a spill directory, a put object and a one-shot task's object
/// are pinned (never dropped); when the cap is full of pinned objects, put
/// waits `put_timeout` and returns `StoreFull` with the value handed back,
/// and task results fail with `Error::StoreFull`.
#[test]
fn pinned_objects_fill_the_store_and_put_returns_store_full() {
    let cap = 3 * charged(MB) + MB / 2;
    let rt = Runtime::builder()
        .num_cpus(2)
        .store_capacity(cap)
        .put_timeout(Duration::from_millis(50))
        .build()
        .expect("runtime");
    let one_shot = rt.spawn(|| make(1, MB));
    check(1, MB, &one_shot.get().expect("one-shot"));

    // Re-runnable task objects come and go around the pinned one.
    let runs = Arc::new(AtomicUsize::new(0));
    let tasks: Vec<ObjectRef<Vec<u8>>> = (10..16)
        .map(|i| {
            let runs = runs.clone();
            let r = rt.task().rerunnable().spawn(move || {
                runs.fetch_add(1, Ordering::Relaxed);
                make(i, MB)
            });
            check(i, MB, &r.get().expect("task"));
            r
        })
        .collect();
    let st = rt.store_stats();
    assert!(st.evictions >= 4, "six task objects, room for two: {st:?}");
    check(1, MB, &one_shot.get().expect("the one-shot object is still there"));

    // Two put objects take the rest of the room: only task objects can go.
    let p = rt.put(make(2, MB)).expect("put p");
    let q = rt.put(make(3, MB)).expect("put q");
    let st = rt.store_stats();
    assert_eq!(st.objects_in_memory, 3, "{st:?}");
    assert_eq!(st.bytes_in_memory, 3 * charged(MB), "{st:?}");
    let evictions = st.evictions;

    // Full of pinned objects: put waits, then hands the value back.
    match rt.put(make(4, MB)) {
        Ok(_) => panic!("put succeeded although the store is full of pinned objects"),
        Err(StoreFull { value, needed, capacity }) => {
            check(4, MB, &value);
            assert_eq!(needed, charged(MB));
            assert_eq!(capacity, cap);
        }
    }
    // Task results that cannot be stored fail with Error::StoreFull.
    let t = rt.task().rerunnable().spawn(|| make(5, MB));
    assert!(
        matches!(t.get(), Err(Error::StoreFull { needed, capacity }) if needed == charged(MB) && capacity == cap),
        "{:?}",
        t.get().map(|_| ())
    );
    let o = rt.spawn(|| make(6, MB));
    assert!(matches!(o.get(), Err(Error::StoreFull { .. })), "{:?}", o.get().map(|_| ()));

    // Nothing pinned moved: same values, same allocations, no evictions.
    let (a1, a2) = (p.get().expect("p"), p.get().expect("p"));
    assert!(Arc::ptr_eq(&a1, &a2));
    check(2, MB, &a1);
    check(3, MB, &q.get().expect("q"));
    check(1, MB, &one_shot.get().expect("one-shot"));
    drop((a1, a2));
    assert_eq!(rt.store_stats().evictions, evictions);
    assert_eq!(rt.store_stats().spills, 0);

    // An evicted task object still reads correctly (read through, since
    // there is no room to bring it back).
    let before = runs.load(Ordering::Relaxed);
    for (k, r) in tasks.iter().enumerate() {
        check(10 + k, MB, &r.get().unwrap_or_else(|e| panic!("task object {k} on a full store: {e}")));
    }
    assert!(runs.load(Ordering::Relaxed) > before, "evicted task objects were rebuilt");

    // Freeing a pinned object makes room again.
    drop(p);
    let again = rt.put(make(4, MB)).expect("room after a free");
    check(4, MB, &again.get().expect("get"));
}

// ---------------------------------------------------------------- readers are never moved out

#[test]
fn an_object_being_read_is_never_spilled() {
    let base = TempBase::new("reading-spill");
    let cap = 2 * charged(MB) + MB / 2;
    let rt = Runtime::builder().num_cpus(2).store_capacity(cap).spill_dir(&base.0).build().expect("runtime");
    let big = rt.put(make(0, MB)).expect("put");
    let held = big.get().expect("get");
    let others: Vec<_> = (1..=6).map(|i| rt.put(make(i, MB)).expect("put")).collect();
    let st = rt.store_stats();
    assert!(st.spills >= 5, "{st:?}");
    assert!(!spill_file(&rt, big.id()).exists(), "the object being read was spilled");
    let again = big.get().expect("get");
    assert!(Arc::ptr_eq(&held, &again), "the value was moved out from under its reader");
    check(0, MB, &held);
    drop((held, again));
    for (k, r) in others.iter().enumerate() {
        check(k + 1, MB, &r.get().unwrap_or_else(|e| panic!("get {}: {e}", k + 1)));
    }
}

#[test]
fn an_object_being_read_is_never_evicted() {
    let cap = 2 * charged(MB) + MB / 2;
    let rt = Runtime::builder().num_cpus(2).store_capacity(cap).build().expect("runtime");
    let runs = Arc::new(AtomicUsize::new(0));
    let counted = runs.clone();
    let big = rt.task().rerunnable().spawn(move || {
        counted.fetch_add(1, Ordering::Relaxed);
        make(0, MB)
    });
    let held = big.get().expect("get");
    let mut others = Vec::new();
    for i in 1..=6 {
        let r = rt.task().rerunnable().spawn(move || make(i, MB));
        check(i, MB, &r.get().expect("get"));
        others.push(r); // kept alive: each new one must push another out
    }
    let st = rt.store_stats();
    assert!(st.evictions >= 4, "{st:?}");
    let again = big.get().expect("get");
    assert!(Arc::ptr_eq(&held, &again), "the value was moved out from under its reader");
    assert_eq!(runs.load(Ordering::Relaxed), 1, "the object being read was rebuilt");
    check(0, MB, &held);
}

// ---------------------------------------------------------------- LRU order

/// `get` marks an object as recently used: of two objects, the one read
/// last stays in memory and the other is spilled.
#[test]
fn the_least_recently_read_object_is_spilled_first() {
    let base = TempBase::new("lru");
    let cap = 2 * charged(MB) + MB / 2;
    let rt = Runtime::builder().num_cpus(2).store_capacity(cap).spill_dir(&base.0).build().expect("runtime");
    let a = rt.put(make(0, MB)).expect("put a");
    let b = rt.put(make(1, MB)).expect("put b");
    check(0, MB, &a.get().expect("get a")); // a is now more recent than b
    let c = rt.put(make(2, MB)).expect("put c");
    assert_eq!(rt.store_stats().spills, 1);
    assert!(spill_file(&rt, b.id()).exists(), "b (least recently used) should have been spilled");
    assert!(!spill_file(&rt, a.id()).exists(), "a was read after b was stored, yet it was spilled");
    check(2, MB, &c.get().expect("get c"));
}

// ---------------------------------------------------------------- concurrency

/// 8 threads put, spawn, read and drop 256 KB objects under a 4 MB cap with
/// a spill directory: every value read is the right one, no panic, no
/// deadlock.
#[test]
fn concurrent_readers_and_writers_under_eviction() {
    const OBJ: usize = 256 << 10;
    const THREADS: usize = 8;
    const ITERS: usize = 100;
    const MAX_LIVE: usize = 40;
    let base = TempBase::new("stress");
    let rt = Runtime::builder()
        .num_cpus(2)
        .store_capacity(4 * MB)
        .spill_dir(&base.0)
        .put_timeout(Duration::from_secs(30)) // never reached: bounds a bug, not a timing
        .build()
        .expect("runtime");
    type Live = Arc<Mutex<Vec<(usize, ObjectRef<Vec<u8>>)>>>;
    let live: Live = Arc::new(Mutex::new(Vec::new()));
    let next = Arc::new(AtomicUsize::new(0));
    let reads = Arc::new(AtomicUsize::new(0));
    {
        let (rt, live, next, reads) = (rt.clone(), live.clone(), next.clone(), reads.clone());
        run_threads(THREADS, move |t| {
            let mut rng = Rng::new(100 + t as u64);
            for _ in 0..ITERS {
                let roll = rng.below(10);
                if roll <= 3 || live.lock().unwrap().is_empty() {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let r = if roll == 3 {
                        rt.task().rerunnable().spawn(move || make(i, OBJ))
                    } else {
                        rt.put(make(i, OBJ)).unwrap_or_else(|e| panic!("thread {t}: put {i}: {e}"))
                    };
                    let mut l = live.lock().unwrap();
                    if l.len() >= MAX_LIVE {
                        let k = rng.below(l.len());
                        l.swap_remove(k);
                    }
                    l.push((i, r));
                } else if roll == 4 {
                    let mut l = live.lock().unwrap();
                    if l.len() > 8 {
                        let k = rng.below(l.len());
                        l.swap_remove(k);
                    }
                } else {
                    let (i, r) = {
                        let l = live.lock().unwrap();
                        l[rng.below(l.len())].clone()
                    };
                    let v = r.get().unwrap_or_else(|e| panic!("thread {t}: get {i}: {e}"));
                    check(i, OBJ, &v);
                    reads.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
    }
    let live = std::mem::take(&mut *live.lock().unwrap());
    for (i, r) in &live {
        check(*i, OBJ, &r.get().unwrap_or_else(|e| panic!("final read of {i}: {e}")));
    }
    let st = rt.store_stats();
    assert!(reads.load(Ordering::Relaxed) > 0);
    assert!(st.spills > 0 && st.restores > 0, "{st:?}");
    assert!(st.bytes_in_memory <= 4 * MB, "{st:?}");
    drop(live);
    // Tasks whose refs were dropped before they finished store and free
    // their result on a worker: wait for the last of them.
    eventually("every object freed", || {
        let st = rt.store_stats();
        (st.bytes_in_memory, st.objects_in_memory, st.bytes_spilled, st.objects_spilled) == (0, 0, 0, 0)
    });
    assert_eq!(count_files(rt.spill_dir().expect("dir")), 0);
}

/// Many threads read the same spilled object while the store has no room to
/// take it back (the only slot is held by a reader): each `get` reads the
/// file through, the object goes back out, and readers that arrive during a
/// read wait for it. Every read is correct and every thread finishes.
#[test]
fn concurrent_readers_of_one_object_that_cannot_come_back() {
    let base = TempBase::new("read-through");
    let rt = Runtime::builder()
        .num_cpus(2)
        .store_capacity(charged(MB) + MB / 2)
        .spill_dir(&base.0)
        .build()
        .expect("runtime");
    let x = rt.put(make(1, MB)).expect("put x");
    let y = rt.put(make(2, MB)).expect("put y"); // x is spilled
    let held = y.get().expect("get y"); // y cannot be moved out now
    assert!(spill_file(&rt, x.id()).exists());
    {
        let x = x.clone();
        run_threads(8, move |t| {
            for k in 0..25 {
                let v = x.get().unwrap_or_else(|e| panic!("thread {t}, read {k}: {e}"));
                check(1, MB, &v);
            }
        });
    }
    check(2, MB, &held);
    let st = rt.store_stats();
    assert!(st.restores >= 1, "{st:?}");
    assert!(st.bytes_in_memory <= st.capacity, "{st:?}");
}
