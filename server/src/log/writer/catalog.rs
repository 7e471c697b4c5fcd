//! The catalog: every live queue's name and counters, as the log's own
//! records left them. The log keeps it (not the store) because a new
//! segment must restate it in its checkpoint before older segments can be
//! deleted, and every change to it is a record the log writes.
//!
//! With a million queues the catalog is the biggest thing a checkpoint
//! restates, so what a checkpoint would take is kept as a running total
//! rather than summed over every queue: the log asks for it whenever it
//! sizes a segment or a spare. Queues are found by id on every set and get,
//! so they are hashed with the server's integer hasher, not SipHash, and
//! boxed (an empty slot of the table is then 16 bytes, not a whole entry),
//! with the name shared with the store's.

use std::rc::Rc;

use crate::idhash::IdMap;
use crate::log::confirmed::Confirmed;
use crate::log::record;

/// Bytes of `ranges` `Confirmed` records.
fn confirmed_bytes(ranges: usize) -> u64 {
    ranges as u64 * record::record_len(8) as u64
}

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
    queues: IdMap<u32, Box<Entry>>,
    next_id: u32,
    /// Bytes of the records restating every queue (see
    /// [`Catalog::checkpoint_bytes`]), kept up to date by every change.
    checkpoint_bytes: u64,
}

/// A queue as the catalog keeps it: a [`CatalogEntry`] with its name
/// shared.
pub(super) struct Entry {
    pub(super) name: Rc<[u8]>,
    pub(super) head: u64,
    pub(super) tail: u64,
    pub(super) confirmed: Confirmed,
}

/// Bytes of the records a checkpoint restates `q` with: its `Created`
/// record and one `Confirmed` record per range confirmed out of order.
fn entry_bytes(q: &Entry) -> u64 {
    record::record_len(16 + q.name.len()) as u64 + confirmed_bytes(q.confirmed.len())
}

impl Catalog {
    pub(super) fn new(queues: Vec<(u32, CatalogEntry)>, next_id: u32) -> Catalog {
        let mut table = IdMap::with_capacity_and_hasher(queues.len(), Default::default());
        let mut checkpoint_bytes = 0;
        for (id, q) in queues {
            let q = Entry {
                name: q.name.into(),
                head: q.head,
                tail: q.tail,
                confirmed: q.confirmed,
            };
            checkpoint_bytes += entry_bytes(&q);
            table.insert(id, Box::new(q));
        }
        Catalog {
            queues: table,
            next_id,
            checkpoint_bytes,
        }
    }

    /// The id the next new queue gets (a checkpoint records it).
    pub(super) fn next_id(&self) -> u32 {
        self.next_id
    }

    /// Takes in a new queue named `name`; returns its id.
    pub(super) fn create(&mut self, name: Rc<[u8]>) -> u32 {
        let id = self.next_id;
        self.next_id += 1;
        let q = Entry {
            name,
            head: 0,
            tail: 0,
            confirmed: Confirmed::default(),
        };
        self.checkpoint_bytes += entry_bytes(&q);
        self.queues.insert(id, Box::new(q));
        id
    }

    pub(super) fn remove(&mut self, id: u32) {
        if let Some(q) = self.queues.remove(&id) {
            self.checkpoint_bytes -= entry_bytes(&q);
        }
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
            let ranges = q.confirmed.len();
            q.confirmed.drop_below(head);
            self.checkpoint_bytes -= confirmed_bytes(ranges - q.confirmed.len());
        }
    }

    /// Messages `[seq, end)` of queue `id` are consumed out of order.
    pub(super) fn confirmed(&mut self, id: u32, seq: u64, end: u64) {
        if let Some(q) = self.queues.get_mut(&id) {
            let before = confirmed_bytes(q.confirmed.len());
            q.confirmed.insert(seq, end);
            // Inserting may merge ranges as well as add one.
            self.checkpoint_bytes =
                self.checkpoint_bytes - before + confirmed_bytes(q.confirmed.len());
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

    pub(super) fn get(&self, id: u32) -> Option<&Entry> {
        self.queues.get(&id).map(|q| &**q)
    }

    /// Bytes the checkpoint that opens a new segment takes now (without its
    /// own `Checkpoint` record).
    pub(super) fn checkpoint_bytes(&self) -> u64 {
        self.checkpoint_bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The running total is what summing every queue gives, through
    /// creations, out-of-order confirmations (which add and merge ranges),
    /// the head passing them, and removals.
    #[test]
    fn checkpoint_bytes_follow_every_change() {
        let summed = |c: &Catalog| c.queues.values().map(|q| entry_bytes(q)).sum::<u64>();
        let recovered = CatalogEntry {
            name: b"old".to_vec().into(),
            head: 1,
            tail: 2,
            confirmed: Confirmed::default(),
        };
        let mut c = Catalog::new(vec![(7, recovered)], 8);
        assert_eq!(c.checkpoint_bytes(), summed(&c));
        c.remove(7);
        let a = c.create(b"a"[..].into());
        let b = c.create(b"a-longer-name"[..].into());
        assert_eq!(c.checkpoint_bytes(), summed(&c));
        c.confirmed(a, 5, 6);
        c.confirmed(a, 8, 9);
        assert_eq!(c.get(a).map(|q| q.confirmed.len()), Some(2));
        assert_eq!(c.checkpoint_bytes(), summed(&c));
        c.confirmed(a, 6, 8); // merges the two into one
        assert_eq!(c.get(a).map(|q| q.confirmed.len()), Some(1));
        assert_eq!(c.checkpoint_bytes(), summed(&c));
        c.confirmed(b, 3, 4);
        c.consumed_below(a, 10);
        assert_eq!(c.checkpoint_bytes(), summed(&c));
        c.remove(b);
        c.remove(b);
        assert_eq!(c.checkpoint_bytes(), summed(&c));
        c.remove(a);
        assert_eq!(c.checkpoint_bytes(), 0);
        assert_eq!(c.dequeued(a), 0);
    }
}
