//! Index files: round trips, and what validation refuses.

use super::*;

/// A record's header, at time 0, without flags or expiry.
fn header(kind: Kind, queue: u32, lsn: u64, seq: u64, len: u32) -> Header {
    Header {
        kind,
        queue,
        lsn,
        seq,
        time: 0,
        flags: 0,
        expires: 0,
        len,
    }
}

fn sample() -> SegmentIndex {
    sample_builder().finish()
}

fn sample_builder() -> IndexBuilder {
    let mut b = IndexBuilder::new(100);
    let mut buf = vec![];
    let mut off = 0u64;
    let mut put = |b: &mut IndexBuilder, h: Header, body: &[u8]| {
        buf.clear();
        record::encode_into(&mut buf, &h, body);
        b.record(&h, body, off);
        off += buf.len() as u64;
    };
    let h = header;
    let cb = record::created_body(0, 0, b"alpha");
    put(&mut b, h(Kind::Created, 1, 100, 0, cb.len() as u32), &cb);
    put(&mut b, h(Kind::Checkpoint, 0, 101, 2, 0), &[]);
    put(&mut b, h(Kind::Enqueued, 1, 102, 0, 3), b"one");
    put(&mut b, h(Kind::Enqueued, 1, 103, 1, 3), b"two");
    put(&mut b, h(Kind::Consumed, 1, 104, 1, 0), &[]);
    let end = record::confirmed_body(4);
    put(&mut b, h(Kind::Confirmed, 1, 105, 3, 8), &end);
    b
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

/// An index of queue 1 with messages 0..300 and 400..700 (two spans), of
/// varying lengths, and queue 2 with one message.
fn spanned() -> SegmentIndex {
    spanned_builder().finish()
}

fn spanned_builder() -> IndexBuilder {
    let mut b = IndexBuilder::new(7);
    let mut off = 0u64;
    let mut put = |b: &mut IndexBuilder, queue: u32, seq: u64, len: u32| {
        let h = Header {
            kind: Kind::Enqueued,
            queue,
            lsn: 7 + off / 64,
            seq,
            time: seq * 1_000_000,
            flags: 0,
            expires: 0,
            len,
        };
        b.record(&h, &vec![b'x'; len as usize], off);
        off += 64 + u64::from(len);
    };
    for seq in (0..300).chain(400..700) {
        put(&mut b, 1, seq, (seq % 7) as u32 * 10);
    }
    put(&mut b, 2, 5, 3);
    b
}

#[test]
fn the_summary_names_spans_and_their_pages() {
    let idx = spanned();
    let encoded = encode_with_summary(idx.clone());
    let bytes = &encoded.to_vec()[..];
    let loaded = LoadedSummary::from_bytes(bytes, 7).unwrap();
    let s = loaded.get();
    assert_eq!(s.queues.len(), 2);
    let spans = &s.queues[0].spans;
    assert_eq!(spans.len(), 2);
    assert_eq!(
        (spans[0].lo.to_native(), spans[0].count.to_native()),
        (0, 300)
    );
    assert_eq!(
        (spans[1].lo.to_native(), spans[1].first.to_native()),
        (400, 300)
    );
    assert_eq!(spans[1].pages.len(), 2, "300 entries: two pages");
    let bytes_of = |r: std::ops::Range<usize>| -> u64 {
        idx.queues[0].msgs[r].iter().map(|m| u64::from(m.len)).sum()
    };
    assert_eq!(spans[1].bytes.to_native(), bytes_of(300..600));
    assert_eq!(spans[0].time.to_native(), 0);
    let in_place = &encoded.summary().queues[0].spans[1];
    assert_eq!(in_place.at.to_native(), spans[1].at.to_native());
    // The whole file validates too, and the summary is what a restart reads.
    let whole = LoadedIndex::from_bytes(bytes, 7).unwrap();
    assert!(whole.summary_len() < bytes.len() as u64 / 4);
    assert!(LoadedSummary::from_bytes(bytes, 8).is_err());
    summary_is_what_a_native_one_serialises_to(&idx, 7);
}

/// Archived a queue at a time from the main archive, the summary of `idx`
/// is byte for byte what a native summary of the same index serialises to.
fn summary_is_what_a_native_one_serialises_to(idx: &SegmentIndex, first_lsn: u64) {
    let encoded = encode_with_summary(idx.clone());
    let bytes = &encoded.to_vec()[..];
    let loaded = LoadedSummary::from_bytes(bytes, first_lsn).unwrap();
    let native: SegmentSummary =
        rkyv::deserialize::<SegmentSummary, rkyv::rancor::Error>(loaded.get()).unwrap();
    assert_eq!(
        (native.first_lsn, native.last_lsn, native.data_len),
        (idx.first_lsn, idx.last_lsn, idx.data_len)
    );
    assert_eq!(
        (native.checkpoint, &native.live),
        (idx.checkpoint, &idx.live)
    );
    assert_eq!(
        (
            native.next_queue_id,
            native.max_queue_id,
            native.corrupt_records
        ),
        (idx.next_queue_id, idx.max_queue_id, idx.corrupt_records)
    );
    assert_eq!(native.queues.len(), idx.queues.len());
    for (n, q) in native.queues.iter().zip(&idx.queues) {
        assert_eq!(
            (n.id, n.created, &n.name, n.deleted, n.head, n.tail),
            (q.id, q.created, &q.name, q.deleted, q.head, q.tail)
        );
        assert_eq!(n.confirmed, q.confirmed);
        let counted: u32 = n.spans.iter().map(|s| s.count).sum();
        assert_eq!(counted as usize, q.msgs.len());
    }
    let alone = rkyv::to_bytes::<rkyv::rancor::Error>(&native).unwrap();
    let end = bytes.len() - TRAILER_LEN;
    assert_eq!(&alone[..], &bytes[end - alone.len()..end]);
}

#[test]
fn names_confirmations_and_checkpoints_summarise_as_a_native_summary_does() {
    summary_is_what_a_native_one_serialises_to(&sample(), 100);
}

#[test]
fn a_window_is_read_in_place_and_a_damaged_page_is_refused() {
    use crate::disk::sim::SimDisk;
    use crate::disk::Disk;
    let idx = spanned();
    let bytes = encode(&idx);
    crate::testutil::run(move || async move {
        let disk = SimDisk::new();
        let path = std::path::Path::new("/i.idx");
        write_file(&disk, path, &[&bytes]).await.unwrap();
        let summary = LoadedSummary::from_bytes(&bytes, 7).unwrap();
        let pages = EntryPages::of(&summary.get().queues[0].spans[1]);
        let file = disk.open(path).await.unwrap();
        // Across the page boundary (entry 170).
        let got = read_entries(&*file, &pages, 160, 20)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(got[..], idx.queues[0].msgs[460..480]);
        let last = read_entries(&*file, &pages, 290, 10)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(last[..], idx.queues[0].msgs[590..600]);
        assert!(read_entries(&*file, &pages, 295, 10)
            .await
            .unwrap()
            .is_err());
        // One flipped byte in the second page.
        let mut bad = bytes.clone();
        bad[pages.at() as usize + 200 * ENTRY_LEN] ^= 1;
        let bad_path = std::path::Path::new("/bad.idx");
        write_file(&disk, bad_path, &[&bad]).await.unwrap();
        let file = disk.open(bad_path).await.unwrap();
        assert!(read_entries(&*file, &pages, 0, 10).await.unwrap().is_ok());
        assert!(read_entries(&*file, &pages, 165, 10)
            .await
            .unwrap()
            .is_err());
    });
}

/// Queues fed interleaved and out of order: 9 with messages before and
/// after its `Deleted` record, 4 with only a `Region` record, 6 with
/// confirmations on both sides of its deletion, 2 with messages alone.
fn interleaved_builder() -> IndexBuilder {
    let mut b = IndexBuilder::new(50);
    let mut off = 0u64;
    let mut lsn = 50;
    let mut put = |b: &mut IndexBuilder, kind, queue, seq: u64, body: &[u8]| {
        let h = header(kind, queue, lsn, seq, body.len() as u32);
        b.record(&h, body, off);
        lsn += 1;
        off += h.record_len() as u64;
    };
    let created = record::created_body(3, 3, b"nine");
    put(&mut b, Kind::Created, 9, 0, &created);
    put(&mut b, Kind::Enqueued, 9, 4, b"a");
    put(&mut b, Kind::Enqueued, 2, 1, b"b");
    put(&mut b, Kind::Enqueued, 9, 3, b"c");
    put(&mut b, Kind::Confirmed, 6, 1, &record::confirmed_body(2));
    put(&mut b, Kind::Region, 4, 7, &[]);
    put(&mut b, Kind::Deleted, 9, 0, &[]);
    put(&mut b, Kind::Deleted, 6, 0, &[]);
    put(&mut b, Kind::Enqueued, 2, 0, b"d");
    put(&mut b, Kind::Enqueued, 9, 5, b"e");
    put(&mut b, Kind::Confirmed, 6, 4, &record::confirmed_body(5));
    put(&mut b, Kind::Consumed, 2, 1, &[]);
    b
}

#[test]
fn a_deletion_drops_what_came_before_it_only() {
    let idx = interleaved_builder().finish();
    let ids: Vec<u32> = idx.queues.iter().map(|q| q.id).collect();
    assert_eq!(ids, [2, 4, 6, 9]);
    let [two, four, six, nine] = &idx.queues[..] else {
        unreachable!()
    };
    let seqs = |q: &QueueIndex| q.msgs.iter().map(|m| m.seq).collect::<Vec<_>>();
    assert_eq!((seqs(two), two.head, two.tail), (vec![0, 1], 1, 2));
    assert_eq!((four.msgs.len(), four.tail), (0, 8));
    assert!(six.deleted);
    assert_eq!(six.confirmed, [SeqRange { start: 4, end: 5 }]);
    assert!(nine.created && nine.deleted);
    assert_eq!(
        (&nine.name[..], seqs(nine), nine.tail),
        (&b"nine"[..], vec![5], 6)
    );
}

#[test]
fn a_flat_index_archives_as_its_native_one() {
    for b in [sample_builder(), spanned_builder(), interleaved_builder()] {
        let flat = b.sorted();
        let native = flat.to_native();
        assert_eq!(
            encode_with_summary(flat).to_vec(),
            encode_with_summary(native).to_vec()
        );
    }
    let empty = IndexBuilder::new(3).sorted();
    let native = empty.to_native();
    assert_eq!(
        encode_with_summary(empty).to_vec(),
        encode_with_summary(native).to_vec()
    );
}

#[test]
fn a_file_is_written_whole_from_its_parts() {
    use crate::disk::sim::SimDisk;
    use crate::disk::Disk;
    let part = |n: usize, b: u8| (0..n).map(|i| b ^ (i % 251) as u8).collect::<Vec<u8>>();
    let cases = [
        vec![
            part(3, 1),
            part(WRITE_PIECE + 5, 2),
            part(0, 3),
            part(100, 4),
        ],
        vec![part(WRITE_PIECE, 5), part(BLOCK as usize, 6)],
        vec![part(2 * WRITE_PIECE + 4095, 7)],
        vec![part(0, 8), part(24, 9)],
    ];
    crate::testutil::run(move || async move {
        let disk = SimDisk::new();
        for (i, parts) in cases.iter().enumerate() {
            let path = std::path::PathBuf::from(format!("/{i}.idx"));
            let slices: Vec<&[u8]> = parts.iter().map(|p| &p[..]).collect();
            write_file(&disk, &path, &slices).await.unwrap();
            let whole = parts.concat();
            let file = disk.open(&path).await.unwrap();
            assert_eq!(file.size().await.unwrap(), whole.len() as u64, "case {i}");
            let got = file.read_at(0, whole.len()).await.unwrap();
            assert_eq!(&got[..whole.len()], &whole[..], "case {i}");
        }
    });
}
