//! Block packing: the unwritten tail of the open segment, and the batches
//! the group commit cuts from it.
//!
//! Records are packed back to back, each at a multiple of 8. The tail
//! buffer always starts at a 4 KiB boundary (`base`) of the open segment. A
//! batch writes the buffer padded with zeros to whole blocks; afterwards the
//! buffer keeps only the partially filled last block, which the next batch
//! rewrites with more records after it. The rewritten prefix is
//! byte-identical to what is on disk, so a torn rewrite (power loss
//! mid-write) can damage only the new records, relying on the device
//! writing each sector atomically.
//!
//! If that partial block is still being written by the batch in flight, the
//! next record starts at the next block instead (`inflight`), leaving zeros
//! behind it that readers skip: two writes in flight never share a block,
//! so they can complete in any order.
//!
//! A large body is written out of line (see `log::region`): after its
//! `Region` record the tail [skips](Tail::skip) the body's whole blocks,
//! which its own writes fill. What the buffer held up to then becomes a
//! run of its own, written by the next batch like the rest.

use super::record::{self, Header};
use super::segment::BLOCK;

/// A run of bytes to write into one segment.
pub struct Part {
    /// Segment ordinal.
    pub ord: u32,
    /// Offset of `data` in the segment (a block boundary).
    pub base: u64,
    /// The bytes, zero-padded to whole blocks.
    pub data: Vec<u8>,
    /// Bytes of records in `data` (the rest is padding).
    pub len: u64,
    /// The segment's last bytes: sync it and hand it to maintenance after.
    pub seal: bool,
}

impl Part {
    fn new(ord: u32, base: u64, mut data: Vec<u8>, seal: bool) -> Part {
        let len = data.len() as u64;
        data.resize((len.next_multiple_of(BLOCK)) as usize, 0);
        Part {
            ord,
            base,
            data,
            len,
            seal,
        }
    }
}

/// The open segment's unwritten records.
#[derive(Default)]
pub struct Tail {
    buf: Vec<u8>,
    base: u64,
    /// `buf` holds records not yet handed to a batch.
    dirty: bool,
    /// The partial block at the start of `buf` is being written by batch
    /// `Some(n)`.
    inflight: Option<u64>,
    /// Batches cut so far.
    batches: u64,
    /// Final runs of segments sealed since the last batch.
    sealed: Vec<Part>,
    /// Runs of the open segment cut off by [`Tail::skip`] since the last
    /// batch.
    runs: Vec<Part>,
    /// A written batch's buffer, kept for the next large record: a fresh
    /// one of several MiB costs a page fault per 4 KiB as it is filled,
    /// which held the executor for milliseconds (see `turn`).
    spare: Vec<u8>,
}

/// The largest buffer [`Tail::recycle`] keeps.
const SPARE_MAX: usize = 32 << 20;

impl Tail {
    /// Logical end of the open segment (written or not).
    pub fn end(&self) -> u64 {
        self.base + self.buf.len() as u64
    }

    /// Where the next record will start.
    pub fn next_off(&self) -> u64 {
        if self.inflight.is_some() {
            self.base + BLOCK
        } else {
            self.end()
        }
    }

    /// Appends one record; returns its offset and whether the tail just
    /// became dirty (the committer needs a nudge).
    pub fn append(&mut self, h: &Header, body: &[u8], body_crc: Option<u32>) -> (u64, bool) {
        if self.inflight.take().is_some() {
            // The rest of the partial block stays zeros (readers skip a zero
            // stretch to the next block boundary).
            self.base += BLOCK;
            self.buf.clear();
        }
        let off = self.end();
        // Room for the block padding a batch adds too, so that a large
        // record's buffer is not copied again to pad it (Part::new).
        let need = record::record_len(body.len()) + BLOCK as usize;
        if self.buf.capacity() - self.buf.len() < need {
            if self.spare.capacity() >= self.buf.len() + need {
                self.spare.extend_from_slice(&self.buf);
                std::mem::swap(&mut self.buf, &mut self.spare);
                self.spare = Vec::new();
            } else {
                // A block more: a buffer starts with up to a block carried
                // over from the last batch (`cut`), so once recycled this
                // one still holds a record of this size.
                self.buf.reserve(need + BLOCK as usize);
            }
        }
        record::encode_with(&mut self.buf, h, body, body_crc);
        let nudge = !self.dirty;
        self.dirty = true;
        (off, nudge)
    }

    /// Ends segment `ord` here; the next record starts a new segment at 0.
    /// Returns the sealed segment's end.
    pub fn seal(&mut self, ord: u32) -> u64 {
        let end = self.end();
        self.sealed.append(&mut self.runs);
        let mut data = std::mem::take(&mut self.buf);
        if self.inflight.take().is_some() {
            // Only the in-flight partial block: nothing new to write, but
            // the (empty) part still marks the segment's end.
            data.clear();
        }
        self.sealed.push(Part::new(ord, self.base, data, true));
        self.base = 0;
        self.dirty = false;
        end
    }

    /// Leaves the next `span` bytes from the next block boundary to a
    /// region written out of line; returns where they start. The records
    /// appended so far (the `Region` record last) become a run of segment
    /// `ord` for the next batch, and the next record starts after the
    /// region.
    pub fn skip(&mut self, ord: u32, span: u64) -> u64 {
        debug_assert!(span.is_multiple_of(BLOCK));
        // Right after the `Region` record's append, which took any
        // in-flight block.
        debug_assert!(self.dirty && self.inflight.is_none());
        let start = self.end().next_multiple_of(BLOCK);
        let data = std::mem::take(&mut self.buf);
        self.runs.push(Part::new(ord, self.base, data, false));
        self.base = start + span;
        self.dirty = false;
        start
    }

