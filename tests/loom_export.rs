#![cfg(loom)]
//! Loom models of the export-table protocol (`src/export.rs`), which maps
//! object ids to weakly held cells for the cluster hook (`src/remote.rs`).
//!
//! Properties checked over every interleaving loom explores:
//! - **No deadlock when the last ref drops during a lookup or import**: a
//!   cell's drop takes the table lock to remove its entry, so nothing may
//!   drop a strong ref while holding that lock.
//! - **A stale drop never removes a newer cell**: a cell dropped while an
//!   import replaces it (same id) leaves the new cell findable.
//! - **Imports agree**: two concurrent imports of one id get the same cell.
//! - **A fetch is claimed once**: of two racing `claim`s exactly one wins.
//! - **A local export displaces a remote cell**: even while the remote
//!   cell is being dropped, the id ends up finding the local cell.
//!
//! The values are `std::sync::Arc`s (loom has no `Weak`); the table's lock
//! is loom's, which is where the interleavings that matter happen.
//!
//! Run: `RUSTFLAGS="--cfg loom" LOOM_MAX_PREEMPTIONS=2 cargo test --release -p manta --test loom_export`

use loom::sync::atomic::{AtomicUsize, Ordering};
use loom::thread;
use manta::protocols::{Claim, Table};
use std::sync::Arc;

type T = Table<u64, Cell, ()>;

/// A cell that unregisters itself when dropped, as `ObjectCell` does.
struct Cell {
    key: u64,
    table: loom::sync::Arc<T>,
    drops: loom::sync::Arc<AtomicUsize>,
}

impl Drop for Cell {
    fn drop(&mut self) {
        self.table.remove_if_same(self.key, self);
        self.drops.fetch_add(1, Ordering::SeqCst);
    }
}

fn cell(table: &loom::sync::Arc<T>, drops: &loom::sync::Arc<AtomicUsize>) -> Arc<Cell> {
    Arc::new(Cell { key: 1, table: table.clone(), drops: drops.clone() })
}

#[test]
fn last_drop_races_lookup_and_import_without_deadlock_or_loss() {
    loom::model(|| {
        let table = loom::sync::Arc::new(T::new());
        let drops = loom::sync::Arc::new(AtomicUsize::new(0));
        let old = cell(&table, &drops);
        table.insert_if_vacant(1, &old, ());

        // One thread drops the last ref to the old cell...
        let dropper = thread::spawn(move || drop(old));
        // ...another looks it up (and drops what it got)...
        let (t2, d2) = (table.clone(), drops.clone());
        let looker = thread::spawn(move || {
            let _ = d2;
            drop(t2.lookup(1));
        });
        // ...and this one imports the id: the old cell if still alive, else a new one.
        let (t3, d3) = (table.clone(), drops.clone());
        let importer = thread::spawn(move || t3.get_or_insert_with(1, || (cell(&t3, &d3), ())));

        dropper.join().unwrap();
        looker.join().unwrap();
        let got = importer.join().unwrap();
        // Whatever happened, the importer's cell is the one registered.
        let (found, ()) = table.lookup(1).expect("the imported cell is registered");
        assert!(Arc::ptr_eq(&found, &got));
        drop(found);
        drop(got);
        assert_eq!(table.live(), 0);
        assert!(table.lookup(1).is_none());
    });
}

#[test]
fn concurrent_imports_get_the_same_cell() {
    loom::model(|| {
        let table = loom::sync::Arc::new(T::new());
        let drops = loom::sync::Arc::new(AtomicUsize::new(0));
        let handles: Vec<_> = (0..2)
            .map(|_| {
                let (t, d) = (table.clone(), drops.clone());
                thread::spawn(move || t.get_or_insert_with(1, || (cell(&t, &d), ())))
            })
            .collect();
        let cells: Vec<Arc<Cell>> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        assert!(Arc::ptr_eq(&cells[0], &cells[1]));
        drop(cells);
        assert_eq!(drops.load(Ordering::SeqCst), 1, "exactly one cell was made and freed");
        assert_eq!(table.live(), 0);
    });
}

#[test]
fn a_fetch_is_claimed_once() {
    loom::model(|| {
        let claim = loom::sync::Arc::new(Claim::new());
        let wins = loom::sync::Arc::new(AtomicUsize::new(0));
        let handles: Vec<_> = (0..2)
            .map(|_| {
                let (c, w) = (claim.clone(), wins.clone());
                thread::spawn(move || {
                    if c.claim() {
                        w.fetch_add(1, Ordering::SeqCst);
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        assert_eq!(wins.load(Ordering::SeqCst), 1);
    });
}

#[test]
fn a_local_export_displaces_a_remote_cell_even_while_it_drops() {
    loom::model(|| {
        let table = loom::sync::Arc::new(T::new());
        let drops = loom::sync::Arc::new(AtomicUsize::new(0));
        let remote = cell(&table, &drops);
        table.insert_if_vacant(1, &remote, ());
        let local = cell(&table, &drops);

        // The remote cell's last ref drops while the local one is exported
        // over it (`keep` rejects the remote cell, as `Cluster::export` does).
        let dropper = thread::spawn(move || drop(remote));
        table.insert_unless(1, &local, (), |_| false);
        dropper.join().unwrap();

        // Whatever the order, the local cell is what the id finds now.
        let found = table.lookup(1).expect("the local cell is registered");
        assert!(Arc::ptr_eq(&found.0, &local));
        drop(found);
        drop(local);
        assert!(table.lookup(1).is_none());
    });
}
