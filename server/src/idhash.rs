//! Hashing for the store's own integer keys (queue ids, `(queue, seq)`,
//! connection ids), and finding them in sorted lists ([`IdWalk`]).
//!
//! These keys are made by the server, not sent by clients, so they need no
//! protection against chosen collisions, and SipHash (std's default) was a
//! measurable share of the CPU per request (issue 8). A multiply by the
//! 64-bit golden ratio spreads small sequential integers over the high
//! bits, where hashbrown takes its control bytes from.

use std::cell::Cell;
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

/// No hint: no entry has id `u32::MAX` at position `u32::MAX`.
const NO_HINT: (u32, u32, u64) = (u32::MAX, u32::MAX, u64::MAX);

/// A `HashMap` keyed by the server's own integers.
pub type IdMap<K, V> = HashMap<K, V, BuildHasherDefault<IdHasher>>;

/// Values by id, kept side by side in one vector and found through a table
/// of positions.
///
/// For the tables with an entry per queue (the store's queues, the log's
/// catalog). A hash table holding them in place has slots of a whole entry,
/// up to half of them empty after it grows; boxed, each costs an
/// allocation, and a restart of a million queues made a million of them per
/// table (malloc was the largest share of its CPU). Here a slot is 8 bytes
/// and the entries are one allocation, in no particular order: removing one
/// moves the last into its place.
pub struct IdSlab<T> {
    at: IdMap<u32, u32>,
    /// The ids of `items`, in the same order.
    ids: Vec<u32>,
    items: Vec<T>,
    /// Where an id was last said to be ([`IdSlab::note`]): `(id, position,
    /// removals then)`.
    hint: Cell<(u32, u32, u64)>,
    /// Removals so far (the only change that moves an entry).
    removals: u64,
}

impl<T> Default for IdSlab<T> {
    fn default() -> Self {
        IdSlab {
            at: IdMap::default(),
            ids: Vec::new(),
            items: Vec::new(),
            hint: Cell::new(NO_HINT),
            removals: 0,
        }
    }
}

impl<T> IdSlab<T> {
    pub fn with_capacity(n: usize) -> IdSlab<T> {
        IdSlab {
            at: IdMap::with_capacity_and_hasher(n, Default::default()),
            ids: Vec::with_capacity(n),
            items: Vec::with_capacity(n),
            hint: Cell::new(NO_HINT),
            removals: 0,
        }
    }

    /// `items`, whose ids are `ids` (distinct), taken as they are.
    pub fn from_parts(ids: Vec<u32>, items: Vec<T>) -> IdSlab<T> {
        assert_eq!(ids.len(), items.len());
        let mut at = IdMap::with_capacity_and_hasher(ids.len(), Default::default());
        for (i, &id) in ids.iter().enumerate() {
            let was = at.insert(id, u32::try_from(i).expect("fewer than 2^32 entries"));
            assert!(was.is_none(), "id {id} twice");
        }
        IdSlab {
            at,
            ids,
            items,
            hint: Cell::new(NO_HINT),
            removals: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    pub fn contains_key(&self, id: &u32) -> bool {
        self.at.contains_key(id)
    }

    pub fn get(&self, id: &u32) -> Option<&T> {
        self.position(*id).map(|i| &self.items[i as usize])
    }

    pub fn get_mut(&mut self, id: &u32) -> Option<&mut T> {
        self.position(*id).map(|i| &mut self.items[i as usize])
    }

    /// Where entry `id` is: the hint's position if it is `id`'s and no
    /// removal has moved an entry since, else the table's.
    fn position(&self, id: u32) -> Option<u32> {
        let (hinted, pos, removals) = self.hint.get();
        if hinted == id && removals == self.removals {
            return Some(pos);
        }
        self.at.get(&id).copied()
    }

    /// Entry `id` is at `pos` (a caller that found it by position says
    /// so): lookups of `id` go there without the table until another hint
    /// or a removal. A request finds its queue by name, then by id a few
    /// times: among a million queues the table's lookup was a cold read or
    /// two on every request.
    pub fn note(&self, id: u32, pos: u32) {
        debug_assert_eq!(self.ids.get(pos as usize), Some(&id));
        self.hint.set((id, pos, self.removals));
    }

    /// The entry at `pos`: a new entry's place is the number of entries
    /// before it ([`IdSlab::from_parts`] keeps their order), until a removal
    /// moves the last entry into the place it frees. Found without the
    /// table: a caller that keeps positions saves its two cold reads.
    pub fn at_position(&self, pos: u32) -> Option<&T> {
        self.items.get(pos as usize)
    }

    /// Entry `id`, made with `T::default()` if absent.
    pub fn get_or_default(&mut self, id: u32) -> &mut T
    where
        T: Default,
    {
        let next = u32::try_from(self.items.len()).expect("fewer than 2^32 entries");
        let i = *self.at.entry(id).or_insert(next);
        if i == next {
            self.ids.push(id);
            self.items.push(T::default());
        }
        &mut self.items[i as usize]
    }

    /// The ids and the entries, in the same (no particular) order.
    pub fn into_parts(self) -> (Vec<u32>, Vec<T>) {
        (self.ids, self.items)
    }

    /// Adds `v` as `id`; the value it replaced, if any.
    pub fn insert(&mut self, id: u32, v: T) -> Option<T> {
        match self.at.get(&id) {
            Some(&i) => Some(std::mem::replace(&mut self.items[i as usize], v)),
            None => {
                let i = u32::try_from(self.items.len()).expect("fewer than 2^32 entries");
                self.at.insert(id, i);
                self.ids.push(id);
                self.items.push(v);
                None
            }
        }
    }

    pub fn remove(&mut self, id: &u32) -> Option<T> {
        let i = self.at.remove(id)? as usize;
        self.removals += 1;
        self.ids.swap_remove(i);
        let v = self.items.swap_remove(i);
        if let Some(&moved) = self.ids.get(i) {
            self.at.insert(moved, i as u32);
        }
        // Give back what a mass deletion left unused.
        if self.items.capacity() > 1024 && self.items.len() < self.items.capacity() / 4 {
            let keep = self.items.len() * 2;
            self.ids.shrink_to(keep);
            self.items.shrink_to(keep);
            self.at.shrink_to(keep);
        }
        Some(v)
    }

    pub fn iter(&self) -> impl Iterator<Item = (u32, &T)> + '_ {
        self.ids.iter().copied().zip(&self.items)
    }

    pub fn values(&self) -> impl Iterator<Item = &T> + '_ {
        self.items.iter()
    }

