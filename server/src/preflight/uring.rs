//! The io_uring check: a ring of mcqd's own, set up, entered and probed
//! with raw system calls, as glommio will use io_uring.
//!
//! # Why raw system calls
//! glommio's own probe (liburing's `io_uring_get_probe`) only says that
//! it failed. mcqd needs the errno of the very call that failed, to tell
//! a kernel without io_uring (ENOSYS) from one that refuses it (EPERM),
//! and then who refused: see [`refusal`].

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use super::{Passed, Problem, Refusal};

/// The operations glommio requires of io_uring: its `GLOMMIO_URING_OPS`
/// (vendor/glommio/src/sys/uring.rs), with their opcode numbers.
const REQUIRED_OPS: &[(u8, &str)] = &[
    (0, "IORING_OP_NOP"),
    (1, "IORING_OP_READV"),
    (2, "IORING_OP_WRITEV"),
    (3, "IORING_OP_FSYNC"),
    (4, "IORING_OP_READ_FIXED"),
    (5, "IORING_OP_WRITE_FIXED"),
    (6, "IORING_OP_POLL_ADD"),
    (7, "IORING_OP_POLL_REMOVE"),
    (9, "IORING_OP_SENDMSG"),
    (10, "IORING_OP_RECVMSG"),
    (11, "IORING_OP_TIMEOUT"),
    (12, "IORING_OP_TIMEOUT_REMOVE"),
    (13, "IORING_OP_ACCEPT"),
    (15, "IORING_OP_LINK_TIMEOUT"),
    (16, "IORING_OP_CONNECT"),
    (17, "IORING_OP_FALLOCATE"),
    (18, "IORING_OP_OPENAT"),
    (19, "IORING_OP_CLOSE"),
    (21, "IORING_OP_STATX"),
    (22, "IORING_OP_READ"),
    (23, "IORING_OP_WRITE"),
    (26, "IORING_OP_SEND"),
    (27, "IORING_OP_RECV"),
];

const IORING_REGISTER_PROBE: libc::c_uint = 8;
const IO_URING_OP_SUPPORTED: u16 = 1;
/// Opcodes a probe asks about (liburing asks for 256).
const PROBE_OPS: usize = 256;

pub(super) const CAP_IPC_LOCK: u32 = 14;
const CAP_SYS_ADMIN: u32 = 21;

/// What the system says about who may use io_uring.
#[derive(Debug, Default, Clone)]
pub struct Host {
    /// `kernel.io_uring_disabled`, absent before Linux 6.6.
    pub io_uring_disabled: Option<u32>,
    /// `kernel.io_uring_group`; negative is unset.
    pub io_uring_group: Option<i64>,
    pub uid: u32,
    /// The effective gid and supplementary groups.
    pub groups: Vec<u32>,
    /// CAP_SYS_ADMIN is effective.
    pub sys_admin: bool,
    /// A seccomp filter is on (`Seccomp: 2` in /proc/self/status).
    pub seccomp_filter: bool,
}

/// Who refused io_uring, given what the system says.
pub fn refusal(host: &Host) -> Refusal {
    match host.io_uring_disabled {
        Some(2) => return Refusal::DisabledForAll,
        Some(1) if !host.sys_admin => {
            let group = host
                .io_uring_group
                .and_then(|g| u32::try_from(g).ok())
                .filter(|&g| g != u32::MAX);
            if !group.is_some_and(|g| host.groups.contains(&g)) {
                return Refusal::NotInGroup {
                    uid: host.uid,
                    group,
                };
            }
        }
        _ => {}
    }
    if host.seccomp_filter {
        Refusal::Seccomp
    } else {
        Refusal::SecurityModule {
            disabled: host.io_uring_disabled,
        }
    }
}

