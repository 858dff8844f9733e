//! The outbox's direct path onto a message lane: the thread that queues
//! mail (a caller submitting a task, a runtime worker sending a `Done`)
//! writes the batch on the lane itself, instead of waking the sender task
//! to do it (a thread hand-off on every remote round trip, at each end).
//!
//! The sender task opens the path ([`Direct::lane`]) only while its own
//! connection is the lane and nothing is in flight (no hold either), for
//! one batch: the lone request whose round trip the path is for; a burst
//! queues up behind it and goes in batches. It closes the path whenever
//! it takes a batch off the queue, recovers, or the outbox closes. A
//! thread sends directly only with the queue lock held and the queue
//! empty, for a batch that is small (at most `LANE_BATCH_BYTES` of
//! messages) and no fence; it takes the
//! batch's seq from the outbox's counter, writes it under the lane's
//! writer lock, and leaves it in [`Direct::sent`] for the sender task,
//! which puts it in flight (`Sending::absorb`) before anything else it does
//! (matching an ack, a timeout, its own next batch, a recovery). So every
//! batch is in flight in the order it was written, whoever wrote it, and
//! acks, timeouts, fences, dedupe and recovery work as for the sender's
//! own batches. The sender is not woken by a direct send (a wake-up per
//! round trip, competing for the CPU the peer's answer needs): the batch's
//! ack wakes it, and while the path is open it looks at least once per
//! request timeout, so a batch whose ack is lost is written again within
//! two.
//!
//! Lock order: the queue, then [`Direct`], then the lane's writer.

use super::*;

/// The direct path's state (in the outbox, locked after its queue).
#[derive(Default)]
pub(super) struct Direct {
    /// The lane, while direct sends are open.
    lane: Option<Arc<lane::Conn>>,
    /// Batches that may still be sent directly (window slots).
    room: usize,
    /// Batches sent directly, oldest first, not yet in flight.
    sent: Vec<InFlight>,
}

impl Direct {
    /// True while direct sends are open.
    pub(super) fn is_open(&self) -> bool {
        self.lane.is_some()
    }

    /// No more direct sends until the sender reopens the path.
    pub(super) fn close(&mut self) {
        self.lane = None;
        self.room = 0;
    }
}

/// Closes `ob`'s direct path.
pub(super) fn close(ob: &Outbox) {
    lock_unpoisoned(&ob.direct).close();
}

/// Sends `ms` to `peer` on the lane from this thread if the path is open,
/// the queue (`q`, held by the caller) is empty, and they make a small
/// batch that is not a fence: `None` then; otherwise hands them back to be
/// queued.
pub(super) fn try_send(
    ob: &Outbox,
    q: &VecDeque<Mail>,
    ms: impl IntoIterator<Item = Mail>,
    peer: PeerId,
    link: &LinkState,
) -> Option<Vec<Mail>> {
    let mail: Vec<Mail> = ms.into_iter().collect();
    if !q.is_empty() || mail.is_empty() {
        return Some(mail);
    }
    let mut d = lock_unpoisoned(&ob.direct);
    let Some(lane) = d.lane.clone().filter(|l| !l.is_down()) else { return Some(mail) };
    let small = mail.len() <= MAIL_PER_BATCH && mail.iter().map(mail_size).sum::<usize>() <= LANE_BATCH_BYTES;
    if d.room == 0 || !small || is_fence(&mail) {
        return Some(mail);
    }
    probe_mail(&mail, Stage::TaskTaken, Stage::DoneTaken);
    let seq = ob.next_seq.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let riders = link.take_held(peer, MAX_BATCH_MAIL - 2 - mail.len());
    let (bytes, mail) = encode_seq_batch(seq, riders, mail);
    // A failed write poisons the lane: its watcher tells the sender, which
    // writes everything in flight (this batch too) again on a stream.
    let written = lane.send_mail(&bytes);
    probe_mail(&mail, Stage::TaskWritten, Stage::DoneWritten);
    lock_unpoisoned(&ob.counts).0 += mail.len() as u64;
    d.room -= 1;
    d.sent.push(InFlight { seq, mail, bytes, fence: false, sent: Instant::now() });
    if written.is_err() {
        d.close();
    }
    None
}

impl Sending {
    /// Puts the batches sent directly in flight, in the order written.
    pub(super) fn absorb(&mut self, ob: &Outbox) {
        let sent = std::mem::take(&mut lock_unpoisoned(&ob.direct).sent);
        self.flight.extend(sent);
    }

    /// Opens the direct path if this sender could send on the lane now
    /// (closes it otherwise).
    pub(super) fn reopen(&self, ob: &Outbox) {
        let lane = match &self.conn {
            Some(Conn::Lane { lane, .. }) if !lane.is_down() => Some(lane.clone()),
            _ => None,
        };
        // Only a lone batch goes directly (the round trip it starts is what
        // the path is for); with batches in flight, mail queues up and
        // goes in batches, as a burst should.
        let free = self.flight.is_empty();
        let open = lane.is_some()
            && free
            && lock_unpoisoned(&ob.hold).is_none()
            && !ob.closed.load(std::sync::atomic::Ordering::Acquire);
        let mut d = lock_unpoisoned(&ob.direct);
        if open {
            d.room = usize::from(d.sent.is_empty());
            d.lane = lane;
        } else {
            d.close();
        }
    }
}
