//! Spill files: one object per file, CBOR payload in a checked envelope.
//!
//! # Format (version 1)
//! ```text
//! offset  size  field
//! 0       8     magic  b"MANTASPL"
//! 8       2     version, little-endian (1)
//! 10      2     n = length of the type name, little-endian (<= 1024)
//! 12      n     type name (UTF-8, `std::any::type_name` of the value)
//! 12+n    ...   payload: the value as CBOR (ciborium)
//! end-12  8     payload length, little-endian
//! end-4   4     CRC-32 of the payload, little-endian
//! ```
//! Decoding checks, in order: the magic, the version, the type name against
//! the expected one, the trailer's length against the file's, the CBOR
//! payload, that the payload was consumed exactly, and the CRC. Any mismatch
//! is a [`SpillError`]; nothing in a file (truncated, corrupted, foreign,
//! hostile) can make the decoder panic. Lengths in the payload are never
//! trusted for allocation beyond serde's capped size hints (about 1 MiB per
//! collection), so a hostile length costs at most that before the read
//! fails. The decoder is fuzzed (`fuzz/`).
//!
//! A [`SpillDir`] is one directory per runtime, removed with everything in
//! it when the runtime drops; each file is removed when its object is freed.
//!
//! Invariant: every spill writes a new file (`<id>.<n>.cbor`, `n` never
//! reused), and a file is removed only when the last handle of the spill
//! that wrote it drops. A reader still holding the handle of an earlier
//! spill of an object that was restored and spilled again therefore never
//! removes the later file. (With one name per object it did: a concurrent
//! stress test lost objects to "spill file unreadable" once under load.)

use crate::heap_size::{Decode, Encode};
use crate::id::ObjectId;
use crate::slot::Value;
use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

const MAGIC: &[u8; 8] = b"MANTASPL";
const VERSION: u16 = 1;
const MAX_NAME: usize = 1024;
const TRAILER: u64 = 12;

/// Why a spill file could not be written or read back.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SpillError {
    /// The file system refused (permissions, disk full, file gone, ...).
    #[error("spill file i/o: {0}")]
    Io(#[from] io::Error),
    /// Not a manta spill file.
    #[error("not a manta spill file (bad magic)")]
    BadMagic,
    /// Written by an incompatible version.
    #[error("spill file version {0} is not supported (expected {VERSION})")]
    Version(u16),
    /// Holds another type than expected.
    #[error("spill file holds a `{found}`, expected a `{expected}`")]
    WrongType {
        /// The type expected.
        expected: String,
        /// The type in the file.
        found: String,
    },
    /// Shorter than its header and trailer say.
    #[error("spill file is truncated")]
    Truncated,
    /// The payload does not match its checksum or length.
    #[error("spill file is corrupted: {0}")]
    Corrupt(String),
}

/// Counts and checksums what passes through.
struct Crc<W> {
    inner: W,
    crc: crc32fast::Hasher,
    len: u64,
}

impl<W: Write> Write for Crc<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.crc.update(&buf[..n]);
        self.len += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

impl<R: Read> Read for Crc<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.crc.update(&buf[..n]);
        self.len += n as u64;
        Ok(n)
    }
}

/// Writes `value` to `w` in the spill format.
pub fn encode_to(w: &mut dyn Write, type_name: &str, encode: Encode, value: &Value) -> Result<(), SpillError> {
    let name = type_name.as_bytes();
    let name = &name[..name.len().min(MAX_NAME)];
    w.write_all(MAGIC)?;
    w.write_all(&VERSION.to_le_bytes())?;
    w.write_all(&(name.len() as u16).to_le_bytes())?;
    w.write_all(name)?;
    let mut body = Crc { inner: &mut *w, crc: crc32fast::Hasher::new(), len: 0 };
    encode(&*value.data, &mut body).map_err(|e| SpillError::Io(io::Error::other(e)))?;
    let (len, crc) = (body.len, body.crc.finalize());
    w.write_all(&len.to_le_bytes())?;
    w.write_all(&crc.to_le_bytes())?;
    Ok(())
}