/// io_uring as glommio will use it: a ring can be set up, entered and
/// probed, and it has every operation glommio requires.
pub fn check() -> Result<Passed, Problem> {
    let host = Host::read();
    let kernel = kernel_release();
    let fail = |syscall, error: io::Error| match error.raw_os_error() {
        Some(libc::ENOSYS) => Problem::Missing {
            syscall,
            seccomp: host.seccomp_filter,
            kernel: kernel.clone(),
        },
        Some(libc::EPERM) => Problem::Refused {
            syscall,
            why: refusal(&host),
        },
        _ => Problem::Failed {
            syscall,
            error,
            memlock: super::memlock::limit(),
        },
    };
    let ring = setup_ring().map_err(|e| fail("io_uring_setup", e))?;
    enter_ring(&ring).map_err(|e| fail("io_uring_enter", e))?;
    let supported = match probe_ring(&ring) {
        Ok(ops) => ops,
        // IORING_REGISTER_PROBE came with Linux 5.6.
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
            return Err(Problem::Unsupported {
                missing: vec!["IORING_REGISTER_PROBE"],
                kernel,
            })
        }
        Err(e) => return Err(fail("io_uring_register", e)),
    };
    let missing = missing_ops(&supported);
    if !missing.is_empty() {
        return Err(Problem::Unsupported { missing, kernel });
    }
    Ok(Passed::found(format!(
        "a ring was set up, entered and probed: all {} operations glommio needs are there (Linux {kernel})",
        REQUIRED_OPS.len()
    )))
}

/// The operations of [`REQUIRED_OPS`] not in `supported` (indexed by
/// opcode).
fn missing_ops(supported: &[bool]) -> Vec<&'static str> {
    REQUIRED_OPS
        .iter()
        .filter(|(op, _)| !supported.get(usize::from(*op)).copied().unwrap_or(false))
        .map(|(_, name)| *name)
        .collect()
}

/// A ring of 4 entries, set up as glommio sets up its own (no flags).
fn setup_ring() -> io::Result<OwnedFd> {
    // struct io_uring_params: 120 bytes, zero in, filled by the kernel.
    let mut params = [0u32; 30];
    // SAFETY: io_uring_setup writes at most sizeof(io_uring_params) bytes
    // into `params`; the descriptor it returns is ours.
    let fd = unsafe { libc::syscall(libc::SYS_io_uring_setup, 4u32, params.as_mut_ptr()) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a descriptor io_uring_setup just opened, owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// io_uring_enter with nothing to submit or wait for: only whether the
/// call is allowed.
fn enter_ring(ring: &OwnedFd) -> io::Result<()> {
    // SAFETY: no submissions, no waiting, no signal mask.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_io_uring_enter,
            ring.as_raw_fd(),
            0u32,
            0u32,
            0u32,
            std::ptr::null::<libc::c_void>(),
            0usize,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// IORING_REGISTER_PROBE: which opcodes the kernel supports, by opcode.
fn probe_ring(ring: &OwnedFd) -> io::Result<Vec<bool>> {
    // struct io_uring_probe: a 16-byte header (last_op, ops_len, …) and
    // 8 bytes per op (op, resv, u16 flags, …); zeroed, as the kernel asks.
    let mut probe = vec![0u64; (16 + 8 * PROBE_OPS) / 8];
    // SAFETY: the buffer holds the header and PROBE_OPS entries.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_io_uring_register,
            ring.as_raw_fd(),
            IORING_REGISTER_PROBE,
            probe.as_mut_ptr(),
            PROBE_OPS as u32,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    let bytes: Vec<u8> = probe.iter().flat_map(|w| w.to_ne_bytes()).collect();
    let ops_len = usize::from(bytes[1]).min(PROBE_OPS);
    Ok((0..ops_len)
        .map(|op| {
            let at = 16 + 8 * op + 2;
            u16::from_ne_bytes([bytes[at], bytes[at + 1]]) & IO_URING_OP_SUPPORTED != 0
        })
        .collect())
}

/// `uname -r`.
fn kernel_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "(unknown)".into())
}

impl Host {
    /// What this process and the system say now.
    pub fn read() -> Host {
        let sysctl = |name: &str| -> Option<i64> {
            std::fs::read_to_string(format!("/proc/sys/kernel/{name}"))
                .ok()?
                .trim()
                .parse()
                .ok()
        };
        let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        // SAFETY: plain getters; getgroups fills at most `n` entries.
        let (uid, gid) = unsafe { (libc::geteuid(), libc::getegid()) };
        let mut groups = vec![0 as libc::gid_t; 1024];
        let n = unsafe { libc::getgroups(groups.len() as i32, groups.as_mut_ptr()) };
        groups.truncate(usize::try_from(n).unwrap_or(0));
        groups.push(gid);
        Host {
            io_uring_disabled: sysctl("io_uring_disabled").and_then(|v| u32::try_from(v).ok()),
            io_uring_group: sysctl("io_uring_group"),
            uid,
            groups,
            sys_admin: capability_in(&status, CAP_SYS_ADMIN),
            seccomp_filter: status_field(&status, "Seccomp") == Some("2"),
        }
    }
}

fn status_field<'a>(status: &'a str, name: &str) -> Option<&'a str> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
        .map(str::trim)
}

