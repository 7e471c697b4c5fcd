//! Crash-point explorer: cuts power, or injects a fault, at every I/O
//! operation of a workload, recovers, and checks the queues against what the
//! clients were told.
//!
//! # What it guards against
//! Acknowledging a request before its record is durable (a missing
//! fdatasync, or an ack that overtakes it), a new segment whose directory
//! entry was never synced, recovery that brings back a popped message or a
//! deleted queue, loses an acknowledged set, reorders a queue or serves a
//! torn body, recovery that is itself unsafe to crash in, and error paths
//! that panic, hang or acknowledge after the shard failed. Each of these
//! needs the power to go at one particular operation out of hundreds, which
//! a kill -9 test hits by luck at best.
//!
//! # How
//! The store runs on a [`SimDisk`], where a run is a pure function of the
//! seed, so "operation k" means the same thing in every run. (Every other
//! seed has the disk deliver results after a few trips through the
//! executor, so the store's tasks interleave as on a real device.) A first
//! run counts the operations; then, for every cut point k, the workload
//! runs again with the power gone from operation k on, and the images a
//! crash could leave are recovered and drained:
//! - `sync always`: power-cut images, which keep the durable state plus
//!   part of the device's volatile cache: all of it, none, and either a
//!   seeded prefix whose last write may be torn at a sector or a seeded
//!   subset (a device that writes its cache back out of order);
//! - `sync interval`: the kill -9 image (everything that completed), since
//!   interval mode promises nothing across a power cut.
//!
//! For half the cuts, the last image is also crashed again after its drain
//! (the drain's pops must hold, and so must what recovery rewrote) and,
//! from a fresh copy, cut again at a seeded operation of its own recovery.
//! The fault test injects EIO, ENOSPC or a short write into one write,
//! fdatasync, create, preallocate, rename, directory fsync or truncate of a
//! run, lets the run finish, and checks the replies and the power-cut
//! images the same way; the lasting-fault test does the same with a
//! condition that holds from some operation on (a full disk, failing
//! directory operations, a dead device), which also catches a store that
//! spins or stops serving consumers.
//!
//! # The model
//! A store applies each request to its memory in call order: when called,
//! or, if it holds requests while a new segment is made ready, when the
//! held request's turn comes. The clients log every request with that
//! effect (read from `queue_stats` around the call, and around each poll of
//! a held request) and its outcome. Requests are acknowledged strictly in
//! log order, so if request M is the last acknowledged one, every request
//! issued up to M is durable, whether or not its own reply made it; the
//! requests after M are in doubt, each independently durable or not. The
//! recovered queues must then be explainable: per queue, the surviving
//! incarnation (a delete and a re-create make a new one), its counters
//! between what the durable requests force and what all requests allow,
//! and its messages exactly the sets between its recovered head and tail,
//! every durable one present, in order, byte for byte, with counters that
//! agree with what drains.
//!
//! # Running it
//! The default run takes under half a minute in a debug build. Failures
//! print a reproduction: `MCQ_CRASH_SEED` runs one workload seed,
//! `MCQ_CRASH_CUT` one cut point (or fault case) of it; `MCQ_CRASH_DUMP=1`
//! prints the request log and the volatile cache of a failing case, `=2`
//! also every segment's records. `MCQ_CRASH_ITERS=n` runs n times as many
//! seeds and fault cases, for soaks.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mcqd::disk::sim::{Fault, Op, SimDisk, SplitMix64, Trigger};
use mcqd::log::error::LogError;
use mcqd::store::{HeldEvent, Message, Store, StoreConfig, SyncMode};

const SHARD: &str = "/data/shard-000";
const QUEUES: [&str; 3] = ["alpha", "beta", "gamma"];
/// Bodies this large are written out of line (`mcqd::log::region`): about
/// a quarter of the sets here, so that regions are cut, torn and failed as
/// often as records are.
const REGION_MIN: usize = 6000;
const SEGMENT: u64 = 64 << 10;
const CLIENTS: usize = 4;
const PIPELINES: usize = 18;
/// A run that takes this long has hung.
const WATCHDOG: Duration = Duration::from_secs(30);

fn env_u64(name: &str) -> Option<u64> {
    let v = std::env::var(name).ok()?;
    Some(
        v.parse()
            .unwrap_or_else(|_| panic!("{name}={v}: not a number")),
    )
}

/// How a seed runs: the sync mode, and whether the disk delivers results
/// after seeded trips through the executor (so the store's tasks
/// interleave as on a real device) or at once.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Mode {
    sync: SyncMode,
    delays: Option<u64>,
    /// Files behave as opened O_DSYNC (production's `--sync always`).
    dsync: bool,
}

impl Mode {
    /// Every other seed runs with delays; with `always`, every other pair
    /// of seeds with O_DSYNC files (as production) and the others with
    /// write + fdatasync (the path every other mode and a sealed segment
    /// take).
    fn new(sync: SyncMode, seed: u64) -> Mode {
        Mode {
            sync,
            delays: seed.is_multiple_of(2).then_some(seed),
            dsync: sync == SyncMode::Always && (seed / 2) % 2 == 1,
        }
    }
}

/// Opens a store on `disk` as `mode` says. The queues keep a window of 4
/// messages, so the workload's queues are paged out of memory as segments
/// are indexed and paged in from the index files as they drain (with the
/// real window of 1,024 they never would be).
async fn open(mode: Mode, disk: &SimDisk) -> std::io::Result<Store> {
    mcqd::queue::set_window(4);
    if let Some(seed) = mode.delays {
        disk.set_delays(seed, 2);
    }
    disk.set_durable_writes(mode.dsync);
    Store::open_on(Rc::new(disk.clone()), config(mode)).await
}

fn config(mode: Mode) -> StoreConfig {
    StoreConfig {
        dir: PathBuf::from(SHARD),
        sync: mode.sync,
        segment_size: SEGMENT,
        max_disk: None,
        cache_bytes: 64 << 10,
        readahead_bytes: mcqd::log::readahead::DEFAULT_BUDGET,
        limits: Default::default(),
        region_min: REGION_MIN,
    }
}

fn run_local<F, Fut>(f: F)
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = ()> + 'static,
{
    glommio::LocalExecutorBuilder::default()
        .spawn(f)
        .unwrap()
        .join()
        .unwrap();
}

