//! A raw libp2p client for `hostile.rs`: a swarm of its own (TCP, Noise,
//! yamux with libp2p's defaults; pnet when given a key) with raw streams
//! (`libp2p-stream`, to speak manta's object and mail protocols byte by
//! byte), Kademlia in client mode on manta's DHT protocol, and identify.
//! The swarm runs on its own task; the test drives it through [`Client`].
//!
//! Also: measurements of this process (nodes run in-process), and helpers
//! to frame bytes and to build a Kademlia message by hand.
//!
//! Invariants: every call is bounded by a timeout and fails the test when
//! it passes; the swarm task ends when the `Client` is dropped.

use futures::{AsyncReadExt, AsyncWriteExt, StreamExt};
use libp2p::swarm::{NetworkBehaviour, SwarmEvent};
use libp2p::{identify, kad, Multiaddr, PeerId, Stream, StreamProtocol, Swarm};
use std::collections::{HashMap, HashSet};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// Manta's Kademlia protocol.
pub const KAD: &str = "/manta/kad/1";

/// How long any one client call may take.
pub const CALL: Duration = Duration::from_secs(20);

#[derive(NetworkBehaviour)]
pub struct Raw {
    pub stream: libp2p_stream::Behaviour,
    pub kad: kad::Behaviour<kad::store::MemoryStore>,
    pub identify: identify::Behaviour,
}

fn behaviour(key: &libp2p::identity::Keypair) -> Raw {
    behaviour_in(key, kad::Mode::Client)
}

fn behaviour_in(key: &libp2p::identity::Keypair, mode: kad::Mode) -> Raw {
    let me = key.public().to_peer_id();
    let mut kad =
        kad::Behaviour::with_config(me, kad::store::MemoryStore::new(me), kad::Config::new(StreamProtocol::new(KAD)));
    kad.set_mode(Some(mode));
    Raw {
        stream: libp2p_stream::Behaviour::new(),
        kad,
        identify: identify::Behaviour::new(identify::Config::new("/manta/id/1".into(), key.public())),
    }
}

/// A raw swarm (with the pre-shared key `psk`, if given).
pub fn swarm(psk: Option<[u8; 32]>) -> Swarm<Raw> {
    let idle = |c: libp2p::swarm::Config| c.with_idle_connection_timeout(Duration::from_secs(120));
    match psk {
        None => libp2p::SwarmBuilder::with_new_identity()
            .with_tokio()
            .with_tcp(libp2p::tcp::Config::default(), libp2p::noise::Config::new, libp2p::yamux::Config::default)
            .expect("transport")
            .with_behaviour(behaviour)
            .expect("behaviour")
            .with_swarm_config(idle)
            .build(),
        Some(psk) => libp2p::SwarmBuilder::with_new_identity()
            .with_tokio()
            .with_other_transport(|key| {
                use libp2p::core::upgrade::Version;
                use libp2p::Transport;
                let psk = libp2p::pnet::PreSharedKey::new(psk);
                Ok::<_, Box<dyn std::error::Error + Send + Sync>>(
                    libp2p::tcp::tokio::Transport::new(libp2p::tcp::Config::default())
                        .and_then(move |socket, _| libp2p::pnet::PnetConfig::new(psk).handshake(socket))
                        .upgrade(Version::V1)
                        .authenticate(libp2p::noise::Config::new(key)?)
                        .multiplex(libp2p::yamux::Config::default())
                        .timeout(Duration::from_secs(10)),
                )
            })
            .expect("transport")
            .with_behaviour(behaviour)
            .expect("behaviour")
            .with_swarm_config(idle)
            .build(),
    }
}

/// A raw swarm with identity `key` (no psk) whose Kademlia runs in `mode`:
/// in server mode it answers other peers' DHT queries (from its own store,
/// see [`Client::store`]), so nodes put it in their routing tables.
pub fn swarm_with(key: libp2p::identity::Keypair, mode: kad::Mode) -> Swarm<Raw> {
    let idle = |c: libp2p::swarm::Config| c.with_idle_connection_timeout(Duration::from_secs(120));
    libp2p::SwarmBuilder::with_existing_identity(key)
        .with_tokio()
        .with_tcp(libp2p::tcp::Config::default(), libp2p::noise::Config::new, libp2p::yamux::Config::default)
        .expect("transport")
        .with_behaviour(|key| behaviour_in(key, mode))
        .expect("behaviour")
        .with_swarm_config(idle)
        .build()
}

