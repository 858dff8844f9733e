//! The event loop: the one task that owns the `Swarm`.
//!
//! It selects over swarm events, commands (from `Node` handles, the manta
//! runtime's backend and the node's own blocking helpers) and the heartbeat
//! timer. Nothing in it blocks: serving a chunk (encoding a window of an
//! object) and decoding fetched bytes run on tokio's blocking threads and
//! report back as commands.
//!
//! Discovery: bootstrap addresses are dialled at start (and re-dialled each
//! heartbeat, at most `MAX_REDIALS` times, until some peer is connected);
//! mDNS discoveries are dialled; every address learnt (identify, mDNS, the
//! endpoint of a connection we dialled, heartbeats) is given to Kademlia,
//! which does not learn addresses itself.

use crate::behaviour::{Behaviour, BehaviourEvent, HEARTBEAT_TOPIC};
use crate::config::NodeConfig;
use crate::membership::{Member, Membership, MembershipEvent};
use crate::node::{Backend, NodeError};
use crate::wire::{self, Heartbeat, Resource};
use futures::StreamExt;
use libp2p::swarm::SwarmEvent;
use libp2p::{gossipsub, identify, identity, kad, mdns, Multiaddr, PeerId, Swarm};
use manta::{ObjectId, Runtime};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};

/// Most times the bootstrap addresses are re-dialled while no peer is
/// connected (one try per heartbeat).
const MAX_REDIALS: u32 = 120;
/// Longest a node that shuts down keeps its swarm running to send the
/// heartbeat that says it is leaving (it stops sooner, once every peer
/// has closed its connection on receiving it).
const LEAVE_GRACE: Duration = Duration::from_secs(1);

/// How often queued DHT announcements go out (see `Backend::announce`).
pub(crate) const ANNOUNCE_EVERY: Duration = Duration::from_millis(100);

/// Everything the loop can be asked to do.
pub(crate) enum Command {
    Status(oneshot::Sender<Vec<Member>>),
    /// Add a subscriber; acknowledged once it is registered.
    Subscribe(crossbeam_channel::Sender<MembershipEvent>, oneshot::Sender<()>),
    Dial(Multiaddr, oneshot::Sender<Result<PeerId, String>>),
    Unprovide(ObjectId),
    /// Send the queued announcements now.
    Flush(oneshot::Sender<()>),
    /// Record a peer's addresses (from a ref's hint); acknowledged so the
    /// fetch dials only once the swarm knows them.
    Learn(PeerId, Vec<Multiaddr>, oneshot::Sender<()>),
    /// The providers of an object in the DHT (all found, when the query ends).
    Providers(ObjectId, oneshot::Sender<Vec<PeerId>>),
    /// Store a record in the DHT (a named actor).
    PutRecord(Vec<u8>, Vec<u8>),
    /// A record from the DHT (the first found), or `None`.
    GetRecord(Vec<u8>, oneshot::Sender<Option<Vec<u8>>>),
    Shutdown,
}

/// A transport error's text including its cause (libp2p's `Display` of
/// `TransportError::Other` prints nothing of the io error inside).
fn transport_error(e: &libp2p::TransportError<std::io::Error>) -> String {
    match e {
        libp2p::TransportError::Other(io) => io.to_string(),
        other => other.to_string(),
    }
}

pub(crate) struct EventLoop {
    swarm: Swarm<Behaviour>,
    cfg: NodeConfig,
    rt: Runtime,
    rx: mpsc::UnboundedReceiver<Command>,
    members: Membership,
    addrs: Vec<Multiaddr>,
    hint_sink: Option<Arc<Backend>>,
    seq: u64,
    /// Set once shutting down (the last heartbeat says so).
    leaving: bool,
    redials: u32,
    dht: HashMap<kad::QueryId, (oneshot::Sender<Vec<PeerId>>, Vec<PeerId>)>,
    dials: HashMap<libp2p::swarm::ConnectionId, oneshot::Sender<Result<PeerId, String>>>,
    records: HashMap<kad::QueryId, oneshot::Sender<Option<Vec<u8>>>>,
    /// Membership changes, for the remote-work state (dead peers) and then
    /// the subscribers.
    changes: crossbeam_channel::Receiver<MembershipEvent>,
    subs: Vec<crossbeam_channel::Sender<MembershipEvent>>,
    /// The IP each connected peer has on its connection (for the bulk lane).
    peer_ips: crate::bulk::PeerIps,
}

