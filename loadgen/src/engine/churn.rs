//! `--reconnect-every`: connection churn, to measure how fast a server takes
//! new connections (with `--tls`, new TLS handshakes).
//!
//! A connection that has issued its N requests issues no more; once every
//! reply is in (and, with `--reliable`, what it held open is confirmed), it
//! is closed cleanly and marked `Reconnecting` and `retired`. From there the
//! reconnect path of [`failure`](super::failure) opens the next socket with
//! the run's connector (TCP, TLS, `--auth`), as it does after a crash, but
//! `retired` keeps it out of everything that counts failures: no abort, no
//! crash reconnect for `--verify`, not dead at the end. The next socket is
//! opened only when the connection has something to send: in closed loop a
//! request claimed for it, so a run that ends opens no connection it will
//! not use; in open loop as long as the run is on, so that the socket is
//! ready when the next request is due.

use std::os::fd::AsRawFd;

use super::conn::State;
use super::{Role, Worker};

/// Whether a socket that has carried `issued` requests may take another,
/// given `--reconnect-every`.
pub(super) fn socket_has_room(every: Option<u64>, issued: u64) -> bool {
    every.is_none_or(|n| issued < n)
}

impl Worker {
    /// Whether the connection's socket may take another request.
    pub(super) fn has_room(&self, ci: usize) -> bool {
        socket_has_room(self.plan.reconnect_every, self.conns[ci].socket_requests)
    }

    /// Whether the connection has issued its `--reconnect-every` requests
    /// and every reply is in.
    pub(super) fn socket_spent(&self, ci: usize) -> bool {
        !self.has_room(ci) && self.conns[ci].inflight.is_empty()
    }

    /// Closes a spent connection on purpose; `try_reconnects` opens its
    /// next one. Reliable reads it still holds are confirmed first (their
    /// replies bring it back here), so closing puts nothing back.
    pub(super) fn retire(&mut self, ci: usize, now: u64) {
        if self.plan.reliable && self.conns[ci].reads.held() > 0 {
            for queue in self.conns[ci].reads.to_close() {
                self.issue_close(ci, queue, now);
            }
            self.flush(ci);
            return;
        }
        let c = &mut self.conns[ci];
        let _ = self.ep.delete(c.stream.as_raw_fd());
        c.stream.close();
        c.discard_io();
        c.state = State::Reconnecting;
        c.retired = true;
        c.down_since = now;
        c.retry_at = now;
        self.reconnecting += 1;
    }

    /// Whether a retired connection has something to send, and so needs a
    /// new socket: a consumer until it finishes; otherwise a request that
    /// is waiting, or (open loop) the run is still on, or (closed loop) a
    /// request the budget and the clock let it claim now. That claim is
    /// kept for the new socket's first request, so no connection is opened
    /// that has nothing to send.
    pub(super) fn has_work(&mut self, ci: usize, now: u64) -> bool {
        let c = &self.conns[ci];
        match c.role {
            Role::Consumer(_) => !c.consumer_finished,
            _ if c.parked.is_some() || !c.backlog.is_empty() || c.claimed => true,
            _ if self.sched.is_some() => !self.stopping,
            _ => {
                let claimed = self.claim(now);
                self.conns[ci].claimed = claimed;
                claimed
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::socket_has_room;

    #[test]
    fn room_on_a_socket() {
        assert!(socket_has_room(None, 0));
        assert!(socket_has_room(None, u64::MAX));
        assert!(socket_has_room(Some(1), 0));
        assert!(!socket_has_room(Some(1), 1));
        assert!(socket_has_room(Some(5), 4));
        assert!(!socket_has_room(Some(5), 5));
    }
}
