//! Who may connect and what they may do.
//!
//! - [`authfile`]: `-Y <authfile>`, memcached's `user:password` lines,
//!   a password also as an argon2 PHC string ([`hash`]: `mcqd
//!   hash-password`).
//! - [`handshake`]: memcached's ASCII authentication, a connection's
//!   first `set` whose data is `username password`.
//! - [`grants`]: the `[user …]` sections of the config file: which queues
//!   each user may read, write and administer.
//! - [`limiter`]: failed authentications per source address.
//!
//! # Why a snapshot behind a generation
//! The authfile and the grants are read together into one [`Snapshot`];
//! `reload` and SIGHUP read both files (and the queue limits) again and
//! swap them in only if all of them are good, so a bad file keeps the old
//! ones. A connection keeps its user's [`Perms`] (an `Arc`) and checks a
//! generation counter (one atomic load) before each request, so a reload
//! reaches connections already authenticated (a removed user's requests
//! are all refused) and the request path takes no lock.
//!
//! # Why nothing without it
//! Without `-Y` and without `[user …]` sections there is no [`Access`]
//! at all and a connection has no [`Session`]: its requests pay one
//! `Option` test.

pub mod authfile;
pub mod grants;
pub mod handshake;
pub mod hash;
pub mod limiter;

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub use authfile::AuthFile;
pub use grants::{Grants, Perms};

use crate::logging;
use crate::shared::Shared;

/// The authfile and the grants in force.
#[derive(Debug, Default)]
pub struct Snapshot {
    /// `None` without `-Y`.
    pub authfile: Option<AuthFile>,
    pub grants: Grants,
}

impl Snapshot {
    /// The permissions of `user`, or `None` for a user neither the
    /// authfile nor a `[user …]` section names.
    pub fn perms(&self, user: &str) -> Option<Arc<Perms>> {
        let in_authfile = self.authfile.as_ref().is_some_and(|f| f.contains(user));
        self.grants.perms(user, in_authfile)
    }

    /// Lines worth a warning: users who may authenticate and do nothing.
    fn warnings(&self) -> Vec<String> {
        let Some(file) = &self.authfile else {
            return Vec::new();
        };
        let mut idle: Vec<String> = file
            .users()
            .filter(|u| self.perms(u).is_some_and(|p| *p == Perms::default()))
            .collect();
        idle.sort();
        let mut warnings = Vec::new();
        if file.is_empty() {
            warnings.push("the authfile (-Y) names no user: nobody can authenticate".into());
        }
        if !idle.is_empty() {
            warnings.push(format!(
                "users of the authfile without a [user …] section (and no [user *]) may authenticate but do nothing: {}",
                idle.join(", ")
            ));
        }
        warnings
    }
}

/// Authentication and permissions, shared by every executor.
#[derive(Debug)]
pub struct Access {
    /// `-Y`: connections must authenticate.
    auth_file: Option<PathBuf>,
    /// `-f`: its `[user …]` sections.
    config: Option<PathBuf>,
    /// An unauthenticated connection is closed this long after it opened.
    pub timeout: Duration,
    current: Mutex<Arc<Snapshot>>,
    /// Bumped by every reload (see the module's doc).
    generation: AtomicU64,
    limiter: Mutex<limiter::Limiter>,
}

/// What a handshake's `username password` came to.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// That user, with that password.
    Accepted(String),
    /// No such user, or not that password.
    Refused,
    /// Not checked: its address failed too often (see [`limiter`]).
    Blocked,
}

/// Reads the authfile (if any) and the config file's `[user …]` sections.
fn load(auth_file: Option<&Path>, config: Option<&Path>) -> Result<Snapshot, String> {
    let authfile = auth_file.map(AuthFile::load).transpose()?;
    let grants = match config {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
            Grants::parse(&text).map_err(|e| format!("{}: {e}", path.display()))?
        }
        None => Grants::default(),
    };
    Ok(Snapshot { authfile, grants })
}

