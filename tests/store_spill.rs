//! Spill files: truncated, corrupted, foreign or missing files give a clear
//! error for that object (or a rebuild from lineage), never a panic; a spill
//! directory that stops being writable; files removed as objects are freed
//! and the directory removed with the runtime; `store_stats()` agrees with
//! what is on disk.

mod common;
use common::*;

use manta::{Error, ObjectRef, Runtime};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// A runtime with a spill directory under `base` and room for `fits`
/// objects of 1 MB.
fn spilling_rt(base: &TempBase, fits: usize) -> Runtime {
    Runtime::builder()
        .num_cpus(2)
        .store_capacity(fits * charged(MB) + MB / 2)
        .spill_dir(&base.0)
        .put_timeout(Duration::from_millis(200))
        .build()
        .expect("runtime")
}

fn files_in(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> =
        std::fs::read_dir(dir).expect("read spill dir").map(|e| e.expect("entry").path()).collect();
    v.sort();
    v
}

// ---------------------------------------------------------------- damaged files

#[derive(Debug, Clone, Copy)]
enum Damage {
    TruncateHalf,
    TruncateHeader,
    Empty,
    FlipPayloadByte,
    FlipMagic,
    ForeignBytes,
    ForeignType,
    Missing,
}

const ALL: [Damage; 8] = [
    Damage::TruncateHalf,
    Damage::TruncateHeader,
    Damage::Empty,
    Damage::FlipPayloadByte,
    Damage::FlipMagic,
    Damage::ForeignBytes,
    Damage::ForeignType,
    Damage::Missing,
];

impl Damage {
    /// What the error's reason should say.
    fn expected(self) -> &'static str {
        match self {
            Damage::TruncateHalf | Damage::TruncateHeader | Damage::Empty => "truncated",
            Damage::FlipPayloadByte => "checksum",
            Damage::FlipMagic | Damage::ForeignBytes => "not a manta spill file",
            Damage::ForeignType => "holds a",
            Damage::Missing => "i/o",
        }
    }

    /// Damages `file`; `foreign` is a valid spill file of another type.
    fn apply(self, file: &Path, foreign: &Path) {
        let len = std::fs::metadata(file).expect("spill file").len();
        match self {
            Damage::TruncateHalf => set_len(file, len / 2),
            Damage::TruncateHeader => set_len(file, 5),
            Damage::Empty => set_len(file, 0),
            Damage::FlipPayloadByte => flip(file, len as usize / 2),
            Damage::FlipMagic => flip(file, 0),
            Damage::ForeignBytes => std::fs::write(file, b"PK\x03\x04 this is somebody else's file").expect("write"),
            Damage::ForeignType => {
                std::fs::copy(foreign, file).expect("copy");
            }
            Damage::Missing => std::fs::remove_file(file).expect("remove"),
        }
    }
}

fn set_len(file: &Path, len: u64) {
    std::fs::OpenOptions::new().write(true).open(file).expect("open").set_len(len).expect("set_len");
}

fn flip(file: &Path, at: usize) {
    let mut bytes = std::fs::read(file).expect("read");
    bytes[at] ^= 0x5a;
    std::fs::write(file, bytes).expect("write");
}

/// Spills a `String` object and copies its file aside: a well-formed spill
/// file that holds another type. Returns the copy's path.
fn foreign_spill_file(rt: &Runtime, base: &TempBase) -> PathBuf {
    let s = rt.put("s".repeat(MB)).expect("put string");
    let filler = rt.put(make(999, MB)).expect("put filler");
    let file = spill_file(rt, s.id());
    assert!(file.exists(), "the string object was not spilled");
    let copy = base.0.join("foreign.cbor");
    std::fs::copy(&file, &copy).expect("copy");
    drop((s, filler));
    copy
}

/// Puts a filler so that `r`, the only object in memory (the store holds
/// one), is spilled; returns the filler.
fn spill_by_filler<T>(rt: &Runtime, r: &ObjectRef<T>, filler: usize) -> ObjectRef<Vec<u8>> {
    let f = rt.put(make(filler, MB)).expect("put filler");
    assert!(spill_file(rt, r.id()).exists(), "object {} was not spilled: {:?}", r.id(), rt.store_stats());
    f
}

