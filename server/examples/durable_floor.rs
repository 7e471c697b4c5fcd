//! The durable floor: how fast can *any* glommio server on this machine
//! answer unpipelined memcache requests if each reply waits for its record
//! to reach the device, as mcqd's `--sync interval` and `--sync always` do?
//!
//! This is a measuring probe for issue 8, not a queue server: one executor,
//! one in-memory queue per key, and a log that is only written, never read.
//! It keeps exactly the part of mcqd's work that the device imposes (group
//! commit: every request parsed in an executor pass appends a record to one
//! shared buffer, which goes to the device in one O_DIRECT write, with
//! `--fdatasync` also synced, or with `--dsync` the file opened O_DSYNC as
//! mcqd's `always` does, before any of those requests is answered) and
//! drops everything else (segments, index, hot cache, checksums, stats).
//! So its ops/s at 16 unpipelined connections is an upper bound for mcqd on
//! the same device: what the doorbell, the write's latency and glommio's
//! wake-ups allow when mcqd's own CPU costs nothing. `--no-write` answers
//! without writing: the same server's cost without the device.
//! `--sync-every <ms>` adds `--sync interval`'s timed fdatasync.
//! `--iopoll` lets glommio take the disk for a polled one, as it does when
//! the first file it opens is empty: the executor then busy-polls.
//!
//! Run it as scripts/bench runs mcqd (one executor on CPU 0, the load on
//! CPU 1); `bench-results/2026-12-05-issue8-durable-floor.md` has the runs:
//!
//! ```text
//! cargo build --release -p mcqd --example durable_floor
//! taskset -c 0 target/release/examples/durable_floor --port 22299 --dir /var/tmp/floor [--dsync|--fdatasync|--no-write] [--fallocate] [--sync-every MS] [--iopoll] [--inflight 2]
//! taskset -c 1 target/release/mcq-loadgen -s 127.0.0.1:22299 --workload mixed \
//!     --set-ratio 0.5 --value-size 64 --queues 1 -c 16 --duration 5s --warmup 1s
//! ```

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, VecDeque};
use std::future::poll_fn;
use std::rc::Rc;
use std::task::{Poll, Waker};

use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::io::{DmaFile, OpenOptions};
use glommio::net::{TcpListener, TcpStream};
use glommio::{LocalExecutorBuilder, Placement};

/// The log file is written round and round within this many bytes, so
/// every write lands on blocks that were allocated and written at start-up:
/// no metadata to sync. With `--fallocate` the file is instead fallocated
/// (unwritten extents, as a plain preallocation makes them) over
/// `FALLOCATE_SPAN`, and written once from start to end.
const LOG_SPAN: u64 = 64 << 20;
const FALLOCATE_SPAN: u64 = 4 << 30;
const BLOCK: usize = 4096;

struct Args {
    port: u16,
    dir: std::path::PathBuf,
    fdatasync: bool,
    dsync: bool,
    no_write: bool,
    fallocate: bool,
    sync_every_ms: u64,
    iopoll: bool,
    inflight: usize,
}

fn parse_args() -> Args {
    let mut args = Args {
        port: 22299,
        dir: std::env::temp_dir().join("durable-floor"),
        fdatasync: false,
        dsync: false,
        no_write: false,
        fallocate: false,
        sync_every_ms: 0,
        iopoll: false,
        inflight: 2,
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--port" => args.port = it.next().and_then(|v| v.parse().ok()).expect("--port N"),
            "--dir" => args.dir = it.next().expect("--dir PATH").into(),
            "--fdatasync" => args.fdatasync = true,
            "--dsync" => args.dsync = true,
            "--no-write" => args.no_write = true,
            "--fallocate" => args.fallocate = true,
            "--iopoll" => args.iopoll = true,
            "--sync-every" => {
                args.sync_every_ms = it
                    .next()
                    .and_then(|v| v.parse().ok())
                    .expect("--sync-every MS")
            }
            "--inflight" => {
                args.inflight = it
                    .next()
                    .and_then(|v| v.parse().ok())
                    .expect("--inflight N")
            }
            other => panic!("unknown argument {other}"),
        }
    }
    assert!(args.inflight >= 1, "--inflight must be at least 1");
    args
}

/// One group commit: the records appended while it was open.
#[derive(Default)]
struct Batch {
    done: Cell<bool>,
    waiters: RefCell<Vec<Waker>>,
}

impl Batch {
    async fn wait(&self) {
        poll_fn(|cx| {
            if self.done.get() {
                Poll::Ready(())
            } else {
                self.waiters.borrow_mut().push(cx.waker().clone());
                Poll::Pending
            }
        })
        .await
    }

    fn finish(&self) {
        self.done.set(true);
        for w in self.waiters.borrow_mut().drain(..) {
            w.wake();
        }
    }
}