enum Cmd {
    #[allow(dead_code)] // (not every test file stores records)
    Store(kad::Record, oneshot::Sender<bool>),
    Dial(Multiaddr, oneshot::Sender<Result<PeerId, String>>),
    PutRecordTo(kad::Record, PeerId, oneshot::Sender<bool>),
    Provide(Vec<u8>, oneshot::Sender<bool>),
    Providers(Vec<u8>, oneshot::Sender<HashSet<PeerId>>),
    GetRecord(Vec<u8>, oneshot::Sender<Option<Vec<u8>>>),
    Closest(PeerId, oneshot::Sender<Vec<PeerId>>),
    Agent(PeerId, oneshot::Sender<Option<String>>),
}

/// The test's handle on a raw swarm running on its own task.
pub struct Client {
    pub peer: PeerId,
    pub control: libp2p_stream::Control,
    cmds: mpsc::UnboundedSender<Cmd>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Client {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[derive(Default)]
struct Pending {
    dials: HashMap<libp2p::swarm::ConnectionId, oneshot::Sender<Result<PeerId, String>>>,
    puts: HashMap<kad::QueryId, oneshot::Sender<bool>>,
    provides: HashMap<kad::QueryId, oneshot::Sender<bool>>,
    providers: HashMap<kad::QueryId, (oneshot::Sender<HashSet<PeerId>>, HashSet<PeerId>)>,
    records: HashMap<kad::QueryId, oneshot::Sender<Option<Vec<u8>>>>,
    closest: HashMap<kad::QueryId, oneshot::Sender<Vec<PeerId>>>,
    agents: HashMap<PeerId, String>,
}

impl Client {
    /// Starts `swarm` on its own task (on the current tokio runtime).
    pub fn start(mut swarm: Swarm<Raw>) -> Client {
        let peer = *swarm.local_peer_id();
        let control = swarm.behaviour().stream.new_control();
        let (cmds, mut rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            let mut p = Pending::default();
            loop {
                tokio::select! {
                    ev = swarm.select_next_some() => on_event(&mut swarm, &mut p, ev),
                    cmd = rx.recv() => match cmd {
                        Some(c) => on_cmd(&mut swarm, &mut p, c),
                        None => return,
                    },
                }
            }
        });
        Client { peer, control, cmds, task }
    }

    async fn ask<T>(&self, make: impl FnOnce(oneshot::Sender<T>) -> Cmd) -> T {
        let (tx, rx) = oneshot::channel();
        assert!(self.cmds.send(make(tx)).is_ok(), "the client's swarm task is gone");
        tokio::time::timeout(CALL, rx).await.expect("client call timed out").expect("client call dropped")
    }

    /// Dials `addr`: the peer once connected, or why not.
    pub async fn dial(&self, addr: &Multiaddr) -> Result<PeerId, String> {
        self.ask(|tx| Cmd::Dial(addr.clone(), tx)).await
    }

    /// Sends `record` to `to` only (not stored here); true if it answered.
    pub async fn put_record_to(&self, record: kad::Record, to: PeerId) -> bool {
        self.ask(|tx| Cmd::PutRecordTo(record, to, tx)).await
    }

    /// Puts `record` in this client's own DHT store (what it answers a
    /// lookup with, in server mode); true if stored.
    #[allow(dead_code)] // (not every test file stores records)
    pub async fn store(&self, record: kad::Record) -> bool {
        self.ask(|tx| Cmd::Store(record, tx)).await
    }

    /// Announces this client as a provider of `key`.
    pub async fn provide(&self, key: &[u8]) -> bool {
        self.ask(|tx| Cmd::Provide(key.to_vec(), tx)).await
    }

    /// The providers of `key` the DHT (the nodes this client knows) lists.
    pub async fn providers(&self, key: &[u8]) -> HashSet<PeerId> {
        self.ask(|tx| Cmd::Providers(key.to_vec(), tx)).await
    }

    /// The record under `key`, if a node this client knows has one.
    pub async fn get_record(&self, key: &[u8]) -> Option<Vec<u8>> {
        self.ask(|tx| Cmd::GetRecord(key.to_vec(), tx)).await
    }

    /// The peers the DHT says are closest to `peer`.
    pub async fn closest(&self, peer: PeerId) -> Vec<PeerId> {
        self.ask(|tx| Cmd::Closest(peer, tx)).await
    }

    /// The agent `peer` named in its identify, once it has arrived.
    pub async fn agent(&self, peer: PeerId) -> Option<String> {
        for _ in 0..100 {
            if let Some(a) = self.ask(|tx| Cmd::Agent(peer, tx)).await {
                return Some(a);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        None
    }

    /// Opens a raw stream to `peer` on `protocol`.
    pub async fn open(&self, peer: PeerId, protocol: &'static str) -> Result<Stream, String> {
        let mut c = self.control.clone();
        match tokio::time::timeout(CALL, c.open_stream(peer, StreamProtocol::new(protocol))).await {
            Ok(Ok(s)) => Ok(s),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err("no stream within the call timeout".into()),
        }
    }
}

fn on_cmd(swarm: &mut Swarm<Raw>, p: &mut Pending, c: Cmd) {
    let kad = &mut swarm.behaviour_mut().kad;
    match c {
        Cmd::Store(record, tx) => {
            use kad::store::RecordStore;
            let _ = tx.send(kad.store_mut().put(record).is_ok());
        }
        Cmd::Dial(addr, tx) => {
            let opts = libp2p::swarm::dial_opts::DialOpts::unknown_peer_id().address(addr).build();
            let id = opts.connection_id();
            match swarm.dial(opts) {
                Ok(()) => {
                    p.dials.insert(id, tx);
                }
                Err(e) => {
                    let _ = tx.send(Err(e.to_string()));
                }
            }
        }
        Cmd::PutRecordTo(record, to, tx) => {
            let q = kad.put_record_to(record, std::iter::once(to), kad::Quorum::One);
            p.puts.insert(q, tx);
        }
        Cmd::Provide(key, tx) => match kad.start_providing(kad::RecordKey::new(&key)) {
            Ok(q) => {
                p.provides.insert(q, tx);
            }
            Err(_) => {
                let _ = tx.send(false);
            }
        },
        Cmd::Providers(key, tx) => {
            let q = kad.get_providers(kad::RecordKey::new(&key));
            p.providers.insert(q, (tx, HashSet::new()));
        }
        Cmd::GetRecord(key, tx) => {
            let q = kad.get_record(kad::RecordKey::new(&key));
            p.records.insert(q, tx);
        }
        Cmd::Closest(peer, tx) => {
            let q = kad.get_closest_peers(peer);
            p.closest.insert(q, tx);
        }
        Cmd::Agent(peer, tx) => {
            let _ = tx.send(p.agents.get(&peer).cloned());
        }
    }
}

fn on_event(swarm: &mut Swarm<Raw>, p: &mut Pending, ev: SwarmEvent<RawEvent>) {
    match ev {
        // A client that listens says where (its provider records carry
        // only confirmed external addresses).
        SwarmEvent::NewListenAddr { address, .. } => swarm.add_external_address(address),
        SwarmEvent::ConnectionEstablished { peer_id, connection_id, endpoint, .. } => {
            swarm.behaviour_mut().kad.add_address(&peer_id, endpoint.get_remote_address().clone());
            if let Some(tx) = p.dials.remove(&connection_id) {
                let _ = tx.send(Ok(peer_id));
            }
        }
        SwarmEvent::OutgoingConnectionError { connection_id, error, .. } => {
            if let Some(tx) = p.dials.remove(&connection_id) {
                let _ = tx.send(Err(error.to_string()));
            }
        }
        SwarmEvent::Behaviour(RawEvent::Identify(identify::Event::Received { peer_id, info, .. })) => {
            p.agents.insert(peer_id, info.agent_version);
        }
        SwarmEvent::Behaviour(RawEvent::Kad(kad::Event::OutboundQueryProgressed { id, result, step, .. })) => {
            on_query(p, id, result, step.last)
        }
        _ => {}
    }
}

fn on_query(p: &mut Pending, id: kad::QueryId, result: kad::QueryResult, last: bool) {
    match result {
        kad::QueryResult::PutRecord(r) => {
            if let Some(tx) = p.puts.remove(&id) {
                let _ = tx.send(r.is_ok());
            }
        }
        kad::QueryResult::StartProviding(r) => {
            if let Some(tx) = p.provides.remove(&id) {
                let _ = tx.send(r.is_ok());
            }
        }
        kad::QueryResult::GetProviders(r) => {
            let done = match r {
                Ok(kad::GetProvidersOk::FoundProviders { providers, .. }) => {
                    if let Some((_, found)) = p.providers.get_mut(&id) {
                        found.extend(providers);
                    }
                    last
                }
                _ => true,
            };
            if done {
                if let Some((tx, found)) = p.providers.remove(&id) {
                    let _ = tx.send(found);
                }
            }
        }
        kad::QueryResult::GetRecord(r) => {
            let found = match r {
                Ok(kad::GetRecordOk::FoundRecord(rec)) => Some(rec.record.value),
                Ok(_) if !last => return,
                _ => None,
            };
            if let Some(tx) = p.records.remove(&id) {
                let _ = tx.send(found);
            }
        }
        kad::QueryResult::GetClosestPeers(r) => {
            let peers = match r {
                Ok(ok) => ok.peers.into_iter().map(|i| i.peer_id).collect(),
                Err(kad::GetClosestPeersError::Timeout { peers, .. }) => peers.into_iter().map(|i| i.peer_id).collect(),
            };
            if let Some(tx) = p.closest.remove(&id) {
                let _ = tx.send(peers);
            }
        }
        _ => {}
    }
}

/// `body` with its 4-byte big-endian length in front (manta's framing).
pub fn framed(body: &[u8]) -> Vec<u8> {
    [&(body.len() as u32).to_be_bytes()[..], body].concat()
}

/// Writes one framed message and reads one framed reply (at most `max`),
/// within [`CALL`].
pub async fn exchange(s: &mut Stream, body: &[u8], max: usize) -> std::io::Result<Vec<u8>> {
    let io = async {
        s.write_all(&framed(body)).await?;
        s.flush().await?;
        let mut prefix = [0u8; 4];
        s.read_exact(&mut prefix).await?;
        let len = u32::from_be_bytes(prefix) as usize;
        if len > max {
            return Err(std::io::Error::other(format!("a reply of {len} bytes")));
        }
        let mut reply = vec![0u8; len];
        s.read_exact(&mut reply).await?;
        Ok(reply)
    };
    tokio::time::timeout(CALL, io).await.map_err(|_| std::io::Error::other("no reply within the call timeout"))?
}

/// Waits until `s` is closed or reset by the other side: true if it was
/// within `within`.
pub async fn closed_within(s: &mut Stream, within: Duration) -> bool {
    let mut buf = [0u8; 1024];
    let ended = async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    };
    tokio::time::timeout(within, ended).await.is_ok()
}

/// A protobuf varint.
#[allow(dead_code)] // (not every test file writes protobuf)
pub fn varint(mut n: u64, out: &mut Vec<u8>) {
    while n >= 0x80 {
        out.push((n as u8) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

/// A length-delimited protobuf field under the full `tag` (field and wire type).
#[allow(dead_code)] // (not every test file writes protobuf)
pub fn field_bytes(tag: u64, bytes: &[u8], out: &mut Vec<u8>) {
    varint(tag, out);
    varint(bytes.len() as u64, out);
    out.extend_from_slice(bytes);
}

/// A Kademlia `ADD_PROVIDER` message for `key` that names `provider` (at
/// `addr`) as provider, varint-length-prefixed, built by hand: libp2p's
/// Kademlia always names the sender, so a forgery needs this.
pub fn forged_add_provider(key: &[u8], provider: PeerId, addr: &Multiaddr) -> Vec<u8> {
    let mut peer = Vec::new();
    field_bytes(0x0a, &provider.to_bytes(), &mut peer); // id = 1
    field_bytes(0x12, &addr.to_vec(), &mut peer); // addrs = 2
    let mut msg = vec![0x08, 0x02]; // type = ADD_PROVIDER
    field_bytes(0x12, key, &mut msg); // key = 2
    field_bytes(0x4a, &peer, &mut msg); // providerPeers = 9
    let mut out = Vec::new();
    varint(msg.len() as u64, &mut out);
    out.extend_from_slice(&msg);
    out
}

/// A line of this process's `/proc/self/status` (`VmRSS`, `Threads`), as a number.
fn status(field: &str) -> u64 {
    let text = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    text.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/self/status"))
}

/// This process's resident memory, in MiB.
pub fn rss_mib() -> f64 {
    status("VmRSS") as f64 / 1024.0
}

/// This process's thread count.
pub fn threads() -> u64 {
    status("Threads")
}

/// Samples RSS and threads every 20 ms while `work` runs (which must be
/// bounded in time itself): its output, the peak RSS (MiB) and the peak
/// thread count seen.
pub async fn peak_while<T>(work: impl std::future::Future<Output = T>) -> (T, f64, u64) {
    tokio::pin!(work);
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    let (mut rss, mut th) = (rss_mib(), threads());
    loop {
        tokio::select! {
            out = &mut work => {
                rss = rss.max(rss_mib());
                th = th.max(threads());
                return (out, rss, th);
            }
            _ = tick.tick() => {
                rss = rss.max(rss_mib());
                th = th.max(threads());
            }
        }
    }
}
