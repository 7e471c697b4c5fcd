//! Segment files: naming, error plumbing, and the checked scan that recovery,
//! index rebuilds and compaction share.
//!
//! A segment is `<first lsn, 20 digits>.log`: a preallocated file of
//! `segment_size` bytes (zeros until written) holding records back to back
//! from offset 0, each starting at a multiple of 8. Once sealed it is
//! truncated to its data rounded up to 4 KiB and gets its `.idx`.

use std::io;
use std::path::{Path, PathBuf};

use super::record::{self, DecodeError, Header, Kind, HEADER_LEN, RECORD_ALIGN};
use crate::disk::DiskFile;
use crate::turn;

pub use crate::disk::BLOCK;
/// Bytes read per DMA read when scanning.
const SCAN_CHUNK: usize = 1 << 20;
/// Bytes looked at at once for zeros when resynchronising.
const ZERO_SKIP: usize = 64 << 10;

/// `<dir>/<first lsn, 20 digits>.log`
pub fn log_path(dir: &Path, first_lsn: u64) -> PathBuf {
    dir.join(format!("{first_lsn:020}.log"))
}

/// `<dir>/<first lsn, 20 digits>.idx`
pub fn idx_path(dir: &Path, first_lsn: u64) -> PathBuf {
    dir.join(format!("{first_lsn:020}.idx"))
}

/// The first lsn encoded in a segment or index file name, and its suffix.
pub fn parse_name(name: &str) -> Option<(u64, &str)> {
    let (num, ext) = name.split_once('.')?;
    if num.len() != 20 || !num.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((num.parse().ok()?, ext))
}

/// What a scan found besides the records.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ScanReport {
    /// End of the last valid record (padded to 8).
    pub data_len: u64,
    pub last_lsn: u64,
    pub records: u64,
    /// Invalid stretches followed by valid records: `(offset, bytes skipped)`.
    pub corrupt: Vec<(u64, u64)>,
    /// Invalid bytes after the last valid record: `(offset, bytes cut)`.
    pub torn: Option<(u64, u64)>,
    /// Out-of-line regions that do not hold their message (a set cut
    /// short by a crash, or damage): `(offset, bytes)`.
    pub unfinished: Vec<(u64, u64)>,
}

/// A forward-moving window over a file, filled by aligned DMA reads.
struct Window<'a> {
    file: &'a dyn DiskFile,
    file_len: u64,
    start: u64,
    buf: Vec<u8>,
}

impl Window<'_> {
    /// Makes `[off, off + n)` (clipped to the file) available; returns how
    /// many bytes from `off` are.
    async fn fill(&mut self, off: u64, n: usize) -> io::Result<usize> {
        let want_end = (off + n as u64).min(self.file_len);
        if off < self.start {
            // A look ahead (the padding check tries the next block) let
            // the window drop bytes a resynchronisation then goes back to:
            // read them again.
            self.buf.clear();
            self.start = (off / BLOCK) * BLOCK;
        }
        while self.start + (self.buf.len() as u64) < want_end {
            let keep_from = (off / BLOCK) * BLOCK;
            if keep_from > self.start {
                let drop = ((keep_from - self.start) as usize).min(self.buf.len());
                self.buf.drain(..drop);
                self.start += drop as u64;
            }
            if want_end - (self.start + self.buf.len() as u64) > SCAN_CHUNK as u64 {
                // A large record: read it whole from its block again rather
                // than append megabytes to what the window holds of it, a
                // copy in one go (see `turn`).
                self.buf.clear();
                self.start = keep_from;
            }
            let end = self.start + self.buf.len() as u64;
            let size = ((want_end - end) as usize)
                .max(SCAN_CHUNK)
                .next_multiple_of(BLOCK as usize);
            let data = self.file.read_at(end, size).await?;
            if data.is_empty() {
                break;
            }
            let take = data.len().min((self.file_len - end) as usize);
            if self.buf.is_empty() {
                // A large record is read whole: keep its buffer rather than
                // copying it (milliseconds for 8 MiB, see `turn`).
                let mut data = data;
                data.truncate(take);
                self.buf = data;
            } else {
                self.buf.extend_from_slice(&data[..take]);
            }
            if take < size {
                break;
            }
        }
        let avail_end = self.start + self.buf.len() as u64;
        Ok(avail_end.saturating_sub(off).min(n as u64) as usize)
    }

    fn slice(&self, off: u64, n: usize) -> &[u8] {
        let s = (off - self.start) as usize;
        &self.buf[s..s + n]
    }
}

