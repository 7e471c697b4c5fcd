//! `mcq-loadgen`: a load generator for memcache-protocol queue servers.
//!
//! # Layout
//! - [`cli`] — flags, parsed into typed values.
//! - [`connections`] — resolving servers, opening and assigning the connections.
//! - [`transport`] — TCP, TLS and authentication; the plaintext or TLS stream.
//! - [`workload`] — what each request is: op mix, queue choice, sizes, bodies.
//! - [`protocol`] — request encoding and the incremental reply parser.
//! - [`reliable`] — `--reliable`: what a connection holds open, which get next.
//! - [`schedule`] — the clock and the open-loop (coordinated-omission-free) schedule.
//! - [`poll`] — epoll and timerfd, the only OS interface the hot path needs.
//! - [`engine`] — one epoll loop per thread driving its connections.
//! - [`stats`] — per-thread counters and histograms.
//! - [`intervals`] — the threads' once-a-second reports, merged in order.
//! - [`verify`], [`drain`] — order, duplicate and loss checking for `--verify`.
//! - [`report`], [`hdrlog`], [`plot`] — summary and JSON, HdrHistogram log, SVG.
//!
//! This file wires them together: connect, start the threads, aggregate their
//! once-a-second reports into the progress line and the interval log, then
//! drain (for `--verify`) and report.

mod cli;
mod connections;
mod drain;
mod engine;
mod hdrlog;
mod intervals;
mod plot;
mod poll;
mod protocol;
mod reliable;
mod report;
mod schedule;
mod stats;
mod transport;
mod verify;
mod workload;

use std::io;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, SystemTime};

use clap::Parser;
use hdrhistogram::Histogram;

use cli::Args;
use engine::{ConnSpec, Msg, Plan, Shared, ThreadOut, Worker};
use intervals::Intervals;
use protocol::GetOptions;
use schedule::now_ns;
use stats::{new_hist, Counters};
use verify::{ConsumerLog, ProducerLog};
use workload::{KeyChooser, Pattern, Workload};

const EXIT_VERIFY_FAILED: u8 = 1;
const EXIT_SETUP: u8 = 2;
const EXIT_CONNECTION_ERRORS: u8 = 3;

fn main() -> ExitCode {
    let args = Args::parse();
    if let Err(e) = args.validate() {
        eprintln!("mcq-loadgen: {e}");
        return ExitCode::from(EXIT_SETUP);
    }
    match run(&args) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("mcq-loadgen: {e}");
            ExitCode::from(EXIT_SETUP)
        }
    }
}

