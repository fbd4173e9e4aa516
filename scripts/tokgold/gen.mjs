// Golden token ids for tests/test_tokenizer.c, from the reference encoder
// @huggingface/tokenizers (pure JS port of HF tokenizers).
//
//   scripts/tokgold/fetch.sh               # tokenizer.json files -> build/tokcache/
//   (cd scripts/tokgold && npm ci)         # the reference encoder, pinned in package-lock.json
//   node scripts/tokgold/gen.mjs           # from the repo root; writes tests/data/tok/*.txt
//
// Output format, one block per case:
//   T <text as a JSON string>
//   I <ids>   encode(text, add_special_tokens=false): added tokens in the text are matched
//   P <ids>   same with the special added tokens treated as plain text (only if != I)
//   A <ids>   encode(text, add_special_tokens=true), post_processor applied (only if != I)
//   D <JSON>  decode(I ids), clean_up_tokenization_spaces=false
import { Tokenizer } from "@huggingface/tokenizers";
import fs from "node:fs";
import path from "node:path";

const CACHE = process.env.TOKCACHE ?? "build/tokcache";
const OUT = "tests/data/tok";
const SOURCES = {
  qwen3: `${CACHE}/qwen3`,
  llama3: `${CACHE}/llama3`,
  gpt35turbo: `${CACHE}/gpt35turbo`,
  llama2: `${CACHE}/llama2`,
  dense_h: "../shared/golden/dense_h/model",
  // hand-made fixture: NFKC+Lowercase+Replace, Digits, Metaspace, byte_fallback,
  // unk, added tokens with lstrip/rstrip and normalized=true, TemplateProcessing
  mini: "tests/data/tok/mini",
};

const PARAGRAPH =
  "The lighthouse keeper had kept a log for thirty-one years, and in all that time he had " +
  "never missed an entry. Some days the log said only \"Fog. Wind NE, 12 knots.\" Other days " +
  "it ran to several pages: a ship's lantern seen at 02:40, a gull with a red band on its leg, " +
  "the price of paraffin (up again, 4% since March). When the inspectors came in 1987 they " +
  "read the whole thing in one sitting, and afterwards nobody could agree on what they had " +
  "found most remarkable -- the handwriting, which never changed, or the fact that on " +
  "Christmas Day, every single year, the entry was exactly the same: 'All well. Lamp lit at " +
  "dusk.' It's easy, they said, to keep a light burning; it's harder to write down, honestly, " +
  "that nothing happened. Isn't it?\n\nHe retired the following spring. The new keeper used a " +
  "computer, naturally, and the logs became files named like log_1988-04-01.txt, each one " +
  "about 2.3 KB.";

const CASES = [
  "",
  "Hello, World!  How're you 12345?\n\n",
  "Hello world",
  " ",
  "\n",
  "     ",
  "a  b   c    d\t\te\n\n\nf \n g  \t  \n h",
  "   leading and trailing   ",
  "\t\ttabs\tand\ttabs\t",
  "\r\n windows\r\nline\r\n\r\n",
  "trailing spaces then newline   \n   next",
  "1 12 123 1234 12345 123456 1234567890123",
  "31415926535897932384626433832795028841971693993751",
  "3.14159 2,718 -42 +7 1e-10 0x1F 1_000_000",
  "Year 2024: 1st, 2nd, 3rd and 4th; version v1.2.3-rc4",
  "\u0663\u0664\u0665 \u0661\u0662 and \u2153 \u00bd \u00b2 \u00b3 \u2460\u2461",
  "Wait... what?!? (yes) [no] {maybe} <tag> \"quoted\" 'single' \u2014 em\u2013dash \u2026 \u00abguillemets\u00bb",
  "a+b=c; x*y/z % 100 & | ^ ~ ` @ # $",
  "https://example.com/path/to/page?q=1&r=two#frag",
  "foo_bar-baz.qux C++ && Rust::std::vec! :-) ;-) <3",
  "!!!!!!!!!!!!!!!!????  ............  ----------------------------------------  ================",
  "I'm you're he's she'd we'll they've can't won't Y'ALL'RE I'M HE'S",
  "'s 'S ''' ' 'tis rock'n'roll",
  "caf\u00e9 na\u00efve r\u00e9sum\u00e9 Zo\u00eb \u00c5ngstr\u00f6m fa\u00e7ade",
  "cafe\u0301 nai\u0308ve re\u0301sume\u0301 Zoe\u0308",
  "\u00c5 vs A\u030a vs \u212b (angstrom sign), \u1e9b\u0323 and q\u0307\u0323",
  "\u01c5 \ufb01 \ufb02 \u2126 \uff21\uff22\uff23 \u2460",
  "\u0130stanbul \u03a3\u038a\u03a3\u03a5\u03a6\u039f\u03a3 stra\u00dfe",
  "\u4f60\u597d\uff0c\u4e16\u754c\uff01\u8fd9\u662f\u4e00\u4e2a\u6d4b\u8bd5\u3002",
  "\u65e5\u672c\u8a9e\u306e\u30c6\u30ad\u30b9\u30c8\u3068\u30ab\u30bf\u30ab\u30ca\u3001\u3072\u3089\u304c\u306a\u3002",
  "\ud55c\uad6d\uc5b4 \ud14d\uc2a4\ud2b8\uc785\ub2c8\ub2e4.",
  "\u4e2d\u6587English\u6df7\u5408123\u6570\u5b57",
  "\u041f\u0440\u0438\u0432\u0435\u0442 \u043c\u0438\u0440! \u0393\u03b5\u03b9\u03ac \u03c3\u03bf\u03c5 \u03ba\u03cc\u03c3\u03bc\u03b5! \u0645\u0631\u062d\u0628\u0627 \u0628\u0627\u0644\u0639\u0627\u0644\u0645 \u05e9\u05dc\u05d5\u05dd \u0928\u092e\u0938\u094d\u0924\u0947",
  "\ud83d\udc4d\ud83c\udffd \ud83d\udc68\u200d\ud83d\udc69\u200d\ud83d\udc67\u200d\ud83d\udc66 \ud83c\udff3\ufe0f\u200d\ud83c\udf08 \u2764\ufe0f \ud83c\uddeb\ud83c\uddf7 \ud83d\ude00\ud83d\ude03\ud83d\ude04",
  "emoji\ud83d\ude42in\ud83d\ude09text and \ud83e\udd16\ud83e\udde0!",
  "zero\u200bwidth\u200cjoiners\u200d and \u00a0nbsp\u00a0\u00a0x \u3000ideographic space",
  "tab\there\u000bvt\u000cff\u0085nel",
  "nul\u0000byte",
  "HELLO hello HeLLo camelCaseWord snake_case_word PascalCase XMLHttpRequest",
  "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
  "def f(x):\n    return x * 2  # comment\n\n\tif (a == b) {\n\t\treturn;\n\t}\n",
  "<|im_start|>system\nYou are helpful.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n<think>\n",
  "<think>\nreasoning here\n</think>\nanswer<|im_end|>",
  "<think></think>answer",
  "<|endoftext|>",
  "text<|endoftext|>more <|endoftext|> spaced",
  "<|begin_of_text|>Hello<|eot_id|><|start_header_id|>user<|end_header_id|>",
  "<s>[INST] hi [/INST]</s>",
  "<|im_start|><|im_end|><|im_start|>",
  "<|im_start <|im_end|x <<|im_start|>> <|fim_prefix|>a<|fim_suffix|>",
  PARAGRAPH,
];

