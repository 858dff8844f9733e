//! The desktop job: 2,000 queued tasks holding 1 GiB of input between
//! them, each working through its buffer in 64 KiB chunks and polling for
//! cancellation after each; the user cancels once 30% are done. Measured
//! the same way for a manta `Group`, a hand-rolled `std::thread` pool and
//! rayon (both with the usual `AtomicBool` flag that queued jobs check when
//! they start and running ones poll):
//!
//! - `*_cancel_us`: time the cancelling (UI) thread spends inside cancel;
//! - `*_started_after_cancel`: tasks whose body began after cancel returned;
//! - `*_cancel_to_idle_ms`: from cancel's return until no task is running.
//!
//! And `as_completed_per_s` (20,000 trivial tasks read as they complete)
//! beside the same with a channel per baseline.

use super::{best_of, fmt_value, median, rate, Bench};
use manta::Runtime;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

const TASKS: usize = 2_000;
const BYTES_EACH: usize = 512 << 10; // 2,000 x 512 KiB = 1,000 MiB
const CHUNK: usize = 64 << 10;
const CANCEL_AT: usize = TASKS * 3 / 10;
const RUNS: usize = 3;
const AS_COMPLETED_TASKS: usize = 20_000;

pub(crate) const METRICS: &[&str] = &[
    "group_cancel_us",
    "std_pool_cancel_us",
    "rayon_cancel_us",
    "started_after_cancel",
    "std_pool_started_after_cancel",
    "rayon_started_after_cancel",
    "cancel_to_idle_ms",
    "std_pool_cancel_to_idle_ms",
    "rayon_cancel_to_idle_ms",
    "as_completed_per_s",
    "std_pool_as_completed_per_s",
    "rayon_as_completed_per_s",
];

/// What every task does with its buffer: a few passes of a cheap filter
/// per chunk, polling `cancelled` between chunks. Returns a checksum.
fn work(buf: &mut [u8], cancelled: &dyn Fn() -> bool) -> u64 {
    let mut sum = 0u64;
    for chunk in buf.chunks_mut(CHUNK) {
        if cancelled() {
            return sum;
        }
        for _ in 0..4 {
            let mut prev = 0u8;
            for b in chunk.iter_mut() {
                *b = b.wrapping_add(prev) >> 1 | 1;
                prev = *b;
            }
        }
        sum = sum.wrapping_add(chunk.iter().map(|&b| b as u64).sum::<u64>());
    }
    sum
}

fn inputs() -> Vec<Vec<u8>> {
    (0..TASKS).map(|i| vec![(i % 251) as u8; BYTES_EACH]).collect()
}

/// The shared bookkeeping of one run: tasks finished, running, started
/// after the cancel.
#[derive(Default)]
struct Tally {
    finished: AtomicUsize,
    running: AtomicUsize,
    cancel_returned: AtomicBool,
    started_after: AtomicUsize,
}

impl Tally {
    fn start(&self) {
        if self.cancel_returned.load(Ordering::SeqCst) {
            self.started_after.fetch_add(1, Ordering::SeqCst);
        }
        self.running.fetch_add(1, Ordering::SeqCst);
    }
    fn end(&self) {
        self.running.fetch_sub(1, Ordering::SeqCst);
        self.finished.fetch_add(1, Ordering::SeqCst);
    }
    fn wait_finished(&self, n: usize) {
        while self.finished.load(Ordering::SeqCst) < n {
            std::thread::yield_now();
        }
    }
    fn wait_idle(&self) {
        while self.running.load(Ordering::SeqCst) > 0 {
            std::hint::spin_loop();
        }
    }
}

/// One run's three figures: (us inside cancel, started after, ms to idle).
type Figures = (f64, f64, f64);

fn manta_run(threads: usize) -> Figures {
    let rt = Runtime::builder().num_cpus(threads).build().expect("runtime");
    let tally = Arc::new(Tally::default());
    let g = rt.group();
    let refs: Vec<_> = inputs()
        .into_iter()
        .map(|mut buf| {
            let tally = tally.clone();
            g.spawn(move || {
                tally.start();
                let s = work(&mut buf, &manta::is_cancelled);
                tally.end();
                s
            })
        })
        .collect();
    tally.wait_finished(CANCEL_AT);
    let t = Instant::now();
    g.cancel();
    let inside = t.elapsed();
    tally.cancel_returned.store(true, Ordering::SeqCst);
    let t = Instant::now();
    g.wait_stopped(None);
    let to_idle = t.elapsed();
    drop(refs);
    (inside.as_secs_f64() * 1e6, tally.started_after.load(Ordering::SeqCst) as f64, to_idle.as_secs_f64() * 1e3)
}

/// A hand-rolled pool: `threads` workers on one channel of boxed jobs.
struct StdPool {
    tx: Option<crossbeam_channel::Sender<Box<dyn FnOnce() + Send>>>,
    workers: Vec<std::thread::JoinHandle<()>>,
}

impl StdPool {
    fn new(threads: usize) -> StdPool {
        let (tx, rx) = crossbeam_channel::unbounded::<Box<dyn FnOnce() + Send>>();
        let workers = (0..threads)
            .map(|_| {
                let rx = rx.clone();
                std::thread::spawn(move || {
                    for job in rx {
                        job();
                    }
                })
            })
            .collect();
        StdPool { tx: Some(tx), workers }
    }

    fn spawn(&self, job: impl FnOnce() + Send + 'static) {
        if let Some(tx) = &self.tx {
            let _ = tx.send(Box::new(job));
        }
    }
}