/// Fails the test if `f` does not finish within the watchdog, when the
/// executor is idle (a lost wake-up).
async fn watched<T>(what: &str, f: impl Future<Output = T>) -> T {
    futures_lite::future::or(f, hung(what)).await
}

async fn hung<T>(what: &str) -> T {
    glommio::timer::sleep(WATCHDOG).await;
    panic!("{what}: hung for {WATCHDOG:?}");
}

/// Ends the process when one case runs longer than the watchdog while the
/// executor is busy. A timer cannot catch that: the simulated disk never
/// makes the executor wait, so a task that loops starves every timer.
struct Watchdog(Arc<Mutex<(String, Instant)>>);

impl Watchdog {
    fn start() -> Watchdog {
        let slot = Arc::new(Mutex::new((String::new(), Instant::now())));
        let watched = slot.clone();
        std::thread::spawn(move || {
            // Ends with the test: it holds the only other reference.
            while Arc::strong_count(&watched) > 1 {
                std::thread::sleep(Duration::from_millis(200));
                let (what, since) = &*watched.lock().unwrap();
                if since.elapsed() > WATCHDOG {
                    eprintln!("HUNG for {WATCHDOG:?} (busy executor): {what}");
                    std::process::exit(101);
                }
            }
        });
        Watchdog(slot)
    }

    /// A new case starts.
    fn case(&self, what: &str) {
        *self.0.lock().unwrap() = (what.to_string(), Instant::now());
    }
}

// ---------------------------------------------------------------- workload

#[derive(Clone, Copy, Debug)]
enum Step {
    Set { q: usize, len: usize },
    Get { q: usize },
    Delete { q: usize },
}

/// Per client, a list of pipelines: requests issued back to back, then
/// awaited in order (as a connection does), so group commits batch them.
type Script = Vec<Vec<Step>>;

fn workload(seed: u64) -> Vec<Script> {
    let mut rng = SplitMix64(seed);
    (0..CLIENTS)
        .map(|_| {
            (0..PIPELINES)
                .map(|_| {
                    let n = 1 + rng.below(3) as usize;
                    (0..n).map(|_| step(&mut rng)).collect()
                })
                .collect()
        })
        .collect()
}

fn step(rng: &mut SplitMix64) -> Step {
    let q = rng.below(QUEUES.len() as u64) as usize;
    match rng.below(100) {
        0..=54 => {
            let len = match rng.below(100) {
                0..=64 => 16 + rng.below(300),
                65..=84 => 300 + rng.below(6000),
                85..=96 => 6000 + rng.below(14000),
                // Near the segment size: these roll a segment each, and
                // the largest do not fit even a new one (out of space).
                _ => 40000 + rng.below(20000),
            };
            Step::Set {
                q,
                len: len as usize,
            }
        }
        55..=96 => Step::Get { q },
        _ => Step::Delete { q },
    }
}

/// A message body: its id, then bytes derived from it, so any body read
/// back names the set it came from and proves it is whole.
fn body(id: u64, len: usize) -> Vec<u8> {
    let mut b = id.to_le_bytes().to_vec();
    let mut rng = SplitMix64(id ^ 0x5eed);
    while b.len() < len {
        b.extend_from_slice(&rng.next().to_le_bytes());
    }
    b.truncate(len);
    b
}

fn flags(id: u64) -> u32 {
    (id as u32).wrapping_mul(2_654_435_761)
}

// ----------------------------------------------------------------- history

#[derive(Clone, Debug, PartialEq, Eq)]
enum Effect {
    /// Refused before it touched the queue (or nothing to pop / delete).
    None,
    Set {
        inc: usize,
        seq: u64,
    },
    Get {
        inc: usize,
        seq: u64,
    },
    Delete {
        inc: usize,
    },
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Outcome {
    Pending,
    Ok,
    Err(LogError),
}

#[derive(Clone, Debug)]
struct Req {
    step: Step,
    effect: Effect,
    outcome: Outcome,
    /// Issued after some request had failed with `LogError::Failed`: the
    /// shard has stopped and must not acknowledge it.
    after_failure: bool,
}

/// One life of a queue name, from the set that created it to its delete.
#[derive(Clone, Debug, Default)]
struct Inc {
    /// Request indices of its sets, by seq.
    sets: Vec<usize>,
    /// Request indices of its pops, by the seq they popped.
    gets: Vec<usize>,
    deleted: Option<usize>,
}

#[derive(Default)]
struct History {
    reqs: Vec<Req>,
    incs: Vec<Vec<Inc>>,
    failed_seen: bool,
    /// Requests the store holds, oldest first (they apply in this order),
    /// with their queue's counters when the oldest started to apply.
    held: std::collections::VecDeque<(usize, usize)>,
    applying: Option<Option<(u64, u64)>>,
    /// `HeldEvent::Held` events seen so far.
    held_events: usize,
    /// Replies that contradict the store's own memory (wrong message, ...).
    violations: Vec<String>,
}

type Reply = Result<Option<Message>, LogError>;
type Pending = Pin<Box<dyn Future<Output = Reply>>>;

impl History {
    fn new() -> History {
        History {
            incs: vec![Vec::new(); QUEUES.len()],
            ..History::default()
        }
    }

    /// The last acknowledged request that changed something.
    fn last_acked(&self) -> Option<usize> {
        self.reqs
            .iter()
            .rposition(|r| r.effect != Effect::None && r.outcome == Outcome::Ok)
    }

