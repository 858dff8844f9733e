//! Registered functions and actor types: what a node can run for others.
//!
//! Closures cannot cross machines, so code that may run remotely is named:
//! a [`RemoteFn`] is a plain `fn` under a stable string name, an
//! [`ActorClass`] a constructor, a [`Method`] a `fn(&mut S, args)`. They are
//! declared once (usually as `static`s) and listed in a [`Registry`] given
//! to the node: every node runs the same program, so every node registers
//! the same table. Calls are typed by these declarations, so passing the
//! wrong argument types does not compile.
//!
//! The table's hash ([`Registry::hash`]: names and argument/result type
//! names, FNV-1a, stable across builds of the same source) is gossiped in
//! heartbeats; tasks go only to nodes with the same hash, and a node that
//! receives a name it does not know refuses it with an error naming it.

use super::args::{Args, Data};
use crate::wire::plain;
use crate::wire::WireError;
use manta::{ActorHandle, AnyRef, ObjectId, Runtime};
use std::any::Any;
use std::collections::BTreeMap;
use std::sync::Arc;

/// A function that may run on any node of the cluster: `fn(args) -> R`
/// under a name unique in the program.
///
/// ```
/// use manta_p2p::RemoteFn;
/// static ADD: RemoteFn<(i64, i64), i64> = RemoteFn::new("add", |(a, b)| a + b);
/// ```
pub struct RemoteFn<A, R> {
    name: &'static str,
    f: fn(A) -> R,
}

impl<A, R> std::fmt::Debug for RemoteFn<A, R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("RemoteFn").field(&self.name).finish()
    }
}

impl<A, R> RemoteFn<A, R> {
    /// Declares a function (register it with [`Registry::function`]).
    pub const fn new(name: &'static str, f: fn(A) -> R) -> Self {
        RemoteFn { name, f }
    }

    /// Its registered name.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// The plain function.
    pub fn func(&self) -> fn(A) -> R {
        self.f
    }
}

/// An actor type that may be created on any node: a constructor from
/// plain-value arguments.
///
/// ```
/// use manta_p2p::ActorClass;
/// static COUNTER: ActorClass<(i64,), i64> = ActorClass::new("Counter", |(start,)| start);
/// ```
pub struct ActorClass<A, S> {
    name: &'static str,
    new: fn(A) -> S,
}

impl<A, S> std::fmt::Debug for ActorClass<A, S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("ActorClass").field(&self.name).finish()
    }
}

impl<A, S> ActorClass<A, S> {
    /// Declares an actor type (register it with [`Registry::actor`]).
    pub const fn new(name: &'static str, new: fn(A) -> S) -> Self {
        ActorClass { name, new }
    }

    /// Its registered name.
    pub fn name(&self) -> &'static str {
        self.name
    }
}

/// A method of a registered actor type: `fn(&mut S, args) -> R` under a
/// name unique in the program (e.g. `"Counter.incr"`).
///
/// ```
/// use manta_p2p::Method;
/// static INCR: Method<i64, (), i64> = Method::new("Counter.incr", |n, ()| { *n += 1; *n });
/// ```
pub struct Method<S, A, R> {
    name: &'static str,
    f: fn(&mut S, A) -> R,
}

impl<S, A, R> std::fmt::Debug for Method<S, A, R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Method").field(&self.name).finish()
    }
}

impl<S, A, R> Method<S, A, R> {
    /// Declares a method (register it with [`Registry::method`]).
    pub const fn new(name: &'static str, f: fn(&mut S, A) -> R) -> Self {
        Method { name, f }
    }

    /// Its registered name.
    pub fn name(&self) -> &'static str {
        self.name
    }
}

