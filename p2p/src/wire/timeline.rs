//! A page of a node's timeline as it travels to a peer collecting the
//! cluster's trace ([`Page`], the content of `Response::Timeline`): a plain
//! CBOR value, decoded like `plain`'s values ([`decode_page`]: size cap
//! before parsing, nesting capped, no trailing bytes) and then validated
//! (at most [`MAX_PAGE_EVENTS`] events and [`MAX_THREADS`] threads, texts
//! of at most [`MAX_TEXT_BYTES`], at most [`MAX_INPUTS`] inputs per event,
//! finite CPUs).
//!
//! A node answers with the events that ended at or before the reading of
//! its timeline clock the first page carried, most recent first, in pages
//! that fit the response cap; the collector stops after
//! [`MAX_COLLECTED_EVENTS`]. Longer texts and input lists are cut when a
//! page is made (`from_event`), so every page the server builds passes
//! validation.

use super::envelope::{WireError, MAX_DEPTH, MAX_RESPONSE_BYTES};
use super::plain::decode_capped;
use manta::{ObjectId, StoreOp, TimelineEvent, TimelineOutcome, TransferDirection, TransferLane};
use serde::{Deserialize, Serialize};
use serde_bytes::ByteArray;
use std::sync::Arc;

/// Most events one page holds.
pub const MAX_PAGE_EVENTS: usize = 8192;

/// Most threads one page names.
pub const MAX_THREADS: usize = 4096;

/// Longest text (a task's name, an actor's, a method's, a peer's id).
pub const MAX_TEXT_BYTES: usize = 512;

/// Most inputs one event lists (more are cut).
pub const MAX_INPUTS: usize = 64;

/// Cap on an encoded page: the response cap less room for the envelope.
pub const MAX_PAGE_BYTES: usize = MAX_RESPONSE_BYTES - (64 << 10);

/// Most events a collector takes from one node: the most recent ones.
pub const MAX_COLLECTED_EVENTS: usize = 200_000;

/// What kind of event a [`WireEvent`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Kind {
    /// A task (`name`: its name).
    Task,
    /// An actor call (`actor`, `name`: the method).
    Call,
    /// A spill, restore or rebuild.
    Store(u8),
    /// A transfer (`name`: the peer); `out`, `lane` 0 small, 1 chunks, 2
    /// bulk.
    Transfer {
        /// Out (served) rather than in (fetched).
        out: bool,
        /// How it travelled.
        lane: u8,
    },
    /// A task sent to another node (`name`: the peer; `times[1]`: when).
    Submit,
}

/// One event on the wire (the fields a kind does not use are 0 or empty).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WireEvent {
    /// What it is.
    pub kind: Kind,
    /// The object (task or call result, object stored or moved).
    pub id: ByteArray<16>,
    /// Task name, method, or peer.
    pub name: String,
    /// The actor's name (calls).
    pub actor: String,
    /// The thread's id on its node.
    pub thread: u32,
    /// Submitted, start, end (ns on the node's timeline clock).
    pub times: [u64; 3],
    /// Outcome: 0 done, 1 failed, 2 cancelled.
    pub outcome: u8,
    /// CPUs held (tasks).
    pub cpus: f64,
    /// Attempts (tasks).
    pub attempts: u32,
    /// Bytes (store operations, transfers).
    pub bytes: u64,
    /// Objects read (tasks, calls).
    pub inputs: Vec<ByteArray<16>>,
}

/// A page of a node's timeline (see the module docs).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Page {
    /// The node's timeline clock when it answered (ns).
    pub clock: u64,
    /// Events that ended by the cut, in all (this page holds some).
    pub total: u64,
    /// `(id, name)` of the node's threads.
    pub threads: Vec<(u32, String)>,
    /// Events, most recent end first.
    pub events: Vec<WireEvent>,
}

fn cut(s: &str) -> String {
    let mut end = s.len().min(MAX_TEXT_BYTES);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}

fn outcome_code(o: TimelineOutcome) -> u8 {
    match o {
        TimelineOutcome::Done => 0,
        TimelineOutcome::Failed => 1,
        TimelineOutcome::Cancelled => 2,
    }
}

fn outcome_of(code: u8) -> TimelineOutcome {
    match code {
        0 => TimelineOutcome::Done,
        1 => TimelineOutcome::Failed,
        _ => TimelineOutcome::Cancelled,
    }
}

