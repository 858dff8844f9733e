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
//! thread appends to a buffer of its own (a lock nobody else takes, except
//! a reader copying it out), and a task reads the clock three times (the
//! CPU's time-stamp counter through `quanta`, a few nanoseconds each); see
//! `microbench timeline` for the figure.
//!
//! Invariants: timestamps are nanoseconds since recording first began, from
//! one clock for every thread, so causality holds in the trace (a task
//! starts no earlier than its inputs ended); a buffer is only ever appended
//! to by its thread.

use crate::error::Text;
use crate::id::ObjectId;
use std::cell::RefCell;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
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

/// One thread's events.
type Buffer = Arc<Mutex<Vec<Event>>>;

/// A runtime's recorder: the switch, the clock's origin, every thread's
/// buffer.
#[derive(Debug)]
pub(crate) struct Recorder {
    on: AtomicBool,
    /// The clock's raw reading when recording first began (set once).
    epoch: OnceLock<u64>,
    buffers: Mutex<Vec<(u32, String, Buffer)>>,
    next_thread: AtomicU32,
}

thread_local! {
    /// This thread's buffer for the recorder it last recorded for.
    static LOCAL: RefCell<Option<(Weak<Recorder>, u32, Buffer)>> = const { RefCell::new(None) };
}

impl Recorder {
    pub fn new(on: bool) -> Arc<Recorder> {
        let r = Arc::new(Recorder {
            on: AtomicBool::new(false),
            epoch: OnceLock::new(),
            buffers: Mutex::new(Vec::new()),
            next_thread: AtomicU32::new(1),
        });
        r.set_on(on);
        r
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
    pub fn record(self: &Arc<Self>, make: impl FnOnce(u32) -> Event) {
        self.with_local(|tid, buf| {
            let e = make(tid);
            buf.lock().unwrap_or_else(|p| p.into_inner()).push(e);
        });
    }

    fn with_local<R>(self: &Arc<Self>, f: impl FnOnce(u32, &Buffer) -> R) -> R {
        LOCAL.with(|l| {
            let mut l = l.borrow_mut();
            let mine = l.as_ref().is_some_and(|(r, _, _)| std::ptr::eq(r.as_ptr(), Arc::as_ptr(self)));
            if !mine {
                let tid = self.next_thread.fetch_add(1, Ordering::Relaxed);
                let buf = Arc::new(Mutex::new(Vec::new()));
                let name = std::thread::current().name().unwrap_or("thread").to_string();
                self.buffers.lock().unwrap_or_else(|p| p.into_inner()).push((tid, name, buf.clone()));
                *l = Some((Arc::downgrade(self), tid, buf));
            }
            match l.as_ref() {
                Some((_, tid, buf)) => f(*tid, buf),
                None => unreachable!("just set"),
            }
        })
    }

    /// A copy of everything recorded so far.
    pub fn snapshot(&self) -> Timeline {
        let buffers = self.buffers.lock().unwrap_or_else(|p| p.into_inner());
        let mut events = Vec::new();
        let mut threads = Vec::new();
        for (tid, name, buf) in buffers.iter() {
            threads.push((*tid, name.clone()));
            events.extend(buf.lock().unwrap_or_else(|p| p.into_inner()).iter().cloned());
        }
        Timeline { events, threads }
    }

    /// Forgets everything recorded so far.
    pub fn clear(&self) {
        for (_, _, buf) in self.buffers.lock().unwrap_or_else(|p| p.into_inner()).iter() {
            buf.lock().unwrap_or_else(|p| p.into_inner()).clear();
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
