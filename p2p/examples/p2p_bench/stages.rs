//! Where the time of a remote round trip goes: with the `probe` feature,
//! the remote paths mark each stage they pass (`manta_p2p::probe`), and
//! [`Breakdown`] collects, per timed operation, how long after the
//! previous mark (in time order; the operation's start for the first)
//! each stage came, and the tail from the last mark to the operation's
//! end (the reader's wake-up). Printed on stderr as the median and p99 of
//! each stage, and its mean over the typical operations (total up to the
//! median) beside its mean over the slow ones (total over the p90): the
//! stages where the two differ are where the slow operations lose their
//! time. Without the feature nothing is marked and nothing printed.
//!
//! Both nodes run in this process, so every mark is on one clock; the
//! operations run one at a time, so the last mark of each stage is this
//! operation's. A stage marked by a thread after it woke the reader (the
//! fetch completed, the `Done` applied) may come after the operation
//! ended: it is then missing from that operation (its `n` is lower).
//! Under load the p99 column mostly shows which hop was preempted.

use crate::{fmt_value, median, quantile, sorted};
use manta_p2p::probe::{self, Stage};
use std::time::{Duration, Instant};

/// Per-stage delays of the operations of one section.
pub struct Breakdown {
    stages: &'static [Stage],
    /// Per stage (in `stages` order): µs since the previous mark.
    deltas: Vec<Vec<f64>>,
    /// µs from the last mark to the end of the operation.
    tail: Vec<f64>,
    /// Per operation: its total (µs) and each stage's delta (`None`: not
    /// marked in it), for the split of slow against typical operations.
    ops: Vec<(f64, Vec<Option<f64>>)>,
}

impl Breakdown {
    /// An empty breakdown over `stages`.
    pub fn new(stages: &'static [Stage]) -> Breakdown {
        Breakdown { stages, deltas: vec![Vec::new(); stages.len()], tail: Vec::new(), ops: Vec::new() }
    }

    /// Adds the operation that started at `t0` and took `took`.
    pub fn add(&mut self, t0: Instant, took: Duration) {
        if !probe::ENABLED {
            return;
        }
        let mut marks = probe::marks_since(t0, self.stages);
        marks.sort_by_key(|(_, d)| *d);
        let mut prev = Duration::ZERO;
        let mut op = vec![None; self.stages.len() + 1];
        for (stage, d) in marks {
            if let Some(i) = self.stages.iter().position(|s| *s == stage) {
                let us = (d - prev).as_secs_f64() * 1e6;
                self.deltas[i].push(us);
                op[i] = Some(us);
            }
            prev = d;
        }
        let tail = took.saturating_sub(prev).as_secs_f64() * 1e6;
        self.tail.push(tail);
        op[self.stages.len()] = Some(tail);
        self.ops.push((took.as_secs_f64() * 1e6, op));
    }

    /// Mean µs of each stage (tail last) over the operations whose total
    /// is within the quantiles `lo..hi` of all totals.
    fn band_means(&self, lo: f64, hi: f64) -> Vec<f64> {
        let totals = sorted(self.ops.iter().map(|(t, _)| *t).collect());
        let (a, b) = (quantile(&totals, lo.max(1e-9)), quantile(&totals, hi));
        let band: Vec<&Vec<Option<f64>>> =
            self.ops.iter().filter(|(t, _)| (lo == 0.0 || *t > a) && *t <= b).map(|(_, op)| op).collect();
        (0..=self.stages.len())
            .map(|i| {
                let n = band.len().max(1) as f64;
                band.iter().map(|op| op[i].unwrap_or(0.0)).sum::<f64>() / n
            })
            .collect()
    }

    /// Prints each stage's median and p99 (µs) on stderr.
    pub fn print(&self, name: &str) {
        if !probe::ENABLED || self.tail.is_empty() {
            return;
        }
        eprintln!(
            "#   {name} stages (us after the previous mark, in time order): p50 p99 (marked in n ops); \
             mean in the ops up to the median total, and in those over its p90"
        );
        let (fast, slow) = (self.band_means(0.0, 0.5), self.band_means(0.9, 1.0));
        let rows = self.stages.iter().map(|s| s.name()).zip(&self.deltas).chain([("reader_woke", &self.tail)]);
        for (i, (stage, d)) in rows.enumerate() {
            if d.is_empty() {
                continue;
            }
            let s = sorted(d.clone());
            eprintln!(
                "#     {stage:<20} {:>8} {:>8} ({:>4})   {:>8} {:>8}",
                fmt_value(median(&s)),
                fmt_value(quantile(&s, 0.99)),
                s.len(),
                fmt_value(fast[i]),
                fmt_value(slow[i]),
            );
        }
    }
}
