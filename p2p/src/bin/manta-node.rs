//! `manta-node`: runs one manta-p2p node and speaks a line protocol on
//! stdin/stdout, so a test harness can drive several processes
//! deterministically (see `p2p/tests/multiprocess.rs`).
//!
//! Arguments: `--listen MULTIADDR` (default `/ip4/127.0.0.1/tcp/0`),
//! `--bootstrap MULTIADDR` (repeatable), `--mdns`, `--peers N` (default 0),
//! `--timeout SECS` (default 30), `--seed S` (u64, default 0), `--bytes B`
//! (default 1 MB), `--threshold N` (the node's `queue_threshold`: local
//! queue length from which tasks spill to peers; default 1), `--cpus N`
//! (the runtime's CPUs, default 1; 0 makes a node that only submits),
//! `--heartbeat-ms MS` and `--failure-ms MS` (heartbeat period and failure
//! timeout, defaults 1000 and 5000), `--secret-file PATH` (the cluster
//! secret; without it, the one in the environment variable `MANTA_SECRET`,
//! if set: 32 bytes as 64 hex digits or base64, see
//! `manta_p2p::parse_secret`). A secret is never taken on the command line
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
//! Invariants: the checksum is 64-bit FNV-1a as 16 lowercase hex digits; the
//! node's own object stays alive until `EXIT` (others fetch from it); any
//! error (bad argument, start failure, timeout, bad input line, a failed or
//! wrong word count, stdin closed before `EXIT`) prints `ERR <message>` and
//! exits with status 1. `--mdns` is refused unless `MANTA_ALLOW_MDNS=1`, a
//! guard against multicasting from the host network namespace. Log lines
//! (`tracing`) go to stderr, filtered by `RUST_LOG` (default: `warn,manta_p2p=info`: what the node does about failures).

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

/// Parsed command line.
struct Args {
    listen: Multiaddr,
    bootstrap: Vec<Multiaddr>,
    mdns: bool,
    peers: usize,
    timeout: Duration,
    seed: u64,
    bytes: usize,
    threshold: usize,
    secret_file: Option<PathBuf>,
    cpus: usize,
    heartbeat: Duration,
    failure: Duration,
}

const USAGE: &str = "usage: manta-node [--listen MULTIADDR] [--bootstrap MULTIADDR]... [--mdns] [--peers N] \
                     [--timeout SECS] [--seed S] [--bytes B] [--threshold N] [--cpus N] [--heartbeat-ms MS] \
                     [--failure-ms MS] [--secret-file PATH] (or the secret in MANTA_SECRET)";

fn parse_args(mut it: impl Iterator<Item = String>) -> Result<Args, String> {
    let mut args = Args {
        listen: "/ip4/127.0.0.1/tcp/0".parse().map_err(|e| format!("default listen address: {e}"))?,
        bootstrap: Vec::new(),
        mdns: false,
        peers: 0,
        timeout: Duration::from_secs(30),
        seed: 0,
        bytes: 1_000_000,
        threshold: 1,
        secret_file: None,
        cpus: 1,
        heartbeat: Duration::from_secs(1),
        failure: Duration::from_secs(5),
    };
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value; {USAGE}"));
        match flag.as_str() {
            "--listen" => args.listen = parse(&flag, &value()?)?,
            "--bootstrap" => args.bootstrap.push(parse(&flag, &value()?)?),
            "--mdns" => args.mdns = true,
            "--peers" => args.peers = parse(&flag, &value()?)?,
            "--timeout" => args.timeout = Duration::from_secs(parse(&flag, &value()?)?),
            "--seed" => args.seed = parse(&flag, &value()?)?,
            "--bytes" => args.bytes = parse(&flag, &value()?)?,
            "--threshold" => args.threshold = parse(&flag, &value()?)?,
            "--secret-file" => args.secret_file = Some(PathBuf::from(value()?)),
            "--secret" => {
                return Err("a secret on the command line is readable by every user of this machine; \
                            put it in a file for --secret-file, or in MANTA_SECRET"
                    .to_string())
            }
            "--cpus" => args.cpus = parse(&flag, &value()?)?,
            "--heartbeat-ms" => args.heartbeat = Duration::from_millis(parse(&flag, &value()?)?),
            "--failure-ms" => args.failure = Duration::from_millis(parse(&flag, &value()?)?),
            "-h" | "--help" => return Err(USAGE.to_string()),
            other => return Err(format!("unknown argument `{other}`; {USAGE}")),
        }
    }
    if args.mdns && std::env::var("MANTA_ALLOW_MDNS").as_deref() != Ok("1") {
        return Err("--mdns multicasts on every interface; refused unless MANTA_ALLOW_MDNS=1 \
                    (use it only inside a network namespace)"
            .to_string());
    }
    Ok(args)
}

fn parse<T: std::str::FromStr>(flag: &str, s: &str) -> Result<T, String>
where
    T::Err: std::fmt::Display,
{
    s.parse().map_err(|e| format!("bad value `{s}` for {flag}: {e}"))
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

fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn from_hex(s: &str) -> Result<Vec<u8>, String> {
    if !s.len().is_multiple_of(2) {
        return Err(format!("odd-length hex ({} digits)", s.len()));
    }
    let digit = |c: u8| match c {
        b'0'..=b'9' => Ok(c - b'0'),
        b'a'..=b'f' => Ok(c - b'a' + 10),
        b'A'..=b'F' => Ok(c - b'A' + 10),
        _ => Err(format!("bad hex digit `{}`", c.escape_ascii())),
    };
    s.as_bytes().chunks(2).map(|p| Ok(digit(p[0])? << 4 | digit(p[1])?)).collect()
}

/// Writes one protocol line and flushes it.
fn say(line: &str) -> Result<(), String> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}").and_then(|()| out.flush()).map_err(|e| format!("cannot write stdout: {e}"))
}

