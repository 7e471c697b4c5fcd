//! The memcache text protocol as seen from the client side.
//!
//! Parsing is two-phase and allocation-free, in the spirit of mini-redis'
//! `frame.rs`: a reply is only decoded once all of its bytes are in the
//! buffer, and "need more bytes" is kept apart from "this cannot be a reply"
//! so that a desynchronised stream aborts its connection instead of stalling
//! it. Replies may arrive split at any byte; the caller simply retries with
//! more data. Requests are encoded straight into the connection's write buffer
//! with a hand-rolled integer formatter, because `format!` on the hot path
//! would cost more than the rest of the request put together.

/// The longest reply line we accept before calling the stream garbage.
pub const MAX_LINE: usize = 8 * 1024;
/// The largest `VALUE` body we accept (well above any server's item limit).
pub const MAX_VALUE: usize = 256 * 1024 * 1024;

/// Error replies, by kind, so that the summary can say what went wrong.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// `ERROR`: the server did not understand the command.
    Error,
    /// `CLIENT_ERROR <msg>`.
    ClientError,
    /// `SERVER_ERROR <msg>`.
    ServerError,
    /// `NOT_STORED`, `EXISTS`, `NOT_FOUND`, `DELETED`: valid replies, but not
    /// to the commands this generator sends.
    Unexpected,
}

impl ErrorKind {
    pub const ALL: [ErrorKind; 4] = [
        ErrorKind::Error,
        ErrorKind::ClientError,
        ErrorKind::ServerError,
        ErrorKind::Unexpected,
    ];

    pub fn name(self) -> &'static str {
        match self {
            ErrorKind::Error => "ERROR",
            ErrorKind::ClientError => "CLIENT_ERROR",
            ErrorKind::ServerError => "SERVER_ERROR",
            ErrorKind::Unexpected => "unexpected_reply",
        }
    }
}

/// One complete reply.
#[derive(Debug, PartialEq, Eq)]
pub enum Reply<'a> {
    Stored,
    /// `END` alone: a `get` miss.
    End,
    /// `VALUE <key> <flags> <bytes>[ <cas>]`, its data block and the closing `END`.
    Value {
        key: &'a [u8],
        flags: u32,
        data: &'a [u8],
    },
    /// An error line; the slice is the whole line without its terminator.
    Error(ErrorKind, &'a [u8]),
}

/// The outcome of looking at the front of a receive buffer.
#[derive(Debug, PartialEq, Eq)]
pub enum Parsed<'a> {
    /// Not a whole reply yet; at least `need` bytes are required in total
    /// (a lower bound while the first line is incomplete).
    Incomplete { need: usize },
    /// A reply that used the first `len` bytes of the buffer.
    Reply { reply: Reply<'a>, len: usize },
    /// The bytes cannot be a reply: the connection must be dropped.
    Desync(String),
}

fn find_newline(buf: &[u8]) -> Option<usize> {
    buf.iter().position(|&b| b == b'\n')
}

/// Strips the line terminator (`\r\n`, or a bare `\n`).
fn trim_line(line: &[u8]) -> &[u8] {
    match line.last() {
        Some(b'\r') => &line[..line.len() - 1],
        _ => line,
    }
}

fn parse_u64(tok: &[u8]) -> Option<u64> {
    if tok.is_empty() || tok.len() > 20 {
        return None;
    }
    let mut v: u64 = 0;
    for &b in tok {
        if !b.is_ascii_digit() {
            return None;
        }
        v = v.checked_mul(10)?.checked_add(u64::from(b - b'0'))?;
    }
    Some(v)
}

fn printable(bytes: &[u8]) -> String {
    let shown = &bytes[..bytes.len().min(80)];
    let mut s = String::from_utf8_lossy(shown).escape_debug().to_string();
    if bytes.len() > shown.len() {
        s.push('…');
    }
    s
}

