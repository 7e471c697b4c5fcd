//! Appending records: every record goes through [`Log::append_header`],
//! which hands out its lsn, packs it into the tail, indexes it and nudges
//! the committer, so no record can skip one of those. The queue changes
//! the store logs are here, each keeping the catalog and the segments' live
//! counts in step with the record it appends.

use std::rc::Rc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use super::acks::FLUSH_BYTES;
use super::Log;
use crate::log::record::{self, Header, Kind, HEADER_LEN};
use crate::log::region::Region;
use crate::log::{segment, Pos, SyncMode};

/// What an `Enqueued` record carries besides the body.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MessageMeta {
    pub flags: u32,
    /// Enqueue time, microseconds since the Unix epoch.
    pub time: u64,
    /// Unix seconds when it expires; 0 never.
    pub expires: u32,
}

/// The `Enqueued` record header of message `seq` of queue `id` (its lsn is
/// assigned when it is appended).
fn message_header(id: u32, seq: u64, msg: MessageMeta, body_len: usize) -> Header {
    Header {
        kind: Kind::Enqueued,
        queue: id,
        lsn: 0,
        seq,
        time: msg.time,
        flags: msg.flags,
        expires: msg.expires,
        len: body_len as u32,
    }
}

/// Microseconds since the Unix epoch.
pub fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

impl Log {
    /// Appends one record to the open segment; returns where and its lsn.
    /// The caller has made room.
    pub(super) fn append(&mut self, kind: Kind, queue: u32, seq: u64, body: &[u8]) -> (Pos, u64) {
        self.append_header(
            Header {
                kind,
                queue,
                lsn: 0,
                seq,
                time: now_us(),
                flags: 0,
                expires: 0,
                len: body.len() as u32,
            },
            body,
            None,
        )
    }

    /// [`Log::append`] with the header's every field given (the lsn is
    /// assigned here).
    fn append_header(&mut self, mut h: Header, body: &[u8], body_crc: Option<u32>) -> (Pos, u64) {
        let lsn = self.progress.take_lsn();
        h.lsn = lsn;
        let open = &mut self.open;
        let (off, nudge) = open.tail.append(&h, body, body_crc);
        if self.backlog.batch_opened.is_none() {
            self.backlog.batch_opened = Some(Instant::now());
        }
        open.builder.record(&h, body, off);
        if let SyncMode::None { flush, .. } = self.cfg.sync {
            if nudge {
                self.backlog.first_unwritten = Some(Instant::now());
                self.signals.committer.notify();
            } else if open.tail.unwritten() >= FLUSH_BYTES || {
                // The clock is read every 16th append only (a clock read
                // per set was 1% of a pipelined shard's CPU); 16 appends
                // take microseconds, the flush period a millisecond.
                self.backlog.appends_unchecked += 1;
                self.backlog.appends_unchecked.is_multiple_of(16)
                    && self
                        .backlog
                        .first_unwritten
                        .is_some_and(|t| t.elapsed() >= flush)
            } {
                // Full, or due. The committer's flush timer is not enough:
                // glommio fires timers between runs of a task queue, and a
                // busy shard's queue runs up to its 100 ms preemption
                // period; acknowledged sets up to 0.4-1.1 s old were lost
                // to a kill -9 beside a cold drain
                // (tests/tests/none_flush.rs). Every append checks instead.
                self.signals.committer.notify();
            }
        } else if nudge {
            self.signals.committer.notify();
        }
        let pos = Pos {
            seg: open.ord,
            off: off as u32,
        };
        (pos, lsn)
    }

    /// Logs a new queue named `name` (the catalog keeps this copy of the
    /// name: shared, not copied); returns its id and the record's lsn.
    pub fn create_queue(&mut self, name: Rc<[u8]>) -> (u32, u64) {
        let body = record::created_body(0, 0, &name);
        let id = self.catalog.create(name, self.open.ord);
        let (_, lsn) = self.append(Kind::Created, id, 0, &body);
        (id, lsn)
    }

    /// Logs message `seq` of queue `id` (`msg` says its flags, enqueue
    /// time and expiry, which copies keep); it is live in the returned
    /// segment from now on. `body_crc` is `crc32c(body)` if computed
    /// already (see [`record::encode_with`]).
    pub fn enqueue(
        &mut self,
        id: u32,
        seq: u64,
        msg: MessageMeta,
        body: &[u8],
        body_crc: Option<u32>,
    ) -> (Pos, u64) {
        let h = message_header(id, seq, msg, body.len());
        let (pos, lsn) = self.append_header(h, body, body_crc);
        self.enqueued(&h, pos.seg);
        (pos, lsn)
    }

