//! The libp2p behaviours a node runs, combined into one `NetworkBehaviour`,
//! and how they are configured.
//!
//! - `stream`: raw streams (libp2p-stream): object transfer
//!   (`transport::rpc`) and mail (`transport::outbox`/`inbox`) run over
//!   long-lived streams with manta's own framing, opened and accepted
//!   through the stream control that only the event loop hands out.
//! - `gossip`: gossipsub, signed messages, for heartbeats.
//! - `kad`: Kademlia in server mode (forced: small clusters never confirm an
//!   external address), provider records only.
//! - `identify`: tells peers our listen addresses (fed to Kademlia).
//! - `ping`: keeps connections alive and measures them.
//! - `mdns`: LAN discovery, present only when enabled.

use crate::config::NodeConfig;
use crate::wire::MAX_HEARTBEAT_BYTES;
use libp2p::swarm::behaviour::toggle::Toggle;
use libp2p::swarm::NetworkBehaviour;
use libp2p::{gossipsub, identify, identity, kad, mdns, ping, StreamProtocol};
use std::time::Duration;

/// Kademlia protocol name (a private DHT, not the public IPFS one).
pub const KAD_PROTOCOL: &str = "/manta/kad/1";
/// Most provider keys (objects) one node announces, and most records it
/// keeps for others, in the DHT (each is a small in-memory entry).
pub(crate) const MAX_DHT_KEYS: usize = 1 << 18;
/// The gossip topic of heartbeats.
pub const HEARTBEAT_TOPIC: &str = "manta/heartbeat/1";

/// Why the behaviours could not be built.
#[derive(Debug, thiserror::Error)]
pub enum BehaviourError {
    /// gossipsub's configuration was refused.
    #[error("gossipsub config: {0}")]
    GossipConfig(#[source] gossipsub::ConfigBuilderError),
    /// gossipsub could not be built.
    #[error("gossipsub: {0}")]
    Gossip(&'static str),
    /// gossipsub could not subscribe to the heartbeat topic.
    #[error("gossipsub: {0}")]
    Subscribe(#[source] gossipsub::SubscriptionError),
    /// mDNS could not start (no socket).
    #[error("mdns: {0}")]
    Mdns(#[source] std::io::Error),
}

/// Every behaviour of a node, polled by the event loop's swarm.
#[derive(NetworkBehaviour)]
pub(crate) struct Behaviour {
    pub(crate) stream: libp2p_stream::Behaviour,
    pub(crate) gossip: gossipsub::Behaviour,
    pub(crate) kad: kad::Behaviour<kad::store::MemoryStore>,
    pub(crate) identify: identify::Behaviour,
    pub(crate) ping: ping::Behaviour,
    pub(crate) mdns: Toggle<mdns::tokio::Behaviour>,
}

impl Behaviour {
    /// The behaviours of node `key` configured by `cfg`.
    pub(crate) fn new(key: &identity::Keypair, cfg: &NodeConfig) -> Result<Behaviour, BehaviourError> {
        let me = key.public().to_peer_id();
        let gossip_cfg = gossipsub::ConfigBuilder::default()
            .heartbeat_interval(cfg.heartbeat.min(Duration::from_secs(1)))
            .heartbeat_initial_delay(Duration::from_millis(10))
            .validation_mode(gossipsub::ValidationMode::Strict)
            .max_transmit_size(MAX_HEARTBEAT_BYTES + 4096)
            .build()
            .map_err(BehaviourError::GossipConfig)?;
        let mut gossip = gossipsub::Behaviour::new(gossipsub::MessageAuthenticity::Signed(key.clone()), gossip_cfg)
            .map_err(BehaviourError::Gossip)?;
        gossip.subscribe(&gossipsub::IdentTopic::new(HEARTBEAT_TOPIC)).map_err(BehaviourError::Subscribe)?;
        let mut kad_cfg = kad::Config::new(StreamProtocol::new(KAD_PROTOCOL));
        kad_cfg.set_query_timeout(cfg.request_timeout);
        // Every object held here may be a provided key (the default store
        // stops at 1,024), and provider records of others count as records.
        let store_cfg = kad::store::MemoryStoreConfig {
            max_records: MAX_DHT_KEYS,
            max_provided_keys: MAX_DHT_KEYS,
            ..Default::default()
        };
        let store = kad::store::MemoryStore::with_config(me, store_cfg);
        let mut kad = kad::Behaviour::with_config(me, store, kad_cfg);
        kad.set_mode(Some(kad::Mode::Server));
        let identify = identify::Behaviour::new(
            identify::Config::new("/manta/id/1".into(), key.public()).with_push_listen_addr_updates(true),
        );
        let ping = ping::Behaviour::new(ping::Config::new().with_interval(Duration::from_secs(5)));
        let mdns = if cfg.mdns {
            Some(mdns::tokio::Behaviour::new(mdns::Config::default(), me).map_err(BehaviourError::Mdns)?)
        } else {
            None
        };
        Ok(Behaviour { stream: libp2p_stream::Behaviour::new(), gossip, kad, identify, ping, mdns: Toggle::from(mdns) })
    }
}
