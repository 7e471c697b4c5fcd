//! `--verify`'s judgement, checked on hand-made logs: plain runs, broken
//! connections, and reliable reads.

use super::*;

fn body(p: &Pattern, h: Header, len: usize) -> Vec<u8> {
    let mut b = vec![0u8; len];
    h.write(&mut b);
    b[HEADER_LEN..].copy_from_slice(p.slice(h.producer, h.seq, len - HEADER_LEN));
    b
}

fn hdr(producer: u32, seq: u64) -> Header {
    Header {
        run: 9,
        producer,
        queue: 0,
        seq,
        sent_ns: 0,
    }
}

fn producer(id: u32, sent: u64) -> ProducerLog {
    let mut p = ProducerLog {
        id,
        sent,
        ..ProducerLog::default()
    };
    for s in 0..sent {
        p.acked.set(s);
    }
    p
}

#[test]
fn clean_run_passes() {
    let pat = Pattern::new(64, 1);
    let mut c = ConsumerLog::new(9, 2, false);
    for s in 0..10 {
        assert!(c.check(5, 0, &body(&pat, hdr(0, s), 64), &pat, 0).is_some());
        assert!(c.check(5, 0, &body(&pat, hdr(1, s), 40), &pat, 0).is_some());
    }
    let r = finish(
        &[producer(0, 10), producer(1, 10)],
        &[c],
        0,
        Crashes::default(),
    );
    assert!(r.passed, "{r:?}");
    assert_eq!(r.received, 20);
}

#[test]
fn loss_duplicates_order_and_corruption_are_caught() {
    let pat = Pattern::new(64, 1);
    let mut a = ConsumerLog::new(9, 1, false);
    let mut b = ConsumerLog::new(9, 1, false);
    a.check(1, 0, &body(&pat, hdr(0, 0), 40), &pat, 0);
    a.check(1, 0, &body(&pat, hdr(0, 2), 40), &pat, 0);
    a.check(1, 0, &body(&pat, hdr(0, 1), 40), &pat, 0); // out of order
    b.check(2, 0, &body(&pat, hdr(0, 2), 40), &pat, 0); // dup across threads
    let mut bad = body(&pat, hdr(0, 3), 40);
    bad[39] ^= 1;
    b.check(2, 0, &bad, &pat, 0);
    let r = finish(&[producer(0, 5)], &[a, b], 0, Crashes::default());
    assert!(!r.passed);
    assert_eq!(r.out_of_order, 1);
    assert_eq!(r.duplicates, 1);
    assert_eq!(r.corrupt, 1);
    assert_eq!(r.lost, 2); // seq 3 (corrupt) and 4
}

#[test]
fn foreign_messages_do_not_fail() {
    let pat = Pattern::new(64, 1);
    let mut c = ConsumerLog::new(10, 1, false);
    assert!(c.check(0, 0, &body(&pat, hdr(0, 0), 40), &pat, 0).is_none());
    let r = finish(&[producer(0, 0)], &[c], 0, Crashes::default());
    assert_eq!(r.foreign, 1);
    assert!(r.passed);
}

#[test]
fn bitset() {
    let mut a = Bitset::default();
    assert!(!a.set(130));
    assert!(a.set(130));
    assert!(a.get(130) && !a.get(129));
    let mut b = Bitset::default();
    b.set(130);
    b.set(1);
    assert_eq!(a.union_overlap(&b), 1);
    assert_eq!(a.count(), 2);
    assert_eq!(a.iter_ones().collect::<Vec<_>>(), vec![1, 130]);
}

#[test]
fn broken_gets_excuse_that_many_losses() {
    let p = producer(0, 3);
    let c = ConsumerLog::new(1, 1, false);
    let one = Crashes {
        reconnects: 1,
        gets_in_doubt: 2,
    };
    let r = finish(std::slice::from_ref(&p), std::slice::from_ref(&c), 0, one);
    assert_eq!(r.lost, 3);
    assert!(!r.passed, "3 lost, only 2 gets in doubt");
    let three = Crashes {
        reconnects: 1,
        gets_in_doubt: 3,
    };
    assert!(finish(&[p], &[c], 0, three).passed);
}

