//! `--metrics`: the Prometheus endpoint, scraped with a real HTTP client
//! (Python's urllib) and read with a real Prometheus parser (the
//! `prometheus_client` library's), checked against what the test did.

use std::collections::HashMap;
use std::path::Path;

use mcq_tests::{free_port, output_within, third_party, Server};
use serde_json::Value;

/// One scrape: each sample's value by `name{labels}` (labels as JSON,
/// sorted), the families' types, and the status of a request for
/// another path.
struct Scrape {
    samples: Vec<(String, Value, f64)>,
    types: HashMap<String, String>,
    other_path_status: u64,
}

impl Scrape {
    fn value(&self, name: &str, queue: Option<&str>) -> f64 {
        let found: Vec<f64> = self
            .samples
            .iter()
            .filter(|(n, labels, _)| {
                n == name && labels.get("queue").and_then(Value::as_str) == queue
            })
            .map(|(_, _, v)| *v)
            .collect();
        assert_eq!(found.len(), 1, "{name} {queue:?}: {found:?}");
        found[0]
    }
}

/// Debian's python3 with `prometheus_client`, which may not be the first
/// python3 on PATH.
fn python() -> &'static str {
    ["python3", "/usr/bin/python3"]
        .into_iter()
        .find(|py| {
            std::process::Command::new(py)
                .args(["-c", "import prometheus_client"])
                .output()
                .map(|o| o.status.success())
                .unwrap_or(false)
        })
        .unwrap_or("python3")
}

fn scrape(addr: &str) -> Option<Scrape> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("clients")
        .join("metrics.py")
        .display()
        .to_string();
    let mut cmd = third_party(
        python(),
        &[&script, addr],
        &["-c", "import prometheus_client.parser"],
        "Python with prometheus_client (Debian: python3-prometheus-client)",
    )?;
    let out = output_within(&mut cmd);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "metrics.py failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut scrape = Scrape {
        samples: Vec::new(),
        types: HashMap::new(),
        other_path_status: 0,
    };
    for line in stdout.lines() {
        let v: Value = serde_json::from_str(line).unwrap();
        if let Some(status) = v.get("status") {
            scrape.other_path_status = status.as_u64().unwrap();
            continue;
        }
        let family = v["family"].as_str().unwrap().to_string();
        scrape
            .types
            .insert(family, v["type"].as_str().unwrap().to_string());
        scrape.samples.push((
            v["name"].as_str().unwrap().to_string(),
            v["labels"].clone(),
            v["value"].as_f64().unwrap(),
        ));
    }
    Some(scrape)
}

#[test]
fn prometheus_endpoint_reports_what_happened() {
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let server = Server::start("metrics", &["-t", "2", "--metrics", &addr]);
    let said = format!("metrics at http://{addr}/metrics)");
    assert!(server.log().contains(&said), "{}", server.log());
    let mut c = server.client();
    for i in 0..5 {
        c.set("jobs", format!("job {i}").as_bytes());
    }
    for _ in 0..3 {
        c.set("mail", b"0123456789");
    }
    // A binary name with the characters the format escapes.
    c.expect(b"set b\xff\"\\q 0 0 1\r\nx\r\n", b"STORED\r\n");
    assert_eq!(c.get("jobs").unwrap(), b"job 0");
    assert_eq!(c.get("jobs").unwrap(), b"job 1");
    assert_eq!(c.get("mail").unwrap(), b"0123456789");
    assert!(c.get("empty").is_none());

    let Some(m) = scrape(&addr) else { return };
    assert_eq!(m.other_path_status, 404);

    // Per queue: depth is what was set minus what was got.
    assert_eq!(m.value("mcq_queue_items", Some("jobs")), 3.0);
    assert_eq!(m.value("mcq_queue_items", Some("mail")), 2.0);
    assert_eq!(m.value("mcq_queue_bytes", Some("mail")), 20.0);
    assert_eq!(m.value("mcq_queue_enqueued_total", Some("jobs")), 5.0);
    assert_eq!(m.value("mcq_queue_dequeued_total", Some("jobs")), 2.0);
    assert_eq!(m.value("mcq_queue_dequeued_total", Some("mail")), 1.0);
    assert!(m.value("mcq_queue_age_seconds", Some("jobs")) >= 0.0);
    // The byte 0xff reads `\xff`, a backslash `\\`, a quote itself.
    assert_eq!(m.value("mcq_queue_items", Some("b\\xff\"\\\\q")), 1.0);
    assert_eq!(m.types["mcq_queue_items"], "gauge");
    assert_eq!(m.types["mcq_queue_enqueued"], "counter");

    // The general counters, as `stats` has them.
    assert_eq!(m.value("mcq_cmd_set_total", None), 9.0);
    assert_eq!(m.value("mcq_cmd_get_total", None), 4.0);
    assert_eq!(m.value("mcq_get_hits_total", None), 3.0);
    assert_eq!(m.value("mcq_get_misses_total", None), 1.0);
    assert_eq!(m.value("mcq_curr_items", None), 6.0);
    assert_eq!(m.value("mcq_curr_queues", None), 3.0);
    assert_eq!(m.value("mcq_curr_connections", None), 1.0);
    assert!(m.value("mcq_log_writes_total", None) > 0.0);
    assert!(m.value("mcq_log_fsyncs_total", None) > 0.0);
    // The read-ahead's: every get was served from the hot cache.
    assert_eq!(m.types["mcq_readahead_hits"], "counter");
    assert_eq!(m.types["mcq_readahead_bytes"], "gauge");
    assert_eq!(m.value("mcq_readahead_hits_total", None), 0.0);
    assert_eq!(m.value("mcq_readahead_reads_total", None), 0.0);
    assert_eq!(m.value("mcq_readahead_bytes", None), 0.0);

    // Commit latency: one observation per group commit at least, buckets
    // cumulative up to +Inf, which is the count.
    assert_eq!(m.types["mcq_commit_latency_seconds"], "histogram");
    let count = m.value("mcq_commit_latency_seconds_count", None);
    assert!(count > 0.0, "{count}");
    let mut buckets: Vec<(f64, f64)> = m
        .samples
        .iter()
        .filter(|(n, _, _)| n == "mcq_commit_latency_seconds_bucket")
        .map(|(_, labels, v)| {
            let le = labels["le"].as_str().unwrap();
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().unwrap()
            };
            (le, *v)
        })
        .collect();
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    assert!(buckets.len() > 5, "{buckets:?}");
    assert!(buckets.windows(2).all(|w| w[0].1 <= w[1].1), "{buckets:?}");
    assert_eq!(buckets.last().unwrap(), &(f64::INFINITY, count));
    assert!(m.value("mcq_commit_latency_seconds_sum", None) > 0.0);

    // A second scrape sees later work.
    c.set("jobs", b"more");
    let Some(again) = scrape(&addr) else { return };
    assert_eq!(again.value("mcq_queue_items", Some("jobs")), 4.0);
    assert!(again.value("mcq_commit_latency_seconds_count", None) > count);
}

#[test]
fn a_taken_metrics_address_stops_the_start() {
    let server = Server::start("metrics-taken", &["-t", "1"]);
    // The address that server listens on is taken.
    let taken = format!("127.0.0.1:{}", server.port);
    let dir = mcq_tests::test_dir("metrics-taken");
    let (status, log) =
        mcq_tests::run_until_exit(free_port(), &dir.join("data"), &["--metrics", &taken]);
    assert!(!status.success());
    assert!(log.contains(&format!("--metrics {taken}")), "{log}");
}