fn run() -> Result<(), String> {
    let args = parse_args(std::env::args().skip(1))?;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,manta_p2p=info"));
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_ansi(false).with_writer(std::io::stderr).try_init();
    let rt = Runtime::builder().num_cpus(args.cpus).build().map_err(|e| e.to_string())?;
    let mut builder = Node::builder(rt)
        .listen(args.listen.clone())
        .mdns(args.mdns)
        .registry(registry())
        .queue_threshold(args.threshold)
        .heartbeat(args.heartbeat)
        .failure_timeout(args.failure);
    for b in &args.bootstrap {
        builder = builder.bootstrap(b.clone());
    }
    if let Some(k) = manta_p2p::load_secret(args.secret_file.as_deref()).map_err(|e| e.to_string())? {
        builder = builder.secret(k);
    }
    let node = builder.start().map_err(|e| e.to_string())?;
    let result = serve(&node, &args);
    node.shutdown();
    result
}

fn serve(node: &Node, args: &Args) -> Result<(), String> {
    let addr = node.listen_addrs().into_iter().next().ok_or("the node bound no listen address")?;
    say(&format!("ADDR {addr}"))?;

    let status = node.wait_for_peers(args.peers, args.timeout).map_err(|e| e.to_string())?;
    say(&format!("PEERS {}", status.iter().filter(|m| m.alive && !m.is_self).count()))?;

    let data = object_bytes(args.seed, args.bytes);
    let sum = checksum(&data);
    // Kept until EXIT: the other processes fetch it from this node.
    let mine: ObjectRef<Vec<u8>> = node.runtime().put(data).map_err(|e| e.to_string())?;
    say(&format!("REF {}", to_hex(&node.encode_ref(&mine).map_err(|e| e.to_string())?)))?;
    say(&format!("SUM {sum}"))?;

    for line in std::io::stdin().lock().lines() {
        let line = line.map_err(|e| format!("cannot read stdin: {e}"))?;
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
            let live = node.cluster_status().map_err(|e| e.to_string())?;
            let live = live.iter().filter(|m| m.alive && !m.is_self).count();
            say(&format!("STATS {} {} {live}", node.pinned_objects(), node.accepted_work()))?;
            continue;
        }
        let Some(hex) = line.strip_prefix("REF ") else {
            return Err(format!("unexpected input line `{}`", line.escape_debug()));
        };
        let wire = from_hex(hex.trim())?;
        let r: ObjectRef<Vec<u8>> = node.decode_ref(&wire).map_err(|e| e.to_string())?;
        let value = r.get_timeout(args.timeout).map_err(|e| format!("get {}: {e}", r.id()))?;
        say(&format!("GOT {} {} {}", r.id(), value.len(), checksum(&value)))?;
    }
    Err("stdin closed before EXIT".to_string())
}

/// Runs `WORDCOUNT <chunks> <seed>` (`job` is what follows the command) on
/// the cluster and returns its `WC` line.
fn word_count(node: &Node, job: &str, timeout: Duration) -> Result<String, String> {
    let [chunks, seed] = job.split_whitespace().collect::<Vec<_>>()[..] else {
        return Err(format!("WORDCOUNT needs `<chunks> <seed>`, got `{}`", job.escape_debug()));
    };
    let chunks: usize = parse("WORDCOUNT chunks", chunks)?;
    let seed: u64 = parse("WORDCOUNT seed", seed)?;
    if chunks > MAX_CHUNKS {
        return Err(format!("WORDCOUNT: at most {MAX_CHUNKS} chunks, not {chunks}"));
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
        Some(root) => (*root.get_timeout(timeout).map_err(|e| format!("word count of {chunks} chunks: {e}"))?).clone(),
        None => Partial::default(),
    };
    if got.words != expected {
        return Err(format!(
            "word count differs from the local count: cluster {} words in {} kinds, local {} in {}",
            got.words.values().sum::<u64>(),
            got.words.len(),
            expected.values().sum::<u64>(),
            expected.len()
        ));
    }
    let total: u64 = got.words.values().sum();
    Ok(format!("WC {total} {} {} {}", got.words.len(), checksum(canonical(&got.words).as_bytes()), got.ran_on.len()))
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let msg = format!("ERR {}", e.replace('\n', " "));
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
    fn hex_round_trips_and_rejects_garbage() {
        let b: Vec<u8> = (0..=255).collect();
        assert_eq!(from_hex(&to_hex(&b)).unwrap(), b);
        assert!(from_hex("abc").is_err());
        assert!(from_hex("zz").is_err());
    }

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
        let args = |v: &[&str]| parse_args(v.iter().map(|s| s.to_string()));
        if std::env::var("MANTA_ALLOW_MDNS").as_deref() != Ok("1") {
            assert!(args(&["--mdns"]).is_err());
        }
        assert!(args(&["--peers"]).is_err());
        assert!(args(&["--bogus"]).is_err());
        assert_eq!(args(&["--peers", "2", "--seed", "5"]).unwrap().peers, 2);
        assert_eq!(args(&[]).unwrap().threshold, 1);
        assert_eq!(args(&["--threshold", "3"]).unwrap().threshold, 3);
        let e = args(&["--secret", &"ab".repeat(32)]).map(|_| ()).unwrap_err();
        assert!(e.contains("--secret-file") && !e.contains("abab"), "{e}");
        let a = args(&["--secret-file", "/k"]).unwrap();
        assert_eq!(a.secret_file.as_deref(), Some(std::path::Path::new("/k")));
    }
}
