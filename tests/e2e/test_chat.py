"""Chat completions through Lumkey with the official OpenAI Python SDK:
plain, streamed, tool calls; what reaches the provider; what lands in audit."""

import json
import time

from helpers import header, marker, wait_mock_request
from lkstack import MODEL, WORKERS

TOOLS = [{
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}]


def test_non_streaming_completion(stack):
    m = marker()
    raw = stack.client().chat.completions.with_raw_response.create(
        model=MODEL, messages=[{"role": "user", "content": f"hello {m}"}])
    rid = raw.headers.get("x-request-id")
    assert rid, "no x-request-id header on a successful answer"
    comp = raw.parse()
    assert comp.object == "chat.completion"
    assert comp.choices and comp.choices[0].message.content, "no content in the answer"
    assert comp.choices[0].finish_reason == "stop"
    assert comp.usage is not None and comp.usage.total_tokens > 0

    # the provider saw the stored credential, never the Lumkey key
    up = wait_mock_request(stack, m)
    assert up["path"].endswith("/chat/completions"), up["path"]
    got_cred = header(up, "authorization") == f"Bearer {stack.provider_credential}"
    assert got_cred, "the provider did not receive 'Authorization: Bearer <stored credential>'"
    key_leaked = stack.key in json.dumps(up)
    assert not key_leaked, "the Lumkey key was forwarded to the provider"
    assert json.loads(up["body"])["model"] == MODEL

    # audit: accepted before the call, completed after
    done = stack.wait_audit(rid, "request.completed")
    accepted = stack.wait_audit(rid, "request.accepted")
    assert accepted["seq"] < done["seq"]
    assert done["key_id"] == stack.key_id
    assert done["user_id"] == "e2e-user"
    assert done["model"] == MODEL
    assert done["provider_id"] == stack.provider_id
    assert done["decision"] == "allow"
    assert done["http_status"] == 200
    assert done["upstream_status"] == 200
    assert done["stream"] is False
    assert done["latency_us"] is not None and done["latency_us"] > 0
    assert done["prompt_tokens"] == comp.usage.prompt_tokens and done["prompt_tokens"] > 0
    assert done["completion_tokens"] == comp.usage.completion_tokens and done["completion_tokens"] > 0
    assert done["total_tokens"] == comp.usage.total_tokens
    assert not done["error_code"]


def test_request_body_reaches_provider_intact(stack):
    """echo=1: the mock answers with the last user message; unicode and all survive both ways."""
    text = f"[[mock echo=1]] héllo ✓ 世界 \"quoted\" \\ back {marker()}"
    comp = stack.client().chat.completions.create(model=MODEL, messages=[{"role": "user", "content": text}])
    assert text in comp.choices[0].message.content


def test_streaming_relays_chunks_as_they_come(stack):
    client = stack.client()
    t0 = time.monotonic()
    raw = client.chat.completions.with_raw_response.create(
        model=MODEL, stream=True, stream_options={"include_usage": True},
        messages=[{"role": "user", "content": f"[[mock chunks=5 interval_ms=300]] stream {marker()}"}])
    rid = raw.headers.get("x-request-id")
    assert rid, "no x-request-id header on a stream"
    first = None
    pieces, usage, finish, ids = [], None, None, set()
    for chunk in raw.parse():
        if first is None:
            first = time.monotonic() - t0
        assert chunk.object == "chat.completion.chunk"
        ids.add(chunk.id)
        if chunk.usage:
            usage = chunk.usage
        for ch in chunk.choices:
            if ch.delta and ch.delta.content:
                pieces.append(ch.delta.content)
            if ch.finish_reason:
                finish = ch.finish_reason
    total = time.monotonic() - t0
    assert first is not None, "no chunk arrived"
    assert len(pieces) >= 5, f"expected >= 5 content chunks, got {len(pieces)}"
    assert "".join(pieces)
    assert finish == "stop"
    assert len(ids) == 1, "chunks of one stream carry different ids"
    # relayed as they come, not buffered: 4 pauses of 300 ms follow the first chunk
    assert first < total - 0.6, f"first chunk after {first:.3f}s of {total:.3f}s: the stream was buffered"
    assert usage is not None and usage.total_tokens > 0, "include_usage did not yield a usage chunk"

    done = stack.wait_audit(rid, "request.completed")
    assert done["stream"] is True
    assert done["http_status"] == 200 and done["upstream_status"] == 200
    assert done["key_id"] == stack.key_id and done["model"] == MODEL
    assert done["prompt_tokens"] == usage.prompt_tokens
    assert done["completion_tokens"] == usage.completion_tokens
    assert done["total_tokens"] == usage.total_tokens
    assert not done["error_code"]


