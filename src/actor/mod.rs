//! Actors: state owned by the runtime, changed only by its method calls.
//!
//! # Ordering
//! Calls on one actor run one at a time, in the order they enter the
//! [`Mailbox`] (whose single-drainer token makes the "one at a time"
//! hold). A call whose argument refs are pending first waits in its
//! *caller's* queue: calls from one handle enter the mailbox in submission
//! order (a waiting call holds back later calls from the same handle), while
//! other handles' calls go ahead. Each clone of a handle is its own caller.
//!
//! # Results
//! A call's result is admitted to the object store like a task's
//! (`Store::admit`, then `ObjectCell::complete_stored`): charged against
//! the cap, spilled to the spill directory and restored when memory is
//! short (spillable types), otherwise pinned. It has no lineage (a call
//! cannot be re-run to rebuild it). A result that cannot be stored (larger
//! than the whole capacity, or no room within the put timeout) fails its
//! call with [`Error::StoreFull`].
//!
//! # Failures
//! A method that panics fails its own call with [`Error::TaskPanicked`].
//! The actor then restarts from its factory if it has restarts left (later
//! calls run on the fresh state), or dies: every later call fails with
//! [`Error::ActorDead`]. An actor spawned from a plain value has no factory
//! and so no restarts. With [`ActorBuilder::max_task_retries`], a call
//! made with [`ActorHandle::call_rerunnable`] that panics is run again on
//! the restarted state instead of failing (see there).
//!
//! # Kill and terminate
//! The actor's `Control` has a generation, `version`, that every kill and
//! terminate increments (under the control's mutex); each call records the
//! generation it was made in (`gen`, one atomic load, no write). The
//! drainer compares each call it takes against its copy of the control,
//! refreshed whenever `version` changed (one atomic load per call):
//! - [`ActorHandle::kill`]: calls made before the kill (`gen <
//!   killed_before`) that have not started fail with `ActorDead`
//!   (`Killed`); the state is dropped before the next call runs; then the
//!   actor is either dead or rebuilt lazily from its factory (the kill
//!   decided which and counted the restart).
//! - [`ActorHandle::terminate`]: a marker call queued through the
//!   terminating handle; calls made after it (`gen >= closed_from`) fail
//!   with `ActorDead` (`Terminated`), and when the drainer reaches the
//!   marker the state is dropped and the actor is dead.
//!
//! A call made after `kill`/`terminate` returned records the new
//! generation, and the drainer sees the control changed before it sees the
//! call (the mailbox's lock orders them), so it is never run on the old
//! state. A call made concurrently with a kill falls on one side of it.
//!
//! # Read-only calls
//! [`ActorHandle::call_ref`] runs a closure on `&S`. With
//! [`ActorBuilder::max_concurrency`] above 1, a run of consecutive read-only
//! calls at the head of the mailbox (up to that many) runs at once, in a
//! rayon scope on the drainer's pool, and the next call starts after all of
//! them: mutating calls still see every earlier call finished and no later
//! one started.
//!
//! # Lifetime
//! The actor's state is dropped when its last handle is gone and every
//! queued call has run, or earlier by a kill, a terminate or a death. The
//! state lives in a mutex that only the mailbox's drainer ever locks, so it
//! is never contended: it is an ownership cell, not a point where threads
//! wait.

mod run;

use crate::args::TaskArgs;
use crate::cell::ObjectCell;
use crate::countdown::Countdown;
use crate::error::{ActorDeathCause, Error, Text};
use crate::id::{ActorId, ObjectId};
use crate::mailbox::Mailbox;
use crate::notify::Waiter;
use crate::objects::CountedArgs;
use crate::refs::ObjectRef;
use crate::resources::Request;
use crate::runtime::Runtime;
use crate::scheduler::Scheduler;
use crate::slot::{Meta, Value};
use crate::store::Store;
use run::{Control, Held, Life};
use std::any::Any;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

/// A call's result, admitted to the store, or why there is none.
type Admitted = Result<(Value, Meta), Error>;

