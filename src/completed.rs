//! Results as they complete: [`as_completed`] over refs (an iterator, and a
//! `Stream` for async code), and [`Runtime::map`] / [`Runtime::map_unordered`]
//! over a collection with a cap on tasks in flight.
//!
//! Refs already done when `as_completed` is called are queued at once,
//! without touching their objects' waiter lists; each other watched object
//! gets one registration (`Waiter::Indexed`: the shared queue and the ref's
//! index, no allocation of its own) that pushes its index onto the queue
//! and wakes the consumer (a parker for the blocking iterator, a waker for
//! the stream). A consumer that blocks inside a task blocks
//! like `get`: it lends its CPUs, runs the producers of what it waits for
//! if they are queued, and hands its place over otherwise, so iterating
//! inside a task never deadlocks.
//!
//! `map` keeps `concurrency` tasks in flight without the consumer's help:
//! each task's completion submits the next item (on the thread that
//! completed it), so a slow consumer never stalls the work. Its tasks form
//! a [`Group`]: cancel it and the rest of the items are never submitted.

use crate::cell::ObjectCell;
use crate::error::Error;
use crate::group::Group;
use crate::notify::{Parker, Waiter};
use crate::refs::ObjectRef;
use crate::runtime::Runtime;
use crate::sync::Arc as ShimArc;
use std::any::Any;
use std::collections::{BTreeMap, VecDeque};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

/// The queue completions go to, and how its consumer is woken.
struct Queue<E> {
    state: Mutex<QueueState<E>>,
    parker: ShimArc<Parker>,
}

struct QueueState<E> {
    ready: VecDeque<E>,
    waker: Option<Waker>,
}

impl<E> Queue<E> {
    fn new() -> Arc<Queue<E>> {
        Queue::with_capacity(0)
    }

    /// A queue with room for `n` entries (no growing while completions
    /// arrive; `as_completed` knows how many will).
    fn with_capacity(n: usize) -> Arc<Queue<E>> {
        let state = QueueState { ready: VecDeque::with_capacity(n), waker: None };
        Arc::new(Queue { state: Mutex::new(state), parker: Parker::new() })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, QueueState<E>> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn push(&self, e: E) {
        let waker = {
            let mut st = self.lock();
            st.ready.push_back(e);
            st.waker.take()
        };
        self.parker.unpark();
        if let Some(w) = waker {
            w.wake();
        }
    }

    /// Queues many at once (one lock, one wake-up).
    fn push_all(&self, es: impl IntoIterator<Item = E>) {
        let waker = {
            let mut st = self.lock();
            let before = st.ready.len();
            st.ready.extend(es);
            if st.ready.len() == before {
                return;
            }
            st.waker.take()
        };
        self.parker.unpark();
        if let Some(w) = waker {
            w.wake();
        }
    }

    fn pop(&self) -> Option<E> {
        self.lock().ready.pop_front()
    }

    fn is_empty(&self) -> bool {
        self.lock().ready.is_empty()
    }

    /// Blocks (as `get` does) until something is queued; `targets` yields
    /// queued producers to run inline.
    fn wait(&self, targets: &mut dyn FnMut() -> Option<Arc<crate::job::Job>>) {
        crate::scheduler::block_until(&self.parker, None, targets, &mut || !self.is_empty());
    }

    /// The stream half: `Ready` if something is queued, else registers the
    /// waker (checking again under the lock, so no push is missed).
    fn poll(&self, cx: &mut Context<'_>) -> Option<E> {
        let mut st = self.lock();
        match st.ready.pop_front() {
            Some(e) => Some(e),
            None => {
                st.waker = Some(cx.waker().clone());
                None
            }
        }
    }

    /// Moves everything queued into `into` (which must be empty; its
    /// buffer is handed to the queue for reuse): one lock per batch.
    fn drain_into(&self, into: &mut VecDeque<E>) {
        std::mem::swap(&mut self.lock().ready, into);
    }
}

impl crate::notify::Indexed for Queue<usize> {
    fn completed(&self, index: u32, _ok: bool) {
        self.push(index as usize);
    }
}

/// Calls `f` once `cell` is done (at once if it is), on the completing
/// thread.
fn when_done(cell: &Arc<ObjectCell>, f: impl FnOnce() + Send + 'static) {
    cell.demand();
    if let Err(w) = cell.slot.register(Waiter::Callback(Box::new(move |_| f()))) {
        w.notify(true);
    }
}

/// Yields refs in the order their objects complete (value or error); see
/// [`as_completed`]. Also a `futures_core::Stream`: with both traits in
/// scope, methods they share (`map`, `collect`, ...) are ambiguous, so
/// name the trait (`futures::StreamExt::next(&mut it).await`,
/// `Iterator::map(it, f)`).
pub struct AsCompleted<T> {
    refs: Vec<Option<ObjectRef<T>>>,
    queue: Arc<Queue<usize>>,
    /// Indices taken from the queue in one batch, not yielded yet.
    batch: VecDeque<usize>,
    left: usize,
    next_target: usize,
    /// The cancellations seen when pending refs were last checked for
    /// cancelled queued producers.
    scanned_epoch: Option<usize>,
}

impl<T> std::fmt::Debug for AsCompleted<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AsCompleted").field("left", &self.left).finish()
    }
}

