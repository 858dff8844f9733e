//! Network faults: five `manta-node` processes, each in its own network
//! namespace on one bridge (made by `tests/netns_faults.sh`, as root), run
//! the `CHAOS` job (see `src/bin/manta-node/chaos.rs`; the driver has no
//! CPU, four workers) under three faults, each on a fresh cluster:
//!
//! 1. **loss**: every namespace drops 5% of the packets it receives
//!    (`nft ... numgen random mod 100 < 5 drop`); the job runs once
//!    before (clean) and once with the loss, and the ratio of their times
//!    is printed as `job_slowdown_under_loss`;
//! 2. **latency**: every TCP connection into a namespace goes through a
//!    delaying proxy of this test (20 ms ± 10 ms each way; the kernel has
//!    no `netem`): an nftables `redirect` sends it to the proxy, which
//!    reads the original destination back and forwards with delay;
//! 3. **partition**: once the map is under way, one worker is cut off
//!    (every packet in or out of its `veth0` dropped) until the driver
//!    has declared it dead and another failure timeout has passed, then
//!    healed. Meanwhile `manta status` (an observer in another worker's
//!    namespace) must show it down.
//!
//! After each: the driver checked the exact result (nothing lost, nothing
//! applied twice: a double count, merge or audit is an error there); every
//! node lists every other as live again (membership converged, the cut-off
//! node rejoined); no node holds pins or accepted work.
//!
//! Without `MANTA_NETNS_FAULTS` (the namespaces' names) the test returns at
//! once. Invariants: every wait is bounded; every rule lives in a namespace
//! the script made (deleted with it); processes are killed on drop.

#[path = "common/delay_proxy.rs"]
mod delay_proxy;
#[path = "common/procs.rs"]
mod procs;

use delay_proxy::DelayProxy;
use procs::{Cluster, BIN};
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const SUBNET: &str = "10.213.78";
const STEP: Duration = Duration::from_secs(60);
const JOB: Duration = Duration::from_secs(240);
/// Text chunks per job (2 map tasks each, plus merges): 481 tasks.
const CHUNKS: u32 = 160;
const BIG_MB: u32 = 4;
const FAILURE_MS: u64 = 2000;
/// The cluster secret every process gets in `MANTA_SECRET` (a node
/// listening beyond loopback needs one; this one is only a test's).
const SECRET: &str = "3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c";
/// Pace of the bounded polls (membership, stats).
const POLL: Duration = Duration::from_millis(50);

/// Runs an nftables script in namespace `ns`.
fn nft(ns: &str, script: &str) {
    let mut child = Command::new("ip")
        .args(["netns", "exec", ns, "nft", "-f", "-"])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run nft in {ns}: {e}"));
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(script.as_bytes()).unwrap_or_else(|e| panic!("nft stdin in {ns}: {e}"));
    }
    let status = child.wait().unwrap_or_else(|e| panic!("nft in {ns}: {e}"));
    assert!(status.success(), "nft in {ns} failed ({status}) on:\n{script}");
}

fn loss_on(ns: &str) {
    nft(ns, "table inet manta_loss {\n chain input {\n  type filter hook input priority 0;\n  numgen random mod 100 < 5 drop\n }\n}\n");
}

fn loss_off(ns: &str) {
    nft(ns, "delete table inet manta_loss\n");
}

fn cut(ns: &str) {
    nft(
        ns,
        "table inet manta_cut {\n chain input {\n  type filter hook input priority 0;\n  iifname \"veth0\" drop\n }\n \
         chain output {\n  type filter hook output priority 0;\n  oifname \"veth0\" drop\n }\n}\n",
    );
}

fn heal(ns: &str) {
    nft(ns, "delete table inet manta_cut\n");
}

fn redirect_to(ns: &str, port: u16) {
    nft(
        ns,
        &format!(
            "table ip manta_delay {{\n chain prerouting {{\n  type nat hook prerouting priority -100;\n  \
             iifname \"veth0\" tcp dport != {port} redirect to :{port}\n }}\n}}\n"
        ),
    );
}

