//! Process lifecycle: start the executors, open the shards they own, serve,
//! and on SIGTERM or SIGINT stop accepting, finish the requests already read,
//! make everything durable and exit 0.
//!
//! # Why signals are taken on the main thread
//! SIGTERM and SIGINT are blocked before any executor thread exists, so they
//! inherit the mask and the kernel delivers both signals only to the main
//! thread, which waits for them with `sigtimedwait`. The executors never see
//! a signal handler; they learn of shutdown through one atomic flag.
//!
//! # Why nothing may hang
//! Any executor failing at start-up stops them all, and a failed executor
//! still counts itself drained, since the others wait for every executor
//! before closing their stores. A signal while stopping exits at once. A
//! panic anywhere aborts the process with a log line (the panic hook), as a
//! panicking executor would otherwise leave its shards unreachable.

use std::fs::{File, OpenOptions};
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use glommio::channels::channel_mesh::MeshBuilder;
use glommio::net::TcpListener;
use glommio::{LocalExecutorBuilder, Placement};

use crate::config::Config;
use crate::daemon::{self, context};
use crate::limits::SharedLimits;
use crate::manifest;
use crate::net;
use crate::shard::{Envelope, Router};
use crate::shared::Shared;
use crate::stats::{Counters, ServerInfo};
use crate::store::{Store, StoreConfig, SyncMode};

/// Memory each executor registers with io_uring for DMA buffers. Kept small
/// because an unprivileged user's RLIMIT_MEMLOCK is often 8 MiB for the whole
/// process; I/O beyond it still works with ordinary allocations.
const IO_MEMORY: usize = 2 << 20;

/// Runs the server until it is told to stop. Errors are start-up failures.
/// Installs the process's panic hook: any panic ends the process (see
/// [`crate::logging::install_panic_hook`]).
/// Large message buffers (a body, the log's tail, a record read back) are
/// allocated and freed many times a second under a stream of large
/// messages. glibc gives each one above 128 KiB its own mapping and returns
/// freed memory to the kernel at once, so every 8 MiB message faulted in
/// 2,048 fresh pages several times over: a third of the server's CPU in the
/// fairness run, in stretches that made small requests wait. Serving them
/// from the heap (up to 32 MiB, glibc's ceiling for this setting) and
/// returning free memory only beyond 64 MiB cut the page faults from
/// 326,000 to 37,000 in 3 s of that run (`bench-results/`,
/// 2026-12-05-issue8-fairness). Memory stays bounded: at most that much
/// free memory is kept per malloc arena.
fn keep_large_buffers() {
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt only sets allocator parameters; called before the
    // executors' threads start.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 64 << 20);
    }
}

