//! One storage shard: the queues whose names hash to it, and the log that
//! makes them durable.
//!
//! # Why this seam
//! Everything above this module (`net`, `shard`) speaks to a [`Store`] only
//! through `set`, `get`, `delete` and the two stats calls. Each call applies
//! its change to the in-memory queue state *synchronously*, at the moment it
//! is called, and returns a future that resolves when the change is as
//! durable as the sync mode promises. That split is what lets a connection
//! submit a whole pipeline of requests at once (so one group commit carries
//! them all) while replies still come back in request order, and what makes
//! a `get` that follows a `set` on the same connection see that `set`.
//!
//! A `Store` is `!Send`: it lives on the executor that owns its shard and is
//! touched by that executor only.
//!
//! # What each call does
//! - `set` appends an `Enqueued` record (after a `Created` record for a new
//!   queue) to the log's tail buffer, pushes a 24-byte locator onto the
//!   queue, keeps the body in the hot cache, and waits for the record's
//!   group commit. A body of 1 MiB or more goes out of line instead
//!   (`log::region`): a `Region` record in the tail, the body written by a
//!   task of its own, which the set (and a get of the message meanwhile)
//!   waits for too; the body reaches the cache once written
//!   (`out_of_line`).
//! - `get` pops the head locator, appends a `Consumed` record, and waits for
//!   its commit; the body comes from the hot cache or, for a consumer that
//!   lags, from a DMA read of its record (checksum verified).
//! - `take` with [`Take::Open`] (a reliable read) moves the head locator
//!   to the queue's open messages and appends nothing; `confirm` consumes
//!   it as a pop would (a `Consumed` record, or a `Confirmed` one when a
//!   lower message is still open: see `log::confirmed`); `abort` puts it
//!   back in sequence order, which is the head. [`Take::Peek`] copies the
//!   head.
//! - `delete` appends a `Deleted` record and drops the queue's locators.
//!
//! Background tasks per store: the group-commit task
//! ([`crate::log::commit::committer`]), the interval syncer (with
//! `--sync interval`), and maintenance ([`crate::log::compaction`]): index
//! files for sealed segments, deleting consumed segments, the spare segment
//! file, compaction. The log reaches its files through a
//! [`crate::disk::Disk`]: glommio's DMA files in production
//! ([`Store::open`]), a simulated disk in tests ([`Store::open_on`]).

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::future::Future;
use std::io;
use std::path::PathBuf;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use crate::cache::HotCache;
use crate::disk::dma::DmaDisk;
use crate::disk::Disk;
use crate::idhash::IdMap;
use crate::limits::{Limits, QueueLimits, SharedLimits};
use crate::log::commit::{self, Acked};
use crate::log::error::IoFailure;
use crate::log::record::{self, Kind};
use crate::log::region::{self, Region};
use crate::log::writer::{now_us, LogConfig, MessageMeta, NoRoom, SharedLog};
use crate::log::{compaction, recovery, segment, Loc, Locators, Log, Pos};
use crate::queue::Queue;

pub use crate::queue::Reader;

pub use crate::log::{LogError, SyncMode};
use crate::stats::{QueueStat, StoreStats};

mod body;
mod gate;
mod moves;
mod out_of_line;
mod replay;
mod reply;
mod waiters;
pub use body::Body;
use gate::Gate;
pub use moves::Forward;
use moves::Moves;
use out_of_line::OutOfLine;
pub use reply::Reply;
use waiters::{Waiter, Waiters};

/// A future local to the executor that owns the store.
pub type LocalFuture<T> = Pin<Box<dyn Future<Output = T> + 'static>>;

/// Everything a storage shard needs to open.
#[derive(Clone, Debug)]
pub struct StoreConfig {
    /// This shard's own directory (`<data-dir>/shard-NNN`).
    pub dir: PathBuf,
    pub sync: SyncMode,
    /// Size of one segment file, in bytes (rounded up to 4 KiB; at least
    /// 64 KiB).
    pub segment_size: u64,
    /// This shard's share of `--max-disk`, if any. It bounds the segment
    /// and index files; one preallocated spare segment (the consumers'
    /// reserve, so a `get` can always be logged) comes on top.
    pub max_disk: Option<u64>,
    /// This shard's share of the hot cache (`-m`), in bytes.
    pub cache_bytes: usize,
    /// The per-queue limits, shared by every shard (`reload` swaps them).
    pub limits: Arc<SharedLimits>,
    /// Bodies at least this large are written out of line
    /// ([`crate::log::REGION_MIN`] unless a test wants it smaller).
    pub region_min: usize,
}

/// A message handed out by `get`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    pub flags: u32,
    /// Sequence number of the message within its queue (for `gets`).
    pub seq: u64,
    pub body: Body,
}

/// How a `get` takes the head of its queue.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Take {
    /// Removes it (`get <q>`): consumed once the reply is sent.
    Pop,
    /// Hands it out to this reader until it confirms (`/close`) or puts it
    /// back (`/abort`, or by going away): a reliable read, `get <q>/open`.
    Open(Reader),
    /// Leaves it queued (`get <q>/peek`).
    Peek,
}

/// The queues of one shard.
struct State {
    queues: IdMap<u32, Queue>,
    names: BTreeMap<Box<[u8]>, u32>,
    items: u64,
    bytes: u64,
    cache: HotCache,
    label: String,
    /// The per-queue limits in force, and their generation.
    limits: Arc<Limits>,
    limits_generation: u64,
    /// Queues with a `+` in their name (if none, a set has no copies to
    /// look for).
    fan_out_queues: usize,
    /// Messages whose bodies are being written out of line.
    regions: IdMap<(u32, u64), Rc<OutOfLine>>,
    /// Region writes appended but not yet handed to a task.
    new_regions: Vec<RegionJob>,
}

/// Where a message's body is, for a get.
enum Held {
    /// In the hot cache: `(flags, body)`.
    Cached(u32, Vec<u8>),
    /// With the task writing it out of line.
    Writing(Rc<OutOfLine>),
    /// Only in its segment.
    OnDisk,
}

/// One body to write out of line.
struct RegionJob {
    key: (u32, u64),
    region: Region,
    body: Vec<u8>,
    body_crc: Option<u32>,
    wait: Rc<OutOfLine>,
}

