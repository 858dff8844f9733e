//! The cluster hook: how a node (crate `manta-p2p`) plugs into a runtime,
//! and how object refs cross process boundaries. The core has no network
//! code: a node implements [`RemoteBackend`] and attaches it with
//! [`Runtime::attach_remote`].
//!
//! # Refs on the wire
//! - Serializing an `ObjectRef<T>` (serde, `T: Serialize`) writes its id and
//!   an opaque *owner hint* (the backend's [`RemoteBackend::owner_hint`]: for
//!   a p2p node, its peer id and addresses) and *exports* the object: the
//!   runtime's export table maps the id to the cell (weakly: exporting does
//!   not keep the object alive) and to `T`'s CBOR encoder, so the node can
//!   serve its bytes ([`Runtime::serve_object`]). The backend is told once
//!   ([`RemoteBackend::exported`]) so it can announce the object.
//! - Deserializing an `ObjectRef<T>` binds it to a runtime (see *Context*):
//!   if that runtime's table has the id, the ref is that object; otherwise
//!   it is a new *remote cell*, pending, registered in the table so later
//!   deserializations of the same id share it. Nothing moves until a reader
//!   demands the value (get, wait, on_ready, await, a task taking it): the
//!   first demand calls [`RemoteBackend::fetch`], once. The backend decodes
//!   the bytes as they arrive ([`Fetch::decode`], streaming: no copy of the
//!   encoded object is needed) and ends with [`Fetch::complete`], which
//!   charges the replica to the store like any object and exports it, so
//!   this runtime serves it too.
//! - When an exported object is freed here, its table entry goes and the
//!   backend is told ([`RemoteBackend::freed`]) to withdraw it.
//!
//! # Context
//! serde cannot pass a runtime to `Deserialize`, so a ref binds to, in
//! order: the runtime entered with [`Runtime::enter`] on this thread, the
//! runtime whose worker runs the code, the runtime a backend was most
//! recently attached to, the [`crate::init`] runtime. With none, the
//! deserialization fails with a serde error.
//!
//! # Invariants
//! - At most one live cell per id per runtime table; an entry is removed
//!   only by the drop of the cell it points to (pointer-checked), so a stale
//!   drop never removes a newer cell's entry (the table protocol is in
//!   `export`, model-checked with loom).
//! - A remote cell's fetch starts at most once; a [`Fetch`] dropped without
//!   completing completes the cell with [`Error::PeerUnreachable`], so no
//!   reader waits forever.

use crate::error::Error;
use crate::export::{Claim, Table};
use crate::heap_size::{decoder_of, encoder_of, Encode};
use crate::id::ObjectId;
use crate::object::{ObjectCell, ObjectRef};
use crate::runtime::Runtime;
use crate::slot::{Meta, Value};
use crate::store::Store;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::any::{Any, TypeId};
use std::io::{Read, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock, Weak};

/// Largest owner hint a deserialized ref may carry.
pub const MAX_HINT_BYTES: usize = 4096;

/// What a cluster node provides to a runtime. Implemented by `manta-p2p`;
/// every method must return quickly (hand work to the node's own threads).
pub trait RemoteBackend: Send + Sync + 'static {
    /// The hint written into refs this runtime serializes: how to reach the
    /// owner (opaque to the core, at most [`MAX_HINT_BYTES`]).
    fn owner_hint(&self) -> Arc<[u8]>;
    /// An object of this runtime may now be read by other nodes: a ref to
    /// it was serialized (`replica` false), or a fetched replica was stored
    /// (`replica` true; called before the fetch's readers wake). Called once
    /// per object.
    fn exported(&self, id: ObjectId, replica: bool);
    /// An exported object was freed here.
    fn freed(&self, id: ObjectId);
    /// Fetch a remote object's value; see [`Fetch`].
    fn fetch(&self, fetch: Fetch);
    /// A ref to a remote object was deserialized here and made a new
    /// remote cell: this runtime now borrows `id` from the owner `hint`
    /// names (the borrower protocol of cluster-wide reference counting).
    /// Balanced by exactly one [`RemoteBackend::released`].
    fn borrowed(&self, id: ObjectId, owner_hint: &[u8]) {
        let _ = (id, owner_hint);
    }
    /// The last ref to remote cell `id` here was dropped (a cell made by
    /// deserialization or by [`Runtime::remote_promise`]).
    fn released(&self, id: ObjectId, owner_hint: &[u8]) {
        let _ = (id, owner_hint);
    }
    /// The backend as `Any`, so its implementor can find itself again
    /// through [`Runtime::remote_backend`].
    fn as_any(&self) -> &dyn Any;
}

