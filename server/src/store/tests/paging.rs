//! A deep backlog kept as paged runs: paged out as segments are indexed,
//! paged in as the head reaches them, across compaction, flush, delete,
//! reliable reads and restarts, with every message back once, in order.

use super::*;
use crate::queue::WINDOW;
use crate::testutil::test_dir;

/// Resident locators over every queue of `s`.
fn resident(s: &Store) -> usize {
    let st = s.state.borrow();
    st.queues
        .values()
        .map(|q| q.queued().resident().count())
        .sum()
}

/// The store's totals agree with its queues'.
fn check_totals(s: &Store) {
    let st = s.state.borrow();
    let items: u64 = st.queues.values().map(|q| q.queued().items()).sum();
    let bytes: u64 = st.queues.values().map(|q| q.queued().bytes()).sum();
    assert_eq!((st.items, st.bytes), (items, bytes));
}

const PER_QUEUE: u64 = 4000;

/// Sets [`PER_QUEUE`] messages of `len` bytes on each of queues `q0..`,
/// interleaved, and lets maintenance index the sealed segments.
async fn fill(s: &Store, queues: usize, len: usize) {
    for i in 0..PER_QUEUE {
        for q in 0..queues {
            set(s, &format!("q{q}"), body(q, i, len)).await;
        }
    }
    s.settle().await;
}

#[test]
fn a_deep_backlog_pages_out_and_comes_back_in_order() {
    let dir = test_dir();
    let cfg = config(dir.path());
    let c = cfg.clone();
    run(move || async move {
        let s = Store::open(c).await.unwrap();
        fill(&s, 4, 100).await;
        check_totals(&s);
        // 16,000 messages over many 64 KiB segments: only each queue's
        // head window and the open segment's are in memory.
        let open_segment = (64 << 10) / 150;
        assert!(
            resident(&s) <= 4 * WINDOW + open_segment + 64,
            "{} locators resident",
            resident(&s)
        );
        // Part of the way down, through windows read on demand and ahead.
        for i in 0..1500 {
            assert_eq!(get(&s, "q0").await.unwrap(), body(0, i, 100));
        }
        // Flush and delete drop paged runs unread.
        s.flush(b"q2").await.unwrap();
        s.delete(b"q3").await.unwrap();
        check_totals(&s);
        assert_eq!(s.stats().items, PER_QUEUE * 2 - 1500);
        s.close().await.unwrap();
    });
    // A restart reads summaries: every message paged but for the odd run
    // too short to be worth it (as a running shard keeps them), at most a
    // few per queue and segment edge.
    let c = cfg.clone();
    run(move || async move {
        let s = Store::open(c).await.unwrap();
        assert!(
            resident(&s) < 2 * 2 * crate::queue::min_paged(),
            "{} locators resident",
            resident(&s)
        );
        check_totals(&s);
        assert!(get(&s, "q2").await.is_none(), "flushed");
        // A reliable read of a paged head, given back, comes back first.
        let m = s.take(b"q1", Take::Open(9)).await.unwrap().unwrap();
        assert_eq!(m.body.into_vec(), body(1, 0, 100));
        assert!(s.abort(b"q1", 9));
        for i in 1500..PER_QUEUE {
            assert_eq!(get(&s, "q0").await.unwrap(), body(0, i, 100));
        }
        assert!(get(&s, "q0").await.is_none());
        for i in 0..PER_QUEUE {
            assert_eq!(get(&s, "q1").await.unwrap(), body(1, i, 100), "q1 {i}");
        }
        check_totals(&s);
        assert_eq!(s.stats().items, 0);
        s.settle().await;
        s.close().await.unwrap();
    });
    // Everything consumed: the segments went, but for the open one.
    assert!(seg_files(&cfg.dir, "log").len() <= 3);
}

#[test]
fn compaction_moves_a_slow_queues_paged_messages_forward() {
    let dir = test_dir();
    let cfg = config(dir.path());
    let c = cfg.clone();
    let dir_of_shard = cfg.dir.clone();
    run(move || async move {
        let s = Store::open(c).await.unwrap();
        // A slow queue interleaved with a busy one: its messages keep old
        // segments alive until compaction copies them forward.
        for i in 0..3000u64 {
            set(&s, "busy", body(0, i, 200)).await;
            if i % 3 == 0 {
                set(&s, "slow", body(1, i / 3, 200)).await;
            }
        }
        s.settle().await;
        for i in 0..3000 {
            assert_eq!(get(&s, "busy").await.unwrap(), body(0, i, 200));
        }
        s.settle().await;
        check_totals(&s);
        assert!(
            seg_files(&dir_of_shard, "log").len() < 20,
            "compaction reclaimed the busy queue's segments"
        );
        for i in 0..300 {
            assert_eq!(get(&s, "slow").await.unwrap(), body(1, i, 200));
        }
        s.close().await.unwrap();
    });
    let c = cfg.clone();
    run(move || async move {
        let s = Store::open(c).await.unwrap();
        for i in 300..1000 {
            assert_eq!(get(&s, "slow").await.unwrap(), body(1, i, 200), "{i}");
        }
        assert!(get(&s, "slow").await.is_none());
        s.close().await.unwrap();
    });
}

