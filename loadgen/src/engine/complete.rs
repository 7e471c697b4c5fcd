//! Accounting for a reply: what it says about the request it answers.
//!
//! Replies come in request order, so each one answers the oldest request in
//! flight. One reply feeds several ledgers at once: the counters and latency
//! histograms of the report, the producer and consumer logs of `--verify`,
//! what reliable reads hold open, and a consumer's decision to back off or
//! stop. A reply that cannot answer that request (a `VALUE` for another key,
//! `STORED` for a get) means the stream is out of step, and the connection
//! is aborted rather than miscounted.

use crate::protocol::{self, ErrorKind, GetKind, Reply};
use crate::reliable::Held;
use crate::workload::Header;

use super::conn::Pending;
use super::{Role, Worker};

impl Worker {
    /// Accounts for one reply to the oldest outstanding request; an error
    /// is a desync.
    pub(super) fn complete(
        &mut self,
        ci: usize,
        reply: Reply<'_>,
        len: usize,
        now: u64,
    ) -> Result<(), String> {
        let Some(p) = self.conns[ci].inflight.pop_front() else {
            return Err("reply received with no request outstanding".into());
        };
        match (p.is_set, reply) {
            (true, Reply::Stored) => self.stored(ci, p),
            (_, Reply::Error(kind, line)) => self.refused(ci, p, kind, line),
            (false, Reply::End) => self.missed(ci, p, now),
            (false, Reply::Value { key, data, .. }) => self.took(ci, p, key, data, now)?,
            (true, other) => return Err(format!("{other:?} in reply to a set")),
            (false, Reply::Stored) => return Err("STORED in reply to a get".into()),
        }
        self.count_reply(p, len, now);
        Ok(())
    }

    /// `STORED`: the set is acknowledged.
    fn stored(&mut self, ci: usize, p: Pending) {
        self.counters.stored_all += 1;
        if p.measured {
            self.counters.sets += 1;
        }
        if let Some(pl) = self.conns[ci].producer_log {
            self.producers[pl].acked.set(p.seq);
        }
    }

    /// An error line: the request failed. A refused set must never be
    /// delivered; a refused `/close` leaves its message open.
    fn refused(&mut self, ci: usize, p: Pending, kind: ErrorKind, line: &[u8]) {
        let counters = &mut self.counters;
        let c = &mut self.conns[ci];
        if p.measured {
            if p.is_set {
                counters.sets += 1;
            } else {
                counters.gets += 1;
            }
            counters.reply_error(kind);
        }
        if let (true, Some(pl)) = (p.is_set, c.producer_log) {
            self.producers[pl].failed.set(p.seq);
        }
        if !p.is_set && p.get != GetKind::Pop {
            c.reads.reply(p.queue, p.get, false, None);
        }
        if p.get == GetKind::Close {
            // Still open, and put back when the connection ends:
            // as good as open at a disconnect.
            let held = c.reads.give_up(p.queue);
            if let (Some(log), Some(h)) = (&mut self.consumer, held) {
                if let Some(msg) = h.msg {
                    log.open_at_disconnect(c.id, h.queue, msg, h.sent_at);
                }
            }
        }
        if counters.errors() <= 3 {
            eprintln!(
                "mcq-loadgen: connection {} got {}",
                c.id,
                String::from_utf8_lossy(line)
            );
        }
    }

    /// `END` alone: the queue was empty. A consumer backs off, or stops if
    /// every producer had finished when it asked.
    fn missed(&mut self, ci: usize, p: Pending, now: u64) {
        let c = &mut self.conns[ci];
        if p.get != GetKind::Pop {
            c.reads.reply(p.queue, p.get, true, None);
        }
        if p.measured {
            self.counters.gets += 1;
            self.counters.misses += 1;
        }
        if matches!(c.role, Role::Consumer(_)) && p.get != GetKind::Close {
            if p.after_done {
                c.consumer_finished = true;
            } else if self.plan.miss_backoff > 0 {
                c.resume_at = now + self.plan.miss_backoff;
            }
        }
    }

    /// A `VALUE`: a message taken from the queue. A traced one is checked
    /// (`--verify`) and timed end to end; a reliable read now holds it open.
    fn took(
        &mut self,
        ci: usize,
        p: Pending,
        key: &[u8],
        data: &[u8],
        now: u64,
    ) -> Result<(), String> {
        let plan = &*self.plan;
        let c = &mut self.conns[ci];
        let name = &plan.names[p.queue as usize];
        let options = plan.get_options.get(p.get);
        if p.get == GetKind::Close || !protocol::key_matches(key, name, options) {
            return Err(format!(
                "VALUE for key {:?} in reply to get {:?}",
                String::from_utf8_lossy(key),
                String::from_utf8_lossy(&[name, options].concat())
            ));
        }
        self.counters.taken_all += 1;
        if p.measured {
            self.counters.gets += 1;
            self.counters.hits += 1;
        }
        let mut header = None;
        if plan.traced {
            header = match &mut self.consumer {
                Some(log) => log.check(c.id, p.queue, data, &plan.pattern, now),
                None => Header::read(data).filter(|h| h.run == plan.run),
            };
            if let Some(h) = header {
                if h.sent_ns >= plan.measure_start {
                    self.e2e
                        .saturating_record(now.saturating_sub(h.sent_ns).max(1));
                }
            }
        }
        if p.get != GetKind::Pop {
            let held = Held {
                queue: p.queue,
                msg: header.map(|h| (h.producer, h.seq)),
                sent_at: p.intended,
            };
            c.reads.reply(p.queue, p.get, true, Some(held));
        }
        Ok(())
    }

    /// Every answered request counts; a measured one also adds its bytes and
    /// its latency from when it was due.
    fn count_reply(&mut self, p: Pending, len: usize, now: u64) {
        let counters = &mut self.counters;
        counters.ops_all += 1;
        if p.measured {
            counters.ops += 1;
            counters.bytes_sent += u64::from(p.req_bytes);
            counters.bytes_received += len as u64;
            self.hist
                .saturating_record(now.saturating_sub(p.intended).max(1));
            self.last_complete = now;
        }
    }
}
