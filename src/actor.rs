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
//! # Failures
//! A method that panics fails its own call with [`Error::TaskPanicked`].
//! The actor then restarts from its factory if it has restarts left (later
//! calls run on the fresh state), or dies: every later call fails with
//! [`Error::ActorDead`]. An actor spawned from a plain value has no factory
//! and so no restarts.
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
//! queued call has run. The state lives in a mutex that only the mailbox's
//! drainer ever locks, so it is never contended: it is an ownership cell, not
//! a point where threads wait.

use crate::args::TaskArgs;
use crate::cell::ObjectCell;
use crate::countdown::Countdown;
use crate::error::{panic_message, Error, Text};
use crate::mailbox::Mailbox;
use crate::notify::Waiter;
use crate::refs::ObjectRef;
use crate::resources::Request;
use crate::runtime::Runtime;
use crate::scheduler::{Go, Job, Scheduler};
use crate::slot::Value;
use crate::sync::lock;
use std::any::Any;
use std::collections::VecDeque;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Mutex, Weak};

/// Calls a drainer runs before giving its thread back to other work.
const DRAIN_BATCH: usize = 256;

/// A read-only call's body.
type RefCall<S> = Box<dyn FnOnce(&S) + Send>;

/// Runs read-only calls at once on `&S`; returns each one's panic message.
/// A plain function pointer, made where `S: Sync` is known (`call_ref`).
type RunBatch<S> = fn(&S, Vec<RefCall<S>>) -> Vec<Option<Text>>;

/// What a call runs.
enum Invoke<S> {
    Mut(Box<dyn FnOnce(&mut S) + Send>),
    Ref(RefCall<S>, RunBatch<S>),
}

fn run_batch<S: Sync>(state: &S, calls: Vec<RefCall<S>>) -> Vec<Option<Text>> {
    let run = |call: RefCall<S>| {
        crate::panics::catching(|| catch_unwind(AssertUnwindSafe(|| call(state)))).err().map(|p| panic_message(&*p))
    };
    let mut panics: Vec<Option<Text>> = vec![None; calls.len()];
    if calls.len() == 1 || rayon::current_thread_index().is_none() {
        // One call, or not on a pool thread (a rescue thread): run in place.
        for (call, slot) in calls.into_iter().zip(panics.iter_mut()) {
            *slot = run(call);
        }
        return panics;
    }
    rayon::scope(|sc| {
        for (call, slot) in calls.into_iter().zip(panics.iter_mut()) {
            sc.spawn(move |_| *slot = run(call));
        }
    });
    panics
}

/// One queued method call.
struct Call<S> {
    out: Arc<ObjectCell>,
    name: &'static str,
    invoke: Invoke<S>,
    /// Set when an input failed: the call completes with this, unrun.
    failed: Option<Error>,
}

enum Life<S> {
    Unborn,
    Live(S),
    Dead(Text),
}

type Factory<S> = Box<dyn Fn() -> S + Send + Sync>;

struct ActorInner<S> {
    name: Text,
    life: crate::sync::Mutex<Life<S>>,
    mailbox: Mailbox<Call<S>>,
    factory: Option<Factory<S>>,
    max_restarts: u32,
    max_concurrency: usize,
    restarts: std::sync::atomic::AtomicU32,
    sched: Arc<Scheduler>,
    req: Request,
}

/// A queue of calls from one handle that wait for their inputs.
struct Caller<S> {
    queue: Mutex<VecDeque<Arc<PendingCall<S>>>>,
}

struct PendingCall<S> {
    countdown: Countdown,
    ready: std::sync::atomic::AtomicBool,
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
        write!(f, "ActorHandle({})", self.inner.name)
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
    max_concurrency: usize,
    cpus: f64,
    resources: Vec<(Text, f64)>,
}

impl<'rt> ActorBuilder<'rt> {
    pub(crate) fn new(rt: &'rt Runtime) -> Self {
        ActorBuilder { rt, name: None, max_restarts: 0, max_concurrency: 1, cpus: 0.0, resources: vec![] }
    }

    /// Names the actor (used in errors). Default: the state's type name.
    pub fn name(mut self, name: &str) -> Self {
        self.name = Some(name.into());
        self
    }

