//! Authentication (`-Y`, memcached's authfile and `set` handshake) and
//! per-queue permissions (`[user …]` sections), against the real server
//! over TCP: the handshake byte for byte, plain and argon2 passwords, a
//! third-party client authenticating the memcached way, each command
//! class refused, `stats` filtered, the rate limit, reloads, the limits
//! on an unauthenticated connection, and the metrics token.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use mcq_tests::{free_port, mcqd_bin, output_within, run_until_exit, test_dir, third_party};
use mcq_tests::{Client, Server, PATIENCE};

/// The handshake: `set <key> 0 0 <n>` with `user password` as its data.
fn handshake(user: &str, password: &str) -> Vec<u8> {
    let token = format!("{user} {password}");
    format!("set auth 0 0 {}\r\n{token}\r\n", token.len()).into_bytes()
}

fn login(c: &mut Client, user: &str, password: &str) {
    c.expect(&handshake(user, password), b"STORED\r\n");
}

fn client_as(server: &Server, user: &str, password: &str) -> Client {
    let mut c = server.client();
    login(&mut c, user, password);
    c
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

/// `mcqd hash-password --user <user>` with `password` on standard input.
fn hashed_line(user: &str, password: &str) -> String {
    let mut child = Command::new(mcqd_bin())
        .args(["hash-password", "--user", user])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(format!("{password}\n").as_bytes())
        .unwrap();
    let out = mcq_tests::finish_within(child, PATIENCE);
    assert!(out.status.success(), "{}", mcq_tests::text(&out));
    let line = String::from_utf8(out.stdout).unwrap();
    let line = line.trim_end().to_string();
    assert!(
        line.starts_with(&format!("{user}:$argon2id$v=19$")),
        "{line}"
    );
    assert!(
        !line.contains(password),
        "the password itself is printed: {line}"
    );
    line
}

const MEMCACHED_REPLY: &[u8] = b"CLIENT_ERROR unauthenticated\r\n";
const FAILURE: &[u8] = b"CLIENT_ERROR authentication failure\r\n";
const DENIED: &[u8] = b"CLIENT_ERROR permission denied\r\n";

#[test]
fn the_memcached_handshake_with_plain_and_hashed_passwords() {
    let dir = test_dir("auth-handshake");
    let bob = hashed_line("bob", "b0b's pass");
    let auth = write(
        &dir,
        "authfile",
        &format!("# users\nalice:pass word\r\n{bob}\n"),
    );
    let server = Server::start(
        "auth-handshake-srv",
        &["-t", "2", "-Y", auth.to_str().unwrap()],
    );

    // Before the handshake: nothing is served, and the connection stays.
    let mut c = server.client();
    c.expect(b"get jobs\r\n", MEMCACHED_REPLY);
    c.expect(b"version\r\n", MEMCACHED_REPLY);
    c.expect(b"set jobs 0 0\r\n", MEMCACHED_REPLY);
    // memcached's other answers, byte for byte.
    c.expect(
        b"set a 0 0 5\r\nnospace",
        b"CLIENT_ERROR bad command line termination\r\n",
    );
    c.expect(
        b"set a 0 0 7\r\nnospace\r\n",
        b"CLIENT_ERROR bad authentication token format\r\n",
    );
    c.expect(&handshake("alice", "pass"), FAILURE);
    c.expect(&handshake("nobody", "pass word"), FAILURE);
    // Then the right one; a password may hold spaces.
    login(&mut c, "alice", "pass word");
    c.set("jobs", b"one");
    assert_eq!(c.get("jobs").unwrap(), b"one");
    // Once authenticated, a `set` is a set again.
    c.expect(&handshake("alice", "pass word"), b"STORED\r\n");
    assert_eq!(c.get("auth").unwrap(), b"alice pass word");

    // A hashed password, and requests pipelined behind the handshake.
    let mut b = server.client();
    let mut burst = handshake("bob", "b0b's pass");
    burst.extend_from_slice(b"set jobs 0 0 3\r\ntwo\r\nget jobs\r\n");
    b.send(&burst);
    assert_eq!(
        b.read_until(b"END\r\n"),
        b"STORED\r\nSTORED\r\nVALUE jobs 0 3\r\ntwo\r\nEND\r\n"
    );
    let mut wrong = server.client();
    wrong.expect(&handshake("bob", "b0b's pas"), FAILURE);

    // memcached's counters: every handshake, and the failed ones.
    let stats = b.stats();
    assert_eq!(stats["auth_cmds"], "5", "{stats:?}");
    assert_eq!(stats["auth_errors"], "3", "{stats:?}");

    // Three failures close the connection; so does a short line (as
    // memcached does).
    let mut three = server.client();
    three.expect(&handshake("alice", "1"), FAILURE);
    three.expect(&handshake("alice", "2"), FAILURE);
    three.expect(&handshake("alice", "3"), FAILURE);
    assert!(three.is_closed());
    let mut quit = server.client();
    quit.send(b"quit\r\n");
    assert!(quit.is_closed());
    assert!(server
        .log()
        .contains("authentication failure for user `alice`"));
}

#[test]
fn pymemcache_authenticates_the_memcached_way() {
    let dir = test_dir("auth-pymemcache");
    let auth = write(&dir, "authfile", "py:secret\n");
    let server = Server::start(
        "auth-pymemcache-srv",
        &["-t", "2", "-Y", auth.to_str().unwrap()],
    );
    let script = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("clients")
        .join("auth.py")
        .display()
        .to_string();
    let port = server.port.to_string();
    // Debian's pymemcache lives with Debian's python3, which may not be
    // the first python3 on PATH.
    let python = ["python3", "/usr/bin/python3"]
        .into_iter()
        .find(|py| {
            Command::new(py)
                .args(["-c", "import pymemcache"])
                .output()
                .is_ok_and(|o| o.status.success())
        })
        .unwrap_or("python3");
    let Some(mut cmd) = third_party(
        python,
        &[&script, &port, "py", "secret"],
        &["-c", "import pymemcache"],
        "Python with pymemcache (Debian: python3-pymemcache)",
    ) else {
        return;
    };
    let out = output_within(&mut cmd);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.contains("session ok"),
        "auth.py:\n{stdout}\n{stderr}\n{}",
        server.log()
    );
}

