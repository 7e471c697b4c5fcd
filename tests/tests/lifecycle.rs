//! The process lifecycle as an operator sees it: exit codes and log lines
//! when mcqd cannot start, and that it never lingers half-alive.

use mcq_tests::{free_port, run_until_exit, Server};

/// Guards against: one shard failing to open at start-up leaving mcqd
/// half-alive. The other executor waited for the failed one to finish
/// draining, which it never did: the listener closed but the process never
/// exited and ignored SIGTERM (issue 7).
#[test]
fn a_shard_that_cannot_open_stops_mcqd_with_an_error() {
    let mut server = Server::start("startup-failure", &["-t", "2"]);
    server.client().set("q", b"kept");
    assert!(server.stop().success());
    // A directory where a segment file should be: shard 1 cannot open it.
    let bad = server
        .data_dir
        .join("shard-001")
        .join("00000000000099999999.log");
    std::fs::create_dir(&bad).unwrap();

    let (status, log) = run_until_exit(free_port(), &server.data_dir, &["-t", "2"]);
    assert!(!status.success(), "exit {status}:\n{log}");
    assert!(log.contains("shard 1"), "the log does not say why:\n{log}");
    assert!(!log.contains("listening on"), "{log}");

    // Nothing was lost: with the obstacle gone it starts and serves.
    std::fs::remove_dir(&bad).unwrap();
    server.restart_with(&["-t", "2"]);
    assert_eq!(server.client().get("q").as_deref(), Some(&b"kept"[..]));
    assert!(server.stop().success());
}