    fn describe(&self, i: usize) -> String {
        let r = &self.reqs[i];
        format!("req #{i} {:?} -> {:?}, {:?}", r.step, r.effect, r.outcome)
    }
}

fn counters(store: &Store, q: usize) -> Option<(u64, u64)> {
    store
        .queue_stats()
        .into_iter()
        .find(|s| s.name == QUEUES[q].as_bytes())
        .map(|s| (s.enqueued, s.dequeued))
}

/// Issues one request and logs its effect on the store's memory: at once,
/// or, for a request the store holds until a new segment is ready, when
/// the store says it applies it ([`watch_held`]).
fn issue(store: &Store, h: &Rc<RefCell<History>>, step: Step) -> (usize, Pending) {
    let q = match step {
        Step::Set { q, .. } | Step::Get { q } | Step::Delete { q } => q,
    };
    let i = h.borrow().reqs.len();
    let held_before = h.borrow().held_events;
    let before = counters(store, q);
    let fut: Pending = match step {
        Step::Set { len, .. } => {
            let f = store.set(QUEUES[q].as_bytes(), flags(i as u64), body(i as u64, len));
            Box::pin(async move { f.await.map(|_| None) })
        }
        Step::Get { .. } => Box::pin(store.get(QUEUES[q].as_bytes())),
        Step::Delete { .. } => {
            let f = store.delete(QUEUES[q].as_bytes());
            Box::pin(async move { f.await.map(|_| None) })
        }
    };
    let after = counters(store, q);
    {
        let mut hb = h.borrow_mut();
        let after_failure = hb.failed_seen;
        hb.reqs.push(Req {
            step,
            effect: Effect::None,
            outcome: Outcome::Pending,
            after_failure,
        });
        if hb.held_events > held_before {
            hb.held.push_back((i, q));
            return (i, fut);
        }
    }
    applied(h, i, before, after);
    (i, fut)
}

/// Attributes each change a held request makes to it: the store tells when
/// the oldest held request applies.
fn watch_held(store: &Store, h: &Rc<RefCell<History>>) {
    let (s, h) = (store.clone(), h.clone());
    store.observe_held(Rc::new(move |event| match event {
        HeldEvent::Held => h.borrow_mut().held_events += 1,
        HeldEvent::Applying => {
            let q = h.borrow().held.front().map(|&(_, q)| q);
            let before = q.and_then(|q| counters(&s, q));
            h.borrow_mut().applying = Some(before);
        }
        HeldEvent::Applied => {
            let (front, before) = {
                let mut hb = h.borrow_mut();
                (hb.held.pop_front(), hb.applying.take().flatten())
            };
            if let Some((i, q)) = front {
                applied(&h, i, before, counters(&s, q));
            }
        }
        HeldEvent::Dropped => {
            h.borrow_mut().held.pop_front();
        }
    }));
}

/// Logs the effect of request `i` if the queue's counters show one.
fn applied(
    h: &RefCell<History>,
    i: usize,
    before: Option<(u64, u64)>,
    after: Option<(u64, u64)>,
) -> bool {
    if before == after {
        return false;
    }
    let mut h = h.borrow_mut();
    let step = h.reqs[i].step;
    let q = match step {
        Step::Set { q, .. } | Step::Get { q } | Step::Delete { q } => q,
    };
    let incs = &mut h.incs[q];
    let effect = match (step, before, after) {
        (Step::Set { .. }, None, Some((1, 0))) => {
            incs.push(Inc {
                sets: vec![i],
                ..Inc::default()
            });
            Effect::Set {
                inc: incs.len() - 1,
                seq: 0,
            }
        }
        (Step::Set { .. }, Some((t, h0)), Some((t1, h1))) if t1 == t + 1 && h1 == h0 => {
            let inc = incs.len() - 1;
            incs[inc].sets.push(i);
            Effect::Set { inc, seq: t }
        }
        (Step::Get { .. }, Some((t, h0)), Some((t1, h1))) if t1 == t && h1 == h0 + 1 => {
            let inc = incs.len() - 1;
            incs[inc].gets.push(i);
            assert_eq!(incs[inc].gets.len() as u64, h1, "pops are contiguous");
            Effect::Get { inc, seq: h0 }
        }
        (Step::Delete { .. }, Some(_), None) => {
            let inc = incs.len() - 1;
            incs[inc].deleted = Some(i);
            Effect::Delete { inc }
        }
        (s, b, a) => panic!("req #{i} {s:?} changed the queue's counters from {b:?} to {a:?}"),
    };
    h.reqs[i].effect = effect;
    true
}

/// Logs a request's reply and checks it against the store's memory.
fn complete(h: &RefCell<History>, i: usize, reply: Reply) {
    let mut h = h.borrow_mut();
    let effect = h.reqs[i].effect.clone();
    let step = h.reqs[i].step;
    let mut bad = None;
    match (&reply, &effect) {
        (Err(LogError::Failed(_)), _) => h.failed_seen = true,
        (Ok(Some(m)), Effect::Get { inc, seq }) => {
            let q = match step {
                Step::Get { q } => q,
                _ => unreachable!(),
            };
            let set = h.incs[q][*inc].sets[*seq as usize];
            let Step::Set { len, .. } = h.reqs[set].step else {
                unreachable!()
            };
            if m.seq != *seq || m.body != body(set as u64, len) || m.flags != flags(set as u64) {
                bad = Some(format!(
                    "get returned seq {} ({} bytes, id {:?}), popped seq {seq} (set #{set})",
                    m.seq,
                    m.body.len(),
                    id_of(&m.body)
                ));
            }
        }
        (Ok(Some(_)), _) => bad = Some("get returned a message but popped none".into()),
        (Ok(None), Effect::Get { .. }) => {
            bad = Some("get popped a message but returned none".into())
        }
        _ => {}
    }
    let r = &mut h.reqs[i];
    r.outcome = match reply {
        Ok(_) => Outcome::Ok,
        Err(e) => Outcome::Err(e),
    };
    if r.after_failure && r.outcome == Outcome::Ok && r.effect != Effect::None {
        bad = Some("acknowledged after the shard had failed".into());
    }
    if let Some(bad) = bad {
        let d = h.describe(i);
        h.violations.push(format!("{d}: {bad}"));
    }
}

fn id_of(body: &[u8]) -> Option<u64> {
    Some(u64::from_le_bytes(body.get(..8)?.try_into().ok()?))
}

async fn client(store: Store, h: Rc<RefCell<History>>, script: Script) {
    for pipeline in script {
        let pending: Vec<_> = pipeline.iter().map(|s| issue(&store, &h, *s)).collect();
        for (i, fut) in pending {
            let reply = fut.await;
            complete(&h, i, reply);
        }
    }
}

/// One run of the workload on `disk`; the store is crashed at the end.
async fn run(scripts: &[Script], mode: Mode, disk: &SimDisk) -> History {
    let h = Rc::new(RefCell::new(History::new()));
    let Ok(store) = open(mode, disk).await else {
        return Rc::try_unwrap(h).ok().unwrap().into_inner();
    };
    watch_held(&store, &h);
    let tasks: Vec<_> = scripts
        .iter()
        .map(|s| glommio::spawn_local(client(store.clone(), h.clone(), s.clone())))
        .collect();
    for t in tasks {
        t.await;
    }
    store.crash().await;
    // The observer holds the history (and the store): let both go.
    store.observe_held(Rc::new(|_| {}));
    drop(store);
    Rc::try_unwrap(h)
        .ok()
        .expect("clients are done")
        .into_inner()
}

// ---------------------------------------------------------------- recovery

/// What a reopened store holds, per queue.
#[derive(Debug)]
struct Recovered {
    queues: BTreeMap<String, RecQueue>,
    /// Operations the open took (for a cut during recovery).
    open_ops: u64,
}

#[derive(Debug)]
struct RecQueue {
    /// `(enqueued, dequeued)` right after the open.
    counters: (u64, u64),
    drained: Vec<Message>,
    /// Counters after draining.
    after: Option<(u64, u64)>,
    errors: Vec<LogError>,
}

/// Opens a store on `image`, drains every queue, and crashes it.
async fn recover(image: &SimDisk, mode: Mode) -> Result<Recovered, String> {
    let store = open(mode, image)
        .await
        .map_err(|e| format!("reopen failed: {e}"))?;
    let open_ops = image.ops();
    let mut queues = BTreeMap::new();
    for stat in store.queue_stats() {
        let name = String::from_utf8_lossy(&stat.name).into_owned();
        let mut rq = RecQueue {
            counters: (stat.enqueued, stat.dequeued),
            drained: Vec::new(),
            after: None,
            errors: Vec::new(),
        };
        // Bounded: a store that keeps failing must not spin forever.
        for _ in 0..=stat.enqueued.saturating_sub(stat.dequeued) + 8 {
            match store.get(&stat.name).await {
                Ok(Some(m)) => rq.drained.push(m),
                Ok(None) => break,
                Err(e) => rq.errors.push(e),
            }
        }
        rq.after = counters_of(&store, &stat.name);
        queues.insert(name, rq);
    }
    store.crash().await;
    Ok(Recovered { queues, open_ops })
}

fn counters_of(store: &Store, name: &[u8]) -> Option<(u64, u64)> {
    store
        .queue_stats()
        .into_iter()
        .find(|s| s.name == name)
        .map(|s| (s.enqueued, s.dequeued))
}

/// The image a crash leaves in `sync` mode with nothing unlucky: all the
/// cache lost (`always` has synced what it acknowledged), or a kill
/// (`interval` acknowledges what the kernel has).
fn plain_crash(disk: &SimDisk, mode: Mode) -> SimDisk {
    match mode.sync {
        SyncMode::Always => disk.power_cut_image(0, None),
        SyncMode::Interval(_) | SyncMode::None { .. } => disk.kill_image(),
    }
}

/// After [`recover`] drained a store on `disk`, a second crash must bring
/// back the same queues, empty: the drain's pops were acknowledged, and
/// what recovery itself rewrote (sealing, the new checkpoint) must hold.
async fn recheck(first: &Recovered, disk: &SimDisk, mode: Mode) -> Vec<String> {
    let image = plain_crash(disk, mode);
    let store = match open(mode, &image).await {
        Ok(s) => s,
        Err(e) => return vec![format!("second reopen failed: {e}")],
    };
    let mut bad = Vec::new();
    let stats = store.queue_stats();
    for name in first.queues.keys() {
        if !stats.iter().any(|s| s.name == name.as_bytes()) {
            bad.push(format!("queue {name} lost in a second crash"));
        }
    }
    for stat in &stats {
        let name = String::from_utf8_lossy(&stat.name).into_owned();
        let Some(rq) = first.queues.get(&name) else {
            bad.push(format!("queue {name} appeared in a second crash"));
            continue;
        };
        if rq.errors.is_empty() && rq.after != Some((stat.enqueued, stat.dequeued)) {
            bad.push(format!(
                "queue {name}: counters {:?} after the drain, {:?} after a second crash",
                rq.after,
                (stat.enqueued, stat.dequeued)
            ));
        }
        if let Ok(Some(m)) = store.get(&stat.name).await {
            bad.push(format!(
                "queue {name}: seq {} came back after it was drained",
                m.seq
            ));
        }
    }
    store.crash().await;
    bad
}

/// Cuts power again at a seeded operation of the recovery of `image` (a
/// fresh copy), then recovers what that left: a crash in the middle of
/// recovery must lose nothing recovery was given.
async fn cut_during_recovery(
    h: &History,
    image: SimDisk,
    open_ops: u64,
    mode: Mode,
    seed: u64,
) -> (String, Vec<String>) {
    let mut rng = SplitMix64(seed);
    let at = rng.below(open_ops.max(1));
    image.power_cut_at(at);
    if let Ok(store) = open(mode, &image).await {
        store.crash().await;
    }
    let again = match mode.sync {
        SyncMode::Always => image.random_power_cut_image(rng.next()),
        SyncMode::Interval(_) | SyncMode::None { .. } => image.kill_image(),
    };
    let how = format!("then a cut at op {at} of its recovery");
    match recover(&again, mode).await {
        Ok(rec) => (how, check(h, &rec).bad),
        Err(e) => (how, vec![e]),
    }
}

// ------------------------------------------------------------------- check

/// What a recovered image shows against the history.
#[derive(Default)]
struct Verdict {
    bad: Vec<String>,
    /// Seqs lost with in-doubt sets inside a queue's counters.
    holes: u64,
}

/// Checks the recovered queues against the history.
fn check(h: &History, rec: &Recovered) -> Verdict {
    let mut bad = h.violations.clone();
    let mut holes = 0;
    let m = h.last_acked();
    // Durable: issued up to the last acknowledged request, except a set
    // written out of line, whose region is durable only once its own reply
    // said so (a later request's record can be acknowledged before it).
    let must = |i: usize| m.is_some_and(|m| i <= m) && !out_of_line_in_doubt(h, i);
    for name in rec.queues.keys() {
        if !QUEUES.contains(&name.as_str()) {
            bad.push(format!("unknown queue {name:?} recovered"));
        }
    }
    for (q, name) in QUEUES.iter().enumerate() {
        let incs = &h.incs[q];
        // The last incarnation whose creation is durable must survive,
        // unless its delete is durable too; later ones may.
        let created = incs.iter().rposition(|inc| must(inc.sets[0]));
        let (must_alive, first) = match created {
            None => (None, 0),
            Some(i) if incs[i].deleted.is_some_and(must) => (None, i + 1),
            Some(i) => (Some(i), i),
        };
        let Some(rq) = rec.queues.get(*name) else {
            // An incarnation with a delete in doubt may be gone.
            if let Some(i) = must_alive.filter(|&i| incs[i].deleted.is_none()) {
                bad.push(format!(
                    "queue {name} lost: incarnation {i}, created by {}, not deleted durably (last acked: {m:?})",
                    h.describe(incs[i].sets[0])
                ));
            }
            continue;
        };
        for e in &rq.errors {
            bad.push(format!("queue {name}: get after recovery failed: {e}"));
        }
        // Which incarnation came back: the one its messages name, or any
        // that explains empty counters.
        let named: BTreeSet<usize> = rq
            .drained
            .iter()
            .filter_map(|msg| inc_of(h, q, msg))
            .collect();
        let candidates: Vec<usize> = match named.len() {
            0 => (first..incs.len()).collect(),
            1 => named.into_iter().collect(),
            _ => {
                bad.push(format!(
                    "queue {name}: messages of incarnations {named:?} mixed"
                ));
                continue;
            }
        };
        // The incarnation that explains the queue best.
        let best = candidates
            .iter()
            .filter(|&&k| k >= first)
            .map(|&k| (k, check_inc(h, q, k, rq, &must)))
            .min_by_key(|(_, (r, _))| r.len());
        match best {
            Some((_, (r, n))) if r.is_empty() => holes += n,
            Some((k, (r, _))) => {
                for v in r {
                    bad.push(format!("queue {name} (incarnation {k}): {v}"));
                }
            }
            None if candidates.is_empty() => bad.push(format!(
                "queue {name} recovered, but the delete of its last incarnation is durable (last acked: {m:?})"
            )),
            None => bad.push(format!(
                "queue {name} recovered as incarnation {candidates:?}, but incarnation {first} or later must be (last acked: {m:?})"
            )),
        }
    }
    Verdict { bad, holes }
}

/// Request `i` is a set written out of line that was not acknowledged.
fn out_of_line_in_doubt(h: &History, i: usize) -> bool {
    let r = &h.reqs[i];
    matches!(r.step, Step::Set { len, .. } if len >= REGION_MIN) && r.outcome != Outcome::Ok
}

fn inc_of(h: &History, q: usize, msg: &Message) -> Option<usize> {
    let id = id_of(&msg.body)? as usize;
    match h.reqs.get(id)? {
        Req {
            step: Step::Set { q: sq, .. },
            effect: Effect::Set { inc, .. },
            ..
        } if *sq == q => Some(*inc),
        _ => None,
    }
}

fn check_inc(
    h: &History,
    q: usize,
    k: usize,
    rq: &RecQueue,
    must: &dyn Fn(usize) -> bool,
) -> (Vec<String>, u64) {
    let mut bad = Vec::new();
    let inc = &h.incs[q][k];
    let bound = |reqs: &[usize]| {
        let min = reqs
            .iter()
            .rposition(|&i| must(i))
            .map_or(0, |p| p as u64 + 1);
        (min, reqs.len() as u64)
    };
    let (t_min, t_max) = bound(&inc.sets);
    let (h_min, h_max) = bound(&inc.gets);
    let (t, hd) = rq.counters;
    if !(t_min..=t_max).contains(&t) {
        bad.push(format!("enqueued {t}, expected {t_min}..={t_max}"));
    }
    if hd < h_min {
        let get = inc.gets[hd as usize];
        bad.push(format!(
            "dequeued {hd}: the pop of seq {hd} by {} is durable but came undone",
            h.describe(get)
        ));
    } else if hd > h_max {
        bad.push(format!("dequeued {hd}, but only {h_max} pops were made"));
    }
    if hd > t {
        bad.push(format!("dequeued {hd} > enqueued {t}"));
    }
    // The drained messages: whole, in order, from this incarnation, between
    // head and tail.
    let mut seen = BTreeSet::new();
    let mut last = None;
    for msg in &rq.drained {
        let Some(id) = id_of(&msg.body).map(|i| i as usize) else {
            bad.push(format!("body of {} bytes has no id", msg.body.len()));
            continue;
        };
        let Some(Req {
            step: Step::Set { q: sq, len },
            effect: Effect::Set { inc: si, seq },
            ..
        }) = h.reqs.get(id)
        else {
            bad.push(format!(
                "message seq {} with id {id} was never set (accepted)",
                msg.seq
            ));
            continue;
        };
        if *sq != q || *si != k {
            bad.push(format!(
                "message id {id} belongs to queue {} incarnation {si}",
                QUEUES[*sq]
            ));
            continue;
        }
        if msg.body != body(id as u64, *len) || msg.flags != flags(id as u64) {
            bad.push(format!(
                "message id {id} corrupt ({} bytes, {len} set)",
                msg.body.len()
            ));
        }
        if msg.seq != *seq {
            bad.push(format!("message id {id} has seq {}, set as {seq}", msg.seq));
        }
        if last.is_some_and(|l| l >= *seq) {
            bad.push(format!("seq {seq} drained after seq {}", last.unwrap()));
        }
        if *seq < hd || *seq >= t {
            bad.push(format!("seq {seq} outside head {hd}..tail {t}"));
        }
        last = Some(*seq);
        seen.insert(*seq);
    }
    for seq in hd..t_min.min(t) {
        let set = inc.sets[seq as usize];
        if !seen.contains(&seq) && must(set) {
            bad.push(format!("durable set lost: seq {seq}, {}", h.describe(set)));
        }
    }
    // A seq between head and tail with no message can only be an in-doubt
    // set whose record was lost while a later record (the next segment's
    // checkpoint) asserted the tail it took, or whose region was lost while
    // its `Region` record took the seq: allowed, and counted.
    let holes = (hd..t)
        .filter(|s| !seen.contains(s) && (*s >= t_min || !must(inc.sets[*s as usize])))
        .count() as u64;
    let drained_to = last.map_or(hd, |l| l + 1).max(hd);
    match rq.after {
        Some((t2, h2)) if t2 == t && (drained_to..=t).contains(&h2) && h2 >= t_min => {}
        a => bad.push(format!(
            "counters after draining: {a:?}, expected ({t}, {drained_to}..={t})"
        )),
    }
    (bad, holes)
}

// --------------------------------------------------------------- explorer

/// Stop exploring after this many failing cases: a bug fails hundreds.
const MAX_FAILURES: usize = 20;

struct Tally {
    watchdog: Watchdog,
    holes: u64,
    /// Replies seen in the runs, by kind (to show what the runs exercised).
    replies: BTreeMap<&'static str, u64>,
    cuts: u64,
    faults: u64,
    images: u64,
    failures: Vec<String>,
}

impl Tally {
    fn new() -> Tally {
        Tally {
            watchdog: Watchdog::start(),
            holes: 0,
            replies: BTreeMap::new(),
            cuts: 0,
            faults: 0,
            images: 0,
            failures: Vec::new(),
        }
    }

