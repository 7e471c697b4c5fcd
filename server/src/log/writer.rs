//! The write side of the log: appending records, rolling segments, and the
//! group-commit task.
//!
//! # Group commit
//! Appending a record only copies it into the shard's one in-memory tail
//! buffer (`cur`) and gives it the next lsn; it is synchronous. The
//! committer task takes everything appended so far as one batch, writes it
//! (whole blocks, in concurrent writes of at most 256 KiB) and, with
//! `--sync always`, fdatasyncs it, and only then raises `acked_lsn` and
//! wakes every waiter whose record is covered. While a batch is in flight,
//! new records gather in `cur`; a second batch may start beside the first,
//! and batches complete strictly in order. So the batch size follows the
//! load by itself.
//!
//! # Block packing
//! Records are packed back to back. `cur` always starts at a 4 KiB boundary
//! (`cur_base`) of the open segment. A batch writes `cur` padded with zeros
//! to whole blocks; afterwards `cur` keeps only the partially filled last
//! block, which the next batch rewrites with more records after it. The
//! rewritten prefix is byte-identical to what is on disk, so a torn rewrite
//! (power loss mid-write) can damage only the new records, relying on the
//! device writing each sector atomically. If that partial block is still
//! being written by the batch in flight, the next record starts at the next
//! block instead (`tail_inflight`): two writes in flight never share a block.
//!
//! # Failure
//! A failed write or fdatasync is never retried and never acknowledged
//! (after a failed fdatasync the kernel may have dropped the dirty pages, so
//! a retry that "succeeds" proves nothing): the log records why in `failed`,
//! every waiter gets `StoreError::Failed`, and the shard refuses all further
//! writes.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, VecDeque};
use std::future::Future;
use std::io;
use std::path::PathBuf;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use glommio::io::{DmaFile, OpenOptions};

use super::record::{self, Header, Kind, HEADER_LEN};
use super::segment::{self, to_io, BLOCK};
use crate::index::{IndexBuilder, SegmentIndex};
use crate::store::{StoreError, SyncMode};

/// A one-slot wake-up signal between tasks of one executor.
#[derive(Default)]
pub struct Notify {
    flag: Cell<bool>,
    waker: RefCell<Option<Waker>>,
}

impl Notify {
    pub fn notify(&self) {
        self.flag.set(true);
        if let Some(w) = self.waker.borrow_mut().take() {
            w.wake();
        }
    }

    /// A notification is waiting to be consumed.
    pub fn pending(&self) -> bool {
        self.flag.get()
    }

    /// Resolves once `notify` has been called since the last wait.
    pub fn wait(&self) -> impl Future<Output = ()> + '_ {
        std::future::poll_fn(move |cx| {
            if self.flag.replace(false) {
                Poll::Ready(())
            } else {
                *self.waker.borrow_mut() = Some(cx.waker().clone());
                Poll::Pending
            }
        })
    }
}

/// One segment file, sealed or open.
pub struct Seg {
    pub first_lsn: u64,
    /// `None` only for a just-rolled segment until the committer creates it.
    pub file: Option<Rc<DmaFile>>,
    /// A preallocated spare file waiting to become this segment.
    pub spare: Option<Rc<DmaFile>>,
    /// End of its records (for the open segment: of those written).
    pub data_len: u64,
    /// Bytes the `.log` file occupies.
    pub disk_bytes: u64,
    /// Bytes of its `.idx` file (0 if none yet).
    pub idx_bytes: u64,
    /// Unconsumed messages whose current record is here.
    pub live: u64,
    pub live_bytes: u64,
    /// Reads in flight.
    pub pins: u32,
    /// No more records will be appended.
    pub sealed: bool,
    /// Its final bytes are written (and, if sealed, synced).
    pub complete: bool,
    /// Index to write once `complete`.
    pub pending_index: Option<SegmentIndex>,
    /// Highest lsn of a record that made one of its messages dead.
    pub dead_lsn: u64,
    /// Compaction gave up on it (an unreadable record keeps it live).
    pub no_compact: bool,
    /// End of its checkpoint (0 when unknown, for segments of an earlier
    /// run): compaction can never reclaim these bytes.
    pub checkpoint_end: u64,
}

