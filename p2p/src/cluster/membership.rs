//! The member table built from gossip heartbeats.
//!
//! Every node publishes a [`Heartbeat`] each period; this table keeps the
//! latest one per peer and when it arrived. A peer's [`Health`]:
//! - *live*: heard within the last two heartbeat periods;
//! - *unreachable* (suspected): alive, but silent for more than two periods
//!   (at most half the failure timeout) — cut off from this node, or dead
//!   and not yet past the failure timeout. Nothing is done about it yet;
//! - *dead*: silent for the failure timeout (or it said it was leaving).
//!   Its work is placed elsewhere. It stays in the table, so its return (a
//!   healed partition, or a restart) is reported as `Revived`;
//! - *partitioned*: this node hears it, but other live members report it
//!   unreachable or recently dead in their heartbeats ([`Heartbeat::down`]):
//!   the cluster is split around it.
//!
//! Each node reports, in its own heartbeat, the peers it finds unreachable
//! and those it declared dead within [`DOWN_REPORT_FOR`] (at most
//! [`MAX_DOWN`], newest verdicts first), so an observer (`manta status`)
//! sees partitions between other nodes and deaths from before it joined.
//!
//! Between full heartbeats a peer may send *alive beats* (`wire::Beat::Alive`:
//! a sequence number and nothing else, signed by gossipsub like every
//! message). [`Membership::on_alive`] applies one only to a peer that is in
//! the table and alive, and only with a sequence number above the last one
//! seen from it: it keeps a live member live (and clears a suspicion) with
//! the state of its last full heartbeat, and can neither add a peer, nor
//! revive a dead or departed one (only a newer full heartbeat does), nor
//! speak for any peer but its signer.
//!
//! What one heartbeat may put in the table, and how many peers the table
//! holds, are bounded (see `bounds`): at most `MAX_MEMBERS` peers, live
//! ones never evicted for newcomers, gone ones forgotten after
//! `FORGET_GONE_AFTER`; a refused newcomer is `HeartbeatRefused::TableFull`.
//!
//! Invariants: the local node is never in the table (it is added to
//! snapshots from live data); each transition (joined, died, revived) is
//! reported exactly once to every subscriber and logged once, as is each
//! change between live and unreachable; heartbeats with a sequence number
//! not above the last one seen from a live peer are stale and ignored.

use crate::wire::{Heartbeat, Resource, MAX_DOWN};
use bounds::{cap_reports, kept_addrs, kept_resources};
use crossbeam_channel::Sender;
use libp2p::identity::ParseError;
use libp2p::{Multiaddr, PeerId};
use std::collections::HashMap;
use std::time::{Duration, Instant};

mod bounds;

pub use bounds::{FORGET_GONE_AFTER, MAX_MEMBERS, MAX_MEMBER_ADDRS, MAX_MEMBER_ADDR_BYTES};

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
    /// Time since its last heartbeat (zero for the local node;
    /// `Duration::MAX` for a peer this node never heard, known only from
    /// other members' reports).
    pub last_heartbeat_age: Duration,
    /// True while it is alive but has been silent for more than two
    /// heartbeat periods: unreachable from this node, not yet declared dead.
    pub suspect: bool,
    /// Live members whose last heartbeat reports this peer unreachable or
    /// recently dead (see the module docs of `membership`).
    pub reported_down_by: Vec<PeerId>,
    /// Tasks running on it (from its last heartbeat).
    pub tasks_running: u64,
    /// Tasks it finished with a value since it started.
    pub tasks_done: u64,
    /// Tasks it finished with an error since it started.
    pub tasks_failed: u64,
    /// Objects in its store's memory.
    pub store_objects: u64,
}

/// How a member stands, as this node sees it (see [`Member::health`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Health {
    /// Heard recently, and no live member reports it down.
    Live,
    /// Heard recently here, but some live members report it unreachable or
    /// dead: the cluster is split around it.
    Partitioned,
    /// Silent here for more than two heartbeat periods, not yet for the
    /// failure timeout: a partition, or a death not yet declared.
    Unreachable,
    /// Declared dead (silent for the failure timeout, or it left).
    Dead,
}

impl Member {
    /// This member's [`Health`].
    pub fn health(&self) -> Health {
        match (self.alive, self.suspect, self.reported_down_by.is_empty()) {
            (false, ..) => Health::Dead,
            (true, true, _) => Health::Unreachable,
            (true, false, false) => Health::Partitioned,
            (true, false, true) => Health::Live,
        }
    }
}

