//! A simulated disk for tests: in memory, deterministic, and as unkind as a
//! real device is allowed to be.
//!
//! # Why
//! A durability bug hides in the gap between "the write returned" and "the
//! write survives a power cut", and a real disk almost never shows that gap
//! in a test. This one always keeps it open: it remembers, for every file,
//! what reads see now and what would survive a cut, so a test can cut power
//! at any I/O operation and look at the worst the device could leave.
//!
//! # Model
//! - The device has a volatile write cache. Writes, truncates and
//!   preallocations are visible at once and join one list of unsynced
//!   operations, ordered as issued, across all files. `fdatasync` makes that
//!   file's operations durable.
//! - Creates, renames and removes are visible at once and join the same list;
//!   they become durable when their directory is synced, never with the
//!   file's `fdatasync` (POSIX promises no more, so a forgotten directory
//!   fsync loses the file). Directories made by `create_dir_all` are durable
//!   at once.
//! - [`SimDisk::power_cut_image`] is the disk after a power cut: the durable
//!   state plus a prefix of the unsynced list (the device wrote back some of
//!   its cache, in order), the last write of which may be torn at a 512-byte
//!   sector boundary. The choice is explicit so an explorer can enumerate
//!   it; [`SimDisk::random_power_cut_image`] draws it from a seed.
//!   [`SimDisk::reordered_power_cut_image`] drops the ordering: each cached
//!   data operation lands or not, as a device that writes its cache back
//!   in any order may leave it.
//!   [`SimDisk::kill_image`] is the disk after `kill -9`: everything that
//!   completed survives.
//! - Writes must be O_DIRECT-shaped (EINVAL otherwise), as the DMA disk's
//!   kernel would insist.
//! - Every operation is counted by kind ([`Op`]). Any one can be made to
//!   fail with an errno or, for a write, to come back short; from a chosen
//!   operation on, "power is cut" and everything fails with EIO. A failed
//!   operation changes nothing.
//!
//! Futures complete at once, so a run on one executor is a pure function of
//! its inputs and the seed: a failing case replays exactly. Completing at
//! once also means no other task runs while an operation is in flight;
//! [`SimDisk::set_delays`] delivers each result after a seeded number of
//! trips through the executor instead, to shake out races between the
//! tasks that share a disk (still deterministic).

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::future::{ready, Future};
use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};

use super::{Disk, DiskFile, IoFuture, BLOCK};

/// The unit a torn write lands in: a device writes whole sectors or none.
pub const SECTOR: usize = 512;

/// The kinds of operation the disk counts and can fail.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Op {
    Create,
    /// `create_dir_all` (start-up only).
    CreateDir,
    Open,
    Rename,
    Remove,
    SyncDir,
    List,
    Read,
    Write,
    Fdatasync,
    PreAllocate,
    Truncate,
    Size,
}

impl Op {
    pub const ALL: [Op; 13] = [
        Op::Create,
        Op::CreateDir,
        Op::Open,
        Op::Rename,
        Op::Remove,
        Op::SyncDir,
        Op::List,
        Op::Read,
        Op::Write,
        Op::Fdatasync,
        Op::PreAllocate,
        Op::Truncate,
        Op::Size,
    ];
}

/// Which operation a fault hits; indices count from 0.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Trigger {
    /// The n-th operation of any kind.
    Nth(u64),
    /// The n-th operation of this kind.
    NthOf(Op, u64),
    /// Every operation of this kind from the n-th operation of any kind on:
    /// a lasting condition (a full disk, a dead controller), not a glitch.
    From(Op, u64),
}

/// What an injected fault does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Fail with this errno (`libc::EIO`, `libc::ENOSPC`, ...).
    Errno(i32),
    /// For a write: write the first half, rounded down to a sector, and
    /// return that count. Any other operation fails with EIO.
    ShortWrite,
}

/// An injected fault that hit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fired {
    pub op: Op,
    /// The operation's index over all kinds.
    pub index: u64,
    /// The path operated on (a file's: the name it was opened by).
    pub path: PathBuf,
    pub fault: Fault,
}

type Ino = u64;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Entry {
    Dir,
    File(Ino),
}

/// A change to one file's content.
#[derive(Clone, Debug)]
enum Change {
    Write {
        pos: u64,
        data: Vec<u8>,
    },
    /// Sets the length (truncate).
    SetLen(u64),
    /// Grows to at least this length (preallocate).
    Grow(u64),
}

