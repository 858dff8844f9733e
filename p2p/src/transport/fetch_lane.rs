//! A remote `get` over the message lane (`lane`): the fast path of
//! [`Fetcher::start`] for an object its first holder (the executor this
//! node chose, else the owner the ref names) serves small.
//!
//! The caller's own thread sends a `Get` for the one id on the lane this
//! node dialled to that holder (no hop to the tokio worker); the holder's
//! reader answers from its store at once; this node's lane reader decodes
//! the `Got`'s bytes and completes the fetch, which wakes the caller. If
//! anything else happens (no lane to that holder yet, the lane's calls are
//! full, the holder does not serve it small: `None`, or the lane ends
//! first) the fetch goes the ordinary way over libp2p (`fetch::run`),
//! skipping the batch request the holder just answered `None` to.
//!
//! Only holders whose bytes need no voucher are asked this way (the
//! executor this node chose, the owner the ref names: Noise authenticates
//! them on the connection the lane's ticket came over), and only while the
//! runtime's timeline is off (a transfer is recorded by `fetch::pull`).
//!
//! Invariant: the `Fetch` is owned by exactly one place: the caller until
//! `Conn::call` takes its reply closure, then the lane's tag table, then
//! the reader that runs the closure once; a closure handed back (`call`
//! refused it) or run with `None` hands the fetch to `fetch::run`.

use super::*;

/// What the holder `peer` answered for a fetch sent on its lane.
/// `span`: the fetch's `manta_p2p.fetch` span (entered here, and handed
/// on to `run` if the fetch falls back).
fn on_reply(
    ctx: &Arc<Fetcher>,
    fetch: Fetch,
    (peer, first): (PeerId, Option<PeerId>),
    got: Option<Option<Vec<u8>>>,
    span: tracing::Span,
) {
    let id = fetch.id();
    let bytes = match got {
        Some(Some(bytes)) => bytes,
        // Not served small there (pending, large, not held): the ordinary
        // way, without asking that holder in a batch again.
        Some(None) => return ctx.fall_back(fetch, first, Some(peer), span),
        // The lane ended first.
        None => return ctx.fall_back(fetch, first, None, span),
    };
    let entered = span.enter();
    probe::mark(Stage::GetFetchWoke);
    match decode_in(&ctx.rt, &fetch, &mut &bytes[..]) {
        Ok(decoded) => {
            ctx.traffic.transfer_in(bytes.len() as u64);
            ctx.lane_gets.fetch_add(1, Ordering::Relaxed);
            probe::mark(Stage::GetDecoded);
            // Storing may block (making room in a full store): only a small
            // replica that clearly fits is stored on the lane's reader.
            let fits = bytes.len() <= INLINE_COMPLETE_BYTES && fetch.fits_now(4 * bytes.len() + (64 << 10));
            if fits {
                fetch.complete(Ok(decoded));
                ctx.vouchers.fetched(id);
            } else {
                let vouchers = ctx.vouchers.clone();
                ctx.handle.spawn_blocking(move || {
                    fetch.complete(Ok(decoded));
                    vouchers.fetched(id);
                });
            }
            probe::mark(Stage::GetCompleted);
            tracing::trace!(%peer, bytes = bytes.len(), "fetched on the message lane");
        }
        Err(e) => {
            tracing::debug!(object = %id, %peer, error = %e, "lane: bytes did not decode; over libp2p");
            drop(entered);
            ctx.fall_back(fetch, first, None, span);
        }
    }
}

impl Fetcher {
    /// Sends the fetch over the lane to its first holder, if there is one
    /// up; hands it back otherwise. `span` is the fetch's (see `start`).
    pub(super) fn try_lane(
        self: &Arc<Self>,
        fetch: Fetch,
        first: Option<PeerId>,
        span: &tracing::Span,
    ) -> Result<(), Fetch> {
        let Some(lanes) = &self.lanes else { return Err(fetch) };
        if self.rt.backend().timeline_on() {
            return Err(fetch);
        }
        let owner = hint::decode(fetch.owner_hint()).map(|(p, _)| p).filter(|p| *p != self.me);
        let Some(peer) = first.filter(|p| *p != self.me).or(owner) else { return Err(fetch) };
        if self.is_dead(peer) {
            return Err(fetch);
        }
        let Some(conn) = lanes.get(peer) else { return Err(fetch) };
        let id = fetch.id();
        if owner == Some(peer) {
            self.vouchers.fetching_from_owner(id, peer);
        }
        let ctx = self.clone();
        let span = span.clone();
        let reply: lane::Reply = Box::new(move |got| {
            let got = got.map(|items| items.into_iter().next().flatten().map(serde_bytes::ByteBuf::into_vec));
            on_reply(&ctx, fetch, (peer, first), got, span);
        });
        probe::mark(Stage::GetSent);
        if let Err(reply) = conn.call(vec![serde_bytes::ByteArray::new(id.to_bytes())], reply) {
            // Refused at once (calls full, or the lane just ended): run it
            // as "the lane ended", which hands the fetch to libp2p.
            reply(None);
        }
        Ok(())
    }

    /// Fetches the ordinary way (`run`); `batched`: a holder that was just
    /// asked (its first try skips the batch request); in the fetch's `span`.
    fn fall_back(self: &Arc<Self>, fetch: Fetch, first: Option<PeerId>, batched: Option<PeerId>, span: tracing::Span) {
        self.vouchers.fetched(fetch.id());
        self.handle.spawn(run(fetch, self.clone(), first, batched).instrument(span));
    }
}
