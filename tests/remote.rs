//! The cluster hook without a network: a backend that fetches from another
//! runtime in the same process through `serve_object`, in small chunks, as a
//! node does over the wire.

use manta::backend::{Fetch, RemoteBackend, Served};
use manta::{Error, ObjectRef, Runtime};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// Serves fetches from `source`, `chunk` bytes at a time.
struct Loopback {
    source: Mutex<Option<Runtime>>,
    chunk: usize,
    fetches: AtomicUsize,
    exported: Mutex<Vec<manta::ObjectId>>,
    freed: Mutex<Vec<manta::ObjectId>>,
}

impl Loopback {
    fn new(source: Option<Runtime>, chunk: usize) -> Arc<Loopback> {
        Arc::new(Loopback {
            source: Mutex::new(source),
            chunk,
            fetches: AtomicUsize::new(0),
            exported: Mutex::new(Vec::new()),
            freed: Mutex::new(Vec::new()),
        })
    }
}

/// Reads an object from a runtime window by window.
struct ChunkReader {
    rt: Runtime,
    id: manta::ObjectId,
    chunk: usize,
    offset: u64,
    buf: Vec<u8>,
    pos: usize,
}

impl std::io::Read for ChunkReader {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        while self.pos == self.buf.len() {
            match self.rt.backend().serve_object(self.id, self.offset, self.chunk) {
                Served::Chunk { data, .. } if data.is_empty() => return Ok(0), // past the end
                Served::Chunk { data, .. } => {
                    self.offset += data.len() as u64;
                    self.buf = data;
                    self.pos = 0;
                }
                // Its task is still running on the source: wait for it.
                Served::Pending => futures_executor::block_on(self.rt.backend().object_done(self.id)),
                other => return Err(std::io::Error::other(format!("{other:?}"))),
            }
        }
        let n = out.len().min(self.buf.len() - self.pos);
        out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

impl RemoteBackend for Loopback {
    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
    fn owner_hint(&self) -> Arc<[u8]> {
        Arc::from(&b"loopback"[..])
    }
    fn exported(&self, id: manta::ObjectId, _replica: bool) {
        self.exported.lock().unwrap().push(id);
    }
    fn freed(&self, id: manta::ObjectId) {
        self.freed.lock().unwrap().push(id);
    }
    fn fetch(&self, fetch: Fetch) {
        self.fetches.fetch_add(1, Ordering::SeqCst);
        assert_eq!(fetch.owner_hint(), b"loopback");
        let Some(rt) = self.source.lock().unwrap().clone() else {
            let id = fetch.id();
            return fetch.complete(Err(Error::ObjectLost { id, reason: "no source".into() }));
        };
        let chunk = self.chunk;
        std::thread::spawn(move || {
            let mut r = ChunkReader { rt, id: fetch.id(), chunk, offset: 0, buf: Vec::new(), pos: 0 };
            let decoded =
                fetch.decode(&mut r).map_err(|e| Error::ObjectLost { id: fetch.id(), reason: e.to_string().into() });
            fetch.complete(decoded);
        });
    }
}

fn pair(chunk: usize) -> (Runtime, Runtime, Arc<Loopback>, Arc<Loopback>) {
    let a = Runtime::builder().num_cpus(1).build().unwrap();
    let b = Runtime::builder().num_cpus(1).build().unwrap();
    let la = Loopback::new(None, chunk);
    let lb = Loopback::new(Some(a.clone()), chunk);
    a.backend().attach(la.clone());
    b.backend().attach(lb.clone());
    (a, b, la, lb)
}

fn to_bytes<T: serde::Serialize>(rt: &Runtime, v: &T) -> Vec<u8> {
    let mut out = Vec::new();
    let _entered = rt.enter();
    ciborium::into_writer(v, &mut out).unwrap();
    out
}

fn from_bytes<T: serde::de::DeserializeOwned>(rt: &Runtime, b: &[u8]) -> T {
    let _entered = rt.enter();
    ciborium::from_reader(b).unwrap()
}

#[test]
fn a_ref_crosses_runtimes_and_is_fetched_in_chunks_once() {
    let (a, b, la, lb) = pair(1000);
    let data: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
    let r = a.put(data.clone()).unwrap();
    let wire = to_bytes(&a, &r);
    assert_eq!(la.exported.lock().unwrap().as_slice(), &[r.id()]);
    let rb: ObjectRef<Vec<u8>> = from_bytes(&b, &wire);
    assert_eq!(rb.id(), r.id());
    assert!(!rb.is_ready(), "nothing moves before a reader asks");
    assert_eq!(lb.fetches.load(Ordering::SeqCst), 0);
    assert_eq!(*rb.get().unwrap(), data);
    // A second deserialization shares the replica; no second fetch.
    let rb2: ObjectRef<Vec<u8>> = from_bytes(&b, &wire);
    assert_eq!(*rb2.get().unwrap(), data);
    assert_eq!(lb.fetches.load(Ordering::SeqCst), 1);
    assert!(b.backend().holds_object(r.id()), "the replica is served by b too");
    assert_eq!(lb.exported.lock().unwrap().as_slice(), &[r.id()]);
    assert!(b.store_stats().bytes_in_memory >= 100_000, "the replica is charged");
    drop((rb, rb2));
    // The thread that completed the fetch may hold the object a moment
    // longer than the reader that it woke.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while lb.freed.lock().unwrap().is_empty() {
        assert!(std::time::Instant::now() < deadline, "the replica was never freed");
        std::thread::yield_now();
    }
    assert_eq!(lb.freed.lock().unwrap().as_slice(), &[r.id()], "freeing the replica withdraws it");
    assert!(!b.backend().holds_object(r.id()));
    assert_eq!(b.store_stats().bytes_in_memory, 0);
    drop(r);
    assert_eq!(la.freed.lock().unwrap().as_slice(), &[wire_id(&a, &wire)]);
}

