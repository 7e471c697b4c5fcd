//! [`Log`]: the segment table of one shard and every invariant about it.
//!
//! All state of the log lives here, in private parts grouped by what they
//! are about (progress, the open segment, the segment table, the catalog,
//! the spares, the unwritten backlog), behind methods, so the rules that
//! keep it consistent are written once:
//! - **Room.** A record is appended only after [`Log::make_room`] said it
//!   fits. Sets may not use the last `reserve` bytes of a segment (kept for
//!   `get`/`delete` records, so consumers can always log), nor grow the log
//!   past `--max-disk`.
//! - **Rolling** needs a ready spare file (preallocated by maintenance). A
//!   file created on the commit path could fail with ENOSPC after the
//!   request was applied, and then the only honest way out would be to stop
//!   the shard. Maintenance keeps up to `spares::SPARES` (2) of them, and a set may
//!   roll only while two are ready: the one it leaves is the consumers', so
//!   that once the disk is full `get` and `delete` can still be logged (and
//!   so free space). Without a spare it may use, [`Log::make_room`] answers
//!   [`NoRoom::AwaitSpare`] (the store holds the request, and every later
//!   one of the shard, until maintenance has made one) or, once maintenance
//!   found the disk full, [`LogError::OutOfSpace`]. A new segment opens with
//!   a checkpoint naming the live queues by id (as ranges), and a segment
//!   is deleted only after every live queue it says anything of is
//!   restated (a `Created` record with its counters) in the open segment
//!   ([`Log::restate`]; the log keeps names and counters in its
//!   catalog, because every change to them is a record it wrote). So older
//!   segments can be deleted without losing a queue or its counters, and a
//!   queue nobody touches costs no record per segment.
//! - **Sizes.** A segment file is preallocated whole when it is made, never
//!   grown while it is written: `fallocate` on a file under O_DIRECT writes
//!   waits for the writes in flight and pushes the next ones to io_uring's
//!   worker threads (measured: 0.6x of the pipelined ops/s when segments
//!   were grown in steps). What keeps an idle shard small is that not every
//!   file is full size: a run's first segment and the consumers' spare are
//!   [`SMALL_SEGMENT`] (or what a checkpoint needs), and the full-size spare
//!   that sets roll into is made only once the open segment is half full
//!   (or a set waits for it). An empty shard so holds 16 MiB, 8 MiB once
//!   stopped; under load its segments are full size after the first roll.
//!   Full size is `--segment-size`, or 8 times the checkpoint if more
//!   (`room::CHECKPOINT_SHARE`): a checkpoint is 8 bytes per range of
//!   live ids, small unless queues were deleted all over the id space.
//! - **Progress** only moves forward: `written_lsn` ≤ … and `acked_lsn` is
//!   raised only by the commit loop (after the write, and with
//!   `--sync always` the fdatasync, of everything up to it).
//! - **Failure** is final: after a failed write or fdatasync nothing more
//!   is written or acknowledged (after a failed fdatasync the kernel may
//!   have dropped the dirty pages, so a retry that "succeeds" proves
//!   nothing); every waiter and every later request gets the same error.
//!
//! # The front door
//! The store decides what happens to its queues; the log records it and
//! keeps the rules above. What the store may call is `pub`; everything the
//! log's own tasks need is visible only inside `crate::log`: the commit
//! side (cutting batches, acknowledging them, syncing: `acks`) for
//! [`crate::log::commit`] and [`crate::log::region`], and the maintenance
//! side (index jobs, dead segments, spares, compaction copies: `upkeep`)
//! for [`crate::log::compaction`]. So no request path can write an index,
//! acknowledge a batch or take a spare by mistake.
//! - **Opening**: [`Log::new`], then [`Log::next_segment_path`] and
//!   [`Log::small_segment_size`] for the first segment's file, which the
//!   store creates before any task runs, and [`Log::start`] with it.
//! - **Logging queue changes**: [`Log::make_room`] first (room, rolling),
//!   then [`Log::create_queue`], [`Log::enqueue`] or
//!   [`Log::enqueue_region`] (sized by [`Log::message_room`] and
//!   [`Log::out_of_line`]), [`Log::consume`], [`Log::delete_queue`];
//!   [`Log::release`] when a message's record dies; [`Log::dequeued`] for
//!   `stats queue`. The appends return the lsn the reply waits for.
//! - **Reading a message**: [`Log::seg`] (its file), [`Log::read_source`]
//!   and [`Log::reads`] (the read-ahead cache), [`Log::pin`] and
//!   [`Log::unpin`] around the read so the segment is not deleted under
//!   it, [`Log::note_corrupt`] when the record does not check out.
//! - **Waiting and refusing**: [`Log::last_lsn`], [`Log::check`],
//!   [`Log::stopped`], [`Log::busy`], [`Log::unwritten_bytes`] (the
//!   `--sync none` backlog), [`Log::spare_ready`], [`Log::sync_mode`]
//!   (whether a reply waits at all), [`Log::label`] (log lines).
//! - **Life cycle**: the store spawns the log's tasks and its own, and
//!   waits for them at shutdown: [`Log::maint`], [`Log::task_started`],
//!   [`Log::task_ended`], [`Log::tasks`], [`Log::maint_busy`],
//!   [`Log::fail`], [`Log::close`]; and [`Log::stats`].

