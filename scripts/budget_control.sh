#!/bin/sh
# docs/RESULTS.md, "Elastic budget control": every budget of the elastic
# default model with thinking caps 0 / 32 / 64 / 128 / none against
# think-small -> answer-large (and the reverse) in the three switch modes, on
# fresh held-out problems (`starling tasks --split eval`, seed SEED, never
# used for tuning): ITEMS of the mix (add, sort, compare: the answer copies
# the trace's last line) and CODE_ITEMS of the code family (the answer needs
# a memorised fact the trace does not hold), plus the parent with and
# without thinking.
#
#   scripts/budget_control.sh [BIN]          (after make elastic-model; ~20 min on 2 cores)
#   ITEMS=240 CODE_ITEMS=120 SEED=17 THREADS=2 REPEAT=2 scripts/budget_control.sh
#
# Latency is the best of REPEAT runs per item and configuration, items in
# turn with every configuration on each (starling eval --repeat), so the
# drift of a shared machine does not favour the configurations that ran in
# a quiet spell.
#
# Writes build/budget/{eval.md,eval.tsv,eval.svg} and build/budget/parent/.
set -eu
bin=${1:-build/starling}
items=${ITEMS:-240}
code_items=${CODE_ITEMS:-120}
seed=${SEED:-5}
threads=${THREADS:-2}
repeat=${REPEAT:-2}
w=build/budget
mkdir -p $w
$bin tasks --kind mix -n "$items" --seed "$seed" --digits 2-4 --split eval -o $w/task.jsonl
$bin tasks --kind code -n "$code_items" --seed "$seed" --split eval >> $w/task.jsonl
$bin eval -m models/elastic --task $w/task.jsonl --caps 0,32,64,128,none \
  --pairs 4M:9.5M,6M:9.5M,4M:6M,9.5M:4M,9.5M:6M --pair-cap none -n 256 -t "$threads" --repeat "$repeat" -o $w -q
$bin eval -m models/parent --task $w/task.jsonl --caps 0,none --budgets full --pairs '' -n 256 -t "$threads" \
  --repeat "$repeat" -o $w/parent -q > /dev/null
echo
echo "parent (models/parent) on the same items:"
sed -n '/^| config/,/^$/p' $w/parent/eval.md

# Paired: per item, does the switch get right what its thinking budget alone
# gets wrong (win), or the reverse (loss)? Per kind and overall, with the
# two-sided sign (McNemar exact) test's p-value over the discordant items.
awk -F'\t' '
  function p_sign(w, l,   n, k, i, c, p, t) { # two-sided exact binomial(n, 1/2) tail
    n = w + l; if (n == 0) return 1; k = w < l ? w : l; c = 1; p = 0
    for (i = 0; i <= k; i++) { p += c; c = c * (n - i) / (i + 1) }
    t = 2 * p / 2 ^ n; return t > 1 ? 1 : t }
  NR == 1 { next }
  { ok[$1, $2] = $4; kind[$2] = $3; cfg[$1] = 1; if ($2 + 1 > n) n = $2 + 1 }
  END {
    print "| switch | against | kind | items | switch right | alone right | wins | losses | p (sign test) |"
    print "|---|---|---|---|---|---|---|---|---|"
    for (c in cfg) {
      if (c !~ /->/ ) continue
      split(c, a, "->"); split(a[2], b, " "); alone = a[1] ", no cap"; big = b[1] ", no cap"
      for (q = 0; q < 2; q++) {
        other = q ? big : alone
        if (!((other, 0) in ok)) continue
        delete W; delete L; delete N; delete R1; delete R2
        for (i = 0; i < n; i++) for (g = 0; g < 2; g++) {
          k = g ? "all" : kind[i]
          N[k]++; R1[k] += ok[c, i]; R2[k] += ok[other, i]
          W[k] += ok[c, i] && !ok[other, i]; L[k] += !ok[c, i] && ok[other, i]
        }
        for (k in N) printf "| %s | %s | %s | %d | %d | %d | %d | %d | %.3g |\n", c, other, k, N[k], R1[k], R2[k], W[k], L[k], p_sign(W[k], L[k])
      }
    }
  }' $w/items.tsv | { read -r h1; read -r h2; echo "$h1"; echo "$h2"; sort; } > $w/paired.md
echo
echo "paired, per item ($w/paired.md):"
cat $w/paired.md