#[test]
fn php_memcache_authenticates_the_memcached_way() {
    let dir = test_dir("auth-php");
    let auth = write(&dir, "authfile", "php:pass word\n");
    let server = Server::start("auth-php-srv", &["-t", "2", "-Y", auth.to_str().unwrap()]);
    let script = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("clients")
        .join("auth.php")
        .display()
        .to_string();
    let port = server.port.to_string();
    let Some(mut cmd) = third_party(
        "php",
        &[&script, &port, "php", "pass word"],
        &["-r", "exit(function_exists('memcache_connect') ? 0 : 1);"],
        "PHP with the memcache extension (Debian: php-cli php-memcache)",
    ) else {
        return;
    };
    let out = output_within(&mut cmd);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.contains("session ok"),
        "auth.php:\n{stdout}\n{stderr}\n{}",
        server.log()
    );
}

const PERMISSIONS: &str = "\
# the flags, then who may do what
[queue jobs]
max_items = 100
[user writer]
write = jobs, logs.*
[user reader]
read = jobs, logs.*
[user logadmin]
read = logs.*
admin = logs.*
[user root]
read = *
write = *
admin = *
";

fn permissions_server(name: &str, extra: &[&str]) -> Server {
    let dir = test_dir(name);
    let auth = write(
        &dir,
        "authfile",
        "writer:w\nreader:r\nlogadmin:l\nroot:x\nnobody:n\n",
    );
    let conf = write(&dir, "mcqd.conf", PERMISSIONS);
    let mut args = vec![
        "-t",
        "2",
        "-Y",
        auth.to_str().unwrap(),
        "-f",
        conf.to_str().unwrap(),
        "-vv",
    ];
    args.extend_from_slice(extra);
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    Server::start(&format!("{name}-srv"), &args)
}

