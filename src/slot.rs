//! The object slot: the state machine behind every `ObjectRef`.
//!
//! # States
//! ```text
//!            complete(Ok)                 evict (no reader)
//! Pending ─────────────────▶ Ready(v) ───────────────────▶ Spilled(file) / Evicted
//!    │      complete(Err)       ▲                                │
//!    ├────────────────────▶ Failed(e)      finish_rebuild(Ok)    │ begin_rebuild
//!    │      cancel               ▲    ◀─────────── Rebuilding ◀──┘
//!    └────────────────────▶ Failed(Cancelled)   (Err: Failed(e), or back to Spilled)
//! ```
//! Any state → `Failed(ObjectFreed)` by [`Slot::free`] (`Runtime::free`);
//! a rebuild that ends after it ([`Slot::finish_rebuild_deferred`]) finds
//! the slot no longer `Rebuilding` and leaves it failed.
//!
//! `Pending` is left exactly once: [`Slot::complete`] and cancellation are the
//! same transition, so whichever comes first wins and the loser gets `false`.
//! Every waiter registered while pending is notified exactly once, after the
//! transition, outside the lock. A registration that arrives after the
//! transition is refused ([`Slot::register`] returns the waiter back) so the
//! caller handles the completed case itself: no wake-up is ever lost.
//!
//! After completion the value may move out of memory and back (the object
//! store's business): [`Slot::evict_with`] moves `Ready` to `Spilled` or
//! `Evicted` only while no reader holds the value (the value's `Arc` count is
//! one, checked under the lock, and readers clone it under the same lock), so
//! a value is never moved out from under a reader. A reader that finds it
//! moved out claims the rebuild with [`Slot::begin_rebuild`] (`Rebuilding`;
//! later readers register and wait as for `Pending`) and ends it with
//! [`Slot::finish_rebuild`], which wakes them.
//!
//! # Memory ordering
//! The state lives under the slot's mutex. `done` is a lock-free hint for the
//! fast path: it is stored with `Release` after the state is written (still
//! inside the critical section), and a reader that sees `done == true` with
//! `Acquire` then takes the lock to read the state. `done` never goes back to
//! false: an evicted object is still done (for `wait`), only not in memory.
//! `failed` is the same for `Failed`, which no transition leaves: set with
//! `Release` in the critical section that makes the state `Failed` (and
//! never cleared), so [`Slot::is_failed`] is one load, no lock (`get_all`
//! asks it of every object it reads).

use crate::error::Error;
use crate::notify::Waiter;
use crate::sync::{lock, AtomicBool, Mutex, Ordering};
use std::any::Any;

/// A stored value: shared, immutable, typed at run time.
#[derive(Clone)]
pub struct Value {
    /// The value itself; readers get clones of this `Arc` (zero copy).
    pub data: std::sync::Arc<dyn Any + Send + Sync>,
    /// `std::any::type_name` of the stored type, for `WrongType` errors.
    pub type_name: &'static str,
}

impl Value {
    /// How to spill this value, if its type is registered as spillable.
    pub fn codec(&self) -> Option<(crate::heap_size::Encode, crate::heap_size::Decode)> {
        crate::heap_size::lookup((*self.data).type_id()).and_then(|i| i.codec)
    }

    /// Wraps a value.
    pub fn new<T: Any + Send + Sync>(v: T) -> Value {
        Value { data: std::sync::Arc::new(v), type_name: std::any::type_name::<T>() }
    }

    /// Wraps an already shared value.
    pub fn from_arc<T: Any + Send + Sync>(v: std::sync::Arc<T>) -> Value {
        Value { data: v, type_name: std::any::type_name::<T>() }
    }

    /// The value as `Arc<T>`, or `WrongType`.
    pub fn downcast<T: Any + Send + Sync>(self) -> Result<std::sync::Arc<T>, Error> {
        let found = self.type_name;
        self.data.downcast::<T>().map_err(|_| Error::WrongType { expected: std::any::type_name::<T>(), found })
    }
}

impl std::fmt::Debug for Value {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Value<{}>", self.type_name)
    }
}

/// The outcome a completed slot holds.
pub type Outcome = Result<Value, Error>;

/// What the store knows about an in-memory value.
#[derive(Debug, Clone, Copy, Default)]
pub struct Meta {
    /// Bytes charged to the store (0 if not charged).
    pub charged: usize,
}

