//! Turning histograms and counters into numbers people read: the summary on
//! stdout and the JSON file.
//!
//! Both are built from one [`Results`] value so that they can never disagree,
//! and percentiles are forced monotonic (p50 ≤ … ≤ max) so that consumers of
//! the JSON can rely on it even where the histogram's bucket equivalence would
//! otherwise round a lower percentile above `max`.

use std::collections::BTreeMap;
use std::io::{self, Write};

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::verify::VerifyReport;

/// A latency spectrum in microseconds.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Percentiles {
    pub count: u64,
    pub p50: f64,
    pub p75: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub p9999: f64,
    pub max: f64,
    pub mean: f64,
}

pub const QUANTILES: [(&str, f64); 6] = [
    ("p50", 0.5),
    ("p75", 0.75),
    ("p90", 0.9),
    ("p99", 0.99),
    ("p99.9", 0.999),
    ("p99.99", 0.9999),
];

/// The spectrum of a nanosecond histogram, or `None` when it is empty.
pub fn percentiles(h: &Histogram<u64>) -> Option<Percentiles> {
    if h.is_empty() {
        return None;
    }
    let us = |ns: u64| ns as f64 / 1000.0;
    let mut vals = [0f64; 7];
    let mut prev = 0.0;
    for (i, (_, q)) in QUANTILES.iter().enumerate() {
        let v = us(h.value_at_quantile(*q)).max(prev);
        vals[i] = v;
        prev = v;
    }
    vals[6] = us(h.max()).max(prev);
    Some(Percentiles {
        count: h.len(),
        p50: vals[0],
        p75: vals[1],
        p90: vals[2],
        p99: vals[3],
        p999: vals[4],
        p9999: vals[5],
        max: vals[6],
        mean: h.mean() / 1000.0,
    })
}

/// Open loop: what the schedule asked for and what went out. A request
/// goes out when its connection has a free pipeline slot; those still
/// waiting when the run ends are never sent, so the run ends on time.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct OpenLoop {
    /// Requests due in the measured window.
    pub scheduled: u64,
    /// Sent, late ones included (`send_lag_us` says how late).
    pub sent: u64,
    /// Due, but still waiting for a free pipeline slot at the end.
    pub unsent: u64,
}

/// Pairs: how many messages this run had queued (stored by producers, not
/// yet taken by consumers) at the start and at the end of the measured
/// window, counted from the replies, at one-second boundaries.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Backlog {
    pub start: i64,
    pub end: i64,
    pub window_s: f64,
    pub growth_per_sec: f64,
    /// It grew by more than the requests that can be in flight (twice
    /// that, for noise) and by more than 1% of the messages produced in the
    /// window: the producers outpace the consumers.
    pub growing: bool,
}

impl Backlog {
    /// Judges the depths sampled at interval boundaries, `(time, depth)` in
    /// time order, over the measured window `[start, end)`; `produced` is how
    /// many sets were measured and `in_flight` how many requests may be
    /// outstanding (a popped message counts as taken only once its reply is
    /// in). `None` when the window holds no whole
    /// interval or nothing was produced.
    pub fn judge(
        depths: &[(u64, i64)],
        start: u64,
        end: u64,
        produced: u64,
        in_flight: usize,
    ) -> Option<Backlog> {
        let &(t_start, d_start) = depths.iter().rev().find(|(t, _)| *t <= start)?;
        let &(t_end, d_end) = depths.iter().rev().find(|(t, _)| *t <= end)?;
        let window = t_end.checked_sub(t_start)?;
        if window < 1_000_000_000 || produced == 0 {
            return None;
        }
        let growth = d_end - d_start;
        let window_s = window as f64 / 1e9;
        Some(Backlog {
            start: d_start,
            end: d_end,
            window_s,
            growth_per_sec: growth as f64 / window_s,
            growing: growth > 2 * in_flight as i64 && growth as f64 > 0.01 * produced as f64,
        })
    }
}

