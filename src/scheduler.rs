//! The scheduler: runs jobs (tasks whose inputs are ready, actor mailbox
//! drains, lineage rebuilds) on threads when their resources are free, and
//! keeps a blocked task from ever stalling the others.
//!
//! The queue, the resource pool and the runner count are `dispatch` (its
//! header states the protocol and its invariants; loom checks it). This
//! module gives it threads:
//!
//! - **Runners** are loops ("take a fitting job, run it, release its
//!   resources") started when `dispatch` says so: on the rayon pool while
//!   one of its threads is free, else on a *spare* thread (an idle one is
//!   reused; a new one is started up to the spare cap). In a burst of
//!   submissions only `threads` runners start at all and every later job
//!   is taken from the queue by a runner that just finished one: no
//!   per-task spawn, no per-task wake-up. A runner with nothing to do
//!   lingers [`LINGER`] before leaving, so a synchronous caller's next task
//!   starts without a wake-up; except after a task whose caller waits on
//!   another machine (`TaskBuilder::caller_afar`: its next task is a network
//!   round trip away, and the spin would take a core from the threads that
//!   carry the result there). A submit starts no runner for a job a
//!   lingering runner will take (`dispatch`: as many runners linger as
//!   jobs are queued), so a submit-and-get loop keeps one runner and
//!   wakes no thread; and a linger ends early only for new work (a job
//!   queued, resources freed), not for queued jobs that do not fit, which
//!   would keep it spinning for as long as they wait
//!   (`Dispatch::new_work`).
//! - **Blocking** ([`block_until`]): a task blocked in `get`/`wait` lends
//!   its CPUs, runs inline only the queued jobs that make what it waits for
//!   (targeted, at most [`MAX_TARGET_DEPTH`] deep), and otherwise hands its
//!   runner's place to another runner and parks. It never runs unrelated
//!   jobs on its stack, so nested `get` cannot deadlock whatever the shape
//!   of the task graph: every job that fits either has a runner or is the
//!   target of the frame that waits for it. Recursive task trees (fib)
//!   still run on one thread, by targeted jobs.
//! - **Runners never nest**: rayon's own `join`/`scope` inside a task may
//!   pick up a runner job while it waits; such a runner starts on a spare
//!   thread instead of running jobs on top of that task's stack.
//!
//! Spare threads beyond `num_cpus` exist only while tasks block (as Ray
//! starts workers for blocked ones); an idle spare exits after
//! [`SPARE_KEEPALIVE`]. At most `max_spare_threads` exist; past that a
//! job waits for a place like any other (the one case where a program
//! that blocks more tasks than that at once can stall).
//!
//! No lock is held while a job runs. Lock order: dispatch, then a parker.

