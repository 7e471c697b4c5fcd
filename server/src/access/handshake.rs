//! memcached's ASCII authentication handshake, read from the bytes a
//! connection has before it is authenticated. No I/O here, so every byte
//! sequence is testable without a socket.
//!
//! What memcached 1.6 does (`try_read_command_asciiauth`), and so mcqd:
//! - a request line shorter than 6 bytes (`\r` counted, `\n` not), or no
//!   `\n` in the first 2048 bytes: the connection is closed, no reply;
//! - a line that is not `set <key> <flags> <exptime> <bytes> …` (fewer
//!   than five tokens, another command, `<bytes>` not a number): the line
//!   is dropped and answered `CLIENT_ERROR unauthenticated`;
//! - `<bytes>` over 16384: `CLIENT_ERROR auth token too long` (memcached
//!   then reads the data block as commands; mcqd closes the connection
//!   instead, so it never buffers a large block for a stranger);
//! - a data block not ending in `\r\n`:
//!   `CLIENT_ERROR bad command line termination`;
//! - a data block without a space:
//!   `CLIENT_ERROR bad authentication token format`;
//! - else the block is `username password` (split at its first space, so
//!   the password may hold spaces): `STORED` if the authfile has that
//!   user with that password, `CLIENT_ERROR authentication failure` if
//!   not. The key, flags and exptime mean nothing; `noreply` is ignored
//!   (the reply is sent anyway, as memcached does).

/// Longest data block of a handshake `set` (memcached's
/// `MAX_AUTH_REQ_LEN`).
pub const MAX_TOKEN: usize = 16384;
/// Bytes read without a `\n` before the connection is closed (memcached's).
pub const MAX_LINE: usize = 2048;
/// Shortest request line taken (memcached's `MIN_AUTH_REQ_LEN`).
const MIN_LINE: usize = 6;

/// The most an unauthenticated connection buffers: a longest line and a
/// longest data block.
pub const MAX_BUFFER: usize = MAX_LINE + 1 + MAX_TOKEN + 2;

pub const UNAUTHENTICATED: &str = "CLIENT_ERROR unauthenticated";
pub const FAILURE: &str = "CLIENT_ERROR authentication failure";
pub const TOO_LONG: &str = "CLIENT_ERROR auth token too long";
pub const BAD_TERMINATION: &str = "CLIENT_ERROR bad command line termination";
pub const BAD_FORMAT: &str = "CLIENT_ERROR bad authentication token format";

/// What the front of an unauthenticated connection's buffer is.
#[derive(Debug, PartialEq, Eq)]
pub enum Step<'a> {
    /// Not a whole request yet: read more.
    More,
    /// Junk: close the connection without a reply.
    Close,
    /// Answer `line` for the first `consumed` bytes, then close if `close`.
    Reply {
        consumed: usize,
        line: &'static str,
        close: bool,
    },
    /// A handshake: `consumed` bytes that name `user` and `password`.
    Attempt {
        consumed: usize,
        user: &'a [u8],
        password: &'a [u8],
    },
}

pub fn step(buf: &[u8]) -> Step<'_> {
    let Some(nl) = buf[..buf.len().min(MAX_LINE + 1)]
        .iter()
        .position(|&b| b == b'\n')
    else {
        return if buf.len() > MAX_LINE {
            Step::Close
        } else {
            Step::More
        };
    };
    if nl < MIN_LINE {
        return Step::Close;
    }
    let line = buf[..nl].strip_suffix(b"\r").unwrap_or(&buf[..nl]);
    let mut tokens = line.split(|&b| b == b' ').filter(|t| !t.is_empty());
    let verb = tokens.next();
    let size = tokens.nth(3).and_then(number);
    let (Some(b"set"), Some(size)) = (verb, size) else {
        return Step::Reply {
            consumed: nl + 1,
            line: UNAUTHENTICATED,
            close: false,
        };
    };
    if size > MAX_TOKEN as u64 {
        return Step::Reply {
            consumed: nl + 1,
            line: TOO_LONG,
            close: true,
        };
    }
    let size = size as usize;
    let consumed = nl + 1 + size + 2;
    if buf.len() < consumed {
        return Step::More;
    }
    let block = &buf[nl + 1..consumed];
    if !block.ends_with(b"\r\n") {
        return Step::Reply {
            consumed,
            line: BAD_TERMINATION,
            close: false,
        };
    }
    let token = &block[..size];
    let Some(space) = token.iter().position(|&b| b == b' ') else {
        return Step::Reply {
            consumed,
            line: BAD_FORMAT,
            close: false,
        };
    };
    Step::Attempt {
        consumed,
        user: &token[..space],
        password: &token[space + 1..],
    }
}

