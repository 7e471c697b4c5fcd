//! The simulated device's state: for every name and file, what reads see
//! now and what would survive a power cut, the volatile cache of
//! operations between the two, and what each operation does to all three.
//! Kept apart from the [`Disk`](crate::disk::Disk) plumbing so the model
//! can be read, and checked against POSIX, on its own.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};

use super::io::SimFile;
use super::{Fault, Fired, Op, SplitMix64, Trigger, SECTOR};
use crate::disk::BLOCK;

pub(super) type Ino = u64;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Entry {
    Dir,
    File(Ino),
}

/// A change to one file's content.
#[derive(Clone, Debug)]
pub(super) enum Change {
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
    pub(super) fn apply(&self, content: &mut Vec<u8>) {
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
pub(super) enum Unsynced {
    Data(Ino, Change),
    /// Directory entries set (`Some`) or removed (`None`) together: a
    /// rename is one operation, so a prefix holds all of it or none.
    Names(Vec<(PathBuf, Option<Ino>)>),
}

#[derive(Clone, Default)]
pub(super) struct Inode {
    pub(super) visible: Vec<u8>,
    pub(super) durable: Vec<u8>,
}

#[derive(Default)]
pub(super) struct State {
    pub(super) visible: BTreeMap<PathBuf, Entry>,
    pub(super) durable: BTreeMap<PathBuf, Entry>,
    pub(super) inodes: BTreeMap<Ino, Inode>,
    pub(super) next_ino: Ino,
    pub(super) unsynced: Vec<Unsynced>,
    pub(super) ops: u64,
    pub(super) ops_of: BTreeMap<Op, u64>,
    pub(super) faults: Vec<(Trigger, Fault)>,
    pub(super) fired: Vec<Fired>,
    /// How long completions take: a seeded number of executor trips, at
    /// most the second field.
    pub(super) delays: Option<(SplitMix64, u32)>,
    /// Files behave as if opened O_DSYNC.
    pub(super) dsync: bool,
    pub(super) cut_at: Option<u64>,
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
    pub(super) fn begin(&mut self, op: Op, path: &Path) -> io::Result<bool> {
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
    pub(super) fn delay(&mut self) -> u32 {
        match &mut self.delays {
            Some((rng, max)) => rng.below(u64::from(*max) + 1) as u32,
            None => 0,
        }
    }

    fn is_dir(&self, path: &Path) -> bool {
        is_root(path) || self.visible.get(path) == Some(&Entry::Dir)
    }

    /// The inode at `path`, with POSIX's errors for what is not a file.
    pub(super) fn file_at(&self, path: &Path) -> io::Result<Ino> {
        match self.visible.get(path) {
            Some(Entry::File(ino)) => Ok(*ino),
            Some(Entry::Dir) => Err(err(libc::EISDIR)),
            None if is_root(path) => Err(err(libc::EISDIR)),
            None => Err(err(libc::ENOENT)),
        }
    }

    /// Checks that `dir` is a directory, with POSIX's errors if not.
    fn dir_at(&self, dir: &Path) -> io::Result<()> {
        match self.visible.get(dir) {
            _ if self.is_dir(dir) => Ok(()),
            Some(_) => Err(err(libc::ENOTDIR)),
            None => Err(err(libc::ENOENT)),
        }
    }

    pub(super) fn change(&mut self, ino: Ino, change: Change) {
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

    pub(super) fn create(&mut self, path: &Path) -> io::Result<Ino> {
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

    pub(super) fn rename(&mut self, from: &Path, to: &Path) -> io::Result<()> {
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

    pub(super) fn remove(&mut self, path: &Path) -> io::Result<()> {
        self.begin(Op::Remove, path)?;
        self.file_at(path)?;
        self.set_names(vec![(path.to_path_buf(), None)]);
        Ok(())
    }

    pub(super) fn sync_dir(&mut self, dir: &Path) -> io::Result<()> {
        self.begin(Op::SyncDir, dir)?;
        self.dir_at(dir)?;
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

    pub(super) fn list(&mut self, dir: &Path) -> io::Result<Vec<String>> {
        self.begin(Op::List, dir)?;
        self.dir_at(dir)?;
        Ok(self
            .visible
            .keys()
            .filter(|p| parent(p) == dir && !is_root(p))
            .filter_map(|p| p.file_name()?.to_str().map(str::to_owned))
            .collect())
    }

    pub(super) fn create_dir_all(&mut self, dir: &Path) -> io::Result<()> {
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

    pub(super) fn write_at(&mut self, f: &SimFile, pos: u64, data: &[u8]) -> io::Result<usize> {
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

    pub(super) fn fdatasync(&mut self, f: &SimFile) -> io::Result<()> {
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
    pub(super) fn image(
        names: BTreeMap<PathBuf, Entry>,
        content: impl Fn(Ino) -> Vec<u8>,
    ) -> State {
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

pub(super) fn set_entry(names: &mut BTreeMap<PathBuf, Entry>, path: &Path, ino: Option<Ino>) {
    match ino {
        Some(ino) => names.insert(path.to_path_buf(), Entry::File(ino)),
        None => names.remove(path),
    };
}
