//! The objects API: `rt.free` (Ray's `internal_api.free`) drops values,
//! spill files and lineage now and readers get `ObjectFreed`; `rt.contains`
//! says whether the runtime can still give the value (or error); ref counts
//! for debugging leaks (`handles`, `task_uses`, `borrowers`); per-task
//! lineage control (`lineage(false)`, `max_reconstructions(n)`); an
//! object's id, drawn when first asked for, is one id whoever asks.

mod common;
use common::*;

use manta::{Error, ObjectRef, Runtime};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

const LONG: Duration = Duration::from_secs(30);

fn spilling_rt(base: &TempBase, fits: usize) -> Runtime {
    Runtime::builder()
        .num_cpus(2)
        .store_capacity(fits * charged(MB) + MB / 2)
        .spill_dir(&base.0)
        .put_timeout(Duration::from_millis(200))
        .build()
        .expect("runtime")
}

/// No spill directory: room for `fits` objects of 1 MB.
fn memory_rt(fits: usize) -> Runtime {
    Runtime::builder()
        .num_cpus(2)
        .store_capacity(fits * charged(MB) + MB / 2)
        .put_timeout(Duration::from_millis(50))
        .build()
        .expect("runtime")
}

fn files_in(rt: &Runtime) -> usize {
    std::fs::read_dir(rt.spill_dir().expect("spill dir")).expect("read").count()
}

fn counter() -> Arc<AtomicUsize> {
    Arc::new(AtomicUsize::new(0))
}

/// Submits, with builder `b`, a re-runnable task that counts its runs in
/// `runs` and makes object `i`.
fn make_counted(b: manta::TaskBuilder<'_, manta::Rerunnable>, runs: &Arc<AtomicUsize>, i: usize) -> ObjectRef<Vec<u8>> {
    let r = runs.clone();
    b.spawn(move || {
        r.fetch_add(1, Ordering::SeqCst);
        make(i, MB)
    })
}

fn assert_freed<T: std::fmt::Debug + Send + Sync + 'static>(r: &ObjectRef<T>) {
    match r.get() {
        Err(Error::ObjectFreed { id }) => assert_eq!(id, r.id()),
        other => panic!("expected ObjectFreed, got {other:?}"),
    }
}

#[test]
fn free_drops_memory_and_spill_files_and_readers_get_object_freed() {
    let base = TempBase::new("free-spilled");
    let rt = spilling_rt(&base, 2);
    let refs: Vec<_> = (0..5).map(|i| rt.put(make(i, MB)).expect("put")).collect();
    let st = rt.store_stats();
    assert!(st.objects_spilled >= 3 && files_in(&rt) == st.objects_spilled, "{st:?}");
    let (in_mem, spilled) = (&refs[4], &refs[0]);
    assert!(rt.contains(in_mem) && rt.contains(spilled));
    rt.free(&refs);
    let st = rt.store_stats();
    assert_eq!((st.bytes_in_memory, st.objects_in_memory), (0, 0), "{st:?}");
    assert_eq!((st.bytes_spilled, st.objects_spilled), (0, 0), "{st:?}");
    assert_eq!(files_in(&rt), 0, "spill files removed");
    for r in &refs {
        assert_freed(r);
        assert!(!rt.contains(r));
        assert!(r.is_ready(), "a freed ref is still a valid, done handle");
    }
    rt.free(&refs); // twice is harmless
                    // Untyped refs, and a reader holding the value keeps it.
    let held = rt.put(make(9, MB)).expect("put");
    let value = held.get().expect("get");
    rt.free(&[held.untyped()]);
    check(9, MB, &value);
    assert_freed(&held);
    assert_eq!(rt.store_stats().bytes_in_memory, 0);
}

#[test]
fn a_freed_object_is_not_rebuilt_and_its_lineage_goes() {
    let rt = memory_rt(1);
    let runs = counter();
    let r = make_counted(rt.task().rerunnable().name("counted"), &runs, 1);
    check(1, MB, &r.get().expect("first"));
    assert!(rt.store_stats().lineage_bytes > 0);
    let filler = rt.task().rerunnable().spawn(|| make(2, MB)); // evicts r (it has lineage)
    check(2, MB, &filler.get().expect("filler"));
    assert_eq!(rt.store_stats().evictions, 1);
    assert!(rt.contains(&r), "evicted but rebuildable");
    rt.free(std::slice::from_ref(&r));
    assert!(!rt.contains(&r));
    assert_freed(&r);
    assert_eq!(runs.load(Ordering::SeqCst), 1, "not re-run");
    drop(filler);
    assert_eq!(rt.store_stats().lineage_bytes, 0, "its record went with the free");
}

