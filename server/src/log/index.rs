//! Index files: `<first lsn, 20 digits>.idx`, one per sealed segment.
//!
//! An index is an rkyv archive of a [`SegmentIndex`]: for every queue that
//! has records in the segment, its name (when the segment holds its
//! `Created` record), the highest head/tail the segment's records assert,
//! whether the segment deletes it, and the position of each of its messages.
//! That is everything recovery needs from a sealed segment, so a restart
//! reads the index files and scans only the open segment. An index file is
//! read into an aligned buffer, validated once (checksum, then bytecheck of
//! the whole archive) and then read in place without further checks
//! ([`LoadedIndex`]); [`IndexRead`] reads a built index and a loaded one
//! alike, so recovery is written once for both.
//!
//! # Two archives in one file
//! A sealed segment's index is read two ways. A restart reads what each
//! segment says of its queues and nothing per message: the *summary*, a
//! small rkyv archive of its own ([`SegmentSummary`]) at the end of the
//! file, with a checksum of its own, so restart cost is segments × queues.
//! A queue whose head reaches a segment reads its messages' positions from
//! the *main* archive ([`SegmentIndex`], every message's [`IndexEntry`]) a
//! window at a time: the summary says, for each run of consecutive
//! sequence numbers ([`Span`]), where in the file its entries are and a
//! checksum of every page of them ([`read_entries`]), so a window read is
//! one small read, verified, and decoded in place. The offline tools read
//! the main archive whole ([`LoadedIndex`]).
//!
//! File layout (see `docs/format.md`): the main archive, zero padding to a
//! multiple of 16, the summary archive, then a 24-byte trailer
//! `u32 crc32c(main) | u32 main length | u32 crc32c(summary) | u32 summary
//! length | u64 magic "MCQIDX03"`.
//! An index is written to `<name>.idx.tmp`, fdatasync'd, renamed into place
//! and the directory fsync'd, so a crash leaves either no index (rebuilt by
//! scanning the segment) or a whole one.

use std::io;
use std::path::Path;
use std::rc::Rc;

use rkyv::util::AlignedVec;

use crate::disk::{Disk, DiskFile, BLOCK};
use crate::idhash::IdMap;
use crate::log::record::{self, Header, Kind};
use crate::log::{Loc, Pos};

/// Trailer magic, little-endian "MCQIDX03".
pub const INDEX_MAGIC: u64 = u64::from_le_bytes(*b"MCQIDX03");
/// Bumped on any change to [`SegmentIndex`] or [`SegmentSummary`]; an
/// index of another version is rebuilt from its segment.
pub const INDEX_VERSION: u32 = 4;
const TRAILER_LEN: usize = 24;
/// Entries per checksummed page of a span (one 4 KiB block's worth).
pub const PAGE_ENTRIES: usize = 170;
/// Size of an archived [`IndexEntry`] in the main archive.
pub const ENTRY_LEN: usize = 24;
const _: () = assert!(std::mem::size_of::<ArchivedIndexEntry>() == ENTRY_LEN);
const _: () = assert!(std::mem::align_of::<ArchivedIndexEntry>() <= ALIGN);

/// Where one message's record is in its segment.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub struct IndexEntry {
    pub seq: u64,
    pub off: u32,
    /// Record length, header included, padding excluded.
    pub len: u32,
    /// Unix seconds when the message expires; 0 never.
    pub expires: u32,
    /// Unix second it was enqueued (for the age of a queue's head).
    pub time: u32,
}

impl IndexEntry {
    /// Its locator, the entry being of segment `seg`.
    pub fn loc(&self, seg: u32) -> Loc {
        Loc {
            seq: self.seq,
            pos: Pos { seg, off: self.off },
            len: self.len,
            expires: self.expires,
        }
    }
}

/// What one segment says about one queue.
#[derive(
    rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Clone, Debug, PartialEq, Eq, Default,
)]
pub struct QueueIndex {
    pub id: u32,
    /// Set when the segment has a `Created` record for the queue.
    pub created: bool,
    pub name: Vec<u8>,
    /// Set when the segment has a `Deleted` record for the queue.
    pub deleted: bool,
    /// Highest head asserted by `Created`/`Consumed` records (0 if none).
    pub head: u64,
    /// Highest tail asserted by `Created`/`Enqueued` records (0 if none).
    pub tail: u64,
    pub msgs: Vec<IndexEntry>,
    /// Ranges of messages confirmed out of order by `Confirmed` records
    /// (see `log::confirmed`), as `[start, end)`, in record order.
    pub confirmed: Vec<SeqRange>,
}

/// `[start, end)` of message sequence numbers.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub struct SeqRange {
    pub start: u64,
    pub end: u64,
}

/// `[first, end)` of queue ids.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub struct IdRange {
    pub first: u32,
    pub end: u32,
}

/// The whole index of one segment.
#[derive(
    rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Clone, Debug, PartialEq, Eq, Default,
)]
pub struct SegmentIndex {
    pub version: u32,
    /// The segment's number (its first lsn).
    pub first_lsn: u64,
    /// Highest lsn of a valid record in the segment.
    pub last_lsn: u64,
    /// End of the last valid record.
    pub data_len: u64,
    /// The segment holds a complete checkpoint.
    pub checkpoint: bool,
    /// From the checkpoint: the queues alive when the segment was started.
    pub live: Vec<IdRange>,
    /// From the checkpoint record: the next queue id to hand out.
    pub next_queue_id: u32,
    /// Highest queue id mentioned by any record.
    pub max_queue_id: u32,
    /// Records skipped as corrupt when the index was built by a scan.
    pub corrupt_records: u32,
    pub queues: Vec<QueueIndex>,
}

/// A run of one queue's messages in a segment with consecutive sequence
/// numbers (`lo .. lo + count`), and where their entries are: what a queue
/// keeps of a sealed segment instead of a locator per message.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Span {
    pub lo: u64,
    pub count: u32,
    /// Index of its first entry in the queue's `msgs`.
    pub first: u32,
    /// Byte offset of that entry in the index file.
    pub at: u64,
    /// Sum of its records' lengths (headers included).
    pub bytes: u64,
    /// Unix second its first message was enqueued.
    pub time: u32,
    /// crc32c of each page of its entries: [`PAGE_ENTRIES`] entries
    /// (`ENTRY_LEN` bytes each) from its first, the last page shorter.
    pub pages: Vec<u32>,
}

/// What one segment says about one queue, without its messages.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct QueueSummary {
    pub id: u32,
    pub created: bool,
    pub name: Vec<u8>,
    pub deleted: bool,
    pub head: u64,
    pub tail: u64,
    pub confirmed: Vec<SeqRange>,
    /// Its messages, by seq.
    pub spans: Vec<Span>,
}

/// The summary archive: a segment's index without the messages.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct SegmentSummary {
    pub version: u32,
    pub first_lsn: u64,
    pub last_lsn: u64,
    pub data_len: u64,
    pub checkpoint: bool,
    pub live: Vec<IdRange>,
    pub next_queue_id: u32,
    pub max_queue_id: u32,
    pub corrupt_records: u32,
    pub queues: Vec<QueueSummary>,
}

