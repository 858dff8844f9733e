//! The bulk lane: large objects travel on their own TCP connection, beside
//! libp2p, instead of in 4 MiB chunks over Noise and yamux.
//!
//! Why: on the libp2p connection every byte is copied five or six times
//! (yamux frames, Noise's buffers, ChaCha20-Poly1305 out of place, 64 KiB
//! messages) on the connection's one task, and a 100 MB transfer blocks
//! the heartbeats and task mail that share the connection. The lane keeps
//! libp2p as the control plane: a peer asks for a ticket there
//! ([`Request::Bulk`](crate::wire::Request::Bulk), on the authenticated,
//! encrypted and, with a cluster secret, private connection) and gets a
//! port and two fresh 256-bit secrets. It then connects to that port at the
//! address the libp2p connection has, sends a hello (the token, MACed under
//! a key derived from the cluster secret: `seal::HelloKey`), and reads the
//! object's encoding sealed under the key with AES-256-GCM in 1 MiB records
//! (`seal`): encrypted and authenticated like the rest, at a fraction of
//! the CPU per byte, with one copy on each side besides the kernel's.
//!
//! Where it listens: only on the local IP a peer's libp2p connection
//! arrived on (never a wildcard address), one port per such IP, bound when
//! the first ticket for it is issued (or at start for each listen address
//! that names one IP). The event loop records each connection's local and
//! remote IP in [`PeerLinks`].
//!
//! Invariants (every bound is per node):
//! - a ticket is good for one connection, for [`TICKET_TTL`], arriving at
//!   the local IP it was issued for from a remote IP its peer is connected
//!   from; a hello that names it otherwise burns it;
//! - a ticket holds a sender slot from issue until its stream ends (or it
//!   expires): at most [`MAX_SENDERS_PER_PEER`] per peer and
//!   [`MAX_SENDERS`] in all; beyond them the request is answered `Busy` and
//!   the peer fetches in chunks. So at most [`MAX_SENDERS`] blocking sender
//!   threads run, whatever peers ask;
//! - a connection is accepted only from an IP that an outstanding ticket
//!   expects, at most [`MAX_HELLOS_PER_IP`] per IP (and no more than that
//!   IP's tickets) and [`MAX_HELLOS`] in all waiting at once; it must send
//!   a hello within [`HELLO_TIMEOUT`]. Anything else is closed without a
//!   byte, counted in [`LaneStats::refused`] and logged at `debug` only (a
//!   flood must not flood the log);
//! - a stream must keep up [`MIN_RATE`] on average after [`STREAM_GRACE`]
//!   (a deadline for the whole stream), and each write is bounded by the
//!   write timeout: a reader that stalls frees its sender in bounded time;
//! - the object is encoded once per stream, from the ticket's offset.
//!
//! The message lane (`lane`) is accepted on the same listener, told apart
//! by the hello's version byte (`MESSAGE_LANE_VERSION`): its tickets are
//! its own ([`SideLane`]), counted here only to admit connections from
//! the IPs they expect, under the same hello caps and deadline.

use crate::sync::lock_unpoisoned;
use crate::wire::seal::{
    self, Hello, HelloError, HelloKey, OpenReader, SealWriter, Secret, HELLO_BYTES, MESSAGE_LANE_VERSION,
};
use crate::wire::Response;
use libp2p::swarm::ConnectionId;
use libp2p::PeerId;
use manta::backend::{DecodeError, Decoded, Fetch, Served};
use manta::{ObjectId, Runtime};
use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The IP each connected peer has on its libp2p connection: where its lane
/// is (kept by the event loop).
pub(crate) type PeerIps = Arc<Mutex<HashMap<PeerId, IpAddr>>>;

/// The IP of a listen address (`None` for one without, e.g. `/memory`).
pub(crate) fn ip_of(addr: &libp2p::Multiaddr) -> Option<IpAddr> {
    addr.iter().find_map(|p| match p {
        libp2p::multiaddr::Protocol::Ip4(ip) => Some(IpAddr::V4(ip)),
        libp2p::multiaddr::Protocol::Ip6(ip) => Some(IpAddr::V6(ip)),
        _ => None,
    })
}

