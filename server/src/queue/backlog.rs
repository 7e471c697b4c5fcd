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
//! segment's messages paged runs at once, from the index summaries. Memory
//! is then the head window, the open segment's locators and a few dozen
//! bytes per (queue, segment): flat in the depth of the backlog.
//!
//! A paged run has no holes: every sequence number in it is queued. What
//! would make one (a message dropped as damaged, one taken out of order)
//! happens to resident messages only, or splits the run.
//!
//! The counters are kept here for the same reason: a paged backlog cannot
//! sum what it does not hold in memory.

use std::collections::VecDeque;
use std::rc::Rc;

use crate::log::index::{EntryPages, IndexEntry};
use crate::log::{record, Loc, Pos};

/// Messages kept resident at the head: what a window read brings in, and
/// what a sealed segment's paging leaves in memory for a consumer that
/// keeps up.
pub const WINDOW: usize = 1024;
/// A window is read ahead once fewer than this many resident messages are
/// left before a paged run.
pub const LOW_WATER: usize = WINDOW / 2;
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

fn low_water() -> usize {
    window() / 2
}

fn min_paged() -> usize {
    MIN_PAGED.min(window())
}

/// Queued messages, in sequence order (with holes where a message's record
/// was found damaged or a message is open).
#[derive(Debug, Default)]
pub struct Backlog {
    runs: VecDeque<Run>,
    items: u64,
    /// Sum of the queued bodies' lengths.
    bytes: u64,
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
    pub count: u64,
    /// Sum of their record lengths (headers included).
    pub rec_bytes: u64,
    /// Index of `lo`'s entry among the span's (see `pages`).
    pub skip: u32,
    /// Where the span's entries are in the index file.
    pub pages: Rc<EntryPages>,
}

impl Paged {
    pub fn body_bytes(&self) -> u64 {
        self.rec_bytes - self.count * record::HEADER_LEN as u64
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
    pub pages: Rc<EntryPages>,
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
        self.items += p.count;
        self.bytes += p.body_bytes();
        self.push_run(Run::Paged(p));
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
        match self.runs.front()? {
            Run::Resident(locs) => locs.front(),
            Run::Paged(_) => None,
        }
    }

    /// The lowest queued sequence number.
    #[inline]
    pub fn first_seq(&self) -> Option<u64> {
        match self.runs.front()? {
            Run::Resident(locs) => locs.front().map(|l| l.seq),
            Run::Paged(p) => Some(p.lo),
        }
    }

    fn last_seq(&self) -> Option<u64> {
        match self.runs.back()? {
            Run::Resident(locs) => locs.back().map(|l| l.seq),
            Run::Paged(p) => Some(p.lo + p.count - 1),
        }
    }

    /// Queues `loc` at the tail; its sequence number is above every queued
    /// one.
    #[inline]
    pub fn push(&mut self, loc: Loc) {
        debug_assert!(self.last_seq().is_none_or(|s| s < loc.seq));
        self.items += 1;
        self.bytes += loc.body_len();
        match self.runs.back_mut() {
            Some(Run::Resident(locs)) => locs.push_back(loc),
            _ => self.push_run(Run::Resident(VecDeque::from([loc]))),
        }
    }

    /// Appends a run; the first one allocates room for itself only (most
    /// queues of a shard with many hold one run).
    fn push_run(&mut self, run: Run) {
        if self.runs.capacity() == 0 {
            self.runs.reserve_exact(1);
        }
        self.runs.push_back(run);
    }

    /// Takes the head off, when it is resident.
    #[inline]
    pub fn pop(&mut self) -> Option<Loc> {
        let Run::Resident(locs) = self.runs.front_mut()? else {
            return None;
        };
        let loc = locs.pop_front()?;
        if locs.is_empty() {
            self.runs.pop_front();
        } else {
            shrink(locs);
        }
        self.items -= 1;
        self.bytes -= loc.body_len();
        Some(loc)
    }

    /// Takes the head off, a whole paged run at once when the head is one
    /// (to drop messages without reading them: `flush`).
    pub fn drop_front(&mut self) -> Option<Dropped> {
        if let Some(Run::Paged(_)) = self.runs.front() {
            let Some(Run::Paged(p)) = self.runs.pop_front() else {
                unreachable!()
            };
            self.items -= p.count;
            self.bytes -= p.body_bytes();
            return Some(Dropped::Run(p));
        }
        self.pop().map(Dropped::One)
    }