/// A mutating call's body.
type MutCall<S> = Box<dyn FnOnce(&mut S, &Store) -> Admitted + Send>;

/// A re-runnable mutating call's body (`call_rerunnable`).
type RerunCall<S> = Box<dyn FnMut(&mut S, &Store) -> Admitted + Send>;

/// A read-only call's body.
type RefCall<S> = Box<dyn FnOnce(&S, &Store) -> Admitted + Send>;

/// A call's output and the call, for [`RunBatch`].
type RefCallOut<S> = (Option<Arc<ObjectCell>>, RefCall<S>);

/// Runs read-only calls at once on `&S`, storing each result in its
/// output; returns the output and panic message of each that panicked. A
/// plain function pointer, made where `S: Sync` is known (`call_ref`).
type RunBatch<S> = fn(&S, &Arc<Store>, Vec<RefCallOut<S>>) -> Vec<Option<(Option<Arc<ObjectCell>>, Text)>>;

/// What a call runs.
enum Invoke<S> {
    Mut(MutCall<S>),
    Rerun(RerunCall<S>),
    Ref(RefCall<S>, RunBatch<S>),
    /// `terminate`'s marker: the state is dropped here, the actor is dead.
    Terminate,
    /// No-op that makes an idle drainer apply a kill now.
    Wake,
}

/// A call's name (in errors, logs and the timeline): its function's type
/// name (`app::Counter::increment`), or, for a closure, whose type name is
/// only its enclosing function's path and `{{closure}}`, where it was
/// called (`src/app.rs:42`), as a task's default name is.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Method {
    Type(&'static str),
    At(&'static std::panic::Location<'static>),
}

impl Method {
    /// The name of a call of `F` made here (one suffix check: a closure's
    /// type name ends in `}}`).
    #[track_caller]
    #[inline]
    pub(crate) fn of<F>() -> Method {
        let t = std::any::type_name::<F>();
        if t.ends_with("}}") {
            Method::At(std::panic::Location::caller())
        } else {
            Method::Type(t)
        }
    }

    /// As text (for an error).
    pub(crate) fn text(self) -> Text {
        match self {
            Method::Type(t) => t.into(),
            Method::At(_) => self.to_string().into(),
        }
    }

    /// As a timeline label.
    pub(crate) fn label(self) -> crate::timeline::Label {
        match self {
            Method::Type(t) => crate::timeline::Label::Static(t),
            Method::At(l) => crate::timeline::Label::Caller(l),
        }
    }
}

/// As its timeline label shows it (`file:line` for a call site).
impl std::fmt::Display for Method {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.label().fmt(f)
    }
}

/// One queued method call (or marker).
struct Call<S> {
    /// The result's cell (`None` for markers).
    out: Option<Arc<ObjectCell>>,
    name: Method,
    invoke: Invoke<S>,
    /// Set when an input failed: the call completes with this, unrun.
    failed: Option<Error>,
    /// The control generation the call was made in (see "Kill and
    /// terminate").
    gen: u64,
    /// Set if the timeline was recording when the call was made.
    rec: Option<Box<CallRec>>,
}

/// A call's timeline facts known when it is made.
struct CallRec {
    submitted: u64,
    inputs: Box<[ObjectId]>,
}

type Factory<S> = Box<dyn Fn() -> S + Send + Sync>;

struct ActorInner<S> {
    name: Text,
    id: ActorId,
    /// The state and the drainer's view of the control; only the drainer
    /// locks it.
    held: crate::sync::Mutex<Held<S>>,
    mailbox: Mailbox<Call<S>>,
    factory: Option<Factory<S>>,
    max_restarts: u32,
    max_task_retries: u32,
    max_concurrency: usize,
    /// Restarts used (by panics and kills).
    restarts: AtomicU32,
    control: Control,
    sched: Arc<Scheduler>,
    store: Arc<Store>,
    req: Request,
}

/// A queue of calls from one handle that wait for their inputs.
struct Caller<S> {
    queue: Mutex<VecDeque<Arc<PendingCall<S>>>>,
}

