//! Start-up checks, run before any executor exists, and `mcqd check`.
//!
//! # Why check before glommio does
//! glommio learns that io_uring is missing or refused deep inside an
//! executor's construction, where it panics ("Failed to register a probe …
//! kernel should be at least 5.8") or leaves the server waiting forever
//! for an executor that never started. Yet containers and hardened hosts
//! refuse io_uring routinely (Docker's and containerd's default seccomp
//! profiles, `kernel.io_uring_disabled`), lock little memory, and offer
//! tmpfs or overlay file systems where O_DIRECT is not what the log
//! relies on. Each of those has a plain cause and a plain fix, so mcqd
//! tries what it will need the way it will need it (a small ring of its
//! own, the three io_uring system calls, the operations glommio requires,
//! an O_DIRECT write in the data directory) and says what stands in the
//! way in one line, with a documented exit status (sysexits(3)).
//!
//! # Why refusals are read back from the system
//! EPERM alone does not say who refused: a seccomp filter, the
//! `kernel.io_uring_disabled` sysctl (and its `kernel.io_uring_group`), or
//! a security module each need another fix. The sysctls, this process's
//! groups and capabilities and its seccomp mode say which one it was
//! ([`refusal`], a pure function of them).

pub mod check;
pub mod data_dir;
pub mod memlock;
pub mod nofile;
pub mod uring;

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

pub use memlock::GLOMMIO_MIN_MEMLOCK;
pub use uring::{refusal, Host};

/// Exit status when io_uring cannot be used as mcqd needs it (missing,
/// refused, lacking operations, or too little locked memory): EX_OSERR.
pub const EXIT_IO_URING: i32 = 71;
/// Exit status when the data directory cannot hold the log (no real
/// O_DIRECT there, or no file can be written): EX_CANTCREAT.
pub const EXIT_DATA_DIR: i32 = 73;

/// mcqd's seccomp profile, relative to the repository, and the script
/// that makes it from a container runtime's default profile.
pub const SECCOMP_PROFILE: &str = "deploy/seccomp/mcqd.json";
pub const PROFILE_MAKER: &str = "deploy/seccomp/mcqd-profile";

/// RLIM_INFINITY as the u64 the checks compare in.
#[allow(clippy::unnecessary_cast)] // rlim_t is u32 on some targets
const UNLIMITED: u64 = libc::RLIM_INFINITY as u64;

