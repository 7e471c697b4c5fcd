//! The read-ahead cache: records read back from their segments through
//! large sequential reads.
//!
//! # Why
//! A consumer that lags behind its producers (and every consumer after a
//! restart) reads messages the hot cache no longer holds. Read one 4 KiB
//! O_DIRECT block per message, one after another, a queue filled at 600k
//! messages/s drained at 8–57k/s: the device's latency, not its bandwidth,
//! set the pace. But the records a drain reads lie in their segment in the
//! order it reads them, and so do the records of every queue written in the
//! same stretch of time: one large read serves thousands of gets, of
//! whichever queues.
//!
//! # How
//! - A segment is read in aligned chunks of [`CHUNK`] bytes, kept per
//!   shard in a cache bounded by a byte budget (`--readahead-size` shared
//!   out among the shards, [`DEFAULT_BUDGET`] each by default); the least
//!   recently used chunk goes first. Memory stays bounded whatever the
//!   backlog: the chunks held, plus [`READS_IN_FLIGHT`] being read.
//! - A record is copied out of the chunk (or the two chunks, when it
//!   straddles a boundary) that holds it; the caller verifies it
//!   (`record::decode`), so a damaged record is reported as before.
//! - Concurrent misses on one chunk share its read. A read runs in a task
//!   of its own, so a get that gives up (its connection closed) leaves it
//!   to the others.
//! - A record read from chunk `k` starts chunk `k + 1` (or the next
//!   segment's first) when it is not held and no other read is in flight:
//!   a sequential drain finds its next chunk read already.
//! - At most [`READS_IN_FLIGHT`] chunk reads are in flight per shard, each
//!   issued by the disk layer in pieces a few at a time (`disk::dma`), so a
//!   drain never queues more than a few MiB of reads at the device ahead of
//!   the group commit's writes.
//! - What a chunk holds is valid only up to what was written when its read
//!   was issued ([`Source::readable`]): the open segment grows, and a chunk
//!   read from it earlier is read again for a record past that.
//! - Records larger than [`CACHED_MAX`] are not cached (a large body is
//!   read whole, in pieces, by the disk layer; copying it out of chunks
//!   would only add a copy), nor are out-of-line bodies (`log::region`),
//!   whose region may be written after the records around it: the caller
//!   reads those directly.
//! - A deleted segment's chunks are dropped ([`ReadAhead::forget`]); a read
//!   of one still in flight lands nowhere. Ordinals are not reused within a
//!   run, and the cache starts empty with each run, so a chunk never serves
//!   another segment.

use std::cell::RefCell;
use std::collections::HashMap;
use std::io;
use std::rc::Rc;
use std::task::{Poll, Waker};

use crate::disk::{DiskFile, BLOCK};

/// Bytes of a segment read at once: large enough that a drain is a few
/// reads per thousand messages, small enough that the budget holds a chunk
/// of every queue a shard's consumers read from different places.
pub const CHUNK: u64 = 1 << 20;

/// Chunk reads in flight per shard.
pub const READS_IN_FLIGHT: usize = 2;

/// The byte budget of one shard's cache unless `--readahead-size` says
/// otherwise.
pub const DEFAULT_BUDGET: usize = 32 << 20;

/// Records larger than this are read directly (see the module doc).
pub const CACHED_MAX: usize = 256 << 10;

// A record spans at most two chunks.
const _: () = assert!(CACHED_MAX as u64 <= CHUNK);

/// What the log says about a segment, for reading it.
#[derive(Clone)]
pub struct Source {
    pub file: Rc<dyn DiskFile>,
    /// Bytes from the start of the segment that are written (out-of-line
    /// regions aside): what a read issued now may keep.
    pub readable: u64,
}

/// Counters, shown by `stats` (summed over the shards) as `readahead_*`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReadAheadStats {
    /// Records found in a held chunk.
    pub hits: u64,
    /// Records that had to wait for a chunk read.
    pub misses: u64,
    /// Misses that joined a read another get (or the read-ahead) started.
    pub shared: u64,
    /// Chunk reads issued ...
    pub reads: u64,
    /// ... of which ahead of any get.
    pub ahead: u64,
    pub bytes_read: u64,
    /// Chunks dropped for the budget.
    pub evicted: u64,
    /// Bytes held now (chunks, and chunks being read).
    pub bytes: u64,
}

impl ReadAheadStats {
    /// Adds another shard's counters to these.
    pub fn add(&mut self, other: &ReadAheadStats) {
        self.hits += other.hits;
        self.misses += other.misses;
        self.shared += other.shared;
        self.reads += other.reads;
        self.ahead += other.ahead;
        self.bytes_read += other.bytes_read;
        self.evicted += other.evicted;
        self.bytes += other.bytes;
    }
}

