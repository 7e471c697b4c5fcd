//! Maintenance: the background task that turns sealed segments into
//! reclaimed space.
//!
//! Each round, in order (the spare first when there is none: a roll is
//! waiting for it):
//! 1. **Index** every sealed segment whose last bytes are written and
//!    synced: truncate the file to its data (rounded to 4 KiB), write the
//!    `.idx` (temp file, fdatasync, rename, directory fsync).
//! 2. **Delete** sealed segments with no live message and no read in
//!    flight: first restate, in the open segment, every live queue their
//!    records name that no newer segment restates; make sure those records,
//!    every record that killed their messages and the open segment's
//!    checkpoint (which names the live queues) are synced; then unlink
//!    `.log` and `.idx` and fsync the directory. Otherwise a crash could
//!    bring back queues, lose one, or lose acknowledged messages.
//! 3. Keep the **spare** preallocated segment files ready: rolling to a
//!    new segment takes one, so the commit path never allocates (and never
//!    meets ENOSPC). Sets may not take the last one, so a `get` or `delete`
//!    can always be logged even when the disk is full. That last one is
//!    small; the full-size one sets roll into is made once the open
//!    segment is half full (the sizes: `writer`'s module doc).
//! 4. **Compact**: a sealed segment less than a quarter live (not counting
//!    its checkpoint, which a copy would not shrink) is read, and
//!    its live messages are appended again (same queue, seq, flags, time,
//!    body) to the open segment; the locators move, the old segment dies and
//!    step 2 deletes it. So a slow queue cannot pin old segments.
//!
//! Separately, once after a start, [`scrub`] reads the sealed segments that
//! recovery took from their index files and verifies every checksum, at a
//! pace that leaves the disk to the consumers.

use std::io;
use std::rc::Rc;
use std::time::Duration;

use super::error::IoFailure;
use super::index::{self, QueueRead};
use super::record::Kind;
use super::segment::{self, BLOCK};
use super::writer::{CompactionJob, IndexJob, NoRoom, SharedLog, Spare};
use super::{commit, Locators, Pos};
use crate::disk::{self, is_out_of_space};

static SPARE_COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// The maintenance task of one shard.
pub async fn maintenance(locators: Rc<dyn Locators>, log: SharedLog) {
    log.borrow_mut().task_started();
    let notify = log.borrow().maint();
    loop {
        notify.wait().await;
        if log.borrow().stopped() {
            break;
        }
        log.borrow_mut().set_maint_running(true);
        ensure_spare(&log).await;
        let queues = Queues {
            locators: &*locators,
            log: &log,
        };
        if write_indexes(&queues, &log).await.is_err() || delete_dead(&queues, &log).await.is_err()
        {
            break;
        }
        ensure_spare(&log).await;
        compact(&*locators, &log).await;
        log.borrow_mut().set_maint_running(false);
        if log.borrow().stopped() {
            break;
        }
    }
    log.borrow_mut().set_maint_running(false);
    // Spares nobody will use: remove them (recovery would, too).
    let spares = log.borrow_mut().take_spares();
    let disk = log.borrow().disk().clone();
    for spare in spares {
        drop(spare.file);
        let _ = disk.remove(&spare.path).await;
    }
    log.borrow_mut().task_ended();
}

/// Step 1. An index failure is logged, not fatal: the next start rebuilds
/// a missing index from its segment. Once written, the queues page their
/// messages there out of memory.
async fn write_indexes(queues: &Queues<'_>, log: &SharedLog) -> Result<(), ()> {
    loop {
        let job = log.borrow_mut().take_index_job();
        let Some(IndexJob {
            ord,
            first_lsn,
            data_len,
            file,
            index,
        }) = job
        else {
            return Ok(());
        };
        let (disk, dir, label) = {
            let l = log.borrow();
            (
                l.disk().clone(),
                l.dir().to_path_buf(),
                l.label().to_string(),
            )
        };
        let new_size = data_len.next_multiple_of(BLOCK);
        if let Some(f) = &file {
            match f.truncate(new_size).await {
                Err(e) => {
                    log::warn!("{label}: truncating sealed segment {first_lsn:020} failed: {e}")
                }
                Ok(()) => log.borrow_mut().set_disk_bytes(ord, new_size),
            }
        }
        match super::recovery::write_index(&*disk, &dir, first_lsn, index).await {
            Ok(encoded) => {
                log.borrow_mut()
                    .set_idx_bytes(ord, encoded.file_len() as u64);
                queues.indexed(ord, encoded.summary());
                drop(encoded);
                crate::memory::trim();
            }
            Err(e) => {
                log::warn!("{label}: writing index {first_lsn:020}.idx failed ({e}); it will be rebuilt on restart");
            }
        }
        if log.borrow().stopped() {
            return Err(());
        }
    }
}

