//! A raw client sends a node garbage, truncated, oversized and
//! wrong-version requests on the object protocol (after a real Noise +
//! yamux handshake, so the bytes reach manta's codec), and plain TCP
//! garbage to its port. Each bad request gets an `Invalid` reply (a
//! truncated one, whose sender has closed the stream, gets none); the node
//! stays up and answers the next good request. The same on the mail
//! protocol (remote work): bad batches get an `invalid` ack, unknown
//! functions are refused by name.

use futures::StreamExt;
use libp2p::request_response::{self as rr, ProtocolSupport};
use libp2p::swarm::SwarmEvent;
use libp2p::{Multiaddr, PeerId, Swarm};
use manta::Runtime;
use manta_p2p::fuzzing::codec::{object_protocol, RawCodec};
use manta_p2p::fuzzing::wire::{self, Request, Response};
use manta_p2p::Node;
use std::io::Write;
use std::time::Duration;

type Raw = rr::Behaviour<RawCodec>;

/// A raw client speaking `proto` (the object or the mail protocol).
fn raw_client(proto: libp2p::StreamProtocol) -> Swarm<Raw> {
    libp2p::SwarmBuilder::with_new_identity()
        .with_tokio()
        .with_tcp(libp2p::tcp::Config::default(), libp2p::noise::Config::new, libp2p::yamux::Config::default)
        .unwrap()
        .with_behaviour(|_| {
            rr::Behaviour::with_codec(
                RawCodec,
                [(proto, ProtocolSupport::Outbound)],
                rr::Config::default().with_request_timeout(Duration::from_secs(10)),
            )
        })
        .unwrap()
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(30)))
        .build()
}

/// Sends raw bytes and returns the decoded reply.
async fn ask(client: &mut Swarm<Raw>, peer: PeerId, bytes: Vec<u8>) -> Response {
    match try_ask(client, peer, bytes).await {
        Ok(r) => r,
        Err(e) => panic!("request failed: {e}"),
    }
}

/// Sends raw bytes; the decoded reply, or why there was none.
async fn try_ask(client: &mut Swarm<Raw>, peer: PeerId, bytes: Vec<u8>) -> Result<Response, String> {
    let reply = exchange(client, peer, bytes).await?;
    Ok(wire::decode_response(&reply).expect("the reply decodes"))
}

/// Sends raw bytes; the raw reply, or why there was none.
async fn exchange(client: &mut Swarm<Raw>, peer: PeerId, bytes: Vec<u8>) -> Result<Vec<u8>, String> {
    let id = client.behaviour_mut().send_request(&peer, bytes);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let ev = tokio::time::timeout_at(deadline, client.select_next_some()).await.expect("no reply within 20 s");
        match ev {
            SwarmEvent::Behaviour(rr::Event::Message {
                message: rr::Message::Response { request_id, response },
                ..
            }) if request_id == id => return Ok(response),
            SwarmEvent::Behaviour(rr::Event::OutboundFailure { request_id, error, .. }) if request_id == id => {
                return Err(error.to_string())
            }
            _ => {}
        }
    }
}

fn framed(body: &[u8]) -> Vec<u8> {
    let mut out = (body.len() as u32).to_be_bytes().to_vec();
    out.extend_from_slice(body);
    out
}

fn wrong_version(req: &Request) -> Vec<u8> {
    #[derive(serde::Serialize)]
    struct Envelope<'a> {
        v: u16,
        body: &'a Request,
    }
    let mut out = Vec::new();
    ciborium::into_writer(&Envelope { v: wire::VERSION + 98, body: req }, &mut out).unwrap();
    out
}

fn assert_invalid(r: Response, what: &str) {
    match r {
        Response::Invalid { reason } => eprintln!("{what}: Invalid({reason})"),
        other => panic!("{what}: expected Invalid, got {other:?}"),
    }
}