/// Yields `refs` as their objects complete (Python's `as_completed`, a
/// `ray.wait(num_returns=1)` loop): first the ones already done, in input
/// order, then each as it completes. Blocking `next()` is safe inside
/// tasks; for async code the result is also a `Stream`.
pub fn as_completed<T: Any + Send + Sync>(refs: impl IntoIterator<Item = ObjectRef<T>>) -> AsCompleted<T> {
    let refs: Vec<Option<ObjectRef<T>>> = refs.into_iter().map(Some).collect();
    let queue: Arc<Queue<usize>> = Queue::with_capacity(refs.len());
    let sink: Arc<dyn crate::notify::Indexed> = queue.clone();
    // The ones done now first, in input order; then the others as they
    // complete (one that completes before it is registered goes at once).
    let done: Vec<bool> = refs.iter().map(|r| r.as_ref().is_some_and(|r| r.cell().slot.is_done())).collect();
    queue.push_all(done.iter().enumerate().filter(|(_, d)| **d).map(|(i, _)| i));
    for ((i, r), was_done) in refs.iter().enumerate().zip(done) {
        let Some(cell) = r.as_ref().map(|r| r.cell()).filter(|_| !was_done) else { continue };
        cell.demand();
        let waiter = match u32::try_from(i) {
            Ok(index) => Waiter::Indexed(sink.clone(), index),
            // (Past 2^32 refs, more than any memory holds: a callback.)
            Err(_) => {
                let queue = queue.clone();
                Waiter::Callback(Box::new(move |_| queue.push(i)))
            }
        };
        if cell.slot.register(waiter).is_err() {
            queue.push(i); // completed meanwhile
        }
    }
    let left = refs.len();
    AsCompleted { refs, queue, batch: VecDeque::new(), left, next_target: 0, scanned_epoch: None }
}

impl<T> AsCompleted<T> {
    fn take(&mut self, i: usize) -> Option<ObjectRef<T>> {
        let r = self.refs.get_mut(i)?.take();
        if r.is_some() {
            self.left -= 1;
        }
        r
    }

    /// A queued producer of a pending ref (round-robin), for the waiter.
    fn target(&mut self) -> Option<Arc<crate::job::Job>> {
        let n = self.refs.len();
        for _ in 0..n {
            let i = self.next_target % n;
            self.next_target += 1;
            if let Some(Some(r)) = self.refs.get(i) {
                let c = r.cell();
                if !c.slot.is_done() {
                    if let Some(job) = c.queued_producer() {
                        return Some(job);
                    }
                }
            }
        }
        None
    }

    /// Refs not yielded yet.
    pub fn remaining(&self) -> usize {
        self.left
    }

    /// Yields `(index in the input, ref)` instead of the ref alone.
    pub fn indexed(self) -> Indexed<T> {
        Indexed { inner: self }
    }

    /// The next `(index, ref)` (see [`AsCompleted::indexed`]).
    fn next_indexed(&mut self) -> Option<(usize, ObjectRef<T>)> {
        loop {
            if self.left == 0 {
                return None;
            }
            if let Some(i) = self.batch.pop_front() {
                if let Some(r) = self.take(i) {
                    return Some((i, r));
                }
                continue;
            }
            self.queue.drain_into(&mut self.batch);
            if !self.batch.is_empty() {
                continue;
            }
            // Cancelled tasks still queued behind busy runners end now, not
            // when a runner frees (see `parked`): looked for
            // again only after a new cancellation.
            let parked = crate::parked::ParkedReader::enter();
            let epoch = parked.as_ref().map_or_else(|| crate::parked::global().epoch(), |(_, e)| *e);
            if crate::cancel::any_cancelled() && self.scanned_epoch != Some(epoch) {
                self.scanned_epoch = Some(epoch);
                for r in self.refs.iter().flatten() {
                    if !r.cell().slot.is_done() {
                        r.cell().finish_if_cancelled();
                    }
                }
            }
            let queue = self.queue.clone();
            queue.wait(&mut || self.target());
        }
    }
}

/// [`AsCompleted`] yielding each ref with its index in the input.
#[derive(Debug)]
pub struct Indexed<T> {
    inner: AsCompleted<T>,
}

