//! Spilling and restoring 100 MB objects through the spill directory,
//! beside the floor measured in the same run: plain file writes and reads
//! of the same bytes in the same directory (`disk_write_gbps`,
//! `disk_read_gbps`; neither side calls fsync, so both measure the page
//! cache and the filesystem, as a spill does). Then small puts into a
//! store that is at its cap (each fills room that spilling a 1 MB object
//! made).
//!
//! - `spill_gbps`: a put that needs the room of an older 100 MB object,
//!   which is written to its spill file: bytes moved out over the put's time;
//! - `restore_gbps`: a get of a spilled 100 MB object that fits back in.

use super::{best_of, median, rate, Bench};
use manta::Runtime;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

const OBJECT: usize = 100 << 20;
const ROUNDS: usize = 4;
const SMALL: usize = 1 << 10;
const SMALL_PUTS: usize = 50_000;

pub(crate) const METRICS: &[&str] =
    &["spill_gbps", "restore_gbps", "disk_write_gbps", "disk_read_gbps", "put_small_under_pressure_per_s"];

fn gbps(bytes: usize, secs: f64) -> f64 {
    bytes as f64 / secs / 1e9
}

/// A directory of its own under the system temp dir, removed afterwards.
struct Dir(PathBuf);

impl Dir {
    fn new(tag: &str) -> Dir {
        let p = std::env::temp_dir().join(format!("manta-bench-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).expect("bench dir");
        Dir(p)
    }
    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn payload(seed: u8) -> Vec<u8> {
    (0..OBJECT).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect()
}

/// The floor: write (and then read) the same 100 MB as plain files.
fn disk(b: &Bench) -> (f64, f64) {
    let dir = Dir::new("disk");
    let data = payload(1);
    let mut writes = Vec::new();
    let mut reads = Vec::new();
    for i in 0..ROUNDS {
        let path = dir.path().join(format!("f{i}"));
        let t = Instant::now();
        let mut f = std::fs::File::create(&path).expect("create");
        f.write_all(&data).expect("write");
        drop(f);
        writes.push(gbps(OBJECT, t.elapsed().as_secs_f64()));
        let t = Instant::now();
        let mut back = Vec::with_capacity(OBJECT);
        std::fs::File::open(&path).expect("open").read_to_end(&mut back).expect("read");
        reads.push(gbps(OBJECT, t.elapsed().as_secs_f64()));
        assert_eq!(back.len(), OBJECT);
        let _ = std::fs::remove_file(&path);
    }
    eprintln!("#   disk_write_gbps: runs {writes:.2?}; disk_read_gbps: runs {reads:.2?}");
    let w = median(writes);
    let r = median(reads);
    b.report("disk_write_gbps", w, "GB/s");
    b.report("disk_read_gbps", r, "GB/s");
    (w, r)
}

/// Spills and restores through a runtime whose store holds one object.
fn spill_restore(b: &Bench) {
    let dir = Dir::new("spill");
    let rt = Runtime::builder()
        .num_cpus(b.threads)
        .store_capacity(OBJECT + OBJECT / 2)
        .spill_dir(dir.path())
        .build()
        .expect("runtime");
    let mut spills = Vec::new();
    let mut restores = Vec::new();
    for i in 0..ROUNDS {
        let a = rt.put(payload(i as u8)).expect("put a");
        let second = payload(200);
        let before = rt.store_stats().spills;
        let t = Instant::now();
        let filler = rt.put(second).expect("put b: spills a");
        let spill_s = t.elapsed().as_secs_f64();
        assert_eq!(rt.store_stats().spills, before + 1, "the put spilled the older object");
        spills.push(gbps(OBJECT, spill_s));
        drop(filler); // room for `a` to come back without another spill
        let restored = rt.store_stats().restores;
        let t = Instant::now();
        let v = a.get().expect("restore");
        let restore_s = t.elapsed().as_secs_f64();
        assert_eq!(rt.store_stats().restores, restored + 1, "the get read the spill file");
        assert_eq!(v[12345], (12345usize as u8).wrapping_mul(31).wrapping_add(i as u8));
        restores.push(gbps(OBJECT, restore_s));
    }
    eprintln!("#   spill_gbps: runs {spills:.2?}; restore_gbps: runs {restores:.2?}");
    b.report("spill_gbps", median(spills), "GB/s");
    b.report("restore_gbps", median(restores), "GB/s");
}

/// Small (1 KiB, charged) puts into a store that is full of 1 MB
/// spillable objects: every thousandth put or so spills the least recently
/// used 1 MB object to make room. Each run starts from a full store.
fn small_puts_under_pressure(b: &Bench) {
    const CAP: usize = 64 << 20;
    let best = best_of("put_small_under_pressure_per_s", 3, || {
        let dir = Dir::new("pressure");
        let rt =
            Runtime::builder().num_cpus(b.threads).store_capacity(CAP).spill_dir(dir.path()).build().expect("runtime");
        let fill: Vec<_> = (0..CAP / (1 << 20)).map(|i| rt.put(vec![i as u8; 1 << 20]).expect("fill")).collect();
        let small: Vec<Vec<u8>> = (0..SMALL_PUTS).map(|i| vec![i as u8; SMALL]).collect();
        let t = Instant::now();
        let refs: Vec<_> = small.into_iter().map(|v| rt.put(v).expect("put at the cap")).collect();
        let d = t.elapsed();
        let st = rt.store_stats();
        eprintln!("#     {} spills, {} bytes in memory of {}", st.spills, st.bytes_in_memory, st.capacity);
        drop((refs, fill));
        rate(SMALL_PUTS, d)
    });
    b.report("put_small_under_pressure_per_s", best, "puts/s");
}

pub(crate) fn spill(b: &Bench) {
    if b.wants(&["disk_write_gbps", "disk_read_gbps", "spill_gbps", "restore_gbps"]) {
        disk(b);
        spill_restore(b);
    }
    if b.wants(&["put_small_under_pressure_per_s"]) {
        small_puts_under_pressure(b);
    }
}
