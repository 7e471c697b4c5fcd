//! One client connection: read what the socket has, parse every whole
//! request in it, submit them all, then write their replies in one go (see
//! the parent module for why it works in batches).

use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use futures_lite::future;
use smallvec::SmallVec;

use super::dispatch::forget;
use super::output::{finish, Output, Pending, FLUSH_AT};
use super::tls::{self, Stream};
use crate::access::Session;
use crate::logging;
use crate::protocol::{self, Command, Parsed};
use crate::shard::{Op, Router};
use crate::shared::{Shared, StopSignal};
use crate::stats::Counters;
use crate::store::Reader;
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
/// Read size.
const READ_CHUNK: usize = 64 * 1024;

pub(super) struct Connection {
    pub(super) stream: Stream,
    pub(super) router: Rc<Router>,
    pub(super) shared: Arc<Shared>,
    pub(super) stop: StopSignal,
    pub(super) counters: Arc<Counters>,
    pub(super) input: Vec<u8>,
    output: Output,
    /// Bytes of a refused data block still to be discarded.
    skip: u64,
    /// This connection, as the holder of reliable reads.
    pub(super) reader: Reader,
    /// Queues on which this connection may hold an open message (asked for
    /// `/open` since its last `/close` or `/abort` there): put back when
    /// it ends.
    pub(super) open_on: Vec<Vec<u8>>,
    /// Bytes read since this connection last paused (see [`turn::PIECE`]).
    since_pause: usize,
    /// A `set` whose data block is being read into a buffer of its own
    /// (the block's bytes so far): a large body arrives there, not in
    /// `input`, so it is not copied out of `input` after.
    block: Option<(protocol::SetHead, Vec<u8>)>,
    /// The pending replies of the requests parsed together, kept between
    /// batches so that a batch allocates nothing.
    batch: Vec<Pending>,
    /// Requests parsed and not yet submitted (see
    /// [`Connection::submit_parsed`]), kept for the same reason.
    parsed: Vec<Command>,
    /// The user the client's TLS certificate names (`tls::identity`),
    /// set once by the handshake; `None` for plaintext, or TLS without a
    /// client certificate. It logs the connection in as that user (see
    /// [`Connection::serve`]).
    pub(super) tls_identity: Option<String>,
    /// Who this connection is and what it may do: `None` without `-Y`
    /// and `[user …]` sections (see `super::auth`).
    pub(super) session: Option<Session>,
}

