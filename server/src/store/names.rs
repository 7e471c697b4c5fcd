//! Queue ids by name.
//!
//! Every request looks its queue up by name, so this is a hash table: a
//! B-tree of a million names took ~20 comparisons of cold keys per set.
//! The names are the clients', so they are hashed with std's keyed
//! SipHash.
//!
//! The table holds no names: a slot is a queue's position in the
//! [`QueueTable`] and 32 bits of its name's hash, and the name is read
//! from the queue at that position to tell names of one hash apart. So
//! queues enter and leave the two tables together ([`Names::add_queue`],
//! [`Names::remove_queue`]).
//!
//! It is its own open-addressing table, with linear probing, rather than
//! a `hashbrown` one, for the cold reads. Among a million queues nothing of
//! a set's lookup is in the cache, and hashbrown reads its control bytes
//! first and its slot second, two cold reads before the queue's own; here
//! the slot is the first read, and its neighbours, probed next, are mostly
//! in the same cache line. The slot's hash bits also place it (its top
//! bits are its home slot), so growing never reads a name.
//!
//! Only fan-out queues (a `+` in the name) are also kept by name, in
//! order, for `State::children`'s prefix search; `stats` sorts when it
//! reports.

use std::collections::BTreeMap;
use std::hash::{BuildHasher, RandomState};
use std::rc::Rc;

use super::state::QueueTable;
use crate::queue::Queue;

/// Queue ids by name (see the module doc).
#[derive(Default)]
pub(super) struct Names {
    /// A power of two of them (or none), at most half in use.
    slots: Vec<Slot>,
    len: usize,
    hasher: RandomState,
    fan_out: BTreeMap<Rc<[u8]>, u32>,
}

/// A queue in [`Names`]: 32 bits of its name's hash, and its position in
/// the [`QueueTable`] plus one (0: the slot is empty).
#[derive(Clone, Copy, Default)]
struct Slot {
    hash: u32,
    at: u32,
}

impl Slot {
    fn pos(self) -> Option<u32> {
        self.at.checked_sub(1)
    }
}

/// The fewest slots a table that has any keeps.
const MIN_SLOTS: usize = 16;

impl Names {
    fn hash(&self, name: &[u8]) -> u32 {
        (self.hasher.hash_one(name) >> 32) as u32
    }

    /// The slot where a probe for `hash` starts: its top bits (the table
    /// has slots).
    fn home(&self, hash: u32) -> usize {
        debug_assert!(!self.slots.is_empty());
        let bits = self.slots.len().trailing_zeros();
        ((u64::from(hash) << bits) >> 32) as usize
    }

    fn next(&self, i: usize) -> usize {
        (i + 1) & (self.slots.len() - 1)
    }

    /// The slot of queue `name` among `queues`.
    fn find(&self, name: &[u8], queues: &QueueTable) -> Option<usize> {
        if self.slots.is_empty() {
            return None;
        }
        let hash = self.hash(name);
        let mut i = self.home(hash);
        loop {
            let s = self.slots[i];
            let pos = s.pos()?;
            if s.hash == hash && queues.at_position(pos).is_some_and(|q| q.name() == name) {
                return Some(i);
            }
            i = self.next(i);
        }
    }

    /// The id of queue `name` among `queues`, whose table is told where
    /// the queue is ([`QueueTable::note`]), so that the rest of the request
    /// finds it by id without another lookup.
    pub(super) fn get(&self, name: &[u8], queues: &QueueTable) -> Option<u32> {
        let i = self.find(name, queues)?;
        let pos = self.slots[i].pos()?;
        let id = queues.at_position(pos)?.id();
        queues.note(id, pos);
        Some(id)
    }

    /// Starts fetching the slot where a lookup of `name` begins into the
    /// cache (see [`Names::prefetch_queue`]); the hash it is found by.
    pub(super) fn prefetch_slot(&self, name: &[u8]) -> u32 {
        let hash = self.hash(name);
        if !self.slots.is_empty() {
            prefetch(&self.slots[self.home(hash)]);
        }
        hash
    }

