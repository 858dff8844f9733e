//! manta-p2p's network benchmarks, with plain-socket floors measured beside
//! them in the same run.
//!
//! ```text
//! cargo run --release -p manta-p2p --example p2p_bench              # every metric
//! cargo run --release -p manta-p2p --example p2p_bench -- transfer  # names containing "transfer"
//! ```
//!
//! stdout holds only metric lines, `name value unit`; progress, per-run
//! samples and notes go to stderr. Everything runs in this one process on
//! 127.0.0.1: nodes listen only on `/ip4/127.0.0.1/tcp/0`, mDNS is off, and
//! every node (each on a `Runtime` with `num_cpus(1)`) uses a 100 ms
//! heartbeat (`.heartbeat(Duration::from_millis(100))`; a node also
//! publishes a heartbeat as soon as a peer's gossip subscription arrives).
//! Node B bootstraps from node A's first listen address and waits for A
//! (`wait_for_peers(1, 30 s)`) before anything is measured. Every loop is
//! bounded in count and, by a per-section deadline, in time; every get and
//! socket read has a timeout.
//!
//! Metrics (GB/s means 1e9 bytes per second; MB means 1e6 bytes):
//!
//! - `transfer_gbps`: a fresh 100 MB `Vec<u8>` is put on A and its ref
//!   encoded there (`a.encode_ref`, untimed); the timer runs from
//!   `b.decode_ref::<Vec<u8>>` until `get` on B returns the value (the
//!   first 256 KiB over libp2p, the rest over A's bulk lane). Median of 5
//!   rounds; each round's object is new and both refs are dropped after
//!   it. From the second round on, B decodes the replica into the buffer
//!   of the previous round's freed replica (the store's recycling pool,
//!   `RuntimeBuilder::recycle_capacity`): the steady state of repeated
//!   transfers. The value is checked
//!   against the source afterwards (untimed). stderr shows, per round, the
//!   process's CPU time during the timed part (`/proc/self/stat`): CPU
//!   nanoseconds per byte, and how many cores were busy on average; and
//!   how many cores other processes kept busy meanwhile (`/proc/stat`
//!   less this process, in 10 ms ticks: rough). A transfer needs both
//!   cores of a 2-core machine where the fresh-write floor needs one, so
//!   a cold round during which another process held a core says little
//!   about `transfer_cold_vs_fresh_write`.
//! - `transfer_best_gbps`: the best of those rounds.
//! - `transfer_cold_gbps`: the first round alone: its replica is written
//!   into fresh memory (a page fault per 4 KiB), as any first transfer is
//!   (the decoder's helper thread takes those faults a few segments ahead
//!   of the receive).
//! - `remote_get_small_us`: latency of `get` on B of a fresh 64-byte
//!   `Vec<u8>` put on A (objects under 256 bytes are inline-sized). Refs are
//!   prepared in batches of 100 (put and encode on A, decode on B) so only
//!   the `get` is timed. Median over 2,000 gets, after 50 warm-up gets.
//!   stderr shows the process's CPU time per get over the whole section
//!   (ref preparation and background DHT announcements included).
//! - `remote_get_small_p99_us`: the 99th percentile of those gets.
//!   Built with the `probe` feature (`--features probe`), stderr also
//!   shows where a get's time went, stage by stage (`stages.rs`).
//! - `discovery_ms`: from starting a fresh node with `.bootstrap(a's addr)`
//!   (its runtime is built before the timer starts) until
//!   `wait_for_peers(1, ..)` returns on it. Median of 5 fresh nodes, each
//!   shut down after.
//! - `tcp_loopback_gbps`: the floor of `transfer_gbps`: std `TcpStream`s on
//!   127.0.0.1 with `TCP_NODELAY`, one connection; one thread writes 100 MB
//!   in 1 MiB writes, another reads it into a 1 MiB buffer and answers one
//!   byte when it has it all; timed on the writer from the first write to
//!   that byte. Median of 5 (after one warm-up, round 0 on stderr). stderr
//!   shows CPU per byte as for `transfer_gbps`.
//! - `fresh_write_gbps`: the other floor of `transfer_gbps`: copying 100 MB
//!   into a newly allocated `Vec` in 1 MiB steps (the page faults and
//!   zeroing every new replica costs; the TCP floor reads into one reused
//!   buffer and pays none). Median of 5; stderr shows each round with the
//!   cores other processes kept busy meanwhile.
//! - `tcp_rtt_us`: the floor of `remote_get_small_us`: a 64-byte ping-pong
//!   round trip over one such connection (an echo thread); median of 2,000
//!   (after 100 warm-ups). `tcp_rtt_p99_us`: their 99th percentile.
//! - `transfer_vs_tcp`: `tcp_loopback_gbps / transfer_gbps` (how many times
//!   slower than the socket the transfer is).
//! - `remote_get_vs_tcp_rtt`: `remote_get_small_us / tcp_rtt_us`.
//! - `transfer_cold_vs_fresh_write`: `transfer_cold_gbps /
//!   fresh_write_gbps` (the first transfer against the fresh-memory floor).
//! - `remote_task_rtt_us`, `remote_task_rtt_p99_us`, `remote_tasks_per_s`,
//!   `remote_actor_calls_per_s`, `spillback_speedup`: remote work, on
//!   fresh nodes (see `remote.rs`).
//! - `remote_task_vs_tcp_rtt`: `remote_task_rtt_us / tcp_rtt_us`.
//! - `flooded_*`, `flood_tasks_per_s`: small gets and remote tasks of one
//!   peer while another floods the same node with tasks (see `flood.rs`).
//!
//! The floors run first, before any node exists, so no node thread competes
//! with them.
//!
//! Nodes use the message lane ("fast lane", `NodeBuilder::fast_lane`) by
//! default, so small gets and task mail go over it once it is up (the
//! warm-ups bring it up; stderr shows each node's `FastLaneStats`). With
//! `MANTA_BENCH_NO_FAST_LANE=1` in the environment every node is built
//! without it: the libp2p-only numbers, for comparison.