impl Change {
    fn apply(&self, content: &mut Vec<u8>) {
        match self {
            Change::Write { pos, data } => {
                let pos = *pos as usize;
                let end = pos + data.len();
                if content.len() < end {
                    content.resize(end, 0);
                }
                content[pos..end].copy_from_slice(data);
            }
            Change::SetLen(len) => content.resize(*len as usize, 0),
            Change::Grow(len) => {
                if content.len() < *len as usize {
                    content.resize(*len as usize, 0);
                }
            }
        }
    }
}

/// One operation in the volatile cache.
#[derive(Clone, Debug)]
enum Unsynced {
    Data(Ino, Change),
    /// Directory entries set (`Some`) or removed (`None`) together: a
    /// rename is one operation, so a prefix holds all of it or none.
    Names(Vec<(PathBuf, Option<Ino>)>),
}

#[derive(Clone, Default)]
struct Inode {
    visible: Vec<u8>,
    durable: Vec<u8>,
}

#[derive(Default)]
struct State {
    visible: BTreeMap<PathBuf, Entry>,
    durable: BTreeMap<PathBuf, Entry>,
    inodes: BTreeMap<Ino, Inode>,
    next_ino: Ino,
    unsynced: Vec<Unsynced>,
    ops: u64,
    ops_of: BTreeMap<Op, u64>,
    faults: Vec<(Trigger, Fault)>,
    fired: Vec<Fired>,
    /// How long completions take: a seeded number of executor trips, at
    /// most the second field.
    delays: Option<(SplitMix64, u32)>,
    /// Files behave as if opened O_DSYNC.
    dsync: bool,
    cut_at: Option<u64>,
}

fn err(errno: i32) -> io::Error {
    io::Error::from_raw_os_error(errno)
}

/// The directory holding `path`; the empty path and `/` are the root.
fn parent(path: &Path) -> &Path {
    path.parent().unwrap_or(Path::new(""))
}

fn is_root(path: &Path) -> bool {
    path.as_os_str().is_empty() || path == Path::new("/")
}

impl State {
    /// Counts an operation and decides whether it fails. `Ok(true)` asks a
    /// write to come back short.
    fn begin(&mut self, op: Op, path: &Path) -> io::Result<bool> {
        let n = self.ops;
        self.ops += 1;
        let of = self.ops_of.entry(op).or_insert(0);
        let n_of = *of;
        *of += 1;
        if self.cut_at.is_some_and(|cut| n >= cut) {
            return Err(err(libc::EIO));
        }
        let hit = self.faults.iter().position(|(t, _)| match *t {
            Trigger::Nth(i) => i == n,
            Trigger::NthOf(k, i) => k == op && i == n_of,
            Trigger::From(k, i) => k == op && n >= i,
        });
        let fault = hit.map(|i| match self.faults[i] {
            (Trigger::From(..), fault) => fault,
            _ => self.faults.remove(i).1,
        });
        if let Some(fault) = fault {
            self.fired.push(Fired {
                op,
                index: n,
                path: path.to_path_buf(),
                fault,
            });
        }
        match fault {
            None => Ok(false),
            Some(Fault::ShortWrite) if op == Op::Write => Ok(true),
            Some(Fault::ShortWrite) => Err(err(libc::EIO)),
            Some(Fault::Errno(e)) => Err(err(e)),
        }
    }

    /// Executor trips before the next operation's result is delivered.
    fn delay(&mut self) -> u32 {
        match &mut self.delays {
            Some((rng, max)) => rng.below(u64::from(*max) + 1) as u32,
            None => 0,
        }
    }

    fn is_dir(&self, path: &Path) -> bool {
        is_root(path) || self.visible.get(path) == Some(&Entry::Dir)
    }

    /// The inode at `path`, with POSIX's errors for what is not a file.
    fn file_at(&self, path: &Path) -> io::Result<Ino> {
        match self.visible.get(path) {
            Some(Entry::File(ino)) => Ok(*ino),
            Some(Entry::Dir) => Err(err(libc::EISDIR)),
            None if is_root(path) => Err(err(libc::EISDIR)),
            None => Err(err(libc::ENOENT)),
        }
    }

    fn change(&mut self, ino: Ino, change: Change) {
        let inode = self.inodes.get_mut(&ino).expect("open inode");
        change.apply(&mut inode.visible);
        self.unsynced.push(Unsynced::Data(ino, change));
    }

    fn set_names(&mut self, names: Vec<(PathBuf, Option<Ino>)>) {
        for (path, ino) in &names {
            match ino {
                Some(ino) => self.visible.insert(path.clone(), Entry::File(*ino)),
                None => self.visible.remove(path),
            };
        }
        self.unsynced.push(Unsynced::Names(names));
    }

