//! `mcqd backup`: a consistent copy of a data directory, live or not.
//!
//! # Why the copy is consistent
//! Each shard's log is a sequence of records in lsn order, and recovery
//! accepts any prefix of it (that is what a crash leaves). So the copy of
//! a shard is built as a prefix: its segments in lsn order, each sealed one
//! complete, the last one up to wherever the copy of it got.
//!
//! - A segment is known complete once its index file exists: the server
//!   writes the index only after the segment's last bytes are written and
//!   synced. The index is read *before* the segment is copied, so a copied
//!   index never describes more than the copy holds; it is kept (the
//!   restored server need not rebuild it).
//! - A segment without an index is the open one, or one just sealed. It is
//!   copied as far as it goes; if a newer segment exists after that, it was
//!   sealed meanwhile and is copied again once its index appears. The copy
//!   ends with a segment that had no successor once copied: its copy is a
//!   prefix of its records, possibly ending in a torn record, which the
//!   restored server's recovery cuts, as after a crash.
//! - A segment that disappears before it is opened was deleted by the
//!   server: every message in it had been consumed, deleted or copied
//!   forward, and the records saying so were synced before the deletion,
//!   into segments this copy reads later. It is skipped. A segment deleted
//!   while it is read stays readable (an open file).
//!
//! Shards are independent (a queue lives in one), so each is its own
//! prefix. The copy is built in `<dest>.partial`, every file fsync'd, and
//! renamed to `<dest>` at the end: a `<dest>` that exists is complete.
//! All-zero blocks (the unwritten part of the open segment) are left as
//! holes. Restoring is starting mcqd with `-H <dest>`.

use std::ffi::OsString;
use std::fs::{self, File};
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

use clap::Parser;

use super::view::{self, RoFile};
use super::EXIT_ERROR;
use crate::log::index::LoadedIndex;
use crate::log::segment::{self, BLOCK};
use crate::manifest;

/// Copies a data directory, while mcqd runs on it or not, into <DEST> (which
/// must not exist) so that `mcqd -H <DEST>` recovers a consistent earlier
/// state: per queue, a prefix of its history up to about when the backup
/// finished. Read-only on the source. The copy is made in <DEST>.partial
/// and renamed to <DEST> once complete.
#[derive(Parser, Debug)]
#[command(name = "mcqd backup")]
struct Args {
    /// The data directory to copy.
    #[arg(short = 'H', long = "data-dir", default_value = "./mcq-data")]
    data_dir: PathBuf,
    /// Where to put the copy (must not exist).
    dest: PathBuf,
}

/// How long a just-sealed segment's index may take to appear before the
/// segment is taken as complete anyway (a directory no server runs on can
/// hold a sealed segment whose index a crash prevented).
const INDEX_WAIT: Duration = Duration::from_secs(5);

pub fn main(args: Vec<OsString>) -> i32 {
    let args = match Args::try_parse_from(args) {
        Ok(a) => a,
        Err(e) => e.exit(),
    };
    match backup(&args.data_dir, &args.dest) {
        Ok(c) => {
            println!(
                "{}: {} shards, {} segments ({} bytes), {} index files copied",
                args.dest.display(),
                c.shards,
                c.segments,
                c.bytes,
                c.indexes
            );
            0
        }
        Err(e) => {
            eprintln!("mcqd backup: {e}");
            EXIT_ERROR
        }
    }
}

/// What was copied.
#[derive(Debug, Default)]
pub struct Copied {
    pub shards: u32,
    pub segments: u64,
    pub bytes: u64,
    pub indexes: u64,
}

fn ctx(path: &Path) -> impl FnOnce(io::Error) -> io::Error + '_ {
    move |e| io::Error::new(e.kind(), format!("{}: {e}", path.display()))
}

