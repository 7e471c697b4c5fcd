//! The store's side of recovery: a [`Replay`] sink that builds the shard's
//! queues from what `log::recovery` hands over, and the log's catalog of
//! them.
//!
//! Why a sink: recovery used to return every queue with its locators in a
//! vector, copied from a first vector and into the queue's deque (90-120
//! bytes per queued message at the peak). Here each locator is kept once,
//! where it ends up ([`Arrivals`]: 24 bytes, times per second), and the
//! queue takes that buffer as its deque without a copy.

use super::state::State;
use crate::idhash::IdMap;
use crate::log::recovery::{Arrivals, FoundQueue, Replay};
use crate::log::writer::CatalogEntry;
use crate::log::Loc;
use crate::queue::Queue;

/// The queues of a shard as recovery finds them.
#[derive(Default)]
pub(super) struct Rebuild {
    queues: IdMap<u32, (FoundQueue, Arrivals)>,
}

impl Replay for Rebuild {
    fn queue(&mut self, q: FoundQueue) {
        self.queues.insert(q.id, (q, Arrivals::default()));
    }

    fn message(&mut self, queue: u32, loc: Loc, time: u32) {
        if let Some((_, msgs)) = self.queues.get_mut(&queue) {
            msgs.push(loc, time);
        }
    }

    fn settle(&mut self, superseded: &mut dyn FnMut(Loc)) {
        for (_, msgs) in self.queues.values_mut() {
            msgs.settle(superseded);
        }
    }
}

impl Rebuild {
    /// How many queues.
    pub(super) fn len(&self) -> usize {
        self.queues.len()
    }

    /// Puts the queues into `state`; returns the log's catalog of them.
    pub(super) fn install(self, state: &mut State) -> Vec<(u32, CatalogEntry)> {
        let mut catalog = Vec::with_capacity(self.queues.len());
        for (_, (found, msgs)) in self.queues {
            let (locs, runs) = msgs.into_parts();
            catalog.push((
                found.id,
                CatalogEntry {
                    name: found.name.clone(),
                    head: found.head,
                    tail: found.tail,
                    confirmed: found.confirmed,
                },
            ));
            let q = Queue::recovered(found.id, found.name, found.tail, locs, runs);
            state.items += q.queued().items();
            state.bytes += q.queued().bytes();
            state.fan_out_queues += usize::from(q.name().contains(&b'+'));
            state.names.insert(q.name().into(), q.id());
            state.queues.insert(q.id(), q);
        }
        catalog
    }
}
