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
//!
//! # Reliable reads (`--reliable`): at-least-once
//!
//! A message is *confirmed* when the `/close` after it is answered. One that
//! was still unconfirmed when its connection broke is *open at a
//! disconnect*: the server puts it back at the head (or had confirmed it,
//! the reply dying on the way), so it may be delivered again. Consumers
//! record those deliveries, and also every fetching get that was in flight
//! at a disconnect (an *open in doubt*: the server may have opened a message
//! whose reply never arrived, and will hand it out again). Repeats and
//! out-of-order deliveries are recorded too, and judged in [`finish`], once
//! every thread's records are in:
//! - a message delivered `d` times, `o` of them open at a disconnect, was
//!   confirmed `d - o` times; a second confirmation is a duplicate
//!   (failure), every other extra delivery is a redelivery (counted, not a
//!   failure). A confirmed message that came back is therefore caught,
//!   unless its one redelivery was itself open at a disconnect and the
//!   server then kept it confirmed — it cannot be told apart from a close
//!   whose reply was lost without a clock per delivery;
//! - an out-of-order delivery is excused only if it is a redelivery: the
//!   same message was open at another consumer's disconnect, in a get sent
//!   before it arrived, or (when the first delivery was never seen) an open
//!   in doubt on the same queue, sent before, accounts for it, each open in
//!   doubt once. The consumer's high-water mark does not move, so what
//!   follows is still held to the order;
//! - nothing excuses a loss: a message opened by a get whose reply was lost
//!   is put back by the server, so every acknowledged message must arrive.
//!
//! Times are `CLOCK_MONOTONIC` nanoseconds, comparable across threads. A
//! disconnect's records carry the time its get was *sent*, which precedes
//! everything the server did for that get; a delivery carries the time it
//! *arrived*, which follows them. So "sent before it arrived" holds whatever
//! order the threads noticed the events in.

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

    /// Bits set both here and in `other`.
    fn common_ones<'a>(&'a self, other: &'a Bitset) -> impl Iterator<Item = u64> + 'a {
        self.0
            .iter()
            .zip(&other.0)
            .enumerate()
            .filter(|(_, (a, b))| *a & *b != 0)
            .flat_map(|(w, (a, b))| {
                let both = a & b;
                (0..64)
                    .filter(move |i| both & (1u64 << i) != 0)
                    .map(move |i| w as u64 * 64 + i)
            })
    }

    /// The set bits, in increasing order.
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
/// Repeats and out-of-order deliveries kept for judging at the end (reliable
/// reads); beyond this many, each further one is a failure outright.
const MAX_RECORDS: usize = 1 << 20;

/// One delivery of one of our messages, as reliable reads record it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Delivery {
    consumer: u32,
    queue: u32,
    producer: u32,
    seq: u64,
    /// Arrival time, or for a delivery open at a disconnect the time its get
    /// was sent (see the module doc).
    at: u64,
}

/// An out-of-order delivery: `seq` arrived after `after`.
#[derive(Clone, Copy, Debug)]
struct Late {
    d: Delivery,
    after: u64,
}

/// What the consumers of one thread (or the final drain) received.
#[derive(Debug)]
pub struct ConsumerLog {
    run: u32,
    n_producers: u32,
    /// Reliable reads: repeats and disorder are judged in [`finish`].
    reliable: bool,
    received: Vec<Bitset>,
    last: HashMap<(u32, u32, u32), u64>,
    /// Reliable: deliveries of messages this log had already received.
    repeats: Vec<Delivery>,
    /// Reliable: out-of-order deliveries.
    late: Vec<Late>,
    /// Reliable: deliveries still unconfirmed when their connection broke.
    open: Vec<Delivery>,
    /// Reliable: (queue, send time) of each fetching get in flight at a
    /// disconnect.
    opens_in_doubt: Vec<(u32, u64)>,
    pub received_count: u64,
    /// Deliveries of a message this log had already received. Without
    /// reliable reads each is a duplicate; with them [`finish`] decides.
    pub duplicates: u64,
    pub out_of_order: u64,
    pub corrupt: u64,
    pub foreign: u64,
    pub phantom: u64,
    pub problems: Vec<String>,
}

