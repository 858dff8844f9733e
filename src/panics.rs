//! Quiet task panics: a panic caught where a task or actor call runs is an
//! error *value* ([`Error::TaskPanicked`](crate::Error::TaskPanicked)), so by
//! default it does not also print through the process's panic hook (with a
//! backtrace under `RUST_BACKTRACE=1`); it is logged through `tracing` at
//! debug level instead, and an error nobody reads is logged when dropped.
//!
//! How: the first runtime built with quiet panics (the default, see
//! `RuntimeBuilder::print_task_panics`) wraps the process's panic hook once:
//! the wrapper stays silent while the panicking thread is inside a task
//! body ([`catching`]) of a runtime that asked for quiet panics, and calls
//! the previous hook otherwise. Panics anywhere else print as before.

use std::cell::Cell;
use std::sync::Once;

thread_local! {
    /// True while this thread runs a task body or an actor call.
    static IN_BODY: Cell<bool> = const { Cell::new(false) };
    /// True on workers of a runtime that keeps task panics quiet.
    static QUIET: Cell<bool> = const { Cell::new(false) };
}

static INSTALLED: Once = Once::new();

/// Wraps the process's panic hook (once per process).
pub(crate) fn install() {
    INSTALLED.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if IN_BODY.with(Cell::get) && QUIET.with(Cell::get) {
                return;
            }
            previous(info);
        }));
    });
}

/// Marks this thread (a worker) as one whose task panics are quiet or not.
pub(crate) fn set_quiet(quiet: bool) {
    QUIET.with(|q| q.set(quiet));
}

/// Runs `f` (a task body or actor call, inside its `catch_unwind`) marked as
/// such for the hook.
pub(crate) fn catching<R>(f: impl FnOnce() -> R) -> R {
    let outer = IN_BODY.with(|b| b.replace(true));
    let r = f();
    IN_BODY.with(|b| b.set(outer));
    r
}
