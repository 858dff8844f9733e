#![cfg(loom)]
//! Loom models of the scheduler's dispatch protocol (`src/dispatch.rs`):
//! runners, blocked jobs handing their place over, and runners leaving.
//!
//! The models drive the real `Dispatch` with loom threads as runners (a
//! runner is the loop in `scheduler::run_loop`: `next`, run, repeat; a
//! `true` from any call means "start a runner", done here by spawning a
//! loom thread). Properties checked, over every interleaving loom explores:
//! - **A blocked job never stalls the queue**: on one thread, job A blocks
//!   until job B (queued behind it) has run. A hands its place over before
//!   parking, so B gets a runner and A finishes. With the seeded bug (a
//!   blocked job keeps its place, as the old "help instead" protocol did
//!   when it could not help), loom finds the deadlock:
//!   `a_job_that_keeps_its_place_when_blocked_deadlocks` expects it.
//! - **No lost runner**: a job submitted while the only runner decides to
//!   leave always runs: the submit either takes the lock (a place was
//!   free) or, seeing every place busy, puts the job in the lock-free
//!   inbox, and then the leaving runner's last look at the inbox (after
//!   its store of `active` and a fence, as the submit's push and load)
//!   finds it. With that last look left out (a seeded bug), loom finds
//!   the stranded job.
//! - **Places balance**: once every runner has left, no place is counted
//!   (oversubscription after a resume is given back by the next `next`).
//! - **A lingering runner is counted on**: a submit starts no runner
//!   while as many runners linger as jobs are queued; the lingering
//!   runner always asks again and takes the job (with the seeded bug, a
//!   runner that leaves while lingering, loom finds the stranded job).
//! - **No lost reap note**: a cancel's note (`Dispatch::reap`), left while
//!   the only runner finishes and leaves, is read by that runner or by one
//!   the canceller starts, so a cancelled job never stays queued.
//!
//! Run: `RUSTFLAGS="--cfg loom" LOOM_MAX_PREEMPTIONS=2 cargo test --release -p manta --test loom_dispatch`

use loom::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use loom::sync::Arc;
use loom::thread;
use manta::protocols::{Dispatch, Next, Parker, Queued, Request, Tally, Totals};

/// The runners a model started, joined at its end.
type Spawned = Arc<loom::sync::Mutex<Vec<thread::JoinHandle<()>>>>;

/// What a model job runs, given the dispatch it was taken from.
type Body = Box<dyn FnOnce(&Arc<Dispatch<TestJob>>) + Send>;

/// A job of the model: a one-CPU request and a body.
struct TestJob {
    req: Request,
    cancelled: Arc<AtomicBool>,
    body: Body,
}

impl Queued for TestJob {
    fn req(&self) -> &Request {
        &self.req
    }
    fn cancelled(&self) -> bool {
        self.cancelled.load(Ordering::SeqCst)
    }
}

fn job(body: impl FnOnce(&Arc<Dispatch<TestJob>>) + Send + 'static) -> TestJob {
    TestJob { req: Request::cpus(10_000), cancelled: Arc::new(AtomicBool::new(false)), body: Box::new(body) }
}

/// A job that counts its run in `ran`.
fn counting(ran: &Arc<AtomicUsize>) -> TestJob {
    let r = ran.clone();
    job(move |_| {
        r.fetch_add(1, Ordering::Relaxed);
    })
}

/// Submits a job that counts its run in `ran`, and starts a runner if the
/// submit asks for one.
fn submit_counting(d: &Arc<Dispatch<TestJob>>, spawned: &Spawned, ran: &Arc<AtomicUsize>) {
    if let Ok(true) = d.submit(counting(ran)) {
        start(d, spawned);
    }
}

/// How a model runner treats [`Next::Linger`].
#[derive(Clone, Copy, PartialEq)]
enum Linger {
    /// It never lingers: it always asks as having lingered in vain, so a
    /// runner that finds nothing leaves at once (which only makes leaving
    /// races likelier).
    Never,
    /// It lingers: looks at the queue once (the real spin, cut to one
    /// look) and asks again, as having seen work or not.
    Once,
    /// The seeded bug: it leaves without asking again, as a runner that
    /// took the linger for an exit would.
    LeaveWithoutAsking,
}

/// One runner: the scheduler's loop (`scheduler::run_loop`).
fn runner(d: Arc<Dispatch<TestJob>>, spawned: Spawned) {
    run_loop(d, spawned, Linger::Never)
}

