//! Third-party memcache clients against the real server: PHP's `memcache`
//! extension (the MemcacheQ documentation's own example) and Python's
//! pymemcache. Each skips loudly when its client is missing on a developer's
//! machine, and fails under CI (`CI` set), which installs them.

use std::path::Path;
use std::process::Command;

use mcq_tests::{output_within, third_party, Server};

fn script(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("clients")
        .join(name)
        .display()
        .to_string()
}

fn run(mut command: std::process::Command, what: &str) {
    let out = output_within(&mut command);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{what} failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains("session ok"), "{what}: {stdout}\n{stderr}");
}

#[test]
fn php_memcache_extension() {
    let server = Server::start("php", &["-t", "2"]);
    let script = script("session.php");
    let port = server.port.to_string();
    if let Some(cmd) = third_party(
        "php",
        &[&script, &port],
        &["-r", "exit(function_exists('memcache_connect') ? 0 : 1);"],
        "PHP with the memcache extension (Debian: php-cli php-memcache)",
    ) {
        run(cmd, "php session.php");
    }
}

#[test]
fn python_pymemcache() {
    let server = Server::start("python", &["-t", "2"]);
    let script = script("session.py");
    let port = server.port.to_string();
    // Debian's pymemcache lives with Debian's python3, which may not be the
    // first python3 on PATH.
    let python = ["python3", "/usr/bin/python3"]
        .into_iter()
        .find(|py| {
            std::process::Command::new(py)
                .args(["-c", "import pymemcache"])
                .output()
                .map(|o| o.status.success())
                .unwrap_or(false)
        })
        .unwrap_or("python3");
    if let Some(cmd) = third_party(
        python,
        &[&script, &port],
        &["-c", "import pymemcache"],
        "Python with pymemcache (Debian: python3-pymemcache)",
    ) {
        run(cmd, "python3 session.py");
    }
}

/// memaslap (libmemcached's load tool, `memcaslap` in Debian) keys every
/// request with 8 binary bytes and then letters: every set it makes must
/// be stored, and `stats` must show them.
#[test]
fn memaslap_runs_against_mcqd() {
    let server = Server::start("memaslap", &["-t", "2"]);
    let target = format!("127.0.0.1:{}", server.port);
    // Debian renames libmemcached's `memaslap` to `memcaslap`; nixpkgs and
    // others keep the upstream name.
    let found = |name: &str| Command::new(name).arg("--version").output().is_ok();
    let program = if !found("memcaslap") && found("memaslap") {
        "memaslap"
    } else {
        "memcaslap"
    };
    let Some(mut cmd) = third_party(
        program,
        &[
            "-s", &target, "-T", "1", "-c", "4", "-w", "1k", "-x", "2000",
        ],
        &["--version"],
        "memaslap (Debian: libmemcached-tools)",
    ) else {
        return;
    };
    let out = output_within(&mut cmd);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "memcaslap failed:\n{stdout}\n{stderr}"
    );
    let mut c = server.client();
    c.send(b"stats\r\n");
    let stats = String::from_utf8(c.read_until(b"END\r\n")).unwrap();
    let stat = |name: &str| -> u64 {
        stats
            .lines()
            .find_map(|l| l.strip_prefix(&format!("STAT {name} ")))
            .unwrap_or_else(|| panic!("no {name} in {stats}"))
            .parse()
            .unwrap()
    };
    let sets = stat("cmd_set");
    assert!(sets > 0, "memaslap set nothing:\n{stdout}\n{stats}");
    // Every set was stored: what the queues took in is what was set.
    c.send(b"stats queue\r\n");
    let listing = c.read_until(b"END\r\n");
    let enqueued: u64 = listing
        .split(|&b| b == b'\n')
        .filter_map(|line| {
            let line = line.strip_suffix(b"\r")?.strip_prefix(b"STAT ")?;
            let counts = &line[line.iter().rposition(|&b| b == b' ')? + 1..];
            let (enqueued, _) = std::str::from_utf8(counts).ok()?.split_once('/')?;
            enqueued.parse::<u64>().ok()
        })
        .sum();
    assert_eq!(enqueued, sets, "{stdout}");
    assert_eq!(
        stat("curr_items") + stat("get_hits"),
        sets,
        "what is queued plus what was got is what was set"
    );
    assert!(stats.contains("STAT curr_queues "), "{stats}");
}