use crate::decide::{Decider, Deciders};
pub(crate) use crate::dispatch::{Counts, Tally};
use crate::dispatch::{Dispatch, Next};
use crate::job::{Go, Job};
use crate::notify::Parker;
use crate::resources::Totals;
use crate::sync::Arc as ShimArc;
use std::cell::Cell;
use std::sync::atomic::{fence, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long a runner with nothing to do spins before giving its thread back.
const LINGER: Duration = Duration::from_micros(50);

/// How long an idle spare thread waits for a runner to start before exiting.
pub(crate) const SPARE_KEEPALIVE: Duration = Duration::from_secs(5);

/// How deep targeted jobs (producers of what a blocked task waits for) may
/// nest on one stack; past it the waiter hands its place over and another
/// runner runs them.
const MAX_TARGET_DEPTH: u32 = 128;

/// The default cap on spare threads (see the module docs).
pub(crate) const DEFAULT_MAX_SPARES: usize = 512;

/// Spare threads: started when no rayon thread is free for a runner.
struct Spares {
    /// One message starts a runner on one idle spare.
    tx: Mutex<Option<crossbeam_channel::Sender<()>>>,
    rx: crossbeam_channel::Receiver<()>,
    /// Spares waiting for a message, not yet claimed by a sender.
    idle: AtomicUsize,
    /// Spares alive.
    alive: AtomicUsize,
    max: usize,
    handles: Mutex<Vec<JoinHandle<()>>>,
}

/// The jobs, runners and threads of one runtime.
pub(crate) struct Scheduler {
    totals: Arc<Totals>,
    dispatch: Dispatch<Arc<Job>>,
    pool: OnceLock<Weak<rayon::ThreadPool>>,
    /// Rayon threads in no runner loop and not blocked (claimed before a
    /// runner is spawned on rayon; a heuristic: correctness does not
    /// depend on it, see "Runners never nest").
    rayon_free: AtomicUsize,
    spares: Spares,
    /// The deciding flags of the threads that run jobs (`decide`).
    deciders: Deciders,
    /// Actor calls made (counted where they are made, by the caller).
    actor_calls: std::sync::atomic::AtomicU64,
    /// The timeline recorder (off unless asked for).
    pub recorder: Arc<crate::timeline::Recorder>,
    /// Run at the start of every thread that runs jobs (sets thread-locals).
    start_hook: OnceLock<Box<dyn Fn() + Send + Sync>>,
}

thread_local! {
    /// The scheduler whose pool this thread belongs to (set at thread start).
    static WORKER_OF: std::cell::RefCell<Weak<Scheduler>> = const { std::cell::RefCell::new(Weak::new()) };
    /// CPU units held by the task running on this thread (0 outside tasks).
    static TASK_CPU: Cell<u64> = const { Cell::new(0) };
    /// True while this thread runs a runner loop.
    static IN_LOOP: Cell<bool> = const { Cell::new(false) };
    /// True while this thread's runner loop holds a place in `dispatch`
    /// (false while a blocked frame has handed it over).
    static PLACE: Cell<bool> = const { Cell::new(false) };
    /// Targeted jobs nested on this stack.
    static TARGET_DEPTH: Cell<u32> = const { Cell::new(0) };
    /// True on a rayon thread of a manta pool.
    static ON_RAYON: Cell<bool> = const { Cell::new(false) };
    /// Raised while this thread decides whether a task may start (see
    /// `cancel`): the scheduler's flag for this thread, set at thread start
    /// (unset on threads that run no jobs).
    static DECIDING: std::cell::OnceCell<Decider> = const { std::cell::OnceCell::new() };
}

/// Runs `decide` with this thread's deciding flag raised (see `decide`).
pub(crate) fn with_deciding<R>(decide: impl FnOnce() -> R) -> R {
    DECIDING.with(|d| match d.get() {
        Some(d) => d.deciding(decide),
        // Not a thread of any runtime's pool: no canceller waits for it.
        None => decide(),
    })
}

type ServiceFn = Box<dyn FnOnce() + Send>;

/// The process's service thread: runs short jobs that must not run on the
/// caller's thread (dropping a cancelled task's closure and arguments,
/// taking a cancelled group's jobs out of the queue, waking the readers of
/// cancelled objects and so running their callbacks). Started on first use.
pub(crate) fn service(f: ServiceFn) {
    static TX: OnceLock<Mutex<Option<crossbeam_channel::Sender<ServiceFn>>>> = OnceLock::new();
    let tx = TX.get_or_init(|| {
        let (tx, rx) = crossbeam_channel::unbounded::<ServiceFn>();
        let spawned = std::thread::Builder::new().name("manta-service".into()).spawn(move || {
            for f in rx {
                if let Err(p) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
                    let message = crate::error::panic_message(p.as_ref());
                    tracing::error!(%message, "a callback panicked on the manta service thread");
                }
            }
        });
        Mutex::new(spawned.ok().map(|_| tx))
    });
    let f = match lock_std(tx).as_ref() {
        Some(tx) => match tx.send(f) {
            Ok(()) => return,
            Err(e) => e.into_inner(),
        },
        None => f,
    };
    f(); // no service thread could be started: run it here
}

