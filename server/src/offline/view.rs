//! A read-only view of a data directory: every segment scanned and
//! verified, every index file loaded, and the queues recovery would make
//! of them.
//!
//! Recovery picks per segment what it trusts: the newest segment is
//! scanned (it may end in a torn tail), a sealed one is summarised by its
//! index file when that is valid, and scanned otherwise. [`load_shard`]
//! makes the same choice for the queue state (the same function,
//! [`recovery::choose`]), replays it with recovery's own
//! [`recovery::Replayer`] into a sink that keeps every queue and locator
//! (an offline tool shows them all), and scans every segment
//! besides, so `inspect` can count records and `verify` compare each index
//! with its segment. A sealed segment with a valid index is scanned only up
//! to the index's end of data: bytes after it are a tail an earlier
//! recovery cut ([`SegView::after_end`]).

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::disk::{DiskFile, IoFuture};
use crate::log::confirmed::Confirmed;
use crate::log::index::{IndexBuilder, LoadedIndex, SegmentIndex};
use crate::log::record::{self, Header};
use crate::log::recovery::{self, Arrivals, Choice, FoundQueue, Replay, Replayer};
use crate::log::segment::{self, ScanReport};
use crate::log::Loc;
use crate::manifest;

/// A file opened read-only, behind the log's [`DiskFile`] seam so the
/// log's own scan reads it. Every write operation fails.
pub struct RoFile {
    file: File,
}

impl RoFile {
    /// `bytes` as a file (an unlinked temporary one), for tests.
    #[cfg(test)]
    pub fn open_bytes(bytes: &[u8]) -> RoFile {
        let mut file = tempfile::tempfile().expect("a temporary file");
        std::io::Write::write_all(&mut file, bytes).expect("written");
        RoFile { file }
    }

    pub fn open(path: &Path) -> io::Result<RoFile> {
        Ok(RoFile {
            file: File::open(path)?,
        })
    }

    /// Reads up to `len` bytes at `pos` (fewer at the end of the file).
    pub fn read(&self, pos: u64, len: usize) -> io::Result<Vec<u8>> {
        let mut buf = vec![0u8; len];
        let mut got = 0;
        while got < len {
            match self.file.read_at(&mut buf[got..], pos + got as u64) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        buf.truncate(got);
        Ok(buf)
    }

    pub fn file_len(&self) -> io::Result<u64> {
        Ok(self.file.metadata()?.len())
    }
}

fn read_only<'a, T: 'a>() -> IoFuture<'a, T> {
    Box::pin(std::future::ready(Err(io::Error::new(
        io::ErrorKind::PermissionDenied,
        "the offline view is read-only",
    ))))
}

impl DiskFile for RoFile {
    fn read_at(&self, pos: u64, len: usize) -> IoFuture<'_, Vec<u8>> {
        Box::pin(std::future::ready(self.read(pos, len)))
    }
    fn write_at<'a>(&'a self, _: u64, _: &'a [u8]) -> IoFuture<'a, usize> {
        read_only()
    }
    fn fdatasync(&self) -> IoFuture<'_, ()> {
        read_only()
    }
    fn pre_allocate(&self, _: u64) -> IoFuture<'_, ()> {
        read_only()
    }
    fn truncate(&self, _: u64) -> IoFuture<'_, ()> {
        read_only()
    }
    fn size(&self) -> IoFuture<'_, u64> {
        Box::pin(std::future::ready(self.file_len()))
    }
}

/// A queue as recovery would rebuild it.
pub struct RecoveredQueue {
    pub id: u32,
    pub name: Box<[u8]>,
    /// Every message below is consumed.
    pub head: u64,
    pub tail: u64,
    /// Messages above `head` confirmed out of order.
    pub confirmed: Confirmed,
    /// The queued messages, in sequence order …
    pub locs: Vec<Loc>,
    /// … and `(first seq, Unix second)` of each run of them enqueued in
    /// the same second.
    pub runs: Vec<(u64, u32)>,
}

/// The view's [`Replay`] sink: every queue with its locators.
#[derive(Default)]
struct Collect {
    queues: Vec<(FoundQueue, Arrivals)>,
    by_id: std::collections::HashMap<u32, usize>,
}