fn run_loop(d: Arc<Dispatch<TestJob>>, spawned: Spawned, linger: Linger) {
    let mut finished: Option<Request> = None;
    let never = linger == Linger::Never;
    let (mut lingered, mut from_linger) = (never, false);
    loop {
        let next = d.next(finished.as_ref().map(|r| (r, Tally::default())), lingered, from_linger);
        from_linger = false;
        match next {
            Next::Run { job, more } => {
                if more {
                    start(&d, &spawned);
                }
                let req = job.req.clone();
                (job.body)(&d);
                finished = Some(req);
                lingered = never;
            }
            Next::Linger { seen } => match linger {
                Linger::Never => unreachable!("lingered is always set"),
                Linger::LeaveWithoutAsking => return,
                Linger::Once => {
                    finished = None;
                    lingered = !d.new_work(seen);
                    from_linger = true;
                }
            },
            Next::Reap(jobs) => {
                finished = None;
                drop(jobs);
            }
            Next::Exit => return,
        }
    }
}

fn start(d: &Arc<Dispatch<TestJob>>, spawned: &Spawned) {
    let (d2, s2) = (d.clone(), spawned.clone());
    let h = thread::spawn(move || runner(d2, s2));
    spawned.lock().unwrap().push(h);
}

fn join_all(spawned: &Spawned) {
    loop {
        let next = spawned.lock().unwrap().pop();
        match next {
            Some(h) => h.join().unwrap(),
            None => return,
        }
    }
}

/// A blocks on a flag that only B (queued behind A) sets.
fn blocked_job_model(d: Dispatch<TestJob>) {
    let d = Arc::new(d);
    let spawned = Arc::new(loom::sync::Mutex::new(Vec::new()));
    let done_b = Arc::new(AtomicBool::new(false));
    let parker = Parker::new();

    let (flag, p, s) = (done_b.clone(), parker.clone(), spawned.clone());
    let a = job(move |d| {
        // What `block_until` does: lend the CPU, then (nothing to run
        // inline) hand the place over before parking.
        if d.lend(10_000) {
            start(d, &s);
        }
        let mut handed = false;
        while !flag.load(Ordering::Acquire) {
            if !handed {
                handed = true;
                if d.hand_over() {
                    start(d, &s);
                }
            }
            p.park_until(None);
        }
        d.resume(10_000, handed);
    });
    let (flag, p) = (done_b.clone(), parker.clone());
    let b = job(move |_| {
        flag.store(true, Ordering::Release);
        p.unpark();
    });
    for j in [a, b] {
        if let Ok(true) = d.submit(j) {
            start(&d, &spawned);
        }
    }
    join_all(&spawned);
    assert!(done_b.load(Ordering::Acquire));
    assert_eq!(d.active(), 0, "every place given back");
    assert_eq!(d.queued(), 0);
}

fn one_thread() -> Dispatch<TestJob> {
    Dispatch::new(Totals::new(1.0, &[]), 1)
}

#[test]
fn a_blocked_job_hands_its_place_over() {
    loom::model(|| blocked_job_model(one_thread()));
}

/// The seeded bug must be caught. Loom reports a deadlock by panicking,
/// and its cleanup then aborts the process, so the buggy model runs in a
/// child process (this test binary again) whose failure is checked here.
#[test]
fn a_job_that_keeps_its_place_when_blocked_deadlocks() {
    seeded_bug_is_caught("a_job_that_keeps_its_place_when_blocked_deadlocks", "deadlock", || {
        blocked_job_model(one_thread().with_seeded_bug())
    });
}

/// Runs `model` (a model with a seeded bug) in a child process, this test
/// binary again running test `name`, and checks that it failed with
/// `expect` in its output.
fn seeded_bug_is_caught(name: &str, expect: &str, model: fn()) {
    if std::env::var_os("MANTA_LOOM_SEEDED_BUG").is_some() {
        loom::model(model);
        return;
    }
    let exe = std::env::current_exe().expect("test binary");
    let out = std::process::Command::new(exe)
        .args(["--exact", name, "--nocapture", "--test-threads=1"])
        .env("MANTA_LOOM_SEEDED_BUG", "1")
        .output()
        .expect("run the seeded model");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "the seeded bug went unnoticed");
    assert!(stderr.contains(expect), "expected the model to report {expect:?}:\n{stderr}");
}

/// A job submitted from another thread while the only runner finishes
/// its job and decides to leave: the submit sees the place busy and puts
/// the job in the inbox, or sees it free and starts a runner.
fn submit_while_leaving_model(d: Dispatch<TestJob>) {
    let d = Arc::new(d);
    let spawned = Arc::new(loom::sync::Mutex::new(Vec::new()));
    let ran = Arc::new(AtomicUsize::new(0));
    submit_counting(&d, &spawned, &ran);
    // Races with the runner finishing its job and leaving.
    let (d2, s2, r2) = (d.clone(), spawned.clone(), ran.clone());
    let submitter = thread::spawn(move || submit_counting(&d2, &s2, &r2));
    submitter.join().unwrap();
    join_all(&spawned);
    assert_eq!(ran.load(Ordering::Relaxed), 2, "a job was stranded without a runner");
    assert_eq!(d.active(), 0);
}