/// The schedulers of the process, weakly (pruned as runtimes are made).
fn live_schedulers() -> &'static Mutex<Vec<Weak<Scheduler>>> {
    static ALL: OnceLock<Mutex<Vec<Weak<Scheduler>>>> = OnceLock::new();
    ALL.get_or_init(|| Mutex::new(Vec::new()))
}

/// Decrements `n` if it is positive; true if it did.
fn claim(n: &AtomicUsize) -> bool {
    n.fetch_update(Ordering::AcqRel, Ordering::Acquire, |v| v.checked_sub(1)).is_ok()
}

impl Scheduler {
    pub fn new(totals: Arc<Totals>, threads: usize, max_spares: usize, timeline: bool) -> Arc<Scheduler> {
        let (tx, rx) = crossbeam_channel::unbounded();
        let dispatch = Dispatch::new(totals.clone(), threads);
        let threads = dispatch.threads();
        let me = Arc::new(Scheduler {
            totals,
            dispatch,
            pool: OnceLock::new(),
            rayon_free: AtomicUsize::new(threads),
            deciders: Deciders::new(threads),
            spares: Spares {
                tx: Mutex::new(Some(tx)),
                rx,
                idle: AtomicUsize::new(0),
                alive: AtomicUsize::new(0),
                max: max_spares,
                handles: Mutex::new(Vec::new()),
            },
            actor_calls: std::sync::atomic::AtomicU64::new(0),
            recorder: crate::timeline::Recorder::new(timeline),
            start_hook: OnceLock::new(),
        });
        let mut all = lock_std(live_schedulers());
        all.retain(|s| s.strong_count() > 0);
        all.push(Arc::downgrade(&me));
        drop(all);
        me
    }

