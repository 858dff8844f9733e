//! The outbox's direct path onto a message lane: the thread that queues
//! mail (a caller submitting a task, a runtime worker sending a `Done`)
//! writes the batch on the lane itself, instead of waking the sender task
//! to do it (a thread hand-off on every remote round trip, at each end).
//!
//! The sender task opens the path ([`Direct::lane`]) only while its own
//! connection is the lane and nothing it wrote itself is in flight (no
//! hold either). The path has room for [`DIRECT_ROOM`] batches written
//! and not yet acked: a request and the messages around it (the `Release`
//! of the last result, a `Borrow`); a burst fills it and queues up behind,
//! and goes in batches. The reader that sees the plain ack of a batch the
//! path wrote gives its room back at once ([`acked`], through the link's
//! [`AckTap`](crate::transport::mail_link::AckTap)), before the reply
//! riding with that ack is applied: the caller woken by the reply sends
//! its next request directly, instead of finding the path still full
//! until the sender task hears of the ack (a thread hand-off on every
//! remote round trip). A refusal or an invalid batch gives no room back:
//! the sender task handles it (and [`settled`] forgets the batch). It
//! closes the path whenever it takes a batch off the queue, recovers, or
//! the outbox closes. A thread sends directly only with the queue lock
//! held and the queue empty, for a batch that is small (at most
//! `LANE_BATCH_BYTES` of messages) and no fence; it takes the
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

/// Batches the direct path may have written and not seen acked: a
/// request and the few messages around it (a `Release` of the last
/// result, a `Borrow`), not a burst.
const DIRECT_ROOM: usize = 4;

/// The direct path's state (in the outbox, locked after its queue).
#[derive(Default)]
pub(super) struct Direct {
    /// The lane, while direct sends are open.
    lane: Option<Arc<lane::Conn>>,
    /// What the path may still write.
    room: Room,
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
        self.room.close();
    }
}

/// The direct path's room: how many more batches it may write, and the
/// seqs of those it wrote whose plain ack no reader has seen yet.
#[derive(Default, Debug)]
struct Room {
    free: usize,
    outstanding: Vec<u64>,
}

impl Room {
    /// The path opens (or stays open): room for [`DIRECT_ROOM`] less the
    /// batches still outstanding.
    fn open(&mut self) {
        self.free = DIRECT_ROOM.saturating_sub(self.outstanding.len());
    }

    /// The path closes: no room, and nothing outstanding (what it wrote
    /// is the sender task's, in flight, from now on).
    fn close(&mut self) {
        self.free = 0;
        self.outstanding.clear();
    }

    /// Takes room for batch `seq`; false if there is none.
    fn take(&mut self, seq: u64) -> bool {
        if self.free == 0 {
            return false;
        }
        self.free -= 1;
        self.outstanding.push(seq);
        true
    }

    /// A reader saw the plain ack of `seq`: its room comes back if it was
    /// outstanding and the path is `open`.
    fn acked(&mut self, seq: u64, open: bool) {
        if self.forget(seq) && open {
            self.open();
        }
    }

    /// `seq` is no longer outstanding (no room comes back: the sender
    /// task reopens the path when it may). True if it was.
    fn forget(&mut self, seq: u64) -> bool {
        let Some(i) = self.outstanding.iter().position(|s| *s == seq) else { return false };
        self.outstanding.swap_remove(i);
        true
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
    if d.room.free == 0 || !small || is_fence(&mail) || d.sent.len() >= WINDOW {
        return Some(mail);
    }
    probe_mail(&mail, Stage::TaskTaken, Stage::DoneTaken);
    let seq = ob.next_seq.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    d.room.take(seq);
    let riders = link.take_held(peer, MAX_BATCH_MAIL - 2 - mail.len());
    let (bytes, mail) = encode_seq_batch(seq, riders, mail);
    // A failed write poisons the lane: its watcher tells the sender, which
    // writes everything in flight (this batch too) again on a stream.
    let written = lane.send_mail(&bytes);
    probe_mail(&mail, Stage::TaskWritten, Stage::DoneWritten);
    lock_unpoisoned(&ob.counts).0 += mail.len() as u64;
    d.sent.push(InFlight { seq, mail, bytes, fence: false, direct: true, sent: Instant::now() });
    if written.is_err() {
        d.close();
    }
    None
}

/// A reader saw `ack` for a batch of `ob`: if it is the plain ack of the
/// batch this path has outstanding, the path has room again at once (the
/// next request goes out directly, without waiting for the sender task to
/// hear of the ack). A refusal or an invalid batch leaves it to the sender
/// task (mail goes back in the queue, maybe behind a hold).
pub(super) fn acked(ob: &Outbox, ack: &Ack) {
    if ack.seq == 0 || !ack.refused.is_empty() || ack.invalid.is_some() {
        return;
    }
    let mut d = lock_unpoisoned(&ob.direct);
    let open = d.is_open();
    d.room.acked(ack.seq, open);
}

/// The sender task matched an ack to batch `seq`, which this path wrote
/// (whatever the ack said): it is no longer outstanding.
pub(super) fn settled(ob: &Outbox, seq: u64) {
    lock_unpoisoned(&ob.direct).room.forget(seq);
}

impl crate::transport::mail_link::AckTap for Outbox {
    fn tap(&self, ack: &Ack) {
        acked(self, ack);
    }
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
        // Open only while nothing the sender task wrote is in flight: with
        // its batches in flight, mail queues up and goes in batches, as a
        // burst should. Batches this path wrote do not count: the path
        // keeps its own room for them (`Room`, given back by the reader
        // that sees their acks).
        let free = self.flight.iter().all(|f| f.direct);
        let open = lane.is_some()
            && free
            && lock_unpoisoned(&ob.hold).is_none()
            && !ob.closed.load(std::sync::atomic::Ordering::Acquire);
        let mut d = lock_unpoisoned(&ob.direct);
        if open {
            d.room.open();
            d.lane = lane;
        } else {
            d.close();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Room is taken per batch, comes back when a reader sees a plain
    /// ack of one (not when the sender task only forgets it), and a closed
    /// path has none, whatever acks come in later.
    #[test]
    fn room_comes_back_with_acks_while_open_only() {
        let mut r = Room::default();
        assert!(!r.take(1), "no room before the path opens");
        r.open();
        assert!((1..=DIRECT_ROOM as u64).all(|s| r.take(s)));
        assert!(!r.take(99), "full: the next batch queues");
        r.acked(1, true);
        assert!(r.take(5), "a reader's ack gave one back");
        assert!(!r.take(6));
        assert!(r.forget(2));
        assert!(!r.take(6), "the sender forgetting a batch gives nothing back");
        r.acked(42, true);
        assert!(!r.take(6), "an ack of a batch the path did not write gives nothing");
        r.close();
        r.acked(3, true);
        assert!(!r.take(6), "closed");
        r.open();
        assert!((6..6 + DIRECT_ROOM as u64).all(|s| r.take(s)), "reopened with nothing outstanding");
        r.acked(6, false);
        assert!(!r.take(10), "an ack read while the path is shut gives nothing back");
    }
}