/// How long a node keeps reporting a peer it declared dead in its own
/// heartbeats.
pub const DOWN_REPORT_FOR: Duration = Duration::from_secs(300);

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
    /// When it was declared dead (silent), if it is.
    died: Option<Instant>,
    /// When it stopped being alive (declared dead, or left), if it did.
    gone: Option<Instant>,
    /// Peers its last heartbeat reports down.
    down: Vec<PeerId>,
    /// Its last full heartbeat said it reads alive beats.
    alive_beats: bool,
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
    /// From a peer new to the table, which is full of live members
    /// (`bounds::MAX_MEMBERS`).
    #[error("member table full ({} live members)", MAX_MEMBERS)]
    TableFull,
}

impl HeartbeatRefused {
    /// Whether no honest member sends or relays such a heartbeat (it names
    /// a peer that did not sign it, or no peer): its relay is at fault.
    /// Otherwise the heartbeat may be honest and was only not wanted here.
    pub(crate) fn is_forged(&self) -> bool {
        matches!(self, HeartbeatRefused::BadPeerId(_) | HeartbeatRefused::Forged { .. })
    }
}

/// What an alive beat did (see [`Membership::on_alive`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AliveBeat {
    /// It kept a live member live.
    Applied,
    /// Its sequence number was not above the last seen: ignored.
    Stale,
    /// From a peer this table does not hold as live (never heard, dead, or
    /// left): ignored; its full heartbeat is needed.
    NotLive,
}

/// The table (owned by the event loop).
pub(crate) struct Membership {
    me: PeerId,
    timeout: Duration,
    /// Silence after which a live peer counts as unreachable.
    suspect_after: Duration,
    members: HashMap<PeerId, Entry>,
    subs: Vec<Sender<MembershipEvent>>,
}

impl Membership {
    /// The table of node `me`, whose peers heartbeat every `heartbeat` and
    /// are dead after `timeout` of silence.
    pub(crate) fn new(me: PeerId, heartbeat: Duration, timeout: Duration) -> Membership {
        let mut m =
            Membership { me, timeout, suspect_after: Duration::ZERO, members: HashMap::new(), subs: Vec::new() };
        m.set_timing(heartbeat, timeout);
        m
    }

    pub(crate) fn subscribe(&mut self, tx: Sender<MembershipEvent>) {
        self.subs.push(tx);
    }

    fn emit(&mut self, ev: MembershipEvent) {
        let (change, peer) = match &ev {
            MembershipEvent::Joined(p) => ("joined", p),
            MembershipEvent::Died(p) => ("died", p),
            MembershipEvent::Revived(p) => ("revived", p),
        };
        tracing::debug!(%peer, change, "membership change");
        self.subs.retain(|s| s.send(ev.clone()).is_ok());
    }

