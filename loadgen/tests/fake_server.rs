//! Runs the real `mcq-loadgen` binary against a tiny in-process memcache
//! queue server, so that the whole pipeline — connections, pipelining,
//! verification, JSON — is exercised without depending on mcqd being built.
//! The server knows Kestrel's blocking get (`/t=<ms>`) and reliable reads
//! (`/open`, `/close`, `/abort`, one open message per queue per connection,
//! put back at the head when the connection ends). Faults make it
//! misbehave the ways `--verify` must notice (a message acknowledged and
//! dropped, open messages forgotten at a disconnect) or must forgive
//! (connections cut, as a crashing server's are).

use std::collections::{HashMap, VecDeque};
use std::io::{BufRead, BufReader, BufWriter, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

type Message = (u32, Vec<u8>);
type Queues = Arc<Mutex<HashMap<Vec<u8>, VecDeque<Message>>>>;

/// Ways the server misbehaves.
#[derive(Clone, Copy, Default)]
struct Faults {
    /// The n-th stored message (1-based) is acknowledged but never kept.
    lose_nth: Option<u64>,
    /// Every open connection is cut right after the n-th `set` is stored.
    drop_all_at: Option<u64>,
    /// (n, reply first): every open connection is cut when the n-th `/open`
    /// hands out a message, after sending its reply or instead of it. The
    /// connection that cut reads nothing more.
    cut_at_open: &'static [(u64, bool)],
    /// A connection that ends forgets the messages it held open instead of
    /// putting them back: a server that loses what it handed out.
    forget_open: bool,
}

/// What the server saw.
#[derive(Default)]
struct Seen {
    /// Plain gets (without reliable-read options).
    plain_gets: AtomicU64,
    /// `/open`s that handed out a message.
    opens: AtomicU64,
    /// Open messages confirmed by a `/close`.
    closed: AtomicU64,
    /// Open messages put back at the head because their connection ended.
    put_back: AtomicU64,
    /// Open messages forgotten (`Faults::forget_open`).
    forgotten: AtomicU64,
    /// Connections accepted.
    accepted: AtomicU64,
    /// The most requests answered on one connection.
    most_requests: AtomicU64,
}

/// Starts a FIFO memcache queue server; with `lose_nth = Some(n)` the n-th
/// stored message (1-based) is acknowledged but never kept.
fn start_server(lose_nth: Option<u64>) -> String {
    start_server_with(lose_nth, None)
}

/// Like [`start_server`]; with `drop_all_at = Some(n)` every open connection
/// is cut right after the n-th `set` is stored, as a crashing server would.
fn start_server_with(lose_nth: Option<u64>, drop_all_at: Option<u64>) -> String {
    start_faulty(Faults {
        lose_nth,
        drop_all_at,
        ..Faults::default()
    })
    .0
}

fn start_faulty(faults: Faults) -> (String, Arc<Seen>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let queues: Queues = Arc::default();
    let seen: Arc<Seen> = Arc::default();
    let stored = Arc::new(AtomicU64::new(0));
    let conns: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
    let seen_too = seen.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(conn) = conn else { continue };
            seen_too.accepted.fetch_add(1, Ordering::SeqCst);
            conns.lock().unwrap().push(conn.try_clone().unwrap());
            let server = Server {
                queues: queues.clone(),
                stored: stored.clone(),
                seen: seen_too.clone(),
                conns: conns.clone(),
                faults,
            };
            std::thread::spawn(move || server.serve(conn));
        }
    });
    (addr, seen)
}

/// One connection's view of the server.
struct Server {
    queues: Queues,
    stored: Arc<AtomicU64>,
    seen: Arc<Seen>,
    conns: Arc<Mutex<Vec<TcpStream>>>,
    faults: Faults,
}

/// A `get` key: the queue and its options.
struct GetKey<'a> {
    queue: &'a str,
    wait: Duration,
    open: bool,
    close: bool,
    abort: bool,
}

