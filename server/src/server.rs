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
//! before closing their stores. An executor glommio cannot even build
//! ends the start at once (the others would wait for it in the channel
//! mesh, before opening anything). A signal while stopping exits at once. A
//! panic anywhere aborts the process with a log line (the panic hook), as a
//! panicking executor would otherwise leave its shards unreachable.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use glommio::channels::channel_mesh::MeshBuilder;
use glommio::{ExecutorJoinHandle, LocalExecutorBuilder, Placement};

use crate::config::{Config, TlsOptions};
use crate::daemon::{self, context};
use crate::limits::SharedLimits;
use crate::manifest;
use crate::net::TlsContext;
use crate::port::{bound_socket, probe_port};
use crate::shard::Envelope;
use crate::shared::Shared;
use crate::stats::{Counters, ServerInfo};
use crate::store::SyncMode;

mod executor;

use executor::{executor_main, Finished, Layout, Progress, Sockets};

/// Memory each executor registers with io_uring for DMA buffers. Kept small
/// because an unprivileged user's RLIMIT_MEMLOCK is often 8 MiB for the whole
/// process; I/O beyond it still works with ordinary allocations.
pub const IO_MEMORY: usize = 2 << 20;

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

/// Runs the server until it is told to stop. Errors are start-up failures.
/// Installs the process's panic hook: any panic ends the process (see
/// [`crate::logging::install_panic_hook`]).
pub fn run(config: Config) -> io::Result<()> {
    let mut config = checked(config)?;
    // First, as every later step takes descriptors, and while mcqd may
    // still be root: see `crate::preflight::nofile`.
    let (connections, warning) =
        crate::preflight::nofile::raise(&config).map_err(io::Error::other)?;
    if let Some(warning) = warning {
        log::warn!("{warning}");
    }
    config.max_connections = connections as usize;
    let tls_options = tls_options(&config)?;
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
    let (lock, created) = claim_data_dir(&mut config)?;
    let listeners = bind_listeners(&config, executors)?;
    let pid_file = config
        .pid_file
        .as_deref()
        .map(daemon::PidFile::write)
        .transpose()?;
    drop_root(&config, created)?;
    // As the user mcqd runs as, so that what loads now loads again on
    // `refresh_certs` and SIGHUP.
    let tls = tls_options
        .map(|options| TlsContext::load(options, config.ssl_handshake_timeout))
        .transpose()
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    if let Some(tls) = &tls {
        log::info!("TLS: {}", tls.describe());
    }
    // As the user mcqd runs as, before any executor: see `crate::preflight`.
    for warning in crate::preflight::before_start(&config.data_dir, executors, IO_MEMORY)
        .map_err(io::Error::other)?
    {
        log::warn!("{warning}");
    }
    let layout = open_layout(&config, executors)?;

    let limits = SharedLimits::open(config.config.as_deref())
        .map(Arc::new)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    // Read as the user mcqd runs as, who must be able to read them again
    // at a reload.
    let access = crate::access::Access::open(
        config.auth_file.as_deref(),
        config.config.as_deref(),
        Duration::from_secs(config.auth_timeout),
    )
    .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?
    .map(Arc::new);
    let metrics_token = config
        .metrics_token_file
        .as_deref()
        .map(read_token)
        .transpose()?;
    block_stop_signals()?;
    let shared = shared_state(&config, limits, executors, tls, access, metrics_token);
    let progress = Arc::new(Progress::default());
    let mut handles = start_executors(&config, layout, listeners, &shared, &progress)?;
    let reason = serve_until_stopped(&config, layout, &shared, &progress, daemon);
    if let Some(me) = progress.not_started.load(Ordering::SeqCst).checked_sub(1) {
        let why = match handles.swap_remove(me).join() {
            Err(e) => e.to_string(),
            Ok(_) => "it ended at once".into(),
        };
        return Err(io::Error::other(format!(
            "executor {me} could not start: {why}"
        )));
    }
    log::info!("stopping ({reason}): finishing requests in flight");
    crate::notify::stopping();
    shared.stopping.store(true, Ordering::SeqCst);
    if !all_stopped(executors, &progress, handles) {
        return Err(io::Error::other(
            "stopped after a failure (see the lines above)",
        ));
    }
    drop(pid_file);
    drop(lock);
    log::info!("stopped cleanly");
    Ok(())
}

/// `config` checked, its warnings logged and its paths made absolute
/// (the logger is set up first, so that every error after is logged).
fn checked(config: Config) -> io::Result<Config> {
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
    if let Some(path) = &config.auth_file {
        config.auth_file = Some(absolute(path, "-Y")?);
    }
    Ok(config)
}

