//! The offline subcommands: `mcqd inspect`, `mcqd verify` and
//! `mcqd backup`, MemcacheQ's `db_stat -d` and a hot backup for mcq.
//!
//! # Why read-only, and why beside a live server
//! An operator reaches for these when something looks wrong, often while
//! the server still runs. So they never write, truncate, lock or rename
//! anything in the data directory: files are opened read-only and read
//! with plain buffered reads, and nothing here takes the server's lock.
//! What they see of a live directory is what a crash at that moment would
//! leave, so they judge it the way recovery would: the newest segment of a
//! shard may end in a torn tail (a write in progress), which is not damage.
//!
//! # Why recovery's own code
//! The queue state shown is what the next start would recover, because it
//! is computed by recovery's replay ([`crate::log::recovery::Replayer`],
//! into a sink of the view's own) from the same summaries recovery would
//! use (chosen by the same rule, [`crate::log::recovery::choose`]: index
//! files where valid, scans elsewhere), read through a read-only
//! [`view::RoFile`] instead of the
//! DMA files the server writes with. Records, scans and index files are
//! parsed by `log::record`, `log::segment` and `index`, never again here.

pub mod backup;
pub mod inspect;
pub mod json;
pub mod verify;
pub mod view;

use std::ffi::OsString;

/// The subcommands, as `mcqd --help` lists them.
pub const HELP: &str = "\
Offline subcommands (read-only, safe beside a running server):
  mcqd inspect [-H <dir>] [--queue <q> [--dump <dir>]] [--json]
      segments per shard and queue counters, as the next start would recover them
  mcqd verify [-H <dir>] [--json]
      checks every record, index file and the manifest; exits 1 on damage
  mcqd backup [-H <dir>] <dest>
      consistent copy of a (live) data directory; restore with `mcqd -H <dest>`

Checks:
  mcqd check [<server flags>]
      what mcqd checks before it starts (open files, io_uring, locked memory,
      O_DIRECT in the data directory), one line each; exits 0, or 71 or 73
  mcqd ping [-l <addr>] [-p <port>]
      asks a running mcqd for its version (a health check); exits 0 or 1

Authentication:
  mcqd hash-password [--user <name>]
      an argon2id hash of the password on standard input, for the authfile (-Y)

Run `mcqd <subcommand> --help` for details.

Exit statuses of the server:
  0   stopped cleanly (SIGTERM, SIGINT, or the shutdown command)
  1   any other failure to start or to run (the ERROR line says which)
  2   a bad command line
  71  io_uring unusable: missing (ENOSYS), refused (EPERM: seccomp,
      kernel.io_uring_disabled, kernel.io_uring_group, a security module),
      lacking operations mcqd needs, or RLIMIT_MEMLOCK below 512 KiB; or
      a hard RLIMIT_NOFILE below what mcqd needs to serve one connection
      (mcqd raises the soft limit to the hard one itself)
  73  the data directory cannot hold the log: in memory (tmpfs, ramfs),
      refusing O_DIRECT, or not writable";

/// Runs the subcommand `args[1]` names and returns its exit status, or
/// `None` when `args[1]` is no subcommand (the server's flags follow).
pub fn run_subcommand(args: &[OsString]) -> Option<i32> {
    let which = args.get(1)?.to_str()?;
    // clap names the program after the first argument: `mcqd inspect`.
    let rest = || {
        let mut v = vec![OsString::from(format!("mcqd {which}"))];
        v.extend(args[2..].iter().cloned());
        v
    };
    Some(match which {
        "inspect" => inspect::main(rest()),
        "verify" => verify::main(rest()),
        "backup" => backup::main(rest()),
        "check" => crate::preflight::check::main(rest(), crate::server::IO_MEMORY),
        "ping" => crate::ping::main(rest()),
        "hash-password" => crate::access::hash::main(rest()),
        _ => return None,
    })
}

/// The exit status of an error that stopped a subcommand (as opposed to
/// damage found, which is 1).
pub const EXIT_ERROR: i32 = 2;

/// `secs` since the Unix epoch as RFC 3339 UTC, e.g. `2026-11-25T16:31:40Z`.
pub fn rfc3339(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

/// Seconds since the Unix epoch, now.
pub fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Bytes as text for people: printable ASCII as is, anything else `\xNN`.
pub fn escape(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len());
    for &b in bytes {
        if (0x21..0x7f).contains(&b) && b != b'\\' {
            s.push(b as char);
        } else {
            s.push_str(&format!("\\x{b:02x}"));
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_dates() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_795_624_300), "2026-11-25T16:31:40Z");
        assert_eq!(rfc3339(4_107_542_399), "2100-02-28T23:59:59Z");
    }

    #[test]
    fn names_are_escaped_for_people() {
        assert_eq!(escape(b"q1+a"), "q1+a");
        assert_eq!(escape(b"a b\\\x00\xff"), "a\\x20b\\x5c\\x00\\xff");
    }

    #[test]
    fn only_subcommands_are_taken() {
        let args = |v: &[&str]| v.iter().map(OsString::from).collect::<Vec<_>>();
        assert_eq!(run_subcommand(&args(&["mcqd", "-p", "1"])), None);
        assert_eq!(run_subcommand(&args(&["mcqd"])), None);
    }
}
