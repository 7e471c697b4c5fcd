//! The open-file check: RLIMIT_NOFILE against the descriptors mcqd holds,
//! and raising it, before anything else at start-up.
//!
//! # Why mcqd raises its own limit
//! Every connection is a descriptor, and so is every segment file of the
//! log. The soft limit is often 1024 (most shells, systemd's default for
//! services) under a far higher hard limit (systemd's default is 524288),
//! and raising the soft limit up to the hard one needs no privilege:
//! memcached does so, and so does mcqd. It raises it all the
//! way to the hard limit, not to a figure of its own: the log keeps every
//! segment that holds a queued message open, so what mcqd needs grows with
//! the backlog, which no flag bounds, and a segment file that cannot be
//! opened stops its shard. A higher soft limit costs nothing here: what
//! 1024 protects is select(2)'s fixed-size set, which mcqd never uses.
//! With CAP_SYS_RESOURCE (root, before `-u` drops it; containers are not
//! given it by default) mcqd raises a hard limit too short for `-c`
//! connections as well, up to `fs.nr_open`.
//!
//! # Why an error, a warning, or neither
//! Below what mcqd needs with no client ([`Needs::own`]) plus one
//! connection, it could not serve at all: glommio would panic or an
//! executor fail to start for want of a ring, so mcqd says which limit,
//! the numbers and the fix in one line and exits 71 ([`Problem::OpenFiles`]).
//! Above that but below what `-c` connections need too, it serves, with
//! the connection limit lowered to what fits and a warning: a client
//! beyond is told `SERVER_ERROR too many connections` instead of the
//! server failing `accept` with EMFILE.
//!
//! [`Problem::OpenFiles`]: super::Problem::OpenFiles

use std::path::Path;

use super::{Passed, Problem};
use crate::config::Config;

/// Descriptors each executor holds: glommio's three io_uring rings (main,
/// latency, poll) and the eventfd that wakes it. Its listening socket is
/// counted in [`Needs::held`].
pub const PER_EXECUTOR: u64 = 4;
/// An eventfd glommio makes once per process, the first time a channel
/// between executors finds its other end not attached (yet, or any more).
pub const PER_PROCESS: u64 = 1;
/// Descriptors each shard holds besides its segments on disk: the segment
/// every start opens anew, and the preallocated spare that becomes the next.
pub const PER_SHARD: u64 = 2;
/// Descriptors kept free for what is opened for a moment or later: index
/// files written as segments are sealed and read as consumers page through
/// them, directory syncs, clients refused over `-c` (each is accepted to be
/// told why), a metrics scrape, the log's next segments.
pub const RESERVE: u64 = 32;
/// The reserve's part per shard, whose index files and segments come and go
/// independently.
pub const RESERVE_PER_SHARD: u64 = 4;
/// The limit the fixes suggest, unless more is needed: room for `-c 1024`
/// and a backlog of thousands of segments.
pub const SUGGESTED: u64 = 65536;

/// What mcqd will hold, for [`plan`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Needs {
    /// Open before the executors start: the standard streams and anything
    /// else inherited (counted), the data directory's `LOCK`, the socket
    /// that claims the port, one listening socket per executor and `-l` address, the
    /// `--metrics` listener, and with `-d` the pipe to the waiting parent.
    pub held: u64,
    pub executors: u64,
    pub shards: u64,
    /// Segment files (`*.log`) already in the shards' directories: each
    /// stays open while it holds a queued message.
    pub segments: u64,
    /// `-c`.
    pub connections: u64,
}

impl Needs {
    /// The descriptors mcqd holds with no client connected:
    ///
    /// ```text
    ///   held                           (counted, see the field)
    /// + executors × 4                  rings and eventfd
    /// + 1                              glommio's process-wide eventfd
    /// + shards × 2 + segments          segment files and spares
    /// + 32 + shards × 4                the reserve
    /// ```
    ///
    /// The terms are what `ls -l /proc/<pid>/fd` shows of a started mcqd
    /// less the reserve: on the 2-core development VM, 21 with the defaults
    /// (5 inherited, `LOCK`, the claim, 2 listeners, 6 rings, 2 eventfds, 2
    /// segments and 2 spares), 45 with `-t 4 --shards 8 --metrics`, 422
    /// after a restart on 400 segments of 64 KiB with `-t 2`; each
    /// connection adds one.
    pub fn own(&self) -> u64 {
        self.held
            + self.executors * PER_EXECUTOR
            + PER_PROCESS
            + self.shards * PER_SHARD
            + self.segments
            + self.reserve()
    }

