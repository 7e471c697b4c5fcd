//! Bringing a queue's next window of locators in from its segment's index
//! before its consumers need it.
//!
//! A take applies synchronously, so it can only hand out what is resident.
//! After each take the store looks whether the head's resident window is
//! low ([`Backlog::page_job`](crate::queue::Backlog::page_job)) and, if
//! so, reads the next window in a task of its own: a consumer that keeps
//! reading finds its window filled ahead. The rare take that finds no
//! resident message before a paged run (the first after a restart, or one
//! that outran the read) waits at the gate, in order, for the read
//! ([`Store::page_in`]); every later request of the shard waits behind it,
//! so replies keep their order. A take that joins that line starts its own
//! window's read as it joins ([`Store::read_ahead_of`]): the cold takes of
//! many queues (after a restart, every queue's head is paged) then wait for
//! reads that overlap, not for one read after another.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::task::{Poll, Waker};

use super::{LogError, Store};
use crate::log::paging::read_window;

/// A window read in flight for one queue, which others may wait for.
#[derive(Default)]
pub(super) struct PageWait {
    done: Cell<bool>,
    wakers: RefCell<Vec<Waker>>,
}

impl PageWait {
    fn finish(&self) {
        self.done.set(true);
        for w in self.wakers.borrow_mut().drain(..) {
            w.wake();
        }
    }

    async fn wait(&self) {
        std::future::poll_fn(|cx| {
            if self.done.get() {
                Poll::Ready(())
            } else {
                self.wakers.borrow_mut().push(cx.waker().clone());
                Poll::Pending
            }
        })
        .await
    }
}

impl Store {
    /// Starts reading `queue`'s next window if it is due (see
    /// [`Store::read_ahead`]). A take held in line at the gate calls it:
    /// after a restart every queue's head is paged, and cold takes of many
    /// queues would otherwise each read its window only at its turn, one
    /// after another, holding the shard's producers behind them.
    pub(super) fn read_ahead_of(&self, queue: &[u8]) {
        let id = self.state.borrow().id_of(queue);
        if let Some(id) = id {
            self.read_ahead(id);
        }
    }

    /// Starts reading queue `id`'s next window if its resident head is low
    /// and no read is in flight for it (a take calls it once its queue's
    /// `page_job` says a window is due).
    pub(super) fn read_ahead(&self, id: u32) {
        let wanted = {
            let st = self.state.borrow();
            !st.paging.contains_key(&id)
                && st
                    .queues
                    .get(&id)
                    .is_some_and(|q| q.queued().page_job(st.window).is_some())
        };
        if wanted {
            let store = self.clone();
            glommio::spawn_local(async move {
                // A failure is logged where it happens; the take that
                // needs the window reads it again and reports it.
                let _ = store.page_in(id).await;
            })
            .detach();
        }
    }

    /// Reads queue `id`'s next window (its first paged run's), or waits
    /// for the read in flight.
    pub(super) async fn page_in(&self, id: u32) -> Result<(), LogError> {
        let in_flight = self.state.borrow().paging.get(&id).cloned();
        if let Some(wait) = in_flight {
            wait.wait().await;
            return Ok(());
        }
        let job = {
            let st = self.state.borrow();
            st.queues
                .get(&id)
                .and_then(|q| q.queued().next_window(st.window))
        };
        let Some(job) = job else {
            return Ok(());
        };
        let wait = Rc::new(PageWait::default());
        self.state.borrow_mut().paging.insert(id, wait.clone());
        let res = read_window(&self.log, job.seg, &job.pages, job.skip as usize, job.n).await;
        self.state.borrow_mut().paging.remove(&id);
        wait.finish();
        let entries = res?;
        let (mut st, mut log) = self.both();
        let st = &mut *st;
        let damaged = &st.damaged;
        let Some(q) = st.queues.get_mut(&id) else {
            return Ok(());
        };
        let hit = |off: u32| {
            damaged
                .iter()
                .any(|&(seg, from, to)| seg == job.seg && (from..to).contains(&u64::from(off)))
        };
        let Some(dropped) = q.queued_mut().paged_in(job.seg, job.lo, &entries, hit) else {
            return Ok(());
        };
        if dropped.is_empty() {
            return Ok(());
        }
        // Damaged records the scrub found in a paged run: gone, as the
        // scrub drops resident ones (see `locators`).
        let lsn = log.last_lsn();
        for loc in dropped {
            log::warn!(
                "{}: message {} of queue {} is damaged: dropped",
                st.label,
                loc.seq,
                String::from_utf8_lossy(q.name())
            );
            log.release(loc.pos.seg, loc.len, lsn);
            st.items -= 1;
            st.bytes -= loc.body_len();
        }
        Ok(())
    }
}
