//! The end-to-end test harness: starts the real `mcqd` binary on a free
//! port with its data on a real disk, and talks to it over TCP.
//!
//! # Why a separate crate
//! These tests judge the program a user runs, not the library: they see only
//! what a memcache client or an operator sees (bytes on a socket, files in the
//! data directory, exit codes, log lines). The binary is found through
//! `MCQD_BIN`, or else in the workspace's target directory; `scripts/test`
//! builds it first. Data directories live under `target/e2e/`, never on
//! tmpfs, where O_DIRECT quietly turns into buffered I/O.

pub mod certs;

use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// Generous bound on how long any one thing may take before a test gives
/// up: a start-up, an exit, a reply, a helper program's run. A hang must
/// fail with a message, not wedge CI; the bound is far above what a busy
/// 2-core machine needs and is never a performance assertion.
pub const PATIENCE: Duration = Duration::from_secs(60);

/// Polls `child` until it exits or `patience` has passed.
pub fn exit_within(child: &mut Child, patience: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + patience;
    loop {
        if let Some(status) = child.try_wait().expect("wait for a child") {
            return Some(status);
        }
        if Instant::now() >= deadline {
            return None;
        }
        thread::sleep(Duration::from_millis(10));
    }
}

/// Waits for a child spawned with piped stdout and stderr and collects its
/// output, as `Child::wait_with_output` does, but kills it and fails the
/// test when it runs longer than `patience`.
pub fn finish_within(mut child: Child, patience: Duration) -> Output {
    let drain = |pipe: Option<Box<dyn Read + Send>>| {
        thread::spawn(move || {
            let mut bytes = Vec::new();
            if let Some(mut pipe) = pipe {
                let _ = pipe.read_to_end(&mut bytes);
            }
            bytes
        })
    };
    let stdout = drain(child.stdout.take().map(|p| Box::new(p) as _));
    let stderr = drain(child.stderr.take().map(|p| Box::new(p) as _));
    let status = exit_within(&mut child, patience);
    if status.is_none() {
        let _ = child.kill();
        let _ = child.wait();
    }
    let output = Output {
        status: status.unwrap_or_else(|| child.wait().unwrap()),
        stdout: stdout.join().unwrap(),
        stderr: stderr.join().unwrap(),
    };
    assert!(
        status.is_some(),
        "still running after {patience:?} (killed):\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// `command.output()`, bounded by [`PATIENCE`] (see [`finish_within`]).
pub fn output_within(command: &mut Command) -> Output {
    let child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {command:?}: {e}"));
    finish_within(child, PATIENCE)
}

/// What a finished command printed: its stdout, then its stderr.
pub fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The mcqd binary under test: `MCQD_BIN`, or else the workspace's release
/// build. Release, because these tests judge the program a user runs, and
/// an unoptimised server on a busy machine turns timing into false
/// failures. A release binary older than the server's sources fails the
/// test rather than testing yesterday's code.
pub fn mcqd_bin() -> PathBuf {
    built_bin("MCQD_BIN", "mcqd", &["server/src", "server/Cargo.toml"])
}

/// The mcq-loadgen binary: `MCQ_LOADGEN_BIN`, or else the release build.
pub fn loadgen_bin() -> PathBuf {
    built_bin(
        "MCQ_LOADGEN_BIN",
        "mcq-loadgen",
        &["loadgen/src", "loadgen/Cargo.toml"],
    )
}

/// The repository's root.
pub fn workspace() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap()
}

fn built_bin(var: &str, name: &str, sources: &[&str]) -> PathBuf {
    if let Some(bin) = std::env::var_os(var) {
        return PathBuf::from(bin);
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join("target"));
    let bin = target.join("release").join(name);
    let build = "build it with `cargo build --release -p mcqd -p mcq-loadgen` \
                 (scripts/test does), or set";
    let Ok(built) = std::fs::metadata(&bin).and_then(|m| m.modified()) else {
        panic!("no {}: {build} {var}", bin.display());
    };
    for source in sources {
        if let Some((path, changed)) = newest(&workspace().join(source)) {
            assert!(
                changed <= built,
                "{} is older than {}: {build} {var}",
                bin.display(),
                path.display()
            );
        }
    }
    bin
}

/// The most recently modified file under `path`, and when.
fn newest(path: &Path) -> Option<(PathBuf, std::time::SystemTime)> {
    let meta = std::fs::metadata(path).ok()?;
    if !meta.is_dir() {
        return Some((path.to_path_buf(), meta.modified().ok()?));
    }
    std::fs::read_dir(path)
        .ok()?
        .filter_map(|e| newest(&e.ok()?.path()))
        .max_by_key(|(_, t)| *t)
}

/// Reports that the running test cannot run here because `why` (a peer or
/// a privilege is missing), in a way `scripts/test` counts: a line
/// `SKIPPED: <test>: <why>` written straight to stderr, past libtest's
/// output capture. Under CI (`CI` set) it fails the test instead, so CI can
/// never skip silently. The caller returns after it.
pub fn skip(why: &str) {
    let test = thread::current().name().unwrap_or("?").to_string();
    if std::env::var_os("CI").is_some() {
        panic!("{why}: CI must run {test} (.ci/run installs what it needs)");
    }
    let line = format!("\n!!!!! SKIPPED: {test}: {why} !!!!!\n");
    let _ = std::io::stderr().write_all(line.as_bytes());
}

/// True when `MCQ_SOAK` is set (and not `0`): tests whose strength grows
/// with repetition (kills, rounds, messages) then run their long variant.
pub fn soak() -> bool {
    std::env::var("MCQ_SOAK").is_ok_and(|v| !v.is_empty() && v != "0")
}

/// `quick` normally, `long` under `MCQ_SOAK`.
pub fn soak_or<T>(quick: T, long: T) -> T {
    if soak() {
        long
    } else {
        quick
    }
}

/// A fresh directory on a real disk for one test.
pub fn test_dir(name: &str) -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let dir = workspace().join("target").join("e2e").join(format!(
        "{name}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A port nobody listens on right now.
/// A port nobody listens on now and that this test process has not handed
/// out before: a server killed and restarted on its port leaves it free for
/// a moment, and another test of the same binary must not pick it then (two
/// mcqd on one port would share its connections through SO_REUSEPORT).
pub fn free_port() -> u16 {
    static GIVEN: Mutex<Vec<u16>> = Mutex::new(Vec::new());
    loop {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut given = GIVEN.lock().unwrap();
        if !given.contains(&port) {
            given.push(port);
            return port;
        }
    }
}

/// Starts mcqd on `port` and `data_dir` with `args`; its stderr lines are
/// echoed (prefixed `[mcqd]`) and appended to `log` by a thread that ends
/// once mcqd has exited (join it to be sure the log is complete).
fn spawn_mcqd(
    port: u16,
    data_dir: &Path,
    args: &[String],
    log: &Arc<Mutex<String>>,
) -> (Child, thread::JoinHandle<()>) {
    let mut child = Command::new(mcqd_bin())
        .arg("-p")
        .arg(port.to_string())
        .arg("-H")
        .arg(data_dir)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start mcqd");
    let stderr = child.stderr.take().unwrap();
    let log = log.clone();
    let reader = thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            eprintln!("[mcqd] {line}");
            let mut log = log.lock().unwrap();
            log.push_str(&line);
            log.push('\n');
        }
    });
    (child, reader)
}

