//! Latency probe: where the microseconds of a remote round trip go.
//!
//! The remote paths (a small remote `get`, a remote task's round trip)
//! call `mark` at each [`Stage`] they pass: the fetch is started, its
//! request is written, the holder reads it, ... With the `probe` cargo
//! feature, a mark stores the time (nanoseconds since a process-wide
//! epoch) in one slot per stage, the last mark winning; without it,
//! `mark` is an empty inline function and the slots do not exist, so the
//! probe costs nothing when off.
//!
//! A benchmark that runs one operation at a time (`p2p_bench`, with both
//! nodes in one process, so one clock) reads the marks made during each
//! operation with [`marks_since`] and prints, per stage, how long after the
//! previous stage it came. Marks are process-wide: concurrent operations
//! of the same kind overwrite each other's, so the breakdown is only
//! meaningful for one operation at a time.
//!
//! Layer: base (with `config`, `sync`); imports nothing from this crate.

use std::time::{Duration, Instant};

/// A point on a remote path, in the order a round trip passes them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    /// Small get, reader: the fetch is handed to the fetcher (reader's thread).
    GetStart,
    /// Small get, reader: its async task runs (on the node's tokio worker).
    GetTask,
    /// Small get, reader: the batch request is written and flushed.
    GetSent,
    /// Small get, holder: the request frame is read.
    GetServerRead,
    /// Small get, holder: the answer is encoded (before writing it).
    GetServerAnswered,
    /// Small get, holder: the answer is written and flushed.
    GetServerWrote,
    /// Small get, reader: the reply frame is read.
    GetReplyRead,
    /// Small get, reader: the fetch task has the object's bytes.
    GetFetchWoke,
    /// Small get, reader: the value is decoded (about to complete the fetch).
    GetDecoded,
    /// Small get, reader: the fetch is completed (the reader may wake).
    GetCompleted,
    /// Remote task, submitter: the submission is queued in the outbox.
    TaskQueued,
    /// Remote task, submitter: the outbox's sender task took the batch.
    TaskTaken,
    /// Remote task, submitter: the batch is written and flushed.
    TaskWritten,
    /// Remote task, executor: the batch frame is read.
    TaskRead,
    /// Remote task, executor: the task is submitted to the runtime.
    TaskAccepted,
    /// Remote task, executor: the task finished (its completion is made).
    TaskRan,
    /// Remote task, executor: the `Done` is queued in the outbox.
    DoneQueued,
    /// Remote task, executor: the outbox's sender task took the `Done`.
    DoneTaken,
    /// Remote task, executor: the `Done` batch is written and flushed.
    DoneWritten,
    /// Remote task, submitter: the `Done` batch frame is read.
    DoneRead,
    /// Remote task, submitter: the result is filled (the reader may wake).
    DoneApplied,
}

impl Stage {
    /// The stages of a small remote get, in order.
    pub const GET: &'static [Stage] = &[
        Stage::GetStart,
        Stage::GetTask,
        Stage::GetSent,
        Stage::GetServerRead,
        Stage::GetServerAnswered,
        Stage::GetServerWrote,
        Stage::GetReplyRead,
        Stage::GetFetchWoke,
        Stage::GetDecoded,
        Stage::GetCompleted,
    ];

    /// The stages of a remote task's round trip, in order.
    pub const TASK: &'static [Stage] = &[
        Stage::TaskQueued,
        Stage::TaskTaken,
        Stage::TaskWritten,
        Stage::TaskRead,
        Stage::TaskAccepted,
        Stage::TaskRan,
        Stage::DoneQueued,
        Stage::DoneTaken,
        Stage::DoneWritten,
        Stage::DoneRead,
        Stage::DoneApplied,
    ];

    /// A short name, for benchmark output.
    pub fn name(self) -> &'static str {
        match self {
            Stage::GetStart => "get_start",
            Stage::GetTask => "get_task",
            Stage::GetSent => "get_sent",
            Stage::GetServerRead => "get_server_read",
            Stage::GetServerAnswered => "get_server_answered",
            Stage::GetServerWrote => "get_server_wrote",
            Stage::GetReplyRead => "get_reply_read",
            Stage::GetFetchWoke => "get_fetch_woke",
            Stage::GetDecoded => "get_decoded",
            Stage::GetCompleted => "get_completed",
            Stage::TaskQueued => "task_queued",
            Stage::TaskTaken => "task_taken",
            Stage::TaskWritten => "task_written",
            Stage::TaskRead => "task_read",
            Stage::TaskAccepted => "task_accepted",
            Stage::TaskRan => "task_ran",
            Stage::DoneQueued => "done_queued",
            Stage::DoneTaken => "done_taken",
            Stage::DoneWritten => "done_written",
            Stage::DoneRead => "done_read",
            Stage::DoneApplied => "done_applied",
        }
    }
}

/// True if this build records marks (the `probe` feature).
pub const ENABLED: bool = cfg!(feature = "probe");

#[cfg(feature = "probe")]
mod on {
    use super::Stage;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::OnceLock;
    use std::time::Instant;

    /// Number of stages (the last one's index, plus one).
    pub(super) const STAGES: usize = Stage::DoneApplied as usize + 1;

    /// Nanoseconds after `EPOCH` of each stage's last mark, plus one (0: none).
    pub(super) static MARKS: [AtomicU64; STAGES] = [const { AtomicU64::new(0) }; STAGES];

    static EPOCH: OnceLock<Instant> = OnceLock::new();

    pub(super) fn epoch() -> Instant {
        *EPOCH.get_or_init(Instant::now)
    }

    pub(super) fn mark(s: Stage) {
        let ns = epoch().elapsed().as_nanos() as u64 + 1;
        MARKS[s as usize].store(ns, Ordering::Relaxed);
    }
}

/// Records that `stage` was passed now (nothing without the `probe` feature).
#[inline(always)]
pub(crate) fn mark(stage: Stage) {
    #[cfg(feature = "probe")]
    on::mark(stage);
    #[cfg(not(feature = "probe"))]
    let _ = stage;
}

/// The stages among `stages` marked at or after `t0`, with how long after
/// `t0` each was (last mark of each); empty without the `probe` feature.
pub fn marks_since(t0: Instant, stages: &[Stage]) -> Vec<(Stage, Duration)> {
    #[cfg(feature = "probe")]
    {
        use std::sync::atomic::Ordering;
        let epoch = on::epoch();
        let t0_ns = t0.saturating_duration_since(epoch).as_nanos() as u64;
        stages
            .iter()
            .filter_map(|s| {
                let ns = on::MARKS[*s as usize].load(Ordering::Relaxed);
                (ns > t0_ns).then(|| (*s, Duration::from_nanos(ns - 1 - t0_ns)))
            })
            .collect()
    }
    #[cfg(not(feature = "probe"))]
    {
        let _ = (t0, stages);
        Vec::new()
    }
}