fn ids(inputs: &[ObjectId]) -> Vec<ByteArray<16>> {
    inputs.iter().take(MAX_INPUTS).map(|i| ByteArray::new(i.to_bytes())).collect()
}

/// The end of an event (what pages are ordered by).
pub(crate) fn end_of(e: &TimelineEvent) -> u64 {
    match e {
        TimelineEvent::Task { end, .. }
        | TimelineEvent::Call { end, .. }
        | TimelineEvent::Store { end, .. }
        | TimelineEvent::Transfer { end, .. } => *end,
        TimelineEvent::Submit { at, .. } => *at,
    }
}

/// An event as it travels (texts and inputs cut to the caps).
pub(crate) fn from_event(e: &TimelineEvent) -> WireEvent {
    let blank = |kind, id: ObjectId, thread| WireEvent {
        kind,
        id: ByteArray::new(id.to_bytes()),
        name: String::new(),
        actor: String::new(),
        thread,
        times: [0; 3],
        outcome: 0,
        cpus: 0.0,
        attempts: 0,
        bytes: 0,
        inputs: Vec::new(),
    };
    match e {
        TimelineEvent::Task { id, name, submitted, thread, start, end, outcome, cpus, attempts, inputs } => WireEvent {
            name: cut(&name.to_string()),
            times: [*submitted, *start, *end],
            outcome: outcome_code(*outcome),
            cpus: if cpus.is_finite() { *cpus } else { 0.0 },
            attempts: *attempts,
            inputs: ids(inputs),
            ..blank(Kind::Task, *id, *thread)
        },
        TimelineEvent::Call { actor, method, id, submitted, thread, start, end, outcome, inputs } => WireEvent {
            name: cut(&method.to_string()),
            actor: cut(actor),
            times: [*submitted, *start, *end],
            outcome: outcome_code(*outcome),
            inputs: ids(inputs),
            ..blank(Kind::Call, *id, *thread)
        },
        TimelineEvent::Store { op, id, bytes, thread, start, end } => {
            let op = match op {
                StoreOp::Spill => 0,
                StoreOp::Restore => 1,
                StoreOp::Rebuild => 2,
            };
            WireEvent { times: [*start, *start, *end], bytes: *bytes as u64, ..blank(Kind::Store(op), *id, *thread) }
        }
        TimelineEvent::Transfer { id, bytes, peer, direction, lane, thread, start, end } => {
            let lane = match lane {
                TransferLane::Small => 0,
                TransferLane::Chunks => 1,
                TransferLane::Bulk => 2,
            };
            let kind = Kind::Transfer { out: *direction == TransferDirection::Out, lane };
            WireEvent { name: cut(peer), times: [*start, *start, *end], bytes: *bytes, ..blank(kind, *id, *thread) }
        }
        TimelineEvent::Submit { id, peer, thread, at } => {
            WireEvent { name: cut(peer), times: [*at, *at, *at], ..blank(Kind::Submit, *id, *thread) }
        }
    }
}

/// An event back in the core's form.
pub(crate) fn into_event(w: WireEvent) -> TimelineEvent {
    let id = ObjectId::from_bytes(w.id.into_array());
    let [submitted, start, end] = w.times;
    let inputs = || w.inputs.iter().map(|i| ObjectId::from_bytes(i.into_array())).collect::<Box<[_]>>();
    match w.kind {
        Kind::Task => TimelineEvent::Task {
            id,
            name: manta::TimelineLabel::Owned(Arc::from(w.name.as_str())),
            submitted,
            thread: w.thread,
            start,
            end,
            outcome: outcome_of(w.outcome),
            cpus: w.cpus,
            attempts: w.attempts,
            inputs: inputs(),
        },
        Kind::Call => TimelineEvent::Call {
            actor: Arc::from(w.actor.as_str()),
            method: manta::TimelineLabel::Owned(Arc::from(w.name.as_str())),
            id,
            submitted,
            thread: w.thread,
            start,
            end,
            outcome: outcome_of(w.outcome),
            inputs: inputs(),
        },
        Kind::Store(op) => TimelineEvent::Store {
            op: match op {
                0 => StoreOp::Spill,
                1 => StoreOp::Restore,
                _ => StoreOp::Rebuild,
            },
            id,
            bytes: usize::try_from(w.bytes).unwrap_or(usize::MAX),
            thread: w.thread,
            start,
            end,
        },
        Kind::Transfer { out, lane } => TimelineEvent::Transfer {
            id,
            bytes: w.bytes,
            peer: Arc::from(w.name.as_str()),
            direction: if out { TransferDirection::Out } else { TransferDirection::In },
            lane: match lane {
                0 => TransferLane::Small,
                1 => TransferLane::Chunks,
                _ => TransferLane::Bulk,
            },
            thread: w.thread,
            start,
            end,
        },
        Kind::Submit => TimelineEvent::Submit { id, peer: Arc::from(w.name.as_str()), thread: w.thread, at: start },
    }
}

