//! The backlog's runs: counters, paging out and in, and the operations
//! that meet a paged run.

use super::*;

fn loc(seq: u64, seg: u32, body: u32) -> Loc {
    Loc {
        seq,
        pos: Pos {
            seg,
            off: seq as u32 * 64,
        },
        len: record::HEADER_LEN as u32 + body,
        expires: 0,
    }
}

fn entry(seq: u64, body: u32) -> IndexEntry {
    IndexEntry {
        seq,
        off: seq as u32 * 64,
        len: record::HEADER_LEN as u32 + body,
        expires: 0,
        time: 0,
    }
}

fn pages(count: u64) -> EntryPages {
    let n = (count as usize).div_ceil(crate::log::index::PAGE_ENTRIES);
    EntryPages::new(0, count as u32, std::iter::repeat_n(0, n))
}

/// The counters are those of what is queued, which is in sequence order.
fn check(b: &Backlog) {
    let resident: Vec<&Loc> = b.resident().collect();
    let paged: u64 = b.paged().map(|p| u64::from(p.count)).sum();
    assert_eq!(b.items(), resident.len() as u64 + paged);
    let bytes = resident.iter().map(|l| l.body_len()).sum::<u64>()
        + b.paged().map(Paged::body_bytes).sum::<u64>();
    assert_eq!(b.bytes(), bytes);
    assert_eq!(b.is_empty(), b.items() == 0);
    if let Runs::Few(few) = &b.runs {
        let locs = few.as_slice();
        assert!(locs.windows(2).all(|w| w[0].seq < w[1].seq));
        assert_eq!(locs.len() as u64, b.items(), "nothing paged");
        return;
    }
    let mut last = None;
    for r in b.run_list().unwrap() {
        let (first, end) = match r {
            Run::Resident(locs) => {
                assert!(!locs.is_empty(), "no empty run");
                assert!(locs
                    .iter()
                    .zip(locs.iter().skip(1))
                    .all(|(a, z)| a.seq < z.seq));
                (locs[0].seq, locs.back().unwrap().seq)
            }
            Run::Paged(p) => (p.lo, p.end() - 1),
        };
        assert!(last.is_none_or(|l| l < first), "runs in sequence order");
        last = Some(end);
    }
}

#[test]
fn counters_follow_every_operation() {
    let mut b = Backlog::from_locs(
        (0..6)
            .map(|s| loc(s, s as u32 % 2, 10 + s as u32))
            .collect(),
    );
    check(&b);
    assert_eq!((b.items(), b.bytes()), (6, 75));
    let head = b.pop().unwrap();
    check(&b);
    b.push(loc(6, 0, 1));
    check(&b);
    let gone = b.remove_in(1, 3 * 64, 4 * 64);
    assert_eq!(gone.iter().map(|l| l.seq).collect::<Vec<_>>(), [3]);
    check(&b);
    b.put_back(head);
    check(&b);
    assert_eq!(b.head().map(|l| l.seq), Some(0));
    let damaged = b.remove_in(1, 64, 5 * 64);
    assert_eq!(damaged.iter().map(|l| l.seq).collect::<Vec<_>>(), [1]);
    check(&b);
    let to = Pos { seg: 9, off: 0 };
    let l2 = loc(2, 0, 12);
    assert!(!b.relocate(2, to, to, l2.len, 0), "not at `from`");
    assert!(b.relocate(2, l2.pos, to, l2.len, 0));
    assert_eq!(b.get(2).map(|l| l.pos), Some(to));
    assert!(b.contains(4) && !b.contains(1));
    check(&b);
    while b.pop().is_some() {
        check(&b);
    }
    assert_eq!((b.items(), b.bytes()), (0, 0));
}

/// A backlog of `n` messages in segment 0, paged out beyond the window.
fn deep(n: u64) -> Backlog {
    let mut b = Backlog::default();
    for seq in 0..n {
        b.push(loc(seq, 0, 8));
    }
    let out = b.page_out(0, &[(0, pages(n))], WINDOW);
    assert_eq!(out as u64, n - WINDOW as u64);
    check(&b);
    b
}

