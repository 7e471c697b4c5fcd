//! The production disk: glommio DMA files, O_DIRECT through io_uring.

use std::collections::VecDeque;
use std::io;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::rc::Rc;

use glommio::io::{DmaFile, OpenOptions};
use glommio::GlommioError;

use super::{closer, Disk, DiskFile, IoFuture, Started, BLOCK};
use crate::turn;

/// The pieces of one large read in flight at once. The device serves
/// queued requests in its own order (mq-deadline serves reads before
/// writes), so a get that queued all of an 8 MiB body's pieces at once made
/// every small record's write wait behind up to 8 MiB of reads: small
/// requests' p99 beside the 8 MiB flood rose by milliseconds with
/// `--sync interval` and `always` (issue 8's fairness runs in
/// `bench-results/`). Two keep the device busy with one piece while the
/// other is copied out.
pub const READS_IN_FLIGHT: usize = 2;

/// Files opened with O_DIRECT on the executor's io_uring; with
/// [`DmaDisk::durable_writes`], also O_DSYNC.
pub struct DmaDisk {
    dsync: bool,
}

/// Converts a glommio error to `io::Error`, keeping the OS error number
/// (glommio's own conversion drops it for "enhanced" errors).
pub fn to_io<T>(e: GlommioError<T>) -> io::Error {
    let errno = match &e {
        GlommioError::IoError(e) => e.raw_os_error(),
        GlommioError::EnhancedIoError { source, .. } => source.raw_os_error(),
        _ => None,
    };
    match errno {
        Some(n) => io::Error::from_raw_os_error(n),
        None => io::Error::other(e.to_string()),
    }
}

impl DmaDisk {
    /// The disk under `dir`, after working around glommio 0.9's detection
    /// of polled I/O (IOPOLL) support.
    ///
    /// The first DMA file an executor opens on a device decides, for that
    /// thread, whether reads go to the polled ring: glommio reads the file's
    /// first block through that ring and takes success as support. A new,
    /// empty file reads "successfully" without touching the device, so on a
    /// device without IOPOLL (virtio disks, most cloud volumes) every later
    /// O_DIRECT read fails with EOPNOTSUPP. Opening a file that has data in
    /// its first block first makes the probe issue a real read and get the
    /// right answer.
    pub async fn probe(dir: &Path) -> io::Result<DmaDisk> {
        // Errors name their path: this is the first thing to touch a
        // shard's directory at start-up.
        let named = |path: &Path| {
            let path = path.to_path_buf();
            move |e: io::Error| io::Error::new(e.kind(), format!("{}: {e}", path.display()))
        };
        std::fs::create_dir_all(dir).map_err(named(dir))?;
        let path = dir.join("iopoll-probe.tmp");
        std::fs::write(&path, vec![0x5a; BLOCK as usize]).map_err(named(&path))?;
        let res = DmaFile::open(&path).await.map_err(to_io);
        if let Ok(f) = res {
            let _ = f.close().await;
        }
        std::fs::remove_file(&path).map_err(named(&path))?;
        Ok(DmaDisk { dsync: false })
    }

    /// Opens every file O_DSYNC, so that a write completes only once it is
    /// durable: one operation where write + fdatasync were two. The kernel
    /// then uses FUA or a cache flush right after the write, from the
    /// completion path, instead of an fdatasync that io_uring runs on a
    /// worker thread. `--sync always` uses it: on the development VM it
    /// took 40–50% more requests per second and half the CPU per request
    /// (see `bench-results/`).
    pub fn durable_writes(self, on: bool) -> DmaDisk {
        DmaDisk { dsync: on }
    }

    fn flags(&self) -> libc::c_int {
        if self.dsync {
            libc::O_DSYNC
        } else {
            0
        }
    }
}

/// One DMA file.
pub struct Dma {
    file: DmaFile,
    /// Opened O_DSYNC.
    dsync: bool,
}

fn opened(file: DmaFile, dsync: bool) -> Rc<dyn DiskFile> {
    Rc::new(Dma { file, dsync })
}

impl Drop for Dma {
    /// The last close of a drained segment frees its blocks: not on the
    /// executor (see `closer`). glommio then closes the placeholder.
    fn drop(&mut self) {
        closer::hand_over(self.file.as_raw_fd());
    }
}

impl Disk for DmaDisk {
    fn create<'a>(&'a self, path: &'a Path) -> IoFuture<'a, Rc<dyn DiskFile>> {
        Box::pin(async move {
            let f = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(true)
                .custom_flags(self.flags())
                .dma_open(path)
                .await
                .map_err(to_io)?;
            Ok(opened(f, self.dsync))
        })
    }

