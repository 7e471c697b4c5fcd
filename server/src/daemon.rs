//! What MemcacheQ's init scripts ask of a server: `-d` (become a daemon),
//! `-P` (a pid file), `-u` (drop root) and `-r` (leave a core).
//!
//! # Why the parent waits for the daemon
//! memcached's parent exits as soon as it has forked, so a daemon that
//! cannot open its data directory or port fails where nobody looks, and
//! the init script reports success. mcqd's parent waits on a pipe until
//! the daemon listens (then exits 0) or ends (then exits with its status);
//! the daemon keeps the parent's stderr until then, so a start-up error is
//! printed where the script was run. An init script, or systemd's
//! `Type=forking`, then knows the server is serving when the command
//! returns.
//!
//! # Why fork first, and drop root last
//! glommio's executors are threads, and a fork keeps only the thread that
//! called it: so `-d` is the first thing `crate::server::run` does. `-u`
//! comes after everything only root may do (bind a port below 1024, write
//! a pid file into /run, lock and perhaps create the data directory) and
//! before anything else is created, so that the data directory holds only
//! files the user owns and a later run as that user can use them.

use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};

/// The daemon's end of the pipe its parent waits on.
pub struct Daemon {
    ready: OwnedFd,
    keep_stderr: bool,
}

/// Forks; the parent waits (see the module doc) and never returns. The
/// daemon starts a new session, moves to `/` unless `stay` (MemcacheQ
/// keeps its directory with `-r`, so that a core lands there) and points
/// stdin and stdout at /dev/null.
pub fn daemonize(stay: bool, keep_stderr: bool) -> io::Result<Daemon> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 fills the two descriptors, which we then own.
    let (read, write) = unsafe {
        if libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) != 0 {
            return Err(context("-d: pipe", io::Error::last_os_error()));
        }
        (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1]))
    };
    // SAFETY: no other thread exists yet (see the module doc), so the child
    // is a whole copy of this process.
    match unsafe { libc::fork() } {
        -1 => Err(context("-d: fork", io::Error::last_os_error())),
        0 => {
            drop(read);
            // SAFETY: plain system calls on this process.
            unsafe {
                if libc::setsid() < 0 {
                    return Err(context("-d: setsid", io::Error::last_os_error()));
                }
                if !stay && libc::chdir(c"/".as_ptr()) != 0 {
                    return Err(context("-d: chdir /", io::Error::last_os_error()));
                }
            }
            to_dev_null(&[libc::STDIN_FILENO, libc::STDOUT_FILENO])?;
            Ok(Daemon {
                ready: write,
                keep_stderr,
            })
        }
        child => {
            drop(write);
            std::process::exit(wait_for_daemon(read, child))
        }
    }
}

/// The parent's side: 0 once the daemon says it is ready, else the
/// daemon's exit status.
fn wait_for_daemon(read: OwnedFd, child: libc::pid_t) -> i32 {
    let mut byte = 0u8;
    loop {
        // SAFETY: reads one byte into a local.
        let n = unsafe { libc::read(read.as_raw_fd(), (&mut byte as *mut u8).cast(), 1) };
        if n == 1 {
            return 0;
        }
        if n < 0 && io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
            continue;
        }
        break;
    }
    let mut status = 0;
    loop {
        // SAFETY: waits for our own child.
        let r = unsafe { libc::waitpid(child, &mut status, 0) };
        if r == child {
            return if libc::WIFEXITED(status) {
                libc::WEXITSTATUS(status)
            } else {
                1
            };
        }
        if io::Error::last_os_error().kind() != io::ErrorKind::Interrupted {
            return 1;
        }
    }
}

impl Daemon {
    /// Tells the parent the server listens, and (without `-v`) sends
    /// stderr to /dev/null from now on, as memcached does.
    pub fn ready(self) {
        // SAFETY: writes one byte from a constant.
        unsafe { libc::write(self.ready.as_raw_fd(), b"1".as_ptr().cast(), 1) };
        drop(self.ready);
        if !self.keep_stderr {
            if let Err(e) = to_dev_null(&[libc::STDERR_FILENO]) {
                log::warn!("-d: {e}");
            }
        }
    }
}

fn to_dev_null(fds: &[libc::c_int]) -> io::Result<()> {
    let null = File::options()
        .read(true)
        .write(true)
        .open("/dev/null")
        .map_err(|e| context("-d: /dev/null", e))?;
    for &fd in fds {
        // SAFETY: dup2 onto a standard descriptor; `null` stays ours.
        if unsafe { libc::dup2(null.as_raw_fd(), fd) } < 0 {
            return Err(context("-d: dup2", io::Error::last_os_error()));
        }
    }
    Ok(())
}

