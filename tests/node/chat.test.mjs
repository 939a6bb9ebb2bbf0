// Lumkey through the official OpenAI Node SDK. Needs a running stack: tests/e2e/run_node.py
// starts one and sets OPENAI_BASE_URL, OPENAI_API_KEY, MOCK_URL, LK_MODEL and LK_PROVIDER_AUTH.
// Secrets never go into assertion messages (assert.ok on a boolean, with our own message).
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { test } from 'node:test';

import OpenAI from 'openai';

const MODEL = process.env.LK_MODEL || 'mock-gpt';
const MOCK_URL = process.env.MOCK_URL;

for (const v of ['OPENAI_BASE_URL', 'OPENAI_API_KEY', 'MOCK_URL', 'LK_PROVIDER_AUTH']) {
  if (!process.env[v]) throw new Error(`${v} is not set: run these tests through tests/e2e/run_node.py`);
}

const client = new OpenAI({ maxRetries: 0, timeout: 30_000 });
const marker = () => `m${randomUUID().replaceAll('-', '').slice(0, 16)}`;

async function mockRequestsWith(text) {
  const r = await fetch(`${MOCK_URL}/_mock/requests`);
  assert.equal(r.status, 200);
  const { data } = await r.json();
  return data.filter((q) => (q.body || '').includes(text));
}

const TOOLS = [{
  type: 'function',
  function: {
    name: 'get_weather',
    description: 'Current weather in a city',
    parameters: { type: 'object', properties: { city: { type: 'string' } }, required: ['city'] },
  },
}];

test('non-streaming completion, credential injected, request id', async () => {
  const m = marker();
  const { data, response } = await client.chat.completions
    .create({ model: MODEL, messages: [{ role: 'user', content: `hello ${m}` }] })
    .withResponse();
  assert.ok(response.headers.get('x-request-id'), 'no x-request-id header');
  assert.equal(data.object, 'chat.completion');
  assert.ok(data.choices[0].message.content, 'no content');
  assert.ok(data.usage.total_tokens > 0);
  const seen = await mockRequestsWith(m);
  assert.equal(seen.length, 1, 'the provider should see the request once');
  const auth = seen[0].headers.authorization;
  assert.ok(auth === process.env.LK_PROVIDER_AUTH, 'the provider did not get the stored credential');
  const leaked = JSON.stringify(seen[0]).includes(process.env.OPENAI_API_KEY);
  assert.ok(!leaked, 'the Lumkey key reached the provider');
});

test('streaming completion arrives in chunks', async () => {
  const stream = await client.chat.completions.create({
    model: MODEL,
    stream: true,
    stream_options: { include_usage: true },
    messages: [{ role: 'user', content: `[[mock chunks=4 interval_ms=50]] stream ${marker()}` }],
  });
  const pieces = [];
  let finish = null;
  let usage = null;
  for await (const chunk of stream) {
    assert.equal(chunk.object, 'chat.completion.chunk');
    if (chunk.usage) usage = chunk.usage;
    for (const c of chunk.choices) {
      if (c.delta?.content) pieces.push(c.delta.content);
      if (c.finish_reason) finish = c.finish_reason;
    }
  }
  assert.ok(pieces.length >= 4, `expected >= 4 content chunks, got ${pieces.length}`);
  assert.equal(finish, 'stop');
  assert.ok(usage && usage.total_tokens > 0, 'no usage chunk with include_usage');
});

test('tool call round trip', async () => {
  const m = marker();
  const messages = [{ role: 'user', content: `[[mock tool=get_weather]] weather in Paris? ${m}` }];
  const r1 = await client.chat.completions.create({ model: MODEL, messages, tools: TOOLS });
  const c1 = r1.choices[0];
  assert.equal(c1.finish_reason, 'tool_calls');
  const call = c1.message.tool_calls[0];
  assert.equal(call.function.name, 'get_weather');
  assert.deepEqual(JSON.parse(call.function.arguments), { city: 'Paris' });
  messages.push(c1.message);
  messages.push({ role: 'tool', tool_call_id: call.id, content: JSON.stringify({ temp_c: 21 }) });
  const r2 = await client.chat.completions.create({ model: MODEL, messages, tools: TOOLS });
  assert.equal(r2.choices[0].finish_reason, 'stop');
  assert.ok(r2.choices[0].message.content);
  const seen = await mockRequestsWith(m);
  assert.equal(seen.length, 2);
  const last = JSON.parse(seen[1].body).messages.at(-1);
  assert.equal(last.role, 'tool');
  assert.equal(last.tool_call_id, call.id);
});

test('streamed tool call arguments assemble', async () => {
  const stream = await client.chat.completions.create({
    model: MODEL,
    stream: true,
    tools: TOOLS,
    messages: [{ role: 'user', content: `[[mock tool=get_weather chunks=3]] weather? ${marker()}` }],
  });
  let args = '';
  let name = '';
  let finish = null;
  for await (const chunk of stream) {
    for (const c of chunk.choices) {
      for (const tc of c.delta?.tool_calls || []) {
        if (tc.function?.name) name += tc.function.name;
        if (tc.function?.arguments) args += tc.function.arguments;
      }
      if (c.finish_reason) finish = c.finish_reason;
    }
  }
  assert.equal(name, 'get_weather');
  assert.deepEqual(JSON.parse(args), { city: 'Paris' });
  assert.equal(finish, 'tool_calls');
});

test('invalid key is an AuthenticationError', async () => {
  const bad = new OpenAI({ apiKey: 'lk_live_not_a_real_key', maxRetries: 0, timeout: 30_000 });
  const m = marker();
  await assert.rejects(
    bad.chat.completions.create({ model: MODEL, messages: [{ role: 'user', content: m }] }),
    (err) => {
      assert.ok(err instanceof OpenAI.AuthenticationError, `expected AuthenticationError, got ${err?.constructor?.name}`);
      assert.equal(err.status, 401);
      assert.ok(err.requestID || err.headers?.get?.('x-request-id'), 'no request id on the error');
      return true;
    },
  );
  assert.equal((await mockRequestsWith(m)).length, 0, 'a request with a bad key reached the provider');
});

test('unknown model is a NotFoundError', async () => {
  await assert.rejects(
    client.chat.completions.create({ model: 'no-such-model', messages: [{ role: 'user', content: 'x' }] }),
    (err) => err instanceof OpenAI.NotFoundError && err.status === 404,
  );
});
