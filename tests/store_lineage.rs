//! Lineage: objects made by re-runnable tasks are dropped under memory
//! pressure (no spill directory) and rebuilt on the next `get` by running
//! their task again, recursively through evicted inputs, and only what was
//! evicted; lineage goes when the object is freed; objects that cannot be
//! rebuilt give an error, never a wrong value.

mod common;
use common::*;

use manta::{Error, Runtime};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// The next object in a chain: checks the input and derives `10 * i + k`.
fn derive(input: &[u8], k: usize) -> Vec<u8> {
    let i = u64::from_le_bytes(input[..8].try_into().expect("header")) as usize;
    check(i, MB, input);
    make(10 * i + k, MB)
}

fn counter() -> Arc<AtomicUsize> {
    Arc::new(AtomicUsize::new(0))
}

fn runs(c: &AtomicUsize) -> usize {
    c.load(Ordering::SeqCst)
}

/// A runtime without a spill directory whose store holds one 1 MB object.
fn one_object_rt() -> Runtime {
    Runtime::builder().num_cpus(2).store_capacity(charged(MB) + MB / 2).build().expect("runtime")
}

/// Waits (bounded, yielding) for something another thread does right after
/// the event the test waited for; the bound only turns a hang into a failure.
fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !cond() {
        assert!(std::time::Instant::now() < deadline, "never happened: {what}");
        std::thread::yield_now();
    }
}

/// Pushes every other object out: a re-runnable filler task takes the only
/// slot (it waits for the current occupant to be dropped for lineage).
fn evict_all(rt: &Runtime, i: usize) -> manta::ObjectRef<Vec<u8>> {
    let x = rt.task().rerunnable().name("filler").spawn(move || make(i, MB));
    check(i, MB, &x.get().expect("filler"));
    x
}

#[test]
fn a_three_level_dag_is_rebuilt_running_only_what_was_evicted() {
    let rt = one_object_rt();
    let (na, nb, nc) = (counter(), counter(), counter());
    let (ca, cb, cc) = (na.clone(), nb.clone(), nc.clone());
    let a = rt.task().rerunnable().name("a").spawn(move || {
        ca.fetch_add(1, Ordering::SeqCst);
        make(1, MB)
    });
    let b = rt.task().rerunnable().name("b").spawn_with((a.clone(),), move |(a,)| {
        cb.fetch_add(1, Ordering::SeqCst);
        derive(&a, 2)
    });
    let c = rt.task().rerunnable().name("c").spawn_with((b.clone(),), move |(b,)| {
        cc.fetch_add(1, Ordering::SeqCst);
        derive(&b, 3)
    });

    // Room for one object: computing c pushed a, then b, out.
    check(123, MB, &c.get().expect("c"));
    let st = rt.store_stats();
    assert_eq!((runs(&na), runs(&nb), runs(&nc)), (1, 1, 1));
    assert_eq!((st.evictions, st.reconstructions, st.objects_in_memory), (2, 0, 1), "{st:?}");
    check(123, MB, &c.get().expect("c again")); // in memory: nothing runs
    assert_eq!((runs(&na), runs(&nb), runs(&nc)), (1, 1, 1));

    // A filler pushes c out too: a, b and c are all evicted.
    let _x = evict_all(&rt, 9);
    assert_eq!(rt.store_stats().evictions, 3);

    // b needs a: both run again, c does not.
    check(12, MB, &b.get().expect("b after eviction"));
    assert_eq!((runs(&na), runs(&nb), runs(&nc)), (2, 2, 1));
    assert_eq!(rt.store_stats().reconstructions, 2);

    // c was evicted and nothing brought it back: it runs again, and so do
    // b and a if they are out (the store has room for one of them).
    let before = rt.store_stats().reconstructions;
    check(123, MB, &c.get().expect("c after eviction"));
    let (ra, rb, rc) = (runs(&na), runs(&nb), runs(&nc));
    assert_eq!(rc, 2, "c was out of memory, it must run again");
    assert!(rb <= 3 && ra <= 3 && (ra == 2 || rb == 3), "a reran without b: a={ra} b={rb}");
    let rebuilt = rt.store_stats().reconstructions - before;
    assert_eq!((ra - 2) + (rb - 2) + 1, rebuilt as usize, "one run per reconstruction");
    assert_eq!(rt.store_stats().reconstructions as usize, (ra - 1) + (rb - 1) + (rc - 1));

    drop((a, b, c, _x));
    let st = rt.store_stats();
    assert_eq!((st.bytes_in_memory, st.objects_in_memory), (0, 0), "{st:?}");
}

