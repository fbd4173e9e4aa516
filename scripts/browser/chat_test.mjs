// Drive the chat page of a live `starling serve` in headless Chromium (Debian's
// chromium, through puppeteer-core) and print one JSON report of what the DOM
// showed; tests/test_chat_ui.c asserts on it.
//
//   node chat_test.mjs STARLING_BIN MODEL_DIR SCREENSHOT.png [API_KEY]
//
// Starts the server on a free loopback port, asks a question at the default
// budget, switches the budget and asks again, stops a third answer half-way,
// and saves a screenshot.
import { spawn } from "node:child_process";
import { mkdtempSync, readFileSync, existsSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import puppeteer from "puppeteer-core";

const [bin, model, shot, key] = process.argv.slice(2);
const tmp = mkdtempSync(join(tmpdir(), "starling-ui-"));
const portFile = join(tmp, "port");
const args = ["serve", "-m", model, "--port", "0", "--port-file", portFile, "-t", "2", "--max-tokens", "4000"];
if (key) args.push("--api-key", key);
const server = spawn(bin, args, { stdio: ["ignore", "ignore", "pipe"] });
let serverLog = "";
server.stderr.on("data", (d) => { serverLog += d; });
const report = { steps: [] };
let browser;
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
try {
  while (!existsSync(portFile) || !readFileSync(portFile, "utf8").trim()) {
    if (server.exitCode !== null) throw new Error("server exited: " + serverLog);
    await sleep(50);
  }
  const url = `http://127.0.0.1:${readFileSync(portFile, "utf8").trim()}/`;
  browser = await puppeteer.launch({ executablePath: process.env.CHROMIUM || "/usr/bin/chromium", headless: true,
                                     args: ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"] });
  const page = await browser.newPage();
  await page.setViewport({ width: 1100, height: 760 });
  report.dialogs = 0;
  page.on("dialog", (d) => { report.dialogs++; report.dialog = d.message(); d.accept(key || ""); }); // the API key prompt
  // For the stop step only: ban EOS and ask for many tokens, so that only the stop button can end the answer.
  let noEos = false;
  await page.setRequestInterception(true);
  page.on("request", (r) => {
    if (noEos && r.method() === "POST" && r.url().endsWith("/v1/chat/completions")) {
      const b = JSON.parse(r.postData());
      b.logit_bias = { "2": -100, "11": -100 }; // EOS and <|im_end|> (the turn end)
      b.max_tokens = 3000; // under the 4096-token context with the conversation so far
      return r.continue({ postData: JSON.stringify(b) });
    }
    r.continue();
  });
  await page.goto(url, { waitUntil: "load" });
  await page.waitForFunction(() => document.querySelectorAll("#budget option").length > 1);
  report.budgets = await page.$$eval("#budget option", (o) => o.map((x) => x.textContent));
  report.chartBars = await page.$$eval("#chart svg g", (g) => g.length);
  report.title = await page.title();

  async function ask(q) {
    const before = await page.$$eval(".msg.assistant", (m) => m.length);
    await page.focus("#input");
    await page.keyboard.type(q);
    await page.keyboard.press("Enter"); // keyboard only
    await page.waitForFunction((n) => {
      const m = document.querySelectorAll(".msg.assistant");
      return m.length > n && m[n].dataset.done;
    }, { timeout: 0 }, before);
    return page.$$eval(".msg.assistant", (m, n) => {
      const x = m[n];
      return { done: x.dataset.done, answer: x.querySelector(".answer").textContent,
               thinking: x.querySelector(".think-text").textContent, thinkingShown: !x.querySelector("details").hidden,
               thinkingOpen: x.querySelector("details").open, meta: x.querySelector(".meta").textContent,
               tokens: Number(x.querySelector(".meta").dataset.tokens || 0) };
    }, before);
  }
  report.steps.push({ budget: await page.$eval("#budget", (s) => s.value), ...(await ask("What is 47 + 38?")) });
  report.budgetSizes = await page.evaluate(() => models.map((m) => [m.id, m.starling?.total_params]));
  const smallId = report.budgetSizes.reduce((a, b) => (b[1] < a[1] ? b : a))[0]; // the smallest nested budget
  await page.select("#budget", smallId);
  report.steps.push({ budget: smallId, ...(await ask("What is 12 + 30?")) });
  await page.screenshot({ path: shot });

  // stop: wait for the first streamed text, then press Escape
  const metric = async (name) => {
    const t = await (await fetch(url + "metrics")).text();
    return Number((t.match(new RegExp("^starling_" + name + " (\\S+)", "m")) || t.match(new RegExp("^" + name + " (\\S+)", "m")) || [])[1]);
  };
  const tokensBefore = await metric("completion_tokens_total");
  noEos = true;
  await page.focus("#input");
  await page.keyboard.type("Tell me a long story about starlings.");
  const nBefore = await page.$$eval(".msg.assistant", (m) => m.length);
  await page.keyboard.press("Enter");
  await page.waitForFunction((n0) => {
    const all = [...document.querySelectorAll(".msg.assistant")];
    if (all.length <= n0) return false; // the new answer, not the last one
    const m = all.pop();
    const busy = (m.querySelector(".answer").textContent + m.querySelector(".think-text").textContent).length > 0;
    if (busy) { window.__busyLabel = document.querySelector("#send").textContent; window.__busyText = m.textContent.slice(0, 300); } // read in the same frame
    return busy;
  }, { timeout: 0, polling: "mutation" }, nBefore);
  await page.keyboard.press("Escape");
  report.sendLabelWhileBusy = await page.evaluate(() => window.__busyLabel);
  report.busyText = await page.evaluate(() => window.__busyText);
  await page.waitForFunction(() => [...document.querySelectorAll(".msg.assistant")].pop().dataset.done, { timeout: 0 });
  report.stopped = await page.$$eval(".msg.assistant", (m) => m.pop().dataset.done);
  // server side: once no sequence is active, count the tokens that request generated (EOS was banned and
  // 3000 asked for, so anything short of that means the stop cancelled it)
  while ((await metric("active_sequences")) !== 0 || (await metric("queue_depth")) !== 0) await sleep(50);
  report.tokensAfterStop = (await metric("completion_tokens_total")) - tokensBefore;
  report.stopLog = /client gone/.test(serverLog);
  // theme toggle
  const t0 = await page.evaluate(() => document.documentElement.dataset.theme);
  await page.click("#theme");
  report.themes = [t0, await page.evaluate(() => document.documentElement.dataset.theme)];
} catch (e) {
  report.error = String(e?.stack ?? e);
} finally {
  if (browser) await browser.close();
  server.kill("SIGTERM");
  await new Promise((r) => (server.exitCode !== null ? r() : server.on("exit", r)));
  rmSync(tmp, { recursive: true, force: true });
}
process.stdout.write(JSON.stringify(report) + "\n");
