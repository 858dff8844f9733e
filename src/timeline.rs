//! The timeline: what each task did and when, recorded only when asked
//! (`RuntimeBuilder::timeline`, `Runtime::record_timeline`) and written as a
//! Chrome trace that Perfetto and `chrome://tracing` open
//! ([`Timeline::to_chrome_json`]).
//!
//! Recorded: each task's submission, start and end on its worker thread,
//! with its name, CPUs, outcome, attempts and the objects it read (drawn
//! as flow arrows from the tasks that made them); actor calls; spills,
//! restores and rebuilds in the store; object transfers between nodes
//! (recorded by a cluster transport through
//! [`Backend::record_transfer`](crate::backend::Backend::record_transfer),
//! on both the sending and the receiving node). One track per thread.
//! Several nodes' timelines merge into one trace with [`ChromeTrace`]
//! (module `chrome`).
//!
//! Cost: with recording off, one relaxed load per task. With it on, each
//! thread appends to a buffer of its own without a lock (module
//! `eventlog`: a write and a release store; readers copy it out), a task
//! reads the clock three times (the CPU's time-stamp counter through
//! `quanta`: no system call, though about 9 ns each on the 2-core VM the
//! benchmarks run on), its output's id is drawn (module `lazy`: no atomic
//! read-modify-write beyond one compare-exchange), and it names its
//! recorder by a key ([`Stamp`]), not a counted reference: a count taken
//! on the submitting thread and dropped on the worker would bounce the
//! recorder's cache line between them for every task. A task appends a
//! [`TaskRecord`] of plain values and raw clock readings; the readings
//! are scaled to nanoseconds and the [`Event`] is built only when the
//! timeline is read. See `microbench timeline` for the figure.
//!
//! Invariants: timestamps are nanoseconds since recording first began, from
//! one clock for every thread, so causality holds in the trace (a task
//! starts no earlier than its inputs ended); a buffer is only ever appended
//! to by its thread.

use crate::error::Text;
use crate::eventlog::{EventLog, Writer};
use crate::id::ObjectId;
use std::cell::RefCell;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};

/// The process's timeline clock, calibrated on first use (only when some
/// runtime starts recording: calibration takes milliseconds).
fn clock() -> &'static quanta::Clock {
    static CLOCK: OnceLock<quanta::Clock> = OnceLock::new();
    CLOCK.get_or_init(quanta::Clock::new)
}

/// How a recorded task ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// It returned a value.
    Done,
    /// It panicked or returned an error.
    Failed,
    /// It was cancelled.
    Cancelled,
}

/// What a store event was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreOp {
    /// An object written to its spill file.
    Spill,
    /// An object read back from its spill file.
    Restore,
    /// An object rebuilt from lineage (its task run again).
    Rebuild,
}

/// Which way an object transfer went, seen from the node that recorded it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// The object came in from the peer (this node fetched it).
    In,
    /// The object went out to the peer (this node served it).
    Out,
}

/// How an object transfer travelled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransferLane {
    /// In a batch of small objects (one exchange for many).
    Small,
    /// In chunks over the request streams.
    Chunks,
    /// Over the bulk lane (a TCP connection of its own).
    Bulk,
}

/// A task's name as recorded (made into text only when written out).
#[derive(Debug, Clone, PartialEq)]
pub enum Label {
    /// A name known at compile time.
    Static(&'static str),
    /// The call site that submitted the task (`file:line`).
    Caller(&'static std::panic::Location<'static>),
    /// A name given at run time.
    Owned(Text),
}

impl std::fmt::Display for Label {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Label::Static(s) => f.write_str(s),
            Label::Caller(l) => write!(f, "{}:{}", l.file(), l.line()),
            Label::Owned(s) => f.write_str(s),
        }
    }
}