#[test]
fn bad_requests_get_error_replies_and_the_node_keeps_serving() {
    let rt = Runtime::builder().num_cpus(1).build().unwrap();
    let node = Node::builder(rt).listen("/ip4/127.0.0.1/tcp/0".parse().unwrap()).start().unwrap();
    let addr: Multiaddr = node.listen_addrs()[0].clone();
    let data: Vec<u8> = (0..10_000u32).map(|i| i as u8).collect();
    let obj = node.runtime().put(data.clone()).unwrap();
    let _wire = node.encode_ref(&obj).unwrap(); // exports it: the node now serves it
    let good = Request::Fetch { id: obj.id().to_bytes(), offset: 0, len: 1 << 20 };

    // Plain TCP garbage first: not even a libp2p handshake.
    let tcp_port = addr.iter().find_map(|p| match p {
        libp2p::multiaddr::Protocol::Tcp(port) => Some(port),
        _ => None,
    });
    let mut s = std::net::TcpStream::connect(("127.0.0.1", tcp_port.unwrap())).unwrap();
    let _ = s.write_all(&[0xde, 0xad, 0xbe, 0xef].repeat(1000));
    drop(s);

    let tokio_rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    tokio_rt.block_on(async {
        let mut client = raw_client(object_protocol());
        let peer = node.peer_id();
        client.dial(addr.clone()).unwrap();

        // Garbage inside a valid frame.
        assert_invalid(ask(&mut client, peer, framed(b"\xff\x00garbage\x13\x37")).await, "garbage");
        // A frame that claims more bytes than follow, then the end of the
        // stream; and only part of a length prefix. Nobody is left to
        // answer: the node closes the stream (no reply) and carries on.
        let mut truncated = framed(&wire::encode_request(&good));
        truncated.truncate(truncated.len() - 3);
        assert!(try_ask(&mut client, peer, truncated).await.is_err(), "truncated: no reply");
        assert!(try_ask(&mut client, peer, vec![0, 0]).await.is_err(), "short prefix: no reply");
        // A frame over the request cap (its body is never read).
        let mut oversized = (u32::MAX).to_be_bytes().to_vec();
        oversized.extend_from_slice(&[0u8; 1024]);
        assert_invalid(ask(&mut client, peer, oversized).await, "oversized");
        // Another wire version.
        assert_invalid(ask(&mut client, peer, framed(&wrong_version(&good))).await, "wrong version");
        // A well-formed request with an out-of-range field.
        let zero = Request::Fetch { id: obj.id().to_bytes(), offset: 0, len: 0 };
        assert_invalid(ask(&mut client, peer, framed(&wire::encode_request(&zero))).await, "len 0");
        // An offset past the end of the object.
        let past = Request::Fetch { id: obj.id().to_bytes(), offset: 1 << 40, len: 10 };
        assert_invalid(ask(&mut client, peer, framed(&wire::encode_request(&past))).await, "offset past end");
        // An object the node does not have.
        let unknown = Request::Fetch { id: [7; 16], offset: 0, len: 10 };
        assert_eq!(ask(&mut client, peer, framed(&wire::encode_request(&unknown))).await, Response::NotFound);

        // After all that, a good request is answered.
        match ask(&mut client, peer, framed(&wire::encode_request(&good))).await {
            Response::Chunk { total, offset, data: chunk } => {
                assert_eq!(offset, 0);
                assert_eq!(total as usize, chunk.len());
                let back: serde_bytes::ByteBuf = ciborium::from_reader(&chunk[..]).unwrap();
                assert_eq!(back.into_vec(), data);
            }
            other => panic!("good request: {other:?}"),
        }
    });
    let status = node.cluster_status().unwrap();
    assert_eq!(status.len(), 1, "the node is up and alone");
}

/// Sends raw bytes on the mail protocol; the decoded ack.
async fn ask_mail(client: &mut Swarm<Raw>, peer: PeerId, bytes: Vec<u8>) -> manta_p2p::fuzzing::mail::Ack {
    let reply = exchange(client, peer, bytes).await.unwrap_or_else(|e| panic!("mail request failed: {e}"));
    manta_p2p::fuzzing::mail::decode_ack(&reply).expect("the ack decodes")
}

#[test]
fn bad_mail_gets_invalid_acks_and_unknown_work_is_refused() {
    use manta_p2p::fuzzing::mail::{encode_batch, Batch, Mail, Opts, Refusal, Root};
    let rt = Runtime::builder().num_cpus(1).build().unwrap();
    let node = Node::builder(rt).listen("/ip4/127.0.0.1/tcp/0".parse().unwrap()).start().unwrap();
    let addr: Multiaddr = node.listen_addrs()[0].clone();
    let tokio_rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    tokio_rt.block_on(async {
        let mut client = raw_client(libp2p::StreamProtocol::new(manta_p2p::fuzzing::mail::MAIL_PROTOCOL));
        let peer = node.peer_id();
        client.dial(addr.clone()).unwrap();
        let invalid = |a: manta_p2p::fuzzing::mail::Ack, what: &str| {
            let why = a.invalid.unwrap_or_else(|| panic!("{what}: expected an invalid ack"));
            eprintln!("{what}: invalid ({why})");
        };
        invalid(ask_mail(&mut client, peer, framed(b"\xff\x00garbage")).await, "garbage");
        let negative = Batch(vec![Mail::Submit {
            id: [1; 16],
            func: "f".into(),
            args: vec![],
            opts: Opts { cpus: -1.0, ..Opts::default() },
        }]);
        invalid(ask_mail(&mut client, peer, framed(&encode_batch(&negative))).await, "negative cpus");
        let mut oversized = (u32::MAX).to_be_bytes().to_vec();
        oversized.extend_from_slice(&[0u8; 64]);
        invalid(ask_mail(&mut client, peer, oversized).await, "oversized");

        // A well-formed batch: an empty borrow is fine, an unknown function
        // is refused by name.
        let batch = Batch(vec![
            Mail::Borrow(vec![]),
            Mail::Submit { id: [2; 16], func: "nope".into(), args: vec![0x80], opts: Opts::default() },
        ]);
        let ack = ask_mail(&mut client, peer, framed(&encode_batch(&batch))).await;
        assert_eq!(ack.invalid, None);
        match &ack.refused[..] {
            [(1, Refusal::Refused(e))] => {
                assert!(matches!(&e.root, Root::UnknownFunction { name, .. } if name == "nope"), "{e:?}")
            }
            other => panic!("expected the submission refused, got {other:?}"),
        }
    });
    assert_eq!(node.cluster_status().unwrap().len(), 1, "the node is up");
}
