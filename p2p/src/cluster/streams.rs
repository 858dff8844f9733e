//! [`StreamControl`]: the transport layer's way to open and accept streams
//! (`transport::Streams`), over the swarm's libp2p-stream control.
//!
//! Invariant: the control never leaves this type; the event loop makes the
//! one `StreamControl` of a node from its own swarm, and nothing else can
//! reach the swarm's stream behaviour.

use crate::transport::Streams;
use futures::future::BoxFuture;
use libp2p::{PeerId, Stream, StreamProtocol};
use libp2p_stream::{AlreadyRegistered, Control, IncomingStreams, OpenStreamError};

/// Opens and accepts the node's streams.
pub(crate) struct StreamControl {
    control: Control,
}

impl StreamControl {
    /// Wraps the swarm's control (made by the event loop).
    pub(super) fn new(control: Control) -> StreamControl {
        StreamControl { control }
    }
}

impl Streams for StreamControl {
    fn open(&self, peer: PeerId, protocol: StreamProtocol) -> BoxFuture<'static, Result<Stream, OpenStreamError>> {
        // A clone per open: each has its own slot in the behaviour's queue.
        let mut control = self.control.clone();
        Box::pin(async move { control.open_stream(peer, protocol).await })
    }

    fn accept(&self, protocol: StreamProtocol) -> Result<IncomingStreams, AlreadyRegistered> {
        self.control.clone().accept(protocol)
    }
}
