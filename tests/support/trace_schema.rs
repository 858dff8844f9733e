//! The Chrome trace format's rules for what manta's timeline writes,
//! shared by the core's `tests/timeline.rs` and manta-p2p's
//! `tests/cluster_timeline.rs` (included with `#[path]`).

use serde_json::Value;
use std::collections::HashMap;

/// The events of a trace in the JSON object format (with `ns` display
/// units).
pub fn events(json: &str) -> Vec<Value> {
    let v: Value = serde_json::from_str(json).expect("valid JSON");
    let obj = v.as_object().expect("the JSON object format");
    assert_eq!(obj.get("displayTimeUnit").and_then(Value::as_str), Some("ns"));
    obj["traceEvents"].as_array().expect("traceEvents is an array").clone()
}

/// Checks the trace format's rules for the phases the timeline writes:
/// metadata (`M`), complete slices (`X`), instants (`i`) and flows (`s`,
/// `f`: each flow id one start, then one end at its enclosing slice).
pub fn check_schema(evs: &[Value]) {
    let ts_ok = |e: &Value| e["ts"].as_f64().is_some_and(|t| t >= 0.0);
    let mut flows: HashMap<u64, Vec<&str>> = HashMap::new();
    for e in evs {
        let ph = e["ph"].as_str().expect("every event has a phase");
        assert!(e["pid"].is_u64() && e["tid"].is_u64(), "pid and tid are integers: {e}");
        assert!(e["name"].is_string(), "name is a string: {e}");
        match ph {
            "M" => assert!(e["args"]["name"].is_string(), "metadata names a process or thread: {e}"),
            "X" => {
                assert!(ts_ok(e) && e["dur"].as_f64().is_some_and(|d| d >= 0.0), "{e}");
                assert!(e["cat"].is_string());
            }
            "i" => assert!(ts_ok(e) && e["s"].is_string(), "{e}"),
            "s" | "f" => {
                assert!(ts_ok(e), "{e}");
                let id = e["id"].as_u64().unwrap_or_else(|| panic!("a flow has an integer id: {e}"));
                if ph == "f" {
                    assert_eq!(e["bp"].as_str(), Some("e"), "a flow ends at its enclosing slice");
                }
                flows.entry(id).or_default().push(ph);
            }
            other => panic!("unexpected phase {other}"),
        }
    }
    for (id, ends) in flows {
        assert_eq!(ends, ["s", "f"], "flow {id} has one start, then one end");
    }
}
