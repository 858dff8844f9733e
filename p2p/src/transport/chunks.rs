//! The decoder side of a pull in chunks: [`ChunkReader`] reads the chunks
//! the fetch task receives, in order, as one byte stream, on the decoder's
//! blocking thread, hashing them when the pull must be checked against a
//! voucher.
//!
//! Invariant: the reader returns the chunks' bytes in the order they were
//! sent, each once; an [`Interrupted`] item ends the stream with an error
//! (the pull reports the real reason).

use super::rpc::ChunkBytes;
use crate::wire::signed::{Digest, Hasher};
use tokio::sync::mpsc;

/// Fed to the chunk decoder instead of a chunk when the transfer broke
/// (the pull reports the real reason).
#[derive(Debug, thiserror::Error)]
#[error("the transfer was interrupted")]
pub(crate) struct Interrupted;

/// Reads the chunks of one pull, in order, on the decoder thread (hashing
/// them if the pull is checked).
pub(crate) struct ChunkReader {
    rx: mpsc::Receiver<Result<ChunkBytes, Interrupted>>,
    data: ChunkBytes,
    pos: usize,
    hasher: Option<Hasher>,
}

impl ChunkReader {
    /// A reader of the chunks coming on `rx`, hashed into `hasher` if any.
    pub(crate) fn new(rx: mpsc::Receiver<Result<ChunkBytes, Interrupted>>, hasher: Option<Hasher>) -> ChunkReader {
        ChunkReader { rx, data: ChunkBytes { buf: Vec::new(), start: 0 }, pos: 0, hasher }
    }

    /// The digest of every byte of the pull (what the decoder left unread
    /// too), if it is hashed; `None` also if the rest could not be read.
    pub(crate) fn digest(&mut self) -> Option<Digest> {
        self.hasher.as_ref()?;
        std::io::copy(self, &mut std::io::sink()).ok()?;
        self.hasher.take().map(Hasher::finish)
    }
}

impl std::io::Read for ChunkReader {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        while self.pos == self.data.bytes().len() {
            match self.rx.blocking_recv() {
                Some(Ok(data)) => {
                    self.data = data;
                    self.pos = 0;
                }
                Some(Err(e)) => return Err(std::io::Error::other(e)),
                None => return Ok(0), // every byte was sent
            }
        }
        let src = &self.data.bytes()[self.pos..];
        let n = out.len().min(src.len());
        out[..n].copy_from_slice(&src[..n]);
        if let Some(h) = &mut self.hasher {
            h.update(&src[..n]);
        }
        self.pos += n;
        Ok(n)
    }
}
