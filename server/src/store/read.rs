//! Delivering a taken message's body.
//!
//! A body is never handed out before the record that took it is
//! acknowledged, even when the body is at hand: a crash could otherwise
//! give the message out twice. A body the cache no longer holds (a
//! consumer that lags) is read from its segment, pinned meanwhile, and its
//! checksum verified.

use std::rc::Rc;

use super::out_of_line::OutOfLine;
use super::reply::waits_for_log;
use super::state::Held;
use super::{Body, LogError, Message, Reply, Store};
use crate::log::error::IoFailure;
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

    /// Reads message `loc` of queue `id` from its segment once record `lsn`
    /// (at or after the message's own) is acknowledged; the segment is
    /// pinned until then.
    pub(super) fn read_after(&self, lsn: u64, id: u32, loc: Loc) -> Reply<Option<Message>> {
        let acked = self.acked(lsn);
        self.log.borrow_mut().pin(loc.pos.seg);
        let pin = ReadPin {
            log: self.log.clone(),
            ord: loc.pos.seg,
        };
        Reply::later(async move {
            acked.await?;
            let r = read_message(&pin.log, id, loc).await;
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

/// Reads message `loc` of queue `id` from its segment and verifies it.
/// Called once the pop is acknowledged: by then a just-rolled segment (a
/// compaction copy may have moved the message there) has its file.
async fn read_message(log: &SharedLog, id: u32, loc: Loc) -> Result<Message, LogError> {
    let (file, label, first_lsn) = {
        let l = log.borrow();
        let seg = l.seg(loc.pos.seg);
        (
            seg.and_then(|s| s.file.clone()),
            l.label().to_string(),
            seg.map_or(0, |s| s.first_lsn),
        )
    };
    let Some(file) = file else {
        return Err(LogError::Read(IoFailure {
            op: "message read",
            errno: None,
            message: format!("segment of queue message {} is gone", loc.seq),
        }));
    };
    let data = file
        .read_at(u64::from(loc.pos.off), loc.len as usize)
        .await
        .map_err(|e| {
            log::warn!(
                "{label}: read of segment {first_lsn:020} at {} failed: {e}",
                loc.pos.off
            );
            LogError::Read(IoFailure::new("message read", &e))
        })?;
    match record::decode(&data) {
        Ok((h, body)) if h.kind == Kind::Enqueued && h.queue == id && h.seq == loc.seq => {
            // The body stays where the read put it, behind its header.
            let (start, len) = (body.as_ptr() as usize - data.as_ptr() as usize, body.len());
            Ok(Message {
                flags: h.flags,
                seq: loc.seq,
                body: Body::within(data, start, len),
            })
        }
        _ => {
            log::warn!(
                "{label}: segment {first_lsn:020}: corrupt record at offset {} (queue id {id}, message {}): skipped",
                loc.pos.off,
                loc.seq
            );
            log.borrow_mut().note_corrupt(1);
            Err(LogError::Corrupt { seq: loc.seq })
        }
    }
}
