//! Shard-per-core routing: which executor owns a queue, and how a request
//! for a queue owned elsewhere gets there and back.
//!
//! # Why this shape
//! Each queue belongs to exactly one storage shard,
//! `shard = fnv1a64(queue name up to its first +) mod S` ([`shard_for`]), and shard `j` is
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
use std::fs;
use std::future::Future;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};

use glommio::channels::channel_mesh::{Receivers, Senders};
use glommio::channels::local_channel::{self, LocalReceiver, LocalSender};

use crate::log::notify::Notify;
use crate::store::{
    LocalFuture, LogError, Message, QueueStat, Reader, Reply, Store, StoreStats, Take,
};

/// The queue → shard hash: FNV-1a, 64 bit, of the name up to its first
/// `+`, so a fan-out queue (`<parent>+<child>`) lives beside its parent and
/// gets its copies in the parent's own append. It decides where every
/// queue's data lives on disk, so it **must never change** between
/// versions (it did once, at format 3, for names with a `+`; see
/// [`FORMAT`]).
pub fn shard_for(queue: &[u8], shards: u32) -> u32 {
    let family = queue.split(|&b| b == b'+').next().unwrap_or(queue);
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in family {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    (hash % u64::from(shards)) as u32
}

/// The directory of storage shard `shard`.
pub fn shard_dir(data_dir: &Path, shard: u32) -> PathBuf {
    data_dir.join(format!("shard-{shard:03}"))
}

/// The manifest's file name in the data directory.
pub const MANIFEST: &str = "MANIFEST";
const MANIFEST_MAGIC: &str = "mcq-manifest";
/// The data directory's format. 2: logs may hold `Confirmed` records and
/// message expiry, which an mcqd of format 1 would take for corruption.
/// 3: a queue's shard is the hash of its name up to the first `+` (fan-out),
/// so a queue with a `+` made by an older mcqd may live in another shard
/// than this one looks in. A directory is upgraded once its shards opened
/// and every queue was found where the hash says ([`upgrade_manifest`]);
/// an older mcqd then refuses it. 4: logs may hold `Region` records (large
/// bodies written out of line, see `log::region`), which an mcqd of
/// format 3 would take for corruption; nothing else changed, so a format 3
/// directory is upgraded as it is.
pub const FORMAT: u32 = 4;

/// The format from which a name with a `+` hashes by its part before the
/// `+` (fan-out queues).
pub const FAN_OUT_FORMAT: u32 = 3;

/// Reads `(format, shards)` from `<data_dir>/MANIFEST`, or creates the data
/// directory with `shards_if_new` shards (in [`FORMAT`]). The manifest is
/// written to a temporary file, fsync'd and renamed, and the directory
/// fsync'd, so a crash never leaves a half-written one. A newer format than
/// [`FORMAT`] is refused; an older one is left for [`upgrade_manifest`].
pub fn open_manifest(data_dir: &Path, shards_if_new: u32) -> io::Result<(u32, u32)> {
    match read_manifest(data_dir)? {
        Some(found) => Ok(found),
        None => {
            fs::create_dir_all(data_dir)
                .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", data_dir.display())))?;
            write_manifest(data_dir, shards_if_new).map_err(|e| {
                let path = data_dir.join(MANIFEST);
                io::Error::new(e.kind(), format!("cannot write {}: {e}", path.display()))
            })?;
            Ok((FORMAT, shards_if_new))
        }
    }
}

/// Reads `(format, shards)` from `<data_dir>/MANIFEST` without touching
/// anything; `None` when there is none. A newer format than [`FORMAT`] or
/// text that is not a manifest is an error naming the file.
pub fn read_manifest(data_dir: &Path) -> io::Result<Option<(u32, u32)>> {
    let path = data_dir.join(MANIFEST);
    let text = match fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io::Error::new(e.kind(), format!("{}: {e}", path.display()))),
    };
    let (format, shards) = parse_manifest(&text).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{}: not an mcq manifest", path.display()),
        )
    })?;
    if format > FORMAT {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "{}: data directory format {format} is newer than this mcqd reads ({FORMAT}); run a newer mcqd",
                path.display()
            ),
        ));
    }
    Ok(Some((format, shards)))
}

/// Rewrites the manifest of an older format as [`FORMAT`]: once every shard
/// opened and holds only queues that hash to it, and before anything is
/// written that the older format cannot read.
pub fn upgrade_manifest(data_dir: &Path, shards: u32) -> io::Result<()> {
    write_manifest(data_dir, shards)
}