    /// The reserve ([`RESERVE`] and [`RESERVE_PER_SHARD`]).
    pub fn reserve(&self) -> u64 {
        RESERVE + self.shards * RESERVE_PER_SHARD
    }

    /// What mcqd needs to serve at all: its own and one connection.
    pub fn to_run(&self) -> u64 {
        self.own() + 1
    }

    /// What mcqd needs to serve `-c` connections.
    pub fn with_connections(&self) -> u64 {
        self.own() + self.connections
    }

    /// The limit the fixes suggest.
    pub fn suggested(&self) -> u64 {
        SUGGESTED.max(self.with_connections())
    }

    /// The terms of [`Needs::own`], for people.
    pub fn breakdown(&self) -> String {
        format!(
            "{} open before the executors start, {} for {} io_uring rings and eventfds, {} for \
             the log's files in {} ({} on disk, a new segment and a spare each), {} in reserve",
            self.held,
            self.executors * PER_EXECUTOR + PER_PROCESS,
            counted(self.executors, "executor's", "executors'"),
            self.shards * PER_SHARD + self.segments,
            counted(self.shards, "shard", "shards"),
            counted(self.segments, "segment", "segments"),
            self.reserve()
        )
    }
}

/// `1 shard`, `2 shards`.
fn counted(n: u64, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// RLIMIT_NOFILE: the soft limit in force and the hard limit above it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit {
    pub soft: u64,
    pub hard: u64,
}

/// What mcqd does with a limit that lets it run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plan {
    /// The soft limit to set (the hard limit), when it is above the soft
    /// limit in force.
    pub raise_to: Option<u64>,
    /// The connections served: `-c`, or what fits beside mcqd's own.
    pub connections: u64,
}

/// What mcqd does with `limit`, given `needs`, the soft limit raised to the
/// hard one: [`Problem::OpenFiles`] below [`Needs::to_run`], else the
/// connections that fit, `-c` at most.
pub fn plan(needs: &Needs, limit: Limit) -> Result<Plan, Problem> {
    let usable = limit.hard;
    if usable < needs.to_run() {
        return Err(Problem::OpenFiles {
            limit,
            needs: *needs,
        });
    }
    Ok(Plan {
        raise_to: (limit.soft < usable).then_some(usable),
        connections: needs.connections.min(usable - needs.own()),
    })
}

/// The warning for connections lowered below `-c`.
fn lowered(needs: &Needs, limit: u64, connections: u64) -> String {
    format!(
        "the hard open-file limit (RLIMIT_NOFILE) is {limit}, enough for the {} descriptors mcqd \
         needs ({}) but not for -c {} connections beside them ({} in all): \
         serving at most {}, clients beyond get `SERVER_ERROR too many connections`; {}",
        needs.own(),
        needs.breakdown(),
        needs.connections,
        needs.with_connections(),
        counted(connections, "connection", "connections"),
        raise_it(needs.suggested())
    )
}

/// The fix, with the limit to ask for.
pub(super) fn raise_it(to: u64) -> String {
    format!(
        "raise it: `ulimit -n {to}` in a shell, `LimitNOFILE={to}` in a systemd unit, \
         `--ulimit nofile={to}:{to}` for docker or podman run"
    )
}

/// What the server does first of all: counts what it needs, raises the
/// limit (the hard one too when it is short and mcqd may) and returns the
/// connection limit to serve, with a warning when that is below `-c`.
pub fn raise(config: &Config) -> Result<(u64, Option<String>), Problem> {
    let needs = Needs::of(config);
    let mut found = limit();
    if found.hard < needs.with_connections() {
        // Root (CAP_SYS_RESOURCE) may raise the hard limit; anyone else
        // gets EPERM and keeps it.
        let to = needs.suggested().min(nr_open()).max(found.hard);
        if set(Limit { soft: to, hard: to }) {
            found = Limit { soft: to, hard: to };
        }
    }
    let planned = plan(&needs, found)?;
    if let Some(to) = planned.raise_to {
        if !set(Limit {
            soft: to,
            hard: found.hard,
        }) {
            // Not expected (the soft limit may always go up to the hard
            // one): judge the limit in force.
            let kept = Limit {
                soft: found.soft,
                hard: found.soft,
            };
            return finish(&needs, kept, plan(&needs, kept)?);
        }
        log::debug!(
            "open-file limit raised from {} to {to}: mcqd needs {}, and {} for -c {}",
            found.soft,
            needs.own(),
            needs.with_connections(),
            needs.connections
        );
    }
    finish(&needs, found, planned)
}

