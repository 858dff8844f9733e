//! The commands the event loop takes, and [`LoopHandle`], the cheap clone
//! every other part of the node uses to send them: the only way into the
//! swarm besides the stream control (`streams`).
//!
//! Invariant: every command with a reply carries a one-shot sender; if the
//! loop has stopped, the command (and so the sender) is dropped, and the
//! receiver resolves at once with an error instead of waiting forever.

use super::event_loop::DhtLookup;
use super::membership::{Member, MembershipEvent};
use crate::transport::Directory;
use libp2p::swarm::DialError;
use libp2p::{Multiaddr, PeerId};
use manta::ObjectId;
use tokio::sync::{mpsc, oneshot};

/// Everything the loop can be asked to do.
pub(super) enum Command {
    /// The member table, this node first.
    Status(oneshot::Sender<Vec<Member>>),
    /// Add a subscriber; acknowledged once it is registered.
    Subscribe(crossbeam_channel::Sender<MembershipEvent>, oneshot::Sender<()>),
    /// Dial an address; the peer once connected, or why not.
    Dial(Multiaddr, oneshot::Sender<Result<PeerId, DialError>>),
    /// Withdraw an object's provider record.
    Unprovide(ObjectId),
    /// Send the queued announcements now.
    Flush(oneshot::Sender<()>),
    /// Record a peer's addresses (from a ref's hint); acknowledged so the
    /// fetch dials only once the swarm knows them.
    Learn(PeerId, Vec<Multiaddr>, oneshot::Sender<()>),
    /// The providers of an object in the DHT (all found, when the query ends).
    Providers(ObjectId, oneshot::Sender<Vec<PeerId>>),
    /// A provider lookup, measured (hops, time to the first provider).
    Lookup(ObjectId, oneshot::Sender<DhtLookup>),
    /// Store a record in the DHT (a named actor).
    PutRecord(Vec<u8>, Vec<u8>),
    /// A record from the DHT (the first found), or `None`.
    GetRecord(Vec<u8>, oneshot::Sender<Option<Vec<u8>>>),
    /// Leave the cluster and stop.
    Shutdown,
}

/// Sends commands to the event loop. Cheap to clone.
#[derive(Clone, Debug)]
pub(crate) struct LoopHandle {
    tx: mpsc::UnboundedSender<Command>,
}

impl LoopHandle {
    /// A handle and the receiving end the loop owns.
    pub(super) fn new() -> (LoopHandle, mpsc::UnboundedReceiver<Command>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (LoopHandle { tx }, rx)
    }

    /// Sends a command that is answered on a one-shot channel.
    fn ask<T>(&self, make: impl FnOnce(oneshot::Sender<T>) -> Command) -> oneshot::Receiver<T> {
        let (tx, rx) = oneshot::channel();
        let _ = self.tx.send(make(tx)); // if the loop is gone, `rx` fails at once
        rx
    }

    /// The member table, this node first.
    pub(crate) fn status(&self) -> oneshot::Receiver<Vec<Member>> {
        self.ask(Command::Status)
    }

    /// Subscribes `to` to membership changes; fires once it is registered.
    pub(crate) fn subscribe(&self, to: crossbeam_channel::Sender<MembershipEvent>) -> oneshot::Receiver<()> {
        self.ask(|done| Command::Subscribe(to, done))
    }

    /// Dials `addr`: the peer once the connection is up, or why it failed.
    pub(crate) fn dial(&self, addr: Multiaddr) -> oneshot::Receiver<Result<PeerId, DialError>> {
        self.ask(|tx| Command::Dial(addr, tx))
    }

    /// Sends the queued DHT announcements now; fires once they are in this
    /// node's provider store.
    pub(crate) fn flush_announcements(&self) -> oneshot::Receiver<()> {
        self.ask(Command::Flush)
    }

    /// Withdraws this node's provider record of `id`.
    pub(crate) fn unprovide(&self, id: ObjectId) {
        let _ = self.tx.send(Command::Unprovide(id));
    }

    /// Stores a record in the DHT.
    pub(crate) fn put_record(&self, key: Vec<u8>, value: Vec<u8>) {
        let _ = self.tx.send(Command::PutRecord(key, value));
    }

    /// A record from the DHT (the first found), or `None`.
    pub(crate) fn get_record(&self, key: Vec<u8>) -> oneshot::Receiver<Option<Vec<u8>>> {
        self.ask(|tx| Command::GetRecord(key, tx))
    }

    /// Looks up `id`'s providers in the DHT, measuring the lookup.
    pub(crate) fn dht_lookup(&self, id: ObjectId) -> oneshot::Receiver<DhtLookup> {
        self.ask(|tx| Command::Lookup(id, tx))
    }

    /// Tells the loop to leave the cluster and stop.
    pub(crate) fn shutdown(&self) {
        let _ = self.tx.send(Command::Shutdown);
    }
}

impl Directory for LoopHandle {
    fn learn(&self, peer: PeerId, addrs: Vec<Multiaddr>) -> oneshot::Receiver<()> {
        self.ask(|done| Command::Learn(peer, addrs, done))
    }

    fn providers(&self, id: ObjectId) -> oneshot::Receiver<Vec<PeerId>> {
        self.ask(|tx| Command::Providers(id, tx))
    }
}