struct PendingCall<S> {
    countdown: Countdown,
    ready: AtomicBool,
    call: Mutex<Option<Call<S>>>,
}

/// A handle to an actor. Cloning gives another caller of the same actor.
pub struct ActorHandle<S> {
    inner: Arc<ActorInner<S>>,
    caller: Arc<Caller<S>>,
}

impl<S> Clone for ActorHandle<S> {
    fn clone(&self) -> Self {
        ActorHandle { inner: self.inner.clone(), caller: Arc::new(Caller { queue: Mutex::new(VecDeque::new()) }) }
    }
}

impl<S> std::fmt::Debug for ActorHandle<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ActorHandle({}, {})", self.inner.name, self.inner.id)
    }
}

/// Configures an actor: `rt.actor_builder().name("c").max_restarts(2).spawn_factory(Counter::default)`.
///
/// Two ways to finish, named after what they take:
/// [`spawn`](ActorBuilder::spawn) takes the initial state (the actor cannot
/// be rebuilt, so it has no restarts), and
/// [`spawn_factory`](ActorBuilder::spawn_factory) takes a factory that
/// builds the state, first lazily and again after each panic, up to
/// [`max_restarts`](ActorBuilder::max_restarts).
#[derive(Debug, Clone)]
#[must_use = "an ActorBuilder does nothing until spawned"]
pub struct ActorBuilder<'rt> {
    rt: &'rt Runtime,
    name: Option<Text>,
    max_restarts: u32,
    max_task_retries: u32,
    max_concurrency: usize,
    cpus: f64,
    resources: Vec<(Text, f64)>,
}

impl<'rt> ActorBuilder<'rt> {
    pub(crate) fn new(rt: &'rt Runtime) -> Self {
        ActorBuilder {
            rt,
            name: None,
            max_restarts: 0,
            max_task_retries: 0,
            max_concurrency: 1,
            cpus: 0.0,
            resources: vec![],
        }
    }

    /// Names the actor (used in errors). Default: the state's type name.
    pub fn name(mut self, name: &str) -> Self {
        self.name = Some(name.into());
        self
    }

    /// How many times the actor is rebuilt from its factory after a method
    /// panics or a [`kill`](ActorHandle::kill) that allows it. Default 0.
    /// Only an actor started with
    /// [`spawn_factory`](ActorBuilder::spawn_factory) can be rebuilt: one
    /// started from a value with restarts asked for is dead at once, every
    /// call failing with [`Error::ActorDead`] (cause
    /// [`ActorDeathCause::NoFactory`]).
    pub fn max_restarts(mut self, n: u32) -> Self {
        self.max_restarts = n;
        self
    }

    /// How many times a re-runnable call ([`ActorHandle::call_rerunnable`])
    /// is run again on the restarted actor when it fails because the actor
    /// died under it (Ray's `max_task_retries`). Default 0. In-process, the
    /// only call an actor dies under is the one that panicked: with `n > 0`
    /// and restarts left, that call is run again on the fresh state, before
    /// any later call, up to `n` times (each run that panics uses one
    /// restart). Calls made with [`ActorHandle::call`] (`FnOnce`) are never
    /// run twice. A re-runnable call made before a
    /// [`kill`](ActorHandle::kill) that restarts the actor runs on the new
    /// state instead of failing.
    pub fn max_task_retries(mut self, n: u32) -> Self {
        self.max_task_retries = n;
        self
    }

    /// How many read-only calls ([`ActorHandle::call_ref`]) may run at once.
    /// Default 1 (every call runs alone).
    pub fn max_concurrency(mut self, n: usize) -> Self {
        self.max_concurrency = n.max(1);
        self
    }

    /// CPUs the actor holds while it runs calls. Default 0 (as in Ray).
    pub fn cpus(mut self, cpus: f64) -> Self {
        self.cpus = cpus;
        self
    }

    /// A custom resource the actor holds while it runs calls.
    pub fn resource(mut self, name: &str, amount: f64) -> Self {
        self.resources.push((name.into(), amount));
        self
    }

