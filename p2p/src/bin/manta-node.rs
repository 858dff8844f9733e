//! `manta-node`: runs one manta-p2p node and speaks a line protocol on
//! stdin/stdout, so a test harness can drive several processes
//! deterministically (see `p2p/tests/multiprocess.rs`).
//!
//! Arguments (parsed with `clap`: `manta-node --help`; `manta-node
//! completions SHELL` prints a shell completion script): `--listen MULTIADDR` (default `/ip4/127.0.0.1/tcp/0`),
//! `--bootstrap MULTIADDR` (repeatable), `--mdns`, `--peers N` (default 0),
//! `--timeout SECS` (default 30), `--seed S` (u64, default 0), `--bytes B`
//! (default 1 MB), `--threshold N` (the node's `queue_threshold`: local
//! queue length from which tasks spill to peers; default 1), `--cpus N`
//! (the runtime's CPUs, default 1; 0 makes a node that only submits),
//! `--heartbeat-ms MS` and `--failure-ms MS` (heartbeat period and failure
//! timeout, defaults 1000 and 5000; both grow as n / 20 in a cluster of
//! more than 20 nodes, `NodeBuilder::adaptive_heartbeat`), `--secret-file PATH` (the cluster
//! secret; without it, the one in the environment variable `MANTA_SECRET`,
//! if set: 32 bytes as 64 hex digits or base64, see
//! `manta_p2p::parse_secret`), `--timeline` (record a timeline from the
//! start, for `manta timeline`). A secret is never taken on the command line
//! (`--secret` is refused), and a node listening beyond loopback or with
//! `--mdns` needs one.
//!
//! Protocol (one line each, flushed at once):
//! 1. `ADDR <first listen address, ending in /p2p/<peer id>>`
//! 2. `PEERS <n>` once at least `--peers` live peers are members (gossip).
//! 3. `REF <hex of the encoded ref>` of a `Vec<u8>` of `--bytes` bytes made
//!    from `--seed` (splitmix64), then `SUM <checksum>` of those bytes.
//! 4. Then, for each stdin line, in order:
//!    - `REF <hex>`: decode, get (within `--timeout`) and print
//!      `GOT <object id> <len> <checksum>`;
//!    - `WORDCOUNT <chunks> <seed>` (chunks at most 4096): a map/reduce
//!      job on the cluster. Makes `chunks` text chunks of exactly 2000
//!      words each (splitmix64 from `seed` and the chunk's index, over a
//!      fixed vocabulary of 50 words), submits one `count_words` task per
//!      chunk, then reduces the partial counts with `merge` tasks in a
//!      binary tree, each taking its two inputs as refs (so partial counts
//!      move between nodes), and gets the root (within `--timeout`). Prints
//!      `WC <total words> <distinct words> <checksum of the canonical form>
//!      <distinct nodes that ran count_words tasks>`. The canonical form is
//!      one `<word> <count>\n` line per word in byte order of the words.
//!      The counts are also computed here without any task; if they differ
//!      it is an error;
//!    - `CHAOS <seed> <chunks> <big_mb>`: the fault-injection job of
//!      `chaos.rs` (its docs list the lines it prints), ending with a
//!      `CHAOS ...` result line;
//!    - `STATS`: prints `STATS <objects pinned for peers> <work accepted
//!      from peers> <live peers>`;
//!    - `EXIT`: shut down, exit 0.
//!
//! Every manta-node registers the same function table (`count_words`,
//! `merge`, and the `CHAOS` job's), so any of them runs the others' tasks; with `--threshold 1`
//! and one CPU a node spills as soon as one task waits locally.
//!
//! Invariants: refs are hex-encoded with the `hex` crate (lowercase); the
//! checksum is 64-bit FNV-1a as 16 lowercase hex digits; the
//! node's own object stays alive until `EXIT` (others fetch from it); any
//! error (bad argument, start failure, timeout, bad input line, a failed or
//! wrong word count, stdin closed before `EXIT`) is a typed error
//! (`error.rs`), printed with its chain of sources as `ERR <message>` (one
//! line) and exits with status 1. `--mdns` is refused unless `MANTA_ALLOW_MDNS=1`, a
//! guard against multicasting from the host network namespace. Log lines
//! (`tracing`) go to stderr, filtered by `RUST_LOG` (default: `warn,manta_p2p=info`: what the node does about failures).

use clap::{CommandFactory, Parser, Subcommand};
use error::NodeCliError;
use manta::{ObjectRef, Runtime};
use manta_p2p::{Multiaddr, Node, Registry, RemoteFn};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

