//! `manta-node` processes for the fault tests (`chaos.rs`,
//! `netns_faults.rs`): spawning, their stdout lines merged onto one
//! channel in arrival order (with the time each arrived), and waiting for
//! a line with a bounded deadline.
//!
//! Invariants: every wait has a deadline and fails the test naming the
//! process and what was awaited; an `ERR` line fails the test; every
//! process is killed and reaped when its [`Cluster`] is dropped, so a
//! failing test leaves nothing behind. No sleeps.

#![allow(dead_code)] // each test file uses a part

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_manta-node");

/// One line of one process.
#[derive(Debug, Clone)]
pub struct Line {
    /// Index of the process in its cluster.
    pub from: usize,
    /// The line, without its newline.
    pub text: String,
    /// When the harness read it.
    pub at: Instant,
}

/// A process of the cluster.
pub struct Proc {
    /// Name for messages (`node2`).
    pub name: String,
    /// Its peer id (from its `ADDR` line).
    pub peer: String,
    /// Its first listen address.
    pub addr: String,
    child: Child,
    stdin: Option<ChildStdin>,
    /// False once killed (or exited).
    pub alive: bool,
}

/// Processes whose stdout lines arrive on one channel.
pub struct Cluster {
    /// The processes, by index.
    pub procs: Vec<Proc>,
    /// When the cluster was made (lines are logged relative to it).
    pub t0: Instant,
    tx: Sender<Line>,
    /// Every line of every process, in arrival order.
    lines: Receiver<Line>,
    /// Lines read while waiting for one process's `ADDR` that belong to
    /// others: handed out again, first, in order.
    backlog: VecDeque<Line>,
}

impl Default for Cluster {
    fn default() -> Self {
        Self::new()
    }
}

impl Cluster {
    /// An empty cluster.
    pub fn new() -> Cluster {
        let (tx, lines) = crossbeam_channel::unbounded();
        Cluster { procs: Vec::new(), t0: Instant::now(), tx, lines, backlog: VecDeque::new() }
    }

