//! What every executor shares, and how each learns that the server is
//! stopping.
//!
//! # Why a module of its own
//! Connections, `stats` and `--metrics` all read this state, and the
//! process lifecycle writes it; none of them owns it. Here it depends on
//! nothing above it, so `stats` and `metrics` can read the counters
//! without reaching into the connection code.

use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_lite::future;
use glommio::net::{TcpListener, TcpStream};
use glommio::sync::Semaphore;

use crate::logging;
use crate::stats::{Counters, ServerInfo};

/// The pause after a failed accept, and the longest it grows to while the
/// process is out of descriptors (see [`StopSignal::accept`]).
const FIRST_PAUSE: Duration = Duration::from_millis(10);
const LONGEST_PAUSE: Duration = Duration::from_secs(1);

/// What every executor shares: limits and process-wide counters. Only
/// atomics, touched at accept, close and `stats`, never per request.
pub struct Shared {
    /// Per-queue limits (`reload` swaps them).
    pub limits: Arc<crate::limits::SharedLimits>,
    /// Authentication and permissions (`-Y`, `[user …]` sections); `None`
    /// without either, when nothing is checked.
    pub access: Option<Arc<crate::access::Access>>,
    /// `--metrics-token-file`'s token.
    pub metrics_token: Option<Box<[u8]>>,
    /// `shutdown` is allowed (`--enable-shutdown`) …
    pub shutdown_enabled: bool,
    /// … and was asked for: the main thread stops the server as on SIGTERM.
    pub shutdown_requested: AtomicBool,
    pub max_connections: usize,
    /// Queues whose per-queue lines `stats` lists (`--stats-queues`).
    pub stats_queues: usize,
    pub max_message_size: usize,
    pub connections: AtomicUsize,
    pub total_connections: AtomicUsize,
    pub stopping: AtomicBool,
    pub info: ServerInfo,
    /// Counters of every executor, summed by `stats`.
    pub counters: Vec<Arc<Counters>>,
    /// -Z: the TLS certificates in force (`refresh_certs` and SIGHUP
    /// reload them).
    pub tls: Option<crate::net::TlsContext>,
}

/// Resolves once shutdown has been requested (polls the process-wide flag;
/// one poller per executor, see [`StopSignal`]).
async fn stopping(shared: &Shared) {
    while !shared.stopping.load(Ordering::Relaxed) {
        glommio::timer::sleep(Duration::from_millis(20)).await;
    }
}

/// Shutdown as seen by one executor's tasks. One task polls the shared flag;
/// everyone else waits on a permit-less semaphore that is closed on
/// shutdown, which wakes them all at once — so a thousand idle connections
/// cost no timer wake-ups.
#[derive(Clone)]
pub struct StopSignal(Rc<Semaphore>);

impl StopSignal {
    pub fn start(shared: Arc<Shared>) -> StopSignal {
        let signal = StopSignal(Rc::new(Semaphore::new(0)));
        let closer = signal.0.clone();
        glommio::spawn_local(async move {
            stopping(&shared).await;
            closer.close();
        })
        .detach();
        signal
    }

    /// Resolves once shutdown has begun.
    pub async fn wait(&self) {
        let _ = self.0.acquire(1).await;
    }

    /// The next connection on `listener`, or `None` once shutdown has
    /// begun.
    ///
    /// Shutdown is looked at before every try: an accept that fails at
    /// once would otherwise be all this loop ever saw, and a SIGTERM went
    /// unheeded. With no descriptor free, every accept does: glommio first
    /// tries a plain accept4(2), and the kernel takes the new connection's
    /// descriptor before it looks for a connection, so it fails with EMFILE
    /// at once for as long as the limit is reached.
    ///
    /// A failed accept is tried again after a pause, itself cut short by
    /// shutdown: out of descriptors or memory (EMFILE, ENFILE, ENOBUFS,
    /// ENOMEM) the pause doubles from 10 ms up to 1 s, since trying sooner
    /// only spins until a connection closes; after other failures (a client
    /// gone before it was accepted) it stays at 10 ms. Failures are logged
    /// as `<failed>: <why>` at most once a second for the whole process
    /// (every executor's listeners, `--metrics`' too, run out of the same
    /// descriptors), with how many there were since the line before.
    pub async fn accept(&self, listener: &TcpListener, failed: &str) -> Option<TcpStream> {
        static FAILURES: logging::Throttle = logging::Throttle::new(1000);
        let mut pause = FIRST_PAUSE;
        loop {
            let accepted = future::or(
                async {
                    self.wait().await;
                    None
                },
                async { Some(listener.accept().await) },
            )
            .await;
            let error = match accepted? {
                Ok(stream) => return Some(stream),
                Err(e) => crate::disk::dma::to_io(e),
            };
            if let Some(n) = FAILURES.hit() {
                log::warn!(
                    "{failed}: {error} ({n} since the last such line; retrying after {} ms)",
                    pause.as_millis()
                );
            }
            let stopped = future::or(
                async {
                    self.wait().await;
                    true
                },
                async {
                    glommio::timer::sleep(pause).await;
                    false
                },
            )
            .await;
            if stopped {
                return None;
            }
            let starved = matches!(
                error.raw_os_error(),
                Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
            );
            pause = if starved {
                (pause * 2).min(LONGEST_PAUSE)
            } else {
                FIRST_PAUSE
            };
        }
    }
}
