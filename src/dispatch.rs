//! Dispatch: the admission queue, the resource pool and the count of
//! runners, under one lock. This is the scheduler's concurrency protocol;
//! `scheduler` wraps it with rayon and threads, and `tests/loom_dispatch.rs`
//! model-checks it with loom threads in place of both.
//!
//! # Jobs and runners
//! A *job* is queued in a FIFO per resource shape and priority ("scheduling
//! class", as in Ray), so a job that waits for a GPU never holds back CPU
//! jobs behind it; among the class heads that fit, the highest priority
//! runs first, then the oldest. A *runner* is a loop on some thread: take the oldest job whose
//! resources are free ([`Dispatch::next`]), run it, release its resources,
//! repeat. At most `threads` runners are *active* (running jobs, not
//! blocked). Whoever makes work runnable while fewer than `threads` runners
//! are active is told to start one (the `true` returned by
//! [`Dispatch::submit`], [`Dispatch::lend`], [`Dispatch::hand_over`],
//! [`Dispatch::release`] and the
//! `more` of [`Next::Run`]); the caller then starts it and the count
//! already includes it.
//!
//! # Blocking hands the runner's place over
//! A job that blocks in `get`/`wait` lends its CPUs ([`Dispatch::lend`],
//! Ray's rule) and, before it parks, hands its runner's place over
//! ([`Dispatch::hand_over`]): it stops counting as active, so if queued
//! work fits, another runner is started, on another thread. It never runs
//! unrelated queued jobs on its own stack: such a job could wait, directly
//! or through others, on the blocked frame buried beneath it, which cannot
//! resume until the job above it returns (the deadlock of helping blindly).
//! A blocked worker only runs, inline, the jobs that produce what it waits
//! for ("targeted" jobs, [`Dispatch::acquire`] / [`Dispatch::release`]);
//! those cannot wait on it without a true cycle in the task graph. When it
//! resumes ([`Dispatch::resume`]) it counts as active again even if that
//! makes more than `threads`; the next runner to finish a job then exits
//! ([`Next::Exit`]), so the excess is temporary (as Ray lends a blocked
//! task's CPUs and starts extra workers).
//!
//! # The inbox
//! A submit that finds every place busy (`active` ≥ `threads`, read from
//! its lock-free hint) and the lock held (`try_lock`) does not wait for
//! the lock: it pushes the job onto the inbox (`inbox`, a bounded
//! lock-free ring; when it is full the submit takes the lock, which
//! drains it), issues a SeqCst fence and reads the hint again. A busy
//! runner takes the job when it next asks for work: every taking of the
//! lock first drains the inbox into the queue, in order, so the queue is
//! what it would be had the job been submitted at that moment. A runner
//! that leaves (or hands its place over) stores the lower `active`,
//! issues a SeqCst fence and drains the inbox once more before it decides
//! (Dekker's pattern, as for the reap note): either the submit sees the
//! place free and decides under the lock as any submit does, or the
//! runner sees the job. A reap drains the inbox again after taking its
//! note (a job pushed before the note was left may still be there).
//! Shutdown likewise: it stores `shut`, fences and drains; a submit that
//! sees `shut` after its push takes back what is left.
//!
//! Why only when the lock is held: a spawning thread that waits for the
//! lock behind a runner (or behind a preempted holder) stalls; one that
//! finds it free is better off queueing the job itself, since the
//! runners, the bottleneck when tasks are trivial, would otherwise do
//! that work (`microbench tasks_async`: a ring used for every submit
//! while the places were busy lost 10 – 15% in the VM's faster phase and
//! gained about 50% in its slow one; this way the slow phase gains about
//! 25% and the faster one stays level).
//!
//! # Invariants (all under the one lock)
//! - `active` = runners started and not exited, minus those blocked.
//! - `lingering` = runners told to linger ([`Next::Linger`]) that have
//!   not asked again; each still holds its place, and asks again (`next`
//!   with `from_linger`) within `LINGER`, at once when it sees new work
//!   (`work` changed, or a job in the inbox: [`Dispatch::new_work`]).
//! - `work` changes whenever a job is queued or resources are freed
//!   outside a runner's own `next` (a loan, a targeted job's end); its
//!   hint is published after the change, under the lock.
//! - No lost work: whenever a job is queued, fits the free resources,
//!   `active < threads` and more jobs are queued than runners linger, the
//!   call that made it so returns `true` (start a runner). A runner
//!   decides to exit under the lock, so a submit that takes the lock never
//!   counts on a runner that is leaving; one that puts its job in the
//!   inbox is seen by it (above); one that counts on a lingering runner is
//!   seen when that runner asks again, which it always does (a runner that
//!   asks again having lingered in vain still takes a queued job that
//!   fits before it leaves). Starting a runner for a job a lingering one
//!   will take would wake a thread for nothing: in a loop of one submit
//!   and one `get`, the spare runner left at the end of each linger and
//!   the next submit woke it again, a thread wake-up per task
//!   (`microbench tasks_sync` fell from ~1 M/s to ~30 k/s after a burst
//!   of tasks had left both runners lingering).
//! - Every job in the inbox is moved into the queue by the next taking of
//!   the lock; the queue's counts (`queued`, `submitted`) include it from
//!   then.
//! - Resources: every job handed out by `next` holds its request until its
//!   runner's next `next` (or `release` for targeted jobs) returns it.

