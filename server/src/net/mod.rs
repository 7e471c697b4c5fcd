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
//! # TLS
//! With -Z a listener speaks TLS unless it is `notls:`. The handshake runs
//! in the connection's task (so on every executor, not in one acceptor),
//! within `--ssl-handshake-timeout`, before any request is read; after it
//! the connection works exactly as a plaintext one, on a stream that is
//! either (`tls::Stream`). A read over TLS takes everything rustls has
//! decrypted without waiting for the socket again, so a pipeline never
//! stalls on bytes buffered inside TLS. A client certificate's name is the
//! connection's `tls_identity` (see `tls::identity`).
//!
//! # Layout
//! `accept` takes connections (and does their TLS handshake) and drains
//! them at shutdown; `tls` holds the certificates in force, their reload
//! and the stream; `connection` reads, parses a batch and answers it;
//! `dispatch` turns each request into operations on its shards; `output`
//! awaits their replies and renders them, in request order; `auth` is the
//! `-Y` handshake and the permission check of each request.

mod accept;
mod auth;
mod connection;
mod dispatch;
mod output;
mod tls;

pub use accept::{serve, Listeners};
pub use tls::{identity, TlsContext};
