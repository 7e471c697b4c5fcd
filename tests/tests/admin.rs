//! Running mcqd as an administrator does (issue 10): a MemcacheQ init line
//! with `-d -P -u -r`, log lines with a time and a level, `verbosity` at
//! runtime, sizes with units, and start-up errors that name what is at
//! fault.

use std::fs::File;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use mcq_tests::{
    exit_within, free_port, mcqd_bin, output_within, run_until_exit, skip, test_dir, Client,
    Server, PATIENCE,
};

/// `2026-11-25T16:32:27.123Z INFO  …`: RFC 3339 in UTC, then a level.
fn well_formed(line: &str) -> bool {
    let Some((time, rest)) = line.split_once(' ') else {
        return false;
    };
    let digits = |r: std::ops::Range<usize>| time[r].bytes().all(|b| b.is_ascii_digit());
    let time_ok = time.len() == 24
        && time.is_ascii()
        && digits(0..4)
        && &time[4..5] == "-"
        && digits(5..7)
        && &time[7..8] == "-"
        && digits(8..10)
        && &time[10..11] == "T"
        && digits(11..13)
        && &time[13..14] == ":"
        && digits(14..16)
        && &time[16..17] == ":"
        && digits(17..19)
        && &time[19..20] == "."
        && digits(20..23)
        && time.ends_with('Z');
    let level_ok = ["ERROR ", "WARN  ", "INFO  ", "DEBUG ", "TRACE "]
        .iter()
        .any(|l| rest.starts_with(l));
    time_ok && level_ok
}

fn assert_well_formed(log: &str) {
    assert!(!log.is_empty());
    for line in log.lines() {
        assert!(
            well_formed(line),
            "not `<RFC 3339 UTC time> <LEVEL> …`: {line:?}\n{log}"
        );
        assert!(!line.contains("Some("), "Debug formatting: {line:?}");
    }
}

/// Waits until `server`'s log has a line containing `what`.
fn wait_for_log(server: &Server, what: &str) -> String {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let log = server.log();
        if log.contains(what) {
            return log;
        }
        assert!(Instant::now() < deadline, "no {what:?} in the log:\n{log}");
        thread::sleep(Duration::from_millis(10));
    }
}

fn alive(pid: i32) -> bool {
    // A zombie (no init reaping it in a container) has exited too.
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(") ")
            .is_some_and(|(_, rest)| !rest.starts_with('Z')),
        Err(_) => false,
    }
}

/// Kills a daemon the test started if the test fails before stopping it.
struct Daemon(i32);

impl Drop for Daemon {
    fn drop(&mut self) {
        if alive(self.0) {
            // SAFETY: signalling the daemon this test started.
            unsafe { libc::kill(self.0, libc::SIGKILL) };
        }
    }
}

