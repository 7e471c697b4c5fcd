//! The process lifecycle as an operator sees it: exit codes and log lines
//! when mcqd cannot start, and that it never lingers half-alive.

use mcq_tests::{free_port, output_within, run_until_exit, test_dir, Server};

/// Guards against: one shard failing to open at start-up leaving mcqd
/// half-alive. The other executor waited for the failed one to finish
/// draining, which it never did: the listener closed but the process never
/// exited and ignored SIGTERM (issue 7).
#[test]
fn a_shard_that_cannot_open_stops_mcqd_with_an_error() {
    let mut server = Server::start("startup-failure", &["-t", "2"]);
    server.client().set("q", b"kept");
    assert!(server.stop().success());
    // A directory where a segment file should be: shard 1 cannot open it.
    let bad = server
        .data_dir
        .join("shard-001")
        .join("00000000000099999999.log");
    std::fs::create_dir(&bad).unwrap();

    let (status, log) = run_until_exit(free_port(), &server.data_dir, &["-t", "2"]);
    assert!(!status.success(), "exit {status}:\n{log}");
    assert!(log.contains("shard 1"), "the log does not say why:\n{log}");
    assert!(!log.contains("listening on"), "{log}");

    // Nothing was lost: with the obstacle gone it starts and serves.
    std::fs::remove_dir(&bad).unwrap();
    server.restart_with(&["-t", "2"]);
    assert_eq!(server.client().get("q").as_deref(), Some(&b"kept"[..]));
    assert!(server.stop().success());
}

/// Guards against: a second mcqd (another data directory) starting on a
/// port another server already serves. SO_REUSEPORT let both listen and the
/// kernel split clients between two unrelated servers (issue 7).
#[test]
fn a_second_server_on_a_served_port_refuses_to_start() {
    let a = Server::start("port-a", &["-t", "2"]);
    let mut c = a.client();
    c.set("q", b"on a");

    let b_dir = test_dir("port-b");
    let (status, log) = run_until_exit(a.port, &b_dir.join("data"), &["-t", "2"]);
    assert!(!status.success(), "exit {status}:\n{log}");
    let expected = format!(
        "cannot listen on 127.0.0.1:{}: address already in use (another server is listening there)",
        a.port
    );
    assert!(log.contains(&expected), "want {expected:?} in:\n{log}");
    assert!(!log.contains("listening on"), "{log}");

    // A still serves, on the connection it had and on new ones.
    assert_eq!(c.get("q").as_deref(), Some(&b"on a"[..]));
    for i in 0..8 {
        let mut c = a.client();
        c.set("q", format!("{i}").as_bytes());
        assert_eq!(c.get("q"), Some(format!("{i}").into_bytes()));
    }
    std::fs::remove_dir_all(&b_dir).unwrap();
}

/// Guards against: the check above mistaking the killed server's own
/// lingering connections (FIN_WAIT, TIME_WAIT on the port) for another
/// server, so that mcqd could not restart on its port after a kill -9.
#[test]
fn restarts_on_its_port_right_after_kill9_with_clients_connected() {
    let mut server = Server::start("port-restart", &["-t", "2"]);
    let mut clients: Vec<_> = (0..8).map(|_| server.client()).collect();
    for (i, c) in clients.iter_mut().enumerate() {
        c.set("q", format!("{i}").as_bytes());
    }
    server.kill9();
    server.restart_same_port();
    let mut c = server.client();
    let mut got = Vec::new();
    while let Some(body) = c.get("q") {
        got.push(String::from_utf8(body).unwrap());
    }
    assert_eq!(got, (0..8).map(|i| i.to_string()).collect::<Vec<_>>());
    drop(clients);
}

