//! The read-ahead cache on the simulated disk: records come back byte for
//! byte wherever they lie (across a chunk boundary too), concurrent misses
//! share one read, the budget holds, a deleted segment's chunks never
//! serve again, bytes not yet written when a chunk was read are read
//! again, and a damaged record still fails its checksum.

use std::path::Path;
use std::rc::Rc;

use super::*;
use crate::disk::sim::{Op, SimDisk};
use crate::disk::Disk;
use crate::log::record::{self, HEADER_LEN};
use crate::testutil::run;

/// A segment image of records of `body` bytes each (queue 1, seq = lsn)
/// up to `size` bytes, and where each record is.
fn image(size: usize, body: usize) -> (Vec<u8>, Vec<(u64, usize)>) {
    let mut buf = Vec::new();
    let mut at = Vec::new();
    let mut lsn = 1;
    while buf.len() + record::record_len(body) <= size {
        let mut h = record::message_header(lsn, body);
        h.seq = lsn;
        let off = buf.len();
        let fill: Vec<u8> = (0..body).map(|i| (lsn as usize * 31 + i) as u8).collect();
        record::encode_into(&mut buf, &h, &fill);
        at.push((off as u64, HEADER_LEN + body));
        lsn += 1;
    }
    buf.resize(size, 0);
    (buf, at)
}

/// A file on `disk` holding `data` (a multiple of a block).
/// A segment `a.log` of `size` bytes of 100-byte records, wholly
/// readable, and where its records are.
async fn a_segment(disk: &SimDisk, size: usize) -> (Source, Vec<(u64, usize)>) {
    let (data, at) = image(size, 100);
    let src = Source {
        file: file_with(disk, "a.log", &data).await,
        readable: data.len() as u64,
    };
    (src, at)
}

async fn file_with(disk: &SimDisk, name: &str, data: &[u8]) -> Rc<dyn DiskFile> {
    let dir = Path::new("/d");
    disk.create_dir_all(dir).await.unwrap();
    let f = disk.create(&dir.join(name)).await.unwrap();
    assert_eq!(f.write_at(0, data).await.unwrap(), data.len());
    f
}

fn check(bytes: &[u8], lsn_expected: u64) {
    let (h, _) = record::decode(bytes).expect("the record verifies");
    assert_eq!(h.lsn, lsn_expected);
}

#[test]
fn records_come_back_whole_across_chunk_boundaries() {
    run(|| async {
        let disk = SimDisk::new();
        let (data, at) = image(3 * CHUNK as usize, 1000);
        let src = Source {
            file: file_with(&disk, "a.log", &data).await,
            readable: data.len() as u64,
        };
        let straddling = at
            .iter()
            .filter(|(off, len)| off / CHUNK != (off + *len as u64 - 1) / CHUNK)
            .count();
        assert!(straddling >= 2, "the image has records across boundaries");
        let ra = ReadAhead::new(DEFAULT_BUDGET);
        for (i, &(off, len)) in at.iter().enumerate() {
            let bytes = ra.read(7, off, len, &src).await.unwrap();
            assert_eq!(bytes, data[off as usize..off as usize + len]);
            check(&bytes, i as u64 + 1);
        }
        let st = ra.stats();
        assert_eq!(st.reads, 3, "one read per chunk");
        assert_eq!(st.misses, 3);
        assert_eq!(st.hits as usize, at.len() - 3);
        assert_eq!(disk.ops_of(Op::Read), 3);
    });
}

#[test]
fn concurrent_misses_share_one_read() {
    run(|| async {
        let disk = SimDisk::new();
        let (src, at) = a_segment(&disk, CHUNK as usize).await;
        // Reads complete only after trips through the executor, so every
        // get below misses while the first read is in flight.
        disk.set_delays(1, 8);
        let ra = ReadAhead::new(DEFAULT_BUDGET);
        let gets: Vec<_> = at[..50]
            .iter()
            .map(|&(off, len)| {
                let (ra, src) = (ra.clone(), src.clone());
                glommio::spawn_local(async move { ra.read(1, off, len, &src).await })
            })
            .collect();
        for (i, g) in gets.into_iter().enumerate() {
            check(&g.await.unwrap(), i as u64 + 1);
        }
        let st = ra.stats();
        assert_eq!(st.reads, 1);
        assert_eq!(disk.ops_of(Op::Read), 1);
        assert_eq!(st.misses, 50);
        assert_eq!(st.shared, 49);
    });
}

