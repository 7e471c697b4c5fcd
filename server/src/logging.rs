//! Log lines on stderr, where systemd's journal picks them up. A level is a
//! number so that `-v` and `-vv` map straight onto it; no logging framework
//! is worth its weight for a server that logs a few lines an hour.

use std::sync::atomic::{AtomicU8, Ordering};

static VERBOSITY: AtomicU8 = AtomicU8::new(0);

/// 0: warnings and lifecycle events; 1 (`-v`): connections and recovery
/// details; 2 (`-vv`): every request.
pub fn set_verbosity(level: u8) {
    VERBOSITY.store(level, Ordering::Relaxed);
}

pub fn enabled(level: u8) -> bool {
    VERBOSITY.load(Ordering::Relaxed) >= level
}

/// `log!(level, "format", args…)`: one line on stderr, prefixed `mcqd:`.
#[macro_export]
macro_rules! log {
    ($level:expr, $($arg:tt)*) => {
        if $crate::logging::enabled($level) {
            eprintln!("mcqd: {}", format_args!($($arg)*));
        }
    };
}

/// Makes any panic, on any thread, end the process: it logs
/// `mcqd: panic in <thread>: <message> (at <file:line>)` (and a backtrace
/// when `RUST_BACKTRACE` asks for one) and aborts.
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
        crate::log!(
            0,
            "panic in {}: {message}{at}",
            thread.name().unwrap_or("an unnamed thread")
        );
        let backtrace = std::backtrace::Backtrace::capture();
        if backtrace.status() == std::backtrace::BacktraceStatus::Captured {
            eprintln!("{backtrace}");
        }
        std::process::abort();
    }));
}
