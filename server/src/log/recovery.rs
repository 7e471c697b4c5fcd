//! Rebuilding a shard's state from its directory.
//!
//! 1. Leftovers of interrupted operations (`*.idx.tmp`, `spare.tmp`) are
//!    removed: they were never part of the log.
//! 2. Every sealed segment is summarised by its index file, validated once
//!    when read and then read in place. A missing or invalid index is
//!    rebuilt by scanning the segment (logged). Which summary stands for a
//!    segment is [`choose`], which the offline view shares.
//! 3. The newest segment was open when the last run stopped: it is scanned,
//!    every record verified; a torn tail is cut (logically: the segment is
//!    sealed at its last good record and this run writes a new one) and
//!    reported, but it is not corruption: a crash ends a log that way. A
//!    bad stretch followed by good records is skipped and reported as
//!    corruption. It then gets its index like any sealed segment.
//! 4. The summaries are merged ([`Replayer`]) into a [`Replay`] sink: queue
//!    names, counters, then the locators of unconsumed messages.
//!
//! # Why a sink, and two passes
//! A shard may hold tens of millions of queued messages, and its indexes
//! take 24 bytes for every message still in a segment, consumed or not.
//! Recovery keeps neither: pass 1 reads the indexes one at a time for what
//! they say of queues (small), which decides the live queues and their
//! heads; pass 2 reads them again, one at a time, and hands each queued
//! message straight to the sink, which keeps only its locator where it
//! ends up. Peak memory is then the queues themselves plus one index,
//! instead of every index plus the locators copied three times over.

//! # Which queues exist
//! Every segment starts with a checkpoint: a `Checkpoint` record listing
//! the ids of the queues alive at that moment. So the newest segment with a
//! complete checkpoint (the *authority*) names every queue alive from its
//! start on; queues created later in it or in newer segments add to that,
//! `Deleted` records remove. A queue neither named there nor created since
//! was deleted, even if the segment with its `Deleted` record has since
//! been reclaimed.
//!
//! A queue's name and counters are in its newest `Created` record, and
//! counters only grow, so they are the maximum any surviving record
//! asserts. Those records are not repeated in every segment: before a
//! segment is deleted, every live queue its records name whose newest
//! `Created` record is not in a newer segment is *restated* (a `Created`
//! record with its current counters) in the open one (`Log::restate`). So
//! every live queue keeps a `Created` record, and whatever a deleted
//! segment said of a queue, a newer record says too. A queue nobody
//! touches costs nothing per segment: a million idle queues are restated
//! only when the segment holding their last restatement is reclaimed.
//!
//! Directories of format 4 and before restated every live queue at the
//! start of every segment, before an empty `Checkpoint` record: the
//! restated queues are that checkpoint's list (`IndexBuilder`), and the
//! rules above read them unchanged.

use std::collections::BTreeMap;
use std::io;
use std::path::Path;
use std::rc::Rc;

use smallvec::SmallVec;

use super::confirmed::Confirmed;
use super::segment::{self, BLOCK};
use super::writer::Seg;
use super::Loc;
use crate::disk::{Disk, DiskFile};
use crate::idhash::{IdSlab, IdWalk};
use crate::log::index::{
    self, EntryArea, EntryPages, EntryRead, IndexBuilder, IndexRead, QueueMsgs, QueueRead,
    SegmentIndex,
};

/// Everything recovery found besides the queues (those went to the
/// [`Replay`] sink).
pub struct Recovered {
    pub segs: BTreeMap<u32, Seg>,
    pub next_lsn: u64,
    pub next_queue_id: u32,
    pub corrupt_records: u64,
    /// Index files rebuilt from scans.
    pub rebuilt_indexes: u32,
    /// Segments summarised from their index files: not yet checksummed.
    pub unverified: Vec<u32>,
}

/// A live queue as recovery found it, handed to [`Replay::queue`] before
/// any of its messages.
pub struct FoundQueue {
    pub id: u32,
    pub name: Rc<[u8]>,
    /// Every message below is consumed.
    pub head: u64,
    pub tail: u64,
    /// Messages above `head` confirmed out of order.
    pub confirmed: Confirmed,
    /// Ordinal of the segment with its newest `Created` record.
    pub restated: u32,
}

