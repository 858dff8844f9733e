//! What a peer can make a node hold through its server loops (object
//! streams in `rpc`, mail streams in `inbox`), and the bounds on it.
//!
//! - [`StreamCap`]: inbound streams per peer, per protocol; a stream over
//!   the cap is dropped (reset) at once.
//! - [`Limits`]: a deadline per frame (from its length prefix to its last
//!   byte, and for writing a reply) and an idle timeout per stream
//!   (waiting for the next frame); past either the stream is closed.
//! - [`Budget`]: bytes of frames being read (and of large replies being
//!   written) at once, per peer and in all. A frame over
//!   [`STEP_BYTES`](crate::wire::codec::STEP_BYTES) is read only once its
//!   whole length is charged; a peer over its share waits (its stream is
//!   not read, so the muxer's flow control holds its sender back) until
//!   the frame's deadline, then its stream is closed.
//!
//! With the codec's rule that a buffer grows only as bytes arrive, one
//! peer holds at most [`BUDGET_PER_PEER`] bytes of frames plus one step per
//! open stream, and all peers together at most [`BUDGET_TOTAL`] plus one
//! step per stream, for at most a frame deadline after they stop sending.
//!
//! Invariants: every charge and every admitted stream is released when
//! dropped (never leaked on an error path); a wait for budget ends by the
//! frame's deadline; nothing here blocks a thread.

use crate::sync::lock_unpoisoned;
use crate::wire::codec::{read_body, read_prefix, Frame, STEP_BYTES};
use futures::AsyncRead;
use libp2p::PeerId;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;
use tokio::time::Instant;

/// Most object streams one peer may have open to a node (its stream pool
/// keeps at most 16 idle; a few more run while they are busy).
pub(crate) const MAX_OBJECT_STREAMS_PER_PEER: usize = 32;

/// Most mail streams one peer may have open to a node (it uses one; a
/// new one replaces a broken one before the old one's end is seen).
pub(crate) const MAX_MAIL_STREAMS_PER_PEER: usize = 4;

/// Bytes of large frames one peer may have in progress (one largest mail
/// batch, 16 MiB, plus a chunk reply).
#[cfg_attr(not(feature = "fuzzing"), allow(unreachable_pub))] // (re-exported for tests)
pub const BUDGET_PER_PEER: usize = 20 << 20;

/// Bytes of large frames all peers together may have in progress.
#[cfg_attr(not(feature = "fuzzing"), allow(unreachable_pub))] // (re-exported for tests)
pub const BUDGET_TOTAL: usize = 96 << 20;

/// Inbound streams of one protocol, counted per peer.
#[derive(Debug)]
pub(crate) struct StreamCap {
    max: usize,
    open: Mutex<HashMap<PeerId, usize>>,
    refused: AtomicU64,
}

/// An admitted stream's place under its cap (released on drop).
#[derive(Debug)]
pub(crate) struct Admitted {
    cap: Arc<StreamCap>,
    peer: PeerId,
}

impl StreamCap {
    /// A cap of `max` streams per peer.
    pub(crate) fn new(max: usize) -> Arc<StreamCap> {
        Arc::new(StreamCap { max, open: Mutex::default(), refused: AtomicU64::new(0) })
    }

    /// A place for one more stream from `peer`, if it has fewer than the cap.
    pub(crate) fn admit(self: &Arc<Self>, peer: PeerId) -> Option<Admitted> {
        let mut open = lock_unpoisoned(&self.open);
        let n = open.entry(peer).or_default();
        if *n >= self.max {
            self.refused.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        *n += 1;
        Some(Admitted { cap: self.clone(), peer })
    }

    /// Streams refused so far.
    #[cfg(test)]
    pub(crate) fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        let mut open = lock_unpoisoned(&self.cap.open);
        if let Some(n) = open.get_mut(&self.peer) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                open.remove(&self.peer);
            }
        }
    }
}

/// Bytes in progress, per peer and in all.
#[derive(Debug)]
pub(crate) struct Budget {
    per_peer_max: usize,
    total_max: usize,
    state: Mutex<(HashMap<PeerId, usize>, usize)>,
    freed: Notify,
}

/// Bytes charged to a peer (given back on drop).
#[derive(Debug)]
pub(crate) struct Charge {
    budget: Arc<Budget>,
    peer: PeerId,
    bytes: usize,
}

impl Budget {
    /// A budget of `per_peer` bytes per peer and `total` in all.
    pub(crate) fn new(per_peer: usize, total: usize) -> Arc<Budget> {
        Arc::new(Budget { per_peer_max: per_peer, total_max: total, state: Mutex::default(), freed: Notify::new() })
    }

