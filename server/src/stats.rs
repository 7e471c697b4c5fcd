//! `stats`: process-wide counters. Each executor owns one [`Counters`] and is
//! the only writer of it (relaxed atomics, so no cache line bounces between
//! cores on the request path); `stats` sums them all.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use crate::protocol::reply;
use crate::shared::Shared;

/// One executor's request counters.
#[derive(Default, Debug)]
pub struct Counters {
    pub cmd_get: AtomicU64,
    pub get_hits: AtomicU64,
    pub get_misses: AtomicU64,
    pub cmd_set: AtomicU64,
    pub bytes_read: AtomicU64,
    pub bytes_written: AtomicU64,
    /// TLS handshakes that failed or timed out (memcached's names).
    pub ssl_handshake_errors: AtomicU64,
    /// TLS connections rustls closed on a bad record after the handshake.
    pub ssl_proto_errors: AtomicU64,
    /// Full TLS handshakes with `ssl_session_cache`: sessions a client may
    /// resume.
    pub ssl_new_sessions: AtomicU64,
    /// Handshakes (`-Y`), as memcached counts them: every `username
    /// password` checked or refused, …
    pub auth_cmds: AtomicU64,
    /// … and those refused (a wrong password, or one from an address the
    /// rate limit blocks).
    pub auth_errors: AtomicU64,
    /// Requests an authenticated user may not make (`[user …]`).
    pub permission_denied: AtomicU64,
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

    fn all(&self) -> [&AtomicU64; 12] {
        [
            &self.cmd_get,
            &self.get_hits,
            &self.get_misses,
            &self.cmd_set,
            &self.bytes_read,
            &self.bytes_written,
            &self.ssl_handshake_errors,
            &self.ssl_proto_errors,
            &self.ssl_new_sessions,
            &self.auth_cmds,
            &self.auth_errors,
            &self.permission_denied,
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

/// A general `stats` value.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Value {
    Int(u64),
    /// Seconds, written with 6 decimals as memcached does.
    Float(f64),
    Text(&'static str),
}

impl std::fmt::Display for Value {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Value::Int(n) => write!(f, "{n}"),
            Value::Float(x) => write!(f, "{x:.6}"),
            Value::Text(t) => f.write_str(t),
        }
    }
}

/// What a general stat is to a monitoring system (`--metrics`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Only goes up (until `stats reset` or a restart).
    Counter,
    Gauge,
    /// A fact, not a measurement (`pid`, `version`, …): not exported.
    Fact,
}

/// One line of `stats`' general part.
#[derive(Clone, Copy, Debug)]
pub struct Stat {
    pub name: &'static str,
    pub kind: Kind,
    pub value: Value,
}

