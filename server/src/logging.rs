//! Log lines on stderr, where systemd's journal (or a daemon's init script)
//! picks them up: `2026-11-25T16:32:27.123Z INFO  listening on …`, one line
//! each, RFC 3339 in UTC and a level.
//!
//! # Why the `log` facade with a backend of our own
//! mcqd logs through the `log` crate's macros, the facade glommio already
//! logs through, so glommio's warnings reach the same stream in the same
//! format, and the level is one atomic the macros check before formatting
//! anything: `verbosity <n>` changes it at runtime with no lock. The backend
//! is the few lines below, with `humantime` writing the timestamp; a full
//! logger such as `env_logger` would bring a date library many times our
//! size and environment-variable filters mcqd does not want (its level is a
//! flag and a command).
//!
//! # Levels
//! `ERROR` and `WARN` always, `INFO` (start, stop, reloads) at the default
//! verbosity 0; `DEBUG` at 1 (`-v`: connections, recovery details, other
//! crates' warnings); `TRACE` at 2 (`-vv`: every rejected request).

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Instant, SystemTime};

use log::{Level, LevelFilter, Log, Metadata, Record};

struct Stderr;

/// Records of other crates (glommio's) show from `-v` on, and only their
/// errors and warnings: they are written for glommio's developers, not for
/// an operator.
fn shown(metadata: &Metadata) -> bool {
    let target = metadata.target();
    metadata.level() <= log::max_level()
        && (target == "mcqd"
            || target.starts_with("mcqd::")
            || (log::max_level() >= LevelFilter::Debug && metadata.level() <= Level::Warn))
}

impl Log for Stderr {
    fn enabled(&self, metadata: &Metadata) -> bool {
        shown(metadata)
    }

    fn log(&self, record: &Record) {
        if self.enabled(record.metadata()) {
            write_line(record.level(), record.args());
        }
    }

    fn flush(&self) {}
}

/// One line, written with one `write` so that lines of several executors
/// never interleave.
fn write_line(level: Level, message: &std::fmt::Arguments) {
    let line = format!(
        "{} {level:<5} {message}\n",
        humantime::format_rfc3339_millis(SystemTime::now())
    );
    let _ = std::io::stderr().lock().write_all(line.as_bytes());
}

/// Installs the logger (once per process; later calls only set the level)
/// and the panic hook.
pub fn init(verbosity: u32) {
    static LOGGER: OnceLock<()> = OnceLock::new();
    LOGGER.get_or_init(|| {
        // Fails only if another logger is installed, and then that one logs.
        let _ = log::set_logger(&Stderr);
    });
    set_verbosity(verbosity);
    install_panic_hook();
}

/// 0: warnings and lifecycle events; 1 (`-v`): connections and recovery
/// details; 2 (`-vv`) and up: rejected requests too.
pub fn set_verbosity(level: u32) {
    log::set_max_level(match level {
        0 => LevelFilter::Info,
        1 => LevelFilter::Debug,
        _ => LevelFilter::Trace,
    });
}

/// At most this many bytes of a client's request go into a log line.
pub const MAX_LOGGED_REQUEST: usize = 200;

/// A client's bytes fit for a log line: the first line of `bytes`, at most
/// [`MAX_LOGGED_REQUEST`] of them, printable ASCII as it is and anything
/// else (`\r`, `\n`, a binary queue name) escaped as `\xNN`, with `…` when
/// cut short.
pub fn escape(bytes: &[u8]) -> String {
    let line = match bytes.iter().position(|&b| b == b'\n') {
        Some(end) => &bytes[..end],
        None => bytes,
    };
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let shown = &line[..line.len().min(MAX_LOGGED_REQUEST)];
    let mut out = String::with_capacity(shown.len() + 8);
    for &b in shown {
        match b {
            b'\\' => out.push_str("\\\\"),
            0x20..=0x7e => out.push(b as char),
            _ => out.push_str(&format!("\\x{b:02x}")),
        }
    }
    if shown.len() < line.len() {
        out.push('…');
    }
    out
}

/// Lets an event that may come thousands of times a second (a connection
/// refused at `-c`) be logged at most once per `every`, with how many there
/// were since the last line.
pub struct Throttle {
    every_ms: u64,
    start: OnceLock<Instant>,
    /// Milliseconds after `start` of the last line, plus one (0: none yet).
    last: AtomicU64,
    count: AtomicU64,
}

impl Throttle {
    pub const fn new(every_ms: u64) -> Throttle {
        Throttle {
            every_ms,
            start: OnceLock::new(),
            last: AtomicU64::new(0),
            count: AtomicU64::new(0),
        }
    }

    /// Counts one event; `Some(n)` when it is time for a line about the `n`
    /// events since the last one.
    pub fn hit(&self) -> Option<u64> {
        self.count.fetch_add(1, Ordering::Relaxed);
        let now = self.start.get_or_init(Instant::now).elapsed().as_millis() as u64 + 1;
        let last = self.last.load(Ordering::Relaxed);
        if last != 0 && now < last + self.every_ms {
            return None;
        }
        // One thread wins the line; the others' events count towards it.
        self.last
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .ok()?;
        Some(self.count.swap(0, Ordering::Relaxed))
    }
}

/// Makes any panic, on any thread, end the process: it logs
/// `<time> ERROR panic in <thread>: <message> (at <file:line>)` (and a
/// backtrace when `RUST_BACKTRACE` asks for one) and aborts.
///
/// Why abort: a panic unwinds only its own thread. A panicking executor
/// would leave the process running with that executor's shards
/// unreachable, its listener still taking a share of the connections, and
/// the other executors waiting for it at shutdown. Ending the process is
/// the honest failure: the supervisor restarts it, and recovery replays
/// what was acknowledged.
pub fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        let thread = std::thread::current();
        let message = info
            .payload()
            .downcast_ref::<&str>()
            .copied()
            .or_else(|| info.payload().downcast_ref::<String>().map(String::as_str))
            .unwrap_or("(no message)");
        let at = info
            .location()
            .map(|l| format!(" (at {}:{})", l.file(), l.line()))
            .unwrap_or_default();
        // Written directly: a panic must be told whatever the level is, and
        // even in a program that installed no logger.
        write_line(
            Level::Error,
            &format_args!(
                "panic in {}: {message}{at}",
                thread.name().unwrap_or("an unnamed thread")
            ),
        );
        let backtrace = std::backtrace::Backtrace::capture();
        if backtrace.status() == std::backtrace::BacktraceStatus::Captured {
            eprintln!("{backtrace}");
        }
        std::process::abort();
    }));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_shows_one_line_printable() {
        assert_eq!(escape(b"set q 0 0 x\r\nbody\r\n"), "set q 0 0 x");
        assert_eq!(escape(b"get \x00\xffq\tz\\"), "get \\x00\\xffq\\x09z\\\\");
        let long = vec![b'a'; 500];
        let shown = escape(&long);
        assert_eq!(shown.len(), MAX_LOGGED_REQUEST + '…'.len_utf8());
        assert!(shown.ends_with('…'));
        assert_eq!(escape(b""), "");
    }

    #[test]
    fn throttle_counts_what_it_held_back() {
        let t = Throttle::new(60_000);
        assert_eq!(t.hit(), Some(1), "the first event is told at once");
        for _ in 0..5 {
            assert_eq!(t.hit(), None);
        }
        let t = Throttle::new(0);
        assert_eq!(t.hit(), Some(1));
        assert_eq!(t.hit(), Some(1), "every event once the period passed");
    }
}
