//! Serving an exported object's bytes to a peer: its CBOR encoding, or a
//! window of it, written as the encoder produces it (one encoding pass,
//! one copy of the window).

use super::cluster::{link_of, Cluster};
use crate::cell::Link;
use crate::error::Error;
use crate::id::ObjectId;
use std::io::Write;
use std::sync::Arc;
/// What [`Backend::serve_object`](super::Backend::serve_object) found.
#[derive(Debug)]
pub enum Served {
    /// Bytes `[offset, offset + data.len())` of the object's CBOR encoding,
    /// which is `total` bytes long.
    Chunk {
        /// Length of the whole encoding.
        total: u64,
        /// The requested window (shorter at the end).
        data: Vec<u8>,
    },
    /// This runtime does not hold the object.
    NotFound,
    /// The object is here but not done yet (its task is running): wait
    /// with [`Backend::object_done`](super::Backend::object_done) and ask again.
    Pending,
    /// The object failed: its error.
    Failed(Error),
}

/// A writer that passes on only the window `[start, end)` of what goes
/// through it and counts the rest (`pos` ends as the encoding's length).
struct Window<W: Write> {
    pos: u64,
    start: u64,
    end: u64,
    out: W,
}

impl<W: Write> Write for Window<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let (b0, b1) = (self.pos, self.pos + buf.len() as u64);
        let (lo, hi) = (b0.max(self.start), b1.min(self.end));
        if lo < hi {
            self.out.write_all(&buf[(lo - b0) as usize..(hi - b0) as usize])?;
        }
        self.pos = b1;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.out.flush()
    }
}

/// Bytes `[offset, offset + max_len)` of `id`'s encoding (see
/// `Backend::serve_object`).
pub(super) fn serve_window(cluster: &Arc<Cluster>, id: ObjectId, offset: u64, max_len: usize) -> Served {
    let mut data = Vec::new();
    let end = offset.saturating_add(max_len as u64);
    let mut w = Window { pos: 0, start: offset, end, out: &mut data };
    match write_from(cluster, id, 0, &mut w) {
        Ok(total) => Served::Chunk { total, data },
        Err(why) => why,
    }
}

/// `id`'s encoding from byte `skip` on (see `Backend::write_object`).
pub(super) fn write_from(cluster: &Arc<Cluster>, id: ObjectId, skip: u64, out: &mut dyn Write) -> Result<u64, Served> {
    let Some((cell, encode)) = cluster.lookup(id) else { return Err(Served::NotFound) };
    if !cell.slot.is_done() {
        return Err(if link_of(&cell).is_some_and(|l| l.is_remote()) { Served::NotFound } else { Served::Pending });
    }
    let value = match cell.read_value() {
        None => return Err(Served::Pending),
        Some(Err(e)) => return Err(Served::Failed(e)),
        Some(Ok(v)) => v,
    };
    let mut w = Window { pos: 0, start: skip, end: u64::MAX, out };
    if let Err(message) = encode(&*value.data, &mut w).and_then(|()| w.flush().map_err(|e| e.to_string())) {
        return Err(Served::Failed(super::encode_failed(id, &message)));
    }
    Ok(w.pos)
}
