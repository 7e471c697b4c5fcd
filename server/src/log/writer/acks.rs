//! The commit side of [`Log`]: batches handed to the group-commit task
//! ([`crate::log::commit`]), what it reports back, and the waiters it
//! wakes. A child module of `writer`, so the invariants stay in one place.

use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::Instant;

use super::{Log, SegFile};
use crate::disk::DiskFile;
use crate::log::error::LogError;
use crate::log::tail::Part;
use crate::log::{segment, SyncMode};

/// With `--sync none`, a buffer this full is written without waiting for
/// the flush timer: it bounds a batch, and the memory acknowledged but
/// unwritten records take.
pub(super) const FLUSH_BYTES: usize = 1 << 20;

/// When the committer should cut the next batch.
#[derive(Debug, PartialEq, Eq)]
pub(in crate::log) enum CutWhen {
    /// Nothing to write.
    Idle,
    Now,
    /// `--sync none`: at this time, unless notified sooner.
    At(Instant),
}

/// One group commit, cut by [`Log::cut_batch`].
pub(in crate::log) struct Batch {
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
    pub opened: Instant,
}

impl Log {
    /// Polls for `lsn` being acknowledged under the sync mode.
    pub(in crate::log) fn poll_acked(
        &mut self,
        lsn: u64,
        cx: &mut Context<'_>,
    ) -> Poll<Result<(), LogError>> {
        if self.progress.acked_lsn >= lsn {
            return Poll::Ready(Ok(()));
        }
        if let Some(f) = &self.progress.failed {
            return Poll::Ready(Err(f.clone()));
        }
        self.progress.waiters.push_back((lsn, cx.waker().clone()));
        if let SyncMode::None { .. } = self.cfg.sync {
            // Someone waits: the flush timer must not (see `cut_when`).
            self.signals.committer.notify();
        }
        Poll::Pending
    }

    pub(super) fn wake_acked(&mut self) {
        let failed = self.progress.failed.is_some();
        while let Some((lsn, _)) = self.progress.waiters.front() {
            if *lsn > self.progress.acked_lsn && !failed {
                break;
            }
            let (_, w) = self.progress.waiters.pop_front().expect("front exists");
            w.wake();
        }
    }

    /// Anything appended and not yet acknowledged.
    pub fn busy(&self) -> bool {
        self.open.tail.pending() || self.progress.acked_lsn < self.last_lsn()
    }

    /// When the committer should cut the next batch. Every mode but
    /// `--sync none` writes as soon as anything is appended (the batch grows
    /// while the previous one is in flight); `none` waits for its flush
    /// timer unless the buffer is full, a segment was sealed, the log is
    /// closing, or a request waits for a write (a lagging `get`, a client
    /// over the backlog, shutdown).
    pub(in crate::log) fn cut_when(&self) -> CutWhen {
        if !self.open.tail.pending() {
            return CutWhen::Idle;
        }
        let SyncMode::None { flush, .. } = self.cfg.sync else {
            return CutWhen::Now;
        };
        match self.backlog.first_unwritten {
            Some(since)
                if !self.progress.closed
                    && self.progress.waiters.is_empty()
                    && !self.open.tail.has_sealed()
                    && self.open.tail.unwritten() < FLUSH_BYTES
                    && since.elapsed() < flush =>
            {
                CutWhen::At(since + flush)
            }
            _ => CutWhen::Now,
        }
    }

    /// Bytes acknowledged or about to be that are not written yet: with
    /// `--sync none`, a set waits for its write once this passes the
    /// backlog limit.
    pub fn unwritten_bytes(&self) -> u64 {
        self.backlog.inflight_bytes
            + self.open.tail.unwritten() as u64
            + self.backlog.regions_unwritten
    }

    /// Everything appended since the last batch, as one batch.
    pub(in crate::log) fn cut_batch(&mut self) -> Option<Batch> {
        let (id, parts) = self.open.tail.cut(self.open.ord)?;
        self.backlog.first_unwritten = None;
        let opened = self
            .backlog
            .batch_opened
            .take()
            .unwrap_or_else(Instant::now);
        let bytes: u64 = parts.iter().map(|p| p.data.len() as u64).sum();
        self.backlog.inflight_bytes += bytes;
        let creates_file = parts
            .iter()
            .any(|p| self.segs.get(p.ord).is_some_and(|s| s.file.is_none()));
        Some(Batch {
            id,
            parts: Rc::new(parts),
            last: self.last_lsn(),
            creates_file,
            bytes,
            opened,
        })
    }

    /// The file a part of a batch goes to.
    /// (Called for every batch: the new name is formatted only for a
    /// spare still to be renamed.)
    pub(in crate::log) fn seg_file(&mut self, ord: u32) -> Option<SegFile> {
        let seg = self.segs.get_mut(ord)?;
        if let Some(f) = &seg.file {
            return Some(SegFile::Ready(f.clone()));
        }
        let spare = seg.spare.take()?;
        let to = segment::log_path(&self.cfg.dir, seg.first_lsn);
        Some(SegFile::Rename { spare, to })
    }

    /// The spare of segment `ord` is in place as `file`.
    pub(in crate::log) fn set_file(&mut self, ord: u32, file: Rc<dyn DiskFile>) {
        if let Some(seg) = self.segs.get_mut(ord) {
            seg.file = Some(file);
        }
    }

    pub(in crate::log) fn count_write(&mut self, bytes: u64) {
        self.stats.writes += 1;
        self.stats.bytes_written += bytes;
    }

    pub(in crate::log) fn count_fsync(&mut self) {
        self.stats.fsyncs += 1;
    }

    /// Batch `b` is written (and synced, with `--sync always`): acknowledge
    /// it and wake its waiters.
    pub(in crate::log) fn batch_done(&mut self, b: Batch) {
        self.progress.written_lsn = b.last;
        if self.cfg.sync == SyncMode::Always {
            self.progress.synced_lsn = b.last;
        }
        self.progress.acked_lsn = b.last;
        self.stats.commit_latency.record(b.opened.elapsed());
        self.backlog.inflight_bytes -= b.bytes;
        self.open.tail.written(b.id);
        for part in b.parts.iter() {
            let Some(seg) = self.segs.get_mut(part.ord) else {
                continue;
            };
            if part.seal {
                seg.complete = true;
                self.signals.maint.notify();
            } else {
                // `max`: the segment may have been sealed (its final length
                // set) while this write was in flight.
                seg.data_len = seg.data_len.max(part.base + part.len);
            }
        }
        if self.tasks.maint_wake_lsn != 0 && self.progress.written_lsn >= self.tasks.maint_wake_lsn
        {
            self.tasks.maint_wake_lsn = 0;
            self.signals.maint.notify();
        }
        self.wake_acked();
        // The writes are done with the buffers: the tail may fill one again.
        if let Ok(parts) = Rc::try_unwrap(b.parts) {
            for part in parts {
                self.open.tail.recycle(part.data);
            }
        }
    }

    /// What an fdatasync of the open segment would make durable: its file
    /// and the lsn written so far; `None` when everything is synced.
    pub(in crate::log) fn sync_job(&self) -> Option<(Rc<dyn DiskFile>, u64)> {
        if self.progress.written_lsn <= self.progress.synced_lsn {
            return None;
        }
        let file = self.segs.get(self.open.ord)?.file.clone()?;
        Some((file, self.progress.written_lsn))
    }

    /// Everything up to `lsn` is fdatasync'd.
    pub(in crate::log) fn synced(&mut self, lsn: u64) {
        self.stats.fsyncs += 1;
        self.progress.synced_lsn = self.progress.synced_lsn.max(lsn);
    }
}
