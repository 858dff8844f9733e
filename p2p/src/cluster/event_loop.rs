//! The event loop: the one task that owns the `Swarm` (and so the
//! libp2p-stream control inside it).
//!
//! It selects over swarm events, commands from [`LoopHandle`]s (the node
//! handle, the runtime backend, the work layer, fetches), the heartbeat
//! timer and the announcement timer. Everything it does is swarm
//! bookkeeping that returns at once: it never decodes an object, never
//! submits a task to the manta runtime and never takes the work layer's
//! locks. What the layers above need from it, it publishes:
//! - this node's addresses and owner hint, and the member table, in the
//!   [`ClusterView`] (written here, read anywhere);
//! - membership changes (and subscriptions, and a tick per heartbeat) as
//!   [`ClusterEvent`]s on a channel, in order, which the work layer
//!   handles on its own thread (a dead peer's work is placed again there,
//!   off this task, before subscribers hear of the death);
//! - the stream control, only inside the [`StreamControl`] it makes once,
//!   through which transport opens and accepts streams.
//!
//! Beats: each heartbeat period (and on a peer's first gossip
//! subscription, at most once per period) this node publishes its full
//! heartbeat or an alive beat, as `BeatPlan` decides (see `beats`); an
//! alive beat from a peer whose state it does not hold makes its next beat
//! a full one that asks every member for theirs. Gossip messages are
//! checked before gossipsub forwards them, and repeated subscriptions are
//! ignored (see `gossip`).
//!
//! DHT announcements are taken from [`Announcements`] every
//! [`ANNOUNCE_EVERY`] (those queued a period before: see `announce`; all of
//! them on a flush) and started as provider records.
//!
//! Discovery: bootstrap addresses are dialled at start (and re-dialled each
//! heartbeat, at most `MAX_REDIALS` times, until some peer is connected);
//! mDNS discoveries are dialled; every address learnt (identify, mDNS, the
//! endpoint of a connection we dialled, heartbeats) is given to Kademlia,
//! which does not learn addresses itself, except that identify's addresses
//! of a peer that does not serve Kademlia (an observer) go to the swarm
//! only, so an observer leaves no routing entry behind.
//!
//! DHT records from peers reach the store only through [`EventLoop::on_kad`]'s
//! checks (the behaviour filters inserts): a provider record for a 16-byte
//! object id from the connected peer it names (Kademlia itself drops one
//! whose provider is not its sender); a record only under a named-actor
//! key, holding an actor record that decodes (capped) and whose owner hint
//! names its sender as host. The store (`dht_store`) then gives each peer
//! a share: named records per host, provider records (and their addresses)
//! per provider, this node's own always stored; a provider's records are
//! forgotten once it has been neither connected nor a live member for a
//! failure timeout (`sweep_providers`, each tick).
//!
//! Each connection's local and remote IP go to `PeerLinks` (where the bulk
//! lane issues that peer's tickets), its remote IP to `PeerIps` (where this
//! node finds that peer's lane).

use super::announce::Announcements;
use super::beats::BeatPlan;
use super::behaviour::{Behaviour, BehaviourEvent, HEARTBEAT_TOPIC, KAD_PROTOCOL};
use super::command::{Command, LoopHandle};
use super::counted::NetCounters;
use super::membership::{Member, Membership, MembershipEvent};
use super::streams::StreamControl;
use super::swarm::{self, SwarmError};
use super::view::ClusterView;
use super::ClusterEvent;
use crate::config::NodeConfig;
use crate::sync::lock_unpoisoned;
use crate::transport::bulk::{ip_of, route_source, PeerIps, PeerLinks};
use crate::transport::guard::Limits;
use crate::transport::Streams;
use crate::wire::{self, signed, Heartbeat, Resource};
use futures::StreamExt;
use libp2p::swarm::{DialError, SwarmEvent};
use libp2p::{gossipsub, identify, identity, kad, mdns, Multiaddr, PeerId, Swarm};
use manta::Runtime;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};

mod gossip;
mod records;

