//! Disk space: consumed segments are deleted, a slow queue's messages are
//! compacted forward instead of pinning old segments, segments start small
//! and grow, the largest message `-B` admits always fits, and a full disk
//! (`max_disk`, ENOSPC when the next segment's file is made) refuses sets
//! but keeps serving gets, until consumers free space; idle queues outlive
//! the segments that created them.
//!
//! Guards against: a log that only grows, a shard that stops for good on
//! ENOSPC, half-written queues after an out-of-space refusal, useless
//! segment rolls, and a start-up bound on message size that a message of
//! that size then breaks.

use std::rc::Rc;
use std::time::Duration;

use super::*;
use crate::testutil::test_dir;

#[test]
fn consumed_segments_are_deleted_and_indexed() {
    let dir = test_dir();
    let cfg = config(dir.path());
    let shard = cfg.dir.clone();
    run(move || async move {
        let s = Store::open(cfg.clone()).await.unwrap();
        for i in 0..2000 {
            set(&s, "q", body(0, i, 300)).await;
        }
        s.settle().await;
        let logs = seg_files(&shard, "log");
        assert!(logs.len() >= 8, "{} segments", logs.len());
        // Every sealed segment (all but the newest) has its index.
        assert_eq!(seg_files(&shard, "idx").len(), logs.len() - 1);
        for i in 0..2000 {
            assert_eq!(get(&s, "q").await.unwrap(), body(0, i, 300));
        }
        s.settle().await;
        assert_eq!(
            seg_files(&shard, "log").len(),
            1,
            "consumed segments are deleted"
        );
        assert_eq!(s.stats().log_segments, 1);
        s.close().await.unwrap();
        drop(s);
        let s = Store::open(cfg).await.unwrap();
        assert_eq!(s.queue_stats()[0].enqueued, 2000);
        assert_eq!(s.queue_stats()[0].dequeued, 2000);
        s.close().await.unwrap();
    });
}

#[test]
fn compaction_moves_a_slow_queues_messages_forward() {
    let dir = test_dir();
    let cfg = config(dir.path());
    let shard = cfg.dir.clone();
    run(move || async move {
        let s = Store::open(cfg.clone()).await.unwrap();
        // A slow queue gets one message for every 50 of a fast one.
        for i in 0..4000u64 {
            if i % 50 == 0 {
                set(&s, "slow", body(1, i / 50, 300)).await;
            }
            set(&s, "fast", body(0, i, 300)).await;
            if i >= 10 {
                assert!(get(&s, "fast").await.is_some());
            }
        }
        s.settle().await;
        let segs = seg_files(&shard, "log").len();
        // 80 slow messages of 348 bytes fit in one segment; without
        // compaction they would pin ~20 segments.
        assert!(segs <= 4, "{segs} segments left");
        s.close().await.unwrap();
        drop(s);
        let s = Store::open(cfg).await.unwrap();
        for i in 0..80 {
            assert_eq!(
                get(&s, "slow").await.unwrap(),
                body(1, i, 300),
                "slow message {i}"
            );
        }
        assert_eq!(get(&s, "slow").await, None);
        assert_eq!(s.queue_stats()[1].enqueued, 80);
        s.close().await.unwrap();
    });
}

/// `-B` is refused at start-up above `max_message_size`: messages of that
/// size must always fit (a new queue with the longest name, and again after
/// a roll to a new segment), and the bound must not be far below the truth.
#[test]
fn the_largest_message_a_segment_holds() {
    // Written inline, and out of line (which takes up to two blocks more).
    for region_min in [crate::log::REGION_MIN, 1 << 10] {
        the_largest_message_a_segment_holds_with(region_min);
    }
}

fn the_largest_message_a_segment_holds_with(region_min: usize) {
    let dir = test_dir();
    let mut cfg = config(dir.path());
    cfg.region_min = region_min;
    let largest = crate::log::writer::max_message_size(cfg.segment_size, 250, region_min) as usize;
    run(move || async move {
        let s = Store::open(cfg.clone()).await.unwrap();
        let name = [b'q'; 250];
        for i in 0..3 {
            s.set(&name, 0, body(0, i, largest))
                .await
                .unwrap_or_else(|e| panic!("set {i} of {largest} bytes: {e}"));
        }
        let slack = 2 * record::record_len(16 + 250) + record::RECORD_ALIGN;
        assert_eq!(
            s.set(b"other", 0, body(1, 0, largest + slack)).await,
            Err(LogError::OutOfSpace)
        );
        for _ in 0..3 {
            assert_eq!(s.get(&name).await.unwrap().unwrap().body.len(), largest);
        }
        s.close().await.unwrap();
    });
}

