//! Time, and the open-loop send schedule.
//!
//! Open loop exists to defeat coordinated omission: a stalled server must not
//! also stall the clock that decides when requests are *due*. So there is a
//! single global schedule — request `k` is due at `t0 + k / rate` and belongs
//! to scheduled connection `k mod S` — and each thread walks only its own
//! slots of it. No thread ever talks to another to keep the rate, the union of
//! all threads' slots is exactly the global schedule, and a request's latency
//! is counted from the time it was due, not from when it could be sent.

/// CLOCK_MONOTONIC in nanoseconds (the same clock `timerfd` and `Instant` use,
/// read through the vDSO, so it costs tens of nanoseconds).
#[inline]
pub fn now_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; CLOCK_MONOTONIC always exists.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// One thread's share of the global open-loop schedule.
#[derive(Clone, Debug)]
pub struct Schedule {
    t0: u64,
    period: f64,
    total_slots: u64,
    /// (global slot, caller's connection index), sorted by slot.
    mine: Vec<(u64, usize)>,
    round: u64,
    idx: usize,
    /// Requests with index `>= limit` are never due.
    limit: u64,
    /// Requests due at or after `end` are never due.
    end: u64,
}

impl Schedule {
    /// `rate` requests per second over `total_slots` scheduled connections;
    /// `mine` are this thread's (slot, connection) pairs.
    pub fn new(
        t0: u64,
        rate: f64,
        total_slots: u64,
        mut mine: Vec<(u64, usize)>,
        limit: Option<u64>,
        end: Option<u64>,
    ) -> Schedule {
        mine.sort_unstable();
        Schedule {
            t0,
            period: 1e9 / rate,
            total_slots,
            mine,
            round: 0,
            idx: 0,
            limit: limit.unwrap_or(u64::MAX),
            end: end.unwrap_or(u64::MAX),
        }
    }

    /// When request `k` is due.
    #[inline]
    pub fn due(&self, k: u64) -> u64 {
        self.t0 + (k as f64 * self.period) as u64
    }

    /// The next request of this thread: (global index, due time, connection),
    /// or `None` once the schedule is over.
    #[inline]
    pub fn peek(&self) -> Option<(u64, u64, usize)> {
        let &(slot, conn) = self.mine.get(self.idx)?;
        let k = self.round * self.total_slots + slot;
        let due = self.due(k);
        if k >= self.limit || due >= self.end {
            return None;
        }
        Some((k, due, conn))
    }

    #[inline]
    pub fn advance(&mut self) {
        self.idx += 1;
        if self.idx == self.mine.len() {
            self.idx = 0;
            self.round += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn threads_partition_the_global_schedule() {
        // 5 connections over 2 threads, 1000 req/s, 103 requests.
        let t0 = 1_000_000;
        let a = Schedule::new(t0, 1000.0, 5, vec![(0, 0), (2, 1), (4, 2)], Some(103), None);
        let b = Schedule::new(t0, 1000.0, 5, vec![(3, 1), (1, 0)], Some(103), None);
        let mut all = Vec::new();
        for (ti, mut s) in [a, b].into_iter().enumerate() {
            let mut last = 0;
            while let Some((k, due, conn)) = s.peek() {
                assert!(due >= last, "due times never go back");
                last = due;
                all.push((k, due, ti, conn));
                s.advance();
            }
        }
        all.sort();
        assert_eq!(all.len(), 103);
        for (i, &(k, due, _, _)) in all.iter().enumerate() {
            assert_eq!(k, i as u64);
            assert_eq!(due, t0 + k * 1_000_000);
        }
        // Request k goes to slot k mod 5.
        let slot_of = |ti: usize, conn: usize| match (ti, conn) {
            (0, c) => [0, 2, 4][c],
            (_, 0) => 1,
            _ => 3,
        };
        for &(k, _, ti, conn) in &all {
            assert_eq!(slot_of(ti, conn), k % 5);
        }
    }

    #[test]
    fn end_time_stops_the_schedule() {
        let mut s = Schedule::new(0, 100.0, 1, vec![(0, 0)], None, Some(1_000_000_000));
        let mut n = 0;
        while s.peek().is_some() {
            n += 1;
            s.advance();
        }
        assert_eq!(n, 100);
    }

    #[test]
    fn fractional_rates_do_not_drift() {
        let s = Schedule::new(0, 3.0, 1, vec![(0, 0)], None, None);
        assert_eq!(s.due(3), 1_000_000_000);
        assert_eq!(s.due(3_000_000), 1_000_000_000_000_000);
        assert_eq!(s.due(1), 333_333_333);
    }

    #[test]
    fn clock_is_monotonic() {
        let a = now_ns();
        let b = now_ns();
        assert!(b >= a);
    }
}
