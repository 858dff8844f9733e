//! Pulling one object's bytes from one holder (`fetch`'s inner step): the
//! batched small path, the first chunk over libp2p, then the rest over the
//! holder's bulk lane or in chunks (`window` requests in flight), decoded
//! on a blocking thread as they come; with a voucher's digest, hashed as
//! they are decoded and stored only if they match (never over the lane).
//!
//! Invariant (as `fetch`'s): the `Fetch` is completed here exactly once on
//! success, or handed back with why this holder failed; a decoder thread
//! that panics drops it, which fails the object.

use super::*;

fn chunk_request(id: ObjectId, offset: u64, chunk: usize) -> Request {
    Request::Fetch { id: id.to_bytes(), offset, len: chunk as u32 }
}

/// Checks a reply to the chunk request at `offset` of an object of `total`
/// bytes (`None` until the first reply).
fn chunk_of(reply: Reply, offset: u64, total: Option<u64>) -> Result<(u64, ChunkBytes), Failure> {
    match reply {
        Reply::Chunk { total: t, offset: got, data } => {
            let n = data.bytes().len() as u64;
            let fits =
                got == offset && total.is_none_or(|x| x == t) && got.saturating_add(n) <= t && (n > 0 || got == t);
            if fits {
                Ok((t, data))
            } else {
                Err(Failure::refused(HolderError::Misfit))
            }
        }
        Reply::Other(Response::NotFound) => Err(Failure::refused(HolderError::NotFound)),
        Reply::Other(Response::Failed { message, error }) => match Response::failed_error(error.as_ref()) {
            // The object's value is an error (its task failed): `run`
            // takes it from a trusted holder.
            Some(e) => Err(Failure::refused(HolderError::Holds(e))),
            None => Err(Failure::refused(HolderError::Failed(message))),
        },
        Reply::Other(Response::Invalid { reason }) => Err(Failure::refused(HolderError::Refused(reason))),
        Reply::Other(Response::Busy) => Err(Failure::unreachable(HolderError::Busy)),
        Reply::Other(
            Response::Chunk { .. }
            | Response::Ticket { .. }
            | Response::Objects { .. }
            | Response::Timeline { .. }
            | Response::Vouchers { .. },
        ) => Err(Failure::refused(HolderError::Unexpected)),
    }
}

/// Pulls the whole object from `peer` and completes the fetch, or hands the
/// fetch back with why it failed. While the runtime records its timeline,
/// a pull that succeeds is recorded as a transfer in.
/// With `check`, the bytes must be the content a voucher vouches for (the
/// bulk lane is not used then: the bytes come in chunks, hashed as they
/// are decoded).
pub(super) async fn pull(
    fetch: Fetch,
    peer: PeerId,
    ctx: &Fetcher,
    lane: bool,
    batch: bool,
    check: Option<Digest>,
) -> Result<(), (Fetch, Failure)> {
    let backend = ctx.rt.backend();
    let Some(start) = backend.timeline_on().then(|| backend.timeline_now()) else {
        return pull_from(fetch, peer, ctx, (lane, batch, check), &mut (0, TransferLane::Chunks)).await;
    };
    let id = fetch.id();
    let mut how = (0, TransferLane::Chunks);
    let pulled = pull_from(fetch, peer, ctx, (lane, batch, check), &mut how).await;
    if pulled.is_ok() {
        let (bytes, lane) = how;
        let peer = Arc::from(peer.to_string());
        let t = Transfer { id, bytes, peer, direction: TransferDirection::In, lane, start };
        ctx.rt.backend().record_transfer(t);
    }
    pulled
}

