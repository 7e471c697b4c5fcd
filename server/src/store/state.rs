//! The queue table: one shard's queues by id (how records name them) and
//! by name (how requests do), and what the queues of a shard share: the
//! hot cache, the totals `stats` reports, the limits in force and the
//! bodies being written out of line. Keeping these together is what lets
//! a request change all of them in one synchronous step.

use std::cell::RefMut;
use std::collections::BTreeMap;
use std::hash::{BuildHasher, RandomState};
use std::rc::Rc;
use std::sync::Arc;

use hashbrown::HashTable;

use super::out_of_line::OutOfLine;
use super::paging::PageWait;
use super::regions::RegionJob;
use super::Store;
use crate::cache::HotCache;
use crate::idhash::{IdMap, IdSlab};
use crate::limits::{Limits, QueueLimits};
use crate::log::record;
use crate::log::writer::MessageMeta;
use crate::log::{Log, Pos};
use crate::queue::Queue;

/// The queues of one shard.
///
/// # Borrow order
/// The store borrows the queue table first and the log second
/// ([`Store::both`] takes the two for a request's change; reads such as
/// `stats` keep the same order). Maintenance (`log::compaction`) reaches
/// the table through [`StateLocators`](super::locators::StateLocators),
/// and only between its borrows of the log (its `Queues` wrapper checks
/// that in debug builds), so the two orders never meet:
/// - the store never calls into maintenance: it spawns its tasks, and the
///   one [`Locators`](crate::log::Locators) it makes goes to them;
/// - what maintenance reaches here never takes the log: `StateLocators`
///   has no handle to it, and the methods it calls take no [`Log`];
/// - `StateLocators` finds the table with `try_borrow_mut` and names this
///   rule if a store call ever holds it (a test checks).
pub(super) struct State {
    pub(super) queues: QueueTable,
    pub(super) names: Names,
    pub(super) items: u64,
    pub(super) bytes: u64,
    pub(super) cache: HotCache,
    pub(super) label: String,
    /// The per-queue limits in force, and their generation.
    pub(super) limits: Arc<Limits>,
    pub(super) limits_generation: u64,
    /// Queues with a `+` in their name (if none, a set has no copies to
    /// look for).
    pub(super) fan_out_queues: usize,
    /// Messages whose bodies are being written out of line.
    pub(super) regions: IdMap<(u32, u64), Rc<OutOfLine>>,
    /// Region writes appended but not yet handed to a task.
    pub(super) new_regions: Vec<RegionJob>,
    /// Window reads in flight, by queue.
    pub(super) paging: IdMap<u32, Rc<PageWait>>,
    /// Stretches `(seg, from, to)` the scrub found damaged: a window read
    /// from there drops their messages (resident ones are dropped at once).
    pub(super) damaged: Vec<(u32, u64, u64)>,
}

/// The queues by id, side by side (see [`IdSlab`]).
pub(super) type QueueTable = IdSlab<Queue>;

/// Queue ids by name.
///
/// Every request looks its queue up by name, so this is a hash table: a
/// B-tree of a million names took ~20 comparisons of cold keys per set
/// (the largest share of a many-queue fill's CPU). The names are the
/// clients', so they are hashed with std's keyed SipHash.
///
/// The table holds each queue's id, its position in the [`QueueTable`] and
/// its name's hash, not the name: the name is its [`Queue`]'s (shared with
/// the log's catalog), read at that position to tell names of one hash
/// apart. A slot is then 12 bytes where a name and an id took 24, and a
/// million queues take up to two million slots. The position spares a
/// lookup in the QueueTable's own table of positions, two cold reads of
/// the six a set to one of a million queues paid here; so queues enter and
/// leave the two tables together ([`Names::add_queue`],
/// [`Names::remove_queue`]). Only fan-out queues (a `+` in the name) are
/// also kept by name, in order, for [`State::children`]'s prefix search;
/// `stats` sorts when it reports.
#[derive(Default)]
pub(super) struct Names {
    by_hash: HashTable<Named>,
    hasher: RandomState,
    fan_out: BTreeMap<Rc<[u8]>, u32>,
}

/// A queue in [`Names`]: its id, its position in the [`QueueTable`], and
/// 32 bits of its name's hash (all the table needs to place it again as it
/// grows).
#[derive(Clone, Copy)]
struct Named {
    id: u32,
    pos: u32,
    hash: u32,
}

impl Named {
    /// The hash the table places it by: the 32 bits kept, in the high bits
    /// too (where the table takes its control bytes from).
    fn spread(&self) -> u64 {
        u64::from(self.hash) << 32 | u64::from(self.hash)
    }
}

