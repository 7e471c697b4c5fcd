//! The protocol's tests: every input a client can send, without a socket.

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
    assert_eq!(cmd(b"refresh_certs\r\n"), Command::RefreshCerts);
    for line in [
        &b"\r\n"[..],
        b"refresh_certs now\r\n",
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