impl ConsumerLog {
    pub fn new(run: u32, n_producers: u32, reliable: bool) -> ConsumerLog {
        ConsumerLog {
            run,
            n_producers,
            reliable,
            received: vec![Bitset::default(); n_producers as usize],
            last: HashMap::new(),
            repeats: Vec::new(),
            late: Vec::new(),
            open: Vec::new(),
            opens_in_doubt: Vec::new(),
            received_count: 0,
            duplicates: 0,
            out_of_order: 0,
            corrupt: 0,
            foreign: 0,
            phantom: 0,
            problems: Vec::new(),
        }
    }

    /// Reliable reads: message `(producer, seq)`, delivered to `consumer` on
    /// `queue` by a get sent at `sent_at`, was unconfirmed when the
    /// connection broke.
    pub fn open_at_disconnect(
        &mut self,
        consumer: u32,
        queue: u32,
        (producer, seq): (u32, u64),
        sent_at: u64,
    ) {
        self.open.push(Delivery {
            consumer,
            queue,
            producer,
            seq,
            at: sent_at,
        });
    }

    /// Reliable reads: a get that could open a message on `queue`, sent at
    /// `sent_at`, was in flight when its connection broke.
    pub fn open_in_doubt(&mut self, queue: u32, sent_at: u64) {
        self.opens_in_doubt.push((queue, sent_at));
    }

    fn problem(&mut self, msg: String) {
        if self.problems.len() < MAX_PROBLEMS {
            self.problems.push(msg);
        }
    }

    /// Checks one message that `consumer` got from `queue`, arrived at `at`.
    /// Returns its header when it is one of ours and intact (for end-to-end
    /// latency, and to name it if it is open at a disconnect).
    pub fn check(
        &mut self,
        consumer: u32,
        queue: u32,
        body: &[u8],
        pattern: &Pattern,
        at: u64,
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
        let d = Delivery {
            consumer,
            queue,
            producer: h.producer,
            seq: h.seq,
            at,
        };
        if self.received[h.producer as usize].set(h.seq) {
            self.duplicates += 1;
            if self.reliable && self.repeats.len() < MAX_RECORDS {
                self.repeats.push(d);
            } else {
                self.problem(format!(
                    "queue {queue}: duplicate message producer {} seq {}",
                    h.producer, h.seq
                ));
            }
            return Some(h);
        }
        let last = self
            .last
            .entry((consumer, h.producer, queue))
            .or_insert(h.seq);
        if h.seq < *last {
            // The consumer's high-water mark stays: a redelivery is excused
            // alone, and what comes after it is still held to the order.
            let after = *last;
            if self.reliable && self.late.len() < MAX_RECORDS {
                self.late.push(Late { d, after });
            } else {
                self.out_of_order += 1;
                self.problem(out_of_order_problem(&d, after));
            }
        } else {
            *last = h.seq;
        }
        Some(h)
    }
}

fn out_of_order_problem(d: &Delivery, after: u64) -> String {
    format!(
        "queue {}: producer {} seq {} received after seq {} by the same consumer",
        d.queue, d.producer, d.seq, after
    )
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
    /// Reliable reads (`--reliable`) were used: delivery is at-least-once.
    pub reliable: bool,
    /// Reliable: deliveries still unconfirmed when their connection broke.
    pub open_at_disconnect: u64,
    /// Reliable: fetching gets in flight when their connection broke (each
    /// may have opened a message that the server hands out again).
    pub opens_in_doubt: u64,
    /// Reliable: extra deliveries of messages that were open at a disconnect
    /// (not a failure; not counted in `duplicates`).
    pub redelivered: u64,
    /// Reliable: deliveries that arrived out of order and are excused as
    /// redeliveries (not a failure; not counted in `out_of_order`). One whose
    /// first delivery was never seen is not in `redelivered`.
    pub redelivered_out_of_order: u64,
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
    let reliable = consumers.iter().any(|c| c.reliable);
    let mut received = vec![Bitset::default(); n];
    let mut r = VerifyReport {
        drained,
        reconnects: crashes.reconnects,
        gets_in_doubt: crashes.gets_in_doubt,
        reliable,
        ..VerifyReport::default()
    };
    // Reliable: deliveries beyond each message's first, judged below.
    let mut extra: HashMap<(u32, u64), u64> = HashMap::new();
    for c in consumers {
        if !reliable {
            r.duplicates += c.duplicates;
        } else {
            // Repeats past MAX_RECORDS were not kept: failures outright.
            r.duplicates += c.duplicates - c.repeats.len() as u64;
            for d in &c.repeats {
                *extra.entry((d.producer, d.seq)).or_default() += 1;
            }
        }
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
            if reliable {
                for seq in received[i].common_ones(b) {
                    *extra.entry((i as u32, seq)).or_default() += 1;
                }
            }
            let both = received[i].union_overlap(b);
            if both > 0 && !reliable {
                r.duplicates += both;
                if r.problems.len() < MAX_PROBLEMS {
                    r.problems.push(format!(
                        "producer {i}: {both} messages received by two threads"
                    ));
                }
            }
        }
    }
    if reliable {
        judge_redeliveries(consumers, &extra, &mut r);
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
    let (lost_ok, duplicates_ok) = if reliable {
        // At-least-once: the server puts back whatever a broken connection
        // held or was being handed, so nothing excuses a loss; redeliveries
        // were set apart from the duplicates above.
        (r.lost == 0, r.duplicates == 0)
    } else {
        // A get whose reply died with its connection may have popped a
        // message (at-most-once), and a server that crashed may hand out
        // again what was popped but not yet durable.
        let crashed = crashes.reconnects > 0 || crashes.gets_in_doubt > 0;
        (
            r.lost <= crashes.gets_in_doubt,
            r.duplicates == 0 || crashed,
        )
    };
    r.passed = lost_ok
        && duplicates_ok
        && r.out_of_order == 0
        && r.corrupt == 0
        && r.phantom == 0
        && r.resurrected == 0;
    r
}

