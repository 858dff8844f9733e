//! Two nodes in one process, each with its own `Runtime`, on 127.0.0.1:
//! refs (and actor handles) encoded on either node and decoded on either
//! bind to the runtime of the node that decodes them, never to the other
//! one (ref deserialization needs an explicit runtime: there is no global
//! one to fall back on). Checked through each runtime's export table, where
//! a `get` fetches from (the owner), which node `Node::current` names
//! inside each runtime's tasks, and which runtime a task's own decoding
//! binds to.

use manta::{ObjectRef, Runtime};
use manta_p2p::{ActorClass, ActorHandle, Method, Node, Registry, RemoteFn};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(30);

static WHO: RemoteFn<(), String> = RemoteFn::new("who", |()| here());
static CELL: ActorClass<(i64,), i64> = ActorClass::new("Cell", |(v,)| v);
static WHERE: Method<i64, (), String> = Method::new("Cell.where", |_, ()| here());

/// The node whose runtime runs the calling task.
fn here() -> String {
    Node::current().expect("tasks run on a node's runtime").peer_id().to_string()
}

fn node(bootstrap: Option<&Node>) -> Node {
    let rt = Runtime::builder().num_cpus(1).build().unwrap();
    let mut b = Node::builder(rt)
        .listen("/ip4/127.0.0.1/tcp/0".parse().unwrap())
        .heartbeat(Duration::from_millis(100))
        .registry(Registry::new().function(&WHO).actor(&CELL).method(&WHERE));
    if let Some(n) = bootstrap {
        b = b.bootstrap(n.listen_addrs()[0].clone());
    }
    b.start().unwrap()
}

fn exported(n: &Node) -> usize {
    n.runtime().backend().exported_objects()
}

#[test]
fn refs_decoded_on_either_node_bind_to_that_nodes_runtime() {
    let a = node(None);
    let b = node(Some(&a));
    a.wait_for_peers(1, WAIT).unwrap();
    b.wait_for_peers(1, WAIT).unwrap();
    let (a0, b0) = (exported(&a), exported(&b));

    // A's object, encoded on A: exported by A only.
    let on_a = a.runtime().put(vec![1u8, 2, 3]).unwrap();
    let from_a = a.encode_ref(&on_a).unwrap();
    assert_eq!((exported(&a), exported(&b)), (a0 + 1, b0));

    // Decoded on B: a remote object in B's table, fetched from A.
    let there: ObjectRef<Vec<u8>> = b.decode_ref(&from_a).unwrap();
    assert_eq!(there.id(), on_a.id());
    assert_eq!((exported(&a), exported(&b)), (a0 + 1, b0 + 1));
    assert!(!there.is_ready(), "B holds no copy until a reader asks");
    assert_eq!(*there.get_timeout(WAIT).unwrap(), vec![1, 2, 3]);

    // Decoded on A again: A's own object, ready at once, nothing new.
    let back: ObjectRef<Vec<u8>> = a.decode_ref(&from_a).unwrap();
    assert!(back.is_ready(), "the owner's decode is the owner's object");
    assert_eq!(*back.get().unwrap(), vec![1, 2, 3]);
    assert_eq!(exported(&a), a0 + 1);

    // The other way: B's object, decoded on A and fetched from B.
    let on_b = b.runtime().put(String::from("from b")).unwrap();
    let from_b = b.encode_ref(&on_b).unwrap();
    let b1 = exported(&b);
    let at_a: ObjectRef<String> = a.decode_ref(&from_b).unwrap();
    assert_eq!(exported(&a), a0 + 2);
    assert_eq!(exported(&b), b1, "decoding on A never touches B's table");
    assert_eq!(*at_a.get_timeout(WAIT).unwrap(), "from b");

    // A plain serde decode binds to the runtime entered on this thread.
    let entered: ObjectRef<Vec<u8>> = {
        let _in_b = b.runtime().enter();
        ciborium::from_reader(&from_a[..]).unwrap()
    };
    assert_eq!(entered.id(), on_a.id());
    assert!(entered.is_ready(), "B's replica, fetched above, is the object bound there");
}

#[test]
fn tasks_see_their_own_runtimes_node_and_bind_refs_to_it() {
    let a = node(None);
    let b = node(Some(&a));
    a.wait_for_peers(1, WAIT).unwrap();
    b.wait_for_peers(1, WAIT).unwrap();
    let (a_id, b_id) = (a.peer_id().to_string(), b.peer_id().to_string());

    // `Node::current` inside a plain task of each runtime.
    let in_a = a.runtime().spawn(|| Node::current().map(|n| n.peer_id().to_string()));
    let in_b = b.runtime().spawn(|| Node::current().map(|n| n.peer_id().to_string()));
    assert_eq!(in_a.get().unwrap().as_deref(), Some(a_id.as_str()));
    assert_eq!(in_b.get().unwrap().as_deref(), Some(b_id.as_str()));

    // Cluster tasks and actor calls pinned to each node run there.
    assert_eq!(*a.task(&WHO).on(b.peer_id()).spawn(()).get_timeout(WAIT).unwrap(), b_id);
    assert_eq!(*b.task(&WHO).on(a.peer_id()).spawn(()).get_timeout(WAIT).unwrap(), a_id);
    let cell: ActorHandle<i64> = a.actor_builder(&CELL).on(b.peer_id()).spawn((7,));
    assert_eq!(*cell.call(&WHERE, ()).get_timeout(WAIT).unwrap(), b_id);

    // A ref decoded inside a task of B's runtime binds to B's runtime.
    let on_a = a.runtime().put(41u64).unwrap();
    let bytes = a.encode_ref(&on_a).unwrap();
    let decoded_in_b = b.runtime().spawn(move || {
        let r: ObjectRef<u64> = ciborium::from_reader(&bytes[..]).expect("binds to the task's runtime");
        r
    });
    let inner = decoded_in_b.get_timeout(WAIT).unwrap();
    assert!(!b.runtime().backend().holds_object(on_a.id()), "not fetched yet");
    assert_eq!(*inner.get_timeout(WAIT).unwrap(), 41, "fetched from A");
    assert!(b.runtime().backend().holds_object(on_a.id()), "the replica is in B's table: the ref is B's");

    // An actor handle decoded on either node calls the same actor.
    let on_a_side: ActorHandle<i64> = a.decode(&a.encode(&cell).unwrap()).unwrap();
    let on_b_side: ActorHandle<i64> = b.decode(&a.encode(&cell).unwrap()).unwrap();
    assert_eq!(*on_a_side.call(&WHERE, ()).get_timeout(WAIT).unwrap(), b_id);
    assert_eq!(*on_b_side.call(&WHERE, ()).get_timeout(WAIT).unwrap(), b_id);
}

#[test]
fn the_owner_counts_a_peer_borrowing_its_object() {
    let a = node(None);
    let b = node(Some(&a));
    a.wait_for_peers(1, WAIT).unwrap();
    b.wait_for_peers(1, WAIT).unwrap();
    let obj = a.runtime().put(vec![1u8; 10]).unwrap();
    assert_eq!(obj.ref_counts().borrowers, 0);
    let at_b: ObjectRef<Vec<u8>> = b.decode_ref(&a.encode_ref(&obj).unwrap()).unwrap();
    // B's borrow reaches A by mail; once B's mail is applied, A counts it.
    assert!(b.flush_mail(WAIT));
    assert_eq!(obj.ref_counts().borrowers, 1, "{:?}", obj.ref_counts());
    drop(at_b);
    assert!(b.flush_mail(WAIT));
    assert_eq!(obj.ref_counts().borrowers, 0, "{:?}", obj.ref_counts());
}
