//! A node's message lanes (`lane`): asking peers for them over libp2p,
//! handing out and redeeming their tickets, and their bounds. Lanes carry
//! small gets (`fetch_lane`) and mail (`outbox`, `lane_mail`).
//!
//! Setup. A node that wants a lane to a peer (`Lanes::get` found none)
//! asks for it in the background, on the libp2p stream protocol
//! `/manta/lane/1` (`wire::lane`): the peer answers with a ticket (a port
//! on its bulk-lane listener, a fresh 32-byte token and key from the OS
//! RNG), `Busy` or `Off`. The asker connects to that port at the IP the
//! peer's libp2p connection has and sends the bulk lane's hello with
//! version byte 3 (`seal::MESSAGE_LANE_VERSION`), MACed under the
//! cluster's hello key. The listener (`bulk`, which routes version 3 here
//! through [`SideLane`]) redeems the ticket under the bulk lane's rules:
//! one connection, within the ticket TTL, at the local IP it was issued
//! for, from a remote IP of that peer's connections, under the same hello
//! caps and deadline. Both sides then derive the lane's two directional
//! keys with HKDF and start its reader thread. Meanwhile, and whenever a
//! lane is missing or has failed, everything goes over libp2p: a peer that
//! does not speak `/manta/lane/1` (or answers `Off` or `Busy`) is asked
//! again only after a pause, and a node built with `.fast_lane(false)`
//! has no `Lanes` at all (it never asks and does not register the
//! protocol).
//!
//! One lane per direction of setup: a node uses the lane it dialled for
//! its requests (the answers come back on it) and answers the requests
//! that come on lanes peers dialled to it.
//!
//! Invariants (per node): at most [`MAX_LANES`] lanes, outstanding tickets
//! and setups in progress in all, so at most that many reader threads;
//! from one peer at most [`MAX_INBOUND_PER_PEER`] inbound lane or
//! outstanding ticket; beyond either the answer is `Busy`. A ticket is
//! good for one connection for the bulk lane's ticket TTL. Every await of
//! a setup is bounded by the request timeout. After `shutdown` (the node
//! stops) every lane is poisoned and no new one is made.

use super::bulk::{self, LaneError, PeerIps, SideLane, SideStart};
use super::lane::{self, Conn, LaneMail, LaneService, Serve, Timing};
use super::Streams;
use crate::sync::lock_unpoisoned;
use crate::wire::codec::{read_frame, write_frame, Frame};
use crate::wire::lane::{
    decode_answer, decode_ask, encode_answer, encode_ask, LaneAnswer, LaneAsk, LANE_PROTOCOL, MAX_ANSWER_BYTES,
    MAX_ASK_BYTES,
};
use crate::wire::seal::{self, Hello, HelloKey, Secret, MESSAGE_LANE_VERSION};
use futures::{AsyncWriteExt, StreamExt};
use libp2p::{PeerId, StreamProtocol};
use libp2p_stream::OpenStreamError;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};

/// Most lanes (both directions), outstanding tickets and setups in
/// progress of one node.
pub(crate) const MAX_LANES: usize = 64;

/// Most inbound lanes and outstanding tickets of one peer.
pub(crate) const MAX_INBOUND_PER_PEER: usize = 1;

/// Longest an ask waits for the event loop to record its connection's
/// addresses (see `Lanes::await_links`).
const LINKS_WAIT: Duration = Duration::from_secs(1);

/// Pause before asking a peer again after its lane failed or could not be
/// set up.
const RETRY_AFTER: Duration = Duration::from_secs(2);

/// Pause before asking again a peer that has no lane (`Off`, or the
/// protocol is not supported).
const NO_LANE_RETRY: Duration = Duration::from_secs(60);

/// `/manta/lane/1` as a stream protocol.
pub(crate) fn lane_protocol() -> StreamProtocol {
    StreamProtocol::new(LANE_PROTOCOL)
}

/// What this node knows of its own lane to a peer.
enum Out {
    /// A setup is in progress.
    Asking,
    /// The lane is up.
    Up(Arc<Conn>),
    /// No lane; not asked again before this.
    Wait(Instant),
}

/// A ticket this node handed out.
struct Ticket {
    peer: PeerId,
    key: Secret,
    expires: Instant,
    local: IpAddr,
    remotes: Vec<IpAddr>,
}

#[derive(Default)]
struct State {
    out: HashMap<PeerId, Out>,
    /// Inbound lanes up, per peer.
    inbound: HashMap<PeerId, usize>,
    tickets: HashMap<Secret, Ticket>,
    /// Every lane up (both directions), to end them on shutdown.
    live: Vec<Arc<Conn>>,
}

