//! The `CHAOS` job of `manta-node`: a map-reduce over generated text that a
//! harness can hurt (kill -9 a node, cut the network) while it runs, and
//! whose exact result this node checks (see `p2p/tests/chaos.rs` and
//! `p2p/tests/netns_faults.rs`).
//!
//! `CHAOS <seed> <chunks> <big_mb>` (chunks in 1..=4096, big_mb in 0..=256),
//! run on the driver (usually a node with `--cpus 0`, so every task and
//! the actor run on the other nodes):
//! - map: `chunks` `gen_text` tasks, each making a text of
//!   [`TEXT_WORDS`] words (about 130 KB, more than a result sent back
//!   inline, so it stays on the node that made it), and one `count` task
//!   per text (the text moves to it); two `big` tasks of `big_mb` MiB each;
//! - an `Auditor` actor with `max_restarts(3)` gets one `audit` call per
//!   count; it flags a call applied twice in one incarnation. A call that
//!   fails because the actor's node died is made again (fresh state);
//! - reduce: a binary tree of `merge` tasks over the counts (fan-in);
//! - transfer: the driver fetches each big object and checks its bytes.
//!
//! Lines the driver prints, in this order: `ACTOR <host peer id>`, `PHASE
//! map`, `PROGRESS map <done>/<chunks>` (about 16), `PHASE reduce`,
//! `PROGRESS reduce <level>/<levels>`, `PHASE transfer`, for each big
//! object `FETCH big <j>` then `GOT big <j>`, and last the result line
//! `CHAOS <words> <chunks merged> <checksum> <audit sum> <audit retries>`.
//! Asynchronously (a membership subscription): `DIED <peer>`, `REVIVED
//! <peer>`, and `ACTOR <host>` again after a death moved the actor. The
//! node that runs a `big` task prints `MADE big <j>`; the node where an
//! `Auditor` starts prints `AUDITOR up`.
//!
//! Invariants: the expected result is computed here from the generator
//! alone (no task), and any difference is an error: a count or merge
//! applied twice shows as a wrong total or a wrong number of chunks
//! merged; an audit applied twice in one incarnation is an error; every
//! wait is bounded by `--timeout`.

use crate::error::NodeCliError;
use manta::{Error, ObjectRef};
use manta_p2p::{ActorClass, MembershipEvent, Method, Node, Registry, RemoteFn};
use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;
use std::collections::BTreeSet;
use std::time::Duration;

/// Words in each text chunk (about 130 KB: more than an inline result).
pub(crate) const TEXT_WORDS: usize = 20_000;
/// Most chunks one job may ask for.
const MAX_CHUNKS: u32 = 4096;
/// Largest big object, in MiB.
const MAX_BIG_MB: u64 = 256;
/// Big objects per job.
const BIGS: u32 = 2;
/// Most times one audit is made again after its actor's node died.
const AUDIT_TRIES: u32 = 6;

/// The vocabulary index of each word of chunk `index` of the text of `seed`.
fn word_indices(seed: u64, index: u32) -> impl Iterator<Item = usize> {
    let mut rng = crate::SplitMix64(seed ^ u64::from(index).wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ 0x000c_4a05);
    let n = crate::VOCABULARY.len() as u64;
    (0..TEXT_WORDS).map(move |_| (rng.next() % n) as usize)
}

/// Chunk `index` of the text of `seed`.
fn text(seed: u64, index: u32) -> String {
    let mut out = String::with_capacity(TEXT_WORDS * 8);
    for (i, w) in word_indices(seed, index).enumerate() {
        if i > 0 {
            out.push(if i % 16 == 0 { '\n' } else { ' ' });
        }
        out.push_str(crate::VOCABULARY[w]);
    }
    out
}

/// Word counts by vocabulary index, and how many chunks they cover.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Tally {
    counts: Vec<u64>,
    chunks: u64,
}

impl Tally {
    fn add(mut self, other: &Tally) -> Tally {
        if self.counts.len() < other.counts.len() {
            self.counts.resize(other.counts.len(), 0);
        }
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
        self.chunks += other.chunks;
        self
    }