#[test]
fn damaged_spill_file_of_a_put_object_is_object_lost() {
    let base = TempBase::new("damaged-put");
    let rt = spilling_rt(&base, 1);
    let foreign = foreign_spill_file(&rt, &base);
    for (k, damage) in ALL.into_iter().enumerate() {
        let r = rt.put(make(k, MB)).expect("put");
        let _filler = spill_by_filler(&rt, &r, 1000 + k);
        damage.apply(&spill_file(&rt, r.id()), &foreign);
        for attempt in 0..2 {
            match r.get() {
                Err(Error::ObjectLost { id, reason }) => {
                    assert_eq!(id, r.id());
                    assert!(reason.contains("spill file"), "{damage:?}: reason {reason:?}");
                    assert!(reason.contains(damage.expected()), "{damage:?}: reason {reason:?}");
                }
                other => {
                    panic!("{damage:?} (attempt {attempt}): expected ObjectLost, got {:?}", other.map(|v| v.len()))
                }
            }
        }
        let st = rt.store_stats();
        assert_eq!(st.objects_spilled, files_in(rt.spill_dir().unwrap()).len(), "{damage:?}: {st:?}");
    }
}

#[test]
fn damaged_spill_file_of_a_task_object_is_rebuilt_from_lineage() {
    let base = TempBase::new("damaged-task");
    let rt = spilling_rt(&base, 1);
    let foreign = foreign_spill_file(&rt, &base);
    for (k, damage) in ALL.into_iter().enumerate() {
        let runs = Arc::new(AtomicUsize::new(0));
        let counted = runs.clone();
        let r = rt.task().rerunnable().name("rebuildable").spawn(move || {
            counted.fetch_add(1, Ordering::Relaxed);
            make(k, MB)
        });
        check(k, MB, &r.get().expect("first get"));
        let _filler = spill_by_filler(&rt, &r, 1000 + k);
        damage.apply(&spill_file(&rt, r.id()), &foreign);
        let rebuilt = rt.store_stats().reconstructions;
        let v = r.get().unwrap_or_else(|e| panic!("{damage:?}: expected a rebuild, got {e}"));
        check(k, MB, &v);
        assert_eq!(runs.load(Ordering::Relaxed), 2, "{damage:?}: the task runs once more");
        assert_eq!(rt.store_stats().reconstructions, rebuilt + 1, "{damage:?}");
    }
}

/// A one-shot task's object cannot be rebuilt: losing its spill file gives
/// `ObjectLost`, and the error names the task that made it.
#[test]
fn damaged_spill_file_of_a_one_shot_object_names_its_task() {
    let base = TempBase::new("damaged-once");
    let rt = spilling_rt(&base, 1);
    let r = rt.task().name("one-shot-producer").spawn(|| make(1, MB));
    check(1, MB, &r.get().expect("first get"));
    let _filler = spill_by_filler(&rt, &r, 2);
    flip(&spill_file(&rt, r.id()), 100_000);
    match r.get() {
        Err(e @ Error::ObjectLost { .. }) => {
            assert!(e.to_string().contains("one-shot-producer"), "the error should name the task: {e}");
        }
        other => panic!("expected ObjectLost, got {:?}", other.map(|v| v.len())),
    }
}

// ---------------------------------------------------------------- unwritable spill directory

