//! Errors nobody read are logged once (Ray's "unhandled error" report),
//! and every way of reading a result marks its error as read: `get`,
//! `get_timeout`, `try_get`, `get_all` (every failed ref in the list, as
//! Ray's `ray.get([x1, x2])`), `wait` then `get`, `.await`, `on_ready`, a
//! dependent task or an actor call failing because of it. A dependent that
//! fails because of an input and is itself never read is what gets logged
//! (once), so a failure nobody looked at is reported exactly once.
//!
//! Each test uses its own runtime and a unique tag as its panic message, and
//! counts only the log events whose error ends with that tag. Dropping the runtime
//! joins its workers, so once it returns every object a worker held is
//! dropped and its event (if any) was emitted: counting after that is
//! deterministic.

use manta::{Error, Runtime};
use std::future::IntoFuture;
use std::sync::{mpsc, Mutex, OnceLock};
use std::time::Duration;
use tracing_subscriber::layer::SubscriberExt;

const LONG: Duration = Duration::from_secs(10);

fn rt(cpus: usize) -> Runtime {
    install();
    Runtime::builder().num_cpus(cpus).build().expect("runtime")
}

/// Every event logged in this process, as "message | fields".
fn events() -> &'static Mutex<Vec<String>> {
    static EVENTS: OnceLock<Mutex<Vec<String>>> = OnceLock::new();
    EVENTS.get_or_init(|| Mutex::new(Vec::new()))
}

struct Capture;

struct Fields(String);
impl tracing::field::Visit for Fields {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        self.0.push_str(&format!("{}={:?} | ", field.name(), value));
    }
}

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Capture {
    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        let mut f = Fields(String::new());
        event.record(&mut f);
        events().lock().unwrap_or_else(|p| p.into_inner()).push(f.0);
    }
}

/// Installs the capturing subscriber for the whole process (once).
fn install() {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        let subscriber = tracing_subscriber::registry().with(Capture);
        tracing::subscriber::set_global_default(subscriber).expect("no other global subscriber");
    });
}

/// "never read" events whose error ends with the panic message `tag`
/// (tags are panic messages; a dependant's error ends with its root's).
fn never_read(tag: &str) -> usize {
    let ev = events().lock().unwrap_or_else(|p| p.into_inner());
    let end = format!("panicked: {tag} | ");
    ev.iter().filter(|e| e.contains("never read") && e.contains(&end)).count()
}

/// A task that panics with `tag` once `gate` sends (or is dropped).
fn failing_after(rt: &Runtime, tag: &'static str, gate: mpsc::Receiver<()>) -> manta::ObjectRef<u32> {
    rt.task().name(tag).spawn(move || -> u32 {
        let _ = gate.recv();
        panic!("{tag}")
    })
}

/// Waits until `r` is done, without reading it.
fn wait_done<T>(rt: &Runtime, r: &manta::ObjectRef<T>) {
    let (ready, _) = rt.wait(std::slice::from_ref(r), 1, Some(LONG)).unwrap();
    assert_eq!(ready.len(), 1, "done in time");
}

fn failing(rt: &Runtime, tag: &'static str) -> manta::ObjectRef<u32> {
    rt.task().name(tag).spawn(move || -> u32 { panic!("{tag}") })
}

#[test]
fn an_error_nobody_reads_is_logged_exactly_once() {
    let rt = rt(2);
    let x = failing(&rt, "tag-unread");
    wait_done(&rt, &x); // done, not read
    drop(x);
    drop(rt);
    assert_eq!(never_read("tag-unread"), 1);
}

#[test]
fn an_actor_call_error_nobody_reads_is_logged_exactly_once() {
    let rt = rt(2);
    let a = rt.actor_builder().name("unread-actor").spawn(0u32);
    let x = a.call(|_| -> u32 { panic!("tag-actor-unread") });
    wait_done(&rt, &x);
    drop((x, a));
    drop(rt);
    assert_eq!(never_read("tag-actor-unread"), 1);
}

#[test]
fn get_and_get_timeout_and_try_get_mark_it_read() {
    let rt = rt(2);
    let x = failing(&rt, "tag-get");
    assert!(x.get().unwrap_err().is_panic());
    let y = failing(&rt, "tag-get-timeout");
    assert!(y.get_timeout(LONG).unwrap_err().is_panic());
    let z = failing(&rt, "tag-try-get");
    wait_done(&rt, &z);
    assert!(z.try_get().expect("done").unwrap_err().is_panic());
    let w = failing(&rt, "tag-rt-get");
    assert!(rt.get(&w).is_err());
    drop((x, y, z, w));
    drop(rt);
    for tag in ["tag-get", "tag-get-timeout", "tag-try-get", "tag-rt-get"] {
        assert_eq!(never_read(tag), 0, "{tag}");
    }
}