impl EventLoop {
    pub fn new(
        key: identity::Keypair,
        cfg: NodeConfig,
        rt: Runtime,
        rx: mpsc::UnboundedReceiver<Command>,
    ) -> Result<EventLoop, NodeError> {
        let me = key.public().to_peer_id();
        let start = |e: String| NodeError::Start(e);
        let behaviour = Behaviour::new(&key, &cfg).map_err(start)?;
        let (idle, handshake) = (cfg.idle_timeout, cfg.request_timeout);
        let tcp = || libp2p::tcp::Config::default().nodelay(true);
        let builder = libp2p::SwarmBuilder::with_existing_identity(key).with_tokio();
        let swarm = match cfg.secret {
            #[cfg(not(feature = "quic"))]
            None => builder
                .with_tcp(tcp(), libp2p::noise::Config::new, libp2p::yamux::Config::default)
                .map_err(|e| start(format!("tcp: {e}")))?
                .with_behaviour(|_| behaviour)
                .map_err(|e| start(format!("behaviour: {e}")))?
                .with_swarm_config(|c| c.with_idle_connection_timeout(idle))
                .build(),
            // TCP and QUIC side by side: listen on `/ip4/.../udp/0/quic-v1`
            // as well to use it (not with a cluster secret: pnet is TCP-only).
            #[cfg(feature = "quic")]
            None => builder
                .with_tcp(tcp(), libp2p::noise::Config::new, libp2p::yamux::Config::default)
                .map_err(|e| start(format!("tcp: {e}")))?
                .with_quic()
                .with_behaviour(|_| behaviour)
                .map_err(|e| start(format!("behaviour: {e}")))?
                .with_swarm_config(|c| c.with_idle_connection_timeout(idle))
                .build(),
            // A private network: every TCP connection first runs the
            // pre-shared-key handshake; without the key, Noise then fails.
            Some(psk) => builder
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
                .map_err(|e| start(format!("transport: {e}")))?
                .with_behaviour(|_| behaviour)
                .map_err(|e| start(format!("behaviour: {e}")))?
                .with_swarm_config(|c| c.with_idle_connection_timeout(idle))
                .build(),
        };
        let mut members = Membership::new(me, cfg.failure_timeout);
        let (changes_tx, changes) = crossbeam_channel::unbounded();
        members.subscribe(changes_tx);
        Ok(EventLoop {
            swarm,
            cfg,
            rt,
            rx,
            members,
            addrs: Vec::new(),
            hint_sink: None,
            // From the clock, so a restarted node's heartbeats are newer
            // than its old ones (peers drop stale sequence numbers).
            seq: crate::membership::clock_seq(),
            leaving: false,
            redials: 0,
            dht: HashMap::new(),
            dials: HashMap::new(),
            records: HashMap::new(),
            changes,
            subs: Vec::new(),
            peer_ips: Default::default(),
        })
    }

    /// Shares the table of connected peers' IPs (kept up to date here).
    pub fn set_peer_ips(&mut self, ips: crate::bulk::PeerIps) {
        self.peer_ips = ips;
    }