/// Where recovery hands what it finds (raft-engine's `ReplayMachine`): the
/// store builds its queues from it, `mcqd inspect` a view of them. Nothing
/// is collected on the way, so a queued message costs recovery nothing but
/// what the sink keeps of it.
pub trait Replay {
    /// A live queue; every queue comes before any message.
    fn queue(&mut self, q: FoundQueue);
    /// Message `loc` of queue `queue`, enqueued at Unix second `time`:
    /// neither consumed nor confirmed. Messages come in segment order,
    /// oldest first, so mostly in sequence order; a message met twice (a
    /// compaction copy in a newer segment, its original not yet reclaimed)
    /// comes last as its newest copy, which is the one that stands
    /// ([`Arrivals`] applies that rule).
    fn message(&mut self, queue: u32, loc: Loc, time: u32);
    /// Every message has been handed over: settle the copies, passing each
    /// one dropped (an older copy of a message kept) to `superseded`.
    fn settle(&mut self, superseded: &mut dyn FnMut(Loc));
}

/// A run of consecutive queued messages of one queue in one sealed
/// segment, as recovery hands it to the store: where its entries are in the
/// segment's index, not its locators (see `queue::Backlog`).
#[derive(Clone, Debug)]
pub struct FoundRun {
    pub seg: u32,
    pub lo: u64,
    pub count: u32,
    /// Sum of its record lengths.
    pub rec_bytes: u32,
    /// Index of `lo`'s entry among its span's.
    pub skip: u32,
    /// Unix second its first message was enqueued.
    pub time: u32,
    pub pages: EntryPages,
}

/// Where [`recover`] hands what it finds: the store builds its queues from
/// it. Queues come first, by id; then the runs of their queued messages,
/// newest segment first and, within a segment, highest sequence number
/// first, so mostly each below the last (each run is exact: no message in
/// two runs, none consumed).
pub trait RunSink {
    /// At most `queues` live queues follow (a table sized once is not
    /// copied as it grows).
    fn reserve(&mut self, _queues: usize) {}
    /// A live queue; every queue comes before any run.
    fn queue(&mut self, q: FoundQueue);
    /// Runs shorter than this come as their messages ([`RunSink::message`]).
    fn resident_below(&self) -> u64;
    fn run(&mut self, queue: u32, run: FoundRun);
    /// Message `loc` of a short run, enqueued at Unix second `time`.
    fn message(&mut self, queue: u32, loc: Loc, time: u32);
}

/// The messages of one queue as a [`Replay`] sink receives them, settled
/// into sequence order with the newest copy of each message kept.
///
/// Messages that come in sequence order (all of them, but for compaction
/// copies) are appended: 24 bytes each, and their enqueue times kept per
/// second (`runs`, as the queue keeps them). One that comes out of order
/// waits aside until [`Arrivals::settle`] merges it in, in one pass: a
/// later copy always replaces an earlier one (it is in a newer segment).
#[derive(Default)]
pub struct Arrivals {
    locs: Vec<Loc>,
    /// `(first seq, Unix second)` of each run of `locs` enqueued in the
    /// same second.
    runs: Vec<(u64, u32)>,
    /// Met out of sequence order, in the order met, with their times.
    late: Vec<(Loc, u32)>,
}

impl Arrivals {
    pub fn push(&mut self, loc: Loc, time: u32) {
        if self.locs.last().is_none_or(|l| l.seq < loc.seq) {
            if self.runs.last().is_none_or(|&(_, t)| t != time) {
                self.runs.push((loc.seq, time));
            }
            self.locs.push(loc);
        } else {
            self.late.push((loc, time));
        }
    }

