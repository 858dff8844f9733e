//! The timeline: off by default; when on, every task of a DAG appears on
//! its worker's track with the right flow arrows, in Chrome's trace format
//! (checked field by field against the format's rules), plus store moves.

use manta::{Runtime, StoreOp, TimelineEvent, TimelineOutcome};
use serde_json::Value;
use std::collections::{HashMap, HashSet};

#[path = "support/trace_schema.rs"]
mod trace_schema;
use trace_schema::{check_schema, events};

#[test]
fn off_by_default_and_a_dag_with_its_arrows_when_on() {
    let rt = Runtime::builder().num_cpus(2).build().unwrap();
    rt.spawn(|| 1).get().unwrap();
    assert!(rt.timeline().events.is_empty(), "recording is off by default");

    rt.record_timeline(true);
    let a = rt.task().name("a").spawn(|| 1u32);
    let b = rt.task().name("b").spawn(|| 2u32);
    let c = rt.task().name("c").spawn_with((a.clone(), b.clone()), |(a, b)| *a + *b);
    let d = rt.task().name("d").spawn_with((c.clone(),), |(c,)| *c * 10);
    let bad = rt.task().name("bad").spawn(|| -> u32 { panic!("no") });
    assert_eq!(*d.get().unwrap(), 30);
    assert!(bad.get().is_err());
    rt.record_timeline(false);
    let t = rt.timeline();

    let tasks: HashMap<String, &TimelineEvent> = t
        .events
        .iter()
        .filter_map(|e| match e {
            TimelineEvent::Task { name, .. } => Some((name.to_string(), e)),
            _ => None,
        })
        .collect();
    for n in ["a", "b", "c", "d", "bad"] {
        assert!(tasks.contains_key(n), "task {n} missing: {:?}", t.events);
    }
    match tasks["c"] {
        TimelineEvent::Task { inputs, outcome, start, end, cpus, .. } => {
            let ins: HashSet<_> = inputs.iter().copied().collect();
            assert_eq!(ins, HashSet::from([a.id(), b.id()]));
            assert_eq!(*outcome, TimelineOutcome::Done);
            assert!(end >= start && *cpus == 1.0);
        }
        _ => unreachable!(),
    }
    assert!(matches!(tasks["bad"], TimelineEvent::Task { outcome: TimelineOutcome::Failed, .. }));
    for e in tasks.values() {
        if let TimelineEvent::Task { submitted, start, attempts, .. } = e {
            assert!(submitted <= start, "submitted before it started");
            assert_eq!(*attempts, 1);
        }
    }

    let evs = events(&t.to_chrome_json("manta test"));
    check_schema(&evs);
    let slices: HashMap<&str, &Value> =
        evs.iter().filter(|e| e["ph"] == "X" && e["cat"] == "task").map(|e| (e["name"].as_str().unwrap(), e)).collect();
    assert_eq!(slices.len(), 5);
    // Arrows: a -> c, b -> c, c -> d, each an "s" on the producer's track at
    // its end and an "f" on the consumer's track at its start.
    let starts: Vec<&Value> = evs.iter().filter(|e| e["ph"] == "s").collect();
    let finishes: Vec<&Value> = evs.iter().filter(|e| e["ph"] == "f").collect();
    assert_eq!((starts.len(), finishes.len()), (3, 3));
    for f in &finishes {
        let s = starts.iter().find(|s| s["id"] == f["id"]).expect("each flow has a start");
        assert!(s["ts"].as_f64() <= f["ts"].as_f64(), "an arrow goes forward in time");
        // Timestamps are coarse (a clock read every few events), so several
        // slices may share one: the arrow ends where c or d starts.
        let at_consumer =
            slices.iter().any(|(n, x)| ["c", "d"].contains(n) && x["ts"] == f["ts"] && x["tid"] == f["tid"]);
        assert!(at_consumer, "an arrow ends at the start of c or d: {f}");
    }
    let thread_names: Vec<&str> = evs
        .iter()
        .filter(|e| e["ph"] == "M" && e["name"] == "thread_name")
        .map(|e| e["args"]["name"].as_str().unwrap())
        .collect();
    assert!(thread_names.iter().any(|n| n.starts_with("manta")), "{thread_names:?}");
    let path = std::env::temp_dir().join(format!("manta-trace-{}.json", std::process::id()));
    t.write_chrome_trace(&path, "manta test").unwrap();
    assert!(std::fs::metadata(&path).unwrap().len() > 100);
    let _ = std::fs::remove_file(&path);
}