/// -Z's settings, their files' paths made absolute (before -d moves to /).
fn tls_options(config: &Config) -> io::Result<Option<TlsOptions>> {
    let Some(mut options) = config
        .tls()
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?
    else {
        return Ok(None);
    };
    options.chain_cert = absolute(&options.chain_cert, "-o ssl_chain_cert")?;
    if let Some(key) = &options.key {
        options.key = Some(absolute(key, "-o ssl_key")?);
    }
    if let Some(ca) = &options.ca_cert {
        options.ca_cert = Some(absolute(ca, "-o ssl_ca_cert")?);
    }
    Ok(Some(options))
}

/// Creates the data directory if need be, resolves it to its canonical path
/// and locks it: the lock, and whether mcqd created the directory.
fn claim_data_dir(config: &mut Config) -> io::Result<(File, bool)> {
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
    Ok((lock, created))
}

/// What the executors will listen on, bound while mcqd may still be root.
struct Listeners {
    /// Per executor, one socket per -l address (in `Config::listeners`'
    /// order), bound, not yet listening.
    sockets: Vec<Vec<OwnedFd>>,
    /// `--metrics`, listening already.
    metrics: Option<OwnedFd>,
}

/// Binds every -l address for every executor and the metrics address,
/// after making sure no other server listens on them.
fn bind_listeners(config: &Config, executors: usize) -> io::Result<Listeners> {
    let addresses = config.listeners();
    for listener in &addresses {
        probe_port(listener.addr.ip(), listener.addr.port())?;
    }
    // Bound here so that a taken address stops the start with the flag's
    // name; served by executor 0 (see `crate::metrics`).
    let metrics = match config.metrics {
        Some(addr) => Some(OwnedFd::from(std::net::TcpListener::bind(addr).map_err(
            |e| io::Error::new(e.kind(), format!("--metrics {addr}: cannot listen: {e}")),
        )?)),
        None => None,
    };
    // Bound (not yet listening) here, so that a port below 1024 works with
    // -u: the executors listen on them once their shards are open.
    let sockets = (0..executors)
        .map(|_| {
            addresses
                .iter()
                .map(|l| bound_socket(l.addr, true))
                .collect::<io::Result<Vec<_>>>()
        })
        .collect::<io::Result<Vec<_>>>()?;
    Ok(Listeners { sockets, metrics })
}

/// `-u`: becomes that user, who then owns the data directory's lock file
/// (and the directory, if mcqd `created` it).
fn drop_root(config: &Config, created: bool) -> io::Result<()> {
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
    Ok(())
}

/// Reads the manifest (writing it for a new data directory) and makes
/// every shard's directory.
fn open_layout(config: &Config, executors: usize) -> io::Result<Layout> {
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
    Ok(Layout {
        executors,
        shards,
        format,
    })
}

/// What the executors share, as the server starts: no connections yet,
/// every counter at zero.
fn shared_state(
    config: &Config,
    limits: Arc<SharedLimits>,
    executors: usize,
    tls: Option<TlsContext>,
    access: Option<Arc<crate::access::Access>>,
    metrics_token: Option<Box<[u8]>>,
) -> Arc<Shared> {
    Arc::new(Shared {
        limits,
        access,
        metrics_token,
        shutdown_enabled: config.enable_shutdown,
        shutdown_requested: AtomicBool::new(false),
        max_connections: config.max_connections,
        stats_queues: config.stats_queues,
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
        tls,
    })
}

/// `--metrics-token-file`: the token, without surrounding whitespace.
fn read_token(path: &Path) -> io::Result<Box<[u8]>> {
    let text = std::fs::read(path)
        .map_err(|e| context(format!("--metrics-token-file {}", path.display()), e))?;
    let token = text.trim_ascii();
    if token.is_empty() || token.iter().any(|b| !b.is_ascii_graphic()) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "--metrics-token-file {}: the token must be one word of printable ASCII",
                path.display()
            ),
        ));
    }
    Ok(token.into())
}

/// Starts one executor thread per socket, each pinned to a CPU this
/// process may run on.
fn start_executors(
    config: &Config,
    layout: Layout,
    listeners: Listeners,
    shared: &Arc<Shared>,
    progress: &Arc<Progress>,
) -> io::Result<Vec<ExecutorJoinHandle<io::Result<()>>>> {
    let Listeners {
        sockets,
        mut metrics,
    } = listeners;
    let mesh = MeshBuilder::<Envelope, _>::full(layout.executors, 1024);
    let cpus = allowed_cpus();
    // Before the executors are pinned: the thread keeps this process's CPUs.
    crate::disk::start_closer();

    let mut handles = Vec::new();
    for (me, sockets) in sockets.into_iter().enumerate() {
        let (config, shared, progress, mesh) = (
            config.clone(),
            shared.clone(),
            progress.clone(),
            mesh.clone(),
        );
        let metrics = if me == 0 { metrics.take() } else { None };
        let unstarted = Unstarted {
            me,
            progress: progress.clone(),
            ran: false,
        };
        let handle = LocalExecutorBuilder::new(Placement::Fixed(cpus[me % cpus.len()]))
            .name(&format!("mcqd-{me}"))
            .io_memory(IO_MEMORY)
            .spawn(move || {
                unstarted.ran();
                async move {
                    crate::turn::take_turns_here();
                    let _finished = Finished(&progress.finished);
                    executor_main(
                        me,
                        layout,
                        &config,
                        Sockets {
                            listeners: sockets,
                            metrics,
                        },
                        shared,
                        &progress,
                        mesh,
                    )
                    .await
                }
            })
            .map_err(|e| io::Error::other(format!("cannot start executor {me}: {e}")))?;
        handles.push(handle);
    }
    Ok(handles)
}

