//! The sealed record stream of the bulk lane (see `bulk`): how a large
//! object's encoding travels over a plain TCP connection, encrypted and
//! authenticated with AES-256-GCM under a one-use key that was handed over
//! on the Noise-secured libp2p connection.
//!
//! Client to server, once: a [`Hello`]: the 8-byte magic `mantaBLK`, the
//! lane version byte, the 32-byte ticket token, then a 32-byte
//! HMAC-SHA256 of those 41 bytes under a [`HelloKey`] derived from the
//! cluster secret (from a fixed string when the cluster has none). With a
//! secret, a hello is accepted only from a holder of it, even one that saw
//! a ticket's token; a wrong magic, version or MAC is refused before the
//! token is looked at.
//!
//! Server to client: records. A record is a 4-byte big-endian header (the
//! [`LAST`] bit, then the plaintext length, at most [`RECORD_BYTES`]), the
//! ciphertext, and a 16-byte tag. Record `i` (from 0) is sealed with the
//! 96-bit big-endian counter `i` as nonce and its header as associated
//! data, so a record cannot be changed, reordered, dropped, replayed or
//! re-flagged without failing authentication. The stream ends with exactly
//! one record marked `LAST` (possibly empty): a stream cut short is an
//! error, never a shorter object. A key seals one stream only, so nonces
//! never repeat under a key.
//!
//! Invariants of [`OpenReader`], which reads bytes from the network: it
//! never returns a byte that failed authentication; its memory is one
//! record whatever the input claims; it gives the plaintext, then end of
//! input after the `LAST` record, and an `InvalidData` error for anything
//! else (a bad header, an oversized or empty non-last record, a bad tag, more bytes than
//! announced, input ending before `LAST`). It never panics.

use ring::aead::{Aad, LessSafeKey, Nonce, Tag, UnboundKey, AES_256_GCM};
use ring::hmac;
use std::io::{self, Read, Write};

/// Most plaintext bytes in one record.
pub const RECORD_BYTES: usize = 1 << 20;

/// The header bit that marks a stream's last record.
pub const LAST: u32 = 1 << 31;

/// Bytes of a record's authentication tag.
pub const TAG_BYTES: usize = 16;

/// The first bytes a client sends.
pub const MAGIC: &[u8; 8] = b"mantaBLK";

/// Version of the lane's framing, sent after [`MAGIC`] (2: the hello
/// carries a MAC).
pub const LANE_VERSION: u8 = 2;

/// The hello's version byte on a message lane (`wire::lane`), accepted on
/// the same listener as the bulk lane.
pub const MESSAGE_LANE_VERSION: u8 = 3;

/// Bytes of a hello's MAC.
pub const MAC_BYTES: usize = 32;

/// Bytes of a [`Hello`] on the wire.
pub const HELLO_BYTES: usize = MAGIC.len() + 1 + 32 + MAC_BYTES;

/// The key a hello's MAC is made with: HMAC-SHA256 under a key derived
/// from the cluster secret (a fixed one without a secret, which then only
/// checks the hello's integrity).
#[derive(Clone)]
pub struct HelloKey(hmac::Key);

impl std::fmt::Debug for HelloKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HelloKey(..)")
    }
}

impl HelloKey {
    /// The key of a cluster with `secret` (or none).
    pub fn new(secret: Option<&Secret>) -> HelloKey {
        let root = hmac::Key::new(hmac::HMAC_SHA256, secret.map_or(&[0u8; 32][..], |s| &s[..]));
        // A key of its own, so the lane never uses the pnet key directly.
        let derived = hmac::sign(&root, b"manta bulk-lane hello key v2");
        HelloKey(hmac::Key::new(hmac::HMAC_SHA256, derived.as_ref()))
    }
}

/// A 256-bit secret (a ticket's token or key).
pub type Secret = [u8; 32];

/// Draws a fresh random secret from the OS.
pub fn random_secret() -> io::Result<Secret> {
    use ring::rand::SecureRandom;
    let mut s = [0u8; 32];
    ring::rand::SystemRandom::new().fill(&mut s).map_err(|_| io::Error::other("no randomness from the OS"))?;
    Ok(s)
}