    /// Starts the actor from its initial state. An infeasible resource
    /// request gives an actor whose every call fails at once with
    /// [`Error::ActorDead`] (cause [`ActorDeathCause::Infeasible`]).
    pub fn spawn<S: Send + 'static>(self, state: S) -> ActorHandle<S> {
        let life = if self.max_restarts > 0 {
            Life::Dead(
                ActorDeathCause::NoFactory,
                "max_restarts needs a factory to rebuild the state: use ActorBuilder::spawn_factory".into(),
            )
        } else {
            Life::Live(state)
        };
        self.start(life, None)
    }

    /// Starts an actor whose state `factory` builds: on the first call, and
    /// again after a method panics (or a kill) while restarts are left.
    pub fn spawn_factory<S: Send + 'static>(self, factory: impl Fn() -> S + Send + Sync + 'static) -> ActorHandle<S> {
        self.start(Life::Unborn, Some(Box::new(factory)))
    }

    fn start<S: Send + 'static>(self, life: Life<S>, factory: Option<Factory<S>>) -> ActorHandle<S> {
        let name: Text = self.name.unwrap_or_else(|| std::any::type_name::<S>().into());
        let sched = self.rt.scheduler().clone();
        let (life, req) = match sched.totals().request(&name, self.cpus, &self.resources) {
            Ok(req) => (life, req),
            Err(e) => {
                let cause = match &e {
                    Error::Infeasible { resource, requested, total, .. } => {
                        ActorDeathCause::Infeasible { resource: resource.clone(), requested: *requested, total: *total }
                    }
                    _ => ActorDeathCause::Other,
                };
                (Life::Dead(cause, e.to_string().into()), Request::default())
            }
        };
        let max_restarts = if factory.is_some() { self.max_restarts } else { 0 };
        let dead = matches!(life, Life::Dead(..));
        let inner = Arc::new(ActorInner {
            name,
            id: ActorId::fresh(),
            held: crate::sync::Mutex::new(Held::new(life)),
            mailbox: Mailbox::new(),
            factory,
            max_restarts,
            max_task_retries: self.max_task_retries,
            max_concurrency: self.max_concurrency,
            restarts: AtomicU32::new(0),
            control: Control::new(dead),
            sched,
            store: self.rt.store().clone(),
            req,
        });
        ActorHandle { inner, caller: Arc::new(Caller { queue: Mutex::new(VecDeque::new()) }) }
    }
}

/// Admits a call's result to the store, or says why it cannot be stored.
fn admit<R: Any + Send + Sync>(store: &Store, r: R) -> Admitted {
    store.admit(r, true).map_err(|(_, needed)| Error::StoreFull { needed, capacity: store.capacity() })
}