mod flood;
mod remote;
mod stages;

use manta::{ObjectRef, Runtime};
use manta_p2p::probe::Stage;
use manta_p2p::{Node, Registry};
use stages::Breakdown;
use std::error::Error;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

type Res<T> = Result<T, Box<dyn Error>>;
/// Refs to small objects.
type Refs = Vec<ObjectRef<Vec<u8>>>;

/// Size of the large object and of the TCP stream: 100 MB.
const LARGE_BYTES: usize = 100_000_000;
/// Rounds of the large transfer and of the TCP stream.
const LARGE_ROUNDS: usize = 5;
/// Size of a small object and of a TCP ping.
const SMALL_BYTES: usize = 64;
/// Timed small gets (and TCP round trips).
const SMALL_ROUNDS: usize = 2_000;
/// Small refs prepared ahead of their gets.
const SMALL_BATCH: usize = 100;
/// Untimed small gets first (and TCP round trips).
const SMALL_WARMUP: usize = 50;
const TCP_RTT_WARMUP: usize = 100;
/// Size of one TCP write (and of the reader's buffer): 1 MiB.
const TCP_WRITE: usize = 1 << 20;
/// Fresh nodes timed joining the cluster.
const DISCOVERY_NODES: usize = 5;
/// Heartbeat period of every node in the bench.
const HEARTBEAT: Duration = Duration::from_millis(100);
/// Longest wait for peers, a large get, a small get, and a socket read.
const PEER_WAIT: Duration = Duration::from_secs(30);
const LARGE_GET_TIMEOUT: Duration = Duration::from_secs(60);
const SMALL_GET_TIMEOUT: Duration = Duration::from_secs(10);
const SOCKET_TIMEOUT: Duration = Duration::from_secs(10);
/// Time budget of one section: past it, its loop stops early (and says so).
const SECTION_BUDGET: Duration = Duration::from_secs(120);

