//! Object refs: typed handles to objects in the store.
//!
//! An [`ObjectRef<T>`] is a counted reference to an object cell; the object
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

use crate::error::Error;
use crate::id::ObjectId;
use crate::notify::{Parker, Waiter};
use crate::scheduler::{block_until, spin_until};
use crate::slot::{Outcome, Slot, Value};
use std::any::Any;
use std::future::{Future, IntoFuture};
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

/// Control block of one task: its name and cancellation flag.
#[derive(Debug)]
pub(crate) struct TaskCtl {
    pub name: std::borrow::Cow<'static, str>,
    pub cancelled: AtomicBool,
}

impl TaskCtl {
    pub fn new(name: std::borrow::Cow<'static, str>) -> Arc<TaskCtl> {
        Arc::new(TaskCtl { name, cancelled: AtomicBool::new(false) })
    }

    pub fn name_text(&self) -> crate::error::Text {
        self.name.as_ref().into()
    }
}

/// One object: its id, its slot, and the task that produces it.
/// (Public only so the argument traits can name it; not part of the API.)
#[doc(hidden)]
#[derive(Debug)]
pub struct ObjectCell {
    pub(crate) id: ObjectId,
    pub(crate) slot: Slot,
    pub(crate) producer: Option<Arc<TaskCtl>>,
}

impl ObjectCell {
    pub(crate) fn pending(producer: Option<Arc<TaskCtl>>) -> Arc<ObjectCell> {
        Arc::new(ObjectCell { id: ObjectId::fresh(), slot: Slot::pending(), producer })
    }

    pub(crate) fn done(outcome: Outcome) -> Arc<ObjectCell> {
        Arc::new(ObjectCell { id: ObjectId::fresh(), slot: Slot::done(outcome), producer: None })
    }

    /// Blocks until done or `deadline`; returns whether it is done.
    pub(crate) fn wait_done(&self, deadline: Option<Instant>) -> bool {
        if spin_until(&mut || self.slot.is_done()) {
            return true;
        }
        let parker = thread_parker();
        match self.slot.register(Waiter::Parker(parker.clone())) {
            Err(_) => true,
            Ok(token) => {
                let done = block_until(&parker, deadline, &mut || self.slot.is_done());
                if !done {
                    self.slot.deregister(token);
                }
                done
            }
        }
    }

    /// Reads the value as `T`, blocking until done or `deadline`.
    pub(crate) fn get<T: Any + Send + Sync>(
        &self,
        deadline: Option<Instant>,
        timeout: Duration,
    ) -> Result<Arc<T>, Error> {
        if let Some(o) = self.slot.read() {
            return o.and_then(Value::downcast::<T>);
        }
        if !self.wait_done(deadline) {
            return Err(Error::Timeout(timeout));
        }
        match self.slot.read() {
            Some(o) => o.and_then(Value::downcast::<T>),
            None => Err(Error::Timeout(timeout)),
        }
    }

    /// Cancels the producing task. Returns true if this call decided the
    /// outcome (the object was still pending).
    pub(crate) fn cancel(&self) -> bool {
        let Some(ctl) = &self.producer else { return false };
        ctl.cancelled.store(true, Ordering::Release);
        self.slot.complete(Err(Error::Cancelled { task: ctl.name_text() }))
    }
}

thread_local! {
    static PARKER: crate::sync::Arc<Parker> = Parker::new();
}

/// This thread's reusable parker. Reuse is safe because every wait loop
/// re-checks its condition after waking: a stale unpark costs one extra turn.
pub(crate) fn thread_parker() -> crate::sync::Arc<Parker> {
    PARKER.with(|p| p.clone())
}

/// A typed reference to an object: the result of `put`, a task or an actor
/// call.
///
/// Cloning a ref is cheap and keeps the object alive; the object is freed
/// when its last ref (and the last task holding one) is gone.
pub struct ObjectRef<T> {
    pub(crate) cell: Arc<ObjectCell>,
    _t: PhantomData<fn() -> T>,
}

impl<T> Clone for ObjectRef<T> {
    fn clone(&self) -> Self {
        ObjectRef { cell: self.cell.clone(), _t: PhantomData }
    }
}

impl<T> std::fmt::Debug for ObjectRef<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ObjectRef<{}>({})", std::any::type_name::<T>(), self.cell.id)
    }
}

impl<T> PartialEq for ObjectRef<T> {
    fn eq(&self, other: &Self) -> bool {
        self.cell.id == other.cell.id
    }
}
impl<T> Eq for ObjectRef<T> {}
impl<T> std::hash::Hash for ObjectRef<T> {
    fn hash<H: std::hash::Hasher>(&self, h: &mut H) {
        self.cell.id.hash(h)
    }
}

impl<T> ObjectRef<T> {
    pub(crate) fn from_cell(cell: Arc<ObjectCell>) -> ObjectRef<T> {
        ObjectRef { cell, _t: PhantomData }
    }

    /// The object's id.
    pub fn id(&self) -> ObjectId {
        self.cell.id
    }