use std::cell::RefCell;
use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::task::Waker;
use std::time::Instant;

use super::error::{IoFailure, LogError};
use super::index::IndexBuilder;
use super::readahead::ReadAhead;
use super::recovery::Recovered;
use super::tail::Tail;
use super::SyncMode;
use crate::disk::Disk;
use crate::wake::Notify;

mod acks;
mod append;
mod catalog;
mod room;
mod segs;
mod spares;
mod upkeep;

pub(in crate::log) use acks::{Batch, CutWhen};
pub use append::{now_us, MessageMeta};
pub use catalog::CatalogEntry;
pub use room::{max_message_size, NoRoom, SMALL_SEGMENT};
pub use segs::Seg;
pub(in crate::log) use segs::{SegFile, Spare};
pub(in crate::log) use upkeep::{CompactionJob, IndexJob};

use catalog::Catalog;
use segs::SegTable;
use spares::Spares;

/// Counters for `stats`.
#[derive(Clone, Copy, Debug, Default)]
pub struct LogStats {
    pub writes: u64,
    pub fsyncs: u64,
    pub bytes_written: u64,
    pub segments: u64,
    /// Segments, indexes and the spare.
    pub disk_bytes: u64,
    pub corrupt_records: u64,
    /// Appended but not yet written (see [`Log::unwritten_bytes`]).
    pub unwritten_bytes: u64,
    /// Group commits, from their first record's append to their
    /// acknowledgement (written, and synced under `--sync always`).
    pub commit_latency: crate::histogram::Histogram,
}

/// Everything a log needs besides its recovered state.
pub struct LogConfig {
    pub dir: PathBuf,
    /// Log prefix, e.g. `shard-003`.
    pub label: String,
    pub sync: SyncMode,
    pub segment_size: u64,
    pub max_disk: Option<u64>,
    /// Message bodies at least this large are written out of line (see
    /// `log::region`).
    pub region_min: usize,
}

/// The log of one shard.
pub struct Log {
    disk: Rc<dyn Disk>,
    cfg: LogConfig,
    progress: Progress,
    open: Open,
    segs: SegTable,
    catalog: Catalog,
    spares: Spares,
    backlog: Backlog,
    signals: Signals,
    tasks: Tasks,
    stats: LogStats,
    /// Chunks of segments read back (see `log::readahead`); a deleted
    /// segment's are dropped with it.
    reads: Rc<ReadAhead>,
}

