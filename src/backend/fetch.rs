//! Fetching a remote object: the [`Fetch`] a backend receives, decodes
//! into and completes exactly once.
//!
//! Invariant: a [`Fetch`] completes its cell exactly once: by
//! [`Fetch::complete`], or, if it is dropped unfinished (the node shut
//! down), with [`Error::PeerUnreachable`], so no reader waits forever.

use super::cluster::{link_of, Cluster, DecodeFn};
use crate::cell::ObjectCell;
use crate::error::{Error, Text};
use crate::id::ObjectId;
use crate::slot::{Meta, Value};
use std::io::Read;
use std::sync::Arc;

/// A fetch of a remote object, handed to [`RemoteBackend::fetch`](super::RemoteBackend::fetch). The
/// backend reads the bytes from wherever the object lives, decodes them with
/// [`Fetch::decode`] (which may be called again, with a fresh reader, after a
/// failed attempt) and ends with [`Fetch::complete`]. Dropping it without
/// completing fails the object with [`Error::PeerUnreachable`].
pub struct Fetch {
    id: ObjectId,
    cell: Option<Arc<ObjectCell>>,
    cluster: Arc<Cluster>,
    decode: DecodeFn,
    hint: Arc<[u8]>,
}

/// Bytes that do not decode as the ref's type (malformed, truncated, a
/// different type, or over a decoder's cap).
#[derive(Debug, Clone, thiserror::Error)]
#[error("cannot decode a `{type_name}`: {message}")]
pub struct DecodeError {
    /// The type the bytes were decoded as.
    pub type_name: &'static str,
    /// What the decoder found.
    pub message: Text,
}

/// A decoded object value, ready for [`Fetch::complete`].
pub struct Decoded(Value, Meta);

impl std::fmt::Debug for Decoded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Decoded({:?}, {} bytes)", self.0, self.1.charged)
    }
}

impl std::fmt::Debug for Fetch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fetch").field("id", &self.id()).finish()
    }
}

impl Fetch {
    pub(super) fn new(cell: Arc<ObjectCell>, cluster: Arc<Cluster>, decode: DecodeFn, hint: Arc<[u8]>) -> Fetch {
        Fetch { id: cell.id(), cell: Some(cell), cluster, decode, hint }
    }

    /// The object to fetch.
    pub fn id(&self) -> ObjectId {
        self.id
    }

    /// The owner hint the ref carried (empty if it had none).
    pub fn owner_hint(&self) -> &[u8] {
        &self.hint
    }

    /// Decodes the object's CBOR encoding from `r` as the ref's type.
    pub fn decode(&self, r: &mut dyn Read) -> Result<Decoded, DecodeError> {
        let (v, m) = (self.decode)(r, &self.cluster.store)?;
        Ok(Decoded(v, m))
    }

    /// True if `bytes` more fit in the store now without evicting or
    /// spilling anything (so [`Fetch::complete`] will not block making
    /// room). One lock; nothing is reserved.
    pub fn fits_now(&self, bytes: usize) -> bool {
        self.cluster.store.fits_now(bytes)
    }

    /// Ends the fetch: stores the replica (charged to the store, waiting up
    /// to the put timeout for room; [`Error::StoreFull`] otherwise) and
    /// exports it, or fails the object with `result`'s error.
    pub fn complete(mut self, result: Result<Decoded, Error>) {
        let Some(cell) = self.cell.take() else { return };
        let store = &self.cluster.store;
        let outcome = result.and_then(|Decoded(v, meta)| {
            if meta.charged == 0 || store.reserve(meta.charged, true) {
                Ok((v, meta))
            } else {
                Err(Error::StoreFull { needed: meta.charged, capacity: store.capacity() })
            }
        });
        match outcome {
            Ok((v, meta)) => {
                let wake = cell.complete_stored(store, v, meta, None);
                // Tell the backend before waking readers: once `get`
                // returns, the replica is already on its way to the DHT.
                if let (Some(link), Some(b)) = (link_of(&cell), self.cluster.backend()) {
                    if link.announce() {
                        b.exported(cell.id(), true);
                    }
                }
                if let Some(wake) = wake {
                    wake.send();
                }
            }
            Err(e) => {
                cell.slot.complete(Err(e));
            }
        }
    }
}

impl Drop for Fetch {
    fn drop(&mut self) {
        if let Some(cell) = self.cell.take() {
            let reason = "the fetch was abandoned (the node shut down)".into();
            cell.slot.complete(Err(Error::PeerUnreachable { id: cell.id(), reason }));
        }
    }
}
