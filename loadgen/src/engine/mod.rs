//! The generator threads: each one drives its share of the connections with
//! one epoll loop.
//!
//! Why this shape: the server is what is being measured, so the client must
//! spend as little as possible per request and never stall a connection on
//! another. A thread owns its connections outright (buffers, in-flight queue,
//! random generator, histograms), so the hot path touches no lock and no
//! atomic except an occasional budget claim. Each wake-up reads every ready
//! socket once, parses all complete replies, refills the pipeline and issues
//! one `write` per connection. Per-request work is a few appends into a
//! reused buffer and one histogram record; nothing is allocated.
//!
//! Closed loop keeps `--pipeline` requests in flight per connection; latency
//! is reply time minus send time. Open loop walks the thread's slots of the
//! global [`Schedule`]; a request whose connection is full waits in that
//! connection's backlog, and its latency still counts from when it was due.
//!
//! # Layout
//! - [`plan`] — what the main thread hands the threads and gets back.
//! - [`conn`] — one connection's buffers and its socket I/O.
//! - [`pacing`] — when requests may go and how long to sleep.
//! - [`issue`] — encoding requests into a connection's pipeline.
//! - [`complete`] — accounting for each reply.
//! - [`failure`] — broken connections, reconnects, timeouts, giving up.
//! - [`churn`] — `--reconnect-every`: closing a connection on purpose and
//!   opening the next through the same reconnect path.
//! - [`interrupt`] — Ctrl-C.
//!
//! This file holds the [`Worker`] itself and its loop: one wake-up's work,
//! in order, and when the thread is done.

mod churn;
mod complete;
mod conn;
mod failure;
mod interrupt;
mod issue;
mod pacing;
mod plan;

use std::io;
use std::os::fd::AsRawFd;
use std::sync::atomic::Ordering;
use std::sync::mpsc::Sender;
use std::sync::Arc;

use hdrhistogram::Histogram;

use crate::poll::{self, Epoll, Timer};
use crate::schedule::{now_ns, Schedule};
use crate::stats::{new_hist, Counters};
use crate::verify::{ConsumerLog, ProducerLog};
use crate::workload::Rng;

use conn::{Conn, State};
pub use interrupt::{install_interrupt_handler, INTERRUPTED};
pub use plan::{ConnSpec, Msg, Plan, Role, Shared, ThreadOut};

pub const SECOND: u64 = 1_000_000_000;

const TIMER_TOKEN: u64 = u64::MAX;

/// One generator thread: its connections, its pacing, and everything it
/// counts until it reports.
pub struct Worker {
    index: usize,
    plan: Arc<Plan>,
    shared: Arc<Shared>,
    tx: Sender<Msg>,
    conns: Vec<Conn>,
    ep: Epoll,
    timer: Option<Timer>,
    sched: Option<Schedule>,
    rng: Rng,
    counters: Counters,
    hist: Histogram<u64>,
    e2e: Histogram<u64>,
    send_lag: Histogram<u64>,
    /// Set-up time of the connections opened in the measured window.
    setup: Histogram<u64>,
    interval: u64,
    stopping: bool,
    allowance: u64,
    last_complete: u64,
    producers: Vec<ProducerLog>,
    consumer: Option<ConsumerLog>,
    dirty: Vec<usize>,
    next_timeout_check: u64,
    /// Pairs: when consumers give up on queues that never run dry (0 = not
    /// yet decided, MAX = never or already done). Set `--timeout` after the
    /// last producer finished.
    consumer_deadline: u64,
    /// SIGINT seen: no new requests, not even scheduled ones.
    interrupted: bool,
    gets_in_doubt: u64,
    reconnects: u64,
    /// Connections in `State::Reconnecting`.
    reconnecting: usize,
    /// Whether any connection issues requests on its own (not a consumer).
    has_producers: bool,
    /// Connections given up for good.
    killed: usize,
    /// When the current run of empty polls began (0: not idle), for `--busy-poll`.
    idle_since: u64,
}

