//! `lan_cluster`: start the same program on several machines of a LAN;
//! they find each other by mDNS and share a parallel job, printing which
//! node ran what.
//!
//! Every instance starts a manta node with one registered function,
//! `lan_cluster.hash_work` (about 20 ms of CPU: FNV-1a over a splitmix64
//! stream; it returns the peer id of the node that ran it and a digest),
//! waits for `--peers` other nodes, then:
//!
//! - with `--driver`, submits `--tasks` of those tasks, prints
//!   `task <i> ran on <node>` for each (a node is shown by the last 8
//!   characters of its peer id) and a per-node summary, and exits (status
//!   0 if every task ran, 1 otherwise);
//! - without it, serves the others' tasks until Ctrl-C or until
//!   `--serve-secs` pass, printing membership changes and, at the end, how
//!   many tasks it ran.
//!
//! Every node uses `queue_threshold(1)`: as soon as one task waits for a
//! CPU locally, new tasks go to less loaded peers, so the job spreads.
//!
//! Flags: `--mdns` (LAN discovery; refused unless `MANTA_ALLOW_MDNS=1`,
//! since it multicasts on every interface), `--bootstrap ADDR`
//! (repeatable; joins through a known node instead), `--listen ADDR`
//! (default `/ip4/0.0.0.0/tcp/0` with `--mdns`, else
//! `/ip4/127.0.0.1/tcp/0`), `--secret-file PATH` (the cluster secret;
//! without it, the one in `MANTA_SECRET`), `--peers N` (default 1),
//! `--timeout SECS` (bounds the wait for peers and each task's result;
//! default 30), `--tasks N` (default 32, at most 100000), `--driver`,
//! `--serve-secs S` (default 60, at most 86400), `--cpus N` (default:
//! every core).
//!
//! # The cluster secret
//!
//! A node that listens beyond loopback, or uses mDNS, needs a cluster
//! secret: without one any host on the LAN could join, read objects and run
//! the registered functions, so the node refuses to start. Every instance
//! gets the same 32 bytes (64 hex digits or base64) from a file or from the
//! environment, never from its command line (which every user of the
//! machine can read):
//!
//! ```text
//! openssl rand -hex 32 > cluster.key   # once; copy it to each machine (e.g. with scp)
//! chmod 600 cluster.key
//! ```
//!
//! # On real machines
//!
//! On each machine of one LAN (TCP between them allowed; mDNS uses UDP
//! port 5353 multicast), one of them with `--driver`:
//!
//! ```text
//! MANTA_ALLOW_MDNS=1 cargo run --release -p manta-p2p --example lan_cluster -- --mdns --secret-file cluster.key --peers 2
//! MANTA_ALLOW_MDNS=1 cargo run --release -p manta-p2p --example lan_cluster -- --mdns --secret-file cluster.key --peers 2 --driver
//! ```
//!
//! (`--peers 2` for three machines: each waits for the two others.)
//!
//! # On one machine, without mDNS (loopback)
//!
//! The first instance prints `listening on /ip4/127.0.0.1/tcp/PORT/p2p/ID`;
//! give that address to the second:
//!
//! ```text
//! cargo run --release -p manta-p2p --example lan_cluster -- --serve-secs 60
//! cargo run --release -p manta-p2p --example lan_cluster -- --driver --bootstrap /ip4/127.0.0.1/tcp/PORT/p2p/ID
//! ```
//!
//! # On one machine, with mDNS, in network namespaces
//!
//! As root: two "hosts" (namespaces `lan-h1`, `lan-h2`), each with a veth
//! link into a bridge that lives in a third namespace (`lan-br`), so the
//! multicast never touches the host's own interfaces (the same layout as
//! `p2p/tests/netns_mdns.sh`):
//!
//! ```text
//! ip netns add lan-br
//! ip -n lan-br link add br0 type bridge
//! ip -n lan-br link set br0 up
//! for n in 1 2; do
//!   ip netns add lan-h$n
//!   ip -n lan-h$n link set lo up
//!   ip -n lan-h$n link add veth0 type veth peer name vh$n netns lan-br
//!   ip -n lan-br link set vh$n master br0
//!   ip -n lan-br link set vh$n up
//!   ip -n lan-h$n addr add 10.213.78.$n/24 dev veth0
//!   ip -n lan-h$n link set veth0 up
//! done
//! cargo build --release -p manta-p2p --example lan_cluster
//! export MANTA_SECRET=$(openssl rand -hex 32)   # both nodes inherit it
//! ip netns exec lan-h1 env MANTA_ALLOW_MDNS=1 target/release/examples/lan_cluster --mdns --serve-secs 30 &
//! ip netns exec lan-h2 env MANTA_ALLOW_MDNS=1 target/release/examples/lan_cluster --mdns --driver
//! wait
//! ```
//!
//! Clean up (also after a failure; deleting a namespace deletes its
//! interfaces, and with them the veth pairs and the bridge):
//!
//! ```text
//! ip netns del lan-h1; ip netns del lan-h2; ip netns del lan-br
//! ```

