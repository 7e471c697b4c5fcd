//! The protocol contract (`docs/protocol.md`) checked against the real
//! binary over TCP: exact reply bytes, pipelining, every error case followed
//! by a request that still works, and concurrency across executors.

use std::collections::HashMap;
use std::process::{Child, Command};
use std::thread;

use mcq_tests::{exit_within, mcqd_bin, output_within, Client, Server, PATIENCE};

/// A child that is killed when the test ends, passed or not.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn memcacheq_session_byte_for_byte() {
    let server = Server::start("session", &["-t", "2"]);
    let mut c = server.client();
    c.expect(b"set q4 0 0 5\r\nhello\r\n", b"STORED\r\n");
    c.expect(b"set q4 0 0 5\r\nworld\r\n", b"STORED\r\n");
    c.expect(b"stats queue\r\n", b"STAT q4 2/0\r\nEND\r\n");
    c.expect(b"get q4\r\n", b"VALUE q4 0 5\r\nhello\r\nEND\r\n");
    c.expect(b"stats queue\r\n", b"STAT q4 2/1\r\nEND\r\n");
    c.expect(b"get q4\r\n", b"VALUE q4 0 5\r\nworld\r\nEND\r\n");
    c.expect(b"get q4\r\n", b"END\r\n");
    c.expect(b"delete q4\r\n", b"DELETED\r\n");
    c.expect(b"delete q4\r\n", b"NOT_FOUND\r\n");
    c.expect(b"stats queue\r\n", b"END\r\n");
}

#[test]
fn flags_binary_bodies_gets_and_multi_get() {
    let server = Server::start("flags", &["-t", "2"]);
    let mut c = server.client();
    c.expect(b"set a 4294967295 0 7\r\n\r\nEND\r\n\r\n", b"STORED\r\n");
    c.expect(b"set b 7 99 3\r\n\0\x01\xff\r\n", b"STORED\r\n");
    c.expect(b"set a 1 0 0\r\n\r\n", b"STORED\r\n");
    c.expect(
        b"get a b missing a a\r\n",
        b"VALUE a 4294967295 7\r\n\r\nEND\r\n\r\nVALUE b 7 3\r\n\0\x01\xff\r\nVALUE a 1 0\r\n\r\nEND\r\n",
    );
    c.expect(
        b"set c 3 0 2\r\nhi\r\nset c 3 0 2\r\nho\r\n",
        b"STORED\r\nSTORED\r\n",
    );
    c.expect(b"gets c\r\n", b"VALUE c 3 2 0\r\nhi\r\nEND\r\n");
    c.expect(b"gets c\r\n", b"VALUE c 3 2 1\r\nho\r\nEND\r\n");
    // `get` never creates a queue.
    c.expect(
        b"stats queue\r\n",
        b"STAT a 2/2\r\nSTAT b 1/1\r\nSTAT c 2/2\r\nEND\r\n",
    );
}

#[test]
fn noreply_version_verbosity_quit() {
    let server = Server::start("misc", &["-t", "1"]);
    let mut c = server.client();
    c.send(b"set q 0 0 1 noreply\r\nx\r\nverbosity 1 noreply\r\ndelete nothing noreply\r\n");
    c.expect(b"get q\r\n", b"VALUE q 0 1\r\nx\r\nEND\r\n");
    c.expect(b"verbosity 1\r\n", b"OK\r\n");
    c.send(b"version\r\n");
    let version = String::from_utf8(c.read_until(b"\r\n")).unwrap();
    assert!(
        version.starts_with("VERSION ") && version.len() > 10,
        "{version:?}"
    );
    c.expect(b"stats reset\r\n", b"RESET\r\n");
    c.send(b"quit\r\n");
    assert!(c.is_closed());
}

