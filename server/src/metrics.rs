//! `--metrics <addr:port>`: the numbers of `stats` and `stats queue` for
//! Prometheus, in its text exposition format 0.0.4 over HTTP
//! (`GET /metrics`).
//!
//! # Why a task on executor 0
//! The numbers live in the shards, which only their executors touch; the
//! way to them is the router that `stats` uses ([`Router::ask_stats`]),
//! and a router belongs to one executor. So the endpoint is a glommio task
//! on executor 0 that asks every shard as a `stats` request does: a plain
//! thread would need a second way into the shards. A scrape costs what one
//! `stats` costs, every 15 s or so; the request path pays nothing
//! (counters were already kept for `stats`, and the commit latency
//! histogram is a few integer bumps per group commit in the log, see
//! [`crate::histogram::Histogram`]).
//!
//! The HTTP side is the least a scraper needs: one request per
//! connection, answered with `Connection: close`.
//!
//! # Who may scrape
//! The page names every queue and its counts, whoever asks: bind it to
//! an address only the monitoring system reaches (the default is none;
//! `127.0.0.1:9150` keeps it on the host). With `--metrics-token-file` a
//! request must also carry `Authorization: Bearer <token>` (Prometheus:
//! `authorization: { credentials_file: … }`), else it gets
//! `401 Unauthorized`; the token is compared in constant time. It is
//! not a user of `-Y`: the page is not filtered by permissions.

use std::fmt::Write as _;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::net::{TcpListener, TcpStream};

use crate::histogram::LATENCY_BOUNDS_US;
use crate::shard::{self, Router};
use crate::shared::{Shared, StopSignal};
use crate::stats::{self, Kind, Value};
use crate::stats::{QueueStat, StoreStats};

/// Longest request head read before answering 400.
const MAX_HEAD: usize = 8 * 1024;
/// A scraper that sends nothing for this long is dropped.
const READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves `GET /metrics` on `listener` until shutdown.
pub async fn serve(listener: TcpListener, router: Rc<Router>, shared: Arc<Shared>) {
    let stop = StopSignal::start(shared.clone());
    while let Some(stream) = stop.accept(&listener, "metrics: accept failed").await {
        let (router, shared) = (router.clone(), shared.clone());
        glommio::spawn_local(async move {
            if let Err(e) = answer(stream, &router, &shared).await {
                log::debug!("metrics: {e}");
            }
        })
        .detach();
    }
}

/// Reads one request and answers it.
async fn answer(
    mut stream: TcpStream,
    router: &Rc<Router>,
    shared: &Shared,
) -> std::io::Result<()> {
    stream.set_read_timeout(Some(READ_TIMEOUT))?;
    let mut head = Vec::new();
    let mut chunk = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && !head.windows(2).any(|w| w == b"\n\n") {
        if head.len() > MAX_HEAD {
            return respond(&mut stream, "400 Bad Request", "request head too long\n").await;
        }
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        head.extend_from_slice(&chunk[..n]);
    }
    let line = head.split(|&b| b == b'\n').next().unwrap_or_default();
    let mut parts = line.trim_ascii_end().split(|&b| b == b' ');
    let (method, target, version) = (parts.next(), parts.next(), parts.next());
    if !matches!(version, Some(b"HTTP/1.0" | b"HTTP/1.1")) || parts.next().is_some() {
        return respond(&mut stream, "400 Bad Request", "bad request line\n").await;
    }
    if let Some(token) = &shared.metrics_token {
        if !bearer_matches(&head, token) {
            return respond(
                &mut stream,
                "401 Unauthorized",
                "a bearer token is required\n",
            )
            .await;
        }
    }
    let path = target
        .unwrap_or_default()
        .split(|&b| b == b'?')
        .next()
        .unwrap_or_default();
    if path != b"/metrics" {
        return respond(&mut stream, "404 Not Found", "mcqd serves /metrics only\n").await;
    }
    if method != Some(b"GET") {
        return respond(&mut stream, "405 Method Not Allowed", "GET only\n").await;
    }
    let (general, queues) = router.ask_stats();
    let (store, queues) = shard::all_stats(general, queues).await;
    let body = exposition(shared, &store, &queues);
    respond(&mut stream, "200 OK", &body).await
}

/// Whether the request head carries `Authorization: Bearer <token>`.
fn bearer_matches(head: &[u8], token: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    let given = head.split(|&b| b == b'\n').skip(1).find_map(|line| {
        let (name, value) = line.split_at(line.iter().position(|&b| b == b':')?);
        if !name.trim_ascii().eq_ignore_ascii_case(b"authorization") {
            return None;
        }
        let value = value[1..].trim_ascii();
        let (scheme, credentials) = value.split_at(value.iter().position(|&b| b == b' ')?);
        scheme
            .eq_ignore_ascii_case(b"bearer")
            .then(|| credentials.trim_ascii())
    });
    given.is_some_and(|g| g.len() == token.len() && bool::from(g.ct_eq(token)))
}

async fn respond(stream: &mut TcpStream, status: &str, body: &str) -> std::io::Result<()> {
    let content_type = if status.starts_with("200") {
        "text/plain; version=0.0.4; charset=utf-8"
    } else {
        "text/plain; charset=utf-8"
    };
    let challenge = if status.starts_with("401") {
        "WWW-Authenticate: Bearer realm=\"mcqd\"\r\n"
    } else {
        ""
    };
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\n{challenge}Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body.as_bytes()).await?;
    stream.close().await
}

