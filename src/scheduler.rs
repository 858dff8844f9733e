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
use crate::resources::{Pool, Request, Totals};
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
    /// The task was cancelled before it ran.
    Cancelled,
}

/// What a job runs.
pub(crate) type JobFn = Box<dyn FnOnce(Go) + Send>;

/// A runnable unit of work with the resources it needs. Shared: the queue
/// holds it, and a task's control block may hold it too so that a worker
/// blocked on that task's result can run it directly ("targeted helping").
/// Whoever takes `run` out of the mutex runs it; the other finds it empty.
pub(crate) struct Job {
    pub req: Request,
    run: std::sync::Mutex<Option<JobFn>>,
}

impl Job {
    pub fn new(req: Request, run: JobFn) -> Arc<Job> {
        Arc::new(Job { req, run: std::sync::Mutex::new(Some(run)) })
    }

    fn take(&self) -> Option<JobFn> {
        match self.run.lock() {
            Ok(mut g) => g.take(),
            Err(p) => p.into_inner().take(),
        }
    }

    /// Runs the job now with `go` (used outside the scheduler: shutdown,
    /// failed inputs). Does nothing if it already ran.
    pub fn finish(&self, go: Go) {
        if let Some(run) = self.take() {
            run(go)
        }
    }
}

struct Class {
    req: Request,
    queue: VecDeque<(u64, Arc<Job>)>,
}

struct State {
    pool: Pool,
    classes: Vec<Class>,
    seq: u64,
    queued: usize,
    runners: usize,
    rescuers: usize,
    helpers: Vec<ShimArc<Parker>>,
    shutdown: bool,
}

impl State {
    fn push(&mut self, job: Arc<Job>) {
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

    /// Takes the oldest job (or, for a helper, the newest: `lifo`) whose
    /// resources are free, acquiring them.
    fn pop_fitting(&mut self, lifo: bool) -> Option<Arc<Job>> {
        let mut best: Option<(usize, u64)> = None;
        for (i, c) in self.classes.iter().enumerate() {
            let end = if lifo { c.queue.back() } else { c.queue.front() };
            if let Some((seq, _)) = end {
                let better = best.is_none_or(|(_, s)| if lifo { *seq > s } else { *seq < s });
                if better && self.pool.fits(&c.req) {
                    best = Some((i, *seq));
                }
            }
        }
        let (i, _) = best?;
        let q = &mut self.classes[i].queue;
        let (_, job) = if lifo { q.pop_back()? } else { q.pop_front()? };
        if self.classes[i].queue.is_empty() && self.classes.len() > 1 {
            self.classes.swap_remove(i);
        }
        self.queued -= 1;
        self.pool.acquire(&job.req);
        Some(job)
    }

    fn drain(&mut self) -> Vec<Arc<Job>> {
        self.queued = 0;
        self.classes.drain(..).flat_map(|c| c.queue.into_iter().map(|(_, j)| j)).collect()
    }
}

/// The admission queue and runner bookkeeping of one runtime.
pub(crate) struct Scheduler {
    totals: Arc<Totals>,
    state: Mutex<State>,
    /// `state.queued`, readable without the lock (a hint for lingering runners).
    queued_hint: std::sync::atomic::AtomicUsize,
    threads: usize,
    pool: OnceLock<Weak<rayon::ThreadPool>>,
    /// Run at the start of every thread that runs jobs (sets thread-locals).
    start_hook: OnceLock<Box<dyn Fn() + Send + Sync>>,
}

thread_local! {
    /// The scheduler whose pool this thread belongs to (set at thread start).
    static WORKER_OF: std::cell::RefCell<Weak<Scheduler>> = const { std::cell::RefCell::new(Weak::new()) };
    /// CPU units held by the task running on this thread (0 outside tasks).
    static TASK_CPU: Cell<u64> = const { Cell::new(0) };
}

impl Scheduler {
    pub fn new(totals: Arc<Totals>, threads: usize) -> Arc<Scheduler> {
        Arc::new(Scheduler {
            totals: totals.clone(),
            queued_hint: std::sync::atomic::AtomicUsize::new(0),
            state: Mutex::new(State {
                pool: Pool::new(totals),
                classes: Vec::new(),
                seq: 0,
                queued: 0,
                runners: 0,
                rescuers: 0,
                helpers: Vec::new(),
                shutdown: false,
            }),
            threads: threads.max(1),
            pool: OnceLock::new(),
            start_hook: OnceLock::new(),
        })
    }

