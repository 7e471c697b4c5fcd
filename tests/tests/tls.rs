//! TLS (issue 23): memcached's -Z, -o ssl_… and `notls:` listeners, over
//! the real binary. Certificates are made at test time with the `openssl`
//! CLI (a CA, two server certificates, a client certificate, and a client
//! certificate from another CA); the test's own client is rustls, and
//! `openssl s_client` and pymemcache are the third-party clients.

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use mcq_tests::certs::{rand_serial, Certs};
use mcq_tests::{
    finish_within, free_port, output_within, run_until_exit, test_dir, text, third_party, Client,
    Server, PATIENCE,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};

/// rustls client configurations trusting the test CA.
trait TlsClients {
    fn client(&self) -> Arc<ClientConfig>;
    fn client_with(
        &self,
        identity: Option<&str>,
        versions: &[&'static rustls::SupportedProtocolVersion],
    ) -> Arc<ClientConfig>;
}

impl TlsClients for Certs {
    fn client(&self) -> Arc<ClientConfig> {
        self.client_with(None, &[&rustls::version::TLS13, &rustls::version::TLS12])
    }

    /// A client that trusts the CA, presents `identity`'s certificate if
    /// given, and speaks `versions`.
    fn client_with(
        &self,
        identity: Option<&str>,
        versions: &[&'static rustls::SupportedProtocolVersion],
    ) -> Arc<ClientConfig> {
        let mut roots = RootCertStore::empty();
        for cert in CertificateDer::pem_file_iter(self.path("ca.pem")).unwrap() {
            roots.add(cert.unwrap()).unwrap();
        }
        let builder = ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(versions)
            .unwrap()
            .with_root_certificates(roots);
        Arc::new(match identity {
            None => builder.with_no_client_auth(),
            Some(name) => {
                let chain = CertificateDer::pem_file_iter(self.path(&format!("{name}.pem")))
                    .unwrap()
                    .collect::<Result<Vec<_>, _>>()
                    .unwrap();
                let key = PrivateKeyDer::from_pem_file(self.path(&format!("{name}.key"))).unwrap();
                builder.with_client_auth_cert(chain, key).unwrap()
            }
        })
    }
}

#[allow(deprecated)] // ring has no post-quantum key exchange; neither has mcqd.
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A memcache client over TLS (rustls, blocking).
struct Tls {
    stream: StreamOwned<ClientConnection, TcpStream>,
    buf: Vec<u8>,
}

impl Tls {
    /// Connects and completes the handshake (as far as the client sees
    /// it: with TLS 1.3 a server that refuses the client's certificate
    /// says so only on the first read).
    fn connect(port: u16, config: Arc<ClientConfig>) -> std::io::Result<Tls> {
        let mut socket = TcpStream::connect(("127.0.0.1", port))?;
        socket.set_read_timeout(Some(PATIENCE))?;
        socket.set_write_timeout(Some(PATIENCE))?;
        socket.set_nodelay(true)?;
        let name = ServerName::try_from("localhost").unwrap();
        let mut conn = ClientConnection::new(config, name).map_err(std::io::Error::other)?;
        while conn.is_handshaking() {
            conn.complete_io(&mut socket)?;
        }
        Ok(Tls {
            stream: StreamOwned::new(conn, socket),
            buf: Vec::new(),
        })
    }

    fn open(port: u16, config: Arc<ClientConfig>) -> Tls {
        Tls::connect(port, config).expect("TLS connection")
    }

    /// The CN of the certificate the server presented.
    fn server_name(&self) -> String {
        let cert = &self.stream.conn.peer_certificates().unwrap()[0];
        mcqd::net::identity(cert).unwrap()
    }

    fn version(&self) -> rustls::ProtocolVersion {
        self.stream.conn.protocol_version().unwrap()
    }

    fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("send over TLS");
        self.stream.flush().unwrap();
    }