/// Reliable reads: sorts extra deliveries into redeliveries and duplicates,
/// and out-of-order deliveries into excused redeliveries and disorder (the
/// rules are in the module doc).
fn judge_redeliveries(
    consumers: &[ConsumerLog],
    extra: &HashMap<(u32, u64), u64>,
    r: &mut VerifyReport,
) {
    // (consumer, send time) of the deliveries open at a disconnect, by message.
    let mut open: HashMap<(u32, u64), Vec<(u32, u64)>> = HashMap::new();
    // Send times of the opens in doubt, by queue, sorted.
    let mut in_doubt: HashMap<u32, Vec<u64>> = HashMap::new();
    let mut late: Vec<Late> = Vec::new();
    for c in consumers {
        for d in &c.open {
            open.entry((d.producer, d.seq))
                .or_default()
                .push((d.consumer, d.at));
        }
        for &(q, at) in &c.opens_in_doubt {
            in_doubt.entry(q).or_default().push(at);
        }
        late.extend_from_slice(&c.late);
        r.open_at_disconnect += c.open.len() as u64;
        r.opens_in_doubt += c.opens_in_doubt.len() as u64;
    }
    for times in in_doubt.values_mut() {
        times.sort_unstable();
    }

    let mut messages: Vec<(&(u32, u64), &u64)> = extra.iter().collect();
    messages.sort_unstable();
    for (&(producer, seq), &more) in messages {
        let deliveries = 1 + more;
        let unconfirmed = open.get(&(producer, seq)).map_or(0, |v| v.len() as u64);
        let confirmed = deliveries.saturating_sub(unconfirmed);
        let twice = confirmed.saturating_sub(1);
        r.duplicates += twice;
        r.redelivered += more - twice;
        if twice > 0 && r.problems.len() < MAX_PROBLEMS {
            r.problems.push(format!(
                "producer {producer} seq {seq}: delivered {deliveries} times, confirmed {confirmed} \
                 (open at a disconnect {unconfirmed} times)"
            ));
        }
    }

    // In arrival order, so that each open in doubt is spent on the first
    // late delivery it can explain (any later one could use it as well).
    late.sort_unstable_by_key(|l| l.d.at);
    let mut spent: HashMap<u32, usize> = HashMap::new();
    for l in late {
        let d = &l.d;
        // Another consumer's: a late delivery is the first of its message
        // in its consumer's log, so this consumer's own record of it is this
        // very delivery or a later one.
        let redelivered = open
            .get(&(d.producer, d.seq))
            .is_some_and(|v| v.iter().any(|&(c, sent)| c != d.consumer && sent < d.at))
            || {
                let sent_before = in_doubt
                    .get(&d.queue)
                    .map_or(0, |v| v.partition_point(|&t| t < d.at));
                let used = spent.entry(d.queue).or_default();
                *used < sent_before && {
                    *used += 1;
                    true
                }
            };
        if redelivered {
            r.redelivered_out_of_order += 1;
        } else {
            r.out_of_order += 1;
            if r.problems.len() < MAX_PROBLEMS {
                r.problems.push(out_of_order_problem(d, l.after));
            }
        }
    }
}

#[cfg(test)]
#[path = "verify_tests.rs"]
mod tests;