    /// Merges the messages met out of order; `superseded` gets every copy
    /// a newer one replaced.
    pub fn settle(&mut self, superseded: &mut dyn FnMut(Loc)) {
        if self.late.is_empty() {
            return;
        }
        let mut met = std::mem::take(&mut self.late);
        // Stable: of two copies of a message, the one met later (newer)
        // stays last.
        met.sort_by_key(|(l, _)| l.seq);
        let mut late: Vec<(Loc, u32)> = Vec::with_capacity(met.len());
        for m in met {
            match late.last_mut() {
                Some(prev) if prev.0.seq == m.0.seq => {
                    superseded(prev.0);
                    *prev = m;
                }
                _ => late.push(m),
            }
        }
        // A late copy replaces an in-order one (met before it, so older);
        // the others go in at their place, merged from the back.
        let mut inserts = Vec::new();
        for &(loc, _) in &late {
            match self.locs.binary_search_by_key(&loc.seq, |l| l.seq) {
                Ok(i) => superseded(std::mem::replace(&mut self.locs[i], loc)),
                Err(_) => inserts.push(loc),
            }
        }
        let (mut i, mut j) = (self.locs.len(), inserts.len());
        self.locs.extend_from_slice(&inserts);
        let mut w = self.locs.len();
        while j > 0 {
            w -= 1;
            if i > 0 && self.locs[i - 1].seq > inserts[j - 1].seq {
                i -= 1;
                self.locs[w] = self.locs[i];
            } else {
                j -= 1;
                self.locs[w] = inserts[j];
            }
        }
        // The times again, in sequence order: a late message's own, an
        // in-order one's from the runs.
        let old = std::mem::take(&mut self.runs);
        let (mut k, mut j) = (0, 0);
        for loc in &self.locs {
            let t = if late.get(j).is_some_and(|(l, _)| l.seq == loc.seq) {
                j += 1;
                late[j - 1].1
            } else {
                while old.get(k + 1).is_some_and(|&(s, _)| s <= loc.seq) {
                    k += 1;
                }
                old[k].1
            };
            if self.runs.last().is_none_or(|&(_, r)| r != t) {
                self.runs.push((loc.seq, t));
            }
        }
    }

    /// The locators in sequence order, and `(first seq, Unix second)` of
    /// each run of them enqueued in the same second (after `settle`).
    pub fn into_parts(self) -> (Vec<Loc>, Vec<(u64, u32)>) {
        debug_assert!(self.late.is_empty(), "settled");
        (self.locs, self.runs)
    }
}

/// What recovery reads a segment's summary from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Choice {
    /// Its index file (valid, read in place).
    Index,
    /// A scan of the segment; one without a record is removed.
    Scan,
}

/// The rule for which summary stands for a segment, shared with the
/// offline view (`mcqd inspect`, `verify`) so that both agree: the newest
/// segment was open when the last run stopped and may end in a torn tail,
/// so it is scanned; a sealed one is read from its index file when that is
/// valid, and scanned otherwise.
pub fn choose(is_newest: bool, index_valid: bool) -> Choice {
    if !is_newest && index_valid {
        Choice::Index
    } else {
        Choice::Scan
    }
}

#[derive(Default)]
struct QState {
    name: Option<Rc<[u8]>>,
    head: u64,
    tail: u64,
    created_in: Option<u32>,
    deleted_in: Option<u32>,
    confirmed: Confirmed,
}

/// What pass 2 needs of a live queue to pick its messages.
struct Live {
    head: u64,
    confirmed: Confirmed,
    /// Sequence numbers met in newer segments (sorted, disjoint): an older
    /// copy of one of them is superseded. Usually one range.
    cover: SmallVec<[(u64, u64); 1]>,
}

/// The live queues by id, found by walking forward ([`IdWalk`]): pass 2
/// reads each segment's queues in id order.
#[derive(Default)]
struct LiveQueues {
    ids: Vec<u32>,
    live: Vec<Live>,
    walk: IdWalk,
}

impl LiveQueues {
    fn get_mut(&mut self, id: u32) -> Option<&mut Live> {
        let i = self.walk.find(&self.ids, id)?;
        Some(&mut self.live[i])
    }

    fn len(&self) -> usize {
        self.ids.len()
    }
}

/// Merges segment summaries into a [`Replay`] sink (the module doc says
/// how), in two passes over the segments, oldest first: pass 1
/// ([`Replayer::summarise`]) reads what each says of its queues, which
/// decides the live queues, their heads and tails; pass 2
/// ([`Replayer::messages`]) hands the sink their messages. Only pass 1's
/// per-queue state is held throughout, so a caller can load one segment's
/// index at a time for each pass.
#[derive(Default)]
pub struct Replayer {
    queues: IdSlab<QState>,
    live: LiveQueues,
    authority: u32,
    /// The authority's checkpoint: the queues alive when it was started.
    authority_live: Vec<(u32, u32)>,
    next_queue_id: u32,
    max_lsn: u64,
    /// Messages handed over per segment ordinal, and their record bytes.
    counted: BTreeMap<u32, (u64, u64)>,
}

