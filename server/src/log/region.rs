//! Large message bodies, written out of line.
//!
//! # Why
//! A record is acknowledged only once every record before it in the log is
//! written (and, with `--sync always`, synced): recovery keeps a segment's
//! records up to the first one missing, so acknowledging a later record
//! first could bring back, after a crash, a pop without the set before it.
//! An 8 MiB body written in the log like any record therefore held every
//! small request appended after it for the whole of its write: the small
//! requests' p99 beside a flood of 8 MB messages was 50–130 ms with the
//! durable rungs (issue 8's fairness runs in `bench-results/`).
//!
//! # How
//! A body of at least `region_min` bytes gets a small `Region` record in the
//! tail, which the next batch writes like any other, and the whole blocks
//! right after it: the *region*, which holds the message's `Enqueued`
//! record and nothing else. The tail goes on after the region (see
//! `tail::Tail::skip`), so later records never wait for it;
//! [`write()`] fills it, a `commit::WRITE_CHUNK` at a time with [`IN_FLIGHT`]
//! write outstanding, so a batch's small write never queues at the device
//! behind more than one piece of it.
//!
//! The set is acknowledged once the `Region` record is and the region is
//! written and synced; a get of the message waits for the region as well
//! (`store`), so no consumer sees a message a crash could take back.
//! The region gets an fdatasync of its own in every sync mode (unless its
//! writes are O_DSYNC): the interval syncer and the seal of a segment cover
//! what batches wrote, and a region's writes may complete after both.
//!
//! # After a crash
//! The `Region` record was written before the region, so a region that does
//! not verify belongs to a set that was never acknowledged (or to damage).
//! The scan (`segment::scan`) reports it unfinished and hands on the
//! `Region` record alone, which counts the message's sequence number as
//! enqueued: a pop of it that was logged still finds its set's number, so
//! the counters agree (`dequeued <= enqueued`).
//!
//! Until its regions are written a segment is not indexed, compacted or
//! deleted (`writer::Seg::regions`).

use std::collections::VecDeque;

use super::commit::{count_written, Acked, WRITE_CHUNK};
use super::error::{IoFailure, LogError};
use super::record::{self, Header, HEADER_LEN};
use super::writer::SharedLog;
use crate::disk::{DiskFile, Started};
use crate::turn;

/// Region writes outstanding at once: a small batch's write queues at the
/// device behind at most this many chunks. Measured on the development VM
/// (the fairness test, `--sync always` / `interval=10`, small p99 beside
/// the 8 MB flood, medians of 3 rounds in one run): 1 in flight 15.1 /
/// 13.3 ms against 21.1 / 20.3 ms with 4, for 9% less flood (584 / 696
/// against 641 / 714 MB/s); 2 against 4 was within the noise
/// (`bench-results/2026-12-05-issue8-region-inflight*.log`).
pub const IN_FLIGHT: usize = 1;

/// Where one out-of-line body goes.
#[derive(Clone, Copy, Debug)]
pub struct Region {
    /// Segment ordinal.
    pub seg: u32,
    /// Offset of the region (a block boundary).
    pub off: u64,
    /// The `Region` record's lsn: once it is acknowledged the segment has
    /// its file.
    pub marker_lsn: u64,
    /// The message's `Enqueued` record header (lsn and all).
    pub header: Header,
}

impl Region {
    /// Bytes the region fills.
    pub fn span(&self) -> u64 {
        record::region_span(self.header.len as usize)
    }
}

/// Writes `body` into `region` (see the module doc) and syncs it. A failed
/// write or sync fails the log. Either way the log is told the region is
/// done with.
pub async fn write(
    log: &SharedLog,
    region: &Region,
    body: &[u8],
    body_crc: Option<u32>,
) -> Result<(), LogError> {
    log.borrow_mut().task_started();
    let res = fill(log, region, body, body_crc).await;
    let mut l = log.borrow_mut();
    let res = match res {
        // Written and synced; but if the log failed meanwhile, nothing is
        // acknowledged any more (see `writer`).
        Ok(()) => match l.check() {
            Err(e @ LogError::Failed(_)) => Err(e),
            _ => Ok(()),
        },
        Err(Failure::Log(e)) => Err(e),
        Err(Failure::Io(why)) => {
            l.fail(why);
            l.check()
        }
    };
    l.region_done(region.seg, region.span());
    l.task_ended();
    res
}