/// Builds a [`SegmentIndex`] from the records of a segment, in log order.
///
/// The open segment's builder lives as long as the segment, so it keeps
/// what it is fed flat: one entry per message, tagged with its queue, and
/// a small record only for the queues that have records other than
/// messages (`Created`, `Consumed`, …). At a million queues of a message
/// or two each, a `QueueIndex` per queue with a vector of its own cost
/// about 200 bytes per queue in the open segment; this costs 32 per message
/// and about 50 per queue created in it. [`IndexBuilder::finish`] groups
/// the entries by queue once, at seal.
#[derive(Default)]
pub struct IndexBuilder {
    first_lsn: u64,
    last_lsn: u64,
    data_len: u64,
    checkpoint: bool,
    live: Vec<IdRange>,
    next_queue_id: u32,
    max_queue_id: u32,
    pub corrupt_records: u32,
    /// Every `Enqueued` record, in log order, with its queue's id.
    msgs: Vec<(u32, IndexEntry)>,
    /// What the other records say, by queue id (integer-hashed: found on
    /// every such record).
    queues: IdMap<u32, QueueFacts>,
    /// `Confirmed` records, in log order, with their queue's id (rare:
    /// reliable reads confirmed out of order).
    confirmed: Vec<(u32, SeqRange)>,
    /// The names of the queues created in the segment, end to end (see
    /// [`QueueFacts::name`]): one allocation, not one per queue.
    names: Vec<u8>,
}

/// What the records of a segment other than messages say of one queue.
#[derive(Default)]
struct QueueFacts {
    created: bool,
    deleted: bool,
    /// The messages and confirmations of the queue among the first
    /// `cleared_msgs` of `msgs` (`cleared_confirmed` of `confirmed`) came
    /// before its `Deleted` record, and are dropped.
    cleared_msgs: u32,
    cleared_confirmed: u32,
    head: u64,
    tail: u64,
    /// Where its name is in the builder's `names`.
    name: std::ops::Range<u32>,
}

impl IndexBuilder {
    pub fn new(first_lsn: u64) -> IndexBuilder {
        IndexBuilder {
            first_lsn,
            ..IndexBuilder::default()
        }
    }

    fn queue(&mut self, id: u32) -> &mut QueueFacts {
        self.queues.entry(id).or_default()
    }

    /// Feeds one valid record found at `off`.
    pub fn record(&mut self, h: &Header, body: &[u8], off: u64) {
        self.seen(h, off);
        match h.kind {
            Kind::Created => {
                if let Some((head, tail, name)) = record::parse_created(body) {
                    let at = self.names.len() as u32;
                    self.names.extend_from_slice(name);
                    let end = self.names.len() as u32;
                    let q = self.queue(h.queue);
                    q.created = true;
                    q.name = at..end;
                    q.head = q.head.max(head);
                    q.tail = q.tail.max(tail);
                }
            }
            Kind::Enqueued => self.message(h, off),
            // Met alone (its region did not verify): the message is gone,
            // its sequence number taken.
            Kind::Region => {
                let q = self.queue(h.queue);
                q.tail = q.tail.max(h.seq + 1);
            }
            Kind::Consumed => {
                let q = self.queue(h.queue);
                q.head = q.head.max(h.seq);
            }
            Kind::Deleted => {
                let (msgs, confirmed) = (self.msgs.len() as u32, self.confirmed.len() as u32);
                let q = self.queue(h.queue);
                q.deleted = true;
                q.cleared_msgs = msgs;
                q.cleared_confirmed = confirmed;
            }
            Kind::Confirmed => {
                if let Some(end) = record::parse_confirmed(body) {
                    self.queue(h.queue);
                    self.confirmed
                        .push((h.queue, SeqRange { start: h.seq, end }));
                }
            }
            Kind::Checkpoint => {
                // Format 4 and before: the queues restated before it.
                let mut ids: Vec<(u32, u32)> = self
                    .queues
                    .iter()
                    .filter(|(_, q)| q.created)
                    .map(|(&id, _)| (id, id + 1))
                    .collect();
                ids.extend(record::parse_checkpoint(body).into_iter().flatten());
                ids.sort_unstable();
                self.live.clear();
                for (first, end) in ids {
                    match self.live.last_mut() {
                        Some(r) if r.end >= first => r.end = r.end.max(end),
                        _ => self.live.push(IdRange { first, end }),
                    }
                }
                self.checkpoint = true;
                self.next_queue_id = self.next_queue_id.max(h.seq as u32);
            }
        }
    }

    /// Feeds the `Enqueued` record `h` of a body written out of line at
    /// `off` (its bytes are not at hand: see `log::region`).
    pub fn enqueued(&mut self, h: &Header, off: u64) {
        self.seen(h, off);
        self.message(h, off);
    }

    /// What every record at `off` tells: the lsn, the data's end, the
    /// queue ids in use.
    fn seen(&mut self, h: &Header, off: u64) {
        self.last_lsn = self.last_lsn.max(h.lsn);
        self.data_len = self.data_len.max(off + h.record_len() as u64);
        if h.kind != Kind::Checkpoint {
            self.max_queue_id = self.max_queue_id.max(h.queue);
        }
    }

    fn message(&mut self, h: &Header, off: u64) {
        self.msgs.push((
            h.queue,
            IndexEntry {
                seq: h.seq,
                off: off as u32,
                len: (record::HEADER_LEN + h.len as usize) as u32,
                expires: h.expires,
                time: (h.time / 1_000_000).min(u64::from(u32::MAX)) as u32,
            },
        ));
    }

    pub fn last_lsn(&self) -> u64 {
        self.last_lsn
    }

    pub fn data_len(&self) -> u64 {
        self.data_len
    }

    /// The finished index, queues sorted by id, messages by seq.
    pub fn finish(self) -> SegmentIndex {
        self.sorted().to_native()
    }

    /// The finished index, still flat: what a sealed segment keeps until
    /// its index is written (see [`FlatIndex`]).
    pub fn sorted(self) -> FlatIndex {
        let IndexBuilder {
            mut msgs,
            queues: mut facts,
            mut confirmed,
            names,
            ..
        } = self;
        let table = &facts;
        let kept = |at: usize, id: u32, cleared: fn(&QueueFacts) -> u32| {
            table.get(&id).is_none_or(|q| at as u32 >= cleared(q))
        };
        let mut at = 0;
        msgs.retain(|(id, _)| {
            at += 1;
            kept(at - 1, *id, |q| q.cleared_msgs)
        });
        let mut at = 0;
        confirmed.retain(|(id, _)| {
            at += 1;
            kept(at - 1, *id, |q| q.cleared_confirmed)
        });
        let (msgs, groups) = group_by_queue(msgs);
        confirmed.sort_by_key(|(id, _)| *id);
        let mut ids: Vec<u32> = facts.keys().copied().collect();
        ids.extend(
            groups
                .iter()
                .filter(|(id, _)| !facts.contains_key(id))
                .map(|(id, _)| *id),
        );
        ids.sort_unstable();
        let (mut g, mut m, mut c) = (0, 0, 0);
        let queues = ids
            .into_iter()
            .map(|id| {
                let f = facts.remove(&id).unwrap_or_default();
                let mut tail = f.tail;
                if groups.get(g).is_some_and(|&(of, _)| of == id) {
                    let end = groups[g].1 as usize;
                    // Sorted by seq: the last is the highest.
                    tail = tail.max(msgs[end - 1].seq + 1);
                    (g, m) = (g + 1, end);
                }
                while c < confirmed.len() && confirmed[c].0 == id {
                    c += 1;
                }
                FlatQueue {
                    id,
                    created: f.created,
                    deleted: f.deleted,
                    head: f.head,
                    tail,
                    name: f.name,
                    msgs_end: m as u32,
                    confirmed_end: c as u32,
                }
            })
            .collect();
        FlatIndex {
            header: SegmentIndex {
                version: INDEX_VERSION,
                first_lsn: self.first_lsn,
                last_lsn: self.last_lsn,
                data_len: self.data_len,
                checkpoint: self.checkpoint,
                live: self.live,
                next_queue_id: self.next_queue_id,
                max_queue_id: self.max_queue_id,
                corrupt_records: self.corrupt_records,
                queues: Vec::new(),
            },
            queues,
            msgs,
            confirmed: confirmed.into_iter().map(|(_, r)| r).collect(),
            names,
        }
    }
}

