//! The node's Kademlia record store, [`DhtStore`]: every peer gets a share
//! of it, so one peer's flood leaves room for the others' records and never
//! takes the room of this node's own.
//!
//! **Named-actor records** (at most [`MAX_RECORDS`] in all): each counts
//! against its host, the peer whose signature it carries
//! (`wire::signed::verify_record`; a record that does not verify is not
//! stored, whatever its `publisher` field says, which the sender chose).
//! - A host other than this node keeps at most [`MAX_RECORDS_PER_HOST`]
//!   names here; beyond, its new names are refused (storing again under a
//!   name it holds is an update, not a new name).
//! - When all [`MAX_RECORDS`] are taken, a new name evicts one name of the
//!   host that holds the most, if that host would still hold more than the
//!   newcomer's host (fair share: a host with few names always gets in while
//!   another holds many); else it is refused.
//! - This node's own records are under no per-host cap and always evict a
//!   foreign one when the store is full: they fail only once all
//!   [`MAX_RECORDS`] are its own.
//!
//! **Provider records**: this node's own (one per object it announces,
//! without addresses: Kademlia adds its listen addresses when it answers)
//! are kept in libp2p's `MemoryStore`, at most [`MAX_DHT_KEYS`], where
//! others' records take no room. Others' are kept here:
//! - at most [`MAX_PROVIDER_RECORDS_PER_PEER`] per provider (beyond:
//!   refused) and [`MAX_FOREIGN_PROVIDER_RECORDS`] in all (beyond: the
//!   fair-share eviction above), at most [`MAX_PROVIDERS_PER_KEY`] per
//!   object id (beyond: ignored, as libp2p's store does);
//! - each keeps at most [`MAX_PROVIDER_ADDRS`] addresses of at most
//!   [`MAX_PROVIDER_ADDR_BYTES`] bytes each (longer ones are dropped). A
//!   record left with none is still answered: Kademlia then gives the
//!   provider's addresses from its routing table (members are there);
//! - [`DhtStore::sweep`] forgets all records of a provider that has been
//!   neither connected nor a live member for a failure timeout (it died,
//!   or never joined and left). A live member's records stay (until their
//!   TTL, or its withdrawal), connected or not.
//!
//! Memory: a foreign provider record costs about 1 KiB here at most (the
//! record, ~150 bytes; its addresses, ≤ 512 bytes and their allocations;
//! map and index entries): ~8 MiB per peer and ~64 MiB in all, at most. A named-actor record is at most
//! [`MAX_RECORD_BYTES`].
//!
//! Invariants: `hosts` names the host of exactly the records in `inner`,
//! `records` counts the foreign ones per host; `providers` counts exactly
//! the foreign provider records in `foreign`; this node never appears in
//! either count; every foreign provider record's addresses are within the
//! bounds above.

use super::behaviour::{MAX_DHT_KEYS, MAX_PROVIDERS_PER_KEY, MAX_RECORDS, MAX_RECORD_BYTES};
use crate::wire::signed;
use libp2p::kad::store::{Error, MemoryStore, MemoryStoreConfig, RecordStore, Result};
use libp2p::kad::{ProviderRecord, Record, RecordKey};
use libp2p::PeerId;
use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

/// Most named-actor records one host (other than this node) has stored
/// here: 1/32 of [`MAX_RECORDS`], so 32 hosts fill the store before any
/// fair-share eviction starts.
#[cfg_attr(not(feature = "fuzzing"), allow(unreachable_pub))] // (re-exported for tests)
pub const MAX_RECORDS_PER_HOST: usize = MAX_RECORDS / 32;
/// Most provider records one peer (other than this node) has stored here.
#[cfg_attr(not(feature = "fuzzing"), allow(unreachable_pub))] // (re-exported for tests)
pub const MAX_PROVIDER_RECORDS_PER_PEER: usize = 8192;
/// Most provider records of other peers stored here in all (8 peers at
/// their cap).
#[cfg_attr(not(feature = "fuzzing"), allow(unreachable_pub))] // (re-exported for tests)
pub const MAX_FOREIGN_PROVIDER_RECORDS: usize = 8 * MAX_PROVIDER_RECORDS_PER_PEER;
/// Most addresses kept per foreign provider record.
#[cfg_attr(not(feature = "fuzzing"), allow(unreachable_pub))] // (re-exported for tests)
pub const MAX_PROVIDER_ADDRS: usize = 4;
/// Longest address kept in a foreign provider record (an IPv6 address,
/// a port and a peer id take about 60).
#[cfg_attr(not(feature = "fuzzing"), allow(unreachable_pub))] // (re-exported for tests)
pub const MAX_PROVIDER_ADDR_BYTES: usize = 128;

/// The caps of a [`DhtStore`] (smaller ones in unit tests).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Caps {
    pub(crate) records: usize,
    pub(crate) records_per_host: usize,
    pub(crate) foreign_providers: usize,
    pub(crate) providers_per_peer: usize,
}

