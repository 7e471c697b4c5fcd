//! Ctrl-C ends a run early with a report instead of losing it.
//!
//! A signal handler may do almost nothing, so it only raises a flag that
//! every thread's loop checks once per wake-up; the threads then stop
//! issuing, finish what is in flight and report as at a normal end.

use std::sync::atomic::{AtomicBool, Ordering};

/// Set by SIGINT/SIGTERM: stop issuing, finish what is in flight, report.
pub static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_interrupt(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::Relaxed);
    // A second signal kills the process the default way.
    // SAFETY: restoring the default disposition is async-signal-safe.
    unsafe {
        libc::signal(libc::SIGINT, libc::SIG_DFL);
        libc::signal(libc::SIGTERM, libc::SIG_DFL);
    }
}

/// Makes Ctrl-C end the run early with a report instead of losing it.
pub fn install_interrupt_handler() {
    let handler = on_interrupt as extern "C" fn(libc::c_int) as libc::sighandler_t;
    // SAFETY: the handler only touches an atomic and calls signal().
    unsafe {
        libc::signal(libc::SIGINT, handler);
        libc::signal(libc::SIGTERM, handler);
    }
}
