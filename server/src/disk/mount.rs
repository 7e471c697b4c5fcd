//! What the data directory's file system is mounted with.
//!
//! A file system mounted with online discard (`-o discard`) tells the
//! device about every block it frees, as it frees it. mcqd frees a whole
//! segment at a time (tens of MiB), and on many devices (virtual disks,
//! some SSDs) such a discard holds up the writes behind it: 9 ms per
//! 48 MiB on the development VM, where it was what kept small requests'
//! p99 beside a flood of 8 MiB messages above memcached's (issue 8's
//! fairness runs in `bench-results/`). Periodic trimming (`fstrim.timer`)
//! frees the same blocks without stalling anyone; mcqd says so at start-up.

use std::path::{Path, PathBuf};

/// The mount point of the file system that holds `path` (absolute,
/// symlinks resolved), if it is mounted with synchronous online discard.
pub fn online_discard(path: &Path) -> Option<PathBuf> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    discarding_mount(&info, path)
}

/// [`online_discard`] on the text of a `/proc/<pid>/mountinfo`.
fn discarding_mount(mountinfo: &str, path: &Path) -> Option<PathBuf> {
    // The deepest mount point above `path`; of equal ones the last (a
    // mount over another hides it).
    let mut found: Option<(PathBuf, bool)> = None;
    for line in mountinfo.lines() {
        let Some((mount, fs)) = line.split_once(" - ") else {
            continue;
        };
        let mount: Vec<&str> = mount.split(' ').collect();
        let fs: Vec<&str> = fs.split(' ').collect();
        let (Some(point), Some(options), Some(fs_options)) =
            (mount.get(4), mount.get(5), fs.get(2))
        else {
            continue;
        };
        let point = PathBuf::from(unescape(point));
        if !path.starts_with(&point) {
            continue;
        }
        let deeper = found
            .as_ref()
            .is_none_or(|(best, _)| point.components().count() >= best.components().count());
        if deeper {
            let discards = [options, fs_options]
                .iter()
                .flat_map(|o| o.split(','))
                .any(|o| o == "discard" || o == "discard=sync");
            found = Some((point, discards));
        }
    }
    found
        .filter(|(_, discards)| *discards)
        .map(|(point, _)| point)
}

/// Undoes mountinfo's octal escapes (`\040` for a space, …).
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes
            .get(i + 1..i + 4)
            .filter(|d| bytes[i] == b'\\' && d.iter().all(|b| (b'0'..=b'7').contains(b)));
        match octal {
            Some(d) => {
                out.push(d.iter().fold(0u8, |n, b| n.wrapping_mul(8) + (b - b'0')));
                i += 4;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    const INFO: &str = "\
27 1 254:0 / / rw,relatime - ext4 /dev/vda rw,discard,resv_strict
30 27 0:26 / /dev/shm rw,nosuid,nodev - tmpfs tmpfs rw
31 27 254:16 / /srv/mcq rw,noatime - xfs /dev/vdb rw,attr2,inode64
32 27 254:32 / /srv/with\\040space rw - ext4 /dev/vdc rw,nodiscard
33 27 259:1 / /mnt/btrfs rw - btrfs /dev/nvme0n1 rw,discard=async,ssd
34 27 259:2 / /mnt/sync rw,discard - ext4 /dev/nvme1n1 rw
";

    fn check(path: &str) -> Option<PathBuf> {
        discarding_mount(INFO, Path::new(path))
    }

    #[test]
    fn the_deepest_mount_above_the_path_decides() {
        assert_eq!(check("/var/lib/mcq"), Some(PathBuf::from("/")));
        assert_eq!(check("/srv/mcq/data"), None);
        assert_eq!(check("/srv/mcqx"), Some(PathBuf::from("/")));
        assert_eq!(check("/mnt/sync/q"), Some(PathBuf::from("/mnt/sync")));
    }

    #[test]
    fn only_synchronous_discard_counts() {
        assert_eq!(check("/srv/with space/data"), None);
        assert_eq!(check("/mnt/btrfs/data"), None);
    }

    #[test]
    fn a_mount_over_another_hides_it() {
        let info = format!("{INFO}40 27 254:48 / /srv/mcq rw - ext4 /dev/vdd rw,discard\n");
        let found = discarding_mount(&info, Path::new("/srv/mcq/data"));
        assert_eq!(found, Some(PathBuf::from("/srv/mcq")));
    }

    #[test]
    fn octal_escapes_are_undone() {
        assert_eq!(unescape("/a\\040b\\011c\\\\"), "/a b\tc\\\\");
    }
}
