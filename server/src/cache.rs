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

/// Bytes charged per entry on top of its body (map slot, order slot, the
/// body's allocation header).
pub const ENTRY_OVERHEAD: usize = 64;

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

    /// Bytes charged for the entries held.
    pub fn bytes(&self) -> usize {
        self.bytes
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
        if large && self.bytes - self.large_bytes + cost > self.limit {
            return;
        }
        while self.bytes + cost > self.limit {
            let oldest = match self.large.pop_front() {
                Some(old) => old,
                None if large => break,
                None => match self.small.pop_front() {
                    Some(old) => old,
                    None => break,
                },
            };
            self.take(oldest);
        }
        self.bytes += cost;
        if large {
            self.large_bytes += cost;
            self.large.push_back(key);
        } else {
            self.small.push_back(key);
        }
        self.map.insert(key, (flags, body));
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

    #[test]
    fn bounded_and_evicts_oldest() {
        let mut c = HotCache::new(1000);
        for i in 0..10 {
            c.insert((1, i), 0, vec![0; 100]);
            assert!(c.bytes() <= 1000);
        }
        assert!(c.take((1, 0)).is_none());
        assert_eq!(c.take((1, 9)).unwrap().1.len(), 100);
        let before = c.bytes();
        c.insert((1, 99), 0, vec![0; 200]);
        assert_eq!(
            c.bytes(),
            before,
            "a body over a quarter of the cache is not kept"
        );
    }

    #[test]
    fn empty_bodies_are_bounded_too() {
        let mut c = HotCache::new(64 * 100);
        for i in 0..10_000 {
            c.insert((1, i), 0, Vec::new());
        }
        assert!(c.map.len() <= 100);
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
        let mut c = HotCache::new(4 * (big + ENTRY_OVERHEAD));
        c.insert((1, 0), 0, vec![1; 100]);
        for i in 0..10 {
            c.insert((2, i), 0, vec![2; big]);
            assert!(c.bytes() <= c.limit);
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
        let mut c = HotCache::new(4 * (big + ENTRY_OVERHEAD));
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
        let mut c = HotCache::new(4 * (big + ENTRY_OVERHEAD) + 1000);
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
        assert_eq!(c.bytes(), 0);
    }
}
