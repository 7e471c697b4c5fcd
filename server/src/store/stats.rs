//! The counters of `stats` and `stats queue`, read from the queue table
//! and the log at one instant, so the numbers of one reply agree.
//!
//! A shard may hold a million queues, so `stats queue` is rendered here
//! straight into its reply lines ([`QueueLines`]: one buffer, a few dozen
//! bytes a queue) rather than through a [`QueueStat`] each, and `stats`
//! asks only for the queues it will list.

use std::rc::Rc;

use super::policy::now_secs;
use super::Store;
use crate::stats::{QueueLines, QueueStat, StoreStats};

impl Store {
    /// Every queue of this shard with its counters, sorted by name.
    pub fn queue_stats(&self) -> Vec<QueueStat> {
        self.queue_stats_first(usize::MAX)
    }

    /// The first `n` queues of this shard by name, with their counters.
    pub fn queue_stats_first(&self, n: usize) -> Vec<QueueStat> {
        let st = self.state.borrow();
        let log = self.log.borrow();
        let now = u64::from(now_secs());
        st.queues
            .first_by_name(n)
            .into_iter()
            .map(|(name, id)| {
                let q = &st.queues[&id];
                let age = q.head_time().map_or(0, |t| now.saturating_sub(t.into()));
                QueueStat {
                    name: name.to_vec(),
                    enqueued: q.tail(),
                    dequeued: log.dequeued(id),
                    items: q.queued().items(),
                    bytes: q.queued().bytes(),
                    expired: q.expired(),
                    discarded: q.discarded(),
                    age_ms: age * 1000,
                    waiters: self.waiters.waiting_on(name) as u64,
                    open_transactions: q.open_count() as u64,
                }
            })
            .collect()
    }

    /// `stats queue`'s lines for every queue of this shard, by name.
    pub fn queue_lines(&self) -> QueueLines {
        let st = self.state.borrow();
        let log = self.log.borrow();
        let names = st.queues.first_by_name(usize::MAX);
        // Each counter is gathered in a loop of its own: a million lookups
        // in tables of a million are cache misses, and a loop that does
        // nothing else lets the processor wait for many of them at once
        // (one loop doing both lookups and the formatting took 3x longer).
        let enqueued: Vec<u64> = names
            .iter()
            .map(|(_, id)| st.queues.get(id).map_or(0, |q| q.tail()))
            .collect();
        let dequeued: Vec<u64> = names.iter().map(|&(_, id)| log.dequeued(id)).collect();
        let mut lines = QueueLines::with_capacity(names.len());
        let mut counts = enqueued.into_iter().zip(dequeued);
        for chunk in names.chunks(256) {
            // The names are read in name order, which is no order in memory:
            // touched first in a loop of their own (the same reason as
            // above), they are in cache when the lines are written.
            let touched = chunk
                .iter()
                .fold(0u8, |x, (name, _)| x ^ name.first().copied().unwrap_or(0));
            std::hint::black_box(touched);
            for ((name, _), (e, d)) in chunk.iter().zip(&mut counts) {
                lines.push(name, e, d);
            }
        }
        lines
    }

    /// The names of this shard's queues, in no particular order: shared
    /// with the queues, not copied (a million names are checked at every
    /// start).
    pub fn queue_names(&self) -> Vec<Rc<[u8]>> {
        self.state
            .borrow()
            .queues
            .values()
            .map(|q| q.name_rc())
            .collect()
    }

    pub fn stats(&self) -> StoreStats {
        let st = self.state.borrow();
        let (log, readahead) = {
            let log = self.log.borrow();
            (log.stats(), log.reads().stats())
        };
        StoreStats {
            queues: st.names.len() as u64,
            items: st.items,
            bytes: st.bytes,
            log_writes: log.writes,
            log_fsyncs: log.fsyncs,
            log_bytes_written: log.bytes_written,
            log_unwritten_bytes: log.unwritten_bytes,
            log_segments: log.segments,
            log_disk_bytes: log.disk_bytes,
            log_corrupt_records: log.corrupt_records,
            cache_bytes: st.cache.held() as u64,
            readahead,
            get_waiters: self.waiters.count() as u64,
            open_transactions: st.queues.values().map(|q| q.open_count() as u64).sum(),
            commit_latency: log.commit_latency,
        }
    }
}
