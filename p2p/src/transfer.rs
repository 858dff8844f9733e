//! Client side of object transfer: one state machine per fetched object.
//!
//! A transfer tries holders in order: the ref's owner hint first, then the
//! providers Kademlia returns for the object's id. One *attempt* pulls the
//! object's CBOR encoding from one holder in chunks (`Request::Fetch` with an
//! offset), keeping up to `window` chunks requested-or-undecoded at a time,
//! and feeds them in order to a decoder running on a blocking thread, which
//! decodes straight into the replica: memory beyond the replica is bounded by
//! `window * chunk` bytes whatever the object's size. If the holder fails
//! (an error reply, a timeout, a closed connection, bytes that do not
//! decode) the attempt ends and the next holder is tried from the start (a
//! replica's encoding need not be byte-identical to the owner's). With no
//! holder left the object fails with `PeerUnreachable` if any holder could
//! not be reached, else `ObjectLost`.
//!
//! Invariants: the `Fetch` is owned either by the transfer (between
//! attempts) or by the attempt's decoder thread, never both, and is
//! completed exactly once; responses of an ended attempt are recognised by
//! their attempt number and dropped.

use crate::event_loop::Command;
use crate::wire::{Request, Response};
use libp2p::request_response::OutboundRequestId;
use libp2p::PeerId;
use manta::{Error, Fetch, ObjectId};
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use tokio::sync::mpsc::UnboundedSender;

/// What the decoder thread reads: chunks in order, or why the attempt ended.
type Feed = crossbeam_channel::Sender<Result<Vec<u8>, String>>;

/// One object being fetched.
pub(crate) struct Transfer {
    pub id: ObjectId,
    pub fetch: Option<Fetch>,
    pub candidates: VecDeque<PeerId>,
    pub tried: HashSet<PeerId>,
    /// The DHT was asked (`Some(true)` while the query runs).
    pub dht: Option<bool>,
    pub attempt: Option<Attempt>,
    pub attempt_no: u64,
    pub unreachable: Vec<String>,
    pub refused: Vec<String>,
}

/// One pull from one holder.
pub(crate) struct Attempt {
    pub peer: PeerId,
    feed: Option<Feed>,
    total: Option<u64>,
    next: u64,
    fed: u64,
    inflight: usize,
    queued: usize,
    pending: BTreeMap<u64, Vec<u8>>,
}

/// What the loop must do after a transfer step.
pub(crate) enum Step {
    /// Send these chunk requests to the attempt's peer.
    Request(PeerId, Vec<Request>),
    /// Nothing now.
    Wait,
}

impl Transfer {
    pub fn new(fetch: Fetch, hint: Option<PeerId>) -> Transfer {
        let mut candidates = VecDeque::new();
        candidates.extend(hint);
        Transfer {
            id: fetch.id(),
            fetch: Some(fetch),
            candidates,
            tried: HashSet::new(),
            dht: None,
            attempt: None,
            attempt_no: 0,
            unreachable: Vec::new(),
            refused: Vec::new(),
        }
    }

    /// Idle: no attempt running and the fetch is back with us.
    pub fn idle(&self) -> bool {
        self.attempt.is_none() && self.fetch.is_some()
    }

    /// Adds holders found in the DHT.
    pub fn add_candidates(&mut self, peers: impl IntoIterator<Item = PeerId>) {
        for p in peers {
            if !self.tried.contains(&p) && !self.candidates.contains(&p) {
                self.candidates.push_back(p);
            }
        }
    }

    /// Starts an attempt on the next candidate, handing the fetch to a
    /// decoder thread. `None` if there is no candidate.
    pub fn begin(&mut self, key: u64, chunk: usize, loop_tx: &UnboundedSender<Command>) -> Option<Step> {
        let peer = self.candidates.pop_front()?;
        let fetch = self.fetch.take()?;
        self.tried.insert(peer);
        self.attempt_no += 1;
        let (tx, rx) = crossbeam_channel::unbounded();
        let attempt_no = self.attempt_no;
        let done_tx = loop_tx.clone();
        let consumed_tx = loop_tx.clone();
        tokio::task::spawn_blocking(move || {
            let mut reader = FeedReader { rx, buf: Vec::new(), pos: 0, key, attempt_no, tx: consumed_tx };
            match fetch.decode(&mut reader) {
                Ok(decoded) => {
                    fetch.complete(Ok(decoded));
                    let _ = done_tx.send(Command::AttemptDone { key, attempt_no, fetch: None, error: None });
                }
                Err(e) => {
                    let _ = done_tx.send(Command::AttemptDone { key, attempt_no, fetch: Some(fetch), error: Some(e) });
                }
            }
        });
        let mut a = Attempt {
            peer,
            feed: Some(tx),
            total: None,
            next: 0,
            fed: 0,
            inflight: 0,
            queued: 0,
            pending: BTreeMap::new(),
        };
        let first = a.request(self.id, chunk);
        self.attempt = Some(a);
        Some(Step::Request(peer, vec![first]))
    }

