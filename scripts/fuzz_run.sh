#!/bin/sh
# fuzz_run.sh SECONDS BIN... — run each libFuzzer binary for SECONDS from its
# seed corpus fuzz/corpus/NAME (read only) plus build/fuzz/work/NAME (where new
# inputs go); crashes land in build/fuzz/artifacts/. Prints one line per target
# (executions, exec/s, coverage) and fails on the first finding.
# SECONDS=0 with FUZZ_RUNS=N runs N executions instead (the long campaigns);
# FUZZ_OUT (default build/fuzz) holds the logs, work corpora and artifacts.
set -u
secs=$1; shift
out=${FUZZ_OUT:-build/fuzz}
mkdir -p "$out/artifacts"
status=0
for bin in "$@"; do
  name=$(basename "$bin")
  work=$out/work/$name
  mkdir -p "$work"
  log=$out/$name.log
  if [ "$secs" = 0 ]; then lim="-runs=${FUZZ_RUNS:-1000000}"; else lim="-max_total_time=$secs"; fi
  # -rss_limit_mb / -timeout: a hang or a blow-up is a finding too
  if ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 "$bin" $lim -timeout=10 -rss_limit_mb=2048 \
       -print_final_stats=1 -artifact_prefix="$out/artifacts/$name-" "$work" "fuzz/corpus/$name" >"$log" 2>&1; then
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
    eps=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log")
    cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1)
    echo "fuzz $name: ok, $runs executions ($eps/s), $cov"
  else
    echo "fuzz $name: FINDING (see $log and $out/artifacts/)"; tail -30 "$log"; status=1
  fi
done
exit $status
