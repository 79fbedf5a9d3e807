// Tool use with both official SDKs against the tiny random-weight model served with a tool-capable
// chat template (Qwen 2.5's, Hermes-style <tool_call>): forced calls come back as tool_use blocks /
// tool_calls whose input validates against the tool's schema (constrained decoding makes that hold
// on any weights), streamed input_json_delta pieces reassemble, and tool results round-trip.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import Anthropic from '@anthropic-ai/sdk';
import OpenAI from 'openai';
import { removeDir, startServer, testdata } from './lib/harness.mjs';

const KEY = 'psk-e2e-tools-key';
const template = path.join(testdata, 'templates', 'src', 'Qwen-Qwen2.5-7B-Instruct.jinja');
let server;
let anthropic;
let openai;

before(async () => {
  server = await startServer({ args: ['--api-key', KEY, '--chat-template', template, '--max-output-tokens', '300', '--alias', 'gpt-4o'] });
  anthropic = new Anthropic({ apiKey: KEY, baseURL: server.url, maxRetries: 0, timeout: 120_000 });
  openai = new OpenAI({ apiKey: KEY, baseURL: `${server.url}/v1`, maxRetries: 0, timeout: 120_000 });
});
after(async () => {
  const status = await server.stop();
  assert.equal(status.code, 0, `graceful stop: ${JSON.stringify(status)}\n${server.output()}`);
  removeDir(server.stateDir);
});

const schema = {
  type: 'object',
  properties: {
    city: { type: 'string', maxLength: 12 },
    unit: { type: 'string', enum: ['celsius', 'fahrenheit'] },
  },
  required: ['city', 'unit'],
  additionalProperties: false,
};
const weatherTool = { name: 'get_weather', description: 'The weather in a city.', input_schema: schema };
const timeTool = {
  name: 'get_time',
  description: 'The time in a zone.',
  input_schema: { type: 'object', properties: { zone: { type: 'string', maxLength: 8 } }, required: ['zone'], additionalProperties: false },
};

// The few JSON-Schema rules the tools above use.
function validate(value, s, where = 'input') {
  if (s.type === 'object') {
    assert.equal(typeof value, 'object', `${where}: object`);
    assert.ok(value !== null && !Array.isArray(value), `${where}: object`);
    for (const k of s.required ?? []) assert.ok(k in value, `${where}.${k} is required`);
    for (const [k, v] of Object.entries(value)) {
      assert.ok(k in s.properties, `${where}.${k} is not allowed`);
      validate(v, s.properties[k], `${where}.${k}`);
    }
  } else if (s.type === 'string') {
    assert.equal(typeof value, 'string', `${where}: string`);
    if (s.enum) assert.ok(s.enum.includes(value), `${where}: one of ${s.enum}`);
    if (s.maxLength !== undefined) assert.ok([...value].length <= s.maxLength, `${where}: at most ${s.maxLength}`);
  } else if (s.type === 'integer') {
    assert.ok(Number.isInteger(value), `${where}: integer`);
  }
}

const ask = (extra = {}) => ({
  model: 'claude-3-5-sonnet-latest',
  max_tokens: 200,
  messages: [{ role: 'user', content: 'What is the weather in Paris?' }],
  tools: [weatherTool, timeTool],
  ...extra,
});

