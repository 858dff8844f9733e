//! Mail that must not overtake mail sent earlier to other peers.
//!
//! Mail to one peer is applied in the order sent, but mail to different
//! peers travels on different streams. A `Borrow` this node sent to an
//! object's owner `C` could then reach `C` after a `Release` that a later
//! message of ours made another node send to `C`, and `C` would free an
//! object we still rely on. So the two messages that let their receiver
//! free something wait, in order, until everything queued before them for
//! other peers has been applied (acknowledged) or given up:
//! - a `Release` (the receiver may drop its last pin);
//! - a task's or call's `Done` (its submitter then drops the argument refs
//!   it kept, and releases what it borrowed for them): the borrows this
//!   node made while decoding the arguments go first.
//!
//! A node with nothing in flight to other peers sends them at once; this
//! costs at most one round trip otherwise.
//!
//! Invariants: fenced mail is queued for its peer in the order it was
//! fenced (it is handed to the outboxes under this queue's lock, which
//! only the outboxes' own locks nest in); the queue is drained on every
//! ack, every undeliverable batch, a peer's death and every tick.

use super::Work;
use crate::sync::lock_unpoisoned;
use crate::transport::outbox::Marks;
use crate::wire::mail::Mail;
use libp2p::PeerId;
use std::collections::VecDeque;
use std::sync::Mutex;

/// Mail waiting for earlier mail to other peers.
#[derive(Default)]
pub(super) struct Fenced(Mutex<VecDeque<(Marks, PeerId, Mail)>>);

impl Fenced {
    /// Nothing waits.
    pub(super) fn is_empty(&self) -> bool {
        lock_unpoisoned(&self.0).is_empty()
    }
}

impl Work {
    /// Sends `m` to `peer` once everything queued before it for other
    /// peers has been applied (module docs).
    pub(super) fn send_fenced(&self, peer: PeerId, m: Mail) {
        let marks = self.boxes.mark(peer);
        {
            let mut q = lock_unpoisoned(&self.fenced.0);
            if q.is_empty() && marks.passed() {
                self.send(peer, m);
                return;
            }
            q.push_back((marks, peer, m));
        }
        // (An ack may have come between the mark and the queueing.)
        self.send_unfenced();
    }

    /// Sends the fenced mail whose marks have passed, in order.
    pub(super) fn send_unfenced(&self) {
        let mut q = lock_unpoisoned(&self.fenced.0);
        while q.front().is_some_and(|(marks, _, _)| marks.passed()) {
            if let Some((_, peer, m)) = q.pop_front() {
                self.send(peer, m);
            }
        }
    }
}