#[test]
fn freeing_a_pending_object_fails_it_and_its_dependants_at_once() {
    // One CPU: the task after it starts only once its job (result included)
    // is finished, so the store's bytes can be checked after that.
    let rt = Runtime::builder().num_cpus(1).store_capacity(4 * MB).build().expect("runtime");
    let (gate, rx) = mpsc::channel::<()>();
    let (ran_tx, ran) = mpsc::channel::<()>();
    let pending = rt.spawn(move || {
        let _ = rx.recv();
        ran_tx.send(()).unwrap();
        make(3, MB)
    });
    let dependant = rt.spawn_with((pending.clone(),), |(v,)| v.len());
    assert!(!rt.contains(&pending), "nothing held while pending");
    rt.free(std::slice::from_ref(&pending));
    assert_freed(&pending);
    match dependant.get() {
        Err(e @ Error::DependencyFailed { .. }) => assert!(matches!(e.root_cause(), Error::ObjectFreed { .. })),
        other => panic!("expected DependencyFailed, got {other:?}"),
    }
    gate.send(()).unwrap();
    ran.recv_timeout(LONG).expect("the task still runs");
    assert_freed(&pending);
    let done = rt.spawn(|| 1u8);
    done.get().expect("the next task runs after it");
    assert_eq!(rt.store_stats().bytes_in_memory, 0, "the late result was dropped");
}

#[test]
fn contains_follows_the_object_through_its_states() {
    let base = TempBase::new("contains");
    let rt = spilling_rt(&base, 1);
    let (gate, rx) = mpsc::channel::<()>();
    let pending = rt.spawn(move || {
        let _ = rx.recv();
        1u32
    });
    assert!(!rt.contains(&pending));
    gate.send(()).unwrap();
    pending.get().unwrap();
    assert!(rt.contains(&pending), "ready");
    let failed = rt.task().rerunnable().spawn(|| -> u32 { panic!("kept error") });
    rt.wait(std::slice::from_ref(&failed), 1, Some(LONG)).unwrap();
    assert!(rt.contains(&failed), "its error is what it holds");
    let spilled = rt.put(make(1, MB)).unwrap();
    let _filler = rt.put(make(2, MB)).unwrap();
    assert!(spill_file(&rt, spilled.id()).exists());
    assert!(rt.contains(&spilled), "spilled");
    std::fs::remove_file(spill_file(&rt, spilled.id())).unwrap();
    assert!(matches!(spilled.get(), Err(Error::ObjectLost { .. })));
    assert!(!rt.contains(&spilled), "known lost");
    assert!(failed.get().is_err());
}

/// Every task made here has the same closure type, so the same record size.
fn filled(rt: &Runtime, fill: u8) -> ObjectRef<Vec<u8>> {
    rt.task().rerunnable().name(format!("filled-{fill}")).spawn(move || vec![fill; MB])
}

fn lineage_rt(lineage_capacity: usize) -> Runtime {
    Runtime::builder()
        .num_cpus(2)
        .store_capacity(MB + MB / 2)
        .lineage_capacity(lineage_capacity)
        .build()
        .expect("runtime")
}

#[test]
fn contains_is_false_once_an_evicted_object_lost_its_lineage() {
    let one = {
        let rt = lineage_rt(usize::MAX);
        let r = filled(&rt, 0);
        r.get().unwrap();
        rt.store_stats().lineage_bytes
    };
    let rt = lineage_rt(2 * one + one / 2); // room for two records
    let a = filled(&rt, 1);
    a.get().unwrap();
    let b = filled(&rt, 2); // evicts a
    b.get().unwrap();
    assert!(rt.contains(&a), "evicted, rebuildable");
    let c = filled(&rt, 3); // evicts b; c's record drops a's
    c.get().unwrap();
    assert_eq!(rt.store_stats().lineage_evictions, 1);
    assert!(!rt.contains(&a), "evicted and its record is gone");
    assert!(rt.contains(&b), "b kept its record");
    assert!(matches!(a.get(), Err(Error::LineageEvicted { .. })));
    assert!(!rt.contains(&a));
}

