//! The maintenance side of [`Log`]: what the maintenance task
//! ([`crate::log::compaction`]) asks of the segment table and tells it.
//! A child module of `writer`, so the invariants stay in one place.

use std::rc::Rc;

use super::{Log, MessageMeta, Seg, Spare};
use crate::disk::DiskFile;
use crate::log::index::SegmentIndex;
use crate::log::record::{self, Header, HEADER_LEN};
use crate::log::{Locators, Pos, SyncMode};

/// A sealed segment whose last bytes are written, and its index to write.
pub struct IndexJob {
    pub ord: u32,
    pub first_lsn: u64,
    pub data_len: u64,
    pub file: Option<Rc<dyn DiskFile>>,
    pub index: SegmentIndex,
}

impl Log {
    // Maintenance: index files.

    /// A sealed segment whose last bytes are written and whose index is
    /// still to be written: `(ord, first_lsn, data_len, file, index)`.
    pub fn take_index_job(&mut self) -> Option<IndexJob> {
        let open = self.open_ord;
        self.segs
            .iter_mut()
            .find(|(o, s)| **o != open && s.complete && s.regions == 0 && s.pending_index.is_some())
            .map(|(o, s)| IndexJob {
                ord: *o,
                first_lsn: s.first_lsn,
                data_len: s.data_len,
                file: s.file.clone(),
                index: s.pending_index.take().expect("checked"),
            })
    }

    /// Segment `ord`'s file was truncated to `disk_bytes`.
    pub fn set_disk_bytes(&mut self, ord: u32, disk_bytes: u64) {
        if let Some(s) = self.segs.get_mut(&ord) {
            s.disk_bytes = disk_bytes;
        }
    }

    /// Segment `ord`'s index file of `bytes` is written.
    pub fn set_idx_bytes(&mut self, ord: u32, bytes: u64) {
        if let Some(s) = self.segs.get_mut(&ord) {
            s.idx_bytes = bytes;
        }
    }

    // Maintenance: deleting consumed segments.

    /// Sealed segments with no live message and no read in flight, and the
    /// lsn that must be synced before they may go: every record that killed
    /// their messages, and the open segment's checkpoint (which names every
    /// queue without them).
    pub fn dead_segments(&self) -> (Vec<u32>, u64) {
        let open = self.open_ord;
        let dead: Vec<u32> = self
            .segs
            .iter()
            .filter(|(o, s)| **o != open && s.settled() && s.live == 0 && s.pins == 0)
            .map(|(o, _)| *o)
            .collect();
        let target = dead
            .iter()
            .map(|o| self.segs[o].dead_lsn)
            .max()
            .unwrap_or(0)
            .max(self.checkpoint_lsn);
        (dead, target)
    }

    /// Wake maintenance once `lsn` is written.
    pub fn wake_maint_at(&mut self, lsn: u64) {
        self.maint_wake_lsn = lsn;
    }

    /// Takes dead segment `ord` out of the table if it is still dead.
    pub fn remove_dead(&mut self, ord: u32) -> Option<Seg> {
        match self.segs.get(&ord) {
            Some(s) if s.live == 0 && s.pins == 0 && s.regions == 0 => self.segs.remove(&ord),
            _ => None,
        }
    }

    /// Space was freed: a spare may fit again.
    pub fn space_freed(&mut self) {
        self.disk_full = None;
    }

    // Maintenance: the spare.

    /// The size of the spare to make now, if one should be made: the
    /// consumers' (small) one whenever none is ready, the sets' (full size)
    /// one beside it once it is wanted (see the module doc of `writer`).
    pub fn wanted_spare(&self) -> Option<u64> {
        if self.disk_full.is_some() || self.stopped() {
            return None;
        }
        match self.spares.len() {
            0 => Some(self.small_segment_size()),
            1 if self.want_sets_spare => Some(self.cfg.segment_size),
            _ => None,
        }
    }

