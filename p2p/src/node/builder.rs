//! [`NodeBuilder`]: a node's settings, and starting it.
//!
//! Starting wires the layers bottom up on the node's own thread (so `start`
//! works the same from synchronous code and from inside another runtime):
//! a tokio runtime; the cluster layer's event loop, bound to its listen
//! addresses; the bulk lane; the work layer on top of both; the object
//! server; then the backend is attached to the manta runtime and the
//! thread runs the event loop until the node stops.
//!
//! Invariants: `start` returns only once everything is wired (or failed,
//! with the node's thread joined): a node that is returned serves objects
//! and mail at once. Safe by default: without a listen address a node
//! listens on 127.0.0.1 only, and a listen address other hosts can reach
//! (anything but loopback and `/memory`), or mDNS, needs a cluster secret
//! or the explicit [`NodeBuilder::insecure_open_network`]; otherwise
//! `start` fails with [`StartError::OpenWithoutSecret`] or
//! [`StartError::MdnsWithoutSecret`] before anything is bound.

use super::backend::NodeBackend;
use super::error::{NodeError, StartError};
use super::{Inner, Node};
use crate::cluster::{ClusterParts, EventLoop};
use crate::config::{NodeConfig, DEFAULT_CHUNK};
use crate::stats::Traffic;
use crate::transport::bulk::{ip_of, Lane, LaneSetup, TICKET_TTL};
use crate::transport::fetch::FetcherConfig;
use crate::transport::lanes::{Lanes, LanesSetup};
use crate::transport::rpc::{self, ObjectServer, Pool};
use crate::transport::vouch::Vouchers;
use crate::wire::seal::HelloKey;
use crate::work::{Registry, Work, WorkSetup};
use libp2p::{identity, Multiaddr};
use manta::Runtime;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Configures and starts a [`Node`].
#[must_use = "a NodeBuilder does nothing until started"]
pub struct NodeBuilder {
    rt: Runtime,
    cfg: NodeConfig,
    key: Option<identity::Keypair>,
    registry: Registry,
    timeline: bool,
}

impl std::fmt::Debug for NodeBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeBuilder").field("cfg", &self.cfg).field("registry", &self.registry).finish()
    }
}

impl NodeBuilder {
    pub(super) fn new(rt: Runtime) -> NodeBuilder {
        NodeBuilder { rt, cfg: NodeConfig::default(), key: None, registry: Registry::new(), timeline: false }
    }

    /// Adds a listen address (default, if none is added: loopback only,
    /// one OS-chosen TCP port, `/ip4/127.0.0.1/tcp/0`). An address other
    /// hosts can reach (e.g. `/ip4/0.0.0.0/tcp/4001` or a LAN address)
    /// needs a [`secret`](Self::secret), or
    /// [`insecure_open_network`](Self::insecure_open_network): otherwise
    /// `start` fails with [`StartError::OpenWithoutSecret`](crate::StartError::OpenWithoutSecret).
    pub fn listen(mut self, addr: Multiaddr) -> Self {
        self.cfg.listen.push(addr);
        self
    }

    /// Adds a bootstrap address (`/ip4/.../tcp/PORT[/p2p/PEER]`) to join by.
    pub fn bootstrap(mut self, addr: Multiaddr) -> Self {
        self.cfg.bootstrap.push(addr);
        self
    }

    /// Turns LAN discovery by mDNS on or off (default off: a library
    /// announces itself on a network only when asked). mDNS skips loopback
    /// interfaces, so nodes listening only on 127.0.0.1 are not found by it.
    /// Needs a [`secret`](Self::secret) (or
    /// [`insecure_open_network`](Self::insecure_open_network)): otherwise
    /// `start` fails with [`StartError::MdnsWithoutSecret`](crate::StartError::MdnsWithoutSecret).
    pub fn mdns(mut self, on: bool) -> Self {
        self.cfg.mdns = on;
        self
    }

