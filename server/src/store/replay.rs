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
//! The queues are built as their runs come, newest first, each put below
//! the ones before: a queue's few messages in place (a million queues
//! restart without a million lists to sort), and from a queue's first
//! paged run on, its pieces on a stack of its own, turned over once at the
//! end (a deep queue has a run per segment, and putting each below the
//! others in place moved them all every time: at 100M messages over 10,000
//! queues, 40% of the restart). A run that comes above one already there
//! (a compaction copy in a newer segment of an older message) is set
//! aside, and its queue rebuilt in order at the end.

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
    /// Per queue (by position), its stack in `stacks`, or [`NO_STACK`].
    stack_of: Vec<u32>,
    /// The pieces of queues that have paged runs, newest first: all below
    /// the messages their backlog holds.
    stacks: Vec<Vec<Piece>>,
}

const NO_STACK: u32 = u32::MAX;

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

    fn time(&self) -> u32 {
        match self {
            Piece::Msg(_, time) | Piece::Run(_, time) => *time,
        }
    }
}

impl RunSink for Rebuild {
    fn reserve(&mut self, queues: usize) {
        self.queues.reserve_exact(queues);
        self.ids.reserve_exact(queues);
        self.stack_of.reserve_exact(queues);
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
        self.stack_of.push(NO_STACK);
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
        let stack = self.stack_of[i];
        let first = match stack {
            NO_STACK => q.queued().first_seq(),
            s => self.stacks[s as usize].last().map(Piece::seq),
        };
        if first.is_some_and(|s| s <= piece.seq()) {
            self.late.push((i, piece));
            return;
        }
        match piece {
            Piece::Msg(loc, time) if stack == NO_STACK => {
                q.queued_mut().push_front(loc);
                q.enqueued_before(loc.seq, time);
            }
            _ => {
                // Its time is noted when the stack is turned over.
                let s = if stack == NO_STACK {
                    self.stack_of[i] = self.stacks.len() as u32;
                    self.stacks.push(Vec::new());
                    self.stacks.len() - 1
                } else {
                    stack as usize
                };
                let stack = &mut self.stacks[s];
                if stack.len() == stack.capacity() {
                    // A quarter more at a time, as a backlog's runs grow.
                    stack.reserve_exact((stack.len() / 4).max(4));
                }
                stack.push(piece);
            }
        }
    }

    /// Turns each queue's stack over into its backlog, below what the
    /// backlog already holds.
    fn unstack(&mut self) {
        let mut times = Vec::new();
        for (i, &s) in self.stack_of.iter().enumerate() {
            if s == NO_STACK {
                continue;
            }
            let stack = std::mem::take(&mut self.stacks[s as usize]);
            times.clear();
            times.extend(stack.iter().rev().map(|p| (p.seq(), p.time())));
            self.queues[i].enqueued_below(&times);
            let queued = self.queues[i].queued_mut();
            let mut above = std::mem::take(queued);
            // A run for each paged run, and one for each stretch of
            // messages (and those above).
            let runs = stack.iter().enumerate().filter(|&(j, piece)| {
                matches!(piece, Piece::Run(..)) || !matches!(stack.get(j + 1), Some(Piece::Msg(..)))
            });
            queued.reserve_runs(runs.count() + usize::from(above.items() > 0));
            for piece in stack.into_iter().rev() {
                match piece {
                    Piece::Msg(loc, _) => queued.push(loc),
                    Piece::Run(p, _) => queued.push_paged(p),
                }
            }
            while let Some(d) = above.drop_front() {
                match d {
                    Dropped::One(loc) => queued.push(loc),
                    Dropped::Run(p) => queued.push_paged(p),
                }
            }
        }
        self.stacks = Vec::new();
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
        self.unstack();
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
