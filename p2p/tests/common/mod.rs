//! Helpers shared by the p2p integration tests (each test file that uses
//! them has `mod common;`).

use manta_p2p::{FastLaneStats, MembershipEvent, Node};
use std::time::{Duration, Instant};

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

/// Polls `n`'s message-lane stats until `done` holds or `wait` passes;
/// the last stats either way (the caller asserts on them).
#[allow(dead_code)] // used by the lane tests only
pub fn lane_until(n: &Node, wait: Duration, done: impl Fn(&FastLaneStats) -> bool) -> FastLaneStats {
    let deadline = Instant::now() + wait;
    loop {
        let s = n.fast_lane_stats();
        if done(&s) || Instant::now() > deadline {
            return s;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}
