//! What a consumer gets back: FIFO order and the `stats queue` counters
//! through a clean restart, gets that see sets issued before them, reliable
//! reads (open, confirm, put back) across crashes and segment turnover,
//! blocking gets in arrival order, `flush`, and a closed or failed shard
//! that answers with an error instead of hanging.
//!
//! Guards against: a message handed out twice or never, out of order, or
//! back after its confirm; a confirm lost with the segment that held its
//! record; counters that drift from the messages; a waiter woken out of
//! turn or left behind; a request that never completes after shutdown.

use std::time::Duration;

use super::*;
use crate::testutil::test_dir;

#[test]
fn fifo_counters_and_clean_restart() {
    let dir = test_dir();
    let cfg = config(dir.path());
    run(move || async move {
        let s = Store::open(cfg.clone()).await.unwrap();
        set(&s, "q4", b"hello".to_vec()).await;
        set(&s, "q4", b"world".to_vec()).await;
        assert_eq!(counts(&s), [(b"q4".to_vec(), 2, 0)]);
        let stat = &s.queue_stats()[0];
        assert_eq!((stat.items, stat.bytes, stat.open_transactions), (2, 10, 0));
        assert!(stat.age_ms <= 60_000, "{stat:?}");
        let m = s.get(b"q4").await.unwrap().unwrap();
        assert_eq!((m.flags, m.seq, &m.body[..]), (7, 0, &b"hello"[..]));
        assert_eq!(s.queue_stats()[0].dequeued, 1);
        s.close().await.unwrap();
        drop(s);

        let s = Store::open(cfg.clone()).await.unwrap();
        assert_eq!(counts(&s), [(b"q4".to_vec(), 2, 1)]);
        let stat = &s.queue_stats()[0];
        assert_eq!((stat.items, stat.bytes), (1, 5), "{stat:?}");
        assert!(stat.age_ms <= 60_000, "recovered with its time: {stat:?}");
        let m = s.get(b"q4").await.unwrap().unwrap();
        assert_eq!((m.seq, &m.body[..]), (1, &b"world"[..]));
        assert_eq!(get(&s, "q4").await, None);
        assert_eq!(get(&s, "nope").await, None);
        assert!(s.delete(b"q4").await.unwrap());
        assert!(!s.delete(b"q4").await.unwrap());
        assert_eq!(s.stats().queues, 0);
        s.close().await.unwrap();
        drop(s);

        let s = Store::open(cfg).await.unwrap();
        assert!(s.queue_stats().is_empty());
        set(&s, "q4", b"again".to_vec()).await;
        assert_eq!(
            s.queue_stats()[0].enqueued,
            1,
            "a deleted queue starts over"
        );
        s.close().await.unwrap();
    });
}

#[test]
fn get_sees_set_synchronously_and_pops_in_order() {
    let dir = test_dir();
    let cfg = config(dir.path());
    run(move || async move {
        let s = Store::open(cfg).await.unwrap();
        let f1 = s.set(b"q", 1, b"a".to_vec());
        let f2 = s.set(b"q", 2, b"b".to_vec());
        let g1 = s.get(b"q");
        let g2 = s.get(b"q");
        let g3 = s.get(b"q");
        f1.await.unwrap();
        f2.await.unwrap();
        assert_eq!(g1.await.unwrap().unwrap().body, b"a");
        assert_eq!(g2.await.unwrap().unwrap().flags, 2);
        assert_eq!(g3.await.unwrap(), None);
        s.close().await.unwrap();
    });
}

#[test]
fn requests_after_close_fail_instead_of_hanging() {
    let dir = test_dir();
    let cfg = config(dir.path());
    run(move || async move {
        let s = Store::open(cfg).await.unwrap();
        set(&s, "q", b"a".to_vec()).await;
        s.close().await.unwrap();
        assert!(matches!(
            s.set(b"q", 0, b"b".to_vec()).await,
            Err(LogError::Closed)
        ));
        assert!(matches!(s.get(b"q").await, Err(LogError::Closed)));
        assert!(matches!(s.delete(b"q").await, Err(LogError::Closed)));
    });
}

