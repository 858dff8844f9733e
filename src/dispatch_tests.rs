//! Unit tests of `dispatch` that need no interleavings (the concurrent
//! protocol is model-checked by `tests/loom_dispatch.rs`): what a
//! lingering runner is told, and what ends its linger.

use super::*;
use crate::resources::{Request, Totals};

struct TestJob(Request);

impl Queued for TestJob {
    fn req(&self) -> &Request {
        &self.0
    }
}

/// One CPU for one runner place.
fn one_cpu() -> Dispatch<TestJob> {
    Dispatch::new(Totals::new(1.0, &[]), 1)
}

/// A job of `n` whole CPUs.
fn cpus(n: u64) -> TestJob {
    TestJob(Request::cpus(n * 10_000))
}

#[test]
fn a_job_that_does_not_fit_is_not_new_work_for_a_lingering_runner() {
    let d = one_cpu();
    assert!(matches!(d.submit(cpus(1)), Ok(true)), "a place for the first job");
    let Next::Run { job, .. } = d.next(None, false, false) else { panic!("the first job runs") };
    // Needs two CPUs of one: stays queued.
    assert!(matches!(d.submit(cpus(2)), Ok(false)));
    let Next::Linger { seen } = d.next(Some((&job.0, Tally::default())), false, false) else {
        panic!("nothing fits: linger")
    };
    assert!(!d.new_work(seen), "the queued job that does not fit ends no linger");
    // A job that fits arrives: the lingering runner is counted on for it
    // (no runner started), and sees it as new work.
    assert!(matches!(d.submit(cpus(1)), Ok(false)), "the lingering runner takes it");
    assert!(d.new_work(seen));
    let Next::Run { job, more } = d.next(None, false, true) else { panic!("it runs the new job") };
    assert!(!more);
    assert_eq!(job.0, Request::cpus(10_000));
}

#[test]
fn a_submit_starts_a_runner_only_for_jobs_no_lingering_runner_takes() {
    let d = Dispatch::new(Totals::new(2.0, &[]), 2);
    assert!(matches!(d.submit(cpus(1)), Ok(true)));
    let Next::Run { job, more } = d.next(None, false, false) else { panic!("runs") };
    assert!(!more);
    assert!(matches!(d.next(Some((&job.0, Tally::default())), false, false), Next::Linger { .. }));
    // One runner lingers and a place is free: the first job is its, the
    // second gets a runner of its own.
    assert!(matches!(d.submit(cpus(1)), Ok(false)));
    assert!(matches!(d.submit(cpus(1)), Ok(true)));
    assert_eq!(d.active(), 2);
}

#[test]
fn resources_lent_by_a_blocked_job_are_new_work_for_a_lingering_runner() {
    let d = Dispatch::new(Totals::new(2.0, &[]), 2);
    assert!(matches!(d.submit(cpus(1)), Ok(true)));
    assert!(matches!(d.submit(cpus(1)), Ok(true)));
    let Next::Run { job: a, .. } = d.next(None, false, false) else { panic!("a runs") };
    let Next::Run { .. } = d.next(None, false, false) else { panic!("b runs") };
    // Both CPUs taken: a two-CPU job waits; a's runner lingers.
    assert!(matches!(d.submit(cpus(2)), Ok(false)));
    drop(a);
    let Next::Linger { seen } = d.next(Some((&Request::cpus(10_000), Tally::default())), false, false) else {
        panic!("one CPU free, the job needs two: linger")
    };
    assert!(!d.new_work(seen));
    // b blocks in a `get` and lends its CPU: now the job fits.
    assert!(!d.lend(10_000), "no free place: the lingering runner is counted on");
    assert!(d.new_work(seen));
    assert!(matches!(d.next(None, false, true), Next::Run { .. }));
}

#[test]
fn a_targeted_job_takes_lent_cpus_but_only_free_custom_resources() {
    let totals = Totals::new(1.0, &[("GPU".into(), 1.0)]);
    let d: Dispatch<TestJob> = Dispatch::new(totals.clone(), 1);
    let gpu = totals.request(&"t", 1.0, &[("GPU".into(), 1.0)]).unwrap();
    assert!(d.acquire(&gpu, true), "the GPU is free: taken");
    // Another targeted run of a GPU job: the CPU would be lent, but the
    // only GPU is held.
    assert!(!d.acquire(&gpu, true), "the GPU is held: nothing taken");
    assert!(d.acquire(&Request::cpus(10_000), true), "CPUs oversubscribe");
    let done = Tally { done: 1, ..Tally::default() };
    d.release(&gpu, done);
    assert!(d.acquire(&gpu, true), "free again");
}
