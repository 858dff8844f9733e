//! The floors of a small-message fast lane (issue 18, "Speed"): what a
//! remote task's round trip and a small remote `get` could cost over a
//! persistent, sealed, direct TCP connection per peer pair instead of
//! libp2p (yamux over Noise, through the node's tokio worker), measured
//! before building it.
//!
//! ```text
//! cargo run --release -p manta-p2p --example fast_lane_floor
//! ```
//!
//! Each variant is a 64-byte request and a 64-byte reply over one
//! connection on 127.0.0.1 with `TCP_NODELAY`, timed on the caller: 2,000
//! round trips after 100 warm-ups, median and p99 in µs on stdout
//! (`name p50 p99`). The threads are those the lane would have:
//!
//! - `tcp`: the caller writes and reads the socket itself; the server's
//!   thread reads and writes back (the `tcp_rtt_us` floor of `p2p_bench`).
//! - `sealed`: the same, each frame sealed with AES-256-GCM (a 4-byte
//!   length as the AAD, a counter nonce per direction, a 16-byte tag), as
//!   the bulk lane seals its records: the cost of the AEAD framing.
//! - `sealed_reader`: the caller writes its sealed request itself, but a
//!   reader thread per connection reads the reply and hands it to the
//!   caller, which waits parked on a condition variable (a blocked `get`
//!   woken when the lane completes its cell). The server answers on its
//!   reader thread (a small object served from the store inline). The
//!   floor of a small remote `get` over the lane.
//! - `sealed_reader_exec`: as `sealed_reader`, but the server's reader
//!   hands each request to an executor thread parked on a condition
//!   variable (a runtime worker), which writes the sealed reply itself
//!   (the `Done` written by the thread that ran the task). The floor of a
//!   remote task's round trip over the lane.
//!
//! Measured under load, so compare the variants of one run with each
//! other and with `tcp`, not with other runs.

use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

type Res<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

const PAYLOAD: usize = 64;
const ROUNDS: usize = 2_000;
const WARMUP: usize = 100;
const TAG: usize = 16;
const TIMEOUT: Duration = Duration::from_secs(10);

/// One direction's sealing state: a key and the next record's number.
struct Sealer {
    key: LessSafeKey,
    seq: u64,
}

impl Sealer {
    fn new(k: u8) -> Sealer {
        let key = UnboundKey::new(&AES_256_GCM, &[k; 32]).map(LessSafeKey::new);
        Sealer { key: key.unwrap_or_else(|_| unreachable!("a 32-byte key")), seq: 0 }
    }

    fn nonce(&mut self) -> Nonce {
        let mut n = [0u8; 12];
        n[4..].copy_from_slice(&self.seq.to_be_bytes());
        self.seq += 1;
        Nonce::assume_unique_for_key(n)
    }

    /// `[len BE u32][ciphertext][tag]` of `plain`, written in one call.
    fn write(&mut self, w: &mut impl Write, plain: &[u8]) -> Res<()> {
        let header = (plain.len() as u32).to_be_bytes();
        let mut frame = Vec::with_capacity(4 + plain.len() + TAG);
        frame.extend_from_slice(&header);
        frame.extend_from_slice(plain);
        let nonce = self.nonce();
        let tag = self
            .key
            .seal_in_place_separate_tag(nonce, Aad::from(header), &mut frame[4..])
            .map_err(|_| "seal failed")?;
        frame.extend_from_slice(tag.as_ref());
        w.write_all(&frame)?;
        Ok(())
    }

    /// Reads and opens one frame of at most `PAYLOAD` bytes into `out`.
    fn read(&mut self, r: &mut impl Read, out: &mut Vec<u8>) -> Res<()> {
        let mut header = [0u8; 4];
        r.read_exact(&mut header)?;
        let len = u32::from_be_bytes(header) as usize;
        if len > PAYLOAD {
            return Err("frame over the cap".into());
        }
        out.resize(len + TAG, 0);
        r.read_exact(out)?;
        let nonce = self.nonce();
        let plain = self.key.open_in_place(nonce, Aad::from(header), out).map_err(|_| "bad tag")?;
        let n = plain.len();
        out.truncate(n);
        Ok(())
    }
}

fn pair() -> Res<(TcpStream, TcpStream)> {
    let l = TcpListener::bind("127.0.0.1:0")?;
    let c = TcpStream::connect(l.local_addr()?)?;
    let (s, _) = l.accept()?;
    for x in [&c, &s] {
        x.set_nodelay(true)?;
        x.set_read_timeout(Some(TIMEOUT))?;
        x.set_write_timeout(Some(TIMEOUT))?;
    }
    Ok((c, s))
}

/// A one-slot mailbox whose taker parks at once (no spinning).
struct Slot<T> {
    v: Mutex<Option<T>>,
    cv: Condvar,
}

impl<T> Slot<T> {
    fn new() -> Arc<Slot<T>> {
        Arc::new(Slot { v: Mutex::new(None), cv: Condvar::new() })
    }