impl State {
    /// The id of queue `name`, creating it (logged) if it does not exist.
    fn id_or_create(&mut self, log: &mut Log, name: &[u8]) -> u32 {
        if let Some(&id) = self.names.get(name) {
            return id;
        }
        let (id, _) = log.create_queue(name);
        let name: Box<[u8]> = name.into();
        self.fan_out_queues += usize::from(name.contains(&b'+'));
        self.names.insert(name.clone(), id);
        self.queues.insert(id, Queue::new(id, name));
        id
    }

    /// The queue a `get` of `name` reads: a fan-out queue (a `+` in its
    /// name) is created by its first `get`, so that it receives copies from
    /// then on; any other must exist.
    fn id_for_get(&mut self, log: &mut Log, name: &[u8]) -> Option<u32> {
        match self.names.get(name) {
            Some(&id) => Some(id),
            None if name.contains(&b'+') => Some(self.id_or_create(log, name)),
            None => None,
        }
    }

    /// What appending a `len`-byte message to queue `id` may log: its
    /// record, and what dropping the oldest to make room
    /// (`discard_old_when_full`) may.
    fn room_for_message(&mut self, id: u32, record: u64) -> u64 {
        let discard = self.limits_of(id).is_some_and(|l| l.discard_old_when_full);
        let mut need = record;
        if discard {
            need += stretch_room(&self.queues[&id]);
        }
        need
    }

    /// The fan-out queues of `parent`: every queue named `<parent>+…`.
    fn children(&self, parent: &[u8]) -> Vec<u32> {
        if self.fan_out_queues == 0 {
            return Vec::new(); // the usual case, and no allocation
        }
        let mut prefix = parent.to_vec();
        prefix.push(b'+');
        self.names
            .range::<[u8], _>((
                std::ops::Bound::Included(&prefix[..]),
                std::ops::Bound::Unbounded,
            ))
            .take_while(|(name, _)| name.starts_with(&prefix))
            .map(|(_, &id)| id)
            .collect()
    }

    /// Appends a message to queue `id`; returns its record's lsn.
    fn append(
        &mut self,
        log: &mut Log,
        id: u32,
        meta: MessageMeta,
        body: Vec<u8>,
        body_crc: Option<u32>,
    ) -> u64 {
        let q = self.queues.get_mut(&id).expect("queue exists");
        let len = (record::HEADER_LEN + body.len()) as u32;
        self.items += 1;
        self.bytes += body.len() as u64;
        let (pos, lsn, region) = if log.out_of_line(body.len()) {
            let region = log.enqueue_region(id, q.tail, meta, body.len());
            let pos = Pos {
                seg: region.seg,
                off: region.off as u32,
            };
            (pos, region.marker_lsn, Some(region))
        } else {
            let (pos, lsn) = log.enqueue(id, q.tail, meta, &body, body_crc);
            (pos, lsn, None)
        };
        let seq = q.push(pos.seg, pos.off, len, meta.expires);
        q.enqueued_at(seq, (meta.time / 1_000_000) as u32);
        match region {
            None => self.cache.insert((id, seq), meta.flags, body),
            Some(region) => {
                let wait = Rc::new(OutOfLine::new(meta.flags));
                self.regions.insert((id, seq), wait.clone());
                self.new_regions.push(RegionJob {
                    key: (id, seq),
                    region,
                    body,
                    body_crc,
                    wait,
                });
            }
        }
        lsn
    }

    /// Where the body of message `key` is; out of the cache if `take`.
    fn held(&mut self, key: (u32, u64), take: bool) -> Held {
        let cached = if take {
            self.cache.take(key)
        } else {
            self.cache.get(key)
        };
        match cached {
            Some((flags, body)) => Held::Cached(flags, body),
            None => match self.regions.get(&key) {
                Some(wait) => Held::Writing(wait.clone()),
                None => Held::OnDisk,
            },
        }
    }

    /// Whether the head of queue `id` may have expired: it has an
    /// `exptime`, or the queue a `max_age` (the usual case, neither, costs
    /// no clock read).
    fn may_expire(&mut self, id: u32) -> bool {
        let Some(q) = self.queues.get_mut(&id) else {
            return false;
        };
        match q.locs.front() {
            None => false,
            Some(head) if head.expires != 0 => true,
            Some(_) => q
                .limits(&self.limits, self.limits_generation)
                .max_age
                .is_some(),
        }
    }

    /// The limits of queue `id`, as of the generation in force.
    fn limits_of(&mut self, id: u32) -> Option<&QueueLimits> {
        let q = self.queues.get_mut(&id)?;
        Some(q.limits(&self.limits, self.limits_generation))
    }

    /// Takes the expired messages off the head of queue `id` (past their
    /// `exptime`, or older than the queue's `max_age`): an expired message
    /// is never handed out. They count as expired, and are consumed (in the
    /// log, and in `stats queue`), or with `expire_to` opened for `moves`
    /// to carry to their new queue.
    fn drop_expired(&mut self, log: &mut Log, moves: &Moves, id: u32) {
        if !self.may_expire(id) {
            return;
        }
        let now = now_secs();
        let (max_age, expire_to) = self
            .limits_of(id)
            .map(|l| (l.max_age.map(|a| a.as_secs()), l.expire_to.clone()))
            .unwrap_or_default();
        let expired = |q: &Queue| {
            let Some(head) = q.locs.front() else {
                return false;
            };
            // Enqueue times are kept to the second: strictly older, so a
            // message never expires early (up to a second late).
            let aged = max_age
                .zip(q.head_time())
                .is_some_and(|(age, at)| u64::from(at) + age < u64::from(now));
            head.expired(now) || aged
        };
        let Some(q) = self.queues.get_mut(&id) else {
            return;
        };
        let target = expire_to.filter(|t| moves.can_move() && t[..] != q.name[..]);
        let n = match target {
            Some(target) => {
                let mut n = 0;
                while expired(q) {
                    let reader = moves.reader();
                    let Some(loc) = q.open(reader) else {
                        break;
                    };
                    moves.push(id, loc.seq, reader, &target);
                    self.items -= 1;
                    self.bytes -= loc.body_len();
                    n += 1;
                }
                n
            }
            None => self.drop_head(log, id, expired),
        };
        if let Some(q) = self.queues.get_mut(&id) {
            q.expired += n;
        }
    }