    pub fn values_mut(&mut self) -> impl Iterator<Item = &mut T> + '_ {
        self.items.iter_mut()
    }
}

impl<T> std::ops::Index<&u32> for IdSlab<T> {
    type Output = T;

    /// Entry `id`, which must exist.
    fn index(&self, id: &u32) -> &T {
        let i = self.position(*id).expect("an entry with this id");
        &self.items[i as usize]
    }
}

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
    fn a_slab_finds_what_it_holds_after_removals() {
        let mut s = IdSlab::default();
        let mut model = std::collections::BTreeMap::new();
        let mut x = 7u64;
        for step in 0..20_000u32 {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let id = (x >> 40) as u32 % 3000;
            if x.is_multiple_of(3) {
                assert_eq!(s.remove(&id), model.remove(&id), "step {step}");
            } else {
                assert_eq!(s.insert(id, step), model.insert(id, step), "step {step}");
            }
            assert_eq!(s.len(), model.len());
        }
        for (id, v) in &model {
            assert_eq!(s.get(id), Some(v));
            assert_eq!(s[id], *v);
        }
        let mut all: Vec<(u32, u32)> = s.iter().map(|(id, v)| (id, *v)).collect();
        all.sort_unstable();
        assert_eq!(all, model.into_iter().collect::<Vec<_>>());
        *s.get_or_default(5000) += 1;
        *s.get_or_default(5000) += 1;
        assert_eq!(s[&5000], 2);
        for id in 0..3000 {
            s.remove(&id);
        }
        s.remove(&5000);
        assert!(s.is_empty());
        assert!(s.items.capacity() <= 1024 * 2 && s.ids.capacity() <= 1024 * 2);
    }

    /// A hint is followed only while it holds: a removal (which moves the
    /// last entry) or another hint ends it.
    #[test]
    fn a_hint_is_followed_only_while_it_holds() {
        let mut s = IdSlab::default();
        for id in 10..15u32 {
            s.insert(id, id * 100);
        }
        s.note(11, 1);
        assert_eq!(
            (s.get(&11), s.get(&14), s[&12]),
            (Some(&1100), Some(&1400), 1200)
        );
        s.remove(&11); // 14 moves to position 1
        assert_eq!((s.get(&11), s.get(&14)), (None, Some(&1400)));
        s.note(14, 1);
        *s.get_mut(&14).unwrap() += 1;
        assert_eq!((s[&14], s.get(&10)), (1401, Some(&1000)));
        s.insert(14, 7); // replaced in place
        assert_eq!(s.get(&14), Some(&7));
    }

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
