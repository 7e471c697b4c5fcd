//! `mcqd inspect`: what a data directory holds, shard by shard and queue by
//! queue, as the next start would recover it (MemcacheQ's `db_stat -d`).

use std::ffi::OsString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use clap::Parser;

use super::json::Json;
use super::view::{self, IndexState, RecoveredQueue, SegView, ShardView};
use super::{escape, now_secs, rfc3339, EXIT_ERROR};

/// Shows a data directory's segments and queues without a server: per
/// shard its segment files (size, lsns, records, live messages, index),
/// per queue its counters (enqueued/dequeued as `stats queue` shows them,
/// queued messages and bytes, the age of the head). Read-only: safe beside
/// a running mcqd, whose newest segment may then show a tail being written.
#[derive(Parser, Debug)]
#[command(name = "mcqd inspect")]
struct Args {
    /// The data directory.
    #[arg(short = 'H', long = "data-dir", default_value = "./mcq-data")]
    data_dir: PathBuf,
    /// List this queue's messages (seq, bytes, flags, enqueue time, expiry).
    #[arg(long, value_name = "QUEUE")]
    queue: Option<OsString>,
    /// With --queue: write each message's body to <DIR>/<seq>.
    #[arg(long, value_name = "DIR", requires = "queue")]
    dump: Option<PathBuf>,
    /// Machine-readable output (one JSON object).
    #[arg(long)]
    json: bool,
}

pub fn main(args: Vec<OsString>) -> i32 {
    let args = match Args::try_parse_from(args) {
        Ok(a) => a,
        Err(e) => e.exit(),
    };
    match run(&args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("mcqd inspect: {e}");
            EXIT_ERROR
        }
    }
}

fn run(args: &Args) -> io::Result<i32> {
    let dir = view::open_dir(&args.data_dir)?;
    let mut shards = Vec::new();
    for s in 0..dir.shards {
        shards.push(view::load_shard(&args.data_dir, s)?);
    }
    let now = now_secs();
    let wanted = args.queue.as_ref().map(|q| q.as_bytes());
    let found = wanted.and_then(|name| {
        shards.iter().find_map(|sh| {
            let q = sh.queues.iter().find(|q| &q.name[..] == name)?;
            Some((sh, q))
        })
    });
    if let (Some(name), None) = (wanted, found) {
        eprintln!("mcqd inspect: no queue {}", escape(name));
        return Ok(1);
    }
    let mut messages = Vec::new();
    if let Some((sh, q)) = found {
        messages = list_messages(sh, q, args.dump.as_deref())?;
    }
    if args.json {
        let mut fields = vec![
            (
                "data_dir",
                Json::bytes(args.data_dir.as_os_str().as_bytes()),
            ),
            ("format", Json::Num(dir.format.into())),
            ("now", Json::Num(now)),
            ("shards", Json::Arr(shards.iter().map(shard_json).collect())),
            (
                "queues",
                Json::Arr(
                    shards
                        .iter()
                        .flat_map(|sh| sh.queues.iter().map(move |q| queue_json(sh, q, now)))
                        .collect(),
                ),
            ),
        ];
        if let Some((_, q)) = found {
            fields.push(("queue", Json::bytes(&q.name)));
            fields.push((
                "messages",
                Json::Arr(messages.iter().map(Msg::json).collect()),
            ));
        }
        println!("{}", Json::Obj(fields).render());
        return Ok(0);
    }
    if let Some((sh, q)) = found {
        println!(
            "queue {} (shard {}): {} queued",
            escape(&q.name),
            sh.shard,
            q.locs.len()
        );
        println!(
            "{:>12} {:>9} {:>10}  {:<20}  {:<20}  {:<24} offset",
            "seq", "bytes", "flags", "enqueued", "expires", "segment"
        );
        for m in &messages {
            m.print();
        }
        if let Some(d) = &args.dump {
            let n = messages.iter().filter(|m| m.error.is_none()).count();
            println!("{n} bodies written to {}", d.display());
        }
        return Ok(0);
    }
    println!(
        "data directory {}: format {}, {} shards",
        args.data_dir.display(),
        dir.format,
        dir.shards
    );
    for sh in &shards {
        print_shard(sh);
    }
    println!();
    println!(
        "{:<24} {:>5} {:>12} {:>12} {:>10} {:>14} {:>10} {:>8}",
        "queue", "shard", "enqueued", "dequeued", "queued", "bytes", "head age", "expired"
    );
    for sh in &shards {
        for q in &sh.queues {
            let c = Counters::of(q, now);
            println!(
                "{:<24} {:>5} {:>12} {:>12} {:>10} {:>14} {:>10} {:>8}",
                escape(&q.name),
                sh.shard,
                c.enqueued,
                c.dequeued,
                c.queued,
                c.bytes,
                c.head_age.map_or("-".into(), |a| format!("{a}s")),
                c.expired
            );
        }
    }
    Ok(0)
}

