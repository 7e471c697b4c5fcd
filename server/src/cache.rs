//! The hot cache: recently enqueued message bodies, bounded in bytes.
//!
//! A consumer that keeps up pops messages shortly after they were set, so
//! the newest bodies are the ones worth keeping: eviction drops the oldest
//! insertion first. A popped message leaves the cache at once. A message
//! that is not here is read from its segment with a DMA read.
//!
//! Large bodies never push small ones out. A miss costs a device read
//! whatever the body's size, and that read waits behind everything else
//! the device has queued: when a stream of 8 MiB messages cycled the cache
//! every fraction of a second, small messages that sat a little longer
//! were evicted and their gets waited tens of milliseconds behind the large
//! writes (issue 8's fairness runs). So a [`LARGE`] body may only take free
//! room or evict older large bodies, while a small body evicts large ones
//! before small ones.

use std::collections::VecDeque;

use crate::idhash::IdMap;

/// Bytes charged per entry on top of its body: the body's allocation
/// header. The map's and the orders' tables are charged as they are
/// ([`HotCache::held`]), not per entry: a map that entries keep leaving
/// fills with tombstones, and hashbrown then doubles it rather than
/// rehashing in place once more than half of it is live, so its table
/// holds between one and four slots per entry, depending on its history.
/// Charged a fixed 64 bytes an entry, `-m 64` held 96 MiB after a million
/// sets and 107 MiB after five million (measured with a heap profiler).
pub const ENTRY_OVERHEAD: usize = 16;

/// Bytes of one slot of the map's table (its control byte included).
const SLOT: usize = std::mem::size_of::<(Key, (u32, Vec<u8>))>() + 1;

/// Bodies at least this large are cached only in room no small body needs.
pub const LARGE: usize = 64 << 10;

/// `(queue id, message seq)`.
pub type Key = (u32, u64);

/// A bounded map from message to `(flags, body)`.
pub struct HotCache {
    limit: usize,
    bytes: usize,
    /// Bytes charged for the large entries (part of `bytes`).
    large_bytes: usize,
    map: IdMap<Key, (u32, Vec<u8>)>,
    /// Insertion order of the small and of the large entries; each may hold
    /// keys already removed from `map`.
    small: VecDeque<Key>,
    large: VecDeque<Key>,
}

fn cost(body: &[u8]) -> usize {
    body.len() + ENTRY_OVERHEAD
}

impl HotCache {
    pub fn new(limit: usize) -> HotCache {
        HotCache {
            limit,
            bytes: 0,
            large_bytes: 0,
            map: IdMap::default(),
            small: VecDeque::new(),
            large: VecDeque::new(),
        }
    }

    /// Bytes held: the entries and the tables that find them.
    pub fn held(&self) -> usize {
        // A table of `capacity` usable slots has a power of two of them,
        // 8 for 7 usable (hashbrown's load factor; exact for the large
        // tables that matter).
        let map = self.map.capacity().div_ceil(7) * 8 * SLOT;
        let orders = (self.small.capacity() + self.large.capacity()) * std::mem::size_of::<Key>();
        self.bytes + map + orders
    }

    /// Evicts the oldest entries until `need` more bytes fit; whether they
    /// do. A large entry's room is only ever made by evicting large ones.
    fn make_room(&mut self, need: usize, large: bool) -> bool {
        while self.held() + need > self.limit {
            let oldest = match self.large.pop_front() {
                Some(old) => old,
                None if large => return false,
                None => match self.small.pop_front() {
                    Some(old) => old,
                    None => return false,
                },
            };
            self.take(oldest);
        }
        true
    }

    /// Keeps `body` unless it alone is over a quarter of the limit, or it
    /// is large and only small entries stand in its way; evicts the oldest
    /// entries to make room (see the module doc). Each entry is charged its
    /// body plus [`ENTRY_OVERHEAD`], so even empty bodies are bounded in
    /// number.
    pub fn insert(&mut self, key: Key, flags: u32, body: Vec<u8>) {
        let cost = cost(&body);
        if cost > self.limit / 4 {
            return;
        }
        let large = body.len() >= LARGE;
        self.remove(key);
        if large && self.held() - self.large_bytes + cost > self.limit {
            return;
        }
        if !self.make_room(cost, large) {
            return;
        }
        self.bytes += cost;
        if large {
            self.large_bytes += cost;
            self.large.push_back(key);
        } else {
            self.small.push_back(key);
        }
        self.map.insert(key, (flags, body));
        // The insert may have grown the map's table (or an order's).
        self.make_room(0, false);
    }

    /// Takes the entry out (the message was popped).
    pub fn take(&mut self, key: Key) -> Option<(u32, Vec<u8>)> {
        let v = self.map.remove(&key)?;
        let cost = cost(&v.1);
        self.bytes -= cost;
        if v.1.len() >= LARGE {
            self.large_bytes -= cost;
        }
        // Keep the orders from filling with dead keys when nothing is
        // evicted.
        for order in [&mut self.small, &mut self.large] {
            while let Some(front) = order.front() {
                if self.map.contains_key(front) {
                    break;
                }
                order.pop_front();
            }
        }
        if self.small.len() + self.large.len() > 2 * self.map.len() + 1024 {
            let map = &self.map;
            self.small.retain(|k| map.contains_key(k));
            self.large.retain(|k| map.contains_key(k));
        }
        Some(v)
    }

