// Load GGUF files in llama.cpp (the prebuilt CPU build that node-llama-cpp
// ships) and print, per job, the tokenization of a text and the greedy
// continuation of given token ids, as one JSON array. tests/test_gguf.c
// compares the answers with starling's.
//
//   node check.mjs JOBS.json     JOBS: [{"model": "a.gguf", "text": "...", "prompt": [1, 2], "n": 16}, ...]
//
// Never downloads or builds llama.cpp (build "never", prebuilt binaries only), no GPU.
import { readFileSync } from "node:fs";
import { getLlama, LlamaLogLevel } from "node-llama-cpp";

const jobs = JSON.parse(readFileSync(process.argv[2], "utf8"));
const llama = await getLlama({ gpu: false, build: "never", usePrebuiltBinaries: true, skipDownload: true,
                               logLevel: LlamaLogLevel.error, maxThreads: 2 });
const results = [];
for (const q of jobs) {
  const out = { model: q.model };
  try {
    const model = await llama.loadModel({ modelPath: q.model, gpuLayers: 0 });
    out.arch = model.fileInfo?.metadata?.general?.architecture;
    if (q.text !== undefined) out.tokens = Array.from(model.tokenize(q.text, true), Number);
    if (q.prompt) {
      const n = q.n ?? 16;
      const ctx = await model.createContext({ contextSize: Math.max(64, q.prompt.length + n + 8), threads: 2,
                                              flashAttention: false });
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
