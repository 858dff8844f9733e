//! The wire format of node-to-node work: task submissions, completions,
//! actor creation and calls, and the borrow/release notices of cluster-wide
//! reference counting.
//!
//! Messages ([`Mail`]) travel in batches ([`Batch`]) on one long-lived
//! stream per ordered pair of nodes (`transport::outbox`), each batch answered by an
//! [`Ack`] that lists the submissions refused (busy, or unknown function).
//! Batches are versioned envelopes like every manta-p2p message (`envelope`),
//! capped at [`MAX_BATCH_BYTES`]; names at [`MAX_NAME_BYTES`]; argument
//! bytes at [`MAX_ARGS_BYTES`]. Errors travel as [`RemoteError`]: a flat
//! value (a dependency chain is a list, not nested), so decoding never
//! recurses more than the envelope's depth cap allows.
//!
//! Invariant: `decode_batch` / `decode_ack` never panic and allocate at most
//! a small multiple of their (capped) input: every list is capped while it
//! is parsed (`CappedSeq`), not after; every decoded value passes its
//! `validate` (finite amounts, so a decoded message always equals itself).

use crate::wire::{self, CappedSeq, WireError};
use manta::{Cause, Error, ObjectId};
use serde::{Deserialize, Deserializer, Serialize};

/// Cap on an encoded [`Batch`].
pub const MAX_BATCH_BYTES: usize = 16 << 20;
/// Cap on an encoded [`Ack`].
pub const MAX_ACK_BYTES: usize = 1 << 20;
/// Cap on one message's argument (or inline result) bytes.
pub const MAX_ARGS_BYTES: usize = 8 << 20;
/// Cap on function, actor, method, task and resource names.
pub const MAX_NAME_BYTES: usize = 256;
/// Most tasks of a dependency chain an error carries.
pub const MAX_CHAIN: usize = 64;
/// Most messages in a batch (and refusals in an ack).
pub const MAX_BATCH_MAIL: usize = 2048;
/// Most ids in one `Borrow` or `Release`.
pub const MAX_IDS: usize = 4096;
/// Longest text in an error (messages, reasons, names).
pub const MAX_TEXT_BYTES: usize = 64 << 10;

fn de_resources<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<(String, f64)>, D::Error> {
    d.deserialize_seq(CappedSeq::new(wire::MAX_RESOURCES, "resources"))
}

fn de_prefetch<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<serde_bytes::ByteArray<16>>, D::Error> {
    d.deserialize_seq(CappedSeq::new(MAX_PREFETCH, "ids to prefetch"))
}

fn de_chain<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    d.deserialize_seq(CappedSeq::new(MAX_CHAIN, "tasks in an error chain"))
}

fn de_mail<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Mail>, D::Error> {
    d.deserialize_seq(CappedSeq::new(MAX_BATCH_MAIL, "messages"))
}

fn de_ids<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<serde_bytes::ByteArray<16>>, D::Error> {
    d.deserialize_seq(CappedSeq::new(MAX_IDS, "ids"))
}

fn de_acks<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Ack>, D::Error> {
    d.deserialize_seq(CappedSeq::new(MAX_BATCH_MAIL, "acks"))
}

fn de_refused<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<(u32, Refusal)>, D::Error> {
    d.deserialize_seq(CappedSeq::new(MAX_BATCH_MAIL, "refusals"))
}

/// A 16-byte object (or actor) id as a CBOR byte string.
pub type WireId = [u8; 16];

/// Task options as they travel.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Opts {
    /// CPUs the task holds while running.
    pub cpus: f64,
    /// Custom resources: name and amount.
    #[serde(deserialize_with = "de_resources")]
    pub resources: Vec<(String, f64)>,
    /// Retries after a panic.
    pub retries: u32,
    /// The task's name (errors name it).
    pub name: Option<String>,
    /// Small objects the arguments hold refs to inside values (a
    /// `Vec<ObjectRef<T>>`): the node that runs the task fetches them at
    /// once, together, instead of one at a time as the task reads them.
    /// At most [`MAX_PREFETCH`]; absent when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty", deserialize_with = "de_prefetch")]
    pub prefetch: Vec<serde_bytes::ByteArray<16>>,
}

