#!/bin/sh
# mcqd of this tree with 256 MiB segments (4x fewer rolls): an experiment.
exec "$(dirname "$0")/../target/release/mcqd" "$@" --segment-size 268435456
