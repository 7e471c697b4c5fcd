#!/usr/bin/env bash
# Restart time and peak RSS of recovery, for before/after comparisons of
# the recovery path (issue 20: "restart time and peak RSS during recovery of
# a 10M-message data directory, after <= before").
#
#   bench-results/restart-rss.sh fill MCQD DIR MESSAGES [LOADGEN]
#       a fresh data directory DIR (one shard), filled with MESSAGES 100-byte
#       messages over 16 queues by mcq-loadgen (--sync none, 8 connections x
#       32 deep), then mcqd is killed with SIGKILL: the newest segment is left
#       open, as after a crash.
#   bench-results/restart-rss.sh restart MCQD TEMPLATE
#       copies TEMPLATE, drops the page cache (root), starts MCQD on the copy
#       (one executor, pinned to CPU 0) and prints the seconds from exec to
#       its "listening on" line, VmHWM (the peak RSS, i.e. recovery's) and
#       VmRSS then, and curr_items / log_corrupt_records from `stats`.
#
# Alternate the binaries round by round. Keep the data on a real disk (not
# tmpfs, where O_DIRECT is not real): DIR defaults under target/.
set -euo pipefail
port=${PORT:-22299}
case "${1:-}" in
fill)
  mcqd=$2 dir=$3 n=$4 loadgen=${5:-target/release/mcq-loadgen}
  rm -rf "$dir"
  taskset -c 0 "$mcqd" -p "$port" -H "$dir" -t 1 --sync none >"$dir.fill.log" 2>&1 &
  pid=$!
  until grep -q "listening on" "$dir.fill.log"; do sleep 0.05; done
  taskset -c 1 "$loadgen" -s "127.0.0.1:$port" --workload set -c 8 -p 32 \
    --value-size 100 -n "$n" --queues 16 | grep throughput
  echo "filled: $(awk '/VmRSS/{print $2 / 1024 " MiB RSS"}' /proc/$pid/status)"
  kill -9 "$pid"; wait "$pid" 2>/dev/null || true
  du -sh "$dir"
  ;;
restart)
  mcqd=$2 tmpl=$3 work=${3%/}.run log=${3%/}.run.log
  rm -rf "$work"; cp -a "$tmpl" "$work"; sync
  echo 3 >/proc/sys/vm/drop_caches
  start=$(date +%s.%N)
  taskset -c 0 "$mcqd" -p "$port" -H "$work" -t 1 >"$log" 2>&1 &
  pid=$!
  until grep -q "listening on" "$log"; do
    kill -0 "$pid" 2>/dev/null || { cat "$log"; exit 1; }
    sleep 0.005
  done
  end=$(date +%s.%N)
  hwm=$(awk '/VmHWM/{print $2}' /proc/$pid/status)
  rss=$(awk '/VmRSS/{print $2}' /proc/$pid/status)
  stats=$(printf 'stats\r\n' | nc -q1 127.0.0.1 "$port" | tr -d '\r' |
    awk '/curr_items|log_corrupt_records/{printf "%s=%s ", $2, $3}')
  printf '%s listening after %.2f s, peak RSS %d MiB, RSS %d MiB, %s\n' \
    "$mcqd" "$(echo "$end - $start" | bc)" $((hwm / 1024)) $((rss / 1024)) "$stats"
  kill -TERM "$pid"; wait "$pid" || true
  rm -rf "$work"
  ;;
*) sed -n '2,20p' "$0"; exit 2 ;;
esac
