//! manta's core microbenchmarks, with raw rayon measured beside them.
//!
//! ```text
//! cargo run --release --example microbench            # every metric
//! cargo run --release --example microbench -- fib     # metrics whose name contains "fib"
//! ```
//!
//! stdout holds only metric lines, `name value unit`, one per metric (names
//! match `../shared/anchors/` so manta and Ray line up row by row); progress,
//! per-run samples and notes go to stderr. Every runtime (and the rayon pool
//! of the floors) has as many threads as the machine's available parallelism.
//! Each metric is the best of several runs (throughputs) or the median of
//! many (latencies, `init_s`), so the whole program takes well under a minute.
//!
//! Modules: `spill` (100 MB objects through the spill directory beside plain
//! file writes and reads, and small puts at the store's cap) and `cancel`
//! (the desktop job: a group of 2,000 tasks holding 1 GiB cancelled at 30%,
//! beside a hand-rolled std pool and rayon; `as_completed`).

mod cancel;
mod spill;

use manta::{ObjectRef, Runtime};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Trivial tasks submitted by the async task benchmarks (and rayon's floor).
const ASYNC_TASKS: usize = 100_000;
/// Round trips per run of the sync benchmarks.
const SYNC_ROUNDS: usize = 20_000;
/// Small puts (and gets) per run.
const SMALL_OBJECTS: usize = 1_000_000;
/// Size of the large object: 100 MiB.
const LARGE_BYTES: usize = 100 << 20;
/// Refs `wait` looks at, and how many waits a run makes.
const WAIT_REFS: usize = 1_000;
const WAIT_ROUNDS: usize = 2_000;
/// Length of the task chain.
const CHAIN: usize = 100_000;
/// fib(FIB_N) as nested tasks: 2 * F(FIB_N + 1) - 1 tasks.
const FIB_N: u32 = 20;
/// Tasks queued behind a blocked runtime for `bytes_per_queued_task`.
const QUEUED_TASKS: usize = 100_000;
/// Runs per throughput metric (the best is reported).
const RUNS: usize = 5;
/// Pairs of runs (recording off, on) for `timeline_overhead_pct`.
const TIMELINE_PAIRS: usize = 15;

/// Every metric this program prints, in order.
const METRICS: &[&str] = &[
    "idle_rss_mb",
    "bytes_per_queued_task",
    "init_s",
    "tasks_async_per_s",
    "rayon_tasks_async_per_s",
    "tasks_sync_per_s",
    "rayon_tasks_sync_per_s",
    "put_small_per_s",
    "get_small_per_s",
    "put_large_gbps",
    "get_large_gbps",
    "actor_calls_async_per_s",
    "actor_calls_sync_per_s",
    "wait_per_s",
    "dag_chain_per_s",
    "fib_tasks_per_s",
    "tasks_async_timeline_per_s",
    "timeline_overhead_pct",
];

struct Bench {
    filter: Option<String>,
    threads: usize,
}

impl Bench {
    /// True if any of `names` passes the filter.
    fn wants(&self, names: &[&str]) -> bool {
        match &self.filter {
            None => true,
            Some(f) => names.iter().any(|n| n.contains(f.as_str())),
        }
    }

    /// Prints one metric line on stdout (if it passes the filter).
    fn report(&self, name: &str, value: f64, unit: &str) {
        if self.wants(&[name]) {
            println!("{name} {} {unit}", fmt_value(value));
        }
    }
}

/// Plain decimal, enough significant digits, no exponent (easy to parse).
fn fmt_value(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.7}")
    }
}