#[test]
fn many_queues_share_the_head_budget() {
    assert_eq!(window_for(1), WINDOW);
    assert_eq!(window_for(1024), WINDOW);
    assert_eq!(window_for(10_000), 104);
    assert_eq!(window_for(1_000_000), MIN_WINDOW);
    // Paging out with a smaller window keeps that many, and a window read
    // brings in as many.
    let mut b = Backlog::default();
    for seq in 0..5000 {
        b.push(loc(seq, 0, 8));
    }
    let w = window_for(10_000);
    assert_eq!(b.page_out(0, &[(0, pages(5000))], w), 5000 - w);
    assert_eq!(b.resident().count(), w);
    assert!(b.page_job(w).is_none(), "a full window is resident");
    while b.resident().count() >= w / 2 {
        b.pop();
    }
    assert_eq!(b.page_job(w).map(|j| (j.lo, j.n)), Some((w as u64, w)));
    check(&b);
}

#[test]
fn paging_out_keeps_the_head_window_and_the_counters() {
    let b = deep(5000);
    assert_eq!(b.resident().count(), WINDOW);
    let p: Vec<&Paged> = b.paged().collect();
    assert_eq!(
        (p.len(), p[0].lo, p[0].count),
        (1, WINDOW as u64, 5000 - WINDOW as u32)
    );
    assert_eq!(p[0].skip as usize, WINDOW);
    assert_eq!(b.items(), 5000);
    // A segment the queue has nothing in pages nothing.
    let mut b = deep(2000);
    assert_eq!(b.page_out(7, &[(0, pages(2000))], WINDOW), 0);
}

#[test]
fn a_window_read_ahead_comes_in_before_the_head_runs_dry() {
    let mut b = deep(3000);
    assert!(b.page_job(WINDOW).is_none(), "a full window is resident");
    while b.resident().count() >= WINDOW / 2 {
        b.pop();
    }
    let job = b.page_job(WINDOW).expect("read ahead");
    assert_eq!(
        (job.seg, job.lo, job.skip as usize, job.n),
        (0, WINDOW as u64, WINDOW, WINDOW)
    );
    let entries: Vec<IndexEntry> = (job.lo..job.lo + job.n as u64)
        .map(|s| entry(s, 8))
        .collect();
    // Not the run's window (it moved): ignored.
    assert!(b.paged_in(0, job.lo + 1, &entries, |_| false).is_none());
    let dropped = b
        .paged_in(0, job.lo, &entries, |off| off == 1100 * 64)
        .unwrap();
    assert_eq!(dropped.iter().map(|l| l.seq).collect::<Vec<_>>(), [1100]);
    check(&b);
    let mut seqs = Vec::new();
    loop {
        match b.pop() {
            Some(l) => seqs.push(l.seq),
            None if b.is_empty() => break,
            None => {
                let job = b.ready(|_| false).expect_err("the head is paged");
                let entries: Vec<IndexEntry> = (job.lo..job.lo + job.n as u64)
                    .map(|s| entry(s, 8))
                    .collect();
                b.paged_in(job.seg, job.lo, &entries, |_| false).unwrap();
                check(&b);
            }
        }
    }
    let want: Vec<u64> = ((WINDOW / 2) as u64 + 1..3000)
        .filter(|&s| s != 1100)
        .collect();
    assert_eq!(seqs[seqs.len() - want.len()..], want[..]);
}

#[test]
fn compaction_moves_a_paged_run_from_its_front() {
    let mut b = deep(2000);
    let first = WINDOW as u64;
    let from = |seq: u64| loc(seq, 0, 8).pos;
    let to = |seq: u64| Pos {
        seg: 5,
        off: seq as u32,
    };
    assert!(b.holds_at(first + 3, from(first + 3)));
    assert!(!b.holds_at(first + 3, to(first + 3)));
    assert!(
        !b.relocate(first + 3, from(first + 3), to(first + 3), 56, 0),
        "not its front"
    );
    for seq in first..first + 10 {
        assert!(b.relocate(seq, from(seq), to(seq), 56, 0));
        check(&b);
    }
    assert_eq!(b.get(first + 9).map(|l| l.pos), Some(to(first + 9)));
    assert_eq!(b.paged().next().unwrap().lo, first + 10);
    assert_eq!(b.items(), 2000);
}

#[test]
fn flush_drops_paged_runs_unread_and_put_back_goes_below_them() {
    let mut b = deep(3000);
    let a = b.pop().unwrap();
    let c = b.pop().unwrap();
    b.put_back(c);
    b.put_back(a);
    check(&b);
    assert_eq!(b.first_seq(), Some(0));
    let mut n = 0;
    while let Some(d) = b.drop_front() {
        n += match d {
            Dropped::One(_) => 1,
            Dropped::Run(p) => p.count,
        };
        check(&b);
    }
    assert_eq!(n, 3000);
}

