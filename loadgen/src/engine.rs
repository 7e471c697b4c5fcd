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

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::Sender;
use std::sync::Arc;
use std::time::Duration;

use hdrhistogram::Histogram;

use crate::poll::{self, Epoll, Timer};
use crate::protocol::{self, parse_reply, GetKind, GetOptions, Parsed, Reply};
use crate::reliable::{Held, Reads};
use crate::schedule::{now_ns, Schedule};
use crate::stats::{new_hist, Abort, Counters};
use crate::verify::{ConsumerLog, ProducerLog};
use crate::workload::{Header, KeyChooser, Pattern, Rng, SizeDist, Workload, HEADER_LEN};

pub const SECOND: u64 = 1_000_000_000;

/// Set by SIGINT/SIGTERM: stop issuing, finish what is in flight, report.
pub static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_interrupt(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::Relaxed);
    // A second signal kills the process the default way.
    // SAFETY: restoring the default disposition is async-signal-safe.
    unsafe {
        libc::signal(libc::SIGINT, libc::SIG_DFL);
        libc::signal(libc::SIGTERM, libc::SIG_DFL);
    }
}

/// Makes Ctrl-C end the run early with a report instead of losing it.
pub fn install_interrupt_handler() {
    let handler = on_interrupt as extern "C" fn(libc::c_int) as libc::sighandler_t;
    // SAFETY: the handler only touches an atomic and calls signal().
    unsafe {
        libc::signal(libc::SIGINT, handler);
        libc::signal(libc::SIGTERM, handler);
    }
}
const TIMER_TOKEN: u64 = u64::MAX;
/// Below this distance to a deadline, poll and spin instead of sleeping.
const SPIN_NS: u64 = 40_000;
/// Budget claimed from the shared counter at a time (closed loop, --requests).
const CLAIM_CHUNK: u64 = 16;
const READ_CHUNK: usize = 64 * 1024;
/// Pause between reconnection attempts.
const RETRY_NS: u64 = 50_000_000;

/// Read-only description of the run, shared by all threads.
pub struct Plan {
    pub workload: Workload,
    pub set_ratio: f64,
    pub pipeline: usize,
    pub value_size: SizeDist,
    pub traced: bool,
    pub verify: bool,
    pub names: Vec<Vec<u8>>,
    /// What follows a queue's name in the key of each kind of get (and in
    /// the `VALUE` that echoes it): `/t=<ms>` with --get-wait.
    pub get_options: GetOptions,
    pub keys: KeyChooser,
    pub pattern: Pattern,
    pub run: u32,
    pub n_conns: u32,
    pub t0: u64,
    pub measure_start: u64,
    pub end: Option<u64>,
    pub rate: Option<f64>,
    pub sched_slots: u64,
    pub open_limit: Option<u64>,
    pub timeout: u64,
    pub miss_backoff: u64,
    /// Nanoseconds to keep polling before sleeping in `epoll_wait`.
    pub busy_poll: u64,
    /// Re-establish connections the server closed (crash tests).
    pub reconnect: bool,
    /// Gets are reliable reads (`/open`, `/close/open`; see [`crate::reliable`]).
    pub reliable: bool,
    pub seed: u64,
}

/// Mutable state shared by all threads (touched rarely).
pub struct Shared {
    /// Measured requests still to issue (closed loop with --requests).
    pub budget: Option<AtomicU64>,
    /// Producer connections (pairs) that may still produce.
    pub producers_active: AtomicUsize,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// set/get chosen per request (mixed, set and get workloads).
    Mixed,
    Producer(u32),
    Consumer(u32),
}

/// A connected socket and what it is for.
pub struct ConnSpec {
    pub id: u32,
    pub stream: TcpStream,
    pub server: String,
    pub addr: SocketAddr,
    pub role: Role,
    /// Its slot in the open-loop schedule, if it is scheduled.
    pub slot: Option<u64>,
}

