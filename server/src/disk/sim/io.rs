//! [`SimDisk`] and [`SimFile`] behind the storage seam's traits: each call
//! applies its operation to the device state at once and hands back the
//! result, at once or after a seeded number of executor trips.

use std::future::{ready, Future};
use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};

use super::state::{Change, Ino, State};
use super::{Op, SimDisk};
use crate::disk::{Disk, DiskFile, IoFuture};

/// An operation's result, delivered after `yields` trips through the
/// executor (the operation itself already happened).
struct Delayed<T> {
    value: Option<io::Result<T>>,
    yields: u32,
}

impl<T> Unpin for Delayed<T> {}

impl<T> Future for Delayed<T> {
    type Output = io::Result<T>;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<T>> {
        if self.yields > 0 {
            self.yields -= 1;
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        Poll::Ready(self.value.take().expect("polled after completion"))
    }
}

impl SimDisk {
    fn done<'a, T: 'a>(&self, r: io::Result<T>) -> IoFuture<'a, T> {
        let yields = self.0.borrow_mut().delay();
        if yields == 0 {
            return Box::pin(ready(r));
        }
        Box::pin(Delayed {
            value: Some(r),
            yields,
        })
    }
}

impl Disk for SimDisk {
    fn create<'a>(&'a self, path: &'a Path) -> IoFuture<'a, Rc<dyn DiskFile>> {
        let r = self.0.borrow_mut().create(path);
        self.done(r.map(|ino| self.file(ino, path)))
    }

    fn open<'a>(&'a self, path: &'a Path) -> IoFuture<'a, Rc<dyn DiskFile>> {
        let r = {
            let mut s = self.0.borrow_mut();
            s.begin(Op::Open, path).and_then(|_| s.file_at(path))
        };
        self.done(r.map(|ino| self.file(ino, path)))
    }

    fn rename<'a>(&'a self, from: &'a Path, to: &'a Path) -> IoFuture<'a, ()> {
        let r = self.0.borrow_mut().rename(from, to);
        self.done(r)
    }

    fn remove<'a>(&'a self, path: &'a Path) -> IoFuture<'a, ()> {
        let r = self.0.borrow_mut().remove(path);
        self.done(r)
    }

    fn sync_dir<'a>(&'a self, dir: &'a Path) -> IoFuture<'a, ()> {
        let r = self.0.borrow_mut().sync_dir(dir);
        self.done(r)
    }

    fn list<'a>(&'a self, dir: &'a Path) -> IoFuture<'a, Vec<String>> {
        let r = self.0.borrow_mut().list(dir);
        self.done(r)
    }

    fn create_dir_all<'a>(&'a self, dir: &'a Path) -> IoFuture<'a, ()> {
        let r = self.0.borrow_mut().create_dir_all(dir);
        self.done(r)
    }
}

impl SimDisk {
    fn file(&self, ino: Ino, path: &Path) -> Rc<dyn DiskFile> {
        Rc::new(SimFile {
            disk: self.clone(),
            ino,
            path: path.to_path_buf(),
        })
    }
}

/// An open file of a [`SimDisk`]: an inode, not a name, so it survives
/// renames and removes.
pub struct SimFile {
    disk: SimDisk,
    pub(super) ino: Ino,
    /// The name it was opened by (for reports; renames do not follow).
    pub(super) path: PathBuf,
}

impl SimFile {
    fn with<T>(&self, op: Op, f: impl FnOnce(&mut State) -> T) -> io::Result<T> {
        let mut s = self.disk.0.borrow_mut();
        s.begin(op, &self.path)?;
        Ok(f(&mut s))
    }
}

impl DiskFile for SimFile {
    fn read_at(&self, pos: u64, len: usize) -> IoFuture<'_, Vec<u8>> {
        let r = self.with(Op::Read, |s| {
            let data = &s.inodes[&self.ino].visible;
            let start = (pos as usize).min(data.len());
            let end = start.saturating_add(len).min(data.len());
            data[start..end].to_vec()
        });
        self.disk.done(r)
    }

    fn write_at<'a>(&'a self, pos: u64, data: &'a [u8]) -> IoFuture<'a, usize> {
        let r = self.disk.0.borrow_mut().write_at(self, pos, data);
        if !self.durable_writes() {
            return self.disk.done(r);
        }
        Box::pin(async move {
            let n = self.disk.done(r).await?;
            let r = self.disk.0.borrow_mut().fdatasync(self);
            self.disk.done(r).await?;
            Ok(n)
        })
    }

    fn durable_writes(&self) -> bool {
        self.disk.0.borrow().dsync
    }

    fn fdatasync(&self) -> IoFuture<'_, ()> {
        let r = self.disk.0.borrow_mut().fdatasync(self);
        self.disk.done(r)
    }

    fn pre_allocate(&self, len: u64) -> IoFuture<'_, ()> {
        let r = self.with(Op::PreAllocate, |s| s.change(self.ino, Change::Grow(len)));
        self.disk.done(r)
    }

    fn truncate(&self, len: u64) -> IoFuture<'_, ()> {
        let r = self.with(Op::Truncate, |s| s.change(self.ino, Change::SetLen(len)));
        self.disk.done(r)
    }

    fn size(&self) -> IoFuture<'_, u64> {
        let r = self.with(Op::Size, |s| s.inodes[&self.ino].visible.len() as u64);
        self.disk.done(r)
    }
}