type Key = (u32, u64);

/// A chunk read to run (see [`ReadAhead::start`]).
struct Launch {
    key: Key,
    load: Rc<Load>,
    file: Rc<dyn DiskFile>,
    valid: usize,
}

/// A chunk read in flight, and who waits for it.
struct Load {
    done: RefCell<Option<io::Result<Rc<Vec<u8>>>>>,
    waiters: RefCell<Vec<Waker>>,
}

enum Entry {
    Loading(Rc<Load>),
    /// `data` is the chunk's valid bytes; `used` when last read.
    Ready {
        data: Rc<Vec<u8>>,
        used: u64,
    },
}

struct Inner {
    budget: usize,
    entries: HashMap<Key, Entry>,
    /// Bytes of ready chunks, plus [`CHUNK`] per read in flight.
    bytes: usize,
    reads: usize,
    /// Gets waiting for a read to finish (a slot, or a chunk).
    slot_waiters: Vec<Waker>,
    clock: u64,
    stats: ReadAheadStats,
}

/// One shard's read-ahead cache (see the module doc).
pub struct ReadAhead {
    inner: RefCell<Inner>,
}

impl ReadAhead {
    /// The least budget: room for the reads in flight and two chunks.
    pub const MIN_BUDGET: usize = (READS_IN_FLIGHT + 2) * CHUNK as usize;

    /// A cache of `budget` bytes (raised to [`ReadAhead::MIN_BUDGET`]).
    pub fn new(budget: usize) -> Rc<ReadAhead> {
        Rc::new(ReadAhead {
            inner: RefCell::new(Inner {
                budget: budget.max(Self::MIN_BUDGET),
                entries: HashMap::new(),
                bytes: 0,
                reads: 0,
                slot_waiters: Vec::new(),
                clock: 0,
                stats: ReadAheadStats::default(),
            }),
        })
    }

    /// Whether a record of `len` bytes goes through the cache (see
    /// [`CACHED_MAX`]).
    pub fn cacheable(len: usize) -> bool {
        len > 0 && len <= CACHED_MAX
    }

    /// Sets the budget to `budget` bytes (raised to
    /// [`ReadAhead::MIN_BUDGET`]); a smaller one than before drops least
    /// recently used chunks until what is held fits it.
    pub fn set_budget(&self, budget: usize) {
        let mut inner = self.inner.borrow_mut();
        inner.budget = budget.max(Self::MIN_BUDGET);
        inner.make_room(0);
    }

    /// The budget in force.
    pub fn budget(&self) -> usize {
        self.inner.borrow().budget
    }

    pub fn stats(&self) -> ReadAheadStats {
        let inner = self.inner.borrow();
        ReadAheadStats {
            bytes: inner.bytes as u64,
            ..inner.stats
        }
    }

    /// Bytes `[off, off + len)` of segment `seg` if held chunks have them.
    pub fn cached(&self, seg: u32, off: u64, len: usize) -> Option<Vec<u8>> {
        let mut inner = self.inner.borrow_mut();
        let bytes = inner.copy_out(seg, off, len)?;
        inner.stats.hits += 1;
        Some(bytes)
    }

    /// After a read at `off` of segment `seg` (`src`): starts reading the
    /// chunk after `off`'s, or when `off`'s is the segment's last written
    /// one the first of the segment `next` names, unless it is held or any
    /// read is in flight.
    pub fn read_ahead(
        self: &Rc<Self>,
        seg: u32,
        off: u64,
        src: &Source,
        next: impl FnOnce() -> Option<(u32, Source)>,
    ) {
        let k = off / CHUNK + 1;
        let mut inner = self.inner.borrow_mut();
        if inner.reads > 0 {
            return;
        }
        if k * CHUNK < src.readable {
            if !inner.entries.contains_key(&(seg, k)) {
                inner.stats.ahead += 1;
                let read = self.start(&mut inner, (seg, k), src);
                drop(inner);
                self.launch(read);
            }
            return;
        }
        drop(inner);
        let Some((next_seg, next_src)) = next() else {
            return;
        };
        let mut inner = self.inner.borrow_mut();
        if inner.reads == 0 && next_src.readable > 0 && !inner.entries.contains_key(&(next_seg, 0))
        {
            inner.stats.ahead += 1;
            let read = self.start(&mut inner, (next_seg, 0), &next_src);
            drop(inner);
            self.launch(read);
        }
    }

