//! Shard-per-core routing: which executor owns a queue, and how a request
//! for a queue owned elsewhere gets there and back.
//!
//! # Why this shape
//! Each queue belongs to exactly one storage shard,
//! `shard = fnv1a64(queue name up to its first +) mod S` ([`crate::manifest::shard_for`]), and shard `j` is
//! owned by executor `j mod N`. S is written into the data directory's
//! manifest when it is created and never changes, so restarting with another
//! `-t` moves shards between executors but never moves a queue between
//! shards. A queue's state is therefore touched by one thread only, with no
//! lock on the request path.
//!
//! A request for a shard owned by another executor travels over glommio's
//! shared-nothing channel mesh. [`Router::submit`] puts it on a local,
//! unbounded, in-order outbox at once (so a pipelined connection's requests
//! leave in request order and without waiting for each other), and a pump
//! task per peer moves the outbox into the bounded cross-thread channel. The
//! owner applies requests in the order they arrive, exactly as it applies
//! its own connections' requests, and sends each reply back tagged with the
//! id of the waiting future.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};

use glommio::channels::channel_mesh::{Receivers, Senders};
use glommio::channels::local_channel::{self, LocalReceiver, LocalSender};

use crate::manifest::shard_for;
use crate::stats::{QueueLines, QueueStat, StoreStats};
use crate::store::{LocalFuture, LogError, Message, Reader, Reply, Store, Take};
use crate::wake::Notify;

/// An operation on one storage shard; what crosses executors.
#[derive(Debug)]
pub enum Op {
    Set {
        queue: Vec<u8>,
        flags: u32,
        /// Unix seconds when it expires; 0 never.
        expires: u32,
        body: Vec<u8>,
        /// `crc32c(body)` when the connection computed it (a large body's:
        /// see [`Store::set_checked`]).
        body_crc: Option<u32>,
    },
    Get {
        queue: Vec<u8>,
        /// `get <q>/t=<ms>`: wait this long for a message.
        wait: Option<std::time::Duration>,
        /// What to do first with the message `reader` holds open on the
        /// queue (`/close`, `/abort`).
        settle: Option<Settle>,
        /// What to take then, if anything (`/open`, `/peek`, or a pop).
        take: Option<Take>,
        /// The connection asking …
        reader: Reader,
        /// … which may hold an open message on the queue (it asked for
        /// `/open` there since its last `/close` or `/abort`); if not, no
        /// need to look.
        may_hold: bool,
    },
    /// The connection `reader` went away: the message it holds open on
    /// `queue`, if any, goes back to the head.
    Abort {
        queue: Vec<u8>,
        reader: Reader,
    },
    Delete {
        queue: Vec<u8>,
    },
    Flush {
        queue: Vec<u8>,
    },
    FlushAll,
    /// Every queue's counters (`--metrics`).
    QueueStats,
    /// The first `n` queues' counters, by name (`stats`).
    QueueStatsFirst(usize),
    /// `stats queue`'s lines.
    QueueLines,
    Stats,
}

/// What a `get` does first with the connection's open message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Settle {
    /// `/close`: it is consumed.
    Confirm,
    /// `/abort`: it goes back to the head.
    Abort,
}

