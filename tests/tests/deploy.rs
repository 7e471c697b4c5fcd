//! Deployment: the systemd unit (`scripts/mcqd.service`) as systemd judges
//! it, the readiness protocol it relies on (`Type=notify`) spoken by the
//! real binary, and the Debian packages `cargo deb` builds.
//!
//! These machines do not run systemd as PID 1, so the unit is never started
//! here: `systemd-analyze` checks it offline, and the notify test plays
//! systemd's part itself (a datagram socket named by `NOTIFY_SOCKET`).

use std::io::{BufRead, Read, Write};
use std::net::TcpStream;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use mcq_tests::{
    exit_within, free_port, loadgen_bin, mcqd_bin, output_within, skip, test_dir, PATIENCE,
};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// Whether systemd-analyze is installed and new enough for `--offline`
/// (systemd 250); when not, the test skips.
fn have_systemd_analyze() -> bool {
    let out = match Command::new("systemd-analyze").arg("--version").output() {
        Ok(out) if out.status.success() => out,
        _ => {
            skip("systemd-analyze is not installed (Debian: systemd)");
            return false;
        }
    };
    let text = String::from_utf8_lossy(&out.stdout);
    let version: u32 = text
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    if version < 250 {
        skip(&format!(
            "systemd-analyze {version} has no `security --offline` (needs systemd 250)"
        ));
        return false;
    }
    true
}

/// The unit as shipped, but starting the mcqd under test: `verify` checks
/// that ExecStart's binary exists and is executable.
fn unit_for_this_machine(dir: &Path) -> PathBuf {
    let unit = std::fs::read_to_string(repo().join("scripts/mcqd.service")).unwrap();
    assert!(
        unit.contains("ExecStart=/usr/bin/mcqd "),
        "the package installs the binary as /usr/bin/mcqd:\n{unit}"
    );
    let unit = unit.replace(
        "ExecStart=/usr/bin/mcqd ",
        &format!("ExecStart={} ", mcqd_bin().display()),
    );
    let path = dir.join("mcqd.service");
    std::fs::write(&path, unit).unwrap();
    path
}

