//! Helpers shared by the integration tests (`mod common;` in each file).
#![allow(dead_code)]

use std::mem::size_of;
use std::path::PathBuf;

pub const MB: usize = 1 << 20;

/// What the store charges for a `Vec<u8>` of `len` bytes made by `make`
/// (its inline size plus its capacity, which `vec!` makes exactly `len`).
pub const fn charged(len: usize) -> usize {
    len + size_of::<Vec<u8>>()
}

/// Object `i`: `len` bytes, `i` in the first 8, the rest filled with `i % 251`.
pub fn make(i: usize, len: usize) -> Vec<u8> {
    let mut v = vec![(i % 251) as u8; len];
    v[..8].copy_from_slice(&(i as u64).to_le_bytes());
    v
}

/// Checks that `v` is object `i` of `len` bytes.
pub fn check(i: usize, len: usize, v: &[u8]) {
    assert_eq!(v.len(), len, "object {i}: wrong length");
    assert!(v == make(i, len).as_slice(), "object {i}: wrong bytes (header says {:?})", &v[..8.min(v.len())]);
}

/// A fresh directory under the system temp dir, removed on drop.
pub struct TempBase(pub PathBuf);
impl TempBase {
    pub fn new(name: &str) -> TempBase {
        let p = std::env::temp_dir().join(format!("manta-test-store-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).expect("create temp base");
        TempBase(p)
    }
}
impl Drop for TempBase {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Max-in-flight counter: how many ran at once, at most.
#[derive(Default)]
pub struct Gauge {
    now: std::sync::atomic::AtomicUsize,
    max: std::sync::atomic::AtomicUsize,
}

impl Gauge {
    pub fn enter(&self) {
        use std::sync::atomic::Ordering::SeqCst;
        let n = self.now.fetch_add(1, SeqCst) + 1;
        self.max.fetch_max(n, SeqCst);
    }
    pub fn exit(&self) {
        self.now.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
    pub fn max(&self) -> usize {
        self.max.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// Runs the calling test's `body` in a child process (this test binary,
/// filtered to `test`), so that an abort (stack overflow, a panic that
/// escapes) fails this one test instead of killing every test in the file.
pub fn isolated(test: &str, body: impl FnOnce()) {
    if std::env::var("MANTA_ISOLATED").as_deref() == Ok(test) {
        body();
        return;
    }
    let out = std::process::Command::new(std::env::current_exe().expect("test binary"))
        .args([test, "--exact", "--nocapture", "--test-threads=1"])
        .env("MANTA_ISOLATED", test)
        .output()
        .expect("run the test in a child process");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "child process failed ({}):\n{stdout}\n{stderr}", out.status);
    assert!(stdout.contains("1 passed"), "the child ran the test:\n{stdout}");
}

/// The current spill file of object `id` in `rt`'s spill directory
/// (`<id>.<n>.cbor`: each spill of an object gets a new file), or a path
/// that does not exist if it has none.
pub fn spill_file(rt: &manta::Runtime, id: manta::ObjectId) -> PathBuf {
    let dir = rt.spill_dir().expect("spill dir");
    let prefix = format!("{id}.");
    std::fs::read_dir(dir)
        .expect("read spill dir")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with(&prefix)))
        .unwrap_or_else(|| dir.join(format!("{id}.none.cbor")))
}
