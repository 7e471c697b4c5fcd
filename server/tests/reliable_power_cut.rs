//! Reliable reads across power cuts: at-least-once, checked at every I/O
//! operation of a seeded workload.
//!
//! The crash-point explorer (`crash_points.rs`) proves plain sets, pops and
//! deletes; this does the same for `/open`, `/close` and `/abort`, whose
//! confirms land out of order (a `Confirmed` record) while other messages
//! are open, across segment rolls and compaction. (That a checkpoint
//! restates the confirms, so a reclaimed segment takes none with it, is
//! `store::tests::reliable_reads_survive_crashes_and_segment_turnover`:
//! here compaction copies the held messages forward too soon for that
//! window to show.) A confirm acknowledged before its record is durable
//! fails this test at its first cuts. Three readers share two queues; the
//! workload runs on a [`SimDisk`] with the power gone from operation k on,
//! for every k (a stride on long runs), and each image a cut can leave is
//! recovered and drained:
//! - every acknowledged set that was not consumed by an acknowledged
//!   confirm or pop comes back (messages open at the cut among them);
//! - no acknowledged confirm or pop comes back;
//! - nothing comes back twice, nothing that was never set, and each queue
//!   in order.
//!
//! Requests run one at a time, so everything acknowledged before the cut
//! is durable and only the request the cut interrupted is in doubt. The
//! queues keep a window of 4 messages, so theirs are paged out of memory
//! and in again from the index files (with the real window of 1,024 the
//! workload's queues would stay resident).
//! `MCQ_RELIABLE_SEED` runs one seed.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::rc::Rc;

use mcqd::disk::sim::{SimDisk, SplitMix64};
use mcqd::store::{Message, Store, StoreConfig, SyncMode, Take};

const QUEUES: [&str; 2] = ["left", "right"];
const READERS: u64 = 3;
const STEPS: usize = 420;

#[derive(Clone, Copy, Debug)]
enum Step {
    Set { q: usize, len: usize },
    Open { q: usize, r: u64 },
    Confirm { q: usize, r: u64 },
    Abort { q: usize, r: u64 },
    Pop { q: usize },
}

fn workload(seed: u64) -> Vec<Step> {
    let mut rng = SplitMix64(seed);
    (0..STEPS)
        .map(|_| {
            let q = rng.below(QUEUES.len() as u64) as usize;
            let r = rng.below(READERS);
            match rng.below(100) {
                0..=44 => Step::Set {
                    q,
                    len: 200 + rng.below(3800) as usize,
                },
                45..=64 => Step::Open { q, r },
                // Reader 0 holds its messages long, so confirms behind
                // them land out of order, and the segments holding those
                // confirms are reclaimed while its message is still open.
                65..=87 if r == 0 && rng.below(12) != 0 => Step::Open { q, r },
                65..=87 => Step::Confirm { q, r },
                88..=94 => Step::Abort { q, r },
                _ => Step::Pop { q },
            }
        })
        .collect()
}

/// A body names its set: the id first, then bytes derived from it.
fn body(id: u64, len: usize) -> Vec<u8> {
    let mut b = id.to_le_bytes().to_vec();
    let mut rng = SplitMix64(id ^ 0xfeed);
    while b.len() < len {
        b.extend_from_slice(&rng.next().to_le_bytes());
    }
    b.truncate(len);
    b
}

fn id_of(m: &Message) -> u64 {
    u64::from_le_bytes(m.body[..8].try_into().unwrap())
}

fn config(sync: SyncMode) -> StoreConfig {
    StoreConfig {
        dir: PathBuf::from("/data/shard-000"),
        sync,
        segment_size: 64 << 10,
        max_disk: None,
        cache_bytes: 16 << 10,
        readahead_bytes: mcqd::log::readahead::DEFAULT_BUDGET,
        limits: Default::default(),
        region_min: mcqd::log::REGION_MIN,
    }
}

/// What the clients were told.
#[derive(Default)]
struct Told {
    /// Set ids issued, per queue, and which were acknowledged.
    issued: BTreeMap<u64, usize>,
    acked_sets: BTreeSet<u64>,
    /// Ids consumed by an acknowledged confirm or pop.
    consumed: BTreeSet<u64>,
    /// The one consume in doubt (its request met the cut).
    in_doubt: Option<u64>,
    /// Who holds which id open.
    open: BTreeMap<(usize, u64), u64>,
}

/// Runs the workload until its first failure; returns what it was told.
async fn run(store: &Store, steps: &[Step]) -> Told {
    let mut t = Told::default();
    for (i, &step) in steps.iter().enumerate() {
        let id = i as u64;
        match step {
            Step::Set { q, len } => {
                t.issued.insert(id, q);
                if store
                    .set(QUEUES[q].as_bytes(), 0, body(id, len))
                    .await
                    .is_err()
                {
                    break;
                }
                t.acked_sets.insert(id);
            }
            Step::Open { q, r } => {
                if t.open.contains_key(&(q, r)) {
                    continue;
                }
                match store.take(QUEUES[q].as_bytes(), Take::Open(r)).await {
                    Ok(Some(m)) => {
                        t.open.insert((q, r), id_of(&m));
                    }
                    Ok(None) => {}
                    Err(_) => break,
                }
            }
            Step::Confirm { q, r } => {
                let held = t.open.remove(&(q, r));
                match store.confirm(QUEUES[q].as_bytes(), r).await {
                    Ok(done) => {
                        assert_eq!(done, held.is_some(), "step {i}: confirm of {held:?}");
                        t.consumed.extend(held);
                    }
                    Err(_) => {
                        t.in_doubt = held;
                        break;
                    }
                }
            }
            Step::Abort { q, r } => {
                let held = t.open.remove(&(q, r));
                assert_eq!(store.abort(QUEUES[q].as_bytes(), r), held.is_some());
            }
            Step::Pop { q } => {
                // A pop's message is known only from its reply: one that
                // fails is in doubt without a name, so the check below
                // allows any one message to be missing for it.
                match store.get(QUEUES[q].as_bytes()).await {
                    Ok(Some(m)) => {
                        t.consumed.insert(id_of(&m));
                    }
                    Ok(None) => {}
                    Err(_) => {
                        t.in_doubt = Some(u64::MAX);
                        break;
                    }
                }
            }
        }
    }
    t
}

