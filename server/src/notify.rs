//! systemd's readiness protocol (`Type=notify`, `sd_notify(3)`): one
//! datagram to the unix socket named by `NOTIFY_SOCKET` for each change of
//! state.
//!
//! # Why readiness is told at all
//! With `Type=simple` systemd counts mcqd started as soon as the process
//! exists, so units ordered after it (and `systemctl start` itself) go on
//! while recovery may still be replaying a large log and nothing listens
//! yet. `READY=1` is sent once every executor listens, after recovery.
//!
//! # Why by hand
//! The protocol is one `sendto` of `KEY=value` lines; std's `UnixDatagram`
//! does it, abstract socket names (`@…`) included, without a dependency.
//! Without `NOTIFY_SOCKET` (not under systemd) nothing is sent. A failed
//! send is logged and otherwise ignored: readiness is a courtesy to the
//! supervisor, and systemd notices a service that never reports ready.

use std::io;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};

/// Every executor listens and recovery is done.
pub fn ready() {
    notify("READY=1\nSTATUS=serving");
}

/// Shutdown has begun.
pub fn stopping() {
    notify("STOPPING=1\nSTATUS=stopping");
}

/// A SIGHUP reload of the per-queue limits has begun; [`ready`] ends it.
/// systemd wants the `CLOCK_MONOTONIC` time with it (`notify-reload`).
pub fn reloading() {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime only writes the timespec we hand it.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) };
    let usec = now.tv_sec as u64 * 1_000_000 + now.tv_nsec as u64 / 1_000;
    notify(&format!("RELOADING=1\nMONOTONIC_USEC={usec}"));
}

fn notify(state: &str) {
    let Some(socket) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    if let Err(e) = send(&socket, state) {
        log::warn!(
            "cannot tell systemd {} through NOTIFY_SOCKET={}: {e}",
            state.lines().next().unwrap_or_default(),
            socket.to_string_lossy()
        );
    }
}

/// Sends `state` to `socket`: a path, or an abstract name after `@`.
pub fn send(socket: &std::ffi::OsStr, state: &str) -> io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let bytes = socket.as_bytes();
    let addr = match bytes.strip_prefix(b"@") {
        Some(name) => SocketAddr::from_abstract_name(name)?,
        None => SocketAddr::from_pathname(socket)?,
    };
    let sent = UnixDatagram::unbound()?.send_to_addr(state.as_bytes(), &addr)?;
    if sent != state.len() {
        return Err(io::Error::other("short datagram"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sends_to_a_path_and_to_an_abstract_name() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let receiver = UnixDatagram::bind(&path).unwrap();
        send(path.as_os_str(), "READY=1").unwrap();
        let mut buf = [0u8; 64];
        let n = receiver.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1");

        let name = format!("mcqd-notify-test-{}", std::process::id());
        let addr = SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let receiver = UnixDatagram::bind_addr(&addr).unwrap();
        send(format!("@{name}").as_ref(), "STOPPING=1").unwrap();
        let n = receiver.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"STOPPING=1");
    }

    #[test]
    fn a_missing_socket_is_an_error_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        assert!(send(dir.path().join("nobody").as_os_str(), "READY=1").is_err());
    }
}
