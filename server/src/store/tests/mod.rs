//! The store's tests, one file per theme. A store is one shard's queues
//! over its log, and what it promises is that a set, once acknowledged,
//! comes back exactly once, in order, through clean restarts and crashes,
//! with the space it took given back once it is consumed. Each file holds
//! one side of that promise to account:
//! - [`queue_semantics`]: what a get, a reliable read, a blocking get and a
//!   flush return, and that the counters agree, across restarts;
//! - [`queue_options`]: expiry, per-queue limits, fan-out and `expire_to`;
//! - [`durability`]: the commit path, group commit and what a crash keeps;
//! - [`space`]: segments reclaimed, compacted and sized, and a full disk;
//! - [`damage`]: recovery from corrupt, missing or cut files, and the scrub;
//! - [`bodies`]: where a get finds a body (cache, disk, a region still being
//!   written);
//! - [`model`]: random operation sequences against an in-memory model;
//! - [`paging`]: a deep backlog paged out of memory and back.
//!
//! Shared here: [`config`] (small segments, `--sync always`), bodies that
//! name their queue and number ([`body`]), `set`/`get` shorthands, the
//! `stats queue` counters ([`counts`]), a shard's segment files, and a
//! fill-then-close / reopen-then-drain pair.
//!
//! Data lives under `target/` (a real disk: on tmpfs glommio silently falls
//! back to buffered I/O and O_DIRECT would not be exercised). Tests that
//! need an exact fault or power cut run on the simulated disk
//! (`crate::disk::sim`) instead.

mod bodies;
mod damage;
mod durability;
mod model;
mod paging;
mod queue_options;
mod queue_semantics;
mod space;

use std::path::{Path, PathBuf};

use super::*;
use crate::testutil::run;

pub(crate) fn config(dir: &Path) -> StoreConfig {
    StoreConfig {
        dir: dir.join("shard-000"),
        sync: SyncMode::Always,
        segment_size: 64 << 10,
        max_disk: None,
        cache_bytes: 1 << 20,
        readahead_bytes: crate::log::readahead::DEFAULT_BUDGET,
        limits: Default::default(),
        region_min: crate::log::REGION_MIN,
    }
}

fn body(q: usize, i: u64, len: usize) -> Vec<u8> {
    let mut b = format!("q{q}-m{i}-").into_bytes();
    while b.len() < len {
        b.push(b'a' + (b.len() % 26) as u8);
    }
    b.truncate(len.max(1));
    b
}

async fn set(s: &Store, q: &str, b: Vec<u8>) {
    s.set(q.as_bytes(), 7, b).await.unwrap();
}

async fn get(s: &Store, q: &str) -> Option<Vec<u8>> {
    s.get(q.as_bytes())
        .await
        .unwrap()
        .map(|m| m.body.into_vec())
}

/// `(name, enqueued, dequeued)` of every queue: `stats queue`.
fn counts(s: &Store) -> Vec<(Vec<u8>, u64, u64)> {
    s.queue_stats()
        .into_iter()
        .map(|q| (q.name, q.enqueued, q.dequeued))
        .collect()
}

fn seg_files(dir: &Path, ext: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == ext))
        .collect();
    v.sort();
    v
}

fn fill_and_close(cfg: StoreConfig, n: u64) {
    run(move || async move {
        let s = Store::open(cfg).await.unwrap();
        for i in 0..n {
            set(
                &s,
                &format!("q{}", i % 4),
                body((i % 4) as usize, i / 4, 250),
            )
            .await;
        }
        s.settle().await;
        s.close().await.unwrap();
    });
}

fn drain_all(cfg: StoreConfig, n: u64) {
    run(move || async move {
        let s = Store::open(cfg).await.unwrap();
        for q in 0..4 {
            for i in 0..n / 4 {
                assert_eq!(get(&s, &format!("q{q}")).await.unwrap(), body(q, i, 250));
            }
        }
        s.close().await.unwrap();
    });
}