/// Recovers `image`, drains it, and checks it against `told`.
async fn check(image: &SimDisk, sync: SyncMode, told: &Told, what: &str) -> Result<(), String> {
    let store = {
        mcqd::queue::set_window(4);
        Store::open_on(Rc::new(image.clone()), config(sync))
    }
    .await
    .map_err(|e| format!("{what}: reopen failed: {e}"))?;
    let mut seen = BTreeSet::new();
    let mut missing_allowed = told.in_doubt;
    for (q, name) in QUEUES.iter().enumerate() {
        let mut last = None;
        while let Some(m) = store
            .get(name.as_bytes())
            .await
            .map_err(|e| format!("{what}: drain of {name}: {e}"))?
        {
            let id = id_of(&m);
            if told.issued.get(&id) != Some(&q) {
                return Err(format!("{what}: {name} returned {id}, never set there"));
            }
            let len = m.body.len();
            if m.body != body(id, len) {
                return Err(format!("{what}: message {id} is damaged"));
            }
            if told.consumed.contains(&id) {
                return Err(format!("{what}: {name}: consumed message {id} came back"));
            }
            if last.is_some_and(|l| l >= id) {
                return Err(format!("{what}: {name}: {id} after {last:?}"));
            }
            last = Some(id);
            if !seen.insert(id) {
                return Err(format!("{what}: {id} came back twice"));
            }
        }
    }
    for id in &told.acked_sets {
        if told.consumed.contains(id) || seen.contains(id) {
            continue;
        }
        match missing_allowed {
            Some(d) if d == *id || d == u64::MAX => missing_allowed = None,
            _ => return Err(format!("{what}: acknowledged message {id} is lost")),
        }
    }
    store.crash().await;
    Ok(())
}

fn explore(seed: u64, sync: SyncMode) -> (u64, u64) {
    let steps = workload(seed);
    let mut images = 0;
    let total = glommio::LocalExecutorBuilder::default()
        .spawn({
            let steps = steps.clone();
            move || async move {
                let disk = SimDisk::new();
                let store = {
                    mcqd::queue::set_window(4);
                    Store::open_on(Rc::new(disk.clone()), config(sync))
                }
                .await
                .unwrap();
                let told = run(&store, &steps).await;
                assert!(told.acked_sets.len() > 100, "the workload ran");
                store.crash().await;
                disk.ops()
            }
        })
        .unwrap()
        .join()
        .unwrap();
    let stride = (total / 500).max(1);
    let mut cuts = 0;
    for cut in (0..total).step_by(stride as usize) {
        cuts += 1;
        images += glommio::LocalExecutorBuilder::default()
            .spawn({
                let steps = steps.clone();
                move || async move {
                    let disk = SimDisk::new();
                    disk.power_cut_at(cut);
                    let Ok(store) = {
                        mcqd::queue::set_window(4);
                        Store::open_on(Rc::new(disk.clone()), config(sync))
                    }
                    .await
                    else {
                        return 0;
                    };
                    let told = run(&store, &steps).await;
                    store.crash().await;
                    let imgs = match sync {
                        SyncMode::Always => vec![
                            ("nothing unsynced", disk.power_cut_image(0, None)),
                            ("reordered", disk.reordered_power_cut_image(seed ^ cut)),
                            ("random", disk.random_power_cut_image(seed ^ cut)),
                        ],
                        _ => vec![("kill", disk.kill_image())],
                    };
                    let n = imgs.len() as u64;
                    for (what, image) in imgs {
                        let what = format!("seed {seed} {sync:?} cut {cut}/{total}: {what} image");
                        if let Err(e) = check(&image, sync, &told, &what).await {
                            panic!("{e} (MCQ_RELIABLE_SEED={seed})");
                        }
                    }
                    n
                }
            })
            .unwrap()
            .join()
            .unwrap();
    }
    (cuts, images)
}

#[test]
fn reliable_reads_are_at_least_once_at_every_cut() {
    let seeds: Vec<u64> = match std::env::var("MCQ_RELIABLE_SEED") {
        Ok(s) => vec![s.parse().expect("a number")],
        Err(_) => vec![1, 2],
    };
    for seed in seeds {
        for sync in [
            SyncMode::Always,
            SyncMode::Interval(std::time::Duration::from_millis(5)),
        ] {
            let (cuts, images) = explore(seed, sync);
            eprintln!("seed {seed} {sync:?}: {cuts} cuts, {images} images checked");
        }
    }
}