/// The result of an [`Op`].
#[derive(Debug)]
pub enum OpReply {
    /// `false`: the queue's limits refused it (`NOT_STORED`).
    Set(Result<bool, LogError>),
    Get(Result<Option<Message>, LogError>),
    /// A request the queue's state does not allow: this error line.
    Refused(&'static str),
    Delete(Result<bool, LogError>),
    Flushed(Result<(), LogError>),
    QueueStats(Vec<QueueStat>),
    QueueLines(QueueLines),
    /// Boxed: a few hundred bytes that every other reply would carry.
    Stats(Box<StoreStats>),
    /// The request never reached its shard (or its reply never came back).
    Unrouted(&'static str),
}

/// The future of an [`OpReply`]. A set or get on this executor's own
/// shard is the store's [`Reply`], with no allocation of its own (see
/// `store::reply`); everything else is boxed.
pub enum OpFuture {
    Set(Reply<bool>),
    /// `/close` first (its failure is the reply), then the take.
    Get {
        confirmed: Option<Reply<bool>>,
        taken: Option<Reply<Option<Message>>>,
    },
    Other(LocalFuture<OpReply>),
}

impl OpFuture {
    fn boxed(future: impl Future<Output = OpReply> + 'static) -> OpFuture {
        OpFuture::Other(Box::pin(future))
    }
}

impl Future for OpFuture {
    type Output = OpReply;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<OpReply> {
        match self.get_mut() {
            OpFuture::Set(done) => Pin::new(done).poll(cx).map(OpReply::Set),
            OpFuture::Get { confirmed, taken } => {
                if let Some(done) = confirmed {
                    match Pin::new(done).poll(cx) {
                        Poll::Pending => return Poll::Pending,
                        Poll::Ready(Err(e)) => return Poll::Ready(OpReply::Get(Err(e))),
                        Poll::Ready(Ok(_)) => *confirmed = None,
                    }
                }
                match taken {
                    Some(done) => Pin::new(done).poll(cx).map(OpReply::Get),
                    None => Poll::Ready(OpReply::Get(Ok(None))),
                }
            }
            OpFuture::Other(future) => future.as_mut().poll(cx),
        }
    }
}

/// What travels on the channel mesh.
#[derive(Debug)]
pub enum Envelope {
    Request {
        from: usize,
        id: u64,
        shard: u32,
        op: Op,
    },
    Reply {
        id: u64,
        reply: OpReply,
    },
    /// The requester of `id` no longer wants the reply (its client went
    /// away during a blocking get): stop waiting, take nothing.
    Cancel {
        from: usize,
        id: u64,
    },
}

/// Applies `op` to `store` now and returns the future of its reply.
fn apply(store: &Store, op: Op) -> OpFuture {
    match op {
        Op::Set {
            queue,
            flags,
            expires,
            body,
            body_crc,
        } => OpFuture::Set(store.set_checked(&queue, flags, expires, body, body_crc)),
        Op::Get {
            queue,
            wait,
            settle,
            take,
            reader,
            may_hold,
        } => {
            // One open message per connection and queue, and no plain get
            // beside it (as Kestrel): it would be a second message in the
            // connection's hands that the first one's `/close` cannot mean.
            let holds = may_hold && store.holds_open(&queue, reader);
            match take {
                Some(Take::Open(_)) if holds && settle.is_none() => {
                    return refused(ALREADY_OPEN);
                }
                Some(Take::Pop) if holds && settle.is_none() => return refused(OPEN_HERE),
                _ => {}
            }
            let confirmed = match settle {
                Some(Settle::Confirm) => Some(store.confirm(&queue, reader)),
                Some(Settle::Abort) => {
                    store.abort(&queue, reader);
                    None
                }
                None => None,
            };
            let taken = take.map(|take| match wait {
                Some(wait) => store.take_wait(&queue, take, wait),
                None => store.take(&queue, take),
            });
            OpFuture::Get { confirmed, taken }
        }
        Op::Abort { queue, reader } => {
            store.abort(&queue, reader);
            OpFuture::Get {
                confirmed: None,
                taken: None,
            }
        }
        Op::Delete { queue } => {
            let done = store.delete(&queue);
            OpFuture::boxed(async move { OpReply::Delete(done.await) })
        }
        Op::Flush { queue } => {
            let done = store.flush(&queue);
            OpFuture::boxed(async move { OpReply::Flushed(done.await.map(|_| ())) })
        }
        Op::FlushAll => {
            let done = store.flush_all();
            OpFuture::boxed(async move { OpReply::Flushed(done.await) })
        }
        Op::QueueStats => {
            let stats = store.queue_stats();
            OpFuture::boxed(async move { OpReply::QueueStats(stats) })
        }
        Op::QueueStatsFirst(n) => {
            let stats = store.queue_stats_first(n);
            OpFuture::boxed(async move { OpReply::QueueStats(stats) })
        }
        Op::QueueLines => {
            let lines = store.queue_lines();
            OpFuture::boxed(async move { OpReply::QueueLines(lines) })
        }
        Op::Stats => {
            let stats = Box::new(store.stats());
            OpFuture::boxed(async move { OpReply::Stats(stats) })
        }
    }
}

const ALREADY_OPEN: &str =
    "CLIENT_ERROR a message is already open on this queue: /close or /abort it first";
const OPEN_HERE: &str =
    "CLIENT_ERROR a message is open on this queue: /close or /abort it before a plain get";

fn refused(line: &'static str) -> OpFuture {
    OpFuture::boxed(async move { OpReply::Refused(line) })
}

/// One executor's view of all shards: its own stores, and outboxes to the
/// executors that own the others.
pub struct Router {
    me: usize,
    executors: usize,
    shards: u32,
    /// Indexed by shard number; `Some` for the shards this executor owns.
    local: Vec<Option<Store>>,
    outboxes: Vec<Option<LocalSender<Envelope>>>,
    waiting: RefCell<HashMap<u64, LocalSender<OpReply>>>,
    next_id: Cell<u64>,
    /// Requests from other executors that may wait long (blocking gets),
    /// by `(from, id)`: notified to cancel them.
    cancellable: RefCell<HashMap<(usize, u64), Rc<Notify>>>,
}

/// A request that waits for a message (a blocking get): the only kind a
/// requester cancels. Every other request runs to its end once submitted.
fn cancellable(op: &Op) -> bool {
    matches!(op, Op::Get { wait: Some(_), .. })
}

/// Sends [`Envelope::Cancel`] for a cancellable remote request whose reply
/// future was dropped before the reply came (it is still in `waiting`).
struct CancelOnDrop {
    router: Rc<Router>,
    owner: usize,
    id: u64,
}

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        if self.router.waiting.borrow_mut().remove(&self.id).is_some() {
            if let Some(outbox) = &self.router.outboxes[self.owner] {
                let _ = outbox.try_send(Envelope::Cancel {
                    from: self.router.me,
                    id: self.id,
                });
            }
        }
    }
}

