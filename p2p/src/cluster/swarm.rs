//! Building a node's swarm: its transport (TCP, Noise, yamux; QUIC beside
//! it with the `quic` feature; a pre-shared-key private network with a
//! cluster secret) and its behaviours, and why that can fail.
//!
//! Every TCP socket is wrapped in `Counted` (`counted.rs`): the node's
//! byte counts.
//!
//! Invariants: with a cluster secret every connection runs the pnet
//! handshake before Noise, bounded by the request timeout (with another
//! key the handshake reads garbage and could wait forever for a frame);
//! every connection's yamux allows at most
//! `limits::MAX_STREAMS_PER_CONNECTION` streams, and at most
//! `limits::MAX_NEGOTIATING_STREAMS` inbound streams negotiate at once.

use super::behaviour::{Behaviour, BehaviourError};
use super::counted::{Counted, NetCounters};
use super::limits::{MAX_NEGOTIATING_STREAMS, MAX_STREAMS_PER_CONNECTION};
use crate::config::NodeConfig;
use libp2p::{identity, Multiaddr, Swarm};
use std::sync::Arc;
use std::time::Duration;

/// Why the swarm could not be built or bound.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SwarmError {
    /// The transport could not be built.
    #[error("cannot build the transport: {0}")]
    Transport(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// A behaviour could not be built.
    #[error("cannot build the behaviours: {0}")]
    Behaviour(#[from] BehaviourError),
    /// A listen address could not be bound.
    #[error("cannot listen on {addr}: {}", transport_text(source))]
    Listen {
        /// The address.
        addr: Multiaddr,
        /// Why.
        #[source]
        source: libp2p::TransportError<std::io::Error>,
    },
    /// A listener closed while the node was binding.
    #[error("the listener on {addrs:?} closed{}", source.as_ref().map(|e| format!(": {e}")).unwrap_or_default())]
    ListenerClosed {
        /// The addresses it had.
        addrs: Vec<Multiaddr>,
        /// Why, if it failed.
        #[source]
        source: Option<std::io::Error>,
    },
    /// A listener failed while the node was binding.
    #[error("a listener failed: {0}")]
    Listener(#[source] std::io::Error),
    /// Not every listen address was bound in time.
    #[error("no listen address bound within {0:?}")]
    BindTimeout(Duration),
}

/// A transport error's text including its cause (libp2p's `Display` of
/// `TransportError::Other` prints nothing of the io error inside).
fn transport_text(e: &libp2p::TransportError<std::io::Error>) -> String {
    match e {
        libp2p::TransportError::Other(io) => io.to_string(),
        other => other.to_string(),
    }
}

fn transport(e: impl std::error::Error + Send + Sync + 'static) -> SwarmError {
    SwarmError::Transport(Box::new(e))
}

/// The swarm of node `key` configured by `cfg` (not listening yet); its TCP
/// traffic is counted in `net`.
pub(super) fn build(
    key: identity::Keypair,
    cfg: &NodeConfig,
    net: Arc<NetCounters>,
) -> Result<Swarm<Behaviour>, SwarmError> {
    let behaviour = Behaviour::new(&key, cfg)?;
    match cfg.secret {
        None => open(key, behaviour, cfg.idle_timeout, net),
        Some(psk) => private(key, behaviour, psk, cfg.idle_timeout, cfg.request_timeout, net),
    }
}

fn tcp() -> libp2p::tcp::Config {
    libp2p::tcp::Config::default().nodelay(true)
}

/// yamux with manta's stream cap.
fn yamux() -> libp2p::yamux::Config {
    let mut c = libp2p::yamux::Config::default();
    c.set_max_num_streams(MAX_STREAMS_PER_CONNECTION);
    c
}

fn swarm_config(c: libp2p::swarm::Config, idle: Duration) -> libp2p::swarm::Config {
    c.with_idle_connection_timeout(idle).with_max_negotiating_inbound_streams(MAX_NEGOTIATING_STREAMS)
}

/// TCP (and QUIC beside it with the `quic` feature: listen on
/// `/ip4/.../udp/0/quic-v1` as well to use it; QUIC is not counted). The
/// same stack as the builder's `with_tcp`, with each socket counted.
fn open(
    key: identity::Keypair,
    behaviour: Behaviour,
    idle: Duration,
    net: Arc<NetCounters>,
) -> Result<Swarm<Behaviour>, SwarmError> {
    let builder = libp2p::SwarmBuilder::with_existing_identity(key).with_tokio();
    #[cfg(feature = "quic")]
    let builder = builder.with_quic();
    Ok(builder
        .with_other_transport(|key| {
            use libp2p::core::upgrade::Version;
            use libp2p::Transport;
            let noise = libp2p::noise::Config::new(key)?;
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>(
                libp2p::tcp::tokio::Transport::new(tcp())
                    .map(move |socket, _| Counted::new(socket, net.clone()))
                    .upgrade(Version::V1Lazy)
                    .authenticate(noise)
                    .multiplex(yamux()),
            )
        })
        .map_err(transport)?
        .with_behaviour(|_| behaviour)
        .map_err(transport)?
        .with_swarm_config(|c| swarm_config(c, idle))
        .build())
}

/// A private network: every TCP connection first runs the pre-shared-key
/// handshake; without the key, Noise then fails. (pnet is TCP-only.)
fn private(
    key: identity::Keypair,
    behaviour: Behaviour,
    psk: [u8; 32],
    idle: Duration,
    handshake: Duration,
    net: Arc<NetCounters>,
) -> Result<Swarm<Behaviour>, SwarmError> {
    Ok(libp2p::SwarmBuilder::with_existing_identity(key)
        .with_tokio()
        .with_other_transport(|key| {
            use libp2p::core::upgrade::Version;
            use libp2p::Transport;
            let noise = libp2p::noise::Config::new(key)?;
            let psk = libp2p::pnet::PreSharedKey::new(psk);
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>(
                libp2p::tcp::tokio::Transport::new(tcp())
                    .map(move |socket, _| Counted::new(socket, net.clone()))
                    .and_then(move |socket, _| libp2p::pnet::PnetConfig::new(psk).handshake(socket))
                    .upgrade(Version::V1)
                    .authenticate(noise)
                    .multiplex(yamux())
                    // With another key the handshake reads garbage and
                    // could wait forever for a frame: bound it.
                    .timeout(handshake),
            )
        })
        .map_err(transport)?
        .with_behaviour(|_| behaviour)
        .map_err(transport)?
        .with_swarm_config(|c| swarm_config(c, idle))
        .build())
}