#[test]
fn the_budget_holds_and_the_least_recently_used_chunk_goes() {
    run(|| async {
        let disk = SimDisk::new();
        let chunks = 12;
        let (data, at) = image(chunks * CHUNK as usize, 4000);
        let src = Source {
            file: file_with(&disk, "a.log", &data).await,
            readable: data.len() as u64,
        };
        // The smallest budget there is: room for two chunks beside the
        // reads in flight.
        let ra = ReadAhead::new(0);
        let budget = (READS_IN_FLIGHT + 2) * CHUNK as usize;
        let first = at[0];
        for &(off, len) in &at {
            let bytes = ra.read(3, off, len, &src).await.unwrap();
            assert_eq!(bytes, data[off as usize..off as usize + len]);
            assert!(ra.stats().bytes as usize <= budget);
            // Chunk 0 stays the most recently used one.
            assert!(ra.cached(3, first.0, first.1).is_some());
        }
        let st = ra.stats();
        assert_eq!(st.reads, chunks as u64, "no chunk read twice");
        assert!(st.evicted >= chunks as u64 - 4);
    });
}

#[test]
fn a_deleted_segment_is_never_served_again() {
    run(|| async {
        let disk = SimDisk::new();
        let (old, at) = image(2 * CHUNK as usize, 100);
        let src = Source {
            file: file_with(&disk, "old.log", &old).await,
            readable: old.len() as u64,
        };
        let ra = ReadAhead::new(DEFAULT_BUDGET);
        let (off, len) = at[0];
        check(&ra.read(5, off, len, &src).await.unwrap(), 1);
        assert!(ra.cached(5, off, len).is_some());
        // A read ahead of chunk 1 is in flight when the segment goes.
        disk.set_delays(2, 8);
        ra.read_ahead(5, off, &src, || None);
        assert_eq!(ra.stats().reads, 2);
        ra.forget(5);
        assert!(ra.cached(5, off, len).is_none());
        // Another file now under the same ordinal (which the log never
        // does within a run): what is read is its bytes.
        let (mut new, _) = image(2 * CHUNK as usize, 100);
        new[HEADER_LEN] ^= 0xff; // different bytes (its first record's body)
        let new_src = Source {
            file: file_with(&disk, "new.log", &new).await,
            readable: new.len() as u64,
        };
        let (off1, len1) = at[at.len() - 1];
        let got = ra.read(5, off1, len1, &new_src).await.unwrap();
        assert_eq!(got, new[off1 as usize..off1 as usize + len1]);
        let got = ra.read(5, off, len, &new_src).await.unwrap();
        assert_eq!(got, new[off as usize..off as usize + len]);
        assert_ne!(got, old[off as usize..off as usize + len]);
        // Once every read landed, nothing of the old file is held.
        for _ in 0..64 {
            crate::turn::pause().await;
        }
        ra.forget(5);
        assert_eq!(ra.stats().bytes, 0);
    });
}

#[test]
fn bytes_written_after_a_chunk_was_read_are_read_again() {
    run(|| async {
        let disk = SimDisk::new();
        let (data, at) = image(CHUNK as usize, 200);
        let file = file_with(&disk, "open.log", &data).await;
        // When the first read was issued only the first half was written.
        let half = at[at.len() / 2].0;
        let early = Source {
            file: file.clone(),
            readable: half,
        };
        let ra = ReadAhead::new(DEFAULT_BUDGET);
        check(&ra.read(0, at[0].0, at[0].1, &early).await.unwrap(), 1);
        let (off, len) = at[at.len() / 2 + 1];
        assert!(ra.cached(0, off, len).is_none(), "not valid in the chunk");
        let later = Source {
            file,
            readable: data.len() as u64,
        };
        let bytes = ra.read(0, off, len, &later).await.unwrap();
        check(&bytes, at.len() as u64 / 2 + 2);
        assert_eq!(ra.stats().reads, 2);
        assert!(ra.cached(0, at[0].0, at[0].1).is_some());
    });
}

