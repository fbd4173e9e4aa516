// llamacpp_bench.mjs — llama.cpp's prefill and decode speed on a GGUF file,
// through the prebuilt llama.cpp that the npm package node-llama-cpp ships
// (CPU only, nothing built or downloaded), for docs/PERF.md's side-by-side
// with `starling bench` on the same model, threads and workload.
//
//   node scripts/llamacpp_bench.mjs MODEL.gguf [--threads 2] [--prompt 256] [--gen 64] [--reps 3]
//        [--streams 1,4]
//
// Workload as `starling bench`: a prompt of fixed random token ids prefilled
// in one batch, then --gen greedy decode steps; best of --reps runs. With
// --streams, also N sequences decoding at once in one context (llama.cpp
// batches them, as llama-server -np N does), each after a 32-token prompt:
// aggregate tok/s. Prints one JSON line. NODE_LLAMA_CPP may point at node-llama-cpp's dist/index.js
// (default: build/llamacpp-node, where the Makefile installs it).
import path from "node:path";
import { pathToFileURL } from "node:url";

const args = process.argv.slice(2);
const opt = (name, def) => {
    const i = args.indexOf(name);
    return i >= 0 ? Number(args[i + 1]) : def;
};
const file = args[0];
if (!file || file.startsWith("--")) {
    console.error("usage: node scripts/llamacpp_bench.mjs MODEL.gguf [--threads N] [--prompt N] [--gen N] [--reps N]");
    process.exit(2);
}
const threads = opt("--threads", 2), prompt = opt("--prompt", 256), gen = opt("--gen", 64), reps = opt("--reps", 3);
const si = args.indexOf("--streams");
const streams = si >= 0 ? args[si + 1].split(",").map(Number) : [];
const mod = process.env.NODE_LLAMA_CPP ||
    path.resolve("build/llamacpp-node/node_modules/node-llama-cpp/dist/index.js");
const { getLlama } = await import(pathToFileURL(mod).href);

const llama = await getLlama({ gpu: false, build: "never", logLevel: "error", maxThreads: threads });
const model = await llama.loadModel({ modelPath: path.resolve(file), gpuLayers: 0 });
const ctx = await model.createContext({ contextSize: prompt + gen + 16, batchSize: prompt, threads });
const seq = ctx.getSequence();

// fixed random ids (splitmix64, like the bench), below the vocabulary size
const vocab = model.fileInfo?.metadata?.tokenizer?.ggml?.tokens?.length ?? 32000;
let s = 0x5eed0000n;
const next = () => {
    s = (s + 0x9e3779b97f4a7c15n) & 0xffffffffffffffffn;
    let z = s;
    z = ((z ^ (z >> 30n)) * 0xbf58476d1ce4e5b9n) & 0xffffffffffffffffn;
    z = ((z ^ (z >> 27n)) * 0x94d049bb133111ebn) & 0xffffffffffffffffn;
    return Number((z ^ (z >> 31n)) % BigInt(vocab));
};
const toks = Array.from({ length: prompt + 1 }, next);

let bestPre = 0, bestDec = 0;
for (let r = 0; r < reps + 1; r++) { // the first run warms up (page faults, caches)
    await seq.clearHistory();
    const t0 = performance.now();
    await seq.evaluateWithoutGeneratingNewTokens(toks.slice(0, prompt));
    const t1 = performance.now();
    let n = 0;
    for await (const _ of seq.evaluate([toks[prompt]], { temperature: 0 })) if (++n >= gen) break;
    const t2 = performance.now();
    if (r === 0) continue;
    bestPre = Math.max(bestPre, prompt / ((t1 - t0) / 1e3));
    bestDec = Math.max(bestDec, gen / ((t2 - t1) / 1e3));
}
await ctx.dispose();

// N sequences decoding together
const multi = {};
for (const n of streams) {
    const c = await model.createContext({ contextSize: n * (32 + gen + 16), batchSize: 512, sequences: n, threads });
    const seqs = Array.from({ length: n }, () => c.getSequence());
    let best = 0;
    for (let r = 0; r < reps + 1; r++) {
        for (let k = 0; k < n; k++) {
            await seqs[k].clearHistory();
            await seqs[k].evaluateWithoutGeneratingNewTokens(toks.slice(k, k + 32));
        }
        const t0 = performance.now();
        await Promise.all(seqs.map(async (q, k) => {
            let m = 0;
            for await (const _ of q.evaluate([toks[32 + k]], { temperature: 0 })) if (++m >= gen) break;
        }));
        const dt = (performance.now() - t0) / 1e3;
        if (r > 0) best = Math.max(best, (n * gen) / dt);
    }
    multi[n] = best;
    await c.dispose();
}
console.log(JSON.stringify({ engine: "llama.cpp (node-llama-cpp prebuilt)", model: file, threads, prompt, gen, reps,
                             prefill_tok_s: bestPre, decode_tok_s: bestDec, streams_agg_tok_s: multi }));
await model.dispose();
await llama.dispose();