/// `--reconnect-every`: the connections opened while the run went on.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Churn {
    /// `--reconnect-every`: requests per connection.
    pub reconnect_every: u64,
    /// Connections opened inside the measured window (those opened before
    /// the run or during the warm-up are not).
    pub opened: u64,
    pub opened_per_sec: f64,
    /// Their set-up time: TCP connect, TLS handshake, authentication.
    pub setup_us: Option<Percentiles>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Results {
    /// The full command line.
    pub config: String,
    pub servers: Vec<String>,
    pub workload: String,
    pub connections: usize,
    pub threads: usize,
    pub pipeline: usize,
    pub queues: u64,
    pub value_size: String,
    pub key_dist: String,
    pub warmup_s: f64,
    /// `--reliable`: gets were reliable reads.
    pub reliable: bool,
    pub duration_s: f64,
    /// Target of the open-loop schedule (null: closed loop).
    pub rate_target: Option<f64>,
    pub ops: u64,
    pub ops_per_sec: f64,
    pub sets: u64,
    pub gets: u64,
    pub hits: u64,
    pub misses: u64,
    pub errors: u64,
    pub errors_by_kind: BTreeMap<String, u64>,
    pub bytes_sent: u64,
    pub bytes_received: u64,
    /// Every connection opened: the first ones, churn (`--reconnect-every`)
    /// and reconnects after failures, warm-up included.
    pub connections_opened: u64,
    pub churn: Option<Churn>,
    pub latency_us: Option<Percentiles>,
    pub e2e_latency_us: Option<Percentiles>,
    /// Open loop: how late requests went out relative to their due time.
    pub send_lag_us: Option<Percentiles>,
    pub open_loop: Option<OpenLoop>,
    /// Pairs with a duration: the backlog's growth.
    pub backlog: Option<Backlog>,
    pub verify: Option<VerifyReport>,
}

fn human_bytes(b: u64) -> String {
    let b = b as f64;
    if b >= 1e9 {
        format!("{:.2} GB", b / 1e9)
    } else if b >= 1e6 {
        format!("{:.2} MB", b / 1e6)
    } else if b >= 1e3 {
        format!("{:.2} kB", b / 1e3)
    } else {
        format!("{b} B")
    }
}

fn spectrum_row(out: &mut impl Write, label: &str, p: &Option<Percentiles>) -> io::Result<()> {
    match p {
        None => writeln!(out, "  {label:<12} (no samples)"),
        Some(p) => writeln!(
            out,
            "  {label:<12} {:>9.1} {:>9.1} {:>9.1} {:>9.1} {:>9.1} {:>9.1} {:>9.1} {:>9.1}",
            p.p50, p.p75, p.p90, p.p99, p.p999, p.p9999, p.max, p.mean
        ),
    }
}

