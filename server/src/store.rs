//! One storage shard: the queues whose names hash to it, and (once the log
//! lands) the log that makes them durable.
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

use std::cell::RefCell;
use std::collections::{BTreeMap, VecDeque};
use std::future::Future;
use std::io;
use std::path::PathBuf;
use std::pin::Pin;
use std::rc::Rc;
use std::time::Duration;

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
    /// Size of one segment file, in bytes.
    pub segment_size: u64,
    /// This shard's share of `--max-disk`, if any.
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
    /// The shard hit an I/O error it cannot recover from and stopped
    /// accepting writes; the text says why.
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
}

#[derive(Default)]
struct Queue {
    enqueued: u64,
    dequeued: u64,
    messages: VecDeque<Message>,
}

#[derive(Default)]
struct Inner {
    queues: BTreeMap<Vec<u8>, Queue>,
    items: u64,
    bytes: u64,
}

/// One storage shard. Cheap to clone (shared handle).
#[derive(Clone)]
pub struct Store {
    inner: Rc<RefCell<Inner>>,
}

impl Store {
    /// Opens (or creates) the shard described by `config`.
    pub async fn open(config: StoreConfig) -> io::Result<Store> {
        let _ = config;
        Ok(Store {
            inner: Rc::new(RefCell::new(Inner::default())),
        })
    }

    /// Appends a message to the tail of `queue`, creating it on first use.
    pub fn set(
        &self,
        queue: &[u8],
        flags: u32,
        body: Vec<u8>,
    ) -> LocalFuture<Result<(), StoreError>> {
        let mut inner = self.inner.borrow_mut();
        inner.items += 1;
        inner.bytes += body.len() as u64;
        let q = inner.queues.entry(queue.to_vec()).or_default();
        let seq = q.enqueued;
        q.enqueued += 1;
        q.messages.push_back(Message { flags, seq, body });
        Box::pin(async { Ok(()) })
    }

    /// Pops the head of `queue`; `None` when it is empty or unknown.
    pub fn get(&self, queue: &[u8]) -> LocalFuture<Result<Option<Message>, StoreError>> {
        let mut inner = self.inner.borrow_mut();
        let popped = inner.queues.get_mut(queue).and_then(|q| {
            let m = q.messages.pop_front()?;
            q.dequeued += 1;
            Some(m)
        });
        if let Some(m) = &popped {
            inner.items -= 1;
            inner.bytes -= m.body.len() as u64;
        }
        Box::pin(async { Ok(popped) })
    }

    /// Drops `queue` and all its messages; `false` when it did not exist.
    pub fn delete(&self, queue: &[u8]) -> LocalFuture<Result<bool, StoreError>> {
        let mut inner = self.inner.borrow_mut();
        let removed = inner.queues.remove(queue);
        if let Some(q) = &removed {
            inner.items -= q.messages.len() as u64;
            inner.bytes -= q.messages.iter().map(|m| m.body.len() as u64).sum::<u64>();
        }
        let found = removed.is_some();
        Box::pin(async move { Ok(found) })
    }

    /// Every queue of this shard with its counters, sorted by name.
    pub fn queue_stats(&self) -> Vec<QueueStat> {
        self.inner
            .borrow()
            .queues
            .iter()
            .map(|(name, q)| QueueStat {
                name: name.clone(),
                enqueued: q.enqueued,
                dequeued: q.dequeued,
            })
            .collect()
    }

    pub fn stats(&self) -> StoreStats {
        let inner = self.inner.borrow();
        StoreStats {
            queues: inner.queues.len() as u64,
            items: inner.items,
            bytes: inner.bytes,
            ..StoreStats::default()
        }
    }

    /// Makes everything acknowledged so far durable and closes the files
    /// cleanly (graceful shutdown).
    pub async fn close(&self) -> io::Result<()> {
        Ok(())
    }
}
