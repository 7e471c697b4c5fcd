//! The memcache text protocol as MemcacheQ speaks it: requests in, reply
//! bytes out. No I/O lives here, so every byte sequence a client can send is
//! testable without a socket.
//!
//! # Why two-phase
//! [`parse`] first checks that a whole frame (request line, and for `set` the
//! data block and its `\r\n`) is in the buffer, and only then allocates.
//! "Need more bytes" ([`Parsed::Incomplete`]) is a different outcome from
//! "this is an error" ([`Parsed::Reject`]), which is different again from
//! "this stream can no longer be framed" ([`Parsed::Fatal`]): only the last
//! closes the connection.
//!
//! Every length that comes off the wire is bounded before it is used: request
//! lines by [`MAX_LINE`], data blocks by the configured message size limit,
//! and all arithmetic on them is checked.

use smallvec::SmallVec;

/// Longest request line we wait for before giving up on the stream.
pub const MAX_LINE: usize = 8 * 1024;

/// Longest queue name, as memcached's key limit.
pub const MAX_QUEUE_NAME: usize = 250;

/// Longest `exptime` read as seconds from now; anything larger is a Unix
/// time (memcached's rule).
pub const MAX_RELATIVE_EXPTIME: u32 = 30 * 24 * 3600;

/// When a message set with `exptime` at Unix time `now` expires, as Unix
/// seconds: 0 never; up to 30 days, that many seconds from now; larger, a
/// Unix time (one already past expires the message at once, as memcached).
pub fn expiry(exptime: u32, now: u32) -> u32 {
    match exptime {
        0 => 0,
        relative if relative <= MAX_RELATIVE_EXPTIME => now.saturating_add(relative),
        absolute => absolute,
    }
}

/// A request that is well formed and ready to execute.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    /// `set <q> <flags> <exptime> <bytes> [noreply]` + data block.
    Set {
        queue: Vec<u8>,
        flags: u32,
        /// As sent: see [`expiry`].
        exptime: u32,
        body: Vec<u8>,
        noreply: bool,
    },
    /// `get`/`gets <key> [<key> …]`; `with_seq` for `gets`.
    Get { keys: GetKeys, with_seq: bool },
    /// `delete <q> [0] [noreply]`.
    Delete { queue: Vec<u8>, noreply: bool },
    /// `flush <q> [noreply]` (Kestrel): drops the queue's messages, keeps
    /// the queue.
    Flush { queue: Vec<u8>, noreply: bool },
    /// `flush_all [0] [noreply]`: `flush` for every queue.
    FlushAll { noreply: bool },
    /// `stats`.
    Stats,
    /// `stats queue`.
    StatsQueue,
    /// `stats reset`.
    StatsReset,
    /// `version`.
    Version,
    /// `verbosity <n> [noreply]`: the log level (see `crate::logging`).
    Verbosity { level: u32, noreply: bool },
    /// `quit`.
    Quit,
    /// `reload` (Kestrel): read the per-queue limits again.
    Reload,
    /// `shutdown` (Kestrel, memcached): stop as on SIGTERM, if enabled.
    Shutdown,
}

/// One key of a `get`: a queue name and the options after it, Kestrel's
/// way (`q/t=500`, `q/close/open`).
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct GetKey {
    /// The key as the client sent it: a `VALUE` line echoes it, as client
    /// libraries match replies to the keys they asked for.
    pub key: Vec<u8>,
    pub queue: Vec<u8>,
    /// `/t=<ms>`: wait up to this long for a message instead of answering
    /// `END` at once.
    pub wait: Option<std::time::Duration>,
    /// `/open`: a reliable read; the message stays this connection's until
    /// it confirms it (`/close`) or puts it back (`/abort`, or by going
    /// away).
    pub open: bool,
    /// `/close`: confirm the message this connection holds open on the
    /// queue (before `/open` takes the next, when both are given).
    pub close: bool,
    /// `/abort`: put the open message back at the head of the queue.
    pub abort: bool,
    /// `/peek`: the head, left queued.
    pub peek: bool,
}