    /// Bytes `[off, off + len)` of segment `seg` (`src`), through the
    /// cache: from held chunks, or once the chunks holding them are read.
    /// `src.readable` must cover them. Fewer bytes come back only where the
    /// file ends first.
    pub async fn read(
        self: &Rc<Self>,
        seg: u32,
        off: u64,
        len: usize,
        src: &Source,
    ) -> io::Result<Vec<u8>> {
        if let Some(bytes) = self.cached(seg, off, len) {
            return Ok(bytes);
        }
        self.inner.borrow_mut().stats.misses += 1;
        let end = off + len as u64;
        let mut out = Vec::with_capacity(len);
        let mut k = off / CHUNK;
        while k * CHUNK < end {
            let Some(data) = self.chunk(seg, k, end, src).await? else {
                // A chunk kept coming back too short (the file changed
                // under the reads): read the record alone.
                return src.file.read_at(off, len).await;
            };
            let base = k * CHUNK;
            let from = (off.max(base) - base) as usize;
            let to = ((end.min(base + CHUNK) - base) as usize).min(data.len());
            if from < to {
                out.extend_from_slice(&data[from..to]);
            }
            if to < (end.min(base + CHUNK) - base) as usize {
                break; // the file ends here
            }
            k += 1;
        }
        Ok(out)
    }

    /// Drops every chunk of segment `seg` (it was deleted); a read of one
    /// in flight is not kept when it lands.
    pub fn forget(&self, seg: u32) {
        let mut inner = self.inner.borrow_mut();
        let mut freed = 0;
        inner.entries.retain(|&(s, _), e| {
            if s != seg {
                return true;
            }
            if let Entry::Ready { data, .. } = e {
                freed += data.len();
            }
            false
        });
        inner.bytes -= freed;
    }

    /// Chunk `k` of segment `seg`, valid up to `end` at least (or up to
    /// where the file ends): held, being read, or read now. `None` when
    /// chunks kept coming back shorter than `src` said they would be.
    async fn chunk(
        self: &Rc<Self>,
        seg: u32,
        k: u64,
        end: u64,
        src: &Source,
    ) -> io::Result<Option<Rc<Vec<u8>>>> {
        let key = (seg, k);
        let need = (end.min((k + 1) * CHUNK) - k * CHUNK) as usize;
        for _ in 0..4 {
            enum Step {
                Wait(Rc<Load>),
                Launch(Launch),
                Slot,
            }
            let step = {
                let mut inner = self.inner.borrow_mut();
                inner.clock += 1;
                let clock = inner.clock;
                let slot_free = inner.reads < READS_IN_FLIGHT;
                match inner.entries.get_mut(&key) {
                    Some(Entry::Ready { data, used }) if data.len() >= need => {
                        *used = clock;
                        return Ok(Some(data.clone()));
                    }
                    Some(Entry::Loading(load)) => {
                        let load = load.clone();
                        inner.stats.shared += 1;
                        Step::Wait(load)
                    }
                    // Absent, or read before the bytes wanted were written.
                    _ if slot_free => Step::Launch(self.start(&mut inner, key, src)),
                    _ => Step::Slot,
                }
            };
            match step {
                Step::Wait(load) => {
                    let data = wait(&load).await?;
                    if data.len() >= need {
                        return Ok(Some(data));
                    }
                }
                Step::Launch(read) => {
                    // Our own read covers what `src` says is written: if it
                    // comes back shorter, the file ends there.
                    return wait(&self.launch(read)).await.map(Some);
                }
                Step::Slot => self.slot().await,
            }
        }
        Ok(None)
    }

    /// Takes a slot for a read of chunk `key` of `src` and marks it being
    /// read (replacing what is held of it); [`ReadAhead::launch`] the
    /// returned read once `inner` is no longer borrowed: glommio runs a new
    /// task's first poll at once, and a read that completes in it lands
    /// here again.
    fn start(&self, inner: &mut Inner, key: Key, src: &Source) -> Launch {
        let base = key.1 * CHUNK;
        let valid = src.readable.saturating_sub(base).min(CHUNK) as usize;
        if let Some(Entry::Ready { data, .. }) = inner.entries.remove(&key) {
            inner.bytes -= data.len();
        }
        inner.make_room(CHUNK as usize);
        inner.bytes += CHUNK as usize;
        inner.reads += 1;
        inner.stats.reads += 1;
        let load = Rc::new(Load {
            done: RefCell::new(None),
            waiters: RefCell::new(Vec::new()),
        });
        inner.entries.insert(key, Entry::Loading(load.clone()));
        Launch {
            key,
            load,
            file: src.file.clone(),
            valid,
        }
    }

