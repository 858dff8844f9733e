//! async and callbacks: an `ObjectRef` (owned or borrowed) can be awaited on
//! any executor (it is `IntoFuture`; `block_on` takes `r.into_future()`); a pending future is woken when another task completes the
//! object; dropping a pending future removes its registration; `on_ready`
//! fires exactly once, at once on the caller's thread if the object is done,
//! otherwise on the thread that completes it.

use futures_executor::block_on;
use manta::{Error, Runtime};
use std::future::{Future, IntoFuture};
use std::pin::pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

const LONG: Duration = Duration::from_secs(10);

fn rt(cpus: usize) -> Runtime {
    Runtime::builder().num_cpus(cpus).build().expect("runtime")
}

/// A waker that counts its wake-ups and reports each on a channel.
struct ChannelWaker {
    wakes: AtomicUsize,
    tx: Mutex<mpsc::Sender<()>>,
}

impl Wake for ChannelWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref()
    }
    fn wake_by_ref(self: &Arc<Self>) {
        self.wakes.fetch_add(1, Ordering::SeqCst);
        let _ = self.tx.lock().unwrap().send(());
    }
}

fn channel_waker() -> (Arc<ChannelWaker>, mpsc::Receiver<()>) {
    let (tx, rx) = mpsc::channel();
    (Arc::new(ChannelWaker { wakes: AtomicUsize::new(0), tx: Mutex::new(tx) }), rx)
}

#[test]
fn block_on_owned_and_borrowed_refs() {
    let rt = rt(2);
    let r = rt.spawn(|| vec![1, 2, 3]);
    // `block_on` takes a `Future`; `ObjectRef` and `&ObjectRef` are `IntoFuture`.
    assert_eq!(*block_on((&r).into_future()).unwrap(), [1, 2, 3]);
    assert_eq!(*block_on(r.clone().into_future()).unwrap(), [1, 2, 3]);
    assert_eq!(*block_on(async { r.await }).unwrap(), [1, 2, 3]);
    let p = rt.put(String::from("put")).unwrap();
    assert_eq!(block_on((&p).into_future()).unwrap().as_str(), "put");
    // Inside an async block, with errors as values.
    let failed = rt.spawn(|| -> u8 { panic!("async failure") });
    let wrong = rt.put(1u8).unwrap().untyped().typed::<u16>();
    let out = block_on(async {
        let a = p.await.unwrap();
        let b = (&failed).await;
        let c = wrong.await;
        (a.len(), b.unwrap_err().is_panic(), matches!(c, Err(Error::WrongType { .. })))
    });
    assert_eq!(out, (3, true, true));
}

#[test]
fn a_pending_future_is_woken_when_another_task_completes_it() {
    let rt = rt(2);
    let (release, rx) = mpsc::channel::<u32>();
    let pending = rt.spawn(move || rx.recv().unwrap_or(0));
    let (waker, woken) = channel_waker();
    let mut fut = pin!((&pending).into_future());
    let w = Waker::from(waker.clone());
    let mut cx = Context::from_waker(&w);
    assert!(fut.as_mut().poll(&mut cx).is_pending());
    // Polling again while pending (the executor may do so) keeps one registration.
    assert!(fut.as_mut().poll(&mut cx).is_pending());
    // Another task completes the object.
    let releaser = rt.spawn(move || release.send(7).is_ok());
    assert!(*releaser.get().unwrap());
    woken.recv_timeout(LONG).expect("the future was woken");
    match fut.as_mut().poll(&mut cx) {
        Poll::Ready(Ok(v)) => assert_eq!(*v, 7),
        other => panic!("expected Ready(Ok(7)), got {other:?}"),
    }
    assert_eq!(waker.wakes.load(Ordering::SeqCst), 1, "woken exactly once");

    // block_on on a ref that another task completes later.
    let (release, rx) = mpsc::channel::<u32>();
    let pending = rt.spawn(move || rx.recv().unwrap_or(0));
    rt.spawn(move || {
        std::thread::sleep(Duration::from_millis(10)); // usually after block_on has parked
        release.send(9).is_ok()
    });
    assert_eq!(*block_on(pending.into_future()).unwrap(), 9);
}