impl Router {
    /// Builds the router of executor `me` and starts its channel tasks.
    /// `local` holds this executor's stores, indexed by shard number.
    pub fn start(
        me: usize,
        executors: usize,
        shards: u32,
        local: Vec<Option<Store>>,
        mesh: Option<(Senders<Envelope>, Receivers<Envelope>)>,
    ) -> Rc<Router> {
        let mut outboxes: Vec<Option<LocalSender<Envelope>>> =
            (0..executors).map(|_| None).collect();
        let mut inboxes = Vec::new();
        if let Some((senders, receivers)) = mesh {
            let senders = Rc::new(senders);
            for (peer, outbox) in outboxes.iter_mut().enumerate() {
                if peer == me {
                    continue;
                }
                let (tx, rx) = local_channel::new_unbounded();
                *outbox = Some(tx);
                glommio::spawn_local(pump(rx, senders.clone(), peer)).detach();
            }
            inboxes.push(receivers);
        }
        let router = Rc::new(Router {
            me,
            executors,
            shards,
            local,
            outboxes,
            waiting: RefCell::new(HashMap::new()),
            next_id: Cell::new(0),
            cancellable: RefCell::new(HashMap::new()),
        });
        for mut receivers in inboxes {
            for (_peer, inbox) in receivers.streams() {
                let router = router.clone();
                glommio::spawn_local(async move {
                    while let Some(envelope) = inbox.recv().await {
                        router.receive(envelope);
                    }
                })
                .detach();
            }
        }
        router
    }

    pub fn shards(&self) -> u32 {
        self.shards
    }

    /// The shard that owns `queue`.
    pub fn shard_of(&self, queue: &[u8]) -> u32 {
        shard_for(queue, self.shards)
    }