    /// Whether queue `queue`'s limits let a message of `len` bytes in, once
    /// `discard_old_when_full` dropped what it must (it drops them here).
    fn admit(&mut self, log: &mut Log, queue: &[u8], len: u64) -> bool {
        let caps = |l: &QueueLimits| {
            (
                l.max_items,
                l.max_bytes,
                l.max_item_size,
                l.discard_old_when_full,
            )
        };
        let id = self.names.get(queue).copied();
        let (max_items, max_bytes, max_item_size, discard_old) = match id {
            Some(id) => self.limits_of(id).map(caps).unwrap_or_default(),
            None => caps(&self.limits.for_queue(queue)),
        };
        if max_item_size.is_some_and(|max| len > max)
            || max_bytes.is_some_and(|max| len > max)
            || max_items == Some(0)
        {
            return false;
        }
        let Some(id) = id else {
            return true;
        };
        let full = |q: &Queue| {
            max_items.is_some_and(|max| q.locs.len() as u64 >= max)
                || max_bytes.is_some_and(|max| q.bytes + len > max)
        };
        if !full(&self.queues[&id]) {
            return true;
        }
        if !discard_old {
            return false;
        }
        let n = self.drop_head(log, id, full);
        if let Some(q) = self.queues.get_mut(&id) {
            q.discarded += n;
        }
        true
    }

    /// Drops messages from the head of queue `id` while `more` says so;
    /// they count as consumed. Returns how many.
    fn drop_head(&mut self, log: &mut Log, id: u32, mut more: impl FnMut(&Queue) -> bool) -> u64 {
        let Some(q) = self.queues.get_mut(&id) else {
            return 0;
        };
        let mut dropped = Vec::new();
        while more(q) {
            let Some(loc) = q.pop() else {
                break;
            };
            dropped.push(loc);
        }
        let (Some(first), Some(last)) = (dropped.first(), dropped.last()) else {
            return 0;
        };
        let lsn = consume_stretch(log, q, first.seq, last.seq + 1);
        for loc in &dropped {
            log.release(loc.pos.seg, loc.len, lsn);
            self.cache.remove((id, loc.seq));
            self.items -= 1;
            self.bytes -= loc.body_len();
        }
        dropped.len() as u64
    }
}

/// The most [`consume_stretch`] may log for `q`: a record per stretch
/// between its open messages.
fn stretch_room(q: &Queue) -> u64 {
    (q.open.len() as u64 + 1) * record::record_len(8) as u64
}

/// Logs that every message of `q` in `[first, end)` but the open ones is
/// consumed (they are gone from `q` already): one record per stretch
/// between open messages. Returns the last record's lsn.
fn consume_stretch(log: &mut Log, q: &Queue, first: u64, end: u64) -> u64 {
    let opens: Vec<u64> = q.open.range(first..end).map(|(seq, _)| *seq).collect();
    let mut lsn = log.last_lsn();
    let mut start = first;
    for stop in opens.into_iter().chain([end]) {
        if start < stop {
            lsn = log.consume(q.id, start, stop, q.low());
        }
        start = stop + 1;
    }
    lsn
}

/// Now, in Unix seconds (what message expiry is measured in).
pub fn now_secs() -> u32 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs().min(u64::from(u32::MAX)) as u32)
}

/// The queues' locators as maintenance sees them.
struct StateLocators(Rc<RefCell<State>>);

impl Locators for StateLocators {
    fn relocate(&self, queue: u32, seq: u64, from: Pos, to: Pos) -> Option<u32> {
        let mut st = self.0.borrow_mut();
        let loc = st.queues.get_mut(&queue)?.find_mut(seq)?;
        if loc.pos != from {
            return None;
        }
        loc.pos = to;
        Some(loc.len)
    }

    fn is_live(&self, queue: u32, seq: u64, at: Pos) -> bool {
        let mut st = self.0.borrow_mut();
        st.queues
            .get_mut(&queue)
            .and_then(|q| q.find_mut(seq))
            .is_some_and(|loc| loc.pos == at)
    }

    fn drop_damaged(&self, seg: u32, from: u64, to: u64) -> Vec<u32> {
        let mut st = self.0.borrow_mut();
        let st = &mut *st;
        let mut lens = Vec::new();
        for q in st.queues.values_mut() {
            let hit: Vec<u64> = q
                .locs
                .iter()
                .filter(|loc| loc.pos.seg == seg && (from..to).contains(&u64::from(loc.pos.off)))
                .map(|loc| loc.seq)
                .collect();
            for seq in hit {
                if let Some(loc) = q.remove(seq) {
                    log::warn!(
                        "{}: message {seq} of queue {} is damaged: dropped",
                        st.label,
                        String::from_utf8_lossy(&q.name)
                    );
                    lens.push(loc.len);
                    st.items -= 1;
                    st.bytes -= loc.body_len();
                    st.cache.remove((q.id, seq));
                }
            }
        }
        lens
    }
}

/// One storage shard. Cheap to clone (shared handle).
#[derive(Clone)]
pub struct Store {
    state: Rc<RefCell<State>>,
    log: SharedLog,
    gate: Rc<Gate>,
    waiters: Rc<Waiters>,
    limits: Arc<SharedLimits>,
    moves: Rc<Moves>,
}

/// A blocking get's place in its queue's line: leaving it (done, timed out
/// or dropped) passes a waiting message on to the next in line.
struct InLine {
    store: Store,
    queue: Box<[u8]>,
    me: Rc<Waiter>,
}

impl Drop for InLine {
    fn drop(&mut self) {
        self.store.waiters.leave(&self.queue, &self.me);
        if self.store.queue_items(&self.queue) > 0 {
            self.store.waiters.wake_first(&self.queue);
        }
    }
}

/// With `--sync none`, a set of at least [`LARGE_BODY`] bytes stops being
/// acknowledged ahead of its write once this many bytes are appended but
/// not yet written: the bound on memory, and back-pressure on producers
/// faster than the disk.
const NONE_BACKLOG: u64 = 16 << 20;
/// Past this backlog every request waits: small ones too (a flood of small
/// sets can outrun the disk as well).
const NONE_BACKLOG_HARD: u64 = 4 * NONE_BACKLOG;
/// Bodies this large are the ones that fill the backlog; below it a request
/// keeps being answered at once while big writes drain, so small messages
/// do not wait behind a flood of large ones.
const LARGE_BODY: usize = 64 << 10;

