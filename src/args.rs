//! Task arguments: plain values and object refs, resolved when a task runs.
//!
//! A task takes a tuple of arguments (up to 12). Each element is a
//! [`TaskArg`]: an [`ObjectRef<T>`] (the task waits for it and receives an
//! `Arc<T>`, zero copy), a `Vec<ObjectRef<T>>` (receives `Vec<Arc<T>>`), or a
//! plain value (numbers, `String`, `&'static str`, `bool`, or anything
//! wrapped in [`Val`]), passed through as is. Closures may of course also
//! capture plain values directly.

use crate::cell::ObjectCell;
use crate::error::Error;
use crate::refs::{AnyRef, ObjectRef};
use crate::slot::{Meta, Value};
use crate::store::Store;
use std::any::Any;
use std::sync::Arc;

/// One argument of a task.
pub trait TaskArg: Send + Sync + 'static {
    /// What the task's closure receives for this argument.
    type Output: Send + 'static;
    /// Calls `f` on every ref this argument depends on (the task waits
    /// for them before it runs). Implementations that wrap refs delegate
    /// to the refs' own `TaskArg` impls.
    fn for_each_dep(&self, f: &mut dyn FnMut(&AnyRef));
    /// Produces the closure's input (all dependencies are done by now).
    fn resolve(&self) -> Result<Self::Output, Error>;
}

/// A tuple of task arguments.
pub trait TaskArgs: Send + Sync + 'static {
    /// The tuple the task's closure receives.
    type Output: Send + 'static;
    /// Calls `f` on every ref the arguments depend on.
    fn for_each_dep(&self, f: &mut dyn FnMut(&AnyRef));
    /// Produces the closure's input tuple.
    fn resolve(&self) -> Result<Self::Output, Error>;
}

fn read_done<T: Any + Send + Sync>(cell: &Arc<ObjectCell>) -> Result<Arc<T>, Error> {
    match cell.read_value() {
        Some(o) => o.and_then(Value::downcast::<T>),
        None => Err(Error::invalid("task input is not ready")),
    }
}

impl<T: Any + Send + Sync> TaskArg for ObjectRef<T> {
    type Output = Arc<T>;
    fn for_each_dep(&self, f: &mut dyn FnMut(&AnyRef)) {
        f(&self.any)
    }
    fn resolve(&self) -> Result<Arc<T>, Error> {
        read_done(self.cell())
    }
}

impl<T: Any + Send + Sync> TaskArg for Vec<ObjectRef<T>> {
    type Output = Vec<Arc<T>>;
    fn for_each_dep(&self, f: &mut dyn FnMut(&AnyRef)) {
        self.iter().for_each(|r| f(&r.any))
    }
    fn resolve(&self) -> Result<Vec<Arc<T>>, Error> {
        self.iter().map(|r| read_done(r.cell())).collect()
    }
}

/// A plain value passed to a task (cloned for each run, so retries and
/// rebuilds see it unchanged).
#[derive(Debug, Clone)]
pub struct Val<T>(pub T);

impl<T: Clone + Send + Sync + 'static> TaskArg for Val<T> {
    type Output = T;
    fn for_each_dep(&self, _: &mut dyn FnMut(&AnyRef)) {}
    fn resolve(&self) -> Result<T, Error> {
        Ok(self.0.clone())
    }
}

macro_rules! plain_args {
    ($($t:ty),*) => {$(
        impl TaskArg for $t {
            type Output = $t;
            fn for_each_dep(&self, _: &mut dyn FnMut(&AnyRef)) {}
            fn resolve(&self) -> Result<$t, Error> {
                Ok(self.clone())
            }
        }
    )*};
}
plain_args!(i8, i16, i32, i64, i128, isize, u8, u16, u32, u64, u128, usize, f32, f64, bool, char, String, &'static str);

macro_rules! tuple_args {
    ($($name:ident),*) => {
        impl<$($name: TaskArg),*> TaskArgs for ($($name,)*) {
            type Output = ($($name::Output,)*);
            #[allow(unused_variables)]
            fn for_each_dep(&self, f: &mut dyn FnMut(&AnyRef)) {
                #[allow(non_snake_case)]
                let ($($name,)*) = self;
                $($name.for_each_dep(f);)*
            }
            fn resolve(&self) -> Result<Self::Output, Error> {
                #[allow(non_snake_case)]
                let ($($name,)*) = self;
                Ok(($($name.resolve()?,)*))
            }
        }
    };
}
tuple_args!();
tuple_args!(A);
tuple_args!(A, B);
tuple_args!(A, B, C);
tuple_args!(A, B, C, D);
tuple_args!(A, B, C, D, E);
tuple_args!(A, B, C, D, E, F);
tuple_args!(A, B, C, D, E, F, G);
tuple_args!(A, B, C, D, E, F, G, H);
tuple_args!(A, B, C, D, E, F, G, H, I);
tuple_args!(A, B, C, D, E, F, G, H, I, J);
tuple_args!(A, B, C, D, E, F, G, H, I, J, K);
tuple_args!(A, B, C, D, E, F, G, H, I, J, K, L);

/// A task result split into one object per element (multiple returns).
pub trait MultiReturn: Send + 'static {
    /// The tuple of refs handed back.
    type Refs;
    /// How many objects.
    #[doc(hidden)]
    const N: usize;
    #[doc(hidden)]
    fn admit(self, store: &Store) -> Vec<Result<(Value, Meta), Error>>;
    #[doc(hidden)]
    fn refs(cells: &[Arc<ObjectCell>]) -> Self::Refs;
}

macro_rules! multi {
    ($n:expr; $($name:ident $i:tt),*) => {
        impl<$($name: Any + Send + Sync),*> MultiReturn for ($($name,)*) {
            type Refs = ($(ObjectRef<$name>,)*);
            const N: usize = $n;
            fn admit(self, store: &Store) -> Vec<Result<(Value, Meta), Error>> {
                vec![$(store.admit(self.$i, true).map_err(|(_, needed)| Error::StoreFull {
                    needed,
                    capacity: store.capacity(),
                })),*]
            }
            fn refs(cells: &[Arc<ObjectCell>]) -> Self::Refs {
                ($(ObjectRef::from_cell(cells[$i].clone()),)*)
            }
        }
    };
}
multi!(2; A 0, B 1);
multi!(3; A 0, B 1, C 2);
multi!(4; A 0, B 1, C 2, D 3);
