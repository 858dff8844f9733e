//! Node settings and their defaults.

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
pub const DEFAULT_WINDOW: usize = 4;
/// Bytes asked for per chunk request.
pub const DEFAULT_CHUNK: usize = crate::wire::CHUNK_BYTES;

/// Everything a node is configured with (see `NodeBuilder`).
#[derive(Debug, Clone)]
pub(crate) struct NodeConfig {
    pub listen: Vec<Multiaddr>,
    pub bootstrap: Vec<Multiaddr>,
    pub mdns: bool,
    pub heartbeat: Duration,
    pub failure_timeout: Duration,
    pub idle_timeout: Duration,
    pub request_timeout: Duration,
    pub chunk_bytes: usize,
    pub window: usize,
    pub fn_hash: u64,
    pub secret: Option<[u8; 32]>,
    pub observer: bool,
    pub bulk: bool,
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
        }
    }
}
