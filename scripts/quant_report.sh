#!/bin/sh
# Quality and speed of FP8 / NVFP4 against BF16 (docs/QUANT.md).
#
#   scripts/quant_report.sh [BIN]        (default build/starling)
#
# Quality: the default model (starling synth --preset default) quantized with
# `starling quantize`; per budget, mean KL(BF16 || quantized) of the next-token
# distributions and top-1 agreement over a fixed 128-token sequence.
# Speed: the ~1 GB bench model in each format, `starling bench` at full and S.
set -eu
bin=${1:-build/starling}
out=build/qreport
mkdir -p $out
[ -f $out/bf16/config.json ] || $bin synth --preset default -o $out/bf16
for p in fp8 nvfp4; do $bin quantize -m $out/bf16 -o $out/$p -p $p --force -q; done
toks=$(awk 'BEGIN { s = 7; for (i = 0; i < 128; i++) { s = (s * 1103515245 + 12345) % 2147483648; printf "%d ", 16 + s % 256 } }')
for b in full M S; do
  for p in bf16 fp8 nvfp4; do $bin logits -m $out/$p --budget $b --tokens "$toks" --out $out/$p.$b.f32; done
done
python3 - "$out" <<'PY'
import math, struct, sys
out = sys.argv[1]
V = 272
def load(p):
    d = open(p, 'rb').read()
    f = struct.unpack('<%df' % (len(d) // 4), d)
    return [f[i:i + V] for i in range(0, len(f), V)]
print('| budget | format | mean KL(bf16 ‖ q) | top-1 agreement |')
print('|---|---|---|---|')
for b in ('full', 'M', 'S'):
    ref = load('%s/bf16.%s.f32' % (out, b))
    for p in ('fp8', 'nvfp4'):
        q = load('%s/%s.%s.f32' % (out, p, b))
        kl = 0.0; agree = 0
        for r, s in zip(ref, q):
            mr, ms = max(r), max(s)
            lr = math.log(sum(math.exp(x - mr) for x in r)); ls = math.log(sum(math.exp(x - ms) for x in s))
            kl += sum(math.exp(x - mr - lr) * ((x - mr - lr) - (y - ms - ls)) for x, y in zip(r, s))
            agree += r.index(mr) == s.index(ms)
        print('| %s | %s | %.2e | %.3f |' % (b, p, kl / len(ref), agree / len(ref)))
PY
# speed on the ~1 GB bench model
[ -f build/bench-model/config.json ] || $bin synth --preset bench -o build/bench-model
for p in fp8 nvfp4; do [ -f $out/bench-$p/config.json ] || $bin quantize -m build/bench-model -o $out/bench-$p -p $p -q; done
for m in build/bench-model $out/bench-fp8 $out/bench-nvfp4; do
  echo "== $m"; $bin bench -m $m --budgets full,S --threads 2 --reps 3 2>&1 | tail -8
done
