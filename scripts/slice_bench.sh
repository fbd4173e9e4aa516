#!/bin/sh
# Slicing throughput against cp on the same bytes (README "Benchmarks").
#
#   scripts/slice_bench.sh [BIN]      (default build/starling)
#
# A ~3 GB BF16 checkpoint (starling synth --preset big) is copied with cp and
# sliced at the full budget (every byte rewritten through the slicer) and at S;
# both from a warm page cache, best of 3, output on the same file system and
# fsync'd (cp followed by sync of the copy).
set -eu
bin=${1:-build/starling}
src=build/big-model
[ -f $src/config.json ] || $bin synth --preset big -o $src
bytes=$(stat -c %s $src/model.safetensors)
best() { # command... -> best wall seconds of 3
  b=
  for i in 1 2 3; do
    rm -rf build/slice-out build/slice-out.cp
    t0=$(date +%s.%N); "$@" >/dev/null 2>&1; t1=$(date +%s.%N)
    b=$(awk -v t0="$t0" -v t1="$t1" -v b="$b" 'BEGIN { t = t1 - t0; print (b == "" || t < b) ? t : b }')
  done
  echo "$b"
}
cat $src/model.safetensors > /dev/null
# the slicer fsyncs what it writes (atomic, durable output), so cp is timed with
# a sync of its copy too: the same bytes made durable
cpsync() { cp "$1" "$2" && sync "$2"; }
tcp=$(best cpsync $src/model.safetensors build/slice-out.cp)
tfull=$(best $bin slice -s $src -t build/slice-out --budget full -q)
tS=$(best $bin slice -s $src -t build/slice-out --size S -q)
rm -rf build/slice-out build/slice-out.cp
Sbytes=$($bin info -m $src | awk '$1 == "S" { print $4, $5 }')
awk -v n="$bytes" -v cp="$tcp" -v f="$tfull" -v s="$tS" -v sb="$Sbytes" 'BEGIN {
  printf "source        %.2f GB\n", n / 1e9
  printf "cp + sync     %6.2f s  %6.2f GB/s\n", cp, n / cp / 1e9
  printf "slice full    %6.2f s  %6.2f GB/s  (%.0f%% of cp)\n", f, n / f / 1e9, 100 * cp / f
  printf "slice S       %6.2f s  (writes %s)\n", s, sb }'
