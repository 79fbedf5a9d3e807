// OpenAI chat completions as the official openai SDK sees them.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import OpenAI from 'openai';
import { removeDir, startServer } from './lib/harness.mjs';

const KEY = 'sk-e2e-openai';
let server;
let client;
let modelId;

before(async () => {
  server = await startServer({ args: ['--api-key', KEY] });
  client = new OpenAI({ apiKey: KEY, baseURL: `${server.url}/v1`, maxRetries: 0, timeout: 60_000 });
  modelId = (await client.models.list()).data[0].id;
});
after(async () => {
  await server.stop();
  removeDir(server.stateDir);
});

const chat = (extra = {}) => ({
  model: modelId,
  messages: [{ role: 'system', content: 'Be brief.' }, { role: 'user', content: 'Hello!' }],
  max_completion_tokens: 8,
  ...extra,
});

test('models.list answers in OpenAI form', async () => {
  const page = await client.models.list();
  assert.equal(page.data[0].object, 'model');
  assert.equal(typeof page.data[0].created, 'number');
  assert.equal((await client.models.retrieve(modelId)).id, modelId);
});

test('non-streaming completion', async () => {
  const c = await client.chat.completions.create(chat());
  assert.match(c.id, /^chatcmpl-/);
  assert.equal(c.object, 'chat.completion');
  assert.equal(c.model, modelId);
  assert.equal(c.choices[0].message.role, 'assistant');
  assert.equal(typeof c.choices[0].message.content, 'string');
  assert.ok(['stop', 'length'].includes(c.choices[0].finish_reason));
  assert.equal(c.usage.total_tokens, c.usage.prompt_tokens + c.usage.completion_tokens);
  const legacy = await client.chat.completions.create(chat({ max_completion_tokens: undefined, max_tokens: 3 }));
  assert.ok(legacy.usage.completion_tokens <= 3);
});

test('streaming with usage ends with [DONE], same text as non-streaming under a seed', async () => {
  const args = chat({ temperature: 1, seed: 1234, max_completion_tokens: 16 });
  const whole = await client.chat.completions.create(args);
  const stream = await client.chat.completions.create({ ...args, stream: true, stream_options: { include_usage: true } });
  let text = '';
  let finish = null;
  let usage = null;
  let first = true;
  for await (const chunk of stream) {
    assert.equal(chunk.object, 'chat.completion.chunk');
    if (first) assert.equal(chunk.choices[0].delta.role, 'assistant');
    first = false;
    if (chunk.usage) usage = chunk.usage;
    if (chunk.choices.length) {
      text += chunk.choices[0].delta.content ?? '';
      finish = chunk.choices[0].finish_reason ?? finish;
    }
  }
  assert.equal(text, whole.choices[0].message.content, 'a fixed seed gives the same text');
  assert.equal(finish, whole.choices[0].finish_reason);
  assert.deepEqual(usage, whole.usage);
  const raw = await fetch(`${server.url}/v1/chat/completions`, {
    method: 'POST', headers: { authorization: `Bearer ${KEY}`, 'content-type': 'application/json' },
    body: JSON.stringify({ ...args, stream: true }),
  });
  assert.ok((await raw.text()).endsWith('data: [DONE]\n\n'));
});

test('stop strings end the text', async () => {
  const first = await client.chat.completions.create(chat({ temperature: 0, max_completion_tokens: 40 }));
  const text = first.choices[0].message.content;
  if (text.length < 12) return;
  const stop = text.slice(6, 9);
  const cut = await client.chat.completions.create(chat({ temperature: 0, max_completion_tokens: 40, stop: [stop] }));
  assert.equal(cut.choices[0].finish_reason, 'stop');
  assert.equal(cut.choices[0].message.content, text.slice(0, text.indexOf(stop)));
});

test('errors come in OpenAI shape with the SDK error classes', async () => {
  const check = async (promise, cls, status) => {
    try {
      await promise;
    } catch (e) {
      assert.ok(e instanceof cls, `${e.constructor.name}: ${e.message}`);
      assert.equal(e.status, status);
      assert.equal(typeof e.error.message, 'string');
      return;
    }
    assert.fail('request succeeded');
  };
  await check(client.chat.completions.create(chat({ model: 'gpt-none' })), OpenAI.NotFoundError, 404);
  await check(client.chat.completions.create(chat({ temperature: 9 })), OpenAI.BadRequestError, 400);
  await check(client.chat.completions.create(chat({ messages: [] })), OpenAI.BadRequestError, 400);
  const anon = new OpenAI({ apiKey: 'wrong', baseURL: `${server.url}/v1`, maxRetries: 0 });
  await check(anon.chat.completions.create(chat()), OpenAI.AuthenticationError, 401);
});

test('a full queue is 429 in OpenAI shape', async () => {
  const busy = await startServer({ args: ['--max-running', '1', '--max-waiting', '0'] });
  try {
    const c = new OpenAI({ apiKey: 'unused', baseURL: `${busy.url}/v1`, maxRetries: 0 });
    const controller = new AbortController();
    const long = await fetch(`${busy.url}/v1/chat/completions`, {
      method: 'POST', signal: controller.signal, headers: { 'content-type': 'application/json' },
      body: JSON.stringify(chat({ max_completion_tokens: 30000, stream: true })),
    });
    const reader = long.body.getReader();
    await reader.read();
    await assert.rejects(c.chat.completions.create(chat()), (e) => e instanceof OpenAI.RateLimitError && e.status === 429);
    controller.abort();  // the client leaves: the server stops generating and serves again
    const deadline = Date.now() + 20_000;
    for (;;) {
      try {
        await c.chat.completions.create(chat());
        break;
      } catch (e) {
        if (!(e instanceof OpenAI.RateLimitError) || Date.now() > deadline) throw e;
        await new Promise((r) => setTimeout(r, 50));
      }
    }
  } finally {
    await busy.stop();
    removeDir(busy.stateDir);
  }
});
