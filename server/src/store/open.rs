//! Opening a shard: recovery's queues become the queue table, the log
//! starts a new segment, and the shard's background tasks start.
//!
//! `open_on` stays one function: what recovery hands over and what it
//! feeds (the queues, the log's catalog, the scrub of unverified segments)
//! read in order, in one place.

use std::cell::RefCell;
use std::io;
use std::rc::Rc;

use super::gate::Gate;
use super::locators::StateLocators;
use super::moves::{self, Moves};
use super::names::Names;
use super::replay;
use super::state::{QueueTable, State};
use super::waiters::Waiters;
use super::{Store, StoreConfig, SyncMode};
use crate::cache::HotCache;
use crate::disk::dma::DmaDisk;
use crate::disk::Disk;
use crate::idhash::IdMap;
use crate::log::writer::LogConfig;
use crate::log::{commit, compaction, recovery, segment, Locators, Log};
use crate::queue;

impl Store {
    /// Opens (or creates) the shard described by `config` on the real disk
    /// (O_DIRECT): see [`Store::open_on`].
    pub async fn open(config: StoreConfig) -> io::Result<Store> {
        let disk = DmaDisk::probe(&config.dir)
            .await?
            .durable_writes(config.sync == SyncMode::Always);
        Store::open_on(Rc::new(disk), config).await
    }

    /// Opens (or creates) the shard described by `config` on `disk`:
    /// recovers its queues from the log, starts a new segment, prepares the
    /// spare, and starts the shard's background tasks on the current
    /// executor.
    pub async fn open_on(disk: Rc<dyn Disk>, config: StoreConfig) -> io::Result<Store> {
        disk.create_dir_all(&config.dir).await?;
        let label = config
            .dir
            .file_name()
            .map_or_else(|| "store".to_string(), |n| n.to_string_lossy().into_owned());
        let segment_size = config
            .segment_size
            .max(64 << 10)
            .next_multiple_of(segment::BLOCK);
        let mut recovered = replay::Rebuild::default();
        let mut rec = recovery::recover(&*disk, &config.dir, &label, &mut recovered).await?;
        let unverified = std::mem::take(&mut rec.unverified);
        let mut state = State {
            queues: QueueTable::default(),
            names: Names::default(),
            items: 0,
            bytes: 0,
            cache: HotCache::new(config.cache_bytes),
            label: label.clone(),
            limits: config.limits.get(),
            limits_generation: config.limits.generation(),
            fan_out_queues: 0,
            regions: IdMap::default(),
            new_regions: Vec::new(),
            paging: IdMap::default(),
            window: queue::window(),
            damaged: Vec::new(),
        };
        let catalog = recovered.install(&mut state);
        let deep = state
            .queues
            .values()
            .filter(|q| q.queued().items() > 0)
            .count();
        state.window = queue::window_for(deep);
        let cfg = LogConfig {
            dir: config.dir.clone(),
            label,
            sync: config.sync,
            segment_size,
            max_disk: config.max_disk,
            region_min: config.region_min,
        };
        let mut log = Log::new(disk.clone(), cfg, rec, catalog);
        // Recovery's own tables are freed by now: give their pages back
        // rather than keep them as free heap (tens of MB at a million
        // queues).
        crate::memory::trim();
        log.reads().set_budget(config.readahead_bytes);
        let path = log.next_segment_path();
        let size = log.small_segment_size();
        // Plainly preallocated, even with `--sync always`: writing its zeros
        // would add 5-10 ms to every start (the spares, zeroed or not, are
        // made by maintenance for the same reason).
        let file = crate::disk::create_preallocated(&*disk, &path, size, false).await?;
        disk.sync_dir(&config.dir).await?;
        let checkpoint = log.start(file, size);
        let store = Store {
            state: Rc::new(RefCell::new(state)),
            log: Rc::new(RefCell::new(log)),
            gate: Rc::new(Gate::default()),
            waiters: Rc::new(Waiters::default()),
            limits: config.limits.clone(),
            moves: Rc::new(Moves::default()),
        };
        let locators: Rc<dyn Locators> = Rc::new(StateLocators::new(store.state.clone()));
        glommio::spawn_local(commit::committer(store.log.clone())).detach();
        if let Some(every) = config.sync.sync_every() {
            glommio::spawn_local(commit::interval_syncer(store.log.clone(), every)).detach();
        }
        // The spares are made by maintenance, after the first commit: on a
        // busy disk preallocating them took long enough to delay start-up,
        // and a request that needs one before it is ready waits for it.
        glommio::spawn_local(compaction::maintenance(locators.clone(), store.log.clone())).detach();
        glommio::spawn_local(moves::mover(store.clone())).detach();
        if !unverified.is_empty() {
            glommio::spawn_local(compaction::scrub(locators, store.log.clone(), unverified))
                .detach();
        }
        store.acked(checkpoint).await.map_err(io::Error::other)?;
        store.log.borrow().maint().notify();
        Ok(store)
    }
}
