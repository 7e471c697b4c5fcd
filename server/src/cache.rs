//! The hot cache: recently enqueued message bodies, bounded in bytes.
//!
//! A consumer that keeps up pops messages shortly after they were set, so
//! the newest bodies are the ones worth keeping: eviction drops the oldest
//! insertion first. A popped message leaves the cache at once. A message
//! that is not here is read from its segment with a DMA read.

use std::collections::VecDeque;

use crate::idhash::IdMap;

/// Bytes charged per entry on top of its body (map slot, order slot, the
/// body's allocation header).
pub const ENTRY_OVERHEAD: usize = 64;

/// `(queue id, message seq)`.
pub type Key = (u32, u64);

/// A bounded map from message to `(flags, body)`.
pub struct HotCache {
    limit: usize,
    bytes: usize,
    map: IdMap<Key, (u32, Vec<u8>)>,
    /// Insertion order; may hold keys already removed from `map`.
    order: VecDeque<Key>,
}

impl HotCache {
    pub fn new(limit: usize) -> HotCache {
        HotCache {
            limit,
            bytes: 0,
            map: IdMap::default(),
            order: VecDeque::new(),
        }
    }

    /// Bytes charged for the entries held.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Keeps `body` unless it alone is over a quarter of the limit; evicts
    /// the oldest entries to make room. Each entry is charged its body plus
    /// [`ENTRY_OVERHEAD`], so even empty bodies are bounded in number.
    pub fn insert(&mut self, key: Key, flags: u32, body: Vec<u8>) {
        let cost = body.len() + ENTRY_OVERHEAD;
        if cost > self.limit / 4 {
            return;
        }
        while self.bytes + cost > self.limit {
            let Some(old) = self.order.pop_front() else {
                break;
            };
            if let Some((_, b)) = self.map.remove(&old) {
                self.bytes -= b.len() + ENTRY_OVERHEAD;
            }
        }
        self.bytes += cost;
        if let Some((_, b)) = self.map.insert(key, (flags, body)) {
            self.bytes -= b.len() + ENTRY_OVERHEAD;
        }
        self.order.push_back(key);
    }

    /// Takes the entry out (the message was popped).
    pub fn take(&mut self, key: Key) -> Option<(u32, Vec<u8>)> {
        let v = self.map.remove(&key)?;
        self.bytes -= v.1.len() + ENTRY_OVERHEAD;
        // Keep `order` from filling with dead keys when nothing is evicted.
        while let Some(front) = self.order.front() {
            if self.map.contains_key(front) {
                break;
            }
            self.order.pop_front();
        }
        if self.order.len() > 2 * self.map.len() + 1024 {
            let map = &self.map;
            self.order.retain(|k| map.contains_key(k));
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
        assert!(c.order.len() < 5000);
    }
}