    fn open<'a>(&'a self, path: &'a Path) -> IoFuture<'a, Rc<dyn DiskFile>> {
        Box::pin(async move {
            let f = OpenOptions::new()
                .read(true)
                .write(true)
                .custom_flags(self.flags())
                .dma_open(path)
                .await
                .map_err(to_io)?;
            Ok(opened(f, self.dsync))
        })
    }

    fn rename<'a>(&'a self, from: &'a Path, to: &'a Path) -> IoFuture<'a, ()> {
        Box::pin(async move { glommio::io::rename(from, to).await.map_err(to_io) })
    }

    fn remove<'a>(&'a self, path: &'a Path) -> IoFuture<'a, ()> {
        Box::pin(async move { glommio::io::remove(path).await.map_err(to_io) })
    }

    fn sync_dir<'a>(&'a self, dir: &'a Path) -> IoFuture<'a, ()> {
        Box::pin(async move {
            let d = glommio::io::Directory::open(dir).await.map_err(to_io)?;
            let r = d.sync().await.map_err(to_io);
            let _ = d.close().await;
            r
        })
    }

    fn list<'a>(&'a self, dir: &'a Path) -> IoFuture<'a, Vec<String>> {
        Box::pin(async move {
            let mut names = Vec::new();
            for entry in std::fs::read_dir(dir)? {
                if let Ok(name) = entry?.file_name().into_string() {
                    names.push(name);
                }
            }
            Ok(names)
        })
    }

    fn create_dir_all<'a>(&'a self, dir: &'a Path) -> IoFuture<'a, ()> {
        Box::pin(async move { std::fs::create_dir_all(dir) })
    }
}

impl DiskFile for Dma {
    fn durable_writes(&self) -> bool {
        self.dsync
    }

    fn read_at(&self, pos: u64, len: usize) -> IoFuture<'_, Vec<u8>> {
        Box::pin(async move {
            // A large read is issued as reads of turn::PIECE bytes, at most
            // READS_IN_FLIGHT at a time, and each is copied out of its DMA
            // buffer with a pause before the next: copying 8 MiB at once
            // held the executor for milliseconds (see `turn`).
            let mut pieces = (0..len.max(1)).step_by(turn::PIECE);
            let mut start_next = || {
                pieces.next().map(|start| {
                    let n = turn::PIECE.min(len - start);
                    Started::start(self.file.read_at(pos + start as u64, n))
                })
            };
            let mut reads = VecDeque::new();
            for _ in 0..READS_IN_FLIGHT {
                match start_next() {
                    Some(read) => reads.push_back(read.await),
                    None => break,
                }
            }
            let mut out = Vec::with_capacity(len);
            let mut failed = None;
            let mut first = true;
            while let Some(read) = reads.pop_front() {
                let result = read.finish().await;
                // After a failure no more reads start, but those in flight
                // are awaited: none is left behind.
                if failed.is_none() {
                    if let Some(next) = start_next() {
                        reads.push_back(next.await);
                    }
                }
                match result {
                    Ok(data) if failed.is_none() => {
                        if !first {
                            turn::pause().await;
                        }
                        first = false;
                        out.extend_from_slice(&data);
                    }
                    Ok(_) => {}
                    Err(e) => failed = failed.or(Some(to_io(e))),
                }
            }
            match failed {
                Some(e) => Err(e),
                None => Ok(out),
            }
        })
    }

    fn write_at<'a>(&'a self, pos: u64, data: &'a [u8]) -> IoFuture<'a, usize> {
        Box::pin(async move {
            let mut buf = self.file.alloc_dma_buffer(data.len());
            buf.as_bytes_mut().copy_from_slice(data);
            self.file.write_at(buf, pos).await.map_err(to_io)
        })
    }

    fn fdatasync(&self) -> IoFuture<'_, ()> {
        Box::pin(async move { self.file.fdatasync().await.map_err(to_io) })
    }

    fn pre_allocate(&self, len: u64) -> IoFuture<'_, ()> {
        Box::pin(async move { self.file.pre_allocate(len, false).await.map_err(to_io) })
    }

    fn truncate(&self, len: u64) -> IoFuture<'_, ()> {
        Box::pin(async move { self.file.truncate(len).await.map_err(to_io) })
    }

    fn size(&self) -> IoFuture<'_, u64> {
        Box::pin(async move { self.file.file_size().await.map_err(to_io) })
    }
}