#[test]
fn out_of_space_then_recovers() {
    let dir = test_dir();
    let mut cfg = config(dir.path());
    cfg.max_disk = Some(4 * (64 << 10));
    run(move || async move {
        let s = Store::open(cfg.clone()).await.unwrap();
        let mut stored = 0u64;
        loop {
            match s.set(b"q", 0, body(0, stored, 1000)).await {
                Ok(_) => stored += 1,
                Err(LogError::OutOfSpace) => break,
                Err(e) => panic!("{e:?}"),
            }
            assert!(stored < 10_000);
        }
        assert!(stored > 100);
        assert_eq!(
            s.set(b"other", 0, body(1, 0, 1000)).await,
            Err(LogError::OutOfSpace)
        );
        assert!(
            s.queue_stats().iter().all(|q| q.name != b"other"),
            "nothing half-written"
        );
        // Consumers keep working and free space.
        for i in 0..stored {
            assert_eq!(get(&s, "q").await.unwrap(), body(0, i, 1000));
        }
        s.settle().await;
        set(&s, "q", b"after".to_vec()).await;
        s.close().await.unwrap();
        drop(s);
        let s = Store::open(cfg).await.unwrap();
        assert_eq!(get(&s, "q").await.unwrap(), b"after");
        assert_eq!(s.queue_stats()[0].enqueued, stored + 1);
        s.close().await.unwrap();
    });
}

/// Many queues, idle after their first message: segments keep their
/// configured size (a checkpoint names queues by id range, it does not
/// restate them), the segments that created the queues are deleted once
/// consumed (their queues restated first), a deleted queue whose
/// `Deleted` record went with them stays deleted, and a restart finds every
/// queue with its counters. Guards against: checkpoints that restate every
/// queue in every segment (72 MB per segment at a million queues), idle
/// queues lost with the segment that created them, and a compaction that
/// copies a segment of `Created` records forward for ever.
#[test]
fn idle_queues_outlive_the_segments_that_created_them() {
    let dir = test_dir();
    let cfg = config(dir.path());
    let shard = cfg.dir.clone();
    run(move || async move {
        let s = Store::open(cfg.clone()).await.unwrap();
        // The first segment stays (`pin`'s message keeps it more than a
        // quarter live) with `gone`'s `Created` record in it.
        set(&s, "gone", b"y".to_vec()).await;
        set(&s, "pin", body(2, 0, 20_000)).await;
        // ~264 bytes of `Created` record and ~1 KB of message each: ~400 KB
        // against 64 KiB segments.
        let n = 300;
        let name = |i: usize| format!("{i:0>200}");
        for i in 0..n {
            set(&s, &name(i), body(1, i as u64, 1000)).await;
        }
        for i in 0..n {
            assert_eq!(get(&s, &name(i)).await.unwrap(), body(1, i as u64, 1000));
        }
        s.settle().await;
        // A busy queue rolls the log on; the queues above are idle. The
        // segment with `gone`'s `Deleted` record (the open one, among the
        // busy queue's messages) goes, the first, with its `Created` one,
        // stays.
        let first = seg_files(&shard, "log")[0].clone();
        let mut deleted = None;
        for round in 0..40u64 {
            if round == 5 {
                assert!(s.delete(b"gone").await.unwrap());
                deleted = seg_files(&shard, "log").pop();
            }
            for i in 0..50 {
                set(&s, "busy", body(0, round * 50 + i, 1000)).await;
            }
            for i in 0..50 {
                assert_eq!(
                    get(&s, "busy").await.unwrap(),
                    body(0, round * 50 + i, 1000)
                );
            }
        }
        s.settle().await;
        let logs = seg_files(&shard, "log");
        let deleted = deleted.unwrap();
        assert!(
            logs.contains(&first) && !logs.contains(&deleted),
            "{logs:?}"
        );
        // `pin`'s, the idle queues' restatements (~80 KB) and the busy
        // queue's.
        assert!(logs.len() <= 6, "consumed segments are deleted: {logs:?}");
        for p in &logs {
            let len = std::fs::metadata(p).unwrap().len();
            assert!(len <= cfg.segment_size, "{}: {len} bytes", p.display());
        }
        let before = counts(&s);
        assert_eq!(before.len(), n + 2);
        s.close().await.unwrap();
        drop(s);
        let s = Store::open(cfg).await.unwrap();
        assert_eq!(counts(&s), before);
        assert!(counts(&s).iter().all(|(q, _, _)| q != b"gone"));
        assert_eq!(get(&s, &name(n - 1)).await, None);
        assert_eq!(get(&s, "pin").await.unwrap(), body(2, 0, 20_000));
        set(&s, &name(7), b"z".to_vec()).await;
        assert_eq!(get(&s, &name(7)).await.unwrap(), b"z");
        s.close().await.unwrap();
    });
}