    /// Heartbeat period (default 1 s): each period a member publishes its
    /// state on gossip, in full when it changed (and every 10th period),
    /// else as an alive beat of a few bytes; every node forwards every
    /// member's beats, so gossip at rest grows with the cluster.
    ///
    /// With the [adaptive heartbeat](Self::adaptive_heartbeat) (the
    /// default) this is the period up to 20 members; in a larger cluster the
    /// period and the [failure timeout](Self::failure_timeout) both grow as
    /// n / 20 (1.6 s and 8 s at 32 nodes), which keeps each node's gossip
    /// at rest about constant, under 10 KB/s at the defaults (figures in
    /// p2p/SCALING.md), at the cost of slower death detection in large
    /// clusters (within the scaled timeout plus one period).
    pub fn heartbeat(mut self, period: Duration) -> Self {
        self.cfg.heartbeat = period.max(Duration::from_millis(10));
        self
    }

    /// How long a peer may be silent before it is marked dead (default 5 s;
    /// stretched with the heartbeat period beyond 20 members, see
    /// [`heartbeat`](Self::heartbeat)).
    pub fn failure_timeout(mut self, timeout: Duration) -> Self {
        self.cfg.failure_timeout = timeout;
        self
    }

    /// Whether the heartbeat period and failure timeout grow with the
    /// cluster beyond 20 members (default on; see
    /// [`heartbeat`](Self::heartbeat)). Off, they stay as set at any size:
    /// detection stays fast, and each node's gossip grows linearly with the
    /// cluster (about 12 KB/s per node at 32 nodes with 1 s).
    pub fn adaptive_heartbeat(mut self, on: bool) -> Self {
        self.cfg.adaptive_heartbeat = on;
        self
    }

    /// How long an unused connection stays open (default 60 s).
    pub fn idle_connection_timeout(mut self, timeout: Duration) -> Self {
        self.cfg.idle_timeout = timeout;
        self
    }

