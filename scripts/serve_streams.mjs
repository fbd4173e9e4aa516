// serve_streams.mjs — aggregate decode throughput of `starling serve` with
// N concurrent streams (docs/PERF.md, continuous batching): for each N, N
// greedy completions of --gen tokens sent at once (end-of-sequence banned, so
// every one runs its full length), tokens counted from the responses' usage,
// best of --reps. Loopback only; the server is started and stopped here.
//
//   node scripts/serve_streams.mjs MODEL_DIR [--streams 1,2,4,8] [--gen 64] [--reps 3] [--threads 2]
//        [--bin build/starling] [--model-id starling]
//
// Prints one JSON line per N: {streams, seconds, tokens, agg_tok_s}.
import { spawn } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";

const args = process.argv.slice(2);
const opt = (name, def) => {
    const i = args.indexOf(name);
    return i >= 0 ? args[i + 1] : def;
};
const dir = args[0];
if (!dir || dir.startsWith("--")) {
    console.error("usage: node scripts/serve_streams.mjs MODEL_DIR [--streams 1,2,4,8] [--gen 64] [--reps 3] [--threads 2]");
    process.exit(2);
}
const streams = opt("--streams", "1,2,4,8").split(",").map(Number);
const gen = Number(opt("--gen", 64)), reps = Number(opt("--reps", 3)), threads = opt("--threads", "2");
const bin = opt("--bin", "build/starling"), modelId = opt("--model-id", "starling");

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "serve-streams-"));
const portFile = path.join(tmp, "port");
const srv = spawn(bin, ["serve", "-m", dir, "--port", "0", "--port-file", portFile, "-t", threads, "-q",
                        "--parallel", String(Math.max(...streams)), "--cache-mb", "0"], { stdio: "inherit" });
let port = 0;
for (let i = 0; i < 600 && !port; i++) {
    await new Promise((r) => setTimeout(r, 100));
    try { port = Number(fs.readFileSync(portFile, "utf8")); } catch { /* not yet */ }
}
if (!port) { srv.kill("SIGKILL"); throw new Error("server did not start"); }

// the end-of-sequence ids of the checkpoint, banned so every stream runs --gen tokens
const cfg = JSON.parse(fs.readFileSync(path.join(dir, "config.json"), "utf8"));
const eos = [].concat(cfg.eos_token_id ?? []);
const bias = Object.fromEntries(eos.map((t) => [String(t), -100]));

const one = async (k) => {
    const r = await fetch(`http://127.0.0.1:${port}/v1/completions`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ model: modelId, prompt: `Stream ${k}: once upon a time`, max_tokens: gen,
                               temperature: 0, logit_bias: bias }),
    });
    if (!r.ok) throw new Error(`HTTP ${r.status}: ${await r.text()}`);
    return (await r.json()).usage.completion_tokens;
};

try {
    await one(0); // warm-up: page faults, caches
    for (const n of streams) {
        let best = null;
        for (let rep = 0; rep < reps; rep++) {
            const t0 = performance.now();
            const toks = await Promise.all(Array.from({ length: n }, (_, k) => one(k)));
            const s = (performance.now() - t0) / 1e3, tokens = toks.reduce((a, b) => a + b, 0);
            if (!best || tokens / s > best.agg_tok_s) best = { streams: n, seconds: s, tokens, agg_tok_s: tokens / s };
        }
        console.log(JSON.stringify(best));
    }
} finally {
    srv.kill("SIGTERM");
    fs.rmSync(tmp, { recursive: true, force: true });
}
