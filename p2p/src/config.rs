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
/// Default idle-connection timeout (libp2p's own default is 10 s, too short
/// for a cluster whose peers talk in bursts).
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Default timeout of one request (one chunk of a transfer).
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Chunk requests kept in flight per transfer.
pub(crate) const DEFAULT_WINDOW: usize = 4;
/// Bytes asked for per chunk request (and the most a node may be set to).
pub(crate) const DEFAULT_CHUNK: usize = CHUNK_BYTES;

/// Everything a node is configured with (see `NodeBuilder`). Its `Debug`
/// never shows the cluster secret.
#[derive(Clone)]
pub(crate) struct NodeConfig {
    pub(crate) listen: Vec<Multiaddr>,
    pub(crate) bootstrap: Vec<Multiaddr>,
    pub(crate) mdns: bool,
    pub(crate) heartbeat: Duration,
    pub(crate) failure_timeout: Duration,
    pub(crate) idle_timeout: Duration,
    pub(crate) request_timeout: Duration,
    pub(crate) chunk_bytes: usize,
    pub(crate) window: usize,
    pub(crate) fn_hash: u64,
    pub(crate) secret: Option<[u8; 32]>,
    pub(crate) observer: bool,
    pub(crate) bulk: bool,
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
            .field("idle_timeout", &self.idle_timeout)
            .field("request_timeout", &self.request_timeout)
            .field("chunk_bytes", &self.chunk_bytes)
            .field("window", &self.window)
            .field("secret", &self.secret.map(|_| "<set>"))
            .field("observer", &self.observer)
            .field("bulk", &self.bulk)
            .field("work", &self.work)
            .finish_non_exhaustive()
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
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            chunk_bytes: DEFAULT_CHUNK,
            window: DEFAULT_WINDOW,
            fn_hash: 0,
            secret: None,
            observer: false,
            bulk: true,
            work: WorkConfig::default(),
        }
    }
}
