//! Chrome trace JSON from one or several timelines ([`ChromeTrace`]): one
//! process (`pid`) per timeline, named by a `process_name` metadata event,
//! one track per thread inside it (`thread_name`), a complete slice (`"X"`)
//! per task, actor call, store operation and object transfer, and flow
//! arrows (`"s"`/`"f"`) from the task or call that made an object to each
//! task or call that read it and to each transfer that brought it to
//! another process, and from a task's submission on one process to its
//! run on another.
//!
//! Invariants: a process's times are shifted by its offset (nanoseconds,
//! to put every process on one clock); if any shifted time would be
//! negative, every time is moved up by the same amount so none is (Chrome
//! traces want `ts >= 0`); a flow's two ends use one `id`, unique in the
//! trace; every string is escaped as JSON.

use crate::id::ObjectId;
use crate::timeline::{Direction, Event, Timeline};
use std::collections::HashMap;
use std::fmt::Write;

/// A trace being assembled from timelines (see the module docs).
#[derive(Debug, Clone, Default)]
pub struct ChromeTrace {
    /// `(name, timeline, offset in ns added to its times)`, pid = index + 1.
    processes: Vec<(String, Timeline, i64)>,
}

fn us(ns: i64) -> f64 {
    ns as f64 / 1000.0
}