#[test]
fn unit_passes_verify_and_security_exposure_is_at_most_2_5() {
    if !have_systemd_analyze() {
        return;
    }
    let dir = test_dir("deploy-unit");
    let unit = unit_for_this_machine(&dir);

    let out = output_within(Command::new("systemd-analyze").arg("verify").arg(&unit));
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "systemd-analyze verify:\n{said}");
    assert!(
        !said.contains("mcqd.service"),
        "systemd-analyze verify complains about the unit:\n{said}"
    );

    let out = output_within(
        Command::new("systemd-analyze")
            .args(["security", "--offline=true", "--no-pager"])
            .arg(&unit),
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find(|l| l.contains("Overall exposure level for mcqd.service"))
        .unwrap_or_else(|| {
            panic!(
                "no overall exposure in:\n{text}\n{}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
    let score: f64 = line
        .rsplit(':')
        .next()
        .and_then(|s| s.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("cannot read the score in {line:?}"));
    assert!(score <= 2.5, "exposure {score} > 2.5:\n{text}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// A child killed if the test fails before it exits.
struct KillOnDrop(Option<std::process::Child>);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(child) = &mut self.0 {
            if child.try_wait().ok().flatten().is_none() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

/// A datagram socket in the abstract namespace (no path-length limit, no
/// file to clean up), named as systemd names it in `NOTIFY_SOCKET`.
fn notify_socket() -> (UnixDatagram, String) {
    static N: AtomicUsize = AtomicUsize::new(0);
    let name = format!(
        "mcq-notify-test-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    );
    let addr = SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
    let socket = UnixDatagram::bind_addr(&addr).unwrap();
    socket.set_read_timeout(Some(PATIENCE)).unwrap();
    (socket, format!("@{name}"))
}

fn next_state(socket: &UnixDatagram, waiting_for: &str) -> String {
    let mut buf = [0u8; 4096];
    match socket.recv(&mut buf) {
        Ok(n) => String::from_utf8_lossy(&buf[..n]).into_owned(),
        Err(e) => panic!("no notification ({waiting_for}) within {PATIENCE:?}: {e}"),
    }
}

#[test]
fn notify_ready_once_listening_reloading_on_sighup_stopping_on_sigterm() {
    let dir = test_dir("deploy-notify");
    let config = dir.join("mcqd.conf");
    std::fs::write(&config, "[queue jobs]\nmax_items = 5\n").unwrap();
    let (socket, name) = notify_socket();
    let port = free_port();
    let mcqd = Command::new(mcqd_bin())
        .args(["-p", &port.to_string(), "-t", "2", "-f"])
        .arg(&config)
        .arg("-H")
        .arg(dir.join("data"))
        .env("NOTIFY_SOCKET", &name)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start mcqd");
    let pid = mcqd.id() as i32;
    let mut mcqd = KillOnDrop(Some(mcqd));
    let mcqd = mcqd.0.as_mut().unwrap();

    // The first thing mcqd says is READY=1, and once it has, the port takes
    // connections at once: every executor listens, recovery is done.
    let first = next_state(&socket, "READY=1");
    assert!(
        first.lines().any(|l| l == "READY=1"),
        "first notification: {first:?}"
    );
    let mut conn = TcpStream::connect(("127.0.0.1", port))
        .unwrap_or_else(|e| panic!("READY=1 sent, but port {port} refuses: {e}"));
    conn.set_read_timeout(Some(PATIENCE)).unwrap();
    conn.write_all(b"set jobs 0 0 2\r\nhi\r\n").unwrap();
    let mut reply = [0u8; 8];
    conn.read_exact(&mut reply).unwrap();
    assert_eq!(&reply, b"STORED\r\n");

    // SIGHUP: RELOADING=1 (with the monotonic time systemd wants), then
    // READY=1 again.
    // SAFETY: signalling our own child.
    unsafe { libc::kill(pid, libc::SIGHUP) };
    let reloading = next_state(&socket, "RELOADING=1");
    assert!(
        reloading.lines().any(|l| l == "RELOADING=1")
            && reloading.lines().any(|l| l.starts_with("MONOTONIC_USEC=")),
        "{reloading:?}"
    );
    let ready = next_state(&socket, "READY=1 after the reload");
    assert!(ready.lines().any(|l| l == "READY=1"), "{ready:?}");

    // SIGTERM: STOPPING=1, then a clean exit.
    // SAFETY: signalling our own child.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    let stopping = next_state(&socket, "STOPPING=1");
    assert!(stopping.lines().any(|l| l == "STOPPING=1"), "{stopping:?}");
    let status = exit_within(mcqd, PATIENCE)
        .unwrap_or_else(|| panic!("mcqd did not exit within {PATIENCE:?} of SIGTERM"));
    assert!(status.success(), "{status}");
    socket
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let mut buf = [0u8; 256];
    if let Ok(n) = socket.recv(&mut buf) {
        panic!(
            "a notification after STOPPING=1: {:?}",
            String::from_utf8_lossy(&buf[..n])
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_notify_socket_nobody_listens_on_is_logged_not_fatal() {
    // NOTIFY_SOCKET naming nothing that listens: mcqd says so and serves
    // anyway (readiness is a courtesy, not a condition).
    let dir = test_dir("deploy-no-listener");
    let port = free_port();
    let mcqd = Command::new(mcqd_bin())
        .args(["-p", &port.to_string(), "-t", "1", "-H"])
        .arg(dir.join("data"))
        .env("NOTIFY_SOCKET", dir.join("nobody-listens"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start mcqd");
    let mut mcqd = KillOnDrop(Some(mcqd));
    let mcqd = mcqd.0.as_mut().unwrap();
    let (lines, log) = std::sync::mpsc::channel();
    let stderr = mcqd.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            eprintln!("[mcqd] {line}");
            let _ = lines.send(line);
        }
    });
    let mut said = String::new();
    while !said.contains("cannot tell systemd READY=1 through") {
        match log.recv_timeout(PATIENCE) {
            Ok(line) => said += &(line + "\n"),
            Err(e) => panic!("no word of the failed READY=1 ({e}):\n{said}"),
        }
    }
    let mut conn = TcpStream::connect(("127.0.0.1", port)).expect("mcqd serves");
    conn.set_read_timeout(Some(PATIENCE)).unwrap();
    conn.write_all(b"version\r\n").unwrap();
    let mut reply = [0u8; 8];
    conn.read_exact(&mut reply).unwrap();
    assert_eq!(&reply, b"VERSION ");
    // SAFETY: signalling our own child.
    unsafe { libc::kill(mcqd.id() as i32, libc::SIGTERM) };
    let status = exit_within(mcqd, PATIENCE).expect("exits on SIGTERM");
    assert!(status.success(), "{status}:\n{said}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// cargo-deb, when installed; otherwise the test skips.
fn cargo() -> Option<Command> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let probe = Command::new(&cargo)
        .args(["deb", "--version"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    if !probe.is_ok_and(|s| s.success()) {
        skip("cargo-deb is not installed (cargo install cargo-deb --locked)");
        return None;
    }
    let mut command = Command::new(cargo);
    command.current_dir(repo());
    Some(command)
}

fn run_ok(command: &mut Command) -> String {
    // A build (cargo deb builds the release binary) on a busy 2-core
    // machine takes minutes: bounded, but not by the harness's PATIENCE.
    let child = command
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {command:?}: {e}"));
    let out = mcq_tests::finish_within(child, Duration::from_secs(1800));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{command:?}:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// Packages `crate_name` into `dir` and returns the package's path. The
/// binary is the release build the other end-to-end tests run (`--no-build`:
/// rebuilding here could replace it under them), checked fresh first.
fn build_deb(crate_name: &str, dir: &Path) -> Option<PathBuf> {
    let mut cargo = cargo()?;
    let _fresh = match crate_name {
        "mcqd" => mcqd_bin(),
        _ => loadgen_bin(),
    };
    run_ok(
        cargo
            .args(["deb", "--no-build", "-p", crate_name, "--output"])
            .arg(dir),
    );
    let debs: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "deb"))
        .collect();
    assert_eq!(debs.len(), 1, "one package in {}: {debs:?}", dir.display());
    Some(debs[0].clone())
}

/// `dpkg-deb -f <deb> <field>`.
fn field(deb: &Path, name: &str) -> String {
    run_ok(Command::new("dpkg-deb").arg("-f").arg(deb).arg(name))
        .trim()
        .to_string()
}

#[test]
fn debian_package_holds_the_server_unit_config_and_docs() {
    let dir = test_dir("deploy-deb");
    let Some(deb) = build_deb("mcqd", &dir) else {
        return;
    };
    let version = env!("CARGO_PKG_VERSION");
    assert_eq!(field(&deb, "Package"), "mcqd");
    assert!(
        field(&deb, "Version").starts_with(version),
        "{}",
        field(&deb, "Version")
    );
    assert!(
        field(&deb, "Depends").contains("libc6"),
        "{}",
        field(&deb, "Depends")
    );

    let listing = run_ok(Command::new("dpkg-deb").arg("-c").arg(&deb));
    let files: Vec<&str> = listing
        .lines()
        .filter_map(|l| l.split_whitespace().last())
        .collect();
    for wanted in [
        "./usr/bin/mcqd",
        "./etc/mcqd/mcqd.conf",
        "./usr/share/doc/mcqd/README.md",
        "./usr/share/doc/mcqd/protocol.md",
        "./usr/share/doc/mcqd/copyright",
    ] {
        assert!(files.contains(&wanted), "{wanted} not in\n{listing}");
    }
    // The binary is stripped; its debug info moved beside it.
    assert!(
        files
            .iter()
            .any(|f| f.starts_with("./usr/lib/debug/.build-id/") && f.ends_with(".debug")),
        "no separate debug info in\n{listing}"
    );
    let unit = files
        .iter()
        .find(|f| f.ends_with("/systemd/system/mcqd.service"))
        .unwrap_or_else(|| panic!("no systemd unit in\n{listing}"));
    assert!(
        !files.iter().any(|f| f.contains("mcq-loadgen")),
        "{listing}"
    );

    // The config is a conffile (an admin's edits survive upgrades), and the
    // maintainer scripts enable and start the unit.
    let info = run_ok(Command::new("dpkg-deb").arg("-I").arg(&deb));
    let control = dir.join("control");
    run_ok(Command::new("dpkg-deb").arg("-e").arg(&deb).arg(&control));
    let conffiles = std::fs::read_to_string(control.join("conffiles")).unwrap_or_default();
    assert!(
        conffiles.lines().any(|l| l == "/etc/mcqd/mcqd.conf"),
        "conffiles: {conffiles:?}\n{info}"
    );
    let postinst = std::fs::read_to_string(control.join("postinst")).unwrap_or_default();
    assert!(
        postinst.contains("mcqd.service") && postinst.contains("enable"),
        "postinst does not enable mcqd.service:\n{postinst}"
    );

    // Unpacked into a scratch root: the files are the repository's, and the
    // binary runs.
    let root = dir.join("root");
    run_ok(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&root));
    let same = |packaged: &str, ours: &str| {
        assert_eq!(
            std::fs::read_to_string(root.join(packaged.trim_start_matches("./"))).unwrap(),
            std::fs::read_to_string(repo().join(ours)).unwrap(),
            "{packaged} differs from {ours}"
        );
    };
    same(unit, "scripts/mcqd.service");
    same("./etc/mcqd/mcqd.conf", "scripts/mcqd.conf");
    let said = run_ok(Command::new(root.join("usr/bin/mcqd")).arg("--version"));
    assert_eq!(said.trim(), format!("mcqd {version}"));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn debian_package_of_the_load_generator() {
    let dir = test_dir("deploy-deb-loadgen");
    let Some(deb) = build_deb("mcq-loadgen", &dir) else {
        return;
    };
    assert_eq!(field(&deb, "Package"), "mcq-loadgen");
    let root = dir.join("root");
    run_ok(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&root));
    assert!(root.join("usr/share/doc/mcq-loadgen/README.md").is_file());
    let said = run_ok(Command::new(root.join("usr/bin/mcq-loadgen")).arg("--version"));
    assert_eq!(
        said.trim(),
        format!("mcq-loadgen {}", env!("CARGO_PKG_VERSION"))
    );
    let _ = std::fs::remove_dir_all(&dir);
}