    /// How many times the actor is rebuilt from its factory after a method
    /// panics. Default 0. Only an actor started with
    /// [`spawn_factory`](ActorBuilder::spawn_factory) can be rebuilt: one
    /// started from a value with restarts asked for is dead at once, every
    /// call failing with [`Error::ActorDead`] that says why.
    pub fn max_restarts(mut self, n: u32) -> Self {
        self.max_restarts = n;
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
    /// request gives an actor whose every call fails with
    /// [`Error::Infeasible`].
    pub fn spawn<S: Send + 'static>(self, state: S) -> ActorHandle<S> {
        let restarts = self.max_restarts;
        let life = if restarts > 0 {
            Life::Dead("max_restarts needs a factory to rebuild the state: use ActorBuilder::spawn_factory".into())
        } else {
            Life::Live(state)
        };
        self.start(life, None)
    }

    /// Starts an actor whose state `factory` builds: on the first call, and
    /// again after a method panics while restarts are left.
    pub fn spawn_factory<S: Send + 'static>(self, factory: impl Fn() -> S + Send + Sync + 'static) -> ActorHandle<S> {
        self.start(Life::Unborn, Some(Box::new(factory)))
    }

    fn start<S: Send + 'static>(self, life: Life<S>, factory: Option<Factory<S>>) -> ActorHandle<S> {
        let name: Text = self.name.unwrap_or_else(|| std::any::type_name::<S>().into());
        let sched = self.rt.scheduler().clone();
        let (life, req) = match sched.totals().request(&name, self.cpus, &self.resources) {
            Ok(req) => (life, req),
            Err(e) => (Life::Dead(e.to_string().into()), Request::default()),
        };
        let max_restarts = if factory.is_some() { self.max_restarts } else { 0 };
        let inner = Arc::new(ActorInner {
            name,
            life: crate::sync::Mutex::new(life),
            mailbox: Mailbox::new(),
            factory,
            max_restarts,
            max_concurrency: self.max_concurrency,
            restarts: std::sync::atomic::AtomicU32::new(0),
            sched,
            req,
        });
        ActorHandle { inner, caller: Arc::new(Caller { queue: Mutex::new(VecDeque::new()) }) }
    }
}

impl<S: Send + 'static> ActorHandle<S> {
    /// Calls a method: `f` runs on the actor's state, after every call made
    /// before it through this handle. Returns at once.
    pub fn call<R, F>(&self, f: F) -> ObjectRef<R>
    where
        R: Any + Send + Sync,
        F: FnOnce(&mut S) -> R + Send + 'static,
    {
        self.call_with((), move |s, ()| f(s))
    }

    /// Calls a method with arguments that may be refs; the call waits for
    /// them (holding back later calls from this handle only).
    pub fn call_with<A, R, F>(&self, args: A, f: F) -> ObjectRef<R>
    where
        A: TaskArgs,
        R: Any + Send + Sync,
        F: FnOnce(&mut S, A::Output) -> R + Send + 'static,
    {
        self.call_as(None, args, f)
    }

    /// [`ActorHandle::call_with`] whose result gets id `id` (fresh if
    /// `None`; see `backend::Backend::call_with_id`).
    pub(crate) fn call_as<A, R, F>(&self, id: Option<crate::ObjectId>, args: A, f: F) -> ObjectRef<R>
    where
        A: TaskArgs,
        R: Any + Send + Sync,
        F: FnOnce(&mut S, A::Output) -> R + Send + 'static,
    {
        let out = ObjectCell::pending_as(id, None);
        let name = std::any::type_name::<F>();
        let pending = inputs_to_wait_for(&args);
        let result = out.clone();
        let invoke = Invoke::Mut(Box::new(move |state: &mut S| {
            let v = match args.resolve() {
                Ok(input) => Ok(Value::new(f(state, input))),
                Err(cause) => Err(Error::dependency(name.into(), cause)),
            };
            finish(result, v, args);
        }));
        self.submit_call(Call { out: out.clone(), name, invoke, failed: None }, pending);
        ObjectRef::from_cell(out)
    }

    fn submit_call(&self, call: Call<S>, pending: Vec<Arc<ObjectCell>>) {
        self.inner.sched.actor_call();
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
            ready: std::sync::atomic::AtomicBool::new(false),
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
                    pc2.ready.store(true, std::sync::atomic::Ordering::Release);
                    flush(&caller, &inner);
                }
            };
            if let Err(w) = cell.slot.register(Waiter::Callback(Box::new(cb))) {
                w.notify(!cell.slot.is_failed());
            }
        }
        if pc.countdown.arrive() {
            pc.ready.store(true, std::sync::atomic::Ordering::Release);
            flush(&self.caller, &self.inner);
        }
    }

    /// The actor's name.
    pub fn name(&self) -> &str {
        &self.inner.name
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

/// Completes a call's output after letting go of its arguments and of the
/// output itself, so a woken `get` finds the actor holding nothing of it.
fn finish<A>(out: Arc<ObjectCell>, v: crate::slot::Outcome, args: A) {
    let wake = out.slot.complete_deferred(v, crate::slot::Meta::default());
    drop((out, args));
    if let Some(w) = wake {
        w.send();
    }
}

/// Completes a call that will not run, then drops it, then wakes.
fn fail_call<S>(call: Call<S>, e: Error) {
    let wake = call.out.slot.complete_deferred(Err(e), crate::slot::Meta::default());
    drop(call);
    if let Some(w) = wake {
        w.send();
    }
}

fn lock_std<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Moves the ready calls at the head of a caller's queue into the mailbox.
fn flush<S: Send + 'static>(caller: &Caller<S>, inner: &Arc<ActorInner<S>>) {
    let mut q = lock_std(&caller.queue);
    while q.front().is_some_and(|pc| pc.ready.load(std::sync::atomic::Ordering::Acquire)) {
        if let Some(pc) = q.pop_front() {
            if let Some(call) = lock_std(&pc.call).take() {
                inner.deliver(call);
            }
        }
    }
}