#[test]
fn stats_reports_the_documented_fields() {
    let server = Server::start("stats", &["-t", "2"]);
    let mut c = server.client();
    c.set("s1", b"12345");
    c.set("s2", b"123");
    c.set("s2", b"1");
    assert_eq!(c.get("s2").unwrap(), b"123");
    assert_eq!(c.get("nothing"), None);
    let stats = c.stats();
    for field in [
        "pid",
        "uptime",
        "time",
        "version",
        "pointer_size",
        "rusage_user",
        "rusage_system",
        "curr_connections",
        "total_connections",
        "threads",
        "cmd_get",
        "get_hits",
        "get_misses",
        "cmd_set",
        "bytes_read",
        "bytes_written",
        "curr_queues",
        "curr_items",
        "bytes",
        "log_writes",
        "log_fsyncs",
        "log_bytes_written",
        "log_segments",
        "log_disk_bytes",
        "log_corrupt_records",
        "cache_bytes",
        "readahead_hits",
        "readahead_misses",
        "readahead_reads",
        "readahead_prefetches",
        "readahead_bytes_read",
        "readahead_evictions",
        "readahead_bytes",
        "get_waiters",
    ] {
        assert!(stats.contains_key(field), "stats lacks {field}: {stats:?}");
    }
    assert_eq!(stats["pid"], server.pid().to_string());
    assert_eq!(stats["threads"], "2");
    assert_eq!(stats["cmd_set"], "3");
    assert_eq!(stats["cmd_get"], "2");
    assert_eq!(stats["get_hits"], "1");
    assert_eq!(stats["get_misses"], "1");
    assert_eq!(stats["curr_queues"], "2");
    assert_eq!(stats["curr_items"], "2");
    assert_eq!(stats["bytes"], "6");
    assert_eq!(stats["curr_connections"], "1");
    assert_eq!(
        stats["readahead_reads"], "0",
        "the hot cache served the get"
    );
    assert_eq!(stats["readahead_bytes"], "0");
    c.expect(b"stats reset\r\n", b"RESET\r\n");
    let stats = c.stats();
    assert_eq!(stats["cmd_set"], "0");
    assert_eq!(stats["curr_items"], "2", "reset leaves the queues alone");
    c.expect(b"stats items\r\n", b"ERROR\r\n");
}

/// With no hot cache every get reads its message back from the log,
/// through the read-ahead: each counts as a hit or a miss, and the chunk
/// reads, their bytes and what is held show in `stats`.
#[test]
fn stats_show_the_read_ahead_at_work() {
    let server = Server::start("readahead-stats", &["-t", "1", "-m", "0"]);
    let mut c = server.client();
    let n = 200;
    for i in 0..n {
        c.set(
            "cold",
            format!("message {i:04} of the cold queue").as_bytes(),
        );
    }
    for i in 0..n {
        let want = format!("message {i:04} of the cold queue");
        assert_eq!(c.get("cold").unwrap(), want.as_bytes());
    }
    let stats = c.stats();
    let v = |name: &str| -> u64 { stats[name].parse().unwrap() };
    assert_eq!(v("readahead_hits") + v("readahead_misses"), n, "{stats:?}");
    assert!(v("readahead_hits") > v("readahead_misses"), "{stats:?}");
    assert!(v("readahead_reads") >= 1, "{stats:?}");
    assert!(
        v("readahead_prefetches") <= v("readahead_reads"),
        "{stats:?}"
    );
    assert!(v("readahead_bytes_read") >= n * 30, "{stats:?}");
    assert!(v("readahead_bytes") > 0, "{stats:?}");
    assert!(v("readahead_bytes") <= 32 << 20, "{stats:?}");
}

#[test]
fn fifo_across_many_queues_and_both_executors() {
    let server = Server::start("fifo", &["-t", "2"]);
    let queues: Vec<String> = (0..40).map(|i| format!("fifo-{i}")).collect();
    // Many connections land on both executors; every queue is written from
    // one of them and read from another.
    let mut writers: Vec<Client> = (0..4).map(|_| server.client()).collect();
    for n in 0..50 {
        for (i, q) in queues.iter().enumerate() {
            writers[(i + n) % 4].set(q, format!("{q}:{n}").as_bytes());
        }
    }
    let mut readers: Vec<Client> = (0..4).map(|_| server.client()).collect();
    for n in 0..50 {
        for (i, q) in queues.iter().enumerate() {
            let body = readers[(i + n + 1) % 4].get(q).expect("message");
            assert_eq!(String::from_utf8(body).unwrap(), format!("{q}:{n}"));
        }
    }
    for q in &queues {
        assert_eq!(readers[0].get(q), None);
    }
}

