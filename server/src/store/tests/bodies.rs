//! Where a get finds a message's body: in the hot cache, on disk when the
//! cache has let it go, or, for a large body written out of line in a
//! region (`log::region`), still with its writer. Pipelined requests get
//! their replies in order with the right bodies, and after a restart
//! every body comes back byte for byte.
//!
//! Guards against: a lagging consumer served from a cache that no longer
//! has its message, a get that reads a region before its last piece is
//! written (zeros: `Corrupt`), and region records a scan cannot follow.

use std::rc::Rc;
use std::time::Duration;

use super::*;
use crate::testutil::test_dir;

#[test]
fn lagging_consumer_reads_from_disk() {
    let dir = test_dir();
    let mut cfg = config(dir.path());
    cfg.cache_bytes = 8 << 10;
    run(move || async move {
        let s = Store::open(cfg).await.unwrap();
        for i in 0..500 {
            set(&s, "q", body(0, i, 500)).await;
        }
        assert!(s.stats().cache_bytes <= 8 << 10);
        for i in 0..500 {
            assert_eq!(get(&s, "q").await.unwrap(), body(0, i, 500));
        }
        s.close().await.unwrap();
    });
}

/// A consumer reading what the cache no longer holds reads it through the
/// read-ahead cache, and `stats` shows it: records found in chunks already
/// read (hits), gets that waited for a chunk read (misses), the chunk reads
/// (some started ahead of any get) and their bytes, and what is held now
/// within the configured budget.
#[test]
fn cold_reads_move_the_read_ahead_counters() {
    let dir = test_dir();
    let mut cfg = config(dir.path());
    cfg.cache_bytes = 0;
    cfg.readahead_bytes = 5 << 20;
    run(move || async move {
        let s = Store::open(cfg).await.unwrap();
        assert_eq!(s.log.borrow().reads().budget(), 5 << 20);
        assert_eq!(s.stats().readahead, Default::default());
        // About 4 segments of 64 KiB.
        let n = 500;
        for i in 0..n {
            set(&s, "q", body(0, i, 500)).await;
        }
        s.settle().await;
        assert_eq!(s.stats().readahead, Default::default(), "sets read nothing");
        for i in 0..n {
            assert_eq!(get(&s, "q").await.unwrap(), body(0, i, 500));
        }
        let ra = s.stats().readahead;
        assert!(ra.misses >= 1, "{ra:?}");
        assert!(ra.hits > n / 2, "most gets find their chunk read: {ra:?}");
        assert!(ra.hits + ra.misses >= n, "{ra:?}");
        assert!(
            ra.reads >= 4 && ra.ahead >= 1 && ra.ahead < ra.reads,
            "{ra:?}"
        );
        assert!(ra.bytes_read >= n * 500, "{ra:?}");
        assert!(ra.bytes > 0 && ra.bytes <= 5 << 20, "{ra:?}");
        // Summed over shards as `stats` does.
        let mut two = s.stats();
        two.add(&s.stats());
        assert_eq!(two.readahead.hits, 2 * ra.hits);
        s.close().await.unwrap();
    });
}

