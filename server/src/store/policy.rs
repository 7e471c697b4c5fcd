//! Expiry and the per-queue limits: the ways a message leaves its queue
//! without a consumer taking it.
//!
//! Both are applied by the request that meets them (a take meets an
//! expired head, a set a full queue) rather than by a sweep of their own:
//! a queue without limits pays nothing, and what they drop is logged in the
//! same batch as the request that dropped it.

use super::moves::Moves;
use super::state::State;
use crate::limits::QueueLimits;
use crate::log::{record, Log};
use crate::queue::{Dropped, Queue};

impl State {
    /// What appending a `len`-byte message to queue `id` may log: its
    /// record, and what dropping the oldest to make room
    /// (`discard_old_when_full`) may.
    pub(super) fn room_for_message(&mut self, id: u32, record: u64) -> u64 {
        let discard = self.limits_of(id).is_some_and(|l| l.discard_old_when_full);
        let mut need = record;
        if discard {
            need += stretch_room(&self.queues[&id]);
        }
        need
    }

    /// Whether the head of queue `id` may have expired: it has an
    /// `exptime`, or the queue a `max_age` (the usual case, neither, costs
    /// no clock read).
    pub(super) fn may_expire(&mut self, id: u32) -> bool {
        let Some(q) = self.queues.get_mut(&id) else {
            return false;
        };
        match q.queued().head() {
            None => false,
            Some(head) if head.expires != 0 => true,
            Some(_) => q
                .limits(&self.limits, self.limits_generation)
                .max_age
                .is_some(),
        }
    }

    /// Whether a take of queue `id` can be served from its resident
    /// messages: one that has not expired comes before any paged run (or
    /// nothing is queued behind the expired ones). `may_expire` is
    /// [`State::may_expire`]`(id)`, which the caller needs too.
    pub(super) fn ready(&mut self, id: u32, may_expire: bool) -> bool {
        let Some(q) = self.queues.get(&id) else {
            return true;
        };
        if q.queued().head().is_none() {
            // Empty, or a paged run first.
            return q.queued().ready(|_| false).is_ok();
        }
        // The usual case: a resident head and nothing that expires.
        if !may_expire {
            return true;
        }
        let max_age = self
            .limits_of(id)
            .and_then(|l| l.max_age.map(|a| a.as_secs()));
        let q = &self.queues[&id];
        let now = now_secs();
        let gone = |l: &crate::log::Loc| {
            l.expired(now)
                || max_age
                    .zip(q.time_of(l.seq))
                    .is_some_and(|(age, at)| u64::from(at) + age < u64::from(now))
        };
        q.queued().ready(gone).is_ok()
    }

    /// The queue a take of `name` reads (see [`State::id_for_get`]; `known`
    /// if the caller looked it up), its expired head gone: `None` when
    /// there is no such queue.
    pub(super) fn take_from(
        &mut self,
        log: &mut Log,
        moves: &Moves,
        name: &[u8],
        known: Option<u32>,
    ) -> Option<u32> {
        let id = match known {
            Some(id) => id,
            None => self.id_for_get(log, name)?,
        };
        self.drop_expired(log, moves, id);
        Some(id)
    }

    /// Takes the expired messages off the head of queue `id` (past their
    /// `exptime`, or older than the queue's `max_age`): an expired message
    /// is never handed out. They count as expired, and are consumed (in the
    /// log, and in `stats queue`), or with `expire_to` opened for `moves`
    /// to carry to their new queue.
    fn drop_expired(&mut self, log: &mut Log, moves: &Moves, id: u32) {
        if !self.may_expire(id) {
            return;
        }
        let now = now_secs();
        let (max_age, expire_to) = self
            .limits_of(id)
            .map(|l| (l.max_age.map(|a| a.as_secs()), l.expire_to.clone()))
            .unwrap_or_default();
        let expired = |q: &Queue| {
            let Some(head) = q.queued().head() else {
                return false;
            };
            // Enqueue times are kept to the second: strictly older, so a
            // message never expires early (up to a second late).
            let aged = max_age
                .zip(q.head_time())
                .is_some_and(|(age, at)| u64::from(at) + age < u64::from(now));
            head.expired(now) || aged
        };
        let Some(q) = self.queues.get_mut(&id) else {
            return;
        };
        let target = expire_to.filter(|t| moves.can_move() && t[..] != *q.name());
        let n = match target {
            Some(target) => {
                let mut n = 0;
                while expired(q) {
                    let reader = moves.reader();
                    let Some(loc) = q.open(reader) else {
                        break;
                    };
                    moves.push(id, loc.seq, reader, &target);
                    self.items -= 1;
                    self.bytes -= loc.body_len();
                    n += 1;
                }
                n
            }
            None => self.drop_head(log, id, false, expired),
        };
        if let Some(q) = self.queues.get_mut(&id) {
            q.count_expired(n);
        }
    }

