//! Room in the open segment, and rolling to the next one: the rules of the
//! module doc of `writer` (the reserve, `--max-disk`, spares, checkpoints)
//! are enforced here and nowhere else.

use std::path::PathBuf;
use std::rc::Rc;

use super::segs::{Seg, Spare};
use super::spares::{NoSpare, SPARES};
use super::Log;
use crate::disk::DiskFile;
use crate::log::error::LogError;
use crate::log::index::IndexBuilder;
use crate::log::record::{self, Kind, HEADER_LEN};
use crate::log::segment;

/// Size of a run's first segment and of the consumers' spare (capped at the
/// segment size; larger when a checkpoint needs it).
pub const SMALL_SEGMENT: u64 = 8 << 20;

/// A checkpoint lists the live queue ids as ranges, so when queues were
/// deleted all over the id space it can be large; a segment is made at
/// least this many times the checkpoint's size, which keeps checkpoints to
/// about this fraction of what the log writes (and a checkpoint always
/// fits).
const CHECKPOINT_SHARE: u64 = 8;

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

/// The tail of a segment of `segment_size` bytes that sets may not use
/// (see the module doc of `writer`: it is the consumers').
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

impl Log {
    /// Starts the first segment of this run in `file` (created at
    /// [`Log::next_segment_path`], `size` bytes: [`Log::small_segment_size`])
    /// with a checkpoint; returns the checkpoint's lsn.
    pub fn start(&mut self, file: Rc<dyn DiskFile>, size: u64) -> u64 {
        let ord = self
            .segs
            .push(Seg::new(self.progress.next_lsn, Some(file), size));
        self.begin_segment(ord);
        self.progress.checkpoint_lsn
    }

    /// Path of the file the next segment will have.
    pub fn next_segment_path(&self) -> PathBuf {
        segment::log_path(&self.cfg.dir, self.progress.next_lsn)
    }

    /// Size of a run's first segment and of the consumers' spare:
    /// [`SMALL_SEGMENT`], or twice what a checkpoint takes now if more, at
    /// most [`Log::full_segment_size`].
    pub fn small_segment_size(&self) -> u64 {
        (2 * self.checkpoint_bytes())
            .next_multiple_of(segment::BLOCK)
            .max(SMALL_SEGMENT)
            .min(self.full_segment_size())
    }

    /// Size of the segments sets roll into: the configured segment size,
    /// or [`CHECKPOINT_SHARE`] times what a checkpoint takes now if more.
    pub(super) fn full_segment_size(&self) -> u64 {
        (CHECKPOINT_SHARE * self.checkpoint_bytes())
            .next_multiple_of(segment::BLOCK)
            .max(self.cfg.segment_size)
    }

    /// Bytes the checkpoint that opens a new segment takes now.
    fn checkpoint_bytes(&self) -> u64 {
        record::record_len(self.catalog.checkpoint_bytes() as usize) as u64
    }

    /// Makes sure `need` more bytes of records fit, rolling to a new segment
    /// if needed. `set` is true for records that add data (sets and
    /// compaction copies): those may not use the reserve nor grow the log
    /// past `max_disk`.
    pub fn make_room(&mut self, need: u64, set: bool) -> Result<(), NoRoom> {
        self.check()?;
        let open = &mut self.open;
        let limit = if set {
            open.size - open.reserve
        } else {
            open.size
        };
        let end = open.tail.next_off() + need;
        if end <= limit {
            if end > open.spare_mark {
                open.spare_mark = u64::MAX;
                self.spares.want_sets_spare(true);
                self.signals.maint.notify();
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
        if !set && open.tail.end() + need <= limit {
            return Err(NoRoom::AwaitWrite);
        }
        let full = self.full_segment_size();
        if set {
            if let Some(max) = self.cfg.max_disk {
                if self.disk_used() + full > max {
                    return Err(LogError::OutOfSpace.into());
                }
            }
        }
        // A new segment starts with a checkpoint of the live queues: if that and
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
        // Sets leave a spare to consumers (see the module doc of `writer`).
        let needed = if set { SPARES } else { 1 };
        match self.spares.take(needed, holds) {
            Ok(spare) => {
                self.roll(spare);
                Ok(())
            }
            Err(NoSpare::DiskFull { retry }) => {
                if retry {
                    self.signals.maint.notify();
                }
                Err(LogError::OutOfSpace.into())
            }
            Err(NoSpare::Asked) => {
                self.signals.maint.notify();
                Err(NoRoom::AwaitSpare)
            }
        }
    }

    /// Seals the open segment and starts the next one in `spare`.
    fn roll(&mut self, spare: Spare) {
        let next_lsn = self.progress.next_lsn;
        let old = self.open.ord;
        let end = self.open.tail.seal(old);
        let builder = std::mem::replace(&mut self.open.builder, IndexBuilder::new(next_lsn));
        if let Some(seg) = self.segs.get_mut(old) {
            seg.sealed = true;
            seg.data_len = end;
            seg.pending_index = Some(builder.sorted());
        }
        let mut seg = Seg::new(next_lsn, None, spare.size);
        seg.spare = Some(spare);
        let ord = self.segs.push(seg);
        self.begin_segment(ord);
        self.signals.maint.notify();
    }

    /// Makes segment `ord` the open one and writes its checkpoint.
    fn begin_segment(&mut self, ord: u32) {
        let open = &mut self.open;
        open.ord = ord;
        open.size = self.segs.get(ord).map_or(0, |s| s.disk_bytes);
        open.reserve = set_reserve(open.size);
        open.spare_mark = (open.size - open.reserve) / 2;
        open.builder = IndexBuilder::new(self.progress.next_lsn);
        self.spares.want_sets_spare(false);
        let next_id = u64::from(self.catalog.next_id());
        let live = record::checkpoint_body(self.catalog.live());
        self.progress.checkpoint_lsn = self.append(Kind::Checkpoint, 0, next_id, &live).1;
        let end = self.open.tail.end();
        if let Some(seg) = self.segs.get_mut(ord) {
            seg.checkpoint_end = end;
        }
    }
}