impl GetKey {
    /// Splits `key` at its first `/` into the queue name and its options.
    /// Each option may appear once, in any order; as in Kestrel, `/peek`
    /// and `/abort` combine with neither `/open`, `/close` nor each other.
    fn parse(key: &[u8]) -> Result<GetKey, Reject> {
        let mut parts = key.split(|&b| b == b'/');
        let queue = parts.next().unwrap_or_default();
        if !valid_queue_name(queue) || !valid_key(key) {
            return Err(Reject::BadQueueName);
        }
        let mut k = GetKey {
            key: key.to_vec(),
            queue: queue.to_vec(),
            ..GetKey::default()
        };
        for option in parts {
            let flag = match option {
                b"open" => &mut k.open,
                b"close" => &mut k.close,
                b"abort" => &mut k.abort,
                b"peek" => &mut k.peek,
                _ => match option.strip_prefix(b"t=").map(parse_u32) {
                    Some(Some(ms)) if k.wait.is_none() => {
                        k.wait = Some(std::time::Duration::from_millis(ms.into()));
                        continue;
                    }
                    _ => return Err(Reject::BadGetOption),
                },
            };
            if std::mem::replace(flag, true) {
                return Err(Reject::BadGetOption);
            }
        }
        if (k.peek || k.abort) && (k.open || k.close || k.peek && k.abort) {
            return Err(Reject::BadGetOption);
        }
        Ok(k)
    }

    /// Whether this key takes a message (`/close` and `/abort` alone only
    /// act on the open one and answer `END`).
    pub fn takes(&self) -> bool {
        !self.abort && (self.open || !self.close)
    }
}

/// An error reply that leaves the connection usable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reject {
    /// Unknown or unsupported command, or an empty line: `ERROR`.
    Error,
    /// `CLIENT_ERROR bad command line format`.
    BadFormat,
    /// `CLIENT_ERROR bad queue name`.
    BadQueueName,
    /// `CLIENT_ERROR bad data chunk`.
    BadDataChunk,
    /// `SERVER_ERROR object too large for cache`.
    TooLarge,
    /// A `get` option mcqd does not know, or one given twice.
    BadGetOption,
}

impl Reject {
    /// The reply line, without its `\r\n`.
    pub fn line(self) -> &'static str {
        match self {
            Reject::Error => "ERROR",
            Reject::BadFormat => "CLIENT_ERROR bad command line format",
            Reject::BadQueueName => "CLIENT_ERROR bad queue name",
            Reject::BadDataChunk => "CLIENT_ERROR bad data chunk",
            Reject::TooLarge => "SERVER_ERROR object too large for cache",
            Reject::BadGetOption => {
                "CLIENT_ERROR bad get option (mcqd knows /t=<ms> /open /close /abort /peek, each once; /peek and /abort go without /open and /close)"
            }
        }
    }
}

/// What [`parse`] found at the front of the buffer.
#[derive(Debug, PartialEq, Eq)]
pub enum Parsed {
    /// No whole frame yet: read more bytes and call again. (A connection
    /// reads a large `set`'s data block into a buffer of its own: see
    /// [`pending_set`].)
    Incomplete,
    /// A request; `consumed` bytes of the buffer belong to it.
    Command { command: Command, consumed: usize },
    /// A request that gets an error reply. `consumed` bytes are used up now,
    /// and `skip` more bytes (a data block that will not be stored, maybe not
    /// yet received) must be discarded as they arrive.
    Reject {
        reject: Reject,
        consumed: usize,
        skip: u64,
    },
    /// The stream cannot be framed any more: send this line, then close.
    Fatal(&'static str),
}

/// A `set` whose line is in but whose data block is still arriving: what a
/// connection needs to read the block into a buffer of its own, rather than
/// into its input buffer and then copy it out (see [`pending_set`]).
#[derive(Debug, PartialEq, Eq)]
pub struct SetHead {
    pub queue: Vec<u8>,
    pub flags: u32,
    pub exptime: u32,
    /// Body length (the data block is two bytes more: its `\r\n`).
    pub bytes: usize,
    pub noreply: bool,
    /// Length of the line, its `\n` included: the block starts there.
    pub line_len: usize,
}

/// `Some` when `buf` starts with a well-formed `set` line that [`parse`]
/// would store, and its data block is not all in `buf` yet.
pub fn pending_set(buf: &[u8], max_body: usize) -> Option<SetHead> {
    let (line_len, tokens) = first_line(buf)?;
    let (&b"set", args) = tokens.split_first()? else {
        return None;
    };
    let head = set_head(line_len, args, max_body).ok()?;
    (buf.len() < head.line_len + head.bytes + 2).then_some(head)
}

/// The first line of `buf`, if all of it is in (within [`MAX_LINE`]): its
/// length with its `\n`, and its tokens.
fn first_line(buf: &[u8]) -> Option<(usize, Tokens<'_>)> {
    let nl = memchr(b'\n', &buf[..buf.len().min(MAX_LINE + 1)])?;
    let line = buf[..nl].strip_suffix(b"\r").unwrap_or(&buf[..nl]);
    let tokens = line.split(|&b| b == b' ').filter(|t| !t.is_empty());
    Some((nl + 1, tokens.collect()))
}

/// A line's tokens: held inline up to the eight that every command but a
/// long multi-key `get` fits in, so parsing a request allocates nothing
/// for them.
type Tokens<'a> = SmallVec<[&'a [u8]; 8]>;

