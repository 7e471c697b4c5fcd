//! `mcqd check`: the start-up checks for an operator or a container's
//! pre-start step, one line each, without starting anything.

use std::ffi::OsString;

use super::{data_dir, memlock, nofile, uring};

/// `mcqd check [<server flags>]`: every check, with the server's flags
/// (`-H`, `-t`, `-f`, …), one line each; the exit status of the first
/// problem, or 0.
pub fn main(args: Vec<OsString>, io_memory: usize) -> i32 {
    if args.iter().skip(1).any(|a| a == "-h" || a == "--help") {
        println!("{CHECK_HELP}");
        return 0;
    }
    let config = match crate::config::Config::try_from_args(args) {
        Ok(config) => config,
        Err(e) => {
            let _ = e.print();
            return crate::offline::EXIT_ERROR;
        }
    };
    let dir = std::path::absolute(&config.data_dir).unwrap_or(config.data_dir.clone());
    let checks = [
        ("open files", nofile::check(&config)),
        ("io_uring", uring::check()),
        (
            "locked memory",
            memlock::check(config.executors(), io_memory),
        ),
        ("data directory", data_dir::check(&dir)),
    ];
    let mut status = 0;
    for (name, outcome) in checks {
        match outcome {
            Ok(passed) => {
                println!("ok       {name}: {}", passed.found);
                if let Some(warning) = passed.warning {
                    println!("warning  {name}: {warning}");
                }
            }
            Err(problem) => {
                println!("problem  {name}: {problem}");
                if status == 0 {
                    status = problem.status();
                }
            }
        }
    }
    status
}

const CHECK_HELP: &str = "\
mcqd check [<server flags>]: the checks mcqd makes before it starts, made
with the server's flags (-H, -t, -c, -f, ...) and told one line each:
  open files      RLIMIT_NOFILE (soft and hard) against the descriptors
                  mcqd needs (rings, listeners, the log's segment files
                  found on disk, a reserve) and -c connections beside them,
                  and whether mcqd raises the soft limit at start
  io_uring        a ring can be set up, entered and probed, with every
                  operation glommio needs
  locked memory   RLIMIT_MEMLOCK lets every executor start (and register
                  its I/O buffers)
  data directory  not in memory (tmpfs, ramfs), and an O_DIRECT write of
                  a probe file there works (the file is removed)
Exit status: 0 when all pass, else the first problem's: 71 (open files,
io_uring or locked memory), 73 (data directory). Safe beside a running
server.";