impl Access {
    /// Reads `-Y`'s authfile and `-f`'s `[user …]` sections: `None` when
    /// there are neither (nothing is checked, ever).
    pub fn open(
        auth_file: Option<&Path>,
        config: Option<&Path>,
        timeout: Duration,
    ) -> Result<Option<Access>, String> {
        let snapshot = load(auth_file, config)?;
        if auth_file.is_none() && snapshot.grants.is_empty() {
            return Ok(None);
        }
        for warning in snapshot.warnings() {
            log::warn!("{warning}");
        }
        match &snapshot.authfile {
            Some(file) => log::info!(
                "authentication required (-Y): {} users, {}",
                file.len(),
                if snapshot.grants.is_empty() {
                    "each may do everything (no [user …] section)"
                } else {
                    "permissions from the config file's [user …] sections"
                }
            ),
            None => log::info!(
                "no -Y: the [user …] sections apply to connections authenticated by a client certificate only"
            ),
        }
        Ok(Some(Access {
            auth_file: auth_file.map(Path::to_path_buf),
            config: config.map(Path::to_path_buf),
            timeout,
            current: Mutex::new(Arc::new(snapshot)),
            generation: AtomicU64::new(0),
            limiter: Mutex::new(limiter::Limiter::default()),
        }))
    }

    /// Whether a connection must authenticate before anything else (`-Y`).
    pub fn required(&self) -> bool {
        self.auth_file.is_some()
    }

    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.current
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn install(&self, snapshot: Snapshot) {
        for warning in snapshot.warnings() {
            log::warn!("{warning}");
        }
        *self.current.lock().unwrap_or_else(|e| e.into_inner()) = Arc::new(snapshot);
        self.generation.fetch_add(1, Ordering::Release);
    }

    /// Checks a handshake's user and password, from `peer`. A hashed
    /// password is checked on the executor's blocking thread; a failure
    /// is counted against `peer` and logged.
    pub async fn check(&self, peer: Option<IpAddr>, user: &[u8], password: &[u8]) -> Verdict {
        let now = Instant::now();
        let limiter = || self.limiter.lock().unwrap_or_else(|e| e.into_inner());
        if peer.is_some_and(|ip| limiter().blocked(ip, now)) {
            static BLOCKED: logging::Throttle = logging::Throttle::new(1000);
            if let Some(n) = BLOCKED.hit() {
                log::warn!(
                    "authentication refused unchecked: {} failed too often ({n} such refusals since the last such line)",
                    describe(peer)
                );
            }
            return Verdict::Blocked;
        }
        let snapshot = self.snapshot();
        let secret = match &snapshot.authfile {
            Some(file) => file.secret(user),
            None => Err(None),
        };
        let good = match secret {
            Ok(authfile::Secret::Plain(stored)) => authfile::plain_matches(&stored, password),
            Ok(authfile::Secret::Hashed(phc)) => hash_matches(phc, password).await,
            Err(Some(authfile::Secret::Hashed(decoy))) => {
                let _ = hash_matches(decoy, password).await;
                false
            }
            Err(_) => false,
        };
        let name = std::str::from_utf8(user).ok();
        if let (true, Some(name)) = (good, name) {
            log::debug!("{} authenticated as {name}", describe(peer));
            return Verdict::Accepted(name.to_string());
        }
        let counted = peer.map(|ip| limiter().failed(ip, Instant::now()));
        log::warn!(
            "authentication failure for user `{}` from {}",
            logging::escape(user),
            describe(peer)
        );
        match counted {
            Some(limiter::Failed::Blocked) => log::warn!(
                "{}: {} failed authentications within {} s: its attempts are refused unchecked for {} s",
                describe(peer),
                limiter::MAX_FAILURES,
                limiter::WINDOW.as_secs(),
                limiter::BLOCK.as_secs()
            ),
            Some(limiter::Failed::Untracked) => {
                static FULL: logging::Throttle = logging::Throttle::new(10_000);
                if FULL.hit().is_some() {
                    log::warn!(
                        "{} addresses with failed authentications are tracked already: failures from new ones are not counted",
                        limiter::MAX_SOURCES
                    );
                }
            }
            _ => {}
        }
        Verdict::Refused
    }
}

fn describe(peer: Option<IpAddr>) -> String {
    peer.map_or_else(|| "an unknown peer".into(), |ip| ip.to_string())
}

/// An argon2 check, on this executor's blocking thread (milliseconds of
/// CPU would hold every connection of the executor).
async fn hash_matches(phc: Arc<str>, password: &[u8]) -> bool {
    let password = password.to_vec();
    glommio::executor()
        .spawn_blocking(move || authfile::hash_matches(&phc, &password))
        .await
}

