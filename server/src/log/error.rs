//! What can go wrong in a shard's log, typed, so the connection can choose
//! its reply in one place and tests can tell the cases apart.

use std::fmt;
use std::io;

/// An I/O failure with its errno kept (when the OS gave one).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IoFailure {
    /// What the log was doing: "segment write", "fdatasync", ...
    pub op: &'static str,
    /// The OS error number, if there was one.
    pub errno: Option<i32>,
    /// The error as the OS (or glommio) described it.
    pub message: String,
}

impl IoFailure {
    pub fn new(op: &'static str, e: &io::Error) -> IoFailure {
        IoFailure {
            op,
            errno: e.raw_os_error(),
            message: e.to_string(),
        }
    }
}

impl fmt::Display for IoFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} failed: {}", self.op, self.message)
    }
}

/// Why a log operation (and so a `set`, `get` or `delete`) did not succeed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LogError {
    /// `--max-disk` is reached or the device is full: nothing was stored.
    /// The shard goes on; `get` and `delete` still work.
    OutOfSpace,
    /// A write or fdatasync failed, now or earlier: the shard has stopped
    /// accepting writes for good (a failed fdatasync is never retried).
    Failed(IoFailure),
    /// A read of a queued message failed; the shard goes on.
    Read(IoFailure),
    /// A queued message failed its checksum and was skipped.
    Corrupt { seq: u64 },
    /// The shard is closed (shutting down).
    Closed,
}

impl fmt::Display for LogError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LogError::OutOfSpace => f.write_str("out of space"),
            LogError::Failed(e) => write!(f, "storage failed: {e}"),
            LogError::Read(e) => write!(f, "{e}"),
            LogError::Corrupt { seq } => write!(f, "corrupt message {seq} skipped"),
            LogError::Closed => f.write_str("shutting down"),
        }
    }
}

impl std::error::Error for LogError {}

impl From<LogError> for std::io::Error {
    fn from(e: LogError) -> std::io::Error {
        match &e {
            LogError::Failed(f) | LogError::Read(f) => match f.errno {
                Some(n) => {
                    std::io::Error::new(std::io::Error::from_raw_os_error(n).kind(), e.to_string())
                }
                None => std::io::Error::other(e.to_string()),
            },
            _ => std::io::Error::other(e.to_string()),
        }
    }
}
