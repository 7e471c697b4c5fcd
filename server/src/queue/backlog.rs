//! A queue's queued messages: in memory near the head and in the open
//! segment, read from the index files everywhere else.
//!
//! # Why runs
//! A backlog of a hundred million messages must not cost a locator each in
//! memory. So the backlog is a sequence of runs, in sequence order:
//! - a **resident** run keeps a [`Loc`] per message: the messages of the
//!   open segment (their index is not written yet), the window at the head
//!   that a consumer takes from, and the odd message put back or copied
//!   forward by compaction;
//! - a **paged** run ([`Paged`]) keeps only where a run of consecutive
//!   messages of one sealed segment is: its first sequence number, count,
//!   bytes, and where its entries are in the segment's index file
//!   ([`EntryPages`]). Its locators are read from there a window at a time
//!   ([`Backlog::page_job`], [`Backlog::paged_in`]) as the head reaches it.
//!
//! When a segment's index is written, its messages beyond the head window
//! become paged runs ([`Backlog::page_out`]); a restart makes every sealed
//! segment's messages paged runs at once, from the index summaries. A
//! stretch too short to be worth a paged run ([`min_paged`]) stays
//! resident, after a restart too. Memory is then the head window, the open
//! segment's locators and a few dozen bytes per (queue, segment): flat in
//! the depth of the backlog.
//!
//! A paged run has no holes: every sequence number in it is queued. What
//! would make one (a message dropped as damaged, one taken out of order)
//! happens to resident messages only, or splits the run.
//!
//! The counters are kept here for the same reason: a paged backlog cannot
//! sum what it does not hold in memory.
//!
//! # Few messages
//! A shard may hold a million queues of a message or two each. A deque of
//! runs holding a deque of locators would cost each of them two allocations
//! (~180 bytes with the allocator's headers), more than the queue itself; so
//! while nothing is paged and at most two messages are queued, their
//! locators are kept in place ([`Runs::Few`]). A third message moves them
//! into the deques, and they come back in place once at most one is left
//! (not at two, so a queue going between two and three messages does not
//! allocate on every set).

use std::collections::VecDeque;

use smallvec::SmallVec;

use crate::log::index::{EntryPages, IndexEntry};
use crate::log::{record, Loc, Pos};

/// Messages kept resident at the head, at most: what a window read brings
/// in, and what a sealed segment's paging leaves in memory for a consumer
/// that keeps up. A window is read ahead once fewer than half a window
/// are left before a paged run.
pub const WINDOW: usize = 1024;
/// Locators a shard keeps resident at its queues' heads, all queues
/// together: with more queues than `HEAD_BUDGET / WINDOW` each keeps a
/// smaller window ([`window_for`]), so that ten thousand deep queues do
/// not hold ten million locators (240 MB) that no consumer may read soon.
const HEAD_BUDGET: usize = 1 << 20;
/// The smallest window, however many queues share the budget.
const MIN_WINDOW: usize = 32;
/// Shorter stretches of a segment stay resident when it is paged out:
/// a paged run costs more than that many locators.
const MIN_PAGED: usize = 8;

#[cfg(feature = "sim")]
thread_local! {
    static SMALL_WINDOW: std::cell::Cell<Option<usize>> = const { std::cell::Cell::new(None) };
}

/// Makes the window `n` messages on this thread (tests whose workloads are
/// too small to page with the real one: the crash-point explorers).
#[cfg(feature = "sim")]
pub fn set_window(n: usize) {
    SMALL_WINDOW.with(|w| w.set(Some(n.max(2))));
}

/// Messages kept resident at the head (see [`WINDOW`]).
pub fn window() -> usize {
    #[cfg(feature = "sim")]
    if let Some(n) = SMALL_WINDOW.with(|w| w.get()) {
        return n;
    }
    WINDOW
}

/// The window of each of `queues` queues that share a shard's budget of
/// resident head locators: [`window`] for up to a thousand of them, less
/// for more, never below [`MIN_WINDOW`].
pub fn window_for(queues: usize) -> usize {
    let max = window();
    (HEAD_BUDGET / queues.max(1)).clamp(MIN_WINDOW.min(max), max)
}

/// Runs of a sealed segment shorter than this stay resident (see
/// [`Backlog::page_out`]; a restart keeps them the same way).
pub fn min_paged() -> usize {
    MIN_PAGED.min(window())
}