#[test]
fn each_command_class_needs_its_permission() {
    let server = permissions_server("auth-perms", &[]);
    let mut w = client_as(&server, "writer", "w");
    let mut r = client_as(&server, "reader", "r");
    let mut root = client_as(&server, "root", "x");

    // write: set; not get.
    w.set("jobs", b"j1");
    w.set("jobs", b"j2");
    w.set("logs.web", b"l1");
    w.expect(b"get jobs\r\n", DENIED);
    w.expect(b"gets jobs/peek\r\n", DENIED);
    w.expect(b"set secret 0 0 1\r\nx\r\n", DENIED);

    // read: get with any option; not set, whose data block is dropped
    // and the next request read right.
    r.expect(b"set jobs 0 0 5\r\nhello\r\n", DENIED);
    r.expect(
        b"get jobs/peek\r\n",
        b"VALUE jobs/peek 0 2\r\nj1\r\nEND\r\n",
    );
    assert_eq!(r.get("jobs").unwrap(), b"j1");
    // A large refused set (its block read apart from the input buffer).
    let big = vec![b'z'; 300 * 1024];
    let mut request = format!("set jobs 0 0 {}\r\n", big.len()).into_bytes();
    request.extend_from_slice(&big);
    request.extend_from_slice(b"\r\nget logs.web\r\n");
    r.send(&request);
    assert_eq!(
        r.read_until(b"END\r\n"),
        [DENIED, b"VALUE logs.web 0 2\r\nl1\r\nEND\r\n"].concat()
    );
    // A refused noreply set answers nothing.
    r.expect(b"set jobs 0 0 1 noreply\r\nx\r\nversion\r\n", b"VERSION ");
    r.read_until(b"\r\n");
    // Prefix patterns.
    r.expect(b"get logsx\r\n", DENIED);
    r.expect(b"get logs.\r\n", b"END\r\n");
    // A multi-key get is refused whole: nothing is popped.
    root.set("secret2", b"s");
    r.expect(b"get jobs secret2\r\n", DENIED);
    assert_eq!(
        r.get("jobs").unwrap(),
        b"j2",
        "the refused get popped nothing"
    );

    // admin: delete and flush of the queues it matches, the server-wide
    // commands only with admin = *.
    let mut la = client_as(&server, "logadmin", "l");
    for cmd in [
        "delete jobs",
        "flush jobs",
        "flush_all",
        "reload",
        "stats reset",
        "verbosity 1",
        "shutdown",
    ] {
        r.expect(format!("{cmd}\r\n").as_bytes(), DENIED);
        la.expect(format!("{cmd}\r\n").as_bytes(), DENIED);
    }
    w.set("logs.web", b"l2");
    la.expect(b"flush logs.web\r\n", b"END\r\n");
    la.expect(b"delete logs.web\r\n", b"DELETED\r\n");
    root.expect(b"verbosity 2\r\n", b"OK\r\n");
    root.expect(b"reload\r\n", b"Reloaded config.\r\n");
    root.expect(b"flush_all\r\n", b"OK\r\n");
    // Without --enable-shutdown, root is told so; the reader is refused
    // before that.
    root.expect(b"shutdown\r\n", b"ERROR: shutdown not enabled\r\n");

    // Every user authenticated may ask for stats and the version.
    let mut nobody = client_as(&server, "nobody", "n");
    nobody.expect(b"get jobs\r\n", DENIED);
    nobody.expect(b"version\r\n", b"VERSION ");
    let stats = nobody.stats();
    let denied: u64 = stats["permission_denied"].parse().unwrap();
    assert!(denied >= 20, "{stats:?}");
    root.expect(b"stats reset\r\n", b"RESET\r\n");
    assert_eq!(nobody.stats()["permission_denied"], "0");
    assert!(
        server
            .log()
            .contains("permission denied: user reader: set jobs"),
        "-vv logs refusals:\n{}",
        server.log()
    );
}

