//! Fan-out queues (Kestrel's `<parent>+<child>`) against the real server:
//! copies on either executor's shards, surviving kill -9, reliable reads on
//! a child, and a data directory whose queue no longer lives where the hash
//! says is refused with a clear message.

use mcq_tests::{free_port, run_until_exit, Server};

#[test]
fn children_get_copies_and_keep_them_across_a_kill9() {
    let mut server = Server::start("fanout", &["-t", "2"]);
    let mut c = server.client();
    let parents: Vec<String> = (0..6).map(|i| format!("fp{i}")).collect();
    for p in &parents {
        c.set(p, b"before any child");
        // Children exist from their first get (or set).
        assert_eq!(c.get(&format!("{p}+audit")), None);
        c.set(&format!("{p}+archive"), b"own message");
        for i in 0..3 {
            c.set(p, format!("m{i}").as_bytes());
        }
    }
    // A reliable read on a child leaves the other child and the parent alone.
    let p0 = &parents[0];
    c.expect(
        format!("get {p0}+audit/open\r\n").as_bytes(),
        format!("VALUE {p0}+audit/open 0 2\r\nm0\r\nEND\r\n").as_bytes(),
    );
    server.kill9();
    server.restart_same_port();
    let mut c = server.client();
    let copies: Vec<Vec<u8>> = (0..3).map(|i| format!("m{i}").into_bytes()).collect();
    for p in &parents {
        let mut parent = vec![b"before any child".to_vec()];
        parent.extend(copies.clone());
        assert_eq!(c.drain(p), parent, "{p}");
        assert_eq!(c.drain(&format!("{p}+audit")), copies, "{p}+audit");
        let mut archive = vec![b"own message".to_vec()];
        archive.extend(copies.clone());
        assert_eq!(c.drain(&format!("{p}+archive")), archive, "{p}+archive");
    }
    let stats = c.queue_stats();
    assert!(stats.contains(&(format!("{p0}+audit"), 3, 3)), "{stats:?}");
}

#[test]
fn a_queue_stored_in_the_wrong_shard_is_refused_by_name() {
    // Shards swapped by hand stand for a directory an older hash laid out.
    let mut server = Server::start("fanout-home", &["-t", "2", "--shards", "2"]);
    let mut c = server.client();
    for i in 0..8 {
        c.set(&format!("home{i}"), b"x");
    }
    server.stop();
    let data = server.data_dir.clone();
    let (a, b, tmp) = (
        data.join("shard-000"),
        data.join("shard-001"),
        data.join("swap"),
    );
    std::fs::rename(&a, &tmp).unwrap();
    std::fs::rename(&b, &a).unwrap();
    std::fs::rename(&tmp, &b).unwrap();
    let (status, log) = run_until_exit(free_port(), &data, &["-t", "2"]);
    assert!(!status.success());
    assert!(
        log.contains("is stored in shard") && log.contains("now belongs to shard"),
        "{log}"
    );
}
