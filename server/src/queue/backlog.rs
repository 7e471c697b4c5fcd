//! A queue's queued messages, behind the operations the store needs and
//! nothing of how they are kept.
//!
//! Today that is one [`Loc`] per message in a deque; the locators are to be
//! paged from the index files instead, so nothing outside this file may
//! depend on the deque. The counters are kept here for the same reason: a
//! paged backlog cannot sum what it does not hold in memory.
//!
//! Memory follows the backlog down as well as up: a deque keeps its
//! largest capacity, so a burst of a million messages, once drained, would
//! otherwise hold 24 MB for good. The storage shrinks when it is far below
//! its capacity, never below a floor (so a queue that goes from empty to a
//! few messages and back on every set and get never reallocates).

use std::collections::VecDeque;

use crate::log::{Loc, Pos};

/// Capacity kept however far the backlog shrinks, in locators.
const KEPT: usize = 64;

/// Queued messages, in sequence order (with holes where a message's record
/// was found damaged).
#[derive(Debug, Default)]
pub struct Backlog {
    locs: VecDeque<Loc>,
    /// Sum of the body lengths of `locs`.
    bytes: u64,
}

impl Backlog {
    /// The backlog of `locs`, in sequence order (recovery).
    pub fn from_locs(locs: Vec<Loc>) -> Backlog {
        debug_assert!(locs.windows(2).all(|w| w[0].seq < w[1].seq));
        let bytes = locs.iter().map(Loc::body_len).sum();
        Backlog {
            locs: locs.into(),
            bytes,
        }
    }

    pub fn items(&self) -> u64 {
        self.locs.len() as u64
    }

