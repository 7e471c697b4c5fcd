//! Opening a connection: TCP, then TLS (`--tls`) and the memcached `set`
//! authentication handshake (`--auth`), and the stream the engine reads and
//! writes, plaintext or TLS.
//!
//! The TLS handshake and the authentication run blocking, before the
//! connection is handed to its thread (and again on a reconnect, or for each
//! new connection of `--reconnect-every`, which times them separately), so
//! they are never measured as request latency. Afterwards the engine drives the
//! stream non-blocking: a TLS read decrypts what rustls holds and what the
//! socket has; a TLS write encrypts into rustls and sends as much as the
//! socket takes, and [`Stream::flush_tls`] sends the rest once it is
//! writable again. The plaintext path pays one branch per read and write.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::os::fd::{AsRawFd, RawFd};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore};

use crate::cli::Args;

/// How every connection of the run is opened.
pub struct Connector {
    tls: Option<Tls>,
    /// `--auth`: the handshake request, and the user for messages.
    auth: Option<(Vec<u8>, String)>,
}

struct Tls {
    config: Arc<ClientConfig>,
    /// `--tls-name`; otherwise the host of each server.
    name: Option<ServerName<'static>>,
    /// `--cert`: the server's verdict on it comes after the client has
    /// finished its TLS 1.3 handshake, so one round trip confirms it.
    client_cert: bool,
}

impl Connector {
    pub fn new(args: &Args) -> Result<Connector, String> {
        let tls = if args.tls {
            Some(Tls {
                config: Arc::new(client_config(
                    args.ca.as_deref(),
                    args.cert.as_deref(),
                    args.key.as_deref(),
                )?),
                name: match &args.tls_name {
                    Some(n) => Some(server_name(n)?),
                    None => None,
                },
                client_cert: args.cert.is_some(),
            })
        } else {
            None
        };
        let auth = match &args.auth {
            Some(a) => {
                let (user, pass) = a.split_once(':').ok_or("--auth: expected USER:PASSWORD")?;
                if user.is_empty() || user.contains(' ') {
                    return Err("--auth: the user must be non-empty and without spaces".into());
                }
                let token = format!("{user} {pass}");
                let req = format!("set auth 0 0 {}\r\n{token}\r\n", token.len()).into_bytes();
                Some((req, user.to_string()))
            }
            None => None,
        };
        Ok(Connector { tls, auth })
    }

    /// A connection to `name` (`HOST:PORT`) at `addr`, handshaken and
    /// authenticated, in blocking mode. `timeout` bounds the TCP connect
    /// and each read and write of the handshakes.
    pub fn connect(
        &self,
        addr: &SocketAddr,
        name: &str,
        timeout: Duration,
    ) -> Result<Stream, String> {
        let s = TcpStream::connect_timeout(addr, timeout)
            .map_err(|e| format!("cannot connect to {name}: {e}"))?;
        s.set_nodelay(true)
            .map_err(|e| format!("{name}: TCP_NODELAY: {e}"))?;
        if self.tls.is_none() && self.auth.is_none() {
            return Ok(Stream::Plain(s));
        }
        s.set_read_timeout(Some(timeout))
            .and(s.set_write_timeout(Some(timeout)))
            .map_err(|e| format!("{name}: {e}"))?;
        let mut stream = match &self.tls {
            None => Stream::Plain(s),
            Some(tls) => {
                let server = match &tls.name {
                    Some(n) => n.clone(),
                    None => server_name(host_of(name))?,
                };
                let mut conn = ClientConnection::new(tls.config.clone(), server)
                    .map_err(|e| format!("{name}: TLS: {e}"))?;
                let mut sock = s;
                while conn.is_handshaking() {
                    conn.complete_io(&mut sock)
                        .map_err(|e| format!("{name}: TLS handshake failed: {e}"))?;
                }
                Stream::Tls(Box::new(TlsStream { conn, sock }))
            }
        };
        if self.tls.as_ref().is_some_and(|t| t.client_cert) && self.auth.is_none() {
            let line = request_line(&mut stream, b"version\r\n").map_err(|e| {
                format!("{name}: TLS handshake failed: client certificate not accepted: {e}")
            })?;
            if !line.starts_with(b"VERSION ") {
                return Err(format!(
                    "{name}: `version` answered `{}`",
                    String::from_utf8_lossy(&line)
                ));
            }
        }
        if let Some((req, user)) = &self.auth {
            authenticate(&mut stream, req)
                .map_err(|e| format!("{name}: authentication as `{user}` failed: {e}"))?;
        }
        let sock = stream.tcp();
        sock.set_read_timeout(None)
            .and(sock.set_write_timeout(None))
            .map_err(|e| format!("{name}: {e}"))?;
        Ok(stream)
    }
}

/// Sends the `set` handshake and requires `STORED`.
fn authenticate(s: &mut Stream, req: &[u8]) -> Result<(), String> {
    let line = request_line(s, req)?;
    if line == b"STORED" {
        Ok(())
    } else {
        Err(format!(
            "server replied `{}`",
            String::from_utf8_lossy(&line)
        ))
    }
}

/// Sends `req` and reads one reply line (without its CRLF).
fn request_line(s: &mut Stream, req: &[u8]) -> Result<Vec<u8>, String> {
    s.write_all(req).map_err(|e| e.to_string())?;
    s.flush().map_err(|e| e.to_string())?;
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    while !line.ends_with(b"\r\n") {
        match s.read(&mut byte) {
            Ok(0) => return Err("server closed the connection".into()),
            Ok(_) => line.push(byte[0]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e.to_string()),
        }
        if line.len() > 1024 {
            return Err("reply line too long".into());
        }
    }
    line.truncate(line.len() - 2);
    Ok(line)
}