/// Reads a value of `type_name` back from `r`, whose total length is
/// `total` bytes.
pub fn decode_from(r: &mut dyn Read, total: u64, type_name: &str, decode: Decode) -> Result<Value, SpillError> {
    let mut head = [0u8; 12];
    read_exact(r, &mut head)?;
    if &head[..8] != MAGIC {
        return Err(SpillError::BadMagic);
    }
    let version = u16::from_le_bytes([head[8], head[9]]);
    if version != VERSION {
        return Err(SpillError::Version(version));
    }
    let n = u16::from_le_bytes([head[10], head[11]]) as usize;
    if n > MAX_NAME {
        return Err(SpillError::Corrupt(format!("type name of {n} bytes")));
    }
    let mut name = vec![0u8; n];
    read_exact(r, &mut name)?;
    let expected = &type_name.as_bytes()[..type_name.len().min(MAX_NAME)];
    if name != expected {
        return Err(SpillError::WrongType {
            expected: type_name.to_owned(),
            found: String::from_utf8_lossy(&name).into_owned(),
        });
    }
    let payload = total.checked_sub(12 + n as u64 + TRAILER).ok_or(SpillError::Truncated)?;
    let mut body = Crc { inner: r.take(payload), crc: crc32fast::Hasher::new(), len: 0 };
    let value = match decode(&mut body) {
        Ok(v) => v,
        // Stopped inside the payload: the bytes are wrong, not missing.
        Err(e) if body.len < payload => return Err(SpillError::Corrupt(e)),
        // Ran to the end of the payload: a whole file (its trailer agrees
        // on the length) holds a bad payload; otherwise it was cut short.
        Err(e) => {
            let mut trailer = [0u8; 12];
            let whole = r.read_exact(&mut trailer).is_ok()
                && trailer[..8].try_into().map(u64::from_le_bytes).is_ok_and(|n| n == payload);
            return Err(if whole { SpillError::Corrupt(e) } else { SpillError::Truncated });
        }
    };
    // The decoder may stop early on a valid prefix: the rest must be empty.
    let mut rest = [0u8; 1];
    if body.read(&mut rest)? != 0 {
        return Err(SpillError::Corrupt("trailing bytes after the payload".into()));
    }
    let (len, crc) = (body.len, body.crc.finalize());
    let mut trailer = [0u8; 12];
    read_exact(r, &mut trailer)?;
    let want_len = u64::from_le_bytes(trailer[..8].try_into().map_err(|_| SpillError::Truncated)?);
    let want_crc = u32::from_le_bytes(trailer[8..].try_into().map_err(|_| SpillError::Truncated)?);
    if want_len != len || want_len != payload {
        return Err(SpillError::Corrupt(format!("payload is {len} bytes, trailer says {want_len}")));
    }
    if want_crc != crc {
        return Err(SpillError::Corrupt("checksum mismatch".into()));
    }
    Ok(value)
}

fn read_exact(r: &mut dyn Read, buf: &mut [u8]) -> Result<(), SpillError> {
    r.read_exact(buf).map_err(|e| match e.kind() {
        io::ErrorKind::UnexpectedEof => SpillError::Truncated,
        _ => SpillError::Io(e),
    })
}

/// Decodes a whole spill file held in memory (the fuzz target's entry).
#[cfg(any(test, feature = "fuzzing"))]
pub fn decode_bytes(bytes: &[u8], type_name: &str, decode: Decode) -> Result<Value, SpillError> {
    decode_from(&mut &bytes[..], bytes.len() as u64, type_name, decode)
}

/// A runtime's spill directory: created on start, removed on drop.
#[derive(Debug)]
pub struct SpillDir {
    path: PathBuf,
    /// Numbers the files: an object spilled again gets a new file, so the
    /// handle of its previous spill, dropped late, cannot remove it.
    next: std::sync::atomic::AtomicU64,
}

