//! One executor's life: join the mesh, open its shards, wait for the
//! others, serve, drain, close its shards.
//!
//! # Why executors wait for each other
//! A connection on any executor may send requests to any shard, so no
//! executor serves before every shard is open (and the manifest is in this
//! mcqd's format), and none closes its shards before every executor has
//! drained its connections.

use std::io;
use std::os::fd::{FromRawFd, IntoRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use glommio::channels::channel_mesh::MeshBuilder;
use glommio::net::TcpListener;

use crate::config::Config;
use crate::daemon::context;
use crate::manifest;
use crate::net;
use crate::port::listen;
use crate::shard::{Envelope, Router};
use crate::shared::Shared;
use crate::store::{Store, StoreConfig};

/// Start-up and shutdown rendezvous of the executors.
#[derive(Default)]
pub(super) struct Progress {
    /// Executors that opened their shards …
    opened: AtomicUsize,
    /// … and, once all did, the manifest is in this mcqd's format: nobody
    /// serves before, so nothing an older format cannot read is written
    /// under an older manifest.
    manifest_ready: AtomicBool,
    /// Executors that opened their shards and are accepting.
    pub(super) serving: AtomicUsize,
    /// Executors that will send no more requests to other executors' shards:
    /// their connections have all finished, or they never served any (they
    /// failed to start, or the server stopped before they did). Every
    /// executor counts itself here exactly once, failed or not, since the
    /// others wait for all of them before closing their stores.
    drained: AtomicUsize,
    /// Executors whose thread is done (counted on every way out).
    pub(super) finished: AtomicUsize,
    pub(super) failed: AtomicBool,
    /// An executor glommio could not build (its rings, its locked memory,
    /// its CPU), as its number plus one; 0 while there is none. The others
    /// then wait in the mesh for it forever, so the server cannot stop as
    /// usual: nothing was opened yet, and it simply exits.
    pub(super) not_started: AtomicUsize,
}

/// Counts an executor as finished when its main future ends, however it
/// ends.
pub(super) struct Finished<'a>(pub(super) &'a AtomicUsize);

impl Drop for Finished<'_> {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

/// How the data directory is laid out and served.
#[derive(Clone, Copy)]
pub(super) struct Layout {
    pub(super) executors: usize,
    pub(super) shards: u32,
    /// The manifest's format as found.
    pub(super) format: u32,
}

/// Waits until every executor opened its shards, the last of them bringing
/// the manifest to this mcqd's format; `false` if start-up failed meanwhile.
async fn all_opened(layout: Layout, config: &Config, progress: &Progress) -> bool {
    let n = progress.opened.fetch_add(1, Ordering::SeqCst) + 1;
    if n == layout.executors {
        if layout.format < manifest::FORMAT {
            if let Err(e) = manifest::upgrade_manifest(&config.data_dir, layout.shards) {
                log::error!("cannot upgrade {}/MANIFEST: {e}", config.data_dir.display());
                progress.failed.store(true, Ordering::SeqCst);
                return false;
            }
            log::info!(
                "data directory upgraded from format {} to {}",
                layout.format,
                manifest::FORMAT
            );
        }
        progress.manifest_ready.store(true, Ordering::SeqCst);
    }
    while !progress.manifest_ready.load(Ordering::SeqCst) {
        if progress.failed.load(Ordering::SeqCst) {
            return false;
        }
        glommio::timer::sleep(Duration::from_millis(1)).await;
    }
    true
}

/// What an executor listens on: its share of each -l address (bound, not
/// yet listening, in `Config::listeners`' order) and, on executor 0 with
/// `--metrics`, the metrics listener.
pub(super) struct Sockets {
    pub(super) listeners: Vec<OwnedFd>,
    pub(super) metrics: Option<OwnedFd>,
}

