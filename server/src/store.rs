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
//!   group commit.
//! - `get` pops the head locator, appends a `Consumed` record, and waits for
//!   its commit; the body comes from the hot cache or, for a consumer that
//!   lags, from a DMA read of its record (checksum verified).
//! - `delete` appends a `Deleted` record and drops the queue's locators.
//!
//! Background tasks per store: the group-commit task
//! ([`crate::log::writer::committer`]), the interval syncer (with
//! `--sync interval`), and maintenance ([`crate::log::compaction`]): index
//! files for sealed segments, deleting consumed segments, the spare segment
//! file, compaction.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::future::Future;
use std::io;
use std::path::PathBuf;
use std::pin::Pin;
use std::rc::Rc;
use std::time::Duration;

use crate::cache::HotCache;
use crate::log::record::{self, Kind, HEADER_LEN};
use crate::log::writer::{self, Acked, CheckpointQueue, Log};
use crate::log::{compaction, recovery, segment};
use crate::queue::{Loc, Queue};

/// A future local to the executor that owns the store.
pub type LocalFuture<T> = Pin<Box<dyn Future<Output = T> + 'static>>;

/// What `STORED` and a popped `VALUE` promise.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SyncMode {
    /// Acknowledge after the write and its fdatasync.
    Always,
    /// Acknowledge after the O_DIRECT write; fdatasync on this timer.
    Interval(Duration),
}

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
}

/// A message handed out by `get`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    pub flags: u32,
    /// Sequence number of the message within its queue (for `gets`).
    pub seq: u64,
    pub body: Vec<u8>,
}

/// Why a store refused or failed a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StoreError {
    /// `--max-disk` reached or the disk is full: nothing was stored.
    OutOfSpace,
    /// The request failed; the text says why. After a failed log write or
    /// fdatasync the shard has stopped accepting writes and every later
    /// request gets this. A `get` whose message fails its checksum also gets
    /// this (the message is skipped, the shard goes on).
    Failed(String),
}

/// `stats queue` line for one queue.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueueStat {
    pub name: Vec<u8>,
    pub enqueued: u64,
    pub dequeued: u64,
}

/// Counters for `stats`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StoreStats {
    pub queues: u64,
    /// Messages queued.
    pub items: u64,
    /// Bytes of message bodies queued.
    pub bytes: u64,
    pub log_writes: u64,
    pub log_fsyncs: u64,
    pub log_bytes_written: u64,
    pub log_segments: u64,
    pub log_disk_bytes: u64,
    /// Corrupt records found (at recovery, by reads, by compaction).
    pub log_corrupt_records: u64,
    /// Bytes of bodies in the hot cache.
    pub cache_bytes: u64,
}

impl StoreStats {
    /// Adds another shard's counters to these (for the process-wide `stats`).
    pub fn add(&mut self, other: &StoreStats) {
        self.queues += other.queues;
        self.items += other.items;
        self.bytes += other.bytes;
        self.log_writes += other.log_writes;
        self.log_fsyncs += other.log_fsyncs;
        self.log_bytes_written += other.log_bytes_written;
        self.log_segments += other.log_segments;
        self.log_disk_bytes += other.log_disk_bytes;
        self.log_corrupt_records += other.log_corrupt_records;
        self.cache_bytes += other.cache_bytes;
    }
}

/// The queues of one shard.
pub(crate) struct State {
    pub queues: HashMap<u32, Queue>,
    pub names: BTreeMap<Box<[u8]>, u32>,
    pub items: u64,
    pub bytes: u64,
    pub cache: HotCache,
}

impl State {
    /// The queues as a segment checkpoint lists them.
    pub fn checkpoint(
        queues: &HashMap<u32, Queue>,
    ) -> impl Iterator<Item = CheckpointQueue<'_>> + Clone {
        queues.values().map(|q| CheckpointQueue {
            id: q.id,
            name: &q.name,
            head: q.head,
            tail: q.tail,
        })
    }
}

/// One storage shard. Cheap to clone (shared handle).
#[derive(Clone)]
pub struct Store {
    state: Rc<RefCell<State>>,
    log: Rc<RefCell<Log>>,
}

fn ready<T: 'static>(v: T) -> LocalFuture<T> {
    Box::pin(std::future::ready(v))
}

