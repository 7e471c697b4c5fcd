//! Messages whose bodies are being written out of line (`log::region`).
//!
//! While its region is written, such a message is queued like any other,
//! but its body is with the task writing it, not in the hot cache. Its set
//! is acknowledged, and a get of it answered, only once the region is
//! written: [`OutOfLine::wait`]. Afterwards the body goes to the cache if
//! the message is still queued, or to whoever took it meanwhile
//! ([`OutOfLine::take_body`]).

use std::cell::RefCell;
use std::future::Future;
use std::task::{Poll, Waker};

use crate::log::LogError;

/// One message's region write, as its set and its readers wait for it.
pub struct OutOfLine {
    pub flags: u32,
    done: RefCell<Option<Result<(), LogError>>>,
    wakers: RefCell<Vec<Waker>>,
    /// The body, once written, if the message was no longer queued then.
    body: RefCell<Option<Vec<u8>>>,
}

impl OutOfLine {
    pub fn new(flags: u32) -> OutOfLine {
        OutOfLine {
            flags,
            done: RefCell::new(None),
            wakers: RefCell::new(Vec::new()),
            body: RefCell::new(None),
        }
    }

    /// Resolves once the region is written and synced (or could not be).
    pub fn wait(&self) -> impl Future<Output = Result<(), LogError>> + '_ {
        std::future::poll_fn(move |cx| match &*self.done.borrow() {
            Some(res) => Poll::Ready(res.clone()),
            None => {
                self.wakers.borrow_mut().push(cx.waker().clone());
                Poll::Pending
            }
        })
    }

    /// The write is over; `body` is handed on if no longer queued.
    pub fn finish(&self, res: Result<(), LogError>, body: Option<Vec<u8>>) {
        *self.body.borrow_mut() = body;
        *self.done.borrow_mut() = Some(res);
        for w in self.wakers.borrow_mut().drain(..) {
            w.wake();
        }
    }

    /// The body, for the one reader that popped (or opened) the message
    /// while it was written.
    pub fn take_body(&self) -> Option<Vec<u8>> {
        self.body.borrow_mut().take()
    }
}
