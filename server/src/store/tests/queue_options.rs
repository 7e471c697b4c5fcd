//! MemcacheQ's and Kestrel's per-message and per-queue options: expiry
//! (and `expire_to`, which moves an expired message to another queue),
//! per-queue limits from the configuration file and their `reload`, and
//! fan-out queues (`<parent>+<child>`).
//!
//! Guards against: an expired message handed out by a pop, an open or a
//! peek, or its deadline forgotten by a crash; a limit not enforced, or
//! one a reload (good or bad) leaves in the wrong state; a fan-out child
//! that misses a copy, gets one from before it existed, or loses it in a
//! crash; an `expire_to` move that loses the message when the target
//! refuses it.

use std::rc::Rc;
use std::time::Duration;

use super::*;
use crate::testutil::test_dir;

/// Expiry: an expired message is never handed out (pop, open or peek), is
/// dropped when it reaches the head and counted, and its deadline survives
/// a crash.
#[test]
fn expired_messages_are_never_handed_out() {
    let dir = test_dir();
    let cfg = config(dir.path());
    run(move || async move {
        let now = now_secs();
        let s = Store::open(cfg.clone()).await.unwrap();
        let put = |s: &Store, expires, b: &[u8]| s.set_expiring(b"q", 0, expires, b.to_vec());
        put(&s, now - 1, b"gone").await.unwrap();
        put(&s, 0, b"kept").await.unwrap();
        put(&s, now - 100, b"gone too").await.unwrap();
        put(&s, now + 2, b"soon gone").await.unwrap();
        put(&s, now + 3600, b"later").await.unwrap();
        let peek = s.take(b"q", Take::Peek).await.unwrap().unwrap();
        assert_eq!(peek.body, b"kept");
        assert_eq!(get(&s, "q").await.unwrap(), b"kept");
        let open = s.take(b"q", Take::Open(1)).await.unwrap().unwrap();
        assert_eq!(open.body, b"soon gone", "not expired yet");
        assert!(s.abort(b"q", 1));
        assert_eq!(s.queue_stats()[0].dequeued, 3, "two expired, one popped");
        s.crash().await;

        // After the deadline, and a crash: still never handed out.
        glommio::timer::sleep(Duration::from_millis(2100)).await;
        let s = Store::open(cfg.clone()).await.unwrap();
        assert_eq!(s.stats().items, 2);
        assert_eq!(get(&s, "q").await.unwrap(), b"later");
        assert_eq!(get(&s, "q").await, None);
        assert_eq!(s.queue_stats()[0].dequeued, 5);
        s.close().await.unwrap();
    });
}

/// Per-queue limits: a full queue refuses (`false`, NOT_STORED) or drops
/// its oldest; max_item_size and max_bytes refuse what could never fit;
/// max_age expires the head; `reload` changes them for queues that exist.
#[test]
fn queue_limits_refuse_discard_expire_and_reload() {
    let dir = test_dir();
    let file = dir.path().join("mcqd.conf");
    std::fs::write(
        &file,
        "[queue capped]\nmax_items = 2\nmax_item_size = 10\n\
         [queue ring*]\nmax_bytes = 12\ndiscard_old_when_full\n\
         [queue old]\nmax_age = 1s\n",
    )
    .unwrap();
    let limits = Arc::new(SharedLimits::open(Some(&file)).unwrap());
    let mut cfg = config(dir.path());
    cfg.limits = limits.clone();
    run(move || async move {
        let s = Store::open(cfg).await.unwrap();
        let set = |q: &'static str, b: &'static [u8]| s.set(q.as_bytes(), 0, b.to_vec());
        assert!(set("capped", b"1").await.unwrap());
        assert!(set("capped", b"2").await.unwrap());
        assert!(!set("capped", b"3").await.unwrap(), "full");
        assert!(!set("capped", b"way too long").await.unwrap());
        assert_eq!(get(&s, "capped").await.unwrap(), b"1");
        assert!(set("capped", b"3").await.unwrap(), "room again");
        for b in [&b"aaaa"[..], b"bbbb", b"cccc", b"dddd"] {
            assert!(s.set(b"ring-1", 0, b.to_vec()).await.unwrap());
        }
        assert!(
            !set("ring-1", b"thirteen byte").await.unwrap(),
            "can never fit"
        );
        let ring = &s
            .queue_stats()
            .into_iter()
            .find(|q| q.name == b"ring-1")
            .unwrap();
        assert_eq!((ring.items, ring.bytes, ring.discarded), (3, 12, 1));
        assert_eq!(get(&s, "ring-1").await.unwrap(), b"bbbb", "the oldest went");
        assert!(set("old", b"x").await.unwrap());
        glommio::timer::sleep(Duration::from_millis(2100)).await;
        assert_eq!(get(&s, "old").await, None, "older than max_age");
        // Reload: `capped` gets room, `old` no age limit.
        std::fs::write(&file, "[queue capped]\nmax_items = 5\n").unwrap();
        limits.reload().unwrap();
        for b in [&b"4"[..], b"5", b"6"] {
            assert!(s.set(b"capped", 0, b.to_vec()).await.unwrap());
        }
        assert!(!set("capped", b"7").await.unwrap());
        assert!(set("old", b"y").await.unwrap());
        glommio::timer::sleep(Duration::from_millis(1100)).await;
        assert_eq!(get(&s, "old").await.unwrap(), b"y");
        // A bad file leaves the limits in force.
        std::fs::write(&file, "[queue capped]\nmax_items = many\n").unwrap();
        assert!(limits.reload().unwrap_err().contains("line 2"));
        assert!(!set("capped", b"7").await.unwrap());
        s.close().await.unwrap();
    });
}

