//! What a store's callers hand it and get back, apart from the machinery
//! so that the seam `net` and `shard` see reads in one place.

use std::path::PathBuf;
use std::sync::Arc;

use super::{Body, Reader, SyncMode};
use crate::limits::SharedLimits;

/// Everything a storage shard needs to open.
#[derive(Clone, Debug)]
pub struct StoreConfig {
    /// This shard's own directory (`<data-dir>/shard-NNN`).
    pub dir: PathBuf,
    pub sync: SyncMode,
    /// Size of one segment file, in bytes (rounded up to 4 KiB; at least
    /// 64 KiB).
    pub segment_size: u64,
    /// This shard's share of `--max-disk`, if any. It bounds the segment
    /// and index files; one preallocated spare segment (the consumers'
    /// reserve, so a `get` can always be logged) comes on top.
    pub max_disk: Option<u64>,
    /// This shard's share of the hot cache (`-m`), in bytes.
    pub cache_bytes: usize,
    /// This shard's read-ahead budget (`--readahead-size`), in bytes; see
    /// `log::readahead`.
    pub readahead_bytes: usize,
    /// The per-queue limits, shared by every shard (`reload` swaps them).
    pub limits: Arc<SharedLimits>,
    /// Bodies at least this large are written out of line
    /// ([`crate::log::REGION_MIN`] unless a test wants it smaller).
    pub region_min: usize,
}

/// A message handed out by `get`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    pub flags: u32,
    /// Sequence number of the message within its queue (for `gets`).
    pub seq: u64,
    pub body: Body,
}

/// How a `get` takes the head of its queue.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Take {
    /// Removes it (`get <q>`): consumed once the reply is sent.
    Pop,
    /// Hands it out to this reader until it confirms (`/close`) or puts it
    /// back (`/abort`, or by going away): a reliable read, `get <q>/open`.
    Open(Reader),
    /// Leaves it queued (`get <q>/peek`).
    Peek,
}