impl Drop for StdPool {
    fn drop(&mut self) {
        self.tx.take();
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}

/// The baselines: spawn each job through `spawn`, a flag for cancel.
fn flag_run(spawn: &dyn Fn(Box<dyn FnOnce() + Send>)) -> Figures {
    let tally = Arc::new(Tally::default());
    let cancelled = Arc::new(AtomicBool::new(false));
    for mut buf in inputs() {
        let (tally, cancelled) = (tally.clone(), cancelled.clone());
        spawn(Box::new(move || {
            if cancelled.load(Ordering::SeqCst) {
                return; // a queued job skipped: dropped on the worker
            }
            tally.start();
            work(&mut buf, &|| cancelled.load(Ordering::Relaxed));
            tally.end();
        }));
    }
    tally.wait_finished(CANCEL_AT);
    let t = Instant::now();
    cancelled.store(true, Ordering::SeqCst);
    let inside = t.elapsed();
    tally.cancel_returned.store(true, Ordering::SeqCst);
    let t = Instant::now();
    tally.wait_idle();
    let to_idle = t.elapsed();
    (inside.as_secs_f64() * 1e6, tally.started_after.load(Ordering::SeqCst) as f64, to_idle.as_secs_f64() * 1e3)
}

fn report_runs(b: &Bench, prefix: &str, runs: Vec<Figures>) {
    let inside: Vec<f64> = runs.iter().map(|r| r.0).collect();
    let after: Vec<f64> = runs.iter().map(|r| r.1).collect();
    let idle: Vec<f64> = runs.iter().map(|r| r.2).collect();
    let show = |v: &[f64]| v.iter().map(|x| fmt_value(*x)).collect::<Vec<_>>().join(" ");
    eprintln!(
        "#   {prefix}: cancel_us {} / started_after {} / to_idle_ms {}",
        show(&inside),
        show(&after),
        show(&idle)
    );
    let (cancel_name, after_name, idle_name) = match prefix {
        "manta" => ("group_cancel_us".to_string(), "started_after_cancel".to_string(), "cancel_to_idle_ms".to_string()),
        p => (format!("{p}_cancel_us"), format!("{p}_started_after_cancel"), format!("{p}_cancel_to_idle_ms")),
    };
    // The worst run for "started after" (goal: zero in every run), medians otherwise.
    b.report(&cancel_name, median(inside), "us");
    b.report(&after_name, after.iter().copied().fold(0.0, f64::max), "tasks");
    b.report(&idle_name, median(idle), "ms");
}

pub(crate) fn cancel(b: &Bench) {
    let wants = |p: &str| {
        b.wants(&[&format!("{p}cancel_us"), &format!("{p}started_after_cancel"), &format!("{p}cancel_to_idle_ms")])
    };
    if wants("group_") || wants("") {
        let runs = (0..RUNS).map(|_| manta_run(b.threads)).collect();
        report_runs(b, "manta", runs);
    }
    if wants("std_pool_") {
        let runs = (0..RUNS)
            .map(|_| {
                let pool = StdPool::new(b.threads);
                flag_run(&|job| pool.spawn(job))
            })
            .collect();
        report_runs(b, "std_pool", runs);
    }
    if wants("rayon_") {
        let runs = (0..RUNS)
            .map(|_| {
                let pool = rayon::ThreadPoolBuilder::new().num_threads(b.threads).build().expect("rayon pool");
                let r = flag_run(&|job| pool.spawn(job));
                drop(pool);
                r
            })
            .collect();
        report_runs(b, "rayon", runs);
    }
    as_completed(b);
}

/// 20,000 trivial tasks read as they complete.
fn as_completed(b: &Bench) {
    if b.wants(&["as_completed_per_s"]) {
        let rt = Runtime::builder().num_cpus(b.threads).build().expect("runtime");
        let best = best_of("as_completed_per_s", 5, || {
            let t = Instant::now();
            let refs: Vec<_> = (0..AS_COMPLETED_TASKS as u64).map(|i| rt.spawn(move || i)).collect();
            let mut sum = 0;
            for r in manta::as_completed(refs) {
                sum += *r.get().expect("task");
            }
            let d = t.elapsed();
            assert_eq!(sum, (AS_COMPLETED_TASKS as u64 - 1) * AS_COMPLETED_TASKS as u64 / 2);
            rate(AS_COMPLETED_TASKS, d)
        });
        b.report("as_completed_per_s", best, "tasks/s");
    }
    let channel_run = |spawn: &dyn Fn(Box<dyn FnOnce() + Send>)| {
        let (tx, rx) = crossbeam_channel::unbounded::<u64>();
        let t = Instant::now();
        for i in 0..AS_COMPLETED_TASKS as u64 {
            let tx = tx.clone();
            spawn(Box::new(move || {
                let _ = tx.send(i);
            }));
        }
        let sum: u64 = (0..AS_COMPLETED_TASKS).map(|_| rx.recv().expect("job")).sum();
        let d = t.elapsed();
        assert_eq!(sum, (AS_COMPLETED_TASKS as u64 - 1) * AS_COMPLETED_TASKS as u64 / 2);
        rate(AS_COMPLETED_TASKS, d)
    };
    if b.wants(&["std_pool_as_completed_per_s"]) {
        let pool = StdPool::new(b.threads);
        let best = best_of("std_pool_as_completed_per_s", 5, || channel_run(&|job| pool.spawn(job)));
        b.report("std_pool_as_completed_per_s", best, "tasks/s");
    }
    if b.wants(&["rayon_as_completed_per_s"]) {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(b.threads).build().expect("rayon pool");
        let best = best_of("rayon_as_completed_per_s", 5, || channel_run(&|job| pool.spawn(job)));
        b.report("rayon_as_completed_per_s", best, "tasks/s");
    }
}
