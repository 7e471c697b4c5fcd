//! Command-line flags.
//!
//! The flags are the user interface and the record of a run (the JSON output
//! repeats the command line), so every one is documented for `--help` and
//! parsed into typed values here; the rest of the crate never sees strings.

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

use crate::workload::{KeyDist, SizeDist, Workload};

/// Load generator for memcache-protocol servers: mcqd, memcached, MemcacheQ.
///
/// Closed loop by default (every connection keeps `--pipeline` requests
/// outstanding); with `--rate` it runs open loop and measures latency from
/// each request's intended send time.
#[derive(Parser, Debug, Clone)]
#[command(name = "mcq-loadgen", version, about, long_about = None)]
pub struct Args {
    /// Server to load, HOST:PORT. Repeat for several servers; connections are
    /// spread over them round-robin (in pairs mode, pair by pair).
    #[arg(
        long = "server",
        short = 's',
        value_name = "HOST:PORT",
        default_value = "127.0.0.1:22201"
    )]
    pub servers: Vec<String>,

    /// Total number of connections, over all threads and servers.
    #[arg(long, short = 'c', default_value_t = 16)]
    pub connections: usize,

    /// Generator threads; each drives its share of the connections with epoll.
    #[arg(long, short = 't', default_value_t = 1)]
    pub threads: usize,

    /// Requests outstanding per connection (pipelining depth).
    #[arg(long, short = 'p', default_value_t = 1, value_name = "D")]
    pub pipeline: usize,

    /// How long to measure, after the warm-up (e.g. 10s, 500ms, 2m).
    /// Default 10s unless --requests is given. In open loop nothing is sent
    /// after it: requests still waiting for a free pipeline slot then are
    /// counted as not sent.
    #[arg(long, short = 'd', value_parser = parse_duration, conflicts_with = "requests")]
    pub duration: Option<Duration>,

    /// Stop after this many measured requests instead of after a duration
    /// (in pairs mode: this many messages produced).
    #[arg(long, short = 'n')]
    pub requests: Option<u64>,

    /// Run this long before measuring; nothing from the warm-up is reported.
    #[arg(long, value_parser = parse_duration, default_value = "0s")]
    pub warmup: Duration,

    /// Open loop: send this many requests per second in total, on one global
    /// schedule spread over the connections (in pairs mode: the producers).
    /// Latency is measured from each request's intended send time.
    #[arg(long, value_name = "OPS")]
    pub rate: Option<f64>,

    /// Fraction of requests that are `set` in the mixed workload.
    #[arg(long, default_value_t = 0.5)]
    pub set_ratio: f64,

    /// Message size in bytes: N, a uniform range LO..HI, or exp:MEAN; N,
    /// LO and HI take K, M or G (8M = 8 MiB, at most 64M). Traceable messages (pairs, --verify) are at least 32 bytes.
    #[arg(long, default_value = "100")]
    pub value_size: SizeDist,

    /// Number of queues (keys) the requests are spread over.
    #[arg(long, default_value_t = 16)]
    pub queues: u64,

    /// How requests pick a queue: uniform, zipf (s = 0.99) or zipf:S.
    #[arg(long, default_value = "uniform")]
    pub key_dist: KeyDist,

    /// Queue names are this prefix followed by the queue number.
    #[arg(long, default_value = "lg")]
    pub key_prefix: String,

    /// What to send: mixed (set/get by --set-ratio), set, get, or pairs
    /// (producer/consumer connection pairs measuring end-to-end latency).
    #[arg(long, value_enum, default_value = "mixed")]
    pub workload: Workload,

    /// Check every message read back: per-producer order, no duplicates, no
    /// corruption, and — after draining every queue at the end — no loss.
    /// Exits with status 1 when verification fails.
    #[arg(long)]
    pub verify: bool,

    /// Write the results as JSON to this file.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,

    /// Write an HdrHistogram interval log (one histogram per second, V2
    /// compressed, values in ns; end-to-end latency tagged "e2e").
    #[arg(long, value_name = "FILE")]
    pub hdr_log: Option<PathBuf>,

    /// Write an SVG plot of latency by percentile.
    #[arg(long, value_name = "FILE.svg")]
    pub plot: Option<PathBuf>,

    /// No progress line; only the summary.
    #[arg(long, short = 'q')]
    pub quiet: bool,

    /// A connection with requests outstanding and no reply for this long is
    /// aborted (and counted as an error).
    #[arg(long, value_parser = parse_duration, default_value = "10s")]
    pub timeout: Duration,

    /// In pairs mode, how long a consumer waits after a miss before asking
    /// again (0 = immediately).
    #[arg(long, value_parser = parse_duration, default_value = "0s")]
    pub miss_backoff: Duration,

    /// Gets wait up to this long for a message instead of answering at once
    /// on an empty queue: Kestrel's blocking get, `get <q>/t=<ms>` (mcqd,
    /// Kestrel, Darner). In pairs mode it replaces polling with
    /// --miss-backoff. Must be shorter than --timeout.
    #[arg(long, value_parser = parse_duration)]
    pub get_wait: Option<Duration>,

    /// Every get is a reliable read (Kestrel's `/open` and `/close`;
    /// Kestrel, mcqd from issue 9). A get on a queue where the connection holds nothing open is
    /// `get <q>/open`; after a message, `get <q>/close/open` confirms it and
    /// opens the next in one round trip (with --get-wait: `<q>/t=<ms>/open`,
    /// `<q>/t=<ms>/close/open`). When the run ends, `get <q>/close` confirms
    /// whatever is still open. A `/close` confirms even a message whose
    /// reply has not arrived, so a connection keeps at most one get in
    /// flight per queue: pairs consumers ignore --pipeline, and in the mixed
    /// and get workloads a get on a queue that has one in flight waits for
    /// it, and the requests after it wait too. With --verify, delivery is
    /// at-least-once: a message may come again only if it was open (not
    /// confirmed) at a disconnect, which is counted as redelivered, and
    /// nothing may be lost. The verdict (and the JSON's `verify`) adds
    /// `open_at_disconnect`, `opens_in_doubt` (gets in flight at a break),
    /// `redelivered` and `redelivered_out_of_order`.
    #[arg(long)]
    pub reliable: bool,

    /// When the server closes a connection (a crash, a restart), reconnect
    /// and carry on instead of dropping it; give up after --timeout. With
    /// --verify, messages popped by gets whose replies were lost may be
    /// missing, and duplicates are tolerated (a crashed server may hand out
    /// a popped message again). With --reliable neither is excused: see
    /// there.
    #[arg(long)]
    pub reconnect: bool,

    /// Connection churn: each connection, after N requests answered on it,
    /// closes cleanly (TLS close_notify, then FIN) and opens a new one the
    /// way the first was opened: TCP connect, TLS handshake with --tls, the
    /// set handshake with --auth. N = 1 sends every request on a fresh
    /// connection. With --pipeline it issues at most N requests per
    /// connection and closes it once all are answered. The report adds the
    /// connections opened, per second, and their set-up time (connect, TLS
    /// handshake and auth) by percentile. Set-up blocks the generator
    /// thread, so use --threads to open connections in parallel.
    #[arg(long, value_name = "N")]
    pub reconnect_every: Option<u64>,

    /// Keep polling the sockets this long before sleeping in epoll_wait
    /// (e.g. 50us). Cuts wake-up latency (large on VMs) at the price of CPU;
    /// leave it at 0 when the generator shares cores with the server.
    #[arg(long, value_parser = parse_duration, default_value = "0s")]
    pub busy_poll: Duration,

    /// Seed for the request generators (default: from the clock).
    #[arg(long)]
    pub seed: Option<u64>,

    /// Connect with TLS (rustls; TLS 1.2 and 1.3). Needs --ca. The TLS
    /// handshake (and --auth) happen before the run, so connection setup is
    /// not measured; the run measures what TLS adds to each request (see
    /// --reconnect-every to measure the handshakes).
    #[arg(long)]
    pub tls: bool,

    /// With --tls: the CA certificates (PEM) to verify the server with.
    #[arg(long, value_name = "PEM", requires = "tls")]
    pub ca: Option<PathBuf>,

    /// With --tls: a client certificate chain (PEM) for mutual TLS; needs --key.
    #[arg(long, value_name = "PEM", requires_all = ["tls", "key"])]
    pub cert: Option<PathBuf>,

    /// With --tls: the client certificate's private key (PEM); needs --cert.
    #[arg(long, value_name = "PEM", requires_all = ["tls", "cert"])]
    pub key: Option<PathBuf>,

    /// With --tls: the name to verify the server's certificate for (a DNS
    /// name or an IP address). Default: the host of each --server.
    #[arg(long, value_name = "NAME", requires = "tls")]
    pub tls_name: Option<String>,

    /// Authenticate every connection the memcached way (mcqd -Y, memcached
    /// -Y): its first request is `set auth 0 0 <n>` with `USER PASSWORD` as
    /// the data, and it must be answered STORED. After the TLS handshake
    /// with --tls.
    #[arg(long, value_name = "USER:PASSWORD")]
    pub auth: Option<String>,
}