/// Most ids in [`Opts::prefetch`].
pub const MAX_PREFETCH: usize = 1024;

/// How a task or call ended, as its completion carries it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Completion {
    /// The result's CBOR encoding (at most `INLINE_RESULT_BYTES`).
    Inline(#[serde(with = "serde_bytes")] Vec<u8>),
    /// The result stays on the node that made it (and is read from there);
    /// its size in bytes.
    Stays(u64),
    /// The task failed.
    Failed(RemoteError),
}

/// One message between nodes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Mail {
    /// Run registered function `func` on `args`; the result gets id `id`.
    Submit {
        /// The result's id (chosen by the submitter).
        #[serde(with = "serde_bytes")]
        id: WireId,
        /// The registered function's name.
        func: String,
        /// The CBOR-encoded argument tuple (values and refs).
        #[serde(with = "serde_bytes")]
        args: Vec<u8>,
        /// Its options.
        opts: Opts,
    },
    /// Task or call `id`, submitted by the receiver, ended.
    Done {
        /// The result's id.
        #[serde(with = "serde_bytes")]
        id: WireId,
        /// How it ended.
        outcome: Completion,
    },
    /// The sender now holds refs to these objects owned by the receiver
    /// (one count each).
    Borrow(#[serde(deserialize_with = "de_ids")] Vec<serde_bytes::ByteArray<16>>),
    /// The sender dropped its refs to these objects (one count each).
    Release(#[serde(deserialize_with = "de_ids")] Vec<serde_bytes::ByteArray<16>>),
    /// Create an actor of registered type `class` from `args` (plain values).
    NewActor {
        /// The actor's id (chosen by the creator).
        #[serde(with = "serde_bytes")]
        actor: WireId,
        /// The registered actor type.
        class: String,
        /// The CBOR-encoded constructor arguments.
        #[serde(with = "serde_bytes")]
        args: Vec<u8>,
        /// Resources (held by the actor) and restarts (`retries`).
        opts: Opts,
    },
    /// Call registered method `method` on actor `actor`; result id `id`.
    Call {
        /// The actor.
        #[serde(with = "serde_bytes")]
        actor: WireId,
        /// The registered method's name.
        method: String,
        /// The CBOR-encoded argument tuple.
        #[serde(with = "serde_bytes")]
        args: Vec<u8>,
        /// The result's id (chosen by the caller).
        #[serde(with = "serde_bytes")]
        id: WireId,
    },
    /// The sender's handles to actor `actor` are all gone.
    DropActor(#[serde(with = "serde_bytes")] WireId),
    /// The number the receiver acks this batch under ([`Ack::seq`]); it may
    /// then hold the ack back to send it with its own next batch (see
    /// `outbox`). A batch without one is acked at once, on its own stream,
    /// with seq 0. At most one per batch. Handled by the outbox, never
    /// applied.
    Seq(u64),
    /// Acks of batches the receiver sent the sender, riding on this batch.
    /// Handled by the outbox, never applied.
    Acked(#[serde(deserialize_with = "de_acks")] Vec<Ack>),
}

/// A batch of messages, delivered and applied in order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Batch(#[serde(deserialize_with = "de_mail")] pub Vec<Mail>);

/// Why a submission in a batch was not taken.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Refusal {
    /// The receiver's queue of work from peers is full: try elsewhere.
    Busy,
    /// The receiver cannot run it (unknown function, bad arguments).
    Refused(RemoteError),
}

/// The answer to a [`Batch`]: the refused submissions by index.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Ack {
    /// The [`Mail::Seq`] of the batch answered; 0 for a batch without one
    /// (or one that did not decode). Not written when 0.
    #[serde(default, skip_serializing_if = "super::is_zero")]
    pub seq: u64,
    /// `(index in the batch, why)`.
    #[serde(deserialize_with = "de_refused")]
    pub refused: Vec<(u32, Refusal)>,
    /// Set if the whole batch was rejected as malformed (nothing applied).
    pub invalid: Option<String>,
}

/// A manta [`Error`] as it travels.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RemoteError {
    /// Tasks that did not run because of the root failure, outermost first.
    #[serde(deserialize_with = "de_chain")]
    pub chain: Vec<String>,
    /// The failure itself.
    pub root: Root,
}