    /// Timeout of one request, e.g. one chunk of a transfer (default 10 s).
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.cfg.request_timeout = timeout;
        self
    }

    /// Chunk size of object transfers (default and maximum 4 MiB, the wire
    /// format's chunk cap).
    pub fn chunk_bytes(mut self, bytes: usize) -> Self {
        self.cfg.chunk_bytes = bytes.clamp(1, DEFAULT_CHUNK);
        self
    }

    /// Turns the bulk lane on or off (default on). With it, objects bigger
    /// than one chunk are streamed from a holder over their own TCP
    /// connection, sealed with AES-256-GCM under a one-use key obtained
    /// over libp2p, on a port at the local IP the requesting peer's libp2p
    /// connection arrived on (reachable only with a ticket issued on that
    /// connection, and with a secret only by holders of it); without it
    /// (or with a peer that has none, or a busy one) they come in chunks
    /// over the libp2p connection.
    pub fn bulk_lane(mut self, on: bool) -> Self {
        self.cfg.bulk = on;
        self
    }

    /// Turns the message lane ("fast lane") on or off (default on). With
    /// it, this node asks each peer it reads small objects from for a
    /// direct TCP connection (over libp2p, protocol `/manta/lane/1`), and
    /// then sends those gets there: sealed frames (AES-256-GCM under keys
    /// from a one-use ticket) without libp2p's muxer, Noise and async
    /// hand-offs in the way. It is accepted on the bulk lane's port, so it
    /// needs the [bulk lane](Self::bulk_lane) on. Without it (or with a
    /// peer that has none, or while it is being set up, or when it fails)
    /// everything goes over libp2p, as it always can. Off, the node also
    /// answers no peer's request for one.
    pub fn fast_lane(mut self, on: bool) -> Self {
        self.cfg.fast_lane = on;
        self
    }

    /// Makes the cluster private: only nodes holding the same 32-byte key
    /// can connect (libp2p's pre-shared-key private network, under Noise).
    /// A node without it cannot connect, gossip, read objects or run code,
    /// nor redeem a bulk-lane ticket. Programs should read the key from a
    /// file or the environment, never from their command line
    /// ([`load_secret`](crate::load_secret)).
    pub fn secret(mut self, key: [u8; 32]) -> Self {
        self.cfg.secret = Some(key);
        self
    }

    /// **Insecure**: lets the node listen on addresses other hosts can
    /// reach, and use mDNS, *without* a cluster secret. Any host that can
    /// reach its port is then a full member: it can read every object it
    /// learns the id of and run every registered function. Only for
    /// networks where every host is trusted; prefer [`secret`](Self::secret).
    pub fn insecure_open_network(mut self) -> Self {
        self.cfg.insecure_open = true;
        self
    }

    /// Most connections one remote IP may hold to this node at once
    /// (inbound, including those still in their handshake; default
    /// [`DEFAULT_MAX_CONNECTIONS_PER_IP`](crate::DEFAULT_MAX_CONNECTIONS_PER_IP)).
    /// Several nodes on one host share an IP, so keep it above the most
    /// nodes a host runs.
    pub fn max_connections_per_ip(mut self, n: usize) -> Self {
        self.cfg.max_connections_per_ip = n.max(1);
        self
    }

    /// Joins as an observer: hears the cluster's heartbeats (so
    /// `cluster_status` works) but publishes none, so it never appears in
    /// other nodes' member tables (the `manta status` command uses this);
    /// its Kademlia runs in client mode, so it leaves no routing entry on
    /// the nodes it talks to.
    pub fn observer(mut self, on: bool) -> Self {
        self.cfg.observer = on;
        self
    }

    /// The functions and actor types this node can run for others (every
    /// node of a cluster should register the same table: tasks go only to
    /// nodes whose table hash matches).
    pub fn registry(mut self, registry: Registry) -> Self {
        self.registry = registry;
        self
    }

    /// Local queue length (tasks waiting for a CPU) from which new tasks
    /// spill to less loaded peers (default 4).
    pub fn queue_threshold(mut self, n: usize) -> Self {
        self.cfg.work.threshold = n;
        self
    }

    /// Most tasks and actor calls from peers this node holds at once
    /// (queued or running, default 16384), and at most half of that from
    /// any one peer, so that one peer flooding it leaves room for the
    /// others; beyond either, peers are told it is busy: they place their
    /// tasks elsewhere, or keep them, and send their actor calls again
    /// shortly, in order.
    pub fn max_accepted_tasks(mut self, n: usize) -> Self {
        self.cfg.work.max_accepted = n.max(1);
        self
    }

    /// Uses this identity instead of a fresh Ed25519 one.
    pub fn keypair(mut self, key: identity::Keypair) -> Self {
        self.key = Some(key);
        self
    }

    /// Records the runtime's timeline from the start (tasks, actor calls,
    /// store operations, and this node's object transfers), for
    /// [`Node::cluster_timeline`]; the same as
    /// `runtime.record_timeline(true)` before `start`. Default: the
    /// runtime's own setting.
    pub fn timeline(mut self, on: bool) -> Self {
        self.timeline = on;
        self
    }

    /// Starts the node: binds its listen addresses (returns once they are
    /// bound), dials the bootstrap addresses and attaches to the runtime.
    pub fn start(self) -> Result<Node, NodeError> {
        let key = self.key.unwrap_or_else(identity::Keypair::generate_ed25519);
        let peer_id = key.public().to_peer_id();
        let mut cfg = self.cfg;
        cfg.fn_hash = self.registry.hash();
        if cfg.listen.is_empty() {
            let local = Multiaddr::from(std::net::Ipv4Addr::LOCALHOST);
            cfg.listen.push(local.with(libp2p::multiaddr::Protocol::Tcp(0)));
        }
        check_exposure(&cfg)?;
        if self.timeline {
            self.rt.record_timeline(true);
        }
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (rt, registry) = (self.rt.clone(), self.registry);
        let thread = std::thread::Builder::new()
            .name("manta-p2p-loop".into())
            .spawn(move || node_thread(key, cfg, rt, registry, ready_tx))
            .map_err(StartError::Thread)?;
        let backend = match ready_rx.recv() {
            Ok(Ok(backend)) => backend,
            Ok(Err(e)) => {
                let _ = thread.join();
                return Err(e.into());
            }
            Err(_) => {
                let _ = thread.join();
                return Err(StartError::ThreadExited.into());
            }
        };
        self.rt.backend().attach(backend.clone());
        let cluster = backend.cluster.clone();
        let inner = Arc::new(Inner { peer_id, rt: self.rt, backend, cluster, thread: Mutex::new(Some(thread)) });
        let weak = Arc::downgrade(&inner);
        let owner: std::sync::Weak<dyn std::any::Any + Send + Sync> = weak;
        inner.backend.work.set_owner(owner);
        Ok(Node { inner })
    }
}

