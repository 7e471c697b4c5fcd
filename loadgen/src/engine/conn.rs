//! One connection's state, and moving bytes between it and its socket.
//!
//! The buffers live as long as the run so that the hot path allocates
//! nothing: requests are appended to one write buffer and go out in one
//! `write` per wake-up, and replies are parsed in place in the read buffer,
//! which only grows when a single reply is larger than it. Epoll is asked
//! for writability only while the socket is full, so an idle connection
//! costs no wake-ups.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::os::fd::AsRawFd;

use crate::poll;
use crate::protocol::{parse_reply, GetKind, Parsed};
use crate::reliable::Reads;
use crate::schedule::now_ns;
use crate::stats::Abort;
use crate::transport::Stream;

use super::{ConnSpec, Role, Worker};

const READ_CHUNK: usize = 64 * 1024;

/// A request sent and not yet answered.
#[derive(Clone, Copy)]
pub(super) struct Pending {
    /// When it was due; its latency counts from here.
    pub(super) intended: u64,
    /// A set: its sequence number.
    pub(super) seq: u64,
    pub(super) queue: u32,
    /// Its size on the wire.
    pub(super) req_bytes: u32,
    pub(super) is_set: bool,
    /// For a get: which one.
    pub(super) get: GetKind,
    /// Due inside the measured window.
    pub(super) measured: bool,
    /// Issued after every producer had finished (pairs).
    pub(super) after_done: bool,
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum State {
    Live,
    /// Lost its socket; `--reconnect` is trying to get a new one. Or
    /// (`retired`) closed it after `--reconnect-every` requests, and opens
    /// a new one once it has something to send.
    Reconnecting,
    Dead,
}

/// A connection as its thread sees it.
pub(super) struct Conn {
    pub(super) id: u32,
    pub(super) stream: Stream,
    pub(super) server: String,
    pub(super) addr: SocketAddr,
    /// Reconnecting: when the socket was lost.
    pub(super) down_since: u64,
    /// Reconnecting: when to try next.
    pub(super) retry_at: u64,
    pub(super) role: Role,
    pub(super) state: State,
    rbuf: Vec<u8>,
    rstart: usize,
    rend: usize,
    pub(super) wbuf: Vec<u8>,
    wpos: usize,
    want_out: bool,
    pub(super) inflight: VecDeque<Pending>,
    /// Open loop: due times of requests waiting for a free pipeline slot.
    pub(super) backlog: VecDeque<u64>,
    /// Reliable reads: what this connection holds open, by queue.
    pub(super) reads: Reads,
    /// Reliable reads: a get drawn for a queue that already had one in
    /// flight, (intended time, queue); it goes out when that reply is in,
    /// and nothing drawn after it goes out before it.
    pub(super) parked: Option<(u64, u32)>,
    /// The next set's sequence number.
    pub(super) seq: u64,
    /// `--verify`: its index in the thread's producer logs.
    pub(super) producer_log: Option<usize>,
    /// Producer: has stopped for good and said so.
    pub(super) producer_finished: bool,
    /// Consumer: has seen its queue empty after all producers finished.
    pub(super) consumer_finished: bool,
    /// Consumer backing off after a miss: when it may ask again (0: not
    /// backing off).
    pub(super) resume_at: u64,
    /// When it last heard from the server (or sent to it while idle): the
    /// reply timeout counts from here.
    pub(super) last_rx: u64,
    /// On the worker's list of connections to top up.
    pub(super) dirty: bool,
    /// Requests issued on the current socket (`--reconnect-every`).
    pub(super) socket_requests: u64,
    /// Closed on purpose (`--reconnect-every`), not lost: its next socket
    /// is churn, not a crash reconnect.
    pub(super) retired: bool,
    /// Closed loop, retired: a request already claimed from the budget,
    /// for the next socket to send first.
    pub(super) claimed: bool,
}

impl Conn {
    /// A live connection with empty buffers; `producer_log` is its index in
    /// the thread's producer logs (`--verify`).
    pub(super) fn new(spec: ConnSpec, pipeline: usize, producer_log: Option<usize>) -> Conn {
        Conn {
            id: spec.id,
            stream: spec.stream,
            server: spec.server,
            addr: spec.addr,
            down_since: 0,
            retry_at: 0,
            role: spec.role,
            state: State::Live,
            rbuf: vec![0; READ_CHUNK],
            rstart: 0,
            rend: 0,
            wbuf: Vec::with_capacity(64 * 1024),
            wpos: 0,
            want_out: false,
            inflight: VecDeque::with_capacity(pipeline),
            backlog: VecDeque::new(),
            reads: Reads::default(),
            parked: None,
            seq: 0,
            producer_log,
            producer_finished: !matches!(spec.role, Role::Producer(_)),
            consumer_finished: !matches!(spec.role, Role::Consumer(_)),
            resume_at: 0,
            last_rx: 0,
            dirty: false,
            socket_requests: 0,
            retired: false,
            claimed: false,
        }
    }

