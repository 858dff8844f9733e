//! How the cluster's membership, DHT and placement behave as it grows: for
//! each size n (default 4, 8, 16, 32), n nodes on 127.0.0.1, measured.
//!
//! ```text
//! cargo run --release -p manta-p2p --example scale_bench                  # n = 4, 8, 16, 32
//! cargo run --release -p manta-p2p --example scale_bench -- --sizes 4,8   # chosen sizes
//! ```
//!
//! Options: `--sizes a,b,..` (each 3..=64), `--heartbeat-ms` and
//! `--failure-ms` (defaults: the library's, 1000 and 5000), `--adaptive
//! on|off` (default on, the library's default: beyond 20 nodes period and
//! timeout grow as n / 20; `off` keeps them as given at every size).
//!
//! stdout holds only metric lines, `name value unit`, the name ending in
//! `_n<size>`; progress goes to stderr. n − 1 nodes run in this process (each
//! a `Runtime` with one CPU, listening on `/ip4/127.0.0.1/tcp/0`, joined by
//! bootstrapping from node 0; mDNS off; the per-IP connection cap raised,
//! as they all share one address); the last node is this same binary
//! run again as a child process (`--victim`), so that it can be killed with
//! SIGKILL (no goodbye). Every node registers the same one function. Per
//! size:
//!
//! - `convergence_s`: from the moment the last node (the child) has bound
//!   its address until every in-process node lists n − 1 live peers (polled
//!   every 5 ms).
//! - `gossip_bytes_per_s`: bytes written per second per node at rest (mean
//!   over the in-process nodes, `Node::net_stats`: every libp2p socket
//!   byte — heartbeats, gossipsub control, Kademlia, identify, ping), over
//!   5 s, 10 s after convergence (once the startup Kademlia bootstraps are
//!   over). `gossip_bytes_per_s_max`: the busiest node.
//! - `spread_cv`: 10,000 tasks of 1 ms (a sleep) submitted at node 0; the
//!   coefficient of variation (std / mean) of tasks run per node over all
//!   n nodes (each task returns its node's id).
//! - `dht_lookup_ms`, `dht_hops`: node 0 puts 1 MB, node 1 reads it (so
//!   the owner and a replica are its providers); after their announcements
//!   (and 500 ms for the provider records to be stored on the closest
//!   peers), every other in-process node looks it up once
//!   (`Node::dht_lookup`): the median time to the first provider, and the
//!   most peers that had answered before it (`dht_hops`; 0 when the
//!   node's own store held the record). `dht_hops_mean`: their mean;
//!   `dht_lookup_remote_ms`: the median of the lookups that asked peers
//!   (printed only if some did: with n ≤ 21 every node holds the record,
//!   as Kademlia stores it on the 20 peers closest to the key).
//! - `detect_s`: during a job (200 × n tasks of 50 ms from node 0), once a
//!   quarter is done, the child is killed with SIGKILL; the time until the
//!   last in-process node declares it dead. Goal: the failure timeout plus
//!   one heartbeat (both as in effect at this size).
//! - `recovery_s`: from the kill until node 0 sees the first task complete
//!   after its death verdict (job progress resumed); the job must then
//!   finish with every result (tasks on the dead node are placed again).
//!
//! Invariants: every wait is bounded (a size that overruns fails with a
//! message and the run stops); the child exits when its stdin closes or
//! after 10 minutes; nodes are shut down between sizes.

/// Errors of this example: any error, with its message (`?` converts a `String`).
type BoxError = Box<dyn std::error::Error + Send + Sync>;

use manta::{ObjectRef, Runtime};
use manta_p2p::{MembershipEvent, Multiaddr, Node, Registry, RemoteFn};
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A task that sleeps `ms` and says where it ran.
static WHERE: RemoteFn<(u32,), String> = RemoteFn::new("scale.where", |(ms,)| {
    std::thread::sleep(Duration::from_millis(u64::from(ms)));
    Node::current().map(|n| n.peer_id().to_string()).unwrap_or_default()
});

fn registry() -> Registry {
    Registry::new().function(&WHERE)
}

/// The largest size.
const MAX_NODES: usize = 64;
/// Bound of every wait in one size.
const STEP: Duration = Duration::from_secs(120);
const SPREAD_TASKS: usize = 10_000;
/// From convergence to the gossip window.
const SETTLE: Duration = Duration::from_secs(10);

struct Opts {
    sizes: Vec<usize>,
    heartbeat: Duration,
    failure: Duration,
    adaptive: bool,
}