use crate::inbox::Inbox;
use crate::resources::{Pool, Request, Totals};
use crate::sync::{fence, lock, AtomicBool, AtomicUsize, Mutex, MutexGuard, Ordering};
use std::collections::VecDeque;
use std::sync::Arc;

/// How the jobs a runner ran ended, for the task counts (see
/// [`Dispatch::counts`]): tasks done, failed, cancelled.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tally {
    /// Tasks that finished with a value.
    pub done: u32,
    /// Tasks that finished with an error (not a cancellation).
    pub failed: u32,
    /// Tasks cancelled (before or while running).
    pub cancelled: u32,
    /// Queue entries of tasks that ran elsewhere (a blocked worker ran
    /// them targeted): counted as started when popped, so they end here
    /// too, without an outcome (the targeted run counted that).
    pub skipped: u32,
}

/// The task counts of one runtime (see [`Dispatch::counts`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Tasks that reached the queue (their inputs were ready).
    pub submitted: u64,
    /// Tasks waiting in the queue.
    pub queued: u64,
    /// Tasks running now.
    pub running: u64,
    /// Tasks finished with a value.
    pub done: u64,
    /// Tasks finished with an error.
    pub failed: u64,
    /// Tasks cancelled.
    pub cancelled: u64,
}

/// What dispatch needs to know of a queued job.
pub trait Queued {
    /// The resources the job holds while it runs.
    fn req(&self) -> &Request;
    /// True if the job is a task (counted in [`Counts`]).
    fn is_task(&self) -> bool {
        false
    }
    /// Among jobs that fit, higher priorities go first (then the oldest).
    fn priority(&self) -> u8 {
        1
    }
    /// True if the job was cancelled while queued: a runner that finds a
    /// reap note takes it out (see [`Dispatch::reap`]).
    fn cancelled(&self) -> bool {
        false
    }
}

struct Class<J> {
    req: Request,
    priority: u8,
    queue: VecDeque<(u64, J)>,
}

struct State<J> {
    counts: Counts,
    /// Tasks started (popped or run targeted), for `counts.running`.
    started: u64,
    /// Of those, finished (reported by the runner that ran them).
    ran: u64,
    pool: Pool,
    classes: Vec<Class<J>>,
    seq: u64,
    queued: usize,
    active: usize,
    /// Runners that were told to linger and have not asked again (each
    /// holds a place and asks again within `LINGER`, at once when it sees
    /// new work: [`Dispatch::new_work`]).
    lingering: usize,
    /// Bumped whenever a job is queued or resources come free outside a
    /// runner's `next` (a blocked job lends its CPUs, a targeted job
    /// ends): what a lingering runner waits for.
    work: usize,
    shutdown: bool,
}

/// What a runner does next.
pub enum Next<J> {
    /// Run this job (its resources are taken); if `more`, start another
    /// runner too (more queued work fits).
    Run {
        /// The job.
        job: J,
        /// Start one more runner.
        more: bool,
    },
    /// Nothing fits right now: spin a little, then ask again with
    /// `lingered` set (a submit meanwhile is picked up without a wake-up).
    /// The linger ends early only for new work ([`Dispatch::new_work`]).
    Linger {
        /// The work count when the runner was told to linger.
        seen: usize,
    },
    /// Complete these jobs (taken out of the queue by [`Dispatch::reap`])
    /// as cancelled, then ask again.
    Reap(Vec<J>),
    /// Leave the loop (the runner is no longer counted).
    Exit,
}