/// Refuses a configuration that exposes the node to other hosts without a
/// secret (unless the insecure opt-out was asked for, which is logged).
fn check_exposure(cfg: &NodeConfig) -> Result<(), StartError> {
    if cfg.secret.is_some() {
        return Ok(());
    }
    let open = cfg.listen.iter().find(|a| !is_local(a));
    if cfg.insecure_open {
        if let Some(addr) = open {
            tracing::warn!(%addr, "INSECURE: listening beyond loopback without a cluster secret");
        }
        if cfg.mdns {
            tracing::warn!("INSECURE: mDNS without a cluster secret");
        }
        return Ok(());
    }
    if let Some(addr) = open {
        return Err(StartError::OpenWithoutSecret { addr: addr.clone() });
    }
    if cfg.mdns {
        return Err(StartError::MdnsWithoutSecret);
    }
    Ok(())
}

/// True for an address only this host can reach: loopback IPs, and
/// libp2p's in-process `/memory` transport.
fn is_local(addr: &Multiaddr) -> bool {
    use libp2p::multiaddr::Protocol;
    match addr.iter().next() {
        Some(Protocol::Ip4(ip)) => ip.is_loopback(),
        Some(Protocol::Ip6(ip)) => ip.is_loopback(),
        Some(Protocol::Memory(_)) => true,
        _ => false,
    }
}

/// The node's thread: wires the layers, reports (once) on `ready`, then
/// runs the event loop until the node stops.
fn node_thread(
    key: identity::Keypair,
    cfg: NodeConfig,
    rt: Runtime,
    registry: Registry,
    ready: std::sync::mpsc::Sender<Result<Arc<NodeBackend>, StartError>>,
) {
    let tokio_rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("manta-p2p")
        .enable_all()
        .build()
    {
        Ok(t) => t,
        Err(e) => {
            let _ = ready.send(Err(StartError::Tokio(e)));
            return;
        }
    };
    let handle = tokio_rt.handle().clone();
    match tokio_rt.block_on(wire_up(key, cfg, rt, registry, handle)) {
        Ok((event_loop, backend)) => {
            let _ = ready.send(Ok(backend));
            tokio_rt.block_on(event_loop.run());
        }
        Err(e) => {
            let _ = ready.send(Err(e));
        }
    }
    tokio_rt.shutdown_timeout(Duration::from_secs(1));
}

