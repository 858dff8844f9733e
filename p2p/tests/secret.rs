//! A private cluster: nodes sharing a pre-shared key join and share
//! objects; a node without the key, or with another one, cannot connect.

use manta::{ObjectRef, Runtime};
use manta_p2p::{Node, NodeError};
use std::time::Duration;

fn node(secret: Option<[u8; 32]>) -> Node {
    let rt = Runtime::builder().num_cpus(1).build().unwrap();
    let mut b = Node::builder(rt)
        .listen("/ip4/127.0.0.1/tcp/0".parse().unwrap())
        .heartbeat(Duration::from_millis(100))
        .request_timeout(Duration::from_secs(1));
    if let Some(k) = secret {
        b = b.secret(k);
    }
    b.start().unwrap()
}

#[test]
fn only_nodes_with_the_key_join() {
    let key = [42u8; 32];
    let a = node(Some(key));
    let b = node(Some(key));
    assert_eq!(b.dial(a.listen_addrs()[0].clone()).unwrap(), a.peer_id());
    b.wait_for_peers(1, Duration::from_secs(30)).unwrap();
    let r = a.runtime().put(vec![5u32; 1000]).unwrap();
    let on_b: ObjectRef<Vec<u32>> = b.decode_ref(&a.encode_ref(&r).unwrap()).unwrap();
    assert_eq!(*on_b.get().unwrap(), vec![5u32; 1000]);

    let outsider = node(None);
    let e = outsider.dial(a.listen_addrs()[0].clone()).unwrap_err();
    assert!(matches!(e, NodeError::Dial { .. }), "{e}");
    let wrong = node(Some([7u8; 32]));
    let e = wrong.dial(a.listen_addrs()[0].clone()).unwrap_err();
    assert!(matches!(e, NodeError::Dial { .. }), "{e}");
    // Nor can a private node reach an open one.
    let e = a.dial(outsider.listen_addrs()[0].clone()).unwrap_err();
    assert!(matches!(e, NodeError::Dial { .. }), "{e}");

    let members = a.cluster_status().unwrap();
    assert!(members.iter().all(|m| m.peer != outsider.peer_id() && m.peer != wrong.peer_id()));
}
