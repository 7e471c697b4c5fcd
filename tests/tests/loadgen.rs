//! mcq-loadgen against the real mcqd: the JSON report has the documented
//! fields with percentiles in order, the end-to-end latency of
//! producer/consumer pairs is measured, and the HdrHistogram log and the
//! plot are written. An open-loop run ends at its duration whatever the
//! rate, and a pairs run whose backlog grows says so.

use std::process::Command;

use mcq_tests::{loadgen_bin, output_within, Server};
use serde_json::Value;

fn run(server: &Server, args: &[&str]) -> Value {
    let dir = server.data_dir.parent().unwrap().to_path_buf();
    let json = dir.join("report.json");
    let out = output_within(
        Command::new(loadgen_bin())
            .args(["--server", &format!("127.0.0.1:{}", server.port), "--quiet"])
            .args(["--requests", "4000", "--connections", "4"])
            .args(args)
            .arg("--json")
            .arg(&json),
    );
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap()
}

/// Runs the generator for a duration (no `--requests`): the report, and
/// what it said on stderr.
fn run_for(server: &Server, args: &[&str]) -> (Value, String) {
    let dir = server.data_dir.parent().unwrap().to_path_buf();
    let json = dir.join("timed.json");
    let out = output_within(
        Command::new(loadgen_bin())
            .args(["--server", &format!("127.0.0.1:{}", server.port), "--quiet"])
            .args(args)
            .arg("--json")
            .arg(&json),
    );
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        out.status.success(),
        "{}\n{stderr}",
        String::from_utf8_lossy(&out.stdout)
    );
    let report = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    (report, stderr)
}

fn assert_percentiles_in_order(latency: &Value) {
    let p: Vec<f64> = ["p50", "p90", "p99", "p999", "max"]
        .iter()
        .map(|k| {
            latency[k]
                .as_f64()
                .unwrap_or_else(|| panic!("{k} missing in {latency}"))
        })
        .collect();
    assert!(p[0] > 0.0, "{latency}");
    assert!(
        p.windows(2).all(|w| w[0] <= w[1]),
        "percentiles out of order: {latency}"
    );
}

#[test]
fn mixed_workload_report() {
    let server = Server::start("loadgen-mixed", &["-t", "2", "--sync", "interval=10"]);
    let dir = server.data_dir.parent().unwrap().to_path_buf();
    let hdr = dir.join("run.hlog");
    let plot = dir.join("run.svg");
    let report = run(
        &server,
        &[
            "--workload",
            "mixed",
            "--pipeline",
            "4",
            "--hdr-log",
            hdr.to_str().unwrap(),
            "--plot",
            plot.to_str().unwrap(),
        ],
    );
    assert!(report["ops_per_sec"].as_f64().unwrap() > 0.0, "{report}");
    assert_eq!(report["errors"].as_u64(), Some(0), "{report}");
    let (sets, gets) = (
        report["sets"].as_u64().unwrap(),
        report["gets"].as_u64().unwrap(),
    );
    assert!(sets + gets >= 4000 && sets > 0 && gets > 0, "{report}");
    assert_percentiles_in_order(&report["latency_us"]);
    assert!(std::fs::read_to_string(&hdr)
        .unwrap()
        .contains("#[StartTime"));
    assert!(std::fs::read_to_string(&plot).unwrap().contains("<svg"));
    // What the generator counted is what the server counted.
    let stats = server.client().stats();
    assert_eq!(stats["cmd_set"], sets.to_string());
}

#[test]
fn pairs_measure_end_to_end_latency() {
    let server = Server::start("loadgen-pairs", &["-t", "2"]);
    let report = run(&server, &["--workload", "pairs", "--verify"]);
    assert_eq!(report["errors"].as_u64(), Some(0), "{report}");
    assert_percentiles_in_order(&report["latency_us"]);
    assert_percentiles_in_order(&report["e2e_latency_us"]);
}

#[test]
fn blocking_consumers_lose_nothing() {
    let server = Server::start("loadgen-blocking", &["-t", "2"]);
    let report = run(
        &server,
        &["--workload", "pairs", "--verify", "--get-wait", "5s"],
    );
    assert_eq!(report["errors"].as_u64(), Some(0), "{report}");
    assert_eq!(report["verify"]["passed"].as_bool(), Some(true), "{report}");
    assert!(report["hits"].as_u64().unwrap() > 0, "{report}");
}