/// `-P`: the pid file, removed when dropped.
pub struct PidFile(PathBuf);

impl PidFile {
    pub fn write(path: &Path) -> io::Result<PidFile> {
        std::fs::write(path, format!("{}\n", std::process::id())).map_err(|e| {
            context(
                format!("cannot write the pid file {} (-P)", path.display()),
                e,
            )
        })?;
        Ok(PidFile(path.to_path_buf()))
    }
}

impl Drop for PidFile {
    fn drop(&mut self) {
        match std::fs::remove_file(&self.0) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => {
                log::warn!("cannot remove the pid file {}: {e}", self.0.display());
            }
            _ => {}
        }
    }
}

/// `-r`: the core file size limit up to the hard limit, or unlimited where
/// we may raise that too (root).
pub fn raise_core_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: get/setrlimit read and write a local struct.
    unsafe {
        let unlimited = libc::rlimit {
            rlim_cur: libc::RLIM_INFINITY,
            rlim_max: libc::RLIM_INFINITY,
        };
        if libc::setrlimit(libc::RLIMIT_CORE, &unlimited) != 0
            && libc::getrlimit(libc::RLIMIT_CORE, &mut limit) == 0
        {
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_CORE, &limit);
        }
        libc::getrlimit(libc::RLIMIT_CORE, &mut limit);
    }
    if limit.rlim_cur == 0 {
        log::warn!(
            "-r: the core file size limit is 0 and cannot be raised: no core will be written"
        );
    }
}

/// `-u`: become `user` (its uid, gid and groups). `owned` are paths mcqd
/// made as root that the user must own (the data directory if mcqd created
/// it, its lock file); `dumpable` (`-r`) lets the process still dump core
/// afterwards, which Linux turns off on a change of credentials.
pub fn become_user(user: &str, owned: &[&Path], dumpable: bool) -> io::Result<()> {
    if !is_root() {
        log::warn!("-u {user}: not running as root: ignored");
        return Ok(());
    }
    let (uid, gid) = lookup_user(user)?;
    let fail = |what: &str| context(format!("-u {user}: {what}"), io::Error::last_os_error());
    for path in owned {
        let c = path_cstring(path)?;
        // SAFETY: chown of a path we made, given as a C string.
        if unsafe { libc::chown(c.as_ptr(), uid, gid) } != 0 {
            return Err(fail(&format!("chown {}", path.display())));
        }
    }
    let name = CString::new(user).map_err(|_| fail("bad user name"))?;
    // SAFETY: plain credential calls; glibc applies them to the whole
    // process (no other thread exists yet anyway).
    unsafe {
        if libc::initgroups(name.as_ptr(), gid) != 0 {
            return Err(fail("initgroups"));
        }
        if libc::setgid(gid) != 0 {
            return Err(fail("setgid"));
        }
        if libc::setuid(uid) != 0 {
            return Err(fail("setuid"));
        }
        if libc::setuid(0) == 0 {
            return Err(context(
                format!("-u {user}"),
                io::Error::other("root privileges could be regained"),
            ));
        }
        if dumpable {
            libc::prctl(libc::PR_SET_DUMPABLE, 1);
        }
    }
    log::info!("running as {user} (uid {uid}, gid {gid})");
    Ok(())
}

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

fn lookup_user(user: &str) -> io::Result<(libc::uid_t, libc::gid_t)> {
    let name = CString::new(user)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "-u: bad user name"))?;
    let mut buf = vec![0u8; 16 * 1024];
    // SAFETY: an all-zero passwd is valid; getpwnam_r fills it, with its
    // strings in `buf`, which outlives the call.
    let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
    let mut found: *mut libc::passwd = std::ptr::null_mut();
    let rc = unsafe {
        libc::getpwnam_r(
            name.as_ptr(),
            &mut pwd,
            buf.as_mut_ptr().cast(),
            buf.len(),
            &mut found,
        )
    };
    if rc != 0 {
        return Err(context(
            format!("-u {user}: looking the user up"),
            io::Error::from_raw_os_error(rc),
        ));
    }
    if found.is_null() {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("-u {user}: no such user"),
        ));
    }
    Ok((pwd.pw_uid, pwd.pw_gid))
}

fn path_cstring(path: &Path) -> io::Result<CString> {
    use std::os::unix::ffi::OsStrExt;
    CString::new(path.as_os_str().as_bytes()).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{}: a path with a NUL byte", path.display()),
        )
    })
}

/// `e` with `what` (a path, a flag) in front of its message; its kind kept.
pub fn context(what: impl std::fmt::Display, e: io::Error) -> io::Error {
    io::Error::new(e.kind(), format!("{what}: {e}"))
}