#[test]
fn storage_shrinks_after_a_drain_but_not_below_the_floor() {
    let mut b = Backlog::default();
    for seq in 0..100_000 {
        b.push(loc(seq, 0, 8));
    }
    let cap = |b: &Backlog| match b.run_list().and_then(|runs| runs.first()) {
        Some(Run::Resident(locs)) => locs.capacity(),
        _ => 0,
    };
    let full = cap(&b);
    while b.items() > 10 {
        b.pop();
    }
    assert!(cap(&b) < full / 100, "shrunk as it drained");
    // A queue that stays small keeps its storage: no reallocation per set
    // and get.
    let small = cap(&b);
    for seq in 100_000..100_200 {
        b.push(loc(seq, 0, 8));
        b.pop();
        assert_eq!(cap(&b), small);
    }
}

/// Most queues of a shard with a million hold a message or two: those
/// are kept in place, with no allocation, whatever brought them there.
#[test]
fn a_few_messages_are_kept_in_place() {
    let few = |b: &Backlog| matches!(b.runs, Runs::Few(_));
    assert!(
        std::mem::size_of::<Backlog>() <= 72,
        "{}",
        std::mem::size_of::<Backlog>()
    );
    let mut b = Backlog::default();
    b.push(loc(0, 0, 1));
    b.push(loc(1, 0, 2));
    check(&b);
    assert!(few(&b));
    assert_eq!(b.get(1).map(|l| l.seq), Some(1));
    assert!(b.contains(0) && !b.contains(2) && b.holds_at(1, loc(1, 0, 2).pos));
    assert!(b.relocate(1, loc(1, 0, 2).pos, Pos { seg: 3, off: 0 }, 30, 0));
    assert!(b.holds_at(1, Pos { seg: 3, off: 0 }));
    assert_eq!(b.page_job(WINDOW).map(|j| j.lo), None);
    assert!(b.ready(|_| true).is_ok());
    b.push(loc(2, 0, 3));
    check(&b);
    assert!(!few(&b), "a third message moves them out");
    let head = b.pop().unwrap();
    check(&b);
    assert!(!few(&b), "not back at two");
    b.pop().unwrap();
    check(&b);
    assert!(few(&b), "back at one");
    assert_eq!(b.first_seq(), Some(2));
    b.put_back(head);
    check(&b);
    assert!(few(&b));
    assert_eq!(b.resident().map(|l| l.seq).collect::<Vec<_>>(), [0, 2]);
    let gone = b.remove_in(0, 0, 1);
    assert_eq!(gone, [head]);
    check(&b);
    assert_eq!((b.items(), b.bytes()), (1, 3));
    b.pop().unwrap();
    check(&b);
    assert!(few(&b) && b.is_empty() && b.pop().is_none() && b.drop_front().is_none());

    // Paged runs are not among the few, and the last message read back is.
    let mut b = Backlog::default();
    b.push_paged(Paged {
        seg: 0,
        lo: 0,
        count: 2,
        rec_bytes: 2 * (record::HEADER_LEN as u32 + 8),
        skip: 0,
        pages: pages(2),
    });
    assert!(!few(&b));
    assert!(!b.run_list().unwrap().spilled(), "one run is in place too");
    assert_eq!(b.ready(|_| false).unwrap_err().lo, 0);
    let entries = [entry(0, 8), entry(1, 8)];
    assert_eq!(b.paged_in(0, 0, &entries, |_| false), Some(vec![]));
    check(&b);
    b.pop().unwrap();
    check(&b);
    assert!(few(&b));
}

/// Ten thousand deep queues keep a paged run per segment each, millions
/// of them: a run of one page is its 40 bytes, with no allocation behind
/// it (docs/format.md, "Memory per queue").
#[test]
fn a_paged_run_of_one_page_is_40_bytes() {
    assert_eq!(std::mem::size_of::<Run>(), 40);
    let one = EntryPages::new(4096, 170, std::iter::once(7));
    assert_eq!((one.at(), one.count(), one.crcs()), (4096, 170, &[7][..]));
    let long = EntryPages::new(1 << 33, 171, [1, 2].into_iter());
    assert_eq!(
        (long.at(), long.count(), long.crcs()),
        (1 << 33, 171, &[1, 2][..])
    );
    // Past 4 GiB into the index, a page keeps its offset in full.
    let far = EntryPages::new(1 << 33, 3, std::iter::once(9));
    assert_eq!((far.at(), far.count(), far.crcs()), (1 << 33, 3, &[9][..]));
}
