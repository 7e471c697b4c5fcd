//! The command line. MemcacheQ's flags keep their meaning where they still
//! have one, with long forms beside them, so an init script written for
//! memcacheq starts mcqd unchanged; its BerkeleyDB and daemon flags are
//! accepted and ignored with a warning each.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{ArgAction, Parser};

use crate::store::SyncMode;

/// mcqd: a persistent message queue that speaks the memcache text protocol.
///
/// `set <queue> <flags> <exptime> <bytes>` appends a message to a queue,
/// `get <queue>` pops its head, `delete <queue>` drops it, `stats queue`
/// lists every queue as `<enqueued>/<dequeued>`.
#[derive(Parser, Debug, Clone)]
#[command(name = "mcqd", version, about, long_about = None, args_override_self = true)]
pub struct Config {
    /// Read flags from this file first: one `name = value` per line (long
    /// flag names without the dashes, e.g. `port = 22201`, `sync = always`),
    /// a bare `name` for a switch, `#` starts a comment. Flags given on the
    /// command line win over the file.
    #[arg(short = 'f', long, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// TCP port to listen on.
    #[arg(short = 'p', long, default_value_t = 22201)]
    pub port: u16,

    /// Address to bind (no UDP listener, ever).
    #[arg(short = 'l', long = "listen", default_value = "127.0.0.1")]
    pub listen: IpAddr,

    /// Connection limit; past it new connections get
    /// `SERVER_ERROR too many connections` and are closed.
    #[arg(short = 'c', long, default_value_t = 1024)]
    pub max_connections: usize,

    /// Executors, one pinned thread per core [default: number of cores].
    #[arg(short = 't', long, value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub threads: Option<u16>,

    /// Directory of the log (created on first start).
    #[arg(short = 'H', long, default_value = "./mcq-data")]
    pub data_dir: PathBuf,

    /// Largest message body, in bytes.
    #[arg(short = 'B', long, default_value_t = 1_048_576)]
    pub max_message_size: usize,

    /// Hot message cache, in MiB (shared out among the storage shards).
    #[arg(short = 'm', long = "cache-size", default_value_t = 64)]
    pub cache_mib: usize,

    /// Durability. `always`: acknowledged once written and flushed from the
    /// device's cache (O_DSYNC; power-loss safe).
    /// `interval=<ms>`: after the O_DIRECT write, fdatasync every <ms> (a
    /// kill -9 loses nothing, a power cut at most <ms>). `none`: as soon as
    /// the record is in the log buffer, which is written every 1 ms and
    /// fdatasync'd every 100 ms (a kill -9 may lose, or hand out again,
    /// about the last 1 ms; tune with `none,flush=<ms>,sync=<ms>`).
    #[arg(long, default_value = "always", value_parser = parse_sync)]
    pub sync: SyncMode,

    /// MemcacheQ's no-sync flag: the same as `--sync none`.
    #[arg(short = 'N', long = "no-sync")]
    pub no_sync: bool,

    /// Size of one segment file, in bytes (a multiple of 4096). An idle
    /// shard's segment is preallocated in steps (a sixteenth, at most
    /// 4 MiB) as it fills.
    #[arg(long, default_value_t = 64 << 20, value_parser = parse_segment_size)]
    pub segment_size: u64,

    /// Disk limit for the log, in bytes; past it `set` answers
    /// `SERVER_ERROR out of space`.
    #[arg(long)]
    pub max_disk: Option<u64>,

    /// Storage shards when the data directory is created [default: the
    /// number of executors]. Fixed afterwards: it is read from the manifest.
    #[arg(long)]
    pub shards: Option<u32>,

    /// Let the `shutdown` command stop the server (as SIGTERM does);
    /// without this flag it answers `ERROR: shutdown not enabled`.
    #[arg(long)]
    pub enable_shutdown: bool,

    /// More logging (-v, -vv).
    #[arg(short = 'v', action = ArgAction::Count)]
    pub verbose: u8,

    /// Ignored (MemcacheQ: BerkeleyDB page size).
    #[arg(short = 'A', hide = true)]
    ignored_a: Option<String>,
    /// Ignored (MemcacheQ: BerkeleyDB log buffer size).
    #[arg(short = 'L', hide = true)]
    ignored_l: Option<String>,
    /// Ignored (MemcacheQ: checkpoint period).
    #[arg(short = 'C', hide = true)]
    ignored_c: Option<String>,
    /// Ignored (MemcacheQ: memp_trickle period).
    #[arg(short = 'T', hide = true)]
    ignored_t: Option<String>,
    /// Ignored (MemcacheQ: cache pages percentage).
    #[arg(short = 'e', hide = true)]
    ignored_e: Option<String>,
    /// Ignored (MemcacheQ: memp_sync period).
    #[arg(short = 'S', hide = true)]
    ignored_s: Option<String>,
    /// Ignored (MemcacheQ: database file size).
    #[arg(short = 'E', hide = true)]
    ignored_big_e: Option<String>,
    /// Ignored (MemcacheQ: deadlock detection period).
    #[arg(short = 'D', hide = true)]
    ignored_d: Option<String>,
    /// Ignored (MemcacheQ: remove old BerkeleyDB logs).
    #[arg(short = 'R', hide = true)]
    ignored_r: bool,
    /// Ignored (MemcacheQ: run as a daemon; use systemd instead).
    #[arg(short = 'd', hide = true)]
    ignored_daemon: bool,
    /// Ignored (MemcacheQ: maximize core file limit).
    #[arg(short = 'r', hide = true)]
    ignored_core: bool,
    /// Ignored (MemcacheQ: user to run as; use systemd's User=).
    #[arg(short = 'u', hide = true)]
    ignored_user: Option<String>,
    /// Ignored (MemcacheQ: pid file; use systemd instead).
    #[arg(short = 'P', hide = true)]
    ignored_pid: Option<String>,
}