    /// Starts fetching what the requests for `queues` will read, on the
    /// stores of this executor that hold them (see [`Store::prefetch`]).
    pub fn prefetch(&self, queues: &[&[u8]]) {
        for (shard, store) in self.local.iter().enumerate() {
            if let Some(store) = store {
                let mine = |q: &&[u8]| self.shards == 1 || self.shard_of(q) as usize == shard;
                store.prefetch(queues.iter().copied().filter(mine));
            }
        }
    }

    /// Whether prefetching pays on any of this executor's stores (see
    /// [`Store::prefetch_pays`]).
    pub fn prefetch_pays(&self) -> bool {
        self.local_stores().any(Store::prefetch_pays)
    }

    /// This executor's own stores.
    pub fn local_stores(&self) -> impl Iterator<Item = &Store> {
        self.local.iter().flatten()
    }

    /// Lets this executor's stores set messages into any queue (`expire_to`
    /// moves expired messages to a queue that may live on another shard).
    /// The stores hold the router weakly: it owns them.
    pub fn give_stores_a_way_out(self: &Rc<Self>) {
        for store in self.local_stores() {
            let router = Rc::downgrade(self);
            store.set_forward(Rc::new(move |queue, flags, body| {
                let Some(router) = router.upgrade() else {
                    return Box::pin(async { Err(LogError::Closed) });
                };
                let shard = router.shard_of(&queue);
                let op = Op::Set {
                    queue,
                    flags,
                    expires: 0,
                    body,
                    body_crc: None,
                };
                let done = router.submit(shard, op);
                Box::pin(async move {
                    match done.await {
                        OpReply::Set(r) => r,
                        _ => Err(LogError::Closed),
                    }
                })
            }));
        }
    }

    /// Submits `op()` to every shard.
    pub fn each_shard(self: &Rc<Self>, op: impl Fn() -> Op) -> Vec<OpFuture> {
        (0..self.shards)
            .map(|shard| self.submit(shard, op()))
            .collect()
    }

    /// Asks every shard for its counters and every queue's: how
    /// `--metrics` gathers its numbers.
    pub fn ask_stats(self: &Rc<Self>) -> (Vec<OpFuture>, Vec<OpFuture>) {
        (
            self.each_shard(|| Op::Stats),
            self.each_shard(|| Op::QueueStats),
        )
    }

    /// Asks every shard for what `stats` reports: its counters, and the
    /// first `queues` of its queues by name (of which the first `queues`
    /// over all shards are listed; see [`all_stats`]).
    pub fn ask_stats_first(self: &Rc<Self>, queues: usize) -> (Vec<OpFuture>, Vec<OpFuture>) {
        (
            self.each_shard(|| Op::Stats),
            self.each_shard(|| Op::QueueStatsFirst(queues)),
        )
    }

    /// Asks every shard for its `stats queue` lines (see
    /// [`crate::stats::write_queue_lines`]).
    pub fn ask_queue_lines(self: &Rc<Self>) -> Vec<OpFuture> {
        self.each_shard(|| Op::QueueLines)
    }

    /// Applies `op` to `shard` — here, or on its owner — in submission order,
    /// and returns the future of the reply.
    pub fn submit(self: &Rc<Self>, shard: u32, op: Op) -> OpFuture {
        if let Some(Some(store)) = self.local.get(shard as usize) {
            return apply(store, op);
        }
        let owner = shard as usize % self.executors;
        let id = self.next_id.get();
        self.next_id.set(id + 1);
        let (tx, rx) = local_channel::new_bounded(1);
        self.waiting.borrow_mut().insert(id, tx);
        let guard = cancellable(&op).then(|| CancelOnDrop {
            router: self.clone(),
            owner,
            id,
        });
        let sent = self.outboxes[owner].as_ref().is_some_and(|outbox| {
            outbox
                .try_send(Envelope::Request {
                    from: self.me,
                    id,
                    shard,
                    op,
                })
                .is_ok()
        });
        if !sent {
            // Out of `waiting` first, so the guard sends no cancel.
            self.waiting.borrow_mut().remove(&id);
            drop(guard);
            return OpFuture::boxed(async { OpReply::Unrouted("shard owner unreachable") });
        }
        OpFuture::boxed(async move {
            // Dropping this future unanswered cancels the request; once
            // the reply came, `receive` took the id out of `waiting`.
            let _guard = guard;
            rx.recv()
                .await
                .unwrap_or(OpReply::Unrouted("shard owner went away"))
        })
    }