    /// Everything up to and including `end`, or the error or end of
    /// stream that came first.
    fn try_read_until(&mut self, end: &[u8]) -> std::io::Result<Vec<u8>> {
        let deadline = Instant::now() + PATIENCE;
        let mut chunk = [0u8; 65536];
        loop {
            if let Some(at) = self.buf.windows(end.len()).position(|w| w == end) {
                return Ok(self.buf.drain(..at + end.len()).collect());
            }
            assert!(Instant::now() < deadline, "no {end:?} within {PATIENCE:?}");
            match self.stream.read(&mut chunk) {
                Ok(0) => return Err(ErrorKind::UnexpectedEof.into()),
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    fn read_until(&mut self, end: &[u8]) -> Vec<u8> {
        self.try_read_until(end)
            .unwrap_or_else(|e| panic!("reading over TLS: {e}; have {:?}", self.buf))
    }

    fn expect(&mut self, request: &str, reply: &str) {
        self.send(request.as_bytes());
        let got = self.read_until(b"\r\n");
        let got = if got.starts_with(b"VALUE") {
            [got, self.read_until(b"END\r\n")].concat()
        } else {
            got
        };
        assert_eq!(String::from_utf8_lossy(&got), reply, "reply to {request:?}");
    }

    fn stats(&mut self) -> std::collections::BTreeMap<String, String> {
        self.send(b"stats\r\n");
        let text = String::from_utf8(self.read_until(b"END\r\n")).unwrap();
        text.lines()
            .filter_map(|l| l.strip_prefix("STAT "))
            .map(|l| {
                let (k, v) = l.split_once(' ').unwrap();
                (k.to_string(), v.to_string())
            })
            .collect()
    }
}

fn start(name: &str, args: &[String]) -> Server {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    Server::start(name, &args)
}

fn wait_for_log(server: &Server, what: &str) -> String {
    let log = server.log_with(what);
    assert!(log.contains(what), "no {what:?} in the log:\n{log}");
    log
}

/// Waits until `stats` (asked over a fresh TLS connection) satisfies
/// `done`; returns them.
fn wait_for_stats(
    port: u16,
    config: &Arc<ClientConfig>,
    done: impl Fn(&std::collections::BTreeMap<String, String>) -> bool,
) -> std::collections::BTreeMap<String, String> {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let stats = Tls::open(port, config.clone()).stats();
        if done(&stats) {
            return stats;
        }
        assert!(
            Instant::now() < deadline,
            "stats never got there: {stats:?}"
        );
        thread::sleep(Duration::from_millis(50));
    }
}

fn stat(stats: &std::collections::BTreeMap<String, String>, name: &str) -> u64 {
    stats
        .get(name)
        .unwrap_or_else(|| panic!("no {name} in {stats:?}"))
        .parse()
        .unwrap()
}

#[test]
fn set_and_get_over_tls_beside_a_notls_listener() {
    let dir = test_dir("tls-basic");
    let Some(certs) = Certs::make(&dir) else {
        return;
    };
    certs.serve("server1");
    let plain = free_port();
    let mut args = certs.args("");
    args.extend([
        "-l".into(),
        format!("127.0.0.1,notls:127.0.0.1:{plain}"),
        "-t".into(),
        "2".into(),
    ]);
    let server = start("tls-basic", &args);
    let log = server.log();
    assert!(
        log.contains(&format!(
            "listening on 127.0.0.1:{} (TLS), 127.0.0.1:{plain} (notls)",
            server.port
        )),
        "{log}"
    );
    let mut tls = Tls::open(server.port, certs.client());
    assert_eq!(tls.server_name(), "server1");
    tls.expect("set q 0 0 5\r\nhello\r\n", "STORED\r\n");
    tls.expect("set q 7 0 5\r\nworld\r\n", "STORED\r\n");
    tls.expect("get q\r\n", "VALUE q 0 5\r\nhello\r\nEND\r\n");
    // The notls listener is the same server, in plaintext.
    let mut client = Client::connect(plain);
    assert_eq!(client.get("q").as_deref(), Some(&b"world"[..]));
    client.set("q", b"from plaintext");
    tls.expect("get q\r\n", "VALUE q 0 14\r\nfrom plaintext\r\nEND\r\n");
    // Both protocol versions.
    for (version, want) in [
        (&rustls::version::TLS12, rustls::ProtocolVersion::TLSv1_2),
        (&rustls::version::TLS13, rustls::ProtocolVersion::TLSv1_3),
    ] {
        let mut tls = Tls::open(server.port, certs.client_with(None, &[version]));
        assert_eq!(tls.version(), want);
        tls.expect(
            "version\r\n",
            &format!("VERSION {}\r\n", env!("CARGO_PKG_VERSION")),
        );
    }
    // No client certificate was asked for: none gives an identity.
    assert!(!server.log().contains("client certificate names"));
}

#[test]
fn ssl_min_version_3_refuses_tls_1_2() {
    let dir = test_dir("tls-13");
    let Some(certs) = Certs::make(&dir) else {
        return;
    };
    certs.serve("server1");
    let server = start("tls-13", &certs.args("ssl_min_version=3"));
    let mut tls = Tls::open(server.port, certs.client());
    assert_eq!(tls.version(), rustls::ProtocolVersion::TLSv1_3);
    tls.expect(
        "version\r\n",
        &format!("VERSION {}\r\n", env!("CARGO_PKG_VERSION")),
    );
    let refused = Tls::connect(
        server.port,
        certs.client_with(None, &[&rustls::version::TLS12]),
    );
    assert!(refused.is_err(), "a TLS 1.2 client was served");
    let stats = wait_for_stats(server.port, &certs.client(), |s| {
        stat(s, "ssl_handshake_errors") >= 1
    });
    assert_eq!(stat(&stats, "ssl_proto_errors"), 0);
}

/// A real third-party TLS client: `openssl s_client`.
#[test]
fn openssl_s_client() {
    let dir = test_dir("tls-s-client");
    let Some(certs) = Certs::make(&dir) else {
        return;
    };
    certs.serve("server1");
    let server = start("tls-s-client", &certs.args(""));
    let mut child = Command::new("openssl")
        .args(["s_client", "-quiet", "-verify_return_error", "-CAfile"])
        .arg(certs.path("ca.pem"))
        .args(["-verify_hostname", "localhost", "-connect"])
        .arg(format!("127.0.0.1:{}", server.port))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("openssl s_client");
    // The server closes the connection after `quit`, which ends s_client.
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"set sq 0 0 5\r\nhello\r\nget sq\r\nquit\r\n")
        .unwrap();
    let out = finish_within(child, PATIENCE);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "STORED\r\nVALUE sq 0 5\r\nhello\r\nEND\r\n",
        "{}",
        text(&out)
    );
}

/// A memcache client library over TLS: pymemcache's `tls_context`
/// (Python's `ssl` module), with a client certificate.
#[test]
fn pymemcache_tls_context() {
    let dir = test_dir("tls-pymemcache");
    let Some(certs) = Certs::make(&dir) else {
        return;
    };
    certs.serve("server1");
    let server = start(
        "tls-pymemcache",
        &certs.args(&format!(
            "ssl_verify_mode=2,ssl_ca_cert={}",
            certs.path("ca.pem")
        )),
    );
    let script = r#"
import ssl, sys
from pymemcache.client.base import Client
port, ca, cert, key = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
ctx = ssl.create_default_context(cafile=ca)
ctx.load_cert_chain(cert, key)
c = Client(("localhost", port), tls_context=ctx, default_noreply=False)
assert c.set("pyq", b"over tls") is True
assert c.get("pyq") == b"over tls"
assert c.get("pyq") is None
print("ok", c.version().decode())
"#;
    let port = server.port.to_string();
    let (ca, cert, key) = (
        certs.path("ca.pem"),
        certs.path("alice.pem"),
        certs.path("alice.key"),
    );
    // Debian's pymemcache lives with Debian's python3, which may not be the
    // first python3 on PATH.
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
        &["-c", script, &port, &ca, &cert, &key],
        &["-c", "import pymemcache, ssl"],
        "Python with pymemcache (Debian: python3-pymemcache)",
    ) else {
        return;
    };
    let out = output_within(&mut cmd);
    assert!(
        out.status.success() && text(&out).starts_with("ok "),
        "pymemcache over TLS:\n{}",
        text(&out)
    );
}