    /// A checksum of the counts and the chunks they cover.
    fn digest(&self, salt: u64) -> u64 {
        let mut bytes = salt.to_le_bytes().to_vec();
        bytes.extend(self.chunks.to_le_bytes());
        for c in &self.counts {
            bytes.extend(c.to_le_bytes());
        }
        fnv(&bytes)
    }
}

fn fnv(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3))
}

/// Map, first half: makes a text chunk (it stays on this node).
static GEN_TEXT: RemoteFn<(u64, u32), String> = RemoteFn::new("chaos.gen_text", |(seed, i)| text(seed, i));

/// Map, second half: counts a text's words.
static COUNT: RemoteFn<(String,), Tally> = RemoteFn::new("chaos.count", |(t,)| {
    let mut counts = vec![0u64; crate::VOCABULARY.len()];
    for w in t.split_whitespace() {
        // The vocabulary is small: a scan is as fast as a hash here.
        match crate::VOCABULARY.iter().position(|v| *v == w) {
            Some(k) => counts[k] += 1,
            None => counts.push(0), // not a vocabulary word: shows as a wrong result
        }
    }
    Tally { counts, chunks: 1 }
});

/// Reduce: adds two tallies.
static MERGE: RemoteFn<(Tally, Tally), Tally> = RemoteFn::new("chaos.merge", |(a, b)| a.add(&b));

/// A big object of `len` bytes from `(seed, j)`; says where it was made.
static BIG: RemoteFn<(u64, u32, u64), ByteBuf> = RemoteFn::new("chaos.big", |(seed, j, len)| {
    let bytes = crate::object_bytes(seed ^ u64::from(j).wrapping_add(0xb16), len as usize);
    let _ = crate::say(&format!("MADE big {j}"));
    ByteBuf::from(bytes)
});

/// Checks tallies; flags one applied twice in this incarnation.
struct Auditor {
    salt: u64,
    seen: BTreeSet<u32>,
}

/// An audit's answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Audit {
    digest: u64,
    /// True if this incarnation had already audited this chunk.
    twice: bool,
}

static AUDITOR: ActorClass<(u64,), Auditor> = ActorClass::new("chaos.Auditor", |(salt,)| {
    let _ = crate::say("AUDITOR up");
    Auditor { salt, seen: BTreeSet::new() }
});

static AUDIT: Method<Auditor, (u32, Tally), Audit> = Method::new("chaos.Auditor.audit", |a, (i, t)| Audit {
    digest: t.digest(a.salt ^ u64::from(i)),
    twice: !a.seen.insert(i),
});

/// Adds the job's functions and actor to `r`.
pub(crate) fn register(r: Registry) -> Registry {
    r.function(&GEN_TEXT).function(&COUNT).function(&MERGE).function(&BIG).actor(&AUDITOR).method(&AUDIT)
}

