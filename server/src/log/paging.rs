//! Reading a window of a queue's locators from a sealed segment's index.
//!
//! The queues above keep a sealed segment's messages as runs
//! (`queue::Backlog`) and read their locators from the index file as the
//! head reaches them: one small read of a few pages of entries, each page
//! checksummed ([`index::read_entries`]). The segment is pinned meanwhile,
//! so maintenance cannot delete it (and its index) under the read.
//!
//! A restart reads only the indexes' summaries, so damage to an index's
//! entries is found here, by a page checksum: the index is then rebuilt
//! from its segment, logged, and the window read again. (An index is a
//! deterministic function of its segment's records, so the rebuilt one has
//! its entries where the summary the queue holds says.)

use super::error::IoFailure;
use super::index::{self, EntryPages, IndexEntry};
use super::segment;
use super::writer::SharedLog;
use super::LogError;

/// Reads entries `skip .. skip + n` of the span at `pages` in segment
/// `seg`'s index.
pub async fn read_window(
    log: &SharedLog,
    seg: u32,
    pages: &EntryPages,
    skip: usize,
    n: usize,
) -> Result<Vec<IndexEntry>, LogError> {
    let (disk, dir, path, label, first_lsn, seg_file) = {
        let mut l = log.borrow_mut();
        let Some((first_lsn, seg_file)) = l.seg(seg).map(|s| (s.first_lsn, s.file.clone())) else {
            return Err(gone(seg));
        };
        l.pin(seg);
        (
            l.disk().clone(),
            l.dir().to_path_buf(),
            segment::idx_path(l.dir(), first_lsn),
            l.label().to_string(),
            first_lsn,
            seg_file,
        )
    };
    let read = async {
        let file = disk.open(&path).await?;
        index::read_entries(&*file, pages, skip, n).await
    };
    let mut res = read.await;
    if let (Ok(Err(why)), Some(seg_file)) = (&res, seg_file) {
        log::warn!("{label}: index {first_lsn:020}.idx: {why}: rebuilding it from its segment");
        let rebuilt = async {
            let (idx, _) =
                super::recovery::scan_to_index(&label, &*seg_file, first_lsn, false).await?;
            super::recovery::write_index(&*disk, &dir, first_lsn, idx).await?;
            let file = disk.open(&path).await?;
            index::read_entries(&*file, pages, skip, n).await
        };
        res = rebuilt.await;
    }
    log.borrow_mut().unpin(seg);
    match res {
        Ok(Ok(entries)) => Ok(entries),
        Ok(Err(why)) => {
            log::error!("{label}: {}: {why}", path.display());
            Err(LogError::Read(IoFailure {
                op: "index read",
                errno: None,
                message: format!("{}: {why}", path.display()),
            }))
        }
        Err(e) => {
            log::warn!("{label}: reading {} failed: {e}", path.display());
            Err(LogError::Read(IoFailure::new("index read", &e)))
        }
    }
}

fn gone(seg: u32) -> LogError {
    LogError::Read(IoFailure {
        op: "index read",
        errno: None,
        message: format!("segment ordinal {seg} is gone"),
    })
}
