//! Many queues, against the real server: `stats queue` lists every one of
//! them, correctly and in name order, across shards and a restart; `stats`
//! lists Kestrel's per-queue lines for the first `--stats-queues` of them
//! and says how many it left out; and an idle queue's memory stays small.
//!
//! No timing is asserted (CI is two busy cores). Memory is not a timing:
//! RSS growth per queue is bounded, with a margin over what was measured.

use mcq_tests::{Client, Server};

/// Queues made by the stats test.
const QUEUES: usize = 50_000;

fn name(i: usize) -> String {
    format!("mq{i:06}")
}

/// Sets one `x` on each of `names`, pipelined in batches (a reply per set).
fn set_each(c: &mut Client, names: impl Iterator<Item = String>) {
    let names: Vec<String> = names.collect();
    for batch in names.chunks(1000) {
        let mut req = Vec::new();
        for n in batch {
            req.extend_from_slice(format!("set {n} 0 0 1\r\nx\r\n").as_bytes());
        }
        c.send(&req);
        let replies = c.read_n(batch.len() * b"STORED\r\n".len());
        assert!(
            replies.chunks(8).all(|r| r == b"STORED\r\n"),
            "{}",
            String::from_utf8_lossy(&replies[..64.min(replies.len())])
        );
    }
}

/// What `stats queue` should say: every queue by name, `(enqueued,
/// dequeued)`. Queue `i` got two messages when `i % 7 == 0`, and had one
/// popped when `i % 5 == 0`.
fn expected() -> Vec<(String, u64, u64)> {
    (0..QUEUES)
        .map(|i| {
            let enq = if i % 7 == 0 { 2 } else { 1 };
            let deq = u64::from(i % 5 == 0);
            (name(i), enq, deq)
        })
        .collect()
}

fn check_stats(c: &mut Client, shown: usize) {
    assert_eq!(c.queue_stats(), expected(), "stats queue");
    let stats = c.stats();
    assert_eq!(stats["curr_queues"], QUEUES.to_string());
    let listed: Vec<&String> = stats
        .keys()
        .filter(|k| k.starts_with("queue_") && k.ends_with("_total_items"))
        .collect();
    assert_eq!(listed.len(), shown, "per-queue lines for the first {shown}");
    for (i, want) in expected().iter().take(shown).enumerate() {
        let q = name(i);
        assert_eq!(stats[&format!("queue_{q}_total_items")], want.1.to_string());
        let items = want.1 - want.2;
        assert_eq!(stats[&format!("queue_{q}_items")], items.to_string());
        assert_eq!(stats[&format!("queue_{q}_bytes")], items.to_string());
        for field in ["expired_items", "discarded", "age", "waiters"] {
            assert!(stats.contains_key(&format!("queue_{q}_{field}")));
        }
    }
    assert!(!stats.contains_key(&format!("queue_{}_items", name(shown))));
    assert_eq!(
        stats.get("queues_omitted").map(String::as_str),
        Some((QUEUES - shown).to_string().as_str())
    );
}

#[test]
fn stats_of_many_queues_are_complete_and_survive_a_restart() {
    let args = ["-t", "2", "--sync", "none", "--stats-queues", "300"];
    let mut server = Server::start("many-queues", &args);
    let mut c = server.client();
    // In an order other than by name, so that nothing depends on it.
    set_each(&mut c, (0..QUEUES).rev().map(name));
    set_each(&mut c, (0..QUEUES).step_by(7).map(name));
    for i in (0..QUEUES).step_by(5) {
        assert_eq!(c.get(&name(i)), Some(b"x".to_vec()));
    }
    check_stats(&mut c, 300);

    // A restart (and a crash) keeps every queue and its counters.
    drop(c);
    assert!(server.stop().success());
    server.restart_with(&args);
    check_stats(&mut server.client(), 300);
    server.kill9();
    server.restart_with(&["-t", "2", "--sync", "none"]);
    // The default lists the first 1000.
    check_stats(&mut server.client(), 1000);
    server.stop();
    server.restart_with(&["-t", "2", "--sync", "none", "--stats-queues", "0"]);
    check_stats(&mut server.client(), 0);
}

