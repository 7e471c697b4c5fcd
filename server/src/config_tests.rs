//! The command line's tests: flags, config files and their errors.

use super::*;

fn parse(args: &[&str]) -> Config {
    Config::try_parse_from(std::iter::once("mcqd").chain(args.iter().copied())).unwrap()
}

#[test]
fn defaults() {
    let c = parse(&[]);
    assert_eq!(c.port, 22201);
    assert_eq!(c.listen.to_string(), "127.0.0.1");
    assert_eq!(c.max_connections, 1024);
    assert_eq!(c.stats_queues, 1000);
    assert_eq!(c.max_message_size(), 1 << 20);
    assert_eq!(c.cache_bytes, 64 << 20);
    assert_eq!(c.sync_mode(), SyncMode::Always);
    assert_eq!(c.segment_size, 64 << 20);
    assert_eq!(c.max_disk, None);
    assert_eq!(c.metrics, None);
    assert!(!c.daemon && c.pid_file.is_none() && c.user.is_none());
    if c.executors() <= cores() {
        assert!(c.warnings().is_empty(), "{:?}", c.warnings());
    }
    assert_eq!(c.check(), Ok(()));
    let c = parse(&["--metrics", "127.0.0.1:9150"]);
    assert_eq!(c.metrics, Some("127.0.0.1:9150".parse().unwrap()));
    assert!(Config::try_parse_from(["mcqd", "--metrics", "9150"]).is_err());
}

