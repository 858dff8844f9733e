//! Actor results go through the object store like task results: charged
//! against the cap, spilled to the spill directory and restored intact,
//! pinned without one (never dropped: a call cannot be re-run), and a
//! result that cannot be stored (larger than the whole store, or no room
//! within the put timeout) fails its call with `StoreFull` instead of
//! bypassing the store. Read-only calls (`call_ref`) too.

mod common;
use common::*;

use manta::{Error, Runtime};
use std::time::Duration;

const LONG: Duration = Duration::from_secs(30);

/// Room for `fits` objects of 1 MB, with a spill directory under `base`.
fn spilling_rt(base: &TempBase, fits: usize) -> Runtime {
    Runtime::builder()
        .num_cpus(2)
        .store_capacity(fits * charged(MB) + MB / 2)
        .spill_dir(&base.0)
        .put_timeout(Duration::from_millis(200))
        .build()
        .expect("runtime")
}

#[test]
fn actor_results_are_charged_spilled_and_restored() {
    // The shape of the bug: 64 MB results on a 150 MiB store showed 0 bytes
    // in memory while all of them were resident. Scaled to 1 MB / 3 MB.
    let base = TempBase::new("actor-results");
    let rt = spilling_rt(&base, 3);
    let cap = rt.store_stats().capacity;
    let actor = rt.actor(0usize);
    let refs: Vec<_> = (0..12)
        .map(|_| {
            actor.call(|n| {
                *n += 1;
                make(*n - 1, MB)
            })
        })
        .collect();
    let (ready, _) = rt.wait(&refs, refs.len(), Some(LONG)).expect("wait");
    assert_eq!(ready.len(), refs.len());
    let st = rt.store_stats();
    assert!(st.bytes_in_memory > 0, "actor results are charged: {st:?}");
    assert!(st.bytes_in_memory <= cap, "memory stays under the cap: {st:?}");
    assert!(st.spills >= 9, "the results that did not fit were spilled: {st:?}");
    assert_eq!(st.bytes_in_memory + st.bytes_spilled, 12 * charged(MB), "{st:?}");
    for (i, r) in refs.iter().enumerate() {
        check(i, MB, &r.get().expect("read back"));
    }
    let st = rt.store_stats();
    assert!(st.restores >= 9, "spilled results were read back from disk: {st:?}");
    assert!(st.bytes_in_memory <= cap, "{st:?}");
    assert_eq!(st.evictions, 0, "actor results are never dropped for lineage: {st:?}");
    drop((refs, ready));
    let st = rt.store_stats();
    assert_eq!((st.bytes_in_memory, st.bytes_spilled), (0, 0), "freed with their refs: {st:?}");
}

#[test]
fn read_only_call_results_are_charged_and_spilled_too() {
    let base = TempBase::new("actor-ref-results");
    let rt = spilling_rt(&base, 2);
    let actor = rt.actor_builder().max_concurrency(4).spawn(7usize);
    let refs: Vec<_> = (0..8).map(|i| actor.call_ref(move |n| make(*n + i, MB))).collect();
    rt.wait(&refs, refs.len(), Some(LONG)).expect("wait");
    let st = rt.store_stats();
    assert!(st.bytes_in_memory > 0 && st.bytes_in_memory <= st.capacity, "{st:?}");
    assert!(st.spills >= 6, "{st:?}");
    for (i, r) in refs.iter().enumerate() {
        check(7 + i, MB, &r.get().expect("read back"));
    }
}

#[test]
fn a_result_larger_than_the_store_fails_its_call_with_store_full() {
    let rt = Runtime::builder().num_cpus(2).store_capacity(MB).build().expect("runtime");
    let actor = rt.actor(0u32);
    let big = actor.call(|_| vec![1u8; 2 * MB]);
    match big.get() {
        Err(Error::StoreFull { needed, capacity }) => {
            assert_eq!(needed, charged(2 * MB));
            assert_eq!(capacity, MB);
        }
        other => panic!("expected StoreFull, got {:?}", other.map(|v| v.len())),
    }
    let big_ref = rt.actor_builder().spawn(()).call_ref(|_| vec![2u8; 2 * MB]);
    assert!(matches!(big_ref.get(), Err(Error::StoreFull { .. })));
    // The actor is not harmed: the call ran, only its result had no room.
    assert_eq!(*actor.call(|n| *n + 1).get().expect("next call"), 1);
    assert_eq!(rt.store_stats().bytes_in_memory, 0);
}

#[test]
fn without_a_spill_dir_results_are_pinned_and_a_full_store_fails_the_call() {
    let rt = Runtime::builder()
        .num_cpus(2)
        .store_capacity(3 * charged(MB) + MB / 2)
        .put_timeout(Duration::from_millis(20))
        .build()
        .expect("runtime");
    let actor = rt.actor(0usize);
    let kept: Vec<_> = (0..3).map(|i| actor.call(move |_| make(i, MB))).collect();
    let over = actor.call(|_| make(99, MB));
    assert!(matches!(over.get(), Err(Error::StoreFull { .. })), "no room, nothing to move out");
    for (i, r) in kept.iter().enumerate() {
        check(i, MB, &r.get().expect("pinned results are intact"));
    }
    let st = rt.store_stats();
    assert_eq!((st.objects_in_memory, st.evictions, st.spills), (3, 0, 0), "{st:?}");
    drop(kept);
    assert_eq!(*actor.call(|_| make(5, MB)).get().expect("room again").first().unwrap(), 5);
}