    /// Anything not yet handed to a batch.
    pub fn pending(&self) -> bool {
        self.dirty || !self.sealed.is_empty() || !self.runs.is_empty()
    }

    /// A segment was sealed since the last batch (its end must be written
    /// now: the next segment's file waits for it).
    pub fn has_sealed(&self) -> bool {
        !self.sealed.is_empty()
    }

    /// Bytes the next batch would write from the open segment.
    pub fn unwritten(&self) -> usize {
        let runs: usize = self.runs.iter().map(|r| r.len as usize).sum();
        if self.dirty {
            runs + self.buf.len()
        } else {
            runs
        }
    }

    /// Everything appended since the last batch, as the parts of batch
    /// `id`; `None` when there is nothing.
    pub fn cut(&mut self, open_ord: u32) -> Option<(u64, Vec<Part>)> {
        let mut parts = std::mem::take(&mut self.sealed);
        parts.append(&mut self.runs);
        let id = self.batches + 1;
        if self.dirty {
            self.dirty = false;
            let data = std::mem::take(&mut self.buf);
            let keep = (data.len() as u64 / BLOCK * BLOCK) as usize;
            self.buf = data[keep..].to_vec();
            self.buf.reserve(1 << 16);
            if !self.buf.is_empty() {
                self.inflight = Some(id);
            }
            parts.push(Part::new(open_ord, self.base, data, false));
            self.base += keep as u64;
        }
        if parts.is_empty() {
            return None;
        }
        self.batches = id;
        Some((id, parts))
    }

    /// Takes back a written part's buffer, if it is the largest offered
    /// (up to [`SPARE_MAX`]).
    pub fn recycle(&mut self, mut data: Vec<u8>) {
        if data.capacity() > self.spare.capacity() && data.capacity() <= SPARE_MAX {
            data.clear();
            self.spare = data;
        }
    }

    /// Batch `id` is written: its partial block may be shared again.
    pub fn written(&mut self, id: u64) {
        if self.inflight == Some(id) {
            self.inflight = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::record::{decode, message_header as header};

    #[test]
    fn a_written_buffer_holds_the_next_large_record() {
        let mut t = Tail::default();
        let big = vec![7u8; 1 << 20];
        t.append(&header(1, 10), &[1; 10], None);
        t.append(&header(2, big.len()), &big, None);
        let (id, parts) = t.cut(0).unwrap();
        t.written(id);
        let (ptr, cap) = (parts[0].data.as_ptr(), parts[0].data.capacity());
        for part in parts {
            t.recycle(part.data);
        }
        // The partial block left after the cut is carried into the
        // recycled buffer, ahead of the next record.
        let (off, _) = t.append(&header(3, big.len()), &big, None);
        let (_, parts) = t.cut(0).unwrap();
        assert_eq!(parts[0].data.as_ptr(), ptr, "the same allocation");
        assert_eq!(parts[0].data.capacity(), cap);
        let at = (off - parts[0].base) as usize;
        let (h, body) = decode(&parts[0].data[at..]).unwrap();
        assert_eq!((h.lsn, body), (3, &big[..]));
    }

    #[test]
    fn a_skipped_region_is_left_to_its_writer() {
        let mut t = Tail::default();
        let (a, _) = t.append(&header(1, 100), &[1; 100], None);
        let (marker, _) = t.append(&header(2, 8), &[2; 8], None);
        let span = 3 * BLOCK;
        let start = t.skip(0, span);
        assert_eq!(start, BLOCK, "the region starts at the next block");
        assert_eq!(t.next_off(), start + span, "records go on after it");
        assert_eq!(t.unwritten(), (marker as usize) + record::record_len(8));
        let (c, _) = t.append(&header(3, 10), &[3; 10], None);
        assert_eq!(c, start + span);
        let (_, parts) = t.cut(0).unwrap();
        // Two writes: the records before the region, and those after it;
        // none touches the region's blocks.
        let spans: Vec<(u64, u64)> = parts
            .iter()
            .map(|p| (p.base, p.base + p.data.len() as u64))
            .collect();
        assert_eq!(
            spans,
            vec![(0, BLOCK), (start + span, start + span + BLOCK)]
        );
        let (h, _) = decode(&parts[0].data[a as usize..]).unwrap();
        assert_eq!(h.lsn, 1);
        let (h, _) = decode(&parts[1].data).unwrap();
        assert_eq!(h.lsn, 3);
        assert!(!t.pending());
    }

    #[test]
    fn a_seal_after_a_skip_writes_the_run_first() {
        let mut t = Tail::default();
        t.append(&header(1, 8), &[1; 8], None);
        let start = t.skip(4, BLOCK);
        assert_eq!(
            t.seal(4),
            start + BLOCK,
            "the segment ends after the region"
        );
        let (_, parts) = t.cut(5).unwrap();
        assert_eq!(parts.len(), 2);
        assert_eq!((parts[0].ord, parts[0].base, parts[0].seal), (4, 0, false));
        assert_eq!((parts[1].ord, parts[1].seal), (4, true));
    }

    #[test]
    fn only_the_largest_buffer_up_to_the_cap_is_kept() {
        let mut t = Tail::default();
        t.recycle(Vec::with_capacity(1000));
        t.recycle(Vec::with_capacity(10));
        assert_eq!(t.spare.capacity(), 1000);
        t.recycle(Vec::with_capacity(SPARE_MAX + 1));
        assert_eq!(t.spare.capacity(), 1000);
    }
}
