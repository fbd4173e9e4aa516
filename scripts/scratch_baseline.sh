#!/bin/sh
# docs/RESULTS.md, "Nested against independent at equal tokens": one budget's
# exact shape (from models/elastic) trained from scratch with the parent's
# recipe and data mix (models/parent.json) on as many tokens as went into
# the nested model (the parent's pretraining plus the elastification), then
# scored like the elastic budget: reasoning accuracy without and with
# thinking on the budget-control problems, and validation loss per source.
#
#   scripts/scratch_baseline.sh [BIN] [BUDGET]      (defaults: build/starling, 4M)
#   ITEMS=240 SEED=5 THREADS=2 scripts/scratch_baseline.sh
#
# ~100 minutes for 4M on 2 cores (checkpoints every 500 steps; a rerun resumes
# from the newest). Writes build/scratch/{run_BUDGET,scratch_BUDGET,eval_*}.
set -eu
bin=${1:-build/starling}
b=${2:-4M}
items=${ITEMS:-240}
seed=${SEED:-5}
threads=${THREADS:-2}
w=build/scratch
mkdir -p $w build/model/tok
# the tokenizer the shipped models use, then the parent's data (corpus, tasks, token files)
[ -f build/model/tok/tokenizer.json ] || cp models/parent/tokenizer.json models/parent/tokenizer_config.json \
  models/parent/special_tokens_map.json build/model/tok/
scripts/make_model.sh "$bin" --data-only > $w/data.log
# the budget's shape: the elastic model sliced at it, without its budget list
$bin slice -s models/elastic -t $w/shape_$b --budget "$b" --precision bf16 --force -q
# tokens that went into the nested model: parent pretraining + elastification
parent_tok=$(tail -n 1 models/parent/train_log.csv | cut -d, -f2)
el_tok=$(tail -n 1 models/elastic/elastify.csv | cut -d, -f3)
per_step=$((8 * 256 * 2))
steps=$(( (parent_tok + el_tok) / per_step ))
python3 - "$w" "$b" "$steps" "$parent_tok" "$el_tok" <<'PY'
import json, sys
w, b, steps, pt, et = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5]
c = json.load(open(f"{w}/shape_{b}/config.json"))
c.pop("elastic", None)
json.dump(c, open(f"{w}/shape_{b}.config.json", "w"), indent=1)
p = json.load(open("models/parent.json"))
p.pop("_comment", None)
p.update({"model": f"shape_{b}.config.json", "tokenizer": "../model/tok", "steps": steps, "out": f"run_{b}",
          "data": {"train": [{"path": "../model/corpus.bin", "weight": 1}, {"path": "../model/tasks.bin", "weight": 1}],
                   "val": "../model/val.bin"},
          "_comment": f"{b} shape from scratch, the parent's recipe, {pt} + {et} tokens"})
json.dump(p, open(f"{w}/scratch_{b}.json", "w"), indent=1)
PY
last=$(ls -d $w/run_$b/step_* 2>/dev/null | sort -t_ -k3 -n | tail -n 1 || true)
if [ ! -f $w/run_$b/final/config.json ]; then
  if [ -n "$last" ]; then (cd $w && ../../$bin train --config scratch_$b.json --resume "../../$last")
  else (cd $w && ../../$bin train --config scratch_$b.json); fi
fi
$bin slice -s $w/run_$b/final -t $w/scratch_$b --budget full --precision bf16 --force -q
# the same problems as scripts/budget_control.sh, and validation loss per source
$bin tasks --kind mix -n "$items" --seed "$seed" --digits 2-4 --split eval -o $w/task.jsonl
$bin eval -m $w/scratch_$b --task $w/task.jsonl --caps 0,none --budgets full --pairs '' -n 256 -t "$threads" \
  -o $w/eval_scratch_$b -q > /dev/null
$bin eval -m models/elastic --task $w/task.jsonl --caps 0,none --budgets "$b" --pairs '' -n 256 -t "$threads" \
  -o $w/eval_elastic_$b -q > /dev/null
echo "| model | $(for f in build/corpus/*.valid.txt; do printf '%s | ' "$(basename $f .valid.txt)"; done)mean |"
for m in "models/elastic $b" "$w/scratch_$b full"; do
  set -- $m
  line="| $1 ($2) |"; sum=0; n=0
  for f in build/corpus/*.valid.txt; do
    p=$($bin perplexity -m "$1" --budget "$2" -f "$f" --ctx 256 --max-windows 40 2>/dev/null |
        sed -n 's/.*perplexity \([0-9.]*\).*/\1/p')
    l=$(awk -v p="$p" 'BEGIN { printf "%.3f", log(p) }')
    line="$line $l |"; sum=$(awk -v a="$sum" -v b="$l" 'BEGIN { print a + b }'); n=$((n + 1))
  done
  echo "$line $(awk -v s="$sum" -v n="$n" 'BEGIN { printf "%.3f", s / n }') |"
done
echo
for e in eval_elastic_$b eval_scratch_$b; do echo "$e:"; sed -n '/^| config/,/^$/p' $w/$e/eval.md; done
