//! Object and actor ids: 128 bits, unique cluster-wide without
//! coordination, and unguessable.
//!
//! Every id is 128 bits from a cryptographically secure generator: the
//! keystream of ChaCha8 per thread (a stream cipher used as a CSPRNG, as
//! `rand`'s own generators are; eight rounds keep a wide margin over the
//! best known attacks, which reach seven), keyed from `rand::rng()`
//! (ChaCha12, seeded from the OS) when the thread makes its first id and
//! again every 8 GiB of keystream.
//! So an id says nothing about any other: a peer that has seen any number
//! of ids cannot predict another one, and holding a ref is the capability
//! to read its object (ids are also DHT keys and export-table keys). Two
//! ids collide with probability about n²/2¹²⁹ for n ids: never, in
//! practice. Cost: about 60 instructions per id (half of it the cipher),
//! no shared counter, so no contention between threads: each thread takes
//! [`BATCH`] ids' worth of keystream at a time and hands them out in order
//! (a buffered id is handed out once and never again).

use serde::{Deserialize, Serialize};
use std::fmt;

/// The identity of one object in the store (and, clustered, in the cluster).
#[derive(Copy, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ObjectId(u64, u64);

/// Ids drawn from the generator per refill of a thread's buffer.
const BATCH: usize = 32;

/// Refills under one key before a thread takes a fresh one (8 GiB of
/// keystream; far below the cipher's 256 GiB per key and nonce).
const REKEY: u32 = 1 << 24;

/// A thread's keystream and unused ids (16 bytes of it each).
struct Batch {
    /// ChaCha8 under a key from `rand::rng()`, and refills made with it.
    cipher: Option<(chacha20::ChaCha8, u32)>,
    ids: [[u8; 16]; BATCH],
    /// Ids handed out from `ids` (`BATCH`: empty).
    used: usize,
}

thread_local! {
    static BATCH_IDS: std::cell::RefCell<Batch> =
        const { std::cell::RefCell::new(Batch { cipher: None, ids: [[0; 16]; BATCH], used: BATCH }) };
}

/// Fills a thread's buffer with the next [`BATCH`] ids: the keystream of
/// its cipher (keyed on first use and every [`REKEY`] refills), written
/// over zeros. (A block cipher's keystream straight into the buffer: the
/// generic RNG wrappers cost more per id than the cipher itself.)
#[cold]
fn refill(b: &mut Batch) {
    use chacha20::cipher::{KeyIvInit, StreamCipher};
    use rand::Rng;
    if b.cipher.as_ref().is_none_or(|(_, n)| *n >= REKEY) {
        let mut key = [0u8; 32];
        rand::rng().fill_bytes(&mut key);
        b.cipher = Some((chacha20::ChaCha8::new(&key.into(), &[0u8; 12].into()), 0));
    }
    let bytes = b.ids.as_flattened_mut();
    bytes.fill(0);
    if let Some((cipher, n)) = b.cipher.as_mut() {
        cipher.apply_keystream(bytes);
        *n += 1;
    }
    b.used = 0;
}

impl ObjectId {
    /// A fresh id: 128 bits from a per-thread cryptographically secure
    /// keystream, so unique in practice cluster-wide without coordination,
    /// and unguessable from any other id (holding a ref is the capability
    /// to read its object).
    pub fn fresh() -> ObjectId {
        BATCH_IDS.with(|b| {
            let mut b = b.borrow_mut();
            let b = &mut *b;
            if b.used >= BATCH {
                refill(b);
            }
            let v = u128::from_ne_bytes(b.ids[b.used]);
            b.used += 1;
            ObjectId((v >> 64) as u64, v as u64)
        })
    }

    /// The id as 16 big-endian bytes (its wire and DHT-key form).
    pub fn to_bytes(self) -> [u8; 16] {
        let mut b = [0u8; 16];
        b[..8].copy_from_slice(&self.0.to_be_bytes());
        b[8..].copy_from_slice(&self.1.to_be_bytes());
        b
    }