/// The local IP the kernel would send from to reach `remote` (a UDP
/// socket's route lookup: nothing is sent). For connections this node
/// dialled, where libp2p reports no local address.
pub(crate) fn route_source(remote: IpAddr) -> Option<IpAddr> {
    let any: IpAddr = if remote.is_ipv4() { [0, 0, 0, 0].into() } else { [0u16; 8].into() };
    let s = std::net::UdpSocket::bind((any, 0)).ok()?;
    s.connect((remote, 9)).ok()?;
    Some(s.local_addr().ok()?.ip())
}

/// Each connected peer's connections, with the local and remote IP of
/// each: where a ticket for that peer may be redeemed (kept by the event
/// loop, read when a ticket is issued).
#[derive(Debug, Default)]
pub(crate) struct PeerLinks {
    links: Mutex<HashMap<PeerId, Vec<Link>>>,
}

/// One connection: its id, this node's IP on it, the peer's IP on it.
type Link = (ConnectionId, IpAddr, IpAddr);

impl PeerLinks {
    /// A connection to `peer` from `remote` at this node's `local` IP.
    pub(crate) fn add(&self, peer: PeerId, conn: ConnectionId, local: IpAddr, remote: IpAddr) {
        lock_unpoisoned(&self.links).entry(peer).or_default().push((conn, local, remote));
    }

    /// Connection `conn` to `peer` closed.
    pub(crate) fn remove(&self, peer: PeerId, conn: ConnectionId) {
        let mut links = lock_unpoisoned(&self.links);
        if let Some(v) = links.get_mut(&peer) {
            v.retain(|l| l.0 != conn);
            if v.is_empty() {
                links.remove(&peer);
            }
        }
    }

    /// `(local, remote)` IPs of `peer`'s connections, oldest first.
    fn of(&self, peer: &PeerId) -> Vec<(IpAddr, IpAddr)> {
        lock_unpoisoned(&self.links).get(peer).map(|v| v.iter().map(|l| (l.1, l.2)).collect()).unwrap_or_default()
    }
}

/// How long a ticket may wait for its connection.
pub(crate) const TICKET_TTL: Duration = Duration::from_secs(10);

/// Most tickets outstanding and streams running at once, in all.
pub(crate) const MAX_SENDERS: usize = 8;

/// Most tickets outstanding and streams running at once for one peer.
pub(crate) const MAX_SENDERS_PER_PEER: usize = 2;

/// How long a new connection has to send its hello.
pub(crate) const HELLO_TIMEOUT: Duration = Duration::from_secs(5);

/// Most connections waiting for their hello at once, in all.
pub(crate) const MAX_HELLOS: usize = 64;

/// Most connections from one IP waiting for their hello at once.
pub(crate) const MAX_HELLOS_PER_IP: usize = 4;

/// How long a stream may take regardless of its size.
pub(crate) const STREAM_GRACE: Duration = Duration::from_secs(10);

/// The average rate (bytes per second) a stream must keep up after
/// [`STREAM_GRACE`].
pub(crate) const MIN_RATE: u64 = 8 << 20;