/// An upper bound on an event's encoded size (for filling a page).
pub(crate) fn size_bound(w: &WireEvent) -> usize {
    256 + w.name.len() + w.actor.len() + w.inputs.len() * 18
}

impl Page {
    /// Checks the caps of the module docs.
    pub fn validate(&self) -> Result<(), WireError> {
        let bad = |what: String| Err(WireError::Malformed(what));
        if self.events.len() > MAX_PAGE_EVENTS {
            return bad(format!("a timeline page of {} events", self.events.len()));
        }
        if self.threads.len() > MAX_THREADS {
            return bad(format!("a timeline page naming {} threads", self.threads.len()));
        }
        if self.threads.iter().any(|(_, n)| n.len() > MAX_TEXT_BYTES) {
            return bad("a thread name over the cap".into());
        }
        for e in &self.events {
            if e.name.len() > MAX_TEXT_BYTES || e.actor.len() > MAX_TEXT_BYTES {
                return bad("an event's text over the cap".into());
            }
            if e.inputs.len() > MAX_INPUTS {
                return bad(format!("an event with {} inputs", e.inputs.len()));
            }
            if !e.cpus.is_finite() || e.cpus < 0.0 {
                return bad(format!("an event holding {} CPUs", e.cpus));
            }
        }
        Ok(())
    }
}

/// Encodes a page (does not validate).
pub fn encode_page(page: &Page) -> Vec<u8> {
    let mut out = Vec::new();
    // Writing into a Vec cannot fail.
    let _ = ciborium::into_writer(page, &mut out);
    out
}

/// Decodes a page from a peer: cap [`MAX_PAGE_BYTES`], depth, no trailing
/// bytes, then [`Page::validate`].
pub fn decode_page(bytes: &[u8]) -> Result<Page, WireError> {
    let page: Page = decode_capped(bytes, MAX_PAGE_BYTES, MAX_DEPTH)?;
    page.validate()?;
    Ok(page)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_round_trip_and_bad_ones_are_refused() {
        let e = WireEvent {
            kind: Kind::Transfer { out: true, lane: 2 },
            id: ByteArray::new([3; 16]),
            name: "peer".into(),
            actor: String::new(),
            thread: 4,
            times: [1, 2, 3],
            outcome: 0,
            cpus: 1.0,
            attempts: 1,
            bytes: 9,
            inputs: vec![ByteArray::new([1; 16])],
        };
        let page = Page { clock: 7, total: 1, threads: vec![(4, "w".into())], events: vec![e.clone()] };
        let bytes = encode_page(&page);
        assert_eq!(decode_page(&bytes), Ok(page.clone()));
        assert!(
            size_bound(&e) >= encode_page(&Page { events: vec![e.clone()], threads: vec![], ..page.clone() }).len()
        );
        for n in 0..bytes.len() {
            assert!(decode_page(&bytes[..n]).is_err());
        }
        let long =
            Page { events: vec![WireEvent { name: "x".repeat(MAX_TEXT_BYTES + 1), ..e.clone() }], ..page.clone() };
        assert!(decode_page(&encode_page(&long)).is_err());
        let nan = Page { events: vec![WireEvent { cpus: f64::NAN, ..e }], ..page };
        assert!(decode_page(&encode_page(&nan)).is_err());
        assert!(matches!(decode_page(&vec![0x40; MAX_PAGE_BYTES + 1]), Err(WireError::TooLarge { .. })));
    }

    #[test]
    fn events_convert_both_ways() {
        let e = TimelineEvent::Transfer {
            id: ObjectId::from_bytes([5; 16]),
            bytes: 10,
            peer: Arc::from("p"),
            direction: TransferDirection::In,
            lane: TransferLane::Chunks,
            thread: 2,
            start: 5,
            end: 8,
        };
        assert_eq!(into_event(from_event(&e)), e);
    }
}