/// Most times the bootstrap addresses are re-dialled while no peer is
/// connected (one try per heartbeat).
const MAX_REDIALS: u32 = 120;
/// Longest a node that shuts down keeps its swarm running to send the
/// heartbeat that says it is leaving (it stops sooner, once every peer
/// has closed its connection on receiving it).
const LEAVE_GRACE: Duration = Duration::from_secs(1);
/// Longest binding the listen addresses may take.
const BIND_TIMEOUT: Duration = Duration::from_secs(10);

/// How often due DHT announcements go out (see `Announcements`: a copy goes
/// out one to two periods after it is made).
pub(crate) const ANNOUNCE_EVERY: Duration = Duration::from_millis(100);

/// One provider lookup in the DHT, measured (`Node::dht_lookup`).
#[derive(Debug, Clone, Default)]
pub struct DhtLookup {
    /// Every provider found.
    pub providers: Vec<PeerId>,
    /// Peers that had answered the query when the first provider was
    /// known: 0 when this node's own store had one, else an upper bound on
    /// the lookup's hops (Kademlia asks up to three peers at once). The
    /// whole query's count if none was found.
    pub hops: u32,
    /// Time until the first provider was known (or the query ended).
    pub first: Duration,
}

/// A lookup in flight: who asked, when, and what is known so far.
type Lookup = (oneshot::Sender<DhtLookup>, Instant, DhtLookup, bool);

/// What the cluster layer hands the layers above when the loop is bound.
pub(crate) struct ClusterParts {
    /// Commands to the loop.
    pub(crate) handle: LoopHandle,
    /// Opening and accepting streams.
    pub(crate) streams: Arc<dyn Streams>,
    /// Addresses, owner hint and member table.
    pub(crate) view: Arc<ClusterView>,
    /// The DHT announcement queue.
    pub(crate) announcements: Arc<Announcements>,
    /// The IP each connected peer has (where its bulk lane listens).
    pub(crate) peer_ips: PeerIps,
    /// Each peer's connections' local and remote IPs (where this node's
    /// lane takes that peer's tickets).
    pub(crate) links: Arc<PeerLinks>,
    /// Membership changes, subscriptions and ticks, in order.
    pub(crate) events: crossbeam_channel::Receiver<ClusterEvent>,
}

/// A named-actor lookup in flight: who waits for the record, and its key.
type RecordLookup = (oneshot::Sender<Option<Vec<u8>>>, Vec<u8>);

/// The task that owns the swarm (see the module docs).
pub(crate) struct EventLoop {
    swarm: Swarm<Behaviour>,
    cfg: NodeConfig,
    rt: Runtime,
    commands: mpsc::UnboundedReceiver<Command>,
    members: Membership,
    /// Listen addresses as bound (published, sorted, in `view`).
    addrs: Vec<Multiaddr>,
    view: Arc<ClusterView>,
    announcements: Arc<Announcements>,
    seq: u64,
    /// Full heartbeat or alive beat, each period.
    beats: BeatPlan,
    /// Peers subscribed to the heartbeat topic (see `gossip`).
    subs: gossip::Subscriptions,
    /// A beat changed the member table since `view` was last set.
    view_stale: bool,
    /// Set once shutting down (the last heartbeat says so).
    leaving: bool,
    redials: u32,
    dht: HashMap<kad::QueryId, (oneshot::Sender<Vec<PeerId>>, Vec<PeerId>)>,
    dials: HashMap<libp2p::swarm::ConnectionId, oneshot::Sender<Result<PeerId, DialError>>>,
    /// Named-actor lookups in flight: who waits, and the key (records are
    /// verified against it).
    records: HashMap<kad::QueryId, RecordLookup>,
    /// Measured provider lookups (`Command::Lookup`).
    lookups: HashMap<kad::QueryId, Lookup>,
    /// Membership changes from `members`, passed on as `events`.
    changes: crossbeam_channel::Receiver<MembershipEvent>,
    /// To the work layer.
    events: crossbeam_channel::Sender<ClusterEvent>,
    /// The IP each connected peer has on its connection (for the bulk lane).
    peer_ips: PeerIps,
    /// Each connection's local and remote IP (for this node's bulk lane).
    links: Arc<PeerLinks>,
    /// Peers whose last connection closed, and when: one still without a
    /// connection a failure timeout later, and not a live member, is
    /// reported gone to the work layer (its pins and actors go, even if
    /// it never sent a heartbeat). One entry per recently closed peer.
    closed: HashMap<PeerId, Instant>,
    /// Signs the named-actor records this node publishes.
    key: identity::Keypair,
    /// What the node refused from peers (forged records are counted here).
    rejections: Arc<crate::stats::Rejections>,
}

