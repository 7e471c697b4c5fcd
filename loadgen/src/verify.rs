//! `--verify`: proof that the server delivered exactly what it acknowledged.
//!
//! Every traced message names its producer, queue and per-producer sequence
//! number, and its payload is a function of those, so a consumer can check a
//! message on its own. Producers remember which sequence numbers were
//! acknowledged (`STORED`), refused (an error reply) or left in doubt (in
//! flight when a connection died). Consumers keep one bit per received
//! message. At the end the bitsets are merged across threads and compared:
//! an acknowledged message never received is lost, a bit set twice is a
//! duplicate, a refused message that shows up was resurrected.
//!
//! Order is checked per (consumer connection, producer, queue): a FIFO queue
//! must hand one producer's messages to one consumer in increasing order.
//! Across consumers no order can be asserted, because two replies race on
//! different sockets.

use std::collections::HashMap;

use serde::Serialize;

use crate::workload::{Header, Pattern, HEADER_LEN};

/// A growable set of sequence numbers.
#[derive(Clone, Debug, Default)]
pub struct Bitset(Vec<u64>);

impl Bitset {
    /// Sets bit `i`; returns whether it was already set.
    pub fn set(&mut self, i: u64) -> bool {
        let (w, b) = ((i / 64) as usize, i % 64);
        if w >= self.0.len() {
            self.0.resize(w + 1, 0);
        }
        let was = self.0[w] & (1 << b) != 0;
        self.0[w] |= 1 << b;
        was
    }

    pub fn get(&self, i: u64) -> bool {
        let (w, b) = ((i / 64) as usize, i % 64);
        self.0.get(w).is_some_and(|x| x & (1 << b) != 0)
    }

    pub fn count(&self) -> u64 {
        self.0.iter().map(|w| u64::from(w.count_ones())).sum()
    }

    /// Adds `other`; returns how many bits were in both.
    pub fn union_overlap(&mut self, other: &Bitset) -> u64 {
        if other.0.len() > self.0.len() {
            self.0.resize(other.0.len(), 0);
        }
        let mut both = 0;
        for (a, b) in self.0.iter_mut().zip(&other.0) {
            both += u64::from((*a & b).count_ones());
            *a |= b;
        }
        both
    }

    /// Sequence numbers below `n` that are set here and in `other`.
    fn iter_ones(&self) -> impl Iterator<Item = u64> + '_ {
        self.0.iter().enumerate().flat_map(|(w, &bits)| {
            (0..64)
                .filter(move |b| bits & (1u64 << b) != 0)
                .map(move |b| w as u64 * 64 + b)
        })
    }
}

/// What one producer connection sent.
#[derive(Clone, Debug, Default)]
pub struct ProducerLog {
    pub id: u32,
    /// Sequence numbers `0..sent` were sent.
    pub sent: u64,
    pub acked: Bitset,
    pub failed: Bitset,
}

const MAX_PROBLEMS: usize = 20;

/// What the consumers of one thread (or the final drain) received.
#[derive(Debug)]
pub struct ConsumerLog {
    run: u32,
    n_producers: u32,
    received: Vec<Bitset>,
    last: HashMap<(u32, u32, u32), u64>,
    pub received_count: u64,
    pub duplicates: u64,
    pub out_of_order: u64,
    pub corrupt: u64,
    pub foreign: u64,
    pub phantom: u64,
    pub problems: Vec<String>,
}

impl ConsumerLog {
    pub fn new(run: u32, n_producers: u32) -> ConsumerLog {
        ConsumerLog {
            run,
            n_producers,
            received: vec![Bitset::default(); n_producers as usize],
            last: HashMap::new(),
            received_count: 0,
            duplicates: 0,
            out_of_order: 0,
            corrupt: 0,
            foreign: 0,
            phantom: 0,
            problems: Vec::new(),
        }
    }

    fn problem(&mut self, msg: String) {
        if self.problems.len() < MAX_PROBLEMS {
            self.problems.push(msg);
        }
    }

