//! What the member table keeps of a heartbeat, and how big the table may
//! grow: every peer that can connect can also sign heartbeats with as many
//! fresh keys as it likes, each of which would be a member.
//!
//! - A member's addresses: at most [`MAX_MEMBER_ADDRS`], each at most
//!   [`MAX_MEMBER_ADDR_BYTES`] bytes (longer ones, and ones that do not
//!   parse, are dropped; the first that fit are kept). A node's own listen
//!   addresses are IPs, a port and a peer id (~60 bytes): only made-up
//!   ones are longer.
//! - Its resources: at most `wire::MAX_RESOURCES`, names at most
//!   `wire::MAX_RESOURCE_NAME_BYTES` bytes (the decoder already refuses
//!   more; kept here so the table's bound does not depend on it).
//! - The table: at most [`MAX_MEMBERS`] peers. A new peer beyond it takes
//!   the place of the member gone (dead or left) longest ago; when every
//!   member is alive it is refused (`HeartbeatRefused::TableFull`), so a
//!   flood of made-up members never pushes out live ones.
//! - A member gone for [`FORGET_GONE_AFTER`] is forgotten (its return is
//!   then a `Joined`, not a `Revived`).
//! - A snapshot lists at most [`MAX_REPORTED_ONLY`] peers known only from
//!   others' reports, those reported by the most members first.
//!
//! Invariants: the table never holds more than [`MAX_MEMBERS`] entries;
//! an entry holds at most the bytes above (about 10 KiB), so the whole
//! table stays under ~11 MiB whatever peers send; a live member is never
//! evicted to admit another.

use super::{Entry, Membership, DOWN_REPORT_FOR};
use crate::wire::{Resource, MAX_RESOURCES, MAX_RESOURCE_NAME_BYTES};
use libp2p::{Multiaddr, PeerId};
use std::time::{Duration, Instant};

/// Most peers the member table holds (live and gone).
pub const MAX_MEMBERS: usize = 1024;
/// Most addresses kept per member.
pub const MAX_MEMBER_ADDRS: usize = 16;
/// Longest address kept, in bytes (its binary multiaddr form).
pub const MAX_MEMBER_ADDR_BYTES: usize = 128;
/// How long a member gone (dead or left) stays in the table: as long as
/// members report it down ([`DOWN_REPORT_FOR`]).
pub const FORGET_GONE_AFTER: Duration = DOWN_REPORT_FOR;
/// Most peers known only from others' reports listed in a snapshot.
pub(crate) const MAX_REPORTED_ONLY: usize = 64;

/// The addresses of a heartbeat the table keeps (see the module docs).
pub(super) fn kept_addrs(raw: &[Vec<u8>]) -> Vec<Multiaddr> {
    raw.iter()
        .filter(|a| a.len() <= MAX_MEMBER_ADDR_BYTES)
        .filter_map(|a| Multiaddr::try_from(a.clone()).ok())
        .take(MAX_MEMBER_ADDRS)
        .collect()
}

/// The resources of a heartbeat the table keeps (see the module docs).
pub(super) fn kept_resources(mut raw: Vec<Resource>) -> Vec<Resource> {
    raw.retain(|r| r.name.len() <= MAX_RESOURCE_NAME_BYTES);
    raw.truncate(MAX_RESOURCES);
    raw
}

impl Membership {
    /// Makes room for one more peer: true if the table has room (evicting
    /// the member gone longest ago if it was full), false if every member
    /// is alive.
    pub(super) fn make_room(&mut self) -> bool {
        if self.members.len() < MAX_MEMBERS {
            return true;
        }
        let oldest = self.members.values().filter_map(|e| e.gone.map(|at| (at, e.member.peer))).min_by_key(|g| g.0);
        match oldest {
            Some((_, peer)) => {
                tracing::debug!(%peer, "member table full: forgetting the member gone longest ago");
                self.members.remove(&peer);
                true
            }
            None => false,
        }
    }

    /// Forgets the members gone for [`FORGET_GONE_AFTER`].
    pub(super) fn forget_gone(&mut self, now: Instant) {
        let stale = |e: &Entry| e.gone.is_some_and(|at| now.saturating_duration_since(at) >= FORGET_GONE_AFTER);
        self.members.retain(|_, e| !stale(e));
    }

    /// How many peers the table holds (live and gone).
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.members.len()
    }
}

/// Keeps at most [`MAX_REPORTED_ONLY`] of `reports` (peers known only from
/// others' reports), those reported by the most members first.
pub(super) fn cap_reports(reports: impl IntoIterator<Item = (PeerId, Vec<PeerId>)>) -> Vec<(PeerId, Vec<PeerId>)> {
    let mut all: Vec<_> = reports.into_iter().collect();
    all.sort_by_key(|(p, by)| (std::cmp::Reverse(by.len()), p.to_bytes()));
    all.truncate(MAX_REPORTED_ONLY);
    all
}