#[test]
fn the_next_chunk_is_read_ahead_within_and_across_segments() {
    run(|| async {
        let disk = SimDisk::new();
        let (data, at) = image(2 * CHUNK as usize, 300);
        let src = Source {
            file: file_with(&disk, "a.log", &data).await,
            readable: data.len() as u64,
        };
        let next = Source {
            file: file_with(&disk, "b.log", &data).await,
            readable: data.len() as u64,
        };
        let ra = ReadAhead::new(DEFAULT_BUDGET);
        let (off, len) = at[0];
        check(&ra.read(1, off, len, &src).await.unwrap(), 1);
        ra.read_ahead(1, off, &src, || panic!("chunk 1 is in this segment"));
        let (last, last_len) = at[at.len() - 1];
        assert_eq!(last / CHUNK, 1);
        check(
            &ra.read(1, last, last_len, &src).await.unwrap(),
            at.len() as u64,
        );
        let st = ra.stats();
        assert_eq!((st.reads, st.ahead, st.misses), (2, 1, 1));
        // From the segment's last chunk: the next segment's first.
        ra.read_ahead(1, last, &src, || Some((2, next.clone())));
        check(&ra.read(2, off, len, &next).await.unwrap(), 1);
        let st = ra.stats();
        assert_eq!((st.reads, st.ahead, st.misses), (3, 2, 1));
    });
}

#[test]
fn a_damaged_record_fails_its_checksum_through_the_cache() {
    run(|| async {
        let disk = SimDisk::new();
        let (mut data, at) = image(CHUNK as usize, 100);
        let (off, len) = at[10];
        data[off as usize + HEADER_LEN + 5] ^= 0x01;
        let src = Source {
            file: file_with(&disk, "a.log", &data).await,
            readable: data.len() as u64,
        };
        let ra = ReadAhead::new(DEFAULT_BUDGET);
        let bytes = ra.read(1, off, len, &src).await.unwrap();
        assert!(record::decode(&bytes).is_err());
        check(&ra.read(1, at[11].0, at[11].1, &src).await.unwrap(), 12);
    });
}

#[test]
fn a_failed_read_is_reported_to_every_waiter_and_not_kept() {
    use crate::disk::sim::{Fault, Trigger};
    run(|| async {
        let disk = SimDisk::new();
        let (src, at) = a_segment(&disk, CHUNK as usize).await;
        disk.set_delays(1, 8);
        disk.inject(Trigger::NthOf(Op::Read, 0), Fault::Errno(libc::EIO));
        let ra = ReadAhead::new(DEFAULT_BUDGET);
        let gets: Vec<_> = at[..3]
            .iter()
            .map(|&(off, len)| {
                let (ra, src) = (ra.clone(), src.clone());
                glommio::spawn_local(async move { ra.read(1, off, len, &src).await })
            })
            .collect();
        for g in gets {
            assert_eq!(g.await.unwrap_err().raw_os_error(), Some(libc::EIO));
        }
        assert_eq!(ra.stats().bytes, 0);
        check(&ra.read(1, at[0].0, at[0].1, &src).await.unwrap(), 1);
    });
}

#[test]
fn a_smaller_budget_drops_the_least_recently_used_chunks() {
    run(|| async {
        let disk = SimDisk::new();
        let chunks = 6;
        let (data, at) = image(chunks * CHUNK as usize, 4000);
        let src = Source {
            file: file_with(&disk, "a.log", &data).await,
            readable: data.len() as u64,
        };
        let ra = ReadAhead::new(DEFAULT_BUDGET);
        assert_eq!(ra.budget(), DEFAULT_BUDGET);
        for &(off, len) in &at {
            ra.read(2, off, len, &src).await.unwrap();
        }
        let st = ra.stats();
        assert_eq!((st.reads, st.evicted), (chunks as u64, 0));
        assert_eq!(st.bytes, data.len() as u64);
        assert_eq!(st.bytes_read, data.len() as u64);
        // Down to the least there is: the last chunks read stay.
        ra.set_budget(0);
        assert_eq!(ra.budget(), ReadAhead::MIN_BUDGET);
        let st = ra.stats();
        assert!(st.bytes as usize <= ReadAhead::MIN_BUDGET);
        assert_eq!(st.evicted, chunks as u64 - st.bytes / CHUNK);
        let (last, last_len) = at[at.len() - 1];
        assert!(ra.cached(2, last, last_len).is_some());
        assert!(ra.cached(2, at[0].0, at[0].1).is_none());
    });
}

#[test]
fn shards_counters_add_up() {
    let one = ReadAheadStats {
        hits: 1,
        misses: 2,
        shared: 3,
        reads: 4,
        ahead: 5,
        bytes_read: 6,
        evicted: 7,
        bytes: 8,
    };
    let mut sum = one;
    sum.add(&one);
    assert_eq!(
        sum,
        ReadAheadStats {
            hits: 2,
            misses: 4,
            shared: 6,
            reads: 8,
            ahead: 10,
            bytes_read: 12,
            evicted: 14,
            bytes: 16,
        }
    );
}