/// The general stats, in `stats`' order: what both `stats` and
/// `--metrics` report.
pub fn general(shared: &Shared, store: &StoreStats) -> Vec<Stat> {
    use Kind::*;
    use Value::*;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let (user, system) = rusage();
    let count = |pick: fn(&Counters) -> &AtomicU64| Int(sum(shared, pick));
    let mut stats = vec![
        ("pid", Fact, Int(std::process::id().into())),
        (
            "uptime",
            Gauge,
            Int(shared.info.started.elapsed().as_secs()),
        ),
        ("time", Fact, Int(now)),
        ("version", Fact, Text(env!("CARGO_PKG_VERSION"))),
        ("pointer_size", Fact, Int(usize::BITS.into())),
        ("rusage_user", Counter, Float(user)),
        ("rusage_system", Counter, Float(system)),
        (
            "curr_connections",
            Gauge,
            Int(shared.connections.load(Ordering::Relaxed) as u64),
        ),
        (
            "total_connections",
            Counter,
            Int(shared.total_connections.load(Ordering::Relaxed) as u64),
        ),
        ("threads", Gauge, Int(shared.info.threads as u64)),
        ("cmd_get", Counter, count(|c| &c.cmd_get)),
        ("get_hits", Counter, count(|c| &c.get_hits)),
        ("get_misses", Counter, count(|c| &c.get_misses)),
        ("cmd_set", Counter, count(|c| &c.cmd_set)),
        ("bytes_read", Counter, count(|c| &c.bytes_read)),
        ("bytes_written", Counter, count(|c| &c.bytes_written)),
        ("auth_cmds", Counter, count(|c| &c.auth_cmds)),
        ("auth_errors", Counter, count(|c| &c.auth_errors)),
        (
            "permission_denied",
            Counter,
            count(|c| &c.permission_denied),
        ),
        ("curr_queues", Gauge, Int(store.queues)),
        ("curr_items", Gauge, Int(store.items)),
        ("bytes", Gauge, Int(store.bytes)),
        ("log_writes", Counter, Int(store.log_writes)),
        ("log_fsyncs", Counter, Int(store.log_fsyncs)),
        ("log_bytes_written", Counter, Int(store.log_bytes_written)),
        ("log_unwritten_bytes", Gauge, Int(store.log_unwritten_bytes)),
        ("log_segments", Gauge, Int(store.log_segments)),
        ("log_disk_bytes", Gauge, Int(store.log_disk_bytes)),
        (
            "log_corrupt_records",
            Counter,
            Int(store.log_corrupt_records),
        ),
        ("cache_bytes", Gauge, Int(store.cache_bytes)),
        ("readahead_hits", Counter, Int(store.readahead.hits)),
        ("readahead_misses", Counter, Int(store.readahead.misses)),
        ("readahead_reads", Counter, Int(store.readahead.reads)),
        ("readahead_prefetches", Counter, Int(store.readahead.ahead)),
        (
            "readahead_bytes_read",
            Counter,
            Int(store.readahead.bytes_read),
        ),
        ("readahead_evictions", Counter, Int(store.readahead.evicted)),
        ("readahead_bytes", Gauge, Int(store.readahead.bytes)),
        ("get_waiters", Gauge, Int(store.get_waiters)),
        ("open_transactions", Gauge, Int(store.open_transactions)),
    ];
    // With -Z only, as memcached.
    if let Some(tls) = &shared.tls {
        if tls.session_cache() {
            stats.push(("ssl_new_sessions", Counter, count(|c| &c.ssl_new_sessions)));
        }
        stats.extend([
            (
                "ssl_handshake_errors",
                Counter,
                count(|c| &c.ssl_handshake_errors),
            ),
            ("ssl_proto_errors", Counter, count(|c| &c.ssl_proto_errors)),
            (
                "time_since_server_cert_refresh",
                Gauge,
                Int(tls.since_refresh().as_secs()),
            ),
        ]);
    }
    stats
        .into_iter()
        .map(|(name, kind, value)| Stat { name, kind, value })
        .collect()
}

/// Writes the whole `stats` reply, `END` included: the general lines, then
/// Kestrel's per-queue lines for `queues` (the first by name), then, if
/// that left some of the `of` queues they were chosen from out, how many
/// (`STAT queues_omitted <n>`; see `--stats-queues`).
pub fn write_stats(
    out: &mut Vec<u8>,
    shared: &Shared,
    store: &StoreStats,
    queues: &[QueueStat],
    of: u64,
) {
    for stat in general(shared, store) {
        reply::stat(out, stat.name.as_bytes(), stat.value);
    }
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
    let omitted = of.saturating_sub(queues.len() as u64);
    if omitted > 0 {
        reply::stat(out, b"queues_omitted", omitted);
    }
    reply::line(out, "END");
}

/// One shard's `stats queue` lines (`STAT <name> <enqueued>/<dequeued>`),
/// sorted by name, rendered once into one buffer: a few dozen bytes a
/// queue, where a [`QueueStat`] each took over a hundred and then had to
/// be rendered anyway.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct QueueLines {
    bytes: Vec<u8>,
    /// Where each line starts in `bytes`.
    starts: Vec<usize>,
}