fn parse_opts(mut it: impl Iterator<Item = String>) -> Result<Opts, BoxError> {
    let mut o = Opts {
        sizes: vec![4, 8, 16, 32],
        heartbeat: manta_p2p::DEFAULT_HEARTBEAT,
        failure: manta_p2p::DEFAULT_FAILURE_TIMEOUT,
        adaptive: true,
    };
    while let Some(flag) = it.next() {
        let value = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let ms = || value.parse::<u64>().map(Duration::from_millis).map_err(|e| format!("{flag}: {e}"));
        match flag.as_str() {
            "--sizes" => {
                o.sizes = value
                    .split(',')
                    .map(|s| s.trim().parse::<usize>().map_err(|e| format!("--sizes: `{s}`: {e}")))
                    .collect::<Result<_, _>>()?;
                if o.sizes.iter().any(|&n| !(3..=MAX_NODES).contains(&n)) {
                    return Err("--sizes: each size must be in 3..=64".into());
                }
            }
            "--heartbeat-ms" => o.heartbeat = ms()?,
            "--failure-ms" => o.failure = ms()?,
            "--adaptive" => o.adaptive = on_off(&value)?,
            other => return Err(format!("unknown argument `{other}`").into()),
        }
    }
    Ok(o)
}

fn on_off(v: &str) -> Result<bool, BoxError> {
    match v {
        "on" => Ok(true),
        "off" => Ok(false),
        _ => Err(format!("--adaptive: `{v}`: on or off").into()),
    }
}

fn node(boot: Option<&Multiaddr>, o: &Opts) -> Result<Node, BoxError> {
    let rt = Runtime::builder().num_cpus(1).build().map_err(|e| e.to_string())?;
    let local: Multiaddr = "/ip4/127.0.0.1/tcp/0".parse().map_err(|e| format!("{e}"))?;
    // Every node here shares 127.0.0.1: lift the per-IP connection cap
    // (meant for one address per host) above the cluster's size.
    let mut b = Node::builder(rt)
        .listen(local)
        .registry(registry())
        .heartbeat(o.heartbeat)
        .failure_timeout(o.failure)
        .adaptive_heartbeat(o.adaptive)
        .max_connections_per_ip(MAX_NODES * 4);
    if let Some(a) = boot {
        b = b.bootstrap(a.clone());
    }
    Ok(b.start()?)
}

fn first_addr(n: &Node) -> Result<Multiaddr, BoxError> {
    n.listen_addrs().into_iter().next().ok_or_else(|| "a node has no listen address".into())
}

/// The child node: started with `--victim <bootstrap> <hb ms> <failure ms> <on|off>`.
fn victim(mut args: impl Iterator<Item = String>) -> Result<(), BoxError> {
    let mut next = || args.next().ok_or("--victim needs <bootstrap> <heartbeat ms> <failure ms> <adaptive on|off>");
    let boot: Multiaddr = next()?.parse().map_err(|e| format!("bootstrap: {e}"))?;
    let ms = |s: &str| s.parse::<u64>().map(Duration::from_millis).map_err(|e| e.to_string());
    let (heartbeat, failure) = (ms(&next()?)?, ms(&next()?)?);
    let o = Opts { sizes: Vec::new(), heartbeat, failure, adaptive: on_off(&next()?)? };
    let n = node(Some(&boot), &o)?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "ADDR {}", first_addr(&n)?).and_then(|()| out.flush()).map_err(|e| e.to_string())?;
    // Runs until stdin closes (the parent went) or the parent kills it.
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    std::thread::spawn(move || {
        let mut line = String::new();
        while std::io::stdin().lock().read_line(&mut line).is_ok_and(|k| k > 0) {
            line.clear();
        }
        let _ = tx.send(());
    });
    let _ = rx.recv_timeout(Duration::from_secs(600));
    n.shutdown();
    Ok(())
}

/// Kills the child on drop (also when a size fails).
struct Victim(Child);

impl Drop for Victim {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn_victim(boot: &Multiaddr, o: &Opts) -> Result<(Victim, String), BoxError> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let mut child = Command::new(exe)
        .arg("--victim")
        .arg(boot.to_string())
        .arg(o.heartbeat.as_millis().to_string())
        .arg(o.failure.as_millis().to_string())
        .arg(if o.adaptive { "on" } else { "off" })
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| format!("cannot start the victim: {e}"))?;
    let stdout = child.stdout.take().ok_or("no stdout")?;
    let victim = Victim(child);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    let line = rx.recv_timeout(STEP).map_err(|_| "the victim printed no address".to_string())?;
    let peer = line.trim().rsplit("/p2p/").next().unwrap_or_default().to_string();
    if !line.starts_with("ADDR ") || peer.is_empty() {
        return Err(format!("victim: unexpected line `{}`", line.trim()).into());
    }
    Ok((victim, peer))
}

