//! Runs the real `mcq-loadgen` binary against a tiny in-process memcache
//! queue server, so that the whole pipeline — connections, pipelining,
//! verification, JSON — is exercised without depending on mcqd being built.
//! A second server acknowledges a message and then drops it, and `--verify`
//! must notice: that is the bug class crash tests rely on it to catch.

use std::collections::{HashMap, VecDeque};
use std::io::{BufRead, BufReader, BufWriter, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

type Queues = Arc<Mutex<HashMap<Vec<u8>, VecDeque<(u32, Vec<u8>)>>>>;

/// Starts a FIFO memcache queue server; with `lose_nth = Some(n)` the n-th
/// stored message (1-based) is acknowledged but never kept.
fn start_server(lose_nth: Option<u64>) -> String {
    start_server_with(lose_nth, None)
}

/// Like [`start_server`]; with `drop_all_at = Some(n)` every open connection
/// is cut right after the n-th `set` is stored, as a crashing server would.
fn start_server_with(lose_nth: Option<u64>, drop_all_at: Option<u64>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let queues: Queues = Arc::default();
    let stored = Arc::new(AtomicU64::new(0));
    let open: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(conn) = conn else { continue };
            open.lock().unwrap().push(conn.try_clone().unwrap());
            let (queues, stored, open) = (queues.clone(), stored.clone(), open.clone());
            std::thread::spawn(move || {
                serve(conn, queues, stored, lose_nth, &|n| {
                    if drop_all_at == Some(n) {
                        for c in open.lock().unwrap().drain(..) {
                            let _ = c.shutdown(std::net::Shutdown::Both);
                        }
                    }
                })
            });
        }
    });
    addr
}

fn serve(
    conn: TcpStream,
    queues: Queues,
    stored: Arc<AtomicU64>,
    lose_nth: Option<u64>,
    after_store: &dyn Fn(u64),
) {
    let mut r = BufReader::new(conn.try_clone().unwrap());
    let mut w = BufWriter::new(conn);
    let mut line = Vec::new();
    loop {
        line.clear();
        match r.read_until(b'\n', &mut line) {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let text = String::from_utf8_lossy(&line).trim_end().to_string();
        let toks: Vec<&str> = text.split(' ').collect();
        match toks.as_slice() {
            ["set", q, flags, _exp, len] => {
                let len: usize = len.parse().unwrap();
                let mut body = vec![0u8; len + 2];
                if r.read_exact(&mut body).is_err() {
                    return;
                }
                body.truncate(len);
                let n = stored.fetch_add(1, Ordering::SeqCst) + 1;
                if lose_nth != Some(n) {
                    queues
                        .lock()
                        .unwrap()
                        .entry(q.as_bytes().to_vec())
                        .or_default()
                        .push_back((flags.parse().unwrap(), body));
                }
                after_store(n);
                if w.write_all(b"STORED\r\n").is_err() {
                    return;
                }
            }
            ["get", q] => {
                let msg = queues
                    .lock()
                    .unwrap()
                    .get_mut(q.as_bytes())
                    .and_then(|d| d.pop_front());
                let mut reply = Vec::new();
                if let Some((flags, body)) = msg {
                    write!(reply, "VALUE {q} {flags} {}\r\n", body.len()).unwrap();
                    reply.extend_from_slice(&body);
                    reply.extend_from_slice(b"\r\n");
                }
                reply.extend_from_slice(b"END\r\n");
                if w.write_all(&reply).is_err() {
                    return;
                }
            }
            _ => {
                if w.write_all(b"ERROR\r\n").is_err() {
                    return;
                }
            }
        }
        if r.buffer().is_empty() && w.flush().is_err() {
            return;
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
