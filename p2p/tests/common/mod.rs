//! Helpers shared by the p2p integration tests (each test file that uses
//! them has `mod common;`).

use manta_p2p::{MembershipEvent, Node};
use std::time::Duration;

/// Stops `n` and waits (at most `wait`) until `observer` declares it dead.
pub fn stop_and_see_die(n: &Node, observer: &Node, wait: Duration) {
    let events = observer.subscribe().unwrap();
    n.shutdown();
    loop {
        match events.recv_timeout(wait).unwrap() {
            MembershipEvent::Died(p) if p == n.peer_id() => break,
            _ => {}
        }
    }
}
