#!/bin/sh
# Rebuild the shipped elastic default model from the shipped parent
# (make elastic-model): importance ranking + permutation (starling rank),
# elastic training (starling elastify, models/elastic.json), then the BF16
# checkpoint in models/elastic/ with the elastic block.
#
#   scripts/make_elastic.sh [BIN]      (default: build/starling)
#
# Needs the token files of `make model` (build/model/*.bin); they are rebuilt
# by scripts/make_model.sh's data steps when missing. Deterministic (seeds).
set -eu
bin=${1:-build/starling}
w=build/elastic
mkdir -p $w
if [ ! -f build/model/corpus.bin ] || [ ! -f build/model/tasks.bin ] || [ ! -f build/model/val.bin ]; then
  scripts/make_model.sh "$bin" --data-only
fi
$bin rank -m models/parent --calib build/model/corpus.bin -o $w/ranked --tokens 65536 --force
$bin elastify --config models/elastic.json --force
$bin slice -s $w/run -t models/elastic --budget full --precision bf16 --force -q
cp $w/run/elastify.svg $w/run/elastify.csv $w/ranked/importance.json models/elastic/
mkdir -p models/elastic/budgets
cp $w/run/budgets/*.json models/elastic/budgets/
$bin info -m models/elastic
