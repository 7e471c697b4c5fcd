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
//! File layout (see `docs/format.md`): the archive, then a 16-byte trailer
//! `u32 crc32c(archive) | u32 archive length | u64 magic "MCQIDX01"`.
//! An index is written to `<name>.idx.tmp`, fdatasync'd, renamed into place
//! and the directory fsync'd, so a crash leaves either no index (rebuilt by
//! scanning the segment) or a whole one.

use std::collections::HashMap;
use std::io;
use std::path::Path;

use rkyv::util::AlignedVec;

use crate::disk::{Disk, BLOCK};
use crate::log::record::{self, Header, Kind};

/// Trailer magic, little-endian "MCQIDX01".
pub const INDEX_MAGIC: u64 = u64::from_le_bytes(*b"MCQIDX01");
/// Bumped on any change to [`SegmentIndex`].
pub const INDEX_VERSION: u32 = 2;
const TRAILER_LEN: usize = 16;

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
    /// From the checkpoint record: the next queue id to hand out.
    pub next_queue_id: u32,
    /// Highest queue id mentioned by any record.
    pub max_queue_id: u32,
    /// Records skipped as corrupt when the index was built by a scan.
    pub corrupt_records: u32,
    pub queues: Vec<QueueIndex>,
}

/// Builds a [`SegmentIndex`] from the records of a segment, in log order.
#[derive(Default)]
pub struct IndexBuilder {
    first_lsn: u64,
    last_lsn: u64,
    data_len: u64,
    checkpoint: bool,
    next_queue_id: u32,
    max_queue_id: u32,
    pub corrupt_records: u32,
    queues: HashMap<u32, QueueIndex>,
}

impl IndexBuilder {
    pub fn new(first_lsn: u64) -> IndexBuilder {
        IndexBuilder {
            first_lsn,
            ..IndexBuilder::default()
        }
    }

    fn queue(&mut self, id: u32) -> &mut QueueIndex {
        self.queues.entry(id).or_insert_with(|| QueueIndex {
            id,
            ..QueueIndex::default()
        })
    }