impl Seg {
    pub fn new(first_lsn: u64, file: Option<Rc<DmaFile>>, disk_bytes: u64) -> Seg {
        Seg {
            first_lsn,
            file,
            spare: None,
            data_len: 0,
            disk_bytes,
            idx_bytes: 0,
            live: 0,
            live_bytes: 0,
            pins: 0,
            sealed: false,
            complete: false,
            pending_index: None,
            dead_lsn: 0,
            no_compact: false,
            checkpoint_end: 0,
        }
    }
}

/// A run of bytes to write into one segment.
struct Part {
    ord: u32,
    base: u64,
    data: Vec<u8>,
    /// The segment's last bytes: sync it and hand it to maintenance after.
    seal: bool,
}

/// The queue-side view the writer needs to write a checkpoint.
pub struct CheckpointQueue<'a> {
    pub id: u32,
    pub name: &'a [u8],
    pub head: u64,
    pub tail: u64,
}

/// The log of one shard.
pub struct Log {
    pub dir: PathBuf,
    /// Log prefix, e.g. `shard-003`.
    pub label: String,
    pub sync: SyncMode,
    pub segment_size: u64,
    pub max_disk: Option<u64>,
    /// Space at the end of the open segment that only `get`/`delete` records
    /// may use, so consumers can always log once sets are refused.
    pub reserve: u64,
    pub next_lsn: u64,
    pub segs: BTreeMap<u32, Seg>,
    pub open_ord: u32,
    pub next_ord: u32,
    /// Unwritten tail of the open segment, starting at block `cur_base`.
    cur: Vec<u8>,
    cur_base: u64,
    /// `cur` holds records not yet handed to the committer.
    dirty: bool,
    /// The partial block at the start of `cur` is being written by batch
    /// `Some(n)`: the next record starts at the next block instead, so two
    /// writes in flight never cover the same block.
    tail_inflight: Option<u64>,
    /// Batches handed to the committer so far.
    batches: u64,
    /// Whole runs of segments sealed since the last batch.
    parts: Vec<Part>,
    /// Index of the open segment, built as records are appended.
    builder: IndexBuilder,
    /// Lsn of the open segment's checkpoint record.
    pub checkpoint_lsn: u64,
    /// Everything up to this lsn is written with O_DIRECT.
    pub written_lsn: u64,
    /// ... and fdatasync'd.
    pub synced_lsn: u64,
    /// ... and acknowledged under the sync mode.
    pub acked_lsn: u64,
    waiters: VecDeque<(u64, Waker)>,
    pub failed: Option<String>,
    pub closed: bool,
    pub committer: Rc<Notify>,
    pub maint: Rc<Notify>,
    /// A preallocated file ready to become the next segment.
    pub spare: Option<Rc<DmaFile>>,
    pub spare_bytes: u64,
    /// Creating a spare failed with ENOSPC/EDQUOT; cleared when space is freed.
    pub disk_full: bool,
    pub next_queue_id: u32,
    /// Wake maintenance once this lsn is written (0: no one waits).
    pub maint_wake_lsn: u64,
    /// Background tasks (committer, maintenance) still running.
    pub tasks: u32,
    /// A maintenance round is under way.
    pub maint_running: bool,
    // Counters for `stats`.
    pub log_writes: u64,
    pub log_fsyncs: u64,
    pub log_bytes_written: u64,
    pub corrupt_records: u64,
}

/// Microseconds since the Unix epoch.
pub fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