    /// Counts the replies of a run.
    fn replies(&mut self, h: &History) {
        for r in &h.reqs {
            let kind = match (&r.outcome, &r.effect) {
                (Outcome::Ok, Effect::None) => "nothing to do",
                (Outcome::Ok, _) => "acknowledged",
                (Outcome::Err(LogError::OutOfSpace), _) => "out of space",
                (Outcome::Err(LogError::Failed(_)), Effect::None) => "refused, shard failed",
                (Outcome::Err(LogError::Failed(_)), _) => "failed in doubt",
                (Outcome::Err(_), _) => "other error",
                (Outcome::Pending, _) => "never completed",
            };
            *self.replies.entry(kind).or_default() += 1;
        }
    }

    fn full(&self) -> bool {
        self.failures.len() >= MAX_FAILURES
    }

    fn fail(&mut self, what: String, violations: &[String]) {
        let mut s = what;
        for v in violations.iter().take(6) {
            let _ = write!(s, "\n    {v}");
        }
        if violations.len() > 6 {
            let _ = write!(s, "\n    ... {} more", violations.len() - 6);
        }
        eprintln!("VIOLATION {s}");
        self.failures.push(s);
    }

    fn done(self, name: &str, started: Instant) {
        eprintln!(
            "{name}: {} cuts, {} faults, {} recovered images checked in {:.1?} \
             ({} queue counters counted an in-doubt set whose message was lost)",
            self.cuts,
            self.faults,
            self.images,
            started.elapsed(),
            self.holes
        );
        eprintln!("{name}: replies {:?}", self.replies);
        assert!(
            self.failures.is_empty(),
            "{} failing case(s){}; the first:\n{}",
            self.failures.len(),
            if self.full() { " (stopped early)" } else { "" },
            self.failures[0]
        );
    }
}

/// How many times the default run to do (`MCQ_CRASH_ITERS`, for soaks).
fn iters() -> u64 {
    env_u64("MCQ_CRASH_ITERS").unwrap_or(1).max(1)
}

/// The seeds to explore: `MCQ_CRASH_SEED`, or `count` times [`iters`] of
/// them from `first`.
fn seeds(first: u64, count: u64) -> Vec<u64> {
    match env_u64("MCQ_CRASH_SEED") {
        Some(seed) => vec![seed],
        None => (first..).take((count * iters()) as usize).collect(),
    }
}

/// Which of `n` cases to run: all, unless there are more than `budget`;
/// then a seeded sample. `MCQ_CRASH_CUT` picks one.
fn points(n: u64, budget: u64, seed: u64) -> Vec<u64> {
    if let Some(cut) = env_u64("MCQ_CRASH_CUT") {
        return vec![cut];
    }
    if n <= budget {
        return (0..n).collect();
    }
    let mut rng = SplitMix64(seed ^ 0xc075);
    let mut set = BTreeSet::new();
    while (set.len() as u64) < budget {
        set.insert(rng.below(n));
    }
    set.into_iter().collect()
}

/// The images checked after a cut. `always`: all of the volatile cache,
/// none of it, and then either a seeded prefix whose last write may be
/// torn or a seeded reordered write-back (listed last: the deeper checks
/// use it). `interval`: the kill image.
fn images(disk: &SimDisk, mode: Mode, seed: u64) -> Vec<(String, SimDisk)> {
    if let SyncMode::Interval(_) = mode.sync {
        return vec![("kill".to_string(), disk.kill_image())];
    }
    let n = disk.unsynced();
    let mut out = vec![
        (format!("keep {n} of {n}"), disk.power_cut_image(n, None)),
        (format!("keep 0 of {n}"), disk.power_cut_image(0, None)),
    ];
    let mut rng = SplitMix64(seed);
    if n > 1 && rng.next().is_multiple_of(2) {
        let pick = rng.next();
        out.push((
            format!("reordered write-back {pick} of {n}"),
            disk.reordered_power_cut_image(pick),
        ));
    } else if n > 0 {
        let keep = 1 + rng.below(n as u64) as usize;
        let sectors = disk.unsynced_sectors(keep - 1);
        let tear = (sectors > 1).then(|| 1 + rng.below(sectors as u64 - 1) as usize);
        out.push((
            format!("keep {keep} of {n}, torn to {tear:?} sectors"),
            disk.power_cut_image(keep, tear),
        ));
    }
    out
}

/// Recovers each image and checks it against `h`. For half the seeds
/// (one per cut point), the last image also gets a second crash after its
/// drain and a cut during its recovery.
async fn verify(
    tally: &mut Tally,
    label: &str,
    h: &History,
    mode: Mode,
    crashed: &SimDisk,
    seed: u64,
) {
    let images = images(crashed, mode, seed);
    let last = images.len().saturating_sub(1);
    for (i, (how, image)) in images.into_iter().enumerate() {
        tally.images += 1;
        tally.watchdog.case(&format!("{label}, image {how}"));
        let pristine = image.kill_image();
        if std::env::var("MCQ_CRASH_DUMP").as_deref() == Ok("2") {
            dump_disk(&format!("image {how}"), &image.kill_image()).await;
            dump_disk(
                "the crashed disk as a kill leaves it",
                &crashed.kill_image(),
            )
            .await;
        }
        let rec = watched(label, recover(&image, mode)).await;
        let rec = match rec {
            Ok(rec) => rec,
            Err(e) => {
                tally.fail(format!("{label}, image {how}"), &[e]);
                continue;
            }
        };
        let verdict = check(h, &rec);
        tally.holes += verdict.holes;
        let mut violations = verdict.bad;
        if i == last && !seed.is_multiple_of(2) && violations.is_empty() {
            violations = watched(label, recheck(&rec, &image, mode)).await;
            if violations.is_empty() {
                let (then, v) = watched(
                    label,
                    cut_during_recovery(h, pristine, rec.open_ops, mode, seed),
                )
                .await;
                if !v.is_empty() {
                    tally.fail(format!("{label}, image {how}, {then}"), &v);
                }
                continue;
            }
        }
        if !violations.is_empty() {
            dump_history(h, crashed).await;
            tally.fail(format!("{label}, image {how}"), &violations);
        }
    }
}

/// The operations of a run by kind, for the log.
fn op_mix(disk: &SimDisk) -> String {
    Op::ALL
        .iter()
        .filter(|&&op| disk.ops_of(op) > 0)
        .map(|&op| format!("{op:?} {}", disk.ops_of(op)))
        .collect::<Vec<_>>()
        .join(", ")
}

fn mode_name(mode: Mode) -> String {
    let sync = match mode.sync {
        SyncMode::Always => "always",
        SyncMode::Interval(_) => "interval",
        SyncMode::None { .. } => "none",
    };
    let dsync = if mode.dsync { ", O_DSYNC" } else { "" };
    match mode.delays {
        Some(_) => format!("sync {sync}{dsync}, delayed completions"),
        None => format!("sync {sync}{dsync}"),
    }
}

/// The run without faults: its history and how many operations it took.
async fn baseline(seed: u64, scripts: &[Script], mode: Mode, tally: &Tally) -> (History, SimDisk) {
    tally.watchdog.case(&format!("baseline of seed {seed}"));
    let base = SimDisk::new();
    let h = watched("baseline", run(scripts, mode, &base)).await;
    // Same seed, same run: otherwise "operation k" means nothing.
    let again = SimDisk::new();
    watched("baseline", run(scripts, mode, &again)).await;
    assert_eq!(
        again.ops(),
        base.ops(),
        "seed {seed}: the run is not deterministic"
    );
    let acked = h.reqs.iter().filter(|r| r.outcome == Outcome::Ok).count();
    eprintln!(
        "seed {seed} ({}): {} requests, {acked} acknowledged, {} I/O operations ({})",
        mode_name(mode),
        h.reqs.len(),
        base.ops(),
        op_mix(&base)
    );
    (h, base)
}

async fn explore_cuts(sync: SyncMode, seeds: Vec<u64>, tally: &mut Tally) {
    for seed in seeds {
        let mode = Mode::new(sync, seed);
        let scripts = workload(seed);
        let (_, base) = baseline(seed, &scripts, mode, tally).await;
        for k in points(base.ops(), u64::MAX, seed) {
            if tally.full() {
                return;
            }
            let disk = SimDisk::new();
            disk.power_cut_at(k);
            let label = format!(
                "MCQ_CRASH_SEED={seed} MCQ_CRASH_CUT={k} ({})",
                mode_name(mode)
            );
            tally.watchdog.case(&label);
            let h = watched(&label, run(&scripts, mode, &disk)).await;
            tally.replies(&h);
            tally.cuts += 1;
            let seed2 = seed.wrapping_mul(0x9e37_79b9) ^ k;
            verify(tally, &label, &h, mode, &disk, seed2).await;
        }
    }
}

/// Interval mode with a syncer that never fires within a run: it runs on
/// the clock, which would make runs differ (and the kill image does not
/// care about fdatasync).
const INTERVAL: SyncMode = SyncMode::Interval(Duration::from_secs(3600));

#[test]
fn power_cut_at_every_operation_sync_always() {
    let started = Instant::now();
    run_local(move || async move {
        let mut tally = Tally::new();
        explore_cuts(SyncMode::Always, seeds(1, 5), &mut tally).await;
        tally.done("power cuts, sync always", started);
    });
}

#[test]
fn power_cut_at_every_operation_sync_interval() {
    let started = Instant::now();
    run_local(move || async move {
        let mut tally = Tally::new();
        explore_cuts(INTERVAL, seeds(1001, 3), &mut tally).await;
        tally.done("power cuts, sync interval", started);
    });
}

/// The operations faults are injected into.
const FAULT_OPS: [Op; 7] = [
    Op::Write,
    Op::Fdatasync,
    Op::Create,
    Op::PreAllocate,
    Op::Rename,
    Op::SyncDir,
    Op::Truncate,
];

fn faults_for(op: Op) -> &'static [Fault] {
    const WRITE: [Fault; 3] = [
        Fault::Errno(libc::EIO),
        Fault::Errno(libc::ENOSPC),
        Fault::ShortWrite,
    ];
    const OTHER: [Fault; 2] = [Fault::Errno(libc::EIO), Fault::Errno(libc::ENOSPC)];
    if op == Op::Write {
        &WRITE
    } else {
        &OTHER
    }
}