impl State {
    fn purge(&mut self, now: Instant) {
        self.tickets.retain(|_, t| t.expires > now);
    }

    /// Lanes, setups and tickets counted against [`MAX_LANES`].
    fn used(&self) -> usize {
        let out = self.out.values().filter(|o| !matches!(o, Out::Wait(_))).count();
        out + self.inbound.values().sum::<usize>() + self.tickets.len()
    }

    fn inbound_of(&self, peer: &PeerId) -> usize {
        self.inbound.get(peer).copied().unwrap_or(0) + self.tickets.values().filter(|t| t.peer == *peer).count()
    }
}

/// What a node's lanes are made with.
pub(crate) struct LanesSetup {
    /// Opening and accepting libp2p streams.
    pub(crate) streams: Arc<dyn Streams>,
    /// The bulk lane, whose listeners lanes are accepted on.
    pub(crate) bulk: Arc<bulk::Lane>,
    /// The cluster secret, if any (hellos are MACed under a key from it).
    pub(crate) secret: Option<Secret>,
    /// Where connected peers are.
    pub(crate) peer_ips: PeerIps,
    /// Where setups run.
    pub(crate) handle: tokio::runtime::Handle,
    /// Bound of every network wait of a setup; a lane's frame deadline,
    /// call deadline and write bound.
    pub(crate) request_timeout: Duration,
    /// A lane with nothing in flight closes after this long without input.
    pub(crate) idle_timeout: Duration,
    /// How long a ticket waits for its connection.
    pub(crate) ttl: Duration,
}

/// What a node's message lanes have done (see
/// [`Node::fast_lane_stats`](crate::Node::fast_lane_stats)).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct FastLaneStats {
    /// Lanes this node dialled that came up.
    pub dialled: u64,
    /// Lanes peers dialled to this node that came up.
    pub accepted: u64,
    /// Lanes that ended (either side, any reason).
    pub ended: u64,
    /// Setups that failed or were answered `Busy` or `Off` (or the peer
    /// does not speak `/manta/lane/1`).
    pub failed_setups: u64,
    /// Ticket requests this node answered `Busy`.
    pub busy: u64,
    /// Lane connections refused at the hello (unknown, expired or
    /// misdirected ticket).
    pub refused: u64,
    /// Lanes up now.
    pub up: u64,
    /// Objects received over this node's lanes.
    pub gets: u64,
    /// Mail batches this node wrote on lanes.
    pub mail_sent: u64,
    /// Mail batches this node read from lanes.
    pub mail_received: u64,
}

/// A node's message lanes.
pub(crate) struct Lanes {
    me: Weak<Lanes>,
    streams: Arc<dyn Streams>,
    bulk: Arc<bulk::Lane>,
    hello: HelloKey,
    peer_ips: PeerIps,
    handle: tokio::runtime::Handle,
    timing: Timing,
    ttl: Duration,
    state: Mutex<State>,
    service: OnceLock<Arc<dyn LaneService>>,
    mail: OnceLock<Arc<dyn LaneMail>>,
    stopped: AtomicBool,
    counters: Arc<lane::Counters>,
    dialled: AtomicU64,
    accepted: AtomicU64,
    ended: AtomicU64,
    failed_setups: AtomicU64,
    busy: AtomicU64,
    refused: AtomicU64,
}

impl Lanes {
    /// Lanes sharing `setup.bulk`'s listeners, answering `/manta/lane/1`
    /// (must run on `setup.handle`'s runtime).
    pub(crate) fn start(setup: LanesSetup) -> Arc<Lanes> {
        let timing = Timing { frame: setup.request_timeout, idle: setup.idle_timeout };
        let lanes = Arc::new_cyclic(|me| Lanes {
            me: me.clone(),
            streams: setup.streams,
            bulk: setup.bulk,
            hello: HelloKey::new(setup.secret.as_ref()),
            peer_ips: setup.peer_ips,
            handle: setup.handle,
            timing,
            ttl: setup.ttl,
            state: Mutex::default(),
            service: OnceLock::new(),
            mail: OnceLock::new(),
            stopped: AtomicBool::new(false),
            counters: Arc::default(),
            dialled: 0.into(),
            accepted: 0.into(),
            ended: 0.into(),
            failed_setups: 0.into(),
            busy: 0.into(),
            refused: 0.into(),
        });
        let side: Arc<dyn SideLane> = lanes.clone();
        lanes.bulk.set_side(side);
        lanes.handle.spawn(serve(lanes.clone()));
        lanes
    }

