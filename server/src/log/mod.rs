//! The log of one storage shard: segments of checksummed records written
//! with O_DIRECT, group commit, recovery, and space reclamation.
//!
//! # Layers
//! - [`record`]: the byte format of one record (header + CRC32C + body).
//! - [`segment`]: segment file names, the verified scan that recovery, index
//!   rebuilds and compaction share, and OS-error plumbing.
//! - [`writer`]: the in-memory tail of the log, segment rolling with
//!   checkpoints, the group-commit task and the interval-sync timer.
//! - [`recovery`]: rebuilding queue state from index files and scans.
//!
//! Index files live in `crate::index`; the byte-level format of everything on
//! disk is in `docs/format.md`.

pub mod compaction;
pub mod error;
pub mod record;
pub mod recovery;
pub mod segment;
pub mod writer;

pub use writer::{Log, Notify};