impl SpillDir {
    /// Creates a fresh directory `manta-<pid>-<unique>` under `base`.
    pub fn create(base: &Path) -> io::Result<SpillDir> {
        std::fs::create_dir_all(base)?;
        let id = ObjectId::fresh();
        let path = base.join(format!("manta-{}-{}", std::process::id(), id));
        std::fs::create_dir(&path)?;
        Ok(SpillDir { path, next: std::sync::atomic::AtomicU64::new(0) })
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A new file for one spill of an object: `<id>.<n>.cbor`, `n` never
    /// reused in this directory.
    fn new_file_of(&self, id: ObjectId) -> PathBuf {
        let n = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.path.join(format!("{id}.{n}.cbor"))
    }

    /// Writes a value to its file; on failure no file is left behind.
    pub fn write(&self, id: ObjectId, type_name: &str, encode: Encode, value: &Value) -> Result<PathBuf, SpillError> {
        let path = self.new_file_of(id);
        let result = (|| {
            let mut w = BufWriter::with_capacity(1 << 20, File::create(&path)?);
            encode_to(&mut w, type_name, encode, value)?;
            w.flush()?;
            Ok(())
        })();
        match result {
            Ok(()) => Ok(path),
            Err(e) => {
                let _ = std::fs::remove_file(&path);
                Err(e)
            }
        }
    }
}

/// Reads a spill file back.
pub fn read_file(path: &Path, type_name: &str, decode: Decode) -> Result<Value, SpillError> {
    let f = File::open(path)?;
    let total = f.metadata()?.len();
    let mut r = BufReader::with_capacity(1 << 20, f);
    decode_from(&mut r, total, type_name, decode)
}

impl Drop for SpillDir {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir_all(&self.path) {
            if e.kind() != io::ErrorKind::NotFound {
                tracing::warn!(dir = %self.path.display(), error = %e, "could not remove spill directory");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::heap_size::lookup;
    use std::any::TypeId;

    fn codec<T: 'static>() -> (Encode, Decode) {
        lookup(TypeId::of::<T>()).and_then(|i| i.codec).expect("registered")
    }

    fn encoded<T: std::any::Any + Send + Sync>(v: T) -> Vec<u8> {
        let (enc, _) = codec::<T>();
        let mut out = Vec::new();
        encode_to(&mut out, std::any::type_name::<T>(), enc, &Value::new(v)).unwrap();
        out
    }

    #[test]
    fn round_trip_bytes_and_strings() {
        let bytes = encoded(vec![7u8; 10_000]);
        let (_, dec) = codec::<Vec<u8>>();
        let v = decode_bytes(&bytes, std::any::type_name::<Vec<u8>>(), dec).unwrap();
        assert_eq!(*v.downcast::<Vec<u8>>().unwrap(), vec![7u8; 10_000]);
        let strings = encoded(vec!["a".to_string(), "b".to_string()]);
        let (_, dec) = codec::<Vec<String>>();
        let v = decode_bytes(&strings, std::any::type_name::<Vec<String>>(), dec).unwrap();
        assert_eq!(*v.downcast::<Vec<String>>().unwrap(), ["a", "b"]);
    }

    #[test]
    fn every_truncation_and_every_flipped_byte_is_an_error() {
        let bytes = encoded(vec![1u8, 2, 3, 4, 5, 6, 7, 8]);
        let (_, dec) = codec::<Vec<u8>>();
        let name = std::any::type_name::<Vec<u8>>();
        for cut in 0..bytes.len() {
            assert!(decode_bytes(&bytes[..cut], name, dec).is_err(), "cut at {cut}");
        }
        for i in 0..bytes.len() {
            let mut b = bytes.clone();
            b[i] ^= 0x5a;
            assert!(decode_bytes(&b, name, dec).is_err(), "flip at {i}");
        }
    }

    #[test]
    fn foreign_type_is_refused() {
        let bytes = encoded("hello".to_string());
        let (_, dec) = codec::<Vec<u8>>();
        assert!(matches!(
            decode_bytes(&bytes, std::any::type_name::<Vec<u8>>(), dec),
            Err(SpillError::WrongType { .. })
        ));
    }
}