type DecodeFn = fn(&mut dyn Read, &Store) -> Result<(Value, Meta), String>;

fn decode_as<T: DeserializeOwned + Any + Send + Sync>(
    r: &mut dyn Read,
    store: &Store,
) -> Result<(Value, Meta), String> {
    let value = if TypeId::of::<T>() == TypeId::of::<Vec<u8>>() {
        // Large byte strings reuse a freed replica's buffer (see `store`).
        crate::heap_size::decode_bytes_reusing(r, &|len| store.recycled(len))?
    } else {
        decoder_of::<T>()(r)?
    };
    Ok(store.measure_value::<T>(value))
}

/// One runtime's side of the cluster: the attached backend and the table of
/// exported and remote objects.
pub(crate) struct Cluster {
    backend: RwLock<Option<Arc<dyn RemoteBackend>>>,
    /// Exported and remote objects (protocol and invariants: `export`).
    table: Table<ObjectId, ObjectCell, Encode>,
    store: Arc<Store>,
}

/// What links a cell to the table it is registered in.
pub(crate) struct CellLink {
    cluster: Weak<Cluster>,
    /// Set for cells made by deserializing a ref to a remote object.
    origin: Option<Origin>,
    /// The backend was told about this object (so it must hear of its drop).
    announced: AtomicBool,
}

struct Origin {
    hint: Arc<[u8]>,
    decode: DecodeFn,
    started: Claim,
}

impl Cluster {
    pub(crate) fn new(store: Arc<Store>) -> Arc<Cluster> {
        Arc::new(Cluster { backend: RwLock::new(None), table: Table::new(), store })
    }