    /// Sets what answers peers' `Get`s (once; before it, a `Get` ends the lane).
    pub(crate) fn set_service(&self, service: Arc<dyn LaneService>) {
        let _ = self.service.set(service);
    }

    /// Sets what applies peers' mail and takes their acks (once; before
    /// it, mail ends the lane).
    pub(crate) fn set_mail(&self, mail: Arc<dyn LaneMail>) {
        let _ = self.mail.set(mail);
    }

    /// What the lanes have done so far.
    pub(crate) fn stats(&self) -> FastLaneStats {
        let st = lock_unpoisoned(&self.state);
        let out = st.out.values().filter(|o| matches!(o, Out::Up(_))).count();
        let up = (out + st.inbound.values().sum::<usize>()) as u64;
        drop(st);
        FastLaneStats {
            dialled: self.dialled.load(Ordering::Relaxed),
            accepted: self.accepted.load(Ordering::Relaxed),
            ended: self.ended.load(Ordering::Acquire),
            failed_setups: self.failed_setups.load(Ordering::Relaxed),
            busy: self.busy.load(Ordering::Relaxed),
            refused: self.refused.load(Ordering::Relaxed),
            up,
            gets: 0,
            mail_sent: self.counters.mail_sent.load(Ordering::Relaxed),
            mail_received: self.counters.mail_received.load(Ordering::Relaxed),
        }
    }

    /// The lane this node dialled to `peer`, if it is up; if there is none
    /// (and it is time to), one is asked for in the background.
    pub(crate) fn get(&self, peer: PeerId) -> Option<Arc<Conn>> {
        let mut st = lock_unpoisoned(&self.state);
        match st.out.get(&peer) {
            Some(Out::Up(conn)) if !conn.is_down() => return Some(conn.clone()),
            Some(Out::Up(_) | Out::Asking) => return None,
            Some(Out::Wait(until)) if *until > Instant::now() => return None,
            _ => {}
        }
        if self.stopped.load(Ordering::Acquire) || st.used() >= MAX_LANES {
            return None;
        }
        st.out.insert(peer, Out::Asking);
        drop(st);
        if let Some(me) = self.me.upgrade() {
            self.handle.spawn(async move { me.dial(peer).await });
        }
        None
    }

    /// Poisons every lane up now (new ones are asked for again later):
    /// what a lane failure looks like to everything using it.
    pub(crate) fn break_all(&self) {
        let conns = lock_unpoisoned(&self.state).live.clone();
        for c in conns {
            c.poison();
        }
    }

    /// Poisons every lane and refuses new ones (the node stops).
    pub(crate) fn shutdown(&self) {
        self.stopped.store(true, Ordering::Release);
        let conns = std::mem::take(&mut lock_unpoisoned(&self.state).live);
        for c in conns {
            // Its reader wakes at once (the socket is shut down) and ends.
            c.poison();
        }
    }

    /// Asks `peer` for a lane and connects it; on failure, `peer` waits.
    async fn dial(self: Arc<Self>, peer: PeerId) {
        let pause = match self.try_dial(peer).await {
            Ok(()) => return,
            Err(pause) => pause,
        };
        self.failed_setups.fetch_add(1, Ordering::Relaxed);
        lock_unpoisoned(&self.state).out.insert(peer, Out::Wait(Instant::now() + pause));
    }