/// One recorded event (see the module docs). Times are nanoseconds since
/// the timeline began.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// A task ran (or ended without running: cancelled, failed input).
    Task {
        /// The task's (first) output.
        id: ObjectId,
        /// The task's name.
        name: Label,
        /// When it was submitted.
        submitted: u64,
        /// The worker thread.
        thread: u32,
        /// When its body started.
        start: u64,
        /// When it ended.
        end: u64,
        /// How it ended.
        outcome: Outcome,
        /// CPUs it held.
        cpus: f64,
        /// Runs of its body (more than one after retries).
        attempts: u32,
        /// The objects it read.
        inputs: Box<[ObjectId]>,
    },
    /// An actor method call ran.
    Call {
        /// The actor's name.
        actor: Text,
        /// The method (the closure's type name, which names the function
        /// the call was made in).
        method: Label,
        /// The call's result.
        id: ObjectId,
        /// When it was made (its start if recording began after that).
        submitted: u64,
        /// The thread that ran it.
        thread: u32,
        /// When it started.
        start: u64,
        /// When it ended.
        end: u64,
        /// How it ended.
        outcome: Outcome,
        /// The objects it read.
        inputs: Box<[ObjectId]>,
    },
    /// The store moved an object.
    Store {
        /// Spill, restore or rebuild.
        op: StoreOp,
        /// The object.
        id: ObjectId,
        /// Its charged bytes.
        bytes: usize,
        /// The thread that did it.
        thread: u32,
        /// Start.
        start: u64,
        /// End.
        end: u64,
    },
    /// An object moved between this node and a peer (a span on the thread
    /// that did the work).
    Transfer {
        /// The object.
        id: ObjectId,
        /// Bytes moved (for a served chunk, that chunk's).
        bytes: u64,
        /// The other node (its peer id, as text).
        peer: Text,
        /// In (fetched) or out (served).
        direction: Direction,
        /// How it travelled.
        lane: TransferLane,
        /// The thread that did it.
        thread: u32,
        /// Start.
        start: u64,
        /// End.
        end: u64,
    },
    /// A task was sent to another node to run (recorded by a cluster
    /// transport through
    /// [`Backend::record_submit`](crate::backend::Backend::record_submit));
    /// its run there is the `Task` with the same id in that node's
    /// timeline.
    Submit {
        /// The task's result (the id it runs under there).
        id: ObjectId,
        /// The node it was sent to (its peer id, as text).
        peer: Text,
        /// The thread that sent it.
        thread: u32,
        /// When.
        at: u64,
    },
}

/// A task's event as its worker records it ([`Stamp::record_task`]):
/// plain values and the clock's raw readings, made into an
/// [`Event::Task`] only when the timeline is read ([`Raw::event`]).
/// Scaling three readings to nanoseconds and building the event on the
/// worker cost about a fifth of what recording a trivial task costs
/// (`microbench timeline`: 20.4% → 16.6% of `tasks_async`).
#[derive(Debug, Clone)]
pub(crate) struct TaskRecord {
    /// The task's (first) output.
    pub id: ObjectId,
    /// The task's name.
    pub name: Label,
    /// The clock's raw readings ([`Stamp::raw_now`]) at submission, start
    /// and end.
    pub raw: [u64; 3],
    /// CPUs it held.
    pub cpus: f64,
    /// Runs of its body.
    pub attempts: u32,
    /// How it ended.
    pub outcome: Outcome,
    /// The objects it read.
    pub inputs: Box<[ObjectId]>,
}

/// What a thread's buffer holds: a task's record, or any other event as
/// it is (those are rare next to tasks).
#[derive(Debug, Clone)]
enum Raw {
    Task(TaskRecord),
    Event(Event),
}

impl Raw {
    /// The event, with times in nanoseconds since `epoch` (a raw reading)
    /// and `thread` as the recording thread's id.
    fn event(self, epoch: u64, thread: u32) -> Event {
        match self {
            Raw::Event(e) => e,
            Raw::Task(TaskRecord { id, name, raw: [submitted, start, end], cpus, attempts, outcome, inputs }) => {
                let c = clock();
                let at = |raw: u64| c.delta_as_nanos(epoch, raw);
                Event::Task {
                    id,
                    name,
                    submitted: at(submitted),
                    thread,
                    start: at(start),
                    end: at(end),
                    outcome,
                    cpus,
                    attempts,
                    inputs,
                }
            }
        }
    }
}

/// One thread's events: appended by that thread without a lock, read by
/// snapshots from any thread (module `eventlog`).
type Buffer = EventLog<Raw>;

/// A runtime's recorder: the switch, the clock's origin, every thread's
/// buffer.
#[derive(Debug)]
pub(crate) struct Recorder {
    /// Never the same for two recorders of the process ([`Stamp`]).
    key: u64,
    on: AtomicBool,
    /// The clock's raw reading when recording first began (set once).
    epoch: OnceLock<u64>,
    /// Every thread's buffer: its id on the timeline, its name, the buffer
    /// and the thread itself (found again when it comes back after
    /// recording for another runtime).
    buffers: Mutex<Vec<(u32, String, Buffer, std::thread::ThreadId)>>,
    next_thread: AtomicU32,
}

thread_local! {
    /// This thread's view of the recorder it last recorded for.
    static LOCAL: RefCell<Option<Local>> = const { RefCell::new(None) };
}

/// A recorder named by key: reads its clock and records like the recorder
/// itself, holding no reference to it (each thread finds the recorder's
/// buffer and clock origin in its own cache, [`LOCAL`]).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Stamp {
    key: u64,
}

