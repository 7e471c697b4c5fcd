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
}

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
        self.buf
            .reserve(record::record_len(body.len()) + BLOCK as usize);
        record::encode_with(&mut self.buf, h, body, body_crc);
        let nudge = !self.dirty;
        self.dirty = true;
        (off, nudge)
    }

    /// Ends segment `ord` here; the next record starts a new segment at 0.
    /// Returns the sealed segment's end.
    pub fn seal(&mut self, ord: u32) -> u64 {
        let end = self.end();
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

    /// Anything not yet handed to a batch.
    pub fn pending(&self) -> bool {
        self.dirty || !self.sealed.is_empty()
    }

    /// A segment was sealed since the last batch (its end must be written
    /// now: the next segment's file waits for it).
    pub fn has_sealed(&self) -> bool {
        !self.sealed.is_empty()
    }

    /// Bytes the next batch would write from the open segment.
    pub fn unwritten(&self) -> usize {
        if self.dirty {
            self.buf.len()
        } else {
            0
        }
    }

    /// Everything appended since the last batch, as the parts of batch
    /// `id`; `None` when there is nothing.
    pub fn cut(&mut self, open_ord: u32) -> Option<(u64, Vec<Part>)> {
        let mut parts = std::mem::take(&mut self.sealed);
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

    /// Batch `id` is written: its partial block may be shared again.
    pub fn written(&mut self, id: u64) {
        if self.inflight == Some(id) {
            self.inflight = None;
        }
    }
}
