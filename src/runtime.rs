//! The runtime: its builder, its worker threads, and the entry points of the
//! API (`put`, `get`, tasks, actors, `wait`).
//!
//! # Lifetime
//! A [`Runtime`] built by [`RuntimeBuilder::build`] owns its worker threads.
//! Clones share them; when the last owning clone is dropped the runtime shuts
//! down: queued tasks complete with [`Error::RuntimeShutdown`], running ones
//! finish, and every worker thread is joined before `drop` returns (unless
//! the last owner is dropped on one of the runtime's own workers, where
//! joining would deadlock: then the threads exit on their own right after).
//! Refs outlive the runtime: a finished object can still be read.
//!
//! Handles obtained inside a task with [`Runtime::current`] do not own the
//! runtime (they cannot keep it alive, so a task holding one never delays
//! shutdown).

use crate::cell::ObjectCell;
use crate::error::{BuildError, Error, StoreFull, Text};
use crate::refs::ObjectRef;
use crate::resources::Totals;
use crate::scheduler::Scheduler;
use crate::store::{Store, StoreConfig, StoreStats};
use crate::task::TaskBuilder;
use std::any::Any;
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// State shared by everything that belongs to one runtime.
pub(crate) struct Shared {
    pub sched: Arc<Scheduler>,
    pub store: Arc<Store>,
    pub cluster: Arc<crate::backend::Cluster>,
}

/// Owns the worker threads; dropping it shuts the runtime down.
struct Owner {
    shared: Arc<Shared>,
    pool: Mutex<Option<Arc<rayon::ThreadPool>>>,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

impl Drop for Owner {
    fn drop(&mut self) {
        self.shared.sched.shutdown();
        let pool = self.pool.lock().map(|mut p| p.take()).unwrap_or(None);
        drop(pool); // last strong ref: rayon starts terminating its threads
        let me = std::thread::current().id();
        let handles = self.threads.lock().map(|mut t| std::mem::take(&mut *t)).unwrap_or_default();
        if handles.iter().any(|h| h.thread().id() == me) {
            return; // dropped on our own worker: cannot join ourselves
        }
        for h in handles {
            let _ = h.join();
        }
        self.shared.sched.join_spares();
    }
}

/// A manta runtime: a work-stealing pool, a scheduler with resources, and an
/// object store. Cheap to clone: clones share it. When the last owning
/// clone is dropped the runtime shuts down: queued tasks complete with
/// `RuntimeShutdown`, running ones finish, and the worker threads are
/// joined before `drop` returns (unless that drop runs on one of its own
/// workers). Refs may outlive it. Handles from [`Runtime::current`] inside
/// a task do not own it.
#[derive(Clone)]
pub struct Runtime {
    shared: Arc<Shared>,
    _owner: Option<Arc<Owner>>,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime").field("threads", &self.shared.sched.threads()).finish()
    }
}

/// Configures a [`Runtime`].
#[derive(Debug, Clone)]
#[must_use]
pub struct RuntimeBuilder {
    cpus: Option<usize>,
    resources: Vec<(Text, f64)>,
    thread_name: String,
    stack_size: usize,
    max_spare_threads: usize,
    print_task_panics: bool,
    timeline: bool,
    store: StoreConfig,
}

impl Default for RuntimeBuilder {
    fn default() -> Self {
        RuntimeBuilder {
            cpus: None,
            resources: Vec::new(),
            thread_name: "manta".into(),
            stack_size: 8 << 20,
            max_spare_threads: crate::scheduler::DEFAULT_MAX_SPARES,
            print_task_panics: false,
            timeline: false,
            store: StoreConfig::default(),
        }
    }
}

impl RuntimeBuilder {
    /// Number of CPUs, which is also the number of worker threads.
    /// Default: the machine's available parallelism. `0` makes a runtime
    /// that only submits, holds objects and hosts zero-CPU actors (as a Ray
    /// driver with `num_cpus=0`): it keeps one worker thread for zero-CPU
    /// work, and a task that needs a CPU fails at once with
    /// [`Error::Infeasible`] (clustered, it goes to a peer instead).
    pub fn num_cpus(mut self, n: usize) -> Self {
        self.cpus = Some(n);
        self
    }

    /// Adds a custom resource (e.g. `("GPU", 1.0)`); amounts may be
    /// fractional. Default: none.
    pub fn resource(mut self, name: &str, amount: f64) -> Self {
        self.resources.retain(|(n, _)| &**n != name);
        self.resources.push((name.into(), amount));
        self
    }

