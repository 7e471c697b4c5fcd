//! The maintenance side of [`Log`]: what the maintenance task and the scrub
//! ([`crate::log::compaction`]) ask of the segment table and tell it. Only
//! `crate::log` can call these: the store never reclaims space itself.

use std::rc::Rc;

use super::catalog::restatement_bytes;
use super::{Log, NoRoom, Seg, Spare};
use crate::disk::DiskFile;
use crate::log::index::FlatIndex;
use crate::log::record::{self, Header, Kind, HEADER_LEN};
use crate::log::{Pos, SyncMode};

/// A sealed segment whose last bytes are written, and its index to write.
pub(in crate::log) struct IndexJob {
    pub ord: u32,
    pub first_lsn: u64,
    pub data_len: u64,
    pub file: Option<Rc<dyn DiskFile>>,
    pub index: FlatIndex,
}

/// A sealed segment worth compacting.
pub(in crate::log) struct CompactionJob {
    pub ord: u32,
    pub file: Rc<dyn DiskFile>,
    pub data_len: u64,
    pub first_lsn: u64,
}

impl Log {
    pub(in crate::log) fn set_maint_running(&mut self, running: bool) {
        self.tasks.maint_running = running;
    }

    /// Maintenance is running or has work waiting.
    pub fn maint_busy(&self) -> bool {
        self.tasks.maint_running || self.signals.maint.pending()
    }

    // Index files.

    /// A sealed segment whose last bytes are written and whose index is
    /// still to be written.
    pub(in crate::log) fn take_index_job(&mut self) -> Option<IndexJob> {
        let open = self.open.ord;
        self.segs
            .iter_mut()
            .find(|(o, s)| *o != open && s.complete && s.regions == 0 && s.pending_index.is_some())
            .map(|(ord, s)| IndexJob {
                ord,
                first_lsn: s.first_lsn,
                data_len: s.data_len,
                file: s.file.clone(),
                index: s.pending_index.take().expect("checked"),
            })
    }

    /// Segment `ord`'s file was truncated to `disk_bytes`.
    pub(in crate::log) fn set_disk_bytes(&mut self, ord: u32, disk_bytes: u64) {
        if let Some(s) = self.segs.get_mut(ord) {
            s.disk_bytes = disk_bytes;
        }
    }

    /// Segment `ord`'s index file of `bytes` is written.
    pub(in crate::log) fn set_idx_bytes(&mut self, ord: u32, bytes: u64) {
        if let Some(s) = self.segs.get_mut(ord) {
            s.idx_bytes = bytes;
        }
    }

    // Deleting consumed segments.

    /// Dead segments ([`Seg::dead`]) whose queues are not restated yet:
    /// `(ordinal, first lsn)`.
    pub(in crate::log) fn unrestated_dead(&self) -> Vec<(u32, u64)> {
        let open = self.open.ord;
        self.segs
            .iter()
            .filter(|(o, s)| *o != open && s.dead(self.catalog.held(*o)))
            .filter(|(_, s)| !s.restated)
            .map(|(o, s)| (o, s.first_lsn))
            .collect()
    }

    /// Of the queues segment `ord`'s records name (`None`: not known, so
    /// every queue), the live ones that must be restated before it goes:
    /// those whose newest `Created` record is not newer than it.
    pub(in crate::log) fn to_restate(&self, ord: u32, named: Option<Vec<u32>>) -> Vec<u32> {
        let stale = |id: &u32| self.catalog.get(*id).is_some_and(|q| q.restated <= ord);
        match named {
            Some(ids) => ids.into_iter().filter(stale).collect(),
            None => self.catalog.ids().filter(stale).collect(),
        }
    }