    /// Has every live runtime reap its cancelled queued tasks (see
    /// [`Scheduler::reap`]) for parked readers: after a task's cancel
    /// reached tasks it submitted, which may sit in any runtime's queue.
    /// On the service thread (it takes a lock and may wake runners).
    pub fn reap_everywhere() {
        let all: Vec<Arc<Scheduler>> = lock_std(live_schedulers()).iter().filter_map(Weak::upgrade).collect();
        for s in all {
            s.reap(true);
        }
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

    /// Runs the start hook on the calling thread (the pool's start handler
    /// of rayon thread `index`), whose deciding flag is `deciders[index]`.
    pub fn start_worker(&self, index: usize) {
        ON_RAYON.with(|r| r.set(true));
        // (More rayon threads than places cannot happen; such a thread
        // would count as a spare that never leaves.)
        let me = self.deciders.fixed(index).unwrap_or_else(|| self.deciders.join_spare());
        let _ = DECIDING.with(|d| d.set(me));
        self.thread_started();
    }

    /// Runs the start hook on the calling thread.
    fn thread_started(&self) {
        if let Some(hook) = self.start_hook.get() {
            hook();
        }
    }

    /// The canceller's side of a scope's cancel, once the caller has set
    /// the scope's flag (and `CANCELS`): no task of the scope starts after
    /// this returns (`decide`), a parked reader of its tasks is not left
    /// waiting (`parked`), and its queued tasks are reaped off the calling
    /// thread ([`Scheduler::reap`]). Each of those three is Dekker's
    /// pattern (the canceller's write, a SeqCst fence, its read); they
    /// share one fence here: the writes (the cancel epoch, the reap note),
    /// the fence, then the reads (the deciding flags, the parked readers,
    /// the runner count), which are independent, so their cache misses
    /// overlap. A cancel is rare, so its lines are cold: that overlap, and
    /// code kept in one piece (the rare branches out of line), are what
    /// keep the call near one cache miss. O(threads).
    #[inline(always)]
    pub fn cancelled(self: &Arc<Self>) {
        let parked = crate::parked::global();
        self.dispatch.note_reap();
        parked.bump();
        fence(Ordering::SeqCst);
        self.deciders.quiesce_fenced();
        self.reap_noted(parked.any_reader());
    }

    /// Loads (and discards) every line [`Scheduler::cancelled`] reads or
    /// writes besides the canceller's own flag: the deciding flags, the
    /// parked readers' line, the runner count. Called first by a
    /// canceller, so that these cache misses overlap one another and the
    /// flag's: otherwise the locked add of `Parked::bump` waits for the
    /// stores before it to drain, then misses on its own line, in series.
    /// Measured (`microbench cancel`, 18 cancels each): `group_cancel_us`
    /// median 0.61 µs without the parked and runner-count lines warmed,
    /// 0.47 with them. Not part of any protocol: the values are not used.
    #[inline(always)]
    pub fn warm_cancel(&self) {
        crate::parked::global().warm();
        self.deciders.warm();
        std::hint::black_box(self.dispatch.every_place_busy());
    }

    /// Has the queued tasks that are cancelled taken out of the queue and
    /// completed as such, off the calling thread (see `Dispatch::reap`):
    /// the caller leaves a note (one store, one load) for the next runner
    /// to ask for work, and starts one if a runner place is idle while jobs
    /// are queued. If every place is busy, their tasks may run for long
    /// before a runner asks, while the cancelled tasks' readers (`wait`,
    /// `as_completed`, a group's `join`, a parked `get`) must see them
    /// cancelled at once, as Ray's do: then, if `readers` (a reader is
    /// parked, see `parked`), the service thread reaps (one
    /// message to it; whoever takes the note first does the work). A reader
    /// that parks later looks for the cancelled tasks itself.
    #[inline(always)]
    pub fn reap(self: &Arc<Self>, readers: bool) {
        self.dispatch.note_reap();
        fence(Ordering::SeqCst);
        self.reap_noted(readers);
    }

    /// [`Scheduler::reap`] once the note is left and a SeqCst fence issued
    /// (shared with `cancelled`): a runner if a place is idle, else the
    /// service thread when a reader is parked.
    #[inline(always)]
    fn reap_noted(self: &Arc<Self>, readers: bool) {
        if self.dispatch.reap_fenced() {
            self.start_runner();
        } else if readers && self.dispatch.every_place_busy() && self.dispatch.has_queued() {
            self.reap_on_service();
        }
    }

    /// The service thread reaps the noted jobs (`reap`'s rare branch, out
    /// of line so that a cancel's code stays small).
    #[cold]
    #[inline(never)]
    fn reap_on_service(self: &Arc<Self>) {
        let me = self.clone();
        service(Box::new(move || {
            if let Some(jobs) = me.dispatch.reap_if_noted() {
                me.complete_reaped(jobs);
            }
        }));
    }

    /// Completes jobs a reap took out of the queue as cancelled (their
    /// functions dropped here), and counts them.
    fn complete_reaped(&self, jobs: Vec<Arc<Job>>) {
        let mut tally = Tally::default();
        for job in jobs {
            let t = job.body.take_and_run(&job, &mut || {}, Go::Cancelled).unwrap_or_else(|| job.emptied());
            tally.done += t.done;
            tally.failed += t.failed;
            tally.cancelled += t.cancelled;
        }
        self.dispatch.count(tally);
    }
    /// Takes the queued tasks a reap note asks for out of the queue now and
    /// counts them as cancelled, so that a metrics snapshot taken after a
    /// cancel includes them even while every worker is busy (a runner
    /// would reap them only when it next asks for work). Their functions
    /// still run on the service thread, as any reap's (outputs completed,
    /// callbacks, closures dropped or buried): taken out here, each would
    /// count as cancelled there too (`Go::Cancelled`), so it is counted
    /// here instead. O(queued), under the dispatch lock, and only when a
    /// cancel left a note.
    pub fn settle_reaps(&self) {
        let Some(jobs) = self.dispatch.reap_if_noted() else { return };
        let mut tally = Tally::default();
        let mut taken = Vec::new();
        for job in jobs {
            match job.take_fn() {
                Some(f) => {
                    tally.cancelled += u32::from(job.task);
                    taken.push((f, job));
                }
                None => tally.cancelled += job.emptied().cancelled,
            }
        }
        self.dispatch.count(tally);
        if !taken.is_empty() {
            service(Box::new(move || {
                for (f, job) in taken {
                    let _ = f(Go::Cancelled, &job);
                }
            }));
        }
    }

    /// Leaves a reap note on every live scheduler (a cancel that took a
    /// queued task's function: its empty entry leaves the queue at the
    /// next reap, not when a runner reaches it).
    pub fn note_reap_everywhere() {
        for s in lock_std(live_schedulers()).iter().filter_map(Weak::upgrade) {
            s.dispatch.note_reap();
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
        match self.dispatch.submit(job) {
            Ok(true) => self.start_runner(),
            Ok(false) => {}
            Err(jobs) => jobs.into_iter().for_each(|job| self.dispatch.count(job.finish(Go::Shutdown))),
        }
    }

    /// Starts one runner (its place is already counted): on a free rayon
    /// thread, else on a spare.
    fn start_runner(self: &Arc<Self>) {
        if claim(&self.rayon_free) {
            if let Some(pool) = self.pool.get().and_then(Weak::upgrade) {
                let me = self.clone();
                pool.spawn(move || me.run_loop(true));
                return;
            }
            self.rayon_free.fetch_add(1, Ordering::AcqRel);
        }
        self.start_spare();
    }

    fn start_spare(self: &Arc<Self>) {
        let spares = &self.spares;
        if claim(&spares.idle) {
            let sent = lock_std(&spares.tx).as_ref().is_some_and(|tx| tx.send(()).is_ok());
            if sent {
                return;
            }
        }
        let over = spares.alive.fetch_add(1, Ordering::AcqRel) >= spares.max;
        let stopped = lock_std(&spares.tx).is_none();
        if over || stopped {
            spares.alive.fetch_sub(1, Ordering::AcqRel);
            if over && !stopped {
                tracing::warn!(max = spares.max, "manta: spare thread cap reached; a runner waits for a free thread");
            }
            self.dispatch.not_started();
            return;
        }
        let me = self.clone();
        let spawned = std::thread::Builder::new().name("manta-spare".into()).spawn(move || me.spare_main());
        match spawned {
            Ok(h) => lock_std(&spares.handles).push(h),
            Err(e) => {
                tracing::warn!(error = %e, "manta: cannot start a spare thread");
                spares.alive.fetch_sub(1, Ordering::AcqRel);
                self.dispatch.not_started();
            }
        }
    }

    /// A spare thread: runs a runner, then waits (up to the keep-alive) to
    /// be asked for another.
    fn spare_main(self: Arc<Self>) {
        let me = self.deciders.join_spare();
        let _ = DECIDING.with(|d| d.set(me.clone()));
        let _unregister = Unregister(&self, me);
        self.thread_started();
        let spares = &self.spares;
        self.run_loop(false);
        loop {
            spares.idle.fetch_add(1, Ordering::AcqRel);
            let rx = spares.rx.clone();
            loop {
                match rx.recv_timeout(SPARE_KEEPALIVE) {
                    Ok(()) => break,
                    // Leave only if no sender has claimed us meanwhile (a
                    // claimed spare must take the message that follows).
                    Err(crossbeam_channel::RecvTimeoutError::Timeout) if claim(&spares.idle) => {
                        spares.alive.fetch_sub(1, Ordering::AcqRel);
                        return;
                    }
                    Err(crossbeam_channel::RecvTimeoutError::Timeout) => {}
                    Err(crossbeam_channel::RecvTimeoutError::Disconnected) => {
                        spares.alive.fetch_sub(1, Ordering::AcqRel);
                        return;
                    }
                }
            }
            self.run_loop(false);
        }
    }

    /// A runner: takes and runs jobs until `dispatch` says to leave.
    fn run_loop(self: &Arc<Self>, on_rayon: bool) {
        if IN_LOOP.with(|l| l.get()) {
            // Started inside a task on this thread (rayon work stealing
            // while the task waits in `join`/`scope`): never run jobs on
            // top of it. The rayon thread we counted on is still free.
            if on_rayon {
                self.rayon_free.fetch_add(1, Ordering::AcqRel);
            }
            self.start_spare();
            return;
        }
        IN_LOOP.with(|l| l.set(true));
        PLACE.with(|p| p.set(true));
        let mut finished: Option<(Arc<Job>, Tally)> = None;
        let (mut lingered, mut from_linger) = (false, false);
        loop {
            // After a job whose caller waits on another machine, no spin:
            // leave at once if nothing is queued.
            let linger_after = finished.as_ref().is_none_or(|(j, _)| j.linger);
            let done = finished.as_ref().map(|(j, t)| (&j.req, *t));
            let next = self.dispatch.next(done, lingered || !linger_after, from_linger);
            from_linger = false;
            match next {
                Next::Run { job, more } => {
                    if more {
                        self.start_runner();
                    }
                    lingered = false;
                    let tally = execute(&job);
                    finished = Some((job, tally));
                }
                Next::Linger { seen } => {
                    finished = None;
                    lingered = !self.linger(seen);
                    from_linger = true;
                }
                Next::Reap(jobs) => {
                    finished = None;
                    self.complete_reaped(jobs);
                }
                Next::Exit => break,
            }
        }
        PLACE.with(|p| p.set(false));
        IN_LOOP.with(|l| l.set(false));
        if on_rayon {
            self.rayon_free.fetch_add(1, Ordering::AcqRel);
        }
    }

    /// Spins up to [`LINGER`] for new work to arrive (since the work
    /// count `seen` it was told to linger at); true if some did.
    fn linger(&self, seen: usize) -> bool {
        let start = Instant::now();
        let mut i = 0u32;
        loop {
            if self.dispatch.new_work(seen) {
                return true;
            }
            i += 1;
            if i.is_multiple_of(64) && start.elapsed() >= LINGER {
                return false;
            }
            std::hint::spin_loop();
        }
    }

    /// Runs a specific job that the caller is blocked on, if nobody has
    /// started it yet and the nesting allows. Its resources are taken even
    /// if that oversubscribes for a moment (the caller lent its CPUs), as
    /// Ray lends a blocked task's CPUs to the tasks it waits for. The job
    /// stays in its queue as an empty entry that a runner will skip.
    fn run_targeted(self: &Arc<Self>, job: &Arc<Job>) -> bool {
        let depth = TARGET_DEPTH.with(|d| d.get());
        if depth >= MAX_TARGET_DEPTH {
            return false;
        }
        // Its CPUs are this blocked worker's (lent): taken once the job is
        // claimed. Its other resources (a GPU) must be free, or it waits for
        // them in the queue: taken first, and given back if someone else
        // ran it meanwhile (CPU-only jobs, the nested-get path, pay no lock
        // for a job they do not get).
        let custom = job.req.has_custom();
        if custom && !self.dispatch.acquire(&job.req, job.task) {
            return false;
        }
        let mut prev = None;
        let claimed = &mut || {
            if !custom {
                self.dispatch.acquire(&job.req, job.task);
            }
            TARGET_DEPTH.with(|d| d.set(depth + 1));
            prev = Some(TASK_CPU.with(|c| c.replace(job.req.cpu)));
        };
        let Some(tally) = job.body.take_and_run(job, claimed, Go::Run) else {
            if custom {
                let none = Tally { skipped: u32::from(job.task), ..Tally::default() };
                if self.dispatch.release(&job.req, none) {
                    self.start_runner();
                }
            }
            return false;
        };
        TASK_CPU.with(|c| c.set(prev.unwrap_or(0)));
        TARGET_DEPTH.with(|d| d.set(depth));
        if self.dispatch.release(&job.req, tally) {
            self.start_runner();
        }
        true
    }

    /// Stops admitting work, completes every queued job with `Shutdown`
    /// and lets idle spare threads go.
    pub fn shutdown(&self) {
        for j in self.dispatch.shutdown() {
            self.dispatch.count(j.finish(Go::Shutdown));
        }
        lock_std(&self.spares.tx).take();
    }

    /// Joins the spare threads (after `shutdown`), except the caller's own.
    pub fn join_spares(&self) {
        let me = std::thread::current().id();
        let handles = std::mem::take(&mut *lock_std(&self.spares.handles));
        for h in handles {
            if h.thread().id() != me {
                let _ = h.join();
            }
        }
    }

    /// The task counts now.
    pub fn counts(&self) -> Counts {
        self.dispatch.counts()
    }

    /// Counts an actor call being made.
    pub fn actor_call(&self) {
        self.actor_calls.fetch_add(1, Ordering::Relaxed);
    }

    /// Actor calls made so far.
    pub fn actor_calls(&self) -> u64 {
        self.actor_calls.load(Ordering::Relaxed)
    }

    /// Counts tasks that ended without a runner (a failed input).
    pub fn count(&self, tally: Tally) {
        self.dispatch.count(tally);
    }

    /// Jobs waiting for resources or a runner.
    pub fn queued(&self) -> usize {
        self.dispatch.queued()
    }

    /// `(name, total, free)` for every resource.
    pub fn resources(&self) -> Vec<(crate::error::Text, f64, f64)> {
        self.dispatch.resources()
    }

    /// Number of worker threads (runner places).
    pub fn threads(&self) -> usize {
        self.dispatch.threads()
    }
}

/// Removes a spare thread's deciding flag when it exits.
struct Unregister<'a>(&'a Scheduler, Decider);

impl Drop for Unregister<'_> {
    fn drop(&mut self) {
        self.0.deciders.leave_spare(&self.1);
    }
}