    /// Prefix of worker thread names. Default `"manta"`.
    pub fn thread_name(mut self, prefix: impl Into<String>) -> Self {
        self.thread_name = prefix.into();
        self
    }

    /// Stack size of each worker (tasks blocked in `get` run other tasks on
    /// the same stack). Default 8 MiB (virtual memory; only touched pages
    /// are resident).
    pub fn stack_size(mut self, bytes: usize) -> Self {
        self.stack_size = bytes;
        self
    }

    /// Most threads started beyond `num_cpus` while tasks are blocked in
    /// `get` or `wait` (a blocked task hands its place to another thread,
    /// as Ray starts workers for blocked ones; idle ones exit after 5 s).
    /// Past it, queued tasks wait for a thread to come free. Default 512.
    pub fn max_spare_threads(mut self, n: usize) -> Self {
        self.max_spare_threads = n;
        self
    }

    /// Whether a panic caught in a task or actor call also goes through the
    /// process's panic hook (printing it, with a backtrace under
    /// `RUST_BACKTRACE=1`). Default false: such a panic is an error value
    /// (`Error::TaskPanicked`), logged through `tracing` at debug level.
    pub fn print_task_panics(mut self, on: bool) -> Self {
        self.print_task_panics = on;
        self
    }

    /// Records the timeline from the start (see [`Runtime::timeline`]).
    /// Default off; [`Runtime::record_timeline`] switches it at any time.
    pub fn timeline(mut self, on: bool) -> Self {
        self.timeline = on;
        self
    }

    /// The object store's memory cap in bytes. Default: 30% of the
    /// machine's memory (Ray's default), or 1 GiB where that is unknown.
    pub fn store_capacity(mut self, bytes: usize) -> Self {
        self.store.capacity = bytes;
        self
    }

    /// A directory for spill files; the runtime makes its own subdirectory
    /// there and removes it when the runtime is dropped and no object that
    /// lives in it is referenced any more (refs may outlive the runtime and
    /// still read their spilled values; each file goes with its object). Default: none (objects made by
    /// re-runnable tasks are dropped and rebuilt instead; others stay).
    pub fn spill_dir(mut self, dir: impl Into<std::path::PathBuf>) -> Self {
        self.store.spill_dir = Some(dir.into());
        self
    }

    /// A cap on the bytes of freed replicas' `Vec<u8>` buffers (of at least
    /// 1 MiB) kept for reuse by the next replicas fetched from peers (only
    /// with a cluster backend attached), so a large transfer
    /// writes into memory that is already mapped instead of faulting in
    /// fresh pages. Pooled buffers only use room no object needs: they are
    /// dropped before anything is evicted, and never take the store past
    /// its capacity. `0` turns recycling off. Default: a quarter of the
    /// store's capacity, at most 1 GiB. See [`StoreStats::bytes_recycled`](crate::StoreStats::bytes_recycled).
    pub fn recycle_capacity(mut self, bytes: usize) -> Self {
        self.store.recycle_capacity = Some(bytes);
        self
    }

    /// How long `put` waits for memory when nothing can be moved out before
    /// returning [`StoreFull`]. Default 1 s.
    pub fn put_timeout(mut self, timeout: Duration) -> Self {
        self.store.put_timeout = timeout;
        self
    }

    /// A cap on the bytes of lineage records (the tasks kept to rebuild
    /// evicted objects); past it the oldest records go, and an object that
    /// can then not be rebuilt fails with [`Error::LineageEvicted`].
    /// Default 1 GiB (Ray's default).
    pub fn lineage_capacity(mut self, bytes: usize) -> Self {
        self.store.lineage_capacity = bytes;
        self
    }

    /// Objects smaller than this are not charged against the cap and never
    /// moved out (like Ray's inline objects). Default 256 bytes.
    pub fn small_object_bytes(mut self, bytes: usize) -> Self {
        self.store.small_object = bytes;
        self
    }