/// Starts the driver (namespace 0, no CPU) and four workers.
fn start(names: &[&str]) -> Cluster {
    let mut c = Cluster::new();
    let mut boot = None::<String>;
    for (i, ns) in names.iter().enumerate() {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", ns, BIN, "--listen"])
            .arg(format!("/ip4/{SUBNET}.{}/tcp/0", i + 1))
            .args(["--peers", &(names.len() - 1).to_string(), "--timeout", "180", "--bytes", "64"])
            .args(["--heartbeat-ms", "200", "--failure-ms", &FAILURE_MS.to_string()])
            .env("MANTA_SECRET", SECRET)
            .env_remove("MANTA_ALLOW_MDNS");
        if i == 0 {
            cmd.args(["--cpus", "0"]);
        } else {
            cmd.args(["--cpus", "1", "--threshold", "2"]);
        }
        if let Some(b) = &boot {
            cmd.args(["--bootstrap", b]);
        }
        let k = c.spawn(cmd, STEP);
        boot.get_or_insert_with(|| c.procs[k].addr.clone());
    }
    let all: Vec<usize> = (0..names.len()).collect();
    c.expect_all(&all, "PEERS", STEP);
    c
}

/// Runs one job on the driver; checks its result line; returns how long
/// it took. `on_line` sees every line meanwhile (and may act on the cluster).
fn job(c: &mut Cluster, seed: u64, mut on_line: impl FnMut(&mut Cluster, &procs::Line)) -> Duration {
    let t = Instant::now();
    c.send(0, &format!("CHAOS {seed} {CHUNKS} {BIG_MB}"));
    let deadline = t + JOB;
    let result = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = c.recv(left).unwrap_or_else(|e| panic!("job {seed}: no result within {JOB:?}: {e:?}"));
        if let Some(err) = line.text.strip_prefix("ERR ") {
            panic!("job {seed}: node{} failed: {err}", line.from);
        }
        if line.from == 0 {
            if let Some(rest) = line.text.strip_prefix("CHAOS ") {
                break rest.to_string();
            }
        }
        on_line(c, &line);
    };
    let took = t.elapsed();
    let fields: Vec<&str> = result.split(' ').collect();
    assert_eq!(fields.len(), 5, "job {seed}: {result}");
    assert_eq!(fields[0], (u64::from(CHUNKS) * 20_000).to_string(), "job {seed}: words");
    assert_eq!(fields[1], CHUNKS.to_string(), "job {seed}: chunks merged, each once");
    took
}

/// Waits until every live process counts `live` live peers (bounded).
fn converge(c: &mut Cluster, live: usize, within: Duration) {
    let deadline = Instant::now() + within;
    let which: Vec<usize> = (0..c.procs.len()).filter(|&i| c.procs[i].alive).collect();
    loop {
        let mut behind = Vec::new();
        for &i in &which {
            c.send(i, "STATS");
            let stats = c.expect(i, "STATS", STEP);
            let n: usize = stats.rsplit(' ').next().and_then(|n| n.parse().ok()).unwrap_or(0);
            if n != live {
                behind.push((i, n));
            }
        }
        if behind.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "membership did not converge within {within:?}: (node, live peers) {behind:?}"
        );
        std::thread::sleep(POLL); // a bounded poll's pace
    }
}

fn loss(names: &[&str]) {
    let mut c = start(names);
    let clean = job(&mut c, 101, |_, _| {});
    names.iter().for_each(|ns| loss_on(ns));
    let lossy = job(&mut c, 102, |_, _| {});
    names.iter().for_each(|ns| loss_off(ns));
    converge(&mut c, names.len() - 1, STEP);
    c.settle(STEP);
    c.exit_all(STEP);
    println!(
        "loss: job {:.2}s clean, {:.2}s with 5% loss: job_slowdown_under_loss {:.2}",
        clean.as_secs_f64(),
        lossy.as_secs_f64(),
        lossy.as_secs_f64() / clean.as_secs_f64()
    );
}

fn latency(names: &[&str]) {
    let mut proxies: Vec<DelayProxy> = names
        .iter()
        .enumerate()
        .map(|(i, ns)| {
            let p = DelayProxy::start(ns, 7 + i as u64, Duration::from_millis(10), Duration::from_millis(30))
                .unwrap_or_else(|e| panic!("proxy in {ns}: {e}"));
            redirect_to(ns, p.port);
            p
        })
        .collect();
    let mut c = start(names);
    let took = job(&mut c, 201, |_, _| {});
    converge(&mut c, names.len() - 1, STEP);
    c.settle(STEP);
    c.exit_all(STEP);
    let proxied: u64 = proxies.iter().map(|p| p.proxied.load(std::sync::atomic::Ordering::Relaxed)).sum();
    proxies.iter_mut().for_each(DelayProxy::stop);
    names.iter().for_each(|ns| nft(ns, "delete table ip manta_delay\n"));
    assert!(proxied > 0, "no connection went through the delaying proxies");
    println!("latency: job {:.2}s with 20 ms ± 10 ms each way; {proxied} connections proxied", took.as_secs_f64());
}