/// A queue's counters as `stats` would show them after recovery.
struct Counters {
    enqueued: u64,
    dequeued: u64,
    queued: u64,
    bytes: u64,
    /// Seconds since the head message was enqueued.
    head_age: Option<u64>,
    head_enqueued: Option<u64>,
    /// Queued messages past their expiry: dropped at the next `get`.
    expired: u64,
}

impl Counters {
    fn of(q: &RecoveredQueue, now: u64) -> Counters {
        let head_enqueued = q.runs.first().map(|&(_, t)| u64::from(t));
        Counters {
            enqueued: q.tail,
            dequeued: q.head + q.confirmed.count(),
            queued: q.locs.len() as u64,
            bytes: q.locs.iter().map(|l| l.body_len()).sum(),
            head_age: head_enqueued.map(|t| now.saturating_sub(t)),
            head_enqueued,
            expired: q
                .locs
                .iter()
                .filter(|l| l.expired(now.min(u64::from(u32::MAX)) as u32))
                .count() as u64,
        }
    }
}

fn queue_json(sh: &ShardView, q: &RecoveredQueue, now: u64) -> Json {
    let c = Counters::of(q, now);
    Json::Obj(vec![
        ("name", Json::bytes(&q.name)),
        ("shard", Json::Num(sh.shard.into())),
        ("id", Json::Num(q.id.into())),
        ("enqueued", Json::Num(c.enqueued)),
        ("dequeued", Json::Num(c.dequeued)),
        ("queued", Json::Num(c.queued)),
        ("bytes", Json::Num(c.bytes)),
        ("head_seq", Json::opt(q.locs.first().map(|l| l.seq))),
        ("head_enqueued", Json::opt(c.head_enqueued)),
        ("head_age_s", Json::opt(c.head_age)),
        ("expired", Json::Num(c.expired)),
        (
            "confirmed_ranges",
            Json::Arr(
                q.confirmed
                    .ranges()
                    .map(|(s, e)| Json::Arr(vec![Json::Num(s), Json::Num(e)]))
                    .collect(),
            ),
        ),
    ])
}

fn index_word(s: &SegView) -> String {
    match &s.index {
        IndexState::Valid(_) if s.newest => "valid (ignored: newest)".into(),
        IndexState::Valid(_) => match s.summary_bytes {
            Some(n) => format!("valid (a restart reads {n} bytes)"),
            None => "valid".into(),
        },
        IndexState::Missing if s.newest => "none (open)".into(),
        IndexState::Missing => "missing".into(),
        IndexState::Invalid(why) => format!("invalid: {why}"),
    }
}

fn shard_json(sh: &ShardView) -> Json {
    let segs = sh
        .segs
        .iter()
        .map(|s| {
            Json::Obj(vec![
                ("file", Json::str(s.name())),
                ("size", Json::Num(s.size)),
                ("first_lsn", Json::Num(s.first_lsn)),
                (
                    "last_lsn",
                    Json::opt((s.scan.records > 0).then_some(s.scan.last_lsn)),
                ),
                ("records", Json::Num(s.scan.records)),
                ("data_len", Json::Num(s.scan.data_len)),
                ("live", Json::Num(s.live)),
                ("live_bytes", Json::Num(s.live_bytes)),
                ("newest", Json::Bool(s.newest)),
                ("index_summary_bytes", Json::opt(s.summary_bytes)),
                (
                    "index",
                    Json::str(match &s.index {
                        IndexState::Valid(_) => "valid",
                        IndexState::Missing => "missing",
                        IndexState::Invalid(_) => "invalid",
                    }),
                ),
                (
                    "torn",
                    match s.scan.torn {
                        Some((off, n)) => {
                            Json::Obj(vec![("offset", Json::Num(off)), ("bytes", Json::Num(n))])
                        }
                        None => Json::Null,
                    },
                ),
                ("corrupt_stretches", Json::Num(s.scan.corrupt.len() as u64)),
            ])
        })
        .collect();
    Json::Obj(vec![
        ("shard", Json::Num(sh.shard.into())),
        ("dir", Json::bytes(sh.dir.as_os_str().as_bytes())),
        ("segments", Json::Arr(segs)),
        (
            "leftovers",
            Json::Arr(sh.leftovers.iter().map(|l| Json::str(l.clone())).collect()),
        ),
    ])
}