/// Errors of this example: any error, with its message (`?` converts a `String`).
type BoxError = Box<dyn std::error::Error + Send + Sync>;

use manta::{ObjectRef, Runtime};
use manta_p2p::{MembershipEvent, Multiaddr, Node, PeerId, Registry, RemoteFn};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// CPU time each task spends.
const WORK_MS: u64 = 20;
/// Most `--tasks`.
const MAX_TASKS: usize = 100_000;
/// Most `--serve-secs`.
const MAX_SERVE_SECS: u64 = 86_400;

/// Tasks this process ran (for whoever submitted them).
static RAN_HERE: AtomicU64 = AtomicU64::new(0);

/// About `ms` (at most 1000) milliseconds of CPU work from `seed`: returns
/// the peer id of the node that ran it and the digest.
static HASH_WORK: RemoteFn<(u64, u64), (String, u64)> = RemoteFn::new("lan_cluster.hash_work", |(seed, ms)| {
    let until = Instant::now() + Duration::from_millis(ms.min(1000));
    let (mut state, mut digest) = (seed, 0xcbf2_9ce4_8422_2325_u64);
    // Bounded in rounds too, whatever the clock does.
    for _ in 0..1u32 << 20 {
        for _ in 0..1024 {
            state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            for b in (z ^ (z >> 31)).to_le_bytes() {
                digest = (digest ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
            }
        }
        if Instant::now() >= until {
            break;
        }
    }
    RAN_HERE.fetch_add(1, Ordering::Relaxed);
    let node = Node::current().expect("cluster tasks run on a node's runtime");
    (node.peer_id().to_string(), digest)
});

/// The function table (every instance registers the same one).
fn registry() -> Registry {
    Registry::new().function(&HASH_WORK)
}

/// Parsed command line.
struct Args {
    mdns: bool,
    bootstrap: Vec<Multiaddr>,
    listen: Option<Multiaddr>,
    peers: usize,
    timeout: Duration,
    tasks: usize,
    driver: bool,
    serve: Duration,
    cpus: Option<usize>,
    secret_file: Option<PathBuf>,
}

const USAGE: &str = "usage: lan_cluster [--mdns] [--bootstrap ADDR]... [--listen ADDR] [--secret-file PATH] [--peers N] \
                     [--timeout SECS] [--tasks N] [--driver] [--serve-secs S] [--cpus N]   (or the secret in MANTA_SECRET)";

fn parse<T: std::str::FromStr>(flag: &str, s: &str) -> Result<T, BoxError>
where
    T::Err: std::fmt::Display,
{
    s.parse().map_err(|e| format!("bad value `{s}` for {flag}: {e}").into())
}

fn parse_args(mut it: impl Iterator<Item = String>) -> Result<Args, BoxError> {
    let mut args = Args {
        mdns: false,
        bootstrap: Vec::new(),
        listen: None,
        peers: 1,
        timeout: Duration::from_secs(30),
        tasks: 32,
        driver: false,
        serve: Duration::from_secs(60),
        cpus: None,
        secret_file: None,
    };
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value; {USAGE}"));
        match flag.as_str() {
            "--mdns" => args.mdns = true,
            "--bootstrap" => args.bootstrap.push(parse(&flag, &value()?)?),
            "--listen" => args.listen = Some(parse(&flag, &value()?)?),
            "--peers" => args.peers = parse(&flag, &value()?)?,
            "--timeout" => args.timeout = Duration::from_secs(parse(&flag, &value()?)?),
            "--tasks" => args.tasks = parse(&flag, &value()?)?,
            "--driver" => args.driver = true,
            "--serve-secs" => args.serve = Duration::from_secs(parse(&flag, &value()?)?),
            "--cpus" => args.cpus = Some(parse(&flag, &value()?)?),
            "--secret-file" => args.secret_file = Some(PathBuf::from(value()?)),
            "-h" | "--help" => return Err(USAGE.to_string().into()),
            other => return Err(format!("unknown argument `{other}`; {USAGE}").into()),
        }
    }
    if args.mdns && std::env::var("MANTA_ALLOW_MDNS").as_deref() != Ok("1") {
        return Err("--mdns multicasts on every interface; refused unless MANTA_ALLOW_MDNS=1 \
                    (on a real LAN, or inside a network namespace)"
            .into());
    }
    if args.tasks > MAX_TASKS {
        return Err(format!("--tasks: at most {MAX_TASKS}").into());
    }
    if args.serve > Duration::from_secs(MAX_SERVE_SECS) {
        return Err(format!("--serve-secs: at most {MAX_SERVE_SECS}").into());
    }
    if args.cpus == Some(0) {
        return Err("--cpus: at least 1".to_string().into());
    }
    Ok(args)
}

/// A peer id as printed: its last 8 characters (the first ones are the
/// same for every Ed25519 key).
fn short(peer: &str) -> &str {
    &peer[peer.len().saturating_sub(8)..]
}