/// Runs `manta status` as an observer in namespace `ns`, bootstrapping from
/// `addr`; its output.
fn status(ns: &str, addr: &str) -> String {
    let out = Command::new("ip")
        .args(["netns", "exec", ns, env!("CARGO_BIN_EXE_manta"), "status", "--bootstrap", addr])
        .args(["--peers", "3", "--timeout", "20"])
        .env("MANTA_SECRET", SECRET)
        .output()
        .unwrap_or_else(|e| panic!("manta status in {ns}: {e}"));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn partition(names: &[&str]) {
    let mut c = start(names);
    let victim = names.len() - 1;
    let victim_peer = c.procs[victim].peer.clone();
    let (mut cut_at, mut died_at, mut healed_at, mut revived) = (None::<Instant>, None, None, false);
    let mut seen_down = String::new();
    let took = job(&mut c, 301, |c, line| {
        if line.from != 0 {
            return;
        }
        if cut_at.is_none() && line.text.starts_with("PROGRESS map") {
            eprintln!("partition: cutting node{victim} off");
            cut(names[victim]);
            cut_at = Some(Instant::now());
        }
        if line.text == format!("DIED {victim_peer}") && died_at.is_none() {
            died_at = Some(Instant::now());
            // An observer in another worker's namespace sees it down.
            seen_down = status(names[1], &c.procs[1].addr);
        }
        if line.text == format!("REVIVED {victim_peer}") {
            revived = true;
        }
        if let (Some(d), None) = (died_at, healed_at) {
            // Longer than the failure timeout past the death verdict.
            if d.elapsed() > Duration::from_millis(FAILURE_MS) {
                eprintln!("partition: healing node{victim}");
                heal(names[victim]);
                healed_at = Some(Instant::now());
            }
        }
    });
    assert!(cut_at.is_some(), "the job ended before the cut");
    if healed_at.is_none() {
        // The job outran the partition: keep it past the verdict, then heal.
        let died = died_at.unwrap_or_else(|| {
            loop {
                if c.expect(0, "DIED", STEP) == victim_peer {
                    break;
                }
            }
            seen_down = status(names[1], &c.procs[1].addr);
            Instant::now()
        });
        let wait = Duration::from_millis(FAILURE_MS).saturating_sub(died.elapsed());
        // The partition's length is the fault being injected.
        std::thread::sleep(wait);
        heal(names[victim]);
    }
    if !revived {
        loop {
            if c.expect(0, "REVIVED", STEP) == victim_peer {
                break;
            }
        }
    }
    converge(&mut c, names.len() - 1, STEP);
    c.settle(STEP);
    c.exit_all(STEP);
    eprintln!("manta status during the partition:\n{seen_down}");
    let row = seen_down.lines().find(|l| l.starts_with(&victim_peer)).unwrap_or_default();
    assert!(
        row.contains("dead") || row.contains("unreachable"),
        "manta status did not show the cut-off node down:\n{seen_down}"
    );
    println!(
        "partition: job {:.2}s; node{victim} cut {:.1}s, declared dead after {:.2}s, rejoined",
        took.as_secs_f64(),
        cut_at.and_then(|c| healed_at.map(|h| h - c)).unwrap_or_default().as_secs_f64(),
        cut_at.and_then(|c| died_at.map(|d| d - c)).unwrap_or_default().as_secs_f64(),
    );
}

#[test]
fn faults_in_network_namespaces() {
    let Ok(spec) = std::env::var("MANTA_NETNS_FAULTS") else {
        eprintln!("skipped: run p2p/tests/netns_faults.sh as root");
        return;
    };
    let names: Vec<&str> = spec.split_whitespace().collect();
    assert_eq!(names.len(), 5, "MANTA_NETNS_FAULTS must name five network namespaces, got `{spec}`");
    let t = Instant::now();
    loss(&names);
    latency(&names);
    partition(&names);
    println!("network faults: done in {:.1}s", t.elapsed().as_secs_f64());
}
