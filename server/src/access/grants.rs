//! What each user may do: the `[user …]` sections of the config file.
//!
//! ```text
//! [user producer]
//! write = jobs, logs.*
//! [user worker]
//! read = jobs
//! [user ops]
//! read = *
//! admin = *              # every admin command, on every queue
//! [user *]               # every other user of the authfile
//! read = public.*
//! ```
//!
//! A pattern is a queue's exact name, a prefix ending in `*`, or `*`
//! alone (every queue). `read` allows `get`/`gets` with any option
//! (`/open`, `/close`, `/abort`, `/peek`, `/t=`); `write` allows `set`;
//! `admin` allows `delete` and `flush` of the queues it matches, and
//! `admin = *` also the server-wide commands (`flush_all`, `reload`,
//! `refresh_certs`, `shutdown`, `stats reset`, `verbosity`). Anyone
//! authenticated may send `stats`, `stats queue` (which list only the
//! queues the user may read), `version` and `quit`.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use crate::protocol::Command;

/// Queue-name patterns: exact names, prefixes (`jobs.*`) and `*`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Patterns {
    /// `*`: every queue.
    all: bool,
    exact: HashSet<Vec<u8>>,
    prefixes: Vec<Vec<u8>>,
}

impl Patterns {
    /// Every queue.
    pub fn everything() -> Patterns {
        Patterns {
            all: true,
            ..Patterns::default()
        }
    }

    /// Whether queue `name` is matched.
    pub fn matches(&self, name: &[u8]) -> bool {
        self.all || self.exact.contains(name) || self.prefixes.iter().any(|p| name.starts_with(p))
    }

    /// Whether this is `*` (every queue, so nothing needs filtering).
    pub fn is_everything(&self) -> bool {
        self.all
    }

    /// Adds the patterns of a value: names separated by commas or spaces.
    fn add(&mut self, value: &str) -> Result<(), String> {
        for pattern in value
            .split(|c: char| c == ',' || c.is_whitespace())
            .filter(|p| !p.is_empty())
        {
            match pattern.strip_suffix('*') {
                Some("") => self.all = true,
                Some(prefix) if valid(prefix) => self.prefixes.push(prefix.as_bytes().to_vec()),
                None if valid(pattern) => {
                    self.exact.insert(pattern.as_bytes().to_vec());
                }
                _ => {
                    return Err(format!(
                        "`{pattern}` is not a queue name, a prefix ending in `*`, or `*`"
                    ))
                }
            }
        }
        Ok(())
    }
}

/// A pattern's name part: a queue name, without a `*` inside.
fn valid(name: &str) -> bool {
    crate::protocol::valid_queue_name(name.as_bytes()) && !name.contains('*')
}

/// One user's permissions.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Perms {
    pub read: Patterns,
    pub write: Patterns,
    pub admin: Patterns,
}

impl Perms {
    /// Everything (a user of an authfile when the config has no `[user …]`
    /// section at all: memcached's all-or-nothing).
    pub fn everything() -> Perms {
        Perms {
            read: Patterns::everything(),
            write: Patterns::everything(),
            admin: Patterns::everything(),
        }
    }

    /// Whether these permissions allow `command`. A multi-key `get` needs
    /// `read` on every one of its queues: it is refused whole, so no
    /// message is popped for a reply the client is told failed.
    pub fn permits(&self, command: &Command) -> bool {
        // No `_` arm: a new command must be given its class here.
        match command {
            Command::Set { queue, .. } => self.write.matches(queue),
            Command::Get { keys, .. } => keys.iter().all(|k| self.read.matches(&k.queue)),
            Command::Delete { queue, .. } | Command::Flush { queue, .. } => {
                self.admin.matches(queue)
            }
            Command::FlushAll { .. }
            | Command::RefreshCerts
            | Command::StatsReset
            | Command::Verbosity { .. }
            | Command::Reload
            | Command::Shutdown => self.admin.all,
            Command::Stats | Command::StatsQueue | Command::Version | Command::Quit => true,
        }
    }
}

/// Every `[user …]` section of a config file.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Grants {
    users: HashMap<String, Arc<Perms>>,
    /// `[user *]`: the users of the authfile without a section of their own.
    default: Option<Arc<Perms>>,
}

impl Grants {
    /// No section at all: every user of the authfile may do everything.
    pub fn is_empty(&self) -> bool {
        self.users.is_empty() && self.default.is_none()
    }

