//! Rebuilding a shard's state from its directory.
//!
//! 1. Leftovers of interrupted operations (`*.idx.tmp`, `spare.tmp`) are
//!    removed: they were never part of the log.
//! 2. Every sealed segment is summarised by its index file, validated once
//!    and read in place. A missing or invalid index is rebuilt by scanning
//!    the segment (logged).
//! 3. The newest segment was open when the last run stopped: it is scanned,
//!    every record verified; a torn tail is cut (logically: the segment is
//!    sealed at its last good record and this run writes a new one) and
//!    reported; a bad stretch followed by good records is skipped and
//!    reported. It then gets its index like any sealed segment.
//! 4. The summaries are merged (see [`replay`]): queue names, counters, and
//!    the locators of unconsumed messages.
//!
//! # Which queues exist
//! Every segment starts with a checkpoint: a `Created` record (with its
//! counters) for every queue alive at that moment, then a `Checkpoint`
//! record. So the newest segment with a complete checkpoint (the
//! *authority*) names every queue alive from its start on; queues created
//! later in it or in newer segments add to that, `Deleted` records remove.
//! A queue known only from older segments was deleted, even if the segment
//! with its `Deleted` record has since been reclaimed. Counters only grow,
//! so they are the maximum any surviving record asserts.

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::path::Path;

use super::confirmed::Confirmed;
use super::segment::{self, BLOCK};
use super::writer::Seg;
use super::{Loc, Pos};
use crate::disk::{Disk, DiskFile};
use crate::log::index::{self, ArchivedSegmentIndex, IndexBuilder, LoadedIndex, SegmentIndex};

/// A queue as recovered.
pub struct RecoveredQueue {
    pub id: u32,
    pub name: Box<[u8]>,
    /// Every message below is consumed.
    pub head: u64,
    pub tail: u64,
    /// Messages above `head` confirmed out of order.
    pub confirmed: Confirmed,
    /// The queued messages: neither below `head` nor confirmed …
    pub locs: Vec<Loc>,
    /// … and the Unix second each was enqueued.
    pub times: Vec<u32>,
}

/// Everything recovery found.
pub struct Recovered {
    pub segs: BTreeMap<u32, Seg>,
    pub queues: Vec<RecoveredQueue>,
    pub next_lsn: u64,
    pub next_queue_id: u32,
    pub corrupt_records: u64,
    /// Index files rebuilt from scans.
    pub rebuilt_indexes: u32,
    /// Segments summarised from their index files: not yet checksummed.
    pub unverified: Vec<u32>,
}

/// What recovery knows of one segment: its index file, or the index a
/// scan built.
pub enum Summary {
    Loaded(LoadedIndex),
    Built(SegmentIndex),
}

/// The queues the summaries of a shard's segments (oldest first, each with
/// its ordinal) add up to: the pure half of recovery, which `mcqd inspect`
/// runs on a read-only view of a directory.
pub struct Replayed {
    pub queues: Vec<RecoveredQueue>,
    pub next_queue_id: u32,
    pub max_lsn: u64,
}

/// Merges `summaries` (the module doc says how).
pub fn replay(summaries: &[(u32, Summary)]) -> Replayed {
    let mut replay = Replay::default();
    for (ord, s) in summaries {
        match s {
            Summary::Loaded(l) => replay.pass1_archived(*ord, l.get()),
            Summary::Built(b) => replay.pass1_native(*ord, b),
        }
    }
    replay.drop_dead();
    for (ord, s) in summaries {
        match s {
            Summary::Loaded(l) => replay.pass2_archived(*ord, l.get()),
            Summary::Built(b) => replay.pass2_native(*ord, b),
        }
    }
    let (queues, next_queue_id, max_lsn) = replay.finish();
    Replayed {
        queues,
        next_queue_id,
        max_lsn,
    }
}

#[derive(Default)]
struct QState {
    name: Option<Box<[u8]>>,
    head: u64,
    tail: u64,
    created_in: Option<u32>,
    deleted_in: Option<u32>,
    confirmed: Confirmed,
    /// With the Unix second each was enqueued.
    locs: Vec<(Loc, u32)>,
}

/// Merges segment summaries, oldest first.
#[derive(Default)]
struct Replay {
    queues: HashMap<u32, QState>,
    authority: u32,
    next_queue_id: u32,
    max_lsn: u64,
}

impl Replay {
    fn pass1_native(&mut self, ord: u32, idx: &SegmentIndex) {
        self.segment(
            ord,
            idx.checkpoint,
            idx.next_queue_id,
            idx.max_queue_id,
            idx.last_lsn,
        );
        for q in &idx.queues {
            self.queue(
                ord,
                q.id,
                q.created.then_some(&q.name[..]),
                q.deleted,
                q.head,
                q.tail,
            );
            self.confirmed(q.id, q.confirmed.iter().map(|r| (r.start, r.end)));
        }
    }