#[path = "manta-node/chaos.rs"]
mod chaos;
#[path = "manta-node/error.rs"]
mod error;

/// The `manta-node` command line.
#[derive(Debug, Parser)]
#[command(
    name = "manta-node",
    version,
    about = "Runs one manta-p2p node driven by a line protocol on stdin/stdout (see the crate docs)",
    args_conflicts_with_subcommands = true
)]
struct Args {
    #[command(subcommand)]
    command: Option<NodeCommand>,
    /// Address to listen on.
    #[arg(long, default_value = "/ip4/127.0.0.1/tcp/0", value_name = "MULTIADDR")]
    listen: Multiaddr,
    /// A member's address, ending in /p2p/PEER_ID (repeatable).
    #[arg(long, value_name = "MULTIADDR")]
    bootstrap: Vec<Multiaddr>,
    /// Discover peers by mDNS (refused unless MANTA_ALLOW_MDNS=1).
    #[arg(long)]
    mdns: bool,
    /// Live peers to wait for before printing PEERS.
    #[arg(long, default_value_t = 0)]
    peers: usize,
    /// Seconds every wait may take.
    #[arg(long, default_value = "30", value_parser = parse_secs, value_name = "SECS")]
    timeout: Duration,
    /// Seed of this node's object.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Size of this node's object, in bytes.
    #[arg(long, default_value_t = 1_000_000, value_name = "B")]
    bytes: usize,
    /// Local queue length from which tasks spill to peers.
    #[arg(long, default_value_t = 1, value_name = "N")]
    threshold: usize,
    /// A file holding the cluster secret (else MANTA_SECRET is read).
    #[arg(long, value_name = "PATH")]
    secret_file: Option<PathBuf>,
    /// Refused: a secret on the command line is readable by every user.
    #[arg(long, hide = true, num_args = 0..=1, default_missing_value = "", value_name = "SECRET")]
    secret: Option<String>,
    /// The runtime's CPUs (0: a node that only submits).
    #[arg(long, default_value_t = 1, value_name = "N")]
    cpus: usize,
    /// Heartbeat period, in milliseconds (stretched as n / 20 beyond 20 nodes).
    #[arg(long = "heartbeat-ms", default_value = "1000", value_parser = parse_ms, value_name = "MS")]
    heartbeat: Duration,
    /// Failure timeout (silence before a peer is declared dead), in milliseconds
    /// (stretched like the period).
    #[arg(long = "failure-ms", default_value = "5000", value_parser = parse_ms, value_name = "MS")]
    failure: Duration,
    /// Record a timeline of every task, actor call and transfer from the
    /// start (`manta timeline` collects it from every member).
    #[arg(long)]
    timeline: bool,
}

/// The other modes.
#[derive(Debug, Subcommand)]
enum NodeCommand {
    /// Print a shell completion script for `manta-node`.
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
}

fn parse_secs(s: &str) -> Result<Duration, std::num::ParseIntError> {
    s.parse().map(Duration::from_secs)
}

fn parse_ms(s: &str) -> Result<Duration, std::num::ParseIntError> {
    s.parse().map(Duration::from_millis)
}

/// Parses the command line and checks what clap cannot: no `--secret`,
/// no `--mdns` without the guard.
fn parse_args<I: IntoIterator<Item = String>>(argv: I) -> Result<Args, NodeCliError> {
    let args = Args::try_parse_from(argv).map_err(NodeCliError::Usage)?;
    if args.secret.is_some() {
        return Err(NodeCliError::SecretOnCommandLine);
    }
    if args.mdns && std::env::var("MANTA_ALLOW_MDNS").as_deref() != Ok("1") {
        return Err(NodeCliError::MdnsRefused);
    }
    Ok(args)
}

/// A number in a job line.
fn parse<T: std::str::FromStr<Err = std::num::ParseIntError>>(what: &'static str, s: &str) -> Result<T, NodeCliError> {
    s.parse().map_err(|source| NodeCliError::BadNumber { what, value: s.into(), source })
}

/// The splitmix64 generator.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

/// The deterministic object of a seed: splitmix64 output, little endian.
fn object_bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut rng = SplitMix64(seed);
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        out.extend_from_slice(&rng.next().to_le_bytes());
    }
    out.truncate(len);
    out
}