/// Reads every record of a segment in order, verifying each, and hands the
/// valid ones (header, body, offset) to `on_record`.
///
/// A record that fails its checks starts a resynchronisation: the scan looks
/// at every following 8-byte boundary for a record that verifies and whose
/// lsn is above the last good one. If it finds one, the bad stretch is
/// reported in `corrupt` and skipped; if not, the non-zero bytes after the
/// last good record are reported as the torn tail. Zeros (preallocated,
/// never written) are the clean end.
///
/// `interrupted` is for the segment a crash may have cut short (the newest
/// one): there, a bad stretch that lost records (the next record found is
/// not the next lsn) is the torn tail too, and what follows it is cut, not
/// kept. Two batches write at once and their writes complete in any order,
/// so a crash can keep a later batch's records without an earlier one's;
/// neither was acknowledged (acknowledgements follow lsn order), and keeping
/// the later one would apply, say, a pop of a message whose set was lost.
pub async fn scan<F>(
    file: &dyn DiskFile,
    file_len: u64,
    interrupted: bool,
    mut on_record: F,
) -> io::Result<ScanReport>
where
    F: FnMut(&Header, &[u8], u64),
{
    let mut w = Window {
        file,
        file_len,
        start: 0,
        buf: Vec::new(),
    };
    let mut rep = ScanReport::default();
    let mut pos = 0u64;
    let mut last_lsn: Option<u64> = None;
    'outer: loop {
        // Try a record at `pos`.
        if let Some(h) = try_record(&mut w, pos, last_lsn).await? {
            hand_on(&mut w, &h, pos, &mut on_record).await?;
            let region_len = (h.kind == Kind::Region).then(|| {
                let body = w.slice(pos + HEADER_LEN as u64, h.len as usize);
                record::parse_region(body).unwrap_or(0)
            });
            rep.records += 1;
            last_lsn = Some(h.lsn);
            rep.last_lsn = h.lsn;
            pos += h.record_len() as u64;
            rep.data_len = pos;
            if let Some(body_len) = region_len {
                pos = region(&mut w, &mut rep, &h, body_len, &mut on_record).await?;
            }
            continue;
        }
        // Zeros up to the next block boundary are padding left where one
        // batch's write overlapped the next: records go on at that block.
        if !pos.is_multiple_of(BLOCK) && is_padding(&mut w, pos).await? {
            let next = pos.next_multiple_of(BLOCK);
            if let Some(h) = try_record(&mut w, next, last_lsn).await? {
                // Padding never hides records: the next one follows on.
                if !(interrupted && last_lsn.is_some_and(|l| first_lsn(&h) != l + 1)) {
                    pos = next;
                    continue;
                }
            }
        }
        // Resynchronise.
        let bad = pos;
        let mut last_nonzero: Option<u64> = None;
        // Records were lost at `bad`: the rest is all tail.
        let mut lost = false;
        let mut q = pos;
        while q < file_len {
            // A record's header is never all zeros: skip stretches of zeros
            // (most of a preallocated segment) instead of trying every
            // 8-byte offset in them.
            let n = w.fill(q, ZERO_SKIP).await?;
            let first_nonzero = w.slice(q, n).iter().position(|&b| b != 0);
            let zeros = first_nonzero.unwrap_or(n);
            if first_nonzero.is_none() && n < HEADER_LEN {
                break; // the end of the file, and no room for a record
            }
            let skip = zeros.saturating_sub(HEADER_LEN - 1) / RECORD_ALIGN * RECORD_ALIGN;
            if skip > 0 {
                q += skip as u64;
                continue;
            }
            let n = w.fill(q, RECORD_ALIGN).await?;
            if let Some(i) = w.slice(q, n).iter().rposition(|&b| b != 0) {
                last_nonzero = Some(q + i as u64);
            }
            if q > bad && !lost {
                if let Some(h) = try_record(&mut w, q, last_lsn).await? {
                    if interrupted && last_lsn.is_some_and(|l| first_lsn(&h) != l + 1) {
                        lost = true;
                    } else {
                        rep.corrupt.push((bad, q - bad));
                        pos = q;
                        continue 'outer;
                    }
                }
            }
            q += RECORD_ALIGN as u64;
        }
        if let Some(z) = last_nonzero {
            rep.torn = Some((bad, z + 1 - bad));
        }
        break;
    }
    Ok(rep)
}

