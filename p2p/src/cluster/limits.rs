//! Connection bounds: how many connections a node holds, per remote IP and
//! in all, so a flood of connections (or of half-finished handshakes)
//! cannot exhaust its memory or descriptors.
//!
//! - [`connection_limits`]: libp2p's own bounds (pending inbound
//!   handshakes, established inbound, established in all, per peer);
//! - [`IpLimits`]: inbound connections per remote IP (libp2p has no such
//!   bound), counted from the start of the handshake until the connection
//!   closes or fails.
//!
//! Memory: libp2p 0.57's `memory_connection_limits` is not in this build's
//! lock file, so memory is bounded by manta's own caps instead: these
//! connection counts, yamux's stream cap per connection
//! ([`MAX_STREAMS_PER_CONNECTION`]), and the transport layer's per-peer
//! stream caps and byte budgets (`transport::guard`).
//!
//! Invariant: every connection counted in [`IpLimits`] is uncounted exactly
//! once (closed, failed during its handshake, or denied by another
//! behaviour after this one admitted it).

use libp2p::core::transport::PortUse;
use libp2p::core::Endpoint;
use libp2p::swarm::{
    dummy, ConnectionClosed, ConnectionDenied, ConnectionId, FromSwarm, ListenFailure, NetworkBehaviour, THandler,
    THandlerInEvent, THandlerOutEvent, ToSwarm,
};
use libp2p::{connection_limits, Multiaddr, PeerId};
use std::collections::HashMap;
use std::convert::Infallible;
use std::net::IpAddr;
use std::task::{Context, Poll};

/// Most inbound connections still in their handshake, in all.
pub(crate) const MAX_PENDING_INBOUND: u32 = 64;
/// Most established inbound connections.
pub(crate) const MAX_INBOUND: u32 = 256;
/// Most established connections in all.
pub(crate) const MAX_CONNECTIONS: u32 = 512;
/// Most connections with one peer (two nodes dialling each other at once
/// may briefly hold two).
pub(crate) const MAX_PER_PEER: u32 = 4;
/// Most yamux streams on one connection, both directions: a peer's object
/// stream pool (16 idle, a few busy), its mail streams, and gossipsub,
/// Kademlia, identify and ping, with room to spare (yamux's default is 512).
pub(crate) const MAX_STREAMS_PER_CONNECTION: usize = 128;
/// Most inbound streams negotiating their protocol at once per connection
/// (libp2p's default is 128).
pub(crate) const MAX_NEGOTIATING_STREAMS: usize = 32;

/// libp2p's connection bounds with manta's values.
pub(crate) fn connection_limits() -> connection_limits::Behaviour {
    connection_limits::Behaviour::new(
        connection_limits::ConnectionLimits::default()
            .with_max_pending_incoming(Some(MAX_PENDING_INBOUND))
            .with_max_established_incoming(Some(MAX_INBOUND))
            .with_max_established(Some(MAX_CONNECTIONS))
            .with_max_established_per_peer(Some(MAX_PER_PEER)),
    )
}

/// Why a connection was refused by [`IpLimits`].
#[derive(Debug, thiserror::Error)]
#[error("{ip} already has {max} connections to this node")]
pub(crate) struct TooManyFromIp {
    ip: IpAddr,
    max: usize,
}

/// Inbound connections per remote IP (see the module docs).
#[derive(Debug)]
pub(crate) struct IpLimits {
    max: usize,
    per_ip: HashMap<IpAddr, usize>,
    counted: HashMap<ConnectionId, IpAddr>,
}

impl IpLimits {
    /// At most `max` inbound connections per remote IP.
    pub(crate) fn new(max: usize) -> IpLimits {
        IpLimits { max, per_ip: HashMap::new(), counted: HashMap::new() }
    }

    fn uncount(&mut self, id: ConnectionId) {
        let Some(ip) = self.counted.remove(&id) else { return };
        if let Some(n) = self.per_ip.get_mut(&ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.per_ip.remove(&ip);
            }
        }
    }
}

fn ip_of(addr: &Multiaddr) -> Option<IpAddr> {
    addr.iter().find_map(|p| match p {
        libp2p::multiaddr::Protocol::Ip4(ip) => Some(IpAddr::V4(ip)),
        libp2p::multiaddr::Protocol::Ip6(ip) => Some(IpAddr::V6(ip)),
        _ => None,
    })
}

impl NetworkBehaviour for IpLimits {
    type ConnectionHandler = dummy::ConnectionHandler;
    type ToSwarm = Infallible;

    fn handle_pending_inbound_connection(
        &mut self,
        id: ConnectionId,
        _local: &Multiaddr,
        remote: &Multiaddr,
    ) -> Result<(), ConnectionDenied> {
        let Some(ip) = ip_of(remote) else { return Ok(()) };
        let n = self.per_ip.entry(ip).or_default();
        if *n >= self.max {
            return Err(ConnectionDenied::new(TooManyFromIp { ip, max: self.max }));
        }
        *n += 1;
        self.counted.insert(id, ip);
        Ok(())
    }

    fn handle_established_inbound_connection(
        &mut self,
        _: ConnectionId,
        _: PeerId,
        _: &Multiaddr,
        _: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        Ok(dummy::ConnectionHandler)
    }

    fn handle_established_outbound_connection(
        &mut self,
        _: ConnectionId,
        _: PeerId,
        _: &Multiaddr,
        _: Endpoint,
        _: PortUse,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        Ok(dummy::ConnectionHandler)
    }

    fn on_swarm_event(&mut self, event: FromSwarm) {
        match event {
            FromSwarm::ConnectionClosed(ConnectionClosed { connection_id, .. }) => self.uncount(connection_id),
            // A failed handshake, or a connection another behaviour denied.
            FromSwarm::ListenFailure(ListenFailure { connection_id, .. }) => self.uncount(connection_id),
            _ => {}
        }
    }

    fn on_connection_handler_event(&mut self, _: PeerId, _: ConnectionId, event: THandlerOutEvent<Self>) {
        libp2p::core::util::unreachable(event)
    }

    fn poll(&mut self, _: &mut Context<'_>) -> Poll<ToSwarm<Self::ToSwarm, THandlerInEvent<Self>>> {
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_per_ip_and_uncounts_once() {
        let mut l = IpLimits::new(2);
        let local: Multiaddr = "/ip4/127.0.0.1/tcp/1".parse().unwrap_or_else(|_| unreachable!());
        let a: Multiaddr = "/ip4/10.0.0.1/tcp/5".parse().unwrap_or_else(|_| unreachable!());
        let b: Multiaddr = "/ip4/10.0.0.2/tcp/5".parse().unwrap_or_else(|_| unreachable!());
        let id = ConnectionId::new_unchecked;
        assert!(l.handle_pending_inbound_connection(id(1), &local, &a).is_ok());
        assert!(l.handle_pending_inbound_connection(id(2), &local, &a).is_ok());
        assert!(l.handle_pending_inbound_connection(id(3), &local, &a).is_err());
        assert!(l.handle_pending_inbound_connection(id(4), &local, &b).is_ok());
        l.uncount(id(1));
        l.uncount(id(1));
        assert!(l.handle_pending_inbound_connection(id(5), &local, &a).is_ok());
        assert!(l.handle_pending_inbound_connection(id(6), &local, &a).is_err());
        for i in [2, 4, 5] {
            l.uncount(id(i));
        }
        assert!(l.per_ip.is_empty() && l.counted.is_empty());
    }
}