/// Where a moved-out value went.
#[derive(Debug, Clone)]
pub enum Moved<S> {
    /// Written to a spill file.
    Spilled(S),
    /// Dropped; to be rebuilt from lineage.
    Evicted,
}

#[derive(Debug)]
enum State<S> {
    Pending,
    Ready(Value, Meta),
    Failed(Box<Error>),
    Out(Moved<S>),
    Rebuilding,
}

/// The wake-ups of a completion, to be sent once the completer is ready.
#[derive(Debug)]
pub struct Wake {
    waiters: Waiters,
    ok: bool,
}

impl Wake {
    /// Notifies every waiter (each exactly once).
    #[inline]
    pub fn send(self) {
        if matches!(self.waiters, Waiters::None) {
            // Nobody waits (most task outputs). Nothing is owned, so
            // forgetting it skips only the call to the (empty) drop glue.
            std::mem::forget(self);
            return;
        }
        notify_all(self.waiters, self.ok);
    }
}

/// Notifies `waiters`, each once (out of line: most completions have none).
fn notify_all(waiters: Waiters, ok: bool) {
    match waiters {
        Waiters::None => {}
        Waiters::One(_, w) => w.notify(ok),
        Waiters::Many(list) => list.into_iter().for_each(|(_, w)| w.notify(ok)),
    }
}

/// A slot's registrations, each with its token. Most objects get none or
/// one (a blocked reader, a dependant task, an `as_completed`): that one
/// is kept inline, so registering costs no allocation (and completing no
/// free); a second spills both into a list.
#[derive(Debug, Default)]
enum Waiters {
    #[default]
    None,
    One(u64, Waiter),
    Many(Vec<(u64, Waiter)>),
}

impl Waiters {
    fn push(&mut self, token: u64, w: Waiter) {
        *self = match std::mem::take(self) {
            Waiters::None => Waiters::One(token, w),
            Waiters::One(t, first) => Waiters::Many(vec![(t, first), (token, w)]),
            Waiters::Many(mut list) => {
                list.push((token, w));
                Waiters::Many(list)
            }
        };
    }

    fn get_mut(&mut self, token: u64) -> Option<&mut Waiter> {
        match self {
            Waiters::None => None,
            Waiters::One(t, w) => (*t == token).then_some(w),
            Waiters::Many(list) => list.iter_mut().find(|(t, _)| *t == token).map(|(_, w)| w),
        }
    }

    fn remove(&mut self, token: u64) {
        match self {
            Waiters::None => {}
            Waiters::One(t, _) => {
                if *t == token {
                    *self = Waiters::None;
                }
            }
            Waiters::Many(list) => list.retain(|(t, _)| *t != token),
        }
    }

    fn len(&self) -> usize {
        match self {
            Waiters::None => 0,
            Waiters::One(..) => 1,
            Waiters::Many(list) => list.len(),
        }
    }

    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A consistent view of a completed or pending slot.
#[derive(Debug)]
pub enum Read<S> {
    /// Not completed yet.
    Pending,
    /// The value, in memory.
    Value(Value),
    /// The error.
    Failed(Error),
    /// Moved out of memory.
    Out(Moved<S>),
    /// Another reader is bringing it back; register and wait.
    Rebuilding,
}

/// What a slot holds, for [`Slot::holding`] (`Runtime::contains`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Holding {
    /// Not completed yet.
    Pending,
    /// A value, in memory.
    Value,
    /// An error that is the object's result.
    Error,
    /// Its value is in a spill file.
    Spilled,
    /// Its value was dropped, to be rebuilt from lineage.
    Evicted,
    /// A reader is bringing its value back.
    Rebuilding,
    /// Freed or known lost: nothing to give a reader but that error.
    Gone,
}

/// What [`Slot::free`] took out of a slot, to let go of outside its lock.
#[derive(Debug)]
pub struct Freed<S> {
    /// Waiters to wake (those registered while pending or rebuilding).
    pub wake: Option<Wake>,
    /// Bytes the value charged in memory (to return to the store).
    pub charged: usize,
    /// Its spill handle, if it was spilled.
    pub spill: Option<S>,
    /// Its value, if it was in memory.
    pub value: Option<Value>,
}

#[derive(Debug)]
struct Inner<S> {
    state: State<S>,
    waiters: Waiters,
    next_token: u64,
}