impl<S: Send + 'static> ActorInner<S> {
    /// Puts a ready call in the mailbox, scheduling a drain if none is on.
    fn deliver(self: &Arc<Self>, call: Call<S>) {
        if self.mailbox.push(call) {
            self.schedule_drain();
        }
    }

    fn schedule_drain(self: &Arc<Self>) {
        let me = self.clone();
        let run = move |go: Go| {
            match go {
                Go::Run => me.drain(),
                Go::Shutdown | Go::InputFailed(_) | Go::Cancelled => me.fail_all(Error::RuntimeShutdown),
            }
            crate::scheduler::Tally::default() // calls are counted when made
        };
        self.sched.submit(Job::new(self.req.clone(), Box::new(run)));
    }

    fn fail_all(&self, e: Error) {
        while let Some(call) = self.mailbox.pop() {
            fail_call(call, e.clone());
        }
    }

    fn drain(self: Arc<Self>) {
        let mut life = lock(&self.life);
        let mut ran = 0;
        while ran < DRAIN_BATCH {
            let Some(mut call) = self.mailbox.pop() else { return };
            ran += 1;
            if let Some(cause) = call.failed.take() {
                let e = Error::dependency(call.name.into(), cause);
                fail_call(call, e);
                continue;
            }
            if matches!(*life, Life::Unborn) {
                *life = self.construct();
            }
            let state = match &mut *life {
                Life::Live(s) => s,
                Life::Dead(reason) => {
                    let e = Error::ActorDead { actor: self.name.clone(), reason: reason.clone() };
                    fail_call(call, e);
                    continue;
                }
                Life::Unborn => continue,
            };
            // The drain keeps only weak references to outputs: the call's
            // closure holds the strong one and lets go of it before waking
            // anyone; a panic's error goes to whoever still holds a ref.
            let Call { out, name, invoke, .. } = call;
            let out = Arc::downgrade(&out);
            let panics: Vec<(Weak<ObjectCell>, &'static str, Text)> = match invoke {
                Invoke::Mut(f) => match crate::panics::catching(|| catch_unwind(AssertUnwindSafe(|| f(state)))) {
                    Ok(()) => vec![],
                    Err(p) => vec![(out, name, panic_message(p.as_ref()))],
                },
                Invoke::Ref(f, run) => {
                    let mut batch = vec![(out, name, f)];
                    while batch.len() < self.max_concurrency {
                        match self.mailbox.pop() {
                            Some(Call { out, name, invoke: Invoke::Ref(f, _), failed: None }) => {
                                batch.push((Arc::downgrade(&out), name, f));
                                ran += 1;
                            }
                            Some(other) => {
                                self.mailbox.unpop(other);
                                break;
                            }
                            None => break,
                        }
                    }
                    let (outs, fs): (Vec<_>, Vec<_>) = batch.into_iter().map(|(o, n, f)| ((o, n), f)).unzip();
                    let results = run(state, fs);
                    outs.into_iter().zip(results).filter_map(|((o, n), p)| Some((o, n, p?))).collect()
                }
            };
            for (out, name, message) in panics {
                let task: Text = format!("{}::{}", self.name, name).into();
                if let Some(out) = out.upgrade() {
                    out.slot.complete(Err(Error::TaskPanicked { task, message: message.clone() }));
                }
                if matches!(*life, Life::Live(_)) {
                    *life = self.after_panic(name, &message);
                }
            }
        }
        drop(life);
        // Batch used up with the token still held: yield the thread, go on later.
        self.schedule_drain();
    }

    fn construct(&self) -> Life<S> {
        let Some(factory) = &self.factory else {
            return Life::Dead("the actor has no state and no factory".into());
        };
        match crate::panics::catching(|| catch_unwind(AssertUnwindSafe(factory))) {
            Ok(s) => Life::Live(s),
            Err(p) => Life::Dead(format!("its constructor panicked: {}", panic_message(p.as_ref())).into()),
        }
    }

    fn after_panic(&self, method: &str, message: &str) -> Life<S> {
        use std::sync::atomic::Ordering;
        let used = self.restarts.load(Ordering::Relaxed);
        if self.factory.is_some() && used < self.max_restarts {
            self.restarts.store(used + 1, Ordering::Relaxed);
            tracing::warn!(actor = %self.name, method, message, restart = used + 1, "actor panicked; restarting");
            return self.construct();
        }
        let reason = if self.max_restarts > 0 {
            format!("method `{method}` panicked ({message}) after {used} restarts")
        } else {
            format!("method `{method}` panicked ({message}) and the actor has no restarts")
        };
        Life::Dead(reason.into())
    }
}