#[test]
fn spills_and_restores_are_on_the_timeline() {
    let dir = std::env::temp_dir().join(format!("manta-timeline-spill-{}", std::process::id()));
    let rt = Runtime::builder().num_cpus(1).store_capacity(3 << 20).spill_dir(&dir).timeline(true).build().unwrap();
    let refs: Vec<_> = (0..6u8).map(|i| rt.put(vec![i; 1 << 20]).unwrap()).collect();
    assert_eq!(refs[0].get().unwrap()[0], 0);
    let ops: Vec<StoreOp> = rt
        .timeline()
        .events
        .iter()
        .filter_map(|e| if let TimelineEvent::Store { op, .. } = e { Some(*op) } else { None })
        .collect();
    assert!(ops.contains(&StoreOp::Spill) && ops.contains(&StoreOp::Restore), "{ops:?}");
    rt.clear_timeline();
    assert!(rt.timeline().events.is_empty());
    drop(refs);
    let _ = std::fs::remove_dir_all(&dir);
}

struct Counter {
    n: u64,
}

impl Counter {
    fn add(&mut self, by: u64) -> u64 {
        self.n += by;
        self.n
    }
}

#[test]
fn actor_calls_are_slices_with_arrows_to_and_from_tasks() {
    let rt = Runtime::builder().num_cpus(2).timeline(true).build().unwrap();
    let counter = rt.actor_builder().name("counter").spawn(Counter { n: 0 });
    let x = rt.task().name("x").spawn(|| 5u64);
    let added = counter.call_with((x.clone(),), |c, (by,)| c.add(*by));
    let bad = counter.call(|_c| -> u64 { panic!("broken call") });
    let y = rt.task().name("y").spawn_with((added.clone(),), |(v,)| *v * 2);
    assert_eq!(*y.get().unwrap(), 10);
    assert!(bad.get().is_err());
    let t = rt.timeline();

    let calls: Vec<&TimelineEvent> = t.events.iter().filter(|e| matches!(e, TimelineEvent::Call { .. })).collect();
    assert_eq!(calls.len(), 2, "{calls:?}");
    for c in &calls {
        let TimelineEvent::Call { actor, id, submitted, start, end, outcome, inputs, .. } = c else { unreachable!() };
        assert_eq!(&**actor, "counter");
        assert!(submitted <= start && start <= end);
        if *id == added.id() {
            assert_eq!(*outcome, TimelineOutcome::Done);
            assert_eq!(&inputs[..], &[x.id()]);
        } else {
            assert_eq!(*id, bad.id());
            assert_eq!(*outcome, TimelineOutcome::Failed);
        }
    }

    let evs = events(&t.to_chrome_json("actors"));
    check_schema(&evs);
    let slice = |cat: &str, id: manta::ObjectId| -> Value {
        evs.iter()
            .find(|e| e["ph"] == "X" && e["cat"] == cat && e["args"]["id"] == id.to_string())
            .unwrap_or_else(|| panic!("no {cat} slice for {id}"))
            .clone()
    };
    let call = slice("actor", added.id());
    assert!(call["name"].as_str().unwrap().starts_with("counter."), "{call}");
    let (xs, ys) = (slice("task", x.id()), slice("task", y.id()));
    // x -> the call and the call -> y: each a flow start on the producer's
    // track and a finish on the consumer's, at the consumer's start.
    let flow_into = |consumer: &Value| {
        evs.iter().any(|f| {
            f["ph"] == "f"
                && f["tid"] == consumer["tid"]
                && f["ts"] == consumer["ts"]
                && evs.iter().any(|s| s["ph"] == "s" && s["id"] == f["id"])
        })
    };
    assert!(flow_into(&call), "an arrow from x to the call");
    assert!(flow_into(&ys), "an arrow from the call to y");
    assert!(xs["dur"].as_f64().is_some());
}