/// `msgs` (in log order, tagged with their queue) grouped by queue in id
/// order, each queue's by seq; and each queue's id with the end of its
/// group. A counting sort: one pass to count each queue's, one to place
/// them, then each group checked (a queue's messages come in seq order but
/// for a compaction copy or a put-back). Sorting every entry by
/// `(queue, seq)` instead took tens of milliseconds at each seal, on the
/// executor.
fn group_by_queue(msgs: Vec<(u32, IndexEntry)>) -> (Vec<IndexEntry>, Vec<(u32, u32)>) {
    let mut slot_of: IdMap<u32, u32> = IdMap::default();
    let mut counts: Vec<(u32, u32)> = Vec::new();
    let slots: Vec<u32> = msgs
        .iter()
        .map(|&(id, _)| {
            let s = *slot_of.entry(id).or_insert_with(|| {
                counts.push((id, 0));
                counts.len() as u32 - 1
            });
            counts[s as usize].1 += 1;
            s
        })
        .collect();
    drop(slot_of);
    let mut order: Vec<u32> = (0..counts.len() as u32).collect();
    order.sort_unstable_by_key(|&s| counts[s as usize].0);
    let mut next = vec![0u32; counts.len()];
    let mut groups = Vec::with_capacity(counts.len());
    let mut at = 0;
    for &s in &order {
        next[s as usize] = at;
        at += counts[s as usize].1;
        groups.push((counts[s as usize].0, at));
    }
    let blank = IndexEntry {
        seq: 0,
        off: 0,
        len: 0,
        expires: 0,
        time: 0,
    };
    let mut out = vec![blank; msgs.len()];
    for ((_, m), s) in msgs.into_iter().zip(slots) {
        out[next[s as usize] as usize] = m;
        next[s as usize] += 1;
    }
    let mut start = 0;
    for &(_, end) in &groups {
        let group = &mut out[start..end as usize];
        if !group.is_sorted_by_key(|m| m.seq) {
            // Stable: a sequence number met twice keeps its log order.
            group.sort_by_key(|m| m.seq);
        }
        start = end as usize;
    }
    (out, groups)
}

/// A finished index kept flat: the queues in one vector, their messages
/// and confirmations each in one vector, grouped by queue. A sealed
/// segment waits in this form for its index to be written, which archives
/// it straight from here ([`MainOf`]) without a [`SegmentIndex`] of every
/// queue: at a million queues that was about 60 MB at a seal's peak.
pub struct FlatIndex {
    /// Everything but the queues (left empty).
    header: SegmentIndex,
    queues: Vec<FlatQueue>,
    msgs: Vec<IndexEntry>,
    confirmed: Vec<SeqRange>,
    /// The queues' names, end to end.
    names: Vec<u8>,
}

/// One queue of a [`FlatIndex`]: its messages end at `msgs_end` of the
/// index's `msgs` and start where the previous queue's end.
struct FlatQueue {
    id: u32,
    created: bool,
    deleted: bool,
    head: u64,
    tail: u64,
    /// Where its name is in the index's `names`.
    name: std::ops::Range<u32>,
    msgs_end: u32,
    confirmed_end: u32,
}

impl FlatIndex {
    /// Queue `i` as a [`QueueIndex`].
    fn queue(&self, i: usize) -> QueueIndex {
        let q = self.queue_of(i);
        QueueIndex {
            id: q.id,
            created: q.created,
            name: q.name.to_vec(),
            deleted: q.deleted,
            head: q.head,
            tail: q.tail,
            msgs: q.msgs.to_vec(),
            confirmed: q.confirmed.to_vec(),
        }
    }

    /// Queue `i`, borrowed, as it archives.
    fn queue_of(&self, i: usize) -> QueueOf<'_> {
        let q = &self.queues[i];
        let (m, c) = match i.checked_sub(1) {
            Some(p) => (self.queues[p].msgs_end, self.queues[p].confirmed_end),
            None => (0, 0),
        };
        QueueOf {
            id: q.id,
            created: q.created,
            name: &self.names[q.name.start as usize..q.name.end as usize],
            deleted: q.deleted,
            head: q.head,
            tail: q.tail,
            msgs: &self.msgs[m as usize..q.msgs_end as usize],
            confirmed: &self.confirmed[c as usize..q.confirmed_end as usize],
        }
    }

    pub fn to_native(&self) -> SegmentIndex {
        SegmentIndex {
            queues: (0..self.queues.len()).map(|i| self.queue(i)).collect(),
            ..self.header.clone()
        }
    }
}

/// A main archive's source: a built index, or one a scan made.
pub trait MainSource {
    /// Its main archive.
    fn archive(&self) -> AlignedVec<ALIGN>;
}

impl MainSource for SegmentIndex {
    fn archive(&self) -> AlignedVec<ALIGN> {
        rkyv::api::high::to_bytes_in::<_, rkyv::rancor::Error>(self, AlignedVec::new())
            .expect("serialising an index cannot fail")
    }
}

impl MainSource for FlatIndex {
    fn archive(&self) -> AlignedVec<ALIGN> {
        let h = &self.header;
        let main = MainOf {
            version: h.version,
            first_lsn: h.first_lsn,
            last_lsn: h.last_lsn,
            data_len: h.data_len,
            checkpoint: h.checkpoint,
            live: h.live.clone(),
            next_queue_id: h.next_queue_id,
            max_queue_id: h.max_queue_id,
            corrupt_records: h.corrupt_records,
            queues: self,
        };
        // About its size, so that the buffer is not copied as it grows.
        let size = 4096
            + self.queues.len() * std::mem::size_of::<ArchivedQueueIndex>()
            + self.names.len()
            + self.msgs.len() * ENTRY_LEN
            + self.confirmed.len() * std::mem::size_of::<ArchivedSeqRange>();
        rkyv::api::high::to_bytes_in::<_, rkyv::rancor::Error>(
            &main,
            AlignedVec::with_capacity(size),
        )
        .expect("serialising an index cannot fail")
    }
}

/// A [`SegmentIndex`] as a [`FlatIndex`] archives it: one queue at a time,
/// byte for byte what serialising the native index gives (tested).
#[derive(rkyv::Archive, rkyv::Serialize)]
#[rkyv(
    as = ArchivedSegmentIndex,
    serialize_bounds(__S: rkyv::ser::Writer + rkyv::ser::Allocator, __S::Error: rkyv::rancor::Source)
)]
struct MainOf<'a> {
    version: u32,
    first_lsn: u64,
    last_lsn: u64,
    data_len: u64,
    checkpoint: bool,
    live: Vec<IdRange>,
    next_queue_id: u32,
    max_queue_id: u32,
    corrupt_records: u32,
    #[rkyv(with = FlatQueues, omit_bounds)]
    queues: &'a FlatIndex,
}

