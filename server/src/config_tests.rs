//! The command line's tests: flags, config files and their errors.

use super::*;

fn parse(args: &[&str]) -> Config {
    Config::try_parse_from(std::iter::once("mcqd").chain(args.iter().copied())).unwrap()
}

#[test]
fn defaults() {
    let c = parse(&[]);
    assert_eq!(c.port, 22201);
    assert_eq!(
        c.listeners(),
        [Listener {
            addr: "127.0.0.1:22201".parse().unwrap(),
            tls: false
        }]
    );
    assert!(!c.enable_ssl && c.tls() == Ok(None));
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
        &["--segment-size", "3G"],
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

/// The listeners of `args`, as `addr` or `addr (TLS)`.
fn listening(args: &[&str]) -> Vec<String> {
    parse(args)
        .listeners()
        .iter()
        .map(|l| match l.tls {
            true => format!("{} (TLS)", l.addr),
            false => l.addr.to_string(),
        })
        .collect()
}

const CERT: &[&str] = &["-o", "ssl_chain_cert=/c.pem,ssl_key=/k.pem"];

#[test]
fn listen_is_a_list_with_ports_and_notls() {
    assert_eq!(listening(&["-l", "0.0.0.0"]), ["0.0.0.0:22201"]);
    assert_eq!(
        listening(&[
            "-p",
            "1",
            "-l",
            "127.0.0.1,10.0.0.5:2",
            "-l",
            "::1",
            "-l",
            "[::]:3"
        ]),
        ["127.0.0.1:1", "10.0.0.5:2", "[::1]:1", "[::]:3"]
    );
    let tls = [&["-Z", "-l", "0.0.0.0,notls:127.0.0.1:9"][..], CERT].concat();
    assert_eq!(listening(&tls), ["0.0.0.0:22201 (TLS)", "127.0.0.1:9"]);
    assert_eq!(parse(&tls).check(), Ok(()));
    let e = parse(&["-l", "notls:127.0.0.1"]).check().unwrap_err();
    assert!(e.contains("`notls:` is valid only with -Z"), "{e}");
    let e = parse(&["-l", "127.0.0.1,127.0.0.1:22201"])
        .check()
        .unwrap_err();
    assert_eq!(e, "-l: 127.0.0.1:22201 is given twice");
    for bad in [
        "localhost",
        "1.2.3.4:x",
        "[::1",
        "[::1]x",
        "1.2.3.4:99999",
        "mtls:1.2.3.4",
    ] {
        let e = Config::try_parse_from(["mcqd", "-l", bad])
            .unwrap_err()
            .to_string();
        assert!(e.contains(bad), "{bad}: {e}");
    }
}

#[test]
fn tls_options_as_memcached_spells_them() {
    let c = parse(&[
        "-Z",
        "-o",
        "ssl_chain_cert=/c.pem",
        "-o",
        "ssl_key=/k.pem,ssl_ca_cert=/ca.pem,ssl_verify_mode=2,ssl_min_version=3",
        "-o",
        "ssl_session_cache,ssl_keyformat=1",
    ]);
    assert_eq!(
        c.tls(),
        Ok(Some(TlsOptions {
            chain_cert: "/c.pem".into(),
            key: Some("/k.pem".into()),
            ca_cert: Some("/ca.pem".into()),
            verify_mode: VerifyMode::Require,
            min_version: TlsVersion::Tls13,
            session_cache: true,
        }))
    );
    assert!(c.warnings().is_empty() || c.executors() > cores());
    // The defaults, and a later value wins.
    let o = parse(
        &[
            &["-Z"][..],
            CERT,
            &["-o", "ssl_verify_mode=3,ssl_verify_mode=0"],
        ]
        .concat(),
    )
    .tls()
    .unwrap()
    .unwrap();
    assert_eq!(
        (o.verify_mode, o.min_version, o.session_cache, o.ca_cert),
        (VerifyMode::None, TlsVersion::Tls12, false, None)
    );
    // memcached's other options are warned about, as MemcacheQ's are.
    let c = parse(
        &[
            &[
                "-Z",
                "-t",
                "1",
                "-o",
                "modern,hashpower=20,ssl_ciphers=HIGH",
            ][..],
            CERT,
        ]
        .concat(),
    );
    assert_eq!(c.check(), Ok(()));
    let warnings = c.warnings();
    assert_eq!(warnings.len(), 3, "{warnings:?}");
    assert!(warnings[0].starts_with("-o modern: a memcached option with no meaning in mcqd"));
    assert!(warnings[2].starts_with("-o ssl_ciphers=HIGH: ignored"));
}

#[test]
fn bad_tls_options_are_refused_with_the_option_named() {
    let refused = |args: &[&str]| parse(args).check().unwrap_err();
    let with_cert = |extra: &[&str]| refused(&[&["-Z"][..], CERT, extra].concat());
    for (args, why) in [
        (&["-Z"][..], "-Z (--enable-ssl) needs a certificate"),
        (
            &["-o", "ssl_chain_cert=/c.pem"],
            "-o ssl_chain_cert without -Z",
        ),
        (
            &["-Z", "-o", "ssl_chain_cert"],
            "-o ssl_chain_cert: missing its value",
        ),
        (
            &["-Z", "-o", "ssl_chain_cert="],
            "-o ssl_chain_cert: missing its value",
        ),
    ] {
        let e = refused(args);
        assert!(e.starts_with(why), "{args:?}: {e}");
    }
    for (extra, why) in [
        ("ssl_verify_mode=4", "-o ssl_verify_mode=4: invalid"),
        (
            "ssl_verify_mode=x",
            "-o ssl_verify_mode=x: could not parse `x`",
        ),
        (
            "ssl_verify_mode=2",
            "-o ssl_verify_mode=2: checking client certificates needs",
        ),
        (
            "ssl_min_version=0",
            "-o ssl_min_version=0: TLS 1.0 is not supported",
        ),
        (
            "ssl_min_version=1",
            "-o ssl_min_version=1: TLS 1.1 is not supported",
        ),
        ("ssl_min_version=4", "-o ssl_min_version=4: invalid"),
        (
            "ssl_keyformat=2",
            "-o ssl_keyformat=2: mcqd reads PEM keys only",
        ),
        (
            "ssl_chain_certs=/c.pem",
            "-o ssl_chain_certs: unknown TLS option",
        ),
    ] {
        let e = with_cert(&["-o", extra]);
        assert!(e.starts_with(why), "{extra}: {e}");
    }
    assert!(Config::try_parse_from(["mcqd", "--ssl-handshake-timeout", "0s"]).is_err());
    assert_eq!(
        parse(&["--ssl-handshake-timeout", "500ms"]).ssl_handshake_timeout,
        Duration::from_millis(500)
    );
}

#[test]
fn tls_and_listen_in_the_config_file() {
    let dir = std::env::temp_dir().join(format!("mcq-config-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("mcqd.conf");
    std::fs::write(
        &file,
        "enable-ssl\nlisten = 0.0.0.0, notls:127.0.0.1:9\nextended = ssl_chain_cert=/c.pem,ssl_key=/k.pem\nextended = ssl_verify_mode=1\nextended = ssl_ca_cert=/ca.pem\nssl-handshake-timeout = 2s\n",
    )
    .unwrap();
    let args = |extra: &[&str]| -> Config {
        let args: Vec<std::ffi::OsString> = ["mcqd", "--config", file.to_str().unwrap()]
            .iter()
            .chain(extra)
            .map(Into::into)
            .collect();
        Config::try_from_args(args).unwrap()
    };
    let c = args(&[]);
    assert_eq!(c.check(), Ok(()));
    assert_eq!(
        c.listeners()
            .iter()
            .map(|l| (l.addr.to_string(), l.tls))
            .collect::<Vec<_>>(),
        [
            ("0.0.0.0:22201".into(), true),
            ("127.0.0.1:9".into(), false)
        ]
    );
    let o = c.tls().unwrap().unwrap();
    assert_eq!(o.verify_mode, VerifyMode::Request);
    assert_eq!(c.ssl_handshake_timeout, Duration::from_secs(2));
    // -l on the command line replaces the file's; -o adds to the file's.
    let c = args(&["-l", "127.0.0.2", "-o", "ssl_verify_mode=2"]);
    assert_eq!(c.listeners().len(), 1);
    assert_eq!(c.listeners()[0].addr.to_string(), "127.0.0.2:22201");
    assert_eq!(c.tls().unwrap().unwrap().verify_mode, VerifyMode::Require);
    std::fs::remove_dir_all(&dir).unwrap();
}
