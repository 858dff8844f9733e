//! Lineage records: how the store can rebuild an object it dropped from
//! memory, by running the task that made it again.
//!
//! The store keeps one record per charged object made by a re-runnable
//! task, keyed by the object's id, in the order kept. Their bytes are
//! capped (`RuntimeBuilder::lineage_capacity`): past the cap the oldest
//! records go, leaving a tombstone so that an object which then cannot be
//! rebuilt says so ([`Lookup::Evicted`], the `LineageEvicted` error) instead
//! of claiming it never had lineage. A record (or tombstone) goes when its
//! object is freed.
//!
//! The store never runs tasks: a [`Rebuild`] record knows how to submit its
//! task again to the scheduler (the runtime made it, with the scheduler and
//! the task's resources), and the store hands it a [`RebuildJob`] to finish
//! with the value (see `store`).
//!
//! Per task ([`Policy`], set on `TaskBuilder`): `lineage(false)` keeps no
//! record (the object is spilled or pinned, never dropped to be rebuilt),
//! and `max_reconstructions(n)` caps the rebuilds of its output. Each
//! record handed out to rebuild an object ([`Log::claim`]) counts one
//! rebuild; once an object has had `n`, [`Log::has`] says it can no longer
//! be rebuilt (so the store stops dropping it and spills or pins it
//! instead), and a loss that happens anyway (an unreadable spill file)
//! gets a record that fails the rebuild with
//! [`Error::MaxReconstructionsExceeded`](crate::Error::MaxReconstructionsExceeded).
//!
//! Invariants: `bytes` = sum of `record_bytes` of the records still held;
//! `order` holds every id in `records` (and possibly freed ones, skipped and
//! compacted away); records are dropped outside the lock (dropping one may
//! free its inputs, whose own drops come back here).

use crate::error::{Error, Text};
use crate::id::ObjectId;
use crate::store::RebuildJob;
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

/// A task's lineage options (`TaskBuilder::lineage`,
/// `TaskBuilder::max_reconstructions`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Policy {
    /// Keep a record at all (default true).
    pub keep: bool,
    /// Most rebuilds of the task's output (default: no cap).
    pub max_reconstructions: Option<u32>,
}

impl Default for Policy {
    fn default() -> Self {
        Policy { keep: true, max_reconstructions: None }
    }
}

impl Policy {
    /// The record to keep for a task's output under this policy: none, the
    /// task's own, or the task's own with a cap on rebuilds.
    pub(crate) fn apply(&self, record: Arc<dyn Rebuild>) -> Option<Arc<dyn Rebuild>> {
        if !self.keep {
            return None;
        }
        Some(match self.max_reconstructions {
            None => record,
            Some(max) => Arc::new(Capped { inner: record, max }),
        })
    }
}

/// A record with a cap on rebuilds.
struct Capped {
    inner: Arc<dyn Rebuild>,
    max: u32,
}

impl Rebuild for Capped {
    fn record_bytes(&self) -> usize {
        self.inner.record_bytes() + std::mem::size_of::<Self>()
    }
    fn task_name(&self) -> Text {
        self.inner.task_name()
    }
    fn resubmit(self: Arc<Self>, job: RebuildJob) {
        self.inner.clone().resubmit(job)
    }
    fn max_reconstructions(&self) -> Option<u32> {
        Some(self.max)
    }
}

/// Handed out in place of a record whose object used up its rebuilds:
/// fails the rebuild.
struct Exhausted {
    task: Text,
    max: u32,
}

impl Rebuild for Exhausted {
    fn record_bytes(&self) -> usize {
        0
    }
    fn task_name(&self) -> Text {
        self.task.clone()
    }
    fn resubmit(self: Arc<Self>, job: RebuildJob) {
        let Some(id) = job.id() else { return };
        let e = Error::MaxReconstructionsExceeded { id, task: self.task.clone(), max: u64::from(self.max) };
        job.finish(Err(e));
    }
}