impl<S: Send + Sync + 'static> ActorHandle<S> {
    /// Calls a read-only method: `f` gets `&S`. Ordered like [`ActorHandle::call`];
    /// with [`ActorBuilder::max_concurrency`] above 1, consecutive read-only
    /// calls run at once.
    pub fn call_ref<R, F>(&self, f: F) -> ObjectRef<R>
    where
        R: Any + Send + Sync,
        F: FnOnce(&S) -> R + Send + 'static,
    {
        self.call_ref_with((), move |s, ()| f(s))
    }

    /// [`ActorHandle::call_ref`] with arguments that may be refs.
    pub fn call_ref_with<A, R, F>(&self, args: A, f: F) -> ObjectRef<R>
    where
        A: TaskArgs,
        R: Any + Send + Sync,
        F: FnOnce(&S, A::Output) -> R + Send + 'static,
    {
        let out = ObjectCell::pending(None);
        let name = std::any::type_name::<F>();
        let pending = inputs_to_wait_for(&args);
        let result = out.clone();
        let body: RefCall<S> = Box::new(move |state: &S| {
            let v = match args.resolve() {
                Ok(input) => Ok(Value::new(f(state, input))),
                Err(cause) => Err(Error::dependency(name.into(), cause)),
            };
            finish(result, v, args);
        });
        let invoke = Invoke::Ref(body, run_batch::<S>);
        self.submit_call(Call { out: out.clone(), name, invoke, failed: None }, pending);
        ObjectRef::from_cell(out)
    }
}

impl Runtime {
    /// Starts an actor from its initial state, with default options (no
    /// restarts, 0 CPUs, one call at a time).
    pub fn actor<S: Send + 'static>(&self, state: S) -> ActorHandle<S> {
        ActorBuilder::new(self).spawn(state)
    }

    /// An actor with options (name, restarts, concurrency, resources),
    /// started with [`ActorBuilder::spawn`] (from a state) or
    /// [`ActorBuilder::spawn_factory`] (from a factory, needed for restarts).
    pub fn actor_builder(&self) -> ActorBuilder<'_> {
        ActorBuilder::new(self)
    }
}
