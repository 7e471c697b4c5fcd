//! Segment files as the log tracks them.

use std::path::PathBuf;
use std::rc::Rc;

use crate::disk::DiskFile;
use crate::log::index::SegmentIndex;

/// One segment file, sealed or open.
pub struct Seg {
    pub first_lsn: u64,
    /// `None` only for a just-rolled segment until the committer has moved
    /// the spare into place.
    pub file: Option<Rc<dyn DiskFile>>,
    /// The spare that becomes this segment's file.
    pub(super) spare: Option<Spare>,
    /// End of its records (for the open segment: of those written).
    pub data_len: u64,
    /// Bytes the `.log` file occupies.
    pub disk_bytes: u64,
    /// Bytes of its `.idx` file (0 if none yet).
    pub idx_bytes: u64,
    /// Unconsumed messages whose current record is here.
    pub live: u64,
    pub live_bytes: u64,
    /// Reads in flight.
    pub pins: u32,
    /// Out-of-line bodies still being written into it (see `log::region`):
    /// until they are, it is neither indexed nor compacted nor deleted.
    pub regions: u32,
    /// No more records will be appended.
    pub sealed: bool,
    /// Its final bytes are written (and, if sealed, synced).
    pub complete: bool,
    /// Index to write once `complete`.
    pub(super) pending_index: Option<SegmentIndex>,
    /// Highest lsn of a record that made one of its messages dead.
    pub dead_lsn: u64,
    /// Compaction gave up on it (an unreadable record keeps it live).
    pub no_compact: bool,
    /// End of its checkpoint (0 when unknown, for segments of an earlier
    /// run): compaction can never reclaim these bytes.
    pub checkpoint_end: u64,
}

impl Seg {
    pub(super) fn new(first_lsn: u64, file: Option<Rc<dyn DiskFile>>, disk_bytes: u64) -> Seg {
        Seg {
            first_lsn,
            file,
            spare: None,
            data_len: 0,
            disk_bytes,
            idx_bytes: 0,
            live: 0,
            live_bytes: 0,
            pins: 0,
            regions: 0,
            sealed: false,
            complete: false,
            pending_index: None,
            dead_lsn: 0,
            no_compact: false,
            checkpoint_end: 0,
        }
    }

    /// A sealed segment found by recovery, its index written or loaded.
    pub fn recovered(
        first_lsn: u64,
        file: Rc<dyn DiskFile>,
        disk_bytes: u64,
        data_len: u64,
        idx_bytes: u64,
    ) -> Seg {
        let mut s = Seg::new(first_lsn, Some(file), disk_bytes);
        s.data_len = data_len;
        s.idx_bytes = idx_bytes;
        s.sealed = true;
        s.complete = true;
        s
    }

    /// Whether `retain` has been counted into it (for recovery).
    pub fn count_live(&mut self, len: u32) {
        self.live += 1;
        self.live_bytes += u64::from(len);
    }

    /// Sealed, written, indexed: what deletion and compaction start from.
    pub(super) fn settled(&self) -> bool {
        self.sealed && self.complete && self.pending_index.is_none() && self.regions == 0
    }
}

/// A preallocated file waiting to become the next segment.
pub struct Spare {
    pub path: PathBuf,
    pub file: Rc<dyn DiskFile>,
    /// Bytes preallocated.
    pub size: u64,
}

/// How the committer gets a part's file.
pub enum SegFile {
    Ready(Rc<dyn DiskFile>),
    /// Rename the spare to `to` (then sync the directory) first.
    Rename {
        spare: Spare,
        to: PathBuf,
    },
}
