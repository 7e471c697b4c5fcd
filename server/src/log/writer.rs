//! [`Log`]: the segment table of one shard and every invariant about it.
//!
//! All state of the log lives here, behind methods, so the rules that keep
//! it consistent are written once:
//! - **Room.** A record is appended only after [`Log::make_room`] said it
//!   fits. Sets may not use the last `reserve` bytes of a segment (kept for
//!   `get`/`delete` records, so consumers can always log), nor grow the log
//!   past `--max-disk`.
//! - **Rolling** needs a ready spare file (preallocated by maintenance). A
//!   file created on the commit path could fail with ENOSPC after the
//!   request was applied, and then the only honest way out would be to stop
//!   the shard. Maintenance keeps up to [`SPARES`] of them, and a set may
//!   roll only while two are ready: the one it leaves is the consumers', so
//!   that once the disk is full `get` and `delete` can still be logged (and
//!   so free space). Without a spare it may use, [`Log::make_room`] answers
//!   [`NoRoom::AwaitSpare`] (the store holds the request, and every later
//!   one of the shard, until maintenance has made one) or, once maintenance
//!   found the disk full, [`LogError::OutOfSpace`]. A new segment opens with
//!   a checkpoint: a `Created` record for every live queue (the log keeps
//!   their names and counters in its catalog, because every change to them
//!   is a record it wrote), so older segments can be deleted without losing
//!   a queue or its counters.
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
//! - **Progress** only moves forward: `written_lsn` ≤ … and `acked_lsn` is
//!   raised only by the commit loop (after the write, and with
//!   `--sync always` the fdatasync, of everything up to it).
//! - **Failure** is final: after a failed write or fdatasync nothing more
//!   is written or acknowledged (after a failed fdatasync the kernel may
//!   have dropped the dirty pages, so a retry that "succeeds" proves
//!   nothing); every waiter and every later request gets the same error.

use std::cell::RefCell;

use super::confirmed::Confirmed;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::task::Waker;
use std::time::{SystemTime, UNIX_EPOCH};

use super::error::{IoFailure, LogError};
use super::record::{self, Header, Kind, HEADER_LEN};
use super::recovery::Recovered;
use super::region::Region;
use super::segment;
use super::tail::{Part, Tail};
use super::{Pos, SyncMode};
use crate::disk::{Disk, DiskFile};
use crate::wake::Notify;

mod acks;
mod segs;
mod upkeep;

use crate::log::index::IndexBuilder;
pub use segs::{Seg, SegFile, Spare};
pub use upkeep::IndexJob;

/// Why [`Log::make_room`] could not make room.
#[derive(Debug, PartialEq, Eq)]
pub enum NoRoom {
    /// Refuse the request.
    Refused(LogError),
    /// A new segment is needed and its spare file is not ready yet: try
    /// again when [`Log::spare_ready`] fires.
    AwaitSpare,
    /// A consumer's record fits once the partial block a batch in flight is
    /// writing is written: try again once everything appended is
    /// acknowledged.
    AwaitWrite,
}

impl From<LogError> for NoRoom {
    fn from(e: LogError) -> NoRoom {
        NoRoom::Refused(e)
    }
}

/// What an `Enqueued` record carries besides the body.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MessageMeta {
    pub flags: u32,
    /// Enqueue time, microseconds since the Unix epoch.
    pub time: u64,
    /// Unix seconds when it expires; 0 never.
    pub expires: u32,
}

/// A queue as a checkpoint restates it.
pub struct CatalogEntry {
    pub name: Box<[u8]>,
    /// Every message below is consumed.
    pub head: u64,
    pub tail: u64,
    /// Messages above `head` consumed out of order (reliable reads).
    pub confirmed: Confirmed,
}

/// Preallocated spare segment files kept ready; sets may not take the last.
pub const SPARES: usize = 2;

/// Size of a run's first segment and of the consumers' spare (capped at the
/// segment size; larger when a checkpoint needs it).
pub const SMALL_SEGMENT: u64 = 8 << 20;

