//! Blocking gets (`get <q>/t=<ms>`, Kestrel's option) against the real
//! server: woken by a set on either executor, timing out with `END`, served
//! in arrival order, cancelled by a client that goes away (which then takes
//! nothing), ended by SIGTERM, and keeping pipelined replies in order.

use std::time::{Duration, Instant};

use mcq_tests::{Client, Server};

/// Queue names that land on both shards of a two-executor server.
fn queues() -> Vec<String> {
    (0..8).map(|i| format!("bq{i}")).collect()
}

/// Waits (polling `stats`) until `n` blocking gets are registered: a test
/// that needs a waiter in place before it acts must not guess with sleeps.
fn until_waiters(c: &mut Client, n: u64) {
    let deadline = Instant::now() + mcq_tests::PATIENCE;
    loop {
        let waiting: u64 = c.stats()["get_waiters"].parse().unwrap();
        if waiting == n {
            return;
        }
        assert!(Instant::now() < deadline, "{waiting} waiters, want {n}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// A new connection blocked in `get <q>/t=120000`, once `stats` (read by
/// `watcher`) counts it beside the `before` waiters already there.
fn blocked_get(server: &Server, watcher: &mut Client, q: &str, before: u64) -> Client {
    let mut waiter = server.client();
    waiter.send(format!("get {q}/t=120000\r\n").as_bytes());
    until_waiters(watcher, before + 1);
    waiter
}

#[test]
fn a_set_wakes_a_blocking_get_on_either_executor() {
    let server = Server::start("blocking-wake", &["-t", "2"]);
    let mut producer = server.client();
    for q in queues() {
        let mut waiter = blocked_get(&server, &mut producer, &q, 0);
        producer.set(&q, b"hello");
        assert_eq!(
            waiter.read_until(b"END\r\n"),
            format!("VALUE {q}/t=120000 0 5\r\nhello\r\nEND\r\n").into_bytes(),
            "the reply echoes the key as sent"
        );
        until_waiters(&mut producer, 0);
    }
    // Counters as for a plain get.
    let stats = producer.queue_stats();
    assert!(
        stats.iter().all(|(_, e, d)| (*e, *d) == (1, 1)),
        "{stats:?}"
    );
}

#[test]
fn a_blocking_get_with_a_message_there_answers_at_once_and_times_out_with_end() {
    let server = Server::start("blocking-timeout", &["-t", "2"]);
    let mut c = server.client();
    c.set("tq", b"ready");
    c.expect(
        b"get tq/t=120000\r\n",
        b"VALUE tq/t=120000 0 5\r\nready\r\nEND\r\n",
    );
    let started = Instant::now();
    c.expect(b"get tq/t=200\r\n", b"END\r\n");
    assert!(started.elapsed() >= Duration::from_millis(190), "it waited");
    c.expect(b"get tq/t=0\r\n", b"END\r\n");
    // Unknown options are refused, and the connection stays usable.
    c.expect(
        b"get tq/bogus\r\n",
        b"CLIENT_ERROR bad get option (mcqd knows /t=<ms> /open /close /abort /peek, each once; /peek and /abort go without /open and /close)\r\n",
    );
    c.expect(b"get tq\r\n", b"END\r\n");
}

#[test]
fn waiters_are_served_in_arrival_order() {
    let server = Server::start("blocking-order", &["-t", "2"]);
    let mut producer = server.client();
    for q in ["oq1", "oq2"] {
        let mut waiters: Vec<Client> = (0..4)
            .map(|i| blocked_get(&server, &mut producer, q, i))
            .collect();
        for i in 0..4 {
            producer.set(q, format!("m{i}").as_bytes());
        }
        for (i, w) in waiters.iter_mut().enumerate() {
            assert_eq!(
                w.read_until(b"END\r\n"),
                format!("VALUE {q}/t=120000 0 2\r\nm{i}\r\nEND\r\n").into_bytes()
            );
        }
    }
}

#[test]
fn a_client_that_goes_away_while_waiting_takes_nothing() {
    let server = Server::start("blocking-vanish", &["-t", "2"]);
    let mut c = server.client();
    for q in queues() {
        let waiter = blocked_get(&server, &mut c, &q, 0);
        drop(waiter);
        until_waiters(&mut c, 0);
        c.set(&q, b"kept");
        assert_eq!(c.get(&q).as_deref(), Some(&b"kept"[..]), "{q}");
    }
}

#[test]
fn pipelined_replies_stay_in_order_behind_a_blocking_get() {
    let server = Server::start("blocking-pipeline", &["-t", "2"]);
    let mut c = server.client();
    let mut producer = server.client();
    c.set("pa", b"first");
    c.send(b"get pb/t=120000\r\nget pa\r\n");
    until_waiters(&mut producer, 1);
    producer.set("pb", b"woken");
    assert_eq!(
        c.read_until(b"END\r\n"),
        b"VALUE pb/t=120000 0 5\r\nwoken\r\nEND\r\n"
    );
    assert_eq!(
        c.read_until(b"END\r\n"),
        b"VALUE pa 0 5\r\nfirst\r\nEND\r\n"
    );
}

#[test]
fn sigterm_ends_blocking_gets_with_end() {
    let mut server = Server::start("blocking-sigterm", &["-t", "2"]);
    let mut watcher = server.client();
    let mut waiters: Vec<Client> = queues().iter().map(|_| server.client()).collect();
    for (q, w) in queues().iter().zip(&mut waiters) {
        w.send(format!("get {q}/t=600000\r\n").as_bytes());
    }
    until_waiters(&mut watcher, waiters.len() as u64);
    drop(watcher);
    server.signal(libc::SIGTERM);
    for w in &mut waiters {
        assert_eq!(w.read_until(b"END\r\n"), b"END\r\n");
    }
    drop(waiters);
    assert!(server.wait().success(), "{}", server.log());
}