/// Copies `src` to `dest` (see the module doc).
pub fn backup(src: &Path, dest: &Path) -> io::Result<Copied> {
    if dest.exists() {
        return Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!(
                "{}: exists (a backup goes to a new directory)",
                dest.display()
            ),
        ));
    }
    let mut partial = dest.as_os_str().to_owned();
    partial.push(".partial");
    let partial = PathBuf::from(partial);
    if partial.exists() {
        return Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!(
                "{}: exists (left by an interrupted backup? remove it)",
                partial.display()
            ),
        ));
    }
    let manifest =
        fs::read(src.join(manifest::MANIFEST)).map_err(ctx(&src.join(manifest::MANIFEST)))?;
    let dir = view::open_dir(src)?;
    fs::create_dir_all(&partial).map_err(ctx(&partial))?;
    let mut copied = Copied {
        shards: dir.shards,
        ..Copied::default()
    };
    for s in 0..dir.shards {
        let from = manifest::shard_dir(src, s);
        let to = manifest::shard_dir(&partial, s);
        fs::create_dir(&to).map_err(ctx(&to))?;
        if from.is_dir() {
            copy_shard(&from, &to, &mut copied)?;
        }
        sync_dir(&to)?;
    }
    let path = partial.join(manifest::MANIFEST);
    let mut f = File::create(&path).map_err(ctx(&path))?;
    f.write_all(&manifest).map_err(ctx(&path))?;
    f.sync_all().map_err(ctx(&path))?;
    sync_dir(&partial)?;
    fs::rename(&partial, dest).map_err(ctx(dest))?;
    sync_dir(
        dest.parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new(".")),
    )?;
    Ok(copied)
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(ctx(dir))
}

/// Copies one shard's log as a prefix (see the module doc).
fn copy_shard(from: &Path, to: &Path, copied: &mut Copied) -> io::Result<()> {
    // Segments below `next` are copied (or were deleted).
    let mut next = 0u64;
    // The segment last waited for: taken as complete when copied again.
    let mut waited = None;
    loop {
        let (logs, _) = view::list_segments(from)?;
        let Some(&lsn) = logs.iter().find(|&&l| l >= next) else {
            return Ok(());
        };
        let idx_path = segment::idx_path(from, lsn);
        let index =
            view::read_if_exists(&idx_path)?.filter(|b| LoadedIndex::from_bytes(b, lsn).is_ok());
        let bytes = match copy_segment(&segment::log_path(from, lsn), &segment::log_path(to, lsn)) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                next = lsn + 1;
                continue;
            }
            Err(e) => return Err(e),
        };
        let newer = index.is_none() && view::list_segments(from)?.0.iter().any(|&l| l > lsn);
        if newer && waited != Some(lsn) {
            // Sealed meanwhile: copy it again once complete.
            wait_for(&idx_path, &segment::log_path(from, lsn));
            waited = Some(lsn);
            continue;
        }
        copied.segments += 1;
        copied.bytes += bytes;
        next = lsn + 1;
        match index {
            Some(index) => {
                let path = segment::idx_path(to, lsn);
                let mut f = File::create(&path).map_err(ctx(&path))?;
                f.write_all(&index).map_err(ctx(&path))?;
                f.sync_all().map_err(ctx(&path))?;
                copied.indexes += 1;
            }
            // No newer segment once it was copied: the prefix ends here.
            None if !newer => return Ok(()),
            None => {}
        }
    }
}

/// Waits until `idx` exists or `log` is gone, at most [`INDEX_WAIT`].
fn wait_for(idx: &Path, log: &Path) {
    let deadline = Instant::now() + INDEX_WAIT;
    while Instant::now() < deadline && !idx.exists() && log.exists() {
        thread::sleep(Duration::from_millis(5));
    }
}

/// Copies `from` to `to` as far as `from` goes now, leaving all-zero
/// blocks as holes, and fsyncs it; returns the bytes copied.
fn copy_segment(from: &Path, to: &Path) -> io::Result<u64> {
    let src = RoFile::open(from)?;
    let out = File::create(to).map_err(ctx(to))?;
    let chunk = 1 << 20;
    let mut pos = 0u64;
    let mut len = 0u64;
    loop {
        let data = src.read(pos, chunk).map_err(ctx(from))?;
        if data.is_empty() {
            break;
        }
        for (i, block) in data.chunks(BLOCK as usize).enumerate() {
            if block.iter().any(|&b| b != 0) {
                out.write_all_at(block, pos + (i as u64) * BLOCK)
                    .map_err(ctx(to))?;
            }
        }
        pos += data.len() as u64;
        len = pos;
        if data.len() < chunk {
            break;
        }
    }
    out.set_len(len).map_err(ctx(to))?;
    out.sync_all().map_err(ctx(to))?;
    Ok(len)
}