/// [`pull`] (`(lane, batch, check)`); sets `how` to the bytes and lane of
/// the transfer that succeeded.
async fn pull_from(
    fetch: Fetch,
    peer: PeerId,
    ctx: &Fetcher,
    (lane, batch, check): (bool, bool, Option<Digest>),
    how: &mut (u64, TransferLane),
) -> Result<(), (Fetch, Failure)> {
    let id = fetch.id();
    if batch {
        // Small, done and held there: it comes with the other small
        // objects demanded from that holder meanwhile (`batch`).
        let small = tokio::select! {
            b = ctx.batcher.small(peer, id) => b,
            () = ctx.died(peer) => return Err((fetch, Failure::unreachable(HolderError::Dead))),
        };
        if let Some(bytes) = small {
            probe::mark(Stage::GetFetchWoke);
            *how = (bytes.len() as u64, TransferLane::Small);
            if let Err(e) = check_bytes(check, &bytes) {
                return Err((fetch, Failure::refused(e)));
            }
            return match decode_in(&ctx.rt, &fetch, &mut &bytes[..]) {
                Ok(decoded) => {
                    ctx.traffic.transfer_in(bytes.len() as u64);
                    probe::mark(Stage::GetDecoded);
                    complete(fetch, decoded, bytes.len());
                    probe::mark(Stage::GetCompleted);
                    Ok(())
                }
                Err(e) => Err((fetch, Failure::refused(e.into()))),
            };
        }
    }
    // With a bulk lane, anything past the first reply streams over it
    // (unless the bytes must be checked: then in chunks).
    let lane = lane && ctx.bulk && check.is_none();
    let first_len = if lane { ctx.chunk.min(BULK_FROM) } else { ctx.chunk };
    // `Busy` means the object's task is still running there (the holder
    // waited a while before saying so): ask again, as `get` blocks until
    // the task ends. A holder that dies meanwhile ends this with an error.
    // A `Busy` that comes back sooner than an honest holder would send it
    // is asked again after a growing pause, and only a few times. So is any
    // `Busy` from a holder whose bytes must be checked (a copy, not the
    // owner nor our task's executor): it holds a finished object, so no
    // task of it runs there, and a slow `Busy` would be a stall.
    let mut busy = BusyBackoff::default();
    let first = loop {
        let asked = tokio::time::Instant::now();
        match ctx.call(peer, &chunk_request(id, 0, first_len)).await {
            Ok(Reply::Other(Response::Busy)) if ctx.is_dead(peer) => {
                return Err((fetch, Failure::unreachable(HolderError::Dead)));
            }
            Ok(Reply::Other(Response::Busy)) => {
                match busy.after(if check.is_some() { Duration::ZERO } else { asked.elapsed() }) {
                    Some(pause) if pause.is_zero() => continue,
                    Some(pause) => {
                        tokio::select! {
                            () = tokio::time::sleep(pause) => continue,
                            () = ctx.died(peer) => return Err((fetch, Failure::unreachable(HolderError::Dead))),
                        }
                    }
                    None => {
                        tracing::debug!(%peer, object = %id, quick = busy.quick, "a holder kept answering Busy at once; trying the next");
                        return Err((fetch, Failure::unreachable(HolderError::Busy)));
                    }
                }
            }
            Ok(r) => break r,
            Err(e) => return Err((fetch, Failure::unreachable(e))),
        }
    };
    let (total, data) = match chunk_of(first, 0, None) {
        Ok(x) => x,
        Err(f) => return Err((fetch, f)),
    };
    *how = (total, TransferLane::Chunks);
    if let Some(expected) = check.filter(|d| d.len != total) {
        // Not the length the owner vouches for: no need to read it.
        let got = Digest { len: total, hash: [0; 32] };
        return Err((fetch, Failure::refused(HolderError::Mismatch { expected, got })));
    }
    if data.bytes().len() as u64 == total {
        if let Err(e) = check_bytes(check, data.bytes()) {
            return Err((fetch, Failure::refused(e)));
        }
        // The whole object in one reply: decode it here.
        return match decode_in(&ctx.rt, &fetch, &mut data.bytes()) {
            Ok(decoded) => {
                ctx.traffic.transfer_in(total);
                complete(fetch, decoded, total as usize);
                Ok(())
            }
            Err(e) => Err((fetch, Failure::refused(e.into()))),
        };
    }
    let head = data.bytes().len() as u64;
    if let Some(pass) = if lane { bulk_pass(ctx, peer, id, head).await } else { None } {
        // A large transfer: a `debug` span, and a line when it is in.
        let span = tracing::debug_span!("manta_p2p.bulk_recv", %peer, object = %id, bytes = total);
        let started = std::time::Instant::now();
        let connected = tokio::select! {
            c = bulk::connect(&pass, &ctx.hello, ctx.pool.timeout()) => Some(c),
            () = ctx.died(peer) => None,
        };
        let Some(connected) = connected else {
            return Err((fetch, Failure::unreachable(HolderError::Dead)));
        };
        match connected {
            Ok(stream) => {
                let pulled =
                    pull_bulk(fetch, &ctx.rt, data, stream, pass.key, total - head).instrument(span.clone()).await;
                let _entered = span.enter();
                match &pulled {
                    Ok(()) => {
                        *how = (total, TransferLane::Bulk);
                        ctx.bulk_received.fetch_add(1, Ordering::Relaxed);
                        ctx.traffic.transfer_in(total);
                        let ms = started.elapsed().as_secs_f64() * 1e3;
                        tracing::debug!(bytes = total, ms, "fetched over the bulk lane");
                    }
                    Err((_, f)) => tracing::debug!(error = %f.error, "bulk lane transfer failed"),
                }
                return pulled;
            }
            // The lane is out of reach (a firewall?): chunks still work.
            Err(e) => span.in_scope(|| tracing::debug!(object = %id, %peer, "{e}; fetching in chunks")),
        }
    }
    let span = tracing::debug_span!("manta_p2p.chunks_recv", %peer, object = %id, bytes = total, chunk = ctx.chunk);
    let started = std::time::Instant::now();
    let pulled = pull_chunks(fetch, peer, ctx, data, (total, check)).instrument(span.clone()).await;
    let _entered = span.enter();
    match &pulled {
        Ok(()) => {
            ctx.traffic.transfer_in(total);
            let ms = started.elapsed().as_secs_f64() * 1e3;
            tracing::debug!(bytes = total, ms, checked = check.is_some(), "fetched in chunks");
        }
        Err((_, f)) => tracing::debug!(error = %f.error, "chunked transfer failed"),
    }
    pulled
}

