#!/bin/sh
# docs/RESULTS.md, "Elastic budget control": every budget of the elastic
# default model with thinking caps 0 / 32 / 64 / 128 / none against
# think-small -> answer-large (and the reverse) in both switch modes, on
# fresh held-out problems (`starling tasks --split eval`, seed SEED, never
# used for tuning): ITEMS of the mix (add, sort, compare: the answer copies
# the trace's last line) and CODE_ITEMS of the code family (the answer needs
# a memorised fact the trace does not hold), plus the parent with and
# without thinking.
#
#   scripts/budget_control.sh [BIN]          (after make elastic-model; ~25 min on 2 cores)
#   ITEMS=240 CODE_ITEMS=120 SEED=5 THREADS=2 scripts/budget_control.sh
#
# Writes build/budget/{eval.md,eval.tsv,eval.svg} and build/budget/parent/.
set -eu
bin=${1:-build/starling}
items=${ITEMS:-240}
code_items=${CODE_ITEMS:-120}
seed=${SEED:-5}
threads=${THREADS:-2}
w=build/budget
mkdir -p $w
$bin tasks --kind mix -n "$items" --seed "$seed" --digits 2-4 --split eval -o $w/task.jsonl
$bin tasks --kind code -n "$code_items" --seed "$seed" --split eval >> $w/task.jsonl
$bin eval -m models/elastic --task $w/task.jsonl --caps 0,32,64,128,none \
  --pairs 4M:9.5M,6M:9.5M,4M:6M,9.5M:4M,9.5M:6M --pair-cap none -n 256 -t "$threads" -o $w -q
$bin eval -m models/parent --task $w/task.jsonl --caps 0,none --budgets full --pairs '' -n 256 -t "$threads" \
  -o $w/parent -q > /dev/null
echo
echo "parent (models/parent) on the same items:"
sed -n '/^| config/,/^$/p' $w/parent/eval.md