/// What a client sends first: which ticket it redeems.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hello {
    /// The ticket's token.
    pub token: Secret,
}

/// Where a hello's MAC starts.
const MAC_AT: usize = HELLO_BYTES - MAC_BYTES;

impl Hello {
    /// The hello's wire form, its MAC made under `key`.
    pub fn to_bytes(&self, key: &HelloKey) -> [u8; HELLO_BYTES] {
        self.to_bytes_version(key, LANE_VERSION)
    }

    /// The hello's wire form with version byte `version` ([`LANE_VERSION`]
    /// or [`MESSAGE_LANE_VERSION`]), its MAC made under `key`.
    pub fn to_bytes_version(&self, key: &HelloKey, version: u8) -> [u8; HELLO_BYTES] {
        let mut b = [0u8; HELLO_BYTES];
        b[..8].copy_from_slice(MAGIC);
        b[8] = version;
        b[9..MAC_AT].copy_from_slice(&self.token);
        let mac = hmac::sign(&key.0, &b[..MAC_AT]);
        b[MAC_AT..].copy_from_slice(mac.as_ref());
        b
    }

    /// Parses a hello: a wrong magic or version, or a MAC that does not
    /// verify under `key` (checked in constant time), is an error.
    #[cfg(any(test, feature = "fuzzing"))]
    pub fn from_bytes(b: &[u8; HELLO_BYTES], key: &HelloKey) -> Result<Hello, HelloError> {
        match Hello::parse(b, key)? {
            (LANE_VERSION, hello) => Ok(hello),
            (v, _) => Err(HelloError::Version(v)),
        }
    }

    /// Parses a hello of either lane: its version byte ([`LANE_VERSION`] or
    /// [`MESSAGE_LANE_VERSION`]) and the hello. A wrong magic, another
    /// version, or a MAC that does not verify under `key` (checked in
    /// constant time; the version byte is under the MAC) is an error.
    pub fn parse(b: &[u8; HELLO_BYTES], key: &HelloKey) -> Result<(u8, Hello), HelloError> {
        if &b[..8] != MAGIC {
            return Err(HelloError::NotAHello);
        }
        if b[8] != LANE_VERSION && b[8] != MESSAGE_LANE_VERSION {
            return Err(HelloError::Version(b[8]));
        }
        hmac::verify(&key.0, &b[..MAC_AT], &b[MAC_AT..]).map_err(|_| HelloError::BadMac)?;
        let mut token = [0u8; 32];
        token.copy_from_slice(&b[9..MAC_AT]);
        Ok((b[8], Hello { token }))
    }
}

/// Why the first bytes on a lane connection are not a [`Hello`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HelloError {
    /// They do not start with [`MAGIC`].
    #[error("not a manta bulk-lane hello")]
    NotAHello,
    /// Another lane version than [`LANE_VERSION`].
    #[error("bulk-lane version {0} is not supported (expected {LANE_VERSION})")]
    Version(u8),
    /// The MAC does not verify: the client does not hold this cluster's
    /// secret (or sent a forged hello).
    #[error("the hello's MAC does not verify under this cluster's key")]
    BadMac,
}

fn cipher(key: &Secret) -> LessSafeKey {
    // AES-256-GCM takes any 32-byte key: this cannot fail.
    LessSafeKey::new(UnboundKey::new(&AES_256_GCM, key).unwrap_or_else(|_| unreachable!("32-byte AES-256 key")))
}

fn nonce(seq: u64) -> Nonce {
    let mut n = [0u8; 12];
    n[4..].copy_from_slice(&seq.to_be_bytes());
    Nonce::assume_unique_for_key(n)
}

fn invalid(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.into())
}

/// Seals what is written to it into records on `out`. Call
/// [`SealWriter::finish`] to send the last record: without it the reader
/// sees a stream cut short. `flush` does not end a record.
#[allow(missing_debug_implementations)] // holds a key
pub struct SealWriter<W: Write> {
    out: W,
    key: LessSafeKey,
    /// `[header][plaintext]`, then the tag while a record is sent.
    buf: Vec<u8>,
    seq: u64,
}