impl Names {
    fn named(&self, name: &[u8], id: u32, pos: u32) -> Named {
        Named {
            id,
            pos,
            hash: self.hasher.hash_one(name) as u32,
        }
    }

    /// Where queue `name` is looked for (its hash, spread), and how its
    /// slot is told from others there: by the hash kept, then by the name
    /// of the queue at the slot's position in `queues`.
    fn lookup<'a>(
        &self,
        name: &'a [u8],
        queues: &'a QueueTable,
    ) -> (u64, impl Fn(&Named) -> bool + 'a) {
        let key = self.named(name, 0, 0);
        let is = move |n: &Named| {
            n.hash == key.hash && queues.at_position(n.pos).is_some_and(|q| q.name() == name)
        };
        (key.spread(), is)
    }

    /// The id of queue `name` among `queues`.
    pub(super) fn get(&self, name: &[u8], queues: &QueueTable) -> Option<u32> {
        let (hash, is) = self.lookup(name, queues);
        let found = self.by_hash.find(hash, is)?;
        debug_assert_eq!(queues.at_position(found.pos).map(Queue::id), Some(found.id));
        Some(found.id)
    }

    /// Room for `n` more names, made once.
    pub(super) fn reserve(&mut self, n: usize) {
        self.by_hash.reserve(n, Named::spread);
    }

    /// Names queue `id` `name` (a name no queue has), at position `pos`
    /// of the [`QueueTable`].
    pub(super) fn insert(&mut self, name: Rc<[u8]>, id: u32, pos: u32) {
        let named = self.named(&name, id, pos);
        self.by_hash
            .insert_unique(named.spread(), named, Named::spread);
        if name.contains(&b'+') {
            self.fan_out.insert(name, id);
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
    /// queue's entry here follows it.
    pub(super) fn remove_queue(&mut self, name: &[u8], queues: &mut QueueTable) -> Option<Queue> {
        let (hash, is) = self.lookup(name, queues);
        let (gone, _) = self.by_hash.find_entry(hash, is).ok()?.remove();
        if name.contains(&b'+') {
            self.fan_out.remove(name);
        }
        let last = u32::try_from(queues.len() - 1).expect("fewer than 2^32 queues");
        if gone.pos != last {
            let moved = queues.at_position(last).expect("the last queue").name();
            let hash = self.named(moved, 0, 0).spread();
            let entry = self
                .by_hash
                .find_mut(hash, |n| n.pos == last)
                .expect("the last queue is named");
            entry.pos = gone.pos;
        }
        let q = queues
            .remove(&gone.id)
            .expect("a named queue is in the table");
        debug_assert_eq!(q.id(), gone.id);
        Some(q)
    }

    pub(super) fn len(&self) -> usize {
        self.by_hash.len()
    }

    /// The fan-out queues whose names start with `prefix`, in order.
    fn fan_out_from<'a>(&'a self, prefix: &'a [u8]) -> impl Iterator<Item = u32> + 'a {
        self.fan_out
            .range::<[u8], _>((
                std::ops::Bound::Included(prefix),
                std::ops::Bound::Unbounded,
            ))
            .take_while(move |(name, _)| name.starts_with(prefix))
            .map(|(_, &id)| id)
    }
}

impl QueueTable {
    /// The first `n` `(name, id)` by name, in order (every one if `n` is
    /// at least their number). Only those `n` are sorted.
    ///
    /// The names are sorted by their first eight bytes first, kept beside
    /// each entry: comparing the names themselves reads two cold
    /// allocations per comparison, which made sorting a million of them
    /// take seconds.
    pub(super) fn first_by_name(&self, n: usize) -> Vec<(&[u8], u32)> {
        let mut all: Vec<(u64, &[u8], u32)> = self
            .values()
            .map(|q| (sort_key(q.name()), q.name(), q.id()))
            .collect();
        let order =
            |a: &(u64, &[u8], u32), b: &(u64, &[u8], u32)| a.0.cmp(&b.0).then_with(|| a.1.cmp(b.1));
        if n < all.len() {
            if n == 0 {
                return Vec::new();
            }
            all.select_nth_unstable_by(n - 1, order);
            all.truncate(n);
        }
        all.sort_unstable_by(order);
        all.into_iter().map(|(_, name, id)| (name, id)).collect()
    }
}

/// A name's first eight bytes as a number that sorts as they do (a
/// shorter name is padded with zeros, which sorts it before any longer
/// name it starts; names that tie compare whole).
fn sort_key(name: &[u8]) -> u64 {
    let mut head = [0u8; 8];
    let n = name.len().min(8);
    head[..n].copy_from_slice(&name[..n]);
    u64::from_be_bytes(head)
}

/// Where a message's body is, for a get.
pub(super) enum Held {
    /// In the hot cache: `(flags, body)`.
    Cached(u32, Vec<u8>),
    /// With the task writing it out of line.
    Writing(Rc<OutOfLine>),
    /// Only in its segment.
    OnDisk,
}

impl State {
    /// The id of queue `name`, if it exists.
    pub(super) fn id_of(&self, name: &[u8]) -> Option<u32> {
        self.names.get(name, &self.queues)
    }

    /// Removes queue `name` from both tables; the queue.
    pub(super) fn remove_queue(&mut self, name: &[u8]) -> Option<Queue> {
        self.names.remove_queue(name, &mut self.queues)
    }

    /// The id of queue `name`, creating it (logged) if it does not exist.
    pub(super) fn id_or_create(&mut self, log: &mut Log, name: &[u8]) -> u32 {
        if let Some(id) = self.id_of(name) {
            return id;
        }
        let name: Rc<[u8]> = name.into();
        let (id, _) = log.create_queue(name.clone());
        self.fan_out_queues += usize::from(name.contains(&b'+'));
        self.names.add_queue(Queue::new(id, name), &mut self.queues);
        id
    }

    /// The queue a `get` of `name` reads: a fan-out queue (a `+` in its
    /// name) is created by its first `get`, so that it receives copies from
    /// then on; any other must exist.
    pub(super) fn id_for_get(&mut self, log: &mut Log, name: &[u8]) -> Option<u32> {
        match self.id_of(name) {
            Some(id) => Some(id),
            None if name.contains(&b'+') => Some(self.id_or_create(log, name)),
            None => None,
        }
    }

    /// The fan-out queues of `parent`: every queue named `<parent>+…`.
    pub(super) fn children(&self, parent: &[u8]) -> Vec<u32> {
        if self.fan_out_queues == 0 {
            return Vec::new(); // the usual case, and no allocation
        }
        let mut prefix = parent.to_vec();
        prefix.push(b'+');
        self.names.fan_out_from(&prefix).collect()
    }

    /// Appends a message to queue `id`; returns its record's lsn.
    pub(super) fn append(
        &mut self,
        log: &mut Log,
        id: u32,
        meta: MessageMeta,
        body: Vec<u8>,
        body_crc: Option<u32>,
    ) -> u64 {
        let q = self.queues.get_mut(&id).expect("queue exists");
        let len = (record::HEADER_LEN + body.len()) as u32;
        self.items += 1;
        self.bytes += body.len() as u64;
        let (pos, lsn, region) = if log.out_of_line(body.len()) {
            let region = log.enqueue_region(id, q.tail(), meta, body.len());
            let pos = Pos {
                seg: region.seg,
                off: region.off as u32,
            };
            (pos, region.marker_lsn, Some(region))
        } else {
            let (pos, lsn) = log.enqueue(id, q.tail(), meta, &body, body_crc);
            (pos, lsn, None)
        };
        let seq = q.push(pos.seg, pos.off, len, meta.expires);
        q.enqueued_at(seq, (meta.time / 1_000_000) as u32);
        match region {
            None => self.cache.insert((id, seq), meta.flags, body),
            Some(region) => {
                let wait = Rc::new(OutOfLine::new(meta.flags));
                self.regions.insert((id, seq), wait.clone());
                self.new_regions.push(RegionJob {
                    key: (id, seq),
                    region,
                    body,
                    body_crc,
                    wait,
                });
            }
        }
        lsn
    }

    /// Where the body of message `key` is; out of the cache if `take`.
    pub(super) fn held(&mut self, key: (u32, u64), take: bool) -> Held {
        let cached = if take {
            self.cache.take(key)
        } else {
            self.cache.get(key)
        };
        match cached {
            Some((flags, body)) => Held::Cached(flags, body),
            None => match self.regions.get(&key) {
                Some(wait) => Held::Writing(wait.clone()),
                None => Held::OnDisk,
            },
        }
    }

    /// The limits of queue `id`, as of the generation in force.
    pub(super) fn limits_of(&mut self, id: u32) -> Option<&QueueLimits> {
        let q = self.queues.get_mut(&id)?;
        Some(q.limits(&self.limits, self.limits_generation))
    }
}

impl Store {
    /// The queue table and the log, borrowed in that order (see [`State`]).
    pub(super) fn both(&self) -> (RefMut<'_, State>, RefMut<'_, Log>) {
        let state = self.state.borrow_mut();
        (state, self.log.borrow_mut())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::btree_map::{BTreeMap, Entry};
    use std::rc::Rc;

    use super::{Names, QueueTable};
    use crate::queue::Queue;

    /// Queue `i` named `list[i]`, in both tables.
    fn tables(list: &[&[u8]]) -> (Names, QueueTable) {
        let mut names = Names::default();
        let mut queues = QueueTable::default();
        for (i, name) in list.iter().enumerate() {
            let name: Rc<[u8]> = Rc::from(*name);
            names.add_queue(Queue::new(i as u32, name), &mut queues);
        }
        (names, queues)
    }

    #[test]
    fn names_are_found_and_listed_in_order() {
        let list: [&[u8]; 6] = [b"b", b"a+x", b"c", b"a", b"a+y", b"ab"];
        let (mut names, mut queues) = tables(&list);
        assert_eq!(names.len(), 6);
        assert_eq!(names.get(b"c", &queues), Some(2));
        assert!(names.get(b"a+y", &queues).is_some() && names.get(b"d", &queues).is_none());
        let order = |queues: &QueueTable, n: usize| -> Vec<Vec<u8>> {
            queues
                .first_by_name(n)
                .into_iter()
                .map(|(k, _)| k.to_vec())
                .collect()
        };
        let all: Vec<Vec<u8>> = ["a", "a+x", "a+y", "ab", "b", "c"]
            .iter()
            .map(|n| n.as_bytes().to_vec())
            .collect();
        assert_eq!(order(&queues, usize::MAX), all);
        assert_eq!(order(&queues, 6), all);
        assert_eq!(order(&queues, 2), all[..2]);
        assert!(order(&queues, 0).is_empty());
        assert_eq!(names.fan_out_from(b"a+").collect::<Vec<_>>(), [1, 4]);
        let gone = names.remove_queue(b"a+x", &mut queues);
        assert_eq!(gone.map(|q| q.id()), Some(1));
        assert!(names.remove_queue(b"a+x", &mut queues).is_none());
        assert!(!queues.contains_key(&1));
        assert_eq!(names.fan_out_from(b"a+").collect::<Vec<_>>(), [4]);
        assert!(names.fan_out_from(b"b+").next().is_none());
        assert_eq!(names.len(), 5);
    }

    /// Many names, so that the table grows and places them again from the
    /// hashes it keeps: every one is found, and no other.
    #[test]
    fn names_are_found_after_growth() {
        let list: Vec<Vec<u8>> = (0..20_000).map(|i| format!("q{i}").into_bytes()).collect();
        let refs: Vec<&[u8]> = list.iter().map(|n| &n[..]).collect();
        let (mut names, mut queues) = tables(&refs);
        for (i, name) in refs.iter().enumerate() {
            assert_eq!(names.get(name, &queues), Some(i as u32));
        }
        assert_eq!(names.get(b"q20000", &queues), None);
        for (i, name) in refs.iter().enumerate().step_by(2) {
            let gone = names.remove_queue(name, &mut queues);
            assert_eq!(gone.map(|q| q.id()), Some(i as u32));
        }
        for (i, name) in refs.iter().enumerate() {
            let want = (i % 2 == 1).then_some(i as u32);
            assert_eq!(names.get(name, &queues), want);
        }
    }

    /// Removing a queue moves the table's last queue into its position:
    /// the names follow, through any order of adds and removals, and every
    /// entry names the queue at the position it keeps.
    #[test]
    fn names_follow_the_queues_they_name_through_removals() {
        let mut names = Names::default();
        let mut queues = QueueTable::default();
        let mut model = BTreeMap::new();
        let mut next_id = 0u32;
        let mut x = 11u64;
        for step in 0..30_000u32 {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let name = format!("q{}", (x >> 40) % 2000).into_bytes();
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
            assert_eq!(queues.len(), model.len());
        }
        for (name, &id) in &model {
            assert_eq!(names.get(name, &queues), Some(id));
        }
        for n in names.by_hash.iter() {
            let q = queues.at_position(n.pos).unwrap();
            assert_eq!(q.id(), n.id);
            assert!(std::ptr::eq(queues.get(&n.id).unwrap(), q));
        }
    }

    /// Sorting by the first eight bytes, then the whole name, is sorting
    /// by name: prefixes, zero bytes and names past eight bytes included.
    #[test]
    fn names_sort_as_their_bytes() {
        let list: [&[u8]; 9] = [
            b"ab",
            b"ab\0",
            b"ab\0x",
            b"a",
            b"abcdefgh",
            b"abcdefgh1",
            b"abcdefgh0",
            b"",
            b"\xffz",
        ];
        let (_, queues) = tables(&list);
        let mut want: Vec<&[u8]> = list.to_vec();
        want.sort();
        let got: Vec<&[u8]> = queues
            .first_by_name(usize::MAX)
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        assert_eq!(got, want);
        let got: Vec<&[u8]> = queues
            .first_by_name(4)
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        assert_eq!(got, want[..4]);
    }
}
