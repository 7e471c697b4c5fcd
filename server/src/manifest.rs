//! The data directory's layout: the `MANIFEST` (format and number of
//! storage shards), one directory per shard, and the hash that puts a queue
//! in its shard.
//!
//! # Why a module of its own
//! Which shard holds a queue is a property of the files on disk, not of
//! routing: the server, `mcqd inspect`/`verify`/`backup` and upgrades all
//! read it, and none of them needs the request path to do so. Routing
//! (`crate::shard`) maps shards to executors on top of it.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::rc::Rc;

/// The queue → shard hash: FNV-1a, 64 bit, of the name up to its first
/// `+`, so a fan-out queue (`<parent>+<child>`) lives beside its parent and
/// gets its copies in the parent's own append. It decides where every
/// queue's data lives on disk, so it **must never change** between
/// versions (it did once, at format 3, for names with a `+`; see
/// [`FORMAT`]).
pub fn shard_for(queue: &[u8], shards: u32) -> u32 {
    let family = queue.split(|&b| b == b'+').next().unwrap_or(queue);
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in family {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    (hash % u64::from(shards)) as u32
}

/// The directory of storage shard `shard`.
pub fn shard_dir(data_dir: &Path, shard: u32) -> PathBuf {
    data_dir.join(format!("shard-{shard:03}"))
}

/// The manifest's file name in the data directory.
pub const MANIFEST: &str = "MANIFEST";
const MANIFEST_MAGIC: &str = "mcq-manifest";
/// The data directory's format. 2: logs may hold `Confirmed` records and
/// message expiry, which an mcqd of format 1 would take for corruption.
/// 3: a queue's shard is the hash of its name up to the first `+` (fan-out),
/// so a queue with a `+` made by an older mcqd may live in another shard
/// than this one looks in. A directory is upgraded once its shards opened
/// and every queue was found where the hash says ([`upgrade_manifest`]);
/// an older mcqd then refuses it. 4: logs may hold `Region` records (large
/// bodies written out of line, see `log::region`), which an mcqd of
/// format 3 would take for corruption; nothing else changed, so a format 3
/// directory is upgraded as it is. 5: a checkpoint lists the live queue ids
/// instead of restating every queue (see `log::recovery`), so an mcqd of
/// format 4 would take a queue not restated in the newest segment for
/// deleted; a format 4 directory is read as it is.
pub const FORMAT: u32 = 5;

/// The format from which a name with a `+` hashes by its part before the
/// `+` (fan-out queues).
pub const FAN_OUT_FORMAT: u32 = 3;

/// Reads `(format, shards)` from `<data_dir>/MANIFEST`, or creates the data
/// directory with `shards_if_new` shards (in [`FORMAT`]). The manifest is
/// written to a temporary file, fsync'd and renamed, and the directory
/// fsync'd, so a crash never leaves a half-written one. A newer format than
/// [`FORMAT`] is refused; an older one is left for [`upgrade_manifest`].
pub fn open_manifest(data_dir: &Path, shards_if_new: u32) -> io::Result<(u32, u32)> {
    match read_manifest(data_dir)? {
        Some(found) => Ok(found),
        None => {
            fs::create_dir_all(data_dir)
                .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", data_dir.display())))?;
            write_manifest(data_dir, shards_if_new).map_err(|e| {
                let path = data_dir.join(MANIFEST);
                io::Error::new(e.kind(), format!("cannot write {}: {e}", path.display()))
            })?;
            Ok((FORMAT, shards_if_new))
        }
    }
}

/// Reads `(format, shards)` from `<data_dir>/MANIFEST` without touching
/// anything; `None` when there is none. A newer format than [`FORMAT`] or
/// text that is not a manifest is an error naming the file.
pub fn read_manifest(data_dir: &Path) -> io::Result<Option<(u32, u32)>> {
    let path = data_dir.join(MANIFEST);
    let text = match fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io::Error::new(e.kind(), format!("{}: {e}", path.display()))),
    };
    let (format, shards) = parse_manifest(&text).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{}: not an mcq manifest", path.display()),
        )
    })?;
    if format > FORMAT {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "{}: data directory format {format} is newer than this mcqd reads ({FORMAT}); run a newer mcqd",
                path.display()
            ),
        ));
    }
    Ok(Some((format, shards)))
}