/// A `get`'s keys: one, nearly always, held inline.
pub type GetKeys = SmallVec<[GetKey; 1]>;

/// Parses the first request in `buf`. `max_body` is the message size limit
/// (`-B`).
pub fn parse(buf: &[u8], max_body: usize) -> Parsed {
    let Some((line_len, tokens)) = first_line(buf) else {
        return if buf.len() > MAX_LINE {
            Parsed::Fatal("CLIENT_ERROR line too long")
        } else {
            Parsed::Incomplete
        };
    };
    let reject = |reject| Parsed::Reject {
        reject,
        consumed: line_len,
        skip: 0,
    };
    let command = |command| Parsed::Command {
        command,
        consumed: line_len,
    };
    let Some((&verb, args)) = tokens.split_first() else {
        return reject(Reject::Error);
    };
    match verb {
        b"set" => parse_set(&buf[line_len..], line_len, args, max_body),
        // memcached's other storage commands mean nothing for a queue, but
        // their data block is framed like `set`'s: it is discarded so the
        // client gets one reply and stays in sync.
        b"add" | b"replace" | b"append" | b"prepend" | b"cas" => match block_len(args) {
            Some(block) => Parsed::Reject {
                reject: Reject::Error,
                consumed: line_len,
                skip: block,
            },
            None => Parsed::Fatal(Reject::BadFormat.line()),
        },
        b"get" | b"gets" => {
            if args.is_empty() {
                return reject(Reject::Error);
            }
            match args.iter().map(|k| GetKey::parse(k)).collect() {
                Ok(keys) => command(Command::Get {
                    keys,
                    with_seq: verb == b"gets",
                }),
                Err(r) => reject(r),
            }
        }
        b"delete" => {
            let (rest, noreply) = strip_noreply(args);
            let queue = match rest {
                [q] | [q, b"0"] => q,
                _ => return reject(Reject::BadFormat),
            };
            if !valid_queue_name(queue) {
                return reject(Reject::BadQueueName);
            }
            command(Command::Delete {
                queue: queue.to_vec(),
                noreply,
            })
        }
        b"flush" => {
            let (rest, noreply) = strip_noreply(args);
            let [queue] = rest else {
                return reject(Reject::BadFormat);
            };
            if !valid_queue_name(queue) {
                return reject(Reject::BadQueueName);
            }
            command(Command::Flush {
                queue: queue.to_vec(),
                noreply,
            })
        }
        // memcached's optional delay: only "now" means anything here.
        b"flush_all" => match strip_noreply(args) {
            ([] | [b"0"], noreply) => command(Command::FlushAll { noreply }),
            _ => reject(Reject::BadFormat),
        },
        b"stats" => match args {
            [] => command(Command::Stats),
            [b"queue"] => command(Command::StatsQueue),
            [b"reset"] => command(Command::StatsReset),
            _ => reject(Reject::Error),
        },
        b"version" if args.is_empty() => command(Command::Version),
        b"verbosity" => match strip_noreply(args) {
            ([level], noreply) => match parse_u32(level) {
                Some(level) => command(Command::Verbosity { level, noreply }),
                None => reject(Reject::Error),
            },
            _ => reject(Reject::Error),
        },
        b"quit" => command(Command::Quit),
        b"reload" if args.is_empty() => command(Command::Reload),
        b"shutdown" if args.is_empty() => command(Command::Shutdown),
        _ => reject(Reject::Error),
    }
}

/// The data block (with its `\r\n`) that follows a storage command's line,
/// when the line says how long it is: the `<bytes>` field, fourth after the
/// verb in `set`, `add`, … and `cas` alike. `None` when it is missing or
/// not a decimal u64: the stream can then no longer be framed.
fn block_len(args: &[&[u8]]) -> Option<u64> {
    parse_u64(args.get(3)?)?.checked_add(2)
}

/// A `set` line (`args`, `line_len` bytes with its `\n`) that is to be
/// stored, or the reply to it.
fn set_head(line_len: usize, args: &[&[u8]], max_body: usize) -> Result<SetHead, Parsed> {
    // The length comes first: once it is known, a request we refuse still
    // has its data block discarded, so it gets one reply and the next
    // request is read from the right place. Without it, whatever follows
    // would be the client's data read as commands: close instead.
    let Some(block) = block_len(args) else {
        return Err(Parsed::Fatal(Reject::BadFormat.line()));
    };
    let refuse = |reject| {
        Err(Parsed::Reject {
            reject,
            consumed: line_len,
            skip: block,
        })
    };
    let (fields, noreply) = strip_noreply(args);
    let [queue, flags, exptime, _] = fields else {
        return refuse(Reject::BadFormat);
    };
    let (Some(flags), Some(exptime)) = (parse_u32(flags), parse_u32(exptime)) else {
        return refuse(Reject::BadFormat);
    };
    if !valid_queue_name(queue) {
        return refuse(Reject::BadQueueName);
    }
    let bytes = block - 2;
    if bytes > max_body as u64 {
        return refuse(Reject::TooLarge);
    }
    // bytes <= max_body, a usize, so the conversion cannot fail.
    Ok(SetHead {
        queue: queue.to_vec(),
        flags,
        exptime,
        bytes: bytes as usize,
        noreply,
        line_len,
    })
}

