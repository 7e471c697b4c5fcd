//! Listeners and connections: bytes in, requests submitted, replies out in
//! request order.
//!
//! # Why a connection works in batches
//! A connection reads what the socket has, parses every whole request in it,
//! and submits them all to their shards before awaiting any reply. Each
//! submission changes queue state at once and hands back a future for its
//! durability, so a pipeline of 2,000 `set`s becomes one group commit rather
//! than 2,000, and a `get` after a `set` in the same batch sees that `set`.
//! The replies are then awaited in request order and written with one
//! `write`. Bytes that arrive meanwhile wait in the socket buffer, which is
//! where back-pressure on a client that sends faster than the log syncs
//! belongs.

use std::cell::Cell;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use futures_lite::future;
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::net::{TcpListener, TcpStream};
use smallvec::SmallVec;

use crate::logging;
use crate::protocol::{self, reply, Command, Parsed};
use crate::shard::{all_queue_stats, all_stats, Op, OpFuture, OpReply, Router, Settle};
use crate::shared::{Shared, StopSignal};
use crate::stats::Counters;
use crate::store::{Body, LogError, Reader, Take};
use crate::turn;

/// Largest batch of requests parsed before their replies are awaited.
const MAX_BATCH: usize = 1024;
/// Room for this many pending replies is kept between a connection's
/// batches (a pipeline this deep allocates none).
const KEEP_BATCH: usize = 64;
/// Bodies a batch of `get`s may hold in memory at once, at the worst case of
/// every message being `-B` bytes: bounds a connection's memory however
/// deep its pipeline.
const BATCH_GET_BYTES: usize = 128 << 20;
/// How long shutdown waits for connections to finish what they had read
/// (a client that stopped reading its replies must not hold the process).
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
/// Reply bytes gathered before they are written even though more replies
/// are still to come.
const FLUSH_AT: usize = 256 * 1024;
/// Read size.
const READ_CHUNK: usize = 64 * 1024;

