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
//! Invariants: `bytes` = sum of `record_bytes` of the records still held;
//! `order` holds every id in `records` (and possibly freed ones, skipped and
//! compacted away); records are dropped outside the lock (dropping one may
//! free its inputs, whose own drops come back here).

use crate::error::Text;
use crate::id::ObjectId;
use crate::store::RebuildJob;
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

/// A task that can run again to rebuild its (lost) output.
pub(crate) trait Rebuild: Send + Sync {
    /// What the record counts against the lineage cap.
    fn record_bytes(&self) -> usize;
    /// The task's name (for errors).
    fn task_name(&self) -> Text;
    /// Submits the task again; its run ends with `job.finish(..)` (or the
    /// job's drop, which fails the object).
    fn resubmit(self: Arc<Self>, job: RebuildJob);
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
        if let Some(old) = self.records.insert(id, Entry { record: Some(record), task }) {
            // Kept again (a rebuilt object keeps its record): count it once.
            self.bytes -= old.record.map_or(0, |r| r.record_bytes()).min(self.bytes);
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

    /// The record of `id`, if it has one.
    pub fn lookup(&self, id: ObjectId) -> Lookup {
        match self.records.get(&id) {
            Some(Entry { record: Some(r), .. }) => Lookup::Record(r.clone()),
            Some(Entry { record: None, task }) => Lookup::Evicted(task.clone()),
            None => Lookup::None,
        }
    }

    /// True if `id` has a record (so dropping its value loses nothing).
    pub fn has(&self, id: ObjectId) -> bool {
        self.records.get(&id).is_some_and(|e| e.record.is_some())
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
