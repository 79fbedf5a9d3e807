// Many models served by name from the model store: three models with room for two, requests
// A, B, C, A all answered and the unloads seen in /metrics and GET /v1/models?loaded=true (what
// `pensieve ps` shows); keep_alive per request; a truncated model that fails alone; and a server
// with no --model serving the demo model and every model of the store.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { copyFileSync, mkdirSync, mkdtempSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { binary, ensureModel, removeDir, startServer } from './lib/harness.mjs';

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
let store;

// A store entry as `pensieve pull` writes it (hub/model_store.h): ROOT/OWNER/NAME/main/manifest.json.
function addToStore(repo, quant, bytes) {
  const dir = path.join(store, ...repo.split('/'), 'main');
  mkdirSync(dir, { recursive: true });
  const file = `${repo.split('/')[1]}-${quant}.gguf`;
  writeFileSync(path.join(dir, file), bytes);
  const name = `${repo}:${quant}`;
  const manifest = {
    repo, revision: 'main',
    models: [{ name, repo, revision: 'main', selector: quant, quant, source: 'http://127.0.0.1:1', entry: file,
      pulled_at: '2026-11-26T16:00:00Z', files: [{ path: file, size: bytes.length, sha256: '' }] }],
  };
  writeFileSync(path.join(dir, 'manifest.json'), JSON.stringify(manifest));
  return name;
}

before(() => {
  store = mkdtempSync(path.join(tmpdir(), 'pensieve-store-'));
  const model = readFileSync(ensureModel());
  for (const r of ['acme/a', 'acme/b', 'acme/c']) addToStore(r, 'Q8_0', model);
  addToStore('acme/broken', 'Q8_0', model.subarray(0, Math.floor(model.length / 3)));
});
after(() => removeDir(store));

async function ask(server, model, extra = {}) {
  const r = await fetch(`${server.url}/v1/messages`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', 'x-api-key': 'local' },
    body: JSON.stringify({ model, max_tokens: 4, messages: [{ role: 'user', content: 'hi' }], ...extra }),
  });
  return { status: r.status, body: await r.json() };
}

async function loaded(server) {
  const r = await fetch(`${server.url}/v1/models?loaded=true`);
  assert.equal(r.status, 200);
  return (await r.json()).data;
}

async function metric(server, re) {
  const text = await (await fetch(`${server.url}/metrics`)).text();
  const m = text.match(re);
  return m ? Number(m[1]) : 0;
}

