//! The log of one storage shard: segments of checksummed records written
//! with O_DIRECT, group commit, recovery, and space reclamation.
//!
//! # Layers
//! Arrows point one way: `store` → `log` → `disk`. The log never sees the
//! store's types; what maintenance needs from the queues above it (moving a
//! message's locator, dropping a damaged one) is the small [`Locators`]
//! trait that the store implements.
//!
//! - [`record`]: the byte format of one record (header + CRC32C + body).
//! - [`segment`]: segment file names and the verified scan that recovery,
//!   index rebuilds, compaction and scrub share.
//! - `tail`: block packing, the unwritten tail of the open segment and
//!   the batches cut from it.
//! - [`writer`]: [`Log`], the segment table and every invariant about it:
//!   room, rolling with checkpoints, what is written, synced, acknowledged.
//!   Its `pub` methods are the store's front door (listed there); what the
//!   log's own tasks need of it is visible only inside this module.
//! - [`commit`]: the group-commit task, the interval syncer, and the
//!   futures that wait for an acknowledgement.
//! - [`readahead`]: records read back through large sequential reads of
//!   their segments, kept in a bounded cache, the next chunk read ahead.
//! - [`region`]: large bodies written out of line, so that small records
//!   are not acknowledged only after them.
//! - [`confirmed`]: messages of a queue confirmed out of order (reliable
//!   reads), above its head.
//! - [`index`]: index files, one per sealed segment, so a restart reads
//!   them instead of scanning the segment.
//! - [`paging`]: reading a window of a queue's locators from an index file.
//! - [`recovery`]: rebuilding queue state from index summaries and scans.
//! - [`compaction`]: the maintenance task (index files, deleting consumed
//!   segments, the spare segment, compaction) and the scrub.
//! - [`error`]: [`LogError`], what can go wrong, typed.
//!
//! Files are reached only through `crate::disk`; the byte-level format of everything on disk is in
//! `docs/format.md`.

pub mod commit;
pub mod compaction;
pub mod confirmed;
pub mod error;
pub mod index;
pub mod paging;
pub mod readahead;
pub mod record;
pub mod recovery;
pub mod region;
pub mod segment;
mod tail;
pub mod writer;

use std::time::Duration;

pub use error::LogError;
pub use writer::Log;

/// Message bodies at least this large are written out of line (see
/// [`region`]): an inline write of 1 MiB holds the small records after it
/// about a millisecond on the development VM's disk; a region costs an
/// fdatasync and up to two blocks of padding of its own.
pub const REGION_MIN: usize = 1 << 20;

/// What `STORED` and a popped `VALUE` promise: the sync ladder.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SyncMode {
    /// Acknowledge once the write is durable (an O_DSYNC write, or a write
    /// and its fdatasync): power-loss safe.
    Always,
    /// Acknowledge after the O_DIRECT write; fdatasync on this timer. A
    /// killed process loses nothing; a power cut loses at most one period.
    Interval(Duration),
    /// Acknowledge once the record is in the shard's log buffer (MemcacheQ
    /// `-N`, BerkeleyDB's no-sync). The buffer is written at the latest
    /// `flush` after its first unwritten record (sooner when it fills or
    /// someone waits for it) and fdatasync'd every `sync`. A killed process
    /// may lose what was acknowledged in the last `flush`, and hand out
    /// again what was popped in it.
    None { flush: Duration, sync: Duration },
}

impl SyncMode {
    /// How often `--sync none` writes its buffer by default.
    pub const NONE_FLUSH: Duration = Duration::from_millis(1);
    /// How often `--sync none` fdatasyncs by default.
    pub const NONE_SYNC: Duration = Duration::from_millis(100);
    /// `--sync none` with its defaults.
    pub const NONE: SyncMode = SyncMode::None {
        flush: SyncMode::NONE_FLUSH,
        sync: SyncMode::NONE_SYNC,
    };

    /// The period of the fdatasync timer, if the mode has one.
    pub fn sync_every(self) -> Option<Duration> {
        match self {
            SyncMode::Always => None,
            SyncMode::Interval(every) | SyncMode::None { sync: every, .. } => Some(every),
        }
    }
}

/// Where a record is: segment ordinal (see `writer::segs`, not the file's
/// number) and byte offset in it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pos {
    pub seg: u32,
    pub off: u32,
}

/// A queued message's locator: which message, where its record is, and what
/// a reader must know before reading it. The queues above the log keep one
/// per unconsumed message (24 bytes); recovery rebuilds them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Loc {
    /// The message's sequence number in its queue.
    pub seq: u64,
    pub pos: Pos,
    /// Length of the record (header + body, unpadded).
    pub len: u32,
    /// Unix seconds when the message expires; 0 never.
    pub expires: u32,
}

impl Loc {
    /// Body length of the message.
    pub fn body_len(&self) -> u64 {
        u64::from(self.len) - record::HEADER_LEN as u64
    }

    /// Whether the message has expired at Unix time `now` (seconds).
    pub fn expired(&self, now: u32) -> bool {
        self.expires != 0 && self.expires <= now
    }
}

/// What maintenance needs from the queues above the log: the locators of
/// queued messages live there, not in the log.
///
/// **Borrow order.** The store borrows its state, then the log; an
/// implementation borrows the store's state. So these are never called
/// while a borrow of the log is held: maintenance (`compaction`) asks them
/// only between its borrows of the log, through a wrapper that checks this
/// in debug builds (`compaction::Queues`).
pub trait Locators {
    /// Message `seq` of queue `queue` (its record `len` bytes, expiring at
    /// `expires`) was copied forward to `to`. If its live record is still
    /// at `from`, point it at `to` and say so; otherwise (consumed or moved
    /// meanwhile) `false`.
    fn relocate(&self, queue: u32, seq: u64, from: Pos, to: Pos, len: u32, expires: u32) -> bool;
    /// Is message `seq` of queue `queue` queued with its record at `at`?
    fn is_live(&self, queue: u32, seq: u64, at: Pos) -> bool;
    /// Drops the queued messages whose records start in `[from, to)` of
    /// segment `seg` (they are damaged); returns their record lengths.
    fn drop_damaged(&self, seg: u32, from: u64, to: u64) -> Vec<u32>;
    /// Segment `seg`'s index file is written, saying `summary`: the
    /// queues may read their messages there from its entries from now on,
    /// instead of keeping their locators (see `queue::Backlog`).
    fn indexed(&self, seg: u32, summary: &index::ArchivedSegmentSummary);
    /// The tail (the next sequence number: every message below it was
    /// set) of each of queues `ids`, in their order (`None`: no such
    /// queue). A restatement records it.
    fn tails(&self, ids: &[u32]) -> Vec<Option<u64>>;
}
