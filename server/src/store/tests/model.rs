//! A property test: random sequences of sets, gets, deletes, clean
//! restarts and crashes on a few queues, checked after every step against
//! an in-memory model of what each queue holds and has counted.
//!
//! Guards against: the interleavings no hand-written test thought of (a
//! delete just before a crash, a restart with the cache half full, …);
//! proptest shrinks a failure to a short sequence.

use std::collections::{BTreeMap, VecDeque};

use proptest::prelude::*;

use super::*;
use crate::testutil::test_dir;

#[derive(Clone, Debug)]
pub enum Op {
    Set(u8, u16),
    Get(u8),
    Delete(u8),
    Reopen,
    Crash,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0u8..4, 1u16..1500).prop_map(|(q, n)| Op::Set(q, n)),
        4 => (0u8..4).prop_map(Op::Get),
        1 => (0u8..4).prop_map(Op::Delete),
        1 => Just(Op::Reopen),
        1 => Just(Op::Crash),
    ]
}

#[derive(Default, Debug)]
struct Model {
    queues: BTreeMap<String, (u64, u64, VecDeque<Vec<u8>>)>,
}

fn check(ops: Vec<Op>) {
    let dir = test_dir();
    let mut cfg = config(dir.path());
    cfg.cache_bytes = 4 << 10;
    run(move || async move {
        let mut m = Model::default();
        let mut s = Store::open(cfg.clone()).await.unwrap();
        let mut counter = 0u64;
        for op in ops {
            match op {
                Op::Set(q, n) => {
                    let name = format!("q{q}");
                    counter += 1;
                    let b = body(q as usize, counter, n as usize);
                    set(&s, &name, b.clone()).await;
                    let e = m.queues.entry(name).or_default();
                    e.0 += 1;
                    e.2.push_back(b);
                }
                Op::Get(q) => {
                    let name = format!("q{q}");
                    let got = get(&s, &name).await;
                    let want = m.queues.get_mut(&name).and_then(|e| {
                        let b = e.2.pop_front()?;
                        e.1 += 1;
                        Some(b)
                    });
                    assert_eq!(got, want);
                }
                Op::Delete(q) => {
                    let name = format!("q{q}");
                    assert_eq!(
                        s.delete(name.as_bytes()).await.unwrap(),
                        m.queues.remove(&name).is_some()
                    );
                }
                Op::Reopen => {
                    s.close().await.unwrap();
                    drop(s);
                    s = Store::open(cfg.clone()).await.unwrap();
                }
                Op::Crash => {
                    s.crash().await;
                    drop(s);
                    s = Store::open(cfg.clone()).await.unwrap();
                }
            }
            let want: Vec<(Vec<u8>, u64, u64)> = m
                .queues
                .iter()
                .map(|(n, e)| (n.clone().into_bytes(), e.0, e.1))
                .collect();
            assert_eq!(counts(&s), want);
            let items: u64 = m.queues.values().map(|e| e.2.len() as u64).sum();
            assert_eq!(s.stats().items, items);
        }
        s.close().await.unwrap();
    });
}

proptest! {
    // Each case does real O_DIRECT I/O: bound the shrinking of a failure
    // (proptest's default is unlimited, so a failure could run past CI's
    // time limit and print nothing).
    #![proptest_config(ProptestConfig {
        cases: 24,
        max_shrink_iters: 300,
        max_shrink_time: 120_000,
        ..ProptestConfig::default()
    })]
    #[test]
    fn random_ops_match_model(ops in proptest::collection::vec(op(), 1..300)) {
        check(ops);
    }
}
