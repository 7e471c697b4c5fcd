//! TLS (memcached's `-Z`): the certificates in force, their reload, the
//! handshake of each connection, and the stream a connection reads and
//! writes, plaintext or TLS.
//!
//! # Why rustls on ring
//! rustls is memory-safe and runs on glommio's `TcpStream` through
//! futures-rustls (it implements futures' `AsyncRead`/`AsyncWrite`). Its
//! crypto is `ring`: it builds with a C compiler alone, where aws-lc-rs
//! needs cmake (and Go for some targets) and takes minutes longer to build
//! in CI; both have the AES-GCM and ChaCha20 assembly that matters here.
//! What ring lacks is post-quantum key exchange (X25519MLKEM768, which
//! rustls offers with aws-lc-rs only): key exchange is X25519, P-256 or
//! P-384. TLS 1.2 and 1.3 only: rustls has nothing older.
//!
//! # Reloading the certificates
//! The certificates in force are one `ServerConfig` behind an `RwLock`.
//! `refresh_certs` and SIGHUP build a whole new one from the files first
//! (chain, key, that they match, the CAs); only once that has worked is it
//! swapped in, so a bad file leaves the old certificates serving and never a
//! half-updated context (memcached's problem). A handshake takes the
//! config in force when it starts: new connections get the new
//! certificates, connections already open keep what they negotiated.
//!
//! # The handshake
//! It runs in the connection's own task on the executor that accepted it,
//! so handshakes are spread over every executor as accepts are
//! (SO_REUSEPORT), not queued behind one acceptor thread. The connection
//! holds its `-c` slot throughout; a client that does not finish within
//! `--ssl-handshake-timeout` is closed, and nothing it sent is read as a
//! request before the handshake completes.
//!
//! # Bytes buffered inside TLS
//! rustls decrypts whole records and keeps the plaintext until it is read.
//! A read here takes everything rustls has decrypted, and every record the
//! socket already holds, without waiting for the socket to become readable
//! again (memcached before 1.6.39 waited there and hung pipelined clients);
//! the connection's next read returns what is left at once.
//!
//! # Who the client is
//! With client certificates (`ssl_verify_mode` 1 to 3), the certificate's
//! subject names the user: its first commonName, or else the first
//! subjectAltName that is a DNS name or an email address ([`identity`]).

use std::io;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use futures_lite::future;
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use futures_rustls::rustls;
use futures_rustls::TlsAcceptor;
use glommio::net::{Preallocated, TcpStream};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{NoServerSessionStorage, ServerSessionMemoryCache, WebPkiClientVerifier};
use rustls::{HandshakeKind, RootCertStore, ServerConfig};

use crate::config::{TlsOptions, TlsVersion, VerifyMode};
use crate::shared::{Shared, StopSignal};
use crate::stats::Counters;

/// A TLS connection's receive buffer: a whole TLS record (16 KiB of
/// plaintext and its framing) arrives in one `recv`, where rustls alone
/// would read 4 KiB at a time.
const RX_BUFFER: usize = 17 * 1024 + 512;

/// Resumable sessions kept with `ssl_session_cache` (rustls's cache evicts
/// at random past it).
const SESSION_CACHE: usize = 4096;

/// The connection stream: plaintext, or TLS over the same socket. An enum
/// rather than a type parameter, so that the connection code is compiled
/// once; the plaintext path pays one branch per read and per write.
pub(super) enum Stream {
    Plain(TcpStream),
    Tls(Box<futures_rustls::server::TlsStream<TcpStream<Preallocated>>>),
}