    async fn try_dial(&self, peer: PeerId) -> Result<(), Duration> {
        let timeout = self.timing.frame;
        let ask = async {
            let mut s = match self.streams.open(peer, lane_protocol()).await {
                Ok(s) => s,
                Err(OpenStreamError::UnsupportedProtocol(_)) => return Err(NO_LANE_RETRY),
                Err(e) => {
                    tracing::debug!(%peer, error = %e, "lane: cannot ask");
                    return Err(RETRY_AFTER);
                }
            };
            write_frame(&mut s, &encode_ask(&LaneAsk::Open), MAX_ASK_BYTES).await.map_err(|_| RETRY_AFTER)?;
            let answer = match read_frame(&mut s, MAX_ANSWER_BYTES).await {
                Ok(Frame::Body(b)) => decode_answer(&b).map_err(|_| RETRY_AFTER)?,
                _ => return Err(RETRY_AFTER),
            };
            let _ = s.close().await;
            Ok(answer)
        };
        let answer = tokio::time::timeout(timeout, ask).await.map_err(|_| RETRY_AFTER)??;
        let (port, token, key) = match answer {
            LaneAnswer::Ticket { port, token, key } => (port, token, key),
            LaneAnswer::Busy => return Err(RETRY_AFTER),
            LaneAnswer::Off => return Err(NO_LANE_RETRY),
        };
        let ip = lock_unpoisoned(&self.peer_ips).get(&peer).copied().ok_or(RETRY_AFTER)?;
        let hello = Hello { token }.to_bytes_version(&self.hello, MESSAGE_LANE_VERSION);
        let stream = bulk::connect_with(SocketAddr::new(ip, port), hello, timeout).await.map_err(|e| {
            tracing::debug!(%peer, error = %e, "lane: cannot connect");
            RETRY_AFTER
        })?;
        let (conn, side) =
            Conn::new(peer, stream, &key, true, self.timing, self.counters.clone()).map_err(|_| RETRY_AFTER)?;
        {
            let mut st = lock_unpoisoned(&self.state);
            if self.stopped.load(Ordering::Acquire) {
                return Err(NO_LANE_RETRY);
            }
            st.out.insert(peer, Out::Up(conn.clone()));
        }
        self.dialled.fetch_add(1, Ordering::Relaxed);
        self.spawn_reader(conn, side);
        Ok(())
    }

    /// Starts a lane's reader thread; when it ends, the lane is forgotten.
    fn spawn_reader(&self, conn: Arc<Conn>, side: lane::ReadSide) {
        {
            let mut st = lock_unpoisoned(&self.state);
            if self.stopped.load(Ordering::Acquire) {
                conn.poison();
            }
            st.live.push(conn.clone());
        }
        let me = self.me.clone();
        // A lane answers gets on the side that accepted it; mail and acks
        // go both ways.
        let service = self.service.get().cloned().filter(|_| !conn.dialled());
        let (c, mail) = (conn.clone(), self.mail.get().cloned());
        let handle = self.handle.clone();
        let spawned = std::thread::Builder::new().name("manta-lane".into()).spawn(move || {
            let keep_going = || me.upgrade().is_some_and(|l| !l.stopped.load(Ordering::Acquire));
            let arm = || {
                if let Some(m) = &mail {
                    c.flush_acks_later(m, &handle);
                }
            };
            let serve = Serve { get: service.as_deref(), mail: mail.as_deref(), arm_acks: Some(&arm) };
            let ended = lane::read_loop(&c, side, serve, &keep_going);
            tracing::debug!(peer = %c.peer(), dialled = c.dialled(), %ended, "lane ended");
            if let Some(lanes) = me.upgrade() {
                lanes.forget(&c);
            }
        });
        if spawned.is_err() {
            conn.poison();
            self.forget(&conn);
        }
    }

    /// A lane ended: its place is freed (a dialled one is asked for again
    /// after a pause).
    fn forget(&self, conn: &Arc<Conn>) {
        let mut st = lock_unpoisoned(&self.state);
        st.live.retain(|c| !Arc::ptr_eq(c, conn));
        let peer = conn.peer();
        if conn.dialled() {
            if matches!(st.out.get(&peer), Some(Out::Up(c)) if Arc::ptr_eq(c, conn)) {
                st.out.insert(peer, Out::Wait(Instant::now() + RETRY_AFTER));
            }
        } else if let Some(n) = st.inbound.get_mut(&peer) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                st.inbound.remove(&peer);
            }
        }
        // Counted once its place is free (and under the lock): whoever
        // sees the count sees the place given back, so a peer may ask again.
        self.ended.fetch_add(1, Ordering::Release);
    }

    /// The answer to `peer`'s ask: a ticket, or `Busy`.
    fn issue(&self, peer: PeerId) -> LaneAnswer {
        if self.stopped.load(Ordering::Acquire) {
            return LaneAnswer::Off;
        }
        let Some((port, local, remotes)) = self.bulk.place_for(&peer) else { return self.busy() };
        let (Ok(token), Ok(key)) = (seal::random_secret(), seal::random_secret()) else { return self.busy() };
        let now = Instant::now();
        let mut st = lock_unpoisoned(&self.state);
        st.purge(now);
        if st.used() >= MAX_LANES || st.inbound_of(&peer) >= MAX_INBOUND_PER_PEER {
            drop(st);
            return self.busy();
        }
        st.tickets.insert(token, Ticket { peer, key, expires: now + self.ttl, local, remotes });
        LaneAnswer::Ticket { port, token, key }
    }

    /// Waits (at most [`LINKS_WAIT`]) until the event loop has recorded a
    /// connection of `peer`'s addresses: a stream of a connection can reach
    /// `serve` before the event loop has seen that connection, and a ticket
    /// needs its IPs (without them the answer would be `Busy`, and a peer
    /// that asks right after connecting would wait [`RETRY_AFTER`]).
    async fn await_links(&self, peer: PeerId) {
        let deadline = Instant::now() + LINKS_WAIT;
        while self.bulk.place_for(&peer).is_none() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    fn busy(&self) -> LaneAnswer {
        self.busy.fetch_add(1, Ordering::Relaxed);
        LaneAnswer::Busy
    }
}

