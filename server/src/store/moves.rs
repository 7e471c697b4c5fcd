//! `expire_to`: expired messages moved to another queue instead of dropped.
//!
//! The target may live on another shard, even another executor, so a move
//! cannot be one append like a fan-out copy. It reuses reliable reads: the
//! expired head is *opened* by a reader of the store's own (no record), a
//! task reads its body and sets it into the target through the shard layer
//! ([`Forward`]), and only once that set is acknowledged is the source
//! message confirmed (consumed, logged). A crash in between leaves it in
//! the source queue, still expired, to be moved again: at-least-once into
//! the target, never lost. Without a forwarder (a store on its own, in
//! tests) expired messages are dropped as if no `expire_to` were set.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::rc::Rc;

use super::{LocalFuture, LogError, Reader, Store};
use crate::wake::Notify;

/// Sets `body` with `flags` into the queue named first: how a store reaches
/// a queue of any shard.
pub type Forward = Rc<dyn Fn(Vec<u8>, u32, Vec<u8>) -> LocalFuture<Result<bool, LogError>>>;

/// Readers of moving messages have the top bit set; connections never do.
const MOVER: Reader = 1 << 63;

/// One expired message on its way.
struct Move {
    queue: u32,
    seq: u64,
    reader: Reader,
    target: Box<[u8]>,
}

/// The moves of one store.
#[derive(Default)]
pub struct Moves {
    forward: RefCell<Option<Forward>>,
    pending: RefCell<VecDeque<Move>>,
    next: Cell<u64>,
    wake: Notify,
}

impl Moves {
    pub fn set_forward(&self, forward: Forward) {
        *self.forward.borrow_mut() = Some(forward);
    }

    pub fn can_move(&self) -> bool {
        self.forward.borrow().is_some()
    }

    /// A reader for the next moving message.
    pub fn reader(&self) -> Reader {
        let n = self.next.get();
        self.next.set(n + 1);
        MOVER | n
    }

    /// Message `seq` of queue `queue`, opened by `reader`, is to go to
    /// `target`.
    pub fn push(&self, queue: u32, seq: u64, reader: Reader, target: &[u8]) {
        self.pending.borrow_mut().push_back(Move {
            queue,
            seq,
            reader,
            target: target.into(),
        });
        self.wake.notify();
    }

    /// Wakes the mover (work, or the store stopping).
    pub fn wake(&self) {
        self.wake.notify();
    }
}

/// The task that carries the moves of `store` out, one at a time.
pub async fn mover(store: Store) {
    store.log.borrow_mut().task_started();
    loop {
        store.moves.wake.wait().await;
        loop {
            if store.log.borrow().stopped() {
                store.log.borrow_mut().task_ended();
                return;
            }
            let Some(m) = store.moves.pending.borrow_mut().pop_front() else {
                break;
            };
            carry(&store, m).await;
        }
    }
}

async fn carry(store: &Store, m: Move) {
    let found = {
        let mut st = store.state.borrow_mut();
        let st = &mut *st;
        let open = st.queues.get(&m.queue).and_then(|q| {
            let loc = q.open_loc(m.seq)?;
            Some((Box::<[u8]>::from(q.name()), loc))
        });
        open.map(|(name, loc)| (name, loc, st.held((m.queue, m.seq), true)))
    };
    // Deleted meanwhile, or flushed: nothing to move.
    let Some((name, loc, cached)) = found else {
        return;
    };
    // As an open message is delivered: from the cache, or read from its
    // (pinned) segment once everything appended so far is acknowledged.
    let lsn = store.log.borrow().last_lsn();
    let message = store.deliver(lsn, m.queue, loc, cached).await;
    let forward = store.moves.forward.borrow().clone();
    let moved = match (message, forward) {
        (Ok(Some(msg)), Some(forward)) => {
            forward(m.target.to_vec(), msg.flags, msg.body.into_vec()).await
        }
        (Err(e), _) => Err(e),
        (Ok(None), _) | (_, None) => Err(LogError::Closed),
    };
    match moved {
        // Stored, or refused by the target's limits (then it is dropped,
        // as an expired message with nowhere to go).
        Ok(_) => {
            let _ = store.confirm(&name, m.reader).await;
        }
        Err(e) => {
            log::warn!(
                "moving expired message {} of queue {} to {} failed: {e}; it stays",
                m.seq,
                String::from_utf8_lossy(&name),
                String::from_utf8_lossy(&m.target)
            );
            store.abort(&name, m.reader);
        }
    }
}