impl<S: Send + 'static> ActorHandle<S> {
    /// Calls a method: `f` runs on the actor's state, after every call made
    /// before it through this handle. Returns at once. The result is stored
    /// like a task's (charged, spilled, restored, or `StoreFull`). If `f`
    /// panics, this call fails with `TaskPanicked` and the state it ran on
    /// is dropped (it may be half-updated): the actor restarts from its
    /// factory if it has restarts left
    /// ([`ActorBuilder::max_restarts`]), and is dead otherwise (later calls
    /// fail with [`Error::ActorDead`], cause `Panicked`). Return a `Result`
    /// from `f` for errors that leave the state valid.
    #[track_caller]
    pub fn call<R, F>(&self, f: F) -> ObjectRef<R>
    where
        R: Any + Send + Sync,
        F: FnOnce(&mut S) -> R + Send + 'static,
    {
        self.call_as(None, Method::of::<F>(), (), move |s, ()| f(s))
    }

    /// Calls a method with arguments that may be refs; the call waits for
    /// them (holding back later calls from this handle only).
    #[track_caller]
    pub fn call_with<A, R, F>(&self, args: A, f: F) -> ObjectRef<R>
    where
        A: TaskArgs,
        R: Any + Send + Sync,
        F: FnOnce(&mut S, A::Output) -> R + Send + 'static,
    {
        self.call_as(None, Method::of::<F>(), args, f)
    }

    /// [`ActorHandle::call_with`] whose result gets id `id` (fresh if
    /// `None`; see `backend::Backend::call_with_id`); `name` is the user's
    /// closure's type name (for errors and the timeline).
    pub(crate) fn call_as<A, R, F>(&self, id: Option<ObjectId>, name: Method, args: A, f: F) -> ObjectRef<R>
    where
        A: TaskArgs,
        R: Any + Send + Sync,
        F: FnOnce(&mut S, A::Output) -> R + Send + 'static,
    {
        let out = ObjectCell::pending_as(id, None);
        let rec = self.call_rec(&args);
        let pending = inputs_to_wait_for(&args);
        let args = CountedArgs::new(args);
        let invoke = Invoke::Mut(Box::new(move |state: &mut S, store: &Store| {
            let r = match args.resolve() {
                Ok(input) => admit(store, f(state, input)),
                Err(cause) => Err(Error::dependency(name.text(), cause)),
            };
            drop(args); // before the result wakes anyone
            r
        }));
        self.submit(Some(out.clone()), name, invoke, pending, rec);
        ObjectRef::from_cell(out)
    }

    /// Calls a re-runnable method (`Fn`): like [`ActorHandle::call`], but
    /// when it panics and the actor restarts, it is run again on the fresh
    /// state, up to [`ActorBuilder::max_task_retries`] times, before any
    /// later call (and it is not failed by a [`kill`](ActorHandle::kill)
    /// that restarts the actor: it runs on the new state). With no retries
    /// or restarts left its last panic is its error, as for `call`.
    #[track_caller]
    pub fn call_rerunnable<R, F>(&self, f: F) -> ObjectRef<R>
    where
        R: Any + Send + Sync,
        F: Fn(&mut S) -> R + Send + 'static,
    {
        self.rerunnable_as(Method::of::<F>(), (), move |s, ()| f(s))
    }

    /// [`ActorHandle::call_rerunnable`] with arguments that may be refs
    /// (resolved again for each run).
    #[track_caller]
    pub fn call_rerunnable_with<A, R, F>(&self, args: A, f: F) -> ObjectRef<R>
    where
        A: TaskArgs,
        R: Any + Send + Sync,
        F: Fn(&mut S, A::Output) -> R + Send + 'static,
    {
        self.rerunnable_as(Method::of::<F>(), args, f)
    }

    fn rerunnable_as<A, R, F>(&self, name: Method, args: A, f: F) -> ObjectRef<R>
    where
        A: TaskArgs,
        R: Any + Send + Sync,
        F: Fn(&mut S, A::Output) -> R + Send + 'static,
    {
        let out = ObjectCell::pending(None);
        let rec = self.call_rec(&args);
        let pending = inputs_to_wait_for(&args);
        let args = CountedArgs::new(args);
        let invoke = Invoke::Rerun(Box::new(move |state: &mut S, store: &Store| match args.resolve() {
            Ok(input) => admit(store, f(state, input)),
            Err(cause) => Err(Error::dependency(name.text(), cause)),
        }));
        self.submit(Some(out.clone()), name, invoke, pending, rec);
        ObjectRef::from_cell(out)
    }

    /// Kills the actor now, from outside (Ray's `ray.kill(actor,
    /// no_restart)`).
    ///
    /// A running Rust closure cannot be interrupted: the call running now
    /// (if any) finishes and keeps its result. Every call made before the
    /// kill that has not started fails with [`Error::ActorDead`] (cause
    /// [`ActorDeathCause::Killed`]), including calls still waiting for
    /// their argument refs (they fail once those are ready, never running).
    /// The state is dropped right after the running call, or at once on an
    /// idle actor's drainer.
    ///
    /// With `no_restart == false`, an actor started from a factory with
    /// restarts left is rebuilt (this counts one restart,
    /// [`ActorHandle::restarts`]): calls made after the kill run on the
    /// fresh state. Otherwise (or after [`ActorHandle::terminate`]) the
    /// actor is dead and every later call fails with `ActorDead` (`Killed`).
    /// With [`ActorBuilder::max_task_retries`] above 0, re-runnable calls
    /// made before a kill that restarts the actor run on the new state
    /// instead of failing. Killing a dead actor does nothing.
    pub fn kill(&self, no_restart: bool) {
        let inner = &self.inner;
        inner.control.kill(inner, no_restart);
        // Wake the drainer so an idle actor's state goes now; a marker
        // skips the caller queues (a kill does not wait for inputs).
        inner.deliver(Call {
            out: None,
            name: Method::Type("kill"),
            invoke: Invoke::Wake,
            failed: None,
            gen: u64::MAX,
            rec: None,
        });
    }

    /// Stops the actor gracefully (Ray's `actor.__ray_terminate__()`): the
    /// calls made through this handle before it run (in order, after their
    /// inputs), as do calls of other handles already in the mailbox; calls
    /// made after it fail with [`Error::ActorDead`] (cause
    /// [`ActorDeathCause::Terminated`]). The state is dropped after the
    /// last of those calls, and the actor is never restarted. A call of
    /// another handle made before, but still waiting for its argument refs
    /// when the actor stops, fails the same way.
    pub fn terminate(&self) {
        let gen = self.inner.control.close();
        let marker = Call {
            out: None,
            name: Method::Type("terminate"),
            invoke: Invoke::Terminate,
            failed: None,
            gen,
            rec: None,
        };
        self.submit_call(marker, Vec::new());
    }

    fn submit(
        &self,
        out: Option<Arc<ObjectCell>>,
        name: Method,
        invoke: Invoke<S>,
        pending: Vec<Arc<ObjectCell>>,
        rec: Option<Box<CallRec>>,
    ) {
        self.inner.sched.actor_call();
        let gen = self.inner.control.generation();
        self.submit_call(Call { out, name, invoke, failed: None, gen, rec }, pending);
    }

    /// What the timeline needs of a call made now, if it is recording.
    fn call_rec<A: TaskArgs>(&self, args: &A) -> Option<Box<CallRec>> {
        let recorder = &self.inner.sched.recorder;
        if !recorder.is_on() {
            return None;
        }
        let mut inputs = Vec::new();
        args.for_each_dep(&mut |r| inputs.push(r.cell.id()));
        Some(Box::new(CallRec { submitted: recorder.now(), inputs: inputs.into() }))
    }

    fn submit_call(&self, call: Call<S>, pending: Vec<Arc<ObjectCell>>) {
        {
            let q = lock_std(&self.caller.queue);
            if q.is_empty() && pending.is_empty() {
                self.inner.deliver(call);
                return;
            }
        }
        self.enqueue_waiting(call, pending);
    }

    fn enqueue_waiting(&self, call: Call<S>, pending: Vec<Arc<ObjectCell>>) {
        let pc = Arc::new(PendingCall {
            countdown: Countdown::new(pending.len() + 1),
            ready: AtomicBool::new(false),
            call: Mutex::new(Some(call)),
        });
        lock_std(&self.caller.queue).push_back(pc.clone());
        for cell in pending {
            let (pc2, caller, inner, c) = (pc.clone(), self.caller.clone(), self.inner.clone(), cell.clone());
            let cb = move |ok: bool| {
                let release = if ok {
                    pc2.countdown.arrive()
                } else {
                    let fire = pc2.countdown.fail();
                    if fire {
                        if let (Some(call), Some(Err(e))) = (lock_std(&pc2.call).as_mut(), c.slot.read()) {
                            call.failed = Some(e);
                        }
                    }
                    fire
                };
                if release {
                    pc2.ready.store(true, Ordering::Release);
                    flush(&caller, &inner);
                }
            };
            if let Err(w) = cell.slot.register(Waiter::Callback(Box::new(cb))) {
                w.notify(!cell.slot.is_failed());
            }
        }
        if pc.countdown.arrive() {
            pc.ready.store(true, Ordering::Release);
            flush(&self.caller, &self.inner);
        }
    }

    /// The actor's name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// The actor's id (the same for every handle, across restarts).
    pub fn id(&self) -> ActorId {
        self.inner.id
    }

    /// How many times the actor was restarted so far (after panics and
    /// kills).
    pub fn restarts(&self) -> u32 {
        self.inner.restarts.load(Ordering::Acquire)
    }

    /// Calls queued in the mailbox (not counting ones waiting for inputs).
    pub fn queued_calls(&self) -> usize {
        self.inner.mailbox.len()
    }
}

