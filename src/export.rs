//! The export-table protocol: object id → weak cell, shared by racing
//! imports, lookups and drops (see `remote`), and the run-once claim of a
//! remote cell's fetch.
//!
//! # Invariants
//! - The table never keeps a cell alive (it holds `Weak`s); a cell's drop
//!   removes its own entry through [`Table::remove_if_same`], which compares
//!   pointers, so a stale drop never removes a newer cell of the same id.
//! - No strong ref is ever *dropped* while the table's lock is held: the
//!   drop of a last ref runs the cell's `Drop`, which takes this lock
//!   (re-entering it would deadlock). Liveness checks under the lock use
//!   `strong_count`, and upgraded refs are only returned, never dropped,
//!   inside critical sections.
//! - [`Table::get_or_insert_with`] returns the live cell for an id if there
//!   is one, else inserts the new one: after it returns, a lookup of the id
//!   finds the returned cell for as long as it lives.
//! - [`Claim::claim`] returns true exactly once.
//!
//! Written on the `sync` shim and model-checked in `tests/loom_export.rs`.

use crate::sync::{lock, AtomicBool, Mutex, Ordering};
use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Weak};

/// A map of weakly held values with a payload per entry.
pub struct Table<K, V, P> {
    map: Mutex<HashMap<K, (Weak<V>, P)>>,
}

impl<K: Eq + Hash + Copy, V, P: Copy> Default for Table<K, V, P> {
    fn default() -> Self {
        Table { map: Mutex::new(HashMap::new()) }
    }
}

impl<K: Eq + Hash + Copy, V, P: Copy> Table<K, V, P> {
    /// A new, empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// The live value of `k` and its payload.
    pub fn lookup(&self, k: K) -> Option<(Arc<V>, P)> {
        let m = lock(&self.map);
        let (w, p) = m.get(&k)?;
        Some((w.upgrade()?, *p))
    }

    /// Registers `v` under `k` unless a live value is there already.
    pub fn insert_if_vacant(&self, k: K, v: &Arc<V>, p: P) {
        let mut m = lock(&self.map);
        if m.get(&k).is_none_or(|(w, _)| w.strong_count() == 0) {
            m.insert(k, (Arc::downgrade(v), p));
        }
    }

    /// Registers `v` under `k` unless a live value is there that `keep`
    /// accepts (a live value `keep` rejects is replaced; its own drop then
    /// leaves the new entry alone, see `remove_if_same`).
    pub fn insert_unless(&self, k: K, v: &Arc<V>, p: P, keep: impl FnOnce(&V) -> bool) {
        let mut m = lock(&self.map);
        if let Some(old) = m.get(&k).and_then(|(w, _)| w.upgrade()) {
            if std::ptr::eq(Arc::as_ptr(&old), Arc::as_ptr(v)) || keep(&old) {
                drop(m);
                return;
            }
        }
        m.insert(k, (Arc::downgrade(v), p));
    }

    /// The live value of `k`, or `make()`'s, registered.
    pub fn get_or_insert_with(&self, k: K, make: impl FnOnce() -> (Arc<V>, P)) -> Arc<V> {
        let mut m = lock(&self.map);
        if let Some(v) = m.get(&k).and_then(|(w, _)| w.upgrade()) {
            return v;
        }
        let (v, p) = make();
        m.insert(k, (Arc::downgrade(&v), p));
        v
    }

    /// Removes `k`'s entry if it points at `v` (called from `v`'s drop).
    pub fn remove_if_same(&self, k: K, v: *const V) {
        let mut m = lock(&self.map);
        if m.get(&k).is_some_and(|(w, _)| std::ptr::eq(w.as_ptr(), v)) {
            m.remove(&k);
        }
    }

    /// Entries whose value is alive.
    pub fn live(&self) -> usize {
        lock(&self.map).values().filter(|(w, _)| w.strong_count() > 0).count()
    }
}

/// A flag that lets exactly one caller through.
#[derive(Default)]
pub struct Claim(AtomicBool);

impl Claim {
    /// A flag not yet claimed.
    pub fn new() -> Claim {
        Claim(AtomicBool::new(false))
    }

    /// True for the first caller only.
    pub fn claim(&self) -> bool {
        !self.0.load(Ordering::Acquire) && !self.0.swap(true, Ordering::AcqRel)
    }
}