/// The shared log: records waiting for the next write, the batch they
/// belong to, and how many writes are out.
struct Log {
    file: DmaFile,
    fdatasync: bool,
    no_write: bool,
    span: u64,
    max_inflight: usize,
    pending: RefCell<Vec<u8>>,
    open: RefCell<Rc<Batch>>,
    /// The batch cut last.
    last: RefCell<Rc<Batch>>,
    inflight: Cell<usize>,
    pos: Cell<u64>,
    /// Wakes the committer when records arrive or a write completes.
    kick: RefCell<Option<Waker>>,
    writes: Cell<u64>,
    requests: Cell<u64>,
}

impl Log {
    /// Appends a record; the returned batch finishes once it is on the device.
    fn append(&self, record: &[u8]) -> Rc<Batch> {
        self.pending.borrow_mut().extend_from_slice(record);
        self.requests.set(self.requests.get() + 1);
        if let Some(w) = self.kick.borrow_mut().take() {
            w.wake();
        }
        self.open.borrow().clone()
    }

    /// Writes whatever is pending whenever fewer than `max_inflight` writes
    /// are out: the same "write as soon as anything waits" group commit as
    /// mcqd's light-load path, with no lingering.
    async fn committer(self: Rc<Self>) {
        loop {
            poll_fn(|cx| {
                if !self.pending.borrow().is_empty() && self.inflight.get() < self.max_inflight {
                    Poll::Ready(())
                } else {
                    *self.kick.borrow_mut() = Some(cx.waker().clone());
                    Poll::Pending
                }
            })
            .await;
            let records = std::mem::take(&mut *self.pending.borrow_mut());
            let batch = std::mem::take(&mut *self.open.borrow_mut());
            // Acknowledged in order, as mcqd's: a batch finishes once its
            // write is done and the batch before it has finished.
            let before = self.last.replace(batch.clone());
            let len = records.len().div_ceil(BLOCK) * BLOCK;
            let mut buf = self.file.alloc_dma_buffer(len);
            buf.as_bytes_mut()[..records.len()].copy_from_slice(&records);
            buf.as_bytes_mut()[records.len()..].fill(0);
            let mut pos = self.pos.get();
            if pos + len as u64 > self.span {
                pos = 0;
            }
            self.pos.set(pos + len as u64);
            self.inflight.set(self.inflight.get() + 1);
            self.writes.set(self.writes.get() + 1);
            let log = self.clone();
            if self.no_write {
                self.inflight.set(self.inflight.get() - 1);
                batch.finish();
                continue;
            }
            glommio::spawn_local(async move {
                log.file.write_at(buf, pos).await.expect("log write");
                if log.fdatasync {
                    log.file.fdatasync().await.expect("fdatasync");
                }
                before.wait().await;
                log.inflight.set(log.inflight.get() - 1);
                batch.finish();
                if let Some(w) = log.kick.borrow_mut().take() {
                    w.wake();
                }
            })
            .detach();
        }
    }
}

type Queues = Rc<RefCell<HashMap<Vec<u8>, VecDeque<Vec<u8>>>>>;

/// Serves one connection: parse every complete request in the buffer,
/// append their records, wait for the last one's batch, send the replies.
async fn serve(mut conn: TcpStream, log: Rc<Log>, queues: Queues) -> std::io::Result<()> {
    let mut input: Vec<u8> = Vec::with_capacity(16 << 10);
    let mut out: Vec<u8> = Vec::with_capacity(16 << 10);
    let mut chunk = vec![0u8; 16 << 10];
    loop {
        let n = conn.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        input.extend_from_slice(&chunk[..n]);
        let mut used = 0;
        let mut last_batch = None;
        while let Some(eol) = find_crlf(&input[used..]) {
            let line = &input[used..used + eol];
            let mut words = line.split(|&b| b == b' ');
            match words.next() {
                Some(b"set") => {
                    let key = words.next().unwrap_or_default().to_vec();
                    let len: usize = words
                        .nth(2)
                        .and_then(|w| std::str::from_utf8(w).ok()?.parse().ok())
                        .unwrap_or(0);
                    let end = used + eol + 2 + len + 2;
                    if input.len() < end {
                        break;
                    }
                    let body = input[used + eol + 2..end - 2].to_vec();
                    let mut record = Vec::with_capacity(24 + key.len() + body.len());
                    record.extend_from_slice(&(body.len() as u32).to_le_bytes());
                    record.extend_from_slice(&key);
                    record.extend_from_slice(&body);
                    last_batch = Some(log.append(&record));
                    queues.borrow_mut().entry(key).or_default().push_back(body);
                    out.extend_from_slice(b"STORED\r\n");
                    used = end;
                }
                Some(b"get") => {
                    let key = words.next().unwrap_or_default();
                    let popped = queues.borrow_mut().get_mut(key).and_then(|q| q.pop_front());
                    if let Some(body) = popped {
                        // The pop's own record, as mcqd's `Consumed`.
                        let mut record = [0u8; 16];
                        record[..8].copy_from_slice(&(body.len() as u64).to_le_bytes());
                        last_batch = Some(log.append(&record));
                        out.extend_from_slice(b"VALUE ");
                        out.extend_from_slice(key);
                        out.extend_from_slice(format!(" 0 {}\r\n", body.len()).as_bytes());
                        out.extend_from_slice(&body);
                        out.extend_from_slice(b"\r\n");
                    }
                    out.extend_from_slice(b"END\r\n");
                    used += eol + 2;
                }
                _ => {
                    out.extend_from_slice(b"ERROR\r\n");
                    used += eol + 2;
                }
            }
        }
        input.drain(..used);
        if let Some(batch) = last_batch {
            batch.wait().await;
        }
        if !out.is_empty() {
            conn.write_all(&out).await?;
            out.clear();
        }
    }
}