/// `set`: the line is `args`; `data` is everything after the line.
fn parse_set(data: &[u8], line_len: usize, args: &[&[u8]], max_body: usize) -> Parsed {
    let head = match set_head(line_len, args, max_body) {
        Ok(head) => head,
        Err(reply) => return reply,
    };
    let SetHead {
        queue,
        flags,
        exptime,
        bytes,
        noreply,
        ..
    } = head;
    // bytes <= max_body, a usize, so the sum cannot overflow.
    let block = bytes + 2;
    if data.len() < block {
        return Parsed::Incomplete;
    }
    let consumed = line_len + block;
    if &data[bytes..block] != b"\r\n" {
        return Parsed::Reject {
            reject: Reject::BadDataChunk,
            consumed,
            skip: 0,
        };
    }
    Parsed::Command {
        command: Command::Set {
            queue,
            flags,
            exptime,
            body: data[..bytes].to_vec(),
            noreply,
        },
        consumed,
    }
}

/// The `set` of `head`, its data block read whole (`block`: the body and
/// its `\r\n`) into a buffer of its own: the command, or the reply to a
/// block without its `\r\n` (the connection carries on, as after
/// [`parse`]'s `Reject` of one).
pub fn finish_set(head: SetHead, mut block: Vec<u8>) -> Result<Command, Reject> {
    if block.len() != head.bytes + 2 || !block.ends_with(b"\r\n") {
        return Err(Reject::BadDataChunk);
    }
    block.truncate(head.bytes);
    Ok(Command::Set {
        queue: head.queue,
        flags: head.flags,
        exptime: head.exptime,
        body: block,
        noreply: head.noreply,
    })
}

fn strip_noreply<'a, 'b>(args: &'a [&'b [u8]]) -> (&'a [&'b [u8]], bool) {
    match args.split_last() {
        Some((&b"noreply", rest)) => (rest, true),
        _ => (args, false),
    }
}

/// A queue name: a memcache key (see [`valid_key`]) without `/`, which
/// starts a `get`'s options (Kestrel's `get q/t=500`). `+` is allowed: it
/// names a fan-out child.
pub fn valid_queue_name(name: &[u8]) -> bool {
    valid_key(name) && !name.contains(&b'/')
}

/// A memcache key as memcached takes it: 1–250 bytes, any but the space
/// that separates tokens, the CR and LF that end the line and NUL. Binary
/// keys are fine (memaslap's start with 8 binary bytes).
fn valid_key(name: &[u8]) -> bool {
    (1..=MAX_QUEUE_NAME).contains(&name.len())
        && !name.iter().any(|b| matches!(b, b' ' | b'\r' | b'\n' | 0))
}

/// A decimal u32: digits only (no sign), no overflow.
fn parse_u32(token: &[u8]) -> Option<u32> {
    u32::try_from(parse_u64(token)?).ok()
}

/// A decimal u64: digits only (no sign), no overflow.
fn parse_u64(token: &[u8]) -> Option<u64> {
    if token.is_empty() || token.len() > 20 || !token.iter().all(u8::is_ascii_digit) {
        return None;
    }
    token.iter().try_fold(0u64, |acc, &d| {
        acc.checked_mul(10)?.checked_add(u64::from(d - b'0'))
    })
}

fn memchr(needle: u8, haystack: &[u8]) -> Option<usize> {
    haystack.iter().position(|&b| b == needle)
}