/// One object's state and its waiters. `S` is the store's spill handle.
#[derive(Debug)]
pub struct Slot<S = ()> {
    done: AtomicBool,
    /// The state is `Failed` (module docs); beside `done`, in padding.
    failed: AtomicBool,
    error_read: AtomicBool,
    /// Refs to this object inside task and actor-call arguments (counted by
    /// `objects::CountedArgs`). Not part of the slot's protocol: it lives
    /// here because it fits in the padding beside the two flags, where it
    /// costs no byte (a bigger object cell measurably slowed small gets).
    pub task_uses: std::sync::atomic::AtomicU32,
    inner: Mutex<Inner<S>>,
}

impl<S: Clone> Slot<S> {
    /// A slot waiting for its value.
    pub fn pending() -> Slot<S> {
        Slot::with_state(State::Pending, false)
    }

    /// A slot that already holds an outcome.
    pub fn done(outcome: Outcome, meta: Meta) -> Slot<S> {
        let failed = outcome.is_err();
        let slot = Slot::with_state(Self::state_of(outcome, meta), true);
        if failed {
            slot.failed.store(true, Ordering::Release);
        }
        slot
    }

    fn state_of(outcome: Outcome, meta: Meta) -> State<S> {
        match outcome {
            Ok(v) => State::Ready(v, meta),
            Err(e) => State::Failed(Box::new(e)),
        }
    }

    fn with_state(state: State<S>, done: bool) -> Slot<S> {
        Slot {
            done: AtomicBool::new(done),
            failed: AtomicBool::new(false),
            error_read: AtomicBool::new(false),
            task_uses: std::sync::atomic::AtomicU32::new(0),
            inner: Mutex::new(Inner { state, waiters: Waiters::None, next_token: 0 }),
        }
    }

    /// True once the slot left `Pending` (lock-free).
    pub fn is_done(&self) -> bool {
        self.done.load(Ordering::Acquire)
    }

    /// Moves `Pending` to `Ready` or `Failed` (by `outcome`) and notifies every waiter.
    /// Returns false (and drops `outcome`) if the slot was already done.
    pub fn complete(&self, outcome: Outcome) -> bool {
        self.complete_with(outcome, Meta::default())
    }

    /// [`Slot::complete`] with the store's accounting for the value.
    pub fn complete_with(&self, outcome: Outcome, meta: Meta) -> bool {
        self.complete_deferred(outcome, meta).map(Wake::send).is_some()
    }

    /// Completes like [`Slot::complete_with`] but hands back the wake-ups
    /// instead of sending them, so the completer can first let go of what
    /// it holds (the task's inputs, its own reference to this object):
    /// whoever is woken then sees the runtime holding nothing more.
    /// `None` if the slot was already done.
    #[must_use = "the waiters must be woken with Wake::send"]
    pub fn complete_deferred(&self, outcome: Outcome, meta: Meta) -> Option<Wake> {
        let ok = outcome.is_ok();
        let mut g = lock(&self.inner);
        if !matches!(g.state, State::Pending) {
            return None;
        }
        g.state = Self::state_of(outcome, meta);
        if !ok {
            self.failed.store(true, Ordering::Release);
        }
        self.done.store(true, Ordering::Release);
        Some(Wake { waiters: std::mem::take(&mut g.waiters), ok })
    }

    /// Registers a waiter while pending (or while a rebuild is in progress)
    /// and returns its token, or gives the waiter back otherwise.
    pub fn register(&self, w: Waiter) -> Result<u64, Waiter> {
        let mut g = lock(&self.inner);
        match g.state {
            State::Pending | State::Rebuilding => {
                let t = g.next_token;
                g.next_token += 1;
                g.waiters.push(t, w);
                Ok(t)
            }
            _ => Err(w),
        }
    }

    /// Replaces the waiter registered under `token` (used by futures whose
    /// waker changed). Returns false if it is no longer registered.
    pub fn replace(&self, token: u64, w: Waiter) -> bool {
        let mut g = lock(&self.inner);
        match g.waiters.get_mut(token) {
            Some(slot) => {
                *slot = w;
                true
            }
            None => false,
        }
    }

    /// Removes a registration (a timed-out `wait`, a dropped future).
    pub fn deregister(&self, token: u64) {
        let mut g = lock(&self.inner);
        g.waiters.remove(token);
    }

