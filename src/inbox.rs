//! The dispatch inbox: a bounded ring where a job submitted while every
//! runner place is busy waits, without the dispatch lock, until a runner
//! takes it into the queue (`dispatch` owns the protocol around it and
//! model-checks both with loom, `tests/loom_dispatch.rs`).
//!
//! # Protocol
//! Many producers, one consumer at a time (the caller serializes pops:
//! `dispatch` pops only under its lock). Each slot has a sequence number;
//! slot `i` starts at `i`. Position `p` lives in slot `p % CAPACITY`.
//! - A producer reads `tail = p` and the slot's `seq`: if `seq == p` the
//!   slot is free for position `p`; it claims `p` with a compare-exchange
//!   on `tail`, writes the value, then stores `seq = p + 1` (Release). If
//!   `seq < p` the slot still holds the value from a lap ago: the ring is
//!   full and the job is handed back (the caller takes the lock instead).
//! - The consumer at `head = p` takes the value only if `seq == p + 1`
//!   (Acquire: the write is visible), then stores `seq = p + CAPACITY`
//!   (Release: the slot is free for the next lap) and `head = p + 1`.
//!
//! This is Vyukov's bounded queue with a single consumer. The consumer
//! touches no line a producer writes except the slot it reads, and pays
//! no fence and no read-modify-write per job.
//!
//! Invariants: a slot's value is written once per lap, before its `seq`
//! says so, and read once, after; values come out in the order their
//! positions were claimed; a value pushed while the consumer is looking
//! may be seen by the next pop only (a producer that has claimed a
//! position but not yet written it holds back the ones behind it until it
//! has: `dispatch` relies on each producer's own check after its push, see
//! there).

#![allow(unsafe_code)]

use crate::sync::{AtomicUsize, Ordering, UnsafeCell};
use std::mem::MaybeUninit;

/// Slots in the ring (small under loom, so that models reach a full ring).
#[cfg(not(loom))]
pub const CAPACITY: usize = 256;
/// Slots in the ring (small under loom, so that models reach a full ring).
#[cfg(loom)]
pub const CAPACITY: usize = 2;

/// An atomic on a cache line of its own (producers write `tail` on every
/// push; the consumer writes `head`).
#[repr(align(128))]
struct Padded(AtomicUsize);

struct Slot<J> {
    seq: AtomicUsize,
    value: UnsafeCell<MaybeUninit<J>>,
}

/// A bounded lock-free ring of jobs: many producers, one consumer at a
/// time (module docs).
pub(crate) struct Inbox<J> {
    tail: Padded,
    head: Padded,
    slots: Box<[Slot<J>]>,
}

// SAFETY: a slot's value is written only by the producer that claimed its
// position (one per lap, by the compare-exchange on `tail`) and read only
// by the one consumer after `seq` says it was written (Acquire after the
// producer's Release); so values move between threads (`J: Send`) and are
// never shared.
unsafe impl<J: Send> Sync for Inbox<J> {}
// SAFETY: the ring owns its values.
unsafe impl<J: Send> Send for Inbox<J> {}

impl<J> Inbox<J> {
    /// An empty ring of [`CAPACITY`] slots.
    pub fn new() -> Inbox<J> {
        let slots = (0..CAPACITY)
            .map(|i| Slot { seq: AtomicUsize::new(i), value: UnsafeCell::new(MaybeUninit::uninit()) })
            .collect();
        Inbox { tail: Padded(AtomicUsize::new(0)), head: Padded(AtomicUsize::new(0)), slots }
    }

