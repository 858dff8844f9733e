//! The event loop's side of the heartbeat topic: what it makes of each
//! gossip message and subscription. Every peer that can connect can
//! publish and subscribe, so each of these is bounded.
//!
//! - **Validation before forwarding.** gossipsub forwards nothing by itself
//!   (`validate_messages`, see `behaviour`): each message is checked here
//!   and reported `Accept` (forwarded), `Ignore` (dropped, nobody blamed)
//!   or `Reject` (dropped, and counted against the peer that relayed it by
//!   gossipsub's scoring), as [`verdict`] decides from what the member
//!   table made of it. `Reject` is only for what no honest member sends or
//!   relays (bytes that do not decode as a beat, a heartbeat naming a peer
//!   other than its signer); a stale, duplicate, unwanted (member table
//!   full) or own heartbeat, or an alive beat from a peer never heard, is
//!   `Ignore`d: not relayed, so a made-up member beyond the table's cap goes
//!   no further than the first node.
//! - **Subscriptions.** gossipsub raises `Subscribed` for every SUBSCRIBE a
//!   peer sends, even when it is subscribed already; only a peer's first
//!   (since it connected, or since it unsubscribed) counts
//!   ([`Subscriptions`]). It asks for this node's full heartbeat (and,
//!   from a peer that is not a live member, for every member's); the beat
//!   goes out at once at most once per heartbeat period
//!   ([`Subscriptions::may_beat`]), else at the next period.
//! - **Logging.** A refused beat is a WARN line for the first from each
//!   relay (the rule of the object and mail servers:
//!   `Rejections::warn_first`), `debug!` for the rest.
//! - **The view.** A beat that changes no membership (no join, death or
//!   return) marks the published member table stale instead of copying it
//!   at once; the loop publishes it at the next announcement tick (every
//!   100 ms) or heartbeat. A join, death or return is published at once.
//!
//! Invariants: every gossip message gets exactly one validation report;
//! the subscribed set holds connected peers only (bounded by the connection
//! limits); subscriptions make at most one beat per period outside the
//! timer.

use super::EventLoop;
use crate::cluster::membership::{AliveBeat, HeartbeatRefused};
use crate::wire::{self, Beat};
use libp2p::gossipsub::{self, MessageAcceptance};
use libp2p::PeerId;
use std::collections::HashSet;
use std::time::{Duration, Instant};

/// The peers subscribed to the heartbeat topic, and when a subscription
/// last made this node beat outside its period (see the module docs).
#[derive(Debug, Default)]
pub(super) struct Subscriptions {
    peers: HashSet<PeerId>,
    /// The current heartbeat period (set each tick, the first at start).
    period: Duration,
    extra_beat: Option<Instant>,
}

impl Subscriptions {
    /// The heartbeat period is `period`.
    pub(super) fn set_period(&mut self, period: Duration) {
        self.period = period;
    }

    /// `peer` subscribed: true if it was not subscribed already.
    pub(super) fn subscribed(&mut self, peer: PeerId) -> bool {
        self.peers.insert(peer)
    }

    /// `peer` unsubscribed or disconnected.
    pub(super) fn gone(&mut self, peer: &PeerId) {
        self.peers.remove(peer);
    }

    /// Whether a subscription may make this node beat now: at most once
    /// per heartbeat period (recorded if so).
    pub(super) fn may_beat(&mut self, now: Instant) -> bool {
        if self.extra_beat.is_some_and(|at| now.saturating_duration_since(at) < self.period) {
            return false;
        }
        self.extra_beat = Some(now);
        true
    }
}

/// What the member table made of a beat, for [`verdict`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Outcome {
    /// Applied: new state, a join, a return or a leave.
    Applied,
    /// Changed nothing, and may be honest (stale, duplicate, own, table
    /// full, an alive beat from a peer never heard).
    Unwanted,
    /// No honest member sends or relays it (malformed, forged).
    Invalid,
}

/// The validation report for a beat (see the module docs).
pub(super) fn verdict(o: Outcome) -> MessageAcceptance {
    match o {
        Outcome::Applied => MessageAcceptance::Accept,
        Outcome::Unwanted => MessageAcceptance::Ignore,
        Outcome::Invalid => MessageAcceptance::Reject,
    }
}

impl EventLoop {
    pub(super) fn on_gossip(&mut self, e: gossipsub::Event) {
        match e {
            gossipsub::Event::Message { propagation_source, message_id, message } => {
                let outcome = self.on_beat(propagation_source, message);
                let gossip = &mut self.swarm.behaviour_mut().gossip;
                gossip.report_message_validation_result(&message_id, &propagation_source, verdict(outcome));
            }
            gossipsub::Event::Subscribed { peer_id, .. } => self.on_subscribed(peer_id),
            gossipsub::Event::Unsubscribed { peer_id, .. } => self.subs.gone(&peer_id),
            _ => {}
        }
    }

    /// A peer subscribed to the heartbeat topic (see the module docs).
    fn on_subscribed(&mut self, peer: PeerId) {
        // (A subscription that arrives after its connection closed is not
        // recorded: the peer's next connection subscribes afresh.)
        if !self.swarm.is_connected(&peer) || !self.subs.subscribed(peer) {
            tracing::trace!(%peer, "repeated heartbeat subscription ignored");
            return;
        }
        // A node new to us (or an observer, which never publishes) needs
        // every member's state: ask them all for it.
        if !self.members.is_alive(&peer) {
            self.beats.want_full();
        }
        self.beats.peer_wants_full();
        if self.subs.may_beat(Instant::now()) {
            self.publish_heartbeat();
        }
    }

