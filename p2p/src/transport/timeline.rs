//! Timelines between nodes: a node's answer to a peer's
//! `Request::Timeline` ([`answer`]), and a collector's side ([`collect`]):
//! every page of a peer's timeline up to [`MAX_COLLECTED_EVENTS`], and the
//! peer's clock offset, estimated NTP-style from the exchange with the
//! shortest round trip (send at `t0`, the peer's reading `t1`, reply at
//! `t2`: offset = `t1 − (t0 + t2) / 2`; its error is at most half that
//! round trip).
//!
//! Invariants: pages are cut at one reading of the peer's clock (the first
//! reply's), so events recorded while the pages are fetched neither shift
//! nor repeat them; a page always fits the response cap (texts and inputs
//! are cut, and events are added only while an upper bound of the page's
//! size stays under [`MAX_PAGE_BYTES`]); answering clones the node's
//! timeline once per page (on a blocking thread).

use super::rpc::{CallError, Pool, Reply};
use crate::wire::timeline::{
    decode_page, encode_page, end_of, from_event, into_event, size_bound, Page, MAX_COLLECTED_EVENTS, MAX_PAGE_BYTES,
    MAX_PAGE_EVENTS, MAX_TEXT_BYTES, MAX_THREADS,
};
use crate::wire::{Request, Response, WireError};
use libp2p::PeerId;
use manta::{Runtime, Timeline};
use std::time::Duration;

/// One page of this node's timeline for a peer (see the module docs).
pub(crate) fn answer(rt: &Runtime, upto: u64, skip: u32) -> Response {
    let clock = rt.backend().timeline_now();
    let upto = if upto == 0 { clock } else { upto };
    let timeline = rt.timeline();
    let mut events: Vec<_> = timeline.events.iter().filter(|e| end_of(e) <= upto).collect();
    // Stable: events that end together keep their recorded order, which
    // is the same in every snapshot, so pages neither skip nor repeat.
    events.sort_by_key(|e| std::cmp::Reverse(end_of(e)));
    let threads: Vec<(u32, String)> = timeline
        .threads
        .iter()
        .take(MAX_THREADS)
        .map(|(id, name)| (*id, name.chars().take(MAX_TEXT_BYTES / 4).collect()))
        .collect();
    let mut room = MAX_PAGE_BYTES - 1024 - threads.iter().map(|(_, n)| n.len() + 16).sum::<usize>();
    let mut page = Page { clock, total: events.len() as u64, threads, events: Vec::new() };
    for e in events.into_iter().skip(skip as usize).take(MAX_PAGE_EVENTS) {
        let w = from_event(e);
        let size = size_bound(&w);
        if size > room {
            break;
        }
        room -= size;
        page.events.push(w);
    }
    let bytes = encode_page(&page);
    if bytes.len() > MAX_PAGE_BYTES {
        return Response::failed(format!("a timeline page of {} bytes", bytes.len()));
    }
    Response::Timeline { page: bytes }
}

/// Why a peer's timeline could not be collected.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CollectError {
    /// The request failed (unreachable, timed out, stream broke).
    #[error(transparent)]
    Call(#[from] CallError),
    /// The peer refused (it does not count the asker as a member).
    #[error("refused: {0}")]
    Refused(String),
    /// The peer's answer was not a timeline page, or not a valid one.
    #[error("bad answer: {0}")]
    Bad(String),
    /// The page did not decode.
    #[error("bad page: {0}")]
    Page(#[from] WireError),
}

/// A peer's timeline as collected.
pub(crate) struct Collected {
    /// Its events (at most [`MAX_COLLECTED_EVENTS`], the most recent).
    pub(crate) timeline: Timeline,
    /// Its clock minus ours (ns): its times less this are ours.
    pub(crate) offset_ns: i64,
    /// The round trip the offset was estimated from.
    pub(crate) rtt: Duration,
    /// Whether it had more events than were taken.
    pub(crate) truncated: bool,
}

/// Collects `peer`'s timeline through `pool`, aligned to `rt`'s timeline
/// clock (started if it was not).
pub(crate) async fn collect(pool: &Pool, rt: &Runtime, peer: PeerId) -> Result<Collected, CollectError> {
    let backend = rt.backend();
    let (mut upto, mut skip) = (0u64, 0u32);
    let mut best: Option<(u64, i64)> = None;
    let mut timeline = Timeline::default();
    let mut total;
    loop {
        let t0 = backend.timeline_clock();
        let reply = pool.call(peer, &Request::Timeline { upto, skip }).await?;
        let t2 = backend.timeline_clock();
        let page = match reply {
            Reply::Other(Response::Timeline { page }) => decode_page(&page)?,
            Reply::Other(Response::Invalid { reason }) => return Err(CollectError::Refused(reason)),
            Reply::Other(other) => return Err(CollectError::Bad(format!("{other:?}"))),
            Reply::Chunk { .. } => return Err(CollectError::Bad("a chunk".into())),
        };
        let rtt = t2.saturating_sub(t0);
        if best.is_none_or(|(r, _)| rtt < r) {
            let mid = t0 / 2 + t2 / 2 + (t0 % 2 + t2 % 2) / 2;
            best = Some((rtt, page.clock as i64 - mid as i64));
        }
        if upto == 0 {
            // Every later page is cut where the first one was.
            upto = page.clock.max(1);
        }
        total = page.total;
        timeline.threads = page.threads;
        let n = page.events.len();
        timeline.events.extend(page.events.into_iter().map(into_event));
        skip = skip.saturating_add(n as u32);
        if n == 0 || u64::from(skip) >= total || timeline.events.len() >= MAX_COLLECTED_EVENTS {
            break;
        }
    }
    timeline.events.truncate(MAX_COLLECTED_EVENTS);
    let (rtt, offset_ns) = best.unwrap_or((0, 0));
    let truncated = (timeline.events.len() as u64) < total;
    Ok(Collected { timeline, offset_ns, rtt: Duration::from_nanos(rtt), truncated })
}
