// Many clients at once through the official SDKs: 32 concurrent streams (Anthropic and OpenAI)
// each with the exact event sequence, a repeated long prompt reported as a prefix-cache read in
// usage, and a client that leaves mid-stream freeing its sequence.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import Anthropic from '@anthropic-ai/sdk';
import OpenAI from 'openai';
import { removeDir, startServer } from './lib/harness.mjs';

let server;
let anthropic;
let openai;

before(async () => {
  server = await startServer({ args: ['--max-running', '16'] });
  anthropic = new Anthropic({ apiKey: 'local', baseURL: server.url, maxRetries: 0, timeout: 120_000 });
  openai = new OpenAI({ apiKey: 'local', baseURL: `${server.url}/v1`, maxRetries: 0, timeout: 120_000 });
});
after(async () => {
  const status = await server.stop();
  assert.equal(status.code, 0, `graceful stop: ${JSON.stringify(status)}\n${server.output()}`);
  removeDir(server.stateDir);
});

async function gauge(name) {
  const text = await (await fetch(`${server.url}/metrics`)).text();
  const m = text.match(new RegExp(`^${name} ([0-9.e+-]+)$`, 'm'));
  assert.ok(m, `${name} in /metrics`);
  return Number(m[1]);
}

describe('concurrency', () => {
  test('32 concurrent Anthropic streams all complete with the exact event sequence', async () => {
    const one = async (i) => {
      const stream = anthropic.messages.stream({
        model: 'claude-3-5-sonnet-latest',
        max_tokens: 16,
        messages: [{ role: 'user', content: `Request number ${i}: say something.` }],
      });
      const types = [];
      for await (const ev of stream) types.push(ev.type);
      const msg = await stream.finalMessage();
      return { types, msg };
    };
    const results = await Promise.all(Array.from({ length: 32 }, (_, i) => one(i)));
    for (const { types, msg } of results) {
      assert.equal(types[0], 'message_start');
      assert.equal(types[1], 'content_block_start');
      assert.equal(types.at(-1), 'message_stop');
      assert.equal(types.at(-2), 'message_delta');
      assert.equal(types.at(-3), 'content_block_stop');
      for (const t of types.slice(2, -3)) assert.ok(['content_block_delta', 'ping'].includes(t), t);
      assert.ok(['end_turn', 'max_tokens'].includes(msg.stop_reason));
      assert.ok(msg.usage.output_tokens > 0 && msg.usage.output_tokens <= 16);
      if (msg.stop_reason === 'max_tokens') assert.equal(msg.usage.output_tokens, 16);
    }
  });

  test('32 concurrent OpenAI streams all complete', async () => {
    const one = async (i) => {
      const stream = await openai.chat.completions.create({
        model: 'claude-3-5-sonnet-latest',
        max_tokens: 16,
        stream: true,
        stream_options: { include_usage: true },
        messages: [{ role: 'user', content: `Request number ${i}.` }],
      });
      let finish = null;
      let usage = null;
      for await (const chunk of stream) {
        if (chunk.choices[0]?.finish_reason) finish = chunk.choices[0].finish_reason;
        if (chunk.usage) usage = chunk.usage;
      }
      return { finish, usage };
    };
    const results = await Promise.all(Array.from({ length: 32 }, (_, i) => one(i)));
    for (const { finish, usage } of results) {
      assert.ok(['stop', 'length'].includes(finish), String(finish));
      assert.ok(usage.completion_tokens > 0 && usage.completion_tokens <= 16);
    }
  });
});

describe('prefix cache', () => {
  const preamble = 'You are a careful assistant. '.repeat(120);
  const ask = (q) => [{ role: 'user', content: `${preamble}\n${q}` }];

  test('a repeated long prompt is read from the cache and reported in usage', async () => {
    const req = {
      model: 'claude-3-5-sonnet-latest',
      max_tokens: 4,
      messages: ask('First question.'),
    };
    const first = await anthropic.messages.create(req);
    assert.equal(first.usage.cache_read_input_tokens, 0);
    const second = await anthropic.messages.create({ ...req, messages: ask('Second question.') });
    const total = second.usage.input_tokens + second.usage.cache_read_input_tokens;
    assert.ok(second.usage.cache_read_input_tokens >= 400, JSON.stringify(second.usage));
    assert.ok(second.usage.cache_read_input_tokens < total);
    // count_tokens counts the whole prompt.
    const count = await anthropic.messages.countTokens({ model: req.model, messages: ask('Second question.') });
    assert.equal(count.input_tokens, total);

    const o = await openai.chat.completions.create({
      model: 'claude-3-5-sonnet-latest',
      max_tokens: 4,
      messages: ask('Third question.'),
    });
    assert.ok(o.usage.prompt_tokens_details.cached_tokens >= 400, JSON.stringify(o.usage));

    const stats = await (await fetch(`${server.url}/v1/stats`)).json();
    assert.ok(stats.cache_hit_rate > 0 && stats.cache_hit_rate < 1, JSON.stringify(stats));
    assert.ok((await gauge('pensieve_prefix_cache_hit_tokens_total')) >= 800);
  });
});

describe('disconnects', () => {
  test('a client that leaves mid-stream frees its sequence', async () => {
    const controller = new AbortController();
    const stream = anthropic.messages.stream({
      model: 'claude-3-5-sonnet-latest',
      max_tokens: 20000,
      messages: [{ role: 'user', content: 'Write for a long time.' }],
    }, { signal: controller.signal });
    let deltas = 0;
    try {
      for await (const ev of stream) {
        if (ev.type === 'content_block_delta' && ++deltas === 3) {
          assert.equal(await gauge('pensieve_requests_running'), 1);
          controller.abort();
        }
      }
    } catch { /* the abort ends the iteration */ }
    const deadline = Date.now() + 30_000;
    while ((await gauge('pensieve_requests_running')) !== 0) {
      assert.ok(Date.now() < deadline, 'the sequence was never freed');
      await new Promise((r) => setTimeout(r, 20));
    }
    assert.equal(await gauge('pensieve_kv_cache_usage_ratio'), 0);
  });
});
