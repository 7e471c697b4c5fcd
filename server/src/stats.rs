//! `stats`: process-wide counters. Each executor owns one [`Counters`] and is
//! the only writer of it (relaxed atomics, so no cache line bounces between
//! cores on the request path); `stats` sums them all.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use crate::net::Shared;
use crate::protocol::reply;
use crate::store::{QueueStat, StoreStats};

/// One executor's request counters.
#[derive(Default, Debug)]
pub struct Counters {
    pub cmd_get: AtomicU64,
    pub get_hits: AtomicU64,
    pub get_misses: AtomicU64,
    pub cmd_set: AtomicU64,
    pub bytes_read: AtomicU64,
    pub bytes_written: AtomicU64,
}

impl Counters {
    pub fn add(&self, counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// `stats reset`.
    pub fn reset(&self) {
        for c in self.all() {
            c.store(0, Ordering::Relaxed);
        }
    }

    fn all(&self) -> [&AtomicU64; 6] {
        [
            &self.cmd_get,
            &self.get_hits,
            &self.get_misses,
            &self.cmd_set,
            &self.bytes_read,
            &self.bytes_written,
        ]
    }
}

/// Facts about the process, fixed at start.
#[derive(Debug)]
pub struct ServerInfo {
    pub started: Instant,
    pub threads: usize,
}

fn sum(shared: &Shared, pick: impl Fn(&Counters) -> &AtomicU64) -> u64 {
    shared
        .counters
        .iter()
        .map(|c| pick(c).load(Ordering::Relaxed))
        .sum()
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
