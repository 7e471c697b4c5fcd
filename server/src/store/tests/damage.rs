//! Recovery from files that are damaged rather than merely old: a missing,
//! corrupt or empty index (rebuilt from its segment), a flipped byte in a
//! sealed segment (found by recovery's scan, or with a valid index by the
//! background scrub), and an open segment cut at any length.
//!
//! Guards against: a panic in recovery, a corrupt body handed to a
//! consumer, losing more than the damaged record, and an index trusted
//! when it should be rebuilt.

use std::time::Duration;

use super::*;
use crate::testutil::test_dir;

/// Makes `to` a fresh copy of the segments and indexes in shard directory
/// `from`, for one damaged variant of it.
fn copy_shard(from: &Path, to: &Path) {
    let _ = std::fs::remove_dir_all(to);
    std::fs::create_dir_all(to).unwrap();
    for p in seg_files(from, "log")
        .iter()
        .chain(seg_files(from, "idx").iter())
    {
        std::fs::copy(p, to.join(p.file_name().unwrap())).unwrap();
    }
}

#[test]
fn missing_or_corrupt_index_is_rebuilt() {
    let dir = test_dir();
    let cfg = config(dir.path());
    fill_and_close(cfg.clone(), 1000);
    let idx = seg_files(&cfg.dir, "idx");
    assert!(idx.len() >= 3);
    std::fs::remove_file(&idx[0]).unwrap();
    // In its summary, which a restart reads (a damaged entry page is
    // found when a window is read: see the next test).
    let mut bytes = std::fs::read(&idx[1]).unwrap();
    let n = bytes.len();
    bytes[n - 40] ^= 0xff;
    std::fs::write(&idx[1], bytes).unwrap();
    std::fs::write(&idx[2], b"").unwrap();
    let c = cfg.clone();
    run(move || async move {
        let s = Store::open(c).await.unwrap();
        s.close().await.unwrap();
    });
    // Rebuilt on disk, and valid.
    for p in &idx {
        let lsn = segment::parse_name(p.file_name().unwrap().to_str().unwrap())
            .unwrap()
            .0;
        assert!(
            crate::log::index::LoadedIndex::from_bytes(&std::fs::read(p).unwrap(), lsn).is_ok()
        );
    }
    drain_all(cfg.clone(), 1000);
}

/// A restart reads only the summaries, so damage to an index's entries is
/// found when a queue reads a window there: the index is rebuilt from its
/// segment and every message still comes back.
#[test]
fn a_damaged_entry_page_rebuilds_the_index_when_a_window_is_read() {
    let dir = test_dir();
    let cfg = config(dir.path());
    fill_and_close(cfg.clone(), 1000);
    let idx = seg_files(&cfg.dir, "idx");
    let victim = &idx[1];
    let lsn = segment::parse_name(victim.file_name().unwrap().to_str().unwrap())
        .unwrap()
        .0;
    let mut bytes = std::fs::read(victim).unwrap();
    let summary = crate::log::index::LoadedSummary::from_bytes(&bytes, lsn).unwrap();
    let at = summary
        .get()
        .queues
        .iter()
        .find_map(|q| q.spans.first())
        .unwrap()
        .at;
    drop(summary);
    bytes[at.to_native() as usize + 3] ^= 0x40;
    std::fs::write(victim, &bytes).unwrap();
    // Every message, byte for byte, in order: the damaged page (a wrong
    // sequence number in its first entry) was not used.
    drain_all(cfg.clone(), 1000);
}

/// Flipping any byte of a sealed segment never panics recovery, never
/// yields a corrupted message, and loses at most the damaged record.
#[test]
fn flipped_byte_in_sealed_segment() {
    let dir = test_dir();
    let cfg = config(dir.path());
    fill_and_close(cfg.clone(), 600);
    let logs = seg_files(&cfg.dir, "log");
    let victim = logs[1].clone();
    let orig = std::fs::read(&victim).unwrap();
    let idx = victim.with_extension("idx");
    let orig_idx = std::fs::read(&idx).unwrap();
    let copy = tempfile::tempdir_in(dir.path()).unwrap();
    // About 40 positions spread over the data, the first record's header
    // among them (every position is too slow for a unit test — each one
    // reopens a store on copied segments; the record tests flip every bit
    // of a record).
    let data_len = orig.iter().rposition(|&b| b != 0).unwrap() + 1;
    let positions = (0..8).chain((8..data_len).step_by(data_len / 32 + 1));
    for pos in positions {
        let shard = copy.path().join("shard-000");
        copy_shard(&cfg.dir, &shard);
        let target = shard.join(victim.file_name().unwrap());
        let mut b = orig.clone();
        b[pos] ^= 0x5a;
        std::fs::write(&target, &b).unwrap();
        // Half the time without the index, so the scan sees the damage.
        if pos % 2 == 0 {
            std::fs::remove_file(shard.join(idx.file_name().unwrap())).unwrap();
        } else {
            std::fs::write(shard.join(idx.file_name().unwrap()), &orig_idx).unwrap();
        }
        let mut c = cfg.clone();
        c.dir = shard;
        c.cache_bytes = 0;
        run(move || async move {
            let s = Store::open(c).await.unwrap();
            let mut got = 0;
            let mut corrupt = 0;
            for q in 0..4 {
                let mut next = 0u64;
                let mut empty = false;
                while !empty {
                    // Pops take effect when called: 64 at a time share one
                    // group commit instead of an fdatasync each.
                    let name = format!("q{q}");
                    let pops: Vec<_> = (0..64).map(|_| s.get(name.as_bytes())).collect();
                    for pop in pops {
                        match pop.await {
                            Ok(Some(m)) => {
                                // Only intact messages, in order, none twice.
                                let i = m.seq;
                                assert!(i >= next);
                                assert_eq!(m.body, body(q, i, 250), "pos {pos}");
                                next = i + 1;
                                got += 1;
                            }
                            Ok(None) => empty = true,
                            Err(LogError::Failed(_)) => {}
                            // The damaged record, reported to the get that
                            // reached it before the scrub did (cold reads
                            // are read ahead, so a drain can overtake it).
                            Err(LogError::Corrupt { .. }) => corrupt += 1,
                            Err(e) => panic!("{e:?}"),
                        }
                    }
                }
            }
            assert!(corrupt <= 1, "pos {pos}: {corrupt} corrupt records");
            assert!(got >= 598, "pos {pos}: only {got} messages survived");
            s.close().await.unwrap();
        });
    }
}