impl EventLoop {
    /// Builds the swarm of node `key` and binds every listen address;
    /// returns once each has an address (at most [`BIND_TIMEOUT`]), with the
    /// loop to run and what the layers above use. Runs on the node's tokio
    /// runtime.
    pub(crate) async fn bind(
        key: identity::Keypair,
        cfg: NodeConfig,
        rt: Runtime,
    ) -> Result<(EventLoop, ClusterParts), SwarmError> {
        let me = key.public().to_peer_id();
        let net = Arc::new(NetCounters::default());
        let swarm = swarm::build(key.clone(), &cfg, net.clone())?;
        let limits = Limits::new(cfg.request_timeout, cfg.idle_timeout);
        let rejections = limits.rejections.clone();
        let streams: Arc<dyn Streams> = Arc::new(StreamControl::new(swarm.behaviour().stream.new_control(), limits));
        let mut members = Membership::new(me, cfg.heartbeat, cfg.failure_timeout);
        let (changes_tx, changes) = crossbeam_channel::unbounded();
        members.subscribe(changes_tx);
        let (events, events_rx) = crossbeam_channel::unbounded();
        let (handle, commands) = LoopHandle::new();
        let mut el = EventLoop {
            swarm,
            cfg,
            rt,
            commands,
            members,
            addrs: Vec::new(),
            view: Arc::new(ClusterView::new(me, net)),
            announcements: Arc::default(),
            // From the clock, so a restarted node's heartbeats are newer
            // than its old ones (peers drop stale sequence numbers).
            seq: wire::clock_seq(),
            beats: BeatPlan::default(),
            subs: gossip::Subscriptions::default(),
            view_stale: false,
            leaving: false,
            redials: 0,
            dht: HashMap::new(),
            dials: HashMap::new(),
            records: HashMap::new(),
            lookups: HashMap::new(),
            changes,
            events,
            peer_ips: PeerIps::default(),
            links: Arc::default(),
            closed: HashMap::new(),
            key,
            rejections,
        };
        el.listen().await?;
        el.view.set_addrs(&el.addrs);
        for addr in el.cfg.bootstrap.clone() {
            el.dial(addr);
        }
        let parts = ClusterParts {
            handle,
            streams,
            view: el.view.clone(),
            announcements: el.announcements.clone(),
            peer_ips: el.peer_ips.clone(),
            links: el.links.clone(),
            events: events_rx,
        };
        Ok((el, parts))
    }

    /// Listens on every configured address and waits until each is bound.
    async fn listen(&mut self) -> Result<(), SwarmError> {
        let mut waiting = HashSet::new();
        for addr in self.cfg.listen.clone() {
            let id = self.swarm.listen_on(addr.clone()).map_err(|source| SwarmError::Listen { addr, source })?;
            waiting.insert(id);
        }
        let deadline = tokio::time::Instant::now() + BIND_TIMEOUT;
        while !waiting.is_empty() {
            let ev = tokio::time::timeout_at(deadline, self.swarm.select_next_some())
                .await
                .map_err(|_| SwarmError::BindTimeout(BIND_TIMEOUT))?;
            match ev {
                SwarmEvent::NewListenAddr { listener_id, address } => {
                    waiting.remove(&listener_id);
                    self.addrs.push(address);
                }
                SwarmEvent::ListenerClosed { addresses, reason, .. } => {
                    return Err(SwarmError::ListenerClosed { addrs: addresses, source: reason.err() });
                }
                SwarmEvent::ListenerError { error, .. } => return Err(SwarmError::Listener(error)),
                other => self.on_swarm(other),
            }
        }
        Ok(())
    }

