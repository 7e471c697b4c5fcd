//! Bodies written out of line (`log::region`), as the store sees them.
//!
//! The set appends the region's record synchronously, like any record; the
//! body is written by a task of its own, which the set's reply (and a get
//! of the message meanwhile) waits for, so a large write never holds up
//! the shard's other requests. Until it is written the body is with that
//! task, not in the cache (see `out_of_line`).

use std::rc::Rc;

use super::out_of_line::OutOfLine;
use super::reply::waits_for_log;
use super::{Reply, Store};
use crate::log::region::{self, Region};
use crate::log::Log;

/// One body to write out of line.
pub(super) struct RegionJob {
    pub(super) key: (u32, u64),
    pub(super) region: Region,
    pub(super) body: Vec<u8>,
    pub(super) body_crc: Option<u32>,
    pub(super) wait: Rc<OutOfLine>,
}

impl Store {
    /// The reply to a set whose last record is `lsn`: as [`Store::reply`]
    /// says, and after the bodies it writes out of line (`regions`, whose
    /// writes start now) are written.
    pub(super) fn set_reply(
        &self,
        log: &Log,
        lsn: u64,
        len: usize,
        regions: Vec<RegionJob>,
    ) -> Reply<bool> {
        if regions.is_empty() {
            return self.reply(log, lsn, len, true);
        }
        let waits: Vec<Rc<OutOfLine>> = regions.iter().map(|r| r.wait.clone()).collect();
        for job in regions {
            glommio::spawn_local(write_region(self.clone(), job)).detach();
        }
        if !waits_for_log(log, len) {
            return Reply::now(Ok(true));
        }
        let acked = self.acked(lsn);
        Reply::later(async move {
            acked.await?;
            for w in &waits {
                w.wait().await?;
            }
            Ok(true)
        })
    }
}

/// Writes one body out of line (see `log::region`), then hands it to the
/// cache if its message is still queued, or to whoever took the message
/// meanwhile.
async fn write_region(store: Store, job: RegionJob) {
    let RegionJob {
        key,
        region,
        body,
        body_crc,
        wait,
    } = job;
    // Spawned by a set while it holds the store and the log, and glommio
    // runs a new task at once, up to its first wait: start on the next turn.
    futures_lite::future::yield_now().await;
    let res = region::write(&store.log, &region, &body, body_crc).await;
    let body = {
        let mut st = store.state.borrow_mut();
        let st = &mut *st;
        st.regions.remove(&key);
        let queued = st
            .queues
            .get(&key.0)
            .is_some_and(|q| q.queued().contains(key.1));
        match res {
            Ok(()) if queued => {
                st.cache.insert(key, wait.flags, body);
                None
            }
            Ok(()) => Some(body),
            Err(_) => None,
        }
    };
    wait.finish(res, body);
}
