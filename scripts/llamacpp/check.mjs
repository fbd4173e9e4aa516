// Load GGUF files in llama.cpp (the prebuilt CPU build that node-llama-cpp
// ships) and print, per job, the tokenization of a text, the raw logits after
// the last prompt tokens and the greedy continuation of given token ids, as one
// JSON array. tests/test_gguf.c
// compares the answers with starling's.
//
//   node check.mjs JOBS.json
//   JOBS: [{"model": "a.gguf", "text": "...", "prompt": [1, 2], "n": 16, "logits_last": 4}, ...]
//
// Never downloads or builds llama.cpp (build "never", prebuilt binaries only), no GPU.
import { readFileSync } from "node:fs";
import { getLlama, LlamaLogLevel } from "node-llama-cpp";

const jobs = JSON.parse(readFileSync(process.argv[2], "utf8"));
const llama = await getLlama({ gpu: false, build: "never", usePrebuiltBinaries: true, skipDownload: true,
                               logLevel: LlamaLogLevel.error, maxThreads: 2 });
// F32 KV cache (node-llama-cpp defaults to F16, which alone moves the logits by ~1e-4)
const F32_KV = { experimentalKvCacheKeyType: "F32", experimentalKvCacheValueType: "F32" };
const results = [];
for (const q of jobs) {
  const out = { model: q.model };
  try {
    const model = await llama.loadModel({ modelPath: q.model, gpuLayers: 0 });
    out.arch = model.fileInfo?.metadata?.general?.architecture;
    if (q.text !== undefined) out.tokens = Array.from(model.tokenize(q.text, true), Number);
    if (q.prompt && q.logits_last) {
      // raw logits (no sampling options) after each of the last logits_last prompt tokens
      const ctx = await model.createContext({ contextSize: Math.max(64, q.prompt.length + 8), threads: 2,
                                              flashAttention: false, ...F32_KV });
      const k0 = q.prompt.length - q.logits_last;
      const items = q.prompt.map((t, i) => (i >= k0 ? [t, { generateNext: { logits: true } }] : t));
      const res = await ctx.getSequence().controlledEvaluate(items);
      const V = model.fileInfo.metadata[out.arch].vocab_size ?? model.tokens.length;
      out.logits = [];
      for (let i = k0; i < q.prompt.length; i++) {
        const row = new Array(V).fill(null);
        for (const [t, v] of res[i].next.logits) row[t] = v;
        out.logits.push(row);
      }
      await ctx.dispose();
    }
    if (q.prompt) {
      const n = q.n ?? 16;
      const ctx = await model.createContext({ contextSize: Math.max(64, q.prompt.length + n + 8), threads: 2,
                                              flashAttention: false, ...F32_KV });
      const got = [];
      // temperature 0 is greedy (argmax), no repeat penalty unless asked; EOS is
      // yielded and generation goes on (starling's side ignores EOS too)
      for await (const t of ctx.getSequence().evaluate(q.prompt, { temperature: 0, yieldEogToken: true })) {
        got.push(Number(t));
        if (got.length >= n) break;
      }
      out.continuation = got;
      await ctx.dispose();
    }
    await model.dispose();
  } catch (e) {
    out.error = String(e?.message ?? e);
  }
  results.push(out);
}
process.stdout.write(JSON.stringify(results) + "\n");