/// Keeps a segment from being deleted while a read of it is in flight.
struct ReadPin {
    log: Rc<RefCell<Log>>,
    ord: u32,
}

impl Drop for ReadPin {
    fn drop(&mut self) {
        let mut l = self.log.borrow_mut();
        if let Some(seg) = l.segs.get_mut(&self.ord) {
            seg.pins -= 1;
            if seg.pins == 0 && seg.live == 0 {
                l.maint.notify();
            }
        }
    }
}

impl Store {
    /// Opens (or creates) the shard described by `config`: recovers its
    /// queues from the log, starts a new segment, and starts the shard's
    /// background tasks on the current executor.
    pub async fn open(config: StoreConfig) -> io::Result<Store> {
        std::fs::create_dir_all(&config.dir)?;
        let label = config
            .dir
            .file_name()
            .map_or_else(|| "store".to_string(), |n| n.to_string_lossy().into_owned());
        let segment_size = config
            .segment_size
            .max(64 << 10)
            .next_multiple_of(segment::BLOCK);
        writer::probe_device(&config.dir).await?;
        let rec = recovery::recover(&config.dir, &label).await?;
        let unverified = rec.unverified;
        let mut state = State {
            queues: HashMap::with_capacity(rec.queues.len()),
            names: BTreeMap::new(),
            items: 0,
            bytes: 0,
            cache: HotCache::new(config.cache_bytes),
        };
        for rq in rec.queues {
            let mut q = Queue::new(rq.id, rq.name);
            q.head = rq.head;
            q.tail = rq.tail;
            q.locs = VecDeque::from(rq.locs);
            q.bytes = q.locs.iter().map(Loc::body_len).sum();
            state.items += q.locs.len() as u64;
            state.bytes += q.bytes;
            state.names.insert(q.name.clone(), q.id);
            state.queues.insert(q.id, q);
        }
        let mut log = Log::new(
            config.dir.clone(),
            label,
            config.sync,
            segment_size,
            config.max_disk,
            rec.next_lsn,
            rec.segs,
            rec.next_queue_id,
        );
        log.corrupt_records = rec.corrupt_records;
        let path = segment::log_path(&config.dir, rec.next_lsn);
        let file = writer::create_preallocated(&path, segment_size).await?;
        writer::sync_dir(&config.dir).await?;
        log.start(Rc::new(file), State::checkpoint(&state.queues));
        let checkpoint = log.checkpoint_lsn;
        let store = Store {
            state: Rc::new(RefCell::new(state)),
            log: Rc::new(RefCell::new(log)),
        };
        glommio::spawn_local(writer::committer(store.log.clone())).detach();
        if let SyncMode::Interval(every) = config.sync {
            glommio::spawn_local(writer::interval_syncer(store.log.clone(), every)).detach();
        }
        glommio::spawn_local(compaction::maintenance(
            store.state.clone(),
            store.log.clone(),
        ))
        .detach();
        if !unverified.is_empty() {
            let (state, log) = (store.state.clone(), store.log.clone());
            glommio::spawn_local(compaction::scrub(state, log, unverified)).detach();
        }
        Acked {
            log: store.log.clone(),
            lsn: checkpoint,
        }
        .await
        .map_err(|e| io::Error::other(format!("{e:?}")))?;
        store.log.borrow().maint.notify();
        Ok(store)
    }

    fn acked(&self, lsn: u64) -> Acked {
        Acked {
            log: self.log.clone(),
            lsn,
        }
    }

