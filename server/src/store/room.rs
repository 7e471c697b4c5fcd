//! Room in the log, made before a request applies.
//!
//! A request changes the queues the moment it applies; it could not be
//! undone if its records then did not fit. So each request first bounds
//! what it may log and makes room for that, or waits in order at the
//! [`gate`](super::gate) until it can.

#[cfg(feature = "sim")]
use super::gate::HeldEvent;
use super::policy::stretch_room;
use super::{Reply, Store};
use crate::log::record;
use crate::log::writer::NoRoom;

/// Why a request cannot apply yet.
pub(super) enum Hold {
    /// The log has no room for its records (or refuses them).
    Log(NoRoom),
    /// It takes from queue `id`, whose head is not resident: its next
    /// window must be read first (see `paging`).
    Window(u32),
}

impl From<crate::log::LogError> for Hold {
    fn from(e: crate::log::LogError) -> Hold {
        Hold::Log(NoRoom::Refused(e))
    }
}

impl From<NoRoom> for Hold {
    fn from(n: NoRoom) -> Hold {
        Hold::Log(n)
    }
}

impl Store {
    /// Applies a request now if the log has room for it, or holds it (and
    /// every later request of this shard) in order until a new segment is
    /// ready; see [`gate`](super::gate). What `room` found out on the way
    /// (the queue's id, say) goes to `apply`, which runs right after it,
    /// with nothing in between.
    pub(super) fn when_room<T: 'static, R: 'static, E: Into<Hold>>(
        &self,
        queue: &[u8],
        room: impl Fn(&Store, &[u8]) -> Result<R, E> + 'static,
        apply: impl FnOnce(&Store, &[u8], R) -> Reply<T> + 'static,
    ) -> Reply<T> {
        let room = move |s: &Store, q: &[u8]| room(s, q).map_err(Into::into);
        if self.gate.is_open() {
            match room(self, queue) {
                Ok(found) => return apply(self, queue, found),
                Err(Hold::Log(NoRoom::Refused(e))) => return Reply::now(Err(e)),
                Err(_) => {}
            }
        }
        let (store, queue) = (self.clone(), queue.to_vec());
        let ticket = self.gate.ticket();
        #[cfg(feature = "sim")]
        self.gate.tell(HeldEvent::Held);
        // The wait for its turn runs as a task of its own: a connection
        // polls its replies in order, so a ticket polled only by its
        // connection would wait for that connection's earlier replies (a
        // disk read, say) before letting every later ticket of the shard
        // go, and under a steady pipelined load the gate would never open
        // again. Dropping the reply cancels the task, which gives up the
        // turn.
        let turn = glommio::spawn_local(async move {
            let held = async {
                ticket.turn().await;
                loop {
                    match room(&store, &queue) {
                        Ok(found) => {
                            #[cfg(feature = "sim")]
                            store.gate.tell(HeldEvent::Applying);
                            let done = apply(&store, &queue, found);
                            #[cfg(feature = "sim")]
                            store.gate.tell(HeldEvent::Applied);
                            return Ok(done);
                        }
                        Err(Hold::Log(NoRoom::Refused(e))) => return Err(e),
                        Err(Hold::Log(NoRoom::AwaitSpare)) => {
                            let ready = store.log.borrow().spare_ready();
                            ready.wait().await;
                        }
                        Err(Hold::Log(NoRoom::AwaitWrite)) => {
                            let last = store.log.borrow().last_lsn();
                            store.acked(last).await?;
                        }
                        Err(Hold::Window(id)) => store.page_in(id).await?,
                    }
                }
            };
            let done = held.await;
            #[cfg(feature = "sim")]
            if done.is_err() {
                store.gate.tell(HeldEvent::Dropped);
            }
            drop(ticket);
            done
        });
        Reply::later(async move { turn.await?.await })
    }

    /// Room for a set of a `len`-byte message to `queue`; the queue's id
    /// if it exists.
    pub(super) fn room_for_set(&self, queue: &[u8], len: usize) -> Result<Option<u32>, NoRoom> {
        let (mut st, mut log) = self.both();
        let record = log.message_room(len);
        let known = st.id_of(queue);
        let mut need = match known {
            Some(id) => st.room_for_message(id, record),
            None => record + record::record_len(16 + queue.len()) as u64,
        };
        // Fan-out copies (no allocation without fan-out queues).
        for child in st.children(queue) {
            need += st.room_for_message(child, record);
        }
        log.make_room(need, true)?;
        Ok(known)
    }

    /// Room for a marker record (`Consumed`, `Confirmed`, `Deleted`) if
    /// `queue` exists. These may use the consumers' reserve: a full disk
    /// must never stop `get`, `/close` or `delete`.
    pub(super) fn room_for_marker(&self, queue: &[u8]) -> Result<(), NoRoom> {
        let (st, mut log) = self.both();
        log.check()?;
        if st.id_of(queue).is_none() {
            return Ok(());
        }
        log.make_room(record::record_len(8) as u64, false)
    }

    /// Room for what a `take` of `queue` logs: the dropping of expired
    /// messages at its head, and for a pop the pop. These may use the
    /// consumers' reserve. The queue's id if it exists.
    pub(super) fn room_for_take(&self, queue: &[u8], pop: bool) -> Result<Option<u32>, Hold> {
        let (mut st, mut log) = self.both();
        log.check()?;
        let Some(id) = st.id_of(queue) else {
            if queue.contains(&b'+') {
                // A fan-out queue's first get creates it.
                log.make_room(record::record_len(16 + queue.len()) as u64, false)?;
            }
            return Ok(None);
        };
        if st.queues[&id].queued().is_empty() {
            return Ok(Some(id));
        }
        let may_expire = st.may_expire(id);
        if !st.ready(id, may_expire) {
            return Err(Hold::Window(id));
        }
        let mut bytes = 0;
        if may_expire {
            bytes += stretch_room(&st.queues[&id]);
        }
        if pop {
            bytes += record::record_len(8) as u64;
        }
        log.make_room(bytes, false)?;
        Ok(Some(id))
    }

    /// Room for a flush's records: one per stretch of queued messages
    /// between open ones.
    pub(super) fn room_for_flush(&self, queue: &[u8]) -> Result<(), NoRoom> {
        let (st, mut log) = self.both();
        log.check()?;
        let Some(q) = st.id_of(queue).map(|id| &st.queues[&id]) else {
            return Ok(());
        };
        if q.queued().is_empty() {
            return Ok(());
        }
        log.make_room(stretch_room(q), false)
    }

    /// Takes up limits `reload` changed since this shard last looked.
    pub(super) fn refresh_limits(&self) {
        let generation = self.limits.generation();
        let mut st = self.state.borrow_mut();
        if st.limits_generation != generation {
            st.limits = self.limits.get();
            st.limits_generation = generation;
        }
    }
}
