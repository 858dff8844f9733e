//! # manta
//!
//! Ray's programming model — tasks that return object refs, an object store,
//! actors, `wait` — as an embedded Rust library on a work-stealing pool.
//!
//! ```
//! use manta::Runtime;
//!
//! let rt = Runtime::builder().num_cpus(2).build()?;
//! let a = rt.put(10)?;                                   // ray.put
//! let b = rt.spawn(|| 20);                               // f.remote()
//! let c = rt.spawn_with((a, b), |(a, b)| *a + *b);       // C.remote(a, b)
//! assert_eq!(*c.get()?, 30);                             // ray.get
//!
//! let counter = rt.actor(0);                             // Counter.remote()
//! let refs: Vec<_> = (0..4).map(|_| counter.call(|n| { *n += 1; *n })).collect();
//! let values: Vec<i32> = rt.get_all(&refs)?.iter().map(|v| **v).collect();
//! assert_eq!(values, [1, 2, 3, 4]);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! ## Objects: `put` and `get`
//! [`Runtime::put`] moves a value into the store and returns an
//! [`ObjectRef<T>`]. [`ObjectRef::get`] blocks until the object is done and
//! returns an `Arc<T>` to the stored value: no copy, constant time for any
//! size. Errors are values ([`Error`]): a failed or cancelled producer, a
//! timeout, or reading a ref as the wrong type — never a panic.
//!
//! ## Tasks
//! [`Runtime::spawn`] and [`Runtime::spawn_with`] submit closures and return
//! a ref at once. Arguments may be refs (the task waits for them in the
//! scheduler, using no thread) or plain values. [`Runtime::task`] sets
//! options: CPUs (fractional), custom resources, retries on panic, a name,
//! several return values. A task starts only when its resources are free;
//! one that asks for more than the runtime has fails at once
//! ([`Error::Infeasible`]). A panic becomes the task's error, and tasks that
//! depend on it fail with [`Error::DependencyFailed`] without running.
//!
//! ## Blocking inside tasks
//! `get` and `wait` inside a task never deadlock: the waiting worker gives its
//! CPUs back and runs other queued tasks until its object is ready, so
//! recursive task trees finish even on one thread.
//!
//! ## Actors
//! [`Runtime::actor`] starts an actor from its state; [`ActorHandle::call`]
//! runs a closure on `&mut State` and returns a ref. Calls on one actor run
//! one at a time in submission order; different actors run in parallel.
//! [`Runtime::actor_builder`] sets options and can start an actor from a
//! factory, which allows restarts after a panic (and, with
//! [`ActorBuilder::max_task_retries`], re-running the call that panicked).
//! Results are stored like tasks' results. [`ActorHandle::kill`] and
//! [`ActorHandle::terminate`] stop an actor from outside; a call on a dead
//! actor fails with [`Error::ActorDead`], whose [`ActorDeathCause`] says why.
//!
//! ## Groups and cancellation
//! [`Runtime::group`] makes a [`Group`]: tasks spawned in it are cancelled
//! together with [`Group::cancel`], O(1) on the caller (no queued task of
//! the group starts after it returns; running ones see [`is_cancelled`];
//! queued tasks' closures and arguments are dropped off the calling
//! thread, once the group has stopped).
//! [`Group::progress`], [`Group::wait_stopped`] and [`Group::join`] tell
//! what is left. [`as_completed`] yields refs as they finish;
//! [`Runtime::map`] runs a closure over a collection with a cap on tasks in
//! flight. Cancelling a task cancels the tasks it submitted.
//!
//! ## `wait`
//! [`Runtime::wait`] returns `(ready, pending)` once `num_returns` refs are
//! done or the timeout passes, without spinning.
//!
//! ## Objects: debugging and control
//! [`Runtime::free`] drops objects now, [`Runtime::contains`] says whether
//! one can still be read, [`ObjectRef::ref_counts`] counts who holds it, and
//! [`TaskBuilder::lineage`] / [`TaskBuilder::max_reconstructions`] control
//! rebuilding per task. An error nobody read is logged once when its object
//! goes; every way of reading it counts.
//!
//! ## Observing
//! [`Runtime::metrics`] counts tasks, actor calls and store traffic (and
//! writes Prometheus text); [`Runtime::record_timeline`] and
//! [`Runtime::timeline`] record a Chrome trace of every task.
//!
//! ## async and callbacks
//! `ObjectRef` implements `IntoFuture` (any executor) and
//! [`ObjectRef::on_ready`] runs a callback when the object is done.