pub(super) async fn executor_main(
    me: usize,
    layout: Layout,
    config: &Config,
    sockets: Sockets,
    shared: Arc<Shared>,
    progress: &Progress,
    mesh: MeshBuilder<Envelope, glommio::channels::channel_mesh::Full>,
) -> io::Result<()> {
    let Sockets { listeners, metrics } = sockets;
    let Layout {
        executors, shards, ..
    } = layout;
    // Every executor joins the mesh before anything can fail, or the others
    // would wait for it forever.
    let (mesh, joined) = match mesh.join().await {
        Ok(mesh) => (Some(mesh).filter(|_| executors > 1), Ok(())),
        Err(e) => (None, Err(io::Error::other(format!("channel mesh: {e}")))),
    };
    let mut local: Vec<Option<Store>> = (0..shards).map(|_| None).collect();
    let opened = match joined {
        Ok(()) => open_stores(me, executors, shards, config, &shared, &mut local).await,
        Err(e) => Err(e),
    };
    // The router serves the mesh even when this executor failed or the
    // server is stopping: other executors' connections may still forward
    // requests to the stores that did open until every executor drained.
    let router = Router::start(me, executors, shards, local, mesh);
    router.give_stores_a_way_out();
    let served = match opened {
        Ok(()) if shared.stopping.load(Ordering::SeqCst) => Ok(()),
        Ok(()) if !all_opened(layout, config, progress).await => Ok(()),
        Ok(()) => match listen_all(listeners, config) {
            Ok(listeners) => {
                if let Some(fd) = metrics {
                    // SAFETY: a listening socket we own; glommio takes it over.
                    let metrics = unsafe { TcpListener::from_raw_fd(fd.into_raw_fd()) };
                    glommio::spawn_local(crate::metrics::serve(
                        metrics,
                        router.clone(),
                        shared.clone(),
                    ))
                    .detach();
                }
                progress.serving.fetch_add(1, Ordering::SeqCst);
                net::serve(listeners, router.clone(), shared.clone(), me).await;
                Ok(())
            }
            Err(e) => Err(e),
        },
        Err(e) => Err(e),
    };
    if let Err(e) = &served {
        // Said now, and the main thread told now: the wait below ends only
        // once it has stopped the other executors.
        log::error!("executor {me}: {e}");
        progress.failed.store(true, Ordering::SeqCst);
    }

    progress.drained.fetch_add(1, Ordering::SeqCst);
    while progress.drained.load(Ordering::SeqCst) < executors {
        glommio::timer::sleep(Duration::from_millis(10)).await;
    }
    let mut closed = Ok(());
    for store in router.local_stores() {
        if let Err(e) = store.close().await {
            log::error!("executor {me}: closing a shard: {e}");
            closed = Err(io::Error::from(e));
        }
    }
    served.and(closed)
}

/// Listens on this executor's socket of each -l address.
fn listen_all(sockets: Vec<OwnedFd>, config: &Config) -> io::Result<net::Listeners> {
    sockets
        .into_iter()
        .zip(config.listeners())
        .map(|(socket, l)| Ok((listen(socket, l.addr)?, l.tls)))
        .collect()
}

/// Opens the shards executor `me` owns into `local`. Gives up early, with
/// what it opened so far, once the server is stopping (another executor
/// failed, or a signal came): a long recovery must not delay the exit.
async fn open_stores(
    me: usize,
    executors: usize,
    shards: u32,
    config: &Config,
    shared: &Shared,
    local: &mut [Option<Store>],
) -> io::Result<()> {
    for s in (me..shards as usize).step_by(executors) {
        if shared.stopping.load(Ordering::SeqCst) {
            break;
        }
        let store_config = StoreConfig {
            dir: manifest::shard_dir(&config.data_dir, s as u32),
            sync: config.sync_mode(),
            segment_size: config.segment_size,
            max_disk: config.max_disk.map(|d| d / u64::from(shards)),
            cache_bytes: (config.cache_bytes / u64::from(shards)) as usize,
            readahead_bytes: config.readahead_bytes(shards),
            limits: shared.limits.clone(),
            region_min: crate::log::REGION_MIN,
        };
        let dir = store_config.dir.clone();
        let store = Store::open(store_config)
            .await
            .map_err(|e| context(format!("shard {s} ({})", dir.display()), e))?;
        // With one shard every queue is home: a million names are not
        // hashed at every start for that.
        let names = (shards > 1).then(|| store.queue_names());
        local[s] = Some(store);
        if let Some(names) = names {
            manifest::check_queue_homes(s as u32, shards, &names)?;
        }
    }
    Ok(())
}