/// The vocabulary of `WORDCOUNT` texts.
const VOCABULARY: [&str; 50] = [
    "actor", "batch", "cache", "delta", "epoch", "fetch", "graph", "heap", "index", "join", "kernel", "lease", "map",
    "node", "object", "peer", "queue", "ref", "store", "task", "unit", "value", "worker", "yield", "zone", "alpha",
    "bravo", "charlie", "echo", "foxtrot", "golf", "hotel", "india", "juliet", "kilo", "lima", "mike", "november",
    "oscar", "papa", "quebec", "romeo", "sierra", "tango", "uniform", "victor", "whiskey", "xray", "yankee", "zulu",
];
/// Words in each `WORDCOUNT` chunk.
const WORDS_PER_CHUNK: usize = 2000;
/// Most chunks one `WORDCOUNT` may ask for.
const MAX_CHUNKS: usize = 4096;

/// Chunk `index` of the text of `seed`: `WORDS_PER_CHUNK` words separated
/// by spaces, with a newline after every 16th.
fn text_chunk(seed: u64, index: usize) -> String {
    let mut rng = SplitMix64(seed ^ (index as u64).wrapping_mul(0xd1b5_4a32_d192_ed03));
    let mut out = String::with_capacity(WORDS_PER_CHUNK * 8);
    for i in 0..WORDS_PER_CHUNK {
        if i > 0 {
            out.push(if i % 16 == 0 { '\n' } else { ' ' });
        }
        out.push_str(VOCABULARY[(rng.next() % VOCABULARY.len() as u64) as usize]);
    }
    out
}

/// Word counts of part of a text, and the nodes that counted them.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct Partial {
    words: BTreeMap<String, u64>,
    /// Peer ids of the nodes that ran the `count_words` tasks.
    ran_on: BTreeSet<String>,
}

fn count_into(words: &mut BTreeMap<String, u64>, text: &str) {
    for w in text.split_whitespace() {
        match words.get_mut(w) {
            Some(n) => *n += 1,
            None => {
                words.insert(w.to_string(), 1);
            }
        }
    }
}

fn merge_into(into: &mut BTreeMap<String, u64>, from: BTreeMap<String, u64>) {
    for (w, n) in from {
        *into.entry(w).or_default() += n;
    }
}

/// Map: counts one chunk, recording the node it ran on.
static COUNT_WORDS: RemoteFn<(String,), Partial> = RemoteFn::new("count_words", |(text,)| {
    let node = Node::current().expect("cluster tasks run on a node's runtime");
    let mut words = BTreeMap::new();
    count_into(&mut words, &text);
    Partial { words, ran_on: BTreeSet::from([node.peer_id().to_string()]) }
});

/// Reduce: adds two partial counts.
static MERGE: RemoteFn<(Partial, Partial), Partial> = RemoteFn::new("merge", |(mut a, b)| {
    merge_into(&mut a.words, b.words);
    a.ran_on.extend(b.ran_on);
    a
});

/// The function table every manta-node registers.
fn registry() -> Registry {
    chaos::register(Registry::new().function(&COUNT_WORDS).function(&MERGE))
}

/// The canonical form of counts: one `<word> <count>\n` line per word, in
/// the map's (byte) order.
fn canonical(words: &BTreeMap<String, u64>) -> String {
    words.iter().map(|(w, n)| format!("{w} {n}\n")).collect()
}

/// 64-bit FNV-1a, as 16 hex digits.
fn checksum(bytes: &[u8]) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("{h:016x}")
}

/// Writes one protocol line and flushes it.
fn say(line: &str) -> Result<(), NodeCliError> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}").and_then(|()| out.flush()).map_err(NodeCliError::Stdout)
}

fn run(args: Args) -> Result<(), NodeCliError> {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,manta_p2p=info"));
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_ansi(false).with_writer(std::io::stderr).try_init();
    let rt = Runtime::builder().num_cpus(args.cpus).build().map_err(NodeCliError::Runtime)?;
    let mut builder = Node::builder(rt)
        .listen(args.listen.clone())
        .mdns(args.mdns)
        .registry(registry())
        .queue_threshold(args.threshold)
        .heartbeat(args.heartbeat)
        .failure_timeout(args.failure)
        .timeline(args.timeline);
    for b in &args.bootstrap {
        builder = builder.bootstrap(b.clone());
    }
    if let Some(k) = manta_p2p::load_secret(args.secret_file.as_deref()).map_err(NodeCliError::Secret)? {
        builder = builder.secret(k);
    }
    let node = builder.start().map_err(NodeCliError::node("cannot start the node"))?;
    let result = serve(&node, &args);
    node.shutdown();
    result
}