    /// Queues `loc` again at its place by sequence number (it was handed
    /// out and came back): below every paged run.
    pub fn put_back(&mut self, loc: Loc) {
        self.items += 1;
        self.bytes += loc.body_len();
        let i = self.runs.partition_point(|r| match r {
            Run::Resident(locs) => locs.front().is_some_and(|l| l.seq < loc.seq),
            Run::Paged(p) => p.lo < loc.seq,
        });
        if let Some(Run::Resident(locs)) = i.checked_sub(1).map(|j| &mut self.runs[j]) {
            let at = locs.partition_point(|l| l.seq < loc.seq);
            debug_assert!(locs.get(at).is_none_or(|l| l.seq != loc.seq));
            locs.insert(at, loc);
            return;
        }
        // (A message handed out was resident, below every paged run.)
        debug_assert!(!matches!(
            i.checked_sub(1).map(|j| &self.runs[j]),
            Some(Run::Paged(_))
        ));
        match self.runs.get_mut(i) {
            Some(Run::Resident(locs)) => locs.push_front(loc),
            _ => self.runs.insert(i, Run::Resident(VecDeque::from([loc]))),
        }
    }

    /// The run holding `seq`, by position.
    fn run_of(&self, seq: u64) -> Option<usize> {
        let i = self.runs.partition_point(|r| match r {
            Run::Resident(locs) => locs.back().is_some_and(|l| l.seq < seq),
            Run::Paged(p) => p.lo + p.count <= seq,
        });
        (i < self.runs.len()).then_some(i)
    }

    /// The resident locator of `seq`.
    pub fn get(&self, seq: u64) -> Option<&Loc> {
        match &self.runs[self.run_of(seq)?] {
            Run::Resident(locs) => {
                let i = locs.binary_search_by_key(&seq, |l| l.seq).ok()?;
                locs.get(i)
            }
            Run::Paged(_) => None,
        }
    }

    pub fn contains(&self, seq: u64) -> bool {
        self.run_of(seq).is_some_and(|i| match &self.runs[i] {
            Run::Resident(locs) => locs.binary_search_by_key(&seq, |l| l.seq).is_ok(),
            Run::Paged(p) => p.lo <= seq,
        })
    }

    /// Is message `seq` queued with its record at `at`?
    pub fn holds_at(&self, seq: u64, at: Pos) -> bool {
        self.run_of(seq).is_some_and(|i| match &self.runs[i] {
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
        let Some(i) = self.run_of(seq) else {
            return false;
        };
        match &mut self.runs[i] {
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
                p.rec_bytes -= u64::from(len);
                let empty = p.count == 0;
                let loc = Loc {
                    seq,
                    pos: to,
                    len,
                    expires,
                };
                if empty {
                    self.runs.remove(i);
                }
                match i.checked_sub(1).map(|j| &mut self.runs[j]) {
                    Some(Run::Resident(locs)) => locs.push_back(loc),
                    _ => self.runs.insert(i, Run::Resident(VecDeque::from([loc]))),
                }
                self.merge_at(i);
                true
            }
        }
    }

    /// Joins the resident runs at `i` and `i + 1`, if both are.
    fn merge_at(&mut self, i: usize) {
        if let (Some(Run::Resident(_)), Some(Run::Resident(_))) =
            (self.runs.get(i), self.runs.get(i + 1))
        {
            let Some(Run::Resident(mut next)) = self.runs.remove(i + 1) else {
                unreachable!()
            };
            if let Run::Resident(locs) = &mut self.runs[i] {
                locs.append(&mut next);
            }
        }
    }

    /// Takes out the resident messages whose records start in `[from, to)`
    /// of segment `seg` (damaged records), in sequence order. (Paged ones
    /// are filtered when their window is read: see [`Backlog::paged_in`].)
    pub fn remove_in(&mut self, seg: u32, from: u64, to: u64) -> Vec<Loc> {
        let hit = |l: &Loc| l.pos.seg == seg && (from..to).contains(&u64::from(l.pos.off));
        let mut removed = Vec::new();
        for run in &mut self.runs {
            if let Run::Resident(locs) = run {
                if locs.iter().any(hit) {
                    removed.extend(locs.iter().copied().filter(hit));
                    locs.retain(|l| !hit(l));
                    shrink(locs);
                }
            }
        }
        self.runs
            .retain(|r| !matches!(r, Run::Resident(locs) if locs.is_empty()));
        self.items -= removed.len() as u64;
        self.bytes -= removed.iter().map(Loc::body_len).sum::<u64>();
        removed
    }

    /// The resident messages, in sequence order.
    pub fn resident(&self) -> impl Iterator<Item = &Loc> + '_ {
        self.runs
            .iter()
            .flat_map(|r| match r {
                Run::Resident(locs) => Some(locs.iter()),
                Run::Paged(_) => None,
            })
            .flatten()
    }

