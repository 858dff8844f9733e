//! `manta`: the cluster command line (parsed with `clap`; `manta help`,
//! `manta SUBCOMMAND --help`).
//!
//! `manta status --bootstrap MULTIADDR [--peers N] [--timeout SECS]
//! [--secret-file PATH] [--json] [--watch [--count N]]` joins the cluster as
//! an observer (it hears heartbeats but publishes none, so it is in nobody's
//! member table, and runs Kademlia in client mode, so it is in nobody's
//! routing table), waits until at least `N` live members (default 1) are
//! known or `--timeout` (default 10 s) passes, prints the member table
//! (peer, health, address, resources, store use, the node's metrics summary
//! from its heartbeat: tasks queued, running, done and failed and objects
//! in its store, last heartbeat, and which members report it down) and
//! exits: 0 if `N` members were seen, 1 otherwise, with a message on stderr
//! (a distinct one when no peer answered at all). Health is `live`,
//! `partitioned` (heard, but other members report it unreachable or dead),
//! `unreachable` (missed heartbeats, not yet declared dead) or `dead`
//! (including peers only other members knew, which died before this
//! observer joined). `--json` prints the same as one JSON object per table
//! (see [`status_json`]); `--watch` redraws every second (`--count N`
//! stops after `N` tables), exiting as the last table says. It listens on
//! 127.0.0.1 only and never uses mDNS.
//!
//! `manta timeline --bootstrap MULTIADDR -o trace.json [--peers N]
//! [--timeout SECS] [--secret-file PATH]` joins as an observer the same
//! way, collects every live member's timeline into one Chrome trace (one
//! process per node, clocks aligned by round-trip offsets; see
//! `Node::cluster_timeline`), writes it to the file, prints which nodes
//! are in it and which are missing and why, and fails if none answered.
//! Members record only when started with `manta-node --timeline`.
//!
//! `manta completions SHELL` prints a completion script (bash, zsh, fish,
//! elvish, powershell).
//!
//! The cluster secret, if the cluster has one, comes from the file named by
//! `--secret-file`, else from the environment variable `MANTA_SECRET`: 32
//! bytes as 64 hex digits or base64 (see `manta_p2p::parse_secret`). It is
//! never taken on the command line, where every user of the machine could
//! read it; `--secret` is refused with a message saying so.
//!
//! Errors are [`CliError`]: `main` prints one with its chain of sources
//! and exits 1.

use clap::{Args, CommandFactory, Parser, Subcommand};
use manta::Runtime;
use manta_p2p::{Health, Member, Multiaddr, Node};
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

/// The `manta` command line.
#[derive(Debug, Parser)]
#[command(name = "manta", version, about = "The manta cluster command line")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
enum Command {
    /// Join the cluster as an observer and print its member table.
    Status(StatusArgs),
    /// Collect every member's timeline into one Chrome trace (open it in
    /// Perfetto or chrome://tracing). Members record only when started
    /// with `manta-node --timeline` (or `NodeBuilder::timeline(true)`).
    Timeline(TimelineArgs),
    /// Print a shell completion script for `manta`.
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
}

/// The flags of `manta status`.
#[derive(Debug, Args)]
struct StatusArgs {
    #[command(flatten)]
    join: JoinArgs,
    /// Print JSON (one object per table) instead of text.
    #[arg(long)]
    json: bool,
    /// Redraw the table every second.
    #[arg(long)]
    watch: bool,
    /// With --watch: stop after this many tables.
    #[arg(long, value_name = "N", requires = "watch")]
    count: Option<u64>,
}

/// The flags of `manta timeline`.
#[derive(Debug, Args)]
struct TimelineArgs {
    #[command(flatten)]
    join: JoinArgs,
    /// Where to write the trace (Chrome trace JSON).
    #[arg(short = 'o', long, value_name = "PATH")]
    output: PathBuf,
}