    fn backend(&self) -> Option<Arc<dyn RemoteBackend>> {
        self.backend.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn lookup(&self, id: ObjectId) -> Option<(Arc<ObjectCell>, Encode)> {
        self.table.lookup(id)
    }

    /// Registers a local cell (idempotent) and tells the backend once.
    fn export(self: &Arc<Self>, cell: &Arc<ObjectCell>, encode: Encode) -> Arc<[u8]> {
        let link = cell.link.get_or_init(|| {
            Box::new(CellLink { cluster: Arc::downgrade(self), origin: None, announced: AtomicBool::new(false) })
        });
        let cluster = link.cluster.upgrade();
        let cluster = cluster.as_ref().unwrap_or(self);
        if let Some(origin) = &link.origin {
            cluster.table.insert_if_vacant(cell.id, cell, encode);
            return origin.hint.clone(); // a replica: the owner stays the owner
        }
        // A local object displaces a remote cell of the same id (a task
        // run here for another node, whose ref arrived before it started):
        // from now on this runtime serves and imports the real one.
        let remote = |old: &ObjectCell| old.link.get().is_some_and(|l| l.origin.is_some());
        cluster.table.insert_unless(cell.id, cell, encode, |old| !remote(old));
        let backend = cluster.backend();
        if let Some(b) = &backend {
            if !link.announced.swap(true, Ordering::AcqRel) {
                b.exported(cell.id, false);
            }
        }
        backend.map_or_else(|| Arc::from(&[][..]), |b| b.owner_hint())
    }

    /// The cell for a deserialized ref: the local one, or a new remote cell
    /// (whose owner the backend is told about: a new borrow).
    fn import<T: DeserializeOwned + Serialize + Any + Send + Sync>(
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

    fn remote_cell<T: DeserializeOwned + Serialize + Any + Send + Sync>(
        self: &Arc<Self>,
        id: ObjectId,
        hint: Arc<[u8]>,
    ) -> Arc<ObjectCell> {
        let link = CellLink {
            cluster: Arc::downgrade(self),
            origin: Some(Origin { hint, decode: decode_as::<T>, started: Claim::new() }),
            announced: AtomicBool::new(false),
        };
        ObjectCell::remote(id, Box::new(link))
    }
}

impl CellLink {
    /// True for a cell made by deserializing a ref to a remote object.
    pub(crate) fn is_remote(&self) -> bool {
        self.origin.is_some()
    }

    /// Starts the fetch of a remote cell, once (see `ObjectCell::demand`).
    pub(crate) fn demand(&self, cell: &Arc<ObjectCell>) {
        let Some(origin) = &self.origin else { return };
        if !origin.started.claim() {
            return;
        }
        let cluster = self.cluster.upgrade();
        let Some(backend) = cluster.as_ref().and_then(|c| c.backend()) else {
            let reason = "no cluster node is attached to the runtime that holds this ref".into();
            cell.slot.complete(Err(Error::PeerUnreachable { id: cell.id, reason }));
            return;
        };
        let Some(cluster) = cluster else { return };
        backend.fetch(Fetch {
            id: cell.id,
            cell: Some(cell.clone()),
            cluster,
            decode: origin.decode,
            hint: origin.hint.clone(),
        });
    }

    /// Called from the cell's drop: unregisters it and tells the backend.
    pub(crate) fn dropped(&self, id: ObjectId, cell: *const ObjectCell) {
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

/// A fetch of a remote object, handed to [`RemoteBackend::fetch`]. The
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
    /// The object to fetch.
    pub fn id(&self) -> ObjectId {
        self.id
    }

    /// The owner hint the ref carried (empty if it had none).
    pub fn owner_hint(&self) -> &[u8] {
        &self.hint
    }

    /// Decodes the object's CBOR encoding from `r` as the ref's type. The
    /// error is a message (malformed bytes, wrong type, short input).
    pub fn decode(&self, r: &mut dyn Read) -> Result<Decoded, String> {
        let (v, m) = (self.decode)(r, &self.cluster.store)?;
        Ok(Decoded(v, m))
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
                if let (Some(link), Some(b)) = (cell.link.get(), self.cluster.backend()) {
                    if !link.announced.swap(true, Ordering::AcqRel) {
                        b.exported(cell.id, true);
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
            cell.slot.complete(Err(Error::PeerUnreachable { id: cell.id, reason }));
        }
    }
}

/// What [`Runtime::serve_object`] found.
#[derive(Debug)]
pub enum Served {
    /// Bytes `[offset, offset + data.len())` of the object's CBOR encoding,
    /// which is `total` bytes long.
    Chunk {
        /// Length of the whole encoding.
        total: u64,
        /// The requested window (shorter at the end).
        data: Vec<u8>,
    },
    /// This runtime does not hold the object.
    NotFound,
    /// The object is here but not done yet (its task is running): wait
    /// with [`Runtime::object_done`] and ask again.
    Pending,
    /// The object failed: its error.
    Failed(Error),
}

/// A writer that passes on only the window `[start, end)` of what goes
/// through it and counts the rest (`pos` ends as the encoding's length).
struct Window<W: Write> {
    pos: u64,
    start: u64,
    end: u64,
    out: W,
}

impl<W: Write> Write for Window<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let (b0, b1) = (self.pos, self.pos + buf.len() as u64);
        let (lo, hi) = (b0.max(self.start), b1.min(self.end));
        if lo < hi {
            self.out.write_all(&buf[(lo - b0) as usize..(hi - b0) as usize])?;
        }
        self.pos = b1;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.out.flush()
    }
}

impl Runtime {
    /// Attaches a cluster node: refs serialized from now on carry its hint,
    /// and remote refs are fetched through it. Replaces any earlier backend.
    pub fn attach_remote(&self, backend: Arc<dyn RemoteBackend>) {
        let c = self.cluster();
        *c.backend.write().unwrap_or_else(|p| p.into_inner()) = Some(backend);
        crate::runtime::set_last_attached(self);
    }

    /// Detaches the cluster node (fetches not yet started then fail with
    /// [`Error::PeerUnreachable`]).
    pub fn detach_remote(&self) {
        *self.cluster().backend.write().unwrap_or_else(|p| p.into_inner()) = None;
    }

    /// Runs `f` with this runtime as the one refs deserialized on this
    /// thread bind to (see the `remote` module docs); restores the previous
    /// one afterwards, also if `f` panics.
    pub fn enter<R>(&self, f: impl FnOnce() -> R) -> R {
        crate::runtime::with_entered(self, f)
    }

    /// True if this runtime holds `id` (exported or a fetched replica, and
    /// done).
    pub fn holds_object(&self, id: ObjectId) -> bool {
        self.cluster().lookup(id).is_some_and(|(c, _)| c.slot.is_done() && !c.slot.is_failed())
    }

    /// True if `id` is exported here and its value (or error) is in memory,
    /// so [`Runtime::serve_object`] answers without blocking on disk or on
    /// a rebuild (only the window's encoding is left to do).
    pub fn object_in_memory(&self, id: ObjectId) -> bool {
        self.cluster().lookup(id).is_some_and(|(c, _)| c.slot.in_memory() || c.slot.is_failed())
    }

    /// Serves up to `max_len` bytes of exported object `id`'s CBOR encoding
    /// from `offset` (for a node answering a peer's fetch). Each call encodes
    /// the object again but copies only the window: for `Vec<u8>` and other
    /// byte-string types that is one copy of the window.
    pub fn serve_object(&self, id: ObjectId, offset: u64, max_len: usize) -> Served {
        let mut data = Vec::new();
        let end = offset.saturating_add(max_len as u64);
        let mut w = Window { pos: 0, start: offset, end, out: &mut data };
        match self.write_object(id, 0, &mut w) {
            Ok(total) => Served::Chunk { total, data },
            Err(why) => why,
        }
    }

    /// Writes exported object `id`'s CBOR encoding, from byte `skip` on, to
    /// `out` in one encoding pass (for a node streaming a large object to a
    /// peer: unlike [`Runtime::serve_object`], the object is encoded once
    /// whatever its size). Returns the encoding's total length, or why
    /// nothing (or not everything) was written: `NotFound`, `Pending`, or
    /// `Failed` (the object failed, cannot be encoded, or `out` failed).
    pub fn write_object(&self, id: ObjectId, skip: u64, out: &mut dyn Write) -> Result<u64, Served> {
        let Some((cell, encode)) = self.cluster().lookup(id) else { return Err(Served::NotFound) };
        if !cell.slot.is_done() {
            return Err(if cell.link.get().is_some_and(|l| l.is_remote()) {
                Served::NotFound
            } else {
                Served::Pending
            });
        }
        let value = match cell.read_value() {
            None => return Err(Served::Pending),
            Some(Err(e)) => return Err(Served::Failed(e)),
            Some(Ok(v)) => v,
        };
        let mut w = Window { pos: 0, start: skip, end: u64::MAX, out };
        if let Err(message) = encode(&*value.data, &mut w).and_then(|()| w.flush().map_err(|e| e.to_string())) {
            return Err(Served::Failed(Error::ObjectLost { id, reason: format!("cannot encode: {message}").into() }));
        }
        Ok(w.pos)
    }

    /// A future that resolves once exported object `id` is done (at once
    /// if it is, or if it is not exported here). Works on any executor.
    pub fn object_done(&self, id: ObjectId) -> crate::object::Done {
        crate::object::Done::new(self.cluster().lookup(id).map(|(c, _)| c))
    }

    /// The attached backend, if any (see [`RemoteBackend::as_any`]).
    pub fn remote_backend(&self) -> Option<Arc<dyn RemoteBackend>> {
        self.cluster().backend()
    }

    /// A ref to a value another node will produce (a remote task's result):
    /// a new pending remote cell with a fresh id, registered in the export
    /// table, whose owner hint is `hint`. Like a deserialized ref, it is
    /// fetched through [`RemoteBackend::fetch`] on first demand (the backend
    /// knows the id and completes the fetch when the result arrives), and
    /// its drop calls [`RemoteBackend::released`]. No `borrowed` call is made.
    pub fn remote_promise<T: Serialize + DeserializeOwned + Any + Send + Sync>(&self, hint: Arc<[u8]>) -> ObjectRef<T> {
        let c = self.cluster();
        let id = ObjectId::fresh();
        let cell = c.table.get_or_insert_with(id, || (c.remote_cell::<T>(id, hint), encoder_of::<T>()));
        ObjectRef::from_cell(cell)
    }

    /// A ref to exported (or remote) object `id`, if it is alive here: the
    /// node holds it to keep the object alive for a borrower elsewhere.
    pub fn pin_object(&self, id: ObjectId) -> Option<crate::object::AnyRef> {
        self.cluster().lookup(id).map(|(c, _)| ObjectRef::<()>::from_cell(c).untyped())
    }

    /// Exports a local object (as serializing a ref to it would) so peers
    /// can read it by id, e.g. a task's result whose id a remote submitter
    /// chose.
    pub fn export_object<T: Serialize + Any + Send + Sync>(&self, r: &ObjectRef<T>) {
        let _ = self.cluster().export(&r.cell, encoder_of::<T>());
    }

    /// Number of objects in the export table (exported, remote or replica).
    pub fn exported_objects(&self) -> usize {
        self.cluster().table.live()
    }
}

/// A ref as it travels: its id and its owner's hint.
#[derive(Serialize, Deserialize)]
struct WireRef {
    id: ObjectId,
    #[serde(with = "serde_bytes")]
    owner: Vec<u8>,
}

thread_local! {
    /// Refs serialized on this thread inside [`collect_serialized`].
    static COLLECTED: std::cell::RefCell<Option<Vec<crate::object::AnyRef>>> = const { std::cell::RefCell::new(None) };
}

/// Runs `f` and returns, with its result, a handle to every `ObjectRef`
/// serialized on this thread meanwhile (a node sending refs out of band
/// keeps these alive until the receiver has registered its borrow).
/// Nested calls each see their own refs; the collection ends also if `f`
/// panics.
pub fn collect_serialized<R>(f: impl FnOnce() -> R) -> (R, Vec<crate::object::AnyRef>) {
    struct Restore(Option<Vec<crate::object::AnyRef>>);
    impl Drop for Restore {
        fn drop(&mut self) {
            let outer = self.0.take();
            COLLECTED.with(|c| *c.borrow_mut() = outer);
        }
    }
    let outer = COLLECTED.with(|c| c.borrow_mut().replace(Vec::new()));
    let restore = Restore(outer);
    let r = f();
    let mine = COLLECTED.with(|c| c.borrow_mut().take()).unwrap_or_default();
    drop(restore);
    (r, mine)
}

impl<T: Serialize + Any + Send + Sync> Serialize for ObjectRef<T> {
    /// Writes the id and owner hint, and exports the object (module docs).
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        COLLECTED.with(|c| {
            if let Some(v) = c.borrow_mut().as_mut() {
                v.push(ObjectRef::<()>::from_cell(self.cell.clone()).untyped());
            }
        });
        let cluster = match self.cell.link.get().and_then(|l| l.cluster.upgrade()) {
            Some(c) => Some(c),
            None => crate::runtime::context().map(|rt| rt.cluster().clone()),
        };
        let owner = match cluster {
            Some(c) => c.export(&self.cell, encoder_of::<T>()).to_vec(),
            None => Vec::new(),
        };
        WireRef { id: self.cell.id, owner }.serialize(s)
    }
}

impl<'de, T: Serialize + DeserializeOwned + Any + Send + Sync> Deserialize<'de> for ObjectRef<T> {
    /// Binds the ref to the context runtime (module docs).
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error as _;
        let w = WireRef::deserialize(d)?;
        if w.owner.len() > MAX_HINT_BYTES {
            return Err(D::Error::custom(format!("owner hint of {} bytes (max {MAX_HINT_BYTES})", w.owner.len())));
        }
        let Some(rt) = crate::runtime::context() else {
            return Err(D::Error::custom(
                "an ObjectRef can only be deserialized inside a runtime (Runtime::enter, a task, or a node)",
            ));
        };
        Ok(ObjectRef::from_cell(rt.cluster().import::<T>(w.id, w.owner)))
    }
}