#[test]
fn stats_list_only_the_queues_a_user_may_read() {
    let server = permissions_server("auth-stats", &[]);
    let mut root = client_as(&server, "root", "x");
    for q in ["jobs", "logs.a", "logs.b", "secret", "zzz"] {
        root.set(q, b"x");
    }
    let names = |c: &mut Client| -> Vec<String> {
        c.queue_stats().into_iter().map(|(n, _, _)| n).collect()
    };
    assert_eq!(
        names(&mut root),
        ["jobs", "logs.a", "logs.b", "secret", "zzz"]
    );
    let mut r = client_as(&server, "reader", "r");
    assert_eq!(names(&mut r), ["jobs", "logs.a", "logs.b"]);
    let mut la = client_as(&server, "logadmin", "l");
    assert_eq!(names(&mut la), ["logs.a", "logs.b"]);
    let mut nobody = client_as(&server, "nobody", "n");
    assert!(names(&mut nobody).is_empty());
    // Kestrel's per-queue lines of `stats` likewise.
    let stats = la.stats();
    assert!(stats.contains_key("queue_logs.a_items"), "{stats:?}");
    assert!(!stats.contains_key("queue_secret_items") && !stats.contains_key("queue_jobs_items"));
    assert!(!stats.contains_key("queues_omitted"));
    assert!(root.stats().contains_key("queue_secret_items"));
}

#[test]
fn shutdown_needs_admin_when_auth_is_on() {
    let mut server = permissions_server("auth-shutdown", &["--enable-shutdown"]);
    let mut r = client_as(&server, "reader", "r");
    r.expect(b"shutdown\r\n", DENIED);
    r.expect(b"version\r\n", b"VERSION ");
    let mut root = client_as(&server, "root", "x");
    root.send(b"shutdown\r\n");
    assert!(root.is_closed());
    assert!(server.wait().success());
}

#[test]
fn repeated_failures_from_one_address_are_refused_unchecked() {
    let dir = test_dir("auth-rate");
    let auth = write(&dir, "authfile", "alice:right\n");
    let server = Server::start("auth-rate-srv", &["-t", "2", "-Y", auth.to_str().unwrap()]);
    // Ten failures (the limit), three to a connection.
    let mut failures = 0;
    while failures < 10 {
        let mut c = server.client();
        for _ in 0..3.min(10 - failures) {
            c.expect(&handshake("alice", "wrong"), FAILURE);
            failures += 1;
        }
    }
    // Now even the right password is refused, without being checked.
    let mut c = server.client();
    c.expect(&handshake("alice", "right"), FAILURE);
    let log = server.log_with("127.0.0.1: 10 failed authentications within 60 s");
    assert!(
        log.contains("127.0.0.1: 10 failed authentications within 60 s"),
        "{log}"
    );
    let log = server.log_with("refused unchecked");
    assert!(log.contains("refused unchecked"), "{log}");
    let mut other = server.client();
    other.expect(&handshake("alice", "right"), FAILURE);
    other.expect(&handshake("alice", "right"), FAILURE);
    other.expect(&handshake("alice", "right"), FAILURE);
    assert!(other.is_closed());
}