/// With this variable set, every node is built with `.fast_lane(false)`
/// (the same run's numbers over libp2p only, for comparison).
const NO_FAST_LANE: &str = "MANTA_BENCH_NO_FAST_LANE";

/// Every metric this program prints, in order.
const METRICS: &[&str] = &[
    "tcp_loopback_gbps",
    "fresh_write_gbps",
    "tcp_rtt_us",
    "tcp_rtt_p99_us",
    "transfer_gbps",
    "transfer_best_gbps",
    "transfer_cold_gbps",
    "remote_get_small_us",
    "remote_get_small_p99_us",
    "discovery_ms",
    "transfer_vs_tcp",
    "remote_get_vs_tcp_rtt",
    "transfer_cold_vs_fresh_write",
    "remote_task_rtt_us",
    "remote_task_rtt_p99_us",
    "remote_tasks_per_s",
    "remote_actor_calls_per_s",
    "spillback_speedup",
    "remote_task_vs_tcp_rtt",
    "flooded_remote_get_small_us",
    "flooded_remote_get_small_p99_us",
    "flooded_remote_task_rtt_us",
    "flooded_remote_task_rtt_p99_us",
    "flood_tasks_per_s",
];

struct Bench {
    filter: Option<String>,
}

impl Bench {
    /// True if any of `names` passes the filter.
    fn wants(&self, names: &[&str]) -> bool {
        match &self.filter {
            None => true,
            Some(f) => names.iter().any(|n| n.contains(f.as_str())),
        }
    }

    /// Prints one metric line on stdout (if it passes the filter).
    fn report(&self, name: &str, value: f64, unit: &str) {
        if self.wants(&[name]) {
            println!("{name} {} {unit}", fmt_value(value));
        }
    }
}

/// Plain decimal, enough significant digits, no exponent (easy to parse).
fn fmt_value(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.4}")
    }
}

fn sorted(mut v: Vec<f64>) -> Vec<f64> {
    v.sort_by(|a, b| a.total_cmp(b));
    v
}

/// The median of a sorted, non-empty slice.
fn median(s: &[f64]) -> f64 {
    s[s.len() / 2]
}

/// The `p`-quantile (nearest rank) of a sorted, non-empty slice.
fn quantile(s: &[f64], p: f64) -> f64 {
    let rank = (p * s.len() as f64).ceil() as usize;
    s[rank.clamp(1, s.len()) - 1]
}

fn show(samples: &[f64]) -> String {
    samples.iter().map(|s| fmt_value(*s)).collect::<Vec<_>>().join(" ")
}

/// Stops a loop whose section ran past its budget (and says so).
fn over_budget(section: &str, start: Instant, done: usize) -> bool {
    let over = start.elapsed() > SECTION_BUDGET;
    if over {
        eprintln!("# {section}: time budget {SECTION_BUDGET:?} spent after {done} rounds; stopping early");
    }
    over
}

/// CPU seconds (user + system) this process has used so far, from
/// `/proc/self/stat` (in clock ticks, taken as 100 per second); `None` where
/// that file is not readable.
fn process_cpu_s() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name (which is in parentheses): utime and
    // stime are the 12th and 13th.
    let rest = &stat[stat.rfind(')')? + 2..];
    let mut fields = rest.split_whitespace().skip(11);
    let utime: f64 = fields.next()?.parse().ok()?;
    let stime: f64 = fields.next()?.parse().ok()?;
    Some((utime + stime) / 100.0)
}

/// CPU seconds the whole machine has been busy so far (all CPUs: user,
/// nice, system, irq, softirq and steal time), from the first line of
/// `/proc/stat` (in clock ticks, taken as 100 per second); `None` where
/// that file is not readable.
fn machine_busy_s() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let ticks: Vec<f64> = stat.lines().next()?.split_whitespace().skip(1).map_while(|f| f.parse().ok()).collect();
    let busy = [0, 1, 2, 5, 6, 7].iter().map(|&i| ticks.get(i).copied()).sum::<Option<f64>>()?;
    Some(busy / 100.0)
}

