//! The container image and the seccomp profile (issue 22).
//!
//! Building the image needs a container engine, which CI and the
//! development machines do not run (`docker` there is only the client). So
//! the Dockerfile is checked mechanically: what it copies is what the
//! release build makes, it runs mcqd as a user with its data in a volume,
//! its command line is one mcqd takes and whose checks pass, and its
//! health check is `mcqd ping` on the port that command line serves. Where
//! `docker info` does answer, the image is built and run too: set, `docker
//! stop`, start, get, with nothing lost.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use mcq_tests::{
    loadgen_bin, mcqd_bin, output_within, test_dir, text, third_party, workspace, Client, PATIENCE,
};
use serde_json::{json, Value};

/// The Dockerfile's instructions: (keyword, arguments), continuation lines
/// joined, comments left out.
fn instructions() -> Vec<(String, String)> {
    let text = std::fs::read_to_string(workspace().join("Dockerfile")).unwrap();
    let mut out = Vec::new();
    let mut pending = String::new();
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('#') || (line.is_empty() && pending.is_empty()) {
            continue;
        }
        match line.strip_suffix('\\') {
            Some(part) => pending.push_str(part),
            None => {
                pending.push_str(line);
                let (keyword, rest) = pending.trim().split_once(' ').unwrap_or((&pending, ""));
                out.push((keyword.to_uppercase(), rest.trim().to_string()));
                pending.clear();
            }
        }
    }
    out
}

/// The arguments of every instruction `keyword`, in order.
fn all(keyword: &str) -> Vec<String> {
    instructions()
        .into_iter()
        .filter(|(k, _)| k == keyword)
        .map(|(_, rest)| rest)
        .collect()
}

/// The arguments of the one instruction `keyword` of the final stage.
fn last(keyword: &str) -> String {
    all(keyword)
        .pop()
        .unwrap_or_else(|| panic!("no {keyword} in the Dockerfile"))
}

/// An instruction's exec form (`["mcqd", "ping"]`) as its words.
fn exec_form(rest: &str) -> Vec<String> {
    serde_json::from_str(rest).unwrap_or_else(|e| panic!("not an exec form: {rest}: {e}"))
}

/// Guards against: an image whose build makes binaries other than the
/// ones it copies, or whose context sends gigabytes of target/.
#[test]
fn the_image_copies_what_the_release_build_makes() {
    let from = all("FROM");
    assert_eq!(from.len(), 2, "a build stage and a final stage: {from:?}");
    assert_eq!(from[0], "rust:1-bookworm AS build");
    assert_eq!(from[1], "debian:bookworm-slim");
    assert!(
        all("COPY").contains(&". .".to_string()) && all("WORKDIR")[0] == "/src",
        "the build stage works on the whole repository in /src"
    );
    assert!(
        all("RUN").contains(&"cargo build --release --locked -p mcqd -p mcq-loadgen".to_string()),
        "{:?}",
        all("RUN")
    );
    assert!(workspace().join("Cargo.lock").exists(), "--locked needs it");

    let copy = all("COPY")
        .into_iter()
        .find(|c| c.starts_with("--from=build "))
        .expect("a COPY --from=build");
    let words: Vec<&str> = copy.split_whitespace().skip(1).collect();
    let (destination, sources) = words.split_last().unwrap();
    assert_eq!(*destination, "/usr/local/bin/");
    let built: Vec<PathBuf> = vec![mcqd_bin(), loadgen_bin()];
    let names: Vec<&str> = sources
        .iter()
        .map(|s| {
            s.strip_prefix("/src/target/release/")
                .unwrap_or_else(|| panic!("{s}: not from the release build"))
        })
        .collect();
    assert_eq!(names, ["mcqd", "mcq-loadgen"]);
    for (name, bin) in names.iter().zip(&built) {
        // The build here made them where the image's build makes them.
        let here = bin.parent().unwrap().join(name);
        assert!(here.is_file(), "{} is not built", here.display());
        assert!(
            here.parent().unwrap().ends_with("target/release"),
            "{}",
            here.display()
        );
    }

    let ignore = std::fs::read_to_string(workspace().join(".dockerignore")).unwrap();
    let ignored: Vec<&str> = ignore
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    assert!(ignored.contains(&"target/"), "{ignored:?}");
    for needed in [
        "Cargo.toml",
        "Cargo.lock",
        "server",
        "loadgen",
        "tests",
        "vendor",
    ] {
        assert!(
            !ignored.iter().any(|p| p.trim_end_matches('/') == needed),
            "{needed} is needed by the build: {ignored:?}"
        );
    }
}

