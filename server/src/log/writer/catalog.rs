//! The catalog: every live queue's name and counters, as the log's own
//! records left them. The log keeps it (not the store) because a segment
//! can be deleted only once what its records say of its queues is restated
//! in a newer one, and every change to it is a record the log writes.
//!
//! A new segment's checkpoint names the live queues by id, as ranges (a
//! million queues made in a row are one range), and restates nothing else:
//! a queue's name and counters are restated only when the segment holding
//! its last restatement, or a record about it since, is about to be deleted
//! (see `log::recovery`, "Which queues exist"). So each entry remembers
//! where it was last restated, and the catalog keeps the live ids as
//! ranges, up to date with every change, for the next checkpoint. Queues
//! are found by id on every get, so they are hashed with the server's
//! integer hasher, not SipHash, and kept side by side ([`IdSlab`]), with
//! the name shared with the store's.
//!
//! The one counter a restatement needs that is not here is the queue's
//! tail (the next sequence number): the store's queue has it, and
//! maintenance asks for it when it restates ([`crate::log::Locators::tails`]).
//! Kept here too, it was a lookup on every set, three cold reads among a
//! million queues: 0.43 of 4.8 µs of CPU per set in a profile of a fill of
//! a million queues.

use std::rc::Rc;

use crate::idhash::{IdMap, IdSlab};
use crate::log::confirmed::Confirmed;
use crate::log::record;

/// Bytes of `ranges` `Confirmed` records.
fn confirmed_bytes(ranges: usize) -> u64 {
    ranges as u64 * record::record_len(8) as u64
}

/// A queue as a checkpoint restates it.
pub struct CatalogEntry {
    /// Shared with the store's queue.
    pub name: Rc<[u8]>,
    /// Every message below is consumed.
    pub head: u64,
    /// Messages above `head` consumed out of order (reliable reads).
    pub confirmed: Confirmed,
    /// Ordinal of the segment with its newest `Created` record.
    pub restated: u32,
}

/// The live queues by id, and the id the next new queue gets (ids are never
/// reused: a record of a deleted queue must not name a new one).
pub(super) struct Catalog {
    queues: IdSlab<Entry>,
    next_id: u32,
    /// The live ids as ascending `[first, end)` ranges.
    live: Vec<(u32, u32)>,
    /// By segment: bytes of the newest `Created` records of live queues in
    /// it, what deleting it writes again (absent: none).
    held: IdMap<u32, u64>,
}

/// A queue as the catalog keeps it: a [`CatalogEntry`] with its name
/// shared.
pub(super) struct Entry {
    pub(super) name: Rc<[u8]>,
    pub(super) head: u64,
    pub(super) confirmed: Confirmed,
    /// Ordinal of the segment with its newest `Created` record.
    pub(super) restated: u32,
}

/// Bytes of the records that restate `q`: its `Created` record and one
/// `Confirmed` record per range confirmed out of order.
pub(super) fn restatement_bytes(q: &Entry) -> u64 {
    created_bytes(&q.name) + confirmed_bytes(q.confirmed.len())
}

/// Bytes of the `Created` record of a queue named `name`.
fn created_bytes(name: &[u8]) -> u64 {
    record::record_len(16 + name.len()) as u64
}

impl Catalog {
    pub(super) fn new(queues: Vec<(u32, CatalogEntry)>, next_id: u32) -> Catalog {
        let mut ids: Vec<u32> = queues.iter().map(|(id, _)| *id).collect();
        let mut held = IdMap::default();
        let entries = queues
            .into_iter()
            .map(|(_, q)| {
                *held.entry(q.restated).or_default() += created_bytes(&q.name);
                Entry {
                    name: q.name,
                    head: q.head,
                    confirmed: q.confirmed,
                    restated: q.restated,
                }
            })
            .collect();
        let table = IdSlab::from_parts(ids.clone(), entries);
        ids.sort_unstable();
        let mut live: Vec<(u32, u32)> = Vec::new();
        for id in ids {
            match live.last_mut() {
                Some((_, end)) if *end == id => *end += 1,
                _ => live.push((id, id + 1)),
            }
        }
        Catalog {
            queues: table,
            next_id,
            live,
            held,
        }
    }

    /// The id the next new queue gets (a checkpoint records it).
    pub(super) fn next_id(&self) -> u32 {
        self.next_id
    }

    /// Takes in a new queue named `name`, created in segment `seg`; returns
    /// its id.
    pub(super) fn create(&mut self, name: Rc<[u8]>, seg: u32) -> u32 {
        let id = self.next_id;
        self.next_id += 1;
        self.hold(seg, created_bytes(&name), true);
        let q = Entry {
            name,
            head: 0,
            confirmed: Confirmed::default(),
            restated: seg,
        };
        self.queues.insert(id, q);
        // Ids only grow: the new one ends the last range or starts one.
        match self.live.last_mut() {
            Some((_, end)) if *end == id => *end += 1,
            _ => self.live.push((id, id + 1)),
        }
        id
    }

