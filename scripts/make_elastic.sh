#!/bin/sh
# Rebuild the shipped elastic default model (make elastic-model), in two stages:
#   stage 1  models/elastic.json: elastic training of the ranked stage-1 parent
#            (routers choose the budgets' widths; 2800 steps, ~80 min)
#            -> build/elastic/stage1 (BF16)
#   stage 2  models/elastic-code.json: stage 1 continued at its own (pinned)
#            budgets with models/parent (stage 2, the code family learnt) as the
#            teacher; only the full budget is taught the codebook, the 6M and 4M
#            budgets the code problems' thinking (1500 steps, ~30 min)
#            -> models/elastic (BF16)
#
#   scripts/make_elastic.sh [BIN]      (default: build/starling)
#
# Needs build/model/ranked (the ranked stage-1 parent) and the token files of
# `make model`. Deterministic (seeds).
set -eu
bin=${1:-build/starling}
w=build/elastic
mkdir -p $w
if [ ! -f build/model/ranked/config.json ]; then
  echo "make_elastic.sh: build/model/ranked (the ranked stage-1 parent) is missing: run make model first" >&2
  exit 1
fi
if [ ! -f build/model/code.bin ] || [ ! -f build/model/code-think.bin ] || [ ! -f build/model/codebook.bin ] || [ ! -f build/model/val.bin ]; then
  scripts/make_model.sh "$bin" --data-only
fi
$bin elastify --config models/elastic.json --force
$bin slice -s $w/run -t $w/stage1 --budget full --precision bf16 --force -q
$bin elastify --config models/elastic-code.json --force
$bin slice -s $w/run-code -t models/elastic --budget full --precision bf16 --force -q
cp $w/run/elastify.svg $w/run/elastify.csv build/model/ranked/importance.json models/elastic/
cp $w/run-code/elastify.svg models/elastic/elastify-code.svg
cp $w/run-code/elastify.csv models/elastic/elastify-code.csv
mkdir -p models/elastic/budgets
cp $w/run-code/budgets/*.json models/elastic/budgets/
$bin info -m models/elastic
