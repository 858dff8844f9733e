//! Unit tests of `dht_store`, with small caps.

use super::*;
use crate::wire::hint;
use crate::wire::plain::{actor_record_key, encode_actor_record, ActorRecord};
use libp2p::identity::Keypair;
use libp2p::Multiaddr;

fn caps() -> Caps {
    Caps { records: 8, records_per_host: 3, foreign_providers: 6, providers_per_peer: 4 }
}

/// A named-actor record for `name`, hosted and signed by `host`.
fn record(host: &Keypair, name: &str) -> Record {
    let key = actor_record_key(name);
    let host_hint = hint::encode(&host.public().to_peer_id(), &[]);
    let rec = encode_actor_record(&ActorRecord { actor: [1; 16], class: "Thing".into(), host: host_hint });
    let value = signed::sign_record(host, &key, rec).expect("signs");
    Record::new(RecordKey::new(&key), value)
}

fn provider(id: u32, peer: PeerId, addrs: Vec<Multiaddr>) -> ProviderRecord {
    let mut key = [0u8; 16];
    key[..4].copy_from_slice(&id.to_le_bytes());
    ProviderRecord { key: RecordKey::new(&key), provider: peer, expires: None, addresses: addrs }
}

#[test]
fn a_host_keeps_its_share_of_names_and_ours_always_fit() {
    let me = Keypair::generate_ed25519();
    let mut s = DhtStore::with_caps(me.public().to_peer_id(), caps());
    let (squatter, honest) = (Keypair::generate_ed25519(), Keypair::generate_ed25519());
    let sq = squatter.public().to_peer_id();
    for i in 0..3 {
        s.put(record(&squatter, &format!("squat-{i}"))).expect("within its share");
    }
    assert!(s.put(record(&squatter, "squat-3")).is_err(), "beyond its share");
    assert!(s.put(record(&squatter, "squat-0")).is_ok(), "an update of a name it holds");
    assert_eq!(s.records_of(&sq), 3);
    // A record that does not verify (signed by another key than its host's).
    let mut forged = record(&squatter, "forged");
    forged.value = record(&honest, "forged").value;
    forged.value[5] ^= 1;
    assert!(s.put(forged).is_err());
    // Fill the rest with our own, then more of ours: they evict foreign ones.
    for i in 0..8 {
        s.put(record(&me, &format!("mine-{i}"))).expect("our own always fits");
    }
    assert_eq!(s.records_of(&sq), 0, "every foreign record gave way to ours");
    assert!(s.put(record(&me, "mine-8")).is_err(), "only when all are ours");
    assert!(s.put(record(&honest, "h")).is_err(), "none to evict");
    s.remove(&RecordKey::new(&actor_record_key("mine-0")));
    s.put(record(&honest, "h")).expect("room again");
    assert_eq!(s.hosts.len(), 8);
}

#[test]
fn a_full_store_evicts_from_the_host_holding_the_most() {
    let me = PeerId::random();
    let mut s = DhtStore::with_caps(me, caps());
    let keys: Vec<Keypair> = (0..4).map(|_| Keypair::generate_ed25519()).collect();
    // 3 + 3 + 2 = 8: full.
    for (k, n) in keys.iter().zip([3, 3, 2]) {
        for i in 0..n {
            s.put(record(k, &format!("{i}-{}", k.public().to_peer_id()))).expect("fits");
        }
    }
    // A newcomer with none gets in at the expense of a host with 3.
    s.put(record(&keys[3], "new")).expect("fair share");
    let counts: Vec<usize> = keys.iter().map(|k| s.records_of(&k.public().to_peer_id())).collect();
    assert_eq!(counts.iter().sum::<usize>(), 8);
    assert_eq!(counts[3], 1);
    assert!(counts[..2].contains(&2), "{counts:?}");
    // Hosts at 2 or 3 each with the newcomer at 1: it may still take one.
    s.put(record(&keys[3], "new2")).expect("fair share");
    // Now everyone holds 2: nobody holds more than a newcomer would.
    assert!(s.put(record(&keys[3], "new3")).is_err(), "no host holds more than its would");
}

