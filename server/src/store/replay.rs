//! The store's side of recovery: a [`RunSink`] that builds the shard's
//! queues from what `log::recovery` hands over, and the log's catalog of
//! them.
//!
//! Recovery hands over runs of messages, not locators: each becomes a paged
//! run of the queue's backlog (see `queue::Backlog`), so a restart costs
//! memory per (queue, segment), not per message, and the first take of a
//! queue reads its window. A run shorter than a paged run is worth comes
//! as its messages, kept resident as a running shard keeps them.
//!
//! The queues are built in place as their runs come, newest first, each
//! put below the ones before: nothing is collected per queue on the way
//! (a million queues restart without a million lists to sort). A run that
//! comes above one already there (a compaction copy in a newer segment of
//! an older message) is set aside, and its queue rebuilt in order at the
//! end.

use super::state::{QueueTable, State};
use crate::idhash::IdWalk;
use crate::log::recovery::{FoundQueue, FoundRun, RunSink};
use crate::log::writer::CatalogEntry;
use crate::log::Loc;
use crate::queue::{self, Dropped, Paged, Queue};

/// The queues of a shard as recovery finds them.
#[derive(Default)]
pub(super) struct Rebuild {
    /// By id, as recovery hands them over … (laid out as the queue table
    /// keeps them: they become it without a copy)
    queues: Vec<Queue>,
    /// … and their ids, to find them by.
    ids: Vec<u32>,
    /// The runs of a segment come by id.
    walk: IdWalk,
    catalog: Vec<(u32, CatalogEntry)>,
    /// Messages that came above some of their queue's (by position in
    /// `queues`).
    late: Vec<(usize, Piece)>,
}

/// A message or a paged run, with the Unix second its first message was
/// enqueued.
enum Piece {
    Msg(Loc, u32),
    Run(Paged, u32),
}

impl Piece {
    fn seq(&self) -> u64 {
        match self {
            Piece::Msg(loc, _) => loc.seq,
            Piece::Run(p, _) => p.lo,
        }
    }
}

impl RunSink for Rebuild {
    fn reserve(&mut self, queues: usize) {
        self.queues.reserve_exact(queues);
        self.ids.reserve_exact(queues);
        self.catalog.reserve_exact(queues);
    }

    fn queue(&mut self, found: FoundQueue) {
        debug_assert!(self.ids.last().is_none_or(|&last| last < found.id));
        let name = found.name;
        self.catalog.push((
            found.id,
            CatalogEntry {
                name: name.clone(),
                head: found.head,
                confirmed: found.confirmed,
                restated: found.restated,
            },
        ));
        self.ids.push(found.id);
        self.queues
            .push(Queue::recovered(found.id, name, found.tail));
    }

    fn resident_below(&self) -> u64 {
        queue::min_paged() as u64
    }

    fn run(&mut self, queue: u32, run: FoundRun) {
        let paged = Paged {
            seg: run.seg,
            lo: run.lo,
            count: run.count,
            rec_bytes: run.rec_bytes,
            skip: run.skip,
            pages: run.pages,
        };
        self.put(queue, Piece::Run(paged, run.time));
    }

    fn message(&mut self, queue: u32, loc: Loc, time: u32) {
        self.put(queue, Piece::Msg(loc, time));
    }
}

impl Rebuild {
    /// Puts `piece` below queue `id`'s messages, or aside when it is not
    /// below them.
    fn put(&mut self, id: u32, piece: Piece) {
        let Some(i) = self.walk.find(&self.ids, id) else {
            return;
        };
        let q = &mut self.queues[i];
        if q.queued().first_seq().is_some_and(|s| s <= piece.seq()) {
            self.late.push((i, piece));
            return;
        }
        match piece {
            Piece::Msg(loc, time) => {
                q.queued_mut().push_front(loc);
                q.enqueued_before(loc.seq, time);
            }
            Piece::Run(p, time) => {
                q.enqueued_before(p.lo, time);
                q.queued_mut().push_front_paged(p);
            }
        }
    }

    /// Rebuilds queue `i` in sequence order with `late` added.
    fn merge_late(&mut self, i: usize, late: impl Iterator<Item = Piece>) {
        let q = &mut self.queues[i];
        let mut pieces: Vec<Piece> = late.collect();
        while let Some(d) = q.queued_mut().drop_front() {
            pieces.push(match d {
                Dropped::One(loc) => Piece::Msg(loc, q.time_of(loc.seq).unwrap_or(0)),
                Dropped::Run(p) => {
                    let time = q.time_of(p.lo).unwrap_or(0);
                    Piece::Run(p, time)
                }
            });
        }
        pieces.sort_unstable_by_key(Piece::seq);
        let mut fresh = Queue::recovered(q.id(), q.name_rc(), q.tail());
        for piece in pieces {
            match piece {
                Piece::Msg(loc, time) => {
                    fresh.enqueued_at(loc.seq, time);
                    fresh.queued_mut().push(loc);
                }
                Piece::Run(p, time) => {
                    fresh.enqueued_at(p.lo, time);
                    fresh.queued_mut().push_paged(p);
                }
            }
        }
        *q = fresh;
    }

    /// Puts the queues into `state`; returns the log's catalog of them.
    pub(super) fn install(mut self, state: &mut State) -> Vec<(u32, CatalogEntry)> {
        let mut late = std::mem::take(&mut self.late);
        late.sort_by_key(|(i, _)| *i);
        let mut late = late.into_iter().peekable();
        while let Some(&(i, _)) = late.peek() {
            let mine = std::iter::from_fn(|| late.next_if(|(j, _)| *j == i)).map(|(_, p)| p);
            self.merge_late(i, mine);
        }
        state.names.reserve(self.queues.len());
        for (pos, q) in self.queues.iter().enumerate() {
            state.items += q.queued().items();
            state.bytes += q.queued().bytes();
            state.fan_out_queues += usize::from(q.name().contains(&b'+'));
            // The table below keeps the queues in this order.
            state.names.insert(q.name_rc(), q.id(), pos as u32);
        }
        debug_assert!(state.queues.is_empty());
        state.queues = QueueTable::from_parts(self.ids, self.queues);
        self.catalog
    }
}