#[test]
fn reload_swaps_the_authfile_and_a_bad_one_keeps_the_old() {
    let dir = test_dir("auth-reload");
    let auth = write(&dir, "authfile", "alice:one\n");
    let conf = write(
        &dir,
        "mcqd.conf",
        "[user alice]\nread = *\nwrite = *\nadmin = *\n",
    );
    let server = Server::start(
        "auth-reload-srv",
        &[
            "-t",
            "2",
            "-Y",
            auth.to_str().unwrap(),
            "-f",
            conf.to_str().unwrap(),
        ],
    );
    let mut a = client_as(&server, "alice", "one");
    // A broken authfile: refused with why, the old one stays.
    write(&dir, "authfile", "alice:one\nno colon\n");
    a.send(b"reload\r\n");
    let reply = String::from_utf8(a.read_until(b"\r\n")).unwrap();
    assert!(
        reply.starts_with("SERVER_ERROR reload failed:") && reply.contains("line 2"),
        "{reply}"
    );
    assert!(
        !reply.contains("no colon"),
        "the line is not echoed: {reply}"
    );
    client_as(&server, "alice", "one");
    // A broken [user] section likewise.
    write(&dir, "authfile", "alice:two\n");
    write(&dir, "mcqd.conf", "[user alice]\nread = *\nexecute = *\n");
    a.send(b"reload\r\n");
    let reply = String::from_utf8(a.read_until(b"\r\n")).unwrap();
    assert!(reply.starts_with("SERVER_ERROR reload failed:"), "{reply}");
    client_as(&server, "alice", "one");
    // A good one: the new password, the old refused.
    write(
        &dir,
        "mcqd.conf",
        "[user alice]\nread = *\nwrite = *\nadmin = *\n",
    );
    a.expect(b"reload\r\n", b"Reloaded config.\r\n");
    server.client().expect(&handshake("alice", "one"), FAILURE);
    client_as(&server, "alice", "two");
    // SIGHUP does the same; permissions change for connections already
    // authenticated.
    write(&dir, "mcqd.conf", "[user alice]\nread = *\n");
    server.signal(libc::SIGHUP);
    let deadline = Instant::now() + PATIENCE;
    loop {
        a.send(b"set q 0 0 1\r\nx\r\n");
        if a.read_until(b"\r\n") == DENIED {
            break;
        }
        assert!(Instant::now() < deadline, "SIGHUP did not reload");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(server
        .log()
        .contains("SIGHUP: queue limits, authfile and user permissions reloaded"));
}

#[test]
fn a_bad_authfile_stops_the_start() {
    let dir = test_dir("auth-bad-start");
    let auth = write(&dir, "authfile", "alice:a\nbob\n");
    let (status, log) = run_until_exit(
        free_port(),
        &dir.join("data"),
        &["-Y", auth.to_str().unwrap()],
    );
    assert!(!status.success());
    assert!(log.contains("authfile: line 2"), "{log}");
    let (status, log) = run_until_exit(
        free_port(),
        &dir.join("data"),
        &["-Y", dir.join("missing").to_str().unwrap()],
    );
    assert!(!status.success() && log.contains("cannot read"), "{log}");
}

#[test]
fn an_unauthenticated_connection_holds_little_and_not_for_long() {
    let dir = test_dir("auth-limits");
    let auth = write(&dir, "authfile", "alice:a\n");
    let server = Server::start(
        "auth-limits-srv",
        &[
            "-t",
            "1",
            "-Y",
            auth.to_str().unwrap(),
            "--auth-timeout",
            "1",
        ],
    );
    // A huge set before the handshake: refused and closed, its block
    // never buffered (the server stops reading; writing 64 MiB into it
    // fails or stalls rather than being taken).
    let mut huge = server.client();
    huge.send(b"set q 0 0 100000000\r\n");
    huge.expect(b"", b"CLIENT_ERROR auth token too long\r\n");
    assert!(huge.is_closed());
    let mut stream = TcpStream::connect(("127.0.0.1", server.port)).unwrap();
    stream
        .set_write_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let chunk = vec![b'x'; 1 << 20];
    let mut sent = 0usize;
    stream.write_all(b"set q 0 0 100000000\r\n").unwrap();
    while sent < 64 << 20 {
        match stream.write(&chunk) {
            Ok(n) => sent += n,
            Err(_) => break,
        }
    }
    assert!(sent < 64 << 20, "the server took {sent} bytes");
    // A line that never ends.
    let mut endless = server.client();
    endless.send(&[b'a'; 3000]);
    assert!(endless.is_closed());
    // Silence: closed after --auth-timeout.
    let mut idle = server.client();
    let started = Instant::now();
    assert!(idle.is_closed());
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(900),
        "closed early: {waited:?}"
    );
    // The server is fine.
    let mut c = client_as(&server, "alice", "a");
    c.set("q", b"ok");
}