    /// Starts the runtime. Takes tens of microseconds (one thread spawn per
    /// CPU).
    pub fn build(self) -> Result<Runtime, BuildError> {
        let cpus = self.cpus.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
        for (name, amount) in &self.resources {
            if !(amount.is_finite() && *amount >= 0.0) || name.trim().is_empty() {
                return Err(BuildError::InvalidResource { name: name.clone(), amount: *amount });
            }
            if &**name == "CPU" {
                return Err(BuildError::CpuAsResource);
            }
        }
        let threads = cpus.max(1);
        let sched =
            Scheduler::new(Totals::new(cpus as f64, &self.resources), threads, self.max_spare_threads, self.timeline);
        let store = Arc::new(Store::new(&self.store).map_err(|source| BuildError::SpillDir {
            path: self.store.spill_dir.clone().unwrap_or_default(),
            source,
        })?);
        store.set_recorder(sched.recorder.clone());
        let cluster = crate::backend::Cluster::new(store.clone());
        let shared = Arc::new(Shared { sched: sched.clone(), store, cluster });
        let quiet = !self.print_task_panics;
        if quiet {
            crate::panics::install();
        }
        let weak_shared = Arc::downgrade(&shared);
        sched.set_start_hook(move || {
            CURRENT.with(|c| *c.borrow_mut() = weak_shared.clone());
            crate::panics::set_quiet(quiet);
        });
        let handles = Arc::new(Mutex::new(Vec::with_capacity(threads)));
        let pool = self.pool(threads, &sched, handles.clone())?;
        let pool = Arc::new(pool);
        sched.attach(&pool);
        let owner = Owner {
            shared: shared.clone(),
            pool: Mutex::new(Some(pool)),
            threads: Mutex::new(std::mem::take(&mut *handles.lock().unwrap_or_else(|p| p.into_inner()))),
        };
        Ok(Runtime { shared, _owner: Some(Arc::new(owner)) })
    }

    /// The rayon pool of `threads` workers, each registered with `sched`
    /// when it starts, their join handles kept in `spawned`.
    fn pool(
        &self,
        threads: usize,
        sched: &Arc<Scheduler>,
        spawned: Arc<Mutex<Vec<JoinHandle<()>>>>,
    ) -> Result<rayon::ThreadPool, BuildError> {
        let weak_sched = Arc::downgrade(sched);
        let name = self.thread_name.clone();
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .stack_size(self.stack_size)
            .thread_name(move |i| format!("{name}-{i}"))
            // Task panics are caught where tasks run; anything else that
            // escapes is logged, never allowed to abort the process.
            .panic_handler(|p| {
                let message = crate::error::panic_message(p.as_ref());
                tracing::error!(%message, "a panic escaped a manta job");
            })
            .start_handler(move |index| {
                if let Some(s) = weak_sched.upgrade() {
                    s.start_worker(index);
                }
            })
            .spawn_handler(move |thread| {
                let mut b = std::thread::Builder::new();
                if let Some(n) = thread.name() {
                    b = b.name(n.to_owned());
                }
                if let Some(s) = thread.stack_size() {
                    b = b.stack_size(s);
                }
                let h = b.spawn(|| thread.run())?;
                if let Ok(mut v) = spawned.lock() {
                    v.push(h);
                }
                Ok(())
            })
            .build()
            .map_err(BuildError::Threads)
    }
}

thread_local! {
    /// The runtime whose worker this thread is (set at thread start).
    static CURRENT: std::cell::RefCell<Weak<Shared>> = const { std::cell::RefCell::new(Weak::new()) };
    /// The runtime entered on this thread with `Runtime::enter`.
    static ENTERED: std::cell::RefCell<Weak<Shared>> = const { std::cell::RefCell::new(Weak::new()) };
}

static DEFAULT: OnceLock<Runtime> = OnceLock::new();

/// The runtime refs bind to on this thread (see the `backend` module docs):
/// the entered one, else the one whose worker this is. Never a global.
pub(crate) fn context() -> Option<Runtime> {
    if let Some(s) = ENTERED.with(|e| e.borrow().upgrade()) {
        return Some(Runtime { shared: s, _owner: None });
    }
    Runtime::current()
}

/// Keeps a runtime entered on this thread (see [`Runtime::enter`]); leaving
/// restores whatever was entered before. Not `Send`: it restores this
/// thread's state.
#[must_use = "the runtime is entered only while the guard lives"]
pub struct EnterGuard<'rt> {
    previous: Weak<Shared>,
    _rt: std::marker::PhantomData<&'rt Runtime>,
    _not_send: std::marker::PhantomData<*const ()>,
}

impl std::fmt::Debug for EnterGuard<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("EnterGuard")
    }
}

impl Drop for EnterGuard<'_> {
    fn drop(&mut self) {
        let previous = std::mem::take(&mut self.previous);
        ENTERED.with(|e| *e.borrow_mut() = previous);
    }
}