#[test]
fn pipelined_sets_then_gets_in_one_write_each() {
    let server = Server::start("pipeline", &["-t", "2"]);
    let mut c = server.client();
    let mut sets = Vec::new();
    let mut expected = Vec::new();
    for i in 0..2000 {
        let q = format!("p{}", i % 7);
        let body = format!("message-{i}");
        sets.extend_from_slice(format!("set {q} {i} 0 {}\r\n{body}\r\n", body.len()).as_bytes());
        expected.push((q, i, body));
    }
    c.send(&sets);
    assert_eq!(c.read_n(2000 * 8), b"STORED\r\n".repeat(2000));

    // Gets in the order the sets went in: each queue hands its messages back
    // in FIFO order, interleaved exactly as they were written.
    let mut gets = Vec::new();
    let mut replies = Vec::new();
    for (q, flags, body) in &expected {
        gets.extend_from_slice(format!("get {q}\r\n").as_bytes());
        replies.extend_from_slice(
            format!("VALUE {q} {flags} {}\r\n{body}\r\nEND\r\n", body.len()).as_bytes(),
        );
    }
    c.send(&gets);
    let got = c.read_n(replies.len());
    assert!(got == replies, "pipelined gets answered out of order");
}

#[test]
fn one_request_over_many_packets() {
    let server = Server::start("split", &["-t", "2"]);
    let mut c = server.client();
    let request = b"set split 5 0 10\r\n0123\r\n6789\r\nget split\r\n";
    for byte in request.iter() {
        c.send(&[*byte]);
        thread::sleep(std::time::Duration::from_millis(1));
    }
    assert_eq!(c.read_n(8), b"STORED\r\n");
    assert_eq!(c.read_n(35), b"VALUE split 5 10\r\n0123\r\n6789\r\nEND\r\n");
}

