//! Where a task runs: the spillback decision, a pure function of the
//! member table (gossip heartbeats), this node's own queue and what this
//! node has already sent to each peer.
//!
//! A task runs where it is submitted unless:
//! 1. this node lacks a resource it needs (or has too little in total):
//!    it goes to the least loaded peer that has enough; if no live node
//!    has enough, it fails at once, naming the resource;
//! 2. a peer holds much more of its argument bytes (at least
//!    [`LOCALITY_MIN_BYTES`] and twice what this node holds), can run it,
//!    and is not more than `threshold` tasks per CPU busier than this node:
//!    it goes there (the seed's `add(a, b)` runs where `b` lives);
//! 3. this node's queue is saturated (at least `threshold` tasks waiting)
//!    and a peer is less loaded per CPU: it goes to the least loaded one.
//!
//! A peer's load is the larger of its gossiped queue length and the tasks
//! this node sent it that have not completed (gossip lags; our own count
//! does not), divided by its CPUs. Only live peers with this node's
//! function-table hash are candidates, minus those excluded (busy), and
//! minus those this node finds unreachable (missed heartbeats: a partition
//! or a death not yet declared) unless only they have the resources. A
//! task this node cannot run whose every capable peer is excluded still
//! goes to the least loaded of those (the caller sends it after a pause):
//! busy is not infeasible.

use super::membership::Member;
use libp2p::PeerId;
use std::collections::HashMap;

/// Argument bytes a peer must hold for locality to move a task.
pub const LOCALITY_MIN_BYTES: u64 = 1 << 20;

/// What a task needs.
#[derive(Debug, Clone, Default)]
pub(crate) struct Need {
    pub(crate) cpus: f64,
    pub(crate) resources: Vec<(String, f64)>,
}

/// This node, as placement sees it.
#[derive(Debug, Clone)]
pub(crate) struct Local {
    /// `(name, total)` of every resource (`"CPU"` included).
    pub(crate) totals: Vec<(String, f64)>,
    /// Tasks waiting in the local scheduler.
    pub(crate) queued: usize,
    /// Saturation threshold (tasks waiting).
    pub(crate) threshold: usize,
    /// Argument bytes held here.
    pub(crate) arg_bytes: u64,
    /// This node's function-table hash.
    pub(crate) fn_hash: u64,
}

/// Where to run.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Place {
    Local,
    Peer(PeerId),
    /// No live node has enough of `resource`.
    Infeasible {
        resource: String,
        requested: f64,
        most: f64,
    },
}

fn total_of(totals: &[(String, f64)], name: &str) -> f64 {
    totals.iter().filter(|(n, _)| n == name).map(|(_, t)| *t).sum()
}

/// The first resource `totals` has too little of, if any, with the
/// amount needed.
pub(crate) fn short(need: &Need, totals: &[(String, f64)]) -> Option<(String, f64)> {
    let eps = 1e-9;
    if need.cpus > total_of(totals, "CPU") + eps {
        return Some(("CPU".into(), need.cpus));
    }
    need.resources.iter().find(|(n, a)| *a > total_of(totals, n) + eps).map(|(n, a)| (n.clone(), *a))
}

fn member_totals(m: &Member) -> Vec<(String, f64)> {
    m.resources.iter().map(|r| (r.name.clone(), r.total)).collect()
}