/// A task that can run again to rebuild its (lost) output.
pub(crate) trait Rebuild: Send + Sync {
    /// What the record counts against the lineage cap.
    fn record_bytes(&self) -> usize;
    /// The task's name (for errors).
    fn task_name(&self) -> Text;
    /// Submits the task again; its run ends with `job.finish(..)` (or the
    /// job's drop, which fails the object).
    fn resubmit(self: Arc<Self>, job: RebuildJob);
    /// Most times the object may be rebuilt (`None`: no cap).
    fn max_reconstructions(&self) -> Option<u32> {
        None
    }
}

/// What the log knows of an object's lineage.
pub(crate) enum Lookup {
    /// It can be rebuilt by this record.
    Record(Arc<dyn Rebuild>),
    /// It had a record, which the lineage cap dropped (the task's name).
    Evicted(Text),
    /// It never had one (stored by `put`, made by a one-shot task, ...).
    None,
}

struct Entry {
    record: Option<Arc<dyn Rebuild>>,
    /// The task's name, kept for the tombstone.
    task: Text,
    /// Rebuilds handed out so far.
    rebuilds: u32,
}

impl Entry {
    /// True once the object used up its rebuilds.
    fn exhausted(&self) -> bool {
        self.record.as_ref().and_then(|r| r.max_reconstructions()).is_some_and(|max| self.rebuilds >= max)
    }
}

/// The lineage records of one store.
#[derive(Default)]
pub(crate) struct Log {
    records: HashMap<ObjectId, Entry>,
    order: VecDeque<ObjectId>,
    bytes: usize,
    /// Records dropped by the cap so far.
    pub evictions: u64,
}

impl Log {
    /// Keeps `record` for `id`; returns the records the cap evicted (to be
    /// dropped by the caller, outside its lock).
    pub fn add(&mut self, id: ObjectId, record: Arc<dyn Rebuild>, cap: usize) -> Vec<Arc<dyn Rebuild>> {
        self.bytes += record.record_bytes();
        let task = record.task_name();
        if let Some(old) = self.records.insert(id, Entry { record: Some(record), task, rebuilds: 0 }) {
            // Kept again (a rebuilt object keeps its record): count it once,
            // and keep its count of rebuilds.
            self.bytes -= old.record.map_or(0, |r| r.record_bytes()).min(self.bytes);
            if let Some(e) = self.records.get_mut(&id) {
                e.rebuilds = old.rebuilds;
            }
        } else {
            self.order.push_back(id);
        }
        if self.order.len() > 2 * self.records.len() + 64 {
            let records = &self.records;
            self.order.retain(|id| records.contains_key(id));
        }
        let mut victims = Vec::new();
        while self.bytes > cap {
            let Some(old) = self.order.pop_front() else { break };
            let Some(entry) = self.records.get_mut(&old) else { continue };
            if let Some(r) = entry.record.take() {
                self.bytes -= r.record_bytes().min(self.bytes);
                self.evictions += 1;
                victims.push(r);
            }
        }
        victims
    }

    /// The record of `id`, if it has one, to rebuild it once (counted; an
    /// object that used up its rebuilds gets a record that fails).
    pub fn claim(&mut self, id: ObjectId) -> Lookup {
        let Some(entry) = self.records.get_mut(&id) else { return Lookup::None };
        let exhausted = entry.exhausted();
        match &entry.record {
            Some(r) if exhausted => {
                let max = r.max_reconstructions().unwrap_or(0);
                Lookup::Record(Arc::new(Exhausted { task: entry.task.clone(), max }))
            }
            Some(r) => {
                let r = r.clone();
                entry.rebuilds += 1;
                Lookup::Record(r)
            }
            None => Lookup::Evicted(entry.task.clone()),
        }
    }

    /// True if `id` has a record with rebuilds left (so dropping its value
    /// loses nothing).
    pub fn has(&self, id: ObjectId) -> bool {
        self.records.get(&id).is_some_and(|e| e.record.is_some() && !e.exhausted())
    }

    /// Forgets a freed object; returns its record to drop outside the lock.
    pub fn remove(&mut self, id: ObjectId) -> Option<Arc<dyn Rebuild>> {
        let entry = self.records.remove(&id)?;
        let r = entry.record?;
        self.bytes -= r.record_bytes().min(self.bytes);
        Some(r)
    }

    /// Bytes of the records held.
    pub fn bytes(&self) -> usize {
        self.bytes
    }
}
