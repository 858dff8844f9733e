//! Object refs: the typed handles applications hold ([`ObjectRef<T>`],
//! [`AnyRef`]), how they are read (blocking `get`, `try_get`, callbacks)
//! and awaited ([`RefFuture`], [`Done`]).
//!
//! A ref is a counted reference to an object cell (`cell`): the object
//! lives while any ref (or a queued task or actor call holding one) lives
//! and is freed when the last goes (plain `Arc` counting: each clone is an
//! increment, each drop a decrement, the last drop frees the cell exactly
//! once). `get` returns an `Arc<T>` clone of the stored value, so reading is
//! constant time whatever the size, and the value stays alive while a reader
//! holds it.
//!
//! Waiting follows one pattern everywhere: spin briefly, register a waiter
//! on the slot, then block with [`block_until`](crate::scheduler::block_until),
//! re-checking the slot after every wake-up (see `notify` and `slot`).

use crate::cell::ObjectCell;
use crate::error::Error;
use crate::id::ObjectId;
use crate::notify::Waiter;
use crate::slot::Value;
use std::any::Any;
use std::future::{Future, IntoFuture};
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

/// A typed reference to an object: the result of `put`, a task or an actor
/// call.
///
/// Cloning a ref is cheap and keeps the object alive; the object is freed
/// when its last ref (and the last task holding one) is gone.
pub struct ObjectRef<T> {
    pub(crate) any: AnyRef,
    _t: PhantomData<fn() -> T>,
}

impl<T> Clone for ObjectRef<T> {
    fn clone(&self) -> Self {
        ObjectRef { any: self.any.clone(), _t: PhantomData }
    }
}

impl<T> std::fmt::Debug for ObjectRef<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ObjectRef<{}>({})", std::any::type_name::<T>(), self.cell().id())
    }
}

impl<T> PartialEq for ObjectRef<T> {
    fn eq(&self, other: &Self) -> bool {
        // The same cell is the same object (without drawing its id).
        Arc::ptr_eq(self.cell(), other.cell()) || self.cell().id() == other.cell().id()
    }
}
impl<T> Eq for ObjectRef<T> {}
impl<T> std::hash::Hash for ObjectRef<T> {
    fn hash<H: std::hash::Hasher>(&self, h: &mut H) {
        self.cell().id().hash(h)
    }
}

impl<T> ObjectRef<T> {
    pub(crate) fn from_cell(cell: Arc<ObjectCell>) -> ObjectRef<T> {
        ObjectRef { any: AnyRef { cell }, _t: PhantomData }
    }

    /// The object's cell.
    pub(crate) fn cell(&self) -> &Arc<ObjectCell> {
        &self.any.cell
    }

    /// The object's id.
    pub fn id(&self) -> ObjectId {
        self.cell().id()
    }

    /// True once the object has a value or an error here (never blocks).
    /// For a ref to an object on another node (`manta-p2p`), that is once
    /// it was fetched: `get`, `wait` or `on_ready` fetch it.
    pub fn is_ready(&self) -> bool {
        self.cell().slot.is_done()
    }

    /// Cancels the task that produces this object. A queued task is dropped
    /// without running; a running one sees [`crate::is_cancelled`] turn true.
    /// Either way `get` returns [`Error::Cancelled`] and dependants fail with
    /// it as their root cause. Returns false if the object was already done
    /// (or was not made by a task): then nothing changes.
    pub fn cancel(&self) -> bool {
        self.cell().cancel()
    }

    /// Who holds this object: handles, task arguments, remote borrowers
    /// (see [`RefCounts`](crate::RefCounts); for debugging leaks, as Ray's
    /// `ray._private.internal_api.memory_summary`).
    pub fn ref_counts(&self) -> crate::RefCounts {
        self.any.ref_counts()
    }

    /// Forgets the static type (for heterogeneous lists, `wait` over mixed refs).
    pub fn untyped(&self) -> AnyRef {
        self.any.clone()
    }
}

