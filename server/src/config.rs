//! The command line. MemcacheQ's flags keep their meaning where they still
//! have one (`-d`, `-P`, `-u`, `-r` included), with long forms beside them,
//! so an init script written for memcacheq starts mcqd unchanged; its
//! BerkeleyDB tuning flags are accepted and ignored with a warning each.
//! Every size takes `K`, `M` or `G` (`crate::limits::size`, the parser the
//! per-queue limits use).

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use clap::{ArgAction, Parser};

use crate::store::SyncMode;

const DEFAULT_MAX_MESSAGE: usize = 1 << 20;

const IGNORED: &str = "MemcacheQ's BerkeleyDB flags (accepted and ignored, one warning each)";

/// mcqd: a persistent message queue that speaks the memcache text protocol.
///
/// `set <queue> <flags> <exptime> <bytes>` appends a message to a queue,
/// `get <queue>` pops its head, `delete <queue>` drops it, `stats queue`
/// lists every queue as `<enqueued>/<dequeued>`.
#[derive(Parser, Debug, Clone)]
#[command(name = "mcqd", version, about, long_about = None, args_override_self = true)]
#[command(after_help = crate::offline::HELP)]
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

    /// Addresses to listen on (no UDP listener, ever): `<addr>[:<port>]`,
    /// comma-separated and/or repeated (`-l 127.0.0.1,10.0.0.5:22202`), an
    /// IPv6 address with a port in brackets (`[::1]:22202`); without a port,
    /// -p's. With -Z every listener speaks TLS except those prefixed
    /// `notls:` (memcached's form: `-l 0.0.0.0,notls:127.0.0.1:22202`). On
    /// the command line, -l replaces the config file's `listen` lines.
    #[arg(
        short = 'l',
        long = "listen",
        value_name = "ADDR",
        default_value = "127.0.0.1",
        value_delimiter = ',',
        action = ArgAction::Append,
        value_parser = parse_listen
    )]
    pub listen: Vec<Listen>,

    /// Connection limit; past it new connections get
    /// `SERVER_ERROR too many connections` and are closed. Lowered at
    /// start, with a warning, when the hard open-file limit (RLIMIT_NOFILE)
    /// cannot hold this many beside mcqd's own descriptors (mcqd raises the
    /// soft limit to the hard one itself).
    #[arg(short = 'c', long, default_value_t = 1024)]
    pub max_connections: usize,

    /// Executors, one pinned thread per core [default: number of cores].
    #[arg(short = 't', long, value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub threads: Option<u16>,

    /// Directory of the log (created on first start).
    #[arg(short = 'H', long, default_value = "./mcq-data")]
    pub data_dir: PathBuf,

    /// Largest message body, in bytes (or with K, M, G); at most what a
    /// segment can hold (about 7/8 of --segment-size) [default: 1M, or
    /// what a segment holds if that is less].
    #[arg(short = 'B', long, value_parser = parse_message_size)]
    max_message_size: Option<usize>,

    /// Hot message cache, in MiB, or a size with K, M, G (shared out among
    /// the storage shards). Bodies of 64 KiB or more never evict smaller
    /// ones.
    #[arg(short = 'm', long = "cache-size", value_name = "MIB", default_value = "64", value_parser = parse_cache_size)]
    pub cache_bytes: u64,

    /// Read-ahead cache for messages read back from the log (a consumer
    /// that lags, or any after a restart), in bytes or with K, M, G
    /// (shared out among the storage shards; each gets at least 4M). Bigger
    /// keeps the chunks of more queues read at different places
    /// [default: 32M per storage shard].
    #[arg(long, value_parser = crate::limits::size)]
    readahead_size: Option<u64>,

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

    /// Size of one segment file, in bytes or with K, M, G (a multiple of
    /// 4096, from 64K to 2G). A run's first segment and the consumers' spare
    /// are 8M (at most this), so an idle shard takes 16M.
    #[arg(long, default_value = "64M", value_parser = parse_segment_size)]
    pub segment_size: u64,

    /// Disk limit for the log, in bytes or with K, M, G; past it `set`
    /// answers `SERVER_ERROR out of space`.
    #[arg(long, value_parser = crate::limits::size)]
    pub max_disk: Option<u64>,

    /// Storage shards when the data directory is created [default: the
    /// number of executors]. Fixed afterwards: it is read from the manifest
    /// (a different value is warned about, and the manifest's is used).
    #[arg(long)]
    pub shards: Option<u32>,

    /// Let the `shutdown` command stop the server (as SIGTERM does);
    /// without this flag it answers `ERROR: shutdown not enabled`. With
    /// -Y only users with `admin = *` may.
    #[arg(long)]
    pub enable_shutdown: bool,

    /// `stats` lists Kestrel's per-queue lines (`queue_<name>_items`, …)
    /// for at most this many queues, the first by name; past that it adds
    /// `STAT queues_omitted <n>` (`stats queue` always lists every queue).
    /// 0 lists none.
    #[arg(long, value_name = "QUEUES", default_value_t = 1000)]
    pub stats_queues: usize,

    /// Serve Prometheus metrics (the `stats` counters, per-queue depth and
    /// counts, commit latency) over HTTP at `http://<ADDR:PORT>/metrics`.
    /// Off by default. It names every queue: bind a private address, and
    /// see --metrics-token-file.
    #[arg(long, value_name = "ADDR:PORT")]
    pub metrics: Option<std::net::SocketAddr>,

    /// Serve TLS (memcached's -Z): every -l listener not prefixed `notls:`
    /// speaks TLS 1.2 or 1.3 only, with the certificate of
    /// `-o ssl_chain_cert=<pem>`. `refresh_certs` and SIGHUP reload the
    /// certificate files for new connections.
    #[arg(short = 'Z', long, help_heading = "TLS")]
    pub enable_ssl: bool,

    /// memcached's extended options, comma-separated, as many -o as wanted
    /// (the config file's `extended` lines come first, a later value of an
    /// option wins). mcqd reads its TLS ones:
    /// `ssl_chain_cert=<pem>` (the certificate chain, required with -Z),
    /// `ssl_key=<pem>` (its private key, if not in the chain file),
    /// `ssl_ca_cert=<pem>` (CAs that sign client certificates),
    /// `ssl_verify_mode=<n>` (client certificates: 0 not asked for, 1
    /// checked if sent, 2 required, 3 required, as 2: rustls never
    /// renegotiates), `ssl_min_version=<n>` (2 TLS 1.2, the default; 3 TLS
    /// 1.3; 0 and 1, TLS 1.0 and 1.1, are refused), `ssl_session_cache`
    /// (resumable sessions). Other options of memcached's are warned
    /// about and ignored; an unknown `ssl_` one is an error.
    #[arg(
        short = 'o',
        long = "extended",
        value_name = "OPT[=VALUE],...",
        value_delimiter = ',',
        action = ArgAction::Append,
        help_heading = "TLS"
    )]
    pub extended: Vec<String>,

    /// How long a client has to finish its TLS handshake; until then it
    /// holds one of -c's connection slots and nothing it sent is served.
    #[arg(
        long,
        value_name = "DURATION",
        default_value = "10s",
        value_parser = parse_timeout,
        help_heading = "TLS"
    )]
    pub ssl_handshake_timeout: Duration,
    /// Require authentication, as memcached's -Y: a connection's first
    /// request must be `set <any key> <flags> <exptime> <bytes>` whose data
    /// is `<user> <password>` (answered `STORED`; anything else first gets
    /// `CLIENT_ERROR unauthenticated`). FILE has one `user:password` a
    /// line; a password may be an argon2 hash (`mcqd hash-password`). The
    /// config file's `[user <name>]` sections say which queues each user
    /// may read, write and administer (without any: everything). `reload`
    /// and SIGHUP read both again.
    #[arg(
        short = 'Y',
        long,
        value_name = "FILE",
        help_heading = "Authentication and permissions"
    )]
    pub auth_file: Option<PathBuf>,

    /// Seconds a connection has to authenticate (-Y) before it is closed.
    #[arg(
        long,
        value_name = "SECS",
        default_value_t = 30,
        value_parser = clap::value_parser!(u64).range(1..),
        help_heading = "Authentication and permissions"
    )]
    pub auth_timeout: u64,

    /// `--metrics` answers only requests carrying
    /// `Authorization: Bearer <token>`, the token being this file's
    /// content (without surrounding whitespace); others get 401.
    #[arg(
        long,
        value_name = "FILE",
        help_heading = "Authentication and permissions"
    )]
    pub metrics_token_file: Option<PathBuf>,

    /// More logging: -v adds connections and recovery details, -vv every
    /// rejected request; `verbosity <n>` changes it at runtime.
    #[arg(short = 'v', action = ArgAction::Count)]
    pub verbose: u8,

    /// Run as a daemon: fork, start a new session, chdir to / (not with
    /// -r), stdin and stdout to /dev/null. The parent exits once the daemon
    /// listens (0) or failed to start (its exit status; the error is on
    /// stderr). Without -v the daemon's stderr goes to /dev/null then too.
    #[arg(short = 'd', long, help_heading = "MemcacheQ compatibility")]
    pub daemon: bool,

    /// Write the (daemon's) pid to this file once the data directory and
    /// the port are mcqd's; removed on exit.
    #[arg(
        short = 'P',
        long,
        value_name = "FILE",
        help_heading = "MemcacheQ compatibility"
    )]
    pub pid_file: Option<PathBuf>,

    /// When started as root: bind the port, lock the data directory (made
    /// for the user if missing) and write the pid file, then become this
    /// user (setgid, initgroups, setuid) before anything else is opened or
    /// created. The data directory must be the user's. Ignored with a
    /// warning when not root.
    #[arg(
        short = 'u',
        long,
        value_name = "USER",
        help_heading = "MemcacheQ compatibility"
    )]
    pub user: Option<String>,

    /// Raise the core file size limit to its maximum (and keep the process
    /// dumpable after -u), so a crash leaves a core.
    #[arg(
        short = 'r',
        long = "core-limit",
        help_heading = "MemcacheQ compatibility"
    )]
    pub raise_core_limit: bool,

    /// UDP port: mcqd never serves UDP; 0 (off) is accepted, any other
    /// port is warned about and not served.
    #[arg(
        short = 'U',
        value_name = "PORT",
        help_heading = "MemcacheQ compatibility"
    )]
    pub udp_port: Option<u16>,

    /// Ignored (BerkeleyDB page size).
    #[arg(short = 'A', value_name = "N", help_heading = IGNORED)]
    ignored_a: Option<String>,
    /// Ignored (BerkeleyDB log buffer size).
    #[arg(short = 'L', value_name = "N", help_heading = IGNORED)]
    ignored_l: Option<String>,
    /// Ignored (BerkeleyDB checkpoint period).
    #[arg(short = 'C', value_name = "N", help_heading = IGNORED)]
    ignored_c: Option<String>,
    /// Ignored (BerkeleyDB memp_trickle period).
    #[arg(short = 'T', value_name = "N", help_heading = IGNORED)]
    ignored_t: Option<String>,
    /// Ignored (BerkeleyDB cache pages percentage).
    #[arg(short = 'e', value_name = "N", help_heading = IGNORED)]
    ignored_e: Option<String>,
    /// Ignored (BerkeleyDB memp_sync period).
    #[arg(short = 'S', value_name = "N", help_heading = IGNORED)]
    ignored_s: Option<String>,
    /// Ignored (BerkeleyDB database file size).
    #[arg(short = 'E', value_name = "N", help_heading = IGNORED)]
    ignored_big_e: Option<String>,
    /// Ignored (BerkeleyDB deadlock detection period).
    #[arg(short = 'D', value_name = "N", help_heading = IGNORED)]
    ignored_d: Option<String>,
    /// Ignored (BerkeleyDB log removal: mcqd deletes consumed segments
    /// itself).
    #[arg(short = 'R', help_heading = IGNORED)]
    ignored_r: bool,
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
        let in_file = |e: String| {
            clap::Error::raw(
                clap::error::ErrorKind::InvalidValue,
                format!("{}: {e}\n", path.display()),
            )
        };
        let text = std::fs::read_to_string(path).map_err(|e| {
            clap::Error::raw(
                clap::error::ErrorKind::Io,
                format!("cannot read config file {}: {e}\n", path.display()),
            )
        })?;
        let from_file = config_file_args(&text).map_err(in_file)?;
        // -l is a list: given on the command line, it replaces the file's
        // (as any other flag does) rather than adding to them. `-o`
        // options add up, the command line's after the file's.
        let cli_listen = <Config as clap::CommandFactory>::command()
            .try_get_matches_from(&args)?
            .value_source("listen")
            == Some(clap::parser::ValueSource::CommandLine);
        let mut merged = vec![args[0].clone()];
        merged.extend(
            from_file
                .into_iter()
                .filter(|pair| !(cli_listen && pair[0] == "--listen"))
                .flatten()
                .map(Into::into),
        );
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

    /// One storage shard's read-ahead budget, in bytes, out of `shards`
    /// (`--readahead-size`).
    pub fn readahead_bytes(&self, shards: u32) -> usize {
        match self.readahead_size {
            Some(total) => usize::try_from(total / u64::from(shards.max(1))).unwrap_or(usize::MAX),
            None => crate::log::readahead::DEFAULT_BUDGET,
        }
    }

    /// Executors to run.
    pub fn executors(&self) -> usize {
        self.threads.map(usize::from).unwrap_or_else(cores)
    }

    /// Refuses values that are each fine alone but cannot work together;
    /// the message names the flags.
    pub fn check(&self) -> Result<(), String> {
        let largest = self.largest_message();
        if let Some(asked) = self.max_message_size.filter(|&a| a as u64 > largest) {
            return Err(format!(
                "-B {asked} is larger than a segment of {} bytes (--segment-size) can hold: the largest message it takes is {largest} bytes; lower -B or raise --segment-size",
                self.segment_size
            ));
        }
        self.tls()?;
        let listeners = self.listeners();
        if let Some(l) = self.listen.iter().find(|l| l.notls && !self.enable_ssl) {
            return Err(format!(
                "-l notls:{}: `notls:` is valid only with -Z (--enable-ssl); without it every listener is plaintext already",
                l.ip
            ));
        }
        for (i, l) in listeners.iter().enumerate() {
            if listeners[..i].iter().any(|o| o.addr == l.addr) {
                return Err(format!("-l: {} is given twice", l.addr));
            }
        }
        Ok(())
    }

    /// Every address to listen on (-l, with -p where it names no port),
    /// and whether it speaks TLS.
    pub fn listeners(&self) -> Vec<Listener> {
        self.listen
            .iter()
            .map(|l| Listener {
                addr: SocketAddr::new(l.ip, l.port.unwrap_or(self.port)),
                tls: self.enable_ssl && !l.notls,
            })
            .collect()
    }

    /// The TLS settings of -Z and `-o ssl_…` (`None` without -Z); an error
    /// names the option at fault.
    pub fn tls(&self) -> Result<Option<TlsOptions>, String> {
        Ok(self.extended_options()?.0)
    }

    /// `-o`: the TLS settings, and a warning for each option mcqd ignores.
    fn extended_options(&self) -> Result<(Option<TlsOptions>, Vec<String>), String> {
        let mut warnings = Vec::new();
        let mut opts = TlsOptions {
            chain_cert: PathBuf::new(),
            key: None,
            ca_cert: None,
            verify_mode: VerifyMode::None,
            min_version: TlsVersion::Tls12,
            session_cache: false,
        };
        let mut chain_cert = None;
        let mut first_ssl = None;
        for raw in self
            .extended
            .iter()
            .map(|o| o.trim())
            .filter(|o| !o.is_empty())
        {
            let (name, value) = match raw.split_once('=') {
                Some((name, value)) => (name, Some(value)),
                None => (raw, None),
            };
            if name.starts_with("ssl_") {
                first_ssl.get_or_insert(name.to_string());
            }
            let value = |what: &str| {
                value
                    .filter(|v| !v.is_empty())
                    .ok_or_else(|| format!("-o {name}: missing its value (`{name}=<{what}>`)"))
            };
            let number = |what: &str| -> Result<i64, String> {
                let v = value(what)?;
                v.parse()
                    .map_err(|_| format!("-o {name}={v}: could not parse `{v}` as a number"))
            };
            match name {
                "ssl_chain_cert" => chain_cert = Some(PathBuf::from(value("pem file")?)),
                "ssl_key" => opts.key = Some(PathBuf::from(value("pem file")?)),
                "ssl_ca_cert" => opts.ca_cert = Some(PathBuf::from(value("pem file")?)),
                "ssl_verify_mode" => {
                    opts.verify_mode = match number("0|1|2|3")? {
                        0 => VerifyMode::None,
                        1 => VerifyMode::Request,
                        2 => VerifyMode::Require,
                        3 => VerifyMode::Once,
                        n => {
                            return Err(format!(
                                "-o ssl_verify_mode={n}: invalid; 0 (none), 1 (request), 2 (require) or 3 (once)"
                            ))
                        }
                    }
                }
                "ssl_min_version" => {
                    opts.min_version = match number("0|1|2|3")? {
                        2 => TlsVersion::Tls12,
                        3 => TlsVersion::Tls13,
                        n @ (0 | 1) => {
                            return Err(format!(
                                "-o ssl_min_version={n}: TLS 1.{n} is not supported; mcqd speaks TLS 1.2 and 1.3 only (ssl_min_version=2, the default, or 3)"
                            ))
                        }
                        n => {
                            return Err(format!(
                                "-o ssl_min_version={n}: invalid; 2 (TLS 1.2, the default) or 3 (TLS 1.3)"
                            ))
                        }
                    }
                }
                "ssl_session_cache" => opts.session_cache = true,
                // memcached's SSL_FILETYPE_PEM.
                "ssl_keyformat" => match number("1")? {
                    1 => {}
                    n => {
                        return Err(format!(
                            "-o ssl_keyformat={n}: mcqd reads PEM keys only (ssl_keyformat=1)"
                        ))
                    }
                },
                "ssl_ciphers" => warnings.push(format!(
                    "-o {raw}: ignored: mcqd uses rustls's cipher suites (TLS 1.3: AES-256-GCM, AES-128-GCM, ChaCha20-Poly1305; TLS 1.2: ECDHE with the same ciphers)"
                )),
                "ssl_wbuf_size" => warnings.push(format!(
                    "-o {raw}: ignored: mcqd encrypts each batch of replies as it is written"
                )),
                "ssl_kernel_tls" => warnings.push(format!(
                    "-o {raw}: ignored: mcqd does not offload TLS to the kernel"
                )),
                _ if name.starts_with("ssl_") => {
                    return Err(format!(
                        "-o {name}: unknown TLS option (mcqd knows ssl_chain_cert, ssl_key, ssl_ca_cert, ssl_verify_mode, ssl_min_version, ssl_session_cache, and ignores ssl_ciphers, ssl_wbuf_size, ssl_kernel_tls)"
                    ))
                }
                _ => warnings.push(format!(
                    "-o {raw}: a memcached option with no meaning in mcqd: ignored"
                )),
            }
        }
        if !self.enable_ssl {
            return match first_ssl {
                Some(name) => Err(format!(
                    "-o {name} without -Z (--enable-ssl): TLS is off; add -Z to serve TLS"
                )),
                None => Ok((None, warnings)),
            };
        }
        let Some(chain_cert) = chain_cert else {
            return Err(
                "-Z (--enable-ssl) needs a certificate: -o ssl_chain_cert=<pem>[,ssl_key=<pem>]"
                    .into(),
            );
        };
        opts.chain_cert = chain_cert;
        if opts.verify_mode != VerifyMode::None && opts.ca_cert.is_none() {
            return Err(format!(
                "-o ssl_verify_mode={}: checking client certificates needs the CAs that sign them: -o ssl_ca_cert=<pem>",
                opts.verify_mode as u8
            ));
        }
        if self.listeners().iter().all(|l| !l.tls) {
            warnings.push("-Z, but every -l listener is notls: nothing is served over TLS".into());
        }
        Ok((Some(opts), warnings))
    }

    /// The largest message body taken (`-B`).
    pub fn max_message_size(&self) -> usize {
        self.max_message_size
            .unwrap_or_else(|| (DEFAULT_MAX_MESSAGE as u64).min(self.largest_message()) as usize)
    }

    /// The largest message body a segment holds.
    fn largest_message(&self) -> u64 {
        crate::log::writer::max_message_size(
            self.segment_size,
            crate::protocol::MAX_QUEUE_NAME,
            crate::log::REGION_MIN,
        )
    }

    /// One line for each flag given that mcqd cannot honour as asked.
    pub fn warnings(&self) -> Vec<String> {
        let valued = [
            ('A', &self.ignored_a, "BerkeleyDB page size"),
            ('L', &self.ignored_l, "BerkeleyDB log buffer size"),
            ('C', &self.ignored_c, "BerkeleyDB checkpoint period"),
            ('T', &self.ignored_t, "BerkeleyDB memp_trickle period"),
            ('e', &self.ignored_e, "BerkeleyDB cache pages percentage"),
            ('S', &self.ignored_s, "BerkeleyDB memp_sync period"),
            ('E', &self.ignored_big_e, "BerkeleyDB database file size"),
            ('D', &self.ignored_d, "BerkeleyDB deadlock detection period"),
        ];
        let mut warnings: Vec<String> = valued
            .iter()
            .filter(|(_, v, _)| v.is_some())
            .map(|(f, _, what)| (*f, *what))
            .chain(self.ignored_r.then_some(('R', "BerkeleyDB log removal")))
            .map(|(flag, what)| {
                format!("-{flag} ({what}) is a MemcacheQ flag with no meaning in mcqd: ignored")
            })
            .collect();
        if let Some(port) = self.udp_port.filter(|&p| p != 0) {
            warnings.push(format!(
                "-U {port}: mcqd never serves UDP; only TCP port {} is served",
                self.port
            ));
        }
        // Refused options are check()'s; only the warnings here.
        if let Ok((_, extended)) = self.extended_options() {
            warnings.extend(extended);
        }
        if self.metrics_token_file.is_some() && self.metrics.is_none() {
            warnings.push("--metrics-token-file without --metrics: no metrics are served".into());
        }
        let cores = cores();
        if self.executors() > cores {
            warnings.push(format!(
                "-t {} is more than the {cores} cores: executors are pinned round-robin and share cores",
                self.executors()
            ));
        }
        warnings
    }
}