    /// Connects the rayon pool (done once, right after it is built).
    pub fn attach(&self, pool: &Arc<rayon::ThreadPool>) {
        let _ = self.pool.set(Arc::downgrade(pool));
    }

    /// Sets what every worker thread runs first (besides registering as a
    /// worker of this scheduler).
    pub fn set_start_hook(self: &Arc<Self>, hook: impl Fn() + Send + Sync + 'static) {
        let me = Arc::downgrade(self);
        let _ = self.start_hook.set(Box::new(move || {
            WORKER_OF.with(|w| *w.borrow_mut() = me.clone());
            hook();
        }));
    }

    /// Runs the start hook on the calling thread (the pool's start handler).
    pub fn start_worker(&self) {
        if let Some(hook) = self.start_hook.get() {
            hook();
        }
    }

    /// True on a thread of some runtime's pool (cheap: no upgrade).
    pub fn on_worker() -> bool {
        WORKER_OF.with(|w| w.borrow().strong_count() > 0)
    }

    /// The scheduler of the pool the calling thread belongs to, if any.
    pub fn current() -> Option<Arc<Scheduler>> {
        WORKER_OF.with(|w| w.borrow().upgrade())
    }

    /// The runtime's resource totals (validates requests without a lock).
    pub fn totals(&self) -> &Totals {
        &self.totals
    }

    /// Queues a runnable job and makes sure someone will run it.
    pub fn submit(self: &Arc<Self>, job: Arc<Job>) {
        let mut st = lock(&self.state);
        if st.shutdown {
            drop(st);
            job.finish(Go::Shutdown);
            return;
        }
        let fits = st.pool.fits(&job.req);
        st.push(job);
        self.queued_hint.store(st.queued, std::sync::atomic::Ordering::Relaxed);
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
        let mut lingered = false;
        loop {
            let Some(job) = self.pop(&mut st, false) else {
                if lingered {
                    st.runners -= 1;
                    return;
                }
                // Linger a few microseconds before giving the thread back:
                // a synchronous caller's next task, or the next link of a
                // chain, then starts without a spawn and an OS wake-up (rayon
                // workers spin before sleeping for the same reason). The exit
                // decision is taken under the lock, so a submit never misses
                // a runner that is leaving.
                // One linger per idle spell: if what arrived does not fit
                // (it waits for resources), the runner leaves.
                drop(st);
                self.linger();
                lingered = true;
                st = lock(&self.state);
                continue;
            };
            lingered = false;
            drop(st);
            execute(&job);
            st = lock(&self.state);
            st.pool.release(&job.req);
        }
    }

    /// Pops a fitting job (see `State::pop_fitting`), keeping the lock-free
    /// hint of the queue length in step.
    fn pop(&self, st: &mut State, lifo: bool) -> Option<Arc<Job>> {
        let job = st.pop_fitting(lifo);
        self.queued_hint.store(st.queued, std::sync::atomic::Ordering::Relaxed);
        job
    }

    /// Spins up to [`LINGER`] for work to arrive; true if some did.
    fn linger(&self) -> bool {
        let start = Instant::now();
        let mut i = 0u32;
        loop {
            if self.queued_hint.load(std::sync::atomic::Ordering::Relaxed) > 0 {
                return true;
            }
            i += 1;
            if i.is_multiple_of(64) && start.elapsed() >= LINGER {
                return false;
            }
            std::hint::spin_loop();
        }
    }

    /// Runs one queued job on the calling thread if one fits. Used by
    /// helpers, which take the newest job: like rayon's local LIFO pops, that
    /// is most often the helper's own child, so the helper's stack grows with
    /// the depth of the task tree, not with the length of the queue.
    fn help_once(&self) -> bool {
        let job = self.pop(&mut lock(&self.state), true);
        match job {
            Some(job) => {
                execute(&job);
                lock(&self.state).pool.release(&job.req);
                true
            }
            None => false,
        }
    }

