// multiturn_ttft.mjs — time to first token over the turns of one chat, with
// the server's prompt cache and without it (docs/PERF.md, "Multi-turn prompt
// cache").
//
//   node scripts/multiturn_ttft.mjs MODEL_DIR OUT_DIR [TURNS] [RUNS]
//
// For each run: a fresh `build/starling serve` with its default prompt cache
// plays a TURNS-turn conversation (greedy, thinking off, 16 answer tokens);
// a fresh server with --cache-mb 0 gets exactly the same requests (the two
// alternate which goes first; each is warmed up by one unrelated request). Only
// one server runs at a time (the machine's cores are shared). TTFT is the
// time from sending the request to the first SSE event that carries text
// (the server's first event is an empty role chunk, sent before any work).
// The cached answers must equal the cold ones; a difference stops the run.
// Writes OUT_DIR/multiturn_ttft.tsv (every measurement) and
// OUT_DIR/multiturn_ttft.svg (median per turn), prints a markdown table.
// Loopback only; every server is killed on exit.
import { spawn } from "node:child_process";
import { mkdtempSync, readFileSync, renameSync, writeFileSync, existsSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

const [model, out, turnsArg, runsArg] = process.argv.slice(2);
if (!model || !out) {
  console.error("usage: node scripts/multiturn_ttft.mjs MODEL_DIR OUT_DIR [TURNS] [RUNS]");
  process.exit(2);
}
const TURNS = Number(turnsArg || 10), RUNS = Number(runsArg || 3);
const USERS = ["Compute 4821 + 3977.", "And 12 + 30?", "Now subtract 5.", "Say it in words.", "Add 100 to it.",
  "Is that even?", "Double it.", "What is half of that?", "Write it in Roman numerals.", "Thanks. One more: 7 + 8?"];
// A generated checkpoint has a tokenizer far smaller than its embedding
// (nano8: 272 pieces, 32768 rows) and random weights, so greedy decoding
// mostly picks ids with no text, and the conversation would carry empty
// answers. Banning every id that is not an ordinary piece (logit_bias -100;
// the special tokens too) keeps the answers 16 real tokens long.
const vocabSize = JSON.parse(readFileSync(join(model, "config.json"), "utf8")).vocab_size;
const tokj = JSON.parse(readFileSync(join(model, "tokenizer.json"), "utf8"));
const plain = new Set(Object.values(tokj.model.vocab));
for (const a of tokj.added_tokens || []) plain.delete(a.id);
const BIAS = {};
for (let id = 0; id < vocabSize; id++) if (!plain.has(id)) BIAS[id] = -100;
const servers = new Set();
process.on("exit", () => { for (const s of servers) s.kill("SIGKILL"); });

async function startServer(cacheMb) {
  const dir = mkdtempSync(join(tmpdir(), "ttft-"));
  const portFile = join(dir, "port");
  const p = spawn("build/starling", ["serve", "-m", model, "--port", "0", "--port-file", portFile, "-q",
    "--cache-mb", String(cacheMb)], { stdio: ["ignore", "ignore", "inherit"] });
  servers.add(p);
  for (let i = 0; i < 1200 && !existsSync(portFile); i++) await new Promise((r) => setTimeout(r, 100));
  if (!existsSync(portFile)) throw new Error("the server did not start within 120 s");
  await new Promise((r) => setTimeout(r, 50)); // the port file is written whole, but give it a moment
  return { proc: p, port: Number(readFileSync(portFile, "utf8").trim()) };
}

async function stopServer(s) {
  const done = new Promise((r) => s.proc.on("exit", r));
  s.proc.kill("SIGTERM");
  await done;
  servers.delete(s.proc);
}

// One streamed chat turn: TTFT (ms), the answer, usage.
async function turn(port, messages) {
  const body = JSON.stringify({ model: "starling", messages, max_tokens: 16, temperature: 0, stream: true, logit_bias: BIAS,
    stream_options: { include_usage: true }, chat_template_kwargs: { enable_thinking: false } });
  const t0 = performance.now();
  const res = await fetch(`http://127.0.0.1:${port}/v1/chat/completions`, { method: "POST", body,
    headers: { "Content-Type": "application/json" }, signal: AbortSignal.timeout(300000) });
  if (res.status !== 200) throw new Error(`HTTP ${res.status}: ${await res.text()}`);
  let ttft = null, content = "", usage = null, buf = "";
  const dec = new TextDecoder();
  for await (const part of res.body) {
    buf += dec.decode(part, { stream: true });
    let k;
    while ((k = buf.indexOf("\n\n")) >= 0) {
      const ev = buf.slice(0, k);
      buf = buf.slice(k + 2);
      if (!ev.startsWith("data: ") || ev === "data: [DONE]") continue;
      const j = JSON.parse(ev.slice(6));
      if (j.usage) usage = j.usage;
      const d = j.choices && j.choices[0] && j.choices[0].delta;
      const text = d ? (d.content || "") + (d.reasoning_content || "") : "";
      if (text && ttft === null) ttft = performance.now() - t0;
      if (d && d.content) content += d.content;
    }
  }
  return { ttft, content, usage };
}

// The first request after a start pays for faulting the mmap'd weights in:
// a plain completion (no chat template, so nothing it leaves in the cache is
// a prefix of the conversation) takes that cost before the measurement.
async function warmUp(port) {
  const res = await fetch(`http://127.0.0.1:${port}/v1/completions`, { method: "POST",
    body: JSON.stringify({ prompt: "warm up", max_tokens: 2, temperature: 0 }),
    headers: { "Content-Type": "application/json" }, signal: AbortSignal.timeout(300000) });
  if (res.status !== 200) throw new Error(`warm-up: HTTP ${res.status}`);
  await res.text();
}

const rows = []; // run, mode, turn, prompt, cached, ttft
for (let run = 1; run <= RUNS; run++) {
  let history = null;
  // alternate which server goes first, so neither always finds the page cache warmer
  for (const mode of run % 2 ? ["cached", "cold"] : ["cold", "cached"]) {
    const s = await startServer(mode === "cached" ? 256 : 0);
    await warmUp(s.port);
    const msgs = [{ role: "system", content: "Be brief." }];
    const answers = [];
    for (let t = 0; t < TURNS; t++) {
      msgs.push({ role: "user", content: USERS[t % USERS.length] });
      const r = await turn(s.port, msgs);
      if (r.ttft === null) throw new Error(`turn ${t + 1}: no text`);
      if (history && history[t] !== r.content) throw new Error(`turn ${t + 1}: the cold and cached answers differ`);
      answers.push(r.content);
      msgs.push({ role: "assistant", content: r.content });
      rows.push({ run, mode, turn: t + 1, prompt: r.usage.prompt_tokens,
        cached: r.usage.prompt_tokens_details.cached_tokens, ttft: r.ttft });
      console.error(`run ${run} ${mode} turn ${t + 1}: prompt ${r.usage.prompt_tokens} cached ` +
        `${r.usage.prompt_tokens_details.cached_tokens} ttft ${r.ttft.toFixed(0)} ms`);
    }
    history = answers;
    await stopServer(s);
  }
}

const tsv = "run\tmode\tturn\tprompt_tokens\tcached_tokens\tttft_ms\n" +
  rows.map((r) => `${r.run}\t${r.mode}\t${r.turn}\t${r.prompt}\t${r.cached}\t${r.ttft.toFixed(1)}`).join("\n") + "\n";
function atomicWrite(path, text) { writeFileSync(path + ".tmp", text); renameSync(path + ".tmp", path); }
atomicWrite(join(out, "multiturn_ttft.tsv"), tsv);

const median = (a) => { const b = [...a].sort((x, y) => x - y); const n = b.length; return n % 2 ? b[(n - 1) / 2] : (b[n / 2 - 1] + b[n / 2]) / 2; };
const stat = (mode, t, key) => rows.filter((r) => r.mode === mode && r.turn === t).map((r) => r[key]);
const series = {};
for (const mode of ["cold", "cached"]) series[mode] = Array.from({ length: TURNS }, (_, i) => median(stat(mode, i + 1, "ttft")));

// SVG: TTFT (median of the runs) per turn, cold and cached
const W = 640, H = 360, L = 60, R = 20, T = 40, B = 50;
const ymax = Math.max(...series.cold, ...series.cached) * 1.1;
const X = (t) => L + ((t - 1) / Math.max(1, TURNS - 1)) * (W - L - R), Y = (v) => H - B - (v / ymax) * (H - T - B);
let svg = `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" font-family="sans-serif" font-size="12">\n` +
  `<rect width="${W}" height="${H}" fill="white"/>\n` +
  `<text x="${W / 2}" y="20" text-anchor="middle">time to first token per turn, ${model.split("/").pop()} (median of ${RUNS} runs)</text>\n` +
  `<line x1="${L}" y1="${H - B}" x2="${W - R}" y2="${H - B}" stroke="black"/><line x1="${L}" y1="${T}" x2="${L}" y2="${H - B}" stroke="black"/>\n` +
  `<text x="${W / 2}" y="${H - 12}" text-anchor="middle">turn</text>\n` +
  `<text x="15" y="${H / 2}" transform="rotate(-90 15 ${H / 2})" text-anchor="middle">TTFT (ms)</text>\n`;
for (let t = 1; t <= TURNS; t++) svg += `<text x="${X(t)}" y="${H - B + 16}" text-anchor="middle">${t}</text>\n`;
for (let k = 0; k <= 4; k++) {
  const v = (ymax / 4) * k;
  svg += `<text x="${L - 6}" y="${Y(v) + 4}" text-anchor="end">${v.toFixed(0)}</text>` +
    `<line x1="${L}" y1="${Y(v)}" x2="${W - R}" y2="${Y(v)}" stroke="#ddd"/>\n`;
}
const colors = { cold: "#d62728", cached: "#1f77b4" };
for (const mode of ["cold", "cached"]) {
  svg += `<polyline fill="none" stroke="${colors[mode]}" stroke-width="2" points="${series[mode].map((v, i) => `${X(i + 1).toFixed(1)},${Y(v).toFixed(1)}`).join(" ")}"/>\n`;
  for (let i = 0; i < TURNS; i++) svg += `<circle cx="${X(i + 1).toFixed(1)}" cy="${Y(series[mode][i]).toFixed(1)}" r="3" fill="${colors[mode]}"/>\n`;
}
svg += `<text x="${L + 10}" y="${T + 10}" fill="${colors.cold}">cold (--cache-mb 0)</text>\n` +
  `<text x="${L + 10}" y="${T + 26}" fill="${colors.cached}">prompt cache (default)</text>\n</svg>\n`;
atomicWrite(join(out, "multiturn_ttft.svg"), svg);

// markdown table: median TTFT and the spread (min-max) over the runs
console.log("| turn | prompt tokens | cached tokens | TTFT cold, ms (min–max) | TTFT cached, ms (min–max) |");
console.log("|---:|---:|---:|---:|---:|");
for (let t = 1; t <= TURNS; t++) {
  const c = stat("cold", t, "ttft"), w = stat("cached", t, "ttft");
  console.log(`| ${t} | ${stat("cached", t, "prompt")[0]} | ${stat("cached", t, "cached").join("/")} | ` +
    `${median(c).toFixed(0)} (${Math.min(...c).toFixed(0)}–${Math.max(...c).toFixed(0)}) | ` +
    `${median(w).toFixed(0)} (${Math.min(...w).toFixed(0)}–${Math.max(...w).toFixed(0)}) |`);
}