/// Why a lane connection did not carry its object.
#[derive(Debug, thiserror::Error)]
pub(crate) enum LaneError {
    /// The client sent no hello in time.
    #[error("no hello within {0:?}")]
    HelloTimeout(Duration),
    /// Reading or writing the connection failed.
    #[error("lane connection: {0}")]
    Io(#[from] std::io::Error),
    /// The first bytes were not a valid hello.
    #[error("hello: {0}")]
    Hello(#[from] HelloError),
    /// The hello named no outstanding ticket.
    #[error("unknown or expired ticket")]
    UnknownTicket,
    /// The ticket was issued for another address pair (it is burnt).
    #[error("a ticket for {expected} redeemed at {local} from {remote}")]
    WrongAddress {
        /// The local IP the ticket was issued for.
        expected: IpAddr,
        /// Where the connection arrived.
        local: IpAddr,
        /// Where it came from.
        remote: IpAddr,
    },
    /// The object could not be written (gone, failed, or pending).
    #[error("cannot serve {id}: {served:?}")]
    Serve {
        /// The object.
        id: ObjectId,
        /// What the runtime said instead.
        served: Served,
    },
    /// No connection to the holder's lane in time.
    #[error("bulk lane {addr}: no connection within {after:?}")]
    ConnectTimeout {
        /// The lane's address.
        addr: SocketAddr,
        /// How long was waited.
        after: Duration,
    },
    /// The holder's lane could not be reached.
    #[error("bulk lane {addr}: {source}")]
    Connect {
        /// The lane's address.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The bytes did not decode (or did not authenticate).
    #[error(transparent)]
    Decode(#[from] DecodeError),
    /// The stream ended before every announced byte came.
    #[error("the stream ended after {received} of {expected} bytes")]
    Short {
        /// Bytes received.
        received: u64,
        /// Bytes announced.
        expected: u64,
    },
    /// More bytes came than the object has.
    #[error("bytes after the object's end")]
    Trailing,
}

/// The message lane, as the bulk lane's listener sees it: connections
/// whose hello has version byte `MESSAGE_LANE_VERSION` are its.
pub(crate) trait SideLane: Send + Sync + 'static {
    /// How many connections its outstanding tickets expect from `ip`.
    fn expects(&self, ip: IpAddr) -> usize;
    /// Redeems the ticket `token` names for a connection at `local` from
    /// `remote` (a misdirected one is burnt); what takes the connection
    /// over once it is in blocking mode.
    fn redeem(&self, token: &Secret, local: IpAddr, remote: IpAddr) -> Result<SideStart, LaneError>;
}

/// Takes a redeemed message-lane connection over.
pub(crate) type SideStart = Box<dyn FnOnce(std::net::TcpStream) + Send>;

/// What a hello redeemed.
enum Redeemed {
    Bulk(Box<Ticket>),
    Side(SideStart),
}

/// What a node's bulk lane has done (see [`Node::lane_stats`](crate::Node::lane_stats)).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct LaneStats {
    /// The lane's first TCP port, if it is on and bound (it has one per
    /// local IP peers' connections arrive on).
    pub port: Option<u16>,
    /// Objects (or their remainders) streamed to peers in full.
    pub served: u64,
    /// Objects received from peers' lanes and decoded.
    pub received: u64,
    /// Lane connections closed without a stream: from an IP no ticket
    /// expects, over the per-IP or total hello cap, or whose hello was
    /// late, malformed, not MACed under this cluster's key, or for an
    /// unknown, expired or misdirected ticket.
    pub refused: u64,
    /// Ticket requests answered `Busy` (sender slots full, or no address
    /// known for the peer): those peers fetched in chunks.
    pub busy: u64,
}

/// Sender slots: at most [`MAX_SENDERS`] in all, [`MAX_SENDERS_PER_PEER`]
/// per peer.
#[derive(Debug)]
struct Slots {
    all: Arc<Semaphore>,
    per_peer: Mutex<HashMap<PeerId, usize>>,
}

/// One sender slot, held by a ticket and then its stream.
#[derive(Debug)]
struct Slot {
    slots: Arc<Slots>,
    peer: PeerId,
    _permit: OwnedSemaphorePermit,
}

impl Slots {
    fn take(self: &Arc<Self>, peer: PeerId) -> Option<Slot> {
        let mut per_peer = lock_unpoisoned(&self.per_peer);
        let n = per_peer.entry(peer).or_default();
        if *n >= MAX_SENDERS_PER_PEER {
            return None;
        }
        let permit = self.all.clone().try_acquire_owned().ok()?;
        *n += 1;
        Some(Slot { slots: self.clone(), peer, _permit: permit })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut per_peer = lock_unpoisoned(&self.slots.per_peer);
        if let Some(n) = per_peer.get_mut(&self.peer) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                per_peer.remove(&self.peer);
            }
        }
    }
}

struct Ticket {
    /// Who it was issued to (for the timeline).
    peer: PeerId,
    id: ObjectId,
    skip: u64,
    key: Secret,
    expires: Instant,
    /// The local IP it must be redeemed at.
    local: IpAddr,
    /// The IPs it may be redeemed from (its peer's connections').
    remotes: Vec<IpAddr>,
    _slot: Slot,
}

/// Connections waiting for their hello, per remote IP.
#[derive(Debug, Default)]
struct Waiting {
    per_ip: HashMap<IpAddr, usize>,
    total: usize,
}

/// A connection's place among those waiting for their hello.
struct WaitingSlot {
    lane: Arc<Lane>,
    ip: IpAddr,
}

