//! manta clusters over libp2p: several processes running manta join into
//! one cluster with no head node.
//!
//! - **Discovery**: by mDNS on a LAN (off unless asked for) and by bootstrap
//!   addresses anywhere.
//! - **Membership**: each node gossips a heartbeat (addresses, resources,
//!   queue length, store use, function-table hash); [`Node::cluster_status`]
//!   is the member table; silent peers are marked dead, and a node that
//!   shuts down says so.
//! - **Objects**: an `ObjectRef` serializes (serde) to its id and its
//!   owner's address; on another node `get` pulls the bytes from the owner,
//!   or from a replica found in the Kademlia DHT (large objects over the
//!   holder's bulk lane, a TCP connection of their own sealed with
//!   AES-256-GCM under a one-use key obtained over libp2p), and keeps a
//!   replica that is announced in turn. A large `Vec<u8>` replica is
//!   written into the buffer of a freed one when the store has one
//!   (`manta::RuntimeBuilder::recycle_capacity`), so repeated transfers do
//!   not pay fresh-memory page faults.
//! - **Remote tasks and actors**: functions and actor types registered by
//!   name ([`RemoteFn`], [`ActorClass`], [`Method`] in a [`Registry`]) run on
//!   whichever node placement picks: here, unless their resources exist only
//!   elsewhere, this node's queue is saturated, or a peer holds much more of
//!   their argument bytes (see [`Node::task`]). Results are ordinary
//!   `ObjectRef`s owned by the submitter; small ones come back with the
//!   completion, large ones stay where they were made (and are run again
//!   from lineage if that node is lost). Actors with `max_restarts` are
//!   restarted on another node when theirs dies.
//! - **Reference counting**: a node that deserializes a ref tells the
//!   owner, which keeps the object alive until every borrower has dropped
//!   it; task results stay pinned on their executor until the submitter
//!   drops its ref. A job leaves every store as it found it.
//! - **Safety**: connections are authenticated and encrypted (Noise); every
//!   wire message is versioned and size-capped; malformed bytes from a peer
//!   get an error reply and a log line.
//!
//! ```
//! use manta::{ObjectRef, Runtime};
//! use manta_p2p::Node;
//! use std::time::Duration;
//!
//! let local = || "/ip4/127.0.0.1/tcp/0".parse().unwrap();
//! let a = Node::builder(Runtime::builder().num_cpus(1).build()?).listen(local()).start()?;
//! let b = Node::builder(Runtime::builder().num_cpus(1).build()?)
//!     .listen(local())
//!     .bootstrap(a.listen_addrs()[0].clone())
//!     .start()?;
//! b.wait_for_peers(1, Duration::from_secs(10))?;
//!
//! let r = a.runtime().put(vec![1u8, 2, 3]).unwrap();
//! let wire = a.encode_ref(&r); // send these bytes anywhere
//! let there: ObjectRef<Vec<u8>> = b.decode_ref(&wire)?;
//! assert_eq!(*there.get()?, vec![1, 2, 3]);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Remote tasks: register functions (every node the same table), then
//! submit them like local tasks; `.on(peer)` pins one to a node.
//!
//! ```
//! use manta::Runtime;
//! use manta_p2p::{Node, Registry, RemoteFn};
//! use std::time::Duration;
//!
//! static ADD: RemoteFn<(i64, i64), i64> = RemoteFn::new("add", |(a, b)| a + b);
//!
//! let start = |boot: Option<&Node>| {
//!     let mut b = Node::builder(Runtime::builder().num_cpus(1).build().unwrap())
//!         .listen("/ip4/127.0.0.1/tcp/0".parse().unwrap())
//!         .registry(Registry::new().function(&ADD));
//!     if let Some(n) = boot {
//!         b = b.bootstrap(n.listen_addrs()[0].clone());
//!     }
//!     b.start()
//! };
//! let a = start(None)?;
//! let b = start(Some(&a))?;
//! a.wait_for_peers(1, Duration::from_secs(10))?;
//!
//! let x = a.runtime().put(40i64).unwrap();
//! let sum = a.task(&ADD).on(b.peer_id()).spawn((&x, 2)); // runs on b, reads x from a
//! assert_eq!(*sum.get()?, 42);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod actor;
mod args;
mod behaviour;
mod bulk;
pub mod chunk;
pub mod codec;
mod config;
mod event_loop;
mod exec;
mod fetch;
pub mod hint;
mod inbox;
pub mod mail;
mod membership;
mod node;
pub mod outbox;
mod placement;
mod registry;
mod rpc;
pub mod seal;
mod task;
pub mod wire;
mod work;

pub use actor::{RemoteActor, RemoteActorBuilder};
pub use args::{Arg, Args, Data, IntoArg, IntoArgs};
pub use behaviour::{HEARTBEAT_TOPIC, KAD_PROTOCOL};
pub use bulk::LaneStats;
pub use config::{DEFAULT_FAILURE_TIMEOUT, DEFAULT_HEARTBEAT, DEFAULT_IDLE_TIMEOUT, DEFAULT_REQUEST_TIMEOUT};
pub use libp2p::{Multiaddr, PeerId};
pub use membership::{Member, MembershipEvent};
pub use node::{Node, NodeBuilder, NodeError};
pub use placement::LOCALITY_MIN_BYTES;
pub use registry::{ActorClass, Method, Registry, RemoteFn, INLINE_RESULT_BYTES};
pub use task::RemoteTask;