    /// Starts `cmd` as process number `procs.len()` and waits (at most
    /// `within`) for its `ADDR` line; returns its index.
    pub fn spawn(&mut self, mut cmd: Command, within: Duration) -> usize {
        let i = self.procs.len();
        let name = format!("node{i}");
        cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::inherit());
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("{name}: cannot spawn {cmd:?}: {e}"));
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().unwrap_or_else(|| panic!("{name}: no stdout pipe"));
        let tx = self.tx.clone();
        let tag = name.clone();
        let t0 = self.t0;
        std::thread::Builder::new()
            .name(format!("{name}-stdout"))
            .spawn(move || {
                for line in BufReader::new(stdout).lines() {
                    let Ok(text) = line else { break };
                    eprintln!("[{:8.3} {tag}] {text}", t0.elapsed().as_secs_f64());
                    if tx.send(Line { from: i, text, at: Instant::now() }).is_err() {
                        break;
                    }
                }
            })
            .unwrap_or_else(|e| panic!("{name}: cannot start reader thread: {e}"));
        self.procs.push(Proc { name, peer: String::new(), addr: String::new(), child, stdin, alive: true });
        // Lines of the others meanwhile (a `PEERS`, say) are kept.
        let mut kept = Vec::new();
        let addr = self.expect_with(i, "ADDR", within, |l| kept.push(l.clone()));
        for l in kept.into_iter().rev() {
            self.backlog.push_front(l);
        }
        let peer = addr.rsplit("/p2p/").next().unwrap_or_default().to_string();
        assert!(!peer.is_empty() && addr.contains("/p2p/"), "node{i}: ADDR {addr}");
        self.procs[i].addr = addr;
        self.procs[i].peer = peer;
        i
    }

    /// The next line of any process (kept ones first), waiting at most
    /// `timeout`.
    pub fn recv(&mut self, timeout: Duration) -> Result<Line, RecvTimeoutError> {
        match self.backlog.pop_front() {
            Some(l) => Ok(l),
            None => self.lines.recv_timeout(timeout),
        }
    }

    /// The next line that process `i` prints starting with `word ` (other
    /// lines, of any process, are passed to `skip`); returns the rest.
    pub fn expect_with(&mut self, i: usize, word: &str, within: Duration, mut skip: impl FnMut(&Line)) -> String {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = match self.recv(left) {
                Ok(line) => line,
                Err(RecvTimeoutError::Timeout) => panic!("node{i}: no `{word}` line within {within:?}"),
                Err(RecvTimeoutError::Disconnected) => panic!("every process exited before node{i} printed `{word}`"),
            };
            if let Some(err) = line.text.strip_prefix("ERR ") {
                panic!("node{}: failed while node{i}'s `{word}` was awaited: {err}", line.from);
            }
            if line.from == i {
                if let Some(rest) = line.text.strip_prefix(word).and_then(|r| r.strip_prefix(' ')) {
                    return rest.to_string();
                }
            }
            skip(&line);
        }
    }

    /// Waits until every process in `which` has printed a line starting
    /// with `word ` (other lines are ignored); returns the rests, by process.
    pub fn expect_all(&mut self, which: &[usize], word: &str, within: Duration) -> Vec<String> {
        let deadline = Instant::now() + within;
        let mut got: Vec<Option<String>> = vec![None; self.procs.len()];
        while which.iter().any(|&i| got[i].is_none()) {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = match self.recv(left) {
                Ok(line) => line,
                Err(e) => {
                    let missing: Vec<usize> = which.iter().copied().filter(|&i| got[i].is_none()).collect();
                    panic!("no `{word}` line from {missing:?} within {within:?} ({e:?})");
                }
            };
            if let Some(err) = line.text.strip_prefix("ERR ") {
                panic!("node{}: failed while `{word}` lines were awaited: {err}", line.from);
            }
            if let Some(rest) = line.text.strip_prefix(word).and_then(|r| r.strip_prefix(' ')) {
                if got[line.from].is_none() {
                    got[line.from] = Some(rest.to_string());
                }
            }
        }
        which.iter().map(|&i| got[i].take().unwrap_or_default()).collect()
    }

    /// [`Cluster::expect_with`], ignoring other lines.
    pub fn expect(&mut self, i: usize, word: &str, within: Duration) -> String {
        self.expect_with(i, word, within, |_| {})
    }

    /// Sends a line to process `i`.
    pub fn send(&mut self, i: usize, line: &str) {
        let p = &mut self.procs[i];
        let name = &p.name;
        let stdin = p.stdin.as_mut().unwrap_or_else(|| panic!("{name}: stdin already closed"));
        writeln!(stdin, "{line}").and_then(|()| stdin.flush()).unwrap_or_else(|e| panic!("{name}: cannot write: {e}"));
    }

    /// Kills process `i` with SIGKILL (no goodbye) and reaps it.
    pub fn kill9(&mut self, i: usize) {
        let p = &mut self.procs[i];
        p.alive = false;
        p.stdin.take();
        let _ = p.child.kill();
        let _ = p.child.wait();
    }

    /// The index of the process whose peer id is `peer`.
    pub fn by_peer(&self, peer: &str) -> Option<usize> {
        self.procs.iter().position(|p| p.peer == peer)
    }

    /// Asks every live process for `STATS` until each reports no object
    /// pinned for peers and no accepted work, at most `within`; panics
    /// naming the processes that still hold some.
    pub fn settle(&mut self, within: Duration) {
        let deadline = Instant::now() + within;
        let live: Vec<usize> = (0..self.procs.len()).filter(|&i| self.procs[i].alive).collect();
        let mut last = Vec::new();
        loop {
            last.clear();
            for &i in &live {
                self.send(i, "STATS");
                let left = deadline.saturating_duration_since(Instant::now()).max(Duration::from_secs(5));
                let stats = self.expect(i, "STATS", left);
                let nums: Vec<u64> = stats.split(' ').filter_map(|n| n.parse().ok()).collect();
                if nums.len() < 2 || nums[0] != 0 || nums[1] != 0 {
                    last.push(format!("node{i}: {stats}"));
                }
            }
            if last.is_empty() {
                return;
            }
            assert!(Instant::now() < deadline, "still holding pins or work after {within:?}: {last:?}");
            // Releases travel as mail: ask again soon (a bounded poll's pace).
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Sends `EXIT` to every live process and waits (at most `within`
    /// each) for it to exit with status 0.
    pub fn exit_all(&mut self, within: Duration) {
        for i in 0..self.procs.len() {
            if self.procs[i].alive {
                self.send(i, "EXIT");
            }
        }
        for p in self.procs.iter_mut().filter(|p| p.alive) {
            let deadline = Instant::now() + within;
            let status = loop {
                match p.child.try_wait() {
                    Ok(Some(s)) => break s,
                    Ok(None) if Instant::now() < deadline => {
                        // Bounded poll of the exit (no channel to wait on).
                        std::thread::park_timeout(Duration::from_millis(20));
                    }
                    Ok(None) => panic!("{}: did not exit within {within:?}", p.name),
                    Err(e) => panic!("{}: wait failed: {e}", p.name),
                }
            };
            p.alive = false;
            assert!(status.success(), "{}: exited with {status}", p.name);
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for p in &mut self.procs {
            p.stdin.take();
            if let Ok(None) = p.child.try_wait() {
                let _ = p.child.kill();
                let _ = p.child.wait();
            }
        }
    }
}

/// splitmix64: the harness's seeded choices.
pub struct Rng(pub u64);

impl Rng {
    /// The next 64 random bits.
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `lo..=hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo + 1)
    }
}