/// A few queues: every one is listed, and no `queues_omitted` line.
#[test]
fn stats_lists_every_queue_below_the_cap() {
    let server = Server::start("few-queues", &["-t", "2", "--stats-queues", "3"]);
    let mut c = server.client();
    for q in ["c", "a", "b"] {
        c.set(q, b"xy");
    }
    let stats = c.stats();
    for q in ["a", "b", "c"] {
        assert_eq!(stats[&format!("queue_{q}_items")], "1");
    }
    assert!(!stats.contains_key("queues_omitted"), "{stats:?}");
    c.set("d", b"z");
    let stats = c.stats();
    assert!(!stats.contains_key("queue_d_items"), "d sorts last");
    assert_eq!(stats["queues_omitted"], "1");
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// 100,000 queues of one small message each grow the server by well under
/// a kilobyte a queue (the message, its locator and index entry, the
/// queue, its name and the log's catalog entry included): 680 to 900 bytes
/// measured (the log's open segment and its checkpoint make it swing),
/// ~0.2 KB of it the store's (see the README and `server/tests/
/// queue_memory.rs`, which counts that part exactly).
#[test]
fn a_queue_costs_well_under_a_kilobyte() {
    let server = Server::start("queue-memory", &["-t", "1", "--sync", "none"]);
    let mut c = server.client();
    // Warm up: the first queues and sets allocate what every later one
    // shares (buffers, the first segment's index).
    set_each(&mut c, (0..10_000).map(|i| format!("warm{i}")));
    let before = rss_kib(server.pid());
    let n = 100_000;
    set_each(&mut c, (0..n).map(name));
    let after = rss_kib(server.pid());
    let per_queue = after.saturating_sub(before) * 1024 / n as u64;
    println!("RSS {before} KiB -> {after} KiB: {per_queue} bytes per queue");
    assert!(per_queue < 1000, "{per_queue} bytes per queue");
}

/// Among enough queues, a connection parses a batch of pipelined requests
/// before it submits them (to fetch their queues' lookups into the cache
/// together): the replies still come in the requests' order, refused ones
/// included, and each request sees what the ones before it did.
#[test]
fn a_pipelined_batch_among_many_queues_is_answered_in_order() {
    let server = Server::start(
        "many-queues-batch",
        &["-t", "1", "--sync", "none", "-B", "1024"],
    );
    let mut c = server.client();
    set_each(&mut c, (0..70_000).map(name));
    let mut req = Vec::new();
    let mut want = Vec::new();
    let mut step = |r: &[u8], w: &[u8]| {
        req.extend_from_slice(r);
        want.extend_from_slice(w);
    };
    step(b"set mq000001 0 0 1\r\ny\r\n", b"STORED\r\n");
    step(b"get mq000001\r\n", b"VALUE mq000001 0 1\r\nx\r\nEND\r\n");
    step(b"bogus\r\n", b"ERROR\r\n");
    step(b"get mq000001\r\n", b"VALUE mq000001 0 1\r\ny\r\nEND\r\n");
    let mut big = b"set mq000002 0 0 1025\r\n".to_vec();
    big.extend_from_slice(&[b'z'; 1025]);
    big.extend_from_slice(b"\r\n");
    step(&big, b"SERVER_ERROR object too large for cache\r\n");
    step(b"get mq000002\r\n", b"VALUE mq000002 0 1\r\nx\r\nEND\r\n");
    step(b"get mq000002\r\n", b"END\r\n");
    step(b"set fresh 0 0 2\r\nab\r\n", b"STORED\r\n");
    step(b"get nosuchqueue\r\n", b"END\r\n");
    step(b"get fresh\r\n", b"VALUE fresh 0 2\r\nab\r\nEND\r\n");
    step(b"delete mq000003\r\n", b"DELETED\r\n");
    step(b"get mq000003\r\n", b"END\r\n");
    c.expect(&req, &want);
}
