#!/bin/bash
# perf-stat-16c.sh NAME PORT server-cmd...: 16 connections of 64-byte mixed
# load on CPU 1 for 8 s, the server (on CPU 0) under perf stat for 4 s of it;
# prints each event in all and per request. Run from the repository root.
NAME=$1; PORT=$2; shift 2
rm -rf /var/tmp/ps; mkdir -p /var/tmp/ps
taskset -c 0 "$@" >/tmp/ps-$NAME.log 2>&1 &
PID=$!
sleep 1.5
taskset -c 1 target/release/mcq-loadgen -s 127.0.0.1:$PORT --workload mixed --set-ratio 0.5 --value-size 64 --queues 1 -c 16 --duration 8s --json /tmp/ps.json --quiet >/dev/null 2>&1 &
LG=$!
sleep 2
perf stat -e ${EXTRA_EVENTS:+$EXTRA_EVENTS,}raw_syscalls:sys_enter,io_uring:io_uring_submit_req,io_uring:io_uring_complete,io_uring:io_uring_task_add,io_uring:io_uring_queue_async_work,io_uring:io_uring_poll_arm,context-switches,task-clock -p $PID -- sleep 4 2>&1 | grep -E "^ +[0-9]" > /tmp/ps-$NAME.stat
wait $LG
kill $PID; wait $PID 2>/dev/null
OPS=$(python3 -c "import json;print(json.load(open('/tmp/ps.json'))['ops_per_sec'])")
echo "== $NAME ops/s $OPS"
awk -v ops=$OPS '{gsub(",","",$1); printf "  %-40s %12.0f  per req %.3f\n", $2, $1, $1/(ops*4)}' /tmp/ps-$NAME.stat
