//! Putting requests into a connection's pipeline.
//!
//! Which request goes next depends on the connection's role: a producer or
//! mixed connection draws one per free pipeline slot (from its open-loop
//! backlog, or against the closed-loop budget), a consumer asks its queue
//! until it is told to back off or stop. A request is encoded straight into
//! the write buffer; a set's body is the verifiable pattern behind a header
//! that names it, so `--verify` can check it where it arrives. With reliable
//! reads a get may only go when its queue has none in flight, and what is
//! left open at the end is confirmed with a `/close`.

use std::sync::atomic::Ordering;

use crate::protocol::{self, GetKind};
use crate::workload::{Header, Workload, HEADER_LEN};

use super::conn::{Pending, State};
use super::{Role, Worker};

impl Worker {
    /// Tops up a connection's pipeline.
    pub(super) fn fill(&mut self, ci: usize, now: u64) {
        if self.conns[ci].state != State::Live {
            return;
        }
        match self.conns[ci].role {
            Role::Mixed | Role::Producer(_) => self.fill_drawn(ci, now),
            Role::Consumer(queue) => self.fill_consumer(ci, queue, now),
        }
    }

    /// A producer or mixed connection: one drawn request per free slot.
    fn fill_drawn(&mut self, ci: usize, now: u64) {
        while self.conns[ci].inflight.len() < self.plan.pipeline && self.has_room(ci) {
            let Some((intended, is_set, queue)) = self.next_request(ci, now) else {
                break;
            };
            let c = &mut self.conns[ci];
            if self.plan.reliable && !is_set && !c.reads.may_send(queue) {
                c.parked = Some((intended, queue));
                break;
            }
            self.issue(ci, intended, now, is_set, queue);
        }
    }

    /// The next request of a producer or mixed connection, (when it counts
    /// from, is a set, queue): a parked get first, then a due one (open
    /// loop) or a new one the budget allows (closed loop); None when there
    /// is none.
    fn next_request(&mut self, ci: usize, now: u64) -> Option<(u64, bool, u32)> {
        if let Some((due, queue)) = self.conns[ci].parked.take() {
            // Closed loop: its latency counts from when it goes.
            let intended = if self.sched.is_some() { due } else { now };
            return Some((intended, false, queue));
        }
        let intended = if self.sched.is_some() {
            self.conns[ci].backlog.pop_front()?
        } else if std::mem::take(&mut self.conns[ci].claimed) || self.claim(now) {
            now
        } else {
            return None;
        };
        let (is_set, queue) = self.choose(ci);
        Some((intended, is_set, queue))
    }

    /// A consumer: gets until the pipeline is full, unless it has finished
    /// or is backing off after a miss.
    fn fill_consumer(&mut self, ci: usize, queue: u32, now: u64) {
        let c = &self.conns[ci];
        if c.consumer_finished || c.resume_at != 0 {
            return;
        }
        while self.conns[ci].inflight.len() < self.plan.pipeline
            && self.has_room(ci)
            && (!self.plan.reliable || self.conns[ci].reads.may_send(queue))
        {
            self.issue(ci, now, now, false, queue);
        }
    }

    /// Draws the next request of a mixed (set/get/mixed workload)
    /// connection: (is a set, queue).
    fn choose(&mut self, ci: usize) -> (bool, u32) {
        let plan = &*self.plan;
        match self.conns[ci].role {
            Role::Producer(q) => (true, q),
            Role::Consumer(q) => (false, q),
            Role::Mixed => {
                let is_set = match plan.workload {
                    Workload::Set => true,
                    Workload::Get => false,
                    _ => self.rng.unit() < plan.set_ratio,
                };
                (is_set, plan.keys.pick(&mut self.rng))
            }
        }
    }