#[test]
fn a_crash_with_a_deep_backlog_loses_nothing_acknowledged() {
    let dir = test_dir();
    let cfg = config(dir.path());
    let c = cfg.clone();
    run(move || async move {
        let s = Store::open(c).await.unwrap();
        fill(&s, 3, 120).await;
        for i in 0..2500 {
            assert_eq!(get(&s, "q1").await.unwrap(), body(1, i, 120));
        }
        s.crash().await;
    });
    let c = cfg.clone();
    run(move || async move {
        let s = Store::open(c).await.unwrap();
        check_totals(&s);
        for (q, from) in [(0usize, 0u64), (1, 2500), (2, 0)] {
            for i in from..PER_QUEUE {
                assert_eq!(get(&s, &format!("q{q}")).await.unwrap(), body(q, i, 120));
            }
            assert!(get(&s, &format!("q{q}")).await.is_none());
        }
        s.close().await.unwrap();
    });
}

/// After a restart every queue's head is paged: the first takes of many
/// queues, pipelined, wait in line at the gate, and their window reads
/// overlap rather than follow one another (each read as its take joins
/// the line, not at its turn).
#[test]
fn cold_takes_in_line_read_their_windows_together() {
    let dir = test_dir();
    let cfg = config(dir.path());
    let c = cfg.clone();
    run(move || async move {
        let s = Store::open(c).await.unwrap();
        fill(&s, 4, 100).await;
        s.close().await.unwrap();
    });
    run(move || async move {
        let s = Store::open(cfg).await.unwrap();
        let takes: Vec<_> = (0..4).map(|q| s.get(format!("q{q}").as_bytes())).collect();
        assert_eq!(
            s.state.borrow().paging.len(),
            4,
            "every held take's window is being read"
        );
        for (q, take) in takes.into_iter().enumerate() {
            let m = take.await.unwrap().unwrap();
            assert_eq!(m.body.into_vec(), body(q, 0, 100));
        }
        for q in 0..4 {
            assert_eq!(get(&s, &format!("q{q}")).await.unwrap(), body(q, 1, 100));
        }
        s.close().await.unwrap();
    });
}

/// A queue with long runs in some segments and a stray message or two in
/// others (kept as locators) comes back in order after a restart: recovery
/// meets its newest strays first, then stacks its runs and the strays
/// between them, and turns the stack over below those at the end.
#[test]
fn runs_and_stray_messages_of_one_queue_restart_in_order() {
    const ROUNDS: u64 = 4;
    const STRETCH: u64 = 1500;
    const FILLER: u64 = 3000;
    const STRAY_EVERY: u64 = 700;
    let strays = FILLER.div_ceil(STRAY_EVERY);
    let dir = test_dir();
    let cfg = config(dir.path());
    let c = cfg.clone();
    run(move || async move {
        let s = Store::open(c).await.unwrap();
        let (mut n, mut f) = (0u64, 0u64);
        for _ in 0..ROUNDS {
            // A stretch of "mixed" alone: paged runs in a few segments …
            for _ in 0..STRETCH {
                set(&s, "mixed", body(0, n, 100)).await;
                n += 1;
            }
            // … then one now and then among others: fewer per segment
            // than a paged run is worth.
            for i in 0..FILLER {
                set(&s, "filler", body(1, f, 100)).await;
                f += 1;
                if i % STRAY_EVERY == 0 {
                    set(&s, "mixed", body(0, n, 100)).await;
                    n += 1;
                }
            }
        }
        s.settle().await;
        s.close().await.unwrap();
    });
    run(move || async move {
        let s = Store::open(cfg).await.unwrap();
        check_totals(&s);
        let mixed = ROUNDS * (STRETCH + strays);
        assert_eq!(s.stats().items, mixed + ROUNDS * FILLER);
        for i in 0..mixed {
            assert_eq!(
                get(&s, "mixed").await.unwrap(),
                body(0, i, 100),
                "mixed {i}"
            );
        }
        assert!(get(&s, "mixed").await.is_none());
        for i in 0..ROUNDS * FILLER {
            assert_eq!(
                get(&s, "filler").await.unwrap(),
                body(1, i, 100),
                "filler {i}"
            );
        }
        check_totals(&s);
        s.close().await.unwrap();
    });
}