/// Large bodies written out of line (`log::region`), pipelined among small
/// ones: every reply comes in order with the right body whether the get
/// finds the body still being written, in the cache or only on disk; a peek
/// leaves the message queued; after a restart (and an index rebuild from a
/// scan of the open segment) every message is back byte for byte, and the
/// segments hold `Region` records with their regions behind them.
#[test]
fn large_bodies_go_out_of_line_and_come_back() {
    for sync in [
        SyncMode::Always,
        SyncMode::Interval(Duration::from_millis(5)),
        SyncMode::NONE,
    ] {
        let dir = test_dir();
        let mut cfg = config(dir.path());
        cfg.sync = sync;
        cfg.segment_size = 1 << 20;
        cfg.region_min = 16 << 10;
        cfg.cache_bytes = 64 << 10;
        let shard = cfg.dir.clone();
        run(move || async move {
            let s = Store::open(cfg.clone()).await.unwrap();
            let len = |i: u64| {
                if i.is_multiple_of(3) {
                    20_000 + i as usize * 997
                } else {
                    100
                }
            };
            // Pipelined: every call applies at once, replies in order.
            let mut sets = Vec::new();
            for i in 0..60u64 {
                sets.push(s.set(b"q", 7, body(0, i, len(i))));
            }
            // A get right behind the sets: its message's body (large) is
            // still with its writer.
            let first = s.get(b"q");
            let peek = s.take(b"q", Take::Peek);
            for f in sets {
                assert!(f.await.unwrap());
            }
            assert_eq!(
                first.await.unwrap().unwrap().body.into_vec(),
                body(0, 0, len(0))
            );
            let peeked = peek.await.unwrap().unwrap();
            assert_eq!(
                (peeked.seq, peeked.body.into_vec()),
                (1, body(0, 1, len(1)))
            );
            for i in 1..30u64 {
                assert_eq!(
                    get(&s, "q").await.unwrap(),
                    body(0, i, len(i)),
                    "{sync:?} #{i}"
                );
            }
            s.close().await.unwrap();
            drop(s);
            // The regions are there: every segment scans clean, with a
            // `Region` record for each large message still queued.
            let mut regions = 0;
            for path in seg_files(&shard, "log") {
                let bytes = std::fs::read(&path).unwrap();
                let file = segment::tests::Mem(bytes.clone());
                let rep = segment::scan(&file, bytes.len() as u64, false, |h, _, _| {
                    regions += usize::from(h.kind == Kind::Region)
                })
                .await
                .unwrap();
                assert_eq!(
                    (rep.corrupt.len(), rep.torn, rep.unfinished.len()),
                    (0, None, 0)
                );
            }
            assert!(regions >= 10, "{sync:?}: {regions} regions");
            let s = Store::open(cfg).await.unwrap();
            assert_eq!(counts(&s), vec![(b"q".to_vec(), 60, 30)]);
            for i in 30..60u64 {
                assert_eq!(
                    get(&s, "q").await.unwrap(),
                    body(0, i, len(i)),
                    "{sync:?} #{i}"
                );
            }
            assert_eq!(get(&s, "q").await, None);
            s.close().await.unwrap();
        });
    }
}

/// A get that pops a large message while its region is still being written
/// waits for the write and gets the body from the writer; a peek and a
/// reliable read of one wait too. On a simulated disk whose completions
/// arrive late, the pop's own record is acknowledged long before the
/// region's last piece (a read of the region then would find zeros:
/// `Corrupt`). Nothing here waits for a new segment, so the replies may be
/// awaited in any order.
#[test]
fn a_get_of_a_body_still_being_written_waits_for_it() {
    use crate::disk::sim::SimDisk;
    run(|| async {
        let disk = SimDisk::new();
        disk.set_delays(7, 40);
        let mut cfg = config(Path::new("/sim"));
        cfg.segment_size = 16 << 20;
        cfg.cache_bytes = 0;
        let s = Store::open_on(Rc::new(disk.clone()), cfg.clone())
            .await
            .unwrap();
        let big = |i| body(0, i, (3 << 20) + i as usize);
        let sets: Vec<_> = (0..2).map(|i| s.set(b"q", 7, big(i))).collect();
        let peek = s.take(b"q", Take::Peek);
        let first = s.get(b"q");
        let second = s.take(b"q", Take::Open(1));
        assert_eq!(peek.await.unwrap().unwrap().body.into_vec(), big(0));
        assert_eq!(first.await.unwrap().unwrap().body.into_vec(), big(0));
        assert_eq!(second.await.unwrap().unwrap().body.into_vec(), big(1));
        for f in sets {
            assert!(f.await.unwrap());
        }
        assert!(s.confirm(b"q", 1).await.unwrap());
        assert_eq!(counts(&s), vec![(b"q".to_vec(), 2, 2)]);
        s.close().await.unwrap();
    });
}
