#!/bin/sh
# Rebuild the shipped parent model from scratch (make model): corpus, tokenizer,
# reasoning tasks, token files, then two training stages and an evaluation:
#   stage 1  models/parent.json: 2500 steps from scratch on English text and the
#            add/sort/compare conversations (86 min) -> build/model/stage1 (BF16),
#            ranked by starling rank -> build/model/ranked (the same function)
#   stage 2  models/parent-code.json: 600 steps from the ranked stage 1, the code
#            family (codebook facts + code problems) added to the mix (22 min)
#            -> models/parent
#
#   scripts/make_model.sh [BIN] [STEPS]     (defaults: build/starling, the config's steps
#                                            for stage 1)
#   scripts/make_model.sh BIN --data-only   (corpus, tokenizer, tasks and token files only)
#
# Everything is deterministic (pinned data, seeds); the trained checkpoint lands in
# models/parent/ and its figures in build/model/report.md. make elastic-model needs
# build/model/stage1 and build/model/ranked from here.
set -eu
bin=${1:-build/starling}
steps=${2:-}
w=build/model
mkdir -p $w
scripts/corpus/build.sh build/corpus build/corpus-cache
mkdir -p $w/tok
[ -f $w/tok/tokenizer.json ] || $bin tokenizer-train -i build/corpus/train.txt --vocab-size 8192 -o $w/tok/tokenizer.json
# reasoning tasks: training conversations and a held-out evaluation set
# 2-4 digit operands; a quarter of the conversations answer without thinking, so
# that "no thinking" (--caps 0) is a trained mode and the comparison is fair
$bin tasks --kind mix -n 30000 --seed 1 --digits 2-4 --render -o $w/tasks.txt
$bin tasks --kind mix -n 10000 --seed 3 --digits 2-4 --render --no-think >> $w/tasks.txt
$bin tasks --kind mix -n 300 --seed 2 --digits 2-4 --split eval -o $w/eval.jsonl
# the code family (stage 2): problems (a quarter without thinking) and the codebook's
# facts, 200 shuffled passes; its own held-out problems
$bin tasks --kind code -n 6000 --seed 11 --render -o $w/code.txt
$bin tasks --kind code -n 2000 --seed 13 --render --no-think >> $w/code.txt
$bin tasks --codebook -n 200 --seed 1 -o $w/codebook.txt
$bin tasks --kind code -n 120 --seed 2 --split eval -o $w/code_eval.jsonl
# the same problems' thinking alone, for the elastic model's small budgets
# (models/elastic-code.json: they are taught the procedure, not the codebook)
$bin tasks --kind code -n 6000 --seed 11 --render --think-only -o $w/code-think.txt
$bin tokenize -m $w/tok -f build/corpus/train.txt --no-special --bin $w/corpus.bin --append-eos
$bin tokenize -m $w/tok -f $w/tasks.txt --bin $w/tasks.bin --append-eos
$bin tokenize -m $w/tok -f $w/code.txt --bin $w/code.bin --append-eos
$bin tokenize -m $w/tok -f $w/code-think.txt --bin $w/code-think.bin --append-eos
$bin tokenize -m $w/tok -f $w/codebook.txt --no-special --bin $w/codebook.bin --append-eos
$bin tokenize -m $w/tok -f build/corpus/valid.txt --no-special --bin $w/val.bin --append-eos
for f in build/corpus/*.valid.txt; do
  s=$(basename $f .valid.txt)
  $bin tokenize -m $w/tok -f $f --no-special --bin $w/val.$s.bin --append-eos
done
[ "$steps" = "--data-only" ] && exit 0
cfg=models/parent.json
if [ -n "$steps" ]; then
  sed "s/\"steps\": [0-9]*/\"steps\": $steps/" $cfg > $w/parent.json
  sed -i 's|"\.\./|"../../|g' $w/parent.json
  cfg=$w/parent.json
fi
$bin train --config $cfg
# training keeps fp32 master weights; the shipped parent is BF16 (half the bytes)
$bin slice -s $w/run/final -t $w/stage1 --budget full --precision bf16 --force -q
# rank order now, so that the elastic model (make elastic-model) and stage 2 share it
$bin rank -m $w/stage1 --calib $w/corpus.bin -o $w/ranked --tokens 65536 --force
$bin train --config models/parent-code.json
$bin slice -s $w/run-code/final -t models/parent --budget full --precision bf16 --force -q
{
  echo "# models/parent"
  echo
  echo "validation perplexity per source (ctx 256):"
  for f in build/corpus/*.valid.txt; do
    echo "- $(basename $f .valid.txt): $($bin perplexity -m models/parent -f $f --ctx 256 --max-windows 40 2>/dev/null)"
  done
} > $w/report.md
$bin eval -m models/parent --task $w/eval.jsonl --caps 0,none --budgets full -o $w/eval -q > /dev/null
{
  echo
  echo "held-out reasoning problems ($w/eval.jsonl, 300 items, greedy):"
  echo
  sed -n '3,$p' $w/eval/eval.md | grep -v "^Accuracy is meaningful"
} >> $w/report.md
$bin eval -m models/parent --task $w/code_eval.jsonl --caps 0,none --budgets full -o $w/eval-code -q > /dev/null
{
  echo
  echo "held-out code problems ($w/code_eval.jsonl, 120 items, greedy):"
  echo
  sed -n '3,$p' $w/eval-code/eval.md | grep -v "^Accuracy is meaningful"
} >> $w/report.md
cp $w/report.md models/parent/report.md
cp $w/run/loss.svg models/parent/loss.svg
cp $w/run/log.csv models/parent/train_log.csv
cp $w/run-code/loss.svg models/parent/loss-code.svg
cp $w/run-code/log.csv models/parent/train_log-code.csv
cat $w/report.md