/// Queued messages, in sequence order (with holes where a message's record
/// was found damaged or a message is open).
#[derive(Debug, Default)]
pub struct Backlog {
    runs: Runs,
    items: u64,
    /// Sum of the queued bodies' lengths.
    bytes: u64,
}

/// The runs (see "Few messages" above).
#[derive(Debug)]
enum Runs {
    /// Nothing paged, at most two messages: in place.
    Few(Few),
    /// Anything else; no run is empty.
    Many(RunList),
}

/// Runs in sequence order. The usual one is kept in place: a queue with
/// more than a few messages mostly has one run, and after a restart one
/// paged run per segment it has messages in. A run leaves from the front
/// by moving the others, which happens once per run, not per message.
type RunList = SmallVec<[Run; 1]>;

impl Default for Runs {
    fn default() -> Self {
        Runs::Few(Few::EMPTY)
    }
}

/// Up to two resident locators, in sequence order.
#[derive(Clone, Copy, Debug)]
struct Few {
    locs: [Loc; 2],
    /// How many of `locs` are queued (an enum, so that [`Runs`] can keep
    /// its tag in the values it does not take).
    len: FewLen,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum FewLen {
    Zero,
    One,
    Two,
}

impl Few {
    const NONE: Loc = Loc {
        seq: 0,
        pos: Pos { seg: 0, off: 0 },
        len: 0,
        expires: 0,
    };
    const EMPTY: Few = Few {
        locs: [Few::NONE; 2],
        len: FewLen::Zero,
    };

    fn as_slice(&self) -> &[Loc] {
        &self.locs[..self.len as usize]
    }

    fn as_mut_slice(&mut self) -> &mut [Loc] {
        &mut self.locs[..self.len as usize]
    }

    fn set_len(&mut self, n: usize) {
        self.len = match n {
            0 => FewLen::Zero,
            1 => FewLen::One,
            _ => FewLen::Two,
        };
    }

    /// Puts `loc` at position `at`, unless two are held already (`false`).
    fn insert(&mut self, at: usize, loc: Loc) -> bool {
        let n = self.len as usize;
        if n == 2 {
            return false;
        }
        self.locs.copy_within(at..n, at + 1);
        self.locs[at] = loc;
        self.set_len(n + 1);
        true
    }

    fn remove(&mut self, at: usize) -> Loc {
        let n = self.len as usize;
        let loc = self.locs[at];
        self.locs.copy_within(at + 1..n, at);
        self.set_len(n - 1);
        loc
    }
}

#[derive(Debug)]
enum Run {
    Resident(VecDeque<Loc>),
    Paged(Paged),
}

/// Consecutive messages `lo .. lo + count` of one sealed segment, all
/// queued, whose locators are in the segment's index file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Paged {
    pub seg: u32,
    pub lo: u64,
    /// At most a segment's records: a `u32`, as the segment's size
    /// (`--segment-size`, at most 2 GiB) is.
    pub count: u32,
    /// Sum of their record lengths (headers included).
    pub rec_bytes: u32,
    /// Index of `lo`'s entry among the span's (see `pages`).
    pub skip: u32,
    /// Where the span's entries are in the index file.
    pub pages: EntryPages,
}

impl Paged {
    /// The sequence number after its last message.
    pub fn end(&self) -> u64 {
        self.lo + u64::from(self.count)
    }

    pub fn body_bytes(&self) -> u64 {
        u64::from(self.rec_bytes) - u64::from(self.count) * record::HEADER_LEN as u64
    }
}

/// A window to read: entries `skip .. skip + n` of `pages`, for the paged
/// run of segment `seg` that starts at `lo`.
#[derive(Clone, Debug)]
pub struct PageJob {
    pub seg: u32,
    pub lo: u64,
    pub skip: u32,
    pub n: usize,
    pub pages: EntryPages,
}

/// What [`Backlog::drain`] hands over for each message or run it drops.
pub enum Dropped {
    One(Loc),
    Run(Paged),
}

impl Backlog {
    /// The backlog of `locs`, in sequence order (tests, and resident
    /// recovery).
    pub fn from_locs(locs: Vec<Loc>) -> Backlog {
        let mut b = Backlog::default();
        for loc in locs {
            b.push(loc);
        }
        b
    }

    /// Appends a paged run after everything queued (recovery).
    pub fn push_paged(&mut self, p: Paged) {
        debug_assert!(self.last_seq().is_none_or(|s| s < p.lo));
        if p.count == 0 {
            return;
        }
        self.items += u64::from(p.count);
        self.bytes += p.body_bytes();
        push_run(self.many(), Run::Paged(p));
    }