impl<T: Any + Send + Sync> ObjectRef<T> {
    /// Waits for the object and returns a shared handle to its value.
    ///
    /// Zero copy: the `Arc<T>` points at the stored value. Inside a task this
    /// never deadlocks: while waiting, the worker gives its CPUs back and
    /// runs other queued tasks. Errors: the producing task's failure
    /// ([`Error::TaskPanicked`], [`Error::DependencyFailed`],
    /// [`Error::Cancelled`], ...) or [`Error::WrongType`].
    pub fn get(&self) -> Result<Arc<T>, Error> {
        self.cell().get(None, Duration::MAX)
    }

    /// Like [`ObjectRef::get`], but gives up with [`Error::Timeout`] after
    /// `timeout` (a zero timeout is a poll).
    pub fn get_timeout(&self, timeout: Duration) -> Result<Arc<T>, Error> {
        self.cell().get(Instant::now().checked_add(timeout), timeout)
    }

    /// The value if the object is done, without blocking.
    pub fn try_get(&self) -> Option<Result<Arc<T>, Error>> {
        self.cell().read_value().map(|o| o.and_then(Value::downcast::<T>))
    }

    /// Runs `f` with the result once the object is done. Which thread runs
    /// it: the calling thread, at once, if the object is already done;
    /// otherwise the thread that completes it (the worker that ran its
    /// task, a node's thread for a fetched object, or the manta service
    /// thread for a cancelled one — never the thread that calls `cancel`).
    /// Keep `f` short and non-blocking (e.g. a non-blocking send to a GUI
    /// event loop); to have it run elsewhere, use
    /// [`ObjectRef::on_ready_via`].
    pub fn on_ready(&self, f: impl FnOnce(Result<Arc<T>, Error>) + Send + 'static) {
        let cell = self.cell().clone();
        let cb = move |_ok: bool| {
            let r = cell.read_value().unwrap_or(Err(Error::invalid("object not done")));
            let r = r.and_then(Value::downcast::<T>);
            // A callback runs on whichever thread completes the object: its
            // panic must not unwind into that thread's work.
            if let Err(p) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(r))) {
                let message = crate::error::panic_message(p.as_ref());
                tracing::error!(object = %cell.id(), %message, "an on_ready callback panicked");
            }
        };
        self.cell().demand();
        if let Err(w) = self.cell().slot.register(Waiter::Callback(Box::new(cb))) {
            w.notify(true);
        }
    }
}

impl<T: Any + Send + Sync> ObjectRef<T> {
    /// Like [`ObjectRef::on_ready`], but hands the callback, with its
    /// result, to `executor` (e.g. a closure that posts it to a GUI's event
    /// loop or to a thread pool the app owns): the completing thread only
    /// calls `executor`, which must not block.
    pub fn on_ready_via<E>(&self, executor: E, f: impl FnOnce(Result<Arc<T>, Error>) + Send + 'static)
    where
        E: Fn(Box<dyn FnOnce() + Send>) + Send + 'static,
    {
        self.on_ready(move |r| executor(Box::new(move || f(r))));
    }
}

/// A ref whose value type is not known statically. [`AnyRef::typed`] gives
/// back a typed ref; reading it as the wrong type is [`Error::WrongType`].
#[derive(Clone)]
pub struct AnyRef {
    pub(crate) cell: Arc<ObjectCell>,
}

impl std::fmt::Debug for AnyRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "AnyRef({})", self.cell.id())
    }
}

impl AnyRef {
    /// The object's id.
    pub fn id(&self) -> ObjectId {
        self.cell.id()
    }

    /// True once done.
    pub fn is_ready(&self) -> bool {
        self.cell.slot.is_done()
    }

    /// Starts fetching the value now if it lives on another node (what
    /// `get`, `wait` and `on_ready` do first); no-op for local objects.
    pub fn prefetch(&self) {
        self.cell.demand();
    }