    /// Runs until told to shut down (or every handle is gone).
    pub(crate) async fn run(mut self) {
        // A sleep re-armed after each tick: the period may change with the
        // cluster's size (`NodeConfig::timing`).
        let timer = tokio::time::sleep(Duration::ZERO);
        tokio::pin!(timer);
        let mut announce = tokio::time::interval(ANNOUNCE_EVERY);
        announce.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                ev = self.swarm.select_next_some() => self.on_swarm(ev),
                cmd = self.commands.recv() => match cmd {
                    None => break,
                    Some(Command::Shutdown) => {
                        self.leave().await;
                        break;
                    }
                    Some(c) => self.on_command(c),
                },
                _ = &mut timer => {
                    let period = self.on_tick();
                    // A steady cadence (the time `on_tick` took is not
                    // added to the period); after a stall, one period
                    // from now (as an interval's `Delay` does).
                    let (due, now) = (timer.deadline() + period, tokio::time::Instant::now());
                    timer.as_mut().reset(if due > now { due } else { now + period });
                }
                _ = announce.tick() => {
                    let due = self.announcements.take_due();
                    self.announce(due);
                    self.flush_view();
                }
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

    /// Gives the swarm and Kademlia an address of `peer`.
    fn learn(&mut self, peer: PeerId, addr: Multiaddr) {
        if peer == *self.swarm.local_peer_id() {
            return;
        }
        self.swarm.add_peer_address(peer, addr.clone());
        self.swarm.behaviour_mut().kad.add_address(&peer, addr);
    }

    fn me(&self) -> Member {
        let m = self.rt.metrics();
        let stats = m.store;
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
            suspect: false,
            reported_down_by: Vec::new(),
            tasks_running: m.tasks_running,
            tasks_done: m.tasks_done,
            tasks_failed: m.tasks_failed,
            store_objects: stats.objects_in_memory as u64,
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
            peer: Vec::new(), // gossipsub's signed source names us
            addrs: me.addrs.iter().take(wire::MAX_ADDRS).map(|a| a.to_vec()).collect(),
            seq: self.seq,
            resources: me.resources,
            queue_len: me.queue_len,
            store_bytes: me.store_bytes,
            store_capacity: me.store_capacity,
            fn_hash: me.fn_hash,
            leaving: self.leaving,
            down: self.members.down_report(Instant::now()).into_iter().map(PeerId::to_bytes).collect(),
            tasks_running: me.tasks_running,
            tasks_done: me.tasks_done,
            tasks_failed: me.tasks_failed,
            store_objects: me.store_objects,
            alive_beats: true,
            want_full: false, // set by the plan
        };
        let beat = self.beats.next(hb, self.members.all_read_alive_beats());
        let topic = gossipsub::IdentTopic::new(HEARTBEAT_TOPIC);
        if let Err(e) = self.swarm.behaviour_mut().gossip.publish(topic, wire::encode_beat(&beat)) {
            // `NoPeersSubscribedToTopic` until a peer's subscription arrives.
            tracing::trace!(error = %e, "heartbeat not published");
            self.beats.not_sent(&beat);
        }
    }

    /// Announces `ids` in the DHT (those still held).
    fn announce(&mut self, ids: Vec<manta::ObjectId>) {
        for id in ids {
            if !self.rt.backend().holds_object(id) {
                continue; // freed (or failed) before its turn
            }
            if let Err(e) = self.swarm.behaviour_mut().kad.start_providing(kad::RecordKey::new(&id.to_bytes())) {
                tracing::warn!(object = %id, error = %e, "cannot announce object in the DHT");
            }
        }
    }

    /// Publishes the member table, then passes the changes since the last
    /// call on to the work layer (which acts on them off this task, then
    /// tells the subscribers).
    fn share_members(&mut self) {
        let table: Vec<Member> =
            self.members.snapshot(self.me(), Instant::now()).into_iter().filter(|m| !m.is_self).collect();
        self.view.set_members(table);
        self.view_stale = false;
        for ev in self.changes.try_iter() {
            if let MembershipEvent::Died(peer) = &ev {
                // Lookups stop asking it (its heartbeats put it back), and
                // its connections close: requests in flight to it (a
                // Kademlia query's among them) fail now instead of at the
                // request timeout when it was cut off rather than killed. If
                // it comes back, its heartbeats or a dial reconnect it.
                self.swarm.behaviour_mut().kad.remove_peer(peer);
                let _ = self.swarm.disconnect_peer_id(*peer);
            }
            let _ = self.events.send(ClusterEvent::Membership(ev));
        }
    }

