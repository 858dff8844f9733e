//! Mail on message lanes: the receiving side a lane's reader calls
//! ([`LaneInbox`], the same steps as `inbox` on a libp2p stream), and what
//! the sending side (`outbox`) needs to put its batches on a lane.
//!
//! A batch that arrives on a lane is applied exactly as one from a libp2p
//! mail stream (`inbox::on_batch`: the acks riding on it go to our outbox,
//! a seq already applied is answered with its first ack, the rest goes to
//! the work layer in order), and answered on the same lane; an ack that
//! arrives on a lane goes to our outbox for that peer (`LinkState::acked`),
//! which matches it by seq whatever stream or lane it came on.
//!
//! Invariant: a batch that does not decode is answered `Ack{invalid}` and
//! nothing of it is applied; an ack that does not fit a lane frame ends
//! the lane (the sender writes its batches in flight again over libp2p,
//! where the same seq is answered with its first ack).

use super::inbox::{self, Out, Step};
use super::lane::{LaneMail, MailStep};
use super::mail_link::LinkState;
use super::MailHandler;
use crate::wire::lane::MAX_FRAME_BYTES;
use crate::wire::mail::{self, Ack, Batch};
use libp2p::PeerId;
use std::sync::{Arc, Weak};

/// Most bytes of messages (as the outbox estimates them, which is more
/// than their encoding) the outbox puts in one batch on a lane: well
/// inside a frame.
pub(super) const LANE_BATCH_BYTES: usize = 48 << 10;

/// Most bytes of batches in flight on a lane from one outbox: little
/// enough to fit the sockets' buffers, so a peer that stops reading cannot
/// make a write of ours wait (the write timeout is the backstop), and
/// enough for a burst of small messages to keep the link busy.
pub(super) const LANE_INFLIGHT_BYTES: usize = 128 << 10;

const _: () = assert!(LANE_BATCH_BYTES + 4096 < MAX_FRAME_BYTES && LANE_BATCH_BYTES < LANE_INFLIGHT_BYTES);

/// The receiving side of mail on lanes (one per node).
pub(super) struct LaneInbox {
    pub(super) handler: Weak<dyn MailHandler>,
    pub(super) link: Arc<LinkState>,
}

impl LaneInbox {
    /// The acks held for `peer` and then `now`, encoded.
    fn acks_with(&self, peer: PeerId, now: Option<Ack>) -> Vec<Vec<u8>> {
        let held = self.link.held(peer);
        let mut acks = std::mem::take(&mut *crate::sync::lock_unpoisoned(&held));
        acks.extend(now);
        acks.iter().map(mail::encode_ack).collect()
    }
}

impl LaneMail for LaneInbox {
    fn on_batch(&self, peer: PeerId, bytes: &[u8]) -> MailStep {
        let batch = match mail::decode_batch(bytes) {
            Ok(Batch(m)) => m,
            Err(e) => {
                tracing::debug!(%peer, error = %e, "invalid mail batch on a lane");
                return MailStep::Now(
                    self.acks_with(peer, Some(Ack { invalid: Some(e.to_string()), ..Ack::default() })),
                );
            }
        };
        let held = self.link.held(peer);
        let step = inbox::on_batch(peer, batch, &self.handler, &self.link, &held);
        match step {
            Step::Answer(Out::Now(ack)) => MailStep::Now(self.acks_with(peer, Some(ack))),
            Step::Answer(Out::Held) => MailStep::Held,
            Step::Skip => MailStep::Skip,
            Step::Answer(Out::Close) | Step::Stop => MailStep::Stop,
        }
    }

    fn held_acks(&self, peer: PeerId) -> Vec<Vec<u8>> {
        self.acks_with(peer, None)
    }

    fn on_ack(&self, peer: PeerId, bytes: &[u8]) -> Result<(), String> {
        let ack = mail::decode_ack(bytes).map_err(|e| format!("an ack that does not decode: {e}"))?;
        self.link.acked(peer, vec![ack]);
        Ok(())
    }
}