    /// Ends the running attempt (its decoder sees `reason` as a read error
    /// and hands the fetch back with `AttemptDone`).
    pub fn abort(&mut self, reason: String, unreachable: bool) {
        if let Some(a) = self.attempt.as_mut() {
            let msg = format!("{}: {reason}", a.peer);
            if let Some(feed) = a.feed.take() {
                let _ = feed.send(Err(msg.clone()));
            }
            if unreachable {
                self.unreachable.push(msg);
            } else {
                self.refused.push(msg);
            }
        }
    }

    /// A reply to chunk request at `offset` of the current attempt.
    pub fn on_response(&mut self, offset: u64, resp: Response, window: usize, chunk: usize) -> Step {
        let id = self.id;
        let Some(a) = self.attempt.as_mut() else { return Step::Wait };
        a.inflight = a.inflight.saturating_sub(1);
        match resp {
            Response::Chunk { total, offset: got, data } => {
                let bad = got != offset
                    || a.total.is_some_and(|t| t != total)
                    || got.saturating_add(data.len() as u64) > total
                    || (data.is_empty() && got < total);
                if bad {
                    self.abort("sent a chunk that does not fit the object".into(), false);
                    return Step::Wait;
                }
                a.total = Some(total);
                a.pending.insert(got, data);
                a.feed_in_order();
                let peer = a.peer;
                let more = a.more(id, window, chunk);
                if more.is_empty() {
                    Step::Wait
                } else {
                    Step::Request(peer, more)
                }
            }
            Response::NotFound => {
                self.abort("does not hold the object".into(), false);
                Step::Wait
            }
            Response::Failed { message } => {
                self.abort(format!("failed to serve it: {message}"), false);
                Step::Wait
            }
            Response::Invalid { reason } => {
                self.abort(format!("refused our request: {reason}"), false);
                Step::Wait
            }
            Response::Busy => {
                self.abort("busy".into(), true);
                Step::Wait
            }
        }
    }

    /// The decoder took one chunk: room for another request.
    pub fn on_consumed(&mut self, window: usize, chunk: usize) -> Step {
        let id = self.id;
        let Some(a) = self.attempt.as_mut() else { return Step::Wait };
        a.queued = a.queued.saturating_sub(1);
        let peer = a.peer;
        let more = a.more(id, window, chunk);
        if more.is_empty() {
            Step::Wait
        } else {
            Step::Request(peer, more)
        }
    }

    /// The final error once no holder is left.
    pub fn final_error(&self) -> Error {
        if !self.unreachable.is_empty() {
            let mut all = self.unreachable.clone();
            all.extend(self.refused.iter().cloned());
            Error::PeerUnreachable { id: self.id, reason: all.join("; ").into() }
        } else if self.refused.is_empty() {
            Error::ObjectLost {
                id: self.id,
                reason: "no node holds it (owner unknown and no provider in the DHT)".into(),
            }
        } else {
            Error::ObjectLost {
                id: self.id,
                reason: format!("no holder could serve it: {}", self.refused.join("; ")).into(),
            }
        }
    }
}

impl Attempt {
    fn request(&mut self, id: ObjectId, chunk: usize) -> Request {
        let offset = self.next;
        self.next += chunk as u64;
        self.inflight += 1;
        Request::Fetch { id: id.to_bytes(), offset, len: chunk as u32 }
    }

    /// Requests to send now: keep `window` chunks requested or undecoded.
    fn more(&mut self, id: ObjectId, window: usize, chunk: usize) -> Vec<Request> {
        let mut out = Vec::new();
        let Some(total) = self.total else { return out };
        while self.next < total && self.inflight + self.queued + self.pending.len() < window {
            out.push(self.request(id, chunk));
        }
        out
    }

    fn feed_in_order(&mut self) {
        while let Some(data) = self.pending.remove(&self.fed) {
            self.fed += data.len() as u64;
            self.queued += 1;
            if let Some(feed) = &self.feed {
                let _ = feed.send(Ok(data));
            }
        }
        if Some(self.fed) == self.total {
            self.feed = None; // end of input for the decoder
        }
    }
}

/// Reads the chunks of one attempt, in order, on the decoder thread; tells
/// the loop after each chunk so it can request more.
struct FeedReader {
    rx: crossbeam_channel::Receiver<Result<Vec<u8>, String>>,
    buf: Vec<u8>,
    pos: usize,
    key: u64,
    attempt_no: u64,
    tx: UnboundedSender<Command>,
}

impl std::io::Read for FeedReader {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        while self.pos == self.buf.len() {
            match self.rx.recv() {
                Ok(Ok(data)) => {
                    self.buf = data;
                    self.pos = 0;
                    let _ = self.tx.send(Command::Consumed { key: self.key, attempt_no: self.attempt_no });
                }
                Ok(Err(reason)) => return Err(std::io::Error::other(reason)),
                Err(_) => return Ok(0), // every byte was fed
            }
        }
        let n = out.len().min(self.buf.len() - self.pos);
        out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// The request ids of chunk requests in flight: which transfer, attempt and
/// offset each belongs to.
pub(crate) type Inflight = HashMap<OutboundRequestId, (u64, u64, u64)>;