#[test]
fn reliable_consumers_confirm_everything() {
    let server = Server::start("loadgen-reliable", &["-t", "2"]);
    for extra in [&[][..], &["--get-wait", "2s"]] {
        let mut args = vec!["--workload", "pairs", "--verify", "--reliable"];
        args.extend_from_slice(extra);
        let report = run(&server, &args);
        assert_eq!(report["errors"].as_u64(), Some(0), "{report}");
        let verify = &report["verify"];
        assert_eq!(verify["passed"].as_bool(), Some(true), "{report}");
        assert_eq!(verify["lost"].as_u64(), Some(0), "{report}");
        assert_eq!(verify["redelivered"].as_u64(), Some(0), "{report}");
    }
    // Every message opened was confirmed: nothing is left open or queued,
    // and the counters agree.
    let mut c = server.client();
    let stats = c.stats();
    assert_eq!(stats["open_transactions"], "0");
    assert_eq!(stats["curr_items"], "0");
    for (q, enqueued, dequeued) in c.queue_stats() {
        assert_eq!(enqueued, dequeued, "{q}");
    }
}

#[test]
fn open_loop_stops_sending_at_its_duration() {
    // A rate no server reaches over one connection one request deep: two
    // million requests are due in the 2 s. Before, every one of them was
    // sent however late, and the run lasted minutes (past PATIENCE).
    let server = Server::start("loadgen-open-loop", &["-t", "1", "--sync", "none"]);
    let (report, stderr) = run_for(
        &server,
        &[
            "--rate",
            "1000000",
            "--connections",
            "1",
            "--duration",
            "2s",
            "--timeout",
            "5s",
        ],
    );
    let open = &report["open_loop"];
    let (scheduled, sent, unsent) = (
        open["scheduled"].as_u64().unwrap(),
        open["sent"].as_u64().unwrap(),
        open["unsent"].as_u64().unwrap(),
    );
    assert_eq!(scheduled, 2_000_000, "{report}");
    assert_eq!(sent + unsent, scheduled, "{report}");
    assert!(unsent > 0 && sent > 0, "{report}");
    // Everything sent was answered, within the measured window plus the
    // replies still in flight at its end (bounded by --timeout).
    assert_eq!(report["ops"].as_u64(), Some(sent), "{report}");
    assert_eq!(report["errors"].as_u64(), Some(0), "{report}");
    let duration = report["duration_s"].as_f64().unwrap();
    assert!((2.0..2.0 + 5.0).contains(&duration), "{report}");
    assert!(
        stderr.contains("could not keep the rate") && stderr.contains("never sent"),
        "{stderr}"
    );
}

#[test]
fn pairs_warn_when_the_backlog_grows() {
    let server = Server::start("loadgen-backlog", &["-t", "1", "--sync", "none"]);
    // Producers 16 deep against reliable consumers, which keep one get in
    // flight: the queue grows all run. --timeout stops the consumers' drain
    // after the producers have finished.
    let (report, stderr) = run_for(
        &server,
        &[
            "--workload",
            "pairs",
            "--connections",
            "2",
            "--queues",
            "1",
            "--pipeline",
            "16",
            "--reliable",
            "--duration",
            "2s",
            "--timeout",
            "2s",
        ],
    );
    let backlog = &report["backlog"];
    assert_eq!(backlog["growing"].as_bool(), Some(true), "{report}");
    assert!(
        backlog["end"].as_i64().unwrap() > backlog["start"].as_i64().unwrap(),
        "{report}"
    );
    assert!(stderr.contains("WARNING: the backlog grew"), "{stderr}");

    // Paced producers that the consumers keep up with: no warning.
    let (report, stderr) = run_for(
        &server,
        &[
            "--workload",
            "pairs",
            "--connections",
            "2",
            "--queues",
            "1",
            "--key-prefix",
            "paced",
            "--rate",
            "200",
            "--duration",
            "2s",
        ],
    );
    assert_eq!(
        report["backlog"]["growing"].as_bool(),
        Some(false),
        "{report}"
    );
    assert!(!stderr.contains("backlog grew"), "{stderr}");
}
