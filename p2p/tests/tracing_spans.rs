//! The `tracing` spans and debug lines the README documents for clusters
//! (`RUST_LOG=manta_p2p=debug` / `=trace`), seen by a subscriber layer
//! that records the names of the spans created and the messages of the
//! events, both of target `manta_p2p` only: a remote task placed by its
//! resources, a remote actor call, and a remote `get` of a 1 MiB result
//! over the bulk lane and (from a node without a lane) in chunks. Nodes
//! are in this process, on 127.0.0.1, joined by bootstrap (no mDNS).

use manta::Runtime;
use manta_p2p::{ActorClass, Method, Node, Registry, RemoteFn};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::Layer;

const WAIT: Duration = Duration::from_secs(10);

/// Bigger than the 256 KiB a fetch takes in its first reply.
const BIG: usize = 1 << 20;

static WHO: RemoteFn<(), String> = RemoteFn::new("who", |()| Node::current().expect("on a node").peer_id().to_string());
static MAKE: RemoteFn<(usize,), Vec<u8>> = RemoteFn::new("make", |(n,)| (0..n).map(|i| (i % 251) as u8).collect());

struct Counter(i64);
static COUNTER: ActorClass<(), Counter> = ActorClass::new("Counter", |()| Counter(0));
static INCREMENT: Method<Counter, (), i64> = Method::new("Counter.increment", |c, ()| {
    c.0 += 1;
    c.0
});

/// What the layer saw: span names, and event messages.
#[derive(Default)]
struct Seen {
    spans: Vec<String>,
    events: Vec<String>,
}

struct Record(Arc<Mutex<Seen>>);

/// The `message` field of an event.
struct Message(String);

impl tracing::field::Visit for Message {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            self.0 = format!("{value:?}");
        }
    }
}

impl<S: tracing::Subscriber> Layer<S> for Record {
    fn on_new_span(&self, attrs: &tracing::span::Attributes<'_>, _: &tracing::span::Id, _: Context<'_, S>) {
        self.0.lock().unwrap().spans.push(attrs.metadata().name().to_string());
    }

    fn on_event(&self, event: &tracing::Event<'_>, _: Context<'_, S>) {
        let mut m = Message(String::new());
        event.record(&mut m);
        self.0.lock().unwrap().events.push(m.0);
    }
}

fn registry() -> Registry {
    Registry::new().function(&WHO).function(&MAKE).actor(&COUNTER).method(&INCREMENT)
}

fn node(bootstrap: Option<&Node>, gpu: bool, bulk: bool) -> Node {
    let mut rt = Runtime::builder().num_cpus(1);
    if gpu {
        rt = rt.resource("GPU", 1.0);
    }
    let mut b = Node::builder(rt.build().unwrap())
        .listen("/ip4/127.0.0.1/tcp/0".parse().unwrap())
        .mdns(false)
        .heartbeat(Duration::from_millis(100))
        .bulk_lane(bulk)
        .registry(registry());
    if let Some(n) = bootstrap {
        b = b.bootstrap(n.listen_addrs()[0].clone());
    }
    b.start().unwrap()
}

/// Waits (bounded) until every name in `spans` was a span and every
/// message in `events` an event; panics naming what is missing.
fn wait_for(seen: &Mutex<Seen>, spans: &[&str], events: &[&str]) {
    let deadline = Instant::now() + WAIT;
    loop {
        let missing: Vec<&str> = {
            let s = seen.lock().unwrap();
            let no_span = spans.iter().filter(|w| !s.spans.iter().any(|n| n == *w));
            let no_event = events.iter().filter(|w| !s.events.iter().any(|m| m == *w));
            no_span.chain(no_event).copied().collect()
        };
        if missing.is_empty() {
            return;
        }
        assert!(Instant::now() < deadline, "never seen: {missing:?}; spans: {:?}", seen.lock().unwrap().spans);
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn remote_tasks_calls_and_transfers_have_spans_and_debug_lines() {
    let seen = Arc::new(Mutex::new(Seen::default()));
    let only_p2p = Targets::new().with_target("manta_p2p", tracing::Level::TRACE);
    let subscriber = tracing_subscriber::registry().with(Record(seen.clone()).with_filter(only_p2p));
    // Node threads (tokio's, the runtimes' workers) do not inherit a
    // scoped default, so make it global for this test binary (it runs
    // only this test).
    tracing::subscriber::set_global_default(subscriber).expect("first subscriber");

    let a = node(None, false, true);
    let b = node(Some(&a), true, true);
    for n in [&a, &b] {
        n.wait_for_peers(1, WAIT).unwrap();
    }
    wait_for(&seen, &[], &["membership change", "connection established"]);

    // Only B has a GPU: placement sends it there, and says why.
    let who = a.task(&WHO).resource("GPU", 1.0).spawn(());
    assert_eq!(*who.get().unwrap(), b.peer_id().to_string());
    wait_for(&seen, &["manta_p2p.submit", "manta_p2p.run_task"], &["placed on a peer", "task sent", "ran remote task"]);

    // An actor on B called from A.
    let counter = a.actor_builder(&COUNTER).on(b.peer_id()).spawn(());
    assert_eq!(*counter.call(&INCREMENT, ()).get().unwrap(), 1);
    wait_for(&seen, &["manta_p2p.call", "manta_p2p.run_call"], &["actor call sent", "ran remote call"]);

    // A 1 MiB result stays on B; A's get takes the first 256 KiB in a
    // chunk and the rest over B's bulk lane.
    let big = a.task(&MAKE).on(b.peer_id()).spawn((BIG,));
    assert_eq!(big.get().unwrap().len(), BIG);
    wait_for(
        &seen,
        &["manta_p2p.fetch", "manta_p2p.serve_chunk", "manta_p2p.bulk_recv", "manta_p2p.bulk_send"],
        &["fetched over the bulk lane", "sent over the bulk lane"],
    );

    // From a node without a bulk lane, the rest comes in chunks.
    let c = node(Some(&a), false, false);
    c.wait_for_peers(2, WAIT).unwrap();
    a.wait_for_peers(2, WAIT).unwrap();
    let chunked = a.task(&MAKE).on(c.peer_id()).spawn((BIG,));
    assert_eq!(chunked.get().unwrap().len(), BIG);
    wait_for(&seen, &["manta_p2p.chunks_recv"], &["fetched in chunks"]);

    for n in [&c, &b, &a] {
        n.shutdown();
    }
}
