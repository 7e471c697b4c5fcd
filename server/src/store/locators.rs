//! The queues' locators as maintenance sees them: compaction moves a
//! message's record and the locator must follow; the scrub finds a record
//! damaged and its message must go. The log asks through [`Locators`]
//! because it never imports the store.

use std::cell::{RefCell, RefMut};
use std::rc::Rc;

use super::state::State;
use crate::log::index::{ArchivedSegmentSummary, EntryPages};
use crate::log::{Locators, Pos};
use crate::queue::window_for;

/// The queue table, for maintenance, which asks only between its borrows
/// of the log: the second half of the borrow order documented at
/// [`State`]. It holds no handle to the log, so it cannot take it the
/// other way round.
pub(super) struct StateLocators(Rc<RefCell<State>>);

impl StateLocators {
    pub(super) fn new(state: Rc<RefCell<State>>) -> StateLocators {
        StateLocators(state)
    }

    /// The table, which no store call may hold when maintenance runs.
    fn state(&self) -> RefMut<'_, State> {
        self.0
            .try_borrow_mut()
            .expect("borrow order: maintenance reached the queue table while a store call held it")
    }
}

impl Locators for StateLocators {
    fn relocate(&self, queue: u32, seq: u64, from: Pos, to: Pos, len: u32, expires: u32) -> bool {
        self.state()
            .queues
            .get_mut(&queue)
            .is_some_and(|q| q.relocate(seq, from, to, len, expires))
    }

    fn is_live(&self, queue: u32, seq: u64, at: Pos) -> bool {
        self.state()
            .queues
            .get(&queue)
            .is_some_and(|q| q.holds_at(seq, at))
    }

    fn tails(&self, ids: &[u32]) -> Vec<Option<u64>> {
        let st = self.state();
        ids.iter()
            .map(|id| st.queues.get(id).map(|q| q.tail()))
            .collect()
    }

    fn indexed(&self, seg: u32, summary: &ArchivedSegmentSummary) {
        let mut st = self.state();
        let st = &mut *st;
        st.window = window_for(summary.queues.len());
        for qs in summary.queues.iter() {
            let Some(q) = st.queues.get_mut(&qs.id.to_native()) else {
                continue;
            };
            if q.queued().items() as usize <= st.window || qs.spans.is_empty() {
                continue;
            }
            let spans: Vec<(u64, EntryPages)> = qs
                .spans
                .iter()
                .map(|s| (s.lo.to_native(), EntryPages::of(s)))
                .collect();
            q.queued_mut().page_out(seg, &spans, st.window);
        }
    }

    fn drop_damaged(&self, seg: u32, from: u64, to: u64) -> Vec<u32> {
        let mut st = self.state();
        let st = &mut *st;
        let mut lens = Vec::new();
        st.damaged.push((seg, from, to));
        for q in st.queues.values_mut() {
            for loc in q.remove_damaged(seg, from, to) {
                log::warn!(
                    "{}: message {} of queue {} is damaged: dropped",
                    st.label,
                    loc.seq,
                    String::from_utf8_lossy(q.name())
                );
                lens.push(loc.len);
                st.items -= 1;
                st.bytes -= loc.body_len();
                st.cache.remove((q.id(), loc.seq));
            }
        }
        lens
    }
}

#[cfg(test)]
mod tests {
    use std::panic::{catch_unwind, AssertUnwindSafe};
    use std::rc::Rc;

    use super::*;
    use crate::disk::sim::SimDisk;
    use crate::store::Store;
    use crate::testutil::{run, test_dir};

    #[test]
    fn maintenance_finding_the_table_held_names_the_borrow_order() {
        let dir = test_dir();
        let config = crate::store::tests::config(dir.path());
        run(move || async move {
            let store = Store::open_on(Rc::new(SimDisk::new()), config)
                .await
                .unwrap();
            let locators = StateLocators::new(store.state.clone());
            let at = Pos { seg: 0, off: 0 };
            assert!(!locators.is_live(0, 0, at), "free: no such message");
            let held = store.state.borrow_mut();
            let inverted = catch_unwind(AssertUnwindSafe(|| locators.is_live(0, 0, at)));
            drop(held);
            let panic = inverted.expect_err("the table was held");
            let message = panic.downcast_ref::<String>().map_or("", |m| m.as_str());
            assert!(message.contains("borrow order"), "{message}");
            store.crash().await;
        });
    }
}