/// Plaintext and garbage to the TLS port: the connection is closed,
/// nothing is served, the handshake error is counted, the server stays up.
#[test]
fn plaintext_to_the_tls_port_fails_cleanly() {
    let dir = test_dir("tls-plain");
    let Some(certs) = Certs::make(&dir) else {
        return;
    };
    certs.serve("server1");
    let server = start("tls-plain", &certs.args(""));
    for garbage in [
        &b"set q 0 0 5\r\nhello\r\nget q\r\n"[..],
        b"\x16\x03\x01\x00\x05hello",
        &[0xffu8; 4096],
    ] {
        let mut client = Client::connect(server.port);
        let _ = client.stream.write_all(garbage);
        let mut got = Vec::new();
        let _ = client.stream.read_to_end(&mut got);
        // At most a TLS alert record (content type 21), never a reply.
        assert!(
            got.is_empty() || got[0] == 21,
            "the TLS port answered plaintext: {:?}",
            String::from_utf8_lossy(&got)
        );
    }
    let config = certs.client();
    let mut tls = Tls::open(server.port, config.clone());
    tls.expect("get q\r\n", "END\r\n");
    let stats = wait_for_stats(server.port, &config, |s| {
        stat(s, "ssl_handshake_errors") >= 3
    });
    assert_eq!(stat(&stats, "ssl_proto_errors"), 0);
    assert!(
        stats.contains_key("time_since_server_cert_refresh"),
        "{stats:?}"
    );
    assert!(
        !stats.contains_key("ssl_new_sessions"),
        "only with ssl_session_cache"
    );
    assert_eq!(stat(&stats, "cmd_set"), 0, "nothing was served");
}

/// A bad record after the handshake: `ssl_proto_errors`.
#[test]
fn a_bad_record_after_the_handshake_is_a_proto_error() {
    let dir = test_dir("tls-proto");
    let Some(certs) = Certs::make(&dir) else {
        return;
    };
    certs.serve("server1");
    let server = start("tls-proto", &certs.args(""));
    let mut tls = Tls::open(server.port, certs.client());
    tls.expect(
        "version\r\n",
        &format!("VERSION {}\r\n", env!("CARGO_PKG_VERSION")),
    );
    // An application data record whose contents cannot be decrypted.
    let socket = tls.stream.get_mut();
    socket.write_all(&[23, 3, 3, 0, 40]).unwrap();
    socket.write_all(&[0x55; 40]).unwrap();
    let mut rest = Vec::new();
    let _ = socket.read_to_end(&mut rest);
    let stats = wait_for_stats(server.port, &certs.client(), |s| {
        stat(s, "ssl_proto_errors") >= 1
    });
    assert_eq!(stat(&stats, "ssl_handshake_errors"), 0);
}