#[test]
fn without_auth_nothing_changes_and_sections_alone_restrict_nobody() {
    let dir = test_dir("auth-none");
    let conf = write(&dir, "mcqd.conf", "[user cert-only]\nread = x\n");
    let server = Server::start("auth-none-srv", &["-t", "2", "-f", conf.to_str().unwrap()]);
    let mut c = server.client();
    c.set("anything", b"1");
    assert_eq!(c.get("anything").unwrap(), b"1");
    c.expect(b"flush_all\r\n", b"OK\r\n");
    let stats = c.stats();
    assert_eq!(stats["auth_cmds"], "0");
    assert_eq!(stats["permission_denied"], "0");

    // -Y without sections: memcached's all-or-nothing.
    let auth = write(&dir, "authfile", "u:p\n");
    let server = Server::start("auth-all-srv", &["-t", "2", "-Y", auth.to_str().unwrap()]);
    let mut c = client_as(&server, "u", "p");
    c.set("anything", b"1");
    c.expect(b"flush_all\r\n", b"OK\r\n");
    c.expect(b"stats reset\r\n", b"RESET\r\n");
}

/// One HTTP request to the metrics endpoint: its status line and body.
fn http_get(addr: &str, authorization: Option<&str>) -> (String, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(PATIENCE)).unwrap();
    let auth = authorization
        .map(|a| format!("Authorization: {a}\r\n"))
        .unwrap_or_default();
    write!(s, "GET /metrics HTTP/1.1\r\nHost: x\r\n{auth}\r\n").unwrap();
    let mut response = String::new();
    s.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    (head.lines().next().unwrap().to_string(), body.to_string())
}

#[test]
fn metrics_want_the_bearer_token() {
    let dir = test_dir("auth-metrics");
    let token = write(&dir, "token", "  t0ken-42\n");
    let addr = format!("127.0.0.1:{}", free_port());
    let server = Server::start(
        "auth-metrics-srv",
        &[
            "-t",
            "2",
            "--metrics",
            &addr,
            "--metrics-token-file",
            token.to_str().unwrap(),
        ],
    );
    server.client().set("jobs", b"x");
    let (status, body) = http_get(&addr, None);
    assert_eq!(status, "HTTP/1.1 401 Unauthorized");
    assert!(!body.contains("jobs"));
    let (status, _) = http_get(&addr, Some("Bearer t0ken-4"));
    assert_eq!(status, "HTTP/1.1 401 Unauthorized");
    let (status, body) = http_get(&addr, Some("Bearer t0ken-42"));
    assert_eq!(status, "HTTP/1.1 200 OK");
    assert!(body.contains("mcq_queue_items{queue=\"jobs\"} 1"), "{body}");
    assert!(body.contains("mcq_auth_cmds_total 0"), "{body}");
    drop(server);
    // An empty token file stops the start.
    let empty = write(&dir, "empty", "\n");
    let (status, log) = run_until_exit(
        free_port(),
        &dir.join("data2"),
        &[
            "--metrics",
            &format!("127.0.0.1:{}", free_port()),
            "--metrics-token-file",
            empty.to_str().unwrap(),
        ],
    );
    assert!(
        !status.success() && log.contains("--metrics-token-file"),
        "{log}"
    );
}