/// Parses the reply at the front of `buf`.
pub fn parse_reply(buf: &[u8]) -> Parsed<'_> {
    let nl = match find_newline(buf) {
        Some(i) => i,
        None if buf.len() > MAX_LINE => {
            return Parsed::Desync(format!(
                "no line terminator in {} bytes: {}",
                buf.len(),
                printable(buf)
            ))
        }
        None => {
            return Parsed::Incomplete {
                need: buf.len() + 1,
            }
        }
    };
    let line = trim_line(&buf[..nl]);
    let after_line = nl + 1;
    match line {
        b"STORED" => {
            return Parsed::Reply {
                reply: Reply::Stored,
                len: after_line,
            }
        }
        b"END" => {
            return Parsed::Reply {
                reply: Reply::End,
                len: after_line,
            }
        }
        b"ERROR" => {
            return Parsed::Reply {
                reply: Reply::Error(ErrorKind::Error, line),
                len: after_line,
            }
        }
        b"NOT_STORED" | b"EXISTS" | b"NOT_FOUND" | b"DELETED" => {
            return Parsed::Reply {
                reply: Reply::Error(ErrorKind::Unexpected, line),
                len: after_line,
            }
        }
        _ => {}
    }
    if line.starts_with(b"CLIENT_ERROR") {
        return Parsed::Reply {
            reply: Reply::Error(ErrorKind::ClientError, line),
            len: after_line,
        };
    }
    if line.starts_with(b"SERVER_ERROR") {
        return Parsed::Reply {
            reply: Reply::Error(ErrorKind::ServerError, line),
            len: after_line,
        };
    }
    if !line.starts_with(b"VALUE ") {
        return Parsed::Desync(format!("unexpected reply line: \"{}\"", printable(line)));
    }
    let mut toks = line[6..].split(|&b| b == b' ').filter(|t| !t.is_empty());
    let key = toks.next();
    let flags = toks.next().and_then(parse_u64);
    let bytes = toks.next().and_then(parse_u64);
    let _cas = toks.next();
    let (key, flags, bytes) = match (key, flags, bytes, toks.next()) {
        (Some(k), Some(f), Some(b), None) if f <= u64::from(u32::MAX) => (k, f as u32, b),
        _ => return Parsed::Desync(format!("malformed VALUE line: \"{}\"", printable(line))),
    };
    if bytes > MAX_VALUE as u64 {
        return Parsed::Desync(format!("VALUE of {bytes} bytes is beyond any sane limit"));
    }
    let data_start = after_line;
    let data_end = data_start + bytes as usize;
    // data, "\r\n", then at least "END\n".
    let min_total = data_end + 2 + 4;
    if buf.len() < min_total {
        return Parsed::Incomplete { need: min_total };
    }
    if &buf[data_end..data_end + 2] != b"\r\n" {
        return Parsed::Desync(format!(
            "VALUE data block of {bytes} bytes not followed by \\r\\n (got \"{}\")",
            printable(&buf[data_end..data_end + 2])
        ));
    }
    let rest = &buf[data_end + 2..];
    let end_len = if rest.starts_with(b"END\r\n") {
        5
    } else if rest.starts_with(b"END\n") {
        4
    } else if rest.len() < 5 && b"END\r\n".starts_with(rest) {
        return Parsed::Incomplete {
            need: data_end + 2 + 5,
        };
    } else {
        return Parsed::Desync(format!(
            "expected END after a single VALUE, got \"{}\"",
            printable(&rest[..rest.len().min(40)])
        ));
    };
    Parsed::Reply {
        reply: Reply::Value {
            key,
            flags,
            data: &buf[data_start..data_end],
        },
        len: data_end + 2 + end_len,
    }
}