/// Queues restated at a time before maintenance lets requests run.
const RESTATE_CHUNK: usize = 4096;

/// Step 2, first half: before a dead segment goes, every live queue its
/// records name is restated in the open segment (see `Log::restate`). Its
/// index summary names them; without one (its index could not be written),
/// every queue is restated.
async fn restate_dead(queues: &Queues<'_>, log: &SharedLog) {
    let (disk, dir) = {
        let l = log.borrow();
        (l.disk().clone(), l.dir().to_path_buf())
    };
    let dead = log.borrow().unrestated_dead();
    for (ord, first_lsn) in dead {
        let path = segment::idx_path(&dir, first_lsn);
        let named = match index::load_summary(&*disk, &path, first_lsn).await {
            Ok(Some(Ok(sum))) => Some(sum.get().queues.iter().map(|q| q.id()).collect()),
            _ => None,
        };
        let ids = log.borrow().to_restate(ord, named);
        for chunk in ids.chunks(RESTATE_CHUNK) {
            // Nothing runs between the two: the tails are current.
            let tails = queues.tails(chunk);
            let res = log.borrow_mut().restate(ord, chunk, &tails);
            match res {
                Ok(()) => {}
                // Another round once the write or the spare is there.
                Err(NoRoom::AwaitWrite) => {
                    let mut l = log.borrow_mut();
                    let lsn = l.last_lsn();
                    l.wake_maint_at(lsn);
                    return;
                }
                Err(NoRoom::AwaitSpare) => {
                    log.borrow().maint().notify();
                    return;
                }
                // Full or failed: the segment waits for space (or the end).
                Err(NoRoom::Refused(_)) => return,
            }
            glommio::yield_if_needed().await;
        }
        log.borrow_mut().set_restated(ord);
        if log.borrow().stopped() {
            return;
        }
    }
}

/// Step 2.
async fn delete_dead(queues: &Queues<'_>, log: &SharedLog) -> Result<(), ()> {
    restate_dead(queues, log).await;
    let (cands, target) = log.borrow().dead_segments();
    if cands.is_empty() {
        return Ok(());
    }
    if log.borrow().written_lsn() < target {
        // Wait for the commit that writes them; the committer wakes us.
        log.borrow_mut().wake_maint_at(target);
        return Ok(());
    }
    if log.borrow().synced_lsn() < target {
        commit::sync_open(log).await.map_err(|_| ())?;
    }
    let (disk, dir, label) = {
        let l = log.borrow();
        (
            l.disk().clone(),
            l.dir().to_path_buf(),
            l.label().to_string(),
        )
    };
    let mut removed = 0;
    for ord in cands {
        let Some(seg) = log.borrow_mut().remove_dead(ord) else {
            continue;
        };
        drop(seg.file);
        for path in [
            segment::log_path(&dir, seg.first_lsn),
            segment::idx_path(&dir, seg.first_lsn),
        ] {
            if let Err(e) = disk.remove(&path).await {
                if e.raw_os_error() != Some(libc::ENOENT) {
                    log::warn!("{label}: removing {} failed: {e}", path.display());
                }
            }
        }
        log::debug!(
            "{label}: segment {:020} fully consumed: deleted",
            seg.first_lsn
        );
        removed += 1;
    }
    if removed > 0 {
        if let Err(e) = disk.sync_dir(&dir).await {
            log.borrow_mut().fail(IoFailure::new("directory fsync", &e));
            return Err(());
        }
        log.borrow_mut().space_freed();
    }
    Ok(())
}

/// Step 3, until the spares are there (or cannot be made). Also called
/// once at open, before the first request.
pub async fn ensure_spare(log: &SharedLog) {
    while make_spare(log).await {}
}

/// Makes one spare if one is wanted; whether it did.
async fn make_spare(log: &SharedLog) -> bool {
    let (disk, path, size, zero, label) = {
        let mut l = log.borrow_mut();
        let Some(size) = l.wanted_spare() else {
            return false;
        };
        let zero = l.zero_spare();
        let n = SPARE_COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        (
            l.disk().clone(),
            l.dir().join(format!("spare-{n}.tmp")),
            size,
            zero,
            l.label().to_string(),
        )
    };
    let started = std::time::Instant::now();
    match disk::create_preallocated(&*disk, &path, size, zero).await {
        Ok(file) => {
            log::debug!(
                "{label}: spare segment of {size} bytes made in {:?}{}",
                started.elapsed(),
                if zero { ", its zeros written" } else { "" }
            );
            let unused = log.borrow_mut().put_spare(Spare { path, file, size });
            match unused {
                Some(spare) => {
                    drop(spare.file);
                    let _ = disk.remove(&spare.path).await;
                    false
                }
                None => true,
            }
        }
        Err(e) if is_out_of_space(&e) => {
            log::warn!("{label}: disk full ({e}): sets refused until space is freed");
            log.borrow_mut().set_disk_full();
            false
        }
        // Any other failure is the device's: stop the shard rather than let
        // requests wait for a spare that cannot be made.
        Err(e) => {
            log::error!("{label}: creating a spare segment failed: {e}");
            log.borrow_mut()
                .fail(IoFailure::new("creating a segment file", &e));
            false
        }
    }
}