/// A decimal u32 (memcached reads `<bytes>` as one).
fn number(token: &[u8]) -> Option<u64> {
    if token.is_empty() || token.len() > 10 || !token.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let n: u64 = std::str::from_utf8(token).ok()?.parse().ok()?;
    (n <= u64::from(u32::MAX)).then_some(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(consumed: usize, line: &'static str) -> Step<'static> {
        Step::Reply {
            consumed,
            line,
            close: false,
        }
    }

    #[test]
    fn a_handshake_and_what_follows_it() {
        let buf = b"set auth 0 0 10\r\nalice pass\r\nget q\r\n";
        assert_eq!(
            step(buf),
            Step::Attempt {
                consumed: 29,
                user: b"alice",
                password: b"pass",
            }
        );
        // Every byte short of the block's end: more.
        for end in 0..29 {
            assert_eq!(step(&buf[..end]), Step::More, "{end}");
        }
        // A password with spaces; noreply and any key, flags, exptime.
        assert_eq!(
            step(b"set x 1 2 8 noreply\r\nu p w  d\r\n"),
            Step::Attempt {
                consumed: 31,
                user: b"u",
                password: b"p w  d",
            }
        );
        // An empty password.
        assert_eq!(
            step(b"set x 0 0 2\r\nu \r\n"),
            Step::Attempt {
                consumed: 17,
                user: b"u",
                password: b"",
            }
        );
    }

    #[test]
    fn refusals_as_memcached_answers_them() {
        assert_eq!(step(b"get queue\r\n"), reply(11, UNAUTHENTICATED));
        assert_eq!(step(b"stats\r\n"), reply(7, UNAUTHENTICATED));
        assert_eq!(step(b"set q 0 0\r\n"), reply(11, UNAUTHENTICATED));
        assert_eq!(step(b"set q 0 0 x\r\n"), reply(13, UNAUTHENTICATED));
        assert_eq!(step(b"set q 0 0 3\r\nabcde"), reply(18, BAD_TERMINATION));
        assert_eq!(step(b"set q 0 0 3\r\nabc\r\n"), reply(18, BAD_FORMAT));
        assert_eq!(step(b"set q 0 0 0\r\n\r\n"), reply(15, BAD_FORMAT));
        assert_eq!(
            step(b"set q 0 0 16385\r\n"),
            Step::Reply {
                consumed: 17,
                line: TOO_LONG,
                close: true
            }
        );
        assert_eq!(step(b"set q 0 0 16384\r\n"), Step::More);
        // Short lines and endless ones close.
        assert_eq!(step(b"quit\r\n"), Step::Close);
        assert_eq!(step(b"\r\n"), Step::Close);
        assert_eq!(step(&[b'a'; MAX_LINE]), Step::More);
        assert_eq!(step(&[b'a'; MAX_LINE + 1]), Step::Close);
    }

    proptest::proptest! {
        /// Whatever a stranger sends: no panic, never more consumed than
        /// there is, never more buffered than MAX_BUFFER before an answer.
        #[test]
        fn any_bytes_are_answered_within_bounds(
            size in 0u32..20_000,
            head in proptest::sample::select(vec!["set k 0 0 ", "set k 0 0 x", "get ", "", "set  a b c "]),
            tail in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..20_000),
        ) {
            let mut buf = format!("{head}{size}\r\n").into_bytes();
            buf.extend_from_slice(&tail);
            for end in [buf.len() / 3, buf.len() / 2, buf.len()] {
                let part = &buf[..end];
                match step(part) {
                    Step::More => proptest::prop_assert!(part.len() < MAX_BUFFER),
                    Step::Close => {}
                    Step::Reply { consumed, .. } | Step::Attempt { consumed, .. } => {
                        proptest::prop_assert!(consumed > 0 && consumed <= part.len())
                    }
                }
            }
            let mut random = tail.clone();
            random.truncate(3000);
            let _ = step(&random);
        }
    }
}