fn wire_id(rt: &Runtime, wire: &[u8]) -> manta::ObjectId {
    // Deserializing in the owner's runtime after the object is gone makes a
    // fresh remote cell; only its id is used here.
    let r: ObjectRef<Vec<u8>> = from_bytes(rt, wire);
    r.id()
}

#[test]
fn a_ref_deserialized_where_it_lives_is_the_same_object() {
    let (a, _b, _la, _lb) = pair(64);
    let r = a.put(String::from("here")).unwrap();
    let again: ObjectRef<String> = from_bytes(&a, &to_bytes(&a, &r));
    assert!(again.is_ready());
    assert_eq!(*again.get().unwrap(), "here");
}

#[test]
fn structured_values_and_task_results_cross() {
    let (a, b, _la, _lb) = pair(7);
    let t = a.spawn(|| (0..1000u64).map(|i| (i.to_string(), i)).collect::<Vec<(String, u64)>>());
    let wire = to_bytes(&a, &t);
    let rb: ObjectRef<Vec<(String, u64)>> = from_bytes(&b, &wire);
    let v = rb.get().unwrap();
    assert_eq!(v.len(), 1000);
    assert_eq!(v[999], ("999".to_string(), 999));
    // A remote ref as a task argument is fetched before the task runs.
    let n = b.spawn_with((rb.clone(),), |(v,)| v.iter().map(|x| x.1).sum::<u64>());
    assert_eq!(*n.get().unwrap(), 999 * 1000 / 2);
}

#[test]
fn wait_and_async_demand_the_fetch() {
    let (a, b, _la, _lb) = pair(16);
    let wire = to_bytes(&a, &a.put(vec![1u64, 2, 3]).unwrap());
    let keep = a.put(0u8).unwrap();
    let r1: ObjectRef<Vec<u64>> = from_bytes(&b, &wire);
    let (ready, rest) = b.wait(std::slice::from_ref(&r1), 1, None).unwrap();
    assert_eq!((ready.len(), rest.len()), (1, 0));
    drop(keep);
    let r2: ObjectRef<Vec<u64>> = from_bytes(&b, &to_bytes(&a, &a.put(vec![4u64]).unwrap()));
    // The source object was freed already: the fetch fails cleanly.
    let e = futures_executor::block_on(r2.into_future_compat()).unwrap_err();
    assert!(matches!(e, Error::ObjectLost { .. }), "{e}");
}

trait Compat<T> {
    fn into_future_compat(self) -> manta::RefFuture<T>;
}
impl<T: Send + Sync + 'static> Compat<T> for ObjectRef<T> {
    fn into_future_compat(self) -> manta::RefFuture<T> {
        std::future::IntoFuture::into_future(self)
    }
}