// extra cases for the mini fixture (run on every tokenizer; cheap)
CASES.push(
  "HELLO  world the thing",
  "the thing 123 and 4567",
  "[MASK] word [mask]",
  "a <SEP> b",
  "x<SEP>y",
  "  <SEP>  ",
  "caf\u00e9 \u20ac5",
  "\uff48\uff45\uff4c\uff4c\uff4f",
  "``quoted``",
  "\u00ff unknown",
  "<s>hello",
  "ending with space ",
);

// Cases where this reference is known to differ from HF tokenizers (Rust):
// its Digits pre-tokenizer uses JS \d (ASCII only), HF uses char::is_numeric.
// tests/test_tokenizer.c checks Unicode digits by hand instead.
const SKIP = {
  mini: [CASES.find((c) => c.startsWith("\u0663"))],
};

function ids(s) { return s.join(" "); }

function load(dir, dropSpecial) {
  const tj = JSON.parse(fs.readFileSync(path.join(dir, "tokenizer.json"), "utf8"));
  const cfg = path.join(dir, "tokenizer_config.json");
  const tc = fs.existsSync(cfg) ? JSON.parse(fs.readFileSync(cfg, "utf8")) : {};
  if (dropSpecial) tj.added_tokens = tj.added_tokens.filter((t) => !t.special);
  return new Tokenizer(tj, tc);
}

fs.mkdirSync(OUT, { recursive: true });
for (const [name, dir] of Object.entries(SOURCES)) {
  const tok = load(dir, false), plain = load(dir, true);
  const lines = [
    `# golden ids for ${name} (${dir}/tokenizer.json), made by scripts/tokgold/gen.mjs`,
    "# with @huggingface/tokenizers 0.2.0. Format: see gen.mjs.",
  ];
  for (const text of CASES) {
    if (SKIP[name]?.includes(text)) continue;
    const i = tok.encode(text, { add_special_tokens: false }).ids;
    const p = plain.encode(text, { add_special_tokens: false }).ids;
    const a = tok.encode(text, { add_special_tokens: true }).ids;
    const d = i.length ? tok.decode(i, { clean_up_tokenization_spaces: false }) : "";
    lines.push("T " + JSON.stringify(text));
    lines.push(("I " + ids(i)).trimEnd());
    if (ids(p) !== ids(i)) lines.push(("P " + ids(p)).trimEnd());
    if (ids(a) !== ids(i)) lines.push(("A " + ids(a)).trimEnd());
    lines.push("D " + JSON.stringify(d));
  }
  fs.writeFileSync(path.join(OUT, `${name}.txt`), lines.join("\n") + "\n");
  console.log(`${OUT}/${name}.txt: ${CASES.length} cases`);
}
