//! Errors: one typed value for everything that can go wrong with an object.
//!
//! Errors are values that flow through the task graph: a failed task's error
//! is stored as its result, dependants wrap it in [`Error::DependencyFailed`]
//! (so the chain of task names is kept) and [`Error::root_cause`] reaches the
//! original failure. `Error` is cheap to clone (shared strings, boxed chain).

use crate::id::{ActorId, ObjectId};
use std::sync::Arc;
use std::time::Duration;

/// Shared, immutable text inside errors.
pub type Text = Arc<str>;

/// Why an object has no value.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The task (or actor method) panicked; `message` is the panic payload.
    #[error("task `{task}` panicked: {message}")]
    TaskPanicked {
        /// Name of the task that panicked.
        task: Text,
        /// The panic message.
        message: Text,
    },
    /// The task's body returned an error of its own (a task spawned with
    /// `spawn_try`). The error is kept: [`Error::downcast_ref`] gives it back
    /// typed, and it is this error's [`source`](std::error::Error::source).
    #[error("task `{task}` failed: {error}")]
    TaskFailed {
        /// Name of the task.
        task: Text,
        /// What its body returned.
        #[source]
        error: TaskFailure,
    },
    /// The task did not run because one of its inputs failed.
    #[error("task `{task}` did not run because an input failed: {}", DisplayRoot(cause))]
    DependencyFailed {
        /// Name of the task that did not run.
        task: Text,
        /// The input's error (itself possibly a `DependencyFailed`).
        cause: Cause,
    },
    /// The task was cancelled before it finished.
    #[error("task `{task}` was cancelled")]
    Cancelled {
        /// Name of the cancelled task.
        task: Text,
    },
    /// The object was not ready before the timeout.
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    /// The ref was read as a type other than the one stored.
    #[error("object holds a `{found}`, not a `{expected}`")]
    WrongType {
        /// The type asked for.
        expected: &'static str,
        /// The type stored.
        found: &'static str,
    },
    /// The task asks for more of a resource than the runtime has in total.
    #[error("task `{task}` needs {requested} of resource `{resource}`, but the runtime has {total} in total")]
    Infeasible {
        /// Name of the task.
        task: Text,
        /// The resource that is short.
        resource: Text,
        /// How much the task asked for.
        requested: f64,
        /// How much the runtime has in total.
        total: f64,
    },
    /// The actor is dead, or this call was made before it was killed (see
    /// [`ActorHandle::kill`](crate::ActorHandle::kill)): `actor` names it,
    /// carries its id and the cause to match on (`actor.cause()`);
    /// `reason` says the same in words.
    ///
    /// ```
    /// # use manta::{ActorDeathCause, Error};
    /// # fn check(e: Error) {
    /// match e {
    ///     Error::ActorDead { actor, .. } if matches!(actor.cause(), ActorDeathCause::Killed) => {}
    ///     Error::ActorDead { actor, reason } => eprintln!("{} ({:?}) died: {reason}", actor.name(), actor.id()),
    ///     _ => {}
    /// }
    /// # }
    /// ```
    #[error("actor `{actor}` is dead: {reason}")]
    ActorDead {
        /// The actor: its name (what the field dereferences to, and
        /// displays as), its id and why it died.
        actor: DeadActor,
        /// Why it died, in words.
        reason: Text,
    },
    /// The object was freed with [`Runtime::free`](crate::Runtime::free):
    /// its value is gone on purpose and is not rebuilt.
    #[error("object {id} was freed")]
    ObjectFreed {
        /// The freed object.
        id: ObjectId,
    },
    /// The object's value was lost again after its task had already been
    /// re-run the most times its
    /// [`TaskBuilder::max_reconstructions`](crate::TaskBuilder::max_reconstructions)
    /// allows (Ray's `ObjectReconstructionFailedMaxAttemptsExceededError`).
    #[error("object {id} cannot be rebuilt: task `{task}` was already re-run {max} times (max_reconstructions)")]
    MaxReconstructionsExceeded {
        /// The lost object.
        id: ObjectId,
        /// The task that made it.
        task: Text,
        /// Its cap on rebuilds (a `u64` though the cap is a `u32`: a
        /// 4-byte field here changed `Error`'s layout so that reading a
        /// `Result<Value, Error>` back from the stack stalled, making small
        /// gets ~2x slower).
        max: u64,
    },
    /// The object's value is gone and cannot be rebuilt.
    #[error("object {id} was lost: {reason}")]
    ObjectLost {
        /// The lost object.
        id: ObjectId,
        /// Why it cannot be recovered.
        reason: Text,
    },
    /// The object was dropped from memory to be rebuilt, and its lineage
    /// was then dropped by the lineage cap: it cannot be rebuilt any more.
    #[error("object {id} cannot be rebuilt: the lineage of task `{task}` was evicted by the lineage cap")]
    LineageEvicted {
        /// The lost object.
        id: ObjectId,
        /// The task that made it.
        task: Text,
    },
    /// A task's result could not be stored: the store is at its cap and
    /// nothing could be moved out in time.
    #[error("object store is full: {needed} bytes needed, {capacity} bytes capacity")]
    StoreFull {
        /// Bytes the result needs.
        needed: usize,
        /// The store's capacity.
        capacity: usize,
    },
    /// A call was made with invalid arguments (e.g. `wait` with duplicates).
    #[error("invalid argument: {0}")]
    InvalidArgument(Text),
    /// The runtime shut down before the task could run.
    #[error("the runtime has shut down")]
    RuntimeShutdown,
    /// A remote object could not be fetched: no node that holds it could
    /// be reached (clustered runtimes only).
    #[error("object {id}: peer unreachable: {reason}")]
    PeerUnreachable {
        /// The object that was being fetched.
        id: ObjectId,
        /// What failed (the peers tried and their errors).
        reason: Text,
    },
    /// A cluster task, actor or method named a function no node that could
    /// run it has registered (clustered runtimes only).
    #[error("function `{name}` is not registered: {reason}")]
    UnknownFunction {
        /// The registered name that was called.
        name: Text,
        /// Which node refused it, or why no node could take it.
        reason: Text,
    },
    /// The object's owner (the node that made it, or submitted the task
    /// that makes it) died, and no live node holds a full copy of it
    /// (clustered runtimes only).
    #[error("object {id} died with its owner, node {owner}: no live node holds a copy")]
    OwnerDied {
        /// The lost object.
        id: ObjectId,
        /// The dead owner's peer id.
        owner: Text,
    },
    /// Every node that could serve the object was a holder other than its
    /// owner (a replica, a DHT provider), and none served bytes the owner
    /// vouches for (no valid voucher signed by the owner, or bytes that do
    /// not match it), so they were refused (clustered runtimes only).
    #[error("object {id}: its content could not be verified: {reason}")]
    Unverified {
        /// The object that was being fetched.
        id: ObjectId,
        /// The holders tried and why each was refused.
        reason: Text,
    },
}

