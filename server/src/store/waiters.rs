//! Blocking gets (`get <q>/t=<ms>`): the consumers waiting for a queue's
//! next message, in the order they came.
//!
//! A set wakes only the first waiter of its queue, and a waiter that leaves
//! the line (it got a message, timed out, or was cancelled) wakes the next
//! one if messages are left. So each message wakes one consumer, consumers
//! are served in arrival order, and a waiting consumer costs a timer and no
//! CPU. A plain `get` does not queue: it may take the message a waiter was
//! woken for, and that waiter then waits again, still first in line.

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, VecDeque};
use std::rc::Rc;
use std::time::Duration;

use super::{Message, Reply, Store, Take};

/// One waiting consumer: woken when a message is there for it.
pub use crate::wake::Notify as Waiter;

/// The consumers waiting on one queue, first come first.
type Line = VecDeque<Rc<Waiter>>;

/// The lines of one shard, by queue name.
#[derive(Default)]
pub struct Waiters {
    lines: RefCell<HashMap<Box<[u8]>, Line>>,
    /// Shutdown: every wait ends (answered `END`), and none starts.
    ended: Cell<bool>,
}

impl Waiters {
    pub fn anyone_waiting(&self, queue: &[u8]) -> bool {
        self.lines.borrow().contains_key(queue)
    }

    /// Consumers waiting on `queue` (`stats`).
    pub fn waiting_on(&self, queue: &[u8]) -> usize {
        self.lines.borrow().get(queue).map_or(0, Line::len)
    }

    /// Consumers waiting on all queues (`stats`).
    pub fn count(&self) -> usize {
        self.lines.borrow().values().map(Line::len).sum()
    }

    /// Puts `w` at the back of `queue`'s line, unless it is in it already.
    pub fn join(&self, queue: &[u8], w: &Rc<Waiter>) {
        let mut lines = self.lines.borrow_mut();
        let line = lines.entry(queue.into()).or_default();
        if !line.iter().any(|x| Rc::ptr_eq(x, w)) {
            line.push_back(w.clone());
        }
    }

    pub fn is_first(&self, queue: &[u8], w: &Rc<Waiter>) -> bool {
        self.lines
            .borrow()
            .get(queue)
            .and_then(|line| line.front())
            .is_some_and(|x| Rc::ptr_eq(x, w))
    }

    pub fn leave(&self, queue: &[u8], w: &Rc<Waiter>) {
        let mut lines = self.lines.borrow_mut();
        if let Some(line) = lines.get_mut(queue) {
            line.retain(|x| !Rc::ptr_eq(x, w));
            if line.is_empty() {
                lines.remove(queue);
            }
        }
    }

    /// A message is there for `queue`'s first waiter.
    pub fn wake_first(&self, queue: &[u8]) {
        let lines = self.lines.borrow();
        if let Some(first) = lines.get(queue).and_then(|line| line.front()) {
            first.notify();
        }
    }

    /// Shutdown: ends every wait now and every later one at once.
    pub fn end(&self) {
        self.ended.set(true);
        for line in self.lines.borrow().values() {
            for w in line {
                w.notify();
            }
        }
    }

    pub fn ended(&self) -> bool {
        self.ended.get()
    }
}

/// A blocking get's place in its queue's line: leaving it (done, timed out
/// or dropped) passes a waiting message on to the next in line.
struct InLine {
    store: Store,
    queue: Box<[u8]>,
    me: Rc<Waiter>,
}

impl Drop for InLine {
    fn drop(&mut self) {
        self.store.waiters.leave(&self.queue, &self.me);
        if self.store.queue_items(&self.queue) > 0 {
            self.store.waiters.wake_first(&self.queue);
        }
    }
}

impl Store {
    /// Pops the head of `queue`, waiting up to `wait` for a message when it
    /// is empty (`get <q>/t=<ms>`): see [`Store::take_wait`].
    pub fn get_wait(&self, queue: &[u8], wait: Duration) -> Reply<Option<Message>> {
        self.take_wait(queue, Take::Pop, wait)
    }

    /// Takes the head of `queue` as `take` says, waiting up to `wait` for a
    /// message when it is empty (`get <q>/t=<ms>`): woken by the set that
    /// brings one, in arrival order with the other waiters (see the module
    /// doc). `None` when the wait ends without a message, or the shard is
    /// shutting down.
    ///
    /// Dropping the future leaves the line (the next waiter is woken if a
    /// message is there), so a consumer that goes away takes nothing.
    pub fn take_wait(&self, queue: &[u8], take: Take, wait: Duration) -> Reply<Option<Message>> {
        let deadline = std::time::Instant::now() + wait;
        let line = InLine {
            store: self.clone(),
            queue: queue.into(),
            me: Rc::new(Waiter::default()),
        };
        Reply::later(async move {
            let (store, queue, me) = (&line.store, &*line.queue, &line.me);
            // A newcomer goes first only when nobody waits ahead of it.
            let mut try_now = !store.waiters.anyone_waiting(queue);
            loop {
                if try_now {
                    match store.take(queue, take).await {
                        Ok(None) => {}
                        done => return done,
                    }
                }
                let left = deadline.saturating_duration_since(std::time::Instant::now());
                if store.waiters.ended() || left.is_zero() {
                    return Ok(None);
                }
                store.waiters.join(queue, me);
                // A message that came while the get above was in flight.
                if store.waiters.is_first(queue, me) && store.queue_items(queue) > 0 {
                    try_now = true;
                    continue;
                }
                futures_lite::future::or(me.wait(), glommio::timer::sleep(left)).await;
                try_now = store.waiters.is_first(queue, me);
            }
        })
    }

    /// Shutdown: every blocking get ends now with no message (`END`), and
    /// later ones do not wait.
    pub fn end_waits(&self) {
        self.waiters.end();
    }

    pub(super) fn queue_items(&self, queue: &[u8]) -> usize {
        let st = self.state.borrow();
        st.id_of(queue)
            .map_or(0, |id| st.queues[&id].queued().items() as usize)
    }
}