impl Drop for WaitingSlot {
    fn drop(&mut self) {
        let mut w = lock_unpoisoned(&self.lane.waiting);
        w.total = w.total.saturating_sub(1);
        if let Some(n) = w.per_ip.get_mut(&self.ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                w.per_ip.remove(&self.ip);
            }
        }
    }
}

/// What a lane is made with.
pub(crate) struct LaneSetup {
    /// The node's runtime, whose objects it serves.
    pub(crate) rt: Runtime,
    /// The node's tokio runtime (listeners are bound on demand).
    pub(crate) handle: tokio::runtime::Handle,
    /// The cluster secret, if any (hellos are MACed under a key from it).
    pub(crate) secret: Option<Secret>,
    /// Each peer's connections (where its tickets may be redeemed).
    pub(crate) links: Arc<PeerLinks>,
    /// Bound on each write of a stream.
    pub(crate) write_timeout: Duration,
    /// How long a ticket waits for its connection ([`TICKET_TTL`]).
    pub(crate) ttl: Duration,
}

/// A node's bulk lane: its listening ports and outstanding tickets.
pub(crate) struct Lane {
    me: Weak<Lane>,
    rt: Runtime,
    handle: tokio::runtime::Handle,
    key: HelloKey,
    links: Arc<PeerLinks>,
    /// A listener's port per local IP.
    ports: Mutex<HashMap<IpAddr, u16>>,
    first_port: OnceLock<u16>,
    tickets: Mutex<HashMap<Secret, Ticket>>,
    slots: Arc<Slots>,
    waiting: Mutex<Waiting>,
    write_timeout: Duration,
    ttl: Duration,
    served: AtomicU64,
    /// Bytes written to lane connections (sealed).
    sent_bytes: AtomicU64,
    refused: AtomicU64,
    busy: AtomicU64,
    /// The message lane sharing the listener, once set.
    side: OnceLock<Arc<dyn SideLane>>,
}

impl Lane {
    /// A lane listening at each of `ips` that names one address (others are
    /// bound when a peer's connection arrives on them); must run on
    /// `setup.handle`'s runtime.
    pub(crate) fn start(setup: LaneSetup, ips: &[IpAddr]) -> Arc<Lane> {
        let lane = Arc::new_cyclic(|me| Lane {
            me: me.clone(),
            rt: setup.rt,
            handle: setup.handle,
            key: HelloKey::new(setup.secret.as_ref()),
            links: setup.links,
            ports: Mutex::new(HashMap::new()),
            first_port: OnceLock::new(),
            tickets: Mutex::new(HashMap::new()),
            slots: Arc::new(Slots { all: Arc::new(Semaphore::new(MAX_SENDERS)), per_peer: Mutex::default() }),
            waiting: Mutex::default(),
            write_timeout: setup.write_timeout,
            ttl: setup.ttl,
            served: 0.into(),
            sent_bytes: 0.into(),
            refused: 0.into(),
            busy: 0.into(),
            side: OnceLock::new(),
        });
        for &ip in ips {
            let _ = lane.port_for(ip);
        }
        lane
    }

    /// Bytes written to lane connections so far (sealed records).
    pub(crate) fn sent_bytes(&self) -> u64 {
        self.sent_bytes.load(Ordering::Relaxed)
    }

    /// What the lane has done so far (`received` is the fetcher's, 0 here).
    pub(crate) fn stats(&self) -> LaneStats {
        LaneStats {
            port: self.first_port.get().copied(),
            served: self.served.load(Ordering::Relaxed),
            received: 0,
            refused: self.refused.load(Ordering::Relaxed),
            busy: self.busy.load(Ordering::Relaxed),
        }
    }

    /// The hello key of this node's cluster (clients MAC with it too).
    #[cfg(test)]
    pub(crate) fn hello_key(&self) -> &HelloKey {
        &self.key
    }

    /// The port listening at `ip`, bound now if there is none yet; `None`
    /// for a wildcard IP or if binding fails.
    fn port_for(&self, ip: IpAddr) -> Option<u16> {
        if ip.is_unspecified() {
            return None;
        }
        let mut ports = lock_unpoisoned(&self.ports);
        if let Some(&port) = ports.get(&ip) {
            return Some(port);
        }
        match self.bind(ip) {
            Ok(port) => {
                ports.insert(ip, port);
                let _ = self.first_port.set(port);
                Some(port)
            }
            Err(e) => {
                tracing::debug!(%ip, error = %e, "bulk lane: cannot listen");
                None
            }
        }
    }