/// Why an actor died: the cause an [`Error::ActorDead`] carries, to match
/// on (the error's `reason` says the same in words).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum ActorDeathCause {
    /// A method panicked and the actor had no restarts left (or could have
    /// none: it was started from a value).
    Panicked {
        /// The method: its function's type name (`app::Counter::increment`),
        /// or, for a closure, where it was called (`src/app.rs:42`).
        method: Text,
        /// The panic message.
        message: Text,
        /// How many times the actor had been restarted before.
        restarts: u32,
    },
    /// [`ActorHandle::kill`](crate::ActorHandle::kill): the actor is dead
    /// (`no_restart`, or no restarts left), or it was restarted and this
    /// call, made before the kill, was not run on the new state.
    Killed,
    /// [`ActorHandle::terminate`](crate::ActorHandle::terminate): the
    /// actor ran the calls queued before it and stopped.
    Terminated,
    /// The factory panicked while building the state (at first use or on
    /// a restart).
    ConstructorPanicked {
        /// The panic message.
        message: Text,
    },
    /// The actor asks for more of a resource than the runtime has in total
    /// (an actor whose every call fails at once, as an infeasible task).
    Infeasible {
        /// The resource that is short.
        resource: Text,
        /// How much the actor asked for.
        requested: f64,
        /// How much the runtime has in total.
        total: f64,
    },
    /// `max_restarts` was asked of an actor started from a value
    /// ([`ActorBuilder::spawn`](crate::ActorBuilder::spawn)), which cannot
    /// be rebuilt: use `spawn_factory`.
    NoFactory,
    /// Not classified: an error made from a name and a text only
    /// ([`Error::actor_dead`], or a layer that does not say more, such as
    /// the cluster crate's errors for remote actors today).
    Other,
}