pub fn run(config: Config) -> io::Result<()> {
    crate::logging::init(u32::from(config.verbose));
    config
        .check()
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    for warning in config.warnings() {
        log::warn!("{warning}");
    }
    // Absolute from here on: -d moves to /, and the log's files are opened
    // through io_uring, where a relative path is not resolved against our
    // working directory (a relative -H failed with EBADF).
    let mut config = config;
    config.data_dir = absolute(&config.data_dir, "-H")?;
    if let Some(path) = &config.pid_file {
        config.pid_file = Some(absolute(path, "-P")?);
    }
    if let Some(path) = &config.config {
        config.config = Some(absolute(path, "-f")?);
    }
    if config.raise_core_limit {
        daemon::raise_core_limit();
    }
    keep_large_buffers();
    // Before any thread exists: see the `daemon` module.
    let daemon = if config.daemon {
        Some(daemon::daemonize(
            config.raise_core_limit,
            config.verbose > 0,
        )?)
    } else {
        None
    };
    let executors = config.executors();
    let created = open_data_dir(&config.data_dir)?;
    config.data_dir = std::fs::canonicalize(&config.data_dir)
        .map_err(|e| context(format!("-H {}", config.data_dir.display()), e))?;
    let lock = lock_data_dir(&config.data_dir)?;
    if let Some(mount) = crate::disk::mount::online_discard(&config.data_dir) {
        log::warn!(
            "{} is on {}, mounted with online discard: every segment mcqd deletes is \
             discarded as it is freed, which stalls the writes behind it for milliseconds \
             on many devices; mount it with nodiscard and trim it periodically \
             (fstrim.timer) instead",
            config.data_dir.display(),
            mount.display()
        );
    }
    probe_port(config.listen, config.port)?;
    // Bound here so that a taken address stops the start with the flag's
    // name; served by executor 0 (see `crate::metrics`).
    let mut metrics = match config.metrics {
        Some(addr) => Some(OwnedFd::from(std::net::TcpListener::bind(addr).map_err(
            |e| io::Error::new(e.kind(), format!("--metrics {addr}: cannot listen: {e}")),
        )?)),
        None => None,
    };
    // Bound (not yet listening) here, so that a port below 1024 works with
    // -u: the executors listen on them once their shards are open.
    let address = SocketAddr::new(config.listen, config.port);
    let sockets = (0..executors)
        .map(|_| bound_socket(address, true))
        .collect::<io::Result<Vec<_>>>()?;
    let pid_file = config
        .pid_file
        .as_deref()
        .map(daemon::PidFile::write)
        .transpose()?;
    if let Some(user) = &config.user {
        let lock_path = config.data_dir.join("LOCK");
        let mut owned = vec![lock_path.as_path()];
        if created {
            owned.push(&config.data_dir);
        }
        daemon::become_user(user, &owned, config.raise_core_limit)?;
    } else if daemon::is_root() && config.daemon {
        log::warn!("running as root: -u <user> would drop root once the port is bound");
    }
    let (format, shards) =
        manifest::open_manifest(&config.data_dir, config.shards.unwrap_or(executors as u32))?;
    if let Some(asked) = config.shards.filter(|&n| n != shards) {
        log::warn!(
            "--shards {asked} ignored: {} was created with {shards} shards, fixed since; using {shards}",
            config.data_dir.display()
        );
    }
    for s in 0..shards {
        let dir = manifest::shard_dir(&config.data_dir, s);
        std::fs::create_dir_all(&dir).map_err(|e| context(dir.display(), e))?;
    }

    let limits = SharedLimits::open(config.config.as_deref())
        .map(Arc::new)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    block_stop_signals()?;
    let shared = Arc::new(Shared {
        limits,
        shutdown_enabled: config.enable_shutdown,
        shutdown_requested: AtomicBool::new(false),
        max_connections: config.max_connections,
        max_message_size: config.max_message_size(),
        connections: AtomicUsize::new(0),
        total_connections: AtomicUsize::new(0),
        stopping: AtomicBool::new(false),
        info: ServerInfo {
            started: Instant::now(),
            threads: executors,
        },
        counters: (0..executors)
            .map(|_| Arc::new(Counters::default()))
            .collect(),
    });
    let progress = Arc::new(Progress::default());
    let mesh = MeshBuilder::<Envelope, _>::full(executors, 1024);
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);

    let mut handles = Vec::new();
    for (me, socket) in sockets.into_iter().enumerate() {
        let (config, shared, progress, mesh) = (
            config.clone(),
            shared.clone(),
            progress.clone(),
            mesh.clone(),
        );
        let metrics = if me == 0 { metrics.take() } else { None };
        let handle = LocalExecutorBuilder::new(Placement::Fixed(me % cpus))
            .name(&format!("mcqd-{me}"))
            .io_memory(IO_MEMORY)
            .spawn(move || async move {
                crate::turn::take_turns_here();
                let _finished = Finished(&progress.finished);
                let layout = Layout {
                    executors,
                    shards,
                    format,
                };
                executor_main(
                    me,
                    layout,
                    &config,
                    Sockets { socket, metrics },
                    shared,
                    &progress,
                    mesh,
                )
                .await
            })
            .map_err(|e| io::Error::other(format!("cannot start executor {me}: {e}")))?;
        handles.push(handle);
    }

    let mut daemon = daemon;
    let mut announced = false;
    let mut stop_reason = None;
    while stop_reason.is_none() {
        if let Some(signal) = wait_stop_signal(Duration::from_millis(100)) {
            if signal == "SIGHUP" {
                // Ready again either way: a refused file leaves the limits
                // in force, and the server never stopped serving. Before
                // the first READY=1 there is nothing to tell.
                if announced {
                    crate::notify::reloading();
                }
                let reloaded = shared.limits.reload();
                if announced {
                    crate::notify::ready();
                }
                match reloaded {
                    Ok(()) => log::info!("SIGHUP: queue limits reloaded"),
                    Err(e) => log::warn!("SIGHUP: reload failed, the limits in force stay: {e}"),
                }
                continue;
            }
            stop_reason = Some(format!("signal {signal}"));
        } else if shared.shutdown_requested.load(Ordering::SeqCst) {
            stop_reason = Some("the shutdown command".into());
        } else if progress.failed.load(Ordering::SeqCst) {
            stop_reason = Some("an executor failed".into());
        } else if !announced && progress.serving.load(Ordering::SeqCst) == executors {
            announced = true;
            let metrics = config
                .metrics
                .map(|addr| format!(", metrics at http://{addr}/metrics"))
                .unwrap_or_default();
            log::info!(
                "listening on {}:{} ({} executors, {} shards, sync {}, data {}{metrics})",
                config.listen,
                config.port,
                executors,
                shards,
                describe(config.sync_mode()),
                config.data_dir.display()
            );
            if let Some(daemon) = daemon.take() {
                daemon.ready();
            }
            crate::notify::ready();
        }
    }
    let reason = stop_reason.unwrap_or_default();
    log::info!("stopping ({reason}): finishing requests in flight");
    crate::notify::stopping();
    shared.stopping.store(true, Ordering::SeqCst);
    // A stop must never hang: a signal while the executors finish ends the
    // process at once. What was acknowledged is already in the log as the
    // sync mode promises, so this costs no more than a kill -9 would.
    while progress.finished.load(Ordering::SeqCst) < executors {
        if let Some(signal) = wait_stop_signal(Duration::from_millis(100)) {
            log::warn!("{signal} while stopping: exiting now without waiting for the executors");
            std::process::exit(1);
        }
    }
    let mut failed = progress.failed.load(Ordering::SeqCst);
    for handle in handles {
        match handle.join() {
            Ok(Ok(())) => {}
            Ok(Err(_)) => failed = true,
            Err(e) => {
                log::error!("an executor panicked: {e}");
                failed = true;
            }
        }
    }
    if failed {
        return Err(io::Error::other(
            "stopped after a failure (see the lines above)",
        ));
    }
    drop(pid_file);
    drop(lock);
    log::info!("stopped cleanly");
    Ok(())
}

