//! `manta-node`: runs one manta-p2p node and speaks a line protocol on
//! stdin/stdout, so a test harness can drive several processes
//! deterministically (see `p2p/tests/multiprocess.rs`).
//!
//! Arguments: `--listen MULTIADDR` (default `/ip4/127.0.0.1/tcp/0`),
//! `--bootstrap MULTIADDR` (repeatable), `--mdns`, `--peers N` (default 0),
//! `--timeout SECS` (default 30), `--seed S` (u64, default 0), `--bytes B`
//! (default 1 MB).
//!
//! Protocol (one line each, flushed at once):
//! 1. `ADDR <first listen address, ending in /p2p/<peer id>>`
//! 2. `PEERS <n>` once at least `--peers` live peers are members (gossip).
//! 3. `REF <hex of the encoded ref>` of a `Vec<u8>` of `--bytes` bytes made
//!    from `--seed` (splitmix64), then `SUM <checksum>` of those bytes.
//! 4. For each stdin line `REF <hex>`: decode, get (within `--timeout`) and
//!    print `GOT <object id> <len> <checksum>`. On `EXIT`: shut down, exit 0.
//!
//! Invariants: the checksum is 64-bit FNV-1a as 16 lowercase hex digits; the
//! node's own object stays alive until `EXIT` (others fetch from it); any
//! error (bad argument, start failure, timeout, bad input line, stdin closed
//! before `EXIT`) prints `ERR <message>` and exits with status 1. `--mdns` is
//! refused unless `MANTA_ALLOW_MDNS=1`, a guard against multicasting from
//! the host network namespace. Nothing is logged.

use manta::{ObjectRef, Runtime};
use manta_p2p::{Multiaddr, Node};
use std::io::{BufRead, Write};
use std::process::ExitCode;
use std::time::Duration;

/// Parsed command line.
struct Args {
    listen: Multiaddr,
    bootstrap: Vec<Multiaddr>,
    mdns: bool,
    peers: usize,
    timeout: Duration,
    seed: u64,
    bytes: usize,
}

const USAGE: &str = "usage: manta-node [--listen MULTIADDR] [--bootstrap MULTIADDR]... [--mdns] [--peers N] \
                     [--timeout SECS] [--seed S] [--bytes B]";

fn parse_args(mut it: impl Iterator<Item = String>) -> Result<Args, String> {
    let mut args = Args {
        listen: "/ip4/127.0.0.1/tcp/0".parse().map_err(|e| format!("default listen address: {e}"))?,
        bootstrap: Vec::new(),
        mdns: false,
        peers: 0,
        timeout: Duration::from_secs(30),
        seed: 0,
        bytes: 1_000_000,
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

/// The deterministic object of a seed: splitmix64 output, little endian.
fn object_bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut state = seed;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        out.extend_from_slice(&(z ^ (z >> 31)).to_le_bytes());
    }
    out.truncate(len);
    out
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
    let rt = Runtime::builder().num_cpus(1).build().map_err(|e| e.to_string())?;
    let mut builder = Node::builder(rt).listen(args.listen.clone()).mdns(args.mdns);
    for b in &args.bootstrap {
        builder = builder.bootstrap(b.clone());
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
    say(&format!("REF {}", to_hex(&node.encode_ref(&mine))))?;
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
    fn mdns_needs_the_env_guard() {
        let args = |v: &[&str]| parse_args(v.iter().map(|s| s.to_string()));
        if std::env::var("MANTA_ALLOW_MDNS").as_deref() != Ok("1") {
            assert!(args(&["--mdns"]).is_err());
        }
        assert!(args(&["--peers"]).is_err());
        assert!(args(&["--bogus"]).is_err());
        assert_eq!(args(&["--peers", "2", "--seed", "5"]).unwrap().peers, 2);
    }
}
