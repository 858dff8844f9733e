#![cfg(loom)]
//! Loom models of the single-writer event log (`src/eventlog.rs`), which
//! each thread's timeline events go through: one writer appends without a
//! lock while readers snapshot and clear from other threads. Properties
//! checked, over every interleaving loom explores (chunks hold
//! [`CHUNK`] = 2 values under loom, so three appends cross a chunk):
//! - **Prefix**: a snapshot taken while the writer appends is a prefix of
//!   what it appends, in order, and never reads a slot being written
//!   (loom checks the slots' cells for races).
//! - **Clear**: a value appended after the writer learned of a clear is
//!   kept; values appended before it are gone; every value is dropped
//!   exactly once (a drop counter, and loom's leak check).
//! - **Seeded bug**: publishing the count before writing the value
//!   (`Writer::push_racy`) lets a reader read a slot being written; the
//!   model must catch it.
//!
//! Run: `RUSTFLAGS="--cfg loom" LOOM_MAX_PREEMPTIONS=2 cargo test --release -p manta --test loom_eventlog`

use loom::sync::atomic::{AtomicUsize, Ordering};
use loom::sync::Arc;
use loom::thread;
use manta::protocols::{EventLog, CHUNK};

/// A value that counts its drops.
#[derive(Debug)]
struct Counted {
    n: u32,
    drops: Arc<AtomicUsize>,
}

impl Clone for Counted {
    fn clone(&self) -> Self {
        // A snapshot's copy is not an appended value: counted apart.
        Counted { n: self.n, drops: Arc::new(AtomicUsize::new(0)) }
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.drops.fetch_add(1, Ordering::Relaxed);
    }
}

fn ns(v: &[Counted]) -> Vec<u32> {
    v.iter().map(|c| c.n).collect()
}

#[test]
fn a_snapshot_during_appends_is_an_ordered_prefix() {
    assert_eq!(CHUNK, 2, "the model crosses a chunk with three appends");
    loom::model(|| {
        let drops = Arc::new(AtomicUsize::new(0));
        let (log, mut w) = EventLog::with_writer();
        let d = drops.clone();
        let h = thread::spawn(move || {
            for n in 0..3 {
                w.push(Counted { n, drops: d.clone() });
            }
            w
        });
        let seen = ns(&log.snapshot());
        assert_eq!(seen, (0..seen.len() as u32).collect::<Vec<_>>(), "a prefix, in order");
        let w = h.join().unwrap();
        assert_eq!(ns(&log.snapshot()), [0, 1, 2], "every value once the writer is done");
        drop((w, log));
        assert_eq!(drops.load(Ordering::Relaxed), 3, "each appended value dropped once");
    });
}

#[test]
fn a_clear_racing_appends_keeps_later_values_and_drops_each_once() {
    loom::model(|| {
        let drops = Arc::new(AtomicUsize::new(0));
        let (log, mut w) = EventLog::with_writer();
        w.push(Counted { n: 0, drops: drops.clone() });
        let reader = log.clone();
        let h = thread::spawn(move || reader.clear());
        w.push(Counted { n: 1, drops: drops.clone() });
        w.push(Counted { n: 2, drops: drops.clone() });
        h.join().unwrap();
        // The join orders the clear before this append: it must stay.
        w.push(Counted { n: 3, drops: drops.clone() });
        let seen = ns(&log.snapshot());
        assert_eq!(seen.last(), Some(&3), "an append after the clear is kept: {seen:?}");
        assert!(!seen.contains(&0), "the value before the clear is gone: {seen:?}");
        assert!(seen.windows(2).all(|p| p[0] < p[1]), "in order: {seen:?}");
        drop((w, log));
        assert_eq!(drops.load(Ordering::Relaxed), 4, "each appended value dropped once");
    });
}

#[test]
fn a_second_writer_is_refused_until_the_first_is_gone() {
    loom::model(|| {
        let (log, w) = EventLog::<u32>::with_writer();
        let other = log.clone();
        let h = thread::spawn(move || other.writer().is_some());
        let got = h.join().unwrap();
        assert!(!got, "the first writer is alive");
        drop(w);
        assert!(log.writer().is_some());
    });
}

#[test]
#[should_panic]
fn the_model_catches_publishing_before_writing() {
    loom::model(|| {
        let (log, mut w) = EventLog::with_writer();
        let h = thread::spawn(move || {
            w.push_racy(1u32);
            w
        });
        let _ = log.snapshot();
        drop(h.join().unwrap());
    });
}
