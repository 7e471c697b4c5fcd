//! Counters and histograms that each thread owns and the main thread merges.
//!
//! Threads never share counters while running (no atomics or locks on the hot
//! path); they hand over whole interval snapshots once a second and their
//! totals at the end.

use hdrhistogram::Histogram;

use crate::protocol::ErrorKind;

/// Values are nanoseconds, up to an hour, at 3 significant digits.
pub fn new_hist() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000_000, 3).expect("valid histogram bounds")
}

/// Why a connection was given up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Abort {
    /// The reply stream could not be parsed or did not match the requests.
    Desync,
    /// The server closed the connection or the socket failed.
    Closed,
    /// Requests outstanding and no reply for `--timeout`.
    Timeout,
    /// `--reconnect-every`: a new connection could not be opened (and
    /// `--reconnect` did not ask to keep trying).
    Connect,
}

impl Abort {
    pub const ALL: [Abort; 4] = [Abort::Desync, Abort::Closed, Abort::Timeout, Abort::Connect];
    pub fn name(self) -> &'static str {
        match self {
            Abort::Desync => "desync",
            Abort::Closed => "connection_closed",
            Abort::Timeout => "timeout",
            Abort::Connect => "connect_failed",
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// Completed requests of the measured window.
    pub ops: u64,
    pub sets: u64,
    pub gets: u64,
    pub hits: u64,
    pub misses: u64,
    /// Error replies by [`ErrorKind`] (index = position in `ErrorKind::ALL`).
    pub reply_errors: [u64; 4],
    /// Aborted connections by [`Abort`] kind.
    pub aborts: [u64; 4],
    pub bytes_sent: u64,
    pub bytes_received: u64,
    /// Completed requests including the warm-up (for the progress line).
    pub ops_all: u64,
    /// `STORED` and message-bearing `VALUE` replies, warm-up included: what
    /// this run put into its queues and took out (pairs: the backlog).
    pub stored_all: u64,
    pub taken_all: u64,
    /// Open loop: measured requests that were due but still waiting for a
    /// free pipeline slot when the run ended, and so never sent.
    pub unsent: u64,
    /// Connections opened while the run went on (churn and reconnects),
    /// warm-up included; those opened before it are not counted here.
    pub opened_all: u64,
    /// Of those, the ones opened inside the measured window.
    pub opened: u64,
}

impl Counters {
    pub fn merge(&mut self, o: &Counters) {
        self.ops += o.ops;
        self.sets += o.sets;
        self.gets += o.gets;
        self.hits += o.hits;
        self.misses += o.misses;
        for i in 0..self.reply_errors.len() {
            self.reply_errors[i] += o.reply_errors[i];
        }
        for i in 0..self.aborts.len() {
            self.aborts[i] += o.aborts[i];
        }
        self.bytes_sent += o.bytes_sent;
        self.bytes_received += o.bytes_received;
        self.ops_all += o.ops_all;
        self.stored_all += o.stored_all;
        self.taken_all += o.taken_all;
        self.unsent += o.unsent;
        self.opened_all += o.opened_all;
        self.opened += o.opened;
    }

    #[inline]
    pub fn reply_error(&mut self, kind: ErrorKind) {
        let i = ErrorKind::ALL.iter().position(|&k| k == kind).unwrap_or(0);
        self.reply_errors[i] += 1;
    }

    pub fn abort(&mut self, kind: Abort) {
        let i = Abort::ALL.iter().position(|&k| k == kind).unwrap_or(0);
        self.aborts[i] += 1;
    }

    pub fn errors(&self) -> u64 {
        self.reply_errors.iter().sum::<u64>() + self.aborts.iter().sum::<u64>()
    }

    /// (name, count) for every error kind that occurred.
    pub fn errors_by_kind(&self) -> Vec<(&'static str, u64)> {
        let mut v = Vec::new();
        for (k, &n) in ErrorKind::ALL.iter().zip(&self.reply_errors) {
            if n > 0 {
                v.push((k.name(), n));
            }
        }
        for (k, &n) in Abort::ALL.iter().zip(&self.aborts) {
            if n > 0 {
                v.push((k.name(), n));
            }
        }
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_and_error_kinds() {
        let mut a = Counters::default();
        a.reply_error(ErrorKind::ServerError);
        a.ops = 3;
        let mut b = Counters::default();
        b.reply_error(ErrorKind::ServerError);
        b.abort(Abort::Desync);
        b.abort(Abort::Connect);
        b.ops = 4;
        b.opened = 2;
        b.opened_all = 3;
        a.opened = 1;
        a.merge(&b);
        assert_eq!(a.ops, 7);
        assert_eq!(a.errors(), 4);
        assert_eq!((a.opened, a.opened_all), (3, 3));
        assert_eq!(
            a.errors_by_kind(),
            vec![("SERVER_ERROR", 2), ("desync", 1), ("connect_failed", 1)]
        );
    }
}