fn parse_key(key: &str) -> Option<GetKey<'_>> {
    let mut parts = key.split('/');
    let mut k = GetKey {
        queue: parts.next()?,
        wait: Duration::ZERO,
        open: false,
        close: false,
        abort: false,
    };
    for opt in parts {
        match opt {
            "open" => k.open = true,
            "close" => k.close = true,
            "abort" => k.abort = true,
            _ => k.wait = Duration::from_millis(opt.strip_prefix("t=")?.parse().ok()?),
        }
    }
    Some(k)
}

impl Server {
    fn cut_all(&self) {
        for c in self.conns.lock().unwrap().drain(..) {
            let _ = c.shutdown(std::net::Shutdown::Both);
        }
    }

    /// Pops the head of `queue`, waiting up to `wait` for one.
    fn pop(&self, queue: &str, wait: Duration) -> Option<Message> {
        let deadline = Instant::now() + wait;
        loop {
            let msg = self
                .queues
                .lock()
                .unwrap()
                .get_mut(queue.as_bytes())
                .and_then(|d| d.pop_front());
            if msg.is_some() || Instant::now() >= deadline {
                return msg;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    fn put_back(&self, queue: &[u8], msg: Message) {
        self.queues
            .lock()
            .unwrap()
            .entry(queue.to_vec())
            .or_default()
            .push_front(msg);
    }

    fn serve(&self, conn: TcpStream) {
        // The messages this connection holds open, by queue.
        let mut open: HashMap<Vec<u8>, Message> = HashMap::new();
        self.requests(conn, &mut open);
        for (queue, msg) in open {
            if self.faults.forget_open {
                self.seen.forgotten.fetch_add(1, Ordering::SeqCst);
            } else {
                self.seen.put_back.fetch_add(1, Ordering::SeqCst);
                self.put_back(&queue, msg);
            }
        }
    }

    /// Answers requests until the connection ends or this server cuts it.
    fn requests(&self, conn: TcpStream, open: &mut HashMap<Vec<u8>, Message>) {
        let mut r = BufReader::new(conn.try_clone().unwrap());
        let mut w = BufWriter::new(conn);
        let mut line = Vec::new();
        let mut answered = 0;
        loop {
            line.clear();
            match r.read_until(b'\n', &mut line) {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
            let text = String::from_utf8_lossy(&line).trim_end().to_string();
            let toks: Vec<&str> = text.split(' ').collect();
            let mut reply = Vec::new();
            match toks.as_slice() {
                ["set", q, flags, _exp, len] => {
                    let len: usize = len.parse().unwrap();
                    let mut body = vec![0u8; len + 2];
                    if r.read_exact(&mut body).is_err() {
                        return;
                    }
                    body.truncate(len);
                    let n = self.stored.fetch_add(1, Ordering::SeqCst) + 1;
                    if self.faults.lose_nth != Some(n) {
                        let mut queues = self.queues.lock().unwrap();
                        let queue = queues.entry(q.as_bytes().to_vec()).or_default();
                        queue.push_back((flags.parse().unwrap(), body));
                    }
                    if self.faults.drop_all_at == Some(n) {
                        self.cut_all();
                    }
                    reply.extend_from_slice(b"STORED\r\n");
                }
                ["get", key] => match parse_key(key) {
                    None => reply.extend_from_slice(b"CLIENT_ERROR bad get option\r\n"),
                    Some(k) => {
                        let name = k.queue.as_bytes();
                        if k.close && open.remove(name).is_some() {
                            self.seen.closed.fetch_add(1, Ordering::SeqCst);
                        }
                        if k.abort {
                            if let Some(msg) = open.remove(name) {
                                self.put_back(name, msg);
                            }
                        }
                        let reliable = k.open || k.close || k.abort;
                        if !reliable {
                            self.seen.plain_gets.fetch_add(1, Ordering::SeqCst);
                        }
                        if open.contains_key(name) && (k.open || !reliable) {
                            reply.extend_from_slice(b"CLIENT_ERROR a message is open\r\n");
                        } else if k.open || !reliable {
                            if let Some((flags, body)) = self.pop(k.queue, k.wait) {
                                write!(reply, "VALUE {key} {flags} {}\r\n", body.len()).unwrap();
                                reply.extend_from_slice(&body);
                                reply.extend_from_slice(b"\r\n");
                                if k.open {
                                    open.insert(name.to_vec(), (flags, body));
                                    let n = self.seen.opens.fetch_add(1, Ordering::SeqCst) + 1;
                                    let cut = self.faults.cut_at_open.iter().find(|c| c.0 == n);
                                    if let Some(&(_, reply_first)) = cut {
                                        if reply_first {
                                            reply.extend_from_slice(b"END\r\n");
                                            let _ = w.write_all(&reply);
                                            let _ = w.flush();
                                        }
                                        self.cut_all();
                                        return;
                                    }
                                }
                            }
                            reply.extend_from_slice(b"END\r\n");
                        } else {
                            reply.extend_from_slice(b"END\r\n");
                        }
                    }
                },
                _ => reply.extend_from_slice(b"ERROR\r\n"),
            }
            if w.write_all(&reply).is_err() {
                return;
            }
            answered += 1;
            self.seen
                .most_requests
                .fetch_max(answered, Ordering::SeqCst);
            if r.buffer().is_empty() && w.flush().is_err() {
                return;
            }
        }
    }
}

fn tmp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("mcq-loadgen-it-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

fn run(args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_mcq-loadgen"))
        .args(args)
        .output()
        .unwrap();
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

fn read_json(path: &PathBuf) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn assert_spectrum(v: &serde_json::Value) {
    let keys = ["p50", "p75", "p90", "p99", "p999", "p9999", "max"];
    let vals: Vec<f64> = keys.iter().map(|k| v[k].as_f64().unwrap()).collect();
    assert!(vals.windows(2).all(|w| w[0] <= w[1]), "{v}");
    assert!(vals[0] > 0.0);
    assert!(v["mean"].as_f64().unwrap() > 0.0);
}

#[test]
fn mixed_workload_reports_and_verifies() {
    let addr = start_server(None);
    let json = tmp("mixed.json");
    let plot = tmp("mixed.svg");
    let hlog = tmp("mixed.hlog");
    let (code, out) = run(&[
        "--server",
        &addr,
        "--connections",
        "4",
        "--threads",
        "2",
        "--pipeline",
        "8",
        "--requests",
        "4000",
        "--queues",
        "3",
        "--set-ratio",
        "0.6",
        "--value-size",
        "40..300",
        "--verify",
        "--quiet",
        "--json",
        json.to_str().unwrap(),
        "--plot",
        plot.to_str().unwrap(),
        "--hdr-log",
        hlog.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("verify       PASSED"), "{out}");
    let j = read_json(&json);
    assert_eq!(j["errors"], 0);
    assert_eq!(j["connections"], 4);
    assert_eq!(j["pipeline"], 8);
    assert!(j["config"].as_str().unwrap().contains("--verify"));
    let (sets, gets) = (j["sets"].as_u64().unwrap(), j["gets"].as_u64().unwrap());
    assert_eq!(sets + gets, 4000);
    assert_eq!(
        j["hits"].as_u64().unwrap() + j["misses"].as_u64().unwrap(),
        gets
    );
    assert!(sets > 0 && gets > 0);
    assert!(j["ops_per_sec"].as_f64().unwrap() > 0.0);
    assert!(j["duration_s"].as_f64().unwrap() > 0.0);
    assert_spectrum(&j["latency_us"]);
    let v = &j["verify"];
    assert_eq!(v["passed"], true);
    assert_eq!(v["lost"], 0);
    assert_eq!(v["acknowledged"].as_u64().unwrap(), sets);
    // Everything set was either got during the run or drained at the end.
    assert_eq!(v["received"].as_u64().unwrap(), sets);
    assert!(std::fs::read_to_string(&plot)
        .unwrap()
        .contains("<polyline"));
    assert!(std::fs::read_to_string(&hlog)
        .unwrap()
        .contains("#[StartTime:"));
}

/// 8 MiB messages (the flood of `scripts/bench --fairness`) go out and come
/// back whole: the size is accepted, sends span many partial writes, and a
/// VALUE far larger than the read buffer grows it instead of desyncing.
#[test]
fn eight_mib_values_round_trip() {
    let addr = start_server(None);
    let json = tmp("big.json");
    let size = 8 * 1024 * 1024;
    let (code, out) = run(&[
        "--server",
        &addr,
        "--connections",
        "2",
        "--pipeline",
        "2",
        "--requests",
        "16",
        "--queues",
        "1",
        "--value-size",
        &size.to_string(),
        "--verify",
        "--quiet",
        "--json",
        json.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{out}");
    let j = read_json(&json);
    assert_eq!(j["errors"], 0, "{j}");
    assert_eq!(j["value_size"], size.to_string());
    let (sets, hits) = (j["sets"].as_u64().unwrap(), j["hits"].as_u64().unwrap());
    assert!(sets > 0);
    assert!(j["bytes_sent"].as_u64().unwrap() >= sets * size);
    assert!(j["bytes_received"].as_u64().unwrap() >= hits * size);
    let v = &j["verify"];
    assert_eq!(v["passed"], true, "{v}");
    assert_eq!(v["received"].as_u64().unwrap(), sets);
}

#[test]
fn pairs_measure_end_to_end() {
    let addr = start_server(None);
    let json = tmp("pairs.json");
    let (code, out) = run(&[
        "--server",
        &addr,
        "--connections",
        "4",
        "--pipeline",
        "4",
        "--workload",
        "pairs",
        "--requests",
        "2000",
        "--queues",
        "2",
        "--verify",
        "--quiet",
        "--json",
        json.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{out}");
    let j = read_json(&json);
    assert_eq!(j["sets"], 2000);
    assert_eq!(j["errors"], 0);
    assert_spectrum(&j["e2e_latency_us"]);
    assert_eq!(j["e2e_latency_us"]["count"], 2000);
    assert_eq!(j["verify"]["passed"], true);
    assert_eq!(
        j["verify"]["drained"], 0,
        "consumers drain their own queues"
    );
}

#[test]
fn closed_loop_without_e2e_has_null_e2e() {
    let addr = start_server(None);
    let json = tmp("set.json");
    let (code, out) = run(&[
        "--server",
        &addr,
        "--workload",
        "set",
        "--requests",
        "500",
        "--quiet",
        "--json",
        json.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{out}");
    let j = read_json(&json);
    assert_eq!(j["sets"], 500);
    assert!(j["e2e_latency_us"].is_null());
    assert!(j["verify"].is_null());
}

#[test]
fn verify_fails_when_the_server_loses_a_message() {
    let addr = start_server(Some(50));
    let json = tmp("lossy.json");
    let (code, out) = run(&[
        "--server",
        &addr,
        "--connections",
        "2",
        "--workload",
        "pairs",
        "--requests",
        "300",
        "--queues",
        "1",
        "--verify",
        "--quiet",
        "--json",
        json.to_str().unwrap(),
    ]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("FAILED"), "{out}");
    let j = read_json(&json);
    assert_eq!(j["verify"]["passed"], false);
    assert_eq!(j["verify"]["lost"], 1);
}

#[test]
fn desync_aborts_instead_of_hanging() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                while let Ok(n) = conn.read(&mut buf) {
                    if n == 0 || conn.write_all(b"HELLO THERE\r\n").is_err() {
                        return;
                    }
                }
            });
        }
    });
    let (code, out) = run(&[
        "--server",
        &addr,
        "--connections",
        "1",
        "--requests",
        "10",
        "--quiet",
    ]);
    assert_eq!(code, 3, "{out}");
    assert!(out.contains("protocol desync"), "{out}");
}

#[test]
fn open_loop_counts_every_scheduled_request() {
    let addr = start_server(None);
    let json = tmp("open.json");
    let (code, out) = run(&[
        "--server",
        &addr,
        "--connections",
        "3",
        "--rate",
        "20000",
        "--requests",
        "600",
        "--quiet",
        "--json",
        json.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{out}");
    let j = read_json(&json);
    assert_eq!(j["ops"], 600);
    assert_eq!(j["rate_target"], 20000.0);
    assert_spectrum(&j["latency_us"]);
    assert_eq!(j["send_lag_us"]["count"], 600);
}

#[test]
fn verify_spans_several_servers() {
    let (a, b) = (start_server(None), start_server(None));
    let json = tmp("two.json");
    let (code, out) = run(&[
        "--server",
        &a,
        "--server",
        &b,
        "--connections",
        "4",
        "--threads",
        "2",
        "--pipeline",
        "4",
        "--requests",
        "3000",
        "--set-ratio",
        "0.7",
        "--queues",
        "5",
        "--verify",
        "--quiet",
        "--json",
        json.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{out}");
    let j = read_json(&json);
    assert_eq!(j["verify"]["passed"], true);
    assert_eq!(j["verify"]["received"], j["sets"]);
    assert!(j["verify"]["drained"].as_u64().unwrap() > 0);
}

#[test]
fn reconnect_survives_a_server_that_drops_every_connection() {
    let addr = start_server_with(None, Some(700));
    let json = tmp("crash.json");
    let (code, out) = run(&[
        "--server",
        &addr,
        "--connections",
        "6",
        "--workload",
        "pairs",
        "--pipeline",
        "4",
        "--requests",
        "3000",
        "--queues",
        "3",
        "--verify",
        "--reconnect",
        "--quiet",
        "--json",
        json.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("reconnected"), "{out}");
    let j = read_json(&json);
    let v = &j["verify"];
    assert_eq!(v["passed"], true, "{out}");
    assert!(v["reconnects"].as_u64().unwrap() >= 1);
    assert!(v["lost"].as_u64().unwrap() <= v["gets_in_doubt"].as_u64().unwrap());
    // Sets in flight at the cut are in doubt: sent, never answered.
    assert_eq!(v["sent"], 3000);
    assert_eq!(
        v["acknowledged"].as_u64().unwrap() + v["in_doubt"].as_u64().unwrap(),
        3000
    );
}

fn count(c: &AtomicU64) -> u64 {
    c.load(Ordering::SeqCst)
}

/// Every get a reliable read, pipelined mixed traffic over few queues: all
/// verified, and every message opened was confirmed with a `/close` before
/// its connection ended (none put back by a disconnect).
#[test]
fn reliable_reads_confirm_everything_they_open() {
    let (addr, seen) = start_faulty(Faults::default());
    let json = tmp("reliable-mixed.json");
    let (code, out) = run(&[
        "--server",
        &addr,
        "--connections",
        "4",
        "--threads",
        "2",
        "--pipeline",
        "8",
        "--requests",
        "4000",
        "--queues",
        "3",
        "--set-ratio",
        "0.6",
        "--reliable",
        "--verify",
        "--quiet",
        "--json",
        json.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("reliable reads"), "{out}");
    let j = read_json(&json);
    assert_eq!(j["reliable"], true);
    assert_eq!(j["errors"], 0, "{out}");
    let v = &j["verify"];
    assert_eq!(v["passed"], true, "{out}");
    assert_eq!(v["reliable"], true);
    assert_eq!(v["received"], j["sets"]);
    for field in [
        "redelivered",
        "open_at_disconnect",
        "opens_in_doubt",
        "duplicates",
    ] {
        assert_eq!(v[field], 0, "{field}: {out}");
    }
    assert!(j["hits"].as_u64().unwrap() > 0);
    assert_eq!(count(&seen.plain_gets), 0, "the drain reads reliably too");
    assert_eq!(count(&seen.opens), v["received"].as_u64().unwrap());
    assert_eq!(count(&seen.closed), count(&seen.opens));
    assert_eq!(
        count(&seen.put_back),
        0,
        "a connection ended with a message open"
    );
}

/// Reliable pairs with blocking gets: consumers keep one get in flight
/// (`--pipeline` drives the producers) and still see every message.
#[test]
fn reliable_pairs_with_blocking_gets() {
    let (addr, seen) = start_faulty(Faults::default());
    let json = tmp("reliable-pairs.json");
    let (code, out) = run(&[
        "--server",
        &addr,
        "--connections",
        "4",
        "--pipeline",
        "4",
        "--workload",
        "pairs",
        "--requests",
        "1000",
        "--queues",
        "2",
        "--get-wait",
        "200ms",
        "--reliable",
        "--verify",
        "--quiet",
        "--json",
        json.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{out}");
    let j = read_json(&json);
    assert_eq!(j["verify"]["passed"], true, "{out}");
    assert_eq!(j["e2e_latency_us"]["count"], 1000);
    assert_eq!(j["errors"], 0);
    assert_eq!(count(&seen.put_back), 0);
    assert_eq!(count(&seen.closed), 1000);
}

/// The server cuts every connection twice while consumers hold messages
/// open: once right after handing one out, once instead of answering. The
/// server puts back what was open, so with `--reconnect` every message
/// still arrives; the ones that arrive twice were open at the cut and are
/// counted as redelivered, not as duplicates.
#[test]
fn reliable_reads_survive_cut_connections_with_redeliveries() {
    let (addr, seen) = start_faulty(Faults {
        cut_at_open: &[(300, true), (900, false)],
        ..Faults::default()
    });
    let json = tmp("reliable-cut.json");
    let (code, out) = run(&[
        "--server",
        &addr,
        "--connections",
        "8",
        "--threads",
        "2",
        "--pipeline",
        "4",
        "--workload",
        "pairs",
        "--requests",
        "3000",
        "--queues",
        "2",
        "--reliable",
        "--verify",
        "--reconnect",
        "--quiet",
        "--json",
        json.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{out}");
    let v = &read_json(&json)["verify"];
    assert_eq!(v["passed"], true, "{out}");
    assert_eq!(v["lost"], 0);
    assert_eq!(v["duplicates"], 0);
    assert!(v["reconnects"].as_u64().unwrap() >= 2, "{out}");
    // The message handed out just before the first cut was seen, open, and
    // put back: it came again.
    assert!(v["open_at_disconnect"].as_u64().unwrap() >= 1, "{out}");
    assert!(v["redelivered"].as_u64().unwrap() >= 1, "{out}");
    // The second cut dropped the reply to a get in flight.
    assert!(v["opens_in_doubt"].as_u64().unwrap() >= 1, "{out}");
    assert!(count(&seen.put_back) >= 2);
    assert!(out.contains("redelivered after disconnect"), "{out}");
}

/// The same cuts, but the server forgets what was open instead of putting
/// it back: the message whose reply the cut swallowed is gone, and
/// at-least-once verification fails where plain gets would have excused it.
#[test]
fn reliable_verify_fails_when_open_messages_are_forgotten() {
    let (addr, seen) = start_faulty(Faults {
        cut_at_open: &[(300, false)],
        forget_open: true,
        ..Faults::default()
    });
    let json = tmp("reliable-forget.json");
    let (code, out) = run(&[
        "--server",
        &addr,
        "--connections",
        "4",
        "--workload",
        "pairs",
        "--requests",
        "1000",
        "--queues",
        "2",
        "--reliable",
        "--verify",
        "--reconnect",
        "--quiet",
        "--json",
        json.to_str().unwrap(),
    ]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("FAILED"), "{out}");
    let v = &read_json(&json)["verify"];
    assert_eq!(v["passed"], false);
    assert!(v["lost"].as_u64().unwrap() >= 1, "{out}");
    assert!(count(&seen.forgotten) >= 1);
}

/// The fake server's reliable reads, byte for byte, so that the runs above
/// test the generator against the semantics mcqd promises.
#[test]
fn fake_server_reliable_reads_by_the_bytes() {
    let (addr, seen) = start_faulty(Faults::default());
    let talk = |c: &mut TcpStream, req: &str, want: &str| {
        c.write_all(req.as_bytes()).unwrap();
        let mut got = vec![0u8; want.len()];
        c.read_exact(&mut got).unwrap();
        assert_eq!(String::from_utf8_lossy(&got), want, "reply to {req:?}");
    };
    let mut a = TcpStream::connect(&addr).unwrap();
    for body in ["one", "two", "six"] {
        talk(&mut a, &format!("set q 0 0 3\r\n{body}\r\n"), "STORED\r\n");
    }
    talk(
        &mut a,
        "get q/t=10/open\r\n",
        "VALUE q/t=10/open 0 3\r\none\r\nEND\r\n",
    );
    talk(
        &mut a,
        "get q/open\r\n",
        "CLIENT_ERROR a message is open\r\n",
    );
    talk(&mut a, "get q\r\n", "CLIENT_ERROR a message is open\r\n");
    talk(&mut a, "get q/abort\r\n", "END\r\n");
    talk(
        &mut a,
        "get q/open\r\n",
        "VALUE q/open 0 3\r\none\r\nEND\r\n",
    );
    talk(
        &mut a,
        "get q/close/t=10/open\r\n",
        "VALUE q/close/t=10/open 0 3\r\ntwo\r\nEND\r\n",
    );
    talk(&mut a, "get q/close\r\n", "END\r\n");
    talk(&mut a, "get q/close\r\n", "END\r\n");
    talk(
        &mut a,
        "get q/open\r\n",
        "VALUE q/open 0 3\r\nsix\r\nEND\r\n",
    );
    // A connection that ends puts its open message back at the head.
    drop(a);
    let mut b = TcpStream::connect(&addr).unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while count(&seen.put_back) == 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(1));
    }
    talk(&mut b, "get q\r\n", "VALUE q 0 3\r\nsix\r\nEND\r\n");
    talk(&mut b, "get q/t=20/close/open\r\n", "END\r\n");
    talk(&mut b, "get q/peek\r\n", "CLIENT_ERROR bad get option\r\n");
    assert_eq!(count(&seen.closed), 2);
}

/// `--reconnect-every`: pipelined mixed traffic over two threads, every
/// connection replaced after 5 requests. The server sees every connection
/// the report counts, none carries more than 5 requests although the
/// pipeline is 8 deep, and a deliberate close is no error.
#[test]
fn reconnect_every_replaces_connections_after_n_requests() {
    let (addr, seen) = start_faulty(Faults::default());
    let json = tmp("churn-mixed.json");
    let (code, out) = run(&[
        "--server",
        &addr,
        "--connections",
        "4",
        "--threads",
        "2",
        "--pipeline",
        "8",
        "--requests",
        "1000",
        "--reconnect-every",
        "5",
        "--quiet",
        "--json",
        json.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{out}");
    let j = read_json(&json);
    assert_eq!(j["errors"], 0, "{out}");
    assert!(j["ops"].as_u64().unwrap() >= 1000, "{out}");
    let opened = j["connections_opened"].as_u64().unwrap();
    // 1000 requests on sockets of at most 5; each connection's last socket
    // may carry fewer, and none is opened with nothing to send.
    assert!((200..=204).contains(&opened), "{out}");
    assert_eq!(count(&seen.accepted), opened, "{out}");
    assert!(count(&seen.most_requests) <= 5, "{out}");
    let churn = &j["churn"];
    assert_eq!(churn["reconnect_every"], 5);
    // No warm-up: all but the first 4 were opened in the measured window.
    assert_eq!(churn["opened"].as_u64().unwrap(), opened - 4, "{out}");
    assert!(churn["opened_per_sec"].as_f64().unwrap() > 0.0, "{out}");
    assert_eq!(churn["setup_us"]["count"].as_u64().unwrap(), opened - 4);
    assert_spectrum(&churn["setup_us"]);
    assert!(
        out.contains(&format!("connections  {opened} opened")),
        "{out}"
    );
    assert!(out.contains("conn setup"), "{out}");
    assert!(
        !out.contains("reconnected"),
        "a deliberate close is no crash: {out}"
    );
}

/// Without `--reconnect-every` the connections made at the start are all
/// there is, and the report has no churn.
#[test]
fn without_reconnect_every_connections_last_the_run() {
    let (addr, seen) = start_faulty(Faults::default());
    let json = tmp("no-churn.json");
    let (code, out) = run(&[
        "--server",
        &addr,
        "--connections",
        "3",
        "--requests",
        "300",
        "--quiet",
        "--json",
        json.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{out}");
    let j = read_json(&json);
    assert_eq!(j["connections_opened"], 3);
    assert!(j["churn"].is_null());
    assert_eq!(count(&seen.accepted), 3);
    assert!(!out.contains("conn setup"), "{out}");
}

/// Churn with reliable reads and verified pairs: a connection confirms what
/// it holds open before it closes, so no close puts a message back, and
/// every message arrives once.
#[test]
fn reconnect_every_with_reliable_verified_pairs() {
    let (addr, seen) = start_faulty(Faults::default());
    let json = tmp("churn-reliable.json");
    let (code, out) = run(&[
        "--server",
        &addr,
        "--workload",
        "pairs",
        "--connections",
        "4",
        "--queues",
        "2",
        "--requests",
        "300",
        "--get-wait",
        "100ms",
        "--reliable",
        "--verify",
        "--reconnect-every",
        "3",
        "--quiet",
        "--json",
        json.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{out}");
    let j = read_json(&json);
    assert_eq!(j["errors"], 0, "{out}");
    let v = &j["verify"];
    assert_eq!(v["passed"], true, "{out}");
    assert_eq!(v["received"], j["sets"], "{out}");
    for field in [
        "redelivered",
        "open_at_disconnect",
        "reconnects",
        "duplicates",
    ] {
        assert_eq!(v[field], 0, "{field}: {out}");
    }
    assert_eq!(count(&seen.put_back), 0, "{out}");
    // 300 sets alone take 100 producer connections.
    assert!(j["connections_opened"].as_u64().unwrap() >= 100, "{out}");
}

/// Open loop: requests due while a connection is being replaced still go
/// out, on the next connection.
#[test]
fn reconnect_every_in_open_loop() {
    let (addr, seen) = start_faulty(Faults::default());
    let json = tmp("churn-open.json");
    let (code, out) = run(&[
        "--server",
        &addr,
        "--connections",
        "2",
        "--rate",
        "400",
        "--requests",
        "200",
        "--reconnect-every",
        "1",
        "--quiet",
        "--json",
        json.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{out}");
    let j = read_json(&json);
    assert_eq!(j["errors"], 0, "{out}");
    assert_eq!(j["ops"], 200, "{out}");
    let opened = j["connections_opened"].as_u64().unwrap();
    assert!(opened >= 200, "{out}");
    assert_eq!(count(&seen.accepted), opened);
    assert_eq!(count(&seen.most_requests), 1, "{out}");
}