    /// Reliable reads: once a connection is done issuing and every reply is
    /// in, confirms what it still holds open with a `/close` per queue, so
    /// that the run leaves nothing open (the final drain and the next run
    /// find it confirmed, not waiting for a disconnect to put it back).
    pub(super) fn close_reads(&mut self, now: u64) {
        for ci in 0..self.conns.len() {
            let c = &self.conns[ci];
            let done = match c.role {
                Role::Consumer(_) => c.consumer_finished,
                _ => self.stopping && c.backlog.is_empty() && c.parked.is_none(),
            };
            if c.state != State::Live || !done || !c.inflight.is_empty() || c.reads.held() == 0 {
                continue;
            }
            for queue in c.reads.to_close() {
                self.issue_close(ci, queue, now);
            }
            self.flush(ci);
        }
    }

    pub(super) fn issue_close(&mut self, ci: usize, queue: u32, now: u64) {
        let plan = &*self.plan;
        let c = &mut self.conns[ci];
        c.reads.send_close(queue);
        let start = c.wbuf.len();
        protocol::encode_get(
            &mut c.wbuf,
            &plan.names[queue as usize],
            plan.get_options.get(GetKind::Close),
        );
        let pending = Pending {
            intended: now,
            seq: 0,
            queue,
            req_bytes: (c.wbuf.len() - start) as u32,
            is_set: false,
            get: GetKind::Close,
            measured: false,
            after_done: false,
        };
        c.await_reply(pending, now);
    }

    /// Encodes one request, due at `intended`, and records it as in flight.
    fn issue(&mut self, ci: usize, intended: u64, now: u64, is_set: bool, queue: u32) {
        let start = self.conns[ci].wbuf.len();
        let (seq, get) = if is_set {
            (self.encode_set(ci, intended, queue), GetKind::Pop)
        } else {
            (0, self.encode_get(ci, queue))
        };
        let plan = &*self.plan;
        let c = &mut self.conns[ci];
        let measured = intended >= plan.measure_start && plan.end.is_none_or(|end| intended < end);
        let consumer = matches!(c.role, Role::Consumer(_));
        if measured && plan.rate.is_some() && !consumer {
            self.send_lag
                .saturating_record(now.saturating_sub(intended).max(1));
        }
        let after_done = consumer && self.shared.producers_active.load(Ordering::Acquire) == 0;
        let pending = Pending {
            intended,
            seq,
            queue,
            req_bytes: (c.wbuf.len() - start) as u32,
            is_set,
            get,
            measured,
            after_done,
        };
        c.socket_requests += 1;
        c.await_reply(pending, now);
    }

    /// Appends a set of the connection's next message; returns its sequence
    /// number. Traced, the body starts with a header naming the message.
    fn encode_set(&mut self, ci: usize, intended: u64, queue: u32) -> u64 {
        let plan = &*self.plan;
        let c = &mut self.conns[ci];
        let min = if plan.traced { HEADER_LEN } else { 0 };
        let len = plan.value_size.sample(&mut self.rng, min);
        let seq = c.seq;
        c.seq += 1;
        protocol::begin_set(&mut c.wbuf, &plan.names[queue as usize], len);
        if plan.traced {
            let at = c.wbuf.len();
            c.wbuf.resize(at + HEADER_LEN, 0);
            Header {
                run: plan.run,
                producer: c.id,
                queue,
                seq,
                sent_ns: intended,
            }
            .write(&mut c.wbuf[at..]);
            c.wbuf
                .extend_from_slice(plan.pattern.slice(c.id, seq, len - HEADER_LEN));
        } else {
            c.wbuf.extend_from_slice(plan.pattern.slice(c.id, seq, len));
        }
        protocol::finish_set(&mut c.wbuf);
        if let Some(p) = c.producer_log {
            self.producers[p].sent = seq + 1;
        }
        seq
    }

    /// Appends a get, reliable or plain; returns which kind it is.
    fn encode_get(&mut self, ci: usize, queue: u32) -> GetKind {
        let plan = &*self.plan;
        let c = &mut self.conns[ci];
        let get = if plan.reliable {
            c.reads.send(queue)
        } else {
            GetKind::Pop
        };
        protocol::encode_get(
            &mut c.wbuf,
            &plan.names[queue as usize],
            plan.get_options.get(get),
        );
        get
    }
}