impl Log {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        dir: PathBuf,
        label: String,
        sync: SyncMode,
        segment_size: u64,
        max_disk: Option<u64>,
        next_lsn: u64,
        segs: BTreeMap<u32, Seg>,
        next_queue_id: u32,
    ) -> Log {
        let next_ord = segs.keys().next_back().map_or(0, |o| o + 1);
        let reserve = (segment_size / 8).max(HEADER_LEN as u64 * 64);
        Log {
            dir,
            label,
            sync,
            segment_size,
            max_disk,
            reserve,
            next_lsn,
            segs,
            open_ord: u32::MAX,
            next_ord,
            cur: Vec::new(),
            cur_base: 0,
            dirty: false,
            tail_inflight: None,
            batches: 0,
            parts: Vec::new(),
            builder: IndexBuilder::new(next_lsn),
            checkpoint_lsn: 0,
            written_lsn: next_lsn - 1,
            synced_lsn: next_lsn - 1,
            acked_lsn: next_lsn - 1,
            waiters: VecDeque::new(),
            failed: None,
            closed: false,
            committer: Rc::new(Notify::default()),
            maint: Rc::new(Notify::default()),
            spare: None,
            spare_bytes: 0,
            disk_full: false,
            next_queue_id,
            maint_wake_lsn: 0,
            tasks: 0,
            maint_running: false,
            log_writes: 0,
            log_fsyncs: 0,
            log_bytes_written: 0,
            corrupt_records: 0,
        }
    }

    /// Last lsn handed out.
    pub fn last_lsn(&self) -> u64 {
        self.next_lsn - 1
    }

    /// Logical end of the open segment (written or not).
    fn end(&self) -> u64 {
        self.cur_base + self.cur.len() as u64
    }

    /// Where the next record will start (past the padding when the partial
    /// tail block is in flight).
    fn next_off(&self) -> u64 {
        if self.tail_inflight.is_some() {
            self.cur_base + BLOCK
        } else {
            self.end()
        }
    }

    /// Bytes on disk that count against `max_disk` (segments and indexes;
    /// the spare is the consumers' reserve and does not count).
    pub fn disk_used(&self) -> u64 {
        self.segs.values().map(|s| s.disk_bytes + s.idx_bytes).sum()
    }

    /// Makes sure `need` more bytes of records fit, rolling to a new segment
    /// if needed. `set` is true for records that add data (sets and
    /// compaction copies): those may not use the reserve nor grow the log
    /// past `max_disk`.
    pub fn make_room<'a, I>(&mut self, need: u64, set: bool, queues: I) -> Result<(), StoreError>
    where
        I: Iterator<Item = CheckpointQueue<'a>> + Clone,
    {
        if let Some(f) = &self.failed {
            return Err(StoreError::Failed(f.clone()));
        }
        if self.closed {
            return Err(StoreError::Failed("shard closed".into()));
        }
        let limit = if set {
            self.segment_size - self.reserve
        } else {
            self.segment_size
        };
        if self.next_off() + need <= limit {
            return Ok(());
        }
        if set {
            if let Some(max) = self.max_disk {
                if self.disk_used() + self.segment_size > max {
                    return Err(StoreError::OutOfSpace);
                }
            }
        }
        if self.disk_full && self.spare.is_none() {
            return Err(StoreError::OutOfSpace);
        }
        // A new segment starts with a checkpoint of every queue: if that and
        // this record cannot share a segment, rolling would not help (and
        // would only leave an empty segment behind per attempt).
        let checkpoint: u64 = queues
            .clone()
            .map(|q| record::record_len(16 + q.name.len()) as u64)
            .sum::<u64>()
            + record::record_len(0) as u64;
        if checkpoint + need > self.segment_size {
            return Err(StoreError::OutOfSpace);
        }
        self.roll(queues);
        Ok(())
    }

    /// Starts the first segment of this run (after recovery) with a
    /// checkpoint of `queues`.
    pub fn start<'a, I>(&mut self, file: Rc<DmaFile>, queues: I)
    where
        I: Iterator<Item = CheckpointQueue<'a>>,
    {
        let ord = self.next_ord;
        self.next_ord += 1;
        self.segs
            .insert(ord, Seg::new(self.next_lsn, Some(file), self.segment_size));
        self.begin_segment(ord, queues);
    }

    /// Seals the open segment and starts the next one with a checkpoint.
    fn roll<'a, I>(&mut self, queues: I)
    where
        I: Iterator<Item = CheckpointQueue<'a>>,
    {
        let old = self.open_ord;
        let end = self.end();
        let mut data = std::mem::take(&mut self.cur);
        if self.tail_inflight.take().is_some() {
            // Only the in-flight partial block: nothing new to write, but
            // the (empty) part still marks the segment's end.
            data.clear();
        }
        self.parts.push(Part {
            ord: old,
            base: self.cur_base,
            data,
            seal: true,
        });
        let builder = std::mem::replace(&mut self.builder, IndexBuilder::new(self.next_lsn));
        if let Some(seg) = self.segs.get_mut(&old) {
            seg.sealed = true;
            seg.data_len = end;
            seg.pending_index = Some(builder.finish());
        }
        let ord = self.next_ord;
        self.next_ord += 1;
        let mut seg = Seg::new(self.next_lsn, None, self.segment_size);
        seg.spare = self.spare.take();
        self.spare_bytes = 0;
        self.segs.insert(ord, seg);
        self.cur_base = 0;
        self.begin_segment(ord, queues);
        self.maint.notify();
    }

    fn begin_segment<'a, I>(&mut self, ord: u32, queues: I)
    where
        I: Iterator<Item = CheckpointQueue<'a>>,
    {
        self.open_ord = ord;
        self.builder = IndexBuilder::new(self.next_lsn);
        for q in queues {
            let body = record::created_body(q.head, q.tail, q.name);
            self.append(Kind::Created, q.id, 0, 0, &body);
        }
        let next_id = u64::from(self.next_queue_id);
        self.checkpoint_lsn = self.append(Kind::Checkpoint, 0, next_id, 0, &[]).2;
        let end = self.end();
        if let Some(seg) = self.segs.get_mut(&ord) {
            seg.checkpoint_end = end;
        }
    }

    /// Appends one record to the open segment; returns `(segment ordinal,
    /// offset, lsn)`. The caller has made room.
    pub fn append(
        &mut self,
        kind: Kind,
        queue: u32,
        seq: u64,
        flags: u32,
        body: &[u8],
    ) -> (u32, u32, u64) {
        self.append_at_time(kind, queue, seq, flags, now_us(), body)
    }

    /// As `append`, with an explicit enqueue time (compaction copies).
    pub fn append_at_time(
        &mut self,
        kind: Kind,
        queue: u32,
        seq: u64,
        flags: u32,
        time: u64,
        body: &[u8],
    ) -> (u32, u32, u64) {
        let lsn = self.next_lsn;
        self.next_lsn += 1;
        let h = Header {
            kind,
            queue,
            lsn,
            seq,
            time,
            flags,
            len: body.len() as u32,
        };
        if self.tail_inflight.take().is_some() {
            // The rest of the partial block stays zeros (readers skip a zero
            // header to the next block boundary).
            self.cur_base += BLOCK;
            self.cur.clear();
        }
        let off = self.end();
        record::encode_into(&mut self.cur, &h, body);
        self.builder.record(&h, body, off);
        if !self.dirty {
            self.dirty = true;
            self.committer.notify();
        }
        (self.open_ord, off as u32, lsn)
    }

    /// A message whose record is in segment `ord` is gone (consumed,
    /// deleted, or copied forward by the record `lsn`).
    pub fn release(&mut self, ord: u32, len: u32, lsn: u64) {
        if let Some(seg) = self.segs.get_mut(&ord) {
            seg.live -= 1;
            seg.live_bytes -= u64::from(len);
            seg.dead_lsn = seg.dead_lsn.max(lsn);
            if seg.live == 0 && seg.sealed {
                self.maint.notify();
            }
        }
    }

    /// A message's record is now in segment `ord`.
    pub fn retain(&mut self, ord: u32, len: u32) {
        if let Some(seg) = self.segs.get_mut(&ord) {
            seg.live += 1;
            seg.live_bytes += u64::from(len);
        }
    }

    /// Polls for `lsn` being acknowledged under the sync mode.
    pub fn poll_acked(&mut self, lsn: u64, cx: &mut Context<'_>) -> Poll<Result<(), StoreError>> {
        if self.acked_lsn >= lsn {
            return Poll::Ready(Ok(()));
        }
        if let Some(f) = &self.failed {
            return Poll::Ready(Err(StoreError::Failed(f.clone())));
        }
        self.waiters.push_back((lsn, cx.waker().clone()));
        Poll::Pending
    }

    fn wake_acked(&mut self) {
        let failed = self.failed.is_some();
        while let Some((lsn, _)) = self.waiters.front() {
            if *lsn > self.acked_lsn && !failed {
                break;
            }
            let (_, w) = self.waiters.pop_front().expect("front exists");
            w.wake();
        }
    }

    /// Stops the shard's writes for good: `why` is logged and handed to
    /// every waiter and every later request.
    pub fn fail(&mut self, why: String) {
        if self.failed.is_none() {
            crate::log!(
                0,
                "{}: storage failed, no more writes accepted: {why}",
                self.label
            );
            self.failed = Some(why);
        }
        self.wake_acked();
        self.committer.notify();
        self.maint.notify();
    }

    /// Anything appended and not yet acknowledged.
    pub fn busy(&self) -> bool {
        self.dirty || !self.parts.is_empty() || self.acked_lsn < self.last_lsn()
    }

    /// Everything appended since the last batch, as one batch.
    fn take_batch(&mut self) -> Option<Batch> {
        let mut parts = std::mem::take(&mut self.parts);
        let id = self.batches + 1;
        if self.dirty {
            self.dirty = false;
            let data = std::mem::take(&mut self.cur);
            let keep = (data.len() as u64 / BLOCK * BLOCK) as usize;
            self.cur = data[keep..].to_vec();
            self.cur.reserve(1 << 16);
            if !self.cur.is_empty() {
                self.tail_inflight = Some(id);
            }
            parts.push(Part {
                ord: self.open_ord,
                base: self.cur_base,
                data,
                seal: false,
            });
            self.cur_base += keep as u64;
        }
        if parts.is_empty() {
            return None;
        }
        self.batches = id;
        let creates_file = parts
            .iter()
            .any(|p| self.segs.get(&p.ord).is_some_and(|s| s.file.is_none()));
        Some(Batch {
            id,
            parts,
            last: self.last_lsn(),
            creates_file,
        })
    }
}

