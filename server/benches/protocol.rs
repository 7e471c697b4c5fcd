//! Request parsing, the first thing every byte from a client meets.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use mcqd::protocol::{parse, Parsed};

fn pipeline(body: usize, requests: usize) -> Vec<u8> {
    let mut input = Vec::new();
    let payload = vec![b'x'; body];
    for i in 0..requests {
        if i % 2 == 0 {
            input.extend_from_slice(format!("set queue-{} 0 0 {body}\r\n", i % 16).as_bytes());
            input.extend_from_slice(&payload);
            input.extend_from_slice(b"\r\n");
        } else {
            input.extend_from_slice(format!("get queue-{}\r\n", i % 16).as_bytes());
        }
    }
    input
}

/// Parses a whole pipeline the way a connection does.
fn parse_all(mut input: &[u8]) -> usize {
    let mut n = 0;
    while let Parsed::Command { consumed, .. } = parse(input, 1 << 20) {
        input = &input[consumed..];
        n += 1;
    }
    n
}

fn bench_parse(c: &mut Criterion) {
    let mut group = c.benchmark_group("parse_pipeline");
    for body in [16usize, 1000, 4096] {
        let input = pipeline(body, 1000);
        group.throughput(Throughput::Elements(1000));
        group.bench_with_input(BenchmarkId::from_parameter(body), &input, |b, input| {
            b.iter(|| assert_eq!(parse_all(input), 1000))
        });
    }
    group.finish();
}

criterion_group!(benches, bench_parse);
criterion_main!(benches);
