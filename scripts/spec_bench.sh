#!/bin/sh
# Speculative decoding on the elastic default model (docs/PERF.md): for every
# drafter (each smaller budget, prompt lookup) and draft length, on reasoning
# chats and on plain text, greedy: decode tok/s against no drafting, and the
# share of drafted tokens accepted. The output must be the same text with and
# without a drafter (checked here too).
#   scripts/spec_bench.sh [BIN] [MODEL] [REPS]
# A run of this model takes ~0.1 s, so one run is at the mercy of a busy
# neighbour: every configuration runs once per round, REPS rounds, and the
# table gives the median and the best of each (speedups: median against
# median, best against best).
set -eu
BIN=${1:-build/starling}
MODEL=${2:-models/elastic}
REPS=${3:-15}
TARGET=9.5M
CONFIGS="none 6M:2 6M:4 4M:2 4M:4 ngram:2 ngram:4"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# generated tokens / generation time: "decode N tok in T s" (plain), or
# "think N tok (...) in T s" + "answer N tok in T s" (chat with thinking)
tps() {
    awk '
        match($0, /decode [0-9]+ tok in [0-9.]+ s/) { split(substr($0, RSTART, RLENGTH), a, " "); n += a[2]; t += a[5] }
        match($0, /think [0-9]+ tok \([^)]*\) in [0-9.]+ s/) { s = substr($0, RSTART, RLENGTH); split(s, a, " ");
            n += a[2]; sub(/.* in /, "", s); t += s + 0 }
        match($0, /answer [0-9]+ tok in [0-9.]+ s/) { split(substr($0, RSTART, RLENGTH), a, " "); n += a[2]; t += a[5] }
        END { printf "%.1f", (t > 0 ? n / t : 0) }' "$1"
}
# median and best of the numbers in file $1 (one per line): "median best"
stats() { sort -g "$1" | awk '{ v[NR] = $1 } END { m = NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2; printf "%.1f %.1f", m, v[NR] }'; }
echo "| prompt | drafter | k | decode tok/s, median (best) | speedup, median (best) | drafted tokens accepted | drafting / verifying cost per drafted token, in plain steps |"
echo "|---|---|---|---|---|---|---|"
# Each sample is several prompts (a run of this model is ~0.1 s, so one
# prompt alone measures the machine's noise more than the drafter).
printf '%s\n' "What is 4821 + 3977?" "Sort these numbers from largest to smallest: 254, 929, 6, 88." \
    "What is the sum of 1141 and 31?" "Which number is smaller, 714 or 748?" > "$tmp/reasoning.prompts"
printf '%s\n' "The history of the old town begins" "It was a bright cold day in April, and" \
    "The President said that the Congress" > "$tmp/text.prompts"
for kind in reasoning text; do
    if [ $kind = reasoning ]; then set -- --chat -n 200
    else set -- -n 200; fi
    for c in $CONFIGS; do : > "$tmp/$c.tps"; done
    for r in $(seq "$REPS"); do
        for c in $CONFIGS; do
            d=${c%:*}; k=${c#*:}
            : > "$tmp/err"; : > "$tmp/out"
            while IFS= read -r p; do
                if [ "$c" = none ]; then "$BIN" run -m "$MODEL" -b "$TARGET" --temp 0 -t 2 "$@" -p "$p" >> "$tmp/out" 2>> "$tmp/err" < /dev/null
                else "$BIN" run -m "$MODEL" -b "$TARGET" --temp 0 -t 2 "$@" -p "$p" --draft "$d" --draft-n "$k" >> "$tmp/out" 2>> "$tmp/err" < /dev/null; fi
            done < "$tmp/$kind.prompts"
            if [ "$c" = none ]; then cp "$tmp/out" "$tmp/ref.out"
            elif ! cmp -s "$tmp/out" "$tmp/ref.out"; then echo "output differs with --draft $d --draft-n $k" >&2; exit 1; fi
            tps "$tmp/err" >> "$tmp/$c.tps"; echo >> "$tmp/$c.tps"
            # the last round's acceptance (summed over the prompts) and measured costs (the last prompt's)
            sed -n 's/^\[draft [^]]*\] \([0-9]*\) of \([0-9]*\) drafted.*drafting \([-0-9.]*\), verifying \([-0-9.]*\).*/\1 \2 \3 \4/p' "$tmp/err" |
                awk '{ a += $1; p += $2; d = $3; v = $4 } END { if (NR) print a, p, d, v }' > "$tmp/$c.acc"
        done
    done
    set -- $(stats "$tmp/none.tps"); bm=$1; bb=$2
    echo "| $kind | none | - | $bm ($bb) | 1.00x | - | - |"
    for c in $CONFIGS; do
        [ "$c" = none ] && continue
        set -- $(stats "$tmp/$c.tps") $(cat "$tmp/$c.acc"); m=$1; b=$2; a=$3; p=$4; cd=$5; cv=$6
        echo "| $kind | ${c%:*} | ${c#*:} | $m ($b) | $(awk "BEGIN{printf \"%.2fx (%.2fx)\", $m / $bm, $b / $bb}") | $a / $p ($(awk "BEGIN{printf \"%.0f%%\", $p ? 100 * $a / $p : 0}")) | $cd / $cv |"
    done
done