/// The root failure of a [`RemoteError`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Root {
    /// A task panicked.
    Panicked {
        /// The task.
        task: String,
        /// The panic's message.
        message: String,
    },
    /// A task was cancelled.
    Cancelled {
        /// The task.
        task: String,
    },
    /// A task needed more of a resource than any node has.
    Infeasible {
        /// The task.
        task: String,
        /// The resource.
        resource: String,
        /// How much it asked for.
        requested: f64,
        /// The most any node has.
        total: f64,
    },
    /// An actor is dead.
    ActorDead {
        /// The actor.
        actor: String,
        /// Why.
        reason: String,
    },
    /// An object is gone.
    ObjectLost {
        /// The object.
        #[serde(with = "serde_bytes")]
        id: WireId,
        /// Why.
        reason: String,
    },
    /// A store was full.
    StoreFull {
        /// Bytes needed.
        needed: u64,
        /// The store's capacity.
        capacity: u64,
    },
    /// A peer could not be reached.
    PeerUnreachable {
        /// The object that was wanted.
        #[serde(with = "serde_bytes")]
        id: WireId,
        /// Why.
        reason: String,
    },
    /// A name was not registered.
    UnknownFunction {
        /// The name.
        name: String,
        /// Where, or why.
        reason: String,
    },
    /// An object's owner died with it.
    OwnerDied {
        /// The object.
        #[serde(with = "serde_bytes")]
        id: WireId,
        /// The owner's peer id, as text.
        owner: String,
    },
    /// No holder served content its owner vouches for.
    Unverified {
        /// The object.
        #[serde(with = "serde_bytes")]
        id: WireId,
        /// Why.
        reason: String,
    },
    /// Anything else, as text.
    Other(String),
}

impl From<&Error> for RemoteError {
    fn from(e: &Error) -> RemoteError {
        let mut chain = Vec::new();
        let mut cur = e;
        while let Error::DependencyFailed { task, cause } = cur {
            if chain.len() < MAX_CHAIN {
                chain.push(task.to_string());
            }
            cur = cause;
        }
        let root = match cur {
            Error::TaskPanicked { task, message } => {
                Root::Panicked { task: task.to_string(), message: message.to_string() }
            }
            Error::Cancelled { task } => Root::Cancelled { task: task.to_string() },
            Error::Infeasible { task, resource, requested, total } => Root::Infeasible {
                task: task.to_string(),
                resource: resource.to_string(),
                requested: *requested,
                total: *total,
            },
            Error::ActorDead { actor, reason } => {
                Root::ActorDead { actor: actor.to_string(), reason: reason.to_string() }
            }
            Error::ObjectLost { id, reason } => Root::ObjectLost { id: id.to_bytes(), reason: reason.to_string() },
            Error::StoreFull { needed, capacity } => {
                Root::StoreFull { needed: *needed as u64, capacity: *capacity as u64 }
            }
            Error::PeerUnreachable { id, reason } => {
                Root::PeerUnreachable { id: id.to_bytes(), reason: reason.to_string() }
            }
            Error::UnknownFunction { name, reason } => {
                Root::UnknownFunction { name: name.to_string(), reason: reason.to_string() }
            }
            Error::OwnerDied { id, owner } => Root::OwnerDied { id: id.to_bytes(), owner: owner.to_string() },
            Error::Unverified { id, reason } => Root::Unverified { id: id.to_bytes(), reason: reason.to_string() },
            other => Root::Other(other.to_string()),
        };
        RemoteError { chain, root }
    }
}