    /// Charges `bytes` to `peer`, waiting until they fit or `deadline`
    /// passes (`None`). More than a peer's share never fits.
    pub(crate) async fn charge(self: &Arc<Self>, peer: PeerId, bytes: usize, deadline: Instant) -> Option<Charge> {
        if bytes > self.per_peer_max || bytes > self.total_max {
            return None;
        }
        loop {
            let freed = self.freed.notified();
            tokio::pin!(freed);
            // Registered before looking, so a release in between wakes it.
            freed.as_mut().enable();
            {
                let mut st = lock_unpoisoned(&self.state);
                let (per_peer, total) = &mut *st;
                let mine = per_peer.entry(peer).or_default();
                if *mine + bytes <= self.per_peer_max && *total + bytes <= self.total_max {
                    *mine += bytes;
                    *total += bytes;
                    return Some(Charge { budget: self.clone(), peer, bytes });
                }
                if *mine == 0 {
                    per_peer.remove(&peer);
                }
            }
            tokio::time::timeout_at(deadline, freed).await.ok()?;
        }
    }

    /// Bytes charged now, in all.
    #[cfg(test)]
    pub(crate) fn in_use(&self) -> usize {
        lock_unpoisoned(&self.state).1
    }
}

impl Charge {
    /// Gives back what this charge holds beyond `bytes` (a reply built
    /// shorter than charged for); never grows it.
    pub(crate) fn shrink(&mut self, bytes: usize) {
        let extra = self.bytes.saturating_sub(bytes);
        if extra == 0 {
            return;
        }
        {
            let mut st = lock_unpoisoned(&self.budget.state);
            let (per_peer, total) = &mut *st;
            *total = total.saturating_sub(extra);
            if let Some(mine) = per_peer.get_mut(&self.peer) {
                *mine = mine.saturating_sub(extra);
            }
        }
        self.bytes -= extra;
        self.budget.freed.notify_waiters();
    }
}

impl Drop for Charge {
    fn drop(&mut self) {
        {
            let mut st = lock_unpoisoned(&self.budget.state);
            let (per_peer, total) = &mut *st;
            *total = total.saturating_sub(self.bytes);
            if let Some(mine) = per_peer.get_mut(&self.peer) {
                *mine = mine.saturating_sub(self.bytes);
                if *mine == 0 {
                    per_peer.remove(&self.peer);
                }
            }
        }
        self.budget.freed.notify_waiters();
    }
}

/// The bounds a node's server loops read and write under.
#[derive(Debug, Clone)]
pub(crate) struct Limits {
    /// Longest a frame may take to arrive once its prefix has, and a reply
    /// to be written.
    pub(crate) frame: Duration,
    /// Longest a stream may wait for its next frame.
    pub(crate) idle: Duration,
    /// Bytes of large frames in progress.
    pub(crate) budget: Arc<Budget>,
    /// What the node refused from peers (and whom it warned about).
    pub(crate) rejections: Arc<crate::stats::Rejections>,
}

impl Limits {
    /// Limits with the default budget.
    pub(crate) fn new(frame: Duration, idle: Duration) -> Limits {
        let rejections = Arc::default();
        Limits { frame, idle, budget: Budget::new(BUDGET_PER_PEER, BUDGET_TOTAL), rejections }
    }
}

/// A frame read under [`Limits`], or why the stream must close.
#[derive(Debug)]
pub(crate) enum Guarded {
    /// A frame (a body, or `TooLarge`/`Truncated` as `read_frame` says),
    /// with what its body is charged (to drop once it is decoded).
    Frame(Frame, Option<Charge>),
    /// No frame began within the idle timeout.
    Idle,
    /// A frame began but did not end within its deadline.
    Late,
    /// The peer's budget stayed full until the frame's deadline.
    NoBudget,
}