fn run(args: &Args) -> Result<u8, String> {
    let servers = connections::resolve(&args.servers)?;
    let command_line = command_line();
    let seed = args.seed.unwrap_or_else(seed_from_clock);
    let run_id = (workload::Rng::new(seed).next_u64() >> 32) as u32;
    let names: Vec<Vec<u8>> = (0..args.queues)
        .map(|i| format!("{}{}", args.key_prefix, i).into_bytes())
        .collect();
    let keys = KeyChooser::new(args.queues, &args.key_dist)?;
    if args.get_wait.is_some_and(|w| w >= args.timeout) {
        return Err("--get-wait must be shorter than --timeout".into());
    }
    let get_options = GetOptions::new(args.get_wait.map(|w| w.as_millis() as u64));
    let threads = args.threads.min(args.connections);
    let connector = Arc::new(transport::Connector::new(args)?);
    let layout = connections::open(args, &servers, threads, &connector)?;
    let n_conns = layout.n_conns;

    let warmup = args.warmup.as_nanos() as u64;
    let t0 = now_ns() + 20_000_000;
    let measure_start = t0 + warmup;
    let end = args
        .measure_duration()
        .map(|d| measure_start + d.as_nanos() as u64);
    let open_limit = match (args.rate, args.requests) {
        (Some(rate), Some(n)) => Some((args.warmup.as_secs_f64() * rate).ceil() as u64 + n),
        _ => None,
    };
    let plan = Arc::new(Plan {
        workload: args.workload,
        set_ratio: args.set_ratio,
        pipeline: args.pipeline,
        value_size: args.value_size.clone(),
        traced: args.traced(),
        verify: args.verify,
        names,
        get_options,
        keys,
        pattern: Pattern::new(args.value_size.max(), seed),
        run: run_id,
        n_conns: n_conns as u32,
        t0,
        measure_start,
        end,
        rate: args.rate,
        sched_slots: layout.slots,
        open_limit,
        timeout: args.timeout.as_nanos() as u64,
        miss_backoff: args.miss_backoff.as_nanos() as u64,
        busy_poll: args.busy_poll.as_nanos() as u64,
        reconnect: args.reconnect,
        reconnect_every: args.reconnect_every,
        connector,
        reliable: args.reliable,
        seed,
    });
    let shared = Arc::new(Shared {
        budget: match (args.rate, args.requests) {
            (None, Some(n)) => Some(AtomicU64::new(n)),
            _ => None,
        },
        producers_active: AtomicUsize::new(layout.producers),
    });

    let wall_start = SystemTime::now() + Duration::from_millis(20);
    let hdr = match &args.hdr_log {
        Some(p) => Some(
            hdrlog::HdrLog::create(p, wall_start, &command_line)
                .map_err(|e| format!("{}: {e}", p.display()))?,
        ),
        None => None,
    };
    let mut intervals = Intervals::new(threads, t0, measure_start, plan.traced, args.quiet, hdr);
    let outs = run_threads(&plan, &shared, layout.per_thread, &mut intervals)?;
    if let Some(log) = intervals.hdr.take() {
        log.finish().map_err(|e| format!("hdr log: {e}"))?;
    }

    let mut totals = Totals::merge(outs, measure_start);
    // The window is the schedule's, stretched to the last reply: an open-loop
    // backlog that drains after the end must not inflate the achieved rate.
    let interrupted = engine::INTERRUPTED.load(Ordering::Relaxed);
    if interrupted {
        eprintln!("mcq-loadgen: interrupted; results cover the run so far");
    }
    let window_end = match end {
        Some(e) if !interrupted => e.max(totals.last_complete),
        _ => totals.last_complete,
    };
    let duration_ns = window_end.saturating_sub(measure_start);
    let duration_s = (duration_ns as f64 / 1e9).max(1e-9);

    let verify_report = if args.verify {
        let (drain_log, drained) = drain::drain_all(&servers, &plan, args.timeout)?;
        totals.consumer_logs.push(drain_log);
        Some(verify::finish(
            &totals.producer_logs,
            &totals.consumer_logs,
            drained,
            verify::Crashes {
                reconnects: totals.reconnects,
                gets_in_doubt: totals.gets_in_doubt,
            },
        ))
    } else {
        None
    };

    let pairs = args.workload == Workload::Pairs;
    let results = report::Results {
        config: command_line.clone(),
        servers: args.servers.clone(),
        workload: format!("{:?}", args.workload).to_lowercase(),
        connections: n_conns,
        threads,
        pipeline: args.pipeline,
        queues: args.queues,
        value_size: args.value_size.to_string(),
        key_dist: args.key_dist.to_string(),
        warmup_s: args.warmup.as_secs_f64(),
        reliable: args.reliable,
        duration_s,
        rate_target: args.rate,
        ops: totals.counters.ops,
        ops_per_sec: totals.counters.ops as f64 / duration_s,
        sets: totals.counters.sets,
        gets: totals.counters.gets,
        hits: totals.counters.hits,
        misses: totals.counters.misses,
        errors: totals.counters.errors(),
        errors_by_kind: totals
            .counters
            .errors_by_kind()
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect(),
        bytes_sent: totals.counters.bytes_sent,
        bytes_received: totals.counters.bytes_received,
        connections_opened: n_conns as u64 + totals.counters.opened_all,
        churn: args.reconnect_every.map(|every| report::Churn {
            reconnect_every: every,
            opened: totals.counters.opened,
            opened_per_sec: totals.counters.opened as f64 / duration_s,
            setup_us: report::percentiles(&totals.setup),
        }),
        latency_us: report::percentiles(&intervals.total_hist),
        e2e_latency_us: report::percentiles(&intervals.total_e2e),
        send_lag_us: report::percentiles(&totals.send_lag),
        open_loop: args.rate.map(|_| report::OpenLoop {
            scheduled: totals.send_lag.len() + totals.counters.unsent,
            sent: totals.send_lag.len(),
            unsent: totals.counters.unsent,
        }),
        backlog: if pairs {
            end.and_then(|end| {
                let in_flight = n_conns * args.pipeline;
                report::Backlog::judge(
                    &intervals.depths,
                    measure_start,
                    end,
                    totals.counters.sets,
                    in_flight,
                )
            })
        } else {
            None
        },
        verify: verify_report,
    };
    report::print_summary(&results, &mut io::stdout().lock()).map_err(|e| e.to_string())?;
    if let Some(rate) = args.rate {
        warn_if_rate_missed(&results, rate, pairs, &totals, duration_s);
    }
    if let Some(b) = results.backlog.as_ref().filter(|b| b.growing) {
        warn_backlog_grew(b);
    }
    if let Some(p) = &args.json {
        let text = serde_json::to_string_pretty(&results).map_err(|e| e.to_string())?;
        std::fs::write(p, text + "\n").map_err(|e| format!("{}: {e}", p.display()))?;
    }
    if let Some(p) = &args.plot {
        let title = format!(
            "mcq-loadgen {} — {} conns x {} pipeline, {:.0} ops/s",
            results.workload, n_conns, args.pipeline, results.ops_per_sec
        );
        plot::write(
            p,
            &title,
            &[
                ("request latency", &intervals.total_hist),
                ("end-to-end", &intervals.total_e2e),
            ],
        )
        .map_err(|e| format!("{}: {e}", p.display()))?;
    }

    if results.verify.as_ref().is_some_and(|v| !v.passed) {
        return Ok(EXIT_VERIFY_FAILED);
    }
    if totals.dead > 0 {
        return Ok(EXIT_CONNECTION_ERRORS);
    }
    Ok(0)
}

