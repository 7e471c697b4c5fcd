//! Per-queue limits, Kestrel's: how many messages and bytes a queue may
//! hold, how large one message and how old its head may be, and whether a
//! full queue refuses new messages or drops its oldest.
//!
//! They come from the config file (`-f`), in sections after the flags:
//!
//! ```text
//! [queue jobs]            # this queue
//! max_items = 100000
//! [queue logs.*]          # every queue whose name starts with "logs."
//! max_bytes = 1G
//! max_age = 1h
//! discard_old_when_full
//! [queue *]               # every other queue
//! max_item_size = 64K
//! expire_to = expired     # expired messages move there instead
//! ```
//!
//! A queue takes the section of its exact name, else the longest matching
//! prefix (`*` alone matches every name). `reload` (or SIGHUP) reads the
//! file again; every executor picks the new limits up at its next request,
//! without a lock on the request path (a generation counter says when).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The limits of one queue; `None` is no limit.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct QueueLimits {
    pub max_items: Option<u64>,
    pub max_bytes: Option<u64>,
    pub max_item_size: Option<u64>,
    /// Messages enqueued longer ago expire (as with `exptime`).
    pub max_age: Option<Duration>,
    /// A full queue drops its oldest messages to take a new one, instead
    /// of answering `NOT_STORED`.
    pub discard_old_when_full: bool,
    /// Expired messages move to this queue instead of being dropped.
    pub expire_to: Option<Vec<u8>>,
}

impl QueueLimits {
    /// No limit at all (what a queue without a section has).
    pub const NONE: QueueLimits = QueueLimits {
        max_items: None,
        max_bytes: None,
        max_item_size: None,
        max_age: None,
        discard_old_when_full: false,
        expire_to: None,
    };
}

/// Every section of a config file.
///
/// Each section's limits are shared (an `Arc`) by the queues they apply
/// to, so a queue holds a pointer, not a copy: with a million queues a
/// copy each was ~100 MB.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Limits {
    exact: HashMap<Vec<u8>, Arc<QueueLimits>>,
    /// Longest prefix first.
    prefixes: Vec<(Vec<u8>, Arc<QueueLimits>)>,
}

impl Limits {
    /// The limits of queue `name`.
    pub fn for_queue(&self, name: &[u8]) -> QueueLimits {
        self.shared_for_queue(name)
            .map_or(QueueLimits::NONE, |l| (*l).clone())
    }

    /// The limits of queue `name`, shared with every queue of its section;
    /// `None` when no section applies (no limits).
    pub fn shared_for_queue(&self, name: &[u8]) -> Option<Arc<QueueLimits>> {
        if let Some(l) = self.exact.get(name) {
            return Some(l.clone());
        }
        self.prefixes
            .iter()
            .find(|(p, _)| name.starts_with(p))
            .map(|(_, l)| l.clone())
    }