/// What the replies after a fault must satisfy on their own: every
/// request completes, and a `Failed` keeps the injected errno.
fn check_replies(h: &History, fault: Fault) -> Vec<String> {
    let mut bad = Vec::new();
    for (i, r) in h.reqs.iter().enumerate() {
        match (&r.outcome, fault) {
            (Outcome::Pending, _) => bad.push(format!("{}: never completed", h.describe(i))),
            (Outcome::Err(LogError::Failed(f)), Fault::Errno(e))
                if f.errno.is_some_and(|n| n != e) =>
            {
                bad.push(format!("{}: errno changed", h.describe(i)))
            }
            _ => {}
        }
    }
    bad
}

/// Fault cases run per seed by default (out of several hundred).
const FAULTS_PER_SEED: u64 = 150;

#[test]
fn faults_at_every_operation() {
    let started = Instant::now();
    run_local(move || async move {
        let mut tally = Tally::new();
        for seed in seeds(2001, 3) {
            let mode = Mode::new(SyncMode::Always, seed);
            let scripts = workload(seed);
            let (_, base) = baseline(seed, &scripts, mode, &tally).await;
            let mut cases = Vec::new();
            for op in FAULT_OPS {
                for i in 0..base.ops_of(op) {
                    for fault in faults_for(op) {
                        cases.push((op, i, *fault));
                    }
                }
            }
            let pick = points(cases.len() as u64, FAULTS_PER_SEED * iters(), seed ^ 0xfa17);
            eprintln!(
                "seed {seed}: {} fault cases, running {}",
                cases.len(),
                pick.len()
            );
            for c in pick {
                if tally.full() {
                    break;
                }
                let (op, i, fault) = cases[c as usize];
                let disk = SimDisk::new();
                disk.inject(Trigger::NthOf(op, i), fault);
                tally.watchdog.case(&format!(
                    "MCQ_CRASH_SEED={seed} MCQ_CRASH_CUT={c}: {fault:?} at {op:?} #{i}"
                ));
                let h = watched("fault run", run(&scripts, mode, &disk)).await;
                tally.replies(&h);
                tally.faults += 1;
                let on = disk
                    .fired()
                    .first()
                    .map_or("never hit".to_string(), |f| f.path.display().to_string());
                let label = format!(
                    "MCQ_CRASH_SEED={seed} MCQ_CRASH_CUT={c}: {fault:?} at {op:?} #{i} ({on})"
                );
                let bad = check_replies(&h, fault);
                if !bad.is_empty() {
                    dump_history(&h, &disk).await;
                    tally.fail(label.clone(), &bad);
                }
                let seed2 = seed.wrapping_mul(0x9e37_79b9) ^ c;
                verify(&mut tally, &label, &h, mode, &disk, seed2).await;
            }
        }
        tally.done("faults", started);
    });
}