/// How an observer joins: the flags `status` and `timeline` share.
#[derive(Debug, Args)]
struct JoinArgs {
    /// A member's address, ending in /p2p/PEER_ID (repeatable).
    #[arg(long, required = true, value_name = "MULTIADDR")]
    bootstrap: Vec<Multiaddr>,
    /// Live members to wait for.
    #[arg(long, default_value_t = 1)]
    peers: usize,
    /// Seconds to wait for them (and, for `timeline`, for each member's
    /// answer); a non-negative number.
    #[arg(long, default_value = "10", value_parser = parse_secs, value_name = "SECS")]
    timeout: Duration,
    #[command(flatten)]
    secret: SecretArgs,
}

/// Where the cluster secret comes from.
#[derive(Debug, Args)]
struct SecretArgs {
    /// A file holding the cluster secret (else MANTA_SECRET is read).
    #[arg(long, value_name = "PATH")]
    secret_file: Option<PathBuf>,
    /// Refused: a secret on the command line is readable by every user.
    #[arg(long, hide = true, num_args = 0..=1, default_missing_value = "", value_name = "SECRET")]
    secret: Option<String>,
}

/// What can go wrong in `manta`.
#[derive(Debug, thiserror::Error)]
enum CliError {
    /// `--secret` was given.
    #[error(
        "a secret on the command line is readable by every user of this machine; put it in a file for \
         --secret-file, or in MANTA_SECRET"
    )]
    SecretOnCommandLine,
    #[error("cannot start the runtime")]
    Runtime(#[source] manta::BuildError),
    #[error("cannot read the cluster secret")]
    Secret(#[source] manta_p2p::SecretError),
    #[error("cannot start the observer node")]
    Start(#[source] manta_p2p::NodeError),
    #[error("cannot read the member table")]
    Status(#[source] manta_p2p::NodeError),
    #[error(
        "no peer answered within {timeout:?} (bootstrap {bootstrap}): is a node running there, and does this \
         command have the cluster's secret?"
    )]
    NoPeer { timeout: Duration, bootstrap: String },
    #[error("{seen} live member(s) within {timeout:?}, fewer than the {wanted} asked for")]
    TooFew { seen: usize, wanted: usize, timeout: Duration },
    #[error("cannot write to stdout")]
    Stdout(#[source] std::io::Error),
    #[error("cannot collect the cluster's timeline")]
    Timeline(#[source] manta_p2p::NodeError),
    #[error(
        "no peer answered within {timeout:?} (bootstrap {bootstrap}): is a node running there, and does this \
         command have the cluster's secret?"
    )]
    NoTimelinePeer { timeout: Duration, bootstrap: String },
    #[error("no member answered with its timeline ({} missing){}", .missing.len(), reasons(.missing))]
    NoTimeline { missing: Vec<manta_p2p::MissingNode> },
    #[error("cannot write the trace to {path}")]
    WriteTrace { path: PathBuf, source: std::io::Error },
}

/// A bad `--timeout`.
#[derive(Debug, thiserror::Error)]
enum SecsError {
    #[error("not a number of seconds")]
    NotANumber(#[source] std::num::ParseFloatError),
    #[error("must be a non-negative number of seconds, at most about 5.8e11")]
    OutOfRange,
}

fn parse_secs(s: &str) -> Result<Duration, SecsError> {
    let secs: f64 = s.parse().map_err(SecsError::NotANumber)?;
    // `try_`: a finite number of seconds may still overflow a `Duration`.
    Duration::try_from_secs_f64(secs).map_err(|_| SecsError::OutOfRange)
}

/// Each missing node and why, one per line (for an error message).
fn reasons(missing: &[manta_p2p::MissingNode]) -> String {
    missing.iter().map(|m| format!("\n  missing {}: {}", m.peer, m.reason)).collect()
}

fn health(h: Health) -> &'static str {
    match h {
        Health::Live => "live",
        Health::Partitioned => "partitioned",
        Health::Unreachable => "unreachable",
        Health::Dead => "dead",
        _ => "unknown",
    }
}

fn row(m: &Member) -> String {
    let res: Vec<String> = m.resources.iter().map(|r| format!("{} {}/{}", r.name, r.free, r.total)).collect();
    let addr = m.addrs.first().map_or_else(|| "-".to_string(), |a| a.to_string());
    let heard = if m.last_heartbeat_age == Duration::MAX {
        "never heard here".to_string()
    } else {
        format!("{:.1}s ago", m.last_heartbeat_age.as_secs_f64())
    };
    let reports = if m.reported_down_by.is_empty() {
        String::new()
    } else {
        let by: Vec<String> = m.reported_down_by.iter().map(|p| p.to_string()).collect();
        format!("  reported down by {}", by.join(", "))
    };
    format!(
        "{}  {:<11} {:<28} {:<24} tasks {}q/{}r/{}d/{}f  store {}/{} MB {} obj  {heard}{reports}",
        m.peer,
        health(m.health()),
        addr,
        res.join(", "),
        m.queue_len,
        m.tasks_running,
        m.tasks_done,
        m.tasks_failed,
        m.store_bytes / 1_000_000,
        m.store_capacity / 1_000_000,
        m.store_objects,
    )
}

/// Counts of the other members by health.
struct Tally {
    members: usize,
    live: usize,
    partitioned: usize,
    unreachable: usize,
    dead: usize,
}

fn tally(others: &[&Member]) -> Tally {
    let count = |h: Health| others.iter().filter(|m| m.health() == h).count();
    Tally {
        members: others.len(),
        live: count(Health::Live),
        partitioned: count(Health::Partitioned),
        unreachable: count(Health::Unreachable),
        dead: count(Health::Dead),
    }
}

/// The member table as JSON: `{"members": N, "live": N, "partitioned": N,
/// "unreachable": N, "dead": N, "peers": [{"peer", "health", "alive",
/// "addrs", "resources": [{"name", "free", "total"}], "tasks_queued",
/// "tasks_running", "tasks_done", "tasks_failed", "store_bytes",
/// "store_capacity", "store_objects", "last_heartbeat_s" (null if never
/// heard here), "reported_down_by"}]}`.
fn status_json(others: &[&Member]) -> serde_json::Value {
    let t = tally(others);
    let peers: Vec<serde_json::Value> = others
        .iter()
        .map(|m| {
            let resources: Vec<serde_json::Value> = m
                .resources
                .iter()
                .map(|r| serde_json::json!({ "name": r.name, "free": r.free, "total": r.total }))
                .collect();
            let heard = (m.last_heartbeat_age != Duration::MAX).then_some(m.last_heartbeat_age.as_secs_f64());
            serde_json::json!({
                "peer": m.peer.to_string(),
                "health": health(m.health()),
                "alive": m.alive,
                "addrs": m.addrs.iter().map(|a| a.to_string()).collect::<Vec<_>>(),
                "resources": resources,
                "tasks_queued": m.queue_len,
                "tasks_running": m.tasks_running,
                "tasks_done": m.tasks_done,
                "tasks_failed": m.tasks_failed,
                "store_bytes": m.store_bytes,
                "store_capacity": m.store_capacity,
                "store_objects": m.store_objects,
                "last_heartbeat_s": heard,
                "reported_down_by": m.reported_down_by.iter().map(|p| p.to_string()).collect::<Vec<_>>(),
            })
        })
        .collect();
    serde_json::json!({
        "members": t.members,
        "live": t.live,
        "partitioned": t.partitioned,
        "unreachable": t.unreachable,
        "dead": t.dead,
        "peers": peers,
    })
}

/// Prints one table (text or JSON); `clear` redraws over the last one.
fn draw(members: &[Member], json: bool, clear: bool) -> Result<(), CliError> {
    let others: Vec<&Member> = members.iter().filter(|m| !m.is_self).collect();
    let mut out = std::io::stdout().lock();
    let mut text = String::new();
    if clear {
        text.push_str("\x1b[2J\x1b[H");
    }
    if json {
        text.push_str(&status_json(&others).to_string());
        text.push('\n');
    } else {
        let t = tally(&others);
        text.push_str(&format!(
            "{} member(s), {} live, {} partitioned, {} unreachable, {} dead\n",
            t.members, t.live, t.partitioned, t.unreachable, t.dead
        ));
        for m in &others {
            text.push_str(&row(m));
            text.push('\n');
        }
    }
    out.write_all(text.as_bytes()).and_then(|()| out.flush()).map_err(CliError::Stdout)
}

/// Whether a table answers the question: `Err` if no peer answered or
/// fewer than `--peers` are live.
fn verdict(members: &[Member], args: &StatusArgs) -> Result<(), CliError> {
    let others: Vec<&Member> = members.iter().filter(|m| !m.is_self).collect();
    let live = others.iter().filter(|m| m.alive).count();
    if others.iter().all(|m| m.last_heartbeat_age == Duration::MAX) && live == 0 {
        let bootstrap: Vec<String> = args.join.bootstrap.iter().map(|a| a.to_string()).collect();
        return Err(CliError::NoPeer { timeout: args.join.timeout, bootstrap: bootstrap.join(", ") });
    }
    let join = &args.join;
    if live < join.peers {
        return Err(CliError::TooFew { seen: live, wanted: join.peers, timeout: join.timeout });
    }
    Ok(())
}

/// An observer node (loopback only, no mDNS) joined through `bootstrap`.
fn observer(join: &JoinArgs) -> Result<Node, CliError> {
    let (bootstrap, secret) = (&join.bootstrap, &join.secret);
    if secret.secret.is_some() {
        return Err(CliError::SecretOnCommandLine);
    }
    let rt = Runtime::builder().num_cpus(1).build().map_err(CliError::Runtime)?;
    let mut b = Node::builder(rt).listen(local_listen()).observer(true).mdns(false);
    for a in bootstrap.iter() {
        b = b.bootstrap(a.clone());
    }
    if let Some(k) = manta_p2p::load_secret(secret.secret_file.as_deref()).map_err(CliError::Secret)? {
        b = b.secret(k);
    }
    b.start().map_err(CliError::Start)
}

fn status(args: StatusArgs) -> Result<(), CliError> {
    let node = observer(&args.join)?;
    let result = watch(&node, &args);
    node.shutdown();
    result
}

/// `manta timeline`: waits for the members, collects, writes the trace
/// and says on stdout which nodes are in it and which are missing (and
/// why). Fails if no member answered.
fn timeline(args: TimelineArgs) -> Result<(), CliError> {
    let node = observer(&args.join)?;
    let result = collect(&node, &args);
    node.shutdown();
    result
}

fn collect(node: &Node, args: &TimelineArgs) -> Result<(), CliError> {
    // Fewer members than asked for is not fatal: collect from those seen.
    let _ = node.wait_for_peers(args.join.peers, args.join.timeout);
    let trace = node.cluster_timeline(args.join.timeout).map_err(CliError::Timeline)?;
    if trace.nodes.is_empty() && trace.missing.is_empty() {
        let bootstrap: Vec<String> = args.join.bootstrap.iter().map(|a| a.to_string()).collect();
        return Err(CliError::NoTimelinePeer { timeout: args.join.timeout, bootstrap: bootstrap.join(", ") });
    }
    if trace.nodes.is_empty() {
        return Err(CliError::NoTimeline { missing: trace.missing });
    }
    trace.write(&args.output).map_err(|source| CliError::WriteTrace { path: args.output.clone(), source })?;
    let mut text = String::new();
    let events: usize = trace.nodes.iter().map(|n| n.events).sum();
    text.push_str(&format!(
        "wrote {} ({} node(s), {events} event(s), {} missing)\n",
        args.output.display(),
        trace.nodes.len(),
        trace.missing.len()
    ));
    for n in &trace.nodes {
        text.push_str(&format!("  {}  {} events  clock offset {} us\n", n.name, n.events, n.offset_ns / 1000));
    }
    for m in &trace.missing {
        text.push_str(&format!("  missing {}: {}\n", m.peer, m.reason));
    }
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes()).and_then(|()| out.flush()).map_err(CliError::Stdout)
}