#[test]
fn ref_counts_tell_handles_from_task_arguments_and_borrowers() {
    let rt = memory_rt(8);
    let r = rt.put(5u32).unwrap();
    assert_eq!((r.ref_counts().handles, r.ref_counts().task_uses, r.ref_counts().borrowers), (1, 0, 0));
    let copy = r.clone();
    let any = r.untyped();
    assert_eq!(r.ref_counts().handles, 3);
    drop((copy, any));
    assert_eq!(r.ref_counts().handles, 1);
    // A queued task holding it as an argument (twice), and an actor call
    // waiting for another input.
    let (gate, rx) = mpsc::channel::<()>();
    let blocker = rt.spawn(move || {
        let _ = rx.recv();
        1u32
    });
    let task = rt.spawn_with((r.clone(), r.clone(), blocker.clone()), |(a, b, c)| *a + *b + *c);
    let actor = rt.actor(0u32);
    let call = actor.call_with((r.clone(), blocker.clone()), |n, (a, b)| *n + *a + *b);
    let counts = r.ref_counts();
    assert_eq!((counts.handles, counts.task_uses), (1, 3), "{counts:?}");
    gate.send(()).unwrap();
    assert_eq!((*task.get().unwrap(), *call.get().unwrap()), (11, 6));
    let counts = r.ref_counts();
    assert_eq!((counts.handles, counts.task_uses), (1, 0), "arguments let go once run: {counts:?}");
    // A re-runnable task whose output is kept for lineage keeps its input.
    let input = rt.put(make(1, MB)).unwrap();
    let out = rt.task().rerunnable().spawn_with((input.clone(),), |(v,)| v.to_vec());
    out.get().unwrap();
    assert_eq!(input.ref_counts().task_uses, 1, "held by the lineage record");
    drop(out);
    assert_eq!(input.ref_counts().task_uses, 0);
    // Borrowers are reported by the cluster layer, for objects that left
    // the runtime (exported), never negative.
    let b = rt.backend();
    b.add_borrowers(&r.untyped(), 2);
    assert_eq!(r.ref_counts().borrowers, 0, "not exported: no borrowers");
    b.export_object(&r);
    b.add_borrowers(&r.untyped(), 2);
    assert_eq!(r.ref_counts().borrowers, 2);
    b.add_borrowers(&r.untyped(), -5);
    assert_eq!(r.ref_counts().borrowers, 0);
    // Once done, nothing of the runtime holds a task's output any more.
    let made = rt.spawn(|| 3u32);
    made.get().unwrap();
    assert_eq!((made.ref_counts().handles, made.ref_counts().task_uses), (1, 0));
    // A future is a handle too.
    let fut = std::future::IntoFuture::into_future(r.clone());
    assert_eq!(r.ref_counts().handles, 2);
    drop(fut);
    assert_eq!(r.ref_counts().handles, 1);
}

#[test]
fn lineage_false_keeps_the_output_pinned_instead_of_rebuilding_it() {
    let rt = memory_rt(2);
    let (pinned_runs, rebuilt_runs) = (counter(), counter());
    let pinned = make_counted(rt.task().rerunnable().name("pinned").lineage(false), &pinned_runs, 1);
    let rebuildable = make_counted(rt.task().rerunnable().name("rebuildable"), &rebuilt_runs, 2);
    rt.wait(&[pinned.clone(), rebuildable.clone()], 2, Some(LONG)).unwrap();
    let filler = rt.put(make(3, MB)).expect("room by evicting the rebuildable one");
    let st = rt.store_stats();
    assert_eq!(st.evictions, 1, "{st:?}");
    assert!(pinned.untyped().stored_bytes().is_some(), "lineage(false): stays in memory");
    assert!(rebuildable.untyped().stored_bytes().is_none(), "dropped to be rebuilt");
    check(1, MB, &pinned.get().unwrap());
    check(2, MB, &rebuildable.get().unwrap());
    assert_eq!((pinned_runs.load(Ordering::SeqCst), rebuilt_runs.load(Ordering::SeqCst)), (1, 2));
    drop(filler);
}