    /// The runs as a list, the few messages kept in place moved there
    /// first: for what is done in place only while a queue holds a few.
    fn many(&mut self) -> &mut RunList {
        if let Runs::Few(few) = self.runs {
            let mut runs = RunList::new();
            if !few.as_slice().is_empty() {
                // Room for the usual reason to come here, a third message
                // (what pushing it would grow their deque to anyway).
                let mut locs = VecDeque::with_capacity(4);
                locs.extend(few.as_slice());
                push_run(&mut runs, Run::Resident(locs));
            }
            self.runs = Runs::Many(runs);
        }
        match &mut self.runs {
            Runs::Many(runs) => runs,
            Runs::Few(_) => unreachable!(),
        }
    }

    /// Keeps the messages in place again once at most one is left and
    /// nothing is paged (see "Few messages" above).
    fn settle(&mut self) {
        let Runs::Many(runs) = &self.runs else {
            return;
        };
        let few = match runs.first() {
            None => Few::EMPTY,
            Some(Run::Resident(locs)) if runs.len() == 1 && locs.len() == 1 => Few {
                locs: [locs[0], Few::NONE],
                len: FewLen::One,
            },
            _ => return,
        };
        self.runs = Runs::Few(few);
    }

    pub fn items(&self) -> u64 {
        self.items
    }

