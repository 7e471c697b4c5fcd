//! One storage shard: the queues whose names hash to it, and the log that
//! makes them durable.
//!
//! # Why this seam
//! Everything above this module (`net`, `shard`) speaks to a [`Store`] only
//! through `set`, `get`, `delete` and the two stats calls. Each call applies
//! its change to the in-memory queue state *synchronously*, at the moment it
//! is called, and returns a future that resolves when the change is as
//! durable as the sync mode promises. That split is what lets a connection
//! submit a whole pipeline of requests at once (so one group commit carries
//! them all) while replies still come back in request order, and what makes
//! a `get` that follows a `set` on the same connection see that `set`.
//!
//! A `Store` is `!Send`: it lives on the executor that owns its shard and is
//! touched by that executor only.
//!
//! # What each call does
//! - `set` appends an `Enqueued` record (after a `Created` record for a new
//!   queue) to the log's tail buffer, pushes a 24-byte locator onto the
//!   queue, keeps the body in the hot cache, and waits for the record's
//!   group commit. A body of 1 MiB or more goes out of line instead
//!   (`log::region`): a `Region` record in the tail, the body written by a
//!   task of its own, which the set (and a get of the message meanwhile)
//!   waits for too; the body reaches the cache once written
//!   (`out_of_line`).
//! - `get` pops the head locator, appends a `Consumed` record, and waits for
//!   its commit; the body comes from the hot cache or, for a consumer that
//!   lags, from a DMA read of its record (checksum verified).
//! - `take` with [`Take::Open`] (a reliable read) moves the head locator
//!   to the queue's open messages and appends nothing; `confirm` consumes
//!   it as a pop would (a `Consumed` record, or a `Confirmed` one when a
//!   lower message is still open: see `log::confirmed`); `abort` puts it
//!   back in sequence order, which is the head. [`Take::Peek`] copies the
//!   head.
//! - `delete` appends a `Deleted` record and drops the queue's locators.
//!
//! Background tasks per store: the group-commit task
//! ([`crate::log::commit::committer`]), the interval syncer (with
//! `--sync interval`), and maintenance ([`crate::log::compaction`]): index
//! files for sealed segments, deleting consumed segments, the spare segment
//! file, compaction. The log reaches its files through a
//! [`crate::disk::Disk`]: glommio's DMA files in production
//! ([`Store::open`]), a simulated disk in tests ([`Store::open_on`]).
//!
//! This file is the seam itself (the handle and the calls above);
//! everything behind it is in the submodules, one concern each.

use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;

use crate::limits::SharedLimits;
use crate::log::writer::SharedLog;

pub use crate::log::{LogError, SyncMode};
pub use crate::queue::Reader;

mod api;
mod apply;
mod body;
mod gate;
mod lifecycle;
mod locators;
mod moves;
mod names;
mod open;
mod out_of_line;
mod paging;
mod policy;
mod read;
mod regions;
mod replay;
mod reply;
mod room;
mod state;
mod stats;
mod waiters;
pub use api::{Message, StoreConfig, Take};
pub use body::Body;
use gate::Gate;
#[cfg(feature = "sim")]
pub use gate::HeldEvent;
pub use moves::Forward;
use moves::Moves;
pub use policy::now_secs;
pub use reply::Reply;
use state::State;
use waiters::Waiters;

/// A future local to the executor that owns the store.
pub type LocalFuture<T> = Pin<Box<dyn Future<Output = T> + 'static>>;

/// One storage shard. Cheap to clone (shared handle).
#[derive(Clone)]
pub struct Store {
    state: Rc<RefCell<State>>,
    log: SharedLog,
    gate: Rc<Gate>,
    waiters: Rc<Waiters>,
    limits: Arc<SharedLimits>,
    moves: Rc<Moves>,
}

impl Store {
    /// Tells `f` what becomes of every request the store holds (see
    /// [`HeldEvent`]): for tests that model the store.
    #[cfg(feature = "sim")]
    pub fn observe_held(&self, f: Rc<dyn Fn(HeldEvent)>) {
        self.gate.observe(f);
    }

    /// Appends a message to the tail of `queue`, creating it on first use.
    /// `false` (`NOT_STORED`) when the queue's limits refuse it.
    pub fn set(&self, queue: &[u8], flags: u32, body: Vec<u8>) -> Reply<bool> {
        self.set_expiring(queue, flags, 0, body)
    }

    /// [`Store::set`] of a message that expires at Unix time `expires`
    /// (seconds; 0 never): from then on it is never handed out, and it is
    /// dropped when it reaches the head.
    pub fn set_expiring(
        &self,
        queue: &[u8],
        flags: u32,
        expires: u32,
        body: Vec<u8>,
    ) -> Reply<bool> {
        self.set_checked(queue, flags, expires, body, None)
    }