/// Draws the table once, or with `--watch` every second (`--count` times).
fn watch(node: &Node, args: &StatusArgs) -> Result<(), CliError> {
    let members = match node.wait_for_peers(args.join.peers, args.join.timeout) {
        Ok(m) => m,
        Err(_) => node.cluster_status().map_err(CliError::Status)?,
    };
    let clear = args.watch && !args.json && std::io::stdout().is_terminal();
    draw(&members, args.json, clear)?;
    let mut last = verdict(&members, args);
    let mut drawn = 1u64;
    while args.watch && args.count.is_none_or(|n| drawn < n) {
        std::thread::sleep(Duration::from_secs(1)); // the redraw period, not synchronisation
        let members = node.cluster_status().map_err(CliError::Status)?;
        draw(&members, args.json, clear)?;
        last = verdict(&members, args);
        drawn += 1;
    }
    last
}

fn local_listen() -> Multiaddr {
    Multiaddr::from(std::net::Ipv4Addr::LOCALHOST).with(libp2p::multiaddr::Protocol::Tcp(0))
}

fn run(cli: Cli) -> Result<(), CliError> {
    match cli.command {
        Command::Status(args) => status(args),
        Command::Timeline(args) => timeline(args),
        Command::Completions { shell } => {
            let mut out = std::io::stdout().lock();
            clap_complete::generate(shell, &mut Cli::command(), "manta", &mut out);
            out.flush().map_err(CliError::Stdout)
        }
    }
}