    /// Restates queues `ids` (from [`Log::to_restate`]) in the open segment,
    /// for the deletion of segment `ord`: a `Created` record with the
    /// queue's counters, and its out-of-order confirmations. `tails` are
    /// theirs, from [`Locators::tails`](crate::log::Locators::tails), asked
    /// since the last set. Restating is what lets a segment go, so it may
    /// use the consumers' reserve. Stops at the first queue there is no
    /// room for now; the caller tries again.
    pub(in crate::log) fn restate(
        &mut self,
        ord: u32,
        ids: &[u32],
        tails: &[Option<u64>],
    ) -> Result<(), NoRoom> {
        debug_assert_eq!(ids.len(), tails.len());
        for (&id, &tail) in ids.iter().zip(tails) {
            let Some(q) = self.catalog.get(id).filter(|q| q.restated <= ord) else {
                continue;
            };
            // The store and the catalog take a queue in and out in the same
            // step, so the store has every queue restated; were one missing,
            // its head is the least tail it can have.
            debug_assert!(
                tail.is_some(),
                "queue {id} is in the catalog, not the store"
            );
            let tail = tail.unwrap_or(q.head);
            self.make_room(restatement_bytes(q), false)?;
            let q = self.catalog.get(id).expect("making room changes no queue");
            let body = record::created_body(q.head, tail.max(q.head), &q.name);
            let confirmed: Vec<(u64, u64)> = q.confirmed.ranges().collect();
            let mut lsn = self.append(Kind::Created, id, 0, &body).1;
            for (start, end) in confirmed {
                let end = record::confirmed_body(end);
                lsn = self.append(Kind::Confirmed, id, start, &end).1;
            }
            self.catalog.restated(id, self.open.ord);
            if let Some(s) = self.segs.get_mut(ord) {
                s.dead_lsn = s.dead_lsn.max(lsn);
            }
        }
        Ok(())
    }

    /// Every queue segment `ord` names is restated (its `dead_lsn` covers
    /// the restatements).
    pub(in crate::log) fn set_restated(&mut self, ord: u32) {
        if let Some(s) = self.segs.get_mut(ord) {
            s.restated = true;
        }
    }

    /// Dead segments ([`Seg::dead`]), their queues restated, and the lsn
    /// that must be synced before they may go: every record that killed
    /// their messages or restated their queues, and the open segment's
    /// checkpoint (which names the live queues without them: a queue whose
    /// `Deleted` record goes with them must not come back from an older
    /// `Created` one).
    pub(in crate::log) fn dead_segments(&self) -> (Vec<u32>, u64) {
        let open = self.open.ord;
        let mut target = self.progress.checkpoint_lsn;
        let dead: Vec<u32> = self
            .segs
            .iter()
            .filter(|(o, s)| *o != open && s.dead(self.catalog.held(*o)))
            .filter(|(_, s)| s.restated)
            .map(|(o, s)| {
                target = target.max(s.dead_lsn);
                o
            })
            .collect();
        (dead, target)
    }

    /// Wake maintenance once `lsn` is written.
    pub(in crate::log) fn wake_maint_at(&mut self, lsn: u64) {
        self.tasks.maint_wake_lsn = lsn;
    }

    /// Takes dead segment `ord` out of the table if it is still dead.
    pub(in crate::log) fn remove_dead(&mut self, ord: u32) -> Option<Seg> {
        match self.segs.get(ord) {
            Some(s) if s.live == 0 && s.pins == 0 && s.regions == 0 => {
                self.reads.forget(ord);
                self.segs.remove(ord)
            }
            _ => None,
        }
    }

    /// Space was freed: a spare may fit again.
    pub(in crate::log) fn space_freed(&mut self) {
        self.spares.space_freed();
    }

    // The spares.

    /// The size of the spare to make now, if one should be made: the
    /// consumers' (small) one whenever none is ready, the sets' (full size)
    /// one beside it once it is wanted (see the module doc of `writer`).
    pub(in crate::log) fn wanted_spare(&self) -> Option<u64> {
        if self.stopped() {
            return None;
        }
        self.spares
            .wanted(self.small_segment_size(), self.full_segment_size())
    }