    /// Sum of the queued bodies' lengths.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    pub fn is_empty(&self) -> bool {
        self.locs.is_empty()
    }

    pub fn head(&self) -> Option<&Loc> {
        self.locs.front()
    }

    /// Queues `loc` at the tail; its sequence number is above every queued
    /// one.
    pub fn push(&mut self, loc: Loc) {
        debug_assert!(self.locs.back().is_none_or(|l| l.seq < loc.seq));
        self.bytes += loc.body_len();
        self.locs.push_back(loc);
    }

    /// Takes the head off.
    pub fn pop(&mut self) -> Option<Loc> {
        let loc = self.locs.pop_front()?;
        self.taken(&loc);
        Some(loc)
    }

    /// Queues `loc` again at its place by sequence number (it was handed
    /// out and came back).
    pub fn put_back(&mut self, loc: Loc) {
        let at = self.locs.partition_point(|l| l.seq < loc.seq);
        debug_assert!(self.locs.get(at).is_none_or(|l| l.seq != loc.seq));
        self.bytes += loc.body_len();
        self.locs.insert(at, loc);
    }

    fn index_of(&self, seq: u64) -> Option<usize> {
        self.locs.binary_search_by_key(&seq, |l| l.seq).ok()
    }

    pub fn contains(&self, seq: u64) -> bool {
        self.index_of(seq).is_some()
    }

    pub fn get(&self, seq: u64) -> Option<&Loc> {
        self.locs.get(self.index_of(seq)?)
    }

    /// Points message `seq` at its record's new place `to`, if its record
    /// is at `from`; returns the record's length.
    pub fn relocate(&mut self, seq: u64, from: Pos, to: Pos) -> Option<u32> {
        let loc = self.locs.get_mut(self.index_of(seq)?)?;
        if loc.pos != from {
            return None;
        }
        loc.pos = to;
        Some(loc.len)
    }

    /// Takes out the messages whose records start in `[from, to)` of
    /// segment `seg` (damaged records), in sequence order.
    pub fn remove_in(&mut self, seg: u32, from: u64, to: u64) -> Vec<Loc> {
        let hit = |l: &Loc| l.pos.seg == seg && (from..to).contains(&u64::from(l.pos.off));
        let removed: Vec<Loc> = self.locs.iter().copied().filter(hit).collect();
        if !removed.is_empty() {
            self.locs.retain(|l| !hit(l));
            self.bytes -= removed.iter().map(Loc::body_len).sum::<u64>();
            self.shrink();
        }
        removed
    }

    /// In sequence order.
    pub fn iter(&self) -> impl Iterator<Item = &Loc> + '_ {
        self.locs.iter()
    }

    fn taken(&mut self, loc: &Loc) {
        self.bytes -= loc.body_len();
        self.shrink();
    }

    /// Gives memory back once the backlog is a quarter of its capacity
    /// (half of it stays, for the backlog to grow into again).
    fn shrink(&mut self) {
        let cap = self.locs.capacity();
        if cap > KEPT && self.locs.len() < cap / 4 {
            self.locs.shrink_to((self.locs.len() * 2).max(KEPT));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loc(seq: u64, seg: u32, body: u32) -> Loc {
        Loc {
            seq,
            pos: Pos {
                seg,
                off: seq as u32 * 64,
            },
            len: crate::log::record::HEADER_LEN as u32 + body,
            expires: 0,
        }
    }

    /// The counters are those of what is queued, which is in sequence
    /// order.
    fn check(b: &Backlog) {
        assert_eq!(b.items(), b.iter().count() as u64);
        assert_eq!(b.bytes(), b.iter().map(Loc::body_len).sum::<u64>());
        assert_eq!(b.is_empty(), b.items() == 0);
        assert!(b.iter().zip(b.iter().skip(1)).all(|(a, z)| a.seq < z.seq));
    }

    #[test]
    fn counters_follow_every_operation() {
        let mut b = Backlog::from_locs(
            (0..6)
                .map(|s| loc(s, s as u32 % 2, 10 + s as u32))
                .collect(),
        );
        check(&b);
        assert_eq!((b.items(), b.bytes()), (6, 75));
        let head = b.pop().unwrap();
        check(&b);
        b.push(loc(6, 0, 1));
        check(&b);
        let gone = b.remove_in(1, 3 * 64, 4 * 64);
        assert_eq!(gone.iter().map(|l| l.seq).collect::<Vec<_>>(), [3]);
        check(&b);
        b.put_back(head);
        check(&b);
        assert_eq!(b.head().map(|l| l.seq), Some(0));
        let damaged = b.remove_in(1, 64, 5 * 64);
        assert_eq!(damaged.iter().map(|l| l.seq).collect::<Vec<_>>(), [1]);
        check(&b);
        let to = Pos { seg: 9, off: 0 };
        assert_eq!(b.relocate(2, to, to), None, "not at `from`");
        assert_eq!(b.relocate(2, loc(2, 0, 0).pos, to), Some(loc(2, 0, 12).len));
        assert_eq!(b.get(2).map(|l| l.pos), Some(to));
        assert!(b.contains(4) && !b.contains(1));
        check(&b);
        while b.pop().is_some() {
            check(&b);
        }
        assert_eq!((b.items(), b.bytes()), (0, 0));
    }

    #[test]
    fn storage_shrinks_after_a_drain_but_not_below_the_floor() {
        let mut b = Backlog::default();
        for seq in 0..100_000 {
            b.push(loc(seq, 0, 8));
        }
        let full = b.locs.capacity();
        while b.items() > 10 {
            b.pop();
        }
        assert!(b.locs.capacity() < full / 100, "shrunk as it drained");
        while b.pop().is_some() {}
        assert!(b.locs.capacity() <= 2 * KEPT);
        // A queue that stays small keeps its storage: no reallocation per
        // set and get.
        b.push(loc(100_000, 0, 8));
        let small = b.locs.capacity();
        for seq in 100_001..100_200 {
            b.push(loc(seq, 0, 8));
            b.pop();
            assert_eq!(b.locs.capacity(), small);
        }
    }
}
