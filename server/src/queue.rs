//! Per-queue state: counters and where its unconsumed messages are.
//!
//! A queue keeps no message bodies, and no locator per message either
//! except near its head and in the open segment: the [`Backlog`] keeps the
//! rest as runs read from the index files (see its module doc). Bodies come
//! from the hot cache or a read of their segment.
//!
//! Sequence numbers are per queue, start at 0 and never repeat: `tail` is the
//! next one to hand out (so it is also the `enqueued` counter). A message
//! is in one of three places:
//! - **queued**, in its [`Backlog`], in sequence order (a message whose
//!   record was found corrupt has no locator, which leaves a hole);
//! - **open**, in `open`: handed out by a reliable read (`get <q>/open`) and
//!   not yet confirmed. It is still unconsumed as far as the log knows, so
//!   its segment stays live; `/abort`, or its reader going away, puts it
//!   back among the queued at its place by sequence number, which is the head;
//! - **consumed**: gone from both, and said so by the log (`dequeued` comes
//!   from there, see `log::confirmed`).
//!
//! # Many queues
//! Users make a queue per customer, job or device, so a million mostly
//! idle queues must be cheap. What most queues never use costs a null
//! pointer until they do: the open messages and their readers (reliable
//! reads) and the drop counters (one pointer for these), and the limits
//! (shared with every queue of their config section, see
//! [`Limits::shared_for_queue`]). The enqueue times keep their usual single
//! run inline, the backlog its usual one or two locators (see
//! [`Backlog`]), and the name is shared with the log's catalog (the
//! shard's index by name keeps an id and a hash, not the name).

use std::collections::BTreeMap;
use std::ops::Range;
use std::rc::Rc;
use std::sync::Arc;

use smallvec::SmallVec;

use crate::idhash::IdMap;
use crate::limits::{Limits, QueueLimits};
use crate::log::{Loc, Pos};

mod backlog;
#[cfg(feature = "sim")]
pub use backlog::set_window;
pub use backlog::{min_paged, window, window_for, Backlog, Dropped, PageJob, Paged, WINDOW};

/// Who holds an open message: one connection, unique in the process.
pub type Reader = u64;

/// What most queues never use (see "Many queues" above), behind one
/// pointer that stays null until they do: the open messages, by sequence
/// number and by who holds them, and the drop counters. Given back once
/// nothing is open and nothing was ever dropped.
#[derive(Debug, Default)]
struct Extras {
    /// Messages handed out by reliable reads, by sequence number …
    open: BTreeMap<u64, (Loc, Reader)>,
    /// … and by who holds them (one each).
    readers: IdMap<Reader, u64>,
    /// Messages dropped since start-up because they expired …
    expired: u64,
    /// … and to make room (`discard_old_when_full`).
    discarded: u64,
}

/// One queue.
#[derive(Debug)]
pub struct Queue {
    id: u32,
    /// Shared with the log's catalog.
    name: Rc<[u8]>,
    /// Next sequence number to assign (= messages enqueued so far).
    tail: u64,
    queued: Backlog,
    extras: Option<Box<Extras>>,
    /// Its limits (`None`: none), and the generation of the limits they
    /// came from (see [`Queue::limits`]).
    limits: Option<Arc<QueueLimits>>,
    limits_generation: u64,
    /// Enqueue times, run-length: one [`Stamp`] for each second in which
    /// messages still unconsumed were set, at most [`MAX_TIMES`] (see
    /// [`Queue::make_time_room`]). For the age of the head (`stats`,
    /// `max_age`) at a cost of one entry per second of sets, not per
    /// message; the usual one is kept inline.
    times: SmallVec<[Stamp; 1]>,
}

/// Enqueue-time entries a queue keeps at most (1 KiB): past that, a
/// message's time is late by about a 32nd of the time its queue's backlog
/// spans.
pub const MAX_TIMES: usize = 64;

