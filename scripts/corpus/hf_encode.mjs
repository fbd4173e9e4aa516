// hf_encode.mjs — reference encoder for tests/test_data.c: encodes texts with the
// pure-JS Hugging Face tokenizers (@huggingface/tokenizers 0.2.0, installed by
// `cd scripts/tokgold && npm ci`) so a tokenizer.json trained by
// `starling tokenizer-train` can be checked against an independent reader.
//
//   node scripts/corpus/hf_encode.mjs DIR/tokenizer.json CASES.jsonl
//
// CASES.jsonl: one JSON string per line. Output: one line of space-separated ids
// per case (add_special_tokens=false; special tokens in the text are matched),
// then a line "D <JSON>" with the decoded text.
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";

const here = path.dirname(fileURLToPath(import.meta.url));
const mod = path.join(here, "../tokgold/node_modules/@huggingface/tokenizers/dist/tokenizers.mjs");
const { Tokenizer } = await import(mod);

const [tokPath, casesPath] = process.argv.slice(2);
const tj = JSON.parse(fs.readFileSync(tokPath, "utf8"));
const cfgPath = path.join(path.dirname(tokPath), "tokenizer_config.json");
const tc = fs.existsSync(cfgPath) ? JSON.parse(fs.readFileSync(cfgPath, "utf8")) : {};
const tok = new Tokenizer(tj, tc);
const out = [];
for (const line of fs.readFileSync(casesPath, "utf8").split("\n")) {
  if (!line) continue;
  const text = JSON.parse(line);
  const ids = tok.encode(text, { add_special_tokens: false }).ids;
  out.push(ids.join(" "));
  out.push("D " + JSON.stringify(ids.length ? tok.decode(ids, { clean_up_tokenization_spaces: false }) : ""));
}
fs.writeFileSync(1, out.join("\n") + "\n");
