//! Durability under load: mcq-loadgen's producer/consumer pairs run with
//! `--verify --reconnect` while mcqd is killed with SIGKILL and restarted
//! on the same port, twice. The generator checks every message it reads
//! back (per-producer order, no corruption) and, after draining every queue
//! at the end, that no acknowledged message was lost beyond the pops whose
//! replies died with the server. This guards against
//! acknowledging a `set` before its record is durable, which no quiet
//! single-client test would catch.

use std::process::{Command, Stdio};
use std::thread;
use std::time::Duration;

use mcq_tests::{loadgen_bin, Server};

fn crash_under_load(sync: &str) {
    let mut server = Server::start("crash-load", &["-t", "2", "--sync", sync]);
    let json = server.data_dir.with_file_name("loadgen.json");
    let loadgen = Command::new(loadgen_bin())
        .args(["--server", &format!("127.0.0.1:{}", server.port)])
        .args([
            "--workload",
            "pairs",
            "--connections",
            "8",
            "--pipeline",
            "4",
        ])
        .args(["--queues", "8", "--duration", "6s", "--timeout", "20s"])
        .args(["--verify", "--reconnect", "--quiet", "--seed", "7"])
        .arg("--json")
        .arg(&json)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start mcq-loadgen (scripts/test builds it)");
    for _ in 0..2 {
        thread::sleep(Duration::from_millis(1500));
        server.kill9();
        server.restart_same_port();
    }
    let out = loadgen.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "verification failed ({}):\n{stdout}\n{stderr}\n{}",
        out.status,
        server.log()
    );
    // "lost" may be non-zero: a message popped by a `get` whose reply died
    // with the server is gone, as plain `get` is at-most-once; the verdict
    // excuses exactly those and fails on any other gap.
    assert!(stdout.contains("verify       PASSED"), "{stdout}");
    let report = std::fs::read_to_string(&json).unwrap();
    assert!(report.contains("\"ops_per_sec\""), "{report}");
    // Everything was drained: the restarted server holds no message.
    assert_eq!(server.client().stats()["curr_items"], "0");
}

#[test]
fn kill9_under_load_loses_nothing_sync_always() {
    crash_under_load("always");
}

#[test]
fn kill9_under_load_loses_nothing_sync_interval() {
    crash_under_load("interval=10");
}