#[test]
fn get_all_marks_every_failed_ref_read() {
    // Ray's test_unhandled_errors: `ray.get([x1, x2])` where both fail (a
    // task and an actor method) reports neither as unhandled afterwards.
    let rt = rt(2);
    let a = rt.actor_builder().name("get-all-actor").spawn(0u32);
    let x1 = failing(&rt, "tag-all-task");
    let x2 = a.call(|_| -> u32 { panic!("tag-all-actor") });
    rt.wait(&[x1.clone(), x2.clone()], 2, Some(LONG)).unwrap();
    assert!(rt.get_all(&[x1.clone(), x2.clone()]).is_err());
    drop((x1, x2, a));
    drop(rt);
    assert_eq!(never_read("tag-all-task"), 0);
    assert_eq!(never_read("tag-all-actor"), 0);
}

#[test]
fn get_all_failing_fast_marks_the_refs_that_fail_later_read_too() {
    let rt = rt(2);
    let (gate, rx) = mpsc::channel();
    let late = failing_after(&rt, "tag-all-late", rx);
    let early = failing(&rt, "tag-all-early");
    match rt.get_all_timeout(&[late.clone(), early.clone()], LONG) {
        Err(Error::TaskPanicked { task, .. }) => assert_eq!(&*task, "tag-all-early"),
        other => panic!("expected the early failure, got {other:?}"),
    }
    assert!(!late.is_ready());
    drop(gate); // `late` fails now, after get_all returned its list's error
    wait_done(&rt, &late);
    drop((late, early));
    drop(rt);
    assert_eq!(never_read("tag-all-early"), 0);
    assert_eq!(never_read("tag-all-late"), 0);
}

#[test]
fn wait_then_get_marks_it_read() {
    let rt = rt(2);
    let x = failing(&rt, "tag-wait-get");
    let (ready, _) = rt.wait(std::slice::from_ref(&x), 1, Some(LONG)).unwrap();
    assert!(ready[0].get().is_err());
    drop((x, ready));
    drop(rt);
    assert_eq!(never_read("tag-wait-get"), 0);
}

#[test]
fn await_and_on_ready_mark_it_read() {
    let rt = rt(2);
    let x = failing(&rt, "tag-await");
    assert!(futures_executor::block_on(x.clone().into_future()).is_err());
    let y = failing(&rt, "tag-on-ready");
    let (tx, rx) = mpsc::channel();
    y.on_ready(move |r| tx.send(r.is_err()).unwrap());
    assert!(rx.recv_timeout(LONG).unwrap());
    drop((x, y));
    drop(rt);
    assert_eq!(never_read("tag-await"), 0);
    assert_eq!(never_read("tag-on-ready"), 0);
}

#[test]
fn a_dependent_task_failing_marks_its_input_read() {
    let rt = rt(2);
    let x = failing(&rt, "tag-dep");
    let y = rt.task().name("dep-reader").spawn_with((x.clone(),), |(v,)| *v + 1);
    match y.get() {
        Err(e @ Error::DependencyFailed { .. }) => assert!(e.is_panic()),
        other => panic!("expected DependencyFailed, got {other:?}"),
    }
    // Submitted after the input failed: fails at submission, same rule.
    let z = rt.task().name("dep-late").spawn_with((x.clone(),), |(v,)| *v + 2);
    assert!(z.get().is_err());
    drop((x, y, z));
    drop(rt);
    assert_eq!(never_read("tag-dep"), 0);
}

#[test]
fn a_failed_dependent_nobody_reads_is_what_is_logged() {
    let rt = rt(2);
    let x = failing(&rt, "tag-dep-unread");
    let y = rt.task().name("dep-unread").spawn_with((x.clone(),), |(v,)| *v + 1);
    wait_done(&rt, &y);
    drop((x, y));
    drop(rt);
    // x's error was carried by y (read); y's was never read: one report.
    assert_eq!(never_read("tag-dep-unread"), 1);
}

#[test]
fn an_actor_call_failing_on_a_failed_input_marks_it_read() {
    let rt = rt(2);
    let a = rt.actor(0u32);
    let (gate, rx) = mpsc::channel();
    let pending = failing_after(&rt, "tag-actor-input-pending", rx);
    let done = failing(&rt, "tag-actor-input-done");
    wait_done(&rt, &done);
    let c1 = a.call_with((pending.clone(),), |n, (v,)| *n + *v);
    let c2 = a.call_with((done.clone(),), |n, (v,)| *n + *v);
    drop(gate);
    assert!(matches!(c1.get(), Err(Error::DependencyFailed { .. })));
    assert!(matches!(c2.get(), Err(Error::DependencyFailed { .. })));
    drop((pending, done, c1, c2, a));
    drop(rt);
    assert_eq!(never_read("tag-actor-input-pending"), 0);
    assert_eq!(never_read("tag-actor-input-done"), 0);
}