impl Config {
    /// Parses the command line, folding in `--config FILE` if given. Exits
    /// with a usage message on bad flags, as clap does.
    pub fn from_args() -> Config {
        let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
        match Config::try_from_args(args) {
            Ok(config) => config,
            Err(e) => e.exit(),
        }
    }

    /// [`Config::from_args`] on explicit arguments (the first is the program).
    pub fn try_from_args(args: Vec<std::ffi::OsString>) -> Result<Config, clap::Error> {
        let first = Config::try_parse_from(&args)?;
        let Some(path) = &first.config else {
            return Ok(first);
        };
        let text = std::fs::read_to_string(path).map_err(|e| {
            clap::Error::raw(
                clap::error::ErrorKind::Io,
                format!("cannot read config file {}: {e}\n", path.display()),
            )
        })?;
        let from_file = config_file_args(&text).map_err(|e| {
            clap::Error::raw(
                clap::error::ErrorKind::InvalidValue,
                format!("{}: {e}\n", path.display()),
            )
        })?;
        let mut merged = vec![args[0].clone()];
        merged.extend(from_file.into_iter().map(Into::into));
        merged.extend(args[1..].iter().cloned());
        Config::try_parse_from(merged)
    }

    /// The sync mode in force, `-N` folded in.
    pub fn sync_mode(&self) -> SyncMode {
        if self.no_sync {
            SyncMode::NONE
        } else {
            self.sync
        }
    }

    /// Executors to run.
    pub fn executors(&self) -> usize {
        self.threads.map(usize::from).unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
        })
    }

    /// One line for each MemcacheQ flag that was given but means nothing here.
    pub fn ignored_flag_warnings(&self) -> Vec<String> {
        let valued = [
            ('A', &self.ignored_a, "BerkeleyDB page size"),
            ('L', &self.ignored_l, "BerkeleyDB log buffer size"),
            ('C', &self.ignored_c, "BerkeleyDB checkpoint period"),
            ('T', &self.ignored_t, "BerkeleyDB memp_trickle period"),
            ('e', &self.ignored_e, "BerkeleyDB cache pages percentage"),
            ('S', &self.ignored_s, "BerkeleyDB memp_sync period"),
            ('E', &self.ignored_big_e, "BerkeleyDB database file size"),
            ('D', &self.ignored_d, "BerkeleyDB deadlock detection period"),
            (
                'u',
                &self.ignored_user,
                "user to run as (use systemd's User=)",
            ),
            ('P', &self.ignored_pid, "pid file (use systemd)"),
        ];
        let plain = [
            ('R', self.ignored_r, "BerkeleyDB log removal"),
            ('d', self.ignored_daemon, "daemon mode (use systemd)"),
            ('r', self.ignored_core, "core file limit"),
        ];
        valued
            .iter()
            .filter(|(_, v, _)| v.is_some())
            .map(|(f, _, what)| (*f, *what))
            .chain(
                plain
                    .iter()
                    .filter(|(_, on, _)| *on)
                    .map(|(f, _, what)| (*f, *what)),
            )
            .map(|(flag, what)| {
                format!("-{flag} ({what}) is a MemcacheQ flag with no meaning in mcqd: ignored")
            })
            .collect()
    }
}

/// Turns config file lines into long flags, up to the first `[queue …]`
/// section (those are per-queue limits: see `crate::limits`).
fn config_file_args(text: &str) -> Result<Vec<String>, String> {
    let mut args = Vec::new();
    for (n, raw) in text.lines().enumerate() {
        let line = raw.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        if line.starts_with('[') {
            break;
        }
        let (name, value) = match line.split_once('=') {
            Some((name, value)) => (name.trim(), Some(value.trim())),
            None => (line, None),
        };
        if name.is_empty()
            || name.starts_with('-')
            || name.contains(char::is_whitespace)
            || name == "config"
        {
            return Err(format!(
                "line {}: expected `name = value` or `name`, got `{raw}`",
                n + 1
            ));
        }
        args.push(format!("--{name}"));
        if let Some(value) = value {
            args.push(value.to_string());
        }
    }
    Ok(args)
}

