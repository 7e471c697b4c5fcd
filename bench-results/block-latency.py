#!/usr/bin/env python3
"""Device requests' latency by kind, from the block layer's tracepoints, and
how many writes overlapped a discard: what bench-results/
2026-12-05-issue8-discard.md used to find that discards of deleted segments
stalled the writes behind them.

    perf record -e block:block_rq_issue -e block:block_rq_complete -a -o blk.data -- sleep 2
    perf script -i blk.data -F time,event,trace > blk.txt
    bench-results/block-latency.py blk.txt

Kinds are the block layer's flags (W write, R read, D discard, S sync, F
flush/FUA, M metadata), "small" up to 32 KiB. Discards are listed one by
one with their size.
"""
import collections
import re
import sys

ISSUE = re.compile(r"\s*([\d.]+):\s+block:block_rq_issue:\s+\S+\s+(\S+)\s+\d+\s+\(\)\s+(\d+)\s+\+\s+(\d+)")
DONE = re.compile(r"\s*([\d.]+):\s+block:block_rq_complete:\s+\S+\s+(\S+)\s+\(\)\s+(\d+)\s+\+\s+(\d+)")


def requests(path):
    issued = {}
    for line in open(path):
        m = ISSUE.match(line)
        if m:
            t, rw, sector, n = m.groups()
            issued[sector] = (float(t), rw, int(n))
            continue
        m = DONE.match(line)
        if m and m.group(3) in issued:
            t0, rw, n = issued.pop(m.group(3))
            yield t0, float(m.group(1)), rw, n * 512


def percentile(values, p):
    values = sorted(values)
    return values[min(len(values) - 1, int(len(values) * p))]


def main():
    reqs = list(requests(sys.argv[1]))
    by_kind = collections.defaultdict(list)
    for t0, t1, rw, size in reqs:
        by_kind[f"{rw} {'small' if size <= 32 << 10 else 'large'}"].append((t1 - t0) * 1000)
    for kind, v in sorted(by_kind.items()):
        print(f"{kind:10s} n {len(v):6d} p50 {percentile(v, .5):.2f} p99 {percentile(v, .99):.2f}"
              f" max {max(v):.2f} ms")
    discards = [(t0, t1, size) for t0, t1, rw, size in reqs if rw.startswith("D")]
    writes = [(t0, t1) for t0, t1, rw, size in reqs if rw.startswith("W")]
    during = [(t0, t1) for t0, t1 in writes if any(d0 < t1 and d1 > t0 for d0, d1, _ in discards)]
    slow = [(t0, t1) for t0, t1 in writes if t1 - t0 > 0.002]
    slow_during = [w for w in slow if w in during]
    span = max(t1 for _, t1, _, _ in reqs) - min(t0 for t0, _, _, _ in reqs)
    print(f"discards: {len(discards)}, busy {sum(t1 - t0 for t0, t1, _ in discards) * 1000:.0f} ms"
          f" of {span * 1000:.0f} ms")
    print(f"writes: {len(writes)}, {len(during)} during a discard; over 2 ms: {len(slow)},"
          f" {len(slow_during)} of them during a discard")
    for t0, t1, size in discards:
        if size >= 1 << 20:
            print(f"  discard {size / 2**20:6.1f} MiB {1000 * (t1 - t0):6.2f} ms")


main()