impl SideLane for Lanes {
    fn expects(&self, ip: IpAddr) -> usize {
        let mut st = lock_unpoisoned(&self.state);
        st.purge(Instant::now());
        st.tickets.values().filter(|t| t.remotes.contains(&ip)).count()
    }

    fn redeem(&self, token: &Secret, local: IpAddr, remote: IpAddr) -> Result<SideStart, LaneError> {
        let refused = |e| {
            self.refused.fetch_add(1, Ordering::Relaxed);
            Err(e)
        };
        let mut st = lock_unpoisoned(&self.state);
        let Some(t) = st.tickets.remove(token) else { return refused(LaneError::UnknownTicket) };
        if t.expires <= Instant::now() || self.stopped.load(Ordering::Acquire) {
            return refused(LaneError::UnknownTicket);
        }
        if t.local != local || !t.remotes.contains(&remote) {
            return refused(LaneError::WrongAddress { expected: t.local, local, remote });
        }
        // The ticket's place becomes the lane's (freed by `forget` once
        // its reader ends, or by the slot if it never starts).
        *st.inbound.entry(t.peer).or_default() += 1;
        drop(st);
        let mut slot = InboundSlot { lanes: self.me.clone(), peer: t.peer, armed: true };
        Ok(Box::new(move |stream| {
            let Some(lanes) = slot.lanes.upgrade() else { return };
            match Conn::new(t.peer, stream, &t.key, false, lanes.timing, lanes.counters.clone()) {
                Ok((conn, side)) => {
                    slot.disarm();
                    lanes.accepted.fetch_add(1, Ordering::Relaxed);
                    lanes.spawn_reader(conn, side);
                }
                Err(e) => tracing::debug!(peer = %t.peer, error = %e, "lane: cannot start"),
            }
        }))
    }
}

/// An inbound lane's place, from its redeemed ticket until its reader
/// starts; freed if it never does.
struct InboundSlot {
    lanes: Weak<Lanes>,
    peer: PeerId,
    armed: bool,
}

impl InboundSlot {
    /// The lane has started: its reader's end frees the place.
    fn disarm(&mut self) {
        self.armed = false;
    }
}

impl Drop for InboundSlot {
    fn drop(&mut self) {
        let Some(lanes) = self.lanes.upgrade().filter(|_| self.armed) else { return };
        let mut st = lock_unpoisoned(&lanes.state);
        if let Some(n) = st.inbound.get_mut(&self.peer) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                st.inbound.remove(&self.peer);
            }
        }
    }
}

/// Answers `/manta/lane/1` until the stream control is dropped.
async fn serve(lanes: Arc<Lanes>) {
    let mut incoming = match lanes.streams.accept(lane_protocol()) {
        Ok(i) => i,
        Err(e) => {
            tracing::error!(error = %e, "cannot accept {LANE_PROTOCOL} streams");
            return;
        }
    };
    let timeout = lanes.timing.frame;
    while let Some((peer, mut s)) = incoming.next().await {
        let lanes = lanes.clone();
        // One short exchange per stream, bounded in time; the number of
        // streams in negotiation is bounded by the connection's muxer.
        tokio::spawn(async move {
            let answer = async {
                let ask = match read_frame(&mut s, MAX_ASK_BYTES).await {
                    Ok(Frame::Body(b)) => decode_ask(&b),
                    _ => return,
                };
                let answer = match ask {
                    Ok(LaneAsk::Open) => {
                        lanes.await_links(peer).await;
                        lanes.issue(peer)
                    }
                    Err(e) => {
                        tracing::debug!(%peer, error = %e, "lane: invalid ask");
                        return;
                    }
                };
                let _ = write_frame(&mut s, &encode_answer(&answer), MAX_ANSWER_BYTES).await;
                let _ = s.close().await;
            };
            let _ = tokio::time::timeout(timeout, answer).await;
        });
    }
}
