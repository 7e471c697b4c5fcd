//! The queue table: one shard's queues by id (how records name them) and
//! by name (how requests do), and what the queues of a shard share: the
//! hot cache, the totals `stats` reports, the limits in force and the
//! bodies being written out of line. Keeping these together is what lets
//! a request change all of them in one synchronous step.

use std::cell::RefMut;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::Arc;

use super::out_of_line::OutOfLine;
use super::paging::PageWait;
use super::regions::RegionJob;
use super::Store;
use crate::cache::HotCache;
use crate::idhash::IdMap;
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
    pub(super) queues: IdMap<u32, Queue>,
    pub(super) names: BTreeMap<Box<[u8]>, u32>,
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
    /// The id of queue `name`, creating it (logged) if it does not exist.
    pub(super) fn id_or_create(&mut self, log: &mut Log, name: &[u8]) -> u32 {
        if let Some(&id) = self.names.get(name) {
            return id;
        }
        let (id, _) = log.create_queue(name);
        let name: Box<[u8]> = name.into();
        self.fan_out_queues += usize::from(name.contains(&b'+'));
        self.names.insert(name.clone(), id);
        self.queues.insert(id, Queue::new(id, name));
        id
    }

    /// The queue a `get` of `name` reads: a fan-out queue (a `+` in its
    /// name) is created by its first `get`, so that it receives copies from
    /// then on; any other must exist.
    pub(super) fn id_for_get(&mut self, log: &mut Log, name: &[u8]) -> Option<u32> {
        match self.names.get(name) {
            Some(&id) => Some(id),
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
        self.names
            .range::<[u8], _>((
                std::ops::Bound::Included(&prefix[..]),
                std::ops::Bound::Unbounded,
            ))
            .take_while(|(name, _)| name.starts_with(&prefix))
            .map(|(_, &id)| id)
            .collect()
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
