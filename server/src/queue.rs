//! Per-queue state: counters and the compact locators of unconsumed messages.
//!
//! A queue keeps no message bodies: each unconsumed message is a 24-byte
//! [`Loc`] (its sequence number and where its record sits in the log), so
//! memory grows with the number of queued messages only by that much. Bodies
//! come from the hot cache or a DMA read.
//!
//! Sequence numbers are per queue, start at 0 and never repeat: `tail` is the
//! next one to hand out (so it is also the `enqueued` counter), `head` the
//! lowest one not yet consumed (the `dequeued` counter). Messages with
//! `head <= seq < tail` are queued; `locs` holds them in order (a message
//! whose record was found corrupt has no locator, which leaves a hole).
//!
//! # Room for reliable reads
//! Kestrel-style reliable reads (`get q/open`, `/close`, `/abort`) hand a
//! message out without consuming it. They fit here as a third set beside
//! `locs`: the handed-out locators, keyed by seq, which go back to the front
//! of `locs` on abort or connection loss and are dropped on confirm. The
//! segment holding such a message stays live (its `live` count is not
//! decremented until confirm), and the log gains a per-message "confirmed"
//! record kind; `head` then means "everything below is confirmed".

use std::collections::VecDeque;

/// Where one unconsumed message's record is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Loc {
    /// The message's sequence number in its queue.
    pub seq: u64,
    /// Ordinal of the segment (see `log::Segments`), not its file number.
    pub seg: u32,
    /// Byte offset of the record in the segment.
    pub off: u32,
    /// Length of the record (header + body, unpadded).
    pub len: u32,
}

impl Loc {
    /// Body length of the message.
    pub fn body_len(&self) -> u64 {
        u64::from(self.len) - crate::log::record::HEADER_LEN as u64
    }
}

/// One queue.
#[derive(Debug)]
pub struct Queue {
    pub id: u32,
    pub name: Box<[u8]>,
    /// Lowest sequence number not consumed (= messages dequeued so far).
    pub head: u64,
    /// Next sequence number to assign (= messages enqueued so far).
    pub tail: u64,
    /// Unconsumed messages, in sequence order.
    pub locs: VecDeque<Loc>,
    /// Sum of the body lengths of `locs`.
    pub bytes: u64,
}

impl Queue {
    pub fn new(id: u32, name: Box<[u8]>) -> Queue {
        Queue {
            id,
            name,
            head: 0,
            tail: 0,
            locs: VecDeque::new(),
            bytes: 0,
        }
    }

    /// Records a new message at the tail; returns its sequence number.
    pub fn push(&mut self, seg: u32, off: u32, len: u32) -> u64 {
        let seq = self.tail;
        self.tail += 1;
        let loc = Loc { seq, seg, off, len };
        self.bytes += loc.body_len();
        self.locs.push_back(loc);
        seq
    }

    /// Removes the head message and advances `head` past it.
    pub fn pop(&mut self) -> Option<Loc> {
        let loc = self.locs.pop_front()?;
        self.head = loc.seq + 1;
        self.bytes -= loc.body_len();
        Some(loc)
    }

    /// Finds the locator of message `seq`, if it is still queued.
    pub fn find_mut(&mut self, seq: u64) -> Option<&mut Loc> {
        let i = self.locs.binary_search_by_key(&seq, |l| l.seq).ok()?;
        self.locs.get_mut(i)
    }

    /// Drops the locator of message `seq` (its record is unreadable).
    pub fn remove(&mut self, seq: u64) -> Option<Loc> {
        let i = self.locs.binary_search_by_key(&seq, |l| l.seq).ok()?;
        let loc = self.locs.remove(i)?;
        self.bytes -= loc.body_len();
        Some(loc)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn push_pop_counters() {
        let mut q = Queue::new(1, b"q".to_vec().into());
        assert_eq!(q.push(0, 0, 58), 0);
        assert_eq!(q.push(0, 64, 60), 1);
        assert_eq!(q.bytes, 22);
        assert_eq!(q.pop().unwrap().seq, 0);
        assert_eq!((q.head, q.tail, q.bytes), (1, 2, 12));
        assert!(q.find_mut(1).is_some());
        assert_eq!(q.remove(1).unwrap().off, 64);
        assert_eq!((q.head, q.tail, q.bytes), (1, 2, 0));
        assert!(q.pop().is_none());
    }

    #[test]
    fn loc_is_compact() {
        assert!(std::mem::size_of::<Loc>() <= 24);
    }
}
