//! Maintenance: the background task that turns sealed segments into
//! reclaimed space.
//!
//! Each round, in order:
//! 1. **Index** every sealed segment whose last bytes are written and
//!    synced: truncate the file to its data (rounded to 4 KiB), write the
//!    `.idx` (temp file, fdatasync, rename, directory fsync).
//! 2. **Delete** sealed segments with no live message and no read in
//!    flight: first make sure every record that killed their messages (and
//!    the open segment's checkpoint, which now names every queue) is synced,
//!    then unlink `.log` and `.idx` and fsync the directory. Otherwise a
//!    crash could bring back queues or lose acknowledged messages.
//! 3. Keep a **spare** preallocated segment file ready, so rolling to a new
//!    segment never allocates on the commit path and a `get` can always be
//!    logged even when the disk is full.
//! 4. **Compact**: a sealed segment less than a quarter live (not counting
//!    its checkpoint, which a copy would not shrink) is read, and
//!    its live messages are appended again (same queue, seq, flags, time,
//!    body) to the open segment; the locators move, the old segment dies and
//!    step 2 deletes it. So a slow queue cannot pin old segments.
//!
//! Separately, once after a start, [`scrub`] reads the sealed segments that
//! recovery took from their index files and verifies every checksum.

use std::cell::RefCell;
use std::rc::Rc;

use super::record::{self, Header, Kind};
use super::segment::{self, is_out_of_space, to_io, BLOCK};
use super::writer::{create_preallocated, sync_dir, sync_open, Log};
use crate::store::State;

static SPARE_COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// The maintenance task of one shard.
pub(crate) async fn maintenance(state: Rc<RefCell<State>>, log: Rc<RefCell<Log>>) {
    log.borrow_mut().tasks += 1;
    let notify = log.borrow().maint.clone();
    loop {
        notify.wait().await;
        if stopped(&log) {
            break;
        }
        log.borrow_mut().maint_running = true;
        if write_indexes(&log).await.is_err() || delete_dead(&log).await.is_err() {
            break;
        }
        ensure_spare(&log).await;
        compact(&state, &log).await;
        log.borrow_mut().maint_running = false;
        if stopped(&log) {
            break;
        }
    }
    log.borrow_mut().tasks -= 1;
}

fn stopped(log: &RefCell<Log>) -> bool {
    let l = log.borrow();
    l.closed || l.failed.is_some()
}

/// Step 1. An index failure is logged, not fatal: the next start rebuilds
/// a missing index from its segment.
async fn write_indexes(log: &Rc<RefCell<Log>>) -> Result<(), ()> {
    loop {
        let job = {
            let mut l = log.borrow_mut();
            let open = l.open_ord;
            l.segs
                .iter_mut()
                .find(|(o, s)| **o != open && s.complete && s.pending_index.is_some())
                .map(|(o, s)| {
                    (
                        *o,
                        s.first_lsn,
                        s.data_len,
                        s.file.clone(),
                        s.pending_index.take().expect("checked"),
                    )
                })
        };
        let Some((ord, first_lsn, data_len, file, index)) = job else {
            return Ok(());
        };
        let (dir, label) = {
            let l = log.borrow();
            (l.dir.clone(), l.label.clone())
        };
        let new_size = data_len.next_multiple_of(BLOCK);
        if let Some(f) = &file {
            if let Err(e) = f.truncate(new_size).await {
                crate::log!(
                    0,
                    "{label}: truncating sealed segment {first_lsn:020} failed: {}",
                    to_io(e)
                );
            } else if let Some(s) = log.borrow_mut().segs.get_mut(&ord) {
                s.disk_bytes = new_size;
            }
        }
        match super::recovery::write_index(&dir, first_lsn, &index).await {
            Ok(n) => {
                if let Some(s) = log.borrow_mut().segs.get_mut(&ord) {
                    s.idx_bytes = n;
                }
            }
            Err(e) => {
                crate::log!(0, "{label}: writing index {first_lsn:020}.idx failed ({e}); it will be rebuilt on restart");
            }
        }
        if stopped(log) {
            return Err(());
        }
    }
}

