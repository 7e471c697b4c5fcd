//! Record encoding/decoding and index load/lookup: the CPU side of the log.

use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use mcqd::log::index::{self, IndexBuilder, LoadedIndex};
use mcqd::log::record::{self, Header, Kind};

fn header(len: usize, lsn: u64) -> Header {
    Header {
        kind: Kind::Enqueued,
        queue: 3,
        lsn,
        seq: lsn,
        time: 1,
        flags: 0,
        expires: 0,
        len: len as u32,
    }
}

fn records(c: &mut Criterion) {
    let mut g = c.benchmark_group("record");
    for size in [100usize, 1000, 4096] {
        let body = vec![0xabu8; size];
        g.throughput(Throughput::Bytes(size as u64));
        g.bench_with_input(BenchmarkId::new("encode", size), &body, |b, body| {
            let mut out = Vec::with_capacity(1 << 20);
            let mut lsn = 0;
            b.iter(|| {
                if out.len() > (1 << 20) - 8192 {
                    out.clear();
                }
                lsn += 1;
                record::encode_into(&mut out, &header(body.len(), lsn), black_box(body));
            });
        });
        let mut enc = Vec::new();
        record::encode_into(&mut enc, &header(size, 1), &body);
        g.bench_with_input(BenchmarkId::new("decode_verify", size), &enc, |b, enc| {
            b.iter(|| record::decode(black_box(enc)).unwrap());
        });
    }
    g.finish();
}

/// An index of a 64 MiB segment of 1000-byte messages in 16 queues.
fn sample_index() -> Vec<u8> {
    let mut b = IndexBuilder::new(1);
    let mut off = 0u64;
    for i in 0..64_000u64 {
        let h = Header {
            kind: Kind::Enqueued,
            queue: (i % 16) as u32,
            lsn: i + 1,
            seq: i / 16,
            time: 0,
            flags: 0,
            expires: 0,
            len: 1000,
        };
        b.record(&h, &[0u8; 1000], off);
        off += h.record_len() as u64;
    }
    index::encode(&b.finish())
}

fn indexes(c: &mut Criterion) {
    let bytes = sample_index();
    let mut g = c.benchmark_group("index");
    g.throughput(Throughput::Bytes(bytes.len() as u64));
    g.bench_function("validate_64k_messages", |b| {
        b.iter(|| LoadedIndex::from_bytes(black_box(&bytes), 1).unwrap());
    });
    g.finish();
    let loaded = LoadedIndex::from_bytes(&bytes, 1).unwrap();
    let idx = loaded.get();
    c.bench_function("index/lookup_seq", |b| {
        let mut seq = 0u64;
        b.iter(|| {
            seq = (seq + 7919) % 4000;
            let q = &idx.queues[(seq % 16) as usize];
            let i = q
                .msgs
                .binary_search_by_key(&seq, |m| m.seq.to_native())
                .unwrap();
            black_box(q.msgs[i].off.to_native())
        });
    });
}

criterion_group!(benches, records, indexes);
criterion_main!(benches);