    /// True once the object has a value or an error (never blocks).
    pub fn is_ready(&self) -> bool {
        self.cell.slot.is_done()
    }

    /// Cancels the task that produces this object. A queued task is dropped
    /// without running; a running one sees [`crate::is_cancelled`] turn true.
    /// Either way `get` returns [`Error::Cancelled`] and dependants fail with
    /// it as their root cause. Returns false if the object was already done
    /// (or was not made by a task): then nothing changes.
    pub fn cancel(&self) -> bool {
        self.cell.cancel()
    }

    /// Forgets the static type (for heterogeneous lists, `wait` over mixed refs).
    pub fn untyped(&self) -> AnyRef {
        AnyRef { cell: self.cell.clone() }
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
        self.cell.get(None, Duration::MAX)
    }

    /// Like [`ObjectRef::get`], but gives up with [`Error::Timeout`] after
    /// `timeout` (a zero timeout is a poll).
    pub fn get_timeout(&self, timeout: Duration) -> Result<Arc<T>, Error> {
        self.cell.get(Instant::now().checked_add(timeout), timeout)
    }

    /// The value if the object is done, without blocking.
    pub fn try_get(&self) -> Option<Result<Arc<T>, Error>> {
        self.cell.slot.read().map(|o| o.and_then(Value::downcast::<T>))
    }

    /// Runs `f` with the result once the object is done: at once on this
    /// thread if it already is, otherwise on the thread that completes it
    /// (keep `f` short, e.g. post to a GUI event loop).
    pub fn on_ready(&self, f: impl FnOnce(Result<Arc<T>, Error>) + Send + 'static) {
        let cell = self.cell.clone();
        let cb = move |_ok: bool| {
            let r = cell.slot.read().unwrap_or(Err(Error::invalid("object not done")));
            f(r.and_then(Value::downcast::<T>))
        };
        if let Err(w) = self.cell.slot.register(Waiter::Callback(Box::new(cb))) {
            w.notify(true);
        }
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
        write!(f, "AnyRef({})", self.cell.id)
    }
}

impl AnyRef {
    /// The object's id.
    pub fn id(&self) -> ObjectId {
        self.cell.id
    }

    /// True once done.
    pub fn is_ready(&self) -> bool {
        self.cell.slot.is_done()
    }

    /// A typed view; the type is checked when the value is read.
    pub fn typed<T>(&self) -> ObjectRef<T> {
        ObjectRef::from_cell(self.cell.clone())
    }
}

/// Anything `wait` can wait on: [`ObjectRef<T>`] and [`AnyRef`].
pub trait Waitable: Clone {
    #[doc(hidden)]
    fn cell(&self) -> &Arc<ObjectCell>;
}

impl<T> Waitable for ObjectRef<T> {
    fn cell(&self) -> &Arc<ObjectCell> {
        &self.cell
    }
}

impl Waitable for AnyRef {
    fn cell(&self) -> &Arc<ObjectCell> {
        &self.cell
    }
}

/// The future of an [`ObjectRef`]: resolves to what `get` returns. Works on
/// any async runtime (it only uses the `Waker` it is polled with).
pub struct RefFuture<T> {
    cell: Arc<ObjectCell>,
    token: Option<u64>,
    _t: PhantomData<fn() -> T>,
}

impl<T: Any + Send + Sync> Future for RefFuture<T> {
    type Output = Result<Arc<T>, Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        if let Some(o) = this.cell.slot.read() {
            this.token = None;
            return Poll::Ready(o.and_then(Value::downcast::<T>));
        }
        let w = Waiter::Waker(cx.waker().clone());
        let registered = match this.token {
            Some(t) => this.cell.slot.replace(t, w),
            None => match this.cell.slot.register(w) {
                Ok(t) => {
                    this.token = Some(t);
                    true
                }
                Err(_) => false,
            },
        };
        if registered {
            Poll::Pending
        } else {
            // Completed between the read and the registration.
            this.token = None;
            let o = this.cell.slot.read().unwrap_or(Err(Error::invalid("object not done")));
            Poll::Ready(o.and_then(Value::downcast::<T>))
        }
    }
}

impl<T> Drop for RefFuture<T> {
    fn drop(&mut self) {
        if let Some(t) = self.token {
            self.cell.slot.deregister(t);
        }
    }
}

impl<T: Any + Send + Sync> IntoFuture for ObjectRef<T> {
    type Output = Result<Arc<T>, Error>;
    type IntoFuture = RefFuture<T>;
    fn into_future(self) -> RefFuture<T> {
        RefFuture { cell: self.cell, token: None, _t: PhantomData }
    }
}

impl<T: Any + Send + Sync> IntoFuture for &ObjectRef<T> {
    type Output = Result<Arc<T>, Error>;
    type IntoFuture = RefFuture<T>;
    fn into_future(self) -> RefFuture<T> {
        RefFuture { cell: self.cell.clone(), token: None, _t: PhantomData }
    }
}
