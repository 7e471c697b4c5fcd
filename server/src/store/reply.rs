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

use super::LocalFuture;
use crate::log::commit::Acked;
use crate::log::LogError;

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