/// The inputs a call must go through its caller's queue for: pending ones,
/// and failed ones (the call then fails in its place in the order).
fn inputs_to_wait_for<A: TaskArgs>(args: &A) -> Vec<Arc<ObjectCell>> {
    let mut pending = Vec::new();
    args.for_each_dep(&mut |r| {
        let c = &r.cell;
        if !c.slot.is_done() || c.slot.is_failed() {
            c.demand(); // a remote input starts its fetch now
            pending.push(c.clone())
        }
    });
    pending
}

fn lock_std<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Moves the ready calls at the head of a caller's queue into the mailbox.
fn flush<S: Send + 'static>(caller: &Caller<S>, inner: &Arc<ActorInner<S>>) {
    let mut q = lock_std(&caller.queue);
    while q.front().is_some_and(|pc| pc.ready.load(Ordering::Acquire)) {
        if let Some(pc) = q.pop_front() {
            if let Some(call) = lock_std(&pc.call).take() {
                inner.deliver(call);
            }
        }
    }
}

impl<S: Send + Sync + 'static> ActorHandle<S> {
    /// Calls a read-only method: `f` gets `&S`. Ordered like [`ActorHandle::call`];
    /// with [`ActorBuilder::max_concurrency`] above 1, consecutive read-only
    /// calls run at once. The result is stored like a task's.
    #[track_caller]
    pub fn call_ref<R, F>(&self, f: F) -> ObjectRef<R>
    where
        R: Any + Send + Sync,
        F: FnOnce(&S) -> R + Send + 'static,
    {
        self.call_ref_as(Method::of::<F>(), (), move |s, ()| f(s))
    }

    /// [`ActorHandle::call_ref`] with arguments that may be refs.
    #[track_caller]
    pub fn call_ref_with<A, R, F>(&self, args: A, f: F) -> ObjectRef<R>
    where
        A: TaskArgs,
        R: Any + Send + Sync,
        F: FnOnce(&S, A::Output) -> R + Send + 'static,
    {
        self.call_ref_as(Method::of::<F>(), args, f)
    }

    fn call_ref_as<A, R, F>(&self, name: Method, args: A, f: F) -> ObjectRef<R>
    where
        A: TaskArgs,
        R: Any + Send + Sync,
        F: FnOnce(&S, A::Output) -> R + Send + 'static,
    {
        let out = ObjectCell::pending(None);
        let rec = self.call_rec(&args);
        let pending = inputs_to_wait_for(&args);
        let args = CountedArgs::new(args);
        let body: RefCall<S> = Box::new(move |state: &S, store: &Store| {
            let r = match args.resolve() {
                Ok(input) => admit(store, f(state, input)),
                Err(cause) => Err(Error::dependency(name.text(), cause)),
            };
            drop(args);
            r
        });
        self.submit(Some(out.clone()), name, Invoke::Ref(body, run::run_batch::<S>), pending, rec);
        ObjectRef::from_cell(out)
    }
}

impl Runtime {
    /// Starts an actor from its initial state, with default options (no
    /// restarts, 0 CPUs, one call at a time).
    pub fn actor<S: Send + 'static>(&self, state: S) -> ActorHandle<S> {
        ActorBuilder::new(self).spawn(state)
    }

    /// An actor with options (name, restarts, task retries, concurrency,
    /// resources), started with [`ActorBuilder::spawn`] (from a state) or
    /// [`ActorBuilder::spawn_factory`] (from a factory, needed for restarts).
    pub fn actor_builder(&self) -> ActorBuilder<'_> {
        ActorBuilder::new(self)
    }
}