/// How often a refused request makes maintenance try the spare again once
/// the disk was found full.
const DISK_FULL_RETRY: std::time::Duration = std::time::Duration::from_secs(1);

/// With `--sync none`, a buffer this full is written without waiting for
/// the flush timer: it bounds a batch, and the memory acknowledged but
/// unwritten records take.
pub const FLUSH_BYTES: usize = 1 << 20;

/// With `--sync always`, a new segment file gets its zeros written when the
/// log's recent device writes averaged less than this (see
/// [`Log::zero_spare`]). Writing the zeros costs a pass over the file (a
/// 64 MiB segment: ~65 ms of the development VM's device); not writing them
/// costs a journal commit with many of the O_DSYNC writes that later fill
/// it (~57 µs of device time per write, measured). They break even near
/// 1,100 writes per 64 MiB, about 60 KiB per write: small messages gain
/// (mixed-16c 1.37x the ops/s), while a stream of 8 MiB messages would
/// spend a third of the device on zeros and wait for spares (the fairness
/// test's small p99 went 82 -> 259 ms when every spare was zeroed).
pub const ZERO_FILL_BELOW: u64 = 64 << 10;

/// When the committer should cut the next batch.
#[derive(Debug, PartialEq, Eq)]
pub enum CutWhen {
    /// Nothing to write.
    Idle,
    Now,
    /// `--sync none`: at this time, unless notified sooner.
    At(std::time::Instant),
}

/// One group commit, cut by [`Log::cut_batch`].
pub struct Batch {
    pub id: u64,
    /// Shared with the task that writes them.
    pub parts: Rc<Vec<Part>>,
    /// Last lsn it carries.
    pub last: u64,
    /// It moves a spare into place: no other batch may run beside it.
    pub creates_file: bool,
    /// Bytes it writes.
    pub bytes: u64,
    /// When its first record was appended: its commit latency runs from
    /// there to its acknowledgement.
    pub opened: std::time::Instant,
}

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
    /// Size of the open segment's file.
    open_size: u64,
    /// Space at the end of the open segment that only `get`/`delete`
    /// records may use.
    reserve: u64,
    /// Once the open segment's records end past this offset, maintenance
    /// makes the sets' (full-size) spare.
    spare_mark: u64,
    /// The sets' spare is wanted now.
    want_sets_spare: bool,
    next_lsn: u64,
    segs: BTreeMap<u32, Seg>,
    open_ord: u32,
    next_ord: u32,
    tail: Tail,
    /// Index of the open segment, built as records are appended.
    builder: IndexBuilder,
    catalog: HashMap<u32, CatalogEntry>,
    next_queue_id: u32,
    /// Lsn of the open segment's checkpoint record.
    checkpoint_lsn: u64,
    /// Everything up to this lsn is written with O_DIRECT …
    written_lsn: u64,
    /// … and fdatasync'd …
    synced_lsn: u64,
    /// … and acknowledged under the sync mode.
    acked_lsn: u64,
    waiters: VecDeque<(u64, Waker)>,
    failed: Option<LogError>,
    closed: bool,
    committer: Rc<Notify>,
    maint: Rc<Notify>,
    /// `--sync none`: when the oldest record not yet handed to a batch was
    /// appended.
    first_unwritten: Option<std::time::Instant>,
    /// When the oldest record not yet in a batch was appended (any sync
    /// mode): where the next batch's commit latency starts.
    batch_opened: Option<std::time::Instant>,
    /// Bytes of the batches in flight.
    inflight_bytes: u64,
    /// A spare was made, or will not be (disk full, failed, closed).
    spare_ready: Rc<Notify>,
    /// Closed or failed (wakes the interval syncer).
    stop: Rc<Notify>,
    spares: Vec<Spare>,
    /// Creating a spare failed with ENOSPC/EDQUOT at this time; cleared
    /// when a segment is deleted, and retried now and then (space may be
    /// freed by others).
    disk_full: Option<std::time::Instant>,
    /// Wake maintenance once this lsn is written (0: no one waits).
    maint_wake_lsn: u64,
    /// Background tasks (committer, maintenance, syncer, scrub) running.
    tasks: u32,
    /// A maintenance round is under way.
    maint_running: bool,
    /// Whether the last spare had its zeros written, and the write counters
    /// then (see [`Log::zero_spare`]).
    zeroed: ZeroHint,
    /// A record waits for a spare (until one is made).
    spare_awaited: bool,
    /// Bytes of out-of-line regions not yet written.
    regions_unwritten: u64,
    stats: LogStats,
}