/// Step 4.
async fn compact(locators: &dyn Locators, log: &SharedLog) {
    let queues = Queues { locators, log };
    loop {
        let job = log.borrow().compaction_job();
        let Some(CompactionJob {
            ord,
            file,
            data_len,
            first_lsn,
        }) = job
        else {
            return;
        };
        let mut stop = false;
        let res = segment::scan(&*file, data_len, false, |h, body, off| {
            if stop || h.kind != Kind::Enqueued {
                return;
            }
            let from = Pos {
                seg: ord,
                off: off as u32,
            };
            if !queues.is_live(h.queue, h.seq, from) {
                return;
            }
            // Each borrow of the log ends with its statement: the queues
            // are asked between them (see `Queues`).
            let copy = log.borrow_mut().copy_forward(h, body);
            let Some((to, lsn)) = copy else {
                stop = true;
                return;
            };
            let len = (super::record::HEADER_LEN + body.len()) as u32;
            let moved = queues.relocate(h.queue, h.seq, from, to, len, h.expires);
            log.borrow_mut().copied(from, to, body.len(), lsn, moved);
        })
        .await;
        let mut l = log.borrow_mut();
        let label = l.label().to_string();
        match res {
            Err(e) => {
                log::warn!("{label}: compaction read of segment {first_lsn:020} failed: {e}");
                l.set_no_compact(ord);
                return;
            }
            Ok(_) if stop => return,
            Ok(_) => match l.seg(ord).map(|s| s.live) {
                Some(live) if live > 0 => {
                    log::warn!(
                        "{label}: segment {first_lsn:020}: {live} messages could not be copied forward (unreadable)"
                    );
                    l.set_no_compact(ord);
                }
                _ => log::debug!("{label}: segment {first_lsn:020} compacted"),
            },
        }
        if l.stopped() {
            return;
        }
    }
}

/// The queues' [`Locators`], asked only while no borrow of the log is held.
///
/// The store borrows its state, then the log; its `Locators` borrow its
/// state. Asked while maintenance holds the log, they would take the two
/// the other way round, and any of them that ever needed the log (to count
/// a release, say) would panic on the borrow. So every call goes through
/// this, which checks (in debug builds) that the log is not borrowed: keep
/// each `log.borrow*()` in maintenance to one statement, or a scope that
/// ends before the queues are asked.
struct Queues<'a> {
    locators: &'a dyn Locators,
    log: &'a SharedLog,
}

impl Queues<'_> {
    fn unborrowed(&self) -> &dyn Locators {
        debug_assert!(
            self.log.try_borrow_mut().is_ok(),
            "the queues' locators asked while the log is borrowed"
        );
        self.locators
    }

    fn is_live(&self, queue: u32, seq: u64, at: Pos) -> bool {
        self.unborrowed().is_live(queue, seq, at)
    }

    fn relocate(&self, queue: u32, seq: u64, from: Pos, to: Pos, len: u32, expires: u32) -> bool {
        self.unborrowed()
            .relocate(queue, seq, from, to, len, expires)
    }

    fn indexed(&self, seg: u32, summary: &super::index::ArchivedSegmentSummary) {
        self.unborrowed().indexed(seg, summary)
    }

    fn drop_damaged(&self, seg: u32, from: u64, to: u64) -> Vec<u32> {
        self.unborrowed().drop_damaged(seg, from, to)
    }

    fn tails(&self, ids: &[u32]) -> Vec<Option<u64>> {
        self.unborrowed().tails(ids)
    }
}

/// How fast the scrub reads. It runs right after a start, which is when
/// consumers come back to a backlog: read at the disk's speed it competed
/// with their cold reads of the same segments, and a cold drain by one
/// connection ran at 0.54–0.80 of the rate it has with the scrub paced,
/// by 16 connections at 0.89–0.96 (`bench-results/`, the backlog runs at
/// 20e56c5). Paced, it verifies a 15 GB backlog in about 8
/// minutes, with a few percent of a disk's bandwidth.
const SCRUB_BYTES_PER_SEC: u64 = 32 << 20;

