//! The authfile (`-Y`): memcached's format, one `user:password` a line,
//! with a password that may also be an argon2 PHC string
//! (`user:$argon2id$v=19$m=19456,t=2,p=1$<salt>$<hash>`, as
//! `mcqd hash-password` prints).
//!
//! Read as memcached reads it: the user is everything before the line's
//! first `:`, the password everything after it up to the end of the line
//! (a `\r` before the `\n` is not part of it, a `:` inside is). Beyond
//! memcached: any number of users; blank lines and lines starting with
//! `#` are skipped (memcached refuses a file with a blank line); a user
//! named twice, a user name with a space (the handshake splits
//! `username password` at its first space, so it could never log in) and
//! a line without a `:` are errors, which name the line but never echo it
//! (it holds a password). A password starting with `$argon2` is a hash
//! and must parse as one.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use subtle::ConstantTimeEq;

/// What the authfile holds for one user.
#[derive(Clone, PartialEq, Eq)]
pub enum Secret {
    /// A password as memcached keeps it; compared in constant time.
    Plain(Box<[u8]>),
    /// An argon2 PHC string, checked on a blocking thread.
    Hashed(Arc<str>),
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never a password in a log line or a panic message.
        match self {
            Secret::Plain(_) => f.write_str("Plain(..)"),
            Secret::Hashed(_) => f.write_str("Hashed(..)"),
        }
    }
}

/// The users of an authfile.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AuthFile {
    users: HashMap<Vec<u8>, Secret>,
    /// One of the file's hashes, checked for a user the file does not
    /// have, so that an unknown name takes as long to refuse as a wrong
    /// password of a hashed user.
    decoy: Option<Arc<str>>,
}

impl AuthFile {
    pub fn parse(text: &[u8]) -> Result<AuthFile, String> {
        let mut file = AuthFile::default();
        for (n, raw) in text.split(|&b| b == b'\n').enumerate() {
            let at = |why: &str| format!("line {}: {why}", n + 1);
            let line = raw.strip_suffix(b"\r").unwrap_or(raw);
            if line.trim_ascii().is_empty() || line.starts_with(b"#") {
                continue;
            }
            let Some(colon) = line.iter().position(|&b| b == b':') else {
                return Err(at("expected `user:password` (no `:` on the line)"));
            };
            let (user, password) = (&line[..colon], &line[colon + 1..]);
            if !std::str::from_utf8(user).is_ok_and(super::grants::valid_user) {
                return Err(at(
                    "a user name must not be empty or hold spaces (the handshake's `username password` splits at the first space)",
                ));
            }
            let secret = if password.starts_with(b"$argon2") {
                let phc = std::str::from_utf8(password)
                    .ok()
                    .filter(|p| is_argon2(p))
                    .ok_or_else(|| at("a password starting with `$argon2` must be an argon2 PHC string (see `mcqd hash-password`)"))?;
                let phc: Arc<str> = Arc::from(phc);
                file.decoy.get_or_insert_with(|| phc.clone());
                Secret::Hashed(phc)
            } else {
                Secret::Plain(password.into())
            };
            if file.users.insert(user.to_vec(), secret).is_some() {
                return Err(at(&format!(
                    "user `{}` is named a second time",
                    String::from_utf8_lossy(user)
                )));
            }
        }
        Ok(file)
    }

    /// [`AuthFile::parse`] of the file at `path`; errors name the file.
    pub fn load(path: &Path) -> Result<AuthFile, String> {
        let text =
            std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        AuthFile::parse(&text).map_err(|e| format!("{}: {e}", path.display()))
    }

    pub fn len(&self) -> usize {
        self.users.len()
    }

    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }

    pub fn contains(&self, user: &str) -> bool {
        self.users.contains_key(user.as_bytes())
    }

    pub fn users(&self) -> impl Iterator<Item = String> + '_ {
        self.users
            .keys()
            .map(|u| String::from_utf8_lossy(u).into_owned())
    }

    /// What to check `user`'s password against: its secret, or for a user
    /// the file does not have, a decoy hash if the file has any hash
    /// (`Err`: whatever the check says, the answer is no).
    pub fn secret(&self, user: &[u8]) -> Result<Secret, Option<Secret>> {
        match self.users.get(user) {
            Some(secret) => Ok(secret.clone()),
            None => Err(self.decoy.clone().map(Secret::Hashed)),
        }
    }
}

