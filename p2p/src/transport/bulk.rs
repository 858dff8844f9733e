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
//! address the libp2p connection has, sends the token, and reads the
//! object's encoding sealed under the key with AES-256-GCM in 1 MiB records
//! (`seal`): encrypted and authenticated like the rest, at a fraction of
//! the CPU per byte, with one copy on each side besides the kernel's.
//!
//! Invariants: a ticket is good for one connection, for [`TICKET_TTL`],
//! and at most [`MAX_TICKETS`] are outstanding (beyond that the request is
//! answered `Busy` and the peer uses chunks); a connection that does not
//! send a known token within [`HELLO_TIMEOUT`] is closed without a byte;
//! at most [`MAX_HELLOS`] connections wait for their hello at once; the
//! object is encoded once per stream, from the ticket's offset; the lane
//! listens on the IP of the node's first listen address only.

use crate::sync::lock_unpoisoned;
use crate::wire::seal::{self, Hello, HelloError, OpenReader, SealWriter, Secret, HELLO_BYTES};
use crate::wire::Response;
use manta::backend::{DecodeError, Decoded, Fetch, Served};
use manta::{ObjectId, Runtime};
use std::collections::HashMap;
use std::io::Read;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

/// The IP each connected peer has on its libp2p connection: where its lane
/// is (kept by the event loop).
pub(crate) type PeerIps = Arc<Mutex<HashMap<libp2p::PeerId, IpAddr>>>;

/// The IP of a listen address (`None` for one without, e.g. `/memory`).
pub(crate) fn ip_of(addr: &libp2p::Multiaddr) -> Option<IpAddr> {
    addr.iter().find_map(|p| match p {
        libp2p::multiaddr::Protocol::Ip4(ip) => Some(IpAddr::V4(ip)),
        libp2p::multiaddr::Protocol::Ip6(ip) => Some(IpAddr::V6(ip)),
        _ => None,
    })
}

/// How long a ticket may wait for its connection.
pub(crate) const TICKET_TTL: Duration = Duration::from_secs(10);

/// Most tickets outstanding at once.
pub(crate) const MAX_TICKETS: usize = 64;

/// How long a new connection has to send its hello.
pub(crate) const HELLO_TIMEOUT: Duration = Duration::from_secs(5);

/// Most connections waiting for their hello at once (more are closed).
pub(crate) const MAX_HELLOS: usize = 64;

