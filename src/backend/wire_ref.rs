//! The serde form of [`ObjectRef`]: its id and its owner's hint (see the
//! module docs of `backend`), and [`collect_serialized`], which lets a node
//! keep alive the refs it sends out of band.

use super::cluster::link_of;
use super::MAX_HINT_BYTES;
use crate::heap_size::encoder_of;
use crate::id::ObjectId;
use crate::refs::{AnyRef, ObjectRef};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::any::Any;

#[derive(Serialize, Deserialize)]
struct WireRef {
    id: ObjectId,
    #[serde(with = "serde_bytes")]
    owner: Vec<u8>,
}

thread_local! {
    /// Refs serialized on this thread inside [`collect_serialized`].
    static COLLECTED: std::cell::RefCell<Option<Vec<AnyRef>>> = const { std::cell::RefCell::new(None) };
}

/// Runs `f` and returns, with its result, a handle to every `ObjectRef`
/// serialized on this thread meanwhile (a node sending refs out of band
/// keeps these alive until the receiver has registered its borrow).
/// Nested calls each see their own refs; the collection ends also if `f`
/// panics.
pub fn collect_serialized<R>(f: impl FnOnce() -> R) -> (R, Vec<AnyRef>) {
    struct Restore(Option<Vec<AnyRef>>);
    impl Drop for Restore {
        fn drop(&mut self) {
            let outer = self.0.take();
            COLLECTED.with(|c| *c.borrow_mut() = outer);
        }
    }
    let outer = COLLECTED.with(|c| c.borrow_mut().replace(Vec::new()));
    let restore = Restore(outer);
    let r = f();
    let mine = COLLECTED.with(|c| c.borrow_mut().take()).unwrap_or_default();
    drop(restore);
    (r, mine)
}

impl<T: Serialize + Any + Send + Sync> Serialize for ObjectRef<T> {
    /// Writes the id and owner hint, and exports the object (module docs).
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        COLLECTED.with(|c| {
            if let Some(v) = c.borrow_mut().as_mut() {
                v.push(self.untyped());
            }
        });
        let cluster = match link_of(self.cell()).and_then(|l| l.cluster()) {
            Some(c) => Some(c),
            None => crate::runtime::context().map(|rt| rt.cluster().clone()),
        };
        let Some(cluster) = cluster else {
            use serde::ser::Error as _;
            return Err(S::Error::custom(
                "an ObjectRef can only be serialized with its runtime entered on this thread \
                 (`let _guard = rt.enter();`), inside one of its tasks, or by a node's `encode`",
            ));
        };
        let owner = cluster.export(self.cell(), encoder_of::<T>()).to_vec();
        WireRef { id: self.cell().id(), owner }.serialize(s)
    }
}

impl<'de, T: Serialize + DeserializeOwned + Any + Send + Sync> Deserialize<'de> for ObjectRef<T> {
    /// Binds the ref to the context runtime (module docs).
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error as _;
        let w = WireRef::deserialize(d)?;
        if w.owner.len() > MAX_HINT_BYTES {
            return Err(D::Error::custom(format!("owner hint of {} bytes (max {MAX_HINT_BYTES})", w.owner.len())));
        }
        let Some(rt) = crate::runtime::context() else {
            return Err(D::Error::custom(
                "an ObjectRef can only be deserialized with a runtime entered on this thread \
                 (`let _guard = rt.enter();`), inside one of its tasks, or by a node's `decode`",
            ));
        };
        Ok(ObjectRef::from_cell(rt.cluster().import::<T>(w.id, w.owner)))
    }
}
