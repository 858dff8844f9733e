//! The libp2p behaviours a node runs, combined into one `NetworkBehaviour`,
//! and how they are configured.
//!
//! - `stream`: raw streams (libp2p-stream): object transfer
//!   (`transport::rpc`) and mail (`transport::outbox`/`inbox`) run over
//!   long-lived streams with manta's own framing, opened and accepted
//!   through the stream control that only the event loop hands out.
//! - `gossip`: gossipsub, signed messages, for heartbeats. A message is
//!   forwarded only once the event loop has checked it
//!   (`validate_messages`: `Accept`, `Reject` or `Ignore`, see
//!   `event_loop::gossip`), never before. Peer scoring counts only
//!   rejected messages ([`gossip_scoring`]): a peer that relays about nine
//!   within a few seconds is graylisted (its RPCs ignored) until its count
//!   decays.
//! - `kad`: Kademlia in server mode (forced: small clusters never confirm an
//!   external address), or client mode for an observer (so it is never put
//!   in anyone's routing table). Inbound records are filtered
//!   (`StoreInserts::FilterBoth`): the event loop stores a provider record
//!   only for a 16-byte object id, and a named-actor record only from the
//!   peer its owner hint names as host (see `event_loop::on_kad`); nothing
//!   else is stored for others. Store caps suit manta ([`MAX_DHT_KEYS`]
//!   keys this node provides, [`MAX_RECORDS`] records of at most
//!   [`MAX_RECORD_BYTES`]), and every other peer gets a share of the store
//!   (`dht_store`: records per host, provider records per peer).
//! - `identify`: tells peers our listen addresses (fed to Kademlia) and
//!   names manta and its version as agent (`manta/0.1.0`).
//! - `ping`: keeps connections alive and measures them.
//! - `mdns`: LAN discovery, present only when enabled.
//! - `limits`, `ip_limits`: connection bounds (see `limits`).

use super::dht_store::DhtStore;
use super::limits::{self, IpLimits};
use crate::config::NodeConfig;
use crate::wire::signed::MAX_SIGNED_RECORD_BYTES;
use crate::wire::MAX_HEARTBEAT_BYTES;
use libp2p::swarm::behaviour::toggle::Toggle;
use libp2p::swarm::NetworkBehaviour;
use libp2p::{connection_limits, gossipsub, identify, identity, kad, mdns, ping, StreamProtocol};
use std::time::Duration;

/// Kademlia protocol name (a private DHT, not the public IPFS one).
pub const KAD_PROTOCOL: &str = "/manta/kad/1";
/// Most provider keys (objects) this node provides in the DHT (others'
/// provider records are capped apart, in `dht_store`).
pub(crate) const MAX_DHT_KEYS: usize = 1 << 18;
/// Most records (named actors) a node keeps for the DHT.
pub(crate) const MAX_RECORDS: usize = 4096;
/// Largest record value a node keeps (an actor record).
pub(crate) const MAX_RECORD_BYTES: usize = MAX_SIGNED_RECORD_BYTES;
/// Most providers kept per object id.
pub(crate) const MAX_PROVIDERS_PER_KEY: usize = 20;
/// The identify protocol, and the agent this node says it runs.
pub(crate) const IDENTIFY_PROTOCOL: &str = "/manta/id/1";
/// What a node's identify says it runs: manta and its version.
pub(crate) const AGENT: &str = concat!("manta/", env!("CARGO_PKG_VERSION"));
/// The gossip topic of heartbeats.
pub const HEARTBEAT_TOPIC: &str = "manta/heartbeat/1";

/// Peers each node forwards heartbeats to (gossipsub's mesh degree D;
/// the default is 6): forwarding costs about n × (D − 1) heartbeats per
/// node per period, and a mesh of 4 still reaches every node in
/// O(log n) hops.
const MESH_N: usize = 3;