#[cfg(test)]
mod tests {
    use super::super::{HeartbeatRefused, MembershipEvent};
    use super::*;
    use crate::wire::Heartbeat;

    fn hb(seq: u64) -> Heartbeat {
        Heartbeat { seq, ..Default::default() }
    }

    #[test]
    fn oversize_addresses_and_resources_are_cut() {
        let good: Multiaddr = "/ip4/10.0.0.1/tcp/4001".parse().unwrap();
        let long: Multiaddr = format!("/dns4/{}/tcp/1", "x".repeat(200)).parse().unwrap();
        let mut raw = vec![long.to_vec(), vec![0xff, 0xff]];
        raw.extend((0..40).map(|_| good.to_vec()));
        let kept = kept_addrs(&raw);
        assert_eq!(kept.len(), MAX_MEMBER_ADDRS);
        assert!(kept.iter().all(|a| *a == good), "the long and the broken one dropped");
        let r = |name: String| Resource { name, total: 1.0, free: 1.0 };
        let mut res: Vec<Resource> = (0..100).map(|i| r(format!("r{i}"))).collect();
        res.insert(0, r("n".repeat(MAX_RESOURCE_NAME_BYTES + 1)));
        let kept = kept_resources(res);
        assert_eq!((kept.len(), kept[0].name.as_str()), (MAX_RESOURCES, "r0"));
    }

    #[test]
    fn the_table_is_capped_live_members_stay_and_gone_ones_make_room() {
        let mut m = Membership::new(PeerId::random(), Duration::from_secs(1), Duration::from_secs(5));
        let (tx, rx) = crossbeam_channel::unbounded();
        m.subscribe(tx);
        let t0 = Instant::now();
        let first = PeerId::random();
        m.on_heartbeat(first, hb(1), t0).unwrap();
        for _ in 1..MAX_MEMBERS {
            let p = PeerId::random();
            m.on_heartbeat(p, hb(1), t0 + Duration::from_secs(3)).unwrap();
        }
        assert_eq!(m.len(), MAX_MEMBERS);
        // Full of live members: a newcomer is refused, nobody is evicted.
        let late = PeerId::random();
        assert!(matches!(m.on_heartbeat(late, hb(1), t0), Err(HeartbeatRefused::TableFull)));
        assert_eq!((m.len(), m.live_count()), (MAX_MEMBERS, MAX_MEMBERS));
        // `first` dies: the newcomer takes its place (`first` is forgotten:
        // its return is a join).
        m.tick(t0 + Duration::from_secs(6));
        assert_eq!(m.live_count(), MAX_MEMBERS - 1);
        m.on_heartbeat(late, hb(1), t0 + Duration::from_secs(6)).unwrap();
        assert_eq!((m.len(), m.live_count()), (MAX_MEMBERS, MAX_MEMBERS));
        assert!(!m.members.contains_key(&first));
        // Known members are still updated when the table is full.
        m.on_heartbeat(late, hb(2), t0 + Duration::from_secs(6)).unwrap();
        let events: Vec<_> = rx.try_iter().filter(|e| matches!(e, MembershipEvent::Joined(p) if *p == late)).collect();
        assert_eq!(events.len(), 1);
    }

    #[test]
    fn gone_members_are_forgotten_after_a_while() {
        let mut m = Membership::new(PeerId::random(), Duration::from_secs(1), Duration::from_secs(5));
        let t0 = Instant::now();
        let (dead, left, live) = (PeerId::random(), PeerId::random(), PeerId::random());
        for p in [dead, left, live] {
            m.on_heartbeat(p, hb(1), t0).unwrap();
        }
        m.on_heartbeat(left, Heartbeat { leaving: true, ..hb(2) }, t0).unwrap();
        for i in 1..=10 {
            m.on_alive(live, 1 + i, t0 + Duration::from_secs(i)).unwrap();
        }
        m.tick(t0 + Duration::from_secs(10));
        assert_eq!((m.len(), m.live_count()), (3, 1));
        let later = t0 + Duration::from_secs(10) + FORGET_GONE_AFTER;
        m.on_heartbeat(live, hb(100), later).unwrap();
        m.tick(later);
        assert_eq!((m.len(), m.live_count()), (1, 1), "both gone ones forgotten, the live one kept");
    }

    #[test]
    fn peers_known_only_from_reports_are_capped() {
        let popular = PeerId::random();
        let reporters: Vec<PeerId> = (0..3).map(|_| PeerId::random()).collect();
        let mut reports: Vec<(PeerId, Vec<PeerId>)> =
            (0..500).map(|_| (PeerId::random(), vec![reporters[0]])).collect();
        reports.push((popular, reporters.clone()));
        let kept = cap_reports(reports);
        assert_eq!(kept.len(), MAX_REPORTED_ONLY);
        assert_eq!(kept[0].0, popular, "the one most members report first");
    }
}
