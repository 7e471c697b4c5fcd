//! The storage seam: everything the log does to files and directories.
//!
//! # Why a seam
//! Durability is what mcq sells, and a claim about durability is only as
//! good as the failures it was tested against. Behind these two traits the
//! log runs unchanged on either
//! - [`dma::DmaDisk`], production: glommio DMA files (O_DIRECT through
//!   io_uring), or
//! - `sim::SimDisk`, tests: an in-memory device with a volatile write
//!   cache. A write is visible at once but survives a power cut only once an
//!   fdatasync covering it completed (a directory entry: once the directory
//!   was synced); a cut may tear the last unsynced write at a sector
//!   boundary; any operation can be told to fail with EIO, ENOSPC or a short
//!   write. The crash-point explorer (`server/tests/crash_points.rs`) cuts
//!   power at every I/O boundary of a workload and checks what recovery
//!   brings back. It is compiled only for unit tests and with the `sim`
//!   feature (which the integration tests turn on), so the release binary
//!   does not carry it.
//!
//! The traits are object safe and return boxed futures: one allocation per
//! I/O operation, which the log issues per group commit, not per request.
//!
//! # Contract (both implementations)
//! - Writes are O_DIRECT-shaped: `pos` and `data.len()` multiples of
//!   [`BLOCK`]. Reads may be unaligned and return fewer bytes at the end of
//!   the file.
//! - Errors keep their errno (`io::Error::raw_os_error`), so callers can
//!   tell a full disk (ENOSPC, EDQUOT) from a failing one (EIO).
//! - A file handle stays valid across a rename of its path, and a removed
//!   file's handle stays readable until dropped, as on POSIX.
//! - Dropping the last handle closes the file (the production disk does
//!   the closing on a thread of its own: `closer`).

mod closer;
pub mod dma;
pub mod mount;
#[cfg(any(test, feature = "sim"))]
pub mod sim;

use std::future::Future;
use std::io;
use std::path::Path;
use std::pin::Pin;
use std::rc::Rc;

pub use closer::start as start_closer;

/// The device block size; writes are aligned to it.
pub const BLOCK: u64 = 4096;

/// A future that runs on the executor that owns the shard.
pub type IoFuture<'a, T> = Pin<Box<dyn Future<Output = io::Result<T>> + 'a>>;

/// An I/O future polled once, so that its operation is submitted now, to be
/// awaited later: a large read or write is several of them in flight at
/// once, started one piece of work at a time (see `turn`).
pub struct Started<F: Future> {
    future: Pin<Box<F>>,
    done: Option<F::Output>,
}

impl<F: Future> Started<F> {
    pub async fn start(future: F) -> Started<F> {
        let mut future = Box::pin(future);
        let done = futures_lite::future::poll_once(future.as_mut()).await;
        Started { future, done }
    }

    pub async fn finish(mut self) -> F::Output {
        match self.done.take() {
            Some(output) => output,
            None => self.future.as_mut().await,
        }
    }
}

/// A file system: what the log does to directories and names.
pub trait Disk {
    /// Creates `path` (truncating an existing file) for reading and writing.
    fn create<'a>(&'a self, path: &'a Path) -> IoFuture<'a, Rc<dyn DiskFile>>;
    /// Opens an existing file for reading and writing (ENOENT if missing).
    fn open<'a>(&'a self, path: &'a Path) -> IoFuture<'a, Rc<dyn DiskFile>>;
    /// Renames `from` to `to`, replacing `to`. Durable once the directory
    /// is synced.
    fn rename<'a>(&'a self, from: &'a Path, to: &'a Path) -> IoFuture<'a, ()>;
    /// Unlinks `path`. Durable once the directory is synced.
    fn remove<'a>(&'a self, path: &'a Path) -> IoFuture<'a, ()>;
    /// fsyncs directory `dir`: its creates, renames and removes survive a
    /// power cut from now on.
    fn sync_dir<'a>(&'a self, dir: &'a Path) -> IoFuture<'a, ()>;
    /// The names of the entries of `dir` (files and directories alike).
    fn list<'a>(&'a self, dir: &'a Path) -> IoFuture<'a, Vec<String>>;
    /// Creates `dir` and its parents (start-up only).
    fn create_dir_all<'a>(&'a self, dir: &'a Path) -> IoFuture<'a, ()>;
}

