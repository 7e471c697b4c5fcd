//! The run second by second: the progress line, the interval log, the
//! backlog's course and the run's latency histograms.
//!
//! Each thread reports every one-second interval on its own, at its own
//! pace; an interval is whole only once every thread has moved past it (or
//! finished). So reports are held here until then and merged in order, and
//! each interval is printed and logged exactly once, complete.

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::time::Duration;

use hdrhistogram::Histogram;

use crate::engine::SECOND;
use crate::hdrlog::HdrLog;
use crate::stats::{new_hist, Counters};

/// One interval's totals while threads report in.
struct IntervalAgg {
    ops_all: u64,
    errors: u64,
    /// Messages this run stored and took out in the interval (pairs: the
    /// backlog's growth).
    stored: u64,
    taken: u64,
    hist: Histogram<u64>,
    e2e: Histogram<u64>,
}

pub struct Intervals {
    t0: u64,
    measure_start: u64,
    /// Log end-to-end latency too.
    traced: bool,
    quiet: bool,
    /// `--hdr-log`.
    pub hdr: Option<HdrLog>,
    /// Per thread: the next interval it will report.
    next_idx: Vec<u64>,
    /// Per thread: its last interval reported.
    final_idx: Vec<u64>,
    /// Per thread: has sent its last interval.
    finished: Vec<bool>,
    /// Per thread: its cumulative counters at its last report.
    last_counters: Vec<Counters>,
    pending: BTreeMap<u64, IntervalAgg>,
    /// Messages queued by this run so far.
    depth: i64,
    /// Request latency of every interval merged so far.
    pub total_hist: Histogram<u64>,
    pub total_e2e: Histogram<u64>,
    /// (interval boundary, messages queued by this run then): the backlog.
    pub depths: Vec<(u64, i64)>,
}

impl Intervals {
    pub fn new(
        threads: usize,
        t0: u64,
        measure_start: u64,
        traced: bool,
        quiet: bool,
        hdr: Option<HdrLog>,
    ) -> Intervals {
        Intervals {
            t0,
            measure_start,
            traced,
            quiet,
            hdr,
            next_idx: vec![0; threads],
            final_idx: vec![0; threads],
            finished: vec![false; threads],
            last_counters: vec![Counters::default(); threads],
            pending: BTreeMap::new(),
            depth: 0,
            total_hist: new_hist(),
            total_e2e: new_hist(),
            depths: vec![(t0, 0)],
        }
    }

    /// One thread's report of interval `index`; `counters` are cumulative.
    pub fn add(
        &mut self,
        thread: usize,
        index: u64,
        last: bool,
        counters: Counters,
        hist: &Histogram<u64>,
        e2e: &Histogram<u64>,
    ) {
        let agg = self.pending.entry(index).or_insert_with(|| IntervalAgg {
            ops_all: 0,
            errors: 0,
            stored: 0,
            taken: 0,
            hist: new_hist(),
            e2e: new_hist(),
        });
        let prev = &self.last_counters[thread];
        agg.ops_all += counters.ops_all - prev.ops_all;
        agg.errors += counters.errors() - prev.errors();
        agg.stored += counters.stored_all - prev.stored_all;
        agg.taken += counters.taken_all - prev.taken_all;
        let _ = agg.hist.add(hist);
        let _ = agg.e2e.add(e2e);
        self.last_counters[thread] = counters;
        self.next_idx[thread] = index + 1;
        self.final_idx[thread] = index;
        self.finished[thread] |= last;
    }

    /// Merges, logs and prints every interval all threads are past.
    pub fn emit_complete(&mut self) {
        let threads = self.next_idx.len();
        while let Some((&idx, _)) = self.pending.iter().next() {
            let all_in = (0..threads).all(|t| self.next_idx[t] > idx || self.finished[t]);
            if !all_in {
                break;
            }
            let agg = self.pending.remove(&idx).expect("present");
            let _ = self.total_hist.add(&agg.hist);
            let _ = self.total_e2e.add(&agg.e2e);
            let interval_start = self.t0 + idx * SECOND;
            self.depth += agg.stored as i64 - agg.taken as i64;
            self.depths.push((interval_start + SECOND, self.depth));
            let is_last = (0..threads).all(|t| self.finished[t] && self.final_idx[t] <= idx);
            if interval_start + SECOND > self.measure_start {
                self.log(idx, &agg);
            }
            if !self.quiet && !is_last {
                self.print(idx, &agg, interval_start < self.measure_start);
            }
        }
    }

    /// Writes a measured interval to the `--hdr-log`.
    fn log(&mut self, idx: u64, agg: &IntervalAgg) {
        let traced = self.traced;
        let Some(log) = &mut self.hdr else {
            return;
        };
        let off = Duration::from_nanos(idx * SECOND);
        let len = Duration::from_secs(1);
        let r = log.write(&agg.hist, off, len, None).and_then(|_| {
            if traced {
                log.write(&agg.e2e, off, len, Some("e2e"))
            } else {
                Ok(())
            }
        });
        if let Err(e) = r {
            eprintln!("mcq-loadgen: hdr log: {e}");
        }
    }

    /// The progress line on stderr.
    fn print(&self, idx: u64, agg: &IntervalAgg, warm: bool) {
        let p99 = if self.total_hist.is_empty() {
            "-".to_string()
        } else {
            format!(
                "{:.1} us",
                self.total_hist.value_at_quantile(0.99) as f64 / 1000.0
            )
        };
        let line = format!(
            "[{:>4}s] {:>10} ops/s  errors {:<6} p99 so far {}{}",
            idx + 1,
            agg.ops_all,
            agg.errors,
            p99,
            if warm { "  (warm-up)" } else { "" }
        );
        let mut err = io::stderr().lock();
        let _ = writeln!(err, "{line}");
    }
}