/// What a line starts with, before its queue's name.
const STAT: &[u8] = b"STAT ";

impl QueueLines {
    pub fn with_capacity(queues: usize) -> QueueLines {
        QueueLines {
            bytes: Vec::with_capacity(queues * 32),
            starts: Vec::with_capacity(queues),
        }
    }

    /// Adds queue `name`'s line (after every name before it).
    pub fn push(&mut self, name: &[u8], enqueued: u64, dequeued: u64) {
        self.starts.push(self.bytes.len());
        reply::stat(&mut self.bytes, name, format_args!("{enqueued}/{dequeued}"));
    }

    pub fn len(&self) -> usize {
        self.starts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.starts.is_empty()
    }

    /// The lines of the queues `keep` says yes to (`stats queue` for a
    /// user who may read only some queues).
    pub fn retain(&self, keep: impl Fn(&[u8]) -> bool) -> QueueLines {
        let mut kept = QueueLines::default();
        for i in 0..self.len() {
            if keep(self.name(i)) {
                kept.starts.push(kept.bytes.len());
                kept.bytes.extend_from_slice(self.line(i));
            }
        }
        kept
    }

    /// Line `i`, `\r\n` included.
    fn line(&self, i: usize) -> &[u8] {
        let end = self.starts.get(i + 1).copied().unwrap_or(self.bytes.len());
        &self.bytes[self.starts[i]..end]
    }

    /// The queue name of line `i` (names hold no spaces).
    fn name(&self, i: usize) -> &[u8] {
        let rest = &self.line(i)[STAT.len()..];
        let end = rest.iter().position(|&b| b == b' ').unwrap_or(rest.len());
        &rest[..end]
    }
}

/// Writes the whole `stats queue` reply, `END` included: every shard's
/// lines merged by name (a shard's queues are its own, so no name comes
/// twice). One shard's lines go out as they are.
pub fn write_queue_lines(out: &mut Vec<u8>, shards: &[QueueLines]) {
    out.reserve(shards.iter().map(|s| s.bytes.len()).sum::<usize>() + 5);
    let mut at = vec![0usize; shards.len()];
    loop {
        let mut next: Option<usize> = None;
        for (s, lines) in shards.iter().enumerate() {
            if at[s] >= lines.len() {
                continue;
            }
            if next.is_none_or(|n| lines.name(at[s]) < shards[n].name(at[n])) {
                next = Some(s);
            }
        }
        let Some(s) = next else { break };
        // The run of this shard's lines before any other shard's next.
        let lines = &shards[s];
        let mut end = at[s] + 1;
        let others = shards
            .iter()
            .enumerate()
            .filter(|&(o, l)| o != s && at[o] < l.len())
            .map(|(o, l)| l.name(at[o]))
            .min();
        match others {
            None => end = lines.len(),
            Some(bound) => {
                while end < lines.len() && lines.name(end) < bound {
                    end += 1;
                }
            }
        }
        let from = lines.starts[at[s]];
        let to = lines.starts.get(end).copied().unwrap_or(lines.bytes.len());
        out.extend_from_slice(&lines.bytes[from..to]);
        at[s] = end;
    }
    reply::line(out, "END");
}

/// One queue's counters: `stats queue` (MemcacheQ's two) and the
/// per-queue lines of `stats` (Kestrel's).
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct QueueStat {
    pub name: Vec<u8>,
    pub enqueued: u64,
    pub dequeued: u64,
    /// Messages queued (not open).
    pub items: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Dropped as expired since start-up.
    pub expired: u64,
    /// Dropped to make room (`discard_old_when_full`) since start-up.
    pub discarded: u64,
    /// Milliseconds since the head message was enqueued (second
    /// resolution); 0 when empty.
    pub age_ms: u64,
    /// Blocking gets waiting on it.
    pub waiters: u64,
    /// Messages open on reliable reads.
    pub open_transactions: u64,
}

