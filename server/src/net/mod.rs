//! Listeners and connections: bytes in, requests submitted, replies out in
//! request order.
//!
//! # Why a connection works in batches
//! A connection reads what the socket has, parses every whole request in it,
//! and submits them all to their shards before awaiting any reply. Each
//! submission changes queue state at once and hands back a future for its
//! durability, so a pipeline of 2,000 `set`s becomes one group commit rather
//! than 2,000, and a `get` after a `set` in the same batch sees that `set`.
//! The replies are then awaited in request order and written with one
//! `write`. Bytes that arrive meanwhile wait in the socket buffer, which is
//! where back-pressure on a client that sends faster than the log syncs
//! belongs.
//!
//! # Layout
//! `accept` takes connections and drains them at shutdown; `connection`
//! reads, parses a batch and answers it; `dispatch` turns each request
//! into operations on its shards; `output` awaits their replies and
//! renders them, in request order; `auth` is the `-Y` handshake and the
//! permission check of each request.

mod accept;
mod auth;
mod connection;
mod dispatch;
mod output;

pub use accept::serve;