impl Default for Caps {
    fn default() -> Caps {
        Caps {
            records: MAX_RECORDS,
            records_per_host: MAX_RECORDS_PER_HOST,
            foreign_providers: MAX_FOREIGN_PROVIDER_RECORDS,
            providers_per_peer: MAX_PROVIDER_RECORDS_PER_PEER,
        }
    }
}

/// Keys held per peer, counted.
#[derive(Debug, Default)]
struct Shares {
    of: HashMap<PeerId, HashSet<RecordKey>>,
    total: usize,
}

impl Shares {
    fn count(&self, p: &PeerId) -> usize {
        self.of.get(p).map_or(0, HashSet::len)
    }

    fn add(&mut self, p: PeerId, k: RecordKey) {
        if self.of.entry(p).or_default().insert(k) {
            self.total += 1;
        }
    }

    fn remove(&mut self, p: &PeerId, k: &RecordKey) {
        if let Some(keys) = self.of.get_mut(p) {
            if keys.remove(k) {
                self.total -= 1;
            }
            if keys.is_empty() {
                self.of.remove(p);
            }
        }
    }

    /// A key of the peer holding the most, if it holds more than `above`
    /// (and is not `except`).
    fn victim(&self, except: &PeerId, above: usize) -> Option<(PeerId, RecordKey)> {
        let (p, keys) = self.of.iter().filter(|(p, _)| *p != except).max_by_key(|(_, keys)| keys.len())?;
        if keys.len() <= above {
            return None;
        }
        Some((*p, keys.iter().next()?.clone()))
    }
}

/// Named-actor records and provider records, shared fairly among peers
/// (see the module docs).
pub(crate) struct DhtStore {
    me: PeerId,
    caps: Caps,
    /// The records, and this node's own provider records.
    inner: MemoryStore,
    /// The host of each record in `inner`.
    hosts: HashMap<RecordKey, PeerId>,
    /// Records per foreign host.
    records: Shares,
    /// Other peers' provider records, per object id.
    foreign: HashMap<RecordKey, Vec<ProviderRecord>>,
    /// Foreign provider records per provider.
    providers: Shares,
    /// Providers seen neither connected nor live, and since when.
    absent: HashMap<PeerId, Instant>,
}

impl DhtStore {
    /// The store of node `me`, with manta's caps.
    pub(crate) fn new(me: PeerId) -> DhtStore {
        DhtStore::with_caps(me, Caps::default())
    }

    /// The store of node `me` with `caps`.
    pub(crate) fn with_caps(me: PeerId, caps: Caps) -> DhtStore {
        let cfg = MemoryStoreConfig {
            max_records: caps.records,
            max_value_bytes: MAX_RECORD_BYTES + 1,
            max_provided_keys: MAX_DHT_KEYS,
            max_providers_per_key: MAX_PROVIDERS_PER_KEY,
        };
        DhtStore {
            me,
            caps,
            inner: MemoryStore::with_config(me, cfg),
            hosts: HashMap::new(),
            records: Shares::default(),
            foreign: HashMap::new(),
            providers: Shares::default(),
            absent: HashMap::new(),
        }
    }

    /// Named-actor records `host` has stored here.
    #[cfg(test)]
    pub(crate) fn records_of(&self, host: &PeerId) -> usize {
        if *host == self.me {
            self.hosts.values().filter(|h| **h == self.me).count()
        } else {
            self.records.count(host)
        }
    }

    /// Provider records `peer` (not this node) has stored here.
    #[cfg(test)]
    pub(crate) fn provider_records_of(&self, peer: &PeerId) -> usize {
        self.providers.count(peer)
    }

    /// Drops every provider record of `peer` (not this node's own).
    pub(crate) fn forget_provider(&mut self, peer: &PeerId) {
        let Some(keys) = self.providers.of.remove(peer) else { return };
        self.providers.total -= keys.len();
        for k in keys {
            if let Some(list) = self.foreign.get_mut(&k) {
                list.retain(|r| r.provider != *peer);
                if list.is_empty() {
                    self.foreign.remove(&k);
                }
            }
        }
    }

    /// Forgets the provider records of every provider that `present` has
    /// said is absent (neither connected nor a live member) at every sweep
    /// for at least `timeout`; returns how many providers were forgotten.
    pub(crate) fn sweep(&mut self, now: Instant, timeout: Duration, present: impl Fn(&PeerId) -> bool) -> usize {
        let peers: Vec<PeerId> = self.providers.of.keys().copied().collect();
        self.absent.retain(|p, _| self.providers.of.contains_key(p));
        let mut forgotten = 0;
        for p in peers {
            if present(&p) {
                self.absent.remove(&p);
                continue;
            }
            let since = *self.absent.entry(p).or_insert(now);
            if now.saturating_duration_since(since) >= timeout {
                self.absent.remove(&p);
                self.forget_provider(&p);
                forgotten += 1;
            }
        }
        forgotten
    }