/// Pulls the rest of an object in chunks (`window` requests in flight)
/// after its first chunk `data`, decoding on a blocking thread as they come.
/// With a `check`, the bytes are hashed as they are decoded and the object
/// is stored only if all `total` of them match it.
async fn pull_chunks(
    fetch: Fetch,
    peer: PeerId,
    ctx: &Fetcher,
    data: ChunkBytes,
    (total, check): (u64, Option<Digest>),
) -> Result<(), (Fetch, Failure)> {
    let id = fetch.id();
    let (tx, rx) = mpsc::channel::<Result<ChunkBytes, Interrupted>>(ctx.window);
    let rt = ctx.rt.clone();
    let decoder = tokio::task::spawn_blocking(move || {
        let hasher = check.map(|_| Hasher::default());
        let mut reader = ChunkReader::new(rx, hasher);
        let decoded = match decode_in(&rt, &fetch, &mut reader) {
            Ok(decoded) => decoded,
            Err(e) => return Some((fetch, HolderError::from(e))),
        };
        if let (Some(expected), Some(got)) = (check, reader.digest()) {
            if got != expected {
                return Some((fetch, HolderError::Mismatch { expected, got }));
            }
        }
        fetch.complete(Ok(decoded));
        None
    });
    let mut network_failure = None;
    let mut next = data.bytes().len() as u64;
    if tx.send(Ok(data)).await.is_ok() {
        let mut inflight = FuturesOrdered::new();
        loop {
            while inflight.len() < ctx.window && next < total {
                let offset = next;
                let req = chunk_request(id, offset, ctx.chunk);
                inflight.push_back(async move { (offset, ctx.call(peer, &req).await) });
                next = next.saturating_add(ctx.chunk as u64);
            }
            let Some((offset, reply)) = inflight.next().await else { break };
            let checked = match reply {
                Ok(resp) => chunk_of(resp, offset, Some(total)),
                Err(e) => Err(Failure::unreachable(e)),
            };
            match checked {
                Ok((_, data)) => {
                    if tx.send(Ok(data)).await.is_err() {
                        break; // the decoder stopped early: it reports why
                    }
                }
                Err(f) => {
                    let _ = tx.send(Err(Interrupted)).await;
                    network_failure = Some(f);
                    break;
                }
            }
        }
    }
    drop(tx); // end of input
    match decoder.await {
        Ok(None) => Ok(()),
        Ok(Some((fetch, e))) => Err((fetch, network_failure.unwrap_or(Failure::refused(e)))),
        // The decoder panicked: the fetch was dropped, which failed the
        // object; nothing is left to do.
        Err(_) => Ok(()),
    }
}

/// A ticket for the rest of the object from `offset` on, if the peer's
/// connection address is known and it gives one.
async fn bulk_pass(ctx: &Fetcher, peer: PeerId, id: ObjectId, offset: u64) -> Option<Pass> {
    let ip = *lock_unpoisoned(&ctx.peer_ips).get(&peer)?;
    match ctx.call(peer, &Request::Bulk { id: id.to_bytes(), offset }).await {
        Ok(Reply::Other(Response::Ticket { port, token, key })) => {
            Some(Pass { addr: std::net::SocketAddr::new(ip, port), token, key })
        }
        _ => None, // no lane there, or busy: chunks
    }
}

/// Decodes the object from its first chunk and the rest from a bulk-lane
/// stream, on a blocking thread.
async fn pull_bulk(
    fetch: Fetch,
    rt: &Runtime,
    head: ChunkBytes,
    stream: std::net::TcpStream,
    key: Secret,
    rest: u64,
) -> Result<(), (Fetch, Failure)> {
    let rt = rt.clone();
    let receive = move |fetch: &Fetch| {
        let _entered = rt.enter(); // refs inside bind to our runtime
        bulk::receive(fetch, head.bytes(), stream, &key, rest)
    };
    let decoder = tokio::task::spawn_blocking(move || match receive(&fetch) {
        Ok(decoded) => {
            fetch.complete(Ok(decoded));
            None
        }
        Err(e) => Some((fetch, e)),
    });
    match decoder.await {
        Ok(None) => Ok(()),
        // A stream cut short or not authentic: unreachable, so the holder
        // gets one more try before the next one.
        Ok(Some((fetch, e))) => Err((fetch, Failure { error: e.into(), unreachable: true, lane: true })),
        // The decoder panicked: the fetch was dropped, which failed the object.
        Err(_) => Ok(()),
    }
}