/// The CPU other processes use while something is timed: a round whose
/// figure is near a whole core did not have the machine to itself (a
/// transfer needs both cores of a 2-core machine, a fresh write one).
/// Clock ticks are 10 ms, so over a 50 ms round this is a rough figure.
struct Others {
    busy0: Option<f64>,
    cpu0: Option<f64>,
}

impl Others {
    fn start() -> Others {
        Others { busy0: machine_busy_s(), cpu0: process_cpu_s() }
    }

    /// Cores other processes kept busy on average over `d` since `start`.
    fn cores(&self, d: Duration) -> Option<f64> {
        let (b0, c0, b1, c1) = (self.busy0?, self.cpu0?, machine_busy_s()?, process_cpu_s()?);
        Some((((b1 - b0) - (c1 - c0)) / d.as_secs_f64()).max(0.0))
    }
}

fn gbps(bytes: usize, d: Duration) -> f64 {
    bytes as f64 / d.as_secs_f64() / 1e9
}

// ---------------------------------------------------------------------------
// Floors: plain std sockets.

/// Copies 100 MB into a freshly allocated `Vec` per round (what a replica
/// costs before any byte crosses a socket: the OS faults in and zeroes
/// every new page); returns GB/s per round.
fn fresh_write() -> Vec<f64> {
    let src: Vec<u8> = (0..LARGE_BYTES).map(|i| (i % 251) as u8).collect();
    (0..LARGE_ROUNDS)
        .map(|round| {
            let others = Others::start();
            let t = Instant::now();
            let mut v: Vec<u8> = Vec::with_capacity(LARGE_BYTES);
            for c in src.chunks(TCP_WRITE) {
                v.extend_from_slice(c);
            }
            let d = t.elapsed();
            assert_eq!(std::hint::black_box(&v).len(), LARGE_BYTES);
            if let Some(o) = others.cores(d) {
                eprintln!("#     round {round}: {:.0} ms, other processes {o:.1} cores busy", d.as_secs_f64() * 1e3);
            }
            gbps(LARGE_BYTES, d)
        })
        .collect()
}

/// A connected pair of loopback sockets, `TCP_NODELAY` and timeouts set.
fn tcp_pair() -> Res<(TcpStream, TcpStream)> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let client = TcpStream::connect(listener.local_addr()?)?;
    let (server, _) = listener.accept()?;
    for s in [&client, &server] {
        s.set_nodelay(true)?;
        s.set_read_timeout(Some(SOCKET_TIMEOUT))?;
        s.set_write_timeout(Some(SOCKET_TIMEOUT))?;
    }
    Ok((client, server))
}

/// Streams 100 MB per round over one connection; returns GB/s per round.
fn tcp_loopback() -> Res<Vec<f64>> {
    let (mut tx, mut rx) = tcp_pair()?;
    let rounds = LARGE_ROUNDS + 1; // the first is a warm-up
    let reader: JoinHandle<std::io::Result<()>> = std::thread::spawn(move || {
        let mut buf = vec![0u8; TCP_WRITE];
        for _ in 0..rounds {
            let mut left = LARGE_BYTES;
            while left > 0 {
                let want = left.min(buf.len());
                let n = rx.read(&mut buf[..want])?;
                if n == 0 && left == LARGE_BYTES {
                    return Ok(()); // the writer stopped early
                }
                if n == 0 {
                    return Err(std::io::ErrorKind::UnexpectedEof.into());
                }
                left -= n;
            }
            rx.write_all(&[1])?;
        }
        Ok(())
    });
    let block: Vec<u8> = (0..TCP_WRITE).map(|i| (i * 31 % 251) as u8).collect();
    let start = Instant::now();
    let mut samples = Vec::with_capacity(LARGE_ROUNDS);
    for round in 0..rounds {
        let cpu0 = process_cpu_s();
        let t = Instant::now();
        let mut left = LARGE_BYTES;
        while left > 0 {
            let n = left.min(block.len());
            tx.write_all(&block[..n])?;
            left -= n;
        }
        let mut ack = [0u8; 1];
        tx.read_exact(&mut ack)?;
        let d = t.elapsed();
        if round > 0 {
            samples.push(gbps(LARGE_BYTES, d));
        }
        if let (Some(c0), Some(c1)) = (cpu0, process_cpu_s()) {
            let cpu = c1 - c0;
            eprintln!(
                "#     round {round}: {:.0} ms, process cpu {cpu:.2} s ({:.1} ns/byte)",
                d.as_secs_f64() * 1e3,
                cpu * 1e9 / LARGE_BYTES as f64
            );
        }
        if over_budget("tcp_loopback_gbps", start, round + 1) {
            break;
        }
    }
    drop(tx); // ends the reader if it is still waiting
    reader.join().map_err(|_| "tcp reader panicked")??;
    Ok(samples)
}