    fn receive(self: &Rc<Self>, envelope: Envelope) {
        match envelope {
            Envelope::Request {
                from,
                id,
                shard,
                op,
            } => {
                let cancel = cancellable(&op).then(|| {
                    let cancel = Rc::new(Notify::default());
                    self.cancellable
                        .borrow_mut()
                        .insert((from, id), cancel.clone());
                    cancel
                });
                let done = match self.local.get(shard as usize) {
                    Some(Some(store)) => apply(store, op),
                    _ => OpFuture::boxed(async {
                        OpReply::Unrouted("request routed to the wrong executor")
                    }),
                };
                let router = self.clone();
                glommio::spawn_local(async move {
                    let reply = match &cancel {
                        None => Some(done.await),
                        // Cancelled: `done` is dropped unfinished, which
                        // takes the blocking get out of its line.
                        // The cancel is polled first: once it came, the get
                        // takes nothing more (a message it already opened
                        // goes back with the `Abort` the connection sends
                        // after its cancel).
                        Some(cancel) => {
                            futures_lite::future::or(
                                async {
                                    cancel.wait().await;
                                    None
                                },
                                async { Some(done.await) },
                            )
                            .await
                        }
                    };
                    if cancel.is_some() {
                        router.cancellable.borrow_mut().remove(&(from, id));
                    }
                    if let (Some(reply), Some(Some(outbox))) = (reply, router.outboxes.get(from)) {
                        let _ = outbox.try_send(Envelope::Reply { id, reply });
                    }
                })
                .detach();
            }
            Envelope::Cancel { from, id } => {
                if let Some(cancel) = self.cancellable.borrow_mut().remove(&(from, id)) {
                    cancel.notify();
                }
            }
            Envelope::Reply { id, reply } => {
                if let Some(waiter) = self.waiting.borrow_mut().remove(&id) {
                    let _ = waiter.try_send(reply);
                }
            }
        }
    }
}

/// The answers to [`Router::ask_stats`]: the shards' counters summed, and
/// every queue sorted by name.
pub async fn all_stats(
    general: Vec<OpFuture>,
    queues: Vec<OpFuture>,
) -> (StoreStats, Vec<QueueStat>) {
    let mut total = StoreStats::default();
    for part in general {
        if let OpReply::Stats(s) = part.await {
            total.add(&s);
        }
    }
    (total, all_queue_stats(queues).await)
}

/// Every shard's queues, sorted by name.
pub async fn all_queue_stats(parts: Vec<OpFuture>) -> Vec<QueueStat> {
    let mut all = Vec::new();
    for part in parts {
        if let OpReply::QueueStats(list) = part.await {
            all.extend(list);
        }
    }
    all.sort_by(|a, b| a.name.cmp(&b.name));
    all
}

/// Every shard's `stats queue` lines (a shard that did not answer has
/// none).
pub async fn all_queue_lines(parts: Vec<OpFuture>) -> Vec<QueueLines> {
    let mut all = Vec::with_capacity(parts.len());
    for part in parts {
        if let OpReply::QueueLines(lines) = part.await {
            all.push(lines);
        }
    }
    all
}

/// Moves one outbox into the cross-thread channel to `peer`, in order.
async fn pump(outbox: LocalReceiver<Envelope>, senders: Rc<Senders<Envelope>>, peer: usize) {
    while let Some(envelope) = outbox.recv().await {
        if senders.send_to(peer, envelope).await.is_err() {
            break;
        }
    }
}
