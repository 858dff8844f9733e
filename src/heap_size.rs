//! Object sizes: how many bytes an object really occupies, and which types
//! can be spilled to disk.
//!
//! The store charges each object `size_of::<T>()` plus its heap use. Heap
//! use comes from [`HeapSize`], implemented for the standard types
//! (`Vec`, `String`, `Box`, `HashMap`, `BTreeMap`, tuples, ...), and for your
//! own types by one small `impl`. Because Rust has no specialisation, the
//! store learns a type's `HeapSize` (and whether it can be spilled) from a
//! process-wide registry keyed by `TypeId`:
//!
//! - common std types (`Vec<u8>`, `String`, `Vec<String>`, vectors of
//!   numbers, `HashMap<String, _>` of numbers and strings, ...) are
//!   registered already, as spillable;
//! - [`register`] adds a type with its `HeapSize`;
//! - [`register_spillable`] adds one that can also be spilled (it needs
//!   `Serialize + DeserializeOwned`).
//!
//! A type that is not registered counts as `size_of::<T>()` (its heap part
//! is invisible to the store) and is never spilled: when memory is short it
//! is dropped and rebuilt from lineage if its task can be re-run, and
//! otherwise stays in memory. Register every large type you store.

use crate::slot::Value;
use serde::{de::DeserializeOwned, Serialize};
use std::any::{Any, TypeId};
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::io::{Read, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{OnceLock, RwLock};

/// Bytes a value owns on the heap (not counting `size_of::<Self>()`).
///
/// Implement it for your large types; the default counts no heap at all:
/// ```
/// struct Image { pixels: Vec<u8>, name: String }
/// impl manta::HeapSize for Image {
///     fn heap_size(&self) -> usize {
///         self.pixels.heap_size() + self.name.heap_size()
///     }
/// }
/// manta::register::<Image>();
/// ```
pub trait HeapSize {
    /// False for types that never own heap memory (numbers, `bool`, ...):
    /// containers of them are then sized in O(1), without visiting elements.
    const HAS_HEAP: bool = true;

    /// Heap bytes owned by `self`.
    fn heap_size(&self) -> usize {
        0
    }
}

macro_rules! no_heap {
    ($($t:ty),*) => {$(impl HeapSize for $t { const HAS_HEAP: bool = false; })*};
}

/// Heap bytes owned by the elements of a collection (O(1) for plain data).
fn elements<'a, T: HeapSize + 'a>(items: impl Iterator<Item = &'a T>) -> usize {
    if T::HAS_HEAP {
        items.map(HeapSize::heap_size).sum()
    } else {
        0
    }
}
no_heap!(u8, u16, u32, u64, u128, usize, i8, i16, i32, i64, i128, isize, f32, f64, bool, char, (), &'static str);

impl HeapSize for String {
    fn heap_size(&self) -> usize {
        self.capacity()
    }
}

impl<T: HeapSize> HeapSize for Vec<T> {
    fn heap_size(&self) -> usize {
        self.capacity() * std::mem::size_of::<T>() + elements(self.iter())
    }
}

impl<T: HeapSize> HeapSize for VecDeque<T> {
    fn heap_size(&self) -> usize {
        self.capacity() * std::mem::size_of::<T>() + elements(self.iter())
    }
}

impl<T: HeapSize> HeapSize for Box<T> {
    fn heap_size(&self) -> usize {
        std::mem::size_of::<T>() + (**self).heap_size()
    }
}

impl<T: HeapSize> HeapSize for Box<[T]> {
    fn heap_size(&self) -> usize {
        std::mem::size_of_val(&**self) + elements(self.iter())
    }
}

impl<T: HeapSize> HeapSize for Option<T> {
    fn heap_size(&self) -> usize {
        self.as_ref().map_or(0, HeapSize::heap_size)
    }
}

/// Buckets of a hashbrown table with the given usable capacity: a power of
/// two, 7/8 full at most (tables under 8 buckets hold one less than that).
fn hash_buckets(capacity: usize) -> usize {
    match capacity {
        0 => 0,
        c if c < 8 => (c + 1).next_power_of_two(),
        c => (c * 8 / 7).next_power_of_two(),
    }
}

/// hashbrown tables: each bucket holds an entry plus one control byte.
impl<K: HeapSize, V: HeapSize, S> HeapSize for HashMap<K, V, S> {
    fn heap_size(&self) -> usize {
        let buckets = hash_buckets(self.capacity());
        buckets * (std::mem::size_of::<(K, V)>() + 1)
            + self.iter().map(|(k, v)| k.heap_size() + v.heap_size()).sum::<usize>()
    }
}

impl<K: HeapSize, S> HeapSize for HashSet<K, S> {
    fn heap_size(&self) -> usize {
        let buckets = hash_buckets(self.capacity());
        buckets * (std::mem::size_of::<K>() + 1) + elements(self.iter())
    }
}

/// B-tree nodes hold up to 11 entries plus child pointers; count ~1.5x the
/// entries (nodes are at least half full) and 8 bytes of links per entry.
impl<K: HeapSize, V: HeapSize> HeapSize for BTreeMap<K, V> {
    fn heap_size(&self) -> usize {
        self.len() * (std::mem::size_of::<(K, V)>() * 3 / 2 + 8)
            + self.iter().map(|(k, v)| k.heap_size() + v.heap_size()).sum::<usize>()
    }
}

macro_rules! tuple_heap {
    ($($n:ident $i:tt),*) => {
        impl<$($n: HeapSize),*> HeapSize for ($($n,)*) {
            fn heap_size(&self) -> usize {
                0 $(+ self.$i.heap_size())*
            }
        }
    };
}
tuple_heap!(A 0);
tuple_heap!(A 0, B 1);
tuple_heap!(A 0, B 1, C 2);
tuple_heap!(A 0, B 1, C 2, D 3);

/// Encodes a value of one type into a spill file's payload.
pub(crate) type Encode = fn(&(dyn Any + Send + Sync), &mut dyn Write) -> Result<(), String>;
/// Decodes a payload back into a value.
pub(crate) type Decode = fn(&mut dyn Read) -> Result<Value, String>;

/// What the store knows about one type.
#[derive(Clone, Copy)]
pub(crate) struct TypeInfo {
    pub heap_size: fn(&(dyn Any + Send + Sync)) -> usize,
    pub codec: Option<(Encode, Decode)>,
}

fn heap_of<T: HeapSize + Any>(v: &(dyn Any + Send + Sync)) -> usize {
    v.downcast_ref::<T>().map_or(0, HeapSize::heap_size)
}

fn encode_cbor<T: Serialize + Any>(v: &(dyn Any + Send + Sync), w: &mut dyn Write) -> Result<(), String> {
    let v = v.downcast_ref::<T>().ok_or("value of the wrong type")?;
    ciborium::into_writer(v, w).map_err(|e| e.to_string())
}

fn decode_cbor<T: DeserializeOwned + Any + Send + Sync>(r: &mut dyn Read) -> Result<Value, String> {
    let v: T = ciborium::from_reader(r).map_err(|e| e.to_string())?;
    Ok(Value::new(v))
}

/// `Vec<u8>` is written as one CBOR byte string (not an array of numbers),
/// so spilling it is a single large write.
fn encode_bytes(v: &(dyn Any + Send + Sync), w: &mut dyn Write) -> Result<(), String> {
    let v = v.downcast_ref::<Vec<u8>>().ok_or("value of the wrong type")?;
    ciborium::into_writer(serde_bytes::Bytes::new(v), w).map_err(|e| e.to_string())
}

/// Reads a definite-length byte string straight into its `Vec` (one copy,
/// no 4 KiB bounce buffer); anything else (an indefinite-length string, a
/// wrong type) goes through ciborium, which reports the error.
fn decode_bytes(r: &mut dyn Read) -> Result<Value, String> {
    decode_bytes_reusing(r, &|_| None)
}

/// Decodes a `Vec<u8>` written by `encode_bytes` (or any CBOR byte string).
/// A definite length of at least `RECYCLE_MIN` is read into `reuse(len)`'s
/// buffer when it gives one (a recycled replica's, already faulted in);
/// otherwise the vector grows as bytes arrive, so a header claiming more
/// than the input holds costs at most one step, not its claimed length.
pub(crate) fn decode_bytes_reusing(
    r: &mut dyn Read,
    reuse: &dyn Fn(usize) -> Option<Vec<u8>>,
) -> Result<Value, String> {
    let mut head = [0u8; 1];
    r.read_exact(&mut head).map_err(|e| format!("byte string header: {e}"))?;
    let extra = match head[0] {
        0x40..=0x57 => Some((head[0] - 0x40) as u64),
        0x58 => Some(read_be(r, 1)?),
        0x59 => Some(read_be(r, 2)?),
        0x5a => Some(read_be(r, 4)?),
        0x5b => Some(read_be(r, 8)?),
        _ => None,
    };
    let Some(len) = extra else {
        let mut chained = std::io::Read::chain(&head[..], r);
        let v: serde_bytes::ByteBuf = ciborium::from_reader(&mut chained).map_err(|e| e.to_string())?;
        return Ok(Value::new(v.into_vec()));
    };
    if let Some(mut v) = usize::try_from(len).ok().and_then(reuse) {
        // Its old bytes are initialized: only a longer tail is zeroed.
        v.resize(len as usize, 0);
        return match r.read_exact(&mut v) {
            Ok(()) => Ok(Value::new(v)),
            Err(e) => Err(format!("byte string of {len} bytes truncated: {e}")),
        };
    }
    if (PREFAULT_FROM..=PREFAULT_UP_TO).contains(&len) {
        return read_prefaulted(r, len as usize).map(Value::new);
    }
    // Grow in bounded steps, each reserved exactly (no doubling past the
    // claimed length).
    const STEP: u64 = 64 << 20;
    let mut v = Vec::new();
    let mut got = 0u64;
    while got < len {
        let step = (len - got).min(STEP);
        v.try_reserve_exact(step as usize).map_err(|e| format!("byte string of {len} bytes: {e}"))?;
        let n = r.take(step).read_to_end(&mut v).map_err(|e| e.to_string())? as u64;
        got += n;
        if n < step {
            return Err(format!("byte string truncated: {got} of {len} bytes"));
        }
    }
    Ok(Value::new(v))
}

/// Byte strings from this long (and up to [`PREFAULT_UP_TO`]) are read
/// by [`read_prefaulted`].
const PREFAULT_FROM: u64 = 16 << 20;

/// Longest byte string read by [`read_prefaulted`]: its whole length is
/// allocated at once (as address space only: see there).
const PREFAULT_UP_TO: u64 = 1 << 30;

/// Pages a helper thread faults in ahead of the reader, a segment at a
/// time (at most [`PREFAULT_AHEAD`] segments ahead).
const PREFAULT_SEGMENT: usize = 4 << 20;
const PREFAULT_AHEAD: usize = 2;

/// Reads a byte string of `len` bytes into fresh memory, with its page
/// faults taken by a helper thread ahead of the reader instead of by the
/// reader, in series with the reading (each 4 KiB page of a new buffer
/// costs a fault and the kernel's zeroing the first time it is written:
/// about half the time of a transfer into fresh memory). The vector is
/// allocated zeroed (`calloc`: mapped lazily, nothing touched), cut into
/// segments; the helper has the kernel populate each segment in one call
/// ([`populate`]; where it cannot, it writes one byte per page, a zero
/// over a zero) and passes it on, and the reader fills the segments in
/// order as they come. Disjoint `&mut` borrows, so no byte is written by
/// both. The helper runs at most [`PREFAULT_AHEAD`] segments ahead, so a
/// header claiming more than the input holds costs its address space and
/// a few segments of memory, not its claimed length.
fn read_prefaulted(r: &mut dyn Read, len: usize) -> Result<Vec<u8>, String> {
    const PAGE: usize = 4096;
    // The length comes from a peer: an allocation that cannot be made is
    // an error, not an abort. `vec!` cannot fail softly, so ask first with
    // a fallible reservation of the same size (mapped, never touched).
    Vec::<u8>::new().try_reserve_exact(len).map_err(|e| format!("byte string of {len} bytes: {e}"))?;
    let mut v = vec![0u8; len];
    let buf: &mut [u8] = &mut v;
    let read = std::thread::scope(|scope| {
        let (to_reader, from_helper) = std::sync::mpsc::sync_channel::<&mut [u8]>(PREFAULT_AHEAD);
        let helper = std::thread::Builder::new().name("manta-prefault".into()).spawn_scoped(scope, move || {
            for seg in buf.chunks_mut(PREFAULT_SEGMENT) {
                if !populate(seg) {
                    for page in seg.chunks_mut(PAGE) {
                        page[0] = std::hint::black_box(0);
                    }
                }
                if to_reader.send(seg).is_err() {
                    return; // the reader stopped (short input)
                }
            }
        });
        let mut got = 0;
        if helper.is_err() {
            // No thread: the reader takes the faults itself, as before.
            return Err(None);
        }
        for seg in from_helper.iter() {
            r.read_exact(seg).map_err(|e| Some(format!("byte string truncated after {got} of {len} bytes: {e}")))?;
            got += seg.len();
        }
        Ok(())
    });
    match read {
        Ok(()) => Ok(v),
        Err(Some(e)) => Err(e),
        Err(None) => match r.read_exact(&mut v) {
            Ok(()) => Ok(v),
            Err(e) => Err(format!("byte string of {len} bytes truncated: {e}")),
        },
    }
}

/// Has the kernel fault in (and zero) every page of `buf` in one call
/// (`MADV_POPULATE_WRITE`, Linux 5.14+), instead of one trap per 4 KiB
/// page: the same zeroing for less CPU. False if it could not (then the
/// caller touches the pages). `buf`'s contents are unchanged: populating
/// a page that is already present is a no-op.
#[allow(unsafe_code)]
fn populate(buf: &mut [u8]) -> bool {
    #[cfg(target_os = "linux")]
    {
        const PAGE: usize = 4096;
        let start = buf.as_mut_ptr() as usize;
        let first = start.next_multiple_of(PAGE);
        let end = (start + buf.len()) / PAGE * PAGE;
        if end <= first {
            return false;
        }
        // SAFETY: [first, end) lies inside `buf`, which this thread
        // borrows mutably, so no other thread reads or writes it;
        // MADV_POPULATE_WRITE only makes its pages present and writable
        // (a present page keeps its bytes, an absent one of this zeroed
        // allocation reads as zero either way) and touches no Rust object.
        // (The partial pages at the edges, if any, fault when written.)
        let r = unsafe { libc::madvise(first as *mut libc::c_void, end - first, libc::MADV_POPULATE_WRITE) };
        r == 0
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = buf;
        false
    }
}

fn read_be(r: &mut dyn Read, n: usize) -> Result<u64, String> {
    let mut b = [0u8; 8];
    r.read_exact(&mut b[8 - n..]).map_err(|e| format!("byte string length: {e}"))?;
    Ok(u64::from_be_bytes(b))
}

/// How to write a `T` as CBOR: its registered codec (so `Vec<u8>` is one
/// byte string) or plain serde.
pub(crate) fn encoder_of<T: Serialize + Any>() -> Encode {
    match lookup(TypeId::of::<T>()).and_then(|i| i.codec) {
        Some((encode, _)) => encode,
        None => encode_cbor::<T>,
    }
}

/// How to read a `T` back: the counterpart of [`encoder_of`].
pub(crate) fn decoder_of<T: DeserializeOwned + Any + Send + Sync>() -> Decode {
    match lookup(TypeId::of::<T>()).and_then(|i| i.codec) {
        Some((_, decode)) => decode,
        None => decode_cbor::<T>,
    }
}

type Registry = RwLock<HashMap<TypeId, TypeInfo>>;

fn registry() -> &'static Registry {
    static REG: OnceLock<Registry> = OnceLock::new();
    REG.get_or_init(|| {
        let mut m = HashMap::new();
        m.insert(
            TypeId::of::<Vec<u8>>(),
            TypeInfo { heap_size: heap_of::<Vec<u8>>, codec: Some((encode_bytes, decode_bytes)) },
        );
        macro_rules! std_types {
            ($($t:ty),*) => {$(
                m.insert(TypeId::of::<$t>(), info::<$t>());
            )*};
        }
        std_types!(
            String,
            Vec<String>,
            Vec<i8>, Vec<i16>, Vec<i32>, Vec<i64>, Vec<u16>, Vec<u32>, Vec<u64>, Vec<usize>, Vec<isize>,
            Vec<f32>, Vec<f64>, Vec<bool>, Vec<char>, Vec<Vec<u8>>, Vec<Vec<f64>>, Vec<Vec<i64>>,
            Vec<(String, u64)>, Vec<(String, i64)>, Vec<(String, usize)>,
            HashMap<String, String>, HashMap<String, u64>, HashMap<String, i64>, HashMap<String, usize>,
            HashMap<String, f64>, HashMap<String, Vec<u8>>, HashMap<u64, u64>, HashMap<i64, i64>,
            BTreeMap<String, String>, BTreeMap<String, u64>, BTreeMap<String, i64>, BTreeMap<String, usize>,
            BTreeMap<String, f64>
        );
        RwLock::new(m)
    })
}

fn info<T: HeapSize + Serialize + DeserializeOwned + Any + Send + Sync>() -> TypeInfo {
    TypeInfo { heap_size: heap_of::<T>, codec: Some((encode_cbor::<T>, decode_cbor::<T>)) }
}

/// Bumped by every registration; thread-local caches older than it are
/// dropped, so a type registered on one thread is seen by all.
static GENERATION: AtomicU64 = AtomicU64::new(0);

type Cache = (u64, HashMap<TypeId, Option<TypeInfo>>);

thread_local! {
    static CACHE: std::cell::RefCell<Cache> = std::cell::RefCell::new((0, HashMap::new()));
}

/// Registers `T`'s heap size with the store (not spillable).
pub fn register<T: HeapSize + Any + Send + Sync>() {
    insert(TypeId::of::<T>(), TypeInfo { heap_size: heap_of::<T>, codec: None });
}

/// Registers `T`'s heap size and makes it spillable (CBOR on disk).
pub fn register_spillable<T: HeapSize + Serialize + DeserializeOwned + Any + Send + Sync>() {
    insert(TypeId::of::<T>(), info::<T>());
}

fn insert(id: TypeId, info: TypeInfo) {
    match registry().write() {
        Ok(mut m) => m.insert(id, info),
        Err(p) => p.into_inner().insert(id, info),
    };
    GENERATION.fetch_add(1, Ordering::Release);
}

/// What the registry knows about `T` (thread-locally cached).
pub(crate) fn lookup(id: TypeId) -> Option<TypeInfo> {
    let generation = GENERATION.load(Ordering::Acquire);
    let hit = CACHE.with(|c| {
        let mut c = c.borrow_mut();
        if c.0 != generation {
            *c = (generation, HashMap::new());
        }
        c.1.get(&id).copied()
    });
    if let Some(hit) = hit {
        return hit;
    }
    let found = match registry().read() {
        Ok(m) => m.get(&id).copied(),
        Err(p) => p.into_inner().get(&id).copied(),
    };
    CACHE.with(|c| c.borrow_mut().1.insert(id, found));
    found
}

/// The bytes a stored value is charged: its inline size plus its heap use.
pub(crate) fn charged_size<T: Any + Send + Sync>(v: &T) -> (usize, Option<TypeInfo>) {
    let info = lookup(TypeId::of::<T>());
    let heap = info.map_or(0, |i| (i.heap_size)(v));
    (std::mem::size_of::<T>() + heap, info)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vec_u8_counts_its_bytes() {
        let v = vec![0u8; 1 << 20];
        let (n, info) = charged_size(&v);
        assert!(info.is_some_and(|i| i.codec.is_some()));
        assert!((1 << 20..(1 << 20) + 64).contains(&n));
    }

    #[test]
    fn unregistered_type_counts_inline_size() {
        struct Opaque(#[allow(dead_code)] Vec<u8>);
        let (n, info) = charged_size(&Opaque(vec![0; 1000]));
        assert!(info.is_none());
        assert_eq!(n, std::mem::size_of::<Opaque>());
    }

    #[test]
    fn registered_type_counts_heap() {
        struct Big(Vec<u64>);
        impl HeapSize for Big {
            fn heap_size(&self) -> usize {
                self.0.heap_size()
            }
        }
        register::<Big>();
        let (n, info) = charged_size(&Big(vec![0; 1000]));
        assert!(info.is_some_and(|i| i.codec.is_none()));
        assert_eq!(n, 8000 + std::mem::size_of::<Big>());
    }

    /// A CBOR byte string header for `len` bytes (8-byte length).
    fn header(len: u64) -> Vec<u8> {
        let mut h = vec![0x5b];
        h.extend_from_slice(&len.to_be_bytes());
        h
    }

    #[test]
    fn long_byte_string_is_read_whole_past_its_prefaulted_segments() {
        // Longer than the threshold, and not a whole number of segments.
        let len = PREFAULT_FROM as usize + PREFAULT_SEGMENT + 12_345;
        let body: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
        let mut input = header(len as u64);
        input.extend_from_slice(&body);
        let v = decode_bytes_reusing(&mut &input[..], &|_| None).expect("decodes");
        let got = v.downcast::<Vec<u8>>().expect("a Vec<u8>");
        assert!(*got == body, "the bytes differ");
    }

    #[test]
    fn populating_keeps_every_byte() {
        let mut v: Vec<u8> = (0..5 * 4096 + 100).map(|i| (i % 251) as u8).collect();
        let before = v.clone();
        // Unaligned at both ends, over pages that are already present.
        populate(&mut v[17..4 * 4096 + 50]);
        assert!(v == before, "populate changed bytes");
        // Fresh zeroed memory stays zero.
        let mut fresh = vec![0u8; 8 << 20];
        populate(&mut fresh);
        assert!(fresh.iter().all(|&b| b == 0));
    }

    #[test]
    fn long_byte_string_cut_short_is_an_error() {
        let len = PREFAULT_FROM as usize * 2;
        let mut input = header(len as u64);
        input.extend(std::iter::repeat_n(7u8, PREFAULT_SEGMENT * 3 + 10));
        let Err(e) = decode_bytes_reusing(&mut &input[..], &|_| None) else { panic!("a truncated string decoded") };
        assert!(e.contains("truncated"), "{e}");
    }
}