/// Whether `phc` is an argon2 PHC string with a salt, a hash and
/// parameters argon2 takes.
fn is_argon2(phc: &str) -> bool {
    PasswordHash::new(phc).is_ok_and(|h| {
        h.salt.is_some()
            && h.hash.is_some()
            && argon2::Algorithm::try_from(h.algorithm).is_ok()
            && argon2::Params::try_from(&h).is_ok()
    })
}

/// A plain password against the given one, in time that depends on their
/// lengths only.
pub fn plain_matches(stored: &[u8], given: &[u8]) -> bool {
    stored.len() == given.len() && bool::from(stored.ct_eq(given))
}

/// An argon2 PHC string against the given password: milliseconds of CPU
/// (run it on a blocking thread, never on an executor).
pub fn hash_matches(phc: &str, given: &[u8]) -> bool {
    PasswordHash::new(phc).is_ok_and(|hash| Argon2::default().verify_password(given, &hash).is_ok())
}

/// `password` hashed with argon2id (the crate's defaults: 19 MiB, 2
/// passes, 1 lane, OWASP's recommendation) and a random salt, as a PHC
/// string.
pub fn hash(password: &[u8]) -> Result<String, String> {
    let mut salt = [0u8; 16];
    // SAFETY: getrandom writes at most salt.len() bytes into salt.
    let n = unsafe { libc::getrandom(salt.as_mut_ptr().cast(), salt.len(), 0) };
    if n != salt.len() as isize {
        return Err(format!("getrandom: {}", std::io::Error::last_os_error()));
    }
    let salt = SaltString::encode_b64(&salt).map_err(|e| e.to_string())?;
    Argon2::default()
        .hash_password(password, &salt)
        .map(|h| h.to_string())
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memcached_lines_and_ours() {
        let phc = hash(b"s3cret").unwrap();
        assert!(phc.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{phc}");
        let text = format!(
            "alice:pass word\r\nbob:a:b\n# a comment\n\ncarol:{phc}\nempty:\ndave:last-no-newline"
        );
        let f = AuthFile::parse(text.as_bytes()).unwrap();
        assert_eq!(f.len(), 5);
        let plain = |user: &[u8]| match f.secret(user) {
            Ok(Secret::Plain(p)) => p,
            other => panic!("{other:?}"),
        };
        assert_eq!(&*plain(b"alice"), b"pass word");
        assert_eq!(&*plain(b"bob"), b"a:b");
        assert_eq!(&*plain(b"empty"), b"");
        assert_eq!(&*plain(b"dave"), b"last-no-newline");
        let Ok(Secret::Hashed(h)) = f.secret(b"carol") else {
            panic!("carol is hashed")
        };
        assert!(hash_matches(&h, b"s3cret") && !hash_matches(&h, b"s3cre"));
        // An unknown user is checked against a decoy hash.
        assert!(matches!(f.secret(b"zed"), Err(Some(Secret::Hashed(_)))));
        assert!(matches!(
            AuthFile::parse(b"a:b\n").unwrap().secret(b"zed"),
            Err(None)
        ));
        assert!(f.contains("carol") && !f.contains("zed"));
    }

    #[test]
    fn bad_files_name_the_line_not_the_password() {
        for (text, line) in [
            ("nocolon\n", 1),
            ("a:b\n:x\n", 2),
            ("a b:x\n", 1),
            ("a:1\na:2\n", 2),
            ("a:$argon2id$garbage\n", 1),
            ("a:$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ\n", 1),
            (
                "a:$argon2xx$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNo\n",
                1,
            ),
        ] {
            let e = AuthFile::parse(text.as_bytes()).unwrap_err();
            assert!(e.starts_with(&format!("line {line}:")), "{text:?}: {e}");
            assert!(!e.contains("garbage") && !e.contains(":2"), "{e}");
        }
        assert!(AuthFile::parse(b"").unwrap().is_empty());
    }

    #[test]
    fn plain_comparison() {
        assert!(plain_matches(b"abc", b"abc"));
        assert!(!plain_matches(b"abc", b"abd") && !plain_matches(b"abc", b"ab"));
        assert!(plain_matches(b"", b""));
    }
}