impl Stamp {
    /// The clock's raw reading now, for a [`TaskRecord`] (no
    /// lookup of the recorder: a worker reads it when a task starts).
    #[inline]
    pub fn raw_now() -> u64 {
        clock().raw()
    }

    /// [`Recorder::record`]. If the recorder is gone, the event is dropped,
    /// or kept in the thread's orphaned buffer until the thread records
    /// for another recorder (checking on every event would cost a lock).
    pub fn record(&self, make: impl FnOnce(u32) -> Event) {
        with_local(self.key, |local| local.push(Raw::Event(make(local.tid))));
    }

    /// Records a task's event as it is (made into an [`Event::Task`] when
    /// the timeline is read); a gone recorder as for [`Stamp::record`].
    #[inline]
    pub fn record_task(&self, task: TaskRecord) {
        with_local(self.key, |local| local.push(Raw::Task(task)));
    }
}

/// A thread's view of the recorder it last recorded for.
struct Local {
    key: u64,
    /// The thread's id on the recorder's timeline.
    tid: u32,
    /// The writing end of the thread's buffer.
    buf: Writer<Raw>,
}

impl Local {
    /// Appends `e` to this thread's buffer.
    #[inline]
    fn push(&mut self, e: Raw) {
        self.buf.push(e);
    }
}

/// Runs `f` on the calling thread's view of the recorder whose key is
/// `key` (made on its first event for it); `None` if that recorder is gone.
#[inline]
fn with_local<R>(key: u64, f: impl FnOnce(&mut Local) -> R) -> Option<R> {
    LOCAL.with(|l| {
        let mut l = l.borrow_mut();
        if l.as_ref().is_none_or(|local| local.key != key) {
            // The old view (and its writer) goes first: coming back to a
            // recorder, the thread writes its buffer again.
            *l = None;
            *l = Some(Recorder::live(key)?.add_thread());
        }
        l.as_mut().map(f)
    })
}

/// Every live recorder by key, for a thread's first event for one of them
/// through a [`Stamp`] (a rare path: once per thread and recorder, or when
/// a thread alternates between runtimes).
static LIVE: Mutex<Vec<(u64, Weak<Recorder>)>> = Mutex::new(Vec::new());

impl Drop for Recorder {
    fn drop(&mut self) {
        LIVE.lock().unwrap_or_else(|p| p.into_inner()).retain(|(k, _)| *k != self.key);
    }
}

impl Recorder {
    pub fn new(on: bool) -> Arc<Recorder> {
        static NEXT_KEY: AtomicU64 = AtomicU64::new(1);
        let r = Arc::new(Recorder {
            key: NEXT_KEY.fetch_add(1, Ordering::Relaxed),
            on: AtomicBool::new(false),
            epoch: OnceLock::new(),
            buffers: Mutex::new(Vec::new()),
            next_thread: AtomicU32::new(1),
        });
        r.set_on(on);
        LIVE.lock().unwrap_or_else(|p| p.into_inner()).push((r.key, Arc::downgrade(&r)));
        r
    }

    /// What a task carries instead of a counted reference to this
    /// recorder: its key.
    pub fn stamp(&self) -> Stamp {
        Stamp { key: self.key }
    }

    /// True while recording (one relaxed load).
    #[inline]
    pub fn is_on(&self) -> bool {
        self.on.load(Ordering::Relaxed)
    }

    /// Turns recording on or off; the first time on also fixes the
    /// timeline's origin (and calibrates the clock, once per process).
    pub fn set_on(&self, on: bool) {
        if on {
            self.epoch.get_or_init(|| clock().raw());
        }
        self.on.store(on, Ordering::Relaxed);
    }

    /// Fixes the timeline's origin if recording never began, without
    /// turning recording on (a node collecting other nodes' timelines
    /// needs a clock to align them to); returns [`Recorder::now`].
    pub fn start_clock(&self) -> u64 {
        self.epoch.get_or_init(|| clock().raw());
        self.now()
    }

    /// Nanoseconds since recording first began (0 before). Reads the CPU's
    /// time-stamp counter where it is invariant (a few nanoseconds, no
    /// system call), else the monotonic clock; one scale for every thread,
    /// so an event that happened after another never gets an earlier time.
    #[inline]
    pub fn now(&self) -> u64 {
        match self.epoch.get() {
            Some(&epoch) => {
                let c = clock();
                c.delta_as_nanos(epoch, c.raw())
            }
            None => 0,
        }
    }

    /// Appends an event to this thread's buffer.
    pub fn record(&self, make: impl FnOnce(u32) -> Event) {
        self.stamp().record(make);
    }