/// Why a lane connection did not carry its object.
#[derive(Debug, thiserror::Error)]
pub(crate) enum LaneError {
    /// The client sent no hello in time.
    #[error("no hello within {0:?}")]
    HelloTimeout(Duration),
    /// Reading or writing the connection failed.
    #[error("lane connection: {0}")]
    Io(#[from] std::io::Error),
    /// The first bytes were not a hello.
    #[error("hello: {0}")]
    Hello(#[from] HelloError),
    /// The hello named no outstanding ticket.
    #[error("unknown or expired ticket")]
    UnknownTicket,
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

/// What a node's bulk lane has done (see [`Node::lane_stats`](crate::Node::lane_stats)).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LaneStats {
    /// The lane's TCP port, if it is on and bound.
    pub port: Option<u16>,
    /// Objects (or their remainders) streamed to peers in full.
    pub served: u64,
    /// Objects received from peers' lanes and decoded.
    pub received: u64,
}

struct Ticket {
    id: ObjectId,
    skip: u64,
    key: Secret,
    expires: Instant,
}

/// A node's bulk lane: its listening port and outstanding tickets.
pub(crate) struct Lane {
    port: u16,
    tickets: Mutex<HashMap<Secret, Ticket>>,
    write_timeout: Duration,
    ttl: Duration,
    served: AtomicU64,
}

impl Lane {
    /// Binds the lane's listener on `ip` (any port).
    pub(crate) async fn bind(ip: IpAddr, write_timeout: Duration) -> std::io::Result<(Arc<Lane>, TcpListener)> {
        let listener = TcpListener::bind(SocketAddr::new(ip, 0)).await?;
        let port = listener.local_addr()?.port();
        let lane = Lane { port, tickets: Mutex::new(HashMap::new()), write_timeout, ttl: TICKET_TTL, served: 0.into() };
        Ok((Arc::new(lane), listener))
    }

    /// The lane's port.
    pub(crate) fn port(&self) -> u16 {
        self.port
    }

    /// Streams sent in full.
    pub(crate) fn served(&self) -> u64 {
        self.served.load(Ordering::Relaxed)
    }

    /// A ticket for object `id` from byte `skip` on: `Ticket`, or `Busy`
    /// when too many are outstanding (or the OS gave no randomness).
    pub(crate) fn issue(&self, id: ObjectId, skip: u64) -> Response {
        let (Ok(token), Ok(key)) = (seal::random_secret(), seal::random_secret()) else {
            return Response::Busy;
        };
        let mut tickets = lock_unpoisoned(&self.tickets);
        let now = Instant::now();
        tickets.retain(|_, t| t.expires > now);
        if tickets.len() >= MAX_TICKETS {
            return Response::Busy;
        }
        tickets.insert(token, Ticket { id, skip, key, expires: now + self.ttl });
        Response::Ticket { port: self.port, token, key }
    }

    fn redeem(&self, token: &Secret) -> Option<Ticket> {
        let t = lock_unpoisoned(&self.tickets).remove(token)?;
        (t.expires > Instant::now()).then_some(t)
    }
}

/// Accepts lane connections until the node's runtime shuts down.
pub(crate) async fn serve(lane: Arc<Lane>, listener: TcpListener, rt: Runtime) {
    let hellos = Arc::new(Semaphore::new(MAX_HELLOS));
    loop {
        let (stream, from) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                tracing::debug!(error = %e, "bulk lane: accept failed");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let Ok(permit) = hellos.clone().try_acquire_owned() else {
            tracing::warn!(%from, "bulk lane: too many connections waiting for a hello; closed");
            continue;
        };
        let (lane, rt) = (lane.clone(), rt.clone());
        tokio::spawn(async move {
            let ticket = read_ticket(&lane, stream).await;
            drop(permit);
            match ticket {
                Ok((ticket, stream)) => {
                    let sent = tokio::task::spawn_blocking(move || send(&lane, &rt, &ticket, stream)).await;
                    if let Ok(Err(e)) = sent {
                        tracing::debug!(%from, error = %e, "bulk lane: stream not completed");
                    }
                }
                Err(e) => tracing::warn!(%from, error = %e, "bulk lane: connection refused"),
            }
        });
    }
}

/// Reads a hello (bounded in time) and redeems its ticket; the stream comes
/// back in blocking mode for the sender thread.
async fn read_ticket(lane: &Lane, mut stream: TcpStream) -> Result<(Ticket, std::net::TcpStream), LaneError> {
    let mut hello = [0u8; HELLO_BYTES];
    tokio::time::timeout(HELLO_TIMEOUT, stream.read_exact(&mut hello))
        .await
        .map_err(|_| LaneError::HelloTimeout(HELLO_TIMEOUT))??;
    let hello = Hello::from_bytes(&hello)?;
    let ticket = lane.redeem(&hello.token).ok_or(LaneError::UnknownTicket)?;
    let stream = stream.into_std()?;
    stream.set_nonblocking(false)?;
    Ok((ticket, stream))
}

/// Streams the ticket's object, sealed, on a blocking thread.
fn send(lane: &Lane, rt: &Runtime, t: &Ticket, stream: std::net::TcpStream) -> Result<(), LaneError> {
    stream.set_write_timeout(Some(lane.write_timeout))?;
    let mut w = SealWriter::new(stream, &t.key);
    // Without the last record the reader sees a stream cut short: an
    // object that cannot be written here fails that way.
    rt.backend().write_object(t.id, t.skip, &mut w).map_err(|served| LaneError::Serve { id: t.id, served })?;
    w.finish()?;
    lane.served.fetch_add(1, Ordering::Relaxed);
    Ok(())
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

/// Connects to a lane and sends the hello (bounded by `timeout`); the
/// stream comes back in blocking mode, with `timeout` as read timeout.
pub(crate) async fn connect(pass: &Pass, timeout: Duration) -> Result<std::net::TcpStream, LaneError> {
    let io = async {
        let mut s = TcpStream::connect(pass.addr).await?;
        tokio::io::AsyncWriteExt::write_all(&mut s, &Hello { token: pass.token }.to_bytes()).await?;
        let s = s.into_std()?;
        s.set_nonblocking(false)?;
        s.set_read_timeout(Some(timeout))?;
        Ok::<_, std::io::Error>(s)
    };
    match tokio::time::timeout(timeout, io).await {
        Ok(Ok(s)) => Ok(s),
        Ok(Err(source)) => Err(LaneError::Connect { addr: pass.addr, source }),
        Err(_) => Err(LaneError::ConnectTimeout { addr: pass.addr, after: timeout }),
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
mod tests {
    use super::*;
    use crate::wire::seal::OpenReader;
    use std::io::Write;

    /// A lane serving one exported 3 MB `Vec<u8>`; returns its encoding.
    struct Fixture {
        tokio: tokio::runtime::Runtime,
        lane: Arc<Lane>,
        id: ObjectId,
        encoding: Vec<u8>,
        _rt: Runtime,
        _obj: manta::ObjectRef<Vec<u8>>,
    }

    fn fixture(ttl: Duration) -> Fixture {
        let tokio = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().expect("tokio");
        let rt = Runtime::builder().num_cpus(1).build().expect("runtime");
        let value: Vec<u8> = (0..3_000_000u32).map(|i| (i % 253) as u8).collect();
        let mut encoding = Vec::new();
        ciborium::into_writer(&serde_bytes::Bytes::new(&value), &mut encoding).expect("encode");
        let obj = rt.put(value).expect("put");
        rt.backend().export_object(&obj);
        let (lane, listener) =
            tokio.block_on(Lane::bind("127.0.0.1".parse().expect("ip"), Duration::from_secs(5))).expect("bind");
        let mut inner = Arc::try_unwrap(lane).unwrap_or_else(|_| unreachable!("one owner"));
        inner.ttl = ttl;
        let lane = Arc::new(inner);
        tokio.spawn(serve(lane.clone(), listener, rt.clone()));
        Fixture { tokio, lane, id: obj.id(), encoding, _rt: rt, _obj: obj }
    }

    fn ticket(f: &Fixture, skip: u64) -> (Secret, Secret) {
        match f.lane.issue(f.id, skip) {
            Response::Ticket { port, token, key } => {
                assert_eq!(port, f.lane.port());
                (token, key)
            }
            other => panic!("no ticket: {other:?}"),
        }
    }

    /// Connects, sends `hello`, returns everything the lane sends back.
    fn exchange(f: &Fixture, hello: &[u8]) -> Vec<u8> {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", f.lane.port())).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
        s.write_all(hello).expect("hello");
        let mut got = Vec::new();
        if let Err(e) = s.read_to_end(&mut got) {
            // Closing with our extra bytes unread resets the connection.
            assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset, "{e}");
        }
        got
    }

    #[test]
    fn a_ticket_streams_the_encoding_from_its_offset_once() {
        let f = fixture(TICKET_TTL);
        for skip in [0, 1000] {
            let (token, key) = ticket(&f, skip);
            let sealed = exchange(&f, &Hello { token }.to_bytes());
            let rest = (f.encoding.len() as u64) - skip;
            let mut r = OpenReader::new(&sealed[..], &key, rest);
            let mut plain = Vec::new();
            r.read_to_end(&mut plain).expect("opens");
            assert!(r.finished());
            assert_eq!(plain, f.encoding[skip as usize..]);
            // The same ticket again: nothing.
            assert!(exchange(&f, &Hello { token }.to_bytes()).is_empty());
        }
        assert_eq!(f.lane.served(), 2);
        drop(f.tokio);
    }

    #[test]
    fn unknown_tokens_bad_hellos_and_expired_tickets_get_nothing() {
        let f = fixture(Duration::ZERO);
        let (token, _) = ticket(&f, 0); // expired as soon as issued
        assert!(exchange(&f, &Hello { token }.to_bytes()).is_empty());
        assert!(exchange(&f, &Hello { token: [1; 32] }.to_bytes()).is_empty());
        assert!(exchange(&f, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n-----------------").is_empty());
        assert_eq!(f.lane.served(), 0);
    }

    #[test]
    fn outstanding_tickets_are_bounded() {
        let f = fixture(TICKET_TTL);
        for _ in 0..MAX_TICKETS {
            ticket(&f, 0);
        }
        assert_eq!(f.lane.issue(f.id, 0), Response::Busy);
    }

    #[test]
    fn an_object_that_is_not_here_ends_the_stream_short() {
        let f = fixture(TICKET_TTL);
        let missing = ObjectId::from_bytes([9; 16]);
        let Response::Ticket { token, key, .. } = f.lane.issue(missing, 0) else { panic!("no ticket") };
        let sealed = exchange(&f, &Hello { token }.to_bytes());
        let err = seal::open_all(&sealed, &key, u64::MAX).expect_err("cut short");
        assert!(err.to_string().contains("ended before its last record"), "{err}");
    }
}
