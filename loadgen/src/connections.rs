//! Opening the connections and deciding what each one does.
//!
//! Everything is connected before the first request, so that connection
//! setup is never measured as request latency (`--reconnect-every` times the
//! connections it opens later on their own) and a server that refuses
//! connections fails the run at once. Which server, thread, role and schedule slot a connection
//! gets follows from its number alone, so a run is laid out the same way
//! every time.

use std::net::{SocketAddr, ToSocketAddrs};

use crate::cli::Args;
use crate::engine::{ConnSpec, Role};
use crate::transport::Connector;
use crate::workload::Workload;

/// Every server's name and its first address.
pub fn resolve(servers: &[String]) -> Result<Vec<(String, SocketAddr)>, String> {
    servers
        .iter()
        .map(|s| {
            let addr = s
                .to_socket_addrs()
                .map_err(|e| format!("cannot resolve {s}: {e}"))?
                .next()
                .ok_or_else(|| format!("{s} resolves to no address"))?;
            Ok((s.clone(), addr))
        })
        .collect()
}

/// The run's connections, open and assigned.
pub struct Layout {
    /// Each thread's connections.
    pub per_thread: Vec<Vec<ConnSpec>>,
    pub n_conns: usize,
    /// Producer connections (pairs).
    pub producers: usize,
    /// Connections with a slot in the open-loop schedule.
    pub slots: u64,
}

/// Opens `--connections` connections, spread round-robin over the servers
/// and `threads` threads. Pairs: connection `2k` produces and `2k + 1`
/// consumes, both on queue `k` (modulo `--queues`) of the same server.
pub fn open(
    args: &Args,
    servers: &[(String, SocketAddr)],
    threads: usize,
    connector: &Connector,
) -> Result<Layout, String> {
    let pairs = args.workload == Workload::Pairs;
    let n_conns = if pairs {
        args.connections / 2 * 2
    } else {
        args.connections
    };
    if pairs && n_conns != args.connections {
        eprintln!("mcq-loadgen: pairs need an even number of connections; using {n_conns}");
    }
    let mut per_thread: Vec<Vec<ConnSpec>> = (0..threads).map(|_| Vec::new()).collect();
    let mut slot = 0u64;
    let mut producers = 0usize;
    for id in 0..n_conns {
        let (role, server_idx) = if pairs {
            let pair = id / 2;
            let queue = (pair as u64 % args.queues) as u32;
            let role = if id % 2 == 0 {
                producers += 1;
                Role::Producer(queue)
            } else {
                Role::Consumer(queue)
            };
            (role, pair % servers.len())
        } else {
            (Role::Mixed, id % servers.len())
        };
        let (name, addr) = &servers[server_idx];
        let stream = connector.connect(addr, name, args.timeout)?;
        let scheduled = !matches!(role, Role::Consumer(_));
        per_thread[id % threads].push(ConnSpec {
            id: id as u32,
            stream,
            server: name.clone(),
            addr: *addr,
            role,
            slot: scheduled.then(|| {
                slot += 1;
                slot - 1
            }),
        });
    }
    Ok(Layout {
        per_thread,
        n_conns,
        producers,
        slots: slot,
    })
}