fn lock_std<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Runs a job (if nobody ran it yet) with its CPU amount recorded for
/// nested blocking. The caller holds the job's resources and releases them.
/// An entry whose function a cancel took out counts as a cancelled task.
fn execute(job: &Arc<Job>) -> Tally {
    let prev = TASK_CPU.with(|c| c.replace(job.req.cpu));
    let ran = job.body.take_and_run(job, &mut || {}, Go::Run);
    TASK_CPU.with(|c| c.set(prev));
    ran.unwrap_or_else(|| job.emptied())
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
/// will unpark it. `targets` yields queued jobs that produce what the caller
/// waits for. On a worker thread the current task's CPUs are lent, targeted
/// jobs run inline, and before parking the runner's place is handed over
/// (see the module docs).
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
    // A worker blocked in get/wait (a `trace` span: it shows where a task
    // waited; one relaxed load when disabled).
    let _span = tracing::trace_span!("manta.blocked").entered();
    let cpu = TASK_CPU.with(|c| c.get());
    if sched.dispatch.lend(cpu) {
        sched.start_runner();
    }
    // Before the first park: hand the runner's place over if this thread
    // holds one; a rayon thread blocked outside any runner (in a task's
    // rayon scope) is not free for runners meanwhile.
    let mut first_park = true;
    let (mut handed, mut held_rayon) = (false, false);
    let done = loop {
        if ready() {
            break true;
        }
        // Not under a deadline: a job run inline could not be left when
        // the deadline passes.
        if let Some(job) = targets().filter(|_| deadline.is_none()) {
            if sched.run_targeted(&job) {
                continue;
            }
        }
        if first_park {
            first_park = false;
            if PLACE.with(|p| p.replace(false)) {
                handed = true;
                if sched.dispatch.hand_over() {
                    sched.start_runner();
                }
            } else if !IN_LOOP.with(|l| l.get()) && ON_RAYON.with(|r| r.get()) {
                held_rayon = claim(&sched.rayon_free);
            }
        }
        if !parker.park_until(deadline) {
            break ready();
        }
    };
    if handed {
        PLACE.with(|p| p.set(true));
    }
    sched.dispatch.resume(cpu, handed);
    if held_rayon {
        sched.rayon_free.fetch_add(1, Ordering::AcqRel);
    }
    done
}