#[test]
fn dropping_a_pending_future_deregisters() {
    let rt = rt(2);
    let (release, rx) = mpsc::channel::<u32>();
    let pending = rt.spawn(move || rx.recv().unwrap_or(0));
    let (waker, woken) = channel_waker();
    {
        let mut fut = pin!((&pending).into_future());
        let w = Waker::from(waker.clone());
        let mut cx = Context::from_waker(&w);
        assert!(fut.as_mut().poll(&mut cx).is_pending());
        assert!(Arc::strong_count(&waker) >= 2, "the slot holds the waker while the future is pending");
    }
    assert_eq!(Arc::strong_count(&waker), 1, "dropping the future released its waker");
    release.send(3).unwrap();
    assert_eq!(*pending.get().unwrap(), 3);
    assert!(woken.try_recv().is_err());
    assert_eq!(waker.wakes.load(Ordering::SeqCst), 0, "a dropped future is never woken");

    // Many futures created and dropped on one pending ref leave nothing behind.
    let (release, rx) = mpsc::channel::<u32>();
    let pending = rt.spawn(move || rx.recv().unwrap_or(0));
    let (waker, _woken) = channel_waker();
    for _ in 0..1_000 {
        let mut fut = pin!(pending.clone().into_future());
        let w = Waker::from(waker.clone());
        let mut cx = Context::from_waker(&w);
        assert!(fut.as_mut().poll(&mut cx).is_pending());
    }
    assert_eq!(Arc::strong_count(&waker), 1);
    release.send(4).unwrap();
    assert_eq!(*pending.get().unwrap(), 4);
    assert_eq!(waker.wakes.load(Ordering::SeqCst), 0);
}

#[test]
fn on_ready_on_a_done_object_fires_at_once_on_this_thread() {
    let rt = rt(2);
    let r = rt.put(11u32).unwrap();
    let fired = Arc::new(Mutex::new(Vec::new()));
    let f = fired.clone();
    r.on_ready(move |v| f.lock().unwrap().push((*v.unwrap(), std::thread::current().id())));
    let got = fired.lock().unwrap().clone();
    assert_eq!(got, [(11, std::thread::current().id())], "fired once, before on_ready returned");

    // A failed object hands the error to the callback.
    let failed = rt.spawn(|| -> u32 { panic!("callback gets this") });
    assert!(failed.get().is_err());
    let (tx, rx) = mpsc::channel();
    failed.on_ready(move |v| tx.send(v.map(|v| *v)).unwrap());
    assert!(rx.try_recv().unwrap().unwrap_err().is_panic());
}

#[test]
fn on_ready_on_a_pending_object_fires_once_on_the_completing_thread() {
    let rt = rt(2);
    let (release, rx) = mpsc::channel::<u32>();
    let (worker_tx, worker) = mpsc::channel();
    let pending = rt.spawn(move || {
        let v = rx.recv().unwrap_or(0);
        worker_tx.send(std::thread::current().id()).unwrap();
        v
    });
    let calls = Arc::new(AtomicUsize::new(0));
    let (fired_tx, fired) = mpsc::channel();
    let c = calls.clone();
    pending.on_ready(move |v| {
        c.fetch_add(1, Ordering::SeqCst);
        fired_tx.send((v.map(|v| *v), std::thread::current().id())).unwrap();
    });
    assert!(fired.try_recv().is_err(), "not fired while pending");
    release.send(5).unwrap();
    let (value, thread) = fired.recv_timeout(LONG).expect("callback fired");
    assert_eq!(value.unwrap(), 5);
    assert_eq!(thread, worker.recv_timeout(LONG).unwrap(), "fired on the thread that completed the object");
    assert_ne!(thread, std::thread::current().id());
    assert_eq!(*pending.get().unwrap(), 5);
    assert!(fired.try_recv().is_err(), "fired only once");
    assert_eq!(calls.load(Ordering::SeqCst), 1);

    // Many callbacks on one object each fire once.
    let (release, rx) = mpsc::channel::<u32>();
    let pending = rt.spawn(move || rx.recv().unwrap_or(0));
    let total = Arc::new(AtomicUsize::new(0));
    let (done_tx, done) = mpsc::channel();
    for _ in 0..100 {
        let (t, d) = (total.clone(), done_tx.clone());
        pending.on_ready(move |v| {
            t.fetch_add(*v.unwrap() as usize, Ordering::SeqCst);
            d.send(()).unwrap();
        });
    }
    release.send(2).unwrap();
    for _ in 0..100 {
        done.recv_timeout(LONG).expect("every callback fired");
    }
    assert_eq!(total.load(Ordering::SeqCst), 200);
}