/// A gossipsub message id of 16 bytes (SHA-256 of the source, sequence
/// number and data, truncated) instead of the default `base58(source) +
/// seqno` string (~70 bytes): the ids in every IHAVE are most of the
/// gossip. The hash must resist collisions: gossipsub drops a message whose
/// id it has seen, so with a weak hash (FNV, as before) a member could
/// publish a message of its own whose id equals a victim's next heartbeat
/// (sequence numbers and contents are predictable) and have the real one
/// dropped everywhere, until the victim is declared dead.
fn short_message_id(m: &gossipsub::Message) -> gossipsub::MessageId {
    let mut h = ring::digest::Context::new(&ring::digest::SHA256);
    h.update(&m.source.map(|p| p.to_bytes()).unwrap_or_default());
    h.update(&m.sequence_number.unwrap_or_default().to_le_bytes());
    h.update(&m.data);
    let d = h.finish();
    gossipsub::MessageId::new(&d.as_ref()[..16])
}

/// How much one rejected heartbeat counts against the peer that relayed it
/// (gossipsub's P4, weight -1 on the squared count).
const INVALID_WEIGHT: f64 = -1.0;
/// How much of that count is left after each second (decay interval).
const INVALID_DECAY: f64 = 0.9;

/// Gossipsub peer scoring that penalises only invalid messages: those the
/// event loop rejects (malformed, or naming a peer that did not sign them)
/// and those whose signature fails. Every other component (time in mesh,
/// deliveries, IP colocation: all nodes of a test share 127.0.0.1,
/// behaviour, slow peers, the application's score) is off, so honest
/// members all score 0. The score of a peer is `-(count^2)`; at the default
/// thresholds it is no longer gossiped to below -10 (4 rejected messages),
/// not published to below -50 (8) and graylisted below -80 (9): its RPCs,
/// subscriptions included, are ignored until the count decays
/// ([`INVALID_DECAY`] per second). Scores outlive a reconnection (an
/// hour, gossipsub's default).
fn gossip_scoring() -> (gossipsub::PeerScoreParams, gossipsub::PeerScoreThresholds) {
    let topic = gossipsub::TopicScoreParams {
        topic_weight: 1.0,
        time_in_mesh_weight: 0.0,
        first_message_deliveries_weight: 0.0,
        mesh_message_deliveries_weight: 0.0,
        mesh_failure_penalty_weight: 0.0,
        invalid_message_deliveries_weight: INVALID_WEIGHT,
        invalid_message_deliveries_decay: INVALID_DECAY,
        ..Default::default()
    };
    let params = gossipsub::PeerScoreParams {
        topics: [(gossipsub::IdentTopic::new(HEARTBEAT_TOPIC).hash(), topic)].into_iter().collect(),
        app_specific_weight: 0.0,
        ip_colocation_factor_weight: 0.0,
        behaviour_penalty_weight: 0.0,
        slow_peer_weight: 0.0,
        ..Default::default()
    };
    (params, gossipsub::PeerScoreThresholds::default())
}