/// Why registered code could not be started here.
#[derive(Debug, thiserror::Error)]
pub(crate) enum RegistryError {
    /// The arguments do not decode as the registered types.
    #[error("cannot decode arguments: {0}")]
    Arguments(#[source] WireError),
    /// The constructor arguments do not decode as the registered types.
    #[error("cannot decode constructor arguments: {0}")]
    ConstructorArguments(#[source] WireError),
    /// A method called on an actor of another type.
    #[error("method `{0}` does not belong to this actor's type")]
    WrongActorType(&'static str),
}

/// Task options as registered code takes them.
#[derive(Debug, Clone, Default)]
pub(crate) struct RunOpts {
    /// `Low` for a task beyond its submitter's fair share here (see
    /// `exec`), else `Normal`.
    pub(crate) priority: manta::Priority,
    pub(crate) cpus: f64,
    pub(crate) resources: Vec<(String, f64)>,
    pub(crate) retries: u32,
    pub(crate) name: Option<String>,
}

/// The finished result as its completion carries it: `Ok` with its
/// encoding if it is at most [`INLINE_RESULT_BYTES`], or `Err` with its
/// size otherwise; or the task's error.
pub(crate) type Finished = Result<Result<Vec<u8>, u64>, manta::Error>;

/// Called with the finished result.
pub(crate) type OnDone = Box<dyn FnOnce(Finished) + Send>;

/// Runs a registered function's task here: decodes the arguments (refs
/// bind to `rt`), submits it with output id `id`, exports the output and
/// calls `on_done` (if any) when it finishes. Returns the output.
type SpawnFn =
    dyn Fn(&Runtime, &[u8], &RunOpts, ObjectId, Option<OnDone>) -> Result<AnyRef, RegistryError> + Send + Sync;
/// Creates an actor here from encoded constructor arguments.
type CreateFn =
    dyn Fn(&Runtime, &[u8], &RunOpts, &str) -> Result<Box<dyn Any + Send + Sync>, RegistryError> + Send + Sync;
/// Calls a method on an actor made by a `CreateFn` (downcast inside).
type MethodFn = dyn Fn(&(dyn Any + Send + Sync), &Runtime, &[u8], ObjectId, Option<OnDone>) -> Result<AnyRef, RegistryError>
    + Send
    + Sync;

/// Largest result sent back inline with its completion (as Ray: 100 KB).
pub const INLINE_RESULT_BYTES: usize = 100 * 1024;

/// The table of registered functions, actor types and methods.
#[derive(Clone, Default)]
pub struct Registry {
    functions: BTreeMap<&'static str, (String, Arc<SpawnFn>)>,
    classes: BTreeMap<&'static str, (String, Arc<CreateFn>)>,
    methods: BTreeMap<&'static str, (String, Arc<MethodFn>)>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("functions", &self.functions.keys().collect::<Vec<_>>())
            .field("actors", &self.classes.keys().collect::<Vec<_>>())
            .field("methods", &self.methods.keys().collect::<Vec<_>>())
            .field("hash", &format_args!("{:016x}", self.hash()))
            .finish()
    }
}

/// Encodes a finished result for its completion message (see `OnDone`).
fn finish<R: Data>(r: &manta::ObjectRef<R>, on_done: OnDone) {
    let probe = r.untyped();
    r.on_ready(move |res| {
        on_done(res.map(|v| {
            // A value whose store charge is well over the cap is not
            // encoded just to be measured.
            if probe.stored_bytes().is_some_and(|b| b > 4 * INLINE_RESULT_BYTES) {
                return Err(probe.stored_bytes().unwrap_or(0) as u64);
            }
            let mut out = Vec::new();
            match ciborium::into_writer(&*v, &mut out) {
                Ok(()) if out.len() <= INLINE_RESULT_BYTES => Ok(out),
                _ => Err(out.len() as u64),
            }
        }))
    });
}

fn decode_wire<A: Args>(rt: &Runtime, args: &[u8]) -> Result<A::Wire, RegistryError> {
    let _entered = rt.enter();
    // Capped in size and depth, no trailing bytes (`wire::plain`).
    plain::decode_args::<A::Wire>(args).map_err(RegistryError::Arguments)
}

fn signature<A, R>(kind: &str) -> String {
    format!("{kind}({}) -> {}", std::any::type_name::<A>(), std::any::type_name::<R>())
}

impl Registry {
    /// An empty table.
    pub fn new() -> Registry {
        Registry::default()
    }

    /// Registers a function (replacing one of the same name).
    pub fn function<A: Args, R: Data>(mut self, f: &RemoteFn<A, R>) -> Self {
        let (name, func) = (f.name, f.f);
        let run = move |rt: &Runtime, args: &[u8], o: &RunOpts, id: ObjectId, on_done: Option<OnDone>| {
            let wire = decode_wire::<A>(rt, args)?;
            let b = rt.backend().task_with_id(id).name(o.name.clone().unwrap_or_else(|| name.to_string()));
            // Its caller is a peer: no spin for its next task after it.
            let b = b.caller_afar().rerunnable();
            let mut b = b.cpus(o.cpus).retries(o.retries).priority(o.priority);
            for (res, amount) in &o.resources {
                b = b.resource(res, *amount);
            }
            let r = b.spawn_with(wire, func);
            rt.backend().export_object(&r);
            if let Some(on_done) = on_done {
                finish(&r, on_done);
            }
            Ok(r.untyped())
        };
        self.functions.insert(name, (signature::<A, R>("fn"), Arc::new(run)));
        self
    }

    /// Registers an actor type (replacing one of the same name).
    pub fn actor<A: Data + Args, S: Send + 'static>(mut self, c: &ActorClass<A, S>) -> Self {
        let (name, new) = (c.name, c.new);
        let make = move |rt: &Runtime, args: &[u8], o: &RunOpts, label: &str| {
            let a: A = plain::decode_args(args).map_err(RegistryError::ConstructorArguments)?;
            let mut b = rt.actor_builder().name(label).cpus(o.cpus).max_restarts(o.retries);
            for (res, amount) in &o.resources {
                b = b.resource(res, *amount);
            }
            let h: Box<dyn Any + Send + Sync> = Box::new(b.spawn_factory(move || new(a.clone())));
            Ok(h)
        };
        self.classes.insert(name, (signature::<A, S>("actor"), Arc::new(make)));
        self
    }

    /// Registers a method of a registered actor type.
    pub fn method<S: Send + 'static, A: Args, R: Data>(mut self, m: &Method<S, A, R>) -> Self {
        let (name, f) = (m.name, m.f);
        let call =
            move |actor: &(dyn Any + Send + Sync), rt: &Runtime, args: &[u8], id: ObjectId, on_done: Option<OnDone>| {
                let Some(h) = actor.downcast_ref::<ActorHandle<S>>() else {
                    return Err(RegistryError::WrongActorType(name));
                };
                let wire = decode_wire::<A>(rt, args)?;
                let r = rt.backend().call_with_id(h, (id, name), wire, f);
                rt.backend().export_object(&r);
                if let Some(on_done) = on_done {
                    finish(&r, on_done);
                }
                Ok(r.untyped())
            };
        self.methods.insert(name, (signature::<(S, A), R>("method"), Arc::new(call)));
        self
    }