def test_tool_call_round_trip(stack):
    client = stack.client()
    m = marker()
    messages = [{"role": "user", "content": f"[[mock tool=get_weather]] What is the weather in Paris? {m}"}]
    r1 = client.chat.completions.create(model=MODEL, messages=messages, tools=TOOLS)
    c1 = r1.choices[0]
    assert c1.finish_reason == "tool_calls"
    assert c1.message.tool_calls and len(c1.message.tool_calls) == 1
    call = c1.message.tool_calls[0]
    assert call.type == "function" and call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"city": "Paris"}

    # the agent runs the tool and sends the result back
    messages.append({"role": "assistant", "content": None, "tool_calls": [{
        "id": call.id, "type": "function",
        "function": {"name": call.function.name, "arguments": call.function.arguments}}]})
    messages.append({"role": "tool", "tool_call_id": call.id, "content": json.dumps({"temp_c": 21, "sky": "clear"})})
    raw = client.chat.completions.with_raw_response.create(model=MODEL, messages=messages, tools=TOOLS)
    r2 = raw.parse()
    assert r2.choices[0].finish_reason == "stop"
    assert r2.choices[0].message.content

    # the provider got the tool result, tied to the call id
    sent = [json.loads(r["body"]) for r in stack.mock_requests() if m in (r.get("body") or "")]
    assert len(sent) == 2, f"expected the provider to see 2 requests, saw {len(sent)}"
    last = sent[-1]["messages"]
    assert last[-1]["role"] == "tool" and last[-1]["tool_call_id"] == call.id
    assert last[-2]["tool_calls"][0]["id"] == call.id
    assert "tools" in sent[-1] and sent[-1]["tools"][0]["function"]["name"] == "get_weather"
    done = stack.wait_audit(raw.headers["x-request-id"], "request.completed")
    assert done["http_status"] == 200


def test_streamed_tool_call_arguments_assemble(stack):
    stream = stack.client().chat.completions.create(
        model=MODEL, stream=True, tools=TOOLS,
        messages=[{"role": "user", "content": f"[[mock tool=get_weather chunks=4]] weather? {marker()}"}])
    name, args, call_id, finish = "", "", None, None
    for chunk in stream:
        for ch in chunk.choices:
            for tc in (ch.delta.tool_calls or []) if ch.delta else []:
                assert tc.index == 0
                if tc.id:
                    call_id = tc.id
                if tc.function and tc.function.name:
                    name += tc.function.name
                if tc.function and tc.function.arguments:
                    args += tc.function.arguments
            if ch.finish_reason:
                finish = ch.finish_reason
    assert call_id, "no tool call id in the stream"
    assert name == "get_weather"
    assert json.loads(args) == {"city": "Paris"}
    assert finish == "tool_calls"


def test_concurrent_streams_do_not_mix(stack):
    """Several streams through one edge at once: each gets its own whole answer."""
    import concurrent.futures

    def one(i):
        text = f"[[mock echo=1 chunks=4 interval_ms=50]] stream number {i} {marker()}"
        s = stack.client().chat.completions.create(model=MODEL, stream=True,
                                                   messages=[{"role": "user", "content": text}])
        got = "".join(ch.delta.content or "" for c in s for ch in c.choices if ch.delta)
        return text, got

    with concurrent.futures.ThreadPoolExecutor(max_workers=6) as ex:
        results = list(ex.map(one, range(6)))
    for text, got in results:
        assert text in got, f"stream answer mixed up or cut: {got!r}"


def test_secrets_absent_from_logs_and_database(stack):
    """After the requests above: no Lumkey log line and no database row holds a secret in clear."""
    # make sure at least one request went through in this session
    stack.client().chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "last"}])
    for name in WORKERS + ("edge",):
        text = (stack.dir / "logs" / f"{name}.log").read_text(errors="replace")
        for label, secret in (("provider credential", stack.provider_credential), ("Lumkey key", stack.key),
                              ("admin token", stack.admin_token)):
            found = secret in text
            assert not found, f"the {label} appears in the {name} log"
    with stack.db().cursor() as cur:
        cur.execute("SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'")
        tables = [r["table_name"] for r in cur.fetchall()]
        assert "audit_events" in tables and "credentials" in tables
        for t in tables:
            cur.execute(f'SELECT t::text AS row FROM "{t}" t')
            dump = "\n".join(r["row"] for r in cur.fetchall())
            for label, secret in (("provider credential", stack.provider_credential), ("Lumkey key", stack.key),
                                  ("admin token", stack.admin_token)):
                found = secret in dump
                assert not found, f"the {label} is stored in clear in table {t}"



def test_large_answers_relay_intact(stack):
    """A 3 MB JSON answer and a 1 MB stream in 200 pieces arrive byte for byte."""
    client = stack.client()
    r = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "[[mock bytes=3000000]]"}])
    assert len(r.choices[0].message.content) == 3_000_000
    s = client.chat.completions.create(model=MODEL, stream=True,
                                       messages=[{"role": "user", "content": "[[mock bytes=1000000 chunks=200]]"}])
    got = sum(len(ch.delta.content or "") for c in s for ch in c.choices if ch.delta)
    assert got == 1_000_000


def test_client_headers_meant_for_the_provider_are_not_forwarded(stack):
    m = marker()
    st, _, _ = stack.chat_raw({"model": MODEL, "messages": [{"role": "user", "content": m}]}, headers={
        "x-api-key": "client-supplied-x-api-key", "openai-organization": "org-client",
        "x-forwarded-host": "evil.example", "proxy-authorization": "Basic Zm9vOmJhcg=="})
    assert st == 200
    up = wait_mock_request(stack, m)
    names = {k.lower() for k in up["headers"]}
    for h in ("x-api-key", "proxy-authorization", "x-forwarded-host"):
        assert h not in names, f"the client's {h} header was forwarded to the provider"
    assert header(up, "host") == stack.mock_addr, "the provider saw a Host other than its own"
    got_cred = header(up, "authorization") == f"Bearer {stack.provider_credential}"
    assert got_cred, "the provider did not receive the stored credential"
