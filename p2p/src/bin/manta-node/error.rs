//! What can go wrong in `manta-node` (its main loop and the `CHAOS` job),
//! as one typed error with sources. `main` prints it and its chain of
//! sources on one `ERR` line and exits 1.

use std::time::Duration;

/// What can go wrong in `manta-node`.
#[derive(Debug, thiserror::Error)]
pub(crate) enum NodeCliError {
    /// The command line did not parse (clap's message, on one line).
    #[error("{}", .0.to_string().trim_end().replace('\n', " "))]
    Usage(clap::Error),
    /// `--secret` was given.
    #[error(
        "a secret on the command line is readable by every user of this machine; put it in a file for \
         --secret-file, or in MANTA_SECRET"
    )]
    SecretOnCommandLine,
    /// `--mdns` without the environment guard.
    #[error(
        "--mdns multicasts on every interface; refused unless MANTA_ALLOW_MDNS=1 (use it only inside a network \
         namespace)"
    )]
    MdnsRefused,
    #[error("cannot start the runtime")]
    Runtime(#[source] manta::BuildError),
    #[error("cannot read the cluster secret")]
    Secret(#[source] manta_p2p::SecretError),
    /// A node call failed; `what` says which.
    #[error("{what}")]
    Node {
        what: &'static str,
        #[source]
        source: manta_p2p::NodeError,
    },
    #[error("the node bound no listen address")]
    NoListenAddress,
    #[error("the store refused the node's object")]
    StoreFull,
    #[error("cannot write stdout")]
    Stdout(#[source] std::io::Error),
    #[error("cannot read stdin")]
    Stdin(#[source] std::io::Error),
    #[error("stdin closed before EXIT")]
    StdinClosed,
    #[error("cannot start a thread")]
    Thread(#[source] std::io::Error),
    #[error("unexpected input line `{}`", .0.escape_debug())]
    UnexpectedLine(String),
    #[error("bad hex in a REF line")]
    Hex(#[source] hex::FromHexError),
    /// A job line without its arguments.
    #[error("{command} needs `{usage}`, got `{}`", .got.escape_debug())]
    JobUsage { command: &'static str, usage: &'static str, got: String },
    #[error("bad value `{value}` for {what}")]
    BadNumber {
        what: &'static str,
        value: String,
        #[source]
        source: std::num::ParseIntError,
    },
    #[error("WORDCOUNT: at most {max} chunks, not {asked}")]
    TooManyChunks { asked: usize, max: usize },
    #[error("CHAOS: chunks must be in 1..={max_chunks} and big_mb at most {max_big_mb}")]
    ChaosRange { max_chunks: u32, max_big_mb: u64 },
    /// A value the job needed failed or timed out.
    #[error("{what}")]
    Task {
        what: String,
        #[source]
        source: manta::Error,
    },
    #[error("{what}: {done} of {total} done after {after:?}")]
    Slow { what: String, done: usize, total: usize, after: Duration },
    #[error(
        "word count differs from the local count: cluster {cluster_words} words in {cluster_kinds} kinds, local \
         {local_words} in {local_kinds}"
    )]
    WordCountDiffers { cluster_words: u64, cluster_kinds: usize, local_words: u64, local_kinds: usize },
    #[error("no reduce result")]
    NoReduceResult,
    #[error("the cluster's word count differs: {got_words} words in {got_chunks} chunks, expected {want_words} in {want_chunks}")]
    TallyDiffers { got_words: u64, got_chunks: u64, want_words: u64, want_chunks: u64 },
    #[error("big object {index} differs ({got} bytes, expected {expected})")]
    BigDiffers { index: usize, got: usize, expected: usize },
    #[error("audit {index} was applied twice by one incarnation of the actor")]
    AuditTwice { index: usize },
    #[error("audit {index}: digest {got:016x}, expected {expected:016x}")]
    AuditDigest { index: usize, got: u64, expected: u64 },
}

impl NodeCliError {
    /// A failed node call.
    pub(crate) fn node(what: &'static str) -> impl FnOnce(manta_p2p::NodeError) -> NodeCliError {
        move |source| NodeCliError::Node { what, source }
    }

    /// A failed or late value, described by `what`.
    pub(crate) fn task(what: impl Into<String>) -> impl FnOnce(manta::Error) -> NodeCliError {
        let what = what.into();
        move |source| NodeCliError::Task { what, source }
    }
}

/// `e` and its sources on one line (`ERR` lines are one line each).
pub(crate) fn one_line(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out.replace('\n', " ")
}