/// Runs mcqd on `port` and `data_dir` with `args` where it must refuse to
/// start: waits for it to exit by itself and returns its status and log.
/// Fails the test when it is still running after [`PATIENCE`] (a
/// half-alive server), saying whether SIGTERM then stopped it.
pub fn run_until_exit(port: u16, data_dir: &Path, args: &[&str]) -> (ExitStatus, String) {
    let log = Arc::new(Mutex::new(String::new()));
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    let (mut child, reader) = spawn_mcqd(port, data_dir, &args, &log);
    let started = Instant::now();
    if let Some(status) = exit_within(&mut child, PATIENCE) {
        reader.join().unwrap();
        let log = log.lock().unwrap().clone();
        return (status, log);
    }
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let after_term = match exit_within(&mut child, Duration::from_secs(10)) {
        Some(status) => format!("SIGTERM then stopped it ({status})"),
        None => {
            let _ = child.kill();
            let _ = child.wait();
            "it ignored SIGTERM too (killed with SIGKILL)".to_string()
        }
    };
    panic!(
        "mcqd still running {:?} after it should have refused to start; {after_term}:\n{}",
        started.elapsed(),
        log.lock().unwrap()
    );
}

/// A running mcqd.
pub struct Server {
    pub port: u16,
    pub data_dir: PathBuf,
    pub args: Vec<String>,
    child: Option<Child>,
    /// The thread that copies the child's stderr into `log`; it ends when
    /// the child has exited.
    reader: Option<thread::JoinHandle<()>>,
    log: Arc<Mutex<String>>,
    /// The test directory [`Server::start`] made: removed when the test
    /// passes (some tests queue gigabytes), kept for a look when it fails.
    owned_dir: Option<PathBuf>,
}