    /// Whether the segment file to make now should have its zeros written
    /// (see `disk::create_preallocated`): only with `--sync always`, whose
    /// O_DSYNC writes each commit the journal when they convert an
    /// unwritten extent, and only while the device writes since the last
    /// decision averaged less than [`super::spares::ZERO_FILL_BELOW`] (or there were
    /// none), and never while a record waits for the spare: then it is made
    /// as fast as it can be. (A stream of large messages starting after
    /// small ones would otherwise wait at its first roll for a whole
    /// segment of zeros, ~65 ms of the development VM's device.)
    pub(in crate::log) fn zero_spare(&mut self) -> bool {
        self.cfg.sync == SyncMode::Always
            && self
                .spares
                .zero(self.stats.writes, self.stats.bytes_written)
    }

    /// Offers a new spare; returns the spare to delete: this one when none
    /// is wanted any more, or a ready one it replaced (outgrown, see
    /// `Spares::put`).
    pub(in crate::log) fn put_spare(&mut self, spare: Spare) -> Option<Spare> {
        if self.progress.closed {
            return Some(spare);
        }
        let (taken, unused) = self.spares.put(spare);
        if taken {
            self.signals.spare_ready.notify();
        }
        unused
    }

    /// Creating a spare failed with ENOSPC/EDQUOT.
    pub(in crate::log) fn set_disk_full(&mut self) {
        self.spares.set_disk_full();
        self.signals.spare_ready.notify();
    }

    /// Gives back the spares (at close, so they can be removed).
    pub(in crate::log) fn take_spares(&mut self) -> Vec<Spare> {
        self.spares.take_all()
    }

    // Compaction and scrub.

    /// A sealed segment less than a quarter live (not counting its
    /// checkpoint, which a copy would not shrink; counting the `Created`
    /// records it holds, which deleting it writes again).
    pub(in crate::log) fn compaction_job(&self) -> Option<CompactionJob> {
        let open = self.open.ord;
        self.segs
            .iter()
            .find(|(o, s)| {
                *o != open
                    && s.settled()
                    && s.live > 0
                    && !s.no_compact
                    && (s.live_bytes + self.catalog.held(*o)) * 4
                        < s.data_len.saturating_sub(s.checkpoint_end)
            })
            .and_then(|(ord, s)| {
                Some(CompactionJob {
                    ord,
                    file: s.file.clone()?,
                    data_len: s.data_len,
                    first_lsn: s.first_lsn,
                })
            })
    }

    /// Compaction gave up on segment `ord`.
    pub(in crate::log) fn set_no_compact(&mut self, ord: u32) {
        if let Some(s) = self.segs.get_mut(ord) {
            s.no_compact = true;
        }
    }

    /// Appends a copy of the live message record `h`/`body`; returns where
    /// and its lsn, or `None` when the log has no room (stop compacting).
    /// The caller then moves the message's locator and tells
    /// [`Log::copied`] whether it could.
    pub(in crate::log) fn copy_forward(&mut self, h: &Header, body: &[u8]) -> Option<(Pos, u64)> {
        // Full, or waiting for a spare: compaction tries again later.
        self.make_room(record::record_len(body.len()) as u64, true)
            .ok()?;
        Some(self.append_copy(h, body))
    }

    /// The copy of a message of `body_len` bytes from `from`, appended at
    /// `to` by the record `lsn`, is live (`moved`: its locator points at
    /// it) or dead (the message was consumed or moved meanwhile).
    pub(in crate::log) fn copied(
        &mut self,
        from: Pos,
        to: Pos,
        body_len: usize,
        lsn: u64,
        moved: bool,
    ) {
        let len = (HEADER_LEN + body_len) as u32;
        let gone = if moved { from } else { to };
        self.release(gone.seg, len, lsn);
    }

    /// The damaged records of segment `ord` were dropped from their queues
    /// (`lens`).
    pub(in crate::log) fn dropped_damaged(&mut self, ord: u32, lens: &[u32]) {
        let lsn = self.last_lsn();
        for &len in lens {
            self.release(ord, len, lsn);
        }
        self.stats.corrupt_records += lens.len() as u64;
    }
}