    /// Checks one message that `consumer` popped from `queue`. Returns its
    /// header when it is one of ours and intact (for end-to-end latency).
    pub fn check(
        &mut self,
        consumer: u32,
        queue: u32,
        body: &[u8],
        pattern: &Pattern,
    ) -> Option<Header> {
        let Some(h) = Header::read(body) else {
            self.corrupt += 1;
            self.problem(format!(
                "queue {queue}: {}-byte message without a loadgen header",
                body.len()
            ));
            return None;
        };
        if h.run != self.run {
            self.foreign += 1;
            return None;
        }
        self.received_count += 1;
        if h.queue != queue
            || body[HEADER_LEN..] != *pattern.slice(h.producer, h.seq, body.len() - HEADER_LEN)
        {
            self.corrupt += 1;
            self.problem(format!(
                "queue {queue}: corrupt message (producer {} seq {} claims queue {})",
                h.producer, h.seq, h.queue
            ));
            return None;
        }
        if h.producer >= self.n_producers {
            self.phantom += 1;
            self.problem(format!(
                "queue {queue}: message from unknown producer {}",
                h.producer
            ));
            return None;
        }
        if self.received[h.producer as usize].set(h.seq) {
            self.duplicates += 1;
            self.problem(format!(
                "queue {queue}: duplicate message producer {} seq {}",
                h.producer, h.seq
            ));
            return Some(h);
        }
        let last = self
            .last
            .entry((consumer, h.producer, queue))
            .or_insert(h.seq);
        if h.seq < *last {
            self.out_of_order += 1;
            let msg = format!(
                "queue {queue}: producer {} seq {} received after seq {} by the same consumer",
                h.producer, h.seq, *last
            );
            self.problem(msg);
        } else {
            *last = h.seq;
        }
        Some(h)
    }
}

/// The verdict.
#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct VerifyReport {
    pub passed: bool,
    pub sent: u64,
    pub acknowledged: u64,
    pub refused: u64,
    /// Sent, but the connection died before the reply: may or may not exist.
    pub in_doubt: u64,
    pub received: u64,
    /// Of `received`, how many were found by the final drain.
    pub drained: u64,
    pub lost: u64,
    pub duplicates: u64,
    pub out_of_order: u64,
    pub corrupt: u64,
    /// Messages from another run or another client (not a failure).
    pub foreign: u64,
    /// Messages that were never sent (unknown producer or sequence number).
    pub phantom: u64,
    /// Messages whose `set` got an error reply, yet were delivered.
    pub resurrected: u64,
    /// Connections re-established after the server closed them.
    pub reconnects: u64,
    /// `get`s whose connection broke before the reply: up to this many
    /// messages may be lost without blame.
    pub gets_in_doubt: u64,
    pub problems: Vec<String>,
}

/// What broken connections excuse.
#[derive(Clone, Copy, Debug, Default)]
pub struct Crashes {
    pub reconnects: u64,
    pub gets_in_doubt: u64,
}

