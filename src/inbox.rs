//! The dispatch inbox: where a job submitted while every runner place is
//! busy waits, without the dispatch lock, until a runner takes it into the
//! queue (`dispatch`, which owns the protocol around it).
//!
//! It is a linearizable multi-producer queue: crossbeam's `Injector`
//! (lock-free, segmented: one compare-exchange per push, a block allocated
//! every 63 jobs). Under loom, whose models cannot run crossbeam's atomics,
//! a mutex-guarded `VecDeque` with the same interface stands in: the model
//! checks the protocol around the inbox (`tests/loom_dispatch.rs`), taking
//! the queue's own linearizability as given.
//!
//! Invariants: FIFO per producer; every pushed job is drained exactly once.

#[cfg(not(loom))]
mod imp {
    use crossbeam_deque::{Injector, Steal};

    /// A lock-free FIFO of jobs.
    pub struct Inbox<J>(Injector<J>);

    impl<J> Inbox<J> {
        pub fn new() -> Inbox<J> {
            Inbox(Injector::new())
        }

        #[inline]
        pub fn push(&self, job: J) {
            self.0.push(job);
        }

        #[inline]
        pub fn is_empty(&self) -> bool {
            self.0.is_empty()
        }

        /// Takes every job pushed so far, oldest first.
        pub fn drain(&self, mut f: impl FnMut(J)) {
            loop {
                match self.0.steal() {
                    Steal::Success(j) => f(j),
                    Steal::Empty => return,
                    Steal::Retry => std::hint::spin_loop(),
                }
            }
        }
    }
}

#[cfg(loom)]
mod imp {
    use crate::sync::{lock, Mutex};
    use std::collections::VecDeque;

    /// The model's stand-in: a mutex-guarded FIFO.
    pub struct Inbox<J>(Mutex<VecDeque<J>>);

    impl<J> Inbox<J> {
        pub fn new() -> Inbox<J> {
            Inbox(Mutex::new(VecDeque::new()))
        }

        pub fn push(&self, job: J) {
            lock(&self.0).push_back(job);
        }

        pub fn is_empty(&self) -> bool {
            lock(&self.0).is_empty()
        }

        pub fn drain(&self, mut f: impl FnMut(J)) {
            let jobs = std::mem::take(&mut *lock(&self.0));
            jobs.into_iter().for_each(&mut f);
        }
    }
}

pub(crate) use imp::Inbox;