impl Stream {
    /// Reads what there is (at least one byte, or 0 at the end of the
    /// stream). Over TLS: everything already decrypted and every record
    /// the socket has now, up to `buf.len()` (see the module docs).
    pub(super) async fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.read(buf).await,
            Stream::Tls(s) => {
                let mut n = s.read(buf).await?;
                while n > 0 && n < buf.len() {
                    // Without waiting: `None` when it would have to. An
                    // error is the next read's to report.
                    match future::poll_once(s.read(&mut buf[n..])).await {
                        Some(Ok(more @ 1..)) => n += more,
                        _ => break,
                    }
                }
                Ok(n)
            }
        }
    }

    pub(super) async fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        match self {
            Stream::Plain(s) => s.write_all(buf).await,
            Stream::Tls(s) => s.write_all(buf).await,
        }
    }

    /// After a batch of writes: rustls may still hold records the socket
    /// did not take. Nothing to do for plaintext.
    pub(super) async fn flush(&mut self) -> io::Result<()> {
        match self {
            Stream::Plain(_) => Ok(()),
            Stream::Tls(s) => s.flush().await,
        }
    }

    /// The client's address.
    pub(super) fn peer_addr(&self) -> io::Result<std::net::SocketAddr> {
        match self {
            Stream::Plain(s) => s.peer_addr(),
            Stream::Tls(s) => s.get_ref().0.peer_addr(),
        }
        .map_err(crate::disk::dma::to_io)
    }

    /// Closes the stream (over TLS, with a close_notify first).
    pub(super) async fn close(&mut self) -> io::Result<()> {
        match self {
            Stream::Plain(s) => s.close().await,
            Stream::Tls(s) => s.close().await,
        }
    }

    /// Peeks at the socket (over TLS, at its records): `Ok(0)` once the
    /// client has closed it.
    pub(super) async fn peek(&self, buf: &mut [u8]) -> io::Result<usize> {
        let peeked = match self {
            Stream::Plain(s) => s.peek(buf).await,
            Stream::Tls(s) => s.get_ref().0.peek(buf).await,
        };
        peeked.map_err(io::Error::from)
    }
}

/// The certificates in force and how to load them again (one per process,
/// in [`Shared`]).
pub struct TlsContext {
    options: TlsOptions,
    current: RwLock<Arc<ServerConfig>>,
    /// When the certificates in force were loaded.
    refreshed: Mutex<Instant>,
    handshake_timeout: Duration,
}

impl TlsContext {
    /// Loads the certificates; the error says which file is at fault and
    /// why, in memcached's words ("Error loading the key: …").
    pub fn load(options: TlsOptions, handshake_timeout: Duration) -> Result<TlsContext, String> {
        let config = build(&options)?;
        Ok(TlsContext {
            options,
            current: RwLock::new(Arc::new(config)),
            refreshed: Mutex::new(Instant::now()),
            handshake_timeout,
        })
    }

    /// Loads the certificate files again and, only if all of them load,
    /// serves them to new connections (`refresh_certs`, SIGHUP).
    pub fn refresh(&self) -> Result<(), String> {
        let config = Arc::new(build(&self.options)?);
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = config;
        *self.refreshed.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now();
        Ok(())
    }

    /// The config a new connection's handshake uses.
    fn config(&self) -> Arc<ServerConfig> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Since the certificates in force were loaded
    /// (`time_since_server_cert_refresh`).
    pub fn since_refresh(&self) -> Duration {
        self.refreshed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .elapsed()
    }

    /// `ssl_session_cache` is on (`stats` then has `ssl_new_sessions`).
    pub fn session_cache(&self) -> bool {
        self.options.session_cache
    }

    /// The files, for the log.
    pub fn describe(&self) -> String {
        let o = &self.options;
        let mut text = format!("certificate {}", o.chain_cert.display());
        if o.verify_mode != VerifyMode::None {
            let ca = o.ca_cert.as_deref().unwrap_or(std::path::Path::new("?"));
            let how = match o.verify_mode {
                VerifyMode::Request => "checked if sent",
                _ => "required",
            };
            text += &format!(", client certificates {how} (CA {})", ca.display());
        }
        if o.min_version == TlsVersion::Tls13 {
            text += ", TLS 1.3 only";
        }
        text
    }
}

/// `refresh_certs`: memcached's replies, `OK` or its `Error …` line.
pub(super) fn refresh_certs(shared: &Shared) -> String {
    let Some(tls) = &shared.tls else {
        return "Error TLS not enabled".into();
    };
    match tls.refresh() {
        Ok(()) => {
            log::info!(
                "refresh_certs: TLS certificates reloaded ({})",
                tls.describe()
            );
            "OK".into()
        }
        Err(e) => {
            log::warn!("refresh_certs: the TLS certificates in force stay: {e}");
            e.replace(['\r', '\n'], " ")
        }
    }
}

