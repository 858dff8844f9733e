//! Metrics: what a runtime has done and is doing, as a snapshot
//! ([`Runtime::metrics`]) and as Prometheus text
//! ([`Metrics::to_prometheus`]) an app can serve on its own endpoint.
//!
//! Task counts come from the scheduler's queue lock, which every task
//! passes anyway (no counter of its own on the task path): a task is
//! *submitted* when its inputs are ready and it enters the queue, *running*
//! from the moment a worker takes it until it returns, and then *done*,
//! *failed* or *cancelled* (a task cancelled or failed before it reached
//! the queue — its input failed — is counted when that is known; one
//! cancelled while it still waits for inputs that never come is not; one
//! that cannot run at all, e.g. infeasible, counts as failed). A worker
//! reports how a task ended when it asks for its next job, a moment after
//! the result is stored: a reader may see a result before the counts
//! include it. A queued task that is cancelled leaves the queue, and is
//! counted as cancelled, at the next reap; a snapshot does that reap
//! itself, so it counts every task cancelled before it was taken, even
//! while every worker is busy. A running task whose result a cancel
//! completed counts as cancelled, whatever its body returned (its readers
//! see `Cancelled`). Store
//! figures are the store's ([`StoreStats`]); a cluster backend adds its own
//! (transfers, remote tasks) through
//! [`RemoteBackend::metrics`](crate::backend::RemoteBackend::metrics).

use crate::runtime::Runtime;
use crate::store::StoreStats;
use std::borrow::Cow;
use std::fmt::Write;

/// A snapshot of a runtime's counters ([`Runtime::metrics`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Metrics {
    /// Tasks that entered the queue (their inputs were ready).
    pub tasks_submitted: u64,
    /// Tasks waiting in the queue for resources or a worker (and other
    /// queued jobs: actor drains, rebuilds).
    pub tasks_queued: u64,
    /// Tasks running now.
    pub tasks_running: u64,
    /// Tasks finished with a value.
    pub tasks_done: u64,
    /// Tasks finished with an error (not counting cancellations).
    pub tasks_failed: u64,
    /// Tasks cancelled.
    pub tasks_cancelled: u64,
    /// Actor method calls made.
    pub actor_calls: u64,
    /// Worker threads (`num_cpus`, at least one).
    pub threads: usize,
    /// The object store's figures.
    pub store: StoreStats,
    /// What a cluster backend adds: `(name, value)` pairs, e.g.
    /// `("transfers_in", 12.0)`; empty without one.
    pub cluster: Vec<(Cow<'static, str>, f64)>,
}

impl Runtime {
    /// A snapshot of the runtime's metrics (see [`Metrics`]). Cheap: a few
    /// locks, no walk over tasks or objects (except, once after a cancel,
    /// over the queue, to take out the tasks it cancelled).
    pub fn metrics(&self) -> Metrics {
        self.scheduler().settle_reaps();
        let c = self.scheduler().counts();
        let cluster = self.backend().attached().map(|b| b.metrics()).unwrap_or_default();
        Metrics {
            tasks_submitted: c.submitted,
            tasks_queued: c.queued,
            tasks_running: c.running,
            tasks_done: c.done,
            tasks_failed: c.failed,
            tasks_cancelled: c.cancelled,
            actor_calls: self.scheduler().actor_calls(),
            threads: self.num_threads(),
            store: self.store_stats(),
            cluster,
        }
    }
}

impl Metrics {
    /// The metrics in Prometheus' text exposition format (version 0.0.4):
    /// counters end in `_total`, gauges do not, every name starts with
    /// `manta_`. Serve it as `text/plain; version=0.0.4`.
    pub fn to_prometheus(&self) -> String {
        let mut out = String::new();
        let s = &self.store;
        let rows: [(&str, &str, &str, f64); 21] = [
            ("tasks_submitted_total", "counter", "Tasks that entered the queue.", self.tasks_submitted as f64),
            ("tasks_queued", "gauge", "Jobs waiting for resources or a worker.", self.tasks_queued as f64),
            ("tasks_running", "gauge", "Tasks running now.", self.tasks_running as f64),
            ("tasks_done_total", "counter", "Tasks finished with a value.", self.tasks_done as f64),
            ("tasks_failed_total", "counter", "Tasks finished with an error.", self.tasks_failed as f64),
            ("tasks_cancelled_total", "counter", "Tasks cancelled.", self.tasks_cancelled as f64),
            ("actor_calls_total", "counter", "Actor method calls made.", self.actor_calls as f64),
            ("threads", "gauge", "Worker threads.", self.threads as f64),
            ("store_capacity_bytes", "gauge", "The store's memory cap.", s.capacity as f64),
            ("store_memory_bytes", "gauge", "Bytes of objects in memory.", s.bytes_in_memory as f64),
            ("store_objects", "gauge", "Charged objects in memory.", s.objects_in_memory as f64),
            ("store_spilled_bytes", "gauge", "Bytes of objects in spill files.", s.bytes_spilled as f64),
            ("store_spilled_objects", "gauge", "Objects in spill files.", s.objects_spilled as f64),
            ("store_spills_total", "counter", "Objects written to spill files.", s.spills as f64),
            ("store_spill_failures_total", "counter", "Spills that failed.", s.spill_failures as f64),
            ("store_restores_total", "counter", "Objects read back from spill files.", s.restores as f64),
            ("store_evictions_total", "counter", "Objects dropped to be rebuilt.", s.evictions as f64),
            ("store_rebuilds_total", "counter", "Objects rebuilt from lineage.", s.reconstructions as f64),
            ("store_lineage_bytes", "gauge", "Bytes of lineage records.", s.lineage_bytes as f64),
            (
                "store_lineage_evictions_total",
                "counter",
                "Lineage records dropped by the cap.",
                s.lineage_evictions as f64,
            ),
            (
                "store_recycled_bytes",
                "gauge",
                "Bytes of freed replica buffers kept for reuse.",
                s.bytes_recycled as f64,
            ),
        ];
        for (name, kind, help, value) in rows {
            let _ = writeln!(out, "# HELP manta_{name} {help}\n# TYPE manta_{name} {kind}\nmanta_{name} {value}");
        }
        for (name, value) in &self.cluster {
            let name: String =
                name.chars().map(|c| if c.is_ascii_alphanumeric() || c == '_' { c } else { '_' }).collect();
            let kind = if name.ends_with("_total") { "counter" } else { "gauge" };
            let _ = writeln!(out, "# TYPE manta_{name} {kind}\nmanta_{name} {value}");
        }
        out
    }
}