/// A condition that lasts from some operation of a run to its end.
struct Lasting {
    name: &'static str,
    ops: &'static [Op],
    errno: i32,
}

const LASTING: [Lasting; 3] = [
    // Segments are preallocated, so a full disk shows when a new segment
    // or spare cannot be allocated, never in a log write.
    Lasting {
        name: "disk full",
        ops: &[Op::PreAllocate],
        errno: libc::ENOSPC,
    },
    Lasting {
        name: "directory operations fail",
        ops: &[Op::Create, Op::Rename, Op::Remove, Op::SyncDir],
        errno: libc::EIO,
    },
    Lasting {
        name: "device dead",
        ops: &[Op::Write, Op::Fdatasync, Op::Read, Op::Truncate],
        errno: libc::EIO,
    },
];

/// Start points per condition and seed.
const LASTING_PER_SEED: u64 = 20;

/// What the replies under a full disk must satisfy: the shard goes on,
/// sets are refused with `OutOfSpace`, and `get` and `delete` still work
/// (the consumers' reserve and the spare exist for them).
fn check_full_disk(h: &History) -> Vec<String> {
    let mut bad = Vec::new();
    for (i, r) in h.reqs.iter().enumerate() {
        match (&r.outcome, r.step) {
            (Outcome::Err(LogError::Failed(_)), _) => {
                bad.push(format!("{}: a full disk stopped the shard", h.describe(i)))
            }
            (Outcome::Err(LogError::OutOfSpace), Step::Get { .. } | Step::Delete { .. }) => {
                bad.push(format!("{}: a full disk refused a consumer", h.describe(i)))
            }
            _ => {}
        }
    }
    bad
}