    /// Registered function `name`'s task spawner.
    pub(crate) fn function_named(&self, name: &str) -> Option<&SpawnFn> {
        self.functions.get(name).map(|(_, f)| &**f)
    }

    /// Registered actor type `name`'s constructor.
    pub(crate) fn class_named(&self, name: &str) -> Option<&CreateFn> {
        self.classes.get(name).map(|(_, f)| &**f)
    }

    /// Registered method `name`'s caller.
    pub(crate) fn method_named(&self, name: &str) -> Option<&MethodFn> {
        self.methods.get(name).map(|(_, f)| &**f)
    }

    /// True if `name` is a registered function.
    pub fn has_function(&self, name: &str) -> bool {
        self.functions.contains_key(name)
    }

    /// A stable hash of the table: every name with its signature.
    pub fn hash(&self) -> u64 {
        if self.functions.is_empty() && self.classes.is_empty() && self.methods.is_empty() {
            return 0;
        }
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        let mut eat = |bytes: &[u8]| {
            for b in bytes.iter().chain([0xffu8].iter()) {
                h ^= *b as u64;
                h = h.wrapping_mul(0x0100_0000_01b3);
            }
        };
        let tables = [
            self.functions.iter().map(|(n, (s, _))| (*n, s)).collect::<Vec<_>>(),
            self.classes.iter().map(|(n, (s, _))| (*n, s)).collect(),
            self.methods.iter().map(|(n, (s, _))| (*n, s)).collect(),
        ];
        for table in tables {
            for (n, s) in table {
                eat(n.as_bytes());
                eat(s.as_bytes());
            }
            eat(b"|");
        }
        h
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    static ADD: RemoteFn<(i64, i64), i64> = RemoteFn::new("add", |(a, b)| a + b);
    static ADD2: RemoteFn<(i32, i32), i32> = RemoteFn::new("add", |(a, b)| a + b);

    #[test]
    fn hash_covers_names_and_signatures() {
        assert_eq!(Registry::new().hash(), 0);
        let a = Registry::new().function(&ADD);
        assert_eq!(a.hash(), Registry::new().function(&ADD).hash());
        assert_ne!(a.hash(), Registry::new().function(&ADD2).hash());
        assert_ne!(a.hash(), 0);
        assert!(a.has_function("add") && !a.has_function("sub"));
    }
}