    fn bind(&self, ip: IpAddr) -> std::io::Result<u16> {
        let std_listener = std::net::TcpListener::bind((ip, 0))?;
        std_listener.set_nonblocking(true)?;
        let port = std_listener.local_addr()?.port();
        let _entered = self.handle.enter();
        let listener = TcpListener::from_std(std_listener)?;
        let lane = self.me.upgrade().ok_or_else(|| std::io::Error::other("the lane is gone"))?;
        self.handle.spawn(serve(lane, listener, ip));
        Ok(port)
    }

    /// Lets the message lane share this lane's listeners (once).
    pub(crate) fn set_side(&self, side: Arc<dyn SideLane>) {
        let _ = self.side.set(side);
    }

    /// Where `peer` may redeem a ticket: this node's port at the local IP
    /// of its newest connection (bound now if needed), that IP, and the
    /// remote IPs of its connections.
    pub(crate) fn place_for(&self, peer: &PeerId) -> Option<(u16, IpAddr, Vec<IpAddr>)> {
        let links = self.links.of(peer);
        let &(local, _) = links.last()?;
        let port = self.port_for(local)?;
        Some((port, local, links.iter().map(|l| l.1).collect()))
    }

    /// A ticket for `peer` for object `id` from byte `skip` on: `Ticket`,
    /// or `Busy` when its sender slots are taken, no address is known for
    /// it, or the OS gave no randomness.
    pub(crate) fn issue(&self, peer: PeerId, id: ObjectId, skip: u64) -> Response {
        self.try_issue(peer, id, skip).unwrap_or_else(|| {
            self.busy.fetch_add(1, Ordering::Relaxed);
            Response::Busy
        })
    }

    fn try_issue(&self, peer: PeerId, id: ObjectId, skip: u64) -> Option<Response> {
        let links = self.links.of(&peer);
        let &(local, _) = links.last()?;
        let remotes = links.iter().map(|l| l.1).collect();
        let port = self.port_for(local)?;
        let (token, key) = (seal::random_secret().ok()?, seal::random_secret().ok()?);
        let mut tickets = lock_unpoisoned(&self.tickets);
        let now = Instant::now();
        tickets.retain(|_, t| t.expires > now); // frees expired tickets' slots
        let slot = self.slots.take(peer)?;
        tickets.insert(token, Ticket { peer, id, skip, key, expires: now + self.ttl, local, remotes, _slot: slot });
        Some(Response::Ticket { port, token, key })
    }

    /// A place among the connections waiting for their hello, for one from
    /// `ip`; `None` if no outstanding ticket expects it or its caps are
    /// reached.
    fn admit(&self, ip: IpAddr) -> Option<WaitingSlot> {
        let now = Instant::now();
        let expected =
            lock_unpoisoned(&self.tickets).values().filter(|t| t.expires > now && t.remotes.contains(&ip)).count()
                + self.side.get().map_or(0, |s| s.expects(ip));
        let mut w = lock_unpoisoned(&self.waiting);
        let from_ip = w.per_ip.get(&ip).copied().unwrap_or(0);
        if from_ip >= expected.min(MAX_HELLOS_PER_IP) || w.total >= MAX_HELLOS {
            return None;
        }
        w.total += 1;
        *w.per_ip.entry(ip).or_default() += 1;
        Some(WaitingSlot { lane: self.me.upgrade()?, ip })
    }

    /// Takes the ticket `token` names if it may be redeemed at `local` from
    /// `remote` (a misdirected one is burnt).
    fn redeem(&self, token: &Secret, local: IpAddr, remote: IpAddr) -> Result<Ticket, LaneError> {
        let t = lock_unpoisoned(&self.tickets).remove(token).ok_or(LaneError::UnknownTicket)?;
        if t.expires <= Instant::now() {
            return Err(LaneError::UnknownTicket);
        }
        if t.local != local || !t.remotes.contains(&remote) {
            return Err(LaneError::WrongAddress { expected: t.local, local, remote });
        }
        Ok(t)
    }