    /// Applies a heartbeat sent by `source` (gossipsub's authenticated
    /// author). Returns the sender's addresses (for the DHT; those the
    /// table keeps, see `bounds`) if it applied, `None` if it changed
    /// nothing (stale, or the leave of a peer not live here), or why the
    /// heartbeat was refused.
    pub(crate) fn on_heartbeat(
        &mut self,
        source: PeerId,
        hb: Heartbeat,
        now: Instant,
    ) -> Result<Option<Vec<Multiaddr>>, HeartbeatRefused> {
        // Heartbeats of this version leave out the sender (gossipsub's
        // signed source names it); one that names it must name the signer.
        let peer = match hb.peer.is_empty() {
            true => source,
            false => PeerId::from_bytes(&hb.peer).map_err(HeartbeatRefused::BadPeerId)?,
        };
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
                e.member.suspect = false;
                e.seq = hb.seq;
                e.left = true;
                e.gone = Some(now);
                e.down.clear();
                tracing::info!(%peer, "peer left the cluster");
                self.emit(MembershipEvent::Died(peer));
                return Ok(Some(Vec::new()));
            }
            return Ok(None);
        }
        let addrs = kept_addrs(&hb.addrs);
        let member = Member {
            peer,
            addrs: addrs.clone(),
            resources: kept_resources(hb.resources),
            queue_len: hb.queue_len,
            store_bytes: hb.store_bytes,
            store_capacity: hb.store_capacity,
            fn_hash: hb.fn_hash,
            alive: true,
            is_self: false,
            last_heartbeat_age: Duration::ZERO,
            suspect: false,
            reported_down_by: Vec::new(),
            tasks_running: hb.tasks_running,
            tasks_done: hb.tasks_done,
            tasks_failed: hb.tasks_failed,
            store_objects: hb.store_objects,
        };
        let down: Vec<PeerId> = hb.down.iter().filter_map(|b| PeerId::from_bytes(b).ok()).take(MAX_DOWN).collect();
        let alive_beats = hb.alive_beats;
        let event = match self.members.get_mut(&peer) {
            // Stale or duplicate: only a newer heartbeat counts, also to
            // revive a peer that went silent or left. Sequence numbers start
            // from the sender's clock, so a restarted sender's are newer; a
            // heartbeat sent before a leave may arrive after it; and an old
            // signed heartbeat replayed by a member (once gossipsub's
            // duplicate cache forgot it) must not bring a dead peer back.
            Some(e) if hb.seq <= e.seq => return Ok(None),
            Some(e) => {
                let (was_alive, was_suspect, died) = (e.member.alive, e.member.suspect, e.died);
                let silent = now.saturating_duration_since(e.seen);
                *e = Entry { member, seen: now, seq: hb.seq, left: false, died: None, gone: None, down, alive_beats };
                if was_suspect {
                    tracing::info!(%peer, silent_s = silent.as_secs_f64(), "peer reachable again");
                }
                if !was_alive {
                    let dead_s = died.map(|d| now.saturating_duration_since(d).as_secs_f64());
                    tracing::warn!(%peer, ?dead_s, "peer declared dead is back (a partition healed, or it restarted)");
                }
                (!was_alive).then_some(MembershipEvent::Revived(peer))
            }
            None => {
                if !self.make_room() {
                    return Err(HeartbeatRefused::TableFull);
                }
                let entry =
                    Entry { member, seen: now, seq: hb.seq, left: false, died: None, gone: None, down, alive_beats };
                self.members.insert(peer, entry);
                Some(MembershipEvent::Joined(peer))
            }
        };
        if let Some(ev) = event {
            self.emit(ev);
        }
        Ok(Some(addrs))
    }

    /// Applies an alive beat with sequence number `seq` signed by `source`
    /// (see the module docs): a live member's last heartbeat is now, with
    /// its state unchanged.
    pub(crate) fn on_alive(&mut self, source: PeerId, seq: u64, now: Instant) -> Result<AliveBeat, HeartbeatRefused> {
        if source == self.me {
            return Err(HeartbeatRefused::Own);
        }
        let Some(e) = self.members.get_mut(&source) else { return Ok(AliveBeat::NotLive) };
        if seq <= e.seq {
            return Ok(AliveBeat::Stale);
        }
        if !e.member.alive {
            // Dead or left: only a full heartbeat (newer, signed by it)
            // brings it back, with its state.
            return Ok(AliveBeat::NotLive);
        }
        if e.member.suspect {
            let silent = now.saturating_duration_since(e.seen);
            tracing::info!(peer = %source, silent_s = silent.as_secs_f64(), "peer reachable again");
            e.member.suspect = false;
        }
        e.seen = now;
        e.seq = seq;
        Ok(AliveBeat::Applied)
    }

    /// Sets the heartbeat period and failure timeout (an adaptive heartbeat
    /// changes them with the cluster's size).
    pub(crate) fn set_timing(&mut self, heartbeat: Duration, timeout: Duration) {
        self.timeout = timeout;
        self.suspect_after = (heartbeat * 2).min(timeout / 2);
    }

    /// How many peers are live members.
    pub(crate) fn live_count(&self) -> usize {
        self.members.values().filter(|e| e.member.alive).count()
    }

    /// Whether every live member reads alive beats (its last heartbeat
    /// said so), so that this node may send them.
    pub(crate) fn all_read_alive_beats(&self) -> bool {
        self.members.values().filter(|e| e.member.alive).all(|e| e.alive_beats)
    }

    /// Marks peers silent for more than two heartbeat periods as
    /// unreachable, and those silent for the failure timeout as dead;
    /// forgets those gone for `FORGET_GONE_AFTER`.
    pub(crate) fn tick(&mut self, now: Instant) {
        self.forget_gone(now);
        let (timeout, suspect_after) = (self.timeout, self.suspect_after);
        let mut died = Vec::new();
        for e in self.members.values_mut().filter(|e| e.member.alive) {
            let peer = e.member.peer;
            let silent = now.saturating_duration_since(e.seen);
            if silent >= timeout {
                e.member.alive = false;
                e.member.suspect = false;
                e.died = Some(now);
                e.gone = Some(now);
                e.down.clear();
                tracing::warn!(%peer, silent_s = silent.as_secs_f64(), "peer declared dead: no heartbeat for the failure timeout");
                died.push(peer);
            } else if silent > suspect_after && !e.member.suspect {
                e.member.suspect = true;
                tracing::warn!(
                    %peer,
                    silent_s = silent.as_secs_f64(),
                    dead_after_s = timeout.as_secs_f64(),
                    "peer unreachable: heartbeats missed"
                );
            }
        }
        for p in died {
            self.emit(MembershipEvent::Died(p));
        }
    }

    /// The peers this node reports down in its heartbeat: unreachable ones,
    /// then those declared dead within [`DOWN_REPORT_FOR`], newest verdict
    /// first, at most [`MAX_DOWN`].
    pub(crate) fn down_report(&self, now: Instant) -> Vec<PeerId> {
        let mut dead: Vec<(Instant, PeerId)> = self
            .members
            .values()
            .filter_map(|e| {
                e.died.filter(|d| now.saturating_duration_since(*d) < DOWN_REPORT_FOR).map(|d| (d, e.member.peer))
            })
            .collect();
        dead.sort_by_key(|d| std::cmp::Reverse(d.0));
        let unreachable = self.members.values().filter(|e| e.member.alive && e.member.suspect).map(|e| e.member.peer);
        unreachable.chain(dead.into_iter().map(|(_, p)| p)).take(MAX_DOWN).collect()
    }

    /// Whether `peer` is a live member (not the local node).
    pub(crate) fn is_alive(&self, peer: &PeerId) -> bool {
        self.members.get(peer).is_some_and(|e| e.member.alive)
    }

    /// Whether the table holds `peer` (live or gone).
    pub(crate) fn knows(&self, peer: &PeerId) -> bool {
        self.members.contains_key(peer)
    }

    /// Live peers (not the local node).
    #[cfg(test)]
    pub(crate) fn live_peers(&self) -> impl Iterator<Item = &Member> {
        self.members.values().map(|e| &e.member).filter(|m| m.alive)
    }

    /// The table, the local node first; then every peer heard from, and
    /// the peers only reported down by live members (never heard here:
    /// dead, no addresses, `last_heartbeat_age` of `Duration::MAX`; at most
    /// `bounds::MAX_REPORTED_ONLY`, the most reported first).
    pub(crate) fn snapshot(&self, me: Member, now: Instant) -> Vec<Member> {
        let mut reports: HashMap<PeerId, Vec<PeerId>> = HashMap::new();
        for e in self.members.values().filter(|e| e.member.alive) {
            for p in &e.down {
                reports.entry(*p).or_default().push(e.member.peer);
            }
        }
        let mut rest: Vec<Member> = self
            .members
            .values()
            .map(|e| Member {
                last_heartbeat_age: now.saturating_duration_since(e.seen),
                reported_down_by: reports.remove(&e.member.peer).unwrap_or_default(),
                ..e.member.clone()
            })
            .collect();
        let me_reported = reports.remove(&self.me).unwrap_or_default();
        rest.extend(cap_reports(reports).into_iter().map(|(peer, by)| Member {
            peer,
            addrs: Vec::new(),
            resources: Vec::new(),
            queue_len: 0,
            store_bytes: 0,
            store_capacity: 0,
            fn_hash: 0,
            alive: false,
            is_self: false,
            last_heartbeat_age: Duration::MAX,
            suspect: false,
            reported_down_by: by,
            tasks_running: 0,
            tasks_done: 0,
            tasks_failed: 0,
            store_objects: 0,
        }));
        rest.sort_by_key(|m| m.peer.to_bytes());
        let mut out = vec![Member { reported_down_by: me_reported, ..me }];
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
        let mut m = Membership::new(PeerId::random(), Duration::from_secs(1), Duration::from_secs(5));
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
        // An old heartbeat replayed (by any member: it is signed) does not
        // revive it; a newer one (it came back, or restarted: seqs start
        // from the clock) does.
        m.on_heartbeat(p, hb(p, 1), t0 + Duration::from_secs(8)).unwrap();
        assert_eq!(m.live_peers().count(), 0, "a replayed heartbeat revived a dead peer");
        m.on_heartbeat(p, hb(p, 3), t0 + Duration::from_secs(9)).unwrap();
        assert_eq!(m.live_peers().count(), 1);
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
        let mut m = Membership::new(me, Duration::from_secs(1), Duration::from_secs(5));
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
            suspect: false,
            reported_down_by: vec![],
            tasks_running: 0,
            tasks_done: 0,
            tasks_failed: 0,
            store_objects: 0,
        }
    }

    fn health_of(m: &Membership, p: PeerId, now: Instant) -> Option<Health> {
        m.snapshot(m_self(m.me), now).into_iter().find(|x| x.peer == p).map(|x| x.health())
    }

    #[test]
    fn silence_makes_a_peer_unreachable_then_dead_and_a_heartbeat_brings_it_back() {
        let (mut m, rx, p, t0) = table();
        m.on_heartbeat(p, hb(p, 1), t0).unwrap();
        m.tick(t0 + Duration::from_millis(1500));
        assert_eq!(health_of(&m, p, t0), Some(Health::Live));
        m.tick(t0 + Duration::from_millis(2500));
        assert_eq!(health_of(&m, p, t0), Some(Health::Unreachable));
        assert_eq!(m.down_report(t0), vec![p], "reported while unreachable");
        m.on_heartbeat(p, hb(p, 2), t0 + Duration::from_secs(3)).unwrap();
        assert_eq!(health_of(&m, p, t0), Some(Health::Live));
        assert!(m.down_report(t0).is_empty());
        m.tick(t0 + Duration::from_secs(9));
        assert_eq!(health_of(&m, p, t0), Some(Health::Dead));
        assert_eq!(m.down_report(t0 + Duration::from_secs(9)), vec![p], "reported while recently dead");
        assert!(m.down_report(t0 + Duration::from_secs(9) + DOWN_REPORT_FOR).is_empty(), "not forever");
        let events: Vec<_> = rx.try_iter().collect();
        assert_eq!(events, vec![MembershipEvent::Joined(p), MembershipEvent::Died(p)], "unreachable is no event");
    }

    #[test]
    fn alive_beats_keep_a_live_member_live_and_nothing_more() {
        let (mut m, rx, p, t0) = table();
        let s = Duration::from_secs;
        // Unknown: ignored, its full heartbeat is needed.
        assert_eq!(m.on_alive(p, 5, t0).unwrap(), AliveBeat::NotLive);
        assert_eq!(m.live_peers().count(), 0, "an alive beat added a peer");
        let full = Heartbeat { fn_hash: 9, queue_len: 3, alive_beats: true, ..hb(p, 10) };
        m.on_heartbeat(p, full, t0).unwrap();
        // Alive beats every second for 20 s: never unreachable, never dead,
        // state kept from the full heartbeat.
        for i in 1..=20 {
            assert_eq!(m.on_alive(p, 10 + i, t0 + s(i)).unwrap(), AliveBeat::Applied);
            m.tick(t0 + s(i) + Duration::from_millis(900));
        }
        assert_eq!(health_of(&m, p, t0 + s(20)), Some(Health::Live));
        let snap = m.snapshot(m_self(m.me), t0 + s(20));
        assert_eq!((snap[1].fn_hash, snap[1].queue_len, snap[1].last_heartbeat_age), (9, 3, Duration::ZERO));
        // A replayed (or duplicated) alive beat does nothing.
        assert_eq!(m.on_alive(p, 30, t0 + s(21)).unwrap(), AliveBeat::Stale);
        assert_eq!(m.on_alive(p, 12, t0 + s(21)).unwrap(), AliveBeat::Stale);
        // ... nor does a full heartbeat older than the alive beats seen.
        m.on_heartbeat(p, Heartbeat { queue_len: 99, ..hb(p, 25) }, t0 + s(21)).unwrap();
        assert_eq!(m.live_peers().next().map(|x| x.queue_len), Some(3));
        // Unreachable, then an alive beat: reachable again.
        m.tick(t0 + s(23));
        assert_eq!(health_of(&m, p, t0 + s(23)), Some(Health::Unreachable));
        assert_eq!(m.on_alive(p, 31, t0 + s(23)).unwrap(), AliveBeat::Applied);
        assert_eq!(health_of(&m, p, t0 + s(23)), Some(Health::Live));
        // Dead: a newer alive beat does not revive it (and is not recorded,
        // so its newer full heartbeat still does).
        m.tick(t0 + s(29));
        assert_eq!(m.on_alive(p, 40, t0 + s(30)).unwrap(), AliveBeat::NotLive);
        assert_eq!(m.live_peers().count(), 0, "an alive beat revived a dead peer");
        m.on_heartbeat(p, hb(p, 35), t0 + s(30)).unwrap();
        assert_eq!(m.live_peers().count(), 1);
        // Left: never revived by an alive beat either.
        m.on_heartbeat(p, Heartbeat { leaving: true, ..hb(p, 36) }, t0 + s(31)).unwrap();
        assert_eq!(m.on_alive(p, 37, t0 + s(31)).unwrap(), AliveBeat::NotLive);
        assert_eq!(m.live_peers().count(), 0);
        let events: Vec<_> = rx.try_iter().collect();
        assert_eq!(
            events,
            vec![
                MembershipEvent::Joined(p),
                MembershipEvent::Died(p),
                MembershipEvent::Revived(p),
                MembershipEvent::Died(p)
            ]
        );
    }

    #[test]
    fn an_alive_beat_speaks_only_for_its_signer() {
        let (mut m, _rx, p, t0) = table();
        let other = PeerId::random();
        m.on_heartbeat(p, hb(p, 1), t0).unwrap();
        // Another member's alive beat (signed by it) refreshes nobody but
        // itself: `p` still dies on time.
        m.on_heartbeat(other, hb(other, 1), t0).unwrap();
        for i in 1..=6 {
            m.on_alive(other, 1 + i, t0 + Duration::from_secs(i)).unwrap();
        }
        m.tick(t0 + Duration::from_secs(6));
        assert_eq!(m.live_peers().map(|x| x.peer).collect::<Vec<_>>(), vec![other]);
        assert!(m.on_alive(m.me, 100, t0).is_err(), "own beat");
    }

    #[test]
    fn alive_beats_are_sent_only_if_every_live_member_reads_them() {
        let (mut m, _rx, p, t0) = table();
        assert!(m.all_read_alive_beats(), "nobody to send to");
        m.on_heartbeat(p, Heartbeat { alive_beats: true, ..hb(p, 1) }, t0).unwrap();
        assert!(m.all_read_alive_beats());
        let old = PeerId::random();
        m.on_heartbeat(old, hb(old, 1), t0).unwrap();
        assert!(!m.all_read_alive_beats(), "an older member is live");
        // It upgraded (restart: newer seq).
        m.on_heartbeat(old, Heartbeat { alive_beats: true, ..hb(old, 2) }, t0).unwrap();
        assert!(m.all_read_alive_beats());
        // An older member that died no longer counts.
        let gone = PeerId::random();
        m.on_heartbeat(gone, hb(gone, 1), t0).unwrap();
        assert!(!m.all_read_alive_beats());
        m.on_alive(p, 2, t0 + Duration::from_secs(4)).unwrap();
        m.on_alive(old, 3, t0 + Duration::from_secs(4)).unwrap();
        m.tick(t0 + Duration::from_secs(5));
        assert!(m.all_read_alive_beats());
    }

    #[test]
    fn reports_of_others_show_partitions_and_deaths_from_before() {
        let (mut m, _rx, a, t0) = table();
        let (b, gone) = (PeerId::random(), PeerId::random());
        m.on_heartbeat(b, hb(b, 1), t0).unwrap();
        // `a` cannot hear `b`, and saw `gone` die before we joined.
        let report = Heartbeat { down: vec![b.to_bytes(), gone.to_bytes()], ..hb(a, 1) };
        m.on_heartbeat(a, report, t0).unwrap();
        assert_eq!(health_of(&m, b, t0), Some(Health::Partitioned));
        assert_eq!(health_of(&m, a, t0), Some(Health::Live));
        let snap = m.snapshot(m_self(m.me), t0);
        let g = snap.iter().find(|x| x.peer == gone).unwrap();
        assert_eq!(
            (g.health(), g.reported_down_by.clone(), g.last_heartbeat_age),
            (Health::Dead, vec![a], Duration::MAX)
        );
        // `a` hears `b` again: no more partition.
        m.on_heartbeat(a, hb(a, 2), t0).unwrap();
        assert_eq!(health_of(&m, b, t0), Some(Health::Live));
    }
}
