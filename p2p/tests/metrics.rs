//! The p2p backend's metrics in `Runtime::metrics` and its Prometheus
//! text: after a remote task and a remote get between two in-process
//! nodes (127.0.0.1), both sides count them.

use manta::{ObjectRef, Runtime};
use manta_p2p::{Node, Registry, RemoteFn};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(30);

static DOUBLE: RemoteFn<(u32,), u32> = RemoteFn::new("double", |(x,)| 2 * x);

fn node(bootstrap: Option<&Node>) -> Node {
    let mut b = Node::builder(Runtime::builder().num_cpus(1).build().unwrap())
        .listen("/ip4/127.0.0.1/tcp/0".parse().unwrap())
        .heartbeat(Duration::from_millis(100))
        .registry(Registry::new().function(&DOUBLE));
    if let Some(n) = bootstrap {
        b = b.bootstrap(n.listen_addrs()[0].clone());
    }
    b.start().unwrap()
}

fn metric(n: &Node, name: &str) -> f64 {
    let m = n.runtime().metrics();
    m.cluster.iter().find(|(k, _)| k == name).map(|(_, v)| *v).unwrap_or_else(|| panic!("no metric {name}"))
}

#[test]
fn remote_task_and_get_are_counted_on_both_nodes() {
    let a = node(None);
    let b = node(Some(&a));
    a.wait_for_peers(1, WAIT).unwrap();
    b.wait_for_peers(1, WAIT).unwrap();
    for (n, name) in [(&a, "a"), (&b, "b")] {
        assert_eq!(metric(n, "p2p_remote_tasks_sent_total"), 0.0, "{name}");
        assert_eq!(metric(n, "p2p_transfers_in_total"), 0.0, "{name}");
        assert_eq!(metric(n, "p2p_peers_alive"), 1.0, "{name}");
    }

    // A remote task: A sends, B runs.
    assert_eq!(*a.task(&DOUBLE).on(b.peer_id()).spawn((21,)).get().unwrap(), 42);
    assert_eq!(metric(&a, "p2p_remote_tasks_sent_total"), 1.0);
    assert_eq!(metric(&b, "p2p_remote_tasks_received_total"), 1.0);
    assert_eq!(metric(&a, "p2p_remote_tasks_received_total"), 0.0);

    // A remote get: B reads A's object.
    let value: Vec<u8> = (0..200_000u32).map(|i| i as u8).collect();
    let mine = a.runtime().put(value.clone()).unwrap();
    let there: ObjectRef<Vec<u8>> = b.decode_ref(&a.encode_ref(&mine).unwrap()).unwrap();
    assert_eq!(*there.get_timeout(WAIT).unwrap(), value);
    assert_eq!(metric(&b, "p2p_transfers_in_total"), 1.0);
    assert!(metric(&b, "p2p_transfer_in_bytes_total") >= value.len() as f64);
    assert_eq!(metric(&a, "p2p_transfers_out_total"), 1.0);
    assert!(metric(&a, "p2p_transfer_out_bytes_total") >= value.len() as f64);
    assert_eq!(metric(&a, "p2p_transfers_in_total"), 0.0);
    for n in [&a, &b] {
        assert!(metric(n, "p2p_net_bytes_sent_total") > 0.0);
        assert!(metric(n, "p2p_net_bytes_received_total") > 0.0);
        assert_eq!(metric(n, "p2p_peers_down"), 0.0);
    }

    let text = b.runtime().metrics().to_prometheus();
    assert!(text.contains("# TYPE manta_p2p_transfers_in_total counter\nmanta_p2p_transfers_in_total 1\n"), "{text}");
    assert!(text.contains("# TYPE manta_p2p_peers_alive gauge\nmanta_p2p_peers_alive 1\n"), "{text}");
    let text = a.runtime().metrics().to_prometheus();
    assert!(text.contains("manta_p2p_remote_tasks_sent_total 1\n"), "{text}");
    assert!(text.contains("manta_p2p_transfers_out_total 1\n"), "{text}");
    b.shutdown();
    a.shutdown();
}