/// Cutting the open segment at any length loses only the cut records.
#[test]
fn truncated_open_segment() {
    let dir = test_dir();
    let mut cfg = config(dir.path());
    cfg.segment_size = 1 << 20;
    let shard = cfg.dir.clone();
    let c2 = cfg.clone();
    run(move || async move {
        let s = Store::open(c2).await.unwrap();
        for i in 0..40 {
            set(&s, "q", body(0, i, 90)).await;
        }
        s.crash().await;
    });
    let logs = seg_files(&shard, "log");
    let open = logs.last().unwrap().clone();
    let orig = std::fs::read(&open).unwrap();
    let data_len = orig.iter().rposition(|&b| b != 0).unwrap() + 1;
    let copy = tempfile::tempdir_in(dir.path()).unwrap();
    // About 40 cuts spread over the data, the very start and end included.
    for cut in (0..=data_len)
        .step_by(data_len / 40 + 1)
        .chain([1, data_len - 1, data_len])
    {
        let sh = copy.path().join("shard-000");
        copy_shard(&shard, &sh);
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(sh.join(open.file_name().unwrap()))
            .unwrap();
        f.set_len(cut as u64).unwrap();
        let mut c = cfg.clone();
        c.dir = sh;
        run(move || async move {
            let s = Store::open(c).await.unwrap();
            let n = s.queue_stats().first().map_or(0, |q| q.enqueued);
            let mut i = 0;
            while let Some(b) = get(&s, "q").await {
                assert_eq!(b, body(0, i, 90), "cut {cut}");
                i += 1;
            }
            assert_eq!(i, n);
            if cut == data_len {
                assert_eq!(n, 40);
            }
            s.close().await.unwrap();
        });
    }
}

/// A flipped byte in a sealed segment that keeps a valid index is found by
/// the background scrub, and the damaged message is dropped before a
/// consumer reaches it: every get succeeds, one message is missing.
#[test]
fn scrub_drops_a_damaged_message_before_it_is_read() {
    let dir = test_dir();
    let cfg = config(dir.path());
    fill_and_close(cfg.clone(), 600);
    let victim = seg_files(&cfg.dir, "log")[1].clone();
    let mut b = std::fs::read(&victim).unwrap();
    // A byte inside a record header (so it is covered by the checksum).
    let data_len = b.iter().rposition(|&x| x != 0).unwrap();
    let start = (data_len / 2) / 8 * 8;
    let rec = (start..data_len)
        .step_by(8)
        .find(|&p| &b[p + 8..p + 10] == b"MQ")
        .unwrap();
    b[rec + 20] ^= 0x01;
    std::fs::write(&victim, &b).unwrap();
    let mut c = cfg.clone();
    c.cache_bytes = 0;
    run(move || async move {
        let s = Store::open(c).await.unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(120);
        while s.stats().log_corrupt_records == 0 {
            assert!(
                std::time::Instant::now() < deadline,
                "the scrub found nothing within 120 s"
            );
            glommio::timer::sleep(Duration::from_millis(5)).await;
        }
        // A resident message is dropped at once; a paged one when its
        // window is read, still before any consumer reaches it.
        assert!([599, 600].contains(&s.stats().items));
        let mut got = 0;
        for q in 0..4 {
            while let Some(m) = s.get(format!("q{q}").as_bytes()).await.unwrap() {
                assert_eq!(m.body, body(q, m.seq, 250));
                got += 1;
            }
        }
        assert_eq!(got, 599);
        s.close().await.unwrap();
    });
}
