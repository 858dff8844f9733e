//! A TCP proxy that adds latency, for the network-fault test: this kernel
//! has no `netem` qdisc, so delay is added in user space.
//!
//! Inside a network namespace, an nftables rule redirects every TCP
//! connection arriving on `veth0` to the proxy's port (`redirect`, so the
//! kernel keeps the original destination, read back with
//! `SO_ORIGINAL_DST`); the proxy connects to that destination from inside
//! the namespace (locally made connections are not redirected) and copies
//! bytes both ways, delivering each chunk it reads a random
//! `min..=max` after it arrived, never before an earlier chunk of the same
//! direction (order is kept, so jitter compresses rather than reorders).
//!
//! The listener and every connection are created on threads that entered
//! the namespace (`setns`), so they belong to it. Invariants: every thread
//! ends when [`DelayProxy::stop`] (or drop) shuts the sockets down; each
//! direction buffers at most [`QUEUED`] chunks (back-pressure beyond);
//! nothing here panics on network errors.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, SocketAddrV4, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Chunks buffered per direction of a connection.
const QUEUED: usize = 256;

/// A running proxy in one namespace.
pub struct DelayProxy {
    /// The port it listens on (in its namespace, every address).
    pub port: u16,
    listener: Option<TcpListener>,
    stop: Arc<AtomicBool>,
    conns: Arc<Mutex<Vec<TcpStream>>>,
    accept: Option<JoinHandle<()>>,
    /// Connections proxied so far.
    pub proxied: Arc<AtomicU64>,
}

/// Moves the calling thread into network namespace `name` (made by `ip
/// netns add`).
fn enter(name: &str) -> std::io::Result<()> {
    let f = std::fs::File::open(format!("/run/netns/{name}"))?;
    // SAFETY: setns on a valid namespace fd; it affects only this thread.
    let r = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
    if r != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// The destination a redirected connection was made to.
fn original_dst(s: &TcpStream) -> std::io::Result<SocketAddrV4> {
    // SAFETY: getsockopt writes at most `len` bytes into `addr`, a plain
    // C struct for which all-zero bytes are valid.
    unsafe {
        let mut addr: libc::sockaddr_in = std::mem::zeroed();
        let mut len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
        let r = libc::getsockopt(
            s.as_raw_fd(),
            libc::SOL_IP,
            libc::SO_ORIGINAL_DST,
            (&mut addr as *mut libc::sockaddr_in).cast(),
            &mut len,
        );
        if r != 0 {
            return Err(std::io::Error::last_os_error());
        }
        let ip = Ipv4Addr::from(u32::from_be(addr.sin_addr.s_addr));
        Ok(SocketAddrV4::new(ip, u16::from_be(addr.sin_port)))
    }
}

/// splitmix64, for the delays.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

impl DelayProxy {
    /// Starts a proxy in namespace `netns` adding `min..=max` of delay to
    /// each direction of every connection it is given.
    pub fn start(netns: &str, seed: u64, min: Duration, max: Duration) -> std::io::Result<DelayProxy> {
        let (tx, rx) = std::sync::mpsc::channel();
        let stop = Arc::new(AtomicBool::new(false));
        let conns: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        let proxied = Arc::new(AtomicU64::new(0));
        let (ns, st, cs, px) = (netns.to_string(), stop.clone(), conns.clone(), proxied.clone());
        let accept = std::thread::Builder::new().name(format!("proxy-{netns}")).spawn(move || {
            let bound = enter(&ns).and_then(|()| TcpListener::bind((Ipv4Addr::UNSPECIFIED, 0)));
            let listener = match bound {
                Ok(l) => l,
                Err(e) => {
                    let _ = tx.send(Err(e));
                    return;
                }
            };
            let _ = tx.send(listener.local_addr().and_then(|a| Ok((a, listener.try_clone()?))));
            let mut rng = Rng(seed);
            for conn in listener.incoming() {
                if st.load(Ordering::Acquire) {
                    return;
                }
                let Ok(inbound) = conn else { continue };
                let Ok(dst) = original_dst(&inbound) else { continue };
                // Connected from this (namespaced) thread: not redirected.
                let Ok(outbound) = TcpStream::connect_timeout(&SocketAddr::V4(dst), Duration::from_secs(5)) else {
                    continue;
                };
                let _ = inbound.set_nodelay(true);
                let _ = outbound.set_nodelay(true);
                px.fetch_add(1, Ordering::Relaxed);
                let mut keep = cs.lock().unwrap_or_else(|p| p.into_inner());
                for s in [&inbound, &outbound] {
                    if let Ok(c) = s.try_clone() {
                        keep.push(c);
                    }
                }
                drop(keep);
                let seeds = (rng.next(), rng.next());
                pipe(&inbound, &outbound, seeds.0, min, max);
                pipe(&outbound, &inbound, seeds.1, min, max);
            }
        })?;
        let (port, listener) = match rx.recv() {
            Ok(Ok((addr, l))) => (addr.port(), l),
            Ok(Err(e)) => return Err(e),
            Err(_) => return Err(std::io::Error::other("the proxy thread ended early")),
        };
        Ok(DelayProxy { port, listener: Some(listener), stop, conns, accept: Some(accept), proxied })
    }

    /// Stops accepting and closes every connection (the pipes then end).
    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(l) = self.listener.take() {
            // SAFETY: shutdown on a listening socket we own wakes its
            // blocked accept (with an error), after which the loop sees
            // the stop flag.
            unsafe { libc::shutdown(l.as_raw_fd(), libc::SHUT_RDWR) };
        }
        for c in self.conns.lock().unwrap_or_else(|p| p.into_inner()).drain(..) {
            let _ = c.shutdown(Shutdown::Both);
        }
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
    }
}

impl Drop for DelayProxy {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Copies `from` to `to`, delaying each chunk.
fn pipe(from: &TcpStream, to: &TcpStream, seed: u64, min: Duration, max: Duration) {
    let (Ok(mut r), Ok(mut w)) = (from.try_clone(), to.try_clone()) else { return };
    let (tx, rx) = std::sync::mpsc::sync_channel::<(Instant, Vec<u8>)>(QUEUED);
    let spread = max.saturating_sub(min).as_micros() as u64 + 1;
    let _ = std::thread::Builder::new().name("proxy-read".into()).spawn(move || {
        let mut rng = Rng(seed);
        let mut last = Instant::now();
        let mut buf = vec![0u8; 64 << 10];
        loop {
            match r.read(&mut buf) {
                Ok(0) | Err(_) => return, // dropping `tx` ends the writer
                Ok(n) => {
                    let delay = min + Duration::from_micros(rng.next() % spread);
                    last = last.max(Instant::now() + delay);
                    if tx.send((last, buf[..n].to_vec())).is_err() {
                        return;
                    }
                }
            }
        }
    });
    let _ = std::thread::Builder::new().name("proxy-write".into()).spawn(move || {
        while let Ok((due, bytes)) = rx.recv() {
            // The delay being added (this proxy's purpose, not a wait for
            // another thread).
            std::thread::sleep(due.saturating_duration_since(Instant::now()));
            if w.write_all(&bytes).is_err() {
                let _ = w.shutdown(Shutdown::Both);
                return;
            }
        }
        let _ = w.shutdown(Shutdown::Write);
    });
}