    fn create(&mut self, path: &Path) -> io::Result<Ino> {
        self.begin(Op::Create, path)?;
        match self.visible.get(path) {
            Some(Entry::File(ino)) => {
                let ino = *ino;
                self.change(ino, Change::SetLen(0));
                Ok(ino)
            }
            Some(Entry::Dir) => Err(err(libc::EISDIR)),
            None if is_root(path) => Err(err(libc::EISDIR)),
            None if !self.is_dir(parent(path)) => Err(err(libc::ENOENT)),
            None => {
                let ino = self.next_ino;
                self.next_ino += 1;
                self.inodes.insert(ino, Inode::default());
                self.set_names(vec![(path.to_path_buf(), Some(ino))]);
                Ok(ino)
            }
        }
    }

    fn rename(&mut self, from: &Path, to: &Path) -> io::Result<()> {
        self.begin(Op::Rename, from)?;
        let ino = self.file_at(from)?;
        if !self.is_dir(parent(to)) {
            return Err(err(libc::ENOENT));
        }
        if self.is_dir(to) {
            return Err(err(libc::EISDIR));
        }
        if from != to {
            self.set_names(vec![
                (from.to_path_buf(), None),
                (to.to_path_buf(), Some(ino)),
            ]);
        }
        Ok(())
    }

    fn remove(&mut self, path: &Path) -> io::Result<()> {
        self.begin(Op::Remove, path)?;
        self.file_at(path)?;
        self.set_names(vec![(path.to_path_buf(), None)]);
        Ok(())
    }

    fn sync_dir(&mut self, dir: &Path) -> io::Result<()> {
        self.begin(Op::SyncDir, dir)?;
        if !self.is_dir(dir) {
            return Err(err(if self.visible.contains_key(dir) {
                libc::ENOTDIR
            } else {
                libc::ENOENT
            }));
        }
        let durable = &mut self.durable;
        self.unsynced.retain_mut(|u| match u {
            Unsynced::Data(..) => true,
            Unsynced::Names(names) => {
                names.retain(|(path, ino)| {
                    if parent(path) != dir {
                        return true;
                    }
                    set_entry(durable, path, *ino);
                    false
                });
                !names.is_empty()
            }
        });
        Ok(())
    }

    fn list(&mut self, dir: &Path) -> io::Result<Vec<String>> {
        self.begin(Op::List, dir)?;
        if !self.is_dir(dir) {
            return Err(err(if self.visible.contains_key(dir) {
                libc::ENOTDIR
            } else {
                libc::ENOENT
            }));
        }
        Ok(self
            .visible
            .keys()
            .filter(|p| parent(p) == dir && !is_root(p))
            .filter_map(|p| p.file_name()?.to_str().map(str::to_owned))
            .collect())
    }

    fn create_dir_all(&mut self, dir: &Path) -> io::Result<()> {
        self.begin(Op::CreateDir, dir)?;
        let mut todo = Vec::new();
        for d in dir.ancestors().filter(|d| !is_root(d)) {
            match self.visible.get(d) {
                Some(Entry::Dir) => break,
                Some(Entry::File(_)) => return Err(err(libc::ENOTDIR)),
                None => todo.push(d.to_path_buf()),
            }
        }
        for d in todo {
            self.visible.insert(d.clone(), Entry::Dir);
            self.durable.insert(d, Entry::Dir);
        }
        Ok(())
    }

    fn write_at(&mut self, f: &SimFile, pos: u64, data: &[u8]) -> io::Result<usize> {
        let short = self.begin(Op::Write, &f.path)?;
        if !pos.is_multiple_of(BLOCK) || !(data.len() as u64).is_multiple_of(BLOCK) {
            return Err(err(libc::EINVAL));
        }
        let len = if short {
            data.len() / 2 / SECTOR * SECTOR
        } else {
            data.len()
        };
        if len > 0 {
            let data = data[..len].to_vec();
            self.change(f.ino, Change::Write { pos, data });
        }
        Ok(len)
    }

    fn fdatasync(&mut self, f: &SimFile) -> io::Result<()> {
        self.begin(Op::Fdatasync, &f.path)?;
        let ino = f.ino;
        self.unsynced
            .retain(|u| !matches!(u, Unsynced::Data(i, _) if *i == ino));
        let inode = self.inodes.get_mut(&ino).expect("open inode");
        inode.durable.clone_from(&inode.visible);
        Ok(())
    }

