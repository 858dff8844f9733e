//! Byte counts of a node's libp2p connections: every TCP socket the swarm
//! opens or accepts is wrapped in [`Counted`], which adds what each read
//! and write moved to the node's [`NetCounters`]. `Node::net_stats` reads
//! them (the scale benchmark's `gossip_bytes_per_s` is their rate at rest).
//!
//! Invariants: counts are of bytes on the socket (after Noise and yamux
//! framing, before TCP/IP headers), only ever grow, and are updated with one
//! relaxed atomic add per completed read or write; the wrapper changes
//! nothing else (every poll is passed through). The bulk lane has its own
//! sockets and is not counted here.

use futures::io::{AsyncRead, AsyncWrite};
use std::io::{IoSlice, IoSliceMut};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

/// Bytes moved on a node's libp2p connections since it started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NetStats {
    /// Bytes written to its sockets.
    pub bytes_sent: u64,
    /// Bytes read from its sockets.
    pub bytes_received: u64,
}

/// The counters every connection of one node adds to.
#[derive(Debug, Default)]
pub(crate) struct NetCounters {
    sent: AtomicU64,
    received: AtomicU64,
}

impl NetCounters {
    /// The counts so far.
    pub(crate) fn stats(&self) -> NetStats {
        NetStats {
            bytes_sent: self.sent.load(Ordering::Relaxed),
            bytes_received: self.received.load(Ordering::Relaxed),
        }
    }
}

/// A socket whose traffic is counted in `net`.
pub(crate) struct Counted<S> {
    inner: S,
    net: Arc<NetCounters>,
}

impl<S> Counted<S> {
    /// Wraps `inner`.
    pub(crate) fn new(inner: S, net: Arc<NetCounters>) -> Counted<S> {
        Counted { inner, net }
    }
}

fn count<E>(r: Poll<Result<usize, E>>, counter: &AtomicU64) -> Poll<Result<usize, E>> {
    if let Poll::Ready(Ok(n)) = &r {
        counter.fetch_add(*n as u64, Ordering::Relaxed);
    }
    r
}

impl<S: AsyncRead + Unpin> AsyncRead for Counted<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<std::io::Result<usize>> {
        let this = &mut *self;
        count(Pin::new(&mut this.inner).poll_read(cx, buf), &this.net.received)
    }

    fn poll_read_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &mut [IoSliceMut<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let this = &mut *self;
        count(Pin::new(&mut this.inner).poll_read_vectored(cx, bufs), &this.net.received)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Counted<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        let this = &mut *self;
        count(Pin::new(&mut this.inner).poll_write(cx, buf), &this.net.sent)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let this = &mut *self;
        count(Pin::new(&mut this.inner).poll_write_vectored(cx, bufs), &this.net.sent)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_close(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::io::{AsyncReadExt, AsyncWriteExt, Cursor};

    #[test]
    fn reads_and_writes_are_counted() {
        let net = Arc::new(NetCounters::default());
        let mut c = Counted::new(Cursor::new(vec![0u8; 10]), net.clone());
        futures::executor::block_on(async {
            let mut buf = [0u8; 4];
            c.read_exact(&mut buf).await.unwrap();
            c.write_all(b"abc").await.unwrap();
        });
        assert_eq!(net.stats(), NetStats { bytes_sent: 3, bytes_received: 4 });
    }
}
