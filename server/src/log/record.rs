//! The record: the unit of the log.
//!
//! Every record is a fixed 48-byte little-endian header followed by its body,
//! padded with zeros to a multiple of 8 bytes (the padding is not covered by
//! the checksum and is not part of `len`). The layout is specified byte by
//! byte in `docs/format.md`; this module is the only code that knows it.
//!
//! ```text
//!  0  u32 crc32c   over bytes [4, 48 + len)
//!  4  u32 len      body length in bytes
//!  8  u16 magic    0x514D ("MQ")
//! 10  u8  kind     see `Kind`
//! 11  u8  reserved 0
//! 12  u32 queue    shard-local queue id
//! 16  u64 lsn      shard-wide log sequence number, strictly increasing
//! 24  u64 seq      kind-specific (message seq, consumed-up-to, next queue id)
//! 32  u64 time     enqueue time, microseconds since the Unix epoch
//! 40  u32 flags    the message's memcache flags
//! 44  u32 expires  Enqueued: Unix time (s) the message expires, 0 never
//! 48  body
//! ```

/// Size of the fixed header.
pub const HEADER_LEN: usize = 48;
/// Records start at multiples of this.
pub const RECORD_ALIGN: usize = 8;
/// Identifies a record header (little-endian "MQ").
pub const MAGIC: u16 = 0x514D;
/// Largest body a record may carry; anything bigger is corruption.
pub const MAX_BODY: u32 = 1 << 30;

/// What a record says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    /// Queue `queue` is called `name` and its counters are at least
    /// `head`/`tail`. Body: `u64 head | u64 tail | name`. Written when a queue
    /// is created and, for every live queue, at the start of each segment
    /// (the segment's checkpoint).
    Created = 1,
    /// Message `seq` of queue `queue`; body is the message. A compaction copy
    /// is the same record again with a higher lsn.
    Enqueued = 2,
    /// Every message of queue `queue` with a sequence number below `seq` is
    /// consumed.
    Consumed = 3,
    /// Queue `queue` and all its messages are gone.
    Deleted = 4,
    /// The segment's checkpoint, its first record: the ids of the queues
    /// alive when it was started. Body: `(u32 first, u32 end)` ranges of
    /// ids, ascending (see `log::recovery`, "Which queues exist"). `seq` is
    /// the next queue id to hand out. Segments of format 4 and before have
    /// an empty body and a `Created` record of every live queue before this
    /// one instead.
    Checkpoint = 5,
    /// Messages `seq` up to (excluding) the body's `u64` of queue `queue`
    /// are consumed, whatever the head says: a reliable read confirmed out
    /// of order (see `log::confirmed`). Body: `u64 end`. A checkpoint
    /// restates the queue's ranges after its `Created` record.
    Confirmed = 6,
    /// Message `seq` of queue `queue` is written out of line: its
    /// `Enqueued` record, with the lsn one below this one's and a body of
    /// the body's `u64` bytes, starts at the next block boundary and fills
    /// [`region_span`] bytes, which no other record shares. The small
    /// records appended after it go on after that region, so they need not
    /// wait for a large body's write (see `log::region`). A region that
    /// does not verify is a set the crash cut short: the message is gone,
    /// but its sequence number counts as enqueued.
    Region = 7,
}

impl Kind {
    pub fn from_u8(v: u8) -> Option<Kind> {
        Some(match v {
            1 => Kind::Created,
            2 => Kind::Enqueued,
            3 => Kind::Consumed,
            4 => Kind::Deleted,
            5 => Kind::Checkpoint,
            6 => Kind::Confirmed,
            7 => Kind::Region,
            _ => return None,
        })
    }
}

/// The decoded header of a record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    pub kind: Kind,
    pub queue: u32,
    pub lsn: u64,
    pub seq: u64,
    pub time: u64,
    pub flags: u32,
    /// `Enqueued`: when the message expires, Unix seconds; 0 never (and 0
    /// for every other kind).
    pub expires: u32,
    /// Body length.
    pub len: u32,
}

impl Header {
    /// Bytes the record occupies in the log, padding included.
    pub fn record_len(&self) -> usize {
        record_len(self.len as usize)
    }
}