/// An input whose drop is observable.
struct Tracked {
    bytes: Vec<u8>,
    dropped: Arc<AtomicBool>,
}

impl Drop for Tracked {
    fn drop(&mut self) {
        self.dropped.store(true, Ordering::SeqCst);
    }
}

#[test]
fn lineage_keeps_inputs_alive_until_the_object_is_freed() {
    let rt = one_object_rt();
    let dropped = Arc::new(AtomicBool::new(false));
    let input = rt.put(Tracked { bytes: make(5, 1000), dropped: dropped.clone() }).expect("put input");
    let n = counter();
    let counted = n.clone();
    // The input ref moves into the task: the lineage holds the only handle.
    let out = rt.task().rerunnable().name("uses-input").spawn_with((input,), move |(t,)| {
        counted.fetch_add(1, Ordering::SeqCst);
        check(5, 1000, &t.bytes);
        make(50, MB)
    });
    check(50, MB, &out.get().expect("out"));
    assert!(!dropped.load(Ordering::SeqCst), "the input was freed while its output's lineage needs it");

    // Evicted and rebuilt from the lineage, with the input it kept.
    let x = evict_all(&rt, 51);
    assert_eq!(rt.store_stats().evictions, 1);
    check(50, MB, &out.get().expect("out rebuilt"));
    assert_eq!(runs(&n), 2);
    assert!(!dropped.load(Ordering::SeqCst));

    // Freeing the output drops its lineage, and with it the input.
    drop(out);
    eventually("the input is freed with its output's lineage", || dropped.load(Ordering::SeqCst));
    drop(x);

    // A one-shot task keeps no lineage: its input goes once it has run,
    // while its output is still alive.
    let dropped2 = Arc::new(AtomicBool::new(false));
    let input2 = rt.put(Tracked { bytes: make(6, 1000), dropped: dropped2.clone() }).expect("put input");
    let once = rt.spawn_with((input2,), |(t,)| {
        check(6, 1000, &t.bytes);
        make(60, MB)
    });
    check(60, MB, &once.get().expect("one-shot"));
    eventually("a one-shot task's input is freed after it ran", || dropped2.load(Ordering::SeqCst));
    check(60, MB, &once.get().expect("one-shot output still there"));
}

/// A rebuild that panics gives the task's error, never a wrong value.
#[test]
fn a_rebuild_that_panics_is_an_error_naming_the_task() {
    let rt = one_object_rt();
    let n = counter();
    let counted = n.clone();
    let r = rt.task().rerunnable().name("flaky").spawn(move || {
        if counted.fetch_add(1, Ordering::SeqCst) > 0 {
            panic!("second run refused");
        }
        make(1, MB)
    });
    check(1, MB, &r.get().expect("first run"));
    let _x = evict_all(&rt, 2);
    match r.get() {
        Err(Error::TaskPanicked { task, message }) => {
            assert_eq!(&*task, "flaky");
            assert!(message.contains("second run refused"), "{message}");
        }
        other => panic!("expected TaskPanicked, got {:?}", other.map(|v| v.len())),
    }
    assert_eq!(runs(&n), 2);
}