/// Hands the verified record `h` at `pos` to `on_record`.
async fn hand_on<F>(w: &mut Window<'_>, h: &Header, pos: u64, on_record: &mut F) -> io::Result<()>
where
    F: FnMut(&Header, &[u8], u64),
{
    let have = w.fill(pos, HEADER_LEN + h.len as usize).await?;
    debug_assert_eq!(have, HEADER_LEN + h.len as usize);
    // A large record took a checksum just now, and compaction copies it
    // into the log: each in a turn of its own (see `turn`).
    let large = h.len as usize >= turn::PIECE;
    if large {
        turn::pause().await;
    }
    let bytes = w.slice(pos, HEADER_LEN + h.len as usize);
    on_record(h, &bytes[HEADER_LEN..], pos);
    if large {
        turn::pause().await;
    }
    Ok(())
}

/// The region after the `Region` record `marker` (which ends at
/// `rep.data_len`), of a body of `body_len` bytes: hands its message's
/// `Enqueued` record to `on_record` if it verifies, else reports the
/// region unfinished; returns where the next record is.
async fn region<F>(
    w: &mut Window<'_>,
    rep: &mut ScanReport,
    marker: &Header,
    body_len: usize,
    on_record: &mut F,
) -> io::Result<u64>
where
    F: FnMut(&Header, &[u8], u64),
{
    let start = rep.data_len.next_multiple_of(BLOCK);
    let span = record::region_span(body_len);
    let need = HEADER_LEN + body_len;
    let fits = start + need as u64 <= w.file_len && w.fill(start, need).await? == need;
    let message = match fits.then(|| record::decode(w.slice(start, need))) {
        Some(Ok((m, _)))
            if m.kind == Kind::Enqueued
                && m.lsn + 1 == marker.lsn
                && m.queue == marker.queue
                && m.seq == marker.seq
                && m.len as usize == body_len =>
        {
            Some(m)
        }
        _ => None,
    };
    match message {
        Some(m) => {
            hand_on(w, &m, start, on_record).await?;
            rep.records += 1;
            rep.data_len = start + m.record_len() as u64;
        }
        None => rep.unfinished.push((start, span)),
    }
    Ok(start + span)
}

/// The lowest lsn record `h` accounts for: a `Region` record's message has
/// the lsn below its own.
fn first_lsn(h: &Header) -> u64 {
    match h.kind {
        Kind::Region => h.lsn - 1,
        _ => h.lsn,
    }
}

/// Whether the bytes at `pos` look like block padding: a zero header, or
/// zeros up to the block boundary when less than a header fits before it
/// (reading a whole header there would take in the next block's record and
/// call padding corruption).
async fn is_padding(w: &mut Window<'_>, pos: u64) -> io::Result<bool> {
    let n = (pos.next_multiple_of(BLOCK) - pos).min(HEADER_LEN as u64) as usize;
    if w.fill(pos, n).await? < n {
        return Ok(false);
    }
    Ok(w.slice(pos, n).iter().all(|&b| b == 0))
}

/// The verified header of the record at `pos`, if there is one.
async fn try_record(
    w: &mut Window<'_>,
    pos: u64,
    last_lsn: Option<u64>,
) -> io::Result<Option<Header>> {
    if w.fill(pos, HEADER_LEN).await? < HEADER_LEN {
        return Ok(None);
    }
    let h = match record::parse_header(w.slice(pos, HEADER_LEN)) {
        Ok(h) => h,
        Err(DecodeError::Short { .. } | DecodeError::Zero | DecodeError::Invalid) => {
            return Ok(None)
        }
    };
    if last_lsn.is_some_and(|l| h.lsn <= l) {
        return Ok(None);
    }
    let need = HEADER_LEN + h.len as usize;
    if pos + need as u64 > w.file_len || w.fill(pos, need).await? < need {
        return Ok(None);
    }
    Ok(record::decode(w.slice(pos, need)).ok().map(|(h, _)| h))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(
            log_path(Path::new("/d"), 42),
            Path::new("/d/00000000000000000042.log")
        );
        assert_eq!(parse_name("00000000000000000042.log"), Some((42, "log")));
        assert_eq!(parse_name("00000000000000000042.idx"), Some((42, "idx")));
        assert_eq!(parse_name("42.log"), None);
        assert_eq!(parse_name("spare.tmp"), None);
    }

    /// A file in memory, for scans.
    pub(crate) struct Mem(pub Vec<u8>);

    impl DiskFile for Mem {
        fn read_at(&self, pos: u64, len: usize) -> crate::disk::IoFuture<'_, Vec<u8>> {
            let s = (pos as usize).min(self.0.len());
            let e = (s + len).min(self.0.len());
            Box::pin(std::future::ready(Ok(self.0[s..e].to_vec())))
        }
        fn write_at<'a>(&'a self, _: u64, _: &'a [u8]) -> crate::disk::IoFuture<'a, usize> {
            unreachable!("scans only read")
        }
        fn fdatasync(&self) -> crate::disk::IoFuture<'_, ()> {
            unreachable!("scans only read")
        }
        fn pre_allocate(&self, _: u64) -> crate::disk::IoFuture<'_, ()> {
            unreachable!("scans only read")
        }
        fn truncate(&self, _: u64) -> crate::disk::IoFuture<'_, ()> {
            unreachable!("scans only read")
        }
        fn size(&self) -> crate::disk::IoFuture<'_, u64> {
            Box::pin(std::future::ready(Ok(self.0.len() as u64)))
        }
    }

    /// Scans `buf` as a whole segment file.
    fn scan_bytes(
        buf: &[u8],
        interrupted: bool,
        on_record: impl FnMut(&Header, &[u8], u64),
    ) -> ScanReport {
        let file = Mem(buf.to_vec());
        futures_lite::future::block_on(scan(&file, buf.len() as u64, interrupted, on_record))
            .unwrap()
    }

    fn put(buf: &mut Vec<u8>, lsn: u64, body_len: usize) {
        let body = vec![0xab; body_len];
        record::encode_into(buf, &record::message_header(lsn, body_len), &body);
    }

    /// The padding a batch leaves before a block boundary when the next
    /// batch starts at the next block can be shorter than a record header
    /// (8..40 bytes). It is padding, not corruption (regression: every
    /// restart after a kill -9 reported "corrupt data" for it).
    #[test]
    fn padding_shorter_than_a_header_is_not_corruption() {
        for gap in (8..=HEADER_LEN + 16).step_by(8) {
            let mut buf = Vec::new();
            let mut lsn = 1;
            while buf.len() + record::record_len(40) + HEADER_LEN + 8 + gap <= BLOCK as usize {
                put(&mut buf, lsn, 40);
                lsn += 1;
            }
            // One record ending exactly `gap` bytes before the boundary.
            let room = BLOCK as usize - buf.len() - gap;
            put(&mut buf, lsn, room - HEADER_LEN);
            lsn += 1;
            assert_eq!(buf.len(), BLOCK as usize - gap);
            buf.resize(BLOCK as usize, 0);
            put(&mut buf, lsn, 100);
            let end = buf.len() as u64;
            buf.resize(2 * BLOCK as usize, 0);
            let rep = scan_bytes(&buf, false, |_, _, _| {});
            assert_eq!(rep.corrupt, vec![], "gap {gap}");
            assert_eq!(rep.torn, None, "gap {gap}");
            assert_eq!(rep.last_lsn, lsn, "gap {gap}");
            assert_eq!(rep.data_len, end.next_multiple_of(8), "gap {gap}");
        }
    }

    /// A large body written out of line: its `Region` record, the region
    /// at the next block, then records after the region. The scan hands on
    /// the message at the region's offset when the region verifies; when it
    /// does not (a crash cut the set short) it reports the region
    /// unfinished, hands on the `Region` record alone, and the records
    /// after it stay, in the interrupted segment too: they were written
    /// after the `Region` record, which accounts for the message's lsn.
    #[test]
    fn a_region_holds_its_message_or_is_reported_unfinished() {
        for finished in [true, false] {
            for interrupted in [false, true] {
                let mut buf = Vec::new();
                put(&mut buf, 1, 100);
                let body_len = 10_000;
                let mut marker = record::message_header(3, 8);
                marker.kind = Kind::Region;
                marker.seq = 2;
                record::encode_into(&mut buf, &marker, &record::region_body(body_len));
                let start = buf.len().next_multiple_of(BLOCK as usize);
                buf.resize(start, 0);
                let mut msg = record::message_header(2, body_len);
                msg.seq = 2;
                let mut region = Vec::new();
                record::encode_into(&mut region, &msg, &vec![0xcd; body_len]);
                if !finished {
                    // Its last sector never made it.
                    let n = region.len();
                    region[n - 100..].fill(0);
                }
                buf.extend_from_slice(&region);
                let end = start + record::region_span(body_len) as usize;
                buf.resize(end, 0);
                put(&mut buf, 4, 50);
                buf.resize(buf.len().next_multiple_of(BLOCK as usize), 0);

                let mut seen = Vec::new();
                let rep = scan_bytes(&buf, interrupted, |h, body, off| {
                    seen.push((h.kind, h.lsn, body.len(), off))
                });
                let mut want = vec![(Kind::Enqueued, 1, 100, 0), (Kind::Region, 3, 8, 152)];
                if finished {
                    want.push((Kind::Enqueued, 2, body_len, start as u64));
                    assert_eq!(rep.unfinished, vec![]);
                } else {
                    assert_eq!(
                        rep.unfinished,
                        vec![(start as u64, record::region_span(body_len))]
                    );
                }
                want.push((Kind::Enqueued, 4, 50, end as u64));
                assert_eq!(seen, want, "finished {finished}, interrupted {interrupted}");
                assert_eq!(rep.corrupt, vec![]);
                assert_eq!(rep.torn, None);
                assert_eq!(rep.last_lsn, 4);
            }
        }
    }

    /// A crash can keep a later batch's write without an earlier one's (two
    /// batches write at once). In the segment the crash interrupted, records
    /// after such a hole are the torn tail: kept, they would apply a pop
    /// whose set was lost (the explorer found dequeued > enqueued with
    /// O_DSYNC writes, `MCQ_CRASH_SEED=2026 MCQ_CRASH_CUT=222` at
    /// `MCQ_CRASH_ITERS=10`). In a sealed segment a bad stretch is damage,
    /// and what follows it is kept. A hole that lost no record is skipped
    /// in both.
    #[test]
    fn records_after_a_hole_are_the_tail_of_an_interrupted_segment() {
        let scan_all = |buf: &[u8], interrupted: bool| {
            let mut lsns = Vec::new();
            let rep = scan_bytes(buf, interrupted, |h, _, _| lsns.push(h.lsn));
            (lsns, rep)
        };
        for (hole, garbage) in [(false, false), (true, false), (true, true)] {
            // Records 1..=3; a stretch where record 4 was (lost when
            // `hole`, else nothing), as zeros or as garbage; then at the
            // next block the record after.
            let mut buf = Vec::new();
            for lsn in 1..=3 {
                put(&mut buf, lsn, 100);
            }
            let bad = buf.len() as u64;
            let mut stretch = Vec::new();
            put(&mut stretch, 4, 2 * BLOCK as usize);
            let fill = if garbage { 0x5a } else { 0 };
            buf.extend(stretch.iter().map(|_| fill));
            buf.resize(buf.len().next_multiple_of(BLOCK as usize), fill);
            let next = if hole { 5 } else { 4 };
            put(&mut buf, next, 100);
            let end = buf.len() as u64;
            buf.resize(buf.len() + BLOCK as usize, 0);

            let (lsns, rep) = scan_all(&buf, false);
            assert_eq!(lsns, vec![1, 2, 3, next], "sealed: damage is skipped");
            assert_eq!(rep.corrupt.len(), 1);

            let (lsns, rep) = scan_all(&buf, true);
            if hole {
                assert_eq!(lsns, vec![1, 2, 3], "interrupted: cut at the hole");
                assert_eq!(rep.last_lsn, 3);
                assert_eq!(rep.data_len, bad);
                assert_eq!(rep.torn.map(|t| t.0), Some(bad));
                assert!(rep.torn.unwrap().1 >= end - bad - BLOCK);
                assert!(rep.corrupt.is_empty());
            } else {
                assert_eq!(lsns, vec![1, 2, 3, 4], "no record lost: kept");
            }
        }
    }
}