/// One group commit.
struct Batch {
    id: u64,
    parts: Vec<Part>,
    last: u64,
    /// It creates a segment file: no other batch may run beside it.
    creates_file: bool,
}

fn os_reason(what: &str, e: &io::Error) -> String {
    format!("{what}: {e}")
}

/// Makes sure segment `ord` has its file: the spare renamed into place, or
/// a new preallocated file; then fsyncs the directory so the name survives.
async fn ensure_file(log: &RefCell<Log>, ord: u32) -> io::Result<Rc<DmaFile>> {
    let (existing, spare, path, size, dir) = {
        let mut l = log.borrow_mut();
        let path = segment::log_path(&l.dir, l.segs[&ord].first_lsn);
        let size = l.segment_size;
        let dir = l.dir.clone();
        let seg = l.segs.get_mut(&ord).expect("segment exists");
        (seg.file.clone(), seg.spare.take(), path, size, dir)
    };
    if let Some(f) = existing {
        return Ok(f);
    }
    let file = match spare {
        Some(f) => {
            f.rename(&path).await.map_err(to_io)?;
            f
        }
        None => Rc::new(create_preallocated(&path, size).await?),
    };
    sync_dir(&dir).await?;
    if let Some(seg) = log.borrow_mut().segs.get_mut(&ord) {
        seg.file = Some(file.clone());
    }
    Ok(file)
}

