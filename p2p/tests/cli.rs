//! The built `manta` and `manta-node` binaries: `--help` for every
//! subcommand, shell completions, and `manta status` (`--json`, `--watch
//! --count`, the metrics summary from heartbeats, the exit status when no
//! peer answers) and `manta timeline` against an in-process node on 127.0.0.1 with a secret.

use manta::Runtime;
use manta_p2p::Node;
use std::process::{Command, Output};
use std::time::Duration;

const MANTA: &str = env!("CARGO_BIN_EXE_manta");
const MANTA_NODE: &str = env!("CARGO_BIN_EXE_manta-node");

fn run(bin: &str, args: &[&str], secret: Option<&str>) -> Output {
    let mut cmd = Command::new(bin);
    cmd.args(args).env_remove("MANTA_SECRET");
    if let Some(s) = secret {
        cmd.env("MANTA_SECRET", s);
    }
    cmd.output().unwrap_or_else(|e| panic!("{bin} {args:?}: {e}"))
}

/// A node on 127.0.0.1 with cluster secret `key`, heartbeats every 100 ms,
/// recording a timeline if `timeline`.
fn node_with_secret(key: [u8; 32], timeline: bool) -> Node {
    let rt = Runtime::builder().num_cpus(1).build().unwrap();
    Node::builder(rt)
        .listen("/ip4/127.0.0.1/tcp/0".parse().unwrap())
        .heartbeat(Duration::from_millis(100))
        .secret(key)
        .timeline(timeline)
        .start()
        .unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn every_subcommand_has_help_and_completions_print() {
    for (bin, args) in [
        (MANTA, &["--help"][..]),
        (MANTA, &["help"]),
        (MANTA, &["status", "--help"]),
        (MANTA, &["completions", "--help"]),
        (MANTA, &["timeline", "--help"]),
        (MANTA_NODE, &["--help"]),
        (MANTA_NODE, &["completions", "--help"]),
    ] {
        let out = run(bin, args, None);
        assert!(out.status.success(), "{bin} {args:?}: {}", text(&out.stderr));
        assert!(text(&out.stdout).contains("Usage:"), "{bin} {args:?}: {}", text(&out.stdout));
    }
    let help = text(&run(MANTA, &["status", "--help"], None).stdout);
    for flag in ["--bootstrap", "--peers", "--timeout", "--secret-file", "--json", "--watch", "--count"] {
        assert!(help.contains(flag), "{flag} missing from `manta status --help`");
    }
    let help = text(&run(MANTA, &["timeline", "--help"], None).stdout);
    for flag in ["--bootstrap", "--peers", "--timeout", "--secret-file", "--output"] {
        assert!(help.contains(flag), "{flag} missing from `manta timeline --help`");
    }
    let help = text(&run(MANTA_NODE, &["--help"], None).stdout);
    for flag in ["--timeline", "--cpus", "--heartbeat-ms", "--failure-ms", "--secret-file", "--threshold", "--listen"] {
        assert!(help.contains(flag), "{flag} missing from `manta-node --help`");
    }
    for (bin, name) in [(MANTA, "manta"), (MANTA_NODE, "manta-node")] {
        let out = run(bin, &["completions", "bash"], None);
        assert!(out.status.success(), "{}", text(&out.stderr));
        assert!(text(&out.stdout).contains(&format!("complete -F _{} ", name.replace('-', "__"))), "{name} bash");
    }
    // Bad input is an error with a message, not a panic.
    let out = run(MANTA, &["status"], None);
    assert_eq!(out.status.code(), Some(2), "clap's usage error");
    assert!(text(&out.stderr).contains("--bootstrap"));
    let out = run(MANTA_NODE, &["--bogus"], None);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stdout).starts_with("ERR ") && text(&out.stdout).contains("--bogus"), "{}", text(&out.stdout));
}