    /// Records a request just encoded into the write buffer. The reply
    /// timeout counts from the first request of an idle connection.
    pub(super) fn await_reply(&mut self, p: Pending, now: u64) {
        if self.inflight.is_empty() {
            self.last_rx = now;
        }
        self.inflight.push_back(p);
    }

    /// Forgets the requests in flight and the bytes in both buffers (the
    /// socket they belonged to is gone).
    pub(super) fn discard_io(&mut self) {
        self.inflight.clear();
        self.rstart = 0;
        self.rend = 0;
        self.wbuf.clear();
        self.wpos = 0;
        self.want_out = false;
    }

    /// Keeps at least a quarter of a read chunk free after the unparsed
    /// bytes: moves them to the front, and doubles the buffer if that is
    /// not enough.
    fn make_read_room(&mut self) {
        if self.rbuf.len() - self.rend >= READ_CHUNK / 4 {
            return;
        }
        if self.rstart > 0 {
            self.rbuf.copy_within(self.rstart..self.rend, 0);
            self.rend -= self.rstart;
            self.rstart = 0;
        }
        if self.rbuf.len() - self.rend < READ_CHUNK / 4 {
            let grow = self.rbuf.len();
            self.rbuf.resize(self.rbuf.len() + grow, 0);
        }
    }

    /// Puts the read buffer back after finding only the start of a reply of
    /// `need` bytes; a large VALUE that would not fit is moved to the front
    /// of a buffer grown to hold all of it.
    fn keep_partial_reply(&mut self, mut rbuf: Vec<u8>, need: usize) {
        let (rstart, rend) = (self.rstart, self.rend);
        if need > rbuf.len() - rstart {
            rbuf.copy_within(rstart..rend, 0);
            let new_len = (need + READ_CHUNK).max(rbuf.len());
            rbuf.resize(new_len, 0);
            self.rend = rend - rstart;
            self.rstart = 0;
        }
        self.rbuf = rbuf;
    }

    fn closed_by_server(&self) -> String {
        if self.inflight.is_empty() {
            "server closed the connection".to_string()
        } else {
            format!(
                "server closed the connection with {} requests outstanding",
                self.inflight.len()
            )
        }
    }
}

/// The socket took less than there is to send: epoll reports connection
/// `ci` writable too, until [`Worker::flush`] has sent everything.
fn want_writable(ep: &poll::Epoll, c: &mut Conn, ci: usize) {
    if !c.want_out {
        c.want_out = true;
        let fd = c.stream.as_raw_fd();
        let _ = ep.modify(fd, poll::IN | poll::OUT | poll::ERR, ci as u64);
    }
}

impl Worker {
    /// Writes out the connection's write buffer, as far as the socket takes.
    pub(super) fn flush(&mut self, ci: usize) {
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
                    want_writable(&self.ep, c, ci);
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
        // TLS: what rustls encrypted but the socket did not take yet.
        match c.stream.flush_tls() {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                want_writable(&self.ep, c, ci);
                return;
            }
            Err(e) => {
                self.abort(ci, Abort::Closed, format!("write failed: {e}"));
                return;
            }
        }
        if c.want_out {
            c.want_out = false;
            let fd = c.stream.as_raw_fd();
            let _ = self.ep.modify(fd, poll::IN | poll::ERR, ci as u64);
        }
    }

    /// Reads everything the socket has and accounts for every complete
    /// reply in it.
    pub(super) fn read(&mut self, ci: usize) {
        loop {
            let c = &mut self.conns[ci];
            c.make_read_room();
            let space = c.rbuf.len() - c.rend;
            let n = match c.stream.read(&mut c.rbuf[c.rend..]) {
                Ok(0) => {
                    let msg = c.closed_by_server();
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
                    self.conns[ci].keep_partial_reply(rbuf, need);
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
}