    /// Users with a section of their own.
    pub fn named(&self) -> impl Iterator<Item = &str> {
        self.users.keys().map(String::as_str)
    }

    /// Whether `user` has a section of its own.
    pub fn has(&self, user: &str) -> bool {
        self.users.contains_key(user)
    }

    /// The permissions of `user`, who is in the authfile (`in_authfile`)
    /// or not (a client certificate's name): its own section; else, for a
    /// user of the authfile, `[user *]`, or everything when there are no
    /// sections at all, or nothing. `None`: an unknown user.
    pub fn perms(&self, user: &str, in_authfile: bool) -> Option<Arc<Perms>> {
        if let Some(p) = self.users.get(user) {
            return Some(p.clone());
        }
        if !in_authfile {
            return None;
        }
        Some(match &self.default {
            Some(p) => p.clone(),
            None if self.is_empty() => Arc::new(Perms::everything()),
            None => Arc::new(Perms::default()),
        })
    }

    /// Reads the `[user …]` sections of a config file's text; everything
    /// else (the flags, `[queue …]` sections) is someone else's.
    pub fn parse(text: &str) -> Result<Grants, String> {
        let mut grants = Grants::default();
        let mut current: Option<(String, Perms)> = None;
        let finish = |grants: &mut Grants, section: Option<(String, Perms)>| {
            if let Some((user, perms)) = section {
                if user == "*" {
                    grants.default = Some(Arc::new(perms));
                } else {
                    grants.users.insert(user, Arc::new(perms));
                }
            }
        };
        let mut seen = HashSet::new();
        for (n, raw) in text.lines().enumerate() {
            let at = |why: String| format!("line {}: {why}", n + 1);
            let line = raw.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            if let Some(header) = line.strip_prefix('[') {
                finish(&mut grants, current.take());
                let user = match header.strip_suffix(']').map(str::trim) {
                    Some("user") => Some(""),
                    Some(h) => h
                        .strip_prefix("user")
                        .filter(|u| u.starts_with(char::is_whitespace))
                        .map(str::trim),
                    None => None,
                };
                let Some(user) = user else {
                    continue; // a `[queue …]` section (crate::limits)
                };
                if !valid_user(user) {
                    return Err(at(format!(
                        "expected `[user <name>]` or `[user *]` (a name without spaces or `:`), got `{raw}`"
                    )));
                }
                if !seen.insert(user.to_string()) {
                    return Err(at(format!("a second section for user `{user}`")));
                }
                current = Some((user.to_string(), Perms::default()));
                continue;
            }
            let Some((_, perms)) = current.as_mut() else {
                continue; // a flag, or a `[queue …]` setting
            };
            let Some((key, value)) = line.split_once('=') else {
                return Err(at(format!(
                    "expected `read = <patterns>`, `write = …` or `admin = …`, got `{line}`"
                )));
            };
            let patterns = match key.trim() {
                "read" => &mut perms.read,
                "write" => &mut perms.write,
                "admin" => &mut perms.admin,
                other => {
                    return Err(at(format!(
                        "unknown user setting `{other}` (read, write, admin)"
                    )))
                }
            };
            patterns.add(value.trim()).map_err(at)?;
        }
        finish(&mut grants, current.take());
        Ok(grants)
    }
}