fn parse_sync(text: &str) -> Result<SyncMode, String> {
    let expected = || {
        format!(
            "expected `always`, `interval=<ms>` or `none[,flush=<ms>][,sync=<ms>]` (ms > 0), got `{text}`"
        )
    };
    let ms = |v: &str| {
        v.parse::<u64>()
            .ok()
            .filter(|&ms| ms > 0)
            .map(Duration::from_millis)
            .ok_or_else(expected)
    };
    if text == "always" {
        return Ok(SyncMode::Always);
    }
    if let Some(every) = text.strip_prefix("interval=") {
        return Ok(SyncMode::Interval(ms(every)?));
    }
    let mut parts = text.split(',');
    if parts.next() != Some("none") {
        return Err(expected());
    }
    let (mut flush, mut sync) = (SyncMode::NONE_FLUSH, SyncMode::NONE_SYNC);
    for part in parts {
        match part.split_once('=') {
            Some(("flush", v)) => flush = ms(v)?,
            Some(("sync", v)) => sync = ms(v)?,
            _ => return Err(expected()),
        }
    }
    Ok(SyncMode::None { flush, sync })
}

fn parse_segment_size(text: &str) -> Result<u64, String> {
    let size: u64 = text.parse().map_err(|e| format!("{e}"))?;
    if size < 64 * 1024 || !size.is_multiple_of(4096) {
        return Err("must be a multiple of 4096 and at least 65536".into());
    }
    Ok(size)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Config {
        Config::try_parse_from(std::iter::once("mcqd").chain(args.iter().copied())).unwrap()
    }

    #[test]
    fn defaults() {
        let c = parse(&[]);
        assert_eq!(c.port, 22201);
        assert_eq!(c.listen.to_string(), "127.0.0.1");
        assert_eq!(c.max_connections, 1024);
        assert_eq!(c.max_message_size, 1 << 20);
        assert_eq!(c.cache_mib, 64);
        assert_eq!(c.sync_mode(), SyncMode::Always);
        assert_eq!(c.segment_size, 64 << 20);
        assert!(c.ignored_flag_warnings().is_empty());
    }

    #[test]
    fn config_file_then_command_line() {
        let dir = std::env::temp_dir().join(format!("mcq-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("mcqd.conf");
        std::fs::write(
            &file,
            "# production\nport = 9999\nsync = interval=10   # group commit every 10 ms\n\nno-sync\ndata-dir = /var/lib/mcq\n",
        )
        .unwrap();
        let args = |extra: &[&str]| -> Vec<std::ffi::OsString> {
            ["mcqd", "--config", file.to_str().unwrap()]
                .iter()
                .chain(extra)
                .map(Into::into)
                .collect()
        };
        let c = Config::try_from_args(args(&[])).unwrap();
        assert_eq!(c.port, 9999);
        assert_eq!(c.data_dir, PathBuf::from("/var/lib/mcq"));
        assert!(c.no_sync);
        let c = Config::try_from_args(args(&["-p", "1234"])).unwrap();
        assert_eq!(c.port, 1234, "the command line wins");
        std::fs::write(&file, "port = 7\n[queue q]\nmax_items = 5\n").unwrap();
        let c = Config::try_from_args(args(&[])).unwrap();
        assert_eq!(c.port, 7, "queue sections are not flags");
        std::fs::write(&file, "port 9999\n").unwrap();
        assert!(Config::try_from_args(args(&[])).is_err());
        std::fs::write(&file, "bogus = 1\n").unwrap();
        assert!(Config::try_from_args(args(&[])).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn sync_modes() {
        assert_eq!(
            parse(&["--sync", "interval=10"]).sync_mode(),
            SyncMode::Interval(Duration::from_millis(10))
        );
        assert_eq!(parse(&["-N"]).sync_mode(), SyncMode::NONE);
        assert_eq!(parse(&["--sync", "none"]).sync_mode(), SyncMode::NONE);
        assert_eq!(
            parse(&["--sync", "none,sync=50,flush=2"]).sync_mode(),
            SyncMode::None {
                flush: Duration::from_millis(2),
                sync: Duration::from_millis(50)
            }
        );
        for bad in [
            "sometimes",
            "none,flush=0",
            "none,flush",
            "none,often=1",
            "nonesuch",
        ] {
            assert!(
                Config::try_parse_from(["mcqd", "--sync", bad]).is_err(),
                "{bad}"
            );
        }
        assert!(Config::try_parse_from(["mcqd", "--sync", "interval=0"]).is_err());
    }

    #[test]
    fn memcacheq_flags_are_accepted_and_warned_about() {
        let c = parse(&[
            "-p",
            "1",
            "-H",
            "/x",
            "-A",
            "8192",
            "-L",
            "1024",
            "-d",
            "-r",
            "-u",
            "nobody",
            "-R",
            "-P",
            "/run/x.pid",
        ]);
        assert_eq!(c.port, 1);
        assert_eq!(c.data_dir, PathBuf::from("/x"));
        let warnings = c.ignored_flag_warnings();
        assert_eq!(warnings.len(), 7, "{warnings:?}");
        assert!(warnings.iter().any(|w| w.starts_with("-A ")));
    }
}
