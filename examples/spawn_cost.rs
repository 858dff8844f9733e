//! A small fixed driver for counting instructions per task with callgrind
//! (`valgrind --tool=callgrind target/release/examples/spawn_cost MODE N`):
//! MODE `async` spawns N trivial tasks then gets them all (microbench's
//! `tasks_async_per_s`), `completed` spawns N then reads them with
//! `manta::as_completed` (`as_completed_per_s`), `rayon` the same with rayon's spawn and a
//! channel (`rayon_tasks_async_per_s`), `put` makes N small objects with
//! `put` and drops them (`put_small_per_s`), `pending` reads N tasks with
//! `as_completed` registered while every one is still queued (both workers
//! are held by two gate tasks until then: the registration and
//! notification path that `completed` mostly skips when its tasks finish
//! before it looks), `named` is `async` through the task builder
//! (`rt.task().name(..).spawn`, as `map` submits), `group` is `async`
//! through a `Group` (`group.spawn`), `timeline`
//! is `async` with timeline recording on (`tasks_async_timeline_per_s`). One warm-up round of the
//! same size runs first, so thread start and first allocations are not
//! counted against the second; divide the difference of two runs of
//! different N by the difference of N for a per-task figure.

use manta::{ObjectRef, Runtime};

static RAYON: std::sync::OnceLock<rayon::ThreadPool> = std::sync::OnceLock::new();

fn round(rt: &Runtime, mode: &str, n: u64) -> u64 {
    if mode == "rayon" {
        // The floor: rayon's spawn and a channel per result.
        let (tx, rx) = crossbeam_channel::unbounded::<u64>();
        let pool = RAYON.get_or_init(|| rayon::ThreadPoolBuilder::new().num_threads(2).build().expect("pool"));
        for i in 0..n {
            let tx = tx.clone();
            pool.spawn(move || {
                let _ = tx.send(i);
            });
        }
        return (0..n).map(|_| rx.recv().expect("job")).sum();
    }
    if mode == "put" {
        let refs: Vec<ObjectRef<u64>> = (0..n).map(|i| rt.put(i).expect("put")).collect();
        return refs.iter().map(|r| *r.get().expect("get")).sum();
    }
    if mode == "pending" {
        // Both workers busy until the reader registered, so every task is
        // still queued when `as_completed` looks.
        let (open, gate) = crossbeam_channel::bounded::<()>(2);
        let blockers: Vec<ObjectRef<u64>> = (0..2)
            .map(|_| {
                let gate = gate.clone();
                rt.spawn(move || gate.recv().map_or(0, |()| 0))
            })
            .collect();
        let refs: Vec<ObjectRef<u64>> = (0..n).map(|i| rt.spawn(move || i)).collect();
        let completed = manta::as_completed(refs);
        (0..2).for_each(|_| open.send(()).expect("gate"));
        let sum: u64 = completed.map(|r| *r.get().expect("task")).sum();
        return sum + rt.get_all(&blockers).expect("blockers").iter().map(|v| **v).sum::<u64>();
    }
    let group = rt.group();
    let refs: Vec<ObjectRef<u64>> = if mode == "named" {
        (0..n).map(|i| rt.task().name("t").spawn(move || i)).collect()
    } else if mode == "group" {
        (0..n).map(|i| group.spawn(move || i)).collect()
    } else {
        (0..n).map(|i| rt.spawn(move || i)).collect()
    };
    match mode {
        "completed" => manta::as_completed(refs).map(|r| *r.get().expect("task")).sum(),
        _ => rt.get_all(&refs).expect("tasks").iter().map(|v| **v).sum(),
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let mode = args.next().unwrap_or_else(|| "async".into());
    let n: u64 = args.next().and_then(|s| s.parse().ok()).unwrap_or(10_000);
    let rt = Runtime::builder().num_cpus(2).build().expect("runtime");
    rt.record_timeline(mode == "timeline");
    let expect = n * n.saturating_sub(1) / 2;
    assert_eq!(round(&rt, &mode, n), expect);
    assert_eq!(round(&rt, &mode, n), expect);
    println!("{mode} {n} ok");
}
