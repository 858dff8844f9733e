//! The scheduler: admits runnable jobs when their resources are free and runs
//! them on the rayon pool; blocked workers help instead of sleeping.
//!
//! # Model
//! A *job* is a task (or an actor's mailbox drain) whose inputs are all
//! ready. Jobs wait in FIFO queues, one per resource shape ("scheduling
//! class", as in Ray), so a job that waits for a GPU never holds back CPU
//! jobs behind it. [`Scheduler::pop_fitting`] takes, among the class heads
//! whose resources are free, the oldest one, and acquires its resources.
//!
//! Jobs are executed by *runners*: a runner is a rayon job that loops
//! "pop a fitting job, run it, release its resources" until nothing fits,
//! then exits. At most `threads` runners exist; a submit that finds a free
//! runner slot starts one. In a burst of submissions only `threads` rayon
//! jobs are spawned at all and every later job is taken from the queue by a
//! runner that just finished one: no per-task spawn, no per-task wake-up.
//!
//! # Blocking inside a worker (no deadlock)
//! A worker that blocks in `get`/`wait` becomes a *helper*
//! ([`block_until`]): it gives its task's CPUs back (Ray's rule), registers
//! its parker in `helpers`, and loops: check its condition, else pop and run
//! a fitting job inline (work stealing, as rayon's `join` does), else park.
//! A submit that cannot start a runner (all slots taken, possibly by blocked
//! runners) unparks a helper. Because a helper can always run the job that
//! it waits for once its CPUs are given back, recursive task trees finish on
//! a one-thread runtime. When the helper resumes it takes its CPUs again even
//! if that oversubscribes for a moment.
//!
//! No lock is held while a job runs. Lock order: scheduler state, then a
//! parker (leaf).

use crate::notify::Parker;
use crate::resources::{Pool, Request};
use crate::sync::{lock, Arc as ShimArc, Mutex};
use std::cell::Cell;
use std::collections::VecDeque;
use std::sync::{Arc, OnceLock, Weak};
use std::time::Instant;

/// What a job is told when it is taken off the queue.
#[derive(Debug)]
pub(crate) enum Go {
    /// Run now.
    Run,
    /// The runtime shut down: complete your outputs with `RuntimeShutdown`.
    Shutdown,
    /// An input failed: complete your outputs with this cause.
    InputFailed(crate::error::Error),
}

/// A runnable unit of work with the resources it needs.
pub(crate) struct Job {
    pub req: Request,
    pub run: Box<dyn FnOnce(Go) + Send>,
}

struct Class {
    req: Request,
    queue: VecDeque<(u64, Job)>,
}

struct State {
    pool: Pool,
    classes: Vec<Class>,
    seq: u64,
    queued: usize,
    runners: usize,
    helpers: Vec<ShimArc<Parker>>,
    shutdown: bool,
}

impl State {
    fn push(&mut self, job: Job) {
        self.seq += 1;
        self.queued += 1;
        let seq = self.seq;
        match self.classes.iter_mut().find(|c| c.req == job.req) {
            Some(c) => c.queue.push_back((seq, job)),
            None => {
                let mut queue = VecDeque::new();
                let req = job.req.clone();
                queue.push_back((seq, job));
                self.classes.push(Class { req, queue });
            }
        }
    }

    /// Takes the oldest job whose resources are free, acquiring them.
    fn pop_fitting(&mut self) -> Option<Job> {
        let mut best: Option<(usize, u64)> = None;
        for (i, c) in self.classes.iter().enumerate() {
            if let Some((seq, _)) = c.queue.front() {
                if best.is_none_or(|(_, s)| *seq < s) && self.pool.fits(&c.req) {
                    best = Some((i, *seq));
                }
            }
        }
        let (i, _) = best?;
        let (_, job) = self.classes[i].queue.pop_front()?;
        if self.classes[i].queue.is_empty() && self.classes.len() > 1 {
            self.classes.swap_remove(i);
        }
        self.queued -= 1;
        self.pool.acquire(&job.req);
        Some(job)
    }

    fn drain(&mut self) -> Vec<Job> {
        self.queued = 0;
        self.classes.drain(..).flat_map(|c| c.queue.into_iter().map(|(_, j)| j)).collect()
    }
}

/// The admission queue and runner bookkeeping of one runtime.
pub(crate) struct Scheduler {
    state: Mutex<State>,
    threads: usize,
    pool: OnceLock<Weak<rayon::ThreadPool>>,
}

thread_local! {
    /// The scheduler whose pool this thread belongs to (set at thread start).
    static WORKER_OF: std::cell::RefCell<Weak<Scheduler>> = const { std::cell::RefCell::new(Weak::new()) };
    /// CPU units held by the task running on this thread (0 outside tasks).
    static TASK_CPU: Cell<u64> = const { Cell::new(0) };
}

impl Scheduler {
    pub fn new(pool: Pool, threads: usize) -> Arc<Scheduler> {
        Arc::new(Scheduler {
            state: Mutex::new(State {
                pool,
                classes: Vec::new(),
                seq: 0,
                queued: 0,
                runners: 0,
                helpers: Vec::new(),
                shutdown: false,
            }),
            threads: threads.max(1),
            pool: OnceLock::new(),
        })
    }