/// Counters for `stats`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StoreStats {
    pub queues: u64,
    /// Messages queued.
    pub items: u64,
    /// Bytes of message bodies queued.
    pub bytes: u64,
    pub log_writes: u64,
    pub log_fsyncs: u64,
    pub log_bytes_written: u64,
    /// Bytes appended and not yet written (with `--sync none`, what a
    /// kill -9 now would lose).
    pub log_unwritten_bytes: u64,
    pub log_segments: u64,
    pub log_disk_bytes: u64,
    /// Corrupt records found (at recovery, by reads, by compaction).
    pub log_corrupt_records: u64,
    /// Bytes of bodies in the hot cache.
    pub cache_bytes: u64,
    /// The read-ahead cache's counters (`log::readahead`).
    pub readahead: crate::log::readahead::ReadAheadStats,
    /// Blocking gets waiting for a message.
    pub get_waiters: u64,
    /// Messages handed out by reliable reads and not yet confirmed.
    pub open_transactions: u64,
    /// The log's group commits (for `--metrics`).
    pub commit_latency: crate::histogram::Histogram,
}

impl StoreStats {
    /// Adds another shard's counters to these (for the process-wide `stats`).
    pub fn add(&mut self, other: &StoreStats) {
        self.queues += other.queues;
        self.items += other.items;
        self.bytes += other.bytes;
        self.log_writes += other.log_writes;
        self.log_fsyncs += other.log_fsyncs;
        self.log_bytes_written += other.log_bytes_written;
        self.log_unwritten_bytes += other.log_unwritten_bytes;
        self.log_segments += other.log_segments;
        self.log_disk_bytes += other.log_disk_bytes;
        self.log_corrupt_records += other.log_corrupt_records;
        self.cache_bytes += other.cache_bytes;
        self.readahead.add(&other.readahead);
        self.get_waiters += other.get_waiters;
        self.open_transactions += other.open_transactions;
        self.commit_latency.add(&other.commit_latency);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(queues: &[(&str, u64, u64)]) -> QueueLines {
        let mut l = QueueLines::with_capacity(queues.len());
        for &(name, e, d) in queues {
            l.push(name.as_bytes(), e, d);
        }
        l
    }

    #[test]
    fn queue_lines_of_shards_merge_by_name() {
        let a = lines(&[("a", 1, 0), ("c", 3, 1), ("d", 4, 4), ("q10", 7, 7)]);
        let b = lines(&[("b", 2, 2), ("ca", 5, 0), ("z", 9, 1)]);
        assert_eq!((a.len(), a.name(1)), (4, &b"c"[..]));
        let mut out = Vec::new();
        write_queue_lines(&mut out, &[a, b, QueueLines::default()]);
        let want = "STAT a 1/0\r\nSTAT b 2/2\r\nSTAT c 3/1\r\nSTAT ca 5/0\r\n\
                    STAT d 4/4\r\nSTAT q10 7/7\r\nSTAT z 9/1\r\nEND\r\n";
        assert_eq!(String::from_utf8(out).unwrap(), want);
    }

    #[test]
    fn queue_lines_filtered_by_name() {
        let a = lines(&[("a", 1, 0), ("b.1", 3, 1), ("b.2", 4, 4), ("c", 7, 7)]);
        let kept = a.retain(|name| name.starts_with(b"b."));
        let mut out = Vec::new();
        write_queue_lines(&mut out, &[kept, a.retain(|n| n == b"c")]);
        assert_eq!(
            out,
            b"STAT b.1 3/1\r\nSTAT b.2 4/4\r\nSTAT c 7/7\r\nEND\r\n"
        );
        assert!(a.retain(|_| false).is_empty());
    }

    #[test]
    fn no_queues_is_just_end() {
        let mut out = Vec::new();
        write_queue_lines(&mut out, &[]);
        write_queue_lines(&mut out, &[QueueLines::default()]);
        assert_eq!(out, b"END\r\nEND\r\n");
        assert!(QueueLines::default().is_empty());
    }
}