impl<T> Iterator for Indexed<T> {
    type Item = (usize, ObjectRef<T>);

    fn next(&mut self) -> Option<(usize, ObjectRef<T>)> {
        self.inner.next_indexed()
    }
}

impl<T> Iterator for AsCompleted<T> {
    type Item = ObjectRef<T>;

    fn next(&mut self) -> Option<ObjectRef<T>> {
        self.next_indexed().map(|(_, r)| r)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.left, Some(self.left))
    }
}

impl<T> futures_core::Stream for AsCompleted<T> {
    type Item = ObjectRef<T>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<ObjectRef<T>>> {
        let this = self.get_mut();
        loop {
            if this.left == 0 {
                return Poll::Ready(None);
            }
            if let Some(i) = this.batch.pop_front() {
                if let Some(r) = this.take(i) {
                    return Poll::Ready(Some(r));
                }
                continue;
            }
            match this.queue.poll(cx) {
                Some(i) => {
                    if let Some(r) = this.take(i) {
                        return Poll::Ready(Some(r));
                    }
                }
                None => return Poll::Pending,
            }
        }
    }
}

impl<T> Unpin for AsCompleted<T> {}

/// What feeds a map's tasks: the items left, and the group they run in.
struct Feed<I, R> {
    items: Mutex<Box<dyn Iterator<Item = I> + Send>>,
    run: Arc<dyn Fn(I) -> R + Send + Sync>,
    group: Group,
    queue: Arc<Queue<(usize, ObjectRef<R>)>>,
    /// Items taken from the iterator (each one's index is the count before
    /// it), and whether it is done.
    submitted: std::sync::atomic::AtomicUsize,
    exhausted: std::sync::atomic::AtomicBool,
}

impl<I: Send + 'static, R: Any + Send + Sync> Feed<I, R> {
    /// Submits the next item, if any is left and the group is not
    /// cancelled; its completion submits the one after.
    fn feed_one(self: &Arc<Self>) {
        use std::sync::atomic::Ordering;
        if self.group.is_cancelled() {
            self.exhausted.store(true, Ordering::Release);
            self.queue.parker.unpark();
            return;
        }
        // The index is taken under the same lock as the item: two threads
        // feeding at once must not swap indices.
        let item = {
            let mut items = self.items.lock().unwrap_or_else(|p| p.into_inner());
            items.next().map(|item| (self.submitted.fetch_add(1, Ordering::AcqRel), item))
        };
        let Some((i, item)) = item else {
            self.exhausted.store(true, Ordering::Release);
            self.queue.parker.unpark();
            if let Some(w) = self.queue.lock().waker.take() {
                w.wake();
            }
            return;
        };
        let run = self.run.clone();
        let r = self.group.task().name("map").spawn(move || run(item));
        let (me, done) = (self.clone(), r.clone());
        when_done(r.cell(), move || {
            me.queue.push((i, done));
            me.feed_one();
        });
    }

    /// True once every item was submitted and `yielded` of them were
    /// yielded (all of them).
    fn finished(&self, yielded: usize) -> bool {
        use std::sync::atomic::Ordering;
        self.exhausted.load(Ordering::Acquire) && yielded >= self.submitted.load(Ordering::Acquire)
    }
}

/// The results of [`Runtime::map`], in input order. Dropping it before
/// the last result was yielded cancels the map's group (its tasks not
/// started yet never start), as dropping tokio's `JoinSet` aborts its
/// tasks: read it to the end, or keep it, for every item to run.
#[must_use = "dropping a Map cancels the tasks it has not run yet"]
pub struct Map<R> {
    feed: Arc<dyn MapFeed<R>>,
    buffered: BTreeMap<usize, ObjectRef<R>>,
    next: usize,
}

/// The results of [`Runtime::map_unordered`], as they complete, with
/// their input index. Dropping it early cancels the map, as for [`Map`].
#[must_use = "dropping a MapUnordered cancels the tasks it has not run yet"]
pub struct MapUnordered<R> {
    feed: Arc<dyn MapFeed<R>>,
    yielded: usize,
}

/// A feed without its item type (for the iterators).
trait MapFeed<R>: Send + Sync {
    fn queue(&self) -> &Arc<Queue<(usize, ObjectRef<R>)>>;
    fn finished(&self, yielded: usize) -> bool;
    fn group(&self) -> &Group;
}

impl<I: Send + 'static, R: Any + Send + Sync> MapFeed<R> for Feed<I, R> {
    fn queue(&self) -> &Arc<Queue<(usize, ObjectRef<R>)>> {
        &self.queue
    }
    fn finished(&self, yielded: usize) -> bool {
        Feed::finished(self, yielded)
    }
    fn group(&self) -> &Group {
        &self.group
    }
}