/// Why the behaviours could not be built.
#[derive(Debug, thiserror::Error)]
pub enum BehaviourError {
    /// gossipsub's configuration was refused.
    #[error("gossipsub config: {0}")]
    GossipConfig(#[source] gossipsub::ConfigBuilderError),
    /// gossipsub could not be built.
    #[error("gossipsub: {0}")]
    Gossip(&'static str),
    /// gossipsub's peer scoring was refused.
    #[error("gossipsub scoring: {0}")]
    GossipScore(String),
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
    pub(crate) limits: connection_limits::Behaviour,
    pub(crate) ip_limits: IpLimits,
    pub(crate) stream: libp2p_stream::Behaviour,
    pub(crate) gossip: gossipsub::Behaviour,
    pub(crate) kad: kad::Behaviour<DhtStore>,
    pub(crate) identify: identify::Behaviour,
    pub(crate) ping: ping::Behaviour,
    pub(crate) mdns: Toggle<mdns::tokio::Behaviour>,
}

impl Behaviour {
    /// The behaviours of node `key` configured by `cfg`.
    pub(crate) fn new(key: &identity::Keypair, cfg: &NodeConfig) -> Result<Behaviour, BehaviourError> {
        let me = key.public().to_peer_id();
        // Tuned by `examples/scale_bench.rs` (see p2p/SCALING.md): at rest a
        // node's traffic is the heartbeats it forwards and the gossip about
        // them. The defaults (an id of ~70 bytes per message, ids of three
        // heartbeat windows sent to six peers each second, every publish
        // sent to every peer) made that grow as n^2 per node. No lazy gossip
        // (IHAVE/IWANT) at all: heartbeats are periodic, so one a mesh link
        // missed is made good by the next, and the ids it sent were 20% of
        // the traffic at 32 nodes (IDONTWANT for these small messages was
        // tried too: no gain).
        let gossip_cfg = gossipsub::ConfigBuilder::default()
            .heartbeat_interval(cfg.heartbeat.min(Duration::from_secs(1)))
            .heartbeat_initial_delay(Duration::from_millis(10))
            .validation_mode(gossipsub::ValidationMode::Strict)
            .max_transmit_size(MAX_HEARTBEAT_BYTES + 4096)
            .message_id_fn(short_message_id)
            .flood_publish(false)
            .mesh_n(MESH_N)
            .mesh_n_low(MESH_N - 1)
            .mesh_n_high(MESH_N + 1)
            .mesh_outbound_min(1)
            .gossip_lazy(0)
            .gossip_factor(0.0)
            .history_gossip(1)
            // Forward nothing before the event loop checked it.
            .validate_messages()
            .build()
            .map_err(BehaviourError::GossipConfig)?;
        let mut gossip = gossipsub::Behaviour::new(gossipsub::MessageAuthenticity::Signed(key.clone()), gossip_cfg)
            .map_err(BehaviourError::Gossip)?;
        let (params, thresholds) = gossip_scoring();
        gossip.with_peer_score(params, thresholds).map_err(BehaviourError::GossipScore)?;
        gossip.subscribe(&gossipsub::IdentTopic::new(HEARTBEAT_TOPIC)).map_err(BehaviourError::Subscribe)?;
        let mut kad_cfg = kad::Config::new(StreamProtocol::new(KAD_PROTOCOL));
        kad_cfg.set_query_timeout(cfg.request_timeout);
        // Inbound records reach the store only through the event loop's
        // checks.
        kad_cfg.set_record_filtering(kad::StoreInserts::FilterBoth);
        // A record a node fetched is not pushed to others as a cache: they
        // would refuse it anyway (only its host may store it).
        kad_cfg.set_caching(kad::Caching::Disabled);
        // Every object held here may be a provided key (the default store
        // stops at 1,024); records are named actors only.
        // Each peer gets a share of the store (see `dht_store`).
        let store = DhtStore::new(me);
        let mut kad = kad::Behaviour::with_config(me, store, kad_cfg);
        // An observer asks, never answers: in client mode it does not
        // advertise the protocol, so no node puts it in its routing table.
        kad.set_mode(Some(if cfg.observer { kad::Mode::Client } else { kad::Mode::Server }));
        let identify = identify::Behaviour::new(
            identify::Config::new(IDENTIFY_PROTOCOL.into(), key.public())
                .with_agent_version(AGENT.to_string())
                .with_push_listen_addr_updates(true),
        );
        let ping = ping::Behaviour::new(ping::Config::new().with_interval(Duration::from_secs(5)));
        let mdns = if cfg.mdns {
            Some(mdns::tokio::Behaviour::new(mdns::Config::default(), me).map_err(BehaviourError::Mdns)?)
        } else {
            None
        };
        Ok(Behaviour {
            limits: limits::connection_limits(),
            ip_limits: IpLimits::new(cfg.max_connections_per_ip),
            stream: libp2p_stream::Behaviour::new(),
            gossip,
            kad,
            identify,
            ping,
            mdns: Toggle::from(mdns),
        })
    }
}