    /// Appends `job`; hands it back if the ring is full.
    #[inline]
    pub fn push(&self, job: J) -> Result<(), J> {
        let mut pos = self.tail.0.load(Ordering::Relaxed);
        loop {
            let slot = &self.slots[pos % CAPACITY];
            let seq = slot.seq.load(Ordering::Acquire);
            if seq == pos {
                match self.tail.0.compare_exchange(pos, pos.wrapping_add(1), Ordering::Relaxed, Ordering::Relaxed) {
                    Ok(_) => {
                        // SAFETY: position `pos` is ours (the exchange), and
                        // `seq == pos` says the consumer is done with the
                        // slot's previous value (its Release, our Acquire);
                        // nobody reads it until the store below.
                        slot.value.with_mut(|p| unsafe { (*p).write(job) });
                        slot.seq.store(pos.wrapping_add(1), Ordering::Release);
                        return Ok(());
                    }
                    Err(now) => pos = now,
                }
            } else if (seq.wrapping_sub(pos) as isize) < 0 {
                // The slot still holds the value of position `pos - CAPACITY`.
                return Err(job);
            } else {
                // Another producer claimed `pos` meanwhile.
                pos = self.tail.0.load(Ordering::Relaxed);
            }
        }
    }

    /// Takes the oldest value, if it has been written. The caller makes
    /// sure no other pop runs at the same time (module docs).
    #[inline]
    pub fn pop(&self) -> Option<J> {
        let pos = self.head.0.load(Ordering::Relaxed);
        let slot = &self.slots[pos % CAPACITY];
        if slot.seq.load(Ordering::Acquire) != pos.wrapping_add(1) {
            return None;
        }
        // SAFETY: `seq == pos + 1`: the producer of `pos` wrote the value
        // (its Release, our Acquire), and we are the one consumer, so it is
        // read once; the store below hands the slot back.
        let job = slot.value.with_mut(|p| unsafe { (*p).assume_init_read() });
        slot.seq.store(pos.wrapping_add(CAPACITY), Ordering::Release);
        self.head.0.store(pos.wrapping_add(1), Ordering::Relaxed);
        Some(job)
    }

    /// True if the oldest position holds no written value yet (a hint,
    /// from any thread: a push may land right after).
    #[inline]
    pub fn is_empty(&self) -> bool {
        let pos = self.head.0.load(Ordering::Relaxed);
        self.slots[pos % CAPACITY].seq.load(Ordering::Acquire) != pos.wrapping_add(1)
    }
}

impl<J> Drop for Inbox<J> {
    fn drop(&mut self) {
        // Every claimed position was written (pushes finish before the
        // ring can be dropped): drop what is left.
        while self.pop().is_some() {}
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    /// Values come out in order across laps; a full ring hands the value
    /// back; what is left is dropped with the ring.
    #[test]
    fn fifo_across_laps_full_ring_refuses_and_leftovers_are_dropped() {
        let ring = Inbox::new();
        for lap in 0..3 {
            for i in 0..CAPACITY {
                assert!(ring.push(lap * CAPACITY + i).is_ok());
            }
            assert_eq!(ring.push(usize::MAX), Err(usize::MAX), "full");
            for i in 0..CAPACITY {
                assert_eq!(ring.pop(), Some(lap * CAPACITY + i));
            }
            assert!(ring.is_empty());
            assert_eq!(ring.pop(), None);
        }
        let counted = std::sync::Arc::new(());
        let ring = Inbox::new();
        for _ in 0..3 {
            assert!(ring.push(counted.clone()).is_ok());
        }
        assert!(!ring.is_empty());
        drop(ring);
        assert_eq!(std::sync::Arc::strong_count(&counted), 1, "the leftovers were dropped");
    }

    /// Many producers, one consumer: every value comes out once, and each
    /// producer's values in its order.
    #[test]
    fn concurrent_producers_lose_nothing() {
        const EACH: usize = 20_000;
        let ring = std::sync::Arc::new(Inbox::new());
        let producers: Vec<_> = (0..3)
            .map(|t| {
                let ring = ring.clone();
                std::thread::spawn(move || {
                    for i in 0..EACH {
                        let mut v = (t, i);
                        while let Err(back) = ring.push(v) {
                            v = back;
                            std::thread::yield_now();
                        }
                    }
                })
            })
            .collect();
        let mut next = [0usize; 3];
        let mut got = 0;
        while got < 3 * EACH {
            match ring.pop() {
                Some((t, i)) => {
                    assert_eq!(i, next[t], "producer {t}'s values out of order");
                    next[t] += 1;
                    got += 1;
                }
                None => std::thread::yield_now(),
            }
        }
        producers.into_iter().for_each(|p| p.join().expect("producer"));
        assert!(ring.is_empty());
    }
}
