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
//!
//! # Layout
//! - here: the public vocabulary (operations, triggers, faults), the
//!   [`SimDisk`] handle with its knobs and counters, and the seeded
//!   [`SplitMix64`] every random choice draws from;
//! - `state`: the device model itself, what reads see and what would
//!   survive, and every operation's effect on both;
//! - `image`: the disk left by `kill -9` or a power cut;
//! - `io`: [`SimDisk`] and [`SimFile`] behind the `Disk` and `DiskFile`
//!   traits, with the optionally delayed completions;
//! - `tests`: the simulator's own tests, that it keeps the promises above.
//!
//! Compiled for unit tests and with the `sim` feature (the integration
//! tests turn it on), never into the release binary.

mod image;
mod io;
mod state;
#[cfg(test)]
mod tests;

use std::cell::RefCell;
use std::path::PathBuf;
use std::rc::Rc;

pub use io::SimFile;
use state::{Change, Entry, Ino, State, Unsynced};

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