/// What replay adds up to besides the queues.
pub struct Replayed {
    /// Live queues.
    pub queues: usize,
    pub next_queue_id: u32,
    pub max_lsn: u64,
    /// Queued messages whose (kept) record is in each segment, and their
    /// record bytes.
    pub live: BTreeMap<u32, (u64, u64)>,
}

impl Replayer {
    /// Pass 1: what segment `ord` says of its queues.
    pub fn summarise(&mut self, ord: u32, idx: &impl IndexRead) {
        if idx.checkpoint() {
            self.authority = ord;
            self.authority_live = idx.live().collect();
        }
        self.next_queue_id = self
            .next_queue_id
            .max(idx.next_queue_id())
            .max(idx.max_queue_id().saturating_add(1));
        self.max_lsn = self.max_lsn.max(idx.last_lsn());
        for qi in idx.queues() {
            let q = self.queues.get_or_default(qi.id());
            if let Some(n) = qi.created() {
                q.name = Some(n.into());
                q.created_in = Some(ord);
            }
            if qi.deleted() {
                q.deleted_in = Some(ord);
            }
            q.head = q.head.max(qi.head());
            q.tail = q.tail.max(qi.tail());
            // Facts for good (a sequence number is never reused),
            // whichever segment says them.
            for (start, end) in qi.confirmed() {
                q.confirmed.insert(start, end);
            }
        }
    }

    /// At most how many queues [`Replayer::queues`] hands over.
    pub fn live_bound(&self) -> usize {
        self.queues.len()
    }

    /// End of pass 1: hands `sink` the live queues (by id).
    pub fn queues(&mut self, mut sink: impl FnMut(FoundQueue)) {
        let authority = self.authority;
        let named = std::mem::take(&mut self.authority_live);
        let in_checkpoint = |id: u32| {
            let i = named.partition_point(|&(_, end)| end <= id);
            named.get(i).is_some_and(|&(first, _)| first <= id)
        };
        let (ids, found) = std::mem::take(&mut self.queues).into_parts();
        let mut alive: Vec<(u32, QState)> = (ids.into_iter().zip(found))
            .filter(|(id, q)| match q.created_in {
                Some(c) => {
                    (c >= authority || in_checkpoint(*id))
                        && !matches!(q.deleted_in, Some(d) if d >= c)
                        && q.name.is_some()
                }
                None => false,
            })
            .collect();
        alive.sort_unstable_by_key(|(id, _)| *id);
        self.live.ids.reserve_exact(alive.len());
        self.live.live.reserve_exact(alive.len());
        for (id, q) in alive {
            // Ranges the head has passed are forgotten; one that starts at
            // the head moves it.
            let mut confirmed = q.confirmed;
            confirmed.drop_below(q.head);
            let head = confirmed.extend(q.head);
            confirmed.drop_below(head);
            self.live.ids.push(id);
            self.live.live.push(Live {
                head,
                confirmed: confirmed.clone(),
                cover: SmallVec::new(),
            });
            sink(FoundQueue {
                id,
                name: q.name.expect("alive queues have names"),
                head,
                tail: q.tail,
                confirmed,
                restated: q.created_in.expect("alive queues were created"),
            });
        }
    }

    /// Pass 2: hands `sink` the messages of segment `ord` that are queued.
    pub fn messages<I>(&mut self, ord: u32, idx: &I, sink: &mut impl Replay)
    where
        I: IndexRead,
        I::Queue: QueueMsgs,
    {
        let mut n = 0u64;
        let mut bytes = 0u64;
        for qi in idx.queues() {
            let Some(live) = self.live.get_mut(qi.id()) else {
                continue;
            };
            let msgs = qi.msgs();
            let from = msgs.partition_point(|m| m.seq() < live.head);
            for m in &msgs[from..] {
                let e = m.entry();
                if live.confirmed.contains(e.seq) {
                    continue;
                }
                let loc = e.loc(ord);
                n += 1;
                bytes += u64::from(e.len);
                sink.message(qi.id(), loc, e.time);
            }
        }
        if n > 0 {
            let c = self.counted.entry(ord).or_default();
            c.0 += n;
            c.1 += bytes;
        }
    }