impl Server {
    /// Starts mcqd with a fresh data directory and `args`.
    pub fn start(name: &str, args: &[&str]) -> Server {
        let dir = test_dir(name);
        let mut server = Server::start_in(&dir.join("data"), args);
        server.owned_dir = Some(dir);
        server
    }

    /// Starts mcqd on `data_dir` (kept from an earlier run, maybe).
    pub fn start_in(data_dir: &Path, args: &[&str]) -> Server {
        let mut server = Server {
            port: 0,
            data_dir: data_dir.to_path_buf(),
            args: args.iter().map(|s| s.to_string()).collect(),
            child: None,
            reader: None,
            log: Arc::new(Mutex::new(String::new())),
            owned_dir: None,
        };
        server.launch();
        server
    }

    fn launch(&mut self) {
        // A port we picked may be taken between our probe and mcqd's bind
        // (mcqd then says "cannot listen" and exits): pick another.
        let keep_port = self.port != 0;
        for _ in 0..5 {
            if !keep_port {
                self.port = free_port();
            }
            self.log.lock().unwrap().clear();
            let (mut child, reader) = spawn_mcqd(self.port, &self.data_dir, &self.args, &self.log);
            let deadline = Instant::now() + PATIENCE;
            loop {
                if let Some(status) = child.try_wait().unwrap() {
                    reader.join().unwrap();
                    let log = self.log();
                    if log.contains("cannot listen") && !keep_port {
                        break;
                    }
                    panic!("mcqd exited during start-up with {status}:\n{log}");
                }
                if self.log().contains("listening on") {
                    self.child = Some(child);
                    self.reader = Some(reader);
                    return;
                }
                if Instant::now() > deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!("mcqd did not start within {PATIENCE:?}:\n{}", self.log());
                }
                thread::sleep(Duration::from_millis(20));
            }
        }
        panic!("mcqd found no free port in 5 tries:\n{}", self.log());
    }

    /// Everything mcqd wrote to stderr so far.
    /// The log once it contains `what`, waiting up to [`PATIENCE`] for it:
    /// a reply can reach the client before the line logged with it
    /// reaches the harness.
    pub fn log_with(&self, what: &str) -> String {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let log = self.log();
            if log.contains(what) || Instant::now() > deadline {
                return log;
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    pub fn client(&self) -> Client {
        Client::connect(self.port)
    }

    /// SIGTERM, and wait for the exit status.
    pub fn stop(&mut self) -> ExitStatus {
        self.signal(libc::SIGTERM);
        self.wait()
    }

    /// SIGKILL: a crash as far as the log is concerned.
    pub fn kill9(&mut self) {
        self.signal(libc::SIGKILL);
        self.wait();
    }

    pub fn signal(&self, signal: i32) {
        // SAFETY: sending a signal to our own child.
        unsafe { libc::kill(self.pid() as i32, signal) };
    }

    /// Waits for the process to exit (bounded by [`PATIENCE`]).
    pub fn wait(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("running");
        let status = exit_within(&mut child, PATIENCE).unwrap_or_else(|| {
            let _ = child.kill();
            let _ = child.wait();
            panic!("mcqd did not exit within {PATIENCE:?}:\n{}", self.log())
        });
        // The log is complete once the reader has seen the pipe close.
        if let Some(reader) = self.reader.take() {
            reader.join().unwrap();
        }
        status
    }

    /// Starts it again on the same data directory, with `args` this time.
    pub fn restart_with(&mut self, args: &[&str]) {
        assert!(self.child.is_none(), "stop or kill it first");
        self.args = args.iter().map(|s| s.to_string()).collect();
        self.port = 0;
        self.launch();
    }

    /// Starts it again on the same data directory and the same port, so
    /// that clients which reconnect find it (crash tests).
    pub fn restart_same_port(&mut self) {
        assert!(self.child.is_none(), "stop or kill it first");
        self.launch();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if let Some(dir) = &self.owned_dir {
            if !thread::panicking() {
                let _ = std::fs::remove_dir_all(dir);
            }
        }
    }
}

/// The reply to a `get` of one queue.
#[derive(Debug, PartialEq)]
pub enum GetReply {
    Value(Vec<u8>),
    /// `END` alone: the queue was empty.
    Miss,
    /// A `SERVER_ERROR …` or `CLIENT_ERROR …` line.
    Error(String),
}

/// A plain blocking memcache client that speaks raw bytes.
pub struct Client {
    pub stream: TcpStream,
    buf: Vec<u8>,
}

impl Client {
    pub fn connect(port: u16) -> Client {
        let stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        stream.set_read_timeout(Some(PATIENCE)).unwrap();
        stream.set_write_timeout(Some(PATIENCE)).unwrap();
        stream.set_nodelay(true).unwrap();
        Client {
            stream,
            buf: Vec::new(),
        }
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("send");
    }

    /// Reads exactly `n` bytes.
    pub fn read_n(&mut self, n: usize) -> Vec<u8> {
        let since = Instant::now();
        while self.buf.len() < n {
            self.read_more(since, &format!("{n} bytes"));
        }
        self.buf.drain(..n).collect()
    }

    /// Reads until `end` has arrived, returning everything up to and
    /// including it.
    pub fn read_until(&mut self, end: &[u8]) -> Vec<u8> {
        let since = Instant::now();
        loop {
            if let Some(at) = self.buf.windows(end.len()).position(|w| w == end) {
                return self.buf.drain(..at + end.len()).collect();
            }
            self.read_more(since, &format!("{:?}", String::from_utf8_lossy(end)));
        }
    }

    /// Appends what the server sends next to `buf`. Fails the test when the
    /// connection closes or fails, or when nothing more has come
    /// [`PATIENCE`] after `since`; retries reads a signal interrupted (a
    /// socket with a read timeout is never restarted by the kernel).
    fn read_more(&mut self, since: Instant, waiting_for: &str) {
        let mut chunk = [0u8; 65536];
        loop {
            let left = PATIENCE.saturating_sub(since.elapsed());
            assert!(
                !left.is_zero(),
                "no reply within {PATIENCE:?} waiting for {waiting_for}, have {:?}",
                String::from_utf8_lossy(&self.buf)
            );
            self.stream.set_read_timeout(Some(left)).unwrap();
            match self.stream.read(&mut chunk) {
                Ok(0) => panic!(
                    "connection closed waiting for {waiting_for}, have {:?}",
                    String::from_utf8_lossy(&self.buf)
                ),
                Ok(got) => {
                    self.buf.extend_from_slice(&chunk[..got]);
                    return;
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        ErrorKind::Interrupted | ErrorKind::WouldBlock | ErrorKind::TimedOut
                    ) => {}
                Err(e) => panic!(
                    "read: {e} waiting for {waiting_for}, have {:?}",
                    String::from_utf8_lossy(&self.buf)
                ),
            }
        }
    }

    /// Sends `request` and asserts that exactly `reply` comes back.
    pub fn expect(&mut self, request: &[u8], reply: &[u8]) {
        self.send(request);
        let got = self.read_n(reply.len());
        assert_eq!(
            String::from_utf8_lossy(&got),
            String::from_utf8_lossy(reply),
            "reply to {:?}",
            String::from_utf8_lossy(request)
        );
    }

    /// True once the server has closed the connection (and sent nothing
    /// more).
    pub fn is_closed(&mut self) -> bool {
        let mut byte = [0u8; 1];
        self.stream.set_read_timeout(Some(PATIENCE)).unwrap();
        loop {
            match self.stream.read(&mut byte) {
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                result => return matches!(result, Ok(0)),
            }
        }
    }

    pub fn set(&mut self, queue: &str, body: &[u8]) {
        let reply = self.set_reply(queue, body);
        assert_eq!(String::from_utf8_lossy(&reply), "STORED\r\n", "set {queue}");
    }

    /// Sends one `set` and returns its reply line.
    pub fn set_reply(&mut self, queue: &str, body: &[u8]) -> Vec<u8> {
        let mut request = format!("set {queue} 0 0 {}\r\n", body.len()).into_bytes();
        request.extend_from_slice(body);
        request.extend_from_slice(b"\r\n");
        self.send(&request);
        self.read_until(b"\r\n")
    }

    /// Sets `body(0)`, `body(1)`, … until the server answers
    /// `SERVER_ERROR out of space`; returns how many were stored. Any other
    /// reply fails the test.
    pub fn fill_until_out_of_space(
        &mut self,
        queue: &str,
        body: impl Fn(usize) -> Vec<u8>,
    ) -> usize {
        let mut stored = 0;
        let deadline = Instant::now() + 2 * PATIENCE;
        loop {
            match self.set_reply(queue, &body(stored)).as_slice() {
                b"STORED\r\n" => stored += 1,
                b"SERVER_ERROR out of space\r\n" => return stored,
                other => panic!("set {queue}: {:?}", String::from_utf8_lossy(other)),
            }
            assert!(stored < 100_000, "{queue}: never ran out of space");
            assert!(
                Instant::now() < deadline,
                "{queue}: not out of space after {stored} sets in {:?}",
                2 * PATIENCE
            );
        }
    }

    /// Retries a `set` while the server answers `SERVER_ERROR out of space`,
    /// until it is stored (space is freed in the background once consumers
    /// drain); fails the test after [`PATIENCE`].
    pub fn set_once_space_is_back(&mut self, queue: &str, body: &[u8]) {
        let deadline = Instant::now() + PATIENCE;
        loop {
            match self.set_reply(queue, body).as_slice() {
                b"STORED\r\n" => return,
                b"SERVER_ERROR out of space\r\n" => {}
                other => panic!("set {queue}: {:?}", String::from_utf8_lossy(other)),
            }
            assert!(Instant::now() < deadline, "{queue}: sets never came back");
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Pops one message: `None` on a miss.
    pub fn get(&mut self, queue: &str) -> Option<Vec<u8>> {
        self.send(format!("get {queue}\r\n").as_bytes());
        match self.read_get_reply(queue) {
            GetReply::Value(body) => Some(body),
            GetReply::Miss => None,
            GetReply::Error(line) => panic!("get {queue}: {line}"),
        }
    }

    /// Pops up to `n` messages of `queue` with `n` pipelined `get`s, so the
    /// server can make their pops durable together (a `get` at a time
    /// waits for one fdatasync each); returns the `n` replies in order.
    pub fn get_many(&mut self, queue: &str, n: usize) -> Vec<GetReply> {
        self.send(format!("get {queue}\r\n").repeat(n).as_bytes());
        (0..n).map(|_| self.read_get_reply(queue)).collect()
    }

    /// Pops every message of `queue` (pipelined, 100 `get`s at a time) until
    /// a miss; fails the test on an error reply.
    pub fn drain(&mut self, queue: &str) -> Vec<Vec<u8>> {
        let mut got = Vec::new();
        loop {
            for reply in self.get_many(queue, 100) {
                match reply {
                    GetReply::Value(body) => got.push(body),
                    GetReply::Miss => return got,
                    GetReply::Error(line) => panic!("get {queue}: {line}"),
                }
            }
        }
    }

    /// Reads the reply to one single-queue `get`.
    fn read_get_reply(&mut self, queue: &str) -> GetReply {
        let head = self.read_until(b"\r\n");
        if head == b"END\r\n" {
            return GetReply::Miss;
        }
        let head = String::from_utf8(head).expect("ascii header");
        if head.starts_with("SERVER_ERROR") || head.starts_with("CLIENT_ERROR") {
            return GetReply::Error(head.trim_end().to_string());
        }
        let fields: Vec<&str> = head.trim_end().split(' ').collect();
        assert_eq!(fields.len(), 4, "VALUE line: {head:?}");
        assert_eq!(
            (fields[0], fields[1]),
            ("VALUE", queue),
            "VALUE line: {head:?}"
        );
        let len: usize = fields[3].parse().unwrap();
        let mut body = self.read_n(len + 2);
        assert_eq!(&body[len..], b"\r\n");
        body.truncate(len);
        assert_eq!(self.read_n(5), b"END\r\n");
        GetReply::Value(body)
    }

    /// `stats queue` as (name, enqueued, dequeued).
    pub fn queue_stats(&mut self) -> Vec<(String, u64, u64)> {
        self.send(b"stats queue\r\n");
        let text = String::from_utf8(self.read_until(b"END\r\n")).unwrap();
        text.lines()
            .filter_map(|l| l.strip_prefix("STAT "))
            .map(|l| {
                let (name, counts) = l.rsplit_once(' ').unwrap();
                let (enq, deq) = counts.split_once('/').unwrap();
                (name.to_string(), enq.parse().unwrap(), deq.parse().unwrap())
            })
            .collect()
    }

    /// `stats` as name → value.
    pub fn stats(&mut self) -> std::collections::BTreeMap<String, String> {
        self.send(b"stats\r\n");
        let text = String::from_utf8(self.read_until(b"END\r\n")).unwrap();
        text.lines()
            .filter_map(|l| l.strip_prefix("STAT "))
            .map(|l| {
                let (k, v) = l.split_once(' ').unwrap();
                (k.to_string(), v.to_string())
            })
            .collect()
    }
}

/// Sends `bytes` on `socket`, then reads what comes back until the server
/// closes it or a short while passes: for fuzz runs, where whatever the
/// server does with the bytes, it must not be to serve them or fall over.
pub fn throw(mut socket: TcpStream, bytes: &[u8]) {
    socket
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let _ = socket.write_all(bytes);
    let _ = socket.shutdown(std::net::Shutdown::Write);
    let mut sink = [0u8; 4096];
    let deadline = Instant::now() + Duration::from_secs(2);
    while Instant::now() < deadline {
        match socket.read(&mut sink) {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
    }
}

/// Runs a third-party client program. When the program (or its library) is
/// missing it skips loudly on a developer's machine and fails under CI, so CI
/// can never silently skip it.
pub fn third_party(program: &str, args: &[&str], probe: &[&str], what: &str) -> Option<Command> {
    let available = Command::new(program)
        .args(probe)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !available {
        skip(&format!(
            "{what} is not installed (probe: {program} {probe:?}); install it to run this test"
        ));
        return None;
    }
    let mut command = Command::new(program);
    command.args(args);
    Some(command)
}