    /// Reports to the work layer the peers whose connections stayed
    /// closed for a failure timeout and that are not live members (a
    /// member's end is its death, from the membership).
    fn report_gone(&mut self, now: Instant, timeout: Duration) {
        self.sweep_providers(now, timeout);
        let due: Vec<PeerId> =
            self.closed.iter().filter(|(_, at)| now.duration_since(**at) >= timeout).map(|(p, _)| *p).collect();
        for peer in due {
            self.closed.remove(&peer);
            if !self.swarm.is_connected(&peer) && self.view.is_alive(peer) != Some(true) {
                let _ = self.events.send(ClusterEvent::Gone(peer));
            }
        }
    }

    /// One heartbeat period's work; returns the period until the next.
    fn on_tick(&mut self) -> Duration {
        let (period, timeout) = self.cfg.timing(self.members.live_count() + 1);
        self.members.set_timing(period, timeout);
        self.subs.set_period(period);
        let _ = self.events.send(ClusterEvent::Tick);
        self.report_gone(Instant::now(), timeout);
        self.publish_heartbeat();
        self.members.tick(Instant::now());
        self.share_members();
        if self.swarm.connected_peers().next().is_none() && self.redials < MAX_REDIALS {
            self.redials += 1;
            for addr in self.cfg.bootstrap.clone() {
                self.dial(addr);
            }
        }
        period
    }