/// What stops mcqd from starting. Its `Display` is the whole error line:
/// the cause, then the fix.
#[derive(Debug)]
pub enum Problem {
    /// A system call answered ENOSYS.
    Missing {
        syscall: &'static str,
        seccomp: bool,
        kernel: String,
    },
    /// A system call answered EPERM, and why.
    Refused { syscall: &'static str, why: Refusal },
    /// The kernel lacks operations glommio requires.
    Unsupported {
        missing: Vec<&'static str>,
        kernel: String,
    },
    /// Any other failure of an io_uring system call.
    Failed {
        syscall: &'static str,
        error: io::Error,
        memlock: u64,
    },
    /// RLIMIT_MEMLOCK below [`GLOMMIO_MIN_MEMLOCK`].
    Memlock { limit: u64 },
    /// RLIMIT_NOFILE's hard limit below what mcqd needs to serve at all.
    OpenFiles {
        limit: nofile::Limit,
        needs: nofile::Needs,
    },
    /// The data directory is on a file system held in memory.
    InMemory { dir: PathBuf, fs: &'static str },
    /// An O_DIRECT open or write in the data directory failed with EINVAL.
    NoDirect {
        dir: PathBuf,
        fs: String,
        error: io::Error,
    },
    /// No probe file could be made, written or removed there.
    Unwritable {
        dir: PathBuf,
        what: &'static str,
        error: io::Error,
    },
}

/// Who refused io_uring (EPERM).
#[derive(Debug, PartialEq, Eq)]
pub enum Refusal {
    /// `kernel.io_uring_disabled = 2`.
    DisabledForAll,
    /// `kernel.io_uring_disabled = 1`, and this process is neither
    /// privileged nor in `kernel.io_uring_group` (`None`: unset, -1).
    NotInGroup { uid: u32, group: Option<u32> },
    /// A seccomp filter (a container runtime's default profile).
    Seccomp,
    /// Nothing above: a security module (SELinux, AppArmor).
    SecurityModule { disabled: Option<u32> },
}

impl Problem {
    /// The process's exit status for this problem.
    pub fn status(&self) -> i32 {
        match self {
            Problem::InMemory { .. } | Problem::NoDirect { .. } | Problem::Unwritable { .. } => {
                EXIT_DATA_DIR
            }
            _ => EXIT_IO_URING,
        }
    }
}

const RAISE_MEMLOCK: &str = "raise it: `--ulimit memlock=-1:-1` for docker or podman run, \
    `LimitMEMLOCK=infinity` in a systemd unit, `ulimit -l unlimited` in a shell";

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::Missing {
                syscall,
                seccomp: true,
                kernel,
            } => write!(
                f,
                "io_uring is not available: {syscall} failed with ENOSYS under a seccomp filter \
                 (a container runtime whose profile does not know io_uring answers so, as might \
                 Linux {kernel} itself); run mcqd under a profile that allows io_uring, which \
                 {PROFILE_MAKER} makes (`--security-opt seccomp={SECCOMP_PROFILE}`), on Linux \
                 5.8 or newer with io_uring"
            ),
            Problem::Missing { syscall, kernel, .. } => write!(
                f,
                "io_uring is not available: {syscall} failed with ENOSYS: Linux {kernel} has no \
                 io_uring (older than 5.1, built without CONFIG_IO_URING, or a sandbox such as \
                 gVisor); mcqd needs Linux 5.8 or newer with io_uring"
            ),
            Problem::Refused { syscall, why } => {
                write!(f, "io_uring is refused: {syscall} failed with EPERM ")?;
                match why {
                    Refusal::DisabledForAll => write!(
                        f,
                        "because kernel.io_uring_disabled is 2 (io_uring off for every process); \
                         allow it with `sysctl -w kernel.io_uring_disabled=0` (or 1 and \
                         kernel.io_uring_group set to a group of mcqd's user), kept in \
                         /etc/sysctl.d/"
                    ),
                    Refusal::NotInGroup { uid, group: Some(gid) } => write!(
                        f,
                        "because kernel.io_uring_disabled is 1 and mcqd's user (uid {uid}) is not \
                         in kernel.io_uring_group (gid {gid}) nor has CAP_SYS_ADMIN; add the user \
                         to group {gid}, or allow io_uring to all with \
                         `sysctl -w kernel.io_uring_disabled=0`"
                    ),
                    Refusal::NotInGroup { uid, group: None } => write!(
                        f,
                        "because kernel.io_uring_disabled is 1 and kernel.io_uring_group is unset: \
                         only processes with CAP_SYS_ADMIN may use io_uring, and mcqd's user \
                         (uid {uid}) has not; set `sysctl -w kernel.io_uring_group=<gid>` to a \
                         group of that user, or `sysctl -w kernel.io_uring_disabled=0`"
                    ),
                    Refusal::Seccomp => write!(
                        f,
                        "under a seccomp filter (container runtimes' default profiles block \
                         io_uring); run mcqd under your runtime's default profile plus io_uring, \
                         which {PROFILE_MAKER} makes: `docker run --security-opt \
                         seccomp={SECCOMP_PROFILE}`, the same for podman, or in Kubernetes \
                         `seccompProfile: {{type: Localhost, localhostProfile: mcqd.json}}`"
                    ),
                    Refusal::SecurityModule { disabled } => write!(
                        f,
                        "with kernel.io_uring_disabled {} and no seccomp filter: a security \
                         module (SELinux, AppArmor) refuses it; allow io_uring to mcqd in its \
                         policy",
                        disabled.map_or("absent".to_string(), |d| format!("at {d}"))
                    ),
                }
            }
            Problem::Unsupported { missing, kernel } => write!(
                f,
                "io_uring lacks what mcqd needs on Linux {kernel}: {}; mcqd needs Linux 5.8 or newer",
                missing.join(", ")
            ),
            Problem::Failed {
                syscall,
                error,
                memlock,
            } if error.raw_os_error() == Some(libc::ENOMEM) => write!(
                f,
                "{syscall} failed: {error}: before Linux 5.12 io_uring's rings count against the \
                 locked-memory limit (RLIMIT_MEMLOCK, {}); {RAISE_MEMLOCK}",
                bytes(*memlock)
            ),
            Problem::Failed { syscall, error, .. }
                if matches!(error.raw_os_error(), Some(libc::EMFILE | libc::ENFILE)) =>
            {
                write!(
                    f,
                    "{syscall} failed: {error}: raise the open-file limit (RLIMIT_NOFILE): \
                     `--ulimit nofile=65536:65536` for docker or podman run, `LimitNOFILE=` in a \
                     systemd unit, `ulimit -n` in a shell"
                )
            }
            Problem::Failed { syscall, error, .. } => write!(f, "{syscall} failed: {error}"),
            Problem::Memlock { limit } => write!(
                f,
                "the locked-memory limit (RLIMIT_MEMLOCK) is {}, below the {} glommio needs to \
                 start an executor; {RAISE_MEMLOCK}",
                bytes(*limit),
                bytes(GLOMMIO_MIN_MEMLOCK)
            ),
            Problem::OpenFiles { limit, needs } => write!(
                f,
                "the hard open-file limit (RLIMIT_NOFILE) is {}, below the {} descriptors mcqd \
                 needs to serve even one connection ({}), and {} for -c {}; {}",
                limit.hard,
                needs.to_run(),
                needs.breakdown(),
                needs.with_connections(),
                needs.connections,
                nofile::raise_it(needs.suggested())
            ),
            Problem::InMemory { dir, fs } => write!(
                f,
                "the data directory {} is on {fs}, where O_DIRECT writes reach only memory: \
                 nothing survives a reboot and --sync promises nothing; put it (-H) on a \
                 disk-backed file system such as ext4 or xfs (in a container: a volume, not \
                 --tmpfs)",
                dir.display()
            ),
            Problem::NoDirect { dir, fs, error } => write!(
                f,
                "the data directory {} is on {fs}, which refuses O_DIRECT ({error}); put it (-H) \
                 on a file system that takes O_DIRECT, such as ext4 or xfs (in a container: \
                 mount a volume there)",
                dir.display()
            ),
            Problem::Unwritable { dir, what, error } => write!(
                f,
                "cannot {what} the data directory {}: {error}; it must be \
                 writable by mcqd's user, with some free space",
                dir.display()
            ),
        }
    }
}