/// The process-wide runtime for scripts (like `ray.init()`): built with the
/// defaults on first call, the same one afterwards. Panics only if the OS
/// refuses to start threads; [`try_init`] returns that error instead.
pub fn init() -> &'static Runtime {
    match try_init() {
        Ok(rt) => rt,
        Err(e) => panic!("manta::init: {e}"),
    }
}

/// Like [`init`], returning the build error instead of panicking.
pub fn try_init() -> Result<&'static Runtime, BuildError> {
    if let Some(rt) = DEFAULT.get() {
        return Ok(rt);
    }
    let rt = Runtime::builder().build()?;
    Ok(DEFAULT.get_or_init(|| rt))
}

impl Runtime {
    /// A builder with every default (see [`RuntimeBuilder`]'s methods).
    pub fn builder() -> RuntimeBuilder {
        RuntimeBuilder::default()
    }

    /// A runtime with every default.
    pub fn new() -> Result<Runtime, BuildError> {
        Runtime::builder().build()
    }

    /// The runtime whose worker is running the calling code (inside a task
    /// or actor call), as a non-owning handle. `None` outside workers.
    pub fn current() -> Option<Runtime> {
        CURRENT.with(|c| c.borrow().upgrade()).map(|shared| Runtime { shared, _owner: None })
    }