#[test]
fn several_timelines_merge_into_one_trace_on_one_clock() {
    use manta::{ChromeTrace, Timeline, TimelineLabel, TransferDirection, TransferLane};
    let task =
        |name: &'static str, start: u64, id: manta::ObjectId, inputs: Vec<manta::ObjectId>| TimelineEvent::Task {
            id,
            name: TimelineLabel::Static(name),
            submitted: start,
            thread: 1,
            start,
            end: start + 1000,
            outcome: TimelineOutcome::Done,
            cpus: 1.0,
            attempts: 1,
            inputs: inputs.into(),
        };
    let make = |name, start: u64| task(name, start, manta::ObjectId::from_bytes([start as u8; 16]), vec![]);
    let id = manta::ObjectId::from_bytes([7; 16]);
    let moved = |direction, start| TimelineEvent::Transfer {
        id,
        bytes: 10,
        peer: "peer".into(),
        direction,
        lane: TransferLane::Bulk,
        thread: 2,
        start,
        end: start + 500,
    };
    let one =
        Timeline { events: vec![make("a", 7), moved(TransferDirection::Out, 2000)], threads: vec![(1, "w".into())] };
    let reader = task("b", 9000, manta::ObjectId::from_bytes([1; 16]), vec![id]);
    let two = Timeline { events: vec![moved(TransferDirection::In, 9000), reader], threads: vec![(2, "net".into())] };
    let producer = task("p", 1500, id, vec![]);
    let one = Timeline { events: [one.events, vec![producer]].concat(), ..one };
    let mut trace = ChromeTrace::new();
    trace.add_process("one", one, 0);
    // The second node's clock runs 8 µs ahead: shifted back, some of its
    // times would be negative, so everything moves up.
    trace.add_process("two", two, -10_000);
    let evs = events(&trace.to_json());
    check_schema(&evs);
    let procs: Vec<(u64, &str)> = evs
        .iter()
        .filter(|e| e["name"] == "process_name")
        .map(|e| (e["pid"].as_u64().unwrap(), e["args"]["name"].as_str().unwrap()))
        .collect();
    assert_eq!(procs, [(1, "one"), (2, "two")]);
    let ts = |name: &str| evs.iter().find(|e| e["ph"] == "X" && e["name"] == name).unwrap()["ts"].as_f64().unwrap();
    assert!(evs.iter().all(|e| e["ts"].as_f64().is_none_or(|t| t >= 0.0)));
    // two's receive at 9 µs - 10 µs = -1 µs is the earliest: it is at 0.
    assert_eq!((ts("receive"), ts("a"), ts("b")), (0.0, 1.007, 0.0), "one offset for all of a process");
    // Arrows across processes: the producer to the transfer in and to the
    // reader.
    let ends: Vec<u64> = evs.iter().filter(|e| e["ph"] == "f").map(|e| e["pid"].as_u64().unwrap()).collect();
    assert_eq!(ends, [2, 2], "{evs:?}");
}

#[test]
fn no_arrow_into_a_task_cancelled_before_its_input_ended() {
    let rt = Runtime::builder().num_cpus(1).build().unwrap();
    rt.record_timeline(true);
    let (release, hold) = std::sync::mpsc::channel::<()>();
    let (started_tx, started) = std::sync::mpsc::channel::<()>();
    let input = rt.task().name("input").spawn(move || {
        started_tx.send(()).unwrap();
        let _ = hold.recv();
        1u32
    });
    started.recv().unwrap();
    let group = rt.group();
    let never = group.task().name("never").spawn_with((input.clone(),), |(x,)| *x);
    assert!(group.cancel());
    assert!(never.get().unwrap_err().is_cancelled());
    drop(release);
    assert_eq!(*input.get().unwrap(), 1);
    let read = rt.task().name("read").spawn_with((input.clone(),), |(x,)| *x + 1);
    assert_eq!(*read.get().unwrap(), 2);
    rt.record_timeline(false);
    let evs = events(&rt.timeline().to_chrome_json("manta test"));
    check_schema(&evs);
    let starts: Vec<&Value> = evs.iter().filter(|e| e["ph"] == "s").collect();
    let finishes: Vec<&Value> = evs.iter().filter(|e| e["ph"] == "f").collect();
    // Only input -> read: the cancelled task never read its input.
    assert_eq!((starts.len(), finishes.len()), (1, 1), "{evs:?}");
    assert!(starts[0]["ts"].as_f64() <= finishes[0]["ts"].as_f64());
}