/// What [`Dispatch::reap`] touches: one cache line, written only when a
/// runner starts or leaves and when a cancel leaves its note.
#[repr(align(128))]
struct Note {
    /// `active`, readable without the lock.
    active_hint: AtomicUsize,
    /// Some queued job may have been cancelled: the next runner to ask for
    /// work takes the cancelled ones out.
    reap_pending: crate::sync::AtomicBool,
    /// `Dispatch::threads`, on the canceller's line.
    threads: usize,
}

/// The admission queue and runner count of one runtime (module docs).
pub struct Dispatch<J> {
    state: Mutex<State<J>>,
    /// Jobs submitted while every place was busy, not yet in the queue
    /// (module docs, "The inbox").
    inbox: Inbox<J>,
    /// `shutdown`, readable without the lock (for a submit to the inbox).
    shut: AtomicBool,
    /// `queued`, readable without the lock.
    queued_hint: AtomicUsize,
    /// `work`, readable without the lock (what ends a linger early:
    /// [`Dispatch::new_work`]).
    work_hint: AtomicUsize,
    /// The canceller's line: `active` readable without the lock, and the
    /// reap note (see [`Dispatch::reap`]), on a line of their own (the
    /// queue's lock and `queued_hint` change on every job).
    note: Note,
    threads: usize,
    /// Seeded bug for the loom model: a blocked job keeps its runner's
    /// place (the old "help instead of hand over" protocol).
    #[cfg(loom)]
    keep_place_when_blocked: bool,
    /// Seeded bug for the loom model: a runner leaves without looking at
    /// the inbox once more (a job submitted as it leaves is stranded).
    #[cfg(loom)]
    leave_without_inbox: bool,
}

impl<J: Queued> Dispatch<J> {
    /// A dispatcher for `threads` runners over `totals`.
    pub fn new(totals: Arc<Totals>, threads: usize) -> Dispatch<J> {
        Dispatch {
            state: Mutex::new(State {
                counts: Counts::default(),
                started: 0,
                ran: 0,
                pool: Pool::new(totals),
                classes: Vec::new(),
                seq: 0,
                queued: 0,
                active: 0,
                lingering: 0,
                work: 0,
                shutdown: false,
            }),
            inbox: Inbox::new(),
            shut: AtomicBool::new(false),
            queued_hint: AtomicUsize::new(0),
            work_hint: AtomicUsize::new(0),
            note: Note {
                active_hint: AtomicUsize::new(0),
                reap_pending: crate::sync::AtomicBool::new(false),
                threads: threads.max(1),
            },
            threads: threads.max(1),
            #[cfg(loom)]
            keep_place_when_blocked: false,
            #[cfg(loom)]
            leave_without_inbox: false,
        }
    }

    /// The model's seeded bug (see the field).
    #[cfg(loom)]
    pub fn with_seeded_bug(mut self) -> Self {
        self.keep_place_when_blocked = true;
        self
    }

    /// The model's other seeded bug (see `leave_without_inbox`).
    #[cfg(loom)]
    pub fn with_inbox_bug(mut self) -> Self {
        self.leave_without_inbox = true;
        self
    }

    /// The number of runner places.
    pub fn threads(&self) -> usize {
        self.threads
    }

    /// Queues a job. `Ok(true)`: start a runner. `Err(jobs)`: shut down,
    /// the jobs (this one, and any others a racing submit left in the
    /// inbox) are handed back to be completed as such.
    pub fn submit(&self, job: J) -> Result<bool, Vec<J>> {
        let (job, mut st) = if self.every_place_busy() {
            // Every place busy, and a runner holds the lock: one of those
            // runners takes the job when it asks for its next, so no need
            // to wait for the lock (module docs).
            match self.state.try_lock() {
                Ok(st) => (job, self.drained(st)),
                Err(std::sync::TryLockError::Poisoned(p)) => (job, self.drained(p.into_inner())),
                Err(std::sync::TryLockError::WouldBlock) => match self.inbox.push(job) {
                    Ok(()) => return self.pushed(),
                    Err(job) => (job, self.lock()), // the inbox is full: the lock drains it
                },
            }
        } else {
            (job, self.lock())
        };
        if st.shutdown {
            let mut jobs = st.take_all();
            jobs.push(job);
            return Err(jobs);
        }
        let fits = st.pool.fits(job.req());
        st.admit(job);
        self.publish(&mut st);
        Ok(fits && st.unclaimed() && self.take_place(&mut st))
    }

