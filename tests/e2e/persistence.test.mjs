// Usage survives a graceful restart and a kill -9; API keys from `pensieve keys` work and are
// stored hashed; SIGTERM lets a running stream finish cleanly.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import Anthropic from '@anthropic-ai/sdk';
import { binary, readSse, removeDir, startServer, tempStateDir } from './lib/harness.mjs';

const body = { model: 'claude-3-haiku-20240307', max_tokens: 4, messages: [{ role: 'user', content: 'Hi' }] };

async function stats(server, key) {
  const r = await fetch(`${server.url}/v1/stats`, { headers: { 'x-api-key': key } });
  assert.equal(r.status, 200);
  return r.json();
}

test('usage per key survives restart and kill -9', async () => {
  const dir = tempStateDir();
  try {
    const add = spawnSync(binary, ['keys', 'add', 'e2e', '--state-dir', dir], { encoding: 'utf8', timeout: 30_000 });
    assert.equal(add.status, 0, add.stderr);
    const key = add.stdout.trim();
    assert.match(key, /^psk-/);
    const db = readFileSync(path.join(dir, 'pensieve.db'));
    assert.equal(db.includes(Buffer.from(key)), false, 'the key itself is not stored');

    let server = await startServer({ stateDir: dir });
    let client = new Anthropic({ apiKey: key, baseURL: server.url, maxRetries: 0 });
    await client.messages.create(body);
    await client.messages.create(body);
    const before = await stats(server, key);
    assert.equal(before.total_requests, 2);
    assert.equal(before.usage_by_key.e2e.requests, 2);
    assert.equal((await server.stop()).code, 0);

    server = await startServer({ stateDir: dir });
    client = new Anthropic({ apiKey: key, baseURL: server.url, maxRetries: 0 });
    assert.equal((await stats(server, key)).total_requests, 2, 'after a graceful restart');
    await client.messages.create(body);
    await server.stop('SIGKILL');

    server = await startServer({ stateDir: dir });
    const after = await stats(server, key);
    assert.equal(after.total_requests, 3, 'after kill -9');
    assert.ok(after.total_tokens > 0);
    for (const k of ['average_tps', 'cache_hit_rate', 'peak_memory_mb', 'uptime']) assert.equal(typeof after[k], 'number', k);

    const revoke = spawnSync(binary, ['keys', 'revoke', 'e2e', '--state-dir', dir], { encoding: 'utf8', timeout: 30_000 });
    assert.equal(revoke.status, 0, revoke.stderr);
    const list = spawnSync(binary, ['keys', 'list', '--state-dir', dir], { encoding: 'utf8', timeout: 30_000 });
    assert.match(list.stdout, /e2e\s+psk-\S+\s+.*revoked/);
    assert.equal(list.stdout.includes(key), false);
    await server.stop();
  } finally {
    removeDir(dir);
  }
});

test('SIGTERM lets a running stream end cleanly', async () => {
  const server = await startServer();
  try {
    const response = await fetch(`${server.url}/v1/messages`, {
      method: 'POST', headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ ...body, max_tokens: 200, stream: true }),
    });
    assert.equal(response.status, 200);
    const eventsPromise = readSse(response);
    server.proc.kill('SIGTERM');
    const events = await eventsPromise;
    const last = events.at(-1).event;
    assert.ok(last === 'message_stop' || last === 'error', `stream ended with ${last}`);
    assert.equal((await server.stop()).code, 0);
  } finally {
    await server.stop();
    removeDir(server.stateDir);
  }
});

test('metrics are Prometheus text', async () => {
  const server = await startServer();
  try {
    await fetch(`${server.url}/v1/messages`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
    // A request is counted once its last byte is written, which may be just after the client has it.
    let text = '';
    for (const deadline = Date.now() + 30_000; Date.now() < deadline;) {
      text = await (await fetch(`${server.url}/metrics`)).text();
      if (text.includes('pensieve_requests_total{route="/v1/messages",status="200"} 1')) break;
      await new Promise((r) => setTimeout(r, 20));
    }
    for (const name of ['pensieve_requests_total{route="/v1/messages",status="200"} 1', 'pensieve_prompt_tokens_total',
      'pensieve_generated_tokens_total', 'pensieve_time_to_first_token_seconds_bucket', 'pensieve_time_between_tokens_seconds_count',
      'pensieve_request_duration_seconds_sum', 'pensieve_requests_running 0', 'pensieve_requests_waiting 0',
      'pensieve_kv_cache_usage_ratio', 'pensieve_model_load_seconds{model=', 'process_resident_memory_bytes'])
      assert.ok(text.includes(name), name);
  } finally {
    await server.stop();
    removeDir(server.stateDir);
  }
});