/// Guards against: a panicking executor leaving the process running with
/// its shards unreachable (issue 7). mcqd's panic hook must log
/// `<time> ERROR panic in <thread>: <message>` and abort. The program under test
/// is `mcq-panic-probe` (see its doc), since mcqd has no way to panic on
/// purpose.
#[test]
fn a_panicking_executor_ends_the_process_with_a_log_line() {
    use std::os::unix::process::ExitStatusExt;
    // Fails the test if the probe outlives PATIENCE.
    let out = output_within(&mut std::process::Command::new(env!(
        "CARGO_BIN_EXE_mcq-panic-probe"
    )));
    let (status, stderr) = (out.status, String::from_utf8_lossy(&out.stderr));
    assert_eq!(status.signal(), Some(libc::SIGABRT), "{status}:\n{stderr}");
    // glommio names the thread `<name>-<executor id>`.
    assert!(
        stderr
            .lines()
            .any(|l| l.contains(" ERROR panic in mcqd-0-") && l.contains(": index out of bounds")),
        "no log line '… ERROR panic in mcqd-0-…: index out of bounds…':\n{stderr}"
    );
}

/// Bytes of disk the files under `dir` take (`st_blocks`, not their
/// lengths: preallocated blocks count, holes do not).
fn allocated_bytes(dir: &std::path::Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let mut total = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        let meta = entry.metadata().unwrap();
        total += if meta.is_dir() {
            allocated_bytes(&entry.path())
        } else {
            meta.blocks() * 512
        };
    }
    total
}

/// Segment files (`*.log`) under the shard directories of `dir`, with
/// their lengths.
fn segment_files(dir: &std::path::Path) -> Vec<(std::path::PathBuf, u64)> {
    let mut out = Vec::new();
    for shard in std::fs::read_dir(dir).unwrap() {
        let shard = shard.unwrap().path();
        if shard.is_dir() {
            for f in std::fs::read_dir(&shard).unwrap() {
                let f = f.unwrap().path();
                if f.extension().is_some_and(|e| e == "log") {
                    let len = std::fs::metadata(&f).unwrap().len();
                    out.push((f, len));
                }
            }
        }
    }
    out.sort();
    out
}

/// Issue 10: an empty shard takes a small first segment and a small spare
/// (at most 32 MiB, running or stopped), not a whole segment and two
/// spares (192 MiB); a shard that fills rolls to full-size segments, and
/// everything comes back after a restart.
#[test]
fn an_empty_shard_takes_at_most_32_mib_and_a_busy_one_full_segments() {
    let args = ["-t", "2", "--shards", "2"];
    let mut server = Server::start("footprint", &args);
    server.client().set("first", b"x");
    let running = allocated_bytes(&server.data_dir);
    assert!(server.stop().success());
    let stopped = allocated_bytes(&server.data_dir);
    for (when, bytes) in [("running", running), ("stopped", stopped)] {
        assert!(
            bytes <= 2 * (32 << 20),
            "{bytes} bytes allocated for two empty shards ({when})"
        );
    }

    // More than a 64 MiB segment's worth into one queue (one shard).
    server.restart_with(&args);
    let body = |i: usize| {
        let mut b = format!("{i:06}").into_bytes();
        b.resize(1_000_000, b'a' + (i % 26) as u8);
        b
    };
    let n = 80;
    let mut c = server.client();
    for i in 0..n {
        c.set("grow", &body(i));
    }
    assert!(server.stop().success());
    // The queue's shard started this run with a small segment, rolled into
    // a full-size one (sealed and truncated to its records, at least the
    // 56 MiB sets may use of it) and went on; none is past 64 MiB.
    let lens: Vec<u64> = segment_files(&server.data_dir)
        .iter()
        .map(|(_, l)| *l)
        .collect();
    assert!(lens.iter().all(|&l| l <= 64 << 20), "{lens:?}");
    assert!(lens.iter().any(|&l| l >= 48 << 20), "{lens:?}");
    assert!(lens.iter().any(|&l| l <= 8 << 20), "{lens:?}");

    server.restart_with(&args);
    let got = server.client().drain("grow");
    assert_eq!(got.len(), n, "messages stored and served");
    for (i, b) in got.iter().enumerate() {
        assert!(*b == body(i), "message {i} differs");
    }
    assert!(server.stop().success());
}