impl<R> std::fmt::Debug for Map<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Map").field("next", &self.next).field("group", self.feed.group()).finish()
    }
}

impl<R> std::fmt::Debug for MapUnordered<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MapUnordered").field("yielded", &self.yielded).field("group", self.feed.group()).finish()
    }
}

fn start_feed<I, R, F>(
    rt: &Runtime,
    items: impl IntoIterator<Item = I>,
    concurrency: usize,
    f: F,
) -> Arc<dyn MapFeed<R>>
where
    I: Send + 'static,
    R: Any + Send + Sync,
    F: Fn(I) -> R + Send + Sync + 'static,
{
    let items: Vec<I> = items.into_iter().collect();
    let feed = Arc::new(Feed {
        items: Mutex::new(Box::new(items.into_iter())),
        run: Arc::new(f),
        group: rt.group(),
        queue: Queue::new(),
        submitted: 0.into(),
        exhausted: false.into(),
    });
    for _ in 0..concurrency.max(1) {
        feed.feed_one();
    }
    feed
}

impl Runtime {
    /// Runs `f` on every item as a task, at most `concurrency` at once, and
    /// yields the results in input order. The items are collected when
    /// this is called (a finite collection). Tasks are submitted as earlier
    /// ones complete, whether or not the results are being read; they form
    /// a [`Group`] ([`Map::group`]): cancel it, or drop the `Map`, to stop
    /// the rest.
    pub fn map<I, R, F>(&self, items: impl IntoIterator<Item = I>, concurrency: usize, f: F) -> Map<R>
    where
        I: Send + 'static,
        R: Any + Send + Sync,
        F: Fn(I) -> R + Send + Sync + 'static,
    {
        Map { feed: start_feed(self, items, concurrency, f), buffered: BTreeMap::new(), next: 0 }
    }

    /// Like [`Runtime::map`], yielding `(index, result)` as each task
    /// completes.
    pub fn map_unordered<I, R, F>(
        &self,
        items: impl IntoIterator<Item = I>,
        concurrency: usize,
        f: F,
    ) -> MapUnordered<R>
    where
        I: Send + 'static,
        R: Any + Send + Sync,
        F: Fn(I) -> R + Send + Sync + 'static,
    {
        MapUnordered { feed: start_feed(self, items, concurrency, f), yielded: 0 }
    }

    /// [`as_completed`] as a method.
    pub fn as_completed<T: Any + Send + Sync>(&self, refs: impl IntoIterator<Item = ObjectRef<T>>) -> AsCompleted<T> {
        as_completed(refs)
    }
}

impl<R> Map<R> {
    /// The group the map's tasks run in (cancel it to stop the map).
    pub fn group(&self) -> &Group {
        self.feed.group()
    }
}

impl<R> MapUnordered<R> {
    /// The group the map's tasks run in (cancel it to stop the map).
    pub fn group(&self) -> &Group {
        self.feed.group()
    }
}

impl<R> Drop for Map<R> {
    fn drop(&mut self) {
        if !self.feed.finished(self.next) {
            self.feed.group().cancel();
        }
    }
}

impl<R> Drop for MapUnordered<R> {
    fn drop(&mut self) {
        if !self.feed.finished(self.yielded) {
            self.feed.group().cancel();
        }
    }
}

fn read<R: Any + Send + Sync>(r: &ObjectRef<R>) -> Result<Arc<R>, Error> {
    r.get()
}

impl<R: Any + Send + Sync> Iterator for Map<R> {
    type Item = Result<Arc<R>, Error>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(r) = self.buffered.remove(&self.next) {
                self.next += 1;
                return Some(read(&r));
            }
            if let Some((i, r)) = self.feed.queue().pop() {
                self.buffered.insert(i, r);
                continue;
            }
            if self.feed.finished(self.next + self.buffered.len()) {
                return None;
            }
            let queue = self.feed.queue().clone();
            let feed = self.feed.clone();
            let next = self.next + self.buffered.len();
            crate::scheduler::block_until(&queue.parker, None, &mut || None, &mut || {
                !queue.is_empty() || feed.finished(next)
            });
        }
    }
}

impl<R: Any + Send + Sync> Iterator for MapUnordered<R> {
    type Item = (usize, Result<Arc<R>, Error>);

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some((i, r)) = self.feed.queue().pop() {
                self.yielded += 1;
                return Some((i, read(&r)));
            }
            if self.feed.finished(self.yielded) {
                return None;
            }
            let queue = self.feed.queue().clone();
            let feed = self.feed.clone();
            let yielded = self.yielded;
            crate::scheduler::block_until(&queue.parker, None, &mut || None, &mut || {
                !queue.is_empty() || feed.finished(yielded)
            });
        }
    }
}