/// The runtime's spill directory is replaced by a regular file (so creating
/// files in it fails even for root): spills fail and are counted, task
/// objects are dropped for lineage instead, put objects stay in memory and
/// puts end in `StoreFull` with the value handed back; nothing panics and
/// everything in memory stays correct.
#[test]
fn unwritable_spill_dir_falls_back_to_lineage_or_store_full() {
    let base = TempBase::new("unwritable");
    let rt = spilling_rt(&base, 2);
    let dir = rt.spill_dir().expect("dir").to_path_buf();
    let runs = Arc::new(AtomicUsize::new(0));
    let p1 = rt.put(make(1, MB)).expect("put p1");
    let counted = runs.clone();
    let t1 = rt.task().rerunnable().spawn(move || {
        counted.fetch_add(1, Ordering::Relaxed);
        make(2, MB)
    });
    check(2, MB, &t1.get().expect("t1"));

    std::fs::remove_dir_all(&dir).expect("remove the spill dir");
    std::fs::write(&dir, b"not a directory").expect("a file where the spill dir was");

    let mut stored = vec![(1usize, p1)];
    let mut full = 0;
    for i in 10..14 {
        match rt.put(make(i, MB)) {
            Ok(r) => stored.push((i, r)),
            Err(e) => {
                check(i, MB, &e.value);
                assert_eq!(e.needed, charged(MB));
                full += 1;
            }
        }
    }
    let st = rt.store_stats();
    assert!(st.spill_failures > 0, "{st:?}");
    assert_eq!((st.spills, st.objects_spilled), (0, 0), "{st:?}");
    assert!(full >= 2, "four puts into room for two, nothing spillable: {full} StoreFull, {st:?}");
    assert!(stored.len() <= 2, "{} put objects in room for two", stored.len());
    assert!(st.bytes_in_memory <= st.capacity, "{st:?}");
    for (i, r) in &stored {
        check(*i, MB, &r.get().unwrap_or_else(|e| panic!("put object {i}: {e}")));
    }
    // The task object was dropped for lineage (or is still in memory).
    check(2, MB, &t1.get().expect("t1 after the spill dir broke"));
    let st = rt.store_stats();
    assert_eq!(runs.load(Ordering::Relaxed), 1 + st.reconstructions as usize, "{st:?}");
    assert!(st.evictions + st.spill_failures > 0, "{st:?}");

    drop((stored, t1));
    drop(rt);
    let _ = std::fs::remove_file(&dir);
}

// ---------------------------------------------------------------- cleanup

#[test]
fn spill_files_go_with_their_objects_and_the_directory_with_the_runtime() {
    let base = TempBase::new("cleanup");
    let rt = spilling_rt(&base, 2);
    let dir = rt.spill_dir().expect("dir").to_path_buf();
    assert!(dir.starts_with(&base.0) && dir.is_dir());
    let mut refs: Vec<Option<ObjectRef<Vec<u8>>>> = (0..6).map(|i| Some(rt.put(make(i, MB)).expect("put"))).collect();
    let runs = Arc::new(AtomicUsize::new(0));
    let counted = runs.clone();
    let task = rt.task().rerunnable().spawn(move || {
        counted.fetch_add(1, Ordering::Relaxed);
        make(6, MB)
    });
    check(6, MB, &task.get().expect("task"));
    let fill = [rt.put(make(7, MB)).expect("put"), rt.put(make(8, MB)).expect("put")];
    assert_eq!(files_in(&dir).len(), 7, "objects 0-5 and the task object are spilled");
    assert!(spill_file(&rt, task.id()).exists());
    drop(fill);
    for r in refs.iter().flatten() {
        assert!(spill_file(&rt, r.id()).exists());
    }

    refs[0] = None;
    refs[3] = None;
    assert_eq!(files_in(&dir).len(), 5, "freeing a spilled object removes its file");
    assert_eq!(rt.store_stats().objects_spilled, 5);
    drop(task);
    assert_eq!(files_in(&dir).len(), 4);

    // Restoring an object removes its file too.
    check(1, MB, &refs[1].as_ref().unwrap().get().expect("restore 1"));
    assert!(!spill_file(&rt, refs[1].as_ref().unwrap().id()).exists());
    assert_eq!(rt.store_stats().objects_spilled, files_in(&dir).len());

    refs.clear();
    assert!(files_in(&dir).is_empty(), "left behind: {:?}", files_in(&dir));
    drop(rt);
    assert!(!dir.exists(), "the runtime's spill directory outlived it");
    assert!(base.0.is_dir(), "the user's base directory is left alone");
    assert_eq!(runs.load(Ordering::Relaxed), 1);
}