    fn on_command(&mut self, c: Command) {
        match c {
            Command::Status(tx) => {
                let _ = tx.send(self.members.snapshot(self.me(), Instant::now()));
            }
            Command::Subscribe(tx, done) => {
                // Behind every change already passed on, ahead of any later.
                let _ = self.events.send(ClusterEvent::Subscribe(tx));
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
                        let _ = tx.send(Err(e));
                    }
                }
            }
            Command::Flush(done) => {
                let all = self.announcements.take_all();
                self.announce(all);
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
            Command::Lookup(id, tx) => {
                let q = self.swarm.behaviour_mut().kad.get_providers(kad::RecordKey::new(&id.to_bytes()));
                self.lookups.insert(q, (tx, Instant::now(), DhtLookup::default(), false));
            }
            Command::PutRecord(key, value) => {
                // Signed by this node, for this key (`wire::signed`).
                let Some(value) = signed::sign_record(&self.key, &key, value) else {
                    tracing::warn!("cannot sign a DHT record");
                    return;
                };
                let record = kad::Record::new(kad::RecordKey::new(&key), value);
                if let Err(e) = self.swarm.behaviour_mut().kad.put_record(record, kad::Quorum::One) {
                    tracing::warn!(error = %e, "cannot store a DHT record");
                }
            }
            Command::GetRecord(key, tx) => {
                use kad::store::RecordStore;
                let rkey = kad::RecordKey::new(&key);
                let local = self.swarm.behaviour_mut().kad.store_mut().get(&rkey).map(|r| r.into_owned().value);
                // Verified like any other (the store took it verified, but
                // every read checks).
                if let Some(v) = local.and_then(|v| self.verified(&key, &v, None)) {
                    let _ = tx.send(Some(v));
                } else {
                    let q = self.swarm.behaviour_mut().kad.get_record(rkey);
                    self.records.insert(q, (tx, key));
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
                // A peer that does not serve Kademlia (an observer, a tool)
                // is dialable, but stays out of the routing table.
                let kad = info.protocols.iter().any(|p| p.as_ref() == KAD_PROTOCOL);
                for a in info.listen_addrs {
                    if kad {
                        self.learn(peer_id, a);
                    } else if peer_id != *self.swarm.local_peer_id() {
                        self.swarm.add_peer_address(peer_id, a);
                    }
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
                self.view.set_addrs(&self.addrs);
            }
            SwarmEvent::ConnectionEstablished { peer_id, endpoint, connection_id, num_established, .. } => {
                let (addr, dialer) = (endpoint.get_remote_address(), endpoint.is_dialer());
                tracing::debug!(%peer_id, %addr, dialer, num_established, "connection established");
                self.closed.remove(&peer_id);
                if let Some(ip) = ip_of(endpoint.get_remote_address()) {
                    lock_unpoisoned(&self.peer_ips).insert(peer_id, ip);
                    // Where the connection arrived here: reported for an
                    // inbound one, the route's source for one we dialled.
                    let local = match &endpoint {
                        libp2p::core::ConnectedPoint::Listener { local_addr, .. } => ip_of(local_addr),
                        libp2p::core::ConnectedPoint::Dialer { .. } => route_source(ip),
                    };
                    if let Some(local) = local {
                        self.links.add(peer_id, connection_id, local, ip);
                    }
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
                    let _ = tx.send(Err(error));
                }
            }
            SwarmEvent::ConnectionClosed { peer_id, cause, num_established, connection_id, .. } => {
                tracing::debug!(%peer_id, ?cause, num_established, "connection closed");
                self.links.remove(peer_id, connection_id);
                if num_established == 0 {
                    self.subs.gone(&peer_id);
                    self.closed.insert(peer_id, Instant::now());
                    lock_unpoisoned(&self.peer_ips).remove(&peer_id);
                }
            }
            SwarmEvent::IncomingConnectionError { error, send_back_addr, .. } => {
                tracing::debug!(%send_back_addr, %error, "incoming connection failed");
            }
            _ => {}
        }
    }

    fn on_kad(&mut self, e: kad::Event) {
        if let kad::Event::InboundRequest { request } = e {
            match request {
                kad::InboundRequest::PutRecord { source, record: Some(record), .. } => self.on_record(source, record),
                kad::InboundRequest::AddProvider { record: Some(record) } => self.on_provider(record),
                _ => {}
            }
            return;
        }
        if let kad::Event::OutboundQueryProgressed { id, result: kad::QueryResult::GetRecord(r), step, .. } = &e {
            return self.on_found_record(*id, r, step.last);
        }
        let kad::Event::OutboundQueryProgressed { id, result: kad::QueryResult::GetProviders(r), step, stats } = e
        else {
            return;
        };
        if self.lookups.contains_key(&id) {
            return self.on_lookup(id, r, step.last, &stats);
        }
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

    /// A step of a measured lookup: notes when the first provider came.
    fn on_lookup(
        &mut self,
        id: kad::QueryId,
        r: Result<kad::GetProvidersOk, kad::GetProvidersError>,
        last: bool,
        stats: &kad::QueryStats,
    ) {
        let Some((_, started, got, found)) = self.lookups.get_mut(&id) else { return };
        let mut finished = last;
        match r {
            Ok(kad::GetProvidersOk::FoundProviders { providers, .. }) => {
                if !*found && !providers.is_empty() {
                    *found = true;
                    got.hops = stats.num_successes();
                    got.first = started.elapsed();
                }
                got.providers.extend(providers);
            }
            Ok(kad::GetProvidersOk::FinishedWithNoAdditionalRecord { .. }) | Err(_) => finished = true,
        }
        if finished {
            if let Some((tx, started, mut got, found)) = self.lookups.remove(&id) {
                if !found {
                    got.hops = stats.num_successes();
                    got.first = started.elapsed();
                }
                let _ = tx.send(got);
            }
        }
    }

    /// A provider record (Kademlia has checked that its sender is the
    /// provider): kept only for an object id, from a connected peer, within
    /// that peer's share of the store (which also bounds its addresses:
    /// see `dht_store`).
    fn on_provider(&mut self, record: kad::ProviderRecord) {
        use kad::store::RecordStore;
        let source = record.provider;
        if record.key.as_ref().len() != 16 || !self.swarm.is_connected(&source) {
            tracing::debug!(%source, "DHT provider record refused: not an object id, or not from its provider");
            return;
        }
        if let Err(e) = self.swarm.behaviour_mut().kad.store_mut().add_provider(record) {
            tracing::debug!(%source, error = %e, "DHT provider record not stored");
        }
    }
}