impl Replay for Collect {
    fn queue(&mut self, q: FoundQueue) {
        self.by_id.insert(q.id, self.queues.len());
        self.queues.push((q, Arrivals::default()));
    }

    fn message(&mut self, queue: u32, loc: Loc, time: u32) {
        if let Some(&i) = self.by_id.get(&queue) {
            self.queues[i].1.push(loc, time);
        }
    }

    fn settle(&mut self, superseded: &mut dyn FnMut(Loc)) {
        for (_, msgs) in &mut self.queues {
            msgs.settle(superseded);
        }
    }
}

/// A segment's index file.
pub enum IndexState {
    Missing,
    /// Valid, read back.
    Valid(SegmentIndex),
    /// Present but unusable, and why.
    Invalid(String),
}

/// One segment file.
pub struct SegView {
    pub first_lsn: u64,
    pub path: PathBuf,
    pub file: RoFile,
    /// The file's size when it was read.
    pub size: u64,
    /// The newest segment of its shard: the one a live server appends to,
    /// or a crash interrupted.
    pub newest: bool,
    /// What the scan found in `[0, scanned)`.
    pub scan: ScanReport,
    pub scanned: u64,
    /// The index the scan builds.
    pub built: SegmentIndex,
    pub index: IndexState,
    /// What a restart reads of a valid index: its summary's bytes.
    pub summary_bytes: Option<u64>,
    /// Non-zero bytes after `scanned`, `(offset, bytes)`: for a sealed
    /// segment with a valid index, the tail an earlier recovery cut.
    pub after_end: Option<(u64, u64)>,
    /// The offset of a record that continues the log (the next lsn) past
    /// that end: the index stops short of its segment.
    pub continues: Option<u64>,
    /// Its ordinal in recovery; `None` for a newest segment without a
    /// record, which recovery removes.
    pub ord: Option<u32>,
    /// Queued messages whose record is here, and their record bytes.
    pub live: u64,
    pub live_bytes: u64,
}

impl SegView {
    pub fn name(&self) -> String {
        self.path
            .file_name()
            .map_or_else(String::new, |n| n.to_string_lossy().into_owned())
    }
}

/// One shard directory.
pub struct ShardView {
    pub shard: u32,
    pub dir: PathBuf,
    /// In lsn order.
    pub segs: Vec<SegView>,
    /// The queues as recovery would rebuild them, sorted by name.
    pub queues: Vec<RecoveredQueue>,
    /// Files that are no part of the log (`*.tmp`, unknown names).
    pub leftovers: Vec<String>,
}

/// A message's record, read back and verified.
pub struct Record {
    pub header: Header,
    pub body: Vec<u8>,
}

impl ShardView {
    /// The segment of a locator.
    pub fn seg_of(&self, loc: &Loc) -> Option<&SegView> {
        self.segs.iter().find(|s| s.ord == Some(loc.pos.seg))
    }

    /// Reads and verifies the record `loc` points at (its checksum, queue
    /// and seq); `Err` says what is wrong with it.
    pub fn read(&self, queue: u32, loc: &Loc) -> Result<Record, String> {
        let seg = self.seg_of(loc).ok_or("no such segment")?;
        let bytes = seg
            .file
            .read(u64::from(loc.pos.off), loc.len as usize)
            .map_err(|e| format!("{}: {e}", seg.path.display()))?;
        match record::decode(&bytes) {
            Ok((h, body)) if h.queue == queue && h.seq == loc.seq => Ok(Record {
                header: h,
                body: body.to_vec(),
            }),
            Ok(_) => Err(format!(
                "{} offset {}: another message's record",
                seg.path.display(),
                loc.pos.off
            )),
            Err(_) => Err(format!(
                "{} offset {}: the record fails its checks",
                seg.path.display(),
                loc.pos.off
            )),
        }
    }
}

/// The data directory's manifest and shard directories.
pub struct DirView {
    pub format: u32,
    pub shards: u32,
}