#[test]
fn wrong_type_fails_the_fetch_with_a_clear_error() {
    let (a, b, _la, _lb) = pair(64);
    let r = a.put(String::from("text")).unwrap();
    let wire = to_bytes(&a, &r);
    let wrong: ObjectRef<Vec<u64>> = from_bytes(&b, &wire);
    let e = wrong.get().unwrap_err();
    assert!(matches!(e, Error::ObjectLost { .. }), "{e}");
}

#[test]
fn without_a_backend_a_remote_ref_fails_instead_of_hanging() {
    let a = Runtime::builder().num_cpus(1).build().unwrap();
    let b = Runtime::builder().num_cpus(1).build().unwrap();
    let wire = to_bytes(&a, &a.put(5u64).unwrap());
    let r: ObjectRef<u64> = from_bytes(&b, &wire);
    assert!(matches!(r.get(), Err(Error::PeerUnreachable { .. })));
}

#[test]
fn malformed_refs_are_serde_errors() {
    let b = Runtime::builder().num_cpus(1).build().unwrap();
    for bad in [&b"\xff\x00"[..], b"", b"\xa2\x62id\x01"] {
        let _entered = b.enter();
        let r: Result<ObjectRef<u64>, _> = ciborium::from_reader(bad);
        assert!(r.is_err());
    }
    #[derive(serde::Serialize)]
    struct Big {
        id: (u64, u64),
        #[serde(with = "serde_bytes")]
        owner: Vec<u8>,
    }
    let mut wire = Vec::new();
    ciborium::into_writer(&Big { id: (1, 2), owner: vec![0; 5000] }, &mut wire).unwrap();
    let _entered = b.enter();
    let r: Result<ObjectRef<u64>, _> = ciborium::from_reader(&wire[..]);
    assert!(r.is_err(), "an oversized hint is refused");
}

#[test]
fn tasks_and_actor_calls_taking_a_remote_ref_fetch_it() {
    let (a, b, _la, _lb) = pair(64);
    let (five, one) = (a.put(vec![5u32; 1000]).unwrap(), a.put(vec![1u32; 10]).unwrap());
    let wire = to_bytes(&a, &five);
    // Nothing reads the ref but a task: the task's input demands it.
    let there: ObjectRef<Vec<u32>> = from_bytes(&b, &wire);
    let sum = b.spawn_with((there,), |(v,)| v.iter().sum::<u32>());
    assert_eq!(*sum.get().unwrap(), 5000);
    let there: ObjectRef<Vec<u32>> = from_bytes(&b, &to_bytes(&a, &one));
    let counter = b.actor(0u32);
    let n = counter.call_with((there,), |n, (v,)| {
        *n += v.len() as u32;
        *n
    });
    assert_eq!(*n.get().unwrap(), 10);
}

#[test]
fn collect_serialized_sees_the_refs_serialized_inside_it_only() {
    let rt = Runtime::builder().num_cpus(1).build().unwrap();
    let (x, y) = (rt.put(1u32).unwrap(), rt.put(2u32).unwrap());
    let (bytes, outer) = manta::backend::collect_serialized(|| {
        let first = to_bytes(&rt, &x);
        // A nested collection gets its own refs, and the outer one resumes.
        let ((), inner) = manta::backend::collect_serialized(|| drop(to_bytes(&rt, &y)));
        assert_eq!(inner.iter().map(|r| r.id()).collect::<Vec<_>>(), vec![y.id()]);
        first
    });
    assert!(!bytes.is_empty());
    assert_eq!(outer.iter().map(|r| r.id()).collect::<Vec<_>>(), vec![x.id()]);
    // Outside any collection nothing is kept, also after a panic inside one.
    let caught = std::panic::catch_unwind(|| manta::backend::collect_serialized(|| panic!("inside")));
    assert!(caught.is_err());
    let ((), after) = manta::backend::collect_serialized(|| ());
    assert!(after.is_empty());
    // The handles keep the objects alive.
    let id = x.id();
    drop(x);
    assert!(outer[0].id() == id && outer[0].is_ready());
}