#[test]
fn enospc_for_the_next_segment_refuses_sets_and_keeps_serving() {
    use crate::disk::sim::{Fault, Op, SimDisk, Trigger};
    run(|| async {
        let disk = SimDisk::new();
        let cfg = config(Path::new("/sim"));
        let s = Store::open_on(Rc::new(disk.clone()), cfg.clone())
            .await
            .unwrap();
        // Once the consumers' spare is made, every later one (the sets'
        // spare first) fails with ENOSPC, for a while.
        s.settle().await;
        let first = disk.ops_of(Op::PreAllocate);
        for k in first..first + 3 {
            disk.inject(
                Trigger::NthOf(Op::PreAllocate, k),
                Fault::Errno(libc::ENOSPC),
            );
        }
        let mut stored = 0u64;
        loop {
            match s.set(b"q", 0, body(0, stored, 1000)).await {
                Ok(_) => stored += 1,
                Err(LogError::OutOfSpace) => break,
                Err(e) => panic!("set {stored}: {e:?}"),
            }
            assert!(stored < 10_000, "never ran out of space");
        }
        assert!(stored > 40, "the first segment holds more");
        // Consumers go on, and get everything back in order.
        for i in 0..stored {
            assert_eq!(get(&s, "q").await.unwrap(), body(0, i, 1000), "{i}");
        }
        assert_eq!(get(&s, "q").await, None);
        // Space is back: sets work again.
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            match s.set(b"q", 0, b"again".to_vec()).await {
                Ok(_) => break,
                Err(LogError::OutOfSpace) => {
                    assert!(std::time::Instant::now() < deadline, "sets never came back");
                    glommio::timer::sleep(Duration::from_millis(10)).await;
                }
                Err(e) => panic!("{e:?}"),
            }
        }
        assert_eq!(get(&s, "q").await.unwrap(), b"again");
        s.close().await.unwrap();
    });
}

/// Segment sizes (issue 10's footprint): a run starts in a small segment
/// beside the small consumers' spare; the sets' full-size spare is made
/// once the open segment is half full, and sets roll into it; a power cut
/// keeps everything acknowledged across the two sizes, and the next run
/// starts small again.
#[test]
fn a_run_starts_small_and_rolls_into_full_size_segments() {
    use crate::disk::sim::SimDisk;
    use crate::log::writer::SMALL_SEGMENT as SMALL;
    run(|| async {
        let disk = SimDisk::new();
        let mut cfg = config(Path::new("/sim"));
        let full = 32 << 20;
        cfg.segment_size = full;
        let s = Store::open_on(Rc::new(disk.clone()), cfg.clone())
            .await
            .unwrap();
        s.settle().await;
        let disk_bytes = |s: &Store| s.stats().log_disk_bytes;
        assert_eq!(disk_bytes(&s), 2 * SMALL, "first segment and spare");

        // Sets may use 7/8 of the first segment: past half of that, the
        // sets' spare is made, full size.
        let len = 64 << 10;
        let half = (SMALL - SMALL / 8) / 2 / len as u64 + 1;
        for i in 0..half {
            set(&s, "q", body(0, i, len)).await;
        }
        s.settle().await;
        assert_eq!(disk_bytes(&s), 2 * SMALL + full, "the sets' spare");
        assert_eq!(s.stats().log_segments, 1);

        // Past the first segment: the roll takes the full-size spare.
        let n = 3 * half;
        for i in half..n {
            set(&s, "q", body(0, i, len)).await;
        }
        s.settle().await;
        let st = s.stats();
        assert_eq!(st.log_segments, 2);
        // The first segment, sealed and truncated to its records (at most
        // SMALL), its index, the open full-size one and the small spare.
        assert!(st.log_disk_bytes > full + SMALL, "{}", st.log_disk_bytes);
        assert!(
            st.log_disk_bytes <= 2 * SMALL + full + (64 << 10),
            "{}",
            st.log_disk_bytes
        );

        // A power cut now (`always`: acknowledged means synced).
        let image = disk.power_cut_image(0, None);
        let s = Store::open_on(Rc::new(image), cfg.clone()).await.unwrap();
        s.settle().await;
        for i in 0..n {
            assert_eq!(get(&s, "q").await.unwrap(), body(0, i, len), "{i}");
        }
        assert_eq!(get(&s, "q").await, None);
        s.close().await.unwrap();
    });
}