/// Works around glommio 0.9's detection of polled I/O (IOPOLL) support.
///
/// The first DMA file an executor opens on a device decides, for that
/// thread, whether reads go to the polled ring: glommio reads the file's
/// first block through that ring and takes success as support. A new, empty
/// file reads "successfully" without touching the device, so on a device
/// without IOPOLL (virtio disks, most cloud volumes) every later O_DIRECT
/// read fails with EOPNOTSUPP. Opening a file that has data in its first
/// block first makes the probe issue a real read and get the right answer.
pub async fn probe_device(dir: &std::path::Path) -> io::Result<()> {
    let path = dir.join("iopoll-probe.tmp");
    std::fs::write(&path, vec![0x5a; BLOCK as usize])?;
    let res = DmaFile::open(&path).await.map_err(to_io);
    if let Ok(f) = res {
        let _ = f.close().await;
    }
    std::fs::remove_file(&path)?;
    Ok(())
}

/// Creates `path` for O_DIRECT I/O and preallocates `size` zeroed bytes.
pub async fn create_preallocated(path: &std::path::Path, size: u64) -> io::Result<DmaFile> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .dma_open(path)
        .await
        .map_err(to_io)?;
    if let Err(e) = file.pre_allocate(size, false).await {
        let e = to_io(e);
        let _ = file.close().await;
        let _ = std::fs::remove_file(path);
        return Err(e);
    }
    Ok(file)
}

