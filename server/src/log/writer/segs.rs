//! The segment table: every segment file of the log by ordinal, and what
//! decides when one may go (its live messages, the reads and out-of-line
//! writes in flight). Ordinals, not file numbers, name segments in a
//! [`crate::log::Pos`], so a locator stays 8 bytes.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::rc::Rc;

use super::Log;
use crate::disk::DiskFile;
use crate::log::index::FlatIndex;
use crate::log::readahead::{ReadAhead, Source};

/// The segments by ordinal; a new one gets the next ordinal.
pub(super) struct SegTable {
    by_ord: BTreeMap<u32, Seg>,
    next_ord: u32,
}

impl SegTable {
    pub(super) fn new(by_ord: BTreeMap<u32, Seg>) -> SegTable {
        let next_ord = by_ord.keys().next_back().map_or(0, |o| o + 1);
        SegTable { by_ord, next_ord }
    }

    /// Adds `seg` as the newest segment; returns its ordinal.
    pub(super) fn push(&mut self, seg: Seg) -> u32 {
        let ord = self.next_ord;
        self.next_ord += 1;
        self.by_ord.insert(ord, seg);
        ord
    }

    pub(super) fn get(&self, ord: u32) -> Option<&Seg> {
        self.by_ord.get(&ord)
    }

    pub(super) fn get_mut(&mut self, ord: u32) -> Option<&mut Seg> {
        self.by_ord.get_mut(&ord)
    }

    pub(super) fn remove(&mut self, ord: u32) -> Option<Seg> {
        self.by_ord.remove(&ord)
    }

    /// The first segment after `ord`.
    pub(super) fn after(&self, ord: u32) -> Option<u32> {
        use std::ops::Bound::{Excluded, Unbounded};
        self.by_ord
            .range((Excluded(ord), Unbounded))
            .next()
            .map(|(o, _)| *o)
    }

    pub(super) fn len(&self) -> usize {
        self.by_ord.len()
    }

    pub(super) fn iter(&self) -> impl Iterator<Item = (u32, &Seg)> {
        self.by_ord.iter().map(|(o, s)| (*o, s))
    }

    pub(super) fn iter_mut(&mut self) -> impl Iterator<Item = (u32, &mut Seg)> {
        self.by_ord.iter_mut().map(|(o, s)| (*o, s))
    }

    /// Bytes on disk that count against `max_disk` (segments and indexes).
    pub(super) fn disk_used(&self) -> u64 {
        self.by_ord
            .values()
            .map(|s| s.disk_bytes + s.idx_bytes)
            .sum()
    }
}

/// One segment file, sealed or open.
pub struct Seg {
    pub first_lsn: u64,
    /// `None` only for a just-rolled segment until the committer has moved
    /// the spare into place.
    pub file: Option<Rc<dyn DiskFile>>,
    /// The spare that becomes this segment's file.
    pub(super) spare: Option<Spare>,
    /// End of its records (for the open segment: of those written).
    pub(in crate::log) data_len: u64,
    /// Bytes the `.log` file occupies.
    pub(in crate::log) disk_bytes: u64,
    /// Bytes of its `.idx` file (0 if none yet).
    pub(in crate::log) idx_bytes: u64,
    /// Unconsumed messages whose current record is here.
    pub(in crate::log) live: u64,
    pub(in crate::log) live_bytes: u64,
    /// Reads in flight.
    pub(in crate::log) pins: u32,
    /// Out-of-line bodies still being written into it (see `log::region`):
    /// until they are, it is neither indexed nor compacted nor deleted.
    pub(in crate::log) regions: u32,
    /// No more records will be appended.
    pub(in crate::log) sealed: bool,
    /// Its final bytes are written (and, if sealed, synced).
    pub(in crate::log) complete: bool,
    /// Index to write once `complete`.
    pub(super) pending_index: Option<FlatIndex>,
    /// Highest lsn of a record that made one of its messages dead.
    pub(in crate::log) dead_lsn: u64,
    /// Compaction gave up on it (an unreadable record keeps it live).
    pub(in crate::log) no_compact: bool,
    /// End of its checkpoint (0 when unknown, for segments of an earlier
    /// run): compaction can never reclaim these bytes.
    pub(in crate::log) checkpoint_end: u64,
    /// Every live queue its records name is restated in a newer segment
    /// (see [`super::Log::restate`]): it may be deleted once that is synced.
    pub(in crate::log) restated: bool,
}

