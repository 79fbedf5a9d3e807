// Claude Code, installed from npm and run as a new user would (a fresh HOME, only
// ANTHROPIC_BASE_URL and ANTHROPIC_API_KEY set), completes a prompt against the server.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { removeDir, startServer, tempStateDir, testdata } from './lib/harness.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));
const claude = path.join(here, 'node_modules', '.bin', 'claude');
const KEY = 'psk-e2e-claude-code';

function run(cmd, args, env, timeoutMs) {
  return new Promise((resolve) => {
    const p = spawn(cmd, args, { env, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    p.stdout.on('data', (d) => { stdout += d; });
    p.stderr.on('data', (d) => { stderr += d; });
    const timer = setTimeout(() => p.kill('SIGKILL'), timeoutMs);
    p.on('exit', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, stdout, stderr });
    });
  });
}

// With the model's own Phi-3 template (no tool syntax: the tools are described in the system
// prompt), and with a tool-capable one (Qwen 2.5's, which renders Claude Code's tools itself).
for (const [name, extra] of [
  ['its own template', []],
  ['a tool-capable template', ['--chat-template', path.join(testdata, 'templates', 'src', 'Qwen-Qwen2.5-7B-Instruct.jinja')]],
]) test(`claude -p completes against pensieve (${name})`, { skip: !existsSync(claude) && 'claude-code is not installed', timeout: 400_000 }, async () => {
  // A small output cap keeps random-weight answers short; the prompt is Claude Code's own (~12k
  // tokens: a 32k context holds it).
  const server = await startServer({ args: ['--api-key', KEY, '--max-output-tokens', '24', '--context', '32768', ...extra] });
  const home = tempStateDir();
  try {
    const env = {
      PATH: process.env.PATH,
      HOME: home,
      ANTHROPIC_BASE_URL: server.url,
      ANTHROPIC_API_KEY: KEY,
    };
    const r = await run(claude, ['-p', 'Say hello in one word.'], env, 360_000);
    const metrics = await (await fetch(`${server.url}/metrics`, { headers: { 'x-api-key': KEY } })).text();
    const detail = `exit ${r.code} ${r.signal ?? ''}\nstdout: ${r.stdout}\nstderr: ${r.stderr}\nmetrics:\n${metrics.split('\n').filter((l) => l.startsWith('pensieve_requests_total')).join('\n')}\nserver:\n${server.output().slice(-4000)}`;
    assert.equal(r.code, 0, detail);
    assert.match(metrics, /pensieve_requests_total\{route="\/v1\/messages",status="200"\} [1-9]/, detail);
    assert.doesNotMatch(metrics, /pensieve_requests_total\{route="\/v1\/messages",status="(4|5)\d\d"\}/, detail);
  } finally {
    await server.stop();
    removeDir(server.stateDir);
    removeDir(home);
  }
});
