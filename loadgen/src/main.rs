//! `mcq-loadgen`: a load generator for memcache-protocol queue servers.
//!
//! # Layout
//! - [`cli`] — flags, parsed into typed values.
//! - [`workload`] — what each request is: op mix, queue choice, sizes, bodies.
//! - [`protocol`] — request encoding and the incremental reply parser.
//! - [`reliable`] — `--reliable`: what a connection holds open, which get next.
//! - [`schedule`] — the clock and the open-loop (coordinated-omission-free) schedule.
//! - [`poll`] — epoll and timerfd, the only OS interface the hot path needs.
//! - [`engine`] — one epoll loop per thread driving its connections.
//! - [`stats`] — per-thread counters and histograms.
//! - [`verify`] — order, duplicate and loss checking for `--verify`.
//! - [`report`], [`hdrlog`], [`plot`] — summary and JSON, HdrHistogram log, SVG.
//!
//! This file wires them together: connect, start the threads, aggregate their
//! once-a-second reports into the progress line and the interval log, then
//! drain (for `--verify`) and report.

mod cli;
mod engine;
mod hdrlog;
mod plot;
mod poll;
mod protocol;
mod reliable;
mod report;
mod schedule;
mod stats;
mod verify;
mod workload;

use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeMap, HashMap};
use std::hash::{Hash, Hasher};
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, AtomicUsize};
use std::sync::{mpsc, Arc};
use std::time::{Duration, SystemTime};

use clap::Parser;
use hdrhistogram::Histogram;

use cli::Args;
use engine::{ConnSpec, Msg, Plan, Role, Shared, ThreadOut, Worker, SECOND};
use protocol::{parse_reply, GetKind, GetOptions, Parsed, Reply};
use schedule::now_ns;
use stats::{new_hist, Counters};
use verify::ConsumerLog;
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

fn resolve(servers: &[String]) -> Result<Vec<(String, SocketAddr)>, String> {
    servers
        .iter()
        .map(|s| {
            let addr = s
                .to_socket_addrs()
                .map_err(|e| format!("cannot resolve {s}: {e}"))?
                .next()
                .ok_or_else(|| format!("{s} resolves to no address"))?;
            Ok((s.clone(), addr))
        })
        .collect()
}

fn connect(addr: &SocketAddr, name: &str, timeout: Duration) -> Result<TcpStream, String> {
    let s = TcpStream::connect_timeout(addr, timeout)
        .map_err(|e| format!("cannot connect to {name}: {e}"))?;
    s.set_nodelay(true)
        .map_err(|e| format!("{name}: TCP_NODELAY: {e}"))?;
    Ok(s)
}

/// Per-interval totals while threads report in.
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