/// `path` made absolute against the working directory; errors name `flag`.
fn absolute(path: &Path, flag: &str) -> io::Result<PathBuf> {
    std::path::absolute(path).map_err(|e| context(format!("{flag} {}", path.display()), e))
}

/// Makes sure the data directory exists; true if mcqd created it.
fn open_data_dir(dir: &Path) -> io::Result<bool> {
    match std::fs::metadata(dir) {
        Ok(m) if m.is_dir() => Ok(false),
        Ok(_) => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("-H {}: not a directory", dir.display()),
        )),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            std::fs::create_dir_all(dir).map_err(|e| {
                context(
                    format!("cannot create the data directory {} (-H)", dir.display()),
                    e,
                )
            })?;
            Ok(true)
        }
        Err(e) => Err(context(format!("-H {}", dir.display()), e)),
    }
}

/// Start-up and shutdown rendezvous of the executors.
#[derive(Default)]
struct Progress {
    /// Executors that opened their shards …
    opened: AtomicUsize,
    /// … and, once all did, the manifest is in this mcqd's format: nobody
    /// serves before, so nothing an older format cannot read is written
    /// under an older manifest.
    manifest_ready: AtomicBool,
    /// Executors that opened their shards and are accepting.
    serving: AtomicUsize,
    /// Executors that will send no more requests to other executors' shards:
    /// their connections have all finished, or they never served any (they
    /// failed to start, or the server stopped before they did). Every
    /// executor counts itself here exactly once, failed or not, since the
    /// others wait for all of them before closing their stores.
    drained: AtomicUsize,
    /// Executors whose thread is done (counted on every way out).
    finished: AtomicUsize,
    failed: AtomicBool,
}