    /// A submit's check after its push to the inbox (module docs).
    fn pushed(&self) -> Result<bool, Vec<J>> {
        fence(Ordering::SeqCst);
        if self.every_place_busy() && !self.shut.load(Ordering::Relaxed) {
            return Ok(false);
        }
        // A place came free (or the runtime shut down) meanwhile: the
        // job is queued now (the lock drains the inbox); decide as a
        // submit under the lock does.
        let mut st = self.lock();
        if st.shutdown {
            return Err(st.take_all());
        }
        Ok(st.any_fits() && st.unclaimed() && self.take_place(&mut st))
    }

    /// The state, locked, with the inbox drained into the queue.
    fn lock(&self) -> MutexGuard<'_, State<J>> {
        self.drained(lock(&self.state))
    }

    /// `st` with the inbox drained into the queue.
    fn drained<'a>(&self, mut st: MutexGuard<'a, State<J>>) -> MutexGuard<'a, State<J>> {
        self.drain(&mut st);
        st
    }

    /// Counts new work (jobs just queued, resources just freed) and
    /// publishes the hints lingering runners read.
    #[inline]
    fn publish(&self, st: &mut State<J>) {
        st.work = st.work.wrapping_add(1);
        self.queued_hint.store(st.queued, Ordering::Relaxed);
        self.work_hint.store(st.work, Ordering::Relaxed);
    }

    /// Moves the inbox's jobs into the queue (under the lock).
    #[inline]
    fn drain(&self, st: &mut State<J>) {
        if let Some(first) = self.inbox.pop() {
            st.admit(first);
            while let Some(j) = self.inbox.pop() {
                st.admit(j);
            }
            self.publish(st);
        }
    }

    /// A runner asks for its next job, first releasing `finished` (the
    /// request of the job it just ran, if any, and how it ended). See
    /// [`Next`]. `lingered`: it lingered and saw nothing (it leaves if
    /// nothing fits now); `from_linger`: it was told to linger and asks
    /// again (it is no longer counted as lingering).
    pub fn next(&self, finished: Option<(&Request, Tally)>, lingered: bool, from_linger: bool) -> Next<J> {
        let mut st = self.lock();
        if from_linger {
            st.lingering = st.lingering.saturating_sub(1);
        }
        if let Some((req, tally)) = finished {
            st.pool.release(req);
            st.add_ran(tally);
        }
        if let Some(jobs) = self.take_reaped(&mut st) {
            return Next::Reap(jobs);
        }
        if st.active > self.threads {
            st.active -= 1; // oversubscribed after an unblock: give a place back
            self.note.active_hint.store(st.active, Ordering::Relaxed);
            return Next::Exit;
        }
        match st.pop_fitting() {
            Some(job) => self.hand_out(&mut st, job),
            None if lingered || st.shutdown => {
                st.active -= 1;
                self.note.active_hint.store(st.active, Ordering::Relaxed);
                // A cancel that read `active_hint` before this store relied
                // on us (see `reap`: a fence between the store and the
                // load on both sides): look at the note once more.
                fence(Ordering::SeqCst);
                if !st.shutdown {
                    // Likewise a submit that saw every place busy put its
                    // job in the inbox and relied on us (module docs).
                    #[cfg(loom)]
                    if self.leave_without_inbox {
                        return Next::Exit;
                    }
                    self.drain(&mut st);
                    if let Some(jobs) = self.take_reaped(&mut st) {
                        st.active += 1;
                        self.note.active_hint.store(st.active, Ordering::Relaxed);
                        return Next::Reap(jobs);
                    }
                    if let Some(job) = st.pop_fitting() {
                        st.active += 1;
                        self.note.active_hint.store(st.active, Ordering::Relaxed);
                        return self.hand_out(&mut st, job);
                    }
                }
                Next::Exit
            }
            None => {
                st.lingering += 1;
                Next::Linger { seen: st.work }
            }
        }
    }

    /// Hands `job` (just popped, its resources taken) to the asking runner,
    /// which holds a place: counts it started, and says whether to start
    /// another runner.
    fn hand_out(&self, st: &mut State<J>, job: J) -> Next<J> {
        if job.is_task() {
            st.started += 1;
        }
        self.queued_hint.store(st.queued, Ordering::Relaxed);
        // (A place first: with every place taken, as in a burst, no need
        // to scan the classes.)
        let more = st.active < self.threads && st.any_fits() && st.unclaimed() && self.take_place(st);
        Next::Run { job, more }
    }

    /// True if something is queued (lock-free hint).
    pub fn has_queued(&self) -> bool {
        self.queued_hint.load(Ordering::Relaxed) > 0 || !self.inbox.is_empty()
    }

    /// For a lingering runner told to linger at work count `seen`: true
    /// if work arrived since (a job in the inbox, a job queued, resources
    /// freed by a blocked job's loan or a targeted job's end). Jobs that
    /// were queued and did not fit when it was told to linger do not
    /// count: a runner that ended its linger for them would find nothing
    /// it can run and linger again at once, spinning on a core for as long
    /// as they wait for their resources (a task waiting a second for a
    /// custom resource cost 0.6 s of CPU). A hint, read without the lock:
    /// whatever it misses, the runner asks again at the end of its linger,
    /// as it always does.
    pub fn new_work(&self, seen: usize) -> bool {
        !self.inbox.is_empty() || self.work_hint.load(Ordering::Relaxed) != seen
    }

    /// A job blocks: it lends its `cpu` units to others until
    /// [`Dispatch::resume`]. True: start a runner (queued work now fits and
    /// a place is free).
    pub fn lend(&self, cpu: u64) -> bool {
        let mut st = self.lock();
        st.pool.adjust_cpu(cpu as i64);
        self.publish(&mut st);
        st.any_fits() && self.take_place(&mut st)
    }

    /// A blocked job is about to park with nothing it can run itself: its
    /// runner's place goes to another runner. True: start one (queued work
    /// fits). Called at most once per blocked frame, and only by a thread
    /// whose runner holds a place.
    pub fn hand_over(&self) -> bool {
        #[cfg(loom)]
        if self.keep_place_when_blocked {
            return false;
        }
        let mut st = self.lock();
        st.active -= 1;
        self.note.active_hint.store(st.active, Ordering::Relaxed);
        // A cancel that saw this place busy counted on it to read its note,
        // and a submit that saw it busy, to take its job from the inbox.
        fence(Ordering::SeqCst);
        self.drain(&mut st);
        let reap = st.queued > 0 && self.note.reap_pending.load(Ordering::Acquire);
        (reap || st.any_fits()) && self.take_place(&mut st)
    }

    /// The blocked job resumes: takes its CPUs back and, if it handed its
    /// place over, the place too, even past the limits for a moment.
    pub fn resume(&self, cpu: u64, handed_over: bool) {
        let mut st = self.lock();
        st.pool.adjust_cpu(-(cpu as i64));
        if handed_over {
            st.active += 1;
            self.note.active_hint.store(st.active, Ordering::Relaxed);
        }
    }

    /// A runner that was counted could not be started (no thread): gives
    /// its place back.
    pub fn not_started(&self) {
        let mut st = self.lock();
        st.active = st.active.saturating_sub(1);
        self.note.active_hint.store(st.active, Ordering::Relaxed);
    }

    /// Takes a targeted job's resources (a blocked worker runs the job that
    /// produces what it waits for): its CPUs even if that oversubscribes
    /// (the blocked worker lent its own), its custom resources only if
    /// they are free (false: nothing taken).
    pub fn acquire(&self, req: &Request, task: bool) -> bool {
        let mut st = self.lock();
        if !st.pool.fits_custom(req) {
            return false;
        }
        st.pool.acquire(req);
        if task {
            st.started += 1;
        }
        true
    }

    /// Returns a targeted job's resources, with how it ended. True: start a
    /// runner (queued work now fits).
    pub fn release(&self, req: &Request, tally: Tally) -> bool {
        let mut st = self.lock();
        st.pool.release(req);
        st.add_ran(tally);
        self.publish(&mut st);
        st.any_fits() && self.take_place(&mut st)
    }

    /// Stops admitting work; returns every queued job (to complete as shut
    /// down).
    pub fn shutdown(&self) -> Vec<J> {
        let mut st = self.lock();
        st.shutdown = true;
        // A submit that put its job in the inbox before this store, and
        // checks `shut` after it, takes it out itself (`submit`).
        self.shut.store(true, Ordering::SeqCst);
        fence(Ordering::SeqCst);
        self.drain(&mut st);
        self.queued_hint.store(0, Ordering::Relaxed);
        st.take_all()
    }

    /// Asks the next runner (in its next [`Dispatch::next`]) to take the
    /// queued jobs that are [cancelled](Queued::cancelled) out and complete
    /// them as such. O(1) here, one cache line, no allocation; the runner
    /// does the O(queue) work. True: start a runner (a place is free and
    /// jobs are queued, so none may come soon).
    ///
    /// No note is lost: the canceller stores the note and loads `active`,
    /// a runner that leaves (or hands its place over) stores `active` and
    /// loads the note, each with a SeqCst fence between (Dekker's
    /// pattern): either the canceller sees the place free and starts a
    /// runner, or that runner sees the note and stays to reap.
    /// (The scheduler runs its pieces, `note_reap`, a fence it may share
    /// with other protocols, and `reap_fenced`; the loom model runs this.)
    #[cfg_attr(not(loom), allow(dead_code))]
    #[inline(always)]
    pub fn reap(&self) -> bool {
        self.note_reap();
        fence(Ordering::SeqCst);
        self.reap_fenced()
    }

    /// [`Dispatch::reap`]'s write: the note.
    #[inline(always)]
    pub fn note_reap(&self) {
        self.note.reap_pending.store(true, Ordering::Release);
    }

    /// [`Dispatch::reap`] after its write and a SeqCst fence (for a
    /// canceller that shares one fence between protocols).
    #[inline(always)]
    pub fn reap_fenced(&self) -> bool {
        // Every place busy: one of those runners reads the note when it
        // asks for its next job.
        if self.note.active_hint.load(Ordering::Relaxed) >= self.note.threads {
            return false;
        }
        self.place_for_reaper()
    }

    /// A place for a runner to reap, if jobs are queued (`reap`'s branch
    /// with an idle place, out of line so that a cancel's code stays small).
    #[cold]
    #[inline(never)]
    fn place_for_reaper(&self) -> bool {
        let mut st = self.lock();
        st.queued > 0 && self.take_place(&mut st)
    }

    /// True if every runner place is taken (a note waits for one of them
    /// to ask for work).
    pub fn every_place_busy(&self) -> bool {
        self.note.active_hint.load(Ordering::Relaxed) >= self.note.threads
    }

    /// The queued jobs that are cancelled, taken out, if a note asks and no
    /// runner took it yet (for a reaper that is not a runner).
    pub fn reap_if_noted(&self) -> Option<Vec<J>> {
        let mut st = self.lock();
        self.reap_now(&mut st)
    }

    /// The queued jobs that are cancelled, taken out, if a note asks (the
    /// check inline: one load on every `next`; the work out of line).
    #[inline]
    fn take_reaped(&self, st: &mut State<J>) -> Option<Vec<J>> {
        if !self.note.reap_pending.load(Ordering::Acquire) {
            return None;
        }
        self.reap_now(st)
    }

    #[cold]
    #[inline(never)]
    fn reap_now(&self, st: &mut State<J>) -> Option<Vec<J>> {
        if !self.note.reap_pending.swap(false, Ordering::AcqRel) {
            return None;
        }
        // The note was taken after the lock's drain: a job pushed before
        // the note was left (so visible now) may be in the inbox still.
        self.drain(st);
        let jobs = st.take_matching(|j| j.cancelled());
        self.queued_hint.store(st.queued, Ordering::Relaxed);
        Some(jobs)
    }

    /// Counts tasks that ended without running (a failed input, shutdown).
    pub fn count(&self, tally: Tally) {
        let mut st = self.lock();
        st.counts.done += tally.done as u64;
        st.counts.failed += tally.failed as u64;
        st.counts.cancelled += tally.cancelled as u64;
    }

    /// The task counts now (one lock; the queue length counts every job).
    pub fn counts(&self) -> Counts {
        let st = self.lock();
        let mut c = st.counts;
        c.queued = st.queued as u64;
        c.running = st.started.saturating_sub(st.ran);
        c
    }

    /// Jobs waiting for resources or a runner.
    pub fn queued(&self) -> usize {
        self.lock().queued
    }

    /// Runners counted as active (started, not blocked, not exited).
    #[cfg(any(loom, test))]
    pub fn active(&self) -> usize {
        self.lock().active
    }

    /// `(name, total, free)` for every resource.
    pub fn resources(&self) -> Vec<(crate::error::Text, f64, f64)> {
        self.lock().pool.snapshot()
    }

    /// Counts a new runner if a place is free.
    fn take_place(&self, st: &mut State<J>) -> bool {
        if st.active < self.threads && !st.shutdown {
            st.active += 1;
            self.note.active_hint.store(st.active, Ordering::Relaxed);
            true
        } else {
            false
        }
    }
}

