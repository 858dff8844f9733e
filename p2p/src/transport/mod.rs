//! Layer 2, transport: moving bytes between nodes once the cluster layer
//! has connected them.
//!
//! - `rpc`: object requests over long-lived streams (a pool per peer on
//!   the client side, at most 16 calls in flight per peer and later ones
//!   waiting their turn; one task per stream on the server side);
//! - `batch`: the first request of every fetch to one holder goes through
//!   that holder's queue, so many small objects demanded together come in
//!   one exchange;
//! - `outbox` / `inbox`: ordered, batched, acknowledged mail between nodes
//!   (what they share, protocol and duplicate detection, is in `mail_link`);
//! - `bulk`: the bulk lane, large objects on a TCP connection of their own
//!   sealed with AES-256-GCM;
//! - `fetch`: the client side of a remote `get` (holders in turn, chunks or
//!   the lane, decoding straight into the replica; `fetch_lane`: small
//!   gets over the message lane first);
//! - `lane` / `lanes`: the message lane, a sealed TCP connection per peer
//!   beside libp2p for small latency-bound messages (small gets), and the
//!   node's lanes: setup over `/manta/lane/1`, tickets, caps;
//! - `timeline`: a node's timeline in pages for a peer collecting the
//!   cluster's trace, and the collector's side (clock offset included);
//! - `vouch`: owners' signed vouchers for objects' content, asked for by
//!   copies that serve them and checked by readers of those copies;
//! - `busy`: how a fetch answers a holder's `Busy`; `chunks`: the byte
//!   stream a chunked pull is decoded (and hashed) from;
//! - `guard`: what peers can make the server loops hold, and its bounds
//!   (streams per peer, frame deadlines, idle timeouts, byte budgets).
//!
//! May use: `wire`, `config`, `sync`. It never sees the swarm: it opens and
//! accepts streams through [`Streams`], learns addresses and providers
//! through [`Directory`] (both implemented by the cluster layer's handle to
//! the event loop), and hands what it receives to the layers above through
//! the traits they implement and pass down at construction: [`MailHandler`]
//! (mail to apply, acks, undeliverable batches), [`ObjectHooks`] (a peer
//! reads an object) and [`Rebuilder`] (a fetch found no holder).
//!
//! Invariants: every await on the network is bounded by the request
//! timeout (a server loop's wait for the next frame by the idle timeout);
//! every per-peer resource (inbound streams, bytes of frames in progress,
//! idle streams, batches in flight, acks held, lane tickets, senders and
//! hellos, message lanes and their calls) is capped; a `Fetch` is
//! completed exactly once, never under a lock.

mod batch;
pub(crate) mod bulk;
mod busy;
mod chunks;
pub(crate) mod fetch;
pub(crate) mod guard;
mod inbox;
pub(crate) mod lane;
mod lane_mail;
pub(crate) mod lanes;
mod mail_link;
pub(crate) mod outbox;
pub(crate) mod rpc;
pub(crate) mod timeline;
pub(crate) mod vouch;

pub(crate) use mail_link::MailError;
#[cfg(feature = "fuzzing")]
pub use mail_link::MAIL_PROTOCOL;

use futures::future::BoxFuture;
use libp2p::{Multiaddr, PeerId, Stream, StreamProtocol};
use libp2p_stream::{AlreadyRegistered, IncomingStreams, OpenStreamError};
use manta::backend::Fetch;
use manta::{Error, ObjectId};
use tokio::sync::oneshot;

/// Opening and accepting streams: the only way transport reaches the
/// network. The cluster layer implements it over the swarm's stream
/// control, which it keeps to itself.
pub(crate) trait Streams: Send + Sync + 'static {
    /// Opens a stream to `peer` on `protocol` (dialling it if needed).
    fn open(&self, peer: PeerId, protocol: StreamProtocol) -> BoxFuture<'static, Result<Stream, OpenStreamError>>;
    /// Accepts inbound streams on `protocol` (once per protocol).
    fn accept(&self, protocol: StreamProtocol) -> Result<IncomingStreams, AlreadyRegistered>;
    /// The bounds accepted streams are served under (one budget per node).
    fn limits(&self) -> &guard::Limits;
}

/// The cluster's address book and object directory, as a fetch needs it.
/// Each call is a command to the event loop; the receiver fires with the
/// answer, or is dropped if the loop has stopped.
pub(crate) trait Directory: Send + Sync + 'static {
    /// Gives the swarm `peer`'s addresses (from a ref's owner hint); fires
    /// once the swarm has them, so a dial after it can use them.
    fn learn(&self, peer: PeerId, addrs: Vec<Multiaddr>) -> oneshot::Receiver<()>;
    /// The providers of `id` in the DHT (all found, when the query ends).
    fn providers(&self, id: ObjectId) -> oneshot::Receiver<Vec<PeerId>>;
}

/// What the node does with mail (implemented by the work layer).
pub(crate) trait MailHandler: Send + Sync + 'static {
    /// Applies a batch from `from`, in order; the returned ack lists the
    /// submissions it refused.
    fn on_mail(&self, from: PeerId, mail: Vec<crate::wire::mail::Mail>) -> crate::wire::mail::Ack;
    /// A batch sent to `to` was acknowledged.
    fn on_ack(&self, to: PeerId, sent: Vec<crate::wire::mail::Mail>, ack: crate::wire::mail::Ack);
    /// A batch could not be delivered to `to`.
    fn on_undeliverable(&self, to: PeerId, sent: Vec<crate::wire::mail::Mail>, why: MailError);
}

/// What the object server tells the layers above (implemented by the node).
pub(crate) trait ObjectHooks: Send + Sync + 'static {
    /// A peer asked for `id`, which is not held here: true if it is one of
    /// this node's task results, now being fetched so it can be served.
    fn prefetch(&self, id: ObjectId) -> bool;
    /// The id object `id` is held under here for `peer`'s requests
    /// (itself, unless a task `peer` submitted made it here under another
    /// id).
    fn serve_as(&self, id: ObjectId, _peer: PeerId) -> ObjectId {
        id
    }
    /// True if `peer` may read this node's timeline (`Request::Timeline`):
    /// a member of the cluster. Default: nobody.
    fn may_read_timeline(&self, _peer: PeerId) -> bool {
        false
    }
}

/// What a fetch asks the work layer (which implements it): whether a peer
/// was declared dead, and, as the last resort of a fetch that found no
/// holder, to run a lost task result's task again.
pub(crate) trait Rebuilder: Send + Sync + 'static {
    /// Takes the fetch over (and returns `None`) if the object can be made
    /// again; otherwise hands it back to fail with `why`.
    fn rebuild(&self, fetch: Fetch, why: &Error) -> Option<Fetch>;
    /// True if `peer` is in the member table and declared dead: a fetch
    /// does not ask it, and an object it owned that no live node holds
    /// fails with `Error::OwnerDied` instead of waiting for it.
    fn is_dead(&self, _peer: PeerId) -> bool {
        false
    }
    /// A counter that changes every time a peer is declared dead (after
    /// [`Rebuilder::is_dead`] says so), for requests in flight to give up
    /// at once; `None` if deaths are not reported.
    fn deaths(&self) -> Option<tokio::sync::watch::Receiver<u64>> {
        None
    }
}