/// Bytes a record with a body of `body_len` bytes occupies, padding included.
pub fn record_len(body_len: usize) -> usize {
    (HEADER_LEN + body_len).next_multiple_of(RECORD_ALIGN)
}

/// Appends the record to `out`, which must end at a record boundary
/// (a multiple of 8 bytes from the segment start).
pub fn encode_into(out: &mut Vec<u8>, h: &Header, body: &[u8]) {
    encode_with(out, h, body, None);
}

/// [`encode_into`], given `crc32c(body)` when it is known already: a large
/// body's is computed in pieces before the append (see `turn`), and the
/// record's checksum is then combined from it and the header's.
pub fn encode_with(out: &mut Vec<u8>, h: &Header, body: &[u8], body_crc: Option<u32>) {
    debug_assert_eq!(h.len as usize, body.len());
    let start = out.len();
    match body_crc {
        Some(body_crc) => {
            debug_assert_eq!(body_crc, crc32c::crc32c(body));
            out.extend_from_slice(&encode_header(h, body_crc));
            out.extend_from_slice(body);
        }
        None => {
            out.extend_from_slice(&unsummed_header(h));
            out.extend_from_slice(body);
            let crc = crc32c::crc32c(&out[start + 4..]);
            out[start..start + 4].copy_from_slice(&crc.to_le_bytes());
        }
    }
    out.resize(start + record_len(body.len()), 0);
}

/// The 48 bytes that start record `h`, given `crc32c` of its body: the
/// record's checksum combined from the header's and the body's. What
/// [`encode_with`] writes before the body, also for a body written from
/// where it is (see `log::region`).
pub fn encode_header(h: &Header, body_crc: u32) -> [u8; HEADER_LEN] {
    let mut head = unsummed_header(h);
    let crc = crc32c::crc32c_combine(crc32c::crc32c(&head[4..]), body_crc, h.len as usize);
    head[..4].copy_from_slice(&crc.to_le_bytes());
    head
}

/// The header's bytes, its checksum still zero.
fn unsummed_header(h: &Header) -> [u8; HEADER_LEN] {
    let mut b = [0u8; HEADER_LEN];
    b[4..8].copy_from_slice(&h.len.to_le_bytes());
    b[8..10].copy_from_slice(&MAGIC.to_le_bytes());
    b[10] = h.kind as u8;
    b[12..16].copy_from_slice(&h.queue.to_le_bytes());
    b[16..24].copy_from_slice(&h.lsn.to_le_bytes());
    b[24..32].copy_from_slice(&h.seq.to_le_bytes());
    b[32..40].copy_from_slice(&h.time.to_le_bytes());
    b[40..44].copy_from_slice(&h.flags.to_le_bytes());
    b[44..48].copy_from_slice(&h.expires.to_le_bytes());
    b
}

/// For tests: the header of message `lsn` (also its seq) of queue 1.
#[cfg(test)]
pub fn message_header(lsn: u64, body_len: usize) -> Header {
    Header {
        kind: Kind::Enqueued,
        queue: 1,
        lsn,
        seq: lsn,
        time: 0,
        flags: 0,
        expires: 0,
        len: body_len as u32,
    }
}

/// Why bytes at a position are not a record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DecodeError {
    /// Fewer bytes than the header (or the header's `len`) asks for.
    Short { need: usize },
    /// The header is all zeros: preallocated space that was never written.
    Zero,
    /// Not a valid record (bad magic, kind, reserved bytes, length or crc).
    Invalid,
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

/// Checks the header's fixed fields without the checksum (cheap; used to
/// skip quickly over garbage while resynchronising).
pub fn parse_header(b: &[u8]) -> Result<Header, DecodeError> {
    if b.len() < HEADER_LEN {
        return Err(DecodeError::Short { need: HEADER_LEN });
    }
    let b = &b[..HEADER_LEN];
    if u16::from_le_bytes([b[8], b[9]]) != MAGIC {
        if b.iter().all(|&x| x == 0) {
            return Err(DecodeError::Zero);
        }
        return Err(DecodeError::Invalid);
    }
    let kind = Kind::from_u8(b[10]).ok_or(DecodeError::Invalid)?;
    let len = u32_at(b, 4);
    let expires = u32_at(b, 44);
    if b[11] != 0 || (expires != 0 && kind != Kind::Enqueued) || len > MAX_BODY {
        return Err(DecodeError::Invalid);
    }
    Ok(Header {
        kind,
        queue: u32_at(b, 12),
        lsn: u64_at(b, 16),
        seq: u64_at(b, 24),
        time: u64_at(b, 32),
        flags: u32_at(b, 40),
        expires,
        len,
    })
}