/// Counts an executor as finished when its main future ends, however it
/// ends.
struct Finished<'a>(&'a AtomicUsize);

impl Drop for Finished<'_> {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

/// How the data directory is laid out and served.
#[derive(Clone, Copy)]
struct Layout {
    executors: usize,
    shards: u32,
    /// The manifest's format as found.
    format: u32,
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

/// What an executor listens on: its share of the port (bound, not yet
/// listening) and, on executor 0 with `--metrics`, the metrics listener.
struct Sockets {
    socket: OwnedFd,
    metrics: Option<OwnedFd>,
}

async fn executor_main(
    me: usize,
    layout: Layout,
    config: &Config,
    sockets: Sockets,
    shared: Arc<Shared>,
    progress: &Progress,
    mesh: MeshBuilder<Envelope, glommio::channels::channel_mesh::Full>,
) -> io::Result<()> {
    let Sockets { socket, metrics } = sockets;
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
        Ok(()) => match listen(socket, SocketAddr::new(config.listen, config.port)) {
            Ok(listener) => {
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
                net::serve(listener, router.clone(), shared.clone(), me).await;
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
            limits: shared.limits.clone(),
            region_min: crate::log::REGION_MIN,
        };
        let dir = store_config.dir.clone();
        let store = Store::open(store_config)
            .await
            .map_err(|e| context(format!("shard {s} ({})", dir.display()), e))?;
        let names: Vec<Vec<u8>> = store.queue_stats().into_iter().map(|q| q.name).collect();
        local[s] = Some(store);
        manifest::check_queue_homes(s as u32, shards, &names)?;
    }
    Ok(())
}

fn describe(sync: SyncMode) -> String {
    match sync {
        SyncMode::Always => "always".into(),
        SyncMode::Interval(d) => format!("interval={}ms", d.as_millis()),
        SyncMode::None { flush, sync } => format!(
            "none (written every {}ms, fdatasync every {}ms)",
            flush.as_millis(),
            sync.as_millis()
        ),
    }
}

/// Takes an exclusive lock on `<data_dir>/LOCK`, so two servers can never
/// share one log (SO_REUSEPORT would happily let both bind the port).
fn lock_data_dir(data_dir: &Path) -> io::Result<File> {
    let path = data_dir.join("LOCK");
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| context(path.display(), e))?;
    // SAFETY: flock on a descriptor we own.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        return Err(io::Error::new(
            io::ErrorKind::WouldBlock,
            format!("{} is in use by another mcqd", data_dir.display()),
        ));
    }
    Ok(file)
}