impl Worker {
    pub fn new(
        index: usize,
        plan: Arc<Plan>,
        shared: Arc<Shared>,
        tx: Sender<Msg>,
        specs: Vec<ConnSpec>,
    ) -> io::Result<Worker> {
        let ep = Epoll::new((specs.len() + 1).min(64))?;
        let mut conns = Vec::with_capacity(specs.len());
        let mut producers = Vec::new();
        let mut slots = Vec::new();
        for (i, s) in specs.into_iter().enumerate() {
            s.stream.set_nonblocking(true)?;
            ep.add(s.stream.as_raw_fd(), poll::IN | poll::ERR, i as u64)?;
            if let Some(slot) = s.slot {
                slots.push((slot, i));
            }
            let produces = !matches!(s.role, Role::Consumer(_));
            let producer_log = if plan.verify && produces {
                producers.push(ProducerLog {
                    id: s.id,
                    ..ProducerLog::default()
                });
                Some(producers.len() - 1)
            } else {
                None
            };
            conns.push(Conn::new(s, plan.pipeline, producer_log));
        }
        // A timerfd paces open-loop sends and times consumer back-off, both
        // finer than epoll_wait's millisecond timeout.
        let timer = if plan.rate.is_some() || plan.miss_backoff > 0 {
            let t = Timer::new()?;
            ep.add(t.fd, poll::IN, TIMER_TOKEN)?;
            Some(t)
        } else {
            None
        };
        let sched = plan.rate.map(|rate| {
            Schedule::new(
                plan.t0,
                rate,
                plan.sched_slots,
                slots,
                plan.open_limit,
                plan.end,
            )
        });
        let has_consumers = conns.iter().any(|c| matches!(c.role, Role::Consumer(_)));
        let has_producers = conns.iter().any(|c| !matches!(c.role, Role::Consumer(_)));
        let consumer = plan
            .verify
            .then(|| ConsumerLog::new(plan.run, plan.n_conns, plan.reliable));
        let rng = Rng::new(plan.seed ^ (index as u64).wrapping_mul(0x9E37_79B9));
        Ok(Worker {
            index,
            plan,
            shared,
            tx,
            conns,
            ep,
            timer,
            sched,
            rng,
            counters: Counters::default(),
            hist: new_hist(),
            e2e: new_hist(),
            send_lag: new_hist(),
            setup: new_hist(),
            interval: 0,
            stopping: false,
            allowance: 0,
            last_complete: 0,
            producers,
            consumer,
            dirty: Vec::new(),
            next_timeout_check: 0,
            consumer_deadline: if has_consumers { 0 } else { u64::MAX },
            idle_since: 0,
            interrupted: false,
            gets_in_doubt: 0,
            reconnects: 0,
            reconnecting: 0,
            has_producers,
            killed: 0,
        })
    }

    /// Runs until every connection is finished, then reports `Done`.
    pub fn run(mut self) {
        poll::tighten_timer_slack();
        self.start();
        loop {
            self.on_wake(now_ns());
            if self.finished() || !self.wait_and_serve() {
                break;
            }
        }
        self.report_done();
    }

    /// Waits for the common start time, then fills every pipeline.
    fn start(&mut self) {
        let start = self.plan.t0;
        while now_ns() < start {
            std::hint::spin_loop();
        }
        let now = now_ns();
        for ci in 0..self.conns.len() {
            self.fill(ci, now);
            self.flush(ci);
        }
    }

    /// Everything the clock drives, once per wake-up: interval reports, the
    /// end of the run, due requests, back-off expiry, reconnects, the
    /// consumers' stop, the top-up of marked connections, reply timeouts.
    fn on_wake(&mut self, now: u64) {
        self.report_intervals(now);
        self.notice_stop(now);
        self.pace_open_loop(now);
        if self.plan.miss_backoff > 0 {
            self.resume_backed_off_consumers(now);
        }
        if self.reconnecting > 0 {
            self.try_reconnects(now);
        }
        self.update_producers_done();
        self.check_consumer_deadline(now);
        self.flush_dirty(now);
        if now >= self.next_timeout_check {
            self.check_timeouts(now);
            self.next_timeout_check = now + SECOND / 10;
        }
    }

    /// Stops issuing at the end of the run or at Ctrl-C.
    fn notice_stop(&mut self, now: u64) {
        if let Some(end) = self.plan.end {
            if now >= end {
                self.stopping = true;
            }
        }
        if !self.interrupted && INTERRUPTED.load(Ordering::Relaxed) {
            self.interrupted = true;
            self.stopping = true;
        }
    }

    /// Whether every connection has finished. Once issuing may have ended,
    /// it first confirms what reliable reads still hold open.
    fn finished(&mut self) -> bool {
        // all_done() walks every connection; it can only be true once
        // issuing has stopped, in a consumers-only thread, or after a loss.
        if !(self.stopping || !self.has_producers || self.killed > 0) {
            return false;
        }
        if self.plan.reliable {
            self.close_reads(now_ns());
        }
        self.all_done()
    }