/// `10s`, `250ms`, `100us`, `2m`, `1h`, or a bare number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let v: f64 = num
        .parse()
        .map_err(|_| format!("bad duration {s:?} (try 10s, 500ms)"))?;
    let secs = match unit {
        "" | "s" => v,
        "ms" => v / 1e3,
        "us" | "µs" => v / 1e6,
        "ns" => v / 1e9,
        "m" | "min" => v * 60.0,
        "h" => v * 3600.0,
        _ => return Err(format!("bad duration unit in {s:?} (ns, us, ms, s, m, h)")),
    };
    if !secs.is_finite() || secs < 0.0 {
        return Err(format!("bad duration {s:?}"));
    }
    Ok(Duration::from_secs_f64(secs))
}

impl Args {
    /// Checks that the flags make sense together.
    pub fn validate(&self) -> Result<(), String> {
        if self.connections == 0 {
            return Err("--connections must be at least 1".into());
        }
        if self.threads == 0 {
            return Err("--threads must be at least 1".into());
        }
        if self.pipeline == 0 {
            return Err("--pipeline must be at least 1".into());
        }
        if !(0.0..=1.0).contains(&self.set_ratio) {
            return Err("--set-ratio must be between 0 and 1".into());
        }
        if let Some(r) = self.rate {
            if !(r > 0.0 && r.is_finite()) {
                return Err("--rate must be positive".into());
            }
        }
        if self.workload == Workload::Pairs && self.connections < 2 {
            return Err("--workload pairs needs at least 2 connections".into());
        }
        if self.key_prefix.is_empty()
            || self
                .key_prefix
                .bytes()
                .any(|b| b <= b' ' || b == b'/' || b == 0x7f)
        {
            return Err(
                "--key-prefix must be non-empty, without spaces, control characters or '/'".into(),
            );
        }
        if self.key_prefix.len() + 20 > 250 {
            return Err("--key-prefix is too long for a 250-byte queue name".into());
        }
        if self.queues > u64::from(u32::MAX) {
            return Err("--queues is too large".into());
        }
        if self.reconnect_every == Some(0) {
            return Err("--reconnect-every must be at least 1".into());
        }
        if self.requests == Some(0) {
            return Err("--requests must be at least 1".into());
        }
        Ok(())
    }