#[test]
fn every_error_keeps_the_connection_usable() {
    let server = Server::start("errors", &["-t", "2", "-B", "1024"]);
    let mut c = server.client();
    let cases: &[(&[u8], &[u8])] = &[
        (b"\r\n", b"ERROR\r\n"),
        (b"bogus\r\n", b"ERROR\r\n"),
        (b"GET q\r\n", b"ERROR\r\n"),
        // memcached's other storage commands: the data block goes too,
        // and one `ERROR` answers the request.
        (b"add q 0 0 1\r\nx\r\n", b"ERROR\r\n"),
        (b"replace q 0 0 1\r\nx\r\n", b"ERROR\r\n"),
        (b"append q 0 0 3 noreply\r\nabc\r\n", b"ERROR\r\n"),
        (b"prepend q 0 0 1\r\nx\r\n", b"ERROR\r\n"),
        (b"cas q 0 0 5 77\r\nhello\r\n", b"ERROR\r\n"),
        (b"add q 0 0 0\r\n\r\n", b"ERROR\r\n"),
        (b"incr q 1\r\n", b"ERROR\r\n"),
        (b"decr q 1\r\n", b"ERROR\r\n"),
        (b"touch q 0\r\n", b"ERROR\r\n"),
        (b"get\r\n", b"ERROR\r\n"),
        (b"stats bogus\r\n", b"ERROR\r\n"),
        // A refused `set` whose length is readable: its block goes too,
        // one reply.
        (
            b"set q x 0 1\r\nx\r\n",
            b"CLIENT_ERROR bad command line format\r\n",
        ),
        (
            b"set q 4294967296 0 1\r\nx\r\n",
            b"CLIENT_ERROR bad command line format\r\n",
        ),
        (
            b"set q 0 -1 1\r\nx\r\n",
            b"CLIENT_ERROR bad command line format\r\n",
        ),
        (
            b"set q 0 4294967296 2\r\nxy\r\n",
            b"CLIENT_ERROR bad command line format\r\n",
        ),
        (
            b"set q 0 0 1 norepl\r\nx\r\n",
            b"CLIENT_ERROR bad command line format\r\n",
        ),
        (
            b"set q 0 0 1 2 noreply\r\nx\r\n",
            b"CLIENT_ERROR bad command line format\r\n",
        ),
        (
            b"set q/t=1 0 0 1\r\nx\r\n",
            b"CLIENT_ERROR bad queue name\r\n",
        ),
        (
            b"set a\x00b 0 0 3\r\nabc\r\n",
            b"CLIENT_ERROR bad queue name\r\n",
        ),
        (
            b"set a\rb 0 0 3\r\nabc\r\n",
            b"CLIENT_ERROR bad queue name\r\n",
        ),
        (
            b"get a/bogus\r\n",
            b"CLIENT_ERROR bad get option (mcqd knows /t=<ms> /open /close /abort /peek, each once; /peek and /abort go without /open and /close)\r\n",
        ),
        (b"get /t=5\r\n", b"CLIENT_ERROR bad queue name\r\n"),
        (
            b"get ok bad\x00name\r\n",
            b"CLIENT_ERROR bad queue name\r\n",
        ),
        (b"delete bad/name\r\n", b"CLIENT_ERROR bad queue name\r\n"),
        (
            b"set q 0 0 3\r\nabcde\r\n",
            b"CLIENT_ERROR bad data chunk\r\nERROR\r\n",
        ),
        (
            b"set q 0 0 3\r\nabc\n\n",
            b"CLIENT_ERROR bad data chunk\r\n",
        ),
    ];
    for (request, reply) in cases {
        c.expect(request, reply);
        c.expect(b"set ok 0 0 2\r\nok\r\n", b"STORED\r\n");
        c.expect(b"get ok\r\n", b"VALUE ok 0 2\r\nok\r\nEND\r\n");
    }
    let long_name = format!("set {} 0 0 1\r\nx\r\n", "n".repeat(251));
    c.expect(long_name.as_bytes(), b"CLIENT_ERROR bad queue name\r\n");
    let max_name = "n".repeat(250);
    c.set(&max_name, b"fits");
    assert_eq!(c.get(&max_name).unwrap(), b"fits");

    // Over -B: the block is read and thrown away, the connection goes on.
    let mut big = b"set big 0 0 1025\r\n".to_vec();
    big.extend_from_slice(&[b'x'; 1025]);
    big.extend_from_slice(b"\r\n");
    c.expect(&big, b"SERVER_ERROR object too large for cache\r\n");
    c.set("big", &[b'y'; 1024]);
    assert_eq!(c.get("big").unwrap(), vec![b'y'; 1024]);
    // Nothing from any refused request was stored.
    c.expect(b"get q\r\n", b"END\r\n");
    c.expect(
        b"stats queue\r\n",
        format!(
            "STAT big 1/1\r\nSTAT {max_name} 1/1\r\nSTAT ok {n}/{n}\r\nEND\r\n",
            n = cases.len()
        )
        .as_bytes(),
    );
}

#[test]
fn a_set_without_a_readable_length_closes_the_connection() {
    let server = Server::start("nolength", &["-t", "1"]);
    for line in [
        &b"set q 0 0\r\nxyz\r\n"[..],
        b"set q 0 0 -1\r\nx\r\n",
        b"set q 0 0 99999999999999999999\r\nx\r\n",
        b"add q 0 0 x\r\nflush_all\r\n",
        b"set\r\n",
    ] {
        let mut c = server.client();
        c.set("keep", b"k");
        // Whatever follows may be the client's data: it is not run.
        c.expect(line, b"CLIENT_ERROR bad command line format\r\n");
        assert!(c.is_closed(), "{:?}", String::from_utf8_lossy(line));
    }
    let mut c = server.client();
    c.expect(b"stats queue\r\n", b"STAT keep 5/0\r\nEND\r\n");
}

/// A raw `set` of `body` into the queue named by `name`'s bytes.
fn set_raw(c: &mut mcq_tests::Client, name: &[u8], body: &[u8]) {
    let request = [
        &b"set "[..],
        name,
        format!(" 0 0 {}\r\n", body.len()).as_bytes(),
        body,
        b"\r\n",
    ]
    .concat();
    c.expect(&request, b"STORED\r\n");
}