#[test]
fn failed_shard_refuses_writes() {
    let dir = test_dir();
    let cfg = config(dir.path());
    run(move || async move {
        let s = Store::open(cfg).await.unwrap();
        set(&s, "q", b"a".to_vec()).await;
        s.log().borrow_mut().fail(crate::log::error::IoFailure::new(
            "fdatasync",
            &std::io::Error::from_raw_os_error(libc::EIO),
        ));
        assert!(matches!(
            s.set(b"q", 0, b"b".to_vec()).await,
            Err(LogError::Failed(_))
        ));
        assert!(matches!(s.get(b"q").await, Err(LogError::Failed(_))));
        assert!(matches!(s.delete(b"q").await, Err(LogError::Failed(_))));
    });
}

/// Blocking gets: woken by a set in arrival order; a dropped waiter leaves
/// its line and passes the message on; a timeout and shutdown answer `None`.
#[test]
fn blocking_gets_wait_in_line() {
    let dir = test_dir();
    let cfg = config(dir.path());
    run(move || async move {
        let s = Store::open(cfg).await.unwrap();
        let long = Duration::from_secs(600);
        assert_eq!(
            s.get_wait(b"q", Duration::from_millis(20)).await.unwrap(),
            None
        );
        let first = glommio::spawn_local({
            let s = s.clone();
            async move {
                s.get_wait(b"q", long)
                    .await
                    .unwrap()
                    .map(|m| m.body.into_vec())
            }
        });
        // Let it join the line before the next one comes.
        while s.stats().get_waiters < 1 {
            glommio::timer::sleep(Duration::from_millis(1)).await;
        }
        let gone = s.get_wait(b"q", long);
        let mut gone = Box::pin(gone);
        assert!(futures_lite::future::poll_once(&mut gone).await.is_none());
        let second = glommio::spawn_local({
            let s = s.clone();
            async move {
                s.get_wait(b"q", long)
                    .await
                    .unwrap()
                    .map(|m| m.body.into_vec())
            }
        });
        while s.stats().get_waiters < 3 {
            glommio::timer::sleep(Duration::from_millis(1)).await;
        }
        drop(gone);
        assert_eq!(s.stats().get_waiters, 2);
        set(&s, "q", b"one".to_vec()).await;
        set(&s, "q", b"two".to_vec()).await;
        assert_eq!(first.await, Some(b"one".to_vec()));
        assert_eq!(second.await, Some(b"two".to_vec()));
        let ended = glommio::spawn_local({
            let s = s.clone();
            async move { s.get_wait(b"q", long).await.unwrap() }
        });
        while s.stats().get_waiters < 1 {
            glommio::timer::sleep(Duration::from_millis(1)).await;
        }
        s.end_waits();
        assert!(ended.await.is_none());
        assert_eq!(s.stats().get_waiters, 0);
        s.close().await.unwrap();
    });
}

