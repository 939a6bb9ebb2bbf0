// Lumkey through the official Anthropic Node SDK (/v1/messages) and the OpenAI Node SDK's
// Responses and embeddings APIs. Run through tests/e2e/run_node.py (LK_API_BASE, LK_CLAUDE_MODEL).
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { test } from 'node:test';

import Anthropic from '@anthropic-ai/sdk';
import OpenAI from 'openai';

const MODEL = process.env.LK_MODEL || 'mock-gpt';
const CLAUDE = process.env.LK_CLAUDE_MODEL || 'claude-mock';
const MOCK_URL = process.env.MOCK_URL;
for (const v of ['LK_API_BASE', 'OPENAI_API_KEY', 'MOCK_URL']) {
  if (!process.env[v]) throw new Error(`${v} is not set: run these tests through tests/e2e/run_node.py`);
}
const claude = new Anthropic({ baseURL: process.env.LK_API_BASE, apiKey: process.env.OPENAI_API_KEY, maxRetries: 0 });
const openai = new OpenAI({ maxRetries: 0, timeout: 30_000 });
const marker = () => `m${randomUUID().replaceAll('-', '').slice(0, 16)}`;
const msgs = (t) => [{ role: 'user', content: t }];

async function mockRequestsWith(text) {
  const r = await fetch(`${MOCK_URL}/_mock/requests`);
  const { data } = await r.json();
  return data.filter((q) => (q.body || '').includes(text));
}

test('anthropic: message, not streamed', async () => {
  const m = marker();
  const msg = await claude.messages.create({ model: CLAUDE, max_tokens: 32, messages: msgs(`hi ${m}`) });
  assert.equal(msg.content[0].text, 'Hello from lumkey-mock');
  assert.ok(msg.usage.input_tokens > 0);
  const [req] = await mockRequestsWith(m);
  assert.equal(req.path, '/v1/messages');
});

test('anthropic: streamed text arrives event by event', async () => {
  const stream = claude.messages.stream({ model: CLAUDE, max_tokens: 32, messages: msgs(`[[mock chunks=4]] ${marker()}`) });
  const pieces = [];
  stream.on('text', (t) => pieces.push(t));
  const final = await stream.finalMessage();
  assert.equal(pieces.length, 4);
  assert.equal(final.content[0].text, 'Hello from lumkey-mock.');
  assert.equal(final.stop_reason, 'end_turn');
});

test('anthropic: streamed tool use (input_json_delta)', async () => {
  const stream = claude.messages.stream({
    model: CLAUDE, max_tokens: 32, messages: msgs(`[[mock tool=get_weather chunks=3]] ${marker()}`),
    tools: [{ name: 'get_weather', input_schema: { type: 'object', properties: { city: { type: 'string' } } } }],
  });
  const final = await stream.finalMessage();
  assert.equal(final.stop_reason, 'tool_use');
  assert.deepEqual(final.content[0].input, { city: 'Paris' });
});

test('anthropic: 401 is AuthenticationError, 404 NotFoundError, not retried', async () => {
  const bad = new Anthropic({ baseURL: process.env.LK_API_BASE, apiKey: 'lk_live_nope', maxRetries: 2 });
  await assert.rejects(bad.messages.create({ model: CLAUDE, max_tokens: 8, messages: msgs('x') }),
    (e) => e instanceof Anthropic.AuthenticationError && e.status === 401 && e.error?.error?.type === 'authentication_error');
  await assert.rejects(claude.messages.create({ model: 'claude-nope', max_tokens: 8, messages: msgs('x') }),
    (e) => e instanceof Anthropic.NotFoundError && e.error?.error?.type === 'not_found_error');
});

test('openai: responses streamed, typed events', async () => {
  const stream = await openai.responses.create({ model: MODEL, input: `[[mock chunks=3]] ${marker()}`, stream: true });
  const types = [];
  let text = '';
  for await (const ev of stream) {
    types.push(ev.type);
    if (ev.type === 'response.output_text.delta') text += ev.delta;
  }
  assert.equal(types[0], 'response.created');
  assert.equal(types.at(-1), 'response.completed');
  assert.equal(text, 'Hello from lumkey-mock');
});

test('openai: responses and embeddings not streamed', async () => {
  const r = await openai.responses.create({ model: MODEL, input: 'hi' });
  assert.equal(r.output_text, 'Hello from lumkey-mock');
  const e = await openai.embeddings.create({ model: MODEL, input: 'hi' });
  assert.equal(e.data.length, 1);
});

test('models: both SDKs list the key\'s models', async () => {
  const ids = [];
  for await (const m of openai.models.list()) ids.push(m.id);
  assert.ok(ids.includes(MODEL) && ids.includes(CLAUDE));
  const page = await claude.models.list();
  assert.ok(page.data.some((m) => m.id === CLAUDE));
});