impl Seg {
    pub(super) fn new(first_lsn: u64, file: Option<Rc<dyn DiskFile>>, disk_bytes: u64) -> Seg {
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
            regions: 0,
            sealed: false,
            complete: false,
            pending_index: None,
            dead_lsn: 0,
            no_compact: false,
            checkpoint_end: 0,
            restated: false,
        }
    }

    /// A sealed segment found by recovery, its index written or loaded.
    pub(in crate::log) fn recovered(
        first_lsn: u64,
        file: Rc<dyn DiskFile>,
        disk_bytes: u64,
        data_len: u64,
        idx_bytes: u64,
    ) -> Seg {
        let mut s = Seg::new(first_lsn, Some(file), disk_bytes);
        s.data_len = data_len;
        s.idx_bytes = idx_bytes;
        s.sealed = true;
        s.complete = true;
        s
    }

    /// Whether `retain` has been counted into it (for recovery).
    pub(in crate::log) fn count_live(&mut self, len: u32) {
        self.live += 1;
        self.live_bytes += u64::from(len);
    }

    /// Sealed, indexed, with no live message and no read in flight, and
    /// worth deleting: the `Created` records it holds (`held` bytes, the
    /// catalog's count), which deleting it writes again, are less than
    /// half its data. A segment of mostly
    /// such records (the restatements of idle queues) stays as the home of
    /// those queues' names, or deleting it would only write its like again,
    /// for ever.
    pub(in crate::log) fn dead(&self, held: u64) -> bool {
        self.settled()
            && self.live == 0
            && self.pins == 0
            && held * 2 < self.data_len.saturating_sub(self.checkpoint_end)
    }

    /// Sealed, written, indexed: what deletion and compaction start from.
    pub(super) fn settled(&self) -> bool {
        self.sealed && self.complete && self.pending_index.is_none() && self.regions == 0
    }
}

/// A preallocated file waiting to become the next segment.
pub(in crate::log) struct Spare {
    pub path: PathBuf,
    pub file: Rc<dyn DiskFile>,
    /// Bytes preallocated.
    pub size: u64,
}

/// How the committer gets a part's file.
pub(in crate::log) enum SegFile {
    Ready(Rc<dyn DiskFile>),
    /// Rename the spare to `to` (then sync the directory) first.
    Rename {
        spare: Spare,
        to: PathBuf,
    },
}

impl Log {
    /// Segment `ord`, if it is still there.
    pub fn seg(&self, ord: u32) -> Option<&Seg> {
        self.segs.get(ord)
    }

    /// Segment `ord`'s file and how much of it is written: the open
    /// segment's records up to the last batch written, a sealed one's all
    /// once its last batch is (0 until then: a reader that waited for its
    /// record's acknowledgement knows more). Out-of-line regions may be
    /// written later than the records after them.
    pub fn read_source(&self, ord: u32) -> Option<Source> {
        let s = self.segs.get(ord)?;
        let readable = if !s.sealed || s.complete {
            s.data_len
        } else {
            0
        };
        Some(Source {
            file: s.file.clone()?,
            readable,
        })
    }

    /// The segment after `ord` and its [`Log::read_source`], for reading
    /// ahead across a segment's end.
    pub fn next_source(&self, ord: u32) -> Option<(u32, Source)> {
        let next = self.segs.after(ord)?;
        Some((next, self.read_source(next)?))
    }

    /// The shard's read-ahead cache (see `log::readahead`).
    pub fn reads(&self) -> Rc<ReadAhead> {
        self.reads.clone()
    }

    /// Bytes on disk that count against `max_disk` (segments and indexes;
    /// the spare is the consumers' reserve and does not count).
    pub(super) fn disk_used(&self) -> u64 {
        self.segs.disk_used()
    }

    /// A message whose record (`len` bytes) is in segment `seg` is gone
    /// (consumed, deleted, damaged or copied forward) by the record `lsn`.
    pub fn release(&mut self, seg: u32, len: u32, lsn: u64) {
        if let Some(s) = self.segs.get_mut(seg) {
            s.live -= 1;
            s.live_bytes -= u64::from(len);
            s.dead_lsn = s.dead_lsn.max(lsn);
            if s.live == 0 && s.sealed {
                self.signals.maint.notify();
            }
        }
    }

    /// [`Log::release`] of `n` messages of segment `seg` at once, their
    /// records `bytes` long in all (a run dropped unread).
    pub fn release_run(&mut self, seg: u32, n: u64, bytes: u64, lsn: u64) {
        if let Some(s) = self.segs.get_mut(seg) {
            s.live -= n;
            s.live_bytes -= bytes;
            s.dead_lsn = s.dead_lsn.max(lsn);
            if s.live == 0 && s.sealed {
                self.signals.maint.notify();
            }
        }
    }

    /// Keeps segment `seg` from being deleted while a read of it is in
    /// flight.
    pub fn pin(&mut self, seg: u32) {
        if let Some(s) = self.segs.get_mut(seg) {
            s.pins += 1;
        }
    }

    pub fn unpin(&mut self, seg: u32) {
        if let Some(s) = self.segs.get_mut(seg) {
            s.pins -= 1;
            if s.pins == 0 && s.live == 0 {
                self.signals.maint.notify();
            }
        }
    }

    /// The region of `span` bytes in segment `seg` is written (or will
    /// never be: the log failed).
    pub(in crate::log) fn region_done(&mut self, seg: u32, span: u64) {
        self.backlog.regions_unwritten -= span;
        if let Some(s) = self.segs.get_mut(seg) {
            s.regions -= 1;
            if s.regions == 0 && s.sealed {
                self.signals.maint.notify();
            }
        }
    }
}
