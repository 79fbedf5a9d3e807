#!/usr/bin/env node
// Soak test (not CI): starts `pensieve serve` on the demo model (or PENSIEVE_SOAK_MODEL) and runs
// many clients against it for MINUTES: valid and invalid requests on every route, streams read to
// the end, streams abandoned midway, readers that stop reading, half-closed requests, oversized
// and endless headers, garbage bytes. Then the clients stop and, after the connections have had
// time to close, checks that the server is alive and still answers, that no 5xx other than the
// expected overload answers came back, and that its descriptor count and RSS are back near their
// level after warm-up.
//   node scripts/soak.mjs [MINUTES=2] [CLIENTS=24]        (from the repository root, after a build)
import { spawn } from 'node:child_process';
import { readFileSync, readdirSync } from 'node:fs';
import http from 'node:http';
import net from 'node:net';

const minutes = Number(process.argv[2] ?? 2);
const clients = Number(process.argv[3] ?? 24);
const binary = process.env.PENSIEVE_BINARY ?? 'build/pensieve';
const port = 20000 + Math.floor(Math.random() * 20000);
const args = ['serve', '--host', '127.0.0.1', '--port', String(port), '--state-dir', `/tmp/pensieve-soak-${process.pid}`,
  '--header-timeout-ms', '2000', '--idle-timeout-ms', '3000', '--max-waiting', '8', '--context', '512'];
if (process.env.PENSIEVE_SOAK_MODEL) args.push('--model', process.env.PENSIEVE_SOAK_MODEL);

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const pick = (xs) => xs[Math.floor(Math.random() * xs.length)];
const stats = { requests: 0, byStatus: {}, unexpected: [], errors: 0 };
const count = (key) => { stats.byStatus[key] = (stats.byStatus[key] ?? 0) + 1; };

const server = spawn(binary, args, { stdio: ['ignore', 'pipe', 'pipe'] });
let serverExit = null;
server.on('exit', (code, signal) => { serverExit = { code, signal }; });
server.stdout.resume();
server.stderr.resume();

function fds() { return readdirSync(`/proc/${server.pid}/fd`).length; }
function rssKb() {
  const m = readFileSync(`/proc/${server.pid}/status`, 'utf8').match(/VmRSS:\s+(\d+)/);
  return m ? Number(m[1]) : 0;
}

// One HTTP request with node's client; resolves with the status (0 on a socket error).
function request(method, path, body, { headers = {}, onResponse } = {}) {
  return new Promise((resolve) => {
    const data = body === undefined ? undefined : (typeof body === 'string' ? body : JSON.stringify(body));
    const req = http.request({ host: '127.0.0.1', port, method, path, agent: false, timeout: 60000,
      headers: { 'content-type': 'application/json', ...headers, ...(data ? { 'content-length': Buffer.byteLength(data) } : {}) } },
    (res) => {
      if (onResponse) return onResponse(res, req, resolve);
      res.resume();
      res.on('end', () => resolve(res.statusCode));
      res.on('error', () => resolve(res.statusCode));
    });
    req.on('timeout', () => req.destroy());
    req.on('error', () => resolve(0));
    if (data) req.write(data);
    req.end();
  });
}

// Raw bytes on a socket; resolves with what came back before the server closed (or `waitMs`).
function raw(bytes, { halfClose = false, waitMs = 10000 } = {}) {
  return new Promise((resolve) => {
    const sock = net.connect(port, '127.0.0.1');
    let got = '';
    const done = () => { clearTimeout(t); sock.destroy(); resolve(got); };
    const t = setTimeout(done, waitMs);
    sock.on('connect', () => { if (bytes) sock.write(bytes); if (halfClose) sock.end(); });
    sock.on('data', (d) => { got += d.toString('latin1'); });
    sock.on('close', done);
    sock.on('error', done);
  });
}

const message = (stream, maxTokens = 12) => ({ model: 'claude-3-haiku-20240307', max_tokens: maxTokens, stream,
  messages: [{ role: 'user', content: pick(['What does ephemeral mean?', 'Define library.', 'What is a cat?']) }] });
let modelId = 'pensieve-demo';  // replaced by the served model's id once it is up
const openai = (stream) => ({ model: modelId, max_tokens: 12, stream, messages: [{ role: 'user', content: 'Define tree.' }] });
const statusLine = (text) => Number((text.match(/^HTTP\/1\.1 (\d+)/) ?? [])[1] ?? 0);

