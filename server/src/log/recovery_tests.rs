//! Recovery's replay rules (the newest copy wins, a torn tail is not
//! corruption) checked on summaries and segments built in memory.

use super::*;
use crate::log::record;
use crate::log::segment::tests::Mem;
use crate::log::Pos;

/// A segment of ten records whose last one a crash cut short.
fn torn_segment() -> Vec<u8> {
    let mut buf = Vec::new();
    for lsn in 1..=10 {
        let body = vec![0xab; 100];
        record::encode_into(&mut buf, &record::message_header(lsn, body.len()), &body);
    }
    let last = buf.iter().rposition(|&b| b != 0).expect("a body byte");
    buf[last] ^= 0x5a;
    buf.resize(2 * BLOCK as usize, 0);
    buf
}

/// The torn tail of the open segment is how a crash ends the log: cut,
/// never counted as corruption nor stored in the index as such (which
/// every later start read back). In a sealed segment it is damage.
#[test]
fn a_torn_tail_of_the_open_segment_is_not_corruption() {
    let file = Mem(torn_segment());
    let scan =
        |is_open| futures_lite::future::block_on(scan_to_index("t", &file, 1, is_open)).unwrap();
    let (idx, rep) = scan(true);
    assert!(rep.torn.is_some());
    assert_eq!(idx.last_lsn, 9);
    assert_eq!(idx.corrupt_records, 0);
    let (idx, rep) = scan(false);
    assert!(rep.torn.is_some());
    assert_eq!(idx.corrupt_records, 1);
}

fn loc(seq: u64, seg: u32) -> Loc {
    Loc {
        seq,
        pos: Pos { seg, off: 0 },
        len: 60,
        expires: 0,
    }
}

/// Messages met in segment order: in sequence order but for
/// compaction copies, some of a message still present (the newest copy
/// stands), some of one whose original is gone (it goes in at its
/// place), one copied twice. The times follow each kept message.
#[test]
fn arrivals_keep_the_newest_copy_in_sequence_order() {
    let mut a = Arrivals::default();
    // Segment 0: 0..4 at second 100; segment 1: 6..8 at 101.
    for seq in 0..4 {
        a.push(loc(seq, 0), 100);
    }
    for seq in 6..8 {
        a.push(loc(seq, 1), 101);
    }
    // Segment 2: copies of 1 and 5 (its original reclaimed), then 9.
    a.push(loc(1, 2), 100);
    a.push(loc(5, 2), 99);
    a.push(loc(9, 2), 102);
    // Segment 3: 5 copied again, 4 (original reclaimed).
    a.push(loc(5, 3), 99);
    a.push(loc(4, 3), 100);
    let mut dropped = Vec::new();
    a.settle(&mut |l| dropped.push((l.seq, l.pos.seg)));
    dropped.sort();
    assert_eq!(dropped, [(1, 0), (5, 2)]);
    let (locs, runs) = a.into_parts();
    let got: Vec<(u64, u32)> = locs.iter().map(|l| (l.seq, l.pos.seg)).collect();
    assert_eq!(
        got,
        [
            (0, 0),
            (1, 2),
            (2, 0),
            (3, 0),
            (4, 3),
            (5, 3),
            (6, 1),
            (7, 1),
            (9, 2)
        ]
    );
    assert_eq!(runs, [(0, 100), (5, 99), (6, 101), (9, 102)]);
}

/// In sequence order throughout: nothing to settle, nothing moved.
#[test]
fn arrivals_in_order_are_kept_as_they_come() {
    let mut a = Arrivals::default();
    for seq in 3..10 {
        a.push(loc(seq, (seq / 4) as u32), 7 + (seq / 5) as u32);
    }
    a.settle(&mut |_| panic!("no copies"));
    let (locs, runs) = a.into_parts();
    assert_eq!(
        locs.iter().map(|l| l.seq).collect::<Vec<_>>(),
        (3..10).collect::<Vec<_>>()
    );
    assert_eq!(runs, [(3, 7), (5, 8)]);
}
