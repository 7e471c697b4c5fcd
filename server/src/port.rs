//! The server's port: claimed for this process, probed so that mcqd never
//! joins another server's listeners, bound before root is dropped, and
//! listened on by every executor.
//!
//! # Why bind and listen are apart
//! A port below 1024 needs root only to bind. The sockets are bound at
//! start-up, before `-u` drops root, and listened on only once the
//! executors have opened their shards, so no client connects to a server
//! that cannot answer yet.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd, OwnedFd};
use std::time::{Duration, Instant};

use glommio::net::TcpListener;

use crate::daemon::context;

/// Refuses a port another server already listens on. The executors'
/// listeners set SO_REUSEPORT so that they can share the port, and that
/// would let them join an unrelated server's listeners just as well: the
/// kernel would split clients between two servers with different data. So
/// first bind once without SO_REUSEPORT, which fails with EADDRINUSE while
/// anyone listens on the address. The probe never listens, so no client can
/// reach it.
///
/// A busy port is tried again for up to [`PORT_RELEASE_WAIT`] before mcqd
/// gives up, because a server killed with SIGKILL (or aborted by a panic)
/// leaves its listeners behind for a moment: an accept in flight on its
/// io_uring holds the socket until the kernel has torn the ring down, after
/// the process is gone. Joining such a ghost with SO_REUSEPORT would hand
/// some clients to a listener nobody accepts on; refusing at once made
/// every quick restart after a kill -9 fail on a busy machine.
///
/// The probe alone leaves a window: two servers starting at once could both
/// probe before either listens, and then share the port. So the probe is
/// made under a claim on the address that lasts as long as the process (an
/// abstract Unix socket, released by the kernel however mcqd ends): a second
/// mcqd starting on the same address waits, then refuses, the same way.
pub fn probe_port(addr: IpAddr, port: u16) -> io::Result<()> {
    let started = Instant::now();
    loop {
        match claim_address(addr, port)
            .and_then(|()| bound_socket(SocketAddr::new(addr, port), false))
        {
            Ok(_) => break,
            Err(e)
                if e.kind() == io::ErrorKind::AddrInUse
                    && started.elapsed() < PORT_RELEASE_WAIT =>
            {
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => return Err(e),
        }
    }
    if started.elapsed() > Duration::from_millis(20) {
        log::debug!(
            "{addr}:{port} was busy for {} ms before it came free",
            started.elapsed().as_millis()
        );
    }
    Ok(())
}

/// Claims `addr:port` for this process (see [`probe_port`]); idempotent
/// for each address (-l may name several).
fn claim_address(addr: IpAddr, port: u16) -> io::Result<()> {
    use std::os::linux::net::SocketAddrExt;
    use std::os::unix::net::{SocketAddr as UnixAddr, UnixDatagram};
    static CLAIMED: std::sync::Mutex<Vec<(SocketAddr, UnixDatagram)>> =
        std::sync::Mutex::new(Vec::new());
    let mut claimed = CLAIMED.lock().unwrap_or_else(|e| e.into_inner());
    let address = SocketAddr::new(addr, port);
    if claimed.iter().any(|(a, _)| *a == address) {
        return Ok(());
    }
    let name = UnixAddr::from_abstract_name(format!("mcqd-listen-{addr}-{port}"))?;
    match UnixDatagram::bind_addr(&name) {
        Ok(socket) => {
            claimed.push((address, socket));
            Ok(())
        }
        Err(e) if e.kind() == io::ErrorKind::AddrInUse => Err(io::Error::new(
            e.kind(),
            format!(
                "cannot listen on {}: address already in use (another server is listening there)",
                SocketAddr::new(addr, port)
            ),
        )),
        Err(e) => Err(e),
    }
}

/// How long [`probe_port`] waits for a busy port to come free.
const PORT_RELEASE_WAIT: Duration = Duration::from_secs(5);

/// One executor's listener on its socket from [`bound_socket`], with
/// SO_REUSEPORT, so that every executor listens on the same port and the
/// kernel spreads connections among them.
pub fn listen(fd: OwnedFd, addr: SocketAddr) -> io::Result<TcpListener> {
    // SAFETY: listen on a bound socket we own; glommio takes it over.
    unsafe {
        if libc::listen(fd.as_raw_fd(), 1024) != 0 {
            return Err(context(
                format!("cannot listen on {addr}"),
                io::Error::last_os_error(),
            ));
        }
        Ok(TcpListener::from_raw_fd(fd.into_raw_fd()))
    }
}

/// A TCP socket bound to `addr`, with SO_REUSEADDR (and SO_REUSEPORT if
/// `reuse_port`). Errors say `cannot listen on <addr>: <why>`.
///
/// SO_REUSEADDR is what lets mcqd restart at once after a kill -9: the
/// killed server's connections linger in FIN_WAIT or TIME_WAIT on the port,
/// and a bind without SO_REUSEPORT (the probe) conflicts with them unless
/// both it and they carry SO_REUSEADDR (accepted connections inherit the
/// listener's). It never lets two sockets listen on one address.
pub fn bound_socket(addr: SocketAddr, reuse_port: bool) -> io::Result<OwnedFd> {
    let cannot = |e: io::Error| {
        let why = if e.raw_os_error() == Some(libc::EADDRINUSE) {
            "address already in use (another server is listening there)".to_string()
        } else {
            e.to_string()
        };
        io::Error::new(e.kind(), format!("cannot listen on {addr}: {why}"))
    };
    let (family, sockaddr, len) = sockaddr(addr);
    let set = |fd: &OwnedFd, option: libc::c_int| {
        let one: libc::c_int = 1;
        // SAFETY: setsockopt reads an int that lives across the call.
        let rc = unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                option,
                (&one as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if rc == 0 {
            Ok(())
        } else {
            Err(cannot(io::Error::last_os_error()))
        }
    };
    // SAFETY: a new socket, owned (and closed) by OwnedFd from here on.
    let fd = unsafe {
        let fd = libc::socket(family, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(cannot(io::Error::last_os_error()));
        }
        OwnedFd::from_raw_fd(fd)
    };
    set(&fd, libc::SO_REUSEADDR)?;
    if reuse_port {
        set(&fd, libc::SO_REUSEPORT)?;
    }
    // SAFETY: bind reads `len` bytes of the address, which holds that many.
    let rc = unsafe {
        libc::bind(
            fd.as_raw_fd(),
            (&sockaddr as *const libc::sockaddr_storage).cast(),
            len,
        )
    };
    if rc != 0 {
        return Err(cannot(io::Error::last_os_error()));
    }
    Ok(fd)
}

/// `addr` as the C socket address bind takes: (family, address, length).
fn sockaddr(addr: SocketAddr) -> (libc::c_int, libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: all-zero is a valid sockaddr_storage, and each arm writes a
    // sockaddr_in/sockaddr_in6, which fit in it, at its start.
    unsafe {
        let mut storage: libc::sockaddr_storage = std::mem::zeroed();
        match addr {
            SocketAddr::V4(a) => {
                let sin =
                    &mut *(&mut storage as *mut libc::sockaddr_storage).cast::<libc::sockaddr_in>();
                sin.sin_family = libc::AF_INET as libc::sa_family_t;
                sin.sin_port = a.port().to_be();
                sin.sin_addr.s_addr = u32::from_ne_bytes(a.ip().octets());
                (
                    libc::AF_INET,
                    storage,
                    std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
                )
            }
            SocketAddr::V6(a) => {
                let sin6 = &mut *(&mut storage as *mut libc::sockaddr_storage)
                    .cast::<libc::sockaddr_in6>();
                sin6.sin6_family = libc::AF_INET6 as libc::sa_family_t;
                sin6.sin6_port = a.port().to_be();
                sin6.sin6_addr.s6_addr = a.ip().octets();
                sin6.sin6_flowinfo = a.flowinfo();
                sin6.sin6_scope_id = a.scope_id();
                (
                    libc::AF_INET6,
                    storage,
                    std::mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t,
                )
            }
        }
    }
}