/// One `-l` entry: `[notls:]<addr>[:<port>]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Listen {
    pub ip: IpAddr,
    /// -p when absent.
    pub port: Option<u16>,
    /// `notls:`: plaintext beside -Z's TLS listeners.
    pub notls: bool,
}

/// An address to listen on, as resolved from -l, -p and -Z.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Listener {
    pub addr: SocketAddr,
    pub tls: bool,
}

/// -Z's settings, from `-o ssl_…` (memcached's names and numbers).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsOptions {
    /// `ssl_chain_cert`: the server's certificate, then its chain.
    pub chain_cert: PathBuf,
    /// `ssl_key`: its private key; `None`: in the chain file.
    pub key: Option<PathBuf>,
    /// `ssl_ca_cert`: the CAs whose client certificates are accepted.
    pub ca_cert: Option<PathBuf>,
    pub verify_mode: VerifyMode,
    pub min_version: TlsVersion,
    /// `ssl_session_cache`: sessions may be resumed.
    pub session_cache: bool,
}

/// `ssl_verify_mode`, memcached's (OpenSSL's) numbers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VerifyMode {
    /// 0: no client certificate asked for.
    None = 0,
    /// 1: asked for; one sent must be signed by `ssl_ca_cert`, but a client
    /// may send none.
    Request = 1,
    /// 2: required and signed by `ssl_ca_cert`.
    Require = 2,
    /// 3: OpenSSL's "once" (do not ask again on renegotiation): rustls
    /// never renegotiates, so the same as 2.
    Once = 3,
}