fn metric(name: &str, n: usize, value: f64, unit: &str) {
    println!("{name}_n{n} {value:.3} {unit}");
}

fn live_peers(n: &Node) -> usize {
    n.cluster_status().map(|s| s.iter().filter(|m| m.alive && !m.is_self).count()).unwrap_or(0)
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

/// One size: every metric, in order.
fn size(n: usize, o: &Opts) -> Result<(), BoxError> {
    let stretch = if o.adaptive { (n as f64 / manta_p2p::ADAPTIVE_FROM as f64).max(1.0) } else { 1.0 };
    eprintln!(
        "# n = {n}: starting {} nodes here and one child; heartbeat {:?}, failure timeout {:?} at this size",
        n - 1,
        o.heartbeat.mul_f64(stretch),
        o.failure.mul_f64(stretch)
    );
    let first = node(None, o)?;
    let boot = first_addr(&first)?;
    let mut nodes = vec![first];
    for _ in 1..n - 1 {
        nodes.push(node(Some(&boot), o)?);
    }
    let (mut victim, victim_peer) = spawn_victim(&boot, o)?;
    let last_start = Instant::now();

    // convergence_s
    let deadline = last_start + STEP;
    while nodes.iter().any(|x| live_peers(x) < n - 1) {
        if Instant::now() > deadline {
            return Err(format!("n = {n}: membership did not converge within {STEP:?}").into());
        }
        std::thread::sleep(Duration::from_millis(5)); // a bounded poll's pace
    }
    metric("convergence_s", n, last_start.elapsed().as_secs_f64(), "s");

    // gossip_bytes_per_s: a measuring window, at rest (after the startup
    // Kademlia bootstraps: every node that joined while its routing table
    // held under 20 peers runs one, a few seconds of FIND_NODE traffic).
    std::thread::sleep(SETTLE);
    let before: Vec<u64> = nodes.iter().map(|x| x.net_stats().bytes_sent).collect();
    let t = Instant::now();
    std::thread::sleep(Duration::from_secs(5));
    let secs = t.elapsed().as_secs_f64();
    let rates: Vec<f64> =
        nodes.iter().zip(&before).map(|(x, b)| (x.net_stats().bytes_sent.saturating_sub(*b)) as f64 / secs).collect();
    metric("gossip_bytes_per_s", n, rates.iter().sum::<f64>() / rates.len() as f64, "B/s");
    metric("gossip_bytes_per_s_max", n, rates.iter().copied().fold(0.0, f64::max), "B/s");

    if std::env::var_os("SCALE_BENCH_GOSSIP_ONLY").is_some() {
        return Ok(()); // (a quick look at membership and gossip while tuning)
    }

    // spread_cv
    let refs: Vec<ObjectRef<String>> = (0..SPREAD_TASKS).map(|_| nodes[0].spawn(&WHERE, (1u32,))).collect();
    let mut per: HashMap<String, usize> = nodes.iter().map(|x| (x.peer_id().to_string(), 0)).collect();
    per.insert(victim_peer.clone(), 0);
    for (k, r) in refs.iter().enumerate() {
        let at = r.get_timeout(STEP).map_err(|e| {
            let state: Vec<(usize, usize)> = nodes.iter().map(|x| (live_peers(x), x.accepted_work())).collect();
            format!("n = {n}: spread task {k}: {e}; (live peers, accepted work) per node: {state:?}")
        })?;
        *per.entry((*at).clone()).or_default() += 1;
    }
    drop(refs);
    let counts: Vec<f64> = per.values().map(|&c| c as f64).collect();
    let mean = counts.iter().sum::<f64>() / counts.len() as f64;
    let var = counts.iter().map(|c| (c - mean) * (c - mean)).sum::<f64>() / counts.len() as f64;
    eprintln!("#   tasks per node: {:?}", per.values().collect::<Vec<_>>());
    metric("spread_cv", n, var.sqrt() / mean, "");

    // dht_lookup_ms, dht_hops
    let obj = nodes[0].runtime().put(vec![5u8; 1_000_000]).map_err(|e| e.to_string())?;
    let wire = nodes[0].encode_ref(&obj).map_err(|e| e.to_string())?;
    let replica: ObjectRef<Vec<u8>> = nodes[1].decode_ref(&wire).map_err(|e| e.to_string())?;
    replica.get_timeout(STEP).map_err(|e| format!("n = {n}: replica: {e}"))?;
    nodes[0].flush_announcements().map_err(|e| e.to_string())?;
    nodes[1].flush_announcements().map_err(|e| e.to_string())?;
    std::thread::sleep(Duration::from_millis(500)); // provider records reach their peers
    let (mut ms, mut hops) = (Vec::new(), Vec::new());
    for x in &nodes[2..] {
        let l = x.dht_lookup(obj.id()).map_err(|e| e.to_string())?;
        if l.providers.is_empty() {
            return Err(format!("n = {n}: a lookup found no provider").into());
        }
        ms.push(l.first.as_secs_f64() * 1e3);
        hops.push(f64::from(l.hops));
    }
    if !ms.is_empty() {
        metric("dht_lookup_ms", n, median(&mut ms), "ms");
        metric("dht_hops", n, hops.iter().copied().fold(0.0, f64::max), "");
        metric("dht_hops_mean", n, hops.iter().sum::<f64>() / hops.len() as f64, "");
        let mut remote: Vec<f64> = ms.iter().zip(&hops).filter(|(_, h)| **h > 0.0).map(|(m, _)| *m).collect();
        if !remote.is_empty() {
            metric("dht_lookup_remote_ms", n, median(&mut remote), "ms");
        }
    }
    drop((replica, obj));

    // detect_s, recovery_s
    let subs: Vec<_> = nodes.iter().map(Node::subscribe).collect::<Result<_, _>>().map_err(|e| e.to_string())?;
    let jobs = 200 * n;
    let refs: Vec<ObjectRef<String>> = (0..jobs).map(|_| nodes[0].spawn(&WHERE, (50u32,))).collect();
    let rt = nodes[0].runtime();
    let (_, mut pending) = rt.wait(&refs, jobs / 4, Some(STEP)).map_err(|e| e.to_string())?;
    let _ = victim.0.kill();
    let killed = Instant::now();
    let _ = victim.0.wait();
    let mut seen: Vec<Option<Instant>> = vec![None; nodes.len()];
    let mut resumed = None;
    while seen.iter().any(Option::is_none) || (resumed.is_none() && !pending.is_empty()) {
        if killed.elapsed() > STEP {
            return Err(format!("n = {n}: death not seen by all, or no progress, within {STEP:?}").into());
        }
        for (i, s) in subs.iter().enumerate() {
            while let Ok(ev) = s.try_recv() {
                if matches!(&ev, MembershipEvent::Died(p) if p.to_string() == victim_peer) {
                    seen[i].get_or_insert_with(Instant::now);
                }
            }
        }
        if !pending.is_empty() && resumed.is_none() {
            // Drain what completed; the first completion after node 0's
            // verdict is progress resumed.
            let (ready, rest) = rt.wait(&pending, pending.len(), Some(Duration::ZERO)).map_err(|e| e.to_string())?;
            if !ready.is_empty() && seen[0].is_some() {
                resumed = Some(Instant::now());
            }
            pending = rest;
        }
        std::thread::sleep(Duration::from_millis(2)); // a bounded poll's pace
    }
    let detect = seen.iter().flatten().map(|t| t.saturating_duration_since(killed)).max().unwrap_or_default();
    metric("detect_s", n, detect.as_secs_f64(), "s");
    if let Some(r) = resumed {
        metric("recovery_s", n, r.saturating_duration_since(killed).as_secs_f64(), "s");
    }
    for r in &refs {
        r.get_timeout(STEP).map_err(|e| format!("n = {n}: job task after the kill: {e}"))?;
    }
    for x in &nodes {
        x.shutdown();
    }
    Ok(())
}

fn main() -> std::process::ExitCode {
    let mut args = std::env::args().skip(1).peekable();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_ansi(false).with_writer(std::io::stderr).try_init();
    let result = if args.peek().map(String::as_str) == Some("--victim") {
        args.next();
        victim(args)
    } else {
        parse_opts(args).and_then(|o| {
            eprintln!("# heartbeat {:?}, failure timeout {:?}, adaptive {}", o.heartbeat, o.failure, o.adaptive);
            o.sizes.iter().try_for_each(|&n| size(n, &o))
        })
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