/// Whether a reply must wait for its record's acknowledgement. With
/// `--sync none` it need not: the record is in the log buffer, which is all
/// that mode promises, unless the backlog is full (see [`NONE_BACKLOG`]).
/// `body` is the request's body length (0 for `get` and `delete`).
fn waits_for_log(log: &Log, body: usize) -> bool {
    if !matches!(log.sync_mode(), SyncMode::None { .. }) {
        return true;
    }
    let backlog = log.unwritten_bytes();
    backlog > NONE_BACKLOG_HARD || (backlog > NONE_BACKLOG && body >= LARGE_BODY)
}

/// Keeps a segment from being deleted while a read of it is in flight.
struct ReadPin {
    log: SharedLog,
    ord: u32,
}

impl Drop for ReadPin {
    fn drop(&mut self) {
        self.log.borrow_mut().unpin(self.ord);
    }
}

impl Store {
    /// Opens (or creates) the shard described by `config` on the real disk
    /// (O_DIRECT): see [`Store::open_on`].
    pub async fn open(config: StoreConfig) -> io::Result<Store> {
        let disk = DmaDisk::probe(&config.dir)
            .await?
            .durable_writes(config.sync == SyncMode::Always);
        Store::open_on(Rc::new(disk), config).await
    }

    /// Opens (or creates) the shard described by `config` on `disk`:
    /// recovers its queues from the log, starts a new segment, prepares the
    /// spare, and starts the shard's background tasks on the current
    /// executor.
    pub async fn open_on(disk: Rc<dyn Disk>, config: StoreConfig) -> io::Result<Store> {
        disk.create_dir_all(&config.dir).await?;
        let label = config
            .dir
            .file_name()
            .map_or_else(|| "store".to_string(), |n| n.to_string_lossy().into_owned());
        let segment_size = config
            .segment_size
            .max(64 << 10)
            .next_multiple_of(segment::BLOCK);
        let mut recovered = replay::Rebuild::default();
        let mut rec = recovery::recover(&*disk, &config.dir, &label, &mut recovered).await?;
        let unverified = std::mem::take(&mut rec.unverified);
        let mut state = State {
            queues: IdMap::with_capacity_and_hasher(recovered.len(), Default::default()),
            names: BTreeMap::new(),
            items: 0,
            bytes: 0,
            cache: HotCache::new(config.cache_bytes),
            label: label.clone(),
            limits: config.limits.get(),
            limits_generation: config.limits.generation(),
            fan_out_queues: 0,
            regions: IdMap::default(),
            new_regions: Vec::new(),
        };
        let catalog = recovered.install(&mut state);
        let cfg = LogConfig {
            dir: config.dir.clone(),
            label,
            sync: config.sync,
            segment_size,
            max_disk: config.max_disk,
            region_min: config.region_min,
        };
        let mut log = Log::new(disk.clone(), cfg, rec, catalog);
        let path = log.next_segment_path();
        let size = log.small_segment_size();
        // Plainly preallocated, even with `--sync always`: writing its zeros
        // would add 5-10 ms to every start (the spares, zeroed or not, are
        // made by maintenance for the same reason).
        let file = crate::disk::create_preallocated(&*disk, &path, size, false).await?;
        disk.sync_dir(&config.dir).await?;
        let checkpoint = log.start(file, size);
        let store = Store {
            state: Rc::new(RefCell::new(state)),
            log: Rc::new(RefCell::new(log)),
            gate: Rc::new(Gate::default()),
            waiters: Rc::new(Waiters::default()),
            limits: config.limits.clone(),
            moves: Rc::new(Moves::default()),
        };
        let locators: Rc<dyn Locators> = Rc::new(StateLocators(store.state.clone()));
        glommio::spawn_local(commit::committer(store.log.clone())).detach();
        if let Some(every) = config.sync.sync_every() {
            glommio::spawn_local(commit::interval_syncer(store.log.clone(), every)).detach();
        }
        // The spares are made by maintenance, after the first commit: on a
        // busy disk preallocating them took long enough to delay start-up,
        // and a request that needs one before it is ready waits for it.
        glommio::spawn_local(compaction::maintenance(locators.clone(), store.log.clone())).detach();
        glommio::spawn_local(moves::mover(store.clone())).detach();
        if !unverified.is_empty() {
            glommio::spawn_local(compaction::scrub(locators, store.log.clone(), unverified))
                .detach();
        }
        store.acked(checkpoint).await.map_err(io::Error::other)?;
        store.log.borrow().maint().notify();
        Ok(store)
    }

    fn acked(&self, lsn: u64) -> Acked {
        Acked {
            log: self.log.clone(),
            lsn,
        }
    }

