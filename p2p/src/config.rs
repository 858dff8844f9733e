//! Node settings and their defaults (`NodeBuilder` fills a [`NodeConfig`];
//! each layer reads the fields it needs).
//!
//! Layer: just above `wire` (the default chunk size is the wire format's
//! chunk cap), below every stateful layer, which may all import it. It
//! holds plain data only.

use crate::wire::CHUNK_BYTES;
use libp2p::Multiaddr;
use std::time::Duration;

/// Default heartbeat period.
pub const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(1);
/// Default failure timeout (five missed heartbeats).
pub const DEFAULT_FAILURE_TIMEOUT: Duration = Duration::from_secs(5);
/// Cluster size (this node included) up to which an adaptive heartbeat
/// (the default, `NodeBuilder::adaptive_heartbeat`) keeps its configured
/// period and failure timeout; in a larger cluster both grow in proportion
/// to its size, so that the heartbeat traffic each node forwards stays
/// about what it is at this size (p2p/SCALING.md).
pub const ADAPTIVE_FROM: usize = 20;
/// Most an adaptive heartbeat stretches the period and failure timeout
/// (reached at `ADAPTIVE_FROM * MAX_ADAPTIVE_STRETCH` = 100 members; 5 s
/// and 25 s at the defaults). Members are counted from the member table,
/// which any peer can fill with made-up members (each a fresh key signing
/// a heartbeat): without a cap, 800 of them stretched the failure timeout
/// to 200 s, so real deaths went unnoticed. With it, the worst an inflated
/// table does is this factor. Beyond 100 real members each node's gossip
/// grows with n again (p2p/SCALING.md); such a cluster sets its own
/// `heartbeat` and `failure_timeout`.
pub const MAX_ADAPTIVE_STRETCH: usize = 5;
/// Default idle-connection timeout (libp2p's own default is 10 s, too short
/// for a cluster whose peers talk in bursts).
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Default timeout of one request (one chunk of a transfer).
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Chunk requests kept in flight per transfer.
pub(crate) const DEFAULT_WINDOW: usize = 4;
/// Bytes asked for per chunk request (and the most a node may be set to).
pub(crate) const DEFAULT_CHUNK: usize = CHUNK_BYTES;
/// Default cap on the connections one remote IP may hold to a node
/// (inbound, established or still handshaking).
pub const DEFAULT_MAX_CONNECTIONS_PER_IP: usize = 32;

/// Everything a node is configured with (see `NodeBuilder`). Its `Debug`
/// never shows the cluster secret.
#[derive(Clone)]
pub(crate) struct NodeConfig {
    pub(crate) listen: Vec<Multiaddr>,
    pub(crate) bootstrap: Vec<Multiaddr>,
    pub(crate) mdns: bool,
    pub(crate) heartbeat: Duration,
    pub(crate) failure_timeout: Duration,
    /// Stretch `heartbeat` and `failure_timeout` beyond [`ADAPTIVE_FROM`]
    /// members (see [`NodeConfig::timing`]).
    pub(crate) adaptive_heartbeat: bool,
    pub(crate) idle_timeout: Duration,
    pub(crate) request_timeout: Duration,
    pub(crate) chunk_bytes: usize,
    pub(crate) window: usize,
    pub(crate) fn_hash: u64,
    pub(crate) secret: Option<[u8; 32]>,
    /// Listening beyond loopback, or mDNS, without a secret was asked for
    /// explicitly (`NodeBuilder::insecure_open_network`).
    pub(crate) insecure_open: bool,
    pub(crate) max_connections_per_ip: usize,
    pub(crate) observer: bool,
    pub(crate) bulk: bool,
    /// The message lane for small messages (`transport::lanes`).
    pub(crate) fast_lane: bool,
    pub(crate) work: WorkConfig,
}

/// Spillback and back-pressure settings of remote work.
#[derive(Debug, Clone)]
pub(crate) struct WorkConfig {
    /// Local queue length from which tasks spill to less loaded peers.
    pub(crate) threshold: usize,
    /// Most tasks from peers this node holds (queued or running).
    pub(crate) max_accepted: usize,
    /// Most times a task is placed again after a peer refused it as busy.
    pub(crate) max_hops: u32,
}

