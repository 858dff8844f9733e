//! Helpers shared by the store tests (`mod common;` in each file).
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