#[test]
fn lasting_faults_from_every_point() {
    let started = Instant::now();
    run_local(move || async move {
        let mut tally = Tally::new();
        for seed in seeds(3001, 2) {
            let mode = Mode::new(SyncMode::Always, seed);
            let scripts = workload(seed);
            let (_, base) = baseline(seed, &scripts, mode, &tally).await;
            for (l, lasting) in LASTING.iter().enumerate() {
                let budget = LASTING_PER_SEED * iters();
                for k in points(base.ops(), budget, seed ^ l as u64) {
                    if tally.full() {
                        break;
                    }
                    let label = format!(
                        "MCQ_CRASH_SEED={seed} MCQ_CRASH_CUT={k}: {} from op {k} on",
                        lasting.name
                    );
                    let disk = SimDisk::new();
                    for op in lasting.ops {
                        disk.inject(Trigger::From(*op, k), Fault::Errno(lasting.errno));
                    }
                    tally.watchdog.case(&label);
                    let h = watched(&label, run(&scripts, mode, &disk)).await;
                    tally.replies(&h);
                    tally.faults += 1;
                    let mut bad = check_replies(&h, Fault::Errno(lasting.errno));
                    if lasting.errno == libc::ENOSPC {
                        bad.extend(check_full_disk(&h));
                    }
                    if !bad.is_empty() {
                        dump_history(&h, &disk).await;
                        tally.fail(label.clone(), &bad);
                    }
                    let seed2 = seed.wrapping_mul(0x9e37_79b9) ^ k;
                    verify(&mut tally, &label, &h, mode, &disk, seed2).await;
                }
            }
        }
        tally.done("lasting faults", started);
    });
}