#[test]
fn a_job_submitted_while_the_runner_leaves_still_runs() {
    loom::model(|| submit_while_leaving_model(one_thread()));
}

/// Two submitters race the leaving runner: a submit whose push is held
/// back behind another's unfinished one (the ring hands values out in
/// order) still gets its job run, by that other submit's own check.
#[test]
fn two_jobs_submitted_from_two_threads_while_the_runner_leaves_both_run() {
    loom::model(|| {
        let d = Arc::new(one_thread());
        let spawned = Arc::new(loom::sync::Mutex::new(Vec::new()));
        let ran = Arc::new(AtomicUsize::new(0));
        if let Ok(true) = d.submit(job(|_| {})) {
            start(&d, &spawned);
        }
        // One submit from a thread of its own, one from this thread (loom
        // allows few threads).
        let (d2, s2, r2) = (d.clone(), spawned.clone(), ran.clone());
        let other = thread::spawn(move || submit_counting(&d2, &s2, &r2));
        submit_counting(&d, &spawned, &ran);
        other.join().unwrap();
        join_all(&spawned);
        assert_eq!(ran.load(Ordering::Relaxed), 2, "a job was stranded without a runner");
        assert_eq!(d.active(), 0);
    });
}

/// The inbox's seeded bug (a runner leaves without a last look at the
/// inbox) must be caught: a job is stranded. Run in a child process, as
/// for the other seeded bug.
#[test]
fn a_runner_that_leaves_without_a_last_look_at_the_inbox_strands_a_job() {
    seeded_bug_is_caught("a_runner_that_leaves_without_a_last_look_at_the_inbox_strands_a_job", "stranded", || {
        submit_while_leaving_model(one_thread().with_inbox_bug())
    });
}

/// Two places, one runner: a job submitted while that runner lingers.
/// The submit counts on it (a place is free, but it starts no runner
/// while as many runners linger as jobs are queued), and the runner,
/// which always asks again, runs it; or the runner has left, or is busy
/// with the first job, and the submit starts one.
fn submit_while_lingering_model(leave_while_lingering: bool) {
    let d = Arc::new(Dispatch::new(Totals::new(2.0, &[]), 2));
    let spawned = Arc::new(loom::sync::Mutex::new(Vec::new()));
    let ran = Arc::new(AtomicUsize::new(0));
    assert!(matches!(d.submit(counting(&ran)), Ok(true)));
    let (d2, s2) = (d.clone(), spawned.clone());
    let linger = if leave_while_lingering { Linger::LeaveWithoutAsking } else { Linger::Once };
    let lingerer = thread::spawn(move || run_loop(d2, s2, linger));
    submit_counting(&d, &spawned, &ran);
    lingerer.join().unwrap();
    join_all(&spawned);
    assert_eq!(ran.load(Ordering::Relaxed), 2, "a job was stranded without a runner");
    // (The seeded bug also leaves the lingerer's place counted; only the
    // stranded job is checked then, so that the model must find it.)
    if !leave_while_lingering {
        assert_eq!(d.active(), 0);
        assert_eq!(d.queued(), 0);
    }
}

#[test]
fn a_job_submitted_while_the_runner_lingers_is_run_by_it() {
    loom::model(|| submit_while_lingering_model(false));
}

/// The lingering runner's seeded bug (it leaves without asking again)
/// must be caught: the job that counted on it is stranded.
#[test]
fn a_lingering_runner_that_never_asks_again_strands_a_job() {
    seeded_bug_is_caught("a_lingering_runner_that_never_asks_again_strands_a_job", "stranded", || {
        submit_while_lingering_model(true)
    });
}

#[test]
fn a_reap_note_left_while_the_runner_leaves_is_read() {
    loom::model(|| {
        let d = Arc::new(one_thread());
        let spawned = Arc::new(loom::sync::Mutex::new(Vec::new()));
        if let Ok(true) = d.submit(job(|_| {})) {
            start(&d, &spawned);
        }
        // Needs two CPUs of one: stays queued, so the runner leaves with it
        // there (only a reap takes it out).
        let flag = Arc::new(AtomicBool::new(false));
        let stuck = TestJob { req: Request::cpus(20_000), cancelled: flag.clone(), body: Box::new(|_| {}) };
        assert!(matches!(d.submit(stuck), Ok(false)));
        // Races with the runner finishing its job and leaving.
        let (d2, s2) = (d.clone(), spawned.clone());
        let canceller = thread::spawn(move || {
            flag.store(true, Ordering::SeqCst);
            if d2.reap() {
                start(&d2, &s2);
            }
        });
        canceller.join().unwrap();
        join_all(&spawned);
        assert_eq!(d.queued(), 0, "a cancelled job stayed queued: the reap note was lost");
        assert_eq!(d.active(), 0);
    });
}