/// One open file.
pub trait DiskFile {
    /// Reads up to `len` bytes at `pos` (fewer at the end of the file).
    fn read_at(&self, pos: u64, len: usize) -> IoFuture<'_, Vec<u8>>;
    /// Writes `data` at `pos` (both aligned to [`BLOCK`]); returns the
    /// bytes written, which may be fewer (a short write).
    fn write_at<'a>(&'a self, pos: u64, data: &'a [u8]) -> IoFuture<'a, usize>;
    /// Makes every completed write (and the file's size) durable.
    fn fdatasync(&self) -> IoFuture<'_, ()>;
    /// Every write is durable once it completes (the file is open with
    /// O_DSYNC): the log need not fdatasync it.
    fn durable_writes(&self) -> bool {
        false
    }
    /// Reserves `len` bytes (reading as zeros) so later writes cannot run
    /// out of space; grows the file to `len` if it is shorter.
    fn pre_allocate(&self, len: u64) -> IoFuture<'_, ()>;
    /// Sets the file's length.
    fn truncate(&self, len: u64) -> IoFuture<'_, ()>;
    /// The file's length.
    fn size(&self) -> IoFuture<'_, u64>;
}

/// Disk-full conditions: the request can be refused and the shard go on.
pub fn is_out_of_space(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ENOSPC) | Some(libc::EDQUOT))
}

/// Creates `path` and preallocates `size` zeroed bytes; on failure nothing
/// is left behind (the caller syncs the directory). With `write_zeros` the
/// zeros are also written and synced, once.
///
/// Why write them: preallocation leaves *unwritten* extents, and the first
/// write into each block turns it into a written one, a metadata change
/// that an O_DSYNC write (`--sync always`) has to commit to the file
/// system's journal before it completes: on ext4 a journal write and flush
/// beside many log writes. Measured with `server/examples/durable_floor.rs`
/// (16 connections, 64-byte mixed): a server doing nothing but O_DSYNC group
/// commits (busy-polling) reached 0.17× memcached's ops/s into fallocated
/// blocks and 0.28–0.31× into written ones; mcqd's `always` went from
/// 0.17–0.19× to 0.22–0.25×
/// (`bench-results/2026-12-05-issue8-durable-floor.md`). The log decides
/// when it pays (`Log::zero_spare`).
pub async fn create_preallocated(
    disk: &dyn Disk,
    path: &Path,
    size: u64,
    write_zeros: bool,
) -> io::Result<Rc<dyn DiskFile>> {
    let file = disk.create(path).await?;
    let mut made = file.pre_allocate(size).await;
    if made.is_ok() && write_zeros {
        made = zero_fill(&*file, size).await;
    }
    if let Err(e) = made {
        drop(file);
        let _ = disk.remove(path).await;
        return Err(e);
    }
    Ok(file)
}

/// Writes zeros over the first `size` bytes (a multiple of [`BLOCK`]) and
/// syncs them, so that every block is allocated *and* written.
async fn zero_fill(file: &dyn DiskFile, size: u64) -> io::Result<()> {
    const PIECE: u64 = 1 << 20;
    let zeros = vec![0u8; PIECE.min(size) as usize];
    let mut pos = 0;
    while pos < size {
        let n = PIECE.min(size - pos) as usize;
        let written = file.write_at(pos, &zeros[..n]).await?;
        if written != n {
            return Err(io::Error::other(format!(
                "short write while zeroing a new file: {written} of {n} bytes"
            )));
        }
        pos += n as u64;
    }
    file.fdatasync().await
}