/// 64-byte ping-pong over one connection; returns round trips in µs.
fn tcp_rtt() -> Res<Vec<f64>> {
    let (mut client, mut server) = tcp_pair()?;
    let echo: JoinHandle<std::io::Result<()>> = std::thread::spawn(move || {
        let mut buf = [0u8; SMALL_BYTES];
        for _ in 0..TCP_RTT_WARMUP + SMALL_ROUNDS {
            match server.read_exact(&mut buf) {
                Ok(()) => server.write_all(&buf)?,
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()), // stopped early
                Err(e) => return Err(e),
            }
        }
        Ok(())
    });
    let ping = [7u8; SMALL_BYTES];
    let mut pong = [0u8; SMALL_BYTES];
    let start = Instant::now();
    let mut samples = Vec::with_capacity(SMALL_ROUNDS);
    for i in 0..TCP_RTT_WARMUP + SMALL_ROUNDS {
        let t = Instant::now();
        client.write_all(&ping)?;
        client.read_exact(&mut pong)?;
        if i >= TCP_RTT_WARMUP {
            samples.push(t.elapsed().as_secs_f64() * 1e6);
        }
        if i % 100 == 99 && over_budget("tcp_rtt_us", start, i + 1) {
            break;
        }
    }
    drop(client);
    echo.join().map_err(|_| "tcp echo thread panicked")??;
    Ok(samples)
}

// ---------------------------------------------------------------------------
// Nodes.

/// A node on 127.0.0.1 (mDNS off: the default), 100 ms heartbeat, on a
/// one-CPU runtime `rt`.
fn start_node(rt: Runtime, bootstrap: Option<&Node>) -> Res<Node> {
    let mut b = Node::builder(rt)
        .listen("/ip4/127.0.0.1/tcp/0".parse()?)
        .mdns(false)
        .heartbeat(HEARTBEAT)
        .fast_lane(std::env::var_os(NO_FAST_LANE).is_none());
    if let Some(n) = bootstrap {
        b = b.bootstrap(n.listen_addrs()[0].clone());
    }
    Ok(b.start()?)
}

/// [`start_node`] on a fresh one-CPU runtime with `registry`.
fn start_with(registry: Registry, bootstrap: Option<&Node>) -> Res<Node> {
    let mut b = Node::builder(one_cpu()?)
        .listen("/ip4/127.0.0.1/tcp/0".parse()?)
        .heartbeat(HEARTBEAT)
        .registry(registry)
        .fast_lane(std::env::var_os(NO_FAST_LANE).is_none());
    if let Some(n) = bootstrap {
        b = b.bootstrap(n.listen_addrs()[0].clone());
    }
    Ok(b.start()?)
}

fn one_cpu() -> Res<Runtime> {
    Ok(Runtime::builder().num_cpus(1).build()?)
}