    pub fn measure_duration(&self) -> Option<Duration> {
        match (self.duration, self.requests) {
            (Some(d), _) => Some(d),
            (None, Some(_)) => None,
            (None, None) => Some(Duration::from_secs(10)),
        }
    }

    /// Whether message bodies carry the traceable header.
    pub fn traced(&self) -> bool {
        self.verify || self.workload == Workload::Pairs
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("10s").unwrap(), Duration::from_secs(10));
        assert_eq!(parse_duration("3").unwrap(), Duration::from_secs(3));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("100us").unwrap(), Duration::from_micros(100));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
        assert!(parse_duration("ten").is_err());
        assert!(parse_duration("5y").is_err());
    }

    #[test]
    fn flags_parse_and_validate() {
        let a = Args::try_parse_from([
            "mcq-loadgen",
            "--server",
            "a:1",
            "--server",
            "b:2",
            "--rate",
            "1000",
            "--value-size",
            "64..1024",
            "--key-dist",
            "zipf:1.1",
            "--workload",
            "pairs",
            "--requests",
            "10",
        ])
        .unwrap();
        assert_eq!(a.servers, vec!["a:1", "b:2"]);
        assert_eq!(a.value_size, SizeDist::Range(64, 1024));
        assert_eq!(a.workload, Workload::Pairs);
        assert!(a.validate().is_ok());
        assert_eq!(a.measure_duration(), None);
        assert!(a.traced());

        let d = Args::try_parse_from(["mcq-loadgen"]).unwrap();
        assert_eq!(d.servers, vec!["127.0.0.1:22201"]);
        assert!(!d.reliable);
        let r = Args::try_parse_from(["x", "--reliable", "--get-wait", "500ms"]).unwrap();
        assert!(r.reliable && r.validate().is_ok());
        assert_eq!(d.measure_duration(), Some(Duration::from_secs(10)));

        assert!(Args::try_parse_from(["x", "--duration", "1s", "--requests", "5"]).is_err());
        let bad = Args::try_parse_from(["x", "--set-ratio", "1.5"]).unwrap();
        assert!(bad.validate().is_err());
        let bad = Args::try_parse_from(["x", "--key-prefix", "a b"]).unwrap();
        assert!(bad.validate().is_err());
        assert_eq!(d.reconnect_every, None);
        let churn = Args::try_parse_from(["x", "--reconnect-every", "5"]).unwrap();
        assert_eq!(churn.reconnect_every, Some(5));
        assert!(churn.validate().is_ok());
        let bad = Args::try_parse_from(["x", "--reconnect-every", "0"]).unwrap();
        assert!(bad.validate().is_err());
    }
}