// Denied, not forbidden: `unsafe` only where a benchmark demands it
// (STYLE.md), each block with its proof in a `SAFETY:` comment: `claim`
// (a job's function taken with one swap; `tests/loom_claim.rs`) and
// `madvise` in `heap_size::populate`.
#![deny(unsafe_code)]
#![warn(missing_docs)]

mod actor;
mod args;
pub mod backend;
mod cancel;
mod cell;
mod chrome;
mod claim;
mod completed;
mod countdown;
mod decide;
mod dispatch;
mod error;
mod eventlog;
mod exec;
mod export;
mod group;
mod group_counts;
mod heap_size;
mod id;
mod inbox;
mod job;
mod lazy;
mod lineage;
mod mailbox;
mod metrics;
mod notify;
mod objects;
mod panics;
mod parked;
mod refs;
mod resources;
mod runtime;
mod scheduler;
mod slot;
mod spill;
mod store;
mod sync;
mod task;
mod timeline;
mod wait;
mod watchers;

pub use actor::{ActorBuilder, ActorHandle};
pub use args::{MultiReturn, TaskArg, TaskArgs, Val};
pub use chrome::ChromeTrace;
pub use completed::{as_completed, AsCompleted, Indexed, Map, MapUnordered};
pub use error::{ActorDeathCause, BuildError, Cause, DeadActor, Error, StoreFull, TaskFailure, Text};
pub use group::{Group, GroupBuilder, Progress};
pub use heap_size::{register, register_spillable, HeapSize};
pub use id::{ActorId, ObjectId};
pub use metrics::Metrics;
pub use objects::RefCounts;
pub use refs::{AnyRef, Done, ObjectRef, RefFuture, Waitable};
pub use runtime::{init, try_init, EnterGuard, Runtime, RuntimeBuilder};
pub use spill::SpillError;
pub use store::StoreStats;
pub use task::{check_cancelled, is_cancelled, OneShot, Priority, Rerunnable, TaskBuilder, TaskOptions};
pub use timeline::{
    Direction as TransferDirection, Event as TimelineEvent, Label as TimelineLabel, Outcome as TimelineOutcome,
    StoreOp, Timeline, TransferLane,
};

/// Entry points for the fuzz targets in `fuzz/` and the tests that run
/// their corpora: only with the `fuzzing` feature, never part of the API.
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing {
    /// Decodes a spill file held in memory as a `T` (the fuzz target's
    /// entry point): any bytes give a value or a `SpillError`, never a panic.
    pub fn decode_spill<T: 'static>(bytes: &[u8]) -> Option<Result<(), crate::SpillError>> {
        let info = crate::heap_size::lookup(std::any::TypeId::of::<T>())?;
        let (_, decode) = info.codec?;
        Some(crate::spill::decode_bytes(bytes, std::any::type_name::<T>(), decode).map(|_| ()))
    }

    /// Encodes a `T` as a spill file (to build fuzz corpora).
    pub fn encode_spill<T: std::any::Any + Send + Sync>(value: T) -> Option<Vec<u8>> {
        let info = crate::heap_size::lookup(std::any::TypeId::of::<T>())?;
        let (encode, _) = info.codec?;
        let mut out = Vec::new();
        let v = crate::slot::Value::new(value);
        crate::spill::encode_to(&mut out, std::any::type_name::<T>(), encode, &v).ok()?;
        Some(out)
    }
}

/// The concurrency protocols, exposed only to the loom models in
/// `tests/loom_*.rs` (built with `--cfg loom`). Not part of the API.
#[cfg(loom)]
#[doc(hidden)]
pub mod protocols {
    pub use crate::claim::TakeOnce;
    pub use crate::countdown::Countdown;
    pub use crate::decide::{Decider, Deciders};
    pub use crate::dispatch::{Dispatch, Next, Queued, Tally};
    pub use crate::eventlog::{EventLog, Writer, CHUNK};
    pub use crate::export::{Claim, Table};
    pub use crate::group_counts::{Counts, Ended};
    pub use crate::lazy::Lazy;
    pub use crate::mailbox::Mailbox;
    pub use crate::notify::{Parker, WaitGroup, Waiter};
    pub use crate::parked::Parked;
    pub use crate::resources::{Request, Totals};
    pub use crate::slot::{Meta, Moved, Read, Slot, Value};
    pub use crate::watchers::{when, when_racy, Watchers};
}