/// Whether `cap` is in the effective set of a /proc/<pid>/status text.
fn capability_in(status: &str, cap: u32) -> bool {
    status_field(status, "CapEff")
        .and_then(|hex| u64::from_str_radix(hex, 16).ok())
        .is_some_and(|set| set & (1 << cap) != 0)
}

pub(super) fn has_capability(cap: u32) -> bool {
    capability_in(
        &std::fs::read_to_string("/proc/self/status").unwrap_or_default(),
        cap,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host() -> Host {
        Host {
            io_uring_disabled: Some(0),
            io_uring_group: Some(-1),
            uid: 1000,
            groups: vec![1000, 27],
            sys_admin: false,
            seccomp_filter: false,
        }
    }

    #[test]
    fn a_refusal_names_the_sysctl_before_a_seccomp_filter() {
        let all_off = Host {
            io_uring_disabled: Some(2),
            sys_admin: true,
            seccomp_filter: true,
            ..host()
        };
        assert_eq!(refusal(&all_off), Refusal::DisabledForAll);

        let group_only = Host {
            io_uring_disabled: Some(1),
            io_uring_group: Some(990),
            seccomp_filter: true,
            ..host()
        };
        assert_eq!(
            refusal(&group_only),
            Refusal::NotInGroup {
                uid: 1000,
                group: Some(990)
            }
        );
        let unset = Host {
            io_uring_disabled: Some(1),
            ..host()
        };
        assert_eq!(
            refusal(&unset),
            Refusal::NotInGroup {
                uid: 1000,
                group: None
            }
        );
    }

    #[test]
    fn a_refusal_the_sysctl_allows_is_seccomp_or_a_security_module() {
        let in_group = Host {
            io_uring_disabled: Some(1),
            io_uring_group: Some(27),
            ..host()
        };
        assert_eq!(
            refusal(&in_group),
            Refusal::SecurityModule { disabled: Some(1) }
        );
        let admin = Host {
            io_uring_disabled: Some(1),
            sys_admin: true,
            seccomp_filter: true,
            ..host()
        };
        assert_eq!(refusal(&admin), Refusal::Seccomp);
        let old_kernel = Host {
            io_uring_disabled: None,
            io_uring_group: None,
            ..host()
        };
        assert_eq!(
            refusal(&old_kernel),
            Refusal::SecurityModule { disabled: None }
        );
    }

    #[test]
    fn missing_operations_are_named() {
        let mut supported = vec![true; 40];
        supported[26] = false;
        assert_eq!(missing_ops(&supported), ["IORING_OP_SEND"]);
        assert_eq!(missing_ops(&supported[..27]).len(), 2, "RECV past the end");
        assert!(missing_ops(&[true; 40]).is_empty());
    }

    #[test]
    fn capabilities_and_seccomp_are_read_from_status() {
        let status = "Name:\tmcqd\nCapEff:\t0000000000204000\nSeccomp:\t2\n";
        assert!(capability_in(status, CAP_SYS_ADMIN));
        assert!(capability_in(status, CAP_IPC_LOCK));
        assert!(!capability_in(status, 0));
        assert_eq!(status_field(status, "Seccomp"), Some("2"));
        assert!(!capability_in("CapEff:\t0000000000000000\n", CAP_SYS_ADMIN));
    }
}