    fn pass1_archived(&mut self, ord: u32, idx: &ArchivedSegmentIndex) {
        self.segment(
            ord,
            idx.checkpoint,
            idx.next_queue_id.to_native(),
            idx.max_queue_id.to_native(),
            idx.last_lsn.to_native(),
        );
        for q in idx.queues.iter() {
            let name = q.created.then_some(q.name.as_slice());
            self.queue(
                ord,
                q.id.to_native(),
                name,
                q.deleted,
                q.head.to_native(),
                q.tail.to_native(),
            );
            let ranges = q.confirmed.iter();
            self.confirmed(
                q.id.to_native(),
                ranges.map(|r| (r.start.to_native(), r.end.to_native())),
            );
        }
    }

    fn segment(&mut self, ord: u32, checkpoint: bool, next_id: u32, max_id: u32, last_lsn: u64) {
        if checkpoint {
            self.authority = ord;
        }
        self.next_queue_id = self
            .next_queue_id
            .max(next_id)
            .max(max_id.saturating_add(1));
        self.max_lsn = self.max_lsn.max(last_lsn);
    }

    fn queue(
        &mut self,
        ord: u32,
        id: u32,
        name: Option<&[u8]>,
        deleted: bool,
        head: u64,
        tail: u64,
    ) {
        let q = self.queues.entry(id).or_default();
        if let Some(n) = name {
            q.name = Some(n.into());
            q.created_in = Some(ord);
        }
        if deleted {
            q.deleted_in = Some(ord);
        }
        q.head = q.head.max(head);
        q.tail = q.tail.max(tail);
    }

    /// Ranges of queue `id` confirmed out of order: facts for good (a
    /// sequence number is never reused), whichever segment says them.
    fn confirmed(&mut self, id: u32, ranges: impl Iterator<Item = (u64, u64)>) {
        let q = self.queues.entry(id).or_default();
        for (start, end) in ranges {
            q.confirmed.insert(start, end);
        }
    }

    fn alive(&self, q: &QState) -> bool {
        match q.created_in {
            Some(c) => {
                c >= self.authority
                    && !matches!(q.deleted_in, Some(d) if d >= c)
                    && q.name.is_some()
            }
            None => false,
        }
    }

    fn pass2_native(&mut self, ord: u32, idx: &SegmentIndex) {
        for qi in &idx.queues {
            let Some(q) = self.queues.get_mut(&qi.id) else {
                continue;
            };
            for m in &qi.msgs {
                if m.seq >= q.head {
                    let loc = Loc {
                        seq: m.seq,
                        pos: Pos {
                            seg: ord,
                            off: m.off,
                        },
                        len: m.len,
                        expires: m.expires,
                    };
                    q.locs.push((loc, m.time));
                }
            }
        }
    }

    fn pass2_archived(&mut self, ord: u32, idx: &ArchivedSegmentIndex) {
        for qi in idx.queues.iter() {
            let Some(q) = self.queues.get_mut(&qi.id.to_native()) else {
                continue;
            };
            for m in qi.msgs.iter() {
                let seq = m.seq.to_native();
                if seq >= q.head {
                    let loc = Loc {
                        seq,
                        pos: Pos {
                            seg: ord,
                            off: m.off.to_native(),
                        },
                        len: m.len.to_native(),
                        expires: m.expires.to_native(),
                    };
                    q.locs.push((loc, m.time.to_native()));
                }
            }
        }
    }

    fn drop_dead(&mut self) {
        let dead: Vec<u32> = self
            .queues
            .iter()
            .filter(|(_, q)| !self.alive(q))
            .map(|(id, _)| *id)
            .collect();
        for id in dead {
            self.queues.remove(&id);
        }
    }