#[cfg(test)]
mod tests {
    use std::os::fd::AsRawFd;
    use std::path::Path;

    use super::DmaDisk;
    use crate::disk::{create_preallocated, Disk};

    /// Bytes of `path` in unwritten extents (allocated, reading as zeros,
    /// converted on their first write), from the FIEMAP ioctl; `None` where
    /// the file system cannot tell.
    fn unwritten_bytes(path: &Path) -> Option<u64> {
        const FS_IOC_FIEMAP: libc::c_ulong = 0xC020_660B;
        const FIEMAP_FLAG_SYNC: u32 = 1;
        const FIEMAP_EXTENT_UNWRITTEN: u32 = 0x800;
        const EXTENTS: usize = 256;
        #[repr(C)]
        #[derive(Clone, Copy, Default)]
        struct Extent {
            logical: u64,
            physical: u64,
            length: u64,
            reserved64: [u64; 2],
            flags: u32,
            reserved: [u32; 3],
        }
        #[repr(C)]
        struct Fiemap {
            start: u64,
            length: u64,
            flags: u32,
            mapped_extents: u32,
            extent_count: u32,
            reserved: u32,
            extents: [Extent; EXTENTS],
        }
        let file = std::fs::File::open(path).unwrap();
        let mut map = Fiemap {
            start: 0,
            length: u64::MAX,
            flags: FIEMAP_FLAG_SYNC,
            mapped_extents: 0,
            extent_count: EXTENTS as u32,
            reserved: 0,
            extents: [Extent::default(); EXTENTS],
        };
        // SAFETY: FS_IOC_FIEMAP fills at most `extent_count` extents of the
        // struct it is given, which lives for the call.
        let rc = unsafe { libc::ioctl(file.as_raw_fd(), FS_IOC_FIEMAP as _, &mut map) };
        if rc != 0 || map.mapped_extents == 0 {
            return None;
        }
        let extents = &map.extents[..map.mapped_extents as usize];
        Some(
            extents
                .iter()
                .filter(|e| e.flags & FIEMAP_EXTENT_UNWRITTEN != 0)
                .map(|e| e.length)
                .sum(),
        )
    }

    /// A file made with its zeros written has no unwritten extent left, so
    /// no O_DSYNC log write converts one; a plain preallocation is the
    /// control (it shows the file system reports unwritten extents, so the
    /// assertion can fail).
    #[test]
    fn zero_filled_files_are_created_written() {
        let dir = crate::testutil::test_dir();
        let base = dir.path().to_path_buf();
        crate::testutil::run(move || async move {
            let size = 4 << 20;
            let durable = base.join("durable.log");
            let disk = DmaDisk::probe(&base).await.unwrap().durable_writes(true);
            let file = create_preallocated(&disk, &durable, size, true)
                .await
                .unwrap();
            assert_eq!(file.size().await.unwrap(), size);
            drop(file);
            let plain = base.join("plain.log");
            let disk = DmaDisk::probe(&base).await.unwrap();
            let file = create_preallocated(&disk, &plain, size, false)
                .await
                .unwrap();
            assert_eq!(file.size().await.unwrap(), size);
            drop(file);
            match unwritten_bytes(&plain) {
                Some(0) | None => eprintln!(
                    "skipped: this file system does not report unwritten extents ({})",
                    base.display()
                ),
                Some(_) => assert_eq!(unwritten_bytes(&durable), Some(0)),
            }
            let data = std::fs::read(&durable).unwrap();
            assert!(data.len() as u64 == size && data.iter().all(|&b| b == 0));
        });
    }

    /// A read of many pieces, a few in flight at a time, comes back whole
    /// and in order, at any length.
    #[test]
    fn large_reads_come_back_whole_and_in_order() {
        use crate::turn::PIECE;
        let dir = crate::testutil::test_dir();
        let base = dir.path().to_path_buf();
        crate::testutil::run(move || async move {
            let disk = DmaDisk::probe(&base).await.unwrap();
            let file = disk.create(&base.join("big.log")).await.unwrap();
            let len = 6 * PIECE + 3 * 4096;
            let data: Vec<u8> = (0..len as u32).map(|i| (i * 7 + i / 4093) as u8).collect();
            assert_eq!(file.write_at(0, &data).await.unwrap(), len);
            for (pos, n) in [(0, len), (4096, 5 * PIECE + 100), (8192, PIECE), (0, 17)] {
                let got = file.read_at(pos as u64, n).await.unwrap();
                assert!(got == data[pos..pos + n], "read of {n} bytes at {pos}");
            }
        });
    }
}
