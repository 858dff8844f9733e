//! The node's side of `manta::backend::RemoteBackend`: how the manta
//! runtime reaches the layers (announcements and withdrawals in the DHT,
//! fetches, borrow counts), and the hooks the object server calls.
//!
//! `metrics` adds the node's counters to `Runtime::metrics` (named
//! `p2p_*`, so `manta_p2p_*` in Prometheus text): transfers in and out and their bytes, remote tasks and
//! actor calls sent and received, libp2p socket bytes, peers alive and
//! down, and the bytes of object replies held for peers (now and at most).
//!
//! Invariants: every method returns at once (work is handed to the node's
//! threads; `metrics` only reads relaxed atomics and copies the member
//! table); `as_any` is the node's `Arc<Work>`, which is how the work
//! layer (and `Node::current`) find the node of a runtime.

use crate::cluster::{Announcements, ClusterView, LoopHandle};
use crate::stats::Traffic;
use crate::transport::bulk::Lane;
use crate::transport::rpc::Pool;
use crate::transport::vouch::Vouchers;
use crate::transport::ObjectHooks;
use crate::work::Work;
use manta::backend::{Fetch, RemoteBackend};
use manta::ObjectId;
use std::any::Any;
use std::borrow::Cow;
use std::sync::Arc;

/// What the manta runtime of a node calls.
pub(crate) struct NodeBackend {
    pub(super) work: Arc<Work>,
    pub(super) view: Arc<ClusterView>,
    pub(super) announcements: Arc<Announcements>,
    pub(super) cluster: LoopHandle,
    /// The bulk lane, if it is on and bound.
    pub(super) lane: Option<Arc<Lane>>,
    /// The message lanes, if on.
    pub(super) lanes: Option<Arc<crate::transport::lanes::Lanes>>,
    /// The node's traffic counters (shared with the layers that count).
    pub(super) traffic: Arc<Traffic>,
    /// Object streams for collecting peers' timelines.
    pub(super) pool: Arc<Pool>,
    /// Whether the cluster has a secret (every connection proves it).
    pub(super) secret: bool,
    /// Whether the node may be reached from other hosts without a secret
    /// (`NodeBuilder::insecure_open_network`).
    pub(super) insecure_open: bool,
    /// Whether this node is an observer (in no member table).
    pub(super) observer: bool,
    /// The node's tokio runtime.
    pub(crate) tokio: tokio::runtime::Handle,
    /// The node's vouchers (and what it refused from peers).
    pub(crate) vouchers: Arc<Vouchers>,
}

impl RemoteBackend for NodeBackend {
    fn as_any(&self) -> &dyn Any {
        &self.work
    }

    fn owner_hint(&self) -> Arc<[u8]> {
        self.view.hint()
    }

    fn exported(&self, id: ObjectId, replica: bool) {
        // A replica is worth a DHT record at once; our own objects (and
        // the value of one of our task results, which we own and refs to
        // which name us) never are (see `cluster::announce`).
        if replica && !self.work.is_result(id) {
            self.announcements.announce(id);
        }
        if replica {
            // A copy fetched from its owner asks it for its voucher.
            self.vouchers.stored(id);
        }
    }

    fn freed(&self, id: ObjectId) {
        self.vouchers.freed(id);
        // If it was still queued, the loop skips it; withdrawing a record
        // never made is a no-op.
        if self.announcements.freed(id) {
            self.cluster.unprovide(id);
        }
    }

    fn fetch(&self, fetch: Fetch) {
        // A result of our remote work is filled from its completion.
        self.work.demand(fetch);
    }

    fn borrowed(&self, id: ObjectId, owner_hint: &[u8]) {
        self.work.borrowed(id, owner_hint);
    }

    fn released(&self, id: ObjectId, owner_hint: &[u8]) {
        self.work.released(id, owner_hint);
    }

    fn metrics(&self) -> Vec<(Cow<'static, str>, f64)> {
        let t = self.traffic.stats();
        let net = self.view.net_stats();
        let lane_bytes = self.lane.as_ref().map_or(0, |l| l.sent_bytes());
        let members = self.view.members();
        let others = || members.iter().filter(|m| !m.is_self);
        let alive = others().filter(|m| m.alive).count();
        let down = others().count() - alive;
        let (holders, records, invalid) = self.vouchers.rejections.stats();
        let (held, held_peak) = self.traffic.replies_held();
        let pairs: [(&'static str, u64); 17] = [
            ("p2p_transfers_in_total", t.transfers_in),
            ("p2p_transfer_in_bytes_total", t.transfer_in_bytes),
            ("p2p_transfers_out_total", t.transfers_out),
            ("p2p_transfer_out_bytes_total", t.transfer_out_bytes + lane_bytes),
            ("p2p_remote_tasks_sent_total", t.tasks_sent),
            ("p2p_remote_tasks_received_total", t.tasks_received),
            ("p2p_remote_calls_sent_total", t.calls_sent),
            ("p2p_remote_calls_received_total", t.calls_received),
            ("p2p_net_bytes_sent_total", net.bytes_sent),
            ("p2p_net_bytes_received_total", net.bytes_received),
            ("p2p_peers_alive", alive as u64),
            ("p2p_peers_down", down as u64),
            ("p2p_holders_rejected_total", holders),
            ("p2p_actor_records_rejected_total", records),
            ("p2p_invalid_requests_total", invalid),
            ("p2p_reply_bytes_held", held),
            ("p2p_reply_bytes_held_peak", held_peak),
        ];
        pairs.into_iter().map(|(name, v)| (Cow::Borrowed(name), v as f64)).collect()
    }
}

impl ObjectHooks for NodeBackend {
    fn prefetch(&self, id: ObjectId) -> bool {
        self.work.prefetch_result(id)
    }

    fn serve_as(&self, id: ObjectId, peer: libp2p::PeerId) -> ObjectId {
        self.work.serve_as(id, peer)
    }

    /// With a cluster secret, any peer that connected (it holds the
    /// secret, observers included). Without one, a node listens on
    /// loopback only, so any peer that connected runs on this host (an
    /// observer such as `manta timeline` included); with the insecure
    /// opt-out, only a peer in the member table.
    fn may_read_timeline(&self, peer: libp2p::PeerId) -> bool {
        self.secret || !self.insecure_open || self.view.members().iter().any(|m| m.peer == peer && !m.is_self)
    }
}