    /// The calling thread's view: its buffer, listed under a new thread id
    /// the first time.
    fn add_thread(&self) -> Local {
        let me = std::thread::current();
        let mut buffers = self.buffers.lock().unwrap_or_else(|p| p.into_inner());
        // The thread's buffer from an earlier visit, if its writer is free
        // (it is: the thread dropped its old view before coming back).
        let known = buffers.iter().find(|b| b.3 == me.id()).and_then(|(tid, _, buf, _)| Some((*tid, buf.writer()?)));
        let (tid, buf) = match known {
            Some(found) => found,
            None => {
                let tid = self.next_thread.fetch_add(1, Ordering::Relaxed);
                let (buf, writer) = Buffer::with_writer();
                buffers.push((tid, me.name().unwrap_or("thread").to_string(), buf, me.id()));
                (tid, writer)
            }
        };
        // The clock's origin is set before anything is recorded.
        self.epoch.get_or_init(|| clock().raw());
        Local { key: self.key, tid, buf }
    }

    /// The live recorder whose key is `key`.
    #[cold]
    fn live(key: u64) -> Option<Arc<Recorder>> {
        let live = LIVE.lock().unwrap_or_else(|p| p.into_inner());
        live.iter().find(|(k, _)| *k == key)?.1.upgrade()
    }

    /// A copy of everything recorded so far.
    pub fn snapshot(&self) -> Timeline {
        let buffers = self.buffers.lock().unwrap_or_else(|p| p.into_inner());
        let mut events = Vec::new();
        let mut threads = Vec::new();
        // Nothing was recorded before the origin was set.
        let epoch = self.epoch.get().copied().unwrap_or(0);
        for (tid, name, buf, _) in buffers.iter() {
            threads.push((*tid, name.clone()));
            events.extend(buf.snapshot().into_iter().map(|raw| raw.event(epoch, *tid)));
        }
        Timeline { events, threads }
    }

    /// Forgets everything recorded so far.
    pub fn clear(&self) {
        for (_, _, buf, _) in self.buffers.lock().unwrap_or_else(|p| p.into_inner()).iter() {
            buf.clear();
        }
    }
}

/// What a runtime recorded ([`Runtime::timeline`](crate::Runtime::timeline)).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Timeline {
    /// The events, grouped by thread (each thread's in order).
    pub events: Vec<Event>,
    /// `(id, name)` of every thread that recorded.
    pub threads: Vec<(u32, String)>,
}

impl Timeline {
    /// The timeline as Chrome trace JSON (the "JSON object format":
    /// `{"traceEvents": [...]}`), which Perfetto (ui.perfetto.dev) and
    /// `chrome://tracing` open: one track per thread, a slice per task,
    /// actor call, store operation and transfer, flow arrows from a task to
    /// the tasks that read its output, and a process named `process`.
    pub fn to_chrome_json(&self, process: &str) -> String {
        let mut trace = crate::chrome::ChromeTrace::new();
        trace.add_process(process, self.clone(), 0);
        trace.to_json()
    }

    /// Writes [`Timeline::to_chrome_json`] to `path`.
    pub fn write_chrome_trace(&self, path: impl AsRef<std::path::Path>, process: &str) -> std::io::Result<()> {
        std::fs::write(path, self.to_chrome_json(process))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A store event told apart by its byte count.
    fn store_event(n: u64) -> Event {
        Event::Store { op: StoreOp::Spill, id: ObjectId::fresh(), bytes: n as usize, thread: 0, start: 0, end: 0 }
    }

    fn ids<'a>(events: impl Iterator<Item = &'a Event>) -> Vec<u64> {
        events
            .map(|e| match e {
                Event::Store { bytes, .. } => *bytes as u64,
                _ => unreachable!("only store events here"),
            })
            .collect()
    }

    /// One thread records for two recorders in turn: each event lands in
    /// its own recorder's timeline, under one thread id per recorder, and
    /// a stamp of a dropped recorder touches no live one.
    #[test]
    fn a_thread_alternating_recorders_keeps_their_events_apart() {
        let (a, b) = (Recorder::new(true), Recorder::new(true));
        for i in 0..3 {
            a.record(|_| store_event(i));
            b.record(|_| store_event(10 + i));
        }
        let of = |r: &Recorder| ids(r.snapshot().events.iter());
        assert_eq!(of(&a), [0, 1, 2]);
        assert_eq!(of(&b), [10, 11, 12]);
        assert_eq!(a.snapshot().threads.len(), 1);
        assert_eq!(b.snapshot().threads.len(), 1);
        let stamp = a.stamp();
        drop(a);
        stamp.record(|_| store_event(99));
        assert_eq!(of(&b), [10, 11, 12]);
    }
}