    /// Feeds one valid record found at `off`.
    pub fn record(&mut self, h: &Header, body: &[u8], off: u64) {
        self.seen(h, off);
        match h.kind {
            Kind::Created => {
                if let Some((head, tail, name)) = record::parse_created(body) {
                    let q = self.queue(h.queue);
                    q.created = true;
                    q.name = name.to_vec();
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
                let q = self.queue(h.queue);
                q.deleted = true;
                q.msgs.clear();
                q.confirmed.clear();
            }
            Kind::Confirmed => {
                if let Some(end) = record::parse_confirmed(body) {
                    let q = self.queue(h.queue);
                    q.confirmed.push(SeqRange { start: h.seq, end });
                }
            }
            Kind::Checkpoint => {
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
        let q = self.queue(h.queue);
        q.tail = q.tail.max(h.seq + 1);
        q.msgs.push(IndexEntry {
            seq: h.seq,
            off: off as u32,
            len: (record::HEADER_LEN + h.len as usize) as u32,
            expires: h.expires,
            time: (h.time / 1_000_000).min(u64::from(u32::MAX)) as u32,
        });
    }

    pub fn last_lsn(&self) -> u64 {
        self.last_lsn
    }

    pub fn data_len(&self) -> u64 {
        self.data_len
    }

    /// The finished index, queues sorted by id, messages by seq.
    pub fn finish(self) -> SegmentIndex {
        let mut queues: Vec<QueueIndex> = self.queues.into_values().collect();
        queues.sort_by_key(|q| q.id);
        for q in &mut queues {
            q.msgs.sort_by_key(|m| m.seq);
        }
        SegmentIndex {
            version: INDEX_VERSION,
            first_lsn: self.first_lsn,
            last_lsn: self.last_lsn,
            data_len: self.data_len,
            checkpoint: self.checkpoint,
            next_queue_id: self.next_queue_id,
            max_queue_id: self.max_queue_id,
            corrupt_records: self.corrupt_records,
            queues,
        }
    }
}

/// Serialises an index into the file's bytes (archive + trailer).
pub fn encode(index: &SegmentIndex) -> Vec<u8> {
    let archive =
        rkyv::to_bytes::<rkyv::rancor::Error>(index).expect("serialising an index cannot fail");
    let mut out = Vec::with_capacity(archive.len() + TRAILER_LEN);
    out.extend_from_slice(&archive);
    out.extend_from_slice(&crc32c::crc32c(&archive).to_le_bytes());
    out.extend_from_slice(&(archive.len() as u32).to_le_bytes());
    out.extend_from_slice(&INDEX_MAGIC.to_le_bytes());
    out
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
    /// Length of the archive (the file without its trailer).
    len: usize,
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
        if (bytes.as_ptr() as usize).is_multiple_of(ALIGN) {
            LoadedIndex::validate(Buf::Read(bytes), first_lsn)
        } else {
            LoadedIndex::from_bytes(&bytes, first_lsn)
        }
    }

    fn validate(buf: Buf, first_lsn: u64) -> Result<LoadedIndex, String> {
        let bytes = buf.bytes();
        if bytes.len() < TRAILER_LEN {
            return Err(format!("{} bytes is too short", bytes.len()));
        }
        let t = &bytes[bytes.len() - TRAILER_LEN..];
        let magic = u64::from_le_bytes(t[8..16].try_into().expect("8 bytes"));
        let len = u32::from_le_bytes(t[4..8].try_into().expect("4 bytes")) as usize;
        let crc = u32::from_le_bytes(t[0..4].try_into().expect("4 bytes"));
        if magic != INDEX_MAGIC {
            return Err("bad magic".into());
        }
        if len != bytes.len() - TRAILER_LEN {
            return Err("bad length".into());
        }
        if crc32c::crc32c(&bytes[..len]) != crc {
            return Err("checksum mismatch".into());
        }
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
        Ok(LoadedIndex { buf, len })
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
        (self.len + TRAILER_LEN) as u64
    }
}

/// Reads and validates `path`; `Ok(None)` when it does not exist.
pub async fn load(
    disk: &dyn Disk,
    path: &Path,
    first_lsn: u64,
) -> io::Result<Option<Result<LoadedIndex, String>>> {
    let file = match disk.open(path).await {
        Ok(f) => f,
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(None),
        Err(e) => return Err(e),
    };
    let size = file.size().await?;
    let data = file.read_at(0, size as usize).await?;
    Ok(Some(LoadedIndex::from_vec(data, first_lsn)))
}

/// Read access to a segment's index, whether built by a scan
/// ([`SegmentIndex`]) or read in place from its file
/// ([`ArchivedSegmentIndex`]): recovery's passes are written once, over
/// this.
pub trait IndexRead {
    type Queue: QueueRead;
    fn checkpoint(&self) -> bool;
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
    type Entry: EntryRead;
    fn id(&self) -> u32;
    /// Its name, when the segment creates it.
    fn created(&self) -> Option<&[u8]>;
    fn deleted(&self) -> bool;
    fn head(&self) -> u64;
    fn tail(&self) -> u64;
    /// Ranges confirmed out of order, `[start, end)`.
    fn confirmed(&self) -> impl Iterator<Item = (u64, u64)> + '_;
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
    type Entry = IndexEntry;
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

impl IndexRead for ArchivedSegmentIndex {
    type Queue = ArchivedQueueIndex;
    fn checkpoint(&self) -> bool {
        self.checkpoint
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
    fn queues(&self) -> &[ArchivedQueueIndex] {
        self.queues.as_slice()
    }
}

impl QueueRead for ArchivedQueueIndex {
    type Entry = ArchivedIndexEntry;
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
pub async fn write_file(disk: &dyn Disk, path: &Path, bytes: &[u8]) -> io::Result<()> {
    let tmp = path.with_extension("idx.tmp");
    let file = disk.create(&tmp).await?;
    let mut padded = bytes.to_vec();
    padded.resize(
        (bytes.len() as u64).next_multiple_of(BLOCK).max(BLOCK) as usize,
        0,
    );
    let n = file.write_at(0, &padded).await?;
    if n < bytes.len() {
        return Err(io::Error::new(
            io::ErrorKind::WriteZero,
            "short index write",
        ));
    }
    file.truncate(bytes.len() as u64).await?;
    file.fdatasync().await?;
    drop(file);
    disk.rename(&tmp, path).await
}

#[cfg(test)]
#[path = "index_tests.rs"]
mod tests;