/// Accepts connections on this executor until shutdown, then waits for them
/// to finish what they had read.
pub async fn serve(listener: TcpListener, router: Rc<Router>, shared: Arc<Shared>, me: usize) {
    let live = Rc::new(Cell::new(0usize));
    // Connection ids, unique in the process: the executor in the top bits.
    let mut next_reader: Reader = (me as Reader) << 48;
    let stop = StopSignal::start(shared.clone());
    loop {
        let accepted = future::or(async { Some(listener.accept().await) }, async {
            stop.wait().await;
            None
        })
        .await;
        let stream = match accepted {
            None => break,
            Some(Ok(stream)) => stream,
            Some(Err(e)) => {
                log::warn!("accept failed: {e}");
                glommio::timer::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let open = shared.connections.fetch_add(1, Ordering::Relaxed) + 1;
        if open > shared.max_connections {
            shared.connections.fetch_sub(1, Ordering::Relaxed);
            // A client retrying in a loop must not flood the log.
            static REFUSALS: logging::Throttle = logging::Throttle::new(1000);
            if let Some(n) = REFUSALS.hit() {
                log::warn!(
                    "connection refused: limit of {} connections (-c) reached ({n} refused since the last such line)",
                    shared.max_connections
                );
            }
            glommio::spawn_local(async move {
                let mut stream = stream;
                let _ = stream
                    .write_all(b"SERVER_ERROR too many connections\r\n")
                    .await;
                let _ = stream.close().await;
            })
            .detach();
            continue;
        }
        shared.total_connections.fetch_add(1, Ordering::Relaxed);
        let _ = stream.set_nodelay(true);
        let (router, shared, live, stop) =
            (router.clone(), shared.clone(), live.clone(), stop.clone());
        live.set(live.get() + 1);
        next_reader += 1;
        let reader = next_reader;
        glommio::spawn_local(async move {
            let peer = stream
                .peer_addr()
                .map_or_else(|_| "an unknown peer".to_string(), |a| a.to_string());
            log::debug!("executor {me}: connection from {peer}");
            let mut conn = Connection::new(stream, router, shared.clone(), stop, me, reader);
            if let Err(e) = conn.run().await {
                log::debug!("executor {me}: connection from {peer}: {e}");
            }
            conn.put_back_open();
            let _ = conn.stream.close().await;
            shared.connections.fetch_sub(1, Ordering::Relaxed);
            live.set(live.get() - 1);
        })
        .detach();
    }
    // Blocking gets end with `END` instead of holding their connections
    // (and the shutdown) for their whole wait.
    for store in router.local_stores() {
        store.end_waits();
    }
    let deadline = std::time::Instant::now() + DRAIN_TIMEOUT;
    while live.get() > 0 && std::time::Instant::now() < deadline {
        glommio::timer::sleep(Duration::from_millis(10)).await;
    }
    if live.get() > 0 {
        log::warn!(
            "executor {me}: {} connections still busy after {} s; closing them",
            live.get(),
            DRAIN_TIMEOUT.as_secs()
        );
    }
}

/// A reply in the making: ready now, or waiting for one or more shards.
enum Pending {
    Ready(Vec<u8>),
    Set(OpFuture),
    Delete(OpFuture),
    /// `pops` pairs each key as sent (a `VALUE` line echoes it) with its
    /// pop; `waits` when one of them is a blocking get.
    Get {
        pops: SmallVec<[(Vec<u8>, OpFuture); 1]>,
        with_seq: bool,
        waits: bool,
    },
    /// `flush` (one shard, `END`) and `flush_all` (every shard, `OK`).
    Flush {
        parts: Vec<OpFuture>,
        ok: &'static str,
    },
    /// `stats`: each shard's counters, then its queues'.
    Stats {
        general: Vec<OpFuture>,
        queues: Vec<OpFuture>,
    },
    StatsQueue(Vec<OpFuture>),
}

impl Pending {
    /// A reply of one line, known already.
    fn line(line: &str) -> Pending {
        let mut out = Vec::new();
        reply::line(&mut out, line);
        Pending::Ready(out)
    }
}

struct Connection {
    stream: TcpStream,
    router: Rc<Router>,
    shared: Arc<Shared>,
    stop: StopSignal,
    counters: Arc<Counters>,
    input: Vec<u8>,
    output: Output,
    /// Bytes of a refused data block still to be discarded.
    skip: u64,
    /// This connection, as the holder of reliable reads.
    reader: Reader,
    /// Queues on which this connection may hold an open message (asked for
    /// `/open` since its last `/close` or `/abort` there): put back when
    /// it ends.
    open_on: Vec<Vec<u8>>,
    /// Bytes read since this connection last paused (see [`turn::PIECE`]).
    since_pause: usize,
    /// A `set` whose data block is being read into a buffer of its own
    /// (the block's bytes so far): a large body arrives there, not in
    /// `input`, so it is not copied out of `input` after.
    block: Option<(protocol::SetHead, Vec<u8>)>,
    /// The pending replies of the requests parsed together, kept between
    /// batches so that a batch allocates nothing.
    batch: Vec<Pending>,
}

impl Connection {
    fn new(
        stream: TcpStream,
        router: Rc<Router>,
        shared: Arc<Shared>,
        stop: StopSignal,
        me: usize,
        reader: Reader,
    ) -> Self {
        let counters = shared.counters[me].clone();
        Connection {
            stream,
            router,
            shared,
            stop,
            counters,
            input: Vec::with_capacity(READ_CHUNK),
            output: Output::default(),
            skip: 0,
            reader,
            open_on: Vec::new(),
            since_pause: 0,
            block: None,
            batch: Vec::new(),
        }
    }

    /// The connection ended: every message it holds open goes back to the
    /// head of its queue. Sent after the cancels of its unfinished
    /// requests (dropped with them), so a blocking `/open` that got its
    /// message just before is put back too.
    fn put_back_open(&mut self) {
        for queue in std::mem::take(&mut self.open_on) {
            let shard = self.router.shard_of(&queue);
            let reader = self.reader;
            forget(self.router.submit(shard, Op::Abort { queue, reader }));
        }
    }

    async fn run(&mut self) -> std::io::Result<()> {
        let mut chunk = vec![0u8; READ_CHUNK];
        loop {
            let read = future::or(async { Some(self.stream.read(&mut chunk).await) }, async {
                self.stop.wait().await;
                None
            })
            .await;
            let n = match read {
                None => return Ok(()),
                Some(result) => result?,
            };
            if n == 0 {
                return Ok(());
            }
            self.counters.add(&self.counters.bytes_read, n as u64);
            let mut fresh = &chunk[..n];
            if self.skip > 0 {
                let dropped = self.skip.min(n as u64) as usize;
                self.skip -= dropped as u64;
                fresh = &fresh[dropped..];
            }
            if let Some((head, block)) = &mut self.block {
                let take = (head.bytes + 2 - block.len()).min(fresh.len());
                block.extend_from_slice(&fresh[..take]);
                fresh = &fresh[take..];
                if block.len() == head.bytes + 2 {
                    let (head, block) = self.block.take().expect("a block is being read");
                    self.finish_block(head, block).await?;
                }
            }
            self.input.extend_from_slice(fresh);
            loop {
                let mut batch = std::mem::take(&mut self.batch);
                let close = self.parse_batch(&mut batch);
                if batch.is_empty() && !close {
                    self.batch = batch;
                    break;
                }
                self.answer(&mut batch).await?;
                // A deep pipeline's batch is not kept: the room for
                // MAX_BATCH pending replies, per connection, would be a
                // lasting cost of one burst.
                if batch.capacity() <= KEEP_BATCH {
                    self.batch = batch;
                }
                if close {
                    return Ok(());
                }
            }
            if self.input.capacity() > 4 * READ_CHUNK && self.input.len() < READ_CHUNK {
                self.input.shrink_to(READ_CHUNK);
            }
            // A large body arrives in many reads that complete at once:
            // pause every turn::PIECE bytes so that the executor's other
            // connections are read in between.
            self.since_pause += n;
            if self.since_pause >= turn::PIECE {
                self.since_pause = 0;
                turn::pause().await;
            }
        }
    }

    /// A `set` whose data block was read into a buffer of its own: checks
    /// its end, checksums the body in pieces (so that the append, which
    /// copies it into the log's tail in one go, does not also checksum it
    /// in one go: see `turn`), submits it and writes its reply.
    async fn finish_block(
        &mut self,
        head: protocol::SetHead,
        block: Vec<u8>,
    ) -> std::io::Result<()> {
        let pending = match protocol::finish_set(head, block) {
            Ok(set) => {
                let Command::Set { body, .. } = &set else {
                    unreachable!("finish_set makes a set");
                };
                let crc = turn::checksum(body).await;
                self.submit(set, Some(crc))
            }
            Err(reject) => Some(Pending::line(reject.line())),
        };
        self.answer(&mut pending.into_iter().collect()).await
    }

    /// Parses and submits every whole request in the input buffer (up to
    /// [`MAX_BATCH`]), pushing their pending replies onto `batch`. Returns
    /// whether the connection must close after them.
    fn parse_batch(&mut self, batch: &mut Vec<Pending>) -> bool {
        let mut used = 0;
        let mut close = false;
        let max_gets = (BATCH_GET_BYTES / self.shared.max_message_size.max(1)).max(16);
        let mut gets = 0;
        while batch.len() < MAX_BATCH && gets < max_gets && self.skip == 0 {
            match protocol::parse(&self.input[used..], self.shared.max_message_size) {
                Parsed::Incomplete => {
                    // A large data block that is really arriving (its first
                    // READ_CHUNK is here, so a bare `set` line reserves
                    // nothing): the rest of it is read into a buffer of its
                    // own, sized for it, which becomes the message's body
                    // without being copied again.
                    let max = self.shared.max_message_size;
                    if self.input.len() - used >= READ_CHUNK {
                        if let Some(head) = protocol::pending_set(&self.input[used..], max) {
                            let mut block = Vec::with_capacity(head.bytes + 2);
                            block.extend_from_slice(&self.input[used + head.line_len..]);
                            used = self.input.len();
                            self.block = Some((head, block));
                        }
                    }
                    break;
                }
                Parsed::Command { command, consumed } => {
                    used += consumed;
                    if command == Command::Quit {
                        close = true;
                        break;
                    }
                    if command == Command::Shutdown && self.shared.shutdown_enabled {
                        log::info!("shutdown requested by a client");
                        self.shared.shutdown_requested.store(true, Ordering::SeqCst);
                        close = true;
                        break;
                    }
                    if let Command::Get { keys, .. } = &command {
                        gets += keys.len();
                    }
                    if let Some(pending) = self.submit(command, None) {
                        batch.push(pending);
                    }
                }
                Parsed::Reject {
                    reject,
                    consumed,
                    skip,
                } => {
                    log::trace!(
                        "rejected request ({}): {}",
                        reject.line(),
                        logging::escape(&self.input[used..used + consumed])
                    );
                    used += consumed;
                    let available = (self.input.len() - used) as u64;
                    let now = skip.min(available);
                    used += now as usize;
                    self.skip = skip - now;
                    batch.push(Pending::line(reject.line()));
                }
                Parsed::Fatal(line) => {
                    log::trace!(
                        "rejected request, connection closed ({line}): {}",
                        logging::escape(&self.input[used..])
                    );
                    batch.push(Pending::line(line));
                    close = true;
                    used = self.input.len();
                    break;
                }
            }
        }
        self.input.drain(..used);
        close
    }

    /// Starts one request; `None` when it wants no reply at all.
    /// `body_crc` is a `set`'s `crc32c(body)` when computed already.
    fn submit(&mut self, command: Command, body_crc: Option<u32>) -> Option<Pending> {
        let router = &self.router;
        let c = &self.counters;
        let ready = |line: &str| Some(Pending::line(line));
        match command {
            Command::Set {
                queue,
                flags,
                exptime,
                body,
                noreply,
            } => {
                c.add(&c.cmd_set, 1);
                let expires = match exptime {
                    0 => 0, // the usual case, without a clock read
                    t => protocol::expiry(t, crate::store::now_secs()),
                };
                let shard = router.shard_of(&queue);
                let op = Op::Set {
                    queue,
                    flags,
                    expires,
                    body,
                    body_crc,
                };
                let done = router.submit(shard, op);
                if noreply {
                    forget(done);
                    return None;
                }
                Some(Pending::Set(done))
            }
            Command::Get { keys, with_seq } => {
                c.add(&c.cmd_get, keys.len() as u64);
                let waits = keys.iter().any(|k| k.wait.is_some());
                let reader = self.reader;
                let open_on = &mut self.open_on;
                let pops = keys
                    .into_iter()
                    .map(|k| {
                        let shard = router.shard_of(&k.queue);
                        let settle = if k.close {
                            Some(Settle::Confirm)
                        } else if k.abort {
                            Some(Settle::Abort)
                        } else {
                            None
                        };
                        let take = k.takes().then_some(if k.open {
                            Take::Open(reader)
                        } else if k.peek {
                            Take::Peek
                        } else {
                            Take::Pop
                        });
                        let held = open_on.iter().position(|q| *q == k.queue);
                        let may_hold = held.is_some();
                        match (k.open, held) {
                            (true, None) => open_on.push(k.queue.clone()),
                            (false, Some(i)) if settle.is_some() => {
                                open_on.swap_remove(i);
                            }
                            _ => {}
                        }
                        let done = router.submit(
                            shard,
                            Op::Get {
                                queue: k.queue,
                                wait: k.wait,
                                settle,
                                take,
                                reader,
                                may_hold,
                            },
                        );
                        (k.key, done)
                    })
                    .collect();
                Some(Pending::Get {
                    pops,
                    with_seq,
                    waits,
                })
            }
            Command::Delete { queue, noreply } => {
                let done = router.submit(router.shard_of(&queue), Op::Delete { queue });
                if noreply {
                    forget(done);
                    return None;
                }
                Some(Pending::Delete(done))
            }
            Command::Flush { queue, noreply } => {
                let done = router.submit(router.shard_of(&queue), Op::Flush { queue });
                if noreply {
                    forget(done);
                    return None;
                }
                Some(Pending::Flush {
                    parts: vec![done],
                    ok: "END",
                })
            }
            Command::FlushAll { noreply } => {
                let parts = self.router.each_shard(|| Op::FlushAll);
                if noreply {
                    parts.into_iter().for_each(forget);
                    return None;
                }
                Some(Pending::Flush { parts, ok: "OK" })
            }
            Command::Stats => {
                let (general, queues) = router.ask_stats();
                Some(Pending::Stats { general, queues })
            }
            Command::StatsQueue => Some(Pending::StatsQueue(
                self.router.each_shard(|| Op::QueueStats),
            )),
            Command::StatsReset => {
                for counters in &self.shared.counters {
                    counters.reset();
                }
                ready("RESET")
            }
            Command::Version => ready(&format!("VERSION {}", env!("CARGO_PKG_VERSION"))),
            Command::Verbosity { level, noreply } => {
                logging::set_verbosity(level);
                log::info!("verbosity {level}");
                if noreply {
                    None
                } else {
                    ready("OK")
                }
            }
            Command::Reload => match self.shared.limits.reload() {
                Ok(()) => {
                    log::info!("reload: queue limits reloaded");
                    ready("Reloaded config.")
                }
                Err(e) => {
                    log::warn!("reload failed, the limits in force stay: {e}");
                    ready(&format!("SERVER_ERROR reload failed: {e}").replace(['\r', '\n'], " "))
                }
            },
            Command::Shutdown if !self.shared.shutdown_enabled => {
                ready("ERROR: shutdown not enabled")
            }
            Command::Shutdown | Command::Quit => None,
        }
    }

    /// Awaits the batch's replies in order and writes them, leaving
    /// `batch` empty.
    async fn answer(&mut self, batch: &mut Vec<Pending>) -> std::io::Result<()> {
        for pending in batch.drain(..) {
            if matches!(pending, Pending::Get { waits: true, .. }) {
                self.finish_waiting(pending).await?;
                continue;
            }
            let Connection {
                output,
                shared,
                counters,
                ..
            } = self;
            finish(output, shared, counters, pending).await;
            if self.output.len() >= FLUSH_AT {
                self.flush().await?;
            }
        }
        self.flush().await
    }

    async fn flush(&mut self) -> std::io::Result<()> {
        if !self.output.is_empty() {
            // A large reply goes out in slices, with the same pause as a
            // large body's reads.
            let total = self.output.len();
            let mut sent = 0;
            for run in self.output.runs() {
                for slice in run.chunks(turn::PIECE) {
                    self.stream.write_all(slice).await?;
                    sent += slice.len();
                    if sent < total {
                        turn::pause().await;
                    }
                }
            }
            self.counters
                .add(&self.counters.bytes_written, total as u64);
            self.output.clear();
        }
        Ok(())
    }

    /// A blocking get: the replies before it go out first (the client may
    /// wait on them), and a client that goes away while it waits cancels
    /// it, so the message it would have popped stays queued for others.
    /// (A client that sent more requests behind it is not watched: its
    /// bytes are in the way of seeing the close.)
    async fn finish_waiting(&mut self, pending: Pending) -> std::io::Result<()> {
        self.flush().await?;
        let Connection {
            stream,
            output,
            shared,
            counters,
            ..
        } = self;
        let finished = future::or(
            async {
                finish(output, shared, counters, pending).await;
                true
            },
            async {
                // Gone: end of stream or an error.
                let mut byte = [0u8; 1];
                if let Ok(1..) = stream.peek(&mut byte).await {
                    std::future::pending::<()>().await;
                }
                false
            },
        )
        .await;
        if finished {
            Ok(())
        } else {
            Err(std::io::Error::new(
                std::io::ErrorKind::ConnectionAborted,
                "the client went away during a blocking get",
            ))
        }
    }
}

/// Replies waiting to be written: their bytes, with the bodies of large
/// `VALUE`s kept in the messages they came in rather than copied in (an
/// 8 MiB copy held the executor for milliseconds while small requests
/// waited; see issue 8's fairness notes in `bench-results/`).
#[derive(Default)]
struct Output {
    bytes: Vec<u8>,
    /// Each body goes before `bytes[offset..]`, in order.
    bodies: Vec<(usize, Body)>,
}

/// Bodies at least this large are kept out of [`Output::bytes`].
const SPLICE_AT: usize = 64 << 10;

impl Output {
    fn len(&self) -> usize {
        self.bytes.len()
            + self
                .bodies
                .iter()
                .map(|(_, body)| body.len())
                .sum::<usize>()
    }

    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A `VALUE` reply for `body`.
    fn value(&mut self, queue: &[u8], flags: u32, seq: Option<u64>, body: Body) {
        if body.len() < SPLICE_AT {
            return reply::value(&mut self.bytes, queue, flags, seq, &body);
        }
        reply::value_header(&mut self.bytes, queue, flags, body.len(), seq);
        self.bodies.push((self.bytes.len(), body));
        self.bytes.extend_from_slice(b"\r\n");
    }

    /// The bytes to write, in order (no allocation: this runs per flush).
    fn runs(&self) -> impl Iterator<Item = &[u8]> {
        let offsets = || self.bodies.iter().map(|(offset, _)| *offset);
        let starts = std::iter::once(0).chain(offsets());
        let ends = offsets().chain(std::iter::once(self.bytes.len()));
        let bodies = self.bodies.iter().map(|(_, body)| Some(&body[..]));
        starts
            .zip(ends)
            .zip(bodies.chain(std::iter::once(None)))
            .flat_map(|((start, end), body)| std::iter::once(&self.bytes[start..end]).chain(body))
            .filter(|run| !run.is_empty())
    }

    fn clear(&mut self) {
        self.bytes.clear();
        self.bodies.clear();
        if self.bytes.capacity() > 4 * FLUSH_AT {
            self.bytes.shrink_to(FLUSH_AT);
        }
    }
}

impl std::ops::Deref for Output {
    type Target = Vec<u8>;
    fn deref(&self) -> &Vec<u8> {
        &self.bytes
    }
}

impl std::ops::DerefMut for Output {
    fn deref_mut(&mut self) -> &mut Vec<u8> {
        &mut self.bytes
    }
}

/// Awaits one reply and appends it to `out`.
async fn finish(out: &mut Output, shared: &Shared, counters: &Counters, pending: Pending) {
    match pending {
        Pending::Ready(bytes) => out.extend_from_slice(&bytes),
        Pending::Set(done) => match done.await {
            OpReply::Set(Ok(true)) => reply::line(out, "STORED"),
            OpReply::Set(Ok(false)) => reply::line(out, "NOT_STORED"),
            other => reply::line(out, &server_error(other)),
        },
        Pending::Delete(done) => match done.await {
            OpReply::Delete(Ok(true)) => reply::line(out, "DELETED"),
            OpReply::Delete(Ok(false)) => reply::line(out, "NOT_FOUND"),
            other => reply::line(out, &server_error(other)),
        },
        Pending::Get { pops, with_seq, .. } => {
            let mut failure = None;
            for (key, done) in pops {
                match done.await {
                    OpReply::Get(Ok(Some(message))) => {
                        counters.add(&counters.get_hits, 1);
                        let seq = with_seq.then_some(message.seq);
                        out.value(&key, message.flags, seq, message.body);
                    }
                    OpReply::Get(Ok(None)) => counters.add(&counters.get_misses, 1),
                    OpReply::Refused(line) => failure = Some(line.to_string()),
                    other => failure = Some(server_error(other)),
                }
            }
            match failure {
                // Messages already popped in this request were written
                // above: they are gone from their queues, so they must
                // reach the client.
                Some(error) => reply::line(out, &error),
                None => reply::line(out, "END"),
            }
        }
        Pending::Flush { parts, ok } => {
            let mut failure = None;
            for part in parts {
                match part.await {
                    OpReply::Flushed(Ok(())) => {}
                    other => failure = Some(server_error(other)),
                }
            }
            reply::line(out, failure.as_deref().unwrap_or(ok));
        }
        Pending::Stats { general, queues } => {
            let (total, queues) = all_stats(general, queues).await;
            crate::stats::write_stats(out, shared, &total, &queues);
        }
        Pending::StatsQueue(parts) => {
            for q in all_queue_stats(parts).await {
                reply::stat(out, &q.name, format_args!("{}/{}", q.enqueued, q.dequeued));
            }
            reply::line(out, "END");
        }
    }
}

/// Lets a `noreply` request complete with nobody waiting for it: it is
/// already applied; only a failure is worth a log line, since the client
/// asked not to hear about it.
fn forget(done: OpFuture) {
    glommio::spawn_local(async move {
        let reply = done.await;
        if matches!(
            reply,
            OpReply::Set(Err(_))
                | OpReply::Delete(Err(_))
                | OpReply::Get(Err(_))
                | OpReply::Flushed(Err(_))
        ) {
            log::warn!("noreply request failed: {}", server_error(reply));
        }
    })
    .detach();
}

/// The one place a storage error becomes a reply line.
fn server_error(reply: OpReply) -> String {
    let error = match reply {
        OpReply::Set(Err(e))
        | OpReply::Delete(Err(e))
        | OpReply::Get(Err(e))
        | OpReply::Flushed(Err(e)) => e,
        OpReply::Unrouted(why) => return format!("SERVER_ERROR {why}"),
        other => return format!("SERVER_ERROR unexpected reply {other:?}"),
    };
    let line = match &error {
        LogError::OutOfSpace => "SERVER_ERROR out of space".to_string(),
        LogError::Failed(why) => format!("SERVER_ERROR storage failed: {why}"),
        LogError::Read(why) => format!("SERVER_ERROR {why}"),
        LogError::Corrupt { seq } => format!("SERVER_ERROR corrupt message {seq} skipped"),
        LogError::Closed => "SERVER_ERROR shutting down".to_string(),
    };
    line.replace(['\r', '\n'], " ")
}

#[cfg(test)]
mod tests {
    use super::{Output, SPLICE_AT};
    use crate::store::Body;

    /// What goes out is exactly what one buffer would have held: small
    /// values copied in, large ones spliced between the other bytes.
    #[test]
    fn output_writes_spliced_bodies_in_order() {
        let big = |c: u8| vec![c; SPLICE_AT];
        let mut out = Output::default();
        let mut plain = Vec::new();
        out.value(b"a", 1, None, Body::from(big(b'a')));
        crate::protocol::reply::value(&mut plain, b"a", 1, None, &big(b'a'));
        out.value(b"b", 2, Some(9), Body::from(b"small".to_vec()));
        crate::protocol::reply::value(&mut plain, b"b", 2, Some(9), b"small");
        let record = [b"header".to_vec(), big(b'c'), b"pad".to_vec()].concat();
        out.value(b"c", 3, None, Body::within(record, 6, SPLICE_AT));
        crate::protocol::reply::value(&mut plain, b"c", 3, None, &big(b'c'));
        out.extend_from_slice(b"END\r\n");
        plain.extend_from_slice(b"END\r\n");
        assert_eq!(out.len(), plain.len());
        assert_eq!(out.bodies.len(), 2, "the large bodies are not copied");
        let written: Vec<u8> = out.runs().flatten().copied().collect();
        assert!(written == plain, "the runs differ from one buffer");
        out.clear();
        assert!(out.is_empty() && out.runs().next().is_none());
    }
}
