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

use std::fmt;
use std::fs::OpenOptions;
use std::io::{self, Write};
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

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

/// The RLIMIT_MEMLOCK below which glommio refuses to build an executor
/// (`MIN_MEMLOCK_LIMIT` in `Reactor::new`, vendor/glommio/src/sys/uring.rs),
/// whatever the process's capabilities.
pub const GLOMMIO_MIN_MEMLOCK: u64 = 512 * 1024;

/// The io_uring rings glommio sets up per executor (main, latency, poll),
/// each of which registers the executor's I/O memory.
const RINGS_PER_EXECUTOR: u64 = 3;

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

const TMPFS_MAGIC: u64 = 0x0102_1994;
const RAMFS_MAGIC: u64 = 0x8584_58f6;
const OVERLAYFS_MAGIC: u64 = 0x794c_7630;

/// RLIM_INFINITY as the u64 the checks compare in.
#[allow(clippy::unnecessary_cast)] // rlim_t is u32 on some targets
const UNLIMITED: u64 = libc::RLIM_INFINITY as u64;

const CAP_IPC_LOCK: u32 = 14;
const CAP_SYS_ADMIN: u32 = 21;

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
            Problem::Failed { syscall, error, .. } => write!(f, "{syscall} failed: {error}"),
            Problem::Memlock { limit } => write!(
                f,
                "the locked-memory limit (RLIMIT_MEMLOCK) is {}, below the {} glommio needs to \
                 start an executor; {RAISE_MEMLOCK}",
                bytes(*limit),
                bytes(GLOMMIO_MIN_MEMLOCK)
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
                "cannot {what} a probe file in the data directory {}: {error}; it must be \
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

/// io_uring as glommio will use it: a ring can be set up, entered and
/// probed, and it has every operation glommio requires.
pub fn io_uring() -> Result<Passed, Problem> {
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
            memlock: memlock_limit(),
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

/// RLIMIT_MEMLOCK against what glommio needs for `executors`: below
/// [`GLOMMIO_MIN_MEMLOCK`] no executor starts. Above it, every executor
/// registers `io_memory` bytes with each of its rings, charged to the
/// user's locked memory unless the process has CAP_IPC_LOCK (on every
/// kernel; since Linux 5.12 the rings themselves are charged to the memory
/// cgroup instead). A registration that does not fit is skipped by glommio
/// with a debug line, and that executor's disk I/O goes through ordinary
/// buffers: a warning, not a failure.
pub fn memlock(executors: usize, io_memory: usize) -> Result<Passed, Problem> {
    let limit = memlock_limit();
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

/// The data directory `dir` (or, when it does not exist yet, the directory
/// it will be made in) holds the log as mcqd writes it: not in memory, and
/// an O_DIRECT write of one aligned block to a new file there works.
pub fn data_dir(dir: &Path) -> Result<Passed, Problem> {
    let at = existing_ancestor(dir);
    let magic = fs_magic(&at).map_err(|error| Problem::Unwritable {
        dir: at.clone(),
        what: "look at the file system of",
        error,
    })?;
    let fs = fs_name(magic);
    if magic == TMPFS_MAGIC || magic == RAMFS_MAGIC {
        return Err(Problem::InMemory {
            dir: at,
            fs: if magic == TMPFS_MAGIC {
                "tmpfs"
            } else {
                "ramfs"
            },
        });
    }
    write_probe(&at).map_err(|(what, error)| {
        if error.raw_os_error() == Some(libc::EINVAL) {
            Problem::NoDirect {
                dir: at.clone(),
                fs: fs.clone(),
                error,
            }
        } else {
            Problem::Unwritable {
                dir: at.clone(),
                what,
                error,
            }
        }
    })?;
    let warning = (magic == OVERLAYFS_MAGIC).then(|| {
        format!(
            "the data directory {} is on overlayfs: in a container that is the container's own \
             layer, which goes with the container; mount a volume there",
            at.display()
        )
    });
    let found = if at == dir {
        format!(
            "{} is on {fs}; an O_DIRECT write there worked",
            dir.display()
        )
    } else {
        format!(
            "{} does not exist yet; {} is on {fs}, and an O_DIRECT write there worked",
            dir.display(),
            at.display()
        )
    };
    Ok(Passed { found, warning })
}

/// The checks as the server makes them before its executors start, in
/// order, stopping at the first problem; the warnings of those that passed.
pub fn before_start(
    dir: &Path,
    executors: usize,
    io_memory: usize,
) -> Result<Vec<String>, Problem> {
    let passed = [io_uring()?, memlock(executors, io_memory)?, data_dir(dir)?];
    Ok(passed.into_iter().filter_map(|p| p.warning).collect())
}

/// The exit status for a start-up error: a [`Problem`]'s, else 1.
pub fn exit_status(error: &io::Error) -> i32 {
    error
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<Problem>())
        .map_or(1, Problem::status)
}

/// `mcqd check [<server flags>]`: every check, with the server's flags
/// (`-H`, `-t`, `-f`, …), one line each; the exit status of the first
/// problem, or 0.
pub fn check_main(args: Vec<std::ffi::OsString>, io_memory: usize) -> i32 {
    if args.iter().skip(1).any(|a| a == "-h" || a == "--help") {
        println!("{CHECK_HELP}");
        return 0;
    }
    let config = match crate::config::Config::try_from_args(args) {
        Ok(config) => config,
        Err(e) => {
            let _ = e.print();
            return crate::offline::EXIT_ERROR;
        }
    };
    let dir = std::path::absolute(&config.data_dir).unwrap_or(config.data_dir.clone());
    let checks = [
        ("io_uring", io_uring()),
        ("locked memory", memlock(config.executors(), io_memory)),
        ("data directory", data_dir(&dir)),
    ];
    let mut status = 0;
    for (name, outcome) in checks {
        match outcome {
            Ok(passed) => {
                println!("ok       {name}: {}", passed.found);
                if let Some(warning) = passed.warning {
                    println!("warning  {name}: {warning}");
                }
            }
            Err(problem) => {
                println!("problem  {name}: {problem}");
                if status == 0 {
                    status = problem.status();
                }
            }
        }
    }
    status
}

const CHECK_HELP: &str = "\
mcqd check [<server flags>]: the checks mcqd makes before it starts, made
with the server's flags (-H, -t, -f, ...) and told one line each:
  io_uring        a ring can be set up, entered and probed, with every
                  operation glommio needs
  locked memory   RLIMIT_MEMLOCK lets every executor start (and register
                  its I/O buffers)
  data directory  not in memory (tmpfs, ramfs), and an O_DIRECT write of
                  a probe file there works (the file is removed)
Exit status: 0 when all pass, else the first problem's: 71 (io_uring or
locked memory), 73 (data directory). Safe beside a running server.";

/// `dir`, or its nearest ancestor that exists.
fn existing_ancestor(dir: &Path) -> PathBuf {
    dir.ancestors()
        .find(|p| p.as_os_str().is_empty() || p.exists())
        .map(|p| {
            if p.as_os_str().is_empty() {
                Path::new(".")
            } else {
                p
            }
        })
        .unwrap_or(Path::new("/"))
        .to_path_buf()
}

/// Creates `<dir>/.mcqd-probe-<pid>` with O_DIRECT, writes one aligned
/// 4 KiB block and removes it; on failure, which step failed and how.
fn write_probe(dir: &Path) -> Result<(), (&'static str, io::Error)> {
    #[repr(align(4096))]
    struct Block([u8; 4096]);
    let path = dir.join(format!(".mcqd-probe-{}", std::process::id()));
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_DIRECT)
        .open(&path)
        .map_err(|e| ("create (O_DIRECT)", e))?;
    let block = Box::new(Block([0; 4096]));
    let written = file
        .write_all(&block.0)
        .map_err(|e| ("write (O_DIRECT)", e));
    drop(file);
    let removed = std::fs::remove_file(&path).map_err(|e| ("remove", e));
    written.and(removed)
}