    /// Reads the `[queue …]` sections of a config file's text (the flags
    /// before the first section are the command line's business).
    pub fn parse(text: &str) -> Result<Limits, String> {
        let mut limits = Limits::default();
        let mut current: Option<(String, QueueLimits)> = None;
        let mut seen = std::collections::HashSet::new();
        let finish = |limits: &mut Limits, section: Option<(String, QueueLimits)>| {
            if let Some((pattern, l)) = section {
                match pattern.strip_suffix('*') {
                    Some(prefix) => limits
                        .prefixes
                        .push((prefix.as_bytes().to_vec(), Arc::new(l))),
                    None => {
                        limits.exact.insert(pattern.into_bytes(), Arc::new(l));
                    }
                }
            }
        };
        for (n, raw) in text.lines().enumerate() {
            let at = |why: String| format!("line {}: {why}", n + 1);
            let line = raw.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            if let Some(header) = line.strip_prefix('[') {
                if is_user_section(header) {
                    // Permissions (crate::access::grants): its lines are
                    // skipped here, as the flags before the first section.
                    finish(&mut limits, current.take());
                    continue;
                }
                let pattern = header
                    .strip_suffix(']')
                    .and_then(|h| h.trim().strip_prefix("queue "))
                    .map(str::trim)
                    .filter(|p| !p.is_empty() && !p.contains(char::is_whitespace))
                    .ok_or_else(|| {
                        at(format!(
                            "expected `[queue <name or prefix*>]` or `[user <name>]`, got `{raw}`"
                        ))
                    })?;
                if pattern[..pattern.len() - 1].contains('*') {
                    return Err(at(format!("`*` may only end a pattern: `{pattern}`")));
                }
                if !seen.insert(pattern.to_string()) {
                    return Err(at(format!("a second section for `{pattern}`")));
                }
                finish(&mut limits, current.take());
                current = Some((pattern.to_string(), QueueLimits::default()));
                continue;
            }
            let Some((_, l)) = current.as_mut() else {
                continue; // a flag line, before the first section
            };
            let (key, value) = match line.split_once('=') {
                Some((k, v)) => (k.trim(), Some(v.trim())),
                None => (line, None),
            };
            let need = || value.ok_or_else(|| at(format!("`{key}` needs a value")));
            match key {
                "max_items" => l.max_items = Some(count(need()?).map_err(at)?),
                "max_bytes" => l.max_bytes = Some(size(need()?).map_err(at)?),
                "max_item_size" => l.max_item_size = Some(size(need()?).map_err(at)?),
                "max_age" => l.max_age = Some(duration(need()?).map_err(at)?),
                "discard_old_when_full" => {
                    l.discard_old_when_full = match value {
                        None | Some("true") => true,
                        Some("false") => false,
                        Some(v) => return Err(at(format!("expected true or false, got `{v}`"))),
                    }
                }
                "expire_to" => {
                    let target = need()?;
                    if !crate::protocol::valid_queue_name(target.as_bytes()) {
                        return Err(at(format!("`{target}` is not a queue name")));
                    }
                    l.expire_to = Some(target.as_bytes().to_vec());
                }
                _ => {
                    return Err(at(format!(
                        "unknown queue setting `{key}` (max_items, max_bytes, max_item_size, max_age, discard_old_when_full, expire_to)"
                    )))
                }
            }
        }
        finish(&mut limits, current.take());
        limits
            .prefixes
            .sort_by(|a, b| b.0.len().cmp(&a.0.len()).then(a.0.cmp(&b.0)));
        Ok(limits)
    }

    /// [`Limits::parse`] of the file at `path`; errors name the file.
    pub fn load(path: &Path) -> Result<Limits, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        Limits::parse(&text).map_err(|e| format!("{}: {e}", path.display()))
    }
}

/// A `[user …]` section's header (after its `[`).
fn is_user_section(header: &str) -> bool {
    let h = header.strip_suffix(']').unwrap_or(header).trim();
    h == "user"
        || h.strip_prefix("user")
            .is_some_and(|u| u.starts_with(char::is_whitespace))
}

fn count(v: &str) -> Result<u64, String> {
    v.parse()
        .map_err(|_| format!("expected a number, got `{v}`"))
}

/// A size: bytes, or with a `K`, `M` or `G` suffix (powers of 1024).
pub fn size(v: &str) -> Result<u64, String> {
    let (digits, unit) = match v.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((i, _)) => v.split_at(i),
        None => (v, ""),
    };
    let shift = match unit.trim() {
        "" => 0,
        "K" | "k" | "KB" | "KiB" => 10,
        "M" | "MB" | "MiB" => 20,
        "G" | "GB" | "GiB" => 30,
        _ => {
            return Err(format!(
                "expected a size like 4096, 64K, 10M or 1G, got `{v}`"
            ))
        }
    };
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("expected a size like 4096, 64K, 10M or 1G, got `{v}`"))?;
    n.checked_mul(1 << shift)
        .ok_or_else(|| format!("`{v}` is too large"))
}

/// A duration with a unit: `ms`, `s`, `m`, `h` or `d`.
fn duration(v: &str) -> Result<Duration, String> {
    let bad = || format!("expected a duration like 500ms, 30s, 10m, 1h or 7d, got `{v}`");
    let i = v.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
    let n: u64 = v[..i].parse().map_err(|_| bad())?;
    let secs = |k: u64| n.checked_mul(k).map(Duration::from_secs).ok_or_else(bad);
    match &v[i..] {
        "ms" => Ok(Duration::from_millis(n)),
        "s" => secs(1),
        "m" => secs(60),
        "h" => secs(3600),
        "d" => secs(86400),
        _ => Err(bad()),
    }
}

/// The limits in force, shared by every executor; `reload` swaps them.
#[derive(Debug, Default)]
pub struct SharedLimits {
    /// The config file, if the server was started with one.
    path: Option<PathBuf>,
    current: Mutex<Arc<Limits>>,
    /// Bumped by every reload: readers compare it (a plain load) and take
    /// the lock only when it moved.
    generation: AtomicU64,
}