    /// Sleeps until a socket is ready or something is due, then serves what
    /// is ready; false if epoll failed.
    fn wait_and_serve(&mut self) -> bool {
        let wait_ms = self.poll_timeout_ms(now_ns());
        let mut ready: [(u32, u64); 64] = [(0, 0); 64];
        let mut n = 0;
        match self.ep.wait(wait_ms) {
            Ok(events) => {
                for ev in events {
                    if n < ready.len() {
                        ready[n] = ev;
                        n += 1;
                    }
                }
            }
            Err(e) => {
                eprintln!("mcq-loadgen: epoll_wait failed: {e}");
                return false;
            }
        }
        if n > 0 {
            self.idle_since = 0;
        }
        for &(events, token) in &ready[..n] {
            self.serve(events, token);
        }
        true
    }

    /// One ready event: the pacing timer (it only had to wake the thread),
    /// or a socket to write to or read from.
    fn serve(&mut self, events: u32, token: u64) {
        if token == TIMER_TOKEN {
            if let Some(t) = &self.timer {
                t.clear();
            }
            return;
        }
        let ci = token as usize;
        if self.conns[ci].state != State::Live {
            return;
        }
        if events & poll::OUT != 0 {
            self.flush(ci);
        }
        if events & (poll::IN | poll::ERR) != 0 {
            self.read(ci);
            if self.conns[ci].state == State::Live {
                let now = now_ns();
                if self.socket_spent(ci) {
                    self.retire(ci, now);
                } else {
                    self.fill(ci, now);
                    self.flush(ci);
                }
            }
        }
    }

    /// Sends the intervals that have ended.
    fn report_intervals(&mut self, now: u64) {
        let current = now.saturating_sub(self.plan.t0) / SECOND;
        while self.interval < current {
            self.send_interval(false);
            self.interval += 1;
        }
    }

    /// Sends what completed in the current interval and starts its
    /// histograms afresh.
    fn send_interval(&mut self, last: bool) {
        let hist = std::mem::replace(&mut self.hist, new_hist());
        let e2e = std::mem::replace(&mut self.e2e, new_hist());
        let _ = self.tx.send(Msg::Interval {
            thread: self.index,
            index: self.interval,
            last,
            counters: self.counters.clone(),
            hist,
            e2e,
        });
    }

    /// Sends the final, partial interval and the thread's totals.
    fn report_done(mut self) {
        self.report_intervals(now_ns());
        self.send_interval(true);
        let out = ThreadOut {
            counters: self.counters.clone(),
            send_lag: std::mem::replace(&mut self.send_lag, new_hist()),
            last_complete: self.last_complete,
            producers: std::mem::take(&mut self.producers),
            consumer: self.consumer.take(),
            gets_in_doubt: self.gets_in_doubt,
            reconnects: self.reconnects,
            // Given up, not merely down: a producer whose socket broke after
            // it had sent everything may end while still reconnecting, and
            // nothing it had to do was lost (its lost replies are counted).
            dead: self.conns.iter().filter(|c| c.state == State::Dead).count() as u64,
            setup: std::mem::replace(&mut self.setup, new_hist()),
        };
        let _ = self.tx.send(Msg::Done {
            thread: self.index,
            out: Box::new(out),
        });
    }

    /// Once issuing has stopped, a producer with nothing in flight or due
    /// tells the consumers it has finished.
    fn update_producers_done(&mut self) {
        if !self.stopping {
            return;
        }
        for c in &mut self.conns {
            if !c.producer_finished && c.inflight.is_empty() && c.backlog.is_empty() {
                c.producer_finished = true;
                self.shared.producers_active.fetch_sub(1, Ordering::AcqRel);
            }
        }
    }

    /// Whether the thread may end: every connection dead, finished, or a
    /// producer still reconnecting when nothing more is due. A connection
    /// retired by `--reconnect-every` has nothing in flight or held, so it
    /// is finished by the same rule as a live one.
    fn all_done(&self) -> bool {
        self.conns.iter().all(|c| {
            c.state == State::Dead
                || (c.state == State::Reconnecting
                    && self.stopping
                    && c.backlog.is_empty()
                    && !matches!(c.role, Role::Consumer(_)))
                || (c.inflight.is_empty()
                    && c.backlog.is_empty()
                    && c.parked.is_none()
                    && !c.claimed
                    && c.reads.held() == 0
                    && match c.role {
                        Role::Consumer(_) => c.consumer_finished,
                        _ => self.stopping,
                    })
        })
    }
}
