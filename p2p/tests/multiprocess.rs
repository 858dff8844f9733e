//! Three `manta-node` processes form a cluster and fetch each other's
//! objects, driven by the binary's line protocol (see
//! `src/bin/manta-node.rs`):
//!
//! - by bootstrap on 127.0.0.1 (mDNS off): runs everywhere;
//! - by bootstrap on 127.0.0.1, then all three drive the same word-count
//!   map/reduce job at once: tasks cross between the processes both ways,
//!   and the three must agree on the result;
//! - by mDNS discovery alone, each process in its own network namespace
//!   (names in `MANTA_NETNS`, made by `tests/netns_mdns.sh` as root), with a
//!   cluster secret (from `MANTA_SECRET`, which the script sets; mDNS needs
//!   one). Without `MANTA_NETNS` that test returns at once: nothing
//!   multicasts in the host namespace;
//! - `manta status` against a private node, with the secret in a file
//!   (`--secret-file`) and in `MANTA_SECRET`, and refused without it; and
//!   `manta-node` refusing to listen beyond loopback without a secret.
//!
//! Invariants: every read from a process has a bounded timeout that fails the
//! test naming the process and the line awaited; a process that prints `ERR`
//! fails the test with its message; each process is killed and reaped on
//! drop, so a failing test leaves no process behind. No sleeps: reads block
//! on a channel fed by one reader thread per process.

use crossbeam_channel::{Receiver, RecvTimeoutError};
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

/// Bound of each protocol step as seen by the harness; larger than the
/// nodes' own `--timeout`, so a node's `ERR` arrives before the harness gives up.
const STEP: Duration = Duration::from_secs(45);
/// The nodes' `--timeout` (peer wait, each get).
const NODE_TIMEOUT_SECS: &str = "30";
const BIN: &str = env!("CARGO_BIN_EXE_manta-node");

/// One child process: stdin to write lines to, stdout lines on a channel.
struct Proc {
    name: String,
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
}