/// `e` and its sources, one per line after the first.
fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(&format!("\n  caused by: {s}"));
        source = s.source();
    }
    out
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("manta: {}", chain(&e));
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Result<StatusArgs, clap::Error> {
        let cli = Cli::try_parse_from(std::iter::once("manta").chain(s.split_whitespace()))?;
        match cli.command {
            Command::Status(a) => Ok(a),
            other => panic!("not status: {other:?}"),
        }
    }

    #[test]
    fn parses_status_and_refuses_bad_input() {
        Cli::command().debug_assert();
        let a = args("status --bootstrap /ip4/127.0.0.1/tcp/1 --peers 2 --timeout 1.5").unwrap();
        assert_eq!((a.join.peers, a.join.timeout), (2, Duration::from_millis(1500)));
        assert!(!a.json && !a.watch && a.count.is_none());
        assert!(args("").is_err());
        assert!(args("launch").is_err());
        assert!(args("status --bootstrap /ip4/127.0.0.1/tcp/1 --timeout=-1").is_err());
        assert!(args("status").is_err(), "needs a bootstrap address");
        assert!(args("status --bootstrap nonsense").is_err());
        assert!(args("status --bootstrap /ip4/127.0.0.1/tcp/1 --timeout -1").is_err());
        assert!(args("status --bootstrap /ip4/127.0.0.1/tcp/1 --count 2").is_err(), "--count needs --watch");
        let w = args("status --bootstrap /ip4/127.0.0.1/tcp/1 --json --watch --count 3").unwrap();
        assert!(w.json && w.watch && w.count == Some(3));
        let k = args("status --bootstrap /ip4/127.0.0.1/tcp/1 --secret-file /some/key").unwrap();
        assert_eq!(k.join.secret.secret_file.as_deref(), Some(std::path::Path::new("/some/key")));
    }

    #[test]
    fn a_secret_on_the_command_line_is_refused_without_echoing_it() {
        let secret = "0f".repeat(32);
        for line in [
            format!("status --bootstrap /ip4/127.0.0.1/tcp/1 --secret {secret}"),
            "status --bootstrap /ip4/127.0.0.1/tcp/1 --secret".into(),
        ] {
            let refused = match args(&line) {
                Ok(a) => status(a),
                Err(e) => panic!("{line}: {e}"),
            };
            let e = chain(&refused.expect_err("refused"));
            assert!(e.contains("--secret-file") && !e.contains("0f0f"), "{e}");
        }
    }
}
