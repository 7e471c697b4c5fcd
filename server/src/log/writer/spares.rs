//! Spare segment files: what rolling takes, so the commit path never
//! creates a file (see the module doc of `writer`), and whether the next
//! one should have its zeros written.

use std::time::{Duration, Instant};

use super::segs::Spare;

/// Preallocated spare segment files kept ready; sets may not take the last.
pub(super) const SPARES: usize = 2;

/// How often a refused request makes maintenance try the spare again once
/// the disk was found full.
const DISK_FULL_RETRY: Duration = Duration::from_secs(1);

/// With `--sync always`, a new segment file gets its zeros written when the
/// log's recent device writes averaged less than this (see
/// `Log::zero_spare`). Writing the zeros costs a pass over the file (a
/// 64 MiB segment: ~65 ms of the development VM's device); not writing them
/// costs a journal commit with many of the O_DSYNC writes that later fill
/// it (~57 µs of device time per write, measured). They break even near
/// 1,100 writes per 64 MiB, about 60 KiB per write: small messages gain
/// (mixed-16c 1.37x the ops/s), while a stream of 8 MiB messages would
/// spend a third of the device on zeros and wait for spares (the fairness
/// test's small p99 went 82 -> 259 ms when every spare was zeroed).
pub(super) const ZERO_FILL_BELOW: u64 = 64 << 10;

/// The spares ready, and what maintenance should make next.
pub(super) struct Spares {
    ready: Vec<Spare>,
    /// The sets' (full-size) spare is wanted now.
    want_sets_spare: bool,
    /// A record waits for a spare (until one is made).
    awaited: bool,
    /// Even the largest ready spare is too small for what must go in a new
    /// segment now (its checkpoint grew with the queues since the spares
    /// were made): a larger one is to be made even though enough are
    /// ready, and it replaces the smallest.
    outgrown: bool,
    /// Creating a spare failed with ENOSPC/EDQUOT at this time; cleared
    /// when a segment is deleted, and retried now and then (space may be
    /// freed by others).
    disk_full: Option<Instant>,
    /// Whether the last spare had its zeros written, and the write counters
    /// then.
    zeroed: ZeroHint,
}

/// Why [`Spares::take`] gave no spare.
pub(super) enum NoSpare {
    /// The disk was found full: refuse. `retry`: long enough ago (see
    /// [`DISK_FULL_RETRY`]) that maintenance should try again.
    DiskFull { retry: bool },
    /// Maintenance should make the sets' spare: wait for it.
    Asked,
}

impl Spares {
    pub(super) fn new() -> Spares {
        Spares {
            ready: Vec::new(),
            want_sets_spare: false,
            awaited: false,
            outgrown: false,
            disk_full: None,
            zeroed: ZeroHint {
                zero: true,
                writes: 0,
                bytes: 0,
            },
        }
    }

    /// Takes the largest spare (the sets' one when there are two) if at
    /// least `needed` are ready and `holds` its size.
    pub(super) fn take(
        &mut self,
        needed: usize,
        holds: impl Fn(u64) -> bool,
    ) -> Result<Spare, NoSpare> {
        let largest = (0..self.ready.len()).max_by_key(|&i| self.ready[i].size);
        if let Some(i) = largest {
            if !holds(self.ready[i].size) {
                // Without this, with both spares ready and too small,
                // nothing would make another: the request would wait for
                // good.
                self.outgrown = true;
            } else if self.ready.len() >= needed {
                return Ok(self.ready.swap_remove(i));
            }
        }
        if let Some(since) = self.disk_full {
            let retry = since.elapsed() >= DISK_FULL_RETRY;
            if retry {
                self.disk_full = None;
            }
            return Err(NoSpare::DiskFull { retry });
        }
        self.want_sets_spare = true;
        self.awaited = true;
        Err(NoSpare::Asked)
    }

    pub(super) fn want_sets_spare(&mut self, want: bool) {
        self.want_sets_spare = want;
    }

    /// The size of the spare to make now, if one should be made: the
    /// consumers' (`small`) one whenever none is ready, the sets' (`full`)
    /// one beside it once it is wanted.
    pub(super) fn wanted(&self, small: u64, full: u64) -> Option<u64> {
        if self.disk_full.is_some() {
            return None;
        }
        if self.outgrown {
            return Some(full);
        }
        match self.ready.len() {
            0 => Some(small),
            1 if self.want_sets_spare => Some(full),
            _ => None,
        }
    }

    /// Whether the next spare should have its zeros written, by the device
    /// writes (`writes`, `bytes`: the log's counters) since the last
    /// decision; never while a record waits for it.
    pub(super) fn zero(&mut self, writes: u64, bytes: u64) -> bool {
        if self.awaited {
            return false;
        }
        self.zeroed = self.zeroed.next(writes, bytes);
        self.zeroed.zero
    }

    /// Takes `spare` in: whether it was, and the spare to delete (`spare`
    /// itself when enough are ready; the smallest ready one when `spare`
    /// was made because the ready ones were outgrown).
    pub(super) fn put(&mut self, spare: Spare) -> (bool, Option<Spare>) {
        if self.ready.len() >= SPARES {
            let smallest = (0..self.ready.len()).min_by_key(|&i| self.ready[i].size);
            return match smallest {
                Some(i) if self.outgrown && self.ready[i].size < spare.size => {
                    self.outgrown = false;
                    self.awaited = false;
                    (true, Some(std::mem::replace(&mut self.ready[i], spare)))
                }
                _ => (false, Some(spare)),
            };
        }
        if self.outgrown && self.ready.iter().all(|s| s.size < spare.size) {
            self.outgrown = false;
        }
        self.ready.push(spare);
        self.awaited = false;
        if self.ready.len() == SPARES {
            self.want_sets_spare = false;
        }
        (true, None)
    }

