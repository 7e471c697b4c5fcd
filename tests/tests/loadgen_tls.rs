//! mcq-loadgen over TLS and with memcached-style authentication, against
//! the real mcqd (`-Z`, `-Y`): what the generator counts is what the server
//! counted, mutual TLS, and a refused password or certificate is a clear
//! error and a non-zero exit; connection churn (`--reconnect-every`) opens
//! as many connections as the server accepted. Certificates are made at
//! test time with the `openssl` CLI, as in tls.rs.

use std::path::Path;
use std::process::{Command, Output};

use mcq_tests::certs::Certs;
use mcq_tests::{free_port, loadgen_bin, output_within, test_dir, text, Client, Server};
use serde_json::Value;

/// mcqd with TLS on its port (`tls_args`, maybe none) and a plaintext
/// listener beside it for the test's own `stats`; the plaintext port.
fn start(name: &str, tls_args: Vec<String>, extra: &[&str]) -> (Server, u16) {
    let plain = free_port();
    let mut args = tls_args;
    if !args.is_empty() {
        args.extend(["-l".into(), format!("127.0.0.1,notls:127.0.0.1:{plain}")]);
    }
    args.extend(["-t".into(), "2".into()]);
    args.extend(extra.iter().map(|s| s.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let server = Server::start(name, &args);
    let plain = if args.contains(&"-Z") {
        plain
    } else {
        server.port
    };
    (server, plain)
}

/// Runs the generator against `server`: its exit, stdout and stderr, and
/// the JSON report if it wrote one.
fn loadgen(server: &Server, args: &[&str]) -> (Output, Option<Value>) {
    let dir = server.data_dir.parent().unwrap().to_path_buf();
    let json = dir.join("report.json");
    let _ = std::fs::remove_file(&json);
    let out = output_within(
        Command::new(loadgen_bin())
            .args(["--server", &format!("127.0.0.1:{}", server.port), "--quiet"])
            .args(["--connections", "4", "--queues", "4"])
            .args(args)
            .arg("--json")
            .arg(&json),
    );
    let report = std::fs::read_to_string(&json)
        .ok()
        .map(|t| serde_json::from_str(&t).unwrap());
    (out, report)
}

/// A run that must succeed with no errors; its report.
fn ok(server: &Server, args: &[&str]) -> Value {
    let (out, report) = loadgen(server, args);
    assert!(out.status.success(), "{args:?}:\n{}", text(&out));
    let report = report.unwrap();
    assert_eq!(report["errors"].as_u64(), Some(0), "{report}");
    report
}

/// A run that must fail before any request: its stderr.
fn refused(server: &Server, args: &[&str]) -> String {
    let (out, _) = loadgen(server, args);
    assert!(!out.status.success(), "{args:?} succeeded:\n{}", text(&out));
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn stats(port: u16, login: Option<&[u8]>) -> std::collections::BTreeMap<String, String> {
    let mut c = Client::connect(port);
    if let Some(h) = login {
        c.expect(h, b"STORED\r\n");
    }
    c.stats()
}

fn stat(stats: &std::collections::BTreeMap<String, String>, name: &str) -> u64 {
    stats
        .get(name)
        .unwrap_or_else(|| panic!("no {name} in {stats:?}"))
        .parse()
        .unwrap()
}

/// `set` then `get` workloads over TLS; the counts match the server's.
fn set_then_get(server: &Server, plain: u16, args: &[&str], login: Option<&[u8]>) {
    let set: Vec<&str> = args
        .iter()
        .copied()
        .chain(["--workload", "set", "-n", "2000", "--pipeline", "4"])
        .collect();
    let report = ok(server, &set);
    let sets = report["sets"].as_u64().unwrap();
    assert!(sets >= 2000, "{report}");
    let s = stats(plain, login);
    assert_eq!(stat(&s, "cmd_set"), sets, "{s:?}");

    let get: Vec<&str> = args
        .iter()
        .copied()
        .chain(["--workload", "get", "-n", "2000", "--pipeline", "4"])
        .collect();
    let report = ok(server, &get);
    let (gets, hits) = (
        report["gets"].as_u64().unwrap(),
        report["hits"].as_u64().unwrap(),
    );
    assert!(gets >= 2000, "{report}");
    assert!(hits > 0 && hits <= sets, "{report}");
    let s = stats(plain, login);
    assert_eq!(stat(&s, "get_hits"), hits, "{s:?}");
}

#[test]
fn set_and_get_over_tls() {
    let dir = test_dir("lg-tls");
    let Some(certs) = Certs::make(&dir) else {
        return;
    };
    certs.serve("server1");
    let (server, plain) = start("lg-tls-srv", certs.args(""), &[]);
    let ca = certs.path("ca.pem");
    set_then_get(&server, plain, &["--tls", "--ca", &ca], None);
    let s = stats(plain, None);
    assert_eq!(stat(&s, "ssl_handshake_errors"), 0, "{s:?}");

    // The name verified defaults to the host of --server; another fails.
    let err = refused(
        &server,
        &["--tls", "--ca", &ca, "--tls-name", "example.com"],
    );
    assert!(err.contains("TLS handshake failed"), "{err}");
    // A CA that did not sign the server's certificate.
    let err = refused(&server, &["--tls", "--ca", &certs.path("rogue-ca.pem")]);
    assert!(err.contains("TLS handshake failed"), "{err}");
    // No --ca, or a file with no certificate in it.
    let err = refused(&server, &["--tls"]);
    assert!(err.contains("--tls needs --ca"), "{err}");
    let err = refused(&server, &["--tls", "--ca", &certs.path("ca.key")]);
    assert!(err.contains("no certificate"), "{err}");
}

#[test]
fn mutual_tls() {
    let dir = test_dir("lg-mtls");
    let Some(certs) = Certs::make(&dir) else {
        return;
    };
    certs.serve("server1");
    let extra = format!("ssl_verify_mode=2,ssl_ca_cert={}", certs.path("ca.pem"));
    let (server, plain) = start("lg-mtls-srv", certs.args(&extra), &[]);
    let ca = certs.path("ca.pem");
    let (cert, key) = (certs.path("alice.pem"), certs.path("alice.key"));
    set_then_get(
        &server,
        plain,
        &["--tls", "--ca", &ca, "--cert", &cert, "--key", &key],
        None,
    );
    // A client certificate from another CA is refused: the run fails.
    let (cert, key) = (certs.path("mallory.pem"), certs.path("mallory.key"));
    let err = refused(
        &server,
        &[
            "--tls", "--ca", &ca, "--cert", &cert, "--key", &key, "-n", "10",
        ],
    );
    assert!(
        err.contains("client certificate not accepted") && err.trim_end().lines().count() == 1,
        "{err}"
    );
    let err = refused(&server, &["--tls", "--ca", &ca, "--cert", &cert]);
    assert!(err.contains("--key"), "{err}");
}

fn authfile(dir: &Path) -> String {
    let path = dir.join("authfile");
    std::fs::write(&path, "alice:s3cret pass\n").unwrap();
    path.display().to_string()
}

const LOGIN: &[u8] = b"set auth 0 0 17\r\nalice s3cret pass\r\n";

#[test]
fn memcached_authentication() {
    let dir = test_dir("lg-auth");
    let auth = authfile(&dir);
    let (server, plain) = start("lg-auth-srv", Vec::new(), &["-Y", &auth]);
    let good = [
        "--auth",
        "alice:s3cret pass",
        "--workload",
        "set",
        "-n",
        "500",
    ];
    let report = ok(&server, &good);
    assert!(report["sets"].as_u64().unwrap() >= 500, "{report}");
    let s = stats(plain, Some(LOGIN));
    // The four connections' handshakes and the test's own.
    assert_eq!(stat(&s, "auth_cmds"), 5, "{s:?}");
    assert_eq!(stat(&s, "auth_errors"), 0, "{s:?}");

    let err = refused(&server, &["--auth", "alice:wrong", "-n", "10"]);
    assert!(
        err.contains("authentication as `alice` failed")
            && err.contains("CLIENT_ERROR authentication failure"),
        "{err}"
    );
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    // Without --auth every request is refused, and counted as an error.
    let (_, report) = loadgen(&server, &["--workload", "set", "-n", "10"]);
    let report = report.unwrap();
    assert_eq!(report["errors"], report["sets"], "{report}");
}

#[test]
fn tls_and_authentication() {
    let dir = test_dir("lg-tls-auth");
    let Some(certs) = Certs::make(&dir) else {
        return;
    };
    certs.serve("server1");
    let auth = authfile(&dir);
    let (server, plain) = start("lg-tls-auth-srv", certs.args(""), &["-Y", &auth]);
    let ca = certs.path("ca.pem");
    set_then_get(
        &server,
        plain,
        &["--tls", "--ca", &ca, "--auth", "alice:s3cret pass"],
        Some(LOGIN),
    );
    let err = refused(&server, &["--tls", "--ca", &ca, "--auth", "alice:nope"]);
    assert!(err.contains("CLIENT_ERROR authentication failure"), "{err}");
}

/// `--reconnect-every 5` for 200 sets: every connection is replaced after 5
/// requests, so at least 40 connections are opened (4 of them at the
/// start), each through TCP, the TLS handshake (with `--tls`) and
/// `--auth` (when given); mcqd accepted every one, and no request failed.
fn churn(server: &Server, plain: u16, args: &[&str], login: Option<&[u8]>) {
    let before = stat(&stats(plain, login), "total_connections");
    let args: Vec<&str> = args
        .iter()
        .copied()
        .chain(["--workload", "set", "-n", "200", "--reconnect-every", "5"])
        .collect();
    let (out, report) = loadgen(server, &args);
    assert!(out.status.success(), "{args:?}:\n{}", text(&out));
    let report = report.unwrap();
    assert_eq!(report["errors"].as_u64(), Some(0), "{report}");
    assert!(report["sets"].as_u64().unwrap() >= 200, "{report}");
    let opened = report["connections_opened"].as_u64().unwrap();
    // At most 5 requests a socket, fewer only on each connection's last.
    assert!((40..=44).contains(&opened), "{report}");
    let churn = &report["churn"];
    assert_eq!(churn["reconnect_every"], 5, "{report}");
    // No warm-up: all but the first 4 were opened in the measured window.
    assert_eq!(churn["opened"].as_u64(), Some(opened - 4), "{report}");
    assert_eq!(
        churn["setup_us"]["count"].as_u64(),
        Some(opened - 4),
        "{report}"
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains(&format!("connections  {opened} opened")) && stdout.contains("conn setup"),
        "{stdout}"
    );
    let s = stats(plain, login);
    // The test's own `stats` connection counts too.
    let after = stat(&s, "total_connections");
    assert!(
        after - before >= opened,
        "{before} -> {after}, {opened} opened"
    );
    assert_eq!(
        stat(&s, "cmd_set"),
        report["sets"].as_u64().unwrap(),
        "{s:?}"
    );
    if args.contains(&"--tls") {
        assert_eq!(stat(&s, "ssl_handshake_errors"), 0, "{s:?}");
        assert_eq!(stat(&s, "ssl_proto_errors"), 0, "{s:?}");
    }
    if login.is_some() {
        // Every connection authenticated, and the test's two.
        assert_eq!(stat(&s, "auth_cmds"), opened + 2, "{s:?}");
        assert_eq!(stat(&s, "auth_errors"), 0, "{s:?}");
    }
}

#[test]
fn reconnect_every_over_tls() {
    let dir = test_dir("lg-tls-churn");
    let Some(certs) = Certs::make(&dir) else {
        return;
    };
    certs.serve("server1");
    let (server, plain) = start("lg-tls-churn-srv", certs.args(""), &[]);
    let ca = certs.path("ca.pem");
    churn(&server, plain, &["--tls", "--ca", &ca], None);
}

#[test]
fn reconnect_every_over_tls_with_authentication() {
    let dir = test_dir("lg-tls-auth-churn");
    let Some(certs) = Certs::make(&dir) else {
        return;
    };
    certs.serve("server1");
    let auth = authfile(&dir);
    let (server, plain) = start("lg-tls-auth-churn-srv", certs.args(""), &["-Y", &auth]);
    let ca = certs.path("ca.pem");
    churn(
        &server,
        plain,
        &["--tls", "--ca", &ca, "--auth", "alice:s3cret pass"],
        Some(LOGIN),
    );
}

#[test]
fn reconnect_every_in_plaintext() {
    let (server, plain) = start("lg-plain-churn-srv", Vec::new(), &[]);
    churn(&server, plain, &[], None);
}
