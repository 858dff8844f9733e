//! Which beat a member publishes each heartbeat period: its full
//! [`Heartbeat`], or an alive beat (its sequence number only, see
//! `wire::beat`), which costs about a third fewer bytes per copy sent
//! (~165 instead of ~230 in the scale bench; the rest is gossipsub's signed
//! envelope: source, sequence number, signature, topic, framing). At rest a
//! member's state does not change, so almost every beat is an alive beat
//! (p2p/SCALING.md).
//!
//! A beat is full when any of these holds, else it is an alive beat:
//! - some live member does not read alive beats (an older node), or this
//!   node is leaving;
//! - the state differs from the last full heartbeat sent (everything but
//!   `seq` and `want_full`: addresses, resources, queue, store, functions,
//!   peers reported down, metrics);
//! - [`FULL_EVERY`] beats have gone by since the last full one (a full
//!   heartbeat a peer missed is made good within that many periods);
//! - a peer asked for it ([`BeatPlan::peer_wants_full`]: a heartbeat with
//!   `want_full`, or a new gossip subscription);
//! - this node wants others' full heartbeats ([`BeatPlan::want_full`]: it
//!   heard an alive beat from a peer whose state it does not hold, which
//!   happens when a node joins, or when a partition heals and both sides
//!   had declared the other dead); the full beat then carries `want_full`,
//!   so every member answers with a full heartbeat at its next beat.
//!
//! Invariants: the first beat is full, and so is the beat after a full one
//! that could not be published; a full beat clears every pending request;
//! `want_full` is set only in a full beat. A peer that keeps asking
//! (maliciously or not) costs at most one full heartbeat per period from
//! each member, what every beat cost before alive beats.

use crate::wire::{Beat, Heartbeat};

/// At most this many beats in a row are alive beats: every
/// `FULL_EVERY`-th beat is full even at rest.
pub(crate) const FULL_EVERY: u32 = 10;

/// The choice between full and alive beats (owned by the event loop).
#[derive(Debug, Default)]
pub(crate) struct BeatPlan {
    /// The last full heartbeat sent, `seq` and `want_full` cleared.
    last_full: Option<Heartbeat>,
    /// Alive beats sent since it.
    alive_since: u32,
    /// A peer asked for a full heartbeat.
    asked: bool,
    /// This node wants the others' full heartbeats.
    wants: bool,
}

impl BeatPlan {
    /// A peer asked for this node's full heartbeat: the next beat is full.
    pub(crate) fn peer_wants_full(&mut self) {
        self.asked = true;
    }

    /// This node wants every member's full heartbeat: the next beat is
    /// full and asks for them.
    pub(crate) fn want_full(&mut self) {
        self.wants = true;
    }

    /// `beat` (from [`BeatPlan::next`]) could not be published (gossipsub
    /// had no peer for it yet): if it was full, the next beat is full again
    /// (asking again if it asked), as nobody got this state.
    pub(crate) fn not_sent(&mut self, beat: &Beat) {
        if let Beat::Full(hb) = beat {
            self.last_full = None;
            self.wants |= hb.want_full;
        }
    }

