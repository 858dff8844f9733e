//! Fairness under a flood (issue 15: "while one peer floods, another
//! peer's small remote `get` and remote task still complete"), on three
//! in-process nodes on 127.0.0.1 with one CPU each (see `main.rs` docs).
//!
//! Node C floods node A with trivial tasks pinned to A, 1,000 at a time
//! (submitted, then all got), from its own thread, until the measurement
//! ends (at most `FLOOD_MAX` tasks or `FLOOD_TIME`). Meanwhile node B
//! measures, one at a time:
//!
//! - `flooded_remote_get_small_us`: `get` on B of a fresh 64-byte object
//!   put on A (prepared in batches of 100, only the `get` timed), median
//!   of 500; `flooded_remote_get_small_p99_us` their 99th percentile;
//! - `flooded_remote_task_rtt_us`: a trivial task pinned to A submitted
//!   from B and got, median of 500 (it waits behind the flood's tasks that
//!   A accepted: the flooder holds at most half of A's accepted slots);
//!   `flooded_remote_task_rtt_p99_us` their 99th percentile;
//! - `flood_tasks_per_s`: the flooder's own rate meanwhile.
//!
//! Compare with `remote_get_small_us` and `remote_task_rtt_us` (no flood)
//! of the same run.

use crate::{median, quantile, start_with, summarize, Bench, Res, PEER_WAIT};
use manta_p2p::{Registry, RemoteFn};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

static PING: RemoteFn<(u64,), u64> = RemoteFn::new("bench.flood.ping", |(x,)| x);

/// The metrics this module prints.
pub const METRICS: &[&str] = &[
    "flooded_remote_get_small_us",
    "flooded_remote_get_small_p99_us",
    "flooded_remote_task_rtt_us",
    "flooded_remote_task_rtt_p99_us",
    "flood_tasks_per_s",
];

const ROUNDS: usize = 500;
const BATCH: usize = 100;
const FLOOD_BATCH: usize = 1_000;
const FLOOD_MAX: usize = 2_000_000;
const FLOOD_TIME: Duration = Duration::from_secs(120);
const GET_TIMEOUT: Duration = Duration::from_secs(60);

fn registry() -> Registry {
    crate::remote::registry().function(&PING)
}

/// Runs the flood section if any of its metrics passes the filter.
pub fn run(bench: &Bench) -> Res<()> {
    if !bench.wants(METRICS) {
        return Ok(());
    }
    let a = start_with(registry(), None)?;
    let b = start_with(registry(), Some(&a))?;
    let c = start_with(registry(), Some(&a))?;
    for n in [&a, &b, &c] {
        n.wait_for_peers(2, PEER_WAIT)?;
    }
    let to_a = a.peer_id();
    eprintln!("# flood: c floods a with trivial tasks while b measures small gets and tasks on a");
    let stop = Arc::new(AtomicBool::new(false));
    let flooder = {
        let (c, stop) = (c.clone(), stop.clone());
        std::thread::spawn(move || -> Result<(usize, Duration), String> {
            let t = Instant::now();
            let mut sent = 0;
            while !stop.load(Ordering::Relaxed) && sent < FLOOD_MAX && t.elapsed() < FLOOD_TIME {
                let refs: Vec<_> = (0..FLOOD_BATCH as u64).map(|i| c.task(&PING).on(to_a).spawn((i,))).collect();
                for r in &refs {
                    r.get_timeout(GET_TIMEOUT).map_err(|e| e.to_string())?;
                }
                sent += FLOOD_BATCH;
            }
            Ok((sent, t.elapsed()))
        })
    };
    // Let the flood fill A's queue before measuring.
    while a.accepted_work() == 0 && !flooder.is_finished() {
        std::thread::yield_now();
    }
    let measured = measure(&a, &b, to_a);
    stop.store(true, Ordering::Relaxed);
    let flood = flooder.join().map_err(|_| "the flooder panicked")??;
    let (gets, tasks) = measured?;
    if let Some(s) = summarize("flooded_remote_get_small_us", gets) {
        bench.report("flooded_remote_get_small_us", median(&s), "us");
        bench.report("flooded_remote_get_small_p99_us", quantile(&s, 0.99), "us");
    }
    if let Some(s) = summarize("flooded_remote_task_rtt_us", tasks) {
        bench.report("flooded_remote_task_rtt_us", median(&s), "us");
        bench.report("flooded_remote_task_rtt_p99_us", quantile(&s, 0.99), "us");
    }
    bench.report("flood_tasks_per_s", flood.0 as f64 / flood.1.as_secs_f64(), "tasks/s");
    for n in [c, b, a] {
        n.shutdown();
    }
    Ok(())
}

/// B's small gets of objects on A, then B's tasks on A: µs each.
fn measure(a: &manta_p2p::Node, b: &manta_p2p::Node, to_a: manta_p2p::PeerId) -> Res<(Vec<f64>, Vec<f64>)> {
    let mut gets = Vec::with_capacity(ROUNDS);
    while gets.len() < ROUNDS {
        let mut owned = Vec::with_capacity(BATCH);
        let mut remote = Vec::with_capacity(BATCH);
        for i in 0..BATCH {
            let r = a.runtime().put(vec![i as u8; 64])?;
            remote.push(b.decode_ref::<Vec<u8>>(&a.encode_ref(&r)?)?);
            owned.push(r);
        }
        for (i, r) in remote.iter().enumerate() {
            let t = Instant::now();
            let v = r.get_timeout(GET_TIMEOUT)?;
            gets.push(t.elapsed().as_secs_f64() * 1e6);
            if v.len() != 64 || v[0] != i as u8 {
                return Err("a small object came back wrong".into());
            }
        }
    }
    let mut tasks = Vec::with_capacity(ROUNDS);
    for i in 0..ROUNDS as u64 {
        let t = Instant::now();
        let v = *b.task(&PING).on(to_a).spawn((i,)).get_timeout(GET_TIMEOUT)?;
        tasks.push(t.elapsed().as_secs_f64() * 1e6);
        if v != i {
            return Err("a task result came back wrong".into());
        }
    }
    Ok((gets, tasks))
}