    /// Sum of the queued bodies' lengths.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    pub fn is_empty(&self) -> bool {
        self.items == 0
    }

    /// The head, when it is resident (see [`Backlog::page_job`]).
    #[inline]
    pub fn head(&self) -> Option<&Loc> {
        match &self.runs {
            Runs::Few(few) => few.as_slice().first(),
            Runs::Many(runs) => match runs.first()? {
                Run::Resident(locs) => locs.front(),
                Run::Paged(_) => None,
            },
        }
    }

    /// The lowest queued sequence number.
    #[inline]
    pub fn first_seq(&self) -> Option<u64> {
        match &self.runs {
            Runs::Few(few) => few.as_slice().first().map(|l| l.seq),
            Runs::Many(runs) => match runs.first()? {
                Run::Resident(locs) => locs.front().map(|l| l.seq),
                Run::Paged(p) => Some(p.lo),
            },
        }
    }

    fn last_seq(&self) -> Option<u64> {
        match &self.runs {
            Runs::Few(few) => few.as_slice().last().map(|l| l.seq),
            Runs::Many(runs) => match runs.last()? {
                Run::Resident(locs) => locs.back().map(|l| l.seq),
                Run::Paged(p) => Some(p.end() - 1),
            },
        }
    }

    /// Queues `loc` at the tail; its sequence number is above every queued
    /// one.
    #[inline]
    pub fn push(&mut self, loc: Loc) {
        debug_assert!(self.last_seq().is_none_or(|s| s < loc.seq));
        self.items += 1;
        self.bytes += loc.body_len();
        if let Runs::Few(few) = &mut self.runs {
            if few.insert(few.as_slice().len(), loc) {
                return;
            }
        }
        let runs = self.many();
        match runs.last_mut() {
            Some(Run::Resident(locs)) => locs.push_back(loc),
            _ => push_run(runs, Run::Resident(VecDeque::from([loc]))),
        }
    }

    /// Makes room for `runs` more runs, exactly (recovery, which knows how
    /// many a queue's pieces make).
    pub fn reserve_runs(&mut self, runs: usize) {
        let list = self.many();
        list.reserve_exact(runs.saturating_sub(list.capacity() - list.len()));
    }

    /// Queues `loc` below every queued message (recovery, which finds a
    /// queue's messages newest first).
    pub fn push_front(&mut self, loc: Loc) {
        debug_assert!(self.first_seq().is_none_or(|s| loc.seq < s));
        self.items += 1;
        self.bytes += loc.body_len();
        if let Runs::Few(few) = &mut self.runs {
            if few.insert(0, loc) {
                return;
            }
        }
        let runs = self.many();
        match runs.first_mut() {
            Some(Run::Resident(locs)) => locs.push_front(loc),
            _ => runs.insert(0, Run::Resident(VecDeque::from([loc]))),
        }
    }

    /// Takes the head off, when it is resident.
    #[inline]
    pub fn pop(&mut self) -> Option<Loc> {
        let loc = match &mut self.runs {
            Runs::Few(few) if few.as_slice().is_empty() => return None,
            Runs::Few(few) => few.remove(0),
            Runs::Many(runs) => {
                let Run::Resident(locs) = runs.first_mut()? else {
                    return None;
                };
                let loc = locs.pop_front()?;
                if locs.is_empty() {
                    runs.remove(0);
                } else {
                    shrink(locs);
                }
                loc
            }
        };
        self.items -= 1;
        self.bytes -= loc.body_len();
        self.settle();
        Some(loc)
    }

    /// Takes the head off, a whole paged run at once when the head is one
    /// (to drop messages without reading them: `flush`).
    pub fn drop_front(&mut self) -> Option<Dropped> {
        if let Runs::Many(runs) = &mut self.runs {
            if let Some(Run::Paged(_)) = runs.first() {
                let Run::Paged(p) = runs.remove(0) else {
                    unreachable!()
                };
                self.items -= u64::from(p.count);
                self.bytes -= p.body_bytes();
                self.settle();
                return Some(Dropped::Run(p));
            }
        }
        self.pop().map(Dropped::One)
    }

    /// Queues `loc` again at its place by sequence number (it was handed
    /// out and came back): below every paged run.
    pub fn put_back(&mut self, loc: Loc) {
        self.items += 1;
        self.bytes += loc.body_len();
        if let Runs::Few(few) = &mut self.runs {
            let at = few.as_slice().partition_point(|l| l.seq < loc.seq);
            debug_assert!(few.as_slice().get(at).is_none_or(|l| l.seq != loc.seq));
            if few.insert(at, loc) {
                return;
            }
        }
        let runs = self.many();
        let i = runs.partition_point(|r| match r {
            Run::Resident(locs) => locs.front().is_some_and(|l| l.seq < loc.seq),
            Run::Paged(p) => p.lo < loc.seq,
        });
        if let Some(Run::Resident(locs)) = i.checked_sub(1).map(|j| &mut runs[j]) {
            let at = locs.partition_point(|l| l.seq < loc.seq);
            debug_assert!(locs.get(at).is_none_or(|l| l.seq != loc.seq));
            locs.insert(at, loc);
            return;
        }
        // (A message handed out was resident, below every paged run.)
        debug_assert!(!matches!(
            i.checked_sub(1).map(|j| &runs[j]),
            Some(Run::Paged(_))
        ));
        match runs.get_mut(i) {
            Some(Run::Resident(locs)) => locs.push_front(loc),
            _ => runs.insert(i, Run::Resident(VecDeque::from([loc]))),
        }
    }

    /// The resident locator of `seq`.
    pub fn get(&self, seq: u64) -> Option<&Loc> {
        let runs = match &self.runs {
            Runs::Few(few) => return few.as_slice().iter().find(|l| l.seq == seq),
            Runs::Many(runs) => runs,
        };
        match &runs[run_of(runs, seq)?] {
            Run::Resident(locs) => {
                let i = locs.binary_search_by_key(&seq, |l| l.seq).ok()?;
                locs.get(i)
            }
            Run::Paged(_) => None,
        }
    }

    pub fn contains(&self, seq: u64) -> bool {
        let runs = match &self.runs {
            Runs::Few(few) => return few.as_slice().iter().any(|l| l.seq == seq),
            Runs::Many(runs) => runs,
        };
        run_of(runs, seq).is_some_and(|i| match &runs[i] {
            Run::Resident(locs) => locs.binary_search_by_key(&seq, |l| l.seq).is_ok(),
            Run::Paged(p) => p.lo <= seq,
        })
    }

    /// Is message `seq` queued with its record at `at`?
    pub fn holds_at(&self, seq: u64, at: Pos) -> bool {
        let runs = match &self.runs {
            Runs::Few(few) => return few.as_slice().iter().any(|l| l.seq == seq && l.pos == at),
            Runs::Many(runs) => runs,
        };
        run_of(runs, seq).is_some_and(|i| match &runs[i] {
            Run::Resident(locs) => locs
                .binary_search_by_key(&seq, |l| l.seq)
                .is_ok_and(|k| locs[k].pos == at),
            Run::Paged(p) => p.lo <= seq && p.seg == at.seg,
        })
    }

    /// Points message `seq` at its record's new place `to` (a compaction
    /// copy of the record of `len` bytes expiring at `expires`), if its
    /// record is at `from`. A paged message moves only from the front of
    /// its run (compaction copies a segment in order, so that is where it
    /// comes from); elsewhere it stays where it is (`false`).
    pub fn relocate(&mut self, seq: u64, from: Pos, to: Pos, len: u32, expires: u32) -> bool {
        let runs = match &mut self.runs {
            Runs::Few(few) => {
                let Some(loc) = few.as_mut_slice().iter_mut().find(|l| l.seq == seq) else {
                    return false;
                };
                if loc.pos != from {
                    return false;
                }
                loc.pos = to;
                return true;
            }
            Runs::Many(runs) => runs,
        };
        let Some(i) = run_of(runs, seq) else {
            return false;
        };
        match &mut runs[i] {
            Run::Resident(locs) => {
                let Ok(k) = locs.binary_search_by_key(&seq, |l| l.seq) else {
                    return false;
                };
                if locs[k].pos != from {
                    return false;
                }
                locs[k].pos = to;
                true
            }
            Run::Paged(p) => {
                if p.lo != seq || p.seg != from.seg {
                    return false;
                }
                p.lo += 1;
                p.count -= 1;
                p.skip += 1;
                p.rec_bytes -= len;
                let empty = p.count == 0;
                let loc = Loc {
                    seq,
                    pos: to,
                    len,
                    expires,
                };
                if empty {
                    runs.remove(i);
                }
                match i.checked_sub(1).map(|j| &mut runs[j]) {
                    Some(Run::Resident(locs)) => locs.push_back(loc),
                    _ => runs.insert(i, Run::Resident(VecDeque::from([loc]))),
                }
                merge_at(runs, i);
                self.settle();
                true
            }
        }
    }

    /// Takes out the resident messages whose records start in `[from, to)`
    /// of segment `seg` (damaged records), in sequence order. (Paged ones
    /// are filtered when their window is read: see [`Backlog::paged_in`].)
    pub fn remove_in(&mut self, seg: u32, from: u64, to: u64) -> Vec<Loc> {
        let hit = |l: &Loc| l.pos.seg == seg && (from..to).contains(&u64::from(l.pos.off));
        let mut removed = Vec::new();
        match &mut self.runs {
            Runs::Few(few) => {
                let mut kept = Few::EMPTY;
                for &l in few.as_slice() {
                    if hit(&l) {
                        removed.push(l);
                    } else {
                        kept.insert(kept.as_slice().len(), l);
                    }
                }
                *few = kept;
            }
            Runs::Many(runs) => {
                for run in runs.iter_mut() {
                    if let Run::Resident(locs) = run {
                        if locs.iter().any(hit) {
                            removed.extend(locs.iter().copied().filter(hit));
                            locs.retain(|l| !hit(l));
                            shrink(locs);
                        }
                    }
                }
                runs.retain(|r| !matches!(r, Run::Resident(locs) if locs.is_empty()));
            }
        }
        self.items -= removed.len() as u64;
        self.bytes -= removed.iter().map(Loc::body_len).sum::<u64>();
        self.settle();
        removed
    }

    /// The runs past the few kept in place, if they are not.
    fn run_list(&self) -> Option<&RunList> {
        match &self.runs {
            Runs::Few(_) => None,
            Runs::Many(runs) => Some(runs),
        }
    }

    /// The resident messages, in sequence order.
    pub fn resident(&self) -> impl Iterator<Item = &Loc> + '_ {
        let few = match &self.runs {
            Runs::Few(few) => few.as_slice(),
            Runs::Many(_) => &[],
        };
        let many = self.run_list().into_iter().flatten().flat_map(|r| match r {
            Run::Resident(locs) => Some(locs.iter()),
            Run::Paged(_) => None,
        });
        few.iter().chain(many.flatten())
    }

    /// The paged runs.
    pub fn paged(&self) -> impl Iterator<Item = &Paged> + '_ {
        self.run_list()
            .into_iter()
            .flatten()
            .filter_map(|r| match r {
                Run::Paged(p) => Some(p),
                Run::Resident(_) => None,
            })
    }

    /// Whether a take can be served from what is resident: the first
    /// resident message before any paged run that `gone` does not drop
    /// (expired) exists, or nothing is queued behind. Otherwise the window
    /// to read first.
    pub fn ready(&self, gone: impl Fn(&Loc) -> bool) -> Result<(), PageJob> {
        let Some(runs) = self.run_list() else {
            return Ok(()); // nothing paged
        };
        for run in runs {
            match run {
                Run::Resident(locs) => {
                    if locs.iter().any(|l| !gone(l)) {
                        return Ok(());
                    }
                }
                Run::Paged(p) => return Err(job(p, window())),
            }
        }
        Ok(())
    }

    /// The window of the first paged run, if there is one: up to `window`
    /// messages.
    pub fn next_window(&self, window: usize) -> Option<PageJob> {
        self.paged().next().map(|p| job(p, window))
    }

    /// The window (up to `window` messages) to read ahead, if fewer than
    /// half that many are resident before the first paged run.
    #[inline]
    pub fn page_job(&self, window: usize) -> Option<PageJob> {
        let runs = self.run_list()?; // the usual case: a few, nothing paged
        if runs.len() <= 1 && !matches!(runs.first(), Some(Run::Paged(_))) {
            return None;
        }
        let mut resident = 0;
        for run in runs {
            match run {
                Run::Resident(locs) => {
                    resident += locs.len();
                    if resident >= window / 2 {
                        return None;
                    }
                }
                Run::Paged(p) => return Some(job(p, window)),
            }
        }
        None
    }

    /// Window `entries` of the paged run of segment `seg` at `lo` was read
    /// (see [`PageJob`]): they become resident, but for those whose records
    /// `damaged` says are unreadable, which are dropped and returned. A
    /// window for a run that has changed meanwhile (moved, consumed,
    /// deleted) is ignored: `None`.
    pub fn paged_in(
        &mut self,
        seg: u32,
        lo: u64,
        entries: &[IndexEntry],
        damaged: impl Fn(u32) -> bool,
    ) -> Option<Vec<Loc>> {
        let Runs::Many(runs) = &mut self.runs else {
            return None; // nothing paged
        };
        let i = runs.iter().position(|r| matches!(r, Run::Paged(_)))?;
        let Run::Paged(p) = &mut runs[i] else {
            unreachable!()
        };
        if p.seg != seg || p.lo != lo || entries.is_empty() {
            return None;
        }
        let n = entries.len().min(p.count as usize);
        let consecutive = entries[..n]
            .iter()
            .enumerate()
            .all(|(k, e)| e.seq == lo + k as u64);
        if !consecutive {
            log::warn!(
                "index entries of segment ordinal {seg} do not match its summary: window ignored"
            );
            return None;
        }
        let mut window = VecDeque::with_capacity(n);
        let mut dropped = Vec::new();
        for e in &entries[..n] {
            let loc = e.loc(seg);
            p.rec_bytes -= e.len;
            if damaged(e.off) {
                dropped.push(loc);
            } else {
                window.push_back(loc);
            }
        }
        p.lo += n as u64;
        p.count -= n as u32;
        p.skip += n as u32;
        if p.count == 0 {
            runs.remove(i);
        }
        if !window.is_empty() {
            match i.checked_sub(1).map(|j| &mut runs[j]) {
                Some(Run::Resident(locs)) => locs.append(&mut window),
                _ => runs.insert(i, Run::Resident(window)),
            }
        }
        self.items -= dropped.len() as u64;
        self.bytes -= dropped.iter().map(Loc::body_len).sum::<u64>();
        self.settle();
        Some(dropped)
    }

    /// Segment `seg`'s index is written, with the spans `spans` of this
    /// queue (`(lo, pages)`): its resident messages there beyond
    /// the first `window` become paged runs. Returns how many locators left
    /// memory.
    pub fn page_out(&mut self, seg: u32, spans: &[(u64, EntryPages)], window: usize) -> usize {
        if spans.is_empty() || self.items as usize <= window {
            return 0;
        }
        let mut kept = 0usize;
        let mut paged = 0usize;
        let runs = self.many();
        // In place: a deep queue has a run per segment, and only its
        // resident runs past the window change (usually the last one, the
        // sealed segment's), so the others are not moved.
        let mut i = 0;
        while i < runs.len() {
            match &runs[i] {
                Run::Resident(locs) if kept + locs.len() > window => {}
                Run::Resident(locs) => {
                    kept += locs.len();
                    i += 1;
                    continue;
                }
                Run::Paged(_) => {
                    i += 1;
                    continue;
                }
            }
            let Run::Resident(locs) = runs.remove(i) else {
                unreachable!("a resident run")
            };
            let mut out: Vec<Run> = Vec::new();
            let mut rest: VecDeque<Loc> = VecDeque::new();
            let mut k = 0;
            let locs: Vec<Loc> = locs.into();
            while k < locs.len() {
                if kept < window {
                    rest.push_back(locs[k]);
                    kept += 1;
                    k += 1;
                    continue;
                }
                // The longest stretch from k that one span covers whole.
                let l = locs[k];
                let span_end = |lo: u64, pages: &EntryPages| lo + u64::from(pages.count());
                let span = spans
                    .iter()
                    .find(|(lo, pages)| (*lo..span_end(*lo, pages)).contains(&l.seq));
                let mut end = k;
                if let (Some((lo, pages)), true) = (span, l.pos.seg == seg) {
                    while end < locs.len()
                        && locs[end].pos.seg == seg
                        && locs[end].seq == l.seq + (end - k) as u64
                        && locs[end].seq < span_end(*lo, pages)
                    {
                        end += 1;
                    }
                    if end - k >= min_paged() {
                        if !rest.is_empty() {
                            out.push(Run::Resident(std::mem::take(&mut rest)));
                        }
                        out.push(Run::Paged(Paged {
                            seg,
                            lo: l.seq,
                            count: (end - k) as u32,
                            rec_bytes: locs[k..end].iter().map(|l| l.len).sum(),
                            skip: (l.seq - lo) as u32,
                            pages: pages.clone(),
                        }));
                        paged += end - k;
                        k = end;
                        continue;
                    }
                }
                let stop = end.max(k + 1);
                rest.extend(&locs[k..stop]);
                k = stop;
            }
            if !rest.is_empty() {
                out.push(Run::Resident(rest));
            }
            let n = out.len();
            reserve_runs(runs, n);
            runs.insert_many(i, out);
            i += n;
        }
        // Neighbouring resident runs join again.
        let mut i = 0;
        while i + 1 < runs.len() {
            let before = runs.len();
            merge_at(runs, i);
            if runs.len() == before {
                i += 1;
            }
        }
        paged
    }
}