/// Step 2.
async fn delete_dead(log: &Rc<RefCell<Log>>) -> Result<(), ()> {
    let (cands, target) = {
        let l = log.borrow();
        let open = l.open_ord;
        let cands: Vec<u32> = l
            .segs
            .iter()
            .filter(|(o, s)| {
                **o != open
                    && s.sealed
                    && s.complete
                    && s.pending_index.is_none()
                    && s.live == 0
                    && s.pins == 0
            })
            .map(|(o, _)| *o)
            .collect();
        let target = cands
            .iter()
            .map(|o| l.segs[o].dead_lsn)
            .max()
            .unwrap_or(0)
            .max(l.checkpoint_lsn);
        (cands, target)
    };
    if cands.is_empty() {
        return Ok(());
    }
    if log.borrow().written_lsn < target {
        // Wait for the commit that writes them; the committer wakes us.
        log.borrow_mut().maint_wake_lsn = target;
        return Ok(());
    }
    if log.borrow().synced_lsn < target {
        sync_open(log).await?;
    }
    let (dir, label) = {
        let l = log.borrow();
        (l.dir.clone(), l.label.clone())
    };
    let mut removed = 0;
    for ord in cands {
        let seg = {
            let mut l = log.borrow_mut();
            match l.segs.get(&ord) {
                Some(s) if s.live == 0 && s.pins == 0 => l.segs.remove(&ord),
                _ => None,
            }
        };
        let Some(seg) = seg else { continue };
        drop(seg.file);
        for path in [
            segment::log_path(&dir, seg.first_lsn),
            segment::idx_path(&dir, seg.first_lsn),
        ] {
            if let Err(e) = std::fs::remove_file(&path) {
                if e.raw_os_error() != Some(libc::ENOENT) {
                    crate::log!(0, "{label}: removing {} failed: {e}", path.display());
                }
            }
        }
        crate::log!(
            1,
            "{label}: segment {:020} fully consumed: deleted",
            seg.first_lsn
        );
        removed += 1;
    }
    if removed > 0 {
        if let Err(e) = sync_dir(&dir).await {
            log.borrow_mut()
                .fail(format!("directory fsync failed: {e}"));
            return Err(());
        }
        log.borrow_mut().disk_full = false;
    }
    Ok(())
}

/// Step 3.
async fn ensure_spare(log: &Rc<RefCell<Log>>) {
    let (path, size, label) = {
        let l = log.borrow();
        if l.spare.is_some() || l.disk_full || l.closed || l.failed.is_some() {
            return;
        }
        let n = SPARE_COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        (
            l.dir.join(format!("spare-{n}.tmp")),
            l.segment_size,
            l.label.clone(),
        )
    };
    match create_preallocated(&path, size).await {
        Ok(f) => {
            let kept = {
                let mut l = log.borrow_mut();
                if l.spare.is_none() && !l.closed {
                    l.spare = Some(Rc::new(f));
                    l.spare_bytes = size;
                    None
                } else {
                    Some(f)
                }
            };
            if let Some(f) = kept {
                let _ = f.close().await;
                let _ = std::fs::remove_file(&path);
            }
        }
        Err(e) if is_out_of_space(&e) => {
            crate::log!(
                0,
                "{label}: disk full ({e}): sets refused until space is freed"
            );
            log.borrow_mut().disk_full = true;
        }
        Err(e) => crate::log!(0, "{label}: creating a spare segment failed: {e}"),
    }
}

/// Step 4.
async fn compact(state: &Rc<RefCell<State>>, log: &Rc<RefCell<Log>>) {
    loop {
        let job = {
            let l = log.borrow();
            let open = l.open_ord;
            l.segs
                .iter()
                .find(|(o, s)| {
                    **o != open
                        && s.sealed
                        && s.complete
                        && s.pending_index.is_none()
                        && s.live > 0
                        && !s.no_compact
                        && s.live_bytes * 4 < s.data_len.saturating_sub(s.checkpoint_end)
                })
                .map(|(o, s)| (*o, s.file.clone(), s.data_len, s.first_lsn))
        };
        let Some((ord, Some(file), data_len, first_lsn)) = job else {
            return;
        };
        let mut stop = false;
        let res = segment::scan(&file, data_len, |h, body, off| {
            if !stop && h.kind == Kind::Enqueued {
                stop = !copy_if_live(state, log, ord, h, body, off);
            }
        })
        .await;
        let mut l = log.borrow_mut();
        let label = l.label.clone();
        match res {
            Err(e) => {
                crate::log!(
                    0,
                    "{label}: compaction read of segment {first_lsn:020} failed: {e}"
                );
                if let Some(s) = l.segs.get_mut(&ord) {
                    s.no_compact = true;
                }
                return;
            }
            Ok(_) if stop => return,
            Ok(_) => {
                if let Some(s) = l.segs.get_mut(&ord) {
                    if s.live > 0 {
                        crate::log!(
                            0,
                            "{label}: segment {first_lsn:020}: {} messages could not be copied forward (unreadable)",
                            s.live
                        );
                        s.no_compact = true;
                    } else {
                        crate::log!(1, "{label}: segment {first_lsn:020} compacted");
                    }
                }
            }
        }
        if l.closed || l.failed.is_some() {
            return;
        }
    }
}