fn finish(needs: &Needs, found: Limit, plan: Plan) -> Result<(u64, Option<String>), Problem> {
    let warning = (plan.connections < needs.connections)
        .then(|| lowered(needs, found.hard, plan.connections));
    Ok((plan.connections, warning))
}

/// `mcqd check`'s open-file line: what was found, what is needed, and
/// whether mcqd will raise the limit.
pub fn check(config: &Config) -> Result<Passed, Problem> {
    let needs = Needs::of(config);
    let found = limit();
    let planned = plan(&needs, found)?;
    let raised = match planned.raise_to {
        Some(to) => format!("mcqd raises the soft limit to {to} at start"),
        None => "the soft limit is the hard limit already".into(),
    };
    Ok(Passed {
        found: format!(
            "soft {}, hard {}; mcqd needs {} to run ({}) and {} for -c {}; {raised}",
            found.soft,
            found.hard,
            needs.to_run(),
            needs.breakdown(),
            needs.with_connections(),
            needs.connections
        ),
        warning: (planned.connections < needs.connections)
            .then(|| lowered(&needs, found.hard, planned.connections)),
    })
}

impl Needs {
    /// What mcqd started with `config` will need, counted now, before it
    /// opens anything: at the start of the server, or by `mcqd check`.
    pub fn of(config: &Config) -> Needs {
        let executors = config.executors() as u64;
        let (shards, segments) = on_disk(&config.data_dir);
        let held = open_now()
            + 1 // LOCK
            + config.listen.len() as u64 // the claims on the ports
            + executors * config.listen.len() as u64 // listening sockets
            + u64::from(config.metrics.is_some())
            + u64::from(config.daemon);
        Needs {
            held,
            executors,
            shards: u64::from(shards.unwrap_or_else(|| config.shards.unwrap_or(executors as u32))),
            segments,
            connections: config.max_connections as u64,
        }
    }
}

/// The data directory's shard count (from its manifest) and the segment
/// files in its shards' directories; `(None, 0)` for a new one.
fn on_disk(data_dir: &Path) -> (Option<u32>, u64) {
    let shards = crate::manifest::read_manifest(data_dir)
        .ok()
        .flatten()
        .map(|(_, shards)| shards);
    let Some(n) = shards else {
        return (None, 0);
    };
    let segments = (0..n)
        .filter_map(|s| std::fs::read_dir(crate::manifest::shard_dir(data_dir, s)).ok())
        .flat_map(|entries| entries.filter_map(Result::ok))
        .filter(|e| {
            e.file_name()
                .to_str()
                .and_then(crate::log::segment::parse_name)
                .is_some_and(|(_, ext)| ext == "log")
        })
        .count();
    (shards, segments as u64)
}

/// The descriptors this process has open now.
fn open_now() -> u64 {
    match std::fs::read_dir("/proc/self/fd") {
        // The listing's own descriptor is among them.
        Ok(fds) => (fds.count() as u64).saturating_sub(1),
        // No /proc (a bare chroot): ask each descriptor up to the limit.
        Err(_) => (0..limit().soft.min(1 << 16) as libc::c_int)
            // SAFETY: F_GETFD only reads the descriptor's flags.
            .filter(|&fd| unsafe { libc::fcntl(fd, libc::F_GETFD) } >= 0)
            .count() as u64,
    }
}

#[allow(clippy::unnecessary_cast)] // rlim_t is u32 on some targets
pub(super) fn limit() -> Limit {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit fills a local struct.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Limit { soft: 0, hard: 0 };
    }
    Limit {
        soft: limit.rlim_cur as u64,
        hard: limit.rlim_max as u64,
    }
}

/// Sets RLIMIT_NOFILE; whether the kernel took it.
fn set(to: Limit) -> bool {
    let limit = libc::rlimit {
        rlim_cur: to.soft as libc::rlim_t,
        rlim_max: to.hard as libc::rlim_t,
    };
    // SAFETY: setrlimit reads a local struct.
    unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) == 0 }
}