/// 100 MB from A to B, fresh object each round; returns GB/s per round,
/// in round order.
fn transfer(a: &Node, b: &Node) -> Res<Vec<f64>> {
    let src: Vec<u8> = (0..LARGE_BYTES).map(|i| (i * 131 % 251) as u8).collect();
    // Warm-up: a small object over the same path (streams, blocking threads).
    {
        let r = a.runtime().put(src[..1 << 20].to_vec())?;
        let there: ObjectRef<Vec<u8>> = b.decode_ref(&a.encode_ref(&r)?)?;
        there.get_timeout(LARGE_GET_TIMEOUT)?;
    }
    let start = Instant::now();
    let mut samples = Vec::with_capacity(LARGE_ROUNDS);
    for round in 0..LARGE_ROUNDS {
        let r = a.runtime().put(src.clone())?;
        let wire = a.encode_ref(&r)?;
        let pooled_mb = b.runtime().store_stats().bytes_recycled as f64 / 1e6;
        let cpu0 = process_cpu_s();
        let others = Others::start();
        let t = Instant::now();
        let there: ObjectRef<Vec<u8>> = b.decode_ref(&wire)?;
        let got = there.get_timeout(LARGE_GET_TIMEOUT)?;
        let d = t.elapsed();
        if let (Some(c0), Some(c1)) = (cpu0, process_cpu_s()) {
            let cpu = c1 - c0;
            let per_byte = cpu * 1e9 / LARGE_BYTES as f64;
            let busy = cpu / d.as_secs_f64();
            let others = others.cores(d).map_or(String::new(), |o| format!(", other processes {o:.1} cores busy"));
            eprintln!(
                "#     round {round}: {:.0} ms, process cpu {cpu:.2} s ({per_byte:.1} ns/byte, {busy:.2} cores busy), {pooled_mb:.0} MB pooled on b before{others}",
                d.as_secs_f64() * 1e3
            );
        }
        if *got != src {
            return Err(format!("round {round}: the transferred bytes differ from the source").into());
        }
        samples.push(gbps(LARGE_BYTES, d));
        drop((got, there, r));
        if over_budget("transfer_gbps", start, round + 1) {
            break;
        }
    }
    Ok(samples)
}

/// Gets on B of fresh 64-byte objects put on A; returns µs per get.
fn remote_get_small(a: &Node, b: &Node) -> Res<Vec<f64>> {
    let batch = |first: usize, n: usize| -> Res<(Refs, Refs)> {
        let mut owned = Vec::with_capacity(n);
        let mut remote = Vec::with_capacity(n);
        for i in first..first + n {
            let r = a.runtime().put(vec![i as u8; SMALL_BYTES])?;
            remote.push(b.decode_ref::<Vec<u8>>(&a.encode_ref(&r)?)?);
            owned.push(r);
        }
        Ok((owned, remote))
    };
    let (_owned, warm) = batch(0, SMALL_WARMUP)?;
    for r in &warm {
        r.get_timeout(SMALL_GET_TIMEOUT)?;
    }
    let cpu0 = process_cpu_s();
    let start = Instant::now();
    let mut samples = Vec::with_capacity(SMALL_ROUNDS);
    let mut stages = Breakdown::new(Stage::GET);
    let mut first = 0;
    while first < SMALL_ROUNDS {
        let n = SMALL_BATCH.min(SMALL_ROUNDS - first);
        let (owned, remote) = batch(first, n)?;
        for (i, r) in remote.iter().enumerate() {
            let t = Instant::now();
            let v = r.get_timeout(SMALL_GET_TIMEOUT)?;
            let took = t.elapsed();
            samples.push(took.as_secs_f64() * 1e6);
            stages.add(t, took);
            if v.len() != SMALL_BYTES || v[0] != (first + i) as u8 {
                return Err(format!("small object {} came back wrong", first + i).into());
            }
        }
        drop((owned, remote));
        first += n;
        if over_budget("remote_get_small_us", start, first) {
            break;
        }
    }
    if let (Some(c0), Some(c1)) = (cpu0, process_cpu_s()) {
        let per_get = (c1 - c0) * 1e6 / samples.len().max(1) as f64;
        let busy = (c1 - c0) / start.elapsed().as_secs_f64();
        eprintln!("#     process cpu {per_get:.0} us per get (ref preparation included), {busy:.2} cores busy");
    }
    stages.print("remote_get_small");
    Ok(samples)
}