impl<J: Queued> State<J> {
    /// Counts the tasks a runner ran (they were started).
    fn add_ran(&mut self, t: Tally) {
        let n = (t.done + t.failed + t.cancelled + t.skipped) as u64;
        self.ran += n;
        self.counts.done += t.done as u64;
        self.counts.failed += t.failed as u64;
        self.counts.cancelled += t.cancelled as u64;
    }

    /// Takes every queued job that `matches` out of the queue.
    fn take_matching(&mut self, mut matches: impl FnMut(&J) -> bool) -> Vec<J> {
        let mut out = Vec::new();
        for c in self.classes.iter_mut() {
            if !c.queue.iter().any(|(_, j)| matches(j)) {
                continue;
            }
            let mut keep = VecDeque::with_capacity(c.queue.len());
            for (seq, j) in c.queue.drain(..) {
                if matches(&j) {
                    out.push(j);
                } else {
                    keep.push_back((seq, j));
                }
            }
            c.queue = keep;
        }
        self.queued -= out.len();
        out
    }

    /// Queues a submitted job, counting it.
    fn admit(&mut self, job: J) {
        if job.is_task() {
            self.counts.submitted += 1;
        }
        self.push(job);
    }

    /// Every queued job, taken out (at shutdown).
    fn take_all(&mut self) -> Vec<J> {
        self.queued = 0;
        self.classes.drain(..).flat_map(|c| c.queue.into_iter().map(|(_, j)| j)).collect()
    }

