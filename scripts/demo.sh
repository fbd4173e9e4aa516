#!/bin/sh
# make run: the point of one elastic checkpoint in twenty seconds.
#
#   scripts/demo.sh BIN MODEL [QUESTION ANSWER]
#
# One reasoning question at each nested budget of MODEL (loaded from the one
# checkpoint each time; no other file), then the elastic budget control: think
# with the smallest budget, answer with the largest. Per phase: budget, tokens,
# time, tok/s, and whether the answer is right.
set -eu
bin=$1
m=$2
q=${3:-"What is 4738 + 2895?"}
want=${4:-7633}
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
case $want in
  *[!0-9-]*) answer_of() { after_think "$1" | tr '\n' ' ' | sed 's/^ *//; s/ *$//'; }
             same() { [ "$(echo "$1" | tr '[:upper:]' '[:lower:]')" = "$(echo "$2" | tr '[:upper:]' '[:lower:]')" ]; } ;;
  *) answer_of() { after_think "$1" | grep -o -- '-\?[0-9][0-9]*' | tail -1 || true; }
     same() { [ "$1" = "$2" ]; } ;;
esac
verdict() { a=$(answer_of "$1"); if same "$a" "$want"; then echo "$a (correct)"; else echo "${a:-none} (wrong: $want)"; fi; }

echo "One checkpoint ($m), $(echo "$budgets" | wc -l) nested models:"
$bin info -m "$m" | awk '/^budgets/{f=1} f&&NF>=5&&$1!="full"' | sed 's/^/  /'
echo
echo "Question: $q"
echo
for b in $budgets; do
  $bin run -m "$m" --budget "$b" --chat -p "$q" --temp 0 -n 200 > "$tmp/out" 2> "$tmp/err"
  printf '%-6s answer %s\n' "$b" "$(verdict "$tmp/out")"
  sed 's/^/         /' "$tmp/err"
done
echo
echo "Think with $small, answer with $large (same loaded checkpoint, exact switch):"
echo
$bin run -m "$m" --think-with "$small" --answer-with "$large" --chat -p "$q" --temp 0 -n 200 > "$tmp/out" 2> "$tmp/err"
sed 's/^/  | /' "$tmp/out"
echo
sed 's/^/  /' "$tmp/err"
echo "  answer $(verdict "$tmp/out")"