    /// End of pass 2: the sink settles its copies.
    pub fn finish(self, sink: &mut impl Replay) -> Replayed {
        let mut live = self.counted;
        sink.settle(&mut |old: Loc| {
            if let Some(c) = live.get_mut(&old.pos.seg) {
                c.0 -= 1;
                c.1 -= u64::from(old.len);
            }
        });
        Replayed {
            queues: self.live.len(),
            next_queue_id: self.next_queue_id,
            max_lsn: self.max_lsn,
            live,
        }
    }
}

/// Scans a segment into an index, logging what was skipped or cut.
pub async fn scan_to_index(
    label: &str,
    file: &dyn DiskFile,
    first_lsn: u64,
    is_open: bool,
) -> io::Result<(SegmentIndex, segment::ScanReport)> {
    let len = file.size().await?;
    let mut b = IndexBuilder::new(first_lsn);
    let rep = segment::scan(file, len, is_open, |h, body, off| b.record(h, body, off)).await?;
    for (off, n) in &rep.corrupt {
        log::warn!(
            "{label}: segment {first_lsn:020}: corrupt data at offset {off}, {n} bytes skipped (checksum mismatch)"
        );
    }
    if let Some((off, n)) = rep.torn {
        if is_open {
            log::warn!(
                "{label}: segment {first_lsn:020}: torn tail at offset {off}: {n} bytes cut"
            );
        } else {
            log::warn!(
                "{label}: segment {first_lsn:020}: invalid data at offset {off}: {n} bytes skipped"
            );
        }
    }
    for (off, n) in &rep.unfinished {
        // Its `Region` record is written before its body, and the set is
        // acknowledged only after both: this is a set a crash cut short
        // (or, if it was acknowledged, damage).
        log::warn!(
            "{label}: segment {first_lsn:020}: the large message body at offset {off} ({n} bytes) is incomplete: a set cut short, dropped"
        );
    }
    // A torn tail is how a crash leaves the open segment, not damage: it is
    // cut (above), never counted, and never stored in the index, where
    // every later start would read it back as corruption. In a sealed
    // segment the same stretch is invalid data, and counted.
    let torn_corrupt = rep.torn.is_some() && !is_open;
    b.corrupt_records = (rep.corrupt.len() + usize::from(torn_corrupt)) as u32;
    Ok((b.finish(), rep))
}

/// Writes `index` as the `.idx` of segment `first_lsn`; returns the
/// file's bytes, its summary read in place.
pub async fn write_index(
    disk: &dyn Disk,
    dir: &Path,
    first_lsn: u64,
    index: impl index::MainSource,
) -> io::Result<index::Encoded> {
    let mut encoded = index::encode_with_summary(index);
    index::write_file(disk, &segment::idx_path(dir, first_lsn), &encoded.parts()).await?;
    encoded.written();
    disk.sync_dir(dir).await?;
    Ok(encoded)
}