    fn put(&self, t: T) {
        *self.v.lock().unwrap_or_else(|p| p.into_inner()) = Some(t);
        self.cv.notify_one();
    }

    fn take(&self) -> Option<T> {
        let mut g = self.v.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if let Some(t) = g.take() {
                return Some(t);
            }
            let (next, to) = self.cv.wait_timeout(g, TIMEOUT).unwrap_or_else(|p| p.into_inner());
            if to.timed_out() {
                return None;
            }
            g = next;
        }
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Variant {
    Tcp,
    Sealed,
    SealedReader,
    SealedReaderExec,
}

/// The server side of a variant, until the connection ends.
fn serve(v: Variant, mut s: TcpStream) -> Res<()> {
    let mut buf = vec![0u8; PAYLOAD + TAG];
    let (mut open, seal) = (Sealer::new(1), Sealer::new(2));
    let exec = (v == Variant::SealedReaderExec).then(|| {
        let slot: Arc<Slot<Vec<u8>>> = Slot::new();
        let (slot2, mut w, mut seal) = (slot.clone(), s.try_clone(), seal);
        let t = std::thread::spawn(move || -> Res<()> {
            let w = w.as_mut().map_err(|e| e.to_string())?;
            while let Some(req) = slot2.take() {
                seal.write(w, &req)?; // the executor writes its reply
            }
            Ok(())
        });
        (slot, t)
    });
    let mut seal = if exec.is_some() { None } else { Some(Sealer::new(2)) };
    loop {
        let got = match v {
            Variant::Tcp => s.read_exact(&mut buf[..PAYLOAD]).map_err(Into::into),
            _ => open.read(&mut s, &mut buf),
        };
        if got.is_err() {
            return Ok(()); // the caller hung up
        }
        match (&exec, seal.as_mut()) {
            (Some((slot, _)), _) => slot.put(buf.clone()),
            (None, Some(seal)) if v != Variant::Tcp => seal.write(&mut s, &buf)?,
            _ => s.write_all(&buf[..PAYLOAD])?,
        }
    }
}

/// Round trips of one variant, in µs.
fn run(v: Variant) -> Res<Vec<f64>> {
    let (mut c, s) = pair()?;
    let server = std::thread::spawn(move || serve(v, s));
    let ping = [7u8; PAYLOAD];
    let mut samples = Vec::with_capacity(ROUNDS);
    let mut seal = Sealer::new(1);
    let mut buf = vec![0u8; PAYLOAD + TAG];
    // The caller-side reader thread of the `*reader*` variants.
    let reader = matches!(v, Variant::SealedReader | Variant::SealedReaderExec).then(|| {
        let slot: Arc<Slot<Vec<u8>>> = Slot::new();
        let (slot2, mut r) = (slot.clone(), c.try_clone());
        std::thread::spawn(move || -> Res<()> {
            let r = r.as_mut().map_err(|e| e.to_string())?;
            let (mut open, mut buf) = (Sealer::new(2), Vec::new());
            while open.read(r, &mut buf).is_ok() {
                slot2.put(buf.clone()); // completes the cell: the caller wakes
            }
            Ok(())
        });
        slot
    });
    let mut open = Sealer::new(2);
    for i in 0..WARMUP + ROUNDS {
        let t = Instant::now();
        match (v, &reader) {
            (Variant::Tcp, _) => {
                c.write_all(&ping)?;
                c.read_exact(&mut buf[..PAYLOAD])?;
            }
            (_, None) => {
                seal.write(&mut c, &ping)?;
                open.read(&mut c, &mut buf)?;
            }
            (_, Some(slot)) => {
                seal.write(&mut c, &ping)?;
                slot.take().ok_or("no reply")?;
            }
        }
        if i >= WARMUP {
            samples.push(t.elapsed().as_secs_f64() * 1e6);
        }
    }
    c.shutdown(std::net::Shutdown::Both)?;
    server.join().map_err(|_| "server panicked")??;
    Ok(samples)
}

fn main() -> Res<()> {
    let variants = [
        ("tcp", Variant::Tcp),
        ("sealed", Variant::Sealed),
        ("sealed_reader", Variant::SealedReader),
        ("sealed_reader_exec", Variant::SealedReaderExec),
    ];
    // Interleaved rounds, so load changes hit every variant alike.
    let mut all: Vec<Vec<f64>> = vec![Vec::new(); variants.len()];
    for _ in 0..3 {
        for (i, (_, v)) in variants.iter().enumerate() {
            all[i].extend(run(*v)?);
        }
    }
    for ((name, _), mut s) in variants.iter().zip(all) {
        s.sort_by(|a, b| a.total_cmp(b));
        let q = |p: f64| s[((p * s.len() as f64).ceil() as usize).clamp(1, s.len()) - 1];
        println!("{name} {:.2} {:.2}", q(0.5), q(0.99));
    }
    Ok(())
}