#[test]
fn max_reconstructions_caps_rebuilds_then_the_object_is_pinned() {
    let rt = memory_rt(1);
    let runs = counter();
    let r = make_counted(rt.task().rerunnable().name("capped").max_reconstructions(1), &runs, 1);
    check(1, MB, &r.get().unwrap());
    let f1 = rt.task().rerunnable().spawn(|| make(2, MB)); // evicts r
    check(2, MB, &f1.get().unwrap());
    drop(f1);
    check(1, MB, &r.get().expect("first rebuild"));
    assert_eq!(runs.load(Ordering::SeqCst), 2);
    // Its one rebuild is used: the store no longer drops it.
    let f2 = rt.put(make(3, MB));
    assert!(f2.is_err(), "r is pinned now, so the put finds no room");
    assert!(r.untyped().stored_bytes().is_some());
    check(1, MB, &r.get().unwrap());
    assert_eq!(runs.load(Ordering::SeqCst), 2);
}

#[test]
fn a_loss_past_max_reconstructions_is_a_typed_error() {
    let base = TempBase::new("max-reconstructions");
    let rt = spilling_rt(&base, 1);
    for max in [0u32, 1] {
        let runs = counter();
        let r = make_counted(rt.task().rerunnable().name(format!("capped-{max}")).max_reconstructions(max), &runs, 1);
        check(1, MB, &r.get().unwrap());
        for round in 0..=max {
            let filler = rt.put(make(100, MB)).unwrap();
            let file = spill_file(&rt, r.id());
            assert!(file.exists(), "round {round}: spilled");
            std::fs::remove_file(file).unwrap(); // lost
            drop(filler);
            if round < max {
                check(1, MB, &r.get().expect("rebuilt within the cap"));
                continue;
            }
            match r.get() {
                Err(Error::MaxReconstructionsExceeded { id, task, max: m }) => {
                    assert_eq!((id, &*task, m), (r.id(), format!("capped-{max}").as_str(), u64::from(max)));
                }
                other => panic!("max {max}: expected MaxReconstructionsExceeded, got {:?}", other.map(|v| v.len())),
            }
            assert!(!rt.contains(&r));
        }
        assert_eq!(runs.load(Ordering::SeqCst), 1 + max as usize);
    }
}

/// An object's id is drawn when first asked for (most are never asked):
/// whichever thread asks first, every ref to it, typed or not, clone or
/// not, then and later, sees the same id, and refs compare and hash by it.
#[test]
fn an_objects_id_is_one_id_whoever_asks_first() {
    let rt = Runtime::builder().num_cpus(2).build().unwrap();
    let refs: Vec<ObjectRef<u64>> = (0..64).map(|i| rt.spawn(move || i)).collect();
    // Two threads race to draw each id first.
    let (a, b) = (refs.clone(), refs.clone());
    let ta = std::thread::spawn(move || a.iter().map(|r| r.id()).collect::<Vec<_>>());
    let tb = std::thread::spawn(move || b.iter().rev().map(|r| r.id()).collect::<Vec<_>>());
    let ids_a = ta.join().unwrap();
    let mut ids_b = tb.join().unwrap();
    ids_b.reverse();
    assert_eq!(ids_a, ids_b, "two threads drew different ids for one object");
    for (r, id) in refs.iter().zip(&ids_a) {
        assert_eq!(r.id(), *id, "the id changed");
        assert_eq!(r.clone().id(), *id);
        assert_eq!(r.untyped().id(), *id, "the untyped view has another id");
    }
    let distinct: std::collections::HashSet<_> = ids_a.iter().collect();
    assert_eq!(distinct.len(), refs.len(), "two objects share an id");
    // Equality and hashing follow the id (a clone is the same object).
    // (A ref's cell has interior mutability, but its hash is its id, fixed
    // once drawn.)
    #[allow(clippy::mutable_key_type)]
    let set: std::collections::HashSet<ObjectRef<u64>> = refs.iter().chain(refs.iter()).cloned().collect();
    assert_eq!(set.len(), refs.len());
    assert!(refs.iter().zip(refs.iter().skip(1)).all(|(x, y)| x != y));
    assert_eq!(rt.get_all(&refs).unwrap().iter().map(|v| **v).sum::<u64>(), (0..64).sum());
}
