//! A deep backlog against the real mcqd: memory that does not grow with
//! the number of queued messages, and a deep multi-queue backlog that comes
//! back byte for byte, in order, after a kill -9.
//!
//! Memory is not a timing: these tests assert it (generously), and never
//! how fast anything runs.

use std::process::{Command, Stdio};
use std::time::Duration;

use mcq_tests::{finish_within, loadgen_bin, Client, Server, PATIENCE};

/// The resident set of process `pid`, in bytes.
fn rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("VmRSS");
    kib << 10
}

/// Sets `n` 100-byte messages over 16 queues with mcq-loadgen.
fn fill(server: &Server, n: u64) {
    let out = finish_within(
        Command::new(loadgen_bin())
            .args(["--server", &format!("127.0.0.1:{}", server.port)])
            .args(["--workload", "set", "-c", "4", "-p", "32"])
            .args(["--queues", "16", "--value-size", "100", "--quiet"])
            .args(["-n", &n.to_string(), "--timeout", "60s"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start mcq-loadgen (scripts/test builds it)"),
        PATIENCE * 4,
    );
    assert!(
        out.status.success(),
        "mcq-loadgen failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn items(server: &Server) -> u64 {
    server.client().stats()["curr_items"].parse().unwrap()
}

/// RSS once the server has indexed what it was given (its maintenance
/// pages sealed segments out): the lowest of samples 400 ms apart, taken
/// until none was lower for 5 s (at most a minute: on a busy machine the
/// index of the last sealed segment can take seconds to be written).
fn settled_rss(server: &Server) -> u64 {
    let start = std::time::Instant::now();
    let mut low = u64::MAX;
    let mut since = std::time::Instant::now();
    while since.elapsed() < Duration::from_secs(5) && start.elapsed() < Duration::from_secs(60) {
        std::thread::sleep(Duration::from_millis(400));
        let now = rss(server.pid());
        if now + (1 << 20) <= low || low == u64::MAX {
            since = std::time::Instant::now();
        }
        low = low.min(now);
    }
    low
}

#[test]
fn memory_does_not_grow_with_the_backlog() {
    const MIB: u64 = 1 << 20;
    // 16 MiB segments: the open segment's locators (which stay in memory,
    // bounded by its size) then vary by at most a few MiB with where the
    // fill stops in it. What is asserted is that nothing grows with the
    // depth: 8M more messages would add 64 MiB at 8 bytes each. The
    // allocator's free chunks are the noise: with the heap in use the same
    // (69-74 MiB, glibc's malloc_stats), a running server's RSS has been
    // 9 to 23 MiB above its figure at 1M queued, since bodies churning
    // through the hot cache fill the holes the log's buffers leave as they
    // grow. A restarted server has not churned, so its bound is tight.
    let args = ["-t", "1", "--sync", "none", "--segment-size", "16M"];
    let mut server = Server::start("backlog-rss", &args);
    fill(&server, 1_000_000);
    assert_eq!(items(&server), 1_000_000);
    let at_1m = settled_rss(&server);
    server.kill9();
    server.restart_with(&args);
    let restarted_1m = settled_rss(&server);
    fill(&server, 8_000_000);
    let n = items(&server);
    assert!(
        n >= 8_900_000,
        "{n} queued (a kill -9 in `none` may lose the last ms)"
    );
    let at_9m = settled_rss(&server);
    server.kill9();
    server.restart_with(&args);
    assert_eq!(items(&server), n);
    let restarted_9m = settled_rss(&server);
    eprintln!(
        "RSS MiB: 1M {} (restarted {}), 9M {} (restarted {})",
        at_1m / MIB,
        restarted_1m / MIB,
        at_9m / MIB,
        restarted_9m / MIB
    );
    assert!(
        at_9m <= at_1m + 32 * MIB,
        "RSS grew from {} MiB at 1M queued to {} MiB at 9M",
        at_1m / MIB,
        at_9m / MIB
    );
    assert!(
        restarted_9m <= restarted_1m + 16 * MIB,
        "RSS after a restart grew from {} MiB (1M queued) to {} MiB (9M)",
        restarted_1m / MIB,
        restarted_9m / MIB
    );
    // And the backlog is all there, every queue readable.
    let mut c = server.client();
    let queues = c.queue_stats();
    assert_eq!(queues.len(), 16);
    for (name, enqueued, dequeued) in queues {
        assert_eq!(dequeued, 0);
        assert!(enqueued > 0);
        assert!(c.get(&name).is_some(), "{name}");
    }
}

fn body(q: usize, i: usize) -> Vec<u8> {
    let mut b = format!("q{q}-m{i}-").into_bytes();
    while b.len() < 60 + (i * 7 + q) % 90 {
        b.push(b'a' + ((b.len() + i) % 26) as u8);
    }
    b
}

/// Sets `bodies` on `queue`, pipelined a thousand at a time.
fn set_all(c: &mut Client, queue: &str, bodies: impl Iterator<Item = Vec<u8>>) {
    let bodies: Vec<Vec<u8>> = bodies.collect();
    for chunk in bodies.chunks(1000) {
        let mut req = Vec::new();
        for b in chunk {
            req.extend_from_slice(format!("set {queue} 0 0 {}\r\n", b.len()).as_bytes());
            req.extend_from_slice(b);
            req.extend_from_slice(b"\r\n");
        }
        c.send(&req);
        for _ in chunk {
            assert_eq!(c.read_until(b"\r\n"), b"STORED\r\n");
        }
    }
}

#[test]
fn a_deep_backlog_survives_kill9_and_drains_in_order() {
    const QUEUES: usize = 8;
    const PER_QUEUE: usize = 25_000;
    // Small segments: the backlog spans dozens of sealed segments, so it
    // is paged out, recovered from index summaries and paged in again.
    let args = ["-t", "2", "--segment-size", "1M"];
    let mut server = Server::start("backlog-kill9", &args);
    let mut c = server.client();
    for round in 0..5 {
        for q in 0..QUEUES {
            let from = round * PER_QUEUE / 5;
            let to = (round + 1) * PER_QUEUE / 5;
            set_all(&mut c, &format!("deep{q}"), (from..to).map(|i| body(q, i)));
        }
    }
    // Queue 0 is half drained before the crash.
    for i in 0..PER_QUEUE / 2 {
        assert_eq!(c.get("deep0").unwrap(), body(0, i), "deep0 {i}");
    }
    drop(c);
    server.kill9();
    server.restart_with(&args);
    let mut c = server.client();
    for q in 0..QUEUES {
        let first = if q == 0 { PER_QUEUE / 2 } else { 0 };
        let got = c.drain(&format!("deep{q}"));
        assert_eq!(got.len(), PER_QUEUE - first, "deep{q}: messages back");
        for (k, b) in got.iter().enumerate() {
            assert_eq!(*b, body(q, first + k), "deep{q}: message {}", first + k);
        }
    }
    let log = server.log();
    assert!(!log.contains("corrupt"), "{log}");
}