impl From<RemoteError> for Error {
    fn from(r: RemoteError) -> Error {
        let mut e = match r.root {
            Root::Panicked { task, message } => Error::TaskPanicked { task: task.into(), message: message.into() },
            Root::Cancelled { task } => Error::Cancelled { task: task.into() },
            Root::Infeasible { task, resource, requested, total } => {
                Error::Infeasible { task: task.into(), resource: resource.into(), requested, total }
            }
            Root::ActorDead { actor, reason } => Error::ActorDead { actor: actor.into(), reason: reason.into() },
            Root::ObjectLost { id, reason } => {
                Error::ObjectLost { id: ObjectId::from_bytes(id), reason: reason.into() }
            }
            Root::StoreFull { needed, capacity } => {
                Error::StoreFull { needed: needed as usize, capacity: capacity as usize }
            }
            Root::PeerUnreachable { id, reason } => {
                Error::PeerUnreachable { id: ObjectId::from_bytes(id), reason: reason.into() }
            }
            Root::UnknownFunction { name, reason } => {
                Error::UnknownFunction { name: name.into(), reason: reason.into() }
            }
            Root::OwnerDied { id, owner } => Error::OwnerDied { id: ObjectId::from_bytes(id), owner: owner.into() },
            Root::Unverified { id, reason } => {
                Error::Unverified { id: ObjectId::from_bytes(id), reason: reason.into() }
            }
            Root::Other(text) => Error::InvalidArgument(text.into()),
        };
        for task in r.chain.into_iter().rev() {
            e = Error::DependencyFailed { task: task.into(), cause: Cause::new(e) };
        }
        e
    }
}

fn too_long(what: &str, len: usize, max: usize) -> WireError {
    WireError::Malformed(format!("{what} of {len} bytes exceeds {max}"))
}

fn check_name(what: &str, s: &str) -> Result<(), WireError> {
    if s.len() > MAX_NAME_BYTES {
        return Err(too_long(what, s.len(), MAX_NAME_BYTES));
    }
    Ok(())
}

impl RemoteError {
    /// Checks text lengths and amounts (the decoders enforce this).
    pub fn validate(&self) -> Result<(), WireError> {
        if self.chain.len() > MAX_CHAIN {
            return Err(WireError::Malformed(format!("error chain of {} tasks exceeds {MAX_CHAIN}", self.chain.len())));
        }
        let texts: Vec<&str> = match &self.root {
            Root::Panicked { task, message } => vec![task, message],
            Root::Cancelled { task } => vec![task],
            Root::Infeasible { task, resource, requested, total } => {
                if !requested.is_finite() || !total.is_finite() {
                    return Err(WireError::Malformed("Infeasible amounts must be finite".into()));
                }
                vec![task, resource]
            }
            Root::ActorDead { actor, reason } => vec![actor, reason],
            Root::ObjectLost { reason, .. }
            | Root::PeerUnreachable { reason, .. }
            | Root::Unverified { reason, .. } => {
                vec![reason]
            }
            Root::StoreFull { .. } => vec![],
            Root::UnknownFunction { name, reason } => vec![name, reason],
            Root::OwnerDied { owner, .. } => vec![owner],
            Root::Other(text) => vec![text],
        };
        for t in texts.into_iter().chain(self.chain.iter().map(String::as_str)) {
            if t.len() > MAX_TEXT_BYTES {
                return Err(too_long("error text", t.len(), MAX_TEXT_BYTES));
            }
        }
        Ok(())
    }
}

impl Opts {
    fn validate(&self) -> Result<(), WireError> {
        if !self.cpus.is_finite() || self.cpus < 0.0 {
            return Err(WireError::Malformed(format!("cpus = {} is not a finite amount >= 0", self.cpus)));
        }
        if self.resources.len() > wire::MAX_RESOURCES {
            return Err(WireError::Malformed(format!(
                "{} resources exceed {}",
                self.resources.len(),
                wire::MAX_RESOURCES
            )));
        }
        for (name, amount) in &self.resources {
            check_name("resource name", name)?;
            if !amount.is_finite() || *amount < 0.0 {
                return Err(WireError::Malformed(format!("resource {name:?} = {amount} is not a finite amount >= 0")));
            }
        }
        self.name.as_deref().map_or(Ok(()), |n| check_name("task name", n))
    }
}