/// A re-runnable task whose input was made by a one-shot task: when both
/// spill files are damaged, the rebuild fails on the input and `get` says
/// so (`DependencyFailed` caused by `ObjectLost`), never a wrong value.
#[test]
fn a_lost_one_shot_input_fails_the_rebuild_of_its_dependant() {
    let base = std::env::temp_dir().join(format!("manta-test-lineage-lost-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&base);
    std::fs::create_dir_all(&base).expect("base");
    let rt =
        Runtime::builder().num_cpus(2).store_capacity(charged(MB) + MB / 2).spill_dir(&base).build().expect("runtime");
    let file = |id: manta::ObjectId| -> PathBuf { spill_file(&rt, id) };
    let source = rt.task().name("source").spawn(|| make(1, MB));
    let derived = rt.task().rerunnable().name("derived").spawn_with((source.clone(),), |(s,)| derive(&s, 2));
    check(12, MB, &derived.get().expect("derived"));
    let filler = rt.put(make(3, MB)).expect("filler");
    for f in [file(source.id()), file(derived.id())] {
        assert!(f.exists(), "{} was not spilled", f.display());
        flip(&f, 200_000);
    }
    match derived.get() {
        Err(e) => {
            assert!(matches!(e.root_cause(), Error::ObjectLost { id, .. } if *id == source.id()), "{e:?}");
            assert!(e.to_string().contains("derived"), "{e}");
        }
        Ok(v) => panic!("a value came back from damaged files (header {:?})", &v[..8]),
    }
    assert!(matches!(source.get(), Err(Error::ObjectLost { .. })), "{:?}", source.get().map(|v| v.len()));
    check(3, MB, &filler.get().expect("filler"));
    drop((source, derived, filler));
    drop(rt);
    let _ = std::fs::remove_dir_all(&base);
}

fn flip(file: &Path, at: usize) {
    let mut bytes = std::fs::read(file).expect("read");
    bytes[at] ^= 0x5a;
    std::fs::write(file, bytes).expect("write");
}

/// A rebuild is a scheduler job like the first run: it runs on a worker
/// of the runtime (so `Runtime::current()` is set and nested tasks work),
/// and it waits for the task's resources instead of taking them by force.
#[test]
fn a_rebuild_runs_as_a_scheduler_job_with_the_tasks_resources() {
    let rt = Runtime::builder()
        .num_cpus(2)
        .resource("GPU", 1.0)
        .store_capacity(charged(MB) + MB / 2)
        .build()
        .expect("runtime");
    let (started_tx, started_rx) = std::sync::mpsc::channel::<(bool, String)>();
    let started = std::sync::Mutex::new(started_tx);
    let x = rt.task().rerunnable().name("on-gpu").resource("GPU", 1.0).spawn(move || {
        let on_worker = Runtime::current().is_some();
        let thread = std::thread::current().name().unwrap_or("").to_string();
        let _ = started.lock().unwrap().send((on_worker, thread));
        // A nested task works inside the rebuild (it needs the runtime).
        let rt = Runtime::current().expect("a rebuild runs on a worker");
        let k = *rt.task().rerunnable().cpus(0.0).spawn(|| 7u64).get().unwrap();
        make(k as usize, MB)
    });
    check(7, MB, &x.get().unwrap());
    let (on_worker, thread) = started_rx.recv().unwrap();
    assert!(on_worker && thread.starts_with("manta"), "first run on {thread}");
    let _filler = evict_all(&rt, 1);
    assert!(rt.store_stats().evictions > 0, "the filler pushed x out");

    // Hold the only GPU, then read the evicted object from another thread:
    // its rebuild must wait for the GPU.
    let (release, hold) = std::sync::mpsc::channel::<()>();
    let holder = rt.task().resource("GPU", 1.0).spawn(move || {
        let _ = hold.recv();
    });
    let reader = {
        let x = x.clone();
        std::thread::spawn(move || check(7, MB, &x.get().expect("rebuilt")))
    };
    // While the holder runs, the rebuild cannot have started.
    assert!(started_rx.try_recv().is_err(), "the rebuild ran without its GPU");
    release.send(()).unwrap();
    holder.get().unwrap();
    reader.join().unwrap();
    let (on_worker, thread) = started_rx.recv().unwrap();
    assert!(on_worker, "the rebuild ran outside the runtime's workers ({thread})");
    assert!(thread.starts_with("manta"), "rebuild on {thread}");
    assert!(rt.store_stats().reconstructions >= 1);
}