/// fsyncs a directory (after creating, renaming or deleting in it).
pub async fn sync_dir(dir: &std::path::Path) -> io::Result<()> {
    let d = glommio::io::Directory::open(dir).await.map_err(to_io)?;
    let r = d.sync().await.map_err(to_io);
    let _ = d.close().await;
    r
}

/// Writes larger than this are split into concurrent writes of this size:
/// the device sees a deeper queue, which most SSDs and virtual disks need to
/// reach their bandwidth.
const WRITE_CHUNK: usize = 256 << 10;

async fn write_part(log: &RefCell<Log>, part: &Part) -> io::Result<Rc<DmaFile>> {
    let file = ensure_file(log, part.ord).await?;
    let len = (part.data.len() as u64).next_multiple_of(BLOCK) as usize;
    let mut writes = Vec::new();
    let mut at = 0;
    while at < len {
        let n = (len - at).min(WRITE_CHUNK);
        let mut buf = file.alloc_dma_buffer(n);
        let bytes = buf.as_bytes_mut();
        let have = part.data.len().saturating_sub(at).min(n);
        bytes[..have].copy_from_slice(&part.data[at..at + have]);
        bytes[have..].fill(0);
        let f = file.clone();
        let pos = part.base + at as u64;
        writes.push(glommio::spawn_local(async move {
            (f.write_at(buf, pos).await.map_err(to_io), n)
        }));
        at += n;
    }
    let mut first_err = None;
    for w in writes {
        // Await every write, even after a failure: none may still be in
        // flight when the batch is declared failed.
        let (res, n) = w.await;
        match res {
            Ok(written) if written == n => {
                let mut l = log.borrow_mut();
                l.log_writes += 1;
                l.log_bytes_written += n as u64;
            }
            // A short O_DIRECT write: treat like any failed write.
            Ok(written) => {
                first_err.get_or_insert(io::Error::new(
                    io::ErrorKind::WriteZero,
                    format!("short write: {written} of {n} bytes"),
                ));
            }
            Err(e) => {
                first_err.get_or_insert(e);
            }
        }
    }
    match first_err {
        Some(e) => Err(e),
        None => Ok(file),
    }
}

/// The group-commit task of one shard. Runs until the log is closed or
/// failed.
pub async fn committer(log: Rc<RefCell<Log>>) {
    log.borrow_mut().tasks += 1;
    commit_loop(&log).await;
    log.borrow_mut().tasks -= 1;
}

/// Batches in flight at once. Two keep the disk busy while the next batch
/// gathers and while acknowledged writers submit again.
const MAX_INFLIGHT: usize = 2;

type BatchTask = Pin<Box<glommio::Task<Result<(), String>>>>;

/// Writes one batch (and, with `--sync always`, fdatasyncs it).
async fn run_batch(log: Rc<RefCell<Log>>, parts: Rc<Vec<Part>>) -> Result<(), String> {
    let always = matches!(log.borrow().sync, SyncMode::Always);
    let mut touched: Vec<(Rc<DmaFile>, bool)> = Vec::new();
    for part in parts.iter() {
        let f = write_part(&log, part)
            .await
            .map_err(|e| os_reason("segment write failed", &e))?;
        if !touched.iter().any(|(t, _)| t.is_same(&f)) {
            touched.push((f, part.seal));
        }
    }
    for (f, sealed) in &touched {
        if always || *sealed {
            f.fdatasync()
                .await
                .map_err(|e| os_reason("fdatasync failed", &to_io(e)))?;
            log.borrow_mut().log_fsyncs += 1;
        }
    }
    Ok(())
}

struct InFlight {
    id: u64,
    last: u64,
    parts: Rc<Vec<Part>>,
    creates_file: bool,
    task: BatchTask,
}