/// Checks that every queue in shard `shard` hashes to it. A queue with a
/// `+` in its name made before format 3 may not: that directory needs the
/// queue emptied with the older mcqd first.
pub fn check_queue_homes(shard: u32, shards: u32, names: &[Vec<u8>]) -> io::Result<()> {
    for name in names {
        let home = shard_for(name, shards);
        if home != shard {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "queue {} is stored in shard {shard} but now belongs to shard {home}: a name with a `+` hashes by its part before the `+` since format {FAN_OUT_FORMAT} (fan-out queues). Drain and delete it with the mcqd that made it, then start this one",
                    String::from_utf8_lossy(name)
                ),
            ));
        }
    }
    Ok(())
}

fn write_manifest(data_dir: &Path, shards: u32) -> io::Result<()> {
    let tmp = data_dir.join("MANIFEST.tmp");
    let mut file = fs::File::create(&tmp)?;
    write!(file, "{MANIFEST_MAGIC} {FORMAT}\nshards {shards}\n")?;
    file.sync_all()?;
    fs::rename(&tmp, data_dir.join(MANIFEST))?;
    fs::File::open(data_dir)?.sync_all()
}

/// `(format, shards)` of a manifest's text.
fn parse_manifest(text: &str) -> Option<(u32, u32)> {
    let mut lines = text.lines();
    let format = lines
        .next()?
        .strip_prefix(MANIFEST_MAGIC)?
        .strip_prefix(' ')?
        .parse()
        .ok()?;
    let shards = lines
        .find_map(|l| l.strip_prefix("shards "))?
        .trim()
        .parse()
        .ok()
        .filter(|&s| s > 0)?;
    Some((format, shards))
}

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
    QueueStats,
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
    Stats(StoreStats),
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
        Op::Stats => {
            let stats = store.stats();
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

/// Moves one outbox into the cross-thread channel to `peer`, in order.
async fn pump(outbox: LocalReceiver<Envelope>, senders: Rc<Senders<Envelope>>, peer: usize) {
    while let Some(envelope) = outbox.recv().await {
        if senders.send_to(peer, envelope).await.is_err() {
            break;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hash_never_changes() {
        // These values are part of the on-disk format: a queue must map to
        // the same shard in every version.
        assert_eq!(
            shard_for(b"", 1_000_003),
            (0xcbf2_9ce4_8422_2325u64 % 1_000_003) as u32
        );
        assert_eq!(
            shard_for(b"q4", u32::MAX),
            (0x08d2_0e07_b572_cc18u64 % u64::from(u32::MAX)) as u32
        );
        assert_eq!(
            shard_for(b"a", u32::MAX),
            (0xaf63dc4c8601ec8cu64 % u64::from(u32::MAX)) as u32
        );
        for shards in 1..10 {
            assert!(shard_for(b"anything", shards) < shards);
        }
        // A fan-out queue lives with its parent.
        for shards in [2, 7, 64] {
            for parent in [&b"a"[..], b"q4", b"jobs"] {
                let mut child = parent.to_vec();
                child.extend_from_slice(b"+audit+x");
                assert_eq!(shard_for(&child, shards), shard_for(parent, shards));
            }
        }
        assert_eq!(shard_for(b"+x", u32::MAX), shard_for(b"", u32::MAX));
    }

    #[test]
    fn manifest_round_trip() {
        let dir = std::env::temp_dir().join(format!("mcq-manifest-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        assert_eq!(open_manifest(&dir, 3).unwrap(), (FORMAT, 3));
        assert_eq!(
            open_manifest(&dir, 8).unwrap(),
            (FORMAT, 3),
            "existing manifest wins"
        );
        let text = fs::read_to_string(dir.join(MANIFEST)).unwrap();
        assert_eq!(text, format!("mcq-manifest {FORMAT}\nshards 3\n"));
        // Format 1 is read as it is, and upgraded on request; a newer
        // format is refused.
        fs::write(dir.join(MANIFEST), "mcq-manifest 1\nshards 3\n").unwrap();
        assert_eq!(open_manifest(&dir, 8).unwrap(), (1, 3));
        upgrade_manifest(&dir, 3).unwrap();
        assert_eq!(fs::read_to_string(dir.join(MANIFEST)).unwrap(), text);
        fs::write(dir.join(MANIFEST), "mcq-manifest 99\nshards 3\n").unwrap();
        let e = open_manifest(&dir, 3).unwrap_err();
        assert!(e.to_string().contains("newer"), "{e}");
        fs::write(dir.join(MANIFEST), "garbage").unwrap();
        assert!(open_manifest(&dir, 3).is_err());
        fs::remove_dir_all(&dir).unwrap();
    }
}
