//! Delivering a taken message's body.
//!
//! A body is never handed out before the record that took it is
//! acknowledged, even when the body is at hand: a crash could otherwise
//! give the message out twice. A body the cache no longer holds (a
//! consumer that lags, or after a restart) is read back from its segment
//! through the log's read-ahead cache (`log::readahead`: large sequential
//! reads, the next one started ahead), and its checksum verified.

use std::rc::Rc;

use super::out_of_line::OutOfLine;
use super::reply::waits_for_log;
use super::state::Held;
use super::{Body, LogError, Message, Reply, Store};
use crate::log::error::IoFailure;
use crate::log::readahead::ReadAhead;
use crate::log::record::{self, Kind};
use crate::log::writer::SharedLog;
use crate::log::Loc;

impl Store {
    /// The reply to a get of message `loc` of queue `id` once record `lsn`
    /// is acknowledged: its body from where it is `held`. (Even with
    /// `--sync none` a read waits for the acknowledgement: the record it
    /// reads must be written first.)
    pub(super) fn deliver(
        &self,
        lsn: u64,
        id: u32,
        loc: Loc,
        held: Held,
    ) -> Reply<Option<Message>> {
        match held {
            Held::Cached(flags, body) => {
                let message = Message {
                    flags,
                    seq: loc.seq,
                    body: body.into(),
                };
                self.reply(&self.log.borrow(), lsn, 0, Some(message))
            }
            Held::Writing(wait) => self.deliver_written(lsn, id, loc, wait),
            Held::OnDisk => self.read_after(lsn, id, loc),
        }
    }

    /// [`Store::deliver`] of a message whose body is being written out of
    /// line: once record `lsn` is acknowledged and the body written, from
    /// the writer if the message was taken meanwhile, else (a peek) as any
    /// queued message's.
    pub(super) fn deliver_written(
        &self,
        lsn: u64,
        id: u32,
        loc: Loc,
        wait: Rc<OutOfLine>,
    ) -> Reply<Option<Message>> {
        let acked = waits_for_log(&self.log.borrow(), 0).then(|| self.acked(lsn));
        let store = self.clone();
        Reply::later(async move {
            if let Some(acked) = acked {
                acked.await?;
            }
            wait.wait().await?;
            let held = match wait.take_body() {
                Some(body) => Held::Cached(wait.flags, body),
                // Still queued (a peek): the body went to the cache, if it
                // took it.
                None => store.state.borrow_mut().held((id, loc.seq), false),
            };
            store.deliver(lsn, id, loc, held).await
        })
    }

    /// Reads message `loc` of queue `id` from its segment, to be replied
    /// once record `lsn` (at or after the message's own) is acknowledged.
    ///
    /// A record already written is read at once: from the read-ahead
    /// cache when a chunk holds it (no task, no pin), else through it,
    /// beside the wait for `lsn`. Its reply then waits for `lsn` as a
    /// cached body's would (with `--sync none`, not at all). A record not
    /// known to be written (it may still be in the log buffer, or in an
    /// out-of-line region) is read once `lsn` is acknowledged, which
    /// covers it. The segment is pinned while a read is in flight.
    pub(super) fn read_after(&self, lsn: u64, id: u32, loc: Loc) -> Reply<Option<Message>> {
        let log = self.log.borrow();
        let (seg, off, len) = (loc.pos.seg, u64::from(loc.pos.off), loc.len as usize);
        // An out-of-line body's region may be written after the records
        // around it: only its set's acknowledgement says it is.
        let in_line = !log.out_of_line(loc.body_len() as usize);
        let cacheable = in_line && ReadAhead::cacheable(len);
        let src = log.read_source(seg);
        let written = in_line && src.as_ref().is_some_and(|s| s.readable >= off + len as u64);
        if let Some(src) = src.filter(|_| cacheable && written) {
            let reads = log.reads();
            if let Some(bytes) = reads.cached(seg, off, len) {
                reads.read_ahead(seg, off, &src, || log.next_source(seg));
                return match verify(bytes, id, loc) {
                    Some(message) => self.reply(&log, lsn, 0, Some(message)),
                    None => {
                        let label = log.label().to_string();
                        let first_lsn = log.seg(seg).map_or(0, |s| s.first_lsn);
                        drop(log);
                        let err = corrupt(&self.log, &label, first_lsn, id, loc);
                        let acked = self.acked(lsn);
                        Reply::later(async move {
                            acked.await?;
                            Err(err)
                        })
                    }
                };
            }
        }
        let waits = !written || waits_for_log(&log, 0);
        drop(log);
        let acked = waits.then(|| self.acked(lsn));
        self.log.borrow_mut().pin(seg);
        let pin = ReadPin {
            log: self.log.clone(),
            ord: seg,
        };
        Reply::later(async move {
            let r = match acked {
                Some(acked) if written => {
                    let (acked, read) = futures_lite::future::zip(
                        acked,
                        read_message(&pin.log, id, loc, cacheable),
                    )
                    .await;
                    acked.and(read)
                }
                Some(acked) => match acked.await {
                    Ok(()) => read_message(&pin.log, id, loc, cacheable).await,
                    Err(e) => Err(e),
                },
                None => read_message(&pin.log, id, loc, cacheable).await,
            };
            drop(pin);
            r.map(Some)
        })
    }
}

