//! Arguments of registered functions, actor constructors and methods.
//!
//! A registered function takes a tuple of plain types, `fn((A, B)) -> R`.
//! At the call site each element may be given as a value or as a ref to
//! one (`T`, `ObjectRef<T>` or `&ObjectRef<T>`), checked by the compiler
//! ([`IntoArgs`]). On the way to the node that runs it, every element
//! becomes an [`Arg`]: a value travels as CBOR, a ref as its id and owner
//! hint (the value is fetched where the task runs, and only there). On the
//! running node the tuple of `Arg`s is a manta task argument list, so the
//! task waits for its refs in the scheduler like any local task.
//!
//! Invariant: `Arg<T>` resolves to an owned `T`: a ref's value is cloned
//! out of the store unless this was its last reader.

use manta::{Error, ObjectRef, TaskArg, TaskArgs};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::any::Any;
use std::sync::Arc;

/// What a value must be to cross nodes as an argument or a result.
pub trait Data: Serialize + DeserializeOwned + Clone + Any + Send + Sync {}
impl<T: Serialize + DeserializeOwned + Clone + Any + Send + Sync> Data for T {}

/// One argument as it travels: a value, or a ref to one.
#[derive(Serialize, Deserialize)]
#[serde(bound = "")]
pub enum Arg<T: Data> {
    /// The value itself.
    #[serde(rename = "v")]
    Val(T),
    /// A ref whose value the task waits for.
    #[serde(rename = "r")]
    Ref(ObjectRef<T>),
}

impl<T: Data + std::fmt::Debug> std::fmt::Debug for Arg<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Arg::Val(v) => f.debug_tuple("Val").field(v).finish(),
            Arg::Ref(r) => f.debug_tuple("Ref").field(&r.id()).finish(),
        }
    }
}

impl<T: Data> Clone for Arg<T> {
    fn clone(&self) -> Self {
        match self {
            Arg::Val(v) => Arg::Val(v.clone()),
            Arg::Ref(r) => Arg::Ref(r.clone()),
        }
    }
}

impl<T: Data> Arg<T> {
    /// The ref, if this argument is one.
    pub fn as_ref(&self) -> Option<&ObjectRef<T>> {
        match self {
            Arg::Ref(r) => Some(r),
            Arg::Val(_) => None,
        }
    }
}

impl<T: Data> TaskArg for Arg<T> {
    type Output = T;
    fn for_each_dep(&self, f: &mut dyn FnMut(&manta::AnyRef)) {
        if let Arg::Ref(r) = self {
            r.for_each_dep(f)
        }
    }
    fn resolve(&self) -> Result<T, Error> {
        match self {
            Arg::Val(v) => Ok(v.clone()),
            Arg::Ref(r) => r.resolve().map(Arc::unwrap_or_clone),
        }
    }
}

/// Something that can be passed where a `T` is expected: a `T`, an
/// `ObjectRef<T>` or a `&ObjectRef<T>`.
pub trait IntoArg<T: Data> {
    /// The argument as it travels.
    fn into_arg(self) -> Arg<T>;
}

impl<T: Data> IntoArg<T> for T {
    fn into_arg(self) -> Arg<T> {
        Arg::Val(self)
    }
}

impl<T: Data> IntoArg<T> for ObjectRef<T> {
    fn into_arg(self) -> Arg<T> {
        Arg::Ref(self)
    }
}

impl<T: Data> IntoArg<T> for &ObjectRef<T> {
    fn into_arg(self) -> Arg<T> {
        Arg::Ref(self.clone())
    }
}

/// The argument tuple of a registered function: `()`, `(A,)`, `(A, B)`, ...
/// (up to 8 elements), each element a [`Data`] type.
pub trait Args: Sized + Send + 'static {
    /// The tuple of [`Arg`]s that travels and is run as a task's arguments.
    type Wire: TaskArgs<Output = Self> + Serialize + DeserializeOwned + Clone;
    /// The refs among the arguments (for locality and for keeping them
    /// alive while the task runs elsewhere).
    fn refs(wire: &Self::Wire) -> Vec<manta::AnyRef>;
    /// All arguments as plain values (a wire tuple of `Arg::Val`).
    fn into_wire(self) -> Self::Wire;
}

/// What a call site may pass for an [`Args`] tuple: the same tuple shape,
/// each element a value or a ref ([`IntoArg`]).
pub trait IntoArgs<A: Args> {
    /// The arguments as they travel.
    fn into_args(self) -> A::Wire;
}

macro_rules! tuples {
    ($($t:ident $x:ident $i:tt),*) => {
        impl<$($t: Data),*> Args for ($($t,)*) {
            type Wire = ($(Arg<$t>,)*);
            #[allow(unused_variables, unused_mut)]
            fn refs(wire: &Self::Wire) -> Vec<manta::AnyRef> {
                let mut out = Vec::new();
                $(if let Some(r) = wire.$i.as_ref() { out.push(r.untyped()); })*
                out
            }
            #[allow(clippy::unused_unit)]
            fn into_wire(self) -> Self::Wire {
                ($(Arg::Val(self.$i),)*)
            }
        }
        impl<$($t: Data,)* $($x: IntoArg<$t>),*> IntoArgs<($($t,)*)> for ($($x,)*) {
            #[allow(clippy::unused_unit)]
            fn into_args(self) -> ($(Arg<$t>,)*) {
                ($(self.$i.into_arg(),)*)
            }
        }
    };
}

tuples!();
tuples!(A XA 0);
tuples!(A XA 0, B XB 1);
tuples!(A XA 0, B XB 1, C XC 2);
tuples!(A XA 0, B XB 1, C XC 2, D XD 3);
tuples!(A XA 0, B XB 1, C XC 2, D XD 3, E XE 4);
tuples!(A XA 0, B XB 1, C XC 2, D XD 3, E XE 4, F XF 5);
tuples!(A XA 0, B XB 1, C XC 2, D XD 3, E XE 4, F XF 5, G XG 6);
tuples!(A XA 0, B XB 1, C XC 2, D XD 3, E XE 4, F XF 5, G XG 6, H XH 7);
