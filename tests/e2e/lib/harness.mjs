// Starts `pensieve serve` on a free loopback port with a small synthetic model for the e2e tests,
// and stops it again. Every wait here is bounded, so a broken server fails a test instead of
// hanging it.
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, renameSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
export const sourceDir = path.resolve(here, '..', '..', '..');
export const binary = process.env.PENSIEVE_BINARY || path.join(sourceDir, 'build', 'pensieve');
export const testdata = process.env.PENSIEVE_TESTDATA || path.join(sourceDir, 'tests', 'data');
export const vocab = path.join(testdata, 'vocab', 'ggml-vocab-phi-3.gguf');
export const modelPath = process.env.PENSIEVE_E2E_MODEL || path.join(path.dirname(binary), 'e2e-tiny-phi3.gguf');

// Why the e2e tests cannot run here (an optional tool is absent: they are skipped), or null.
export function missingPrerequisite() {
  if (!existsSync(path.join(here, '..', 'node_modules', '@anthropic-ai', 'sdk')))
    return 'tests/e2e/node_modules is missing (run: npm ci --prefix tests/e2e)';
  if (!existsSync(binary)) return `${binary} is not built`;
  return null;
}

// Why the test data is missing (the tests then fail), or null.
export function missingTestData() {
  if (!existsSync(modelPath) && !existsSync(vocab))
    return `no test model at ${modelPath} and no vocabulary at ${vocab} (tests/data, or $PENSIEVE_TESTDATA)`;
  return null;
}

// The tiny Phi-3-shaped model with the real Phi-3 tokenizer and chat template: random weights,
// so tests assert the protocol, never the words. 32k context so a Claude Code prompt fits.
export function ensureModel() {
  if (existsSync(modelPath)) return modelPath;
  const r = spawnSync(binary, ['synth', '--arch', 'phi3', '--layers', '2', '--dim', '64', '--ff', '128',
    '--heads', '4', '--kv-heads', '4', '--ctx', '32768', '--type', 'q8_0', '--vocab', vocab,
    '--out', `${modelPath}.${process.pid}.tmp`], { encoding: 'utf8', timeout: 120_000 });
  if (r.status !== 0) throw new Error(`pensieve synth failed: ${r.stderr}`);
  renameSync(`${modelPath}.${process.pid}.tmp`, modelPath);  // atomic: parallel tests never see half a file
  return modelPath;
}

export function tempStateDir() {
  return mkdtempSync(path.join(tmpdir(), 'pensieve-e2e-'));
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// Starts the server; resolves once /health answers 200. `args` are extra serve flags; `models`
// the --model values (default: the tiny test model; [] serves the demo model and the store).
export async function startServer({ args = [], stateDir, env = {}, models } = {}) {
  const modelArgs = (models ?? [ensureModel()]).flatMap((m) => ['--model', m]);
  const dir = stateDir || tempStateDir();
  const proc = spawn(binary, ['serve', ...modelArgs, '--port', '0', '--state-dir', dir, ...args], {
    env: { ...process.env, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let output = '';
  const port = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`server did not start:\n${output}`)), 60_000);
    const onData = (d) => {
      output += d.toString();
      const m = output.match(/listening on http:\/\/[^:]+:(\d+)/);
      if (m) {
        clearTimeout(timer);
        resolve(Number(m[1]));
      }
    };
    proc.stdout.on('data', onData);
    proc.stderr.on('data', (d) => { output += d.toString(); });
    proc.on('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`server exited with ${code}:\n${output}`));
    });
  });
  const url = `http://127.0.0.1:${port}`;
  const deadline = Date.now() + 60_000;
  for (;;) {
    try {
      const r = await fetch(`${url}/health`);
      if (r.status === 200) break;
    } catch { /* not accepting yet */ }
    if (Date.now() > deadline) throw new Error(`server never became healthy:\n${output}`);
    await sleep(50);
  }
  const exited = new Promise((resolve) => proc.on('exit', (code, signal) => resolve({ code, signal })));
  return {
    url,
    port,
    stateDir: dir,
    proc,
    output: () => output,
    // SIGTERM (graceful) by default; 'SIGKILL' for the crash test. Resolves with the exit status.
    async stop(signal = 'SIGTERM') {
      if (proc.exitCode !== null || proc.signalCode !== null) return { code: proc.exitCode, signal: proc.signalCode };
      proc.kill(signal);
      const timer = setTimeout(() => proc.kill('SIGKILL'), 20_000);
      const status = await exited;
      clearTimeout(timer);
      return status;
    },
  };
}

export function removeDir(dir) {
  rmSync(dir, { recursive: true, force: true });
}

// Reads a text/event-stream body into [{event, data}] (data parsed as JSON where it is JSON).
export async function readSse(response) {
  const text = await response.text();
  const events = [];
  for (const block of text.split('\n\n')) {
    if (!block.trim()) continue;
    let event = null;
    const data = [];
    for (const line of block.split('\n')) {
      if (line.startsWith(':')) continue;
      if (line.startsWith('event: ')) event = line.slice(7);
      else if (line.startsWith('data: ')) data.push(line.slice(6));
    }
    if (event === null && data.length === 0) continue;
    const joined = data.join('\n');
    let parsed = joined;
    try { parsed = JSON.parse(joined); } catch { /* [DONE] */ }
    events.push({ event, data: parsed });
  }
  return events;
}