fn serve(node: &Node, args: &Args) -> Result<(), NodeCliError> {
    let addr = node.listen_addrs().into_iter().next().ok_or(NodeCliError::NoListenAddress)?;
    say(&format!("ADDR {addr}"))?;

    let status = node.wait_for_peers(args.peers, args.timeout).map_err(NodeCliError::node("waiting for peers"))?;
    say(&format!("PEERS {}", status.iter().filter(|m| m.alive && !m.is_self).count()))?;

    let data = object_bytes(args.seed, args.bytes);
    let sum = checksum(&data);
    // Kept until EXIT: the other processes fetch it from this node.
    let mine: ObjectRef<Vec<u8>> = node.runtime().put(data).map_err(|_| NodeCliError::StoreFull)?;
    say(&format!("REF {}", hex::encode(node.encode_ref(&mine).map_err(NodeCliError::node("cannot encode a ref"))?)))?;
    say(&format!("SUM {sum}"))?;

    for line in std::io::stdin().lock().lines() {
        let line = line.map_err(NodeCliError::Stdin)?;
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        if line == "EXIT" {
            drop(mine);
            return Ok(());
        }
        if let Some(job) = line.strip_prefix("WORDCOUNT ") {
            say(&word_count(node, job, args.timeout)?)?;
            continue;
        }
        if let Some(job) = line.strip_prefix("CHAOS ") {
            say(&chaos::run(node, job, args.timeout)?)?;
            continue;
        }
        if line == "STATS" {
            let live = node.cluster_status().map_err(NodeCliError::node("cannot read the member table"))?;
            let live = live.iter().filter(|m| m.alive && !m.is_self).count();
            say(&format!("STATS {} {} {live}", node.pinned_objects(), node.accepted_work()))?;
            continue;
        }
        let Some(hex) = line.strip_prefix("REF ") else {
            return Err(NodeCliError::UnexpectedLine(line.into()));
        };
        let wire = hex::decode(hex.trim()).map_err(NodeCliError::Hex)?;
        let r: ObjectRef<Vec<u8>> = node.decode_ref(&wire).map_err(NodeCliError::node("cannot decode a ref"))?;
        let value = r.get_timeout(args.timeout).map_err(NodeCliError::task(format!("get {}", r.id())))?;
        say(&format!("GOT {} {} {}", r.id(), value.len(), checksum(&value)))?;
    }
    Err(NodeCliError::StdinClosed)
}

/// Runs `WORDCOUNT <chunks> <seed>` (`job` is what follows the command) on
/// the cluster and returns its `WC` line.
fn word_count(node: &Node, job: &str, timeout: Duration) -> Result<String, NodeCliError> {
    let [chunks, seed] = job.split_whitespace().collect::<Vec<_>>()[..] else {
        return Err(NodeCliError::JobUsage { command: "WORDCOUNT", usage: "<chunks> <seed>", got: job.into() });
    };
    let chunks: usize = parse("WORDCOUNT chunks", chunks)?;
    let seed: u64 = parse("WORDCOUNT seed", seed)?;
    if chunks > MAX_CHUNKS {
        return Err(NodeCliError::TooManyChunks { asked: chunks, max: MAX_CHUNKS });
    }
    let texts: Vec<String> = (0..chunks).map(|i| text_chunk(seed, i)).collect();

    // Map: one task per chunk; reduce: a binary tree of merges over refs.
    let mut level: Vec<ObjectRef<Partial>> = texts.iter().map(|t| node.spawn(&COUNT_WORDS, (t.clone(),))).collect();
    // Merges take their argument refs by value: each partial count is freed
    // (everywhere) as soon as the merge that reads it is done.
    while level.len() > 1 {
        let mut next = Vec::with_capacity(level.len().div_ceil(2));
        let mut it = level.into_iter();
        while let Some(a) = it.next() {
            next.push(match it.next() {
                Some(b) => node.spawn(&MERGE, (a, b)),
                None => a,
            });
        }
        level = next;
    }

    // The same counts without any task, while the cluster works.
    let mut expected = BTreeMap::new();
    for t in &texts {
        count_into(&mut expected, t);
    }

    let got = match level.pop() {
        Some(root) => {
            (*root.get_timeout(timeout).map_err(NodeCliError::task(format!("word count of {chunks} chunks")))?).clone()
        }
        None => Partial::default(),
    };
    if got.words != expected {
        return Err(NodeCliError::WordCountDiffers {
            cluster_words: got.words.values().sum::<u64>(),
            cluster_kinds: got.words.len(),
            local_words: expected.values().sum::<u64>(),
            local_kinds: expected.len(),
        });
    }
    let total: u64 = got.words.values().sum();
    Ok(format!("WC {total} {} {} {}", got.words.len(), checksum(canonical(&got.words).as_bytes()), got.ran_on.len()))
}

