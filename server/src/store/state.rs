//! The queue table: one shard's queues by id (how records name them) and
//! by name (how requests do), and what the queues of a shard share: the
//! hot cache, the totals `stats` reports, the limits in force and the
//! bodies being written out of line. Keeping these together is what lets
//! a request change all of them in one synchronous step.

use std::cell::RefMut;
use std::rc::Rc;
use std::sync::Arc;

use super::names::Names;
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

/// Queues from which [`Store::prefetch`] pays: 64Ki queues' records take
/// about 10 MiB.
const PREFETCH_MIN_QUEUES: usize = 1 << 16;

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
    /// Messages a queue keeps resident at its head: what a window read
    /// brings in and what a seal leaves ([`crate::queue::window_for`] the queues
    /// the last sealed segment held, or that hold messages after a
    /// restart).
    pub(super) window: usize,
    /// Stretches `(seg, from, to)` the scrub found damaged: a window read
    /// from there drops their messages (resident ones are dropped at once).
    pub(super) damaged: Vec<(u32, u64, u64)>,
}

/// The queues by id, side by side (see [`IdSlab`]).
pub(super) type QueueTable = IdSlab<Queue>;

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
    /// Starts fetching what looking up `names` will read into the cache,
    /// all of them at once (see `Names::prefetch_queue`). Only a hint:
    /// nothing changes, and a table borrowed elsewhere is left alone.
    pub fn prefetch<'a>(&self, names: impl Iterator<Item = &'a [u8]>) {
        let Ok(st) = self.state.try_borrow() else {
            return;
        };
        let mut hashes: smallvec::SmallVec<[u32; 64]> = smallvec::SmallVec::new();
        hashes.extend(names.map(|n| st.names.prefetch_slot(n)));
        for &h in &hashes {
            st.names.prefetch_queue(h, &st.queues);
        }
        for &h in &hashes {
            st.names.prefetch_name(h, &st.queues);
        }
    }

    /// Whether [`Store::prefetch`] pays: only among enough queues that
    /// their tables outgrow the CPU's caches. (Among a few, everything a
    /// lookup reads is cached already, and deferring a batch's requests to
    /// fetch for all of them first costs more than it saves.)
    pub fn prefetch_pays(&self) -> bool {
        self.state
            .try_borrow()
            .is_ok_and(|st| st.names.len() >= PREFETCH_MIN_QUEUES)
    }

    /// The queue table and the log, borrowed in that order (see [`State`]).
    pub(super) fn both(&self) -> (RefMut<'_, State>, RefMut<'_, Log>) {
        let state = self.state.borrow_mut();
        (state, self.log.borrow_mut())
    }
}

#[cfg(test)]
mod tests {
    use crate::store::names::tests::tables;

    #[test]
    fn queues_are_listed_in_order() {
        let list: [&[u8]; 6] = [b"b", b"a+x", b"c", b"a", b"a+y", b"ab"];
        let (_, queues) = tables(&list);
        let order = |n: usize| -> Vec<Vec<u8>> {
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
        assert_eq!(order(usize::MAX), all);
        assert_eq!(order(6), all);
        assert_eq!(order(2), all[..2]);
        assert!(order(0).is_empty());
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
