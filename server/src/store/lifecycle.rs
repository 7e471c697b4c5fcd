//! Stopping a shard, cleanly or as a crash would. Either way the shard's
//! tasks are waited for, so its directory is quiet, and can be opened again
//! in the same process, once it returns.

use std::time::Duration;

use super::{LogError, Store};
use crate::log::commit;
use crate::log::error::IoFailure;
#[cfg(test)]
use crate::log::writer::SharedLog;

impl Store {
    /// Makes everything acknowledged so far durable and closes the files
    /// cleanly (graceful shutdown). The open segment stays as it is; the
    /// next open scans it (one segment) and seals it.
    pub async fn close(&self) -> Result<(), LogError> {
        let last = self.log.borrow().last_lsn();
        self.acked(last).await?;
        commit::sync_open(&self.log).await?;
        self.log.borrow_mut().close();
        self.moves.wake();
        // Let an index write or segment deletion in progress finish, so the
        // directory is quiet when we return.
        self.wait_for_tasks().await;
        Ok(())
    }

    /// Stops the store as a crash would: nothing more is written or synced,
    /// waiters fail. Returns once the shard's tasks have ended, so its
    /// directory can be reopened in the same process (tests; the
    /// crash-point explorer takes its disk image after this).
    pub async fn crash(&self) {
        self.log.borrow_mut().fail(IoFailure {
            op: "crash",
            errno: None,
            message: "stopped as by a crash".into(),
        });
        self.moves.wake();
        self.wait_for_tasks().await;
    }

    pub(super) async fn wait_for_tasks(&self) {
        while self.log.borrow().tasks() > 0 {
            glommio::timer::sleep(Duration::from_millis(1)).await;
        }
    }

    /// Test helper: waits until every commit and maintenance round is done.
    #[cfg(test)]
    pub(crate) async fn settle(&self) {
        let mut quiet = 0;
        while quiet < 3 {
            glommio::timer::sleep(Duration::from_millis(2)).await;
            let l = self.log.borrow();
            if l.busy() || l.maint_busy() {
                quiet = 0;
            } else {
                quiet += 1;
            }
        }
    }

    #[cfg(test)]
    pub(crate) fn log(&self) -> &SharedLog {
        &self.log
    }
}
