//! The `tracing` spans the README documents: a `manta.task` span per task
//! attempt, `manta.actor_call` per actor call and `manta.blocked` while a
//! worker waits in `get`, seen by a subscriber layer that records the names
//! of the spans entered.

use manta::Runtime;
use std::sync::{Arc, Mutex};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::Layer;

/// Records the name of every span created.
struct Names(Arc<Mutex<Vec<String>>>);

impl<S: tracing::Subscriber> Layer<S> for Names {
    fn on_new_span(&self, attrs: &tracing::span::Attributes<'_>, _: &tracing::span::Id, _: Context<'_, S>) {
        self.0.lock().unwrap().push(attrs.metadata().name().to_string());
    }
}

#[test]
fn tasks_actor_calls_and_blocked_gets_have_spans() {
    let names = Arc::new(Mutex::new(Vec::new()));
    let subscriber = tracing_subscriber::registry().with(Names(names.clone()));
    // Worker threads do not inherit a scoped default, so make it global
    // for this test binary (it runs only this test).
    tracing::subscriber::set_global_default(subscriber).expect("first subscriber");
    let rt = Runtime::builder().num_cpus(2).build().unwrap();
    // The inner task cannot finish before the test lets it, so the outer
    // one blocks in `get` (or runs it inline, after entering the wait).
    let (tx, rx) = crossbeam_channel::bounded::<u32>(1);
    let inner = rt.clone();
    let outer = rt.spawn(move || {
        let r = inner.spawn(move || rx.recv().unwrap());
        *r.get().unwrap() + 1
    });
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !names.lock().unwrap().iter().any(|n| n == "manta.blocked") {
        assert!(std::time::Instant::now() < deadline, "the outer task never blocked");
        std::thread::yield_now();
    }
    tx.send(20).unwrap();
    assert_eq!(*outer.get().unwrap(), 21);
    let counter = rt.actor(0u32);
    assert_eq!(
        *counter
            .call(|c| {
                *c += 1;
                *c
            })
            .get()
            .unwrap(),
        1
    );
    let seen = names.lock().unwrap().clone();
    for want in ["manta.task", "manta.actor_call"] {
        assert!(seen.iter().any(|n| n == want), "no {want} span in {seen:?}");
    }
}
