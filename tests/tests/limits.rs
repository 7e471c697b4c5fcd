//! Per-queue limits from the config file, `reload` and SIGHUP, and the
//! `shutdown` command, against the real server.

use mcq_tests::{free_port, run_until_exit, test_dir, Server};

const LIMITS: &str = "\
# flags first, then queue sections
cache-size = 16
[queue capped]
max_items = 2
[queue ring.*]
max_items = 3
discard_old_when_full
";

#[test]
fn limits_refuse_or_discard_and_reload_changes_them() {
    let dir = test_dir("limits-conf");
    let conf = dir.join("mcqd.conf");
    std::fs::write(&conf, LIMITS).unwrap();
    let server = Server::start("limits", &["-t", "2", "-f", conf.to_str().unwrap()]);
    let mut c = server.client();
    c.set("capped", b"1");
    c.set("capped", b"2");
    assert_eq!(c.set_reply("capped", b"3"), b"NOT_STORED\r\n");
    for i in 0..5 {
        c.set("ring.a", format!("r{i}").as_bytes());
    }
    let stats = c.stats();
    assert_eq!(stats["queue_ring.a_items"], "3");
    assert_eq!(stats["queue_ring.a_discarded"], "2");
    assert_eq!(c.get("ring.a"), Some(b"r2".to_vec()), "the two oldest went");
    assert!(c.queue_stats().contains(&("ring.a".to_string(), 5, 3)));

    // `reload` re-reads the file; a broken file keeps what is in force.
    std::fs::write(&conf, "[queue capped]\nmax_items = 3\n").unwrap();
    c.expect(b"reload\r\n", b"Reloaded config.\r\n");
    c.set("capped", b"3");
    assert_eq!(c.set_reply("capped", b"4"), b"NOT_STORED\r\n");
    std::fs::write(&conf, "[queue capped]\nmax_items = lots\n").unwrap();
    c.send(b"reload\r\n");
    let reply = String::from_utf8(c.read_until(b"\r\n")).unwrap();
    assert!(
        reply.starts_with("SERVER_ERROR reload failed:") && reply.contains("line 2"),
        "{reply}"
    );
    assert_eq!(c.set_reply("capped", b"4"), b"NOT_STORED\r\n");
    // SIGHUP does what `reload` does.
    std::fs::write(&conf, "[queue capped]\nmax_items = 4\n").unwrap();
    server.signal(libc::SIGHUP);
    let deadline = std::time::Instant::now() + mcq_tests::PATIENCE;
    while c.set_reply("capped", b"4") != b"STORED\r\n" {
        assert!(
            std::time::Instant::now() < deadline,
            "SIGHUP did not reload"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert!(server.log().contains("SIGHUP: queue limits reloaded"));
}

#[test]
fn a_bad_queue_section_stops_the_start_and_names_its_line() {
    let dir = test_dir("limits-bad");
    let conf = dir.join("mcqd.conf");
    std::fs::write(&conf, "port = 1\n[queue q]\nmax_itemz = 3\n").unwrap();
    let (status, log) = run_until_exit(
        free_port(),
        &dir.join("data"),
        &["-f", conf.to_str().unwrap()],
    );
    assert!(!status.success());
    assert!(
        log.contains("mcqd.conf: line 3: unknown queue setting `max_itemz`"),
        "{log}"
    );
}

#[test]
fn shutdown_only_when_enabled() {
    let server = Server::start("shutdown-off", &[]);
    let mut c = server.client();
    c.expect(b"shutdown\r\n", b"ERROR: shutdown not enabled\r\n");
    c.set("q", b"still here");

    let mut server = Server::start("shutdown-on", &["--enable-shutdown"]);
    let mut c = server.client();
    c.set("q", b"kept");
    c.send(b"shutdown\r\n");
    assert!(c.is_closed(), "the connection closes");
    let status = server.wait();
    assert!(status.success(), "{status}: {}", server.log());
    assert!(server.log().contains("shutdown requested by a client"));
    server.restart_same_port();
    assert_eq!(server.client().get("q"), Some(b"kept".to_vec()));
}

#[test]
fn expired_messages_move_to_expire_to_on_any_shard() {
    let dir = test_dir("limits-expire-to");
    let conf = dir.join("mcqd.conf");
    std::fs::write(&conf, "[queue ex*]\nexpire_to = graveyard\nmax_age = 1s\n").unwrap();
    let server = Server::start(
        "limits-expire-to",
        &["-t", "2", "-f", conf.to_str().unwrap()],
    );
    let mut c = server.client();
    // Sources on both shards of a two-executor server; the target on one.
    let sources: Vec<String> = (0..6).map(|i| format!("ex{i}")).collect();
    for q in &sources {
        c.set(q, format!("{q} old").as_bytes());
    }
    std::thread::sleep(std::time::Duration::from_millis(2100));
    for q in &sources {
        c.set(q, format!("{q} new").as_bytes());
        assert_eq!(c.get(q), Some(format!("{q} new").into_bytes()), "{q}");
    }
    let deadline = std::time::Instant::now() + mcq_tests::PATIENCE;
    let mut moved = Vec::new();
    while moved.len() < sources.len() {
        assert!(std::time::Instant::now() < deadline, "moved only {moved:?}");
        match c.get("graveyard") {
            Some(body) => moved.push(String::from_utf8(body).unwrap()),
            None => std::thread::sleep(std::time::Duration::from_millis(10)),
        }
    }
    moved.sort();
    let mut want: Vec<String> = sources.iter().map(|q| format!("{q} old")).collect();
    want.sort();
    assert_eq!(moved, want);
    let stats = c.stats();
    assert_eq!(stats["queue_ex0_expired_items"], "1");
    assert_eq!(stats["open_transactions"], "0");
}
