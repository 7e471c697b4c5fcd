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

use crate::stats::{Counters, ServerInfo};

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
    /// begun. A failed accept is logged as `failed: <why>` and tried again
    /// after a pause.
    pub async fn accept(&self, listener: &TcpListener, failed: &str) -> Option<TcpStream> {
        loop {
            let accepted = future::or(async { Some(listener.accept().await) }, async {
                self.wait().await;
                None
            })
            .await;
            match accepted? {
                Ok(stream) => return Some(stream),
                Err(e) => {
                    log::warn!("{failed}: {e}");
                    glommio::timer::sleep(Duration::from_millis(10)).await;
                }
            }
        }
    }
}