    /// Reads a hello (bounded in time) and redeems its ticket; the stream
    /// comes back in blocking mode for the sender thread.
    async fn read_ticket(
        &self,
        mut stream: TcpStream,
        local: IpAddr,
    ) -> Result<(Redeemed, std::net::TcpStream), LaneError> {
        // The refusal is counted while the socket is still open, so a
        // client that sees it closed also sees it counted.
        let checked = self.check_hello(&mut stream, local).await;
        let ticket = match checked {
            Ok(t) => t,
            Err(e) => {
                self.refused.fetch_add(1, Ordering::Relaxed);
                return Err(e);
            }
        };
        let stream = stream.into_std()?;
        stream.set_nonblocking(false)?;
        Ok((ticket, stream))
    }

    /// Reads and checks a connection's hello; the ticket it redeems (the
    /// message lane's, for its version byte).
    async fn check_hello(&self, stream: &mut TcpStream, local: IpAddr) -> Result<Redeemed, LaneError> {
        let remote = stream.peer_addr()?.ip();
        let mut hello = [0u8; HELLO_BYTES];
        tokio::time::timeout(HELLO_TIMEOUT, stream.read_exact(&mut hello))
            .await
            .map_err(|_| LaneError::HelloTimeout(HELLO_TIMEOUT))??;
        let (version, hello) = Hello::parse(&hello, &self.key)?;
        if version == MESSAGE_LANE_VERSION {
            let side = self.side.get().ok_or(LaneError::UnknownTicket)?;
            return side.redeem(&hello.token, local, remote).map(Redeemed::Side);
        }
        self.redeem(&hello.token, local, remote).map(|t| Redeemed::Bulk(Box::new(t)))
    }

    /// Streams the ticket's object, sealed, on a blocking thread; the
    /// ticket's sender slot is freed when this returns.
    /// A `manta_p2p.bulk_send` span (debug), with a line when it is sent.
    fn send(&self, t: Ticket, stream: std::net::TcpStream) -> Result<(), LaneError> {
        let _span =
            tracing::debug_span!("manta_p2p.bulk_send", peer = %t.peer, object = %t.id, from_byte = t.skip).entered();
        let started = Instant::now();
        let out = DeadlineWriter { stream, start: Instant::now(), written: 0, per_write: self.write_timeout };
        let mut w = SealWriter::new(out, &t.key);
        let backend = self.rt.backend();
        let start = backend.timeline_on().then(|| backend.timeline_now());
        // Without the last record the reader sees a stream cut short: an
        // object that cannot be written here fails that way.
        let total =
            backend.write_object(t.id, t.skip, &mut w).map_err(|served| LaneError::Serve { id: t.id, served })?;
        let out = w.finish()?;
        self.served.fetch_add(1, Ordering::Relaxed);
        self.sent_bytes.fetch_add(out.written, Ordering::Relaxed);
        let ms = started.elapsed().as_secs_f64() * 1e3;
        tracing::debug!(bytes = total.saturating_sub(t.skip), sealed = out.written, ms, "sent over the bulk lane");
        if let Some(start) = start {
            backend.record_transfer(manta::backend::Transfer {
                id: t.id,
                bytes: total.saturating_sub(t.skip),
                peer: Arc::from(t.peer.to_string()),
                direction: manta::TransferDirection::Out,
                lane: manta::TransferLane::Bulk,
                start,
            });
        }
        Ok(())
    }
}

/// Accepts lane connections at `local` until the node's runtime shuts down.
async fn serve(lane: Arc<Lane>, listener: TcpListener, local: IpAddr) {
    loop {
        let (stream, from) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                // Out of descriptors, say: let it pass rather than spin.
                tracing::debug!(error = %e, "bulk lane: accept failed");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let Some(waiting) = lane.admit(from.ip()) else {
            lane.refused.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(%from, "bulk lane: connection refused (no ticket expects its IP, or too many waiting)");
            continue;
        };
        let lane = lane.clone();
        tokio::spawn(async move {
            let ticket = lane.read_ticket(stream, local).await;
            drop(waiting);
            match ticket {
                Ok((Redeemed::Side(start), stream)) => start(stream),
                Ok((Redeemed::Bulk(ticket), stream)) => {
                    let sender = lane.clone();
                    let sent = tokio::task::spawn_blocking(move || sender.send(*ticket, stream)).await;
                    if let Ok(Err(e)) = sent {
                        tracing::debug!(%from, error = %e, "bulk lane: stream not completed");
                    }
                }
                Err(e) => {
                    // (counted in `read_ticket`, before the socket closed)
                    tracing::debug!(%from, error = %e, "bulk lane: hello refused");
                }
            }
        });
    }
}

