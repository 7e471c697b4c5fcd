#!/bin/bash
# One fairness run as scripts/bench does it (server on CPU 0 with one
# executor, the 8 MiB flood and the small open-loop load both on CPU 1),
# plus what scripts/bench does not show: the disk's reads and writes during
# the run (/proc/diskstats) and, with CAP=1, the small requests' latency as
# seen on the loopback wire (bench-results/wire-latency.py), which leaves
# out the load generator's own scheduling delays.
#
#   bench-results/fairness-wire.sh <mcqd binary | memcached> <sync mode> <label>
#   CAP=1 bench-results/fairness-wire.sh target/release/mcqd interval=10 after
#
# Output goes to $OUT (default target/fairness-wire). DEV is the data
# directory's block device as named in /proc/diskstats (default vda).
set -u
BIN=$1 MODE=$2 L=$3
HERE=$(cd "$(dirname "$0")" && pwd)
OUT=${OUT:-$HERE/../target/fairness-wire}
DEV=${DEV:-vda}
LG=${LOADGEN:-$HERE/../target/release/mcq-loadgen}
mkdir -p "$OUT"
D=$OUT/data-$L
rm -rf "$D" && mkdir -p "$D"
PORT=$((20000 + RANDOM % 10000))
if [ "$BIN" = memcached ]; then
    taskset -c 0 memcached -u root -t 1 -p $PORT -U 0 -I 16m -m 1024 >"$OUT/$L.log" 2>&1 &
else
    taskset -c 0 "$BIN" -H "$D" -p $PORT -t 1 --sync "$MODE" -B 16777216 >"$OUT/$L.log" 2>&1 &
fi
SP=$!
sleep 0.5
disk() { awk -v d="$DEV" '$3 == d {print $4, $6, $8, $10}' /proc/diskstats; }
read -r r0 rs0 w0 ws0 < <(disk)
taskset -c 1 "$LG" --server 127.0.0.1:$PORT --threads 1 --quiet --json "$OUT/$L-flood.json" \
    --workload mixed --set-ratio 0.5 --value-size 8388608 --queues 1 --key-prefix flood \
    --connections 2 --pipeline 1 --timeout 60s --duration 5s --warmup 1s >/dev/null &
FP=$!
if [ -n "${CAP:-}" ]; then
    tcpdump -i lo -s 200 -w "$OUT/$L.pcap" "tcp port $PORT and less 300" 2>/dev/null &
    TP=$!
fi
sleep 0.3
taskset -c 1 "$LG" --server 127.0.0.1:$PORT --threads 1 --quiet --json "$OUT/$L-small.json" \
    --workload mixed --set-ratio 0.5 --value-size 64 --queues 10 --key-prefix small \
    --connections 10 --pipeline 1 --rate 1000 --duration 4s --warmup 1s >/dev/null
wait $FP
read -r r1 rs1 w1 ws1 < <(disk)
python3 - "$OUT/$L-small.json" "$OUT/$L-flood.json" "$L" <<'PY'
import json, sys
s, f = (json.load(open(p)) for p in sys.argv[1:3])
lat = s["latency_us"]
print(f"{sys.argv[3]} small p99 {lat['p99'] / 1000:.2f} ms p99.9 {lat['p999'] / 1000:.2f} ms"
      f"  flood (both ways) {(f['bytes_sent'] + f['bytes_received']) / f['duration_s'] / 1e6:.0f} MB/s")
PY
echo "$L disk: $((r1 - r0)) reads $(( (rs1 - rs0) / 2048 )) MiB, $((w1 - w0)) writes $(( (ws1 - ws0) / 2048 )) MiB"
if [ -n "${CAP:-}" ]; then
    kill $TP; wait $TP
    python3 "$HERE/wire-latency.py" "$OUT/$L.pcap" $PORT | sed "s/^/$L wire: /"
fi
kill $SP; wait $SP 2>/dev/null
rm -rf "$D"