/// Bytes buffered inside TLS are served without waiting for the socket:
/// 2,000 sets and 2,000 gets written in one go all get their replies.
#[test]
fn a_deep_pipeline_over_tls_completes() {
    let dir = test_dir("tls-pipeline");
    let Some(certs) = Certs::make(&dir) else {
        return;
    };
    certs.serve("server1");
    let server = start(
        "tls-pipeline",
        &[certs.args(""), vec!["--sync".into(), "none".into()]].concat(),
    );
    let mut tls = Tls::open(server.port, certs.client());
    let n = 2000;
    let mut requests = Vec::new();
    for i in 0..n {
        let body = format!("message {i:05}");
        requests.extend(format!("set deep 0 0 {}\r\n{body}\r\n", body.len()).bytes());
    }
    requests.extend(b"get deep\r\n".repeat(n));
    // A last small request in a record of its own, behind everything.
    tls.send(&requests);
    tls.send(b"version\r\n");
    let stored = tls.read_until(&b"STORED\r\n".repeat(n));
    assert_eq!(stored.len(), 8 * n);
    for i in 0..n {
        let body = format!("message {i:05}");
        let want = format!("VALUE deep 0 {}\r\n{body}\r\nEND\r\n", body.len());
        let got = tls.read_until(b"END\r\n");
        assert_eq!(String::from_utf8_lossy(&got), want);
    }
    let version = tls.read_until(b"\r\n");
    assert!(version.starts_with(b"VERSION "), "{version:?}");
    // Many small records, each holding a few requests, then one reply each.
    for round in 0..50 {
        for i in 0..20 {
            tls.send(format!("set r{round} 0 0 1\r\n{}\r\n", i % 10).as_bytes());
        }
        tls.send(&format!("get r{round}\r\n").repeat(20).into_bytes());
        tls.read_until(&b"STORED\r\n".repeat(20));
        for i in 0..20 {
            let got = tls.read_until(b"END\r\n");
            assert_eq!(
                got,
                format!("VALUE r{round} 0 1\r\n{}\r\nEND\r\n", i % 10).as_bytes()
            );
        }
    }
}

/// ssl_verify_mode=2: no certificate, or one from another CA, is refused;
/// the CA's certificate is served and names the user in the log (-vv).
#[test]
fn mutual_tls() {
    let dir = test_dir("tls-mutual");
    let Some(certs) = Certs::make(&dir) else {
        return;
    };
    certs.serve("server1");
    let ca = certs.path("ca.pem");
    let mut args = certs.args(&format!("ssl_verify_mode=2,ssl_ca_cert={ca}"));
    args.push("-vv".into());
    let server = start("tls-mutual", &args);
    let versions = [&rustls::version::TLS13, &rustls::version::TLS12];
    for (who, versions) in [
        (None, &versions[..1]),
        (None, &versions[1..]),
        (Some("mallory"), &versions[..1]),
        (Some("mallory"), &versions[1..]),
    ] {
        // TLS 1.2 refuses in the handshake; TLS 1.3 on the first read.
        let refused =
            Tls::connect(server.port, certs.client_with(who, versions)).and_then(|mut tls| {
                tls.stream.write_all(b"version\r\n")?;
                tls.try_read_until(b"\r\n")
            });
        assert!(
            refused.is_err(),
            "{who:?} {versions:?} was served: {refused:?}"
        );
    }
    let alice = certs.client_with(Some("alice"), &versions);
    let mut tls = Tls::open(server.port, alice.clone());
    tls.expect("set m 0 0 2\r\nok\r\n", "STORED\r\n");
    wait_for_log(&server, "client certificate names alice");
    let stats = wait_for_stats(server.port, &alice, |s| {
        stat(s, "ssl_handshake_errors") >= 4
    });
    assert_eq!(stat(&stats, "ssl_handshake_errors"), 4, "{stats:?}");
}

/// A client certificate naming a user of the config file's `[user …]`
/// sections logs the connection in as that user, with no `-Y` handshake:
/// that user's permissions apply. One naming nobody known is closed,
/// since without `-Y` nothing else would restrict it.
#[test]
fn a_client_certificate_logs_in_as_the_user_it_names() {
    let dir = test_dir("tls-identity");
    let Some(certs) = Certs::make(&dir) else {
        return;
    };
    certs.serve("server1");
    let ca = certs.path("ca.pem");
    let versions = [&rustls::version::TLS13, &rustls::version::TLS12];
    let alice = certs.client_with(Some("alice"), &versions);
    for (sections, known) in [
        ("[user alice]\nread = a*\nwrite = a*\n", true),
        ("[user carol]\nread = *\nwrite = *\n", false),
    ] {
        let conf = dir.join(if known { "known.conf" } else { "unknown.conf" });
        std::fs::write(&conf, sections).unwrap();
        let mut args = certs.args(&format!("ssl_verify_mode=2,ssl_ca_cert={ca}"));
        args.extend(["-f".into(), conf.display().to_string()]);
        let server = start("tls-identity", &args);
        let mut tls = Tls::open(server.port, alice.clone());
        if known {
            tls.expect("set a1 0 0 2\r\nok\r\n", "STORED\r\n");
            tls.expect(
                "set b1 0 0 2\r\nno\r\n",
                "CLIENT_ERROR permission denied\r\n",
            );
            tls.expect("get a1\r\n", "VALUE a1 0 2\r\nok\r\nEND\r\n");
            tls.expect("get b1\r\n", "CLIENT_ERROR permission denied\r\n");
        } else {
            tls.send(b"set a1 0 0 2\r\nok\r\n");
            let closed = tls.try_read_until(b"\r\n");
            assert!(closed.is_err(), "an unknown user was served: {closed:?}");
            wait_for_log(&server, "who is in neither the authfile nor a [user");
        }
    }
}

