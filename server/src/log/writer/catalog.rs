//! The catalog: every live queue's name and counters, as the log's own
//! records left them. The log keeps it (not the store) because a new
//! segment must restate it in its checkpoint before older segments can be
//! deleted, and every change to it is a record the log writes.

use std::collections::HashMap;

use crate::log::confirmed::Confirmed;
use crate::log::record;

/// A queue as a checkpoint restates it.
pub struct CatalogEntry {
    pub name: Box<[u8]>,
    /// Every message below is consumed.
    pub head: u64,
    pub tail: u64,
    /// Messages above `head` consumed out of order (reliable reads).
    pub confirmed: Confirmed,
}

/// The live queues by id, and the id the next new queue gets (ids are never
/// reused: a record of a deleted queue must not name a new one).
pub(super) struct Catalog {
    queues: HashMap<u32, CatalogEntry>,
    next_id: u32,
}

impl Catalog {
    pub(super) fn new(queues: Vec<(u32, CatalogEntry)>, next_id: u32) -> Catalog {
        Catalog {
            queues: queues.into_iter().collect(),
            next_id,
        }
    }

    /// The id the next new queue gets (a checkpoint records it).
    pub(super) fn next_id(&self) -> u32 {
        self.next_id
    }

    /// Takes in a new queue named `name`; returns its id.
    pub(super) fn create(&mut self, name: &[u8]) -> u32 {
        let id = self.next_id;
        self.next_id += 1;
        self.queues.insert(
            id,
            CatalogEntry {
                name: name.into(),
                head: 0,
                tail: 0,
                confirmed: Confirmed::default(),
            },
        );
        id
    }

    pub(super) fn remove(&mut self, id: u32) {
        self.queues.remove(&id);
    }

    /// Message `seq` of queue `id` is logged.
    pub(super) fn enqueued(&mut self, id: u32, seq: u64) {
        if let Some(q) = self.queues.get_mut(&id) {
            q.tail = q.tail.max(seq + 1);
        }
    }

    /// Everything of queue `id` below `head` is consumed.
    pub(super) fn consumed_below(&mut self, id: u32, head: u64) {
        if let Some(q) = self.queues.get_mut(&id) {
            q.head = q.head.max(head);
            q.confirmed.drop_below(head);
        }
    }

    /// Messages `[seq, end)` of queue `id` are consumed out of order.
    pub(super) fn confirmed(&mut self, id: u32, seq: u64, end: u64) {
        if let Some(q) = self.queues.get_mut(&id) {
            q.confirmed.insert(seq, end);
        }
    }

    /// Messages of queue `id` consumed so far.
    pub(super) fn dequeued(&self, id: u32) -> u64 {
        self.queues
            .get(&id)
            .map_or(0, |q| q.head + q.confirmed.count())
    }

    /// The live queues' ids in order, for a checkpoint (the map's own order
    /// would differ from run to run).
    pub(super) fn ids(&self) -> Vec<u32> {
        let mut ids: Vec<u32> = self.queues.keys().copied().collect();
        ids.sort_unstable();
        ids
    }

    pub(super) fn get(&self, id: u32) -> Option<&CatalogEntry> {
        self.queues.get(&id)
    }

    /// Bytes the checkpoint that opens a new segment takes now (without its
    /// own `Checkpoint` record).
    pub(super) fn checkpoint_bytes(&self) -> u64 {
        self.queues
            .values()
            .map(|q| {
                record::record_len(16 + q.name.len()) as u64
                    + q.confirmed.len() as u64 * record::record_len(8) as u64
            })
            .sum()
    }
}