#[test]
fn mcqd_ping_sees_a_server_that_wants_authentication() {
    let dir = test_dir("auth-ping");
    let auth = write(&dir, "authfile", "u:p\n");
    let server = Server::start("auth-ping-srv", &["-t", "1", "-Y", auth.to_str().unwrap()]);
    let out =
        output_within(Command::new(mcqd_bin()).args(["ping", "-p", &server.port.to_string()]));
    assert!(out.status.success(), "{}", mcq_tests::text(&out));
}

/// A connection to `port` from `from` (a loopback address other than
/// 127.0.0.1: the fuzz run below must not get 127.0.0.1 rate-limited).
fn connect_from(from: [u8; 4], port: u16) -> std::io::Result<TcpStream> {
    use std::os::fd::FromRawFd;
    let addr = |ip: [u8; 4], port: u16| libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: port.to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from_ne_bytes(ip),
        },
        sin_zero: [0; 8],
    };
    let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
    // SAFETY: plain socket calls on a descriptor this function owns; it is
    // closed on every error path and handed to a TcpStream otherwise.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let local = addr(from, 0);
        let remote = addr([127, 0, 0, 1], port);
        if libc::bind(fd, (&raw const local).cast(), len) != 0
            || libc::connect(fd, (&raw const remote).cast(), len) != 0
        {
            let e = std::io::Error::last_os_error();
            libc::close(fd);
            return Err(e);
        }
        Ok(TcpStream::from_raw_fd(fd))
    }
}

/// A fuzz run of the state before authentication: random bytes, and the
/// handshake with bytes flipped, its length wrong, cut short or followed
/// by garbage, each on its own connection (from 127.0.0.2, which the rate
/// limit may well block meanwhile). Afterwards nothing panicked, and a
/// real client logs in and is served.
#[test]
fn fuzzed_input_before_authentication_costs_no_uptime() {
    let dir = test_dir("auth-fuzz");
    let auth = write(&dir, "authfile", "alice:secret\n");
    let server = Server::start("auth-fuzz-srv", &["-t", "1", "-Y", auth.to_str().unwrap()]);
    let hello = handshake("alice", "secret");
    let mut state = (std::process::id() as u64) << 17 | 1;
    let seed = state;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let rounds = if mcq_tests::soak() { 3000 } else { 300 };
    for _ in 0..rounds {
        let mut bytes = match next() % 4 {
            0 => (0..next() % 4096).map(|_| next() as u8).collect(),
            1 => {
                let mut h = hello.clone();
                for _ in 0..=next() % 4 {
                    let at = (next() % h.len() as u64) as usize;
                    h[at] ^= 1 << (next() % 8);
                }
                h
            }
            2 => hello[..(next() % hello.len() as u64) as usize].to_vec(),
            _ => {
                let n = next() % 20_000;
                let mut h = format!("set auth 0 0 {n}\r\n").into_bytes();
                h.extend((0..next() % 2048).map(|_| next() as u8));
                h
            }
        };
        if next() % 4 == 0 {
            // Requests behind it (a flipped byte may leave the handshake
            // valid: they are then served, which is right).
            bytes.extend_from_slice(b"get q\r\nversion\r\n");
        }
        if let Ok(socket) = connect_from([127, 0, 0, 2], server.port) {
            mcq_tests::throw(socket, &bytes);
        }
    }
    let mut c = client_as(&server, "alice", "secret");
    c.expect(b"set fuzz 0 0 2\r\nok\r\n", b"STORED\r\n");
    c.expect(b"get fuzz\r\n", b"VALUE fuzz 0 2\r\nok\r\nEND\r\n");
    let stats = c.stats();
    let errors: u64 = stats["auth_errors"].parse().unwrap();
    assert!(
        errors > 0,
        "seed {seed}: no handshake was refused: {stats:?}"
    );
    let log = server.log();
    assert!(!log.contains("panic"), "seed {seed}: a panic:\n{log}");
}