/// Refs outlive their runtime: a spilled object still reads back after the
/// runtime is dropped, and once the last object goes nothing is left on disk.
#[test]
fn spilled_objects_outlive_the_runtime_and_leave_nothing_behind() {
    let base = TempBase::new("outlive");
    let rt = spilling_rt(&base, 1);
    let dir = rt.spill_dir().expect("dir").to_path_buf();
    let a = rt.put(make(1, MB)).expect("put");
    let b = rt.put(make(2, MB)).expect("put");
    assert!(spill_file(&rt, a.id()).exists());
    drop(rt);
    check(1, MB, &a.get().expect("read a spilled object after the runtime dropped"));
    check(2, MB, &b.get().expect("get"));
    drop((a, b));
    assert!(!dir.exists(), "spill directory left behind: {:?}", files_in(&dir));
}

// ---------------------------------------------------------------- stats

#[test]
fn store_stats_match_what_is_on_disk() {
    let base = TempBase::new("stats");
    let cap = 3 * charged(MB) + MB / 2;
    let rt = Runtime::builder().num_cpus(2).store_capacity(cap).spill_dir(&base.0).build().expect("runtime");
    let dir = rt.spill_dir().expect("dir").to_path_buf();
    let st = rt.store_stats();
    assert_eq!(st, manta::StoreStats { capacity: cap, ..Default::default() });

    // Ten puts, none read: strictly least recently stored first.
    let mut refs: Vec<Option<ObjectRef<Vec<u8>>>> = (0..10).map(|i| Some(rt.put(make(i, MB)).expect("put"))).collect();
    let id = |refs: &[Option<ObjectRef<Vec<u8>>>], i: usize| refs[i].as_ref().unwrap().id();
    let st = rt.store_stats();
    assert_eq!((st.objects_in_memory, st.bytes_in_memory), (3, 3 * charged(MB)), "{st:?}");
    assert_eq!((st.objects_spilled, st.bytes_spilled, st.spills), (7, 7 * charged(MB), 7), "{st:?}");
    assert_eq!((st.restores, st.evictions, st.reconstructions, st.spill_failures), (0, 0, 0, 0), "{st:?}");
    assert_eq!(files_in(&dir).len(), 7);
    for i in 0..10 {
        assert_eq!(spill_file(&rt, id(&refs, i)).exists(), i < 7, "object {i}");
    }

    refs[0] = None;
    refs[1] = None;
    refs[9] = None; // in memory
    let st = rt.store_stats();
    assert_eq!((st.objects_spilled, st.bytes_spilled), (5, 5 * charged(MB)), "{st:?}");
    assert_eq!((st.objects_in_memory, st.bytes_in_memory), (2, 2 * charged(MB)), "{st:?}");
    assert_eq!(files_in(&dir).len(), 5);

    // A restore that fits: no spill.
    check(2, MB, &refs[2].as_ref().unwrap().get().expect("restore 2"));
    let st = rt.store_stats();
    assert_eq!((st.restores, st.spills), (1, 7), "{st:?}");
    assert_eq!((st.objects_in_memory, st.objects_spilled), (3, 4), "{st:?}");
    assert_eq!(files_in(&dir).len(), 4);
    // A restore that does not fit spills the least recently used (7).
    check(3, MB, &refs[3].as_ref().unwrap().get().expect("restore 3"));
    let st = rt.store_stats();
    assert_eq!((st.restores, st.spills), (2, 8), "{st:?}");
    assert_eq!((st.objects_in_memory, st.objects_spilled), (3, 4), "{st:?}");
    assert_eq!(st.bytes_spilled, 4 * charged(MB));
    assert!(spill_file(&rt, id(&refs, 7)).exists(), "object 7 was the least recently used");
    assert_eq!(files_in(&dir).len(), st.objects_spilled);

    refs.clear();
    let st = rt.store_stats();
    assert_eq!((st.objects_in_memory, st.bytes_in_memory, st.objects_spilled, st.bytes_spilled), (0, 0, 0, 0));
    assert!(files_in(&dir).is_empty());
}
