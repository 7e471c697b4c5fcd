//! The grower: preallocates the open segment step by step, ahead of its
//! records.
//!
//! # Why preallocate at all
//! Appending is O_DIRECT writes into a file whose blocks `fallocate` has
//! already reserved. That is what lets the log tell a full disk *before* a
//! request is applied: every record is appended only below what is
//! preallocated ([`crate::log::writer`], "Allocation"), so the commit path
//! never writes where ENOSPC could refuse it, and a full disk becomes
//! `SERVER_ERROR out of space` for the next set, never a failed write of
//! records already applied (which could only stop the shard) and never a
//! lost or torn acknowledged record. The preallocation itself is the only
//! operation that meets ENOSPC, and it runs here, off the commit path.
//!
//! # Why in steps
//! Preallocating whole segments cost three segments per shard (the open one
//! and two spares), 192 MiB with the default 64 MiB segments, on a server
//! that holds nothing. Now a run's first segment file gets the consumers'
//! reserve plus one step ([`crate::log::writer::alloc_step`], 4 MiB by
//! default), the consumers' spare 16 MiB, and the sets' spare (whole) is
//! made only once the open segment is half full; this task keeps a segment
//! that is not whole one to two steps beyond the reserve preallocated as
//! records arrive: it is woken each time the records cross a step, while
//! sets still have a whole step of room. A set waits for it only if it
//! falls that far behind (then it is held like a set waiting for a spare),
//! and is refused `out of space` once a preallocation failed with ENOSPC.
//!
//! # fdatasync cost
//! `fallocate` (not keeping size) leaves unwritten extents and moves the
//! file's size to the end of the step, as whole-segment preallocation did
//! for the whole segment. A write into unwritten extents needs its
//! conversion journaled by the next fdatasync (or by the O_DSYNC write)
//! either way, so the data sync path is as before; what a step adds is its
//! size and extent change riding on one of those journal commits, once per
//! step. Writes never go past the file's size, so no fdatasync has to
//! extend it.

use super::error::IoFailure;
use super::writer::SharedLog;
use crate::disk::is_out_of_space;

/// The grower task of one shard. Runs until the log is closed or failed.
pub async fn grower(log: SharedLog) {
    log.borrow_mut().task_started();
    let notify = log.borrow().grow_signal();
    loop {
        notify.wait().await;
        grow(&log).await;
        if log.borrow().stopped() {
            break;
        }
    }
    log.borrow_mut().task_ended();
}

/// Makes every preallocation wanted now (or stops at the first failure).
async fn grow(log: &SharedLog) {
    loop {
        let job = log.borrow_mut().grow_job();
        let Some(job) = job else { return };
        let res = job.file.pre_allocate(job.len).await;
        let mut l = log.borrow_mut();
        l.grew(&job, res.is_ok());
        let label = l.label().to_string();
        match res {
            Ok(()) => {}
            Err(e) if is_out_of_space(&e) => {
                log::warn!("{label}: disk full ({e}): sets refused until space is freed");
                l.set_disk_full();
                return;
            }
            // Not a full disk: the device's failure. Stop the shard rather
            // than let requests wait for room that cannot be made.
            Err(e) => {
                log::error!("{label}: preallocating a segment failed: {e}");
                l.fail(IoFailure::new("preallocating a segment file", &e));
                return;
            }
        }
    }
}