describe('Anthropic SDK', () => {
  test('a forced tool call comes back as a tool_use block whose input validates', async () => {
    for (let i = 0; i < 3; i += 1) {  // three samples: each draws other random tokens
      const msg = await anthropic.messages.create(ask({ tool_choice: { type: 'tool', name: 'get_weather' }, temperature: 1 }));
      assert.equal(msg.stop_reason, 'tool_use', JSON.stringify(msg));
      const uses = msg.content.filter((b) => b.type === 'tool_use');
      assert.ok(uses.length >= 1, JSON.stringify(msg));
      for (const use of uses) {
        assert.match(use.id, /^toolu_/);
        assert.equal(use.name, 'get_weather');
        validate(use.input, schema);
      }
    }
  });

  test('tool_choice any picks one of the tools, and one only when parallel use is off', async () => {
    const msg = await anthropic.messages.create(ask({ tool_choice: { type: 'any', disable_parallel_tool_use: true } }));
    const uses = msg.content.filter((b) => b.type === 'tool_use');
    assert.equal(uses.length, 1, JSON.stringify(msg));
    const tool = [weatherTool, timeTool].find((t) => t.name === uses[0].name);
    assert.ok(tool, uses[0].name);
    validate(uses[0].input, tool.input_schema);
  });

  test('streamed input_json_delta pieces reassemble into the input', async () => {
    const stream = anthropic.messages.stream(ask({ tool_choice: { type: 'tool', name: 'get_weather' } }));
    let partial = '';
    let starts = 0;
    stream.on('streamEvent', (e) => {
      if (e.type === 'content_block_start' && e.content_block.type === 'tool_use') {
        starts += 1;
        assert.deepEqual(e.content_block.input, {});
      }
      if (e.type === 'content_block_delta' && e.delta.type === 'input_json_delta' && starts === 1) partial += e.delta.partial_json;
    });
    const msg = await stream.finalMessage();
    const use = msg.content.find((b) => b.type === 'tool_use');
    assert.ok(use, JSON.stringify(msg));
    assert.deepEqual(JSON.parse(partial), use.input);
    validate(use.input, schema);
    assert.equal(msg.stop_reason, 'tool_use');
  });

  test('a tool_result round trip answers 200', async () => {
    const first = await anthropic.messages.create(ask({ tool_choice: { type: 'tool', name: 'get_weather' } }));
    const use = first.content.find((b) => b.type === 'tool_use');
    assert.ok(use, JSON.stringify(first));
    const second = await anthropic.messages.create(ask({
      max_tokens: 20,
      messages: [
        { role: 'user', content: 'What is the weather in Paris?' },
        { role: 'assistant', content: first.content },
        { role: 'user', content: [{ type: 'tool_result', tool_use_id: use.id, content: '18 degrees and sunny' }] },
      ],
    }));
    assert.equal(second.type, 'message');
    assert.ok(['end_turn', 'max_tokens', 'tool_use'].includes(second.stop_reason), second.stop_reason);
  });
});

describe('OpenAI SDK', () => {
  const tools = [weatherTool, timeTool].map((t) => ({
    type: 'function', function: { name: t.name, description: t.description, parameters: t.input_schema },
  }));

  test('a named tool_choice gives tool_calls whose arguments validate', async () => {
    const r = await openai.chat.completions.create({
      model: 'gpt-4o', max_tokens: 200, tools,
      tool_choice: { type: 'function', function: { name: 'get_weather' } },
      messages: [{ role: 'user', content: 'Weather in Oslo?' }],
    });
    const choice = r.choices[0];
    assert.equal(choice.finish_reason, 'tool_calls', JSON.stringify(r));
    const call = choice.message.tool_calls[0];
    assert.match(call.id, /^call_/);
    assert.equal(call.function.name, 'get_weather');
    validate(JSON.parse(call.function.arguments), schema);
  });

  test('streamed tool_calls reassemble, and a tool message round-trips', async () => {
    const stream = await openai.chat.completions.create({
      model: 'gpt-4o', max_tokens: 200, tools, tool_choice: 'required', parallel_tool_calls: false, stream: true,
      messages: [{ role: 'user', content: 'Weather in Oslo?' }],
    });
    const calls = [];
    let finish = null;
    for await (const chunk of stream) {
      const c = chunk.choices[0];
      if (!c) continue;
      for (const d of c.delta.tool_calls ?? []) {
        calls[d.index] ??= { id: '', name: '', args: '' };
        if (d.id) calls[d.index].id = d.id;
        if (d.function?.name) calls[d.index].name = d.function.name;
        calls[d.index].args += d.function?.arguments ?? '';
      }
      if (c.finish_reason) finish = c.finish_reason;
    }
    assert.equal(finish, 'tool_calls');
    assert.equal(calls.length, 1);
    const tool = tools.find((t) => t.function.name === calls[0].name);
    assert.ok(tool, calls[0].name);
    const args = JSON.parse(calls[0].args);
    validate(args, tool.function.parameters);
    const next = await openai.chat.completions.create({
      model: 'gpt-4o', max_tokens: 10, tools,
      messages: [
        { role: 'user', content: 'Weather in Oslo?' },
        { role: 'assistant', content: null, tool_calls: [{ id: calls[0].id, type: 'function', function: { name: calls[0].name, arguments: calls[0].args } }] },
        { role: 'tool', tool_call_id: calls[0].id, content: 'cold' },
      ],
    });
    assert.equal(next.object, 'chat.completion');
  });
});