    /// Bytes the value occupies in this runtime's store, if it is done and
    /// in memory here (`None` for pending, failed, spilled or remote ones).
    pub fn stored_bytes(&self) -> Option<usize> {
        self.cell.slot.charged_in_memory()
    }

    /// A typed view; the type is checked when the value is read.
    pub fn typed<T>(&self) -> ObjectRef<T> {
        ObjectRef::from_cell(self.cell.clone())
    }
}

/// Anything `wait` can wait on: [`ObjectRef<T>`] and [`AnyRef`].
pub trait Waitable: Clone {
    /// The ref without its static type.
    fn as_any_ref(&self) -> &AnyRef;
}

impl<T> Waitable for ObjectRef<T> {
    fn as_any_ref(&self) -> &AnyRef {
        &self.any
    }
}

impl Waitable for AnyRef {
    fn as_any_ref(&self) -> &AnyRef {
        self
    }
}

/// Resolves once an object is done (value or error), without reading it;
/// see [`Backend::object_done`](crate::backend::Backend::object_done).
pub struct Done {
    cell: Option<Arc<ObjectCell>>,
    token: Option<u64>,
}

impl Done {
    pub(crate) fn new(cell: Option<Arc<ObjectCell>>) -> Done {
        Done { cell, token: None }
    }
}

impl Future for Done {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        match &this.cell {
            Some(cell) if !poll_done(cell, &mut this.token, cx) => Poll::Pending,
            _ => Poll::Ready(()),
        }
    }
}

/// The waiting half of every object future: true once `cell` is done;
/// otherwise registers (or refreshes) the task's waker under `token` and
/// returns false. A registration refused because the object completed in
/// between counts as done, so no wake-up is lost.
fn poll_done(cell: &ObjectCell, token: &mut Option<u64>, cx: &mut Context<'_>) -> bool {
    if cell.slot.is_done() {
        *token = None;
        return true;
    }
    let w = Waiter::Waker(cx.waker().clone());
    let registered = match *token {
        Some(t) => cell.slot.replace(t, w),
        None => match cell.slot.register(w) {
            Ok(t) => {
                *token = Some(t);
                true
            }
            Err(_) => false,
        },
    };
    if !registered {
        *token = None;
    }
    !registered
}

impl Drop for Done {
    fn drop(&mut self) {
        if let (Some(cell), Some(t)) = (&self.cell, self.token) {
            cell.slot.deregister(t);
        }
    }
}

/// The future of an [`ObjectRef`]: resolves to what `get` returns. Works on
/// any async runtime (it only uses the `Waker` it is polled with).
pub struct RefFuture<T> {
    /// A handle like any ref (an awaited object is held by the future).
    any: AnyRef,
    token: Option<u64>,
    _t: PhantomData<fn() -> T>,
}

impl<T: Any + Send + Sync> Future for RefFuture<T> {
    type Output = Result<Arc<T>, Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        if !this.any.cell.slot.is_done() {
            this.any.cell.demand();
        }
        if !poll_done(&this.any.cell, &mut this.token, cx) {
            return Poll::Pending;
        }
        let o = this.any.cell.read_value().unwrap_or(Err(Error::invalid("object not done")));
        Poll::Ready(o.and_then(Value::downcast::<T>))
    }
}

impl<T> Drop for RefFuture<T> {
    fn drop(&mut self) {
        if let Some(t) = self.token {
            self.any.cell.slot.deregister(t);
        }
    }
}

impl<T: Any + Send + Sync> IntoFuture for ObjectRef<T> {
    type Output = Result<Arc<T>, Error>;
    type IntoFuture = RefFuture<T>;
    fn into_future(self) -> RefFuture<T> {
        RefFuture { any: self.any, token: None, _t: PhantomData }
    }
}

impl<T: Any + Send + Sync> IntoFuture for &ObjectRef<T> {
    type Output = Result<Arc<T>, Error>;
    type IntoFuture = RefFuture<T>;
    fn into_future(self) -> RefFuture<T> {
        RefFuture { any: self.any.clone(), token: None, _t: PhantomData }
    }
}
