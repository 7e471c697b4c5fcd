//! Durability of the real binary: what survives SIGTERM and kill -9, what a
//! damaged log costs, index rebuilds, a full disk, and memory use with a
//! deep backlog. Each test guards against a specific storage bug named in
//! its doc comment.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use mcq_tests::{Client, Server};

fn body(q: usize, i: usize, len: usize) -> Vec<u8> {
    let mut b = format!("q{q}:{i}:").into_bytes();
    while b.len() < len {
        b.push(b'a' + (b.len() % 26) as u8);
    }
    b
}

/// Parses a body made by `body` back into (queue, index).
fn parse(b: &[u8]) -> (usize, usize) {
    let s = std::str::from_utf8(b).unwrap();
    let mut it = s.split(':');
    let q = it.next().unwrap().trim_start_matches('q').parse().unwrap();
    let i = it.next().unwrap().parse().unwrap();
    (q, i)
}

/// Sets `count` messages to queue `q` starting at index `from`, pipelined
/// in batches (so group commit has something to batch).
fn fill(c: &mut Client, q: usize, from: usize, count: usize, len: usize) {
    let mut i = from;
    while i < from + count {
        let n = (from + count - i).min(200);
        let mut req = Vec::new();
        for k in i..i + n {
            let b = body(q, k, len);
            req.extend_from_slice(format!("set q{q} 0 0 {}\r\n", b.len()).as_bytes());
            req.extend_from_slice(&b);
            req.extend_from_slice(b"\r\n");
        }
        c.send(&req);
        assert_eq!(c.read_n(8 * n), b"STORED\r\n".repeat(n));
        i += n;
    }
}

/// Pops `count` messages of queue `q`, checking each is the next in order.
fn drain(c: &mut Client, q: usize, from: usize, count: usize, len: usize) {
    for i in from..from + count {
        let got = c
            .get(&format!("q{q}"))
            .unwrap_or_else(|| panic!("q{q} message {i} missing"));
        assert_eq!(got, body(q, i, len), "q{q} message {i}");
    }
}

fn stats_queue(c: &mut Client) -> BTreeMap<String, (u64, u64)> {
    c.queue_stats()
        .into_iter()
        .map(|(n, e, d)| (n, (e, d)))
        .collect()
}

const QUEUES: usize = 8;
const PER_QUEUE: usize = 4000;
const LEN: usize = 100;

/// Guards against: acknowledged sets lost or acknowledged pops coming back
/// after a crash; counters (`stats queue`) drifting across restarts; queues
/// lost when `-t` (and so which executor owns which shard) changes.
#[test]
fn queues_survive_sigterm_and_kill9_with_threads_changed() {
    let mut server = Server::start(
        "durability-restarts",
        &["-t", "2", "--segment-size", "262144"],
    );
    let mut c = server.client();
    for q in 0..QUEUES {
        fill(&mut c, q, 0, PER_QUEUE, LEN);
    }
    for q in 0..QUEUES {
        drain(&mut c, q, 0, 1000, LEN);
    }
    drop(c);
    server.kill9();

    server.restart_with(&["-t", "1", "--segment-size", "262144"]);
    let mut c = server.client();
    let st = stats_queue(&mut c);
    assert_eq!(st.len(), QUEUES);
    for q in 0..QUEUES {
        assert_eq!(
            st[&format!("q{q}")],
            (PER_QUEUE as u64, 1000),
            "q{q} after kill -9"
        );
        drain(&mut c, q, 1000, 1000, LEN);
    }
    drop(c);
    assert!(server.stop().success());

    server.restart_with(&["-t", "2", "--segment-size", "262144"]);
    let mut c = server.client();
    let st = stats_queue(&mut c);
    for q in 0..QUEUES {
        assert_eq!(
            st[&format!("q{q}")],
            (PER_QUEUE as u64, 2000),
            "q{q} after SIGTERM"
        );
        drain(&mut c, q, 2000, 1000, LEN);
    }
    drop(c);
    server.kill9();

    server.restart_with(&[
        "-t",
        "1",
        "--segment-size",
        "262144",
        "--sync",
        "interval=50",
    ]);
    let mut c = server.client();
    for q in 0..QUEUES {
        drain(&mut c, q, 3000, 1000, LEN);
        assert_eq!(c.get(&format!("q{q}")), None);
    }
    let st = stats_queue(&mut c);
    for q in 0..QUEUES {
        assert_eq!(st[&format!("q{q}")], (PER_QUEUE as u64, PER_QUEUE as u64));
    }
}