/// Refuses a port another server already listens on. The executors'
/// listeners set SO_REUSEPORT so that they can share the port, and that
/// would let them join an unrelated server's listeners just as well: the
/// kernel would split clients between two servers with different data. So
/// first bind once without SO_REUSEPORT, which fails with EADDRINUSE while
/// anyone listens on the address. The probe never listens, so no client can
/// reach it.
///
/// A busy port is tried again for up to [`PORT_RELEASE_WAIT`] before mcqd
/// gives up, because a server killed with SIGKILL (or aborted by a panic)
/// leaves its listeners behind for a moment: an accept in flight on its
/// io_uring holds the socket until the kernel has torn the ring down, after
/// the process is gone. Joining such a ghost with SO_REUSEPORT would hand
/// some clients to a listener nobody accepts on; refusing at once made
/// every quick restart after a kill -9 fail on a busy machine.
///
/// The probe alone leaves a window: two servers starting at once could both
/// probe before either listens, and then share the port. So the probe is
/// made under a claim on the address that lasts as long as the process (an
/// abstract Unix socket, released by the kernel however mcqd ends): a second
/// mcqd starting on the same address waits, then refuses, the same way.
fn probe_port(addr: IpAddr, port: u16) -> io::Result<()> {
    let started = Instant::now();
    loop {
        match claim_address(addr, port)
            .and_then(|()| bound_socket(SocketAddr::new(addr, port), false))
        {
            Ok(_) => break,
            Err(e)
                if e.kind() == io::ErrorKind::AddrInUse
                    && started.elapsed() < PORT_RELEASE_WAIT =>
            {
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => return Err(e),
        }
    }
    if started.elapsed() > Duration::from_millis(20) {
        log::debug!(
            "{addr}:{port} was busy for {} ms before it came free",
            started.elapsed().as_millis()
        );
    }
    Ok(())
}

/// Claims `addr:port` for this process (see [`probe_port`]); idempotent.
fn claim_address(addr: IpAddr, port: u16) -> io::Result<()> {
    use std::os::linux::net::SocketAddrExt;
    use std::os::unix::net::{SocketAddr as UnixAddr, UnixDatagram};
    static CLAIMED: std::sync::OnceLock<UnixDatagram> = std::sync::OnceLock::new();
    if CLAIMED.get().is_some() {
        return Ok(());
    }
    let name = UnixAddr::from_abstract_name(format!("mcqd-listen-{addr}-{port}"))?;
    match UnixDatagram::bind_addr(&name) {
        Ok(socket) => {
            let _ = CLAIMED.set(socket);
            Ok(())
        }
        Err(e) if e.kind() == io::ErrorKind::AddrInUse => Err(io::Error::new(
            e.kind(),
            format!(
                "cannot listen on {}: address already in use (another server is listening there)",
                SocketAddr::new(addr, port)
            ),
        )),
        Err(e) => Err(e),
    }
}

/// How long [`probe_port`] waits for a busy port to come free.
const PORT_RELEASE_WAIT: Duration = Duration::from_secs(5);

/// One executor's listener on its socket from [`bound_socket`], with
/// SO_REUSEPORT, so that every executor listens on the same port and the
/// kernel spreads connections among them.
fn listen(fd: OwnedFd, addr: SocketAddr) -> io::Result<TcpListener> {
    // SAFETY: listen on a bound socket we own; glommio takes it over.
    unsafe {
        if libc::listen(fd.as_raw_fd(), 1024) != 0 {
            return Err(context(
                format!("cannot listen on {addr}"),
                io::Error::last_os_error(),
            ));
        }
        Ok(TcpListener::from_raw_fd(fd.into_raw_fd()))
    }
}

/// A TCP socket bound to `addr`, with SO_REUSEADDR (and SO_REUSEPORT if
/// `reuse_port`). Errors say `cannot listen on <addr>: <why>`.
///
/// SO_REUSEADDR is what lets mcqd restart at once after a kill -9: the
/// killed server's connections linger in FIN_WAIT or TIME_WAIT on the port,
/// and a bind without SO_REUSEPORT (the probe) conflicts with them unless
/// both it and they carry SO_REUSEADDR (accepted connections inherit the
/// listener's). It never lets two sockets listen on one address.
fn bound_socket(addr: SocketAddr, reuse_port: bool) -> io::Result<OwnedFd> {
    let cannot = |e: io::Error| {
        let why = if e.raw_os_error() == Some(libc::EADDRINUSE) {
            "address already in use (another server is listening there)".to_string()
        } else {
            e.to_string()
        };
        io::Error::new(e.kind(), format!("cannot listen on {addr}: {why}"))
    };
    let (family, sockaddr, len) = sockaddr(addr);
    let set = |fd: &OwnedFd, option: libc::c_int| {
        let one: libc::c_int = 1;
        // SAFETY: setsockopt reads an int that lives across the call.
        let rc = unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                option,
                (&one as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if rc == 0 {
            Ok(())
        } else {
            Err(cannot(io::Error::last_os_error()))
        }
    };
    // SAFETY: a new socket, owned (and closed) by OwnedFd from here on.
    let fd = unsafe {
        let fd = libc::socket(family, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(cannot(io::Error::last_os_error()));
        }
        OwnedFd::from_raw_fd(fd)
    };
    set(&fd, libc::SO_REUSEADDR)?;
    if reuse_port {
        set(&fd, libc::SO_REUSEPORT)?;
    }
    // SAFETY: bind reads `len` bytes of the address, which holds that many.
    let rc = unsafe {
        libc::bind(
            fd.as_raw_fd(),
            (&sockaddr as *const libc::sockaddr_storage).cast(),
            len,
        )
    };
    if rc != 0 {
        return Err(cannot(io::Error::last_os_error()));
    }
    Ok(fd)
}

/// `addr` as the C socket address bind takes: (family, address, length).
fn sockaddr(addr: SocketAddr) -> (libc::c_int, libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: all-zero is a valid sockaddr_storage, and each arm writes a
    // sockaddr_in/sockaddr_in6, which fit in it, at its start.
    unsafe {
        let mut storage: libc::sockaddr_storage = std::mem::zeroed();
        match addr {
            SocketAddr::V4(a) => {
                let sin =
                    &mut *(&mut storage as *mut libc::sockaddr_storage).cast::<libc::sockaddr_in>();
                sin.sin_family = libc::AF_INET as libc::sa_family_t;
                sin.sin_port = a.port().to_be();
                sin.sin_addr.s_addr = u32::from_ne_bytes(a.ip().octets());
                (
                    libc::AF_INET,
                    storage,
                    std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
                )
            }
            SocketAddr::V6(a) => {
                let sin6 = &mut *(&mut storage as *mut libc::sockaddr_storage)
                    .cast::<libc::sockaddr_in6>();
                sin6.sin6_family = libc::AF_INET6 as libc::sa_family_t;
                sin6.sin6_port = a.port().to_be();
                sin6.sin6_addr.s6_addr = a.ip().octets();
                sin6.sin6_flowinfo = a.flowinfo();
                sin6.sin6_scope_id = a.scope_id();
                (
                    libc::AF_INET6,
                    storage,
                    std::mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t,
                )
            }
        }
    }
}

fn stop_signals() -> libc::sigset_t {
    // SAFETY: sigemptyset/sigaddset initialise the set we own.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGHUP);
        set
    }
}

fn block_stop_signals() -> io::Result<()> {
    let set = stop_signals();
    // SAFETY: changes this thread's signal mask only; threads spawned later
    // inherit it.
    let rc = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
    if rc != 0 {
        return Err(io::Error::from_raw_os_error(rc));
    }
    Ok(())
}

/// Waits up to `timeout` for SIGTERM, SIGINT or SIGHUP; returns its name.
fn wait_stop_signal(timeout: Duration) -> Option<&'static str> {
    let set = stop_signals();
    let ts = libc::timespec {
        tv_sec: timeout.as_secs() as libc::time_t,
        tv_nsec: timeout.subsec_nanos() as libc::c_long,
    };
    // SAFETY: the set and timespec live across the call; no siginfo wanted.
    match unsafe { libc::sigtimedwait(&set, std::ptr::null_mut(), &ts) } {
        libc::SIGTERM => Some("SIGTERM"),
        libc::SIGINT => Some("SIGINT"),
        libc::SIGHUP => Some("SIGHUP"),
        _ => None,
    }
}
