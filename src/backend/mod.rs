//! The plug-in point for cluster transports: how a node (crate
//! `manta-p2p`) attaches to a runtime, serves its objects to peers, and
//! fetches theirs. Applications never need this module: it is the
//! plumbing behind serializable refs, reached by [`Runtime::backend`].
//!
//! The core has no network code. A transport implements [`RemoteBackend`]
//! and attaches it with [`Backend::attach`]; it then drives the runtime
//! through the [`Backend`] handle (serve an object's bytes, make a promise
//! for a remote task's result, pin an object for a borrower, ...).
//!
//! # Refs on the wire
//! - Serializing an `ObjectRef<T>` (serde, `T: Serialize`) writes its id and
//!   an opaque *owner hint* (the backend's [`RemoteBackend::owner_hint`]: for
//!   a p2p node, its peer id and addresses) and *exports* the object: the
//!   runtime's export table maps the id to the object (weakly: exporting does
//!   not keep it alive) and to `T`'s CBOR encoder, so the node can serve its
//!   bytes ([`Backend::serve_object`]). The backend is told once
//!   ([`RemoteBackend::exported`]) so it can announce the object.
//! - Deserializing an `ObjectRef<T>` binds it to an explicit runtime (see
//!   *Binding*): if that runtime's table has the id, the ref is that object;
//!   otherwise it is a new *remote* object, pending, registered in the table
//!   so later deserializations of the same id share it. Nothing moves until
//!   a reader demands the value (get, wait, on_ready, await, a task taking
//!   it): the first demand calls [`RemoteBackend::fetch`], once. The backend
//!   decodes the bytes as they arrive ([`Fetch::decode`], streaming: no copy
//!   of the encoded object is needed) and ends with [`Fetch::complete`],
//!   which charges the replica to the store like any object and exports it,
//!   so this runtime serves it too.
//! - When an exported object is freed here, its table entry goes and the
//!   backend is told ([`RemoteBackend::freed`]) to withdraw it.
//!
//! # Binding
//! serde cannot pass a runtime to `Deserialize`, so a ref binds to the
//! runtime entered on this thread with [`Runtime::enter`] (a node's
//! `decode` does this), else to the runtime whose worker runs the code (a
//! task deserializing refs binds them to its own runtime). There is no
//! global fallback: with neither, deserializing fails with a serde error
//! that says so. Two runtimes in one process never see each other's refs.
//!
//! # Invariants
//! - At most one live object per id per runtime's table; an entry is
//!   removed only by the drop of the object it points to, so a stale drop
//!   never removes a newer entry (`export`, model-checked with loom).
//! - A remote object's fetch starts at most once; a [`Fetch`] dropped
//!   without completing fails the object with [`Error::PeerUnreachable`].

mod cluster;
mod fetch;
mod serve;
mod wire_ref;

pub(crate) use cluster::{link_of, Cluster};
pub use fetch::{DecodeError, Decoded, Fetch};
pub use serve::Served;
pub use wire_ref::collect_serialized;

use crate::actor::ActorHandle;
use crate::args::TaskArgs;
use crate::error::Error;
use crate::heap_size::encoder_of;
use crate::id::ObjectId;
use crate::refs::{AnyRef, Done, ObjectRef};
use crate::runtime::Runtime;
use crate::task::TaskBuilder;
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::any::Any;
use std::io::Write;
use std::sync::Arc;

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
    /// remote object: this runtime now borrows `id` from the owner `hint`
    /// names (the borrower protocol of cluster-wide reference counting).
    /// Balanced by exactly one [`RemoteBackend::released`].
    fn borrowed(&self, id: ObjectId, owner_hint: &[u8]) {
        let _ = (id, owner_hint);
    }
    /// The last ref to remote object `id` here was dropped (one made by
    /// deserialization or by [`Backend::remote_promise`]).
    fn released(&self, id: ObjectId, owner_hint: &[u8]) {
        let _ = (id, owner_hint);
    }
    /// The backend's own metrics, added to [`Runtime::metrics`]: `(name,
    /// value)` pairs (names in `snake_case`; `_total` for counters).
    /// Default: none.
    fn metrics(&self) -> Vec<(std::borrow::Cow<'static, str>, f64)> {
        Vec::new()
    }
    /// The backend as `Any`, so its implementor can find itself again
    /// through [`Backend::attached`].
    fn as_any(&self) -> &dyn Any;
}

/// The runtime a ref deserialized on this thread binds to: the one entered
/// with [`Runtime::enter`], else the one whose worker runs the calling
/// code (see *Binding* in the module docs). `None` elsewhere.
pub fn context() -> Option<Runtime> {
    crate::runtime::context()
}