/// Rewrites the manifest of an older format as [`FORMAT`]: once every shard
/// opened and holds only queues that hash to it, and before anything is
/// written that the older format cannot read.
pub fn upgrade_manifest(data_dir: &Path, shards: u32) -> io::Result<()> {
    write_manifest(data_dir, shards)
}

/// Checks that every queue in shard `shard` hashes to it. A queue with a
/// `+` in its name made before format 3 may not: that directory needs the
/// queue emptied with the older mcqd first.
pub fn check_queue_homes(shard: u32, shards: u32, names: &[Rc<[u8]>]) -> io::Result<()> {
    for name in names {
        let home = shard_for(name, shards);
        if home != shard {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "queue {} is stored in shard {shard} but now belongs to shard {home}: a name with a `+` hashes by its part before the `+` since format {FAN_OUT_FORMAT} (fan-out queues). Drain and delete it with the mcqd that made it, then start this one",
                    String::from_utf8_lossy(name)
                ),
            ));
        }
    }
    Ok(())
}

fn write_manifest(data_dir: &Path, shards: u32) -> io::Result<()> {
    let tmp = data_dir.join("MANIFEST.tmp");
    let mut file = fs::File::create(&tmp)?;
    write!(file, "{MANIFEST_MAGIC} {FORMAT}\nshards {shards}\n")?;
    file.sync_all()?;
    fs::rename(&tmp, data_dir.join(MANIFEST))?;
    fs::File::open(data_dir)?.sync_all()
}

/// `(format, shards)` of a manifest's text.
fn parse_manifest(text: &str) -> Option<(u32, u32)> {
    let mut lines = text.lines();
    let format = lines
        .next()?
        .strip_prefix(MANIFEST_MAGIC)?
        .strip_prefix(' ')?
        .parse()
        .ok()?;
    let shards = lines
        .find_map(|l| l.strip_prefix("shards "))?
        .trim()
        .parse()
        .ok()
        .filter(|&s| s > 0)?;
    Some((format, shards))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hash_never_changes() {
        // These values are part of the on-disk format: a queue must map to
        // the same shard in every version.
        assert_eq!(
            shard_for(b"", 1_000_003),
            (0xcbf2_9ce4_8422_2325u64 % 1_000_003) as u32
        );
        assert_eq!(
            shard_for(b"q4", u32::MAX),
            (0x08d2_0e07_b572_cc18u64 % u64::from(u32::MAX)) as u32
        );
        assert_eq!(
            shard_for(b"a", u32::MAX),
            (0xaf63dc4c8601ec8cu64 % u64::from(u32::MAX)) as u32
        );
        for shards in 1..10 {
            assert!(shard_for(b"anything", shards) < shards);
        }
        // A fan-out queue lives with its parent.
        for shards in [2, 7, 64] {
            for parent in [&b"a"[..], b"q4", b"jobs"] {
                let mut child = parent.to_vec();
                child.extend_from_slice(b"+audit+x");
                assert_eq!(shard_for(&child, shards), shard_for(parent, shards));
            }
        }
        assert_eq!(shard_for(b"+x", u32::MAX), shard_for(b"", u32::MAX));
    }

    #[test]
    fn manifest_round_trip() {
        let dir = std::env::temp_dir().join(format!("mcq-manifest-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        assert_eq!(open_manifest(&dir, 3).unwrap(), (FORMAT, 3));
        assert_eq!(
            open_manifest(&dir, 8).unwrap(),
            (FORMAT, 3),
            "existing manifest wins"
        );
        let text = fs::read_to_string(dir.join(MANIFEST)).unwrap();
        assert_eq!(text, format!("mcq-manifest {FORMAT}\nshards 3\n"));
        // Format 1 is read as it is, and upgraded on request; a newer
        // format is refused.
        fs::write(dir.join(MANIFEST), "mcq-manifest 1\nshards 3\n").unwrap();
        assert_eq!(open_manifest(&dir, 8).unwrap(), (1, 3));
        upgrade_manifest(&dir, 3).unwrap();
        assert_eq!(fs::read_to_string(dir.join(MANIFEST)).unwrap(), text);
        fs::write(dir.join(MANIFEST), "mcq-manifest 99\nshards 3\n").unwrap();
        let e = open_manifest(&dir, 3).unwrap_err();
        assert!(e.to_string().contains("newer"), "{e}");
        fs::write(dir.join(MANIFEST), "garbage").unwrap();
        assert!(open_manifest(&dir, 3).is_err());
        fs::remove_dir_all(&dir).unwrap();
    }
}
