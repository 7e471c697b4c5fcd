//! The offline subcommands against directories a real server made:
//! `mcqd inspect` and `mcqd verify` on a directory left by a kill -9 under
//! load (the numbers must be what the server acknowledged; a flipped byte
//! must be named by file and offset), and `mcqd backup` of a live server
//! under load, restored by starting a fresh mcqd on the copy (it must hand
//! out, per queue, an unbroken stretch of acknowledged messages).

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use mcq_tests::{mcqd_bin, output_within, soak_or, text, GetReply, Server, PATIENCE};
use serde_json::Value;

const ARGS: [&str; 4] = ["-t", "2", "--segment-size", "1048576"];

/// Message `i` of queue `q`: its name and number, then filler to a length
/// that varies with `i`.
fn body(q: &str, i: usize) -> Vec<u8> {
    let len = 40 + (i * 7919) % 1200;
    let mut b = format!("{q}:{i}:").into_bytes();
    while b.len() < len {
        b.push(b'a' + ((i + b.len()) % 26) as u8);
    }
    b
}

/// The message number in a body made by [`body`].
fn number(body: &[u8]) -> usize {
    std::str::from_utf8(body)
        .unwrap()
        .split(':')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap()
}

/// Pipelines batches of sets of [`body`]s to `q` until `stop` is set or the
/// connection dies; `sent` is how many were sent, `acked` how many
/// answered `STORED` (in order: one producer per queue, so message `i` is
/// the queue's `i`th).
fn produce(port: u16, q: &str, stop: &AtomicBool, sent: &AtomicUsize, acked: &AtomicUsize) {
    let stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream.set_read_timeout(Some(PATIENCE)).unwrap();
    let mut writer = stream.try_clone().unwrap();
    let mut replies = BufReader::new(stream);
    let mut next = 0;
    while !stop.load(Ordering::SeqCst) {
        let batch = 1 + next % 16;
        let mut request = Vec::new();
        for i in next..next + batch {
            let b = body(q, i);
            request.extend_from_slice(format!("set {q} 0 0 {}\r\n", b.len()).as_bytes());
            request.extend_from_slice(&b);
            request.extend_from_slice(b"\r\n");
        }
        sent.store(next + batch, Ordering::SeqCst);
        if writer.write_all(&request).is_err() {
            return;
        }
        for i in next..next + batch {
            let mut line = String::new();
            match replies.read_line(&mut line) {
                Ok(n) if n > 0 => {}
                _ => return,
            }
            assert_eq!(line, "STORED\r\n", "{q} message {i}");
            acked.store(i + 1, Ordering::SeqCst);
        }
        next += batch;
    }
}

/// Pops `q` eight `get`s at a time until `stop` is set; every message must
/// be the next one. `popped` counts the messages received.
fn consume(server: &Server, q: &str, stop: &AtomicBool, popped: &AtomicUsize) {
    let mut c = server.client();
    while !stop.load(Ordering::SeqCst) {
        for reply in c.get_many(q, 8) {
            match reply {
                GetReply::Value(b) => {
                    let n = popped.load(Ordering::SeqCst);
                    assert_eq!(number(&b), n, "{q}: popped out of order");
                    assert_eq!(b, body(q, n));
                    popped.store(n + 1, Ordering::SeqCst);
                }
                GetReply::Miss => thread::sleep(Duration::from_millis(1)),
                GetReply::Error(e) => panic!("get {q}: {e}"),
            }
        }
    }
}

fn waits_for(what: &str, done: impl Fn() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !done() {
        assert!(Instant::now() < deadline, "{what} within {PATIENCE:?}");
        thread::sleep(Duration::from_millis(5));
    }
}

fn mcqd(args: &[&str]) -> Output {
    output_within(Command::new(mcqd_bin()).args(args))
}

fn json(out: &Output) -> Value {
    assert!(out.status.success(), "{}", text(out));
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(out)))
}