/// Recovers the shard in `dir` (see the module doc), handing its queues
/// and the runs of their queued messages to `sink`.
pub async fn recover(
    disk: &dyn Disk,
    dir: &Path,
    label: &str,
    sink: &mut impl RunSink,
) -> io::Result<Recovered> {
    let mut logs: BTreeMap<u64, std::path::PathBuf> = BTreeMap::new();
    let mut removed_tmp = false;
    for name in disk.list(dir).await? {
        let path = dir.join(&name);
        if name.ends_with(".tmp") {
            disk.remove(&path).await?;
            removed_tmp = true;
            continue;
        }
        if let Some((lsn, "log")) = segment::parse_name(&name) {
            logs.insert(lsn, path);
        }
    }
    if removed_tmp {
        disk.sync_dir(dir).await?;
    }
    let newest = logs.keys().next_back().copied();
    let mut segs = BTreeMap::new();
    let mut replayer = Replayer::default();
    let mut corrupt_records = 0u64;
    let mut rebuilt = 0u32;
    let mut unverified = Vec::new();
    let mut ord = 0u32;
    // Pass 1, and every segment indexed: what each summary says of queues.
    for (&first_lsn, path) in &logs {
        let file = disk
            .open(path)
            .await
            .map_err(|e| io::Error::new(e.kind(), format!("opening {}: {e}", path.display())))?;
        let is_open = Some(first_lsn) == newest;
        let idx_path = segment::idx_path(dir, first_lsn);
        let mut loaded = None;
        if !is_open {
            match index::load_summary(disk, &idx_path, first_lsn).await? {
                Some(Ok(l)) => loaded = Some(l),
                Some(Err(why)) => {
                    log::warn!("{label}: index {first_lsn:020}.idx is invalid ({why}): rebuilding it from its segment");
                }
                None => {
                    log::warn!("{label}: index {first_lsn:020}.idx is missing: rebuilding it from its segment");
                }
            }
        }
        let (data_len, corrupt, idx_bytes) = match choose(is_open, loaded.is_some()) {
            Choice::Index => {
                let l = loaded.expect("chosen when valid");
                let idx = l.get();
                replayer.summarise(ord, idx);
                unverified.push(ord);
                (idx.data_len(), idx.corrupt_records(), l.file_len())
            }
            Choice::Scan => {
                let (idx, rep) = scan_to_index(label, &*file, first_lsn, is_open).await?;
                if rep.records == 0 {
                    // Created but never written (a crash right after a
                    // roll): it holds nothing, not even a checkpoint.
                    log::debug!("{label}: segment {first_lsn:020} is empty: removed");
                    drop(file);
                    disk.remove(path).await?;
                    let _ = disk.remove(&idx_path).await;
                    disk.sync_dir(dir).await?;
                    continue;
                }
                if is_open {
                    // Sealed now: make its end durable, give back the
                    // preallocated space beyond it, then index it.
                    file.fdatasync().await?;
                    file.truncate(idx.data_len.next_multiple_of(BLOCK)).await?;
                    file.fdatasync().await?;
                } else {
                    rebuilt += 1;
                }
                replayer.summarise(ord, &idx);
                let (data_len, corrupt) = (idx.data_len, idx.corrupt_records);
                let idx_bytes = write_index(disk, dir, first_lsn, idx).await?.file_len() as u64;
                (data_len, corrupt, idx_bytes)
            }
        };
        corrupt_records += u64::from(corrupt);
        let disk_bytes = file.size().await?;
        segs.insert(
            ord,
            Seg::recovered(first_lsn, file, disk_bytes, data_len, idx_bytes),
        );
        ord += 1;
    }
    sink.reserve(replayer.live_bound());
    replayer.queues(|q| sink.queue(q));
    // Pass 2: every segment has its index file now; each summary is read
    // again, newest first, for the runs of queued messages.
    let mut items = 0u64;
    for (&ord, seg) in segs.iter_mut().rev() {
        let idx_path = segment::idx_path(dir, seg.first_lsn);
        let summary = match index::load_summary(disk, &idx_path, seg.first_lsn).await? {
            Some(Ok(l)) => l,
            Some(Err(why)) => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("{}: changed during recovery: {why}", idx_path.display()),
                ))
            }
            None => {
                return Err(io::Error::new(
                    io::ErrorKind::NotFound,
                    format!("{}: removed during recovery", idx_path.display()),
                ))
            }
        };
        let mut area = None;
        for qs in summary.get().queues.iter() {
            let id = qs.id.to_native();
            let Some(live) = replayer.live.get_mut(id) else {
                continue;
            };
            // Highest first: the sink puts each below what it has.
            for span in qs.spans.iter().rev() {
                let lo = span.lo.to_native();
                let end = lo + u64::from(span.count.to_native());
                let keep = kept(lo, end, live);
                add_cover(&mut live.cover, lo, end);
                if keep.is_empty() {
                    continue;
                }
                let whole = keep[..] == [(lo, end)];
                let short = keep.iter().any(|&(a, z)| z - a < sink.resident_below());
                // Part of the span consumed or superseded, or a short run:
                // its entries say what the rest weighs, or where it is.
                let entries = if whole && !short {
                    None
                } else {
                    if area.is_none() {
                        let f = disk.open(&idx_path).await?;
                        area = Some(EntryArea::read(&*f, &summary).await?);
                    }
                    let es = area.as_ref().expect("read").entries(span).map_err(|why| {
                        io::Error::new(
                            io::ErrorKind::InvalidData,
                            format!("{}: {why}", idx_path.display()),
                        )
                    })?;
                    Some(es)
                };
                let mut pages = None;
                for &(a, z) in keep.iter().rev() {
                    let count = z - a;
                    seg.live += count;
                    items += count;
                    let skip = (a - lo) as usize;
                    // What the run weighs and when it began: the span's
                    // own figures when it is kept whole, else its entries'.
                    let (rec_bytes, time) = match entries {
                        None => (span.bytes.to_native(), span.time.to_native()),
                        Some(es) => {
                            let es = &es[skip..skip + count as usize];
                            if count < sink.resident_below() {
                                for e in es.iter().rev().map(EntryRead::entry) {
                                    seg.live_bytes += u64::from(e.len);
                                    sink.message(id, e.loc(ord), e.time);
                                }
                                continue;
                            }
                            let bytes = es.iter().map(|e| u64::from(e.len.to_native())).sum();
                            (bytes, es[0].time.to_native())
                        }
                    };
                    seg.live_bytes += rec_bytes;
                    // Within one segment, whose offsets are 32-bit.
                    let rec_bytes = u32::try_from(rec_bytes).map_err(|_| {
                        io::Error::new(
                            io::ErrorKind::InvalidData,
                            format!("{}: a span of {rec_bytes} bytes", idx_path.display()),
                        )
                    })?;
                    let pages = pages.get_or_insert_with(|| EntryPages::of(span));
                    sink.run(
                        id,
                        FoundRun {
                            seg: ord,
                            lo: a,
                            // At most the span's count, a u32.
                            count: count as u32,
                            rec_bytes,
                            skip: skip as u32,
                            time,
                            pages: pages.clone(),
                        },
                    );
                }
            }
        }
    }
    let queues = replayer.live.len();
    log::debug!(
        "{label}: recovered {queues} queues, {items} messages from {} segments ({rebuilt} indexes rebuilt, {corrupt_records} corrupt stretches)",
        segs.len()
    );
    Ok(Recovered {
        segs,
        next_lsn: replayer.max_lsn + 1,
        next_queue_id: replayer.next_queue_id.max(1),
        corrupt_records,
        rebuilt_indexes: rebuilt,
        unverified,
    })
}