    /// The paged runs.
    pub fn paged(&self) -> impl Iterator<Item = &Paged> + '_ {
        self.runs.iter().filter_map(|r| match r {
            Run::Paged(p) => Some(p),
            Run::Resident(_) => None,
        })
    }

    /// Whether a take can be served from what is resident: the first
    /// resident message before any paged run that `gone` does not drop
    /// (expired) exists, or nothing is queued behind. Otherwise the window
    /// to read first.
    pub fn ready(&self, gone: impl Fn(&Loc) -> bool) -> Result<(), PageJob> {
        for run in &self.runs {
            match run {
                Run::Resident(locs) => {
                    if locs.iter().any(|l| !gone(l)) {
                        return Ok(());
                    }
                }
                Run::Paged(p) => return Err(job(p)),
            }
        }
        Ok(())
    }

    /// The window of the first paged run, if there is one.
    pub fn next_window(&self) -> Option<PageJob> {
        self.paged().next().map(job)
    }

    /// The window to read ahead, if fewer than [`LOW_WATER`] messages are
    /// resident before the first paged run.
    #[inline]
    pub fn page_job(&self) -> Option<PageJob> {
        if self.runs.len() <= 1 && !matches!(self.runs.front(), Some(Run::Paged(_))) {
            return None; // the usual case: nothing paged
        }
        let mut resident = 0;
        for run in &self.runs {
            match run {
                Run::Resident(locs) => {
                    resident += locs.len();
                    if resident >= low_water() {
                        return None;
                    }
                }
                Run::Paged(p) => return Some(job(p)),
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
        let i = self.runs.iter().position(|r| matches!(r, Run::Paged(_)))?;
        let Run::Paged(p) = &mut self.runs[i] else {
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
            let loc = Loc {
                seq: e.seq,
                pos: Pos { seg, off: e.off },
                len: e.len,
                expires: e.expires,
            };
            p.rec_bytes -= u64::from(e.len);
            if damaged(e.off) {
                dropped.push(loc);
            } else {
                window.push_back(loc);
            }
        }
        p.lo += n as u64;
        p.count -= n as u64;
        p.skip += n as u32;
        if p.count == 0 {
            self.runs.remove(i);
        }
        self.items -= dropped.len() as u64;
        self.bytes -= dropped.iter().map(Loc::body_len).sum::<u64>();
        if !window.is_empty() {
            match i.checked_sub(1).map(|j| &mut self.runs[j]) {
                Some(Run::Resident(locs)) => locs.append(&mut window),
                _ => self.runs.insert(i, Run::Resident(window)),
            }
        }
        Some(dropped)
    }

    /// Segment `seg`'s index is written, with the spans `spans` of this
    /// queue (`(lo, count, pages)`): its resident messages there beyond
    /// the head window become paged runs. Returns how many locators left
    /// memory.
    pub fn page_out(&mut self, seg: u32, spans: &[(u64, u64, Rc<EntryPages>)]) -> usize {
        if spans.is_empty() || self.items as usize <= window() {
            return 0;
        }
        let mut kept = 0usize;
        let mut paged = 0usize;
        let old = std::mem::take(&mut self.runs);
        for run in old {
            let locs = match run {
                Run::Resident(locs) if kept + locs.len() > window() => locs,
                Run::Resident(locs) => {
                    kept += locs.len();
                    self.runs.push_back(Run::Resident(locs));
                    continue;
                }
                paged_run => {
                    self.runs.push_back(paged_run);
                    continue;
                }
            };
            let mut rest: VecDeque<Loc> = VecDeque::new();
            let mut k = 0;
            let locs: Vec<Loc> = locs.into();
            while k < locs.len() {
                if kept < window() {
                    rest.push_back(locs[k]);
                    kept += 1;
                    k += 1;
                    continue;
                }
                // The longest stretch from k that one span covers whole.
                let l = locs[k];
                let span = spans
                    .iter()
                    .find(|(lo, count, _)| (*lo..lo + count).contains(&l.seq));
                let mut end = k;
                if let (Some((lo, count, pages)), true) = (span, l.pos.seg == seg) {
                    while end < locs.len()
                        && locs[end].pos.seg == seg
                        && locs[end].seq == l.seq + (end - k) as u64
                        && locs[end].seq < lo + count
                    {
                        end += 1;
                    }
                    if end - k >= min_paged() {
                        if !rest.is_empty() {
                            self.runs
                                .push_back(Run::Resident(std::mem::take(&mut rest)));
                        }
                        self.runs.push_back(Run::Paged(Paged {
                            seg,
                            lo: l.seq,
                            count: (end - k) as u64,
                            rec_bytes: locs[k..end].iter().map(|l| u64::from(l.len)).sum(),
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
                self.runs.push_back(Run::Resident(rest));
            }
        }
        // Neighbouring resident runs join again.
        let mut i = 0;
        while i + 1 < self.runs.len() {
            let before = self.runs.len();
            self.merge_at(i);
            if self.runs.len() == before {
                i += 1;
            }
        }
        paged
    }
}

fn job(p: &Paged) -> PageJob {
    PageJob {
        seg: p.seg,
        lo: p.lo,
        skip: p.skip,
        n: (p.count as usize).min(window()),
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