enum Failure {
    /// The log failed or closed before the region could be written.
    Log(LogError),
    /// Writing the region failed.
    Io(IoFailure),
}

async fn fill(
    log: &SharedLog,
    region: &Region,
    body: &[u8],
    body_crc: Option<u32>,
) -> Result<(), Failure> {
    Acked {
        log: log.clone(),
        lsn: region.marker_lsn,
    }
    .await
    .map_err(Failure::Log)?;
    let file = log
        .borrow()
        .seg(region.seg)
        .and_then(|s| s.file.clone())
        .ok_or_else(|| {
            Failure::Io(IoFailure {
                op: "region write",
                errno: None,
                message: format!("segment {} has no file", region.seg),
            })
        })?;
    let crc = match body_crc {
        Some(crc) => crc,
        None => turn::checksum(body).await,
    };
    let head = record::encode_header(&region.header, crc);
    let span = region.span() as usize;
    let mut writes = VecDeque::new();
    let mut first_err = None;
    let mut at = 0;
    while at < span {
        let n = (span - at).min(WRITE_CHUNK);
        if let Err(e) = stop_if_failed(log) {
            first_err = Some(e);
            break;
        }
        let chunk = region_bytes(&head, body, at, n);
        if writes.len() == IN_FLIGHT {
            let oldest: Started<_> = writes.pop_front().expect("in flight");
            if let Err(e) = finished(log, &*file, oldest.finish().await) {
                first_err = Some(e);
                break;
            }
        }
        let (file, pos) = (file.clone(), region.off + at as u64);
        let write = async move {
            let res = file.write_at(pos, &chunk).await;
            (res, chunk.len())
        };
        writes.push_back(Started::start(write).await);
        at += n;
        turn::pause().await;
    }
    // Await every write, even after a failure: none may still be in flight
    // when the log is declared failed.
    while let Some(w) = writes.pop_front() {
        if let Err(e) = finished(log, &*file, w.finish().await) {
            first_err.get_or_insert(e);
        }
    }
    if let Some(e) = first_err {
        return Err(e);
    }
    if !file.durable_writes() {
        stop_if_failed(log)?;
        file.fdatasync()
            .await
            .map_err(|e| Failure::Io(IoFailure::new("fdatasync", &e)))?;
        log.borrow_mut().count_fsync();
    }
    Ok(())
}

/// After a failure (or a simulated crash) nothing more is written.
fn stop_if_failed(log: &SharedLog) -> Result<(), Failure> {
    match log.borrow().check() {
        Err(e @ LogError::Failed(_)) => Err(Failure::Log(e)),
        _ => Ok(()),
    }
}

/// Counts one completed write, or says why it failed.
fn finished(
    log: &SharedLog,
    file: &dyn DiskFile,
    done: (std::io::Result<usize>, usize),
) -> Result<(), Failure> {
    count_written(log, file, "region write", done).map_err(Failure::Io)
}

/// Bytes `[at, at + n)` of the region: the record's header, its body, then
/// zeros.
fn region_bytes(head: &[u8; HEADER_LEN], body: &[u8], at: usize, n: usize) -> Vec<u8> {
    let mut chunk = Vec::with_capacity(n);
    if at < HEADER_LEN {
        chunk.extend_from_slice(&head[at..HEADER_LEN.min(at + n)]);
    }
    let from = at.max(HEADER_LEN) - HEADER_LEN;
    let to = (at + n).saturating_sub(HEADER_LEN).min(body.len());
    if from < to {
        chunk.extend_from_slice(&body[from..to]);
    }
    chunk.resize(n, 0);
    chunk
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_region_is_the_record_then_zeros_in_any_pieces() {
        let body: Vec<u8> = (0..10_000).map(|i| (i % 251) as u8 + 1).collect();
        let h = record::message_header(9, body.len());
        let head = record::encode_header(&h, crc32c::crc32c(&body));
        let mut whole = Vec::new();
        record::encode_into(&mut whole, &h, &body);
        let span = record::region_span(body.len()) as usize;
        whole.resize(span, 0);
        for piece in [1, 7, 48, 4096, 5000, span] {
            let mut joined = Vec::new();
            let mut at = 0;
            while at < span {
                let n = (span - at).min(piece);
                joined.extend(region_bytes(&head, &body, at, n));
                at += n;
            }
            assert_eq!(joined, whole, "pieces of {piece}");
        }
    }
}