/// Reads the manifest of `data_dir`: an error when there is none (an
/// offline tool must not take an empty directory for an empty server).
pub fn open_dir(data_dir: &Path) -> io::Result<DirView> {
    match manifest::read_manifest(data_dir)? {
        Some((format, shards)) => Ok(DirView { format, shards }),
        None => Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!(
                "{}: no {} here: not an mcq data directory",
                data_dir.display(),
                manifest::MANIFEST
            ),
        )),
    }
}

/// The segments of a shard directory by first lsn, and everything else.
pub fn list_segments(dir: &Path) -> io::Result<(Vec<u64>, Vec<String>)> {
    let mut logs = Vec::new();
    let mut other = Vec::new();
    let entries = std::fs::read_dir(dir)
        .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", dir.display())))?;
    for entry in entries {
        let name = entry?.file_name().to_string_lossy().into_owned();
        match segment::parse_name(&name) {
            Some((lsn, "log")) => logs.push(lsn),
            Some((_, "idx")) => {}
            _ => other.push(name),
        }
    }
    logs.sort_unstable();
    other.sort();
    Ok((logs, other))
}

/// Reads `path` whole; `None` when it does not exist.
pub fn read_if_exists(path: &Path) -> io::Result<Option<Vec<u8>>> {
    match std::fs::read(path) {
        Ok(b) => Ok(Some(b)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io::Error::new(e.kind(), format!("{}: {e}", path.display()))),
    }
}

/// Loads shard `shard` of `data_dir` (see the module doc). Beside a live
/// server a segment may be deleted (consumed, compacted) between the
/// listing and its opening: the whole shard is read again then.
pub fn load_shard(data_dir: &Path, shard: u32) -> io::Result<ShardView> {
    let dir = manifest::shard_dir(data_dir, shard);
    let mut tries = 0;
    loop {
        match try_load_shard(&dir, shard) {
            Err(e) if e.kind() == io::ErrorKind::NotFound && tries < 20 && dir.is_dir() => {
                tries += 1;
            }
            other => return other,
        }
    }
}

fn try_load_shard(dir: &Path, shard: u32) -> io::Result<ShardView> {
    let (logs, leftovers) = list_segments(dir)?;
    let newest = logs.last().copied();
    let mut segs = Vec::with_capacity(logs.len());
    // Per segment with an ordinal: whether its index file stands for it.
    let mut chosen: Vec<(usize, Choice)> = Vec::with_capacity(logs.len());
    let mut ord = 0u32;
    for first_lsn in logs {
        let path = segment::log_path(dir, first_lsn);
        let file = RoFile::open(&path)
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
        let size = file.file_len()?;
        let is_newest = Some(first_lsn) == newest;
        let idx_path = segment::idx_path(dir, first_lsn);
        let mut summary_bytes = None;
        let index = match read_if_exists(&idx_path)? {
            None => IndexState::Missing,
            Some(bytes) => match LoadedIndex::from_vec(bytes, first_lsn) {
                Ok(l) => {
                    summary_bytes = Some(l.summary_len());
                    IndexState::Valid(l.to_native())
                }
                Err(why) => IndexState::Invalid(why),
            },
        };
        let choice = recovery::choose(is_newest, matches!(index, IndexState::Valid(_)));
        // Where the log of a sealed, indexed segment ends.
        let indexed_end = match (&index, choice) {
            (IndexState::Valid(i), Choice::Index) => Some(i.data_len.min(size)),
            _ => None,
        };
        let scanned = indexed_end.unwrap_or(size);
        let mut builder = IndexBuilder::new(first_lsn);
        let scan = futures_lite::future::block_on(segment::scan(
            &file,
            scanned,
            is_newest,
            |h, body, off| builder.record(h, body, off),
        ))
        .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
        let (after_end, continues) = match indexed_end {
            Some(end) => (
                nonzero_after(&file, end, size)?,
                continued_at(&file, end, size, scan.last_lsn)?,
            ),
            None => (None, None),
        };
        let built = builder.finish();
        // Recovery removes a scanned segment without a record.
        let seg_ord = if choice == Choice::Scan && scan.records == 0 {
            None
        } else {
            chosen.push((segs.len(), choice));
            ord += 1;
            Some(ord - 1)
        };
        segs.push(SegView {
            first_lsn,
            path,
            file,
            size,
            newest: is_newest,
            scan,
            scanned,
            built,
            index,
            summary_bytes,
            after_end,
            continues,
            ord: seg_ord,
            live: 0,
            live_bytes: 0,
        });
    }
    let summary = |i: usize, choice: Choice| -> &SegmentIndex {
        match (&segs[i].index, choice) {
            (IndexState::Valid(idx), Choice::Index) => idx,
            _ => &segs[i].built,
        }
    };
    let mut replayer = Replayer::default();
    for (ord, &(i, choice)) in chosen.iter().enumerate() {
        replayer.summarise(ord as u32, summary(i, choice));
    }
    let mut sink = Collect::default();
    replayer.queues(|q| sink.queue(q));
    for (ord, &(i, choice)) in chosen.iter().enumerate() {
        replayer.messages(ord as u32, summary(i, choice), &mut sink);
    }
    replayer.finish(&mut sink);
    let mut queues: Vec<RecoveredQueue> = sink
        .queues
        .into_iter()
        .map(|(q, msgs)| {
            let (locs, runs) = msgs.into_parts();
            RecoveredQueue {
                id: q.id,
                name: q.name[..].into(),
                head: q.head,
                tail: q.tail,
                confirmed: q.confirmed,
                locs,
                runs,
            }
        })
        .collect();
    queues.sort_by(|a, b| a.name.cmp(&b.name));
    for q in &queues {
        for l in &q.locs {
            if let Some(s) = segs.iter_mut().find(|s| s.ord == Some(l.pos.seg)) {
                s.live += 1;
                s.live_bytes += u64::from(l.len);
            }
        }
    }
    Ok(ShardView {
        shard,
        dir: dir.to_path_buf(),
        segs,
        queues,
        leftovers,
    })
}