describe('LRU over three models with room for two', () => {
  let server;
  const env = () => ({ PENSIEVE_MODELS: store });
  before(async () => {
    server = await startServer({ models: ['acme/a:Q8_0', 'acme/b:Q8_0', 'acme/c:Q8_0', 'acme/broken:Q8_0'],
      args: ['--max-loaded-models', '2'], env: env() });
  });
  after(async () => {
    const status = await server.stop();
    assert.equal(status.code, 0, server.output());
    removeDir(server.stateDir);
  });

  test('A, B, C, A are all answered; A then B are unloaded', async () => {
    const names = (await loaded(server)).map((m) => m.id).sort();
    assert.deepEqual(names, ['acme/a:Q8_0', 'acme/b:Q8_0'], 'the first two configured models load at start');
    const seen = [];
    for (const m of ['acme/a:Q8_0', 'acme/b:Q8_0', 'acme/c:Q8_0', 'acme/a:Q8_0']) {
      const r = await ask(server, m);
      assert.equal(r.status, 200, JSON.stringify(r.body));
      assert.equal(r.body.model, m);
      seen.push((await loaded(server)).map((x) => x.id).sort().join(','));
    }
    assert.deepEqual(seen, ['acme/a:Q8_0,acme/b:Q8_0', 'acme/a:Q8_0,acme/b:Q8_0', 'acme/b:Q8_0,acme/c:Q8_0',
      'acme/a:Q8_0,acme/c:Q8_0']);
    assert.equal(await metric(server, /^pensieve_model_unloads_total\{model="acme\/a:Q8_0",reason="lru"\} (\d+)$/m), 1);
    assert.equal(await metric(server, /^pensieve_model_unloads_total\{model="acme\/b:Q8_0",reason="lru"\} (\d+)$/m), 1);
    assert.equal(await metric(server, /^pensieve_model_unloads_total\{model="acme\/c:Q8_0",reason="lru"\} (\d+)$/m), 0);
    assert.equal(await metric(server, /^pensieve_model_loads_total\{model="acme\/a:Q8_0"\} (\d+)$/m), 2);
    assert.equal(await metric(server, /^pensieve_models_loaded (\d+)$/m), 2);
    const all = (await (await fetch(`${server.url}/v1/models`)).json()).data;
    assert.equal(all.length, 4, 'every servable model is listed, loaded or not');
    assert.deepEqual(all.filter((m) => m.loaded).map((m) => m.id).sort(), ['acme/a:Q8_0', 'acme/c:Q8_0']);
  });

  test('pensieve ps shows the loaded models', () => {
    const r = spawnSync(binary, ['ps', '--url', server.url], { encoding: 'utf8', timeout: 30_000 });
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stdout, /acme\/a:Q8_0/);
    assert.match(r.stdout, /acme\/c:Q8_0/);
    assert.doesNotMatch(r.stdout, /acme\/b:Q8_0/);
  });

  test('keep_alive 0 unloads after the request; "1s" after a second idle', async () => {
    let r = await ask(server, 'acme/c:Q8_0', { keep_alive: 0 });
    assert.equal(r.status, 200, JSON.stringify(r.body));
    await sleep(100);
    assert.ok(!(await loaded(server)).some((m) => m.id === 'acme/c:Q8_0'));
    r = await ask(server, 'acme/b:Q8_0', { keep_alive: '1s' });
    assert.equal(r.status, 200, JSON.stringify(r.body));
    const b = (await loaded(server)).find((m) => m.id === 'acme/b:Q8_0');
    assert.ok(b && typeof b.expires_at === 'string' && b.memory_bytes > 0, JSON.stringify(b));
    await sleep(2500);
    assert.ok(!(await loaded(server)).some((m) => m.id === 'acme/b:Q8_0'));
    assert.ok(await metric(server, /^pensieve_model_unloads_total\{model="acme\/b:Q8_0",reason="expired"\} (\d+)$/m) >= 1);
    r = await ask(server, 'acme/a:Q8_0', { keep_alive: 'soon' });
    assert.equal(r.status, 400);
  });

  test('a truncated model fails with its file named; the others keep serving', async () => {
    const r = await ask(server, 'acme/broken:Q8_0');
    assert.equal(r.status, 500);
    assert.match(r.body.error.message, /broken-Q8_0\.gguf/);
    const ok = await ask(server, 'acme/a:Q8_0');
    assert.equal(ok.status, 200);
  });
});

describe('no --model: the demo model and the whole store', () => {
  let server;
  before(async () => {
    server = await startServer({ models: [], env: { PENSIEVE_MODELS: store } });
  });
  after(async () => {
    await server.stop();
    removeDir(server.stateDir);
  });

  test('every store model is listed and loads on first use', async () => {
    const all = (await (await fetch(`${server.url}/v1/models`)).json()).data.map((m) => m.id);
    assert.equal(all[0], 'pensieve-demo');
    for (const n of ['acme/a:Q8_0', 'acme/b:Q8_0', 'acme/c:Q8_0', 'acme/broken:Q8_0']) assert.ok(all.includes(n), n);
    assert.deepEqual((await loaded(server)).map((m) => m.id), ['pensieve-demo']);
    const r = await ask(server, 'acme/b:Q8_0');
    assert.equal(r.status, 200, JSON.stringify(r.body));
    assert.deepEqual((await loaded(server)).map((m) => m.id).sort(), ['acme/b:Q8_0', 'pensieve-demo']);
  });
});