const actions = {
  async message() { return request('POST', '/v1/messages', message(false)); },
  async stream() { return request('POST', '/v1/messages', message(true)); },
  async openai() { return request('POST', '/v1/chat/completions', openai(Math.random() < 0.5)); },
  async count() { return request('POST', '/v1/messages/count_tokens', message(false)); },
  async small() { return request('GET', pick(['/health', '/metrics', '/v1/models', '/v1/stats', '/nope'])); },
  async invalidJson() { return request('POST', '/v1/messages', pick(['{not json', '[[[[', '{"model":1}', '\u00ff\u00fe', ''])); },
  async invalidFields() {
    return request('POST', pick(['/v1/messages', '/v1/chat/completions']),
      { model: 'claude-x', max_tokens: pick([0, -1, 'x', 1e30]), messages: pick([[], 'x', [{ role: 'robot' }]]), tool_choice: pick([5, [], { type: 'bogus' }]) });
  },
  // A stream abandoned after its first bytes.
  async abandon() {
    return request('POST', '/v1/messages', message(true, 200), {
      onResponse: (res, req, resolve) => { res.once('data', () => { req.destroy(); resolve(res.statusCode); }); res.on('error', () => {}); },
    });
  },
  // A reader that stops reading a long stream for a while, then leaves.
  async slowReader() {
    return request('POST', '/v1/messages', message(true, 400), {
      onResponse: (res, req, resolve) => {
        res.pause();
        setTimeout(() => { req.destroy(); resolve(res.statusCode); }, 1000 + Math.random() * 4000);
        res.on('error', () => {});
      },
    });
  },
  async halfClose() {
    const body = JSON.stringify(message(false, 4));
    const got = await raw(`POST /v1/messages HTTP/1.1\r\nHost: x\r\nContent-Length: ${body.length}\r\n\r\n${body}`, { halfClose: true, waitMs: 60000 });
    return statusLine(got);
  },
  async bigHeader() { return statusLine(await raw(`GET /health HTTP/1.1\r\nX: ${'a'.repeat(pick([65534, 70000, 300000]))}\r\n\r\n`)); },
  async endlessHeader() { return statusLine(await raw('GET /health HTTP/1.1\r\nX-Slow: 1\r\n', { waitMs: 8000 })); },
  async garbage() {
    const bytes = Buffer.from(Array.from({ length: 1 + Math.floor(Math.random() * 3000) }, () => Math.floor(Math.random() * 256)));
    return statusLine(await raw(bytes, { waitMs: 5000 }));
  },
  async badCoding() {
    return statusLine(await raw('POST /v1/messages HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n'));
  },
};
// Statuses each action may end with (0: the connection ended without an answer, as meant).
const expected = {
  message: [200, 529], stream: [200, 529], openai: [200, 429], count: [200], small: [200, 404],
  invalidJson: [400], invalidFields: [400, 404], abandon: [200, 529, 0], slowReader: [200, 529, 0],
  halfClose: [200, 529], bigHeader: [200, 431], endlessHeader: [408], garbage: [400, 408, 431, 501, 0], badCoding: [501],
};
const weights = { message: 3, stream: 3, openai: 2, count: 1, small: 3, invalidJson: 2, invalidFields: 2, abandon: 2,
  slowReader: 1, halfClose: 1, bigHeader: 1, endlessHeader: 1, garbage: 2, badCoding: 1 };
const bag = Object.entries(weights).flatMap(([k, w]) => Array(w).fill(k));

async function waitReady() {
  for (let i = 0; i < 600; ++i) {
    if (serverExit) throw new Error(`server exited at start: ${JSON.stringify(serverExit)}`);
    if ((await request('GET', '/health')) === 200) {
      await request('GET', '/v1/models', undefined, {
        onResponse: (res, req, resolve) => {
          let text = '';
          res.on('data', (d) => { text += d; });
          res.on('end', () => { modelId = JSON.parse(text).data[0].id; resolve(res.statusCode); });
        },
      });
      return;
    }
    await sleep(100);
  }
  throw new Error('server never became ready');
}

async function client(until) {
  while (Date.now() < until && !serverExit) {
    const name = pick(bag);
    let status;
    try { status = await actions[name](); } catch (e) { stats.errors++; status = -1; }
    stats.requests++;
    count(`${name} ${status}`);
    if (!expected[name].includes(status)) stats.unexpected.push(`${name} -> ${status}`);
  }
}

async function main() {
  await waitReady();
  // Warm-up: one of each action, then the baseline.
  for (const name of Object.keys(actions)) await actions[name]();
  await sleep(4000);
  const base = { fds: fds(), rss: rssKb() };
  console.log(`baseline after warm-up: ${base.fds} descriptors, RSS ${(base.rss / 1024).toFixed(1)} MiB`);
  const until = Date.now() + minutes * 60000;
  let peak = { fds: 0, rss: 0 };
  const sampler = setInterval(() => {
    if (serverExit) return;
    peak = { fds: Math.max(peak.fds, fds()), rss: Math.max(peak.rss, rssKb()) };
  }, 500);
  await Promise.all(Array.from({ length: clients }, () => client(until)));
  clearInterval(sampler);
  await sleep(5000);  // idle connections close (idle_timeout 3 s), generations end
  const alive = !serverExit;
  const after = alive ? { fds: fds(), rss: rssKb() } : null;
  const health = alive ? await request('GET', '/health') : 0;
  const answer = alive ? await request('POST', '/v1/messages', message(false)) : 0;
  console.log(`${stats.requests} requests by ${clients} clients in ${minutes} min; statuses:`);
  for (const [k, v] of Object.entries(stats.byStatus).sort()) console.log(`  ${k}: ${v}`);
  console.log(`peak during the run: ${peak.fds} descriptors, RSS ${(peak.rss / 1024).toFixed(1)} MiB`);
  if (after) console.log(`after: ${after.fds} descriptors, RSS ${(after.rss / 1024).toFixed(1)} MiB`);
  const failures = [];
  if (!alive) failures.push(`the server exited: ${JSON.stringify(serverExit)}`);
  if (health !== 200 || answer !== 200) failures.push(`after the run /health gave ${health}, /v1/messages ${answer}`);
  if (stats.unexpected.length) failures.push(`${stats.unexpected.length} unexpected answers, e.g. ${stats.unexpected.slice(0, 5).join(', ')}`);
  if (after && after.fds > base.fds + 4) failures.push(`descriptors ${base.fds} -> ${after.fds}`);
  if (after && after.rss > base.rss * 1.25 + 16 * 1024) failures.push(`RSS ${base.rss} -> ${after.rss} kB`);
  server.kill('SIGTERM');
  console.log(failures.length ? `FAILED:\n  ${failures.join('\n  ')}` : 'PASSED');
  process.exitCode = failures.length ? 1 : 0;
}

main().catch((e) => { console.error(e); server.kill('SIGTERM'); process.exitCode = 1; });