/// A user name: what the handshake's `username password` can carry, and
/// what an authfile line can hold before its `:`.
pub fn valid_user(user: &str) -> bool {
    !user.is_empty() && !user.contains(|c: char| c.is_whitespace() || c == ':')
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{parse, Parsed};

    fn command(line: &str) -> Command {
        match parse(line.as_bytes(), 1 << 20) {
            Parsed::Command { command, .. } => command,
            other => panic!("{line:?}: {other:?}"),
        }
    }

    #[test]
    fn patterns_exact_prefix_and_everything() {
        let mut p = Patterns::default();
        p.add("jobs, logs.* a+b").unwrap();
        assert!(p.matches(b"jobs") && !p.matches(b"jobs2") && !p.matches(b"job"));
        assert!(p.matches(b"logs.") && p.matches(b"logs.web") && !p.matches(b"logs"));
        assert!(p.matches(b"a+b") && !p.matches(b"a"));
        assert!(!p.is_everything());
        p.add("*").unwrap();
        assert!(p.is_everything() && p.matches(b"anything"));
        assert!(!Patterns::default().matches(b"x"));
        for bad in ["a*b", "**", "a/b", "*x"] {
            assert!(Patterns::default().add(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn sections_and_their_errors() {
        let text = "port = 1\n[queue jobs]\nmax_items = 5\n[user alice]\nread = jobs\n\
                    write = jobs, in.*  # two\n[queue x]\nmax_bytes = 1K\n[user *]\nread = public.*\n\
                    [user ops]\nadmin = *\n";
        let g = Grants::parse(text).unwrap();
        let alice = g.perms("alice", true).unwrap();
        assert!(alice.read.matches(b"jobs") && !alice.read.matches(b"in.a"));
        assert!(alice.write.matches(b"in.a") && alice.admin == Patterns::default());
        // A user of the authfile without a section: `[user *]`.
        let bob = g.perms("bob", true).unwrap();
        assert!(bob.read.matches(b"public.x") && !bob.write.matches(b"public.x"));
        // A certificate's name that is in neither: unknown.
        assert!(g.perms("carol", false).is_none());
        assert!(g.perms("ops", false).unwrap().admin.is_everything());
        assert!(g.has("ops") && !g.is_empty());
        // No sections: everyone of the authfile may do everything.
        let none = Grants::parse("port = 1\n[queue a]\nmax_items = 1\n").unwrap();
        assert!(none.is_empty());
        assert_eq!(*none.perms("x", true).unwrap(), Perms::everything());
        assert!(none.perms("x", false).is_none());
        // Sections, but neither one's own nor `[user *]`: nothing.
        let g = Grants::parse("[user a]\nread = *\n").unwrap();
        assert_eq!(*g.perms("b", true).unwrap(), Perms::default());

        for (text, line) in [
            ("[user]\n", 1),
            ("[user a b]\n", 1),
            ("[user a:b]\n", 1),
            ("[user a]\nread\n", 2),
            ("[user a]\n\nexecute = *\n", 3),
            ("[user a]\nread = a*b\n", 2),
            ("[user a]\n[user a]\n", 2),
        ] {
            let e = Grants::parse(text).unwrap_err();
            assert!(e.starts_with(&format!("line {line}:")), "{text:?}: {e}");
        }
        // `[username]` is not a user section (crate::limits refuses it).
        assert!(Grants::parse("[username]\n").unwrap().is_empty());
    }

    #[test]
    fn each_command_needs_its_class() {
        let p =
            Grants::parse("[user u]\nread = r.*\nwrite = w\nadmin = a\n[user root]\nadmin = *\n")
                .unwrap();
        let u = p.perms("u", true).unwrap();
        let root = p.perms("root", true).unwrap();
        let allowed = |perms: &Perms, line: &str| perms.permits(&command(line));
        assert!(allowed(&u, "set w 0 0 1\r\nx\r\n"));
        assert!(!allowed(&u, "set r.1 0 0 1\r\nx\r\n"));
        for get in [
            "get r.1",
            "gets r.1",
            "get r.1/open",
            "get r.1/close",
            "get r.2/peek",
        ] {
            assert!(allowed(&u, &format!("{get}\r\n")), "{get}");
        }
        assert!(!allowed(&u, "get w\r\n"));
        // A multi-key get is refused whole when one key is not readable.
        assert!(allowed(&u, "get r.1 r.2\r\n") && !allowed(&u, "get r.1 w\r\n"));
        assert!(allowed(&u, "delete a\r\n") && allowed(&u, "flush a\r\n"));
        assert!(!allowed(&u, "delete w\r\n") && !allowed(&u, "flush r.1\r\n"));
        for server_wide in [
            "flush_all",
            "reload",
            "shutdown",
            "stats reset",
            "verbosity 1",
        ] {
            let line = format!("{server_wide}\r\n");
            assert!(!allowed(&u, &line), "{server_wide}");
            assert!(allowed(&root, &line), "{server_wide}");
        }
        for anyone in ["stats", "stats queue", "version", "quit"] {
            assert!(allowed(&Perms::default(), &format!("{anyone}\r\n")));
        }
        // admin = * is not read or write.
        assert!(!allowed(&root, "get x\r\n") && !allowed(&root, "set x 0 0 1\r\nx\r\n"));
    }
}
