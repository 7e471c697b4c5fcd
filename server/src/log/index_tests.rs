//! Index files: round trips, and what validation refuses.

use super::*;

fn sample() -> SegmentIndex {
    let mut b = IndexBuilder::new(100);
    let mut buf = vec![];
    let mut off = 0u64;
    let mut put = |b: &mut IndexBuilder, h: Header, body: &[u8]| {
        buf.clear();
        record::encode_into(&mut buf, &h, body);
        b.record(&h, body, off);
        off += buf.len() as u64;
    };
    let h = |kind, queue, lsn, seq, len| Header {
        kind,
        queue,
        lsn,
        seq,
        time: 0,
        flags: 0,
        expires: 0,
        len,
    };
    let cb = record::created_body(0, 0, b"alpha");
    put(&mut b, h(Kind::Created, 1, 100, 0, cb.len() as u32), &cb);
    put(&mut b, h(Kind::Checkpoint, 0, 101, 2, 0), &[]);
    put(&mut b, h(Kind::Enqueued, 1, 102, 0, 3), b"one");
    put(&mut b, h(Kind::Enqueued, 1, 103, 1, 3), b"two");
    put(&mut b, h(Kind::Consumed, 1, 104, 1, 0), &[]);
    let end = record::confirmed_body(4);
    put(&mut b, h(Kind::Confirmed, 1, 105, 3, 8), &end);
    b.finish()
}

#[test]
fn builder_summarises() {
    let idx = sample();
    assert!(idx.checkpoint);
    assert_eq!(idx.next_queue_id, 2);
    assert_eq!(idx.last_lsn, 105);
    let q = &idx.queues[0];
    assert_eq!(
        (q.id, q.created, &q.name[..], q.head, q.tail),
        (1, true, &b"alpha"[..], 1, 2)
    );
    assert_eq!(q.msgs.len(), 2);
    assert_eq!(q.msgs[0].len, 51);
    assert_eq!(q.confirmed, [SeqRange { start: 3, end: 4 }]);
}

#[test]
fn encode_validate_and_reject_every_flipped_byte() {
    let idx = sample();
    let bytes = encode(&idx);
    let loaded = LoadedIndex::from_bytes(&bytes, 100).unwrap();
    let a = loaded.get();
    assert_eq!(a.queues[0].msgs[1].seq.to_native(), 1);
    assert_eq!(a.queues[0].name.as_slice(), b"alpha");
    assert_eq!(a.queues[0].confirmed[0].end.to_native(), 4);
    assert!(LoadedIndex::from_bytes(&bytes, 101).is_err());
    for i in 0..bytes.len() {
        let mut c = bytes.clone();
        c[i] ^= 0x10;
        assert!(LoadedIndex::from_bytes(&c, 100).is_err(), "flip at {i}");
    }
    for cut in 0..bytes.len() {
        assert!(LoadedIndex::from_bytes(&bytes[..cut], 100).is_err());
    }
}