pub fn finish(
    producers: &[ProducerLog],
    consumers: &[ConsumerLog],
    drained: u64,
    crashes: Crashes,
) -> VerifyReport {
    let n = consumers.first().map_or(0, |c| c.n_producers as usize);
    let mut received = vec![Bitset::default(); n];
    let mut r = VerifyReport {
        drained,
        reconnects: crashes.reconnects,
        gets_in_doubt: crashes.gets_in_doubt,
        ..VerifyReport::default()
    };
    for c in consumers {
        r.duplicates += c.duplicates;
        r.out_of_order += c.out_of_order;
        r.corrupt += c.corrupt;
        r.foreign += c.foreign;
        r.phantom += c.phantom;
        for p in &c.problems {
            if r.problems.len() < MAX_PROBLEMS {
                r.problems.push(p.clone());
            }
        }
        for (i, b) in c.received.iter().enumerate() {
            let both = received[i].union_overlap(b);
            if both > 0 {
                r.duplicates += both;
                if r.problems.len() < MAX_PROBLEMS {
                    r.problems.push(format!(
                        "producer {i}: {both} messages received by two threads"
                    ));
                }
            }
        }
    }
    r.received = received.iter().map(Bitset::count).sum();
    for p in producers {
        r.sent += p.sent;
        let acked = p.acked.count();
        let refused = p.failed.count();
        r.acknowledged += acked;
        r.refused += refused;
        r.in_doubt += p.sent - acked - refused;
        let got = received.get(p.id as usize);
        let empty = Bitset::default();
        let got = got.unwrap_or(&empty);
        let mut lost_here = 0;
        for seq in p.acked.iter_ones() {
            if !got.get(seq) {
                lost_here += 1;
                if lost_here <= 3 && r.problems.len() < MAX_PROBLEMS {
                    r.problems.push(format!(
                        "producer {}: acknowledged seq {seq} never received",
                        p.id
                    ));
                }
            }
        }
        r.lost += lost_here;
        for seq in got.iter_ones() {
            if seq >= p.sent {
                r.phantom += 1;
            } else if p.failed.get(seq) {
                r.resurrected += 1;
            }
        }
    }
    // A get whose reply died with its connection may have popped a message
    // (at-most-once), and a server that crashed may hand out again what was
    // popped but not yet durable (at-least-once after a crash).
    let crashed = crashes.reconnects > 0 || crashes.gets_in_doubt > 0;
    r.passed = r.lost <= crashes.gets_in_doubt
        && (r.duplicates == 0 || crashed)
        && r.out_of_order == 0
        && r.corrupt == 0
        && r.phantom == 0
        && r.resurrected == 0;
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(p: &Pattern, h: Header, len: usize) -> Vec<u8> {
        let mut b = vec![0u8; len];
        h.write(&mut b);
        b[HEADER_LEN..].copy_from_slice(p.slice(h.producer, h.seq, len - HEADER_LEN));
        b
    }

    fn hdr(producer: u32, seq: u64) -> Header {
        Header {
            run: 9,
            producer,
            queue: 0,
            seq,
            sent_ns: 0,
        }
    }

    fn producer(id: u32, sent: u64) -> ProducerLog {
        let mut p = ProducerLog {
            id,
            sent,
            ..ProducerLog::default()
        };
        for s in 0..sent {
            p.acked.set(s);
        }
        p
    }

    #[test]
    fn clean_run_passes() {
        let pat = Pattern::new(64, 1);
        let mut c = ConsumerLog::new(9, 2);
        for s in 0..10 {
            assert!(c.check(5, 0, &body(&pat, hdr(0, s), 64), &pat).is_some());
            assert!(c.check(5, 0, &body(&pat, hdr(1, s), 40), &pat).is_some());
        }
        let r = finish(
            &[producer(0, 10), producer(1, 10)],
            &[c],
            0,
            Crashes::default(),
        );
        assert!(r.passed, "{r:?}");
        assert_eq!(r.received, 20);
    }

    #[test]
    fn loss_duplicates_order_and_corruption_are_caught() {
        let pat = Pattern::new(64, 1);
        let mut a = ConsumerLog::new(9, 1);
        let mut b = ConsumerLog::new(9, 1);
        a.check(1, 0, &body(&pat, hdr(0, 0), 40), &pat);
        a.check(1, 0, &body(&pat, hdr(0, 2), 40), &pat);
        a.check(1, 0, &body(&pat, hdr(0, 1), 40), &pat); // out of order
        b.check(2, 0, &body(&pat, hdr(0, 2), 40), &pat); // dup across threads
        let mut bad = body(&pat, hdr(0, 3), 40);
        bad[39] ^= 1;
        b.check(2, 0, &bad, &pat);
        let r = finish(&[producer(0, 5)], &[a, b], 0, Crashes::default());
        assert!(!r.passed);
        assert_eq!(r.out_of_order, 1);
        assert_eq!(r.duplicates, 1);
        assert_eq!(r.corrupt, 1);
        assert_eq!(r.lost, 2); // seq 3 (corrupt) and 4
    }

    #[test]
    fn foreign_messages_do_not_fail() {
        let pat = Pattern::new(64, 1);
        let mut c = ConsumerLog::new(10, 1);
        assert!(c.check(0, 0, &body(&pat, hdr(0, 0), 40), &pat).is_none());
        let r = finish(&[producer(0, 0)], &[c], 0, Crashes::default());
        assert_eq!(r.foreign, 1);
        assert!(r.passed);
    }

    #[test]
    fn bitset() {
        let mut a = Bitset::default();
        assert!(!a.set(130));
        assert!(a.set(130));
        assert!(a.get(130) && !a.get(129));
        let mut b = Bitset::default();
        b.set(130);
        b.set(1);
        assert_eq!(a.union_overlap(&b), 1);
        assert_eq!(a.count(), 2);
        assert_eq!(a.iter_ones().collect::<Vec<_>>(), vec![1, 130]);
    }
}

#[cfg(test)]
mod crash_tests {
    use super::*;

    #[test]
    fn broken_gets_excuse_that_many_losses() {
        let mut p = ProducerLog {
            id: 0,
            sent: 3,
            ..ProducerLog::default()
        };
        for s in 0..3 {
            p.acked.set(s);
        }
        let c = ConsumerLog::new(1, 1);
        let one = Crashes {
            reconnects: 1,
            gets_in_doubt: 2,
        };
        let r = finish(std::slice::from_ref(&p), std::slice::from_ref(&c), 0, one);
        assert_eq!(r.lost, 3);
        assert!(!r.passed, "3 lost, only 2 gets in doubt");
        let three = Crashes {
            reconnects: 1,
            gets_in_doubt: 3,
        };
        assert!(finish(&[p], &[c], 0, three).passed);
    }
}
