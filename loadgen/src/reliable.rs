//! `--reliable`: Kestrel's reliable reads, as one connection keeps track of
//! them.
//!
//! A `get <q>/open` hands out the head of the queue tentatively: the server
//! keeps it *open* for this connection until a `/close` confirms it, and puts
//! it back at the head if the connection breaks first. The generator sends
//! `/open` when nothing is open on the queue and `/close/open` when a message
//! is (confirm it, open the next, one round trip), and at the end a `/close`
//! for every message still open, so that a run leaves nothing behind.
//!
//! The rule that keeps this correct: on one connection, at most one get per
//! queue is in flight. A `/close` confirms whatever the server has open,
//! including a message whose `VALUE` is still on its way; if the connection
//! broke then, the message would be confirmed and never seen. So a
//! `/close/open` goes out only after the reply that handed out the message it
//! confirms has arrived. Pairs consumers therefore keep one get in flight
//! whatever `--pipeline` says. In the mixed and get workloads a get whose
//! queue already has one in flight waits for that reply, and the requests
//! drawn after it wait behind it (those already in flight are not held up).
//! Knowing what it holds, a connection also never sends a `/close` with
//! nothing open: Kestrel ignores one, but a server need not.
//!
//! A message is *held* from its `VALUE` until the reply to the next get on
//! its queue. When the connection breaks, held messages are *open at a
//! disconnect*: the server may have confirmed one (a `/close/open` executed,
//! its reply lost) or will hand it out again. `--verify` allows exactly
//! those redeliveries.

use std::collections::HashMap;

use crate::protocol::GetKind;

/// A message the server holds open for this connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Held {
    pub queue: u32,
    /// `(producer, seq)` when it is one of ours and intact (`--verify`).
    pub msg: Option<(u32, u64)>,
    /// When the get that opened it was sent.
    pub sent_at: u64,
}

#[derive(Clone, Copy, Debug, Default)]
struct Slot {
    in_flight: bool,
    held: Option<Held>,
}

/// One connection's reliable reads, by queue. Queues with nothing held and
/// nothing in flight have no entry, so this stays as small as what is open.
#[derive(Debug, Default)]
pub struct Reads {
    slots: HashMap<u32, Slot>,
    held: usize,
}

impl Reads {
    /// Whether a get on `queue` may be sent now: none is in flight on it.
    pub fn may_send(&self, queue: u32) -> bool {
        self.slots.get(&queue).is_none_or(|s| !s.in_flight)
    }

    /// The get to send on `queue` (which [`Reads::may_send`] allowed), and
    /// marks it in flight.
    pub fn send(&mut self, queue: u32) -> GetKind {
        let slot = self.slots.entry(queue).or_default();
        debug_assert!(!slot.in_flight, "two reliable gets in flight on one queue");
        slot.in_flight = true;
        if slot.held.is_some() {
            GetKind::CloseOpen
        } else {
            GetKind::Open
        }
    }

    /// Marks a `/close` for `queue`'s held message in flight.
    pub fn send_close(&mut self, queue: u32) {
        self.slots.entry(queue).or_default().in_flight = true;
    }

    /// The reply to the get of `kind` on `queue` arrived. `ok` is false for
    /// an error reply, which changes nothing the server holds as far as we
    /// can know. `delivered` is the message a `VALUE` carried. Returns the
    /// message this reply confirmed, if any.
    pub fn reply(
        &mut self,
        queue: u32,
        kind: GetKind,
        ok: bool,
        delivered: Option<Held>,
    ) -> Option<Held> {
        let slot = self.slots.get_mut(&queue)?;
        let held_before = slot.held.is_some();
        slot.in_flight = false;
        let mut confirmed = None;
        if ok {
            if matches!(kind, GetKind::CloseOpen | GetKind::Close) {
                confirmed = slot.held.take();
            }
            if let (GetKind::Open | GetKind::CloseOpen, Some(d)) = (kind, delivered) {
                // An /open while one is held cannot happen (send() chains);
                // the server would refuse it rather than hand out another.
                slot.held.get_or_insert(d);
            }
        }
        let held_after = slot.held.is_some();
        if !held_after {
            self.slots.remove(&queue);
        }
        self.held = self.held - usize::from(held_before) + usize::from(held_after);
        confirmed
    }