/// Appends a copy of the record at `ord`/`off` if it is still the live copy
/// of its message. Returns false when the log has no room (stop).
fn copy_if_live(
    state: &RefCell<State>,
    log: &RefCell<Log>,
    ord: u32,
    h: &Header,
    body: &[u8],
    off: u64,
) -> bool {
    let mut st = state.borrow_mut();
    let st = &mut *st;
    let mut l = log.borrow_mut();
    let live = st
        .queues
        .get_mut(&h.queue)
        .and_then(|q| q.find_mut(h.seq))
        .is_some_and(|loc| loc.seg == ord && u64::from(loc.off) == off);
    if !live {
        return true;
    }
    if l.make_room(
        record::record_len(body.len()) as u64,
        true,
        State::checkpoint(&st.queues),
    )
    .is_err()
    {
        return false;
    }
    let (nord, noff, lsn) = l.append_at_time(Kind::Enqueued, h.queue, h.seq, h.flags, h.time, body);
    let loc = st
        .queues
        .get_mut(&h.queue)
        .and_then(|q| q.find_mut(h.seq))
        .expect("checked live");
    loc.seg = nord;
    loc.off = noff;
    let len = loc.len;
    l.retain(nord, len);
    l.release(ord, len, lsn);
    true
}

/// Verifies, once, the checksums of the sealed segments recovery loaded from
/// their index files (it did not read them), so damage is found and
/// reported even before a consumer reaches it. A damaged message is dropped
/// from its queue (logged) instead of failing a `get` later.
pub(crate) async fn scrub(state: Rc<RefCell<State>>, log: Rc<RefCell<Log>>, ords: Vec<u32>) {
    log.borrow_mut().tasks += 1;
    scrub_segments(&state, &log, ords).await;
    log.borrow_mut().tasks -= 1;
}

async fn scrub_segments(state: &Rc<RefCell<State>>, log: &Rc<RefCell<Log>>, ords: Vec<u32>) {
    for ord in ords {
        let (file, data_len, first_lsn, label) = {
            let l = log.borrow();
            if l.closed || l.failed.is_some() {
                return;
            }
            match l.segs.get(&ord) {
                Some(s) => (s.file.clone(), s.data_len, s.first_lsn, l.label.clone()),
                None => continue, // already reclaimed
            }
        };
        let Some(file) = file else { continue };
        let rep = match segment::scan(&file, data_len, |_, _, _| {}).await {
            Ok(r) => r,
            Err(e) => {
                crate::log!(0, "{label}: scrub of segment {first_lsn:020} failed: {e}");
                continue;
            }
        };
        let mut bad: Vec<(u64, u64)> = rep.corrupt.clone();
        bad.extend(rep.torn);
        for (off, len) in bad {
            crate::log!(
                0,
                "{label}: segment {first_lsn:020}: corrupt record(s) at offset {off}, {len} bytes: checksum mismatch"
            );
            drop_messages_in(state, log, ord, off, off + len);
        }
    }
}

/// Drops the queued messages whose record starts in `[from, to)` of segment
/// `ord`: their records are damaged.
fn drop_messages_in(state: &RefCell<State>, log: &RefCell<Log>, ord: u32, from: u64, to: u64) {
    let mut st = state.borrow_mut();
    let st = &mut *st;
    let mut l = log.borrow_mut();
    let lsn = l.last_lsn();
    let label = l.label.clone();
    for q in st.queues.values_mut() {
        let hit: Vec<u64> = q
            .locs
            .iter()
            .filter(|loc| loc.seg == ord && (from..to).contains(&u64::from(loc.off)))
            .map(|loc| loc.seq)
            .collect();
        for seq in hit {
            if let Some(loc) = q.remove(seq) {
                crate::log!(
                    0,
                    "{label}: message {seq} of queue {} is damaged: dropped",
                    String::from_utf8_lossy(&q.name)
                );
                l.release(ord, loc.len, lsn);
                l.corrupt_records += 1;
                st.items -= 1;
                st.bytes -= loc.body_len();
                st.cache.remove((q.id, seq));
            }
        }
    }
}