/// Guards against: `-d` and `-P` being accepted and ignored, so that a
/// MemcacheQ init script "started" a server that stayed in the foreground
/// and wrote no pid file (issue 10).
#[test]
fn a_memcacheq_init_line_daemonizes_writes_its_pid_file_and_stops_on_sigterm() {
    let dir = test_dir("admin-daemon");
    let (data, pid_file, stderr) = (dir.join("data"), dir.join("mq.pid"), dir.join("stderr"));
    let port = free_port();
    let mut cmd = Command::new(mcqd_bin());
    // A soft core limit of 0, as distributions set it: -r must raise it.
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            let mut lim = libc::rlimit {
                rlim_cur: 0,
                rlim_max: 0,
            };
            libc::getrlimit(libc::RLIMIT_CORE, &mut lim);
            lim.rlim_cur = 0;
            libc::setrlimit(libc::RLIMIT_CORE, &lim);
            Ok(())
        });
    }
    let mut parent = cmd
        .args(["-d", "-r", "-H"])
        .arg(&data)
        .args(["-N", "-R", "-v", "-L", "1024", "-B", "1024", "-P"])
        .arg(&pid_file)
        .args(["-p", &port.to_string(), "-t", "1"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(File::create(&stderr).unwrap())
        .spawn()
        .unwrap();
    let status = exit_within(&mut parent, PATIENCE).expect("the parent returns");
    let log = || std::fs::read_to_string(&stderr).unwrap();
    assert!(status.success(), "{status}:\n{}", log());

    // The parent returned once the daemon listened: the pid file is there
    // and the daemon serves.
    let pid: i32 = std::fs::read_to_string(&pid_file)
        .unwrap_or_else(|e| panic!("{}: {e}\n{}", pid_file.display(), log()))
        .trim()
        .parse()
        .unwrap();
    let _guard = Daemon(pid);
    assert_ne!(pid as u32, parent.id());
    assert!(alive(pid));
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat.rsplit_once(") ").unwrap().1.split(' ').collect();
    assert_eq!(fields[3], pid.to_string(), "a session leader (setsid)");
    // -r: the soft core file size limit is raised to the hard one.
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let core = limits
        .lines()
        .find(|l| l.starts_with("Max core file size"))
        .unwrap();
    let f: Vec<&str> = core.split_whitespace().collect();
    assert_eq!(
        f[4], f[5],
        "-r leaves the soft limit below the hard: {core}"
    );
    let mut c = Client::connect(port);
    c.set("jobs", b"hello");
    assert_eq!(c.get("jobs").as_deref(), Some(&b"hello"[..]));
    assert_eq!(
        c.set_reply("jobs", &[b'x'; 1025]),
        b"SERVER_ERROR object too large for cache\r\n"
    );
    drop(c);

    // SAFETY: signalling the daemon this test started.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    let deadline = Instant::now() + PATIENCE;
    while alive(pid) {
        assert!(Instant::now() < deadline, "still running:\n{}", log());
        thread::sleep(Duration::from_millis(10));
    }
    assert!(!pid_file.exists(), "the pid file is removed on exit");
    let log = log();
    assert!(log.contains("INFO  stopped cleanly"), "{log}");
    assert!(
        log.contains("WARN  -L (BerkeleyDB log buffer size)"),
        "{log}"
    );
    assert_well_formed(&log);
    std::fs::remove_dir_all(&dir).unwrap();
}

fn uid_of(user: &str) -> Option<u32> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        (f.first() == Some(&user)).then(|| f.get(2)?.parse().ok())?
    })
}