fn main() -> ExitCode {
    let result = match parse_args(std::env::args()) {
        // `--help` and `--version` are not errors: clap prints them.
        Err(NodeCliError::Usage(e)) if !e.use_stderr() => {
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        Err(e) => Err(e),
        Ok(Args { command: Some(NodeCommand::Completions { shell }), .. }) => {
            let mut out = std::io::stdout().lock();
            clap_complete::generate(shell, &mut Args::command(), "manta-node", &mut out);
            out.flush().map_err(NodeCliError::Stdout)
        }
        Ok(args) => run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let msg = format!("ERR {}", error::one_line(&e));
            if say(&msg).is_err() {
                eprintln!("{msg}");
            }
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn objects_are_deterministic_per_seed() {
        assert_eq!(object_bytes(7, 1001), object_bytes(7, 1001));
        assert_ne!(object_bytes(7, 64), object_bytes(8, 64));
        assert_eq!(object_bytes(0, 13).len(), 13);
        assert_eq!(checksum(b""), "cbf29ce484222325");
        assert_eq!(checksum(b"a"), "af63dc4c8601ec8c");
    }

    #[test]
    fn texts_are_deterministic_and_sized() {
        let a = text_chunk(3, 5);
        assert_eq!(a, text_chunk(3, 5));
        assert_ne!(a, text_chunk(3, 6));
        assert_ne!(a, text_chunk(4, 5));
        assert_eq!(a.split_whitespace().count(), WORDS_PER_CHUNK);
        assert!(a.split_whitespace().all(|w| VOCABULARY.contains(&w)));
    }

    #[test]
    fn map_and_merge_agree_with_one_count() {
        let texts: Vec<String> = (0..3).map(|i| text_chunk(9, i)).collect();
        let parts: Vec<Partial> = texts
            .iter()
            .enumerate()
            .map(|(i, t)| {
                let mut words = BTreeMap::new();
                count_into(&mut words, t);
                Partial { words, ran_on: BTreeSet::from([format!("n{}", i % 2)]) }
            })
            .collect();
        let merged = parts.into_iter().reduce(|a, b| (MERGE.func())((a, b))).unwrap();
        let mut direct = BTreeMap::new();
        for t in &texts {
            count_into(&mut direct, t);
        }
        assert_eq!(merged.words, direct);
        assert_eq!(merged.words.values().sum::<u64>(), 3 * WORDS_PER_CHUNK as u64);
        assert_eq!(merged.ran_on, BTreeSet::from(["n0".to_string(), "n1".to_string()]));
        assert_eq!(canonical(&BTreeMap::from([("b".to_string(), 2), ("a".to_string(), 10)])), "a 10\nb 2\n");
    }

    #[test]
    fn mdns_needs_the_env_guard() {
        Args::command().debug_assert();
        let args = |v: &[&str]| parse_args(std::iter::once("manta-node").chain(v.iter().copied()).map(String::from));
        if std::env::var("MANTA_ALLOW_MDNS").as_deref() != Ok("1") {
            assert!(args(&["--mdns"]).is_err());
        }
        assert!(args(&["--peers"]).is_err());
        assert!(args(&["--bogus"]).is_err());
        assert_eq!(args(&["--peers", "2", "--seed", "5"]).unwrap().peers, 2);
        assert_eq!(args(&[]).unwrap().threshold, 1);
        assert_eq!(args(&["--threshold", "3"]).unwrap().threshold, 3);
        for secret in [&["--secret", &"ab".repeat(32)][..], &["--secret"]] {
            let e = error::one_line(&args(secret).map(|_| ()).unwrap_err());
            assert!(e.contains("--secret-file") && !e.contains("abab"), "{e}");
        }
        let a = args(&["--cpus", "0", "--heartbeat-ms", "200", "--failure-ms", "2000", "--timeout", "120"]).unwrap();
        assert_eq!((a.cpus, a.heartbeat, a.failure), (0, Duration::from_millis(200), Duration::from_secs(2)));
        assert_eq!(a.timeout, Duration::from_secs(120));
        assert!(args(&["--bootstrap", "nonsense"]).is_err());
        assert!(matches!(args(&["completions", "bash"]).unwrap().command, Some(NodeCommand::Completions { .. })));
        let a = args(&["--secret-file", "/k"]).unwrap();
        assert_eq!(a.secret_file.as_deref(), Some(std::path::Path::new("/k")));
    }
}