    /// Appends a message to the tail of `queue`, creating it on first use.
    pub fn set(
        &self,
        queue: &[u8],
        flags: u32,
        body: Vec<u8>,
    ) -> LocalFuture<Result<(), StoreError>> {
        let mut st = self.state.borrow_mut();
        let st = &mut *st;
        let mut log = self.log.borrow_mut();
        let existing = st.names.get(queue).copied();
        let mut need = record::record_len(body.len()) as u64;
        if existing.is_none() {
            need += record::record_len(16 + queue.len()) as u64;
        }
        if let Err(e) = log.make_room(need, true, State::checkpoint(&st.queues)) {
            return ready(Err(e));
        }
        let id = match existing {
            Some(id) => id,
            None => {
                let id = log.next_queue_id;
                log.next_queue_id += 1;
                log.append(Kind::Created, id, 0, 0, &record::created_body(0, 0, queue));
                let name: Box<[u8]> = queue.into();
                st.names.insert(name.clone(), id);
                st.queues.insert(id, Queue::new(id, name));
                id
            }
        };
        let q = st.queues.get_mut(&id).expect("queue exists");
        let (ord, off, lsn) = log.append(Kind::Enqueued, id, q.tail, flags, &body);
        let len = (HEADER_LEN + body.len()) as u32;
        let seq = q.push(ord, off, len);
        log.retain(ord, len);
        st.items += 1;
        st.bytes += body.len() as u64;
        st.cache.insert((id, seq), flags, body);
        Box::pin(self.acked(lsn))
    }

    /// Pops the head of `queue`; `None` when it is empty or unknown.
    pub fn get(&self, queue: &[u8]) -> LocalFuture<Result<Option<Message>, StoreError>> {
        let mut st = self.state.borrow_mut();
        let st = &mut *st;
        let mut log = self.log.borrow_mut();
        if let Some(f) = &log.failed {
            return ready(Err(StoreError::Failed(f.clone())));
        }
        let Some(&id) = st.names.get(queue) else {
            return ready(Ok(None));
        };
        if st.queues[&id].locs.is_empty() {
            return ready(Ok(None));
        }
        if let Err(e) = room_for_marker(&mut log, st) {
            return ready(Err(e));
        }
        let q = st.queues.get_mut(&id).expect("queue exists");
        let loc = q.pop().expect("not empty");
        let (_, _, lsn) = log.append(Kind::Consumed, id, q.head, 0, &[]);
        log.release(loc.seg, loc.len, lsn);
        st.items -= 1;
        st.bytes -= loc.body_len();
        let acked = self.acked(lsn);
        if let Some((flags, body)) = st.cache.take((id, loc.seq)) {
            return Box::pin(async move {
                acked.await?;
                Ok(Some(Message {
                    flags,
                    seq: loc.seq,
                    body,
                }))
            });
        }
        if let Some(seg) = log.segs.get_mut(&loc.seg) {
            seg.pins += 1;
        }
        let pin = ReadPin {
            log: self.log.clone(),
            ord: loc.seg,
        };
        Box::pin(async move {
            acked.await?;
            let r = read_message(&pin.log, id, loc).await;
            drop(pin);
            r.map(Some)
        })
    }

    /// Drops `queue` and all its messages; `false` when it did not exist.
    pub fn delete(&self, queue: &[u8]) -> LocalFuture<Result<bool, StoreError>> {
        let mut st = self.state.borrow_mut();
        let st = &mut *st;
        let mut log = self.log.borrow_mut();
        if let Some(f) = &log.failed {
            return ready(Err(StoreError::Failed(f.clone())));
        }
        let Some(&id) = st.names.get(queue) else {
            return ready(Ok(false));
        };
        if let Err(e) = room_for_marker(&mut log, st) {
            return ready(Err(e));
        }
        let (_, _, lsn) = log.append(Kind::Deleted, id, 0, 0, &[]);
        st.names.remove(queue);
        let q = st.queues.remove(&id).expect("queue exists");
        for loc in &q.locs {
            log.release(loc.seg, loc.len, lsn);
            st.cache.remove((id, loc.seq));
        }
        st.items -= q.locs.len() as u64;
        st.bytes -= q.bytes;
        let acked = self.acked(lsn);
        Box::pin(async move {
            acked.await?;
            Ok(true)
        })
    }

    /// Every queue of this shard with its counters, sorted by name.
    pub fn queue_stats(&self) -> Vec<QueueStat> {
        let st = self.state.borrow();
        st.names
            .iter()
            .map(|(name, id)| {
                let q = &st.queues[id];
                QueueStat {
                    name: name.to_vec(),
                    enqueued: q.tail,
                    dequeued: q.head,
                }
            })
            .collect()
    }