/// Messages from `seq` up to the next stamp's were set from Unix second
/// `lo` to `hi`: one second, unless neighbours were merged.
#[derive(Clone, Copy, Debug)]
struct Stamp {
    seq: u64,
    lo: u32,
    hi: u32,
}

impl Stamp {
    /// Messages from `seq` set in second `at`.
    fn new(seq: u64, at: u32) -> Stamp {
        Stamp {
            seq,
            lo: at,
            hi: at,
        }
    }
}

impl Queue {
    pub fn new(id: u32, name: impl Into<Rc<[u8]>>) -> Queue {
        Queue {
            id,
            name: name.into(),
            tail: 0,
            queued: Backlog::default(),
            extras: None,
            limits: None,
            limits_generation: u64::MAX,
            times: SmallVec::new(),
        }
    }

    /// A queue as recovery finds it, before its messages: `tail` messages
    /// enqueued so far. Recovery then queues its messages, with their
    /// times, oldest first ([`Backlog::push`], [`Queue::enqueued_at`]),
    /// newest first ([`Backlog::push_front`], [`Queue::enqueued_before`]),
    /// or a deep queue's all at once below those ([`Queue::enqueued_below`]).
    pub fn recovered(id: u32, name: Rc<[u8]>, tail: u64) -> Queue {
        let mut q = Queue::new(id, name);
        q.tail = tail;
        q
    }

    pub fn id(&self) -> u32 {
        self.id
    }

    pub fn name(&self) -> &[u8] {
        &self.name
    }

    /// Its name, shared.
    pub fn name_rc(&self) -> Rc<[u8]> {
        self.name.clone()
    }

    /// Messages enqueued so far (the next sequence number).
    pub fn tail(&self) -> u64 {
        self.tail
    }

    /// The queued messages (not the open ones).
    pub fn queued(&self) -> &Backlog {
        &self.queued
    }

    /// Messages handed out by reliable reads and not yet confirmed.
    pub fn open_count(&self) -> usize {
        self.extras.as_ref().map_or(0, |e| e.open.len())
    }