    /// Whether the segment file to make now should have its zeros written
    /// (see `disk::create_preallocated`): only with `--sync always`, whose
    /// O_DSYNC writes each commit the journal when they convert an
    /// unwritten extent, and only while the device writes since the last
    /// decision averaged less than [`super::ZERO_FILL_BELOW`] (or there were
    /// none), and never while a record waits for the spare: then it is made
    /// as fast as it can be. (A stream of large messages starting after
    /// small ones would otherwise wait at its first roll for a whole
    /// segment of zeros, ~65 ms of the development VM's device.)
    pub fn zero_spare(&mut self) -> bool {
        if self.cfg.sync != SyncMode::Always || self.spare_awaited {
            return false;
        }
        self.zeroed = self
            .zeroed
            .next(self.stats.writes, self.stats.bytes_written);
        self.zeroed.zero
    }

    /// Offers a new spare; gives it back when none is wanted any more.
    pub fn put_spare(&mut self, spare: Spare) -> Option<Spare> {
        if self.spares.len() >= super::SPARES || self.closed {
            return Some(spare);
        }
        self.spares.push(spare);
        self.spare_awaited = false;
        if self.spares.len() == super::SPARES {
            self.want_sets_spare = false;
        }
        self.spare_ready.notify();
        None
    }

    /// Creating a spare failed with ENOSPC/EDQUOT.
    pub fn set_disk_full(&mut self) {
        self.disk_full = Some(std::time::Instant::now());
        self.spare_ready.notify();
    }

    /// Gives back the spares (at close, so they can be removed).
    pub fn take_spares(&mut self) -> Vec<Spare> {
        std::mem::take(&mut self.spares)
    }

    // Maintenance: compaction and scrub.

    /// A sealed segment less than a quarter live (not counting its
    /// checkpoint, which a copy would not shrink): `(ord, file, data_len,
    /// first_lsn)`.
    pub fn compaction_job(&self) -> Option<(u32, Rc<dyn DiskFile>, u64, u64)> {
        let open = self.open_ord;
        self.segs
            .iter()
            .find(|(o, s)| {
                **o != open
                    && s.settled()
                    && s.live > 0
                    && !s.no_compact
                    && s.live_bytes * 4 < s.data_len.saturating_sub(s.checkpoint_end)
            })
            .and_then(|(o, s)| Some((*o, s.file.clone()?, s.data_len, s.first_lsn)))
    }

    /// Compaction gave up on segment `ord`.
    pub fn set_no_compact(&mut self, ord: u32) {
        if let Some(s) = self.segs.get_mut(&ord) {
            s.no_compact = true;
        }
    }

    /// Appends a copy of the message record `h`/`body` found at `from`, if
    /// it is still the live copy there, and moves its locator. Returns
    /// false when the log has no room (stop compacting).
    pub fn copy_forward(
        &mut self,
        locators: &dyn Locators,
        h: &Header,
        body: &[u8],
        from: Pos,
    ) -> bool {
        if !locators.is_live(h.queue, h.seq, from) {
            return true;
        }
        if self
            .make_room(record::record_len(body.len()) as u64, true)
            .is_err()
        {
            // Full, or waiting for a spare: compaction tries again later.
            return false;
        }
        let meta = MessageMeta {
            flags: h.flags,
            time: h.time,
            expires: h.expires,
        };
        let (to, lsn) = self.enqueue(h.queue, h.seq, meta, body, None);
        let len = (HEADER_LEN + body.len()) as u32;
        match locators.relocate(h.queue, h.seq, from, to) {
            Some(_) => self.release(from.seg, len, lsn),
            // Unreachable (checked live above, nothing ran in between);
            // the copy is dead then.
            None => self.release(to.seg, len, lsn),
        }
        true
    }

    /// The damaged records of `[from, to)` in segment `ord` were dropped
    /// from their queues (`lens`).
    pub fn dropped_damaged(&mut self, ord: u32, lens: &[u32]) {
        let lsn = self.last_lsn();
        for &len in lens {
            self.release(ord, len, lsn);
        }
        self.stats.corrupt_records += lens.len() as u64;
    }
}