fn queue<'a>(inspect: &'a Value, name: &str) -> &'a Value {
    inspect["queues"]
        .as_array()
        .unwrap()
        .iter()
        .find(|q| q["name"] == name)
        .unwrap_or_else(|| panic!("no queue {name} in {inspect}"))
}

fn num(v: &Value) -> usize {
    v.as_u64().unwrap_or_else(|| panic!("not a number: {v}")) as usize
}

/// Guards against `inspect` showing other counters than recovery makes of
/// a crashed directory, `verify` taking a crash's torn tail for damage or
/// missing a damaged record, and `inspect --queue` listing or dumping
/// messages out of order.
#[test]
fn inspect_and_verify_a_directory_killed_under_load() {
    let mut server = Server::start("offline-inspect", &ARGS);
    let port = server.port;
    let dir = server.data_dir.clone();
    let dir_s = dir.to_str().unwrap().to_string();

    // Phase 1: producers and consumers, then quiet: every operation the
    // server counted was acknowledged.
    let settled = ["a0", "a1"];
    let stop = AtomicBool::new(false);
    let counts: Vec<[AtomicUsize; 3]> = settled.iter().map(|_| Default::default()).collect();
    thread::scope(|s| {
        for (q, [sent, acked, popped]) in settled.iter().zip(&counts) {
            let (stop, server) = (&stop, &server);
            s.spawn(move || produce(port, q, stop, sent, acked));
            s.spawn(move || consume(server, q, stop, popped));
        }
        waits_for("phase 1 load", || {
            counts.iter().all(|[_, a, p]| {
                a.load(Ordering::SeqCst) >= 1500 && p.load(Ordering::SeqCst) >= 300
            })
        });
        stop.store(true, Ordering::SeqCst);
    });
    let before = server.client().queue_stats();

    // Phase 2: producers on other queues, killed mid-load.
    let loaded = ["p0", "p1", "p2"];
    let stop = AtomicBool::new(false);
    let counts2: Vec<[AtomicUsize; 2]> = loaded.iter().map(|_| Default::default()).collect();
    thread::scope(|s| {
        for (q, [sent, acked]) in loaded.iter().zip(&counts2) {
            let stop = &stop;
            s.spawn(move || produce(port, q, stop, sent, acked));
        }
        waits_for("phase 2 load", || {
            counts2
                .iter()
                .all(|[_, a]| a.load(Ordering::SeqCst) >= 2000)
        });
        server.kill9();
        stop.store(true, Ordering::SeqCst);
    });

    let inspect = json(&mcqd(&["inspect", "-H", &dir_s, "--json"]));
    for (name, enq, deq) in before.iter().filter(|q| settled.contains(&q.0.as_str())) {
        let q = queue(&inspect, name);
        assert_eq!(num(&q["enqueued"]), *enq as usize, "{name}: {q}");
        assert_eq!(num(&q["dequeued"]), *deq as usize, "{name}: {q}");
        assert_eq!(num(&q["queued"]), (enq - deq) as usize, "{name}: {q}");
        assert_eq!(num(&q["head_seq"]), *deq as usize, "{name}: {q}");
    }
    for (name, [sent, acked]) in loaded.iter().zip(&counts2) {
        let q = queue(&inspect, name);
        let enq = num(&q["enqueued"]);
        let (sent, acked) = (sent.load(Ordering::SeqCst), acked.load(Ordering::SeqCst));
        assert!(
            acked <= enq && enq <= sent,
            "{name}: acked {acked}, sent {sent}: {q}"
        );
        assert_eq!(num(&q["dequeued"]), 0, "{name}");
        assert_eq!(num(&q["queued"]), enq, "{name}");
        let bytes: usize = (0..enq).map(|i| body(name, i).len()).sum();
        assert_eq!(num(&q["bytes"]), bytes, "{name}");
    }
    let segments: usize = inspect["shards"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["segments"].as_array().unwrap().len())
        .sum();
    assert!(segments > 2, "1 MiB segments rolled: {inspect}");

    let human = mcqd(&["inspect", "-H", &dir_s]);
    assert!(human.status.success(), "{}", text(&human));
    assert!(text(&human).contains("shard 1 ("), "{}", text(&human));
    assert!(text(&human).contains("p2 "), "{}", text(&human));

    let verified = mcqd(&["verify", "-H", &dir_s]);
    assert_eq!(verified.status.code(), Some(0), "{}", text(&verified));
    assert!(text(&verified).contains("no damage"), "{}", text(&verified));
    let v = json(&mcqd(&["verify", "-H", &dir_s, "--json"]));
    assert_eq!(v["ok"], true, "{v}");
    assert!(num(&v["records"]) > 6000, "{v}");

    // One queue's messages, in order, and their bodies.
    let dump = dir.with_file_name("dump");
    let listed = json(&mcqd(&[
        "inspect",
        "-H",
        &dir_s,
        "--queue",
        "p0",
        "--json",
        "--dump",
        dump.to_str().unwrap(),
    ]));
    let messages = listed["messages"].as_array().unwrap();
    let enq = num(&queue(&inspect, "p0")["enqueued"]);
    assert_eq!(messages.len(), enq);
    for (i, m) in messages.iter().enumerate() {
        assert_eq!(num(&m["seq"]), i, "{m}");
        assert_eq!(num(&m["bytes"]), body("p0", i).len(), "{m}");
        assert_eq!(m["error"], Value::Null, "{m}");
        assert_eq!(
            std::fs::read(dump.join(i.to_string())).unwrap(),
            body("p0", i)
        );
    }
    let table = text(&mcqd(&["inspect", "-H", &dir_s, "--queue", "p0"]));
    let seqs: Vec<usize> = table
        .lines()
        .skip(2)
        .map(|l| l.split_whitespace().next().unwrap().parse().unwrap())
        .collect();
    assert_eq!(seqs, (0..enq).collect::<Vec<_>>());

    // A flipped byte in a message in the middle of a sealed segment.
    let shard = num(&queue(&inspect, "p0")["shard"]);
    let segs = inspect["shards"][shard]["segments"].as_array().unwrap();
    let newest = segs.iter().find(|s| s["newest"] == true).unwrap()["file"].clone();
    let victim = messages
        .iter()
        .filter(|m| m["segment"] != newest)
        .nth(enq / 4)
        .expect("p0 has messages in sealed segments");
    let file = dir
        .join(format!("shard-{shard:03}"))
        .join(victim["segment"].as_str().unwrap());
    let offset = num(&victim["offset"]) as u64;
    flip(&file, offset + 48 + 3);
    let damaged = mcqd(&["verify", "-H", &dir_s]);
    let out = text(&damaged);
    assert_eq!(damaged.status.code(), Some(1), "{out}");
    let line = out
        .lines()
        .find(|l| l.starts_with("DAMAGE"))
        .unwrap_or_else(|| panic!("{out}"));
    assert!(
        line.contains(file.to_str().unwrap()) && line.contains(&format!("offset {offset} ")),
        "names {} offset {offset}: {out}",
        file.display()
    );
    let v = json_any(&mcqd(&["verify", "-H", &dir_s, "--json"]));
    assert_eq!(v["ok"], false);
    assert_eq!(num(&v["damage"][0]["offset"]) as u64, offset, "{v}");
    let listed = json(&mcqd(&["inspect", "-H", &dir_s, "--queue", "p0", "--json"]));
    let flagged: Vec<&Value> = listed["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["error"] != Value::Null)
        .collect();
    assert_eq!(flagged.len(), 1, "{listed}");
    assert_eq!(flagged[0]["seq"], victim["seq"]);
}

/// `--json` output of a command that may exit non-zero.
fn json_any(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(out)))
}