fn run() -> Result<(), BoxError> {
    let args = parse_args(std::env::args().skip(1))?;
    let mut rt = Runtime::builder();
    if let Some(n) = args.cpus {
        rt = rt.num_cpus(n);
    }
    let rt = rt.build().map_err(|e| format!("cannot build the runtime: {e}"))?;
    let default_listen = if args.mdns { "/ip4/0.0.0.0/tcp/0" } else { "/ip4/127.0.0.1/tcp/0" };
    let listen = match &args.listen {
        Some(a) => a.clone(),
        None => default_listen.parse().map_err(|e| format!("default listen address: {e}"))?,
    };
    let mut builder = Node::builder(rt).listen(listen).mdns(args.mdns).registry(registry()).queue_threshold(1);
    for b in &args.bootstrap {
        builder = builder.bootstrap(b.clone());
    }
    // Without a secret, a LAN listen address or mDNS makes `start` fail
    // with an error that says how to fix it.
    if let Some(k) = manta_p2p::load_secret(args.secret_file.as_deref()).map_err(|e| e.to_string())? {
        builder = builder.secret(k);
    }
    let node = builder.start().map_err(|e| e.to_string())?;
    let result = if args.driver { drive(&node, &args) } else { serve(&node, &args) };
    node.shutdown();
    result
}

/// Prints who this node is and where it listens (the addresses to give
/// others as `--bootstrap`), then waits for the peers; only the driver
/// needs them all.
fn join(node: &Node, args: &Args) -> Result<(), BoxError> {
    let me = node.peer_id().to_string();
    println!("node {} ({me}), {} CPUs", short(&me), node.runtime().num_threads());
    for addr in node.listen_addrs() {
        println!("listening on {addr}");
    }
    println!("waiting (at most {:?}) for {} peer(s)...", args.timeout, args.peers);
    let status = match node.wait_for_peers(args.peers, args.timeout) {
        Ok(status) => status,
        Err(e) if !args.driver => {
            eprintln!("note: {e}; serving anyway");
            node.cluster_status().map_err(|e| e.to_string())?
        }
        Err(e) => return Err(e.to_string().into()),
    };
    let names: Vec<String> =
        status.iter().filter(|m| m.alive && !m.is_self).map(|m| short(&m.peer.to_string()).to_string()).collect();
    println!("cluster: this node and {} peer(s): {}", names.len(), names.join(" "));
    Ok(())
}

fn drive(node: &Node, args: &Args) -> Result<(), BoxError> {
    join(node, args)?;
    let me = node.peer_id().to_string();
    let started = Instant::now();
    let refs: Vec<ObjectRef<(String, u64)>> = (0..args.tasks)
        .map(|i| node.task(&HASH_WORK).name(&format!("hash_work[{i}]")).spawn((i as u64, WORK_MS)))
        .collect();
    let mut per_node: BTreeMap<String, usize> = BTreeMap::new();
    let mut failed = 0;
    for (i, r) in refs.iter().enumerate() {
        match r.get_timeout(args.timeout) {
            Ok(v) => {
                let (peer, digest) = &*v;
                println!("task {i} ran on {} (digest {digest:016x})", short(peer));
                *per_node.entry(peer.clone()).or_default() += 1;
            }
            Err(e) => {
                println!("task {i} failed: {e}");
                failed += 1;
            }
        }
    }
    let took = started.elapsed();
    println!("summary: {} task(s) in {:.2} s on {} node(s)", args.tasks - failed, took.as_secs_f64(), per_node.len());
    for (peer, n) in &per_node {
        let mark = if *peer == me { "  (this node)" } else { "" };
        println!("  {}  {n:>5} task(s){mark}", short(peer));
    }
    if failed > 0 {
        return Err(format!("{failed} of {} task(s) failed", args.tasks).into());
    }
    Ok(())
}

fn serve(node: &Node, args: &Args) -> Result<(), BoxError> {
    let until = Instant::now() + args.serve;
    let events = node.subscribe().map_err(|e| e.to_string())?;
    join(node, args)?;
    println!("serving for at most {:?} (Ctrl-C stops it sooner)", args.serve);
    loop {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        let (what, peer): (&str, PeerId) = match events.recv_timeout(left) {
            Ok(MembershipEvent::Joined(p)) => ("joined", p),
            Ok(MembershipEvent::Died(p)) => ("left (or died)", p),
            Ok(MembershipEvent::Revived(p)) => ("is back", p),
            Err(crossbeam_channel::RecvTimeoutError::Timeout) => break,
            Err(crossbeam_channel::RecvTimeoutError::Disconnected) => {
                return Err("the node stopped".to_string().into())
            }
        };
        println!("peer {} {what}", short(&peer.to_string()));
    }
    println!("served: ran {} task(s) on this node", RAN_HERE.load(Ordering::Relaxed));
    Ok(())
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
