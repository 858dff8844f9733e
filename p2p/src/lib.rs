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
//!   drops its ref; every ref inside a task's arguments (nested in values
//!   too) is kept alive by its submitter until the task is done. A job
//!   leaves every store as it found it.
//! - **Safety**: safe by default: without a listen address a node listens
//!   on 127.0.0.1 only, and listening beyond loopback or mDNS needs a
//!   cluster secret ([`NodeBuilder::secret`], read with [`load_secret`] from
//!   a file or `MANTA_SECRET`, never a command line) or the explicit
//!   [`NodeBuilder::insecure_open_network`]. Connections are authenticated
//!   and encrypted (Noise) and, with a secret, private (pre-shared key);
//!   the bulk lane takes only ticket holders at the address their
//!   connection arrived on. Streams, frames, connections, lane tickets and
//!   senders are bounded per peer and in all; frames grow only as bytes
//!   arrive and have deadlines; DHT records from peers are filtered; every
//!   wire message is versioned, size- and depth-capped, and malformed bytes
//!   get an error reply and a log line. Not yet: actor ownership, borrow
//!   caps, content digests, per-peer work quotas (members are trusted with
//!   work). See the Safety section of `p2p/README.md`.
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
//! let wire = a.encode_ref(&r)?; // send these bytes anywhere
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

//! Actors: register a type and its methods, create one anywhere with
//! [`Node::actor_builder`] (placed like a task, or pinned with `.on(peer)`),
//! and call it through its [`ActorHandle`] from any node.
//!
//! ```
//! use manta::Runtime;
//! use manta_p2p::{ActorClass, ActorHandle, Method, Node, Registry};
//! use std::time::Duration;
//!
//! static COUNTER: ActorClass<(i64,), i64> = ActorClass::new("Counter", |(start,)| start);
//! static ADD: Method<i64, (i64,), i64> = Method::new("Counter.add", |n, (k,)| { *n += k; *n });
//!
//! let start = |boot: Option<&Node>| {
//!     let mut b = Node::builder(Runtime::builder().num_cpus(1).build().unwrap())
//!         .listen("/ip4/127.0.0.1/tcp/0".parse().unwrap())
//!         .registry(Registry::new().actor(&COUNTER).method(&ADD));
//!     if let Some(n) = boot {
//!         b = b.bootstrap(n.listen_addrs()[0].clone());
//!     }
//!     b.start()
//! };
//! let a = start(None)?;
//! let b = start(Some(&a))?;
//! a.wait_for_peers(1, Duration::from_secs(10))?;
//!
//! let counter: ActorHandle<i64> = a.actor_builder(&COUNTER).on(b.peer_id()).spawn((40,));
//! assert_eq!(*counter.call(&ADD, (2,)).get()?, 42); // ran on b
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Architecture
//!
//! Layers, lowest first, each a folder (or file) whose header says what it
//! owns, what it may use and its invariants; a module imports only from its
//! own layer or those below it (`tests/layers.rs` in the workspace root
//! checks this):
//!
//! 1. `wire`: byte formats, pure encode/decode (envelope, mail, framing,
//!    chunks, the sealed lane stream, owner hints);
//! 2. `config`, `sync`: settings and lock helpers every layer shares;
//! 3. `transport`: object streams, mail outboxes and inboxes, the bulk
//!    lane, the message lanes (small gets and mail on their own sealed
//!    TCP connections), fetches; it reaches libp2p only through traits
//!    the cluster layer implements;
//! 4. `cluster`: membership, placement, and the event loop that alone owns
//!    the swarm and its stream control;
//! 5. `work`: remote tasks and actors, their results, pins and registry;
//! 6. `node`: the [`Node`] handle, its builder and errors, and the runtime
//!    backend that glues the manta runtime to the layers.
//!
//! Where a lower layer must reach a higher one, the lower layer defines a
//! narrow trait (`transport::MailHandler`, `transport::Rebuilder`,
//! `transport::ObjectHooks`) or sends events on a channel
//! (`cluster::ClusterEvent`), and the higher layer plugs in at start.

#![forbid(unsafe_code)]
#![warn(missing_docs, unreachable_pub, missing_debug_implementations)]

mod cluster;
mod config;
mod node;
pub mod probe;
mod secret;
mod stats;
mod sync;
mod transport;
mod wire;
mod work;

pub use cluster::placement::LOCALITY_MIN_BYTES;
pub use cluster::{
    BehaviourError, DhtLookup, Health, Member, MembershipEvent, NetStats, SwarmError, DOWN_REPORT_FOR,
    FORGET_GONE_AFTER, HEARTBEAT_TOPIC, KAD_PROTOCOL, MAX_MEMBERS, MAX_MEMBER_ADDRS, MAX_MEMBER_ADDR_BYTES,
};
pub use config::{
    ADAPTIVE_FROM, DEFAULT_FAILURE_TIMEOUT, DEFAULT_HEARTBEAT, DEFAULT_IDLE_TIMEOUT, DEFAULT_MAX_CONNECTIONS_PER_IP,
    DEFAULT_REQUEST_TIMEOUT, MAX_ADAPTIVE_STRETCH,
};
pub use libp2p::{Multiaddr, PeerId};
pub use node::{ClusterTrace, MissingNode, Node, NodeBuilder, NodeError, StartError, TracedNode, WaitedFor};
pub use secret::{load_secret, parse_secret, read_secret_file, secret_from_env, SecretError, SECRET_ENV};
pub use transport::bulk::LaneStats;
pub use transport::lanes::FastLaneStats;
pub use wire::envelope::{Resource, WireError};
pub use work::{
    ActorBuilder, ActorClass, ActorHandle, ActorRecordError, Arg, Args, Data, IntoArg, IntoArgs, Method, Registry,
    RemoteFn, TaskBuilder, DEFAULT_RESTART_TIMEOUT, INLINE_RESULT_BYTES, MAX_ACCEPTED_BYTES_PER_PEER,
    MAX_ACTORS_PER_PEER, MAX_BORROWS_PER_PEER, MAX_PARKED_BYTES_PER_PEER, MAX_PARKED_PER_PEER, MAX_WIRE_RETRIES,
};