    /// A disk holding `names` with the given content for each file, all of
    /// it durable.
    fn image(names: BTreeMap<PathBuf, Entry>, content: impl Fn(Ino) -> Vec<u8>) -> State {
        let mut inodes = BTreeMap::new();
        for entry in names.values() {
            if let Entry::File(ino) = entry {
                let data = content(*ino);
                inodes.insert(
                    *ino,
                    Inode {
                        visible: data.clone(),
                        durable: data,
                    },
                );
            }
        }
        State {
            visible: names.clone(),
            durable: names,
            next_ino: inodes.keys().next_back().map_or(0, |i| i + 1),
            inodes,
            ..State::default()
        }
    }
}

fn set_entry(names: &mut BTreeMap<PathBuf, Entry>, path: &Path, ino: Option<Ino>) {
    match ino {
        Some(ino) => names.insert(path.to_path_buf(), Entry::File(ino)),
        None => names.remove(path),
    };
}

/// The simulated disk. Clones share one device.
#[derive(Clone, Default)]
pub struct SimDisk(Rc<RefCell<State>>);

impl SimDisk {
    /// An empty disk.
    pub fn new() -> SimDisk {
        SimDisk::default()
    }

    /// Makes every operation's result arrive after a seeded number (up to
    /// `max`) of trips through the executor instead of at once, so other
    /// tasks run while an operation is in flight, as on a real device. The
    /// operation itself still happens when it is issued; runs stay
    /// deterministic.
    pub fn set_delays(&self, seed: u64, max: u32) {
        self.0.borrow_mut().delays = Some((SplitMix64(seed), max));
    }

    /// Makes every file behave as if opened O_DSYNC, as production does
    /// with `--sync always`: a write is a write followed by an fdatasync of
    /// its file, two operations (faults and power cuts can hit either), and
    /// completes only after both.
    pub fn set_durable_writes(&self, on: bool) {
        self.0.borrow_mut().dsync = on;
    }

    /// Operations issued so far (failed ones included).
    pub fn ops(&self) -> u64 {
        self.0.borrow().ops
    }

    /// Operations of one kind issued so far.
    pub fn ops_of(&self, op: Op) -> u64 {
        self.0.borrow().ops_of.get(&op).copied().unwrap_or(0)
    }

    /// Makes the operation `at` picks fail with `fault` (once, or for good
    /// with [`Trigger::From`]).
    pub fn inject(&self, at: Trigger, fault: Fault) {
        self.0.borrow_mut().faults.push((at, fault));
    }

    /// The injected faults that have hit so far, in order.
    pub fn fired(&self) -> Vec<Fired> {
        self.0.borrow().fired.clone()
    }

    /// Cuts power at operation `n` (counted over all kinds, from 0): it and
    /// every later operation fail with EIO.
    pub fn power_cut_at(&self, n: u64) {
        self.0.borrow_mut().cut_at = Some(n);
    }

    /// Whether an operation has hit the power cut.
    pub fn is_cut(&self) -> bool {
        let s = self.0.borrow();
        s.cut_at.is_some_and(|cut| s.ops > cut)
    }

    /// How many operations sit in the volatile cache.
    pub fn unsynced(&self) -> usize {
        self.0.borrow().unsynced.len()
    }

    /// The sectors of the `i`-th unsynced operation if it is a write (the
    /// ways it can tear), 0 otherwise.
    pub fn unsynced_sectors(&self, i: usize) -> usize {
        match self.0.borrow().unsynced.get(i) {
            Some(Unsynced::Data(_, Change::Write { data, .. })) => data.len() / SECTOR,
            _ => 0,
        }
    }

    /// The unsynced operations, one line each, in issue order (for
    /// failure reports).
    pub fn describe_unsynced(&self) -> Vec<String> {
        let s = self.0.borrow();
        let path_of = |ino: &Ino| {
            (s.visible.iter().chain(&s.durable))
                .find(|(_, e)| **e == Entry::File(*ino))
                .map_or_else(|| format!("inode {ino}"), |(p, _)| p.display().to_string())
        };
        s.unsynced
            .iter()
            .map(|u| match u {
                Unsynced::Data(ino, Change::Write { pos, data }) => {
                    format!("write {} at {pos}, {} bytes", path_of(ino), data.len())
                }
                Unsynced::Data(ino, c) => format!("{c:?} {}", path_of(ino)),
                Unsynced::Names(set) => format!("names {set:?}"),
            })
            .collect()
    }