    /// The reply `value` to a request whose record (with a body of `body`
    /// bytes) is `lsn`: once the record is acknowledged, or at once where
    /// [`waits_for_log`] says the sync mode allows it.
    fn reply<T: 'static>(&self, log: &Log, lsn: u64, body: usize, value: T) -> Reply<T> {
        if !waits_for_log(log, body) {
            return Reply::now(Ok(value));
        }
        Reply::Acked(self.acked(lsn), Some(value))
    }

    /// Appends a message to the tail of `queue`, creating it on first use.
    /// `false` (`NOT_STORED`) when the queue's limits refuse it.
    pub fn set(&self, queue: &[u8], flags: u32, body: Vec<u8>) -> Reply<bool> {
        self.set_expiring(queue, flags, 0, body)
    }

    /// [`Store::set`] of a message that expires at Unix time `expires`
    /// (seconds; 0 never): from then on it is never handed out, and it is
    /// dropped when it reaches the head.
    pub fn set_expiring(
        &self,
        queue: &[u8],
        flags: u32,
        expires: u32,
        body: Vec<u8>,
    ) -> Reply<bool> {
        self.set_checked(queue, flags, expires, body, None)
    }

    /// [`Store::set_expiring`] of a body whose `crc32c` the caller may have
    /// computed already: a connection checksums a large body in pieces
    /// before it submits it, so the append (which must copy it into the
    /// log's tail at once) does not checksum it at once too (see `turn`).
    pub fn set_checked(
        &self,
        queue: &[u8],
        flags: u32,
        expires: u32,
        body: Vec<u8>,
        body_crc: Option<u32>,
    ) -> Reply<bool> {
        self.refresh_limits();
        let len = body.len();
        self.when_room(
            queue,
            move |s, q| s.room_for_set(q, len),
            move |s, q| s.apply_set(q, flags, expires, body, body_crc),
        )
    }

    /// Pops the head of `queue`, waiting up to `wait` for a message when it
    /// is empty (`get <q>/t=<ms>`): see [`Store::take_wait`].
    pub fn get_wait(&self, queue: &[u8], wait: Duration) -> Reply<Option<Message>> {
        self.take_wait(queue, Take::Pop, wait)
    }

    /// Takes the head of `queue` as `take` says, waiting up to `wait` for a
    /// message when it is empty (`get <q>/t=<ms>`): woken by the set that
    /// brings one, in arrival order with the other waiters (see
    /// [`waiters`]). `None` when the wait ends without a message, or the
    /// shard is shutting down.
    ///
    /// Dropping the future leaves the line (the next waiter is woken if a
    /// message is there), so a consumer that goes away takes nothing.
    pub fn take_wait(&self, queue: &[u8], take: Take, wait: Duration) -> Reply<Option<Message>> {
        let deadline = std::time::Instant::now() + wait;
        let line = InLine {
            store: self.clone(),
            queue: queue.into(),
            me: Rc::new(Waiter::default()),
        };
        Reply::later(async move {
            let (store, queue, me) = (&line.store, &*line.queue, &line.me);
            // A newcomer goes first only when nobody waits ahead of it.
            let mut try_now = !store.waiters.anyone_waiting(queue);
            loop {
                if try_now {
                    match store.take(queue, take).await {
                        Ok(None) => {}
                        done => return done,
                    }
                }
                let left = deadline.saturating_duration_since(std::time::Instant::now());
                if store.waiters.ended() || left.is_zero() {
                    return Ok(None);
                }
                store.waiters.join(queue, me);
                // A message that came while the get above was in flight.
                if store.waiters.is_first(queue, me) && store.queue_items(queue) > 0 {
                    try_now = true;
                    continue;
                }
                futures_lite::future::or(me.wait(), glommio::timer::sleep(left)).await;
                try_now = store.waiters.is_first(queue, me);
            }
        })
    }

    /// How this store reaches other queues, for `expire_to` (the shard
    /// layer gives it once its router runs).
    pub fn set_forward(&self, forward: Forward) {
        self.moves.set_forward(forward);
    }

    /// Shutdown: every blocking get ends now with no message (`END`), and
    /// later ones do not wait.
    pub fn end_waits(&self) {
        self.waiters.end();
    }

    fn queue_items(&self, queue: &[u8]) -> usize {
        let st = self.state.borrow();
        st.names.get(queue).map_or(0, |id| st.queues[id].locs.len())
    }

    /// Pops the head of `queue`; `None` when it is empty or unknown.
    pub fn get(&self, queue: &[u8]) -> Reply<Option<Message>> {
        self.take(queue, Take::Pop)
    }

    /// Takes the head of `queue` as `take` says; `None` when it is empty or
    /// unknown. Only a pop logs a record now; an open message is logged
    /// when its reader confirms it ([`Store::confirm`]).
    pub fn take(&self, queue: &[u8], take: Take) -> Reply<Option<Message>> {
        self.refresh_limits();
        match take {
            Take::Pop => self.when_room(queue, |s, q| s.room_for_take(q, true), Store::apply_get),
            Take::Open(reader) => self.when_room(
                queue,
                |s, q| s.room_for_take(q, false),
                move |s, q| s.apply_open(q, reader),
            ),
            Take::Peek => {
                self.when_room(queue, |s, q| s.room_for_take(q, false), Store::apply_peek)
            }
        }
    }

    /// Whether `reader` holds an open message on `queue`.
    pub fn holds_open(&self, queue: &[u8], reader: Reader) -> bool {
        let st = self.state.borrow();
        st.names
            .get(queue)
            .is_some_and(|id| st.queues[id].open_by(reader).is_some())
    }

    /// Confirms the message `reader` holds open on `queue` (`/close`): it
    /// is consumed, and never handed out again once the reply is
    /// acknowledged. `false` when it held none.
    pub fn confirm(&self, queue: &[u8], reader: Reader) -> Reply<bool> {
        self.when_room(
            queue,
            move |s, q| {
                if s.holds_open(q, reader) {
                    s.room_for_marker(q)
                } else {
                    Ok(())
                }
            },
            move |s, q| s.apply_confirm(q, reader),
        )
    }

    /// Puts the message `reader` holds open on `queue` back at its head
    /// (`/abort`, or the reader went away); `false` when it held none. Its
    /// record was never marked consumed, so nothing is logged.
    pub fn abort(&self, queue: &[u8], reader: Reader) -> bool {
        {
            let mut st = self.state.borrow_mut();
            let st = &mut *st;
            let Some(q) = st.names.get(queue).and_then(|id| st.queues.get_mut(id)) else {
                return false;
            };
            let Some(loc) = q.open_by(reader).and_then(|seq| q.put_back(seq)) else {
                return false;
            };
            st.items += 1;
            st.bytes += loc.body_len();
        }
        self.waiters.wake_first(queue);
        true
    }

    /// Drops `queue` and all its messages; `false` when it did not exist.
    pub fn delete(&self, queue: &[u8]) -> Reply<bool> {
        self.when_room(queue, |s, q| s.room_for_marker(q), Store::apply_delete)
    }

    /// Applies a request now if the log has room for it, or holds it (and
    /// every later request of this shard) in order until a new segment is
    /// ready; see [`gate`].
    fn when_room<T: 'static>(
        &self,
        queue: &[u8],
        room: impl Fn(&Store, &[u8]) -> Result<(), NoRoom> + 'static,
        apply: impl FnOnce(&Store, &[u8]) -> Reply<T> + 'static,
    ) -> Reply<T> {
        if self.gate.is_open() {
            match room(self, queue) {
                Ok(()) => return apply(self, queue),
                Err(NoRoom::Refused(e)) => return Reply::now(Err(e)),
                Err(NoRoom::AwaitSpare | NoRoom::AwaitWrite) => {}
            }
        }
        let (store, queue) = (self.clone(), queue.to_vec());
        let ticket = self.gate.ticket();
        Reply::later(async move {
            ticket.turn().await;
            loop {
                match room(&store, &queue) {
                    Ok(()) => {
                        let done = apply(&store, &queue);
                        drop(ticket);
                        return done.await;
                    }
                    Err(NoRoom::Refused(e)) => return Err(e),
                    Err(NoRoom::AwaitSpare) => {
                        let ready = store.log.borrow().spare_ready();
                        ready.wait().await;
                    }
                    Err(NoRoom::AwaitWrite) => {
                        let last = store.log.borrow().last_lsn();
                        store.acked(last).await?;
                    }
                }
            }
        })
    }

    fn room_for_set(&self, queue: &[u8], len: usize) -> Result<(), NoRoom> {
        let mut st = self.state.borrow_mut();
        let mut log = self.log.borrow_mut();
        let record = log.message_room(len);
        let mut need = match st.names.get(queue).copied() {
            Some(id) => st.room_for_message(id, record),
            None => record + record::record_len(16 + queue.len()) as u64,
        };
        // Fan-out copies (no allocation without fan-out queues).
        for child in st.children(queue) {
            need += st.room_for_message(child, record);
        }
        log.make_room(need, true)
    }

    /// Room for a marker record (`Consumed`, `Confirmed`, `Deleted`) if
    /// `queue` exists. These may use the consumers' reserve: a full disk
    /// must never stop `get`, `/close` or `delete`.
    fn room_for_marker(&self, queue: &[u8]) -> Result<(), NoRoom> {
        let mut log = self.log.borrow_mut();
        log.check()?;
        if !self.state.borrow().names.contains_key(queue) {
            return Ok(());
        }
        log.make_room(record::record_len(8) as u64, false)
    }

    /// Room for what a `take` of `queue` logs: the dropping of expired
    /// messages at its head, and for a pop the pop. These may use the
    /// consumers' reserve.
    fn room_for_take(&self, queue: &[u8], pop: bool) -> Result<(), NoRoom> {
        let mut log = self.log.borrow_mut();
        log.check()?;
        let mut st = self.state.borrow_mut();
        let Some(&id) = st.names.get(queue) else {
            if queue.contains(&b'+') {
                // A fan-out queue's first get creates it.
                return log.make_room(record::record_len(16 + queue.len()) as u64, false);
            }
            return Ok(());
        };
        if st.queues[&id].locs.is_empty() {
            return Ok(());
        }
        let mut bytes = 0;
        if st.may_expire(id) {
            bytes += stretch_room(&st.queues[&id]);
        }
        if pop {
            bytes += record::record_len(8) as u64;
        }
        log.make_room(bytes, false)
    }

    /// Takes up limits `reload` changed since this shard last looked.
    fn refresh_limits(&self) {
        let generation = self.limits.generation();
        let mut st = self.state.borrow_mut();
        if st.limits_generation != generation {
            st.limits = self.limits.get();
            st.limits_generation = generation;
        }
    }

    fn apply_set(
        &self,
        queue: &[u8],
        flags: u32,
        expires: u32,
        body: Vec<u8>,
        body_crc: Option<u32>,
    ) -> Reply<bool> {
        let mut st = self.state.borrow_mut();
        let st = &mut *st;
        let mut log = self.log.borrow_mut();
        if !st.admit(&mut log, queue, body.len() as u64) {
            return Reply::now(Ok(false));
        }
        let id = st.id_or_create(&mut log, queue);
        let meta = MessageMeta {
            flags,
            time: now_us(),
            expires,
        };
        let len = body.len();
        let children = st.children(queue);
        // A queue that gets a message wakes its first blocked consumer.
        self.waiters.wake_first(queue);
        if children.is_empty() {
            let lsn = st.append(&mut log, id, meta, body, body_crc);
            let regions = std::mem::take(&mut st.new_regions);
            return self.set_reply(&log, lsn, len, regions);
        }
        let mut lsn = st.append(&mut log, id, meta, body.clone(), body_crc);
        // Fan-out: a copy for every `<queue>+…` queue, in the same batch,
        // each within its own limits. The reply waits for the last copy.
        for child in children {
            let name = st.queues[&child].name.clone();
            if st.admit(&mut log, &name, len as u64) {
                lsn = st.append(&mut log, child, meta, body.clone(), body_crc);
                self.waiters.wake_first(&name);
            }
        }
        let regions = std::mem::take(&mut st.new_regions);
        self.set_reply(&log, lsn, len, regions)
    }

    /// The reply to a set whose last record is `lsn`: as [`Store::reply`]
    /// says, and after the bodies it writes out of line (`regions`, whose
    /// writes start now) are written.
    fn set_reply(&self, log: &Log, lsn: u64, len: usize, regions: Vec<RegionJob>) -> Reply<bool> {
        if regions.is_empty() {
            return self.reply(log, lsn, len, true);
        }
        let waits: Vec<Rc<OutOfLine>> = regions.iter().map(|r| r.wait.clone()).collect();
        for job in regions {
            glommio::spawn_local(write_region(self.clone(), job)).detach();
        }
        if !waits_for_log(log, len) {
            return Reply::now(Ok(true));
        }
        let acked = self.acked(lsn);
        Reply::later(async move {
            acked.await?;
            for w in &waits {
                w.wait().await?;
            }
            Ok(true)
        })
    }

    fn apply_get(&self, queue: &[u8]) -> Reply<Option<Message>> {
        let mut st = self.state.borrow_mut();
        let st = &mut *st;
        let mut log = self.log.borrow_mut();
        let Some(id) = st.id_for_get(&mut log, queue) else {
            return Reply::now(Ok(None));
        };
        st.drop_expired(&mut log, &self.moves, id);
        let q = st.queues.get_mut(&id).expect("queue exists");
        let Some(loc) = q.pop() else {
            return Reply::now(Ok(None));
        };
        let lsn = log.consume(id, loc.seq, loc.seq + 1, q.low());
        log.release(loc.pos.seg, loc.len, lsn);
        st.items -= 1;
        st.bytes -= loc.body_len();
        drop(log);
        self.deliver(lsn, id, loc, st.held((id, loc.seq), true))
    }

    /// A reliable read: the head goes to `reader`'s open message, with no
    /// record yet. The reply still waits as a pop's would (for everything
    /// appended so far, which includes the message's own record), so a
    /// consumer never sees a message that a crash could take back.
    fn apply_open(&self, queue: &[u8], reader: Reader) -> Reply<Option<Message>> {
        let mut st = self.state.borrow_mut();
        let st = &mut *st;
        let Some(id) = st.id_for_get(&mut self.log.borrow_mut(), queue) else {
            return Reply::now(Ok(None));
        };
        st.drop_expired(&mut self.log.borrow_mut(), &self.moves, id);
        let q = st.queues.get_mut(&id).expect("queue exists");
        let Some(loc) = q.open(reader) else {
            return Reply::now(Ok(None));
        };
        st.items -= 1;
        st.bytes -= loc.body_len();
        let lsn = self.log.borrow().last_lsn();
        // Out of the cache like a pop: if it comes back (abort), it is
        // read from its segment, which keeps the cache's bytes bounded by
        // queued messages only.
        self.deliver(lsn, id, loc, st.held((id, loc.seq), true))
    }

    /// `get <q>/peek`: a copy of the head, which stays queued.
    fn apply_peek(&self, queue: &[u8]) -> Reply<Option<Message>> {
        let mut st = self.state.borrow_mut();
        let Some(id) = st.id_for_get(&mut self.log.borrow_mut(), queue) else {
            return Reply::now(Ok(None));
        };
        st.drop_expired(&mut self.log.borrow_mut(), &self.moves, id);
        let Some(&loc) = st.queues[&id].locs.front() else {
            return Reply::now(Ok(None));
        };
        let lsn = self.log.borrow().last_lsn();
        self.deliver(lsn, id, loc, st.held((id, loc.seq), false))
    }

    /// The reply to a get of message `loc` of queue `id` once record `lsn`
    /// is acknowledged: its body from where it is `held`. (Even with
    /// `--sync none` a read waits for the acknowledgement: the record it
    /// reads must be written first.)
    fn deliver(&self, lsn: u64, id: u32, loc: Loc, held: Held) -> Reply<Option<Message>> {
        match held {
            Held::Cached(flags, body) => {
                let message = Message {
                    flags,
                    seq: loc.seq,
                    body: body.into(),
                };
                self.reply(&self.log.borrow(), lsn, 0, Some(message))
            }
            Held::Writing(wait) => self.deliver_written(lsn, id, loc, wait),
            Held::OnDisk => self.read_after(lsn, id, loc),
        }
    }

    /// [`Store::deliver`] of a message whose body is being written out of
    /// line: once record `lsn` is acknowledged and the body written, from
    /// the writer if the message was taken meanwhile, else (a peek) as any
    /// queued message's.
    fn deliver_written(
        &self,
        lsn: u64,
        id: u32,
        loc: Loc,
        wait: Rc<OutOfLine>,
    ) -> Reply<Option<Message>> {
        let acked = waits_for_log(&self.log.borrow(), 0).then(|| self.acked(lsn));
        let store = self.clone();
        Reply::later(async move {
            if let Some(acked) = acked {
                acked.await?;
            }
            wait.wait().await?;
            let held = match wait.take_body() {
                Some(body) => Held::Cached(wait.flags, body),
                // Still queued (a peek): the body went to the cache, if it
                // took it.
                None => store.state.borrow_mut().held((id, loc.seq), false),
            };
            store.deliver(lsn, id, loc, held).await
        })
    }

    /// Reads message `loc` of queue `id` from its segment once record `lsn`
    /// (at or after the message's own) is acknowledged; the segment is
    /// pinned until then.
    fn read_after(&self, lsn: u64, id: u32, loc: Loc) -> Reply<Option<Message>> {
        let acked = self.acked(lsn);
        self.log.borrow_mut().pin(loc.pos.seg);
        let pin = ReadPin {
            log: self.log.clone(),
            ord: loc.pos.seg,
        };
        Reply::later(async move {
            acked.await?;
            let r = read_message(&pin.log, id, loc).await;
            drop(pin);
            r.map(Some)
        })
    }

    /// Confirms `reader`'s open message on `queue`: its consumption is
    /// logged as a pop's is.
    fn apply_confirm(&self, queue: &[u8], reader: Reader) -> Reply<bool> {
        let mut st = self.state.borrow_mut();
        let st = &mut *st;
        let Some(&id) = st.names.get(queue) else {
            return Reply::now(Ok(false));
        };
        let q = st.queues.get_mut(&id).expect("queue exists");
        let Some(loc) = q.open_by(reader).and_then(|seq| q.close(seq)) else {
            return Reply::now(Ok(false));
        };
        let mut log = self.log.borrow_mut();
        let lsn = log.consume(id, loc.seq, loc.seq + 1, q.low());
        log.release(loc.pos.seg, loc.len, lsn);
        self.reply(&log, lsn, 0, true)
    }

    fn apply_delete(&self, queue: &[u8]) -> Reply<bool> {
        let mut st = self.state.borrow_mut();
        let st = &mut *st;
        let Some(id) = st.names.remove(queue) else {
            return Reply::now(Ok(false));
        };
        st.fan_out_queues -= usize::from(queue.contains(&b'+'));
        let mut log = self.log.borrow_mut();
        let lsn = log.delete_queue(id);
        let q = st.queues.remove(&id).expect("queue exists");
        for loc in q.locs.iter().chain(q.open.values().map(|(loc, _)| loc)) {
            log.release(loc.pos.seg, loc.len, lsn);
            st.cache.remove((id, loc.seq));
        }
        st.items -= q.locs.len() as u64;
        st.bytes -= q.bytes;
        self.reply(&log, lsn, 0, true)
    }

    /// Drops every queued message of `queue` (`flush`); the queue, its
    /// counters (flushed messages count as dequeued) and its open messages
    /// stay. `false` when there is no such queue.
    pub fn flush(&self, queue: &[u8]) -> Reply<bool> {
        self.when_room(queue, Store::room_for_flush, Store::apply_flush)
    }

    /// `flush` for every queue of this shard.
    pub fn flush_all(&self) -> Reply<()> {
        let names: Vec<Box<[u8]>> = self.state.borrow().names.keys().cloned().collect();
        let done: Vec<_> = names.iter().map(|q| self.flush(q)).collect();
        Reply::later(async move {
            for d in done {
                d.await?;
            }
            Ok(())
        })
    }

    /// Room for a flush's records: one per stretch of queued messages
    /// between open ones.
    fn room_for_flush(&self, queue: &[u8]) -> Result<(), NoRoom> {
        let mut log = self.log.borrow_mut();
        log.check()?;
        let st = self.state.borrow();
        let Some(q) = st.names.get(queue).map(|id| &st.queues[id]) else {
            return Ok(());
        };
        if q.locs.is_empty() {
            return Ok(());
        }
        log.make_room(stretch_room(q), false)
    }

    fn apply_flush(&self, queue: &[u8]) -> Reply<bool> {
        let mut st = self.state.borrow_mut();
        let Some(&id) = st.names.get(queue) else {
            return Reply::now(Ok(false));
        };
        let mut log = self.log.borrow_mut();
        st.drop_head(&mut log, id, |q| !q.locs.is_empty());
        self.reply(&log, log.last_lsn(), 0, true)
    }

    /// Every queue of this shard with its counters, sorted by name.
    pub fn queue_stats(&self) -> Vec<QueueStat> {
        let st = self.state.borrow();
        let log = self.log.borrow();
        let now = u64::from(now_secs());
        st.names
            .iter()
            .map(|(name, id)| {
                let q = &st.queues[id];
                let age = q.head_time().map_or(0, |t| now.saturating_sub(t.into()));
                QueueStat {
                    name: name.to_vec(),
                    enqueued: q.tail,
                    dequeued: log.dequeued(*id),
                    items: q.locs.len() as u64,
                    bytes: q.bytes,
                    expired: q.expired,
                    discarded: q.discarded,
                    age_ms: age * 1000,
                    waiters: self.waiters.waiting_on(name) as u64,
                    open_transactions: q.open.len() as u64,
                }
            })
            .collect()
    }

    pub fn stats(&self) -> StoreStats {
        let st = self.state.borrow();
        let log = self.log.borrow().stats();
        StoreStats {
            queues: st.names.len() as u64,
            items: st.items,
            bytes: st.bytes,
            log_writes: log.writes,
            log_fsyncs: log.fsyncs,
            log_bytes_written: log.bytes_written,
            log_unwritten_bytes: log.unwritten_bytes,
            log_segments: log.segments,
            log_disk_bytes: log.disk_bytes,
            log_corrupt_records: log.corrupt_records,
            cache_bytes: st.cache.bytes() as u64,
            get_waiters: self.waiters.count() as u64,
            open_transactions: st.queues.values().map(|q| q.open.len() as u64).sum(),
            commit_latency: log.commit_latency,
        }
    }

    /// Makes everything acknowledged so far durable and closes the files
    /// cleanly (graceful shutdown). The open segment stays as it is; the
    /// next open scans it (one segment) and seals it.
    pub async fn close(&self) -> Result<(), LogError> {
        let last = self.log.borrow().last_lsn();
        self.acked(last).await?;
        commit::sync_open(&self.log).await?;
        self.log.borrow_mut().close();
        self.moves.wake();
        // Let an index write or segment deletion in progress finish, so the
        // directory is quiet when we return.
        self.wait_for_tasks().await;
        Ok(())
    }

    /// Stops the store as a crash would: nothing more is written or synced,
    /// waiters fail. Returns once the shard's tasks have ended, so its
    /// directory can be reopened in the same process (tests; the
    /// crash-point explorer takes its disk image after this).
    pub async fn crash(&self) {
        self.log.borrow_mut().fail(IoFailure {
            op: "crash",
            errno: None,
            message: "stopped as by a crash".into(),
        });
        self.moves.wake();
        self.wait_for_tasks().await;
    }

    async fn wait_for_tasks(&self) {
        while self.log.borrow().tasks() > 0 {
            glommio::timer::sleep(Duration::from_millis(1)).await;
        }
    }

    /// Test helper: waits until every commit and maintenance round is done.
    #[cfg(test)]
    pub(crate) async fn settle(&self) {
        let mut quiet = 0;
        while quiet < 3 {
            glommio::timer::sleep(Duration::from_millis(2)).await;
            let l = self.log.borrow();
            if l.busy() || l.maint_busy() {
                quiet = 0;
            } else {
                quiet += 1;
            }
        }
    }

    #[cfg(test)]
    pub(crate) fn log(&self) -> &SharedLog {
        &self.log
    }
}