    fn finish(self) -> (Vec<RecoveredQueue>, u32, u64) {
        let mut out = Vec::with_capacity(self.queues.len());
        for (id, mut q) in self.queues {
            // Segments were fed oldest first and the sort is stable, so for a
            // message present twice (a compaction copy and its original not
            // yet reclaimed) the last one is the newest copy.
            q.locs.sort_by_key(|(l, _)| l.seq);
            let mut locs: Vec<(Loc, u32)> = Vec::with_capacity(q.locs.len());
            for l in q.locs {
                match locs.last_mut() {
                    Some(prev) if prev.0.seq == l.0.seq => *prev = l,
                    _ => locs.push(l),
                }
            }
            let tail = locs.last().map_or(q.tail, |(l, _)| q.tail.max(l.seq + 1));
            // Ranges the head has passed are forgotten; one that starts at
            // the head moves it.
            let mut head = q.head;
            let mut confirmed = q.confirmed;
            confirmed.drop_below(head);
            locs.retain(|(l, _)| !confirmed.contains(l.seq));
            head = confirmed.extend(head);
            confirmed.drop_below(head);
            let (locs, times) = locs.into_iter().unzip();
            out.push(RecoveredQueue {
                id,
                name: q.name.expect("alive queues have names"),
                head,
                tail,
                confirmed,
                locs,
                times,
            });
        }
        (out, self.next_queue_id, self.max_lsn)
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

/// Writes `index` as the `.idx` of segment `first_lsn`; returns its size.
pub async fn write_index(
    disk: &dyn Disk,
    dir: &Path,
    first_lsn: u64,
    index: &SegmentIndex,
) -> io::Result<u64> {
    let bytes = index::encode(index);
    index::write_file(disk, &segment::idx_path(dir, first_lsn), &bytes).await?;
    disk.sync_dir(dir).await?;
    Ok(bytes.len() as u64)
}

/// Recovers the shard in `dir` (see the module doc).
pub async fn recover(disk: &dyn Disk, dir: &Path, label: &str) -> io::Result<Recovered> {
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
    let mut summaries: Vec<(u32, Summary)> = Vec::new();
    let mut corrupt_records = 0u64;
    let mut rebuilt = 0u32;
    let mut unverified = Vec::new();
    let mut ord = 0u32;
    for (&first_lsn, path) in &logs {
        let file = disk
            .open(path)
            .await
            .map_err(|e| io::Error::new(e.kind(), format!("opening {}: {e}", path.display())))?;
        let is_open = Some(first_lsn) == newest;
        let idx_path = segment::idx_path(dir, first_lsn);
        let mut summary = None;
        if !is_open {
            match index::load(disk, &idx_path, first_lsn).await? {
                Some(Ok(l)) => summary = Some(Summary::Loaded(l)),
                Some(Err(why)) => {
                    log::warn!("{label}: index {first_lsn:020}.idx is invalid ({why}): rebuilding it from its segment");
                }
                None => {
                    log::warn!("{label}: index {first_lsn:020}.idx is missing: rebuilding it from its segment");
                }
            }
        }
        let summary = match summary {
            Some(s) => s,
            None => {
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
                write_index(disk, dir, first_lsn, &idx).await?;
                Summary::Built(idx)
            }
        };
        let (data_len, corrupt, idx_bytes) = match &summary {
            Summary::Loaded(l) => {
                let a = l.get();
                (
                    a.data_len.to_native(),
                    a.corrupt_records.to_native(),
                    l.file_len(),
                )
            }
            Summary::Built(b) => (b.data_len, b.corrupt_records, index::encode(b).len() as u64),
        };
        corrupt_records += u64::from(corrupt);
        if matches!(summary, Summary::Loaded(_)) {
            unverified.push(ord);
        }
        let disk_bytes = file.size().await?;
        segs.insert(
            ord,
            Seg::recovered(first_lsn, file, disk_bytes, data_len, idx_bytes),
        );
        summaries.push((ord, summary));
        ord += 1;
    }

    let Replayed {
        queues,
        next_queue_id,
        max_lsn,
    } = replay(&summaries);
    drop(summaries);
    for q in &queues {
        for l in &q.locs {
            if let Some(seg) = segs.get_mut(&l.pos.seg) {
                seg.count_live(l.len);
            }
        }
    }
    let items: usize = queues.iter().map(|q| q.locs.len()).sum();
    log::debug!(
        "{label}: recovered {} queues, {items} messages from {} segments ({rebuilt} indexes rebuilt, {corrupt_records} corrupt stretches)",
        queues.len(),
        segs.len()
    );
    Ok(Recovered {
        segs,
        queues,
        next_lsn: max_lsn + 1,
        next_queue_id: next_queue_id.max(1),
        corrupt_records,
        rebuilt_indexes: rebuilt,
        unverified,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::record;
    use crate::log::segment::tests::Mem;

    /// A segment of ten records whose last one a crash cut short.
    fn torn_segment() -> Vec<u8> {
        let mut buf = Vec::new();
        for lsn in 1..=10 {
            let body = vec![0xab; 100];
            record::encode_into(&mut buf, &record::message_header(lsn, body.len()), &body);
        }
        let last = buf.iter().rposition(|&b| b != 0).expect("a body byte");
        buf[last] ^= 0x5a;
        buf.resize(2 * BLOCK as usize, 0);
        buf
    }

    /// The torn tail of the open segment is how a crash ends the log: cut,
    /// never counted as corruption nor stored in the index as such (which
    /// every later start read back). In a sealed segment it is damage.
    #[test]
    fn a_torn_tail_of_the_open_segment_is_not_corruption() {
        let file = Mem(torn_segment());
        let scan = |is_open| {
            futures_lite::future::block_on(scan_to_index("t", &file, 1, is_open)).unwrap()
        };
        let (idx, rep) = scan(true);
        assert!(rep.torn.is_some());
        assert_eq!(idx.last_lsn, 9);
        assert_eq!(idx.corrupt_records, 0);
        let (idx, rep) = scan(false);
        assert!(rep.torn.is_some());
        assert_eq!(idx.corrupt_records, 1);
    }
}