/// Fan-out: a queue named `<parent>+<child>` exists from its first get or
/// set, and gets a copy of every message set into the parent from then on;
/// the copies are in the parent's append, so they survive a crash with it.
#[test]
fn fan_out_queues_get_copies_from_the_moment_they_exist() {
    let dir = test_dir();
    let cfg = config(dir.path());
    run(move || async move {
        let s = Store::open(cfg.clone()).await.unwrap();
        set(&s, "p", b"before".to_vec()).await;
        assert_eq!(get(&s, "p+a").await, None, "created empty by its get");
        assert_eq!(get(&s, "plain").await, None);
        set(&s, "p", b"one".to_vec()).await;
        set(&s, "p+b", b"only b".to_vec()).await;
        set(&s, "p", b"two".to_vec()).await;
        set(&s, "px", b"not a child".to_vec()).await;
        let names: Vec<Vec<u8>> = counts(&s).into_iter().map(|c| c.0).collect();
        assert_eq!(
            names,
            [&b"p"[..], b"p+a", b"p+b", b"px"],
            "no queue `plain`"
        );
        // A consumer blocked on a child is woken by a set into the parent.
        assert_eq!(get(&s, "p+b").await.unwrap(), b"only b");
        assert_eq!(get(&s, "p+b").await.unwrap(), b"two");
        let waiter = glommio::spawn_local({
            let s = s.clone();
            // Bounded, so a waiter nobody wakes fails the test (no timing
            // is asserted: the set comes right after it waits).
            async move { s.get_wait(b"p+b", Duration::from_secs(60)).await }
        });
        while s.stats().get_waiters < 1 {
            glommio::timer::sleep(Duration::from_millis(1)).await;
        }
        set(&s, "p", b"wakes".to_vec()).await;
        let woken = waiter.await.unwrap();
        assert_eq!(woken.expect("woken by the parent's set").body, b"wakes");
        set(&s, "p+b", b"only b".to_vec()).await;
        set(&s, "p+b", b"two".to_vec()).await;
        assert_eq!(get(&s, "p").await.unwrap(), b"before");
        assert_eq!(get(&s, "p+a").await.unwrap(), b"one");
        s.crash().await;

        let s = Store::open(cfg.clone()).await.unwrap();
        let drain = |q: &'static str| {
            let s = s.clone();
            async move {
                let mut got = Vec::new();
                while let Some(b) = get(&s, q).await {
                    got.push(String::from_utf8(b).unwrap());
                }
                got
            }
        };
        assert_eq!(drain("p").await, ["one", "two", "wakes"]);
        assert_eq!(drain("p+a").await, ["two", "wakes"]);
        assert_eq!(drain("p+b").await, ["only b", "two"]);
        assert_eq!(drain("px").await, ["not a child"]);
        s.close().await.unwrap();
    });
}

/// `expire_to`: an expired message moves to its target queue (through the
/// forwarder the shard layer gives) and is consumed in the source only
/// once the target has it; a failed move leaves it in the source.
#[test]
fn expired_messages_move_to_expire_to() {
    let dir = test_dir();
    let limits = Limits::parse("[queue src]\nexpire_to = dead\n").unwrap();
    let mut cfg = config(dir.path());
    cfg.limits = Arc::new(SharedLimits::fixed(limits));
    run(move || async move {
        let s = Store::open(cfg).await.unwrap();
        let fail = Rc::new(std::cell::Cell::new(true));
        let (target, failing) = (s.clone(), fail.clone());
        s.set_forward(Rc::new(move |q, flags, body| {
            if failing.get() {
                return Box::pin(async { Err(LogError::Closed) });
            }
            Box::pin(target.set(&q, flags, body))
        }));
        let past = now_secs() - 1;
        s.set_expiring(b"src", 5, past, b"late".to_vec())
            .await
            .unwrap();
        set(&s, "src", b"fresh".to_vec()).await;
        assert_eq!(get(&s, "src").await.unwrap(), b"fresh");
        // The move failed: back in the source (expired, so never handed out).
        while s.stats().open_transactions > 0 {
            glommio::timer::sleep(Duration::from_millis(1)).await;
        }
        assert_eq!(s.stats().items, 1);
        assert_eq!(get(&s, "dead").await, None);
        fail.set(false);
        assert_eq!(get(&s, "src").await, None);
        while s.stats().open_transactions > 0 || get_stat(&s, "dead").is_none() {
            glommio::timer::sleep(Duration::from_millis(1)).await;
        }
        let moved = s.get(b"dead").await.unwrap().unwrap();
        assert_eq!((moved.flags, &moved.body[..]), (5, &b"late"[..]));
        let src = s
            .queue_stats()
            .into_iter()
            .find(|q| q.name == b"src")
            .unwrap();
        assert_eq!((src.enqueued, src.dequeued, src.items), (2, 2, 0));
        s.close().await.unwrap();
    });
}

fn get_stat(s: &Store, q: &str) -> Option<QueueStat> {
    s.queue_stats().into_iter().find(|x| x.name == q.as_bytes())
}