/// Reply encoders. Each appends to `out`, so one connection's replies to a
/// whole pipeline go out in one write.
pub mod reply {
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_set_whose_block_is_arriving_reads_it_into_its_own_buffer() {
        let max = 1 << 20;
        let head = pending_set(b"set q 7 9 10 noreply\r\nabc", max).unwrap();
        assert_eq!(
            head,
            SetHead {
                queue: b"q".to_vec(),
                flags: 7,
                exptime: 9,
                bytes: 10,
                noreply: true,
                line_len: 22,
            }
        );
        // What parse makes of the whole frame, finish_set makes of the block.
        let whole = b"set q 7 9 10 noreply\r\n0123456789\r\n";
        let Parsed::Command { command, .. } = parse(whole, max) else {
            panic!("a whole set");
        };
        let block = whole[head.line_len..].to_vec();
        assert_eq!(finish_set(head, block), Ok(command));
        // A block without its \r\n: the reply parse gives too.
        let head = pending_set(b"set q 0 0 3\r\n", max).unwrap();
        assert_eq!(
            finish_set(head, b"abcXY".to_vec()),
            Err(Reject::BadDataChunk)
        );
        assert!(matches!(
            parse(b"set q 0 0 3\r\nabcXY", max),
            Parsed::Reject {
                reject: Reject::BadDataChunk,
                ..
            }
        ));
        // Not pending: whole already, refused, not a set, no line yet.
        assert_eq!(pending_set(whole, max), None);
        assert_eq!(pending_set(b"set q 0 0 2000000\r\nab", max), None);
        assert_eq!(pending_set(b"set q/x 0 0 10\r\nab", max), None);
        assert_eq!(pending_set(b"get q\r\n", max), None);
        assert_eq!(pending_set(b"set q 0 0 10", max), None);
    }

    const MAX: usize = 1024;

    fn cmd(input: &[u8]) -> Command {
        match parse(input, MAX) {
            Parsed::Command { command, consumed } => {
                assert_eq!(consumed, input.len(), "whole input consumed");
                command
            }
            other => panic!("expected a command, got {other:?}"),
        }
    }

    fn rejected(input: &[u8]) -> (Reject, usize, u64) {
        match parse(input, MAX) {
            Parsed::Reject {
                reject,
                consumed,
                skip,
            } => (reject, consumed, skip),
            other => panic!("expected a rejection, got {other:?}"),
        }
    }

    #[test]
    fn set_with_binary_body() {
        let body = b"a\r\nEND\r\n\0z";
        let mut input = format!("set q4 7 0 {}\r\n", body.len()).into_bytes();
        input.extend_from_slice(body);
        input.extend_from_slice(b"\r\n");
        assert_eq!(
            cmd(&input),
            Command::Set {
                queue: b"q4".to_vec(),
                flags: 7,
                exptime: 0,
                body: body.to_vec(),
                noreply: false
            }
        );
    }

    #[test]
    fn exptime_as_memcached_reads_it() {
        let now = 1_800_000_000;
        assert_eq!(expiry(0, now), 0);
        assert_eq!(expiry(1, now), now + 1);
        assert_eq!(
            expiry(MAX_RELATIVE_EXPTIME, now),
            now + MAX_RELATIVE_EXPTIME
        );
        assert_eq!(
            expiry(MAX_RELATIVE_EXPTIME + 1, now),
            MAX_RELATIVE_EXPTIME + 1
        );
        assert_eq!(expiry(now + 5, now), now + 5);
        assert_eq!(expiry(5, u32::MAX), u32::MAX);
    }

    #[test]
    fn set_noreply_bare_newline_and_many_spaces() {
        assert_eq!(
            cmd(b"set  q  1 60 2   noreply\nhi\r\n"),
            Command::Set {
                queue: b"q".to_vec(),
                flags: 1,
                exptime: 60,
                body: b"hi".to_vec(),
                noreply: true
            }
        );
    }

