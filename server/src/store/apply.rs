//! The requests' changes: each applies whole, synchronously, with the
//! queue table and the log borrowed together, so no other request sees it
//! half done and its records go out in one batch. What they return is the
//! reply to wait for, not the wait itself.

use super::{Message, Reader, Reply, Store};
use crate::log::writer::{now_us, MessageMeta};

impl Store {
    /// A set of `body` to `queue`, whose id is `known` if it exists
    /// (`room_for_set` looked it up).
    pub(super) fn apply_set(
        &self,
        queue: &[u8],
        known: Option<u32>,
        flags: u32,
        expires: u32,
        body: Vec<u8>,
        body_crc: Option<u32>,
    ) -> Reply<bool> {
        let (mut st, mut log) = self.both();
        let st = &mut *st;
        if !st.admit(&mut log, known, queue, body.len() as u64) {
            return Reply::now(Ok(false));
        }
        let id = match known {
            Some(id) => id,
            None => st.id_or_create(&mut log, queue),
        };
        let meta = MessageMeta {
            flags,
            time: now_us(),
            expires,
        };
        let len = body.len();
        let children = st.children(queue);
        // A queue that gets a message wakes its first blocked consumer.
        self.waiters.wake_first(queue);
        if children.is_empty() {
            let lsn = st.append(&mut log, id, meta, body, body_crc);
            let regions = std::mem::take(&mut st.new_regions);
            return self.set_reply(&log, lsn, len, regions);
        }
        let mut lsn = st.append(&mut log, id, meta, body.clone(), body_crc);
        // Fan-out: a copy for every `<queue>+…` queue, in the same batch,
        // each within its own limits. The reply waits for the last copy.
        for child in children {
            let name: Box<[u8]> = st.queues[&child].name().into();
            if st.admit(&mut log, Some(child), &name, len as u64) {
                lsn = st.append(&mut log, child, meta, body.clone(), body_crc);
                self.waiters.wake_first(&name);
            }
        }
        let regions = std::mem::take(&mut st.new_regions);
        self.set_reply(&log, lsn, len, regions)
    }

    pub(super) fn apply_get(&self, queue: &[u8], known: Option<u32>) -> Reply<Option<Message>> {
        let (mut table, mut log) = self.both();
        let st = &mut *table;
        let Some(id) = st.take_from(&mut log, &self.moves, queue, known) else {
            return Reply::now(Ok(None));
        };
        let q = st.queues.get_mut(&id).expect("queue exists");
        let Some(loc) = q.pop() else {
            return Reply::now(Ok(None));
        };
        let lsn = log.consume(id, loc.seq, loc.seq + 1, q.low());
        log.release(loc.pos.seg, loc.len, lsn);
        st.items -= 1;
        st.bytes -= loc.body_len();
        drop(log);
        let ahead = q.queued().page_job(st.window).is_some();
        let held = st.held((id, loc.seq), true);
        drop(table);
        if ahead {
            self.read_ahead(id);
        }
        self.deliver(lsn, id, loc, held)
    }

    /// A reliable read: the head goes to `reader`'s open message, with no
    /// record yet. The reply still waits as a pop's would (for everything
    /// appended so far, which includes the message's own record), so a
    /// consumer never sees a message that a crash could take back.
    pub(super) fn apply_open(
        &self,
        queue: &[u8],
        known: Option<u32>,
        reader: Reader,
    ) -> Reply<Option<Message>> {
        let (mut table, mut log) = self.both();
        let st = &mut *table;
        let Some(id) = st.take_from(&mut log, &self.moves, queue, known) else {
            return Reply::now(Ok(None));
        };
        let q = st.queues.get_mut(&id).expect("queue exists");
        let Some(loc) = q.open(reader) else {
            return Reply::now(Ok(None));
        };
        st.items -= 1;
        st.bytes -= loc.body_len();
        let lsn = log.last_lsn();
        drop(log);
        // Out of the cache like a pop: if it comes back (abort), it is
        // read from its segment, which keeps the cache's bytes bounded by
        // queued messages only.
        let held = st.held((id, loc.seq), true);
        drop(table);
        self.read_ahead(id);
        self.deliver(lsn, id, loc, held)
    }

    /// `get <q>/peek`: a copy of the head, which stays queued.
    pub(super) fn apply_peek(&self, queue: &[u8], known: Option<u32>) -> Reply<Option<Message>> {
        let (mut st, mut log) = self.both();
        let Some(id) = st.take_from(&mut log, &self.moves, queue, known) else {
            return Reply::now(Ok(None));
        };
        let Some(&loc) = st.queues[&id].queued().head() else {
            return Reply::now(Ok(None));
        };
        let lsn = log.last_lsn();
        drop(log);
        self.deliver(lsn, id, loc, st.held((id, loc.seq), false))
    }

    /// Confirms `reader`'s open message on `queue`: its consumption is
    /// logged as a pop's is.
    pub(super) fn apply_confirm(&self, queue: &[u8], reader: Reader) -> Reply<bool> {
        let (mut st, mut log) = self.both();
        let st = &mut *st;
        let Some(id) = st.id_of(queue) else {
            return Reply::now(Ok(false));
        };
        let q = st.queues.get_mut(&id).expect("queue exists");
        let Some(loc) = q.open_by(reader).and_then(|seq| q.close(seq)) else {
            return Reply::now(Ok(false));
        };
        let lsn = log.consume(id, loc.seq, loc.seq + 1, q.low());
        log.release(loc.pos.seg, loc.len, lsn);
        self.reply(&log, lsn, 0, true)
    }

    pub(super) fn apply_delete(&self, queue: &[u8]) -> Reply<bool> {
        let (mut st, mut log) = self.both();
        let st = &mut *st;
        let Some(q) = st.remove_queue(queue) else {
            return Reply::now(Ok(false));
        };
        let id = q.id();
        st.fan_out_queues -= usize::from(queue.contains(&b'+'));
        let lsn = log.delete_queue(id);
        for loc in q.queued().resident().chain(q.open_locs()) {
            log.release(loc.pos.seg, loc.len, lsn);
            st.cache.remove((id, loc.seq));
        }
        // Paged messages were written out of the hot cache long ago, or
        // are evicted from it in their turn: they go a run at a time.
        for p in q.queued().paged() {
            log.release_run(p.seg, u64::from(p.count), u64::from(p.rec_bytes), lsn);
        }
        st.items -= q.queued().items();
        st.bytes -= q.queued().bytes();
        self.reply(&log, lsn, 0, true)
    }

    pub(super) fn apply_flush(&self, queue: &[u8]) -> Reply<bool> {
        let (mut st, mut log) = self.both();
        let Some(id) = st.id_of(queue) else {
            return Reply::now(Ok(false));
        };
        st.drop_head(&mut log, id, true, |q| !q.queued().is_empty());
        self.reply(&log, log.last_lsn(), 0, true)
    }
}