    /// Whether queue `queue`'s limits let a message of `len` bytes in, once
    /// `discard_old_when_full` dropped what it must (it drops them here).
    /// `id` is the queue's id if it exists (`id_of(queue)`: the caller
    /// looked it up already).
    pub(super) fn admit(&mut self, log: &mut Log, id: Option<u32>, queue: &[u8], len: u64) -> bool {
        let caps = |l: &QueueLimits| {
            (
                l.max_items,
                l.max_bytes,
                l.max_item_size,
                l.discard_old_when_full,
            )
        };
        let (max_items, max_bytes, max_item_size, discard_old) = match id {
            Some(id) => self.limits_of(id).map(caps).unwrap_or_default(),
            None => caps(&self.limits.for_queue(queue)),
        };
        if max_item_size.is_some_and(|max| len > max)
            || max_bytes.is_some_and(|max| len > max)
            || max_items == Some(0)
        {
            return false;
        }
        let Some(id) = id else {
            return true;
        };
        let full = |q: &Queue| {
            max_items.is_some_and(|max| q.queued().items() >= max)
                || max_bytes.is_some_and(|max| q.queued().bytes() + len > max)
        };
        if !full(&self.queues[&id]) {
            return true;
        }
        if !discard_old {
            return false;
        }
        let n = self.drop_head(log, id, false, full);
        if let Some(q) = self.queues.get_mut(&id) {
            q.count_discarded(n);
        }
        true
    }

    /// Drops messages from the head of queue `id` while `more` says so;
    /// they count as consumed. Returns how many. With `whole_runs`, a
    /// paged run at the head goes at once, unread (`flush`); otherwise
    /// dropping stops there (`more` cannot judge a message not in memory).
    pub(super) fn drop_head(
        &mut self,
        log: &mut Log,
        id: u32,
        whole_runs: bool,
        mut more: impl FnMut(&Queue) -> bool,
    ) -> u64 {
        let Some(q) = self.queues.get_mut(&id) else {
            return 0;
        };
        let mut dropped = Vec::new();
        while more(q) {
            let d = if whole_runs {
                q.queued_mut().drop_front()
            } else {
                q.pop().map(Dropped::One)
            };
            let Some(d) = d else {
                break;
            };
            dropped.push(d);
        }
        q.forget_times();
        let span = |d: &Dropped| match d {
            Dropped::One(loc) => (loc.seq, loc.seq + 1),
            Dropped::Run(p) => (p.lo, p.end()),
        };
        let (Some(first), Some(last)) = (dropped.first(), dropped.last()) else {
            return 0;
        };
        let lsn = consume_stretch(log, q, span(first).0, span(last).1);
        let mut n = 0;
        for d in &dropped {
            match d {
                Dropped::One(loc) => {
                    log.release(loc.pos.seg, loc.len, lsn);
                    self.cache.remove((id, loc.seq));
                    self.items -= 1;
                    self.bytes -= loc.body_len();
                    n += 1;
                }
                Dropped::Run(p) => {
                    log.release_run(p.seg, u64::from(p.count), u64::from(p.rec_bytes), lsn);
                    self.items -= u64::from(p.count);
                    self.bytes -= p.body_bytes();
                    n += u64::from(p.count);
                }
            }
        }
        n
    }
}

/// The most [`consume_stretch`] may log for `q`: a record per stretch
/// between its open messages.
pub(super) fn stretch_room(q: &Queue) -> u64 {
    (q.open_count() as u64 + 1) * record::record_len(8) as u64
}

/// Logs that every message of `q` in `[first, end)` but the open ones is
/// consumed (they are gone from `q` already): one record per stretch
/// between open messages. Returns the last record's lsn.
fn consume_stretch(log: &mut Log, q: &Queue, first: u64, end: u64) -> u64 {
    let opens: Vec<u64> = q.open_in(first..end).collect();
    let mut lsn = log.last_lsn();
    let mut start = first;
    for stop in opens.into_iter().chain([end]) {
        if start < stop {
            lsn = log.consume(q.id(), start, stop, q.low());
        }
        start = stop + 1;
    }
    lsn
}

/// Now, in Unix seconds (what message expiry is measured in).
pub fn now_secs() -> u32 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs().min(u64::from(u32::MAX)) as u32)
}