fn files(dir: &Path, ext: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == ext))
        .collect();
    v.sort();
    v
}

/// The shard directory holding the most segments (where our queue went).
fn busiest_shard(data: &Path) -> PathBuf {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(data)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .collect();
    dirs.sort_by_key(|d| std::cmp::Reverse(files(d, "log").len()));
    dirs[0].clone()
}

/// Guards against: a torn tail or a flipped byte making recovery abort, go
/// unreported, hand out a damaged message, or lose intact messages.
#[test]
fn torn_tail_and_flipped_byte_are_reported_and_the_rest_served() {
    let args = ["-t", "1", "--segment-size", "65536"];
    let mut server = Server::start("durability-damage", &args);
    let mut c = server.client();
    let n = 3000;
    fill(&mut c, 0, 0, n, 200);
    drop(c);
    server.kill9();

    let shard = busiest_shard(&server.data_dir);
    let logs = files(&shard, "log");
    assert!(logs.len() >= 5, "{} segments", logs.len());
    // Flip a byte in the middle of a sealed segment (it keeps its index, so
    // the damage is found when the message is read).
    let sealed = &logs[logs.len() / 2];
    let mut bytes = std::fs::read(sealed).unwrap();
    let data_len = bytes.iter().rposition(|&b| b != 0).unwrap();
    bytes[data_len / 2] ^= 0x40;
    std::fs::write(sealed, &bytes).unwrap();
    // Cut the open segment in the middle of a message's body, somewhere in
    // its second or third quarter. Inside a record: a cut at a record's
    // end or in a block's zero padding leaves a clean-looking end, which no
    // recovery could tell from a shorter log (the test failed when the
    // process id put the cut there).
    let open = logs.last().unwrap();
    let bytes = std::fs::read(open).unwrap();
    let data_len = bytes.iter().rposition(|&b| b != 0).unwrap();
    let from = data_len / 2 + (std::process::id() as usize % (data_len / 4));
    let body_at = from
        + bytes[from..]
            .windows(3)
            .position(|w| w == b"q0:")
            .expect("a message body after the middle of the open segment");
    let cut = (body_at + 100) as u64;
    std::fs::OpenOptions::new()
        .write(true)
        .open(open)
        .unwrap()
        .set_len(cut)
        .unwrap();

    server.restart_with(&args);
    assert!(
        server.log().contains("torn tail"),
        "torn tail not reported:\n{}",
        server.log()
    );
    let mut c = server.client();
    let mut got = Vec::new();
    let mut errors = 0;
    loop {
        c.send(b"get q0\r\n");
        let head = c.read_until(b"\r\n");
        if head == b"END\r\n" {
            break;
        }
        if head.starts_with(b"SERVER_ERROR") {
            errors += 1;
            continue;
        }
        let head = String::from_utf8(head).unwrap();
        let len: usize = head.trim_end().rsplit(' ').next().unwrap().parse().unwrap();
        let mut b = c.read_n(len + 2);
        b.truncate(len);
        assert_eq!(c.read_n(5), b"END\r\n");
        let (q, i) = parse(&b);
        assert_eq!(
            (q, b.clone()),
            (0, body(0, i, 200)),
            "a damaged message was served"
        );
        got.push(i);
    }
    // The damage is found by the background scrub (the message is dropped
    // before anyone asks for it) or by the read (that one get fails).
    assert!(errors <= 1, "{errors} errors");
    assert!(server.log().contains("corrupt record"), "{}", server.log());
    // Intact messages come in order, none twice; only the flipped one is
    // missing before the cut.
    assert!(got.windows(2).all(|w| w[0] < w[1]));
    let last = *got.last().unwrap();
    assert_eq!(got.len(), last, "exactly one message missing below {last}");
    assert!(last < n, "the torn tail lost something");
    assert!(last > n / 2);
}