/// Keeps a segment from being deleted while a read of it is in flight.
struct ReadPin {
    log: SharedLog,
    ord: u32,
}

impl Drop for ReadPin {
    fn drop(&mut self) {
        self.log.borrow_mut().unpin(self.ord);
    }
}

/// Reads message `loc` of queue `id` from its segment and verifies it:
/// through the read-ahead cache if `cacheable`. Called once the record is
/// written (by then a just-rolled segment, where a compaction copy may
/// have moved the message, has its file).
async fn read_message(
    log: &SharedLog,
    id: u32,
    loc: Loc,
    cacheable: bool,
) -> Result<Message, LogError> {
    let (seg, off, len) = (loc.pos.seg, u64::from(loc.pos.off), loc.len as usize);
    let (src, reads, label, first_lsn) = {
        let l = log.borrow();
        (
            l.read_source(seg),
            l.reads(),
            l.label().to_string(),
            l.seg(seg).map_or(0, |s| s.first_lsn),
        )
    };
    let Some(mut src) = src else {
        return Err(LogError::Read(IoFailure {
            op: "message read",
            errno: None,
            message: format!("segment of queue message {} is gone", loc.seq),
        }));
    };
    // The record is written: so is everything before it in its segment
    // (out-of-line regions aside), though a segment sealed with its last
    // batch still in flight does not say so yet.
    src.readable = src.readable.max(off + len as u64);
    let data = if cacheable {
        reads.read(seg, off, len, &src).await
    } else {
        src.file.read_at(off, len).await
    };
    let data = data.map_err(|e| {
        log::warn!("{label}: read of segment {first_lsn:020} at {off} failed: {e}");
        LogError::Read(IoFailure::new("message read", &e))
    })?;
    if cacheable {
        let l = log.borrow();
        reads.read_ahead(seg, off, &src, || l.next_source(seg));
    }
    verify(data, id, loc).ok_or_else(|| corrupt(log, &label, first_lsn, id, loc))
}

/// The message in `data`, the record of message `loc` of queue `id` read
/// back, if it checks out.
fn verify(data: Vec<u8>, id: u32, loc: Loc) -> Option<Message> {
    match record::decode(&data) {
        Ok((h, body)) if h.kind == Kind::Enqueued && h.queue == id && h.seq == loc.seq => {
            // The body stays where the read put it, behind its header.
            let (start, len) = (body.as_ptr() as usize - data.as_ptr() as usize, body.len());
            Some(Message {
                flags: h.flags,
                seq: loc.seq,
                body: Body::within(data, start, len),
            })
        }
        _ => None,
    }
}

/// Logs and counts the corrupt record of message `loc` of queue `id` in
/// segment `first_lsn`; the error its get gets.
fn corrupt(log: &SharedLog, label: &str, first_lsn: u64, id: u32, loc: Loc) -> LogError {
    log::warn!(
        "{label}: segment {first_lsn:020}: corrupt record at offset {} (queue id {id}, message {}): skipped",
        loc.pos.off,
        loc.seq
    );
    log.borrow_mut().note_corrupt(1);
    LogError::Corrupt { seq: loc.seq }
}