/// What [`Log::zero_spare`] decided last, and the device writes and bytes
/// counted when it did.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) struct ZeroHint {
    zero: bool,
    writes: u64,
    bytes: u64,
}

impl ZeroHint {
    /// The decision now that the log has counted `writes` device writes of
    /// `bytes` in all: by their mean since the last decision, or the last
    /// decision again if nothing was written since (or the counters went
    /// back).
    fn next(self, writes: u64, bytes: u64) -> ZeroHint {
        let zero = match (
            writes.checked_sub(self.writes),
            bytes.checked_sub(self.bytes),
        ) {
            (Some(w), Some(b)) if w > 0 => b / w < ZERO_FILL_BELOW,
            _ => self.zero,
        };
        ZeroHint {
            zero,
            writes,
            bytes,
        }
    }
}

/// The tail of a segment of `segment_size` bytes that sets may not use
/// (see the module doc: it is the consumers').
fn set_reserve(segment_size: u64) -> u64 {
    (segment_size / 8).max(HEADER_LEN as u64 * 64)
}

/// The largest message body a `set` can ever store with segments of
/// `segment_size` bytes: what [`Log::make_room`] lets a set use of a fresh
/// segment, after the segment's checkpoint (here the smallest one, of the
/// message's own queue alone) and the record creating the queue, both for
/// the longest queue name. A larger message would get `SERVER_ERROR out of
/// space` on every try, so start-up refuses a `-B` above this. Bodies of
/// `region_min` bytes or more go out of line, which takes up to two blocks
/// more (see [`Log::message_room`]).
pub fn max_message_size(segment_size: u64, longest_queue_name: usize, region_min: usize) -> u64 {
    let queue = record::record_len(16 + longest_queue_name) as u64;
    let checkpoint = record::record_len(0) as u64 + queue;
    let room = segment_size.saturating_sub(set_reserve(segment_size) + checkpoint + queue);
    // The body of a record that fits in `room`.
    let inline = (room / record::RECORD_ALIGN as u64 * record::RECORD_ALIGN as u64)
        .saturating_sub(HEADER_LEN as u64)
        .min(u64::from(record::MAX_BODY));
    let region_min = region_min as u64;
    if inline < region_min {
        return inline;
    }
    // The body whose `Region` record, padding and region fit in `room`.
    let region = room.saturating_sub(record::record_len(8) as u64 + segment::BLOCK);
    let out_of_line = (region / segment::BLOCK * segment::BLOCK)
        .saturating_sub(HEADER_LEN as u64)
        .min(u64::from(record::MAX_BODY));
    if out_of_line >= region_min {
        out_of_line
    } else {
        region_min - 1
    }
}

/// The `Enqueued` record header of message `seq` of queue `id` (its lsn is
/// assigned when it is appended).
fn message_header(id: u32, seq: u64, msg: MessageMeta, body_len: usize) -> Header {
    Header {
        kind: Kind::Enqueued,
        queue: id,
        lsn: 0,
        seq,
        time: msg.time,
        flags: msg.flags,
        expires: msg.expires,
        len: body_len as u32,
    }
}