/// Reads one frame of at most `max` body bytes from `peer` under `limits`.
pub(crate) async fn read_guarded<T: AsyncRead + Unpin>(
    io: &mut T,
    max: usize,
    peer: PeerId,
    limits: &Limits,
) -> std::io::Result<Guarded> {
    let len = match tokio::time::timeout(limits.idle, read_prefix(io)).await {
        Err(_) => return Ok(Guarded::Idle),
        Ok(r) => match r? {
            None => return Ok(Guarded::Frame(Frame::Truncated, None)),
            Some(len) if len > max => return Ok(Guarded::Frame(Frame::TooLarge(len), None)),
            Some(len) => len,
        },
    };
    let deadline = Instant::now() + limits.frame;
    let charge = if len > STEP_BYTES {
        match limits.budget.charge(peer, len, deadline).await {
            Some(c) => Some(c),
            None => return Ok(Guarded::NoBudget),
        }
    } else {
        None
    };
    match tokio::time::timeout_at(deadline, read_body(io, len)).await {
        Err(_) => Ok(Guarded::Late),
        Ok(frame) => Ok(Guarded::Frame(frame?, charge)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_caps_count_per_peer_and_release_on_drop() {
        let cap = StreamCap::new(2);
        let (a, b) = (PeerId::random(), PeerId::random());
        let (x, y) = (cap.admit(a).expect("1st"), cap.admit(a).expect("2nd"));
        assert!(cap.admit(a).is_none());
        assert!(cap.admit(b).is_some(), "another peer has its own cap");
        drop(x);
        assert!(cap.admit(a).is_some());
        drop(y);
        assert_eq!(cap.refused(), 1);
    }

    #[tokio::test]
    async fn budgets_wait_for_room_until_the_deadline() {
        let budget = Budget::new(10, 15);
        let (a, b) = (PeerId::random(), PeerId::random());
        let soon = || Instant::now() + Duration::from_millis(100);
        let first = budget.charge(a, 8, soon()).await.expect("fits");
        assert!(budget.charge(a, 3, soon()).await.is_none(), "over a's share until the deadline");
        assert!(budget.charge(a, 11, soon()).await.is_none(), "never fits");
        let other = budget.charge(b, 7, soon()).await.expect("b has room");
        assert_eq!(budget.in_use(), 15);
        // A waiter gets in once room is freed.
        let waiter = {
            let budget = budget.clone();
            tokio::spawn(async move { budget.charge(b, 3, Instant::now() + Duration::from_secs(5)).await.is_some() })
        };
        tokio::task::yield_now().await;
        drop(first);
        assert!(waiter.await.expect("joins"));
        drop(other);
        assert_eq!(budget.in_use(), 0);
    }

    #[tokio::test]
    async fn a_shrunk_charge_gives_back_the_rest_at_once() {
        let budget = Budget::new(10, 15);
        let a = PeerId::random();
        let soon = || Instant::now() + Duration::from_millis(100);
        let mut big = budget.charge(a, 9, soon()).await.expect("fits");
        assert!(budget.charge(a, 5, soon()).await.is_none(), "over a's share");
        big.shrink(4);
        big.shrink(8); // never grows
        assert_eq!(budget.in_use(), 4);
        let more = budget.charge(a, 6, soon()).await.expect("room again");
        drop((big, more));
        assert_eq!(budget.in_use(), 0);
    }

    #[tokio::test]
    async fn a_stalled_frame_ends_at_its_deadline_holding_one_step() {
        // A 16 MiB prefix, 1 KiB of body, then nothing: the reader's buffer
        // never grew past one step, and the frame is late at its deadline.
        let (client, mut server) = tokio::io::duplex(1 << 20);
        let mut client = tokio_util_compat(client);
        let limits = Limits::new(Duration::from_millis(300), Duration::from_secs(60));
        let peer = PeerId::random();
        let writer = tokio::spawn(async move {
            use tokio::io::AsyncWriteExt;
            server.write_all(&(16u32 << 20).to_be_bytes()).await.expect("prefix");
            server.write_all(&[7u8; 1024]).await.expect("some body");
            server // kept open: a stall, not an end
        });
        let started = Instant::now();
        let got = read_guarded(&mut client, 16 << 20, peer, &limits).await.expect("no io error");
        assert!(matches!(got, Guarded::Late), "{got:?}");
        assert!(started.elapsed() >= Duration::from_millis(300));
        assert_eq!(limits.budget.in_use(), 0, "the charge is given back");
        drop(writer);
    }

    /// A tokio duplex half as a futures reader.
    fn tokio_util_compat(io: tokio::io::DuplexStream) -> impl AsyncRead + Unpin {
        struct Compat(tokio::io::DuplexStream);
        impl AsyncRead for Compat {
            fn poll_read(
                mut self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
                buf: &mut [u8],
            ) -> std::task::Poll<std::io::Result<usize>> {
                let mut rb = tokio::io::ReadBuf::new(buf);
                match tokio::io::AsyncRead::poll_read(std::pin::Pin::new(&mut self.0), cx, &mut rb) {
                    std::task::Poll::Ready(Ok(())) => std::task::Poll::Ready(Ok(rb.filled().len())),
                    std::task::Poll::Ready(Err(e)) => std::task::Poll::Ready(Err(e)),
                    std::task::Poll::Pending => std::task::Poll::Pending,
                }
            }
        }
        Compat(io)
    }
}
