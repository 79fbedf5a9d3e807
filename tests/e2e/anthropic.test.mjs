// The Anthropic Messages API as the official TypeScript SDK sees it: create, stream (exact event
// sequence and fields), count_tokens, models, each error class, both auth headers.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import Anthropic from '@anthropic-ai/sdk';
import { readSse, removeDir, startServer } from './lib/harness.mjs';

const KEY = 'psk-e2e-anthropic-key';
let server;
let client;

before(async () => {
  // The output cap keeps the clamped 128000-token request short (random weights rarely stop).
  server = await startServer({ args: ['--api-key', KEY, '--max-output-tokens', '200'] });
  client = new Anthropic({ apiKey: KEY, baseURL: server.url, maxRetries: 0, timeout: 60_000 });
});
after(async () => {
  const status = await server.stop();
  assert.equal(status.code, 0, `graceful stop: ${JSON.stringify(status)}\n${server.output()}`);
  removeDir(server.stateDir);
});

const hello = (extra = {}) => ({
  model: 'claude-3-sonnet-20240229',
  max_tokens: 12,
  messages: [{ role: 'user', content: 'Hello!' }],
  ...extra,
});

function assertUsage(usage) {
  for (const k of ['input_tokens', 'output_tokens', 'cache_creation_input_tokens', 'cache_read_input_tokens'])
    assert.equal(typeof usage[k], 'number', `usage.${k}`);
}

describe('messages.create', () => {
  test('returns a complete message with a request-id header', async () => {
    const { data: msg, response } = await client.messages.create(hello()).withResponse();
    assert.match(response.headers.get('request-id'), /^req_/);
    assert.match(msg.id, /^msg_/);
    assert.equal(msg.type, 'message');
    assert.equal(msg.role, 'assistant');
    assert.equal(msg.model, 'claude-3-sonnet-20240229');
    assert.equal(msg.content.length, 1);
    assert.equal(msg.content[0].type, 'text');
    assert.equal(typeof msg.content[0].text, 'string');
    assert.ok(['end_turn', 'max_tokens'].includes(msg.stop_reason), msg.stop_reason);
    assert.equal(msg.stop_sequence, null);
    assertUsage(msg.usage);
    assert.ok(msg.usage.input_tokens > 0);
    assert.ok(msg.usage.output_tokens > 0 && msg.usage.output_tokens <= 12);
    if (msg.stop_reason === 'max_tokens') assert.equal(msg.usage.output_tokens, 12);
  });

  test('count_tokens counts exactly what generation sees', async () => {
    const req = hello({ system: [{ type: 'text', text: 'Be brief.' }] });
    const msg = await client.messages.create(req);
    const { model, messages, system } = req;
    const count = await client.messages.countTokens({ model, messages, system });
    assert.equal(count.input_tokens, msg.usage.input_tokens);
    const longer = await client.messages.countTokens({ model, messages: [{ role: 'user', content: 'Hello! '.repeat(20) }] });
    assert.ok(longer.input_tokens > count.input_tokens);
  });

  test('stop_sequences stop the answer and name the sequence', async () => {
    const first = await client.messages.create(hello({ temperature: 0, max_tokens: 40 }));
    const text = first.content[0].text;
    if (text.length < 12) return;  // too short to cut: nothing to check with random weights
    const stop = text.slice(6, 9);
    const cut = await client.messages.create(hello({ temperature: 0, max_tokens: 40, stop_sequences: [stop] }));
    assert.equal(cut.stop_reason, 'stop_sequence');
    assert.equal(cut.stop_sequence, stop);
    assert.equal(cut.content[0].text, text.slice(0, text.indexOf(stop)));
  });

  test('system entries inside messages, tools, and a huge max_tokens are accepted', async () => {
    const msg = await client.messages.create({
      model: 'claude-sonnet-4-5',
      max_tokens: 128000,
      system: [{ type: 'text', text: 'x-anthropic-billing-header: cc_version=1' },
               { type: 'text', text: 'You are a CLI.', cache_control: { type: 'ephemeral' } }],
      messages: [{ role: 'user', content: [{ type: 'text', text: 'hi', cache_control: { type: 'ephemeral' } }] },
                 { role: 'system', content: 'Reminder: be short.' }],
      tools: [{ name: 'Bash', description: 'Run a command',
                input_schema: { type: 'object', properties: { command: { type: 'string' } }, required: ['command'] } }],
      tool_choice: { type: 'auto' },
      thinking: { type: 'adaptive' },
      metadata: { user_id: 'user_e2e' },
      temperature: 1,
    }, { query: { beta: 'true' }, headers: { 'anthropic-beta': 'claude-code-20250219,interleaved-thinking-2025-05-14' } });
    assert.equal(msg.type, 'message');
    assert.equal(msg.model, 'claude-sonnet-4-5');
  });
});

