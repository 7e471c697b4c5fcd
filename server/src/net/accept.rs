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
use glommio::net::TcpListener;

use super::connection::Connection;
use crate::logging;
use crate::shard::Router;
use crate::shared::{Shared, StopSignal};
use crate::store::Reader;

/// How long shutdown waits for connections to finish what they had read
/// (a client that stopped reading its replies must not hold the process).
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Accepts connections on this executor until shutdown, then waits for them
/// to finish what they had read.
pub async fn serve(listener: TcpListener, router: Rc<Router>, shared: Arc<Shared>, me: usize) {
    let live = Rc::new(Cell::new(0usize));
    // Connection ids, unique in the process: the executor in the top bits.
    let mut next_reader: Reader = (me as Reader) << 48;
    let stop = StopSignal::start(shared.clone());
    while let Some(stream) = stop.accept(&listener, "accept failed").await {
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
            glommio::spawn_local(async move {
                let mut stream = stream;
                let _ = stream
                    .write_all(b"SERVER_ERROR too many connections\r\n")
                    .await;
                let _ = stream.close().await;
            })
            .detach();
            continue;
        }
        shared.total_connections.fetch_add(1, Ordering::Relaxed);
        let _ = stream.set_nodelay(true);
        let (router, shared, live, stop) =
            (router.clone(), shared.clone(), live.clone(), stop.clone());
        live.set(live.get() + 1);
        next_reader += 1;
        let reader = next_reader;
        glommio::spawn_local(async move {
            let peer = stream
                .peer_addr()
                .map_or_else(|_| "an unknown peer".to_string(), |a| a.to_string());
            log::debug!("executor {me}: connection from {peer}");
            let mut conn = Connection::new(stream, router, shared.clone(), stop, me, reader);
            if let Err(e) = conn.run().await {
                log::debug!("executor {me}: connection from {peer}: {e}");
            }
            conn.end().await;
            shared.connections.fetch_sub(1, Ordering::Relaxed);
            live.set(live.get() - 1);
        })
        .detach();
    }
    // Blocking gets end with `END` instead of holding their connections
    // (and the shutdown) for their whole wait.
    for store in router.local_stores() {
        store.end_waits();
    }
    let deadline = std::time::Instant::now() + DRAIN_TIMEOUT;
    while live.get() > 0 && std::time::Instant::now() < deadline {
        glommio::timer::sleep(Duration::from_millis(10)).await;
    }
    if live.get() > 0 {
        log::warn!(
            "executor {me}: {} connections still busy after {} s; closing them",
            live.get(),
            DRAIN_TIMEOUT.as_secs()
        );
    }
}