/// The host part of `HOST:PORT` (`[v6]:PORT` too).
fn host_of(server: &str) -> &str {
    let host = server.rsplit_once(':').map_or(server, |(h, _)| h);
    host.strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host)
}

fn server_name(name: &str) -> Result<ServerName<'static>, String> {
    ServerName::try_from(name.to_string())
        .map_err(|e| format!("`{name}` is not a valid TLS server name: {e}"))
}

fn client_config(
    ca: Option<&Path>,
    cert: Option<&Path>,
    key: Option<&Path>,
) -> Result<ClientConfig, String> {
    let ca = ca.ok_or("--tls needs --ca <PEM>: the CA certificates to verify the server with")?;
    let mut roots = RootCertStore::empty();
    for c in read_certs(ca)? {
        roots
            .add(c)
            .map_err(|e| format!("{}: bad CA certificate: {e}", ca.display()))?;
    }
    // ring has no post-quantum key exchange (see server/src/net/tls.rs): the
    // same choice as the server's.
    // X25519 first, as OpenSSL and browsers offer it (rustls 0.23.48 puts
    // P-384 first for ring, whose P-384 is slow): the handshake measured is
    // the one real clients make.
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::CryptoProvider {
        kx_groups: vec![
            rustls::crypto::ring::kx_group::X25519,
            rustls::crypto::ring::kx_group::SECP256R1,
            rustls::crypto::ring::kx_group::SECP384R1,
        ],
        ..rustls::crypto::ring::default_provider()
    });
    let builder = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| format!("TLS: {e}"))?
        .with_root_certificates(roots);
    match (cert, key) {
        (None, None) => Ok(builder.with_no_client_auth()),
        (Some(cert), Some(key)) => {
            let chain = read_certs(cert)?;
            let key = PrivateKeyDer::from_pem_file(key)
                .map_err(|e| format!("{}: no usable private key: {e}", key.display()))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| format!("client certificate and key: {e}"))
        }
        _ => Err("--cert and --key go together".into()),
    }
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("{}: cannot read PEM certificates: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{}: no certificate in it", path.display()));
    }
    Ok(certs)
}

/// A TLS client connection and its socket.
pub struct TlsStream {
    conn: ClientConnection,
    sock: TcpStream,
}

/// A connection's stream: plaintext, or TLS over the same socket.
pub enum Stream {
    Plain(TcpStream),
    Tls(Box<TlsStream>),
}

impl Stream {
    pub fn tcp(&self) -> &TcpStream {
        match self {
            Stream::Plain(s) => s,
            Stream::Tls(t) => &t.sock,
        }
    }

    pub fn set_nonblocking(&self, on: bool) -> io::Result<()> {
        self.tcp().set_nonblocking(on)
    }

    pub fn set_read_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        self.tcp().set_read_timeout(t)
    }

    pub fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        self.tcp().shutdown(how)
    }

    /// Ends the connection cleanly, as far as a non-blocking socket with
    /// nothing outstanding allows: TLS sends its close_notify alert, then
    /// the socket sends its FIN. The descriptor closes when the stream is
    /// dropped.
    pub fn close(&mut self) {
        if let Stream::Tls(t) = self {
            t.conn.send_close_notify();
            let _ = t.send_pending();
        }
        let _ = self.shutdown(Shutdown::Write);
    }

    /// Sends what TLS still holds encrypted; `WouldBlock` if the socket is
    /// full before it is all out. Always done for plaintext.
    pub fn flush_tls(&mut self) -> io::Result<()> {
        match self {
            Stream::Plain(_) => Ok(()),
            Stream::Tls(t) => t.send_pending(),
        }
    }
}

impl TlsStream {
    fn send_pending(&mut self) -> io::Result<()> {
        while self.conn.wants_write() {
            self.conn.write_tls(&mut self.sock)?;
        }
        Ok(())
    }

    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            match self.conn.reader().read(buf) {
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                // Closed without close_notify: a close all the same.
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(0),
                Err(e) => return Err(e),
            }
            if self.conn.read_tls(&mut self.sock)? == 0 {
                return Ok(0);
            }
            if let Err(e) = self.conn.process_new_packets() {
                // Tell the server why (an alert), as far as the socket takes.
                let _ = self.send_pending();
                return Err(io::Error::new(io::ErrorKind::InvalidData, e));
            }
            // Anything TLS must answer (a key update) goes out as it can.
            match self.send_pending() {
                Err(e) if e.kind() != io::ErrorKind::WouldBlock => return Err(e),
                _ => {}
            }
        }
    }

    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        // What is already encrypted goes first; a full socket takes no more.
        self.send_pending()?;
        let n = self.conn.writer().write(buf)?;
        match self.send_pending() {
            Err(e) if e.kind() != io::ErrorKind::WouldBlock => Err(e),
            _ => Ok(n),
        }
    }
}

impl Read for Stream {
    #[inline]
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.read(buf),
            Stream::Tls(t) => t.read(buf),
        }
    }
}

impl Write for Stream {
    #[inline]
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.write(buf),
            Stream::Tls(t) => t.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        self.flush_tls()
    }
}

impl AsRawFd for Stream {
    fn as_raw_fd(&self) -> RawFd {
        self.tcp().as_raw_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::host_of;

    #[test]
    fn hosts() {
        assert_eq!(host_of("127.0.0.1:22201"), "127.0.0.1");
        assert_eq!(host_of("localhost:1"), "localhost");
        assert_eq!(host_of("[::1]:22201"), "::1");
    }
}