/// Reliable reads: an open message is handed out once and comes back
/// after a crash until confirmed; a confirm out of order (a lower message
/// still open) survives crashes and the deletion of the segment that
/// holds its record (later checkpoints restate it), and the counters
/// agree throughout.
#[test]
fn reliable_reads_survive_crashes_and_segment_turnover() {
    let dir = test_dir();
    let cfg = config(dir.path());
    run(move || async move {
        let (held, other) = (1, 2);
        let s = Store::open(cfg.clone()).await.unwrap();
        for i in 0..3 {
            set(&s, "q", body(0, i, 20)).await;
        }
        let open = |s: &Store, r| s.take(b"q", Take::Open(r));
        let m0 = open(&s, held).await.unwrap().unwrap();
        let m1 = open(&s, other).await.unwrap().unwrap();
        assert_eq!((m0.seq, m1.seq), (0, 1));
        assert!(
            s.confirm(b"q", other).await.unwrap(),
            "1 confirmed out of order"
        );
        assert!(!s.confirm(b"q", other).await.unwrap(), "nothing left open");
        assert_eq!(s.queue_stats()[0].dequeued, 1);
        let peeked = s.take(b"q", Take::Peek).await.unwrap().unwrap();
        assert_eq!(peeked.seq, 2);
        assert_eq!(s.stats().items, 1, "a peek leaves it queued");
        s.crash().await;

        // Message 0 was open: it is back; 1 was confirmed: it never is.
        let first_segment = seg_files(&cfg.dir, "log")[0].clone();
        let s = Store::open(cfg.clone()).await.unwrap();
        assert_eq!(s.queue_stats()[0].dequeued, 1);
        assert_eq!(s.stats().items, 2);
        let again = open(&s, held).await.unwrap().unwrap();
        assert_eq!((again.seq, &again.body), (0, &m0.body));
        // Many segments go by behind the open message: the confirm of 1
        // must outlive the segment its record was in.
        for i in 3..1500 {
            set(&s, "q", body(0, i, 100)).await;
            let m = open(&s, other).await.unwrap().unwrap();
            assert!(m.seq >= 2);
            assert!(s.confirm(b"q", other).await.unwrap());
        }
        s.settle().await;
        assert!(
            !first_segment.exists(),
            "the segment with the first confirm's record is reclaimed"
        );
        assert_eq!(s.queue_stats()[0].dequeued, 1498);
        s.crash().await;

        let s = Store::open(cfg.clone()).await.unwrap();
        assert_eq!(s.queue_stats()[0].dequeued, 1498);
        assert_eq!(s.stats().items, 2, "message 0 (open at the crash) and 1499");
        // Put back by its reader: at the head, and then consumed in order.
        let m = open(&s, held).await.unwrap().unwrap();
        assert_eq!(m.seq, 0);
        assert!(s.abort(b"q", held));
        assert_eq!(s.stats().items, 2);
        assert_eq!(get(&s, "q").await.unwrap(), m0.body);
        assert_eq!(get(&s, "q").await.unwrap(), body(0, 1499, 100));
        assert_eq!(get(&s, "q").await, None);
        assert_eq!(s.queue_stats()[0].dequeued, 1500);
        s.close().await.unwrap();

        let s = Store::open(cfg).await.unwrap();
        assert_eq!(
            (
                s.stats().items,
                s.queue_stats()[0].dequeued,
                s.queue_stats()[0].enqueued
            ),
            (0, 1500, 1500)
        );
        s.close().await.unwrap();
    });
}

/// `flush` drops the queued messages but not the open ones, whose
/// confirms and put-backs still work; the counters stay consistent across
/// a crash.
#[test]
fn flush_keeps_the_queue_and_its_open_messages() {
    let dir = test_dir();
    let cfg = config(dir.path());
    run(move || async move {
        let s = Store::open(cfg.clone()).await.unwrap();
        for i in 0..10 {
            set(&s, "q", body(0, i, 30)).await;
        }
        let open = |s: &Store, r| s.take(b"q", Take::Open(r));
        assert_eq!(open(&s, 1).await.unwrap().unwrap().seq, 0);
        assert_eq!(open(&s, 2).await.unwrap().unwrap().seq, 1);
        assert_eq!(open(&s, 3).await.unwrap().unwrap().seq, 2);
        assert!(
            s.abort(b"q", 1),
            "0 is queued again, below the open 1 and 2"
        );
        assert!(s.flush(b"q").await.unwrap());
        assert!(!s.flush(b"nothing").await.unwrap());
        assert_eq!(s.stats().items, 0);
        assert_eq!(get(&s, "q").await, None);
        assert_eq!(s.queue_stats()[0].dequeued, 8, "flushed count as dequeued");
        assert!(s.confirm(b"q", 2).await.unwrap());
        s.crash().await;

        let s = Store::open(cfg.clone()).await.unwrap();
        assert_eq!(
            (s.queue_stats()[0].enqueued, s.queue_stats()[0].dequeued),
            (10, 9)
        );
        // Message 2 was open at the crash: it is all that is left.
        let m = get(&s, "q").await.unwrap();
        assert_eq!(m, body(0, 2, 30));
        set(&s, "q", body(0, 10, 30)).await;
        s.flush_all().await.unwrap();
        assert_eq!(get(&s, "q").await, None);
        assert_eq!(
            (s.queue_stats()[0].enqueued, s.queue_stats()[0].dequeued),
            (11, 11)
        );
        s.close().await.unwrap();
    });
}
