//! The member table built from gossip heartbeats.
//!
//! Every node publishes a [`Heartbeat`] each period; this table keeps the
//! latest one per peer and when it arrived. A peer whose last heartbeat is
//! older than the failure timeout is marked dead (kept in the table, so its
//! return is reported as `Revived`). Invariants: the local node is never in
//! the table (it is added to snapshots from live data); each transition
//! (joined, died, revived) is reported exactly once to every subscriber;
//! heartbeats with a sequence number not above the last one seen from a live
//! peer are stale and ignored.

use crate::wire::{Heartbeat, Resource};
use crossbeam_channel::Sender;
use libp2p::identity::ParseError;
use libp2p::{Multiaddr, PeerId};
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// One node of the cluster as the local node sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct Member {
    /// Its peer id.
    pub peer: PeerId,
    /// The addresses it listens on.
    pub addrs: Vec<Multiaddr>,
    /// Its resources: name, total, free.
    pub resources: Vec<Resource>,
    /// Tasks queued on it.
    pub queue_len: u64,
    /// Bytes in its object store, and the store's capacity.
    pub store_bytes: u64,
    /// Capacity of its object store.
    pub store_capacity: u64,
    /// Hash of its registered-function table.
    pub fn_hash: u64,
    /// False once it missed heartbeats for the failure timeout.
    pub alive: bool,
    /// True for the local node.
    pub is_self: bool,
    /// Time since its last heartbeat (zero for the local node).
    pub last_heartbeat_age: Duration,
}

/// A change in membership.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MembershipEvent {
    /// A peer was heard from for the first time.
    Joined(PeerId),
    /// A peer missed heartbeats for the failure timeout.
    Died(PeerId),
    /// A dead peer was heard from again.
    Revived(PeerId),
}

struct Entry {
    member: Member,
    seen: Instant,
    seq: u64,
    /// Dead because it said it was leaving (not because it went silent).
    left: bool,
}

/// Why a heartbeat was refused.
#[derive(Debug, thiserror::Error)]
pub(crate) enum HeartbeatRefused {
    /// Its peer id does not parse.
    #[error("bad peer id: {0}")]
    BadPeerId(#[source] ParseError),
    /// It names another peer than the one that signed it.
    #[error("heartbeat for {peer} signed by {signer}")]
    Forged {
        /// The peer it names.
        peer: Box<PeerId>,
        /// The peer that signed it.
        signer: Box<PeerId>,
    },
    /// It is this node's own.
    #[error("own heartbeat")]
    Own,
}

/// The table (owned by the event loop).
pub(crate) struct Membership {
    me: PeerId,
    timeout: Duration,
    members: HashMap<PeerId, Entry>,
    subs: Vec<Sender<MembershipEvent>>,
}

impl Membership {
    pub(crate) fn new(me: PeerId, timeout: Duration) -> Membership {
        Membership { me, timeout, members: HashMap::new(), subs: Vec::new() }
    }

    pub(crate) fn subscribe(&mut self, tx: Sender<MembershipEvent>) {
        self.subs.push(tx);
    }

    fn emit(&mut self, ev: MembershipEvent) {
        tracing::debug!(?ev, "membership");
        self.subs.retain(|s| s.send(ev.clone()).is_ok());
    }

    /// Applies a heartbeat sent by `source` (gossipsub's authenticated
    /// author). Returns the sender's addresses (for the DHT), or why the
    /// heartbeat was refused.
    pub(crate) fn on_heartbeat(
        &mut self,
        source: PeerId,
        hb: Heartbeat,
        now: Instant,
    ) -> Result<Vec<Multiaddr>, HeartbeatRefused> {
        let peer = PeerId::from_bytes(&hb.peer).map_err(HeartbeatRefused::BadPeerId)?;
        if peer != source {
            return Err(HeartbeatRefused::Forged { peer: Box::new(peer), signer: Box::new(source) });
        }
        if peer == self.me {
            return Err(HeartbeatRefused::Own);
        }
        if hb.leaving {
            // Its last heartbeat: dead now, not after the failure timeout.
            if let Some(e) = self.members.get_mut(&peer).filter(|e| e.member.alive && hb.seq > e.seq) {
                e.member.alive = false;
                e.seq = hb.seq;
                e.left = true;
                self.emit(MembershipEvent::Died(peer));
            }
            return Ok(Vec::new());
        }
        let addrs: Vec<Multiaddr> = hb.addrs.iter().filter_map(|a| Multiaddr::try_from(a.clone()).ok()).collect();
        let member = Member {
            peer,
            addrs: addrs.clone(),
            resources: hb.resources,
            queue_len: hb.queue_len,
            store_bytes: hb.store_bytes,
            store_capacity: hb.store_capacity,
            fn_hash: hb.fn_hash,
            alive: true,
            is_self: false,
            last_heartbeat_age: Duration::ZERO,
        };
        let event = match self.members.get_mut(&peer) {
            // Stale or duplicate. A peer that went silent revives with any
            // heartbeat (a restarted one may count from anywhere); one that
            // left only with a newer one (a heartbeat sent before its leave
            // may arrive after it; sequence numbers start from the sender's
            // clock, so a restarted sender's are newer).
            Some(e) if (e.member.alive || e.left) && hb.seq <= e.seq => return Ok(addrs),
            Some(e) => {
                let was_alive = e.member.alive;
                *e = Entry { member, seen: now, seq: hb.seq, left: false };
                (!was_alive).then_some(MembershipEvent::Revived(peer))
            }
            None => {
                self.members.insert(peer, Entry { member, seen: now, seq: hb.seq, left: false });
                Some(MembershipEvent::Joined(peer))
            }
        };
        if let Some(ev) = event {
            self.emit(ev);
        }
        Ok(addrs)
    }