/// Appends a run; a few runs take room for themselves only (a queue that
/// has messages in two or three segments after a restart, of a million).
fn push_run(runs: &mut RunList, run: Run) {
    reserve_runs(runs, 1);
    runs.push(run);
}

/// Makes room for `n` more runs: exactly while there are a few, then a
/// quarter more at a time, not double. Ten thousand deep queues keep a run
/// per segment each, millions of them, and doubling would leave up to half
/// of that memory unused.
fn reserve_runs(runs: &mut RunList, n: usize) {
    if runs.len() + n > runs.capacity() {
        let more = if runs.len() < 4 {
            n
        } else {
            n.max(runs.len() / 4)
        };
        runs.reserve_exact(more);
    }
}

/// The run holding `seq`, by position.
fn run_of(runs: &RunList, seq: u64) -> Option<usize> {
    let i = runs.partition_point(|r| match r {
        Run::Resident(locs) => locs.back().is_some_and(|l| l.seq < seq),
        Run::Paged(p) => p.end() <= seq,
    });
    (i < runs.len()).then_some(i)
}

/// Joins the resident runs at `i` and `i + 1`, if both are.
fn merge_at(runs: &mut RunList, i: usize) {
    if let (Some(Run::Resident(_)), Some(Run::Resident(_))) = (runs.get(i), runs.get(i + 1)) {
        let Run::Resident(mut next) = runs.remove(i + 1) else {
            unreachable!()
        };
        if let Run::Resident(locs) = &mut runs[i] {
            locs.append(&mut next);
        }
    }
}

fn job(p: &Paged, window: usize) -> PageJob {
    PageJob {
        seg: p.seg,
        lo: p.lo,
        skip: p.skip,
        n: (p.count as usize).min(window),
        pages: p.pages.clone(),
    }
}

/// Capacity kept however far a resident run shrinks, in locators.
const KEPT: usize = 64;

/// Gives memory back once a run is a quarter of its capacity (half of it
/// stays, for it to grow into again), never below a floor (so a queue that
/// goes from empty to a few messages and back on every set and get never
/// reallocates).
fn shrink(locs: &mut VecDeque<Loc>) {
    let cap = locs.capacity();
    if cap > KEPT && locs.len() < cap / 4 {
        locs.shrink_to((locs.len() * 2).max(KEPT));
    }
}

#[cfg(test)]
#[path = "backlog_tests.rs"]
mod tests;