    /// Rebuilds an id from [`ObjectId::to_bytes`].
    pub fn from_bytes(b: [u8; 16]) -> ObjectId {
        let (hi, lo) = b.split_at(8);
        let word = |s: &[u8]| s.iter().fold(0u64, |acc, &x| (acc << 8) | x as u64);
        ObjectId(word(hi), word(lo))
    }
}

impl fmt::Debug for ObjectId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ObjectId({self})")
    }
}

impl fmt::Display for ObjectId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}-{:x}", self.0, self.1)
    }
}

/// The identity of one actor: fresh for every actor a runtime starts (a
/// restart keeps it: it is the same actor with new state). Drawn from the
/// same space as [`ObjectId`]s, so an actor id never equals an object id
/// of this process.
#[derive(Copy, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ActorId(ObjectId);

impl ActorId {
    /// A fresh id, never returned before in this process.
    pub fn fresh() -> ActorId {
        ActorId(ObjectId::fresh())
    }

    /// The id as 16 big-endian bytes.
    pub fn to_bytes(self) -> [u8; 16] {
        self.0.to_bytes()
    }

    /// Rebuilds an id from [`ActorId::to_bytes`].
    pub fn from_bytes(b: [u8; 16]) -> ActorId {
        ActorId(ObjectId::from_bytes(b))
    }
}

impl fmt::Debug for ActorId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ActorId({})", self.0)
    }
}

impl fmt::Display for ActorId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_unique_and_round_trip() {
        let a = ObjectId::fresh();
        let b = ObjectId::fresh();
        assert_ne!(a, b);
        assert_eq!(ObjectId::from_bytes(a.to_bytes()), a);
    }

    /// Each thread keys its own generator: ids made on different threads
    /// (more than one batch each) never repeat across them.
    #[test]
    fn threads_draw_distinct_ids() {
        let draw = || std::thread::spawn(|| (0..3 * BATCH + 5).map(|_| ObjectId::fresh()).collect::<Vec<_>>());
        let (a, b) = (draw(), draw());
        let mut all: Vec<ObjectId> = a.join().unwrap();
        all.extend(b.join().unwrap());
        let n = all.len();
        all.sort();
        all.dedup();
        assert_eq!(all.len(), n, "an id repeated across threads or batches");
    }

    /// After [`REKEY`] refills a thread takes a new key (and its ids stay
    /// distinct across the change).
    #[test]
    fn a_thread_takes_a_new_key_after_rekey_refills() {
        std::thread::spawn(|| {
            let mut ids = vec![ObjectId::fresh()];
            BATCH_IDS.with(|b| b.borrow_mut().cipher.as_mut().expect("keyed by the first id").1 = REKEY);
            ids.extend((0..2 * BATCH).map(|_| ObjectId::fresh()));
            let refills = BATCH_IDS.with(|b| b.borrow().cipher.as_ref().map(|c| c.1));
            assert_eq!(refills, Some(2), "not rekeyed");
            let n = ids.len();
            ids.sort();
            ids.dedup();
            assert_eq!(ids.len(), n);
        })
        .join()
        .unwrap();
    }

    /// Neighbouring ids share nothing: no common prefix, no counter step
    /// (a peer that sees ids cannot count its way to others).
    #[test]
    fn consecutive_ids_are_unrelated() {
        let ids: Vec<[u8; 16]> = (0..1_000).map(|_| ObjectId::fresh().to_bytes()).collect();
        let mut set = std::collections::HashSet::new();
        for w in ids.windows(2) {
            assert_ne!(w[0][..8], w[1][..8], "shared high half");
            let lo = |b: &[u8; 16]| u64::from_be_bytes(b[8..].try_into().unwrap());
            assert!(lo(&w[1]).wrapping_sub(lo(&w[0])) > 1 << 20, "counter-like low half");
        }
        for id in &ids {
            assert!(set.insert(*id), "repeated id");
        }
        // Every bit varies across ids (no fixed fields).
        let (mut ones, mut zeros) = ([false; 128], [false; 128]);
        for id in &ids {
            for bit in 0..128 {
                if id[bit / 8] >> (bit % 8) & 1 == 1 {
                    ones[bit] = true;
                } else {
                    zeros[bit] = true;
                }
            }
        }
        assert!(ones.iter().chain(&zeros).all(|&b| b));
    }
}
