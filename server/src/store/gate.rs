//! Holding a shard's requests, in order, while a new segment is not ready.
//!
//! Every request applies its change to the queues at the moment it is
//! called; that is what keeps replies in request order and lets a `get`
//! see the `set` before it. When a request needs a new segment and the
//! spare file is not ready yet (maintenance is still preallocating it), it
//! cannot apply now, and it must not be refused either (the disk is not
//! full). So it takes a ticket and waits; every request that arrives while
//! a ticket is out takes one too, and tickets are served strictly in order.
//! A request whose future is dropped before its turn gives its turn up.

use std::cell::{Cell, RefCell};
use std::collections::BTreeSet;
use std::future::Future;
use std::rc::Rc;
use std::task::{Poll, Waker};

#[derive(Default)]
pub struct Gate {
    next: Cell<u64>,
    serving: Cell<u64>,
    /// Tickets given up before their turn.
    abandoned: RefCell<BTreeSet<u64>>,
    wakers: RefCell<Vec<Waker>>,
    /// Who is told what becomes of held requests (tests).
    #[cfg(feature = "sim")]
    observer: RefCell<Option<Observer>>,
}

#[cfg(feature = "sim")]
type Observer = std::rc::Rc<dyn Fn(HeldEvent)>;

/// What becomes of a held request, told to a test's model of the store
/// (the crash-point explorer attributes each change of a queue to the
/// request that made it). Held requests apply strictly in the order they
/// were held, each in a task of its own.
#[cfg(feature = "sim")]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HeldEvent {
    /// A request was held (told during the call that made it).
    Held,
    /// The oldest held request applies now ...
    Applying,
    /// ... and has applied.
    Applied,
    /// The oldest held request failed without applying.
    Dropped,
}

/// A place in line; dropping it (served or not) lets the next one go.
pub struct Ticket {
    gate: Rc<Gate>,
    n: u64,
}

impl Gate {
    /// Tells the observer, if a test set one, what became of a held
    /// request.
    #[cfg(feature = "sim")]
    pub fn tell(&self, event: HeldEvent) {
        let observer = self.observer.borrow().clone();
        if let Some(f) = observer {
            f(event);
        }
    }

    #[cfg(feature = "sim")]
    pub fn observe(&self, f: Observer) {
        *self.observer.borrow_mut() = Some(f);
    }

    /// Nobody is waiting: a request may apply at once.
    pub fn is_open(&self) -> bool {
        self.next.get() == self.serving.get()
    }

    pub fn ticket(self: &Rc<Self>) -> Ticket {
        let n = self.next.get();
        self.next.set(n + 1);
        Ticket {
            gate: self.clone(),
            n,
        }
    }

    fn advance(&self) {
        let mut s = self.serving.get() + 1;
        let mut abandoned = self.abandoned.borrow_mut();
        while abandoned.remove(&s) {
            s += 1;
        }
        self.serving.set(s);
        for w in self.wakers.borrow_mut().drain(..) {
            w.wake();
        }
    }
}

impl Ticket {
    /// Resolves when it is this ticket's turn.
    pub fn turn(&self) -> impl Future<Output = ()> + '_ {
        std::future::poll_fn(move |cx| {
            if self.gate.serving.get() == self.n {
                Poll::Ready(())
            } else {
                self.gate.wakers.borrow_mut().push(cx.waker().clone());
                Poll::Pending
            }
        })
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        if self.gate.serving.get() == self.n {
            self.gate.advance();
        } else {
            self.gate.abandoned.borrow_mut().insert(self.n);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tickets_are_served_in_order_and_skip_abandoned_ones() {
        let gate = Rc::new(Gate::default());
        assert!(gate.is_open());
        let a = gate.ticket();
        let b = gate.ticket();
        let c = gate.ticket();
        assert!(!gate.is_open());
        assert_eq!(gate.serving.get(), a.n);
        drop(b); // gives up before its turn
        drop(a);
        assert_eq!(gate.serving.get(), c.n);
        drop(c);
        assert!(gate.is_open());
    }
}
