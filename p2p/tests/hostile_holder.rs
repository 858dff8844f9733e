//! Attacks by a *holder*: the raw libp2p client of `hostile_client/`
//! serving manta's object protocol itself, named as an object's owner in a
//! forged ref, against a node that reads that ref (issue 15: "`Busy`
//! answers are retried with backoff and a limit, then fail with a typed
//! error").
//!
//! | attack (before) | now |
//! | --- | --- |
//! | a holder answering `Busy` at once, forever: `pull` asked again in a tight loop and `get` never returned | quick `Busy` answers are asked again after a doubling pause, at most 8 times; then the holder is given up and `get` fails with a typed error ([`a_holder_answering_busy_forever_is_given_up`]) |
//!
//! Invariants: only 127.0.0.1 is used; every client call is bounded by
//! `hostile_client::CALL`; the raw server's task ends with the test.

#[allow(dead_code)]
mod hostile_client;

use futures::{AsyncReadExt, AsyncWriteExt, StreamExt};
use hostile_client::{framed, Client};
use libp2p::StreamProtocol;
use manta::{Error, ObjectId, Runtime};
use manta_p2p::fuzzing::hint;
use manta_p2p::fuzzing::wire::{decode_request, encode_response, Request, Response, MAX_REQUEST_BYTES};
use manta_p2p::Node;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const OBJECT: &str = "/manta/object/1";

/// A ref's serde form (`manta::backend::wire_ref`): the id and the owner
/// hint, as a node's `encode_ref` writes it.
#[derive(serde::Serialize)]
struct WireRef {
    id: ObjectId,
    #[serde(with = "serde_bytes")]
    owner: Vec<u8>,
}

/// Serves the object protocol on `c`: every request is answered by
/// `answer`; `asked` counts the requests. Runs until the test ends.
fn serve(c: &Client, asked: Arc<AtomicUsize>, answer: fn(&Request) -> Response) {
    let mut incoming = c.control.clone().accept(StreamProtocol::new(OBJECT)).expect("accept the object protocol");
    tokio::spawn(async move {
        while let Some((_, mut s)) = incoming.next().await {
            let asked = asked.clone();
            tokio::spawn(async move {
                loop {
                    let mut prefix = [0u8; 4];
                    if s.read_exact(&mut prefix).await.is_err() {
                        return;
                    }
                    let len = u32::from_be_bytes(prefix) as usize;
                    if len > MAX_REQUEST_BYTES {
                        return;
                    }
                    let mut body = vec![0u8; len];
                    if s.read_exact(&mut body).await.is_err() {
                        return;
                    }
                    let Ok(req) = decode_request(&body) else { return };
                    asked.fetch_add(1, Ordering::SeqCst);
                    let reply = framed(&encode_response(&answer(&req)));
                    if s.write_all(&reply).await.is_err() || s.flush().await.is_err() {
                        return;
                    }
                }
            });
        }
    });
}

#[test]
fn a_holder_answering_busy_forever_is_given_up() {
    let rt = Runtime::builder().num_cpus(1).build().expect("runtime");
    let n = Node::builder(rt)
        .listen("/ip4/127.0.0.1/tcp/0".parse().expect("addr"))
        .heartbeat(Duration::from_millis(100))
        .start()
        .expect("node starts");
    let tokio = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("tokio");
    let asked = Arc::new(AtomicUsize::new(0));
    let liar = tokio.block_on(async {
        let c = Client::start(hostile_client::swarm(None));
        serve(&c, asked.clone(), |_| Response::Busy);
        c.dial(&n.listen_addrs()[0]).await.expect("the holder connects");
        c
    });
    // A ref that names the raw client as the owner of an object nobody
    // else holds.
    let mut bytes = Vec::new();
    let forged = WireRef { id: ObjectId::from_bytes([0x5a; 16]), owner: hint::encode(&liar.peer, &[]) };
    ciborium::into_writer(&forged, &mut bytes).expect("encode");
    let r = n.decode_ref::<Vec<u8>>(&bytes).expect("the ref decodes");

    let t = Instant::now();
    let got = r.get_timeout(Duration::from_secs(60));
    let took = t.elapsed();
    let asked = asked.load(Ordering::SeqCst);
    eprintln!("busy holder: {asked} requests in {took:?}: {got:?}");
    match got {
        Err(Error::PeerUnreachable { reason, .. }) => assert!(reason.contains("busy"), "{reason}"),
        // (`Timeout` here would mean the holder was never given up.)
        other => panic!("expected PeerUnreachable naming busy, got {other:?}"),
    }
    // One batched small-object request, then two tries of the holder (an
    // unreachable one gets one more), each at most 1 + 8 requests; before,
    // a request loop until the get's timeout.
    assert!(asked <= 1 + 2 * 9, "{asked} requests");
    drop(liar);
    n.shutdown();
}
