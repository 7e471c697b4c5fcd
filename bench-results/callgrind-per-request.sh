#!/usr/bin/env bash
# callgrind-per-request.sh MCQD [REQUESTS] [LOADGEN]: user-space instructions
# per request of mcqd on the pipelined-16x16 row's load (--sync none, -t 1),
# counted by callgrind: unlike CPU time on this shared 2-core VM, the count
# does not move with the machine's load (repeat runs agree within 0.2%).
# 20,000 requests warm up, then counters are zeroed and REQUESTS (default
# 100,000) measured; prints the total and per-request count and leaves
# cg.<pid>.out.1 for callgrind_annotate (inclusive costs per function).
set -eu
bin=$1 n=${2:-100000}
lg=${3:-$(dirname "$0")/../target/release/mcq-loadgen}
port=22391
dir=$(mktemp -d "$(dirname "$0")/../target/cg-data.XXXXXX")
out=$(mktemp -u "$(dirname "$0")/../target/cg.XXXXXX")
load() {
  taskset -c 1 "$lg" -s 127.0.0.1:$port --workload mixed --set-ratio 0.5 \
    --value-size 64 --queues 1 -c 16 -p 16 -n "$1" >/dev/null
}
valgrind --tool=callgrind --callgrind-out-file="$out" "$bin" -p $port -H "$dir" -t 1 --sync none >"$out.log" 2>&1 &
pid=$!
for _ in $(seq 1 120); do grep -q "listening on" "$out.log" && break; sleep 0.5; done
load 20000
callgrind_control -z $pid >/dev/null
load "$n"
callgrind_control -d $pid >/dev/null
sleep 1
kill $pid; wait $pid 2>/dev/null || true
rm -rf "$dir"
total=$(callgrind_annotate "$out.1" | awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1}')
echo "$(basename "$bin"): $total instructions for $n requests, $((total / n)) per request ($out.1)"
