//! What the main thread hands the generator threads, and what they send back.
//!
//! Kept apart from the loop so the contract between `main` and the threads
//! reads on its own: the plan is fixed before any thread starts and shared
//! read-only, the few counters every thread touches are atomics, and all
//! results travel back as messages, so no thread ever waits for another.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize};
use std::sync::Arc;

use hdrhistogram::Histogram;

use crate::protocol::GetOptions;
use crate::stats::Counters;
use crate::transport::{Connector, Stream};
use crate::verify::{ConsumerLog, ProducerLog};
use crate::workload::{KeyChooser, Pattern, SizeDist, Workload};

/// Read-only description of the run, shared by all threads.
pub struct Plan {
    pub workload: Workload,
    pub set_ratio: f64,
    pub pipeline: usize,
    pub value_size: SizeDist,
    pub traced: bool,
    pub verify: bool,
    pub names: Vec<Vec<u8>>,
    /// What follows a queue's name in the key of each kind of get (and in
    /// the `VALUE` that echoes it): `/t=<ms>` with --get-wait.
    pub get_options: GetOptions,
    pub keys: KeyChooser,
    pub pattern: Pattern,
    pub run: u32,
    pub n_conns: u32,
    pub t0: u64,
    pub measure_start: u64,
    pub end: Option<u64>,
    pub rate: Option<f64>,
    pub sched_slots: u64,
    pub open_limit: Option<u64>,
    pub timeout: u64,
    pub miss_backoff: u64,
    /// Nanoseconds to keep polling before sleeping in `epoll_wait`.
    pub busy_poll: u64,
    /// Re-establish connections the server closed (crash tests).
    pub reconnect: bool,
    /// `--reconnect-every`: requests per connection before it is closed and
    /// replaced by a new one (connection churn).
    pub reconnect_every: Option<u64>,
    /// How connections are opened (TLS, authentication), for reconnects.
    pub connector: Arc<Connector>,
    /// Gets are reliable reads (`/open`, `/close/open`; see [`crate::reliable`]).
    pub reliable: bool,
    pub seed: u64,
}

/// Mutable state shared by all threads (touched rarely).
pub struct Shared {
    /// Measured requests still to issue (closed loop with --requests).
    pub budget: Option<AtomicU64>,
    /// Producer connections (pairs) that may still produce.
    pub producers_active: AtomicUsize,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// set/get chosen per request (mixed, set and get workloads).
    Mixed,
    Producer(u32),
    Consumer(u32),
}

/// A connected socket and what it is for.
pub struct ConnSpec {
    pub id: u32,
    pub stream: Stream,
    pub server: String,
    pub addr: SocketAddr,
    pub role: Role,
    /// Its slot in the open-loop schedule, if it is scheduled.
    pub slot: Option<u64>,
}

/// What a thread reports to the main thread.
// One message per thread per second: its size does not matter.
#[allow(clippy::large_enum_variant)]
pub enum Msg {
    /// Everything completed during interval `index` (1 s each from t0);
    /// `counters` are cumulative. `last` marks the thread's final, partial
    /// interval.
    Interval {
        thread: usize,
        index: u64,
        last: bool,
        counters: Counters,
        hist: Histogram<u64>,
        e2e: Histogram<u64>,
    },
    Done {
        thread: usize,
        out: Box<ThreadOut>,
    },
}

pub struct ThreadOut {
    pub counters: Counters,
    /// Open loop: how late requests were written, relative to when they were
    /// due (generator lateness plus waiting for a free pipeline slot).
    pub send_lag: Histogram<u64>,
    /// Completion time of the last measured request.
    pub last_complete: u64,
    pub producers: Vec<ProducerLog>,
    pub consumer: Option<ConsumerLog>,
    /// `get`s in flight on connections that broke: each may have popped a
    /// message whose reply was lost (at-most-once delivery).
    pub gets_in_doubt: u64,
    pub reconnects: u64,
    /// Connections given up for good.
    pub dead: u64,
    /// Set-up time (connect, TLS handshake, authentication) of the
    /// connections opened in the measured window, in ns.
    pub setup: Histogram<u64>,
}