/// A JSON string literal.
pub(crate) fn js(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A closure's type name made short for a slice's title: the last path
/// segment that is not `{{closure}}` (`app::Counter::add::{{closure}}`
/// gives `add`).
fn short_method(type_name: &str) -> &str {
    type_name.rsplit("::").find(|seg| !seg.starts_with("{{") && !seg.is_empty()).unwrap_or(type_name)
}

/// The span of an event: (thread, start, end).
fn span(e: &Event) -> (u32, u64, u64) {
    match e {
        Event::Task { thread, start, end, .. }
        | Event::Call { thread, start, end, .. }
        | Event::Store { thread, start, end, .. }
        | Event::Transfer { thread, start, end, .. } => (*thread, *start, *end),
        Event::Submit { thread, at, .. } => (*thread, *at, *at),
    }
}

impl ChromeTrace {
    /// An empty trace.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a process named `name` holding `timeline`'s events, with
    /// `offset_ns` added to each of its times (0 for the clock the others
    /// are aligned to). Its pid is the number of processes added so far
    /// plus one.
    pub fn add_process(&mut self, name: &str, timeline: Timeline, offset_ns: i64) {
        self.processes.push((name.to_string(), timeline, offset_ns));
    }

    /// The trace as Chrome trace JSON (the "JSON object format":
    /// `{"traceEvents": [...]}`), which Perfetto and `chrome://tracing`
    /// open.
    pub fn to_json(&self) -> String {
        // Move everything up if an offset made some time negative.
        let lowest = self
            .processes
            .iter()
            .flat_map(|(_, t, off)| t.events.iter().map(move |e| span(e).1 as i64 + off))
            .min()
            .unwrap_or(0);
        let base = lowest.min(0);
        let at = |t: u64, off: i64| us(t as i64 + off - base);
        let mut ev: Vec<String> = Vec::new();
        // Who made each object: (pid, thread, end as shifted ns).
        let mut made_by: HashMap<ObjectId, (usize, u32, i64)> = HashMap::new();
        // Where each task was last sent from: (pid, thread, shifted ns).
        let mut sent_from: HashMap<ObjectId, (usize, u32, i64)> = HashMap::new();
        for (i, (name, t, off)) in self.processes.iter().enumerate() {
            let pid = i + 1;
            ev.push(format!(
                r#"{{"ph":"M","name":"process_name","pid":{pid},"tid":0,"args":{{"name":{}}}}}"#,
                js(name)
            ));
            for (tid, name) in &t.threads {
                ev.push(format!(
                    r#"{{"ph":"M","name":"thread_name","pid":{pid},"tid":{tid},"args":{{"name":{}}}}}"#,
                    js(name)
                ));
            }
            for e in &t.events {
                if let Event::Task { id, thread, end, .. } | Event::Call { id, thread, end, .. } = e {
                    made_by.insert(*id, (pid, *thread, *end as i64 + off));
                }
                if let Event::Submit { id, thread, at, .. } = e {
                    let t = *at as i64 + off;
                    if sent_from.get(id).is_none_or(|s| s.2 < t) {
                        sent_from.insert(*id, (pid, *thread, t));
                    }
                }
            }
        }
        let mut flow = 0u64;
        // An arrow from the maker of `id` to (pid, thread) at `start`.
        let mut arrow = |ev: &mut Vec<String>,
                         from: Option<&(usize, u32, i64)>,
                         pid: usize,
                         thread: u32,
                         start: f64| {
            if let Some((ppid, ptid, pend)) = from {
                flow += 1;
                ev.push(format!(
                    r#"{{"ph":"s","name":"dep","cat":"dep","id":{flow},"pid":{ppid},"tid":{ptid},"ts":{}}}"#,
                    us(pend - base)
                ));
                ev.push(format!(
                    r#"{{"ph":"f","bp":"e","name":"dep","cat":"dep","id":{flow},"pid":{pid},"tid":{thread},"ts":{start}}}"#
                ));
            }
        };
        let ids = |inputs: &[ObjectId]| inputs.iter().map(|i| format!("\"{i}\"")).collect::<Vec<_>>().join(",");
        for (i, (_, t, off)) in self.processes.iter().enumerate() {
            let (pid, off) = (i + 1, *off);
            for e in &t.events {
                match e {
                    Event::Task { id, name, submitted, thread, start, end, outcome, cpus, attempts, inputs } => {
                        let queued = us(start.saturating_sub(*submitted) as i64);
                        ev.push(format!(
                            r#"{{"ph":"X","name":{},"cat":"task","pid":{pid},"tid":{thread},"ts":{},"dur":{},"args":{{"id":"{id}","outcome":"{outcome:?}","cpus":{cpus},"attempts":{attempts},"inputs":[{}],"queued_us":{queued}}}}}"#,
                            js(&name.to_string()),
                            at(*start, off),
                            us(end.saturating_sub(*start) as i64),
                            ids(inputs)
                        ));
                        // A task that never ran (cancelled, or its input
                        // failed) read no input: an arrow only from those
                        // that had ended when it did.
                        let read = |m: &&(usize, u32, i64)| *attempts > 0 || m.2 <= *start as i64 + off;
                        for input in inputs.iter() {
                            arrow(&mut ev, made_by.get(input).filter(read), pid, *thread, at(*start, off));
                        }
                        let sender = sent_from.get(id).filter(|s| s.0 != pid);
                        arrow(&mut ev, sender, pid, *thread, at(*start, off));
                    }
                    Event::Call { actor, method, id, submitted, thread, start, end, outcome, inputs } => {
                        let queued = us(start.saturating_sub(*submitted) as i64);
                        let method = method.to_string();
                        ev.push(format!(
                            r#"{{"ph":"X","name":{},"cat":"actor","pid":{pid},"tid":{thread},"ts":{},"dur":{},"args":{{"id":"{id}","actor":{},"method":{},"outcome":"{outcome:?}","inputs":[{}],"queued_us":{queued}}}}}"#,
                            js(&format!("{actor}.{}", short_method(&method))),
                            at(*start, off),
                            us(end.saturating_sub(*start) as i64),
                            js(actor),
                            js(&method),
                            ids(inputs)
                        ));
                        for input in inputs.iter() {
                            arrow(&mut ev, made_by.get(input), pid, *thread, at(*start, off));
                        }
                    }
                    Event::Store { op, id, bytes, thread, start, end } => ev.push(format!(
                        r#"{{"ph":"X","name":"{op:?}","cat":"store","pid":{pid},"tid":{thread},"ts":{},"dur":{},"args":{{"id":"{id}","bytes":{bytes}}}}}"#,
                        at(*start, off),
                        us(end.saturating_sub(*start) as i64)
                    )),
                    Event::Transfer { id, bytes, peer, direction, lane, thread, start, end } => {
                        let name = match direction {
                            Direction::In => "receive",
                            Direction::Out => "send",
                        };
                        ev.push(format!(
                            r#"{{"ph":"X","name":"{name}","cat":"transfer","pid":{pid},"tid":{thread},"ts":{},"dur":{},"args":{{"id":"{id}","bytes":{bytes},"peer":{},"direction":"{direction:?}","lane":"{lane:?}"}}}}"#,
                            at(*start, off),
                            us(end.saturating_sub(*start) as i64),
                            js(peer)
                        ));
                        let maker = made_by.get(id).filter(|m| m.0 != pid);
                        if *direction == Direction::In {
                            arrow(&mut ev, maker, pid, *thread, at(*start, off));
                        }
                    }
                    Event::Submit { id, peer, thread, at: t } => {
                        ev.push(format!(
                            r#"{{"ph":"X","name":"submit","cat":"submit","pid":{pid},"tid":{thread},"ts":{},"dur":0,"args":{{"id":"{id}","peer":{}}}}}"#,
                            at(*t, off),
                            js(peer)
                        ));
                    }
                }
            }
        }
        format!("{{\"traceEvents\":[\n{}\n],\"displayTimeUnit\":\"ns\"}}\n", ev.join(",\n"))
    }
}