fn print_shard(sh: &ShardView) {
    let bytes: u64 = sh.segs.iter().map(|s| s.size).sum();
    println!();
    println!(
        "shard {} ({}): {} segments, {bytes} bytes, {} queues",
        sh.shard,
        sh.dir.display(),
        sh.segs.len(),
        sh.queues.len()
    );
    println!(
        "  {:<24} {:>10} {:>12} {:>12} {:>9} {:>9}  index",
        "segment", "bytes", "first lsn", "last lsn", "records", "live"
    );
    for s in &sh.segs {
        let last = if s.scan.records > 0 {
            s.scan.last_lsn.to_string()
        } else {
            "-".into()
        };
        println!(
            "  {:<24} {:>10} {:>12} {:>12} {:>9} {:>9}  {}",
            s.name(),
            s.size,
            s.first_lsn,
            last,
            s.scan.records,
            s.live,
            index_word(s)
        );
        if let Some((off, n)) = s.scan.torn {
            if s.newest {
                println!("    torn tail at offset {off} ({n} bytes): being written, or cut by the next start");
            } else {
                println!("    invalid data at offset {off} ({n} bytes): damage (run mcqd verify)");
            }
        }
        if !s.scan.corrupt.is_empty() {
            println!(
                "    {} damaged stretches (run mcqd verify)",
                s.scan.corrupt.len()
            );
        }
        if s.ord.is_none() {
            println!("    no record yet: the next start removes it");
        }
    }
    if !sh.leftovers.is_empty() {
        println!(
            "  other files (spares, leftovers): {}",
            sh.leftovers.join(" ")
        );
    }
}

/// One queued message, from its record.
struct Msg {
    seq: u64,
    bytes: u64,
    flags: Option<u32>,
    /// Microseconds since the epoch.
    enqueued_us: Option<u64>,
    expires: u32,
    segment: String,
    offset: u32,
    error: Option<String>,
}

impl Msg {
    fn json(&self) -> Json {
        Json::Obj(vec![
            ("seq", Json::Num(self.seq)),
            ("bytes", Json::Num(self.bytes)),
            ("flags", Json::opt(self.flags.map(u64::from))),
            ("enqueued_us", Json::opt(self.enqueued_us)),
            (
                "expires",
                Json::opt((self.expires != 0).then_some(u64::from(self.expires))),
            ),
            ("segment", Json::str(self.segment.clone())),
            ("offset", Json::Num(self.offset.into())),
            (
                "error",
                self.error
                    .as_ref()
                    .map_or(Json::Null, |e| Json::str(e.clone())),
            ),
        ])
    }

    fn print(&self) {
        let time = |s: Option<u64>| s.map_or("-".to_string(), rfc3339);
        let expires = if self.expires == 0 {
            "never".into()
        } else {
            rfc3339(self.expires.into())
        };
        println!(
            "{:>12} {:>9} {:>10}  {:<20}  {:<20}  {:<24} {}{}",
            self.seq,
            self.bytes,
            self.flags.map_or("-".into(), |f| f.to_string()),
            time(self.enqueued_us.map(|us| us / 1_000_000)),
            expires,
            self.segment,
            self.offset,
            self.error
                .as_ref()
                .map_or(String::new(), |e| format!("  DAMAGED: {e}"))
        );
    }
}

/// Reads every queued message of `q` (verifying each record) and, with
/// `dump`, writes the bodies there.
fn list_messages(sh: &ShardView, q: &RecoveredQueue, dump: Option<&Path>) -> io::Result<Vec<Msg>> {
    if let Some(d) = dump {
        std::fs::create_dir_all(d)
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", d.display())))?;
    }
    let mut out = Vec::with_capacity(q.locs.len());
    for loc in &q.locs {
        let segment = sh.seg_of(loc).map_or_else(String::new, SegView::name);
        let mut m = Msg {
            seq: loc.seq,
            bytes: loc.body_len(),
            flags: None,
            enqueued_us: None,
            expires: loc.expires,
            segment,
            offset: loc.pos.off,
            error: None,
        };
        match sh.read(q.id, loc) {
            Ok(r) => {
                m.flags = Some(r.header.flags);
                m.enqueued_us = Some(r.header.time);
                if let Some(d) = dump {
                    let path = d.join(loc.seq.to_string());
                    std::fs::write(&path, &r.body).map_err(|e| {
                        io::Error::new(e.kind(), format!("{}: {e}", path.display()))
                    })?;
                }
            }
            Err(e) => m.error = Some(e),
        }
        out.push(m);
    }
    Ok(out)
}