/// What a thread reports to the main thread.
// One message per thread per second: its size does not matter.
#[allow(clippy::large_enum_variant)]
pub enum Msg {
    /// Everything completed during interval `index` (1 s each from t0);
    /// `counters` are cumulative. `last` marks the thread's final, partial
    /// interval.
    Interval {
        thread: usize,
        index: u64,
        last: bool,
        counters: Counters,
        hist: Histogram<u64>,
        e2e: Histogram<u64>,
    },
    Done {
        thread: usize,
        out: Box<ThreadOut>,
    },
}

pub struct ThreadOut {
    pub counters: Counters,
    /// Open loop: how late requests were written, relative to when they were
    /// due (generator lateness plus waiting for a free pipeline slot).
    pub send_lag: Histogram<u64>,
    /// Completion time of the last measured request.
    pub last_complete: u64,
    pub producers: Vec<ProducerLog>,
    pub consumer: Option<ConsumerLog>,
    /// `get`s in flight on connections that broke: each may have popped a
    /// message whose reply was lost (at-most-once delivery).
    pub gets_in_doubt: u64,
    pub reconnects: u64,
    /// Connections given up for good.
    pub dead: u64,
}

#[derive(Clone, Copy)]
struct Pending {
    intended: u64,
    seq: u64,
    queue: u32,
    req_bytes: u32,
    is_set: bool,
    /// For a get: which one.
    get: GetKind,
    measured: bool,
    /// Issued after every producer had finished (pairs).
    after_done: bool,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum State {
    Live,
    /// Lost its socket; `--reconnect` is trying to get a new one.
    Reconnecting,
    Dead,
}

struct Conn {
    id: u32,
    stream: TcpStream,
    server: String,
    addr: SocketAddr,
    down_since: u64,
    retry_at: u64,
    role: Role,
    state: State,
    rbuf: Vec<u8>,
    rstart: usize,
    rend: usize,
    wbuf: Vec<u8>,
    wpos: usize,
    want_out: bool,
    inflight: VecDeque<Pending>,
    backlog: VecDeque<u64>,
    /// Reliable reads: what this connection holds open, by queue.
    reads: Reads,
    /// Reliable reads: a get drawn for a queue that already had one in
    /// flight, (intended time, queue); it goes out when that reply is in,
    /// and nothing drawn after it goes out before it.
    parked: Option<(u64, u32)>,
    seq: u64,
    producer_log: Option<usize>,
    /// Producer: has stopped for good and said so.
    producer_finished: bool,
    /// Consumer: has seen its queue empty after all producers finished.
    consumer_finished: bool,
    resume_at: u64,
    last_rx: u64,
    dirty: bool,
}

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
            conns.push(Conn {
                id: s.id,
                stream: s.stream,
                server: s.server,
                addr: s.addr,
                down_since: 0,
                retry_at: 0,
                role: s.role,
                state: State::Live,
                rbuf: vec![0; READ_CHUNK],
                rstart: 0,
                rend: 0,
                wbuf: Vec::with_capacity(64 * 1024),
                wpos: 0,
                want_out: false,
                inflight: VecDeque::with_capacity(plan.pipeline),
                backlog: VecDeque::new(),
                reads: Reads::default(),
                parked: None,
                seq: 0,
                producer_log,
                producer_finished: !matches!(s.role, Role::Producer(_)),
                consumer_finished: !matches!(s.role, Role::Consumer(_)),
                resume_at: 0,
                last_rx: 0,
                dirty: false,
            });
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
        let start = self.plan.t0;
        while now_ns() < start {
            std::hint::spin_loop();
        }
        let now = now_ns();
        for ci in 0..self.conns.len() {
            self.fill(ci, now);
            self.flush(ci);
        }
        loop {
            let now = now_ns();
            self.report_intervals(now);
            if let Some(end) = self.plan.end {
                if now >= end {
                    self.stopping = true;
                }
            }
            if !self.interrupted && INTERRUPTED.load(Ordering::Relaxed) {
                self.interrupted = true;
                self.stopping = true;
            }
            if self.sched.is_some() && !self.interrupted {
                self.schedule_due(now);
            }
            if self.sched.is_some()
                && (self.interrupted || self.plan.end.is_some_and(|end| now >= end))
            {
                self.drop_backlog();
            }
            if self.plan.miss_backoff > 0 {
                for ci in 0..self.conns.len() {
                    let c = &self.conns[ci];
                    if matches!(c.role, Role::Consumer(_)) && c.resume_at != 0 && c.resume_at <= now
                    {
                        self.conns[ci].resume_at = 0;
                        self.mark_dirty(ci);
                    }
                }
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
            // all_done() walks every connection; it can only be true once
            // issuing has stopped, in a consumers-only thread, or after a loss.
            if self.stopping || !self.has_producers || self.killed > 0 {
                if self.plan.reliable {
                    self.close_reads(now_ns());
                }
                if self.all_done() {
                    break;
                }
            }
            let now = now_ns();
            let mut wait_ms = self.wait_ms(now);
            if wait_ms != 0 && self.plan.busy_poll > 0 {
                // Poll instead of sleeping for a little while: a reply is
                // usually microseconds away, and waking a halted (virtual)
                // CPU costs more than the spin.
                if self.idle_since == 0 {
                    self.idle_since = now;
                }
                if now - self.idle_since < self.plan.busy_poll {
                    wait_ms = 0;
                }
            }
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
                    break;
                }
            }
            if n > 0 {
                self.idle_since = 0;
            }
            for &(events, token) in &ready[..n] {
                if token == TIMER_TOKEN {
                    if let Some(t) = &self.timer {
                        t.clear();
                    }
                    continue;
                }
                let ci = token as usize;
                if self.conns[ci].state != State::Live {
                    continue;
                }
                if events & poll::OUT != 0 {
                    self.flush(ci);
                }
                if events & (poll::IN | poll::ERR) != 0 {
                    self.read(ci);
                    if self.conns[ci].state == State::Live {
                        let now = now_ns();
                        self.fill(ci, now);
                        self.flush(ci);
                    }
                }
            }
        }
        let now = now_ns();
        self.report_intervals(now);
        let idx = self.interval;
        let hist = std::mem::replace(&mut self.hist, new_hist());
        let e2e = std::mem::replace(&mut self.e2e, new_hist());
        let _ = self.tx.send(Msg::Interval {
            thread: self.index,
            index: idx,
            last: true,
            counters: self.counters.clone(),
            hist,
            e2e,
        });
        let out = ThreadOut {
            counters: self.counters.clone(),
            send_lag: std::mem::replace(&mut self.send_lag, new_hist()),
            last_complete: self.last_complete,
            producers: std::mem::take(&mut self.producers),
            consumer: self.consumer.take(),
            gets_in_doubt: self.gets_in_doubt,
            reconnects: self.reconnects,
            dead: self.conns.iter().filter(|c| c.state != State::Live).count() as u64,
        };
        let _ = self.tx.send(Msg::Done {
            thread: self.index,
            out: Box::new(out),
        });
    }

    /// How long `epoll_wait` may sleep: until the next interval boundary,
    /// due request or backoff expiry; 0 (spin) when one is imminent.
    fn wait_ms(&mut self, now: u64) -> i32 {
        let mut deadline = self.plan.t0 + (self.interval + 1) * SECOND;
        deadline = deadline.min(self.next_timeout_check);
        if self.reconnecting > 0 {
            deadline = deadline.min(now + RETRY_NS);
        }
        let mut precise = None;
        if let Some(s) = &self.sched {
            if let Some((_, due, _)) = s.peek() {
                precise = Some(due);
            }
        }
        if self.plan.miss_backoff > 0 {
            for c in &self.conns {
                if c.resume_at != 0 {
                    precise = Some(precise.map_or(c.resume_at, |p: u64| p.min(c.resume_at)));
                }
            }
        }
        if let Some(p) = precise {
            if p <= now + SPIN_NS {
                return 0;
            }
            if p < deadline {
                if let Some(t) = &self.timer {
                    // Wake a little early and spin the rest of the way.
                    if t.arm_at(p - SPIN_NS / 2).is_ok() {
                        return (deadline.saturating_sub(now) / 1_000_000 + 1) as i32;
                    }
                }
                deadline = p;
            }
        }
        if deadline <= now {
            return 0;
        }
        ((deadline - now).div_ceil(1_000_000)).min(i32::MAX as u64) as i32
    }

    fn report_intervals(&mut self, now: u64) {
        let current = now.saturating_sub(self.plan.t0) / SECOND;
        while self.interval < current {
            let hist = std::mem::replace(&mut self.hist, new_hist());
            let e2e = std::mem::replace(&mut self.e2e, new_hist());
            let _ = self.tx.send(Msg::Interval {
                thread: self.index,
                index: self.interval,
                last: false,
                counters: self.counters.clone(),
                hist,
                e2e,
            });
            self.interval += 1;
        }
    }

    fn mark_dirty(&mut self, ci: usize) {
        if !self.conns[ci].dirty {
            self.conns[ci].dirty = true;
            self.dirty.push(ci);
        }
    }

    fn flush_dirty(&mut self, now: u64) {
        while let Some(ci) = self.dirty.pop() {
            self.conns[ci].dirty = false;
            self.fill(ci, now);
            self.flush(ci);
        }
    }

    fn schedule_due(&mut self, now: u64) {
        let Some(sched) = self.sched.as_mut() else {
            return;
        };
        while let Some((_, due, ci)) = sched.peek() {
            if due > now {
                break;
            }
            sched.advance();
            if self.conns[ci].state != State::Dead {
                self.conns[ci].backlog.push_back(due);
                if !self.conns[ci].dirty {
                    self.conns[ci].dirty = true;
                    self.dirty.push(ci);
                }
            }
        }
        if sched.peek().is_none() {
            self.stopping = true;
        }
    }

    /// Open loop, once the run is over: requests still waiting for a free
    /// pipeline slot are never sent, only counted (`unsent`). Sending them
    /// late would stretch the run past `--duration` by as long as the
    /// backlog takes to drain, which is unbounded when the server cannot
    /// keep the rate.
    fn drop_backlog(&mut self) {
        let start = self.plan.measure_start;
        for c in &mut self.conns {
            let measured = c.backlog.iter().filter(|&&due| due >= start).count() as u64;
            self.counters.unsent += measured;
            c.backlog.clear();
            if let Some((due, _)) = c.parked.take() {
                self.counters.unsent += u64::from(due >= start);
            }
        }
    }

    /// Whether a closed-loop request may be issued now.
    fn claim(&mut self, now: u64) -> bool {
        if self.stopping {
            return false;
        }
        if let Some(end) = self.plan.end {
            if now >= end {
                self.stopping = true;
                return false;
            }
        }
        let Some(budget) = &self.shared.budget else {
            return true;
        };
        if now < self.plan.measure_start {
            return true;
        }
        if self.allowance == 0 {
            let got = budget
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| {
                    Some(b.saturating_sub(CLAIM_CHUNK))
                })
                .unwrap_or(0);
            self.allowance = got.min(CLAIM_CHUNK);
            if self.allowance == 0 {
                self.stopping = true;
                return false;
            }
        }
        self.allowance -= 1;
        true
    }

    /// Tops up a connection's pipeline.
    fn fill(&mut self, ci: usize, now: u64) {
        if self.conns[ci].state != State::Live {
            return;
        }
        let depth = self.plan.pipeline;
        match self.conns[ci].role {
            Role::Mixed | Role::Producer(_) => {
                while self.conns[ci].inflight.len() < depth {
                    let (intended, op) = match self.conns[ci].parked.take() {
                        // Closed loop: its latency counts from when it goes.
                        Some((due, queue)) => {
                            let intended = if self.sched.is_some() { due } else { now };
                            (intended, (false, queue))
                        }
                        None => {
                            let intended = if self.sched.is_some() {
                                match self.conns[ci].backlog.pop_front() {
                                    Some(due) => due,
                                    None => break,
                                }
                            } else if self.claim(now) {
                                now
                            } else {
                                break;
                            };
                            (intended, self.choose(ci))
                        }
                    };
                    let (is_set, queue) = op;
                    let c = &mut self.conns[ci];
                    if self.plan.reliable && !is_set && !c.reads.may_send(queue) {
                        c.parked = Some((intended, queue));
                        break;
                    }
                    self.issue(ci, intended, now, is_set, queue);
                }
            }
            Role::Consumer(queue) => {
                let c = &self.conns[ci];
                if c.consumer_finished || c.resume_at != 0 {
                    return;
                }
                while self.conns[ci].inflight.len() < depth
                    && (!self.plan.reliable || self.conns[ci].reads.may_send(queue))
                {
                    self.issue(ci, now, now, false, queue);
                }
            }
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
    fn close_reads(&mut self, now: u64) {
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

    fn issue_close(&mut self, ci: usize, queue: u32, now: u64) {
        let plan = &*self.plan;
        let c = &mut self.conns[ci];
        c.reads.send_close(queue);
        let start = c.wbuf.len();
        protocol::encode_get(
            &mut c.wbuf,
            &plan.names[queue as usize],
            plan.get_options.get(GetKind::Close),
        );
        if c.inflight.is_empty() {
            c.last_rx = now;
        }
        c.inflight.push_back(Pending {
            intended: now,
            seq: 0,
            queue,
            req_bytes: (c.wbuf.len() - start) as u32,
            is_set: false,
            get: GetKind::Close,
            measured: false,
            after_done: false,
        });
    }

    fn issue(&mut self, ci: usize, intended: u64, now: u64, is_set: bool, queue: u32) {
        let plan = &*self.plan;
        let c = &mut self.conns[ci];
        let name = &plan.names[queue as usize];
        let start = c.wbuf.len();
        let mut seq = 0;
        let mut get = GetKind::Pop;
        if is_set {
            let min = if plan.traced { HEADER_LEN } else { 0 };
            let len = plan.value_size.sample(&mut self.rng, min);
            seq = c.seq;
            c.seq += 1;
            protocol::begin_set(&mut c.wbuf, name, len);
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
        } else {
            get = if plan.reliable {
                c.reads.send(queue)
            } else {
                GetKind::Pop
            };
            protocol::encode_get(&mut c.wbuf, name, plan.get_options.get(get));
        }
        if c.inflight.is_empty() {
            c.last_rx = now;
        }
        let measured = intended >= plan.measure_start && plan.end.is_none_or(|end| intended < end);
        if measured && plan.rate.is_some() && !matches!(c.role, Role::Consumer(_)) {
            self.send_lag
                .saturating_record(now.saturating_sub(intended).max(1));
        }
        let after_done = matches!(c.role, Role::Consumer(_))
            && self.shared.producers_active.load(Ordering::Acquire) == 0;
        c.inflight.push_back(Pending {
            intended,
            seq,
            queue,
            req_bytes: (c.wbuf.len() - start) as u32,
            is_set,
            get,
            measured,
            after_done,
        });
    }

    fn flush(&mut self, ci: usize) {
        let c = &mut self.conns[ci];
        if c.state != State::Live {
            return;
        }
        while c.wpos < c.wbuf.len() {
            match c.stream.write(&c.wbuf[c.wpos..]) {
                Ok(0) => {
                    self.abort(ci, Abort::Closed, "write returned 0".into());
                    return;
                }
                Ok(n) => c.wpos += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if !c.want_out {
                        c.want_out = true;
                        let fd = c.stream.as_raw_fd();
                        let _ = self
                            .ep
                            .modify(fd, poll::IN | poll::OUT | poll::ERR, ci as u64);
                    }
                    return;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    self.abort(ci, Abort::Closed, format!("write failed: {e}"));
                    return;
                }
            }
        }
        c.wbuf.clear();
        c.wpos = 0;
        if c.want_out {
            c.want_out = false;
            let fd = c.stream.as_raw_fd();
            let _ = self.ep.modify(fd, poll::IN | poll::ERR, ci as u64);
        }
    }

    fn read(&mut self, ci: usize) {
        loop {
            let c = &mut self.conns[ci];
            if c.rbuf.len() - c.rend < READ_CHUNK / 4 {
                if c.rstart > 0 {
                    c.rbuf.copy_within(c.rstart..c.rend, 0);
                    c.rend -= c.rstart;
                    c.rstart = 0;
                }
                if c.rbuf.len() - c.rend < READ_CHUNK / 4 {
                    let grow = c.rbuf.len();
                    c.rbuf.resize(c.rbuf.len() + grow, 0);
                }
            }
            let space = c.rbuf.len() - c.rend;
            let n = match c.stream.read(&mut c.rbuf[c.rend..]) {
                Ok(0) => {
                    let msg = if c.inflight.is_empty() {
                        "server closed the connection".to_string()
                    } else {
                        format!(
                            "server closed the connection with {} requests outstanding",
                            c.inflight.len()
                        )
                    };
                    self.abort(ci, Abort::Closed, msg);
                    return;
                }
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    self.abort(ci, Abort::Closed, format!("read failed: {e}"));
                    return;
                }
            };
            c.rend += n;
            let now = now_ns();
            c.last_rx = now;
            if !self.parse_replies(ci, now) {
                return;
            }
            if n < space {
                return;
            }
        }
    }

    /// Consumes every complete reply in the buffer; false if the connection
    /// was aborted.
    fn parse_replies(&mut self, ci: usize, now: u64) -> bool {
        loop {
            let c = &mut self.conns[ci];
            if c.rstart == c.rend {
                c.rstart = 0;
                c.rend = 0;
                return true;
            }
            // Split borrows: the reply borrows rbuf while we update the rest.
            let rbuf = std::mem::take(&mut c.rbuf);
            let (rstart, rend) = (c.rstart, c.rend);
            let outcome = match parse_reply(&rbuf[rstart..rend]) {
                Parsed::Incomplete { need } => {
                    let c = &mut self.conns[ci];
                    if need > rbuf.len() - rstart {
                        // A large VALUE: make room for all of it.
                        let mut rbuf = rbuf;
                        rbuf.copy_within(rstart..rend, 0);
                        let new_len = (need + READ_CHUNK).max(rbuf.len());
                        rbuf.resize(new_len, 0);
                        c.rbuf = rbuf;
                        c.rend = rend - rstart;
                        c.rstart = 0;
                    } else {
                        c.rbuf = rbuf;
                    }
                    return true;
                }
                Parsed::Desync(msg) => Err(msg),
                Parsed::Reply { reply, len } => self.complete(ci, reply, len, now).map(|_| len),
            };
            self.conns[ci].rbuf = rbuf;
            match outcome {
                Ok(len) => self.conns[ci].rstart += len,
                Err(msg) => {
                    self.abort(ci, Abort::Desync, format!("protocol desync: {msg}"));
                    return false;
                }
            }
        }
    }

    /// Accounts for one reply to the oldest outstanding request.
    fn complete(
        &mut self,
        ci: usize,
        reply: Reply<'_>,
        len: usize,
        now: u64,
    ) -> Result<(), String> {
        let plan = &*self.plan;
        let c = &mut self.conns[ci];
        let Some(p) = c.inflight.pop_front() else {
            return Err("reply received with no request outstanding".into());
        };
        let counters = &mut self.counters;
        let m = p.measured;
        match (p.is_set, reply) {
            (true, Reply::Stored) => {
                counters.stored_all += 1;
                if m {
                    counters.sets += 1;
                }
                if let Some(pl) = c.producer_log {
                    self.producers[pl].acked.set(p.seq);
                }
            }
            (_, Reply::Error(kind, line)) => {
                if m {
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
            (false, Reply::End) => {
                if p.get != GetKind::Pop {
                    c.reads.reply(p.queue, p.get, true, None);
                }
                if m {
                    counters.gets += 1;
                    counters.misses += 1;
                }
                if matches!(c.role, Role::Consumer(_)) && p.get != GetKind::Close {
                    if p.after_done {
                        c.consumer_finished = true;
                    } else if plan.miss_backoff > 0 {
                        c.resume_at = now + plan.miss_backoff;
                    }
                }
            }
            (false, Reply::Value { key, data, .. }) => {
                let name = &plan.names[p.queue as usize];
                let options = plan.get_options.get(p.get);
                if p.get == GetKind::Close || !protocol::key_matches(key, name, options) {
                    return Err(format!(
                        "VALUE for key {:?} in reply to get {:?}",
                        String::from_utf8_lossy(key),
                        String::from_utf8_lossy(&[name, options].concat())
                    ));
                }
                counters.taken_all += 1;
                if m {
                    counters.gets += 1;
                    counters.hits += 1;
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
            }
            (true, other) => {
                return Err(format!("{other:?} in reply to a set"));
            }
            (false, Reply::Stored) => {
                return Err("STORED in reply to a get".into());
            }
        }
        counters.ops_all += 1;
        if m {
            counters.ops += 1;
            counters.bytes_sent += u64::from(p.req_bytes);
            counters.bytes_received += len as u64;
            self.hist
                .saturating_record(now.saturating_sub(p.intended).max(1));
            self.last_complete = now;
        }
        Ok(())
    }

    fn abort(&mut self, ci: usize, kind: Abort, msg: String) {
        let now = now_ns();
        let reconnect = self.plan.reconnect && kind != Abort::Desync;
        let c = &mut self.conns[ci];
        if c.state != State::Live {
            return;
        }
        eprintln!(
            "mcq-loadgen: connection {} to {}: {msg}; {}",
            c.id,
            c.server,
            if reconnect {
                "reconnecting"
            } else {
                "closing it"
            }
        );
        let _ = self.ep.delete(c.stream.as_raw_fd());
        let _ = c.stream.shutdown(std::net::Shutdown::Both);
        // Sets in flight stay neither acknowledged nor refused: in doubt.
        // A plain get in flight may have popped a message whose reply is
        // lost; a reliable one may have opened one, which the server puts
        // back, as it does what this connection held open.
        for p in &c.inflight {
            match (p.is_set, p.get) {
                (true, _) | (false, GetKind::Close) => {}
                (false, GetKind::Pop) => self.gets_in_doubt += 1,
                (false, GetKind::Open | GetKind::CloseOpen) => {
                    if let Some(log) = &mut self.consumer {
                        log.open_in_doubt(p.queue, p.intended);
                    }
                }
            }
        }
        for held in c.reads.disconnect() {
            if let (Some(log), Some(msg)) = (&mut self.consumer, held.msg) {
                log.open_at_disconnect(c.id, held.queue, msg, held.sent_at);
            }
        }
        if let Some((due, _)) = c.parked.take() {
            // Open loop: still due, drawn again later. Closed loop: gone,
            // like the requests in flight.
            if self.sched.is_some() {
                c.backlog.push_front(due);
            }
        }
        c.inflight.clear();
        c.rstart = 0;
        c.rend = 0;
        c.wbuf.clear();
        c.wpos = 0;
        c.want_out = false;
        self.counters.abort(kind);
        if reconnect {
            // The open-loop backlog is kept: those requests are still due,
            // and their latency will include the outage.
            c.state = State::Reconnecting;
            c.down_since = now;
            c.retry_at = now + RETRY_NS;
            self.reconnecting += 1;
        } else {
            self.kill(ci);
        }
    }

    /// Gives a connection up for good.
    fn kill(&mut self, ci: usize) {
        let c = &mut self.conns[ci];
        if c.state == State::Reconnecting {
            self.reconnecting -= 1;
        }
        c.state = State::Dead;
        self.killed += 1;
        c.inflight.clear();
        c.backlog.clear();
        c.parked = None;
        c.consumer_finished = true;
        if !c.producer_finished {
            c.producer_finished = true;
            self.shared.producers_active.fetch_sub(1, Ordering::AcqRel);
        }
    }

    fn try_reconnects(&mut self, now: u64) {
        for ci in 0..self.conns.len() {
            let c = &self.conns[ci];
            if c.state != State::Reconnecting || now < c.retry_at {
                continue;
            }
            if now - c.down_since > self.plan.timeout {
                eprintln!(
                    "mcq-loadgen: connection {} to {}: could not reconnect within {:.1} s; giving up",
                    c.id,
                    c.server,
                    self.plan.timeout as f64 / 1e9
                );
                self.kill(ci);
                continue;
            }
            let stream = TcpStream::connect_timeout(&c.addr, Duration::from_millis(100))
                .and_then(|s| s.set_nodelay(true).and(s.set_nonblocking(true)).map(|_| s));
            let c = &mut self.conns[ci];
            match stream {
                Ok(stream) => {
                    if self
                        .ep
                        .add(stream.as_raw_fd(), poll::IN | poll::ERR, ci as u64)
                        .is_err()
                    {
                        c.retry_at = now + RETRY_NS;
                        continue;
                    }
                    eprintln!(
                        "mcq-loadgen: connection {} to {}: reconnected after {:.2} s",
                        c.id,
                        c.server,
                        (now - c.down_since) as f64 / 1e9
                    );
                    c.stream = stream;
                    c.state = State::Live;
                    c.last_rx = now;
                    self.reconnecting -= 1;
                    self.reconnects += 1;
                    self.mark_dirty(ci);
                }
                Err(_) => c.retry_at = now_ns() + RETRY_NS,
            }
        }
    }

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

    /// A consumer normally stops at its first miss after all producers are
    /// done. A server that is not a queue (memcached answers the same `get`
    /// forever) would keep it going, so after `--timeout` it stops anyway.
    fn check_consumer_deadline(&mut self, now: u64) {
        if self.consumer_deadline == u64::MAX
            || self.shared.producers_active.load(Ordering::Acquire) != 0
        {
            return;
        }
        if self.consumer_deadline == 0 {
            self.consumer_deadline = now + self.plan.timeout;
            return;
        }
        if now < self.consumer_deadline {
            return;
        }
        let mut stopped = 0;
        for c in &mut self.conns {
            if !c.consumer_finished {
                c.consumer_finished = true;
                stopped += 1;
            }
        }
        self.consumer_deadline = u64::MAX;
        if stopped > 0 {
            eprintln!(
                "mcq-loadgen: {stopped} consumers still found messages {:.1} s after the producers \
                 stopped; stopping them (is the server a queue?)",
                self.plan.timeout as f64 / 1e9
            );
        }
    }

    fn check_timeouts(&mut self, now: u64) {
        for ci in 0..self.conns.len() {
            let c = &self.conns[ci];
            if c.state == State::Live
                && !c.inflight.is_empty()
                && now.saturating_sub(c.last_rx) > self.plan.timeout
            {
                let msg = format!(
                    "no reply for {:.1} s with {} requests outstanding",
                    (now - c.last_rx) as f64 / 1e9,
                    c.inflight.len()
                );
                self.abort(ci, Abort::Timeout, msg);
            }
        }
    }

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
                    && c.reads.held() == 0
                    && match c.role {
                        Role::Consumer(_) => c.consumer_finished,
                        _ => self.stopping,
                    })
        })
    }
}