fn is_root() -> bool {
    // SAFETY: no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Guards against: `-u` being ignored, so a server started as root by an
/// init script kept running as root.
#[test]
fn u_nobody_serves_as_nobody() {
    if !is_root() {
        return skip("u_nobody_serves_as_nobody: -u needs root");
    }
    let Some(nobody) = uid_of("nobody") else {
        return skip("u_nobody_serves_as_nobody: there is no user nobody");
    };
    // The data directory's parents must let nobody through; the test tree
    // may sit under a private directory (a clone in a `mktemp -d`), so
    // this one lives in a world-searchable directory of its own.
    let base = std::path::PathBuf::from(format!("/var/tmp/mcq-e2e-user-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&base);
    std::fs::create_dir_all(&base).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&base, std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut server = Server::start_in(&base.join("data"), &["-t", "1", "-u", "nobody"]);
    let status = std::fs::read_to_string(format!("/proc/{}/status", server.pid())).unwrap();
    let uids = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    let ids: Vec<&str> = uids.split_whitespace().skip(1).collect();
    assert_eq!(ids, vec![nobody.to_string(); 4], "{uids}");
    let mut c = server.client();
    c.set("q", b"as nobody");
    assert_eq!(c.get("q").as_deref(), Some(&b"as nobody"[..]));
    c.set("q", b"kept");
    drop(c);
    assert!(server.stop().success(), "{}", server.log());
    use std::os::unix::fs::MetadataExt;
    assert_eq!(std::fs::metadata(&server.data_dir).unwrap().uid(), nobody);
    // What nobody wrote, root reads (and nobody again after that).
    server.restart_with(&["-t", "1"]);
    assert_eq!(server.client().get("q").as_deref(), Some(&b"kept"[..]));
    assert!(server.stop().success());
    std::fs::remove_dir_all(&base).unwrap();
}

/// Guards against: `verbosity <n>` answering OK and changing nothing, and
/// `-vv` logging a rejected request without the request (issue 10).
#[test]
fn verbosity_at_runtime_logs_rejected_requests_with_their_line() {
    let server = Server::start("admin-verbosity", &["-t", "1"]);
    let mut c = server.client();
    c.expect(b"frobnicate before\r\n", b"ERROR\r\n");
    c.expect(b"verbosity 2\r\n", b"OK\r\n");
    wait_for_log(&server, "INFO  verbosity 2");
    c.expect(
        b"set q 0 4294967296 1\r\nx\r\n",
        b"CLIENT_ERROR bad command line format\r\n",
    );
    c.expect(b"frobnicate \x01\xff\\\r\n", b"ERROR\r\n");
    let mut long = b"frobnicate ".to_vec();
    long.resize(300, b'z');
    long.extend_from_slice(b"\r\n");
    c.expect(&long, b"ERROR\r\n");
    wait_for_log(
        &server,
        "TRACE rejected request (CLIENT_ERROR bad command line format): set q 0 4294967296 1\n",
    );
    wait_for_log(
        &server,
        "TRACE rejected request (ERROR): frobnicate \\x01\\xff\\\\\n",
    );
    let shown = format!(
        "TRACE rejected request (ERROR): {}…\n",
        String::from_utf8_lossy(&long[..200])
    );
    wait_for_log(&server, &shown);
    // -v's connection lines name the peer plainly.
    let _second = server.client();
    wait_for_log(&server, "connection from 127.0.0.1:");

    c.expect(b"verbosity 0\r\n", b"OK\r\n");
    c.expect(b"frobnicate after\r\n", b"ERROR\r\n");
    c.expect(b"verbosity 1\r\n", b"OK\r\n");
    let log = wait_for_log(&server, "INFO  verbosity 1");
    assert!(!log.contains("frobnicate before"), "{log}");
    assert!(!log.contains("frobnicate after"), "{log}");
    assert_well_formed(&log);
}

/// Guards against: refused connections at `-c` going unlogged.
#[test]
fn the_connection_limit_is_logged() {
    let server = Server::start("admin-limit", &["-t", "1", "-c", "1"]);
    let mut first = server.client();
    first.set("q", b"1");
    let mut refused = server.client();
    assert_eq!(
        refused.read_until(b"\r\n"),
        b"SERVER_ERROR too many connections\r\n"
    );
    let log = wait_for_log(
        &server,
        "WARN  connection refused: limit of 1 connections (-c) reached (1 refused since the last such line)",
    );
    assert_well_formed(&log);
}

/// Guards against: `-B 1M` failing with `invalid digit`, and a `-B` above
/// what a segment holds being accepted, after which every such message got
/// `SERVER_ERROR out of space` (issue 10).
#[test]
fn sizes_take_units_and_a_message_no_segment_holds_is_refused_at_start() {
    let server = Server::start(
        "admin-sizes",
        &["-t", "1", "-B", "1M", "--max-disk", "1G", "-m", "16M"],
    );
    let mut c = server.client();
    let body = vec![b'm'; 1 << 20];
    c.set("big", &body);
    assert_eq!(c.get("big"), Some(body));
    assert_eq!(
        c.set_reply("big", &vec![b'm'; (1 << 20) + 1]),
        b"SERVER_ERROR object too large for cache\r\n"
    );

    let dir = test_dir("admin-sizes-refused");
    let (status, log) = run_until_exit(free_port(), &dir.join("data"), &["-B", "100000000"]);
    assert_eq!(status.code(), Some(1), "{log}");
    assert!(
        log.contains(
            "ERROR -B 100000000 is larger than a segment of 67108864 bytes (--segment-size) can hold: the largest message it takes is "
        ),
        "{log}"
    );
    assert_well_formed(&log);
    let (status, log) = run_until_exit(free_port(), &dir.join("data"), &["-B", "1X"]);
    assert_eq!(status.code(), Some(2), "{log}");
    assert!(
        log.contains("expected a size like 4096, 64K, 10M or 1G, got `1X`"),
        "{log}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Guards against: `--shards` on an existing data directory and `-t` above
/// the core count being taken silently (issue 10).
#[test]
fn shards_unlike_the_manifest_and_threads_above_the_cores_are_warned_about() {
    let mut server = Server::start("admin-shards", &["-t", "1", "--shards", "2"]);
    assert!(server.stop().success());
    server.restart_with(&["-t", "1", "--shards", "3"]);
    let expected = format!(
        "WARN  --shards 3 ignored: {} was created with 2 shards, fixed since; using 2",
        std::fs::canonicalize(&server.data_dir).unwrap().display()
    );
    assert!(
        server.log().contains(&expected),
        "want {expected:?} in:\n{}",
        server.log()
    );
    assert!(server.log().contains(" 2 shards,"), "{}", server.log());
    assert!(server.stop().success());
    let cores = thread::available_parallelism().unwrap().get();
    let threads = (cores + 1).to_string();
    server.restart_with(&["-t", &threads]);
    let expected = format!("WARN  -t {threads} is more than the {cores} cores");
    assert!(
        server.log().contains(&expected),
        "want {expected:?} in:\n{}",
        server.log()
    );
    assert!(server.stop().success());
}

fn refused(data_dir: &Path, args: &[&str]) -> String {
    let (status, log) = run_until_exit(free_port(), data_dir, args);
    assert!(!status.success(), "{status}:\n{log}");
    assert!(!log.contains("listening on"), "{log}");
    log
}

/// Guards against: start-up errors that name neither the path nor the flag
/// at fault (`Permission denied (os error 13)`, `File exists`, a config
/// file's unknown key without file or line; issue 10).
#[test]
fn start_up_errors_name_the_path_or_flag_at_fault() {
    let dir = test_dir("admin-errors");

    let file = dir.join("a-file");
    std::fs::write(&file, "not a directory").unwrap();
    let log = refused(&file, &[]);
    assert!(
        log.contains(&format!("ERROR -H {}: not a directory", file.display())),
        "{log}"
    );
    assert_well_formed(&log);

    // A daemon that cannot start: the command fails with its error.
    let out = output_within(
        Command::new(mcqd_bin())
            .args(["-d", "-p", &free_port().to_string(), "-H"])
            .arg(&file),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("ERROR -H {}: not a directory", file.display())),
        "{stderr}"
    );

    if is_root() {
        let log = refused(&dir.join("data"), &["-u", "no-such-user"]);
        assert!(log.contains("ERROR -u no-such-user: no such user"), "{log}");
    }

    let conf = dir.join("mcqd.conf");
    std::fs::write(&conf, "# mcqd\nsync = always\nbogus = 2\n").unwrap();
    let log = refused(&dir.join("data"), &["-f", conf.to_str().unwrap()]);
    assert!(
        log.contains(&format!(
            "{}: line 3: unknown setting `bogus`",
            conf.display()
        )),
        "{log}"
    );

    let pid_file = dir.join("no-such-dir").join("mq.pid");
    let log = refused(&dir.join("data"), &["-P", pid_file.to_str().unwrap()]);
    assert!(
        log.contains(&format!(
            "cannot write the pid file {} (-P): No such file or directory",
            pid_file.display()
        )),
        "{log}"
    );

    // A data directory mcqd may not write: as root, one that root owns
    // while mcqd runs as nobody; otherwise one without write permission.
    let locked = dir.join("read-only");
    std::fs::create_dir(&locked).unwrap();
    let log = if is_root() && uid_of("nobody").is_some() {
        std::fs::write(locked.join("LOCK"), "").unwrap();
        refused(&locked, &["-u", "nobody"])
    } else {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o555)).unwrap();
        refused(&locked, &[])
    };
    assert!(log.contains("Permission denied"), "{log}");
    assert!(
        log.lines()
            .any(|l| l.contains("Permission denied") && l.contains(locked.to_str().unwrap())),
        "the path is not named:\n{log}"
    );
    // One nobody cannot even reach (a private directory on the way, as a
    // `mktemp -d` checkout has): the data directory is still the one named,
    // not the last directory nobody could see.
    if is_root() && uid_of("nobody").is_some() {
        use std::os::unix::fs::PermissionsExt;
        let private = dir.join("private");
        let inner = private.join("data");
        std::fs::create_dir_all(&inner).unwrap();
        std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o700)).unwrap();
        let log = refused(&inner, &["-u", "nobody"]);
        assert!(
            log.lines()
                .any(|l| l.contains("Permission denied") && l.contains(inner.to_str().unwrap())),
            "the path is not named:\n{log}"
        );
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
