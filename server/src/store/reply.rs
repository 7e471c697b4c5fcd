//! The future of a store request's reply, without an allocation in the
//! usual cases.
//!
//! Almost every reply is either known at once (an empty queue, a refused
//! set, `--sync none`) or known once one record is acknowledged. A boxed
//! future per request for those, and another around it in the shard
//! router, were two of the ten allocations a request cost, and allocation
//! was a tenth of the server's CPU under a pipelined load (issue 8). The
//! rare replies that wait for more (a full disk, a blocking get, a body
//! written out of line) still box theirs.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use super::{LocalFuture, Store, SyncMode};
use crate::log::commit::Acked;
use crate::log::{Log, LogError};

/// A store request's reply, as a future.
pub enum Reply<T> {
    /// Known now (taken by the first poll).
    Now(Option<Result<T, LogError>>),
    /// This value once the record is acknowledged.
    Acked(Acked, Option<T>),
    /// Anything else.
    Later(LocalFuture<Result<T, LogError>>),
}

// `T` is only ever moved out of its `Option`, never pinned.
impl<T> Unpin for Reply<T> {}

impl<T> Reply<T> {
    pub fn now(value: Result<T, LogError>) -> Reply<T> {
        Reply::Now(Some(value))
    }

    pub fn later(future: impl Future<Output = Result<T, LogError>> + 'static) -> Reply<T> {
        Reply::Later(Box::pin(future))
    }
}

impl<T> Future for Reply<T> {
    type Output = Result<T, LogError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        const AGAIN: &str = "a reply polled after it was ready";
        match self.get_mut() {
            Reply::Now(value) => Poll::Ready(value.take().expect(AGAIN)),
            Reply::Acked(acked, value) => Pin::new(acked)
                .poll(cx)
                .map(|acked| acked.map(|()| value.take().expect(AGAIN))),
            Reply::Later(future) => future.as_mut().poll(cx),
        }
    }
}

impl Store {
    pub(super) fn acked(&self, lsn: u64) -> Acked {
        Acked {
            log: self.log.clone(),
            lsn,
        }
    }

    /// The reply `value` to a request whose record (with a body of `body`
    /// bytes) is `lsn`: once the record is acknowledged, or at once where
    /// [`waits_for_log`] says the sync mode allows it.
    pub(super) fn reply<T: 'static>(&self, log: &Log, lsn: u64, body: usize, value: T) -> Reply<T> {
        if !waits_for_log(log, body) {
            return Reply::now(Ok(value));
        }
        Reply::Acked(self.acked(lsn), Some(value))
    }
}

/// With `--sync none`, a set of at least [`LARGE_BODY`] bytes stops being
/// acknowledged ahead of its write once this many bytes are appended but
/// not yet written: the bound on memory, and back-pressure on producers
/// faster than the disk.
const NONE_BACKLOG: u64 = 16 << 20;
/// Past this backlog every request waits: small ones too (a flood of small
/// sets can outrun the disk as well).
const NONE_BACKLOG_HARD: u64 = 4 * NONE_BACKLOG;
/// Bodies this large are the ones that fill the backlog; below it a request
/// keeps being answered at once while big writes drain, so small messages
/// do not wait behind a flood of large ones.
const LARGE_BODY: usize = 64 << 10;

/// Whether a reply must wait for its record's acknowledgement. With
/// `--sync none` it need not: the record is in the log buffer, which is all
/// that mode promises, unless the backlog is full (see [`NONE_BACKLOG`]).
/// `body` is the request's body length (0 for `get` and `delete`).
pub(super) fn waits_for_log(log: &Log, body: usize) -> bool {
    if !matches!(log.sync_mode(), SyncMode::None { .. }) {
        return true;
    }
    let backlog = log.unwritten_bytes();
    backlog > NONE_BACKLOG_HARD || (backlog > NONE_BACKLOG && body >= LARGE_BODY)
}