/// Declares `$with`, an rkyv wrapper that archives a field of type
/// `$field` as a vector of `$item`s made from it one at a time, with no
/// vector of its own: `$len` of them, and `$items` iterating over them, both
/// of the field, named `$f`. rkyv runs the iterator twice (it writes what an
/// item points to first, then the array), so an item is made of borrowed
/// slices and costs nothing to make.
macro_rules! archive_vec_from_iter {
    (
        $(#[$doc:meta])*
        $with:ident: <$lt:lifetime> $field:ty => [$item:ty as $archived:ty],
        |$f:ident| len: $len:expr, items: $items:expr $(,)?
    ) => {
        $(#[$doc])*
        struct $with;

        impl<$lt> rkyv::with::ArchiveWith<$field> for $with {
            type Archived = rkyv::vec::ArchivedVec<$archived>;
            type Resolver = rkyv::vec::VecResolver;

            fn resolve_with(
                $f: &$field,
                resolver: Self::Resolver,
                out: rkyv::Place<Self::Archived>,
            ) {
                rkyv::vec::ArchivedVec::resolve_from_len($len, resolver, out);
            }
        }

        impl<$lt, S> rkyv::with::SerializeWith<$field, S> for $with
        where
            S: rkyv::rancor::Fallible + rkyv::ser::Allocator + rkyv::ser::Writer + ?Sized,
            S::Error: rkyv::rancor::Source,
        {
            fn serialize_with($f: &$field, serializer: &mut S) -> Result<Self::Resolver, S::Error> {
                rkyv::vec::ArchivedVec::serialize_from_iter::<$item, _, _>($items, serializer)
            }
        }
    };
}

archive_vec_from_iter! {
    /// Archives a [`FlatIndex`]'s queues as the main archive's.
    FlatQueues: <'a> &'a FlatIndex => [QueueOf<'_> as ArchivedQueueIndex],
    |flat| len: flat.queues.len(),
    items: (0..flat.queues.len()).map(|i| flat.queue_of(i)),
}

/// A queue of a [`FlatIndex`] as its [`QueueIndex`] archives, borrowed
/// from the flat index's vectors.
///
/// Built as a `QueueIndex`, each queue of a seal cost two vectors and a
/// copy of its name, twice over: at a million queues of a message or two,
/// that was most of an index's encoding, and encoding indexes a sixth of
/// the server's CPU in a fill of a million queues.
#[derive(rkyv::Archive, rkyv::Serialize)]
#[rkyv(
    as = ArchivedQueueIndex,
    serialize_bounds(__S: rkyv::ser::Writer + rkyv::ser::Allocator, __S::Error: rkyv::rancor::Source)
)]
struct QueueOf<'a> {
    id: u32,
    created: bool,
    #[rkyv(with = AsVec, omit_bounds)]
    name: &'a [u8],
    deleted: bool,
    head: u64,
    tail: u64,
    #[rkyv(with = AsVec, omit_bounds)]
    msgs: &'a [IndexEntry],
    #[rkyv(with = AsVec, omit_bounds)]
    confirmed: &'a [SeqRange],
}

/// Archives a borrowed slice as the vector it stands for.
struct AsVec;

impl<T: rkyv::Archive> rkyv::with::ArchiveWith<&[T]> for AsVec {
    type Archived = rkyv::vec::ArchivedVec<T::Archived>;
    type Resolver = rkyv::vec::VecResolver;

    fn resolve_with(field: &&[T], resolver: Self::Resolver, out: rkyv::Place<Self::Archived>) {
        rkyv::vec::ArchivedVec::resolve_from_len(field.len(), resolver, out);
    }
}

impl<T, S> rkyv::with::SerializeWith<&[T], S> for AsVec
where
    T: rkyv::Serialize<S>,
    S: rkyv::rancor::Fallible + rkyv::ser::Allocator + rkyv::ser::Writer + ?Sized,
{
    fn serialize_with(field: &&[T], serializer: &mut S) -> Result<Self::Resolver, S::Error> {
        rkyv::vec::ArchivedVec::serialize_from_slice(field, serializer)
    }
}

/// One queue's [`QueueSummary`] as it archives, read from the main archive
/// `main` as it is written: nothing is copied or allocated (see
/// [`QueueOf`]).
#[derive(rkyv::Archive, rkyv::Serialize)]
#[rkyv(
    as = ArchivedQueueSummary,
    serialize_bounds(__S: rkyv::ser::Writer + rkyv::ser::Allocator, __S::Error: rkyv::rancor::Source)
)]
struct SummaryOfQueue<'a> {
    id: u32,
    created: bool,
    #[rkyv(with = AsVec, omit_bounds)]
    name: &'a [u8],
    deleted: bool,
    head: u64,
    tail: u64,
    #[rkyv(with = Confirmed, omit_bounds)]
    confirmed: &'a [ArchivedSeqRange],
    #[rkyv(with = AsSpans, omit_bounds)]
    spans: Spans<'a>,
}

impl<'a> SummaryOfQueue<'a> {
    /// What one segment says of one queue, from its main archive `main`
    /// (`a` being in it).
    fn of(a: &'a ArchivedQueueIndex, main: &'a [u8]) -> SummaryOfQueue<'a> {
        let msgs = a.msgs.as_slice();
        SummaryOfQueue {
            id: a.id.to_native(),
            created: a.created,
            name: a.name.as_slice(),
            deleted: a.deleted,
            head: a.head.to_native(),
            tail: a.tail.to_native(),
            confirmed: a.confirmed.as_slice(),
            spans: Spans {
                msgs,
                base: msgs.as_ptr() as usize - main.as_ptr() as usize,
                raw: main,
                first: 0,
                count: 1 + msgs.windows(2).filter(|w| !follows(&w[0], &w[1])).count(),
            }
            .nonempty(),
        }
    }
}

archive_vec_from_iter! {
    /// Archives the main archive's confirmed ranges as the summary's (the
    /// same ranges, made native to be archived again).
    Confirmed: <'a> &'a [ArchivedSeqRange] => [SeqRange as ArchivedSeqRange],
    |ranges| len: ranges.len(),
    items: ranges.iter().map(|r| SeqRange {
        start: r.start.to_native(),
        end: r.end.to_native(),
    }),
}

/// Whether `b` is the message after `a`.
fn follows(a: &ArchivedIndexEntry, b: &ArchivedIndexEntry) -> bool {
    b.seq.to_native() == a.seq.to_native() + 1
}

/// The spans of `msgs` (sorted by seq), whose entries start at byte
/// `base` of the file, spaced [`ENTRY_LEN`], its bytes being `raw`:
/// `count` of them, the first starting at the queue's entry `first`.
#[derive(Clone, Copy)]
struct Spans<'a> {
    msgs: &'a [ArchivedIndexEntry],
    base: usize,
    raw: &'a [u8],
    count: usize,
    first: u32,
}

impl<'a> Spans<'a> {
    /// No messages make no spans.
    fn nonempty(self) -> Spans<'a> {
        Spans {
            count: if self.msgs.is_empty() { 0 } else { self.count },
            ..self
        }
    }
}

impl<'a> Iterator for Spans<'a> {
    type Item = SpanOf<'a>;

    fn next(&mut self) -> Option<SpanOf<'a>> {
        let msgs = self.msgs;
        let first = msgs.first()?;
        let mut j = 1;
        while j < msgs.len() && follows(&msgs[j - 1], &msgs[j]) {
            j += 1;
        }
        let at = self.base;
        let span = SpanOf {
            lo: first.seq.to_native(),
            count: j as u32,
            first: self.first,
            at: at as u64,
            bytes: msgs[..j].iter().map(|m| u64::from(m.len.to_native())).sum(),
            time: first.time.to_native(),
            pages: &self.raw[at..at + j * ENTRY_LEN],
        };
        self.msgs = &msgs[j..];
        self.base += j * ENTRY_LEN;
        self.first += j as u32;
        self.count -= 1;
        Some(span)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.count, Some(self.count))
    }
}

impl ExactSizeIterator for Spans<'_> {}

/// One [`Span`] as it archives: its pages' checksums are computed as they
/// are written, from the entries' bytes (`pages`).
#[derive(rkyv::Archive, rkyv::Serialize)]
#[rkyv(
    as = ArchivedSpan,
    serialize_bounds(__S: rkyv::ser::Writer + rkyv::ser::Allocator, __S::Error: rkyv::rancor::Source)
)]
struct SpanOf<'a> {
    lo: u64,
    count: u32,
    first: u32,
    at: u64,
    bytes: u64,
    time: u32,
    #[rkyv(with = PageCrcs, omit_bounds)]
    pages: &'a [u8],
}

