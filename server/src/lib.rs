//! mcqd: a persistent message queue that speaks the memcache text protocol,
//! with MemcacheQ's semantics.
//!
//! # Layout
//! The modules follow a request's path through the server.
//!
//! - [`protocol`] turns bytes into requests and replies into bytes. No I/O,
//!   so every input is testable without a socket.
//! - [`net`] owns listeners and connections: it reads, parses a whole batch,
//!   submits it, and writes the replies back in request order (accepting,
//!   the connection, dispatch to shards and reply output are its parts).
//! - [`shard`] decides which executor owns a queue (a stable hash of its name)
//!   and carries requests for another executor's queues over glommio's
//!   shared-nothing channels; `stats` and `--metrics` ask every shard
//!   through it.
//! - [`store`] is one storage shard: the queues that hash to it and the log
//!   that makes them durable. [`queue`] is one queue's state there (its
//!   queued messages behind one type, `queue::Backlog`), [`limits`] the
//!   per-queue limits it enforces, [`cache`] its hot bodies.
//! - [`log`] is that log: records, segments, index files, group commit,
//!   recovery and space reclamation. It never imports the store: recovery
//!   hands what it finds to a sink the store implements, and maintenance
//!   reaches the queues through the `Locators` trait.
//! - [`disk`] is the storage seam under the log: O_DIRECT files in
//!   production, and (for tests, behind the `sim` feature) a simulated
//!   device that can lose power.
//! - [`manifest`] is the data directory's layout: its format, its shards,
//!   and the hash that puts a queue in its shard.
//!
//! Arrows point one way: net → shard → store → log → disk. Below them are
//! leaves any layer may use and that use none of the layers:
//! [`histogram`] (the commit latency histogram the log records into),
//! [`wake`] (a one-slot wake-up signal between tasks), [`idhash`] (integer
//! maps), [`turn`] (how a task with a large body in hand lets the others on
//! its executor run: glommio never preempts), [`memory`] (giving freed
//! memory back to the system).
//! - [`shared`] is what every executor shares (limits, connection counts,
//!   each executor's counters) and the signal that the server is stopping.
//! - [`stats`] sums the per-executor counters for `stats`; [`metrics`]
//!   serves the same numbers to Prometheus (`--metrics`).
//! - [`config`] is the command line; [`server`] the process lifecycle
//!   (executors, signals, graceful shutdown); [`port`] claims, probes and
//!   binds the listening port; [`daemon`] MemcacheQ's `-d`, `-P`, `-u` and
//!   `-r`; [`logging`] the stderr log; [`notify`] tells systemd when it is
//!   ready and when it stops.
//! - [`access`] is who may connect and what they may do: `-Y`'s authfile
//!   and handshake, the `[user …]` permissions, `mcqd hash-password`.
//! - [`offline`] is `mcqd inspect`, `verify` and `backup`: read-only tools
//!   on a data directory, beside the server rather than in its path.
//! - [`preflight`] is what mcqd checks before any executor starts (io_uring,
//!   locked memory, O_DIRECT in the data directory) and `mcqd check`;
//!   [`ping`] is `mcqd ping`, a health check.

pub mod logging;

pub mod access;
pub mod cache;
pub mod config;
pub mod daemon;
pub mod disk;
pub mod histogram;
pub mod idhash;
pub mod limits;
pub mod log;
pub mod manifest;
pub mod memory;
pub mod metrics;
pub mod net;
pub mod notify;
pub mod offline;
pub mod ping;
pub mod port;
pub mod preflight;
pub mod protocol;
pub mod queue;
pub mod server;
pub mod shard;
pub mod shared;
pub mod stats;
pub mod store;
#[cfg(test)]
pub(crate) mod testutil;
pub mod turn;
pub mod wake;