/// Where the record with lsn `last_lsn + 1` starts, if one does at `end`
/// or (after zero padding) at the next block: the log goes on there.
fn continued_at(file: &RoFile, end: u64, size: u64, last_lsn: u64) -> io::Result<Option<u64>> {
    for at in [end, end.next_multiple_of(segment::BLOCK)] {
        if at + record::HEADER_LEN as u64 > size {
            break;
        }
        let head = file.read(at, record::HEADER_LEN)?;
        let Ok(h) = record::parse_header(&head) else {
            if head.iter().all(|&b| b == 0) {
                continue;
            }
            break;
        };
        let whole = file.read(at, record::HEADER_LEN + h.len as usize)?;
        if record::decode(&whole).is_ok_and(|(h, _)| h.lsn == last_lsn + 1) {
            return Ok(Some(at));
        }
        break;
    }
    Ok(None)
}

/// Where a damaged stretch `[from, to)` that begins with block padding
/// really begins: past its leading zeros in whole 8-byte record words.
/// Records are 8-byte aligned and their first word (checksum and length)
/// is never all zeros, but its first byte is one time in 256: skipping
/// single zero bytes named the wrong offset for such a record.
pub fn skip_padding(file: &RoFile, from: u64, to: u64) -> io::Result<u64> {
    let first = nonzero_after(file, from, to)?.map_or(to, |(at, _)| at);
    let align = record::RECORD_ALIGN as u64;
    Ok(from + (first - from) / align * align)
}

/// The stretch from the first to the last non-zero byte in `[from, to)`.
fn nonzero_after(file: &RoFile, from: u64, to: u64) -> io::Result<Option<(u64, u64)>> {
    let mut first = None;
    let mut last = 0;
    let mut pos = from;
    while pos < to {
        let chunk = file.read(pos, ((to - pos) as usize).min(1 << 20))?;
        if chunk.is_empty() {
            break;
        }
        if let Some(i) = chunk.iter().position(|&b| b != 0) {
            first.get_or_insert(pos + i as u64);
        }
        if let Some(i) = chunk.iter().rposition(|&b| b != 0) {
            last = pos + i as u64 + 1;
        }
        pos += chunk.len() as u64;
    }
    Ok(first.map(|f| (f, last - f)))
}