    /// Binds every listen address; returns once each has an address (at
    /// most 10 s), with the addresses bound so far.
    pub async fn bind(mut self) -> Result<(EventLoop, Vec<Multiaddr>), NodeError> {
        let mut waiting = std::collections::HashSet::new();
        for addr in self.cfg.listen.clone() {
            let id = self
                .swarm
                .listen_on(addr.clone())
                .map_err(|e| NodeError::Listen { addr: addr.to_string(), reason: transport_error(&e) })?;
            waiting.insert(id);
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while !waiting.is_empty() {
            let ev = tokio::time::timeout_at(deadline, self.swarm.select_next_some())
                .await
                .map_err(|_| NodeError::Start("no listen address bound within 10 s".into()))?;
            match ev {
                SwarmEvent::NewListenAddr { listener_id, address } => {
                    waiting.remove(&listener_id);
                    self.addrs.push(address);
                }
                SwarmEvent::ListenerClosed { addresses, reason, .. } => {
                    let reason = reason.err().map_or("closed".to_string(), |e| e.to_string());
                    return Err(NodeError::Listen { addr: format!("{addresses:?}"), reason });
                }
                SwarmEvent::ListenerError { error, .. } => {
                    return Err(NodeError::Listen { addr: "?".into(), reason: error.to_string() });
                }
                other => self.on_swarm(other),
            }
        }
        for addr in self.cfg.bootstrap.clone() {
            self.dial(addr);
        }
        let addrs = self.addrs.clone();
        Ok((self, addrs))
    }

    /// A handle to open and accept streams.
    pub fn control(&self) -> libp2p_stream::Control {
        self.swarm.behaviour().stream.new_control()
    }

    pub fn set_hint_sink(&mut self, b: Arc<Backend>) {
        self.hint_sink = Some(b);
    }

    pub async fn run(mut self) {
        let mut timer = tokio::time::interval(self.cfg.heartbeat);
        timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut announce = tokio::time::interval(ANNOUNCE_EVERY);
        announce.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                ev = self.swarm.select_next_some() => self.on_swarm(ev),
                cmd = self.rx.recv() => match cmd {
                    None => break,
                    Some(Command::Shutdown) => {
                        self.leave().await;
                        break;
                    }
                    Some(c) => self.on_command(c),
                },
                _ = timer.tick() => self.on_tick(),
                _ = announce.tick() => self.announce(),
            }
        }
        tracing::debug!(peer = %self.swarm.local_peer_id(), "node event loop stopped");
        // Fetch tasks still running are dropped with the tokio runtime;
        // their fetches then fail with `PeerUnreachable`, never hang.
    }

    fn dial(&mut self, addr: Multiaddr) {
        if let Err(e) = self.swarm.dial(addr.clone()) {
            tracing::debug!(%addr, error = %e, "dial failed");
        }
    }

    fn learn(&mut self, peer: PeerId, addr: Multiaddr) {
        if peer == *self.swarm.local_peer_id() {
            return;
        }
        self.swarm.add_peer_address(peer, addr.clone());
        self.swarm.behaviour_mut().kad.add_address(&peer, addr);
    }

    fn me(&self) -> Member {
        let stats = self.rt.store_stats();
        Member {
            peer: *self.swarm.local_peer_id(),
            addrs: self.addrs.clone(),
            resources: self.resources(),
            queue_len: self.rt.queued_tasks() as u64,
            store_bytes: stats.bytes_in_memory as u64,
            store_capacity: stats.capacity as u64,
            fn_hash: self.cfg.fn_hash,
            alive: true,
            is_self: true,
            last_heartbeat_age: Duration::ZERO,
        }
    }

    fn resources(&self) -> Vec<Resource> {
        self.rt
            .resources()
            .into_iter()
            .take(wire::MAX_RESOURCES)
            .map(|(name, total, free)| Resource { name: name.to_string(), total, free: free.min(total) })
            .filter(|r| r.name.len() <= wire::MAX_RESOURCE_NAME_BYTES)
            .collect()
    }

    /// Tells peers this node is leaving (a last heartbeat, `leaving` set)
    /// and runs the swarm until every peer has closed its connection (a
    /// peer closes on receiving it), at most [`LEAVE_GRACE`]. A fixed short
    /// grace was not enough on a loaded machine: the heartbeat could still
    /// be queued when the node stopped.
    async fn leave(&mut self) {
        if self.cfg.observer || self.swarm.connected_peers().next().is_none() {
            return;
        }
        self.leaving = true;
        self.publish_heartbeat();
        let _ = tokio::time::timeout(LEAVE_GRACE, async {
            while self.swarm.connected_peers().next().is_some() {
                let ev = self.swarm.select_next_some().await;
                self.on_swarm(ev);
            }
        })
        .await;
    }

    fn publish_heartbeat(&mut self) {
        if self.cfg.observer {
            return;
        }
        let me = self.me();
        self.seq += 1;
        let hb = Heartbeat {
            peer: me.peer.to_bytes(),
            addrs: me.addrs.iter().take(wire::MAX_ADDRS).map(|a| a.to_vec()).collect(),
            seq: self.seq,
            resources: me.resources,
            queue_len: me.queue_len,
            store_bytes: me.store_bytes,
            store_capacity: me.store_capacity,
            fn_hash: me.fn_hash,
            leaving: self.leaving,
        };
        let topic = gossipsub::IdentTopic::new(HEARTBEAT_TOPIC);
        if let Err(e) = self.swarm.behaviour_mut().gossip.publish(topic, wire::encode_heartbeat(&hb)) {
            // `NoPeersSubscribedToTopic` until a peer's subscription arrives.
            tracing::trace!(error = %e, "heartbeat not published");
        }
    }

    /// Announces the queued objects in the DHT.
    fn announce(&mut self) {
        let Some(b) = self.hint_sink.clone() else { return };
        for id in b.take_queued() {
            if !self.rt.backend().holds_object(id) {
                continue; // freed (or failed) before its turn
            }
            if let Err(e) = self.swarm.behaviour_mut().kad.start_providing(kad::RecordKey::new(&id.to_bytes())) {
                tracing::warn!(object = %id, error = %e, "cannot announce object in the DHT");
            }
        }
    }

    /// Gives the remote-work state the member table and the peers that
    /// died since the last call, then passes the changes to subscribers.
    fn share_members(&mut self) {
        let Some(b) = self.hint_sink.clone() else { return };
        let table: Vec<Member> =
            self.members.snapshot(self.me(), Instant::now()).into_iter().filter(|m| !m.is_self).collect();
        *b.work.members.write().unwrap_or_else(|p| p.into_inner()) = table;
        for ev in self.changes.try_iter().collect::<Vec<_>>() {
            if let MembershipEvent::Died(peer) = ev {
                b.work.peer_died(peer);
            }
            // Subscribers hear of a change once the node has acted on it.
            self.subs.retain(|s| s.send(ev.clone()).is_ok());
        }
    }

    fn on_tick(&mut self) {
        if let Some(b) = &self.hint_sink {
            b.work.sweep_sent();
        }
        self.publish_heartbeat();
        self.members.tick(Instant::now());
        self.share_members();
        if self.swarm.connected_peers().next().is_none() && self.redials < MAX_REDIALS {
            self.redials += 1;
            for addr in self.cfg.bootstrap.clone() {
                self.dial(addr);
            }
        }
    }

    fn on_command(&mut self, c: Command) {
        match c {
            Command::Status(tx) => {
                let _ = tx.send(self.members.snapshot(self.me(), Instant::now()));
            }
            Command::Subscribe(tx, done) => {
                self.subs.push(tx);
                let _ = done.send(());
            }
            Command::Dial(addr, tx) => {
                let opts = libp2p::swarm::dial_opts::DialOpts::unknown_peer_id().address(addr).build();
                let id = opts.connection_id();
                match self.swarm.dial(opts) {
                    Ok(()) => {
                        self.dials.insert(id, tx);
                    }
                    Err(e) => {
                        let _ = tx.send(Err(e.to_string()));
                    }
                }
            }
            Command::Flush(done) => {
                self.announce();
                let _ = done.send(());
            }
            Command::Unprovide(id) => {
                self.swarm.behaviour_mut().kad.stop_providing(&kad::RecordKey::new(&id.to_bytes()))
            }
            Command::Learn(peer, addrs, done) => {
                for a in addrs {
                    self.learn(peer, a);
                }
                let _ = done.send(());
            }
            Command::Providers(id, tx) => {
                let q = self.swarm.behaviour_mut().kad.get_providers(kad::RecordKey::new(&id.to_bytes()));
                self.dht.insert(q, (tx, Vec::new()));
            }
            Command::PutRecord(key, value) => {
                let record = kad::Record::new(kad::RecordKey::new(&key), value);
                if let Err(e) = self.swarm.behaviour_mut().kad.put_record(record, kad::Quorum::One) {
                    tracing::warn!(error = %e, "cannot store a DHT record");
                }
            }
            Command::GetRecord(key, tx) => {
                use kad::store::RecordStore;
                let key = kad::RecordKey::new(&key);
                let local = self.swarm.behaviour_mut().kad.store_mut().get(&key).map(|r| r.into_owned().value);
                if let Some(v) = local {
                    let _ = tx.send(Some(v));
                } else {
                    let q = self.swarm.behaviour_mut().kad.get_record(key);
                    self.records.insert(q, tx);
                }
            }
            Command::Shutdown => {}
        }
    }

    fn on_swarm(&mut self, ev: SwarmEvent<BehaviourEvent>) {
        match ev {
            SwarmEvent::Behaviour(BehaviourEvent::Gossip(e)) => self.on_gossip(e),
            SwarmEvent::Behaviour(BehaviourEvent::Kad(e)) => self.on_kad(e),
            SwarmEvent::Behaviour(BehaviourEvent::Identify(identify::Event::Received { peer_id, info, .. })) => {
                for a in info.listen_addrs {
                    self.learn(peer_id, a);
                }
            }
            SwarmEvent::Behaviour(BehaviourEvent::Mdns(mdns::Event::Discovered(found))) => {
                for (peer, addr) in found {
                    self.learn(peer, addr.clone());
                    if !self.swarm.is_connected(&peer) {
                        self.dial(addr);
                    }
                }
            }
            SwarmEvent::NewListenAddr { address, .. } if !self.addrs.contains(&address) => {
                self.addrs.push(address);
                if let Some(b) = &self.hint_sink {
                    b.set_addrs(self.swarm.local_peer_id(), &self.addrs);
                }
            }
            SwarmEvent::ConnectionEstablished { peer_id, endpoint, connection_id, .. } => {
                if let Some(ip) = crate::bulk::ip_of(endpoint.get_remote_address()) {
                    self.peer_ips.lock().unwrap_or_else(|p| p.into_inner()).insert(peer_id, ip);
                }
                if endpoint.is_dialer() {
                    self.learn(peer_id, endpoint.get_remote_address().clone());
                }
                if let Some(tx) = self.dials.remove(&connection_id) {
                    let _ = tx.send(Ok(peer_id));
                }
            }
            SwarmEvent::OutgoingConnectionError { connection_id, error, .. } => {
                tracing::debug!(%error, "outgoing connection failed");
                if let Some(tx) = self.dials.remove(&connection_id) {
                    let _ = tx.send(Err(error.to_string()));
                }
            }
            SwarmEvent::ConnectionClosed { peer_id, cause, num_established, .. } => {
                tracing::debug!(%peer_id, ?cause, num_established, "connection closed");
                if num_established == 0 {
                    self.peer_ips.lock().unwrap_or_else(|p| p.into_inner()).remove(&peer_id);
                }
            }
            SwarmEvent::IncomingConnectionError { error, send_back_addr, .. } => {
                tracing::debug!(%send_back_addr, %error, "incoming connection failed");
            }
            _ => {}
        }
    }

    fn on_gossip(&mut self, e: gossipsub::Event) {
        match e {
            gossipsub::Event::Message { message, .. } => {
                let Some(source) = message.source else { return };
                let hb = match wire::decode_heartbeat(&message.data) {
                    Ok(hb) => hb,
                    Err(err) => {
                        tracing::warn!(%source, error = %err, "malformed heartbeat dropped");
                        return;
                    }
                };
                let leaving = hb.leaving;
                match self.members.on_heartbeat(source, hb, Instant::now()) {
                    Ok(addrs) => {
                        for a in addrs {
                            self.learn(source, a);
                        }
                        self.share_members();
                        if leaving {
                            // Closing tells the leaving node its goodbye
                            // arrived, so it can stop (see `leave`).
                            let _ = self.swarm.disconnect_peer_id(source);
                        }
                    }
                    Err(err) => tracing::warn!(%source, error = %err, "heartbeat refused"),
                }
            }
            gossipsub::Event::Subscribed { .. } => self.publish_heartbeat(),
            _ => {}
        }
    }

    fn on_kad(&mut self, e: kad::Event) {
        if let kad::Event::OutboundQueryProgressed { id, result: kad::QueryResult::GetRecord(r), .. } = &e {
            let found = match r {
                Ok(kad::GetRecordOk::FoundRecord(rec)) => Some(rec.record.value.clone()),
                Ok(_) | Err(_) => None,
            };
            if let Some(tx) = self.records.remove(id) {
                let _ = tx.send(found);
            }
            return;
        }
        let kad::Event::OutboundQueryProgressed { id, result: kad::QueryResult::GetProviders(r), step, .. } = e else {
            return;
        };
        let Some((_, found)) = self.dht.get_mut(&id) else { return };
        let mut finished = step.last;
        match r {
            Ok(kad::GetProvidersOk::FoundProviders { providers, .. }) => found.extend(providers),
            Ok(kad::GetProvidersOk::FinishedWithNoAdditionalRecord { .. }) => finished = true,
            Err(e) => {
                tracing::debug!(error = %e, "provider lookup failed");
                finished = true;
            }
        }
        if finished {
            if let Some((tx, found)) = self.dht.remove(&id) {
                let _ = tx.send(found);
            }
        }
    }
}