impl Mail {
    /// Checks names, sizes and amounts (the decoder enforces this).
    pub fn validate(&self) -> Result<(), WireError> {
        match self {
            Mail::Submit { func, args, opts, .. } => {
                check_name("function name", func)?;
                if args.len() > MAX_ARGS_BYTES {
                    return Err(too_long("arguments", args.len(), MAX_ARGS_BYTES));
                }
                opts.validate()
            }
            Mail::NewActor { class, args, opts, .. } => {
                check_name("actor type", class)?;
                if args.len() > MAX_ARGS_BYTES {
                    return Err(too_long("arguments", args.len(), MAX_ARGS_BYTES));
                }
                opts.validate()
            }
            Mail::Call { method, args, .. } => {
                check_name("method name", method)?;
                if args.len() > MAX_ARGS_BYTES {
                    return Err(too_long("arguments", args.len(), MAX_ARGS_BYTES));
                }
                Ok(())
            }
            Mail::Done { outcome: Completion::Inline(b), .. } if b.len() > MAX_ARGS_BYTES => {
                Err(too_long("inline result", b.len(), MAX_ARGS_BYTES))
            }
            Mail::Done { outcome: Completion::Failed(e), .. } => e.validate(),
            Mail::Acked(acks) => acks.iter().try_for_each(Ack::validate),
            _ => Ok(()),
        }
    }
}

/// Encodes a batch (envelope included). Does not validate.
pub fn encode_batch(b: &Batch) -> Vec<u8> {
    wire::encode(b)
}

/// Decodes a batch: cap, envelope, version, trailing bytes, and
/// [`Mail::validate`] on every message.
pub fn decode_batch(bytes: &[u8]) -> Result<Batch, WireError> {
    let b: Batch = wire::decode(bytes, MAX_BATCH_BYTES)?;
    b.0.iter().try_for_each(Mail::validate)?;
    if b.0.iter().filter(|m| matches!(m, Mail::Seq(_))).count() > 1 {
        return Err(WireError::Malformed("more than one seq in a batch".into()));
    }
    Ok(b)
}

/// Encodes an ack (envelope included).
pub fn encode_ack(a: &Ack) -> Vec<u8> {
    wire::encode(a)
}

/// Decodes an ack: cap, envelope, version, trailing bytes, and the
/// errors of its refusals ([`RemoteError::validate`]).
pub fn decode_ack(bytes: &[u8]) -> Result<Ack, WireError> {
    let a: Ack = wire::decode(bytes, MAX_ACK_BYTES)?;
    a.validate()?;
    Ok(a)
}

impl Ack {
    /// Checks the errors of its refusals ([`RemoteError::validate`]) and
    /// the length of its reason.
    pub fn validate(&self) -> Result<(), WireError> {
        for (_, r) in &self.refused {
            if let Refusal::Refused(e) = r {
                e.validate()?;
            }
        }
        if self.invalid.as_ref().is_some_and(|t| t.len() > MAX_TEXT_BYTES) {
            return Err(too_long("ack reason", self.invalid.as_ref().map_or(0, String::len), MAX_TEXT_BYTES));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_round_trip_with_their_chain() {
        let root = Error::TaskPanicked { task: "leaf".into(), message: "boom".into() };
        let mid = Error::DependencyFailed { task: "mid".into(), cause: Cause::new(root) };
        let top = Error::DependencyFailed { task: "top".into(), cause: Cause::new(mid) };
        let back: Error = RemoteError::from(&top).into();
        assert_eq!(back, top);
        assert_eq!(back.task_chain().len(), 3);
    }

    #[test]
    fn batches_round_trip_and_garbage_is_refused() {
        let b = Batch(vec![
            Mail::Submit {
                id: [1; 16],
                func: "f".into(),
                args: vec![0x80],
                opts: Opts { cpus: 1.0, ..Opts::default() },
            },
            Mail::Borrow(vec![serde_bytes::ByteArray::new([2; 16])]),
            Mail::Done { id: [3; 16], outcome: Completion::Stays(7) },
        ]);
        assert_eq!(decode_batch(&encode_batch(&b)), Ok(b));
        assert!(decode_batch(&[0xff, 0x00, 0x13]).is_err());
        let long =
            Batch(vec![Mail::Submit { id: [0; 16], func: "x".repeat(300), args: vec![], opts: Opts::default() }]);
        assert!(matches!(decode_batch(&encode_batch(&long)), Err(WireError::Malformed(_))));
        let neg = Batch(vec![Mail::Submit {
            id: [0; 16],
            func: "f".into(),
            args: vec![],
            opts: Opts { cpus: -1.0, ..Opts::default() },
        }]);
        assert!(decode_batch(&encode_batch(&neg)).is_err());
    }
}