archive_vec_from_iter! {
    /// Archives a queue's [`Spans`] as the summary's vector of spans.
    AsSpans: <'a> Spans<'a> => [SpanOf<'_> as ArchivedSpan],
    |spans| len: spans.count,
    items: *spans,
}

const PAGE_BYTES: usize = PAGE_ENTRIES * ENTRY_LEN;

archive_vec_from_iter! {
    /// Archives the entries' bytes of a span as the crc32c of each of its
    /// pages ([`PAGE_ENTRIES`] entries). A `u32` archives with no resolver
    /// of its own, so each page is checksummed once.
    PageCrcs: <'a> &'a [u8] => [u32 as rkyv::rend::u32_le],
    |entries| len: entries.len().div_ceil(PAGE_BYTES),
    items: entries.chunks(PAGE_BYTES).map(crc32c::crc32c),
}

/// A [`SegmentSummary`] as it is written: archived straight from the main
/// archive, one queue at a time, so that no native summary of every queue
/// is ever held (at a million queues that was about 90 MB at the peak of a
/// seal). It archives as the summary itself (`as = …`), byte for byte what
/// serialising a native [`SegmentSummary`] gives (tested).
#[derive(rkyv::Archive, rkyv::Serialize)]
#[rkyv(
    as = ArchivedSegmentSummary,
    serialize_bounds(__S: rkyv::ser::Writer + rkyv::ser::Allocator, __S::Error: rkyv::rancor::Source)
)]
struct SummaryOf<'a> {
    version: u32,
    first_lsn: u64,
    last_lsn: u64,
    data_len: u64,
    checkpoint: bool,
    live: Vec<IdRange>,
    next_queue_id: u32,
    max_queue_id: u32,
    corrupt_records: u32,
    #[rkyv(with = QueueSummaries, omit_bounds)]
    queues: MainQueues<'a>,
}

/// The queues of a main archive, whose bytes are `main`.
#[derive(Clone, Copy)]
struct MainQueues<'a> {
    index: &'a ArchivedSegmentIndex,
    main: &'a [u8],
}