describe('streaming', () => {
  test('raw events come in the documented order with every field', async () => {
    const response = await fetch(`${server.url}/v1/messages`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'x-api-key': KEY, 'anthropic-version': '2023-06-01' },
      body: JSON.stringify(hello({ stream: true, temperature: 0 })),
    });
    assert.equal(response.status, 200);
    assert.equal(response.headers.get('content-type'), 'text/event-stream');
    const events = await readSse(response);
    for (const e of events) assert.equal(e.data.type, e.event, 'data.type repeats the event name');
    const names = events.map((e) => e.event).filter((n, i) => n !== 'ping' || i === 2);
    const deltas = names.filter((n) => n === 'content_block_delta').length;
    assert.ok(deltas >= 1);
    assert.deepEqual(names, ['message_start', 'content_block_start', 'ping',
      ...Array(deltas).fill('content_block_delta'), 'content_block_stop', 'message_delta', 'message_stop']);
    const start = events[0].data.message;
    assert.match(start.id, /^msg_/);
    assert.deepEqual(start.content, []);
    assert.equal(start.stop_reason, null);
    assert.ok(start.usage.input_tokens > 0, 'message_start carries usage.input_tokens');
    assert.deepEqual(events[1].data.content_block, { type: 'text', text: '' });
    assert.equal(events[1].data.index, 0);
    const delta = events.find((e) => e.event === 'content_block_delta').data;
    assert.equal(delta.index, 0);
    assert.equal(delta.delta.type, 'text_delta');
    const md = events.find((e) => e.event === 'message_delta').data;
    assert.ok(['end_turn', 'max_tokens'].includes(md.delta.stop_reason));
    assert.equal(md.delta.stop_sequence, null);
    assert.ok(md.usage.output_tokens > 0);
    // Greedy decoding: the streamed text is the text of the same request without streaming.
    const text = events.filter((e) => e.event === 'content_block_delta').map((e) => e.data.delta.text).join('');
    const whole = await client.messages.create(hello({ temperature: 0 }));
    assert.equal(text, whole.content[0].text);
    assert.equal(md.usage.output_tokens, whole.usage.output_tokens);
  });

  test('the SDK stream helper assembles the final message', async () => {
    const stream = client.messages.stream(hello({ temperature: 0 }));
    const seen = [];
    let text = '';
    stream.on('text', (t) => { text += t; });
    for await (const event of stream) seen.push(event.type);
    const final = await stream.finalMessage();
    assert.equal(seen[0], 'message_start');
    assert.equal(seen.at(-1), 'message_stop');
    assert.equal(final.content[0].text, text);
    assert.ok(final.usage.input_tokens > 0);
    assert.ok(final.usage.output_tokens > 0);
  });

  test('create({stream: true}) yields typed events', async () => {
    const stream = await client.messages.create(hello({ stream: true }));
    const types = [];
    for await (const e of stream) types.push(e.type);
    assert.equal(types[0], 'message_start');
    assert.deepEqual(types.slice(-3), ['content_block_stop', 'message_delta', 'message_stop']);
  });
});

describe('models', () => {
  test('list and retrieve', async () => {
    const page = await client.models.list();
    assert.ok(page.data.length >= 1);
    const m = page.data[0];
    assert.equal(m.type, 'model');
    assert.equal(typeof m.display_name, 'string');
    assert.ok(!Number.isNaN(Date.parse(m.created_at)));
    assert.equal(page.has_more, false);
    assert.equal(page.first_id, m.id);
    assert.equal(page.last_id, page.data.at(-1).id);
    assert.equal((await client.models.retrieve(m.id)).id, m.id);
    assert.equal((await client.models.retrieve('claude-3-haiku-20240307')).id, m.id, 'claude-* maps to the default');
    await assert.rejects(client.models.retrieve('no-such-model'), Anthropic.NotFoundError);
  });
});

