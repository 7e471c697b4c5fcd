//! Accepting connections, refusing those over `-c`, and letting the
//! accepted ones finish what they had read when the server stops.
//!
//! A refused client is told why (`SERVER_ERROR too many connections`)
//! before its socket closes, and the refusals are logged at most once a
//! second, since a client retrying in a loop would otherwise flood the log.
//! The drain at shutdown is bounded, so a client that stopped reading its
//! replies cannot hold the process.

use std::cell::Cell;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use futures_lite::AsyncWriteExt;
use glommio::net::{TcpListener, TcpStream};

use super::connection::Connection;
use super::tls::{self, Refused, Stream};
use crate::logging;
use crate::shard::Router;
use crate::shared::{Shared, StopSignal};
use crate::store::Reader;

/// How long shutdown waits for connections to finish what they had read
/// (a client that stopped reading its replies must not hold the process).
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// One executor's listeners: each of -l's addresses, and whether it speaks
/// TLS.
pub type Listeners = Vec<(TcpListener, bool)>;

/// What an executor's accept loops share.
struct Executor {
    router: Rc<Router>,
    shared: Arc<Shared>,
    me: usize,
    stop: StopSignal,
    /// Connections open on this executor.
    live: Cell<usize>,
    /// The last connection id handed out (ids are unique in the process:
    /// the executor in the top bits).
    reader: Cell<Reader>,
}

/// Accepts connections on this executor's listeners until shutdown, then
/// waits for them to finish what they had read.
pub async fn serve(listeners: Listeners, router: Rc<Router>, shared: Arc<Shared>, me: usize) {
    let stop = StopSignal::start(shared.clone());
    let executor = Rc::new(Executor {
        router: router.clone(),
        shared,
        me,
        stop,
        live: Cell::new(0),
        reader: Cell::new((me as Reader) << 48),
    });
    let loops: Vec<_> = listeners
        .into_iter()
        .map(|(listener, tls)| glommio::spawn_local(accept_loop(executor.clone(), listener, tls)))
        .collect();
    for accepting in loops {
        accepting.await;
    }
    // Blocking gets end with `END` instead of holding their connections
    // (and the shutdown) for their whole wait.
    for store in router.local_stores() {
        store.end_waits();
    }
    let deadline = std::time::Instant::now() + DRAIN_TIMEOUT;
    while executor.live.get() > 0 && std::time::Instant::now() < deadline {
        glommio::timer::sleep(Duration::from_millis(10)).await;
    }
    if executor.live.get() > 0 {
        log::warn!(
            "executor {me}: {} connections still busy after {} s; closing them",
            executor.live.get(),
            DRAIN_TIMEOUT.as_secs()
        );
    }
}

/// Accepts on one listener until shutdown; each connection gets a task of
/// its own (which does its TLS handshake, if `tls`).
async fn accept_loop(executor: Rc<Executor>, listener: TcpListener, tls: bool) {
    let shared = &executor.shared;
    while let Some(stream) = executor.stop.accept(&listener, "accept failed").await {
        let open = shared.connections.fetch_add(1, Ordering::Relaxed) + 1;
        if open > shared.max_connections {
            shared.connections.fetch_sub(1, Ordering::Relaxed);
            // A client retrying in a loop must not flood the log.
            static REFUSALS: logging::Throttle = logging::Throttle::new(1000);
            if let Some(n) = REFUSALS.hit() {
                log::warn!(
                    "connection refused: limit of {} connections (-c) reached ({n} refused since the last such line)",
                    shared.max_connections
                );
            }
            // Over TLS the client cannot read the line: it sees the
            // connection closed instead.
            glommio::spawn_local(async move {
                let mut stream = stream;
                if !tls {
                    let _ = stream
                        .write_all(b"SERVER_ERROR too many connections\r\n")
                        .await;
                }
                let _ = stream.close().await;
            })
            .detach();
            continue;
        }
        shared.total_connections.fetch_add(1, Ordering::Relaxed);
        let _ = stream.set_nodelay(true);
        executor.live.set(executor.live.get() + 1);
        executor.reader.set(executor.reader.get() + 1);
        let reader = executor.reader.get();
        let executor = executor.clone();
        glommio::spawn_local(async move {
            connection(&executor, stream, tls, reader).await;
            executor.shared.connections.fetch_sub(1, Ordering::Relaxed);
            executor.live.set(executor.live.get() - 1);
        })
        .detach();
    }
}

/// One connection's life, from its TLS handshake (if `tls`) to its close.
async fn connection(executor: &Executor, stream: TcpStream, tls: bool, reader: Reader) {
    let Executor {
        router,
        shared,
        me,
        stop,
        ..
    } = executor;
    let me = *me;
    let peer = stream
        .peer_addr()
        .map_or_else(|_| "an unknown peer".to_string(), |a| a.to_string());
    let counters = &shared.counters[me];
    let (stream, tls_identity) = match (tls, &shared.tls) {
        (true, Some(context)) => match tls::accept(context, stream, stop, counters).await {
            Ok(accepted) => accepted,
            Err(Refused::Stopping) => return,
            Err(Refused::Failed(why)) => {
                counters.add(&counters.ssl_handshake_errors, 1);
                // A scanner or a misconfigured client retrying in a loop
                // must not flood the log.
                static FAILURES: logging::Throttle = logging::Throttle::new(1000);
                if let Some(n) = FAILURES.hit() {
                    log::info!(
                        "TLS handshake with {peer} failed: {why} ({n} failed since the last such line)"
                    );
                }
                return;
            }
        },
        _ => (Stream::Plain(stream), None),
    };
    log::debug!(
        "executor {me}: connection from {peer}{}",
        tls::describe(&stream)
    );
    if let Some(user) = &tls_identity {
        log::trace!(
            "executor {me}: {peer}'s client certificate names {}",
            logging::escape(user.as_bytes())
        );
    }
    let mut conn = Connection::new(
        stream,
        router.clone(),
        shared.clone(),
        stop.clone(),
        me,
        reader,
        tls_identity,
    );
    if let Err(e) = conn.run().await {
        log::debug!("executor {me}: connection from {peer}: {e}");
    }
    conn.end().await;
}