    /// Runs read `l` in a task of its own; returns what it will land in.
    fn launch(self: &Rc<Self>, l: Launch) -> Rc<Load> {
        let Launch {
            key,
            load,
            file,
            valid,
        } = l;
        let (this, landing) = (self.clone(), load.clone());
        glommio::spawn_local(async move {
            let res = if valid == 0 {
                Ok(Vec::new())
            } else {
                let size = (valid as u64).next_multiple_of(BLOCK) as usize;
                file.read_at(key.1 * CHUNK, size).await
            };
            this.finish(key, &landing, res, valid);
        })
        .detach();
        load
    }

    /// The read of chunk `key` (`load`) is done: keep it if it is still
    /// wanted, and hand it to whoever waits.
    fn finish(&self, key: Key, load: &Rc<Load>, res: io::Result<Vec<u8>>, valid: usize) {
        let slot_waiters = {
            let mut inner = self.inner.borrow_mut();
            inner.reads -= 1;
            inner.bytes -= CHUNK as usize;
            let current =
                matches!(inner.entries.get(&key), Some(Entry::Loading(l)) if Rc::ptr_eq(l, load));
            let res = res.map(|mut data| {
                data.truncate(valid);
                inner.stats.bytes_read += data.len() as u64;
                Rc::new(data)
            });
            match &res {
                Ok(data) if current => {
                    inner.clock += 1;
                    inner.bytes += data.len();
                    let used = inner.clock;
                    let data = data.clone();
                    inner.entries.insert(key, Entry::Ready { data, used });
                }
                Err(_) if current => {
                    inner.entries.remove(&key);
                }
                _ => {}
            }
            *load.done.borrow_mut() = Some(res);
            std::mem::take(&mut inner.slot_waiters)
        };
        for w in load.waiters.borrow_mut().drain(..) {
            w.wake();
        }
        for w in slot_waiters {
            w.wake();
        }
    }

    /// Resolves once some read in flight finished (or at once if none is).
    async fn slot(&self) {
        let mut waited = false;
        std::future::poll_fn(|cx| {
            let mut inner = self.inner.borrow_mut();
            if waited || inner.reads < READS_IN_FLIGHT {
                return Poll::Ready(());
            }
            waited = true;
            inner.slot_waiters.push(cx.waker().clone());
            Poll::Pending
        })
        .await
    }
}

impl Inner {
    /// Bytes `[off, off + len)` of segment `seg` from held chunks.
    fn copy_out(&mut self, seg: u32, off: u64, len: usize) -> Option<Vec<u8>> {
        let end = off + len as u64;
        self.clock += 1;
        let clock = self.clock;
        let mut out = Vec::with_capacity(len);
        let mut k = off / CHUNK;
        while k * CHUNK < end {
            let base = k * CHUNK;
            let Some(Entry::Ready { data, used }) = self.entries.get_mut(&(seg, k)) else {
                return None;
            };
            let from = (off.max(base) - base) as usize;
            let to = (end.min(base + CHUNK) - base) as usize;
            if to > data.len() {
                return None;
            }
            *used = clock;
            out.extend_from_slice(&data[from..to]);
            k += 1;
        }
        Some(out)
    }

    /// Drops least recently used chunks until `need` more bytes fit the
    /// budget (or only reads in flight are left).
    fn make_room(&mut self, need: usize) {
        while self.bytes + need > self.budget {
            let oldest = self
                .entries
                .iter()
                .filter_map(|(k, e)| match e {
                    Entry::Ready { used, .. } => Some((*used, *k)),
                    Entry::Loading(_) => None,
                })
                .min();
            let Some((_, key)) = oldest else { break };
            if let Some(Entry::Ready { data, .. }) = self.entries.remove(&key) {
                self.bytes -= data.len();
                self.stats.evicted += 1;
            }
        }
    }
}

/// The outcome of `load`, once it is there.
async fn wait(load: &Load) -> io::Result<Rc<Vec<u8>>> {
    std::future::poll_fn(|cx| match &*load.done.borrow() {
        Some(Ok(data)) => Poll::Ready(Ok(data.clone())),
        Some(Err(e)) => Poll::Ready(Err(copy_error(e))),
        None => {
            load.waiters.borrow_mut().push(cx.waker().clone());
            Poll::Pending
        }
    })
    .await
}

/// A copy of `e` for another waiter, keeping its errno.
fn copy_error(e: &io::Error) -> io::Error {
    match e.raw_os_error() {
        Some(n) => io::Error::from_raw_os_error(n),
        None => io::Error::new(e.kind(), e.to_string()),
    }
}

#[cfg(test)]
#[path = "readahead_tests.rs"]
mod tests;