/// What of the span `[lo, end)` of a live queue is queued: not below its
/// head, not confirmed, not in a newer segment (its `cover`).
fn kept(lo: u64, end: u64, live: &Live) -> SmallVec<[(u64, u64); 1]> {
    let cover = &live.cover;
    let mut out = SmallVec::new();
    let mut start = lo.max(live.head);
    while start < end {
        // Skip what is covered or confirmed at `start`.
        let i = cover.partition_point(|&(_, z)| z <= start);
        if let Some(&(a, z)) = cover.get(i) {
            if a <= start {
                start = z;
                continue;
            }
        }
        if let Some(e) = live.confirmed.end_at(start) {
            start = e;
            continue;
        }
        // The longest stretch from `start` that is neither.
        let mut stop = cover.get(i).map_or(end, |&(a, _)| a.min(end));
        if let Some(c) = live.confirmed.next_from(start) {
            stop = stop.min(c);
        }
        out.push((start, stop));
        start = stop;
    }
    out
}

/// Adds `[lo, end)` to the sorted, disjoint intervals `cover`.
fn add_cover(cover: &mut SmallVec<[(u64, u64); 1]>, lo: u64, end: u64) {
    let i = cover.partition_point(|&(_, z)| z < lo);
    let mut j = i;
    let (mut a, mut z) = (lo, end);
    while j < cover.len() && cover[j].0 <= z {
        a = a.min(cover[j].0);
        z = z.max(cover[j].1);
        j += 1;
    }
    if j > i {
        cover.drain(i + 1..j);
        cover[i] = (a, z);
    } else {
        cover.insert(i, (a, z));
    }
}

#[cfg(test)]
#[path = "recovery_tests.rs"]
mod tests;
