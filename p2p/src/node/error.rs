//! What can go wrong starting or using a node, as typed errors with their
//! sources (`std::error::Error::source` walks down to libp2p's, tokio's,
//! ciborium's or the OS's own error).

use crate::cluster::SwarmError;
use crate::work::ActorRecordError;
use libp2p::swarm::DialError;
use libp2p::Multiaddr;
use std::time::Duration;

/// What can go wrong starting or using a node.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NodeError {
    /// The node could not be started.
    #[error("cannot start the node: {source}")]
    Start {
        /// Why.
        #[from]
        source: StartError,
    },
    /// A dial failed (unreachable, refused, or a handshake failed, e.g. a
    /// different cluster secret).
    #[error("dial of {addr} failed: {source}")]
    Dial {
        /// The address dialled.
        addr: Multiaddr,
        /// Why it failed.
        #[source]
        source: Box<DialError>,
    },
    /// The node has shut down.
    #[error("the node has shut down")]
    Shutdown,
    /// A wait gave up.
    #[error("timed out after {after:?} waiting for {waited_for}")]
    Timeout {
        /// What was waited for.
        waited_for: WaitedFor,
        /// How long.
        after: Duration,
    },
    /// Bytes that should hold a value (a ref, a handle, data holding them)
    /// did not.
    #[error("cannot decode: {0}")]
    Decode(#[source] ciborium::de::Error<std::io::Error>),
    /// A value could not be encoded (its `Serialize` failed).
    #[error("cannot encode: {0}")]
    Encode(#[source] ciborium::ser::Error<std::io::Error>),
    /// A named actor's record was found but is unusable.
    #[error(transparent)]
    ActorRecord(#[from] ActorRecordError),
}

/// What a [`NodeError::Timeout`] waited for.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum WaitedFor {
    /// At least this many live peers ([`crate::Node::wait_for_peers`]).
    Peers(usize),
    /// An actor registered under this name ([`crate::Node::get_actor`]).
    Actor(String),
}

impl std::fmt::Display for WaitedFor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WaitedFor::Peers(n) => write!(f, "{n} live peers"),
            WaitedFor::Actor(name) => write!(f, "an actor named `{name}`"),
        }
    }
}

/// Why a node could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// The node's tokio runtime could not be built.
    #[error("cannot start the node's tokio runtime: {0}")]
    Tokio(#[source] std::io::Error),
    /// One of the node's threads could not be started.
    #[error("cannot start a node thread: {0}")]
    Thread(#[source] std::io::Error),
    /// The node's thread ended before the node was up.
    #[error("the node thread exited during start")]
    ThreadExited,
    /// The swarm could not be built, or a listen address not bound.
    #[error(transparent)]
    Swarm(#[from] SwarmError),
    /// A listen address reachable from other hosts was asked for without a
    /// cluster secret: any host that reaches it would be a full member.
    #[error(
        "refusing to listen on {addr} without a cluster secret: any host that reaches it could join the cluster, \
         read its objects and run its registered functions; set a secret with `NodeBuilder::secret` (the `manta` \
         and `manta-node` commands read one from --secret-file or MANTA_SECRET), listen on 127.0.0.1 only, or \
         accept the risk with `NodeBuilder::insecure_open_network()`"
    )]
    OpenWithoutSecret {
        /// The address.
        addr: Multiaddr,
    },
    /// mDNS was turned on without a cluster secret: the node would announce
    /// itself on the LAN and take any host that answers as a member.
    #[error(
        "refusing to announce the node on the LAN by mDNS without a cluster secret; set a secret with \
         `NodeBuilder::secret` (the `manta` and `manta-node` commands read one from --secret-file or \
         MANTA_SECRET), or accept the risk with `NodeBuilder::insecure_open_network()`"
    )]
    MdnsWithoutSecret,
}