/// Writes one body out of line (see `log::region`), then hands it to the
/// cache if its message is still queued, or to whoever took the message
/// meanwhile.
async fn write_region(store: Store, job: RegionJob) {
    let RegionJob {
        key,
        region,
        body,
        body_crc,
        wait,
    } = job;
    // Spawned by a set while it holds the store and the log, and glommio
    // runs a new task at once, up to its first wait: start on the next turn.
    futures_lite::future::yield_now().await;
    let res = region::write(&store.log, &region, &body, body_crc).await;
    let body = {
        let mut st = store.state.borrow_mut();
        let st = &mut *st;
        st.regions.remove(&key);
        let queued = st
            .queues
            .get(&key.0)
            .is_some_and(|q| q.locs.binary_search_by_key(&key.1, |l| l.seq).is_ok());
        match res {
            Ok(()) if queued => {
                st.cache.insert(key, wait.flags, body);
                None
            }
            Ok(()) => Some(body),
            Err(_) => None,
        }
    };
    wait.finish(res, body);
}

/// Reads message `loc` of queue `id` from its segment and verifies it.
/// Called once the pop is acknowledged: by then a just-rolled segment (a
/// compaction copy may have moved the message there) has its file.
async fn read_message(log: &SharedLog, id: u32, loc: Loc) -> Result<Message, LogError> {
    let (file, label, first_lsn) = {
        let l = log.borrow();
        let seg = l.seg(loc.pos.seg);
        (
            seg.and_then(|s| s.file.clone()),
            l.label().to_string(),
            seg.map_or(0, |s| s.first_lsn),
        )
    };
    let Some(file) = file else {
        return Err(LogError::Read(IoFailure {
            op: "message read",
            errno: None,
            message: format!("segment of queue message {} is gone", loc.seq),
        }));
    };
    let data = file
        .read_at(u64::from(loc.pos.off), loc.len as usize)
        .await
        .map_err(|e| {
            log::warn!(
                "{label}: read of segment {first_lsn:020} at {} failed: {e}",
                loc.pos.off
            );
            LogError::Read(IoFailure::new("message read", &e))
        })?;
    match record::decode(&data) {
        Ok((h, body)) if h.kind == Kind::Enqueued && h.queue == id && h.seq == loc.seq => {
            // The body stays where the read put it, behind its header.
            let (start, len) = (body.as_ptr() as usize - data.as_ptr() as usize, body.len());
            Ok(Message {
                flags: h.flags,
                seq: loc.seq,
                body: Body::within(data, start, len),
            })
        }
        _ => {
            log::warn!(
                "{label}: segment {first_lsn:020}: corrupt record at offset {} (queue id {id}, message {}): skipped",
                loc.pos.off,
                loc.seq
            );
            log.borrow_mut().note_corrupt(1);
            Err(LogError::Corrupt { seq: loc.seq })
        }
    }
}

#[cfg(test)]
#[path = "store_tests.rs"]
pub(crate) mod tests;