impl Connection {
    pub(super) fn new(
        stream: Stream,
        router: Rc<Router>,
        shared: Arc<Shared>,
        stop: StopSignal,
        me: usize,
        reader: Reader,
        tls_identity: Option<String>,
    ) -> Self {
        let counters = shared.counters[me].clone();
        let session = (shared.access.as_ref())
            .filter(|a| a.required())
            .map(|a| Session::new(a.clone()));
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
            parsed: Vec::new(),
            tls_identity,
            session,
        }
    }

    /// The connection ended: every message it holds open goes back to the
    /// head of its queue, then the socket closes. Sent after the cancels of
    /// its unfinished requests (dropped with them), so a blocking `/open`
    /// that got its message just before is put back too.
    pub(super) async fn end(mut self) {
        for queue in std::mem::take(&mut self.open_on) {
            let shard = self.router.shard_of(&queue);
            let reader = self.reader;
            forget(self.router.submit(shard, Op::Abort { queue, reader }));
        }
        let _ = self.stream.close().await;
    }

    pub(super) async fn run(&mut self) -> std::io::Result<()> {
        let result = self.serve().await;
        if let Err(e) = &result {
            tls::count_error(&self.stream, e, &self.counters);
        }
        result
    }

    /// A client certificate naming a known user logs the connection in as
    /// that user, with no `-Y` handshake. One naming nobody known falls
    /// back to the handshake with `-Y`; without `-Y` (permissions from
    /// `[user …]` sections for certificate holders only) the connection
    /// is closed, since it would otherwise be unrestricted.
    async fn serve(&mut self) -> std::io::Result<()> {
        if let Some(user) = self.tls_identity.clone() {
            if self.shared.access.is_some()
                && !self.authenticated_by_certificate(&user)
                && !self.must_authenticate()
            {
                log::info!(
                    "a client certificate names {user}, who is in neither the authfile nor a [user …] section: connection closed"
                );
                return Ok(());
            }
        }
        if self.must_authenticate() && !self.authenticate().await? {
            return Ok(());
        }
        // Requests sent right behind the handshake.
        if !self.input.is_empty() && self.answer_input().await? {
            return Ok(());
        }
        let mut chunk = vec![0u8; READ_CHUNK];
        loop {
            // Over TLS, everything rustls has decrypted comes back here at
            // once; what does not fit in `chunk` comes back from the next
            // read without waiting for the socket (see `tls`).
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
            if self.answer_input().await? {
                return Ok(());
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

    /// Answers every whole request in the input buffer; true when the
    /// connection must close after them.
    async fn answer_input(&mut self) -> std::io::Result<bool> {
        loop {
            let mut batch = std::mem::take(&mut self.batch);
            let close = self.parse_batch(&mut batch);
            if batch.is_empty() && !close {
                self.batch = batch;
                return Ok(false);
            }
            self.answer(&mut batch).await?;
            // A deep pipeline's batch is not kept: the room for
            // MAX_BATCH pending replies, per connection, would be a
            // lasting cost of one burst.
            if batch.capacity() <= KEEP_BATCH {
                self.batch = batch;
            }
            if close {
                return Ok(true);
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
        let mut parsed = std::mem::take(&mut self.parsed);
        // Among few queues, each request is submitted as it is parsed.
        let defer = self.router.prefetch_pays();
        let mut used = 0;
        let mut close = false;
        let max_gets = (BATCH_GET_BYTES / self.shared.max_message_size.max(1)).max(16);
        let mut gets = 0;
        while batch.len() + parsed.len() < MAX_BATCH && gets < max_gets && self.skip == 0 {
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
                    if command == Command::Shutdown {
                        // Whether it is permitted may depend on a request
                        // before it (a login).
                        self.submit_parsed(&mut parsed, batch);
                    }
                    if command == Command::Shutdown
                        && self.shared.shutdown_enabled
                        && self.permitted(&command)
                    {
                        log::info!("shutdown requested by a client");
                        self.shared.shutdown_requested.store(true, Ordering::SeqCst);
                        close = true;
                        break;
                    }
                    if let Command::Get { keys, .. } = &command {
                        gets += keys.len();
                    }
                    if defer {
                        parsed.push(command);
                    } else if let Some(pending) = self.submit(command, None) {
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
                    self.submit_parsed(&mut parsed, batch);
                    batch.push(Pending::line(reject.line()));
                }
                Parsed::Fatal(line) => {
                    log::trace!(
                        "rejected request, connection closed ({line}): {}",
                        logging::escape(&self.input[used..])
                    );
                    self.submit_parsed(&mut parsed, batch);
                    batch.push(Pending::line(line));
                    close = true;
                    used = self.input.len();
                    break;
                }
            }
        }
        self.submit_parsed(&mut parsed, batch);
        self.parsed = parsed;
        self.input.drain(..used);
        close
    }

    /// Submits the requests `parsed` (emptying it), in order, pushing their
    /// pending replies onto `batch`. First the stores are asked to fetch
    /// what the requests' queues' lookups will read, all at once (see
    /// `Store::prefetch`): among many queues, each would otherwise wait
    /// for its own cold reads in turn. So among many queues a batch's
    /// requests are parsed first and submitted together.
    fn submit_parsed(&mut self, parsed: &mut Vec<Command>, batch: &mut Vec<Pending>) {
        if parsed.len() > 1 {
            let mut queues: SmallVec<[&[u8]; 64]> = SmallVec::new();
            for c in parsed.iter() {
                match c {
                    Command::Set { queue, .. } => queues.push(queue),
                    Command::Get { keys, .. } => queues.extend(keys.iter().map(|k| &k.queue[..])),
                    _ => {}
                }
            }
            self.router.prefetch(&queues);
        }
        for command in parsed.drain(..) {
            if let Some(pending) = self.submit(command, None) {
                batch.push(pending);
            }
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
            self.stream.flush().await?;
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
