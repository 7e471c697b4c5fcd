//! Third-party memcache clients against the real server: PHP's `memcache`
//! extension (the MemcacheQ documentation's own example) and Python's
//! pymemcache. Each skips loudly when its client is missing on a developer's
//! machine, and fails under CI (`CI` set), which installs them.

use std::path::Path;

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
