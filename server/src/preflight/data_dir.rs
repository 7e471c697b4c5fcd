//! The data directory check: the log's O_DIRECT writes must reach a disk.
//!
//! # Why write a probe file
//! Whether O_DIRECT works is decided by the file system at the moment of
//! the open and the write (overlayfs and FUSE setups differ), so mcqd
//! tries one. tmpfs is refused by its statfs magic, since recent kernels
//! accept O_DIRECT there while it still reaches only memory.

use std::fs::OpenOptions;
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use super::{Passed, Problem};

const TMPFS_MAGIC: u64 = 0x0102_1994;
const RAMFS_MAGIC: u64 = 0x8584_58f6;
const OVERLAYFS_MAGIC: u64 = 0x794c_7630;

/// The data directory `dir` (or, when it does not exist yet, the directory
/// it will be made in) holds the log as mcqd writes it: not in memory, and
/// an O_DIRECT write of one aligned block to a new file there works.
pub fn check(dir: &Path) -> Result<Passed, Problem> {
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
    let full = judge_probe(&at, &fs, write_probe(&at))?;
    let tried = match full {
        Some(_) => "it is full, so no O_DIRECT write was tried",
        None => "an O_DIRECT write there worked",
    };
    let overlay = (magic == OVERLAYFS_MAGIC).then(|| {
        format!(
            "the data directory {} is on overlayfs: in a container that is the container's own \
             layer, which goes with the container; mount a volume there",
            at.display()
        )
    });
    let warning = match (full, overlay) {
        (Some(full), Some(overlay)) => Some(format!("{full}; {overlay}")),
        (full, overlay) => full.or(overlay),
    };
    let found = if at == dir {
        format!("{} is on {fs}; {tried}", dir.display())
    } else {
        format!(
            "{} does not exist yet; {} is on {fs}; {tried}",
            dir.display(),
            at.display()
        )
    };
    Ok(Passed { found, warning })
}

/// What the probe in `at` (on `fs`) says: `Ok(None)` that O_DIRECT works,
/// `Ok(Some(warning))` that the disk is full so it could not be tried
/// (mcqd must still start on a full disk, so that consumers can drain
/// it), `Err` a problem.
fn judge_probe(
    at: &Path,
    fs: &str,
    probed: Result<(), (&'static str, io::Error)>,
) -> Result<Option<String>, Problem> {
    let Err((what, error)) = probed else {
        return Ok(None);
    };
    match error.raw_os_error() {
        Some(libc::EINVAL) => Err(Problem::NoDirect {
            dir: at.to_path_buf(),
            fs: fs.to_string(),
            error,
        }),
        Some(libc::ENOSPC | libc::EDQUOT) => Ok(Some(format!(
            "the data directory {} is full ({error}): O_DIRECT could not be tried there; \
             sets are refused until consumers free space",
            at.display()
        ))),
        _ => Err(Problem::Unwritable {
            dir: at.to_path_buf(),
            what,
            error,
        }),
    }
}

/// `dir`, or its nearest ancestor that exists. Only a path that is
/// certainly missing is passed over: one mcqd's user may not look at
/// (EACCES on the way to it) is the one to name.
fn existing_ancestor(dir: &Path) -> PathBuf {
    let there = |p: &Path| {
        std::fs::metadata(p).map_or_else(|e| e.kind() != io::ErrorKind::NotFound, |_| true)
    };
    dir.ancestors()
        .find(|p| p.as_os_str().is_empty() || there(p))
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
        .map_err(|e| ("create (O_DIRECT) a probe file in", e))?;
    let block = Box::new(Block([0; 4096]));
    let written = file
        .write_all(&block.0)
        .map_err(|e| ("write (O_DIRECT) a probe file in", e));
    drop(file);
    let removed = std::fs::remove_file(&path).map_err(|e| ("remove a probe file in", e));
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_data_directory_is_judged_by_its_nearest_ancestor() {
        let dir = crate::testutil::test_dir();
        let missing = dir.path().join("a/b");
        assert_eq!(existing_ancestor(&missing), dir.path());
        let passed = check(&missing).unwrap();
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
    fn a_full_disk_is_a_warning_and_einval_no_o_direct() {
        let at = Path::new("/data");
        let failed = |what, errno| Err((what, io::Error::from_raw_os_error(errno)));
        assert!(judge_probe(at, "xfs", Ok(())).unwrap().is_none());
        for errno in [libc::ENOSPC, libc::EDQUOT] {
            let warning =
                judge_probe(at, "xfs", failed("write (O_DIRECT) a probe file in", errno)).unwrap();
            assert!(warning
                .unwrap()
                .starts_with("the data directory /data is full ("));
        }
        let refused = judge_probe(
            at,
            "overlayfs",
            failed("create (O_DIRECT) a probe file in", libc::EINVAL),
        );
        assert!(
            matches!(refused, Err(Problem::NoDirect { .. })),
            "{refused:?}"
        );
        let denied = judge_probe(
            at,
            "xfs",
            failed("create (O_DIRECT) a probe file in", libc::EACCES),
        );
        assert_eq!(
            denied.unwrap_err().to_string(),
            "cannot create (O_DIRECT) a probe file in the data directory /data: Permission \
             denied (os error 13); it must be writable by mcqd's user, with some free space"
        );
    }

    #[test]
    fn file_systems_are_named() {
        assert_eq!(fs_name(0xef53), "ext2/3/4");
        assert_eq!(fs_name(TMPFS_MAGIC), "tmpfs");
        assert_eq!(fs_name(0x1234), "a file system of type 0x1234");
    }
}