impl Default for WorkConfig {
    fn default() -> Self {
        WorkConfig { threshold: 4, max_accepted: 16 << 10, max_hops: 3 }
    }
}

impl std::fmt::Debug for NodeConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeConfig")
            .field("listen", &self.listen)
            .field("bootstrap", &self.bootstrap)
            .field("mdns", &self.mdns)
            .field("heartbeat", &self.heartbeat)
            .field("failure_timeout", &self.failure_timeout)
            .field("adaptive_heartbeat", &self.adaptive_heartbeat)
            .field("idle_timeout", &self.idle_timeout)
            .field("request_timeout", &self.request_timeout)
            .field("chunk_bytes", &self.chunk_bytes)
            .field("window", &self.window)
            .field("secret", &self.secret.map(|_| "<set>"))
            .field("insecure_open", &self.insecure_open)
            .field("max_connections_per_ip", &self.max_connections_per_ip)
            .field("observer", &self.observer)
            .field("bulk", &self.bulk)
            .field("fast_lane", &self.fast_lane)
            .field("work", &self.work)
            .finish_non_exhaustive()
    }
}

impl NodeConfig {
    /// The heartbeat period and failure timeout in a cluster of `members`
    /// live nodes (this one included): as configured up to
    /// [`ADAPTIVE_FROM`] members (or always, if not adaptive); beyond, both
    /// times `members / ADAPTIVE_FROM`, at most [`MAX_ADAPTIVE_STRETCH`].
    pub(crate) fn timing(&self, members: usize) -> (Duration, Duration) {
        if !self.adaptive_heartbeat || members <= ADAPTIVE_FROM {
            return (self.heartbeat, self.failure_timeout);
        }
        let stretch = (members as f64 / ADAPTIVE_FROM as f64).min(MAX_ADAPTIVE_STRETCH as f64);
        (self.heartbeat.mul_f64(stretch), self.failure_timeout.mul_f64(stretch))
    }
}

impl Default for NodeConfig {
    fn default() -> Self {
        NodeConfig {
            listen: Vec::new(),
            bootstrap: Vec::new(),
            mdns: false,
            heartbeat: DEFAULT_HEARTBEAT,
            failure_timeout: DEFAULT_FAILURE_TIMEOUT,
            adaptive_heartbeat: true,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            chunk_bytes: DEFAULT_CHUNK,
            window: DEFAULT_WINDOW,
            fn_hash: 0,
            secret: None,
            insecure_open: false,
            max_connections_per_ip: DEFAULT_MAX_CONNECTIONS_PER_IP,
            observer: false,
            bulk: true,
            fast_lane: true,
            work: WorkConfig::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_adaptive_heartbeat_keeps_the_traffic_per_node_from_twenty_members() {
        let cfg = NodeConfig::default();
        let s = Duration::from_secs;
        for n in [1, 2, 4, 16, ADAPTIVE_FROM] {
            assert_eq!(cfg.timing(n), (s(1), s(5)), "n = {n}");
        }
        assert_eq!(cfg.timing(32), (Duration::from_millis(1600), s(8)));
        assert_eq!(cfg.timing(40), (s(2), s(10)));
        // Beats per second times members (what each node forwards) stays put.
        for n in [ADAPTIVE_FROM, 32, 64, 100] {
            let rate = n as f64 / cfg.timing(n).0.as_secs_f64();
            assert!((rate - ADAPTIVE_FROM as f64).abs() < 1e-6, "n = {n}: {rate}");
        }
        // ... up to the cap: a member table inflated by made-up members
        // stretches the failure timeout by at most `MAX_ADAPTIVE_STRETCH`.
        let most = MAX_ADAPTIVE_STRETCH as u32;
        for n in [101, 802, 1 << 20] {
            assert_eq!(cfg.timing(n), (s(1) * most, s(5) * most), "n = {n}");
        }
        let fixed = NodeConfig { adaptive_heartbeat: false, ..NodeConfig::default() };
        assert_eq!(fixed.timing(32), (s(1), s(5)));
    }
}
