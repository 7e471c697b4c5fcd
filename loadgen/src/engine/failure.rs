//! Broken connections, reconnects, timeouts and giving up.
//!
//! A run must end, and must say what a failure cost, even when the server
//! crashes, hangs or is not a queue at all. So a connection that breaks
//! records what its lost replies leave in doubt for `--verify`, then either
//! reconnects (`--reconnect`, crash tests) or is given up; a connection that
//! waits `--timeout` for a reply, or cannot reconnect within it, is given
//! up too; and consumers that never see their queue run dry are stopped.
//! The reconnect path also opens the next socket of a connection that
//! `--reconnect-every` retired ([`churn`](super::churn)); that is no failure.

use std::os::fd::AsRawFd;
use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::poll;
use crate::protocol::GetKind;
use crate::schedule::now_ns;
use crate::stats::Abort;

use super::conn::State;
use super::Worker;

/// Pause between reconnection attempts.
pub(super) const RETRY_NS: u64 = 50_000_000;

impl Worker {
    /// Closes a connection that failed: reconnects later if `--reconnect`
    /// allows (not after a desync), otherwise gives it up.
    pub(super) fn abort(&mut self, ci: usize, kind: Abort, msg: String) {
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
        self.record_lost_replies(ci);
        let c = &mut self.conns[ci];
        if let Some((due, _)) = c.parked.take() {
            // Open loop: still due, drawn again later. Closed loop: gone,
            // like the requests in flight.
            if self.sched.is_some() {
                c.backlog.push_front(due);
            }
        }
        c.discard_io();
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

    /// What the replies a broken connection will never get leave in doubt.
    /// Sets in flight stay neither acknowledged nor refused. A plain get in
    /// flight may have popped a message whose reply is lost; a reliable one
    /// may have opened one, which the server puts back, as it does what
    /// this connection held open.
    fn record_lost_replies(&mut self, ci: usize) {
        let c = &mut self.conns[ci];
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
    }

    /// Gives a connection up for good.
    fn kill(&mut self, ci: usize) {
        let c = &mut self.conns[ci];
        if c.state == State::Reconnecting {
            self.reconnecting -= 1;
        }
        c.state = State::Dead;
        c.retired = false;
        c.claimed = false;
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

    /// Tries again every connection whose pause is over, and gives up those
    /// down for longer than `--timeout`. A retired connection
    /// (`--reconnect-every`) gets its next socket once it has something to
    /// send; until then it is idle, not down.
    pub(super) fn try_reconnects(&mut self, now: u64) {
        for ci in 0..self.conns.len() {
            let c = &self.conns[ci];
            if c.state != State::Reconnecting || now < c.retry_at {
                continue;
            }
            if c.retired && !self.has_work(ci, now) {
                self.conns[ci].down_since = now;
                continue;
            }
            let c = &self.conns[ci];
            if now.saturating_sub(c.down_since) > self.plan.timeout {
                eprintln!(
                    "mcq-loadgen: connection {} to {}: could not reconnect within {:.1} s; giving up",
                    c.id,
                    c.server,
                    self.plan.timeout as f64 / 1e9
                );
                self.kill(ci);
                continue;
            }
            self.reconnect(ci, now);
        }
    }

    /// One attempt to give a connection a new socket; on success it picks
    /// up where it was (its open-loop backlog is still due). A crashed
    /// server's restart is waited for in short attempts; a retired
    /// connection's next socket gets `--timeout`, as the first one did, and
    /// without `--reconnect` one that cannot be opened is given up.
    fn reconnect(&mut self, ci: usize, now: u64) {
        let c = &self.conns[ci];
        let retired = c.retired;
        let timeout = if retired {
            Duration::from_nanos(self.plan.timeout)
        } else {
            Duration::from_millis(100)
        };
        let started = now_ns();
        let stream = self
            .plan
            .connector
            .connect(&c.addr, &c.server, timeout)
            .and_then(|s| {
                s.set_nonblocking(true)
                    .map(|_| s)
                    .map_err(|e| format!("{}: {e}", c.server))
            });
        let stream = match stream {
            Ok(stream) => stream,
            Err(e) => {
                // TLS and authentication failures say why; a refused TCP
                // connection is the restart being waited for, unless the
                // connection was closed on purpose.
                if retired || !e.starts_with("cannot connect") {
                    eprintln!("mcq-loadgen: connection {}: {e}", c.id);
                }
                if retired && !self.plan.reconnect {
                    self.counters.abort(Abort::Connect);
                    self.kill(ci);
                } else {
                    self.conns[ci].retry_at = now_ns() + RETRY_NS;
                }
                return;
            }
        };
        self.count_opened(started, now_ns());
        let c = &mut self.conns[ci];
        if self
            .ep
            .add(stream.as_raw_fd(), poll::IN | poll::ERR, ci as u64)
            .is_err()
        {
            c.retry_at = now + RETRY_NS;
            return;
        }
        if !retired {
            eprintln!(
                "mcq-loadgen: connection {} to {}: reconnected after {:.2} s",
                c.id,
                c.server,
                (now - c.down_since) as f64 / 1e9
            );
            self.reconnects += 1;
        }
        c.stream = stream;
        c.state = State::Live;
        c.retired = false;
        c.socket_requests = 0;
        c.last_rx = now_ns();
        self.reconnecting -= 1;
        self.mark_dirty(ci);
    }

    /// Counts a connection opened during the run; inside the measured
    /// window its set-up time (`started` to `done`: connect, TLS handshake,
    /// authentication) is recorded too.
    fn count_opened(&mut self, started: u64, done: u64) {
        self.counters.opened_all += 1;
        let plan = &*self.plan;
        if started >= plan.measure_start && plan.end.is_none_or(|end| started < end) {
            self.counters.opened += 1;
            self.setup
                .saturating_record(done.saturating_sub(started).max(1));
        }
    }

    /// Aborts every connection that has waited `--timeout` for a reply.
    pub(super) fn check_timeouts(&mut self, now: u64) {
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

    /// A consumer normally stops at its first miss after all producers are
    /// done. A server that is not a queue (memcached answers the same `get`
    /// forever) would keep it going, so after `--timeout` it stops anyway.
    pub(super) fn check_consumer_deadline(&mut self, now: u64) {
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
}