/// The actor an [`Error::ActorDead`] is about: its name, id and cause
/// (one pointer wide, so it keeps `Error` small). Dereferences to (and
/// displays as) its name, so `&*actor == "counter"` reads as a name.
#[derive(Clone, PartialEq)]
pub struct DeadActor(Arc<DeadActorInfo>);

#[derive(Debug, PartialEq)]
struct DeadActorInfo {
    name: Text,
    id: Option<ActorId>,
    cause: ActorDeathCause,
}

impl DeadActor {
    /// An actor with its id (if known) and why it died.
    pub fn new(name: impl Into<Text>, id: Option<ActorId>, cause: ActorDeathCause) -> DeadActor {
        DeadActor(Arc::new(DeadActorInfo { name: name.into(), id, cause }))
    }

    /// The actor's name.
    pub fn name(&self) -> &str {
        &self.0.name
    }

    /// The actor's id; `None` when the error was made by a layer that does
    /// not know it (from a name only, see [`Error::actor_dead`]).
    pub fn id(&self) -> Option<ActorId> {
        self.0.id
    }

    /// Why it died.
    pub fn cause(&self) -> &ActorDeathCause {
        &self.0.cause
    }
}

impl std::fmt::Debug for DeadActor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeadActor")
            .field("name", &self.0.name)
            .field("id", &self.0.id)
            .field("cause", &self.0.cause)
            .finish()
    }
}

impl std::ops::Deref for DeadActor {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0.name
    }
}

impl std::fmt::Display for DeadActor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0.name)
    }
}

/// An actor known by name only (cause [`ActorDeathCause::Other`], no id).
impl From<&str> for DeadActor {
    fn from(name: &str) -> DeadActor {
        DeadActor::new(name, None, ActorDeathCause::Other)
    }
}

/// An actor known by name only (cause [`ActorDeathCause::Other`], no id).
impl From<String> for DeadActor {
    fn from(name: String) -> DeadActor {
        DeadActor::new(name, None, ActorDeathCause::Other)
    }
}

/// An actor known by name only (cause [`ActorDeathCause::Other`], no id).
impl From<Text> for DeadActor {
    fn from(name: Text) -> DeadActor {
        DeadActor::new(name, None, ActorDeathCause::Other)
    }
}

/// An error a task's body returned (see [`Error::TaskFailed`]): shared
/// (cloning is O(1)), displayed as the error itself, and downcastable.
#[derive(Clone)]
pub struct TaskFailure(Arc<dyn std::error::Error + Send + Sync + 'static>);

impl TaskFailure {
    /// Wraps a task's error.
    pub fn new<E: std::error::Error + Send + Sync + 'static>(e: E) -> TaskFailure {
        TaskFailure(Arc::new(e))
    }

    /// The error as `E`, if it is one.
    pub fn downcast_ref<E: std::error::Error + 'static>(&self) -> Option<&E> {
        self.0.downcast_ref::<E>()
    }

    /// The error itself.
    pub fn get(&self) -> &(dyn std::error::Error + Send + Sync + 'static) {
        &*self.0
    }
}

impl std::fmt::Debug for TaskFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(&*self.0, f)
    }
}

impl std::fmt::Display for TaskFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(&*self.0, f)
    }
}

impl std::error::Error for TaskFailure {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.0.source()
    }
}

impl PartialEq for TaskFailure {
    fn eq(&self, other: &TaskFailure) -> bool {
        Arc::ptr_eq(&self.0, &other.0) || self.0.to_string() == other.0.to_string()
    }
}