fn fs_magic(dir: &Path) -> io::Result<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(dir.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "a path with a NUL byte"))?;
    // SAFETY: statfs fills the zeroed struct we own from a C string path.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statfs(c.as_ptr(), &mut st) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // f_type is signed on some targets; the magic numbers are 32-bit.
    Ok(st.f_type as u64 & 0xffff_ffff)
}

/// A file system's name from its statfs magic number.
fn fs_name(magic: u64) -> String {
    match magic {
        0xef53 => "ext2/3/4".into(),
        0x5846_5342 => "xfs".into(),
        0x9123_683e => "btrfs".into(),
        0x2fc1_2fc1 => "zfs".into(),
        0xf2f5_2010 => "f2fs".into(),
        0x6969 => "nfs".into(),
        0x6573_5546 => "fuse".into(),
        OVERLAYFS_MAGIC => "overlayfs".into(),
        TMPFS_MAGIC => "tmpfs".into(),
        RAMFS_MAGIC => "ramfs".into(),
        other => format!("a file system of type {other:#x}"),
    }
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
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// io_uring_enter with nothing to submit or wait for: only whether the
/// call is allowed.
fn enter_ring(ring: &OwnedFd) -> io::Result<()> {
    use std::os::fd::AsRawFd;
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
    use std::os::fd::AsRawFd;
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

#[allow(clippy::unnecessary_cast)] // rlim_t is u32 on some targets
fn memlock_limit() -> u64 {
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

fn has_capability(cap: u32) -> bool {
    capability_in(
        &std::fs::read_to_string("/proc/self/status").unwrap_or_default(),
        cap,
    )
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

    #[test]
    fn sizes_and_file_systems_read_as_people_say_them() {
        assert_eq!(bytes(64 << 10), "64 KiB");
        assert_eq!(bytes(8 << 20), "8 MiB");
        assert_eq!(bytes(UNLIMITED), "unlimited");
        assert_eq!(bytes(1000), "1000 bytes");
        assert_eq!(fs_name(0xef53), "ext2/3/4");
        assert_eq!(fs_name(TMPFS_MAGIC), "tmpfs");
        assert_eq!(fs_name(0x1234), "a file system of type 0x1234");
    }

    #[test]
    fn a_missing_data_directory_is_judged_by_its_nearest_ancestor() {
        let dir = crate::testutil::test_dir();
        let missing = dir.path().join("a/b");
        assert_eq!(existing_ancestor(&missing), dir.path());
        let passed = data_dir(&missing).unwrap();
        assert!(
            passed.found.contains("does not exist yet"),
            "{}",
            passed.found
        );
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            0,
            "the probe is removed"
        );
        assert_eq!(
            existing_ancestor(Path::new("relative/not/there")),
            Path::new(".")
        );
    }

    #[test]
    fn registered_buffers_beyond_the_limit_are_a_warning_not_a_failure() {
        let limit = memlock_limit();
        if limit < GLOMMIO_MIN_MEMLOCK {
            assert!(matches!(memlock(1, 1 << 20), Err(Problem::Memlock { .. })));
            return;
        }
        let fits = memlock(1, 4096).unwrap();
        assert!(fits.warning.is_none(), "{:?}", fits.warning);
        if limit != UNLIMITED && !has_capability(CAP_IPC_LOCK) {
            let beyond = memlock(1, limit as usize).unwrap();
            assert!(beyond
                .warning
                .unwrap()
                .contains("without registered buffers"));
        }
    }
}
