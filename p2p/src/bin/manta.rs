//! `manta`: the cluster command line.
//!
//! `manta status --bootstrap MULTIADDR [--peers N] [--timeout SECS]
//! [--secret-file PATH]` joins the cluster as an observer (it hears
//! heartbeats but publishes none, so it is in nobody's member table, and
//! runs Kademlia in client mode, so it is in nobody's routing table), waits
//! until at least `N` live members (default 1) are known or `--timeout`
//! (default 10 s) passes, prints the member table (peer, health, address,
//! resources, queue, store use, last heartbeat, and which members report it
//! down) and exits: 0 if `N` members were seen, 1 otherwise. Health is
//! `live`, `partitioned` (heard, but other members report it unreachable or
//! dead), `unreachable` (missed heartbeats, not yet declared dead) or `dead`
//! (including peers only other members knew, which died before this
//! observer joined). It listens on 127.0.0.1 only and never uses mDNS.
//!
//! The cluster secret, if the cluster has one, comes from the file named by
//! `--secret-file`, else from the environment variable `MANTA_SECRET`: 32
//! bytes as 64 hex digits or base64 (see `manta_p2p::parse_secret`). It is
//! never taken on the command line, where every user of the machine could
//! read it; `--secret` is refused with a message saying so.

use manta::Runtime;
use manta_p2p::{Health, Member, Multiaddr, Node};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

const USAGE: &str = "usage: manta status --bootstrap MULTIADDR [--bootstrap ...] [--peers N] [--timeout SECS] \
                     [--secret-file PATH]   (or the secret in MANTA_SECRET)";

struct Args {
    bootstrap: Vec<Multiaddr>,
    peers: usize,
    timeout: Duration,
    secret_file: Option<PathBuf>,
}

fn parse_args(mut it: impl Iterator<Item = String>) -> Result<Args, String> {
    match it.next().as_deref() {
        Some("status") => {}
        Some(other) => return Err(format!("unknown command `{other}`; {USAGE}")),
        None => return Err(USAGE.into()),
    }
    let mut args = Args { bootstrap: Vec::new(), peers: 1, timeout: Duration::from_secs(10), secret_file: None };
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value; {USAGE}"));
        match flag.as_str() {
            "--bootstrap" => args.bootstrap.push(value()?.parse().map_err(|e| format!("--bootstrap: {e}"))?),
            "--peers" => args.peers = value()?.parse().map_err(|e| format!("--peers: {e}"))?,
            "--timeout" => {
                let secs: f64 = value()?.parse().map_err(|e| format!("--timeout: {e}"))?;
                if !(secs.is_finite() && secs >= 0.0) {
                    return Err("--timeout must be a non-negative number of seconds".into());
                }
                args.timeout = Duration::from_secs_f64(secs);
            }
            "--secret-file" => args.secret_file = Some(PathBuf::from(value()?)),
            "--secret" => {
                return Err("a secret on the command line is readable by every user of this machine; \
                            put it in a file for --secret-file, or in MANTA_SECRET"
                    .into())
            }
            other => return Err(format!("unknown flag `{other}`; {USAGE}")),
        }
    }
    if args.bootstrap.is_empty() {
        return Err(format!("status needs --bootstrap; {USAGE}"));
    }
    Ok(args)
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
        "{}  {:<11} {:<28} {:<24} queue {:<5} store {}/{} MB  {heard}{reports}",
        m.peer,
        health(m.health()),
        addr,
        res.join(", "),
        m.queue_len,
        m.store_bytes / 1_000_000,
        m.store_capacity / 1_000_000,
    )
}

fn run(args: Args) -> Result<bool, String> {
    let rt = Runtime::builder().num_cpus(1).build().map_err(|e| e.to_string())?;
    let mut b = Node::builder(rt)
        .listen("/ip4/127.0.0.1/tcp/0".parse().map_err(|e| format!("{e}"))?)
        .observer(true)
        .mdns(false);
    for a in args.bootstrap {
        b = b.bootstrap(a);
    }
    if let Some(k) = manta_p2p::load_secret(args.secret_file.as_deref()).map_err(|e| e.to_string())? {
        b = b.secret(k);
    }
    let node = b.start().map_err(|e| e.to_string())?;
    let (members, complete) = match node.wait_for_peers(args.peers, args.timeout) {
        Ok(m) => (m, true),
        Err(_) => (node.cluster_status().map_err(|e| e.to_string())?, false),
    };
    let others: Vec<&Member> = members.iter().filter(|m| !m.is_self).collect();
    let count = |h: Health| others.iter().filter(|m| m.health() == h).count();
    println!(
        "{} member(s), {} live, {} partitioned, {} unreachable, {} dead",
        others.len(),
        count(Health::Live),
        count(Health::Partitioned),
        count(Health::Unreachable),
        count(Health::Dead)
    );
    for m in others {
        println!("{}", row(m));
    }
    node.shutdown();
    Ok(complete)
}

fn main() -> ExitCode {
    match parse_args(std::env::args().skip(1)).and_then(run) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => {
            eprintln!("fewer live members than asked for within the timeout");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("manta: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Result<Args, String> {
        parse_args(s.split_whitespace().map(String::from))
    }

    #[test]
    fn parses_status_and_refuses_bad_input() {
        let a = args("status --bootstrap /ip4/127.0.0.1/tcp/1 --peers 2 --timeout 1.5").unwrap();
        assert_eq!((a.peers, a.timeout), (2, Duration::from_millis(1500)));
        assert!(args("").is_err());
        assert!(args("launch").is_err());
        assert!(args("status").is_err(), "needs a bootstrap address");
        assert!(args("status --bootstrap nonsense").is_err());
        assert!(args("status --bootstrap /ip4/127.0.0.1/tcp/1 --timeout -1").is_err());
        let e = args(&format!("status --bootstrap /ip4/127.0.0.1/tcp/1 --secret {}", "0f".repeat(32)));
        assert!(e.is_err_and(|e| e.contains("--secret-file") && !e.contains("0f0f")), "no secret on the command line");
        let k = args("status --bootstrap /ip4/127.0.0.1/tcp/1 --secret-file /some/key").unwrap();
        assert_eq!(k.secret_file.as_deref(), Some(std::path::Path::new("/some/key")));
    }
}
