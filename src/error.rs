//! Errors: one typed value for everything that can go wrong with an object.
//!
//! Errors are values that flow through the task graph: a failed task's error
//! is stored as its result, dependants wrap it in [`Error::DependencyFailed`]
//! (so the chain of task names is kept) and [`Error::root_cause`] reaches the
//! original failure. `Error` is cheap to clone (shared strings, boxed chain).

use crate::id::ObjectId;
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
    /// The task did not run because one of its inputs failed.
    #[error("task `{task}` did not run because an input failed: {cause}")]
    DependencyFailed {
        /// Name of the task that did not run.
        task: Text,
        /// The input's error (itself possibly a `DependencyFailed`).
        cause: Box<Error>,
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
    /// The actor is dead (it panicked with no restarts left).
    #[error("actor `{actor}` is dead: {reason}")]
    ActorDead {
        /// The actor's name.
        actor: Text,
        /// Why it died.
        reason: Text,
    },
    /// The object's value is gone and cannot be rebuilt.
    #[error("object {id} was lost: {reason}")]
    ObjectLost {
        /// The lost object.
        id: ObjectId,
        /// Why it cannot be recovered.
        reason: Text,
    },
    /// A call was made with invalid arguments (e.g. `wait` with duplicates).
    #[error("invalid argument: {0}")]
    InvalidArgument(Text),
    /// The runtime shut down before the task could run.
    #[error("the runtime has shut down")]
    RuntimeShutdown,
}

impl Error {
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
                Error::TaskPanicked { task, .. } | Error::Cancelled { task } | Error::Infeasible { task, .. } => {
                    out.push(task.clone());
                    return out;
                }
                _ => return out,
            }
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

/// Error building a [`Runtime`](crate::Runtime).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// The configuration is invalid (e.g. a negative resource amount).
    #[error("invalid runtime configuration: {0}")]
    Config(String),
    /// The worker threads could not be started.
    #[error("could not start worker threads: {0}")]
    Threads(#[from] rayon::ThreadPoolBuildError),
    /// The spill directory could not be created.
    #[error("spill directory: {0}")]
    Io(#[from] std::io::Error),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_and_root() {
        let root = Error::TaskPanicked { task: "a".into(), message: "boom".into() };
        let e = Error::DependencyFailed {
            task: "c".into(),
            cause: Box::new(Error::DependencyFailed { task: "b".into(), cause: Box::new(root.clone()) }),
        };
        assert_eq!(e.root_cause(), &root);
        assert!(e.is_panic());
        assert!(!e.is_cancelled());
        let names: Vec<String> = e.task_chain().iter().map(|s| s.to_string()).collect();
        assert_eq!(names, ["c", "b", "a"]);
        assert!(e.to_string().contains("boom"));
    }
}