#[test]
fn provider_records_are_capped_per_peer_and_in_all_with_bounded_addresses() {
    let me = PeerId::random();
    let mut s = DhtStore::with_caps(me, caps());
    let (evil, honest) = (PeerId::random(), PeerId::random());
    let long: Multiaddr = format!("/dns4/{}/tcp/1", "p".repeat(940)).parse().expect("addr");
    let short: Multiaddr = "/ip4/127.0.0.1/tcp/4001".parse().expect("addr");
    let mut addrs = vec![long; 16];
    addrs.extend(std::iter::repeat_n(short.clone(), 8));
    for i in 0..4 {
        s.add_provider(provider(i, evil, addrs.clone())).expect("within its share");
    }
    assert!(s.add_provider(provider(4, evil, addrs.clone())).is_err(), "beyond its share");
    assert_eq!(s.provider_records_of(&evil), 4);
    let kept = s.providers(&provider(0, evil, vec![]).key);
    assert_eq!(kept.len(), 1);
    assert_eq!(kept[0].addresses, vec![short.clone(); MAX_PROVIDER_ADDRS], "long addresses dropped, count capped");
    // A refresh is not a new record.
    s.add_provider(provider(0, evil, vec![])).expect("a refresh");
    assert_eq!(s.provider_records_of(&evil), 4);
    // Another peer fills the rest (6 in all), then takes one of evil's.
    for i in 10..13 {
        s.add_provider(provider(i, honest, vec![short.clone()])).expect("fits");
    }
    assert_eq!((s.provider_records_of(&evil), s.provider_records_of(&honest)), (3, 3));
    assert!(s.add_provider(provider(13, honest, vec![])).is_err(), "no peer holds more than it would");
    // Our own records take none of that room.
    for i in 100..200 {
        s.add_provider(provider(i, me, vec![])).expect("ours");
    }
    assert_eq!(s.provided().count(), 100);
    assert_eq!(s.providers(&provider(10, honest, vec![]).key)[0].provider, honest);
    // Forgetting a peer drops its records, ours and others' stay.
    s.forget_provider(&evil);
    assert_eq!(s.provider_records_of(&evil), 0);
    assert!(s.providers(&provider(0, evil, vec![]).key).is_empty());
    assert_eq!(s.provider_records_of(&honest), 3);
    s.remove_provider(&provider(10, honest, vec![]).key, &honest);
    assert_eq!(s.provider_records_of(&honest), 2);
    assert_eq!(s.provided().count(), 100);
}

#[test]
fn a_sweep_forgets_providers_absent_for_a_timeout_only() {
    let mut s = DhtStore::with_caps(PeerId::random(), caps());
    let (gone, live) = (PeerId::random(), PeerId::random());
    s.add_provider(provider(1, gone, vec![])).expect("fits");
    s.add_provider(provider(2, live, vec![])).expect("fits");
    let t0 = Instant::now();
    let timeout = Duration::from_secs(5);
    let present = |p: &PeerId| *p == live;
    assert_eq!(s.sweep(t0, timeout, present), 0, "absent since now");
    assert_eq!(s.sweep(t0 + Duration::from_secs(4), timeout, present), 0);
    assert_eq!(s.sweep(t0 + timeout, timeout, present), 1);
    assert_eq!((s.provider_records_of(&gone), s.provider_records_of(&live)), (0, 1));
    // Back in between: its absence starts again.
    s.add_provider(provider(3, gone, vec![])).expect("fits");
    assert_eq!(s.sweep(t0 + Duration::from_secs(10), timeout, |_| false), 0);
    assert_eq!(s.sweep(t0 + Duration::from_secs(11), timeout, |_| true), 0);
    assert_eq!(s.sweep(t0 + Duration::from_secs(12), timeout, |_| false), 0, "absent again, from now");
    assert_eq!(s.sweep(t0 + Duration::from_secs(17), timeout, |_| false), 2);
}