    /// The beat to publish for state `hb` (its `want_full` is set here);
    /// `peers_read_alive`: every live member reads alive beats.
    pub(crate) fn next(&mut self, mut hb: Heartbeat, peers_read_alive: bool) -> Beat {
        let state = Heartbeat { seq: 0, want_full: false, ..hb.clone() };
        let full = !peers_read_alive
            || hb.leaving
            || self.asked
            || self.wants
            || self.alive_since + 1 >= FULL_EVERY
            || self.last_full.as_ref() != Some(&state);
        tracing::trace!(
            full,
            older_peers = !peers_read_alive,
            asked = self.asked,
            wants = self.wants,
            changed = self.last_full.as_ref() != Some(&state),
            "beat"
        );
        if !full {
            self.alive_since += 1;
            return Beat::Alive(hb.seq);
        }
        hb.want_full = self.wants;
        self.last_full = Some(state);
        self.alive_since = 0;
        self.asked = false;
        self.wants = false;
        Beat::Full(hb)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(seq: u64, queue_len: u64) -> Heartbeat {
        Heartbeat { seq, queue_len, fn_hash: 7, alive_beats: true, ..Default::default() }
    }

    fn kinds(plan: &mut BeatPlan, beats: impl IntoIterator<Item = (Heartbeat, bool)>) -> String {
        beats
            .into_iter()
            .map(|(hb, ok)| match plan.next(hb, ok) {
                Beat::Full(h) if h.want_full => 'W',
                Beat::Full(_) => 'F',
                Beat::Alive(_) => '.',
            })
            .collect()
    }

    #[test]
    fn at_rest_one_full_beat_in_full_every() {
        let mut plan = BeatPlan::default();
        let got = kinds(&mut plan, (1..=25).map(|s| (state(s, 0), true)));
        assert_eq!(got, "F.........F.........F....");
        assert_eq!(FULL_EVERY, 10);
    }

    #[test]
    fn a_change_is_sent_at_once_and_the_seq_alone_is_no_change() {
        let mut plan = BeatPlan::default();
        assert_eq!(plan.next(state(1, 0), true), Beat::Full(state(1, 0)));
        assert_eq!(plan.next(state(2, 0), true), Beat::Alive(2));
        assert_eq!(plan.next(state(3, 4), true), Beat::Full(state(3, 4)));
        assert_eq!(plan.next(state(4, 4), true), Beat::Alive(4));
        let leaving = Heartbeat { leaving: true, ..state(5, 4) };
        assert_eq!(plan.next(leaving.clone(), true), Beat::Full(leaving));
    }

    #[test]
    fn an_older_member_gets_full_beats_only() {
        let mut plan = BeatPlan::default();
        let got = kinds(&mut plan, (1..=6).map(|s| (state(s, 0), s <= 2 || s > 4)));
        assert_eq!(got, "F.FF..");
    }

    #[test]
    fn requests_give_one_full_beat_each() {
        let mut plan = BeatPlan::default();
        let mut got = kinds(&mut plan, [(state(1, 0), true), (state(2, 0), true)]);
        plan.peer_wants_full();
        got += &kinds(&mut plan, [(state(3, 0), true), (state(4, 0), true)]);
        plan.want_full();
        plan.want_full();
        got += &kinds(&mut plan, [(state(5, 0), true), (state(6, 0), true)]);
        // Both at once: one full beat that also asks.
        plan.want_full();
        plan.peer_wants_full();
        got += &kinds(&mut plan, [(state(7, 0), true), (state(8, 0), true)]);
        assert_eq!(got, "F.F.W.W.");
    }

    #[test]
    fn a_full_beat_not_sent_is_sent_again() {
        let mut plan = BeatPlan::default();
        plan.want_full();
        let first = plan.next(state(1, 0), true);
        plan.not_sent(&first);
        assert!(matches!(plan.next(state(2, 0), true), Beat::Full(h) if h.want_full), "again, and asking again");
        let alive = plan.next(state(3, 0), true);
        assert_eq!(alive, Beat::Alive(3));
        plan.not_sent(&alive);
        assert_eq!(plan.next(state(4, 0), true), Beat::Alive(4), "an alive beat is not owed");
    }

    #[test]
    fn want_full_is_no_state_change() {
        let mut plan = BeatPlan::default();
        plan.want_full();
        assert!(matches!(plan.next(state(1, 0), true), Beat::Full(h) if h.want_full));
        // The caller's own `want_full` is ignored too: only the plan sets it.
        let asked = Heartbeat { want_full: true, ..state(2, 0) };
        assert_eq!(plan.next(asked, true), Beat::Alive(2));
    }
}