/// A new `ServerConfig` from the files, or why not.
fn build(o: &TlsOptions) -> Result<ServerConfig, String> {
    // Deprecated in rustls 0.23.48 only because ring has no post-quantum
    // key exchange (X25519MLKEM768 is aws-lc-rs's): see the module docs.
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let chain_file = o.chain_cert.display();
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&o.chain_cert)
        .and_then(|certs| certs.collect::<Result<_, _>>())
        .map_err(|e| format!("Error loading the certificate chain: {chain_file} : {e}"))?;
    if chain.is_empty() {
        return Err(format!(
            "Error loading the certificate chain: {chain_file} : no certificate in it"
        ));
    }
    let key_path = o.key.as_ref().unwrap_or(&o.chain_cert);
    let key = PrivateKeyDer::from_pem_file(key_path).map_err(|e| {
        let e = match e {
            rustls::pki_types::pem::Error::NoItemsFound => "no private key in it".to_string(),
            e => e.to_string(),
        };
        format!("Error loading the key: {} : {e}", key_path.display())
    })?;
    let versions: &[&rustls::SupportedProtocolVersion] = match o.min_version {
        TlsVersion::Tls12 => &[&rustls::version::TLS13, &rustls::version::TLS12],
        TlsVersion::Tls13 => &[&rustls::version::TLS13],
    };
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(versions)
        .map_err(|e| format!("Error setting up TLS: {e}"))?;
    let builder = match (o.verify_mode, &o.ca_cert) {
        (VerifyMode::None, _) | (_, None) => builder.with_no_client_auth(),
        (mode, Some(ca)) => {
            let mut roots = RootCertStore::empty();
            let certs = CertificateDer::pem_file_iter(ca)
                .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
                .map_err(|e| format!("Error loading the CA certificate: {} : {e}", ca.display()))?;
            for cert in certs {
                roots.add(cert).map_err(|e| {
                    format!("Error loading the CA certificate: {} : {e}", ca.display())
                })?;
            }
            if roots.is_empty() {
                return Err(format!(
                    "Error loading the CA certificate: {} : no certificate in it",
                    ca.display()
                ));
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
            let verifier = match mode {
                VerifyMode::Request => verifier.allow_unauthenticated(),
                _ => verifier,
            };
            let verifier = verifier
                .build()
                .map_err(|e| format!("Error loading the CA certificate: {} : {e}", ca.display()))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder
        .with_single_cert(chain, key)
        .map_err(|e| format!("Error validating the certificate: {e}"))?;
    if o.session_cache {
        config.session_storage = ServerSessionMemoryCache::new(SESSION_CACHE);
        config.send_tls13_tickets = 1;
    } else {
        // memcached's default: no resumption.
        config.session_storage = Arc::new(NoServerSessionStorage {});
        config.send_tls13_tickets = 0;
    }
    Ok(config)
}

/// Why a handshake did not complete.
pub(super) enum Refused {
    /// The server is stopping (not counted).
    Stopping,
    /// Counted in `ssl_handshake_errors`.
    Failed(String),
}

/// The TLS handshake of a connection just accepted, bounded by
/// `--ssl-handshake-timeout` and by shutdown: the stream and the identity
/// its client certificate gives, if any.
pub(super) async fn accept(
    tls: &TlsContext,
    stream: TcpStream,
    stop: &StopSignal,
    counters: &Counters,
) -> Result<(Stream, Option<String>), Refused> {
    let acceptor = TlsAcceptor::from(tls.config());
    let handshake = acceptor.accept(stream.buffered_with(Preallocated::new(RX_BUFFER)));
    let timeout = tls.handshake_timeout;
    let outcome = future::or(
        async { Some(handshake.await.map_err(|e| e.to_string())) },
        future::or(
            async {
                glommio::timer::sleep(timeout).await;
                Some(Err(format!(
                    "no handshake within {} (--ssl-handshake-timeout)",
                    humantime::format_duration(timeout)
                )))
            },
            async {
                stop.wait().await;
                None
            },
        ),
    )
    .await;
    let stream = match outcome {
        None => return Err(Refused::Stopping),
        Some(Err(why)) => return Err(Refused::Failed(why)),
        Some(Ok(stream)) => stream,
    };
    let session = stream.get_ref().1;
    if tls.session_cache() && session.handshake_kind() != Some(HandshakeKind::Resumed) {
        counters.add(&counters.ssl_new_sessions, 1);
    }
    let identity = session
        .peer_certificates()
        .and_then(|chain| chain.first())
        .and_then(|cert| identity(cert));
    Ok((Stream::Tls(Box::new(stream)), identity))
}

/// What a TLS connection negotiated, for the log (` (TLS 1.3, …)`;
/// nothing for plaintext).
pub(super) fn describe(stream: &Stream) -> String {
    match stream {
        Stream::Plain(_) => String::new(),
        Stream::Tls(s) => {
            let session = s.get_ref().1;
            let version = match session.protocol_version() {
                Some(rustls::ProtocolVersion::TLSv1_3) => "TLS 1.3",
                Some(rustls::ProtocolVersion::TLSv1_2) => "TLS 1.2",
                _ => "TLS",
            };
            let resumed = match session.handshake_kind() {
                Some(HandshakeKind::Resumed) => ", resumed",
                _ => "",
            };
            match session.negotiated_cipher_suite() {
                Some(suite) => format!(" ({version}, {:?}{resumed})", suite.suite()),
                None => format!(" ({version}{resumed})"),
            }
        }
    }
}

/// Counts a failed read or write of a TLS connection that rustls refused
/// (a bad record, a bad alert: `ssl_proto_errors`), not a socket error.
pub(super) fn count_error(stream: &Stream, error: &io::Error, counters: &Counters) {
    if matches!(stream, Stream::Tls(_)) && error.kind() == io::ErrorKind::InvalidData {
        counters.ssl_proto_errors.fetch_add(1, Ordering::Relaxed);
    }
}

/// The user a client certificate (DER) names: the subject's first
/// commonName; without one, the first subjectAltName that is a DNS name
/// or an email address (rfc822Name), in the certificate's order. `None`
/// when it has neither, or the name is empty or holds control characters.
pub fn identity(cert: &[u8]) -> Option<String> {
    let (tag, certificate, _) = der::next(cert)?;
    (tag == der::SEQUENCE).then_some(())?;
    let (tag, tbs, _) = der::next(certificate)?;
    (tag == der::SEQUENCE).then_some(())?;
    let mut fields = der::Items(tbs).peekable();
    // [0] version, then serialNumber, signature, issuer, validity.
    if fields.peek().is_some_and(|(tag, _)| *tag == 0xa0) {
        fields.next();
    }
    let subject = fields.nth(4)?;
    (subject.0 == der::SEQUENCE).then_some(())?;
    let common_name = der::Items(subject.1)
        .filter(|(tag, _)| *tag == der::SET)
        .flat_map(|(_, set)| der::Items(set))
        .filter_map(|(_, attribute)| {
            let mut parts = der::Items(attribute);
            let (oid_tag, oid) = parts.next()?;
            (oid_tag == der::OID && oid == der::COMMON_NAME).then_some(())?;
            let (tag, value) = parts.next()?;
            der::string(tag, value)
        })
        .next();
    let name = common_name.or_else(|| {
        // subjectPublicKeyInfo, then [1] and [2] unique ids, then [3]
        // extensions.
        let extensions = fields.find(|(tag, _)| *tag == 0xa3)?.1;
        let (_, extensions, _) = der::next(extensions)?;
        der::Items(extensions)
            .filter_map(|(_, extension)| {
                let mut parts = der::Items(extension);
                let (oid_tag, oid) = parts.next()?;
                (oid_tag == der::OID && oid == der::SUBJECT_ALT_NAME).then_some(())?;
                let (_, value) = parts.find(|(tag, _)| *tag == der::OCTET_STRING)?;
                let (_, names, _) = der::next(value)?;
                der::Items(names)
                    // [1] rfc822Name, [2] dNSName: IA5String, implicitly
                    // tagged.
                    .find(|(tag, _)| *tag == 0x81 || *tag == 0x82)
                    .and_then(|(_, name)| der::string(der::IA5_STRING, name))
            })
            .next()
    })?;
    (!name.is_empty() && !name.chars().any(char::is_control)).then_some(name)
}

/// Just enough DER to read a certificate's subject and subjectAltName
/// (the certificate was verified already; anything unexpected is `None`).
mod der {
    pub const SEQUENCE: u8 = 0x30;
    pub const SET: u8 = 0x31;
    pub const OID: u8 = 0x06;
    pub const OCTET_STRING: u8 = 0x04;
    pub const IA5_STRING: u8 = 0x16;
    /// 2.5.4.3
    pub const COMMON_NAME: &[u8] = &[0x55, 0x04, 0x03];
    /// 2.5.29.17
    pub const SUBJECT_ALT_NAME: &[u8] = &[0x55, 0x1d, 0x11];

    /// The first element of `input`: its tag, its contents and what
    /// follows it.
    pub fn next(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
        let (&tag, rest) = input.split_first()?;
        let (&first, rest) = rest.split_first()?;
        let (len, rest) = match first {
            0..=0x7f => (usize::from(first), rest),
            0x81..=0x84 => {
                let n = usize::from(first & 0x7f);
                let (bytes, rest) = (rest.get(..n)?, rest.get(n..)?);
                let len = bytes.iter().fold(0usize, |l, &b| (l << 8) | usize::from(b));
                (len, rest)
            }
            _ => return None,
        };
        Some((tag, rest.get(..len)?, rest.get(len..)?))
    }

    /// The elements of a constructed value's contents, as (tag, contents).
    pub struct Items<'a>(pub &'a [u8]);

    impl<'a> Iterator for Items<'a> {
        type Item = (u8, &'a [u8]);
        fn next(&mut self) -> Option<Self::Item> {
            let (tag, value, rest) = next(self.0)?;
            self.0 = rest;
            Some((tag, value))
        }
    }

    /// A directory string as text.
    pub fn string(tag: u8, value: &[u8]) -> Option<String> {
        match tag {
            // UTF8String, PrintableString, IA5String, VisibleString.
            0x0c | 0x13 | 0x16 | 0x1a => String::from_utf8(value.to_vec()).ok(),
            // TeletexString: Latin-1 in practice.
            0x14 => Some(value.iter().map(|&b| char::from(b)).collect()),
            // BMPString: UTF-16BE.
            0x1e if value.len().is_multiple_of(2) => {
                let units = value.chunks(2).map(|c| u16::from_be_bytes([c[0], c[1]]));
                char::decode_utf16(units).collect::<Result<_, _>>().ok()
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::identity;
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::CertificateDer;

    fn der(pem: &str) -> Vec<u8> {
        CertificateDer::from_pem_slice(pem.as_bytes())
            .unwrap()
            .to_vec()
    }

    /// `/O=mcq tests/CN=alice`, subjectAltName DNS:alice.example,
    /// email:alice@example.org.
    const WITH_CN: &str = "-----BEGIN CERTIFICATE-----
MIIBzjCCAXOgAwIBAgIUV/G11Otr1ZTZZPKXSqGAC2rnGPMwCgYIKoZIzj0EAwIw
JDESMBAGA1UECgwJbWNxIHRlc3RzMQ4wDAYDVQQDDAVhbGljZTAgFw0yNjEyMDYx
NDE2MDNaGA8yMTI2MTExMjE0MTYwM1owJDESMBAGA1UECgwJbWNxIHRlc3RzMQ4w
DAYDVQQDDAVhbGljZTBZMBMGByqGSM49AgEGCCqGSM49AwEHA0IABHNA2ouIBHTO
Pay7iB4Zh/n7q82a64qOMi3WrAWR3u18LvL7tMsiqaFIkHsSFhLtybNsgddHRHtI
c7Npr5xKwSejgYAwfjAdBgNVHQ4EFgQUVyB1NX8UoWSY6bsstOjVwWbmB1YwHwYD
VR0jBBgwFoAUVyB1NX8UoWSY6bsstOjVwWbmB1YwDwYDVR0TAQH/BAUwAwEB/zAr
BgNVHREEJDAigg1hbGljZS5leGFtcGxlgRFhbGljZUBleGFtcGxlLm9yZzAKBggq
hkjOPQQDAgNJADBGAiEAjtgoNdsiMqr3dcx9zCm1BJ8tr9CKtexJ39XbOHm622EC
IQC6vQLRrb4BMzroU2eHXMsaFXxT7CGdM0lujAPetUHbdA==
-----END CERTIFICATE-----";

    /// `/O=mcq tests`, subjectAltName IP:127.0.0.1, email:bob@example.org,
    /// DNS:bob.example.
    const SAN_ONLY: &str = "-----BEGIN CERTIFICATE-----
MIIBsTCCAVagAwIBAgIUZp5IF30TiVuQqOsPsWQSNWWz7x4wCgYIKoZIzj0EAwIw
FDESMBAGA1UECgwJbWNxIHRlc3RzMCAXDTI2MTIwNjE0MTYwM1oYDzIxMjYxMTEy
MTQxNjAzWjAUMRIwEAYDVQQKDAltY3EgdGVzdHMwWTATBgcqhkjOPQIBBggqhkjO
PQMBBwNCAATVcUkqJYLTIN0jZiMNLyckQ6sqDMuV1YsZKCZ9sSXGnDRWVVbZW7pT
QckDrCQMMkjU1UfYz0rvgVMP94dNOCrjo4GDMIGAMB0GA1UdDgQWBBQUI0/VVoFC
AvnZSNS3ophr+K5lZjAfBgNVHSMEGDAWgBQUI0/VVoFCAvnZSNS3ophr+K5lZjAP
BgNVHRMBAf8EBTADAQH/MC0GA1UdEQQmMCSHBH8AAAGBD2JvYkBleGFtcGxlLm9y
Z4ILYm9iLmV4YW1wbGUwCgYIKoZIzj0EAwIDSQAwRgIhAK6yO/oHGbvmiqp+kGW6
BCrQ9ydWUNNIU4fKNMkoPnG2AiEArY716bFB7JWhWzanckAP7J6cpjBvcXqTGu8y
v5OJHJk=
-----END CERTIFICATE-----";

    /// `/O=mcq tests`, no subjectAltName.
    const NEITHER: &str = "-----BEGIN CERTIFICATE-----
MIIBfjCCASWgAwIBAgIUbOdWYqndJAvy2uok6u01q3mYJ4QwCgYIKoZIzj0EAwIw
FDESMBAGA1UECgwJbWNxIHRlc3RzMCAXDTI2MTIwNjE0MTYwM1oYDzIxMjYxMTEy
MTQxNjAzWjAUMRIwEAYDVQQKDAltY3EgdGVzdHMwWTATBgcqhkjOPQIBBggqhkjO
PQMBBwNCAARpHFT9C6Kla02M6Lyv8PGjjoQaurlWLW5mXQ8WxIn4scXzjkRKhi7k
87bkmKuj0k+J2sfBdcdHwR5L1sTCgJAho1MwUTAdBgNVHQ4EFgQUlRMH1+rsyX1L
YYaoBaPXcjKegQwwHwYDVR0jBBgwFoAUlRMH1+rsyX1LYYaoBaPXcjKegQwwDwYD
VR0TAQH/BAUwAwEB/zAKBggqhkjOPQQDAgNHADBEAiBZllquqXD5VGN+05aiVIuf
n3zoS8WKLRaucLtja3wbqwIgNPAEg/O8nX2Q+/Un/E7oq6+lr8ESBXHSDx4NN+Re
hcw=
-----END CERTIFICATE-----";

    #[test]
    fn common_name_first() {
        assert_eq!(identity(&der(WITH_CN)).as_deref(), Some("alice"));
    }

    #[test]
    fn else_the_first_dns_or_email_alt_name() {
        assert_eq!(identity(&der(SAN_ONLY)).as_deref(), Some("bob@example.org"));
    }

    #[test]
    fn no_name_no_identity() {
        assert_eq!(identity(&der(NEITHER)), None);
        assert_eq!(identity(b""), None);
        assert_eq!(identity(&der(WITH_CN)[..100]), None);
    }
}
