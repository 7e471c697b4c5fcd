//! The messages of one queue confirmed out of order, above its head.
//!
//! A queue's `head` says "everything below is consumed"; one `Consumed`
//! record carries it. Reliable reads (`get <q>/open`) break that prefix: a
//! consumer may confirm message 6 while message 5 is still open on another
//! connection, so 6 is consumed and 5 is not. Such a message gets its own
//! `Confirmed` record, and the queue remembers it here until the head
//! passes it.
//!
//! The set is kept as sorted, disjoint, non-adjacent ranges: a gap is a
//! message still open or put back, so with one consumer holding a message
//! for an hour while others confirm a million behind it, this is one range,
//! not a million entries. That is what bounds memory with many open
//! messages.

/// Sorted, disjoint, non-adjacent half-open ranges of sequence numbers.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Confirmed(Vec<(u64, u64)>);

impl Confirmed {
    /// Adds `[start, end)`.
    pub fn insert(&mut self, start: u64, end: u64) {
        if start >= end {
            return;
        }
        // First range that ends at or after `start` (may merge with it).
        let i = self.0.partition_point(|&(_, e)| e < start);
        let mut j = i;
        let (mut s, mut e) = (start, end);
        while j < self.0.len() && self.0[j].0 <= e {
            s = s.min(self.0[j].0);
            e = e.max(self.0[j].1);
            j += 1;
        }
        self.0.splice(i..j, [(s, e)]);
    }

    /// Is message `seq` in the set?
    pub fn contains(&self, seq: u64) -> bool {
        let i = self.0.partition_point(|&(_, e)| e <= seq);
        self.0.get(i).is_some_and(|&(s, _)| s <= seq)
    }

    /// The end of the range holding `seq`, if one does.
    pub fn end_at(&self, seq: u64) -> Option<u64> {
        let i = self.0.partition_point(|&(_, e)| e <= seq);
        self.0.get(i).filter(|&&(s, _)| s <= seq).map(|&(_, e)| e)
    }

    /// The start of the first range above `seq`.
    pub fn next_from(&self, seq: u64) -> Option<u64> {
        let i = self.0.partition_point(|&(s, _)| s <= seq);
        self.0.get(i).map(|&(s, _)| s)
    }

    /// Forgets everything below `head` (the head passed it).
    pub fn drop_below(&mut self, head: u64) {
        let i = self.0.partition_point(|&(_, e)| e <= head);
        self.0.drain(..i);
        if let Some(first) = self.0.first_mut() {
            first.0 = first.0.max(head);
        }
    }

    /// If a range starts at or below `head`, where the head may move to:
    /// the end of that range.
    pub fn extend(&self, head: u64) -> u64 {
        match self.0.first() {
            Some(&(s, e)) if s <= head => head.max(e),
            _ => head,
        }
    }

    /// How many messages the set holds.
    pub fn count(&self) -> u64 {
        self.0.iter().map(|&(s, e)| e - s).sum()
    }

    /// The ranges, in order.
    pub fn ranges(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.0.iter().copied()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_merge_and_stay_sorted() {
        let mut c = Confirmed::default();
        c.insert(6, 7);
        c.insert(8, 9);
        c.insert(20, 21);
        assert_eq!(c.ranges().collect::<Vec<_>>(), [(6, 7), (8, 9), (20, 21)]);
        c.insert(7, 8);
        assert_eq!(c.ranges().collect::<Vec<_>>(), [(6, 9), (20, 21)]);
        c.insert(2, 30);
        assert_eq!(c.ranges().collect::<Vec<_>>(), [(2, 30)]);
        assert_eq!(c.count(), 28);
        assert!(c.contains(2) && c.contains(29) && !c.contains(30) && !c.contains(1));
    }

    #[test]
    fn the_head_passes_ranges() {
        let mut c = Confirmed::default();
        c.insert(6, 9);
        c.insert(12, 13);
        assert_eq!(c.extend(5), 5);
        assert_eq!(c.extend(6), 9);
        c.drop_below(9);
        assert_eq!(c.ranges().collect::<Vec<_>>(), [(12, 13)]);
        c.drop_below(12);
        assert_eq!(c.extend(12), 13);
        c.drop_below(13);
        assert!(c.is_empty());
    }

    #[test]
    fn matches_a_plain_set() {
        // Random inserts and head moves against a BTreeSet.
        let mut c = Confirmed::default();
        let mut model = std::collections::BTreeSet::new();
        let mut x = 12345u64;
        let mut head = 0;
        for _ in 0..5000 {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let seq = head + (x >> 33) % 40;
            c.insert(seq, seq + 1);
            model.insert(seq);
            if (x >> 20).is_multiple_of(7) {
                head = c.extend(head);
                while model.first().is_some_and(|&s| s < head) {
                    model.pop_first();
                }
                c.drop_below(head);
            }
            assert_eq!(c.count(), model.len() as u64);
            for s in head..head + 40 {
                assert_eq!(c.contains(s), model.contains(&s));
            }
        }
    }
}