#[test]
fn config_file_then_command_line() {
    let dir = std::env::temp_dir().join(format!("mcq-config-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("mcqd.conf");
    std::fs::write(
        &file,
        "# production\nport = 9999\nsync = interval=10   # group commit every 10 ms\n\nno-sync\ndata-dir = /var/lib/mcq\n",
    )
    .unwrap();
    let args = |extra: &[&str]| -> Vec<std::ffi::OsString> {
        ["mcqd", "--config", file.to_str().unwrap()]
            .iter()
            .chain(extra)
            .map(Into::into)
            .collect()
    };
    let c = Config::try_from_args(args(&[])).unwrap();
    assert_eq!(c.port, 9999);
    assert_eq!(c.data_dir, PathBuf::from("/var/lib/mcq"));
    assert!(c.no_sync);
    let c = Config::try_from_args(args(&["-p", "1234"])).unwrap();
    assert_eq!(c.port, 1234, "the command line wins");
    std::fs::write(&file, "port = 7\n[queue q]\nmax_items = 5\n").unwrap();
    let c = Config::try_from_args(args(&[])).unwrap();
    assert_eq!(c.port, 7, "queue sections are not flags");
    let error = |text: &str| {
        std::fs::write(&file, text).unwrap();
        Config::try_from_args(args(&[])).unwrap_err().to_string()
    };
    let e = error("port 9999\n");
    assert!(
        e.contains("mcqd.conf: line 1: expected `name = value`"),
        "{e}"
    );
    let e = error("# settings\nport = 1\nbogus = 1\n");
    assert!(
        e.contains("mcqd.conf: line 3: unknown setting `bogus`"),
        "{e}"
    );
    let e = error("port = 1\n\nmax-message-size = 1X\n");
    assert!(
        e.contains("mcqd.conf: line 3: invalid value '1X' for '--max-message-size")
            && e.contains("expected a size like"),
        "{e}"
    );
    let e = error("config = other.conf\n");
    assert!(e.contains("line 1: unknown setting `config`"), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn sync_modes() {
    assert_eq!(
        parse(&["--sync", "interval=10"]).sync_mode(),
        SyncMode::Interval(Duration::from_millis(10))
    );
    assert_eq!(parse(&["-N"]).sync_mode(), SyncMode::NONE);
    assert_eq!(parse(&["--sync", "none"]).sync_mode(), SyncMode::NONE);
    assert_eq!(
        parse(&["--sync", "none,sync=50,flush=2"]).sync_mode(),
        SyncMode::None {
            flush: Duration::from_millis(2),
            sync: Duration::from_millis(50)
        }
    );
    for bad in [
        "sometimes",
        "none,flush=0",
        "none,flush",
        "none,often=1",
        "nonesuch",
    ] {
        assert!(
            Config::try_parse_from(["mcqd", "--sync", bad]).is_err(),
            "{bad}"
        );
    }
    assert!(Config::try_parse_from(["mcqd", "--sync", "interval=0"]).is_err());
}

#[test]
fn memcacheq_flags_are_accepted_and_warned_about() {
    let c = parse(&[
        "-p",
        "1",
        "-H",
        "/x",
        "-A",
        "8192",
        "-L",
        "1024",
        "-d",
        "-r",
        "-u",
        "nobody",
        "-R",
        "-P",
        "/run/x.pid",
        "-U",
        "0",
        "-t",
        "1",
    ]);
    assert_eq!(c.port, 1);
    assert_eq!(c.data_dir, PathBuf::from("/x"));
    assert!(c.daemon && c.raise_core_limit);
    assert_eq!(c.user.as_deref(), Some("nobody"));
    assert_eq!(c.pid_file, Some(PathBuf::from("/run/x.pid")));
    let warnings = c.warnings();
    assert_eq!(warnings.len(), 3, "{warnings:?}");
    assert!(warnings.iter().any(|w| w.starts_with("-A ")));
    assert!(warnings.iter().any(|w| w.starts_with("-R ")));
    let warnings = parse(&["-U", "11211", "-t", "1"]).warnings();
    assert!(
        warnings[0].starts_with("-U 11211: mcqd never serves UDP"),
        "{warnings:?}"
    );
    let threads = (cores() + 1).to_string();
    let warnings = parse(&["-t", &threads]).warnings();
    assert!(
        warnings[0].starts_with(&format!("-t {threads} is more than the")),
        "{warnings:?}"
    );
}

#[test]
fn sizes_take_units() {
    let c = parse(&[
        "-B",
        "64K",
        "--max-disk",
        "10G",
        "--segment-size",
        "1M",
        "-m",
        "512K",
    ]);
    assert_eq!(c.max_message_size(), 64 << 10);
    assert_eq!(c.max_disk, Some(10 << 30));
    assert_eq!(c.segment_size, 1 << 20);
    assert_eq!(c.cache_bytes, 512 << 10);
    assert_eq!(
        parse(&["-m", "128"]).cache_bytes,
        128 << 20,
        "plain -m is MiB"
    );
    assert_eq!(parse(&["-B", "1024"]).max_message_size(), 1024);
    for bad in [
        &["-B", "1X"][..],
        &["--max-disk", "lots"],
        &["--segment-size", "4K"],
        &["--segment-size", "65537"],
        &["-m", "1T"],
    ] {
        let e = Config::try_parse_from(std::iter::once(&"mcqd").chain(bad))
            .expect_err(&format!("{bad:?}"))
            .to_string();
        assert!(e.contains(bad[1]), "{bad:?}: {e}");
    }
}

#[test]
fn the_read_ahead_budget_is_shared_out_among_the_shards() {
    use crate::log::readahead::DEFAULT_BUDGET;
    let c = parse(&[]);
    assert_eq!(
        (c.readahead_bytes(1), c.readahead_bytes(4)),
        (DEFAULT_BUDGET, DEFAULT_BUDGET)
    );
    let c = parse(&["--readahead-size", "256M"]);
    assert_eq!(c.readahead_bytes(1), 256 << 20);
    assert_eq!(c.readahead_bytes(4), 64 << 20);
    let e = Config::try_parse_from(["mcqd", "--readahead-size", "lots"]).unwrap_err();
    assert!(e.to_string().contains("lots"), "{e}");
}

#[test]
fn a_message_larger_than_a_segment_holds_is_refused() {
    assert_eq!(parse(&["-B", "1M"]).check(), Ok(()));
    assert_eq!(parse(&["-B", "55M"]).check(), Ok(()));
    let e = parse(&["-B", "100000000"]).check().unwrap_err();
    assert!(
        e.starts_with(
            "-B 100000000 is larger than a segment of 67108864 bytes (--segment-size) can hold"
        ),
        "{e}"
    );
    assert!(parse(&["-B", "1M", "--segment-size", "1M"])
        .check()
        .is_err());
    assert_eq!(
        parse(&["-B", "64K", "--segment-size", "1M"]).check(),
        Ok(())
    );
    let c = parse(&["--segment-size", "64K"]);
    assert_eq!(c.check(), Ok(()), "the default -B follows a small segment");
    assert_eq!(c.max_message_size() as u64, c.largest_message());
    assert!(c.max_message_size() < 64 << 10);
}
