//! Reliable reads (`get <q>/open`, `/close`, `/abort`, `/peek`, Kestrel's
//! options) against the real server: the replies byte for byte, one open
//! message per connection and queue, open messages going back to the head
//! in order when their connections end (on either executor), blocking
//! opens, a kill -9 with open messages (every unconfirmed message is
//! delivered again exactly once, every confirmed one never), and `flush` /
//! `flush_all`, which leave open messages alone.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use mcq_tests::{Client, Server};

/// Queue names that land on both shards of a two-executor server.
fn queues() -> Vec<String> {
    (0..6).map(|i| format!("rq{i}")).collect()
}

/// Waits (polling `stats`) until the server holds `n` open messages.
fn until_open(c: &mut Client, n: u64) {
    let deadline = Instant::now() + mcq_tests::PATIENCE;
    loop {
        let open: u64 = c.stats()["open_transactions"].parse().unwrap();
        if open == n {
            return;
        }
        assert!(Instant::now() < deadline, "{open} open, want {n}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn value(key: &str, body: &str) -> Vec<u8> {
    format!("VALUE {key} 0 {}\r\n{body}\r\nEND\r\n", body.len()).into_bytes()
}

#[test]
fn open_close_abort_and_peek_over_the_wire() {
    let server = Server::start("reliable-session", &["-t", "2"]);
    let (mut a, mut b) = (server.client(), server.client());
    for q in queues() {
        for i in 0..4 {
            a.set(&q, format!("m{i}").as_bytes());
        }
        let k = |opts: &str| format!("get {q}/{opts}\r\n").into_bytes();
        a.expect(&k("open"), &value(&format!("{q}/open"), "m0"));
        a.expect(
            &k("open"),
            b"CLIENT_ERROR a message is already open on this queue: /close or /abort it first\r\n",
        );
        a.expect(
            format!("get {q}\r\n").as_bytes(),
            b"CLIENT_ERROR a message is open on this queue: /close or /abort it before a plain get\r\n",
        );
        b.expect(&k("open"), &value(&format!("{q}/open"), "m1"));
        b.expect(&k("peek"), &value(&format!("{q}/peek"), "m2"));
        // m1 confirmed while m0 is still open: out of order.
        b.expect(&k("close"), b"END\r\n");
        b.expect(&k("close"), b"END\r\n");
        assert!(b.queue_stats().contains(&(q.clone(), 4, 1)));
        b.expect(
            &k("close/t=10/open"),
            &value(&format!("{q}/close/t=10/open"), "m2"),
        );
        a.expect(&k("abort"), b"END\r\n");
        // Back at the head, ahead of m3.
        a.expect(&k("t=10/open"), &value(&format!("{q}/t=10/open"), "m0"));
        a.expect(&k("close/open"), &value(&format!("{q}/close/open"), "m3"));
        a.expect(&k("close/open"), b"END\r\n");
        b.expect(&k("close"), b"END\r\n");
        assert!(b.queue_stats().contains(&(q.clone(), 4, 4)));
        // `gets` carries the sequence number (the cas field) as for a pop.
        a.set(&q, b"m4");
        a.expect(
            format!("gets {q}/open\r\n").as_bytes(),
            format!("VALUE {q}/open 0 2 4\r\nm4\r\nEND\r\n").as_bytes(),
        );
        a.expect(&k("close"), b"END\r\n");
    }
    a.expect(
        b"get rq0/peek/open\r\n",
        b"CLIENT_ERROR bad get option (mcqd knows /t=<ms> /open /close /abort /peek, each once; /peek and /abort go without /open and /close)\r\n",
    );
    a.expect(b"get nothing/open\r\n", b"END\r\n");
    a.expect(b"get nothing/close\r\n", b"END\r\n");
    until_open(&mut a, 0);
}

#[test]
fn open_messages_go_back_in_order_when_their_connections_end() {
    let server = Server::start("reliable-disconnect", &["-t", "2"]);
    let mut watcher = server.client();
    for q in queues() {
        for i in 0..5 {
            watcher.set(&q, format!("m{i}").as_bytes());
        }
        // Three readers, each holding one (connections land on either
        // executor, the queue on one of them).
        let mut readers: Vec<Client> = (0..3).map(|_| server.client()).collect();
        for (i, r) in readers.iter_mut().enumerate() {
            r.expect(
                format!("get {q}/open\r\n").as_bytes(),
                &value(&format!("{q}/open"), &format!("m{i}")),
            );
        }
        until_open(&mut watcher, 3);
        // Gone in another order than they opened; one only half-closes.
        let last = readers.remove(2);
        drop(last);
        let first = readers.remove(0);
        drop(first);
        let middle = readers.remove(0);
        middle.stream.shutdown(std::net::Shutdown::Write).unwrap();
        until_open(&mut watcher, 0);
        drop(middle);
        let order: Vec<Vec<u8>> = watcher.drain(&q);
        let want: Vec<Vec<u8>> = (0..5).map(|i| format!("m{i}").into_bytes()).collect();
        assert_eq!(order, want, "{q}: back at the head, in their order");
        assert!(watcher.queue_stats().contains(&(q.clone(), 5, 5)));
    }
}

#[test]
fn blocking_opens_are_woken_and_a_vanished_one_takes_nothing() {
    let server = Server::start("reliable-blocking", &["-t", "2"]);
    let mut producer = server.client();
    for q in queues() {
        // A waiter that goes away before the message comes.
        let mut gone = server.client();
        gone.send(format!("get {q}/t=120000/open\r\n").as_bytes());
        let mut waiter = server.client();
        waiter.send(format!("get {q}/t=120000/open\r\n").as_bytes());
        let deadline = Instant::now() + mcq_tests::PATIENCE;
        while producer.stats()["get_waiters"] != "2" {
            assert!(Instant::now() < deadline, "waiters never counted");
            std::thread::sleep(Duration::from_millis(5));
        }
        drop(gone);
        while producer.stats()["get_waiters"] != "1" {
            assert!(Instant::now() < deadline, "the vanished waiter stayed");
            std::thread::sleep(Duration::from_millis(5));
        }
        producer.set(&q, b"one");
        assert_eq!(
            waiter.read_until(b"END\r\n"),
            value(&format!("{q}/t=120000/open"), "one")
        );
        waiter.expect(format!("get {q}/close\r\n").as_bytes(), b"END\r\n");
        assert!(producer.queue_stats().contains(&(q.clone(), 1, 1)));
    }
    until_open(&mut producer, 0);
}

/// Reads `n` messages on `q` with `/close/open` chains (the first a plain
/// `/open` unless `holding` one already); returns what each read got, and
/// leaves the last one open.
fn read_chain(c: &mut Client, q: &str, n: usize, holding: bool) -> Vec<Vec<u8>> {
    let mut got = Vec::new();
    for i in 0..n {
        let opts = if i == 0 && !holding {
            "open"
        } else {
            "close/open"
        };
        c.send(format!("get {q}/{opts}\r\n").as_bytes());
        let reply = c.read_until(b"END\r\n");
        let text = String::from_utf8_lossy(&reply).into_owned();
        let body = text
            .split("\r\n")
            .nth(1)
            .filter(|_| text.starts_with("VALUE"))
            .unwrap_or_else(|| panic!("{q}: read {i} got {text:?}"));
        got.push(body.as_bytes().to_vec());
    }
    got
}

#[test]
fn kill9_redelivers_every_unconfirmed_message_once_and_no_confirmed_one() {
    for sync in ["always", "interval=10"] {
        let mut server = Server::start(
            &format!("reliable-kill9-{}", &sync[..6]),
            &["-t", "2", "--sync", sync],
        );
        let mut producer = server.client();
        let mut all = BTreeSet::new();
        for q in queues() {
            for i in 0..60 {
                let body = format!("{q}-{i}");
                producer.set(&q, body.as_bytes());
                all.insert(body.into_bytes());
            }
        }
        // Per queue: two readers take turns so confirms land out of order;
        // each ends holding one message open.
        let mut confirmed = BTreeSet::new();
        let mut open = BTreeSet::new();
        let mut readers = Vec::new();
        for q in queues() {
            let (mut r1, mut r2) = (server.client(), server.client());
            let first = read_chain(&mut r1, &q, 1, false);
            let chain = read_chain(&mut r2, &q, 20, false);
            let more = read_chain(&mut r1, &q, 11, true);
            // r1's first message was confirmed by its second read, after
            // r2's twenty: out of order. Every read but each reader's last
            // is confirmed.
            confirmed.extend(first);
            confirmed.extend(chain[..19].iter().cloned());
            confirmed.extend(more[..10].iter().cloned());
            open.insert(chain[19].clone());
            open.insert(more[10].clone());
            readers.push(r1);
            readers.push(r2);
        }
        until_open(&mut producer, 2 * queues().len() as u64);
        server.kill9();
        drop(readers);
        server.restart_same_port();
        let mut c = server.client();
        let stats = c.queue_stats();
        let mut after = Vec::new();
        for q in queues() {
            assert!(
                stats.contains(&(q.clone(), 60, 30)),
                "{sync}: {q}: {stats:?}"
            );
            after.extend(c.drain(&q));
        }
        let got: BTreeSet<Vec<u8>> = after.iter().cloned().collect();
        assert_eq!(got.len(), after.len(), "{sync}: nothing delivered twice");
        let want: BTreeSet<Vec<u8>> = all.difference(&confirmed).cloned().collect();
        assert_eq!(got, want, "{sync}: exactly the unconfirmed come back");
        assert!(open.is_subset(&got), "{sync}: the open ones among them");
        server.stop();
    }
}

#[test]
fn flush_and_flush_all_empty_queues_but_keep_them_and_their_open_messages() {
    let server = Server::start("reliable-flush", &["-t", "2"]);
    let mut c = server.client();
    let mut holder = server.client();
    for q in queues() {
        for i in 0..3 {
            c.set(&q, format!("m{i}").as_bytes());
        }
        holder.expect(
            format!("get {q}/open\r\n").as_bytes(),
            &value(&format!("{q}/open"), "m0"),
        );
    }
    let q0 = &queues()[0];
    c.expect(format!("flush {q0}\r\n").as_bytes(), b"END\r\n");
    c.expect(b"flush never-was\r\n", b"END\r\n");
    c.expect(format!("get {q0}\r\n").as_bytes(), b"END\r\n");
    assert!(c.queue_stats().contains(&(q0.clone(), 3, 2)));
    c.expect(b"flush_all\r\n", b"OK\r\n");
    c.send(b"flush_all noreply\r\n");
    c.expect(
        b"flush_all 5\r\n",
        b"CLIENT_ERROR bad command line format\r\n",
    );
    for q in queues() {
        c.expect(format!("get {q}\r\n").as_bytes(), b"END\r\n");
        assert!(c.queue_stats().contains(&(q.clone(), 3, 2)), "{q}");
    }
    // The open messages outlived the flush: put back, they are all there is.
    drop(holder);
    until_open(&mut c, 0);
    for q in queues() {
        assert_eq!(c.drain(&q), vec![b"m0".to_vec()], "{q}");
    }
}

#[test]
fn stats_has_kestrels_per_queue_lines() {
    let server = Server::start("reliable-stats", &["-t", "2"]);
    let mut c = server.client();
    for i in 0..3 {
        c.set("kq", format!("m{i}").as_bytes());
    }
    c.expect(b"set kq 0 2592001 3\r\nold\r\n", b"STORED\r\n");
    let mut holder = server.client();
    holder.expect(b"get kq/open\r\n", &value("kq/open", "m0"));
    c.set("empty", b"x");
    assert_eq!(c.get("empty"), Some(b"x".to_vec()));
    let mut waiter = server.client();
    waiter.send(b"get empty/t=120000\r\n");
    let deadline = Instant::now() + mcq_tests::PATIENCE;
    while c.stats()["get_waiters"] != "1" {
        assert!(Instant::now() < deadline, "the waiter was never counted");
        std::thread::sleep(Duration::from_millis(5));
    }
    let stats = c.stats();
    let kq = |field: &str| stats[&format!("queue_kq_{field}")].clone();
    assert_eq!(kq("items"), "3", "{stats:?}");
    assert_eq!(kq("bytes"), "7");
    assert_eq!(kq("total_items"), "4");
    assert_eq!(kq("open_transactions"), "1");
    assert_eq!(kq("expired_items"), "0");
    let age: u64 = kq("age").parse().unwrap();
    assert!(age < 60_000, "age {age} ms");
    // The expired message is dropped when it reaches the head.
    holder.expect(b"get kq/close/open\r\n", &value("kq/close/open", "m1"));
    holder.expect(b"get kq/close/open\r\n", &value("kq/close/open", "m2"));
    holder.expect(b"get kq/close/open\r\n", b"END\r\n");
    let stats = c.stats();
    assert_eq!(stats["queue_kq_expired_items"], "1");
    assert_eq!(stats["queue_kq_items"], "0");
    assert_eq!(stats["queue_kq_age"], "0");
    assert_eq!(stats["queue_empty_waiters"], "1");
}