/// The command line as typed, quoted where needed, for the reports.
fn command_line() -> String {
    std::env::args()
        .map(|a| {
            if a.contains(' ') || a.is_empty() {
                format!("'{a}'")
            } else {
                a
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// A seed that differs from run to run (no `--seed`).
fn seed_from_clock() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(1)
        ^ u64::from(std::process::id())
}

/// Starts one thread per connection group, feeds their interval reports to
/// `intervals` until every thread is done, and returns what each reported
/// last.
fn run_threads(
    plan: &Arc<Plan>,
    shared: &Arc<Shared>,
    per_thread: Vec<Vec<ConnSpec>>,
    intervals: &mut Intervals,
) -> Result<Vec<Option<Box<ThreadOut>>>, String> {
    let threads = per_thread.len();
    engine::install_interrupt_handler();
    let (tx, rx) = mpsc::channel();
    let mut handles = Vec::new();
    for (i, specs) in per_thread.into_iter().enumerate() {
        let worker = Worker::new(i, plan.clone(), shared.clone(), tx.clone(), specs)
            .map_err(|e| format!("thread setup: {e}"))?;
        handles.push(
            std::thread::Builder::new()
                .name(format!("lg-{i}"))
                .spawn(move || worker.run())
                .map_err(|e| format!("spawn: {e}"))?,
        );
    }
    drop(tx);
    let mut outs: Vec<Option<Box<ThreadOut>>> = (0..threads).map(|_| None).collect();
    while let Ok(msg) = rx.recv() {
        match msg {
            Msg::Interval {
                thread,
                index,
                last,
                counters,
                hist,
                e2e,
            } => intervals.add(thread, index, last, counters, &hist, &e2e),
            Msg::Done { thread, out } => outs[thread] = Some(out),
        }
        intervals.emit_complete();
    }
    for h in handles {
        let _ = h.join();
    }
    Ok(outs)
}

/// What all threads reported at the end, merged.
struct Totals {
    counters: Counters,
    producer_logs: Vec<ProducerLog>,
    consumer_logs: Vec<ConsumerLog>,
    /// Completion time of the last measured request (at least the start of
    /// the measured window).
    last_complete: u64,
    /// Open loop: every measured request sent records its send lag.
    send_lag: Histogram<u64>,
    /// Set-up time of the connections opened in the measured window.
    setup: Histogram<u64>,
    gets_in_doubt: u64,
    reconnects: u64,
    dead: u64,
}

impl Totals {
    fn merge(outs: Vec<Option<Box<ThreadOut>>>, measure_start: u64) -> Totals {
        let mut t = Totals {
            counters: Counters::default(),
            producer_logs: Vec::new(),
            consumer_logs: Vec::new(),
            last_complete: measure_start,
            send_lag: new_hist(),
            setup: new_hist(),
            gets_in_doubt: 0,
            reconnects: 0,
            dead: 0,
        };
        for out in outs.into_iter().flatten() {
            t.counters.merge(&out.counters);
            t.gets_in_doubt += out.gets_in_doubt;
            t.reconnects += out.reconnects;
            t.dead += out.dead;
            let _ = t.send_lag.add(&out.send_lag);
            let _ = t.setup.add(&out.setup);
            t.producer_logs.extend(out.producers);
            if let Some(c) = out.consumer {
                t.consumer_logs.push(c);
            }
            t.last_complete = t.last_complete.max(out.last_complete);
        }
        t
    }
}

/// Open loop: says so when the run fell short of `--rate` or left scheduled
/// requests unsent, for its latency then includes the queueing.
fn warn_if_rate_missed(
    results: &report::Results,
    rate: f64,
    pairs: bool,
    totals: &Totals,
    duration_s: f64,
) {
    let achieved = if pairs {
        results.sets as f64 / duration_s
    } else {
        results.ops_per_sec
    };
    let never_sent = totals.counters.unsent;
    if achieved < rate * 0.95 || never_sent > 0 {
        let unsent = if never_sent > 0 {
            format!(
                ", and {} of the {} scheduled requests were never sent (the run ended first)",
                never_sent,
                totals.send_lag.len() + never_sent
            )
        } else {
            String::new()
        };
        eprintln!(
            "mcq-loadgen: WARNING: could not keep the rate: achieved {achieved:.0} req/s, {:.1}% below \
             the target {rate:.0} req/s{unsent}; the server (or this generator) could not keep up, \
             and latency includes the queueing",
            100.0 * (1.0 - achieved / rate).max(0.0)
        );
    }
}

/// Pairs: says so when the producers outpaced the consumers, for end-to-end
/// latency then measures the backlog.
fn warn_backlog_grew(b: &report::Backlog) {
    eprintln!(
        "mcq-loadgen: WARNING: the backlog grew: {} messages queued at the start of the measured \
         window, {} at its end ({:+.0}/s); the producers outpace the consumers, so end-to-end latency \
         grows with the length of the run and measures the backlog, not the server",
        b.start, b.end, b.growth_per_sec
    );
}