/// Runs `run` (which returns a rate) `n` times; returns the best rate.
fn best_of(label: &str, n: usize, mut run: impl FnMut() -> f64) -> f64 {
    let samples: Vec<f64> = (0..n).map(|_| run()).collect();
    eprintln!("#   {label}: runs {}", samples.iter().map(|s| fmt_value(*s)).collect::<Vec<_>>().join(" "));
    samples.into_iter().fold(0.0, f64::max)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn rate(ops: usize, d: Duration) -> f64 {
    ops as f64 / d.as_secs_f64()
}

/// The process's resident set size in bytes (`VmRSS` of /proc/self/status).
fn rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

fn runtime(threads: usize) -> Runtime {
    Runtime::builder().num_cpus(threads).build().expect("build runtime")
}

fn main() {
    let filter = std::env::args().skip(1).find(|a| !a.starts_with('-'));
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let b = Bench { filter, threads };
    if !b.wants(METRICS) && !b.wants(cancel::METRICS) && !b.wants(spill::METRICS) {
        let all: Vec<&str> = METRICS.iter().chain(cancel::METRICS).chain(spill::METRICS).copied().collect();
        eprintln!("no metric name contains {:?}; the metrics are: {}", b.filter.unwrap_or_default(), all.join(" "));
        std::process::exit(2);
    }
    eprintln!("# manta microbench: {threads} threads, filter {:?}", b.filter);
    let start = Instant::now();

    // First, before anything else allocates: the idle runtime's footprint.
    // That runtime then serves every benchmark below.
    let rt = runtime(threads);
    if b.wants(&["idle_rss_mb"]) {
        std::thread::sleep(Duration::from_millis(50)); // let the workers start and settle
        match rss_bytes() {
            Some(rss) => b.report("idle_rss_mb", rss as f64 / (1024.0 * 1024.0), "MB"),
            None => eprintln!("# idle_rss_mb: /proc/self/status not readable"),
        }
    }
    // Second, while the heap is still fresh (freed memory would be reused).
    if b.wants(&["bytes_per_queued_task"]) {
        bytes_per_queued_task(&b, &rt);
    }
    if b.wants(&["tasks_async_per_s", "rayon_tasks_async_per_s"]) {
        tasks_async(&b, &rt);
    }
    if b.wants(&["tasks_sync_per_s", "rayon_tasks_sync_per_s"]) {
        tasks_sync(&b, &rt);
    }
    if b.wants(&["put_small_per_s", "get_small_per_s"]) {
        small_objects(&b, &rt);
    }
    if b.wants(&["put_large_gbps", "get_large_gbps"]) {
        large_objects(&b, &rt);
    }
    if b.wants(&["actor_calls_async_per_s", "actor_calls_sync_per_s"]) {
        actor_calls(&b, &rt);
    }
    if b.wants(&["wait_per_s"]) {
        wait(&b, &rt);
    }
    if b.wants(&["dag_chain_per_s"]) {
        dag_chain(&b, &rt);
    }
    if b.wants(&["fib_tasks_per_s"]) {
        fib_tasks(&b, &rt);
    }
    if b.wants(&["tasks_async_timeline_per_s", "timeline_overhead_pct"]) {
        timeline(&b, &rt);
    }
    drop(rt);
    if b.wants(spill::METRICS) {
        spill::spill(&b);
    }
    if b.wants(cancel::METRICS) {
        cancel::cancel(&b);
    }
    // Last: building and dropping 320 runtimes starts and ends about a
    // thousand threads, and glibc hands its malloc arenas out as threads
    // come and go; measured first, it left a later runtime's workers
    // sharing an arena with the spawning thread in some processes, which
    // halves task throughput (PERFORMANCE.md).
    if b.wants(&["init_s"]) {
        init(&b);
    }
    eprintln!("# done in {:.1} s", start.elapsed().as_secs_f64());
}

/// Build a runtime, run one task, get its result, drop the runtime (joins
/// the workers). Median of many.
fn init(b: &Bench) {
    let once = || {
        let t = Instant::now();
        let rt = runtime(b.threads);
        let r = rt.spawn(|| 1u64);
        assert_eq!(*r.get().expect("first task"), 1);
        drop(rt);
        t.elapsed().as_secs_f64()
    };
    for _ in 0..20 {
        once(); // warm-up
    }
    let samples: Vec<f64> = (0..300).map(|_| once()).collect();
    let med = median(samples.clone());
    let min = samples.iter().copied().fold(f64::MAX, f64::min);
    eprintln!("#   init_s: median {} min {} over {} runs", fmt_value(med), fmt_value(min), samples.len());
    b.report("init_s", med, "s");
}

/// 100k trivial tasks submitted, then all gotten; rayon's floor beside it.
fn tasks_async(b: &Bench, rt: &Runtime) {
    if b.wants(&["tasks_async_per_s"]) {
        let best = best_of("tasks_async_per_s", RUNS, || {
            let t = Instant::now();
            let refs: Vec<ObjectRef<u64>> = (0..ASYNC_TASKS).map(|_| rt.spawn(|| 1u64)).collect();
            let values = rt.get_all(&refs).expect("tasks");
            let d = t.elapsed();
            assert_eq!(values.len(), ASYNC_TASKS);
            drop((values, refs));
            rate(ASYNC_TASKS, d)
        });
        b.report("tasks_async_per_s", best, "tasks/s");
    }
    if b.wants(&["rayon_tasks_async_per_s"]) {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(b.threads).build().expect("rayon pool");
        let best = best_of("rayon_tasks_async_per_s", RUNS, || {
            let (tx, rx) = crossbeam_channel::unbounded::<u64>();
            let t = Instant::now();
            for _ in 0..ASYNC_TASKS {
                let tx = tx.clone();
                pool.spawn(move || {
                    let _ = tx.send(1);
                });
            }
            let mut sum = 0;
            for _ in 0..ASYNC_TASKS {
                sum += rx.recv().expect("rayon job");
            }
            let d = t.elapsed();
            assert_eq!(sum, ASYNC_TASKS as u64);
            rate(ASYNC_TASKS, d)
        });
        b.report("rayon_tasks_async_per_s", best, "tasks/s");
    }
}

/// Submit one trivial task, get it, repeat; rayon's floor beside it.
fn tasks_sync(b: &Bench, rt: &Runtime) {
    if b.wants(&["tasks_sync_per_s"]) {
        let best = best_of("tasks_sync_per_s", RUNS, || {
            let t = Instant::now();
            for _ in 0..SYNC_ROUNDS {
                let r = rt.spawn(|| 1u64);
                assert_eq!(*r.get().expect("task"), 1);
            }
            rate(SYNC_ROUNDS, t.elapsed())
        });
        b.report("tasks_sync_per_s", best, "tasks/s");
    }
    if b.wants(&["rayon_tasks_sync_per_s"]) {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(b.threads).build().expect("rayon pool");
        let best = best_of("rayon_tasks_sync_per_s", RUNS, || {
            let (tx, rx) = crossbeam_channel::unbounded::<u64>();
            let t = Instant::now();
            for _ in 0..SYNC_ROUNDS {
                let tx = tx.clone();
                pool.spawn(move || {
                    let _ = tx.send(1);
                });
                assert_eq!(rx.recv().expect("rayon job"), 1);
            }
            rate(SYNC_ROUNDS, t.elapsed())
        });
        b.report("rayon_tasks_sync_per_s", best, "tasks/s");
    }
}

/// 1M small puts (refs kept), then a get of each of them. Keeping the refs
/// makes the puts touch fresh memory, so the object footprint (and its page
/// faults) is part of the put cost, as in a program that holds its objects.
fn small_objects(b: &Bench, rt: &Runtime) {
    let mut put_rates = Vec::new();
    let mut get_rates = Vec::new();
    // glibc gives the top of the heap back to the OS when a run frees its
    // million objects, unless a live allocation sits above them; whether one
    // does depended on unrelated allocations, so runs after the first
    // measured either manta or page faults. A small allocation made after
    // each run's puts, kept to the end, makes it "manta" every time.
    let mut pins: Vec<Box<[u8; 64]>> = Vec::with_capacity(RUNS);
    for _ in 0..RUNS {
        let mut refs: Vec<ObjectRef<u64>> = Vec::with_capacity(SMALL_OBJECTS);
        let t = Instant::now();
        for i in 0..SMALL_OBJECTS as u64 {
            refs.push(rt.put(i).expect("put"));
        }
        put_rates.push(rate(SMALL_OBJECTS, t.elapsed()));
        pins.push(Box::new([0; 64]));
        let t = Instant::now();
        let mut sum = 0u64;
        for r in &refs {
            sum = sum.wrapping_add(*rt.get(r).expect("get"));
        }
        get_rates.push(rate(SMALL_OBJECTS, t.elapsed()));
        assert_eq!(sum, (SMALL_OBJECTS as u64 - 1) * SMALL_OBJECTS as u64 / 2);
    }
    let fmt = |v: &[f64]| v.iter().map(|s| fmt_value(*s)).collect::<Vec<_>>().join(" ");
    eprintln!("#   put_small_per_s: runs {}", fmt(&put_rates));
    eprintln!("#   get_small_per_s: runs {}", fmt(&get_rates));
    b.report("put_small_per_s", put_rates.into_iter().fold(0.0, f64::max), "puts/s");
    b.report("get_small_per_s", get_rates.into_iter().fold(0.0, f64::max), "gets/s");
}

/// A 100 MiB `Vec<u8>`: `put` moves it into the store (no copy) and `get`
/// hands back an `Arc` to it (no copy). Bytes over time: `put` is the median
/// of single timed puts (one buffer, taken back after each), `get` the time
/// per get of the fastest of several batches of gets of one object.
fn large_objects(b: &Bench, rt: &Runtime) {
    const ROUNDS: usize = 1_000;
    let fresh = || vec![1u8; LARGE_BYTES]; // touched, so no page faults are timed
    let mut buf = fresh();
    let mut put_s = Vec::with_capacity(ROUNDS);
    for _ in 0..ROUNDS {
        let t = Instant::now();
        let r = rt.put(buf).expect("put large");
        put_s.push(t.elapsed().as_secs_f64());
        let arc = r.get().expect("get large");
        drop(r);
        // Once its last ref is gone the store holds no handle: take the
        // buffer back (or, should something still share it, make another).
        buf = Arc::try_unwrap(arc).unwrap_or_else(|_| fresh());
    }
    let put_s = median(put_s);
    eprintln!("#   put_large_gbps: median put {:.0} ns (a move: the buffer is not copied)", put_s * 1e9);
    b.report("put_large_gbps", LARGE_BYTES as f64 / put_s / 1e9, "GB/s");

    let r = rt.put(buf).expect("put large");
    let get_s = (0..RUNS)
        .map(|_| {
            let t = Instant::now();
            for _ in 0..ROUNDS {
                let v = r.get().expect("get large");
                assert_eq!(v.len(), LARGE_BYTES);
            }
            t.elapsed().as_secs_f64() / ROUNDS as f64
        })
        .fold(f64::MAX, f64::min);
    eprintln!("#   get_large_gbps: {:.0} ns per get (zero-copy Arc)", get_s * 1e9);
    b.report("get_large_gbps", LARGE_BYTES as f64 / get_s / 1e9, "GB/s");
}

/// Actor method calls: 100k queued then all gotten; and call/get round trips.
fn actor_calls(b: &Bench, rt: &Runtime) {
    if b.wants(&["actor_calls_async_per_s"]) {
        let best = best_of("actor_calls_async_per_s", RUNS, || {
            let actor = rt.actor(0u64);
            let t = Instant::now();
            let refs: Vec<ObjectRef<u64>> = (0..ASYNC_TASKS)
                .map(|_| {
                    actor.call(|n| {
                        *n += 1;
                        *n
                    })
                })
                .collect();
            let values = rt.get_all(&refs).expect("actor calls");
            let d = t.elapsed();
            assert_eq!(*values[ASYNC_TASKS - 1], ASYNC_TASKS as u64);
            rate(ASYNC_TASKS, d)
        });
        b.report("actor_calls_async_per_s", best, "calls/s");
    }
    if b.wants(&["actor_calls_sync_per_s"]) {
        let best = best_of("actor_calls_sync_per_s", RUNS, || {
            let actor = rt.actor(0u64);
            let t = Instant::now();
            for i in 1..=SYNC_ROUNDS as u64 {
                let r = actor.call(|n| {
                    *n += 1;
                    *n
                });
                assert_eq!(*r.get().expect("actor call"), i);
            }
            rate(SYNC_ROUNDS, t.elapsed())
        });
        b.report("actor_calls_sync_per_s", best, "calls/s");
    }
}

/// `wait(num_returns = 1)` over 1,000 finished refs.
fn wait(b: &Bench, rt: &Runtime) {
    let refs: Vec<ObjectRef<u64>> = (0..WAIT_REFS as u64).map(|i| rt.put(i).expect("put")).collect();
    let best = best_of("wait_per_s", RUNS, || {
        let t = Instant::now();
        for _ in 0..WAIT_ROUNDS {
            let (ready, pending) = rt.wait(&refs, 1, None).expect("wait");
            assert_eq!((ready.len(), pending.len()), (1, WAIT_REFS - 1));
        }
        rate(WAIT_ROUNDS, t.elapsed())
    });
    b.report("wait_per_s", best, "waits/s");
}

/// A chain of tasks, each taking the previous one's ref; get the last.
fn dag_chain(b: &Bench, rt: &Runtime) {
    let best = best_of("dag_chain_per_s", RUNS, || {
        let t = Instant::now();
        let mut last = rt.spawn(|| 0u64);
        for _ in 1..CHAIN {
            last = rt.spawn_with((last,), |(x,)| *x + 1);
        }
        let v = *last.get().expect("chain");
        let d = t.elapsed();
        assert_eq!(v, CHAIN as u64 - 1);
        rate(CHAIN, d)
    });
    b.report("dag_chain_per_s", best, "tasks/s");
}

fn fib_task(n: u32) -> u64 {
    if n < 2 {
        return u64::from(n);
    }
    let rt = Runtime::current().expect("fib runs inside a task");
    let a = rt.spawn(move || fib_task(n - 1));
    let b = rt.spawn(move || fib_task(n - 2));
    *a.get().expect("fib") + *b.get().expect("fib")
}

/// Recursive fib where every call is a task that gets its children.
fn fib_tasks(b: &Bench, rt: &Runtime) {
    fn fib(n: u32) -> u64 {
        if n < 2 {
            u64::from(n)
        } else {
            fib(n - 1) + fib(n - 2)
        }
    }
    let tasks = 2 * fib(FIB_N + 1) as usize - 1;
    let best = best_of(&format!("fib_tasks_per_s (fib({FIB_N}), {tasks} tasks)"), RUNS, || {
        let t = Instant::now();
        let v = *rt.spawn(|| fib_task(FIB_N)).get().expect("fib");
        let d = t.elapsed();
        assert_eq!(v, fib(FIB_N));
        rate(tasks, d)
    });
    b.report("fib_tasks_per_s", best, "tasks/s");
}

/// Resident memory per task while 100k trivial tasks wait behind a runtime
/// whose every CPU is held by a task blocked on a channel.
fn bytes_per_queued_task(b: &Bench, rt: &Runtime) {
    let (release_tx, release_rx) = crossbeam_channel::unbounded::<()>();
    let (started_tx, started_rx) = crossbeam_channel::unbounded::<()>();
    let blockers: Vec<ObjectRef<()>> = (0..rt.num_threads())
        .map(|_| {
            let (release, started) = (release_rx.clone(), started_tx.clone());
            rt.spawn(move || {
                let _ = started.send(());
                let _ = release.recv();
            })
        })
        .collect();
    for _ in 0..rt.num_threads() {
        started_rx.recv().expect("blocker started");
    }
    // The refs' own vector is touched before the baseline, so it is not counted.
    let mut refs: Vec<ObjectRef<u64>> = Vec::with_capacity(QUEUED_TASKS);
    let dummy = rt.put(0u64).expect("put");
    refs.extend(std::iter::repeat_n(dummy, QUEUED_TASKS));
    refs.clear();

    let before = rss_bytes();
    refs.extend((0..QUEUED_TASKS).map(|_| rt.spawn(|| 1u64)));
    let after = rss_bytes();
    let queued = rt.queued_tasks();

    drop(release_tx);
    let values = rt.get_all(&refs).expect("queued tasks");
    assert_eq!(values.len(), QUEUED_TASKS);
    rt.get_all(&blockers).expect("blockers");
    match (before, after) {
        (Some(before), Some(after)) => {
            let per = after.saturating_sub(before) as f64 / QUEUED_TASKS as f64;
            eprintln!(
                "#   bytes_per_queued_task: {queued} queued, RSS {:.1} -> {:.1} MB",
                before as f64 / 1048576.0,
                after as f64 / 1048576.0
            );
            b.report("bytes_per_queued_task", per, "bytes");
        }
        _ => eprintln!("# bytes_per_queued_task: /proc/self/status not readable"),
    }
}

/// `tasks_async` with the timeline recording every task, in pairs of runs
/// with it off and on on the same runtime (which goes first alternates):
/// the cost of recording is the best run on against the best run off. A
/// run is about 20 ms, and this 2-core VM changes speed by up to 2x
/// between phases of a second or so: with 15 pairs both sides see a fast
/// phase. The median of the pairs' slowdowns is printed too (a slow phase
/// pulls it toward zero: there the host's steal, not the runtime, bounds
/// both runs).
fn timeline(b: &Bench, rt: &Runtime) {
    let run = |on: bool| {
        rt.record_timeline(on);
        let t = Instant::now();
        let refs: Vec<ObjectRef<u64>> = (0..ASYNC_TASKS).map(|_| rt.spawn(|| 1u64)).collect();
        let values = rt.get_all(&refs).expect("tasks");
        let d = t.elapsed();
        assert_eq!(values.len(), ASYNC_TASKS);
        rt.record_timeline(false);
        rt.clear_timeline();
        rate(ASYNC_TASKS, d)
    };
    let (mut off, mut on) = (Vec::new(), Vec::new());
    for i in 0..TIMELINE_PAIRS {
        if i % 2 == 0 {
            off.push(run(false));
            on.push(run(true));
        } else {
            on.push(run(true));
            off.push(run(false));
        }
    }
    let fmt = |v: &[f64]| v.iter().map(|s| fmt_value(*s)).collect::<Vec<_>>().join(" ");
    eprintln!("#   tasks_async off: {}; on: {}", fmt(&off), fmt(&on));
    let best = |v: &[f64]| v.iter().copied().fold(0.0, f64::max);
    let (best_off, best_on) = (best(&off), best(&on));
    let slowdown = median(off.iter().zip(&on).map(|(off, on)| (1.0 - on / off) * 100.0).collect());
    eprintln!("#   median of the pairs' slowdowns: {slowdown:.1}%");
    b.report("tasks_async_timeline_per_s", best_on, "tasks/s");
    b.report("timeline_overhead_pct", (1.0 - best_on / best_off) * 100.0, "%");
}