#[test]
fn binary_queue_names_round_trip_and_survive_a_restart() {
    let mut server = Server::start("binary-names", &["-t", "2"]);
    // memaslap's keys start with bytes like these; any byte but space, CR,
    // LF and NUL is a name byte (and `/` starts a get's options).
    let names: [&[u8]; 4] = [
        b"\x10\x11\x12\x13\x14\x15\x16\x17memaslap",
        b"\xff\xfe\x80\x81",
        b"\x01\t\x1b[0m\x7f",
        b"caf\xc3\xa9\"quoted\"\\",
    ];
    let mut c = server.client();
    for name in names {
        set_raw(&mut c, name, b"one");
        set_raw(&mut c, name, b"two");
    }
    for name in names {
        let get = [&b"get "[..], name, b"\r\n"].concat();
        let value = [&b"VALUE "[..], name, b" 0 3\r\none\r\nEND\r\n"].concat();
        c.expect(&get, &value);
    }
    let mut sorted = names.to_vec();
    sorted.sort();
    let listing = |sorted: &[&[u8]]| -> Vec<u8> {
        let mut listing: Vec<u8> = sorted
            .iter()
            .flat_map(|name| [&b"STAT "[..], name, b" 2/1\r\n"].concat())
            .collect();
        listing.extend_from_slice(b"END\r\n");
        listing
    };
    c.expect(b"stats queue\r\n", &listing(&sorted));
    c.send(b"stats\r\n");
    let stats = c.read_until(b"END\r\n");
    for name in names {
        let line = [&b"STAT queue_"[..], name, b"_items 1\r\n"].concat();
        assert!(
            stats.windows(line.len()).any(|w| w == line),
            "{:?} in {:?}",
            String::from_utf8_lossy(&line),
            String::from_utf8_lossy(&stats)
        );
    }
    drop(c);
    assert!(server.stop().success());
    server.restart_with(&["-t", "1"]);
    let mut c = server.client();
    c.expect(b"stats queue\r\n", &listing(&sorted));
    for name in names {
        let get = [&b"get "[..], name, b"\r\n"].concat();
        let value = [&b"VALUE "[..], name, b" 0 3\r\ntwo\r\nEND\r\n"].concat();
        c.expect(&get, &value);
    }
}

#[test]
fn an_endless_line_is_refused_and_closed() {
    let server = Server::start("longline", &["-t", "1"]);
    let mut c = server.client();
    c.send(b"set keep 0 0 1\r\nk\r\n");
    assert_eq!(c.read_n(8), b"STORED\r\n");
    c.send(&vec![b'g'; 9000]);
    assert_eq!(c.read_n(28), b"CLIENT_ERROR line too long\r\n");
    assert!(c.is_closed());
    let mut again = server.client();
    assert_eq!(again.get("keep").unwrap(), b"k");
}

#[test]
fn a_client_that_vanishes_mid_message_leaves_nothing() {
    let server = Server::start("vanish", &["-t", "2"]);
    {
        let mut c = server.client();
        c.send(b"set half 0 0 100\r\nonly part of it");
        c.send(b"set");
    }
    {
        let mut c = server.client();
        c.send(b"set half 0 0 5\r\nhello");
    }
    let mut c = server.client();
    c.expect(b"get half\r\n", b"END\r\n");
    c.expect(b"stats queue\r\n", b"END\r\n");
    let stats = c.stats();
    assert_eq!(stats["curr_items"], "0");
}

