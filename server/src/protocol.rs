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

pub mod reply;

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
    /// `refresh_certs` (memcached): load the TLS certificate files again
    /// for new connections.
    RefreshCerts,
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
        b"refresh_certs" if args.is_empty() => command(Command::RefreshCerts),
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

#[cfg(test)]
#[path = "protocol_tests.rs"]
mod tests;
