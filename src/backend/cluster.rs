//! One runtime's side of the cluster: the attached backend and the export
//! table of exported and remote objects, and the link each registered cell
//! keeps to it.
//!
//! Invariants:
//! - at most one live cell per id per table; an entry is removed only by
//!   the drop of the cell it points to (pointer-checked), so a stale drop
//!   never removes a newer cell's entry (the table protocol is in
//!   `export`, model-checked with loom);
//! - a remote cell's fetch starts at most once ([`CellLink::demand`]).

use super::{DecodeError, Fetch, RemoteBackend};
use crate::cell::{Link, ObjectCell};
use crate::error::Error;
use crate::export::{Claim, Table};
use crate::heap_size::{decoder_of, encoder_of, Encode};
use crate::id::ObjectId;
use crate::slot::{Meta, Value};
use crate::store::Store;
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::any::{Any, TypeId};
use std::io::Read;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock, Weak};

/// Decodes a remote object's CBOR as the type its ref was made with.
pub(super) type DecodeFn = fn(&mut dyn Read, &Store) -> Result<(Value, Meta), DecodeError>;

fn decode_as<T: DeserializeOwned + Any + Send + Sync>(
    r: &mut dyn Read,
    store: &Store,
) -> Result<(Value, Meta), DecodeError> {
    let value = if TypeId::of::<T>() == TypeId::of::<Vec<u8>>() {
        // Large byte strings reuse a freed replica's buffer (see `store`).
        crate::heap_size::decode_bytes_reusing(r, &|len| store.recycled(len))
    } else {
        decoder_of::<T>()(r)
    };
    let value = value.map_err(|m| DecodeError { type_name: std::any::type_name::<T>(), message: m.into() })?;
    Ok(store.measure_value::<T>(value))
}

/// One runtime's side of the cluster: the attached backend and the table of
/// exported and remote objects.
pub(crate) struct Cluster {
    backend: RwLock<Option<Arc<dyn RemoteBackend>>>,
    /// Exported and remote objects (protocol and invariants: `export`).
    pub(super) table: Table<ObjectId, ObjectCell, Encode>,
    pub(super) store: Arc<Store>,
}

/// What links a cell to the table it is registered in.
pub(crate) struct CellLink {
    cluster: Weak<Cluster>,
    /// Set for cells made by deserializing a ref to a remote object.
    origin: Option<Origin>,
    /// The backend was told about this object (so it must hear of its drop).
    announced: AtomicBool,
    /// Remote borrowers, as the backend reports them
    /// (`Backend::add_borrowers`; shown by `ref_counts`).
    pub(crate) borrowers: std::sync::atomic::AtomicUsize,
}

struct Origin {
    hint: Arc<[u8]>,
    decode: DecodeFn,
    started: Claim,
}

/// The cell's link, if it is one of ours (every link is: only this module
/// makes them).
pub(crate) fn link_of(cell: &ObjectCell) -> Option<&CellLink> {
    cell.link().and_then(|l| l.as_any().downcast_ref::<CellLink>())
}

impl Cluster {
    pub(crate) fn new(store: Arc<Store>) -> Arc<Cluster> {
        Arc::new(Cluster { backend: RwLock::new(None), table: Table::new(), store })
    }