/// Appends the decimal form of `v`.
#[inline]
pub fn push_u64(out: &mut Vec<u8>, mut v: u64) {
    let mut tmp = [0u8; 20];
    let mut i = tmp.len();
    loop {
        i -= 1;
        tmp[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    out.extend_from_slice(&tmp[i..]);
}

/// Appends `set <key> 0 0 <len>\r\n` — the caller appends the body and `\r\n`
/// (see [`finish_set`]) so that bodies can be built in place.
#[inline]
pub fn begin_set(out: &mut Vec<u8>, key: &[u8], len: usize) {
    out.extend_from_slice(b"set ");
    out.extend_from_slice(key);
    out.extend_from_slice(b" 0 0 ");
    push_u64(out, len as u64);
    out.extend_from_slice(b"\r\n");
}

#[inline]
pub fn finish_set(out: &mut Vec<u8>) {
    out.extend_from_slice(b"\r\n");
}

/// Appends `get <name><options>\r\n`; `options` come from [`GetOptions`]
/// (empty for a plain pop).
#[inline]
pub fn encode_get(out: &mut Vec<u8>, name: &[u8], options: &[u8]) {
    out.extend_from_slice(b"get ");
    out.extend_from_slice(name);
    out.extend_from_slice(options);
    out.extend_from_slice(b"\r\n");
}

/// Whether a `VALUE` line's key is the key of `get <name><options>`: servers
/// echo the key as sent, options included.
#[inline]
pub fn key_matches(key: &[u8], name: &[u8], options: &[u8]) -> bool {
    key.len() == name.len() + options.len() && key.starts_with(name) && key.ends_with(options)
}

/// Which `get` a request is: a plain pop, or one step of a Kestrel reliable
/// read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GetKind {
    /// `get <q>`: the message is gone once its `VALUE` is sent (at-most-once).
    Pop,
    /// `get <q>/open`: the head is handed out tentatively and the connection
    /// holds it open until it confirms it; a disconnect puts it back.
    Open,
    /// `get <q>/close/open`: confirms the message held open on this queue
    /// (a server ignores `/close` when none is) and opens the next.
    CloseOpen,
    /// `get <q>/close`: confirms the open message; the reply is `END`.
    Close,
}

impl GetKind {
    const ALL: [GetKind; 4] = [
        GetKind::Pop,
        GetKind::Open,
        GetKind::CloseOpen,
        GetKind::Close,
    ];
}

/// The options that follow the queue name in a `get` key, one rendering per
/// [`GetKind`], made once at start-up because they are the same for every
/// queue: `/t=<ms>` (the blocking wait) first, then the reliable-read
/// options, as in `q/t=500/close/open`. A `/close` alone never waits: it
/// has nothing to wait for.
#[derive(Clone, Debug)]
pub struct GetOptions([Vec<u8>; 4]);

impl GetOptions {
    pub fn new(wait_ms: Option<u64>) -> GetOptions {
        let wait = wait_ms.map(|ms| format!("/t={ms}")).unwrap_or_default();
        GetOptions(GetKind::ALL.map(|kind| {
            match kind {
                GetKind::Pop => wait.clone(),
                GetKind::Open => format!("{wait}/open"),
                GetKind::CloseOpen => format!("{wait}/close/open"),
                GetKind::Close => "/close".to_string(),
            }
            .into_bytes()
        }))
    }

    #[inline]
    pub fn get(&self, kind: GetKind) -> &[u8] {
        &self.0[kind as usize]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workload::Rng;

    #[test]
    fn simple_lines() {
        assert_eq!(
            parse_reply(b"STORED\r\n"),
            Parsed::Reply {
                reply: Reply::Stored,
                len: 8
            }
        );
        assert_eq!(
            parse_reply(b"END\r\nSTORED\r\n"),
            Parsed::Reply {
                reply: Reply::End,
                len: 5
            }
        );
        assert_eq!(
            parse_reply(b"SERVER_ERROR out of space\r\n"),
            Parsed::Reply {
                reply: Reply::Error(ErrorKind::ServerError, b"SERVER_ERROR out of space"),
                len: 27
            }
        );
        assert!(matches!(
            parse_reply(b"CLIENT_ERROR bad data chunk\r\n"),
            Parsed::Reply {
                reply: Reply::Error(ErrorKind::ClientError, _),
                ..
            }
        ));
        assert!(matches!(
            parse_reply(b"ERROR\r\n"),
            Parsed::Reply {
                reply: Reply::Error(ErrorKind::Error, _),
                ..
            }
        ));
        assert_eq!(parse_reply(b"STO"), Parsed::Incomplete { need: 4 });
    }

    #[test]
    fn value_with_binary_body_and_cas() {
        let buf = b"VALUE q 7 8 42\r\nEND\r\n\0ab\r\nEND\r\n";
        match parse_reply(buf) {
            Parsed::Reply {
                reply: Reply::Value { key, flags, data },
                len,
            } => {
                assert_eq!(key, b"q");
                assert_eq!(flags, 7);
                assert_eq!(data, b"END\r\n\0ab");
                assert_eq!(len, buf.len());
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn garbage_is_desync_not_incomplete() {
        assert!(matches!(parse_reply(b"HELLO\r\n"), Parsed::Desync(_)));
        assert!(matches!(
            parse_reply(b"VALUE q x 3\r\nabc\r\nEND\r\n"),
            Parsed::Desync(_)
        ));
        assert!(matches!(
            parse_reply(b"VALUE q 0 3\r\nabcd\r\nEND\r\n"),
            Parsed::Desync(_)
        ));
        assert!(matches!(
            parse_reply(b"VALUE q 0 3\r\nabc\r\nSTORED\r\n"),
            Parsed::Desync(_)
        ));
        let long = vec![b'x'; MAX_LINE + 1];
        assert!(matches!(parse_reply(&long), Parsed::Desync(_)));
    }

    /// Every prefix of a valid stream is Incomplete, never a reply or a desync.
    #[test]
    fn every_prefix_is_incomplete() {
        let one = b"VALUE queue 0 5\r\nhello\r\nEND\r\n";
        for cut in 0..one.len() {
            match parse_reply(&one[..cut]) {
                Parsed::Incomplete { need } => assert!(need > cut, "cut {cut}"),
                other => panic!("cut {cut}: {other:?}"),
            }
        }
    }

    /// A stream of replies fed in random pieces decodes to the same sequence.
    #[test]
    fn random_splits() {
        let mut stream = Vec::new();
        let mut expected = Vec::new();
        let mut rng = Rng::new(7);
        for i in 0..500u64 {
            match rng.below(4) {
                0 => {
                    stream.extend_from_slice(b"STORED\r\n");
                    expected.push("S".to_string());
                }
                1 => {
                    stream.extend_from_slice(b"END\r\n");
                    expected.push("E".to_string());
                }
                2 => {
                    stream.extend_from_slice(b"SERVER_ERROR busy\r\n");
                    expected.push("X".to_string());
                }
                _ => {
                    let len = rng.below(300) as usize;
                    let body: Vec<u8> = (0..len).map(|j| (i as usize + j) as u8).collect();
                    stream.extend_from_slice(format!("VALUE k{i} {i} {len}\r\n").as_bytes());
                    stream.extend_from_slice(&body);
                    stream.extend_from_slice(b"\r\nEND\r\n");
                    expected.push(format!(
                        "V{i}:{len}:{}",
                        body.iter().map(|&b| b as u64).sum::<u64>()
                    ));
                }
            }
        }
        for trial in 0..20 {
            let mut got = Vec::new();
            let mut buf: Vec<u8> = Vec::new();
            let mut pos = 0;
            while pos < stream.len() {
                let take = 1 + rng.below(if trial % 2 == 0 { 7 } else { 700 }) as usize;
                let end = (pos + take).min(stream.len());
                buf.extend_from_slice(&stream[pos..end]);
                pos = end;
                loop {
                    match parse_reply(&buf) {
                        Parsed::Incomplete { need } => {
                            assert!(need > buf.len());
                            break;
                        }
                        Parsed::Desync(m) => panic!("desync: {m}"),
                        Parsed::Reply { reply, len } => {
                            got.push(match reply {
                                Reply::Stored => "S".to_string(),
                                Reply::End => "E".to_string(),
                                Reply::Error(..) => "X".to_string(),
                                Reply::Value { key, flags, data } => {
                                    assert_eq!(key, format!("k{flags}").as_bytes());
                                    format!(
                                        "V{flags}:{}:{}",
                                        data.len(),
                                        data.iter().map(|&b| b as u64).sum::<u64>()
                                    )
                                }
                            });
                            buf.drain(..len);
                        }
                    }
                }
            }
            assert!(buf.is_empty());
            assert_eq!(got, expected);
        }
    }

    #[test]
    fn encoders() {
        let mut out = Vec::new();
        begin_set(&mut out, b"q1", 1234567890);
        finish_set(&mut out);
        encode_get(&mut out, b"q1", b"");
        push_u64(&mut out, 0);
        push_u64(&mut out, u64::MAX);
        assert_eq!(
            out,
            b"set q1 0 0 1234567890\r\n\r\nget q1\r\n018446744073709551615".to_vec()
        );
    }

    #[test]
    fn get_options_render_every_kind() {
        let text = |o: &GetOptions, k| String::from_utf8(o.get(k).to_vec()).unwrap();
        let plain = GetOptions::new(None);
        assert_eq!(text(&plain, GetKind::Pop), "");
        assert_eq!(text(&plain, GetKind::Open), "/open");
        assert_eq!(text(&plain, GetKind::CloseOpen), "/close/open");
        assert_eq!(text(&plain, GetKind::Close), "/close");
        let wait = GetOptions::new(Some(500));
        assert_eq!(text(&wait, GetKind::Pop), "/t=500");
        assert_eq!(text(&wait, GetKind::Open), "/t=500/open");
        assert_eq!(text(&wait, GetKind::CloseOpen), "/t=500/close/open");
        assert_eq!(text(&wait, GetKind::Close), "/close");
        let mut out = Vec::new();
        encode_get(&mut out, b"lg3", wait.get(GetKind::CloseOpen));
        assert_eq!(out, b"get lg3/t=500/close/open\r\n");
    }

    #[test]
    fn value_keys_are_matched_with_their_options() {
        assert!(key_matches(b"q1/t=5/open", b"q1", b"/t=5/open"));
        assert!(key_matches(b"q1", b"q1", b""));
        assert!(!key_matches(b"q1/open", b"q1", b""));
        assert!(!key_matches(b"q1", b"q1", b"/open"));
        assert!(!key_matches(b"q2/open", b"q1", b"/open"));
        assert!(!key_matches(b"q1/close/open", b"q1", b"/open"));
    }
}
