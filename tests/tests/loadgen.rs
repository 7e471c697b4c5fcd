//! mcq-loadgen against the real mcqd: the JSON report has the documented
//! fields with percentiles in order, the end-to-end latency of
//! producer/consumer pairs is measured, and the HdrHistogram log and the
//! plot are written.

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