    /// Marks peers silent for the failure timeout as dead.
    pub(crate) fn tick(&mut self, now: Instant) {
        let timeout = self.timeout;
        let died: Vec<PeerId> = self
            .members
            .values_mut()
            .filter(|e| e.member.alive && now.saturating_duration_since(e.seen) >= timeout)
            .map(|e| {
                e.member.alive = false;
                e.member.peer
            })
            .collect();
        for p in died {
            self.emit(MembershipEvent::Died(p));
        }
    }

    /// Live peers (not the local node).
    #[cfg(test)]
    pub(crate) fn live_peers(&self) -> impl Iterator<Item = &Member> {
        self.members.values().map(|e| &e.member).filter(|m| m.alive)
    }

    /// The table, the local node first.
    pub(crate) fn snapshot(&self, me: Member, now: Instant) -> Vec<Member> {
        let mut out = vec![me];
        let mut rest: Vec<Member> = self
            .members
            .values()
            .map(|e| Member { last_heartbeat_age: now.saturating_duration_since(e.seen), ..e.member.clone() })
            .collect();
        rest.sort_by_key(|m| m.peer.to_bytes());
        out.extend(rest);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hb(peer: PeerId, seq: u64) -> Heartbeat {
        Heartbeat { peer: peer.to_bytes(), seq, ..Default::default() }
    }

    /// A table (5 s failure timeout) with a subscriber, and a peer.
    fn table() -> (Membership, crossbeam_channel::Receiver<MembershipEvent>, PeerId, Instant) {
        let mut m = Membership::new(PeerId::random(), Duration::from_secs(5));
        let (tx, rx) = crossbeam_channel::unbounded();
        m.subscribe(tx);
        (m, rx, PeerId::random(), Instant::now())
    }

    #[test]
    fn join_die_revive_once_each() {
        let (mut m, rx, p, t0) = table();
        m.on_heartbeat(p, hb(p, 1), t0).unwrap();
        m.on_heartbeat(p, hb(p, 1), t0).unwrap(); // duplicate
        m.on_heartbeat(p, hb(p, 2), t0 + Duration::from_secs(1)).unwrap();
        m.tick(t0 + Duration::from_secs(3));
        assert_eq!(m.live_peers().count(), 1);
        m.tick(t0 + Duration::from_secs(6));
        m.tick(t0 + Duration::from_secs(7));
        assert_eq!(m.live_peers().count(), 0);
        m.on_heartbeat(p, hb(p, 1), t0 + Duration::from_secs(8)).unwrap(); // restarted: seq reset
        let events: Vec<_> = rx.try_iter().collect();
        assert_eq!(events, vec![MembershipEvent::Joined(p), MembershipEvent::Died(p), MembershipEvent::Revived(p)]);
    }

    #[test]
    fn a_leaving_heartbeat_kills_at_once_and_stale_ones_do_not_revive() {
        let (mut m, rx, p, t0) = table();
        m.on_heartbeat(p, hb(p, 10), t0).unwrap();
        let leave = Heartbeat { leaving: true, ..hb(p, 12) };
        m.on_heartbeat(p, leave.clone(), t0).unwrap();
        assert_eq!(m.live_peers().count(), 0, "dead before any failure timeout");
        m.on_heartbeat(p, hb(p, 11), t0).unwrap(); // sent before the leave, arrived after
        m.on_heartbeat(p, leave, t0).unwrap(); // duplicate
        assert_eq!(m.live_peers().count(), 0);
        // An unknown peer's leave is ignored; a restart (newer seq) revives.
        let q = PeerId::random();
        m.on_heartbeat(q, Heartbeat { leaving: true, ..hb(q, 1) }, t0).unwrap();
        m.on_heartbeat(p, hb(p, 20), t0).unwrap();
        let events: Vec<_> = rx.try_iter().collect();
        assert_eq!(events, vec![MembershipEvent::Joined(p), MembershipEvent::Died(p), MembershipEvent::Revived(p)]);
    }

    #[test]
    fn forged_and_own_heartbeats_are_refused() {
        let me = PeerId::random();
        let p = PeerId::random();
        let mut m = Membership::new(me, Duration::from_secs(5));
        assert!(m.on_heartbeat(PeerId::random(), hb(p, 1), Instant::now()).is_err());
        assert!(m.on_heartbeat(me, hb(me, 1), Instant::now()).is_err());
        let mut bad = hb(p, 1);
        bad.peer = vec![1, 2, 3];
        assert!(m.on_heartbeat(p, bad, Instant::now()).is_err());
        assert_eq!(m.snapshot(m_self(me), Instant::now()).len(), 1);
    }

    fn m_self(me: PeerId) -> Member {
        Member {
            peer: me,
            addrs: vec![],
            resources: vec![],
            queue_len: 0,
            store_bytes: 0,
            store_capacity: 0,
            fn_hash: 0,
            alive: true,
            is_self: true,
            last_heartbeat_age: Duration::ZERO,
        }
    }
}