/// `--reliable`: at-least-once, redeliveries and the order they may break.
mod reliable {
    use super::*;

    /// A reliable log for one producer; `got` is (consumer, seq, arrival).
    fn log(pat: &Pattern, got: &[(u32, u64, u64)]) -> ConsumerLog {
        let mut c = ConsumerLog::new(9, 1, true);
        for &(consumer, seq, at) in got {
            assert!(c
                .check(consumer, 0, &body(pat, hdr(0, seq), 40), pat, at)
                .is_some());
        }
        c
    }

    fn crash() -> Crashes {
        Crashes {
            reconnects: 1,
            gets_in_doubt: 0,
        }
    }

    #[test]
    fn a_confirmed_message_delivered_again_is_a_duplicate() {
        let pat = Pattern::new(64, 1);
        // Across threads: consumer 1 confirmed seq 1, consumer 2 got it too.
        let a = log(&pat, &[(1, 0, 10), (1, 1, 20)]);
        let b = log(&pat, &[(2, 1, 30), (2, 2, 40)]);
        let r = finish(&[producer(0, 3)], &[a, b], 0, crash());
        assert!(!r.passed, "{r:?}");
        assert_eq!((r.duplicates, r.redelivered), (1, 0));
        assert!(r.problems[0].contains("confirmed 2"), "{:?}", r.problems);
        // Within one thread.
        let c = log(&pat, &[(1, 0, 10), (1, 1, 20), (1, 1, 30), (1, 2, 40)]);
        let r = finish(&[producer(0, 3)], &[c], 0, crash());
        assert!(!r.passed);
        assert_eq!((r.duplicates, r.redelivered), (1, 0));
    }

    #[test]
    fn a_message_open_at_a_disconnect_may_come_again_and_is_counted() {
        let pat = Pattern::new(64, 1);
        let mut a = log(&pat, &[(1, 0, 10), (1, 1, 20)]);
        // Seq 1's get went out at 15; the connection broke before its close.
        a.open_at_disconnect(1, 0, (0, 1), 15);
        let b = log(&pat, &[(2, 1, 30), (2, 2, 40)]);
        let r = finish(&[producer(0, 3)], &[a, b], 0, crash());
        assert!(r.passed, "{r:?}");
        assert_eq!(r.duplicates, 0);
        assert_eq!(r.redelivered, 1);
        assert_eq!(r.open_at_disconnect, 1);
        assert!(r.reliable);
        // The same within one thread, the consumer getting it back itself.
        let mut c = log(&pat, &[(1, 0, 10), (1, 1, 20)]);
        c.open_at_disconnect(1, 0, (0, 1), 15);
        c.check(1, 0, &body(&pat, hdr(0, 1), 40), &pat, 30);
        c.check(1, 0, &body(&pat, hdr(0, 2), 40), &pat, 40);
        let r = finish(&[producer(0, 3)], &[c], 0, crash());
        assert!(r.passed, "{r:?}");
        assert_eq!((r.duplicates, r.redelivered), (0, 1));
    }

    #[test]
    fn one_disconnect_excuses_one_redelivery_not_two() {
        let pat = Pattern::new(64, 1);
        // Open at a disconnect once, then delivered twice more and both
        // confirmed: the second confirmation is a duplicate.
        let mut a = log(&pat, &[(1, 0, 10)]);
        a.open_at_disconnect(1, 0, (0, 0), 5);
        let b = log(&pat, &[(2, 0, 30)]);
        let c = log(&pat, &[(3, 0, 50)]);
        let r = finish(&[producer(0, 1)], &[a, b, c], 0, crash());
        assert!(!r.passed);
        assert_eq!((r.duplicates, r.redelivered), (1, 1));
    }

