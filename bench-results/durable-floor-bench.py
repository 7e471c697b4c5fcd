#!/usr/bin/env python3
"""Side by side at N connections (unpipelined unless PIPELINE is set;
64-byte mixed set/get, one queue): memcached, the durable floor probe (server/examples/durable_floor.rs)
in its variants, and mcqd, in alternating rounds, server on CPU 0 and
mcq-loadgen on CPU 1, each server on a fresh data directory on the root disk.
Prints each round and the medians with their spread; CPU per request is the
server's user+system time over the warm-up and the measured run.

    cargo build --release -p mcqd -p mcq-loadgen --example durable_floor
    bench-results/durable-floor-bench.py ROUNDS CONNECTIONS [CONTENDER...]

OLD_MCQD=<binary> adds the old-* contenders (an older mcqd, for before/after).
PIPELINE=<depth> pipelines each connection that deep (default 1).
"""
import json, os, random, shutil, socket, statistics as st, subprocess, sys, time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
os.chdir(ROOT)
D = '/var/tmp/durable-floor-bench'
F = 'target/release/examples/durable_floor'
M = 'target/release/mcqd'
OLD = os.environ.get('OLD_MCQD')
PIPELINE = os.environ.get('PIPELINE', '1')
TK = os.sysconf('SC_CLK_TCK')


def floor(*extra):
    return lambda p: [F, '--port', str(p), '--dir', D] + list(extra)


def mcqd(binary, mode):
    return lambda p: [binary, '-p', str(p), '-H', D, '-t', '1', '--sync', mode]


CONTENDERS = {
    'memcached': lambda p: ['memcached', '-p', str(p), '-U', '0', '-l', '127.0.0.1', '-t', '1',
                            '-m', '1024', '-u', 'root'],
    'floor-nowrite': floor('--no-write'),
    'floor-i1': floor('--inflight', '1'),
    'floor-i2': floor('--inflight', '2'),
    'floor-i4': floor('--inflight', '4'),
    'floor-falloc-i2': floor('--inflight', '2', '--fallocate'),
    'floor-interval-i2': floor('--inflight', '2', '--sync-every', '10'),
    'floor-iopoll-i2': floor('--inflight', '2', '--iopoll'),
    'floor-iopoll-interval-i2': floor('--inflight', '2', '--sync-every', '10', '--iopoll'),
    'floor-iopoll-dsync-i2': floor('--inflight', '2', '--dsync', '--iopoll'),
    'floor-falloc-interval-i2': floor('--inflight', '2', '--sync-every', '10', '--fallocate'),
    'floor-dsync-i1': floor('--inflight', '1', '--dsync'),
    'floor-dsync-i2': floor('--inflight', '2', '--dsync'),
    'floor-dsync-i4': floor('--inflight', '4', '--dsync'),
    'floor-falloc-dsync-i2': floor('--inflight', '2', '--dsync', '--fallocate'),
    'floor-sync-i2': floor('--inflight', '2', '--fdatasync'),
    'mcqd-none': mcqd(M, 'none'),
    'mcqd-interval': mcqd(M, 'interval=10'),
    'mcqd-always': mcqd(M, 'always'),
}
SPIN = os.environ.get('SPIN_MCQD')  # an mcqd that reads MCQ_SPIN_US (experiment)
if SPIN:
    for us in (50, 200, 1000):
        for m, mode in (('interval', 'interval=10'), ('always', 'always')):
            CONTENDERS[f'spin{us}-{m}'] = (lambda us, mode: lambda p: [
                'env', f'MCQ_SPIN_US={us}', SPIN, '-p', str(p), '-H', D, '-t', '1', '--sync', mode])(us, mode)
if OLD:
    CONTENDERS.update({f'old-{m}': mcqd(OLD, mode) for m, mode in
                       (('none', 'none'), ('interval', 'interval=10'), ('always', 'always'))})


def cpu_s(pid):
    f = open(f'/proc/{pid}/stat').read().rsplit(')', 1)[1].split()
    return (int(f[11]) + int(f[12])) / TK


def one(name, conns):
    shutil.rmtree(D, ignore_errors=True)
    os.makedirs(D)
    port = random.randint(23000, 29000)
    with open(f'/tmp/durable-floor-{name}.log', 'w') as log:
        proc = subprocess.Popen(['taskset', '-c', '0'] + CONTENDERS[name](port),
                                stdout=log, stderr=log)
    try:
        for _ in range(400):
            try:
                socket.create_connection(('127.0.0.1', port)).close()
                break
            except OSError:
                time.sleep(0.05)
        c0 = cpu_s(proc.pid)
        out = Path(D + '.json')
        subprocess.run(['taskset', '-c', '1', 'target/release/mcq-loadgen', '-s', f'127.0.0.1:{port}',
                        '--workload', 'mixed', '--set-ratio', '0.5', '--value-size', '64',
                        '--queues', '1', '-c', str(conns), '--pipeline', PIPELINE,
                        '--duration', '5s', '--warmup', '1s',
                        '--quiet', '--json', str(out)], check=True, capture_output=True)
        c1 = cpu_s(proc.pid)
    finally:
        proc.terminate()
        proc.wait()
    j = json.loads(out.read_text())
    out.unlink()
    ops = j['ops_per_sec']
    us = (c1 - c0) / (ops * (j['duration_s'] + j['warmup_s'])) * 1e6
    return ops, us, j['latency_us']['p99']


def main():
    rounds, conns, names = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3:] or list(CONTENDERS)
    res = {n: [] for n in names}
    for r in range(rounds):
        print(f'round {r + 1} load {open("/proc/loadavg").read().split()[0]}', flush=True)
        for n in names:
            ops, us, p99 = one(n, conns)
            res[n].append((ops, us))
            print(f'  {n:22s} {ops:9.0f} ops/s  cpu {us:5.1f} us/req  p99 {p99:.0f} us', flush=True)
    mc = st.median(o for o, _ in res['memcached']) if 'memcached' in res else None
    print('medians:')
    for n in names:
        ops = [o for o, _ in res[n]]
        m = st.median(ops)
        ratio = f'{m / mc:.2f}x memcached' if mc else ''
        print(f'  {n:22s} {m:9.0f} ops/s ({min(ops):.0f}..{max(ops):.0f}) {ratio}  '
              f'cpu {st.median(u for _, u in res[n]):.1f} us/req')


if __name__ == '__main__':
    main()