    /// Starts fetching the queue the slot of `hash` names, if that slot,
    /// fetched by [`Names::prefetch_slot`] a little before, has the hash.
    ///
    /// Among a million queues, a lookup waits for two cold reads, the slot
    /// then the queue: about a sixth of a set's CPU, on this workload, and
    /// the largest part of what such a set costs more than a set among 16
    /// queues. A connection parses a batch of pipelined requests before it
    /// submits them: fetching every request's slot, then every one's queue,
    /// lets those reads overlap instead of waiting for each in turn.
    pub(super) fn prefetch_queue(&self, hash: u32, queues: &QueueTable) {
        if let Some(q) = self.at_home(hash, queues) {
            prefetch(q);
        }
    }

    /// Starts fetching the name of the queue the slot of `hash` names
    /// (read to tell it from others of its hash), that queue having been
    /// fetched by [`Names::prefetch_queue`] a little before.
    pub(super) fn prefetch_name(&self, hash: u32, queues: &QueueTable) {
        if let Some(q) = self.at_home(hash, queues) {
            prefetch(q.name());
        }
    }

    /// The queue in the home slot of `hash`, if that slot has the hash.
    fn at_home<'a>(&self, hash: u32, queues: &'a QueueTable) -> Option<&'a Queue> {
        if self.slots.is_empty() {
            return None;
        }
        let s = self.slots[self.home(hash)];
        (s.hash == hash).then_some(())?;
        queues.at_position(s.pos()?)
    }

    /// Room for `n` more names, made once.
    pub(super) fn reserve(&mut self, n: usize) {
        let want = (2 * (self.len + n)).next_power_of_two().max(MIN_SLOTS);
        if want > self.slots.len() {
            self.resize(want);
        }
    }

    /// Names queue `id` `name` (a name no queue has), at position `pos`
    /// of the [`QueueTable`].
    pub(super) fn insert(&mut self, name: Rc<[u8]>, id: u32, pos: u32) {
        self.reserve(1);
        let hash = self.hash(&name);
        self.place(Slot { hash, at: pos + 1 });
        self.len += 1;
        if name.contains(&b'+') {
            self.fan_out.insert(name, id);
        }
    }

    /// Puts `s` in the first empty slot from its home (there is one).
    fn place(&mut self, s: Slot) {
        let mut i = self.home(s.hash);
        while self.slots[i].at != 0 {
            i = self.next(i);
        }
        self.slots[i] = s;
    }

    /// Places every queue again in `n` slots.
    fn resize(&mut self, n: usize) {
        let old = std::mem::replace(&mut self.slots, vec![Slot::default(); n]);
        for s in old.into_iter().filter(|s| s.at != 0) {
            self.place(s);
        }
    }

    /// Adds `q` (a queue whose name no queue has) to `queues` and names it.
    pub(super) fn add_queue(&mut self, q: Queue, queues: &mut QueueTable) {
        let pos = u32::try_from(queues.len()).expect("fewer than 2^32 queues");
        self.insert(q.name_rc(), q.id(), pos);
        let was = queues.insert(q.id(), q);
        debug_assert!(was.is_none(), "a queue id twice");
    }

    /// Removes queue `name` from `queues` and forgets its name; the queue.
    /// The table moves its last queue into the freed position, and that
    /// queue's slot here follows it.
    pub(super) fn remove_queue(&mut self, name: &[u8], queues: &mut QueueTable) -> Option<Queue> {
        let i = self.find(name, queues)?;
        let gone = self.slots[i].pos()?;
        let id = queues.at_position(gone)?.id();
        self.clear(i);
        self.len -= 1;
        if name.contains(&b'+') {
            self.fan_out.remove(name);
        }
        let last = u32::try_from(queues.len() - 1).expect("fewer than 2^32 queues");
        if gone != last {
            let moved = queues.at_position(last).expect("the last queue").name();
            let mut i = self.home(self.hash(moved));
            while self.slots[i].pos() != Some(last) {
                assert!(self.slots[i].at != 0, "the last queue is named");
                i = self.next(i);
            }
            self.slots[i].at = gone + 1;
        }
        let q = queues.remove(&id).expect("a named queue is in the table");
        if self.slots.len() > MIN_SLOTS && self.len * 8 < self.slots.len() {
            self.resize((self.slots.len() / 4).max(MIN_SLOTS));
        }
        Some(q)
    }

    /// Empties slot `i`, moving back the slots after it whose probe
    /// passed it (so that a probe still ends only at an empty slot).
    fn clear(&mut self, mut i: usize) {
        let mut j = i;
        loop {
            j = self.next(j);
            let s = self.slots[j];
            if s.at == 0 {
                break;
            }
            let home = self.home(s.hash);
            // `s` stays if its home is cyclically in (i, j].
            let stays = if i <= j {
                i < home && home <= j
            } else {
                i < home || home <= j
            };
            if !stays {
                self.slots[i] = s;
                i = j;
            }
        }
        self.slots[i] = Slot::default();
    }

    pub(super) fn len(&self) -> usize {
        self.len
    }

    /// The fan-out queues whose names start with `prefix`, in order.
    pub(super) fn fan_out_from<'a>(&'a self, prefix: &'a [u8]) -> impl Iterator<Item = u32> + 'a {
        self.fan_out
            .range::<[u8], _>((
                std::ops::Bound::Included(prefix),
                std::ops::Bound::Unbounded,
            ))
            .take_while(move |(name, _)| name.starts_with(prefix))
            .map(|(_, &id)| id)
    }
}