describe('errors', () => {
  const expectError = async (promise, cls, status, type) => {
    try {
      await promise;
    } catch (e) {
      assert.ok(e instanceof cls, `${e.constructor.name}: ${e.message}`);
      assert.equal(e.status, status);
      assert.equal(e.error.type, 'error');
      assert.equal(e.error.error.type, type);
      assert.match(e.requestID ?? e.request_id ?? e.headers?.get('request-id'), /^req_/);
      return e;
    }
    assert.fail('request succeeded');
  };

  test('invalid requests are 400 invalid_request_error', async () => {
    const bad = [
      { model: 'claude-3', messages: [{ role: 'user', content: 'x' }] },  // no max_tokens
      hello({ max_tokens: 0 }),
      hello({ messages: [] }),
      hello({ temperature: 3 }),
      hello({ top_k: -1 }),
      hello({ messages: [{ role: 'tool', content: 'x' }] }),
      hello({ messages: [{ role: 'user', content: [{ type: 'image', source: { type: 'base64', media_type: 'image/png', data: 'AA==' } }] }] }),
      hello({ messages: [{ role: 'user', content: 'word '.repeat(40000) }] }),  // longer than the context
    ];
    for (const body of bad) await expectError(client.messages.create(body), Anthropic.BadRequestError, 400, 'invalid_request_error');
    const e = await expectError(client.messages.create(bad.at(-1)), Anthropic.BadRequestError, 400, 'invalid_request_error');
    assert.match(e.error.error.message, /\d+ tokens.*context.*\d+ tokens/);
    const raw = await fetch(`${server.url}/v1/messages`, { method: 'POST', headers: { 'x-api-key': KEY }, body: '{"model": ' });
    assert.equal(raw.status, 400);
    assert.equal((await raw.json()).error.type, 'invalid_request_error');
  });

  test('unknown model is 404 not_found_error; unknown route 404; wrong method 405', async () => {
    await expectError(client.messages.create(hello({ model: 'gpt-nothing' })), Anthropic.NotFoundError, 404, 'not_found_error');
    const r = await fetch(`${server.url}/v1/nothing`, { headers: { 'x-api-key': KEY } });
    assert.equal(r.status, 404);
    assert.equal((await r.json()).error.type, 'not_found_error');
    const m = await fetch(`${server.url}/v1/messages`, { method: 'GET', headers: { 'x-api-key': KEY } });
    assert.equal(m.status, 405);
    assert.equal((await m.json()).type, 'error');
  });

  test('both auth headers work; a wrong or missing key is 401 authentication_error', async () => {
    const bearer = new Anthropic({ apiKey: null, authToken: KEY, baseURL: server.url, maxRetries: 0 });
    assert.equal((await bearer.messages.create(hello())).type, 'message');
    const wrong = new Anthropic({ apiKey: 'nope', baseURL: server.url, maxRetries: 0 });
    await expectError(wrong.messages.create(hello()), Anthropic.AuthenticationError, 401, 'authentication_error');
    const wrongBearer = new Anthropic({ apiKey: null, authToken: 'nope', baseURL: server.url, maxRetries: 0 });
    await expectError(wrongBearer.models.list(), Anthropic.AuthenticationError, 401, 'authentication_error');
    assert.equal((await fetch(`${server.url}/health`)).status, 200, '/health needs no key');
    assert.equal((await fetch(`${server.url}/metrics`)).status, 401);
  });

  test('body over the limit is 413, a full queue 529, a timeout 504', async () => {
    // A context far beyond what can be generated before the timeout, so the requests below are
    // ended by request_timeout_ms and not by running out of room, however fast the machine is.
    const small = await startServer({ args: ['--max-body-bytes', '2000', '--max-running', '1', '--max-waiting', '0', '--request-timeout-ms', '1500',
                                              '--context', '32768'] });
    try {
      const c = new Anthropic({ apiKey: 'unused', baseURL: small.url, maxRetries: 0 });
      await expectError(c.messages.create(hello({ messages: [{ role: 'user', content: 'x'.repeat(5000) }] })),
        Anthropic.APIError, 413, 'request_too_large');
      // One long generation holds the model; with no room to wait the next request is overloaded.
      const controller = new AbortController();
      const long = fetch(`${small.url}/v1/messages`, {
        method: 'POST', signal: controller.signal, headers: { 'content-type': 'application/json' },
        // Greedy, so that the random test model never samples an end-of-turn token by chance and
        // finishes before the timeout.
        body: JSON.stringify(hello({ max_tokens: 30000, stream: true, temperature: 0 })),
      });
      const reader = (await long).body.getReader();
      await reader.read();  // the stream has started: the model is busy
      await expectError(c.messages.create(hello()), Anthropic.InternalServerError, 529, 'overloaded_error');
      // The running stream ends with an error event when request_timeout_ms passes.
      let rest = '';
      for (;;) {
        const { done, value } = await reader.read();
        if (done) break;
        rest += new TextDecoder().decode(value);
      }
      const errorEvent = rest.split('\n\n').find((b) => b.startsWith('event: error\n'));
      assert.ok(errorEvent, rest.slice(-500));
      const payload = JSON.parse(errorEvent.split('\ndata: ')[1]);
      assert.deepEqual(payload, { type: 'error', error: { type: 'timeout_error', message: payload.error.message } });
      // The timed-out generation is freed: the model goes idle again.
      const idleBy = Date.now() + 30_000;
      while (!(await (await fetch(`${small.url}/metrics`)).text()).includes('pensieve_requests_running 0')) {
        assert.ok(Date.now() < idleBy, 'the timed-out generation was not freed');
        await new Promise((r) => setTimeout(r, 20));
      }
      // Non-streaming past the timeout: 504 timeout_error.
      await expectError(c.messages.create(hello({ max_tokens: 20000, temperature: 0 })), Anthropic.InternalServerError, 504, 'timeout_error');
      assert.equal((await fetch(`${small.url}/health`)).status, 200);
      controller.abort();
    } finally {
      await small.stop();
      removeDir(small.stateDir);
    }
  });
});