/// Prints the request log and the volatile cache of a failing case
/// (`MCQ_CRASH_DUMP`).
async fn dump_history(h: &History, crashed: &SimDisk) {
    if std::env::var_os("MCQ_CRASH_DUMP").is_none() {
        return;
    }
    if std::env::var("MCQ_CRASH_DUMP").as_deref() == Ok("2") {
        dump_disk(
            "the crashed disk as a kill leaves it",
            &crashed.kill_image(),
        )
        .await;
    }
    for i in 0..h.reqs.len() {
        eprintln!("  {}", h.describe(i));
    }
    for (i, op) in crashed.describe_unsynced().iter().enumerate() {
        eprintln!("  unsynced {i}: {op}");
    }
}

/// Lists the shard directory of `d` and the records of every segment
/// (`MCQ_CRASH_DUMP=2`).
async fn dump_disk(what: &str, d: &SimDisk) {
    use mcqd::disk::Disk;
    eprintln!("=== {what}");
    let dir = std::path::Path::new(SHARD);
    let mut names = d.list(dir).await.unwrap_or_default();
    names.sort();
    for n in names {
        let Ok(f) = d.open(&dir.join(&n)).await else {
            continue;
        };
        let len = f.size().await.unwrap_or(0);
        eprintln!("  {n}: {len} bytes");
        if n.ends_with(".log") {
            let scan = mcqd::log::segment::scan(&*f, len, false, |h, _, off| {
                eprintln!(
                    "    @{off} lsn {} {:?} queue {} seq {} len {}",
                    h.lsn, h.kind, h.queue, h.seq, h.len
                );
            });
            if let Ok(rep) = scan.await {
                eprintln!("    corrupt {:?}, torn {:?}", rep.corrupt, rep.torn);
            }
        }
    }
}
