//! The lineage cap: lineage records past `lineage_capacity` are dropped,
//! oldest first; an object that was evicted and lost its record fails with
//! `Error::LineageEvicted`, never a wrong value, and the counters add up.

use manta::{Error, ObjectRef, Runtime};

const MB: usize = 1 << 20;

/// Every task made here has the same closure type, so the same record size.
fn make(rt: &Runtime, fill: u8) -> ObjectRef<Vec<u8>> {
    rt.task().rerunnable().name(format!("make-{fill}")).spawn(move || vec![fill; MB])
}

/// A runtime with room for one 1 MB object and no spill directory (so
/// evicted task objects are dropped and rebuilt from lineage).
fn runtime(lineage_capacity: usize) -> Runtime {
    Runtime::builder()
        .num_cpus(2)
        .store_capacity(MB + MB / 2)
        .lineage_capacity(lineage_capacity)
        .build()
        .expect("runtime")
}

fn record_bytes() -> usize {
    let rt = runtime(usize::MAX);
    let r = make(&rt, 0);
    assert_eq!(r.get().unwrap().len(), MB);
    let bytes = rt.store_stats().lineage_bytes;
    assert!(bytes > 0, "a re-runnable task's charged output keeps a lineage record");
    // The worker publishes the result a moment before it lets go of its
    // handle to the output: wait for that, so `r` is the last one.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while r.ref_counts().handles > 1 {
        assert!(std::time::Instant::now() < deadline, "the worker kept its handle: {:?}", r.ref_counts());
        std::thread::yield_now();
    }
    drop(r);
    assert_eq!(rt.store_stats().lineage_bytes, 0, "the record goes with its object");
    bytes
}

#[test]
fn past_the_cap_the_oldest_record_goes_and_its_evicted_object_is_lost() {
    let one = record_bytes();
    let rt = runtime(2 * one + one / 2); // room for two records
    let a = make(&rt, 1);
    assert_eq!(a.get().unwrap()[0], 1);
    let b = make(&rt, 2); // pushes `a` out of memory (records: a, b)
    assert_eq!(b.get().unwrap()[0], 2);
    let st = rt.store_stats();
    assert_eq!((st.evictions, st.lineage_evictions, st.lineage_bytes), (1, 0, 2 * one), "{st:?}");
    let c = make(&rt, 3); // pushes `b` out; c's record drops a's, the oldest
    assert_eq!(c.get().unwrap()[0], 3);
    let st = rt.store_stats();
    assert_eq!((st.evictions, st.lineage_evictions, st.lineage_bytes), (2, 1, 2 * one), "{st:?}");
    match a.get() {
        Err(Error::LineageEvicted { task, .. }) => assert_eq!(&*task, "make-1"),
        other => panic!("expected LineageEvicted, got {other:?}"),
    }
    // `b` kept its record: it is rebuilt, with the right value.
    assert_eq!(b.get().unwrap()[0], 2);
    assert_eq!(rt.store_stats().reconstructions, 1);
}

#[test]
fn within_the_cap_every_evicted_object_is_rebuilt() {
    let rt = runtime(usize::MAX);
    let refs: Vec<_> = (0..5).map(|i| make(&rt, i)).collect();
    for (i, r) in refs.iter().enumerate() {
        assert_eq!(r.get().unwrap()[0], i as u8);
    }
    for (i, r) in refs.iter().enumerate().rev() {
        assert_eq!(r.get().unwrap()[0], i as u8);
    }
    let st = rt.store_stats();
    assert_eq!(st.lineage_evictions, 0, "{st:?}");
    assert!(st.reconstructions > 0, "{st:?}");
    drop(refs);
    assert_eq!(rt.store_stats().lineage_bytes, 0);
}
