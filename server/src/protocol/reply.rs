//! Reply encoders. Each appends to `out`, so one connection's replies to a
//! whole pipeline go out in one write.

use std::io::Write as _;

pub fn line(out: &mut Vec<u8>, line: &str) {
    out.extend_from_slice(line.as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// `VALUE <q> <flags> <bytes>[ <seq>]\r\n<data>\r\n` (the caller adds `END`).
pub fn value(out: &mut Vec<u8>, queue: &[u8], flags: u32, seq: Option<u64>, body: &[u8]) {
    value_header(out, queue, flags, body.len(), seq);
    out.extend_from_slice(body);
    out.extend_from_slice(b"\r\n");
}

/// The line a `VALUE` reply starts with; the body and its `\r\n`
/// follow.
pub fn value_header(out: &mut Vec<u8>, queue: &[u8], flags: u32, len: usize, seq: Option<u64>) {
    out.extend_from_slice(b"VALUE ");
    out.extend_from_slice(queue);
    // Written straight into `out` (io::Write on a Vec cannot fail).
    let _ = write!(out, " {flags} {len}");
    if let Some(seq) = seq {
        let _ = write!(out, " {seq}");
    }
    out.extend_from_slice(b"\r\n");
}

/// `STAT <name> <value>\r\n`.
pub fn stat(out: &mut Vec<u8>, name: &[u8], value: impl std::fmt::Display) {
    out.extend_from_slice(b"STAT ");
    out.extend_from_slice(name);
    let _ = write!(out, " {value}");
    out.extend_from_slice(b"\r\n");
}
