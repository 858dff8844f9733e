//! The cluster's timeline: [`Node::cluster_timeline`] asks every live
//! member for its timeline (`transport::timeline`: pages, and its clock
//! offset from the exchange with the shortest round trip), aligns their
//! times to this node's timeline clock, and merges them with this node's
//! own into one Chrome trace ([`manta::ChromeTrace`]): one process per
//! node, named by its short peer id and its first listen address.
//!
//! Invariants: a member that does not answer within the timeout (or
//! refuses, or is declared dead) is listed in [`ClusterTrace::missing`],
//! never an error of the whole call; at most `MAX_COLLECTED_EVENTS`
//! (200,000) events are taken from each node, its most recent; an
//! observer leaves itself out (it is no member and runs no work).

use super::Node;
use crate::cluster::Member;
use crate::node::NodeError;
use crate::transport::timeline::{collect, Collected};
use crate::wire::timeline::{end_of, MAX_COLLECTED_EVENTS};
use libp2p::{Multiaddr, PeerId};
use manta::{ChromeTrace, Timeline};
use std::time::Duration;

/// One node's part of a [`ClusterTrace`].
#[derive(Debug, Clone)]
pub struct TracedNode {
    /// The node.
    pub peer: PeerId,
    /// Its process id in the trace (1, 2, ...; this node's is 1 unless it
    /// is an observer).
    pub pid: u32,
    /// Its process name in the trace: short peer id and listen address.
    pub name: String,
    /// Events taken from it.
    pub events: usize,
    /// Its timeline clock minus the collector's, in nanoseconds, as
    /// estimated (its times less this are the trace's).
    pub offset_ns: i64,
    /// The round trip the offset was estimated from (the estimate's error
    /// is at most half of it); zero for the collector itself.
    pub rtt: Duration,
    /// True if it had more than the 200,000 events taken (the oldest were
    /// left out).
    pub truncated: bool,
}

/// A member whose timeline is not in a [`ClusterTrace`], and why.
#[derive(Debug, Clone)]
pub struct MissingNode {
    /// The member.
    pub peer: PeerId,
    /// Why (no answer in time, refused, declared dead, ...).
    pub reason: String,
}

/// The cluster's timeline, from [`Node::cluster_timeline`].
#[derive(Debug, Clone)]
pub struct ClusterTrace {
    /// Chrome trace JSON (Perfetto, `chrome://tracing`): one process per
    /// node, its threads' tracks inside, transfers as spans on both nodes,
    /// flow arrows from the task that made an object to the tasks that read
    /// it and to the transfers that brought it to other nodes.
    pub json: String,
    /// The nodes in the trace.
    pub nodes: Vec<TracedNode>,
    /// Members that are not in it.
    pub missing: Vec<MissingNode>,
}

impl ClusterTrace {
    /// Writes [`ClusterTrace::json`] to `path`.
    pub fn write(&self, path: impl AsRef<std::path::Path>) -> std::io::Result<()> {
        std::fs::write(path, &self.json)
    }
}

/// A node's process name: the end of its peer id and its first address.
fn process_name(peer: &PeerId, addrs: &[Multiaddr]) -> String {
    let id = peer.to_string();
    let short = id.get(id.len().saturating_sub(8)..).unwrap_or(&id);
    match addrs.first() {
        Some(a) => format!("{short} {a}"),
        None => short.to_string(),
    }
}

/// Keeps the most recent [`MAX_COLLECTED_EVENTS`] events.
fn cap(mut t: Timeline) -> (Timeline, bool) {
    if t.events.len() <= MAX_COLLECTED_EVENTS {
        return (t, false);
    }
    t.events.sort_by_key(|e| std::cmp::Reverse(end_of(e)));
    t.events.truncate(MAX_COLLECTED_EVENTS);
    (t, true)
}

impl Node {
    /// Collects the cluster's timeline into one Chrome trace: this node's
    /// own (unless it is an observer) and every live member's, each asked
    /// at once and given `timeout` to answer. Members record only while
    /// their runtime records its timeline ([`NodeBuilder::timeline`](crate::NodeBuilder::timeline)
    /// or `runtime.record_timeline(true)`); one that does not answer in
    /// time, refuses, or is declared dead is listed in
    /// [`ClusterTrace::missing`]. Each node gives at most its 200,000 most
    /// recent events. Times are aligned to this node's timeline clock by
    /// each member's round-trip offset.
    ///
    /// Members answer only members: in a cluster with a secret, any node
    /// that holds it (an observer too); without one, a node in their member
    /// table (so an observer of a cluster without a secret collects only
    /// itself).
    ///
    /// Errors: [`NodeError::Shutdown`] if the node has stopped.
    pub async fn cluster_timeline_async(&self, timeout: Duration) -> Result<ClusterTrace, NodeError> {
        let members = self.cluster_status_async().await?;
        let backend = self.inner.backend.clone();
        let rt = self.inner.rt.clone();
        let (asked, dead): (Vec<Member>, Vec<Member>) =
            members.into_iter().filter(|m| !m.is_self).partition(|m| m.alive);
        let task = backend.tokio.spawn({
            let (backend, rt) = (backend.clone(), rt.clone());
            async move {
                // The collector's clock starts before the first exchange.
                rt.backend().timeline_clock();
                let asks = asked.into_iter().map(|m| {
                    let (pool, rt) = (backend.pool.clone(), rt.clone());
                    async move {
                        let got = tokio::time::timeout(timeout, collect(&pool, &rt, m.peer)).await;
                        (m, got)
                    }
                });
                futures::future::join_all(asks).await
            }
        });
        let answers = task.await.map_err(|_| NodeError::Shutdown)?;
        let mut trace = ChromeTrace::new();
        let mut nodes = Vec::new();
        let mut add = |peer: PeerId, name: String, c: Collected, trace: &mut ChromeTrace| {
            nodes.push(TracedNode {
                peer,
                pid: nodes.len() as u32 + 1,
                name: name.clone(),
                events: c.timeline.events.len(),
                offset_ns: c.offset_ns,
                rtt: c.rtt,
                truncated: c.truncated,
            });
            trace.add_process(&name, c.timeline, c.offset_ns.saturating_neg());
        };
        if !backend.observer {
            let (timeline, truncated) = cap(rt.timeline());
            let me = Collected { timeline, offset_ns: 0, rtt: Duration::ZERO, truncated };
            add(self.peer_id(), process_name(&self.peer_id(), &self.listen_addrs()), me, &mut trace);
        }
        let mut missing: Vec<MissingNode> =
            dead.into_iter().map(|m| MissingNode { peer: m.peer, reason: "declared dead".into() }).collect();
        for (m, got) in answers {
            match got {
                Ok(Ok(c)) => add(m.peer, process_name(&m.peer, &m.addrs), c, &mut trace),
                Ok(Err(e)) => missing.push(MissingNode { peer: m.peer, reason: e.to_string() }),
                Err(_) => missing.push(MissingNode { peer: m.peer, reason: format!("no answer within {timeout:?}") }),
            }
        }
        Ok(ClusterTrace { json: trace.to_json(), nodes, missing })
    }

    /// Blocking form of [`Node::cluster_timeline_async`].
    pub fn cluster_timeline(&self, timeout: Duration) -> Result<ClusterTrace, NodeError> {
        futures::executor::block_on(self.cluster_timeline_async(timeout))
    }
}
