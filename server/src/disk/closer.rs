//! The last close of a log file, on a thread of its own.
//!
//! # Why
//! Closing the last descriptor of an unlinked file frees its blocks, in the
//! thread that closes it: ext4 walks the extents and, on a file system
//! mounted with `discard`, waits for the device to discard them. A drained
//! segment is unlinked (on glommio's blocking thread) while a chunk read or
//! the scrub may still hold it open, so its last close came later, on the
//! executor, which then served no connection for 10–20 ms (perf stacks of
//! the executor in `ext4_evict_inode` and `blkdev_issue_discard`). Beside a
//! cold drain of 10M messages over 16 queues the producers' p99 was
//! 12.1 ms; with the closer 3.2 ms (issue 21,
//! `bench-results/2026-12-07-backlog-aa86022.log`).
//!
//! # How
//! [`hand_over`] moves what a descriptor refers to into a duplicate that
//! the closer thread closes, and points the descriptor's number at a
//! placeholder (an eventfd) with `dup2`, atomically. glommio then closes the
//! number as usual, which now costs nothing. The file's last reference is
//! the duplicate, so whatever freeing the file system does happens on the
//! closer thread. A file still open elsewhere is only closed there, a
//! little later than it would have been.
//!
//! When anything here fails (no thread, no eventfd), the descriptor is left
//! alone and glommio closes it as before: slower, never wrong.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::mpsc::{channel, Sender};
use std::sync::OnceLock;

/// The closer thread's queue, and the placeholder descriptor.
struct Closer {
    queue: Sender<OwnedFd>,
    placeholder: OwnedFd,
}

fn closer() -> Option<&'static Closer> {
    static CLOSER: OnceLock<Option<Closer>> = OnceLock::new();
    CLOSER
        .get_or_init(|| {
            // SAFETY: eventfd returns a new descriptor, or -1.
            let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC) };
            if fd < 0 {
                return None;
            }
            // SAFETY: `fd` is a new descriptor that nothing else owns.
            let placeholder = unsafe { OwnedFd::from_raw_fd(fd) };
            let (queue, closing) = channel::<OwnedFd>();
            std::thread::Builder::new()
                .name("mcqd-close".into())
                .spawn(move || {
                    for fd in closing {
                        drop(fd);
                    }
                })
                .ok()?;
            Some(Closer { queue, placeholder })
        })
        .as_ref()
}

/// Starts the closer thread now rather than at the first close: started
/// from the thread that spawns the executors, it may run on any of the
/// process's CPUs, not only on the executor's that closed a file first.
pub fn start() {
    closer();
}

/// Makes sure that closing `fd` (which its owner is about to do) does not
/// close the file: the closer thread closes it instead.
pub fn hand_over(fd: RawFd) {
    let Some(closer) = closer() else {
        return;
    };
    // SAFETY: F_DUPFD_CLOEXEC returns a new descriptor for `fd`'s file, or
    // -1; `fd` is open (its owner has not closed it yet).
    let dup = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 0) };
    if dup < 0 {
        return;
    }
    // SAFETY: `dup` is a new descriptor that nothing else owns.
    let dup = unsafe { OwnedFd::from_raw_fd(dup) };
    // SAFETY: both descriptors are open; dup2 closes `fd`'s reference to
    // the file (not the last: `dup` holds one) and reopens the number on the
    // placeholder, in one step, so the number is never free for another
    // open to take before its owner closes it.
    if unsafe { libc::dup2(closer.placeholder.as_raw_fd(), fd) } < 0 {
        return;
    }
    // Were the thread gone (it never exits), the failed send hands `dup`
    // back and it is closed here.
    let _ = closer.queue.send(dup);
}

#[cfg(test)]
mod tests {
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::MetadataExt;
    use std::time::{Duration, Instant};

    use super::hand_over;

    /// Whether a descriptor of this process refers to the file `(dev, ino)`
    /// (deleted or not: `/proc/self/fd` links still reach it).
    fn open_here(dev: u64, ino: u64) -> bool {
        std::fs::read_dir("/proc/self/fd").unwrap().any(|e| {
            std::fs::metadata(e.unwrap().path())
                .map(|m| (m.dev(), m.ino()) == (dev, ino))
                .unwrap_or(false)
        })
    }

    /// The handed-over file is closed (by the closer thread), and the
    /// number its owner then closes is not the file any more.
    #[test]
    fn the_file_is_closed_by_the_closer() {
        let dir = crate::testutil::test_dir();
        let path = dir.path().join("segment");
        std::fs::write(&path, vec![7u8; 1 << 20]).unwrap();
        let file = std::fs::File::open(&path).unwrap();
        let meta = file.metadata().unwrap();
        let (dev, ino) = (meta.dev(), meta.ino());
        std::fs::remove_file(&path).unwrap();
        assert!(open_here(dev, ino), "the test sees its own open file");
        hand_over(file.as_raw_fd());
        let now = std::fs::read_link(format!("/proc/self/fd/{}", file.as_raw_fd())).unwrap();
        assert!(
            now.to_string_lossy().contains("eventfd"),
            "the number now points at {}",
            now.display()
        );
        drop(file);
        let start = Instant::now();
        while open_here(dev, ino) {
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "the closer never closed the file"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}