    /// [`Store::set_expiring`] of a body whose `crc32c` the caller may have
    /// computed already: a connection checksums a large body in pieces
    /// before it submits it, so the append (which must copy it into the
    /// log's tail at once) does not checksum it at once too (see `turn`).
    pub fn set_checked(
        &self,
        queue: &[u8],
        flags: u32,
        expires: u32,
        body: Vec<u8>,
        body_crc: Option<u32>,
    ) -> Reply<bool> {
        self.refresh_limits();
        let len = body.len();
        self.when_room(
            queue,
            move |s, q| s.room_for_set(q, len),
            move |s, q, known| s.apply_set(q, known, flags, expires, body, body_crc),
        )
    }

    /// How this store reaches other queues, for `expire_to` (the shard
    /// layer gives it once its router runs).
    pub fn set_forward(&self, forward: Forward) {
        self.moves.set_forward(forward);
    }

    /// Pops the head of `queue`; `None` when it is empty or unknown.
    pub fn get(&self, queue: &[u8]) -> Reply<Option<Message>> {
        self.take(queue, Take::Pop)
    }

    /// Takes the head of `queue` as `take` says; `None` when it is empty or
    /// unknown. Only a pop logs a record now; an open message is logged
    /// when its reader confirms it ([`Store::confirm`]).
    pub fn take(&self, queue: &[u8], take: Take) -> Reply<Option<Message>> {
        self.refresh_limits();
        if !self.gate.is_open() {
            // It waits in line: its window, if it needs one, is read
            // meanwhile, beside the reads of the takes ahead of it.
            self.read_ahead_of(queue);
        }
        match take {
            Take::Pop => self.when_room(queue, |s, q| s.room_for_take(q, true), Store::apply_get),
            Take::Open(reader) => self.when_room(
                queue,
                |s, q| s.room_for_take(q, false),
                move |s, q, known| s.apply_open(q, known, reader),
            ),
            Take::Peek => {
                self.when_room(queue, |s, q| s.room_for_take(q, false), Store::apply_peek)
            }
        }
    }

    /// Whether `reader` holds an open message on `queue`.
    pub fn holds_open(&self, queue: &[u8], reader: Reader) -> bool {
        let st = self.state.borrow();
        st.id_of(queue)
            .is_some_and(|id| st.queues[&id].open_by(reader).is_some())
    }

    /// Confirms the message `reader` holds open on `queue` (`/close`): it
    /// is consumed, and never handed out again once the reply is
    /// acknowledged. `false` when it held none.
    pub fn confirm(&self, queue: &[u8], reader: Reader) -> Reply<bool> {
        self.when_room(
            queue,
            move |s, q| {
                if s.holds_open(q, reader) {
                    s.room_for_marker(q)
                } else {
                    Ok(())
                }
            },
            move |s, q, ()| s.apply_confirm(q, reader),
        )
    }

    /// Puts the message `reader` holds open on `queue` back at its head
    /// (`/abort`, or the reader went away); `false` when it held none. Its
    /// record was never marked consumed, so nothing is logged.
    pub fn abort(&self, queue: &[u8], reader: Reader) -> bool {
        {
            let mut st = self.state.borrow_mut();
            let st = &mut *st;
            let Some(q) = st.id_of(queue).and_then(|id| st.queues.get_mut(&id)) else {
                return false;
            };
            let Some(loc) = q.open_by(reader).and_then(|seq| q.put_back(seq)) else {
                return false;
            };
            st.items += 1;
            st.bytes += loc.body_len();
        }
        self.waiters.wake_first(queue);
        true
    }

    /// Drops `queue` and all its messages; `false` when it did not exist.
    pub fn delete(&self, queue: &[u8]) -> Reply<bool> {
        self.when_room(
            queue,
            |s, q| s.room_for_marker(q),
            |s, q, ()| s.apply_delete(q),
        )
    }

    /// Drops every queued message of `queue` (`flush`); the queue, its
    /// counters (flushed messages count as dequeued) and its open messages
    /// stay. `false` when there is no such queue.
    pub fn flush(&self, queue: &[u8]) -> Reply<bool> {
        self.when_room(queue, Store::room_for_flush, |s, q, ()| s.apply_flush(q))
    }

    /// `flush` for every queue of this shard.
    pub fn flush_all(&self) -> Reply<()> {
        let names: Vec<Rc<[u8]>> = (self.state.borrow().queues.values())
            .map(|q| q.name().into())
            .collect();
        let done: Vec<_> = names.iter().map(|q| self.flush(q)).collect();
        Reply::later(async move {
            for d in done {
                d.await?;
            }
            Ok(())
        })
    }
}

// What the tests name through `use super::*` besides the above.
#[cfg(test)]
use crate::{
    limits::Limits,
    log::record::{self, Kind},
    log::segment,
    stats::QueueStat,
};

#[cfg(test)]
pub(crate) mod tests;
