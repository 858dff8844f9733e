//! Object and actor ids: 128 bits, unique cluster-wide without
//! coordination.
//!
//! The high 64 bits are a random prefix chosen once per process (from the OS
//! seeded `RandomState`, the process id and the clock); the low 64 bits are a
//! process-wide counter. Two processes collide only if their prefixes do
//! (probability ~2^-64 per pair); within a process ids never repeat.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

/// The identity of one object in the store (and, clustered, in the cluster).
#[derive(Copy, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ObjectId(u64, u64);

static COUNTER: AtomicU64 = AtomicU64::new(1);
static PREFIX: OnceLock<u64> = OnceLock::new();

fn prefix() -> u64 {
    *PREFIX.get_or_init(|| {
        use std::hash::{BuildHasher, Hasher};
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u32(std::process::id());
        if let Ok(t) = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
            h.write_u128(t.as_nanos());
        }
        h.finish()
    })
}

impl ObjectId {
    /// A fresh id, never returned before in this process.
    pub fn fresh() -> ObjectId {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        ObjectId(prefix(), n)
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
        assert_eq!(a.to_bytes()[..8], b.to_bytes()[..8], "same process prefix");
    }
}