/// Runs `CHAOS <seed> <chunks> <big_mb>` (`job` is what follows the
/// command) and returns its `CHAOS` line.
pub(crate) fn run(node: &Node, job: &str, timeout: Duration) -> Result<String, NodeCliError> {
    let [seed, chunks, big_mb] = job.split_whitespace().collect::<Vec<_>>()[..] else {
        return Err(NodeCliError::JobUsage { command: "CHAOS", usage: "<seed> <chunks> <big_mb>", got: job.into() });
    };
    let seed: u64 = crate::parse("CHAOS seed", seed)?;
    let chunks: u32 = crate::parse("CHAOS chunks", chunks)?;
    let big_mb: u64 = crate::parse("CHAOS big_mb", big_mb)?;
    if chunks == 0 || chunks > MAX_CHUNKS || big_mb > MAX_BIG_MB {
        return Err(NodeCliError::ChaosRange { max_chunks: MAX_CHUNKS, max_big_mb: MAX_BIG_MB });
    }
    let auditor = node.actor_builder(&AUDITOR).max_restarts(3).spawn((seed,));
    crate::say(&format!("ACTOR {}", auditor.host()))?;
    watch_membership(node, auditor.clone())?;

    crate::say("PHASE map")?;
    let big_len = big_mb << 20;
    let bigs: Vec<ObjectRef<ByteBuf>> = (0..BIGS).map(|j| node.spawn(&BIG, (seed, j, big_len))).collect();
    let counts: Vec<ObjectRef<Tally>> = (0..chunks)
        .map(|i| {
            let text = node.spawn(&GEN_TEXT, (seed, i));
            node.spawn(&COUNT, (text,))
        })
        .collect();
    let audits: Vec<ObjectRef<Audit>> =
        counts.iter().enumerate().map(|(i, c)| auditor.call(&AUDIT, (i as u32, c))).collect();

    // The expected result, from the generator alone, while the cluster works.
    let expected: Vec<Tally> = (0..chunks)
        .map(|i| {
            let mut counts = vec![0u64; crate::VOCABULARY.len()];
            word_indices(seed, i).for_each(|w| counts[w] += 1);
            Tally { counts, chunks: 1 }
        })
        .collect();
    let total = expected.iter().fold(Tally::default(), |a, t| a.add(t));

    progress(node, "map", &counts, 16, timeout)?;

    crate::say("PHASE reduce")?;
    let mut levels: Vec<Vec<ObjectRef<Tally>>> = vec![counts.clone()];
    while levels.last().is_some_and(|l| l.len() > 1) {
        let mut it = levels.last().cloned().unwrap_or_default().into_iter();
        let mut next = Vec::new();
        while let Some(a) = it.next() {
            next.push(match it.next() {
                Some(b) => node.spawn(&MERGE, (a, b)),
                None => a,
            });
        }
        levels.push(next);
    }
    let n = levels.len() - 1;
    for (k, level) in levels.iter().enumerate().skip(1) {
        wait_all(node, &format!("reduce level {k}"), level, timeout)?;
        crate::say(&format!("PROGRESS reduce {k}/{n}"))?;
    }
    let root = levels.last().and_then(|l| l.first().cloned()).ok_or(NodeCliError::NoReduceResult)?;
    let got = root.get_timeout(timeout).map_err(NodeCliError::task("reduce"))?;
    drop(levels);
    if *got != total {
        return Err(NodeCliError::TallyDiffers {
            got_words: got.counts.iter().sum::<u64>(),
            got_chunks: got.chunks,
            want_words: total.counts.iter().sum::<u64>(),
            want_chunks: total.chunks,
        });
    }

    let (audit_sum, retries) = check_audits(&auditor, &counts, audits, &expected, seed, timeout)?;
    drop(counts);

    crate::say("PHASE transfer")?;
    for (j, big) in bigs.iter().enumerate() {
        crate::say(&format!("FETCH big {j}"))?;
        let b = big.get_timeout(timeout).map_err(NodeCliError::task(format!("big object {j}")))?;
        let want = crate::object_bytes(seed ^ (j as u64).wrapping_add(0xb16), big_len as usize);
        if b.as_slice() != want.as_slice() {
            return Err(NodeCliError::BigDiffers { index: j, got: b.len(), expected: want.len() });
        }
        crate::say(&format!("GOT big {j}"))?;
    }
    Ok(format!(
        "CHAOS {} {} {} {audit_sum:016x} {retries}",
        got.counts.iter().sum::<u64>(),
        got.chunks,
        crate::checksum(&got.digest(0).to_le_bytes())
    ))
}

/// Prints `DIED`/`REVIVED` lines, and the actor's host after a death, from
/// a thread that ends with the node.
fn watch_membership(node: &Node, auditor: manta_p2p::ActorHandle<Auditor>) -> Result<(), NodeCliError> {
    let events = node.subscribe().map_err(NodeCliError::node("cannot watch the membership"))?;
    std::thread::Builder::new()
        .name("chaos-membership".into())
        .spawn(move || {
            for ev in events.iter() {
                let line = match ev {
                    MembershipEvent::Died(p) => format!("DIED {p}\nACTOR {}", auditor.host()),
                    MembershipEvent::Revived(p) => format!("REVIVED {p}"),
                    MembershipEvent::Joined(_) => continue,
                };
                if crate::say(&line).is_err() {
                    return;
                }
            }
        })
        .map(drop)
        .map_err(NodeCliError::Thread)
}