/// Chooses where a task runs (module docs). `sent` counts tasks in flight
/// per peer; `bytes` the argument bytes each peer holds; `excluded` peers
/// said busy. A task sent to a peer, or infeasible, is a `debug` line
/// saying why (inside the caller's `manta_p2p.submit` span, which names
/// the task); one kept here a `trace` line.
pub(crate) fn choose(
    need: &Need,
    local: &Local,
    members: &[Member],
    sent: &HashMap<PeerId, usize>,
    bytes: &HashMap<PeerId, u64>,
    excluded: &[PeerId],
) -> Place {
    let load = |m: &Member| {
        let mine = sent.get(&m.peer).copied().unwrap_or(0) as f64;
        let cpus = total_of(&member_totals(m), "CPU").max(1e-3);
        (m.queue_len as f64).max(mine) / cpus
    };
    let capable: Vec<&Member> = members
        .iter()
        .filter(|m| m.alive && !m.is_self && m.fn_hash == local.fn_hash)
        .filter(|m| short(need, &member_totals(m)).is_none())
        .collect();
    let reachable: Vec<&Member> = capable.iter().copied().filter(|m| !excluded.contains(&m.peer)).collect();
    let able: Vec<&Member> = reachable.iter().copied().filter(|m| !m.suspect).collect();
    let least_loaded =
        |ms: &[&Member]| ms.iter().min_by(|a, b| load(a).total_cmp(&load(b)).then(a.peer.cmp(&b.peer))).map(|m| m.peer);
    if let Some((resource, requested)) = short(need, &local.totals) {
        // Every capable peer excluded (busy): still the least loaded of
        // them; the caller waits before sending (it is not infeasible).
        let busy = || least_loaded(&capable);
        return match least_loaded(&able).or_else(|| least_loaded(&reachable)).or_else(busy) {
            Some(p) => {
                let why = "needs a resource this node lacks";
                tracing::debug!(to = %p, why, %resource, requested, busy = excluded.contains(&p), "placed on a peer");
                Place::Peer(p)
            }
            None => {
                let most = members
                    .iter()
                    .filter(|m| m.alive)
                    .map(|m| total_of(&member_totals(m), &resource))
                    .chain([total_of(&local.totals, &resource)])
                    .fold(0.0, f64::max);
                tracing::debug!(%resource, requested, most, "infeasible: no live node has enough");
                Place::Infeasible { resource, requested, most }
            }
        };
    }
    let local_load = local.queued as f64 / total_of(&local.totals, "CPU").max(1e-3);
    // A holder is too busy for locality to pay once it is a threshold's
    // worth of tasks busier than this node.
    let saturated = |m: &Member| load(m) > local_load + local.threshold.max(1) as f64;
    let holder = able
        .iter()
        .filter(|m| !saturated(m))
        .filter_map(|m| bytes.get(&m.peer).map(|b| (*b, m.peer)))
        .max_by(|a, b| a.0.cmp(&b.0).then(a.1.cmp(&b.1)));
    if let Some((b, peer)) = holder {
        if b >= LOCALITY_MIN_BYTES && b > 2 * local.arg_bytes {
            let why = "locality: it holds most of the arguments";
            tracing::debug!(to = %peer, why, arg_bytes_there = b, arg_bytes_here = local.arg_bytes, "placed on a peer");
            return Place::Peer(peer);
        }
    }
    if local.queued >= local.threshold {
        if let Some(p) = least_loaded(&able) {
            let m = able.iter().find(|m| m.peer == p);
            if let Some(m) = m.filter(|m| load(m) < local_load) {
                let (why, queued) = ("this node is saturated", local.queued);
                tracing::debug!(to = %p, why, queued, load_here = local_load, load_there = load(m), "placed on a peer");
                return Place::Peer(p);
            }
        }
    }
    tracing::trace!(queued = local.queued, "runs here");
    Place::Local
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::Resource;
    use std::time::Duration;

    fn member(peer: PeerId, cpus: f64, gpus: f64, queue: u64) -> Member {
        let mut resources = vec![Resource { name: "CPU".into(), total: cpus, free: cpus }];
        if gpus > 0.0 {
            resources.push(Resource { name: "GPU".into(), total: gpus, free: gpus });
        }
        Member {
            peer,
            addrs: vec![],
            resources,
            queue_len: queue,
            store_bytes: 0,
            store_capacity: 0,
            fn_hash: 7,
            alive: true,
            is_self: false,
            last_heartbeat_age: Duration::ZERO,
            suspect: false,
            reported_down_by: vec![],
            tasks_running: 0,
            tasks_done: 0,
            tasks_failed: 0,
            store_objects: 0,
        }
    }

    fn local(queued: usize) -> Local {
        Local { totals: vec![("CPU".into(), 1.0)], queued, threshold: 2, arg_bytes: 0, fn_hash: 7 }
    }

    #[test]
    fn resources_only_elsewhere_go_there_or_fail_naming_them() {
        let (b, c) = (PeerId::random(), PeerId::random());
        let members = [member(b, 1.0, 0.0, 0), member(c, 1.0, 1.0, 0)];
        let gpu = Need { cpus: 1.0, resources: vec![("GPU".into(), 1.0)] };
        assert_eq!(choose(&gpu, &local(0), &members, &HashMap::new(), &HashMap::new(), &[]), Place::Peer(c));
        let tpu = Need { cpus: 1.0, resources: vec![("TPU".into(), 1.0)] };
        assert!(matches!(
            choose(&tpu, &local(0), &members, &HashMap::new(), &HashMap::new(), &[]),
            Place::Infeasible { resource, .. } if resource == "TPU"
        ));
        // The only GPU node is busy: it still goes there (the caller
        // waits first), it is not infeasible.
        assert_eq!(choose(&gpu, &local(0), &members, &HashMap::new(), &HashMap::new(), &[c]), Place::Peer(c));
        let dead = Member { alive: false, ..members[1].clone() };
        assert!(matches!(
            choose(&gpu, &local(0), &[members[0].clone(), dead], &HashMap::new(), &HashMap::new(), &[]),
            Place::Infeasible { .. }
        ));
    }

    #[test]
    fn saturation_spreads_to_the_least_loaded() {
        let (b, c) = (PeerId::random(), PeerId::random());
        let members = [member(b, 1.0, 0.0, 0), member(c, 1.0, 0.0, 0)];
        let cpu = Need { cpus: 1.0, resources: vec![] };
        assert_eq!(choose(&cpu, &local(1), &members, &HashMap::new(), &HashMap::new(), &[]), Place::Local);
        let sent: HashMap<_, _> = [(b, 5), (c, 2)].into();
        assert_eq!(choose(&cpu, &local(4), &members, &sent, &HashMap::new(), &[]), Place::Peer(c));
        let busy: HashMap<_, _> = [(b, 9), (c, 9)].into();
        assert_eq!(choose(&cpu, &local(4), &members, &busy, &HashMap::new(), &[]), Place::Local);
    }

    #[test]
    fn locality_moves_tasks_to_their_bytes() {
        let b = PeerId::random();
        let members = [member(b, 1.0, 0.0, 0)];
        let cpu = Need { cpus: 1.0, resources: vec![] };
        let held: HashMap<_, _> = [(b, 8 << 20)].into();
        assert_eq!(choose(&cpu, &local(0), &members, &HashMap::new(), &held, &[]), Place::Peer(b));
        let mut mine = local(0);
        mine.arg_bytes = 8 << 20;
        assert_eq!(choose(&cpu, &mine, &members, &HashMap::new(), &held, &[]), Place::Local);
        let mut other = members[0].clone();
        other.fn_hash = 8;
        assert_eq!(choose(&cpu, &local(0), &[other], &HashMap::new(), &held, &[]), Place::Local);
    }
}