/// An object transfer to record ([`Backend::record_transfer`]).
#[derive(Debug, Clone)]
pub struct Transfer {
    /// The object.
    pub id: ObjectId,
    /// Bytes moved.
    pub bytes: u64,
    /// The other node, as text (a peer id).
    pub peer: crate::error::Text,
    /// In (fetched here) or out (served from here).
    pub direction: crate::timeline::Direction,
    /// How it travelled.
    pub lane: crate::timeline::TransferLane,
    /// When it began ([`Backend::timeline_now`]).
    pub start: u64,
}

/// A runtime's backend side, from [`Runtime::backend`]: what a cluster
/// transport uses to plug into it. Cheap: a borrow of the runtime.
#[derive(Debug, Clone, Copy)]
pub struct Backend<'rt> {
    rt: &'rt Runtime,
}

impl<'rt> Backend<'rt> {
    pub(crate) fn new(rt: &'rt Runtime) -> Self {
        Backend { rt }
    }

    fn cluster(&self) -> &'rt Arc<Cluster> {
        self.rt.cluster()
    }

    /// True while this runtime records its timeline: one relaxed load, for
    /// a transport to skip [`Backend::record_transfer`]'s clock reads when
    /// recording is off.
    #[inline]
    pub fn timeline_on(&self) -> bool {
        self.rt.recorder().is_on()
    }

    /// The timeline clock: nanoseconds since recording began (0 if it
    /// never did), the scale of every recorded event's times.
    #[inline]
    pub fn timeline_now(&self) -> u64 {
        self.rt.recorder().now()
    }

    /// Like [`Backend::timeline_now`], but starts the clock if recording
    /// never began (without turning recording on): for a node that aligns
    /// other nodes' timelines to its own clock.
    pub fn timeline_clock(&self) -> u64 {
        self.rt.recorder().start_clock()
    }

    /// Records an object transfer on the calling thread's track, from
    /// `start` (a [`Backend::timeline_now`] reading) to now. Does nothing
    /// while recording is off.
    pub fn record_transfer(&self, t: Transfer) {
        let r = &self.rt.recorder();
        if !r.is_on() {
            return;
        }
        let end = r.now();
        r.record(|thread| crate::timeline::Event::Transfer {
            id: t.id,
            bytes: t.bytes,
            peer: t.peer,
            direction: t.direction,
            lane: t.lane,
            thread,
            start: t.start.min(end),
            end,
        });
    }

    /// Records that task `id` was sent to `peer` to run (an instant on the
    /// calling thread's track; the trace draws an arrow from it to the
    /// task's run on that node). Does nothing while recording is off.
    pub fn record_submit(&self, id: ObjectId, peer: impl FnOnce() -> crate::error::Text) {
        let r = self.rt.recorder();
        if !r.is_on() {
            return;
        }
        let at = r.now();
        let peer = peer();
        r.record(|thread| crate::timeline::Event::Submit { id, peer, thread, at });
    }

    /// Attaches a cluster node: refs serialized from now on carry its hint,
    /// and remote refs are fetched through it. Replaces any earlier backend.
    pub fn attach(&self, backend: Arc<dyn RemoteBackend>) {
        self.cluster().set_backend(Some(backend));
    }

    /// Detaches the cluster node (fetches not yet started then fail with
    /// [`Error::PeerUnreachable`]).
    pub fn detach(&self) {
        self.cluster().set_backend(None);
    }

    /// The attached backend, if any (see [`RemoteBackend::as_any`]).
    pub fn attached(&self) -> Option<Arc<dyn RemoteBackend>> {
        self.cluster().backend()
    }

    /// True if this runtime holds `id` (exported or a fetched replica, and
    /// done).
    pub fn holds_object(&self, id: ObjectId) -> bool {
        self.cluster().lookup(id).is_some_and(|(c, _)| c.slot.is_done() && !c.slot.is_failed())
    }

    /// True if `id` is exported here and its value (or error) is in memory,
    /// so [`Backend::serve_object`] answers without blocking on disk or on
    /// a rebuild (only the window's encoding is left to do).
    pub fn object_in_memory(&self, id: ObjectId) -> bool {
        self.cluster().lookup(id).is_some_and(|(c, _)| c.slot.in_memory() || c.slot.is_failed())
    }

    /// Serves up to `max_len` bytes of exported object `id`'s CBOR encoding
    /// from `offset` (for a node answering a peer's fetch). Each call encodes
    /// the object again but copies only the window: for `Vec<u8>` and other
    /// byte-string types that is one copy of the window.
    pub fn serve_object(&self, id: ObjectId, offset: u64, max_len: usize) -> Served {
        serve::serve_window(self.cluster(), id, offset, max_len)
    }

    /// Writes exported object `id`'s CBOR encoding, from byte `skip` on, to
    /// `out` in one encoding pass (for a node streaming a large object to a
    /// peer: unlike [`Backend::serve_object`], the object is encoded once
    /// whatever its size). Returns the encoding's total length, or why
    /// nothing (or not everything) was written: `NotFound`, `Pending`, or
    /// `Failed` (the object failed, cannot be encoded, or `out` failed).
    pub fn write_object(&self, id: ObjectId, skip: u64, out: &mut dyn Write) -> Result<u64, Served> {
        serve::write_from(self.cluster(), id, skip, out)
    }

    /// A future that resolves once exported object `id` is done (at once
    /// if it is, or if it is not exported here). Works on any executor.
    pub fn object_done(&self, id: ObjectId) -> Done {
        Done::new(self.cluster().lookup(id).map(|(c, _)| c))
    }

    /// A ref to a value another node will produce (a remote task's result):
    /// a new pending remote object with a fresh id, registered in the
    /// export table, whose owner hint is `hint`. Like a deserialized ref, it
    /// is fetched through [`RemoteBackend::fetch`] on first demand (the
    /// backend knows the id and completes the fetch when the result
    /// arrives), and its drop calls [`RemoteBackend::released`]. No
    /// `borrowed` call is made.
    pub fn remote_promise<T: Serialize + DeserializeOwned + Any + Send + Sync>(&self, hint: Arc<[u8]>) -> ObjectRef<T> {
        let c = self.cluster();
        let id = ObjectId::fresh();
        let cell = c.table.get_or_insert_with(id, || (c.remote_cell::<T>(id, hint), encoder_of::<T>()));
        ObjectRef::from_cell(cell)
    }

    /// A ref to exported (or remote) object `id`, if it is alive here: the
    /// node holds it to keep the object alive for a borrower elsewhere.
    pub fn pin_object(&self, id: ObjectId) -> Option<AnyRef> {
        self.cluster().lookup(id).map(|(c, _)| ObjectRef::<()>::from_cell(c).untyped())
    }

    /// Adjusts the count of remote borrowers of `r`'s object (other nodes
    /// holding a ref to it) by `delta`, as the cluster layer learns of
    /// borrows and releases; it is what
    /// [`RefCounts::borrowers`](crate::RefCounts::borrowers) reports. The
    /// count never goes below zero. Purely informational: it keeps nothing
    /// alive (the node's pins do). Only objects that left this runtime
    /// (exported, or remote) can have borrowers: for others it does nothing.
    pub fn add_borrowers(&self, r: &AnyRef, delta: isize) {
        use std::sync::atomic::Ordering;
        let Some(link) = cluster::link_of(&r.cell) else { return };
        let b = &link.borrowers;
        let _ = b.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| Some(n.saturating_add_signed(delta)));
    }

    /// Exports a local object (as serializing a ref to it would) so peers
    /// can read it by id, e.g. a task's result whose id a remote submitter
    /// chose.
    pub fn export_object<T: Serialize + Any + Send + Sync>(&self, r: &ObjectRef<T>) {
        let _ = self.cluster().export(r.cell(), encoder_of::<T>());
    }

    /// Number of objects in the export table (exported, remote or replica).
    pub fn exported_objects(&self) -> usize {
        self.cluster().table.live()
    }

    /// A task builder whose (first) output gets id `id` instead of a fresh
    /// one: for a node running a task submitted elsewhere, whose submitter
    /// chose the id so that its ref and this object match. The id must not
    /// be in use in this runtime.
    pub fn task_with_id(&self, id: ObjectId) -> TaskBuilder<'rt> {
        self.rt.task().with_object_id(id)
    }

    /// Calls an actor method like [`ActorHandle::call_with`], giving the
    /// result id `id` (for a node running a call made elsewhere: the caller
    /// chose the id) and naming it `method` (its registered name, in
    /// errors, logs and the timeline). The id must not be in use in this
    /// runtime.
    pub fn call_with_id<S, A, R, F>(
        &self,
        actor: &ActorHandle<S>,
        (id, method): (ObjectId, &'static str),
        args: A,
        f: F,
    ) -> ObjectRef<R>
    where
        S: Send + 'static,
        A: TaskArgs,
        R: Any + Send + Sync,
        F: FnOnce(&mut S, A::Output) -> R + Send + 'static,
    {
        actor.call_as(Some(id), crate::actor::Method::Type(method), args, f)
    }
}

impl Runtime {
    /// The plumbing a cluster transport (`manta-p2p`) uses to plug into
    /// this runtime; see the [`backend`](crate::backend) module.
    /// Applications do not need it.
    pub fn backend(&self) -> Backend<'_> {
        Backend::new(self)
    }
}

/// Not part of the API: an error for a `Served` whose object cannot be
/// encoded.
pub(crate) fn encode_failed(id: ObjectId, message: &str) -> Error {
    Error::ObjectLost { id, reason: format!("cannot encode: {message}").into() }
}