    /// The outcome, if done and in memory (`None` while pending or while
    /// the value is out of memory). Reading an error marks it as seen.
    pub fn read(&self) -> Option<Outcome> {
        match self.read_state() {
            Read::Value(v) => Some(Ok(v)),
            Read::Failed(e) => Some(Err(e)),
            _ => None,
        }
    }

    /// Marks the object's error (now or future) as read, so its drop does
    /// not log it: for readers that handled it without taking it from this
    /// slot (`get_all` failing on another ref of the same list).
    pub fn mark_read(&self) {
        self.error_read.store(true, Ordering::Relaxed);
    }

    /// The slot's state as seen by a reader; a `Value` is a new reference
    /// to the stored value (taken under the lock, so eviction sees it).
    pub fn read_state(&self) -> Read<S> {
        if !self.is_done() {
            return Read::Pending;
        }
        let g = lock(&self.inner);
        match &g.state {
            State::Pending => Read::Pending,
            State::Ready(v, _) => Read::Value(v.clone()),
            State::Failed(e) => {
                self.error_read.store(true, Ordering::Relaxed);
                Read::Failed((**e).clone())
            }
            State::Out(m) => Read::Out(m.clone()),
            State::Rebuilding => Read::Rebuilding,
        }
    }

    /// Frees the object whatever its state: it becomes `Failed(e)`, its
    /// error marked read (a freed object is not an error nobody read).
    /// Waiters registered while pending or rebuilding are handed back to be
    /// woken (with failure). A rebuild in flight then finds the slot no
    /// longer `Rebuilding` and does not store its value
    /// ([`Slot::finish_rebuild_deferred`]).
    pub fn free(&self, e: Error) -> Freed<S> {
        let mut g = lock(&self.inner);
        self.error_read.store(true, Ordering::Relaxed);
        let old = std::mem::replace(&mut g.state, State::Failed(Box::new(e)));
        self.failed.store(true, Ordering::Release);
        self.done.store(true, Ordering::Release);
        let waiters = std::mem::take(&mut g.waiters);
        drop(g);
        let wake = (!waiters.is_empty()).then_some(Wake { waiters, ok: false });
        match old {
            State::Ready(v, meta) => Freed { wake, charged: meta.charged, spill: None, value: Some(v) },
            State::Out(Moved::Spilled(s)) => Freed { wake, charged: 0, spill: Some(s), value: None },
            _ => Freed { wake, charged: 0, spill: None, value: None },
        }
    }

    /// What the slot holds, without reading it (an error stays unread).
    pub fn holding(&self) -> Holding {
        if !self.is_done() {
            return Holding::Pending;
        }
        match &lock(&self.inner).state {
            State::Pending => Holding::Pending,
            State::Ready(..) => Holding::Value,
            State::Failed(e) => match **e {
                Error::ObjectFreed { .. }
                | Error::ObjectLost { .. }
                | Error::LineageEvicted { .. }
                | Error::MaxReconstructionsExceeded { .. }
                | Error::PeerUnreachable { .. }
                | Error::Unverified { .. } => Holding::Gone,
                _ => Holding::Error,
            },
            State::Out(Moved::Spilled(_)) => Holding::Spilled,
            State::Out(Moved::Evicted) => Holding::Evicted,
            State::Rebuilding => Holding::Rebuilding,
        }
    }

    /// True if the value is in memory (done, not failed, not moved out).
    pub fn in_memory(&self) -> bool {
        self.is_done() && matches!(lock(&self.inner).state, State::Ready(..))
    }

    /// Bytes charged for the value if it is in memory.
    pub fn charged_in_memory(&self) -> Option<usize> {
        match &lock(&self.inner).state {
            State::Ready(_, meta) if self.is_done() => Some(meta.charged),
            _ => None,
        }
    }

    /// True if done with an error (one load: `Failed` is final, see the
    /// module docs).
    pub fn is_failed(&self) -> bool {
        self.failed.load(Ordering::Acquire)
    }