/// The error of a failed input, shared by every dependant (cloning is O(1),
/// however long the chain of failed tasks behind it). Dereferences to
/// [`Error`]; dropping, formatting and comparing never recurse, so chains of
/// any length are safe.
#[derive(Clone)]
pub struct Cause(Arc<Error>);

impl Cause {
    /// Wraps an error.
    pub fn new(e: Error) -> Cause {
        Cause(Arc::new(e))
    }
}

impl std::ops::Deref for Cause {
    type Target = Error;
    fn deref(&self) -> &Error {
        &self.0
    }
}

impl std::fmt::Debug for Cause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let chain = self.0.task_chain();
        write!(f, "Cause {{ chain: {} tasks, root: {:?} }}", chain.len(), DebugRoot(self.0.root_cause()))
    }
}

impl PartialEq for Cause {
    fn eq(&self, other: &Cause) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
            || (self.0.task_chain() == other.0.task_chain() && self.0.root_cause() == other.0.root_cause())
    }
}

fn leaf() -> Arc<Error> {
    static LEAF: std::sync::OnceLock<Arc<Error>> = std::sync::OnceLock::new();
    LEAF.get_or_init(|| Arc::new(Error::RuntimeShutdown)).clone()
}

impl Drop for Cause {
    fn drop(&mut self) {
        // Unlink the chain iteratively instead of recursively.
        let mut next = std::mem::replace(&mut self.0, leaf());
        while let Ok(err) = Arc::try_unwrap(next) {
            match err {
                Error::DependencyFailed { mut cause, .. } => next = std::mem::replace(&mut cause.0, leaf()),
                _ => break,
            }
        }
    }
}

struct DisplayRoot<'a>(&'a Cause);
impl std::fmt::Display for DisplayRoot<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let chain = self.0.task_chain();
        let root = self.0.root_cause();
        match chain.first() {
            Some(first) if chain.len() > 1 => {
                write!(f, "input `{first}` failed ({} failed tasks back to the root): {root}", chain.len())
            }
            _ => write!(f, "{root}"),
        }
    }
}

/// Debug of a root cause (never a `DependencyFailed`, so never recursive).
struct DebugRoot<'a>(&'a Error);
impl std::fmt::Debug for DebugRoot<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self.0, f)
    }
}

impl Error {
    /// Wraps `cause` as the input failure of `task`.
    pub(crate) fn dependency(task: Text, cause: Error) -> Error {
        Error::DependencyFailed { task, cause: Cause::new(cause) }
    }

    /// The original failure at the end of a chain of `DependencyFailed`.
    pub fn root_cause(&self) -> &Error {
        let mut e = self;
        while let Error::DependencyFailed { cause, .. } = e {
            e = cause;
        }
        e
    }

    /// True if this error, or the failure it descends from, is a cancellation.
    pub fn is_cancelled(&self) -> bool {
        matches!(self.root_cause(), Error::Cancelled { .. })
    }

    /// The error a task returned (`spawn_try`), typed, if this error is, or
    /// descends from, a [`Error::TaskFailed`] holding an `E`.
    pub fn downcast_ref<E: std::error::Error + 'static>(&self) -> Option<&E> {
        match self.root_cause() {
            Error::TaskFailed { error, .. } => error.downcast_ref::<E>(),
            _ => None,
        }
    }

    /// True if this error, or the failure it descends from, is a panic.
    pub fn is_panic(&self) -> bool {
        matches!(self.root_cause(), Error::TaskPanicked { .. })
    }

    /// The names of the tasks along the chain, outermost first.
    pub fn task_chain(&self) -> Vec<Text> {
        let mut out = Vec::new();
        let mut e = self;
        loop {
            match e {
                Error::DependencyFailed { task, cause } => {
                    out.push(task.clone());
                    e = cause;
                }
                Error::TaskPanicked { task, .. }
                | Error::TaskFailed { task, .. }
                | Error::Cancelled { task }
                | Error::Infeasible { task, .. } => {
                    out.push(task.clone());
                    return out;
                }
                _ => return out,
            }
        }
    }

    /// An [`Error::ActorDead`] for an actor known by name only: no id,
    /// cause [`ActorDeathCause::Other`].
    pub fn actor_dead(name: impl Into<Text>, reason: impl Into<Text>) -> Error {
        Error::ActorDead { actor: DeadActor::new(name, None, ActorDeathCause::Other), reason: reason.into() }
    }

    /// The dead actor this error, or the failure it descends from, is
    /// about (an [`Error::ActorDead`] at the root of the chain).
    pub fn dead_actor(&self) -> Option<&DeadActor> {
        match self.root_cause() {
            Error::ActorDead { actor, .. } => Some(actor),
            _ => None,
        }
    }

    pub(crate) fn invalid(msg: impl Into<String>) -> Error {
        Error::InvalidArgument(msg.into().into())
    }
}