/// The CPUs this process may run on, in order: its affinity mask, which a
/// container's cpuset (`docker run --cpuset-cpus`, Kubernetes' static CPU
/// manager) or `taskset` narrows. Executors are pinned to these: pinned to
/// CPU 0 in a container given CPU 1 only, glommio could not build them.
fn allowed_cpus() -> Vec<usize> {
    // SAFETY: sched_getaffinity fills the zeroed set we own; CPU_ISSET
    // reads it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) == 0 {
            let allowed: Vec<usize> = (0..libc::CPU_SETSIZE as usize)
                .filter(|&cpu| libc::CPU_ISSET(cpu, &set))
                .collect();
            if !allowed.is_empty() {
                return allowed;
            }
        }
    }
    (0..std::thread::available_parallelism().map_or(1, |n| n.get())).collect()
}

/// Moved into an executor's start closure, which glommio calls only once
/// it has built the executor: dropped without [`Unstarted::ran`], it tells
/// the main thread that executor `me` never started.
struct Unstarted {
    me: usize,
    progress: Arc<Progress>,
    ran: bool,
}

impl Unstarted {
    fn ran(mut self) {
        self.ran = true;
    }
}

impl Drop for Unstarted {
    fn drop(&mut self) {
        if !self.ran {
            self.progress
                .not_started
                .store(self.me + 1, Ordering::SeqCst);
        }
    }
}

/// The main thread's watch while the executors serve: it reloads the limits
/// (and with -Z the TLS certificates) on SIGHUP, tells systemd (and a `-d`
/// parent) once every executor is serving, and returns why the server must
/// stop.
fn serve_until_stopped(
    config: &Config,
    layout: Layout,
    shared: &Shared,
    progress: &Progress,
    mut daemon: Option<daemon::Daemon>,
) -> String {
    let mut announced = false;
    loop {
        if let Some(signal) = wait_stop_signal(Duration::from_millis(100)) {
            if signal == "SIGHUP" {
                // Ready again either way: a refused file leaves the limits
                // in force, and the server never stopped serving. Before
                // the first READY=1 there is nothing to tell.
                if announced {
                    crate::notify::reloading();
                }
                let reloaded = crate::access::reload(shared);
                let certs = shared.tls.as_ref().map(|tls| (tls, tls.refresh()));
                if announced {
                    crate::notify::ready();
                }
                match reloaded {
                    Ok(what) => log::info!("SIGHUP: {what}"),
                    Err(e) => log::warn!("SIGHUP: reload failed, everything in force stays: {e}"),
                }
                match certs {
                    Some((tls, Ok(()))) => {
                        log::info!("SIGHUP: TLS certificates reloaded ({})", tls.describe())
                    }
                    Some((_, Err(e))) => {
                        log::warn!("SIGHUP: the TLS certificates in force stay: {e}")
                    }
                    None => {}
                }
                continue;
            }
            return format!("signal {signal}");
        } else if shared.shutdown_requested.load(Ordering::SeqCst) {
            return "the shutdown command".into();
        } else if progress.failed.load(Ordering::SeqCst) {
            return "an executor failed".into();
        } else if progress.not_started.load(Ordering::SeqCst) != 0 {
            return "an executor could not start".into();
        } else if !announced && progress.serving.load(Ordering::SeqCst) == layout.executors {
            announced = true;
            let metrics = config
                .metrics
                .map(|addr| format!(", metrics at http://{addr}/metrics"))
                .unwrap_or_default();
            let listening: Vec<String> = config
                .listeners()
                .iter()
                .map(|l| match l.tls {
                    true => format!("{} (TLS)", l.addr),
                    false if config.enable_ssl => format!("{} (notls)", l.addr),
                    false => l.addr.to_string(),
                })
                .collect();
            log::info!(
                "listening on {} ({} executors, {} shards, sync {}, data {}{metrics})",
                listening.join(", "),
                layout.executors,
                layout.shards,
                describe(config.sync_mode()),
                config.data_dir.display()
            );
            if let Some(daemon) = daemon.take() {
                daemon.ready();
            }
            crate::notify::ready();
        }
    }
}

/// Waits for the executors to finish and joins them; false if any failed.
fn all_stopped(
    executors: usize,
    progress: &Progress,
    handles: Vec<ExecutorJoinHandle<io::Result<()>>>,
) -> bool {
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
    !failed
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
