//! Building a node's swarm: its transport (TCP, Noise, yamux; QUIC beside
//! it with the `quic` feature; a pre-shared-key private network with a
//! cluster secret) and its behaviours, and why that can fail.
//!
//! Invariant: with a cluster secret every connection runs the pnet
//! handshake before Noise, bounded by the request timeout (with another
//! key the handshake reads garbage and could wait forever for a frame).

use super::behaviour::{Behaviour, BehaviourError};
use crate::config::NodeConfig;
use libp2p::{identity, Multiaddr, Swarm};
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

/// The swarm of node `key` configured by `cfg` (not listening yet).
pub(super) fn build(key: identity::Keypair, cfg: &NodeConfig) -> Result<Swarm<Behaviour>, SwarmError> {
    let behaviour = Behaviour::new(&key, cfg)?;
    match cfg.secret {
        None => open(key, behaviour, cfg.idle_timeout),
        Some(psk) => private(key, behaviour, psk, cfg.idle_timeout, cfg.request_timeout),
    }
}

fn tcp() -> libp2p::tcp::Config {
    libp2p::tcp::Config::default().nodelay(true)
}

/// TCP (and QUIC beside it with the `quic` feature: listen on
/// `/ip4/.../udp/0/quic-v1` as well to use it).
fn open(key: identity::Keypair, behaviour: Behaviour, idle: Duration) -> Result<Swarm<Behaviour>, SwarmError> {
    let builder = libp2p::SwarmBuilder::with_existing_identity(key)
        .with_tokio()
        .with_tcp(tcp(), libp2p::noise::Config::new, libp2p::yamux::Config::default)
        .map_err(transport)?;
    #[cfg(feature = "quic")]
    let builder = builder.with_quic();
    Ok(builder
        .with_behaviour(|_| behaviour)
        .map_err(transport)?
        .with_swarm_config(|c| c.with_idle_connection_timeout(idle))
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
                    .and_then(move |socket, _| libp2p::pnet::PnetConfig::new(psk).handshake(socket))
                    .upgrade(Version::V1)
                    .authenticate(noise)
                    .multiplex(libp2p::yamux::Config::default())
                    // With another key the handshake reads garbage and
                    // could wait forever for a frame: bound it.
                    .timeout(handshake),
            )
        })
        .map_err(transport)?
        .with_behaviour(|_| behaviour)
        .map_err(transport)?
        .with_swarm_config(|c| c.with_idle_connection_timeout(idle))
        .build())
}