    /// The disk after `kill -9`: every completed operation survives.
    pub fn kill_image(&self) -> SimDisk {
        let s = self.0.borrow();
        let state = State::image(s.visible.clone(), |ino| s.inodes[&ino].visible.clone());
        SimDisk(Rc::new(RefCell::new(state)))
    }

    /// The disk after a power cut: the durable state plus the first `keep`
    /// unsynced operations (clamped to how many there are). If the last
    /// kept operation is a write and `tear_sectors` is `Some(n)`, only its
    /// first `n` sectors land.
    pub fn power_cut_image(&self, keep: usize, tear_sectors: Option<usize>) -> SimDisk {
        let keep = keep.min(self.unsynced());
        self.image_with(|i, _| match tear_sectors {
            _ if i >= keep => Landing::Nothing,
            Some(n) if i + 1 == keep => Landing::Sectors(n),
            _ => Landing::All,
        })
    }

    /// The disk after a power cut on a device that writes its cache back in
    /// any order, as real ones do: each unsynced data operation lands or
    /// not, drawn from `seed`, and a write that lands may be torn. Name
    /// operations still land as a prefix (a file system journals them in
    /// order).
    pub fn reordered_power_cut_image(&self, seed: u64) -> SimDisk {
        let mut rng = SplitMix64(seed);
        let names = (self.0.borrow().unsynced.iter())
            .filter(|u| matches!(u, Unsynced::Names(_)))
            .count();
        let mut names_left = rng.below(names as u64 + 1);
        self.image_with(|_, u| match u {
            Unsynced::Names(_) if names_left > 0 => {
                names_left -= 1;
                Landing::All
            }
            Unsynced::Names(_) => Landing::Nothing,
            Unsynced::Data(_, Change::Write { data, .. }) => match rng.below(4) {
                0 => Landing::Nothing,
                1 => Landing::Sectors(rng.below((data.len() / SECTOR) as u64) as usize),
                _ => Landing::All,
            },
            Unsynced::Data(..) if rng.below(2) == 0 => Landing::Nothing,
            Unsynced::Data(..) => Landing::All,
        })
    }

    /// The durable state plus what `land` lets through of each unsynced
    /// operation, applied in issue order.
    fn image_with(&self, mut land: impl FnMut(usize, &Unsynced) -> Landing) -> SimDisk {
        let s = self.0.borrow();
        let mut names = s.durable.clone();
        let mut content: BTreeMap<Ino, Vec<u8>> = s
            .inodes
            .iter()
            .map(|(ino, i)| (*ino, i.durable.clone()))
            .collect();
        for (i, u) in s.unsynced.iter().enumerate() {
            let landing = land(i, u);
            match (u, landing) {
                (_, Landing::Nothing) => {}
                (Unsynced::Names(set), _) => {
                    for (path, ino) in set {
                        set_entry(&mut names, path, *ino);
                    }
                }
                (Unsynced::Data(ino, Change::Write { pos, data: w }), Landing::Sectors(n)) => {
                    let n = (n * SECTOR).min(w.len());
                    let torn = Change::Write {
                        pos: *pos,
                        data: w[..n].to_vec(),
                    };
                    torn.apply(content.get_mut(ino).expect("inode"));
                }
                (Unsynced::Data(ino, change), _) => {
                    change.apply(content.get_mut(ino).expect("inode"));
                }
            }
        }
        let state = State::image(names, |ino| content[&ino].clone());
        SimDisk(Rc::new(RefCell::new(state)))
    }

    /// A power-cut image with the cut point drawn from `seed`: any prefix
    /// of the cache, and half the time a torn last write.
    pub fn random_power_cut_image(&self, seed: u64) -> SimDisk {
        let mut rng = SplitMix64(seed);
        let keep = rng.below(self.unsynced() as u64 + 1) as usize;
        let sectors = keep.checked_sub(1).map_or(0, |i| self.unsynced_sectors(i));
        let tear = (sectors > 0 && rng.next().is_multiple_of(2))
            .then(|| rng.below(sectors as u64) as usize);
        self.power_cut_image(keep, tear)
    }
}

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
    ino: Ino,
    /// The name it was opened by (for reports; renames do not follow).
    path: PathBuf,
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

/// What of one unsynced operation reaches the medium in a power cut.
enum Landing {
    Nothing,
    All,
    /// The first n sectors of a write (all of any other operation).
    Sectors(usize),
}

/// splitmix64: tiny, and the same sequence on every platform and version.
#[derive(Clone, Debug)]
pub struct SplitMix64(pub u64);

impl SplitMix64 {
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform-enough in `0..n` (`n > 0`) for test choices.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_lite::future::block_on;
    use std::collections::BTreeSet;