    /// Connects the rayon pool (done once, right after it is built).
    pub fn attach(&self, pool: &Arc<rayon::ThreadPool>) {
        let _ = self.pool.set(Arc::downgrade(pool));
    }

    /// Marks the calling thread as a worker of `this` (the pool's start hook).
    pub fn register_worker(this: &Weak<Scheduler>) {
        WORKER_OF.with(|w| *w.borrow_mut() = this.clone());
    }

    /// The scheduler of the pool the calling thread belongs to, if any.
    pub fn current() -> Option<Arc<Scheduler>> {
        WORKER_OF.with(|w| w.borrow().upgrade())
    }

    /// Validates a request against the runtime's totals.
    pub fn with_pool<R>(&self, f: impl FnOnce(&Pool) -> R) -> R {
        f(&lock(&self.state).pool)
    }

    /// Queues a runnable job and makes sure someone will run it.
    pub fn submit(self: &Arc<Self>, job: Job) {
        let mut st = lock(&self.state);
        if st.shutdown {
            drop(st);
            (job.run)(Go::Shutdown);
            return;
        }
        let fits = st.pool.fits(&job.req);
        st.push(job);
        if !fits {
            // A runner (or a helper) that frees resources will take it.
            return;
        }
        if st.runners < self.threads {
            st.runners += 1;
            drop(st);
            self.spawn_runner();
        } else if let Some(h) = st.helpers.last() {
            h.unpark();
        }
    }

    fn spawn_runner(self: &Arc<Self>) {
        match self.pool.get().and_then(Weak::upgrade) {
            Some(pool) => {
                let me = self.clone();
                pool.spawn(move || me.run_loop());
            }
            None => {
                // The pool is gone: the runtime is shutting down, and
                // `shutdown` completes whatever is queued.
                lock(&self.state).runners -= 1;
            }
        }
    }

    fn run_loop(self: Arc<Self>) {
        let mut st = lock(&self.state);
        loop {
            let Some(job) = st.pop_fitting() else {
                st.runners -= 1;
                return;
            };
            drop(st);
            let req = execute(job);
            st = lock(&self.state);
            st.pool.release(&req);
        }
    }

    /// Runs one queued job on the calling thread if one fits. Used by helpers.
    fn help_once(&self) -> bool {
        let job = lock(&self.state).pop_fitting();
        match job {
            Some(job) => {
                let req = execute(job);
                lock(&self.state).pool.release(&req);
                true
            }
            None => false,
        }
    }

    /// Stops admitting work and completes every queued job with `Shutdown`.
    pub fn shutdown(&self) {
        let jobs = {
            let mut st = lock(&self.state);
            st.shutdown = true;
            st.drain()
        };
        for j in jobs {
            (j.run)(Go::Shutdown);
        }
    }

    /// Jobs waiting for resources or a runner.
    pub fn queued(&self) -> usize {
        lock(&self.state).queued
    }

    /// `(name, total, free)` for every resource.
    pub fn resources(&self) -> Vec<(crate::error::Text, f64, f64)> {
        lock(&self.state).pool.snapshot()
    }

    /// Number of worker threads.
    pub fn threads(&self) -> usize {
        self.threads
    }
}

/// Runs a job with its CPU amount recorded for nested blocking; returns its
/// request so the caller can release it.
fn execute(job: Job) -> Request {
    let Job { req, run } = job;
    let prev = TASK_CPU.with(|c| c.replace(req.cpu));
    run(Go::Run);
    TASK_CPU.with(|c| c.set(prev));
    req
}

/// How many times a waiter re-checks before registering and parking (a short
/// spin makes synchronous round trips cheap without burning CPU on long waits).
const SPINS: u32 = 64;

/// Spins briefly until `ready()`; returns whether it became true.
pub(crate) fn spin_until(ready: &mut dyn FnMut() -> bool) -> bool {
    for i in 0..SPINS {
        if ready() {
            return true;
        }
        if i < SPINS / 2 {
            std::hint::spin_loop();
        } else {
            std::thread::yield_now();
        }
    }
    ready()
}

/// Blocks the calling thread until `ready()` holds or `deadline` passes;
/// returns the last value of `ready()`.
///
/// The caller must already have registered `parker` wherever a completion
/// will unpark it. On a worker thread, the current task's CPUs are given
/// back and queued jobs are run inline while waiting (see the module docs).
pub(crate) fn block_until(
    parker: &ShimArc<Parker>,
    deadline: Option<Instant>,
    ready: &mut dyn FnMut() -> bool,
) -> bool {
    let Some(sched) = Scheduler::current() else {
        loop {
            if ready() {
                return true;
            }
            if !parker.park_until(deadline) {
                return ready();
            }
        }
    };
    let cpu = TASK_CPU.with(|c| c.get()) as i64;
    {
        let mut st = lock(&sched.state);
        st.pool.adjust_cpu(cpu);
        st.helpers.push(parker.clone());
    }
    let done = loop {
        if ready() {
            break true;
        }
        if sched.help_once() {
            continue;
        }
        if !parker.park_until(deadline) {
            break ready();
        }
    };
    let mut st = lock(&sched.state);
    if let Some(i) = st.helpers.iter().rposition(|h| ShimArc::ptr_eq(h, parker)) {
        st.helpers.swap_remove(i);
    }
    st.pool.adjust_cpu(-cpu);
    done
}
