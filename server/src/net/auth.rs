//! A connection's side of `crate::access`: the handshake a connection
//! must pass before anything else when mcqd runs with `-Y`, and the
//! permission check of each request.

use std::sync::Arc;
use std::time::Instant;

use futures_lite::future;

use super::connection::Connection;
use super::output::Pending;
use crate::access::handshake::{self, Step};
use crate::access::{Perms, Session, Verdict};
use crate::logging;
use crate::protocol::Command;

/// Failed handshakes a connection may make; the last one's reply is
/// followed by the close.
pub const MAX_ATTEMPTS: u32 = 3;

/// The reply to a request the user may not make.
pub const DENIED: &str = "CLIENT_ERROR permission denied";

impl Connection {
    /// Marks this connection authenticated as `user`, as the handshake
    /// does: the seam for TLS client certificates (the certificate's name
    /// is the user). True if `user` is known (named by the authfile or by
    /// a `[user …]` section); false, and the connection unchanged, if not
    /// or if mcqd has neither (then no permission applies to anyone and
    /// the connection may do everything anyway).
    ///
    /// Called before [`Connection::run`], it spares the connection the
    /// `-Y` handshake; its requests are then checked against `user`'s
    /// permissions. On false the caller decides: with mutual TLS
    /// required, close the connection (with `-Y` it would otherwise still
    /// have to pass the handshake; without `-Y`, nothing restricts it).
    pub(super) fn authenticated_by_certificate(&mut self, user: &str) -> bool {
        let Some(access) = self.shared.access.clone() else {
            return false;
        };
        let mut session = Session::new(access);
        if !session.log_in(user) {
            return false;
        }
        log::debug!("authenticated as {user} by a client certificate");
        self.session = Some(session);
        true
    }

    /// Whether a handshake must come first (`-Y`, and not authenticated
    /// otherwise yet).
    pub(super) fn must_authenticate(&self) -> bool {
        self.session.as_ref().is_some_and(|s| !s.is_authenticated())
    }

    /// Whether this connection's user may make `command`.
    pub(super) fn permitted(&mut self, command: &Command) -> bool {
        self.session
            .as_mut()
            .is_none_or(|s| s.perms().permits(command))
    }

    /// A refused request: counted, logged at -vv and answered (unless it
    /// asked for no reply).
    pub(super) fn denied(&mut self, command: &Command) -> Option<Pending> {
        self.counters.add(&self.counters.permission_denied, 1);
        let user = self.session.as_ref().and_then(Session::user).unwrap_or("");
        log::trace!("permission denied: user {user}: {}", describe(command));
        let noreply = match command {
            Command::Set { noreply, .. }
            | Command::Delete { noreply, .. }
            | Command::Flush { noreply, .. }
            | Command::FlushAll { noreply }
            | Command::Verbosity { noreply, .. } => *noreply,
            _ => false,
        };
        (!noreply).then(|| Pending::line(DENIED))
    }

    /// The permissions `stats` and `stats queue` filter their queues by:
    /// `None` when every queue may be read (or nothing is checked).
    pub(super) fn readable_only(&mut self) -> Option<Arc<Perms>> {
        let perms = self.session.as_mut()?.perms();
        (!perms.read.is_everything()).then(|| perms.clone())
    }

    /// memcached's handshake (see `crate::access::handshake`), on what
    /// the client sends first: true once authenticated, with whatever
    /// the client sent after its handshake left in `input` for the
    /// requests; false when the connection is to close. It holds at most
    /// [`handshake::MAX_BUFFER`] bytes meanwhile, makes at most
    /// [`MAX_ATTEMPTS`] attempts, and gets the access's timeout to finish.
    pub(super) async fn authenticate(&mut self) -> std::io::Result<bool> {
        let Some(access) = self.session.as_ref().map(|s| s.access().clone()) else {
            return Ok(true);
        };
        let deadline = Instant::now() + access.timeout;
        let peer = self.stream.peer_addr().ok().map(|a| a.ip());
        let mut failures = 0;
        let mut chunk = [0u8; 4096];
        loop {
            let (consumed, reply, close) = match handshake::step(&self.input) {
                Step::More => {
                    let room = (handshake::MAX_BUFFER - self.input.len()).min(chunk.len());
                    let read = future::or(
                        async { Some(self.stream.read(&mut chunk[..room]).await) },
                        async {
                            future::or(self.stop.wait(), async {
                                glommio::timer::sleep(
                                    deadline.saturating_duration_since(Instant::now()),
                                )
                                .await;
                            })
                            .await;
                            None
                        },
                    )
                    .await;
                    let n = match read {
                        Some(n) => n?,
                        None => {
                            log::debug!("an unauthenticated connection timed out or the server stops: closed");
                            return Ok(false);
                        }
                    };
                    if n == 0 {
                        return Ok(false);
                    }
                    self.counters.add(&self.counters.bytes_read, n as u64);
                    self.input.extend_from_slice(&chunk[..n]);
                    continue;
                }
                Step::Close => {
                    log::trace!(
                        "unauthenticated connection closed on: {}",
                        logging::escape(&self.input[..self.input.len().min(64)])
                    );
                    return Ok(false);
                }
                Step::Reply {
                    consumed,
                    line,
                    close,
                } => (consumed, line, close),
                Step::Attempt {
                    consumed,
                    user,
                    password,
                } => {
                    let (user, password) = (user.to_vec(), password.to_vec());
                    self.input.drain(..consumed);
                    let c = &self.counters;
                    c.add(&c.auth_cmds, 1);
                    match access.check(peer, &user, &password).await {
                        Verdict::Accepted(name) => {
                            let session = self.session.as_mut().expect("a session");
                            if session.log_in(&name) {
                                self.reply_line("STORED").await?;
                                return Ok(true);
                            }
                            // Gone from the authfile while its password
                            // was being checked.
                            c.add(&c.auth_errors, 1);
                        }
                        Verdict::Refused | Verdict::Blocked => c.add(&c.auth_errors, 1),
                    }
                    failures += 1;
                    (0, handshake::FAILURE, failures >= MAX_ATTEMPTS)
                }
            };
            self.input.drain(..consumed);
            self.reply_line(reply).await?;
            if close {
                return Ok(false);
            }
        }
    }

    async fn reply_line(&mut self, line: &str) -> std::io::Result<()> {
        let mut out = Vec::with_capacity(line.len() + 2);
        crate::protocol::reply::line(&mut out, line);
        self.stream.write_all(&out).await?;
        self.counters
            .add(&self.counters.bytes_written, out.len() as u64);
        Ok(())
    }
}

/// A request for a log line: its command and queues, never a body.
fn describe(command: &Command) -> String {
    let q = |name: &[u8]| logging::escape(name);
    match command {
        Command::Set { queue, .. } => format!("set {}", q(queue)),
        Command::Get { keys, with_seq } => {
            let keys: Vec<String> = keys.iter().map(|k| q(&k.key)).collect();
            format!(
                "{} {}",
                if *with_seq { "gets" } else { "get" },
                keys.join(" ")
            )
        }
        Command::Delete { queue, .. } => format!("delete {}", q(queue)),
        Command::Flush { queue, .. } => format!("flush {}", q(queue)),
        other => format!("{other:?}"),
    }
}