/// Mutual TLS refuses a client certificate of the right CA that has
/// expired, one not valid yet, and a self-signed one, on TLS 1.2 and 1.3;
/// the CA's valid one still gets in.
#[test]
fn expired_and_self_signed_client_certificates_are_refused() {
    let dir = test_dir("tls-dated");
    let Some(certs) = Certs::make(&dir) else {
        return;
    };
    certs.serve("server1");
    certs.dated_leaf("expired", "ca", "20200101000000Z", "20200102000000Z");
    certs.dated_leaf("early", "ca", "20990101000000Z", "20990102000000Z");
    certs.self_signed("eve");
    let ca = certs.path("ca.pem");
    let args = certs.args(&format!("ssl_verify_mode=2,ssl_ca_cert={ca}"));
    let server = start("tls-dated", &args);
    let versions = [&rustls::version::TLS13, &rustls::version::TLS12];
    for who in ["expired", "early", "eve"] {
        for v in [&versions[..1], &versions[1..]] {
            let refused =
                Tls::connect(server.port, certs.client_with(Some(who), v)).and_then(|mut tls| {
                    tls.stream.write_all(b"version\r\n")?;
                    tls.try_read_until(b"\r\n")
                });
            assert!(refused.is_err(), "{who} {v:?} was served: {refused:?}");
        }
    }
    let alice = certs.client_with(Some("alice"), &versions);
    let mut tls = Tls::open(server.port, alice.clone());
    tls.expect("set m 0 0 2\r\nok\r\n", "STORED\r\n");
    let stats = wait_for_stats(server.port, &alice, |s| {
        stat(s, "ssl_handshake_errors") >= 6
    });
    assert_eq!(stat(&stats, "ssl_handshake_errors"), 6, "{stats:?}");
}

/// A client without TLS (PHP's memcache extension) through a local
/// stunnel in client mode, as the README shows: the MemcacheQ session
/// works unchanged over TLS.
#[test]
fn php_memcache_through_stunnel() {
    let dir = test_dir("tls-stunnel");
    let Some(certs) = Certs::make(&dir) else {
        return;
    };
    let Some(mut stunnel) =
        third_party("stunnel", &[], &["-version"], "stunnel (Debian: stunnel4)")
    else {
        return;
    };
    let php_session = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("clients")
        .join("session.php");
    let php_session = php_session.display().to_string();
    let local = free_port();
    let Some(mut php) = third_party(
        "php",
        &[&php_session, &local.to_string()],
        &["-r", "exit(function_exists('memcache_connect') ? 0 : 1);"],
        "PHP with the memcache extension (Debian: php-cli php-memcache)",
    ) else {
        return;
    };
    certs.serve("server1");
    let server = start("tls-stunnel", &certs.args(""));
    let conf = dir.join("stunnel.conf");
    std::fs::write(
        &conf,
        format!(
            "foreground = yes\npid =\n[mcqd]\nclient = yes\naccept = 127.0.0.1:{local}\n\
             connect = 127.0.0.1:{}\nCAfile = {}\nverifyChain = yes\ncheckHost = localhost\n",
            server.port,
            certs.path("ca.pem")
        ),
    )
    .unwrap();
    let mut tunnel = stunnel
        .arg(&conf)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("stunnel starts");
    let deadline = Instant::now() + PATIENCE;
    while TcpStream::connect(("127.0.0.1", local)).is_err() {
        assert!(
            Instant::now() < deadline,
            "stunnel never listened on {local}"
        );
        thread::sleep(Duration::from_millis(20));
    }
    let out = output_within(&mut php);
    let _ = tunnel.kill();
    let _ = tunnel.wait();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("session ok"),
        "php through stunnel:\n{}",
        text(&out)
    );
}

/// A small deterministic generator for the fuzz runs below (xorshift).
struct Noise(u64);