/// How far the log got. Lsns only move forward, `written_lsn` ≤
/// `next_lsn - 1`, and `acked_lsn` is raised only by the commit loop; once
/// `failed` or `closed` is set it stays.
struct Progress {
    next_lsn: u64,
    /// Lsn of the open segment's checkpoint record.
    checkpoint_lsn: u64,
    /// Everything up to this lsn is written with O_DIRECT …
    written_lsn: u64,
    /// … and fdatasync'd …
    synced_lsn: u64,
    /// … and acknowledged under the sync mode.
    acked_lsn: u64,
    /// Who waits for which lsn to be acknowledged, in lsn order.
    waiters: VecDeque<(u64, Waker)>,
    failed: Option<LogError>,
    closed: bool,
}

impl Progress {
    /// Hands out the next lsn.
    fn take_lsn(&mut self) -> u64 {
        let lsn = self.next_lsn;
        self.next_lsn += 1;
        lsn
    }

    fn last_lsn(&self) -> u64 {
        self.next_lsn - 1
    }
}

/// The open segment: where records are appended.
struct Open {
    ord: u32,
    /// Size of its file.
    size: u64,
    /// Space at its end that only `get`/`delete` records may use.
    reserve: u64,
    /// Once its records end past this offset, maintenance makes the sets'
    /// (full-size) spare.
    spare_mark: u64,
    /// Its records not yet written.
    tail: Tail,
    /// Its index, built as records are appended.
    builder: IndexBuilder,
}

/// What is appended or acknowledged but not yet written.
struct Backlog {
    /// `--sync none`: when the oldest record not yet handed to a batch was
    /// appended.
    first_unwritten: Option<Instant>,
    /// Appends counted between reads of the clock (`--sync none`).
    appends_unchecked: u32,
    /// When the oldest record not yet in a batch was appended (any sync
    /// mode): where the next batch's commit latency starts.
    batch_opened: Option<Instant>,
    /// Bytes of the batches in flight.
    inflight_bytes: u64,
    /// Bytes of out-of-line regions not yet written.
    regions_unwritten: u64,
}

/// How the log wakes its tasks and the requests waiting on it.
struct Signals {
    committer: Rc<Notify>,
    maint: Rc<Notify>,
    /// A spare was made, or will not be (disk full, failed, closed).
    spare_ready: Rc<Notify>,
    stop: Rc<Notify>,
}

/// The background tasks (committer, maintenance, syncer, scrub).
struct Tasks {
    running: u32,
    /// A maintenance round is under way.
    maint_running: bool,
    /// Wake maintenance once this lsn is written (0: no one waits).
    maint_wake_lsn: u64,
}

impl Log {
    /// The log as recovery found it. Call [`Log::start`] before appending.
    /// `queues` are the live queues by id.
    pub fn new(
        disk: Rc<dyn Disk>,
        cfg: LogConfig,
        rec: Recovered,
        queues: Vec<(u32, CatalogEntry)>,
    ) -> Log {
        let last = rec.next_lsn - 1;
        Log {
            disk,
            cfg,
            progress: Progress {
                next_lsn: rec.next_lsn,
                checkpoint_lsn: 0,
                written_lsn: last,
                synced_lsn: last,
                acked_lsn: last,
                waiters: VecDeque::new(),
                failed: None,
                closed: false,
            },
            open: Open {
                ord: u32::MAX,
                size: 0,
                reserve: 0,
                spare_mark: 0,
                tail: Tail::default(),
                builder: IndexBuilder::new(rec.next_lsn),
            },
            segs: SegTable::new(rec.segs),
            catalog: Catalog::new(queues, rec.next_queue_id),
            spares: Spares::new(),
            backlog: Backlog {
                first_unwritten: None,
                appends_unchecked: 0,
                batch_opened: None,
                inflight_bytes: 0,
                regions_unwritten: 0,
            },
            signals: Signals {
                committer: Rc::new(Notify::default()),
                maint: Rc::new(Notify::default()),
                spare_ready: Rc::new(Notify::default()),
                stop: Rc::new(Notify::default()),
            },
            tasks: Tasks {
                running: 0,
                maint_running: false,
                maint_wake_lsn: 0,
            },
            stats: LogStats {
                corrupt_records: rec.corrupt_records,
                ..LogStats::default()
            },
            reads: ReadAhead::new(super::readahead::DEFAULT_BUDGET),
        }
    }

