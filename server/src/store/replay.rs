//! The store's side of recovery: a [`RunSink`] that builds the shard's
//! queues from what `log::recovery` hands over, and the log's catalog of
//! them.
//!
//! Recovery hands over runs of messages, not locators: each becomes a paged
//! run of the queue's backlog (see `queue::Backlog`), so a restart costs
//! memory per (queue, segment), not per message, and the first take of a
//! queue reads its window.

use std::rc::Rc;

use super::state::State;
use crate::idhash::IdMap;
use crate::log::recovery::{FoundQueue, FoundRun, RunSink};
use crate::log::writer::CatalogEntry;
use crate::queue::{Backlog, Paged, Queue};

/// The queues of a shard as recovery finds them.
#[derive(Default)]
pub(super) struct Rebuild {
    queues: IdMap<u32, (FoundQueue, Vec<FoundRun>)>,
}

impl RunSink for Rebuild {
    fn reserve(&mut self, queues: usize) {
        self.queues.reserve(queues);
    }

    fn queue(&mut self, q: FoundQueue) {
        self.queues.insert(q.id, (q, Vec::new()));
    }

    fn run(&mut self, queue: u32, run: FoundRun) {
        if let Some((_, runs)) = self.queues.get_mut(&queue) {
            runs.push(run);
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
        for (_, (found, mut runs)) in self.queues {
            catalog.push((
                found.id,
                CatalogEntry {
                    name: found.name.clone(),
                    head: found.head,
                    tail: found.tail,
                    confirmed: found.confirmed,
                    restated: found.restated,
                },
            ));
            // They came newest segment first.
            runs.sort_unstable_by_key(|r| r.lo);
            let mut backlog = Backlog::default();
            let mut times = Vec::with_capacity(runs.len());
            for r in runs {
                if times.last().is_none_or(|&(_, t)| t != r.time) {
                    times.push((r.lo, r.time));
                }
                backlog.push_paged(Paged {
                    seg: r.seg,
                    lo: r.lo,
                    count: r.count,
                    rec_bytes: r.rec_bytes,
                    skip: r.skip,
                    pages: Rc::clone(&r.pages),
                });
            }
            let q = Queue::recovered(found.id, found.name, found.tail, backlog, times);
            state.items += q.queued().items();
            state.bytes += q.queued().bytes();
            state.fan_out_queues += usize::from(q.name().contains(&b'+'));
            state.names.insert(q.name().into(), q.id());
            state.queues.insert(q.id(), q);
        }
        catalog
    }
}