    /// Stops tracking `queue`'s held message without a confirmation (its
    /// `/close` got an error reply: sending it again would loop). The server
    /// keeps it open until the connection ends, then puts it back.
    pub fn give_up(&mut self, queue: u32) -> Option<Held> {
        let slot = self.slots.remove(&queue)?;
        self.held -= usize::from(slot.held.is_some());
        slot.held
    }

    /// Messages held open, for the run's closing `/close`s.
    pub fn held(&self) -> usize {
        self.held
    }

    /// Queues whose held message needs a `/close` now (none in flight).
    pub fn to_close(&self) -> Vec<u32> {
        self.slots
            .iter()
            .filter(|(_, s)| s.held.is_some() && !s.in_flight)
            .map(|(&q, _)| q)
            .collect()
    }

    /// The connection broke: returns what it held open, and starts afresh
    /// (a new connection holds nothing).
    pub fn disconnect(&mut self) -> Vec<Held> {
        self.held = 0;
        self.slots.drain().filter_map(|(_, s)| s.held).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(queue: u32, seq: u64, sent_at: u64) -> Held {
        Held {
            queue,
            msg: Some((0, seq)),
            sent_at,
        }
    }

    #[test]
    fn open_then_chain_close_open_and_reopen_after_a_miss() {
        let mut r = Reads::default();
        assert!(r.may_send(3));
        assert_eq!(r.send(3), GetKind::Open);
        assert!(!r.may_send(3), "one get per queue in flight");
        assert!(r.may_send(4), "other queues are free");
        assert_eq!(r.reply(3, GetKind::Open, true, Some(msg(3, 0, 10))), None);
        assert_eq!(r.held(), 1);
        assert_eq!(r.send(3), GetKind::CloseOpen);
        // The reply to /close/open confirms the message before it.
        let got = r.reply(3, GetKind::CloseOpen, true, Some(msg(3, 1, 20)));
        assert_eq!(got, Some(msg(3, 0, 10)));
        assert_eq!(r.held(), 1);
        assert_eq!(r.send(3), GetKind::CloseOpen);
        // A miss confirms too, and leaves nothing open: the next is /open.
        assert_eq!(
            r.reply(3, GetKind::CloseOpen, true, None),
            Some(msg(3, 1, 20))
        );
        assert_eq!(r.held(), 0);
        assert_eq!(r.send(3), GetKind::Open);
        assert_eq!(r.reply(3, GetKind::Open, true, None), None);
        assert!(r.slots.is_empty(), "nothing kept for idle queues");
    }

    #[test]
    fn an_error_reply_changes_nothing_held() {
        let mut r = Reads::default();
        r.send(1);
        r.reply(1, GetKind::Open, true, Some(msg(1, 5, 1)));
        assert_eq!(r.send(1), GetKind::CloseOpen);
        assert_eq!(r.reply(1, GetKind::CloseOpen, false, None), None);
        assert_eq!(r.held(), 1);
        assert!(r.may_send(1));
        assert_eq!(r.send(1), GetKind::CloseOpen);
    }

    #[test]
    fn closing_confirms_what_is_held() {
        let mut r = Reads::default();
        for q in 0..3 {
            r.send(q);
            let d = (q != 1).then(|| msg(q, u64::from(q), 0));
            r.reply(q, GetKind::Open, true, d);
        }
        assert_eq!(r.held(), 2);
        let mut qs = r.to_close();
        qs.sort_unstable();
        assert_eq!(qs, vec![0, 2]);
        r.send_close(0);
        assert_eq!(
            r.to_close(),
            vec![2],
            "a /close in flight is not sent twice"
        );
        assert_eq!(r.reply(0, GetKind::Close, true, None), Some(msg(0, 0, 0)));
        assert_eq!(r.held(), 1);
        // A /close refused is not sent again.
        r.send_close(2);
        assert_eq!(r.reply(2, GetKind::Close, false, None), None);
        assert_eq!(r.give_up(2), Some(msg(2, 2, 0)));
        assert_eq!((r.held(), r.to_close()), (0, vec![]));
    }

    #[test]
    fn a_disconnect_hands_back_what_was_held_and_starts_afresh() {
        let mut r = Reads::default();
        r.send(0);
        r.reply(0, GetKind::Open, true, Some(msg(0, 7, 3)));
        r.send(0);
        r.send(1);
        assert_eq!(r.disconnect(), vec![msg(0, 7, 3)]);
        assert_eq!(r.held(), 0);
        assert!(r.may_send(0) && r.may_send(1));
        assert_eq!(r.send(0), GetKind::Open);
    }
}