    /// A message on the heartbeat topic, relayed by `relay`.
    fn on_beat(&mut self, relay: PeerId, message: gossipsub::Message) -> Outcome {
        // (Strict validation: gossipsub delivers only signed messages.)
        let Some(source) = message.source else { return Outcome::Invalid };
        let hb = match wire::decode_beat(&message.data) {
            Ok(Beat::Full(hb)) => hb,
            Ok(Beat::Alive(seq)) => return self.on_alive(source, seq),
            Err(err) => {
                self.refused(relay, source, "malformed heartbeat dropped", &err);
                return Outcome::Invalid;
            }
        };
        let (leaving, wants) = (hb.leaving, hb.want_full);
        match self.members.on_heartbeat(source, hb, Instant::now()) {
            Ok(Some(addrs)) => {
                if wants {
                    self.beats.peer_wants_full();
                }
                for a in addrs {
                    self.learn(source, a);
                }
                self.members_changed();
                if leaving {
                    // Closing tells the leaving node its goodbye arrived,
                    // so it can stop (see `leave`).
                    let _ = self.swarm.disconnect_peer_id(source);
                }
                Outcome::Applied
            }
            Ok(None) | Err(HeartbeatRefused::Own) => Outcome::Unwanted,
            Err(err) => {
                self.refused(relay, source, "heartbeat refused", &err);
                match err.is_forged() {
                    true => Outcome::Invalid,
                    false => Outcome::Unwanted,
                }
            }
        }
    }

    /// An alive beat from `source` (see `beats` and `Membership::on_alive`).
    fn on_alive(&mut self, source: PeerId, seq: u64) -> Outcome {
        match self.members.on_alive(source, seq, Instant::now()) {
            Ok(AliveBeat::Applied) => {
                self.members_changed();
                Outcome::Applied
            }
            // We lack its state (it is new to us, or we declared it dead
            // and it is back): ask for full heartbeats. Relayed only for a
            // peer the table holds (others may still hold it live); one
            // never heard here goes no further.
            Ok(AliveBeat::NotLive) => {
                self.beats.want_full();
                match self.members.knows(&source) {
                    true => Outcome::Applied,
                    false => Outcome::Unwanted,
                }
            }
            Ok(AliveBeat::Stale) | Err(_) => Outcome::Unwanted,
        }
    }

    /// Logs a refused beat: WARN for the first from `relay`, then `debug!`.
    fn refused(&self, relay: PeerId, source: PeerId, what: &str, error: &dyn std::fmt::Display) {
        if self.rejections.warn_first(relay) {
            tracing::warn!(%relay, %source, %error, "{what} (later ones from this peer: debug)");
        } else {
            tracing::debug!(%relay, %source, %error, "{what}");
        }
    }

    /// A beat changed the member table: a join, death or return is
    /// published at once, anything else at the next [`flush_view`].
    ///
    /// [`flush_view`]: EventLoop::flush_view
    fn members_changed(&mut self) {
        if self.changes.is_empty() {
            self.view_stale = true;
        } else {
            self.share_members();
        }
    }

    /// Publishes the member table if a beat changed it since the last time.
    pub(super) fn flush_view(&mut self) {
        if self.view_stale {
            self.share_members();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_first_subscription_counts_and_extra_beats_are_rate_limited() {
        let mut s = Subscriptions::default();
        s.set_period(Duration::from_secs(1));
        let (p, q) = (PeerId::random(), PeerId::random());
        let t0 = Instant::now();
        assert!(s.subscribed(p));
        let repeats = (0..10_000).filter(|_| s.subscribed(p)).count();
        assert_eq!(repeats, 0, "a repeated SUBSCRIBE is not a new subscription");
        assert!(s.may_beat(t0));
        // Another peer's first subscription within the period: no beat now.
        assert!(s.subscribed(q));
        assert!(!s.may_beat(t0 + Duration::from_millis(999)));
        assert!(s.may_beat(t0 + Duration::from_secs(1)));
        // Gone (unsubscribed or disconnected), then back: counts again.
        s.gone(&p);
        assert!(s.subscribed(p));
        // Beats over 10 s of subscriptions every millisecond: one per period.
        let beats = (1..=10_000).filter(|i| s.may_beat(t0 + Duration::from_millis(1000 + i))).count();
        assert_eq!(beats, 10);
    }

    #[test]
    fn only_invalid_beats_are_rejected_and_only_applied_ones_relayed() {
        assert_eq!(verdict(Outcome::Applied), MessageAcceptance::Accept);
        assert_eq!(verdict(Outcome::Unwanted), MessageAcceptance::Ignore);
        assert_eq!(verdict(Outcome::Invalid), MessageAcceptance::Reject);
        let p = PeerId::random();
        let forged = HeartbeatRefused::Forged { peer: Box::new(p), signer: Box::new(PeerId::random()) };
        assert!(forged.is_forged());
        assert!(!HeartbeatRefused::TableFull.is_forged());
        assert!(!HeartbeatRefused::Own.is_forged());
    }
}