async fn commit_loop(log: &Rc<RefCell<Log>>) {
    let notify = log.borrow().committer.clone();
    let mut inflight: VecDeque<InFlight> = VecDeque::new();
    loop {
        // Start another batch if allowed. Batches are written concurrently
        // but completed (acknowledged) strictly in order.
        let can_start = inflight.len() < MAX_INFLIGHT && !inflight.iter().any(|b| b.creates_file);
        if can_start {
            let batch = {
                let mut l = log.borrow_mut();
                if l.failed.is_some() {
                    return;
                }
                l.take_batch()
            };
            if let Some(b) = batch {
                let parts = Rc::new(b.parts);
                let task = Box::pin(glommio::spawn_local(run_batch(log.clone(), parts.clone())));
                inflight.push_back(InFlight {
                    id: b.id,
                    last: b.last,
                    parts,
                    creates_file: b.creates_file,
                    task,
                });
                continue;
            }
        }
        let Some(front) = inflight.front_mut() else {
            if log.borrow().closed {
                return;
            }
            notify.wait().await;
            continue;
        };
        // Wait for the oldest batch; and for new records when another batch
        // could start beside it.
        let done = if can_start {
            futures_lite::future::or(async { Some((&mut front.task).await) }, async {
                notify.wait().await;
                None
            })
            .await
        } else {
            Some((&mut front.task).await)
        };
        let Some(result) = done else { continue };
        let b = inflight.pop_front().expect("front exists");
        let mut l = log.borrow_mut();
        if let Err(why) = result {
            l.fail(why);
            return;
        }
        l.written_lsn = b.last;
        if matches!(l.sync, SyncMode::Always) {
            l.synced_lsn = b.last;
        }
        l.acked_lsn = b.last;
        if l.tail_inflight == Some(b.id) {
            l.tail_inflight = None;
        }
        for part in b.parts.iter() {
            if part.seal {
                if let Some(seg) = l.segs.get_mut(&part.ord) {
                    seg.complete = true;
                }
                l.maint.notify();
            } else if let Some(seg) = l.segs.get_mut(&part.ord) {
                // `max`: the segment may have been sealed (its final length
                // set) while this write was in flight.
                seg.data_len = seg.data_len.max(part.base + part.data.len() as u64);
            }
        }
        if l.maint_wake_lsn != 0 && l.written_lsn >= l.maint_wake_lsn {
            l.maint_wake_lsn = 0;
            l.maint.notify();
        }
        l.wake_acked();
    }
}

/// `--sync interval=<ms>`: fdatasync the open segment on a timer when
/// something was written since the last sync.
pub async fn interval_syncer(log: Rc<RefCell<Log>>, every: Duration) {
    loop {
        glommio::timer::sleep(every).await;
        if sync_open(&log).await.is_err() {
            return;
        }
        let l = log.borrow();
        if l.closed || l.failed.is_some() {
            return;
        }
    }
}

/// fdatasyncs the open segment if anything written is not yet synced.
/// Sealed segments are synced when sealed, so this covers the whole log.
pub async fn sync_open(log: &Rc<RefCell<Log>>) -> Result<(), ()> {
    let (file, target) = {
        let l = log.borrow();
        if l.failed.is_some() {
            return Err(());
        }
        if l.written_lsn <= l.synced_lsn {
            return Ok(());
        }
        match l.segs.get(&l.open_ord).and_then(|s| s.file.clone()) {
            Some(f) => (f, l.written_lsn),
            None => return Ok(()),
        }
    };
    let res = file.fdatasync().await;
    let mut l = log.borrow_mut();
    match res {
        Ok(()) => {
            l.log_fsyncs += 1;
            l.synced_lsn = l.synced_lsn.max(target);
            Ok(())
        }
        Err(e) => {
            l.fail(os_reason("fdatasync failed", &to_io(e)));
            Err(())
        }
    }
}

/// Resolves when `lsn` is acknowledged under the sync mode.
pub struct Acked {
    pub log: Rc<RefCell<Log>>,
    pub lsn: u64,
}

impl Future for Acked {
    type Output = Result<(), StoreError>;
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.log.borrow_mut().poll_acked(self.lsn, cx)
    }
}