    /// Runs a specific job that the caller is blocked on, if nobody has
    /// started it yet. Its resources are taken even if that oversubscribes
    /// for a moment (the caller gave its CPUs back), as Ray lends a blocked
    /// task's CPUs to the tasks it waits for. The job stays in its queue as
    /// an empty entry that a runner will skip.
    fn run_targeted(&self, job: &Job) -> bool {
        let Some(run) = job.take() else { return false };
        lock(&self.state).pool.acquire(&job.req);
        let prev = TASK_CPU.with(|c| c.replace(job.req.cpu));
        run(Go::Run);
        TASK_CPU.with(|c| c.set(prev));
        lock(&self.state).pool.release(&job.req);
        true
    }

    /// Starts a plain thread that runs queued jobs until none fits, for a
    /// worker that has nested too deep to help (so the queue still drains
    /// when every worker is blocked at its depth limit). The thread counts
    /// as a worker of this scheduler and exits by itself. Another one starts
    /// only when every worker and every rescuer is blocked (rescuers block
    /// too, in the tasks they run: with remote work, results may come from
    /// other nodes, so what unblocks them need not be in this queue).
    fn rescue(self: &Arc<Self>) {
        {
            let mut st = lock(&self.state);
            if st.queued == 0 || st.helpers.len() < self.threads + st.rescuers {
                return;
            }
            st.rescuers += 1;
        }
        let me = self.clone();
        let spawned = std::thread::Builder::new().name("manta-rescue".into()).spawn(move || {
            if let Some(hook) = me.start_hook.get() {
                hook();
            }
            let mut st = lock(&me.state);
            loop {
                let Some(job) = me.pop(&mut st, false) else { break };
                drop(st);
                execute(&job);
                st = lock(&me.state);
                st.pool.release(&job.req);
            }
            st.rescuers -= 1;
        });
        if spawned.is_err() {
            lock(&self.state).rescuers -= 1;
        }
    }

    /// Stops admitting work and completes every queued job with `Shutdown`.
    pub fn shutdown(&self) {
        let jobs = {
            let mut st = lock(&self.state);
            st.shutdown = true;
            self.queued_hint.store(0, std::sync::atomic::Ordering::Relaxed);
            st.drain()
        };
        for j in jobs {
            j.finish(Go::Shutdown);
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

/// Runs a job (if nobody ran it yet) with its CPU amount recorded for
/// nested blocking. The caller holds the job's resources and releases them.
fn execute(job: &Job) {
    let Some(run) = job.take() else { return };
    let prev = TASK_CPU.with(|c| c.replace(job.req.cpu));
    run(Go::Run);
    TASK_CPU.with(|c| c.set(prev));
}

/// How long a runner with nothing to do spins before giving its thread back.
const LINGER: std::time::Duration = std::time::Duration::from_micros(50);

/// How deep blocked gets may nest by running *unrelated* queued tasks on
/// one stack; past it a waiter only runs the jobs it waits for, parks, and
/// (if every worker is blocked) a rescue thread runs the queue instead.
const MAX_HELP_DEPTH: u32 = 16;

thread_local! {
    static HELP_DEPTH: Cell<u32> = const { Cell::new(0) };
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
    targets: &mut dyn FnMut() -> Option<Arc<Job>>,
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
    let depth = HELP_DEPTH.with(|d| d.get());
    let done = loop {
        if ready() {
            break true;
        }
        // First the job that makes what we wait for: nesting it follows the
        // task graph downwards, so its depth is bounded by the graph's.
        if let Some(job) = targets() {
            if sched.run_targeted(&job) {
                continue;
            }
        }
        if depth < MAX_HELP_DEPTH {
            HELP_DEPTH.with(|d| d.set(depth + 1));
            let helped = sched.help_once();
            HELP_DEPTH.with(|d| d.set(depth));
            if helped {
                continue;
            }
        } else {
            sched.rescue();
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
