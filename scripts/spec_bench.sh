#!/bin/sh
# Speculative decoding on the elastic default model (docs/PERF.md): for every
# drafter (each smaller budget, prompt lookup) and draft length, on reasoning
# chats and on plain text, greedy: decode tok/s against no drafting (best of
# REPS runs each), and the share of drafted tokens accepted. The output must
# be the same text with and without a drafter (checked here too).
#   scripts/spec_bench.sh [BIN] [MODEL] [REPS]
set -eu
BIN=${1:-build/starling}
MODEL=${2:-models/elastic}
REPS=${3:-3}
TARGET=9.5M
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
run() { # $1 name, $2.. args; prints "tok/s accepted proposed" of the best run
    name=$1; shift
    best=0; acc=0; prop=0
    for r in $(seq "$REPS"); do
        "$BIN" run -m "$MODEL" -b "$TARGET" --temp 0 -t 2 "$@" > "$tmp/$name.out" 2> "$tmp/err"
        # generated tokens / generation time: "decode N tok in T s" (plain), or
        # "think N tok (...) in T s" + "answer N tok in T s" (chat with thinking)
        tps=$(awk '
            match($0, /decode [0-9]+ tok in [0-9.]+ s/) { split(substr($0, RSTART, RLENGTH), a, " "); n += a[2]; t += a[5] }
            match($0, /think [0-9]+ tok \([^)]*\) in [0-9.]+ s/) { s = substr($0, RSTART, RLENGTH); split(s, a, " ");
                n += a[2]; sub(/.* in /, "", s); t += s + 0 }
            match($0, /answer [0-9]+ tok in [0-9.]+ s/) { split(substr($0, RSTART, RLENGTH), a, " "); n += a[2]; t += a[5] }
            END { printf "%.1f", (t > 0 ? n / t : 0) }' "$tmp/err")
        if awk "BEGIN{exit !($tps > $best)}"; then best=$tps; fi
        a=$(sed -n 's/^\[draft [^]]*\] \([0-9]*\) of \([0-9]*\) drafted.*/\1 \2/p' "$tmp/err")
        [ -n "$a" ] && { acc=${a% *}; prop=${a#* }; }
    done
    echo "$best $acc $prop"
}
echo "| prompt | drafter | k | decode tok/s | speedup | accepted |"
echo "|---|---|---|---|---|---|"
for kind in reasoning text; do
    if [ $kind = reasoning ]; then set -- --chat -p "What is 4821 + 3977?" -n 200
    else set -- -p "The history of the old town begins" -n 200; fi
    base=$(run base "$@"); b=${base%% *}
    cp "$tmp/base.out" "$tmp/ref.out"
    echo "| $kind | none | - | $b | 1.00x | - |"
    for d in 6M 4M ngram; do
        for k in 2 4; do
            res=$(run spec "$@" --draft $d --draft-n $k)
            cmp -s "$tmp/spec.out" "$tmp/ref.out" || { echo "output differs with --draft $d --draft-n $k" >&2; exit 1; }
            set -- $res "$@"; t=$1; a=$2; p=$3; shift 3
            echo "| $kind | $d | $k | $t | $(awk "BEGIN{printf \"%.2fx\", $t / $b}") | $a / $p ($(awk "BEGIN{printf \"%.0f%%\", $p ? 100 * $a / $p : 0}")) |"
        done
    done
done