    #[test]
    fn set_waits_for_the_whole_block() {
        let input = b"set q 0 0 5\r\nhello\r\n";
        for cut in 0..input.len() {
            assert_eq!(
                parse(&input[..cut], MAX),
                Parsed::Incomplete,
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn set_without_a_readable_length_closes() {
        for line in [
            &b"set q 0 0\r\n"[..],
            b"set q 0 0 x\r\n",
            b"set q 0 0 -5\r\n",
            b"set q 0 0 99999999999999999999\r\n",
            b"set q 0 0 18446744073709551615\r\n",
            b"set\r\n",
            b"add q 0 0\r\n",
            b"cas q 0 0 z 1\r\n",
        ] {
            assert_eq!(
                parse(line, MAX),
                Parsed::Fatal("CLIENT_ERROR bad command line format"),
                "{line:?}"
            );
        }
    }

    #[test]
    fn set_malformed_lines_discard_the_block() {
        for line in [
            &b"set q -1 0 5\r\n"[..],
            b"set q 4294967296 0 5\r\n",
            b"set q 0 4294967296 5\r\n",
            b"set q x 0 5\r\n",
            b"set q 0 0 5 norepl\r\n",
            b"set q 0 0 5 1 noreply\r\n",
        ] {
            let (reject, consumed, skip) = rejected(line);
            assert_eq!((reject, consumed, skip), (Reject::BadFormat, line.len(), 7));
        }
    }

    #[test]
    fn unsupported_storage_commands_discard_the_block() {
        for line in [
            &b"add q 0 0 5\r\n"[..],
            b"replace q 0 0 5\r\n",
            b"append q 0 0 5 noreply\r\n",
            b"prepend q 0 0 5\r\n",
            b"cas q 0 0 5 77\r\n",
            b"add q/x 99999999999 x 5\r\n",
        ] {
            let (reject, consumed, skip) = rejected(line);
            assert_eq!((reject, consumed, skip), (Reject::Error, line.len(), 7));
        }
    }

    #[test]
    fn set_bad_name_discards_the_block() {
        let (reject, consumed, skip) = rejected(b"set a/b 0 0 5\r\n");
        assert_eq!((reject, consumed, skip), (Reject::BadQueueName, 15, 7));
        let long = format!("set {} 0 0 1\r\n", "x".repeat(251));
        assert_eq!(
            rejected(long.as_bytes()),
            (Reject::BadQueueName, long.len(), 3)
        );
        assert_eq!(rejected(b"set a\0b 0 0 1\r\n").0, Reject::BadQueueName);
        assert_eq!(rejected(b"set a\rb 0 0 1\r\n").0, Reject::BadQueueName);
    }

    #[test]
    fn binary_names() {
        let name = b"\x10\x11\x7f\xff\x01\t+q\x80";
        let mut input = b"set ".to_vec();
        input.extend_from_slice(name);
        input.extend_from_slice(b" 0 0 1\r\nx\r\n");
        match cmd(&input) {
            Command::Set { queue, .. } => assert_eq!(queue, name),
            other => panic!("{other:?}"),
        }
        let mut get = b"get ".to_vec();
        get.extend_from_slice(name);
        get.extend_from_slice(b"/t=5\r\n");
        match cmd(&get) {
            Command::Get { keys, .. } => assert_eq!(keys[0].queue, name),
            other => panic!("{other:?}"),
        }
        let max = vec![0xffu8; MAX_QUEUE_NAME];
        assert!(valid_queue_name(&max));
        assert!(!valid_queue_name(&max[..0]));
    }

    #[test]
    fn set_too_large_discards_the_block() {
        let (reject, consumed, skip) = rejected(b"set q 0 0 1025\r\n");
        assert_eq!((reject, consumed, skip), (Reject::TooLarge, 16, 1027));
        let (reject, _, skip) = rejected(b"set q 0 0 4294967295\r\n");
        assert_eq!((reject, skip), (Reject::TooLarge, 4294967297));
    }

    #[test]
    fn set_bad_terminator() {
        let (reject, consumed, skip) = rejected(b"set q 0 0 2\r\nhiXY");
        assert_eq!((reject, consumed, skip), (Reject::BadDataChunk, 17, 0));
    }

    fn key(k: &str, q: &str, wait_ms: Option<u64>) -> GetKey {
        GetKey {
            key: k.as_bytes().to_vec(),
            queue: q.as_bytes().to_vec(),
            wait: wait_ms.map(std::time::Duration::from_millis),
            ..GetKey::default()
        }
    }

    #[test]
    fn get_and_gets() {
        assert_eq!(
            cmd(b"get a b a\r\n"),
            Command::Get {
                keys: smallvec::smallvec![
                    key("a", "a", None),
                    key("b", "b", None),
                    key("a", "a", None)
                ],
                with_seq: false
            }
        );
        assert_eq!(
            cmd(b"gets a\r\n"),
            Command::Get {
                keys: smallvec::smallvec![key("a", "a", None)],
                with_seq: true
            }
        );
        assert_eq!(rejected(b"get\r\n").0, Reject::Error);
        assert_eq!(rejected(b"get a\0b\r\n").0, Reject::BadQueueName);
        assert_eq!(rejected(b"get /t=5\r\n").0, Reject::BadQueueName);
    }

    #[test]
    fn get_options() {
        assert_eq!(
            cmd(b"get q/t=500 r\r\n"),
            Command::Get {
                keys: smallvec::smallvec![key("q/t=500", "q", Some(500)), key("r", "r", None)],
                with_seq: false
            }
        );
        assert_eq!(
            cmd(b"get q/t=0\r\n"),
            Command::Get {
                keys: smallvec::smallvec![key("q/t=0", "q", Some(0))],
                with_seq: false
            }
        );
        for bad in [
            &b"get q/t=\r\n"[..],
            b"get q/t=-1\r\n",
            b"get q/t=99999999999\r\n",
            b"get q/t=5/t=6\r\n",
            b"get q/x\r\n",
            b"get q/\r\n",
            b"get ok q/t=5/bogus\r\n",
            b"get q/open/open\r\n",
            b"get q/peek/open\r\n",
            b"get q/close/abort\r\n",
            b"get q/peek/abort\r\n",
            b"get q/OPEN\r\n",
        ] {
            assert_eq!(rejected(bad).0, Reject::BadGetOption, "{bad:?}");
        }
    }

    #[test]
    fn reliable_read_options() {
        let one = |line: &[u8]| match cmd(line) {
            Command::Get { mut keys, .. } => keys.remove(0),
            other => panic!("{other:?}"),
        };
        let k = one(b"get q/close/t=500/open\r\n");
        assert_eq!(k.queue, b"q");
        assert_eq!(k.key, b"q/close/t=500/open");
        assert!(k.open && k.close && !k.abort && !k.peek && k.takes());
        assert_eq!(k.wait, Some(std::time::Duration::from_millis(500)));
        assert!(!one(b"get q/close\r\n").takes());
        assert!(!one(b"get q/abort\r\n").takes());
        assert!(one(b"get q/peek/t=5\r\n").takes());
        assert!(one(b"get q/open\r\n").takes());
    }

    #[test]
    fn flush_forms() {
        assert_eq!(
            cmd(b"flush q\r\n"),
            Command::Flush {
                queue: b"q".to_vec(),
                noreply: false
            }
        );
        assert_eq!(
            cmd(b"flush q noreply\r\n"),
            Command::Flush {
                queue: b"q".to_vec(),
                noreply: true
            }
        );
        assert_eq!(cmd(b"flush_all\r\n"), Command::FlushAll { noreply: false });
        assert_eq!(
            cmd(b"flush_all 0 noreply\r\n"),
            Command::FlushAll { noreply: true }
        );
        assert_eq!(rejected(b"flush\r\n").0, Reject::BadFormat);
        assert_eq!(rejected(b"flush a b\r\n").0, Reject::BadFormat);
        assert_eq!(rejected(b"flush a/b\r\n").0, Reject::BadQueueName);
        assert_eq!(rejected(b"flush_all 10\r\n").0, Reject::BadFormat);
    }

    #[test]
    fn delete_forms() {
        let del = |noreply| Command::Delete {
            queue: b"q".to_vec(),
            noreply,
        };
        assert_eq!(cmd(b"delete q\r\n"), del(false));
        assert_eq!(cmd(b"delete q noreply\r\n"), del(true));
        assert_eq!(cmd(b"delete q 0\r\n"), del(false));
        assert_eq!(rejected(b"delete\r\n").0, Reject::BadFormat);
        assert_eq!(rejected(b"delete q 5\r\n").0, Reject::BadFormat);
        assert_eq!(rejected(b"delete q/x\r\n").0, Reject::BadQueueName);
    }

    #[test]
    fn small_commands() {
        assert_eq!(cmd(b"stats\r\n"), Command::Stats);
        assert_eq!(cmd(b"stats queue\r\n"), Command::StatsQueue);
        assert_eq!(cmd(b"stats reset\r\n"), Command::StatsReset);
        assert_eq!(cmd(b"version\r\n"), Command::Version);
        assert_eq!(
            cmd(b"verbosity 1\r\n"),
            Command::Verbosity {
                level: 1,
                noreply: false
            }
        );
        assert_eq!(
            cmd(b"verbosity 1 noreply\r\n"),
            Command::Verbosity {
                level: 1,
                noreply: true
            }
        );
        assert_eq!(cmd(b"quit\r\n"), Command::Quit);
        for line in [
            &b"\r\n"[..],
            b"stats items\r\n",
            b"verbosity\r\n",
            b"SET q 0 0 1\r\n",
            b"incr q 1\r\n",
            b"touch q 0\r\n",
        ] {
            assert_eq!(rejected(line).0, Reject::Error, "{line:?}");
        }
    }

    #[test]
    fn line_limit() {
        let mut long = vec![b'a'; MAX_LINE];
        assert_eq!(parse(&long, MAX), Parsed::Incomplete);
        long.push(b'a');
        assert_eq!(
            parse(&long, MAX),
            Parsed::Fatal("CLIENT_ERROR line too long")
        );
        // A line of exactly MAX_LINE bytes plus its newline is still a line.
        let mut ok = b"get ".to_vec();
        ok.resize(MAX_LINE, b'q');
        ok.push(b'\n');
        assert_eq!(rejected(&ok).0, Reject::BadQueueName);
    }

    #[test]
    fn replies() {
        let mut out = Vec::new();
        reply::value(&mut out, b"q4", 0, None, b"hello");
        reply::value(&mut out, b"q", 3, Some(9), b"");
        reply::line(&mut out, "END");
        assert_eq!(
            out,
            b"VALUE q4 0 5\r\nhello\r\nVALUE q 3 0 9\r\n\r\nEND\r\n"
        );
    }

    mod prop {
        use super::super::*;
        use proptest::prelude::*;

        /// Splits `input` at `cuts` and feeds it the way a connection does,
        /// returning what the parser produced.
        fn feed(input: &[u8], cuts: &[usize]) -> Vec<String> {
            let mut out = Vec::new();
            let mut buf = Vec::new();
            let mut skip = 0u64;
            let mut fed = 0;
            let mut points: Vec<usize> = cuts.iter().map(|c| c % (input.len() + 1)).collect();
            points.push(input.len());
            points.sort_unstable();
            for point in points {
                buf.extend_from_slice(&input[fed..point.max(fed)]);
                fed = fed.max(point);
                loop {
                    if skip > 0 {
                        let n = skip.min(buf.len() as u64) as usize;
                        buf.drain(..n);
                        skip -= n as u64;
                        if skip > 0 {
                            break;
                        }
                    }
                    match parse(&buf, 64) {
                        Parsed::Incomplete => break,
                        Parsed::Command { command, consumed } => {
                            assert!(consumed > 0 && consumed <= buf.len());
                            buf.drain(..consumed);
                            out.push(format!("{command:?}"));
                        }
                        Parsed::Reject {
                            reject,
                            consumed,
                            skip: s,
                        } => {
                            assert!(consumed > 0 && consumed <= buf.len());
                            buf.drain(..consumed);
                            skip = s;
                            out.push(reject.line().to_string());
                        }
                        Parsed::Fatal(line) => {
                            out.push(line.to_string());
                            return out;
                        }
                    }
                }
            }
            out
        }

        /// A queue name of any bytes a key may hold, `/` excepted.
        fn name() -> impl Strategy<Value = Vec<u8>> {
            proptest::collection::vec(
                any::<u8>().prop_filter("a key byte", |b| {
                    !matches!(b, b' ' | b'\r' | b'\n' | 0 | b'/')
                }),
                1..6,
            )
        }

        fn with_block(line: Vec<u8>, body: &[u8]) -> Vec<u8> {
            let mut r = line;
            r.extend_from_slice(body);
            r.extend_from_slice(b"\r\n");
            r
        }

        /// Requests that each get exactly one reply line or value.
        fn request() -> impl Strategy<Value = Vec<u8>> {
            let body = || proptest::collection::vec(any::<u8>(), 0..80);
            prop_oneof![
                (name(), any::<u32>(), body()).prop_map(|(q, f, body)| {
                    let rest = format!(" {f} 0 {}\r\n", body.len());
                    with_block([&b"set "[..], &q, rest.as_bytes()].concat(), &body)
                }),
                name().prop_map(|q| [&b"get "[..], &q, b"\r\n"].concat()),
                name().prop_map(|q| [&b"delete "[..], &q, b"\r\n"].concat()),
                Just(b"stats queue\r\n".to_vec()),
                Just(b"bogus\r\n".to_vec()),
                // Refused, with a readable length: the block goes too.
                (
                    prop_oneof![
                        Just("set q 4294967296 0"),
                        Just("set q 0 -1"),
                        Just("set a/b 0 0"),
                        Just("set q x 0"),
                        Just("add q 0 0"),
                        Just("replace q 0 0"),
                        Just("append q 0 0"),
                        Just("prepend q 0 0"),
                    ],
                    body()
                )
                    .prop_map(|(head, body)| {
                        with_block(format!("{head} {}\r\n", body.len()).into_bytes(), &body)
                    }),
                body().prop_map(|body| {
                    with_block(
                        format!("cas q 0 0 {} 9\r\n", body.len()).into_bytes(),
                        &body,
                    )
                }),
                // Over the limit (64 in `feed`).
                proptest::collection::vec(any::<u8>(), 65..200).prop_map(|body| {
                    with_block(format!("set q 0 0 {}\r\n", body.len()).into_bytes(), &body)
                }),
            ]
        }

        proptest! {
            #[test]
            fn random_bytes_never_panic(
                input in proptest::collection::vec(any::<u8>(), 0..600),
                cuts in proptest::collection::vec(any::<usize>(), 0..6),
            ) {
                feed(&input, &cuts);
            }

            #[test]
            fn random_garbage_with_commands_never_panic(
                parts in proptest::collection::vec(
                    prop_oneof![request(), proptest::collection::vec(any::<u8>(), 0..20)], 0..20),
                cuts in proptest::collection::vec(any::<usize>(), 0..6),
            ) {
                feed(&parts.concat(), &cuts);
            }

            #[test]
            fn splits_do_not_change_the_result(
                requests in proptest::collection::vec(request(), 1..30),
                cuts in proptest::collection::vec(any::<usize>(), 0..20),
            ) {
                let input = requests.concat();
                let whole = feed(&input, &[]);
                prop_assert_eq!(whole.len(), requests.len(), "one answer per request");
                prop_assert_eq!(feed(&input, &cuts), whole);
            }
        }
    }
}