impl<W: Write> SealWriter<W> {
    /// A writer sealing under `key` (which must seal nothing else).
    pub fn new(out: W, key: &Secret) -> Self {
        let mut buf = Vec::with_capacity(4 + RECORD_BYTES + TAG_BYTES);
        buf.extend_from_slice(&[0; 4]);
        SealWriter { out, key: cipher(key), buf, seq: 0 }
    }

    fn emit(&mut self, last: bool) -> io::Result<()> {
        let len = self.buf.len() - 4;
        let header = (len as u32 | if last { LAST } else { 0 }).to_be_bytes();
        self.buf[..4].copy_from_slice(&header);
        let tag = self
            .key
            .seal_in_place_separate_tag(nonce(self.seq), Aad::from(header), &mut self.buf[4..])
            .map_err(|_| io::Error::other("record too large to seal"))?;
        self.buf.extend_from_slice(tag.as_ref());
        self.out.write_all(&self.buf)?;
        self.seq += 1;
        self.buf.truncate(4);
        Ok(())
    }

    /// Sends what is buffered as the last record and flushes; returns the
    /// underlying writer.
    pub fn finish(mut self) -> io::Result<W> {
        self.emit(true)?;
        self.out.flush()?;
        Ok(self.out)
    }
}

impl<W: Write> Write for SealWriter<W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if self.buf.len() == 4 + RECORD_BYTES {
            self.emit(false)?;
        }
        let n = data.len().min(4 + RECORD_BYTES - self.buf.len());
        self.buf.extend_from_slice(&data[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

/// Reads the plaintext of a sealed record stream (see the module docs for
/// what it accepts).
#[allow(missing_debug_implementations)] // holds a key
pub struct OpenReader<R: Read> {
    inp: R,
    key: LessSafeKey,
    /// The current record's plaintext, when the caller's buffer was too
    /// small to open it in.
    buf: Vec<u8>,
    pos: usize,
    end: usize,
    seq: u64,
    last: bool,
    limit: u64,
    got: u64,
}

impl<R: Read> OpenReader<R> {
    /// A reader opening records sealed under `key`; more than `limit`
    /// plaintext bytes in all is an error.
    pub fn new(inp: R, key: &Secret, limit: u64) -> Self {
        OpenReader { inp, key: cipher(key), buf: Vec::new(), pos: 0, end: 0, seq: 0, last: false, limit, got: 0 }
    }

    /// True once the `LAST` record has been read and all of it returned.
    pub fn finished(&self) -> bool {
        self.last && self.pos == self.end
    }

    /// Plaintext bytes authenticated so far.
    pub fn received(&self) -> u64 {
        self.got
    }

    /// Reads and checks the next record's header: `(header, length, last)`.
    fn header(&mut self) -> io::Result<([u8; 4], usize, bool)> {
        let mut header = [0u8; 4];
        self.inp.read_exact(&mut header).map_err(|e| match e.kind() {
            io::ErrorKind::UnexpectedEof => invalid("the stream ended before its last record"),
            _ => e,
        })?;
        let word = u32::from_be_bytes(header);
        let (len, last) = ((word & !LAST) as usize, word & LAST != 0);
        if len > RECORD_BYTES {
            return Err(invalid(format!("a record of {len} bytes exceeds the {RECORD_BYTES}-byte cap")));
        }
        if len == 0 && !last {
            return Err(invalid("an empty record that is not the last"));
        }
        if self.got.saturating_add(len as u64) > self.limit {
            return Err(invalid(format!("more than the {} bytes announced", self.limit)));
        }
        Ok((header, len, last))
    }

    /// Reads a record's ciphertext into `text` and its tag, and opens it in
    /// place; on error `text` holds garbage that must not be used.
    fn open(&mut self, header: [u8; 4], text: &mut [u8], last: bool) -> io::Result<()> {
        let mut tag = [0u8; TAG_BYTES];
        let body = self.inp.read_exact(text).and_then(|()| self.inp.read_exact(&mut tag));
        body.map_err(|e| match e.kind() {
            io::ErrorKind::UnexpectedEof => invalid("the stream ended inside a record"),
            _ => e,
        })?;
        self.key
            .open_in_place_separate_tag(nonce(self.seq), Aad::from(header), Tag::from(tag), text, 0..)
            .map_err(|_| invalid(format!("record {} failed authentication", self.seq)))?;
        self.seq += 1;
        self.got += text.len() as u64;
        self.last = last;
        Ok(())
    }
}

impl<R: Read> Read for OpenReader<R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.end {
            if self.last || out.is_empty() {
                return Ok(0);
            }
            let (header, len, last) = self.header()?;
            if out.len() >= len {
                // Room for the whole record: open it where the caller wants
                // it (no copy through `buf`).
                self.open(header, &mut out[..len], last)?;
                if len > 0 {
                    return Ok(len);
                }
                continue;
            }
            let mut buf = std::mem::take(&mut self.buf);
            if buf.len() < len {
                // Grows to the largest record seen (at most one cap), zeroed once.
                buf.resize(len, 0);
            }
            let opened = self.open(header, &mut buf[..len], last);
            self.buf = buf;
            opened?;
            (self.pos, self.end) = (0, len);
        }
        let n = out.len().min(self.end - self.pos);
        out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// Opens a whole sealed stream held in memory (the fuzz target's entry
/// point): its plaintext, or why it is not a valid stream of at most
/// `limit` bytes.
#[cfg(any(test, feature = "fuzzing"))]
pub fn open_all(bytes: &[u8], key: &Secret, limit: u64) -> io::Result<Vec<u8>> {
    let mut r = OpenReader::new(bytes, key, limit);
    let mut out = Vec::new();
    r.read_to_end(&mut out)?;
    Ok(out)
}

/// Seals `plain` as one whole stream in memory (for tests and seeds).
#[cfg(any(test, feature = "fuzzing"))]
pub fn seal_all(plain: &[u8], key: &Secret) -> Vec<u8> {
    let mut w = SealWriter::new(Vec::new(), key);
    // Writing to a Vec cannot fail.
    let _ = w.write_all(plain);
    w.finish().unwrap_or_default()
}

/// Seals each of `records` as one record, in order, the last one marked
/// [`LAST`] (no records: one empty `LAST` record), as one stream in memory.
/// For tests and seeds, which need short records ([`SealWriter`] cuts records
/// at [`RECORD_BYTES`] only) and malformed but authentic ones (an empty
/// non-last record opens, then fails the reader's header check).
///
/// # Panics
///
/// If a record is longer than [`RECORD_BYTES`].
#[cfg(any(test, feature = "fuzzing"))]
pub fn seal_records(records: &[&[u8]], key: &Secret) -> Vec<u8> {
    assert!(records.iter().all(|r| r.len() <= RECORD_BYTES), "a record longer than {RECORD_BYTES} bytes");
    let mut w = SealWriter::new(Vec::new(), key);
    let (last, rest) = records.split_last().map_or((&[][..], &[][..]), |(last, rest)| (*last, rest));
    for record in rest {
        w.buf.extend_from_slice(record);
        // Writing to a Vec cannot fail.
        let _ = w.emit(false);
    }
    w.buf.extend_from_slice(last);
    w.finish().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: Secret = [7; 32];

    #[test]
    fn round_trips_empty_small_and_multi_record_streams() {
        for len in [0, 1, 1000, RECORD_BYTES, RECORD_BYTES + 1, 3 * RECORD_BYTES + 17] {
            let plain: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            let sealed = seal_all(&plain, &KEY);
            let records = len.div_ceil(RECORD_BYTES).max(1);
            assert_eq!(sealed.len(), len + records * (4 + TAG_BYTES), "len {len}");
            assert_eq!(open_all(&sealed, &KEY, len as u64).expect("opens"), plain, "len {len}");
        }
    }

    #[test]
    fn rejects_tampering_truncation_and_overrun() {
        let plain = vec![9u8; RECORD_BYTES + 10];
        let sealed = seal_all(&plain, &KEY);
        let kind = |b: &[u8], limit| open_all(b, &KEY, limit).map(|_| ()).map_err(|e| e.kind());
        // Every cut short of the end fails (never a shorter plaintext).
        for cut in [0, 3, 4, 100, 4 + RECORD_BYTES + TAG_BYTES, sealed.len() - 1] {
            assert_eq!(kind(&sealed[..cut], u64::MAX), Err(io::ErrorKind::InvalidData), "cut {cut}");
        }
        // A flipped bit anywhere fails authentication (or the header check).
        for at in [0, 5, 4 + RECORD_BYTES + 3, sealed.len() - 1] {
            let mut bad = sealed.clone();
            bad[at] ^= 1;
            assert_eq!(kind(&bad, u64::MAX), Err(io::ErrorKind::InvalidData), "flip at {at}");
        }
        // Another key, more bytes than announced, an oversized header.
        assert!(open_all(&sealed, &[8; 32], u64::MAX).is_err());
        assert_eq!(kind(&sealed, plain.len() as u64 - 1), Err(io::ErrorKind::InvalidData));
        let huge = ((RECORD_BYTES as u32 + 1) | LAST).to_be_bytes();
        assert_eq!(kind(&huge, u64::MAX), Err(io::ErrorKind::InvalidData));
        // Records swapped: the nonces no longer match.
        let first = 4 + RECORD_BYTES + TAG_BYTES;
        let swapped = [&sealed[first..], &sealed[..first]].concat();
        assert_eq!(kind(&swapped, u64::MAX), Err(io::ErrorKind::InvalidData));
    }

    #[test]
    fn seal_records_seals_each_slice_as_one_record() {
        let sealed = seal_records(&[b"ab", b"cde", b"f"], &KEY);
        assert_eq!(sealed.len(), 6 + 3 * (4 + TAG_BYTES));
        assert_eq!(open_all(&sealed, &KEY, 6).expect("opens"), b"abcdef");
        // The headers: lengths 2 and 3, then 1 with the LAST bit.
        assert_eq!(sealed[..4], 2u32.to_be_bytes());
        assert_eq!(sealed[4 + 2 + TAG_BYTES..][..4], 3u32.to_be_bytes());
        assert_eq!(sealed[2 * (4 + TAG_BYTES) + 5..][..4], (1 | LAST).to_be_bytes());
        // One record (or none) is what `seal_all` makes of the same plaintext.
        assert_eq!(seal_records(&[b"abcdef"], &KEY), seal_all(b"abcdef", &KEY));
        assert_eq!(seal_records(&[], &KEY), seal_all(b"", &KEY));
        // An empty non-last record is sealed, and refused by the reader.
        let empty_first = seal_records(&[b"", b"x"], &KEY);
        assert_eq!(empty_first.len(), 1 + 2 * (4 + TAG_BYTES));
        let err = open_all(&empty_first, &KEY, u64::MAX).expect_err("empty non-last record");
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        assert!(err.to_string().contains("empty record"), "{err}");
    }

    #[test]
    fn hello_round_trips_and_checks_magic_version_and_mac() {
        let (key, open) = (HelloKey::new(Some(&[9; 32])), HelloKey::new(None));
        let h = Hello { token: [3; 32] };
        assert_eq!(Hello::from_bytes(&h.to_bytes(&key), &key), Ok(h.clone()));
        assert_eq!(Hello::from_bytes(&h.to_bytes(&open), &open), Ok(h.clone()));
        // Another secret (or none) gives another MAC.
        assert_eq!(Hello::from_bytes(&h.to_bytes(&open), &key), Err(HelloError::BadMac));
        assert_eq!(Hello::from_bytes(&h.to_bytes(&HelloKey::new(Some(&[8; 32]))), &key), Err(HelloError::BadMac));
        // Any flipped bit of the token or the MAC fails.
        for at in [9, 20, MAC_AT - 1, MAC_AT, HELLO_BYTES - 1] {
            let mut b = h.to_bytes(&key);
            b[at] ^= 1;
            assert_eq!(Hello::from_bytes(&b, &key), Err(HelloError::BadMac), "flip at {at}");
        }
        let mut b = h.to_bytes(&key);
        b[8] = 1;
        assert_eq!(Hello::from_bytes(&b, &key), Err(HelloError::Version(1)));
        assert!(Hello::from_bytes(&b, &key).unwrap_err().to_string().contains("version 1"));
        b[0] = b'x';
        assert_eq!(Hello::from_bytes(&b, &key), Err(HelloError::NotAHello));
        assert_ne!(random_secret().expect("random"), random_secret().expect("random"));
    }
}