/// A lane stream's socket with a deadline for the whole stream: it must
/// average [`MIN_RATE`] after [`STREAM_GRACE`]; each write is also bounded
/// by `per_write`.
struct DeadlineWriter {
    stream: std::net::TcpStream,
    start: Instant,
    written: u64,
    per_write: Duration,
}

impl Write for DeadlineWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let allowed = STREAM_GRACE + Duration::from_secs_f64(self.written as f64 / MIN_RATE as f64);
        let left = allowed.saturating_sub(self.start.elapsed());
        if left.is_zero() {
            let why = format!("the stream fell below {} MiB/s after {} bytes", MIN_RATE >> 20, self.written);
            return Err(std::io::Error::new(std::io::ErrorKind::TimedOut, why));
        }
        self.stream.set_write_timeout(Some(left.min(self.per_write)))?;
        let n = self.stream.write(buf)?;
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.stream.flush()
    }
}

/// A ticket as the requesting side holds it.
pub(crate) struct Pass {
    /// The lane's address (the holder's connection IP, the ticket's port).
    pub(crate) addr: SocketAddr,
    /// The ticket's token, sent in the hello.
    pub(crate) token: Secret,
    /// The key the object is sealed under.
    pub(crate) key: Secret,
}

/// Connects to a lane and sends the hello, MACed under `hello` (bounded
/// by `timeout`); the stream comes back in blocking mode, with `timeout`
/// as read timeout.
pub(crate) async fn connect(
    pass: &Pass,
    hello: &HelloKey,
    timeout: Duration,
) -> Result<std::net::TcpStream, LaneError> {
    connect_with(pass.addr, Hello { token: pass.token }.to_bytes(hello), timeout).await
}

/// [`connect`] to `addr` with the hello `hello` (either lane's).
pub(crate) async fn connect_with(
    addr: SocketAddr,
    hello: [u8; HELLO_BYTES],
    timeout: Duration,
) -> Result<std::net::TcpStream, LaneError> {
    let io = async {
        let mut s = TcpStream::connect(addr).await?;
        tokio::io::AsyncWriteExt::write_all(&mut s, &hello).await?;
        let s = s.into_std()?;
        s.set_nonblocking(false)?;
        s.set_read_timeout(Some(timeout))?;
        Ok::<_, std::io::Error>(s)
    };
    match tokio::time::timeout(timeout, io).await {
        Ok(Ok(s)) => Ok(s),
        Ok(Err(source)) => Err(LaneError::Connect { addr, source }),
        Err(_) => Err(LaneError::ConnectTimeout { addr, after: timeout }),
    }
}

/// Decodes an object whose encoding starts with `head` and goes on for
/// `rest` more bytes on `stream` (blocking; call it off the async
/// threads). Every announced byte must arrive, authenticated, and no more.
/// Records are opened straight into the decoder's buffer, so the replica
/// costs no copy besides the kernel's. (Opening on a second thread while
/// this one decodes was tried: on two cores it cost more than it overlapped.)
pub(crate) fn receive(
    fetch: &Fetch,
    head: &[u8],
    stream: std::net::TcpStream,
    key: &Secret,
    rest: u64,
) -> Result<Decoded, LaneError> {
    let mut lane = OpenReader::new(stream, key, rest);
    let decoded = fetch.decode(&mut Read::chain(head, &mut lane))?;
    // The decoder stops at the value's end: the stream must end there too.
    let mut probe = [0u8; 1];
    match lane.read(&mut probe) {
        Ok(0) if lane.finished() && lane.received() == rest => Ok(decoded),
        Ok(0) => Err(LaneError::Short { received: lane.received(), expected: rest }),
        Ok(_) => Err(LaneError::Trailing),
        Err(e) => Err(LaneError::Io(e)),
    }
}

#[cfg(test)]
#[path = "bulk_tests.rs"]
mod tests;