    const B: usize = BLOCK as usize;

    fn dir() -> &'static Path {
        Path::new("/data/q")
    }

    fn disk() -> SimDisk {
        let d = SimDisk::new();
        block_on(d.create_dir_all(dir())).unwrap();
        d
    }

    fn read_all(d: &SimDisk, name: &str) -> io::Result<Vec<u8>> {
        block_on(async {
            let f = d.open(&dir().join(name)).await?;
            f.read_at(0, 1 << 20).await
        })
    }

    fn errno<T>(r: io::Result<T>) -> i32 {
        match r {
            Ok(_) => panic!("expected an error"),
            Err(e) => e.raw_os_error().expect("an errno"),
        }
    }

    #[test]
    fn writes_are_visible_at_once_and_durable_after_fdatasync_and_dir_sync() {
        let d = disk();
        let f = block_on(d.create(&dir().join("a"))).unwrap();
        block_on(f.write_at(0, &[1; B])).unwrap();
        assert_eq!(read_all(&d, "a").unwrap(), vec![1; B]);
        // Nothing synced: neither the name nor the data survive.
        assert_eq!(
            errno(read_all(&d.power_cut_image(0, None), "a")),
            libc::ENOENT
        );
        block_on(f.fdatasync()).unwrap();
        // Data synced, name not.
        assert_eq!(
            errno(read_all(&d.power_cut_image(0, None), "a")),
            libc::ENOENT
        );
        block_on(d.sync_dir(dir())).unwrap();
        assert_eq!(d.unsynced(), 0);
        assert_eq!(
            read_all(&d.power_cut_image(0, None), "a").unwrap(),
            vec![1; B]
        );
        // A later write is visible but not durable until the next fdatasync.
        block_on(f.write_at(B as u64, &[2; B])).unwrap();
        assert_eq!(read_all(&d, "a").unwrap().len(), 2 * B);
        assert_eq!(
            read_all(&d.power_cut_image(0, None), "a").unwrap(),
            vec![1; B]
        );
        assert_eq!(
            read_all(&d.power_cut_image(1, None), "a").unwrap().len(),
            2 * B
        );
    }

    #[test]
    fn fdatasync_covers_only_its_own_file() {
        let d = disk();
        let a = block_on(d.create(&dir().join("a"))).unwrap();
        let b = block_on(d.create(&dir().join("b"))).unwrap();
        block_on(d.sync_dir(dir())).unwrap();
        block_on(a.write_at(0, &[1; B])).unwrap();
        block_on(b.write_at(0, &[2; B])).unwrap();
        block_on(b.fdatasync()).unwrap();
        let img = d.power_cut_image(0, None);
        assert_eq!(read_all(&img, "a").unwrap(), Vec::<u8>::new());
        assert_eq!(read_all(&img, "b").unwrap(), vec![2; B]);
        assert_eq!(d.unsynced(), 1);
    }

    #[test]
    fn renames_and_removes_are_durable_only_after_sync_dir() {
        let d = disk();
        let f = block_on(d.create(&dir().join("tmp"))).unwrap();
        block_on(f.write_at(0, &[7; B])).unwrap();
        block_on(f.fdatasync()).unwrap();
        block_on(d.sync_dir(dir())).unwrap();
        block_on(d.rename(&dir().join("tmp"), &dir().join("final"))).unwrap();
        // The handle follows the inode.
        block_on(f.write_at(B as u64, &[8; B])).unwrap();
        assert_eq!(read_all(&d, "final").unwrap().len(), 2 * B);
        assert_eq!(errno(read_all(&d, "tmp")), libc::ENOENT);
        let img = d.power_cut_image(0, None);
        assert_eq!(read_all(&img, "tmp").unwrap(), vec![7; B]);
        assert_eq!(errno(read_all(&img, "final")), libc::ENOENT);
        block_on(d.sync_dir(dir())).unwrap();
        let img = d.power_cut_image(0, None);
        assert_eq!(read_all(&img, "final").unwrap(), vec![7; B]);
        assert_eq!(errno(read_all(&img, "tmp")), libc::ENOENT);

        // A removed file stays readable through its handle.
        block_on(d.remove(&dir().join("final"))).unwrap();
        assert_eq!(block_on(f.read_at(0, 2 * B)).unwrap().len(), 2 * B);
        assert_eq!(block_on(d.list(dir())).unwrap(), Vec::<String>::new());
        let img = d.power_cut_image(0, None);
        assert_eq!(
            block_on(img.list(dir())).unwrap(),
            vec!["final".to_string()]
        );
    }

    #[test]
    fn a_power_cut_keeps_a_prefix_and_may_tear_the_last_write_at_a_sector() {
        let d = disk();
        let f = block_on(d.create(&dir().join("a"))).unwrap();
        block_on(d.sync_dir(dir())).unwrap();
        block_on(f.write_at(0, &[1; B])).unwrap();
        block_on(f.write_at(B as u64, &[2; 2 * B])).unwrap();
        assert_eq!(d.unsynced(), 2);
        assert_eq!(d.unsynced_sectors(1), 2 * B / SECTOR);
        let img = d.power_cut_image(2, Some(3));
        let mut want = vec![1; B];
        want.extend_from_slice(&[2; 3 * SECTOR]);
        assert_eq!(read_all(&img, "a").unwrap(), want);
        assert_eq!(
            read_all(&d.power_cut_image(1, Some(3)), "a").unwrap(),
            vec![1; 3 * SECTOR]
        );
        // The seeded choice is always one of the explicit ones.
        for seed in 0..50 {
            let got = read_all(&d.random_power_cut_image(seed), "a").unwrap();
            assert!(got.len().is_multiple_of(SECTOR) && got.len() <= 3 * B);
            assert!(got.iter().take(B).all(|&b| b == 1));
            assert!(got.iter().skip(B).all(|&b| b == 2));
        }
    }

    #[test]
    fn a_reordering_device_may_land_a_later_write_without_an_earlier_one() {
        let d = disk();
        let f = block_on(d.create(&dir().join("a"))).unwrap();
        block_on(f.fdatasync()).unwrap();
        block_on(d.sync_dir(dir())).unwrap();
        block_on(f.write_at(0, &[1; B])).unwrap();
        block_on(f.write_at(B as u64, &[2; B])).unwrap();
        let mut outcomes = BTreeSet::new();
        for seed in 0..64 {
            let got = read_all(&d.reordered_power_cut_image(seed), "a").unwrap();
            let first = got.iter().take(B).filter(|&&b| b == 1).count();
            let second = got.iter().skip(B).filter(|&&b| b == 2).count();
            assert!(first.is_multiple_of(SECTOR) && second.is_multiple_of(SECTOR));
            outcomes.insert((first == B, second == B));
        }
        assert!(outcomes.contains(&(false, true)), "{outcomes:?}");
        assert_eq!(outcomes.len(), 4);
    }

    #[test]
    fn kill_image_keeps_every_completed_operation() {
        let d = disk();
        let f = block_on(d.create(&dir().join("a"))).unwrap();
        block_on(f.write_at(0, &[3; B])).unwrap();
        block_on(f.truncate(B as u64 / 2)).unwrap();
        block_on(f.pre_allocate(2 * B as u64)).unwrap();
        let img = d.kill_image();
        let mut want = vec![3; B / 2];
        want.resize(2 * B, 0);
        assert_eq!(read_all(&img, "a").unwrap(), want);
        assert_eq!(img.unsynced(), 0);
        assert_eq!(read_all(&img.power_cut_image(0, None), "a").unwrap(), want);
    }

    #[test]
    fn unaligned_writes_fail_with_einval_and_change_nothing() {
        let d = disk();
        let f = block_on(d.create(&dir().join("a"))).unwrap();
        assert_eq!(errno(block_on(f.write_at(0, &[1; 100]))), libc::EINVAL);
        assert_eq!(errno(block_on(f.write_at(512, &[1; B]))), libc::EINVAL);
        assert_eq!(block_on(f.size()).unwrap(), 0);
        // Reads need no alignment and stop at the end of the file.
        block_on(f.write_at(0, &[1; B])).unwrap();
        assert_eq!(
            block_on(f.read_at(B as u64 - 10, 100)).unwrap(),
            vec![1; 10]
        );
        assert_eq!(
            block_on(f.read_at(10 * B as u64, 100)).unwrap(),
            Vec::<u8>::new()
        );
    }

    #[test]
    fn faults_hit_the_chosen_operation_once_and_change_nothing() {
        let d = disk();
        let f = block_on(d.create(&dir().join("a"))).unwrap();
        d.inject(Trigger::NthOf(Op::Write, 1), Fault::Errno(libc::ENOSPC));
        d.inject(Trigger::NthOf(Op::Write, 2), Fault::ShortWrite);
        block_on(f.write_at(0, &[1; B])).unwrap();
        assert_eq!(errno(block_on(f.write_at(B as u64, &[2; B]))), libc::ENOSPC);
        assert_eq!(block_on(f.size()).unwrap(), B as u64);
        assert_eq!(block_on(f.write_at(B as u64, &[2; B])).unwrap(), B / 2);
        assert_eq!(block_on(f.size()).unwrap(), (B + B / 2) as u64);
        assert_eq!(block_on(f.write_at(B as u64, &[2; B])).unwrap(), B);

        let next = d.ops();
        d.inject(Trigger::Nth(next + 1), Fault::Errno(libc::EIO));
        block_on(f.fdatasync()).unwrap();
        assert_eq!(errno(block_on(f.fdatasync())), libc::EIO);
        assert_eq!(d.unsynced(), 1, "the create's name and nothing else");
        assert_eq!(d.ops_of(Op::Write), 4);
        let fired = d.fired();
        assert_eq!(fired.len(), 3);
        assert_eq!(fired[0].op, Op::Write);
        assert_eq!(fired[0].path, dir().join("a"));
        assert_eq!(fired[2].fault, Fault::Errno(libc::EIO));
        assert_eq!(d.ops_of(Op::Fdatasync), 2);
    }

    #[test]
    fn a_lasting_fault_hits_every_operation_of_its_kind_from_its_start() {
        let d = disk();
        let f = block_on(d.create(&dir().join("a"))).unwrap();
        d.inject(
            Trigger::From(Op::PreAllocate, d.ops() + 1),
            Fault::Errno(libc::ENOSPC),
        );
        block_on(f.pre_allocate(B as u64)).unwrap();
        for _ in 0..3 {
            assert_eq!(errno(block_on(f.pre_allocate(4 * B as u64))), libc::ENOSPC);
            block_on(f.write_at(0, &[1; B])).unwrap();
        }
        assert_eq!(d.fired().len(), 3);
    }

    #[test]
    fn a_power_cut_fails_everything_from_its_operation_on() {
        let d = disk();
        let f = block_on(d.create(&dir().join("a"))).unwrap();
        d.power_cut_at(d.ops() + 1);
        block_on(f.write_at(0, &[1; B])).unwrap();
        assert!(!d.is_cut());
        assert_eq!(errno(block_on(f.fdatasync())), libc::EIO);
        assert_eq!(errno(block_on(d.sync_dir(dir()))), libc::EIO);
        assert_eq!(errno(block_on(f.read_at(0, 1))), libc::EIO);
        assert!(d.is_cut());
        assert_eq!(d.unsynced(), 2);
    }

    #[test]
    fn delayed_results_arrive_later_but_the_operation_happens_when_issued() {
        let d = disk();
        d.set_delays(7, 3);
        let f = block_on(d.create(&dir().join("a"))).unwrap();
        let mut pending = 0;
        for i in 0..20u64 {
            let data = [i as u8; B];
            let mut w = f.write_at(i * B as u64, &data);
            assert_eq!(block_on(f.size()).unwrap(), (i + 1) * B as u64);
            let n = match block_on(futures_lite::future::poll_once(&mut w)) {
                Some(r) => r,
                None => {
                    pending += 1;
                    block_on(w)
                }
            };
            assert_eq!(n.unwrap(), B);
        }
        assert!(pending > 0 && pending < 20, "{pending} of 20 delayed");
    }

    #[test]
    fn names_follow_posix() {
        let d = disk();
        assert_eq!(errno(block_on(d.open(&dir().join("x")))), libc::ENOENT);
        assert_eq!(errno(block_on(d.remove(&dir().join("x")))), libc::ENOENT);
        assert_eq!(
            errno(block_on(d.create(Path::new("/nope/x")))),
            libc::ENOENT
        );
        assert_eq!(errno(block_on(d.open(dir()))), libc::EISDIR);
        assert_eq!(errno(block_on(d.create(dir()))), libc::EISDIR);
        block_on(d.create_dir_all(&dir().join("sub"))).unwrap();
        block_on(d.create(&dir().join("f"))).unwrap();
        assert_eq!(block_on(d.list(dir())).unwrap(), vec!["f", "sub"]);
        assert_eq!(block_on(d.list(Path::new("/data"))).unwrap(), vec!["q"]);
        // Re-creating truncates the same inode: an open handle sees it.
        let f = block_on(d.open(&dir().join("f"))).unwrap();
        block_on(f.write_at(0, &[1; B])).unwrap();
        block_on(d.create(&dir().join("f"))).unwrap();
        assert_eq!(block_on(f.size()).unwrap(), 0);
        assert_eq!(d.ops_of(Op::Create), 4);
    }
}