/// Decodes and verifies the record at the start of `b`. On success returns
/// the header and the body (a sub-slice of `b`).
pub fn decode(b: &[u8]) -> Result<(Header, &[u8]), DecodeError> {
    let h = parse_header(b)?;
    let end = HEADER_LEN + h.len as usize;
    if b.len() < end {
        return Err(DecodeError::Short { need: end });
    }
    if crc32c::crc32c(&b[4..end]) != u32_at(b, 0) {
        return Err(DecodeError::Invalid);
    }
    Ok((h, &b[HEADER_LEN..end]))
}

/// Body of a `Created` record: `u64 head | u64 tail | name`.
pub fn created_body(head: u64, tail: u64, name: &[u8]) -> Vec<u8> {
    let mut b = Vec::with_capacity(16 + name.len());
    b.extend_from_slice(&head.to_le_bytes());
    b.extend_from_slice(&tail.to_le_bytes());
    b.extend_from_slice(name);
    b
}

/// Body of a `Checkpoint` record: the live queue ids as `[first, end)`
/// ranges.
pub fn checkpoint_body(live: &[(u32, u32)]) -> Vec<u8> {
    let mut b = Vec::with_capacity(8 * live.len());
    for &(first, end) in live {
        b.extend_from_slice(&first.to_le_bytes());
        b.extend_from_slice(&end.to_le_bytes());
    }
    b
}

/// The id ranges of a `Checkpoint` record's body (`None` if it is not
/// whole ranges).
pub fn parse_checkpoint(body: &[u8]) -> Option<impl Iterator<Item = (u32, u32)> + '_> {
    body.len().is_multiple_of(8).then(|| {
        body.chunks_exact(8).map(|c| {
            let at = |i: usize| u32::from_le_bytes(c[i..i + 4].try_into().expect("4 bytes"));
            (at(0), at(4))
        })
    })
}

/// Body of a `Confirmed` record: the end of its range.
pub fn confirmed_body(end: u64) -> [u8; 8] {
    end.to_le_bytes()
}

/// The end of a `Confirmed` record's range, from its body.
pub fn parse_confirmed(body: &[u8]) -> Option<u64> {
    Some(u64::from_le_bytes(body.get(..8)?.try_into().ok()?))
}

/// Body of a `Region` record: the message's body length.
pub fn region_body(body_len: usize) -> [u8; 8] {
    (body_len as u64).to_le_bytes()
}

/// The message's body length, from a `Region` record's body.
pub fn parse_region(body: &[u8]) -> Option<usize> {
    let len = u64::from_le_bytes(body.get(..8)?.try_into().ok()?);
    (len <= u64::from(MAX_BODY)).then_some(len as usize)
}

/// Bytes the out-of-line region of a body of `body_len` bytes fills: its
/// record padded to whole blocks.
pub fn region_span(body_len: usize) -> u64 {
    (record_len(body_len) as u64).next_multiple_of(super::segment::BLOCK)
}

