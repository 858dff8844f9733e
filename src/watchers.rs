//! Watchers of a condition that, once true, stays true (a cancelled group
//! that has stopped: no task of it runs and none can start), and
//! [`when`], which runs a callback once it holds.
//!
//! The protocol (model-checked by `tests/loom_watchers.rs`):
//! - a watcher registers ([`Watchers::watch`]: `watched` set, SeqCst, then
//!   the callback pushed under the lock) and only then looks at the
//!   condition;
//! - whoever makes the condition true makes it so (a read-modify-write, or
//!   a store and a SeqCst fence) and then wakes: always, or only if
//!   [`Watchers::watched`] (so a cancel skips the lock while nobody ever
//!   watched); [`Watchers::wake`] takes every callback registered so far,
//!   under the lock, and calls each once;
//! - [`when`] runs `f` at once if the condition holds; otherwise it
//!   registers a watcher that looks again (and registers again) each time
//!   it is woken, and after registering (`watch` ends with a SeqCst fence,
//!   which pairs with a waker's) it looks once more, in case the change
//!   came between its first look and its registration (then it wakes the
//!   watchers itself).
//!
//! Invariant: `f` runs exactly once, and only once the condition holds,
//! provided every change that can make it true is followed by a wake as
//! above. Either the waker's take comes after the push (it calls the
//! watcher) or the push comes after the take, and then the lock orders the
//! waker's change before the watcher's second look, which sees it.

use crate::sync::{fence, lock, AtomicBool, Mutex, Ordering};

/// Callbacks waiting for the next change of a condition (module docs).
pub struct Watchers {
    waiters: Mutex<Vec<Box<dyn FnOnce() + Send>>>,
    /// True once a watcher was ever registered.
    watched: AtomicBool,
}

impl Default for Watchers {
    fn default() -> Self {
        Watchers { waiters: Mutex::new(Vec::new()), watched: AtomicBool::new(false) }
    }
}

impl Watchers {
    /// Calls `f` once, on the next [`Watchers::wake`]. Ends with a SeqCst
    /// fence, which pairs with a waker's (its change, a SeqCst fence, then
    /// [`Watchers::watched`]): a look at the condition after this call
    /// sees the waker's change, or the waker sees `watched` (Dekker).
    pub fn watch(&self, f: Box<dyn FnOnce() + Send>) {
        self.watched.store(true, Ordering::SeqCst);
        lock(&self.waiters).push(f);
        fence(Ordering::SeqCst);
    }

    /// True once a watcher was ever registered (a waker that made its
    /// change and issued a SeqCst fence may skip [`Watchers::wake`] if not).
    pub fn watched(&self) -> bool {
        self.watched.load(Ordering::SeqCst)
    }

    /// Calls (and forgets) every watcher registered so far, outside the
    /// lock.
    pub fn wake(&self) {
        let waiters = std::mem::take(&mut *lock(&self.waiters));
        for f in waiters {
            f();
        }
    }
}

/// Has `run(f)` called once `holds(owner)` is true: at once if it is, else
/// from the [`Watchers::wake`] (of `watchers(owner)`) that follows the
/// change making it true (module docs). `owner` is a handle the watcher
/// keeps (an `Arc`) until then.
pub fn when<P: Clone + Send + 'static>(
    owner: &P,
    watchers: fn(&P) -> &Watchers,
    holds: fn(&P) -> bool,
    run: fn(Box<dyn FnOnce() + Send>),
    f: Box<dyn FnOnce() + Send>,
) {
    when_looking(owner, (watchers, holds, run), f, true);
}

/// The seeded bug for the loom model: [`when`] without the look after
/// registering (a change between the first look and the registration
/// wakes nobody, and `f` never runs).
#[cfg(loom)]
pub fn when_racy<P: Clone + Send + 'static>(
    owner: &P,
    watchers: fn(&P) -> &Watchers,
    holds: fn(&P) -> bool,
    run: fn(Box<dyn FnOnce() + Send>),
    f: Box<dyn FnOnce() + Send>,
) {
    when_looking(owner, (watchers, holds, run), f, false);
}

/// How [`when`] reaches the owner's watchers, looks at the condition and
/// hands `f` over.
type Ways<P> = (fn(&P) -> &Watchers, fn(&P) -> bool, fn(Box<dyn FnOnce() + Send>));

/// [`when`], with the look after registering only if `look_again`.
fn when_looking<P: Clone + Send + 'static>(owner: &P, ways: Ways<P>, f: Box<dyn FnOnce() + Send>, look_again: bool) {
    let (watchers, holds, run) = ways;
    if holds(owner) {
        run(f);
        return;
    }
    let me = owner.clone();
    // Woken on each change that may matter: look again, register again.
    watchers(owner).watch(Box::new(move || when_looking(&me, ways, f, look_again)));
    // A change between the look and the registration woke nobody: look
    // (after `watch`'s fence).
    if look_again && holds(owner) {
        watchers(owner).wake();
    }
}