/// `fs.nr_open`, the most any process may be allowed.
fn nr_open() -> u64 {
    std::fs::read_to_string("/proc/sys/fs/nr_open")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(1 << 20)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn needs(held: u64, executors: u64, shards: u64, segments: u64, connections: u64) -> Needs {
        Needs {
            held,
            executors,
            shards,
            segments,
            connections,
        }
    }

    #[test]
    fn the_formula_adds_what_was_measured_and_the_reserve() {
        // The defaults on 2 cores, measured at 21 descriptors with 5
        // inherited: 9 held, 8 rings and eventfds, 4 segment files and
        // spares (glommio's process-wide eventfd not made yet).
        let defaults = needs(9, 2, 2, 0, 1024);
        assert_eq!(defaults.own() - defaults.reserve(), 21 + 1);
        assert_eq!(defaults.reserve(), 32 + 8);
        assert_eq!(defaults.to_run(), defaults.own() + 1);
        assert_eq!(defaults.with_connections(), defaults.own() + 1024);
        // After a restart on 400 segments: 422 measured, that eventfd made.
        let backlog = needs(9, 2, 2, 400, 1024);
        assert_eq!(backlog.own() - backlog.reserve(), 422);
        // -t 4 --shards 8 --metrics: 45 measured.
        let wide = needs(12, 4, 8, 0, 1024);
        assert_eq!(wide.own() - wide.reserve(), 45);
        assert_eq!(wide.reserve(), 32 + 32);
        assert_eq!(defaults.suggested(), 65536);
        assert_eq!(needs(9, 2, 2, 0, 100_000).suggested(), 100_062);
    }

    #[test]
    fn the_soft_limit_goes_to_the_hard_one_and_connections_to_what_fits() {
        let n = needs(9, 2, 2, 0, 1024);
        let limit = |soft, hard| Limit { soft, hard };
        // systemd's default: raised, every connection fits.
        assert_eq!(
            plan(&n, limit(1024, 524288)).unwrap(),
            Plan {
                raise_to: Some(524288),
                connections: 1024
            }
        );
        // Already at the hard limit: nothing to raise.
        assert_eq!(
            plan(&n, limit(65536, 65536)).unwrap(),
            Plan {
                raise_to: None,
                connections: 1024
            }
        );
        // 1024 for everything: what is left beside mcqd's own.
        assert_eq!(
            plan(&n, limit(1024, 1024)).unwrap().connections,
            1024 - n.own()
        );
        // Exactly enough for one connection.
        assert_eq!(
            plan(&n, limit(10, n.to_run())).unwrap(),
            Plan {
                raise_to: Some(n.to_run()),
                connections: 1
            }
        );
        // The segments on disk count: a backlog of 1,000 needs 1,000 more.
        let backlog = needs(9, 2, 2, 1000, 1024);
        assert_eq!(
            plan(&backlog, limit(1024, 2048)).unwrap().connections,
            2048 - n.own() - 1000
        );
        assert!(plan(&backlog, limit(1024, 1024)).is_err());
    }

    #[test]
    fn below_what_mcqd_needs_to_run_is_status_71_with_the_numbers_and_the_fix() {
        let n = needs(9, 1, 1, 3, 1024);
        let problem = plan(
            &n,
            Limit {
                soft: 12,
                hard: n.own(),
            },
        )
        .unwrap_err();
        assert_eq!(problem.status(), 71);
        let line = problem.to_string();
        for word in [
            &format!("the hard open-file limit (RLIMIT_NOFILE) is {}, below the {} descriptors mcqd needs to serve even one connection", n.own(), n.to_run()),
            "(9 open before the executors start, 5 for 1 executor's io_uring rings and eventfds, \
             5 for the log's files in 1 shard (3 segments on disk, a new segment and a spare \
             each), 36 in reserve)",
            &format!("{} for -c 1024", n.with_connections()),
            "`ulimit -n 65536`",
            "`LimitNOFILE=65536`",
            "`--ulimit nofile=65536:65536`",
        ] {
            assert!(line.contains(word), "want {word:?} in {line:?}");
        }
        assert!(!line.contains('\n'));
        let io = std::io::Error::other(problem);
        assert_eq!(super::super::exit_status(&io), 71);
    }

    #[test]
    fn the_warning_names_the_lowered_limit() {
        let n = needs(9, 2, 2, 0, 1024);
        let w = lowered(&n, 200, 200 - n.own());
        assert!(w.starts_with("the hard open-file limit (RLIMIT_NOFILE) is 200, enough for the"));
        assert!(w.contains(&format!("serving at most {} connections", 200 - n.own())));
        assert!(w.contains("not for -c 1024 connections"));
        assert!(w.contains("SERVER_ERROR too many connections"));
        assert!(w.contains("`ulimit -n 65536`"));
    }

    #[test]
    fn this_process_counts_its_own_descriptors() {
        // Other tests open files meanwhile: only a floor is certain.
        assert!(open_now() >= 3);
    }
}