/// Splits a `Created` body into `(head, tail, name)`.
pub fn parse_created(body: &[u8]) -> Option<(u64, u64, &[u8])> {
    if body.len() < 16 {
        return None;
    }
    Some((u64_at(body, 0), u64_at(body, 8), &body[16..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(kind: Kind, len: u32) -> Header {
        Header {
            kind,
            queue: 7,
            lsn: 0x0102_0304_0506_0708,
            seq: 42,
            time: 1_700_000_000_000_000,
            flags: 0xdead_beef,
            expires: 0,
            len,
        }
    }

    #[test]
    fn round_trip_all_kinds_and_sizes() {
        for kind in [
            Kind::Created,
            Kind::Enqueued,
            Kind::Consumed,
            Kind::Deleted,
            Kind::Checkpoint,
            Kind::Confirmed,
            Kind::Region,
        ] {
            for n in [0usize, 1, 7, 8, 9, 100, 4096, 70_000] {
                let body: Vec<u8> = (0..n).map(|i| (i * 31 + 5) as u8).collect();
                let h = header(kind, n as u32);
                let mut out = vec![];
                encode_into(&mut out, &h, &body);
                assert_eq!(out.len(), record_len(n));
                assert_eq!(out.len() % RECORD_ALIGN, 0);
                let (h2, b2) = decode(&out).unwrap();
                assert_eq!(h2, h);
                assert_eq!(b2, &body[..]);
            }
        }
    }

    #[test]
    fn a_checksum_given_beforehand_encodes_the_same_record() {
        for len in [0usize, 1, 7, 8, 100, 4096, 300_000] {
            let body: Vec<u8> = (0..len).map(|i| (i * 31 % 251) as u8).collect();
            let h = header(Kind::Enqueued, len as u32);
            let (mut whole, mut given) = (Vec::new(), Vec::new());
            encode_into(&mut whole, &h, &body);
            encode_with(&mut given, &h, &body, Some(crc32c::crc32c(&body)));
            assert_eq!(whole, given, "len {len}");
            assert_eq!(decode(&given).unwrap().1, &body[..]);
        }
    }

    #[test]
    fn a_header_encoded_alone_starts_the_record() {
        for len in [0usize, 5, 4096, 300_000] {
            let body: Vec<u8> = (0..len).map(|i| (i * 7 % 253) as u8).collect();
            let h = header(Kind::Enqueued, len as u32);
            let mut whole = Vec::new();
            encode_into(&mut whole, &h, &body);
            let head = encode_header(&h, crc32c::crc32c(&body));
            assert_eq!(&whole[..HEADER_LEN], &head[..], "len {len}");
        }
    }

    #[test]
    fn header_layout_is_fixed() {
        let mut out = vec![];
        encode_into(&mut out, &header(Kind::Enqueued, 3), b"abc");
        assert_eq!(&out[4..8], &3u32.to_le_bytes());
        assert_eq!(&out[8..10], b"MQ");
        assert_eq!(out[10], 2);
        assert_eq!(&out[12..16], &7u32.to_le_bytes());
        assert_eq!(&out[16..24], &0x0102_0304_0506_0708u64.to_le_bytes());
        assert_eq!(&out[24..32], &42u64.to_le_bytes());
        assert_eq!(&out[40..44], &0xdead_beefu32.to_le_bytes());
        assert_eq!(&out[48..51], b"abc");
        assert_eq!(out.len(), 56);
        let crc = crc32c::crc32c(&out[4..51]);
        assert_eq!(&out[0..4], &crc.to_le_bytes());
    }

    #[test]
    fn every_flipped_bit_is_detected() {
        let mut out = vec![];
        encode_into(&mut out, &header(Kind::Enqueued, 20), &[9u8; 20]);
        let covered = HEADER_LEN + 20;
        for i in 0..covered {
            for bit in 0..8 {
                let mut c = out.clone();
                c[i] ^= 1 << bit;
                assert!(decode(&c).is_err(), "flip at byte {i} bit {bit} undetected");
            }
        }
    }

    #[test]
    fn truncation_is_short_and_zeros_are_zero() {
        let mut out = vec![];
        encode_into(&mut out, &header(Kind::Consumed, 10), &[1u8; 10]);
        for cut in 0..HEADER_LEN + 10 {
            assert!(matches!(
                decode(&out[..cut]),
                Err(DecodeError::Short { .. })
            ));
        }
        assert_eq!(decode(&[0u8; 64]), Err(DecodeError::Zero));
    }

    #[test]
    fn created_body_round_trip() {
        let b = created_body(3, 9, b"queue");
        assert_eq!(parse_created(&b), Some((3, 9, &b"queue"[..])));
        assert_eq!(parse_created(&b[..15]), None);
    }
}