fn run(args: &Args) -> Result<u8, String> {
    let servers = resolve(&args.servers)?;
    let command_line = std::env::args()
        .map(|a| {
            if a.contains(' ') || a.is_empty() {
                format!("'{a}'")
            } else {
                a
            }
        })
        .collect::<Vec<_>>()
        .join(" ");
    let seed = args.seed.unwrap_or_else(|| {
        SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1)
            ^ u64::from(std::process::id())
    });
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

    // Connections, roles and schedule slots.
    let pairs = args.workload == Workload::Pairs;
    let n_conns = if pairs {
        args.connections / 2 * 2
    } else {
        args.connections
    };
    if pairs && n_conns != args.connections {
        eprintln!("mcq-loadgen: pairs need an even number of connections; using {n_conns}");
    }
    let mut per_thread: Vec<Vec<ConnSpec>> = (0..threads).map(|_| Vec::new()).collect();
    let mut slot = 0u64;
    let mut producers = 0usize;
    for id in 0..n_conns {
        let (role, server_idx) = if pairs {
            let pair = id / 2;
            let queue = (pair as u64 % args.queues) as u32;
            let role = if id % 2 == 0 {
                producers += 1;
                Role::Producer(queue)
            } else {
                Role::Consumer(queue)
            };
            (role, pair % servers.len())
        } else {
            (Role::Mixed, id % servers.len())
        };
        let (name, addr) = &servers[server_idx];
        let stream = connect(addr, name, args.timeout)?;
        let scheduled = !matches!(role, Role::Consumer(_));
        per_thread[id % threads].push(ConnSpec {
            id: id as u32,
            stream,
            server: name.clone(),
            addr: *addr,
            role,
            slot: scheduled.then(|| {
                slot += 1;
                slot - 1
            }),
        });
    }

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
        sched_slots: slot,
        open_limit,
        timeout: args.timeout.as_nanos() as u64,
        miss_backoff: args.miss_backoff.as_nanos() as u64,
        busy_poll: args.busy_poll.as_nanos() as u64,
        reconnect: args.reconnect,
        reliable: args.reliable,
        seed,
    });
    let shared = Arc::new(Shared {
        budget: match (args.rate, args.requests) {
            (None, Some(n)) => Some(AtomicU64::new(n)),
            _ => None,
        },
        producers_active: AtomicUsize::new(producers),
    });

    let wall_start = SystemTime::now() + Duration::from_millis(20);
    let mut hdr = match &args.hdr_log {
        Some(p) => Some(
            hdrlog::HdrLog::create(p, wall_start, &command_line)
                .map_err(|e| format!("{}: {e}", p.display()))?,
        ),
        None => None,
    };

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

    // Aggregate the interval reports.
    let mut total_hist = new_hist();
    let mut total_e2e = new_hist();
    let mut next_idx = vec![0u64; threads];
    let mut finished = vec![false; threads];
    let mut last_counters = vec![Counters::default(); threads];
    let mut pending: BTreeMap<u64, IntervalAgg> = BTreeMap::new();
    let mut outs: Vec<Option<Box<ThreadOut>>> = (0..threads).map(|_| None).collect();
    let mut final_idx = vec![0u64; threads];
    // (interval boundary, messages queued by this run then): the backlog.
    let mut depth = 0i64;
    let mut depths = vec![(t0, 0i64)];
    while let Ok(msg) = rx.recv() {
        match msg {
            Msg::Interval {
                thread,
                index,
                last,
                counters,
                hist,
                e2e,
            } => {
                let agg = pending.entry(index).or_insert_with(|| IntervalAgg {
                    ops_all: 0,
                    errors: 0,
                    stored: 0,
                    taken: 0,
                    hist: new_hist(),
                    e2e: new_hist(),
                });
                let prev = &last_counters[thread];
                agg.ops_all += counters.ops_all - prev.ops_all;
                agg.errors += counters.errors() - prev.errors();
                agg.stored += counters.stored_all - prev.stored_all;
                agg.taken += counters.taken_all - prev.taken_all;
                let _ = agg.hist.add(&hist);
                let _ = agg.e2e.add(&e2e);
                last_counters[thread] = counters;
                next_idx[thread] = index + 1;
                final_idx[thread] = index;
                finished[thread] |= last;
            }
            Msg::Done { thread, out } => {
                outs[thread] = Some(out);
            }
        }
        // Emit every interval all threads are past.
        while let Some((&idx, _)) = pending.iter().next() {
            let all_in = (0..threads).all(|t| next_idx[t] > idx || finished[t]);
            if !all_in {
                break;
            }
            let agg = pending.remove(&idx).expect("present");
            let _ = total_hist.add(&agg.hist);
            let _ = total_e2e.add(&agg.e2e);
            let interval_start = t0 + idx * SECOND;
            depth += agg.stored as i64 - agg.taken as i64;
            depths.push((interval_start + SECOND, depth));
            let is_last = (0..threads).all(|t| finished[t] && final_idx[t] <= idx);
            if let Some(log) = &mut hdr {
                if interval_start + SECOND > measure_start {
                    let off = Duration::from_nanos(idx * SECOND);
                    let len = Duration::from_secs(1);
                    let r = log.write(&agg.hist, off, len, None).and_then(|_| {
                        if plan.traced {
                            log.write(&agg.e2e, off, len, Some("e2e"))
                        } else {
                            Ok(())
                        }
                    });
                    if let Err(e) = r {
                        eprintln!("mcq-loadgen: hdr log: {e}");
                    }
                }
            }
            if !args.quiet && !is_last {
                let warm = interval_start < measure_start;
                let p99 = if total_hist.is_empty() {
                    "-".to_string()
                } else {
                    format!(
                        "{:.1} us",
                        total_hist.value_at_quantile(0.99) as f64 / 1000.0
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
    }
    for h in handles {
        let _ = h.join();
    }
    if let Some(log) = hdr {
        log.finish().map_err(|e| format!("hdr log: {e}"))?;
    }

    let mut counters = Counters::default();
    let mut producer_logs = Vec::new();
    let mut consumer_logs = Vec::new();
    let mut last_complete = measure_start;
    // Open loop: every measured request sent records its send lag.
    let mut send_lag = new_hist();
    let (mut gets_in_doubt, mut reconnects, mut dead) = (0, 0, 0);
    for out in outs.into_iter().flatten() {
        counters.merge(&out.counters);
        gets_in_doubt += out.gets_in_doubt;
        reconnects += out.reconnects;
        dead += out.dead;
        let _ = send_lag.add(&out.send_lag);
        producer_logs.extend(out.producers);
        if let Some(c) = out.consumer {
            consumer_logs.push(c);
        }
        last_complete = last_complete.max(out.last_complete);
    }
    // The window is the schedule's, stretched to the last reply: an open-loop
    // backlog that drains after the end must not inflate the achieved rate.
    let interrupted = engine::INTERRUPTED.load(std::sync::atomic::Ordering::Relaxed);
    if interrupted {
        eprintln!("mcq-loadgen: interrupted; results cover the run so far");
    }
    let window_end = match end {
        Some(e) if !interrupted => e.max(last_complete),
        _ => last_complete,
    };
    let duration_ns = window_end.saturating_sub(measure_start);
    let duration_s = (duration_ns as f64 / 1e9).max(1e-9);

    let verify_report = if args.verify {
        let mut drain_log = ConsumerLog::new(run_id, n_conns as u32, args.reliable);
        let mut drained = 0;
        for (si, (name, addr)) in servers.iter().enumerate() {
            drained += drain(
                name,
                addr,
                &plan,
                args.timeout,
                u32::MAX - si as u32,
                &mut drain_log,
            )?;
        }
        consumer_logs.push(drain_log);
        Some(verify::finish(
            &producer_logs,
            &consumer_logs,
            drained,
            verify::Crashes {
                reconnects,
                gets_in_doubt,
            },
        ))
    } else {
        None
    };

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
        ops: counters.ops,
        ops_per_sec: counters.ops as f64 / duration_s,
        sets: counters.sets,
        gets: counters.gets,
        hits: counters.hits,
        misses: counters.misses,
        errors: counters.errors(),
        errors_by_kind: counters
            .errors_by_kind()
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect(),
        bytes_sent: counters.bytes_sent,
        bytes_received: counters.bytes_received,
        latency_us: report::percentiles(&total_hist),
        e2e_latency_us: report::percentiles(&total_e2e),
        send_lag_us: report::percentiles(&send_lag),
        open_loop: args.rate.map(|_| report::OpenLoop {
            scheduled: send_lag.len() + counters.unsent,
            sent: send_lag.len(),
            unsent: counters.unsent,
        }),
        backlog: if pairs {
            end.and_then(|end| {
                let in_flight = n_conns * args.pipeline;
                report::Backlog::judge(&depths, measure_start, end, counters.sets, in_flight)
            })
        } else {
            None
        },
        verify: verify_report,
    };
    report::print_summary(&results, &mut io::stdout().lock()).map_err(|e| e.to_string())?;
    if let Some(rate) = args.rate {
        let achieved = if pairs {
            results.sets as f64 / duration_s
        } else {
            results.ops_per_sec
        };
        if achieved < rate * 0.95 || counters.unsent > 0 {
            let unsent = if counters.unsent > 0 {
                format!(
                    ", and {} of the {} scheduled requests were never sent (the run ended first)",
                    counters.unsent,
                    send_lag.len() + counters.unsent
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
    if let Some(b) = results.backlog.as_ref().filter(|b| b.growing) {
        eprintln!(
            "mcq-loadgen: WARNING: the backlog grew: {} messages queued at the start of the measured \
             window, {} at its end ({:+.0}/s); the producers outpace the consumers, so end-to-end latency \
             grows with the length of the run and measures the backlog, not the server",
            b.start, b.end, b.growth_per_sec
        );
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
            &[("request latency", &total_hist), ("end-to-end", &total_e2e)],
        )
        .map_err(|e| format!("{}: {e}", p.display()))?;
    }

    if results.verify.as_ref().is_some_and(|v| !v.passed) {
        return Ok(EXIT_VERIFY_FAILED);
    }
    if dead > 0 {
        return Ok(EXIT_CONNECTION_ERRORS);
    }
    Ok(0)
}

/// Pops every queue empty on one server, feeding what it finds to `log`.
/// Returns how many of our messages it found. With `--reliable` it reads
/// the way the consumers do: `/open`, then `/close/open` while messages
/// come, one get per queue in flight, and a `/close` for any queue it stops
/// with a message open.
fn drain(
    name: &str,
    addr: &SocketAddr,
    plan: &Plan,
    timeout: Duration,
    consumer_id: u32,
    log: &mut ConsumerLog,
) -> Result<u64, String> {
    let mut s = connect(addr, name, timeout)?;
    s.set_read_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    let n_queues = plan.names.len() as u32;
    let first = if plan.reliable {
        GetKind::Open
    } else {
        GetKind::Pop
    };
    // No --get-wait here: an empty queue ends the drain at once.
    let options = GetOptions::new(None);
    let mut todo: Vec<(u32, GetKind)> = (0..n_queues).map(|q| (q, first)).collect();
    let mut buf: Vec<u8> = Vec::with_capacity(1 << 16);
    let mut last_body: HashMap<u32, u64> = HashMap::new();
    let mut out = Vec::new();
    let mut left_open = Vec::new();
    let before = log.received_count;
    while !todo.is_empty() {
        let batch: Vec<(u32, GetKind)> = todo.drain(..todo.len().min(256)).collect();
        out.clear();
        for &(q, kind) in &batch {
            protocol::encode_get(&mut out, &plan.names[q as usize], options.get(kind));
        }
        s.write_all(&out)
            .map_err(|e| format!("drain {name}: write: {e}"))?;
        let mut start = 0;
        for &(q, kind) in &batch {
            read_reply(&mut s, &mut buf, start, name)?;
            let (reply, len) = match parse_reply(&buf[start..]) {
                Parsed::Reply { reply, len } => (reply, len),
                Parsed::Desync(m) => return Err(format!("drain {name}: protocol desync: {m}")),
                Parsed::Incomplete { .. } => return Err(format!("drain {name}: reply cut short")),
            };
            match reply {
                Reply::End => {}
                Reply::Value { data, .. } if kind != GetKind::Close => {
                    let dups = log.duplicates;
                    log.check(consumer_id, q, data, &plan.pattern, now_ns());
                    // A server that hands the same message out again
                    // (memcached is not a queue) would never run dry: a
                    // duplicate, or the same foreign body twice in a row,
                    // ends that queue.
                    let mut h = DefaultHasher::new();
                    data.hash(&mut h);
                    let digest = h.finish();
                    let repeated = last_body.insert(q, digest) == Some(digest);
                    let next = if plan.reliable {
                        GetKind::CloseOpen
                    } else {
                        GetKind::Pop
                    };
                    if log.duplicates == dups && !repeated {
                        todo.push((q, next));
                    } else if plan.reliable {
                        left_open.push((q, GetKind::Close));
                    }
                }
                Reply::Value { .. } => {
                    return Err(format!("drain {name}: VALUE in reply to a /close"))
                }
                Reply::Error(_, line) => {
                    return Err(format!("drain {name}: {}", String::from_utf8_lossy(line)))
                }
                Reply::Stored => return Err(format!("drain {name}: STORED in reply to get")),
            }
            start += len;
        }
        buf.drain(..start);
        if todo.is_empty() {
            todo.append(&mut left_open);
        }
    }
    Ok(log.received_count - before)
}

/// Reads until `buf[start..]` begins with a whole reply (or garbage, which
/// the caller's parse reports).
fn read_reply(
    s: &mut TcpStream,
    buf: &mut Vec<u8>,
    start: usize,
    name: &str,
) -> Result<(), String> {
    while let Parsed::Incomplete { .. } = parse_reply(&buf[start..]) {
        let mut chunk = [0u8; 65536];
        let n = s
            .read(&mut chunk)
            .map_err(|e| format!("drain {name}: read: {e}"))?;
        if n == 0 {
            return Err(format!("drain {name}: server closed the connection"));
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    Ok(())
}
