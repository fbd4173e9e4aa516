#!/bin/sh
# make run: the point of one elastic checkpoint in twenty seconds.
#
#   scripts/demo.sh BIN MODEL [QUESTION ANSWER [QUESTION2 ANSWER2]]
#
# Two questions at each nested budget of MODEL, all from the one checkpoint:
# a reasoning one (an addition, written out column by column: every budget
# can do it) and one whose answer needs knowledge only the full budget holds
# (a code word from the memorised codebook, found through an addition). Then
# the elastic budget control on the second: think with the smallest budget,
# answer with the largest (reread switch). Per phase: budget, tokens, time,
# tok/s, and whether the answer is right. Both questions are held-out
# problems (starling tasks --split eval), never trained on.
set -eu
bin=$1
m=$2
q1=${3:-"What is 4738 + 2895?"}
a1=${4:-7633}
q2=${5:-"What is the code word for 51 + 358?"}
a2=${6:-"The code word for 409 is wine."}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT INT TERM

# budget names from the checkpoint, widest first (info lists them so)
budgets=$($bin info -m "$m" | awk '/^budgets/{f=1;next} f&&$1=="name"{next} f&&NF>=5&&$1!="full"{print $1} f&&NF<5{f=0}')
[ -n "$budgets" ] || { echo "demo: $m has no named budgets" >&2; exit 1; }
large=$(echo "$budgets" | head -1)
small=$(echo "$budgets" | tail -1)

# the answer after the thought, graded as starling eval grades it: a numeric
# answer is the last number, any other the whole reply (trimmed, any case)
after_think() { awk '/<\/think>/{f=1;sub(/.*<\/think>/,"")} f' "$1"; }
verdict() { # FILE WANT
  case $2 in
    *[!0-9-]*) a=$(after_think "$1" | tr '\n' ' ' | sed 's/^ *//; s/ *$//')
               lc() { echo "$1" | tr '[:upper:]' '[:lower:]'; }
               [ "$(lc "$a")" = "$(lc "$2")" ] && ok=1 || ok=0 ;;
    *) a=$(after_think "$1" | grep -o -- '-\?[0-9][0-9]*' | tail -1 || true)
       [ "$a" = "$2" ] && ok=1 || ok=0 ;;
  esac
  if [ $ok = 1 ]; then echo "$a (correct)"; else echo "${a:-none} (wrong: $2)"; fi
}
# the thought's last line: what the answer step starts from
last_thought() { awk '/<\/think>/{exit} NF{l=$0} END{print l}' "$1"; }

echo "One checkpoint ($m), $(echo "$budgets" | wc -l) nested models:"
$bin info -m "$m" | awk '/^budgets/{f=1} f&&NF>=5&&$1!="full"' | sed 's/^/  /'
n=0
for q in "$q1" "$q2"; do
  n=$((n + 1))
  if [ $n = 1 ]; then want=$a1; else want=$a2; fi
  echo
  if [ $n = 1 ]; then echo "Question 1 (reasoning: every budget writes out the addition): $q"
  else echo "Question 2 (the answer needs the codebook, which only $large was taught): $q"; fi
  echo
  for b in $budgets; do
    $bin run -m "$m" --budget "$b" --chat -p "$q" --temp 0 -n 200 > "$tmp/out" 2> "$tmp/err"
    printf '%-6s thought ends "%s", answer %s\n' "$b" "$(last_thought "$tmp/out")" "$(verdict "$tmp/out" "$want")"
    sed 's/^/         /' "$tmp/err"
  done
done
echo
echo "Question 2 again: think with $small, answer with $large (same loaded checkpoint; reread switch:"
echo "$large takes over $small's state and re-reads only the thought's last line):"
echo
$bin run -m "$m" --think-with "$small" --answer-with "$large" --switch reread --chat -p "$q2" --temp 0 -n 200 \
  > "$tmp/out" 2> "$tmp/err"
sed 's/^/  | /' "$tmp/out"
echo
sed 's/^/  /' "$tmp/err"
echo "  answer $(verdict "$tmp/out" "$a2")"