impl Noise {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

/// The first flight of a real TLS client (its ClientHello records).
fn client_hello(certs: &Certs) -> Vec<u8> {
    let name = ServerName::try_from("localhost").unwrap();
    let mut conn = ClientConnection::new(certs.client(), name).unwrap();
    let mut out = Vec::new();
    while conn.wants_write() {
        conn.write_tls(&mut out).unwrap();
    }
    out
}

/// A fuzz run of the TLS listener: random bytes, and a real ClientHello
/// with bytes flipped, cut short or followed by garbage, each on its own
/// connection. Afterwards the server has not panicked, still serves a
/// real client, and counted the failures.
#[test]
fn fuzzed_handshakes_cost_no_uptime() {
    let dir = test_dir("tls-fuzz");
    let Some(certs) = Certs::make(&dir) else {
        return;
    };
    certs.serve("server1");
    let server = start("tls-fuzz", &certs.args(""));
    let hello = client_hello(&certs);
    let seed = rand_serial() | 1;
    let mut noise = Noise(seed);
    let rounds = if mcq_tests::soak() { 3000 } else { 300 };
    for _ in 0..rounds {
        let bytes = match noise.below(4) {
            0 => {
                let n = noise.below(4096) as usize;
                noise.bytes(n)
            }
            1 => {
                let mut h = hello.clone();
                for _ in 0..=noise.below(8) {
                    let at = noise.below(h.len() as u64) as usize;
                    h[at] ^= 1 << noise.below(8);
                }
                h
            }
            2 => hello[..noise.below(hello.len() as u64) as usize].to_vec(),
            _ => {
                let mut h = hello.clone();
                let n = noise.below(2048) as usize;
                h.extend(noise.bytes(n));
                h
            }
        };
        if let Ok(socket) = TcpStream::connect(("127.0.0.1", server.port)) {
            mcq_tests::throw(socket, &bytes);
        }
    }
    let client = certs.client();
    let mut tls = Tls::open(server.port, client.clone());
    tls.expect("set fuzz 0 0 2\r\nok\r\n", "STORED\r\n");
    tls.expect("get fuzz\r\n", "VALUE fuzz 0 2\r\nok\r\nEND\r\n");
    let stats = tls.stats();
    assert!(
        stat(&stats, "ssl_handshake_errors") > 0,
        "seed {seed}: {stats:?}"
    );
    let log = server.log();
    assert!(!log.contains("panic"), "seed {seed}: a panic:\n{log}");
}

/// ssl_verify_mode=1: a client certificate is checked if sent, and not
/// required.
#[test]
fn verify_mode_1_asks_but_does_not_require() {
    let dir = test_dir("tls-request");
    let Some(certs) = Certs::make(&dir) else {
        return;
    };
    certs.serve("server1");
    let ca = certs.path("ca.pem");
    let mut args = certs.args(&format!("ssl_verify_mode=1,ssl_ca_cert={ca}"));
    args.push("-vv".into());
    let server = start("tls-request", &args);
    let all = [&rustls::version::TLS13, &rustls::version::TLS12];
    Tls::open(server.port, certs.client()).expect("get x\r\n", "END\r\n");
    Tls::open(server.port, certs.client_with(Some("alice"), &all)).expect("get x\r\n", "END\r\n");
    wait_for_log(&server, "client certificate names alice");
    let bad =
        Tls::connect(server.port, certs.client_with(Some("mallory"), &all)).and_then(|mut tls| {
            tls.stream.write_all(b"get x\r\n")?;
            tls.try_read_until(b"\r\n")
        });
    assert!(bad.is_err(), "a certificate from another CA was served");
}

/// `refresh_certs` and SIGHUP: new connections get the new certificate,
/// open ones keep working, and a bad file keeps the old certificate.
#[test]
fn refresh_certs_and_sighup_reload_the_certificate() {
    let dir = test_dir("tls-refresh");
    let Some(certs) = Certs::make(&dir) else {
        return;
    };
    certs.serve("server1");
    let server = start(
        "tls-refresh",
        &[certs.args(""), vec!["-t".into(), "2".into()]].concat(),
    );
    let config = certs.client();
    let served = || Tls::open(server.port, config.clone()).server_name();
    let mut old = Tls::open(server.port, config.clone());
    assert_eq!(old.server_name(), "server1");
    old.expect("set r 0 0 1\r\na\r\n", "STORED\r\n");

    certs.serve("server2");
    old.expect("refresh_certs\r\n", "OK\r\n");
    for _ in 0..4 {
        assert_eq!(served(), "server2");
    }
    old.expect("get r\r\n", "VALUE r 0 1\r\na\r\nEND\r\n");
    let stats = Tls::open(server.port, config.clone()).stats();
    assert!(
        stat(&stats, "time_since_server_cert_refresh") < 30,
        "{stats:?}"
    );

    // A broken certificate file, a key of another certificate, a missing
    // key: refused with memcached's words, the old certificate stays.
    std::fs::write(dir.join("certs/cert.pem"), "not a certificate\n").unwrap();
    old.send(b"refresh_certs\r\n");
    let reply = String::from_utf8(old.read_until(b"\r\n")).unwrap();
    assert!(
        reply.starts_with("Error loading the certificate chain: "),
        "{reply}"
    );
    assert!(
        reply.contains("cert.pem") && reply.contains("no certificate"),
        "{reply}"
    );
    std::fs::copy(dir.join("certs/server1.pem"), dir.join("certs/cert.pem")).unwrap();
    old.send(b"refresh_certs\r\n");
    let reply = String::from_utf8(old.read_until(b"\r\n")).unwrap();
    assert!(
        reply.starts_with("Error validating the certificate: "),
        "{reply}"
    );
    std::fs::remove_file(dir.join("certs/key.pem")).unwrap();
    old.send(b"refresh_certs\r\n");
    let reply = String::from_utf8(old.read_until(b"\r\n")).unwrap();
    assert!(reply.starts_with("Error loading the key: "), "{reply}");
    assert_eq!(served(), "server2");
    // The reply can outrun the log line through the harness's pipe.
    wait_for_log(
        &server,
        "refresh_certs: the TLS certificates in force stay: Error loading the key",
    );

    // SIGHUP, as `systemctl reload` sends it.
    certs.serve("server1");
    server.signal(libc::SIGHUP);
    wait_for_log(&server, "SIGHUP: TLS certificates reloaded");
    assert_eq!(served(), "server1");
    std::fs::write(
        dir.join("certs/key.pem"),
        "-----BEGIN PRIVATE KEY-----\nAAAA\n",
    )
    .unwrap();
    server.signal(libc::SIGHUP);
    wait_for_log(
        &server,
        "SIGHUP: the TLS certificates in force stay: Error loading the key",
    );
    assert_eq!(served(), "server1");
    old.expect("get r\r\n", "END\r\n");
}

/// `refresh_certs` while 16 connections pipeline requests: none is
/// dropped, and each gets every reply.
#[test]
fn refresh_certs_under_load() {
    let dir = test_dir("tls-refresh-load");
    let Some(certs) = Certs::make(&dir) else {
        return;
    };
    certs.serve("server1");
    let server = start(
        "tls-refresh-load",
        &[
            certs.args(""),
            vec!["-t".into(), "2".into(), "--sync".into(), "none".into()],
        ]
        .concat(),
    );
    let config = certs.client();
    let port = server.port;
    let workers: Vec<_> = (0..16)
        .map(|w| {
            let config = config.clone();
            thread::spawn(move || {
                let mut tls = Tls::open(port, config);
                for round in 0..40 {
                    let q = format!("load{w}");
                    let mut batch = Vec::new();
                    for i in 0..16 {
                        batch.extend(format!("set {q} 0 0 4\r\n{i:04}\r\n").bytes());
                    }
                    batch.extend(format!("get {q}\r\n").repeat(16).bytes());
                    tls.send(&batch);
                    tls.read_until(&b"STORED\r\n".repeat(16));
                    for i in 0..16 {
                        let got = tls.read_until(b"END\r\n");
                        let want = format!("VALUE {q} 0 4\r\n{i:04}\r\nEND\r\n");
                        assert_eq!(got, want.as_bytes(), "worker {w} round {round}");
                    }
                }
            })
        })
        .collect();
    let mut admin = Tls::open(port, config.clone());
    for i in 0..10 {
        certs.serve(if i % 2 == 0 { "server2" } else { "server1" });
        admin.expect("refresh_certs\r\n", "OK\r\n");
        let want = if i % 2 == 0 { "server2" } else { "server1" };
        assert_eq!(Tls::open(port, config.clone()).server_name(), want);
    }
    for worker in workers {
        worker.join().expect("a pipelining connection failed");
    }
}

/// `ssl_session_cache`: a client resumes its session, and `stats` counts
/// only the full handshakes as new sessions.
#[test]
fn session_resumption() {
    let dir = test_dir("tls-sessions");
    let Some(certs) = Certs::make(&dir) else {
        return;
    };
    certs.serve("server1");
    let server = start("tls-sessions", &certs.args("ssl_session_cache"));
    for version in [&rustls::version::TLS13, &rustls::version::TLS12] {
        let config = certs.client_with(None, &[version]);
        for _ in 0..3 {
            // A round trip, so that a TLS 1.3 ticket has arrived.
            Tls::open(server.port, config.clone()).expect("get s\r\n", "END\r\n");
        }
    }
    let stats = Tls::open(
        server.port,
        certs.client_with(None, &[&rustls::version::TLS13]),
    )
    .stats();
    // One full handshake per client config, and the one asking now; the
    // other four resumed.
    assert_eq!(stat(&stats, "ssl_new_sessions"), 3, "{stats:?}");
}

/// A client that connects and sends nothing, or half a handshake, is
/// closed after --ssl-handshake-timeout; its connection slot (-c) is free
/// again.
#[test]
fn a_stalled_handshake_times_out_and_frees_its_slot() {
    let dir = test_dir("tls-timeout");
    let Some(certs) = Certs::make(&dir) else {
        return;
    };
    certs.serve("server1");
    let mut args = certs.args("");
    args.extend([
        "-c".into(),
        "1".into(),
        "--ssl-handshake-timeout".into(),
        "1s".into(),
        "-t".into(),
        "1".into(),
    ]);
    let server = start("tls-timeout", &args);
    for first in [&b""[..], b"\x16\x03\x01\x02\x00\x01\x00"] {
        let mut idle = TcpStream::connect(("127.0.0.1", server.port)).unwrap();
        idle.write_all(first).unwrap();
        // It holds the only slot: another connection is refused (closed
        // at once, without a line a TLS client could not read anyway).
        let mut other = TcpStream::connect(("127.0.0.1", server.port)).unwrap();
        other.set_read_timeout(Some(PATIENCE)).unwrap();
        let mut refused = Vec::new();
        let _ = other.read_to_end(&mut refused);
        assert!(refused.is_empty(), "{refused:?}");
        idle.set_read_timeout(Some(PATIENCE)).unwrap();
        let started = Instant::now();
        let mut got = Vec::new();
        let closed = idle.read_to_end(&mut got);
        assert!(
            closed.is_ok()
                || closed
                    .as_ref()
                    .is_err_and(|e| e.kind() == ErrorKind::ConnectionReset),
            "not closed by the server: {closed:?} after {:?}",
            started.elapsed()
        );
        assert!(got.is_empty() || got[0] == 21, "{got:?}");
    }
    // The slot is free: -c 1 lets this one in (once the server has
    // counted the closed ones out).
    let deadline = Instant::now() + PATIENCE;
    let mut tls = loop {
        match Tls::connect(server.port, certs.client()).and_then(|mut tls| {
            tls.stream.write_all(b"get q\r\n")?;
            tls.try_read_until(b"\r\n")?;
            Ok(tls)
        }) {
            Ok(tls) => break tls,
            Err(e) => assert!(Instant::now() < deadline, "no slot came free: {e}"),
        }
        thread::sleep(Duration::from_millis(100));
    };
    let stats = tls.stats();
    assert_eq!(stat(&stats, "curr_connections"), 1, "{stats:?}");
    assert!(stat(&stats, "ssl_handshake_errors") >= 2, "{stats:?}");
    wait_for_log(&server, "no handshake within 1s (--ssl-handshake-timeout)");
    wait_for_log(&server, "connection refused: limit of 1 connections");
}

/// Bad -Z / -o settings stop the start with one clear line and a non-zero
/// exit status.
#[test]
fn bad_tls_settings_refuse_to_start() {
    let dir = test_dir("tls-bad");
    let Some(certs) = Certs::make(&dir) else {
        return;
    };
    certs.serve("server1");
    let cert = certs.path("cert.pem");
    let key = certs.path("key.pem");
    let junk = dir.join("junk.pem");
    std::fs::write(&junk, "junk\n").unwrap();
    let junk = junk.display().to_string();
    let cases: Vec<(Vec<String>, String)> = vec![
        (
            vec!["-Z".into()],
            "-Z (--enable-ssl) needs a certificate".into(),
        ),
        (
            vec![
                "-Z".into(),
                "-o".into(),
                format!("ssl_chain_cert={cert},ssl_key={key},ssl_min_version=1"),
            ],
            "-o ssl_min_version=1: TLS 1.1 is not supported".into(),
        ),
        (
            vec![
                "-Z".into(),
                "-o".into(),
                format!("ssl_chain_cert={cert},ssl_key={key},ssl_verify_mode=5"),
            ],
            "-o ssl_verify_mode=5: invalid".into(),
        ),
        (
            vec![
                "-Z".into(),
                "-o".into(),
                format!("ssl_chain_cert={cert},ssl_keey={key}"),
            ],
            "-o ssl_keey: unknown TLS option".into(),
        ),
        (
            vec![
                "-Z".into(),
                "-o".into(),
                format!("ssl_chain_cert={cert},ssl_verify_mode=2"),
            ],
            "-o ssl_verify_mode=2: checking client certificates needs".into(),
        ),
        (
            vec!["-o".into(), format!("ssl_chain_cert={cert}")],
            "without -Z (--enable-ssl)".into(),
        ),
        (
            vec!["-l".into(), "notls:127.0.0.1".into()],
            "`notls:` is valid only with -Z".into(),
        ),
        (
            vec![
                "-Z".into(),
                "-o".into(),
                format!("ssl_chain_cert={junk},ssl_key={key}"),
            ],
            format!("Error loading the certificate chain: {junk} : no certificate in it"),
        ),
        (
            vec![
                "-Z".into(),
                "-o".into(),
                format!("ssl_chain_cert={cert},ssl_key={junk}"),
            ],
            format!("Error loading the key: {junk} : no private key in it"),
        ),
        (
            vec![
                "-Z".into(),
                "-o".into(),
                format!(
                    "ssl_chain_cert={cert},ssl_key={}",
                    certs.path("server2.key")
                ),
            ],
            "Error validating the certificate".into(),
        ),
        (
            vec![
                "-Z".into(),
                "-o".into(),
                format!("ssl_chain_cert={cert},ssl_key={key},ssl_verify_mode=2,ssl_ca_cert={junk}"),
            ],
            format!("Error loading the CA certificate: {junk} : no certificate in it"),
        ),
    ];
    for (i, (args, why)) in cases.iter().enumerate() {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let data = dir.join(format!("data{i}"));
        let (status, log) = run_until_exit(free_port(), &data, &args);
        assert!(!status.success(), "{args:?} started");
        assert!(log.contains(why), "{args:?}: no {why:?} in:\n{log}");
        assert!(!log.contains("listening on"), "{log}");
    }
}

/// Without -Z there are no TLS stats, and `refresh_certs` says TLS is off
/// (memcached's words).
#[test]
fn without_tls() {
    let server = Server::start("tls-off", &[]);
    let mut client = server.client();
    client.expect(b"refresh_certs\r\n", b"Error TLS not enabled\r\n");
    let stats = client.stats();
    assert!(!stats.contains_key("ssl_handshake_errors"), "{stats:?}");
}