archive_vec_from_iter! {
    /// Archives [`MainQueues`] as the summary's queues, each one's summary
    /// made of borrowed slices of the main archive.
    QueueSummaries: <'a> MainQueues<'a> => [SummaryOfQueue<'_> as ArchivedQueueSummary],
    |queues| len: queues.index.queues.len(),
    items: queues.index.queues.iter().map(|a| SummaryOfQueue::of(a, queues.main)),
}

impl<'a> SummaryOf<'a> {
    /// The summary of the index whose main archive is `main`.
    fn of(main: &'a [u8]) -> SummaryOf<'a> {
        // SAFETY: `main` was serialised from a `SegmentIndex` a moment ago.
        let index = unsafe { rkyv::access_unchecked::<ArchivedSegmentIndex>(main) };
        SummaryOf {
            version: INDEX_VERSION,
            first_lsn: index.first_lsn.to_native(),
            last_lsn: index.last_lsn.to_native(),
            data_len: index.data_len.to_native(),
            checkpoint: index.checkpoint,
            live: index
                .live
                .iter()
                .map(|r| IdRange {
                    first: r.first.to_native(),
                    end: r.end.to_native(),
                })
                .collect(),
            next_queue_id: index.next_queue_id.to_native(),
            max_queue_id: index.max_queue_id.to_native(),
            corrupt_records: index.corrupt_records.to_native(),
            queues: MainQueues { index, main },
        }
    }
}

/// An index file's bytes, as made to be written, in its three parts: the
/// main archive (padded to the summary's alignment), the summary and the
/// trailer. Kept apart, not in one buffer, so that a seal never holds a
/// second copy of the summary, and the main archive, the larger part, can
/// be dropped once written ([`Encoded::written`]) while the summary is
/// still read in place.
pub struct Encoded {
    main: AlignedVec<ALIGN>,
    summary: AlignedVec<ALIGN>,
    trailer: [u8; TRAILER_LEN],
    file_len: usize,
}

impl Encoded {
    /// The file's parts, in order.
    pub fn parts(&self) -> [&[u8]; 3] {
        [&self.main, &self.summary, &self.trailer]
    }

    /// The file's bytes in one piece (tests and the offline tools).
    pub fn to_vec(&self) -> Vec<u8> {
        self.parts().concat()
    }

    pub fn file_len(&self) -> usize {
        self.file_len
    }

    /// The file is written: the main archive is not needed any more.
    pub fn written(&mut self) {
        self.main = AlignedVec::new();
    }

    pub fn summary(&self) -> &ArchivedSegmentSummary {
        // SAFETY: these bytes were serialised from a summary by
        // `encode_with_summary`, in a buffer of their own; `summary` is
        // private and never changed after.
        unsafe { rkyv::access_unchecked::<ArchivedSegmentSummary>(&self.summary) }
    }
}

/// Serialises an index into the file's parts: both archives and the
/// trailer. The index is dropped once its archive is made, and the summary
/// archived from that archive a queue at a time: at a million queues each
/// of these is tens of megabytes, and holding them all at once, with
/// copies, was the peak of a segment's sealing.
pub fn encode_with_summary(index: impl MainSource) -> Encoded {
    let mut main = index.archive();
    drop(index);
    let main_len = main.len();
    // The summary archive starts aligned, so read from there on its own
    // it is laid out as if serialised alone (rkyv's pointers are relative).
    let sum_off = main_len.next_multiple_of(ALIGN);
    main.resize(sum_off, 0);
    let of = SummaryOf::of(&main[..main_len]);
    // About its size when most queues have a span, as at many queues.
    let size = 4096
        + of.queues.index.queues.len()
            * (std::mem::size_of::<ArchivedQueueSummary>()
                + std::mem::size_of::<ArchivedSpan>()
                + 16);
    let summary = rkyv::api::high::to_bytes_in::<_, rkyv::rancor::Error>(
        &of,
        AlignedVec::<ALIGN>::with_capacity(size),
    )
    .expect("serialising a summary cannot fail");
    let sum_len = summary.len();
    let mut trailer = [0u8; TRAILER_LEN];
    let words = [
        crc32c::crc32c(&main[..main_len]),
        main_len as u32,
        crc32c::crc32c(&summary),
        sum_len as u32,
    ];
    for (i, w) in words.iter().enumerate() {
        trailer[i * 4..i * 4 + 4].copy_from_slice(&w.to_le_bytes());
    }
    trailer[16..].copy_from_slice(&INDEX_MAGIC.to_le_bytes());
    Encoded {
        main,
        summary,
        trailer,
        file_len: sum_off + sum_len + TRAILER_LEN,
    }
}

/// Serialises an index into the file's bytes.
pub fn encode(index: &SegmentIndex) -> Vec<u8> {
    encode_with_summary(index.clone()).to_vec()
}

/// The trailer of an index file of `file_len` bytes ending in `tail`.
struct Trailer {
    main_crc: u32,
    main_len: usize,
    sum_crc: u32,
    sum_off: usize,
    sum_len: usize,
}

impl Trailer {
    fn parse(tail: &[u8], file_len: usize) -> Result<Trailer, String> {
        if tail.len() < TRAILER_LEN || file_len < TRAILER_LEN {
            return Err(format!("{file_len} bytes is too short"));
        }
        let t = &tail[tail.len() - TRAILER_LEN..];
        let word = |i: usize| u32::from_le_bytes(t[i..i + 4].try_into().expect("4 bytes"));
        let magic = u64::from_le_bytes(t[16..24].try_into().expect("8 bytes"));
        if magic != INDEX_MAGIC {
            return Err("bad magic (an older format?)".into());
        }
        let main_len = word(4) as usize;
        let sum_len = word(12) as usize;
        let sum_off = main_len.next_multiple_of(ALIGN);
        if sum_off
            .checked_add(sum_len)
            .and_then(|n| n.checked_add(TRAILER_LEN))
            != Some(file_len)
        {
            return Err("bad length".into());
        }
        Ok(Trailer {
            main_crc: word(0),
            main_len,
            sum_crc: word(8),
            sum_off,
            sum_len,
        })
    }
}

/// Alignment of the buffer an index is read in place from (at least that
/// of every archived type in it).
const ALIGN: usize = 16;

/// The bytes of an index file: the buffer the file was read into when the
/// allocator aligned it (it does on the usual targets), a copy otherwise.
enum Buf {
    Read(Vec<u8>),
    Copied(AlignedVec<ALIGN>),
}

impl Buf {
    /// `bytes` where they are when aligned, else a copy.
    fn aligned(bytes: Vec<u8>) -> Buf {
        if (bytes.as_ptr() as usize).is_multiple_of(ALIGN) {
            Buf::Read(bytes)
        } else {
            let mut buf = AlignedVec::<ALIGN>::with_capacity(bytes.len());
            buf.extend_from_slice(&bytes);
            Buf::Copied(buf)
        }
    }

    fn bytes(&self) -> &[u8] {
        match self {
            Buf::Read(v) => v,
            Buf::Copied(v) => v,
        }
    }
}

/// An index file, validated once when loaded and then read in place.
///
/// Validation (trailer, checksum, then bytecheck of the whole archive) is
/// done once, in [`LoadedIndex::from_vec`]; [`LoadedIndex::get`] is then a
/// pointer cast. The buffer is private and never changes after that, so
/// what was validated is what is read.
pub struct LoadedIndex {
    buf: Buf,
    /// Length of the main archive.
    len: usize,
    file_len: usize,
}

impl LoadedIndex {
    /// Validates the file `bytes` (a copy of them is read in place).
    pub fn from_bytes(bytes: &[u8], first_lsn: u64) -> Result<LoadedIndex, String> {
        let mut buf = AlignedVec::<ALIGN>::with_capacity(bytes.len());
        buf.extend_from_slice(bytes);
        LoadedIndex::validate(Buf::Copied(buf), first_lsn)
    }

    /// Validates the file `bytes`, read in place where they are when that
    /// buffer is aligned (copied once otherwise).
    pub fn from_vec(bytes: Vec<u8>, first_lsn: u64) -> Result<LoadedIndex, String> {
        LoadedIndex::validate(Buf::aligned(bytes), first_lsn)
    }

    fn validate(buf: Buf, first_lsn: u64) -> Result<LoadedIndex, String> {
        let bytes = buf.bytes();
        let t = Trailer::parse(bytes, bytes.len())?;
        let len = t.main_len;
        if crc32c::crc32c(&bytes[..len]) != t.main_crc {
            return Err("checksum mismatch".into());
        }
        if bytes[len..t.sum_off].iter().any(|&b| b != 0) {
            return Err("bad padding".into());
        }
        let sum = &bytes[t.sum_off..t.sum_off + t.sum_len];
        if crc32c::crc32c(sum) != t.sum_crc {
            return Err("summary checksum mismatch".into());
        }
        LoadedSummary::from_bytes(bytes, first_lsn)?;
        let idx = rkyv::access::<ArchivedSegmentIndex, rkyv::rancor::Error>(&bytes[..len])
            .map_err(|e| format!("invalid archive: {e}"))?;
        if idx.version.to_native() != INDEX_VERSION {
            return Err(format!(
                "version {} (want {INDEX_VERSION})",
                idx.version.to_native()
            ));
        }
        if idx.first_lsn.to_native() != first_lsn {
            return Err(format!("belongs to segment {}", idx.first_lsn.to_native()));
        }
        let file_len = bytes.len();
        Ok(LoadedIndex { buf, len, file_len })
    }

    /// The archived index, read in place without checking it again.
    pub fn get(&self) -> &ArchivedSegmentIndex {
        // SAFETY: `validate` checked exactly these bytes with bytecheck
        // (`rkyv::access`) before this `LoadedIndex` was made, and they
        // cannot have changed since: `buf` is private, never handed out
        // mutably, and neither moved nor reallocated (a `Vec`'s or
        // `AlignedVec`'s heap buffer stays put when the struct moves).
        unsafe { rkyv::access_unchecked::<ArchivedSegmentIndex>(&self.buf.bytes()[..self.len]) }
    }

    /// The index as a [`SegmentIndex`] (to compare it with a scan's).
    pub fn to_native(&self) -> SegmentIndex {
        rkyv::deserialize::<SegmentIndex, rkyv::rancor::Error>(self.get())
            .expect("a validated archive deserialises")
    }

    /// Size of the file.
    pub fn file_len(&self) -> u64 {
        self.file_len as u64
    }

    /// Size of its summary archive: what a restart reads of it.
    pub fn summary_len(&self) -> u64 {
        (self.file_len - self.len.next_multiple_of(ALIGN) - TRAILER_LEN) as u64
    }
}

/// `path` opened, or `None` when it does not exist.
async fn open_if_exists(disk: &dyn Disk, path: &Path) -> io::Result<Option<Rc<dyn DiskFile>>> {
    match disk.open(path).await {
        Ok(f) => Ok(Some(f)),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Reads and validates `path`; `Ok(None)` when it does not exist.
pub async fn load(
    disk: &dyn Disk,
    path: &Path,
    first_lsn: u64,
) -> io::Result<Option<Result<LoadedIndex, String>>> {
    let Some(file) = open_if_exists(disk, path).await? else {
        return Ok(None);
    };
    let size = file.size().await?;
    let data = file.read_at(0, size as usize).await?;
    Ok(Some(LoadedIndex::from_vec(data, first_lsn)))
}

/// An index file's summary, validated once when loaded (trailer,
/// checksum, bytecheck) and then read in place.
pub struct LoadedSummary {
    buf: Buf,
    file_len: u64,
    /// Length of the main archive, at the start of the file.
    main_len: usize,
}

impl LoadedSummary {
    /// Validates the summary `sum` of an index whose trailer is `t`.
    fn validate(sum: Vec<u8>, t: &Trailer, file_len: u64, first_lsn: u64) -> Result<Self, String> {
        if crc32c::crc32c(&sum) != t.sum_crc {
            return Err("summary checksum mismatch".into());
        }
        let buf = Buf::aligned(sum);
        let idx = rkyv::access::<ArchivedSegmentSummary, rkyv::rancor::Error>(buf.bytes())
            .map_err(|e| format!("invalid summary: {e}"))?;
        if idx.version.to_native() != INDEX_VERSION {
            return Err(format!("version {}", idx.version.to_native()));
        }
        if idx.first_lsn.to_native() != first_lsn {
            return Err(format!("belongs to segment {}", idx.first_lsn.to_native()));
        }
        Ok(LoadedSummary {
            buf,
            file_len,
            main_len: t.main_len,
        })
    }

    /// The summary of the index file `bytes` (a whole file).
    pub fn from_bytes(bytes: &[u8], first_lsn: u64) -> Result<LoadedSummary, String> {
        let t = Trailer::parse(bytes, bytes.len())?;
        let sum = bytes[t.sum_off..t.sum_off + t.sum_len].to_vec();
        LoadedSummary::validate(sum, &t, bytes.len() as u64, first_lsn)
    }

    /// The archived summary, read in place without checking it again.
    pub fn get(&self) -> &ArchivedSegmentSummary {
        // SAFETY: `validate` checked exactly these bytes with bytecheck,
        // and `buf` is private and never changed after.
        unsafe { rkyv::access_unchecked::<ArchivedSegmentSummary>(self.buf.bytes()) }
    }

    /// Size of the file.
    pub fn file_len(&self) -> u64 {
        self.file_len
    }
}

/// Every entry of an index file, read in one piece: what recovery takes a
/// segment's short runs from (a queue keeps their locators, see
/// `queue::Backlog`), one read per segment instead of one per run.
pub struct EntryArea {
    /// The main archive, where every span's entries are.
    buf: Buf,
}

impl EntryArea {
    /// Reads the main archive of the index file `file`, whose summary is
    /// `summary`.
    pub async fn read(file: &dyn DiskFile, summary: &LoadedSummary) -> io::Result<EntryArea> {
        let buf = Buf::aligned(file.read_at(0, summary.main_len).await?);
        Ok(EntryArea { buf })
    }

    /// The entries of `span`, their page checksums verified.
    pub fn entries(&self, span: &ArchivedSpan) -> Result<&[ArchivedIndexEntry], String> {
        let at = span.at.to_native() as usize;
        let count = span.count.to_native() as usize;
        let end = count
            .checked_mul(ENTRY_LEN)
            .and_then(|n| n.checked_add(at))
            .filter(|&end| {
                end <= self.buf.bytes().len()
                    && at.is_multiple_of(std::mem::align_of::<ArchivedIndexEntry>())
            });
        let Some(end) = end else {
            return Err(format!("the {count} entries at {at} are beyond the index"));
        };
        let raw = &self.buf.bytes()[at..end];
        if count.div_ceil(PAGE_ENTRIES) != span.pages.len() {
            return Err(format!("the entries at {at} have a wrong page count"));
        }
        for (k, page) in raw.chunks(PAGE_ENTRIES * ENTRY_LEN).enumerate() {
            if crc32c::crc32c(page) != span.pages[k].to_native() {
                return Err(format!("page {k} of the entries at {at} does not verify"));
            }
        }
        // SAFETY: `raw` holds `count` entries of ENTRY_LEN bytes, the size
        // of `ArchivedIndexEntry` (asserted at the top of this file), at an
        // offset aligned to its alignment in a buffer aligned to ALIGN (at
        // least that, asserted there too), which is plain little-endian integers, so
        // every bit pattern is a valid value. The bytes are those rkyv
        // wrote: their page checksums verified.
        Ok(unsafe { std::slice::from_raw_parts(raw.as_ptr() as *const ArchivedIndexEntry, count) })
    }
}

/// Reads and validates the summary of `path` (only its end is read);
/// `Ok(None)` when it does not exist.
pub async fn load_summary(
    disk: &dyn Disk,
    path: &Path,
    first_lsn: u64,
) -> io::Result<Option<Result<LoadedSummary, String>>> {
    let Some(file) = open_if_exists(disk, path).await? else {
        return Ok(None);
    };
    let size = file.size().await?;
    // The trailer, and with it (usually) the whole summary: one read.
    let start = size.saturating_sub(BLOCK * 4);
    let tail = file.read_at(start, (size - start) as usize).await?;
    let t = match Trailer::parse(&tail, size as usize) {
        Ok(t) => t,
        Err(why) => return Ok(Some(Err(why))),
    };
    let sum = if t.sum_off as u64 >= start {
        let from = t.sum_off - start as usize;
        tail[from..from + t.sum_len].to_vec()
    } else {
        file.read_at(t.sum_off as u64, t.sum_len).await?
    };
    if sum.len() != t.sum_len {
        return Ok(Some(Err("short read".into())));
    }
    Ok(Some(LoadedSummary::validate(sum, &t, size, first_lsn)))
}

/// Where a span's entries are: its file offset, length and page
/// checksums, as a queue keeps them for a run it pages in from a sealed
/// segment. Cloned cheaply: by value, or by a reference count.
///
/// A queue keeps one per segment it has messages in: ten thousand deep
/// queues over hundreds of segments keep millions. So a span of one page
/// (up to [`PAGE_ENTRIES`] messages, the usual one when many queues share
/// the segments) is 16 bytes in place with no allocation; a longer one
/// shares one allocation among the runs and windows that name it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EntryPages(Pages);

const _: () = assert!(std::mem::size_of::<EntryPages>() == 16);

#[derive(Clone, Debug, PartialEq, Eq)]
enum Pages {
    /// One page at an offset below 4 GiB.
    One {
        at: u32,
        count: u16,
        crc: u32,
    },
    Many(Rc<ManyPages>),
}

#[derive(Debug, PartialEq, Eq)]
struct ManyPages {
    at: u64,
    count: u32,
    crcs: Box<[u32]>,
}

impl EntryPages {
    /// The span at `at` of `count` entries whose pages' checksums are
    /// `crcs`.
    pub fn new(at: u64, count: u32, crcs: impl ExactSizeIterator<Item = u32>) -> EntryPages {
        let mut crcs = crcs.peekable();
        let one = (
            u32::try_from(at),
            u16::try_from(count),
            crcs.len(),
            crcs.peek(),
        );
        EntryPages(match one {
            (Ok(at), Ok(count), 1, Some(&crc)) => Pages::One { at, count, crc },
            _ => Pages::Many(Rc::new(ManyPages {
                at,
                count,
                crcs: crcs.collect(),
            })),
        })
    }

    pub fn of(span: &ArchivedSpan) -> EntryPages {
        let crcs = span.pages.iter().map(|c| c.to_native());
        EntryPages::new(span.at.to_native(), span.count.to_native(), crcs)
    }

    /// Byte offset in the index file of the span's first entry.
    pub fn at(&self) -> u64 {
        match &self.0 {
            Pages::One { at, .. } => u64::from(*at),
            Pages::Many(m) => m.at,
        }
    }

    /// Entries in the span.
    pub fn count(&self) -> u32 {
        match &self.0 {
            Pages::One { count, .. } => u32::from(*count),
            Pages::Many(m) => m.count,
        }
    }

    /// crc32c of each [`PAGE_ENTRIES`] entries from the first.
    pub fn crcs(&self) -> &[u32] {
        match &self.0 {
            Pages::One { crc, .. } => std::slice::from_ref(crc),
            Pages::Many(m) => &m.crcs,
        }
    }
}

/// Reads entries `from .. from + n` of the span whose entries are at
/// `pages` (counted from its first), verifying the checksum of every page
/// they touch and decoding them in place. `Ok(Err(..))` when a page does
/// not verify or the span is shorter.
pub async fn read_entries(
    file: &dyn DiskFile,
    pages: &EntryPages,
    from: usize,
    n: usize,
) -> io::Result<Result<Vec<IndexEntry>, String>> {
    let count = pages.count() as usize;
    if n == 0 {
        return Ok(Ok(Vec::new()));
    }
    let crcs = pages.crcs();
    if from + n > count || count.div_ceil(PAGE_ENTRIES) != crcs.len() {
        return Ok(Err(format!("entries {from}+{n} beyond a span of {count}")));
    }
    let (p0, p1) = (from / PAGE_ENTRIES, (from + n - 1) / PAGE_ENTRIES + 1);
    let first = p0 * PAGE_ENTRIES;
    let end = (p1 * PAGE_ENTRIES).min(count);
    let start = pages.at() + (first * ENTRY_LEN) as u64;
    let raw = file.read_at(start, (end - first) * ENTRY_LEN).await?;
    if raw.len() != (end - first) * ENTRY_LEN {
        return Ok(Err(format!("short read of entries at {start}")));
    }
    for (k, page) in raw.chunks(PAGE_ENTRIES * ENTRY_LEN).enumerate() {
        if crc32c::crc32c(page) != crcs[p0 + k] {
            return Ok(Err(format!(
                "page {} of the entries at {} does not verify",
                p0 + k,
                pages.at()
            )));
        }
    }
    let mut aligned = AlignedVec::<ALIGN>::with_capacity(raw.len());
    aligned.extend_from_slice(&raw);
    // SAFETY: `aligned` holds `end - first` entries of ENTRY_LEN bytes,
    // aligned to ALIGN: the size and at least the alignment of
    // `ArchivedIndexEntry` (asserted at the top of this file), which is
    // plain little-endian integers, so every bit pattern is a valid value.
    // The bytes are those rkyv wrote: their page checksums verified.
    let entries = unsafe {
        std::slice::from_raw_parts(aligned.as_ptr() as *const ArchivedIndexEntry, end - first)
    };
    let skip = from - first;
    Ok(Ok(entries[skip..skip + n]
        .iter()
        .map(EntryRead::entry)
        .collect()))
}

/// Read access to a segment's index, whether built by a scan
/// ([`SegmentIndex`]) or read in place from its file
/// ([`ArchivedSegmentIndex`]): recovery's passes are written once, over
/// this.
pub trait IndexRead {
    type Queue: QueueRead;
    fn checkpoint(&self) -> bool;
    /// The checkpoint's live queue ids, `[first, end)`, ascending.
    fn live(&self) -> impl Iterator<Item = (u32, u32)> + '_;
    fn next_queue_id(&self) -> u32;
    fn max_queue_id(&self) -> u32;
    fn last_lsn(&self) -> u64;
    fn data_len(&self) -> u64;
    fn corrupt_records(&self) -> u32;
    /// By id.
    fn queues(&self) -> &[Self::Queue];
}

/// What one index says about one queue (see [`QueueIndex`]).
pub trait QueueRead {
    fn id(&self) -> u32;
    /// Its name, when the segment creates it.
    fn created(&self) -> Option<&[u8]>;
    fn deleted(&self) -> bool;
    fn head(&self) -> u64;
    fn tail(&self) -> u64;
    /// Ranges confirmed out of order, `[start, end)`.
    fn confirmed(&self) -> impl Iterator<Item = (u64, u64)> + '_;
}

/// What one full index (not a summary) says of one queue's messages.
pub trait QueueMsgs: QueueRead {
    type Entry: EntryRead;
    /// By seq.
    fn msgs(&self) -> &[Self::Entry];
}

/// One message's [`IndexEntry`], native or archived.
pub trait EntryRead {
    fn seq(&self) -> u64;
    fn entry(&self) -> IndexEntry;
}

impl IndexRead for SegmentIndex {
    type Queue = QueueIndex;
    fn checkpoint(&self) -> bool {
        self.checkpoint
    }
    fn live(&self) -> impl Iterator<Item = (u32, u32)> + '_ {
        self.live.iter().map(|r| (r.first, r.end))
    }
    fn next_queue_id(&self) -> u32 {
        self.next_queue_id
    }
    fn max_queue_id(&self) -> u32 {
        self.max_queue_id
    }
    fn last_lsn(&self) -> u64 {
        self.last_lsn
    }
    fn data_len(&self) -> u64 {
        self.data_len
    }
    fn corrupt_records(&self) -> u32 {
        self.corrupt_records
    }
    fn queues(&self) -> &[QueueIndex] {
        &self.queues
    }
}

impl QueueRead for QueueIndex {
    fn id(&self) -> u32 {
        self.id
    }
    fn created(&self) -> Option<&[u8]> {
        self.created.then_some(&self.name[..])
    }
    fn deleted(&self) -> bool {
        self.deleted
    }
    fn head(&self) -> u64 {
        self.head
    }
    fn tail(&self) -> u64 {
        self.tail
    }
    fn confirmed(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.confirmed.iter().map(|r| (r.start, r.end))
    }
}

impl QueueMsgs for QueueIndex {
    type Entry = IndexEntry;
    fn msgs(&self) -> &[IndexEntry] {
        &self.msgs
    }
}

impl EntryRead for IndexEntry {
    fn seq(&self) -> u64 {
        self.seq
    }
    fn entry(&self) -> IndexEntry {
        *self
    }
}

/// [`IndexRead`] and [`QueueRead`] for an archived index or summary: the
/// two archives name these fields alike.
macro_rules! archived_index_read {
    ($index:ty, $queue:ty) => {
        impl IndexRead for $index {
            type Queue = $queue;
            fn checkpoint(&self) -> bool {
                self.checkpoint
            }
            fn live(&self) -> impl Iterator<Item = (u32, u32)> + '_ {
                self.live
                    .iter()
                    .map(|r| (r.first.to_native(), r.end.to_native()))
            }
            fn next_queue_id(&self) -> u32 {
                self.next_queue_id.to_native()
            }
            fn max_queue_id(&self) -> u32 {
                self.max_queue_id.to_native()
            }
            fn last_lsn(&self) -> u64 {
                self.last_lsn.to_native()
            }
            fn data_len(&self) -> u64 {
                self.data_len.to_native()
            }
            fn corrupt_records(&self) -> u32 {
                self.corrupt_records.to_native()
            }
            fn queues(&self) -> &[$queue] {
                self.queues.as_slice()
            }
        }

        impl QueueRead for $queue {
            fn id(&self) -> u32 {
                self.id.to_native()
            }
            fn created(&self) -> Option<&[u8]> {
                self.created.then_some(self.name.as_slice())
            }
            fn deleted(&self) -> bool {
                self.deleted
            }
            fn head(&self) -> u64 {
                self.head.to_native()
            }
            fn tail(&self) -> u64 {
                self.tail.to_native()
            }
            fn confirmed(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
                self.confirmed
                    .iter()
                    .map(|r| (r.start.to_native(), r.end.to_native()))
            }
        }
    };
}

archived_index_read!(ArchivedSegmentIndex, ArchivedQueueIndex);
archived_index_read!(ArchivedSegmentSummary, ArchivedQueueSummary);

impl QueueMsgs for ArchivedQueueIndex {
    type Entry = ArchivedIndexEntry;
    fn msgs(&self) -> &[ArchivedIndexEntry] {
        self.msgs.as_slice()
    }
}

impl EntryRead for ArchivedIndexEntry {
    fn seq(&self) -> u64 {
        self.seq.to_native()
    }
    fn entry(&self) -> IndexEntry {
        IndexEntry {
            seq: self.seq.to_native(),
            off: self.off.to_native(),
            len: self.len.to_native(),
            expires: self.expires.to_native(),
            time: self.time.to_native(),
        }
    }
}

/// Writes `bytes` to `path` crash-safely: temp file, fdatasync, rename,
/// directory fsync (done by the caller, who may batch it).
pub async fn write_file(disk: &dyn Disk, path: &Path, parts: &[&[u8]]) -> io::Result<()> {
    let tmp = path.with_extension("idx.tmp");
    let file = disk.create(&tmp).await?;
    // In pieces gathered from the parts (each write copies its piece into
    // a DMA buffer: the whole file at once was tens of megabytes more at
    // the peak of a seal); the last piece padded to a whole block (the
    // file is cut to its length after).
    let len: usize = parts.iter().map(|p| p.len()).sum();
    let mut bytes = parts.iter().flat_map(|p| p.chunks(WRITE_PIECE));
    let mut piece: Vec<u8> =
        Vec::with_capacity(WRITE_PIECE.min(len.next_multiple_of(BLOCK as usize)));
    let mut at = 0u64;
    let mut next = bytes.next();
    while let Some(chunk) = next {
        let room = WRITE_PIECE - piece.len();
        let (now, later) = chunk.split_at(room.min(chunk.len()));
        piece.extend_from_slice(now);
        next = if later.is_empty() {
            bytes.next()
        } else {
            Some(later)
        };
        if piece.len() == WRITE_PIECE || next.is_none() {
            piece.resize(piece.len().next_multiple_of(BLOCK as usize), 0);
            let n = file.write_at(at, &piece).await?;
            if n < piece.len() {
                return Err(io::Error::new(
                    io::ErrorKind::WriteZero,
                    "short index write",
                ));
            }
            at += piece.len() as u64;
            piece.clear();
        }
    }
    file.truncate(len as u64).await?;
    file.fdatasync().await?;
    drop(file);
    disk.rename(&tmp, path).await
}

/// Bytes of an index file written at a time (a multiple of [`BLOCK`]).
const WRITE_PIECE: usize = 1 << 20;

#[cfg(test)]
#[path = "index_tests.rs"]
mod tests;