/// Decoders and encoders of every byte format a peer can send, for the fuzz
/// targets (`fuzz/`) and the tests that run their corpora and send a node
/// malformed input. Not part of the API: present only with the `fuzzing`
/// feature.
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing {
    /// The envelope and the object-transfer and heartbeat messages.
    pub mod wire {
        pub use crate::wire::beat::{decode_beat, encode_beat, Beat};
        pub use crate::wire::envelope::{
            decode_heartbeat, decode_request, decode_response, encode_heartbeat, encode_request, encode_response,
            Heartbeat, Request, Resource, Response, WireError, CHUNK_BYTES, MAX_ADDRS, MAX_BATCH_IDS, MAX_DEPTH,
            MAX_DOWN, MAX_FETCH_LEN, MAX_HEARTBEAT_BYTES, MAX_REQUEST_BYTES, MAX_RESOURCES, MAX_RESOURCE_NAME_BYTES,
            MAX_RESPONSE_BYTES, RESOURCE_EPSILON, VERSION,
        };
    }
    /// Node-to-node mail.
    pub mod mail {
        pub use crate::transport::MAIL_PROTOCOL;
        pub use crate::wire::mail::{
            decode_ack, decode_batch, encode_ack, encode_batch, Ack, Batch, Completion, Mail, Opts, Refusal,
            RemoteError, Root, WireId, MAX_ACK_BYTES, MAX_ARGS_BYTES, MAX_BATCH_BYTES, MAX_BATCH_MAIL, MAX_CHAIN,
            MAX_IDS, MAX_NAME_BYTES, MAX_PREFETCH, MAX_TEXT_BYTES,
        };
    }
    /// The object protocol's framing.
    pub mod codec {
        pub use crate::wire::codec::{
            object_protocol, read_frames, Incoming, ObjectCodec, RawCodec, OBJECT_PROTOCOL, STEP_BYTES,
        };
    }
    /// The bulk lane's hello and sealed record stream.
    pub mod seal {
        pub use crate::wire::seal::{
            open_all, random_secret, seal_all, seal_records, Hello, HelloError, HelloKey, OpenReader, SealWriter,
            Secret, HELLO_BYTES, LANE_VERSION, LAST, MAC_BYTES, MAGIC, MESSAGE_LANE_VERSION, RECORD_BYTES, TAG_BYTES,
        };
    }
    /// The message lane's negotiation, sealed frames and messages.
    pub mod lane {
        pub use crate::wire::lane::{
            decode_answer, decode_ask, decode_msg, encode_answer, encode_ask, encode_msg, lane_keys, open_frames,
            seal_frames, LaneAnswer, LaneAsk, LaneMsg, Opener, Sealer, HEADER_BYTES, LANE_PROTOCOL, MAX_ANSWER_BYTES,
            MAX_ASK_BYTES, MAX_FRAMES_PER_KEY, MAX_FRAME_BYTES, MAX_LANE_IDS, TAG_BYTES,
        };
    }
    /// Plain CBOR values from peers: arguments, named-actor records.
    pub mod plain {
        pub use crate::wire::plain::{
            actor_name, actor_record_key, decode_actor_record, decode_args, decode_capped, encode_actor_record,
            encode_args, ActorRecord, ACTOR_KEY_PREFIX, MAX_ACTOR_RECORD_BYTES, MAX_ARGS_DEPTH,
        };
        /// Any CBOR value (a recursive type, for nesting tests).
        pub use ciborium::Value;
    }
    /// Signed vouchers for objects' content and signed named-actor records.
    pub mod signed {
        pub use crate::wire::signed::{
            decode_signed_record, decode_voucher, digest_of, encode_signed_record, encode_voucher, record_message,
            sign_record, sign_voucher, signer, verify_record, verify_voucher, voucher_message, Digest, Hasher,
            SignedError, SignedRecord, Voucher, MAX_KEY_BYTES, MAX_SIGNED_RECORD_BYTES, MAX_SIG_BYTES,
            MAX_VOUCHER_BYTES, RECORD_DOMAIN, VOUCHER_DOMAIN,
        };
    }
    /// Owner hints (a serialized ref's owner address).
    pub mod hint {
        pub use crate::wire::hint::{decode, encode, MAX_HINT_ADDRS};
    }
    /// Chunk replies read without copying their data.
    pub mod chunk {
        pub use crate::wire::chunk::{chunk_prefix, split_chunk};
    }
    /// Pages of a node's timeline (`Response::Timeline`).
    pub mod timeline {
        pub use crate::wire::timeline::{
            decode_page, encode_page, Kind, Page, WireEvent, MAX_COLLECTED_EVENTS, MAX_INPUTS, MAX_PAGE_BYTES,
            MAX_PAGE_EVENTS, MAX_TEXT_BYTES, MAX_THREADS,
        };
    }
    /// Per-peer shares of the DHT store and of the transfer byte budget.
    pub mod limits {
        pub use crate::cluster::dht_store::{
            MAX_FOREIGN_PROVIDER_RECORDS, MAX_PROVIDER_ADDRS, MAX_PROVIDER_ADDR_BYTES, MAX_PROVIDER_RECORDS_PER_PEER,
            MAX_RECORDS_PER_HOST,
        };
        pub use crate::transport::guard::{BUDGET_PER_PEER, BUDGET_TOTAL};
    }
}