    pub(super) fn backend(&self) -> Option<Arc<dyn RemoteBackend>> {
        self.backend.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub(super) fn set_backend(&self, backend: Option<Arc<dyn RemoteBackend>>) {
        *self.backend.write().unwrap_or_else(|p| p.into_inner()) = backend;
    }

    pub(super) fn lookup(&self, id: ObjectId) -> Option<(Arc<ObjectCell>, Encode)> {
        self.table.lookup(id)
    }

    /// Registers a local cell (idempotent) and tells the backend once.
    pub(super) fn export(self: &Arc<Self>, cell: &Arc<ObjectCell>, encode: Encode) -> Arc<[u8]> {
        cell.link_or_init(|| {
            Box::new(CellLink {
                cluster: Arc::downgrade(self),
                origin: None,
                announced: AtomicBool::new(false),
                borrowers: Default::default(),
            })
        });
        let Some(link) = link_of(cell) else { return Arc::from(&[][..]) };
        let cluster = link.cluster.upgrade();
        let cluster = cluster.as_ref().unwrap_or(self);
        if let Some(origin) = &link.origin {
            cluster.table.insert_if_vacant(cell.id(), cell, encode);
            return origin.hint.clone(); // a replica: the owner stays the owner
        }
        // A local object displaces a remote cell of the same id (a task
        // run here for another node, whose ref arrived before it started):
        // from now on this runtime serves and imports the real one.
        let remote = |old: &ObjectCell| link_of(old).is_some_and(|l| l.origin.is_some());
        cluster.table.insert_unless(cell.id(), cell, encode, |old| !remote(old));
        let backend = cluster.backend();
        if let Some(b) = &backend {
            if !link.announced.swap(true, Ordering::AcqRel) {
                b.exported(cell.id(), false);
            }
        }
        backend.map_or_else(|| Arc::from(&[][..]), |b| b.owner_hint())
    }

    /// The cell for a deserialized ref: the local one, or a new remote cell
    /// (whose owner the backend is told about: a new borrow).
    pub(super) fn import<T: DeserializeOwned + Serialize + Any + Send + Sync>(
        self: &Arc<Self>,
        id: ObjectId,
        hint: Vec<u8>,
    ) -> Arc<ObjectCell> {
        let mut made: Option<Arc<[u8]>> = None;
        let cell = self.table.get_or_insert_with(id, || {
            let hint: Arc<[u8]> = hint.into();
            made = Some(hint.clone());
            (self.remote_cell::<T>(id, hint), encoder_of::<T>())
        });
        if let (Some(hint), Some(b)) = (made, self.backend()) {
            b.borrowed(id, &hint);
        }
        cell
    }

    pub(super) fn remote_cell<T: DeserializeOwned + Serialize + Any + Send + Sync>(
        self: &Arc<Self>,
        id: ObjectId,
        hint: Arc<[u8]>,
    ) -> Arc<ObjectCell> {
        let link = CellLink {
            cluster: Arc::downgrade(self),
            origin: Some(Origin { hint, decode: decode_as::<T>, started: Claim::new() }),
            announced: AtomicBool::new(false),
            borrowers: Default::default(),
        };
        ObjectCell::remote(id, Box::new(link))
    }
}

impl CellLink {
    /// The cluster the cell is registered with, if it is still alive.
    pub(super) fn cluster(&self) -> Option<Arc<Cluster>> {
        self.cluster.upgrade()
    }

    /// Marks the cell as announced to the backend; true the first time.
    pub(super) fn announce(&self) -> bool {
        !self.announced.swap(true, Ordering::AcqRel)
    }
}

impl Link for CellLink {
    fn as_any(&self) -> &dyn Any {
        self
    }

    fn is_remote(&self) -> bool {
        self.origin.is_some()
    }

    /// Starts the fetch of a remote cell, once (see `ObjectCell::demand`).
    fn demand(&self, cell: &Arc<ObjectCell>) {
        let Some(origin) = &self.origin else { return };
        if !origin.started.claim() {
            return;
        }
        let cluster = self.cluster.upgrade();
        let Some(backend) = cluster.as_ref().and_then(|c| c.backend()) else {
            let reason = "no cluster node is attached to the runtime that holds this ref".into();
            cell.slot.complete(Err(Error::PeerUnreachable { id: cell.id(), reason }));
            return;
        };
        let Some(cluster) = cluster else { return };
        backend.fetch(Fetch::new(cell.clone(), cluster, origin.decode, origin.hint.clone()));
    }

    /// Called from the cell's drop: unregisters it and tells the backend.
    fn dropped(&self, id: ObjectId, cell: *const ObjectCell) {
        let Some(cluster) = self.cluster.upgrade() else { return };
        cluster.table.remove_if_same(id, cell);
        let Some(b) = cluster.backend() else { return };
        if self.announced.load(Ordering::Acquire) {
            b.freed(id);
        }
        if let Some(origin) = &self.origin {
            b.released(id, &origin.hint);
        }
    }
}