fn find_crlf(b: &[u8]) -> Option<usize> {
    b.windows(2).position(|w| w == b"\r\n")
}

fn main() {
    let args = parse_args();
    std::fs::create_dir_all(&args.dir).expect("create --dir");
    let path = args.dir.join("floor.log");
    LocalExecutorBuilder::new(Placement::Unbound)
        .name("durable-floor")
        .spawn(move || async move {
            // glommio decides once per device whether its files take polled
            // I/O (IOPOLL), by reading from the first file opened. An empty
            // file answers that read without touching the device, so glommio
            // takes a virtio disk for a polled one: the executor then
            // busy-polls for every write's completion and never sleeps.
            // mcqd's `DmaDisk::probe` opens a file with data first so that
            // the answer is right; this probe calls it unless `--iopoll`.
            if !args.iopoll {
                mcqd::disk::dma::DmaDisk::probe(&args.dir)
                    .await
                    .expect("probing the disk");
            }
            let file = OpenOptions::new()
                .custom_flags(if args.dsync { libc::O_DSYNC } else { 0 })
                .read(true)
                .write(true)
                .create(true)
                .dma_open(&path)
                .await
                .expect("open log");
            // Allocate and write every block once, then sync: later writes
            // overwrite written blocks and fdatasync has no metadata to flush.
            let zeros = 1 << 20;
            let span = if args.fallocate {
                file.pre_allocate(FALLOCATE_SPAN, false)
                    .await
                    .expect("fallocate");
                0
            } else {
                LOG_SPAN
            };
            for off in (0..span).step_by(zeros) {
                let mut buf = file.alloc_dma_buffer(zeros);
                buf.as_bytes_mut().fill(0);
                file.write_at(buf, off).await.expect("preallocate");
            }
            file.fdatasync().await.expect("fdatasync");
            let log = Rc::new(Log {
                file,
                fdatasync: args.fdatasync,
                no_write: args.no_write,
                span: if args.fallocate {
                    FALLOCATE_SPAN
                } else {
                    LOG_SPAN
                },
                max_inflight: args.inflight,
                pending: RefCell::new(Vec::with_capacity(64 << 10)),
                open: RefCell::new(Rc::new(Batch::default())),
                last: RefCell::new(Rc::new(Batch {
                    done: Cell::new(true),
                    waiters: RefCell::default(),
                })),
                inflight: Cell::new(0),
                pos: Cell::new(0),
                kick: RefCell::new(None),
                writes: Cell::new(0),
                requests: Cell::new(0),
            });
            glommio::spawn_local(log.clone().committer()).detach();
            if args.sync_every_ms > 0 {
                // As `--sync interval=<ms>`: the writes are acknowledged
                // unsynced and the file is fdatasync'd on a timer.
                let every = std::time::Duration::from_millis(args.sync_every_ms);
                let log = log.clone();
                glommio::spawn_local(async move {
                    loop {
                        glommio::timer::sleep(every).await;
                        log.file.fdatasync().await.expect("fdatasync");
                    }
                })
                .detach();
            }
            let report = log.clone();
            glommio::spawn_local(async move {
                let (mut w0, mut r0) = (0, 0);
                loop {
                    glommio::timer::sleep(std::time::Duration::from_secs(5)).await;
                    let (w, r) = (report.writes.get(), report.requests.get());
                    if w > w0 {
                        eprintln!(
                            "last 5 s: {} durable requests in {} device writes ({:.1} per write)",
                            r - r0,
                            w - w0,
                            (r - r0) as f64 / (w - w0) as f64
                        );
                    }
                    (w0, r0) = (w, r);
                }
            })
            .detach();
            let queues: Queues = Rc::default();
            let listener = TcpListener::bind(("127.0.0.1", args.port)).expect("bind");
            eprintln!("durable floor listening on 127.0.0.1:{}", args.port);
            loop {
                let conn = listener.accept().await.expect("accept");
                conn.set_nodelay(true).ok();
                let (log, queues) = (log.clone(), queues.clone());
                glommio::spawn_local(async move {
                    let _ = serve(conn, log, queues).await;
                })
                .detach();
            }
        })
        .expect("spawn executor")
        .join()
        .expect("executor");
}