#[test]
fn concurrent_producers_lose_and_duplicate_nothing() {
    let server = Server::start("producers", &["-t", "2"]);
    let producers = 8;
    let per_producer = 500;
    let port = server.port;
    let handles: Vec<_> = (0..producers)
        .map(|p| {
            thread::spawn(move || {
                let mut c = Client::connect(port);
                // Half of them pipeline everything in one write.
                if p % 2 == 0 {
                    let mut batch = Vec::new();
                    for n in 0..per_producer {
                        let body = format!("{p}:{n}");
                        batch.extend_from_slice(
                            format!("set shared 0 0 {}\r\n{body}\r\n", body.len()).as_bytes(),
                        );
                    }
                    c.send(&batch);
                    assert_eq!(
                        c.read_n(8 * per_producer),
                        b"STORED\r\n".repeat(per_producer)
                    );
                } else {
                    for n in 0..per_producer {
                        c.set("shared", format!("{p}:{n}").as_bytes());
                    }
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    let mut c = server.client();
    let mut next: HashMap<usize, usize> = HashMap::new();
    while let Some(body) = c.get("shared") {
        let text = String::from_utf8(body).unwrap();
        let (p, n) = text.split_once(':').unwrap();
        let (p, n): (usize, usize) = (p.parse().unwrap(), n.parse().unwrap());
        let expected = next.entry(p).or_insert(0);
        assert_eq!(n, *expected, "producer {p}: out of order or duplicated");
        *expected += 1;
    }
    assert_eq!(next.len(), producers);
    assert!(
        next.values().all(|&n| n == per_producer),
        "lost messages: {next:?}"
    );
    assert_eq!(
        c.queue_stats(),
        vec![(
            "shared".to_string(),
            (producers * per_producer) as u64,
            (producers * per_producer) as u64
        )]
    );
}

#[test]
fn connection_limit_answers_and_closes() {
    let server = Server::start("limit", &["-t", "2", "-c", "3"]);
    let mut held: Vec<Client> = (0..3).map(|_| server.client()).collect();
    for c in &mut held {
        c.expect(b"version\r\n".as_slice(), b"VERSION ");
        c.read_until(b"\r\n");
    }
    let mut extra = server.client();
    assert_eq!(
        extra.read_until(b"\r\n"),
        b"SERVER_ERROR too many connections\r\n"
    );
    assert!(extra.is_closed());
    held.pop();
    // The freed slot is counted back once the server sees the close.
    let deadline = std::time::Instant::now() + PATIENCE;
    loop {
        let mut c = server.client();
        c.send(b"version\r\n");
        let line = c.read_until(b"\r\n");
        if line.starts_with(b"VERSION ") {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "slot never freed");
        thread::sleep(std::time::Duration::from_millis(20));
    }
}

#[test]
fn sigterm_finishes_what_was_read_and_exits_zero() {
    let mut server = Server::start("sigterm", &["-t", "2"]);
    let mut c = server.client();
    c.set("t", b"before");
    let status = server.stop();
    assert!(status.success(), "exit status {status}");
    assert!(server.log().contains("stopped cleanly"), "{}", server.log());
    assert!(c.is_closed());
}

#[test]
fn memcacheq_flags_are_accepted_with_a_warning() {
    let server = Server::start(
        "mcqflags",
        &[
            "-t", "1", "-A", "4096", "-L", "1024", "-C", "60", "-R", "-N", "-v",
        ],
    );
    let log = server.log();
    for flag in ["-A ", "-L ", "-C ", "-R "] {
        assert!(
            log.contains(&format!("WARN  {flag}")),
            "no warning for {flag}:\n{log}"
        );
    }
    assert!(
        log.contains("sync none (written every 1ms, fdatasync every 100ms)"),
        "-N means --sync none:\n{log}"
    );
    let mut c = server.client();
    c.set("works", b"yes");
}

#[test]
fn help_and_version() {
    let out = output_within(Command::new(mcqd_bin()).arg("--help"));
    let help = String::from_utf8(out.stdout).unwrap();
    assert!(out.status.success());
    for flag in [
        "--port",
        "--listen",
        "--max-connections",
        "--threads",
        "--data-dir",
        "--max-message-size",
        "--cache-size",
        "--sync",
        "--no-sync",
        "--segment-size",
        "--max-disk",
    ] {
        assert!(help.contains(flag), "--help lacks {flag}");
    }
    // Every flag of MemcacheQ's init lines, with what mcqd does with it
    // (issue 10: the drop-in).
    for (flag, says) in [
        ("-p, --port", ""),
        ("-l, --listen", ""),
        ("-c, --max-connections", ""),
        ("-t, --threads", ""),
        ("-H, --data-dir", ""),
        ("-B, --max-message-size", ""),
        ("-m, --cache-size", ""),
        ("-N, --no-sync", ""),
        ("-v", ""),
        ("-d, --daemon", "Run as a daemon"),
        ("-P, --pid-file", "pid"),
        ("-u, --user", "become this user"),
        ("-r, --core-limit", "core file size"),
        ("-U <PORT>", "never serves UDP"),
        ("-A <N>", "Ignored (BerkeleyDB"),
        ("-L <N>", "Ignored (BerkeleyDB"),
        ("-C <N>", "Ignored (BerkeleyDB"),
        ("-T <N>", "Ignored (BerkeleyDB"),
        ("-e <N>", "Ignored (BerkeleyDB"),
        ("-S <N>", "Ignored (BerkeleyDB"),
        ("-E <N>", "Ignored (BerkeleyDB"),
        ("-D <N>", "Ignored (BerkeleyDB"),
        ("-R ", "Ignored (BerkeleyDB"),
    ] {
        let line = help
            .lines()
            .find(|l| l.trim_start().starts_with(flag))
            .unwrap_or_else(|| panic!("--help lacks {flag}:\n{help}"));
        // Its explanation is on the same line (short help) or the next.
        let rest = &help[help.find(line).unwrap()..];
        let text: String = rest.lines().take(3).collect::<Vec<_>>().join(" ");
        assert!(
            text.contains(says),
            "--help on {flag} lacks {says:?}: {text}"
        );
    }
    let out = output_within(Command::new(mcqd_bin()).arg("--version"));
    assert!(String::from_utf8(out.stdout).unwrap().starts_with("mcqd "));
}

#[test]
fn two_servers_cannot_share_a_data_directory() {
    let server = Server::start("lock", &["-t", "1"]);
    let out = output_within(
        Command::new(mcqd_bin())
            .args(["-p", &mcq_tests::free_port().to_string(), "-H"])
            .arg(&server.data_dir),
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("in use by another mcqd"));
}

#[test]
fn a_relative_data_directory_works() {
    // The default `-H ./mcq-data` is relative: the README's first command
    // depends on it.
    let dir = mcq_tests::test_dir("relative");
    let port = mcq_tests::free_port();
    let mut child = Killed(
        Command::new(mcqd_bin())
            .current_dir(&dir)
            .args(["-p", &port.to_string(), "-t", "2"])
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let child = &mut child.0;
    let deadline = std::time::Instant::now() + PATIENCE;
    let mut c = loop {
        if let Ok(stream) = std::net::TcpStream::connect(("127.0.0.1", port)) {
            drop(stream);
            break Client::connect(port);
        }
        assert!(child.try_wait().unwrap().is_none(), "mcqd exited");
        assert!(std::time::Instant::now() < deadline, "mcqd did not start");
        thread::sleep(std::time::Duration::from_millis(20));
    };
    c.set("rel", b"ative");
    assert_eq!(c.get("rel").unwrap(), b"ative");
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = exit_within(child, PATIENCE).expect("mcqd did not stop on SIGTERM");
    assert!(status.success(), "{status}");
    assert!(dir.join("mcq-data").join("MANIFEST").exists());
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Large `VALUE`s go out without being copied into the reply buffer (they
/// are written from the message itself, spliced between the reply's other
/// bytes): the byte stream must be exactly what one buffer would have
/// held, for several large and small values in one `get`, pipelined
/// between other requests, from the hot cache and from disk after a
/// restart.
#[test]
fn large_values_are_spliced_into_the_reply_stream_in_order() {
    let mut server = Server::start("splice", &["-t", "2", "-B", "1M"]);
    let body = |name: &str, len: usize| -> Vec<u8> {
        let mut b = name.as_bytes().to_vec();
        while b.len() < len {
            b.push(b'a' + (b.len() % 23) as u8);
        }
        b
    };
    let queues = [
        ("big1", 300_000),
        ("small", 10),
        ("big2", 65_536),
        ("big3", 1_000_000),
    ];
    let expected = || -> Vec<u8> {
        let mut out = b"STORED\r\n".to_vec();
        for (name, len) in queues {
            out.extend_from_slice(format!("VALUE {name} 3 {len}\r\n").as_bytes());
            out.extend_from_slice(&body(name, len));
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"END\r\nVALUE small 3 10\r\n");
        out.extend_from_slice(&body("small", 10));
        out.extend_from_slice(b"\r\nEND\r\n");
        out
    };
    for restart in [false, true] {
        let mut c = server.client();
        for round in 0..2 {
            for (name, len) in queues {
                let mut req = format!("set {name} 3 0 {len}\r\n").into_bytes();
                req.extend_from_slice(&body(name, len));
                req.extend_from_slice(b"\r\n");
                c.send(&req);
                assert_eq!(c.read_n(8), b"STORED\r\n", "{name} round {round}");
            }
        }
        if restart {
            drop(c);
            assert!(server.stop().success());
            server.restart_with(&["-t", "2", "-B", "1M"]);
            c = server.client();
        }
        // One write: a set, a get of all four, a get of the small one.
        c.send(b"set other 0 0 1\r\nx\r\nget big1 small big2 big3\r\nget small\r\n");
        let want = expected();
        let got = c.read_n(want.len());
        assert!(got == want, "reply stream differs (restart {restart})");
        c.expect(b"get other\r\n", b"VALUE other 0 1\r\nx\r\nEND\r\n");
    }
    assert!(server.stop().success());
}

/// A large set (256 KiB or more) is checksummed in pieces before it is
/// stored, while the connection's other requests wait their turn: pipelined
/// with small sets in one write, every message keeps its place in the
/// queue and its bytes, in memory, read back from disk after a restart, and
/// in `mcqd verify`'s check of every record's checksum. (A large data block
/// is read into a buffer of its own, not the connection's input buffer.)
#[test]
fn pipelined_large_sets_keep_their_order_and_checksums() {
    let args = ["-t", "1", "-B", "2M", "-m", "1"];
    let mut server = Server::start("large-sets", &args);
    let body = |i: usize, len: usize| -> Vec<u8> {
        (0..len).map(|j| (i * 7 + j * 13 % 251) as u8).collect()
    };
    let sizes = [10, 300_000, 5, 2_000_000, 262_144, 70];
    let mut req = Vec::new();
    let mut want = Vec::new();
    for queue in ["now", "later"] {
        for (i, &len) in sizes.iter().enumerate() {
            // The 2 MB one without a reply: it still keeps its place.
            let noreply = if len == 2_000_000 { " noreply" } else { "" };
            req.extend_from_slice(format!("set {queue} {i} 0 {len}{noreply}\r\n").as_bytes());
            req.extend_from_slice(&body(i, len));
            req.extend_from_slice(b"\r\n");
            if noreply.is_empty() {
                want.extend_from_slice(b"STORED\r\n");
            }
        }
    }
    let values = |queue: &str| -> Vec<u8> {
        let mut out = Vec::new();
        for (i, &len) in sizes.iter().enumerate() {
            out.extend_from_slice(format!("VALUE {queue} {i} {len}\r\n").as_bytes());
            out.extend_from_slice(&body(i, len));
            out.extend_from_slice(b"\r\nEND\r\n");
        }
        out
    };
    let gets = |queue: &str| format!("get {queue}\r\n").repeat(sizes.len()).into_bytes();
    req.extend_from_slice(&gets("now"));
    want.extend_from_slice(&values("now"));
    // A large block without its \r\n is refused, and the stream goes on
    // right after it.
    req.extend_from_slice(b"set bad 0 0 300000\r\n");
    req.extend_from_slice(&body(9, 300_000));
    req.extend_from_slice(b"XYget bad\r\n");
    want.extend_from_slice(b"CLIENT_ERROR bad data chunk\r\nEND\r\n");

    let mut c = server.client();
    c.send(&req);
    let got = c.read_n(want.len());
    assert!(got == want, "replies differ from the requests' order");
    drop(c);
    assert!(server.stop().success());

    let dir = server.data_dir.to_str().unwrap().to_string();
    let verified = output_within(Command::new(mcqd_bin()).args(["verify", "-H", &dir]));
    assert_eq!(
        verified.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&verified.stdout)
    );

    server.restart_with(&args);
    let mut c = server.client();
    c.send(&gets("later"));
    let want = values("later");
    assert!(c.read_n(want.len()) == want, "read back from disk");
    assert!(server.stop().success());
}