#[test]
fn status_prints_json_with_the_nodes_summary_and_fails_clearly_without_peers() {
    let key = [7u8; 32];
    let secret = hex::encode(key);
    let node = node_with_secret(key, false);
    // Work done before the observer joins: every heartbeat it hears says so.
    assert_eq!(*node.runtime().spawn(|| 6 * 7).get().unwrap(), 42);
    let _kept = node.runtime().put(vec![1u8; 1000]).unwrap();
    let boot = node.listen_addrs()[0].to_string();
    let me = node.peer_id().to_string();

    let out = run(MANTA, &["status", "--bootstrap", &boot, "--timeout", "30", "--json"], Some(&secret));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("status --json is JSON");
    assert_eq!((v["members"].as_u64(), v["live"].as_u64()), (Some(1), Some(1)), "{v}");
    let peer = &v["peers"][0];
    assert_eq!(peer["peer"].as_str(), Some(me.as_str()), "{v}");
    assert_eq!(peer["health"].as_str(), Some("live"));
    assert!(peer["tasks_done"].as_u64().is_some_and(|n| n >= 1), "{v}");
    assert!(peer["store_objects"].as_u64().is_some_and(|n| n >= 1), "{v}");
    assert_eq!(peer["tasks_failed"].as_u64(), Some(0));

    // The text table shows the same summary.
    let out = run(MANTA, &["status", "--bootstrap", &boot, "--timeout", "30"], Some(&secret));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let table = text(&out.stdout);
    assert!(table.starts_with("1 member(s), 1 live") && table.contains(&me) && table.contains("tasks "), "{table}");

    // --watch --count 2: two tables (one JSON object per line).
    let args = ["status", "--bootstrap", &boot, "--timeout", "30", "--json", "--watch", "--count", "2"];
    let out = run(MANTA, &args, Some(&secret));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let tables: Vec<serde_json::Value> =
        text(&out.stdout).lines().map(|l| serde_json::from_str(l).expect("each line is JSON")).collect();
    assert_eq!(tables.len(), 2);
    assert!(tables.iter().all(|t| t["peers"][0]["peer"].as_str() == Some(me.as_str())));

    // A wrong secret: nobody answers; non-zero with a message saying so.
    let out = run(MANTA, &["status", "--bootstrap", &boot, "--timeout", "1"], Some(&hex::encode([8u8; 32])));
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains("no peer answered") && err.contains(&boot), "{err}");
    node.shutdown();
}

#[test]
fn timeline_collects_a_members_tasks_into_a_chrome_trace() {
    let key = [9u8; 32];
    let secret = hex::encode(key);
    let node = node_with_secret(key, true);
    let r = node.runtime().task().name("the_answer").spawn(|| 6 * 7);
    assert_eq!(*r.get().unwrap(), 42);
    let boot = node.listen_addrs()[0].to_string();
    let dir = std::env::temp_dir().join(format!("manta-cli-timeline-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("trace.json");
    let p = path.to_string_lossy().into_owned();
    let out = run(MANTA, &["timeline", "--bootstrap", &boot, "--timeout", "30", "-o", &p], Some(&secret));
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("1 node(s)"), "{}", text(&out.stdout));
    let trace: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).expect("the trace is JSON");
    let events = trace["traceEvents"].as_array().or_else(|| trace.as_array()).expect("trace events");
    assert!(events.iter().any(|e| e["name"].as_str() == Some("the_answer")), "the task is in the trace");
    // A wrong secret: nobody answers; non-zero with a message.
    let out =
        run(MANTA, &["timeline", "--bootstrap", &boot, "--timeout", "1", "-o", &p], Some(&hex::encode([1u8; 32])));
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
    let _ = std::fs::remove_dir_all(&dir);
    node.shutdown();
}

#[test]
fn timeline_works_on_a_default_local_cluster_without_a_secret() {
    let rt = Runtime::builder().num_cpus(1).build().unwrap();
    let node = Node::builder(rt)
        .listen("/ip4/127.0.0.1/tcp/0".parse().unwrap())
        .heartbeat(Duration::from_millis(100))
        .timeline(true)
        .start()
        .unwrap();
    let r = node.runtime().task().name("no_secret_task").spawn(|| 1 + 1);
    assert_eq!(*r.get().unwrap(), 2);
    let boot = node.listen_addrs()[0].to_string();
    let dir = std::env::temp_dir().join(format!("manta-cli-timeline-open-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join("trace.json").to_string_lossy().into_owned();
    let out = run(MANTA, &["timeline", "--bootstrap", &boot, "--timeout", "30", "-o", &p], None);
    assert!(out.status.success(), "{}{}", text(&out.stdout), text(&out.stderr));
    assert!(text(&out.stdout).contains("1 node(s)"), "{}", text(&out.stdout));
    let trace = std::fs::read_to_string(&p).unwrap();
    assert!(trace.contains("no_secret_task"), "the task is in the trace");
    let _ = std::fs::remove_dir_all(&dir);
    node.shutdown();
}

#[test]
fn no_peer_and_an_overlong_timeout_are_clear_errors_not_panics() {
    // Port 9 (discard) on loopback: nothing listens there in tests.
    let dir = std::env::temp_dir().join(format!("manta-cli-nopeer-{}", std::process::id()));
    let p = dir.join("x.json").to_string_lossy().into_owned();
    let out = run(MANTA, &["timeline", "--bootstrap", "/ip4/127.0.0.1/tcp/9", "--timeout", "1", "-o", &p], None);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
    let err = text(&out.stderr);
    assert!(err.contains("no peer answered"), "{err}");
    let huge = ["--bootstrap", "/ip4/127.0.0.1/tcp/9", "--timeout", "1e30"];
    let status: Vec<&str> = ["status"].iter().chain(&huge).copied().collect();
    let timeline: Vec<&str> = ["timeline"].iter().chain(&huge).chain(&["-o", &p]).copied().collect();
    for args in [status, timeline] {
        let out = run(MANTA, &args, None);
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: a usage error, not a panic: {err}");
        assert!(err.contains("non-negative number of seconds"), "{err}");
    }
}