/// The metrics page: `stats`' general counters as `mcq_<name>` (counters
/// with `_total`), then the per-queue families labelled `queue`, then the
/// commit latency histogram.
pub fn exposition(shared: &Shared, store: &StoreStats, queues: &[QueueStat]) -> String {
    let mut out = String::with_capacity(4096 + queues.len() * 600);
    for stat in stats::general(shared, store) {
        let (name, kind) = match stat.kind {
            Kind::Fact => continue,
            Kind::Counter => (format!("mcq_{}_total", stat.name), "counter"),
            Kind::Gauge => (format!("mcq_{}", stat.name), "gauge"),
        };
        let value = match stat.value {
            Value::Int(n) => n.to_string(),
            Value::Float(x) => x.to_string(),
            Value::Text(_) => continue,
        };
        let _ = writeln!(out, "# TYPE {name} {kind}\n{name} {value}");
    }
    let _ = writeln!(out, "# TYPE mcq_info gauge");
    let _ = writeln!(
        out,
        "mcq_info{{version=\"{}\"}} 1",
        env!("CARGO_PKG_VERSION")
    );

    let labels: Vec<String> = queues.iter().map(|q| label_value(&q.name)).collect();
    let values: Vec<[f64; 9]> = queues.iter().map(queue_values).collect();
    for (i, (name, kind)) in QUEUE_FAMILIES.iter().enumerate() {
        let _ = writeln!(out, "# TYPE {name} {kind}");
        for (label, values) in labels.iter().zip(&values) {
            let _ = writeln!(out, "{name}{{queue=\"{label}\"}} {}", values[i]);
        }
    }

    let h = &store.commit_latency;
    let name = "mcq_commit_latency_seconds";
    let _ = writeln!(out, "# TYPE {name} histogram");
    let mut cumulative = 0;
    for (bound, count) in LATENCY_BOUNDS_US.iter().zip(h.counts) {
        cumulative += count;
        let le = *bound as f64 / 1e6;
        let _ = writeln!(out, "{name}_bucket{{le=\"{le}\"}} {cumulative}");
    }
    let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {}", h.count());
    let _ = writeln!(out, "{name}_sum {}", h.sum_us as f64 / 1e6);
    let _ = writeln!(out, "{name}_count {}", h.count());
    out
}

/// The per-queue families, in the order of [`queue_values`].
const QUEUE_FAMILIES: [(&str, &str); 9] = [
    ("mcq_queue_items", "gauge"),
    ("mcq_queue_bytes", "gauge"),
    ("mcq_queue_age_seconds", "gauge"),
    ("mcq_queue_enqueued_total", "counter"),
    ("mcq_queue_dequeued_total", "counter"),
    ("mcq_queue_expired_total", "counter"),
    ("mcq_queue_discarded_total", "counter"),
    ("mcq_queue_waiters", "gauge"),
    ("mcq_queue_open_transactions", "gauge"),
];

fn queue_values(q: &QueueStat) -> [f64; 9] {
    [
        q.items as f64,
        q.bytes as f64,
        q.age_ms as f64 / 1000.0,
        q.enqueued as f64,
        q.dequeued as f64,
        q.expired as f64,
        q.discarded as f64,
        q.waiters as f64,
        q.open_transactions as f64,
    ]
}

/// A queue name as a label value, escaped for the exposition format.
/// Names are bytes and the format is UTF-8, so a byte that is not part of
/// valid UTF-8 is written `\xHH` and a backslash `\\` (two different
/// queues never get one label); then the format's own escapes apply
/// (`\` `"` and newline).
pub fn label_value(name: &[u8]) -> String {
    let mut value = String::with_capacity(name.len());
    for chunk in name.utf8_chunks() {
        value.push_str(&chunk.valid().replace('\\', "\\\\"));
        for b in chunk.invalid() {
            let _ = write!(value, "\\x{b:02x}");
        }
    }
    let mut escaped = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => escaped.push_str("\\\\"),
            '"' => escaped.push_str("\\\""),
            '\n' => escaped.push_str("\\n"),
            c => escaped.push(c),
        }
    }
    escaped
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_tokens() {
        let head = |auth: &str| format!("GET /metrics HTTP/1.1\r\nHost: x\r\n{auth}\r\n\r\n");
        let ok = |auth: &str| bearer_matches(head(auth).as_bytes(), b"s3cret");
        assert!(ok("Authorization: Bearer s3cret"));
        assert!(ok("authorization:bearer   s3cret  "));
        assert!(!ok("Authorization: Bearer s3cre"));
        assert!(!ok("Authorization: Bearer s3crets"));
        assert!(!ok("Authorization: Basic s3cret"));
        assert!(!ok("X-Authorization: Bearer s3cret"));
        assert!(!ok(""));
        // Not from the request line.
        assert!(!bearer_matches(
            b"GET /Authorization: Bearer s3cret HTTP/1.1\r\n\r\n",
            b"s3cret"
        ));
    }

    #[test]
    fn label_values_escape_and_never_collide() {
        assert_eq!(label_value(b"jobs"), "jobs");
        assert_eq!(label_value(b"a\"b"), "a\\\"b");
        assert_eq!(label_value(b"a\nb"), "a\\nb");
        assert_eq!(label_value("caf\u{e9}".as_bytes()), "caf\u{e9}");
        // A backslash is `\\` in the value, so `\\\\` in the text.
        assert_eq!(label_value(b"a\\b"), "a\\\\\\\\b");
        // The byte 0xff is `\xff` in the value; the text `\xff` is not.
        assert_eq!(label_value(b"a\xff"), "a\\\\xff");
        assert_eq!(label_value(b"a\\xff"), "a\\\\\\\\xff");
        assert_ne!(label_value(b"a\xff"), label_value(b"a\\xff"));
    }
}