/// `ssl_min_version`: 2 or 3 (memcached's 0 and 1, TLS 1.0 and 1.1, are
/// refused: rustls speaks neither).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TlsVersion {
    Tls12,
    Tls13,
}

/// `-l`: `[notls:]<addr>[:<port>]`, IPv6 with a port as `[<addr>]:<port>`.
fn parse_listen(text: &str) -> Result<Listen, String> {
    let text = text.trim();
    let (notls, rest) = match text.strip_prefix("notls:") {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    if ["btls:", "mtls:"].iter().any(|p| rest.starts_with(p)) {
        return Err(format!(
            "`{text}`: memcached's btls:/mtls: listeners are not supported; -o ssl_verify_mode sets client certificates for every TLS listener"
        ));
    }
    let expected = || {
        format!(
            "expected `[notls:]<address>[:<port>]` (IPv6 with a port: `[::1]:22201`), got `{text}`"
        )
    };
    let port = |p: &str| p.parse::<u16>().map_err(|_| expected());
    if let Some(bracketed) = rest.strip_prefix('[') {
        let (ip, after) = bracketed.split_once(']').ok_or_else(expected)?;
        let ip: std::net::Ipv6Addr = ip.parse().map_err(|_| expected())?;
        let port = match after {
            "" => None,
            _ => Some(port(after.strip_prefix(':').ok_or_else(expected)?)?),
        };
        return Ok(Listen {
            ip: IpAddr::V6(ip),
            port,
            notls,
        });
    }
    if let Ok(ip) = rest.parse::<IpAddr>() {
        return Ok(Listen {
            ip,
            port: None,
            notls,
        });
    }
    let (ip, p) = rest.rsplit_once(':').ok_or_else(expected)?;
    let ip: std::net::Ipv4Addr = ip.parse().map_err(|_| expected())?;
    Ok(Listen {
        ip: IpAddr::V4(ip),
        port: Some(port(p)?),
        notls,
    })
}

/// A timeout: a duration such as `10s` or `500ms`, more than zero.
fn parse_timeout(text: &str) -> Result<Duration, String> {
    match humantime::parse_duration(text) {
        Ok(d) if !d.is_zero() => Ok(d),
        Ok(_) => Err("must be more than zero".into()),
        Err(e) => Err(format!("`{text}`: {e} (e.g. `10s`, `500ms`)")),
    }
}

/// Cores this process may run on.
fn cores() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

/// Turns config file lines into long flags (one `--name [value]` each), up to the first `[queue …]`
/// section (those are per-queue limits: see `crate::limits`). Each line is
/// checked alone, so that an error names its line.
fn config_file_args(text: &str) -> Result<Vec<Vec<String>>, String> {
    let known: Vec<String> = <Config as clap::CommandFactory>::command()
        .get_arguments()
        .filter_map(|a| a.get_long().map(str::to_string))
        .filter(|name| name != "config" && name != "help" && name != "version")
        .collect();
    let mut args = Vec::new();
    for (n, raw) in text.lines().enumerate() {
        let at = |why: String| format!("line {}: {why}", n + 1);
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
        if name.is_empty() || name.starts_with('-') || name.contains(char::is_whitespace) {
            return Err(at(format!(
                "expected `name = value` or `name`, got `{raw}`"
            )));
        }
        if !known.iter().any(|k| k == name) {
            return Err(at(format!(
                "unknown setting `{name}` (settings are mcqd's long flag names: see mcqd --help)"
            )));
        }
        let mut pair = vec![format!("--{name}")];
        pair.extend(value.map(str::to_string));
        if let Err(e) =
            Config::try_parse_from(std::iter::once("mcqd".to_string()).chain(pair.clone()))
        {
            return Err(at(clap_reason(&e)));
        }
        args.push(pair);
    }
    Ok(args)
}

/// The first line of a clap error, without its `error: `.
fn clap_reason(e: &clap::Error) -> String {
    let text = e.to_string();
    let first = text.lines().next().unwrap_or("");
    first.strip_prefix("error: ").unwrap_or(first).to_string()
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
    let size = crate::limits::size(text)?;
    // A record's place in its segment is a 32-bit offset, and so is what
    // a queue counts of one segment; 2G keeps both well inside.
    if !(64 << 10..=2 << 30).contains(&size) || !size.is_multiple_of(4096) {
        return Err(format!(
            "must be a multiple of 4096 from 64K to 2G, got {size}"
        ));
    }
    Ok(size)
}

fn parse_message_size(text: &str) -> Result<usize, String> {
    let size = crate::limits::size(text)?;
    usize::try_from(size).map_err(|_| format!("`{text}` is too large"))
}

/// `-m`: MiB as memcached and MemcacheQ take it, or a size with a unit.
fn parse_cache_size(text: &str) -> Result<u64, String> {
    match text.parse::<u64>() {
        Ok(mib) => mib
            .checked_mul(1 << 20)
            .ok_or_else(|| format!("`{text}` is too large")),
        Err(_) => crate::limits::size(text),
    }
}

#[cfg(test)]
#[path = "config_tests.rs"]
mod tests;
