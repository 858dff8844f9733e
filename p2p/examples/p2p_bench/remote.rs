//! Remote-work metrics of `p2p_bench` (tasks, actors, spillback), on
//! in-process nodes on 127.0.0.1 with one CPU each (see `main.rs` docs).
//!
//! - `remote_task_rtt_us`: submit a trivial registered function pinned to
//!   node B (`node.task(&F).on(b)`) from A and `get` its result; median of
//!   2,000 after 100 warm-ups. `remote_task_rtt_p99_us`: their 99th
//!   percentile. Built with the `probe` feature, stderr also shows where
//!   the time went, stage by stage (see `stages.rs`).
//! - `remote_tasks_per_s`: 10,000 independent trivial tasks pinned to B,
//!   all submitted, then all got; median of 3 rounds.
//! - `remote_actor_calls_per_s`: 10,000 calls from A on an actor hosted on
//!   B, all made, then all got; median of 3 rounds.
//! - `spillback_speedup`: 2,000 one-CPU tasks that each sleep 5 ms,
//!   submitted on one node: the time with that node alone (1 CPU) divided
//!   by the time with two more one-CPU nodes in the cluster, where tasks
//!   spill (default threshold). Sleeping keeps it a measure of scheduling
//!   on a 2-core machine. One round each.

use crate::stages::Breakdown;
use crate::{median, quantile, start_with, summarize, Bench, Res, PEER_WAIT};
use manta::ObjectRef;
use manta_p2p::probe::Stage;
use manta_p2p::{ActorClass, Method, Node, Registry, RemoteFn};
use std::time::{Duration, Instant};

static ECHO: RemoteFn<(u64,), u64> = RemoteFn::new("bench.echo", |(x,)| x);
static NAP: RemoteFn<(), ()> = RemoteFn::new("bench.nap", |()| std::thread::sleep(Duration::from_millis(5)));
static COUNTER: ActorClass<(), u64> = ActorClass::new("bench.Counter", |()| 0);
static BUMP: Method<u64, (), u64> = Method::new("bench.Counter.bump", |n, ()| {
    *n += 1;
    *n
});

/// The table every bench node registers.
pub fn registry() -> Registry {
    Registry::new().function(&ECHO).function(&NAP).actor(&COUNTER).method(&BUMP)
}

const RTT_ROUNDS: usize = 2_000;
const RTT_WARMUP: usize = 100;
const MANY: usize = 10_000;
const MANY_ROUNDS: usize = 3;
const SPILL_TASKS: usize = 2_000;
const GET_TIMEOUT: Duration = Duration::from_secs(60);

/// The metrics this module prints.
pub const METRICS: &[&str] = &[
    "remote_task_rtt_us",
    "remote_task_rtt_p99_us",
    "remote_tasks_per_s",
    "remote_actor_calls_per_s",
    "spillback_speedup",
];

fn get_all<T: std::any::Any + Send + Sync>(refs: &[ObjectRef<T>]) -> Res<()> {
    for r in refs {
        r.get_timeout(GET_TIMEOUT)?;
    }
    Ok(())
}

/// Runs the remote-work sections that pass the filter; returns the
/// remote task round-trip median (for the ratio to the TCP floor).
pub fn run(bench: &Bench) -> Res<Option<f64>> {
    if !bench.wants(METRICS) {
        return Ok(None);
    }
    let a = start_with(registry(), None)?;
    let b = start_with(registry(), Some(&a))?;
    a.wait_for_peers(1, PEER_WAIT)?;
    b.wait_for_peers(1, PEER_WAIT)?;
    let to_b = b.peer_id();
    let mut rtt = None;
    if bench.wants(&["remote_task_rtt_us", "remote_task_rtt_p99_us"]) {
        eprintln!("# remote task rtt: {RTT_ROUNDS} echo tasks a -> b, one at a time");
        let mut samples = Vec::with_capacity(RTT_ROUNDS);
        let mut stages = Breakdown::new(Stage::TASK);
        for i in 0..RTT_WARMUP + RTT_ROUNDS {
            let t = Instant::now();
            let r = a.task(&ECHO).on(to_b).spawn((i as u64,));
            let v = *r.get_timeout(GET_TIMEOUT)?;
            let took = t.elapsed();
            assert_eq!(v, i as u64);
            if i >= RTT_WARMUP {
                samples.push(took.as_secs_f64() * 1e6);
                stages.add(t, took);
            }
        }
        stages.print("remote_task_rtt");
        eprintln!("#     fast lane: a {:?}", a.fast_lane_stats());
        eprintln!("#     fast lane: b {:?}", b.fast_lane_stats());
        if let Some(s) = summarize("remote_task_rtt_us", samples) {
            bench.report("remote_task_rtt_us", median(&s), "us");
            bench.report("remote_task_rtt_p99_us", quantile(&s, 0.99), "us");
            rtt = Some(median(&s));
        }
    }
    if bench.wants(&["remote_tasks_per_s"]) {
        eprintln!("# remote tasks: {MANY_ROUNDS} x {MANY} echo tasks pinned to b, submitted then got");
        let mut rates = Vec::new();
        for _ in 0..MANY_ROUNDS {
            let t = Instant::now();
            let refs: Vec<_> = (0..MANY as u64).map(|i| a.task(&ECHO).on(to_b).spawn((i,))).collect();
            get_all(&refs)?;
            rates.push(MANY as f64 / t.elapsed().as_secs_f64());
        }
        if let Some(s) = summarize("remote_tasks_per_s", rates) {
            bench.report("remote_tasks_per_s", median(&s), "tasks/s");
        }
    }
    if bench.wants(&["remote_actor_calls_per_s"]) {
        eprintln!("# remote actor: {MANY_ROUNDS} x {MANY} calls a -> actor on b, made then got");
        let actor = a.actor_builder(&COUNTER).on(to_b).spawn(());
        actor.call(&BUMP, ()).get_timeout(GET_TIMEOUT)?;
        let mut rates = Vec::new();
        for _ in 0..MANY_ROUNDS {
            let t = Instant::now();
            let refs: Vec<_> = (0..MANY).map(|_| actor.call(&BUMP, ())).collect();
            get_all(&refs)?;
            rates.push(MANY as f64 / t.elapsed().as_secs_f64());
        }
        if let Some(s) = summarize("remote_actor_calls_per_s", rates) {
            bench.report("remote_actor_calls_per_s", median(&s), "calls/s");
        }
    }
    b.shutdown();
    a.shutdown();
    if bench.wants(&["spillback_speedup"]) {
        eprintln!("# spillback: {SPILL_TASKS} tasks of 5 ms sleep on one 1-CPU node, alone and with 2 more");
        let alone = {
            let n = start_with(registry(), None)?;
            spill_run(&n)?
        };
        let three = {
            let a = start_with(registry(), None)?;
            let b = start_with(registry(), Some(&a))?;
            let c = start_with(registry(), Some(&a))?;
            for n in [&a, &b, &c] {
                n.wait_for_peers(2, PEER_WAIT)?;
            }
            spill_run(&a)?
        };
        eprintln!("#   alone {alone:.2} s, three nodes {three:.2} s");
        bench.report("spillback_speedup", alone / three, "x");
    }
    Ok(rtt)
}

/// Submits the sleeping tasks on `n` and waits for all; seconds taken.
fn spill_run(n: &Node) -> Res<f64> {
    let t = Instant::now();
    let refs: Vec<_> = (0..SPILL_TASKS).map(|_| n.spawn(&NAP, ())).collect();
    get_all(&refs)?;
    Ok(t.elapsed().as_secs_f64())
}