/// Waits for every ref (done or failed), printing about `lines` progress
/// lines named `what`.
fn progress<T: Send + Sync + 'static>(
    node: &Node,
    what: &str,
    refs: &[ObjectRef<T>],
    lines: usize,
    timeout: Duration,
) -> Result<(), NodeCliError> {
    let step = refs.len().div_ceil(lines).max(1);
    let mut pending = refs.to_vec();
    let mut done = 0;
    while !pending.is_empty() {
        let want = step.min(pending.len());
        let (ready, rest) = node.runtime().wait(&pending, want, Some(timeout)).map_err(NodeCliError::task(what))?;
        if ready.len() < want {
            return Err(NodeCliError::Slow { what: what.into(), done, total: refs.len(), after: timeout });
        }
        done += ready.len();
        pending = rest;
        crate::say(&format!("PROGRESS {what} {done}/{}", refs.len()))?;
    }
    Ok(())
}

fn wait_all<T: Send + Sync + 'static>(
    node: &Node,
    what: &str,
    refs: &[ObjectRef<T>],
    timeout: Duration,
) -> Result<(), NodeCliError> {
    let (ready, _) = node.runtime().wait(refs, refs.len(), Some(timeout)).map_err(NodeCliError::task(what))?;
    if ready.len() < refs.len() {
        return Err(NodeCliError::Slow { what: what.into(), done: ready.len(), total: refs.len(), after: timeout });
    }
    Ok(())
}

/// Checks every audit against the expected tallies, making again (at
/// most [`AUDIT_TRIES`] times each) those that failed because the actor's
/// node died. Returns the sum of the digests and the number of retries.
fn check_audits(
    auditor: &manta_p2p::ActorHandle<Auditor>,
    counts: &[ObjectRef<Tally>],
    audits: Vec<ObjectRef<Audit>>,
    expected: &[Tally],
    seed: u64,
    timeout: Duration,
) -> Result<(u64, u32), NodeCliError> {
    let (mut sum, mut retries) = (0u64, 0u32);
    for (i, mut audit) in audits.into_iter().enumerate() {
        let mut tries = 0;
        let a = loop {
            match audit.get_timeout(timeout) {
                Ok(a) => break a,
                Err(e) if tries < AUDIT_TRIES && lost_with_its_node(&e) => {
                    tries += 1;
                    retries += 1;
                    audit = auditor.call(&AUDIT, (i as u32, &counts[i]));
                }
                Err(e) => return Err(NodeCliError::task(format!("audit {i}"))(e)),
            }
        };
        if a.twice {
            return Err(NodeCliError::AuditTwice { index: i });
        }
        let want = expected[i].digest(seed ^ i as u64);
        if a.digest != want {
            return Err(NodeCliError::AuditDigest { index: i, got: a.digest, expected: want });
        }
        sum = sum.wrapping_add(a.digest);
    }
    Ok((sum, retries))
}

/// True for the errors of a call whose actor's node died under it.
fn lost_with_its_node(e: &Error) -> bool {
    matches!(e.root_cause(), Error::ActorDead { .. } | Error::PeerUnreachable { .. })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_text_counts_to_its_generator_and_is_bigger_than_an_inline_result() {
        let t = text(7, 3);
        assert!(t.len() > manta_p2p::INLINE_RESULT_BYTES, "{} bytes", t.len());
        let counted = (COUNT.func())((t,));
        let mut want = vec![0u64; crate::VOCABULARY.len()];
        word_indices(7, 3).for_each(|w| want[w] += 1);
        assert_eq!(counted, Tally { counts: want, chunks: 1 });
        assert_ne!(text(7, 3), text(7, 4));
    }

    #[test]
    fn merging_adds_counts_and_chunks() {
        let a = Tally { counts: vec![1, 2], chunks: 1 };
        let b = Tally { counts: vec![3, 4, 5], chunks: 2 };
        assert_eq!((MERGE.func())((a, b)), Tally { counts: vec![4, 6, 5], chunks: 3 });
    }
}