    fn push(&mut self, job: J) {
        self.seq += 1;
        self.queued += 1;
        let seq = self.seq;
        let priority = job.priority();
        match self.classes.iter_mut().find(|c| c.priority == priority && &c.req == job.req()) {
            Some(c) => c.queue.push_back((seq, job)),
            None => {
                let req = job.req().clone();
                let mut queue = VecDeque::new();
                queue.push_back((seq, job));
                self.classes.push(Class { req, priority, queue });
            }
        }
    }

    /// The class whose head is the job to run next among those that fit:
    /// the highest priority, then the oldest.
    fn oldest_fitting(&self) -> Option<usize> {
        let mut best: Option<(usize, u8, u64)> = None;
        for (i, c) in self.classes.iter().enumerate() {
            if let Some((seq, _)) = c.queue.front() {
                let better = best.is_none_or(|(_, p, s)| c.priority > p || (c.priority == p && *seq < s));
                if better && self.pool.fits(&c.req) {
                    best = Some((i, c.priority, *seq));
                }
            }
        }
        best.map(|(i, _, _)| i)
    }

    /// More jobs queued than lingering runners to take them: a new runner
    /// is worth its wake-up. (A lingering runner asks again within
    /// `LINGER`, at once when a job is queued, so a job it will
    /// take needs no runner of its own: starting one anyway wakes a thread
    /// that finds nothing, and in a submit-and-get loop the spare runner
    /// left at the end of each linger, and was woken again by the next
    /// submit, one thread wake-up per task.)
    fn unclaimed(&self) -> bool {
        self.queued > self.lingering
    }

    fn any_fits(&self) -> bool {
        self.queued > 0 && self.oldest_fitting().is_some()
    }

    /// Takes the oldest job whose resources are free, acquiring them.
    fn pop_fitting(&mut self) -> Option<J> {
        let i = self.oldest_fitting()?;
        let (_, job) = self.classes[i].queue.pop_front()?;
        if self.classes[i].queue.is_empty() && self.classes.len() > 1 {
            self.classes.swap_remove(i);
        }
        self.queued -= 1;
        self.pool.acquire(job.req());
        Some(job)
    }
}

#[cfg(all(test, not(loom)))]
#[path = "dispatch_tests.rs"]
mod tests;