/// Waits until `lb` has heard of `n` frees (the thread that completed a
/// fetch may hold the object a moment after the reader that it woke).
fn wait_freed(lb: &Loopback, n: usize) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while lb.freed.lock().unwrap().len() < n {
        assert!(std::time::Instant::now() < deadline, "the replica was never freed");
        std::thread::yield_now();
    }
}

/// Fetches a fresh `n`-byte object from `a` into `b`.
fn replica(a: &Runtime, b: &Runtime, n: usize, seed: u8) -> (ObjectRef<Vec<u8>>, ObjectRef<Vec<u8>>) {
    let r = a.put((0..n).map(|i| (i % 251) as u8 ^ seed).collect::<Vec<u8>>()).unwrap();
    let rb: ObjectRef<Vec<u8>> = from_bytes(b, &to_bytes(a, &r));
    assert_eq!(rb.get().unwrap().len(), n);
    (r, rb)
}

#[test]
fn a_freed_replicas_buffer_is_reused_by_the_next_replica() {
    const N: usize = 3 << 20;
    let (a, b, _la, lb) = pair(1 << 20);
    // A local object's buffer is never pooled.
    drop(b.put(vec![7u8; N]).unwrap());
    assert_eq!(b.store_stats().bytes_recycled, 0);
    // A freed replica's is.
    let (r1, rb1) = replica(&a, &b, N, 1);
    let ptr = rb1.get().unwrap().as_ptr() as usize;
    drop(rb1);
    wait_freed(&lb, 1);
    assert_eq!(b.store_stats().bytes_recycled, N);
    assert_eq!(b.store_stats().bytes_in_memory, 0, "a pooled buffer is not an object");
    // The next replica of that size is written into it, with its own bytes.
    let (r2, rb2) = replica(&a, &b, N, 2);
    let got = rb2.get().unwrap();
    assert_eq!(got.as_ptr() as usize, ptr, "the replica reuses the freed buffer");
    assert_eq!(*got, *r2.get().unwrap());
    assert_eq!(b.store_stats().bytes_recycled, 0);
    // Freed while a reader still holds the value: not pooled, not touched.
    drop(rb2);
    wait_freed(&lb, 2);
    assert_eq!(b.store_stats().bytes_recycled, 0);
    assert_eq!(*got, *r2.get().unwrap());
    drop((r1, r2));
}

#[test]
fn pooled_buffers_stay_under_the_recycle_cap_and_give_way_to_puts() {
    const N: usize = 4 << 20;
    let a = Runtime::builder().num_cpus(1).build().unwrap();
    a.backend().attach(Loopback::new(None, 1 << 20));
    let cap = 10 << 20;
    let b = Runtime::builder()
        .num_cpus(1)
        .store_capacity(cap)
        .recycle_capacity(5 << 20)
        .put_timeout(std::time::Duration::from_millis(50))
        .build()
        .unwrap();
    let lb = Loopback::new(Some(a.clone()), 1 << 20);
    b.backend().attach(lb.clone());
    let (x, y) = (replica(&a, &b, N, 1), replica(&a, &b, N, 2));
    drop(x.1);
    wait_freed(&lb, 1);
    assert_eq!(b.store_stats().bytes_recycled, N);
    drop(y.1);
    wait_freed(&lb, 2);
    assert_eq!(b.store_stats().bytes_recycled, N, "a second 4 MiB is over the 5 MiB recycle cap");
    // 7 MiB fit only without the pooled 4 MiB: the pool gives way, and
    // nothing is evicted or spilled for it.
    let big = b.put(vec![2u8; 7 << 20]).expect("the pool gives way to a put");
    let s = b.store_stats();
    assert_eq!((s.bytes_recycled, s.evictions, s.spills), (0, 0, 0), "{s:?}");
    assert!(s.bytes_in_memory + s.bytes_recycled <= cap);
    drop(big);

    // Recycling off: nothing is kept.
    let c = Runtime::builder().num_cpus(1).recycle_capacity(0).build().unwrap();
    let lc = Loopback::new(Some(a.clone()), 1 << 20);
    c.backend().attach(lc.clone());
    drop(replica(&a, &c, N, 3).1);
    wait_freed(&lc, 1);
    assert_eq!(c.store_stats().bytes_recycled, 0);
    drop((x.0, y.0));
}