    pub(super) fn remove(&mut self, id: u32) {
        let Some(q) = self.queues.remove(&id) else {
            return;
        };
        self.hold(q.restated, created_bytes(&q.name), false);
        let i = self.live.partition_point(|&(_, end)| end <= id);
        let (first, end) = self.live[i];
        debug_assert!(first <= id && id < end, "a live id is in a range");
        match (first == id, end == id + 1) {
            (true, true) => {
                self.live.remove(i);
            }
            (true, false) => self.live[i].0 += 1,
            (false, true) => self.live[i].1 -= 1,
            (false, false) => {
                self.live[i].1 = id;
                self.live.insert(i + 1, (id + 1, end));
            }
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

    pub(super) fn get(&self, id: u32) -> Option<&Entry> {
        self.queues.get(&id)
    }

    /// Queue `id` is restated in segment `seg`.
    pub(super) fn restated(&mut self, id: u32, seg: u32) {
        let Some(q) = self.queues.get_mut(&id) else {
            return;
        };
        let (from, bytes) = (q.restated, created_bytes(&q.name));
        q.restated = seg;
        self.hold(from, bytes, false);
        self.hold(seg, bytes, true);
    }

    /// Bytes of the newest `Created` records of live queues in segment
    /// `seg`.
    pub(super) fn held(&self, seg: u32) -> u64 {
        self.held.get(&seg).copied().unwrap_or(0)
    }

    fn hold(&mut self, seg: u32, bytes: u64, add: bool) {
        let n = self.held.entry(seg).or_default();
        if add {
            *n += bytes;
        } else {
            *n -= bytes;
        }
        if *n == 0 {
            self.held.remove(&seg);
        }
    }

    /// The live ids as ascending `[first, end)` ranges, for a checkpoint.
    pub(super) fn live(&self) -> &[(u32, u32)] {
        &self.live
    }

    /// Every live id, ascending.
    pub(super) fn ids(&self) -> impl Iterator<Item = u32> + '_ {
        self.live.iter().flat_map(|&(first, end)| first..end)
    }

    /// Bytes of the checkpoint that opens a new segment now (without its
    /// record header).
    pub(super) fn checkpoint_bytes(&self) -> u64 {
        8 * self.live.len() as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The ranges are the live ids through creations, removals at either
    /// end or inside a range, and a restart's rebuild; restatement marks
    /// follow.
    #[test]
    fn live_ranges_follow_every_change() {
        let ranges = |c: &Catalog| {
            let mut ids: Vec<u32> = c.queues.iter().map(|(id, _)| id).collect();
            ids.sort_unstable();
            assert_eq!(c.ids().collect::<Vec<_>>(), ids);
            c.live().to_vec()
        };
        let recovered = |restated| CatalogEntry {
            name: b"old".to_vec().into(),
            head: 1,
            confirmed: Confirmed::default(),
            restated,
        };
        let mut c = Catalog::new(vec![(9, recovered(3)), (7, recovered(2))], 10);
        assert_eq!(ranges(&c), vec![(7, 8), (9, 10)]);
        assert_eq!(c.checkpoint_bytes(), 16);
        let ids: Vec<u32> = (0..5).map(|_| c.create(b"q"[..].into(), 4)).collect();
        assert_eq!(ids, vec![10, 11, 12, 13, 14]);
        assert_eq!(ranges(&c), vec![(7, 8), (9, 15)]);
        c.remove(12);
        assert_eq!(ranges(&c), vec![(7, 8), (9, 12), (13, 15)]);
        c.remove(9);
        c.remove(14);
        c.remove(14);
        assert_eq!(ranges(&c), vec![(7, 8), (10, 12), (13, 14)]);
        c.remove(7);
        c.remove(13);
        assert_eq!(ranges(&c), vec![(10, 12)]);
        assert_eq!(c.create(b"r"[..].into(), 5), 15);
        assert_eq!(ranges(&c), vec![(10, 12), (15, 16)]);
        assert_eq!(c.get(15).map(|q| q.restated), Some(5));
        c.restated(10, 6);
        assert_eq!(c.get(10).map(|q| q.restated), Some(6));
        // Held bytes follow each queue's newest `Created` record.
        let q = created_bytes(b"q");
        assert_eq!((c.held(2), c.held(3), c.held(4), c.held(5)), (0, 0, q, q));
        assert_eq!(c.held(6), q);
        c.remove(11);
        assert_eq!(c.held(4), 0);
        c.confirmed(10, 5, 6);
        assert_eq!(c.dequeued(10), 1);
        c.consumed_below(10, 7);
        assert_eq!(c.dequeued(10), 7);
        assert_eq!(c.get(10).map(restatement_bytes), Some(created_bytes(b"q")));
    }
}
