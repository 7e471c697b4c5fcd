//! Hashing for the store's own integer keys (queue ids, `(queue, seq)`,
//! connection ids), and finding them in sorted lists ([`IdWalk`]).
//!
//! These keys are made by the server, not sent by clients, so they need no
//! protection against chosen collisions, and SipHash (std's default) was a
//! measurable share of the CPU per request (issue 8). A multiply by the
//! 64-bit golden ratio spreads small sequential integers over the high
//! bits, where hashbrown takes its control bytes from.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

const K: u64 = 0x9E37_79B9_7F4A_7C15;

/// A hasher for integer keys.
#[derive(Default, Clone, Copy)]
pub struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(u64::from(b));
        }
    }

    fn write_u32(&mut self, n: u32) {
        self.write_u64(u64::from(n));
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(29) ^ n).wrapping_mul(K);
    }

    fn write_usize(&mut self, n: usize) {
        self.write_u64(n as u64);
    }
}

/// A `HashMap` keyed by the server's own integers.
pub type IdMap<K, V> = HashMap<K, V, BuildHasherDefault<IdHasher>>;

/// Finds ids in a sorted list that are mostly asked for in ascending
/// order (recovery reads each segment's queues by id): galloping forward
/// from the last one found, so a walk over the list touches it in order
/// instead of at random, as a hash table of a million queues would.
#[derive(Default)]
pub struct IdWalk {
    at: usize,
}

impl IdWalk {
    /// Where `id` is in `ids` (sorted, distinct).
    pub fn find(&mut self, ids: &[u32], id: u32) -> Option<usize> {
        let mut lo = if ids.get(self.at).is_some_and(|&a| a <= id) {
            self.at
        } else {
            0
        };
        let mut step = 1;
        while lo + step < ids.len() && ids[lo + step] < id {
            lo += step;
            step *= 2;
        }
        let hi = (lo + step + 1).min(ids.len());
        let i = lo + ids[lo..hi].partition_point(|&x| x < id);
        (ids.get(i) == Some(&id)).then(|| {
            self.at = i;
            i
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequential_keys_spread_over_the_high_bits() {
        let tops: std::collections::HashSet<u64> = (0u32..128)
            .map(|i| {
                let mut h = IdHasher::default();
                h.write_u32(i);
                h.finish() >> 57
            })
            .collect();
        assert!(tops.len() > 64, "{} distinct control bytes", tops.len());
        let mut m: IdMap<(u32, u64), u32> = IdMap::default();
        for i in 0..1000u64 {
            m.insert((1, i), i as u32);
        }
        assert_eq!(m[&(1, 999)], 999);
    }

    #[test]
    fn a_walk_finds_every_id_in_any_order() {
        let ids: Vec<u32> = (0..1000).map(|i| i * 3 + 1).collect();
        let mut walk = IdWalk::default();
        for (i, &id) in ids.iter().enumerate() {
            assert_eq!(walk.find(&ids, id), Some(i));
            assert_eq!(walk.find(&ids, id + 1), None);
        }
        for &i in &[999usize, 0, 500, 499, 998, 1] {
            assert_eq!(walk.find(&ids, ids[i]), Some(i));
        }
        assert_eq!(walk.find(&ids, 0), None);
        assert_eq!(walk.find(&ids, 5000), None);
        assert_eq!(IdWalk::default().find(&[], 1), None);
    }
}