/// Guards against: an image that runs as root, keeps the log in the
/// container's own layer, listens only inside itself, or checks its health
/// on another port than it serves.
#[test]
fn the_image_serves_on_all_addresses_as_a_user_with_a_volume() {
    let user = last("USER");
    assert!(user != "root" && user != "0", "USER {user}");
    let setup = all("RUN").join(" && ");
    assert!(
        setup.contains("useradd --system --uid 10001 --user-group")
            && setup.contains(&format!(" {user} ")),
        "{setup}"
    );
    assert!(
        setup.contains(&format!("chown {user}:{user} /var/lib/mcq")),
        "{setup}"
    );
    assert_eq!(last("VOLUME"), "/var/lib/mcq");
    assert_eq!(last("EXPOSE"), "22201");
    assert_eq!(last("STOPSIGNAL"), "SIGTERM");

    assert_eq!(exec_form(&last("ENTRYPOINT")), ["mcqd"]);
    let command = exec_form(&last("CMD"));
    assert_eq!(
        command,
        ["--listen", "0.0.0.0", "--data-dir", "/var/lib/mcq"],
        "no --port: the health check asks the default port"
    );
    let health = last("HEALTHCHECK");
    let (options, probe) = health.split_once(" CMD ").expect("HEALTHCHECK … CMD …");
    assert_eq!(exec_form(probe), ["mcqd", "ping"]);
    assert!(options.contains("--start-period="), "{options}");

    // The command line is one mcqd takes, and its checks pass with the
    // volume on a real disk.
    let volume = test_dir("container-cmd");
    let args: Vec<String> = command
        .iter()
        .map(|a| a.replace("/var/lib/mcq", &volume.display().to_string()))
        .collect();
    let out = output_within(Command::new(mcqd_bin()).arg("check").args(&args));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    std::fs::remove_dir_all(&volume).unwrap();
}

/// `deploy/seccomp/mcqd-profile` on `default` (as JSON text).
fn make_profile(default: &str) -> Option<Output> {
    let mut command = third_party(
        "python3",
        &[workspace()
            .join("deploy/seccomp/mcqd-profile")
            .to_str()
            .unwrap()],
        &["-c", "import json"],
        "Python 3",
    )?;
    let mut child = command
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(default.as_bytes())
        .unwrap();
    Some(mcq_tests::finish_within(child, PATIENCE))
}

const IO_URING: [&str; 3] = ["io_uring_setup", "io_uring_enter", "io_uring_register"];

/// Guards against: a seccomp profile for mcqd that allows more than the
/// runtime's default plus io_uring, or that leaves a rule of the default
/// refusing io_uring in front of the one allowing it.
#[test]
fn the_seccomp_profile_is_the_default_plus_exactly_io_uring() {
    let default = json!({
        "defaultAction": "SCMP_ACT_ERRNO",
        "defaultErrnoRet": 1,
        "archMap": [{"architecture": "SCMP_ARCH_X86_64", "subArchitectures": ["SCMP_ARCH_X86"]}],
        "syscalls": [
            {"names": ["accept", "io_uring_setup", "read"], "action": "SCMP_ACT_ALLOW"},
            {"names": ["socket"], "action": "SCMP_ACT_ALLOW",
             "args": [{"index": 0, "value": 40, "op": "SCMP_CMP_NE"}]},
            {"names": ["io_uring_enter", "io_uring_register"], "action": "SCMP_ACT_ERRNO",
             "errnoRet": 1},
            {"names": ["bpf"], "action": "SCMP_ACT_ALLOW", "includes": {"caps": ["CAP_BPF"]}}
        ]
    });
    let Some(out) = make_profile(&default.to_string()) else {
        return;
    };
    assert!(out.status.success(), "{}", text(&out));
    let made: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(made, expected_profile(&default));

    let Some(refused) = make_profile("{\"not\": \"a profile\"}") else {
        return;
    };
    assert!(!refused.status.success());
    assert!(
        text(&refused).contains("not a seccomp profile"),
        "{}",
        text(&refused)
    );

    // A profile made here for use is checked the same way.
    let made_here = workspace().join("deploy/seccomp/mcqd.json");
    if let Ok(text) = std::fs::read_to_string(&made_here) {
        let profile: Value = serde_json::from_str(&text).unwrap();
        let rules = profile["syscalls"].as_array().unwrap();
        let naming: Vec<&Value> = rules
            .iter()
            .filter(|r| {
                r["names"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|n| IO_URING.contains(&n.as_str().unwrap()))
            })
            .collect();
        assert_eq!(
            naming,
            [&json!({"names": IO_URING, "action": "SCMP_ACT_ALLOW"})],
            "{}",
            made_here.display()
        );
    }
}

