//! Layer 3, cluster: who is in the cluster and how to reach them.
//!
//! - `behaviour`: the libp2p behaviours (streams, gossipsub, Kademlia,
//!   identify, ping, mDNS) and their configuration;
//! - `swarm`: building the swarm's transport (TCP/Noise/yamux, pnet);
//! - `counted`: byte counts of the swarm's sockets;
//! - `limits`: connection bounds (per IP, in all, per peer; streams per
//!   connection);
//! - `event_loop`: the one task that owns the swarm, and with it the
//!   libp2p-stream control;
//! - `command`: [`LoopHandle`], the command channel into the loop;
//! - `streams`: `StreamControl`, transport's only way to open and accept
//!   streams;
//! - `view`: what the loop publishes (addresses, owner hint, members);
//! - `announce`: the DHT announcement queue;
//! - `dht_store`: the Kademlia record store, with a share per peer;
//! - `membership`: the member table built from gossip heartbeats;
//! - `beats`: whether a beat is a full heartbeat or an alive beat;
//! - `placement`: where a task runs, a pure function of what the node knows.
//!
//! May use: `transport` (it implements `Streams` and `Directory` for it),
//! `wire`, `config`, `sync`. It never calls the work layer: what work must
//! act on (a peer died) goes out as [`ClusterEvent`]s on a channel that the
//! work layer drains on its own thread.
//!
//! Invariants: nothing but the event loop touches the swarm; the loop never
//! blocks, never runs user work and never takes another layer's locks; a
//! subscriber hears of a membership change only after the work layer has
//! acted on it (the change and the subscription travel on one ordered
//! channel to the work layer, which forwards changes after acting).

mod announce;
mod beats;
mod behaviour;
mod command;
mod counted;
pub(crate) mod dht_store;
mod event_loop;
mod limits;
mod membership;
pub(crate) mod placement;
mod streams;
mod swarm;
mod view;

pub(crate) use announce::Announcements;
pub use behaviour::{BehaviourError, HEARTBEAT_TOPIC, KAD_PROTOCOL};
pub(crate) use command::LoopHandle;
pub use counted::NetStats;
pub use event_loop::DhtLookup;
pub(crate) use event_loop::{ClusterParts, EventLoop};
pub use membership::{
    Health, Member, MembershipEvent, DOWN_REPORT_FOR, FORGET_GONE_AFTER, MAX_MEMBERS, MAX_MEMBER_ADDRS,
    MAX_MEMBER_ADDR_BYTES,
};
pub use swarm::SwarmError;
pub(crate) use view::ClusterView;

/// What the event loop tells the work layer, in the order it happened.
#[derive(Debug)]
pub(crate) enum ClusterEvent {
    /// A peer joined, died or came back (after the member table in the
    /// [`ClusterView`] was updated).
    Membership(MembershipEvent),
    /// A new subscriber: it hears of every change passed on after this.
    Subscribe(crossbeam_channel::Sender<MembershipEvent>),
    /// A heartbeat period passed (time-based upkeep).
    Tick,
    /// A peer that is not a live member has had no connection for a
    /// failure timeout: what it holds here (pins, actors) goes.
    Gone(libp2p::PeerId),
}