    /// Moves an in-memory value out if no reader holds it: `decide` sees the
    /// value and its accounting and returns where it went (it may write a
    /// spill file; it runs under this slot's lock, so readers of this object
    /// wait for it, and nobody else does). Returns the bytes freed from
    /// memory, or `None` if the value is being read, not in memory, or
    /// `decide` kept it.
    pub fn evict_with(&self, decide: impl FnOnce(&Value, Meta) -> Option<Moved<S>>) -> Option<usize> {
        let mut g = lock(&self.inner);
        let State::Ready(v, meta) = &g.state else { return None };
        if std::sync::Arc::strong_count(&v.data) != 1 {
            return None; // a reader holds it
        }
        let meta = *meta;
        let moved = decide(v, meta)?;
        g.state = State::Out(moved);
        Some(meta.charged)
    }

    /// Claims the rebuild of a moved-out value: `Out` becomes `Rebuilding`
    /// and the caller gets where it went. `None` if it is not out (another
    /// reader claimed it, or it is back).
    pub fn begin_rebuild(&self) -> Option<Moved<S>> {
        let mut g = lock(&self.inner);
        if !matches!(g.state, State::Out(_)) {
            return None;
        }
        match std::mem::replace(&mut g.state, State::Rebuilding) {
            State::Out(m) => Some(m),
            other => {
                g.state = other;
                None
            }
        }
    }

    /// Ends a rebuild claimed with [`Slot::begin_rebuild`]: the value is back
    /// (`Ok`), the object is lost (`Err`), or it stays out (`Out`, e.g. read
    /// through without room in memory). Wakes readers waiting for it.
    pub fn finish_rebuild(&self, result: Result<(Value, Meta), Result<Moved<S>, Error>>) {
        self.finish_rebuild_deferred(result).0.send();
    }

    /// [`Slot::finish_rebuild`], returning the wake-ups to send once the
    /// caller has let go of what it holds (as [`Slot::complete_deferred`]),
    /// and whether the result was stored: false if the object was freed
    /// meanwhile ([`Slot::free`]; the slot is no longer `Rebuilding`), in
    /// which case the caller owns the value and its charged bytes.
    #[must_use = "the readers waiting for the rebuild must be woken"]
    pub fn finish_rebuild_deferred(&self, result: Result<(Value, Meta), Result<Moved<S>, Error>>) -> (Wake, bool) {
        let mut g = lock(&self.inner);
        let stored = matches!(g.state, State::Rebuilding);
        if stored {
            g.state = match result {
                Ok((v, meta)) => State::Ready(v, meta),
                Err(Ok(moved)) => State::Out(moved),
                Err(Err(e)) => {
                    self.failed.store(true, Ordering::Release);
                    State::Failed(Box::new(e))
                }
            };
        }
        (Wake { waiters: std::mem::take(&mut g.waiters), ok: true }, stored)
    }
    /// Takes the final state apart when the object is freed: the bytes it
    /// still charged to memory, its spill handle, if any, and its value if
    /// it was in memory (so the store may recycle its buffer).
    pub fn take_final(&mut self) -> (usize, Option<S>, Option<Value>) {
        let inner = match self.inner.get_mut() {
            Ok(i) => i,
            Err(p) => p.into_inner(),
        };
        match std::mem::replace(&mut inner.state, State::Rebuilding) {
            State::Ready(v, meta) => (meta.charged, None, Some(v)),
            State::Out(Moved::Spilled(s)) => (0, Some(s), None),
            other => {
                inner.state = other;
                (0, None, None)
            }
        }
    }

    /// Number of registered waiters (for tests and stats).
    #[cfg_attr(not(loom), allow(dead_code))]
    pub fn waiter_count(&self) -> usize {
        lock(&self.inner).waiters.len()
    }
}

impl<S> Drop for Slot<S> {
    fn drop(&mut self) {
        if self.error_read.load(Ordering::Relaxed) {
            return;
        }
        let inner = match self.inner.get_mut() {
            Ok(i) => i,
            Err(p) => p.into_inner(),
        };
        if let State::Failed(e) = &inner.state {
            // Errors nobody read are logged once, when the object goes away.
            // A dependant that failed because of an input read that input's
            // error (so the input stays quiet) and is logged in its place
            // if nobody reads it. Cancellations and shutdowns are not
            // failures and stay quiet, as do objects freed on purpose.
            let root = e.root_cause();
            if matches!(root, Error::TaskPanicked { .. } | Error::ActorDead { .. } | Error::Infeasible { .. }) {
                tracing::warn!(error = %e, "an object's error was never read");
            }
        }
    }
}
