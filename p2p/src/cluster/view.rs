//! What the event loop publishes for the layers above it: this node's
//! listen addresses and the owner hint built from them, and the member
//! table (peers only) as of the last heartbeat or tick.
//!
//! Invariants: only the event loop writes (`set_addrs`, `set_members`);
//! readers get copies, never a lock held across their own work; the hint
//! always matches the addresses (both are replaced together, under the
//! addresses' lock).

use super::counted::{NetCounters, NetStats};
use super::membership::Member;
use crate::sync::{read_unpoisoned, write_unpoisoned};
use crate::transport::bulk::ip_of;
use crate::wire::hint;
use libp2p::{Multiaddr, PeerId};
use std::sync::{Arc, RwLock};

/// This node's addresses and the cluster as the event loop last saw it.
#[derive(Debug)]
pub(crate) struct ClusterView {
    me: PeerId,
    /// Listen addresses, non-loopback first.
    addrs: RwLock<Vec<Multiaddr>>,
    /// The owner hint written into refs: this node's id and `addrs`.
    hint: RwLock<Arc<[u8]>>,
    /// Every peer heard from (dead ones marked), not this node.
    members: RwLock<Vec<Member>>,
    /// Bytes on this node's libp2p sockets (written by the sockets).
    net: Arc<NetCounters>,
}

impl ClusterView {
    /// An empty view of node `me`, whose sockets count into `net`.
    pub(crate) fn new(me: PeerId, net: Arc<NetCounters>) -> ClusterView {
        ClusterView {
            me,
            addrs: RwLock::new(Vec::new()),
            hint: RwLock::new(Arc::from(&[][..])),
            members: RwLock::new(Vec::new()),
            net,
        }
    }

    /// Bytes moved on this node's libp2p connections so far.
    pub(crate) fn net_stats(&self) -> NetStats {
        self.net.stats()
    }

    /// This node's peer id.
    pub(crate) fn me(&self) -> PeerId {
        self.me
    }

    /// Records the listen addresses (non-loopback first, so other hosts
    /// try a reachable one first) and rebuilds the owner hint from them.
    pub(crate) fn set_addrs(&self, addrs: &[Multiaddr]) {
        let mut sorted = addrs.to_vec();
        sorted.sort_by_key(is_loopback);
        let mut held = write_unpoisoned(&self.addrs);
        *write_unpoisoned(&self.hint) = hint::encode(&self.me, &sorted).into();
        *held = sorted;
    }

    /// The listen addresses, non-loopback first.
    pub(crate) fn listen_addrs(&self) -> Vec<Multiaddr> {
        read_unpoisoned(&self.addrs).clone()
    }

    /// The owner hint of refs this node serializes.
    pub(crate) fn hint(&self) -> Arc<[u8]> {
        read_unpoisoned(&self.hint).clone()
    }

    /// Replaces the member table.
    pub(crate) fn set_members(&self, members: Vec<Member>) {
        *write_unpoisoned(&self.members) = members;
    }

    /// A copy of the member table.
    pub(crate) fn members(&self) -> Vec<Member> {
        read_unpoisoned(&self.members).clone()
    }

    /// Whether `peer` is alive, if it is in the member table.
    pub(crate) fn is_alive(&self, peer: PeerId) -> Option<bool> {
        read_unpoisoned(&self.members).iter().find(|m| m.peer == peer).map(|m| m.alive)
    }

    /// A peer's owner hint built from the member table (no addresses if
    /// it is not there).
    pub(crate) fn hint_of(&self, peer: PeerId) -> Vec<u8> {
        let members = read_unpoisoned(&self.members);
        let addrs = members.iter().find(|m| m.peer == peer).map(|m| m.addrs.clone()).unwrap_or_default();
        hint::encode(&peer, &addrs)
    }
}

fn is_loopback(a: &Multiaddr) -> bool {
    ip_of(a).is_some_and(|ip| ip.is_loopback())
}