/// `reload` and SIGHUP: the config file's queue limits, and with
/// authentication or permissions the authfile and the `[user …]`
/// sections, all read again and swapped in only if every one is good
/// (on an error, everything in force stays). What was reloaded, or why
/// nothing was.
pub fn reload(shared: &Shared) -> Result<&'static str, String> {
    let Some(access) = &shared.access else {
        shared.limits.reload()?;
        return Ok("queue limits reloaded");
    };
    let snapshot = load(access.auth_file.as_deref(), access.config.as_deref())?;
    if let Some(limits) = shared.limits.read()? {
        shared.limits.install(limits);
    }
    access.install(snapshot);
    Ok(if access.required() {
        "queue limits, authfile and user permissions reloaded"
    } else {
        "queue limits and user permissions reloaded"
    })
}

/// One connection's authentication: who it is, and what that user may do.
#[derive(Debug)]
pub struct Session {
    access: Arc<Access>,
    /// Of the snapshot `perms` came from.
    generation: u64,
    /// `None` until authenticated.
    user: Option<Box<str>>,
    perms: Arc<Perms>,
}

impl Session {
    /// A connection that has not authenticated: it may do nothing.
    pub fn new(access: Arc<Access>) -> Session {
        Session {
            generation: access.generation(),
            access,
            user: None,
            perms: Arc::new(Perms::default()),
        }
    }

    pub fn access(&self) -> &Arc<Access> {
        &self.access
    }

    pub fn is_authenticated(&self) -> bool {
        self.user.is_some()
    }

    /// The user, once authenticated.
    pub fn user(&self) -> Option<&str> {
        self.user.as_deref()
    }

    /// Makes this `user`'s session, if the authfile or a `[user …]`
    /// section names `user`; false (and unchanged) if neither does.
    pub fn log_in(&mut self, user: &str) -> bool {
        let generation = self.access.generation();
        match self.access.snapshot().perms(user) {
            Some(perms) => {
                self.user = Some(user.into());
                self.perms = perms;
                self.generation = generation;
                true
            }
            None => false,
        }
    }

    /// The permissions in force: after a reload, the new ones (none for a
    /// user no longer named).
    pub fn perms(&mut self) -> &Arc<Perms> {
        let generation = self.access.generation();
        if generation != self.generation {
            self.generation = generation;
            self.perms = self
                .user
                .as_deref()
                .and_then(|u| self.access.snapshot().perms(u))
                .unwrap_or_default();
        }
        &self.perms
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn nothing_without_an_authfile_or_sections() {
        let dir = tempfile::tempdir().unwrap();
        let conf = write(dir.path(), "c", "port = 1\n[queue a]\nmax_items = 1\n");
        let t = Duration::from_secs(1);
        assert!(Access::open(None, Some(&conf), t).unwrap().is_none());
        assert!(Access::open(None, None, t).unwrap().is_none());
        let conf = write(dir.path(), "c2", "[user cert]\nread = *\n");
        let access = Access::open(None, Some(&conf), t).unwrap().unwrap();
        assert!(!access.required());
        let mut s = Session::new(Arc::new(access));
        assert!(!s.log_in("nobody") && !s.is_authenticated());
        assert!(s.log_in("cert") && s.user() == Some("cert"));
        assert!(s.perms().read.is_everything());
    }

    #[test]
    fn sessions_pick_a_reload_up_and_a_bad_file_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let auth = write(dir.path(), "auth", "alice:a\nbob:b\n");
        let conf = write(dir.path(), "conf", "[user alice]\nread = q\n");
        let access = Arc::new(
            Access::open(Some(&auth), Some(&conf), Duration::from_secs(1))
                .unwrap()
                .unwrap(),
        );
        assert!(access.required());
        let mut alice = Session::new(access.clone());
        assert!(alice.log_in("alice"));
        assert!(alice.perms().read.matches(b"q"));
        let mut bob = Session::new(access.clone());
        assert!(bob.log_in("bob"), "in the authfile, without a section");
        assert_eq!(**bob.perms(), Perms::default());

        write(dir.path(), "conf", "[user alice]\nread = q, r\n");
        write(dir.path(), "auth", "bob:b\n");
        access.install(load(Some(&auth), Some(&conf)).unwrap());
        // alice has a section still, though the authfile lost her.
        assert!(alice.perms().read.matches(b"r"));
        write(dir.path(), "conf", "[user carol]\nread = *\n");
        access.install(load(Some(&auth), Some(&conf)).unwrap());
        assert_eq!(**alice.perms(), Perms::default(), "alice is gone");

        write(dir.path(), "auth", "no colon here\n");
        let e = load(Some(&auth), Some(&conf)).unwrap_err();
        assert!(e.contains("line 1") && !e.contains("no colon"), "{e}");
    }
}
