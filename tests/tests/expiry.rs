//! Message expiry (`exptime` as memcached reads it) against the real
//! server: a message past its deadline is never handed out, the deadline
//! is kept on disk across a kill -9, and an absolute time in the past
//! expires a message at once.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use mcq_tests::Server;

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

#[test]
fn expired_messages_are_never_handed_out_even_after_a_kill9() {
    let mut server = Server::start("expiry", &["-t", "2"]);
    let mut c = server.client();
    for q in ["eq0", "eq1", "eq2", "eq3"] {
        c.expect(
            format!("set {q} 0 1 5\r\nshort\r\n").as_bytes(),
            b"STORED\r\n",
        );
        c.expect(
            format!("set {q} 0 0 4\r\nkept\r\n").as_bytes(),
            b"STORED\r\n",
        );
        // 30 days is still relative; one second more is a Unix time (1970:
        // long past).
        c.expect(
            format!("set {q} 0 2592001 3\r\nold\r\n").as_bytes(),
            b"STORED\r\n",
        );
        let later = now() + 3600;
        c.expect(
            format!("set {q} 0 {later} 5\r\nlater\r\n").as_bytes(),
            b"STORED\r\n",
        );
        c.expect(
            format!("set {q} 0 2592000 5\r\nmonth\r\n").as_bytes(),
            b"STORED\r\n",
        );
    }
    // Past the one-second deadline, and across a kill -9.
    std::thread::sleep(Duration::from_millis(2100));
    server.kill9();
    server.restart_same_port();
    let mut c = server.client();
    for q in ["eq0", "eq1", "eq2", "eq3"] {
        let got = c.drain(q);
        let want: Vec<Vec<u8>> = ["kept", "later", "month"]
            .iter()
            .map(|b| b.as_bytes().to_vec())
            .collect();
        assert_eq!(got, want, "{q}");
        assert!(c.queue_stats().contains(&(q.to_string(), 5, 5)), "{q}");
    }
}