    #[test]
    fn reliable_reads_excuse_no_loss() {
        let pat = Pattern::new(64, 1);
        let got = log(&pat, &[(1, 0, 10), (1, 1, 20)]);
        let mut a = log(&pat, &[]);
        a.open_in_doubt(0, 25);
        // Plain gets: the pop whose reply died excuses one loss.
        let mut plain = ConsumerLog::new(9, 1, false);
        plain.check(1, 0, &body(&pat, hdr(0, 0), 40), &pat, 10);
        plain.check(1, 0, &body(&pat, hdr(0, 1), 40), &pat, 20);
        let doubt = Crashes {
            reconnects: 1,
            gets_in_doubt: 1,
        };
        assert!(finish(&[producer(0, 3)], &[plain], 0, doubt).passed);
        // Reliable reads: the server puts an opened message back, so seq 2
        // must arrive, whatever was in flight.
        let r = finish(&[producer(0, 3)], &[got, a], 0, doubt);
        assert!(!r.passed, "{r:?}");
        assert_eq!(r.lost, 1);
        assert_eq!(r.opens_in_doubt, 1);
    }

    #[test]
    fn only_a_redelivered_message_may_arrive_out_of_order() {
        let pat = Pattern::new(64, 1);
        let mut a = log(&pat, &[(1, 0, 10)]);
        a.open_at_disconnect(1, 0, (0, 0), 5);
        // Consumer 2 got 1 and 2 while 0 was open elsewhere, then 0 came
        // back: excused. Then 4 before 3, neither redelivered: a failure,
        // the high-water mark having stayed at 2, not fallen to 0.
        let b = log(
            &pat,
            &[(2, 1, 20), (2, 2, 30), (2, 0, 40), (2, 4, 50), (2, 3, 60)],
        );
        let r = finish(&[producer(0, 5)], &[a, b], 0, crash());
        assert_eq!(r.redelivered, 1);
        assert_eq!(r.redelivered_out_of_order, 1);
        assert_eq!(r.out_of_order, 1, "{:?}", r.problems);
        assert!(r
            .problems
            .iter()
            .any(|p| p.contains("seq 3 received after seq 4")));
        assert!(!r.passed);
    }

    #[test]
    fn a_consumer_cannot_excuse_its_own_disorder() {
        let pat = Pattern::new(64, 1);
        // Consumer 2 got 1 then 0, then broke with 0 open: that record is
        // this very delivery, not an earlier one.
        let mut b = log(&pat, &[(2, 1, 20), (2, 0, 40)]);
        b.open_at_disconnect(2, 0, (0, 0), 35);
        let r = finish(&[producer(0, 2)], &[b], 0, crash());
        assert_eq!(r.out_of_order, 1);
        assert!(!r.passed);
        // A record sent after the late arrival excuses nothing either.
        let mut a = log(&pat, &[(1, 0, 10)]);
        a.open_at_disconnect(1, 0, (0, 0), 45);
        let b = log(&pat, &[(2, 1, 20), (2, 0, 40)]);
        let r = finish(&[producer(0, 2)], &[a, b], 0, crash());
        assert_eq!(r.out_of_order, 1);
    }

    #[test]
    fn each_open_in_doubt_excuses_one_late_delivery_after_it() {
        let pat = Pattern::new(64, 1);
        // A get on queue 0 was in flight at a disconnect (sent at 15): it may
        // have opened seq 0 unseen, which came back behind seq 1.
        let mut a = log(&pat, &[]);
        a.open_in_doubt(0, 15);
        let b = log(&pat, &[(2, 1, 20), (2, 0, 30), (2, 3, 40), (2, 2, 50)]);
        let r = finish(&[producer(0, 4)], &[a, b], 0, crash());
        assert_eq!(r.redelivered_out_of_order, 1);
        assert_eq!(r.out_of_order, 1, "the second late one has no excuse left");
        assert!(!r.passed);
        // An open in doubt sent after the late arrival explains nothing.
        let mut a = log(&pat, &[]);
        a.open_in_doubt(0, 35);
        let b = log(&pat, &[(2, 1, 20), (2, 0, 30)]);
        let r = finish(&[producer(0, 2)], &[a, b], 0, crash());
        assert_eq!(r.out_of_order, 1);
    }
}
