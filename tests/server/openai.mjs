// openai.mjs — the official openai npm client against a running starling
// server: models.list, chat (non-streaming and streaming, which must agree for
// a greedy request), completions (both ways), and error objects surfacing as
// APIError with status / param / code.
//
//   STARLING_NPM=build/npmcache node tests/server/openai.mjs PORT
//
// Prints one "ok ..." line per check; exits non-zero on the first failure.
import { createRequire } from 'node:module';
import path from 'node:path';

const npm = path.resolve(process.env.STARLING_NPM || 'build/npmcache');
const require = createRequire(npm + '/');
const OpenAI = require('openai');
const port = process.argv[2];
const client = new OpenAI({ baseURL: `http://127.0.0.1:${port}/v1`, apiKey: process.env.STARLING_API_KEY || 'none', maxRetries: 0, timeout: 60000 });

function check(cond, what) {
  if (!cond) { console.error(`FAIL: ${what}`); process.exit(1); }
  console.log(`ok ${what}`);
}

const models = await client.models.list();
const ids = models.data.map((m) => m.id);
check(ids.includes('starling') && ids.includes('starling:S') && ids.includes('starling:full'), `models.list: ${ids.join(' ')}`);

const req = { model: 'starling:S', messages: [{ role: 'user', content: 'What is 2+3?' }], max_tokens: 24, temperature: 0, thinking_budget: 6, think_grace: 0 };
const full = await client.chat.completions.create(req);
const msg = full.choices[0].message;
check(typeof msg.content === 'string' && typeof msg.reasoning_content === 'string', 'chat: content + reasoning_content');
check(full.usage.completion_tokens > 0 && full.usage.completion_tokens <= 24 && full.usage.completion_tokens_details.reasoning_tokens >= 6,
      `chat: usage ${JSON.stringify(full.usage)}`);
check(['stop', 'length'].includes(full.choices[0].finish_reason), 'chat: finish_reason');

const stream = await client.chat.completions.create({ ...req, stream: true, stream_options: { include_usage: true } });
let content = '', reasoning = '', finish = null, usage = null;
for await (const chunk of stream) {
  if (chunk.usage) usage = chunk.usage;
  const c = chunk.choices[0];
  if (!c) continue;
  if (c.delta.content) content += c.delta.content;
  if (c.delta.reasoning_content) reasoning += c.delta.reasoning_content;
  if (c.finish_reason) finish = c.finish_reason;
}
check(content === msg.content && reasoning === msg.reasoning_content, 'chat stream == non-stream');
check(finish === full.choices[0].finish_reason && usage && usage.completion_tokens === full.usage.completion_tokens, 'chat stream: finish + usage');

const creq = { model: 'starling:M', prompt: 'Once upon a time', max_tokens: 20, temperature: 0 };
const cfull = await client.completions.create(creq);
let ctext = '';
for await (const chunk of await client.completions.create({ ...creq, stream: true })) ctext += chunk.choices[0]?.text || '';
check(typeof cfull.choices[0].text === 'string' && ctext === cfull.choices[0].text, 'completions stream == non-stream');

try {
  await client.chat.completions.create({ ...req, model: 'nope' });
  check(false, 'unknown model refused');
} catch (e) {
  check(e instanceof OpenAI.APIError && e.status === 404 && e.code === 'model_not_found', `unknown model: ${e.status} ${e.code}`);
}
try {
  await client.chat.completions.create({ ...req, bogus_field: 1 });
  check(false, 'unknown field refused');
} catch (e) {
  check(e.status === 400 && e.param === 'bogus_field' && e.type === 'invalid_request_error', `unknown field: ${e.status} ${e.param}`);
}
console.log('all ok');