/// Guards against: a lost index file making the shard fail to start or
/// forget the segment's messages.
#[test]
fn deleted_index_is_rebuilt() {
    let args = ["-t", "1", "--segment-size", "65536"];
    let mut server = Server::start("durability-index", &args);
    let mut c = server.client();
    fill(&mut c, 0, 0, 1000, 300);
    drop(c);
    assert!(server.stop().success());
    let shard = busiest_shard(&server.data_dir);
    let idx = files(&shard, "idx");
    assert!(idx.len() >= 3);
    std::fs::remove_file(&idx[1]).unwrap();
    server.restart_with(&args);
    assert!(server.log().contains("rebuilding"), "{}", server.log());
    assert!(idx[1].exists(), "index not rebuilt");
    let mut c = server.client();
    drain(&mut c, 0, 0, 1000, 300);
}

/// Guards against: a full disk corrupting the log or wedging the shard;
/// consumers must keep working and free the space for new sets.
#[test]
fn full_disk_gives_server_error_and_recovers() {
    let args = ["-t", "1", "--segment-size", "65536", "--max-disk", "393216"];
    let mut server = Server::start("durability-full", &args);
    let mut c = server.client();
    let b = body(0, 0, 1000);
    let stored = c.fill_until_out_of_space("q0", |_| b.clone());
    assert!(stored > 100);
    for _ in 0..stored {
        assert_eq!(c.get("q0").unwrap(), b);
    }
    assert_eq!(c.get("q0"), None);
    // Space is freed in the background; sets work again soon after.
    c.set_once_space_is_back("q0", &b);
    drop(c);
    assert!(server.stop().success());
    server.restart_with(&args);
    let mut c = server.client();
    assert_eq!(c.get("q0").unwrap(), b);
}

fn rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .unwrap()
        .trim()
        .trim_end_matches(" kB")
        .trim()
        .parse()
        .unwrap();
    kb * 1024
}

/// Guards against: memory growing with the backlog (bodies must live on
/// disk), segment files opened without O_DIRECT, sealed segments without
/// their index.
#[test]
fn deep_backlog_bounded_rss_o_direct_and_indexes() {
    let args = ["-t", "2", "-m", "64"];
    let server = Server::start("durability-backlog", &args);
    let mut c = server.client();
    // 1 GiB in 4 KiB messages over 4 queues.
    let len = 4096;
    let total = (1usize << 30) / len;
    for q in 0..4 {
        fill(&mut c, q, 0, total / 4, len);
    }
    let rss = rss_bytes(server.pid());
    eprintln!("RSS with 1 GiB queued: {} MiB", rss >> 20);
    assert!(rss < 256 << 20, "RSS {} MiB with 1 GiB queued", rss >> 20);

    // Every segment file descriptor is O_DIRECT.
    let pid = server.pid();
    let mut segment_fds = 0;
    for fd in std::fs::read_dir(format!("/proc/{pid}/fd")).unwrap() {
        let fd = fd.unwrap();
        let Ok(target) = std::fs::read_link(fd.path()) else {
            continue;
        };
        if target.extension().is_some_and(|e| e == "log") {
            let info = std::fs::read_to_string(format!(
                "/proc/{pid}/fdinfo/{}",
                fd.file_name().to_str().unwrap()
            ))
            .unwrap();
            let flags = info
                .lines()
                .find_map(|l| l.strip_prefix("flags:"))
                .unwrap()
                .trim();
            let flags = u32::from_str_radix(flags, 8).unwrap();
            assert_ne!(
                flags & libc::O_DIRECT as u32,
                0,
                "{} opened without O_DIRECT",
                target.display()
            );
            segment_fds += 1;
        }
    }
    assert!(segment_fds > 2);

    // Every sealed segment has its index (the newest per shard is open).
    // Indexes are written in the background just after a segment is sealed.
    let deadline = std::time::Instant::now() + mcq_tests::PATIENCE;
    loop {
        let mut missing = Vec::new();
        for shard in std::fs::read_dir(&server.data_dir).unwrap() {
            let shard = shard.unwrap().path();
            if !shard.is_dir() {
                continue;
            }
            let logs = files(&shard, "log");
            for log in &logs[..logs.len().saturating_sub(1)] {
                if !log.with_extension("idx").exists() {
                    missing.push(log.clone());
                }
            }
        }
        if missing.is_empty() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no index for {missing:?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    // And the backlog is still served in order.
    drain(&mut c, 0, 0, 100, len);
}
