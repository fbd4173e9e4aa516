#!/bin/sh
# docs/RESULTS.md: for every budget of the elastic default model, validation
# loss per text source and reasoning accuracy (with and without thinking),
# side by side with
#   (a) the parent (models/parent),
#   (b) a model of the budget's shape trained from scratch on as many tokens as
#       the elastic training used (same data mix, same schedule family),
#   (c) the ranked parent sliced at the budget's widths, without elastic training.
#
#   scripts/results.sh [BIN]         (after make model and make elastic-model)
#   ITEMS=150 scripts/results.sh     (held-out reasoning items to score; default 150)
#   SCRATCH=total scripts/results.sh (baselines (b) on parent + elastic tokens, in build/results-total)
set -eu
bin=${1:-build/starling}
items=${ITEMS:-150}
w=build/results
el=models/elastic
run=build/elastic/run
ranked=build/model/ranked
mkdir -p $w
head -n "$items" build/model/eval.jsonl > $w/eval.jsonl
el_tok=$(tail -n 1 $run/elastify.csv | cut -d, -f3)
tok=$el_tok
# (b)'s token budget: the elastic training's (default), or with SCRATCH=total
# the parent's pretraining plus the elastic training (the paper's comparison:
# every token that went into the nested model)
if [ "${SCRATCH:-elastic}" = total ]; then
  tok=$(( tok + $(tail -n 1 models/parent/train_log.csv | cut -d, -f2) ))
  w=build/results-total
  mkdir -p $w
  head -n "$items" build/model/eval.jsonl > $w/eval.jsonl
fi
steps=$(( tok / 2048 ))   # batch 8 x seq 256
sources="austen kjv mobydick sotu web"

# mean cross-entropy (nats/token) of DIR at BUDGET on each source's held-out text
losses() {
  out=""
  for s in $sources; do
    p=$($bin perplexity -m "$1" --budget "$2" -f build/corpus/$s.valid.txt --ctx 256 --max-windows 40 2>/dev/null |
        sed -n 's/.*perplexity \([0-9.]*\).*/\1/p')
    out="$out $(awk -v p="$p" 'BEGIN { printf "%.3f", log(p) }')"
  done
  echo "$out"
}
# exact-match accuracy (%) without thinking (cap 0) and with thinking (no cap)
accs() {
  $bin eval -m "$1" --task $w/eval.jsonl --caps 0,none --budgets "$2" -o "$3" -q -n 256 > /dev/null 2>&1
  awk -F'\t' 'NR > 1 { printf "%.1f ", $6 * 100 }' "$3/eval.tsv"
}
row() { # LABEL DIR BUDGET TAG
  l=$(losses "$2" "$3")
  a=$(accs "$2" "$3" "$w/eval_$4")
  st=$($bin info -m "$2" | awk -v b="$3" '$1 == b { print $2 " / " $3 }')
  mean=$(echo "$l" | awk '{ s = 0; for (i = 1; i <= NF; i++) s += $i; printf "%.3f", s / NF }')
  echo "| $1 | $st | $(echo $l | sed 's/ / | /g') | $mean | $(echo $a | sed 's/ / | /g') |" >> $w/table.md
}

budgets=$(ls $run/budgets | sed 's/\.json$//')
: > $w/table.md
row "parent" models/parent full parent
for b in $budgets; do
  # (c) ranked parent cut at the budget's widths, no elastic training
  $bin slice -s $ranked -t $w/sliced_$b --budget-file $run/budgets/$b.json --precision bf16 --force -q
  # (b) the same shape from scratch, on the elastic training's token count
  cat > $w/scratch_$b.json <<JSON
{"model": "sliced_$b/config.json", "tokenizer": "../model/tok",
 "data": {"train": [{"path": "../model/corpus.bin", "weight": 1}, {"path": "../model/tasks.bin", "weight": 1}],
          "val": "../model/val.bin"},
 "batch": 8, "seq": 256, "accum": 1, "steps": $steps, "lr": 1e-3, "min_lr": 1e-4, "warmup": 20,
 "weight_decay": 0.1, "grad_clip": 1.0, "eval_every": 1000000, "ckpt_every": 0, "log_every": 10, "seed": 1,
 "out": "scratch_$b"}
JSON
  [ -f $w/scratch_$b/final/config.json ] || $bin train --config $w/scratch_$b.json
  row "elastic $b" $el $b el_$b
  row "(b) from scratch, $b shape" $w/scratch_$b/final full scratch_$b
  row "(c) ranked + sliced, $b" $w/sliced_$b full sliced_$b
done

# decode and prefill speed per budget of the one elastic checkpoint (best of 3 runs)
: > $w/speed.md
for b in $budgets; do
  best=0; bestp=0
  for i in 1 2 3; do
    line=$($bin run -m $el --budget $b -p "The history of the English language" -n 400 --temp 0 --threads 2 2>&1 >/dev/null | grep 'decode')
    d=$(echo "$line" | sed -n 's/.*decode [0-9]* tok in [0-9.]* s (\([0-9.]*\) tok\/s).*/\1/p')
    p=$(echo "$line" | sed -n 's/.*prefill [0-9]* tok in [0-9.]* s (\([0-9.]*\) tok\/s).*/\1/p')
    best=$(awk -v a="$best" -v b="$d" 'BEGIN { print (b > a) ? b : a }')
    bestp=$(awk -v a="$bestp" -v b="$p" 'BEGIN { print (b > a) ? b : a }')
  done
  st=$($bin info -m $el | awk -v b="$b" '$1 == b { print $2 " | " $3 " | " $6 " " $7 }')
  echo "| $b | $st | $best | $bestp |" >> $w/speed.md
done

{
  echo "# Results: the elastic default model against its baselines"
  echo
  echo "Produced by \`scripts/results.sh\` ($(date -u +%Y-%m-%d), $(nproc) cores) after \`make model\` and"
  echo "\`make elastic-model\`. Elastic training used $el_tok tokens; each from-scratch baseline (b) trains"
  echo "$steps steps x 8 x 256 = $((steps * 2048)) tokens on the same data mix. Validation loss is the mean"
  echo "cross-entropy (nats/token, ctx 256, up to 40 windows) on each source's held-out text;"
  echo "accuracy is exact match on $items held-out reasoning problems (build/model/eval.jsonl), greedy,"
  echo "without thinking (thinking cap 0) and with thinking (no cap), 256 tokens max."
  echo
  echo "| model | params total / active | $(echo $sources | sed 's/ / | /g') | mean loss | acc no-think % | acc think % |"
  echo "|---|---|$(for s in $sources; do printf -- '---|'; done)---|---|---|"
  cat $w/table.md
  echo
  echo "Decode speed of each budget of the one checkpoint (\`starling run -n 400 --temp 0 --threads 2\`, best of 3):"
  echo
  echo "| budget | total params | active params | bytes read per token | decode tok/s | prefill tok/s |"
  echo "|---|---|---|---|---|---|"
  cat $w/speed.md
} > $w/RESULTS.table.md
cat $w/RESULTS.table.md