    pub(super) fn set_disk_full(&mut self) {
        self.disk_full = Some(Instant::now());
    }

    pub(super) fn space_freed(&mut self) {
        self.disk_full = None;
    }

    pub(super) fn take_all(&mut self) -> Vec<Spare> {
        std::mem::take(&mut self.ready)
    }

    /// Bytes the ready spares take on disk.
    pub(super) fn bytes(&self) -> u64 {
        self.ready.iter().map(|s| s.size).sum()
    }
}

/// What the zero decision was last, and the device writes and bytes
/// counted when it was made.
#[derive(Clone, Copy, Debug, PartialEq)]
struct ZeroHint {
    zero: bool,
    writes: u64,
    bytes: u64,
}

impl ZeroHint {
    /// The decision now that the log has counted `writes` device writes of
    /// `bytes` in all: by their mean since the last decision, or the last
    /// decision again if nothing was written since (or the counters went
    /// back).
    fn next(self, writes: u64, bytes: u64) -> ZeroHint {
        let zero = match (
            writes.checked_sub(self.writes),
            bytes.checked_sub(self.bytes),
        ) {
            (Some(w), Some(b)) if w > 0 => b / w < ZERO_FILL_BELOW,
            _ => self.zero,
        };
        ZeroHint {
            zero,
            writes,
            bytes,
        }
    }
}

#[cfg(test)]
mod zero_hint_tests {
    use super::{ZeroHint, ZERO_FILL_BELOW};

    #[test]
    fn zeros_are_written_while_recent_writes_are_small() {
        let start = ZeroHint {
            zero: true,
            writes: 0,
            bytes: 0,
        };
        // Nothing written yet: small messages assumed.
        assert!(start.next(0, 0).zero);
        // 1,000 writes of 4 KiB, then a stream of 256 KiB chunks.
        let small = start.next(1000, 4096 * 1000);
        assert!(small.zero);
        let large = small.next(1100, 4096 * 1000 + (256 << 10) * 100);
        assert!(!large.zero);
        // No writes since: the last decision stands.
        assert_eq!(large.next(1100, large.bytes), large);
        // Back to small writes: only the writes since the last decision count.
        assert!(large.next(2100, large.bytes + 4096 * 1000).zero);
        // At the threshold itself zeros no longer pay.
        assert!(!start.next(1, ZERO_FILL_BELOW).zero);
        assert!(start.next(1, ZERO_FILL_BELOW - 1).zero);
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;
    use std::rc::Rc;

    use super::{NoSpare, Spare, Spares, SPARES};
    use crate::disk::{DiskFile, IoFuture};

    /// A spare's file, never used here.
    struct Unused;

    impl DiskFile for Unused {
        fn read_at(&self, _: u64, _: usize) -> IoFuture<'_, Vec<u8>> {
            Box::pin(async { Err(std::io::Error::other("unused")) })
        }
        fn write_at<'a>(&'a self, _: u64, _: &'a [u8]) -> IoFuture<'a, usize> {
            Box::pin(async { Err(std::io::Error::other("unused")) })
        }
        fn fdatasync(&self) -> IoFuture<'_, ()> {
            Box::pin(async { Ok(()) })
        }
        fn pre_allocate(&self, _: u64) -> IoFuture<'_, ()> {
            Box::pin(async { Ok(()) })
        }
        fn truncate(&self, _: u64) -> IoFuture<'_, ()> {
            Box::pin(async { Ok(()) })
        }
        fn size(&self) -> IoFuture<'_, u64> {
            Box::pin(async { Ok(0) })
        }
    }

    fn spare(size: u64) -> Spare {
        Spare {
            path: PathBuf::from(format!("spare-{size}")),
            file: Rc::new(Unused),
            size,
        }
    }

    /// Both spares ready and both too small for the checkpoint a new
    /// segment must now hold (the queues grew since they were made): a
    /// larger one is wanted anyway, replaces the smallest, and is taken.
    #[test]
    fn outgrown_spares_are_replaced_not_waited_for() {
        let put = |s: &mut Spares, size: u64| {
            let (taken, unused) = s.put(spare(size));
            (taken, unused.map(|u| u.size))
        };
        let mut s = Spares::new();
        assert_eq!(put(&mut s, 8), (true, None));
        assert_eq!(s.wanted(8, 64), None, "the sets' spare is not wanted yet");
        s.want_sets_spare(true);
        assert_eq!(s.wanted(8, 64), Some(64));
        assert_eq!(put(&mut s, 64), (true, None));
        assert_eq!(s.wanted(8, 64), None, "{SPARES} ready");
        // The checkpoint now needs more than 64.
        let holds = |size: u64| size >= 100;
        assert!(matches!(s.take(SPARES, holds), Err(NoSpare::Asked)));
        assert_eq!(s.wanted(16, 128), Some(128), "outgrown: one more wanted");
        assert_eq!(put(&mut s, 128), (true, Some(8)), "the smallest goes");
        assert_eq!(s.wanted(16, 128), None);
        assert_eq!(s.take(SPARES, holds).ok().map(|t| t.size), Some(128));
        // A spare that comes when none is wanted is given back.
        s.want_sets_spare(false);
        assert_eq!(put(&mut s, 32), (true, None));
        assert_eq!(put(&mut s, 16), (false, Some(16)));
    }
}