fn flip(file: &Path, at: u64) {
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(file)
        .unwrap();
    let mut b = [0u8];
    f.read_exact_at(&mut b, at).unwrap();
    b[0] ^= 0x20;
    f.write_all_at(&b, at).unwrap();
    f.sync_all().unwrap();
}

/// Guards against a backup of a live server that recovers to something
/// other than a prefix of each queue's acknowledged history: a segment
/// copied while open and then sealed, a segment compaction deleted while
/// the copy ran, a copy that stops short of what was acknowledged before
/// it began.
#[test]
fn backup_under_load_restores_a_prefix() {
    let mut server = Server::start("offline-backup", &ARGS);
    let port = server.port;
    let names = ["b0", "b1", "b2", "b3"];
    let backups = soak_or(2, 8);
    let stop = AtomicBool::new(false);
    let counts: Vec<[AtomicUsize; 3]> = names.iter().map(|_| Default::default()).collect();
    // Per backup: its directory and (acknowledged, popped) per queue when
    // it started.
    let mut taken = Vec::new();
    let snapshot = || -> Vec<(usize, usize)> {
        counts
            .iter()
            .map(|[_, a, p]| (a.load(Ordering::SeqCst), p.load(Ordering::SeqCst)))
            .collect()
    };
    thread::scope(|s| {
        for (q, [sent, acked, popped]) in names.iter().zip(&counts) {
            let (stop, server) = (&stop, &server);
            s.spawn(move || produce(port, q, stop, sent, acked));
            s.spawn(move || consume(server, q, stop, popped));
        }
        for b in 0..backups {
            waits_for("load before the backup", || {
                counts.iter().all(|[_, a, p]| {
                    a.load(Ordering::SeqCst) >= 2000 * (b + 1)
                        && p.load(Ordering::SeqCst) >= 400 * (b + 1)
                })
            });
            let at_start = snapshot();
            let dest = server.data_dir.with_file_name(format!("backup-{b}"));
            let out = mcqd(&[
                "backup",
                "-H",
                server.data_dir.to_str().unwrap(),
                dest.to_str().unwrap(),
            ]);
            eprintln!("{}", text(&out));
            assert!(out.status.success(), "{}", text(&out));
            taken.push((dest, at_start));
        }
        thread::sleep(Duration::from_millis(200));
        stop.store(true, Ordering::SeqCst);
    });
    // Every reply was read: whatever a copy holds was acknowledged.
    server.kill9();
    let ended = snapshot();

    for (dest, at_start) in &taken {
        let verified = mcqd(&["verify", "-H", dest.to_str().unwrap()]);
        assert_eq!(verified.status.code(), Some(0), "{}", text(&verified));
        let inspect = json(&mcqd(&["inspect", "-H", dest.to_str().unwrap(), "--json"]));
        let segments: usize = inspect["shards"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["segments"].as_array().unwrap().len())
            .sum();
        assert!(segments > 2, "the copy holds several segments: {inspect}");

        let restored = Server::start_in(dest, &["-t", "2"]);
        assert!(!restored.log().contains("corrupt"), "{}", restored.log());
        let stats = restored.client().queue_stats();
        let mut c = restored.client();
        for (i, name) in names.iter().enumerate() {
            let (_, enq, deq) = stats
                .iter()
                .find(|q| q.0 == *name)
                .unwrap_or_else(|| panic!("{name} in {stats:?}"))
                .clone();
            let (enq, deq) = (enq as usize, deq as usize);
            let ((acked0, popped0), (acked1, popped1)) = (at_start[i], ended[i]);
            assert!(
                acked0 <= enq && enq <= acked1,
                "{}: {name}: {enq} enqueued, acknowledged {acked0} before the backup and {acked1} in all",
                dest.display()
            );
            assert!(
                popped0 <= deq && deq <= popped1,
                "{}: {name}: {deq} dequeued, popped {popped0} before the backup and {popped1} in all",
                dest.display()
            );
            let got: Vec<usize> = c.drain(name).iter().map(|b| number(b)).collect();
            assert_eq!(
                got,
                (deq..enq).collect::<Vec<_>>(),
                "{name}: a prefix, in order"
            );
        }
    }
}