/// Microseconds since the Unix epoch.
pub fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
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
        let next_ord = rec.segs.keys().next_back().map_or(0, |o| o + 1);
        let catalog = queues.into_iter().collect();
        let last = rec.next_lsn - 1;
        Log {
            disk,
            cfg,
            open_size: 0,
            reserve: 0,
            spare_mark: 0,
            want_sets_spare: false,
            next_lsn: rec.next_lsn,
            segs: rec.segs,
            open_ord: u32::MAX,
            next_ord,
            tail: Tail::default(),
            builder: IndexBuilder::new(rec.next_lsn),
            catalog,
            next_queue_id: rec.next_queue_id,
            checkpoint_lsn: 0,
            written_lsn: last,
            synced_lsn: last,
            acked_lsn: last,
            waiters: VecDeque::new(),
            failed: None,
            closed: false,
            committer: Rc::new(Notify::default()),
            maint: Rc::new(Notify::default()),
            first_unwritten: None,
            batch_opened: None,
            inflight_bytes: 0,
            spare_ready: Rc::new(Notify::default()),
            stop: Rc::new(Notify::default()),
            spares: Vec::new(),
            disk_full: None,
            maint_wake_lsn: 0,
            tasks: 0,
            maint_running: false,
            zeroed: ZeroHint {
                zero: true,
                writes: 0,
                bytes: 0,
            },
            spare_awaited: false,
            regions_unwritten: 0,
            stats: LogStats {
                corrupt_records: rec.corrupt_records,
                ..LogStats::default()
            },
        }
    }

    /// Starts the first segment of this run in `file` (created at
    /// [`Log::next_segment_path`], `size` bytes: [`Log::small_segment_size`])
    /// with a checkpoint; returns the checkpoint's lsn.
    pub fn start(&mut self, file: Rc<dyn DiskFile>, size: u64) -> u64 {
        let ord = self.next_ord;
        self.next_ord += 1;
        self.segs
            .insert(ord, Seg::new(self.next_lsn, Some(file), size));
        self.begin_segment(ord);
        self.checkpoint_lsn
    }

    pub fn disk(&self) -> &Rc<dyn Disk> {
        &self.disk
    }
    pub fn dir(&self) -> &Path {
        &self.cfg.dir
    }
    pub fn label(&self) -> &str {
        &self.cfg.label
    }
    pub fn sync_mode(&self) -> SyncMode {
        self.cfg.sync
    }
    /// Size of a run's first segment and of the consumers' spare:
    /// [`SMALL_SEGMENT`], or twice what a checkpoint takes now if more, at
    /// most the segment size.
    pub fn small_segment_size(&self) -> u64 {
        (2 * self.checkpoint_bytes())
            .next_multiple_of(segment::BLOCK)
            .max(SMALL_SEGMENT)
            .min(self.cfg.segment_size)
    }

    /// Bytes the checkpoint that opens a new segment takes now.
    fn checkpoint_bytes(&self) -> u64 {
        self.catalog
            .values()
            .map(|q| {
                record::record_len(16 + q.name.len()) as u64
                    + q.confirmed.len() as u64 * record::record_len(8) as u64
            })
            .sum::<u64>()
            + record::record_len(0) as u64
    }
    /// Path of the file the next segment will have.
    pub fn next_segment_path(&self) -> PathBuf {
        segment::log_path(&self.cfg.dir, self.next_lsn)
    }
    pub fn committer(&self) -> Rc<Notify> {
        self.committer.clone()
    }
    pub fn maint(&self) -> Rc<Notify> {
        self.maint.clone()
    }
    pub fn spare_ready(&self) -> Rc<Notify> {
        self.spare_ready.clone()
    }
    pub fn stop_signal(&self) -> Rc<Notify> {
        self.stop.clone()
    }

    /// Last lsn handed out.
    pub fn last_lsn(&self) -> u64 {
        self.next_lsn - 1
    }
    pub fn written_lsn(&self) -> u64 {
        self.written_lsn
    }
    pub fn synced_lsn(&self) -> u64 {
        self.synced_lsn
    }
    pub fn checkpoint_lsn(&self) -> u64 {
        self.checkpoint_lsn
    }

    /// Closed or failed: background tasks end.
    pub fn stopped(&self) -> bool {
        self.closed || self.failed.is_some()
    }

    /// Failed: nothing more is written.
    pub fn failed(&self) -> bool {
        self.failed.is_some()
    }

    /// Why requests are refused now, if they are.
    pub fn check(&self) -> Result<(), LogError> {
        if let Some(f) = &self.failed {
            return Err(f.clone());
        }
        if self.closed {
            return Err(LogError::Closed);
        }
        Ok(())
    }

    pub fn seg(&self, ord: u32) -> Option<&Seg> {
        self.segs.get(&ord)
    }
    pub fn open_ord(&self) -> u32 {
        self.open_ord
    }

    /// Bytes on disk that count against `max_disk` (segments and indexes;
    /// the spare is the consumers' reserve and does not count).
    pub fn disk_used(&self) -> u64 {
        self.segs.values().map(|s| s.disk_bytes + s.idx_bytes).sum()
    }

    pub fn stats(&self) -> LogStats {
        LogStats {
            segments: self.segs.len() as u64,
            disk_bytes: self.disk_used() + self.spares.iter().map(|s| s.size).sum::<u64>(),
            unwritten_bytes: self.unwritten_bytes(),
            ..self.stats
        }
    }

    /// Makes sure `need` more bytes of records fit, rolling to a new segment
    /// if needed. `set` is true for records that add data (sets and
    /// compaction copies): those may not use the reserve nor grow the log
    /// past `max_disk`.
    pub fn make_room(&mut self, need: u64, set: bool) -> Result<(), NoRoom> {
        self.check()?;
        let limit = if set {
            self.open_size - self.reserve
        } else {
            self.open_size
        };
        let end = self.tail.next_off() + need;
        if end <= limit {
            if end > self.spare_mark {
                self.spare_mark = u64::MAX;
                self.want_sets_spare = true;
                self.maint.notify();
            }
            return Ok(());
        }
        // A consumer's record that would fit but for the partial block a
        // batch in flight is writing (two writes never share a block, see
        // `tail`) waits for that write rather than roll. Rolling needs a
        // spare, and on a full disk there is none: a pop was refused for
        // lack of a block that was there (the crash-point explorer's
        // lasting full disk, `MCQ_CRASH_ITERS=6`, seed 3004, once regions
        // made such ends common). Sets roll as before: making them wait too
        // stalled pipelined `always` for ~35 ms now and then.
        if !set && self.tail.end() + need <= limit {
            return Err(NoRoom::AwaitWrite);
        }
        let full = self.cfg.segment_size;
        if set {
            if let Some(max) = self.cfg.max_disk {
                if self.disk_used() + full > max {
                    return Err(LogError::OutOfSpace.into());
                }
            }
        }
        // A new segment starts with a checkpoint of every queue: if that and
        // this record cannot share even a full-size segment (sets: outside
        // its reserve), rolling would not help (and would only leave an
        // empty segment behind per attempt).
        let checkpoint = self.checkpoint_bytes();
        let holds = |size: u64| {
            let room = if set { size - set_reserve(size) } else { size };
            checkpoint + need <= room
        };
        if !holds(full) {
            return Err(LogError::OutOfSpace.into());
        }
        // Sets leave a spare to consumers; either takes the largest spare
        // (the sets' one when there are two), if it holds the record.
        let needed = if set { SPARES } else { 1 };
        let largest = (0..self.spares.len()).max_by_key(|&i| self.spares[i].size);
        let spare = match largest {
            Some(i) if self.spares.len() >= needed && holds(self.spares[i].size) => {
                Some(self.spares.swap_remove(i))
            }
            _ => None,
        };
        let Some(spare) = spare else {
            // See the module doc.
            if let Some(since) = self.disk_full {
                if since.elapsed() >= DISK_FULL_RETRY {
                    self.disk_full = None;
                    self.maint.notify();
                }
                return Err(LogError::OutOfSpace.into());
            }
            self.want_sets_spare = true;
            self.spare_awaited = true;
            self.maint.notify();
            return Err(NoRoom::AwaitSpare);
        };
        self.roll(spare);
        Ok(())
    }

    /// Seals the open segment and starts the next one in `spare`.
    fn roll(&mut self, spare: Spare) {
        let old = self.open_ord;
        let end = self.tail.seal(old);
        let builder = std::mem::replace(&mut self.builder, IndexBuilder::new(self.next_lsn));
        if let Some(seg) = self.segs.get_mut(&old) {
            seg.sealed = true;
            seg.data_len = end;
            seg.pending_index = Some(builder.finish());
        }
        let ord = self.next_ord;
        self.next_ord += 1;
        let mut seg = Seg::new(self.next_lsn, None, spare.size);
        seg.spare = Some(spare);
        self.segs.insert(ord, seg);
        self.begin_segment(ord);
        self.maint.notify();
    }

    fn begin_segment(&mut self, ord: u32) {
        self.open_ord = ord;
        self.open_size = self.segs.get(&ord).map_or(0, |s| s.disk_bytes);
        self.reserve = set_reserve(self.open_size);
        self.spare_mark = (self.open_size - self.reserve) / 2;
        self.want_sets_spare = false;
        self.builder = IndexBuilder::new(self.next_lsn);
        let mut ids: Vec<u32> = self.catalog.keys().copied().collect();
        ids.sort_unstable();
        for id in ids {
            let q = &self.catalog[&id];
            let body = record::created_body(q.head, q.tail, &q.name);
            let confirmed: Vec<(u64, u64)> = q.confirmed.ranges().collect();
            self.append(Kind::Created, id, 0, &body);
            for (start, end) in confirmed {
                let end = record::confirmed_body(end);
                self.append(Kind::Confirmed, id, start, &end);
            }
        }
        let next_id = u64::from(self.next_queue_id);
        self.checkpoint_lsn = self.append(Kind::Checkpoint, 0, next_id, &[]).1;
        let end = self.tail.end();
        if let Some(seg) = self.segs.get_mut(&ord) {
            seg.checkpoint_end = end;
        }
    }

    /// Appends one record to the open segment; returns where and its lsn.
    /// The caller has made room.
    fn append(&mut self, kind: Kind, queue: u32, seq: u64, body: &[u8]) -> (Pos, u64) {
        self.append_header(
            Header {
                kind,
                queue,
                lsn: 0,
                seq,
                time: now_us(),
                flags: 0,
                expires: 0,
                len: body.len() as u32,
            },
            body,
            None,
        )
    }

    /// [`Log::append`] with the header's every field given (the lsn is
    /// assigned here).
    fn append_header(&mut self, mut h: Header, body: &[u8], body_crc: Option<u32>) -> (Pos, u64) {
        let lsn = self.next_lsn;
        self.next_lsn += 1;
        h.lsn = lsn;
        let (off, nudge) = self.tail.append(&h, body, body_crc);
        if self.batch_opened.is_none() {
            self.batch_opened = Some(std::time::Instant::now());
        }
        self.builder.record(&h, body, off);
        if let SyncMode::None { .. } = self.cfg.sync {
            if nudge {
                self.first_unwritten = Some(std::time::Instant::now());
                self.committer.notify();
            } else if self.tail.unwritten() >= FLUSH_BYTES {
                self.committer.notify();
            }
        } else if nudge {
            self.committer.notify();
        }
        let pos = Pos {
            seg: self.open_ord,
            off: off as u32,
        };
        (pos, lsn)
    }

    /// Logs a new queue named `name`; returns its id and the record's lsn.
    pub fn create_queue(&mut self, name: &[u8]) -> (u32, u64) {
        let id = self.next_queue_id;
        self.next_queue_id += 1;
        let body = record::created_body(0, 0, name);
        let (_, lsn) = self.append(Kind::Created, id, 0, &body);
        self.catalog.insert(
            id,
            CatalogEntry {
                name: name.into(),
                head: 0,
                tail: 0,
                confirmed: Confirmed::default(),
            },
        );
        (id, lsn)
    }

    /// Logs message `seq` of queue `id` (`msg` says its flags, enqueue
    /// time and expiry, which copies keep); it is live in the returned
    /// segment from now on. `body_crc` is `crc32c(body)` if computed
    /// already (see [`record::encode_with`]).
    pub fn enqueue(
        &mut self,
        id: u32,
        seq: u64,
        msg: MessageMeta,
        body: &[u8],
        body_crc: Option<u32>,
    ) -> (Pos, u64) {
        let h = message_header(id, seq, msg, body.len());
        let (pos, lsn) = self.append_header(h, body, body_crc);
        self.enqueued(&h, pos.seg);
        (pos, lsn)
    }

    /// Message `h` of its queue is logged, its record in segment `seg`:
    /// the queue's tail and the segment's live count take it in.
    fn enqueued(&mut self, h: &Header, seg: u32) {
        if let Some(q) = self.catalog.get_mut(&h.queue) {
            q.tail = q.tail.max(h.seq + 1);
        }
        if let Some(s) = self.segs.get_mut(&seg) {
            s.count_live((HEADER_LEN + h.len as usize) as u32);
        }
    }

    /// Bytes of segment a message with a body of `body_len` bytes takes:
    /// its record, or, written out of line, its `Region` record, the
    /// padding to the next block and the region.
    pub fn message_room(&self, body_len: usize) -> u64 {
        if self.out_of_line(body_len) {
            (record::record_len(8) as u64) + segment::BLOCK + record::region_span(body_len)
        } else {
            record::record_len(body_len) as u64
        }
    }

    /// Whether a body of `body_len` bytes is written out of line.
    pub fn out_of_line(&self, body_len: usize) -> bool {
        body_len >= self.cfg.region_min
    }

    /// Logs message `seq` of queue `id` out of line (the caller made
    /// [`Log::message_room`] for it): appends its `Region` record and
    /// leaves the region after it to [`super::region::write`]. The message
    /// is live in the returned region's segment from now on, like one
    /// [`Log::enqueue`] logs; its record's lsn is one below the `Region`
    /// record's.
    pub fn enqueue_region(
        &mut self,
        id: u32,
        seq: u64,
        msg: MessageMeta,
        body_len: usize,
    ) -> Region {
        // The message's own lsn first, then the Region record's: the batch
        // that writes the Region record carries the highest lsn handed out.
        let lsn = self.next_lsn;
        self.next_lsn += 1;
        let marker = Header {
            kind: Kind::Region,
            queue: id,
            lsn: 0,
            seq,
            time: msg.time,
            flags: 0,
            expires: 0,
            len: 8,
        };
        let (_, marker_lsn) = self.append_header(marker, &record::region_body(body_len), None);
        let span = record::region_span(body_len);
        let off = self.tail.skip(self.open_ord, span);
        let h = Header {
            lsn,
            ..message_header(id, seq, msg, body_len)
        };
        self.builder.enqueued(&h, off);
        self.enqueued(&h, self.open_ord);
        if let Some(seg) = self.segs.get_mut(&self.open_ord) {
            seg.regions += 1;
        }
        self.regions_unwritten += span;
        Region {
            seg: self.open_ord,
            off,
            marker_lsn,
            header: h,
        }
    }

    /// The region of `span` bytes in segment `seg` is written (or will
    /// never be: the log failed).
    pub fn region_done(&mut self, seg: u32, span: u64) {
        self.regions_unwritten -= span;
        if let Some(s) = self.segs.get_mut(&seg) {
            s.regions -= 1;
            if s.regions == 0 && s.sealed {
                self.maint.notify();
            }
        }
    }

    /// Logs that messages `[seq, end)` of queue `id` are consumed; `low`
    /// is the queue's lowest message still unconsumed after them (queued
    /// or handed out by a reliable read; its tail when there is none).
    /// When nothing below `seq` is left, that is a new head (`Consumed`);
    /// otherwise the range is consumed out of order (`Confirmed`).
    pub fn consume(&mut self, id: u32, seq: u64, end: u64, low: u64) -> u64 {
        // `low` is not in `[seq, end)`: either nothing below `end` is left
        // or something below `seq` is.
        let q = self.catalog.get_mut(&id);
        if low >= end {
            if let Some(q) = q {
                q.head = q.head.max(low);
                q.confirmed.drop_below(low);
            }
            self.append(Kind::Consumed, id, low, &[]).1
        } else {
            if let Some(q) = q {
                q.confirmed.insert(seq, end);
            }
            let body = record::confirmed_body(end);
            self.append(Kind::Confirmed, id, seq, &body).1
        }
    }

    /// Messages of queue `id` consumed so far (`stats queue`'s dequeued).
    pub fn dequeued(&self, id: u32) -> u64 {
        self.catalog
            .get(&id)
            .map_or(0, |q| q.head + q.confirmed.count())
    }

    /// Logs that queue `id` is deleted.
    pub fn delete_queue(&mut self, id: u32) -> u64 {
        self.catalog.remove(&id);
        self.append(Kind::Deleted, id, 0, &[]).1
    }

    /// A message whose record (`len` bytes) is in segment `seg` is gone
    /// (consumed, deleted, damaged or copied forward) by the record `lsn`.
    pub fn release(&mut self, seg: u32, len: u32, lsn: u64) {
        if let Some(s) = self.segs.get_mut(&seg) {
            s.live -= 1;
            s.live_bytes -= u64::from(len);
            s.dead_lsn = s.dead_lsn.max(lsn);
            if s.live == 0 && s.sealed {
                self.maint.notify();
            }
        }
    }

    /// Keeps segment `seg` from being deleted while a read of it is in
    /// flight.
    pub fn pin(&mut self, seg: u32) {
        if let Some(s) = self.segs.get_mut(&seg) {
            s.pins += 1;
        }
    }

    pub fn unpin(&mut self, seg: u32) {
        if let Some(s) = self.segs.get_mut(&seg) {
            s.pins -= 1;
            if s.pins == 0 && s.live == 0 {
                self.maint.notify();
            }
        }
    }

    /// `n` more corrupt records were found.
    pub fn note_corrupt(&mut self, n: u64) {
        self.stats.corrupt_records += n;
    }

    /// Stops the shard's writes for good: `why` is logged and handed to
    /// every waiter and every later request.
    pub fn fail(&mut self, why: IoFailure) {
        if self.failed.is_none() {
            log::error!(
                "{}: storage failed, no more writes accepted: {why}",
                self.cfg.label
            );
            self.failed = Some(LogError::Failed(why));
        }
        self.wake_acked();
        self.committer.notify();
        self.maint.notify();
        self.spare_ready.notify();
        self.stop.notify();
    }

    /// No more requests: background tasks finish what they do and end.
    pub fn close(&mut self) {
        self.closed = true;
        self.committer.notify();
        self.maint.notify();
        self.spare_ready.notify();
        self.stop.notify();
    }

    // Background task bookkeeping.

    pub fn task_started(&mut self) {
        self.tasks += 1;
    }
    pub fn task_ended(&mut self) {
        self.tasks -= 1;
    }
    pub fn tasks(&self) -> u32 {
        self.tasks
    }
    pub fn set_maint_running(&mut self, running: bool) {
        self.maint_running = running;
    }
    /// Maintenance is running or has work waiting.
    pub fn maint_busy(&self) -> bool {
        self.maint_running || self.maint.pending()
    }
}

/// A log shared by the store and its tasks.
pub type SharedLog = Rc<RefCell<Log>>;

#[cfg(test)]
mod zero_hint_tests {
    use super::{ZeroHint, ZERO_FILL_BELOW};

    #[test]
    fn zeros_are_written_while_recent_writes_are_small() {
        let start = ZeroHint {
            zero: true,
            writes: 0,
            bytes: 0,
        };
        // Nothing written yet: small messages assumed.
        assert!(start.next(0, 0).zero);
        // 1,000 writes of 4 KiB, then a stream of 256 KiB chunks.
        let small = start.next(1000, 4096 * 1000);
        assert!(small.zero);
        let large = small.next(1100, 4096 * 1000 + (256 << 10) * 100);
        assert!(!large.zero);
        // No writes since: the last decision stands.
        assert_eq!(large.next(1100, large.bytes), large);
        // Back to small writes: only the writes since the last decision count.
        assert!(large.next(2100, large.bytes + 4096 * 1000).zero);
        // At the threshold itself zeros no longer pay.
        assert!(!start.next(1, ZERO_FILL_BELOW).zero);
        assert!(start.next(1, ZERO_FILL_BELOW - 1).zero);
    }
}