    /// The open messages, by sequence number.
    fn open_map(&self) -> impl Iterator<Item = &BTreeMap<u64, (Loc, Reader)>> + '_ {
        self.extras.iter().map(|e| &e.open)
    }

    /// The open messages in `seqs`, in order.
    pub fn open_in(&self, seqs: Range<u64>) -> impl Iterator<Item = u64> + '_ {
        self.open_map()
            .flat_map(move |open| open.range(seqs.clone()))
            .map(|(&seq, _)| seq)
    }

    /// Open message `seq`'s locator.
    pub fn open_loc(&self, seq: u64) -> Option<Loc> {
        self.extras.as_ref()?.open.get(&seq).map(|&(loc, _)| loc)
    }

    /// The queued messages, for what maintenance and the store change in
    /// place (paging windows in and out).
    pub fn queued_mut(&mut self) -> &mut Backlog {
        &mut self.queued
    }

    /// The open messages' locators.
    pub fn open_locs(&self) -> impl Iterator<Item = &Loc> + '_ {
        self.open_map()
            .flat_map(|open| open.values())
            .map(|(loc, _)| loc)
    }

    /// The Unix second message `seq` was enqueued (to the second it was
    /// noted: see [`Queue::enqueued_at`]).
    pub fn time_of(&self, seq: u64) -> Option<u32> {
        let i = self.times.partition_point(|t| t.seq <= seq);
        Some(self.times.get(i.checked_sub(1)?)?.hi)
    }

    /// Messages dropped because they expired.
    pub fn expired(&self) -> u64 {
        self.extras.as_ref().map_or(0, |e| e.expired)
    }

    pub fn count_expired(&mut self, n: u64) {
        if n > 0 {
            self.extras.get_or_insert_default().expired += n;
        }
    }

    /// Messages dropped to make room.
    pub fn discarded(&self) -> u64 {
        self.extras.as_ref().map_or(0, |e| e.discarded)
    }

    pub fn count_discarded(&mut self, n: u64) {
        if n > 0 {
            self.extras.get_or_insert_default().discarded += n;
        }
    }

    /// Its limits out of `all`, the limits of generation `generation`:
    /// looked up again only when that generation is new to it.
    pub fn limits(&mut self, all: &Limits, generation: u64) -> &QueueLimits {
        if self.limits_generation != generation {
            self.limits = all.shared_for_queue(&self.name);
            self.limits_generation = generation;
        }
        self.limits.as_deref().unwrap_or(&QueueLimits::NONE)
    }

    /// Notes that message `seq` was enqueued at Unix second `at` (in seq
    /// order).
    pub fn enqueued_at(&mut self, seq: u64, at: u32) {
        if self.times.last().is_none_or(|t| t.hi != at) {
            self.make_time_room();
            self.times.push(Stamp::new(seq, at));
        }
    }

    /// Notes that message `seq`, below every one noted, was enqueued at
    /// Unix second `at` (recovery, which finds messages newest first).
    pub fn enqueued_before(&mut self, seq: u64, at: u32) {
        match self.times.first_mut() {
            Some(first) if first.lo == at => first.seq = seq,
            _ => {
                self.make_time_room();
                self.times.insert(0, Stamp::new(seq, at));
            }
        }
    }

    /// Notes the times of messages below every one noted, `(seq, second)`
    /// in seq order (recovery, which finds a deep queue's runs newest first
    /// and hands them over at once): stamps of neighbours whose seconds
    /// together span less than a 63rd of the whole merge on the way, so
    /// this costs one pass where noting them one at a time would look for
    /// the pair to merge each time. The same bound: never early, late by
    /// less than the span over 32.
    pub fn enqueued_below(&mut self, below: &[(u64, u32)]) {
        let newer = std::mem::take(&mut self.times);
        let stamps = below.iter().map(|&(seq, at)| Stamp::new(seq, at));
        let lo = stamps
            .clone()
            .chain(newer.iter().copied())
            .map(|t| t.lo)
            .min();
        let hi = stamps
            .clone()
            .chain(newer.iter().copied())
            .map(|t| t.hi)
            .max();
        let (Some(lo), Some(hi)) = (lo, hi) else {
            return;
        };
        let width = (hi - lo) / (MAX_TIMES as u32 - 1);
        self.times
            .reserve_exact((below.len() + newer.len()).min(MAX_TIMES));
        for t in stamps.chain(newer) {
            match self.times.last_mut() {
                Some(last) if t.hi.max(last.hi) - t.lo.min(last.lo) <= width => {
                    last.lo = last.lo.min(t.lo);
                    last.hi = last.hi.max(t.hi);
                }
                _ => {
                    // Seconds out of order (a clock set back) can make
                    // more groups than that: merged as one at a time.
                    self.make_time_room();
                    self.times.push(t);
                }
            }
        }
    }

    /// Makes room for one more time, at most [`MAX_TIMES`] kept: a queue
    /// set once a second for a day would otherwise keep an entry per
    /// message. The two neighbours whose seconds together span the least
    /// merge, and a message's time is the last second of its stamp: it may
    /// seem younger than it is, by at most that span, never older, so
    /// `max_age` never drops one early.
    fn make_time_room(&mut self) {
        let n = self.times.len();
        if n < MAX_TIMES {
            return;
        }
        let t = &self.times;
        let span = |i: usize| t[i].lo.min(t[i + 1].lo).abs_diff(t[i].hi.max(t[i + 1].hi));
        let Some(i) = (0..n - 1).min_by_key(|&i| span(i)) else {
            return;
        };
        let next = self.times.remove(i + 1);
        let merged = &mut self.times[i];
        merged.lo = merged.lo.min(next.lo);
        merged.hi = merged.hi.max(next.hi);
    }

    /// The Unix second the head message was enqueued.
    pub fn head_time(&self) -> Option<u32> {
        self.time_of(self.queued.first_seq()?)
    }

    /// Forgets the times of messages dropped from the backlog directly
    /// (see [`Queue::queued_mut`]).
    pub fn forget_times(&mut self) {
        self.trim_times();
    }

    /// Forgets the times of messages consumed (a put-back message may
    /// still need its own, so nothing at or above [`Queue::low`] goes).
    fn trim_times(&mut self) {
        let low = self.low();
        if self.times.len() >= 2 && self.times[1].seq <= low {
            // Keep the last run starting at or below `low`.
            let at = self.times.partition_point(|t| t.seq <= low);
            self.times.drain(..at - 1);
            if self.times.len() == 1 {
                self.times.shrink_to_fit(); // back inline
            }
        }
    }

    /// The lowest message not consumed: queued, open, or (none) the tail.
    pub fn low(&self) -> u64 {
        let queued = self.queued.first_seq().unwrap_or(self.tail);
        let open = self.open_map().find_map(|open| open.keys().next().copied());
        let open = open.unwrap_or(self.tail);
        queued.min(open)
    }

    /// The message `reader` holds open, if any.
    pub fn open_by(&self, reader: Reader) -> Option<u64> {
        let readers = &self.extras.as_ref()?.readers;
        if readers.is_empty() {
            return None; // no reliable reads, no hashing
        }
        readers.get(&reader).copied()
    }

    /// Hands the head out to `reader` (a reliable read).
    pub fn open(&mut self, reader: Reader) -> Option<Loc> {
        let loc = self.queued.pop()?;
        let extras = self.extras.get_or_insert_default();
        extras.open.insert(loc.seq, (loc, reader));
        extras.readers.insert(reader, loc.seq);
        Some(loc)
    }

    /// Takes open message `seq` out of the open ones (confirmed).
    pub fn close(&mut self, seq: u64) -> Option<Loc> {
        let loc = self.unopen(seq)?;
        self.trim_times();
        Some(loc)
    }

    fn unopen(&mut self, seq: u64) -> Option<Loc> {
        let extras = self.extras.as_mut()?;
        let (loc, reader) = extras.open.remove(&seq)?;
        extras.readers.remove(&reader);
        if extras.open.is_empty() {
            // Give their memory back.
            extras.readers = IdMap::default();
            if extras.expired == 0 && extras.discarded == 0 {
                self.extras = None;
            }
        }
        Some(loc)
    }

    /// Puts open message `seq` back among the queued, at its place.
    pub fn put_back(&mut self, seq: u64) -> Option<Loc> {
        let loc = self.unopen(seq)?;
        self.queued.put_back(loc);
        Some(loc)
    }

    /// Records a new message at the tail; returns its sequence number.
    pub fn push(&mut self, seg: u32, off: u32, len: u32, expires: u32) -> u64 {
        let seq = self.tail;
        self.tail += 1;
        self.queued.push(Loc {
            seq,
            pos: Pos { seg, off },
            len,
            expires,
        });
        seq
    }

    /// Removes the head message.
    pub fn pop(&mut self) -> Option<Loc> {
        let loc = self.queued.pop()?;
        self.trim_times();
        Some(loc)
    }

    /// Is message `seq` queued or open (its record must stay readable
    /// either way) with its record at `at`?
    pub fn holds_at(&self, seq: u64, at: Pos) -> bool {
        match self.extras.as_ref().and_then(|e| e.open.get(&seq)) {
            Some((loc, _)) => loc.pos == at,
            None => self.queued.holds_at(seq, at),
        }
    }

    /// Points message `seq` (queued or open) at its record's new place
    /// `to`, a copy of its record of `len` bytes expiring at `expires`, if
    /// its record is at `from`.
    pub fn relocate(&mut self, seq: u64, from: Pos, to: Pos, len: u32, expires: u32) -> bool {
        let Some((loc, _)) = self.extras.as_mut().and_then(|e| e.open.get_mut(&seq)) else {
            return self.queued.relocate(seq, from, to, len, expires);
        };
        if loc.pos != from {
            return false;
        }
        loc.pos = to;
        true
    }

    /// Drops the queued messages whose records start in `[from, to)` of
    /// segment `seg` (they are unreadable).
    pub fn remove_damaged(&mut self, seg: u32, from: u64, to: u64) -> Vec<Loc> {
        self.queued.remove_in(seg, from, to)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn push_pop_counters() {
        let mut q = Queue::new(1, b"q".to_vec());
        assert_eq!(q.push(0, 0, 58, 0), 0);
        assert_eq!(q.push(0, 64, 60, 0), 1);
        assert_eq!(q.queued().bytes(), 22);
        assert_eq!(q.pop().unwrap().seq, 0);
        assert_eq!((q.low(), q.tail(), q.queued().bytes()), (1, 2, 12));
        assert!(q.holds_at(1, Pos { seg: 0, off: 64 }));
        assert_eq!(q.remove_damaged(0, 64, 65)[0].pos.off, 64);
        assert_eq!((q.low(), q.tail(), q.queued().bytes()), (2, 2, 0));
        assert!(q.pop().is_none());
    }

    #[test]
    fn open_messages_go_back_in_order() {
        let mut q = Queue::new(1, b"q".to_vec());
        for i in 0..4 {
            q.push(0, i * 64, 58, 0);
        }
        assert_eq!(q.open(7).unwrap().seq, 0);
        assert_eq!(q.open(8).unwrap().seq, 1);
        assert_eq!(
            (q.low(), q.queued().items(), q.queued().bytes()),
            (0, 2, 20)
        );
        assert_eq!(q.open_by(8), Some(1));
        assert!(
            q.holds_at(0, Pos { seg: 0, off: 0 }),
            "an open message stays findable"
        );
        q.put_back(1).unwrap();
        q.put_back(0).unwrap();
        let order: Vec<u64> = q.queued().resident().map(|l| l.seq).collect();
        assert_eq!(order, [0, 1, 2, 3]);
        assert_eq!((q.open_by(7), q.queued().bytes()), (None, 40));
    }

    #[test]
    fn head_age_is_kept_per_second() {
        let mut q = Queue::new(1, b"q".to_vec());
        for (i, at) in [100, 100, 101, 105, 105].into_iter().enumerate() {
            let seq = q.push(0, i as u32 * 64, 58, 0);
            q.enqueued_at(seq, at);
        }
        assert_eq!(q.times.len(), 3, "one entry per second");
        assert_eq!(q.head_time(), Some(100));
        q.pop();
        assert_eq!(q.head_time(), Some(100));
        q.open(9);
        assert_eq!(q.head_time(), Some(101));
        q.pop();
        assert_eq!(q.head_time(), Some(105));
        q.put_back(1);
        assert_eq!(
            q.head_time(),
            Some(100),
            "a put-back message keeps its time"
        );
        q.pop();
        q.pop();
        q.pop();
        assert_eq!(q.head_time(), None);
        assert_eq!(q.times.len(), 1);
    }

    /// A queue set once a second for hours keeps 64 times, not one per
    /// message; each message's time is then late by less than the
    /// backlog's span over 32, and never early.
    #[test]
    fn times_are_bounded_and_never_early() {
        let mut q = Queue::new(1, b"q".to_vec());
        let at = |seq: u64| 1_000_000 + seq as u32 * 3 + (seq as u32 % 7);
        for i in 0..10_000u64 {
            let seq = q.push(0, (i as u32 % 1000) * 64, 58, 0);
            q.enqueued_at(seq, at(seq));
            assert!(q.times.len() <= MAX_TIMES);
        }
        let span = at(9_999) - at(0);
        for seq in (0..10_000).step_by(97) {
            let noted = q.time_of(seq).unwrap();
            assert!(noted >= at(seq), "{seq}: noted {noted}, set {}", at(seq));
            assert!(
                noted - at(seq) <= span / 32,
                "{seq}: {noted} vs {}",
                at(seq)
            );
        }
        // Recovery notes them newest first: the same bound.
        let mut r = Queue::new(2, b"r".to_vec());
        for seq in (0..10_000).rev() {
            r.enqueued_before(seq, at(seq));
            assert!(r.times.len() <= MAX_TIMES);
        }
        for seq in (0..10_000).step_by(97) {
            let noted = r.time_of(seq).unwrap();
            assert!(noted >= at(seq) && noted - at(seq) <= span / 32);
        }
        // … or a deep queue's at once, below the few noted one at a time.
        let mut b = Queue::new(3, b"b".to_vec());
        for seq in (9_990..10_000).rev() {
            b.enqueued_before(seq, at(seq));
        }
        let below: Vec<(u64, u32)> = (0..9_990).map(|seq| (seq, at(seq))).collect();
        b.enqueued_below(&below);
        assert!(b.times.len() <= MAX_TIMES, "{}", b.times.len());
        for seq in 0..10_000 {
            let noted = b.time_of(seq).unwrap();
            assert!(noted >= at(seq), "{seq}: noted {noted}, set {}", at(seq));
            assert!(
                noted - at(seq) <= span / 32,
                "{seq}: {noted} vs {}",
                at(seq)
            );
        }
        // Seconds out of order still keep the bound on how many.
        let mut c = Queue::new(4, b"c".to_vec());
        let shuffled: Vec<(u64, u32)> = (0..5_000)
            .map(|seq| (seq, at(seq * 7919 % 5_000)))
            .collect();
        c.enqueued_below(&shuffled);
        assert!(c.times.len() <= MAX_TIMES);
        for &(seq, set) in shuffled.iter().step_by(13) {
            assert!(c.time_of(seq).unwrap() >= set, "never early");
        }
    }

    /// What a queue costs before any message: the struct alone (it lives
    /// in the shard's table), no allocation for the rarely used parts.
    #[test]
    fn an_idle_queue_is_small() {
        assert!(
            std::mem::size_of::<Queue>() <= 152,
            "{} bytes",
            std::mem::size_of::<Queue>()
        );
        let mut q = Queue::new(1, b"q".to_vec());
        q.push(0, 0, 58, 0);
        q.push(0, 64, 58, 0);
        q.enqueued_at(0, 100);
        q.count_expired(0);
        assert!(!q.times.spilled(), "one run of times is kept inline");
        assert!(q.extras.is_none());
        assert!(q.limits(&Limits::default(), 1).max_items.is_none());
        assert!(q.limits.is_none(), "no section, no limits held");
        q.open(5).unwrap();
        assert!(q.extras.is_some());
        q.close(0).unwrap();
        assert!(q.extras.is_none(), "given back");
        q.count_discarded(1);
        q.open(5).unwrap();
        q.put_back(1).unwrap();
        assert_eq!(q.extras.as_ref().unwrap().readers.capacity(), 0);
        assert_eq!(q.discarded(), 1, "kept while counting");
    }

    #[test]
    fn limits_are_shared_not_copied() {
        let all = Limits::parse("[queue a*]\nmax_items = 5\n").unwrap();
        let mut a1 = Queue::new(1, b"a1".to_vec());
        let mut a2 = Queue::new(2, b"a2".to_vec());
        assert_eq!(a1.limits(&all, 1).max_items, Some(5));
        assert_eq!(a2.limits(&all, 1).max_items, Some(5));
        let (l1, l2) = (a1.limits.as_ref().unwrap(), a2.limits.as_ref().unwrap());
        assert!(Arc::ptr_eq(l1, l2));
        let mut b = Queue::new(3, b"b".to_vec());
        assert_eq!(b.limits(&all, 1), &QueueLimits::NONE);
        assert_eq!(a1.expired() + a1.discarded(), 0);
        a1.count_expired(2);
        a1.count_discarded(3);
        assert_eq!((a1.expired(), a1.discarded()), (2, 3));
    }

    #[test]
    fn loc_is_compact() {
        assert!(std::mem::size_of::<Loc>() <= 24);
    }
}
