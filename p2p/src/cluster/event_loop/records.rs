//! Named-actor records in the DHT, as the event loop handles them: a
//! record is stored only if it is signed by the host it names and that
//! host sent it, and every record read (from the local store or from a
//! lookup) is verified against the key it was asked for; a forged one is
//! dropped (a `debug!` line and `p2p_actor_records_rejected_total`) and
//! the lookup goes on to the next record, ending with none if no record
//! verifies.
//!
//! Stored records count against their host's share of the store
//! (`dht_store`), and a stored record's publisher is its sender. Provider
//! records of a peer that has been neither connected nor a live member for
//! a failure timeout are forgotten ([`EventLoop::sweep_providers`]).
//!
//! Invariant: what `Command::GetRecord` answers is an encoded
//! `ActorRecord` whose signature by its host, for that key, verified.

use super::EventLoop;
use crate::stats::Rejections;
use crate::wire::plain::actor_name;
use crate::wire::signed;
use libp2p::{kad, PeerId};
use std::collections::HashSet;
use std::time::{Duration, Instant};

impl EventLoop {
    /// A record `source` asks this node to store: kept only if it is a
    /// named actor's record naming `source` as its host.
    pub(super) fn on_record(&mut self, source: PeerId, mut record: kad::Record) {
        use kad::store::RecordStore;
        if let Err(why) = check_record(source, &record) {
            crate::stats::Rejections::count(&self.rejections.records, 1);
            tracing::debug!(%source, why, "DHT record refused");
            return;
        }
        // First writer wins while it lives: a name whose stored record names
        // another host that is still a live member (or connected) is not
        // taken over; after that host died, the actor's new host (a restart)
        // may claim it.
        let holder = self.swarm.behaviour_mut().kad.store_mut().get(&record.key).and_then(|r| record_host(&r));
        if let Some(host) = holder.filter(|h| *h != source) {
            if self.swarm.is_connected(&host) || self.members.is_alive(&host) {
                tracing::debug!(%source, %host, "DHT record refused: the name is held by a live host");
                return;
            }
        }
        // Its publisher is its sender (the host), not what the sender wrote
        // there: Kademlia republishes the records whose publisher is this
        // node as its own.
        record.publisher = Some(source);
        // Within the host's share of the store (`dht_store`).
        if let Err(e) = self.swarm.behaviour_mut().kad.store_mut().put(record) {
            tracing::debug!(%source, error = %e, "DHT record not stored");
        }
    }

    /// Forgets the provider records of providers that have been neither
    /// connected nor live members for `timeout` (see `DhtStore::sweep`).
    pub(super) fn sweep_providers(&mut self, now: Instant, timeout: Duration) {
        let connected: HashSet<PeerId> = self.swarm.connected_peers().copied().collect();
        let members = &self.members;
        let present = |p: &PeerId| connected.contains(p) || members.is_alive(p);
        let forgotten = self.swarm.behaviour_mut().kad.store_mut().sweep(now, timeout, present);
        if forgotten > 0 {
            tracing::debug!(forgotten, "provider records of peers gone for a failure timeout forgotten");
        }
    }

    /// The record inside `value` (stored under `key`) if its host signed it
    /// for that key; otherwise counts it and says why at `debug!`.
    pub(super) fn verified(&self, key: &[u8], value: &[u8], from: Option<PeerId>) -> Option<Vec<u8>> {
        match signed::verify_record(key, value) {
            Ok(_) => signed::decode_signed_record(value).ok().map(|(s, _)| s.record),
            Err(e) => {
                Rejections::count(&self.rejections.records, 1);
                tracing::debug!(from = ?from, error = %e, "a named-actor record that does not verify: dropped");
                None
            }
        }
    }

    /// A step of a named-actor lookup: the first record that verifies
    /// answers it (and ends the query); forged ones are skipped; with none
    /// by the last step, the answer is none.
    pub(super) fn on_found_record(
        &mut self,
        id: kad::QueryId,
        r: &Result<kad::GetRecordOk, kad::GetRecordError>,
        last: bool,
    ) {
        let Some((_, key)) = self.records.get(&id) else { return };
        let found = match r {
            Ok(kad::GetRecordOk::FoundRecord(rec)) => self.verified(key, &rec.record.value, rec.peer),
            Ok(_) | Err(_) => None,
        };
        if found.is_none() && !last {
            return; // maybe another peer has a genuine one
        }
        if let Some((tx, _)) = self.records.remove(&id) {
            let _ = tx.send(found);
        }
        if let Some(mut q) = self.swarm.behaviour_mut().kad.query_mut(&id) {
            q.finish();
        }
    }
}

/// The host a stored named-actor record names, if it verifies.
fn record_host(record: &kad::Record) -> Option<PeerId> {
    signed::verify_record(record.key.as_ref(), &record.value).ok().map(|(_, host)| host)
}

/// Why a record from `source` may not be stored, if it may not: only a
/// named actor's record, signed by the host it names, and that host is
/// `source`.
fn check_record(source: PeerId, record: &kad::Record) -> Result<(), String> {
    actor_name(record.key.as_ref()).ok_or("not a named-actor key")?;
    let (_, host) = signed::verify_record(record.key.as_ref(), &record.value).map_err(|e| e.to_string())?;
    if host != source {
        return Err("it names another peer as host".into());
    }
    Ok(())
}
