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