/// Turns a caught panic payload into text.
pub(crate) fn panic_message(payload: &(dyn std::any::Any + Send)) -> Text {
    if let Some(s) = payload.downcast_ref::<&'static str>() {
        (*s).into()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.as_str().into()
    } else {
        "non-string panic payload".into()
    }
}

/// The error of a `put` that could not be stored: it hands the value back.
#[derive(thiserror::Error)]
#[error("object store is full ({needed} bytes needed, {capacity} bytes capacity)")]
pub struct StoreFull<T> {
    /// The value that was not stored.
    pub value: T,
    /// Bytes the value needs.
    pub needed: usize,
    /// The store's capacity.
    pub capacity: usize,
}

impl<T> std::fmt::Debug for StoreFull<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreFull")
            .field("value", &std::any::type_name::<T>())
            .field("needed", &self.needed)
            .field("capacity", &self.capacity)
            .finish()
    }
}

impl<T> From<StoreFull<T>> for Error {
    /// Drops the value and keeps the sizes, so `?` works on `put` in a
    /// function returning `Result<_, manta::Error>`.
    fn from(e: StoreFull<T>) -> Error {
        Error::StoreFull { needed: e.needed, capacity: e.capacity }
    }
}

/// Error building a [`Runtime`](crate::Runtime).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// A custom resource was given an empty name, or an amount that is
    /// negative, infinite or not a number.
    #[error("resource `{name}` with amount {amount}: a resource needs a name and a finite, non-negative amount")]
    InvalidResource {
        /// The resource.
        name: Text,
        /// The amount given.
        amount: f64,
    },
    /// `"CPU"` was given as a custom resource; CPUs are set with
    /// `num_cpus`.
    #[error("use num_cpus to set CPUs, not resource(\"CPU\")")]
    CpuAsResource,
    /// The worker threads could not be started.
    #[error("could not start worker threads")]
    Threads(#[source] rayon::ThreadPoolBuildError),
    /// The spill directory could not be created.
    #[error("cannot create the spill directory in {}", path.display())]
    SpillDir {
        /// The directory asked for.
        path: std::path::PathBuf,
        /// Why it failed.
        #[source]
        source: std::io::Error,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_stay_small() {
        // Every Result<_, Error>, slot and queued call carries one: keep it
        // small (an actor's details are behind one pointer, DeadActor).
        assert!(std::mem::size_of::<Error>() <= 56, "{}", std::mem::size_of::<Error>());
    }

    #[test]
    fn chain_and_root() {
        let root = Error::TaskPanicked { task: "a".into(), message: "boom".into() };
        let e = Error::dependency("c".into(), Error::dependency("b".into(), root.clone()));
        assert_eq!(e.root_cause(), &root);
        assert!(e.is_panic());
        assert!(!e.is_cancelled());
        let names: Vec<String> = e.task_chain().iter().map(|s| s.to_string()).collect();
        assert_eq!(names, ["c", "b", "a"]);
        assert!(e.to_string().contains("boom"));
    }

    #[test]
    fn long_chains_clone_drop_and_print_without_recursion() {
        let mut e = Error::TaskPanicked { task: "root".into(), message: "boom".into() };
        for _ in 0..200_000 {
            e = Error::dependency("link".into(), e);
        }
        let copy = e.clone();
        assert_eq!(copy, e);
        assert!(format!("{e}").contains("200000 failed tasks"));
        assert!(format!("{e:?}").contains("boom"));
        drop(copy);
        drop(e);
    }
}