    /// Message `h` of its queue is logged, its record in segment `seg`:
    /// the segment's live count takes it in. (The queue's tail is the
    /// store's: see `catalog`.)
    fn enqueued(&mut self, h: &Header, seg: u32) {
        if let Some(s) = self.segs.get_mut(seg) {
            s.count_live((HEADER_LEN + h.len as usize) as u32);
        }
    }

    /// Bytes of segment a message with a body of `body_len` bytes takes:
    /// its record, or, written out of line, its `Region` record, the
    /// padding to the next block and the region.
    pub fn message_room(&self, body_len: usize) -> u64 {
        if self.out_of_line(body_len) {
            (record::record_len(8) as u64) + segment::BLOCK + record::region_span(body_len)
        } else {
            record::record_len(body_len) as u64
        }
    }

    /// Whether a body of `body_len` bytes is written out of line.
    pub fn out_of_line(&self, body_len: usize) -> bool {
        body_len >= self.cfg.region_min
    }

    /// Logs message `seq` of queue `id` out of line (the caller made
    /// [`Log::message_room`] for it): appends its `Region` record and
    /// leaves the region after it to [`crate::log::region::write`]. The
    /// message is live in the returned region's segment from now on, like
    /// one [`Log::enqueue`] logs; its record's lsn is one below the
    /// `Region` record's.
    pub fn enqueue_region(
        &mut self,
        id: u32,
        seq: u64,
        msg: MessageMeta,
        body_len: usize,
    ) -> Region {
        // The message's own lsn first, then the Region record's: the batch
        // that writes the Region record carries the highest lsn handed out.
        let lsn = self.progress.take_lsn();
        let marker = Header {
            kind: Kind::Region,
            queue: id,
            lsn: 0,
            seq,
            time: msg.time,
            flags: 0,
            expires: 0,
            len: 8,
        };
        let (_, marker_lsn) = self.append_header(marker, &record::region_body(body_len), None);
        let span = record::region_span(body_len);
        let ord = self.open.ord;
        let off = self.open.tail.skip(ord, span);
        let h = Header {
            lsn,
            ..message_header(id, seq, msg, body_len)
        };
        self.open.builder.enqueued(&h, off);
        self.enqueued(&h, ord);
        if let Some(seg) = self.segs.get_mut(ord) {
            seg.regions += 1;
        }
        self.backlog.regions_unwritten += span;
        Region {
            seg: ord,
            off,
            marker_lsn,
            header: h,
        }
    }

    /// Logs that messages `[seq, end)` of queue `id` are consumed; `low`
    /// is the queue's lowest message still unconsumed after them (queued
    /// or handed out by a reliable read; its tail when there is none).
    /// When nothing below `seq` is left, that is a new head (`Consumed`);
    /// otherwise the range is consumed out of order (`Confirmed`).
    pub fn consume(&mut self, id: u32, seq: u64, end: u64, low: u64) -> u64 {
        // `low` is not in `[seq, end)`: either nothing below `end` is left
        // or something below `seq` is.
        if low >= end {
            self.catalog.consumed_below(id, low);
            self.append(Kind::Consumed, id, low, &[]).1
        } else {
            self.catalog.confirmed(id, seq, end);
            let body = record::confirmed_body(end);
            self.append(Kind::Confirmed, id, seq, &body).1
        }
    }

    /// Messages of queue `id` consumed so far (`stats queue`'s dequeued).
    pub fn dequeued(&self, id: u32) -> u64 {
        self.catalog.dequeued(id)
    }

    /// Logs that queue `id` is deleted.
    pub fn delete_queue(&mut self, id: u32) -> u64 {
        self.catalog.remove(id);
        self.append(Kind::Deleted, id, 0, &[]).1
    }

    /// Appends a copy of message record `h`/`body` (compaction): the same
    /// queue, seq, flags, times and body, live in the returned segment.
    /// The caller has made room.
    pub(in crate::log) fn append_copy(&mut self, h: &Header, body: &[u8]) -> (Pos, u64) {
        let meta = MessageMeta {
            flags: h.flags,
            time: h.time,
            expires: h.expires,
        };
        self.enqueue(h.queue, h.seq, meta, body, None)
    }
}