impl std::error::Error for Problem {}

/// A check that passed: what it found, and what might still hurt.
#[derive(Debug)]
pub struct Passed {
    pub found: String,
    pub warning: Option<String>,
}

impl Passed {
    fn found(found: String) -> Passed {
        Passed {
            found,
            warning: None,
        }
    }
}

/// The checks as the server makes them before its executors start, in
/// order, stopping at the first problem; the warnings of those that passed.
pub fn before_start(
    dir: &Path,
    executors: usize,
    io_memory: usize,
) -> Result<Vec<String>, Problem> {
    let passed = [
        uring::check()?,
        memlock::check(executors, io_memory)?,
        data_dir::check(dir)?,
    ];
    Ok(passed.into_iter().filter_map(|p| p.warning).collect())
}

/// The exit status for a start-up error: a [`Problem`]'s, else 1.
pub fn exit_status(error: &io::Error) -> i32 {
    error
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<Problem>())
        .map_or(1, Problem::status)
}

/// Bytes for people: `64 KiB`, `8 MiB`, `unlimited`.
fn bytes(n: u64) -> String {
    if n == UNLIMITED {
        "unlimited".into()
    } else if n >= 1 << 30 && n.is_multiple_of(1 << 30) {
        format!("{} GiB", n >> 30)
    } else if n >= 1 << 20 && n.is_multiple_of(1 << 20) {
        format!("{} MiB", n >> 20)
    } else if n >= 1 << 10 && n.is_multiple_of(1 << 10) {
        format!("{} KiB", n >> 10)
    } else {
        format!("{n} bytes")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_problem_names_its_cause_fix_and_status() {
        let refused = |why| Problem::Refused {
            syscall: "io_uring_setup",
            why,
        };
        let cases: Vec<(Problem, i32, &[&str])> = vec![
            (
                refused(Refusal::DisabledForAll),
                71,
                &[
                    "EPERM",
                    "kernel.io_uring_disabled is 2",
                    "sysctl -w kernel.io_uring_disabled=0",
                ],
            ),
            (
                refused(Refusal::NotInGroup {
                    uid: 1000,
                    group: Some(990),
                }),
                71,
                &["uid 1000", "gid 990", "add the user to group 990"],
            ),
            (
                refused(Refusal::NotInGroup {
                    uid: 1000,
                    group: None,
                }),
                71,
                &[
                    "kernel.io_uring_group is unset",
                    "kernel.io_uring_group=<gid>",
                ],
            ),
            (
                refused(Refusal::Seccomp),
                71,
                &[
                    "seccomp",
                    "--security-opt seccomp=deploy/seccomp/mcqd.json",
                    "Localhost",
                ],
            ),
            (
                refused(Refusal::SecurityModule { disabled: Some(0) }),
                71,
                &["at 0", "SELinux"],
            ),
            (
                Problem::Missing {
                    syscall: "io_uring_setup",
                    seccomp: false,
                    kernel: "4.19.0".into(),
                },
                71,
                &["ENOSYS", "Linux 4.19.0 has no io_uring", "5.8"],
            ),
            (
                Problem::Unsupported {
                    missing: vec!["IORING_OP_SEND", "IORING_OP_RECV"],
                    kernel: "5.4.0".into(),
                },
                71,
                &["IORING_OP_SEND, IORING_OP_RECV", "5.4.0", "5.8"],
            ),
            (
                Problem::Failed {
                    syscall: "io_uring_setup",
                    error: io::Error::from_raw_os_error(libc::ENOMEM),
                    memlock: 64 << 10,
                },
                71,
                &["64 KiB", "5.12", "--ulimit memlock=-1:-1"],
            ),
            (
                Problem::Failed {
                    syscall: "io_uring_setup",
                    error: io::Error::from_raw_os_error(libc::EMFILE),
                    memlock: 64 << 10,
                },
                71,
                &["Too many open files", "RLIMIT_NOFILE", "--ulimit nofile="],
            ),
            (
                Problem::Memlock { limit: 64 << 10 },
                71,
                &["64 KiB", "512 KiB", "LimitMEMLOCK=infinity"],
            ),
            (
                Problem::InMemory {
                    dir: "/dev/shm/q".into(),
                    fs: "tmpfs",
                },
                73,
                &["/dev/shm/q is on tmpfs", "a volume"],
            ),
            (
                Problem::NoDirect {
                    dir: "/data".into(),
                    fs: "overlayfs".into(),
                    error: io::Error::from_raw_os_error(libc::EINVAL),
                },
                73,
                &["/data is on overlayfs, which refuses O_DIRECT", "ext4"],
            ),
        ];
        for (problem, status, words) in cases {
            let line = problem.to_string();
            assert_eq!(problem.status(), status, "{line}");
            assert!(!line.contains('\n'), "{line}");
            for word in words {
                assert!(line.contains(word), "want {word:?} in {line:?}");
            }
            let error = io::Error::other(problem);
            assert_eq!(exit_status(&error), status);
            assert_eq!(error.to_string(), line);
        }
        assert_eq!(exit_status(&io::Error::other("anything else")), 1);
    }

    #[test]
    fn sizes_read_as_people_say_them() {
        assert_eq!(bytes(64 << 10), "64 KiB");
        assert_eq!(bytes(8 << 20), "8 MiB");
        assert_eq!(bytes(UNLIMITED), "unlimited");
        assert_eq!(bytes(1000), "1000 bytes");
    }
}