impl Proc {
    fn spawn(name: &str, mut cmd: Command) -> Proc {
        cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::inherit());
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("{name}: cannot spawn {cmd:?}: {e}"));
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().unwrap_or_else(|| panic!("{name}: no stdout pipe"));
        let (tx, lines) = crossbeam_channel::unbounded();
        let tag = name.to_string();
        std::thread::Builder::new()
            .name(format!("{name}-stdout"))
            .spawn(move || {
                for line in BufReader::new(stdout).lines() {
                    let Ok(line) = line else { break };
                    eprintln!("[{tag}] {line}");
                    if tx.send(line).is_err() {
                        break;
                    }
                }
                // Dropping `tx` closes the channel: stdout is at EOF.
            })
            .unwrap_or_else(|e| panic!("{name}: cannot start reader thread: {e}"));
        Proc { name: name.to_string(), child, stdin, lines }
    }

    /// The next line, which must start with `word `; returns the rest.
    fn expect(&self, word: &str) -> String {
        let line = match self.lines.recv_timeout(STEP) {
            Ok(line) => line,
            Err(RecvTimeoutError::Timeout) => panic!("{}: no `{word}` line within {STEP:?}", self.name),
            Err(RecvTimeoutError::Disconnected) => panic!("{}: exited before printing `{word}`", self.name),
        };
        if let Some(err) = line.strip_prefix("ERR ") {
            panic!("{}: failed while `{word}` was awaited: {err}", self.name);
        }
        match line.strip_prefix(word).and_then(|r| r.strip_prefix(' ')) {
            Some(rest) => rest.to_string(),
            None => panic!("{}: expected `{word} ...`, got `{line}`", self.name),
        }
    }

    fn send(&mut self, line: &str) {
        let name = &self.name;
        let stdin = self.stdin.as_mut().unwrap_or_else(|| panic!("{name}: stdin already closed"));
        writeln!(stdin, "{line}").and_then(|()| stdin.flush()).unwrap_or_else(|e| panic!("{name}: cannot write: {e}"));
    }

    /// Waits (bounded) for stdout to close, then reaps the process; panics
    /// unless it printed nothing more and exited with status 0.
    fn wait_success(&mut self) {
        match self.lines.recv_timeout(STEP) {
            Err(RecvTimeoutError::Disconnected) => {}
            Ok(line) => panic!("{}: unexpected line before exit: `{line}`", self.name),
            Err(RecvTimeoutError::Timeout) => panic!("{}: did not exit within {STEP:?}", self.name),
        }
        // Stdout is at EOF only once the process (the one holder of the
        // pipe's write end) has exited, so this wait does not block long.
        let status = self.child.wait().unwrap_or_else(|e| panic!("{}: wait failed: {e}", self.name));
        assert!(status.success(), "{}: exited with {status}", self.name);
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.stdin.take();
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// What each process reported after joining.
struct Joined {
    reference: String,
    sum: String,
    bytes: usize,
}

/// The common node arguments of process `i`: 2 peers, its own seed and size.
fn node_args(cmd: &mut Command, i: usize) -> usize {
    let bytes = 1_000_000 + 4096 * i + i; // distinct lengths, not chunk-aligned
    cmd.args(["--peers", "2", "--timeout", NODE_TIMEOUT_SECS, "--seed"])
        .arg((i as u64 + 1).to_string())
        .arg("--bytes")
        .arg(bytes.to_string());
    bytes
}

/// Reads PEERS/REF/SUM from each, has every process fetch the other two
/// objects, checks each GOT against the owner's SUM, then EXITs all.
fn exchange(procs: &mut [Proc], sizes: &[usize]) {
    let joined: Vec<Joined> = procs
        .iter()
        .zip(sizes)
        .map(|(p, &bytes)| {
            let peers: usize = p.expect("PEERS").parse().unwrap_or_else(|e| panic!("{}: bad PEERS: {e}", p.name));
            assert!(peers >= 2, "{}: only {peers} peers", p.name);
            let reference = p.expect("REF");
            let sum = p.expect("SUM");
            Joined { reference, sum, bytes }
        })
        .collect();
    for (i, p) in procs.iter_mut().enumerate() {
        for (j, other) in joined.iter().enumerate() {
            if i != j {
                p.send(&format!("REF {}", other.reference));
            }
        }
    }
    // Each process handles its stdin in order, so its GOT lines follow the
    // order of the REF lines it was sent.
    let mut ids: Vec<Option<String>> = vec![None; procs.len()];
    for (i, p) in procs.iter().enumerate() {
        for (j, owner) in joined.iter().enumerate() {
            if i == j {
                continue;
            }
            let got = p.expect("GOT");
            let [id, len, sum] = got.split(' ').collect::<Vec<_>>()[..] else {
                panic!("{}: malformed GOT `{got}`", p.name);
            };
            assert_eq!(len, owner.bytes.to_string(), "{}: length of process {j}'s object", p.name);
            assert_eq!(sum, owner.sum, "{}: checksum of process {j}'s object", p.name);
            match &ids[j] {
                Some(seen) => assert_eq!(seen, id, "process {j}'s object has one id everywhere"),
                None => ids[j] = Some(id.to_string()),
            }
        }
    }
    for p in procs.iter_mut() {
        p.send("EXIT");
    }
    for p in procs.iter_mut() {
        p.wait_success();
    }
}

/// Starts three processes on 127.0.0.1 (mDNS off), the second and third
/// bootstrapping from the first; `args(cmd, i)` adds process `i`'s
/// arguments. Checks each `ADDR` line.
fn bootstrap_three(mut args: impl FnMut(&mut Command, usize)) -> Vec<Proc> {
    let mut procs = Vec::new();
    let mut first_addr = None::<String>;
    for i in 0..3 {
        let mut cmd = Command::new(BIN);
        cmd.env_remove("MANTA_ALLOW_MDNS").args(["--listen", "/ip4/127.0.0.1/tcp/0"]);
        if let Some(addr) = &first_addr {
            cmd.args(["--bootstrap", addr]);
        }
        args(&mut cmd, i);
        let p = Proc::spawn(&format!("node{i}"), cmd);
        let addr = p.expect("ADDR");
        assert!(addr.starts_with("/ip4/127.0.0.1/tcp/") && addr.contains("/p2p/"), "{}: ADDR {addr}", p.name);
        first_addr.get_or_insert(addr);
        procs.push(p);
    }
    procs
}

#[test]
fn three_processes_join_by_bootstrap_and_exchange_objects() {
    let started = Instant::now();
    let mut sizes = Vec::new();
    let mut procs = bootstrap_three(|cmd, i| sizes.push(node_args(cmd, i)));
    exchange(&mut procs, &sizes);
    eprintln!("bootstrap cluster: done in {:?}", started.elapsed());
}

/// Words per `WORDCOUNT` chunk, and the vocabulary's size (both fixed by
/// the binary's protocol).
const WORDS_PER_CHUNK: u64 = 2000;
const VOCABULARY: u64 = 50;

#[test]
fn three_processes_share_a_word_count_job() {
    const CHUNKS: u64 = 24;
    let started = Instant::now();
    let mut procs = bootstrap_three(|cmd, i| {
        cmd.args(["--peers", "2", "--timeout", NODE_TIMEOUT_SECS, "--threshold", "1", "--bytes", "64", "--seed"])
            .arg((i as u64 + 1).to_string());
    });
    for p in &procs {
        let peers: usize = p.expect("PEERS").parse().unwrap_or_else(|e| panic!("{}: bad PEERS: {e}", p.name));
        assert!(peers >= 2, "{}: only {peers} peers", p.name);
        p.expect("REF");
        p.expect("SUM");
    }
    // All three submit the same job at once, so each also runs the others'
    // tasks.
    for p in procs.iter_mut() {
        p.send(&format!("WORDCOUNT {CHUNKS} 20240601"));
    }
    let reports: Vec<(String, u64)> = procs
        .iter()
        .map(|p| {
            let wc = p.expect("WC");
            let [total, distinct, hash, nodes] = wc.split(' ').collect::<Vec<_>>()[..] else {
                panic!("{}: malformed WC `{wc}`", p.name);
            };
            let num =
                |s: &str| -> u64 { s.parse().unwrap_or_else(|e| panic!("{}: bad number in WC `{wc}`: {e}", p.name)) };
            assert_eq!(num(total), CHUNKS * WORDS_PER_CHUNK, "{}: total words", p.name);
            assert_eq!(num(distinct), VOCABULARY, "{}: distinct words", p.name);
            assert!(hash.len() == 16 && hash.bytes().all(|b| b.is_ascii_hexdigit()), "{}: hash `{hash}`", p.name);
            let nodes = num(nodes);
            assert!((1..=3).contains(&nodes), "{}: map tasks ran on {nodes} nodes", p.name);
            (format!("{total} {distinct} {hash}"), nodes)
        })
        .collect();
    for (p, (result, _)) in procs.iter().zip(&reports).skip(1) {
        assert_eq!(result, &reports[0].0, "{} and {} disagree on the word count", p.name, procs[0].name);
    }
    let spread = reports.iter().map(|(_, n)| *n).max().unwrap_or(0);
    assert!(spread >= 2, "no job's map tasks left its submitting node: {reports:?}");
    for p in procs.iter_mut() {
        p.send("EXIT");
    }
    for p in procs.iter_mut() {
        p.wait_success();
    }
    eprintln!("word count on three processes: {reports:?} in {:?}", started.elapsed());
}

#[test]
fn lan_discovery_by_mdns_in_network_namespaces() {
    let Ok(spec) = std::env::var("MANTA_NETNS") else {
        eprintln!("skipped: run p2p/tests/netns_mdns.sh as root");
        return;
    };
    let names: Vec<&str> = spec.split_whitespace().collect();
    assert_eq!(names.len(), 3, "MANTA_NETNS must name three network namespaces, got `{spec}`");
    // mDNS needs a cluster secret: the script passes a fresh one.
    let secret = std::env::var("MANTA_SECRET").unwrap_or_else(|_| "5a".repeat(32));
    let started = Instant::now();
    let mut procs = Vec::new();
    let mut sizes = Vec::new();
    for (i, ns) in names.iter().enumerate() {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", ns, BIN, "--listen", "/ip4/0.0.0.0/tcp/0", "--mdns"])
            .env("MANTA_ALLOW_MDNS", "1")
            .env("MANTA_SECRET", &secret);
        sizes.push(node_args(&mut cmd, i));
        let p = Proc::spawn(&format!("node{i}@{ns}"), cmd);
        let addr = p.expect("ADDR");
        assert!(addr.contains("/p2p/"), "{}: ADDR {addr}", p.name);
        procs.push(p);
    }
    exchange(&mut procs, &sizes);
    eprintln!("mDNS cluster in namespaces {names:?}: done in {:?}", started.elapsed());
}

#[test]
fn manta_status_prints_the_member_table_as_an_observer() {
    let rt = manta::Runtime::builder().num_cpus(2).build().unwrap();
    let node = manta_p2p::Node::builder(rt)
        .listen("/ip4/127.0.0.1/tcp/0".parse().unwrap())
        .heartbeat(std::time::Duration::from_millis(100))
        .start()
        .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_manta"))
        .args(["status", "--bootstrap", &node.listen_addrs()[0].to_string(), "--peers", "1", "--timeout", "30"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "manta status failed: {text} {}", String::from_utf8_lossy(&out.stderr));
    assert!(text.starts_with("1 member(s), 1 live"), "{text}");
    assert!(text.contains(&node.peer_id().to_string()) && text.contains("CPU 2/2"), "{text}");
    // The observer is in nobody's table.
    assert_eq!(node.cluster_status().unwrap().len(), 1);
}

#[test]
fn manta_status_reads_the_secret_from_a_file_or_the_environment() {
    let key = [0x3cu8; 32];
    let hex = hex::encode(key);
    let rt = manta::Runtime::builder().num_cpus(1).build().unwrap();
    let node = manta_p2p::Node::builder(rt)
        .listen("/ip4/127.0.0.1/tcp/0".parse().unwrap())
        .heartbeat(Duration::from_millis(100))
        .secret(key)
        .start()
        .unwrap();
    let dir = std::env::temp_dir().join(format!("manta-status-secret-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("cluster.key");
    std::fs::write(&file, format!("{hex}\n")).unwrap();
    let boot = node.listen_addrs()[0].to_string();
    let status = |extra: &[&str], env: Option<&str>| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_manta"));
        cmd.args(["status", "--bootstrap", &boot, "--peers", "1", "--timeout"]).args(extra).env_remove("MANTA_SECRET");
        if let Some(v) = env {
            cmd.env("MANTA_SECRET", v);
        }
        cmd.output().unwrap()
    };
    let out = status(&["30", "--secret-file", file.to_str().unwrap()], None);
    assert!(out.status.success(), "with --secret-file: {}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains(&node.peer_id().to_string()));
    let out = status(&["30"], Some(&hex));
    assert!(out.status.success(), "with MANTA_SECRET: {}", String::from_utf8_lossy(&out.stderr));
    // Without the secret it cannot connect: no member within the timeout.
    let out = status(&["2"], None);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("0 member(s)"));
    // A malformed secret is an error that does not echo it.
    let out = status(&["2"], Some("not-a-key"));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("MANTA_SECRET") && !err.contains("not-a-key"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn manta_node_refuses_to_listen_beyond_loopback_without_a_secret() {
    let out = Command::new(BIN)
        .args(["--listen", "/ip4/0.0.0.0/tcp/0"])
        .env_remove("MANTA_SECRET")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{text}");
    assert!(
        text.starts_with("ERR ") && text.contains("--secret-file") && text.contains("insecure_open_network"),
        "{text}"
    );
}