    /// Makes room for one more record of `host` when the store is full:
    /// evicts a foreign record (see the module docs), or says there is none
    /// to evict.
    fn room_for_record(&mut self, host: &PeerId) -> Result<()> {
        if self.hosts.len() < self.caps.records {
            return Ok(());
        }
        let above = if *host == self.me { 0 } else { self.records.count(host) + 1 };
        let (victim, key) = self.records.victim(host, above).ok_or(Error::MaxRecords)?;
        tracing::debug!(%victim, "DHT record store full: a record of the host holding the most evicted");
        self.inner.remove(&key);
        self.hosts.remove(&key);
        self.records.remove(&victim, &key);
        Ok(())
    }
}

/// `addrs` within the bounds of a foreign provider record.
fn bound_addresses(addrs: &mut Vec<libp2p::Multiaddr>) {
    addrs.retain(|a| a.len() <= MAX_PROVIDER_ADDR_BYTES);
    addrs.truncate(MAX_PROVIDER_ADDRS);
}

impl RecordStore for DhtStore {
    type RecordsIter<'a> = <MemoryStore as RecordStore>::RecordsIter<'a>;
    type ProvidedIter<'a> = <MemoryStore as RecordStore>::ProvidedIter<'a>;

    fn get(&self, k: &RecordKey) -> Option<Cow<'_, Record>> {
        self.inner.get(k)
    }

    fn put(&mut self, r: Record) -> Result<()> {
        if r.value.len() > MAX_RECORD_BYTES {
            return Err(Error::ValueTooLarge);
        }
        // Only named-actor records signed by their host are ever stored:
        // the host is whoever signed it. (No better error exists for one
        // that does not verify: the event loop never offers one.)
        let host = signed::verify_record(r.key.as_ref(), &r.value).map_err(|_| Error::MaxRecords)?.1;
        let before = self.hosts.get(&r.key).copied();
        if before == Some(host) {
            return self.inner.put(r); // an update of its own name
        }
        if host != self.me && self.records.count(&host) >= self.caps.records_per_host {
            return Err(Error::MaxRecords);
        }
        if before.is_none() {
            self.room_for_record(&host)?;
        }
        let key = r.key.clone();
        self.inner.put(r)?;
        if let Some(old) = before {
            self.records.remove(&old, &key);
        }
        self.hosts.insert(key.clone(), host);
        if host != self.me {
            self.records.add(host, key);
        }
        Ok(())
    }

    fn remove(&mut self, k: &RecordKey) {
        self.inner.remove(k);
        if let Some(host) = self.hosts.remove(k) {
            self.records.remove(&host, k);
        }
    }

    fn records(&self) -> Self::RecordsIter<'_> {
        self.inner.records()
    }

    fn add_provider(&mut self, mut record: ProviderRecord) -> Result<()> {
        if record.provider == self.me {
            return self.inner.add_provider(record);
        }
        bound_addresses(&mut record.addresses);
        let provider = record.provider;
        if let Some(list) = self.foreign.get_mut(&record.key) {
            if let Some(old) = list.iter_mut().find(|r| r.provider == provider) {
                *old = record; // a refresh
                return Ok(());
            }
            if list.len() >= MAX_PROVIDERS_PER_KEY {
                return Ok(()); // as libp2p's store: ignored
            }
        }
        if self.providers.count(&provider) >= self.caps.providers_per_peer {
            return Err(Error::MaxProvidedKeys);
        }
        if self.providers.total >= self.caps.foreign_providers {
            let above = self.providers.count(&provider) + 1;
            let (victim, key) = self.providers.victim(&provider, above).ok_or(Error::MaxProvidedKeys)?;
            tracing::debug!(%victim, "DHT provider records full: one of the peer holding the most evicted");
            self.remove_provider(&key, &victim);
        }
        self.providers.add(provider, record.key.clone());
        // Most ids have one foreign provider: no room reserved for more.
        self.foreign.entry(record.key.clone()).or_insert_with(|| Vec::with_capacity(1)).push(record);
        Ok(())
    }

    fn providers(&self, key: &RecordKey) -> Vec<ProviderRecord> {
        let mut all = self.inner.providers(key);
        if let Some(list) = self.foreign.get(key) {
            all.extend(list.iter().cloned());
        }
        all
    }

    fn provided(&self) -> Self::ProvidedIter<'_> {
        self.inner.provided()
    }

    fn remove_provider(&mut self, k: &RecordKey, p: &PeerId) {
        if *p == self.me {
            return self.inner.remove_provider(k, p);
        }
        if let Some(list) = self.foreign.get_mut(k) {
            list.retain(|r| r.provider != *p);
            if list.is_empty() {
                self.foreign.remove(k);
            }
        }
        self.providers.remove(p, k);
    }
}

#[cfg(test)]
#[path = "dht_store_tests.rs"]
mod tests;