/// Fresh nodes bootstrapping from A; returns ms until each sees a peer.
fn discovery(a: &Node) -> Res<Vec<f64>> {
    let start = Instant::now();
    let mut samples = Vec::with_capacity(DISCOVERY_NODES);
    for i in 0..DISCOVERY_NODES {
        let rt = one_cpu()?;
        let t = Instant::now();
        let n = start_node(rt, Some(a))?;
        n.wait_for_peers(1, PEER_WAIT)?;
        samples.push(t.elapsed().as_secs_f64() * 1e3);
        n.shutdown();
        drop(n);
        if over_budget("discovery_ms", start, i + 1) {
            break;
        }
    }
    Ok(samples)
}

// ---------------------------------------------------------------------------

/// A metric's samples: reports the median (and more) and returns it.
fn summarize(name: &str, samples: Vec<f64>) -> Option<Vec<f64>> {
    if samples.is_empty() {
        eprintln!("# {name}: no samples");
        return None;
    }
    let s = sorted(samples);
    if s.len() <= 10 {
        eprintln!("#   {name}: runs {}", show(&s));
    } else {
        eprintln!(
            "#   {name}: n {} min {} p50 {} p90 {} p99 {} max {}",
            s.len(),
            fmt_value(s[0]),
            fmt_value(median(&s)),
            fmt_value(quantile(&s, 0.90)),
            fmt_value(quantile(&s, 0.99)),
            fmt_value(s[s.len() - 1]),
        );
    }
    Some(s)
}