    pub fn stats(&self) -> StoreStats {
        let st = self.state.borrow();
        let log = self.log.borrow();
        StoreStats {
            queues: st.names.len() as u64,
            items: st.items,
            bytes: st.bytes,
            log_writes: log.log_writes,
            log_fsyncs: log.log_fsyncs,
            log_bytes_written: log.log_bytes_written,
            log_segments: log.segs.len() as u64,
            log_disk_bytes: log.disk_used() + log.spare_bytes,
            log_corrupt_records: log.corrupt_records,
            cache_bytes: st.cache.bytes() as u64,
        }
    }

    /// Makes everything acknowledged so far durable and closes the files
    /// cleanly (graceful shutdown). The open segment stays as it is; the
    /// next open scans it (one segment) and seals it.
    pub async fn close(&self) -> io::Result<()> {
        let last = self.log.borrow().last_lsn();
        self.acked(last)
            .await
            .map_err(|e| io::Error::other(format!("{e:?}")))?;
        writer::sync_open(&self.log).await.map_err(|()| {
            io::Error::other(
                self.log
                    .borrow()
                    .failed
                    .clone()
                    .unwrap_or_else(|| "sync failed".into()),
            )
        })?;
        {
            let mut l = self.log.borrow_mut();
            l.closed = true;
            l.committer.notify();
            l.maint.notify();
        }
        // Let an index write or segment deletion in progress finish, so the
        // directory is quiet when we return.
        while self.log.borrow().tasks > 0 {
            glommio::timer::sleep(Duration::from_millis(1)).await;
        }
        Ok(())
    }

    /// Test helper: stops the store as a crash would (nothing more is
    /// written or synced) and waits until its tasks have stopped, so the
    /// directory can be reopened in the same process.
    #[cfg(test)]
    pub(crate) async fn crash(&self) {
        {
            let mut l = self.log.borrow_mut();
            l.failed = Some("crashed (test)".into());
            l.closed = true;
            l.committer.notify();
            l.maint.notify();
        }
        while self.log.borrow().tasks > 0 {
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
            if l.busy() || l.maint_running || l.maint.pending() {
                quiet = 0;
            } else {
                quiet += 1;
            }
        }
    }

    #[cfg(test)]
    pub(crate) fn log(&self) -> &Rc<RefCell<Log>> {
        &self.log
    }
}

/// Reads message `loc` of queue `id` from its segment and verifies it.
async fn read_message(log: &Rc<RefCell<Log>>, id: u32, loc: Loc) -> Result<Message, StoreError> {
    let (file, label, first_lsn) = {
        let l = log.borrow();
        let seg = l.segs.get(&loc.seg);
        (
            seg.and_then(|s| s.file.clone()),
            l.label.clone(),
            seg.map_or(0, |s| s.first_lsn),
        )
    };
    let Some(file) = file else {
        return Err(StoreError::Failed(format!(
            "segment of queue message {} is gone",
            loc.seq
        )));
    };
    let data = file
        .read_at(u64::from(loc.off), loc.len as usize)
        .await
        .map_err(|e| {
            let e = segment::to_io(e);
            crate::log!(
                0,
                "{label}: read of segment {first_lsn:020} at {} failed: {e}",
                loc.off
            );
            StoreError::Failed(format!("read failed: {e}"))
        })?;
    match record::decode(&data) {
        Ok((h, body)) if h.kind == Kind::Enqueued && h.queue == id && h.seq == loc.seq => {
            Ok(Message {
                flags: h.flags,
                seq: loc.seq,
                body: body.to_vec(),
            })
        }
        _ => {
            crate::log!(
                0,
                "{label}: segment {first_lsn:020}: corrupt record at offset {} (queue id {id}, message {}): skipped",
                loc.off,
                loc.seq
            );
            log.borrow_mut().corrupt_records += 1;
            Err(StoreError::Failed(format!(
                "corrupt message {} skipped",
                loc.seq
            )))
        }
    }
}

/// Makes room for a body-less record (`Consumed`, `Deleted`). These may use
/// the consumers' reserve: a full disk must never stop `get` or `delete`.
fn room_for_marker(log: &mut Log, st: &State) -> Result<(), StoreError> {
    log.make_room(
        record::record_len(0) as u64,
        false,
        State::checkpoint(&st.queues),
    )
}

#[cfg(test)]
#[path = "store_tests.rs"]
mod tests;