    pub fn label(&self) -> &str {
        &self.cfg.label
    }
    pub fn sync_mode(&self) -> SyncMode {
        self.cfg.sync
    }
    pub(in crate::log) fn disk(&self) -> &Rc<dyn Disk> {
        &self.disk
    }
    pub(in crate::log) fn dir(&self) -> &Path {
        &self.cfg.dir
    }

    /// Wakes maintenance when notified (the store does once the first
    /// checkpoint is acknowledged).
    pub fn maint(&self) -> Rc<Notify> {
        self.signals.maint.clone()
    }
    /// Fires when a spare was made, or will not be (see
    /// [`NoRoom::AwaitSpare`]).
    pub fn spare_ready(&self) -> Rc<Notify> {
        self.signals.spare_ready.clone()
    }
    pub(in crate::log) fn committer(&self) -> Rc<Notify> {
        self.signals.committer.clone()
    }
    pub(in crate::log) fn stop_signal(&self) -> Rc<Notify> {
        self.signals.stop.clone()
    }

    /// Last lsn handed out.
    pub fn last_lsn(&self) -> u64 {
        self.progress.last_lsn()
    }
    pub(in crate::log) fn written_lsn(&self) -> u64 {
        self.progress.written_lsn
    }
    pub(in crate::log) fn synced_lsn(&self) -> u64 {
        self.progress.synced_lsn
    }

    /// Closed or failed: background tasks end.
    pub fn stopped(&self) -> bool {
        self.progress.closed || self.progress.failed.is_some()
    }

    /// Failed: nothing more is written.
    pub(in crate::log) fn failed(&self) -> bool {
        self.progress.failed.is_some()
    }

    /// Why requests are refused now, if they are.
    pub fn check(&self) -> Result<(), LogError> {
        if let Some(f) = &self.progress.failed {
            return Err(f.clone());
        }
        if self.progress.closed {
            return Err(LogError::Closed);
        }
        Ok(())
    }

    pub fn stats(&self) -> LogStats {
        LogStats {
            segments: self.segs.len() as u64,
            disk_bytes: self.disk_used() + self.spares.bytes(),
            unwritten_bytes: self.unwritten_bytes(),
            ..self.stats
        }
    }

    /// `n` more corrupt records were found.
    pub fn note_corrupt(&mut self, n: u64) {
        self.stats.corrupt_records += n;
    }

    /// Stops the shard's writes for good: `why` is logged and handed to
    /// every waiter and every later request.
    pub fn fail(&mut self, why: IoFailure) {
        if self.progress.failed.is_none() {
            log::error!(
                "{}: storage failed, no more writes accepted: {why}",
                self.cfg.label
            );
            self.progress.failed = Some(LogError::Failed(why));
        }
        self.wake_acked();
        self.wake_all();
    }

    /// No more requests: background tasks finish what they do and end.
    pub fn close(&mut self) {
        self.progress.closed = true;
        self.wake_all();
    }

    /// Wakes every task and every request waiting for a spare: the log
    /// stopped.
    fn wake_all(&self) {
        let s = &self.signals;
        s.committer.notify();
        s.maint.notify();
        s.spare_ready.notify();
        s.stop.notify();
    }

    /// Background tasks still running (close waits for none).
    pub fn tasks(&self) -> u32 {
        self.tasks.running
    }
    pub fn task_started(&mut self) {
        self.tasks.running += 1;
    }
    pub fn task_ended(&mut self) {
        self.tasks.running -= 1;
    }
}

/// A log shared by the store and its tasks.
pub type SharedLog = Rc<RefCell<Log>>;