fn main() -> Res<()> {
    let filter = std::env::args().skip(1).find(|a| !a.starts_with('-'));
    let bench = Bench { filter };
    if !bench.wants(METRICS) {
        eprintln!(
            "no metric name contains {:?}; the metrics are: {}",
            bench.filter.unwrap_or_default(),
            METRICS.join(" ")
        );
        std::process::exit(2);
    }
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    eprintln!("# manta-p2p bench: {cores} cores, filter {:?}", bench.filter);
    let begin = Instant::now();

    // What to measure: a ratio needs both of its sides.
    let want_tcp_bw = bench.wants(&["tcp_loopback_gbps", "transfer_vs_tcp"]);
    let want_tcp_rtt =
        bench.wants(&["tcp_rtt_us", "tcp_rtt_p99_us", "remote_get_vs_tcp_rtt", "remote_task_vs_tcp_rtt"]);
    let want_transfer = bench.wants(&[
        "transfer_gbps",
        "transfer_best_gbps",
        "transfer_cold_gbps",
        "transfer_vs_tcp",
        "transfer_cold_vs_fresh_write",
    ]);
    let want_small = bench.wants(&["remote_get_small_us", "remote_get_small_p99_us", "remote_get_vs_tcp_rtt"]);
    let want_discovery = bench.wants(&["discovery_ms"]);

    // Floors first, before any node thread exists.
    let mut tcp_bw = None;
    if want_tcp_bw {
        eprintln!("# tcp loopback: {LARGE_ROUNDS} x 100 MB over one connection, {TCP_WRITE}-byte writes");
        if let Some(s) = summarize("tcp_loopback_gbps", tcp_loopback()?) {
            bench.report("tcp_loopback_gbps", median(&s), "GB/s");
            tcp_bw = Some(median(&s));
        }
    }
    let mut fresh_gbps = None;
    if bench.wants(&["fresh_write_gbps", "transfer_cold_vs_fresh_write"]) {
        eprintln!("# fresh write: {LARGE_ROUNDS} x 100 MB copied into a new Vec, {TCP_WRITE}-byte steps");
        if let Some(s) = summarize("fresh_write_gbps", fresh_write()) {
            bench.report("fresh_write_gbps", median(&s), "GB/s");
            fresh_gbps = Some(median(&s));
        }
    }
    let mut tcp_rtt_us = None;
    if want_tcp_rtt {
        eprintln!("# tcp rtt: {SMALL_ROUNDS} x {SMALL_BYTES}-byte ping-pong");
        if let Some(s) = summarize("tcp_rtt_us", tcp_rtt()?) {
            bench.report("tcp_rtt_us", median(&s), "us");
            bench.report("tcp_rtt_p99_us", quantile(&s, 0.99), "us");
            tcp_rtt_us = Some(median(&s));
        }
    }

    let mut transfer_gbps = None;
    let mut cold_gbps = None;
    let mut small_us = None;
    if want_transfer || want_small || want_discovery {
        let t = Instant::now();
        let a = start_node(one_cpu()?, None)?;
        let b = start_node(one_cpu()?, Some(&a))?;
        b.wait_for_peers(1, PEER_WAIT)?;
        a.wait_for_peers(1, PEER_WAIT)?;
        eprintln!(
            "# nodes: a {} and b {} joined in {:.0} ms",
            a.peer_id(),
            b.peer_id(),
            t.elapsed().as_secs_f64() * 1e3
        );

        if want_transfer {
            eprintln!("# transfer: {LARGE_ROUNDS} x 100 MB Vec<u8>, a -> b");
            let rounds = transfer(&a, &b)?;
            let cold = rounds.first().copied();
            if let Some(s) = summarize("transfer_gbps", rounds) {
                bench.report("transfer_gbps", median(&s), "GB/s");
                bench.report("transfer_best_gbps", s[s.len() - 1], "GB/s");
                if let Some(cold) = cold {
                    bench.report("transfer_cold_gbps", cold, "GB/s");
                    cold_gbps = Some(cold);
                }
                transfer_gbps = Some(median(&s));
            }
        }
        if want_small {
            eprintln!("# remote get: {SMALL_ROUNDS} fresh {SMALL_BYTES}-byte objects, batches of {SMALL_BATCH}");
            let got = remote_get_small(&a, &b)?;
            eprintln!("#     fast lane: b {:?}", b.fast_lane_stats());
            if let Some(s) = summarize("remote_get_small_us", got) {
                bench.report("remote_get_small_us", median(&s), "us");
                bench.report("remote_get_small_p99_us", quantile(&s, 0.99), "us");
                small_us = Some(median(&s));
            }
        }
        if want_discovery {
            eprintln!("# discovery: {DISCOVERY_NODES} fresh nodes bootstrapping from a");
            if let Some(s) = summarize("discovery_ms", discovery(&a)?) {
                bench.report("discovery_ms", median(&s), "ms");
            }
        }
        b.shutdown();
        a.shutdown();
    }

    let task_rtt = remote::run(&bench)?;
    flood::run(&bench)?;
    if let (Some(task), Some(tcp)) = (task_rtt, tcp_rtt_us) {
        bench.report("remote_task_vs_tcp_rtt", task / tcp, "x");
    }

    if let (Some(tcp), Some(p2p)) = (tcp_bw, transfer_gbps) {
        bench.report("transfer_vs_tcp", tcp / p2p, "x");
    }
    if let (Some(p2p), Some(tcp)) = (small_us, tcp_rtt_us) {
        bench.report("remote_get_vs_tcp_rtt", p2p / tcp, "x");
    }
    if let (Some(cold), Some(fresh)) = (cold_gbps, fresh_gbps) {
        bench.report("transfer_cold_vs_fresh_write", cold / fresh, "x");
    }
    eprintln!("# done in {:.1} s", begin.elapsed().as_secs_f64());
    Ok(())
}