/// The longest the scrub sleeps before it looks whether the log stopped.
const PACE_STEP: Duration = Duration::from_millis(20);

/// A segment file as the scrub reads it: each read is followed by a pause
/// long enough to keep to [`SCRUB_BYTES_PER_SEC`]; once the log stops, a
/// read fails instead (close waits for the scrub).
struct Paced<'a> {
    file: &'a dyn disk::DiskFile,
    log: &'a SharedLog,
}

impl disk::DiskFile for Paced<'_> {
    fn read_at(&self, pos: u64, len: usize) -> disk::IoFuture<'_, Vec<u8>> {
        Box::pin(async move {
            let stopping = || io::Error::other("the log is stopping");
            if self.log.borrow().stopped() {
                return Err(stopping());
            }
            let data = self.file.read_at(pos, len).await?;
            let mut pause = Duration::from_secs_f64(data.len() as f64 / SCRUB_BYTES_PER_SEC as f64);
            // In steps, each followed by a look at the log: a stop (which
            // close waits for) interrupts the pause within one step.
            while !pause.is_zero() {
                let step = pause.min(PACE_STEP);
                glommio::timer::sleep(step).await;
                pause -= step;
                if self.log.borrow().stopped() {
                    return Err(stopping());
                }
            }
            Ok(data)
        })
    }
    fn write_at<'a>(&'a self, pos: u64, data: &'a [u8]) -> disk::IoFuture<'a, usize> {
        self.file.write_at(pos, data)
    }
    fn fdatasync(&self) -> disk::IoFuture<'_, ()> {
        self.file.fdatasync()
    }
    fn pre_allocate(&self, len: u64) -> disk::IoFuture<'_, ()> {
        self.file.pre_allocate(len)
    }
    fn truncate(&self, len: u64) -> disk::IoFuture<'_, ()> {
        self.file.truncate(len)
    }
    fn size(&self) -> disk::IoFuture<'_, u64> {
        self.file.size()
    }
}

/// Verifies, once, the checksums of the sealed segments recovery loaded from
/// their index files (it did not read them), so damage is found and
/// reported even before a consumer reaches it. A damaged message is dropped
/// from its queue (logged) instead of failing a `get` later.
pub async fn scrub(locators: Rc<dyn Locators>, log: SharedLog, ords: Vec<u32>) {
    log.borrow_mut().task_started();
    let queues = Queues {
        locators: &*locators,
        log: &log,
    };
    scrub_segments(&queues, ords).await;
    log.borrow_mut().task_ended();
}

async fn scrub_segments(queues: &Queues<'_>, ords: Vec<u32>) {
    let log = queues.log;
    for ord in ords {
        let (file, data_len, first_lsn, label) = {
            let l = log.borrow();
            if l.stopped() {
                return;
            }
            match l.seg(ord) {
                Some(s) => (
                    s.file.clone(),
                    s.data_len,
                    s.first_lsn,
                    l.label().to_string(),
                ),
                None => continue, // already reclaimed
            }
        };
        let Some(file) = file else { continue };
        let paced = Paced { file: &*file, log };
        let rep = match segment::scan(&paced, data_len, false, |_, _, _| {}).await {
            Ok(r) => r,
            Err(_) if log.borrow().stopped() => return,
            Err(e) => {
                log::warn!("{label}: scrub of segment {first_lsn:020} failed: {e}");
                continue;
            }
        };
        // A region that does not hold its message was logged when the
        // recovery that indexed its segment found it (a set a crash cut
        // short, in no queue); it is damage only if a queued message is
        // there.
        for &(off, len) in &rep.unfinished {
            let lens = queues.drop_damaged(ord, off, off + len);
            if !lens.is_empty() {
                log::warn!(
                    "{label}: segment {first_lsn:020}: the large message body at offset {off} ({len} bytes) is damaged: checksum mismatch"
                );
                log.borrow_mut().dropped_damaged(ord, &lens);
            }
        }
        let mut bad: Vec<(u64, u64)> = rep.corrupt.clone();
        bad.extend(rep.torn);
        for (off, len) in bad {
            log::warn!(
                "{label}: segment {first_lsn:020}: corrupt record(s) at offset {off}, {len} bytes: checksum mismatch"
            );
            let lens = queues.drop_damaged(ord, off, off + len);
            let mut l = log.borrow_mut();
            l.dropped_damaged(ord, &lens);
            if lens.is_empty() {
                // Paged messages there are dropped when their window is
                // read; the damage is counted now.
                l.note_corrupt(1);
            }
        }
    }
}