/// Builds the layers bottom up (on the node's tokio runtime).
async fn wire_up(
    key: identity::Keypair,
    cfg: NodeConfig,
    rt: Runtime,
    registry: Registry,
    tokio: tokio::runtime::Handle,
) -> Result<(EventLoop, Arc<NodeBackend>), StartError> {
    let signer = key.clone();
    let (event_loop, parts) = EventLoop::bind(key, cfg.clone(), rt.clone()).await?;
    let lane = cfg.bulk.then(|| start_lane(&cfg, &rt, &parts, &tokio));
    let lanes = lane.as_ref().filter(|_| cfg.fast_lane).map(|bulk| {
        Lanes::start(LanesSetup {
            streams: parts.streams.clone(),
            bulk: bulk.clone(),
            secret: cfg.secret,
            peer_ips: parts.peer_ips.clone(),
            handle: tokio.clone(),
            request_timeout: cfg.request_timeout,
            idle_timeout: cfg.idle_timeout,
            ttl: TICKET_TTL,
        })
    });
    let traffic = Arc::new(Traffic::default());
    let vouchers = Arc::new(Vouchers::new(
        signer,
        rt.clone(),
        Arc::new(Pool::new(parts.streams.clone(), cfg.request_timeout)),
        tokio.clone(),
        parts.streams.limits().rejections.clone(),
    ));
    let fetch = FetcherConfig {
        me: parts.view.me(),
        handle: tokio.clone(),
        request_timeout: cfg.request_timeout,
        chunk: cfg.chunk_bytes,
        window: cfg.window,
        bulk: lane.is_some(),
        hello: HelloKey::new(cfg.secret.as_ref()),
        traffic: traffic.clone(),
        vouchers: vouchers.clone(),
        lanes: lanes.clone(),
    };
    let setup = WorkSetup { rt: rt.clone(), registry, cfg: cfg.work.clone(), tokio: tokio.clone(), fetch };
    let work = Work::start(setup, &parts).map_err(StartError::Thread)?;
    let backend = Arc::new(NodeBackend {
        work,
        view: parts.view.clone(),
        announcements: parts.announcements.clone(),
        cluster: parts.handle.clone(),
        lane: lane.clone(),
        lanes: lanes.clone(),
        traffic: traffic.clone(),
        pool: Arc::new(Pool::new(parts.streams.clone(), cfg.request_timeout)),
        secret: cfg.secret.is_some(),
        insecure_open: cfg.insecure_open,
        observer: cfg.observer,
        tokio,
        vouchers: vouchers.clone(),
    });
    let server = ObjectServer { rt, lane, hooks: backend.clone(), traffic, vouchers };
    if let Some(lanes) = &lanes {
        lanes.set_service(Arc::new(server.clone()));
    }
    tokio::spawn(rpc::serve(parts.streams.clone(), server));
    Ok((event_loop, backend))
}

/// Starts the bulk lane: listening now at each listen address that names
/// one IP, and later at whatever local IP a peer's connection arrives on
/// (never at a wildcard address).
fn start_lane(cfg: &NodeConfig, rt: &Runtime, parts: &ClusterParts, tokio: &tokio::runtime::Handle) -> Arc<Lane> {
    let ips: Vec<_> = cfg.listen.iter().filter_map(ip_of).filter(|ip| !ip.is_unspecified()).collect();
    let setup = LaneSetup {
        rt: rt.clone(),
        handle: tokio.clone(),
        secret: cfg.secret,
        links: parts.links.clone(),
        write_timeout: cfg.request_timeout,
        ttl: TICKET_TTL,
    };
    Lane::start(setup, &ips)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(listen: &str, secret: bool, insecure: bool, mdns: bool) -> NodeConfig {
        let addr: Multiaddr = listen.parse().unwrap_or_else(|e| panic!("{listen}: {e}"));
        NodeConfig {
            listen: vec![addr],
            secret: secret.then_some([1; 32]),
            insecure_open: insecure,
            mdns,
            ..NodeConfig::default()
        }
    }

    #[test]
    fn exposure_needs_a_secret_or_the_insecure_opt_out() {
        for local in ["/ip4/127.0.0.1/tcp/0", "/ip4/127.9.9.9/tcp/1", "/ip6/::1/tcp/0", "/memory/5"] {
            assert!(check_exposure(&cfg(local, false, false, false)).is_ok(), "{local}");
        }
        for open in ["/ip4/0.0.0.0/tcp/0", "/ip4/192.168.1.5/tcp/4001", "/ip6/::/tcp/0", "/dns4/example.com/tcp/1"] {
            let e = check_exposure(&cfg(open, false, false, false)).expect_err(open);
            assert!(matches!(&e, StartError::OpenWithoutSecret { addr } if addr.to_string() == open), "{e}");
            assert!(check_exposure(&cfg(open, true, false, false)).is_ok(), "{open} with a secret");
            assert!(check_exposure(&cfg(open, false, true, false)).is_ok(), "{open} opted out");
        }
        let mdns = cfg("/ip4/127.0.0.1/tcp/0", false, false, true);
        assert!(matches!(check_exposure(&mdns), Err(StartError::MdnsWithoutSecret)));
        assert!(check_exposure(&cfg("/ip4/127.0.0.1/tcp/0", true, false, true)).is_ok());
        assert!(check_exposure(&cfg("/ip4/127.0.0.1/tcp/0", false, true, true)).is_ok());
    }
}