    /// Enters this runtime on the calling thread until the guard is
    /// dropped: object refs deserialized meanwhile (serde, e.g. from bytes
    /// another process sent) bind to it, and refs serialized meanwhile are
    /// exported by it. Inside a task this is automatic for the task's own
    /// runtime. Guards nest; dropping one restores the previous runtime.
    ///
    /// ```
    /// use manta::{ObjectRef, Runtime};
    /// let rt = Runtime::builder().num_cpus(1).build()?;
    /// let r = rt.put(7u32)?;
    /// let _entered = rt.enter();
    /// let mut bytes = Vec::new();
    /// ciborium::into_writer(&r, &mut bytes)?;
    /// let back: ObjectRef<u32> = ciborium::from_reader(&bytes[..])?;
    /// assert_eq!(*back.get()?, 7);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn enter(&self) -> EnterGuard<'_> {
        let previous = ENTERED.with(|e| std::mem::replace(&mut *e.borrow_mut(), Arc::downgrade(&self.shared)));
        EnterGuard { previous, _rt: std::marker::PhantomData, _not_send: std::marker::PhantomData }
    }

    pub(crate) fn cluster(&self) -> &Arc<crate::backend::Cluster> {
        &self.shared.cluster
    }

    pub(crate) fn scheduler(&self) -> &Arc<Scheduler> {
        &self.shared.sched
    }

    /// Stores a value and returns its ref. The value is moved, never copied.
    ///
    /// Fails only with [`StoreFull`], which hands the value back, when the
    /// store is at its cap and nothing can be moved out of it.
    pub fn put<T: Any + Send + Sync>(&self, value: T) -> Result<ObjectRef<T>, StoreFull<T>> {
        let store = &self.shared.store;
        match store.admit(value, true) {
            Ok((v, meta)) => Ok(ObjectRef::from_cell(ObjectCell::stored(store, v, meta))),
            Err((value, needed)) => Err(StoreFull { value, needed, capacity: store.capacity() }),
        }
    }

    /// The object store's counters and memory use.
    pub fn store_stats(&self) -> StoreStats {
        self.shared.store.stats()
    }

    /// The runtime's spill directory, if one is set.
    pub fn spill_dir(&self) -> Option<&std::path::Path> {
        self.shared.store.spill_dir()
    }

    pub(crate) fn store(&self) -> &Arc<Store> {
        &self.shared.store
    }

    /// Waits for an object and returns its value (see [`ObjectRef::get`]).
    pub fn get<T: Any + Send + Sync>(&self, r: &ObjectRef<T>) -> Result<Arc<T>, Error> {
        r.get()
    }

    /// Like [`Runtime::get`] with a timeout.
    pub fn get_timeout<T: Any + Send + Sync>(&self, r: &ObjectRef<T>, timeout: Duration) -> Result<Arc<T>, Error> {
        r.get_timeout(timeout)
    }

    /// Gets many objects: values in input order (duplicates allowed); fails
    /// as soon as any of them fails, even if earlier ones are still pending.
    pub fn get_all<T: Any + Send + Sync>(&self, refs: &[ObjectRef<T>]) -> Result<Vec<Arc<T>>, Error> {
        crate::wait::get_all(refs, None)
    }

    /// Like [`Runtime::get_all`], giving up after `timeout`.
    pub fn get_all_timeout<T: Any + Send + Sync>(
        &self,
        refs: &[ObjectRef<T>],
        timeout: Duration,
    ) -> Result<Vec<Arc<T>>, Error> {
        // A timeout past what an `Instant` holds waits forever.
        crate::wait::get_all(refs, Instant::now().checked_add(timeout).map(|d| (d, timeout)))
    }

    /// Waits until `num_returns` of `refs` are done or `timeout` passes
    /// (`None`: no timeout; zero: a poll). Returns `(ready, pending)`, Ray's
    /// `ray.wait`:
    ///
    /// - both lists keep input order, and together hold every ref once;
    /// - `ready` holds at most `num_returns` refs: refs that are done but
    ///   beyond the first `num_returns` of them stay in `pending`;
    /// - a failed object (its task panicked, was cancelled, ...) counts as
    ///   ready; `wait` never reads it, so its error is still unread;
    /// - when the timeout passes first, `ready` holds what is done so far
    ///   (possibly nothing): a timeout is not an error;
    /// - an empty `refs` returns `([], [])` at once, whatever `num_returns`
    ///   (Ray checks `num_returns` only for a non-empty list);
    /// - for a non-empty list, `num_returns == 0`, `num_returns` larger than
    ///   the list, or the same object twice (through any typed or untyped
    ///   view) is [`Error::InvalidArgument`], as in Ray.
    ///
    /// Inside a task, `wait` gives the task's CPUs back while it blocks.
    #[allow(clippy::type_complexity)]
    pub fn wait<R: crate::refs::Waitable>(
        &self,
        refs: &[R],
        num_returns: usize,
        timeout: Option<Duration>,
    ) -> Result<(Vec<R>, Vec<R>), Error> {
        crate::wait::wait(refs, num_returns, timeout)
    }

    /// Submits a task with default options (1 CPU, named after the call
    /// site). Returns its result's ref at once.
    #[track_caller]
    pub fn spawn<R, F>(&self, f: F) -> ObjectRef<R>
    where
        R: Any + Send + Sync,
        F: FnOnce() -> R + Send + 'static,
    {
        crate::task::spawn_default(self, None, f)
    }

    /// Submits a task that runs when all `args` are ready; the closure
    /// receives the resolved tuple (`ObjectRef<T>` becomes `Arc<T>`).
    #[track_caller]
    pub fn spawn_with<A, R, F>(&self, args: A, f: F) -> ObjectRef<R>
    where
        A: crate::TaskArgs,
        R: Any + Send + Sync,
        F: FnOnce(A::Output) -> R + Send + 'static,
    {
        self.task().spawn_with(args, f)
    }

    /// A task with options (name, CPUs, resources, priority; retries and
    /// lineage with [`TaskBuilder::rerunnable`]).
    pub fn task(&self) -> TaskBuilder<'_> {
        TaskBuilder::new(self)
    }

    /// Number of worker threads.
    pub fn num_threads(&self) -> usize {
        self.shared.sched.threads()
    }

    /// `(name, total, free)` for every resource, CPU first.
    pub fn resources(&self) -> Vec<(Text, f64, f64)> {
        self.shared.sched.resources()
    }

    /// Switches timeline recording on or off (see [`Runtime::timeline`]).
    /// Tasks submitted while it is on are recorded.
    pub fn record_timeline(&self, on: bool) {
        self.shared.sched.recorder.set_on(on);
    }

    /// What was recorded while the timeline was on: tasks (submitted,
    /// started, ended, with names, CPUs, outcomes, attempts and the objects
    /// they read), actor calls, spills, restores and rebuilds, per thread.
    /// Write it for Perfetto with [`Timeline::write_chrome_trace`](crate::Timeline::write_chrome_trace).
    pub fn timeline(&self) -> crate::Timeline {
        self.shared.sched.recorder.snapshot()
    }

    /// The timeline's recorder (for the backend's transfer events).
    pub(crate) fn recorder(&self) -> &Arc<crate::timeline::Recorder> {
        &self.shared.sched.recorder
    }

    /// Forgets what the timeline recorded so far.
    pub fn clear_timeline(&self) {
        self.shared.sched.recorder.clear();
    }

    /// Tasks waiting for resources or a free worker.
    pub fn queued_tasks(&self) -> usize {
        self.shared.sched.queued()
    }
}