    /// A copy of the entry (a peek: the message stays queued).
    pub fn get(&self, key: Key) -> Option<(u32, Vec<u8>)> {
        self.map.get(&key).cloned()
    }

    /// Drops the entry if present.
    pub fn remove(&mut self, key: Key) {
        let _ = self.take(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A cache whose tables are made for 16 entries up front, with room
    /// for `content` bytes of entries beside them.
    fn sized_for(content: usize) -> HotCache {
        let mut c = HotCache::new(0);
        c.map.reserve(16);
        c.small.reserve(16);
        c.large.reserve(16);
        c.limit = content + c.held();
        c
    }

    #[test]
    fn bounded_and_evicts_oldest() {
        let limit = 64 << 10;
        let mut c = HotCache::new(limit);
        for i in 0..10_000 {
            c.insert((1, i), 0, vec![0; 100]);
            assert!(c.held() <= limit);
        }
        assert!(c.take((1, 0)).is_none());
        assert_eq!(c.take((1, 9_999)).unwrap().1.len(), 100);
        let before = c.held();
        c.insert((1, 99_999), 0, vec![0; limit / 4]);
        assert_eq!(
            c.held(),
            before,
            "a body over a quarter of the cache is not kept"
        );
    }

    #[test]
    fn empty_bodies_are_bounded_too() {
        let mut c = HotCache::new(64 << 10);
        for i in 0..100_000 {
            c.insert((1, i), 0, Vec::new());
        }
        assert!(c.map.len() <= (64 << 10) / ENTRY_OVERHEAD);
        assert!(c.held() <= 64 << 10);
    }

    #[test]
    fn tables_are_charged_as_they_grow_with_churn() {
        // Entries set and popped out of order leave tombstones behind, and
        // the map's table grows past its live entries: the cache then holds
        // fewer of them, never more bytes than its limit.
        let limit = 4 << 20;
        let mut c = HotCache::new(limit);
        for i in 0..2_000_000u64 {
            c.insert((1, i), 0, vec![0; 100]);
            if i % 3 == 0 {
                c.take((1, i / 2));
            }
            assert!(c.held() <= limit, "{} held at {i}", c.held());
        }
        assert!(c.map.len() > 10_000, "{} entries", c.map.len());
    }

    #[test]
    fn order_does_not_grow_without_bound() {
        let mut c = HotCache::new(1 << 20);
        c.insert((0, 0), 0, vec![1]); // never taken: pins the front
        for i in 1..100_000u64 {
            c.insert((1, i), 0, vec![1]);
            c.take((1, i));
        }
        assert!(c.small.len() < 5000);
    }

    #[test]
    fn large_bodies_never_evict_small_ones() {
        let big = LARGE;
        let mut c = sized_for(4 * (big + ENTRY_OVERHEAD) + 100 + ENTRY_OVERHEAD);
        c.insert((1, 0), 0, vec![1; 100]);
        for i in 0..10 {
            c.insert((2, i), 0, vec![2; big]);
            assert!(c.held() <= c.limit);
        }
        assert_eq!(
            c.take((1, 0)).unwrap().1,
            vec![1; 100],
            "the small one stayed"
        );
        assert!(c.take((2, 9)).is_some(), "the newest large one is kept");
        assert!(c.take((2, 0)).is_none(), "the oldest large ones went");

        // Small bodies fill the cache: a large one finds no room and is
        // not kept, while a small one evicts the oldest small.
        let mut c = sized_for(4 * (big + ENTRY_OVERHEAD));
        let small = (big + ENTRY_OVERHEAD) / 2 - ENTRY_OVERHEAD;
        for i in 0..8 {
            c.insert((1, i), 0, vec![1; small]);
        }
        c.insert((2, 0), 0, vec![2; big]);
        assert!(c.take((2, 0)).is_none());
        assert!(c.take((1, 0)).is_some());
        c.insert((1, 8), 0, vec![1; small]);
        c.insert((1, 9), 0, vec![1; small]);
        assert!(
            c.take((1, 1)).is_none(),
            "a small one evicts the oldest small"
        );
        assert!(c.take((1, 9)).is_some());
    }

    #[test]
    fn small_bodies_evict_large_ones_first() {
        let big = LARGE;
        let mut c = sized_for(4 * (big + ENTRY_OVERHEAD) + 1000);
        c.insert((1, 0), 0, vec![1; 100]);
        for i in 0..4 {
            c.insert((2, i), 0, vec![2; big]);
        }
        c.insert((1, 1), 0, vec![1; 900]);
        assert!(c.take((2, 0)).is_none(), "the oldest large one made room");
        assert!(c.take((1, 0)).is_some());
        for i in 1..4 {
            assert!(c.take((2, i)).is_some());
        }
        assert!(c.take((1, 1)).is_some());
        assert_eq!(c.bytes, 0);
    }
}
