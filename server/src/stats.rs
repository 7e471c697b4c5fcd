//! `stats`: process-wide counters. Each executor owns one [`Counters`] and is
//! the only writer of it; `stats` sums them all. A count is a plain load and
//! store, not a locked read-modify-write, and each executor's counters sit
//! on cache lines of their own, so counting costs no bus traffic on the
//! request path (issue 8).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use crate::net::Shared;
use crate::protocol::reply;
use crate::store::{QueueStat, StoreStats};

/// One counter, written by its executor only and read by any. `stats reset`
/// (which any executor may run) moves a baseline instead of writing the
/// count, so it never races the one writer.
#[derive(Default, Debug)]
pub struct Counter {
    total: AtomicU64,
    baseline: AtomicU64,
}

impl Counter {
    /// Counts `n` more. Only the owning executor calls this.
    pub fn add(&self, n: u64) {
        let now = self.total.load(Ordering::Relaxed);
        self.total.store(now.wrapping_add(n), Ordering::Relaxed);
    }

    /// The count since the last reset.
    pub fn get(&self) -> u64 {
        let total = self.total.load(Ordering::Relaxed);
        total.saturating_sub(self.baseline.load(Ordering::Relaxed))
    }

    fn reset(&self) {
        self.baseline
            .store(self.total.load(Ordering::Relaxed), Ordering::Relaxed);
    }
}

/// One executor's request counters, on cache lines no other executor's
/// counters share (128 bytes: a line and its prefetched neighbour).
#[derive(Default, Debug)]
#[repr(align(128))]
pub struct Counters {
    pub cmd_get: Counter,
    pub get_hits: Counter,
    pub get_misses: Counter,
    pub cmd_set: Counter,
    pub bytes_read: Counter,
    pub bytes_written: Counter,
}

impl Counters {
    pub fn add(&self, counter: &Counter, n: u64) {
        counter.add(n);
    }

    /// `stats reset`.
    pub fn reset(&self) {
        for c in [
            &self.cmd_get,
            &self.get_hits,
            &self.get_misses,
            &self.cmd_set,
            &self.bytes_read,
            &self.bytes_written,
        ] {
            c.reset();
        }
    }
}

/// Facts about the process, fixed at start.
#[derive(Debug)]
pub struct ServerInfo {
    pub started: Instant,
    pub threads: usize,
}

fn sum(shared: &Shared, pick: impl Fn(&Counters) -> &Counter) -> u64 {
    shared.counters.iter().map(|c| pick(c).get()).sum()
}

fn rusage() -> (f64, f64) {
    // SAFETY: getrusage writes into the zeroed struct we hand it.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) } != 0 {
        return (0.0, 0.0);
    }
    let secs = |tv: libc::timeval| tv.tv_sec as f64 + tv.tv_usec as f64 / 1e6;
    (secs(usage.ru_utime), secs(usage.ru_stime))
}

/// Writes the whole `stats` reply, `END` included.
pub fn write_stats(out: &mut Vec<u8>, shared: &Shared, store: &StoreStats, queues: &[QueueStat]) {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let (user, system) = rusage();
    let stat = |out: &mut Vec<u8>, name: &str, value: &dyn std::fmt::Display| {
        reply::stat(out, name.as_bytes(), value)
    };
    stat(out, "pid", &std::process::id());
    stat(out, "uptime", &shared.info.started.elapsed().as_secs());
    stat(out, "time", &now);
    stat(out, "version", &env!("CARGO_PKG_VERSION"));
    stat(out, "pointer_size", &(usize::BITS));
    stat(out, "rusage_user", &format_args!("{user:.6}"));
    stat(out, "rusage_system", &format_args!("{system:.6}"));
    stat(
        out,
        "curr_connections",
        &shared.connections.load(Ordering::Relaxed),
    );
    stat(
        out,
        "total_connections",
        &shared.total_connections.load(Ordering::Relaxed),
    );
    stat(out, "threads", &shared.info.threads);
    stat(out, "cmd_get", &sum(shared, |c| &c.cmd_get));
    stat(out, "get_hits", &sum(shared, |c| &c.get_hits));
    stat(out, "get_misses", &sum(shared, |c| &c.get_misses));
    stat(out, "cmd_set", &sum(shared, |c| &c.cmd_set));
    stat(out, "bytes_read", &sum(shared, |c| &c.bytes_read));
    stat(out, "bytes_written", &sum(shared, |c| &c.bytes_written));
    stat(out, "curr_queues", &store.queues);
    stat(out, "curr_items", &store.items);
    stat(out, "bytes", &store.bytes);
    stat(out, "log_writes", &store.log_writes);
    stat(out, "log_fsyncs", &store.log_fsyncs);
    stat(out, "log_bytes_written", &store.log_bytes_written);
    stat(out, "log_unwritten_bytes", &store.log_unwritten_bytes);
    stat(out, "log_segments", &store.log_segments);
    stat(out, "log_disk_bytes", &store.log_disk_bytes);
    stat(out, "log_corrupt_records", &store.log_corrupt_records);
    stat(out, "cache_bytes", &store.cache_bytes);
    stat(out, "get_waiters", &store.get_waiters);
    stat(out, "open_transactions", &store.open_transactions);
    // Kestrel's per-queue lines.
    for q in queues {
        let mut line = |field: &str, value: u64| {
            let mut name = b"queue_".to_vec();
            name.extend_from_slice(&q.name);
            name.push(b'_');
            name.extend_from_slice(field.as_bytes());
            reply::stat(out, &name, value);
        };
        line("items", q.items);
        line("bytes", q.bytes);
        line("total_items", q.enqueued);
        line("expired_items", q.expired);
        line("discarded", q.discarded);
        line("age", q.age_ms);
        line("waiters", q.waiters);
        line("open_transactions", q.open_transactions);
    }
    reply::line(out, "END");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reset_moves_a_baseline() {
        let c = Counters::default();
        c.add(&c.cmd_get, 5);
        c.reset();
        assert_eq!(c.cmd_get.get(), 0);
        c.add(&c.cmd_get, 2);
        assert_eq!(c.cmd_get.get(), 2);
        assert_eq!(std::mem::align_of::<Counters>(), 128);
    }
}