impl SharedLimits {
    /// Reads the limits of the config file at `path` (none without one).
    pub fn open(path: Option<&Path>) -> Result<SharedLimits, String> {
        let limits = match path {
            Some(p) => Limits::load(p)?,
            None => Limits::default(),
        };
        Ok(SharedLimits {
            path: path.map(Path::to_path_buf),
            current: Mutex::new(Arc::new(limits)),
            generation: AtomicU64::new(0),
        })
    }

    /// Fixed limits (tests).
    pub fn fixed(limits: Limits) -> SharedLimits {
        SharedLimits {
            path: None,
            current: Mutex::new(Arc::new(limits)),
            generation: AtomicU64::new(0),
        }
    }

    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    pub fn get(&self) -> Arc<Limits> {
        self.current
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Reads the config file again. On an error the limits in force stay.
    pub fn reload(&self) -> Result<(), String> {
        match self.read()? {
            Some(limits) => {
                self.install(limits);
                Ok(())
            }
            None => Err("mcqd was started without a config file (-f)".into()),
        }
    }

    /// The limits of the config file as it is now (`None` without one),
    /// for [`SharedLimits::install`] once everything else reloaded is good
    /// too (`crate::access::reload`).
    pub fn read(&self) -> Result<Option<Limits>, String> {
        self.path.as_deref().map(Limits::load).transpose()
    }

    /// Puts `limits` in force.
    pub fn install(&self, limits: Limits) {
        *self.current.lock().unwrap_or_else(|e| e.into_inner()) = Arc::new(limits);
        self.generation.fetch_add(1, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sections_exact_beats_longest_prefix() {
        let l = Limits::parse(
            "port = 1\n[queue jobs]\nmax_items = 10\n[queue jo*]\nmax_bytes = 2K\n\
             [queue j*]\nmax_item_size = 1M # big\ndiscard_old_when_full\n[queue *]\nmax_age = 90s\n",
        )
        .unwrap();
        assert_eq!(l.for_queue(b"jobs").max_items, Some(10));
        assert_eq!(l.for_queue(b"jobs").max_bytes, None, "exact wins whole");
        assert_eq!(l.for_queue(b"joke").max_bytes, Some(2048));
        let j = l.for_queue(b"jam");
        assert_eq!(
            (j.max_item_size, j.discard_old_when_full),
            (Some(1 << 20), true)
        );
        assert_eq!(l.for_queue(b"other").max_age, Some(Duration::from_secs(90)));
        assert_eq!(
            Limits::parse("").unwrap().for_queue(b"x"),
            QueueLimits::default()
        );
    }

    #[test]
    fn user_sections_are_skipped() {
        let l = Limits::parse(
            "[queue a]\nmax_items = 1\n[user alice]\nread = a\n[user *]\nwrite = *\n[queue b]\nmax_items = 2\n",
        )
        .unwrap();
        assert_eq!(l.for_queue(b"a").max_items, Some(1));
        assert_eq!(l.for_queue(b"b").max_items, Some(2));
    }

    #[test]
    fn bad_sections_name_their_line() {
        for (text, line) in [
            ("[queue]\n", 1),
            ("[queue a]\nmax_items = lots\n", 2),
            ("[queue a]\n\nbogus = 1\n", 3),
            ("[queue a]\nexpire_to = b c\n", 2),
            ("[queue a]\n[queue a]\n", 2),
            ("[queue a*b]\n", 1),
            ("[queue a]\nmax_age = 10\n", 2),
            ("[queue a]\nmax_bytes\n", 2),
            ("[queue a]\ndiscard_old_when_full = maybe\n", 2),
            ("[username]\n", 1),
        ] {
            let e = Limits::parse(text).unwrap_err();
            assert!(e.starts_with(&format!("line {line}:")), "{text:?}: {e}");
        }
    }

    #[test]
    fn sizes_and_durations() {
        assert_eq!(size("4096"), Ok(4096));
        assert_eq!(size("64K"), Ok(65536));
        assert_eq!(size("10M"), Ok(10 << 20));
        assert_eq!(size("1G"), Ok(1 << 30));
        assert!(size("1T").is_err() && size("").is_err() && size("99999999999G").is_err());
        assert_eq!(duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(duration("7d"), Ok(Duration::from_secs(7 * 86400)));
        assert!(duration("7").is_err() && duration("s").is_err());
    }
}
