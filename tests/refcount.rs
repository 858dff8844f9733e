//! Reference counting and zero copy: an object lives while any ref (or a
//! pending task taking it) lives and is dropped exactly once when the last
//! goes; `get` of a 100 MB `Vec<u8>` returns the stored allocation itself
//! (pointer equality), so it is constant time.

use manta::{ObjectRef, Runtime};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Weak};
use std::time::Duration;

const LONG: Duration = Duration::from_secs(10);
const MB: usize = 1 << 20;

fn rt(cpus: usize) -> Runtime {
    Runtime::builder().num_cpus(cpus).build().expect("runtime")
}

/// A value that counts its drops in a shared counter.
struct Counted {
    data: Vec<u8>,
    drops: Arc<AtomicUsize>,
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.drops.fetch_add(1, Ordering::SeqCst);
    }
}

/// A value that reports its drop on a channel (for drops that happen on a
/// worker thread, after the test thread has let go).
struct Signalled {
    tag: u32,
    dropped: mpsc::Sender<u32>,
}

impl Drop for Signalled {
    fn drop(&mut self) {
        let _ = self.dropped.send(self.tag);
    }
}

#[test]
fn a_thousand_one_megabyte_puts_are_all_freed() {
    let rt = rt(2);
    let drops = Arc::new(AtomicUsize::new(0));
    let refs: Vec<ObjectRef<Counted>> = (0..1_000)
        .map(|i| {
            let mut data = vec![0u8; MB]; // zeroed pages stay unmapped: 1 GB of values, little RSS
            data[0] = i as u8;
            rt.put(Counted { data, drops: drops.clone() }).unwrap()
        })
        .collect();
    // Readers hold weak handles only: the store owns the values.
    let weak: Vec<Weak<Counted>> = refs.iter().map(|r| Arc::downgrade(&r.get().unwrap())).collect();
    assert!(weak.iter().all(|w| w.upgrade().is_some()));
    assert_eq!(refs[999].get().unwrap().data[0], (999 % 256) as u8);
    assert_eq!(drops.load(Ordering::SeqCst), 0);
    // Extra clones keep the object alive until they go too.
    let clone = refs[5].clone();
    drop(refs);
    assert_eq!(drops.load(Ordering::SeqCst), 999);
    assert!(weak[5].upgrade().is_some());
    assert_eq!(clone.get().unwrap().data.len(), MB);
    drop(clone);
    assert_eq!(drops.load(Ordering::SeqCst), 1_000, "every value dropped exactly once");
    assert!(weak.iter().all(|w| w.upgrade().is_none()), "nothing left alive");
    assert_eq!(Arc::strong_count(&drops), 1);
}

#[test]
fn a_value_read_by_get_outlives_its_refs() {
    let rt = rt(2);
    let drops = Arc::new(AtomicUsize::new(0));
    let r = rt.put(Counted { data: vec![7; 16], drops: drops.clone() }).unwrap();
    let held = r.get().unwrap();
    drop(r);
    assert_eq!(drops.load(Ordering::SeqCst), 0, "a reader's Arc keeps the value");
    assert_eq!(held.data[0], 7);
    drop(held);
    assert_eq!(drops.load(Ordering::SeqCst), 1);
}

#[test]
fn task_results_are_dropped_exactly_once() {
    let rt = rt(2);
    let (tx, dropped) = mpsc::channel();
    let refs: Vec<_> = (0..100u32)
        .map(|tag| {
            let tx = tx.clone();
            rt.spawn(move || Signalled { tag, dropped: tx })
        })
        .collect();
    drop(tx);
    let tags: Vec<u32> = rt.get_all(&refs).unwrap().iter().map(|v| v.tag).collect();
    assert_eq!(tags, (0..100).collect::<Vec<_>>());
    drop(refs);
    let mut seen: Vec<u32> = (0..100).map(|_| dropped.recv_timeout(LONG).expect("result dropped")).collect();
    seen.sort_unstable();
    assert_eq!(seen, (0..100).collect::<Vec<_>>(), "each result dropped once");
    // Every sender is gone now: nothing is left that could drop again.
    assert!(dropped.recv_timeout(LONG).is_err());
}

#[test]
fn a_value_stays_alive_while_a_pending_task_holds_its_ref() {
    let rt = rt(2);
    let (release, rx) = mpsc::channel::<()>();
    let gate = rt.spawn(move || rx.recv().is_ok());
    let (tx, dropped) = mpsc::channel();
    let v = rt.put(Signalled { tag: 42, dropped: tx }).unwrap();
    let weak = Arc::downgrade(&v.get().unwrap());
    let t = rt.spawn_with((gate, v.clone()), |(_, s)| s.tag + 1);
    drop(v);
    assert!(weak.upgrade().is_some(), "the pending task keeps the value alive");
    assert!(dropped.try_recv().is_err());
    release.send(()).unwrap();
    assert_eq!(*t.get().unwrap(), 43, "the task read the value after every ref was dropped");
    assert_eq!(dropped.recv_timeout(LONG).expect("value dropped after the task"), 42);
    assert!(weak.upgrade().is_none());
}

#[test]
fn a_task_result_is_freed_with_its_last_ref() {
    let rt = rt(1);
    let (tx, dropped) = mpsc::channel();
    let r = rt.spawn(move || Signalled { tag: 1, dropped: tx });
    let weak = Arc::downgrade(&r.get().unwrap());
    drop(r);
    dropped.recv_timeout(LONG).expect("the result is dropped once its ref is gone");
    assert!(weak.upgrade().is_none());
}

#[test]
fn get_of_a_hundred_megabytes_is_zero_copy() {
    let rt = rt(2);
    let v = vec![0xABu8; 100 * MB];
    let ptr = v.as_ptr();
    let r = rt.put(v).unwrap();
    let a = r.get().unwrap();
    let b = rt.get(&r).unwrap();
    assert!(Arc::ptr_eq(&a, &b), "two gets return the same Arc");
    assert_eq!(a.as_ptr(), ptr, "put moved the vector, get did not copy it");
    assert_eq!(a.len(), 100 * MB);
    // Through a task argument and through get_all too.
    let seen = rt.spawn_with((r.clone(),), |(v,)| v.as_ptr() as usize);
    assert_eq!(*seen.get().unwrap(), ptr as usize);
    let all = rt.get_all(&[r.clone(), r.clone()]).unwrap();
    assert!(all.iter().all(|x| Arc::ptr_eq(x, &a)));
    // A task's large result is not copied either.
    let made = rt.spawn(|| {
        let v = vec![1u8; 100 * MB];
        let p = v.as_ptr() as usize;
        (v, p)
    });
    let got = made.get().unwrap();
    assert_eq!(got.0.as_ptr() as usize, got.1);
}
