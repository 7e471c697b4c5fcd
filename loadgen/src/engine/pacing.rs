//! When the next request may go, and how long the thread may sleep.
//!
//! Open loop, a request is due at a fixed time whatever the server does,
//! and its latency counts from then; a late wake-up would be charged to
//! the server. So the thread sleeps in `epoll_wait` only until shortly
//! before the next due time (a timerfd, finer than epoll's milliseconds,
//! wakes it) and spins the rest. Closed loop, a request may go whenever a
//! pipeline slot is free, as long as the run has budget left. Connections
//! with something new to send are marked, and topped up once per wake-up.

use std::sync::atomic::Ordering;

use super::conn::State;
use super::failure::RETRY_NS;
use super::{Role, Worker, SECOND};

/// Below this distance to a deadline, poll and spin instead of sleeping.
const SPIN_NS: u64 = 40_000;
/// Budget claimed from the shared counter at a time (closed loop, --requests).
const CLAIM_CHUNK: u64 = 16;

impl Worker {
    /// How long `epoll_wait` may sleep: [`Self::wait_ms`], but 0 for the
    /// first `--busy-poll` of an idle stretch. A reply is usually
    /// microseconds away, and waking a halted (virtual) CPU costs more than
    /// the spin.
    pub(super) fn poll_timeout_ms(&mut self, now: u64) -> i32 {
        let wait_ms = self.wait_ms(now);
        if wait_ms == 0 || self.plan.busy_poll == 0 {
            return wait_ms;
        }
        if self.idle_since == 0 {
            self.idle_since = now;
        }
        if now - self.idle_since < self.plan.busy_poll {
            return 0;
        }
        wait_ms
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

    /// Open loop: queues what has come due, and once the run is over (or
    /// interrupted) drops what is still waiting.
    pub(super) fn pace_open_loop(&mut self, now: u64) {
        if self.sched.is_none() {
            return;
        }
        if !self.interrupted {
            self.schedule_due(now);
        }
        if self.interrupted || self.plan.end.is_some_and(|end| now >= end) {
            self.drop_backlog();
        }
    }

    /// Moves every request due by `now` into its connection's backlog.
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
    pub(super) fn claim(&mut self, now: u64) -> bool {
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

    /// `--miss-backoff`: consumers whose pause after a miss is over may ask
    /// again.
    pub(super) fn resume_backed_off_consumers(&mut self, now: u64) {
        for ci in 0..self.conns.len() {
            let c = &self.conns[ci];
            if matches!(c.role, Role::Consumer(_)) && c.resume_at != 0 && c.resume_at <= now {
                self.conns[ci].resume_at = 0;
                self.mark_dirty(ci);
            }
        }
    }

    /// Notes that a connection has something to send at the next top-up.
    pub(super) fn mark_dirty(&mut self, ci: usize) {
        if !self.conns[ci].dirty {
            self.conns[ci].dirty = true;
            self.dirty.push(ci);
        }
    }

    /// Tops up and writes out every marked connection.
    pub(super) fn flush_dirty(&mut self, now: u64) {
        while let Some(ci) = self.dirty.pop() {
            self.conns[ci].dirty = false;
            self.fill(ci, now);
            self.flush(ci);
        }
    }
}