/// `default` with the io_uring names taken out of its rules (a rule left
/// with none goes) and one rule allowing the three appended.
fn expected_profile(default: &Value) -> Value {
    let mut profile = default.clone();
    let mut rules: Vec<Value> = Vec::new();
    for rule in default["syscalls"].as_array().unwrap() {
        let names: Vec<Value> = rule["names"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|n| !IO_URING.contains(&n.as_str().unwrap()))
            .cloned()
            .collect();
        if !names.is_empty() {
            let mut rule = rule.clone();
            rule["names"] = Value::Array(names);
            rules.push(rule);
        }
    }
    rules.push(json!({"names": IO_URING, "action": "SCMP_ACT_ALLOW"}));
    profile["syscalls"] = Value::Array(rules);
    profile
}

fn docker(args: &[&str]) -> Output {
    output_within(Command::new("docker").args(args))
}

/// Runs `args` with docker, failing the test unless it succeeds; its
/// stdout, trimmed.
fn docker_ok(args: &[&str]) -> String {
    let out = docker(args);
    assert!(out.status.success(), "docker {args:?}: {}", text(&out));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Removes the test's container, volume and image however it ends.
struct Cleanup(String);

impl Drop for Cleanup {
    fn drop(&mut self) {
        let name = &self.0;
        let _ = docker(&["rm", "-f", name]);
        let _ = docker(&["volume", "rm", "-f", name]);
        let _ = docker(&["image", "rm", "-f", name]);
    }
}

/// The image as a user runs it: built from the repository, started with
/// a volume, a message set, `docker stop` (SIGTERM), started again, and
/// the message is there. Only where a container engine answers.
#[test]
fn the_image_keeps_messages_across_docker_stop() {
    let engine = Command::new("docker")
        .arg("info")
        .output()
        .is_ok_and(|o| o.status.success());
    if !engine {
        // Not a skip: no CI machine runs an engine, and the parts of the
        // image that can be checked without one are checked above.
        let line = "\n!!!!! NOT RUN: the_image_keeps_messages_across_docker_stop: \
                    no container engine (`docker info` fails); the image was not built !!!!!\n";
        let _ = std::io::stderr().write_all(line.as_bytes());
        return;
    }
    let name = format!("mcq-test-{}", std::process::id());
    let _cleanup = Cleanup(name.clone());
    let root = workspace().to_str().unwrap();
    let built = output_within(
        Command::new("docker")
            .args(["build", "-t", &name, root])
            .env("DOCKER_BUILDKIT", "1"),
    );
    assert!(built.status.success(), "{}", text(&built));
    let profile = workspace().join("deploy/seccomp/mcqd.json");
    let seccomp = if profile.exists() {
        format!("seccomp={}", profile.display())
    } else {
        "seccomp=unconfined".to_string()
    };
    let volume = format!("{name}:/var/lib/mcq");
    let run = |extra: &[&str]| {
        let mut args = vec!["run", "-d", "--name", &name, "-p", "127.0.0.1::22201"];
        args.extend(["-v", &volume, "--security-opt", &seccomp]);
        args.extend(["--ulimit", "memlock=-1:-1", "--stop-timeout", "30"]);
        args.extend(extra);
        args.push(&name);
        docker_ok(&args)
    };
    run(&[]);
    let port = serving_port(&name);
    let mut client = Client::connect(port);
    client.set("q", b"kept across docker stop");
    drop(client);
    docker_ok(&["stop", &name]);
    let state = docker_ok(&["inspect", "-f", "{{.State.ExitCode}}", &name]);
    assert_eq!(state, "0", "mcqd stops cleanly on SIGTERM");
    docker_ok(&["start", &name]);
    let port = serving_port(&name);
    let mut client = Client::connect(port);
    assert_eq!(
        client.get("q").as_deref(),
        Some(&b"kept across docker stop"[..])
    );
}

/// Waits until the container's mcqd answers `mcqd ping`; its host port.
fn serving_port(name: &str) -> u16 {
    let deadline = Instant::now() + 2 * PATIENCE;
    while !docker(&["exec", name, "mcqd", "ping"]).status.success() {
        assert!(
            Instant::now() < deadline,
            "not serving: {}",
            text(&docker(&["logs", name]))
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    let mapped = docker_ok(&["port", name, "22201/tcp"]);
    mapped
        .lines()
        .next()
        .and_then(|l| l.rsplit(':').next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("docker port: {mapped:?}"))
}