pub fn print_summary(r: &Results, out: &mut impl Write) -> io::Result<()> {
    writeln!(
        out,
        "mcq-loadgen: {} workload, {} connections x pipeline {}, {} threads, {} queues, value size {}{}",
        r.workload,
        r.connections,
        r.pipeline,
        r.threads,
        r.queues,
        r.value_size,
        if r.reliable { ", reliable reads" } else { "" }
    )?;
    writeln!(
        out,
        "  duration     {:.2} s measured (after {:.2} s warm-up){}",
        r.duration_s,
        r.warmup_s,
        r.rate_target
            .map(|t| format!(", open loop at {t:.0} req/s"))
            .unwrap_or_else(|| ", closed loop".into())
    )?;
    writeln!(
        out,
        "  throughput   {:.1} ops/s ({} requests)",
        r.ops_per_sec, r.ops
    )?;
    writeln!(
        out,
        "  requests     sets {}  gets {} (hits {}, misses {})",
        r.sets, r.gets, r.hits, r.misses
    )?;
    let kinds: Vec<String> = r
        .errors_by_kind
        .iter()
        .map(|(k, v)| format!("{k} {v}"))
        .collect();
    writeln!(
        out,
        "  errors       {}{}",
        r.errors,
        if kinds.is_empty() {
            String::new()
        } else {
            format!(" ({})", kinds.join(", "))
        }
    )?;
    let secs = r.duration_s.max(1e-9);
    writeln!(
        out,
        "  bytes        sent {} ({}/s), received {} ({}/s)",
        human_bytes(r.bytes_sent),
        human_bytes((r.bytes_sent as f64 / secs) as u64),
        human_bytes(r.bytes_received),
        human_bytes((r.bytes_received as f64 / secs) as u64)
    )?;
    if let Some(c) = &r.churn {
        writeln!(
            out,
            "  connections  {} opened, {} in the measured window ({:.1}/s), a new one every {} requests",
            r.connections_opened, c.opened, c.opened_per_sec, c.reconnect_every
        )?;
    }
    writeln!(
        out,
        "  latency (us)       p50       p75       p90       p99     p99.9    p99.99       max      mean"
    )?;
    spectrum_row(out, "request", &r.latency_us)?;
    if r.e2e_latency_us.is_some() || r.workload == "pairs" {
        spectrum_row(out, "end-to-end", &r.e2e_latency_us)?;
    }
    if r.send_lag_us.is_some() {
        spectrum_row(out, "send lag", &r.send_lag_us)?;
    }
    if let Some(c) = &r.churn {
        spectrum_row(out, "conn setup", &c.setup_us)?;
    }
    if let Some(o) = &r.open_loop {
        writeln!(
            out,
            "  open loop    scheduled {}, sent {}, not sent {} (no free pipeline slot before the end)",
            o.scheduled, o.sent, o.unsent
        )?;
    }
    if let Some(b) = &r.backlog {
        writeln!(
            out,
            "  backlog      {} queued at the start, {} at the end ({:+.0}/s over {:.0} s){}",
            b.start,
            b.end,
            b.growth_per_sec,
            b.window_s,
            if b.growing {
                ": GROWING, producers outpace consumers"
            } else {
                ""
            }
        )?;
    }
    if let Some(v) = &r.verify {
        writeln!(
            out,
            "  verify       {}: sent {}, acknowledged {}, refused {}, in doubt {}, received {} ({} by the final drain)",
            if v.passed { "PASSED" } else { "FAILED" },
            v.sent,
            v.acknowledged,
            v.refused,
            v.in_doubt,
            v.received,
            v.drained
        )?;
        writeln!(
            out,
            "               lost {}, duplicates {}, out of order {}, corrupt {}, phantom {}, resurrected {}, foreign {}",
            v.lost, v.duplicates, v.out_of_order, v.corrupt, v.phantom, v.resurrected, v.foreign
        )?;
        if v.reliable {
            writeln!(
                out,
                "               reliable reads: {} reconnects, open at disconnect {}, opens in doubt {}, \
                 redelivered after disconnect {}, out of order as redelivered {}",
                v.reconnects,
                v.open_at_disconnect,
                v.opens_in_doubt,
                v.redelivered,
                v.redelivered_out_of_order
            )?;
        } else if v.reconnects > 0 || v.gets_in_doubt > 0 {
            writeln!(
                out,
                "               {} reconnects, {} gets in doubt (losses up to that many and duplicates are tolerated)",
                v.reconnects, v.gets_in_doubt
            )?;
        }
        for p in &v.problems {
            writeln!(out, "               - {p}")?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::new_hist;
    use crate::workload::Rng;

    #[test]
    fn percentiles_are_monotonic() {
        let mut rng = Rng::new(5);
        for trial in 0..50 {
            let mut h = new_hist();
            let n = 1 + rng.below(5000);
            for _ in 0..n {
                // Heavy-tailed values spanning many buckets.
                let v = 1 + (rng.unit().powi(8) * 1e9 * (trial as f64 + 1.0)) as u64;
                h.record(v).unwrap();
            }
            let p = percentiles(&h).unwrap();
            let seq = [p.p50, p.p75, p.p90, p.p99, p.p999, p.p9999, p.max];
            assert!(seq.windows(2).all(|w| w[0] <= w[1]), "{seq:?}");
            assert_eq!(p.count, n);
            assert!(p.mean <= p.max);
        }
        assert!(percentiles(&new_hist()).is_none());
    }

    #[test]
    fn backlog_growth_is_judged_over_the_measured_window() {
        let s = 1_000_000_000;
        // Warm-up of 1 s, then 3 s measured; depth sampled every second.
        let growing = [(0, 0), (s, 50), (2 * s, 2050), (3 * s, 4050), (4 * s, 6050)];
        let b = Backlog::judge(&growing, s, 4 * s, 30_000, 16).unwrap();
        assert_eq!((b.start, b.end), (50, 6050));
        assert!(b.growing);
        assert!((b.growth_per_sec - 2000.0).abs() < 1e-9);
        assert!((b.window_s - 3.0).abs() < 1e-9);
        // Depth wobbling within what may be in flight is not growth.
        let steady = [(0, 0), (s, 10), (2 * s, 25), (3 * s, 3), (4 * s, 30)];
        assert!(
            !Backlog::judge(&steady, s, 4 * s, 30_000, 16)
                .unwrap()
                .growing
        );
        // Nor is a rise that is tiny next to what was produced.
        assert!(
            !Backlog::judge(&growing, s, 4 * s, 10_000_000, 16)
                .unwrap()
                .growing
        );
        // A window without a whole interval, or nothing produced: no verdict.
        assert!(Backlog::judge(&growing, s, s + s / 2, 30_000, 16).is_none());
        assert!(Backlog::judge(&growing, s, 4 * s, 0, 16).is_none());
    }

    fn results(churn: Option<Churn>) -> Results {
        Results {
            config: "mcq-loadgen".into(),
            servers: vec!["127.0.0.1:1".into()],
            workload: "get".into(),
            connections: 4,
            threads: 1,
            pipeline: 1,
            queues: 4,
            value_size: "100".into(),
            key_dist: "uniform".into(),
            warmup_s: 0.0,
            reliable: false,
            duration_s: 2.0,
            rate_target: None,
            ops: 200,
            ops_per_sec: 100.0,
            sets: 0,
            gets: 200,
            hits: 0,
            misses: 200,
            errors: 0,
            errors_by_kind: BTreeMap::new(),
            bytes_sent: 0,
            bytes_received: 0,
            connections_opened: 40,
            churn,
            latency_us: None,
            e2e_latency_us: None,
            send_lag_us: None,
            open_loop: None,
            backlog: None,
            verify: None,
        }
    }

    #[test]
    fn churn_is_reported_only_when_asked_for() {
        let mut h = new_hist();
        for v in [1_000_000u64, 2_000_000, 3_000_000] {
            h.record(v).unwrap();
        }
        let churn = Churn {
            reconnect_every: 5,
            opened: 36,
            opened_per_sec: 18.0,
            setup_us: percentiles(&h),
        };
        let mut out = Vec::new();
        print_summary(&results(Some(churn)), &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.contains(
                "  connections  40 opened, 36 in the measured window (18.0/s), a new one every 5 requests\n"
            ),
            "{text}"
        );
        let row = text.lines().find(|l| l.contains("conn setup")).unwrap();
        let cols: Vec<f64> = row
            .split_whitespace()
            .skip(2)
            .map(|v| v.parse().unwrap())
            .collect();
        // p50 and max, in microseconds (3 significant digits).
        assert!((cols[0] - 2000.0).abs() < 2.0, "{row}");
        assert!((cols[6] - 3000.0).abs() < 3.0, "{row}");

        let mut out = Vec::new();
        print_summary(&results(None), &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(
            !text.contains("connections  ") && !text.contains("conn setup"),
            "{text}"
        );
        let json = serde_json::to_value(results(None)).unwrap();
        assert_eq!(json["connections_opened"], 40);
        assert!(json["churn"].is_null());
    }

    #[test]
    fn known_values_in_microseconds() {
        let mut h = new_hist();
        for v in 1..=1000u64 {
            h.record(v * 1000).unwrap();
        }
        let p = percentiles(&h).unwrap();
        assert!((p.p50 - 500.0).abs() < 1.0, "{}", p.p50);
        assert!((p.p99 - 990.0).abs() < 1.0, "{}", p.p99);
        assert!((p.max - 1000.0).abs() < 1.0, "{}", p.max);
    }
}
