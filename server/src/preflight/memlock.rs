//! The locked-memory check: RLIMIT_MEMLOCK against what glommio locks.
//!
//! # Why a failure and a warning
//! glommio refuses to build an executor below a fixed limit, which is a
//! failure; the I/O buffers each executor registers are only skipped
//! when they do not fit, which costs speed, not correctness.

use super::uring::{has_capability, CAP_IPC_LOCK};
use super::{bytes, Passed, Problem, RAISE_MEMLOCK};

/// The RLIMIT_MEMLOCK below which glommio refuses to build an executor
/// (`MIN_MEMLOCK_LIMIT` in `Reactor::new`, vendor/glommio/src/sys/uring.rs),
/// whatever the process's capabilities.
pub const GLOMMIO_MIN_MEMLOCK: u64 = 512 * 1024;

/// The io_uring rings glommio sets up per executor (main, latency, poll),
/// each of which registers the executor's I/O memory.
const RINGS_PER_EXECUTOR: u64 = 3;

/// RLIMIT_MEMLOCK against what glommio needs for `executors`: below
/// [`GLOMMIO_MIN_MEMLOCK`] no executor starts. Above it, every executor
/// registers `io_memory` bytes with each of its rings, charged to the
/// user's locked memory unless the process has CAP_IPC_LOCK (on every
/// kernel; since Linux 5.12 the rings themselves are charged to the memory
/// cgroup instead). A registration that does not fit is skipped by glommio
/// with a debug line, and that executor's disk I/O goes through ordinary
/// buffers: a warning, not a failure.
pub fn check(executors: usize, io_memory: usize) -> Result<Passed, Problem> {
    let limit = limit();
    if limit < GLOMMIO_MIN_MEMLOCK {
        return Err(Problem::Memlock { limit });
    }
    let registered = executors as u64 * RINGS_PER_EXECUTOR * io_memory as u64;
    let capable = has_capability(CAP_IPC_LOCK);
    let warning = (!capable && limit < registered).then(|| {
        format!(
            "the locked-memory limit (RLIMIT_MEMLOCK) is {}, less than the {} that {executors} \
             executors register for I/O ({} in each of {RINGS_PER_EXECUTOR} rings each): \
             some executors will do their disk I/O without registered buffers; {RAISE_MEMLOCK}",
            bytes(limit),
            bytes(registered),
            bytes(io_memory as u64)
        )
    });
    let found = if capable {
        format!("{} (not charged: CAP_IPC_LOCK)", bytes(limit))
    } else {
        format!(
            "{} ({} executors register {})",
            bytes(limit),
            executors,
            bytes(registered)
        )
    };
    Ok(Passed { found, warning })
}

#[allow(clippy::unnecessary_cast)] // rlim_t is u32 on some targets
pub(super) fn limit() -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit fills a local struct.
    if unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut limit) } != 0 {
        return 0;
    }
    limit.rlim_cur as u64
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::preflight::UNLIMITED;

    #[test]
    fn registered_buffers_beyond_the_limit_are_a_warning_not_a_failure() {
        let limit = limit();
        if limit < GLOMMIO_MIN_MEMLOCK {
            assert!(matches!(check(1, 1 << 20), Err(Problem::Memlock { .. })));
            return;
        }
        let fits = check(1, 4096).unwrap();
        assert!(fits.warning.is_none(), "{:?}", fits.warning);
        if limit != UNLIMITED && !has_capability(CAP_IPC_LOCK) {
            let beyond = check(1, limit as usize).unwrap();
            assert!(beyond
                .warning
                .unwrap()
                .contains("without registered buffers"));
        }
    }
}