/// Asks the CPU to bring `*p`'s cache line in, without waiting for it.
#[inline]
fn prefetch<T: ?Sized>(p: &T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch reads nothing architecturally and never faults;
    // `p` is a valid reference anyway.
    unsafe {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        _mm_prefetch::<_MM_HINT_T0>(std::ptr::from_ref(p).cast::<i8>());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

#[cfg(test)]
pub(super) mod tests {
    use std::collections::btree_map::{BTreeMap, Entry};
    use std::rc::Rc;

    use super::{Names, QueueTable};
    use crate::queue::Queue;

    /// Queue `i` named `list[i]`, in both tables.
    pub(in crate::store) fn tables(list: &[&[u8]]) -> (Names, QueueTable) {
        let mut names = Names::default();
        let mut queues = QueueTable::default();
        for (i, name) in list.iter().enumerate() {
            let name: Rc<[u8]> = Rc::from(*name);
            names.add_queue(Queue::new(i as u32, name), &mut queues);
        }
        (names, queues)
    }

    /// Every slot in use names the queue at its position, under the hash
    /// it keeps, and is reached by a probe from its home; no position is
    /// named twice.
    fn check(names: &Names, queues: &QueueTable) {
        let mut seen = std::collections::HashSet::new();
        for (i, s) in names.slots.iter().enumerate() {
            let Some(pos) = s.pos() else { continue };
            let q = queues.at_position(pos).expect("a queue at the position");
            assert_eq!(s.hash, names.hash(q.name()));
            assert!(seen.insert(pos), "position {pos} named twice");
            let mut j = names.home(s.hash);
            while j != i {
                assert!(names.slots[j].at != 0, "a probe for slot {i} ends at {j}");
                j = names.next(j);
            }
        }
        assert_eq!(seen.len(), names.len());
        assert_eq!(queues.len(), names.len());
    }

    #[test]
    fn names_are_found_and_fan_out_queues_listed_in_order() {
        let list: [&[u8]; 6] = [b"b", b"a+x", b"c", b"a", b"a+y", b"ab"];
        let (mut names, mut queues) = tables(&list);
        assert_eq!(names.len(), 6);
        assert_eq!(names.get(b"c", &queues), Some(2));
        assert!(names.get(b"a+y", &queues).is_some() && names.get(b"d", &queues).is_none());
        assert_eq!(names.fan_out_from(b"a+").collect::<Vec<_>>(), [1, 4]);
        let gone = names.remove_queue(b"a+x", &mut queues);
        assert_eq!(gone.map(|q| q.id()), Some(1));
        assert!(names.remove_queue(b"a+x", &mut queues).is_none());
        assert!(!queues.contains_key(&1));
        assert_eq!(names.fan_out_from(b"a+").collect::<Vec<_>>(), [4]);
        assert!(names.fan_out_from(b"b+").next().is_none());
        assert_eq!(names.len(), 5);
        check(&names, &queues);
        assert_eq!(Names::default().get(b"a", &queues), None);
    }

    /// A prefetch is only a hint: on an empty table, for a name no queue
    /// has, or one that is there, it changes nothing.
    #[test]
    fn prefetching_changes_nothing() {
        let (names, queues) = tables(&[b"a", b"b"]);
        let empty = Names::default();
        empty.prefetch_queue(empty.prefetch_slot(b"a"), &queues);
        for name in [&b"a"[..], b"b", b"zz"] {
            names.prefetch_queue(names.prefetch_slot(name), &queues);
        }
        assert_eq!(names.get(b"a", &queues), Some(0));
        assert_eq!(names.get(b"zz", &queues), None);
        check(&names, &queues);
    }

    /// Many names, so that the table grows and places them again from the
    /// hashes it keeps, then shrinks: every one is found, and no other.
    #[test]
    fn names_are_found_after_growth_and_shrinking() {
        let list: Vec<Vec<u8>> = (0..20_000).map(|i| format!("q{i}").into_bytes()).collect();
        let refs: Vec<&[u8]> = list.iter().map(|n| &n[..]).collect();
        let (mut names, mut queues) = tables(&refs);
        for (i, name) in refs.iter().enumerate() {
            assert_eq!(names.get(name, &queues), Some(i as u32));
        }
        assert_eq!(names.get(b"q20000", &queues), None);
        check(&names, &queues);
        for (i, name) in refs.iter().enumerate().step_by(2) {
            let gone = names.remove_queue(name, &mut queues);
            assert_eq!(gone.map(|q| q.id()), Some(i as u32));
        }
        for (i, name) in refs.iter().enumerate() {
            let want = (i % 2 == 1).then_some(i as u32);
            assert_eq!(names.get(name, &queues), want);
        }
        check(&names, &queues);
        let grown = names.slots.len();
        for name in refs.iter().skip(1).step_by(2).skip(100) {
            assert!(names.remove_queue(name, &mut queues).is_some());
        }
        assert!(names.slots.len() < grown / 8, "{} slots", names.slots.len());
        check(&names, &queues);
        for name in refs.iter().skip(1).step_by(2).take(100) {
            assert!(names.get(name, &queues).is_some());
        }
    }

    /// Removing a queue moves the table's last queue into its position,
    /// and removing a slot moves others back: through any order of adds
    /// and removals, the names follow, and every slot names the queue at
    /// the position it keeps. A small table, so that probes wrap around.
    #[test]
    fn names_follow_the_queues_they_name_through_removals() {
        for range in [12u64, 2000] {
            let mut names = Names::default();
            let mut queues = QueueTable::default();
            let mut model = BTreeMap::new();
            let mut next_id = 0u32;
            let mut x = 11u64;
            for step in 0..30_000u32 {
                x = x
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let name = format!("q{}", (x >> 40) % range).into_bytes();
                if x % 5 < 2 {
                    let gone = names.remove_queue(&name, &mut queues).map(|q| q.id());
                    assert_eq!(gone, model.remove(&name), "step {step}");
                } else if let Entry::Vacant(e) = model.entry(name) {
                    let rc: Rc<[u8]> = Rc::from(&e.key()[..]);
                    names.add_queue(Queue::new(next_id, rc), &mut queues);
                    e.insert(next_id);
                    next_id += 1;
                }
                assert_eq!(names.len(), model.len());
                if step % 1000 == 0 {
                    check(&names, &queues);
                }
            }
            check(&names, &queues);
            for (name, &id) in &model {
                assert_eq!(names.get(name, &queues), Some(id));
                assert_eq!(queues.get(&id).map(Queue::name), Some(&name[..]));
            }
        }
    }
}
